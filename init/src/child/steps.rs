//! The child between fork and exec, its steps in order. Everything it
//! reads was prepared by the agent before fork ([`ChildPlan`]); in a
//! program that may have other threads, it may only make
//! async-signal-safe calls (no allocation, no locks). On the first failure
//! it writes `(step, errno, detail)` to the status pipe and exits with 127.

use std::ffi::{c_char, CStr};
use std::os::fd::{AsRawFd, RawFd};

use super::failure::Step;
use super::namespaces::{self, Kind, NsPlan};
use super::root::{self, RootPlan};
use super::seccomp::{self, Filter};
use super::security::{self, CapSets, Limit};
use super::setup::{self, SetupPlan};
use super::vsock_filter;

/// The child's standard descriptors: `fds[i]` becomes fd `i`.
pub struct ChildStdio {
    pub fds: [RawFd; 3],
    /// Make fd 0 (a pseudo-terminal's slave) the controlling terminal.
    pub controlling_terminal: bool,
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

/// What the child reads, as raw pointers into memory the parent keeps alive
/// until fork returns.
pub(super) struct ChildPlan<'a> {
    pub(super) path: *const c_char,
    pub(super) argv: *const *const c_char,
    pub(super) envp: *const *const c_char,
    pub(super) cwd: *const c_char,
    pub(super) stdio: &'a ChildStdio,
    pub(super) ids: Option<(libc::uid_t, libc::gid_t)>,
    pub(super) groups: &'a [libc::gid_t],
    pub(super) root: Option<RootPlan>,
    pub(super) oom_score_adj: Option<&'a CStr>,
    pub(super) rlimits: &'a [Limit],
    pub(super) umask: Option<libc::mode_t>,
    pub(super) capabilities: Option<CapSets>,
    pub(super) no_new_privileges: bool,
    pub(super) seccomp: Option<&'a Filter>,
    /// Install `vsock_filter` (the spec does not allow vsock).
    pub(super) deny_vsock: bool,
    /// Drop `CAP_SYS_PTRACE` (`security::drop_ptrace`): a process of the
    /// agent's PID namespace whose spec names no capabilities.
    pub(super) drop_ptrace: bool,
    /// The `oom_score_adj` to leave the agent's -1000 for, first thing.
    pub(super) oom_reset: Option<&'static CStr>,
    /// The descriptor limit to give back (the agent raised its own).
    pub(super) fd_limit: Option<libc::rlimit>,
    pub(super) container: Option<&'a ContainerChild<'a>>,
}

/// The child between fork and exec. Async-signal-safe calls only.
///
/// # Safety
/// Must only be called in a freshly forked child; every pointer in `plan`
/// must be valid (they point into the parent's memory, copied by fork).
pub(super) unsafe fn child(plan: &ChildPlan<'_>, status_fd: RawFd) -> ! {
    // 1. Default dispositions for every signal (SIGPIPE was ignored by
    //    the agent; exec would keep that), then an empty mask.
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a zeroed sigaction is a valid value (no handler, no
        // flags, an empty mask).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = libc::SIG_DFL;
        // SAFETY: a valid sigaction read by the kernel; no old action asked.
        unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) };
    }
    // SAFETY: a zeroed sigset_t is valid output space for sigemptyset.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid sigset_t to clear.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: `empty` is a valid sigset_t to read; no old mask asked.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) } != 0 {
        // SAFETY: we are the forked child, as this function's contract says.
        unsafe { fail(status_fd, Step::SignalMask) }
    }
    // 1b. Not the agent's shield from the OOM killer: while the child
    //     still writes its /proc entry as the agent's root (in a new
    //     user namespace the entry is no longer its own to write).
    if let Some(value) = plan.oom_reset {
        // SAFETY: in the forked child; `value` is a static C string.
        if unsafe { security::set_oom_score_adj(value) }.is_err() {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::OomScoreAdj) }
        }
    }
    // 2. A new session (and process group) led by the child.
    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        // SAFETY: in the forked child.
        unsafe { fail(status_fd, Step::Session) }
    }
    // 3. The terminal as controlling terminal.
    // SAFETY: TIOCSCTTY on a descriptor the agent left open for us; the
    // argument is an integer.
    if plan.stdio.controlling_terminal && unsafe { libc::ioctl(plan.stdio.fds[0], libc::TIOCSCTTY as _, 0) } < 0 {
        // SAFETY: in the forked child.
        unsafe { fail(status_fd, Step::ControllingTerminal) }
    }
    // 4. stdio onto 0, 1, 2. Sources below 3 are first moved up, so that
    //    one dup2 cannot overwrite the source of the next.
    let mut fds = plan.stdio.fds;
    for fd in fds.iter_mut() {
        if *fd < 3 {
            // SAFETY: fcntl on a descriptor number; a bad one fails.
            *fd = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
            if *fd < 0 {
                // SAFETY: in the forked child.
                unsafe { fail(status_fd, Step::Stdio) }
            }
        }
    }
    for (target, fd) in fds.iter().enumerate() {
        // SAFETY: dup2 on descriptor numbers; a bad one fails.
        if unsafe { libc::dup2(*fd, target as RawFd) } < 0 {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::Stdio) }
        }
    }
    // 5. The root filesystem, while still privileged: a container's
    //    (namespaces, cgroup, mounts), or a plain process's root.
    if let Some(container) = plan.container {
        // SAFETY: in the forked child, with the agent's prepared plan.
        unsafe { enter_container(container, status_fd) };
    } else if let Some(root) = &plan.root {
        // SAFETY: in the forked child; `root` was prepared before fork.
        if let Err(step) = unsafe { root::enter(root) } {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, step.into()) }
        }
    }
    // 5b. Off vsock, unless the spec allows it: while still
    //     privileged (CAP_SYS_ADMIN in its user namespace), so that no
    //     no_new_privs is needed. A child without that privilege (of an
    //     agent run by an ordinary user) is refused with EACCES: it sets
    //     no_new_privs and installs the filter then, as unprivileged
    //     sandboxes do (its setuid programs run without their owner's
    //     privileges, which such an agent could not grant anyway).
    // SAFETY: in the forked child, still privileged (the step's point).
    if plan.deny_vsock && unsafe { install_vsock_filter() }.is_err() {
        // SAFETY: in the forked child.
        unsafe { fail(status_fd, Step::VsockFilter) }
    }
    // 5c. Off the agent's memory: CAP_SYS_PTRACE gone, before the spec's
    //     filter (which need not allow prctl and capset for it).
    // SAFETY: in the forked child, still privileged (CAP_SETPCAP).
    if plan.drop_ptrace && unsafe { security::drop_ptrace() }.is_err() {
        // SAFETY: in the forked child.
        unsafe { fail(status_fd, Step::DropPtrace) }
    }
    // 6. oom_score_adj, resource limits and umask, still privileged.
    //    The agent's raised descriptor limit is given back first; the
    //    spec's limits then win.
    if let Some(limit) = &plan.fd_limit {
        // SAFETY: setrlimit reads a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) } != 0 {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::FdLimit) }
        }
    }
    if let Some(value) = plan.oom_score_adj {
        // SAFETY: in the forked child; `value` was prepared before fork.
        if unsafe { security::set_oom_score_adj(value) }.is_err() {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::OomScoreAdj) }
        }
    }
    // SAFETY: in the forked child; the limits were prepared before fork.
    if let Err(index) = unsafe { security::set_rlimits(plan.rlimits) } {
        // SAFETY: in the forked child.
        unsafe { fail_with(status_fd, Step::Rlimit, index as u32) }
    }
    if let Some(umask) = plan.umask {
        // SAFETY: umask takes an integer and cannot fail.
        unsafe { libc::umask(umask) };
    }
    // 6b. Without no_new_privs, the seccomp filter now, while
    //     CAP_SYS_ADMIN is still effective (as runc does, before
    //     finalizeNamespace); the syscalls of the steps below then go
    //     through it.
    if let Some(filter) = plan.seccomp {
        // SAFETY: in the forked child, still privileged; the filter was
        // compiled before fork.
        if !plan.no_new_privileges && unsafe { seccomp::install(filter) }.is_err() {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::Seccomp) }
        }
    }
    // 7. With capabilities: shrink the bounding set while CAP_SETPCAP
    //    is still effective, and keep the permitted set across setuid.
    if let Some(caps) = &plan.capabilities {
        // SAFETY: in the forked child; prctl calls on prepared numbers.
        if let Err(cap) = unsafe { security::drop_bounding(caps) } {
            // SAFETY: in the forked child.
            unsafe { fail_with(status_fd, Step::BoundingSet, cap) }
        }
        // SAFETY: in the forked child; one prctl.
        if unsafe { security::keep_caps() }.is_err() {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::KeepCaps) }
        }
    }
    // 8. Identity. Raw syscalls: they change only this (the only)
    //    thread, without libc's cross-thread broadcast.
    if let Some((uid, gid)) = plan.ids {
        // SAFETY: setgroups reads `groups.len()` gids from a valid slice.
        if unsafe { libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()) } < 0 {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::Groups) }
        }
        // SAFETY: setresgid takes integers only.
        if unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) } < 0 {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::Gid) }
        }
        // SAFETY: setresuid takes integers only.
        if unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) } < 0 {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::Uid) }
        }
    }
    // 9. The capability sets, then the ambient ones (which must be
    //    permitted and inheritable by then).
    if let Some(caps) = &plan.capabilities {
        // SAFETY: in the forked child; capset on prepared sets.
        if unsafe { security::set_capabilities(caps) }.is_err() {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::Capabilities) }
        }
        // SAFETY: in the forked child; prctl calls on prepared numbers.
        if let Err(cap) = unsafe { security::raise_ambient(caps) } {
            // SAFETY: in the forked child.
            unsafe { fail_with(status_fd, Step::AmbientCaps, cap) }
        }
    }
    // 10. The working directory.
    // SAFETY: `cwd` points to a NUL-terminated string the agent prepared.
    if unsafe { libc::chdir(plan.cwd) } < 0 {
        // SAFETY: in the forked child.
        unsafe { fail(status_fd, Step::Cwd) }
    }
    // 11. no_new_privs, last: nothing after it needs a privilege.
    // SAFETY: in the forked child; one prctl.
    if plan.no_new_privileges && unsafe { security::set_no_new_privs() }.is_err() {
        // SAFETY: in the forked child.
        unsafe { fail(status_fd, Step::NoNewPrivs) }
    }
    // 11b. With no_new_privs, the seccomp filter as late as possible:
    //      only execve goes through it.
    if let Some(filter) = plan.seccomp {
        // SAFETY: in the forked child, with no_new_privs set; the filter
        // was compiled before fork.
        if plan.no_new_privileges && unsafe { seccomp::install(filter) }.is_err() {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::Seccomp) }
        }
    }
    // 12. exec; the status pipe closes on success.
    // SAFETY: path, argv and envp point to NUL-terminated strings and
    // NULL-terminated arrays the agent keeps alive (copied by fork).
    unsafe { libc::execve(plan.path, plan.argv, plan.envp) };
    // SAFETY: in the forked child.
    unsafe { fail(status_fd, Step::Exec) }
}

/// Whether the child must become root in a user namespace it is in, and
/// could not.
///
/// # Safety
/// Only in the forked child.
unsafe fn become_root_failed() -> bool {
    // SAFETY: setresgid and setresuid take integers only.
    unsafe { libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0 || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0 }
}

/// A container's part of the child: its cgroup, its namespaces, its
/// filesystem, and the wait for its start.
///
/// # Safety
/// Only in the forked child.
unsafe fn enter_container(c: &ContainerChild<'_>, status_fd: RawFd) {
    // b. (The cgroup is the one it was born in.) A new container waits for
    //    the agent: its id maps written, its pid moved into its cgroup.
    if let Some(gate) = c.gate {
        // SAFETY: in the forked child; `gate` is the read end the agent made.
        unsafe { wait_gate(gate, status_fd) };
    }
    // c. Root in a new user namespace, so that what the setup creates
    //    belongs to the container's root.
    // SAFETY: in the forked child.
    if c.ns.new_user() && unsafe { become_root_failed() } {
        // SAFETY: in the forked child.
        unsafe { fail(status_fd, Step::UserRoot) }
    }
    // d. The user and mount namespaces joined by path; after a user
    //    one, the new namespaces it is to own.
    for (i, join) in c.ns.in_child.iter().enumerate() {
        // SAFETY: setns on a namespace descriptor the agent opened.
        if unsafe { libc::setns(join.fd.as_raw_fd(), join.kind.flag()) } != 0 {
            // SAFETY: in the forked child.
            unsafe { fail_with(status_fd, Step::JoinNamespace, i as u32) }
        }
        let owns_new = join.kind == Kind::User && c.ns.unshare_after_user != 0;
        // SAFETY: unshare takes flags only.
        if owns_new && unsafe { libc::unshare(c.ns.unshare_after_user) } != 0 {
            // SAFETY: in the forked child.
            unsafe { fail(status_fd, Step::Unshare) }
        }
    }
    // d'. Root of a joined user namespace, as of a new one: the
    //     agent's uid is not mapped there.
    let joined_user = c.ns.in_child.iter().any(|j| j.kind == Kind::User);
    // SAFETY: in the forked child.
    if joined_user && unsafe { become_root_failed() } {
        // SAFETY: in the forked child.
        unsafe { fail(status_fd, Step::UserRoot) }
    }
    // e. A cgroup namespace rooted at the container's cgroup.
    // SAFETY: unshare takes flags only.
    if c.ns.new_cgroup && unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
        // SAFETY: in the forked child.
        unsafe { fail(status_fd, Step::Unshare) }
    }
    // e'. A new network namespace's loopback up, as runc's init brings
    //     it up, before the mounts.
    if c.ns.new_network() && namespaces::loopback_up().is_err() {
        // SAFETY: in the forked child.
        unsafe { fail(status_fd, Step::Loopback) }
    }
    // f. The filesystem up to pivot_root; with creation hooks, a pause
    //    there while the agent runs them (the mounts made, the root
    //    not yet pivoted to); then pivot_root and the rest.
    if let Some(plan) = c.setup {
        // SAFETY: in the forked child, in its mount namespace; the plan
        // was prepared before fork.
        if let Err(step) = unsafe { setup::mount_tree(plan) } {
            // SAFETY: in the forked child.
            unsafe { fail_with(status_fd, Step::Setup, step.code()) }
        }
        if c.pause_before_pivot {
            if let Some(gate) = c.gate {
                // SAFETY: in the forked child.
                unsafe {
                    report(status_fd, Step::Mounted);
                    wait_gate(gate, status_fd);
                }
            }
        }
        // SAFETY: in the forked child, the mounts made by `mount_tree`.
        if let Err(step) = unsafe { setup::pivot(plan).and_then(|()| setup::finish_root(plan)) } {
            // SAFETY: in the forked child.
            unsafe { fail_with(status_fd, Step::Setup, step.code()) }
        }
    }
    // g. Set up: say so, and wait for the start.
    if let Some(gate) = c.gate {
        // SAFETY: in the forked child.
        unsafe {
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

/// Installs `vsock_filter`, with `no_new_privs` set first where the child
/// lacks the privilege to install it without.
///
/// # Safety
/// Only in the forked child.
unsafe fn install_vsock_filter() -> Result<(), ()> {
    // SAFETY: the caller's contract; errno is thread-local and readable.
    unsafe {
        match vsock_filter::install() {
            Err(()) if *libc::__errno_location() == libc::EACCES => {
                security::set_no_new_privs()?;
                vsock_filter::install()
            }
            installed => installed,
        }
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
    // SAFETY: errno is thread-local and readable.
    let errno = unsafe { *libc::__errno_location() };
    let mut buf = [0u8; 12];
    buf[..4].copy_from_slice(&(step as u32).to_le_bytes());
    buf[4..8].copy_from_slice(&errno.to_le_bytes());
    buf[8..].copy_from_slice(&detail.to_le_bytes());
    // SAFETY: a write from a valid 12-byte buffer, async-signal-safe.
    unsafe { libc::write(status_fd, buf.as_ptr().cast(), buf.len()) };
    // SAFETY: _exit is async-signal-safe and ends the child here.
    unsafe { libc::_exit(127) }
}
