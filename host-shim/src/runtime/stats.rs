//! A container's resource figures ([`Runtime::stats`]): its cgroup's in
//! its VM, from the agent while the VM runs, or as the daemon kept them
//! when its process ended; and the same figures in the shape `runc events`
//! prints them (runc 1.1's `types.Stats`, [`RuncStats`]).

use std::collections::BTreeMap;

use agent_proto::{ContainerStats, ContainerStatus};
use serde::Serialize;

use super::{agent_err, connect, instance_name, Runtime, RuntimeError};
use crate::instance::Instance;

impl Runtime {
    /// The figures of container `id`'s cgroup: CPU time, memory, memory
    /// events (its OOM kills), tasks, I/O. While its VM runs they are the
    /// agent's now; once its process has ended, those its daemon read then
    /// (before the VM went down). A container that is being created, or
    /// whose VM ended without them, is [`RuntimeError::NotRunning`].
    pub async fn stats(&self, id: &str) -> Result<ContainerStats, RuntimeError> {
        let live = self.live(id).await?;
        match (live.status, &live.endpoint) {
            (ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused, Some(endpoint)) => {
                let client = connect(endpoint, id).await?;
                let stats = client.container_stats(id).await;
                client.close().await;
                stats.map_err(|e| agent_err(id, e))
            }
            (ContainerStatus::Stopped, _) => self
                .exit_stats(id)
                .await
                .ok_or_else(|| RuntimeError::NotRunning { id: id.to_owned() }),
            _ => Err(RuntimeError::NotRunning { id: id.to_owned() }),
        }
    }

    /// The figures container `id`'s daemon kept when its process ended.
    async fn exit_stats(&self, id: &str) -> Option<ContainerStats> {
        let (instances, name) = (self.instances(id), instance_name(id));
        let instance = tokio::task::spawn_blocking(move || instances.get(&name)).await.ok()?;
        instance.ok().and_then(|i: Instance| i.exit_stats)
    }
}

/// One line of `runc events`: `{"type":"stats","id":ID,"data":{...}}`, or
/// `{"type":"oom","id":ID}`, fields in runc's order.
#[derive(Debug, Clone, Serialize)]
pub struct RuncEvent<'a> {
    /// `stats` or `oom`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The container's id.
    pub id: &'a str,
    /// The figures of a `stats` event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<RuncStats>,
}

/// A container's figures as `runc events --stats` prints a cgroup v2
/// container's under `data`: runc 1.1's `types.Stats`, filled as its
/// cgroup v2 driver fills it (CPU times in nanoseconds, `memory.max` as
/// the usage's limit, `u64::MAX` for none, swap as memory plus swap in
/// cgroup v1's sense, `memory.stat` whole as `raw`, `pids.max` 0 for none,
/// `io.stat` as cgroup v1's service bytes and serviced tables), fields in
/// runc's order and left out where Go leaves them out (`omitempty`).
#[derive(Debug, Clone, Serialize)]
pub struct RuncStats {
    cpu: Cpu,
    cpuset: CpuSet,
    memory: Memory,
    pids: Pids,
    blkio: Blkio,
    hugetlb: BTreeMap<String, u64>,
    intel_rdt: BTreeMap<String, u64>,
    network_interfaces: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
struct Cpu {
    usage: CpuUsage,
    throttling: Throttling,
}

#[derive(Debug, Clone, Serialize)]
struct CpuUsage {
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
    kernel: u64,
    user: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    throttled_periods: u64,
    #[serde(skip_serializing_if = "is_zero")]
    throttled_time: u64,
}

/// Go's zero `CPUSet`: runc's cgroup v2 driver fills none of it.
#[derive(Debug, Clone, Default, Serialize)]
struct CpuSet {
    cpu_exclusive: u64,
    mem_hardwall: u64,
    mem_exclusive: u64,
    memory_migrate: u64,
    memory_spread_page: u64,
    memory_spread_slab: u64,
    memory_pressure: u64,
    sched_load_balance: u64,
    sched_relax_domain_level: i64,
}

#[derive(Debug, Clone, Serialize)]
struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    cache: u64,
    usage: MemoryEntry,
    swap: MemoryEntry,
    kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    raw: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct MemoryEntry {
    limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    max: u64,
    failcnt: u64,
}

#[derive(Debug, Clone, Serialize)]
struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    limit: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Blkio {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Serialize)]
struct BlkioEntry {
    #[serde(skip_serializing_if = "is_zero")]
    major: u64,
    #[serde(skip_serializing_if = "is_zero")]
    minor: u64,
    op: &'static str,
    #[serde(skip_serializing_if = "is_zero")]
    value: u64,
}

/// Go's `omitempty` for a number.
fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl RuncStats {
    /// `stats` in runc's shape.
    pub fn new(stats: &ContainerStats) -> RuncStats {
        let cpu = stats.cpu.unwrap_or_default();
        let pids = stats.pids.unwrap_or_default();
        let memory = match &stats.memory {
            Some(memory) => {
                let limit = memory.max.unwrap_or(u64::MAX);
                // Swap as cgroup v1 counts it: memory and swap together
                // (without swap accounting, memory alone, as runc has it).
                let swap_limit = match memory.swap_max {
                    Some(max) => max.saturating_add(limit),
                    None if memory.swap_current.is_some() => u64::MAX,
                    None => limit,
                };
                Memory {
                    cache: memory.stat.get("file").copied().unwrap_or(0),
                    usage: MemoryEntry {
                        limit,
                        usage: memory.current,
                        max: memory.peak.unwrap_or(0),
                        failcnt: 0,
                    },
                    swap: MemoryEntry {
                        limit: swap_limit,
                        usage: memory.swap_current.unwrap_or(0).saturating_add(memory.current),
                        ..Default::default()
                    },
                    kernel: MemoryEntry::default(),
                    kernel_tcp: MemoryEntry::default(),
                    raw: memory.stat.clone(),
                }
            }
            None => Memory {
                cache: 0,
                usage: MemoryEntry::default(),
                swap: MemoryEntry::default(),
                kernel: MemoryEntry::default(),
                kernel_tcp: MemoryEntry::default(),
                raw: BTreeMap::new(),
            },
        };
        let entry = |device: &agent_proto::IoStat, op, value| BlkioEntry {
            major: device.major,
            minor: device.minor,
            op,
            value,
        };
        let mut blkio = Blkio {
            io_service_bytes_recursive: Vec::new(),
            io_serviced_recursive: Vec::new(),
        };
        for device in &stats.io {
            blkio
                .io_service_bytes_recursive
                .push(entry(device, "Read", device.rbytes));
            blkio
                .io_service_bytes_recursive
                .push(entry(device, "Write", device.wbytes));
            blkio.io_serviced_recursive.push(entry(device, "Read", device.rios));
            blkio.io_serviced_recursive.push(entry(device, "Write", device.wios));
        }
        RuncStats {
            cpu: Cpu {
                usage: CpuUsage {
                    total: cpu.usage_usec.saturating_mul(1000),
                    kernel: cpu.system_usec.saturating_mul(1000),
                    user: cpu.user_usec.saturating_mul(1000),
                },
                throttling: Throttling {
                    periods: cpu.nr_periods,
                    throttled_periods: cpu.nr_throttled,
                    throttled_time: cpu.throttled_usec.saturating_mul(1000),
                },
            },
            cpuset: CpuSet::default(),
            memory,
            pids: Pids {
                current: pids.current,
                limit: pids.max.unwrap_or(0),
            },
            blkio,
            hugetlb: BTreeMap::new(),
            intel_rdt: BTreeMap::new(),
            network_interfaces: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::{CpuStat, IoStat, MemoryEvents, MemoryStat, PidsStat};
    use serde_json::{json, Value};

    fn runc_stats(stats: &ContainerStats) -> Value {
        serde_json::to_value(RuncStats::new(stats)).unwrap()
    }

    /// What the agent reported for a busybox shell in a VM with a 64 MiB
    /// memory limit and a pids limit of 50.
    fn guest_container() -> ContainerStats {
        ContainerStats {
            cpu: Some(CpuStat {
                usage_usec: 88009,
                user_usec: 15305,
                system_usec: 72703,
                ..Default::default()
            }),
            memory: Some(MemoryStat {
                current: 2105344,
                max: Some(64 << 20),
                peak: Some(2207744),
                stat: [("anon", 118784), ("file", 1679360), ("pgfault", 1058)]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                ..Default::default()
            }),
            memory_events: Some(MemoryEvents::default()),
            pids: Some(PidsStat {
                current: 2,
                max: Some(50),
            }),
            io: vec![IoStat {
                major: 254,
                minor: 0,
                rbytes: 1679360,
                rios: 20,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_guest_container_in_runc_s_shape() {
        let data = runc_stats(&guest_container());
        assert_eq!(
            data,
            json!({
                "cpu": {
                    "usage": {"total": 88009000, "kernel": 72703000, "user": 15305000},
                    "throttling": {},
                },
                "cpuset": {
                    "cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0, "memory_migrate": 0,
                    "memory_spread_page": 0, "memory_spread_slab": 0, "memory_pressure": 0,
                    "sched_load_balance": 0, "sched_relax_domain_level": 0,
                },
                "memory": {
                    "cache": 1679360,
                    "usage": {"limit": 67108864, "usage": 2105344, "max": 2207744, "failcnt": 0},
                    // No swap accounting: swap is memory alone, as runc
                    // reports it.
                    "swap": {"limit": 67108864, "usage": 2105344, "failcnt": 0},
                    "kernel": {"limit": 0, "failcnt": 0},
                    "kernelTCP": {"limit": 0, "failcnt": 0},
                    "raw": {"anon": 118784, "file": 1679360, "pgfault": 1058},
                },
                "pids": {"current": 2, "limit": 50},
                "blkio": {
                    "ioServiceBytesRecursive": [
                        {"major": 254, "op": "Read", "value": 1679360},
                        {"major": 254, "op": "Write"},
                    ],
                    "ioServicedRecursive": [
                        {"major": 254, "op": "Read", "value": 20},
                        {"major": 254, "op": "Write"},
                    ],
                },
                "hugetlb": {},
                "intel_rdt": {},
                "network_interfaces": null,
            })
        );
        // runc's order, as Go writes its structs.
        let event = RuncEvent {
            kind: "stats",
            id: "web",
            data: Some(RuncStats::new(&ContainerStats::default())),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            "{\"type\":\"stats\",\"id\":\"web\",\"data\":{\"cpu\":{\"usage\":{\"kernel\":0,\"user\":0},\
             \"throttling\":{}},\"cpuset\":{\"cpu_exclusive\":0,\"mem_hardwall\":0,\"mem_exclusive\":0,\
             \"memory_migrate\":0,\"memory_spread_page\":0,\"memory_spread_slab\":0,\"memory_pressure\":0,\
             \"sched_load_balance\":0,\"sched_relax_domain_level\":0},\"memory\":{\"usage\":{\"limit\":0,\
             \"failcnt\":0},\"swap\":{\"limit\":0,\"failcnt\":0},\"kernel\":{\"limit\":0,\"failcnt\":0},\
             \"kernelTCP\":{\"limit\":0,\"failcnt\":0}},\"pids\":{},\"blkio\":{},\"hugetlb\":{},\"intel_rdt\":{},\
             \"network_interfaces\":null}}"
        );
        let oom = RuncEvent {
            kind: "oom",
            id: "web",
            data: None,
        };
        assert_eq!(serde_json::to_string(&oom).unwrap(), r#"{"type":"oom","id":"web"}"#);
    }

    #[test]
    fn no_limits_are_runc_s_no_limits() {
        let stats = ContainerStats {
            memory: Some(MemoryStat {
                current: 4096,
                swap_current: Some(8192),
                ..Default::default()
            }),
            pids: Some(PidsStat { current: 1, max: None }),
            ..Default::default()
        };
        let data = runc_stats(&stats);
        assert_eq!(
            data["memory"]["usage"],
            json!({"limit": u64::MAX, "usage": 4096, "failcnt": 0})
        );
        assert_eq!(
            data["memory"]["swap"],
            json!({"limit": u64::MAX, "usage": 12288, "failcnt": 0})
        );
        assert_eq!(data["pids"], json!({"current": 1}));
        // Nothing of memory.stat: no raw, no cache.
        assert!(data["memory"].get("raw").is_none() && data["memory"].get("cache").is_none());
        assert_eq!(data["blkio"], json!({}));
        // A swap limit adds to the memory limit, as cgroup v1 counts it.
        let stats = ContainerStats {
            memory: Some(MemoryStat {
                current: 1,
                max: Some(100),
                swap_current: Some(0),
                swap_max: Some(50),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(runc_stats(&stats)["memory"]["swap"]["limit"], 150);
    }
}
