//! The guest's network as the host configures it: interfaces over rtnetlink
//! (`netlink`), the host name, and the `/etc/hosts` and `/etc/resolv.conf`
//! of the processes' root filesystem.
//!
//! Settings come from the kernel command line at boot (`vminitd.ip=`,
//! `vminitd.hostname=`, `vminitd.dns=`) and later from the
//! `configure_network` op; both arrive as one [`NetworkConfig`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use agent_proto::{DnsConfig, HostEntry, InterfaceConfig, NetworkConfig, GUEST_ROOTFS};
use tokio::sync::watch;

use super::config::Mode;
use super::dns_relay::RelayError;
use crate::process::{self, RootfsStatus};
use crate::sys::cidr::parse_cidr;
use crate::sys::netlink::files::{hosts_file, resolv_conf};
use crate::sys::netlink::interface::{self, configure};
use crate::sys::netlink::{Netlink, NetlinkError, Route};

/// Why the network could not be configured as asked.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The kernel refused a change to an interface, an address or a route.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// An address that does not parse.
    #[error("bad address {value:?} for {what}: expected {expected}")]
    BadAddress {
        /// As given.
        value: String,
        /// Whose address it is.
        what: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A host name the kernel would not take.
    #[error("bad host name {name:?}: expected letters, digits, '-' and '.', at most 64 bytes")]
    BadHostname {
        /// As given.
        name: String,
    },
    /// `sethostname` failed.
    #[error("cannot set the host name to {name:?}: {source}")]
    SetHostname {
        /// The name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// `/etc/hosts`, `/etc/resolv.conf` or `/etc/hostname` could not be
    /// written.
    #[error("cannot write {}: {source}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An interface named by a MAC address no interface has.
    #[error("no interface has the MAC address {mac}")]
    NoSuchMac {
        /// As given.
        mac: String,
    },
    /// The agent does not own what it was asked to change: why.
    #[error("{0}")]
    NotOwned(&'static str),
    /// A name server address to relay could not be listened on.
    #[error("cannot relay DNS on {address}:53: {source}")]
    Relay {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
}

/// `lo`, then in a machine the interfaces and host name of the kernel
/// command line. A namespace that shares the host's network gets nothing
/// changed (`lo` is already up there).
pub fn bring_up(mode: Mode, settings: &NetworkConfig) {
    if !mode.is_pid1() {
        return;
    }
    match loopback_up() {
        Ok(()) => debug!("lo is up"),
        Err(e) if mode == Mode::Machine => warn!("{e}"),
        Err(e) => debug!("{e} (no network namespace of our own)"),
    }
    if mode != Mode::Machine {
        return;
    }
    if let Err(e) = configure_interfaces(&settings.interfaces) {
        warn!("{e}");
    }
    if let Some(name) = &settings.hostname {
        if let Err(e) = set_hostname(name) {
            warn!("{e}");
        }
    }
    NETWORK_UP_NS.store(
        crate::sys::timeline::boottime_ns(),
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// When [`bring_up`] ended (`CLOCK_BOOTTIME` ns), once it has.
static NETWORK_UP_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// When the boot's network came up, if it has.
pub fn network_up_ns() -> Option<u64> {
    Some(NETWORK_UP_NS.load(std::sync::atomic::Ordering::Relaxed)).filter(|&ns| ns != 0)
}

/// Brings `lo` up where it is not.
pub fn loopback_up() -> Result<(), NetworkError> {
    let mut nl = Netlink::open()?;
    Ok(interface::loopback_up(&mut nl)?)
}

/// Brings each interface to its settings: MTU and up, addresses, default
/// routes, then its other routes in order.
pub fn configure_interfaces(interfaces: &[InterfaceConfig]) -> Result<(), NetworkError> {
    if interfaces.is_empty() {
        return Ok(());
    }
    let mut plans = interfaces.iter().map(plan).collect::<Result<Vec<_>, _>>()?;
    let mut nl = Netlink::open()?;
    for Plan { interface, routes } in &mut plans {
        // An interface may be named by its MAC address: the host knows the
        // MACs it gave, not the order the guest kernel probed the devices.
        if let Some(mac) = parse_mac(&interface.name) {
            let link = nl.links()?.into_iter().find(|l| l.mac == Some(mac));
            interface.name = link.map(|l| l.name).ok_or_else(|| NetworkError::NoSuchMac {
                mac: interface.name.clone(),
            })?;
        }
        configure(&mut nl, interface)?;
        let index = nl.link_index(&interface.name)?;
        for route in routes {
            route.device = Some(index);
            match nl.add_route(route) {
                // Already there: a second call is a no-op, as configure's.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                done => done?,
            }
        }
    }
    Ok(())
}

/// One interface's settings as netlink takes them, and its routes.
#[derive(Debug)]
struct Plan {
    interface: interface::InterfaceConfig,
    routes: Vec<Route>,
}

/// `aa:bb:cc:dd:ee:ff`.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in mac.iter_mut() {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The protocol's interface settings, checked, as netlink takes them.
fn plan(iface: &InterfaceConfig) -> Result<Plan, NetworkError> {
    let mut addresses = Vec::new();
    for value in &iface.addresses {
        addresses.push(parse_cidr(value).ok_or_else(|| NetworkError::BadAddress {
            value: value.clone(),
            what: iface.name.clone(),
            expected: "ADDRESS/PREFIX (IPv4 prefix up to 32, IPv6 up to 128)",
        })?);
    }
    let (mut gateway4, mut gateway6) = (None, None);
    for value in &iface.gateways {
        match value.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => gateway4 = Some(a),
            Ok(IpAddr::V6(a)) => gateway6 = Some(a),
            Err(_) => {
                return Err(NetworkError::BadAddress {
                    value: value.clone(),
                    what: format!("the gateway of {}", iface.name),
                    expected: "an IPv4 or IPv6 address",
                })
            }
        }
    }
    let mut routes = Vec::new();
    for route in &iface.routes {
        let what = || format!("a route of {}", iface.name);
        let destination = parse_cidr(&route.destination).ok_or_else(|| NetworkError::BadAddress {
            value: route.destination.clone(),
            what: what(),
            expected: "ADDRESS/PREFIX (IPv4 prefix up to 32, IPv6 up to 128)",
        })?;
        let gateway = match &route.gateway {
            Some(g) => Some(
                g.parse::<IpAddr>()
                    .ok()
                    .filter(|g| g.is_ipv4() == destination.0.is_ipv4())
                    .ok_or_else(|| NetworkError::BadAddress {
                        value: g.clone(),
                        what: format!("the gateway of {}", what()),
                        expected: "an address of the destination's family",
                    })?,
            ),
            None => None,
        };
        routes.push(Route {
            destination: Some(destination),
            gateway,
            device: None,
        });
    }
    Ok(Plan {
        interface: interface::InterfaceConfig {
            name: iface.name.clone(),
            mtu: iface.mtu,
            addresses,
            gateway4,
            gateway6,
        },
        routes,
    })
}

/// Sets the kernel's host name.
pub fn set_hostname(name: &str) -> Result<(), NetworkError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(NetworkError::BadHostname { name: name.to_owned() });
    }
    // SAFETY: a valid pointer and its length.
    if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } != 0 {
        let source = std::io::Error::last_os_error();
        return Err(NetworkError::SetHostname {
            name: name.to_owned(),
            source,
        });
    }
    Ok(())
}

/// What `/etc/hosts` and `/etc/resolv.conf` are rendered from; updated part
/// by part.
#[derive(Debug, Clone, Default)]
pub struct NetworkFiles {
    pub hostname: Option<String>,
    pub hosts: Vec<HostEntry>,
    pub dns: Option<DnsConfig>,
}

impl NetworkFiles {
    /// Takes the parts of `config` that are present. Returns whether any
    /// file has to be rewritten.
    pub fn update(&mut self, config: &NetworkConfig) -> Result<bool, NetworkError> {
        let mut changed = false;
        if let Some(hostname) = &config.hostname {
            self.hostname = Some(hostname.clone());
            changed = true;
        }
        if let Some(hosts) = &config.hosts {
            for entry in hosts {
                entry.address.parse::<IpAddr>().map_err(|_| NetworkError::BadAddress {
                    value: entry.address.clone(),
                    what: format!("the hosts entry of {}", entry.names.join(" ")),
                    expected: "an IPv4 or IPv6 address",
                })?;
            }
            self.hosts = hosts.clone();
            changed = true;
        }
        if let Some(dns) = &config.dns {
            for ns in &dns.nameservers {
                ns.parse::<IpAddr>().map_err(|_| NetworkError::BadAddress {
                    value: ns.clone(),
                    what: "a name server".into(),
                    expected: "an IPv4 or IPv6 address",
                })?;
            }
            self.dns = Some(dns.clone());
            changed = true;
        }
        Ok(changed)
    }

    /// Writes `etc/hosts` (and `etc/resolv.conf` when DNS is set) under
    /// `root`, each replaced atomically.
    pub fn write(&self, root: &Path) -> Result<(), NetworkError> {
        let entries: Vec<(IpAddr, Vec<String>)> = self
            .hosts
            .iter()
            .filter_map(|e| Some((e.address.parse().ok()?, e.names.clone())))
            .collect();
        let hostname = self.hostname.as_deref().unwrap_or("localhost");
        write_atomic(&root.join("etc/hosts"), &hosts_file(hostname, &entries))?;
        if let Some(dns) = &self.dns {
            let servers: Vec<IpAddr> = dns.nameservers.iter().filter_map(|s| s.parse().ok()).collect();
            write_atomic(
                &root.join("etc/resolv.conf"),
                &resolv_conf(&servers, &dns.search, &dns.options),
            )?;
        }
        if let Some(hostname) = &self.hostname {
            write_atomic(&root.join("etc/hostname"), &format!("{hostname}\n"))?;
        }
        Ok(())
    }
}

fn write_atomic(path: &Path, contents: &str) -> Result<(), NetworkError> {
    let err = |source| NetworkError::WriteFile {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("vminitd-tmp");
    std::fs::write(&tmp, contents).map_err(err)?;
    // A resolv.conf or hosts that is a symbolic link (to a systemd stub, say)
    // is replaced, not followed.
    std::fs::rename(&tmp, path).map_err(err)
}

/// `Op::ConfigureNetwork`: interfaces and host name at once, then the files
/// in the root filesystem (once it is mounted). Only the init of a VM owns
/// the network: in a namespace on a host this would change the host's.
pub async fn apply(
    mode: Mode,
    rootfs: &watch::Receiver<RootfsStatus>,
    files: &Mutex<NetworkFiles>,
    config: &NetworkConfig,
) -> Result<(), NetworkError> {
    if mode != Mode::Machine {
        return Err(NetworkError::NotOwned(
            "only the init of a VM configures the network (this agent runs in a namespace or as a process)",
        ));
    }
    // The boot's own settings come first: they are brought up on the root
    // filesystem's thread, before its status settles.
    if *rootfs.borrow() != RootfsStatus::Unused {
        let _ = process::wait_ready(rootfs).await;
    }
    configure_interfaces(&config.interfaces)?;
    if let Some(relay) = &config.dns_relay {
        super::dns_relay::start(relay).map_err(|e| match e {
            RelayError::NotLoopback(value) => NetworkError::BadAddress {
                value,
                what: "dns_relay".into(),
                expected: "an IPv4 or IPv6 loopback address",
            },
            RelayError::Bind { address, source } => NetworkError::Relay { address, source },
        })?;
    }
    if let Some(name) = &config.hostname {
        set_hostname(name)?;
    }
    let writes_files = config.hostname.is_some() || config.hosts.is_some() || config.dns.is_some();
    if !writes_files {
        return Ok(());
    }
    if *rootfs.borrow() == RootfsStatus::Unused {
        return Err(NetworkError::NotOwned(
            "no root filesystem (vminitd.rootfs=) to write /etc/hosts and /etc/resolv.conf into",
        ));
    }
    process::wait_ready(rootfs)
        .await
        .map_err(|_| NetworkError::NotOwned("the root filesystem could not be mounted"))?;
    // Updated and written under one lock: concurrent updates land in order.
    let mut files = lock(files);
    files.update(config)?;
    files.write(Path::new(GUEST_ROOTFS))
}

fn lock(m: &Mutex<NetworkFiles>) -> std::sync::MutexGuard<'_, NetworkFiles> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:56:4d:0a:59:02"), Some([2, 0x56, 0x4d, 0x0a, 0x59, 2]));
        assert_eq!(parse_mac("eth0"), None);
        assert_eq!(parse_mac("02:56:4d:0a:59"), None);
        assert_eq!(parse_mac("02:56:4d:0a:59:02:01"), None);
    }

    #[test]
    fn interface_plans_name_the_bad_value() {
        let iface = InterfaceConfig {
            name: "eth1".into(),
            addresses: vec!["10.1.1.1/40".into()],
            ..Default::default()
        };
        let e = plan(&iface).unwrap_err();
        assert!(
            e.to_string().contains("10.1.1.1/40") && e.to_string().contains("eth1"),
            "{e}"
        );
        assert!(matches!(e, NetworkError::BadAddress { .. }), "{e}");
        let iface = InterfaceConfig {
            name: "eth0".into(),
            gateways: vec!["10.0.2.2".into(), "fe80::1".into()],
            ..Default::default()
        };
        let p = plan(&iface).unwrap().interface;
        assert_eq!(p.gateway4, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(p.gateway6, Some("fe80::1".parse().unwrap()));
    }

    #[test]
    fn routes_are_planned_and_bad_ones_named() {
        let route = |destination: &str, gateway: Option<&str>| agent_proto::RouteConfig {
            destination: destination.into(),
            gateway: gateway.map(Into::into),
        };
        let iface = InterfaceConfig {
            name: "eth0".into(),
            routes: vec![route("10.0.0.1/32", None), route("172.16.0.0/12", Some("10.0.0.1"))],
            ..Default::default()
        };
        let p = plan(&iface).unwrap();
        assert_eq!(
            p.routes,
            [
                Route {
                    destination: Some(("10.0.0.1".parse().unwrap(), 32)),
                    gateway: None,
                    device: None
                },
                Route {
                    destination: Some(("172.16.0.0".parse().unwrap(), 12)),
                    gateway: Some("10.0.0.1".parse().unwrap()),
                    device: None
                },
            ]
        );
        for (bad, value) in [
            (route("10.0.0.0/33", None), "10.0.0.0/33"),
            (route("10.0.0.0/8", Some("fd00::1")), "fd00::1"),
            (route("10.0.0.0/8", Some("gw")), "gw"),
        ] {
            let iface = InterfaceConfig {
                name: "eth0".into(),
                routes: vec![bad],
                ..Default::default()
            };
            let e = plan(&iface).err().unwrap().to_string();
            assert!(e.contains(value) && e.contains("a route of eth0"), "{e}");
        }
    }

    #[test]
    fn files_are_rendered_and_updated_part_by_part() {
        let root = std::env::temp_dir().join(format!("vminitd-netfiles-{}", std::process::id()));
        let mut files = NetworkFiles::default();
        let config = NetworkConfig {
            hostname: Some("web".into()),
            hosts: Some(vec![HostEntry {
                address: "10.89.0.3".into(),
                names: vec!["db".into()],
            }]),
            dns: Some(DnsConfig {
                nameservers: vec!["10.0.2.3".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(files.update(&config).unwrap());
        files.write(&root).unwrap();
        let hosts = std::fs::read_to_string(root.join("etc/hosts")).unwrap();
        assert!(hosts.contains("10.89.0.3\tdb") && hosts.contains("web"), "{hosts}");
        assert_eq!(
            std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
            "nameserver 10.0.2.3\n"
        );
        // A hosts-only update keeps the host name.
        let update = NetworkConfig {
            hosts: Some(vec![]),
            ..Default::default()
        };
        files.update(&update).unwrap();
        files.write(&root).unwrap();
        let hosts = std::fs::read_to_string(root.join("etc/hosts")).unwrap();
        assert!(!hosts.contains("db") && hosts.contains("web"), "{hosts}");
        let bad = NetworkConfig {
            dns: Some(DnsConfig {
                nameservers: vec!["nope".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(matches!(files.update(&bad), Err(NetworkError::BadAddress { .. })));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
