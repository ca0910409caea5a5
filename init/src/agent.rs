//! The agent's shared state: what every connection sees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agent_proto::BootTimeline;
use tokio::sync::watch;

use crate::access::Access;
use crate::config::Mode;
use crate::container::ContainerTable;
use crate::network::NetworkFiles;
use crate::process::{ProcessTable, SessionId};
use crate::reaper::Reaper;
use crate::rootfs::RootfsStatus;

pub struct Agent {
    pub mode: Mode,
    pub boot: BootTimeline,
    pub reaper: Arc<Reaper>,
    pub processes: ProcessTable,
    pub containers: ContainerTable,
    /// The processes' root filesystem (`vminitd.rootfs=`).
    pub rootfs: watch::Receiver<RootfsStatus>,
    /// What `/etc/hosts` and `/etc/resolv.conf` are made of.
    pub network_files: std::sync::Mutex<NetworkFiles>,
    /// Who may connect, and when the agent key arrived.
    pub access: Arc<Access>,
    shutdown: watch::Sender<bool>,
    next_session: AtomicU64,
}

impl Agent {
    pub fn new(
        mode: Mode,
        boot: BootTimeline,
        reaper: Arc<Reaper>,
        rootfs: watch::Receiver<RootfsStatus>,
        network_files: NetworkFiles,
        access: Arc<Access>,
    ) -> Agent {
        Agent {
            mode,
            boot,
            reaper,
            processes: ProcessTable::default(),
            containers: ContainerTable::default(),
            rootfs,
            network_files: std::sync::Mutex::new(network_files),
            access,
            shutdown: watch::Sender::new(false),
            next_session: AtomicU64::new(1),
        }
    }

    /// The boot timeline so far: the phases up to listening, and those
    /// that happen beside them: the root filesystem mounted, the agent key
    /// received.
    pub fn timeline(&self) -> BootTimeline {
        let mut boot = self.boot.clone();
        if let RootfsStatus::Ready { at_ns } = *self.rootfs.borrow() {
            boot.phases.push(agent_proto::BootPhase {
                name: "rootfs_ready".into(),
                boottime_ns: at_ns,
            });
        }
        if let Some(at_ns) = self.access.key_received_ns() {
            boot.phases.push(agent_proto::BootPhase {
                name: "key_received".into(),
                boottime_ns: at_ns,
            });
        }
        boot.phases.sort_by_key(|p| p.boottime_ns);
        boot
    }

    /// A number for a new control session.
    pub fn new_session(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether shutdown has begun: no new work is taken.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Begins the shutdown (the `shutdown` op).
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once shutdown has been requested.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|requested| *requested).await;
    }
}
