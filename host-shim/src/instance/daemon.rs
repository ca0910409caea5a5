//! The instance daemon, `vmshim instance serve NAME`: started detached by
//! [`Instances::start`] (its own session, no parent-death signal, stdio to
//! the instance's log), it holds the VM (QEMU and the vsock backend die
//! with it), the network lease and the guest's `/etc/hosts`, and the main
//! process. It stops the VM on SIGTERM or SIGINT, or when the main process
//! exits, then removes the instance's state.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_proto::ExitStatus;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::container::{self, ContainerIo, ContainerStdio};
use super::{InstanceDir, InstanceError, Instances, MainProcess, Status};
use crate::exec::{spawn, spawn_container, ExecIo};
use crate::network::process::Owner;
use crate::network::{HostsFile, Lease, Networks};
use crate::private::log::{install_stdio, limit as log_limit, rotate_stdio, stdio as stdio_log, RotatingLog};
use crate::profile::Profile;
use crate::vm::net::SwitchPort;
use crate::vm::Vm;

/// How long the guest may take to power off after the shutdown request.
const POWEROFF_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon stops its VM.
enum Ending {
    Signal(&'static str),
    MainExited(ExitStatus),
}

impl Instances {
    /// Starts `vmshim instance serve NAME --state-dir DIR` detached; with
    /// `pass_stdio`, this process's stdio goes along for its container.
    pub(super) fn spawn_daemon(&self, name: &str, pass_stdio: bool) -> Result<(), String> {
        let program = match &self.program {
            Some(p) => p.clone(),
            None => crate::network::daemon::vmshim_program()
                .ok_or("cannot find the vmshim program to run its daemon (set VMSHIM_BIN to its path)")?,
        };
        let log_path = self.dir(name).log();
        let log = crate::private::PrivateDir::open(&self.dir(name).0)
            .and_then(|dir| dir.open_append("log"))
            .map_err(|e| format!("cannot open the log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let mut cmd = Command::new(&program);
        cmd.args(["instance", "serve", name, "--state-dir"])
            .arg(&self.state_dir)
            .stdout(log)
            .stderr(log2);
        // Dropped once the daemon has been spawned.
        let _passed = match pass_stdio {
            true => container::pass_stdio(&mut cmd, [0, 1, 2])
                .map_err(|e| format!("cannot pass the container's stdio: {e}"))?,
            false => Vec::new(),
        };
        crate::network::daemon::spawn_detached(cmd).map_err(|e| format!("cannot run {}: {e}", program.display()))
    }

    /// The daemon's body: takes instance `name` over from the vmshim that
    /// started it, boots its VM, starts its main process, marks it running,
    /// and serves until told to stop or until the main process exits; then
    /// shuts the VM down, gives the network address back and removes the
    /// instance's state.
    ///
    /// QEMU and the vsock backend die with the thread that spawned them
    /// (`PR_SET_PDEATHSIG`): run this on a thread that lives as long as the
    /// daemon (the one that calls `block_on`), never in a spawned task.
    pub async fn serve(&self, name: &str) -> Result<(), InstanceError> {
        let dir = self.dir(name);
        let serve_err = |detail: String| InstanceError::Serve {
            name: name.to_owned(),
            detail,
        };
        let mut record = dir
            .read_record()?
            .ok_or_else(|| InstanceError::Unknown { name: name.to_owned() })?;
        let spec = dir.read_spec()?;
        // Our stdout and stderr are the log: capped and rotated with it.
        let _ = install_stdio(&dir.log(), log_limit());
        // First: QEMU must not inherit the container's stdio.
        let container_stdio = match &spec.container {
            Some(main) if main.passes_stdio() => {
                Some(ContainerStdio::inherited().map_err(|e| serve_err(e.to_string()))?)
            }
            _ => None,
        };
        let me = Owner::current();
        record.pid = me.pid;
        record.started = me.started;
        record.status = Status::Starting;
        dir.write_record(&record)?;
        log(&format!("daemon of instance {name:?}, pid {}", me.pid));
        let mut stop = StopSignals::new().map_err(|e| serve_err(format!("cannot handle signals: {e}")))?;

        let networks = Networks::at(&self.state_dir);
        // Blocking (the network's lock, `ip` for a tap), on the daemon's
        // own thread: nothing else waits on it.
        let lease: Option<Lease> = match &spec.network {
            Some(network) => Some(
                networks
                    .lease(network, name, spec.ip)
                    .map_err(|e| serve_err(e.to_string()))?,
            ),
            None => None,
        };
        let cfg = spec
            .vm_config(name, lease.as_ref().map(SwitchPort::for_lease))
            .map_err(serve_err)?;
        let mut profile = Profile::new(std::time::Instant::now());
        let vm = tokio::select! {
            vm = Vm::boot(&cfg, &mut profile) => vm.map_err(|e| serve_err(e.to_string()))?,
            why = stop.next() => {
                log(&format!("{why} while booting: stopping"));
                drop(lease);
                let _ = dir.remove();
                return Ok(());
            }
        };
        let (accel, why) = vm.accel();
        log(&format!(
            "VM booted ({accel:?}: {why}; {}); agent at {}",
            vm.vsock_description(),
            vm.agent_endpoint()
        ));

        let vm_run = VmRun {
            name,
            dir: &dir,
            vm: &vm,
            spec: &spec,
            networks: &networks,
        };
        let outcome = vm_run.run(&mut record, container_stdio, &mut stop).await;
        match &outcome {
            Ok(Ending::Signal(signal)) => log(&format!("{signal}: stopping the VM")),
            Ok(Ending::MainExited(status)) => log(&format!(
                "the main process exited ({}): stopping the VM",
                describe(status)
            )),
            Err(e) => log(&format!("{e}: stopping the VM")),
        }
        let started = record.status == Status::Running;
        record.status = Status::Stopping;
        let _ = dir.write_record(&record);
        vm.shutdown(POWEROFF_GRACE).await;
        drop(lease);
        log("VM stopped");
        match &outcome {
            // Left for the vmshim that started it, which reports the error
            // and removes the instance (or, if it is gone, the next sweep).
            Err(e) if !started => {
                record.error = Some(match e {
                    InstanceError::Serve { detail, .. } => detail.clone(),
                    e => e.to_string(),
                });
                dir.write_record(&record)?;
            }
            _ => dir.remove()?,
        }
        outcome.map(|_| ())
    }
}

/// A booted VM and what the daemon knows of it.
struct VmRun<'a> {
    name: &'a str,
    dir: &'a InstanceDir,
    vm: &'a Vm,
    spec: &'a super::InstanceSpec,
    networks: &'a Networks,
}

impl VmRun<'_> {
    fn err(&self, detail: String) -> InstanceError {
        InstanceError::Serve {
            name: self.name.to_owned(),
            detail,
        }
    }

    /// From a booted VM to the reason to stop it: the main process started
    /// (or the container created), the instance marked running, then
    /// served until a signal, or until the main process exits. A
    /// container's process ending is recorded and the VM kept.
    async fn run(
        &self,
        record: &mut super::Instance,
        container_stdio: Option<ContainerStdio>,
        stop: &mut StopSignals,
    ) -> Result<Ending, InstanceError> {
        let client = self.vm.client();
        let mut hosts = HostsFile::default();
        if let Some(network) = &self.spec.network {
            hosts
                .refresh(client, self.networks, network)
                .await
                .map_err(|e| self.err(e.to_string()))?;
        }
        let main = match &self.spec.process {
            Some(main) => {
                let io = log_io(&self.dir.log()).map_err(|e| self.err(format!("cannot open the log: {e}")))?;
                let started = match main {
                    MainProcess::Process(process) => spawn(client, (**process).clone(), io).await,
                    MainProcess::Container(spec) => spawn_container(client, (**spec).clone(), io).await,
                };
                let running = started.map_err(|e| self.err(format!("cannot start the main process: {e}")))?;
                log(&format!("main process started: {:?}", main.args()));
                Some(running)
            }
            None => None,
        };
        let container = match &self.spec.container {
            Some(main) => {
                let io = match (container_stdio, &main.console_socket) {
                    (Some(stdio), _) => ContainerIo::Passed {
                        stdio,
                        attach_stdin: main.stdin || main.spec.process.terminal,
                    },
                    (None, Some(path)) => ContainerIo::Console(path.clone()),
                    (None, None) => return Err(self.err("the container's stdio was not passed".to_owned())),
                };
                let attached = container::create(client, main.spec.clone(), io)
                    .await
                    .map_err(|e| self.err(format!("cannot create the container: {e}")))?;
                log(&format!(
                    "container {:?} created: {:?}",
                    main.spec.id, main.spec.process.args
                ));
                Some(attached)
            }
            None => None,
        };
        record.status = Status::Running;
        let agent = self.vm.agent_addr();
        record.endpoint = Some(agent.endpoint.to_string());
        record.agent_key = agent.key;
        record.vm_pids = self.vm.pids().into_iter().map(|(n, p)| (n.to_owned(), p)).collect();
        self.dir.write_record(record)?;

        let main_exit = async {
            match main {
                Some(running) => running.wait(client).await,
                None => std::future::pending().await,
            }
        };
        let container_exit = async {
            match container {
                Some(attached) => attached.wait(client).await,
                None => std::future::pending().await,
            }
        };
        let hosts_current = async {
            match &self.spec.network {
                Some(network) => match hosts.keep_current(client, self.networks, network).await {},
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(hosts_current);
        tokio::select! {
            status = main_exit => return Ok(Ending::MainExited(
                status.map_err(|e| self.err(format!("waiting for the main process: {e}")))?,
            )),
            why = stop.next() => return Ok(Ending::Signal(why)),
            status = container_exit => {
                log(&format!(
                    "the container's process ended ({}); the VM stays until stopped",
                    status.as_ref().map_or("status unknown".to_owned(), describe)
                ));
                record.exit = status.or(Some(ExitStatus { code: None, signal: None }));
                self.dir.write_record(record)?;
            }
            () = &mut hosts_current => unreachable!("keeping the hosts file current never ends"),
        }
        tokio::select! {
            why = stop.next() => Ok(Ending::Signal(why)),
            () = hosts_current => unreachable!("keeping the hosts file current never ends"),
        }
    }
}

/// SIGTERM and SIGINT, handled from the start so that a stop during the
/// boot is orderly too.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The main process's stdout and stderr: appended to the instance's log
/// (the daemon's own stdio log, so that one writer rotates it).
fn log_io(path: &std::path::Path) -> std::io::Result<ExecIo> {
    let log = match stdio_log() {
        Some(log) if log.path() == path => log,
        _ => Arc::new(RotatingLog::open(path, log_limit()).map_err(std::io::Error::other)?),
    };
    Ok(ExecIo {
        stdin: None,
        stdout: Some(Box::new(LogFile(log.clone()))),
        stderr: Some(Box::new(LogFile(log))),
    })
}

/// A log file as an async writer. Writes to a regular file do not wait on
/// anyone: they are made in place.
struct LogFile(Arc<RotatingLog>);

impl tokio::io::AsyncWrite for LogFile {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(self.0.write(buf).map(|()| buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn describe(status: &ExitStatus) -> String {
    format!("status {}", status.shell_code())
}

/// One line on the daemon's stderr (the log), with a timestamp.
fn log(line: &str) {
    rotate_stdio();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    eprintln!("{}.{:03} vmshim: {line}", now.as_secs(), now.subsec_millis());
}
