//! The top layer: the agent that serves the host over vsock (or a Unix
//! socket). The accept loop (`server.rs`) checks who connects
//! (`access.rs`) and reads each connection's first frame; a control
//! session (`session.rs`) runs each request as a thin adapter: whether the
//! agent still takes work, one call into the process layer, the container
//! engine or the guest, and the error mapped to the protocol's
//! (`errors.rs`, the only place that knows the wire's codes). `agent.rs`
//! is the state every connection shares; `serve.rs` runs it all, from the
//! runtime's start to the shutdown.

pub(crate) mod access;
pub(crate) mod agent;
pub(crate) mod errors;
mod serve;
pub(crate) mod server;
pub(crate) mod session;

pub use serve::serve;
