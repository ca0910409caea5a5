//! A VM's memory as the host sees it, and the balloon that gives it back.
//!
//! * **Free page reporting.** Every VM has a `virtio-balloon-device` with
//!   `free-page-reporting=on`: the guest kernel (`CONFIG_PAGE_REPORTING`)
//!   reports the free blocks it has not reported yet, about 2 s after they
//!   were freed, and QEMU discards them from the guest's RAM. The RAM is a
//!   shared memfd (the vsock and virtio-fs backends map it): QEMU punches a
//!   hole in it (`fallocate(PUNCH_HOLE)`), so the pages leave QEMU's
//!   resident set, every backend's mapping and the memfd itself. Nothing
//!   more is needed for that: the memfd is not preallocated, and
//!   `discard-data` only concerns the file's contents when QEMU exits.
//! * **The balloon.** [`resize`] sets the guest's memory through QMP
//!   ([`super::qmp`]): the guest inflates the balloon (pages it hands to the
//!   host, which discards them; its `MemTotal` shrinks by as much) or
//!   deflates it, up to the memory it booted with. Without
//!   `deflate-on-oom` the new size holds: a guest that needs more meets
//!   its OOM killer, as a container meets its limit, instead of quietly
//!   taking its memory back (with it, Linux would also keep the balloon's
//!   pages in `MemTotal`). Inflating never causes an OOM kill by itself:
//!   the guest takes for the balloon only what it can free without one,
//!   and goes on as memory is freed. [`Plan`] works a size out against the
//!   VM as it is, [`apply`] resizes in order: the workloads' cgroup and a
//!   container's limit go down before the balloon takes the memory (their
//!   page cache is given back at once) and up after it gives it back.
//! * **The host's figures.** [`host_memory`]: each host process's resident
//!   and proportional set (QEMU, the vsock backend, virtiofsd) and the
//!   bytes the guest's memfd holds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::qmp::{Balloon, Qmp, QmpError};
use crate::client::{Client, ClientError};

/// The least memory a VM may be given, in MiB: the least it boots with
/// (`vmshim run --memory`), room for its kernel and agent.
pub const MIN_MEMORY_MIB: u64 = 64;

/// How often [`resize`] asks QEMU how far the guest has come.
const POLL: Duration = Duration::from_millis(10);

/// The balloon's QEMU arguments: a `virtio-balloon-device` on virtio-mmio,
/// reporting the pages the guest frees when `free_page_reporting`.
pub fn balloon_args(free_page_reporting: bool) -> Vec<String> {
    let on_off = if free_page_reporting { "on" } else { "off" };
    vec![
        "-device".into(),
        format!("virtio-balloon-device,free-page-reporting={on_off}"),
    ]
}

/// Why a VM's memory could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// QMP failed.
    #[error(transparent)]
    Qmp(#[from] QmpError),
    /// The agent did not give its figures.
    #[error("the guest's figures")]
    Agent(#[from] ClientError),
    /// The agent did not resize its workloads' cgroup.
    #[error("the workloads' cgroup")]
    Workloads(#[source] ClientError),
    /// A size outside what the VM can be given.
    #[error("{asked} MiB: {why}")]
    OutOfRange {
        /// The size asked for, in MiB.
        asked: u64,
        /// What the bounds are.
        why: String,
    },
    /// A host process's figures could not be read.
    #[error("cannot read the memory of {role} (pid {pid}) in {}: {error}", path.display())]
    Proc {
        /// Its role (`qemu`, `vhost-device-vsock`, `virtiofsd`).
        role: String,
        /// Its pid.
        pid: u32,
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
}

impl MemoryError {
    /// The error and each of its causes, on one line.
    pub fn describe(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        text
    }
}

/// The outcome of a [`resize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resized {
    /// The memory asked for, in bytes.
    pub target_bytes: u64,
    /// The balloon when [`resize`] returned.
    pub balloon: Balloon,
    /// Whether the guest reached the target within the wait.
    pub reached: bool,
    /// How long the guest took, or was waited for.
    pub elapsed: Duration,
}

/// Checks that `mib` is a size a VM that booted with `base_bytes` can be
/// given: at least [`MIN_MEMORY_MIB`], at most what it booted with.
pub fn check_target(mib: u64, base_bytes: u64) -> Result<u64, MemoryError> {
    let base_mib = base_bytes >> 20;
    if mib < MIN_MEMORY_MIB {
        return Err(MemoryError::OutOfRange {
            asked: mib,
            why: format!("a VM needs at least {MIN_MEMORY_MIB} MiB for its kernel and agent"),
        });
    }
    if mib > base_mib {
        return Err(MemoryError::OutOfRange {
            asked: mib,
            why: format!("more than the {base_mib} MiB the VM booted with, which the balloon cannot grow past"),
        });
    }
    Ok(mib << 20)
}

/// What a resize is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// The VM's memory, in MiB, as `vmshim run --memory` gives it at boot
    /// (`vmshim update NAME --memory`): within [`check_target`]'s bounds.
    Vm {
        /// MiB.
        mib: u64,
    },
    /// A container's memory limit, in bytes (`vmshim runtime update
    /// --memory`; -1 or less: none): the VM gets that much for its
    /// workloads plus the agent's headroom, as much as it booted with at
    /// most.
    Container {
        /// Bytes, or -1.
        limit: i64,
    },
}

/// A resize worked out against the VM as it is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The balloon's target: the VM's memory, in bytes.
    pub target_bytes: u64,
    /// The balloon now.
    pub now: Balloon,
    /// The guest's `MemTotal` now.
    pub guest_total_now: u64,
    /// The guest's `MemTotal` once the balloon holds the VM at the target.
    pub guest_total_bytes: u64,
    /// What the workloads may use then: that less the agent's headroom
    /// ([`agent_proto::workloads_headroom`]), the limit a VM's container
    /// follows to.
    pub workloads_bytes: u64,
}

impl Plan {
    /// Works `size` out for a VM whose balloon is `now` and whose guest has
    /// `guest_total_now` (`MemTotal`). The kernel keeps the same memory out
    /// of `MemTotal` at any size: the guest's total moves by what the
    /// balloon moves.
    pub fn new(size: Size, now: Balloon, guest_total_now: u64) -> Result<Plan, MemoryError> {
        let reserved = now.actual_bytes.saturating_sub(guest_total_now);
        let target_bytes = match size {
            Size::Vm { mib } => check_target(mib, now.base_bytes)?,
            Size::Container { limit } if limit < 0 => now.base_bytes,
            Size::Container { limit } => {
                let limit = limit as u64;
                // The least total whose workloads' share holds the limit
                // (the headroom grows with the total, by steps).
                let mut total = limit + agent_proto::workloads_headroom(limit);
                while total - agent_proto::workloads_headroom(total) < limit {
                    total = limit + agent_proto::workloads_headroom(total);
                }
                let mib = (total + reserved).div_ceil(1 << 20);
                mib.clamp(MIN_MEMORY_MIB, now.base_bytes >> 20) << 20
            }
        };
        let guest_total_bytes = (guest_total_now + target_bytes).saturating_sub(now.actual_bytes);
        Ok(Plan {
            target_bytes,
            now,
            guest_total_now,
            guest_total_bytes,
            workloads_bytes: guest_total_bytes.saturating_sub(agent_proto::workloads_headroom(guest_total_bytes)),
        })
    }

    /// Whether the VM gets smaller: what follows it in the guest (a
    /// container's limit) goes first, so that the balloon finds the memory
    /// given back; when it grows, the balloon goes first.
    pub fn shrinks(&self) -> bool {
        self.target_bytes < self.now.actual_bytes
    }
}

/// Works out `size` for the VM whose agent is `client` and whose QEMU's
/// control socket is `qmp`.
pub async fn plan(client: &Client, qmp: &Path, size: Size) -> Result<Plan, MemoryError> {
    let balloon = balloon(qmp).await?;
    let stats = client.stats().await?;
    Plan::new(size, balloon, stats.memory.total_bytes)
}

/// Resizes the VM of agent `client` and QEMU control socket `qmp` as
/// `plan` has it, and waits up to `wait` for the balloon. What follows the
/// VM's size in the guest goes first when it shrinks, so that the balloon
/// finds the memory given back, and after the balloon when it grows:
/// `follow` (a container's limit: the caller's), then the workloads'
/// cgroup ([`Client::resize_workloads`]). `err` makes this module's errors
/// the caller's.
pub async fn apply<E>(
    client: &Client,
    qmp: &Path,
    plan: &Plan,
    wait: Duration,
    follow: impl std::future::Future<Output = Result<(), E>>,
    err: impl Fn(MemoryError) -> E,
) -> Result<Resized, E> {
    let workloads = || async {
        client
            .resize_workloads(plan.guest_total_bytes)
            .await
            .map(drop)
            .map_err(|e| err(MemoryError::Workloads(e)))
    };
    if plan.shrinks() {
        follow.await?;
        workloads().await?;
        resize(qmp, plan.target_bytes, wait).await.map_err(&err)
    } else {
        let resized = resize(qmp, plan.target_bytes, wait).await.map_err(&err)?;
        workloads().await?;
        follow.await?;
        Ok(resized)
    }
}

/// Sets the balloon's target to `target_bytes` through QEMU's control
/// socket `qmp`, and waits up to `wait` for the guest to get there. A
/// guest that cannot free that much yet keeps inflating as its memory is
/// freed: the size is set even when not `reached`.
pub async fn resize(qmp: &Path, target_bytes: u64, wait: Duration) -> Result<Resized, MemoryError> {
    let mut session = Qmp::connect(qmp).await?;
    let started = Instant::now();
    session.set_balloon(target_bytes).await?;
    loop {
        let balloon = session.balloon().await?;
        let reached = balloon.actual_bytes == target_bytes;
        if reached || started.elapsed() >= wait {
            return Ok(Resized {
                target_bytes,
                balloon,
                reached,
                elapsed: started.elapsed(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The balloon of the VM whose QEMU's control socket is `qmp`.
pub async fn balloon(qmp: &Path) -> Result<Balloon, MemoryError> {
    Ok(Qmp::connect(qmp).await?.balloon().await?)
}

/// A VM's memory, seen from the guest, the balloon and the host
/// (`vmshim stats`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VmMemory {
    /// The guest's own figures, from its agent.
    pub guest: GuestMemory,
    /// The balloon, from QEMU.
    pub balloon: BalloonMemory,
    /// The host's view: its processes and the guest's RAM.
    pub host: HostMemory,
}

/// The guest's memory ([`agent_proto::MemoryStats`]), `used` worked out.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GuestMemory {
    /// `MemTotal`: less what the balloon holds.
    pub total_bytes: u64,
    /// Neither free nor a cache.
    pub used_bytes: u64,
    /// The page cache (Buffers, Cached, SReclaimable).
    pub cache_bytes: u64,
    /// `MemFree`.
    pub free_bytes: u64,
    /// `MemAvailable`.
    pub available_bytes: u64,
    /// The workloads' cgroup: what every process the agent started uses,
    /// and its limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads: Option<agent_proto::CgroupMemory>,
}

impl GuestMemory {
    /// The figures of the agent's [`agent_proto::Stats`].
    pub fn from_stats(stats: &agent_proto::Stats) -> GuestMemory {
        let m = &stats.memory;
        GuestMemory {
            total_bytes: m.total_bytes,
            used_bytes: m.used_bytes(),
            cache_bytes: m.cache_bytes,
            free_bytes: m.free_bytes,
            available_bytes: m.available_bytes,
            workloads: stats.workloads.clone(),
        }
    }
}

/// The balloon ([`Balloon`]), for the figures.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BalloonMemory {
    /// The memory the VM booted with.
    pub vm_bytes: u64,
    /// What it has now: that less what the guest handed back.
    pub actual_bytes: u64,
    /// What the guest handed back through the balloon.
    pub inflated_bytes: u64,
}

impl From<Balloon> for BalloonMemory {
    fn from(b: Balloon) -> BalloonMemory {
        BalloonMemory {
            vm_bytes: b.base_bytes,
            actual_bytes: b.actual_bytes,
            inflated_bytes: b.inflated_bytes(),
        }
    }
}

/// The memory figures of a running VM: its agent `client`, QEMU's control
/// socket `qmp`, its host processes `pids` (role, pid).
pub async fn vm_memory(client: &Client, qmp: &Path, pids: &[(String, u32)]) -> Result<VmMemory, MemoryError> {
    let stats = client.stats().await?;
    let balloon = balloon(qmp).await?;
    Ok(VmMemory {
        guest: GuestMemory::from_stats(&stats),
        balloon: balloon.into(),
        host: host_memory(pids)?,
    })
}

/// One host process of a VM.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessMemory {
    /// Its role: `qemu`, `vhost-device-vsock`, `virtiofsd`.
    pub role: String,
    /// Its pid.
    pub pid: u32,
    /// Resident set (`Rss` of `/proc/PID/smaps_rollup`), in bytes: the
    /// guest's pages it maps count in full.
    pub rss_bytes: u64,
    /// Proportional set (`Pss`), in bytes: a page shared by N processes
    /// counts 1/N in each, so the processes' sum is what they cost
    /// together.
    pub pss_bytes: u64,
}

/// What a VM costs the host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostMemory {
    /// Each host process.
    pub processes: Vec<ProcessMemory>,
    /// The processes' resident sets added up, in bytes (pages mapped by
    /// two count twice).
    pub rss_bytes: u64,
    /// The processes' proportional sets added up, in bytes.
    pub pss_bytes: u64,
    /// The bytes the guest's RAM (QEMU's memfd) holds on the host: the
    /// guest memory that is resident, whoever maps it; absent where QEMU
    /// has no memfd RAM.
    pub guest_ram_bytes: Option<u64>,
}

/// The figures of a VM's host processes `pids` (role, pid); the guest's
/// memfd is looked for among the open files of the one named `qemu`.
pub fn host_memory(pids: &[(String, u32)]) -> Result<HostMemory, MemoryError> {
    let mut processes = Vec::new();
    let mut guest_ram_bytes = None;
    for (role, pid) in pids {
        let path = PathBuf::from(format!("/proc/{pid}/smaps_rollup"));
        let text = std::fs::read_to_string(&path).map_err(|error| MemoryError::Proc {
            role: role.clone(),
            pid: *pid,
            path: path.clone(),
            error,
        })?;
        let (rss_bytes, pss_bytes) = parse_smaps_rollup(&text).ok_or_else(|| MemoryError::Proc {
            role: role.clone(),
            pid: *pid,
            path,
            error: std::io::Error::new(std::io::ErrorKind::InvalidData, "no Rss and Pss lines"),
        })?;
        processes.push(ProcessMemory {
            role: role.clone(),
            pid: *pid,
            rss_bytes,
            pss_bytes,
        });
        if role == "qemu" {
            guest_ram_bytes = memfd_allocated(*pid);
        }
    }
    Ok(HostMemory {
        rss_bytes: processes.iter().map(|p| p.rss_bytes).sum(),
        pss_bytes: processes.iter().map(|p| p.pss_bytes).sum(),
        processes,
        guest_ram_bytes,
    })
}

/// `Rss` and `Pss` of a `smaps_rollup`, in bytes.
pub fn parse_smaps_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let mut words = rest.split_whitespace();
            let kib: u64 = words.next()?.parse().ok()?;
            (words.next() == Some("kB")).then_some(kib * 1024)
        })
    };
    Some((field("Rss")?, field("Pss")?))
}

/// The name QEMU's memfd RAM has in `/proc/PID/fd` (`memfd_create`'s
/// name, after the backend's type).
const MEMFD_NAME: &str = "/memfd:memory-backend-memfd";

/// The bytes allocated to QEMU `pid`'s memfd RAM (its blocks), if it has
/// one.
fn memfd_allocated(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    fds.flatten().find_map(|fd| {
        let target = std::fs::read_link(fd.path()).ok()?;
        target
            .to_str()?
            .starts_with(MEMFD_NAME)
            .then(|| std::fs::metadata(fd.path()).ok().map(|m| m.blocks() * 512))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_balloon_reports_free_pages_unless_told_not_to() {
        assert_eq!(
            balloon_args(true),
            ["-device", "virtio-balloon-device,free-page-reporting=on"]
        );
        assert_eq!(
            balloon_args(false),
            ["-device", "virtio-balloon-device,free-page-reporting=off"]
        );
    }

    #[test]
    fn targets_between_the_least_a_vm_boots_with_and_its_boot_size() {
        assert_eq!(check_target(128, 512 << 20).unwrap(), 128 << 20);
        assert_eq!(check_target(512, 512 << 20).unwrap(), 512 << 20);
        assert_eq!(check_target(64, 512 << 20).unwrap(), 64 << 20);
        let small = check_target(63, 512 << 20).unwrap_err().to_string();
        assert_eq!(small, "63 MiB: a VM needs at least 64 MiB for its kernel and agent");
        let big = check_target(513, 512 << 20).unwrap_err().to_string();
        assert_eq!(
            big,
            "513 MiB: more than the 512 MiB the VM booted with, which the balloon cannot grow past"
        );
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_plan_moves_the_guests_total_by_what_the_balloon_moves() {
        // A 512 MiB VM whose kernel keeps 16 MiB out of MemTotal.
        let full = Balloon {
            actual_bytes: 512 * MIB,
            base_bytes: 512 * MIB,
        };
        let plan = Plan::new(Size::Vm { mib: 128 }, full, 496 * MIB).unwrap();
        assert_eq!(plan.target_bytes, 128 * MIB);
        assert_eq!(plan.guest_total_bytes, 112 * MIB);
        assert_eq!(plan.workloads_bytes, 96 * MIB);
        assert!(plan.shrinks());
        let small = Balloon {
            actual_bytes: 128 * MIB,
            ..full
        };
        let back = Plan::new(Size::Vm { mib: 512 }, small, 112 * MIB).unwrap();
        assert_eq!((back.guest_total_bytes, back.shrinks()), (496 * MIB, false));
        assert!(Plan::new(Size::Vm { mib: 600 }, full, 496 * MIB).is_err());
    }

    #[test]
    fn a_containers_limit_gets_the_agents_headroom_on_top() {
        let full = Balloon {
            actual_bytes: 1024 * MIB,
            base_bytes: 1024 * MIB,
        };
        // 128 MiB for the container, 16 MiB of headroom, 16 MiB the kernel
        // keeps: a 160 MiB VM.
        let plan = Plan::new(Size::Container { limit: 128 << 20 }, full, 1008 * MIB).unwrap();
        assert_eq!(plan.target_bytes, 160 * MIB);
        assert_eq!(plan.workloads_bytes, 128 * MIB);
        // 600 MiB: a sixteenth of the total is the headroom (38 MiB).
        let plan = Plan::new(Size::Container { limit: 600 << 20 }, full, 1008 * MIB).unwrap();
        assert!(plan.workloads_bytes >= 600 * MIB, "{plan:?}");
        assert!(plan.workloads_bytes < 601 * MIB + MIB, "{plan:?}");
        // No limit, or more than the VM has: all of it.
        let none = Plan::new(Size::Container { limit: -1 }, full, 1008 * MIB).unwrap();
        assert_eq!((none.target_bytes, none.shrinks()), (1024 * MIB, false));
        let big = Plan::new(Size::Container { limit: 4 << 30 }, full, 1008 * MIB).unwrap();
        assert_eq!(big.target_bytes, 1024 * MIB);
        // A few MiB: the least a VM may have.
        let tiny = Plan::new(Size::Container { limit: 4 << 20 }, full, 1008 * MIB).unwrap();
        assert_eq!(tiny.target_bytes, MIN_MEMORY_MIB * MIB);
    }

    #[test]
    fn smaps_rollup_figures() {
        let text = "55d0c0000000-7ffd00000000 ---p 00000000 00:00 0    [rollup]\n\
                    Rss:              130048 kB\nPss:              128000 kB\nPss_Anon:  51200 kB\n";
        assert_eq!(parse_smaps_rollup(text), Some((130048 * 1024, 128000 * 1024)));
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
        assert_eq!(parse_smaps_rollup("Rss: 1 MB\nPss: 1 kB\n"), None);
    }

    #[test]
    fn this_process_has_figures() {
        let me = std::process::id();
        let memory = host_memory(&[("qemu".to_owned(), me)]).unwrap();
        assert_eq!(memory.processes.len(), 1);
        assert!(memory.rss_bytes > 0 && memory.pss_bytes > 0 && memory.pss_bytes <= memory.rss_bytes);
        let gone = host_memory(&[("qemu".to_owned(), u32::MAX)]).unwrap_err().to_string();
        assert!(
            gone.starts_with("cannot read the memory of qemu (pid 4294967295)"),
            "{gone}"
        );
    }

    #[test]
    fn a_memfd_of_that_name_is_found_with_its_blocks() {
        let name = std::ffi::CString::new("memory-backend-memfd").unwrap();
        // SAFETY: memfd_create reads a NUL-terminated name.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fd is a new descriptor we own.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        use std::io::Write;
        (&file).write_all(&vec![1u8; 1 << 20]).unwrap();
        let bytes = memfd_allocated(std::process::id()).unwrap();
        assert!(bytes >= 1 << 20, "{bytes}");
        drop(file);
    }
}
