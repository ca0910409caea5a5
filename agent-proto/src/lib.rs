//! The vminitd wire protocol.
//!
//! This crate is the protocol's code; `docs/protocol.md` tells the same
//! conversation end to end, with an example of every message, and a test
//! (`tests/protocol_doc.rs`) holds the two to the same ops, error codes
//! and limits.
//!
//! The host (`vmshim`, or any runtime using its library) talks to `vminitd`,
//! the agent running as PID 1 of the guest, over one listening port. Every
//! connection starts with one [`Open`] frame that says what it is:
//!
//! * [`Open::Control`]: a control session. The host sends [`Request`]s and the
//!   agent answers each with a [`Response`] carrying the same `id`. Requests
//!   on one session may overlap (a long [`Op::Wait`] does not hold up a
//!   [`Op::Signal`]); responses come back in completion order. The first
//!   request of a session should be [`Op::Hello`].
//! * [`Open::Attach`]: a stream carrying one stdio stream of one process. The
//!   agent answers with one [`AttachReply`] frame; after a success the
//!   connection carries raw bytes. Half-closing a stdin stream from the host is
//!   end-of-file for the process. Output streams end with end-of-file once the
//!   process (and everything that inherited the descriptor) closed them.
//!
//! The life of one process: [`Op::Create`] (the agent prepares it and returns
//! its id) → attach the streams the host wants → [`Op::Start`] → bytes flow →
//! [`Op::Wait`] returns the exit status, and only after every attached output
//! stream has delivered its last byte, so no output is lost.
//!
//! The life of one container (OCI runtime semantics, [`container`]):
//! [`Op::CreateContainer`] (namespaces, cgroup, mounts and devices set up;
//! its process waits before exec; the answer names that process) → attach
//! its streams → [`Op::StartContainer`] → [`Op::Wait`] on its process, any
//! number of [`Op::ExecContainer`] processes joining it meanwhile →
//! [`Op::DeleteContainer`]. [`Op::ContainerState`] reports `created`,
//! `running` or `stopped` at any point; containers outlive the session that
//! created them.
//!
//! Framing ([`frame`]): a 4-byte big-endian length, then a JSON document.
//! Frames over [`MAX_FRAME_LEN`] are refused and the connection is closed.
//!
//! Transports ([`transport`]) are selected by one URL syntax ([`Endpoint`]):
//! `unix:PATH`, `vsock:CID:PORT` and `hvsock:PATH:PORT`.
//!
//! Readiness and the agent key: a guest booted with
//! `vminitd.notify=vsock:2:PORT` on its kernel command line connects to the
//! host at that port once it listens and writes [`READY_LINE`]; the host
//! writes the VM's agent key ([`key`]: `KEY <64 hex digits>\n`) on the same
//! connection as soon as it is there (the two lines cross) and closes. The agent serves nothing before that exchange, and from then on
//! every connection's [`Open`] frame must carry the key. The host dials the
//! agent after the exchange instead of probing a guest that is still booting.
//!
//! Who may connect at all: over vsock only the host (CID 2); the agent drops
//! any other peer before reading a byte. Over a Unix socket only root or the
//! agent's own user (`SO_PEERCRED`), and the socket is 0600.

pub mod container;
pub mod container_stats;
pub mod endpoint;
pub mod frame;
pub mod key;
pub mod messages;
pub mod transport;

pub use endpoint::{Endpoint, EndpointError};
pub use frame::{encode_frame, read_frame, read_frame_bytes, write_frame, FrameError};
pub use key::{AgentKey, KeyError};
pub use messages::*;
pub use transport::{Conn, Listener, Peer, Transport, TransportError};

/// The protocol version. Bumped on any incompatible change; the agent refuses
/// a `hello` that names another version with [`ErrorCode::VersionMismatch`].
pub const PROTOCOL_VERSION: u32 = 2;

/// The vsock port the agent listens on inside the guest.
pub const AGENT_PORT: u32 = 1024;

/// What the agent writes to the `vminitd.notify=` endpoint once it listens.
pub const READY_LINE: &[u8] = b"READY\n";

/// Where the agent mounts the root filesystem named by `vminitd.rootfs=DEVICE`
/// on the kernel command line: the device read-only, under a writable overlay
/// (tmpfs upper layer). Processes run in it with [`ProcessSpec::root`].
pub const GUEST_ROOTFS: &str = "/run/vminitd/rootfs";

/// Where the agent mounts the VM's virtio-fs share of host files, named by
/// `vminitd.share=TAG` on the kernel command line: each shared host file or
/// directory is `GUEST_SHARES/N` there, and a container's bind mount of a
/// host path reaches the guest as a bind mount from it.
pub const GUEST_SHARES: &str = "/run/vminitd/shares";

/// The container annotation that lets a container's processes open
/// `AF_VSOCK` sockets (value `allow`; see [`ProcessSpec::allow_vsock`]).
pub const VSOCK_ANNOTATION: &str = "io.vminitd.vsock";

/// The largest frame either side accepts, in bytes (the JSON body, not
/// counting the 4-byte length).
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// The largest first frame ([`Open`]) the agent accepts: it is a few dozen
/// bytes, and a connection that has not yet shown its key gets no more.
pub const MAX_OPEN_FRAME_LEN: usize = 4096;

/// How much of the guest's memory (`MemTotal`, `total_bytes`) the
/// workloads' cgroup leaves the agent and the kernel: a sixteenth, at
/// least 16 MiB and at most 64 MiB. The agent caps its workloads' cgroup
/// at the rest; the host sizes a container's limit with it when it
/// resizes a VM's memory.
pub fn workloads_headroom(total_bytes: u64) -> u64 {
    (total_bytes / 16).clamp(16 << 20, 64 << 20)
}
