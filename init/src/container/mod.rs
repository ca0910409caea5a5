//! The container engine: OCI containers over the agent's processes.
//!
//! [`Engine`] has one method per operation of the OCI runtime (`create`,
//! `start`, `exec`, `kill`, `pause`, `resume`, `update`, `state`, `list`,
//! `delete`, and `stats`, runc's `events --stats`). A container is created
//! in one step, as runc creates one (`create.rs`): its spec checked
//! (`plan.rs`), its cgroup made (`cgroup.rs`), its process cloned into its
//! namespaces and its filesystem set up by the `child` layer, the OCI
//! hooks run at their points (`hooks.rs`). The containers are kept in `table.rs`.
//!
//! The engine knows the process layer below it and never the agent: the
//! RPC layer decides whether the agent takes work and turns a
//! [`ContainerError`] into a protocol error.

pub(crate) mod cgroup;
mod create;
mod engine;
mod error;
pub(crate) mod hooks;
pub(crate) mod plan;
mod table;

pub use cgroup::CgroupError;
pub use engine::Engine;
pub use error::{ContainerError, SetupError};
pub use hooks::{HookError, HookFailure};
pub use plan::PlanError;
