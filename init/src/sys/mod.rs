//! The bottom layer: the operating system as vminitd uses it, with no idea
//! of processes, containers or the agent. Descriptors, `/proc`,
//! pseudo-terminals, lookups inside a root, rtnetlink, address parsing,
//! the boot clock and the log.
//!
//! Nothing here imports from another layer.

#[macro_use]
pub(crate) mod log;

pub(crate) mod cidr;
pub(crate) mod fdio;
pub(crate) mod in_root;
pub(crate) mod netlink;
pub(crate) mod procfs;
pub(crate) mod pty;
pub(crate) mod timeline;

pub use pty::PtyError;
