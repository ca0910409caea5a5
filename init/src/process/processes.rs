//! The agent's processes as one service: the table, the reaper that
//! collects them, and the root filesystem they may run in. The RPC layer
//! runs the process ops through it; the container engine adds its
//! containers' processes to it.

use std::sync::Arc;

use agent_proto::{Conn, Created, ExitStatus, ProcessId, ProcessSpec, Started, StreamKind};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::error::ProcessError;
use super::reaper::{RawStatus, Reaper};
use super::rootfs_status::RootfsStatus;
use super::start;
use super::table::{self, AttachRefused, ContainerJoin, Forked, Process, ProcessTable, SessionId};

/// The agent's processes.
pub struct Processes {
    table: Arc<ProcessTable>,
    reaper: Arc<Reaper>,
    rootfs: watch::Receiver<RootfsStatus>,
}

impl Processes {
    /// An empty table over `reaper`; processes with a root wait for
    /// `rootfs` at their start.
    pub fn new(reaper: Arc<Reaper>, rootfs: watch::Receiver<RootfsStatus>) -> Processes {
        Processes {
            table: Arc::new(ProcessTable::default()),
            reaper,
            rootfs,
        }
    }

    /// The reaper every child of the agent is forked under.
    pub fn reaper(&self) -> &Arc<Reaper> {
        &self.reaper
    }

    /// Where the guest's root filesystem stands.
    pub fn rootfs(&self) -> &watch::Receiver<RootfsStatus> {
        &self.rootfs
    }

    /// `Op::Create`: checks the spec and adds a created process.
    pub fn create(&self, session: SessionId, spec: ProcessSpec) -> Result<Created, ProcessError> {
        table::create(&self.table, session, spec)
    }

    /// `Open::Attach`: on success answers `AttachReply::Ok` on `conn` and
    /// keeps the connection for the process's start; on error hands the
    /// connection back, unanswered, with the reason.
    pub async fn attach(&self, id: ProcessId, stream: StreamKind, conn: Conn) -> Result<(), AttachRefused> {
        table::attach(&self.table, id, stream, conn).await
    }

    /// `Op::Start`: answers once the exec has succeeded or failed.
    pub async fn start(&self, id: ProcessId) -> Result<Started, ProcessError> {
        start::start(&self.table, &self.reaper, &self.rootfs, id).await
    }

    /// `Op::Wait`: the exit status, once the process is done.
    pub async fn wait(&self, id: ProcessId) -> Result<ExitStatus, ProcessError> {
        table::wait(&self.table, id).await
    }

    /// `Op::Signal`.
    pub async fn signal(&self, id: ProcessId, signal: i32) -> Result<(), ProcessError> {
        table::signal(&self.table, &self.reaper, id, signal).await
    }

    /// `Op::Resize`.
    pub async fn resize(&self, id: ProcessId, rows: u16, cols: u16) -> Result<(), ProcessError> {
        table::resize(&self.table, id, rows, cols).await
    }

    /// Forgets or orphans the processes of a closed session.
    pub fn session_closed(&self, session: SessionId) {
        self.table.session_closed(session);
    }

    /// How many processes have not been forgotten.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no process has been left unforgotten.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// Whether no process is running or delivering output.
    pub fn all_done(&self) -> bool {
        self.table.all_done()
    }

    /// A created process that joins a container at its start (`exec`).
    pub(crate) fn create_joined(
        &self,
        session: SessionId,
        spec: ProcessSpec,
        join: ContainerJoin,
    ) -> Result<Created, ProcessError> {
        table::create_joined(&self.table, session, spec, join)
    }

    /// Adds a container's forked process and follows it to its end; the
    /// pumps come through `pumps` at its start.
    pub(crate) fn insert_forked(
        &self,
        forked: Forked,
        exited: oneshot::Receiver<RawStatus>,
        pumps: oneshot::Receiver<Vec<JoinHandle<()>>>,
    ) -> Arc<Process> {
        let process = self.table.insert_forked(forked);
        start::supervise_forked(&self.table, &process, exited, pumps);
        process
    }

    /// Starts a container's forked process; answers once its exec has
    /// succeeded or failed.
    pub(crate) async fn start_forked(&self, process: &Arc<Process>) -> Result<Started, ProcessError> {
        start::start_forked(process).await
    }

    /// Forgets a process (a container's, when the container is deleted).
    pub(crate) fn forget(&self, id: ProcessId) {
        self.table.forget(id);
    }
}
