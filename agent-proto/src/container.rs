//! Containers: the OCI runtime spec's `linux` section as the agent takes it
//! ([`crate::Op::CreateContainer`]).
//!
//! The host translates a bundle's `config.json` into a [`ContainerSpec`]:
//! the same fields under the same meaning, paths of the host already
//! resolved. Field docs name the OCI field each one carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ExitStatus, ProcessId, ProcessSpec};

/// How to create a container ([`crate::Op::CreateContainer`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container's name: 1 to 64 of `A-Z a-z 0-9 _ . -`, not starting
    /// with `.` or `-`; unique among the agent's containers.
    pub id: String,
    /// The bundle directory, as the host names it: reported by state, and
    /// given to hooks in their state.
    #[serde(default)]
    pub bundle: String,
    /// The root filesystem: an absolute path the agent sees (OCI
    /// `root.path`, resolved); usually [`crate::GUEST_ROOTFS`] in a VM.
    pub root: String,
    /// Mount the root read-only (OCI `root.readonly`).
    #[serde(default)]
    pub readonly_root: bool,
    /// The container's process (OCI `process`). Its `root` must be absent:
    /// the container's root is [`ContainerSpec::root`].
    pub process: ProcessSpec,
    /// OCI `hostname`; needs a new uts namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// OCI `domainname`; needs a new uts namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// OCI `linux.namespaces`: each one listed is new, or joined when it has
    /// a path. The ones not listed are the agent's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<Namespace>,
    /// OCI `linux.uidMappings`, with a new user namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uid_mappings: Vec<IdMapping>,
    /// OCI `linux.gidMappings`, with a new user namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gid_mappings: Vec<IdMapping>,
    /// OCI `mounts`, mounted in order after the root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// OCI `linux.rootfsPropagation`: `private`, `rprivate`, `slave`,
    /// `rslave`, `shared`, `rshared`, `unbindable`, `runbindable`. Absent:
    /// `rslave`, as runc does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_propagation: Option<String>,
    /// OCI `linux.maskedPaths`: made unreadable (`/dev/null` over a file, an
    /// empty read-only tmpfs over a directory); missing ones are skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked_paths: Vec<String>,
    /// OCI `linux.readonlyPaths`: remounted read-only; missing ones are
    /// skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readonly_paths: Vec<String>,
    /// OCI `linux.sysctl`: written under `/proc/sys` inside the container's
    /// namespaces. Only namespaced keys are accepted (`kernel.shm*`,
    /// `kernel.msg*`, `kernel.sem`, `fs.mqueue.*` with a new ipc namespace,
    /// `net.*` with a new network namespace, `kernel.hostname` and
    /// `kernel.domainname` with a new uts namespace).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
    /// OCI `linux.cgroupsPath`, relative to the cgroup v2 root the agent
    /// uses. Absent: `vminitd/ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroups_path: Option<String>,
    /// OCI `linux.resources`, applied to the container's cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// OCI `linux.devices`: device nodes created in the container (beside
    /// the default ones: null, zero, full, random, urandom, tty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
    /// OCI `hooks` run by the agent. (`prestart` is carried as
    /// `create_runtime`, where the spec runs it.)
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    /// OCI `annotations`, reported by state and given to hooks.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One namespace of [`ContainerSpec::namespaces`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// `pid`, `network`, `mount`, `ipc`, `uts`, `user` or `cgroup`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Join the namespace at this path (`/proc/PID/ns/net`, a bind mount of
    /// one) instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One range of a user namespace's id map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    /// The first id of the range inside the user namespace.
    pub container_id: u32,
    /// The id it maps to outside (in the agent's user namespace).
    pub host_id: u32,
    /// How many consecutive ids the range holds.
    pub size: u32,
}

/// One mount of [`ContainerSpec::mounts`], as OCI `mounts[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path inside the container; resolved inside the root,
    /// created when missing.
    pub destination: String,
    /// The filesystem type: `proc`, `sysfs`, `tmpfs`, `devpts`, `mqueue`,
    /// `cgroup` or `cgroup2`, `bind` (or absent with a `bind`/`rbind`
    /// option), or another type the kernel knows.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A path the agent sees for a bind mount; the device or a name
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `mount(8)` options: flags (`ro`, `nosuid`, `bind`, `rbind`,
    /// propagation such as `rprivate`, ...) and filesystem data
    /// (`mode=755`, `size=65536k`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// OCI `linux.resources`, applied through cgroup v2.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// OCI `memory`: `memory.max`, `memory.low`, `memory.swap.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryResources>,
    /// OCI `cpu`: `cpu.weight`, `cpu.max`, `cpuset.cpus` and `.mems`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuResources>,
    /// `pids.limit`: `pids.max` (0 or below: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// OCI `blockIO`: `io.bfq.weight` or `io.weight`, and `io.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_io: Option<BlockIo>,
    /// OCI `hugepageLimits`: `hugetlb.<size>.max`, where the kernel has
    /// the hugetlb controller (refused where it has not, as runc fails).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hugepage_limits: Vec<HugepageLimit>,
    /// The device allow-list, in order, the last matching rule deciding
    /// (OCI `devices`); enforced with an eBPF program on the cgroup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceRule>,
    /// OCI `unified`: cgroup v2 files written as given (after the others).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unified: BTreeMap<String, String>,
}

/// OCI `linux.resources.memory`, in bytes; -1 is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryResources {
    /// `memory.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// `memory.low`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<i64>,
    /// Memory plus swap: `memory.swap.max` is `swap - limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<i64>,
}

/// OCI `linux.resources.cpu`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuResources {
    /// cgroup v1 shares (2 to 262144), converted to `cpu.weight` as runc
    /// does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shares: Option<u64>,
    /// `cpu.max` quota in microseconds per period; -1 or absent: `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<i64>,
    /// `cpu.max` period in microseconds (100000 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<u64>,
    /// `cpuset.cpus`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// `cpuset.mems`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mems: Option<String>,
}

/// One of OCI `linux.resources.hugepageLimits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugepageLimit {
    /// The page size as the kernel names it in the file name: `2MB`,
    /// `1GB`, `64KB`.
    pub page_size: String,
    /// The most bytes of pages of that size: `hugetlb.<size>.max`
    /// (negative: refused).
    pub limit: i64,
}

/// OCI `linux.resources.blockIO`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockIo {
    /// v1 weight (10 to 1000): `io.bfq.weight` as it is where the kernel
    /// has BFQ, else converted to `io.weight` (1 to 10000), as runc does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    /// Per-device weights: `MAJOR:MINOR WEIGHT` lines of `io.bfq.weight`
    /// where the kernel has BFQ, else nothing, as runc does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weight_device: Vec<WeightDevice>,
    /// Read bytes per second per device: `rbps` of `io.max`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle_read_bps_device: Vec<ThrottleDevice>,
    /// Written bytes per second per device: `wbps` of `io.max`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle_write_bps_device: Vec<ThrottleDevice>,
    /// Read operations per second per device: `riops` of `io.max`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle_read_iops_device: Vec<ThrottleDevice>,
    /// Write operations per second per device: `wiops` of `io.max`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle_write_iops_device: Vec<ThrottleDevice>,
}

/// One per-device weight ([`BlockIo::weight_device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightDevice {
    /// The block device's major number.
    pub major: i64,
    /// The block device's minor number.
    pub minor: i64,
    /// The weight, 1 to 1000; absent: the default weight again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
}

/// One `io.max` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThrottleDevice {
    /// The block device's major number.
    pub major: i64,
    /// The block device's minor number.
    pub minor: i64,
    /// The limit, in bytes or operations per second (0: no limit).
    pub rate: u64,
}

/// One rule of the device allow-list (OCI `linux.resources.devices[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    /// Whether the devices the rule matches are allowed or denied.
    pub allow: bool,
    /// `a` (all, the default), `c` or `b`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The major number; absent or -1: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    /// The minor number; absent or -1: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    /// Letters of `rwm`; absent: all three.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
}

/// A device node to create (OCI `linux.devices[]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Absolute path inside the container.
    pub path: String,
    /// `c`, `u` (both character), `b` or `p` (a FIFO).
    #[serde(rename = "type")]
    pub kind: String,
    /// The major number (0 for a FIFO).
    #[serde(default)]
    pub major: i64,
    /// The minor number (0 for a FIFO).
    #[serde(default)]
    pub minor: i64,
    /// Permission bits; 0666 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    /// The node's owner; root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The node's group; root when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// OCI `hooks`, each list run in order; a hook that fails (non-zero exit,
/// timeout) fails the operation it belongs to, except `poststart` and
/// `poststop`, whose failures are logged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// After the container's namespaces exist, before `pivot_root`; run in
    /// the agent's namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_runtime: Vec<Hook>,
    /// After the mounts, before `pivot_root`; run in the container's
    /// namespaces (the path is the agent's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_container: Vec<Hook>,
    /// At start, before the process's program runs; run in the container
    /// (the path is inside the container).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start_container: Vec<Hook>,
    /// After the process started; run in the agent's namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststart: Vec<Hook>,
    /// At delete; run in the agent's namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub poststop: Vec<Hook>,
}

impl Hooks {
    /// Whether no list has a hook (the field is then left out of the JSON).
    pub fn is_empty(&self) -> bool {
        self.create_runtime.is_empty()
            && self.create_container.is_empty()
            && self.start_container.is_empty()
            && self.poststart.is_empty()
            && self.poststop.is_empty()
    }
}

/// One hook: a program run with the container's state (OCI state JSON) on
/// its stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// Absolute path of the program.
    pub path: String,
    /// Its argv, `args[0]` included; `[path]` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Its whole environment, `KEY=VALUE` entries; empty when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Seconds before the hook is killed and counted as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u32>,
}

/// Where a container is in its life (OCI state `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    /// Being set up by [`crate::Op::CreateContainer`].
    Creating,
    /// Set up, its process waiting for [`crate::Op::StartContainer`].
    Created,
    /// Its process runs.
    Running,
    /// Its processes are frozen ([`crate::Op::PauseContainer`]).
    Paused,
    /// Its process has ended (or never started).
    Stopped,
}

impl ContainerStatus {
    /// The status's wire name, as OCI state JSON spells it.
    pub fn name(self) -> &'static str {
        match self {
            ContainerStatus::Creating => "creating",
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Stopped => "stopped",
        }
    }
}

/// Answer to [`crate::Op::CreateContainer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerCreated {
    /// The container's process: attach its streams before the start, wait
    /// for it, resize its terminal.
    pub process: ProcessId,
    /// Its pid, as the agent sees it.
    pub pid: i32,
}

/// A container as [`crate::Op::ContainerState`] and
/// [`crate::Op::ListContainers`] report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The container's name ([`ContainerSpec::id`]).
    pub id: String,
    /// Where it is in its life.
    pub status: ContainerStatus,
    /// The process's pid as the agent sees it, until it has stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The container's process (see [`ContainerCreated::process`]).
    pub process: ProcessId,
    /// The bundle directory the host named at create.
    pub bundle: String,
    /// How the process ended, once stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// When it was created: nanoseconds since the Unix epoch, on the
    /// agent's clock.
    pub created_unix_ns: u64,
    /// The annotations of its spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
