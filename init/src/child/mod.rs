//! What runs between fork and exec, and what the agent prepares for it.
//!
//! A `Command` (`command.rs`) is a process spec checked and turned
//! into C strings before fork; `spawn.rs` forks (or clones into new
//! namespaces and a cgroup) and learns through a status pipe which step of
//! the child failed, if one did. The child's steps, in order, are in
//! `steps.rs`: its signals and session, its stdio, its root (`root.rs`) or
//! a container's namespaces (`namespaces.rs`) and filesystem (`setup.rs`,
//! `sysctl.rs`), its security attributes (`security.rs`), seccomp
//! (`seccomp.rs`, `vsock_filter.rs`), its identity, then exec.
//!
//! Everything here runs either in the agent before fork, preparing, or in
//! the child, with async-signal-safe calls only. This layer knows nothing
//! of the agent's processes or containers; below it is only `sys`.

pub(crate) mod command;
pub(crate) mod defaults;
pub(crate) mod failure;
pub(crate) mod namespaces;
pub(crate) mod root;
pub(crate) mod seccomp;
pub(crate) mod security;
pub(crate) mod setup;
pub(crate) mod spawn;
mod steps;
pub(crate) mod sysctl;
pub(crate) mod vsock_filter;

pub use command::{NotFound, SpecError};
pub use failure::{ChildFailure, ExecError, Step};
pub use namespaces::NamespaceError;
pub use seccomp::SeccompError;
pub use security::SecurityError;
pub use spawn::SpawnError;
pub(crate) use steps::{ChildStdio, ContainerChild};
pub use sysctl::SysctlError;
