//! OCI hooks: programs the agent runs at points of a container's life,
//! each with the container's state JSON on its stdin.
//!
//! `createRuntime`, `poststart` and `poststop` run in the agent's
//! namespaces; `createContainer` joins the container's namespaces while
//! its process waits before `pivot_root` (so its path is still the
//! agent's); `startContainer` joins them all once the container is set up
//! (its path is inside the container). A hook's stdout and stderr
//! are collected and quoted when it fails.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use agent_proto::{Hook, ProcessSpec};

use super::namespaces::{Kind, NsPlan};
use crate::agent::Agent;
use crate::cgroup::Cgroup;
use crate::command::Command;
use crate::fdio;
use crate::reaper;
use crate::spawn::{self, ChildStdio, ContainerChild};

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

/// Runs `hooks` in order; the first failure ends the run, naming the hook.
pub async fn run_all(
    agent: &Arc<Agent>,
    hooks: &[Hook],
    stage: &str,
    state: &str,
    within: Option<InContainer<'_>>,
) -> Result<(), String> {
    for (i, hook) in hooks.iter().enumerate() {
        run_one(agent, hook, state, within.as_ref())
            .await
            .map_err(|e| format!("{stage} hook {i} ({}): {e}", hook.path))?;
    }
    Ok(())
}

async fn run_one(agent: &Arc<Agent>, hook: &Hook, state: &str, within: Option<&InContainer<'_>>) -> Result<(), String> {
    if !hook.path.starts_with('/') {
        return Err("the path is not absolute".into());
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
    })
    .map_err(|e| e.to_string())?;
    command.program = hook.path.clone();
    let program = command.resolve_program().map_err(|e| e.to_string())?;
    let ns = match within {
        Some(c) => {
            let mut ns = NsPlan::for_exec(c.pid).map_err(|e| e.to_string())?;
            if !c.mount {
                ns.in_child.retain(|j| j.kind != Kind::Mount);
            }
            Some(ns)
        }
        None => None,
    };
    let cgroup = match within.and_then(|c| c.cgroup) {
        Some(cgroup) => Some(cgroup.open_dir().map_err(|e| e.to_string())?),
        None => None,
    };
    let child = ns.as_ref().map(|ns| ContainerChild {
        ns,
        setup: None,
        gate: None,
        pause_before_pivot: false,
        cgroup: cgroup.as_ref().map(|fd| fd.as_raw_fd()),
    });
    let (stdin_read, stdin_write) = fdio::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let (out_read, out_write) = fdio::pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let stdio = ChildStdio {
        fds: [stdin_read.as_raw_fd(), out_write.as_raw_fd(), out_write.as_raw_fd()],
        controlling_terminal: false,
    };
    let (pid, status_pipe, exited) = agent.reaper.spawn(|| match &child {
        Some(c) => {
            c.ns.around_fork(|| spawn::fork_exec(&command, &program, &stdio, Some(c)))
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
        None => spawn::fork_exec(&command, &program, &stdio, None).map_err(|e| e.to_string()),
    })?;
    drop((stdin_read, out_write));
    match spawn::exec_outcome(pid, &status_pipe).await {
        Ok(None) => {}
        Ok(Some(failure)) => return Err(failure.describe(&command, &program)),
        Err(e) => return Err(e.to_string()),
    }
    // The state, then end-of-file. A hook that does not read it must not
    // block the agent: the pipe is non-blocking and a short write is fine.
    let _ = fdio::set_nonblocking(std::os::fd::AsFd::as_fd(&stdin_write));
    // SAFETY: a write from a valid buffer to our pipe.
    unsafe { libc::write(stdin_write.as_raw_fd(), state.as_ptr().cast(), state.len()) };
    drop(stdin_write);
    let timeout = hook.timeout.map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s.into()));
    let out = fdio::async_fd(out_read).map_err(|e| e.to_string())?;
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
            let _ = agent.reaper.kill(pid, libc::SIGKILL);
            return Err(format!("timed out after {} s", timeout.as_secs()));
        }
    };
    let output = String::from_utf8_lossy(&output);
    match status {
        Some(s) if s.code == Some(0) => Ok(()),
        Some(s) => Err(format!(
            "exited with status {}{}{}",
            s.shell_code(),
            if output.trim().is_empty() { "" } else { ": " },
            output.trim()
        )),
        None => Err("lost track of it".into()),
    }
}
