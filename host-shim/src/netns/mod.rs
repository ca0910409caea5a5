//! The container's network namespace as its VM's network.
//!
//! Real runtimes hand a container a network namespace their network stack
//! has wired: podman's netavark and CNI before `create` (the spec names it
//! by `path`), docker's libnetwork in a `prestart` hook after `create`
//! (the spec asks for a new one, which the hook finds through the pid
//! `create` reported). A VM cannot join a namespace, so the VM's NICs are
//! joined to it instead, the way Kata's `tcfilter` model does: for each
//! interface the namespace holds (a veth), a tap device beside it in the
//! namespace, traffic redirected both ways between the two with `tc`
//! `mirred` (an ingress qdisc and a match-all `u32` filter on each), and
//! QEMU given the tap's descriptor. The guest's NIC takes the interface's
//! MAC, addresses, routes and MTU, so the container keeps the address its
//! runtime gave it ([`Attachment::guest_config`]), and inside the guest the
//! container joins the VM's own network namespace
//! ([`GUEST_NETWORK_NAMESPACE`]).
//!
//! Everything here acts on the network namespace of the calling thread:
//! `vmshim runtime` starts the container's pid (its instance daemon) in
//! the container's namespace ([`enter_on_exec`]), and the daemon attaches
//! what is there once the creation hooks have run.
//!
//! Layout: `message` builds and walks the netlink bytes (pure), `socket`
//! moves them, `netlink` is the client (links, addresses, routes, qdiscs,
//! filters), `tap` makes tap devices, `attach` joins interfaces to taps,
//! `dns` answers the guest's queries to a name server on the namespace's
//! loopback (docker's embedded DNS). No `ip` or `tc` program is run.

mod attach;
pub mod dns;
mod message;
mod netlink;
#[cfg(test)]
mod prop_tests;
mod socket;
mod tap;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use agent_proto::{ContainerSpec, InterfaceConfig};

pub use attach::Attached;
pub use netlink::NetlinkError;

/// The VM's own network namespace, as the agent in the guest finds it: a
/// container whose network is its VM's joins it by this path.
pub const GUEST_NETWORK_NAMESPACE: &str = "/proc/1/ns/net";

/// `NS_GET_NSTYPE`: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Why a container's network namespace could not be the VM's network.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace's path could not be opened.
    #[error("cannot open the network namespace {}: {source}", path.display())]
    Open {
        /// The path, as the spec gave it.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The path is not a network namespace.
    #[error("{} is not a network namespace", path.display())]
    NotNetwork {
        /// The path.
        path: PathBuf,
    },
    /// The path is vmshim's own network namespace: joining the VM to it
    /// would hand it the host's interfaces.
    #[error("{} is vmshim's own network namespace: the VM would take the host's interfaces", path.display())]
    Own {
        /// The path.
        path: PathBuf,
    },
    /// The thread is in vmshim's own network namespace, whose interfaces a
    /// VM must not take.
    #[error("the container's pid is in vmshim's own network namespace: its interfaces are the host's")]
    NotContainers,
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The tap device could not be made.
    #[error("cannot make the tap device {name}: {source}")]
    Tap {
        /// Its name.
        name: String,
        /// What the system said.
        source: io::Error,
    },
    /// An interface that is up but not Ethernet (a WireGuard or L3 tun
    /// device): a VM's NIC cannot take its place.
    #[error("the network namespace's interface {name} is not an Ethernet device (type {kind}): a VM's NIC cannot take its place")]
    NotEthernet {
        /// The interface.
        name: String,
        /// Its `ARPHRD_*` type.
        kind: u16,
    },
    /// An Ethernet interface without a MAC address.
    #[error("the network namespace's interface {name} has no MAC address for the VM's NIC to take")]
    NoMac {
        /// The interface.
        name: String,
    },
    /// The interface has an ingress qdisc already: another VM took it, or
    /// someone set up traffic control of their own there.
    #[error("the network namespace's interface {name} already has an ingress qdisc (another VM is attached to it, or traffic control of someone else's is set up there)")]
    Taken {
        /// The interface.
        name: String,
    },
}

/// A namespace's identity: the device and inode of its nsfs file.
pub type NamespaceId = (u64, u64);

/// The identity of this process's network namespace.
pub fn own_namespace() -> io::Result<NamespaceId> {
    let meta = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((meta.dev(), meta.ino()))
}

/// Opens the network namespace at `path` (`/run/netns/NAME`,
/// `/proc/PID/ns/net`), checking that it is one, and not vmshim's own.
pub fn open_namespace(path: &Path) -> Result<OwnedFd, NetnsError> {
    let open_err = |source| NetnsError::Open {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    // SAFETY: NS_GET_NSTYPE takes no argument and only returns a value.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
    if kind != libc::CLONE_NEWNET {
        return Err(NetnsError::NotNetwork { path: path.to_owned() });
    }
    let meta = file.metadata().map_err(open_err)?;
    if own_namespace().map_err(open_err)? == (meta.dev(), meta.ino()) {
        return Err(NetnsError::Own { path: path.to_owned() });
    }
    Ok(file.into())
}

/// The network namespace a process is to be started in.
#[derive(Debug)]
pub enum Enter {
    /// The namespace of this descriptor ([`open_namespace`]).
    Join(OwnedFd),
    /// A new one, with only loopback (`unshare(CLONE_NEWNET)`): root's.
    New,
}

/// Makes `cmd` start in the namespace `enter` says (`setns` or `unshare`
/// in the child, before it runs the program).
pub fn enter_on_exec(cmd: &mut Command, enter: Enter) {
    let join = match enter {
        Enter::Join(fd) => Some(fd),
        Enter::New => None,
    };
    // SAFETY: the closure runs in the child between fork and exec and
    // makes only setns or unshare, which are async-signal-safe system
    // calls. The descriptor is owned by the closure, so it is open then.
    unsafe {
        cmd.pre_exec(move || {
            let done = match &join {
                Some(fd) => libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET),
                None => libc::unshare(libc::CLONE_NEWNET),
            };
            match done {
                0 => Ok(()),
                _ => Err(io::Error::last_os_error()),
            }
        });
    }
}

/// What a container's spec asks of its network namespace, seen from the
/// host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecNetwork {
    /// None: the host's, which a VM cannot share (it gets NAT instead).
    Host,
    /// A new one (`{"type": "network"}`).
    New,
    /// One by path, set up by the caller's network stack.
    Path(PathBuf),
}

impl SpecNetwork {
    /// What `spec` asks for.
    pub fn of(spec: &ContainerSpec) -> SpecNetwork {
        match spec.namespaces.iter().find(|n| n.kind == "network") {
            None => SpecNetwork::Host,
            Some(n) => match n.path.as_deref().filter(|p| !p.is_empty()) {
                Some(path) => SpecNetwork::Path(PathBuf::from(path)),
                None => SpecNetwork::New,
            },
        }
    }
}

/// Makes container `spec` join its VM's own network namespace in the
/// guest: the VM's NICs are the container's namespace's interfaces.
pub fn join_vm_network(spec: &mut ContainerSpec) {
    for ns in spec.namespaces.iter_mut().filter(|n| n.kind == "network") {
        ns.path = Some(GUEST_NETWORK_NAMESPACE.to_owned());
    }
}

/// The interfaces of a network namespace joined to taps, while the VM
/// runs. [`Attachment::detach`] takes the redirects away; the taps go
/// with their last descriptor (QEMU's and these).
pub struct Attachment {
    nl: netlink::Netlink,
    interfaces: Vec<Attached>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("interfaces", &self.interfaces)
            .finish()
    }
}

impl Attachment {
    /// Joins every interface of this thread's network namespace that is up
    /// (but loopback) to a tap of its own. `host` is vmshim's own
    /// namespace ([`own_namespace`] in the process that started this one),
    /// whose interfaces are refused: they are the host's.
    pub fn attach(host: NamespaceId) -> Result<Attachment, NetnsError> {
        if own_namespace().ok() == Some(host) {
            return Err(NetnsError::NotContainers);
        }
        let mut nl = netlink::Netlink::open()?;
        let interfaces = attach::attach_all(&mut nl)?;
        Ok(Attachment { nl, interfaces })
    }

    /// The interfaces joined, in order.
    pub fn interfaces(&self) -> &[Attached] {
        &self.interfaces
    }

    /// The guest's NICs: each tap's descriptor with the MAC of the
    /// interface it stands for.
    pub fn nics(&self) -> io::Result<Vec<crate::vm::net::TapNic>> {
        self.interfaces
            .iter()
            .map(|a| {
                Ok(crate::vm::net::TapNic {
                    fd: Arc::new(a.tap.fd.try_clone()?),
                    mac: a.link.mac.unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The guest's settings of those NICs, for `configure_network`.
    pub fn guest_config(&self) -> Vec<InterfaceConfig> {
        self.interfaces.iter().map(Attached::guest_config).collect()
    }

    /// Takes the redirects away from the namespace's interfaces (once the
    /// VM is gone) and closes the taps. Returns what could not be undone.
    pub fn detach(mut self) -> Vec<NetnsError> {
        let failures = attach::detach_all(&mut self.nl, &self.interfaces);
        drop(self.interfaces);
        failures
    }
}
