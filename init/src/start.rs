//! `Op::Start`: the streams set up, the process forked and exec'd, its
//! pumps and its supervisor started.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use agent_proto::{ExitStatus, ProcessId, Started};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::agent::Agent;
use crate::command::Command;
use crate::fdio;
use crate::process::{Pending, Phase, Process, ProcessError, State};
use crate::pty::{self, PtyError};
use crate::reaper::{self, RawStatus};
use crate::spawn::{self, ChildStdio};
use crate::streams;

/// The status a process gets when it could not be started at all, as if
/// its exec had failed (the shell's "not found").
const NOT_STARTED: ExitStatus = ExitStatus {
    code: Some(127),
    signal: None,
};

#[derive(Debug, thiserror::Error)]
enum StdioError {
    #[error("cannot create a pipe for {stream}: {source}")]
    Pipe {
        stream: &'static str,
        source: std::io::Error,
    },
    #[error("cannot open /dev/null: {source}")]
    DevNull { source: std::io::Error },
    #[error("cannot open a terminal: {0}")]
    Pty(#[from] PtyError),
    #[error("cannot watch the {stream} descriptor: {source}")]
    Register {
        stream: &'static str,
        source: std::io::Error,
    },
}

/// A process's stdio before fork: the child's ends (closed in the agent
/// right after fork) and the agent's ends (pumped).
struct Stdio {
    child_ends: Vec<OwnedFd>,
    child: ChildStdio,
    stdin: Option<AsyncFd<OwnedFd>>,
    /// With a terminal, always present: the terminal must be drained.
    stdout: Option<AsyncFd<OwnedFd>>,
    stderr: Option<AsyncFd<OwnedFd>>,
    master: Option<OwnedFd>,
}

impl Stdio {
    /// Pipes for the attached streams, `/dev/null` for the others, or one
    /// terminal for all three.
    fn prepare(command: &Command, attached: [bool; 3]) -> Result<Stdio, StdioError> {
        if command.terminal {
            return Stdio::terminal(command, attached[0]);
        }
        let mut stdio = Stdio {
            child_ends: Vec::new(),
            child: ChildStdio {
                fds: [-1; 3],
                controlling_terminal: false,
            },
            stdin: None,
            stdout: None,
            stderr: None,
            master: None,
        };
        let mut null: Option<OwnedFd> = None;
        for (i, stream) in ["stdin", "stdout", "stderr"].into_iter().enumerate() {
            if !attached[i] {
                if null.is_none() {
                    null = Some(fdio::open_dev_null().map_err(|source| StdioError::DevNull { source })?);
                }
                stdio.child.fds[i] = null.as_ref().map_or(-1, |n| n.as_raw_fd());
                continue;
            }
            let (read, write) = fdio::pipe().map_err(|source| StdioError::Pipe { stream, source })?;
            let (child_end, ours) = if i == 0 { (read, write) } else { (write, read) };
            stdio.child.fds[i] = child_end.as_raw_fd();
            stdio.child_ends.push(child_end);
            let ours = Some(fdio::async_fd(ours).map_err(|source| StdioError::Register { stream, source })?);
            match i {
                0 => stdio.stdin = ours,
                1 => stdio.stdout = ours,
                _ => stdio.stderr = ours,
            }
        }
        stdio.child_ends.extend(null);
        Ok(stdio)
    }

    fn terminal(command: &Command, stdin_attached: bool) -> Result<Stdio, StdioError> {
        let pty = pty::open(command.size)?;
        let dup_async = |stream| {
            fdio::dup(pty.master.as_fd())
                .and_then(fdio::async_fd)
                .map_err(|source| StdioError::Register { stream, source })
        };
        let stdout = Some(dup_async("terminal output")?);
        let stdin = if stdin_attached {
            Some(dup_async("terminal input")?)
        } else {
            None
        };
        let slave: RawFd = pty.slave.as_raw_fd();
        Ok(Stdio {
            child: ChildStdio {
                fds: [slave; 3],
                controlling_terminal: true,
            },
            child_ends: vec![pty.slave],
            stdin,
            stdout,
            stderr: None,
            master: Some(pty.master),
        })
    }
}

/// `Op::Start`. Answers once the exec has succeeded or failed.
pub async fn start(agent: &Arc<Agent>, id: ProcessId) -> Result<Started, ProcessError> {
    if agent.shutting_down() {
        return Err(ProcessError::ShuttingDown);
    }
    let process = agent.processes.get(id)?;
    let mut state = process.state.lock().await;
    if matches!(&*state, State::Created(p) if p.command.root.is_some()) {
        if let Err(e) = crate::rootfs::wait_ready(&agent.rootfs).await {
            return Err(ProcessError::ExecFailed {
                message: format!("the root filesystem is not available: {e}"),
            });
        }
    }
    let mut pending = match std::mem::replace(&mut *state, State::Ended) {
        State::Created(pending) => pending,
        other => {
            *state = other;
            return Err(ProcessError::InvalidState {
                id,
                why: "has already been started",
            });
        }
    };
    let Launched {
        pid,
        program,
        status_pipe,
        master,
    } = match launch(agent, &process, &mut pending) {
        Ok(launched) => launched,
        Err(e) => {
            // Never started: streams closed (by dropping `pending`), and a
            // wait reports 127 as for a failed exec.
            drop(state);
            agent.processes.finish(&process, NOT_STARTED);
            return Err(e);
        }
    };
    *state = State::Running { pid, master };
    drop(state);
    match spawn::exec_outcome(pid, status_pipe).await {
        Ok(None) => {
            debug!("process {id}: started pid {pid}");
            Ok(Started { pid })
        }
        Ok(Some(failure)) => Err(ProcessError::ExecFailed {
            message: failure.describe(&pending.command, &program),
        }),
        Err(e) => Err(ProcessError::Internal {
            id,
            message: e.to_string(),
        }),
    }
}

/// A forked process, as [`launch`] leaves it.
struct Launched {
    pid: libc::pid_t,
    program: CString,
    status_pipe: AsyncFd<OwnedFd>,
    master: Option<OwnedFd>,
}

/// Sets up the streams, forks, and starts the pumps and the supervisor.
/// On success the process is running; the caller records its state.
fn launch(agent: &Arc<Agent>, process: &Arc<Process>, pending: &mut Pending) -> Result<Launched, ProcessError> {
    let id = process.id;
    let program = pending
        .command
        .resolve_program()
        .map_err(|e| ProcessError::ExecFailed { message: e.to_string() })?;
    let attached = [0, 1, 2].map(|i| pending.streams[i].is_some());
    let stdio = Stdio::prepare(&pending.command, attached).map_err(|e| ProcessError::Internal {
        id,
        message: e.to_string(),
    })?;
    let (pid, status_pipe, exited) = agent
        .reaper
        .spawn(|| spawn::fork_exec(&pending.command, &program, &stdio.child))
        .map_err(|e| ProcessError::Internal {
            id,
            message: e.to_string(),
        })?;
    process.phase.send_replace(Phase::Running);
    let Stdio {
        child_ends,
        stdin,
        stdout,
        stderr,
        master,
        ..
    } = stdio;
    drop(child_ends);

    let mut pumps = Vec::with_capacity(2);
    if let Some(fd) = stdout {
        let conn = pending.streams[1].take();
        pumps.push(tokio::spawn(streams::pump_output(
            fd,
            conn,
            format!("stdout of process {id}"),
            process.phase.subscribe(),
        )));
    }
    if let Some(fd) = stderr {
        let conn = pending.streams[2].take();
        pumps.push(tokio::spawn(streams::pump_output(
            fd,
            conn,
            format!("stderr of process {id}"),
            process.phase.subscribe(),
        )));
    }
    if let (Some(fd), Some(conn)) = (stdin, pending.streams[0].take()) {
        tokio::spawn(streams::pump_input(
            conn,
            fd,
            pending.command.terminal,
            process.phase.subscribe(),
        ));
    }
    tokio::spawn(supervise(agent.clone(), process.clone(), exited, pumps));
    Ok(Launched {
        pid,
        program,
        status_pipe,
        master,
    })
}

/// Follows a started process to its end: reaped, then every output pump
/// finished, then done (waits answer) and, if its session is gone, forgotten.
async fn supervise(
    agent: Arc<Agent>,
    process: Arc<Process>,
    exited: oneshot::Receiver<RawStatus>,
    pumps: Vec<JoinHandle<()>>,
) {
    let status = match exited.await {
        Ok(raw) => reaper::decode(raw),
        Err(_) => ExitStatus {
            code: None,
            signal: None,
        },
    };
    process.phase.send_replace(Phase::Exited(status));
    for pump in pumps {
        let _ = pump.await;
    }
    *process.state.lock().await = State::Ended;
    agent.processes.finish(&process, status);
    debug!("process {}: done, {status:?}", process.id);
}
