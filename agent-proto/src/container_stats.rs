//! A container's resource figures ([`crate::Op::ContainerStats`]): what its
//! cgroup v2 directory in the guest reports, file by file, under the
//! kernel's own names.
//!
//! Each part is read from one cgroup file and is absent where the cgroup
//! has no such file (its controller is not enabled, or the kernel lacks
//! it): a missing file is never an error. A host translates these into
//! the form its caller wants (containerd's `io.containerd.cgroups.v2.Metrics`,
//! runc's `events --stats`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Answer to [`crate::Op::ContainerStats`]: the figures of a container's
/// cgroup (and its sub-cgroups, as cgroup v2 counts them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStats {
    /// `cpu.stat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStat>,
    /// `memory.current`, `memory.max`, `memory.peak`, `memory.swap.*` and
    /// `memory.stat`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStat>,
    /// `memory.events`: how often the cgroup hit its limits, and its OOM
    /// kills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_events: Option<MemoryEvents>,
    /// `pids.current` and `pids.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<PidsStat>,
    /// `io.stat`: one entry per block device the cgroup did I/O on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io: Vec<IoStat>,
}

/// `cpu.stat`, in microseconds and counts. The first three are the
/// cgroup's own accounting and always there; the rest come with the cpu
/// controller (bandwidth limits), 0 without it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStat {
    /// CPU time used, user and system together.
    #[serde(default)]
    pub usage_usec: u64,
    /// CPU time used in user mode.
    #[serde(default)]
    pub user_usec: u64,
    /// CPU time used in kernel mode.
    #[serde(default)]
    pub system_usec: u64,
    /// Enforcement periods (`cpu.max`) that have elapsed.
    #[serde(default)]
    pub nr_periods: u64,
    /// Periods in which the cgroup was throttled.
    #[serde(default)]
    pub nr_throttled: u64,
    /// Time it spent throttled.
    #[serde(default)]
    pub throttled_usec: u64,
    /// Periods in which it used its burst (`cpu.max.burst`).
    #[serde(default)]
    pub nr_bursts: u64,
    /// Time it ran on its burst.
    #[serde(default)]
    pub burst_usec: u64,
}

/// The memory controller's figures, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStat {
    /// `memory.current`: memory in use now.
    pub current: u64,
    /// `memory.max`: the limit; absent when it is `max` (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// `memory.peak`: the most it has used (kernel 5.19 and later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<u64>,
    /// `memory.swap.current`: swap in use; absent without swap
    /// accounting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_current: Option<u64>,
    /// `memory.swap.max`: the swap limit; absent when it is `max`, or
    /// without swap accounting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_max: Option<u64>,
    /// `memory.stat`, every line by its key as the kernel names it
    /// (`anon`, `file`, `kernel_stack`, `slab`, `sock`, `shmem`,
    /// `file_mapped`, ..., `pgfault`, `pgmajfault`, ...): bytes for the
    /// amounts, counts for the events.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stat: BTreeMap<String, u64>,
}

/// `memory.events`: how many times each happened in the cgroup and its
/// sub-cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryEvents {
    /// Reclaimed under `memory.low` protection.
    #[serde(default)]
    pub low: u64,
    /// Throttled over `memory.high`.
    #[serde(default)]
    pub high: u64,
    /// About to go over `memory.max`.
    #[serde(default)]
    pub max: u64,
    /// Hit `memory.max` with nothing left to reclaim: the OOM killer was
    /// called.
    #[serde(default)]
    pub oom: u64,
    /// Processes the OOM killer killed.
    #[serde(default)]
    pub oom_kill: u64,
    /// Times the whole cgroup was killed (`memory.oom.group`).
    #[serde(default)]
    pub oom_group_kill: u64,
}

/// `pids.current` and `pids.max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidsStat {
    /// Tasks (threads) in the cgroup now.
    pub current: u64,
    /// The limit; absent when it is `max` (none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

/// One device's line of `io.stat`: bytes and operations since the cgroup
/// was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoStat {
    /// The block device's major number.
    pub major: u64,
    /// The block device's minor number.
    pub minor: u64,
    /// Bytes read.
    #[serde(default)]
    pub rbytes: u64,
    /// Bytes written.
    #[serde(default)]
    pub wbytes: u64,
    /// Read operations.
    #[serde(default)]
    pub rios: u64,
    /// Write operations.
    #[serde(default)]
    pub wios: u64,
    /// Bytes discarded.
    #[serde(default)]
    pub dbytes: u64,
    /// Discard operations.
    #[serde(default)]
    pub dios: u64,
}

impl ContainerStats {
    /// The OOM kills counted in the container's cgroup so far (0 without
    /// `memory.events`): a host that sees it grow tells its caller of an
    /// OOM.
    pub fn oom_kills(&self) -> u64 {
        self.memory_events.map_or(0, |e| e.oom_kill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_parts_stay_off_the_wire_and_come_back_absent() {
        let empty = ContainerStats::default();
        assert_eq!(serde_json::to_value(&empty).unwrap(), json!({}));
        assert_eq!(serde_json::from_value::<ContainerStats>(json!({})).unwrap(), empty);
        assert_eq!(empty.oom_kills(), 0);
    }

    #[test]
    fn limits_that_are_max_are_absent() {
        let stats = ContainerStats {
            memory: Some(MemoryStat {
                current: 4096,
                max: Some(1 << 26),
                ..Default::default()
            }),
            pids: Some(PidsStat { current: 2, max: None }),
            memory_events: Some(MemoryEvents {
                oom: 1,
                oom_kill: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(&stats).unwrap();
        assert_eq!(
            v,
            json!({
                "memory": {"current": 4096, "max": 67108864},
                "memory_events": {"low": 0, "high": 0, "max": 0, "oom": 1, "oom_kill": 1, "oom_group_kill": 0},
                "pids": {"current": 2},
            })
        );
        assert_eq!(serde_json::from_value::<ContainerStats>(v).unwrap(), stats);
        assert_eq!(stats.oom_kills(), 1);
    }
}
