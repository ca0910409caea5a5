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

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::links::{delete_link, LinkKind, Links};
use super::store::Network;
use super::subnet::Subnet;
use super::{NetworkError, Networks};

/// The prefix of every bridge vmshim makes.
pub const BRIDGE_PREFIX: &str = "vmbr-";
/// The prefix of every tap device vmshim makes.
pub const TAP_PREFIX: &str = "vmtap-";
/// The longest interface name (IFNAMSIZ is 16 with the NUL).
pub const MAX_IFNAME: usize = 15;

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

impl Networks {
    /// Refuses work on bridges and taps without CAP_NET_ADMIN, before
    /// anything is done; `what` names the work.
    pub(super) fn check_may_admin(&self, what: impl FnOnce() -> String) -> Result<(), NetworkError> {
        if self.links.may_admin() {
            Ok(())
        } else {
            Err(NetworkError::NeedsNetAdmin { what: what() })
        }
    }

    /// Chooses the bridge of a new network `name` on `subnet`: its name
    /// must be free on the host and among `others`, and the subnet must
    /// overlap none of the host's routes (but its default route), or the
    /// host would lose its way to them.
    pub(super) fn plan_bridge(&self, name: &str, subnet: Subnet, others: &[Network]) -> Result<String, NetworkError> {
        let bridge = bridge_name(name);
        let taken = others.iter().any(|o| o.bridge.as_deref() == Some(bridge.as_str()));
        if taken || self.links.kind(&bridge).is_some() {
            return Err(NetworkError::DeviceExists {
                device: bridge,
                hint: "choose another network name",
            });
        }
        self.check_host_routes(subnet)?;
        Ok(bridge)
    }

    fn check_host_routes(&self, subnet: Subnet) -> Result<(), NetworkError> {
        for route in self.links.routes() {
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
    pub(super) fn add_bridge(&self, bridge: &str, subnet: Subnet) -> Result<(), NetworkError> {
        self.links.ip(&["link", "add", bridge, "type", "bridge"])?;
        let gateway = format!("{}/{}", subnet.gateway(), subnet.prefix_len());
        let configured = self
            .links
            .ip(&["addr", "add", &gateway, "dev", bridge])
            .and_then(|()| self.links.ip(&["link", "set", "dev", bridge, "up"]));
        if let Err(e) = configured {
            let _ = delete_link(&*self.links, bridge, LinkKind::Bridge);
            return Err(e);
        }
        Ok(())
    }

    /// Deletes bridge `bridge` (if it is still there and still a bridge).
    pub(super) fn delete_bridge(&self, bridge: &str) -> Result<(), NetworkError> {
        delete_link(&*self.links, bridge, LinkKind::Bridge)
    }

    /// Makes sure the bridge of `network` exists, making it again if it is
    /// gone (the host rebooted); returns its name.
    pub(super) fn ensure_bridge_locked<'a>(&self, network: &'a Network) -> Result<&'a str, NetworkError> {
        let Some(bridge) = network.bridge.as_deref() else {
            return Err(NetworkError::Corrupt {
                path: self.dir(&network.name).config(),
                detail: "a bridge network names no bridge".to_owned(),
            });
        };
        match self.links.kind(bridge) {
            Some(LinkKind::Bridge) => Ok(bridge),
            Some(_) => Err(NetworkError::DeviceExists {
                device: bridge.to_owned(),
                hint: "remove it, or this network",
            }),
            None => {
                self.check_host_routes(network.subnet)?;
                self.add_bridge(bridge, network.subnet)?;
                Ok(bridge)
            }
        }
    }

    /// Makes the tap device of the VM at `ip` and attaches it to `bridge`,
    /// up. On error, nothing is left. A device of that name that is not a
    /// stale tap of this network (see [`Networks::sweep_taps`]) is left
    /// alone, and is an error.
    pub(super) fn plug_tap(&self, bridge: &str, ip: Ipv4Addr) -> Result<Tap, NetworkError> {
        let name = tap_name(ip);
        if self.links.kind(&name).is_some() {
            return Err(NetworkError::DeviceExists {
                device: name,
                hint: "remove it, or choose another --ip",
            });
        }
        self.links.ip(&["tuntap", "add", "dev", &name, "mode", "tap"])?;
        let tap = Tap {
            name,
            links: Arc::clone(&self.links),
        };
        // Dropping the tap on error deletes it.
        self.links
            .ip(&["link", "set", "dev", &tap.name, "master", bridge, "up"])?;
        Ok(tap)
    }

    /// Deletes the tap devices of `network` whose VM is gone: those named
    /// for an address of its subnet that no live lease holds, attached to
    /// its bridge or to none. Call with the network locked.
    pub(super) fn sweep_taps<T>(&self, network: &Network, live: &BTreeMap<Ipv4Addr, T>) -> Result<(), NetworkError> {
        for name in self.links.names() {
            let Some(ip) = tap_address(&name) else { continue };
            if !network.subnet.contains(ip) || live.contains_key(&ip) {
                continue;
            }
            let master = self.links.master(&name);
            if master.is_none() || master == network.bridge {
                delete_link(&*self.links, &name, LinkKind::Tap)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::links::{self, fake::FakeLinks};
    use crate::network::store::{tests::networks, Driver};
    use crate::network::PortBackend;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// Networks in a fresh state directory on a fake host.
    fn on_fake_host(tag: &str) -> (crate::test_dir::TestDir, Networks, FakeLinks) {
        let (dir, mut networks) = networks(tag);
        let host = FakeLinks::new();
        networks.links = Arc::new(host.clone());
        (dir, networks, host)
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
    fn create_lease_and_remove() {
        let (dir, networks, host) = on_fake_host("br-crud");
        let net = networks.create("lab", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
        assert_eq!((net.driver, net.bridge.as_deref()), (Driver::Bridge, Some("vmbr-lab")));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("networks/lab/network.json")).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "lab", "subnet": "10.77.0.0/24", "driver": "bridge", "bridge": "vmbr-lab"})
        );
        assert_eq!(
            host.state().log,
            [
                "ip link add vmbr-lab type bridge",
                "ip addr add 10.77.0.1/24 dev vmbr-lab",
                "ip link set dev vmbr-lab up"
            ]
        );
        assert!(!dir.path().join("networks/lab/switch.sock").exists(), "no switch");

        let a = networks.lease("lab", "a", None).unwrap();
        assert_eq!(a.ip, ip("10.77.0.2"));
        assert_eq!(
            a.backend,
            PortBackend::Tap {
                ifname: "vmtap-0a4d0002".into()
            }
        );
        let b = networks.lease("lab", "b", None).unwrap();
        {
            let state = host.state();
            let tap = &state.links["vmtap-0a4d0003"];
            assert_eq!((tap.master.as_deref(), tap.up), (Some("vmbr-lab"), true));
        }
        let list = networks.list().unwrap();
        assert_eq!(list[0].driver, Driver::Bridge);
        assert_eq!(list[0].bridge.as_deref(), Some("vmbr-lab"));
        assert!(list[0].switch_running && list[0].members == 2, "{list:?}");

        let err = networks.remove("lab").unwrap_err();
        assert!(matches!(err, NetworkError::InUse { .. }), "{err:?}");
        drop(a);
        assert_eq!(
            host.ours(),
            ["vmbr-lab", "vmtap-0a4d0003"],
            "a's tap went with its lease"
        );
        assert!(!dir.path().join("networks/lab/leases/10.77.0.2").exists());
        drop(b);
        networks.remove("lab").unwrap();
        assert_eq!(host.ours(), Vec::<String>::new());
        assert_eq!(host.state().log.last().unwrap(), "ip link del dev vmbr-lab");
        assert!(!dir.path().join("networks/lab").exists());
    }

    #[test]
    fn failures_leave_nothing() {
        let (dir, networks, host) = on_fake_host("br-fail");
        // The bridge is made, but its address cannot be added.
        host.state().fail = Some("addr add".into());
        let err = networks
            .create("lab", Some("10.77.0.0/24"), Driver::Bridge)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "`ip addr add 10.77.0.1/24 dev vmbr-lab` failed: RTNETLINK answers: Operation not permitted"
        );
        assert_eq!(host.ours(), Vec::<String>::new());
        assert_eq!(host.state().log.last().unwrap(), "ip link del dev vmbr-lab");
        assert_eq!(networks.list().unwrap(), vec![]);
        host.state().fail = None;

        // A tap that cannot join the bridge is deleted, and the address
        // given back.
        networks.create("lab", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
        host.state().fail = Some("link set dev vmtap".into());
        let err = networks.lease("lab", "a", None).unwrap_err();
        assert!(matches!(err, NetworkError::Ip { .. }), "{err:?}");
        assert_eq!(host.ours(), ["vmbr-lab"]);
        assert_eq!(networks.members("lab").unwrap(), vec![]);
        host.state().fail = None;

        // Without CAP_NET_ADMIN: a clear error, and nothing made or lost.
        host.state().may_admin = false;
        let before = host.state().log.len();
        let err = networks.create("other", None, Driver::Bridge).unwrap_err();
        assert!(err.to_string().contains("needs root (CAP_NET_ADMIN"), "{err}");
        let err = networks.lease("lab", "a", None).unwrap_err();
        assert!(err.to_string().contains("needs root (CAP_NET_ADMIN"), "{err}");
        let err = networks.remove("lab").unwrap_err();
        assert!(err.to_string().contains("needs root (CAP_NET_ADMIN"), "{err}");
        assert_eq!(host.state().log.len(), before, "not one command ran");
        assert_eq!(networks.list().unwrap().len(), 1);
        assert!(!dir.path().join("networks/other").exists());
        // A switch network needs no root.
        networks.create("other", None, Driver::Switch).unwrap();
    }

    #[test]
    fn taken_names_and_host_routes_are_refused() {
        let (_dir, networks, host) = on_fake_host("br-refuse");
        host.ip(&["link", "add", "vmbr-lab", "type", "bridge"]).unwrap();
        let err = networks
            .create("lab", Some("10.77.0.0/24"), Driver::Bridge)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "a network device named \"vmbr-lab\" already exists on this host, and is not vmshim's to take; \
             choose another network name"
        );
        let err = networks
            .create("home", Some("192.168.0.0/16"), Driver::Bridge)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "subnet 192.168.0.0/16 overlaps the host's route to 192.168.1.0/24 on eth0; choose another with --subnet"
        );
        networks.create("a", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
        let err = networks.create("b", Some("10.77.0.0/25"), Driver::Bridge).unwrap_err();
        assert!(matches!(err, NetworkError::Overlap { .. }), "{err:?}");
        assert_eq!(
            host.ours(),
            ["vmbr-a", "vmbr-lab"],
            "the device that was there is untouched"
        );
        assert_eq!(networks.list().unwrap().len(), 1);
        // A default subnet steps around the host's routes.
        host.state().routes.push(links::Route {
            destination: ip("10.89.0.0"),
            prefix_len: 23,
            device: "eth1".into(),
        });
        let net = networks.create("c", None, Driver::Bridge).unwrap();
        assert_eq!(net.subnet.to_string(), "10.89.2.0/24");
    }

    #[test]
    fn stale_taps_are_swept_and_a_missing_bridge_remade() {
        let (_dir, networks, host) = on_fake_host("br-stale");
        networks.create("lab", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
        let gone = super::super::process::Owner {
            pid: super::super::process::dead_pid(),
            started: None,
        };
        // As a vmshim killed with SIGKILL leaves them: a lease and its tap.
        std::mem::forget(networks.lease_for("lab", "ghost", None, gone).unwrap());
        // A tap of another network's address, and one on another bridge.
        host.ip(&["tuntap", "add", "dev", "vmtap-0a4e0002", "mode", "tap"])
            .unwrap();
        host.ip(&["link", "add", "vmbr-else", "type", "bridge"]).unwrap();
        host.ip(&["tuntap", "add", "dev", "vmtap-0a4d0009", "mode", "tap"])
            .unwrap();
        host.ip(&["link", "set", "dev", "vmtap-0a4d0009", "master", "vmbr-else", "up"])
            .unwrap();
        // The host rebooted meanwhile: the bridge is gone.
        host.ip(&["link", "del", "dev", "vmbr-lab"]).unwrap();

        let a = networks.lease("lab", "a", None).unwrap();
        assert_eq!(a.ip, ip("10.77.0.2"), "the dead VM's address is free again");
        let err = networks.lease("lab", "b", Some(ip("10.77.0.9"))).unwrap_err();
        assert!(
            matches!(&err, NetworkError::DeviceExists { device, .. } if device == "vmtap-0a4d0009"),
            "another bridge's tap is not taken over: {err:?}"
        );
        assert_eq!(
            host.ours(),
            [
                "vmbr-else",
                "vmbr-lab",
                "vmtap-0a4d0002",
                "vmtap-0a4d0009",
                "vmtap-0a4e0002"
            ]
        );
        let tap = host.state().links["vmtap-0a4d0002"].clone();
        assert_eq!(
            tap.master.as_deref(),
            Some("vmbr-lab"),
            "a new tap on the remade bridge"
        );
        assert_eq!(host.state().links["vmbr-lab"].addresses, ["10.77.0.1/24"]);
        drop(a);
        networks.remove("lab").unwrap();
        assert_eq!(host.ours(), ["vmbr-else", "vmtap-0a4d0009", "vmtap-0a4e0002"]);
    }

    #[test]
    fn a_half_made_network_is_swept_with_its_bridge() {
        let (dir, networks, host) = on_fake_host("br-half");
        networks.create("live", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
        // Two creates that died between making the bridge and renaming the
        // directory into place; the second bridge's name was reused since.
        let root = dir.path().join("networks");
        let dead = super::super::process::dead_pid();
        for (n, bridge) in ["vmbr-half", "vmbr-live"].into_iter().enumerate() {
            let tmp = root.join(format!(".tmp-{dead}-{n}"));
            std::fs::create_dir_all(tmp.join("leases")).unwrap();
            let json = serde_json::json!({
                "name": bridge.trim_start_matches("vmbr-"),
                "subnet": "10.78.0.0/24",
                "driver": "bridge",
                "bridge": bridge,
            });
            std::fs::write(tmp.join("network.json"), json.to_string()).unwrap();
        }
        host.ip(&["link", "add", "vmbr-half", "type", "bridge"]).unwrap();
        networks.create("next", None, Driver::Switch).unwrap();
        assert_eq!(host.ours(), ["vmbr-live"]);
        let hidden: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(hidden.is_empty(), "{hidden:?}");
    }

    #[test]
    fn a_switch_network_has_no_bridge_and_a_bridge_network_no_switch() {
        let (_dir, networks, host) = on_fake_host("br-kinds");
        networks.create("sw", None, Driver::Switch).unwrap();
        networks.create("br", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
        assert_eq!(host.ours(), ["vmbr-br"]);
        let err = networks.ensure_switch("br").unwrap_err();
        assert_eq!(
            err.to_string(),
            "network \"br\" uses the bridge driver, which has no switch daemon"
        );
        let lease = networks.lease("sw", "a", None).unwrap();
        assert!(matches!(lease.backend, PortBackend::Switch { .. }), "{lease:?}");
    }
}
