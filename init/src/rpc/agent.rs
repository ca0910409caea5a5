//! The agent's shared state: what every connection sees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agent_proto::BootTimeline;
use tokio::sync::watch;

use super::access::Access;
use crate::container::Engine;
use crate::guest::config::Mode;
use crate::guest::network::NetworkFiles;
use crate::process::{Processes, RootfsStatus, SessionId};

/// The agent's shared state.
pub struct Agent {
    /// What vminitd runs as.
    pub mode: Mode,
    /// The boot's phases up to listening.
    pub boot: BootTimeline,
    /// The processes, and the reaper.
    pub processes: Arc<Processes>,
    /// The containers.
    pub containers: Engine,
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
    /// The agent over `processes`, its containers' engine made here.
    pub fn new(
        mode: Mode,
        boot: BootTimeline,
        processes: Arc<Processes>,
        network_files: NetworkFiles,
        access: Arc<Access>,
    ) -> Agent {
        Agent {
            mode,
            boot,
            rootfs: processes.rootfs().clone(),
            containers: Engine::new(processes.clone()),
            processes,
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
        let network_up = boot.phases.iter().any(|p| p.name == "network_up");
        if let (false, Some(at_ns)) = (network_up, crate::guest::network::network_up_ns()) {
            boot.phases.push(agent_proto::BootPhase {
                name: "network_up".into(),
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
