//! rtnetlink messages as bytes: building requests, walking replies.
//!
//! Pure code, no socket. Netlink integers are in the host's byte order, IP
//! addresses in network order. A message is a 16-byte `nlmsghdr`, a fixed
//! family header (`ifinfomsg`, `ifaddrmsg`, `rtmsg`) and attributes
//! (`rtattr`: a 2-byte length, a 2-byte type, the payload), each message and
//! each attribute padded to 4 bytes (`NLMSG_ALIGN`, `RTA_ALIGN`). Replies are
//! read with every length checked against what is left of the buffer.

use std::net::IpAddr;

// From the kernel's uapi headers (<linux/netlink.h>, <linux/rtnetlink.h>,
// <linux/if_link.h>, <linux/if_addr.h>). They are ABI and never change; the
// libc crate spells them with varying integer types, so they are restated
// here with the widths the wire uses.
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
pub const NLM_F_CAPPED: u16 = 0x100;
/// On an `NLMSG_ERROR`: extended-ACK attributes follow the echoed request.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// The extended-ACK attribute that carries the kernel's error text.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
#[cfg(test)]
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWROUTE: u16 = 24;
#[cfg(test)]
pub const RTM_GETROUTE: u16 = 26;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
#[cfg(test)]
pub const IFLA_LINKINFO: u16 = 18;
pub const IFLA_EXT_MASK: u16 = 29;
#[cfg(test)]
pub const IFLA_INFO_KIND: u16 = 1;
#[cfg(test)]
pub const IFLA_INFO_DATA: u16 = 2;
/// `IFLA_EXT_MASK` bit: leave the (large) statistics out of link replies.
pub const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;

pub const IFA_ADDRESS: u16 = 1;
pub const IFA_LOCAL: u16 = 2;
pub const IFA_FLAGS: u16 = 8;
pub const IFA_F_NODAD: u32 = 0x02;

pub const RTA_DST: u16 = 1;
pub const RTA_OIF: u16 = 4;
pub const RTA_GATEWAY: u16 = 5;
#[cfg(test)]
pub const RTA_TABLE: u16 = 15;
pub const RT_TABLE_MAIN: u8 = 254;
pub const RTPROT_BOOT: u8 = 3;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;
pub const RTN_UNICAST: u8 = 1;
/// `rtm_flags`: a cached clone, not a configured route.
#[cfg(test)]
pub const RTM_F_CLONED: u32 = 0x200;

/// Attribute type bits that are flags, not part of the type.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);
/// `NLA_F_NESTED`: set on attributes that hold attributes.
#[cfg(test)]
const NLA_F_NESTED: u16 = 0x8000;

pub const NLMSG_HDRLEN: usize = 16;
const RTA_HDRLEN: usize = 4;

/// `NLMSG_ALIGN` / `RTA_ALIGN`: the next multiple of 4.
pub const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// A reply that does not hold together. The client adds which operation it
/// answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// Fewer bytes than a header or a length field promised.
    Truncated {
        what: &'static str,
        needed: usize,
        left: usize,
    },
    /// Well-formed, but not what the request calls for.
    #[cfg(test)]
    Unexpected(String),
}

fn truncated(what: &'static str, needed: usize, left: usize) -> Malformed {
    Malformed::Truncated { what, needed, left }
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

    /// Appends an attribute. Payloads here are a few bytes (names are
    /// checked against `IFNAMSIZ` before they get here), far below the
    /// 64 KiB an attribute length can say.
    pub fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Request {
        debug_assert!(RTA_HDRLEN + payload.len() <= usize::from(u16::MAX));
        self.buf
            .extend_from_slice(&((RTA_HDRLEN + payload.len()) as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

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

    pub fn attr_ip(&mut self, kind: u16, address: IpAddr) -> &mut Request {
        match address {
            IpAddr::V4(a) => self.attr(kind, &a.octets()),
            IpAddr::V6(a) => self.attr(kind, &a.octets()),
        }
    }

    /// An attribute that holds what `fill` appends: a fixed header, if the
    /// attribute's type has one (`raw`), then attributes.
    #[cfg(test)]
    pub fn nested(&mut self, kind: u16, fill: impl FnOnce(&mut Request)) -> &mut Request {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; RTA_HDRLEN]);
        fill(self);
        let len = self.buf.len() - start;
        debug_assert!(len <= usize::from(u16::MAX));
        self.buf[start..start + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        self.buf[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Bytes appended as they are (a fixed header inside a nested attribute).
    #[cfg(test)]
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Request {
        self.buf.extend_from_slice(bytes);
        self.pad();
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

/// The messages of one datagram. After a malformed one it yields nothing more.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { rest: buf }
}

pub struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, Malformed>;

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

pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), Malformed>;

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
    pub index: u32,
    pub flags: u32,
    pub change: u32,
}

impl IfInfoMsg {
    pub const LEN: usize = 16;

    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut b = [0; Self::LEN];
        // [0] ifi_family AF_UNSPEC, [1] pad, [2..4] ifi_type: all zero.
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        b[12..16].copy_from_slice(&self.change.to_ne_bytes());
        b
    }

    /// The header and the attributes after it.
    pub fn parse(payload: &[u8]) -> Result<(IfInfoMsg, &[u8]), Malformed> {
        match (u32_at(payload, 4), u32_at(payload, 8), u32_at(payload, 12)) {
            (Some(index), Some(flags), Some(change)) => Ok((
                IfInfoMsg { index, flags, change },
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

    #[cfg(test)]
    pub fn parse(payload: &[u8]) -> Result<(IfAddrMsg, &[u8]), Malformed> {
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

    #[cfg(test)]
    pub fn parse(payload: &[u8]) -> Result<(RtMsg, &[u8]), Malformed> {
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

/// What an `NLMSG_ERROR` says: 0 for an ACK, else the errno, with the
/// kernel's explanation where it gave one (extended ACK).
pub fn parse_error(msg: &Message<'_>) -> Result<(i32, Option<String>), Malformed> {
    let payload = msg.payload;
    let Some(error) = u32_at(payload, 0).map(|e| e as i32) else {
        return Err(truncated("error message", 4, payload.len()));
    };
    let errno = error.wrapping_neg();
    if msg.flags & NLM_F_ACK_TLVS == 0 {
        return Ok((errno, None));
    }
    // After the error code: the request's header, and its payload unless the
    // echo was capped; then the extended-ACK attributes.
    let echoed = if msg.flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        u32_at(payload, 4).map_or(NLMSG_HDRLEN, |len| align(len as usize))
    };
    let tlvs = payload.get(4 + echoed..).unwrap_or(&[]);
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

pub fn u32_attr(what: &'static str, payload: &[u8]) -> Result<u32, Malformed> {
    u32_at(payload, 0).ok_or(truncated(what, 4, payload.len()))
}

/// An address attribute of an `AF_INET` or `AF_INET6` message.
#[cfg(test)]
pub fn ip_attr(family: u8, payload: &[u8]) -> Result<IpAddr, Malformed> {
    match i32::from(family) {
        libc::AF_INET => payload
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(IpAddr::from)
            .ok_or(truncated("IPv4 address", 4, payload.len())),
        libc::AF_INET6 => payload
            .get(..16)
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .map(IpAddr::from)
            .ok_or(truncated("IPv6 address", 16, payload.len())),
        other => Err(Malformed::Unexpected(format!("an address of family {other}"))),
    }
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

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    /// A reply message as the kernel would send it.
    fn message(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&ne32((NLMSG_HDRLEN + payload.len()) as u32));
        m.extend_from_slice(&ne16(kind));
        m.extend_from_slice(&ne16(flags));
        m.extend_from_slice(&ne32(seq));
        m.extend_from_slice(&ne32(1234));
        m.extend_from_slice(payload);
        m.resize(align(m.len()), 0);
        m
    }

    #[test]
    fn alignment_rounds_up_to_four() {
        let aligned: Vec<usize> = (0..=9).map(align).collect();
        assert_eq!(aligned, [0, 4, 4, 4, 4, 8, 8, 8, 8, 12]);
    }

    #[test]
    fn a_request_is_header_then_padded_attributes() {
        let header = IfInfoMsg {
            index: 7,
            flags: 1,
            change: 1,
        };
        let mut req = Request::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, &header.to_bytes());
        req.attr_str(IFLA_IFNAME, "eth0").attr_u32(IFLA_MTU, 1400);
        let bytes = req.finish(42).to_vec();

        let mut want = Vec::new();
        want.extend_from_slice(&ne32(16 + 16 + 12 + 8)); // nlmsg_len
        want.extend_from_slice(&ne16(RTM_NEWLINK));
        want.extend_from_slice(&ne16(NLM_F_REQUEST | NLM_F_ACK));
        want.extend_from_slice(&ne32(42)); // seq
        want.extend_from_slice(&ne32(0)); // pid
        want.extend_from_slice(&[0, 0, 0, 0]); // family, pad, type
        want.extend_from_slice(&ne32(7));
        want.extend_from_slice(&ne32(1));
        want.extend_from_slice(&ne32(1));
        // "eth0\0": rta_len says 9, three bytes of padding follow.
        want.extend_from_slice(&ne16(9));
        want.extend_from_slice(&ne16(IFLA_IFNAME));
        want.extend_from_slice(b"eth0\0\0\0\0");
        want.extend_from_slice(&ne16(8));
        want.extend_from_slice(&ne16(IFLA_MTU));
        want.extend_from_slice(&ne32(1400));
        assert_eq!(bytes, want);
    }

    #[test]
    fn attributes_of_every_length_pad_to_four() {
        for n in 0..=9usize {
            let mut req = Request::new(RTM_NEWADDR, NLM_F_REQUEST, &[]);
            let payload: Vec<u8> = (1..=n as u8).collect();
            req.attr(9, &payload).attr_u32(10, 0xdead_beef);
            let bytes = req.finish(1).to_vec();
            assert_eq!(bytes.len() % 4, 0);
            assert_eq!(bytes.len(), NLMSG_HDRLEN + align(4 + n) + 8);
            let attrs: Vec<_> = attributes(&bytes[NLMSG_HDRLEN..]).collect::<Result<_, _>>().unwrap();
            assert_eq!(attrs, [(9, &payload[..]), (10, &ne32(0xdead_beef)[..])]);
        }
    }

    #[test]
    fn nested_attributes_cover_their_children() {
        let mut req = Request::new(RTM_NEWLINK, NLM_F_REQUEST, &IfInfoMsg::default().to_bytes());
        req.nested(IFLA_LINKINFO, |r| {
            r.attr_str(IFLA_INFO_KIND, "dummy");
        });
        let bytes = req.finish(1).to_vec();
        let body = &bytes[NLMSG_HDRLEN + IfInfoMsg::LEN..];
        // 4 (nest header) + 4 + "dummy\0" (6) padded to 8.
        assert_eq!(body.len(), 16);
        assert_eq!(u16_at(body, 0), Some(16));
        assert_eq!(u16_at(body, 2), Some(IFLA_LINKINFO | NLA_F_NESTED));
        let outer: Vec<_> = attributes(body).collect::<Result<_, _>>().unwrap();
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].0, IFLA_LINKINFO, "the nested flag is masked off");
        let inner: Vec<_> = attributes(outer[0].1).collect::<Result<_, _>>().unwrap();
        assert_eq!(inner, [(IFLA_INFO_KIND, &b"dummy\0"[..])]);
    }

    #[test]
    fn messages_are_walked_one_after_another() {
        let mut buf = message(RTM_NEWLINK, 2, 5, b"abcde");
        buf.extend(message(NLMSG_DONE, 2, 5, &ne32(0)));
        let all: Vec<_> = messages(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].kind, all[0].seq, all[0].payload),
            (RTM_NEWLINK, 5, &b"abcde"[..])
        );
        assert_eq!((all[1].kind, all[1].payload), (NLMSG_DONE, &ne32(0)[..]));
    }

    #[test]
    fn a_short_or_lying_message_is_an_error_not_a_panic() {
        // Shorter than a header.
        let mut it = messages(&[1, 2, 3]);
        assert!(matches!(
            it.next(),
            Some(Err(Malformed::Truncated {
                what: "message header",
                ..
            }))
        ));
        assert!(it.next().is_none(), "nothing after an error");
        // A length beyond the buffer.
        let mut buf = message(RTM_NEWLINK, 0, 1, b"xxxx");
        buf[0..4].copy_from_slice(&ne32(4096));
        assert_eq!(
            messages(&buf).next(),
            Some(Err(Malformed::Truncated {
                what: "message",
                needed: 4096,
                left: 20
            }))
        );
        // A length shorter than the header itself.
        buf[0..4].copy_from_slice(&ne32(3));
        assert!(matches!(messages(&buf).next(), Some(Err(Malformed::Truncated { .. }))));
        // Every cut of a valid buffer is handled.
        let mut whole = message(RTM_NEWLINK, 0, 1, b"abcdefgh");
        whole.extend(message(NLMSG_DONE, 0, 1, &ne32(0)));
        for cut in 0..whole.len() {
            let _ = messages(&whole[..cut]).count();
            let _ = attributes(&whole[..cut]).count();
        }
    }

    #[test]
    fn a_bad_attribute_length_is_an_error() {
        // rta_len 2: shorter than its own header.
        let bytes = [ne16(2), ne16(1)].concat();
        assert!(matches!(
            attributes(&bytes).next(),
            Some(Err(Malformed::Truncated { what: "attribute", .. }))
        ));
        // rta_len past the end.
        let bytes = [&ne16(12)[..], &ne16(1)[..], &[0; 4]].concat();
        assert!(matches!(attributes(&bytes).next(), Some(Err(_))));
        // The last attribute may go without its padding.
        let bytes = [&ne16(5)[..], &ne16(3)[..], &[7]].concat();
        let attrs: Vec<_> = attributes(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(attrs, [(3, &[7u8][..])]);
    }

    #[test]
    fn family_headers_round_trip() {
        let addr = IfAddrMsg {
            family: 10,
            prefix_len: 64,
            flags: 2,
            scope: 0,
            index: 3,
        };
        let bytes = addr.to_bytes();
        assert_eq!(IfAddrMsg::parse(&bytes), Ok((addr, &[][..])));
        let route = RtMsg {
            family: 2,
            dst_len: 24,
            table: RT_TABLE_MAIN,
            protocol: RTPROT_BOOT,
            scope: RT_SCOPE_LINK,
            kind: RTN_UNICAST,
            flags: RTM_F_CLONED,
        };
        let mut bytes = route.to_bytes().to_vec();
        bytes.extend_from_slice(b"tail");
        assert_eq!(RtMsg::parse(&bytes), Ok((route, &b"tail"[..])));
        let link = IfInfoMsg {
            index: 9,
            flags: 0x1003,
            change: 0,
        };
        assert_eq!(IfInfoMsg::parse(&link.to_bytes()), Ok((link, &[][..])));
        assert!(IfInfoMsg::parse(&[0; 15]).is_err());
        assert!(IfAddrMsg::parse(&[0; 7]).is_err());
        assert!(RtMsg::parse(&[0; 11]).is_err());
    }

    #[test]
    fn errors_carry_the_errno_and_the_kernels_text() {
        // An ACK.
        let mut payload = ne32(0).to_vec();
        payload.extend_from_slice(&[0; 16]);
        let buf = message(NLMSG_ERROR, NLM_F_CAPPED, 1, &payload);
        let msg = messages(&buf).next().unwrap().unwrap();
        assert_eq!(parse_error(&msg), Ok((0, None)));

        // EINVAL, capped echo, with an extended-ACK message.
        let mut payload = ne32((-libc::EINVAL) as u32).to_vec();
        payload.extend_from_slice(&[0; 16]);
        payload.extend_from_slice(&[&ne16(4 + 15)[..], &ne16(NLMSGERR_ATTR_MSG)[..], b"Invalid prefix\0\0"].concat());
        let buf = message(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 1, &payload);
        let msg = messages(&buf).next().unwrap().unwrap();
        assert_eq!(parse_error(&msg), Ok((libc::EINVAL, Some("Invalid prefix".to_owned()))));

        // Uncapped: the whole request (24 bytes) is echoed before the TLVs.
        let mut payload = ne32((-libc::EEXIST) as u32).to_vec();
        payload.extend_from_slice(&ne32(24));
        payload.extend_from_slice(&[0; 20]);
        payload.extend_from_slice(&[&ne16(4 + 3)[..], &ne16(NLMSGERR_ATTR_MSG)[..], b"no\0\0"].concat());
        let buf = message(NLMSG_ERROR, NLM_F_ACK_TLVS, 1, &payload);
        let msg = messages(&buf).next().unwrap().unwrap();
        assert_eq!(parse_error(&msg), Ok((libc::EEXIST, Some("no".to_owned()))));

        // Too short to hold an error code.
        let buf = message(NLMSG_ERROR, 0, 1, &[1, 2]);
        let msg = messages(&buf).next().unwrap().unwrap();
        assert!(parse_error(&msg).is_err());
    }

    #[test]
    fn addresses_need_their_full_length() {
        assert_eq!(ip_attr(2, &[10, 0, 0, 1]), Ok("10.0.0.1".parse().unwrap()));
        assert!(ip_attr(2, &[10, 0, 0]).is_err());
        let v6: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
        assert_eq!(ip_attr(10, &v6.octets()), Ok(IpAddr::V6(v6)));
        assert!(ip_attr(10, &[0; 15]).is_err());
        assert!(matches!(ip_attr(7, &[0; 4]), Err(Malformed::Unexpected(_))));
        assert_eq!(c_string(b"eth0\0\0\0"), "eth0");
        assert_eq!(c_string(b"no-nul"), "no-nul");
        assert!(u32_attr("mtu", &[1, 2]).is_err());
    }
}
