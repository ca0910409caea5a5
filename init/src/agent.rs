//! The agent's shared state: what every connection sees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use agent_proto::BootTimeline;
use tokio::sync::watch;

use crate::config::Mode;
use crate::process::{ProcessTable, SessionId};
use crate::reaper::Reaper;

pub struct Agent {
    pub mode: Mode,
    pub boot: BootTimeline,
    pub reaper: Arc<Reaper>,
    pub processes: ProcessTable,
    shutdown: watch::Sender<bool>,
    next_session: AtomicU64,
}

impl Agent {
    pub fn new(mode: Mode, boot: BootTimeline, reaper: Arc<Reaper>) -> Agent {
        Agent {
            mode,
            boot,
            reaper,
            processes: ProcessTable::default(),
            shutdown: watch::Sender::new(false),
            next_session: AtomicU64::new(1),
        }
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
