//! What an instance boots and runs, as the starting vmshim hands it to the
//! instance daemon (`spec.json`).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use agent_proto::{ContainerSpec, ProcessSpec};

use crate::accel::Accel;
use crate::vm::net::{GuestNetwork, PortMapping};
use crate::vm::virtiofs::SharedPath;
use crate::vm::VmConfig;

/// An instance's VM, network and main process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceSpec {
    /// The QEMU program.
    pub qemu: PathBuf,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The initramfs, vminitd as `/init`.
    pub initramfs: PathBuf,
    /// The read-only ext4 image the agent mounts, with a writable overlay,
    /// as the root of its processes; absent: the initramfs alone.
    pub rootfs: Option<PathBuf>,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Guest memory, in MiB.
    pub memory_mib: u32,
    /// `"kvm"`, `"tcg"`, or absent: KVM where it really runs a guest.
    pub accel: Option<String>,
    /// How long the agent may take to answer after QEMU starts, in
    /// milliseconds.
    pub boot_timeout_ms: u64,
    /// More kernel command line arguments.
    #[serde(default)]
    pub cmdline_extra: Vec<String>,
    /// No network but loopback.
    #[serde(default)]
    pub no_network: bool,
    /// Published ports, as `-p` takes them.
    #[serde(default)]
    pub publish: Vec<String>,
    /// A vmshim network to join.
    pub network: Option<String>,
    /// The address asked for on `network`; absent: the lowest free one.
    pub ip: Option<Ipv4Addr>,
    /// Host files and directories the VM shares (virtio-fs), for as long
    /// as it runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<SharedPath>,
    /// The main process: the instance stops when it exits. Absent: the
    /// instance runs until stopped.
    pub process: Option<MainProcess>,
    /// A container to create once the VM runs, with the starting vmshim's
    /// stdio; it is started by whoever calls `start_container`, and the VM
    /// outlives its process, until stopped (`vmshim runtime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerMain>,
    /// The balloon reports the pages the guest frees ([`VmConfig::free_page_reporting`]).
    #[serde(default = "on")]
    pub free_page_reporting: bool,
}

fn on() -> bool {
    true
}

/// An instance's main process ([`InstanceSpec::process`]): started once the
/// VM runs, its stdout and stderr appended to the instance's log; the
/// instance stops when it exits. (Each spec is boxed: they are large.)
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MainProcess {
    /// A process in the VM's root filesystem (`run -d -- CMD`, an image's).
    Process(Box<ProcessSpec>),
    /// A container, created and started by the agent's engine (`run -d
    /// --bundle`: the bundle's process).
    Container(Box<ContainerSpec>),
}

impl MainProcess {
    /// Its command and arguments.
    pub fn args(&self) -> &[String] {
        match self {
            MainProcess::Process(p) => &p.args,
            MainProcess::Container(c) => &c.process.args,
        }
    }
}

/// An instance's container ([`InstanceSpec::container`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerMain {
    /// The container, as `vmshim runtime create` translated its bundle.
    pub spec: ContainerSpec,
    /// Attach the starting vmshim's stdin to the process (else its stdin is
    /// `/dev/null`). Its stdout and stderr are always attached.
    pub stdin: bool,
    /// With a terminal (`spec.process.terminal`): the console socket that
    /// receives the master of a host pseudo-terminal relayed to the
    /// process's (an absolute path). Absent: the terminal is relayed to
    /// the starting vmshim's stdin and stdout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_socket: Option<PathBuf>,
    /// What the VM's network is.
    #[serde(default)]
    pub network: ContainerNetwork,
}

/// A container VM's network ([`ContainerMain::network`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerNetwork {
    /// NAT, as every VM has by default: the spec has no network namespace
    /// (the host's, which a VM cannot share).
    #[default]
    Nat,
    /// The container's network namespace ([`crate::netns`]): the daemon
    /// runs in it, and once the creation hooks have run, the interfaces
    /// there are the VM's NICs (none: loopback only) and the container
    /// joins the VM's network in the guest. `host` is the starting
    /// vmshim's own namespace, whose interfaces are never taken.
    Namespace {
        /// The device and inode of the starting vmshim's namespace.
        host: crate::netns::NamespaceId,
    },
    /// Loopback only: a new namespace that vmshim may not make (it is not
    /// root); the container has a new one of its own in the guest.
    Loopback,
}

impl ContainerMain {
    /// Whether the starting vmshim's stdio goes to the daemon: always but
    /// for a terminal handed to a console socket.
    pub fn passes_stdio(&self) -> bool {
        !(self.spec.process.terminal && self.console_socket.is_some())
    }
}

impl InstanceSpec {
    /// The spec of a VM booted with `cfg` (whose `network` is ignored: the
    /// daemon makes it from `publish`, `network` and `ip`).
    pub fn from_config(cfg: &VmConfig) -> InstanceSpec {
        InstanceSpec {
            qemu: cfg.qemu.clone(),
            kernel: cfg.kernel.clone(),
            initramfs: cfg.initramfs.clone(),
            rootfs: cfg.rootfs.clone(),
            cpus: cfg.cpus,
            memory_mib: cfg.memory_mib,
            accel: cfg.accel.map(|a| a.to_string()),
            boot_timeout_ms: cfg.boot_timeout.as_millis() as u64,
            cmdline_extra: cfg.cmdline_extra.clone(),
            no_network: false,
            publish: Vec::new(),
            network: None,
            ip: None,
            shares: cfg.shares.clone(),
            process: None,
            container: None,
            free_page_reporting: cfg.free_page_reporting,
        }
    }

    /// How long the agent may take to answer after QEMU starts.
    pub fn boot_timeout(&self) -> Duration {
        Duration::from_millis(self.boot_timeout_ms)
    }

    /// The VM config, for a VM named `hostname`; `switch` is its port on
    /// `network`, once leased.
    pub fn vm_config(&self, hostname: &str, switch: Option<crate::vm::net::SwitchPort>) -> Result<VmConfig, String> {
        let mut cfg = VmConfig::new(self.kernel.clone(), self.initramfs.clone());
        cfg.qemu = self.qemu.clone();
        cfg.rootfs = self.rootfs.clone();
        cfg.cpus = self.cpus;
        cfg.memory_mib = self.memory_mib;
        cfg.accel = self.accel.as_deref().map(str::parse::<Accel>).transpose()?;
        cfg.boot_timeout = self.boot_timeout();
        cfg.cmdline_extra = self.cmdline_extra.clone();
        cfg.shares = self.shares.clone();
        cfg.free_page_reporting = self.free_page_reporting;
        let publish = self
            .publish
            .iter()
            .map(|p| p.parse::<PortMapping>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        cfg.network = GuestNetwork {
            none: self.no_network,
            publish,
            switch,
            hostname: Some(hostname.to_owned()),
            taps: Vec::new(),
        };
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_config() {
        let mut cfg = VmConfig::new("/k".into(), "/i".into());
        cfg.accel = Some(Accel::Tcg);
        cfg.free_page_reporting = false;
        cfg.cpus = 2;
        cfg.rootfs = Some("/r.ext4".into());
        cfg.shares = vec![SharedPath {
            source: "/srv/data".into(),
            readonly: true,
            recursive: true,
            guest_bind: Some("/data".into()),
        }];
        let mut spec = InstanceSpec::from_config(&cfg);
        spec.publish = vec!["8080:80".to_owned()];
        let json = serde_json::to_string(&spec).unwrap();
        let back: InstanceSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
        let again = back.vm_config("a", None).unwrap();
        assert_eq!(again.accel, Some(Accel::Tcg));
        assert_eq!((again.cpus, again.memory_mib), (2, 256));
        assert_eq!(again.rootfs, cfg.rootfs);
        assert_eq!(again.shares, cfg.shares);
        assert_eq!(again.boot_timeout, cfg.boot_timeout);
        assert!(!again.free_page_reporting);
        // A spec.json of before free page reporting has it on.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old.as_object_mut().unwrap().remove("free_page_reporting");
        let old: InstanceSpec = serde_json::from_value(old).unwrap();
        assert!(old.free_page_reporting);
        assert_eq!(again.network.publish[0].guest_port, 80);
        assert_eq!(again.network.hostname.as_deref(), Some("a"));
        spec.publish = vec!["nope".to_owned()];
        assert!(spec.vm_config("a", None).unwrap_err().contains("nope"));
    }
}
