//! `Op::Stats`: figures from procfs.

use std::io;

use std::path::Path;

use agent_proto::{CgroupMemory, MemoryStats, Stats};

use crate::child::defaults;

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot read {path}: {source}")]
    Read { path: &'static str, source: io::Error },
    #[error("cannot parse {path}: no {what}")]
    Parse { path: &'static str, what: &'static str },
}

/// Collects the guest's and the agent's figures; `processes` is the size of
/// the process table.
pub fn collect(processes: usize) -> Result<Stats, StatsError> {
    let uptime = read("/proc/uptime")?;
    let loadavg = read("/proc/loadavg")?;
    let meminfo = read("/proc/meminfo")?;
    let statm = read("/proc/self/statm")?;
    // SAFETY: sysconf has no memory preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    Ok(Stats {
        uptime_s: parse_uptime(&uptime).ok_or(StatsError::Parse {
            path: "/proc/uptime",
            what: "uptime",
        })?,
        load: parse_loadavg(&loadavg).ok_or(StatsError::Parse {
            path: "/proc/loadavg",
            what: "load averages",
        })?,
        memory: parse_meminfo(&meminfo).ok_or(StatsError::Parse {
            path: "/proc/meminfo",
            what: "MemTotal and MemFree",
        })?,
        agent_rss_bytes: parse_statm_resident(&statm).ok_or(StatsError::Parse {
            path: "/proc/self/statm",
            what: "resident size",
        })? * page_size,
        processes,
        workloads: defaults::workloads_dir().and_then(cgroup_memory),
    })
}

/// `memory.current` and `memory.max` of the cgroup at `dir`; `None` where
/// it has no memory controller.
fn cgroup_memory(dir: &Path) -> Option<CgroupMemory> {
    let current = std::fs::read_to_string(dir.join("memory.current")).ok()?;
    let max = std::fs::read_to_string(dir.join("memory.max")).ok()?;
    Some(CgroupMemory {
        current_bytes: current.trim().parse().ok()?,
        max_bytes: parse_memory_max(&max)?,
    })
}

/// `memory.max`: bytes, or `max` (no limit: `Some(None)`).
pub fn parse_memory_max(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        bytes => bytes.parse().ok().map(Some),
    }
}

fn read(path: &'static str) -> Result<String, StatsError> {
    std::fs::read_to_string(path).map_err(|source| StatsError::Read { path, source })
}

/// Seconds since boot: the first field of `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The three load averages: the first fields of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([fields.next()?.ok()?, fields.next()?.ok()?, fields.next()?.ok()?])
}

/// MemTotal, MemFree and MemAvailable of `/proc/meminfo`, and the caches
/// (Buffers, Cached, SReclaimable, each 0 where missing), in bytes.
/// Kernels before 3.14 have no MemAvailable: MemFree stands in.
pub fn parse_meminfo(text: &str) -> Option<MemoryStats> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let mut words = rest.split_whitespace();
            let value: u64 = words.next()?.parse().ok()?;
            let unit = match words.next() {
                Some("kB") => 1024,
                None => 1,
                Some(_) => return None,
            };
            Some(value * unit)
        })
    };
    let total_bytes = field("MemTotal")?;
    let free_bytes = field("MemFree")?;
    let available_bytes = field("MemAvailable").unwrap_or(free_bytes);
    let cache_bytes = ["Buffers", "Cached", "SReclaimable"]
        .iter()
        .map(|name| field(name).unwrap_or(0))
        .sum();
    Some(MemoryStats {
        total_bytes,
        free_bytes,
        available_bytes,
        cache_bytes,
    })
}

/// Resident pages: the second field of `/proc/PID/statm`.
pub fn parse_statm_resident(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfs_parsing() {
        assert_eq!(parse_uptime("12.34 56.78\n"), Some(12.34));
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_loadavg("0.50 0.25 0.10 1/123 456\n"), Some([0.5, 0.25, 0.1]));
        assert_eq!(parse_loadavg("0.50 x 0.10"), None);
        let meminfo = "MemTotal:        2048000 kB\nMemFree:         1024000 kB\nMemAvailable:    1536000 kB\n\
                       Buffers: 1 kB\nCached:  300 kB\nSwapCached: 7 kB\nSReclaimable: 20 kB\nSUnreclaim: 9 kB\n";
        let memory = parse_meminfo(meminfo).unwrap();
        assert_eq!(
            memory,
            MemoryStats {
                total_bytes: 2048000 * 1024,
                free_bytes: 1024000 * 1024,
                available_bytes: 1536000 * 1024,
                cache_bytes: 321 * 1024,
            }
        );
        assert_eq!(memory.used_bytes(), (2048000 - 1024000 - 321) * 1024);
        let old = "MemTotal: 100 kB\nMemFree: 50 kB\n";
        assert_eq!(parse_meminfo(old).unwrap().available_bytes, 50 * 1024);
        assert_eq!(parse_meminfo(old).unwrap().cache_bytes, 0);
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        // MemTotalX is not MemTotal.
        assert_eq!(parse_meminfo("MemTotalX: 5 kB\nMemFree: 1 kB\n"), None);
        assert_eq!(parse_statm_resident("1000 250 100 1 0 50 0\n"), Some(250));
        assert_eq!(parse_memory_max("max\n"), Some(None));
        assert_eq!(parse_memory_max("251658240\n"), Some(Some(251658240)));
        assert_eq!(parse_memory_max("lots\n"), None);
    }

    #[test]
    fn collect_from_this_machine() {
        let stats = collect(7).unwrap();
        assert_eq!(stats.processes, 7);
        assert!(stats.uptime_s > 0.0);
        assert!(stats.memory.total_bytes >= stats.memory.available_bytes);
        assert!(stats.agent_rss_bytes > 0);
    }
}
