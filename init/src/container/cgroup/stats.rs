//! A cgroup's figures ([`agent_proto::ContainerStats`]), read from its
//! interface files: `cpu.stat`, `memory.current`, `memory.max`,
//! `memory.peak`, `memory.swap.current`, `memory.swap.max`,
//! `memory.stat`, `memory.events`, `pids.current`, `pids.max`, `io.stat`.
//!
//! A file the cgroup does not have (its controller is not enabled, the
//! kernel is older or built without it) leaves its part absent; a file
//! that is there but cannot be read is an error naming it. The parsers
//! take the kernel's text as it is and skip a line they cannot read
//! rather than fail the whole answer.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;

use agent_proto::{ContainerStats, CpuStat, IoStat, MemoryEvents, MemoryStat, PidsStat};

use super::error::CgroupError;

/// The figures of the cgroup at `dir`.
pub fn read(dir: &Path) -> Result<ContainerStats, CgroupError> {
    let file = |name: &str| read_optional(dir, name);
    let memory = match file("memory.current")? {
        Some(current) => Some(MemoryStat {
            current: parse_value(&current).unwrap_or(0),
            max: file("memory.max")?.as_deref().and_then(parse_limit),
            peak: file("memory.peak")?.as_deref().and_then(parse_value),
            swap_current: file("memory.swap.current")?.as_deref().and_then(parse_value),
            swap_max: file("memory.swap.max")?.as_deref().and_then(parse_limit),
            stat: file("memory.stat")?.as_deref().map(parse_keyed).unwrap_or_default(),
        }),
        None => None,
    };
    let pids = match file("pids.current")? {
        Some(current) => Some(PidsStat {
            current: parse_value(&current).unwrap_or(0),
            max: file("pids.max")?.as_deref().and_then(parse_limit),
        }),
        None => None,
    };
    Ok(ContainerStats {
        cpu: file("cpu.stat")?.as_deref().map(parse_cpu_stat),
        memory,
        memory_events: file("memory.events")?.as_deref().map(parse_memory_events),
        pids,
        io: file("io.stat")?.as_deref().map(parse_io_stat).unwrap_or_default(),
    })
}

/// The text of `dir/name`; `None` where the cgroup has no such file.
fn read_optional(dir: &Path, name: &str) -> Result<Option<String>, CgroupError> {
    let file = dir.join(name);
    match std::fs::read_to_string(&file) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Read { file, source }),
    }
}

/// A file of one number (`memory.current`).
fn parse_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A limit file (`memory.max`, `pids.max`): a number, or `max` for none
/// (`None`).
fn parse_limit(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        value => value.parse().ok(),
    }
}

/// A flat keyed file (`cpu.stat`, `memory.stat`, `memory.events`): one
/// `KEY VALUE` a line.
fn parse_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (key, value, None) = (words.next()?, words.next()?, words.next()) else {
                return None;
            };
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn parse_cpu_stat(text: &str) -> CpuStat {
    let keys = parse_keyed(text);
    let get = |key: &str| keys.get(key).copied().unwrap_or(0);
    CpuStat {
        usage_usec: get("usage_usec"),
        user_usec: get("user_usec"),
        system_usec: get("system_usec"),
        nr_periods: get("nr_periods"),
        nr_throttled: get("nr_throttled"),
        throttled_usec: get("throttled_usec"),
        nr_bursts: get("nr_bursts"),
        burst_usec: get("burst_usec"),
    }
}

fn parse_memory_events(text: &str) -> MemoryEvents {
    let keys = parse_keyed(text);
    let get = |key: &str| keys.get(key).copied().unwrap_or(0);
    MemoryEvents {
        low: get("low"),
        high: get("high"),
        max: get("max"),
        oom: get("oom"),
        oom_kill: get("oom_kill"),
        oom_group_kill: get("oom_group_kill"),
    }
}

/// A nested keyed file, `io.stat`: `MAJOR:MINOR rbytes=N wbytes=N ...` a
/// line, one per device.
fn parse_io_stat(text: &str) -> Vec<IoStat> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (major, minor) = words.next()?.split_once(':')?;
            let mut entry = IoStat {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for word in words {
                let Some((key, value)) = word.split_once('=') else {
                    continue;
                };
                let Ok(value) = value.parse() else { continue };
                match key {
                    "rbytes" => entry.rbytes = value,
                    "wbytes" => entry.wbytes = value,
                    "rios" => entry.rios = value,
                    "wios" => entry.wios = value,
                    "dbytes" => entry.dbytes = value,
                    "dios" => entry.dios = value,
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // The files of a container's cgroup in the guest (Linux 6.1), as
    // `cat` showed them: a busybox shell with memory.max and pids.max set.
    const CPU_STAT: &str = "usage_usec 88009\nuser_usec 15305\nsystem_usec 72703\nnr_periods 0\n\
                            nr_throttled 0\nthrottled_usec 0\nnr_bursts 0\nburst_usec 0\n";
    const MEMORY_EVENTS: &str = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n";
    const IO_STAT: &str = "254:0 rbytes=1679360 wbytes=0 rios=20 wios=0 dbytes=0 dios=0\n";
    const MEMORY_STAT: &str = "anon 118784\nfile 1679360\nkernel 208896\nkernel_stack 16384\n\
        pagetables 40960\nsec_pagetables 0\npercpu 0\nsock 0\nvmalloc 4096\nshmem 0\nfile_mapped 1499136\n\
        file_dirty 0\nfile_writeback 0\ninactive_anon 61440\nactive_anon 8192\ninactive_file 180224\n\
        active_file 1499136\nunevictable 0\nslab_reclaimable 39912\nslab_unreclaimable 47456\nslab 87368\n\
        workingset_refault_anon 0\nworkingset_refault_file 0\nworkingset_activate_anon 0\n\
        workingset_activate_file 0\nworkingset_restore_anon 0\nworkingset_restore_file 0\n\
        workingset_nodereclaim 0\npgscan 0\npgsteal 0\npgscan_kswapd 0\npgscan_direct 0\n\
        pgsteal_kswapd 0\npgsteal_direct 0\npgfault 1058\npgmajfault 15\npgrefill 0\npgactivate 366\n\
        pgdeactivate 0\npglazyfree 0\npglazyfreed 0\n";

    /// A scratch directory standing for a cgroup's, removed when dropped.
    struct ScratchDir(std::path::PathBuf);

    impl ScratchDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A directory of regular files with the given names and texts.
    fn cgroup_dir(files: &[(&str, &str)]) -> ScratchDir {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = ScratchDir(std::env::temp_dir().join(format!("vminitd-stats-{}-{n}", std::process::id())));
        std::fs::create_dir_all(dir.path()).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn every_file_of_a_container_cgroup_is_read() {
        let dir = cgroup_dir(&[
            ("cpu.stat", CPU_STAT),
            ("memory.current", "2105344\n"),
            ("memory.max", "67108864\n"),
            ("memory.peak", "2207744\n"),
            ("memory.stat", MEMORY_STAT),
            ("memory.events", MEMORY_EVENTS),
            ("pids.current", "2\n"),
            ("pids.max", "50\n"),
            ("io.stat", IO_STAT),
        ]);
        let stats = read(dir.path()).unwrap();
        let cpu = stats.cpu.unwrap();
        assert_eq!((cpu.usage_usec, cpu.user_usec, cpu.system_usec), (88009, 15305, 72703));
        assert_eq!((cpu.nr_periods, cpu.nr_throttled, cpu.throttled_usec), (0, 0, 0));
        let memory = stats.memory.unwrap();
        assert_eq!(memory.current, 2105344);
        assert_eq!(memory.max, Some(64 << 20));
        assert_eq!(memory.peak, Some(2207744));
        // No swap accounting in this kernel: no swap files.
        assert_eq!((memory.swap_current, memory.swap_max), (None, None));
        assert_eq!(memory.stat.len(), 41, "{:?}", memory.stat);
        for (key, value) in [
            ("anon", 118784),
            ("file", 1679360),
            ("kernel_stack", 16384),
            ("slab", 87368),
            ("file_mapped", 1499136),
            ("active_file", 1499136),
            ("pgfault", 1058),
            ("pgmajfault", 15),
        ] {
            assert_eq!(memory.stat.get(key), Some(&value), "{key}");
        }
        assert_eq!(stats.memory_events, Some(MemoryEvents::default()));
        assert_eq!(
            stats.pids,
            Some(PidsStat {
                current: 2,
                max: Some(50)
            })
        );
        assert_eq!(
            stats.io,
            [IoStat {
                major: 254,
                minor: 0,
                rbytes: 1679360,
                rios: 20,
                ..Default::default()
            }]
        );
    }

    #[test]
    fn no_limit_is_absent_and_missing_files_leave_their_parts_out() {
        // The cgroup of a container whose spec set no limits, in a cgroup
        // whose parent enabled only cpu (cpu.stat is always there).
        let dir = cgroup_dir(&[("cpu.stat", "usage_usec 5\nuser_usec 2\nsystem_usec 3\n")]);
        let stats = read(dir.path()).unwrap();
        assert_eq!(
            stats,
            ContainerStats {
                cpu: Some(CpuStat {
                    usage_usec: 5,
                    user_usec: 2,
                    system_usec: 3,
                    ..Default::default()
                }),
                ..Default::default()
            }
        );
        let dir = cgroup_dir(&[
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            ("memory.swap.current", "0\n"),
            ("memory.swap.max", "max\n"),
            ("pids.current", "1\n"),
            ("pids.max", "max\n"),
            ("io.stat", ""),
        ]);
        let stats = read(dir.path()).unwrap();
        let memory = stats.memory.unwrap();
        assert_eq!((memory.current, memory.max, memory.peak), (4096, None, None));
        assert_eq!((memory.swap_current, memory.swap_max), (Some(0), None));
        assert!(memory.stat.is_empty());
        assert_eq!(stats.pids, Some(PidsStat { current: 1, max: None }));
        assert_eq!((stats.cpu, stats.memory_events, stats.io), (None, None, Vec::new()));
    }

    #[test]
    fn oom_kills_are_counted() {
        let text = "low 0\nhigh 0\nmax 57\noom 2\noom_kill 2\noom_group_kill 0\n";
        let events = parse_memory_events(text);
        assert_eq!(
            events,
            MemoryEvents {
                max: 57,
                oom: 2,
                oom_kill: 2,
                ..Default::default()
            }
        );
        // An older kernel's file, without oom_group_kill.
        let events = parse_memory_events("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n");
        assert_eq!((events.oom_kill, events.oom_group_kill), (1, 0));
    }

    #[test]
    fn lines_that_cannot_be_read_are_skipped() {
        let keys = parse_keyed("anon 1\ngarbage\nfile x\nshmem 2 3\n\nsock 4\n");
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            [("anon".into(), 1), ("sock".into(), 4)]
        );
        let io = parse_io_stat("8:0 rbytes=1 wbytes=zz rios=2 newkey=5 junk\nnot-a-device rbytes=1\n8:16\n");
        assert_eq!(io.len(), 2);
        assert_eq!(
            (io[0].major, io[0].minor, io[0].rbytes, io[0].wbytes, io[0].rios),
            (8, 0, 1, 0, 2)
        );
        assert_eq!((io[1].major, io[1].minor, io[1].rbytes), (8, 16, 0));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("1024\n"), Some(1024));
        assert_eq!(parse_limit("-1\n"), None);
        assert_eq!(parse_value("\n"), None);
    }

    #[test]
    fn a_file_that_cannot_be_read_is_named() {
        // A directory where a file should be: there, but unreadable.
        let dir = cgroup_dir(&[]);
        std::fs::create_dir(dir.path().join("memory.current")).unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("memory.current"), "{e}");
    }
}
