//! Instances: VMs that outlive the command that started them
//! (`vmshim run -d --name NAME`), each held by a daemon of its own
//! (`vmshim instance serve NAME`), reached by name (`exec`, `ps`, `stop`).
//!
//! State lives in `$VMSHIM_STATE_DIR/instances/NAME/` (the state directory
//! is `${XDG_STATE_HOME:-$HOME/.local/state}/vmshim` by default):
//!
//! | file | what |
//! |---|---|
//! | `instance.json` | the [`Instance`]: name, owner pid and start time, status, agent endpoint, created time, command, the VM's host pids and QEMU's control socket |
//! | `spec.json` | the [`InstanceSpec`]: what the daemon boots and runs |
//! | `log` | the daemon's log, and the main process's stdout and stderr (rotated to `log.1` at `$VMSHIM_LOG_MAX_SIZE`) |
//!
//! The state directory and `instances/` are 0700 and checked before use,
//! each instance's directory 0700 and its files 0600 whatever the umask
//! (one that is not safe to use is refused, [`crate::PrivateError`]):
//! `spec.json` holds the process's environment.
//! The directory is made whole in a temporary directory and renamed into
//! place, so a name is taken atomically. Its owner is the starting vmshim
//! until the daemon takes over. The daemon removes the directory when its
//! VM stops (stopped, or its main process ended: Docker's semantics, the VM
//! lives as long as its main process); a directory whose owner is gone (a
//! daemon killed with SIGKILL: its QEMU dies with it) is swept by the next
//! [`Instances::list`], [`Instances::start`] or [`Instances::get`].

mod container;
mod daemon;
mod memory;
mod pid;
mod spec;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::network::process::Owner;
use crate::network::{check_name, NetworkError, Networks};
use crate::private::{ensure_private_dir, write_private_atomically, PrivateDir, PrivateError};
pub use pid::{exit_code, Starting, FORWARDED};
pub use spec::{ContainerMain, ContainerNetwork, InstanceSpec, MainProcess};

/// How long the daemon may take to take the instance over from the vmshim
/// that started it.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time allowed, beyond the boot timeout, for the daemon to lease an
/// address and start the main process.
const START_SLACK: Duration = Duration::from_secs(10);

/// How many log lines an error quotes.
const LOG_LINES: usize = 15;

/// Why an instance operation failed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// A bad instance name, or no state directory (names follow the
    /// network's rule: [`crate::network::NAME_RULE`]).
    #[error(transparent)]
    Name(NetworkError),
    /// No live instance of that name.
    #[error("no instance {name:?} (see vmshim ps)")]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// `start` with the name of a live instance.
    #[error("an instance named {name:?} is already running (daemon pid {pid}); stop it first")]
    NameTaken {
        /// The name.
        name: String,
        /// The daemon that holds it.
        pid: u32,
    },
    /// An instance that is starting or stopping, not reachable.
    #[error("instance {name:?} is {status}, not running")]
    NotRunning {
        /// The instance.
        name: String,
        /// Where it is in its life.
        status: Status,
    },
    /// The daemon did not bring the instance up; the detail quotes its log.
    #[error("instance {name:?} did not start: {detail}")]
    StartFailed {
        /// The instance.
        name: String,
        /// Why, with the end of its log.
        detail: String,
    },
    /// A file of the instance's state could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// `instance.json` or `spec.json` that does not parse.
    #[error("{} is corrupt: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        detail: String,
    },
    /// The daemon could not boot the VM, or start or wait for its main
    /// process or container.
    #[error("instance {name:?}: {detail}")]
    Serve {
        /// The instance.
        name: String,
        /// What failed.
        detail: String,
    },
    /// A state directory or file that could not be made private, or that
    /// is not safe to use.
    #[error(transparent)]
    Private(#[from] PrivateError),
    /// Its memory could not be read or resized.
    #[error("instance {name:?}'s memory")]
    Memory {
        /// The instance.
        name: String,
        /// What failed.
        source: crate::vm::memory::MemoryError,
    },
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Booting: not yet reachable.
    Starting,
    /// The agent answers at the endpoint.
    Running,
    /// Shutting down.
    Stopping,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Starting => "starting",
            Status::Running => "running",
            Status::Stopping => "stopping",
        })
    }
}

/// What `instance.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    /// The instance's name: its VM's host name, its name on a network.
    pub name: String,
    /// The owner: the daemon, or the starting vmshim until the daemon
    /// takes over.
    pub pid: u32,
    /// The owner's start time (clock ticks after boot), which tells it
    /// apart from a later process with the same pid.
    pub started: Option<u64>,
    /// Where it is in its life.
    pub status: Status,
    /// Where the agent listens, once running.
    pub endpoint: Option<String>,
    /// The key the agent asks every connection for (this file is its
    /// owner's alone, 0600), once running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_key: Option<agent_proto::AgentKey>,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The main process's command; empty when there is none.
    pub command: Vec<String>,
    /// The VM's host processes by role (`qemu`, `vhost-device-vsock`), once
    /// running.
    #[serde(default)]
    pub vm_pids: Vec<(String, u32)>,
    /// QEMU's control socket, where the balloon is driven
    /// ([`crate::vm::qmp`]), once running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qmp: Option<PathBuf>,
    /// How the container's process ended ([`InstanceSpec::container`]),
    /// once its output has been written out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<agent_proto::ExitStatus>,
    /// The container's cgroup figures as its process ended, read before
    /// the VM went down (its OOM kills among them); absent where the agent
    /// could not give them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_stats: Option<agent_proto::ContainerStats>,
    /// Why the daemon could not start the instance, for the vmshim that
    /// started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Instance {
    fn owner(&self) -> Owner {
        Owner {
            pid: self.pid,
            started: self.started,
        }
    }

    /// Whether its owner still runs.
    pub fn alive(&self) -> bool {
        self.owner().alive()
    }
}

/// The instances of one state directory.
#[derive(Debug, Clone)]
pub struct Instances {
    state_dir: PathBuf,
    /// The vmshim program daemons run; found at run time when `None`.
    program: Option<PathBuf>,
}

impl Instances {
    /// The default state directory (as for networks): `$VMSHIM_STATE_DIR`,
    /// else `$XDG_STATE_HOME/vmshim`, else `$HOME/.local/state/vmshim`.
    pub fn from_env() -> Result<Instances, InstanceError> {
        let networks = Networks::from_env().map_err(InstanceError::Name)?;
        Ok(Instances::at(networks.state_dir()))
    }

    /// The instances of state directory `state_dir` (made absolute: the
    /// daemon runs in `/`).
    pub fn at(state_dir: impl Into<PathBuf>) -> Instances {
        let dir = state_dir.into();
        Instances {
            state_dir: std::path::absolute(&dir).unwrap_or(dir),
            program: None,
        }
    }

    /// Runs daemons with `program` (a vmshim binary).
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Instances {
        self.program = Some(program.into());
        self
    }

    /// The state directory (`instances/` is in it).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    fn root(&self) -> PathBuf {
        self.state_dir.join("instances")
    }

    fn dir(&self, name: &str) -> InstanceDir {
        InstanceDir(self.root().join(name))
    }

    /// The live instances, by name; the state of dead ones is removed.
    pub fn list(&self) -> Result<Vec<Instance>, InstanceError> {
        let root = self.root();
        let entries = match fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &root)(e)),
        };
        let mut live = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else { continue };
            if let Some(rest) = name.strip_prefix(".new-") {
                sweep_temporary(&entry.path(), rest);
                continue;
            }
            if let Some(instance) = self.live(name)? {
                live.push(instance);
            }
        }
        live.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(live)
    }

    /// Instance `name`, if its owner runs, or if its container's process
    /// ended (how it ended is kept until the instance is stopped); its
    /// state is removed if not.
    fn live(&self, name: &str) -> Result<Option<Instance>, InstanceError> {
        let dir = self.dir(name);
        match dir.read_record() {
            Ok(Some(instance)) if instance.alive() || instance.exit.is_some() => Ok(Some(instance)),
            Ok(None) => Ok(None),
            // Dead, or never whole (a record is written whole): stale.
            Ok(Some(_)) | Err(InstanceError::Corrupt { .. }) => {
                dir.remove()?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Live instance `name`.
    pub fn get(&self, name: &str) -> Result<Instance, InstanceError> {
        check_name("instance", name).map_err(InstanceError::Name)?;
        self.live(name)?
            .ok_or_else(|| InstanceError::Unknown { name: name.to_owned() })
    }

    /// Where the agent of running instance `name` listens, with its key.
    pub fn endpoint(&self, name: &str) -> Result<crate::client::AgentAddr, InstanceError> {
        let instance = self.get(name)?;
        let path = self.dir(name).record();
        match (instance.status, &instance.endpoint) {
            (Status::Running, Some(url)) => match url.parse() {
                Ok(endpoint) => Ok(crate::client::AgentAddr::new(endpoint, instance.agent_key.clone())),
                Err(e) => Err(InstanceError::Corrupt {
                    path,
                    detail: format!("bad endpoint {url:?}: {e}"),
                }),
            },
            (status, _) => Err(InstanceError::NotRunning {
                name: name.to_owned(),
                status,
            }),
        }
    }

    /// Starts instance `name`: its daemon boots the VM of `spec` and starts
    /// its main process, or creates its container (whose stdio is this
    /// process's: see [`InstanceSpec::container`]). Returns once the
    /// instance runs (its agent answers, its container is created) or
    /// failed; on failure nothing of it is left. Blocks meanwhile.
    ///
    /// The daemon is detached (its parent exits at once); a container's
    /// runtime wants it as a child instead: [`Instances::start_container`].
    pub fn start(&self, name: &str, spec: &InstanceSpec) -> Result<Instance, InstanceError> {
        let me = self.prepare(name, spec)?;
        if let Err(e) = self.spawn_daemon(name, spec.container.as_ref().is_some_and(ContainerMain::passes_stdio)) {
            let dir = self.dir(name);
            let log = crate::network::daemon::log_tail(&dir.log(), LOG_LINES);
            let _ = dir.remove();
            return Err(InstanceError::StartFailed {
                name: name.to_owned(),
                detail: format!("{e}; its log:\n{log}"),
            });
        }
        self.wait_running(name, spec, me)
    }

    /// Takes name `name` for an instance of `spec`: its directory made
    /// whole, owned by this process (returned) until its daemon takes it
    /// over.
    fn prepare(&self, name: &str, spec: &InstanceSpec) -> Result<Owner, InstanceError> {
        check_name("instance", name).map_err(InstanceError::Name)?;
        ensure_private_dir(&self.state_dir)?.ensure_dir("instances")?;
        if let Some(other) = self.live(name)? {
            return Err(InstanceError::NameTaken {
                name: name.to_owned(),
                pid: other.pid,
            });
        }
        let me = Owner::current();
        let record = Instance {
            name: name.to_owned(),
            pid: me.pid,
            started: me.started,
            status: Status::Starting,
            endpoint: None,
            agent_key: None,
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            command: match (&spec.process, &spec.container) {
                (Some(main), _) => main.args().to_vec(),
                (None, Some(c)) => c.spec.process.args.clone(),
                (None, None) => Vec::new(),
            },
            vm_pids: Vec::new(),
            qmp: None,
            exit: None,
            exit_stats: None,
            error: None,
        };
        self.create_dir(name, &record, spec)?;
        Ok(me)
    }

    /// Waits until instance `name`'s daemon, spawned by `me`, has taken it
    /// over and it runs; on failure nothing of it is left.
    fn wait_running(&self, name: &str, spec: &InstanceSpec, me: Owner) -> Result<Instance, InstanceError> {
        let dir = self.dir(name);
        let fail = |detail: String| {
            let log = crate::network::daemon::log_tail(&dir.log(), LOG_LINES);
            let _ = dir.remove();
            InstanceError::StartFailed {
                name: name.to_owned(),
                detail: format!("{detail}; its log:\n{log}"),
            }
        };
        let handover = Instant::now() + HANDOVER_TIMEOUT;
        let deadline = Instant::now() + spec.boot_timeout() + START_SLACK;
        loop {
            let current = match dir.read_record() {
                Ok(Some(r)) => r,
                Ok(None) => return Err(fail("its state directory was removed while it started".to_owned())),
                Err(e) => return Err(fail(e.to_string())),
            };
            let handed_over = current.pid != me.pid;
            // The daemon said why: that is the whole story.
            if let Some(detail) = current.error {
                let _ = dir.remove();
                return Err(InstanceError::StartFailed {
                    name: name.to_owned(),
                    detail,
                });
            }
            if current.status == Status::Running && handed_over {
                return Ok(current);
            }
            if handed_over && !current.alive() {
                return Err(fail("its daemon exited".to_owned()));
            }
            if !handed_over && Instant::now() >= handover {
                return Err(fail(format!("its daemon did not start within {HANDOVER_TIMEOUT:?}")));
            }
            if Instant::now() >= deadline {
                if handed_over {
                    kill_and_wait(current.owner(), libc::SIGKILL, Duration::from_secs(2));
                }
                return Err(fail(format!(
                    "it was not running within {:?}",
                    spec.boot_timeout() + START_SLACK
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Makes `instances/NAME/` whole: written in a temporary directory and
    /// renamed into place, which fails if the name was taken meanwhile.
    /// The directory is 0700 and its files (`spec.json` holds the process's
    /// environment) 0600.
    fn create_dir(&self, name: &str, record: &Instance, spec: &InstanceSpec) -> Result<(), InstanceError> {
        let tmp_name = format!(".new-{}-{}-{:08x}", record.pid, name, crate::vm::vsock::random_u32());
        let tmp_dir = PrivateDir::open(&self.root())?.create_dir(&tmp_name)?;
        let tmp = InstanceDir(tmp_dir.path().to_owned());
        let made = tmp
            .write_record(record)
            .and_then(|()| write_json(&tmp.spec(), spec))
            .and_then(|()| tmp_dir.create_file("log").map(drop).map_err(Into::into))
            .and_then(|()| {
                let dir = self.dir(name);
                fs::rename(&tmp.0, &dir.0).map_err(|e| match e.raw_os_error() {
                    Some(libc::EEXIST) | Some(libc::ENOTEMPTY) => {
                        let pid = dir.read_record().ok().flatten().map_or(0, |r| r.pid);
                        InstanceError::NameTaken {
                            name: name.to_owned(),
                            pid,
                        }
                    }
                    _ => io_err("rename", &dir.0)(e),
                })
            });
        if made.is_err() {
            let _ = fs::remove_dir_all(&tmp.0);
        }
        made
    }

    /// Stops instance `name`: SIGTERM to its daemon, which shuts the VM
    /// down (the agent's shutdown, then QEMU); SIGKILL after `timeout`
    /// (QEMU and the vsock backend die with it). Its state is removed.
    pub fn stop(&self, name: &str, timeout: Duration) -> Result<(), InstanceError> {
        check_name("instance", name).map_err(InstanceError::Name)?;
        let dir = self.dir(name);
        let instance = match dir.read_record() {
            Ok(Some(i)) => i,
            Ok(None) => return Err(InstanceError::Unknown { name: name.to_owned() }),
            Err(InstanceError::Corrupt { .. }) => return dir.remove(),
            Err(e) => return Err(e),
        };
        let owner = instance.owner();
        if owner.alive() && self.is_daemon(owner.pid, name) && !kill_and_wait(owner, libc::SIGTERM, timeout) {
            kill_and_wait(owner, libc::SIGKILL, Duration::from_secs(2));
        }
        dir.remove()
    }

    /// Whether process `pid` is `vmshim instance serve NAME` of this state
    /// directory.
    fn is_daemon(&self, pid: u32, name: &str) -> bool {
        let Some(args) = crate::network::process::cmdline(pid) else {
            return false;
        };
        let state_dir = self.state_dir.to_string_lossy();
        args.windows(3).any(|w| w == ["instance", "serve", name])
            && args.windows(2).any(|w| w[0] == "--state-dir" && w[1] == state_dir)
    }
}

/// Sends `signo` to `owner` and waits up to `grace` for it to be gone;
/// whether it is.
fn kill_and_wait(owner: Owner, signo: i32, grace: Duration) -> bool {
    // SAFETY: kill has no memory-safety preconditions; the caller checked
    // that the pid is the process it means.
    unsafe { libc::kill(owner.pid as i32, signo) };
    let deadline = Instant::now() + grace;
    while owner.alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Removes `.new-PID-NAME-RANDOM` if process PID is gone.
fn sweep_temporary(path: &Path, rest: &str) {
    let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
    if let Some(pid) = pid {
        if !(Owner { pid, started: None }).alive() {
            let _ = fs::remove_dir_all(path);
        }
    }
}

/// The files of one instance.
struct InstanceDir(PathBuf);

impl InstanceDir {
    fn record(&self) -> PathBuf {
        self.0.join("instance.json")
    }
    fn spec(&self) -> PathBuf {
        self.0.join("spec.json")
    }
    fn log(&self) -> PathBuf {
        self.0.join("log")
    }

    /// The record; `None` when the instance does not exist.
    fn read_record(&self) -> Result<Option<Instance>, InstanceError> {
        let path = self.record();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| InstanceError::Corrupt {
                    path,
                    detail: e.to_string(),
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !self.0.exists() => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(InstanceError::Corrupt {
                path,
                detail: "missing".to_owned(),
            }),
            Err(e) => Err(io_err("read", path)(e)),
        }
    }

    fn write_record(&self, record: &Instance) -> Result<(), InstanceError> {
        write_json(&self.record(), record)
    }

    fn read_spec(&self) -> Result<InstanceSpec, InstanceError> {
        let path = self.spec();
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| InstanceError::Corrupt {
            path,
            detail: e.to_string(),
        })
    }

    fn remove(&self) -> Result<(), InstanceError> {
        match fs::remove_dir_all(&self.0) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &self.0)(e)),
        }
    }
}

/// Writes `value` as JSON whole: a 0600 temporary file renamed into place.
fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), InstanceError> {
    let json = serde_json::to_vec_pretty(value).expect("instance files serialize");
    Ok(write_private_atomically(path, &json)?)
}

/// A closure that wraps an I/O error with what was being done, and where.
fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> InstanceError {
    let path = path.into();
    move |source| InstanceError::Io { what, path, source }
}
