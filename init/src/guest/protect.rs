//! The agent keeps itself able to serve whatever its workloads do.
//!
//! * **Descriptors.** PID 1 starts with the kernel's 1024; the agent raises
//!   its own limit (to `fs.nr_open` in a VM, to the hard limit elsewhere) so
//!   that many connections and streams cannot exhaust it. Its processes get
//!   the limit it started with back, unless their spec sets one.
//! * **The OOM killer.** The agent's `oom_score_adj` is -1000: never chosen.
//!   Its processes get 0 back (children inherit the value), unless their
//!   spec sets one.
//! * **Memory headroom.** In a VM, every process the agent starts lives
//!   under one cgroup, `/sys/fs/cgroup/workloads`, whose `memory.max` is the
//!   guest's memory less [`headroom`]: workloads that fill it meet their own
//!   cgroup's OOM killer, and the agent, outside it, still has memory to
//!   answer the host. Containers' cgroups are made below it; plain processes
//!   are born in `workloads/processes`. Making it costs a few milliseconds
//!   of cgroupfs writes under TCG, so it is done on a thread of its own
//!   once the agent has told the host it listens, while the host dials in;
//!   a process started before it is done waits for it.
//!
//! What the children get back, and where they are born, is recorded in
//! `child::defaults`, which every fork of the agent reads.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::config::Mode;
use crate::child::defaults::{self, Workloads};

/// The most an fd limit is raised to.
const MAX_NOFILE: u64 = 1 << 20;

/// Raises the agent's own descriptor limit; remembers the one it had.
pub fn raise_fd_limit(mode: Mode) {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) } != 0 {
        return;
    }
    // Root in the VM may raise its hard limit up to fs.nr_open (1048576
    // unless changed); elsewhere the soft limit goes up to the hard one.
    let mut tries = vec![old.rlim_max];
    if mode == Mode::Machine && old.rlim_max < MAX_NOFILE {
        tries.insert(0, MAX_NOFILE);
    }
    for limit in tries {
        if limit == old.rlim_cur && limit == old.rlim_max {
            return;
        }
        let new = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            defaults::set_fd_limit(old);
            debug!("descriptor limit {} → {limit}", old.rlim_cur);
            return;
        }
    }
    warn!(
        "cannot raise the descriptor limit above {}: {}",
        old.rlim_cur,
        std::io::Error::last_os_error()
    );
}

/// Makes the OOM killer pass the agent over. Where the agent may not (a
/// namespace without `CAP_SYS_RESOURCE`), it stays as it is.
pub fn shield_from_oom_killer() {
    match std::fs::write("/proc/self/oom_score_adj", "-1000") {
        Ok(()) => {
            defaults::set_shielded();
        }
        Err(e) => debug!("cannot set the agent's oom_score_adj to -1000: {e}"),
    }
}

/// How much of the guest's memory the workloads may not take: a sixteenth,
/// at least 16 MiB and at most 64 MiB ([`agent_proto::workloads_headroom`],
/// which the host sizes containers with when it resizes the VM).
pub fn headroom(total: u64) -> u64 {
    agent_proto::workloads_headroom(total)
}

/// Why the workloads' cgroup could not be made or resized.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadsError {
    #[error("no cgroup2 filesystem at {}", .0.display())]
    NoCgroup2(PathBuf),
    #[error("the agent has no workloads' cgroup (it is not the init of a VM)")]
    NoWorkloads,
    #[error("a guest of {total} bytes leaves its workloads nothing beside the agent's headroom of {headroom}")]
    TooSmall { total: u64, headroom: u64 },
    #[error("cannot read the guest's memory size: {0}")]
    MemTotal(String),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Makes the workloads' cgroup ([`make_workloads`]) on a thread of its
/// own; the agent's forks and containers wait for it
/// ([`defaults::processes_cgroup`], [`defaults::workloads_dir`]).
pub fn make_workloads_in_background(root: PathBuf) {
    defaults::making_workloads();
    let made = std::thread::Builder::new().name("workloads".into()).spawn(move || {
        let span = crate::sys::timeline::begin(|| "workloads cgroup".into());
        let made = make_workloads(&root);
        drop(span);
        let workloads = match made {
            Ok(w) => {
                debug!("workloads in {} (memory.max {} bytes)", w.dir.display(), w.memory_max);
                Some(w)
            }
            Err(e) => {
                warn!("the workloads get no cgroup of their own: {e}");
                None
            }
        };
        defaults::workloads_made(workloads);
    });
    if let Err(e) = made {
        warn!("the workloads get no cgroup of their own: cannot start a thread: {e}");
        defaults::workloads_made(None);
    }
}

/// Makes the workloads' cgroup under the cgroup2 mount `root` (in a VM:
/// `/sys/fs/cgroup`), with its memory capped. Containers' cgroups then go below it,
/// plain processes into its `processes` leaf.
fn make_workloads(root: &Path) -> Result<Workloads, WorkloadsError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| WorkloadsError::Io { what, path, source }
    };
    let subtree = root.join("cgroup.subtree_control");
    if !subtree.exists() {
        return Err(WorkloadsError::NoCgroup2(root.into()));
    }
    // Only the memory controller now, for the cap; a container that needs
    // another has it enabled on its way down (`container::cgroup`). A kernel
    // without it gets the cgroup without the cap.
    let memory = match std::fs::write(&subtree, "+memory") {
        Ok(()) => true,
        Err(e) => {
            warn!(
                "no memory controller for the workloads ({}: {e}): their memory is not capped",
                subtree.display()
            );
            false
        }
    };
    let dir = root.join("workloads");
    create_dir(&dir).map_err(io("create", &dir))?;
    let total = mem_total()?;
    let memory_max = total.saturating_sub(headroom(total));
    if memory {
        let max_file = dir.join("memory.max");
        std::fs::write(&max_file, memory_max.to_string()).map_err(io("write", &max_file))?;
    }
    let leaf = dir.join("processes");
    create_dir(&leaf).map_err(io("create", &leaf))?;
    let processes = std::fs::File::open(&leaf).map_err(io("open", &leaf))?;
    Ok(Workloads {
        dir,
        processes: OwnedFd::from(processes),
        memory_max,
    })
}

/// Sizes the workloads' cgroup for a guest whose memory is (or is about to
/// be) `total` bytes, the host resizing the VM: its `memory.max` becomes
/// `total` less the [`headroom`]. Lowering it makes the kernel reclaim
/// the workloads' page cache before the write returns (or OOM-kill in the
/// cgroup what cannot be reclaimed), which can take a while: call it off
/// the agent's event loop. Returns the workloads' figures after.
pub fn resize_workloads(total: u64) -> Result<agent_proto::CgroupMemory, WorkloadsError> {
    let dir = defaults::workloads_dir().ok_or(WorkloadsError::NoWorkloads)?;
    let headroom = headroom(total);
    if total <= headroom {
        return Err(WorkloadsError::TooSmall { total, headroom });
    }
    let max_file = dir.join("memory.max");
    let memory_max = total - headroom;
    std::fs::write(&max_file, memory_max.to_string()).map_err(|source| WorkloadsError::Io {
        what: "write",
        path: max_file,
        source,
    })?;
    let current_file = dir.join("memory.current");
    let current = std::fs::read_to_string(&current_file).map_err(|source| WorkloadsError::Io {
        what: "read",
        path: current_file.clone(),
        source,
    })?;
    let current_bytes = current.trim().parse().map_err(|_| WorkloadsError::Io {
        what: "parse",
        path: current_file,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{:?}", current.trim())),
    })?;
    debug!("workloads' memory.max {memory_max} bytes for a guest of {total}");
    Ok(agent_proto::CgroupMemory {
        current_bytes,
        max_bytes: Some(memory_max),
    })
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The guest's memory, as `MemTotal` (from sysinfo(2): cheaper than
/// reading `/proc/meminfo`).
fn mem_total() -> Result<u64, WorkloadsError> {
    // SAFETY: sysinfo writes into the zeroed struct we pass.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return Err(WorkloadsError::MemTotal(std::io::Error::last_os_error().to_string()));
    }
    Ok(info.totalram as u64 * u64::from(info.mem_unit.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_a_sixteenth_within_bounds() {
        assert_eq!(headroom(128 << 20), 16 << 20);
        assert_eq!(headroom(256 << 20), 16 << 20);
        assert_eq!(headroom(512 << 20), 32 << 20);
        assert_eq!(headroom(8 << 30), 64 << 20);
    }

    #[test]
    fn mem_total_is_meminfos() {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert_eq!(mem_total().unwrap(), kib * 1024);
    }
}
