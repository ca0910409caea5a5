//! Why a container operation failed. Each variant says what kind of
//! failure it is (the request refused, the setup failed, the system
//! failed) and keeps its cause; the RPC layer gives each its protocol
//! code (`rpc::errors`).

use std::io;
use std::time::Duration;

use super::cgroup::CgroupError;
use super::hooks::HookError;
use super::plan::PlanError;
use crate::child::command::{NotFound, SpecError};
use crate::child::failure::ExecError;
use crate::child::spawn::SpawnError;
use crate::process::{ProcessError, ReaperError, RootfsUnavailable, StdioError};

/// Why a container operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No container has this id.
    #[error("no container {id:?}")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// A container with this id exists, or is being created.
    #[error("container {id:?} already exists")]
    Exists {
        /// The id.
        id: String,
    },
    /// The container's status does not allow the operation.
    #[error("container {id:?} is {status}: {why}")]
    InvalidState {
        /// The container.
        id: String,
        /// Its status, as OCI names it.
        status: &'static str,
        /// Why that does not allow the operation.
        why: &'static str,
    },
    /// The spec is refused: its id, root, mounts, namespaces, devices,
    /// sysctls or annotations. Nothing was made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The spec's process is refused. Nothing was made.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// `linux.resources` or `cgroupsPath` asks for what the cgroup cannot
    /// be given.
    #[error("{source}")]
    Resources {
        /// What, and why.
        source: CgroupError,
    },
    /// A process that joins a container names a root of its own.
    #[error("process.root must be absent: the process runs in the container's root")]
    ExecRoot,
    /// A signal number out of range.
    #[error("invalid signal number {signal}: expected 1 to 64")]
    BadSignal {
        /// As given.
        signal: i32,
    },
    /// The container's root is the guest's root filesystem, which could not
    /// be mounted.
    #[error("container {id:?}: the root filesystem is not available: {source}")]
    NoRootfs {
        /// The container.
        id: String,
        /// Why.
        source: RootfsUnavailable,
    },
    /// Its program is not in its root.
    #[error("container {id:?}: {source}")]
    ProgramNotFound {
        /// The container.
        id: String,
        /// The program and the `PATH` searched.
        source: NotFound,
    },
    /// Its process failed while being set up, or a hook failed.
    #[error("container {id:?}: {source}")]
    SetupFailed {
        /// The container.
        id: String,
        /// What failed.
        source: SetupError,
    },
    /// Its cgroup could not be made, opened, changed or removed.
    #[error("container {id:?}: {source}")]
    Cgroup {
        /// The container.
        id: String,
        /// Why.
        source: CgroupError,
    },
    /// Its stdio could not be made.
    #[error("container {id:?}: {source}")]
    Stdio {
        /// The container.
        id: String,
        /// Why.
        source: StdioError,
    },
    /// Its terminal's path could not be read.
    #[error("container {id:?}: cannot name its terminal: {source}")]
    Terminal {
        /// The container.
        id: String,
        /// Why.
        source: io::Error,
    },
    /// Its terminal's path cannot be a C string.
    #[error("container {id:?}: its terminal's path has a NUL byte")]
    TerminalNul {
        /// The container.
        id: String,
    },
    /// The pipe its process waits on could not be made.
    #[error("container {id:?}: cannot create its gate: {source}")]
    Gate {
        /// The container.
        id: String,
        /// Why.
        source: io::Error,
    },
    /// Its process could not be forked.
    #[error("container {id:?}: {source}")]
    Spawn {
        /// The container.
        id: String,
        /// Why.
        source: SpawnError,
    },
    /// The id maps of its user namespace could not be written.
    #[error("container {id:?}: {source}")]
    IdMaps {
        /// The container.
        id: String,
        /// Which map, and why.
        source: io::Error,
    },
    /// Its waiting process could not be told to go on.
    #[error("container {id:?}: cannot wake it: {source}")]
    Wake {
        /// The container.
        id: String,
        /// Why.
        source: io::Error,
    },
    /// Its process could not be signalled.
    #[error("container {id:?}: {source}")]
    Signal {
        /// The container.
        id: String,
        /// Why.
        source: ReaperError,
    },
    /// Its cgroup did not freeze (or thaw) in time.
    #[error("container {id:?}: its cgroup is not {} after {after:?}", if *.frozen { "frozen" } else { "thawed" })]
    FreezeTimeout {
        /// The container.
        id: String,
        /// Whether it was to be frozen (else thawed).
        frozen: bool,
        /// How long the agent waited.
        after: Duration,
    },
    /// Its process did not die after SIGKILL.
    #[error("container {id:?}: its process (pid {pid}) did not die within {after:?}")]
    StillRunning {
        /// The container.
        id: String,
        /// Its process.
        pid: libc::pid_t,
        /// How long the agent waited.
        after: Duration,
    },
    /// An operation on its process failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
}

/// What failed while a container was set up, or at its start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A step of its process failed before exec, described naming the
    /// spec's value.
    #[error(transparent)]
    Child(#[from] ExecError),
    /// Its process ended without saying why.
    #[error("its process ended during the setup")]
    Ended,
    /// Its process's status could not be read.
    #[error(transparent)]
    Status(#[from] SpawnError),
    /// A `createRuntime`, `createContainer` or `startContainer` hook
    /// failed.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// Its process could not be told to go on after the creation hooks.
    #[error("cannot wake it: {0}")]
    Wake(#[source] io::Error),
}
