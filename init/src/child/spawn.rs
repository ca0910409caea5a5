//! fork + exec, with a close-on-exec error pipe so that the agent learns
//! exactly which step failed in the child.
//!
//! Everything the child needs is prepared before fork: after fork, in a
//! program that may have other threads, the child may only make
//! async-signal-safe calls (no allocation, no locks). It runs the steps in
//! order and on the first failure writes `(step, errno, detail)` to the
//! pipe and exits with 127 (`detail` says which rlimit or capability).
//! Reading end-of-file from the pipe means exec succeeded. The child's
//! side is `steps.rs`; what it reports, `failure.rs`.

use std::ffi::{c_char, CStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use super::command::Command;
use super::defaults;
use super::failure::ChildFailure;
use super::root::RootPlan;
use super::steps::{self, ChildPlan, ChildStdio, ContainerChild};
use crate::sys::fdio;

/// Why a child could not be forked, or its exec status not read.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The agent's thread could not enter a namespace the child joins.
    #[error("{source}")]
    Namespaces {
        /// Which namespace, and why.
        source: io::Error,
    },
    /// No pipe for the exec status.
    #[error("cannot create the exec status pipe: {source}")]
    StatusPipe {
        /// Why.
        source: io::Error,
    },
    /// `fork` (or `clone3`) failed.
    #[error("cannot fork: {source}")]
    Fork {
        /// Why.
        source: io::Error,
    },
    /// The exec status could not be read.
    #[error("cannot read the exec status of pid {pid}: {source}")]
    ReadStatus {
        /// The child.
        pid: libc::pid_t,
        /// Why.
        source: io::Error,
    },
    /// The child wrote something that is not an exec status.
    #[error("pid {pid} reported a malformed exec status ({len} bytes)")]
    Malformed {
        /// The child.
        pid: libc::pid_t,
        /// How many bytes it wrote.
        len: usize,
    },
}

/// Forks a child that runs `command` as `program` on `stdio`; a container's
/// child (or one joining a container) with the agent's thread in the
/// namespaces joined around the fork. Returns its pid and the read end of
/// the exec status pipe (see [`exec_outcome`]).
pub fn fork_exec(
    command: &Command,
    program: &CStr,
    stdio: &ChildStdio,
    container: Option<&ContainerChild<'_>>,
) -> Result<(libc::pid_t, AsyncFd<OwnedFd>), SpawnError> {
    match container {
        Some(c) => {
            c.ns.around_fork(|| fork(command, program, stdio, Some(c)))
                .map_err(|source| SpawnError::Namespaces { source })?
        }
        None => fork(command, program, stdio, None),
    }
}

/// [`fork_exec`] in the namespaces the thread is in.
fn fork(
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
        oom_reset: defaults::oom_score_adj(),
        rlimits: &command.security.rlimits,
        umask: command.security.umask,
        capabilities: command.security.capabilities,
        no_new_privileges: command.security.no_new_privileges,
        seccomp: command.seccomp.as_ref(),
        deny_vsock: !command.allow_vsock,
        drop_ptrace: command.drop_ptrace,
        fd_limit: defaults::fd_limit(),
        container,
    };
    let clone_flags = container.map_or(0, |c| c.ns.clone_flags);
    // A container's process in its cgroup; any other in the workloads'.
    let cgroup = match container {
        Some(c) => c.cgroup,
        None => defaults::processes_cgroup(),
    };
    let (status_read, status_write) = fdio::pipe().map_err(|source| SpawnError::StatusPipe { source })?;
    let status_read = fdio::async_fd(status_read).map_err(|source| SpawnError::StatusPipe { source })?;

    // Block every signal across fork, so that no handler of the agent runs
    // in the child before it has reset the dispositions.
    // SAFETY: zeroed sigset_t values are valid, then filled by the libc calls.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid sigset_t to fill.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: valid sigset pointers; pthread_sigmask only touches this thread.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut saved) };
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
        unsafe { steps::child(&plan, status_write.as_raw_fd()) }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::failure::Step;
    use agent_proto::ProcessSpec;

    /// Runs `spec`: what the child reported, and its exit code.
    fn run(spec: ProcessSpec) -> (Option<ChildFailure>, Option<i32>) {
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
            (outcome, libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)))
        })
    }

    #[test]
    fn exec_succeeds_or_reports_the_failed_step() {
        let sh = |script: &str| ProcessSpec {
            args: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        };
        let (outcome, code) = run(sh("exit 3"));
        assert_eq!(outcome, None);
        assert_eq!(code, Some(3));

        let mut spec = sh("exit 0");
        spec.cwd = Some("/nonexistent-dir".into());
        let (outcome, code) = run(spec);
        assert_eq!(
            outcome,
            Some(ChildFailure {
                step: Some(Step::Cwd),
                errno: libc::ENOENT,
                detail: 0,
            })
        );
        assert_eq!(code, Some(127));

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
        let (outcome, code) = run(spec);
        let failure = outcome.expect("the rlimit step fails");
        assert_eq!((failure.step, failure.detail), (Some(Step::Rlimit), 1));
        assert_eq!(code, Some(127));
        let msg = failure.describe(&command, c"sh");
        assert!(
            msg.starts_with(&format!("cannot set RLIMIT_NOFILE to 1024/{}: ", u64::MAX - 1)),
            "{msg}"
        );
    }
}
