//! Why an operation on a process failed. The RPC layer gives each variant
//! its protocol code (`rpc::errors`).

use agent_proto::ProcessId;

use super::reaper::ReaperError;
use super::rootfs_status::RootfsUnavailable;
use super::stdio::StdioError;
use crate::child::command::{NotFound, SpecError};
use crate::child::failure::ExecError;
use crate::child::namespaces::NamespaceError;
use crate::child::spawn::SpawnError;

/// Why an operation on a process failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// No process has this id (or it was forgotten).
    #[error("no process {id}")]
    NotFound {
        /// The id asked for.
        id: ProcessId,
    },
    /// The process is not in a phase that allows the operation.
    #[error("process {id} {why}")]
    InvalidState {
        /// The process.
        id: ProcessId,
        /// What it is (or is not), as the rest of a sentence.
        why: &'static str,
    },
    /// The process spec is refused.
    #[error("{0}")]
    InvalidSpec(#[from] SpecError),
    /// A signal number out of range.
    #[error("invalid signal number {signal}: expected 1 to 64")]
    BadSignal {
        /// As given.
        signal: i32,
    },
    /// The program is nowhere in `PATH`.
    #[error(transparent)]
    ProgramNotFound(#[from] NotFound),
    /// The process runs in the guest's root filesystem, which could not be
    /// mounted.
    #[error("the root filesystem is not available: {source}")]
    NoRootfs {
        /// Why.
        source: RootfsUnavailable,
    },
    /// The container the process joins cannot be entered.
    #[error("cannot join the container: {source}")]
    JoinContainer {
        /// Which namespace, and why.
        source: NamespaceError,
    },
    /// A step of the child failed before exec (exec included).
    #[error(transparent)]
    ExecFailed(#[from] ExecError),
    /// Its stdio could not be made.
    #[error("process {id}: {source}")]
    Stdio {
        /// The process.
        id: ProcessId,
        /// Why.
        source: StdioError,
    },
    /// It could not be forked, or its exec status not read.
    #[error("process {id}: {source}")]
    Spawn {
        /// The process.
        id: ProcessId,
        /// Why.
        source: SpawnError,
    },
    /// A signal could not be sent.
    #[error("process {id}: {source}")]
    Signal {
        /// The process.
        id: ProcessId,
        /// Why.
        source: ReaperError,
    },
    /// Its terminal could not be resized.
    #[error("process {id}: cannot resize its terminal: {source}")]
    Resize {
        /// The process.
        id: ProcessId,
        /// Why.
        source: std::io::Error,
    },
    /// A container's process could not be told to go on to its exec.
    #[error("process {id}: cannot start pid {pid}: {source}")]
    Start {
        /// The process.
        id: ProcessId,
        /// Its pid.
        pid: libc::pid_t,
        /// Why.
        source: std::io::Error,
    },
    /// Its end was never published (the supervisor went away).
    #[error("process {id}: lost track of the process")]
    Lost {
        /// The process.
        id: ProcessId,
    },
}
