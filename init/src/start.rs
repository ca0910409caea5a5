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
use crate::container::namespaces::NsPlan;
use crate::fdio;
use crate::process::{Pending, Phase, Process, ProcessError, State};
use crate::pty::{self, PtyError};
use crate::reaper::{self, RawStatus};
use crate::spawn::{self, ChildStdio, ContainerChild};
use crate::streams;

/// The status a process gets when it could not be started at all, as if
/// its exec had failed (the shell's "not found").
const NOT_STARTED: ExitStatus = ExitStatus {
    code: Some(127),
    signal: None,
};

#[derive(Debug, thiserror::Error)]
pub enum StdioError {
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
pub struct Stdio {
    pub child_ends: Vec<OwnedFd>,
    pub child: ChildStdio,
    stdin: Option<AsyncFd<OwnedFd>>,
    /// With a terminal, always present: the terminal must be drained.
    stdout: Option<AsyncFd<OwnedFd>>,
    stderr: Option<AsyncFd<OwnedFd>>,
    master: Option<OwnedFd>,
}

/// The agent's ends of a forked process's stdio, kept until its start.
pub struct AgentEnds {
    pub stdin: Option<AsyncFd<OwnedFd>>,
    pub stdout: Option<AsyncFd<OwnedFd>>,
    pub stderr: Option<AsyncFd<OwnedFd>>,
    pub master: Option<OwnedFd>,
}

impl Stdio {
    /// For a container's process, forked before anything can attach: pipes
    /// for all three streams (or one terminal).
    pub fn for_container(command: &Command) -> Result<Stdio, String> {
        Stdio::prepare(command, [true; 3]).map_err(|e| e.to_string())
    }

    /// Splits off the agent's ends (after fork, with the child's closed).
    pub fn agent_ends(self) -> (Vec<OwnedFd>, AgentEnds) {
        (
            self.child_ends,
            AgentEnds {
                stdin: self.stdin,
                stdout: self.stdout,
                stderr: self.stderr,
                master: self.master,
            },
        )
    }
}

impl Stdio {
    /// Pipes for the attached streams, `/dev/null` for the others, or one
    /// terminal for all three.
    pub fn prepare(command: &Command, attached: [bool; 3]) -> Result<Stdio, StdioError> {
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
        // A process joining a container gets a terminal of the container's
        // devpts where it has one (so that `tty` names it), else the agent's.
        let pty = match command.root.as_deref().filter(|r| r.starts_with("/proc/")) {
            Some(root) => pty::open_in_root(root, command.size).or_else(|e| {
                debug!("no terminal from the container's devpts ({e}): the agent's");
                pty::open(command.size)
            })?,
            None => pty::open(command.size)?,
        };
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
    match spawn::exec_outcome(pid, &status_pipe).await {
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
    // A process joining a container enters its namespaces and cgroup.
    let ns = match &pending.join {
        Some(join) => Some(NsPlan::for_exec(join.pid).map_err(|e| ProcessError::ExecFailed {
            message: format!("cannot join the container: {e}"),
        })?),
        None => None,
    };
    let container = ns.as_ref().map(|ns| ContainerChild {
        ns,
        setup: None,
        gate: None,
        pause_before_pivot: false,
        cgroup: pending
            .join
            .as_ref()
            .and_then(|j| j.cgroup.as_ref())
            .map(|fd| fd.as_raw_fd()),
    });
    let (pid, status_pipe, exited) = agent
        .reaper
        .spawn(|| match &container {
            Some(child) => child
                .ns
                .around_fork(|| spawn::fork_exec(&pending.command, &program, &stdio.child, Some(child)))
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string()),
            None => spawn::fork_exec(&pending.command, &program, &stdio.child, None).map_err(|e| e.to_string()),
        })
        .map_err(|message| ProcessError::Internal { id, message })?;
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

    let ends = AgentEnds {
        stdin,
        stdout,
        stderr,
        master: None,
    };
    let pumps = start_pumps(process, ends, &mut pending.streams, pending.command.terminal);
    tokio::spawn(supervise(agent.clone(), process.clone(), exited, pumps));
    Ok(Launched {
        pid,
        program,
        status_pipe,
        master,
    })
}

/// Starts the pumps of a process's stdio: each output to its attached
/// connection (or drained), stdin from its connection (or closed).
fn start_pumps(
    process: &Arc<Process>,
    ends: AgentEnds,
    streams: &mut [Option<agent_proto::Conn>; 3],
    terminal: bool,
) -> Vec<JoinHandle<()>> {
    let id = process.id;
    let mut pumps = Vec::with_capacity(2);
    if let Some(fd) = ends.stdout {
        pumps.push(tokio::spawn(streams::pump_output(
            fd,
            streams[1].take(),
            format!("stdout of process {id}"),
            process.phase.subscribe(),
        )));
    }
    if let Some(fd) = ends.stderr {
        pumps.push(tokio::spawn(streams::pump_output(
            fd,
            streams[2].take(),
            format!("stderr of process {id}"),
            process.phase.subscribe(),
        )));
    }
    if let (Some(fd), Some(conn)) = (ends.stdin, streams[0].take()) {
        tokio::spawn(streams::pump_input(conn, fd, terminal, process.phase.subscribe()));
    }
    pumps
}

/// Follows a container's process from its fork: reaped, then (once it was
/// started) every output pump finished, then done. The pumps come through
/// `rx` at the start; dropping its sender (a container deleted
/// before its start) means there are none.
pub fn supervise_forked(
    agent: &Arc<Agent>,
    process: &Arc<Process>,
    exited: oneshot::Receiver<RawStatus>,
    rx: oneshot::Receiver<Vec<JoinHandle<()>>>,
) {
    let agent = agent.clone();
    let process = process.clone();
    tokio::spawn(async move {
        let status = reaped(exited).await;
        process.phase.send_replace(Phase::Exited(status));
        let never_started = {
            let mut state = process.state.lock().await;
            // Ended before its start: nothing was pumped; dropping it
            // closes its pipes and its gate.
            let forked = matches!(&*state, State::Forked(_));
            if forked {
                *state = State::Ended;
            }
            forked
        };
        if !never_started {
            for pump in rx.await.unwrap_or_default() {
                let _ = pump.await;
            }
            *process.state.lock().await = State::Ended;
        }
        agent.processes.finish(&process, status);
        debug!("container process {}: done, {status:?}", process.id);
    });
}

/// Starts a container's forked process: its pumps, then the byte through
/// its gate; answers once its exec has succeeded or failed.
pub async fn start_forked(process: &Arc<Process>) -> Result<Started, ProcessError> {
    let id = process.id;
    let mut state = process.state.lock().await;
    let forked = match std::mem::replace(&mut *state, State::Ended) {
        State::Forked(forked) => forked,
        other => {
            *state = other;
            return Err(ProcessError::InvalidState {
                id,
                why: "is not waiting for its start",
            });
        }
    };
    let mut forked = *forked;
    let pumps = start_pumps(
        process,
        AgentEnds {
            stdin: forked.stdio.stdin.take(),
            stdout: forked.stdio.stdout.take(),
            stderr: forked.stdio.stderr.take(),
            master: None,
        },
        &mut forked.streams,
        forked.command.terminal,
    );
    let _ = forked.pumps.send(pumps);
    let pid = forked.pid;
    let gate = forked.gate;
    // SAFETY: a one-byte write from a valid buffer to our pipe.
    let written = unsafe { libc::write(gate.as_raw_fd(), b"s".as_ptr().cast(), 1) };
    if written != 1 {
        return Err(ProcessError::Internal {
            id,
            message: format!("cannot start pid {pid}: {}", std::io::Error::last_os_error()),
        });
    }
    drop(gate);
    *state = State::Running {
        pid,
        master: forked.stdio.master.take(),
    };
    drop(state);
    match spawn::exec_outcome(pid, &forked.status_pipe).await {
        Ok(None) => Ok(Started { pid }),
        Ok(Some(failure)) => Err(ProcessError::ExecFailed {
            message: failure.describe(&forked.command, &forked.program),
        }),
        Err(e) => Err(ProcessError::Internal {
            id,
            message: e.to_string(),
        }),
    }
}

/// Follows a started process to its end: reaped, then every output pump
/// finished, then done (waits answer) and, if its session is gone, forgotten.
async fn supervise(
    agent: Arc<Agent>,
    process: Arc<Process>,
    exited: oneshot::Receiver<RawStatus>,
    pumps: Vec<JoinHandle<()>>,
) {
    let status = reaped(exited).await;
    process.phase.send_replace(Phase::Exited(status));
    for pump in pumps {
        let _ = pump.await;
    }
    *process.state.lock().await = State::Ended;
    agent.processes.finish(&process, status);
    debug!("process {}: done, {status:?}", process.id);
}

/// How a process ended, once the reaper has it (neither code nor signal if
/// the reaper went away).
async fn reaped(exited: oneshot::Receiver<RawStatus>) -> ExitStatus {
    match exited.await {
        Ok(raw) => reaper::decode(raw),
        Err(_) => ExitStatus {
            code: None,
            signal: None,
        },
    }
}
