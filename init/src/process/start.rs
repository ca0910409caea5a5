//! `Op::Start`: the streams set up, the process forked and exec'd, its
//! pumps and its supervisor started; and the start of a container's
//! process, forked at its creation and waiting before exec.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use agent_proto::{ExitStatus, ProcessId, Started};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::error::ProcessError;
use super::reaper::{self, RawStatus, Reaper};
use super::rootfs_status::{self, RootfsStatus};
use super::stdio::{AgentEnds, Stdio};
use super::streams;
use super::table::{Pending, Phase, Process, ProcessTable, State, NOT_STARTED};
use crate::child::namespaces::NsPlan;
use crate::child::spawn;
use crate::child::ContainerChild;
use crate::sys::timeline;

/// `Op::Start`. Answers once the exec has succeeded or failed.
pub async fn start(
    table: &Arc<ProcessTable>,
    reaper: &Reaper,
    rootfs: &watch::Receiver<RootfsStatus>,
    id: ProcessId,
) -> Result<Started, ProcessError> {
    let process = table.get(id)?;
    let mut state = process.state.lock().await;
    if matches!(&*state, State::Created(p) if p.command.root.is_some()) {
        let _span = timeline::begin(|| format!("process {id}: wait for the root filesystem"));
        if let Err(source) = rootfs_status::wait_ready(rootfs).await {
            return Err(ProcessError::NoRootfs { source });
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
    let span = timeline::begin(|| format!("process {id}: fork and exec {}", pending.command.program));
    let Launched {
        pid,
        program,
        status_pipe,
        master,
    } = match launch(table, reaper, &process, &mut pending) {
        Ok(launched) => launched,
        Err(e) => {
            // Never started: streams closed (by dropping `pending`), and a
            // wait reports 127 as for a failed exec.
            drop(state);
            table.finish(&process, NOT_STARTED);
            return Err(e);
        }
    };
    *state = State::Running { pid, master };
    drop(state);
    let outcome = spawn::exec_outcome(pid, &status_pipe).await;
    drop(span);
    match outcome {
        Ok(None) => {
            debug!("process {id}: started pid {pid}");
            Ok(Started { pid })
        }
        Ok(Some(failure)) => Err(failure.error(&pending.command, &program).into()),
        Err(source) => Err(ProcessError::Spawn { id, source }),
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
fn launch(
    table: &Arc<ProcessTable>,
    reaper: &Reaper,
    process: &Arc<Process>,
    pending: &mut Pending,
) -> Result<Launched, ProcessError> {
    let id = process.id;
    let program = pending.command.resolve_program()?;
    let attached = [0, 1, 2].map(|i| pending.streams[i].is_some());
    let stdio = Stdio::prepare(&pending.command, attached).map_err(|source| ProcessError::Stdio { id, source })?;
    // A process joining a container enters its namespaces and cgroup.
    let ns = match &pending.join {
        Some(join) => Some(NsPlan::for_exec(join.pid).map_err(|source| ProcessError::JoinContainer { source })?),
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
    let (pid, status_pipe, exited) = reaper
        .spawn(|| spawn::fork_exec(&pending.command, &program, &stdio.child, container.as_ref()))
        .map_err(|source| ProcessError::Spawn { id, source })?;
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
    tokio::spawn(supervise(table.clone(), process.clone(), exited, pumps));
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
    table: &Arc<ProcessTable>,
    process: &Arc<Process>,
    exited: oneshot::Receiver<RawStatus>,
    rx: oneshot::Receiver<Vec<JoinHandle<()>>>,
) {
    let table = table.clone();
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
        table.finish(&process, status);
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
        let source = std::io::Error::last_os_error();
        return Err(ProcessError::Start { id, pid, source });
    }
    drop(gate);
    *state = State::Running {
        pid,
        master: forked.stdio.master.take(),
    };
    drop(state);
    match spawn::exec_outcome(pid, &forked.status_pipe).await {
        Ok(None) => Ok(Started { pid }),
        Ok(Some(failure)) => Err(failure.error(&forked.command, &forked.program).into()),
        Err(source) => Err(ProcessError::Spawn { id, source }),
    }
}

/// Follows a started process to its end: reaped, then every output pump
/// finished, then done (waits answer) and, if its session is gone, forgotten.
async fn supervise(
    table: Arc<ProcessTable>,
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
    table.finish(&process, status);
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
