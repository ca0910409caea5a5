//! The agent's processes: created, attached to, started, waited for,
//! signalled and forgotten, each with its stdio pumped to the host's
//! connections; and the reaper that collects every child of the agent.
//!
//! [`Processes`] is the service: the table (`table.rs`), the start
//! (`start.rs`, with the stdio of `stdio.rs` and the pumps of
//! `streams.rs`), the reaper (`reaper.rs`) and the root filesystem's
//! status (`rootfs_status.rs`). It forks through the `child` layer and
//! knows nothing of containers or of the protocol's sessions beyond a
//! session's number.

mod error;
mod processes;
pub(crate) mod reaper;
mod rootfs_status;
mod start;
mod stdio;
mod streams;
pub(crate) mod table;

pub use error::ProcessError;
pub use processes::Processes;
pub use reaper::{Children, Reaper, ReaperError};
pub use rootfs_status::{wait_ready, RootfsStatus, RootfsUnavailable};
pub(crate) use stdio::Stdio;
pub use stdio::StdioError;
pub use table::{AttachRefused, SessionId};
pub(crate) use table::{ContainerJoin, Forked, Phase, Process};
