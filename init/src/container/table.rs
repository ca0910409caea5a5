//! The containers of the agent: each with its process, its cgroup and its
//! hooks, in one table. A container belongs to the agent, not to the
//! session that created it: it stays, and keeps its exit status, until
//! deleted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use agent_proto::{ContainerInfo, ContainerStatus, Hooks};

use super::cgroup::Cgroup;
use super::error::ContainerError;
use crate::process::{Phase, Process};

/// One container.
pub struct Container {
    /// Its id, unique in the agent.
    pub id: String,
    /// Its bundle's path on the host, as the spec gave it.
    pub bundle: String,
    /// The spec's annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it was created, in nanoseconds since the Unix epoch.
    pub created_unix_ns: u64,
    /// Its process (the init of its pid namespace, if it has one).
    pub process: Arc<Process>,
    /// The pid of its process, as the agent sees it.
    pub pid: libc::pid_t,
    /// Its cgroup; `None` where there is no cgroup2 filesystem.
    pub cgroup: Option<Cgroup>,
    /// The hooks still to run at its start and deletion.
    pub hooks: Hooks,
    /// Started (the `start` op came).
    pub started: AtomicBool,
    /// Frozen by `pause`.
    pub paused: AtomicBool,
}

impl Container {
    /// Its status, from its process's phase and its flags.
    pub fn status(&self) -> ContainerStatus {
        if self.process.phase.borrow().has_exited() {
            ContainerStatus::Stopped
        } else if self.paused.load(Ordering::SeqCst) {
            ContainerStatus::Paused
        } else if self.started.load(Ordering::SeqCst) {
            ContainerStatus::Running
        } else {
            ContainerStatus::Created
        }
    }

    /// Its state, as `state` and `list` answer it.
    pub fn info(&self) -> ContainerInfo {
        let status = self.status();
        let exit = match *self.process.phase.borrow() {
            Phase::Exited(s) | Phase::Done(s) => Some(s),
            _ => None,
        };
        ContainerInfo {
            id: self.id.clone(),
            status,
            pid: (status != ContainerStatus::Stopped).then_some(self.pid),
            process: self.process.id,
            bundle: self.bundle.clone(),
            exit,
            created_unix_ns: self.created_unix_ns,
            annotations: self.annotations.clone(),
        }
    }

    /// The OCI state JSON hooks read on stdin.
    pub fn oci_state(&self) -> String {
        oci_state(&self.id, self.status(), self.pid, &self.bundle, &self.annotations)
    }
}

/// The OCI state JSON of a container.
pub fn oci_state(
    id: &str,
    status: ContainerStatus,
    pid: libc::pid_t,
    bundle: &str,
    annotations: &BTreeMap<String, String>,
) -> String {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "id": id,
        "status": status.name(),
        "pid": if status == ContainerStatus::Stopped { 0 } else { pid },
        "bundle": bundle,
        "annotations": annotations,
    })
    .to_string()
}

/// Every container of the agent, and the ids being created.
#[derive(Default)]
pub struct ContainerTable {
    entries: Mutex<HashMap<String, Arc<Container>>>,
    creating: Mutex<HashSet<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl ContainerTable {
    /// The container `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        lock(&self.entries)
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound { id: id.to_owned() })
    }

    /// Every container's state, by id.
    pub fn list(&self) -> Vec<ContainerInfo> {
        let mut all: Vec<ContainerInfo> = lock(&self.entries).values().map(|c| c.info()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Adds a created container (its id reserved).
    pub fn insert(&self, container: Arc<Container>) {
        lock(&self.entries).insert(container.id.clone(), container);
    }

    /// Removes a deleted container.
    pub fn remove(&self, id: &str) {
        lock(&self.entries).remove(id);
    }

    /// Takes `id` for a creation; released by dropping the guard.
    pub fn reserve(&self, id: &str) -> Result<Reservation<'_>, ContainerError> {
        let entries = lock(&self.entries);
        let mut creating = lock(&self.creating);
        if entries.contains_key(id) || !creating.insert(id.to_owned()) {
            return Err(ContainerError::Exists { id: id.to_owned() });
        }
        Ok(Reservation {
            table: self,
            id: id.to_owned(),
        })
    }
}

/// An id taken for a creation.
pub struct Reservation<'a> {
    table: &'a ContainerTable,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.table.creating).remove(&self.id);
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
