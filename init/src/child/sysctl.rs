//! OCI `linux.sysctl`: kernel parameters written under `/proc/sys` in the
//! container's namespaces.
//!
//! [`SysctlPlan::new`] checks the keys in the agent, before fork, as
//! runc's `validateSysctl` does: only parameters that belong to a
//! namespace the container has of its own are accepted, since any other
//! would change the whole machine. [`SysctlPlan::apply`] writes them in
//! the forked child, once it is in those namespaces: raw syscalls only, no
//! allocation.

use std::collections::BTreeMap;
use std::ffi::CString;

/// The ipc namespace's parameters under `kernel.` (beside `fs.mqueue.*`).
const IPC_KERNEL: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The uts namespace's parameters.
const UTS: [&str; 2] = ["kernel.hostname", "kernel.domainname"];

/// Which namespaces the container has of its own, new or joined by path:
/// not the agent's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewNamespaces {
    pub ipc: bool,
    pub net: bool,
    pub uts: bool,
}

/// Why `linux.sysctl` is refused (`invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SysctlError {
    /// A key that is not a parameter's name.
    #[error("linux.sysctl: {key:?} is not a parameter name: {why}")]
    BadKey {
        /// As given.
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A value that cannot be a C string.
    #[error("linux.sysctl: the value of {key:?} contains a NUL byte")]
    BadValue {
        /// Its key.
        key: String,
    },
    /// A parameter of the whole machine.
    #[error("linux.sysctl: {key:?} is not namespaced: it would change the whole machine")]
    NotNamespaced {
        /// As given.
        key: String,
    },
    /// A parameter of a namespace the container shares with the agent.
    #[error("linux.sysctl: {key:?} needs the container to have its own {namespace} namespace")]
    NeedsNamespace {
        /// As given.
        key: String,
        /// The namespace it belongs to.
        namespace: &'static str,
    },
}

/// The checked parameters, as `/proc/sys` paths and values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysctlPlan {
    keys: Vec<String>,
    /// (`/proc/sys/net/ipv4/ip_forward`, value).
    entries: Vec<(CString, CString)>,
}

impl SysctlPlan {
    /// Checks every key against the namespaces the container has, and
    /// turns it into a path (`net.ipv4.ip_forward` →
    /// `/proc/sys/net/ipv4/ip_forward`).
    pub fn new(sysctl: &BTreeMap<String, String>, ns: NewNamespaces) -> Result<SysctlPlan, SysctlError> {
        let mut plan = SysctlPlan::default();
        for (key, value) in sysctl {
            check_name(key)?;
            check_namespace(key, ns)?;
            let path = format!("/proc/sys/{}", key.replace('.', "/"));
            let path = CString::new(path).map_err(|_| SysctlError::BadKey {
                key: key.clone(),
                why: "it contains a NUL byte",
            })?;
            let value = CString::new(value.as_str()).map_err(|_| SysctlError::BadValue { key: key.clone() })?;
            plan.keys.push(key.clone());
            plan.entries.push((path, value));
        }
        Ok(plan)
    }

    /// Writes every parameter; on failure, the index of the one refused,
    /// errno left set.
    ///
    /// # Safety
    /// Meant for the forked child: raw syscalls only, no allocation.
    pub unsafe fn apply(&self) -> Result<(), usize> {
        for (index, (path, value)) in self.entries.iter().enumerate() {
            let bytes = value.to_bytes();
            // SAFETY: open on a NUL-terminated path prepared before fork.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(index);
            }
            // SAFETY: a write from a valid buffer of its length to our descriptor.
            let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
            // SAFETY: errno is thread-local and readable.
            let write_errno = unsafe { *libc::__errno_location() };
            // SAFETY: closing the descriptor opened above.
            unsafe { libc::close(fd) };
            let errno = if written < 0 {
                write_errno
            } else if written as usize != bytes.len() {
                libc::EIO
            } else {
                continue;
            };
            // SAFETY: errno is thread-local and writable.
            unsafe { *libc::__errno_location() = errno };
            return Err(index);
        }
        Ok(())
    }

    /// The key of entry `index`, as the spec gave it, for messages.
    pub fn key(&self, index: usize) -> &str {
        self.keys.get(index).map_or("", String::as_str)
    }
}

fn check_name(key: &str) -> Result<(), SysctlError> {
    let why = if key.is_empty() {
        "it is empty"
    } else if key.contains('/') {
        "it contains '/'"
    } else if key.contains('\0') {
        "it contains a NUL byte"
    } else if key.split('.').any(|part| part.is_empty()) {
        "it has an empty component (\"..\", or a dot at an end)"
    } else {
        return Ok(());
    };
    Err(SysctlError::BadKey {
        key: key.to_owned(),
        why,
    })
}

/// runc's rules: the ipc namespace's `kernel.msg*`, `kernel.sem`,
/// `kernel.shm*` and `fs.mqueue.*`, the network namespace's `net.*`, the
/// uts namespace's `kernel.hostname` and `kernel.domainname`; nothing else.
fn check_namespace(key: &str, ns: NewNamespaces) -> Result<(), SysctlError> {
    let (has, namespace) = if IPC_KERNEL.contains(&key) || key.starts_with("fs.mqueue.") {
        (ns.ipc, "ipc")
    } else if key.starts_with("net.") {
        (ns.net, "network")
    } else if UTS.contains(&key) {
        (ns.uts, "uts")
    } else {
        return Err(SysctlError::NotNamespaced { key: key.to_owned() });
    };
    if !has {
        return Err(SysctlError::NeedsNamespace {
            key: key.to_owned(),
            namespace,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const ALL: NewNamespaces = NewNamespaces {
        ipc: true,
        net: true,
        uts: true,
    };

    #[test]
    fn namespaced_keys_become_proc_sys_paths() {
        let plan = SysctlPlan::new(
            &map(&[
                ("net.ipv4.ip_forward", "1"),
                ("kernel.shmmax", "65536"),
                ("fs.mqueue.msg_max", "20"),
                ("kernel.domainname", "example.org"),
            ]),
            ALL,
        )
        .unwrap();
        let paths: Vec<_> = plan
            .entries
            .iter()
            .map(|(p, v)| (p.to_str().unwrap(), v.to_str().unwrap()))
            .collect();
        // In key order (a BTreeMap).
        assert_eq!(
            paths,
            [
                ("/proc/sys/fs/mqueue/msg_max", "20"),
                ("/proc/sys/kernel/domainname", "example.org"),
                ("/proc/sys/kernel/shmmax", "65536"),
                ("/proc/sys/net/ipv4/ip_forward", "1"),
            ]
        );
        assert_eq!(plan.key(3), "net.ipv4.ip_forward");
        assert_eq!(plan.key(9), "");
        let empty = SysctlPlan::new(&BTreeMap::new(), NewNamespaces::default()).unwrap();
        assert!(empty.entries.is_empty());
    }

    #[test]
    fn each_key_needs_its_namespace() {
        let one = |key: &str, ns| {
            SysctlPlan::new(&map(&[(key, "1")]), ns)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let none = NewNamespaces::default();
        assert_eq!(
            one("vm.swappiness", ALL),
            Err("linux.sysctl: \"vm.swappiness\" is not namespaced: it would change the whole machine".into())
        );
        assert_eq!(
            one(
                "net.ipv4.ip_forward",
                NewNamespaces {
                    ipc: true,
                    uts: true,
                    net: false
                }
            ),
            Err("linux.sysctl: \"net.ipv4.ip_forward\" needs the container to have its own network namespace".into())
        );
        assert_eq!(
            one("kernel.msgmax", none),
            Err("linux.sysctl: \"kernel.msgmax\" needs the container to have its own ipc namespace".into())
        );
        assert!(one("fs.mqueue.queues_max", none).is_err());
        assert!(one("kernel.hostname", none).is_err());
        assert!(one("kernel.pid_max", ALL).is_err());
        assert!(one("fs.file-max", ALL).is_err());
        let ipc = NewNamespaces { ipc: true, ..none };
        assert_eq!(one("kernel.shm_rmid_forced", ipc), Ok(()));
        assert_eq!(one("fs.mqueue.msgsize_max", ipc), Ok(()));
        assert_eq!(one("kernel.hostname", NewNamespaces { uts: true, ..none }), Ok(()));
    }

    #[test]
    fn odd_keys_and_values_are_refused() {
        for key in [
            "net/ipv4/ip_forward",
            "net..ipv4",
            "net.ipv4.",
            ".net",
            "",
            "net.a\0b",
            "net.ipv4.conf.eth0/1",
        ] {
            let e = SysctlPlan::new(&map(&[(key, "1")]), ALL).unwrap_err();
            assert!(matches!(e, SysctlError::BadKey { .. }), "{key:?}: {e}");
        }
        let e = SysctlPlan::new(&map(&[("net.ipv4.ip_forward", "1\0")]), ALL).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.sysctl: the value of \"net.ipv4.ip_forward\" contains a NUL byte"
        );
    }

    #[test]
    fn apply_names_the_entry_that_failed() {
        // A key that passes the checks but that this kernel does not have:
        // the open fails and the index says which one.
        let plan = SysctlPlan::new(&map(&[("net.vminitd_no_such_parameter", "1")]), ALL).unwrap();
        // SAFETY: open, write and close only; safe in the test process.
        let result = unsafe { plan.apply() };
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!(result, Err(0));
        assert_eq!(errno, Some(libc::ENOENT));
        assert_eq!(plan.key(0), "net.vminitd_no_such_parameter");
        // SAFETY: as above; nothing to write.
        assert_eq!(unsafe { SysctlPlan::default().apply() }, Ok(()));
    }

    #[test]
    fn apply_writes_in_the_callers_namespace() {
        let plan = SysctlPlan::new(&map(&[("net.ipv4.ip_forward", "1")]), ALL).unwrap();
        // A child in a network namespace of its own applies the plan and
        // reads the value back: exit 0 when it reads "1".
        // SAFETY: the child makes raw syscalls only, then _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: raw syscalls in the forked child, on valid buffers.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    libc::_exit(10);
                }
                if plan.apply().is_err() {
                    libc::_exit(11);
                }
                let fd = libc::open(
                    c"/proc/sys/net/ipv4/ip_forward".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                );
                let mut buf = [0u8; 8];
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                libc::_exit(if n == 2 && buf[..2] == *b"1\n" { 0 } else { 12 });
            }
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        let code = libc::WEXITSTATUS(status);
        assert_eq!(code, 0, "10: unshare, 11: apply, 12: the value read back is not 1");
    }
}
