//! The VM's NICs joined to the interfaces of a network namespace, Kata's
//! `tcfilter` way: for each interface the namespace's network stack set up
//! (a veth from netavark, CNI or libnetwork), a tap device beside it in the
//! namespace, and two `tc` redirects: what comes in on the interface goes
//! out of the tap (to QEMU, to the guest), what comes in on the tap (from
//! the guest) goes out of the interface. The interface keeps its MAC,
//! addresses and routes; the guest's NIC takes them, so the container
//! keeps the address its runtime gave it, and the namespace's own stack
//! sees none of the traffic.

use std::net::IpAddr;

use agent_proto::{InterfaceConfig, RouteConfig};

use super::netlink::{Address, Link, Netlink, Route, ARPHRD_ETHER, ARPHRD_LOOPBACK};
use super::tap::Tap;
use super::NetnsError;
use crate::network::format_mac;

/// The prefix of the taps' names, numbered from 0.
const TAP_PREFIX: &str = "vmtap";

/// One interface of the namespace, joined to a tap.
#[derive(Debug)]
pub struct Attached {
    /// The namespace's interface.
    pub link: Link,
    /// Its addresses the guest takes (those that reach beyond the link).
    pub addresses: Vec<Address>,
    /// Its routes the guest takes (not those the kernel makes from an
    /// address).
    pub routes: Vec<Route>,
    /// The tap, whose descriptor QEMU gets.
    pub tap: Tap,
}

impl Attached {
    /// The guest's settings of the NIC that takes this interface's place:
    /// named by its MAC (the interface's), its MTU, addresses, the default
    /// routes as gateways, the other routes as they are.
    pub fn guest_config(&self) -> InterfaceConfig {
        let mac = self.link.mac.map(format_mac).unwrap_or_default();
        let mut gateways = Vec::new();
        let mut routes = Vec::new();
        // Routes on the link first: a gateway must be reachable when its
        // route is added.
        let mut ordered: Vec<&Route> = self.routes.iter().collect();
        ordered.sort_by_key(|r| r.gateway.is_some());
        for route in ordered {
            match (route.destination, route.gateway) {
                (None, Some(gateway)) => gateways.push(gateway.to_string()),
                (None, None) => {}
                (Some((destination, len)), gateway) => routes.push(RouteConfig {
                    destination: format!("{destination}/{len}"),
                    gateway: gateway.map(|g| g.to_string()),
                }),
            }
        }
        InterfaceConfig {
            name: mac,
            mtu: Some(self.link.mtu),
            addresses: self
                .addresses
                .iter()
                .map(|a| format!("{}/{}", a.address, a.prefix_len))
                .collect(),
            gateways,
            routes,
        }
    }
}

/// Which interfaces of a namespace the VM takes: every one that is up but
/// loopback. One that is not Ethernet cannot be (a VM's NIC is), nor one
/// without a MAC.
pub(super) fn chosen(links: &[Link]) -> Result<Vec<&Link>, NetnsError> {
    let mut chosen = Vec::new();
    for link in links {
        if link.kind == ARPHRD_LOOPBACK || !link.up {
            continue;
        }
        if link.kind != ARPHRD_ETHER {
            return Err(NetnsError::NotEthernet {
                name: link.name.clone(),
                kind: link.kind,
            });
        }
        if link.mac.is_none_or(|mac| mac == [0; 6]) {
            return Err(NetnsError::NoMac {
                name: link.name.clone(),
            });
        }
        chosen.push(link);
    }
    Ok(chosen)
}

/// What of `addresses` and `routes` goes with interface `index` to the
/// guest: addresses of universe scope (not `fe80::`), routes through it
/// that the kernel did not make from an address, nor IPv6's link-local and
/// multicast ones.
pub(super) fn settings_of(index: u32, addresses: &[Address], routes: &[Route]) -> (Vec<Address>, Vec<Route>) {
    let addresses = addresses
        .iter()
        .filter(|a| a.index == index && a.scope == super::message::RT_SCOPE_UNIVERSE)
        .copied()
        .collect();
    let routes = routes
        .iter()
        .filter(|r| r.device == Some(index) && r.protocol != super::message::RTPROT_KERNEL)
        .filter(|r| match r.destination {
            Some((IpAddr::V6(a), _)) => !(a.is_multicast() || a.is_unicast_link_local()),
            _ => true,
        })
        .cloned()
        .collect();
    (addresses, routes)
}

/// Joins each chosen interface of this thread's network namespace to a
/// tap of its own. On an error, what was done is undone.
pub(super) fn attach_all(nl: &mut Netlink) -> Result<Vec<Attached>, NetnsError> {
    let links = nl.links()?;
    let addresses = nl.addresses()?;
    let routes = nl.routes()?;
    let mut attached: Vec<Attached> = Vec::new();
    let mut names: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
    for link in chosen(&links)? {
        let tap_name = (0..)
            .map(|n| format!("{TAP_PREFIX}{n}"))
            .find(|n| !names.contains(n))
            .expect("a free name");
        names.push(tap_name.clone());
        match attach_one(nl, link, &tap_name) {
            Ok(tap) => {
                let (addresses, routes) = settings_of(link.index, &addresses, &routes);
                attached.push(Attached {
                    link: link.clone(),
                    addresses,
                    routes,
                    tap,
                });
            }
            Err(e) => {
                detach_all(nl, &attached);
                return Err(e);
            }
        }
    }
    Ok(attached)
}

/// A tap for `link`, up with its MTU, and the redirects both ways.
fn attach_one(nl: &mut Netlink, link: &Link, tap_name: &str) -> Result<Tap, NetnsError> {
    let tap = Tap::create(tap_name).map_err(|source| NetnsError::Tap {
        name: tap_name.to_owned(),
        source,
    })?;
    let tap_index = interface_index(&tap).map_err(|source| NetnsError::Tap {
        name: tap.name.clone(),
        source,
    })?;
    nl.set_up(tap_index, &tap.name, link.mtu)?;
    if let Err(e) = nl.add_ingress_qdisc(link.index, &link.name) {
        return Err(match e.raw_os_error() {
            Some(libc::EEXIST) => NetnsError::Taken {
                name: link.name.clone(),
            },
            _ => e.into(),
        });
    }
    let redirected = (|| {
        nl.add_ingress_qdisc(tap_index, &tap.name)?;
        nl.add_redirect((link.index, &link.name), (tap_index, &tap.name))?;
        nl.add_redirect((tap_index, &tap.name), (link.index, &link.name))
    })();
    if let Err(e) = redirected {
        let _ = nl.delete_ingress_qdisc(link.index, &link.name);
        return Err(e.into());
    }
    Ok(tap)
}

/// Removes the redirects from the namespace's interfaces (their ingress
/// qdiscs); the taps go with their last descriptor. Interfaces that are
/// gone meanwhile are fine. Returns the failures, for the log.
pub(super) fn detach_all(nl: &mut Netlink, attached: &[Attached]) -> Vec<NetnsError> {
    let mut failures = Vec::new();
    for a in attached {
        if let Err(e) = nl.delete_ingress_qdisc(a.link.index, &a.link.name) {
            // ENODEV: the interface is gone; ENOENT, EINVAL: its qdisc is.
            if !matches!(e.raw_os_error(), Some(libc::ENODEV | libc::ENOENT | libc::EINVAL)) {
                failures.push(e.into());
            }
        }
    }
    failures
}

/// The index of `tap`, by its name in this thread's namespace.
fn interface_index(tap: &Tap) -> std::io::Result<u32> {
    let name = std::ffi::CString::new(tap.name.as_str()).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated name that lives across the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    match index {
        0 => Err(std::io::Error::last_os_error()),
        index => Ok(index),
    }
}
