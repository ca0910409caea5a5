//! fork + exec, with a close-on-exec error pipe so that the agent learns
//! exactly which step failed in the child.
//!
//! Everything the child needs is prepared before fork: after fork, in a
//! program that may have other threads, the child may only make
//! async-signal-safe calls (no allocation, no locks). It runs the steps in
//! order and on the first failure writes `(step, errno)` to the pipe and
//! exits with 127. Reading end-of-file from the pipe means exec succeeded.

use std::ffi::{c_char, CStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use crate::command::Command;
use crate::fdio;
use crate::rootfs::{self, EnterStep, RootPlan};

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
}

impl ChildFailure {
    fn decode(buf: [u8; 8]) -> ChildFailure {
        let [a, b, c, d, e, f, g, h] = buf;
        ChildFailure {
            step: Step::from_code(u32::from_le_bytes([a, b, c, d])),
            errno: i32::from_le_bytes([e, f, g, h]),
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
}

/// Forks a child that runs `command` as `program` on `stdio`. Returns its
/// pid and the read end of the exec status pipe (see [`exec_outcome`]).
pub fn fork_exec(
    command: &Command,
    program: &CStr,
    stdio: &ChildStdio,
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
    // SAFETY: fork has no memory preconditions. The child only runs
    // `child`, which makes async-signal-safe calls and never returns.
    let pid = unsafe { libc::fork() };
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

/// Waits for the child's exec: `None` when it succeeded, else the step that
/// failed.
pub async fn exec_outcome(pid: libc::pid_t, pipe: AsyncFd<OwnedFd>) -> Result<Option<ChildFailure>, SpawnError> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        let n = fdio::read(&pipe, &mut buf[got..])
            .await
            .map_err(|source| SpawnError::ReadStatus { pid, source })?;
        if n == 0 {
            break;
        }
        got += n;
    }
    match got {
        0 => Ok(None),
        8 => Ok(Some(ChildFailure::decode(buf))),
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
        // 5. The root filesystem, while still privileged.
        if let Some(root) = &plan.root {
            if let Err(step) = rootfs::enter(root) {
                fail(status_fd, step.into());
            }
        }
        // 6-8. Identity. Raw syscalls: they change only this (the only)
        //      thread, without libc's cross-thread broadcast.
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
        // 9. The working directory.
        if libc::chdir(plan.cwd) < 0 {
            fail(status_fd, Step::Cwd);
        }
        // 10. exec; the status pipe closes on success.
        libc::execve(plan.path, plan.argv, plan.envp);
        fail(status_fd, Step::Exec)
    }
}

/// Reports `step` with the current errno and exits with 127.
///
/// # Safety
/// Only in the forked child.
unsafe fn fail(status_fd: RawFd, step: Step) -> ! {
    // SAFETY: errno is thread-local and readable; write and _exit are
    // async-signal-safe; `buf` is a valid 8-byte buffer.
    unsafe {
        let errno = *libc::__errno_location();
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&(step as u32).to_le_bytes());
        buf[4..].copy_from_slice(&errno.to_le_bytes());
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
        let f = ChildFailure::decode([8, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(
            f,
            ChildFailure {
                step: Some(Step::Cwd),
                errno: libc::ENOENT
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
        };
        assert!(f
            .describe(&command, program)
            .starts_with("cannot exec \"/bin/x\": Permission denied"));
        for code in 1..=15 {
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
            let (pid, pipe) = fork_exec(&command, &program, &stdio).unwrap();
            let outcome = exec_outcome(pid, pipe).await.unwrap();
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
                errno: libc::ENOENT
            })
        );
        assert_eq!(status.code, Some(127));

        let (outcome, _) = run(ProcessSpec {
            args: vec!["/proc/self/status".into()],
            ..Default::default()
        });
        assert_eq!(outcome.map(|f| f.step), Some(Some(Step::Exec)));
    }
}
