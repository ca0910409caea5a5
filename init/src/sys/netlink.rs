//! Network interfaces, addresses and routes over rtnetlink: what `ip link`,
//! `ip addr` and `ip route` do, without the `ip` binary or a netlink crate.
//!
//! [`Netlink`] is a small synchronous client on a blocking `NETLINK_ROUTE`
//! socket: the guest configures its network once at boot and rarely after.
//! Every request asks for an ACK and waits for it, so each call either
//! happened or returns the kernel's errno, with the kernel's own explanation
//! where it gives one (extended ACK). [`interface::configure`] and
//! [`interface::loopback_up`] are the declarative entry points the agent
//! uses; [`files::hosts_file`] and [`files::resolv_conf`] render the files
//! that go with them.
//!
//! Layout: `message` builds and walks the bytes (pure), `socket` moves
//! them, this file holds the requests and the error type, `interface` the
//! declarative entry points, `files` the renderers. The tests in `tests`
//! run against the real kernel, each in a network namespace of its own.

pub mod files;
pub mod interface;
mod message;
#[cfg(test)]
mod prop_tests;
mod socket;
#[cfg(test)]
mod tests;

use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;

use message::*;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("no network interface named \"{name}\"")]
    NoSuchLink { name: String },
    /// The kernel (or the socket) refused a request. `detail` is the
    /// kernel's extended-ACK text, where it gave one.
    #[error("cannot {op} {target}: {source}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Request {
        op: &'static str,
        target: String,
        source: io::Error,
        detail: Option<String>,
    },
    /// A request that cannot be put to the kernel at all.
    #[error("cannot {op} {target}: {reason}")]
    Invalid {
        op: &'static str,
        target: String,
        reason: &'static str,
    },
    #[error("the reply to {op} is cut short: a {what} needs {needed} bytes, {left} are left")]
    Truncated {
        op: &'static str,
        what: &'static str,
        needed: usize,
        left: usize,
    },
    #[error("unexpected reply to {op}: {what}")]
    Unexpected { op: &'static str, what: String },
}

impl NetlinkError {
    /// The errno behind the error, if there is one: `EEXIST` for something
    /// already there, `EPERM` without `CAP_NET_ADMIN`.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            NetlinkError::Socket(source) | NetlinkError::Request { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    fn malformed(op: &'static str, m: Malformed) -> NetlinkError {
        match m {
            Malformed::Truncated { what, needed, left } => NetlinkError::Truncated { op, what, needed, left },
            #[cfg(test)]
            Malformed::Unexpected(what) => NetlinkError::Unexpected { op, what },
        }
    }
}

/// One network interface, as a link dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`), whether or not it has a carrier.
    pub up: bool,
    /// The hardware address, where it is an Ethernet-sized one (loopback
    /// reports six zeros).
    pub mac: Option<[u8; 6]>,
}

/// A route in the main table. A default route has no destination; one
/// without a gateway reaches its destination directly on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub device: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    fn af(self) -> u8 {
        match self {
            Family::V4 => libc::AF_INET as u8,
            Family::V6 => libc::AF_INET6 as u8,
        }
    }
}

/// Why an exchange failed, before the caller says what it was doing.
enum Failure {
    /// The socket or the kernel said no: the errno and the kernel's text.
    Refused(io::Error, Option<String>),
    /// The reply made no sense: a complete error already.
    Reply(NetlinkError),
}

const LOOK_UP: &str = "look up interface";

/// How often a dump that the kernel marks inconsistent (the table changed
/// while it was read) is retried before its last result is taken as it is.
const DUMP_TRIES: usize = 3;

/// A connection to the kernel's routing netlink.
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
    pub fn open() -> Result<Netlink, NetlinkError> {
        Ok(Netlink {
            fd: socket::open().map_err(NetlinkError::Socket)?,
            seq: 0,
            buf: vec![0; 16 * 1024],
            stale: false,
        })
    }

    /// The index of the interface called `name`.
    pub fn link_index(&mut self, name: &str) -> Result<u32, NetlinkError> {
        self.link(name).map(|link| link.index)
    }

    /// The interface called `name`.
    pub fn link(&mut self, name: &str) -> Result<Link, NetlinkError> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            // The kernel would say EINVAL; no interface can have this name.
            return Err(NetlinkError::NoSuchLink { name: name.to_owned() });
        }
        match self.get_link(0, Some(name)) {
            Ok(Some(link)) => Ok(link),
            Ok(None) => Err(NetlinkError::Unexpected {
                op: LOOK_UP,
                what: format!("no interface in the reply for \"{name}\""),
            }),
            Err(Failure::Refused(e, _)) if e.raw_os_error() == Some(libc::ENODEV) => {
                Err(NetlinkError::NoSuchLink { name: name.to_owned() })
            }
            Err(failure) => Err(self.failed(LOOK_UP, failure, |_| name.to_owned())),
        }
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

    /// Brings the interface up or down, and sets its MTU; `None` leaves
    /// either as it is. Setting what is already set is no change.
    pub fn set_link(&mut self, index: u32, up: Option<bool>, mtu: Option<u32>) -> Result<(), NetlinkError> {
        if up.is_none() && mtu.is_none() {
            return Ok(());
        }
        let iff_up = libc::IFF_UP as u32;
        let header = IfInfoMsg {
            index,
            flags: if up == Some(true) { iff_up } else { 0 },
            change: if up.is_some() { iff_up } else { 0 },
        };
        let mut req = Request::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, &header.to_bytes());
        if let Some(mtu) = mtu {
            req.attr_u32(IFLA_MTU, mtu);
        }
        self.command("set link", &mut req).map_err(|failure| {
            self.failed("set link", failure, |nl| {
                let mut target = nl.link_name(index);
                match up {
                    Some(true) => target.push_str(" up"),
                    Some(false) => target.push_str(" down"),
                    None => {}
                }
                if let Some(mtu) = mtu {
                    target.push_str(&format!(" mtu {mtu}"));
                }
                target
            })
        })
    }

    /// Adds `address/prefix_len` to the interface; `EEXIST` if it has it.
    /// An IPv6 address skips duplicate address detection (`IFA_F_NODAD`):
    /// nothing else on a VM's link can hold it, and a tentative address
    /// could not be bound for the second or so DAD takes.
    pub fn add_address(&mut self, index: u32, address: IpAddr, prefix_len: u8) -> Result<(), NetlinkError> {
        let family = Family::of(address);
        let scope = match address {
            IpAddr::V4(a) if a.is_loopback() => RT_SCOPE_HOST,
            _ => RT_SCOPE_UNIVERSE,
        };
        let header = IfAddrMsg {
            family: family.af(),
            prefix_len,
            flags: if family == Family::V6 { IFA_F_NODAD as u8 } else { 0 },
            scope,
            index,
        };
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let mut req = Request::new(RTM_NEWADDR, flags, &header.to_bytes());
        match family {
            // IFA_LOCAL is the address; IFA_ADDRESS the peer, the same on a
            // broadcast link.
            Family::V4 => req.attr_ip(IFA_LOCAL, address).attr_ip(IFA_ADDRESS, address),
            Family::V6 => req.attr_ip(IFA_ADDRESS, address).attr_u32(IFA_FLAGS, IFA_F_NODAD),
        };
        self.command("add address", &mut req).map_err(|failure| {
            self.failed("add address", failure, |nl| {
                format!("{address}/{prefix_len} on {}", nl.link_name(index))
            })
        })
    }

    /// Every address, or those of one interface: (interface index,
    /// address, prefix length). The tests read back what `configure` did.
    #[cfg(test)]
    pub fn addresses(&mut self, index: Option<u32>) -> Result<Vec<(u32, IpAddr, u8)>, NetlinkError> {
        let all = self.dump(
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
        )?;
        Ok(all
            .into_iter()
            .filter(|&(i, _, _)| index.is_none() || index == Some(i))
            .collect())
    }

    /// Adds a route to the main table (protocol `boot`, as `ip route add`
    /// would); `EEXIST` if there is one to that destination already. Its
    /// scope is global with a gateway and link without one.
    pub fn add_route(&mut self, route: &Route) -> Result<(), NetlinkError> {
        const OP: &str = "add route";
        let destination_family = route.destination.map(|(a, _)| Family::of(a));
        let gateway_family = route.gateway.map(Family::of);
        let family = match (destination_family, gateway_family) {
            (Some(d), Some(g)) if d != g => Err("its destination and gateway are of different address families"),
            (Some(f), _) | (None, Some(f)) => Ok(f),
            (None, None) => Err("a route needs a destination or a gateway to tell IPv4 from IPv6"),
        };
        let family = match family {
            Ok(family) => family,
            Err(reason) => {
                let target = self.route_target(route);
                return Err(NetlinkError::Invalid { op: OP, target, reason });
            }
        };
        let header = RtMsg {
            family: family.af(),
            dst_len: route.destination.map_or(0, |(_, len)| len),
            table: RT_TABLE_MAIN,
            protocol: RTPROT_BOOT,
            scope: if route.gateway.is_some() {
                RT_SCOPE_UNIVERSE
            } else {
                RT_SCOPE_LINK
            },
            kind: RTN_UNICAST,
            flags: 0,
        };
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let mut req = Request::new(RTM_NEWROUTE, flags, &header.to_bytes());
        if let Some((destination, _)) = route.destination {
            req.attr_ip(RTA_DST, destination);
        }
        if let Some(gateway) = route.gateway {
            req.attr_ip(RTA_GATEWAY, gateway);
        }
        if let Some(device) = route.device {
            req.attr_u32(RTA_OIF, device);
        }
        self.command(OP, &mut req)
            .map_err(|failure| self.failed(OP, failure, |nl| nl.route_target(route)))
    }

    /// The unicast routes of the main table, as `ip route` lists them. The
    /// tests read back what `configure` did.
    #[cfg(test)]
    pub fn routes(&mut self, family: Family) -> Result<Vec<Route>, NetlinkError> {
        let target = match family {
            Family::V4 => "IPv4 routes",
            Family::V6 => "IPv6 routes",
        };
        let header = RtMsg {
            family: family.af(),
            ..RtMsg::default()
        };
        self.dump(
            "list",
            target,
            || Request::new(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, &header.to_bytes()),
            |msg| match msg.kind {
                RTM_NEWROUTE => parse_route(msg.payload),
                _ => Ok(None),
            },
        )
    }

    /// Sends `req` and reads the reply up to its ACK (or the end of a dump),
    /// handing every other message of it to `each`. True when the kernel
    /// marked the reply interrupted: a dump during which the table changed.
    fn exchange(
        &mut self,
        op: &'static str,
        req: &mut Request,
        mut each: impl FnMut(&Message<'_>) -> Result<(), Malformed>,
    ) -> Result<bool, Failure> {
        if self.stale {
            self.fd = socket::open().map_err(|e| Failure::Refused(e, None))?;
            self.stale = false;
        }
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        socket::send(&self.fd, req.finish(seq)).map_err(|e| Failure::Refused(e, None))?;
        // Until the terminating message, an early return leaves the rest of
        // the reply behind on the socket.
        self.stale = true;
        let mut interrupted = false;
        loop {
            let len = socket::receive(&self.fd, &mut self.buf).map_err(|e| Failure::Refused(e, None))?;
            for msg in message::messages(self.buf.get(..len).unwrap_or(&[])) {
                let msg = msg.map_err(|m| Failure::Reply(NetlinkError::malformed(op, m)))?;
                if msg.seq != seq {
                    continue; // the rest of an abandoned exchange
                }
                // On any message of a dump, its end included.
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
                        .map_err(|m| Failure::Reply(NetlinkError::malformed(op, m)))?;
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
                    _ => each(&msg).map_err(|m| Failure::Reply(NetlinkError::malformed(op, m)))?,
                }
            }
        }
    }

    /// A request that changes something: nothing comes back but the ACK.
    fn command(&mut self, op: &'static str, req: &mut Request) -> Result<(), Failure> {
        self.exchange(op, req, |_| Ok(())).map(drop)
    }

    /// A dump request: every item `parse` finds in the reply, the dump
    /// retried a few times while the kernel marks it interrupted.
    fn dump<T>(
        &mut self,
        op: &'static str,
        target: &'static str,
        request: impl Fn() -> Request,
        mut parse: impl FnMut(&Message<'_>) -> Result<Option<T>, Malformed>,
    ) -> Result<Vec<T>, NetlinkError> {
        let mut tries = 0;
        loop {
            let mut items = Vec::new();
            let mut req = request();
            let interrupted = self
                .exchange(op, &mut req, |msg| {
                    items.extend(parse(msg)?);
                    Ok(())
                })
                .map_err(|failure| self.failed(op, failure, |_| target.to_owned()))?;
            tries += 1;
            if !interrupted || tries == DUMP_TRIES {
                return Ok(items);
            }
        }
    }

    /// The error for a failed exchange; `target` names what it was about,
    /// and may ask the kernel for a name (only after the exchange is over).
    fn failed(
        &mut self,
        op: &'static str,
        failure: Failure,
        target: impl FnOnce(&mut Netlink) -> String,
    ) -> NetlinkError {
        match failure {
            Failure::Refused(source, detail) => NetlinkError::Request {
                op,
                target: target(self),
                source,
                detail,
            },
            Failure::Reply(e) => e,
        }
    }

    /// The name of interface `index` for a message, or `ifindex N`.
    fn link_name(&mut self, index: u32) -> String {
        match self.get_link(index, None) {
            Ok(Some(link)) if !link.name.is_empty() => link.name,
            _ => format!("ifindex {index}"),
        }
    }

    /// `RTM_GETLINK` for one interface, by index or (index 0) by name.
    fn get_link(&mut self, index: u32, name: Option<&str>) -> Result<Option<Link>, Failure> {
        let header = IfInfoMsg {
            index,
            ..IfInfoMsg::default()
        };
        let mut req = Request::new(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, &header.to_bytes());
        if let Some(name) = name {
            req.attr_str(IFLA_IFNAME, name);
        }
        req.attr_u32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        let mut found = None;
        self.exchange(LOOK_UP, &mut req, |msg| {
            if msg.kind == RTM_NEWLINK {
                found = Some(parse_link(msg.payload)?);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// `ip route` syntax: `default via 10.0.2.2 dev eth0`.
    fn route_target(&mut self, route: &Route) -> String {
        let mut target = match route.destination {
            Some((address, len)) => format!("{address}/{len}"),
            None => "default".to_owned(),
        };
        if let Some(gateway) = route.gateway {
            target.push_str(&format!(" via {gateway}"));
        }
        if let Some(device) = route.device {
            let name = self.link_name(device);
            target.push_str(&format!(" dev {name}"));
        }
        target
    }
}

fn parse_link(payload: &[u8]) -> Result<Link, Malformed> {
    let (info, attrs) = IfInfoMsg::parse(payload)?;
    let mut link = Link {
        index: info.index,
        name: String::new(),
        mtu: 0,
        up: info.flags & libc::IFF_UP as u32 != 0,
        mac: None,
    };
    for attr in message::attributes(attrs) {
        match attr? {
            (IFLA_IFNAME, name) => link.name = message::c_string(name),
            (IFLA_MTU, mtu) => link.mtu = message::u32_attr("MTU", mtu)?,
            (IFLA_ADDRESS, mac) => link.mac = <[u8; 6]>::try_from(mac).ok(),
            _ => {}
        }
    }
    Ok(link)
}

#[cfg(test)]
fn parse_address(payload: &[u8]) -> Result<Option<(u32, IpAddr, u8)>, Malformed> {
    let (header, attrs) = IfAddrMsg::parse(payload)?;
    if ![libc::AF_INET, libc::AF_INET6].contains(&i32::from(header.family)) {
        return Ok(None);
    }
    let (mut local, mut address) = (None, None);
    for attr in message::attributes(attrs) {
        match attr? {
            (IFA_LOCAL, a) => local = Some(message::ip_attr(header.family, a)?),
            (IFA_ADDRESS, a) => address = Some(message::ip_attr(header.family, a)?),
            _ => {}
        }
    }
    // On a point-to-point link IFA_ADDRESS is the peer, IFA_LOCAL ours.
    Ok(local.or(address).map(|a| (header.index, a, header.prefix_len)))
}

#[cfg(test)]
fn parse_route(payload: &[u8]) -> Result<Option<Route>, Malformed> {
    let (header, attrs) = RtMsg::parse(payload)?;
    if ![libc::AF_INET, libc::AF_INET6].contains(&i32::from(header.family))
        || header.kind != RTN_UNICAST
        || header.flags & RTM_F_CLONED != 0
    {
        return Ok(None);
    }
    let mut table = u32::from(header.table);
    let mut route = Route {
        destination: None,
        gateway: None,
        device: None,
    };
    for attr in message::attributes(attrs) {
        match attr? {
            (RTA_TABLE, t) => table = message::u32_attr("route table", t)?,
            (RTA_DST, a) => route.destination = Some((message::ip_attr(header.family, a)?, header.dst_len)),
            (RTA_GATEWAY, a) => route.gateway = Some(message::ip_attr(header.family, a)?),
            (RTA_OIF, oif) => route.device = Some(message::u32_attr("output interface", oif)?),
            _ => {}
        }
    }
    if header.dst_len == 0 {
        route.destination = None;
    }
    Ok((table == u32::from(RT_TABLE_MAIN)).then_some(route))
}
