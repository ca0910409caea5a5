//! The instance daemon, `vmshim instance serve NAME`: started detached by
//! [`Instances::start`] (its own session, no parent-death signal, stdio to
//! the instance's log), it holds the VM (QEMU and the vsock backend die
//! with it), the network lease and the guest's `/etc/hosts`, and the main
//! process. It stops the VM on SIGTERM or SIGINT, or when the main process
//! exits, then removes the instance's state.
//!
//! A container's daemon ([`super::InstanceSpec::container`]) is the
//! container's pid instead ([`super::pid`]): started as a child by
//! [`Instances::start_container`], it waits for the go-ahead, joins the
//! VM's NICs to its network namespace ([`crate::netns`]), boots the VM and
//! creates the container; it passes the signals it gets on to the
//! container's process, and when that process ends it keeps how it ended
//! and the container's last cgroup figures in the instance's state, shuts
//! the VM down and exits with its status.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_proto::ExitStatus;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::container::{self, ContainerIo, ContainerStdio};
use super::pid::{exit_code, Forwarded, Go};
use super::{ContainerNetwork, InstanceDir, InstanceError, Instances, MainProcess, Status};
use crate::exec::{spawn, spawn_container, ExecIo};
use crate::netns::{join_vm_network, Attachment};
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
    Signal(i32),
    MainExited(ExitStatus),
    /// The container's process ended (how, when the agent could say).
    ContainerExited(Option<ExitStatus>),
}

impl Instances {
    /// `vmshim instance serve NAME --state-dir DIR`, its stdout and stderr
    /// the instance's log.
    pub(super) fn daemon_command(&self, name: &str) -> Result<Command, String> {
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
        Ok(cmd)
    }

    /// Starts `vmshim instance serve NAME --state-dir DIR` detached; with
    /// `pass_stdio`, this process's stdio goes along for its container.
    pub(super) fn spawn_daemon(&self, name: &str, pass_stdio: bool) -> Result<(), String> {
        let mut cmd = self.daemon_command(name)?;
        let program = cmd.get_program().to_owned();
        // Dropped once the daemon has been spawned.
        let _passed = match pass_stdio {
            true => container::pass_stdio(&mut cmd, [0, 1, 2])
                .map_err(|e| format!("cannot pass the container's stdio: {e}"))?,
            false => Vec::new(),
        };
        crate::network::daemon::spawn_detached(cmd)
            .map_err(|e| format!("cannot run {}: {e}", std::path::Path::new(&program).display()))
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
    ///
    /// Returns the status the daemon exits with: 0, or for a container's
    /// daemon its process's ([`super::exit_code`]; 128+N when a signal N
    /// stopped it before the container was created).
    pub async fn serve(&self, name: &str) -> Result<u8, InstanceError> {
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
        // First: QEMU must not inherit the container's stdio, nor its
        // go-ahead.
        let container_stdio = match &spec.container {
            Some(main) if main.passes_stdio() => {
                Some(ContainerStdio::inherited().map_err(|e| serve_err(e.to_string()))?)
            }
            _ => None,
        };
        let go = match &spec.container {
            Some(_) => Some(Go::inherited().map_err(|e| serve_err(e.to_string()))?),
            None => None,
        };
        let me = Owner::current();
        record.pid = me.pid;
        record.started = me.started;
        record.status = Status::Starting;
        dir.write_record(&record)?;
        log(&format!("daemon of instance {name:?}, pid {}", me.pid));
        let mut stop =
            Signals::new(spec.container.is_some()).map_err(|e| serve_err(format!("cannot handle signals: {e}")))?;
        // A container's: the creation hooks set up its network namespace
        // meanwhile.
        if let Some(go) = go {
            let told = tokio::select! {
                told = go.wait() => told,
                signo = stop.next() => {
                    log(&format!("{} while waiting to go on", signal_name(signo)));
                    let _ = dir.remove();
                    return Ok(128u8.saturating_add(signo as u8));
                }
            };
            if !told {
                log("told not to go on: leaving");
                let _ = dir.remove();
                return Ok(0);
            }
        }

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
        let mut cfg = spec
            .vm_config(name, lease.as_ref().map(SwitchPort::for_lease))
            .map_err(serve_err)?;
        // Blocking (netlink), on the daemon's own thread, in its network
        // namespace: the container's.
        let attachment = match spec.container.as_ref().map(|c| c.network) {
            Some(ContainerNetwork::Namespace { host }) => {
                let attached = Attachment::attach(host).and_then(|a| {
                    let nics = a.nics().map_err(|source| crate::netns::NetnsError::Tap {
                        name: "(a copy of its descriptor)".to_owned(),
                        source,
                    })?;
                    Ok((a, nics))
                });
                let (attachment, nics) = match attached {
                    Ok(attached) => attached,
                    Err(e) => return give_up(&dir, &mut record, format!("the container's network: {e}")),
                };
                log(&describe_attachment(&attachment));
                cfg.network.none = nics.is_empty();
                cfg.network.taps = nics;
                Some(attachment)
            }
            Some(ContainerNetwork::Loopback) => {
                cfg.network.none = true;
                None
            }
            Some(ContainerNetwork::Nat) | None => None,
        };
        let mut profile = Profile::new(std::time::Instant::now());
        let vm = tokio::select! {
            vm = Vm::boot(&cfg, &mut profile) => match vm {
                Ok(vm) => vm,
                Err(e) => {
                    detach(attachment);
                    return Err(serve_err(e.to_string()));
                }
            },
            signo = stop.next() => {
                log(&format!("{} while booting: stopping", signal_name(signo)));
                detach(attachment);
                drop(lease);
                let _ = dir.remove();
                return Ok(match spec.container {
                    Some(_) => 128u8.saturating_add(signo as u8),
                    None => 0,
                });
            }
        };
        // The VM holds the taps now; ours go with the attachment.
        drop(cfg);
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
            attachment: attachment.as_ref(),
        };
        let outcome = vm_run.run(&mut record, container_stdio, &mut stop).await;
        match &outcome {
            Ok(Ending::Signal(signo)) => log(&format!("{}: stopping the VM", signal_name(*signo))),
            Ok(Ending::MainExited(status)) => log(&format!(
                "the main process exited ({}): stopping the VM",
                describe(status)
            )),
            Ok(Ending::ContainerExited(status)) => log(&format!(
                "the container's process ended ({}): stopping the VM",
                status.as_ref().map_or("status unknown".to_owned(), describe)
            )),
            Err(e) => log(&format!("{e}: stopping the VM")),
        }
        let started = record.status == Status::Running;
        record.status = Status::Stopping;
        let _ = dir.write_record(&record);
        vm.shutdown(POWEROFF_GRACE).await;
        detach(attachment);
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
            // How the container's process ended stays, for `state` and
            // `wait`, until the container is deleted.
            Ok(Ending::ContainerExited(_)) => {}
            _ => dir.remove()?,
        }
        match outcome? {
            Ending::ContainerExited(status) => Ok(exit_code(status.as_ref())),
            Ending::Signal(signo) if spec.container.is_some() => Ok(128u8.saturating_add(signo as u8)),
            Ending::Signal(_) | Ending::MainExited(_) => Ok(0),
        }
    }
}

/// Why the container could not be created, as the instance's error. A
/// program not found says so in runc's words too (`exec: "PROG":
/// executable file not found in $PATH`), which podman and docker read to
/// exit 127, as they do with runc.
fn create_failure(args: &[String], e: &container::CreateError) -> String {
    let not_found = match e {
        container::CreateError::Agent(e) => e
            .agent_error()
            .is_some_and(|b| b.exec_failure == Some(agent_proto::ExecFailure::ProgramNotFound)),
        _ => false,
    };
    match (not_found, args.first()) {
        (true, Some(program)) => {
            format!("cannot create the container: exec: {program:?}: executable file not found in $PATH ({e})")
        }
        _ => format!("cannot create the container: {e}"),
    }
}

/// Leaves a container's instance before its VM booted: the reason is left
/// in its state for the vmshim that started it, which reports it.
fn give_up(dir: &InstanceDir, record: &mut super::Instance, detail: String) -> Result<u8, InstanceError> {
    log(&detail);
    record.error = Some(detail.clone());
    dir.write_record(record)?;
    Err(InstanceError::Serve {
        name: record.name.clone(),
        detail,
    })
}

/// Takes the redirects away from the container's network namespace, once
/// the VM no longer uses its taps.
fn detach(attachment: Option<Attachment>) {
    for failure in attachment.map(Attachment::detach).unwrap_or_default() {
        log(&format!("cannot undo the network's attachment: {failure}"));
    }
}

/// One log line of what the VM's NICs stand for.
fn describe_attachment(attachment: &Attachment) -> String {
    if attachment.interfaces().is_empty() {
        return "the container's network namespace has no interface but loopback: the VM has none either".to_owned();
    }
    let each: Vec<String> = attachment
        .interfaces()
        .iter()
        .map(|a| {
            let config = a.guest_config();
            format!(
                "{} ({}, mtu {}, {}) through {}",
                a.link.name,
                config.name,
                a.link.mtu,
                config.addresses.join(" "),
                a.tap.name
            )
        })
        .collect();
    format!("the VM's NICs are the container's network's: {}", each.join("; "))
}

/// A booted VM and what the daemon knows of it.
struct VmRun<'a> {
    name: &'a str,
    dir: &'a InstanceDir,
    vm: &'a Vm,
    spec: &'a super::InstanceSpec,
    networks: &'a Networks,
    /// The container's network namespace's interfaces, when they are the
    /// VM's NICs.
    attachment: Option<&'a Attachment>,
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
    /// served until a signal, or until the main process (or the
    /// container's) exits. A container's signals are passed on to its
    /// process; how it ended is recorded.
    async fn run(
        &self,
        record: &mut super::Instance,
        container_stdio: Option<ContainerStdio>,
        stop: &mut Signals,
    ) -> Result<Ending, InstanceError> {
        let client = self.vm.client();
        if let Some(attachment) = self.attachment.filter(|a| !a.interfaces().is_empty()) {
            let mut config = agent_proto::NetworkConfig {
                interfaces: attachment.guest_config(),
                ..Default::default()
            };
            // A name server on the namespace's loopback (docker's embedded
            // DNS) is answered through the daemon, which runs there.
            if let Some(main) = &self.spec.container {
                let servers = crate::netns::dns::loopback_nameservers(&main.spec, &self.spec.shares);
                if !servers.is_empty() {
                    let (listener, port) = self
                        .vm
                        .guest_listener(crate::netns::dns::RELAY_PORT)
                        .map_err(|e| self.err(format!("cannot listen for the guest's DNS queries: {e}")))?;
                    let addresses: Vec<String> = servers.iter().map(ToString::to_string).collect();
                    log(&format!(
                        "relaying the guest's DNS queries to {} in the container's network namespace",
                        addresses.join(", ")
                    ));
                    config.dns_relay = Some(agent_proto::DnsRelay { addresses, port });
                    tokio::spawn(crate::netns::dns::serve(listener, servers));
                }
            }
            client
                .call::<()>(agent_proto::Op::ConfigureNetwork(config))
                .await
                .map_err(|e| self.err(format!("cannot configure the guest's network: {e}")))?;
        }
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
                let mut spec = main.spec.clone();
                if let ContainerNetwork::Namespace { .. } = main.network {
                    join_vm_network(&mut spec);
                }
                let attached = container::create(client, spec, io)
                    .await
                    .map_err(|e| self.err(create_failure(&main.spec.process.args, &e)))?;
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
        record.qmp = Some(self.vm.qmp_socket().to_owned());
        self.dir.write_record(record)?;

        let main_exit = async {
            match main {
                Some(running) => running.wait().await,
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
        tokio::pin!(hosts_current, main_exit, container_exit);
        loop {
            tokio::select! {
                status = &mut main_exit => return Ok(Ending::MainExited(
                    status.map_err(|e| self.err(format!("waiting for the main process: {e}")))?,
                )),
                signo = stop.next() => match (stop.forwards(), &self.spec.container) {
                    (true, Some(main)) => {
                        if let Err(e) = client.kill_container(&main.spec.id, signo, false).await {
                            log(&format!("cannot pass {} on to the container: {e}", signal_name(signo)));
                        }
                    }
                    _ => return Ok(Ending::Signal(signo)),
                },
                status = &mut container_exit => {
                    record.exit = Some(status.unwrap_or(ExitStatus { code: None, signal: None }));
                    // Its last figures (an OOM kill that ended it among
                    // them) while its cgroup is still there.
                    if let Some(main) = &self.spec.container {
                        record.exit_stats = client.container_stats(&main.spec.id).await.ok();
                    }
                    self.dir.write_record(record)?;
                    return Ok(Ending::ContainerExited(status));
                }
                () = &mut hosts_current => unreachable!("keeping the hosts file current never ends"),
            }
        }
    }
}

/// The signals the daemon handles from the start, so that a stop during
/// the boot is orderly too: SIGTERM and SIGINT, which stop the VM; for a
/// container's daemon, every signal it passes on to the container's
/// process once there is one ([`super::FORWARDED`]).
enum Signals {
    Stop { term: Signal, int: Signal },
    Forward(Forwarded),
}

impl Signals {
    fn new(container: bool) -> std::io::Result<Signals> {
        Ok(match container {
            true => Signals::Forward(Forwarded::new()?),
            false => Signals::Stop {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            },
        })
    }

    /// Whether a signal is passed on (else it stops the VM).
    fn forwards(&self) -> bool {
        matches!(self, Signals::Forward(_))
    }

    async fn next(&mut self) -> i32 {
        match self {
            Signals::Stop { term, int } => tokio::select! {
                _ = term.recv() => libc::SIGTERM,
                _ = int.recv() => libc::SIGINT,
            },
            Signals::Forward(forwarded) => forwarded.next().await,
        }
    }
}

/// `SIGTERM`, or `signal 40`.
fn signal_name(signo: i32) -> String {
    match signo {
        libc::SIGTERM => "SIGTERM".to_owned(),
        libc::SIGINT => "SIGINT".to_owned(),
        libc::SIGHUP => "SIGHUP".to_owned(),
        libc::SIGKILL => "SIGKILL".to_owned(),
        other => format!("signal {other}"),
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
