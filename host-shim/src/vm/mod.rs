//! One micro-VM: the vsock backend, QEMU, and the agent session, torn down
//! together on every path (a normal end, an error, a dropped handle).

pub(crate) mod child;
pub(crate) mod console;
pub mod memory;
pub mod net;
pub mod qemu;
pub mod qmp;
pub(crate) mod runtime_dir;
pub mod virtiofs;
pub mod vsock;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_proto::{AgentKey, KeyError, AGENT_PORT};

use crate::accel::{self, Accel};
use crate::client::{lock, AgentAddr, Client, ClientError};
use crate::profile::Profile;
use child::Supervised;
use qemu::QemuConfig;
use qmp::QmpListener;
use runtime_dir::RuntimeDir;
use virtiofs::{ShareError, SharedPath, Virtiofsd};
use vsock::VsockBackend;

/// A helper program of the VM's (`name`: `vhost-device-vsock`,
/// `virtiofsd`): the path in environment variable `env` if set, else
/// `name` in PATH or in cargo's bin directory (where `scripts/setup.sh`
/// installs it).
pub fn find_helper_program(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
    {
        dirs.push(home.join("bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// How many console lines an error quotes.
const CONSOLE_LINES: usize = 15;

/// How long the agent may take, once it has connected to announce that it
/// listens, to write its readiness line and answer the handshake.
const READINESS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a VM could not be booted or driven.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A file of the VM's runtime directory could not be made or read.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// QEMU or the vsock daemon could not be started.
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// `icount` asked of a VM that KVM runs: only TCG counts
    /// instructions.
    #[error("--icount needs TCG (QEMU's -icount), and this VM would run under KVM: add --accel tcg")]
    IcountWithKvm,
    /// `icount` asked of a VM of more than one vCPU: QEMU 7.2's
    /// instruction counting never brings a microvm's second vCPU up (the
    /// kernel stalls at "Booting SMP configuration").
    #[error(
        "--icount needs --cpus 1, not {cpus}: a guest whose clock counts instructions never brings up a second vCPU"
    )]
    IcountWithCpus {
        /// The vCPUs asked for.
        cpus: u32,
    },
    /// No vsock backend: neither `/dev/vhost-vsock` nor a working
    /// `vhost-device-vsock`.
    #[error("vsock backend: {detail}")]
    BackendFailed {
        /// Why, with the end of the daemon's log.
        detail: String,
    },
    /// QEMU exited before the agent announced itself (a guest panic, a bad
    /// kernel).
    #[error("the VM exited ({status}) before its agent answered; guest console:\n{console}")]
    GuestDied {
        /// How QEMU exited.
        status: String,
        /// The last lines of the guest console.
        console: String,
    },
    /// The agent did not announce itself, or answer, within the boot
    /// timeout.
    #[error("the agent did not answer within {timeout:?} ({last_error}); guest console:\n{console}")]
    AgentTimeout {
        /// The boot timeout.
        timeout: Duration,
        /// The last error of the attempts to reach it.
        last_error: String,
        /// The last lines of the guest console.
        console: String,
    },
    /// The agent refused the first requests, or the connection broke.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// No random bytes for the agent key.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The host files to share could not be shared.
    #[error(transparent)]
    Share(#[from] ShareError),
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// The QEMU program (`qemu-system-x86_64` in PATH by default).
    pub qemu: PathBuf,
    /// The guest kernel: an uncompressed vmlinux with PVH boot.
    pub kernel: PathBuf,
    /// The initramfs, vminitd as `/init`.
    pub initramfs: PathBuf,
    /// A read-only ext4 image the agent mounts (with a writable overlay) as
    /// the root of the processes it runs.
    pub rootfs: Option<PathBuf>,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Guest memory, in MiB.
    pub memory_mib: u32,
    /// `None`: KVM where it really runs a guest, else TCG.
    pub accel: Option<Accel>,
    /// How long the agent may take to answer after QEMU starts.
    pub boot_timeout: Duration,
    /// Extra words for the kernel command line.
    pub cmdline_extra: Vec<String>,
    /// NAT, published ports, a vmshim network.
    pub network: net::GuestNetwork,
    /// Host files and directories the guest reaches through virtio-fs
    /// (none: no device, no daemon).
    pub shares: Vec<SharedPath>,
    /// The guest reports the pages it frees and the host discards them
    /// (the balloon's free page reporting): memory the guest no longer
    /// uses goes back to the host. On by default.
    pub free_page_reporting: bool,
    /// Under TCG, count instructions as the guest's clock (`-icount`):
    /// the guest's phases read the same on every run (for regression
    /// figures), about ten times slower. Refused with KVM.
    pub icount: bool,
    /// Sample QEMU's threads' time on the host's CPUs from its spawn
    /// ([`crate::profile::cpu`]), for [`Vm::take_cpu_samples`].
    pub sample_cpu: bool,
}

impl VmConfig {
    /// Defaults for the given kernel and initramfs.
    pub fn new(kernel: PathBuf, initramfs: PathBuf) -> VmConfig {
        VmConfig {
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel,
            initramfs,
            rootfs: None,
            cpus: 1,
            memory_mib: 256,
            accel: None,
            boot_timeout: Duration::from_secs(30),
            cmdline_extra: Vec::new(),
            network: net::GuestNetwork::default(),
            shares: Vec::new(),
            free_page_reporting: true,
            icount: false,
            sample_cpu: false,
        }
    }

    /// What `icount` cannot go with, refused before anything starts: KVM,
    /// which counts no instructions, and a second vCPU.
    fn check_icount(&self, accel: Accel) -> Result<(), VmError> {
        match self.icount {
            false => Ok(()),
            true if accel == Accel::Kvm => Err(VmError::IcountWithKvm),
            true if self.cpus > 1 => Err(VmError::IcountWithCpus { cpus: self.cpus }),
            true => Ok(()),
        }
    }

    /// The guest kernel command line for a guest run with `accel`.
    pub fn cmdline(&self, accel: Accel) -> String {
        // reboot=t: a triple-fault reboot, the quickest way out of a microvm
        // (QEMU runs with -no-reboot); panic=-1: a panic reboots at once.
        let mut words = vec![
            "console=ttyS0",
            "reboot=t",
            "panic=-1",
            "quiet",
            "lpj=1000000",
            "tsc=reliable",
            "no_timer_check",
            "i8042.noaux",
            "i8042.nomux",
            "i8042.dumbkbd",
            // The console is ttyS0: the 8250 driver registers no other port.
            "8250.nr_uarts=1",
        ];
        // Under TCG there is no TSC-deadline timer, and calibrating the local
        // APIC timer costs two emulated 100 ms waits; the PIT serves instead.
        if accel == Accel::Tcg {
            words.push("nolapic_timer");
        }
        if self.rootfs.is_some() {
            words.push("vminitd.rootfs=/dev/vda");
        }
        let mut s = words.join(" ");
        let shares = virtiofs::cmdline(&self.shares);
        for w in self.network.cmdline().iter().chain(&shares).chain(&self.cmdline_extra) {
            s.push(' ');
            s.push_str(w);
        }
        s
    }
}

/// A running micro-VM with a connected agent.
pub struct Vm {
    client: Option<Client>,
    /// The agent key handed to the guest at boot: every connection to the
    /// agent presents it.
    key: AgentKey,
    qemu: Supervised,
    vsock: VsockBackend,
    /// The share's daemon, where the VM has shares.
    virtiofs: Option<Virtiofsd>,
    console_log: PathBuf,
    /// QEMU's control socket ([`qmp`]).
    qmp: PathBuf,
    accel: Accel,
    accel_reason: String,
    /// Samples QEMU's time on the host's CPUs, where the config asked.
    cpu: Option<crate::profile::cpu::Sampler>,
    // Dropped last: the sockets and logs live here.
    dir: RuntimeDir,
}

impl Vm {
    /// Boots a VM and connects to its agent. Phases are recorded in `profile`.
    pub async fn boot(cfg: &VmConfig, profile: &mut Profile) -> Result<Vm, VmError> {
        let dir = RuntimeDir::create()?;
        let key = AgentKey::generate()?;
        let (accel, accel_reason) = accel::choose(cfg.accel);
        cfg.check_icount(accel)?;
        let vsock = VsockBackend::start(dir.path()).await?;
        profile.mark("vsock backend ready");
        let virtiofs = match cfg.shares.is_empty() {
            true => None,
            false => {
                let daemon = Virtiofsd::start(dir.path(), &cfg.shares).await?;
                profile.mark("virtiofsd ready");
                Some(daemon)
            }
        };
        let (notify, notify_url) = vsock.notify_listener()?;
        // QEMU sends the console to a socket of ours; we write the log.
        let (console_log, serial) = dir.capture_console()?;
        let qmp = QmpListener::bind(dir.path()).map_err(|source| VmError::Io {
            what: "listen for QEMU's control connection in",
            path: dir.path().to_owned(),
            source,
        })?;
        let qemu_cfg = QemuConfig {
            qemu: cfg.qemu.clone(),
            accel,
            cpus: cfg.cpus,
            memory_mib: cfg.memory_mib,
            kernel: cfg.kernel.clone(),
            initramfs: cfg.initramfs.clone(),
            cmdline: format!("{} vminitd.notify={notify_url}", cfg.cmdline(accel)),
            console_log: serial,
            disks: cfg.rootfs.iter().cloned().collect(),
            vsock_args: vsock.qemu_args(),
            net_args: cfg.network.qemu_args(),
            share_args: virtiofs.as_ref().map(Virtiofsd::qemu_args).unwrap_or_default(),
            balloon_args: memory::balloon_args(cfg.free_page_reporting),
            qmp_args: qmp.qemu_args(),
            icount: cfg.icount,
        };
        let qemu_log = dir.path().join("qemu.log");
        let log = dir.create_file("qemu.log")?;
        let mut cmd = Command::new(&cfg.qemu);
        cmd.args(qemu_cfg.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        cfg.network.pass_taps(&mut cmd);
        qmp.pass(&mut cmd);
        let qemu = Supervised::spawn("qemu", cmd).map_err(|source| VmError::Spawn {
            program: cfg.qemu.clone(),
            source,
        })?;
        profile.mark("VMM spawned");
        let cpu = cfg
            .sample_cpu
            .then(|| crate::profile::cpu::Sampler::start(qemu.pid(), profile.start()));
        let mut vm = Vm {
            client: None,
            key,
            qemu,
            vsock,
            virtiofs,
            console_log,
            qmp: qmp.path().to_owned(),
            accel,
            accel_reason,
            cpu,
            dir,
        };
        let client = vm.connect(&notify, cfg.boot_timeout, &qemu_log).await?;
        profile.mark("agent connected");
        let (sent, rtt) = client.hello_timing();
        profile.add_guest(&client.hello().boot, client.hello().now_ns, sent, rtt);
        vm.client = Some(client);
        Ok(vm)
    }

    /// Waits for the agent's readiness announcement and opens the control
    /// session on it ([`Client::over_readiness`]): nothing is dialled, and
    /// the handshake crosses the readiness line. Fails when QEMU dies or
    /// the deadline passes first. A connection that does not turn out to
    /// be the agent's announcement is dropped and the wait goes on.
    async fn connect(
        &mut self,
        notify: &vsock::NotifyListener,
        timeout: Duration,
        qemu_log: &std::path::Path,
    ) -> Result<Client, VmError> {
        let addr = self.agent_addr();
        let deadline = Instant::now() + timeout;
        let last_error = std::sync::Mutex::new(String::from("the agent never announced that it listens"));
        let session = async {
            loop {
                let conn = match notify.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        *lock(&last_error) = format!("readiness announcement: {e}");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                match tokio::time::timeout(READINESS_TIMEOUT, Client::over_readiness(addr.clone(), conn)).await {
                    Ok(Ok(client)) => return client,
                    Ok(Err(e)) => *lock(&last_error) = format!("readiness announcement: {e}"),
                    Err(_) => {
                        *lock(&last_error) = format!(
                            "readiness announcement: no readiness line and handshake within {READINESS_TIMEOUT:?}"
                        )
                    }
                }
            }
        };
        tokio::pin!(session);
        loop {
            if let Some(status) = self.qemu.try_status() {
                let mut console = console::tail(&self.console_log, CONSOLE_LINES);
                let qemu_err = console::tail(qemu_log, 5);
                if qemu_err != "(no console output)" {
                    console.push_str("\nqemu: ");
                    console.push_str(&qemu_err);
                }
                return Err(VmError::GuestDied {
                    status: status.to_string(),
                    console,
                });
            }
            if Instant::now() >= deadline {
                return Err(VmError::AgentTimeout {
                    timeout,
                    last_error: lock(&last_error).clone(),
                    console: console::tail(&self.console_log, CONSOLE_LINES),
                });
            }
            // Check on QEMU every few milliseconds while waiting.
            if let Ok(client) = tokio::time::timeout(Duration::from_millis(5), &mut session).await {
                notify.close();
                return Ok(client);
            }
        }
    }

    /// The agent session.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("a booted Vm always has a client")
    }

    /// Where the agent listens: another process may connect to it there
    /// while this VM runs (`vsock:CID:PORT` or `hvsock:PATH:PORT`).
    pub fn agent_endpoint(&self) -> agent_proto::Endpoint {
        self.vsock.endpoint(AGENT_PORT)
    }

    /// The agent's endpoint with the key it asks for.
    pub fn agent_addr(&self) -> AgentAddr {
        AgentAddr::new(self.agent_endpoint(), Some(self.key.clone()))
    }

    /// A listener for connections the guest opens to a host port of this
    /// VM's, and the port it is to dial ([`vsock::VsockBackend::guest_listener`]);
    /// `user_port` where each VM has ports of its own.
    pub fn guest_listener(&self, user_port: u32) -> Result<(vsock::GuestListener, u32), VmError> {
        self.vsock.guest_listener(user_port)
    }

    /// The host processes that make up the VM: QEMU, the vsock backend
    /// where it is a process of its own, and the share's daemon where the
    /// VM has shares.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        let mut pids = vec![(self.qemu.name(), self.qemu.pid())];
        if let VsockBackend::User { daemon, .. } = &self.vsock {
            pids.push((daemon.name(), daemon.pid()));
        }
        pids.extend(self.virtiofs.as_ref().map(Virtiofsd::process));
        pids
    }

    /// Stops sampling QEMU's CPU time (after one last sample) and returns
    /// the samples; none where the config did not ask
    /// ([`VmConfig::sample_cpu`]) or after the first call.
    pub fn take_cpu_samples(&mut self) -> Vec<crate::profile::cpu::CpuSample> {
        self.cpu
            .take()
            .map(crate::profile::cpu::Sampler::finish)
            .unwrap_or_default()
    }

    /// QEMU's control socket ([`qmp`]): the balloon is driven there.
    pub fn qmp_socket(&self) -> &std::path::Path {
        &self.qmp
    }

    /// The accelerator in use and why it was chosen.
    pub fn accel(&self) -> (Accel, &str) {
        (self.accel, &self.accel_reason)
    }

    /// The vsock backend in use.
    pub fn vsock_description(&self) -> String {
        self.vsock.describe()
    }

    /// The last lines of the guest console.
    pub fn console_tail(&self, lines: usize) -> String {
        console::tail(&self.console_log, lines)
    }

    /// The runtime directory (sockets, console log).
    pub fn runtime_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Asks the agent to power off and waits for QEMU to exit; kills it if it
    /// does not within `grace`. Everything is gone when this returns.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.shutdown()).await;
            drop(client);
        }
        if self.qemu.wait_timeout(grace).await.is_none() {
            self.qemu.kill();
        }
    }
}

impl Vm {
    /// Ends the VM at once: QEMU and its backends killed, nothing asked of
    /// the guest. For a VM whose work is over and whose guest has nothing
    /// left to write out anywhere: a read-only root under a tmpfs overlay,
    /// and no read-write share (writes to a share reach the host as they
    /// are made, but a guest's orderly power-off is what settles them).
    pub fn discard(mut self) {
        drop(self.client.take());
        self.qemu.kill();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.qemu.kill();
        if let VsockBackend::User { daemon, .. } = &mut self.vsock {
            daemon.kill();
        }
        if let Some(virtiofs) = &mut self.virtiofs {
            virtiofs.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(icount: bool, cpus: u32) -> VmConfig {
        VmConfig {
            icount,
            cpus,
            ..VmConfig::new("vmlinux".into(), "initramfs.cpio".into())
        }
    }

    #[test]
    fn icount_is_refused_under_kvm_and_beside_a_second_vcpu() {
        assert!(config(true, 1).check_icount(Accel::Tcg).is_ok());
        assert!(config(false, 4).check_icount(Accel::Kvm).is_ok());
        assert!(matches!(
            config(true, 1).check_icount(Accel::Kvm),
            Err(VmError::IcountWithKvm)
        ));
        let err = config(true, 3).check_icount(Accel::Tcg).unwrap_err();
        assert!(matches!(err, VmError::IcountWithCpus { cpus: 3 }));
        assert_eq!(
            err.to_string(),
            "--icount needs --cpus 1, not 3: a guest whose clock counts instructions never brings up a second vCPU"
        );
    }
}
