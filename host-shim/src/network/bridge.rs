//! The bridge driver, for hosts where vmshim runs as root: a network is a
//! Linux bridge holding the subnet's gateway address (so the host itself
//! reaches the VMs at their addresses), and each VM joins it through a tap
//! device of its own. Nothing else is attached to the bridge: no physical
//! interface, no NAT, no forwarding rules; traffic stays between the VMs
//! and the host.
//!
//! | device | name | made | deleted |
//! |---|---|---|---|
//! | bridge | `vmbr-NAME`, or `vmbr-` and a hash of a name that is long or holds a '.' | `network create` | `network rm` |
//! | tap | `vmtap-` and the VM's address in hex (`vmtap-0a590002` for 10.89.0.2) | `lease` | when the [`Lease`](super::Lease) is dropped, or by the next `lease` or `rm` after its owner died |
//!
//! Each step is a function of the host's devices ([`Links`]) and of what
//! is on disk ([`Network`]); [`super::networks`] calls them in order.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::error::NetworkError;
use super::links::{delete_link, LinkKind, Links, BRIDGE_PREFIX, MAX_IFNAME, TAP_PREFIX};
use super::store::Network;
use super::subnet::Subnet;

/// The bridge of network `network`: `vmbr-NAME` when the name fits and
/// holds only letters, digits, '-' and '_'; else `vmbr-` and 10 hex digits
/// of its SHA-256.
pub fn bridge_name(network: &str) -> String {
    let fits = network.len() <= MAX_IFNAME - BRIDGE_PREFIX.len();
    let plain = network
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if fits && plain && !network.is_empty() {
        return format!("{BRIDGE_PREFIX}{network}");
    }
    let digest = Sha256::digest(network.as_bytes());
    let hex: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("{BRIDGE_PREFIX}{hex}")
}

/// The tap device of the VM at `ip`: `vmtap-` and the address in hex.
pub fn tap_name(ip: Ipv4Addr) -> String {
    format!("{TAP_PREFIX}{:08x}", u32::from(ip))
}

/// The address a tap device was named for.
fn tap_address(name: &str) -> Option<Ipv4Addr> {
    let hex = name.strip_prefix(TAP_PREFIX)?;
    (hex.len() == 8)
        .then(|| u32::from_str_radix(hex, 16).ok())
        .flatten()
        .map(Ipv4Addr::from)
}

/// A VM's tap device, deleted when dropped.
#[derive(Debug)]
pub struct Tap {
    name: String,
    links: Arc<dyn Links>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = delete_link(&*self.links, &self.name, LinkKind::Tap);
    }
}

/// Refuses work on bridges and taps without CAP_NET_ADMIN, before
/// anything is done; `what` names the work.
pub(super) fn check_may_admin(links: &dyn Links, what: impl FnOnce() -> String) -> Result<(), NetworkError> {
    if links.may_admin() {
        Ok(())
    } else {
        Err(NetworkError::NeedsNetAdmin { what: what() })
    }
}

/// Chooses the bridge of a new network `name` on `subnet`: its name must
/// be free on the host and among `others`, and the subnet must overlap
/// none of the host's routes (but its default route), or the host would
/// lose its way to them.
pub(super) fn plan_bridge(
    links: &dyn Links,
    name: &str,
    subnet: Subnet,
    others: &[Network],
) -> Result<String, NetworkError> {
    let bridge = bridge_name(name);
    let taken = others.iter().any(|o| o.bridge.as_deref() == Some(bridge.as_str()));
    if taken || links.kind(&bridge).is_some() {
        return Err(NetworkError::DeviceExists {
            device: bridge,
            hint: "choose another network name",
        });
    }
    check_host_routes(links, subnet)?;
    Ok(bridge)
}

/// Refuses a subnet that overlaps one of the host's routes (but its
/// default route).
fn check_host_routes(links: &dyn Links, subnet: Subnet) -> Result<(), NetworkError> {
    for route in links.routes() {
        if route.prefix_len > 0 && subnet.overlaps_range(route.destination, route.prefix_len) {
            return Err(NetworkError::HostRoute {
                subnet,
                route: format!("{}/{}", route.destination, route.prefix_len),
                device: route.device,
            });
        }
    }
    Ok(())
}

/// Makes bridge `bridge` with the gateway address of `subnet`, up. On
/// error, nothing is left.
pub(super) fn add_bridge(links: &dyn Links, bridge: &str, subnet: Subnet) -> Result<(), NetworkError> {
    links.ip(&["link", "add", bridge, "type", "bridge"])?;
    let gateway = format!("{}/{}", subnet.gateway(), subnet.prefix_len());
    let configured = links
        .ip(&["addr", "add", &gateway, "dev", bridge])
        .and_then(|()| links.ip(&["link", "set", "dev", bridge, "up"]));
    if let Err(e) = configured {
        let _ = delete_link(links, bridge, LinkKind::Bridge);
        return Err(e);
    }
    Ok(())
}

/// Deletes bridge `bridge` (if it is still there and still a bridge).
pub(super) fn delete_bridge(links: &dyn Links, bridge: &str) -> Result<(), NetworkError> {
    delete_link(links, bridge, LinkKind::Bridge)
}

/// Makes sure the bridge of `network` (whose configuration is the file
/// `config`) exists, making it again if it is gone (the host rebooted);
/// returns its name.
pub(super) fn ensure_bridge<'a>(
    links: &dyn Links,
    network: &'a Network,
    config: &Path,
) -> Result<&'a str, NetworkError> {
    let Some(bridge) = network.bridge.as_deref() else {
        return Err(NetworkError::Corrupt {
            path: config.to_owned(),
            detail: "a bridge network names no bridge".to_owned(),
        });
    };
    match links.kind(bridge) {
        Some(LinkKind::Bridge) => Ok(bridge),
        Some(_) => Err(NetworkError::DeviceExists {
            device: bridge.to_owned(),
            hint: "remove it, or this network",
        }),
        None => {
            check_host_routes(links, network.subnet)?;
            add_bridge(links, bridge, network.subnet)?;
            Ok(bridge)
        }
    }
}

/// Makes the tap device of the VM at `ip` and attaches it to `bridge`, up.
/// On error, nothing is left. A device of that name that is not a stale
/// tap of this network (see [`sweep_taps`]) is left alone, and is an
/// error.
pub(super) fn plug_tap(links: &Arc<dyn Links>, bridge: &str, ip: Ipv4Addr) -> Result<Tap, NetworkError> {
    let name = tap_name(ip);
    if links.kind(&name).is_some() {
        return Err(NetworkError::DeviceExists {
            device: name,
            hint: "remove it, or choose another --ip",
        });
    }
    links.ip(&["tuntap", "add", "dev", &name, "mode", "tap"])?;
    let tap = Tap {
        name,
        links: Arc::clone(links),
    };
    // Dropping the tap on error deletes it.
    links.ip(&["link", "set", "dev", &tap.name, "master", bridge, "up"])?;
    Ok(tap)
}

/// Deletes the tap devices of `network` whose VM is gone: those named for
/// an address of its subnet that no live lease (a key of `live`) holds,
/// attached to its bridge or to none. Call with the network locked.
pub(super) fn sweep_taps<T>(
    links: &dyn Links,
    network: &Network,
    live: &BTreeMap<Ipv4Addr, T>,
) -> Result<(), NetworkError> {
    for name in links.names() {
        let Some(ip) = tap_address(&name) else { continue };
        if !network.subnet.contains(ip) || live.contains_key(&ip) {
            continue;
        }
        let master = links.master(&name);
        if master.is_none() || master == network.bridge {
            delete_link(links, &name, LinkKind::Tap)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::links::fake::FakeLinks;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn names_fit_ifnamsiz() {
        assert_eq!(bridge_name("lab"), "vmbr-lab");
        assert_eq!(bridge_name("backend_01"), "vmbr-backend_01");
        for long in ["backend-012", "a.b", &"x".repeat(64)] {
            let name = bridge_name(long);
            assert_eq!(name.len(), MAX_IFNAME, "{name}");
            assert!(name.starts_with(BRIDGE_PREFIX));
            assert!(name[5..].bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
        }
        assert_ne!(bridge_name("backend-012"), bridge_name("backend-013"));
        assert_eq!(bridge_name("a.b"), bridge_name("a.b"));
        assert_eq!(tap_name(ip("10.89.0.2")), "vmtap-0a590002");
        assert_eq!(tap_name(ip("255.255.255.254")).len(), 14);
        assert_eq!(tap_address("vmtap-0a590002"), Some(ip("10.89.0.2")));
        assert_eq!(tap_address("vmtap-0a59"), None);
        assert_eq!(tap_address("vmtap-0a59000g"), None);
        assert_eq!(tap_address("eth0"), None);
    }

    #[test]
    fn a_tap_is_on_its_bridge_until_dropped() {
        let host = FakeLinks::new();
        let links: Arc<dyn Links> = Arc::new(host.clone());
        let subnet: Subnet = "10.77.0.0/24".parse().unwrap();
        add_bridge(&*links, "vmbr-lab", subnet).unwrap();
        let tap = plug_tap(&links, "vmbr-lab", ip("10.77.0.2")).unwrap();
        {
            let state = host.state();
            let link = &state.links["vmtap-0a4d0002"];
            assert_eq!((link.master.as_deref(), link.up), (Some("vmbr-lab"), true));
            assert_eq!(state.links["vmbr-lab"].addresses, ["10.77.0.1/24"]);
        }
        let err = plug_tap(&links, "vmbr-lab", ip("10.77.0.2")).unwrap_err();
        assert!(matches!(&err, NetworkError::DeviceExists { .. }), "{err:?}");
        drop(tap);
        assert_eq!(host.ours(), ["vmbr-lab"]);
        delete_bridge(&*links, "vmbr-lab").unwrap();
        assert_eq!(host.ours(), Vec::<String>::new());
    }
}
