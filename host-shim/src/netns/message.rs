//! rtnetlink messages as bytes: building requests, walking replies.
//!
//! Pure code, no socket (vminitd's `sys/netlink/message.rs` is the same
//! shape, for the guest). Netlink integers are in the host's byte order, IP
//! addresses in network order. A message is a 16-byte `nlmsghdr`, a fixed
//! family header (`ifinfomsg`, `ifaddrmsg`, `rtmsg`, `tcmsg`) and attributes
//! (`rtattr`: a 2-byte length, a 2-byte type, the payload), each padded to 4
//! bytes. Replies are read with every length checked against what is left.
//!
//! The traffic-control messages are those `tc` itself sends for Kata's
//! `tcfilter` model (`tc qdisc add dev IF ingress`, `tc filter add dev IF
//! parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect
//! dev TAP`); the tests hold them to `tc`'s bytes, as `strace` shows them.

use std::net::IpAddr;

// From the kernel's uapi headers (<linux/netlink.h>, <linux/rtnetlink.h>,
// <linux/pkt_sched.h>, <linux/pkt_cls.h>, <linux/tc_act/tc_mirred.h>). They
// are ABI; restated with the widths the wire uses.
pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLMSG_OVERRUN: u16 = 4;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_ACK: u16 = 0x04;
pub const NLM_F_DUMP_INTR: u16 = 0x10;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
/// On an `NLMSG_ERROR`: the echoed request was cut to its header.
const NLM_F_CAPPED: u16 = 0x100;
/// On an `NLMSG_ERROR`: extended-ACK attributes follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// The extended-ACK attribute that carries the kernel's error text.
const NLMSGERR_ATTR_MSG: u16 = 1;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_NEWQDISC: u16 = 36;
pub const RTM_DELQDISC: u16 = 37;
pub const RTM_NEWTFILTER: u16 = 44;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_LINKINFO: u16 = 18;
pub const IFLA_EXT_MASK: u16 = 29;
pub const IFLA_INFO_KIND: u16 = 1;
/// `IFLA_EXT_MASK` bit: leave the (large) statistics out of link replies.
pub const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;

pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
pub const RTA_TABLE: u16 = 15;
pub const RT_TABLE_MAIN: u8 = 254;
pub const RTN_UNICAST: u8 = 1;
/// `rtm_protocol` of the routes the kernel makes from an address.
pub const RTPROT_KERNEL: u8 = 2;
/// `rtm_flags`: a cached clone, not a configured route.
pub const RTM_F_CLONED: u32 = 0x200;
/// `ifa_scope` / `rtm_scope` of what reaches beyond the link.
pub const RT_SCOPE_UNIVERSE: u8 = 0;

pub const TCA_KIND: u16 = 1;
pub const TCA_OPTIONS: u16 = 2;
/// `TC_H_INGRESS`: the parent of an ingress qdisc.
pub const TC_H_INGRESS: u32 = 0xffff_fff1;
/// `ffff:`, the handle of an ingress qdisc and the parent of its filters.
pub const INGRESS_HANDLE: u32 = 0xffff_0000;
/// `ETH_P_ALL`: a filter for every protocol.
const ETH_P_ALL: u16 = 0x0003;
const TCA_U32_SEL: u16 = 5;
const TCA_U32_ACT: u16 = 7;
const TC_U32_TERMINAL: u8 = 1;
const TCA_ACT_KIND: u16 = 1;
const TCA_ACT_OPTIONS: u16 = 2;
const TCA_MIRRED_PARMS: u16 = 2;
/// `TC_ACT_STOLEN`: the packet is the action's; nothing else sees it.
const TC_ACT_STOLEN: i32 = 4;
/// `TCA_EGRESS_REDIR`: sent out of the target device.
const TCA_EGRESS_REDIR: i32 = 1;

/// Attribute type bits that are flags, not part of the type.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);
/// `NLA_F_NESTED`: set on attributes that hold attributes.
const NLA_F_NESTED: u16 = 0x8000;

pub const NLMSG_HDRLEN: usize = 16;
const RTA_HDRLEN: usize = 4;

/// `NLMSG_ALIGN` / `RTA_ALIGN`: the next multiple of 4.
pub const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A reply that does not hold together: fewer bytes than a header or a
/// length field promised. The client adds which operation it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    /// What was being read.
    pub what: &'static str,
    /// The bytes it needs.
    pub needed: usize,
    /// The bytes left.
    pub left: usize,
}

fn truncated(what: &'static str, needed: usize, left: usize) -> Truncated {
    Truncated { what, needed, left }
}

/// A request under construction. Attributes are appended in order; the
/// length and sequence number are written by [`Request::finish`].
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// An `nlmsghdr` of this type and flags, followed by the family header.
    pub fn new(kind: u16, flags: u16, header: &[u8]) -> Request {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len: finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq: finish()
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel
        buf.extend_from_slice(header);
        let mut request = Request { buf };
        request.pad();
        request
    }

    /// Appends an attribute. Payloads here are a few dozen bytes at most,
    /// far below the 64 KiB an attribute length can say.
    pub fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Request {
        debug_assert!(RTA_HDRLEN + payload.len() <= usize::from(u16::MAX));
        self.buf
            .extend_from_slice(&((RTA_HDRLEN + payload.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    /// A 32-bit integer attribute.
    pub fn attr_u32(&mut self, kind: u16, value: u32) -> &mut Request {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// A NUL-terminated string, as the kernel wants names.
    pub fn attr_str(&mut self, kind: u16, value: &str) -> &mut Request {
        let mut payload = Vec::with_capacity(value.len() + 1);
        payload.extend_from_slice(value.as_bytes());
        payload.push(0);
        self.attr(kind, &payload)
    }

    /// An attribute that holds the attributes `fill` appends. `kind` is
    /// written as given: `tc` marks some nests `NLA_F_NESTED` and not
    /// others, and the kernel takes what `tc` sends.
    pub fn nested(&mut self, kind: u16, fill: impl FnOnce(&mut Request)) -> &mut Request {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; RTA_HDRLEN]);
        fill(self);
        let len = self.buf.len() - start;
        debug_assert!(len <= usize::from(u16::MAX));
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&kind.to_ne_bytes());
        self
    }

    /// The message to send, with its length and sequence number filled in.
    pub fn finish(&mut self, seq: u32) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        &self.buf
    }

    fn pad(&mut self) {
        self.buf.resize(align(self.buf.len()), 0);
    }
}

/// One message of a reply; `payload` is what follows the `nlmsghdr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The messages of one datagram. After a malformed one it yields nothing
/// more.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { rest: buf }
}

/// The iterator of [`messages`].
pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, Truncated>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let (Some(len), Some(kind), Some(flags), Some(seq)) =
            (u32_at(rest, 0), u16_at(rest, 4), u16_at(rest, 6), u32_at(rest, 8))
        else {
            return Some(Err(truncated("message header", NLMSG_HDRLEN, rest.len())));
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Some(Err(truncated("message", len.max(NLMSG_HDRLEN), rest.len())));
        }
        self.rest = rest.get(align(len)..).unwrap_or(&[]);
        Some(Ok(Message {
            kind,
            flags,
            seq,
            payload: &rest[NLMSG_HDRLEN..len],
        }))
    }
}

/// The attributes in `buf`, with the flag bits masked off their types.
pub fn attributes(buf: &[u8]) -> Attributes<'_> {
    Attributes { rest: buf }
}

/// The iterator of [`attributes`].
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), Truncated>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.rest);
        let (Some(len), Some(kind)) = (u16_at(rest, 0), u16_at(rest, 2)) else {
            return Some(Err(truncated("attribute header", RTA_HDRLEN, rest.len())));
        };
        let len = usize::from(len);
        if len < RTA_HDRLEN || len > rest.len() {
            return Some(Err(truncated("attribute", len.max(RTA_HDRLEN), rest.len())));
        }
        self.rest = rest.get(align(len)..).unwrap_or(&[]);
        Some(Ok((kind & NLA_TYPE_MASK, &rest[RTA_HDRLEN..len])))
    }
}

/// `struct ifinfomsg`: family, type, index, flags, the flags to change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfInfoMsg {
    /// `ifi_type`: `ARPHRD_*`.
    pub kind: u16,
    pub index: u32,
    pub flags: u32,
    pub change: u32,
}

impl IfInfoMsg {
    pub const LEN: usize = 16;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0; Self::LEN];
        // [0] ifi_family AF_UNSPEC, [1] pad.
        b[2..4].copy_from_slice(&self.kind.to_ne_bytes());
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        b[12..16].copy_from_slice(&self.change.to_ne_bytes());
        b
    }

    /// The header and the attributes after it.
    pub fn parse(payload: &[u8]) -> Result<(IfInfoMsg, &[u8]), Truncated> {
        match (
            u16_at(payload, 2),
            u32_at(payload, 4),
            u32_at(payload, 8),
            u32_at(payload, 12),
        ) {
            (Some(kind), Some(index), Some(flags), Some(change)) => Ok((
                IfInfoMsg {
                    kind,
                    index,
                    flags,
                    change,
                },
                payload.get(Self::LEN..).unwrap_or(&[]),
            )),
            _ => Err(truncated("ifinfomsg", Self::LEN, payload.len())),
        }
    }
}

/// `struct ifaddrmsg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfAddrMsg {
    pub family: u8,
    pub prefix_len: u8,
    pub flags: u8,
    pub scope: u8,
    pub index: u32,
}

impl IfAddrMsg {
    pub const LEN: usize = 8;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [self.family, self.prefix_len, self.flags, self.scope, 0, 0, 0, 0];
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b
    }

    pub fn parse(payload: &[u8]) -> Result<(IfAddrMsg, &[u8]), Truncated> {
        match (payload.get(..4), u32_at(payload, 4)) {
            (Some(&[family, prefix_len, flags, scope]), Some(index)) => Ok((
                IfAddrMsg {
                    family,
                    prefix_len,
                    flags,
                    scope,
                    index,
                },
                payload.get(Self::LEN..).unwrap_or(&[]),
            )),
            _ => Err(truncated("ifaddrmsg", Self::LEN, payload.len())),
        }
    }
}

/// `struct rtmsg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtMsg {
    pub family: u8,
    pub dst_len: u8,
    pub table: u8,
    pub protocol: u8,
    pub scope: u8,
    pub kind: u8,
    pub flags: u32,
}

impl RtMsg {
    pub const LEN: usize = 12;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        // src_len and tos stay zero.
        let mut b = [
            self.family,
            self.dst_len,
            0,
            0,
            self.table,
            self.protocol,
            self.scope,
            self.kind,
            0,
            0,
            0,
            0,
        ];
        b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        b
    }

    pub fn parse(payload: &[u8]) -> Result<(RtMsg, &[u8]), Truncated> {
        match (payload.get(..8), u32_at(payload, 8)) {
            (Some(&[family, dst_len, _src_len, _tos, table, protocol, scope, kind]), Some(flags)) => Ok((
                RtMsg {
                    family,
                    dst_len,
                    table,
                    protocol,
                    scope,
                    kind,
                    flags,
                },
                payload.get(Self::LEN..).unwrap_or(&[]),
            )),
            _ => Err(truncated("rtmsg", Self::LEN, payload.len())),
        }
    }
}

/// `struct tcmsg`: the header of qdisc and filter messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcMsg {
    pub index: u32,
    pub handle: u32,
    pub parent: u32,
    /// For a filter: its priority (upper 16 bits) and protocol (lower 16,
    /// in network order).
    pub info: u32,
}

impl TcMsg {
    pub const LEN: usize = 20;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0; Self::LEN];
        // [0] tcm_family AF_UNSPEC, [1..4] padding.
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b[8..12].copy_from_slice(&self.handle.to_ne_bytes());
        b[12..16].copy_from_slice(&self.parent.to_ne_bytes());
        b[16..20].copy_from_slice(&self.info.to_ne_bytes());
        b
    }

    /// The header of the ingress qdisc of interface `index`.
    pub fn ingress_qdisc(index: u32) -> TcMsg {
        TcMsg {
            index,
            handle: INGRESS_HANDLE,
            parent: TC_H_INGRESS,
            info: 0,
        }
    }
}

/// `RTM_NEWQDISC` (create, exclusive): the ingress qdisc of interface
/// `index`, which its ingress filters hang from (`tc qdisc add dev IF
/// ingress`).
pub fn add_ingress_qdisc(index: u32) -> Request {
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
    let mut req = Request::new(RTM_NEWQDISC, flags, &TcMsg::ingress_qdisc(index).to_bytes());
    req.attr_str(TCA_KIND, "ingress");
    req
}

/// `RTM_DELQDISC`: interface `index`'s ingress qdisc and its filters (`tc
/// qdisc del dev IF ingress`).
pub fn delete_ingress_qdisc(index: u32) -> Request {
    let mut req = Request::new(
        RTM_DELQDISC,
        NLM_F_REQUEST | NLM_F_ACK,
        &TcMsg::ingress_qdisc(index).to_bytes(),
    );
    req.attr_str(TCA_KIND, "ingress");
    req
}

/// `RTM_NEWTFILTER` (create, exclusive): on interface `from`'s ingress, a
/// `u32` filter that matches every packet of every protocol (one key, mask
/// 0), whose one action is `mirred` egress redirect to interface `to`: the
/// packet leaves through `to` as it came in, and nothing else on `from`
/// sees it (`tc filter add dev FROM parent ffff: protocol all u32 match u8
/// 0 0 action mirred egress redirect dev TO`).
pub fn add_redirect(from: u32, to: u32) -> Request {
    let header = TcMsg {
        index: from,
        handle: 0,
        parent: INGRESS_HANDLE,
        // Priority 0: the kernel picks one. The protocol in network order.
        info: u32::from(ETH_P_ALL.to_be()),
    };
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
    let mut req = Request::new(RTM_NEWTFILTER, flags, &header.to_bytes());
    req.attr_str(TCA_KIND, "u32");
    req.nested(TCA_OPTIONS, |options| {
        options.nested(TCA_U32_ACT, |actions| {
            // Action 1 of the list.
            actions.nested(1, |action| {
                action.attr_str(TCA_ACT_KIND, "mirred");
                action.nested(TCA_ACT_OPTIONS | NLA_F_NESTED, |mirred| {
                    mirred.attr(TCA_MIRRED_PARMS, &mirred_parms(to));
                });
            });
        });
        options.attr(TCA_U32_SEL, &match_everything());
    });
    req
}

/// `struct tc_mirred`: `tc_gen` (index, capab, action, refcnt, bindcnt),
/// then eaction and ifindex.
fn mirred_parms(to: u32) -> [u8; 28] {
    let mut b = [0; 28];
    b[8..12].copy_from_slice(&TC_ACT_STOLEN.to_ne_bytes());
    b[20..24].copy_from_slice(&TCA_EGRESS_REDIR.to_ne_bytes());
    b[24..28].copy_from_slice(&to.to_ne_bytes());
    b
}

/// `struct tc_u32_sel` with one `tc_u32_key`, all zero: flags
/// `TC_U32_TERMINAL`, nkeys 1; the key's mask 0 matches anything.
fn match_everything() -> [u8; 32] {
    let mut b = [0; 32];
    b[0] = TC_U32_TERMINAL;
    b[2] = 1; // nkeys
    b
}

/// What an `NLMSG_ERROR` says: 0 for an ACK, else the errno, with the
/// kernel's explanation where it gave one (extended ACK).
pub fn parse_error(msg: &Message<'_>) -> Result<(i32, Option<String>), Truncated> {
    let payload = msg.payload;
    let Some(error) = u32_at(payload, 0).map(|e| e as i32) else {
        return Err(truncated("error message", 4, payload.len()));
    };
    let errno = error.wrapping_neg();
    if msg.flags & NLM_F_ACK_TLVS == 0 {
        return Ok((errno, None));
    }
    // After the error code: the request's header, and its payload unless
    // the echo was capped; then the extended-ACK attributes.
    let echoed = if msg.flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32_at(payload, 4).map_or(NLMSG_HDRLEN, |len| align(len as usize))
    };
    let tlvs = payload.get(4usize.saturating_add(echoed)..).unwrap_or(&[]);
    let text = attributes(tlvs)
        .filter_map(Result::ok)
        .find(|&(kind, _)| kind == NLMSGERR_ATTR_MSG)
        .map(|(_, text)| c_string(text))
        .filter(|text| !text.is_empty());
    Ok((errno, text))
}

/// A string attribute, up to its NUL.
pub fn c_string(payload: &[u8]) -> String {
    let end = payload.iter().position(|&b| b == 0).unwrap_or(payload.len());
    String::from_utf8_lossy(&payload[..end]).into_owned()
}

/// A 32-bit integer attribute.
pub fn u32_attr(what: &'static str, payload: &[u8]) -> Result<u32, Truncated> {
    u32_at(payload, 0).ok_or(truncated(what, 4, payload.len()))
}

/// An address attribute of an `AF_INET` or `AF_INET6` message; `None` for
/// another family.
pub fn ip_attr(family: u8, payload: &[u8]) -> Result<Option<IpAddr>, Truncated> {
    let (len, what) = match i32::from(family) {
        libc::AF_INET => (4, "IPv4 address"),
        libc::AF_INET6 => (16, "IPv6 address"),
        _ => return Ok(None),
    };
    let bytes = payload.get(..len).ok_or(truncated(what, len, payload.len()))?;
    Ok(Some(match <[u8; 4]>::try_from(bytes) {
        Ok(v4) => IpAddr::from(v4),
        Err(_) => IpAddr::from(<[u8; 16]>::try_from(bytes).map_err(|_| truncated(what, len, bytes.len()))?),
    }))
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    let bytes = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_ne_bytes(bytes.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes after the `nlmsghdr` of what `strace -xx` showed `tc`
    /// sending on this machine (x86_64), for interface 2 and tap 3.
    fn tc_sent(kind: u16, flags: u16, body: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&7u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        msg
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn the_ingress_qdisc_is_what_tc_sends() {
        // tcmsg {AF_UNSPEC, ifindex 2, handle ffff0000, parent fffffff1,
        // info 0}, TCA_KIND "ingress".
        let body = hex("00 00 00 00  02 00 00 00  00 00 ff ff  f1 ff ff ff  00 00 00 00
             0c 00 01 00  69 6e 67 72 65 73 73 00");
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
        assert_eq!(add_ingress_qdisc(2).finish(7), tc_sent(RTM_NEWQDISC, flags, &body));
        let del = delete_ingress_qdisc(2).finish(7).to_vec();
        assert_eq!(del, tc_sent(RTM_DELQDISC, NLM_F_REQUEST | NLM_F_ACK, &body));
    }

    #[test]
    fn the_redirect_filter_is_what_tc_sends() {
        // tcmsg {ifindex 2, handle 0, parent ffff0000, info 0x300}, then
        // TCA_KIND "u32" and TCA_OPTIONS as tc wrote them (TCA_U32_ACT
        // first, then TCA_U32_SEL), the mirred target being ifindex 3.
        let body = hex("00 00 00 00  02 00 00 00  00 00 00 00  00 00 ff ff  00 03 00 00
             08 00 01 00  75 33 32 00
             60 00 02 00
               38 00 07 00  34 00 01 00
                 0b 00 01 00  6d 69 72 72 65 64 00 00
                 24 00 02 80  20 00 02 00
                   00 00 00 00  00 00 00 00  04 00 00 00  00 00 00 00
                   00 00 00 00  01 00 00 00  03 00 00 00
               24 00 05 00
                 01 00 01 00  00 00 00 00  00 00 00 00  00 00 00 00
                 00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00");
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
        let sent = add_redirect(2, 3).finish(7).to_vec();
        assert_eq!(sent.len(), 140, "tc's nlmsg_len");
        assert_eq!(sent, tc_sent(RTM_NEWTFILTER, flags, &body));
    }

    #[test]
    fn replies_are_walked_with_every_length_checked() {
        let mut req = Request::new(RTM_NEWLINK, 0, &IfInfoMsg::default().to_bytes());
        req.attr_str(IFLA_IFNAME, "eth0").attr_u32(IFLA_MTU, 1500);
        let bytes = req.finish(1).to_vec();
        let msgs: Vec<_> = messages(&bytes).collect();
        assert_eq!(msgs.len(), 1);
        let msg = msgs[0].clone().unwrap();
        let (_, attrs) = IfInfoMsg::parse(msg.payload).unwrap();
        let attrs: Vec<_> = attributes(attrs).map(Result::unwrap).collect();
        assert_eq!(attrs[0], (IFLA_IFNAME, &b"eth0\0"[..]));
        assert_eq!(u32_attr("mtu", attrs[1].1), Ok(1500));
        // Cut anywhere: an error, never a panic or a read past the end.
        for cut in 0..bytes.len() {
            for msg in messages(&bytes[..cut]).flatten() {
                if let Ok((_, attrs)) = IfInfoMsg::parse(msg.payload) {
                    attributes(attrs).for_each(drop);
                }
            }
        }
        assert_eq!(
            ip_attr(libc::AF_INET as u8, &[10, 88, 0]),
            Err(truncated("IPv4 address", 4, 3))
        );
        assert_eq!(
            ip_attr(libc::AF_INET6 as u8, &[0xfd; 16]).unwrap(),
            Some("fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd:fdfd".parse().unwrap())
        );
    }
}
