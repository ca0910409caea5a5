//! The OCI process attributes that the child applies between fork and
//! exec: `oom_score_adj`, resource limits, the umask, the capability sets
//! and `no_new_privs`.
//!
//! [`Security::from_spec`] checks the names and turns everything into
//! numbers and C strings in the agent, before fork. The `unsafe fn`s below
//! run in the forked child: raw syscalls only, no allocation, no locks.
//! Raw syscalls also keep musl from broadcasting `setrlimit` to other
//! threads, which a forked child does not have.

use std::ffi::CString;

use agent_proto::{Capabilities, ProcessSpec};

/// Why a process's security attributes are refused (`invalid_request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// `rlimits[].type` is not a resource limit.
    #[error("unknown resource limit {kind:?}")]
    UnknownRlimit {
        /// As given.
        kind: String,
    },
    /// A soft limit above its hard limit.
    #[error("{kind}: the soft limit {soft} is above the hard limit {hard}")]
    SoftAboveHard {
        /// The limit.
        kind: String,
        /// Its soft value.
        soft: u64,
        /// Its hard value.
        hard: u64,
    },
    /// The same limit twice.
    #[error("{kind} is given more than once")]
    DuplicateRlimit {
        /// The limit.
        kind: String,
    },
    /// A capability name this agent does not know.
    #[error("unknown capability {name:?} in the {set} set")]
    UnknownCapability {
        /// The set it is in.
        set: &'static str,
        /// As given.
        name: String,
    },
    /// `oom_score_adj` out of range.
    #[error("oom_score_adj {value} is outside -1000..=1000")]
    OomScoreAdj {
        /// As given.
        value: i32,
    },
    /// A umask with more than the permission bits.
    #[error("umask {umask:#o} is not a permission mask (at most 0o777)")]
    Umask {
        /// As given.
        umask: u32,
    },
}

/// Capability names by number (`linux/capability.h`).
pub const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Resource names by number (`asm-generic/resource.h`).
pub const RLIMITS: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// One resource limit, by number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub kind: String,
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// The capability sets as bit masks (bit N = capability N).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    /// The highest capability this kernel knows; higher ones are ignored.
    pub last_cap: u32,
}

/// The checked attributes, ready for the child.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub oom_score_adj: Option<i32>,
    /// `oom_score_adj` as the text written to `/proc/self/oom_score_adj`.
    pub oom_score_adj_c: Option<CString>,
    pub rlimits: Vec<Limit>,
    pub umask: Option<libc::mode_t>,
    pub capabilities: Option<CapSets>,
    pub no_new_privileges: bool,
}

impl Security {
    /// Checks the attributes of `spec`: known names, soft ≤ hard, one
    /// entry per resource, values in range.
    pub fn from_spec(spec: &ProcessSpec) -> Result<Security, SecurityError> {
        let oom_score_adj_c = match spec.oom_score_adj {
            Some(value @ -1000..=1000) => {
                Some(CString::new(value.to_string()).map_err(|_| SecurityError::OomScoreAdj { value })?)
            }
            Some(value) => return Err(SecurityError::OomScoreAdj { value }),
            None => None,
        };
        let umask = match spec.umask {
            Some(umask) if umask > 0o777 => return Err(SecurityError::Umask { umask }),
            other => other,
        };
        let mut rlimits: Vec<Limit> = Vec::with_capacity(spec.rlimits.len());
        for r in &spec.rlimits {
            let resource = RLIMITS
                .iter()
                .position(|name| *name == r.kind)
                .ok_or_else(|| SecurityError::UnknownRlimit { kind: r.kind.clone() })?;
            if r.soft > r.hard {
                return Err(SecurityError::SoftAboveHard {
                    kind: r.kind.clone(),
                    soft: r.soft,
                    hard: r.hard,
                });
            }
            if rlimits.iter().any(|l| l.kind == r.kind) {
                return Err(SecurityError::DuplicateRlimit { kind: r.kind.clone() });
            }
            rlimits.push(Limit {
                kind: r.kind.clone(),
                resource: resource as u32,
                soft: r.soft,
                hard: r.hard,
            });
        }
        let capabilities = spec.capabilities.as_ref().map(cap_sets).transpose()?;
        Ok(Security {
            oom_score_adj: spec.oom_score_adj,
            oom_score_adj_c,
            rlimits,
            umask,
            capabilities,
            no_new_privileges: spec.no_new_privileges,
        })
    }
}

fn cap_sets(caps: &Capabilities) -> Result<CapSets, SecurityError> {
    let last_cap = last_cap();
    let mask = |set: &'static str, names: &[String]| -> Result<u64, SecurityError> {
        let mut mask = 0u64;
        for name in names {
            let bit = capability_number(name).ok_or_else(|| SecurityError::UnknownCapability {
                set,
                name: name.clone(),
            })?;
            // Known to the spec but not to this kernel: ignored, as runc does.
            if bit <= last_cap {
                mask |= 1 << bit;
            }
        }
        Ok(mask)
    };
    let permitted = mask("permitted", &caps.permitted)?;
    let inheritable = mask("inheritable", &caps.inheritable)?;
    Ok(CapSets {
        bounding: mask("bounding", &caps.bounding)?,
        effective: mask("effective", &caps.effective)?,
        permitted,
        inheritable,
        // The kernel raises an ambient capability only if it is permitted
        // and inheritable; runc leaves the others out (a stock `runc spec`
        // lists ambient capabilities and no inheritable ones), and so do we.
        ambient: mask("ambient", &caps.ambient)? & permitted & inheritable,
        last_cap,
    })
}

/// The number of a capability name (`CAP_NET_RAW` → 13).
pub fn capability_number(name: &str) -> Option<u32> {
    CAPABILITIES.iter().position(|c| *c == name).map(|n| n as u32)
}

/// The name of capability `n`, for messages.
pub fn capability_name(n: u32) -> String {
    CAPABILITIES
        .get(n as usize)
        .map_or_else(|| format!("capability {n}"), |name| (*name).to_owned())
}

/// The kernel's highest capability (`/proc/sys/kernel/cap_last_cap`), or
/// the highest this table knows when that cannot be read.
fn last_cap() -> u32 {
    let known = CAPABILITIES.len() as u32 - 1;
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(known, |n| n.min(63))
}

// ---------------------------------------------------------------------------
// In the child: raw syscalls only
// ---------------------------------------------------------------------------

/// Writes `value` to `/proc/self/oom_score_adj`.
///
/// # Safety
/// Only in the forked child.
pub unsafe fn set_oom_score_adj(value: &std::ffi::CStr) -> Result<(), ()> {
    // SAFETY: open on a static NUL-terminated path.
    let fd = unsafe { libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(());
    }
    let bytes = value.to_bytes();
    // SAFETY: a write from a valid buffer of its length to our descriptor.
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    if written != bytes.len() as isize {
        return Err(());
    }
    Ok(())
}

/// Sets every limit; on failure, the index of the one refused.
///
/// # Safety
/// Only in the forked child.
pub unsafe fn set_rlimits(limits: &[Limit]) -> Result<(), usize> {
    for (i, limit) in limits.iter().enumerate() {
        let value = libc::rlimit64 {
            rlim_cur: limit.soft,
            rlim_max: limit.hard,
        };
        // SAFETY: prlimit64 on this process with a valid rlimit64.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                limit.resource,
                &value as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            )
        };
        if rc < 0 {
            return Err(i);
        }
    }
    Ok(())
}

/// Drops from the bounding set every capability not in `caps.bounding`;
/// on failure, the capability refused. Needs `CAP_SETPCAP`: run it before
/// the change of user.
///
/// # Safety
/// Only in the forked child.
pub unsafe fn drop_bounding(caps: &CapSets) -> Result<(), u32> {
    for cap in 0..=caps.last_cap {
        if caps.bounding & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            return Err(cap);
        }
    }
    Ok(())
}

/// Keeps the permitted set across `setresuid` away from root.
///
/// # Safety
/// Only in the forked child.
pub unsafe fn keep_caps() -> Result<(), ()> {
    // SAFETY: prctl with integer arguments.
    match unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1 as libc::c_ulong, 0, 0, 0) } {
        0 => Ok(()),
        _ => Err(()),
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets the effective, permitted and inheritable sets (`capset`).
///
/// # Safety
/// Only in the forked child.
pub unsafe fn set_capabilities(caps: &CapSets) -> Result<(), ()> {
    let word = |mask: u64, i: usize| (mask >> (32 * i)) as u32;
    capset(&[0, 1].map(|i| CapData {
        effective: word(caps.effective, i),
        permitted: word(caps.permitted, i),
        inheritable: word(caps.inheritable, i),
    }))
}

/// The calling thread's sets, as the kernel's two data words (`capget`).
/// One system call: async-signal-safe; errno says why it failed.
fn capget() -> Result<[CapData; 2], ()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget with a version-3 header and room for its two data words.
    match unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut CapHeader, data.as_mut_ptr()) } {
        0 => Ok(data),
        _ => Err(()),
    }
}

/// Sets the calling thread's sets to `data` (`capset`). One system call.
fn capset(data: &[CapData; 2]) -> Result<(), ()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: capset with a version-3 header and its two data words.
    match unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut CapHeader, data.as_ptr()) } {
        0 => Ok(()),
        _ => Err(()),
    }
}

/// `CAP_SYS_PTRACE`, by number (`linux/capability.h`).
pub const CAP_SYS_PTRACE: u32 = 19;

/// The calling process's permitted set (`capget`).
pub fn own_permitted_capabilities() -> std::io::Result<u64> {
    let data = capget().map_err(|()| std::io::Error::last_os_error())?;
    Ok(data[0].permitted as u64 | (data[1].permitted as u64) << 32)
}

/// Drops `CAP_SYS_PTRACE` from the bounding, effective, permitted and
/// inheritable sets (and so from the ambient one), keeping every other
/// capability: for a process of the agent's PID namespace whose spec names
/// no capabilities.
///
/// Without it the process cannot read or write the agent's memory
/// (`/proc/1/mem`, `ptrace`, `process_vm_writev`) nor open its namespaces:
/// the kernel lets one process at another's only when its permitted set
/// holds every capability of the other's, or with `CAP_SYS_PTRACE`, and
/// the agent holds them all. The processes of the VM all lack it, so they
/// can still trace each other. Needs `CAP_SETPCAP`.
///
/// # Safety
/// Only in the forked child.
pub unsafe fn drop_ptrace() -> Result<(), ()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_PTRACE as libc::c_ulong, 0, 0, 0) } < 0 {
        return Err(());
    }
    let mut data = capget()?;
    let bit = !(1u32 << CAP_SYS_PTRACE);
    data[0].effective &= bit;
    data[0].permitted &= bit;
    data[0].inheritable &= bit;
    capset(&data)
}

/// Raises each ambient capability; on failure, the capability refused.
///
/// # Safety
/// Only in the forked child.
pub unsafe fn raise_ambient(caps: &CapSets) -> Result<(), u32> {
    for cap in 0..=caps.last_cap {
        if caps.ambient & (1 << cap) == 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc < 0 {
            return Err(cap);
        }
    }
    Ok(())
}

/// Sets `no_new_privs`.
///
/// # Safety
/// Only in the forked child.
pub unsafe fn set_no_new_privs() -> Result<(), ()> {
    // SAFETY: prctl with integer arguments.
    match unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } {
        0 => Ok(()),
        _ => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::Rlimit;

    fn spec() -> ProcessSpec {
        ProcessSpec {
            args: vec!["true".into()],
            ..Default::default()
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tables_match_the_kernel_numbers() {
        assert_eq!(capability_number("CAP_CHOWN"), Some(0));
        assert_eq!(capability_number("CAP_NET_BIND_SERVICE"), Some(10));
        assert_eq!(capability_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(capability_number("NET_RAW"), None);
        assert_eq!(RLIMITS[libc::RLIMIT_NOFILE as usize], "RLIMIT_NOFILE");
        assert_eq!(RLIMITS[libc::RLIMIT_NPROC as usize], "RLIMIT_NPROC");
        assert_eq!(RLIMITS[libc::RLIMIT_RTTIME as usize], "RLIMIT_RTTIME");
    }

    #[test]
    fn attributes_become_numbers() {
        let s = ProcessSpec {
            umask: Some(0o027),
            oom_score_adj: Some(-500),
            rlimits: vec![Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 100,
                hard: 200,
            }],
            capabilities: Some(Capabilities {
                bounding: names(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE"]),
                permitted: names(&["CAP_CHOWN"]),
                ..Default::default()
            }),
            no_new_privileges: true,
            ..spec()
        };
        let sec = Security::from_spec(&s).unwrap();
        assert_eq!(sec.umask, Some(0o027));
        assert_eq!(sec.oom_score_adj_c.as_deref(), Some(c"-500"));
        assert_eq!(RLIMITS[sec.rlimits[0].resource as usize], "RLIMIT_NOFILE");
        let caps = sec.capabilities.unwrap();
        assert_eq!(caps.bounding, 0x401);
        assert_eq!((caps.permitted, caps.effective, caps.ambient), (1, 0, 0));
        // Ambient capabilities that are not permitted and inheritable are
        // left out.
        let s = ProcessSpec {
            capabilities: Some(Capabilities {
                permitted: names(&["CAP_KILL", "CAP_CHOWN"]),
                inheritable: names(&["CAP_KILL", "CAP_NET_RAW"]),
                ambient: names(&["CAP_KILL", "CAP_CHOWN", "CAP_NET_RAW"]),
                ..Default::default()
            }),
            ..spec()
        };
        let caps = Security::from_spec(&s).unwrap().capabilities.unwrap();
        assert_eq!(caps.ambient, 1 << 5);
        assert!(sec.no_new_privileges);
        assert_eq!(Security::from_spec(&spec()).unwrap(), Security::default());
    }

    #[test]
    fn bad_attributes_are_named() {
        let rlimit = |kind: &str, soft, hard| ProcessSpec {
            rlimits: vec![Rlimit {
                kind: kind.into(),
                soft,
                hard,
            }],
            ..spec()
        };
        let e = Security::from_spec(&rlimit("RLIMIT_BOGUS", 1, 1)).unwrap_err();
        assert_eq!(e.to_string(), "unknown resource limit \"RLIMIT_BOGUS\"");
        let e = Security::from_spec(&rlimit("RLIMIT_NOFILE", 300, 200)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "RLIMIT_NOFILE: the soft limit 300 is above the hard limit 200"
        );
        let mut twice = rlimit("RLIMIT_CORE", 0, 0);
        twice.rlimits.push(twice.rlimits[0].clone());
        assert!(matches!(
            Security::from_spec(&twice).unwrap_err(),
            SecurityError::DuplicateRlimit { .. }
        ));
        let s = ProcessSpec {
            capabilities: Some(Capabilities {
                ambient: names(&["CAP_NET_RAW", "CAP_FLY"]),
                ..Default::default()
            }),
            ..spec()
        };
        let e = Security::from_spec(&s).unwrap_err();
        assert_eq!(e.to_string(), "unknown capability \"CAP_FLY\" in the ambient set");
        let s = ProcessSpec {
            oom_score_adj: Some(1001),
            ..spec()
        };
        assert_eq!(
            Security::from_spec(&s).unwrap_err(),
            SecurityError::OomScoreAdj { value: 1001 }
        );
        let s = ProcessSpec {
            umask: Some(0o1000),
            ..spec()
        };
        assert!(matches!(
            Security::from_spec(&s).unwrap_err(),
            SecurityError::Umask { .. }
        ));
    }
}
