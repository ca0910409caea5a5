//! A container's namespaces: which are new, which are joined, and how.
//!
//! New namespaces are created by the `clone` that makes the container's
//! process, the user namespace first (the kernel creates it before the
//! others in one call, so it owns them). The cgroup namespace is unshared
//! by the child once the agent has moved it into its cgroup, so that the
//! cgroup is the namespace's root.
//!
//! Namespaces joined by path are entered as runc enters them, before the
//! new ones exist: the pid, network, ipc, uts and cgroup ones by the
//! agent's own thread around the `clone` (each is a per-thread attribute,
//! and the agent's single-threaded runtime runs nothing else meanwhile;
//! the thread's own are restored right after), the user and mount ones by
//! the child (a multi-threaded agent cannot enter a user namespace, and
//! its threads share one filesystem context).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use agent_proto::{IdMapping, Namespace};

/// Brings `lo` up in the calling thread's network namespace, as runc's
/// init brings up the loopback of a new one (its `loopback` network):
/// `SIOCGIFFLAGS`, then `SIOCSIFFLAGS` with `IFF_UP`, on a datagram socket.
/// Async-signal-safe (three system calls and a close, no allocation), for
/// the forked child; `Err` leaves the errno set.
pub(super) fn loopback_up() -> Result<(), ()> {
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(());
    }
    // SAFETY: an all-zero ifreq is a valid value (an empty name, zero
    // flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (to, from) in req.ifr_name.iter_mut().zip(b"lo") {
        *to = *from as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `req`,
    // which lives across the call.
    let mut done = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) } == 0;
    if done {
        // SAFETY: the kernel has just written the flags member.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads the name and flags of `req`.
        done = unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) } == 0;
    }
    // SAFETY: errno is thread-local; the close below must not clobber the
    // failure's.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: `fd` is the socket opened above, closed once.
    unsafe { libc::close(fd) };
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    if done {
        Ok(())
    } else {
        Err(())
    }
}

/// The namespace kinds of the OCI spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Mount,
    Pid,
    Network,
    Ipc,
    Uts,
    Cgroup,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::User,
        Kind::Mount,
        Kind::Pid,
        Kind::Network,
        Kind::Ipc,
        Kind::Uts,
        Kind::Cgroup,
    ];

    pub fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "user" => Kind::User,
            "mount" => Kind::Mount,
            "pid" => Kind::Pid,
            "network" => Kind::Network,
            "ipc" => Kind::Ipc,
            "uts" => Kind::Uts,
            "cgroup" => Kind::Cgroup,
            _ => return None,
        })
    }

    /// The OCI name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Mount => "mount",
            Kind::Pid => "pid",
            Kind::Network => "network",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
            Kind::Cgroup => "cgroup",
        }
    }

    /// The name under `/proc/PID/ns/`.
    fn proc_name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Mount => "mnt",
            Kind::Pid => "pid",
            Kind::Network => "net",
            Kind::Ipc => "ipc",
            Kind::Uts => "uts",
            Kind::Cgroup => "cgroup",
        }
    }

    pub fn flag(self) -> libc::c_int {
        match self {
            Kind::User => libc::CLONE_NEWUSER,
            Kind::Mount => libc::CLONE_NEWNS,
            Kind::Pid => libc::CLONE_NEWPID,
            Kind::Network => libc::CLONE_NEWNET,
            Kind::Ipc => libc::CLONE_NEWIPC,
            Kind::Uts => libc::CLONE_NEWUTS,
            Kind::Cgroup => libc::CLONE_NEWCGROUP,
        }
    }

    /// Whether the agent's thread enters it around the clone.
    fn joined_by_agent(self) -> bool {
        !matches!(self, Kind::User | Kind::Mount)
    }
}

/// Why a container's namespaces are refused, or cannot be entered.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// A namespace type the kernel does not have (or OCI does not name).
    #[error(
        "linux.namespaces[{index}]: unknown type {kind:?} (expected pid, network, mount, ipc, uts, user or cgroup)"
    )]
    UnknownKind {
        /// Its index in `linux.namespaces`.
        index: usize,
        /// As given.
        kind: String,
    },
    /// A type listed twice.
    #[error("linux.namespaces: {kind} is listed twice")]
    Duplicate {
        /// The type.
        kind: &'static str,
    },
    /// No new mount namespace.
    #[error("linux.namespaces: a container needs a new mount namespace (listed without a path)")]
    NoMountNamespace,
    /// A user namespace joined with a new pid namespace.
    #[error("linux.namespaces: joining a user namespace by path with a new pid namespace is not supported")]
    UserPathWithNewPid,
    /// A new user namespace with a mount namespace joined.
    #[error("linux.namespaces: a new user namespace cannot be combined with joining a mount namespace by path")]
    NewUserWithMountPath,
    /// Id mappings without a new user namespace.
    #[error("linux.{which}Mappings is given without a new user namespace")]
    MappingsWithoutUser {
        /// `uid` or `gid`.
        which: &'static str,
    },
    /// A new user namespace without both mappings.
    #[error("linux.uidMappings and linux.gidMappings are both needed with a new user namespace")]
    NoMappings,
    /// An empty or overflowing mapping.
    #[error("linux.{which}Mappings[{index}]: size 0, or the range overflows")]
    BadMapping {
        /// `uid` or `gid`.
        which: &'static str,
        /// Its index.
        index: usize,
    },
    /// A host or domain name without a uts namespace of its own.
    #[error("{field}: a new uts namespace is needed to set it")]
    NeedsUts {
        /// The OCI field.
        field: &'static str,
    },
    /// A namespace file that cannot be opened.
    #[error("cannot open the {kind} namespace {path:?}: {source}")]
    Open {
        /// The type.
        kind: &'static str,
        /// Its path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A path that is not a namespace of its type.
    #[error("{path:?} is not a {kind} namespace")]
    NotANamespace {
        /// The type.
        kind: &'static str,
        /// Its path.
        path: String,
    },
}

/// A namespace to enter, open.
#[derive(Debug)]
pub struct Join {
    pub kind: Kind,
    pub fd: OwnedFd,
}

/// Everything about a process's namespaces, prepared before fork.
#[derive(Debug, Default)]
pub struct NsPlan {
    /// Flags for `clone`: the new namespaces (not cgroup).
    pub clone_flags: libc::c_int,
    /// With a user namespace joined by path: the new namespaces the child
    /// unshares after entering it (so that it owns them).
    pub unshare_after_user: libc::c_int,
    /// Unshare a cgroup namespace after the move into the cgroup.
    pub new_cgroup: bool,
    /// Entered by the agent's thread around the clone.
    pub around_fork: Vec<Join>,
    /// Entered by the child, in this order (user, then mount).
    pub in_child: Vec<Join>,
    /// `uid_map` and `gid_map` contents for a new user namespace.
    pub id_maps: Option<(String, String)>,
    /// Kinds that are not the agent's (new or joined).
    pub own: Vec<Kind>,
}

impl NsPlan {
    /// The plan for creating a container.
    pub fn for_create(
        namespaces: &[Namespace],
        uid_mappings: &[IdMapping],
        gid_mappings: &[IdMapping],
    ) -> Result<NsPlan, NamespaceError> {
        let mut plan = NsPlan::default();
        let mut new: Vec<Kind> = Vec::new();
        let mut paths: Vec<(Kind, &str)> = Vec::new();
        for (index, ns) in namespaces.iter().enumerate() {
            let kind = Kind::from_name(&ns.kind).ok_or_else(|| NamespaceError::UnknownKind {
                index,
                kind: ns.kind.clone(),
            })?;
            if plan.own.contains(&kind) {
                return Err(NamespaceError::Duplicate { kind: kind.name() });
            }
            plan.own.push(kind);
            match ns.path.as_deref().filter(|p| !p.is_empty()) {
                Some(path) => paths.push((kind, path)),
                None => new.push(kind),
            }
        }
        if !new.contains(&Kind::Mount) {
            return Err(NamespaceError::NoMountNamespace);
        }
        let user_path = paths.iter().any(|(k, _)| *k == Kind::User);
        let new_user = new.contains(&Kind::User);
        if user_path && new.contains(&Kind::Pid) {
            return Err(NamespaceError::UserPathWithNewPid);
        }
        if new_user && paths.iter().any(|(k, _)| *k == Kind::Mount) {
            return Err(NamespaceError::NewUserWithMountPath);
        }
        for kind in &new {
            match kind {
                Kind::Cgroup => plan.new_cgroup = true,
                Kind::Pid => plan.clone_flags |= kind.flag(),
                _ if user_path => plan.unshare_after_user |= kind.flag(),
                _ => plan.clone_flags |= kind.flag(),
            }
        }
        if new_user {
            if uid_mappings.is_empty() || gid_mappings.is_empty() {
                return Err(NamespaceError::NoMappings);
            }
            plan.id_maps = Some((map_text(uid_mappings, "uid")?, map_text(gid_mappings, "gid")?));
        } else if !uid_mappings.is_empty() {
            return Err(NamespaceError::MappingsWithoutUser { which: "uid" });
        } else if !gid_mappings.is_empty() {
            return Err(NamespaceError::MappingsWithoutUser { which: "gid" });
        }
        // Joined in the order runc joins them: user first, then the rest.
        paths.sort_by_key(|(k, _)| Kind::ALL.iter().position(|a| a == k));
        for (kind, path) in paths {
            let fd = open_namespace(kind, path)?;
            let join = Join { kind, fd };
            if kind.joined_by_agent() {
                plan.around_fork.push(join);
            } else {
                plan.in_child.push(join);
            }
        }
        Ok(plan)
    }

    /// The plan for a process joining every namespace of `pid` that is not
    /// the agent's.
    pub fn for_exec(pid: libc::pid_t) -> Result<NsPlan, NamespaceError> {
        let mut plan = NsPlan::default();
        for kind in Kind::ALL {
            let theirs = format!("/proc/{pid}/ns/{}", kind.proc_name());
            let ours = format!("/proc/self/ns/{}", kind.proc_name());
            let same = match (std::fs::metadata(&theirs), std::fs::metadata(&ours)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                (Err(source), _) => {
                    return Err(NamespaceError::Open {
                        kind: kind.name(),
                        path: theirs,
                        source,
                    })
                }
                // The agent's own cannot be read: join theirs anyway.
                (Ok(_), Err(_)) => false,
            };
            if same {
                continue;
            }
            plan.own.push(kind);
            let join = Join {
                kind,
                fd: open_namespace(kind, &theirs)?,
            };
            if kind.joined_by_agent() {
                plan.around_fork.push(join);
            } else {
                plan.in_child.push(join);
            }
        }
        Ok(plan)
    }

    /// Whether the process has a namespace of `kind` other than the
    /// agent's.
    pub fn owns(&self, kind: Kind) -> bool {
        self.own.contains(&kind)
    }

    /// Whether the process gets a new user namespace (and so must wait for
    /// its id maps).
    pub fn new_user(&self) -> bool {
        self.id_maps.is_some()
    }

    /// Whether the process gets a new network namespace (not one joined
    /// by path), whose loopback it brings up ([`loopback_up`]).
    pub fn new_network(&self) -> bool {
        (self.clone_flags | self.unshare_after_user) & libc::CLONE_NEWNET != 0
    }

    /// Runs `fork` with the agent's thread in the namespaces joined around
    /// it, then puts the thread back in its own. An error entering one
    /// leaves the thread in its own and is returned before `fork` runs.
    pub fn around_fork<T>(&self, fork: impl FnOnce() -> T) -> Result<T, io::Error> {
        if self.around_fork.is_empty() {
            return Ok(fork());
        }
        // The thread's own, to come back to. For pid it is the namespace
        // of the children to come, restored from the active one.
        let mut saved = Vec::with_capacity(self.around_fork.len());
        for join in &self.around_fork {
            let path = match join.kind {
                Kind::Pid => "/proc/self/ns/pid".to_owned(),
                k => format!("/proc/thread-self/ns/{}", k.proc_name()),
            };
            saved.push((join.kind, File::open(path)?));
        }
        let restore = |upto: usize| {
            for (kind, file) in &saved[..upto] {
                // SAFETY: setns with an open namespace descriptor.
                if unsafe { libc::setns(file.as_raw_fd(), kind.flag()) } != 0 {
                    warn!(
                        "cannot return the agent to its own {} namespace: {}",
                        kind.name(),
                        io::Error::last_os_error()
                    );
                }
            }
        };
        for (i, join) in self.around_fork.iter().enumerate() {
            // SAFETY: setns with an open namespace descriptor.
            if unsafe { libc::setns(join.fd.as_raw_fd(), join.kind.flag()) } != 0 {
                let err = io::Error::last_os_error();
                restore(i);
                return Err(io::Error::new(
                    err.kind(),
                    format!("cannot enter the {} namespace: {err}", join.kind.name()),
                ));
            }
        }
        let out = fork();
        restore(saved.len());
        Ok(out)
    }
}

/// `uid_map` text: `CONTAINER HOST SIZE` lines.
fn map_text(mappings: &[IdMapping], which: &'static str) -> Result<String, NamespaceError> {
    let mut text = String::new();
    for (index, m) in mappings.iter().enumerate() {
        if m.size == 0 || m.container_id.checked_add(m.size).is_none() || m.host_id.checked_add(m.size).is_none() {
            return Err(NamespaceError::BadMapping { which, index });
        }
        text.push_str(&format!("{} {} {}\n", m.container_id, m.host_id, m.size));
    }
    Ok(text)
}

/// Opens a namespace file and checks that it is one of `kind`.
fn open_namespace(kind: Kind, path: &str) -> Result<OwnedFd, NamespaceError> {
    let c_path = CString::new(path).map_err(|_| NamespaceError::NotANamespace {
        kind: kind.name(),
        path: path.to_owned(),
    })?;
    let fd = crate::sys::fdio::open(&c_path, libc::O_RDONLY).map_err(|source| NamespaceError::Open {
        kind: kind.name(),
        path: path.to_owned(),
        source,
    })?;
    // NS_GET_NSTYPE: the CLONE_NEW* flag of the namespace behind fd.
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: an ioctl without an argument on an open descriptor.
    let nstype = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if nstype != kind.flag() {
        return Err(NamespaceError::NotANamespace {
            kind: kind.name(),
            path: path.to_owned(),
        });
    }
    Ok(fd)
}

/// Writes the id maps of a new user namespace (by the agent, after clone).
pub fn write_id_maps(pid: libc::pid_t, maps: &(String, String)) -> io::Result<()> {
    let write = |file: &str, text: &str| {
        std::fs::write(format!("/proc/{pid}/{file}"), text)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot write /proc/{pid}/{file} ({text:?}): {e}")))
    };
    write("uid_map", &maps.0)?;
    write("gid_map", &maps.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(kind: &str) -> Namespace {
        Namespace {
            kind: kind.into(),
            path: None,
        }
    }

    #[test]
    fn new_namespaces_become_clone_flags() {
        let list: Vec<Namespace> = ["pid", "network", "ipc", "uts", "mount", "cgroup"]
            .into_iter()
            .map(ns)
            .collect();
        let plan = NsPlan::for_create(&list, &[], &[]).unwrap();
        assert_eq!(
            plan.clone_flags,
            libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWNS
        );
        assert!(plan.new_cgroup && !plan.new_user());
        assert!(plan.owns(Kind::Uts) && !plan.owns(Kind::User));
    }

    #[test]
    fn bad_lists_are_named() {
        let e = NsPlan::for_create(&[ns("mount"), ns("time")], &[], &[]).unwrap_err();
        assert!(
            e.to_string().contains("linux.namespaces[1]: unknown type \"time\""),
            "{e}"
        );
        let e = NsPlan::for_create(&[ns("mount"), ns("pid"), ns("pid")], &[], &[]).unwrap_err();
        assert_eq!(e.to_string(), "linux.namespaces: pid is listed twice");
        let e = NsPlan::for_create(&[ns("pid")], &[], &[]).unwrap_err();
        assert!(matches!(e, NamespaceError::NoMountNamespace));
        let e = NsPlan::for_create(&[ns("mount"), ns("user")], &[], &[]).unwrap_err();
        assert!(matches!(e, NamespaceError::NoMappings));
        let map = IdMapping {
            container_id: 0,
            host_id: 100000,
            size: 0,
        };
        let e = NsPlan::for_create(&[ns("mount"), ns("user")], &[map], &[map]).unwrap_err();
        assert_eq!(e.to_string(), "linux.uidMappings[0]: size 0, or the range overflows");
        let e = NsPlan::for_create(&[ns("mount")], &[map], &[]).unwrap_err();
        assert!(matches!(e, NamespaceError::MappingsWithoutUser { which: "uid" }));
        let path = Namespace {
            kind: "network".into(),
            path: Some("/proc/self/ns/uts".into()),
        };
        let e = NsPlan::for_create(&[ns("mount"), path], &[], &[]).unwrap_err();
        assert_eq!(e.to_string(), "\"/proc/self/ns/uts\" is not a network namespace");
    }

    #[test]
    fn user_namespace_maps_and_joined_paths() {
        let map = IdMapping {
            container_id: 0,
            host_id: 100000,
            size: 65536,
        };
        let net = Namespace {
            kind: "network".into(),
            path: Some("/proc/self/ns/net".into()),
        };
        let plan = NsPlan::for_create(&[ns("user"), ns("mount"), net], &[map], &[map]).unwrap();
        assert_eq!(plan.clone_flags, libc::CLONE_NEWUSER | libc::CLONE_NEWNS);
        assert_eq!(plan.id_maps.as_ref().unwrap().0, "0 100000 65536\n");
        assert_eq!(plan.around_fork.len(), 1);
        assert_eq!(plan.around_fork[0].kind, Kind::Network);
        // Entering the agent's own namespace around a closure is harmless.
        assert_eq!(plan.around_fork(|| 7).unwrap(), 7);
    }

    #[test]
    fn only_a_new_network_namespace_gets_its_loopback_up() {
        let new = NsPlan::for_create(&[ns("mount"), ns("network")], &[], &[]).unwrap();
        assert!(new.new_network());
        let joined = Namespace {
            kind: "network".into(),
            path: Some("/proc/self/ns/net".into()),
        };
        let joined = NsPlan::for_create(&[ns("mount"), joined], &[], &[]).unwrap();
        assert!(!joined.new_network());
        let none = NsPlan::for_create(&[ns("mount")], &[], &[]).unwrap();
        assert!(!none.new_network());
    }

    /// `lo`'s flags in the calling thread's network namespace.
    fn loopback_flags() -> libc::c_short {
        // SAFETY: socket takes integers only.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: an all-zero ifreq is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        // SAFETY: SIOCGIFFLAGS writes into `req`, which outlives the call.
        let r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) };
        let err = io::Error::last_os_error();
        // SAFETY: `fd` is ours.
        unsafe { libc::close(fd) };
        assert_eq!(r, 0, "SIOCGIFFLAGS: {err}");
        // SAFETY: the kernel wrote the flags member.
        unsafe { req.ifr_ifru.ifru_flags }
    }

    /// A new network namespace's `lo` is down until the child brings it
    /// up; then a datagram a process there sends to 127.0.0.1 comes back.
    #[test]
    fn loopback_up_brings_up_a_new_namespaces_lo() {
        // A thread of its own: the network namespace is the thread's.
        std::thread::spawn(|| {
            // SAFETY: unshare takes flags only; it changes this thread only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!(
                    "skipped: cannot make a network namespace: {}",
                    io::Error::last_os_error()
                );
                return;
            }
            let up = libc::IFF_UP as libc::c_short;
            assert_eq!(loopback_flags() & up, 0, "a new namespace's lo starts down");
            assert_eq!(loopback_up(), Ok(()), "{}", io::Error::last_os_error());
            assert_eq!(loopback_flags() & up, up);
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            udp.send_to(b"hi", udp.local_addr().unwrap()).unwrap();
            let mut buf = [0u8; 2];
            assert_eq!(udp.recv(&mut buf).unwrap(), 2);
            assert_eq!(&buf, b"hi");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn exec_joins_only_what_differs() {
        // SAFETY: getpid has no preconditions.
        let plan = NsPlan::for_exec(unsafe { libc::getpid() }).unwrap();
        assert!(plan.own.is_empty() && plan.around_fork.is_empty() && plan.in_child.is_empty());
    }
}
