//! Why a network operation failed, the names networks and VMs may have,
//! and the VMs an error lists. A leaf: it names no other module of the
//! network but [`super::subnet`], whose addresses its errors quote.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::subnet::{Subnet, SubnetError};

/// What a network or VM name may be.
pub const NAME_RULE: &str = "names are 1 to 64 letters, digits, '_', '.' or '-', and start with a letter or digit";

/// A VM on a network: the name it leased under and its address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// The VM's name on the network, which the other VMs resolve.
    pub name: String,
    /// The address it leased.
    pub ip: Ipv4Addr,
}

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// No network of that name in the state directory.
    #[error("no network {name:?} (see vmshim network ls)")]
    UnknownNetwork {
        /// The name asked for.
        name: String,
    },
    /// `create` with a name that is taken.
    #[error("a network named {name:?} already exists")]
    Exists {
        /// The name taken.
        name: String,
    },
    /// A network or VM name outside [`NAME_RULE`].
    #[error("invalid {what} name {name:?}: {NAME_RULE}")]
    BadName {
        /// `network`, `VM` or `instance`: whose name it is.
        what: &'static str,
        /// The name as given.
        name: String,
    },
    /// A subnet that is not strict CIDR, or whose prefix is out of range.
    #[error(transparent)]
    BadSubnet(#[from] SubnetError),
    /// A subnet that shares addresses with another network's.
    #[error("subnet {subnet} overlaps {other_subnet} of network {other:?}")]
    Overlap {
        /// The subnet asked for.
        subnet: Subnet,
        /// The network that has the addresses.
        other: String,
        /// That network's subnet.
        other_subnet: Subnet,
    },
    /// A subnet that overlaps a range no network may use (loopback, the NAT
    /// network, multicast, ...).
    #[error("subnet {subnet} overlaps {range}, {why}")]
    Reserved {
        /// The subnet asked for.
        subnet: Subnet,
        /// The reserved range it overlaps.
        range: Subnet,
        /// What the range is for.
        why: &'static str,
    },
    /// Every default subnet is taken.
    #[error("every subnet from 10.89.0.0/24 to 10.89.255.0/24 is taken; choose one with --subnet")]
    NoFreeSubnet,
    /// An address asked for (`--ip`) that a live lease holds.
    #[error("{ip} on network {network:?} is already leased by {by:?}")]
    AddressTaken {
        /// The network.
        network: String,
        /// The address asked for.
        ip: Ipv4Addr,
        /// The VM that holds it ("another process" when a writer ignored
        /// the lock).
        by: String,
    },
    /// An address asked for that is not in the network's subnet.
    #[error("{ip} is outside network {network:?} ({subnet})")]
    AddressOutside {
        /// The network.
        network: String,
        /// The address asked for.
        ip: Ipv4Addr,
        /// The network's subnet.
        subnet: Subnet,
    },
    /// An address asked for that is the network's own: its network,
    /// gateway or broadcast address.
    #[error("{ip} cannot be leased on network {network:?}: it is the {role} address of {subnet}")]
    AddressReserved {
        /// The network.
        network: String,
        /// The address asked for.
        ip: Ipv4Addr,
        /// The network's subnet.
        subnet: Subnet,
        /// `network`, `gateway` or `broadcast`.
        role: &'static str,
    },
    /// Every VM address of the subnet is leased.
    #[error("network {name:?} ({subnet}) has no free address left")]
    Exhausted {
        /// The network.
        name: String,
        /// Its subnet.
        subnet: Subnet,
    },
    /// `remove` of a network that VMs still hold leases on.
    #[error("network {name:?} is in use by {}; stop them first", describe_members(.members))]
    InUse {
        /// The network.
        name: String,
        /// The VMs on it.
        members: Vec<Member>,
    },
    /// A VM name already leased on the network (names resolve, so they are
    /// unique, whatever their case).
    #[error("the name {name:?} is already used on network {network:?} (by {ip})")]
    NameTaken {
        /// The network.
        network: String,
        /// The name asked for.
        name: String,
        /// The address of the VM that has it.
        ip: Ipv4Addr,
    },
    /// A switch socket path too long for a Unix socket address.
    #[error(
        "the switch socket {} would be {len} bytes long, over the 107 a Unix socket address holds; \
         use a shorter network name or a shorter VMSHIM_STATE_DIR", path.display()
    )]
    SocketPathTooLong {
        /// The socket's path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// A state file that does not say what it should.
    #[error("{} is corrupt: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// None of the variables that name the state directory is set.
    #[error("no state directory: set VMSHIM_STATE_DIR, XDG_STATE_HOME or HOME")]
    NoStateDir,
    /// A file operation on network state failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation (`read`, `lock`, `rename into place`, ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The switch daemon did not start, or did not accept connections in
    /// time.
    #[error("cannot start the switch of network {name:?}: {detail}")]
    SwitchStart {
        /// The network.
        name: String,
        /// Why, with the end of its log.
        detail: String,
    },
    /// A switch asked of a bridge network.
    #[error("network {name:?} uses the bridge driver, which has no switch daemon")]
    NoSwitch {
        /// The network.
        name: String,
    },
    /// Work on bridges and taps without CAP_NET_ADMIN.
    #[error(
        "{what} needs root (CAP_NET_ADMIN, to add and delete network devices); \
         run vmshim as root, or use a network of the switch driver"
    )]
    NeedsNetAdmin {
        /// The work refused.
        what: String,
    },
    /// A device name vmshim would make that the host already has.
    #[error("a network device named {device:?} already exists on this host, and is not vmshim's to take; {hint}")]
    DeviceExists {
        /// The device.
        device: String,
        /// What to do about it.
        hint: &'static str,
    },
    /// A bridge subnet that the host already routes elsewhere.
    #[error("subnet {subnet} overlaps the host's route to {route} on {device}; choose another with --subnet")]
    HostRoute {
        /// The subnet asked for.
        subnet: Subnet,
        /// The route's destination, `A.B.C.D/N`.
        route: String,
        /// The device the route goes through.
        device: String,
    },
    /// An `ip` command that failed.
    #[error("`ip {command}` failed: {detail}")]
    Ip {
        /// Its arguments.
        command: String,
        /// What `ip` said.
        detail: String,
    },
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
pub(super) fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> NetworkError {
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
