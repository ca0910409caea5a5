//! Virtual networks that join VMs to each other, with one of two drivers.
//!
//! **switch** (the default; no root needed): the network is a small
//! Ethernet switch on a Unix socket; a VM joins it through QEMU's `stream`
//! netdev, which carries every Ethernet frame as a 4-byte big-endian length
//! followed by the frame. Each VM's port is bound to the MAC and IPv4
//! address it leased: frames from any other source are dropped
//! ([`switch`]):
//!
//! ```text
//! -netdev stream,id=switch,server=off,addr.type=unix,addr.path=SWITCH_SOCKET
//! -device virtio-net-device,netdev=switch,mac=02:56:4d:..
//! ```
//!
//! No multicast, no TAP device, no root: traffic never leaves the switch.
//!
//! **bridge** (root, or CAP_NET_ADMIN): the network is a Linux bridge
//! holding the subnet's gateway address, so the host reaches the VMs at
//! their addresses; each VM joins it through a tap device of its own
//! ([`mod@bridge`]):
//!
//! ```text
//! -netdev tap,id=switch,ifname=vmtap-0a590002,script=no,downscript=no
//! -device virtio-net-device,netdev=switch,mac=02:56:4d:..
//! ```
//!
//! State lives in `$VMSHIM_STATE_DIR/networks/NAME/` (the state directory is
//! `${XDG_STATE_HOME:-$HOME/.local/state}/vmshim` by default):
//!
//! | file | what |
//! |---|---|
//! | `network.json` | `{"name": .., "subnet": "10.89.0.0/24", "driver": "switch"}`, and `"bridge": "vmbr-.."` for a bridge network (a file without `driver` is a switch network) |
//! | `lock` | `flock`ed by whoever changes leases, starts the switch or makes taps |
//! | `switch.sock`, `switch.pid`, `switch.log` | the switch daemon (its log rotated to `switch.log.1`, see [`crate::private::log`]) |
//! | `leases/<ip>` | `{"name": .., "pid": .., "started": .., "mac": ..}`: one VM each |
//!
//! The state directory, `networks/` and every directory in it are 0700, and
//! every file (the socket too) 0600, whatever the umask; a state directory
//! that is a link, another user's, or that others may write to is refused
//! ([`crate::private`]).
//!
//! `$STATE/networks.lock` serialises creating and removing networks, so two
//! networks never get overlapping subnets.
//!
//! * [`create`], [`list`], [`remove`]: networks ([`store`]).
//! * [`lease()`], [`members`]: addresses for VMs, and who is on a network ([`mod@lease`]).
//! * [`ensure_switch`]: the switch daemon, started when missing ([`daemon`]).
//! * [`serve_switch`]: the switch itself ([`switch`]), each port bound to
//!   its VM's lease ([`binding`]).
//! * bridges and taps ([`mod@bridge`]), made with `ip` ([`links`]).
//!
//! The free functions use the default state directory; [`Networks::at`]
//! picks another (tests, host runtimes with their own state).
//!
//! QEMU 7.2's stream netdev does not reconnect: a VM keeps its network only
//! while the switch that was running when it booted keeps running. That is
//! why [`remove`] refuses a network with VMs on it, and why the switch runs
//! as a daemon of its own rather than inside any one vmshim.

pub mod binding;
pub mod bridge;
pub mod daemon;
pub mod hosts;
pub mod lease;
pub mod links;
pub mod process;
pub mod store;
pub mod subnet;
pub mod switch;

use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use hosts::HostsFile;
pub use lease::{Lease, Member, PortBackend};
pub use store::{Driver, Network, NetworkInfo, Networks};
pub use subnet::Subnet;
pub use switch::serve_switch;

/// What a network or VM name may be.
pub const NAME_RULE: &str = "names are 1 to 64 letters, digits, '_', '.' or '-', and start with a letter or digit";

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("no network {name:?} (see vmshim network ls)")]
    UnknownNetwork { name: String },
    #[error("a network named {name:?} already exists")]
    Exists { name: String },
    #[error("invalid {what} name {name:?}: {NAME_RULE}")]
    BadName { what: &'static str, name: String },
    #[error("{why}")]
    BadSubnet { value: String, why: String },
    #[error("subnet {subnet} overlaps {other_subnet} of network {other:?}")]
    Overlap {
        subnet: Subnet,
        other: String,
        other_subnet: Subnet,
    },
    #[error("subnet {subnet} overlaps {range}, {why}")]
    Reserved {
        subnet: Subnet,
        range: Subnet,
        why: &'static str,
    },
    #[error("every subnet from 10.89.0.0/24 to 10.89.255.0/24 is taken; choose one with --subnet")]
    NoFreeSubnet,
    #[error("{ip} on network {network:?} is already leased by {by:?}")]
    AddressTaken { network: String, ip: Ipv4Addr, by: String },
    #[error("{ip} is outside network {network:?} ({subnet})")]
    AddressOutside {
        network: String,
        ip: Ipv4Addr,
        subnet: Subnet,
    },
    #[error("{ip} cannot be leased on network {network:?}: it is the {role} address of {subnet}")]
    AddressReserved {
        network: String,
        ip: Ipv4Addr,
        subnet: Subnet,
        role: &'static str,
    },
    #[error("network {name:?} ({subnet}) has no free address left")]
    Exhausted { name: String, subnet: Subnet },
    #[error("network {name:?} is in use by {}; stop them first", describe_members(.members))]
    InUse { name: String, members: Vec<Member> },
    #[error("the name {name:?} is already used on network {network:?} (by {ip})")]
    NameTaken {
        network: String,
        name: String,
        ip: Ipv4Addr,
    },
    #[error(
        "the switch socket {} would be {len} bytes long, over the 107 a Unix socket address holds; \
         use a shorter network name or a shorter VMSHIM_STATE_DIR", path.display()
    )]
    SocketPathTooLong { path: PathBuf, len: usize },
    #[error("{} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("no state directory: set VMSHIM_STATE_DIR, XDG_STATE_HOME or HOME")]
    NoStateDir,
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the switch of network {name:?}: {detail}")]
    SwitchStart { name: String, detail: String },
    #[error("network {name:?} uses the bridge driver, which has no switch daemon")]
    NoSwitch { name: String },
    #[error(
        "{what} needs root (CAP_NET_ADMIN, to add and delete network devices); \
         run vmshim as root, or use a network of the switch driver"
    )]
    NeedsNetAdmin { what: String },
    #[error("a network device named {device:?} already exists on this host, and is not vmshim's to take; {hint}")]
    DeviceExists { device: String, hint: &'static str },
    #[error("subnet {subnet} overlaps the host's route to {route} on {device}; choose another with --subnet")]
    HostRoute {
        subnet: Subnet,
        route: String,
        device: String,
    },
    #[error("`ip {command}` failed: {detail}")]
    Ip { command: String, detail: String },
    /// A state directory or file that could not be made private, or that
    /// is not safe to use.
    #[error(transparent)]
    Private(#[from] crate::private::PrivateError),
}

/// "a (10.89.0.2), b (10.89.0.3)"; "1 VM"/"N VMs" first.
fn describe_members(members: &[Member]) -> String {
    let list: Vec<String> = members.iter().map(|m| format!("{} ({})", m.name, m.ip)).collect();
    let count = match members.len() {
        1 => "1 VM".to_owned(),
        n => format!("{n} VMs"),
    };
    format!("{count}: {}", list.join(", "))
}

/// A closure that wraps an I/O error with what was being done, and where.
fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.into();
    move |source| NetworkError::Io { what, path, source }
}

/// Checks a network or VM name against [`NAME_RULE`].
pub fn check_name(what: &'static str, name: &str) -> Result<(), NetworkError> {
    let b = name.as_bytes();
    let ok = (1..=64).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(NetworkError::BadName {
            what,
            name: name.to_owned(),
        })
    }
}

/// Creates network `name` with `subnet` (default: the first free
/// 10.89.N.0/24): starts its switch, or makes its bridge.
pub fn create(name: &str, subnet: Option<&str>, driver: Driver) -> Result<Network, NetworkError> {
    Networks::from_env()?.create(name, subnet, driver)
}

/// Every network, by name.
pub fn list() -> Result<Vec<NetworkInfo>, NetworkError> {
    Networks::from_env()?.list()
}

/// Stops the switch of network `name` (or deletes its bridge) and deletes
/// it; refused while VMs are on it.
pub fn remove(name: &str) -> Result<(), NetworkError> {
    Networks::from_env()?.remove(name)
}

/// Makes sure the switch of `network` is running; returns its socket.
/// Blocks for up to 5 seconds while a switch starts.
pub fn ensure_switch(network: &str) -> Result<PathBuf, NetworkError> {
    Networks::from_env()?.ensure_switch(network)
}

/// Leases an address on `network` for the VM `owner_name`, owned by this
/// process: `requested`, or the lowest free one. The switch is running (or
/// the VM's tap is on the bridge) when this returns; dropping the [`Lease`]
/// gives the address back (and deletes the tap).
pub fn lease(network: &str, owner_name: &str, requested: Option<Ipv4Addr>) -> Result<Lease, NetworkError> {
    Networks::from_env()?.lease(network, owner_name, requested)
}

/// The VMs on `network` now, by address.
pub fn members(network: &str) -> Result<Vec<Member>, NetworkError> {
    Networks::from_env()?.members(network)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["a", "net0", "A.b_c-d", "9", &"x".repeat(64)] {
            check_name("network", good).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "_x",
            "a/b",
            "..",
            "a b",
            "é",
            "a\n",
            &"x".repeat(65),
        ] {
            let err = check_name("network", bad).unwrap_err();
            assert!(matches!(&err, NetworkError::BadName { name, .. } if name == bad));
            assert!(err.to_string().contains("start with a letter or digit"), "{err}");
        }
    }

    #[test]
    fn in_use_lists_the_vms() {
        let err = NetworkError::InUse {
            name: "lab".into(),
            members: vec![
                Member {
                    name: "web".into(),
                    ip: Ipv4Addr::new(10, 89, 0, 2),
                },
                Member {
                    name: "db".into(),
                    ip: Ipv4Addr::new(10, 89, 0, 3),
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "network \"lab\" is in use by 2 VMs: web (10.89.0.2), db (10.89.0.3); stop them first"
        );
        let err = NetworkError::UnknownNetwork { name: "x".into() };
        assert_eq!(err.to_string(), "no network \"x\" (see vmshim network ls)");
    }
}
