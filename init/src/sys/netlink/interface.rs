//! An interface configured as the host asks: the declarative entry points.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Netlink, NetlinkError, Route};

/// One interface's settings, as the host sends them. A plain struct: the
/// agent maps the protocol's types onto it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    pub name: String,
    pub mtu: Option<u32>,
    /// Addresses with their prefix lengths.
    pub addresses: Vec<(IpAddr, u8)>,
    /// The IPv4 default route's gateway.
    pub gateway4: Option<Ipv4Addr>,
    /// The IPv6 default route's gateway.
    pub gateway6: Option<Ipv6Addr>,
}

/// Brings one interface to what `cfg` says, in the order `ip` would: MTU
/// and up, addresses, then default routes through the gateways (which the
/// kernel accepts only once the addresses make them reachable).
///
/// It adds and removes nothing else: an address or a default route that is
/// already there (`EEXIST`) counts as done, so a second call is a no-op.
pub fn configure(nl: &mut Netlink, cfg: &InterfaceConfig) -> Result<(), NetlinkError> {
    let index = nl.link_index(&cfg.name)?;
    nl.set_link(index, Some(true), cfg.mtu)?;
    for &(address, prefix_len) in &cfg.addresses {
        already_there_is_fine(nl.add_address(index, address, prefix_len))?;
    }
    let gateways = [cfg.gateway4.map(IpAddr::V4), cfg.gateway6.map(IpAddr::V6)];
    for gateway in gateways.into_iter().flatten() {
        let default = Route {
            destination: None,
            gateway: Some(gateway),
            device: Some(index),
        };
        already_there_is_fine(nl.add_route(&default))?;
    }
    Ok(())
}

/// Brings `lo` up, where it is not yet; the kernel then gives it 127.0.0.1/8
/// and ::1/128. An `lo` already up is left untouched, so PID 1 of a
/// namespace that shares the host's network changes nothing there (and
/// needs no privilege for it).
pub fn loopback_up(nl: &mut Netlink) -> Result<(), NetlinkError> {
    let lo = nl.link("lo")?;
    if !lo.up {
        nl.set_link(lo.index, Some(true), None)?;
    }
    Ok(())
}

fn already_there_is_fine(result: Result<(), NetlinkError>) -> Result<(), NetlinkError> {
    match result {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}
