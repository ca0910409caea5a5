//! The process table and the operations on one process: create, attach a
//! stream, wait, signal, resize. Starting is in `start.rs`.
//!
//! A process moves through [`Phase`]s: created → running → exited (reaped)
//! → done (every output stream delivered its last byte). It is forgotten
//! once done and waited for. It belongs to the control session that created
//! it: when that session closes, processes never started are dropped,
//! finished ones are forgotten, and running ones are forgotten as soon as
//! they are done.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_proto::{
    write_frame, AttachReply, Conn, Created, ExitStatus, ProcessId, ProcessSpec, StreamKind, WindowSize,
};
use tokio::sync::watch;

use super::error::ProcessError;
use super::reaper::Reaper;
use super::stdio::AgentEnds;
use crate::child::command::Command;
use crate::sys::pty;

/// A control session's number, to tell which processes it owns.
pub type SessionId = u64;

/// How long an attach reply may take to write before the stream is dropped.
const ATTACH_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The status a process gets when it was never started (its exec failed
/// before it began, or its session closed before its start), as if its
/// exec had failed: the shell's "not found".
pub(super) const NOT_STARTED: ExitStatus = ExitStatus {
    code: Some(127),
    signal: None,
};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Running,
    /// Reaped; output may still be in flight.
    Exited(ExitStatus),
    /// Reaped and every attached output stream closed: what waits report.
    Done(ExitStatus),
}

impl Phase {
    pub fn has_exited(&self) -> bool {
        matches!(self, Phase::Exited(_) | Phase::Done(_))
    }
}

/// A created process waiting for its start.
pub struct Pending {
    pub command: Command,
    /// The attached connections, by [`stream_index`].
    pub streams: [Option<Conn>; 3],
    /// The container it joins, if any.
    pub join: Option<ContainerJoin>,
}

/// A container a process joins at its start: every namespace of the
/// container's process, and its cgroup.
pub struct ContainerJoin {
    pub pid: libc::pid_t,
    /// The container's cgroup directory, open: the process is born in it.
    pub cgroup: Option<OwnedFd>,
}

/// A container's process: forked and set up, waiting before exec for its
/// start, its stdio already made (pipes or a terminal) and its streams
/// attachable.
pub struct Forked {
    pub command: Command,
    pub program: std::ffi::CString,
    pub streams: [Option<Conn>; 3],
    pub pid: libc::pid_t,
    /// The agent's ends of the process's stdio.
    pub stdio: AgentEnds,
    /// The child's status pipe: its exec outcome comes after the start.
    pub status_pipe: tokio::io::unix::AsyncFd<OwnedFd>,
    /// The write end of the child's gate: one byte starts it.
    pub gate: OwnedFd,
    /// Hands the pumps to the process's supervisor at the start.
    pub pumps: tokio::sync::oneshot::Sender<Vec<tokio::task::JoinHandle<()>>>,
}

/// The resources of a process, behind its lock.
pub enum State {
    Created(Box<Pending>),
    /// A container's process before its start.
    Forked(Box<Forked>),
    /// Started and not yet done; `master` is the terminal, if any.
    Running {
        pid: libc::pid_t,
        master: Option<OwnedFd>,
    },
    Ended,
}

/// One managed process.
pub struct Process {
    pub id: ProcessId,
    session: SessionId,
    /// Held only briefly (and across fork), never across a wait for the
    /// process, so that signals and resizes always get through.
    pub state: tokio::sync::Mutex<State>,
    pub phase: watch::Sender<Phase>,
    /// Its session has closed: forget it once done.
    orphaned: AtomicBool,
    /// Kept after it is waited for, until its container is deleted.
    retained: bool,
}

/// The index of a stream in [`Pending::streams`] (and the child's fd).
pub fn stream_index(stream: StreamKind) -> usize {
    match stream {
        StreamKind::Stdin => 0,
        StreamKind::Stdout => 1,
        StreamKind::Stderr => 2,
    }
}

/// Every process the agent has not forgotten.
pub struct ProcessTable {
    entries: Mutex<HashMap<ProcessId, Arc<Process>>>,
    next_id: AtomicU64,
}

impl Default for ProcessTable {
    fn default() -> Self {
        ProcessTable {
            entries: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }
}

impl ProcessTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<ProcessId, Arc<Process>>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn get(&self, id: ProcessId) -> Result<Arc<Process>, ProcessError> {
        self.lock().get(&id).cloned().ok_or(ProcessError::NotFound { id })
    }

    /// How many processes have not been forgotten.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no process is running or delivering output.
    pub fn all_done(&self) -> bool {
        self.lock()
            .values()
            .all(|p| matches!(*p.phase.borrow(), Phase::Created | Phase::Done(_)))
    }

    /// Forgets or orphans the processes of a closed session. One never
    /// started is done as [`NOT_STARTED`]: a wait on it from another
    /// session answers.
    pub fn session_closed(&self, session: SessionId) {
        self.lock().retain(|_, p| {
            if p.session != session {
                return true;
            }
            let phase = *p.phase.borrow();
            match phase {
                Phase::Created => {
                    p.phase.send_replace(Phase::Done(NOT_STARTED));
                    false
                }
                Phase::Done(_) => false,
                Phase::Running | Phase::Exited(_) => {
                    p.orphaned.store(true, Ordering::SeqCst);
                    true
                }
            }
        });
    }

    /// Forgets a process.
    pub fn forget(&self, id: ProcessId) {
        self.lock().remove(&id);
    }

    /// Publishes the final status (waits return it) and forgets the process
    /// if its session is gone. One lock with [`Self::session_closed`]: no
    /// process is missed by both.
    pub fn finish(&self, process: &Process, status: ExitStatus) {
        let mut entries = self.lock();
        process.phase.send_replace(Phase::Done(status));
        if process.orphaned.load(Ordering::SeqCst) {
            entries.remove(&process.id);
        }
    }
}

/// `Op::Create`: checks the spec and adds a created process.
pub fn create(table: &ProcessTable, session: SessionId, spec: ProcessSpec) -> Result<Created, ProcessError> {
    create_process(table, session, spec, None)
}

/// `Op::ExecContainer`: a created process that joins a container.
pub fn create_joined(
    table: &ProcessTable,
    session: SessionId,
    spec: ProcessSpec,
    join: ContainerJoin,
) -> Result<Created, ProcessError> {
    create_process(table, session, spec, Some(join))
}

fn create_process(
    table: &ProcessTable,
    session: SessionId,
    spec: ProcessSpec,
    join: Option<ContainerJoin>,
) -> Result<Created, ProcessError> {
    let mut command = Command::from_spec(spec)?;
    // A process of the host's in the agent's PID namespace, its
    // capabilities left to the agent: without CAP_SYS_PTRACE, which would
    // reach the agent's memory (docs/security.md).
    command.drop_ptrace =
        join.is_none() && command.security.capabilities.is_none() && crate::child::defaults::ptrace_to_drop();
    let id = table.next_id.fetch_add(1, Ordering::Relaxed);
    let process = Process {
        id,
        session,
        state: tokio::sync::Mutex::new(State::Created(Box::new(Pending {
            command,
            streams: [None, None, None],
            join,
        }))),
        phase: watch::Sender::new(Phase::Created),
        orphaned: AtomicBool::new(false),
        retained: false,
    };
    table.lock().insert(id, Arc::new(process));
    Ok(Created { process: id })
}

impl ProcessTable {
    /// Adds a container's process: it belongs to no session, is running
    /// as far as waits go (it exists, set up), and stays until
    /// [`ProcessTable::forget`].
    pub fn insert_forked(&self, forked: Forked) -> Arc<Process> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let process = Arc::new(Process {
            id,
            session: CONTAINER_SESSION,
            state: tokio::sync::Mutex::new(State::Forked(Box::new(forked))),
            phase: watch::Sender::new(Phase::Running),
            orphaned: AtomicBool::new(false),
            retained: true,
        });
        self.lock().insert(id, process.clone());
        process
    }
}

/// The session of containers' processes: none closes it.
pub const CONTAINER_SESSION: SessionId = 0;

/// An attach that was refused: the connection, to be told why and closed.
pub struct AttachRefused {
    /// The stream's connection, not answered yet.
    pub conn: Conn,
    /// Why.
    pub error: ProcessError,
}

/// `Open::Attach`: on success answers `AttachReply::Ok` on `conn` and
/// keeps the connection for the process's start; on error hands the
/// connection back, unanswered, with the reason.
pub async fn attach(
    table: &ProcessTable,
    id: ProcessId,
    stream: StreamKind,
    mut conn: Conn,
) -> Result<(), AttachRefused> {
    let refused = |conn, error| Err(AttachRefused { conn, error });
    let process = match table.get(id) {
        Ok(process) => process,
        Err(e) => return refused(conn, e),
    };
    let mut state = process.state.lock().await;
    let (command, streams) = match &mut *state {
        State::Created(pending) => (&pending.command, &mut pending.streams),
        State::Forked(forked) => (&forked.command, &mut forked.streams),
        _ => {
            let why = "has been started: streams can only be attached between create and start";
            return refused(conn, ProcessError::InvalidState { id, why });
        }
    };
    if stream == StreamKind::Stderr && command.terminal {
        let why = "has a terminal: its stderr is on the terminal, attach stdout";
        return refused(conn, ProcessError::InvalidState { id, why });
    }
    let slot = &mut streams[stream_index(stream)];
    if slot.is_some() {
        let why = match stream {
            StreamKind::Stdin => "already has stdin attached",
            StreamKind::Stdout => "already has stdout attached",
            StreamKind::Stderr => "already has stderr attached",
        };
        return refused(conn, ProcessError::InvalidState { id, why });
    }
    // The reply is written while the process is locked, so that a start
    // cannot send stream bytes before it.
    let written = tokio::time::timeout(ATTACH_REPLY_TIMEOUT, write_frame(&mut conn, &AttachReply::Ok(()))).await;
    match written {
        Ok(Ok(())) => {
            debug!("process {id}: {} attached", stream.name());
            *slot = Some(conn);
        }
        _ => debug!("process {id}: the {} stream went away during attach", stream.name()),
    }
    Ok(())
}

/// `Op::Wait`: the exit status, once the process is done. A process not
/// started yet is waited for through its start, so that a host can send
/// the wait beside the start instead of after its answer.
pub async fn wait(table: &ProcessTable, id: ProcessId) -> Result<ExitStatus, ProcessError> {
    let process = table.get(id)?;
    let mut phase = process.phase.subscribe();
    let done = phase.wait_for(|p| matches!(p, Phase::Done(_))).await;
    match done.as_deref() {
        Ok(Phase::Done(status)) => {
            // Waited for: forgotten (unless a container keeps it). Waits
            // already outstanding hold the process and get the same
            // answer; later ones get NotFound.
            if !process.retained {
                table.forget(id);
            }
            Ok(*status)
        }
        _ => Err(ProcessError::Lost { id }),
    }
}

/// `Op::Signal`. A process that has already exited is not an error: the
/// host cannot avoid that race, and the signal has nothing left to do.
pub async fn signal(table: &ProcessTable, reaper: &Reaper, id: ProcessId, signal: i32) -> Result<(), ProcessError> {
    if !(1..=64).contains(&signal) {
        return Err(ProcessError::BadSignal { signal });
    }
    let process = table.get(id)?;
    let state = process.state.lock().await;
    match &*state {
        State::Created(_) => Err(ProcessError::InvalidState {
            id,
            why: "has not been started",
        }),
        State::Running { pid, .. } => match reaper.kill(*pid, signal) {
            Ok(_) => Ok(()),
            Err(source) => Err(ProcessError::Signal { id, source }),
        },
        State::Forked(forked) => match reaper.kill(forked.pid, signal) {
            Ok(_) => Ok(()),
            Err(source) => Err(ProcessError::Signal { id, source }),
        },
        State::Ended => Ok(()),
    }
}

/// `Op::Resize`: the terminal's size (before start, the initial size).
pub async fn resize(table: &ProcessTable, id: ProcessId, rows: u16, cols: u16) -> Result<(), ProcessError> {
    let process = table.get(id)?;
    let mut state = process.state.lock().await;
    match &mut *state {
        State::Created(pending) if pending.command.terminal => {
            pending.command.size = Some(WindowSize { rows, cols });
            Ok(())
        }
        State::Forked(forked) => match &forked.stdio.master {
            Some(master) => {
                pty::set_size(master.as_fd(), rows, cols).map_err(|source| ProcessError::Resize { id, source })
            }
            None => Err(ProcessError::InvalidState {
                id,
                why: "has no terminal",
            }),
        },
        State::Running {
            master: Some(master), ..
        } => pty::set_size(master.as_fd(), rows, cols).map_err(|source| ProcessError::Resize { id, source }),
        State::Ended => Err(ProcessError::InvalidState { id, why: "has exited" }),
        _ => Err(ProcessError::InvalidState {
            id,
            why: "has no terminal",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ProcessSpec {
        ProcessSpec {
            args: vec!["true".into()],
            ..Default::default()
        }
    }

    #[test]
    fn session_close_forgets_created_and_done_and_orphans_running() {
        let table = ProcessTable::default();
        let created = create(&table, 1, spec()).unwrap().process;
        let running = create(&table, 1, spec()).unwrap().process;
        let done = create(&table, 1, spec()).unwrap().process;
        let other = create(&table, 2, spec()).unwrap().process;
        assert_ne!(created, running);
        let exit = ExitStatus {
            code: Some(0),
            signal: None,
        };
        table.get(running).unwrap().phase.send_replace(Phase::Running);
        table.finish(&table.get(done).unwrap(), exit);
        assert_eq!(table.len(), 4);
        assert!(!table.all_done());

        table.session_closed(1);
        assert_eq!(table.len(), 2);
        assert!(table.get(created).is_err() && table.get(done).is_err());
        let p = table.get(running).unwrap();
        table.finish(&p, exit);
        assert!(matches!(table.get(running), Err(ProcessError::NotFound { .. })));
        assert!(table.get(other).is_ok());
        assert!(table.all_done());
    }

    #[tokio::test]
    async fn resize_before_start() {
        let table = ProcessTable::default();
        let id = create(&table, 1, spec()).unwrap().process;
        let e = resize(&table, id, 1, 1).await.unwrap_err();
        assert_eq!(e.to_string(), format!("process {id} has no terminal"));
        assert!(matches!(
            wait(&table, 999).await,
            Err(ProcessError::NotFound { id: 999 })
        ));
        let mut t = spec();
        t.terminal = true;
        let tty = create(&table, 1, t).unwrap().process;
        resize(&table, tty, 40, 120).await.unwrap();
        let p = table.get(tty).unwrap();
        let state = p.state.lock().await;
        let State::Created(pending) = &*state else {
            panic!("not created")
        };
        assert_eq!(pending.command.size, Some(WindowSize { rows: 40, cols: 120 }));
    }

    #[tokio::test]
    async fn a_wait_before_the_start_answers_at_the_end() {
        let table = std::sync::Arc::new(ProcessTable::default());
        let id = create(&table, 1, spec()).unwrap().process;
        let waiter = tokio::spawn({
            let table = table.clone();
            async move { wait(&table, id).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a wait before the start must wait, not fail");
        let p = table.get(id).unwrap();
        p.phase.send_replace(Phase::Running);
        let exit = ExitStatus {
            code: Some(3),
            signal: None,
        };
        table.finish(&p, exit);
        assert_eq!(waiter.await.unwrap().unwrap(), exit);

        // A process whose session closes before its start is done as
        // never started: a wait from another session answers 127.
        let id = create(&table, 1, spec()).unwrap().process;
        let waiter = tokio::spawn({
            let table = table.clone();
            async move { wait(&table, id).await }
        });
        tokio::task::yield_now().await;
        table.session_closed(1);
        assert_eq!(waiter.await.unwrap().unwrap(), NOT_STARTED);
        assert!(matches!(wait(&table, id).await, Err(ProcessError::NotFound { .. })));
    }

    #[tokio::test]
    async fn waits_see_the_final_status() {
        let table = ProcessTable::default();
        let id = create(&table, 1, spec()).unwrap().process;
        let p = table.get(id).unwrap();
        p.phase.send_replace(Phase::Running);
        let exit = ExitStatus {
            code: None,
            signal: Some(9),
        };
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move {
                let mut rx = p.phase.subscribe();
                let _ = rx.wait_for(|ph| matches!(ph, Phase::Done(_))).await;
            })
        };
        p.phase.send_replace(Phase::Exited(exit));
        table.finish(&p, exit);
        waiter.await.unwrap();
        assert_eq!(wait(&table, id).await.unwrap(), exit);
    }
}
