//! What a child of the agent starts from where the agent changed its own
//! settings at boot (`guest::protect`): the descriptor limit the agent
//! started with (it raised its own), an `oom_score_adj` of 0 (the agent is
//! at -1000), and the workloads' cgroup it is born in (in a VM).
//!
//! The boot records each here once it is known; the agent reads them
//! before each fork. The workloads' cgroup is made on a thread of its
//! own: a reader waits while it is being made.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};

/// The agent's own permitted capability set, read once.
static AGENT_PERMITTED: OnceLock<u64> = OnceLock::new();

/// The limit the agent started with, once it has raised its own.
static INHERITED_NOFILE: OnceLock<libc::rlimit> = OnceLock::new();

/// Set once the agent's `oom_score_adj` is -1000.
static SHIELDED: OnceLock<()> = OnceLock::new();

/// The workloads' cgroup and the open leaf of plain processes, once made
/// (`None`: it could not be).
static WORKLOADS: OnceLock<Option<Workloads>> = OnceLock::new();

/// Whether the workloads' cgroup is still being made.
static MAKING: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

/// Where the agent's processes live (in a VM).
#[derive(Debug)]
pub struct Workloads {
    /// `/sys/fs/cgroup/workloads`: containers' cgroups are made below it.
    pub dir: PathBuf,
    /// `workloads/processes`, open, for `clone3(CLONE_INTO_CGROUP)`.
    pub processes: OwnedFd,
    /// Its `memory.max`, in bytes.
    pub memory_max: u64,
}

/// Records the descriptor limit the agent started with, before it raised
/// its own.
pub fn set_fd_limit(inherited: libc::rlimit) {
    let _ = INHERITED_NOFILE.set(inherited);
}

/// The descriptor limit a process of the agent starts with: the one the
/// agent inherited, where it raised its own.
pub fn fd_limit() -> Option<libc::rlimit> {
    INHERITED_NOFILE.get().copied()
}

/// The agent's permitted capability set: what its processes start from
/// when their spec names none. Taken as every capability where it cannot
/// be read, so that a drop is tried rather than skipped.
fn agent_permitted() -> u64 {
    *AGENT_PERMITTED.get_or_init(|| super::security::own_permitted_capabilities().unwrap_or(u64::MAX))
}

/// Whether the agent's processes could hold `CAP_SYS_PTRACE` (the agent's
/// permitted set has it): only then is there one to drop
/// (`security::drop_ptrace`). An agent run by an ordinary user has none to
/// pass on, nor the `CAP_SETPCAP` the drop needs.
pub fn ptrace_to_drop() -> bool {
    agent_permitted() & (1 << super::security::CAP_SYS_PTRACE) != 0
}

/// Records that the agent shielded itself from the OOM killer.
pub fn set_shielded() {
    let _ = SHIELDED.set(());
}

/// What a process of the agent sets its `oom_score_adj` to when its spec
/// says nothing: 0 once the agent shielded itself (raising it back needs
/// no privilege), else nothing (it inherits the agent's, as before).
pub fn oom_score_adj() -> Option<&'static CStr> {
    SHIELDED.get().map(|()| c"0")
}

/// The workloads' cgroup is being made: readers wait for
/// [`workloads_made`].
pub fn making_workloads() {
    *lock(&MAKING.0) = true;
}

/// The workloads' cgroup is made (or could not be): readers go on.
pub fn workloads_made(workloads: Option<Workloads>) {
    let _ = WORKLOADS.set(workloads);
    *lock(&MAKING.0) = false;
    MAKING.1.notify_all();
}

/// The workloads' cgroup, once made; waits while it is being made.
fn workloads() -> Option<&'static Workloads> {
    let mut making = lock(&MAKING.0);
    while *making {
        making = MAKING.1.wait(making).unwrap_or_else(|poisoned| poisoned.into_inner());
    }
    drop(making);
    WORKLOADS.get().and_then(Option::as_ref)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where containers' cgroups are made, once the workloads' cgroup is.
pub fn workloads_dir() -> Option<&'static Path> {
    workloads().map(|w| w.dir.as_path())
}

/// The cgroup plain processes are born in, once the workloads' cgroup is.
pub fn processes_cgroup() -> Option<RawFd> {
    workloads().map(|w| w.processes.as_raw_fd())
}
