//! A running instance's memory: its figures (`vmshim stats`) and its size,
//! changed through the balloon (`vmshim update NAME --memory`), its main
//! container's limit following.

use std::path::PathBuf;
use std::time::Duration;

use agent_proto::{MemoryResources, Resources};

use super::{InstanceError, Instances, MainProcess, Status};
use crate::client::Client;
use crate::vm::memory::{self, MemoryError, Plan, Resized, Size, VmMemory};

/// A running instance's VM, as its record has it.
struct RunningVm {
    agent: crate::client::AgentAddr,
    qmp: PathBuf,
    /// The daemon first, then the VM's processes (role, pid).
    pids: Vec<(String, u32)>,
}

impl Instances {
    fn running_vm(&self, name: &str) -> Result<RunningVm, InstanceError> {
        let agent = self.endpoint(name)?;
        let instance = self.get(name)?;
        let not_running = || InstanceError::NotRunning {
            name: name.to_owned(),
            status: Status::Stopping,
        };
        if instance.exit.is_some() {
            return Err(not_running());
        }
        let qmp = instance.qmp.clone().ok_or_else(|| InstanceError::Serve {
            name: name.to_owned(),
            detail: "its VM has no control socket (a daemon of an older vmshim started it)".to_owned(),
        })?;
        let mut pids = vec![("vmshim".to_owned(), instance.pid)];
        pids.extend(instance.vm_pids.iter().cloned());
        Ok(RunningVm { agent, qmp, pids })
    }

    /// The memory figures of running instance `name`: the guest's (from
    /// its agent), the balloon's (from QEMU), and what it costs the host
    /// (its daemon's and its VM's processes, the guest's RAM).
    pub async fn memory(&self, name: &str) -> Result<VmMemory, InstanceError> {
        let vm = self.running_vm(name)?;
        let failed = |source| InstanceError::Memory {
            name: name.to_owned(),
            source,
        };
        let client = Client::connect(&vm.agent).await.map_err(|e| failed(e.into()))?;
        let figures = memory::vm_memory(&client, &vm.qmp, &vm.pids).await;
        client.close().await;
        figures.map_err(failed)
    }

    /// Gives running instance `name` `mib` MiB of memory through its
    /// balloon (as if it had booted with `--memory mib`, at most what it
    /// booted with), and waits up to `wait` for the guest to get there.
    /// Its main container, if it has one, gets what the guest's workloads
    /// may use then as its limit (`memory.max`): lowered before the
    /// balloon takes the memory, raised once it has given it back.
    pub async fn set_memory(&self, name: &str, mib: u64, wait: Duration) -> Result<Resized, InstanceError> {
        let vm = self.running_vm(name)?;
        let spec = self.dir(name).read_spec()?;
        let container = match (&spec.process, &spec.container) {
            (Some(MainProcess::Container(c)), _) => Some(c.id.clone()),
            (_, Some(main)) => Some(main.spec.id.clone()),
            _ => None,
        };
        let failed = |source| InstanceError::Memory {
            name: name.to_owned(),
            source,
        };
        let client = Client::connect(&vm.agent).await.map_err(|e| failed(e.into()))?;
        let resized = resize_following(&client, &vm.qmp, Size::Vm { mib }, container.as_deref(), wait).await;
        client.close().await;
        resized.map_err(failed)
    }
}

/// Resizes the VM of agent `client` and QEMU control socket `qmp` to
/// `size`; container `container`'s memory limit follows (the workloads'
/// share of the new size), the order [`memory::apply`]'s.
async fn resize_following(
    client: &Client,
    qmp: &std::path::Path,
    size: Size,
    container: Option<&str>,
    wait: Duration,
) -> Result<Resized, MemoryError> {
    let plan: Plan = memory::plan(client, qmp, size).await?;
    let follow = async {
        match container {
            Some(id) => {
                let limit = Resources {
                    memory: Some(MemoryResources {
                        limit: Some(plan.workloads_bytes as i64),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                client.update_container(id, limit).await.map_err(MemoryError::from)
            }
            None => Ok(()),
        }
    };
    memory::apply(client, qmp, &plan, wait, follow, |e| e).await
}
