//! The host side of vminitd.
//!
//! * [`client`]: a typed async client of the agent over any transport.
//! * [`exec`]: run one process through the agent with its stdio relayed.
//! * [`terminal`]: the host terminal in raw mode and its window size.
//!
//! The `vmshim` binary is a thin command line over this library; a host
//! runtime can use the library directly.

pub mod client;
pub mod exec;
pub mod terminal;

pub use client::{Client, ClientError};
pub use exec::{exec, ExecIo};
