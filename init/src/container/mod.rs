//! The container engine: OCI containers over the agent's processes.
//!
//! A container is created in one step, as runc creates one: its spec is
//! checked ([`plan`]), its cgroup made, its process cloned into its new
//! namespaces ([`namespaces`]); the agent writes its id maps and moves it
//! into the cgroup, then the process sets up its filesystem ([`setup`]),
//! reports that it is ready and waits, before exec, for the start. Its
//! stdio exists from the clone on (pipes or a terminal): the host attaches
//! to them between create and start, as to any created process.
//!
//! Containers belong to the agent, not to the session that created them:
//! they stay, and keep their exit status, until deleted.

pub mod hooks;
pub mod namespaces;
pub mod plan;
pub mod setup;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_proto::{
    ContainerCreated, ContainerInfo, ContainerSpec, ContainerStatus, Created, ErrorBody, ErrorCode, Hooks, ProcessSpec,
    Started, GUEST_ROOTFS,
};

use crate::agent::Agent;
use crate::cgroup::{Cgroup, CgroupError};
use crate::command::Command;
use crate::fdio;
use crate::process::{self, Forked, Phase, Process, SessionId};
use crate::spawn::{self, ContainerChild, Step};
use crate::start::{self, Stdio};
use namespaces::NsPlan;

/// How long a deleted container's processes may take to die after SIGKILL.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a container operation failed; each maps to one protocol code.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no container {id:?}")]
    NotFound { id: String },
    #[error("container {id:?} already exists")]
    Exists { id: String },
    #[error("container {id:?} is {status}: {why}")]
    InvalidState {
        id: String,
        status: &'static str,
        why: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("container {id:?}: {message}")]
    SetupFailed { id: String, message: String },
    #[error("container {id:?}: {message}")]
    Internal { id: String, message: String },
    #[error("the agent is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Process(#[from] process::ProcessError),
}

impl ContainerError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ContainerError::NotFound { .. } => ErrorCode::NotFound,
            ContainerError::Exists { .. } | ContainerError::InvalidState { .. } => ErrorCode::InvalidState,
            ContainerError::Invalid(_) => ErrorCode::InvalidRequest,
            ContainerError::SetupFailed { .. } => ErrorCode::ExecFailed,
            ContainerError::Internal { .. } => ErrorCode::Internal,
            ContainerError::ShuttingDown => ErrorCode::ShuttingDown,
            ContainerError::Process(e) => e.code(),
        }
    }

    pub fn to_body(&self) -> ErrorBody {
        ErrorBody::new(self.code(), self.to_string())
    }
}

/// One container.
pub struct Container {
    pub id: String,
    bundle: String,
    annotations: BTreeMap<String, String>,
    created_unix_ns: u64,
    pub process: Arc<Process>,
    /// The pid of its process, as the agent sees it.
    pub pid: libc::pid_t,
    pub cgroup: Option<Cgroup>,
    hooks: Hooks,
    started: AtomicBool,
    /// Frozen by `pause_container`.
    paused: AtomicBool,
}

impl Container {
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
    fn oci_state(&self) -> String {
        oci_state(&self.id, self.status(), self.pid, &self.bundle, &self.annotations)
    }
}

/// The OCI state JSON of a container.
fn oci_state(
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
    pub fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        lock(&self.entries)
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound { id: id.to_owned() })
    }

    pub fn list(&self) -> Vec<ContainerInfo> {
        let mut all: Vec<ContainerInfo> = lock(&self.entries).values().map(|c| c.info()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Takes `id` for a creation; released by dropping the guard.
    fn reserve(&self, id: &str) -> Result<Reservation<'_>, ContainerError> {
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

struct Reservation<'a> {
    table: &'a ContainerTable,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(&self.table.creating).remove(&self.id);
    }
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Kills a process of ours that never became a container (the reaper
/// collects it).
fn abandon(agent: &Agent, pid: libc::pid_t) {
    let _ = agent.reaper.kill(pid, libc::SIGKILL);
}

/// `Op::CreateContainer`.
pub async fn create(agent: &Arc<Agent>, spec: ContainerSpec) -> Result<ContainerCreated, ContainerError> {
    if agent.shutting_down() {
        return Err(ContainerError::ShuttingDown);
    }
    plan::check_id(&spec.id).map_err(|e| ContainerError::Invalid(e.to_string()))?;
    let id = spec.id.clone();
    let _reservation = agent.containers.reserve(&id)?;
    if spec.root == GUEST_ROOTFS {
        crate::rootfs::wait_ready(&agent.rootfs)
            .await
            .map_err(|e| ContainerError::SetupFailed {
                id: id.clone(),
                message: format!("the root filesystem is not available: {e}"),
            })?;
    }
    let invalid = |e: &dyn std::fmt::Display| ContainerError::Invalid(e.to_string());
    // 1. The spec, checked and prepared: nothing exists yet.
    let ns = NsPlan::for_create(&spec.namespaces, &spec.uid_mappings, &spec.gid_mappings).map_err(|e| invalid(&e))?;
    let mut setup = plan::setup_plan(&spec, &ns).map_err(|e| invalid(&e))?;
    if let Some(resources) = &spec.resources {
        Cgroup::validate(resources).map_err(|e| invalid(&e))?;
    }
    check_vsock_annotation(&spec.annotations)?;
    let mut process_spec = spec.process.clone();
    process_spec.allow_vsock |= vsock_allowed(&spec.annotations);
    default_home(&mut process_spec, Path::new(&spec.root));
    process_spec.root = Some(spec.root.clone());
    let command = Command::from_spec(process_spec).map_err(|e| invalid(&e))?;
    let program = command.resolve_program().map_err(|e| ContainerError::SetupFailed {
        id: id.clone(),
        message: e.to_string(),
    })?;
    // 2. Its cgroup.
    let cgroup_path = spec.cgroups_path.clone().unwrap_or_else(|| format!("vminitd/{id}"));
    let mut cgroup = match Cgroup::create(&cgroup_path, spec.resources.as_ref()) {
        Ok(cgroup) => Some(cgroup),
        Err(CgroupError::NoCgroup2) if spec.resources.is_none() && spec.cgroups_path.is_none() => {
            warn!("container {id}: no cgroup2 filesystem: the container gets no cgroup of its own");
            None
        }
        Err(e @ (CgroupError::ControllerMissing { .. } | CgroupError::BadPath { .. } | CgroupError::Exists { .. })) => {
            return Err(invalid(&e))
        }
        Err(e) => {
            return Err(ContainerError::Internal {
                id: id.clone(),
                message: e.to_string(),
            })
        }
    };
    let (pumps_tx, pumps_rx) = tokio::sync::oneshot::channel();
    plan::make_destinations(Path::new(&spec.root), &setup);
    let creation = Creation {
        id: &id,
        spec: &spec,
        ns: &ns,
        cgroup: cgroup.as_ref(),
    };
    let result = fork_container(agent, &creation, command, program, &mut setup, pumps_tx).await;
    let (forked, exited) = match result {
        Ok(forked) => forked,
        Err(e) => {
            if let Some(cgroup) = &cgroup {
                remove_cgroup(&id, cgroup).await;
            }
            return Err(e);
        }
    };
    let pid = forked.pid;
    // The device allow-list, now that the setup has made the nodes.
    if let (Some(cgroup), Some(resources)) = (cgroup.as_mut(), spec.resources.as_ref()) {
        if let Err(e) = cgroup.restrict_devices(&resources.devices) {
            abandon(agent, pid);
            remove_cgroup(&id, cgroup).await;
            return Err(ContainerError::Internal {
                id,
                message: e.to_string(),
            });
        }
    }
    let process = agent.processes.insert_forked(forked);
    start::supervise_forked(agent, &process, exited, pumps_rx);
    let container = Arc::new(Container {
        id: id.clone(),
        bundle: spec.bundle.clone(),
        annotations: spec.annotations.clone(),
        created_unix_ns: now_unix_ns(),
        process: process.clone(),
        pid,
        cgroup,
        hooks: spec.hooks.clone(),
        started: AtomicBool::new(false),
        paused: AtomicBool::new(false),
    });
    lock(&agent.containers.entries).insert(id.clone(), container);
    debug!("container {id}: created, pid {pid}");
    Ok(ContainerCreated {
        process: process.id,
        pid,
    })
}

/// `HOME`, when the environment has none, as runc sets it: the home of
/// the process's uid in the root's `/etc/passwd` (read inside the root),
/// else `/`.
fn default_home(spec: &mut ProcessSpec, root: &Path) {
    if spec.env.iter().any(|e| e.starts_with("HOME=")) {
        return;
    }
    let uid = spec.user.as_ref().map_or(0, |u| u.uid);
    // The lookup gives an O_PATH descriptor: read through its /proc link.
    let home = crate::rootfs::open_in_root(root, "/etc/passwd")
        .ok()
        .and_then(|fd| std::fs::read_to_string(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok())
        .and_then(|text| home_of(&text, uid))
        .unwrap_or_else(|| "/".to_owned());
    spec.env.push(format!("HOME={home}"));
}

/// The home directory of `uid` in `/etc/passwd` text.
fn home_of(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 7 && fields[2].parse() == Ok(uid)).then(|| fields[5].to_owned())
    })
}

/// What a creation is about, for [`fork_container`].
struct Creation<'a> {
    id: &'a str,
    spec: &'a ContainerSpec,
    ns: &'a NsPlan,
    cgroup: Option<&'a Cgroup>,
}

/// Clones the container's process and waits until it is set up, running
/// the `createRuntime` and `createContainer` hooks while it waits before
/// `pivot_root`.
async fn fork_container(
    agent: &Arc<Agent>,
    creation: &Creation<'_>,
    command: Command,
    program: CString,
    setup: &mut setup::SetupPlan,
    pumps: tokio::sync::oneshot::Sender<Vec<tokio::task::JoinHandle<()>>>,
) -> Result<(Forked, tokio::sync::oneshot::Receiver<crate::reaper::RawStatus>), ContainerError> {
    let Creation { id, spec, ns, cgroup } = *creation;
    let creation_hooks = &spec.hooks;
    let pause_before_pivot = !creation_hooks.create_runtime.is_empty() || !creation_hooks.create_container.is_empty();
    let internal = |message: String| ContainerError::Internal {
        id: id.to_owned(),
        message,
    };
    let stdio = Stdio::for_container(&command).map_err(internal)?;
    if command.terminal {
        let slave = std::fs::read_link(format!("/proc/self/fd/{}", stdio.child.fds[0]))
            .map_err(|e| internal(format!("cannot name its terminal: {e}")))?;
        setup.console = Some(
            CString::new(slave.into_os_string().into_encoded_bytes())
                .map_err(|_| internal("its terminal's path has a NUL byte".into()))?,
        );
    }
    let setup = &*setup;
    let (gate_read, gate_write) = fdio::pipe().map_err(|e| internal(format!("cannot create its gate: {e}")))?;
    let cgroup_dir = match cgroup {
        Some(cgroup) => Some(cgroup.open_dir().map_err(|e| internal(e.to_string()))?),
        None => None,
    };
    let child = ContainerChild {
        ns,
        setup: Some(setup),
        gate: Some(gate_read.as_raw_fd()),
        pause_before_pivot,
        cgroup: cgroup_dir.as_ref().map(|fd| fd.as_raw_fd()),
    };
    let (pid, status_pipe, exited) = agent
        .reaper
        .spawn(|| {
            ns.around_fork(|| spawn::fork_exec(&command, &program, &stdio.child, Some(&child)))
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
        .map_err(internal)?;
    drop(gate_read);
    let (child_ends, ends) = stdio.agent_ends();
    drop(child_ends);
    drop(cgroup_dir);
    let wake = || {
        // SAFETY: a one-byte write from a valid buffer to our pipe.
        if unsafe { libc::write(gate_write.as_raw_fd(), b"g".as_ptr().cast(), 1) } != 1 {
            return Err(format!("cannot wake it: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    };
    // The agent's part: the id maps; then the child goes on.
    let prepared = match &ns.id_maps {
        Some(maps) => namespaces::write_id_maps(pid, maps).map_err(|e| e.to_string()),
        None => Ok(()),
    }
    .and_then(|()| wake());
    if let Err(message) = prepared {
        abandon(agent, pid);
        return Err(internal(message));
    }
    loop {
        let failure = match spawn::exec_outcome(pid, &status_pipe).await {
            Ok(Some(f)) if f.step == Some(Step::Ready) => break,
            Ok(Some(f)) if f.step == Some(Step::Mounted) => {
                // The creation hooks, the container's mounts made and its
                // root not yet pivoted to (as runc runs them).
                let state = oci_state(id, ContainerStatus::Creating, pid, &spec.bundle, &spec.annotations);
                let within = hooks::InContainer {
                    pid,
                    cgroup,
                    mount: true,
                };
                let ran = async {
                    let (runtime, container) = (&creation_hooks.create_runtime, &creation_hooks.create_container);
                    hooks::run_all(agent, runtime, "createRuntime", &state, None).await?;
                    hooks::run_all(agent, container, "createContainer", &state, Some(within)).await?;
                    wake()
                }
                .await;
                match ran {
                    Ok(()) => continue,
                    Err(message) => message,
                }
            }
            Ok(Some(f)) => describe_failure(&f, &command, &program, setup),
            Ok(None) => "its process ended during the setup".to_owned(),
            Err(e) => e.to_string(),
        };
        abandon(agent, pid);
        return Err(ContainerError::SetupFailed {
            id: id.to_owned(),
            message: failure,
        });
    }
    Ok((
        Forked {
            command,
            program,
            streams: [None, None, None],
            pid,
            stdio: ends,
            status_pipe,
            gate: gate_write,
            pumps,
        },
        exited,
    ))
}

/// What failed in the child, naming the spec's value where the step is
/// one of the setup's.
fn describe_failure(
    failure: &spawn::ChildFailure,
    command: &Command,
    program: &CString,
    plan: &setup::SetupPlan,
) -> String {
    use setup::SetupStep as S;
    let err = std::io::Error::from_raw_os_error(failure.errno);
    let step = match failure.step {
        Some(Step::Setup) => S::from_code(failure.detail),
        _ => return failure.describe(command, program),
    };
    let mount = |i: u32| {
        plan.mounts
            .get(i as usize)
            .map(|m| format!("/{}", m.target.to_string_lossy()))
            .unwrap_or_default()
    };
    let listed = |list: &[CString], i: u32| {
        list.get(i as usize)
            .map(|p| format!("/{}", p.to_string_lossy()))
            .unwrap_or_default()
    };
    match step {
        Some(S::Propagation) => format!("cannot set the propagation of / (linux.rootfsPropagation): {err}"),
        Some(S::BindRoot) | Some(S::OpenRoot) => {
            format!("cannot bind the root {:?} onto itself: {err}", plan.root)
        }
        Some(S::MountTarget(i)) => format!(
            "mounts[{i}]: cannot create the destination {} inside the root: {err}",
            mount(i)
        ),
        Some(S::Mount(i)) => {
            let m = &plan.mounts[i as usize];
            format!(
                "mounts[{i}]: cannot mount {:?} ({}) on {}: {err}",
                m.source,
                if m.fstype.is_empty() {
                    "bind".into()
                } else {
                    m.fstype.to_string_lossy()
                },
                mount(i)
            )
        }
        Some(S::MountRemount(i)) => format!("mounts[{i}]: cannot apply the options to {}: {err}", mount(i)),
        Some(S::MountPropagation(i)) => format!("mounts[{i}]: cannot set the propagation of {}: {err}", mount(i)),
        Some(S::Device(i)) => format!(
            "cannot create the device {}: {err}",
            plan.devices
                .get(i as usize)
                .map(|d| format!("/{}", d.path.to_string_lossy()))
                .unwrap_or_default()
        ),
        Some(S::Symlink(i)) => format!(
            "cannot create the link {}: {err}",
            plan.symlinks
                .get(i as usize)
                .map(|(_, l)| format!("/{}", l.to_string_lossy()))
                .unwrap_or_default()
        ),
        Some(S::Console) => format!("cannot bind the terminal onto /dev/console: {err}"),
        Some(S::Pivot) => format!("cannot pivot_root into {:?}: {err}", plan.root),
        Some(S::MaskPath(i)) => format!("linux.maskedPaths[{i}] {}: {err}", listed(&plan.masked, i)),
        Some(S::ReadonlyPath(i)) => format!("linux.readonlyPaths[{i}] {}: {err}", listed(&plan.readonly, i)),
        Some(S::ReadonlyRoot) => format!("cannot make the root read-only (root.readonly): {err}"),
        Some(S::Hostname) => format!("cannot set the hostname: {err}"),
        Some(S::Domainname) => format!("cannot set the domainname: {err}"),
        Some(S::Sysctl(i)) => format!("linux.sysctl {:?}: {err}", plan.sysctl.key(i as usize)),
        None => format!("the container's setup failed: {err}"),
    }
}

/// Removes a cgroup, logging what it could not.
async fn remove_cgroup(id: &str, cgroup: &Cgroup) {
    if let Err(e) = cgroup.remove() {
        warn!("container {id}: {e}");
    }
}

/// `Op::StartContainer`.
pub async fn start(agent: &Arc<Agent>, id: &str) -> Result<Started, ContainerError> {
    if agent.shutting_down() {
        return Err(ContainerError::ShuttingDown);
    }
    let container = agent.containers.get(id)?;
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
    let state = container.oci_state();
    if let Err(message) = hooks::run_all(
        agent,
        &container.hooks.start_container,
        "startContainer",
        &state,
        Some(hooks::InContainer {
            pid: container.pid,
            cgroup: container.cgroup.as_ref(),
            mount: true,
        }),
    )
    .await
    {
        container.started.store(false, Ordering::SeqCst);
        return Err(ContainerError::SetupFailed {
            id: id.to_owned(),
            message,
        });
    }
    let started = start::start_forked(&container.process).await?;
    let state = container.oci_state();
    if let Err(message) = hooks::run_all(agent, &container.hooks.poststart, "poststart", &state, None).await {
        warn!("container {id}: {message}");
    }
    Ok(started)
}

/// Whether a container's processes may open vsock sockets: its spec says
/// so with [`agent_proto::VSOCK_ANNOTATION`] `= allow` (`deny`, the
/// default, or nothing: they may not).
fn vsock_allowed(annotations: &BTreeMap<String, String>) -> bool {
    annotations.get(agent_proto::VSOCK_ANNOTATION).map(String::as_str) == Some("allow")
}

/// Refuses a vsock annotation that is neither `allow` nor `deny`.
fn check_vsock_annotation(annotations: &BTreeMap<String, String>) -> Result<(), ContainerError> {
    match annotations.get(agent_proto::VSOCK_ANNOTATION).map(String::as_str) {
        None | Some("allow" | "deny") => Ok(()),
        Some(other) => Err(ContainerError::Invalid(format!(
            "annotations[\"{}\"]: expected \"allow\" or \"deny\", got {other:?}",
            agent_proto::VSOCK_ANNOTATION
        ))),
    }
}

/// `Op::ExecContainer`: a created process that joins the container.
pub fn exec(
    agent: &Arc<Agent>,
    session: SessionId,
    id: &str,
    mut spec: ProcessSpec,
) -> Result<Created, ContainerError> {
    if agent.shutting_down() {
        return Err(ContainerError::ShuttingDown);
    }
    let container = agent.containers.get(id)?;
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
        return Err(ContainerError::Invalid(
            "process.root must be absent: the process runs in the container's root".into(),
        ));
    }
    spec.allow_vsock |= vsock_allowed(&container.annotations);
    // Programs are looked up in the container's root, through its process.
    let root = format!("/proc/{}/root", container.pid);
    default_home(&mut spec, Path::new(&root));
    spec.root = Some(root);
    let cgroup = match &container.cgroup {
        Some(cgroup) => Some(cgroup.open_dir().map_err(|e| ContainerError::Internal {
            id: id.to_owned(),
            message: e.to_string(),
        })?),
        None => None,
    };
    let join = process::ContainerJoin {
        pid: container.pid,
        cgroup,
    };
    Ok(process::create_joined(&agent.processes, session, spec, join)?)
}

/// `Op::ContainerState`.
pub fn state(agent: &Agent, id: &str) -> Result<ContainerInfo, ContainerError> {
    Ok(agent.containers.get(id)?.info())
}

/// `Op::ListContainers`.
pub fn list(agent: &Agent) -> Vec<ContainerInfo> {
    agent.containers.list()
}

/// `Op::KillContainer`.
pub async fn kill(agent: &Agent, id: &str, signal: i32, all: bool) -> Result<(), ContainerError> {
    if !(1..=64).contains(&signal) {
        return Err(ContainerError::Invalid(format!(
            "invalid signal number {signal}: expected 1 to 64"
        )));
    }
    let container = agent.containers.get(id)?;
    if container.status() == ContainerStatus::Stopped {
        return Err(ContainerError::InvalidState {
            id: id.to_owned(),
            status: "stopped",
            why: "its process is no longer running",
        });
    }
    let internal = |message: String| ContainerError::Internal {
        id: id.to_owned(),
        message,
    };
    if all {
        if let Some(cgroup) = &container.cgroup {
            return signal_cgroup(cgroup, signal).await.map_err(internal);
        }
    }
    agent
        .reaper
        .kill(container.pid, signal)
        .map(|_| ())
        .map_err(|e| internal(e.to_string()))
}

/// Signals every process of a container's cgroup and its sub-cgroups, so
/// that none escapes by forking or by making a cgroup of its own: SIGKILL
/// through `cgroup.kill`; any other signal with the cgroup frozen (as runc
/// does), then thawed unless the container was paused.
async fn signal_cgroup(cgroup: &Cgroup, signal: i32) -> Result<(), String> {
    if signal == libc::SIGKILL {
        cgroup.kill_all();
        return Ok(());
    }
    let was_frozen = cgroup.frozen().map_err(|e| e.to_string())?;
    if !was_frozen {
        wait_frozen(cgroup, true).await?;
    }
    let signalled = cgroup.signal_all(signal).map_err(|e| e.to_string());
    if !was_frozen {
        wait_frozen(cgroup, false).await?;
    }
    signalled
}

/// SIGKILLs the container's process and everything in its cgroup.
fn kill_everything(agent: &Agent, container: &Container) {
    if let Some(cgroup) = &container.cgroup {
        cgroup.kill_all();
    }
    let _ = agent.reaper.kill(container.pid, libc::SIGKILL);
}

/// Freezes (or thaws) a cgroup and waits until the kernel says it is.
async fn wait_frozen(cgroup: &Cgroup, frozen: bool) -> Result<(), String> {
    cgroup.set_frozen(frozen).map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + FREEZE_TIMEOUT;
    while cgroup.frozen().map_err(|e| e.to_string())? != frozen {
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "its cgroup is not {} after {FREEZE_TIMEOUT:?}",
                if frozen { "frozen" } else { "thawed" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// How long a freeze or a thaw may take.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// `Op::PauseContainer` (`frozen`) and `Op::ResumeContainer`.
pub async fn freeze(agent: &Arc<Agent>, id: &str, frozen: bool) -> Result<(), ContainerError> {
    let container = agent.containers.get(id)?;
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
    let internal = |message: String| ContainerError::Internal {
        id: id.to_owned(),
        message,
    };
    wait_frozen(cgroup, frozen).await.map_err(internal)?;
    container.paused.store(frozen, Ordering::SeqCst);
    Ok(())
}

/// `Op::UpdateContainer`: new limits on the container's cgroup.
pub fn update(agent: &Agent, id: &str, resources: &agent_proto::Resources) -> Result<(), ContainerError> {
    let container = agent.containers.get(id)?;
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
    cgroup.update(resources).map_err(|e| match e {
        CgroupError::InvalidValue { .. } | CgroupError::ControllerMissing { .. } | CgroupError::Unsupported { .. } => {
            ContainerError::Invalid(e.to_string())
        }
        e => ContainerError::Internal {
            id: id.to_owned(),
            message: e.to_string(),
        },
    })
}

/// `Op::DeleteContainer`.
pub async fn delete(agent: &Arc<Agent>, id: &str, force: bool) -> Result<(), ContainerError> {
    let container = agent.containers.get(id)?;
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
        kill_everything(agent, &container);
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
        return Err(ContainerError::Internal {
            id: id.to_owned(),
            message: format!(
                "its process (pid {}) did not die within {KILL_TIMEOUT:?}",
                container.pid
            ),
        });
    }
    if let Some(cgroup) = &container.cgroup {
        // Whatever else was in its cgroup (no pid namespace) goes too.
        kill_everything(agent, &container);
        remove_cgroup(id, cgroup).await;
    }
    lock(&agent.containers.entries).remove(id);
    agent.processes.forget(container.process.id);
    let state = container.oci_state();
    if let Err(message) = hooks::run_all(agent, &container.hooks.poststop, "poststop", &state, None).await {
        warn!("container {id}: {message}");
    }
    debug!("container {id}: deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\n# comment\nwww:x:33:33::/var/www:/bin/false\nbad:line\n";
        assert_eq!(home_of(passwd, 0).as_deref(), Some("/root"));
        assert_eq!(home_of(passwd, 33).as_deref(), Some("/var/www"));
        assert_eq!(home_of(passwd, 1000), None);
        let mut spec = ProcessSpec {
            env: vec!["HOME=/mine".into()],
            ..Default::default()
        };
        default_home(&mut spec, Path::new("/nonexistent"));
        assert_eq!(spec.env, ["HOME=/mine"]);
        spec.env.clear();
        default_home(&mut spec, Path::new("/nonexistent"));
        assert_eq!(spec.env, ["HOME=/"]);
    }
}
