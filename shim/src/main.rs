//! `containerd-shim-vminitd-v2`: containerd's shim v2 (runtime type
//! `io.containerd.vminitd.v2`) whose containers are vminitd micro-VMs,
//! as `vmshim runtime` makes them: one VM per container, or per pod (one
//! shim and one VM for all the containers of a pod, [`pod`]).
//!
//! containerd starts the shim with `start`, talks to it over ttrpc (the
//! task service, [`service`]), and runs it with `delete` to clean up after
//! a shim that died. The containers' state lives in the bundle, under
//! `vmshim/` (the runtime's root directory): containerd removes the bundle
//! after the task's delete.

mod metrics;
mod pod;
mod service;

use std::path::Path;

use containerd_shim::asynchronous::{run, spawn, ExitSignal, Shim};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error, Flags, StartOpts};
use containerd_shim_protos::api::DeleteResponse;

use service::{now_timestamp, Service};

/// The runtime type containerd knows the shim by.
const RUNTIME_ID: &str = "io.containerd.vminitd.v2";

/// The shim: its id and namespace as containerd gave them.
struct VminitdShim {
    id: String,
    namespace: String,
    exit: std::sync::Arc<ExitSignal>,
}

#[async_trait::async_trait]
impl Shim for VminitdShim {
    type T = Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        VminitdShim {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            exit: std::sync::Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // One shim per pod (the containers of a pod are made in its
        // sandbox's VM), else one per container. containerd runs `start`
        // in the container's bundle.
        let bundle = std::env::current_dir().map_err(|e| Error::Other(format!("the bundle: {e}")))?;
        let grouping = pod::grouping(&bundle, &opts.id);
        let address = spawn(opts, &grouping, Vec::new()).await?;
        containerd_shim::asynchronous::util::write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        // containerd's clean-up after a shim that is gone: the working
        // directory is the bundle; whatever of the container is left goes.
        let bundle = std::env::current_dir().map_err(|e| Error::Other(format!("the bundle: {e}")))?;
        service::clean_up(&bundle, &self.id).await;
        Ok(DeleteResponse {
            pid: 0,
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(now_timestamp()).into(),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        Service::new(&self.id, &self.namespace, publisher, self.exit.clone())
    }
}

/// The `vmshim` program next to this binary (where `make install` puts
/// both, and where cargo builds both).
fn vmshim_program() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("vmshim")))
        .filter(|p| Path::new(p).exists())
        .unwrap_or_else(|| "vmshim".into())
}

#[tokio::main]
async fn main() {
    run::<VminitdShim>(RUNTIME_ID, None).await;
}
