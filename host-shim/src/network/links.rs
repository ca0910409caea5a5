//! The host's network devices, as the bridge driver sees them: the seam
//! between its logic and the kernel. [`IpCommand`] changes devices with the
//! `ip` command of iproute2 and reads them from `/sys/class/net` and
//! `/proc/net/route`; tests use a fake host that records the commands.
//!
//! Only devices named [`BRIDGE_PREFIX`]`*` (bridges) and [`TAP_PREFIX`]`*`
//! (taps) are ever changed or deleted, and only when they are of that
//! kind: a guard in [`delete_link`] refuses anything else.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use super::error::NetworkError;

/// The prefix of every bridge vmshim makes.
pub const BRIDGE_PREFIX: &str = "vmbr-";
/// The prefix of every tap device vmshim makes.
pub const TAP_PREFIX: &str = "vmtap-";
/// The longest interface name (IFNAMSIZ is 16 with the NUL).
pub const MAX_IFNAME: usize = 15;

/// What kind of device a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// A Linux bridge.
    Bridge,
    /// A tap device.
    Tap,
    /// Anything else: an interface vmshim never touches.
    Other,
}

/// An IPv4 route of the host's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The first address of the range it routes.
    pub destination: Ipv4Addr,
    /// The range's prefix length (0 for the default route).
    pub prefix_len: u8,
    /// The device it goes through.
    pub device: String,
}

/// The host's network devices.
pub trait Links: fmt::Debug + Send + Sync {
    /// Whether this process may add and delete devices (CAP_NET_ADMIN).
    fn may_admin(&self) -> bool;
    /// The kind of device `name`, or `None` if there is none.
    fn kind(&self, name: &str) -> Option<LinkKind>;
    /// The bridge device `name` is attached to.
    fn master(&self, name: &str) -> Option<String>;
    /// The names of every device.
    fn names(&self) -> Vec<String>;
    /// The IPv4 routes of the main table.
    fn routes(&self) -> Vec<Route>;
    /// Runs `ip ARGS`; an error quotes what `ip` said.
    fn ip(&self, args: &[&str]) -> Result<(), NetworkError>;
}

/// The real host, changed with `ip`.
#[derive(Debug, Default)]
pub struct IpCommand;

impl Links for IpCommand {
    fn may_admin(&self) -> bool {
        const CAP_NET_ADMIN: u32 = 12;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        match status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        {
            Some(caps) => caps & (1 << CAP_NET_ADMIN) != 0,
            // SAFETY: geteuid has no preconditions.
            None => (unsafe { libc::geteuid() }) == 0,
        }
    }

    fn kind(&self, name: &str) -> Option<LinkKind> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return None;
        }
        let dir = Path::new("/sys/class/net").join(name);
        if !dir.exists() {
            None
        } else if dir.join("bridge").is_dir() {
            Some(LinkKind::Bridge)
        } else if dir.join("tun_flags").exists() {
            Some(LinkKind::Tap)
        } else {
            Some(LinkKind::Other)
        }
    }

    fn master(&self, name: &str) -> Option<String> {
        // kind() checks that the name is one device's, not a path.
        self.kind(name)?;
        let target = std::fs::read_link(Path::new("/sys/class/net").join(name).join("master")).ok()?;
        target.file_name()?.to_str().map(str::to_owned)
    }

    fn names(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    fn routes(&self) -> Vec<Route> {
        parse_routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
    }

    fn ip(&self, args: &[&str]) -> Result<(), NetworkError> {
        let fail = |detail: String| NetworkError::Ip {
            command: args.join(" "),
            detail,
        };
        let out = Command::new("ip")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| fail(format!("cannot run ip (iproute2): {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(fail(if stderr.is_empty() {
            format!("it exited with {}", out.status)
        } else {
            stderr
        }))
    }
}

/// `/proc/net/route`: a header, then one route a line, with the
/// destination and mask as the hex of a native-endian `u32`.
fn parse_routes(table: &str) -> Vec<Route> {
    let addr = |hex: &str| {
        u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (device, destination, mask) = (f.first()?, addr(f.get(1)?)?, addr(f.get(7)?)?);
            Some(Route {
                destination,
                prefix_len: u32::from(mask).count_ones() as u8,
                device: (*device).to_owned(),
            })
        })
        .collect()
}

/// Deletes bridge or tap `name`, which must be a device of that kind with
/// vmshim's prefix; a device already gone is no error.
pub fn delete_link(links: &dyn Links, name: &str, kind: LinkKind) -> Result<(), NetworkError> {
    let prefix = match kind {
        LinkKind::Bridge => BRIDGE_PREFIX,
        LinkKind::Tap => TAP_PREFIX,
        LinkKind::Other => return Ok(()),
    };
    if !name.starts_with(prefix) || links.kind(name) != Some(kind) {
        return Ok(());
    }
    let result = match kind {
        LinkKind::Tap => links.ip(&["tuntap", "del", "dev", name, "mode", "tap"]),
        _ => links.ip(&["link", "del", "dev", name]),
    };
    match result {
        // Deleted meanwhile by someone else.
        Err(_) if links.kind(name).is_none() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A host in memory that runs the `ip` commands the bridge driver
    //! issues, records them, and fails the ones it is told to.

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, Default)]
    pub struct State {
        /// Device → (kind, master, up, addresses).
        pub links: BTreeMap<String, Link>,
        pub routes: Vec<Route>,
        /// Every command run, as `ip ARGS`.
        pub log: Vec<String>,
        /// Commands starting with this fail.
        pub fail: Option<String>,
        pub may_admin: bool,
    }

    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    pub struct Link {
        pub kind: Option<LinkKind>,
        pub master: Option<String>,
        pub up: bool,
        pub addresses: Vec<String>,
    }

    #[derive(Debug, Clone)]
    pub struct FakeLinks(pub Arc<Mutex<State>>);

    impl FakeLinks {
        /// A host with eth0 on 192.168.1.0/24, and the right to change it.
        pub fn new() -> FakeLinks {
            let mut state = State {
                may_admin: true,
                ..State::default()
            };
            state.links.insert(
                "eth0".into(),
                Link {
                    kind: Some(LinkKind::Other),
                    up: true,
                    ..Link::default()
                },
            );
            state.routes.push(Route {
                destination: Ipv4Addr::new(192, 168, 1, 0),
                prefix_len: 24,
                device: "eth0".into(),
            });
            FakeLinks(Arc::new(Mutex::new(state)))
        }

        pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.0.lock().unwrap()
        }

        /// The names of the devices vmshim may have made.
        pub fn ours(&self) -> Vec<String> {
            let state = self.state();
            let names = state.links.keys();
            names.filter(|n| n.starts_with("vm")).cloned().collect()
        }
    }

    impl Links for FakeLinks {
        fn may_admin(&self) -> bool {
            self.state().may_admin
        }

        fn kind(&self, name: &str) -> Option<LinkKind> {
            self.state().links.get(name).and_then(|l| l.kind)
        }

        fn master(&self, name: &str) -> Option<String> {
            self.state().links.get(name).and_then(|l| l.master.clone())
        }

        fn names(&self) -> Vec<String> {
            self.state().links.keys().cloned().collect()
        }

        fn routes(&self) -> Vec<Route> {
            self.state().routes.clone()
        }

        fn ip(&self, args: &[&str]) -> Result<(), NetworkError> {
            let mut state = self.state();
            let command = args.join(" ");
            state.log.push(format!("ip {command}"));
            let fail = |detail: &str| NetworkError::Ip {
                command: command.clone(),
                detail: detail.to_owned(),
            };
            if state.fail.as_ref().is_some_and(|f| command.starts_with(f.as_str())) {
                return Err(fail("RTNETLINK answers: Operation not permitted"));
            }
            let exists = |state: &State, name: &str| state.links.contains_key(name);
            match args {
                ["link", "add", name, "type", "bridge"] | ["tuntap", "add", "dev", name, "mode", "tap"] => {
                    if exists(&state, name) {
                        return Err(fail("RTNETLINK answers: File exists"));
                    }
                    let kind = if args[0] == "link" {
                        LinkKind::Bridge
                    } else {
                        LinkKind::Tap
                    };
                    state.links.insert(
                        (*name).to_owned(),
                        Link {
                            kind: Some(kind),
                            ..Link::default()
                        },
                    );
                }
                ["addr", "add", cidr, "dev", name] => {
                    let link = state.links.get_mut(*name).ok_or_else(|| fail("Cannot find device"))?;
                    link.addresses.push((*cidr).to_owned());
                }
                ["link", "set", "dev", name, "up"] => {
                    state.links.get_mut(*name).ok_or_else(|| fail("Cannot find device"))?.up = true;
                }
                ["link", "set", "dev", name, "master", master, "up"] => {
                    if !exists(&state, master) {
                        return Err(fail("Cannot find device"));
                    }
                    let link = state.links.get_mut(*name).ok_or_else(|| fail("Cannot find device"))?;
                    link.master = Some((*master).to_owned());
                    link.up = true;
                }
                ["link", "del", "dev", name] | ["tuntap", "del", "dev", name, "mode", "tap"] => {
                    state.links.remove(*name).ok_or_else(|| fail("Cannot find device"))?;
                    // A deleted bridge lets go of its ports.
                    for link in state.links.values_mut() {
                        if link.master.as_deref() == Some(*name) {
                            link.master = None;
                        }
                    }
                }
                _ => panic!("the fake host does not know `ip {command}`"),
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeLinks;
    use super::*;

    #[test]
    fn routes_from_proc() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     vmbr-lab\t0000C70A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_routes(table);
        if cfg!(target_endian = "little") {
            assert_eq!(
                routes,
                [
                    Route {
                        destination: Ipv4Addr::UNSPECIFIED,
                        prefix_len: 0,
                        device: "eth0".into()
                    },
                    Route {
                        destination: Ipv4Addr::new(10, 199, 0, 0),
                        prefix_len: 24,
                        device: "vmbr-lab".into()
                    },
                ]
            );
        }
        assert!(parse_routes("").is_empty());
    }

    #[test]
    fn only_our_devices_of_the_right_kind_are_deleted() {
        let host = FakeLinks::new();
        host.ip(&["link", "add", "vmbr-a", "type", "bridge"]).unwrap();
        host.ip(&["tuntap", "add", "dev", "vmtap-0a000002", "mode", "tap"])
            .unwrap();
        host.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
        // Not ours by name, or not of the kind asked for: left alone.
        delete_link(&host, "eth0", LinkKind::Bridge).unwrap();
        delete_link(&host, "br0", LinkKind::Bridge).unwrap();
        delete_link(&host, "vmbr-a", LinkKind::Tap).unwrap();
        delete_link(&host, "vmtap-0a000002", LinkKind::Bridge).unwrap();
        delete_link(&host, "vmbr-gone", LinkKind::Bridge).unwrap();
        assert_eq!(host.state().links.len(), 4);
        delete_link(&host, "vmtap-0a000002", LinkKind::Tap).unwrap();
        delete_link(&host, "vmbr-a", LinkKind::Bridge).unwrap();
        assert_eq!(host.names(), ["br0", "eth0"]);
        assert_eq!(
            host.state().log[3..],
            ["ip tuntap del dev vmtap-0a000002 mode tap", "ip link del dev vmbr-a"]
        );
    }

    #[test]
    fn the_real_host_is_read_without_root() {
        let host = IpCommand;
        assert_eq!(host.kind("lo"), Some(LinkKind::Other));
        assert_eq!(host.kind("vmbr-no-such"), None);
        assert_eq!(host.kind("../lo"), None);
        assert!(host.names().iter().any(|n| n == "lo"));
        let err = host.ip(&["link", "show", "dev", "vmbr-no-such"]).unwrap_err();
        let text = err.to_string();
        // What `ip` says, or that there is no `ip` to run.
        assert!(
            text.contains("`ip link show dev vmbr-no-such` failed: ")
                && (text.contains("does not exist") || text.contains("cannot run ip (iproute2)")),
            "{text}"
        );
    }
}
