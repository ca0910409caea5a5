//! fork + exec, with a close-on-exec error pipe so that the agent learns
//! exactly which step failed in the child.
//!
//! Everything the child needs is prepared before fork: after fork, in a
//! program that may have other threads, the child may only make
//! async-signal-safe calls (no allocation, no locks). It runs the steps in
//! order and on the first failure writes `(step, errno, detail)` to the
//! pipe and exits with 127 (`detail` says which rlimit or capability). Reading end-of-file from the pipe means exec succeeded.

use std::ffi::{c_char, CStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use crate::command::Command;
use crate::container::namespaces::NsPlan;
use crate::container::setup::{self, SetupPlan, SetupStep};
use crate::fdio;
use crate::protect;
use crate::rootfs::{self, EnterStep, RootPlan};
use crate::vsock_filter;
use crate::seccomp::{self, Filter};
use crate::security::{self, CapSets, Limit};

/// The steps of the child, in order; the code travels through the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    SignalMask = 1,
    Session = 2,
    ControllingTerminal = 3,
    Stdio = 4,
    Groups = 5,
    Gid = 6,
    Uid = 7,
    Cwd = 8,
    Exec = 9,
    RootNamespace = 10,
    RootBind = 11,
    RootProc = 12,
    RootSys = 13,
    RootDev = 14,
    RootPivot = 15,
    OomScoreAdj = 16,
    Rlimit = 17,
    BoundingSet = 18,
    KeepCaps = 19,
    Capabilities = 20,
    AmbientCaps = 21,
    NoNewPrivs = 22,
    Seccomp = 23,
    /// The filter that refuses `AF_VSOCK` sockets (`vsock_filter.rs`).
    VsockFilter = 24,
    Sync = 25,
    UserRoot = 26,
    JoinNamespace = 27,
    Unshare = 28,
    /// A step of the container's filesystem setup; `detail` is its
    /// [`SetupStep::code`].
    Setup = 29,
    /// Giving back the descriptor limit the agent raised for itself.
    FdLimit = 30,
    /// Not a failure: the container is set up and waits for its start.
    Ready = 100,
    /// Not a failure: the container's mounts are made, before
    /// `pivot_root`; it waits while the agent runs the creation hooks.
    Mounted = 101,
}

impl From<EnterStep> for Step {
    fn from(step: EnterStep) -> Step {
        match step {
            EnterStep::MountNamespace => Step::RootNamespace,
            EnterStep::BindRoot => Step::RootBind,
            EnterStep::Proc => Step::RootProc,
            EnterStep::Sys => Step::RootSys,
            EnterStep::Dev => Step::RootDev,
            EnterStep::Pivot => Step::RootPivot,
        }
    }
}

impl Step {
    fn from_code(code: u32) -> Option<Step> {
        Some(match code {
            1 => Step::SignalMask,
            2 => Step::Session,
            3 => Step::ControllingTerminal,
            4 => Step::Stdio,
            5 => Step::Groups,
            6 => Step::Gid,
            7 => Step::Uid,
            8 => Step::Cwd,
            9 => Step::Exec,
            10 => Step::RootNamespace,
            11 => Step::RootBind,
            12 => Step::RootProc,
            13 => Step::RootSys,
            14 => Step::RootDev,
            15 => Step::RootPivot,
            16 => Step::OomScoreAdj,
            17 => Step::Rlimit,
            18 => Step::BoundingSet,
            19 => Step::KeepCaps,
            20 => Step::Capabilities,
            21 => Step::AmbientCaps,
            22 => Step::NoNewPrivs,
            23 => Step::Seccomp,
            24 => Step::VsockFilter,
            25 => Step::Sync,
            26 => Step::UserRoot,
            27 => Step::JoinNamespace,
            28 => Step::Unshare,
            29 => Step::Setup,
            30 => Step::FdLimit,
            100 => Step::Ready,
            101 => Step::Mounted,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot create the exec status pipe: {source}")]
    StatusPipe { source: io::Error },
    #[error("cannot fork: {source}")]
    Fork { source: io::Error },
    #[error("cannot read the exec status of pid {pid}: {source}")]
    ReadStatus { pid: libc::pid_t, source: io::Error },
    #[error("pid {pid} reported a malformed exec status ({len} bytes)")]
    Malformed { pid: libc::pid_t, len: usize },
}

/// The child's standard descriptors: `fds[i]` becomes fd `i`.
pub struct ChildStdio {
    pub fds: [RawFd; 3],
    /// Make fd 0 (a pseudo-terminal's slave) the controlling terminal.
    pub controlling_terminal: bool,
}

/// A step of the child that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildFailure {
    pub step: Option<Step>,
    pub errno: i32,
    /// Which one, for a step over a list: the index of the rlimit, the
    /// number of the capability.
    pub detail: u32,
}

impl ChildFailure {
    fn decode(buf: [u8; 12]) -> ChildFailure {
        let [a, b, c, d, e, f, g, h, i, j, k, l] = buf;
        ChildFailure {
            step: Step::from_code(u32::from_le_bytes([a, b, c, d])),
            errno: i32::from_le_bytes([e, f, g, h]),
            detail: u32::from_le_bytes([i, j, k, l]),
        }
    }

    /// What failed, naming the value: `cannot change to working directory
    /// "/nope": No such file or directory (os error 2)`.
    pub fn describe(&self, command: &Command, program: &CStr) -> String {
        let err = io::Error::from_raw_os_error(self.errno);
        match self.step {
            Some(Step::SignalMask) => format!("cannot reset the signal mask: {err}"),
            Some(Step::Session) => format!("cannot create a new session: {err}"),
            Some(Step::ControllingTerminal) => format!("cannot make the terminal the controlling terminal: {err}"),
            Some(Step::Stdio) => format!("cannot set up stdin, stdout and stderr: {err}"),
            Some(Step::Groups) => {
                let gids = command
                    .user
                    .as_ref()
                    .map(|u| u.additional_gids.clone())
                    .unwrap_or_default();
                format!("cannot set supplementary groups {gids:?}: {err}")
            }
            Some(Step::Gid) => format!(
                "cannot set group id {}: {err}",
                command.user.as_ref().map_or(0, |u| u.gid)
            ),
            Some(Step::Uid) => format!(
                "cannot set user id {}: {err}",
                command.user.as_ref().map_or(0, |u| u.uid)
            ),
            Some(Step::Cwd) => format!("cannot change to working directory \"{}\": {err}", command.cwd),
            Some(Step::Exec) => format!("cannot exec \"{}\": {err}", program.to_string_lossy()),
            Some(Step::OomScoreAdj) => format!(
                "cannot set oom_score_adj to {}: {err}",
                command.security.oom_score_adj.unwrap_or_default()
            ),
            Some(Step::Rlimit) => match command.security.rlimits.get(self.detail as usize) {
                Some(l) => format!("cannot set {} to {}/{}: {err}", l.kind, l.soft, l.hard),
                None => format!("cannot set a resource limit: {err}"),
            },
            Some(Step::BoundingSet) => format!(
                "cannot drop {} from the bounding set: {err}",
                security::capability_name(self.detail)
            ),
            Some(Step::KeepCaps) => format!("cannot keep the capabilities across the change of user: {err}"),
            Some(Step::Capabilities) => format!("cannot set the capabilities: {err}"),
            Some(Step::AmbientCaps) => format!(
                "cannot raise the ambient capability {}: {err}",
                security::capability_name(self.detail)
            ),
            Some(Step::NoNewPrivs) => format!("cannot set no_new_privs: {err}"),
            Some(Step::Seccomp) => format!("cannot install the seccomp filter: {err}"),
            Some(Step::VsockFilter) => format!("cannot install the filter that keeps it off vsock: {err}"),
            Some(Step::FdLimit) => format!("cannot set its descriptor limit back to the agent's default: {err}"),
            Some(Step::Sync) => format!("lost the agent while waiting for it: {err}"),
            Some(Step::UserRoot) => format!("cannot become root in the new user namespace (is 0 mapped?): {err}"),
            Some(Step::JoinNamespace) => format!("cannot enter a namespace: {err}"),
            Some(Step::Unshare) => format!("cannot create the container's namespaces: {err}"),
            Some(Step::Setup) => match SetupStep::from_code(self.detail) {
                Some(step) => format!("cannot set up the container's filesystem ({step:?}): {err}"),
                None => format!("cannot set up the container's filesystem: {err}"),
            },
            Some(Step::Ready | Step::Mounted) => "the process stopped before exec".to_owned(),
            Some(
                step @ (Step::RootNamespace
                | Step::RootBind
                | Step::RootProc
                | Step::RootSys
                | Step::RootDev
                | Step::RootPivot),
            ) => {
                let what = match step {
                    Step::RootNamespace => "cannot create a mount namespace",
                    Step::RootBind => "cannot bind the root onto itself",
                    Step::RootProc => "cannot mount /proc in it",
                    Step::RootSys => "cannot mount /sys in it",
                    Step::RootDev => "cannot bind /dev into it",
                    _ => "cannot pivot into it",
                };
                let root = command
                    .root
                    .as_deref()
                    .map(|r| r.display().to_string())
                    .unwrap_or_default();
                format!("cannot enter the root filesystem \"{root}\": {what}: {err}")
            }
            None => format!("the child failed before exec: {err}"),
        }
    }
}

/// What the child reads, as raw pointers into memory the parent keeps alive
/// until fork returns.
struct ChildPlan<'a> {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    cwd: *const c_char,
    stdio: &'a ChildStdio,
    ids: Option<(libc::uid_t, libc::gid_t)>,
    groups: &'a [libc::gid_t],
    root: Option<RootPlan>,
    oom_score_adj: Option<&'a CStr>,
    rlimits: &'a [Limit],
    umask: Option<libc::mode_t>,
    capabilities: Option<CapSets>,
    no_new_privileges: bool,
    seccomp: Option<&'a Filter>,
    /// Install `vsock_filter` (the spec does not allow vsock).
    deny_vsock: bool,
    /// The `oom_score_adj` to leave the agent's -1000 for, first thing.
    oom_reset: Option<&'static CStr>,
    /// The descriptor limit to give back (the agent raised its own).
    fd_limit: Option<libc::rlimit>,
    container: Option<&'a ContainerChild<'a>>,
}

/// What the child of a container (or of a process joining one) does
/// besides what [`Command`] says, prepared by the agent.
pub struct ContainerChild<'a> {
    /// The namespaces: `clone` flags, and those the child enters or
    /// unshares itself.
    pub ns: &'a NsPlan,
    /// A new container's filesystem; `None` for a process joining one.
    pub setup: Option<&'a SetupPlan>,
    /// A new container's gate: the read end of a pipe. The child waits on
    /// it once for the agent (id maps), then, set up, reports
    /// [`Step::Ready`] and waits on it again for its start.
    pub gate: Option<RawFd>,
    /// Also report [`Step::Mounted`] and wait on the gate before
    /// `pivot_root`, for the creation hooks.
    pub pause_before_pivot: bool,
    /// The cgroup the process is born in (`clone3` with
    /// `CLONE_INTO_CGROUP`): an open directory of the cgroup v2 tree.
    pub cgroup: Option<RawFd>,
}

/// Forks a child that runs `command` as `program` on `stdio`. Returns its
/// pid and the read end of the exec status pipe (see [`exec_outcome`]).
pub fn fork_exec(
    command: &Command,
    program: &CStr,
    stdio: &ChildStdio,
    container: Option<&ContainerChild<'_>>,
) -> Result<(libc::pid_t, AsyncFd<OwnedFd>), SpawnError> {
    let argv: Vec<*const c_char> = command
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const c_char> = command
        .env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let groups: Vec<libc::gid_t> = command
        .user
        .as_ref()
        .map(|u| u.additional_gids.clone())
        .unwrap_or_default();
    let plan = ChildPlan {
        path: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: command.cwd_c.as_ptr(),
        stdio,
        ids: command.user.as_ref().map(|u| (u.uid, u.gid)),
        groups: &groups,
        root: command.root_c.clone().map(|root| RootPlan {
            mount_api: command.root.as_deref() != Some(std::path::Path::new(agent_proto::GUEST_ROOTFS)),
            root,
        }),
        oom_score_adj: command.security.oom_score_adj_c.as_deref(),
        oom_reset: protect::child_oom_score_adj(),
        rlimits: &command.security.rlimits,
        umask: command.security.umask,
        capabilities: command.security.capabilities,
        no_new_privileges: command.security.no_new_privileges,
        seccomp: command.seccomp.as_ref(),
        deny_vsock: !command.allow_vsock,
        fd_limit: protect::child_fd_limit(),
        container,
    };
    let clone_flags = container.map_or(0, |c| c.ns.clone_flags);
    // A container's process in its cgroup; any other in the workloads'.
    let cgroup = match container {
        Some(c) => c.cgroup,
        None => protect::processes_cgroup(),
    };
    let (status_read, status_write) = fdio::pipe().map_err(|source| SpawnError::StatusPipe { source })?;
    let status_read = fdio::async_fd(status_read).map_err(|source| SpawnError::StatusPipe { source })?;

    // Block every signal across fork, so that no handler of the agent runs
    // in the child before it has reset the dispositions.
    // SAFETY: zeroed sigset_t values are valid, then filled by the libc calls.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset pointers; pthread_sigmask only touches this thread.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut saved);
    }
    // SAFETY: fork (or clone without CLONE_VM, a fork into new
    // namespaces) has no memory preconditions. The child only runs
    // `child`, which makes async-signal-safe calls and never returns.
    let pid = unsafe {
        if clone_flags == 0 && cgroup.is_none() {
            libc::fork()
        } else {
            clone3(clone_flags, cgroup)
        }
    };
    if pid == 0 {
        // SAFETY: we are the child; `plan` points into memory copied by fork.
        unsafe { child(&plan, status_write.as_raw_fd()) }
    }
    let fork_error = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    drop(status_write);
    if pid < 0 {
        return Err(SpawnError::Fork { source: fork_error });
    }
    Ok((pid, status_read))
}

/// `struct clone_args` of clone3(2), up to `cgroup`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Born in a cgroup: no write to `cgroup.procs` afterwards (which waits
/// for the kernel's cgroup lock, milliseconds at a time).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A fork (no shared memory, SIGCHLD at exit) into new namespaces and, with
/// `cgroup`, into that cgroup. Returns as fork does.
///
/// # Safety
/// As fork: the child may only make async-signal-safe calls.
unsafe fn clone3(namespaces: libc::c_int, cgroup: Option<RawFd>) -> libc::pid_t {
    let mut args = CloneArgs {
        flags: namespaces as u32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: clone3 with a valid clone_args of the size given and no
    // stack: a fork, as the caller's contract says.
    unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        ) as libc::pid_t
    }
}

/// Waits for the child's exec: `None` when it succeeded, else the step that
/// failed.
pub async fn exec_outcome(pid: libc::pid_t, pipe: &AsyncFd<OwnedFd>) -> Result<Option<ChildFailure>, SpawnError> {
    let mut buf = [0u8; 12];
    let mut got = 0;
    while got < buf.len() {
        let n = fdio::read(pipe, &mut buf[got..])
            .await
            .map_err(|source| SpawnError::ReadStatus { pid, source })?;
        if n == 0 {
            break;
        }
        got += n;
    }
    match got {
        0 => Ok(None),
        12 => Ok(Some(ChildFailure::decode(buf))),
        len => Err(SpawnError::Malformed { pid, len }),
    }
}

/// The child between fork and exec. Async-signal-safe calls only.
///
/// # Safety
/// Must only be called in a freshly forked child; every pointer in `plan`
/// must be valid (they point into the parent's memory, copied by fork).
unsafe fn child(plan: &ChildPlan<'_>, status_fd: RawFd) -> ! {
    // SAFETY (whole body): plain syscalls on valid pointers and descriptors,
    // no allocation, no locks.
    unsafe {
        // 1. Default dispositions for every signal (SIGPIPE was ignored by
        //    the agent; exec would keep that), then an empty mask.
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
            fail(status_fd, Step::SignalMask);
        }
        // 1b. Not the agent's shield from the OOM killer: while the child
        //     still writes its /proc entry as the agent's root (in a new
        //     user namespace the entry is no longer its own to write).
        if let Some(value) = plan.oom_reset {
            if security::set_oom_score_adj(value).is_err() {
                fail(status_fd, Step::OomScoreAdj);
            }
        }
        // 2. A new session (and process group) led by the child.
        if libc::setsid() < 0 {
            fail(status_fd, Step::Session);
        }
        // 3. The terminal as controlling terminal.
        if plan.stdio.controlling_terminal && libc::ioctl(plan.stdio.fds[0], libc::TIOCSCTTY as _, 0) < 0 {
            fail(status_fd, Step::ControllingTerminal);
        }
        // 4. stdio onto 0, 1, 2. Sources below 3 are first moved up, so that
        //    one dup2 cannot overwrite the source of the next.
        let mut fds = plan.stdio.fds;
        for fd in fds.iter_mut() {
            if *fd < 3 {
                *fd = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
                if *fd < 0 {
                    fail(status_fd, Step::Stdio);
                }
            }
        }
        for (target, fd) in fds.iter().enumerate() {
            if libc::dup2(*fd, target as RawFd) < 0 {
                fail(status_fd, Step::Stdio);
            }
        }
        // 5. The root filesystem, while still privileged: a container's
        //    (namespaces, cgroup, mounts), or a plain process's root.
        if let Some(container) = plan.container {
            enter_container(container, status_fd);
        } else if let Some(root) = &plan.root {
            if let Err(step) = rootfs::enter(root) {
                fail(status_fd, step.into());
            }
        }
        // 5b. Off vsock, unless the spec allows it: while still
        //     privileged (CAP_SYS_ADMIN in its user namespace), so that no
        //     no_new_privs is needed.
        if plan.deny_vsock && vsock_filter::install().is_err() {
            fail(status_fd, Step::VsockFilter);
        }
        // 6. oom_score_adj, resource limits and umask, still privileged.
        //    The agent's raised descriptor limit is given back first; the
        //    spec's limits then win.
        if let Some(limit) = &plan.fd_limit {
            if libc::setrlimit(libc::RLIMIT_NOFILE, limit) != 0 {
                fail(status_fd, Step::FdLimit);
            }
        }
        if let Some(value) = plan.oom_score_adj {
            if security::set_oom_score_adj(value).is_err() {
                fail(status_fd, Step::OomScoreAdj);
            }
        }
        if let Err(index) = security::set_rlimits(plan.rlimits) {
            fail_with(status_fd, Step::Rlimit, index as u32);
        }
        if let Some(umask) = plan.umask {
            libc::umask(umask);
        }
        // 6b. Without no_new_privs, the seccomp filter now, while
        //     CAP_SYS_ADMIN is still effective (as runc does, before
        //     finalizeNamespace); the syscalls of the steps below then go
        //     through it.
        if let Some(filter) = plan.seccomp {
            if !plan.no_new_privileges && seccomp::install(filter).is_err() {
                fail(status_fd, Step::Seccomp);
            }
        }
        // 7. With capabilities: shrink the bounding set while CAP_SETPCAP
        //    is still effective, and keep the permitted set across setuid.
        if let Some(caps) = &plan.capabilities {
            if let Err(cap) = security::drop_bounding(caps) {
                fail_with(status_fd, Step::BoundingSet, cap);
            }
            if security::keep_caps().is_err() {
                fail(status_fd, Step::KeepCaps);
            }
        }
        // 8. Identity. Raw syscalls: they change only this (the only)
        //    thread, without libc's cross-thread broadcast.
        if let Some((uid, gid)) = plan.ids {
            if libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()) < 0 {
                fail(status_fd, Step::Groups);
            }
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0 {
                fail(status_fd, Step::Gid);
            }
            if libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0 {
                fail(status_fd, Step::Uid);
            }
        }
        // 9. The capability sets, then the ambient ones (which must be
        //    permitted and inheritable by then).
        if let Some(caps) = &plan.capabilities {
            if security::set_capabilities(caps).is_err() {
                fail(status_fd, Step::Capabilities);
            }
            if let Err(cap) = security::raise_ambient(caps) {
                fail_with(status_fd, Step::AmbientCaps, cap);
            }
        }
        // 10. The working directory.
        if libc::chdir(plan.cwd) < 0 {
            fail(status_fd, Step::Cwd);
        }
        // 11. no_new_privs, last: nothing after it needs a privilege.
        if plan.no_new_privileges && security::set_no_new_privs().is_err() {
            fail(status_fd, Step::NoNewPrivs);
        }
        // 11b. With no_new_privs, the seccomp filter as late as possible:
        //      only execve goes through it.
        if let Some(filter) = plan.seccomp {
            if plan.no_new_privileges && seccomp::install(filter).is_err() {
                fail(status_fd, Step::Seccomp);
            }
        }
        // 12. exec; the status pipe closes on success.
        libc::execve(plan.path, plan.argv, plan.envp);
        fail(status_fd, Step::Exec)
    }
}

/// A container's part of the child: its cgroup, its namespaces, its
/// filesystem, and the wait for its start.
///
/// # Safety
/// Only in the forked child.
unsafe fn enter_container(c: &ContainerChild<'_>, status_fd: RawFd) {
    // SAFETY (whole body): system calls on prepared strings and open
    // descriptors; no allocation.
    unsafe {
        // b. (The cgroup is the one it was born in.) A new container waits for the agent: its id maps written, its
        //    pid moved into its cgroup.
        if let Some(gate) = c.gate {
            wait_gate(gate, status_fd);
        }
        // c. Root in a new user namespace, so that what the setup creates
        //    belongs to the container's root.
        if c.ns.new_user()
            && (libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0 || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0)
        {
            fail(status_fd, Step::UserRoot);
        }
        // d. The user and mount namespaces joined by path; after a user
        //    one, the new namespaces it is to own.
        for (i, join) in c.ns.in_child.iter().enumerate() {
            if libc::setns(join.fd.as_raw_fd(), join.kind.flag()) != 0 {
                fail_with(status_fd, Step::JoinNamespace, i as u32);
            }
            if join.kind == crate::container::namespaces::Kind::User
                && c.ns.unshare_after_user != 0
                && libc::unshare(c.ns.unshare_after_user) != 0
            {
                fail(status_fd, Step::Unshare);
            }
        }
        // d'. Root of a joined user namespace, as of a new one: the
        //     agent's uid is not mapped there.
        let joined_user =
            c.ns.in_child
                .iter()
                .any(|j| j.kind == crate::container::namespaces::Kind::User);
        if joined_user
            && (libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0 || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0)
        {
            fail(status_fd, Step::UserRoot);
        }
        // e. A cgroup namespace rooted at the container's cgroup.
        if c.ns.new_cgroup && libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
            fail(status_fd, Step::Unshare);
        }
        // f. The filesystem up to pivot_root; with creation hooks, a pause
        //    there while the agent runs them (the mounts made, the root
        //    not yet pivoted to); then pivot_root and the rest.
        if let Some(setup) = c.setup {
            if let Err(step) = setup::mount_tree(setup) {
                fail_with(status_fd, Step::Setup, step.code());
            }
            if c.pause_before_pivot {
                if let Some(gate) = c.gate {
                    report(status_fd, Step::Mounted);
                    wait_gate(gate, status_fd);
                }
            }
            if let Err(step) = setup::pivot(setup).and_then(|()| setup::finish_root(setup)) {
                fail_with(status_fd, Step::Setup, step.code());
            }
        }
        // g. Set up: say so, and wait for the start.
        if let Some(gate) = c.gate {
            report(status_fd, Step::Ready);
            wait_gate(gate, status_fd);
        }
    }
}

/// Tells the agent where the child is (a step that is not a failure).
///
/// # Safety
/// Only in the forked child.
unsafe fn report(status_fd: RawFd, step: Step) {
    let mut buf = [0u8; 12];
    buf[..4].copy_from_slice(&(step as u32).to_le_bytes());
    // SAFETY: a write from a valid buffer.
    if unsafe { libc::write(status_fd, buf.as_ptr().cast(), buf.len()) } != buf.len() as isize {
        // SAFETY: as the caller's.
        unsafe { fail(status_fd, Step::Sync) }
    }
}

/// Reads one byte from the gate; end-of-file (the agent gave up on the
/// container) ends the child.
///
/// # Safety
/// Only in the forked child.
unsafe fn wait_gate(gate: RawFd, status_fd: RawFd) {
    let mut byte = 0u8;
    loop {
        // SAFETY: a one-byte read into a valid buffer.
        let n = unsafe { libc::read(gate, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            return;
        }
        // SAFETY: errno is thread-local and readable.
        if n < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        // SAFETY: as the caller's.
        unsafe { fail(status_fd, Step::Sync) }
    }
}

/// Reports `step` with the current errno and exits with 127.
///
/// # Safety
/// Only in the forked child.
unsafe fn fail(status_fd: RawFd, step: Step) -> ! {
    // SAFETY: as the caller's.
    unsafe { fail_with(status_fd, step, 0) }
}

/// [`fail`], saying which item of the step failed.
///
/// # Safety
/// Only in the forked child.
unsafe fn fail_with(status_fd: RawFd, step: Step, detail: u32) -> ! {
    // SAFETY: errno is thread-local and readable; write and _exit are
    // async-signal-safe; `buf` is a valid 12-byte buffer.
    unsafe {
        let errno = *libc::__errno_location();
        let mut buf = [0u8; 12];
        buf[..4].copy_from_slice(&(step as u32).to_le_bytes());
        buf[4..8].copy_from_slice(&errno.to_le_bytes());
        buf[8..].copy_from_slice(&detail.to_le_bytes());
        libc::write(status_fd, buf.as_ptr().cast(), buf.len());
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::ProcessSpec;

    #[test]
    fn failure_messages_name_the_step_and_value() {
        let spec = ProcessSpec {
            args: vec!["/bin/x".into()],
            cwd: Some("/nope".into()),
            ..Default::default()
        };
        let command = Command::from_spec(spec).unwrap();
        let program = c"/bin/x";
        let f = ChildFailure::decode([8, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            f,
            ChildFailure {
                step: Some(Step::Cwd),
                errno: libc::ENOENT,
                detail: 0,
            }
        );
        let msg = f.describe(&command, program);
        assert!(
            msg.starts_with("cannot change to working directory \"/nope\": No such file or directory"),
            "{msg}"
        );
        let f = ChildFailure {
            step: Some(Step::Exec),
            errno: libc::EACCES,
            detail: 0,
        };
        assert!(f
            .describe(&command, program)
            .starts_with("cannot exec \"/bin/x\": Permission denied"));
        for code in (1..=23).chain(25..=29) {
            assert_eq!(Step::from_code(code).map(|s| s as u32), Some(code));
        }
        assert_eq!(Step::from_code(0), None);
    }

    fn run(spec: ProcessSpec) -> (Option<ChildFailure>, agent_proto::ExitStatus) {
        let command = Command::from_spec(spec).unwrap();
        let program = command.resolve_program().unwrap();
        let null = fdio::open_dev_null().unwrap();
        let stdio = ChildStdio {
            fds: [null.as_raw_fd(); 3],
            controlling_terminal: false,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (pid, pipe) = fork_exec(&command, &program, &stdio, None).unwrap();
            let outcome = exec_outcome(pid, &pipe).await.unwrap();
            let mut status = 0;
            // SAFETY: waits for our own child only (never -1: other tests run beside).
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            (outcome, crate::reaper::decode(status))
        })
    }

    #[test]
    fn exec_succeeds_or_reports_the_failed_step() {
        let sh = |script: &str| ProcessSpec {
            args: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        };
        let (outcome, status) = run(sh("exit 3"));
        assert_eq!(outcome, None);
        assert_eq!(status.code, Some(3));

        let mut spec = sh("exit 0");
        spec.cwd = Some("/nonexistent-dir".into());
        let (outcome, status) = run(spec);
        assert_eq!(
            outcome,
            Some(ChildFailure {
                step: Some(Step::Cwd),
                errno: libc::ENOENT,
                detail: 0,
            })
        );
        assert_eq!(status.code, Some(127));

        let (outcome, _) = run(ProcessSpec {
            args: vec!["/proc/self/status".into()],
            ..Default::default()
        });
        assert_eq!(outcome.map(|f| f.step), Some(Some(Step::Exec)));

        // A hard limit above fs.nr_open is refused by the kernel, and the
        // failure names the limit.
        let mut spec = sh("exit 0");
        spec.rlimits = vec![
            agent_proto::Rlimit {
                kind: "RLIMIT_CORE".into(),
                soft: 0,
                hard: 0,
            },
            agent_proto::Rlimit {
                kind: "RLIMIT_NOFILE".into(),
                soft: 1024,
                hard: u64::MAX - 1,
            },
        ];
        let command = Command::from_spec(spec.clone()).unwrap();
        let (outcome, status) = run(spec);
        let failure = outcome.expect("the rlimit step fails");
        assert_eq!((failure.step, failure.detail), (Some(Step::Rlimit), 1));
        assert_eq!(status.code, Some(127));
        let msg = failure.describe(&command, c"sh");
        assert!(
            msg.starts_with(&format!("cannot set RLIMIT_NOFILE to 1024/{}: ", u64::MAX - 1)),
            "{msg}"
        );
    }

    #[test]
    fn capability_failures_name_the_capability() {
        let command = Command::from_spec(ProcessSpec {
            args: vec!["/bin/x".into()],
            ..Default::default()
        })
        .unwrap();
        let f = ChildFailure {
            step: Some(Step::AmbientCaps),
            errno: libc::EPERM,
            detail: 13,
        };
        assert!(f
            .describe(&command, c"/bin/x")
            .starts_with("cannot raise the ambient capability CAP_NET_RAW: Operation not permitted"));
        let f = ChildFailure {
            step: Some(Step::Capabilities),
            ..f
        };
        assert!(f
            .describe(&command, c"/bin/x")
            .starts_with("cannot set the capabilities: "));
    }
}
