//! OCI hooks: programs the agent runs at points of a container's life,
//! each with the container's state JSON on its stdin.
//!
//! `createRuntime`, `poststart` and `poststop` run in the agent's
//! namespaces; `createContainer` joins the container's namespaces while
//! its process waits before `pivot_root` (so its path is still the
//! agent's); `startContainer` joins them all once the container is set up
//! (its path is inside the container). A hook's stdout and stderr
//! are collected and quoted when it fails.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use agent_proto::{Hook, ProcessSpec};

use super::cgroup::{Cgroup, CgroupError};
use crate::child::command::{Command, NotFound, SpecError};
use crate::child::failure::ExecError;
use crate::child::namespaces::{Kind, NamespaceError, NsPlan};
use crate::child::spawn::{self, SpawnError};
use crate::child::{ChildStdio, ContainerChild};
use crate::process::reaper::{self, Reaper};
use crate::sys::fdio;

/// A hook without a timeout may run this long.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How much of a failed hook's output is quoted.
const OUTPUT_KEPT: usize = 2048;

/// Where a hook runs, when not in the agent's namespaces.
pub struct InContainer<'a> {
    /// The container's process, whose namespaces the hook joins.
    pub pid: libc::pid_t,
    pub cgroup: Option<&'a Cgroup>,
    /// Join its mount namespace too (the hook's path is then inside it).
    pub mount: bool,
}

/// A hook that failed, named by its stage and its place in the list.
#[derive(Debug, thiserror::Error)]
#[error("{stage} hook {index} ({path}): {source}")]
pub struct HookError {
    /// `createRuntime`, `createContainer`, `startContainer`, `poststart`
    /// or `poststop`.
    pub stage: &'static str,
    /// Its index in the stage's list.
    pub index: usize,
    /// Its path.
    pub path: String,
    /// What went wrong.
    #[source]
    pub source: Box<HookFailure>,
}

/// What went wrong with one hook.
#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    /// Its path is relative.
    #[error("the path is not absolute")]
    NotAbsolute,
    /// Its arguments or environment are refused.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// Its program is not there.
    #[error(transparent)]
    NotFound(#[from] NotFound),
    /// The container's namespaces cannot be entered.
    #[error(transparent)]
    Namespaces(#[from] NamespaceError),
    /// The container's cgroup cannot be opened.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// No pipe for its stdin or its output.
    #[error("cannot create a pipe: {0}")]
    Pipe(#[source] io::Error),
    /// It could not be forked, or its exec status not read.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// Its child failed before exec.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Its output cannot be read.
    #[error("{0}")]
    Output(#[source] io::Error),
    /// It ran past its timeout and was killed.
    #[error("timed out after {secs} s")]
    TimedOut {
        /// The timeout, in seconds.
        secs: u64,
    },
    /// It exited with a status other than 0.
    #[error("exited with status {status}{}", quoted(.output))]
    Exited {
        /// Its status as a shell gives it (128+N when killed by signal N).
        status: i32,
        /// Its stdout and stderr, trimmed, at most 2 KiB.
        output: String,
    },
    /// The reaper did not report its end.
    #[error("lost track of it")]
    Lost,
}

/// `: OUTPUT`, or nothing when there is no output.
fn quoted(output: &str) -> String {
    if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    }
}

/// Runs `hooks` in order; the first failure ends the run, naming the hook.
pub async fn run_all(
    reaper: &Reaper,
    hooks: &[Hook],
    stage: &'static str,
    state: &str,
    within: Option<InContainer<'_>>,
) -> Result<(), HookError> {
    for (index, hook) in hooks.iter().enumerate() {
        run_one(reaper, hook, state, within.as_ref())
            .await
            .map_err(|source| HookError {
                stage,
                index,
                path: hook.path.clone(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

async fn run_one(
    reaper: &Reaper,
    hook: &Hook,
    state: &str,
    within: Option<&InContainer<'_>>,
) -> Result<(), HookFailure> {
    if !hook.path.starts_with('/') {
        return Err(HookFailure::NotAbsolute);
    }
    let args = if hook.args.is_empty() {
        vec![hook.path.clone()]
    } else {
        hook.args.clone()
    };
    let mut command = Command::from_spec(ProcessSpec {
        args,
        env: hook.env.clone(),
        ..Default::default()
    })?;
    command.program = hook.path.clone();
    let program = command.resolve_program()?;
    let ns = match within {
        Some(c) => {
            let mut ns = NsPlan::for_exec(c.pid)?;
            if !c.mount {
                ns.in_child.retain(|j| j.kind != Kind::Mount);
            }
            Some(ns)
        }
        None => None,
    };
    let cgroup = match within.and_then(|c| c.cgroup) {
        Some(cgroup) => Some(cgroup.open_dir()?),
        None => None,
    };
    let child = ns.as_ref().map(|ns| ContainerChild {
        ns,
        setup: None,
        gate: None,
        pause_before_pivot: false,
        cgroup: cgroup.as_ref().map(|fd| fd.as_raw_fd()),
    });
    let (stdin_read, stdin_write) = fdio::pipe().map_err(HookFailure::Pipe)?;
    let (out_read, out_write) = fdio::pipe().map_err(HookFailure::Pipe)?;
    let stdio = ChildStdio {
        fds: [stdin_read.as_raw_fd(), out_write.as_raw_fd(), out_write.as_raw_fd()],
        controlling_terminal: false,
    };
    let (pid, status_pipe, exited) = reaper.spawn(|| spawn::fork_exec(&command, &program, &stdio, child.as_ref()))?;
    drop((stdin_read, out_write));
    if let Some(failure) = spawn::exec_outcome(pid, &status_pipe).await? {
        return Err(failure.error(&command, &program).into());
    }
    // The state, then end-of-file. A hook that does not read it must not
    // block the agent: the pipe is non-blocking and a short write is fine.
    let _ = fdio::set_nonblocking(std::os::fd::AsFd::as_fd(&stdin_write));
    // SAFETY: a write from a valid buffer to our pipe.
    unsafe { libc::write(stdin_write.as_raw_fd(), state.as_ptr().cast(), state.len()) };
    drop(stdin_write);
    let timeout = hook.timeout.map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s.into()));
    let out = fdio::async_fd(out_read).map_err(HookFailure::Output)?;
    let collect = async {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = fdio::read(&out, &mut buf).await {
            if n == 0 {
                break;
            }
            let room = OUTPUT_KEPT.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
        let status = exited.await.map(reaper::decode).ok();
        (kept, status)
    };
    let (output, status) = match tokio::time::timeout(timeout, collect).await {
        Ok(done) => done,
        Err(_) => {
            let _ = reaper.kill(pid, libc::SIGKILL);
            return Err(HookFailure::TimedOut {
                secs: timeout.as_secs(),
            });
        }
    };
    let output = String::from_utf8_lossy(&output);
    match status {
        Some(s) if s.code == Some(0) => Ok(()),
        Some(s) => Err(HookFailure::Exited {
            status: s.shell_code(),
            output: output.trim().to_owned(),
        }),
        None => Err(HookFailure::Lost),
    }
}
