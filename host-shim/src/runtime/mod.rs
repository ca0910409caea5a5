//! An OCI runtime with runc's operations, where each container is a
//! micro-VM of its own (`vmshim runtime`).
//!
//! `create` translates the bundle ([`crate::image::container_spec`],
//! [`crate::image::RootPlacement::Guest`]), packs its root directory into a read-only
//! ext4 image (cached by content), and starts an instance daemon
//! ([`crate::instance`]) that boots the VM, creates the container there
//! with the caller's stdio attached (as runc hands its stdio to the
//! container), and holds the VM until `delete`. `start`, `kill`, `exec`,
//! `state` and `stats` ask the VM's agent (`stats` of a stopped container:
//! the figures its daemon kept as it ended); `delete` stops the daemon,
//! which shuts the VM down.
//!
//! A terminal (`process.terminal`) is a host pseudo-terminal relayed to
//! the process's terminal in the VM, its master sent to the caller's
//! console socket (`console`). The bundle's hooks but `startContainer`
//! (which runs in the container) run on the host (`hooks`): `prestart`,
//! `createRuntime` and `createContainer` once the container is created in
//! its VM, `poststart` after `start`, `poststop` at `delete`.
//!
//! State lives in the root directory (`--root`), one directory per
//! container:
//!
//! | path | what |
//! |---|---|
//! | `ROOT/ID/state.json` | the `Record`: bundle, root filesystem, creation time, annotations |
//! | `ROOT/ID/instances/NAME/` | the instance holding the VM (`instance.json`, `spec.json`, the daemon's `log`); NAME is the id |
//!
//! The root and every directory in it are 0700, their files 0600, whatever
//! the umask (runc's root is 0700 too); a root that is a link, another
//! user's, or that others may write to is refused ([`crate::PrivateError`]).
//!
//! The status is the agent's while the VM runs; a container whose daemon
//! or VM is gone is `stopped`. Its `pid` is the host pid of the VM's QEMU
//! while created or running (the container's process lives in the VM and
//! has no host pid), 0 once stopped.

pub(crate) mod console;
mod exec;
pub(crate) mod hooks;
pub mod pod;
mod process;
pub(crate) mod relay;
mod signal;
mod state;
mod stats;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_proto::{ContainerSpec, ContainerStatus, Endpoint, ErrorCode, ExitStatus};

pub use console::receive_master;

use crate::accel::Accel;
use crate::assets::{self, AssetError};
use crate::client::{AgentAddr, Client, ClientError};
use crate::image::{Bundle, ImageError};
use crate::instance::{ContainerMain, ContainerNetwork, Instance, InstanceError, InstanceSpec, Instances, Status};
use crate::netns::{self, Enter, NetnsError, SpecNetwork};
use crate::private::{ensure_private_dir, PrivateError};
use crate::vm::VmConfig;
pub use console::ConsoleError;
pub use exec::{Exec, ExecProcess, ExecStdio};
use hooks::HostHooks;
pub use pod::{Pod, PodDir, PodMember};
pub use process::ExecFlags;
pub use signal::parse_signal;
pub(crate) use state::Record;
pub use state::{rfc3339_nanos, State, OCI_VERSION};
pub use stats::{RuncEvent, RuncStats};

/// The default root directory, as `--root`.
pub const DEFAULT_ROOT: &str = "/run/vmshim-runtime";

/// How long `delete` gives the VM to shut down before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `wait` looks for the container's end.
const WAIT_POLL: Duration = Duration::from_millis(20);

/// Why a runtime operation failed. The messages of the lifecycle errors
/// are runc's.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An id that is not 1 to 64 letters, digits, `_`, `.` or `-`, or that
    /// starts with `.` or `-`.
    #[error("invalid container id format: {id}")]
    BadId {
        /// The id as given.
        id: String,
    },
    /// `create` with the id of a container that exists.
    #[error("container with id exists: {id}")]
    Exists {
        /// The id.
        id: String,
    },
    /// No container of that id in the root directory.
    #[error("container does not exist")]
    NotExist {
        /// The id asked for.
        id: String,
    },
    /// `start` of a container whose process has ended.
    #[error("cannot start a container that has stopped")]
    StartStopped {
        /// The container.
        id: String,
    },
    /// `start` of a container already started.
    #[error("cannot start an already running container")]
    StartRunning {
        /// The container.
        id: String,
    },
    /// `start` of a container that is creating or paused.
    #[error("cannot start a container in the {status} state")]
    StartOther {
        /// The container.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// `kill` or `update` of a container whose VM no longer runs it.
    #[error("container not running")]
    NotRunning {
        /// The container.
        id: String,
    },
    /// `resume` of a container that is not paused.
    #[error("container not paused")]
    NotPaused {
        /// The container.
        id: String,
    },
    /// `exec` into a container whose process has ended.
    #[error("cannot exec in a stopped container")]
    ExecStopped {
        /// The container.
        id: String,
    },
    /// `exec` into a container that is still being created.
    #[error("cannot exec in a container in the {status} state")]
    ExecOther {
        /// The container.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// The process to run is not valid; runc's words.
    #[error("{detail}")]
    BadProcess {
        /// runc's message.
        detail: String,
    },
    /// `delete` without `--force` of a container that has not stopped.
    #[error("cannot delete container {id} that is not stopped: {status}")]
    NotStopped {
        /// The container.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// A terminal and a console socket that do not go together; runc's
    /// words.
    #[error("{detail}")]
    Terminal {
        /// The container.
        id: String,
        /// runc's message.
        detail: &'static str,
    },
    /// The terminal could not be handed to the console socket.
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// A hook failed; runc's words (`error running prestart hook #0: ...`).
    #[error("{detail}")]
    Hook {
        /// The container.
        id: String,
        /// runc's message, with the hook's status, stdout and stderr.
        detail: String,
    },
    /// The container's network namespace cannot be the VM's network.
    #[error("container {id}: {source}")]
    Network {
        /// The container.
        id: String,
        /// Why.
        source: NetnsError,
    },
    /// The bundle's hooks could not be read, or the container's VM did not
    /// start.
    #[error("container {id}: {detail}")]
    CreateFailed {
        /// The container.
        id: String,
        /// What failed.
        detail: String,
    },
    /// `run` (or `wait`) saw the VM end with no exit status from the agent.
    #[error("container {id}: its VM ended without reporting how its process ended")]
    NoExit {
        /// The container.
        id: String,
    },
    /// The bundle could not be read, or asks for what the agent cannot
    /// carry.
    #[error(transparent)]
    Bundle(#[from] ImageError),
    /// The kernel or initramfs is missing, or the root filesystem image
    /// could not be made.
    #[error(transparent)]
    Asset(#[from] AssetError),
    /// The container's instance (its VM's daemon) failed.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// The agent refused a request, or could not be reached.
    /// (Not the error's source: the message has it whole.)
    #[error("container {id}: {error}")]
    Agent {
        /// The container.
        id: String,
        /// What the client saw.
        error: ClientError,
    },
    /// A file of the root directory could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// A `state.json` that does not parse.
    #[error("{} is corrupt: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A state directory or file that could not be made private, or that
    /// is not safe to use.
    #[error(transparent)]
    Private(#[from] PrivateError),
    /// Its VM's memory could not be resized (`update --memory`), or did not
    /// all come back in time.
    #[error("container {id}: memory: {detail}")]
    Memory {
        /// The container.
        id: String,
        /// What failed, or how far the guest came.
        detail: String,
    },
}

/// The VM each container gets.
#[derive(Debug, Clone)]
pub struct VmSettings {
    /// The guest kernel; `None`: the build directory's.
    pub kernel: Option<PathBuf>,
    /// The initramfs; `None`: the build directory's.
    pub initramfs: Option<PathBuf>,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Guest memory, in MiB (`--vm-memory`; not the container's limit).
    pub memory_mib: u32,
    /// `None`: KVM where it really runs a guest, else TCG.
    pub accel: Option<Accel>,
    /// How long the agent may take to answer after QEMU starts.
    pub boot_timeout: Duration,
}

impl Default for VmSettings {
    fn default() -> VmSettings {
        VmSettings {
            kernel: None,
            initramfs: None,
            cpus: 1,
            memory_mib: 256,
            accel: None,
            boot_timeout: Duration::from_secs(30),
        }
    }
}

/// How to create a container.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// The bundle directory (`config.json` and its root).
    pub bundle: PathBuf,
    /// `--console-socket`: where a terminal's master goes (one
    /// `SCM_RIGHTS` message, as runc sends it).
    pub console_socket: Option<PathBuf>,
    /// Attach this process's stdin to the container's process (else its
    /// stdin is `/dev/null`). Its stdout and stderr are always attached.
    pub stdin: bool,
    /// The caller stays with the container (runc's `run` without
    /// `--detach`): a terminal without a console socket is relayed over
    /// this process's stdin and stdout. Else (`create`, `run --detach`) a
    /// terminal needs a console socket, as with runc.
    pub foreground: bool,
    /// Host directories the VM shares too, after those of the spec's bind
    /// mounts (a pod's directory, [`PodDir::share`]).
    pub shares: Vec<crate::vm::virtiofs::SharedPath>,
}

/// The containers of one root directory.
#[derive(Debug, Clone)]
pub struct Runtime {
    root: PathBuf,
    vm: VmSettings,
    /// The vmshim program the instance daemons run; found at run time
    /// when `None`.
    program: Option<PathBuf>,
    warn: Warn,
}

/// Where warnings go: failures that do not fail the operation (a
/// `poststart` or `poststop` hook's, as runc logs them).
#[derive(Clone)]
struct Warn(Arc<dyn Fn(&RuntimeError) + Send + Sync>);

impl std::fmt::Debug for Warn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Warn")
    }
}

/// What is known of a container now.
struct Live {
    record: Record,
    status: ContainerStatus,
    /// QEMU's host pid, while created or running.
    pid: u32,
    /// The agent and its key, while the VM runs.
    endpoint: Option<AgentAddr>,
    /// QEMU's control socket, while the VM runs.
    qmp: Option<PathBuf>,
}

impl Runtime {
    /// The containers of root directory `root` (made absolute: the daemons
    /// run in `/`).
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        let root = root.into();
        Runtime {
            root: std::path::absolute(&root).unwrap_or(root),
            vm: VmSettings::default(),
            program: None,
            warn: Warn(Arc::new(|e| eprintln!("vmshim runtime: warning: {e}"))),
        }
    }

    /// Sends warnings (failures that do not fail the operation) to `warn`
    /// instead of stderr.
    pub fn with_warnings(mut self, warn: impl Fn(&RuntimeError) + Send + Sync + 'static) -> Runtime {
        self.warn = Warn(Arc::new(warn));
        self
    }

    /// Boots containers' VMs with `vm`.
    pub fn with_vm(mut self, vm: VmSettings) -> Runtime {
        self.vm = vm;
        self
    }

    /// Runs the instance daemons with `program` (a vmshim binary).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Runtime {
        self.program = Some(program.into());
        self
    }

    /// The root directory (`--root`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The instances of container `id`: one, holding its VM.
    fn instances(&self, id: &str) -> Instances {
        let instances = Instances::at(self.dir(id));
        match &self.program {
            Some(p) => instances.with_program(p),
            None => instances,
        }
    }

    /// Creates container `id` from `options.bundle`: its VM booted, the
    /// container created in it with this process's stdio, its process
    /// waiting for [`Runtime::start`]. On failure nothing of it is left.
    pub async fn create(&self, id: &str, options: &CreateOptions) -> Result<State, RuntimeError> {
        check_id(id)?;
        let Bundle { spec, rootfs, shares } = Bundle::read(&options.bundle, id)?;
        check_terminal(
            id,
            spec.process.terminal,
            !options.foreground,
            options.console_socket.is_some(),
        )?;
        let console_socket = match &options.console_socket {
            Some(path) => Some(std::path::absolute(path).map_err(io_err("resolve", path))?),
            None => None,
        };
        let hooks = HostHooks::of_bundle(&options.bundle).map_err(|detail| RuntimeError::CreateFailed {
            id: id.to_owned(),
            detail,
        })?;
        let dir = self.dir(id);
        // runc's root is 0700; so is ours, and each container's directory.
        ensure_private_dir(&self.root)?
            .create_dir(id)
            .map_err(|e| match e.io_kind() {
                Some(io::ErrorKind::AlreadyExists) => RuntimeError::Exists { id: id.to_owned() },
                _ => e.into(),
            })?;
        let record = Record {
            id: id.to_owned(),
            bundle: PathBuf::from(&spec.bundle),
            rootfs: rootfs.clone(),
            created_unix_ns: now_unix_ns(),
            annotations: spec.annotations.clone(),
            hooks,
        };
        let made = async {
            state::write_record(&dir, &record)?;
            let (network, enter) = container_network(id, &spec)?;
            let main = ContainerMain {
                spec,
                stdin: options.stdin,
                console_socket,
                network,
            };
            let (this, id) = (self.clone(), id.to_owned());
            let extra_shares = options.shares.clone();
            // Blocking: the image is packed on a first use, and the daemon
            // is waited for until it has taken the instance over.
            tokio::task::spawn_blocking(move || {
                let mut instance = this.instance_spec(&rootfs)?;
                instance.shares = shares;
                instance.shares.extend(extra_shares);
                instance.container = Some(main);
                this.instances(&id)
                    .start_container(&instance_name(&id), &instance, enter)
                    .map_err(|e| start_err(&id, e))
            })
            .await
            .expect("creating a container does not panic")
        }
        .await;
        let starting = match made {
            Ok(starting) => starting,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        // The container's pid: its instance's daemon, in the container's
        // network namespace, waiting. The hooks that set that namespace up
        // (libnetwork's) run now, before the VM takes its interfaces.
        let pid = starting.pid();
        let creating = State::new(&record, ContainerStatus::Creating, pid);
        for (stage, hooks) in record.hooks.before_boot() {
            if let Err(detail) = self.run_hooks(stage, hooks, &creating).await {
                tokio::task::spawn_blocking(move || starting.abort())
                    .await
                    .expect("aborting a start does not panic");
                self.destroy(id, &record, None).await?;
                return Err(RuntimeError::Hook {
                    id: id.to_owned(),
                    detail,
                });
            }
        }
        let id_owned = id.to_owned();
        let proceeded = tokio::task::spawn_blocking(move || starting.proceed().map_err(|e| start_err(&id_owned, e)))
            .await
            .expect("creating a container does not panic");
        if let Err(e) = proceeded {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        // The container exists in its VM.
        for (stage, hooks) in record.hooks.after_create() {
            if let Err(detail) = self.run_hooks(stage, hooks, &creating).await {
                let endpoint = self.live(id).await.ok().and_then(|live| live.endpoint);
                self.destroy(id, &record, endpoint.as_ref()).await?;
                return Err(RuntimeError::Hook {
                    id: id.to_owned(),
                    detail,
                });
            }
        }
        Ok(State::new(&record, ContainerStatus::Created, pid))
    }

    /// Runs `hooks` of `stage` with `state` on their stdin.
    async fn run_hooks(&self, stage: &'static str, hooks: &[agent_proto::Hook], state: &State) -> Result<(), String> {
        if hooks.is_empty() {
            return Ok(());
        }
        let state = serde_json::to_string(state).expect("a state serializes");
        let hooks = hooks.to_vec();
        tokio::task::spawn_blocking(move || hooks::run(stage, &hooks, &state))
            .await
            .expect("running hooks does not panic")
    }

    /// Runs every one of `hooks` of `stage` with `state`, each failure
    /// only a warning (`poststart` and `poststop`, as the spec has them).
    async fn run_hooks_warning(&self, id: &str, stage: &'static str, hooks: &[agent_proto::Hook], state: &State) {
        if hooks.is_empty() {
            return;
        }
        let state = serde_json::to_string(state).expect("a state serializes");
        let hooks = hooks.to_vec();
        let failures = tokio::task::spawn_blocking(move || hooks::run_every(stage, &hooks, &state))
            .await
            .expect("running hooks does not panic");
        for detail in failures {
            (self.warn.0)(&RuntimeError::Hook {
                id: id.to_owned(),
                detail,
            });
        }
    }

    /// The instance spec of a VM whose root filesystem is `rootfs`.
    fn instance_spec(&self, rootfs: &Path) -> Result<InstanceSpec, RuntimeError> {
        let mut cfg = VmConfig::new(
            assets::kernel(self.vm.kernel.as_deref())?,
            assets::initramfs(self.vm.initramfs.as_deref())?,
        );
        cfg.rootfs = Some(assets::bundle_rootfs_image(rootfs)?);
        cfg.cpus = self.vm.cpus;
        cfg.memory_mib = self.vm.memory_mib;
        cfg.accel = self.vm.accel;
        cfg.boot_timeout = self.vm.boot_timeout;
        Ok(InstanceSpec::from_config(&cfg))
    }

    /// Container `id` as it is now.
    async fn live(&self, id: &str) -> Result<Live, RuntimeError> {
        check_id(id)?;
        let not_exist = || RuntimeError::NotExist { id: id.to_owned() };
        let record = state::read_record(&self.dir(id))?.ok_or_else(not_exist)?;
        let stopped = |record| Live {
            record,
            status: ContainerStatus::Stopped,
            pid: 0,
            endpoint: None,
            qmp: None,
        };
        let instances = self.instances(id);
        let name = instance_name(id);
        let instance = match tokio::task::spawn_blocking(move || instances.get(&name)).await {
            Ok(Ok(instance)) => instance,
            Ok(Err(InstanceError::Unknown { .. })) => return Ok(stopped(record)),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Ok(stopped(record)),
        };
        let endpoint = instance
            .endpoint
            .as_deref()
            .and_then(|e| e.parse::<Endpoint>().ok())
            .map(|endpoint| AgentAddr::new(endpoint, instance.agent_key.clone()));
        let status = match (instance.status, &endpoint) {
            (Status::Starting, _) => ContainerStatus::Creating,
            (Status::Stopping, _) => ContainerStatus::Stopped,
            _ if instance.exit.is_some() => ContainerStatus::Stopped,
            (Status::Running, Some(endpoint)) => match agent_state(endpoint, id).await {
                Some(status) => status,
                None => ContainerStatus::Stopped,
            },
            (Status::Running, None) => ContainerStatus::Stopped,
        };
        let pid = match status {
            ContainerStatus::Stopped => 0,
            _ => instance.pid,
        };
        Ok(Live {
            record,
            status,
            pid,
            endpoint,
            qmp: instance.qmp,
        })
    }

    /// Container `id`'s state, as `runc state` prints it.
    pub async fn state(&self, id: &str) -> Result<State, RuntimeError> {
        let live = self.live(id).await?;
        Ok(State::new(&live.record, live.status, live.pid))
    }

    /// Every container of the root directory, by id.
    pub async fn list(&self) -> Result<Vec<State>, RuntimeError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.root)(e)),
        };
        let mut ids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| check_id(id).is_ok())
            .collect();
        ids.sort();
        let mut states = Vec::new();
        for id in ids {
            match self.state(&id).await {
                Ok(state) => states.push(state),
                // Being created or deleted meanwhile.
                Err(RuntimeError::NotExist { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(states)
    }

    /// Starts created container `id`'s process.
    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let live = self.live(id).await?;
        let id = id.to_owned();
        match (live.status, &live.endpoint) {
            (ContainerStatus::Created, Some(endpoint)) => {
                let client = connect(endpoint, &id).await?;
                let started = client.start_container(&id).await;
                client.close().await;
                started.map_err(|e| agent_err(&id, e))?;
                let running = State::new(&live.record, ContainerStatus::Running, live.pid);
                let hooks = &live.record.hooks.poststart;
                self.run_hooks_warning(&id, "poststart", hooks, &running).await;
                Ok(())
            }
            (ContainerStatus::Stopped | ContainerStatus::Created, _) => Err(RuntimeError::StartStopped { id }),
            (ContainerStatus::Running, _) => Err(RuntimeError::StartRunning { id }),
            (status @ (ContainerStatus::Creating | ContainerStatus::Paused), _) => Err(RuntimeError::StartOther {
                id,
                status: status.name(),
            }),
        }
    }

    /// Sends `signal` to container `id`'s process (with `all`, to every
    /// process of the container).
    pub async fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), RuntimeError> {
        let live = self.live(id).await?;
        match (live.status, &live.endpoint) {
            (ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused, Some(endpoint)) => {
                let client = connect(endpoint, id).await?;
                let killed = client.kill_container(id, signal, all).await;
                client.close().await;
                killed.map_err(|e| agent_err(id, e))
            }
            _ => Err(RuntimeError::NotRunning { id: id.to_owned() }),
        }
    }

    /// New cgroup limits for container `id` (`update`). A memory limit
    /// resizes its VM too: the balloon gives the guest the limit plus the
    /// agent's headroom (all the VM booted with for no limit, or a limit
    /// above that), lowered after the container's limit and raised before
    /// it, and waited for up to [`RESIZE_WAIT`] (a guest that cannot free
    /// the memory yet keeps giving it back as it is freed: a warning). A
    /// pod's sandbox keeps its VM's size: the VM is the pod's.
    pub async fn update(&self, id: &str, resources: agent_proto::Resources) -> Result<(), RuntimeError> {
        let live = self.live(id).await?;
        match (live.status, &live.endpoint) {
            (ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused, Some(endpoint)) => {
                let client = connect(endpoint, id).await?;
                let limit = resources.memory.as_ref().and_then(|m| m.limit);
                let updated = match (limit, &live.qmp) {
                    (Some(limit), Some(qmp)) if !is_pod_sandbox(&live.record) => {
                        self.update_with_memory(&client, id, qmp, limit, resources).await
                    }
                    _ => client
                        .update_container(id, resources)
                        .await
                        .map_err(|e| agent_err(id, e)),
                };
                client.close().await;
                updated
            }
            _ => Err(RuntimeError::NotRunning { id: id.to_owned() }),
        }
    }

    /// [`Runtime::update`] with a memory limit: the container's cgroup, the
    /// workloads' and its VM's balloon, in the order the direction needs
    /// ([`crate::vm::memory::apply`]).
    async fn update_with_memory(
        &self,
        client: &Client,
        id: &str,
        qmp: &Path,
        limit: i64,
        resources: agent_proto::Resources,
    ) -> Result<(), RuntimeError> {
        let memory_err = |e: crate::vm::memory::MemoryError| RuntimeError::Memory {
            id: id.to_owned(),
            detail: e.describe(),
        };
        let plan = crate::vm::memory::plan(client, qmp, crate::vm::memory::Size::Container { limit })
            .await
            .map_err(memory_err)?;
        let follow = async {
            client
                .update_container(id, resources)
                .await
                .map_err(|e| agent_err(id, e))
        };
        let resized = crate::vm::memory::apply(client, qmp, &plan, RESIZE_WAIT, follow, memory_err).await?;
        if !resized.reached {
            (self.warn.0)(&RuntimeError::Memory {
                id: id.to_owned(),
                detail: format!(
                    "the guest has come to {} MiB of the {} MiB asked for within {RESIZE_WAIT:?}; it gives the rest back as its memory is freed",
                    resized.balloon.actual_bytes >> 20,
                    plan.target_bytes >> 20
                ),
            });
        }
        Ok(())
    }

    /// Freezes every process of running container `id` (`pause`), or thaws
    /// a paused one (`resume`), as runc's cgroup freezer does.
    pub async fn set_paused(&self, id: &str, paused: bool) -> Result<(), RuntimeError> {
        let live = self.live(id).await?;
        let want = if paused {
            ContainerStatus::Running
        } else {
            ContainerStatus::Paused
        };
        match (live.status, &live.endpoint) {
            (status, Some(endpoint)) if status == want => {
                let client = connect(endpoint, id).await?;
                let done = if paused {
                    client.pause_container(id).await
                } else {
                    client.resume_container(id).await
                };
                client.close().await;
                done.map_err(|e| agent_err(id, e))
            }
            _ if paused => Err(RuntimeError::NotRunning { id: id.to_owned() }),
            _ => Err(RuntimeError::NotPaused { id: id.to_owned() }),
        }
    }

    /// Deletes container `id`: its VM shut down, its state removed. A
    /// created or stopped container goes; a running one only with `force`
    /// (its process dies with the VM).
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let live = self.live(id).await?;
        match live.status {
            ContainerStatus::Stopped | ContainerStatus::Created => {}
            _ if force => {}
            status => {
                return Err(RuntimeError::NotStopped {
                    id: id.to_owned(),
                    status: status.name(),
                })
            }
        }
        let endpoint = live.endpoint.filter(|_| live.status != ContainerStatus::Stopped);
        self.destroy(id, &live.record, endpoint.as_ref()).await
    }

    /// Shuts container `id`'s VM down, runs its `poststop` hooks and
    /// removes its state. A container whose process has not ended
    /// (`endpoint`: its agent) is killed first, as runc kills it: its
    /// daemon then stops the VM in order and exits.
    async fn destroy(&self, id: &str, record: &Record, endpoint: Option<&AgentAddr>) -> Result<(), RuntimeError> {
        if let Some(endpoint) = endpoint {
            if let Ok(client) = Client::connect(endpoint).await {
                let _ = client.kill_container(id, libc::SIGKILL, true).await;
                client.close().await;
            }
        }
        let (instances, name) = (self.instances(id), instance_name(id));
        let stopped = tokio::task::spawn_blocking(move || instances.stop(&name, STOP_TIMEOUT))
            .await
            .expect("stopping an instance does not panic");
        match stopped {
            Ok(()) | Err(InstanceError::Unknown { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let stopped = State::new(record, ContainerStatus::Stopped, 0);
        self.run_hooks_warning(id, "poststop", &record.hooks.poststop, &stopped)
            .await;
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir)(e)),
        }
    }

    /// Sets the size of created or running container `id`'s terminal.
    pub async fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), RuntimeError> {
        let live = self.live(id).await?;
        let Some(endpoint) = live.endpoint.filter(|_| live.status != ContainerStatus::Stopped) else {
            return Err(RuntimeError::NotRunning { id: id.to_owned() });
        };
        let client = connect(&endpoint, id).await?;
        let resized = async {
            let process = client.container_state(id).await?.process;
            client.resize(process, rows, cols).await
        }
        .await;
        client.close().await;
        resized.map_err(|e| agent_err(id, e))
    }

    /// Waits until container `id`'s process has ended and its output has
    /// been written out; returns how it ended.
    pub async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError> {
        check_id(id)?;
        if state::read_record(&self.dir(id))?.is_none() {
            return Err(RuntimeError::NotExist { id: id.to_owned() });
        }
        // The container's pid, which `run` has as its child.
        let mut pid = None;
        loop {
            let (instances, name) = (self.instances(id), instance_name(id));
            let instance = tokio::task::spawn_blocking(move || instances.get(&name))
                .await
                .expect("reading an instance does not panic");
            match instance {
                Ok(Instance { exit: Some(status), .. }) => return Ok(status),
                Ok(instance) => {
                    pid = Some(instance.pid);
                    tokio::time::sleep(WAIT_POLL).await
                }
                // Gone without a word (killed): as our child, its status
                // says how.
                Err(InstanceError::Unknown { .. }) => {
                    return pid
                        .and_then(reap_child)
                        .ok_or_else(|| RuntimeError::NoExit { id: id.to_owned() })
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// runc's check of a terminal against a console socket: a detached
/// terminal needs one, and only a detached terminal takes one.
fn check_terminal(id: &str, terminal: bool, detach: bool, console_socket: bool) -> Result<(), RuntimeError> {
    let detail = match (terminal, detach, console_socket) {
        (true, true, false) => "cannot allocate tty if runc will detach without setting console socket",
        (true, true, true) | (_, _, false) => return Ok(()),
        (_, _, true) => "cannot use console socket if runc will not detach or allocate tty",
    };
    Err(RuntimeError::Terminal {
        id: id.to_owned(),
        detail,
    })
}

/// Writes `pid` to `path` whole, without a newline, as runc's `--pid-file`
/// (a new `.NAME` beside it, mode 0666 less the umask, renamed into place):
/// the file is the caller's, where the caller wants it.
pub fn write_pid_file(path: &Path, pid: u32) -> Result<(), RuntimeError> {
    state::write_pid_file(path, pid)
}

/// A container id as runc and the agent take it: 1 to 64 of `A-Z a-z 0-9
/// _ . -`, not starting with `.` or `-`.
fn check_id(id: &str) -> Result<(), RuntimeError> {
    let b = id.as_bytes();
    let ok = (1..=64).contains(&b.len())
        && !matches!(b[0], b'.' | b'-')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    match ok {
        true => Ok(()),
        false => Err(RuntimeError::BadId { id: id.to_owned() }),
    }
}

/// How long `update --memory` waits for the guest to give its memory back
/// or take it.
pub const RESIZE_WAIT: Duration = Duration::from_secs(10);

/// Whether the container is a pod's sandbox (CRI's
/// `io.kubernetes.cri.container-type: sandbox`), whose VM holds the pod's
/// other containers too.
fn is_pod_sandbox(record: &Record) -> bool {
    record
        .annotations
        .get("io.kubernetes.cri.container-type")
        .is_some_and(|t| t == "sandbox")
}

/// The name of container `id`'s instance: the id (the VM's host name),
/// or `container` for an id an instance name cannot be (one starting with
/// `_`).
fn instance_name(id: &str) -> String {
    match crate::network::check_name("instance", id) {
        Ok(()) => id.to_owned(),
        Err(_) => "container".to_owned(),
    }
}

/// The network the VM of container `id` (whose spec is `spec`) gets, and
/// the namespace its pid is to be started in: the spec's network
/// namespace, made (a new one, as runc makes it; only root may) or
/// joined by path, or none (NAT).
fn container_network(id: &str, spec: &ContainerSpec) -> Result<(ContainerNetwork, Option<Enter>), RuntimeError> {
    let network_err = |source| RuntimeError::Network {
        id: id.to_owned(),
        source,
    };
    let host = || {
        netns::own_namespace().map_err(|source| {
            network_err(netns::NetnsError::Open {
                path: "/proc/thread-self/ns/net".into(),
                source,
            })
        })
    };
    Ok(match SpecNetwork::of(spec) {
        SpecNetwork::Host => (ContainerNetwork::Nat, None),
        // SAFETY: geteuid has no preconditions.
        SpecNetwork::New if unsafe { libc::geteuid() } != 0 => (ContainerNetwork::Loopback, None),
        SpecNetwork::New => (ContainerNetwork::Namespace { host: host()? }, Some(Enter::New)),
        SpecNetwork::Path(path) => {
            let fd = netns::open_namespace(&path).map_err(network_err)?;
            (ContainerNetwork::Namespace { host: host()? }, Some(Enter::Join(fd)))
        }
    })
}

/// An instance's failure to start, as the runtime words it.
fn start_err(id: &str, e: InstanceError) -> RuntimeError {
    match e {
        InstanceError::StartFailed { detail, .. } => RuntimeError::CreateFailed {
            id: id.to_owned(),
            detail,
        },
        e => e.into(),
    }
}

/// How child `pid` ended, if it is a child of this process that has ended
/// (it is reaped); its exit code is the container's status.
fn reap_child(pid: u32) -> Option<ExitStatus> {
    let mut status = 0;
    // SAFETY: waitpid writes one int, which lives across the call; WNOHANG
    // keeps it from blocking, and a pid that is not our child is ECHILD.
    let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    if reaped != pid as libc::pid_t {
        return None;
    }
    if libc::WIFEXITED(status) {
        Some(ExitStatus {
            code: Some(libc::WEXITSTATUS(status)),
            signal: None,
        })
    } else if libc::WIFSIGNALED(status) {
        Some(ExitStatus {
            code: None,
            signal: Some(libc::WTERMSIG(status)),
        })
    } else {
        None
    }
}

/// The container's status as its agent reports it; `None` when the agent
/// cannot be reached or no longer knows it.
async fn agent_state(endpoint: &AgentAddr, id: &str) -> Option<ContainerStatus> {
    let client = Client::connect(endpoint).await.ok()?;
    let info = client.container_state(id).await;
    client.close().await;
    info.ok().map(|i| i.status)
}

async fn connect(endpoint: &AgentAddr, id: &str) -> Result<Client, RuntimeError> {
    Client::connect(endpoint).await.map_err(|e| agent_err(id, e))
}

/// An agent's error, as runc would word it where it has a word for it.
fn agent_err(id: &str, e: ClientError) -> RuntimeError {
    let id = id.to_owned();
    match e.agent_error().map(|b| b.code) {
        Some(ErrorCode::NotFound) => RuntimeError::NotExist { id },
        _ => RuntimeError::Agent { id, error: e },
    }
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A closure that wraps an I/O error with what was being done, and where.
fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RuntimeError + 'a {
    move |source| RuntimeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;

    #[test]
    fn ids_as_runc_takes_them() {
        for ok in ["a", "web-1", "A_b.c", "_x", &"x".repeat(64)] {
            assert!(check_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "-a", "a/b", "a b", &"x".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(instance_name("web-1"), "web-1");
        assert_eq!(instance_name("_x"), "container");
    }

    #[tokio::test]
    async fn unknown_containers_do_not_exist() {
        let t = TestDir::new("runtime-unknown");
        let runtime = Runtime::new(t.path().join("root"));
        let tty = agent_proto::ProcessSpec {
            terminal: true,
            ..Default::default()
        };
        for err in [
            runtime.state("nope").await.unwrap_err(),
            runtime.start("nope").await.unwrap_err(),
            runtime.kill("nope", 9, false).await.unwrap_err(),
            runtime.delete("nope", true).await.unwrap_err(),
            runtime.wait("nope").await.unwrap_err(),
            runtime.resize("nope", 24, 80).await.unwrap_err(),
            runtime
                .exec_process("nope", &ExecProcess::Flags(ExecFlags::default()))
                .unwrap_err(),
            runtime
                .exec("nope", tty.clone(), ExecStdio::ConsoleSocket("/s".into()))
                .await
                .err()
                .unwrap(),
        ] {
            assert_eq!(err.to_string(), "container does not exist");
        }
        assert!(runtime.list().await.unwrap().is_empty());
        assert!(matches!(runtime.state("../x").await, Err(RuntimeError::BadId { .. })));
        let no_tty = ExecStdio::ConsoleSocket("/s".into());
        let err = runtime.exec("nope", Default::default(), no_tty).await.err().unwrap();
        assert_eq!(
            err.to_string(),
            "cannot use console socket if runc will not detach or allocate tty"
        );
    }

    /// A container whose VM is gone (its daemon killed): stopped, pid 0;
    /// start and kill refused as runc refuses them; delete removes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_container_without_its_vm_is_stopped() {
        let t = TestDir::new("runtime-stopped");
        let runtime = Runtime::new(t.path());
        let dir = runtime.dir("c1");
        fs::create_dir_all(&dir).unwrap();
        let record = Record {
            id: "c1".into(),
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created_unix_ns: 1,
            annotations: Default::default(),
            hooks: Default::default(),
        };
        state::write_record(&dir, &record).unwrap();
        let state = runtime.state("c1").await.unwrap();
        assert_eq!((state.status.as_str(), state.pid), ("stopped", 0));
        assert_eq!(runtime.list().await.unwrap(), [state]);
        let err = runtime.start("c1").await.unwrap_err().to_string();
        assert_eq!(err, "cannot start a container that has stopped");
        let err = runtime.kill("c1", 15, false).await.unwrap_err().to_string();
        assert_eq!(err, "container not running");
        let (stdin, stdout, stderr) = (None, tempfile(&t), tempfile(&t));
        let process = agent_proto::ProcessSpec {
            args: vec!["true".into()],
            ..Default::default()
        };
        let err = runtime
            .exec("c1", process, ExecStdio::Files { stdin, stdout, stderr })
            .await;
        assert_eq!(err.err().unwrap().to_string(), "cannot exec in a stopped container");
        runtime.delete("c1", false).await.unwrap();
        assert!(!dir.exists());
        assert_eq!(
            runtime.state("c1").await.unwrap_err().to_string(),
            "container does not exist"
        );
    }

    #[test]
    fn terminals_and_console_sockets_as_runc_pairs_them() {
        let check = |terminal, detach, socket| check_terminal("c", terminal, detach, socket).map_err(|e| e.to_string());
        let need = "cannot allocate tty if runc will detach without setting console socket";
        let refuse = "cannot use console socket if runc will not detach or allocate tty";
        assert_eq!(check(true, true, false), Err(need.into()));
        assert_eq!(check(true, true, true), Ok(()));
        assert_eq!(
            check(true, false, false),
            Ok(()),
            "run in the foreground: its own stdio"
        );
        assert_eq!(check(true, false, true), Err(refuse.into()));
        assert_eq!(check(false, true, true), Err(refuse.into()));
        assert_eq!(check(false, true, false), Ok(()));
    }

    #[tokio::test]
    async fn create_refuses_a_terminal_and_a_taken_id_and_leaves_nothing() {
        let t = TestDir::new("runtime-create");
        let bundle = t.path().join("bundle");
        fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let mut spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {"terminal": true, "user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"}
        });
        fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        let runtime = Runtime::new(t.path().join("root"));
        let options = CreateOptions {
            bundle: bundle.clone(),
            console_socket: None,
            stdin: false,
            foreground: false,
            shares: Vec::new(),
        };
        let err = runtime.create("c1", &options).await.unwrap_err().to_string();
        assert_eq!(
            err,
            "cannot allocate tty if runc will detach without setting console socket"
        );
        assert!(!runtime.dir("c1").exists());

        spec["process"]["terminal"] = serde_json::json!(false);
        fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
        fs::create_dir_all(runtime.dir("taken")).unwrap();
        let err = runtime.create("taken", &options).await.unwrap_err().to_string();
        assert_eq!(err, "container with id exists: taken");
        assert!(runtime.dir("taken").exists(), "someone else's is left alone");

        // No kernel: an error, and nothing left.
        let runtime = runtime.with_vm(VmSettings {
            kernel: Some(t.path().join("no-kernel")),
            ..VmSettings::default()
        });
        let err = runtime.create("c2", &options).await.unwrap_err().to_string();
        assert!(err.contains("no-kernel"), "{err}");
        assert!(!runtime.dir("c2").exists());
    }

    fn tempfile(t: &TestDir) -> fs::File {
        fs::File::create(t.path().join(format!("f{}", now_unix_ns()))).unwrap()
    }

    #[test]
    fn pid_files_as_runc_writes_them() {
        let t = TestDir::new("runtime-pid");
        let path = t.path().join("pid");
        write_pid_file(&path, 1234).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "1234");
    }
}
