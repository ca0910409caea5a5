//! A small synchronous rtnetlink client: what `ip link`, `ip addr`, `ip
//! route` and `tc` do for the attachment, without those programs.
//!
//! Every request asks for an ACK and waits for it, so each call either
//! happened or returns the kernel's errno, with the kernel's own
//! explanation where it gives one (extended ACK). Dumps are retried a few
//! times while the kernel marks them interrupted. The socket is in the
//! network namespace of the thread that opened it.

use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;

use super::message::{self, *};
use super::socket;

/// How often a dump that the kernel marks inconsistent (the table changed
/// while it was read) is retried before its last result is taken.
const DUMP_TRIES: usize = 3;

/// `ARPHRD_LOOPBACK`.
pub const ARPHRD_LOOPBACK: u16 = 772;
/// `ARPHRD_ETHER`.
pub const ARPHRD_ETHER: u16 = 1;

/// Why a netlink request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// No socket: the system refused one.
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// The kernel (or the socket) refused a request. `detail` is the
    /// kernel's extended-ACK text, where it gave one.
    #[error("cannot {op} {target}: {source}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Request {
        /// What was asked (`add ingress qdisc to`).
        op: &'static str,
        /// What it was about (`eth0`).
        target: String,
        /// The errno.
        source: io::Error,
        /// The kernel's explanation.
        detail: Option<String>,
    },
    /// A reply shorter than its headers say.
    #[error("the reply to {op} is cut short: a {what} needs {needed} bytes, {left} are left")]
    Truncated {
        /// What was asked.
        op: &'static str,
        /// What was being read.
        what: &'static str,
        /// The bytes it needs.
        needed: usize,
        /// The bytes left.
        left: usize,
    },
    /// A reply that is not what the request calls for.
    #[error("unexpected reply to {op}: {what}")]
    Unexpected {
        /// What was asked.
        op: &'static str,
        /// What came.
        what: String,
    },
}

impl NetlinkError {
    /// The errno behind the error, if there is one: `EEXIST` for
    /// something already there, `EPERM` without `CAP_NET_ADMIN`.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetlinkError::Socket(source) | NetlinkError::Request { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    fn truncated(op: &'static str, t: Truncated) -> NetlinkError {
        NetlinkError::Truncated {
            op,
            what: t.what,
            needed: t.needed,
            left: t.left,
        }
    }
}

/// One network interface, as a link dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// `ARPHRD_*`: [`ARPHRD_ETHER`], [`ARPHRD_LOOPBACK`], ...
    pub kind: u16,
    /// Its driver's kind (`veth`, `tun`, `macvlan`), where it has one.
    pub driver: Option<String>,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Its hardware address, where it is an Ethernet-sized one.
    pub mac: Option<[u8; 6]>,
}

/// An address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The interface's index.
    pub index: u32,
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// `RT_SCOPE_*`: universe (0) for an address that reaches beyond the
    /// link, link (253) for `fe80::`.
    pub scope: u8,
}

/// A unicast route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `None`: the default route.
    pub destination: Option<(IpAddr, u8)>,
    /// The next hop; `None`: the destination is on the link.
    pub gateway: Option<IpAddr>,
    /// The interface it leaves through.
    pub device: Option<u32>,
    /// Who made it (`RTPROT_*`): [`RTPROT_KERNEL`] for the routes the
    /// kernel makes from an address.
    pub protocol: u8,
}

/// Why an exchange failed, before the caller says what it was doing.
enum Failure {
    /// The socket or the kernel said no: the errno and the kernel's text.
    Refused(io::Error, Option<String>),
    /// The reply made no sense: a complete error already.
    Reply(NetlinkError),
}

/// A connection to the kernel's routing netlink, in the network namespace
/// of the thread that opened it.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    /// Receive buffer, grown to the largest datagram seen.
    buf: Vec<u8>,
    /// An exchange was abandoned half-way (a dump may still be running on
    /// this socket): the next one starts on a fresh socket.
    stale: bool,
}

impl Netlink {
    /// A socket in this thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        Ok(Netlink {
            fd: socket::open().map_err(NetlinkError::Socket)?,
            seq: 0,
            buf: vec![0; 32 * 1024],
            stale: false,
        })
    }

    /// Every interface.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        self.dump(
            "list",
            "interfaces",
            || {
                let mut req = Request::new(
                    RTM_GETLINK,
                    NLM_F_REQUEST | NLM_F_DUMP,
                    &IfInfoMsg::default().to_bytes(),
                );
                req.attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
                req
            },
            |msg| match msg.kind {
                RTM_NEWLINK => parse_link(msg.payload).map(Some),
                _ => Ok(None),
            },
        )
    }

    /// Every IPv4 and IPv6 address.
    pub fn addresses(&mut self) -> Result<Vec<Address>, NetlinkError> {
        self.dump(
            "list",
            "addresses",
            || {
                Request::new(
                    RTM_GETADDR,
                    NLM_F_REQUEST | NLM_F_DUMP,
                    &IfAddrMsg::default().to_bytes(),
                )
            },
            |msg| match msg.kind {
                RTM_NEWADDR => parse_address(msg.payload),
                _ => Ok(None),
            },
        )
    }

    /// The unicast routes of the main table, IPv4 and IPv6.
    pub fn routes(&mut self) -> Result<Vec<Route>, NetlinkError> {
        let mut all = Vec::new();
        for (family, target) in [(libc::AF_INET, "IPv4 routes"), (libc::AF_INET6, "IPv6 routes")] {
            let header = RtMsg {
                family: family as u8,
                ..RtMsg::default()
            };
            all.extend(self.dump(
                "list",
                target,
                || Request::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, &header.to_bytes()),
                |msg| match msg.kind {
                    RTM_NEWROUTE => parse_route(msg.payload),
                    _ => Ok(None),
                },
            )?);
        }
        Ok(all)
    }

    /// Brings interface `index` (called `name`, for messages) up, with
    /// `mtu`.
    pub fn set_up(&mut self, index: u32, name: &str, mtu: u32) -> Result<(), NetlinkError> {
        let iff_up = libc::IFF_UP as u32;
        let header = IfInfoMsg {
            index,
            flags: iff_up,
            change: iff_up,
            ..IfInfoMsg::default()
        };
        let mut req = Request::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, &header.to_bytes());
        req.attr_u32(IFLA_MTU, mtu);
        self.command("bring up", format!("{name} with mtu {mtu}"), &mut req)
    }

    /// Adds the ingress qdisc of interface `index`; `EEXIST` if it has one.
    pub fn add_ingress_qdisc(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        self.command(
            "add an ingress qdisc to",
            name.to_owned(),
            &mut add_ingress_qdisc(index),
        )
    }

    /// Deletes the ingress qdisc of interface `index`, and its filters.
    pub fn delete_ingress_qdisc(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        self.command(
            "delete the ingress qdisc of",
            name.to_owned(),
            &mut delete_ingress_qdisc(index),
        )
    }

    /// Redirects everything that comes in on `from` out of `to` (see
    /// [`message::add_redirect`]).
    pub fn add_redirect(
        &mut self,
        (from, from_name): (u32, &str),
        (to, to_name): (u32, &str),
    ) -> Result<(), NetlinkError> {
        self.command(
            "redirect",
            format!("the ingress of {from_name} to {to_name}"),
            &mut add_redirect(from, to),
        )
    }

    /// A request that changes something: nothing comes back but the ACK.
    fn command(&mut self, op: &'static str, target: String, req: &mut Request) -> Result<(), NetlinkError> {
        match self.exchange(op, req, |_| Ok(())) {
            Ok(_) => Ok(()),
            Err(Failure::Refused(source, detail)) => Err(NetlinkError::Request {
                op,
                target,
                source,
                detail,
            }),
            Err(Failure::Reply(e)) => Err(e),
        }
    }

    /// A dump request: every item `parse` finds in the reply.
    fn dump<T>(
        &mut self,
        op: &'static str,
        target: &'static str,
        request: impl Fn() -> Request,
        mut parse: impl FnMut(&Message<'_>) -> Result<Option<T>, Truncated>,
    ) -> Result<Vec<T>, NetlinkError> {
        let mut tries = 0;
        loop {
            let mut items = Vec::new();
            let mut req = request();
            let exchanged = self.exchange(op, &mut req, |msg| {
                items.extend(parse(msg)?);
                Ok(())
            });
            let interrupted = match exchanged {
                Ok(interrupted) => interrupted,
                Err(Failure::Refused(source, detail)) => {
                    return Err(NetlinkError::Request {
                        op,
                        target: target.to_owned(),
                        source,
                        detail,
                    })
                }
                Err(Failure::Reply(e)) => return Err(e),
            };
            tries += 1;
            if !interrupted || tries == DUMP_TRIES {
                return Ok(items);
            }
        }
    }

    /// Sends `req` and reads the reply up to its ACK (or the end of a
    /// dump), handing every other message of it to `each`. True when the
    /// kernel marked a dump interrupted.
    fn exchange(
        &mut self,
        op: &'static str,
        req: &mut Request,
        mut each: impl FnMut(&Message<'_>) -> Result<(), Truncated>,
    ) -> Result<bool, Failure> {
        if self.stale {
            self.fd = socket::open().map_err(|e| Failure::Refused(e, None))?;
            self.stale = false;
        }
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        socket::send(&self.fd, req.finish(seq)).map_err(|e| Failure::Refused(e, None))?;
        // Until the terminating message, an early return leaves the rest
        // of the reply behind on the socket.
        self.stale = true;
        let mut interrupted = false;
        loop {
            let len = socket::receive(&self.fd, &mut self.buf).map_err(|e| Failure::Refused(e, None))?;
            for msg in message::messages(self.buf.get(..len).unwrap_or(&[])) {
                let msg = msg.map_err(|t| Failure::Reply(NetlinkError::truncated(op, t)))?;
                if msg.seq != seq {
                    continue; // the rest of an abandoned exchange
                }
                interrupted |= msg.flags & NLM_F_DUMP_INTR != 0;
                match msg.kind {
                    NLMSG_NOOP => {}
                    NLMSG_ERROR | NLMSG_DONE => {
                        self.stale = false;
                        let (errno, detail) = if msg.kind == NLMSG_ERROR {
                            message::parse_error(&msg)
                        } else {
                            // A dump's end: an int, negative if it failed.
                            message::u32_attr("dump status", msg.payload).map(|e| ((e as i32).wrapping_neg(), None))
                        }
                        .map_err(|t| Failure::Reply(NetlinkError::truncated(op, t)))?;
                        return match errno {
                            0 => Ok(interrupted),
                            errno => Err(Failure::Refused(io::Error::from_raw_os_error(errno), detail)),
                        };
                    }
                    NLMSG_OVERRUN => {
                        return Err(Failure::Reply(NetlinkError::Unexpected {
                            op,
                            what: "the kernel overran the socket".to_owned(),
                        }))
                    }
                    _ => each(&msg).map_err(|t| Failure::Reply(NetlinkError::truncated(op, t)))?,
                }
            }
        }
    }
}

/// A link of a `RTM_NEWLINK` message.
pub(super) fn parse_link(payload: &[u8]) -> Result<Link, Truncated> {
    let (info, attrs) = IfInfoMsg::parse(payload)?;
    let mut link = Link {
        index: info.index,
        name: String::new(),
        kind: info.kind,
        driver: None,
        mtu: 0,
        up: info.flags & libc::IFF_UP as u32 != 0,
        mac: None,
    };
    for attr in message::attributes(attrs) {
        match attr? {
            (IFLA_IFNAME, name) => link.name = message::c_string(name),
            (IFLA_MTU, mtu) => link.mtu = message::u32_attr("MTU", mtu)?,
            (IFLA_ADDRESS, mac) => link.mac = <[u8; 6]>::try_from(mac).ok(),
            (IFLA_LINKINFO, info) => {
                for attr in message::attributes(info) {
                    if let (IFLA_INFO_KIND, kind) = attr? {
                        link.driver = Some(message::c_string(kind));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(link)
}

/// The address of a `RTM_NEWADDR` message; `None` for a family other than
/// IPv4 and IPv6.
pub(super) fn parse_address(payload: &[u8]) -> Result<Option<Address>, Truncated> {
    let (header, attrs) = IfAddrMsg::parse(payload)?;
    let (mut local, mut address) = (None, None);
    for attr in message::attributes(attrs) {
        match attr? {
            (IFA_LOCAL, a) => local = message::ip_attr(header.family, a)?,
            (IFA_ADDRESS, a) => address = message::ip_attr(header.family, a)?,
            _ => {}
        }
    }
    // On a point-to-point link IFA_ADDRESS is the peer, IFA_LOCAL ours.
    Ok(local.or(address).map(|address| Address {
        index: header.index,
        address,
        prefix_len: header.prefix_len,
        scope: header.scope,
    }))
}

/// The route of a `RTM_NEWROUTE` message; `None` for one that is not a
/// unicast route of the main table (local, broadcast, multicast, cached).
pub(super) fn parse_route(payload: &[u8]) -> Result<Option<Route>, Truncated> {
    let (header, attrs) = RtMsg::parse(payload)?;
    if header.kind != RTN_UNICAST || header.flags & RTM_F_CLONED != 0 {
        return Ok(None);
    }
    let mut table = u32::from(header.table);
    let mut route = Route {
        destination: None,
        gateway: None,
        device: None,
        protocol: header.protocol,
    };
    for attr in message::attributes(attrs) {
        match attr? {
            (RTA_TABLE, t) => table = message::u32_attr("route table", t)?,
            (RTA_DST, a) => route.destination = message::ip_attr(header.family, a)?.map(|a| (a, header.dst_len)),
            (RTA_GATEWAY, a) => route.gateway = message::ip_attr(header.family, a)?,
            (RTA_OIF, oif) => route.device = Some(message::u32_attr("output interface", oif)?),
            _ => {}
        }
    }
    if header.dst_len == 0 {
        route.destination = None;
    }
    Ok((table == u32::from(RT_TABLE_MAIN)).then_some(route))
}
