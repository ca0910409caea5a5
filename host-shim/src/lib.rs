//! The host side of vminitd.
//!
//! * [`client`]: a typed async client of the agent over any transport.
//! * [`mod@exec`]: run one process (or a container's) through the agent,
//!   its stdio relayed.
//! * [`terminal`]: the host terminal in raw mode and its window size.
//! * [`vm`]: one micro-VM: vsock backend, QEMU, agent session, teardown.
//! * [`instance`]: VMs that outlive the command that started them, held by a
//!   daemon each, reached by name.
//! * [`network`]: networks that join VMs to each other (a userspace switch,
//!   or a Linux bridge), an address leased per VM.
//! * [`netns`]: a container's network namespace as its VM's network (taps
//!   and `tc` redirects, over netlink).
//! * [`accel`]: whether KVM really runs a guest here.
//! * [`rootfs`], [`assets`]: root filesystem images, the kernel and initramfs.
//! * [`image`]: root filesystems and process defaults from OCI images and bundles.
//! * [`profile`]: the boot timeline, host and guest on one axis.
//! * `private` (within the crate): host state directories 0700 and files
//!   0600, checked before use; logs capped and rotated. Its
//!   [`PrivateError`] is in the errors of the modules that keep state.
//! * [`runtime`]: an OCI runtime with runc's operations, each container a
//!   micro-VM held by an instance daemon.
//!
//! The `vmshim` binary is a thin command line over this library; a host
//! runtime can use the library directly.

pub mod accel;
pub mod assets;
pub mod client;
pub mod exec;
pub mod image;
pub mod instance;
pub mod netns;
pub mod network;
pub(crate) mod private;
pub mod profile;
pub mod rootfs;
pub mod runtime;
pub mod terminal;
#[cfg(test)]
pub(crate) mod test_dir;
pub mod vm;

pub use client::{AgentAddr, Client, ClientError};
pub use exec::{exec, ExecIo};
pub use private::PrivateError;
