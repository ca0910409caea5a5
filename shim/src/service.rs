//! The task service: containerd's shim v2 calls on one container, each
//! answered by `vmshim runtime`'s library ([`host_shim::runtime`]).
//!
//! `Create` mounts the rootfs containerd hands over on the bundle's
//! `rootfs` and runs `vmshim runtime create` with the task's stdio as its
//! stdio (its instance daemon, the container's pid, keeps them, as runc's
//! container keeps the stdio runc is given): stdout and stderr the FIFOs,
//! stdin a pipe a thread feeds from the stdin FIFO. A terminal's master
//! comes to a console socket in the bundle, as runc's shim gets it, and is
//! relayed to and from the FIFOs; `ResizePty` sets its size, which the
//! runtime follows into the guest. `Start`, `Kill`, `State`, `Pause`,
//! `Resume`, `Update` and `Delete` are the runtime's; `Exec` and its
//! `Start` run the process through the agent with the exec's FIFOs (or
//! terminal) relayed. Every container and exec has a waiter that records
//! how it ended, publishes `TaskExit` and wakes `Wait`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::SystemTime;

use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    StatsRequest, StatsResponse, Status, UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::asynchronous::monitor::{monitor_subscribe, monitor_unsubscribe};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::event::Event;
use containerd_shim::monitor::{Subject, Topic};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, r#async::TtrpcContext};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;
use host_shim::image::Bundle;
use host_shim::runtime::{Exec, ExecProcess, ExecStdio, Pod, PodDir, PodMember, Runtime, RuntimeError};
use tokio::sync::{watch, Mutex};

use agent_proto::{ContainerStatus, ExitStatus};

use crate::pod::{self, PodState};

/// The runtime's root directory, inside the bundle.
const ROOT: &str = "vmshim";

/// Container `id` of `slot`.
fn held<'a>(slot: &'a HashMap<String, Container>, id: &str) -> Result<&'a Container, ttrpc::Error> {
    slot.get(id)
        .ok_or_else(|| not_found(format!("container {id} does not exist")))
}

/// Container `id` of `slot`, to change.
fn held_mut<'a>(slot: &'a mut HashMap<String, Container>, id: &str) -> Result<&'a mut Container, ttrpc::Error> {
    slot.get_mut(id)
        .ok_or_else(|| not_found(format!("container {id} does not exist")))
}

/// How a process ended and when.
#[derive(Debug, Clone, Copy)]
struct Exited {
    status: u32,
    at: SystemTime,
}

/// A process's end, once known.
type ExitWatch = watch::Receiver<Option<Exited>>;

/// The container's main process.
struct Container {
    bundle: PathBuf,
    pid: u32,
    stdin: String,
    stdout: String,
    stderr: String,
    /// The relay of its stdin, closed by `CloseIO`.
    stdin_hold: Option<StdinRelay>,
    /// Its terminal, if it has one.
    console: Option<Console>,
    /// Told when the terminal's output has all been relayed.
    output: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Whether the rootfs was mounted on the bundle's `rootfs` by us.
    mounted: bool,
    /// A container of a pod made in its sandbox's VM; `None`: a container
    /// with a VM of its own.
    member: Option<Arc<PodMember>>,
    exit: ExitWatch,
    exit_tx: Option<watch::Sender<Option<Exited>>>,
    execs: HashMap<String, ExecEntry>,
}

/// An exec'd process: its spec until started, then the process.
struct ExecEntry {
    spec_file: PathBuf,
    stdin: String,
    stdout: String,
    stderr: String,
    stdin_hold: Option<StdinRelay>,
    terminal: bool,
    console: Option<Console>,
    process: Option<Arc<Exec>>,
    pid: u32,
    exit: ExitWatch,
    exit_tx: Option<watch::Sender<Option<Exited>>>,
}

/// The task service of one shim.
pub struct Service {
    id: String,
    namespace: String,
    publisher: Arc<RemotePublisher>,
    exit: Arc<ExitSignal>,
    /// The containers it holds: one, or a pod's.
    containers: Arc<Mutex<HashMap<String, Container>>>,
    /// The pod, once its sandbox is created.
    pod: Arc<Mutex<Option<PodState>>>,
}

impl Service {
    /// The service of shim `id` in `namespace`, publishing to
    /// `publisher`; `exit` ends the shim.
    pub fn new(id: &str, namespace: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> Service {
        Service {
            id: id.to_owned(),
            namespace: namespace.to_owned(),
            publisher: Arc::new(publisher),
            exit,
            containers: Arc::new(Mutex::new(HashMap::new())),
            pod: Arc::new(Mutex::new(None)),
        }
    }

    async fn publish(&self, topic: &str, event: Box<dyn Event>) {
        publish(&self.publisher, &self.namespace, topic, event).await;
    }
}

async fn publish(publisher: &RemotePublisher, namespace: &str, topic: &str, event: Box<dyn Event>) {
    if let Err(e) = publisher.publish(Context::default(), topic, namespace, event).await {
        log::error!("publishing {topic}: {e}");
    }
}

/// The runtime whose root is in `bundle`.
fn runtime(bundle: &Path) -> Runtime {
    Runtime::new(bundle.join(ROOT)).with_program(crate::vmshim_program())
}

/// The timestamp of `at`.
fn timestamp(at: SystemTime) -> Timestamp {
    let d = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Now, as a protobuf timestamp.
pub fn now_timestamp() -> Timestamp {
    timestamp(SystemTime::now())
}

fn status_code(code: ttrpc::Code, message: String) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

fn unimplemented(what: &str) -> ttrpc::Error {
    status_code(
        ttrpc::Code::UNIMPLEMENTED,
        format!("{what} is not implemented by the vminitd shim yet"),
    )
}

fn not_found(message: String) -> ttrpc::Error {
    status_code(ttrpc::Code::NOT_FOUND, message)
}

fn runtime_err(e: RuntimeError) -> ttrpc::Error {
    let code = match e {
        RuntimeError::NotExist { .. } => ttrpc::Code::NOT_FOUND,
        RuntimeError::NotRunning { .. } => ttrpc::Code::NOT_FOUND,
        RuntimeError::Exists { .. } => ttrpc::Code::ALREADY_EXISTS,
        RuntimeError::BadId { .. } | RuntimeError::BadProcess { .. } | RuntimeError::Terminal { .. } => {
            ttrpc::Code::INVALID_ARGUMENT
        }
        RuntimeError::StartStopped { .. }
        | RuntimeError::StartRunning { .. }
        | RuntimeError::StartOther { .. }
        | RuntimeError::NotPaused { .. }
        | RuntimeError::ExecStopped { .. }
        | RuntimeError::ExecOther { .. }
        | RuntimeError::NotStopped { .. } => ttrpc::Code::FAILED_PRECONDITION,
        _ => ttrpc::Code::INTERNAL,
    };
    status_code(code, e.to_string())
}

fn internal(message: String) -> ttrpc::Error {
    status_code(ttrpc::Code::INTERNAL, message)
}

/// The relay of a process's stdin from its FIFO: a thread copies what
/// the FIFO brings into a pipe whose read end is the process's stdin (or
/// into a terminal's master), until containerd's client closes its end of
/// the FIFO, or `CloseIO` has been asked and what the FIFO holds is
/// relayed. Dropped, it stops at once.
struct StdinRelay {
    writer: Arc<std::sync::Mutex<Option<Arc<File>>>>,
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl StdinRelay {
    /// `CloseIO`: the process's stdin ends once the FIFO is drained.
    fn close(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for StdinRelay {
    fn drop(&mut self) {
        self.close();
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The process's stdin from the FIFO at `path` and its relay; `/dev/null`
/// when there is none.
fn open_stdin(path: &str) -> Result<(File, Option<StdinRelay>), ttrpc::Error> {
    if path.is_empty() {
        let null = File::open("/dev/null").map_err(|e| internal(format!("open /dev/null: {e}")))?;
        return Ok((null, None));
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(internal(format!(
            "a pipe for stdin: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    let (read, write) = unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    Ok((read, Some(relay_fifo(path, write))))
}

/// Relays the FIFO at `path` into `to` (a pipe, or a terminal's master)
/// from a thread of its own.
fn relay_fifo(path: &str, to: File) -> StdinRelay {
    let writer = Arc::new(std::sync::Mutex::new(Some(Arc::new(to))));
    let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relay = StdinRelay {
        writer: writer.clone(),
        closing: closing.clone(),
    };
    let fifo = PathBuf::from(path);
    std::thread::spawn(move || {
        // Non-blocking: the open does not wait for the client, and a FIFO
        // whose writer has not come yet polls as neither readable nor hung
        // up (Linux reports the hang-up only of a writer that came and
        // went).
        let opened = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo);
        if let Ok(mut input) = opened {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let mut pfd = libc::pollfd {
                    fd: input.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll reads and writes the one pollfd it is given.
                let ready = unsafe { libc::poll(&mut pfd, 1, 100) };
                if ready < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                if ready == 0 {
                    // Nothing more in the FIFO: CloseIO ends the relay now.
                    if closing.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    continue;
                }
                let n = match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => break,
                };
                let out = writer.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(out) = out else { break };
                if (&*out).write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        writer.lock().unwrap_or_else(|e| e.into_inner()).take();
    });
    relay
}

/// Copies `from` (a terminal's master) to `to` (the stdout FIFO) from a
/// thread of its own until the terminal hangs up; `done` is told then.
fn relay_output(mut from: File, mut to: File) -> tokio::sync::oneshot::Receiver<()> {
    let (done, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        // EIO once the last holder of the slave is gone.
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = done.send(());
    });
    rx
}

/// A terminal's master, sent by the runtime to the console socket that
/// `listener` listens on (the runtime has sent it before it returns).
fn receive_master(listener: &UnixListener, what: &str) -> Result<File, ttrpc::Error> {
    listener
        .set_nonblocking(true)
        .map_err(|e| internal(format!("{what}'s console socket: {e}")))?;
    let (conn, _) = listener
        .accept()
        .map_err(|e| internal(format!("no terminal came to {what}'s console socket: {e}")))?;
    conn.set_nonblocking(false)
        .map_err(|e| internal(format!("{what}'s console socket: {e}")))?;
    let (master, _) =
        host_shim::runtime::receive_master(&conn).map_err(|e| internal(format!("receive {what}'s terminal: {e}")))?;
    Ok(File::from(master))
}

/// A process's terminal on the host: its master, for `ResizePty`.
struct Console {
    master: File,
    /// The relay of the FIFO into the master.
    input: Option<StdinRelay>,
}

/// The master's stdio relayed to and from the FIFOs.
fn relay_console(
    master: File,
    stdin: &str,
    stdout: &str,
) -> Result<(Console, tokio::sync::oneshot::Receiver<()>), ttrpc::Error> {
    let dup = |m: &File| {
        m.try_clone()
            .map_err(|e| internal(format!("dup a terminal's master: {e}")))
    };
    let output = relay_output(dup(&master)?, open_output(stdout)?);
    let input = match stdin {
        "" => None,
        path => Some(relay_fifo(path, dup(&master)?)),
    };
    Ok((Console { master, input }, output))
}

/// Sets the window size of the terminal whose master is `master`.
fn resize(master: &File, width: u32, height: u32) -> Result<(), ttrpc::Error> {
    let size = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize, which outlives the call.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(internal(format!(
            "set the terminal's size: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The output FIFO at `path` (read and write, so that opening does not
/// wait for containerd's reader); `/dev/null` when there is none.
fn open_output(path: &str) -> Result<File, ttrpc::Error> {
    if path.is_empty() {
        return OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map_err(|e| internal(format!("open /dev/null: {e}")));
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| internal(format!("open the output FIFO {path}: {e}")))
}

/// The exit status containerd takes: the code, or 128 + the signal.
fn exit_code(status: &ExitStatus) -> u32 {
    status.shell_code() as u32
}

/// What `vmshim runtime create` is given beyond the bundle: the VM's size
/// and, for a pod's sandbox, the pod's directory to share.
struct CreateExtra {
    cpus: u32,
    memory_mib: u32,
    share: Option<PathBuf>,
}

/// A created container's process, as `Create` keeps it.
struct Made {
    pid: u32,
    stdin_hold: Option<StdinRelay>,
    console: Option<Console>,
    output: Option<tokio::sync::oneshot::Receiver<()>>,
    member: Option<Arc<PodMember>>,
}

/// Runs `vmshim runtime create` for container `id` of `bundle` with the
/// given stdio; waits for it through the shim's reaper, which reaps every
/// child.
async fn run_create(
    bundle: &Path,
    id: &str,
    console_socket: Option<&Path>,
    extra: &CreateExtra,
    stdin: File,
    stdout: File,
    stderr: File,
) -> Result<(), ttrpc::Error> {
    let log = bundle.join("vmshim-create.log");
    let _ = std::fs::remove_file(&log);
    let mut sub = monitor_subscribe(Topic::Pid)
        .await
        .map_err(|e| internal(format!("watch for the create's end: {e}")))?;
    let mut command = Command::new(crate::vmshim_program());
    command
        .arg("runtime")
        .arg("--root")
        .arg(bundle.join(ROOT))
        .arg("--log")
        .arg(&log)
        .arg("--cpus")
        .arg(extra.cpus.to_string())
        .arg("--vm-memory")
        .arg(extra.memory_mib.to_string())
        .arg("create")
        .arg("--bundle")
        .arg(bundle);
    if let Some(path) = console_socket {
        command.arg("--console-socket").arg(path);
    }
    if let Some(dir) = &extra.share {
        command.arg("--share").arg(dir);
    }
    let spawned = command
        .arg(id)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .current_dir(bundle)
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = monitor_unsubscribe(sub.id).await;
            return Err(internal(format!("run {}: {e}", crate::vmshim_program().display())));
        }
    };
    let pid = child.id() as i32;
    // The reaper has the child's status; the handle only leaks its pid.
    drop(child);
    let mut code = None;
    while let Some(event) = sub.rx.recv().await {
        if matches!(event.subject, Subject::Pid(p) if p == pid) {
            code = Some(event.exit_code);
            break;
        }
    }
    let _ = monitor_unsubscribe(sub.id).await;
    match code {
        Some(0) => Ok(()),
        Some(code) => {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            let said = said.lines().last().unwrap_or("").trim().to_owned();
            Err(internal(format!(
                "vmshim runtime create exited with status {code}: {said}"
            )))
        }
        None => Err(internal("vmshim runtime create: its end was not seen".into())),
    }
}

/// Removes whatever is left of container `id` in `bundle`: its VM, its
/// state, the rootfs mount.
pub async fn clean_up(bundle: &Path, id: &str) {
    match runtime(bundle).delete(id, true).await {
        Ok(()) | Err(RuntimeError::NotExist { .. }) => {}
        Err(e) => log::warn!("deleting container {id}: {e}"),
    }
    unmount_rootfs(bundle);
    let _ = std::fs::remove_dir_all(bundle.join(ROOT));
    // A sandbox's pod directory, with whatever of its pod is mounted there.
    let pod_dir = bundle.join(pod::POD_DIR);
    if pod_dir.exists() {
        if let Err(left) = PodDir::at(&pod_dir).remove() {
            log::warn!("{left}");
        }
    }
}

fn unmount_rootfs(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    if let Some(path) = rootfs.to_str() {
        if let Err(e) = containerd_shim::mount::umount_recursive(Some(path), 0) {
            log::warn!("unmounting {path}: {e}");
        }
    }
}

impl Service {
    /// Waits for container `id`'s process to end, then records it,
    /// publishes `TaskExit` and wakes `Wait`.
    fn watch_container(
        &self,
        bundle: PathBuf,
        id: String,
        pid: u32,
        member: Option<Arc<PodMember>>,
        tx: watch::Sender<Option<Exited>>,
        output: Option<tokio::sync::oneshot::Receiver<()>>,
    ) {
        let (publisher, namespace) = (self.publisher.clone(), self.namespace.clone());
        let oom = crate::metrics::OomWatch::start(
            crate::metrics::Source::new(runtime(&bundle), &id, member.clone()),
            crate::metrics::OomSink::new(&publisher, &namespace),
        );
        tokio::spawn(async move {
            let waited = match &member {
                Some(m) => m.wait().await,
                None => runtime(&bundle).wait(&id).await,
            };
            let status = match waited {
                Ok(status) => exit_code(&status),
                Err(e) => {
                    log::error!("waiting for container {id}: {e}");
                    255
                }
            };
            drained(output).await;
            oom.finish().await;
            let exited = Exited {
                status,
                at: SystemTime::now(),
            };
            let _ = tx.send(Some(exited));
            let event = TaskExit {
                container_id: id.clone(),
                id: id.clone(),
                pid,
                exit_status: status,
                exited_at: Some(timestamp(exited.at)).into(),
                ..Default::default()
            };
            publish(&publisher, &namespace, topics::TASK_EXIT_EVENT_TOPIC, Box::new(event)).await;
        });
    }

    /// Waits for exec `exec_id`'s process to end, then the same.
    fn watch_exec(
        &self,
        id: String,
        exec_id: String,
        pid: u32,
        exec: Arc<Exec>,
        tx: watch::Sender<Option<Exited>>,
        output: Option<tokio::sync::oneshot::Receiver<()>>,
    ) {
        let (publisher, namespace) = (self.publisher.clone(), self.namespace.clone());
        let containers = self.containers.clone();
        tokio::spawn(async move {
            let status = match exec.wait().await {
                Ok(status) => exit_code(&status),
                Err(e) => {
                    log::error!("waiting for exec {exec_id} of {id}: {e}");
                    255
                }
            };
            drained(output).await;
            // The last output written out before the exit is told; the
            // process's handle is ours alone once Kill is not using it.
            if let Some(c) = containers.lock().await.get_mut(&id) {
                if let Some(e) = c.execs.get_mut(&exec_id) {
                    e.process = None;
                }
            }
            let mut exec = exec;
            for _ in 0..100 {
                match Arc::try_unwrap(exec) {
                    Ok(owned) => {
                        owned.finish().await;
                        break;
                    }
                    Err(shared) => {
                        exec = shared;
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
            }
            let exited = Exited {
                status,
                at: SystemTime::now(),
            };
            let _ = tx.send(Some(exited));
            let event = TaskExit {
                container_id: id.clone(),
                id: exec_id,
                pid,
                exit_status: status,
                exited_at: Some(timestamp(exited.at)).into(),
                ..Default::default()
            };
            publish(&publisher, &namespace, topics::TASK_EXIT_EVENT_TOPIC, Box::new(event)).await;
        });
    }

    /// Checks that `id` is the shim's or one of its containers.
    async fn check_id(&self, id: &str) -> Result<(), ttrpc::Error> {
        if id != self.id && !self.containers.lock().await.contains_key(id) {
            return Err(not_found(format!("container {id}: this shim holds {}", self.id)));
        }
        Ok(())
    }

    /// Container `id`'s bundle.
    async fn bundle(&self, id: &str) -> Result<PathBuf, ttrpc::Error> {
        Ok(held(&*self.containers.lock().await, id)?.bundle.clone())
    }

    /// Freezes or thaws container `id`.
    async fn set_paused(&self, bundle: &Path, id: &str, paused: bool) -> Result<(), ttrpc::Error> {
        let member = held(&*self.containers.lock().await, id)?.member.clone();
        match member {
            Some(m) => m.set_paused(paused).await,
            None => runtime(bundle).set_paused(id, paused).await,
        }
        .map_err(runtime_err)
    }
}

/// Waits (a while at most) for a terminal's output to be relayed.
async fn drained(output: Option<tokio::sync::oneshot::Receiver<()>>) {
    if let Some(output) = output {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), output).await;
    }
}

/// Clears the `Option` of an exit channel so that its waiter owns the
/// sender.
fn take_sender(tx: &mut Option<watch::Sender<Option<Exited>>>) -> watch::Sender<Option<Exited>> {
    tx.take().unwrap_or_else(|| watch::channel(None).0)
}

async fn wait_exit(mut rx: ExitWatch) -> Result<Exited, ttrpc::Error> {
    loop {
        if let Some(exited) = *rx.borrow_and_update() {
            return Ok(exited);
        }
        if rx.changed().await.is_err() {
            return match *rx.borrow() {
                Some(exited) => Ok(exited),
                None => Err(internal("the process's end was not seen".into())),
            };
        }
    }
}

#[async_trait::async_trait]
impl Task for Service {
    async fn create(&self, _ctx: &TtrpcContext, req: CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(unimplemented("restoring a checkpoint"));
        }
        let mut slot = self.containers.lock().await;
        if slot.contains_key(&req.id) {
            return Err(status_code(
                ttrpc::Code::ALREADY_EXISTS,
                format!("container {} exists", req.id),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let role = pod::Role::of_bundle(&bundle).map_err(|e| status_code(ttrpc::Code::INVALID_ARGUMENT, e))?;
        if !matches!(role, pod::Role::Member { .. }) && !slot.is_empty() {
            return Err(status_code(
                ttrpc::Code::FAILED_PRECONDITION,
                format!(
                    "container {}: this shim holds {}, and only the containers of its pod join it",
                    req.id, self.id
                ),
            ));
        }
        let mut mounted = false;
        if !req.rootfs.is_empty() {
            let rootfs = bundle.join("rootfs");
            std::fs::create_dir_all(&rootfs).map_err(|e| internal(format!("make {}: {e}", rootfs.display())))?;
            for m in &req.rootfs {
                containerd_shim::asynchronous::util::mount_rootfs(m, &rootfs)
                    .await
                    .map_err(|e| internal(format!("mount the rootfs ({}) on {}: {e}", m.type_, rootfs.display())))?;
                mounted = true;
            }
        }
        let made = match &role {
            pod::Role::Member { sandbox } => self.create_member(&req, &bundle, sandbox).await,
            _ => self.create_own(&req, &bundle, role == pod::Role::Sandbox).await,
        };
        let made = match made {
            Ok(made) => made,
            Err(e) => {
                if mounted {
                    unmount_rootfs(&bundle);
                }
                return Err(e);
            }
        };
        let pid = made.pid;
        let (tx, rx) = watch::channel(None);
        slot.insert(
            req.id.clone(),
            Container {
                bundle: bundle.clone(),
                pid,
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                stdin_hold: made.stdin_hold,
                console: made.console,
                output: made.output,
                mounted,
                member: made.member,
                exit: rx,
                exit_tx: Some(tx),
                execs: HashMap::new(),
            },
        );
        drop(slot);
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event)).await;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        let bundle = self.bundle(&req.id).await?;
        if !req.exec_id.is_empty() {
            return self.start_exec(&bundle, &req.id, &req.exec_id).await;
        }
        let member = held(&*self.containers.lock().await, &req.id)?.member.clone();
        match &member {
            Some(m) => {
                m.start().await.map_err(runtime_err)?;
            }
            None => runtime(&bundle).start(&req.id).await.map_err(runtime_err)?,
        }
        let (pid, tx, output) = {
            let mut slot = self.containers.lock().await;
            let c = held_mut(&mut slot, &req.id)?;
            (c.pid, take_sender(&mut c.exit_tx), c.output.take())
        };
        self.watch_container(bundle, req.id.clone(), pid, member, tx, output);
        let event = TaskStart {
            container_id: req.id.clone(),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(event)).await;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        let bundle = self.bundle(&req.id).await?;
        let slot = self.containers.lock().await;
        let c = held(&slot, &req.id)?;
        let mut resp = StateResponse {
            id: req.id.clone(),
            bundle: bundle.display().to_string(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        let (exited, status) = if req.exec_id.is_empty() {
            resp.pid = c.pid;
            resp.stdin = c.stdin.clone();
            resp.stdout = c.stdout.clone();
            resp.stderr = c.stderr.clone();
            let exited = *c.exit.borrow();
            let status = match exited {
                Some(_) => Status::STOPPED,
                None => {
                    let member = c.member.clone();
                    drop(slot);
                    let status = match member {
                        Some(m) => m.status().await.map_err(runtime_err)?.name().to_owned(),
                        None => runtime(&bundle).state(&req.id).await.map_err(runtime_err)?.status,
                    };
                    match status {
                        s if s == ContainerStatus::Created.name() => Status::CREATED,
                        s if s == ContainerStatus::Running.name() => Status::RUNNING,
                        s if s == ContainerStatus::Paused.name() => Status::PAUSED,
                        s if s == ContainerStatus::Creating.name() => Status::CREATED,
                        _ => Status::STOPPED,
                    }
                }
            };
            (exited, status)
        } else {
            let e = c
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| not_found(format!("exec {} of {} does not exist", req.exec_id, req.id)))?;
            resp.pid = e.pid;
            resp.stdin = e.stdin.clone();
            resp.stdout = e.stdout.clone();
            resp.stderr = e.stderr.clone();
            let exited = *e.exit.borrow();
            let status = match (exited, e.pid) {
                (Some(_), _) => Status::STOPPED,
                (None, 0) => Status::CREATED,
                (None, _) => Status::RUNNING,
            };
            (exited, status)
        };
        resp.status = status.into();
        if let Some(exited) = exited {
            resp.exit_status = exited.status;
            resp.exited_at = Some(timestamp(exited.at)).into();
        }
        Ok(resp)
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        self.bundle(&req.id).await?;
        let rx = {
            let slot = self.containers.lock().await;
            let c = held(&slot, &req.id)?;
            if req.exec_id.is_empty() {
                c.exit.clone()
            } else {
                c.execs
                    .get(&req.exec_id)
                    .ok_or_else(|| not_found(format!("exec {} of {} does not exist", req.exec_id, req.id)))?
                    .exit
                    .clone()
            }
        };
        let exited = wait_exit(rx).await?;
        Ok(WaitResponse {
            exit_status: exited.status,
            exited_at: Some(timestamp(exited.at)).into(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        let bundle = self.bundle(&req.id).await?;
        if req.exec_id.is_empty() {
            let member = held(&*self.containers.lock().await, &req.id)?.member.clone();
            let killed = match member {
                Some(m) => m.kill(req.signal as i32, req.all).await,
                None => runtime(&bundle).kill(&req.id, req.signal as i32, req.all).await,
            };
            killed.map_err(|e| match e {
                RuntimeError::NotRunning { .. } => not_found("process already finished".into()),
                e => runtime_err(e),
            })?;
            return Ok(Empty::new());
        }
        let process = {
            let slot = self.containers.lock().await;
            let c = held(&slot, &req.id)?;
            let e = c
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| not_found(format!("exec {} of {} does not exist", req.exec_id, req.id)))?;
            e.process.clone()
        };
        let Some(process) = process else {
            return Err(not_found("process already finished".into()));
        };
        process
            .signal(req.signal as i32)
            .await
            .map_err(|e| internal(format!("signal exec {}: {e}", req.exec_id)))?;
        Ok(Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let bundle = self.bundle(&req.id).await?;
        if !req.exec_id.is_empty() {
            let mut slot = self.containers.lock().await;
            let c = held_mut(&mut slot, &req.id)?;
            let e = c
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| not_found(format!("exec {} of {} does not exist", req.exec_id, req.id)))?;
            let exited = *e.exit.borrow();
            if e.pid != 0 && exited.is_none() {
                return Err(status_code(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("exec {} of {} is still running", req.exec_id, req.id),
                ));
            }
            let e = c.execs.remove(&req.exec_id).expect("the exec just found");
            let _ = std::fs::remove_file(&e.spec_file);
            let exited = exited.unwrap_or(Exited {
                status: 0,
                at: SystemTime::now(),
            });
            return Ok(DeleteResponse {
                pid: e.pid,
                exit_status: exited.status,
                exited_at: Some(timestamp(exited.at)).into(),
                ..Default::default()
            });
        }
        let (member, ended) = {
            let slot = self.containers.lock().await;
            let c = held(&slot, &req.id)?;
            let ended = c.exit.borrow().is_some();
            (c.member.clone(), ended)
        };
        match &member {
            Some(m) => {
                let running = !ended
                    && matches!(
                        m.status().await,
                        Ok(ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused)
                    );
                if running {
                    return Err(status_code(
                        ttrpc::Code::FAILED_PRECONDITION,
                        format!("container {} is still running", req.id),
                    ));
                }
                if let Err(e) = m.delete().await {
                    // With its VM gone, nothing of it is left there.
                    log::warn!("deleting container {} from its pod's VM: {e}", req.id);
                }
            }
            None => runtime(&bundle).delete(&req.id, false).await.map_err(runtime_err)?,
        }
        let mut slot = self.containers.lock().await;
        let c = slot
            .remove(&req.id)
            .ok_or_else(|| not_found(format!("container {} does not exist", req.id)))?;
        if c.mounted {
            unmount_rootfs(&bundle);
        }
        if member.is_none() {
            let _ = std::fs::remove_dir_all(bundle.join(ROOT));
            let _ = std::fs::remove_file(bundle.join("vmshim-create.log"));
            let mut pod = self.pod.lock().await;
            if let Some(state) = pod.as_ref().filter(|p| p.sandbox == req.id) {
                // The VM is gone with the sandbox: so is the pod's
                // directory, with whatever of its containers is mounted
                // there.
                if let Err(left) = state.dir.remove() {
                    log::warn!("{left}");
                }
                *pod = None;
            }
        }
        let exited = (*c.exit.borrow()).unwrap_or(Exited {
            status: 0,
            at: SystemTime::now(),
        });
        drop(slot);
        let event = TaskDelete {
            container_id: req.id.clone(),
            id: req.id.clone(),
            pid: c.pid,
            exit_status: exited.status,
            exited_at: Some(timestamp(exited.at)).into(),
            ..Default::default()
        };
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event)).await;
        Ok(DeleteResponse {
            pid: c.pid,
            exit_status: exited.status,
            exited_at: Some(timestamp(exited.at)).into(),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        self.bundle(&req.id).await?;
        let slot = self.containers.lock().await;
        let c = held(&slot, &req.id)?;
        // The host pids: the container's (its instance daemon); exec'd
        // processes live in the VM and have none.
        let processes = vec![ProcessInfo {
            pid: c.pid,
            ..Default::default()
        }];
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        let bundle = self.bundle(&req.id).await?;
        self.set_paused(&bundle, &req.id, true).await?;
        let event = TaskPaused {
            container_id: req.id.clone(),
            ..Default::default()
        };
        self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event)).await;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        let bundle = self.bundle(&req.id).await?;
        self.set_paused(&bundle, &req.id, false).await?;
        let event = TaskResumed {
            container_id: req.id.clone(),
            ..Default::default()
        };
        self.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event)).await;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        let bundle = self.bundle(&req.id).await?;
        if req.exec_id.is_empty() || req.exec_id.contains('/') || req.exec_id.starts_with('.') {
            return Err(status_code(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("invalid exec id {:?}", req.exec_id),
            ));
        }
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| status_code(ttrpc::Code::INVALID_ARGUMENT, "exec without a process spec".into()))?;
        let mut slot = self.containers.lock().await;
        let c = held_mut(&mut slot, &req.id)?;
        if c.execs.contains_key(&req.exec_id) {
            return Err(status_code(
                ttrpc::Code::ALREADY_EXISTS,
                format!("exec {} of {} exists", req.exec_id, req.id),
            ));
        }
        // The process spec (OCI JSON) as `vmshim runtime exec --process`
        // takes it.
        let spec_file = bundle.join(format!("exec-{}.json", req.exec_id));
        std::fs::write(&spec_file, &spec.value).map_err(|e| internal(format!("write {}: {e}", spec_file.display())))?;
        let (tx, rx) = watch::channel(None);
        c.execs.insert(
            req.exec_id.clone(),
            ExecEntry {
                spec_file,
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                stdin_hold: None,
                terminal: req.terminal,
                console: None,
                process: None,
                pid: 0,
                exit: rx,
                exit_tx: Some(tx),
            },
        );
        drop(slot);
        let event = TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event)).await;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        self.bundle(&req.id).await?;
        let slot = self.containers.lock().await;
        let c = held(&slot, &req.id)?;
        let console = if req.exec_id.is_empty() {
            c.console.as_ref()
        } else {
            c.execs
                .get(&req.exec_id)
                .ok_or_else(|| not_found(format!("exec {} of {} does not exist", req.exec_id, req.id)))?
                .console
                .as_ref()
        };
        let Some(console) = console else {
            return Err(status_code(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("process {:?} of {} has no terminal", req.exec_id, req.id),
            ));
        };
        // The runtime follows the host terminal's size into the guest.
        resize(&console.master, req.width, req.height)?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        self.bundle(&req.id).await?;
        let mut slot = self.containers.lock().await;
        let c = held_mut(&mut slot, &req.id)?;
        let (relay, console) = if req.exec_id.is_empty() {
            (c.stdin_hold.as_ref(), c.console.as_ref())
        } else {
            let e = c
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| not_found(format!("exec {} of {} does not exist", req.exec_id, req.id)))?;
            (e.stdin_hold.as_ref(), e.console.as_ref())
        };
        for relay in relay.into_iter().chain(console.and_then(|c| c.input.as_ref())) {
            relay.close();
        }
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let bundle = self.bundle(&req.id).await?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| status_code(ttrpc::Code::INVALID_ARGUMENT, "update without resources".into()))?;
        let resources = host_shim::image::resources_from_json(&any.value, Path::new("the update's resources"))
            .map_err(|e| status_code(ttrpc::Code::INVALID_ARGUMENT, e.to_string()))?;
        let member = held(&*self.containers.lock().await, &req.id)?.member.clone();
        match member {
            Some(m) => m.update(resources).await,
            None => runtime(&bundle).update(&req.id, resources).await,
        }
        .map_err(runtime_err)?;
        Ok(Empty::new())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        let bundle = self.bundle(&req.id).await?;
        let member = held(&*self.containers.lock().await, &req.id)?.member.clone();
        let source = crate::metrics::Source::new(runtime(&bundle), &req.id, member);
        let stats = source.stats().await.map_err(runtime_err)?;
        Ok(StatsResponse {
            stats: Some(crate::metrics::metrics_any(&stats).map_err(internal)?).into(),
            ..Default::default()
        })
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, req: CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        self.check_id(&req.id).await?;
        Err(unimplemented("Checkpoint"))
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        self.check_id(&req.id).await?;
        let task_pid = self.containers.lock().await.get(&req.id).map_or(0, |c| c.pid);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        self.check_id(&req.id).await?;
        if !self.containers.lock().await.is_empty() && !req.now {
            // containerd asks after every delete; a container still here
            // keeps the shim.
            return Ok(Empty::new());
        }
        self.exit.signal();
        Ok(Empty::new())
    }
}

impl Service {
    /// `Create` of a container with a VM of its own (a pod's sandbox
    /// among them, whose VM shares the pod's directory): `vmshim runtime
    /// create` with the task's stdio.
    async fn create_own(&self, req: &CreateTaskRequest, bundle: &Path, sandbox: bool) -> Result<Made, ttrpc::Error> {
        let (cpus, memory_mib) = pod::vm_size(bundle).map_err(|e| status_code(ttrpc::Code::INVALID_ARGUMENT, e))?;
        let mut extra = CreateExtra {
            cpus,
            memory_mib,
            share: None,
        };
        let pod_dir = match sandbox {
            true => {
                // The guest sees the pod's directory after the spec's own
                // shares.
                let shares = Bundle::read(bundle, &req.id)
                    .map_err(|e| status_code(ttrpc::Code::INVALID_ARGUMENT, e.to_string()))?
                    .shares
                    .len();
                let dir = PodDir::create(&bundle.join(pod::POD_DIR)).map_err(runtime_err)?;
                extra.share = Some(dir.path().to_owned());
                Some((dir, Pod::guest_dir(shares)))
            }
            false => None,
        };
        let made = self.run_own(req, bundle, &extra).await;
        match (made, pod_dir) {
            (Ok(made), Some((dir, guest_dir))) => {
                *self.pod.lock().await = Some(PodState {
                    sandbox: req.id.clone(),
                    bundle: bundle.to_owned(),
                    pid: made.pid,
                    dir,
                    guest_dir,
                });
                Ok(made)
            }
            (Err(e), Some((dir, _))) => {
                if let Err(left) = dir.remove() {
                    log::warn!("{left}");
                }
                Err(e)
            }
            (made, None) => made,
        }
    }

    async fn run_own(&self, req: &CreateTaskRequest, bundle: &Path, extra: &CreateExtra) -> Result<Made, ttrpc::Error> {
        if req.terminal {
            // The terminal's master comes to a console socket, as runc's
            // shim gets it; its stdio is relayed to the FIFOs.
            let socket = bundle.join("console.sock");
            let _ = std::fs::remove_file(&socket);
            let listener =
                UnixListener::bind(&socket).map_err(|e| internal(format!("listen on {}: {e}", socket.display())))?;
            let null = |write: bool| {
                OpenOptions::new()
                    .read(!write)
                    .write(write)
                    .open("/dev/null")
                    .map_err(|e| internal(format!("open /dev/null: {e}")))
            };
            let created = run_create(
                bundle,
                &req.id,
                Some(&socket),
                extra,
                null(false)?,
                null(true)?,
                null(true)?,
            )
            .await;
            let master = created.and_then(|()| receive_master(&listener, &req.id));
            let _ = std::fs::remove_file(&socket);
            let (console, output) = relay_console(master?, &req.stdin, &req.stdout)?;
            let state = runtime(bundle).state(&req.id).await.map_err(runtime_err)?;
            return Ok(Made {
                pid: state.pid,
                stdin_hold: None,
                console: Some(console),
                output: Some(output),
                member: None,
            });
        }
        let (stdin, stdin_hold) = open_stdin(&req.stdin)?;
        let stdout = open_output(&req.stdout)?;
        let stderr = open_output(&req.stderr)?;
        run_create(bundle, &req.id, None, extra, stdin, stdout, stderr).await?;
        let state = runtime(bundle).state(&req.id).await.map_err(runtime_err)?;
        Ok(Made {
            pid: state.pid,
            stdin_hold,
            console: None,
            output: None,
            member: None,
        })
    }

    /// `Create` of a container of the pod whose sandbox is `sandbox`: made
    /// by the agent of the pod's VM, its stdio relayed from this shim.
    async fn create_member(&self, req: &CreateTaskRequest, bundle: &Path, sandbox: &str) -> Result<Made, ttrpc::Error> {
        let state = self.pod.lock().await.clone();
        let Some(state) = state.filter(|p| p.sandbox == sandbox) else {
            return Err(status_code(
                ttrpc::Code::FAILED_PRECONDITION,
                format!(
                    "container {}: its sandbox {sandbox} is not a pod this shim holds",
                    req.id
                ),
            ));
        };
        let rt = runtime(&state.bundle);
        let pod = Pod {
            sandbox: &state.sandbox,
            sandbox_pid: state.pid,
            dir: &state.dir,
            guest_dir: state.guest_dir.clone(),
        };
        if req.terminal {
            let socket = bundle.join("console.sock");
            let _ = std::fs::remove_file(&socket);
            let listener =
                UnixListener::bind(&socket).map_err(|e| internal(format!("listen on {}: {e}", socket.display())))?;
            let created = rt
                .create_member(&pod, &req.id, bundle, ExecStdio::ConsoleSocket(socket.clone()))
                .await;
            let master = match created {
                Ok(member) => receive_master(&listener, &req.id).map(|m| (member, m)),
                Err(e) => Err(runtime_err(e)),
            };
            let _ = std::fs::remove_file(&socket);
            let (member, master) = master?;
            let (console, output) = relay_console(master, &req.stdin, &req.stdout)?;
            return Ok(Made {
                pid: state.pid,
                stdin_hold: None,
                console: Some(console),
                output: Some(output),
                member: Some(Arc::new(member)),
            });
        }
        let (stdin, stdin_hold) = if req.stdin.is_empty() {
            (None, None)
        } else {
            let (read, hold) = open_stdin(&req.stdin)?;
            (Some(read), hold)
        };
        let stdio = ExecStdio::Files {
            stdin,
            stdout: open_output(&req.stdout)?,
            stderr: open_output(&req.stderr)?,
        };
        let member = rt
            .create_member(&pod, &req.id, bundle, stdio)
            .await
            .map_err(runtime_err)?;
        Ok(Made {
            pid: state.pid,
            stdin_hold,
            console: None,
            output: None,
            member: Some(Arc::new(member)),
        })
    }

    /// `Start` of exec `exec_id`: its process started in the VM, its
    /// FIFOs relayed.
    async fn start_exec(&self, bundle: &Path, id: &str, exec_id: &str) -> ttrpc::Result<StartResponse> {
        let (spec_file, stdin, stdout, stderr, terminal, member) = {
            let slot = self.containers.lock().await;
            let c = held(&slot, id)?;
            let e = c
                .execs
                .get(exec_id)
                .ok_or_else(|| not_found(format!("exec {exec_id} of {id} does not exist")))?;
            if e.pid != 0 {
                return Err(status_code(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("exec {exec_id} of {id} has started"),
                ));
            }
            (
                e.spec_file.clone(),
                e.stdin.clone(),
                e.stdout.clone(),
                e.stderr.clone(),
                e.terminal,
                c.member.clone(),
            )
        };
        let rt = runtime(bundle);
        let how = ExecProcess::File(spec_file);
        let process = match &member {
            Some(m) => m.exec_process(&how),
            None => rt.exec_process(id, &how),
        }
        .map_err(runtime_err)?;
        if terminal {
            let socket = bundle.join(format!("exec-{exec_id}.sock"));
            let _ = std::fs::remove_file(&socket);
            let listener =
                UnixListener::bind(&socket).map_err(|e| internal(format!("listen on {}: {e}", socket.display())))?;
            let stdio = ExecStdio::ConsoleSocket(socket.clone());
            let started = match &member {
                Some(m) => m.exec(process, stdio).await,
                None => rt.exec(id, process, stdio).await,
            };
            let master = match started {
                Ok(exec) => receive_master(&listener, exec_id).map(|m| (exec, m)),
                Err(e) => Err(runtime_err(e)),
            };
            let _ = std::fs::remove_file(&socket);
            let (exec, master) = master?;
            let (console, output) = relay_console(master, &stdin, &stdout)?;
            return self
                .started_exec(id, exec_id, exec, None, Some(console), Some(output))
                .await;
        }
        let (stdin_file, stdin_hold) = if stdin.is_empty() {
            (None, None)
        } else {
            let (read, hold) = open_stdin(&stdin)?;
            (Some(read), hold)
        };
        let stdio = ExecStdio::Files {
            stdin: stdin_file,
            stdout: open_output(&stdout)?,
            stderr: open_output(&stderr)?,
        };
        let exec = match &member {
            Some(m) => m.exec(process, stdio).await,
            None => rt.exec(id, process, stdio).await,
        }
        .map_err(runtime_err)?;
        self.started_exec(id, exec_id, exec, stdin_hold, None, None).await
    }

    /// Records started exec `exec_id` and watches for its end.
    async fn started_exec(
        &self,
        id: &str,
        exec_id: &str,
        exec: Exec,
        stdin_hold: Option<StdinRelay>,
        console: Option<Console>,
        output: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> ttrpc::Result<StartResponse> {
        let exec = Arc::new(exec);
        let pid = exec.guest_pid().max(0) as u32;
        let tx = {
            let mut slot = self.containers.lock().await;
            let c = held_mut(&mut slot, id)?;
            let e = c.execs.get_mut(exec_id).expect("the exec just started");
            e.pid = pid;
            e.stdin_hold = stdin_hold;
            e.console = console;
            e.process = Some(exec.clone());
            take_sender(&mut e.exit_tx)
        };
        self.watch_exec(id.to_owned(), exec_id.to_owned(), pid, exec, tx, output);
        let event = TaskExecStarted {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            pid,
            ..Default::default()
        };
        self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }
}
