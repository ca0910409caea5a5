//! Where the guest's root filesystem stands, as the processes that run in
//! it see it: the boot mounts it on a thread of its own
//! (`guest::rootfs`) and publishes its status; a process or a container
//! whose root it is waits here until it is mounted.

use tokio::sync::watch;

/// Where the root filesystem stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsStatus {
    /// No `vminitd.rootfs=`: processes with a root use whatever it names.
    Unused,
    /// Being mounted.
    Mounting,
    /// Mounted; when, on `CLOCK_BOOTTIME`.
    Ready {
        /// When it was ready, in nanoseconds of `CLOCK_BOOTTIME`.
        at_ns: u64,
    },
    /// It could not be mounted: why.
    Failed(String),
}

/// Why a process cannot run in the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootfsUnavailable {
    /// The mount failed, for this reason.
    #[error("{0}")]
    Failed(String),
    /// The boot gave up on it (its status went away).
    #[error("the root filesystem mount was abandoned")]
    Abandoned,
}

/// Waits until the root filesystem is mounted; why not, if it failed.
pub async fn wait_ready(status: &watch::Receiver<RootfsStatus>) -> Result<(), RootfsUnavailable> {
    let mut status = status.clone();
    let settled = status.wait_for(|s| *s != RootfsStatus::Mounting).await;
    match settled.as_deref() {
        Ok(RootfsStatus::Failed(e)) => Err(RootfsUnavailable::Failed(e.clone())),
        Ok(_) => Ok(()),
        Err(_) => Err(RootfsUnavailable::Abandoned),
    }
}
