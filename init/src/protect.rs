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
//!   are born in `workloads/processes`.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::config::Mode;

/// The limit the agent started with, once it has raised its own.
static INHERITED_NOFILE: OnceLock<libc::rlimit> = OnceLock::new();

/// Set once the agent's `oom_score_adj` is -1000.
static SHIELDED: OnceLock<()> = OnceLock::new();

/// The workloads' cgroup and the open leaf of plain processes.
static WORKLOADS: OnceLock<Workloads> = OnceLock::new();

/// Where the agent's processes live (in a VM).
#[derive(Debug)]
pub struct Workloads {
    /// `/sys/fs/cgroup/workloads`: containers' cgroups are made below it.
    pub dir: PathBuf,
    /// `workloads/processes`, open, for `clone3(CLONE_INTO_CGROUP)`.
    processes: OwnedFd,
    /// Its `memory.max`, in bytes.
    pub memory_max: u64,
}

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
    let hard = match mode {
        // Root in the VM may raise its hard limit up to fs.nr_open.
        Mode::Machine => std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(old.rlim_max)
            .clamp(old.rlim_max, MAX_NOFILE.max(old.rlim_max)),
        _ => old.rlim_max,
    };
    let new = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    if new.rlim_cur == old.rlim_cur && new.rlim_max == old.rlim_max {
        return;
    }
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        warn!(
            "cannot raise the descriptor limit to {hard}: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let _ = INHERITED_NOFILE.set(old);
    debug!("descriptor limit {} → {hard}", old.rlim_cur);
}

/// The descriptor limit a process of the agent starts with: the one the
/// agent inherited, where it raised its own.
pub fn child_fd_limit() -> Option<libc::rlimit> {
    INHERITED_NOFILE.get().copied()
}

/// Makes the OOM killer pass the agent over. Where the agent may not (a
/// namespace without `CAP_SYS_RESOURCE`), it stays as it is.
pub fn shield_from_oom_killer() {
    match std::fs::write("/proc/self/oom_score_adj", "-1000") {
        Ok(()) => {
            let _ = SHIELDED.set(());
        }
        Err(e) => debug!("cannot set the agent's oom_score_adj to -1000: {e}"),
    }
}

/// What a process of the agent sets its `oom_score_adj` to when its spec
/// says nothing: 0 once the agent shielded itself (raising it back needs
/// no privilege), else nothing (it inherits the agent's, as before).
pub fn child_oom_score_adj() -> Option<&'static CStr> {
    SHIELDED.get().map(|()| c"0")
}

/// How much of the guest's memory the workloads may not take: a sixteenth,
/// at least 16 MiB and at most 64 MiB.
pub fn headroom(total: u64) -> u64 {
    (total / 16).clamp(16 << 20, 64 << 20)
}

/// Why the workloads' cgroup could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadsError {
    #[error("no cgroup2 filesystem at {}", .0.display())]
    NoCgroup2(PathBuf),
    #[error("cannot read MemTotal from /proc/meminfo: {0}")]
    MemTotal(String),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Makes the workloads' cgroup under the cgroup2 mount `root` (in a VM:
/// `/sys/fs/cgroup`), with the controllers the root offers delegated to it
/// and its memory capped. Containers' cgroups then go below it
/// ([`workloads_dir`]), plain processes into its `processes` leaf.
pub fn make_workloads(root: &Path) -> Result<&'static Workloads, WorkloadsError> {
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| WorkloadsError::Io { what, path, source }
    };
    let controllers_file = root.join("cgroup.controllers");
    let offered = std::fs::read_to_string(&controllers_file).map_err(|_| WorkloadsError::NoCgroup2(root.into()))?;
    let subtree = root.join("cgroup.subtree_control");
    for controller in offered.split_whitespace() {
        // One at a time: a controller the kernel refuses here (cpu with a
        // realtime task, say) does not keep the others away.
        if let Err(e) = std::fs::write(&subtree, format!("+{controller}")) {
            warn!("cannot delegate the {controller} controller to the workloads: {e}");
        }
    }
    let dir = root.join("workloads");
    create_dir(&dir).map_err(io("create", &dir))?;
    let total = mem_total()?;
    let memory_max = total.saturating_sub(headroom(total));
    let max_file = dir.join("memory.max");
    if offered.split_whitespace().any(|c| c == "memory") {
        std::fs::write(&max_file, memory_max.to_string()).map_err(io("write", &max_file))?;
    }
    let leaf = dir.join("processes");
    create_dir(&leaf).map_err(io("create", &leaf))?;
    let processes = std::fs::File::open(&leaf).map_err(io("open", &leaf))?;
    let workloads = Workloads {
        dir,
        processes: OwnedFd::from(processes),
        memory_max,
    };
    Ok(WORKLOADS.get_or_init(|| workloads))
}

/// Where containers' cgroups are made, once [`make_workloads`] has run.
pub fn workloads_dir() -> Option<&'static Path> {
    WORKLOADS.get().map(|w| w.dir.as_path())
}

/// The cgroup plain processes are born in, once [`make_workloads`] has run.
pub fn processes_cgroup() -> Option<RawFd> {
    WORKLOADS.get().map(|w| w.processes.as_raw_fd())
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn mem_total() -> Result<u64, WorkloadsError> {
    let text = std::fs::read_to_string("/proc/meminfo").map_err(|e| WorkloadsError::MemTotal(e.to_string()))?;
    parse_mem_total(&text).ok_or_else(|| WorkloadsError::MemTotal("no MemTotal line".into()))
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
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
    fn mem_total_from_meminfo() {
        let text = "MemTotal:         245292 kB\nMemFree:          201444 kB\n";
        assert_eq!(parse_mem_total(text), Some(245292 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
    }
}
