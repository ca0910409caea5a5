//! The container engine: OCI containers over the agent's processes, one
//! method per operation of the runtime spec. It knows the process layer
//! and the child's namespaces, never the agent that serves it: the RPC
//! layer checks whether the agent takes work and maps the errors.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agent_proto::{
    ContainerCreated, ContainerInfo, ContainerSpec, ContainerStats, ContainerStatus, Created, ProcessSpec, Resources,
    Started,
};

use super::cgroup::{Cgroup, CgroupError};
use super::create::{self, default_home, remove_cgroup};
use super::error::{ContainerError, SetupError};
use super::hooks;
use super::plan;
use super::table::{Container, ContainerTable};
use crate::process::{ContainerJoin, Processes, SessionId};

/// How long a deleted container's processes may take to die after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a freeze or a thaw may take.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// Every container of the agent, and what it takes to run them.
pub struct Engine {
    containers: ContainerTable,
    processes: Arc<Processes>,
}

impl Engine {
    /// An engine without containers, whose processes join `processes`.
    pub fn new(processes: Arc<Processes>) -> Engine {
        Engine {
            containers: ContainerTable::default(),
            processes,
        }
    }

    /// `create`: the container's cgroup, its process cloned into its
    /// namespaces and its filesystem set up; the process waits, before
    /// exec, for [`Engine::start`].
    pub async fn create(&self, spec: ContainerSpec) -> Result<ContainerCreated, ContainerError> {
        create::create(&self.processes, &self.containers, spec).await
    }

    /// `start`: the `startContainer` hooks in the container, then its
    /// process's exec; answers once the exec has succeeded or failed, then
    /// runs the `poststart` hooks.
    pub async fn start(&self, id: &str) -> Result<Started, ContainerError> {
        let container = self.containers.get(id)?;
        match container.status() {
            ContainerStatus::Created => {}
            ContainerStatus::Stopped => {
                return Err(ContainerError::InvalidState {
                    id: id.to_owned(),
                    status: "stopped",
                    why: "cannot start a container that has stopped",
                })
            }
            status => {
                return Err(ContainerError::InvalidState {
                    id: id.to_owned(),
                    status: status.name(),
                    why: "it has already been started",
                })
            }
        }
        if container.started.swap(true, Ordering::SeqCst) {
            return Err(ContainerError::InvalidState {
                id: id.to_owned(),
                status: "running",
                why: "it has already been started",
            });
        }
        let reaper = self.processes.reaper();
        let state = container.oci_state();
        let within = hooks::InContainer {
            pid: container.pid,
            cgroup: container.cgroup.as_ref(),
            mount: true,
        };
        let hooks = &container.hooks.start_container;
        if let Err(e) = hooks::run_all(reaper, hooks, "startContainer", &state, Some(within)).await {
            container.started.store(false, Ordering::SeqCst);
            return Err(ContainerError::SetupFailed {
                id: id.to_owned(),
                source: SetupError::Hook(e),
            });
        }
        let started = self.processes.start_forked(&container.process).await?;
        let state = container.oci_state();
        if let Err(e) = hooks::run_all(reaper, &container.hooks.poststart, "poststart", &state, None).await {
            warn!("container {id}: {e}");
        }
        Ok(started)
    }

    /// `exec`: a created process that joins the container (every namespace
    /// of its process, and its cgroup) at its start; it belongs to
    /// `session`, like any created process.
    pub fn exec(&self, session: SessionId, id: &str, mut spec: ProcessSpec) -> Result<Created, ContainerError> {
        let container = self.containers.get(id)?;
        match container.status() {
            ContainerStatus::Stopped => {
                return Err(ContainerError::InvalidState {
                    id: id.to_owned(),
                    status: "stopped",
                    why: "cannot exec in a stopped container",
                })
            }
            ContainerStatus::Paused => {
                return Err(ContainerError::InvalidState {
                    id: id.to_owned(),
                    status: "paused",
                    why: "cannot exec in a paused container",
                })
            }
            _ => {}
        }
        if spec.root.is_some() {
            return Err(ContainerError::ExecRoot);
        }
        spec.allow_vsock |= plan::vsock_allowed(&container.annotations);
        // Programs are looked up in the container's root, through its process.
        let root = format!("/proc/{}/root", container.pid);
        default_home(&mut spec, Path::new(&root));
        spec.root = Some(root);
        let cgroup = match &container.cgroup {
            Some(cgroup) => Some(cgroup.open_dir().map_err(|source| ContainerError::Cgroup {
                id: id.to_owned(),
                source,
            })?),
            None => None,
        };
        let join = ContainerJoin {
            pid: container.pid,
            cgroup,
        };
        Ok(self.processes.create_joined(session, spec, join)?)
    }

    /// `state`.
    pub fn state(&self, id: &str) -> Result<ContainerInfo, ContainerError> {
        Ok(self.containers.get(id)?.info())
    }

    /// Every container's state, by id.
    pub fn list(&self) -> Vec<ContainerInfo> {
        self.containers.list()
    }

    /// `kill`: `signal` to the container's process or, with `all`, to every
    /// process of its cgroup.
    pub async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), ContainerError> {
        if !(1..=64).contains(&signal) {
            return Err(ContainerError::BadSignal { signal });
        }
        let container = self.containers.get(id)?;
        if container.status() == ContainerStatus::Stopped {
            return Err(ContainerError::InvalidState {
                id: id.to_owned(),
                status: "stopped",
                why: "its process is no longer running",
            });
        }
        if all {
            if let Some(cgroup) = &container.cgroup {
                return signal_cgroup(id, cgroup, signal).await;
            }
        }
        self.processes
            .reaper()
            .kill(container.pid, signal)
            .map(|_| ())
            .map_err(|source| ContainerError::Signal {
                id: id.to_owned(),
                source,
            })
    }

    /// `pause`: the container's cgroup frozen.
    pub async fn pause(&self, id: &str) -> Result<(), ContainerError> {
        self.freeze(id, true).await
    }

    /// `resume`: the container's cgroup thawed.
    pub async fn resume(&self, id: &str) -> Result<(), ContainerError> {
        self.freeze(id, false).await
    }

    async fn freeze(&self, id: &str, frozen: bool) -> Result<(), ContainerError> {
        let container = self.containers.get(id)?;
        let (want, why) = if frozen {
            (ContainerStatus::Running, "only a running container can be paused")
        } else {
            (ContainerStatus::Paused, "only a paused container can be resumed")
        };
        let status = container.status();
        if status != want {
            return Err(ContainerError::InvalidState {
                id: id.to_owned(),
                status: status.name(),
                why,
            });
        }
        let Some(cgroup) = &container.cgroup else {
            return Err(ContainerError::InvalidState {
                id: id.to_owned(),
                status: status.name(),
                why: "it has no cgroup to freeze",
            });
        };
        wait_frozen(id, cgroup, frozen).await?;
        container.paused.store(frozen, Ordering::SeqCst);
        Ok(())
    }

    /// `update`: new limits on the container's cgroup.
    pub fn update(&self, id: &str, resources: &Resources) -> Result<(), ContainerError> {
        let container = self.containers.get(id)?;
        let status = container.status();
        if status == ContainerStatus::Stopped {
            return Err(ContainerError::InvalidState {
                id: id.to_owned(),
                status: status.name(),
                why: "a stopped container's limits cannot change",
            });
        }
        let Some(cgroup) = &container.cgroup else {
            return Err(ContainerError::InvalidState {
                id: id.to_owned(),
                status: status.name(),
                why: "it has no cgroup",
            });
        };
        cgroup.update(resources).map_err(|source| match source {
            CgroupError::InvalidValue { .. }
            | CgroupError::ControllerMissing { .. }
            | CgroupError::Unsupported { .. } => ContainerError::Resources { source },
            source => ContainerError::Cgroup {
                id: id.to_owned(),
                source,
            },
        })
    }

    /// The figures of the container's cgroup, whatever its status: a
    /// stopped container keeps its cgroup until `delete`.
    pub fn stats(&self, id: &str) -> Result<ContainerStats, ContainerError> {
        let container = self.containers.get(id)?;
        let Some(cgroup) = &container.cgroup else {
            return Err(ContainerError::InvalidState {
                id: id.to_owned(),
                status: container.status().name(),
                why: "it has no cgroup",
            });
        };
        cgroup.stats().map_err(|source| ContainerError::Cgroup {
            id: id.to_owned(),
            source,
        })
    }

    /// `delete`: a stopped container (or, with `force`, any) removed with
    /// its cgroup; its `poststop` hooks run.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), ContainerError> {
        let container = self.containers.get(id)?;
        let status = container.status();
        if matches!(status, ContainerStatus::Running | ContainerStatus::Paused) && !force {
            return Err(ContainerError::InvalidState {
                id: id.to_owned(),
                status: status.name(),
                why: "cannot delete a container that is not stopped (kill it, or delete with force)",
            });
        }
        // Created (its process waits before exec) or forced: kill everything,
        // thawed so that it can die at once.
        if status != ContainerStatus::Stopped {
            self.kill_everything(&container);
            if let (ContainerStatus::Paused, Some(cgroup)) = (status, &container.cgroup) {
                let _ = cgroup.set_frozen(false);
            }
        }
        let mut phase = container.process.phase.subscribe();
        let ended = matches!(
            tokio::time::timeout(KILL_TIMEOUT, phase.wait_for(|p| p.has_exited())).await,
            Ok(Ok(_))
        );
        if !ended {
            return Err(ContainerError::StillRunning {
                id: id.to_owned(),
                pid: container.pid,
                after: KILL_TIMEOUT,
            });
        }
        if let Some(cgroup) = &container.cgroup {
            // Whatever else was in its cgroup (no pid namespace) goes too.
            self.kill_everything(&container);
            remove_cgroup(id, cgroup);
        }
        self.containers.remove(id);
        self.processes.forget(container.process.id);
        let state = container.oci_state();
        let poststop = &container.hooks.poststop;
        if let Err(e) = hooks::run_all(self.processes.reaper(), poststop, "poststop", &state, None).await {
            warn!("container {id}: {e}");
        }
        debug!("container {id}: deleted");
        Ok(())
    }

    /// SIGKILLs the container's process and everything in its cgroup.
    fn kill_everything(&self, container: &Container) {
        if let Some(cgroup) = &container.cgroup {
            cgroup.kill_all();
        }
        let _ = self.processes.reaper().kill(container.pid, libc::SIGKILL);
    }
}

/// Signals every process of a container's cgroup and its sub-cgroups, so
/// that none escapes by forking or by making a cgroup of its own: SIGKILL
/// through `cgroup.kill`; any other signal with the cgroup frozen (as runc
/// does), then thawed unless the container was paused.
async fn signal_cgroup(id: &str, cgroup: &Cgroup, signal: i32) -> Result<(), ContainerError> {
    if signal == libc::SIGKILL {
        cgroup.kill_all();
        return Ok(());
    }
    let failed = |source| ContainerError::Cgroup {
        id: id.to_owned(),
        source,
    };
    let was_frozen = cgroup.frozen().map_err(failed)?;
    if !was_frozen {
        wait_frozen(id, cgroup, true).await?;
    }
    let signalled = cgroup.signal_all(signal).map_err(failed);
    if !was_frozen {
        wait_frozen(id, cgroup, false).await?;
    }
    signalled
}

/// Freezes (or thaws) a cgroup and waits until the kernel says it is.
async fn wait_frozen(id: &str, cgroup: &Cgroup, frozen: bool) -> Result<(), ContainerError> {
    let failed = |source| ContainerError::Cgroup {
        id: id.to_owned(),
        source,
    };
    cgroup.set_frozen(frozen).map_err(failed)?;
    let deadline = tokio::time::Instant::now() + FREEZE_TIMEOUT;
    while cgroup.frozen().map_err(failed)? != frozen {
        if tokio::time::Instant::now() >= deadline {
            return Err(ContainerError::FreezeTimeout {
                id: id.to_owned(),
                frozen,
                after: FREEZE_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}
