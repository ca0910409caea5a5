//! OCI `linux.resources` as cgroup v2 file writes, with runc's
//! conversions from the cgroup v1 units the spec uses.
//!
//! [`settings`] checks every value and returns the writes in the order
//! runc makes them (pids, memory, io, cpu, cpuset, hugetlb, then
//! `unified`), without touching the system.
//!
//! The cgroup v1 fields runc 1.1 ignores on cgroup v2 (`fs2`) never reach
//! here: the host leaves them out (`memory.kernel`, `kernelTCP`,
//! `swappiness`, `disableOOMKiller`, `useHierarchy`, `cpu.realtime*`,
//! `blockIO.leafWeight`, `network`). Those it converts are converted here:
//! `cpu.shares` to `cpu.weight`, `blockIO.weight` to `io.bfq.weight` or
//! `io.weight`, `memory.swap` to `memory.swap.max`; `weightDevice` goes to
//! `io.bfq.weight` where the kernel has BFQ and is dropped where it has
//! not, as runc drops it.

use agent_proto::{BlockIo, CpuResources, HugepageLimit, MemoryResources, Resources, ThrottleDevice};

use super::error::CgroupError;

/// The controllers [`settings`] may need, as `cgroup.controllers` names
/// them.
const CONTROLLERS: [&str; 8] = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma", "misc"];

/// `unified` keys vminitd keeps for itself: they would move processes,
/// kill them, or turn the container's cgroup into one that cannot hold
/// processes.
const RESERVED: [&str; 5] = [
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.subtree_control",
    "cgroup.kill",
    "cgroup.type",
];

/// One write into the container's cgroup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The OCI field it comes from, for messages.
    pub field: String,
    /// The file name in the cgroup directory.
    pub file: String,
    pub value: String,
    pub if_missing: IfMissing,
}

/// What to do when the file of a [`Setting`] does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMissing {
    /// Refuse: the kernel cannot do what was asked.
    Fail,
    /// Nothing to do: the value asks for what the kernel already does
    /// (no swap limit, or no swap, where there is no swap accounting).
    Skip,
    /// Write this file and value instead.
    Instead { file: String, value: String },
}

impl Setting {
    fn new(field: &str, file: &str, value: String) -> Setting {
        Setting {
            field: field.to_owned(),
            file: file.to_owned(),
            value,
            if_missing: IfMissing::Fail,
        }
    }

    /// The controller that provides the file, if one does (`memory.max`:
    /// memory; `cgroup.freeze`, `cpu.pressure`: none).
    pub fn controller(&self) -> Option<&'static str> {
        if self.file.ends_with(".pressure") {
            return None;
        }
        let prefix = self.file.split('.').next()?;
        CONTROLLERS.iter().copied().find(|c| *c == prefix)
    }
}

/// Checks `resources` and turns them into writes, in order. The device
/// rules are checked and compiled apart (`devices.rs`).
pub fn settings(resources: &Resources) -> Result<Vec<Setting>, CgroupError> {
    let mut out = Vec::new();
    if let Some(limit) = resources.pids_limit {
        let value = if limit <= 0 {
            "max".to_owned()
        } else {
            limit.to_string()
        };
        out.push(Setting::new("linux.resources.pids.limit", "pids.max", value));
    }
    if let Some(memory) = &resources.memory {
        memory_settings(memory, &mut out)?;
    }
    if let Some(io) = &resources.block_io {
        io_settings(io, &mut out)?;
    }
    if let Some(cpu) = &resources.cpu {
        cpu_settings(cpu, &mut out)?;
    }
    for (i, limit) in resources.hugepage_limits.iter().enumerate() {
        out.push(hugetlb_setting(i, limit)?);
    }
    for (key, value) in &resources.unified {
        let field = format!("linux.resources.unified[{key:?}]");
        check_unified_key(&field, key)?;
        if value.contains('\0') {
            return Err(invalid(&field, "the value contains a NUL byte"));
        }
        out.push(Setting::new(&field, key, value.clone()));
    }
    Ok(out)
}

/// cgroup v1 `cpu.shares` (2 to 262144) to v2 `cpu.weight` (1 to 10000),
/// as runc converts them: linear, 2 → 1, 262144 → 10000, 1024 → 39.
pub fn cpu_weight(shares: u64) -> u64 {
    1 + (shares - 2) * 9999 / 262_142
}

/// cgroup v1 `blkio.weight` (10 to 1000) to v2 `io.weight` (1 to 10000),
/// as runc converts them: linear, 10 → 1, 1000 → 10000.
pub fn io_weight(weight: u16) -> u64 {
    1 + (weight as u64 - 10) * 9999 / 990
}

/// OCI `memory.swap` (memory plus swap) to `memory.swap.max` (swap alone),
/// given `memory.limit`; 0 is "not given" for both, -1 "no limit". As
/// runc's `ConvertMemorySwapToCgroupV2Value`.
pub fn swap_max(swap: i64, limit: i64) -> Result<i64, &'static str> {
    match (swap, limit) {
        // No limit on memory and nothing said of swap: none on swap either.
        (0, -1) => Ok(-1),
        (-1 | 0, _) => Ok(swap),
        (_, -1) => Ok(swap),
        (_, 0) => Err("a swap limit needs a memory limit"),
        _ if swap < limit => Err("memory plus swap is below the memory limit"),
        _ => Ok(swap - limit),
    }
}

fn memory_settings(memory: &MemoryResources, out: &mut Vec<Setting>) -> Result<(), CgroupError> {
    let bytes = |field: &str, value: Option<i64>| match value {
        Some(n) if n < -1 => Err(invalid(
            field,
            &format!("{n} is neither -1 (no limit) nor a size in bytes"),
        )),
        other => Ok(other.unwrap_or(0)),
    };
    let limit = bytes("linux.resources.memory.limit", memory.limit)?;
    let reservation = bytes("linux.resources.memory.reservation", memory.reservation)?;
    let swap = bytes("linux.resources.memory.swap", memory.swap)?;
    let field = "linux.resources.memory.swap";
    let swap_max = swap_max(swap, limit).map_err(|why| invalid(field, why))?;
    match swap_max {
        0 if swap > 0 => out.push(Setting {
            // Memory plus swap equal to memory: no swap.
            if_missing: IfMissing::Skip,
            ..Setting::new(field, "memory.swap.max", "0".into())
        }),
        0 => {}
        -1 => out.push(Setting {
            if_missing: IfMissing::Skip,
            ..Setting::new(field, "memory.swap.max", "max".into())
        }),
        n => out.push(Setting::new(field, "memory.swap.max", n.to_string())),
    }
    // 0 is "not given", as in runc.
    if limit != 0 {
        out.push(Setting::new(
            "linux.resources.memory.limit",
            "memory.max",
            max_or(limit),
        ));
    }
    if reservation != 0 {
        out.push(Setting::new(
            "linux.resources.memory.reservation",
            "memory.low",
            max_or(reservation),
        ));
    }
    Ok(())
}

fn io_settings(io: &BlockIo, out: &mut Vec<Setting>) -> Result<(), CgroupError> {
    match io.weight {
        None | Some(0) => {}
        Some(weight @ 10..=1000) => out.push(Setting {
            // BFQ takes the v1 weight as it is; without BFQ, io.weight.
            if_missing: IfMissing::Instead {
                file: "io.weight".into(),
                value: io_weight(weight).to_string(),
            },
            ..Setting::new("linux.resources.blockIO.weight", "io.bfq.weight", weight.to_string())
        }),
        Some(weight) => {
            return Err(invalid(
                "linux.resources.blockIO.weight",
                &format!("{weight} is outside 10..=1000"),
            ))
        }
    }
    for (i, device) in io.weight_device.iter().enumerate() {
        let field = format!("linux.resources.blockIO.weightDevice[{i}]");
        let (major, minor) = device_numbers(&field, device.major, device.minor)?;
        // No weight: the device's weight back to the default (0), as runc writes it.
        let weight = match device.weight {
            None => 0,
            Some(weight @ 1..=1000) => weight,
            Some(weight) => return Err(invalid(&field, &format!("weight {weight} is outside 1..=1000"))),
        };
        out.push(Setting {
            // Without BFQ there are no per-device weights: runc drops them.
            if_missing: IfMissing::Skip,
            ..Setting::new(&field, "io.bfq.weight", format!("{major}:{minor} {weight}"))
        });
    }
    let lists: [(&str, &str, &[ThrottleDevice]); 4] = [
        ("throttleReadBpsDevice", "rbps", &io.throttle_read_bps_device),
        ("throttleWriteBpsDevice", "wbps", &io.throttle_write_bps_device),
        ("throttleReadIOPSDevice", "riops", &io.throttle_read_iops_device),
        ("throttleWriteIOPSDevice", "wiops", &io.throttle_write_iops_device),
    ];
    for (name, key, devices) in lists {
        for (i, device) in devices.iter().enumerate() {
            let field = format!("linux.resources.blockIO.{name}[{i}]");
            let (major, minor) = device_numbers(&field, device.major, device.minor)?;
            // 0 lifts the limit, as in cgroup v1 (io.max refuses 0).
            let rate = match device.rate {
                0 => "max".to_owned(),
                rate => rate.to_string(),
            };
            out.push(Setting::new(&field, "io.max", format!("{major}:{minor} {key}={rate}")));
        }
    }
    Ok(())
}

/// A block device's numbers, each a `u32`.
fn device_numbers(field: &str, major: i64, minor: i64) -> Result<(u32, u32), CgroupError> {
    let number = |n: i64| u32::try_from(n).map_err(|_| invalid(field, &format!("{n} is not a device number")));
    Ok((number(major)?, number(minor)?))
}

/// `hugetlb.<size>.max`: the page size as the kernel names it (digits,
/// then `KB`, `MB` or `GB`), which is also part of a file name.
fn hugetlb_setting(i: usize, limit: &HugepageLimit) -> Result<Setting, CgroupError> {
    let field = format!("linux.resources.hugepageLimits[{i}]");
    let size = limit.page_size.as_str();
    let digits = size.trim_end_matches(['K', 'M', 'G', 'B']);
    let unit = &size[digits.len()..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !matches!(unit, "KB" | "MB" | "GB") {
        return Err(invalid(
            &field,
            &format!("page size {size:?} is not one such as 2MB or 1GB"),
        ));
    }
    if limit.limit < 0 {
        return Err(invalid(
            &field,
            &format!("limit {} is not a size in bytes", limit.limit),
        ));
    }
    Ok(Setting::new(
        &field,
        &format!("hugetlb.{size}.max"),
        limit.limit.to_string(),
    ))
}

fn cpu_settings(cpu: &CpuResources, out: &mut Vec<Setting>) -> Result<(), CgroupError> {
    match cpu.shares {
        None | Some(0) => {}
        Some(shares @ 2..=262_144) => out.push(Setting::new(
            "linux.resources.cpu.shares",
            "cpu.weight",
            cpu_weight(shares).to_string(),
        )),
        Some(shares) => {
            return Err(invalid(
                "linux.resources.cpu.shares",
                &format!("{shares} is outside 2..=262144"),
            ))
        }
    }
    // The kernel's bounds: a period of 1 ms to 1 s, a quota of 1 ms or more.
    if let Some(period @ (1..=999 | 1_000_001..)) = cpu.period {
        return Err(invalid(
            "linux.resources.cpu.period",
            &format!("{period} µs is outside 1000..=1000000"),
        ));
    }
    if let Some(quota @ (..=-2 | 1..=999)) = cpu.quota {
        return Err(invalid(
            "linux.resources.cpu.quota",
            &format!("{quota} µs is neither -1 (no limit) nor 1000 or more"),
        ));
    }
    if cpu.quota.is_some() || cpu.period.is_some() {
        let quota = match cpu.quota {
            Some(quota) if quota > 0 => quota.to_string(),
            _ => "max".to_owned(),
        };
        let period = match cpu.period {
            None | Some(0) => 100_000,
            Some(period) => period,
        };
        let field = if cpu.quota.is_some() {
            "linux.resources.cpu.quota"
        } else {
            "linux.resources.cpu.period"
        };
        out.push(Setting::new(field, "cpu.max", format!("{quota} {period}")));
    }
    let lists = [("cpus", "cpuset.cpus", &cpu.cpus), ("mems", "cpuset.mems", &cpu.mems)];
    for (name, file, list) in lists {
        let Some(list) = list.as_deref().map(str::trim).filter(|l| !l.is_empty()) else {
            continue;
        };
        let field = format!("linux.resources.cpu.{name}");
        if !list.chars().all(|c| c.is_ascii_digit() || c == ',' || c == '-') {
            return Err(invalid(&field, &format!("{list:?} is not a list such as 0-3,5")));
        }
        out.push(Setting::new(&field, file, list.to_owned()));
    }
    Ok(())
}

/// A `unified` key must name a file of the cgroup's own directory.
fn check_unified_key(field: &str, key: &str) -> Result<(), CgroupError> {
    let why = if key.is_empty() {
        "the name is empty"
    } else if key.contains('/') || key == "." || key == ".." {
        "it names a file outside the cgroup's directory"
    } else if key.contains('\0') {
        "the name contains a NUL byte"
    } else if RESERVED.contains(&key) {
        "vminitd manages this file itself"
    } else if !key.contains('.') {
        "it is not the name of a cgroup file (controller.name)"
    } else {
        return Ok(());
    };
    Err(invalid(field, why))
}

/// -1 as `max`, anything else as it is.
fn max_or(value: i64) -> String {
    match value {
        -1 => "max".to_owned(),
        n => n.to_string(),
    }
}

fn invalid(field: &str, why: &str) -> CgroupError {
    CgroupError::InvalidValue {
        field: field.to_owned(),
        why: why.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn writes(resources: &Resources) -> Vec<(String, String)> {
        settings(resources)
            .unwrap()
            .into_iter()
            .map(|s| (s.file, s.value))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(f, v)| (f.to_string(), v.to_string())).collect()
    }

    fn error(resources: &Resources) -> String {
        settings(resources).unwrap_err().to_string()
    }

    fn memory(limit: Option<i64>, reservation: Option<i64>, swap: Option<i64>) -> Resources {
        Resources {
            memory: Some(MemoryResources {
                limit,
                reservation,
                swap,
            }),
            ..Default::default()
        }
    }

    fn cpu(cpu: CpuResources) -> Resources {
        Resources {
            cpu: Some(cpu),
            ..Default::default()
        }
    }

    #[test]
    fn conversions_match_runc() {
        assert_eq!(cpu_weight(2), 1);
        assert_eq!(cpu_weight(1024), 39);
        assert_eq!(cpu_weight(262_144), 10_000);
        assert_eq!(io_weight(10), 1);
        assert_eq!(io_weight(500), 4950);
        assert_eq!(io_weight(1000), 10_000);
        assert_eq!(swap_max(0, -1), Ok(-1));
        assert_eq!(swap_max(-1, 100), Ok(-1));
        assert_eq!(swap_max(0, 100), Ok(0));
        assert_eq!(swap_max(300, 100), Ok(200));
        assert_eq!(swap_max(100, 100), Ok(0));
        assert_eq!(swap_max(300, -1), Ok(300));
        assert!(swap_max(300, 0).is_err());
        assert!(swap_max(50, 100).is_err());
    }

    #[test]
    fn memory_becomes_max_low_and_swap() {
        let m = 64 << 20;
        assert_eq!(
            writes(&memory(Some(m), Some(m / 2), Some(2 * m))),
            pairs(&[
                ("memory.swap.max", "67108864"),
                ("memory.max", "67108864"),
                ("memory.low", "33554432")
            ])
        );
        assert_eq!(
            writes(&memory(Some(-1), None, None)),
            pairs(&[("memory.swap.max", "max"), ("memory.max", "max")])
        );
        // Swap equal to the limit: no swap; without swap accounting, there
        // is none anyway.
        let s = settings(&memory(Some(m), None, Some(m))).unwrap();
        assert_eq!((s[0].file.as_str(), s[0].value.as_str()), ("memory.swap.max", "0"));
        assert_eq!(s[0].if_missing, IfMissing::Skip);
        // A real swap limit must be applied or refused.
        let s = settings(&memory(Some(m), None, Some(2 * m))).unwrap();
        assert_eq!(s[0].if_missing, IfMissing::Fail);
        assert_eq!(s[0].field, "linux.resources.memory.swap");
        assert_eq!(s[0].controller(), Some("memory"));
        assert_eq!(writes(&memory(Some(0), None, None)), pairs(&[]));
    }

    #[test]
    fn cpu_becomes_weight_max_and_cpuset() {
        let r = cpu(CpuResources {
            shares: Some(1024),
            quota: Some(50_000),
            period: Some(200_000),
            cpus: Some("0-1,3".into()),
            mems: Some("0".into()),
        });
        assert_eq!(
            writes(&r),
            pairs(&[
                ("cpu.weight", "39"),
                ("cpu.max", "50000 200000"),
                ("cpuset.cpus", "0-1,3"),
                ("cpuset.mems", "0")
            ])
        );
        let quota_only = cpu(CpuResources {
            quota: Some(-1),
            ..Default::default()
        });
        assert_eq!(writes(&quota_only), pairs(&[("cpu.max", "max 100000")]));
        let period_only = cpu(CpuResources {
            period: Some(10_000),
            ..Default::default()
        });
        assert_eq!(writes(&period_only), pairs(&[("cpu.max", "max 10000")]));
    }

    #[test]
    fn pids_io_and_unified_in_runc_order() {
        let throttle = |major, minor, rate| ThrottleDevice { major, minor, rate };
        let r = Resources {
            pids_limit: Some(0),
            block_io: Some(BlockIo {
                weight: Some(500),
                throttle_read_bps_device: vec![throttle(8, 0, 1_048_576)],
                throttle_write_iops_device: vec![throttle(8, 16, 0)],
                ..Default::default()
            }),
            cpu: Some(CpuResources {
                shares: Some(2),
                ..Default::default()
            }),
            unified: BTreeMap::from([("memory.high".to_string(), "1G".to_string())]),
            ..Default::default()
        };
        let s = settings(&r).unwrap();
        assert_eq!(
            s.iter().map(|s| (s.file.clone(), s.value.clone())).collect::<Vec<_>>(),
            pairs(&[
                ("pids.max", "max"),
                ("io.bfq.weight", "500"),
                ("io.max", "8:0 rbps=1048576"),
                ("io.max", "8:16 wiops=max"),
                ("cpu.weight", "1"),
                ("memory.high", "1G")
            ])
        );
        assert_eq!(
            s[1].if_missing,
            IfMissing::Instead {
                file: "io.weight".into(),
                value: "4950".into()
            }
        );
        assert_eq!(s[3].field, "linux.resources.blockIO.throttleWriteIOPSDevice[0]");
        let controllers: Vec<_> = s.iter().map(Setting::controller).collect();
        assert_eq!(
            controllers,
            [
                Some("pids"),
                Some("io"),
                Some("io"),
                Some("io"),
                Some("cpu"),
                Some("memory")
            ]
        );
        let pids = Resources {
            pids_limit: Some(100),
            ..Default::default()
        };
        assert_eq!(writes(&pids), pairs(&[("pids.max", "100")]));
    }

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(
            error(&memory(Some(-5), None, None)),
            "linux.resources.memory.limit: -5 is neither -1 (no limit) nor a size in bytes"
        );
        assert_eq!(
            error(&memory(None, None, Some(1 << 30))),
            "linux.resources.memory.swap: a swap limit needs a memory limit"
        );
        assert_eq!(
            error(&memory(Some(1 << 30), None, Some(1 << 20))),
            "linux.resources.memory.swap: memory plus swap is below the memory limit"
        );
        let shares = |shares| {
            cpu(CpuResources {
                shares: Some(shares),
                ..Default::default()
            })
        };
        assert_eq!(error(&shares(1)), "linux.resources.cpu.shares: 1 is outside 2..=262144");
        assert!(error(&shares(262_145)).starts_with("linux.resources.cpu.shares: "));
        let quota = cpu(CpuResources {
            quota: Some(500),
            ..Default::default()
        });
        assert!(error(&quota).starts_with("linux.resources.cpu.quota: 500 µs"));
        let period = cpu(CpuResources {
            period: Some(2_000_000),
            ..Default::default()
        });
        assert!(error(&period).starts_with("linux.resources.cpu.period: "));
        let cpus = cpu(CpuResources {
            cpus: Some("0-3\n+memory".into()),
            ..Default::default()
        });
        assert!(error(&cpus).starts_with("linux.resources.cpu.cpus: "));
        let weight = |weight| Resources {
            block_io: Some(BlockIo {
                weight: Some(weight),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            error(&weight(5)),
            "linux.resources.blockIO.weight: 5 is outside 10..=1000"
        );
        let throttle = Resources {
            block_io: Some(BlockIo {
                throttle_read_bps_device: vec![ThrottleDevice {
                    major: -1,
                    minor: 0,
                    rate: 1,
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            error(&throttle),
            "linux.resources.blockIO.throttleReadBpsDevice[0]: -1 is not a device number"
        );
    }

    #[test]
    fn device_weights_and_hugepage_limits_as_runc_writes_them() {
        let weight = |major, minor, weight| agent_proto::WeightDevice { major, minor, weight };
        let r = Resources {
            block_io: Some(BlockIo {
                weight: Some(100),
                weight_device: vec![weight(8, 0, Some(500)), weight(8, 16, None)],
                ..Default::default()
            }),
            hugepage_limits: vec![
                HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 1 << 30,
                },
                HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                },
            ],
            unified: BTreeMap::from([("hugetlb.2MB.max".to_string(), "0".to_string())]),
            ..Default::default()
        };
        let s = settings(&r).unwrap();
        assert_eq!(
            s.iter().map(|s| (s.file.clone(), s.value.clone())).collect::<Vec<_>>(),
            pairs(&[
                ("io.bfq.weight", "100"),
                ("io.bfq.weight", "8:0 500"),
                ("io.bfq.weight", "8:16 0"),
                ("hugetlb.2MB.max", "1073741824"),
                ("hugetlb.1GB.max", "0"),
                // unified last: it has the last word, as in runc.
                ("hugetlb.2MB.max", "0"),
            ])
        );
        assert_eq!(s[1].field, "linux.resources.blockIO.weightDevice[0]");
        assert_eq!(s[1].if_missing, IfMissing::Skip);
        assert_eq!(
            (s[3].field.as_str(), s[3].controller(), &s[3].if_missing),
            ("linux.resources.hugepageLimits[0]", Some("hugetlb"), &IfMissing::Fail)
        );
        for size in ["2M", "MB", "2mb", "../2MB", "2MB/x", "", "2 MB", "2KBMB"] {
            let bad = Resources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: size.into(),
                    limit: 1,
                }],
                ..Default::default()
            };
            assert_eq!(
                error(&bad),
                format!("linux.resources.hugepageLimits[0]: page size {size:?} is not one such as 2MB or 1GB"),
            );
        }
        let negative = Resources {
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: -1,
            }],
            ..Default::default()
        };
        assert_eq!(
            error(&negative),
            "linux.resources.hugepageLimits[0]: limit -1 is not a size in bytes"
        );
        let heavy = Resources {
            block_io: Some(BlockIo {
                weight_device: vec![weight(8, 0, Some(1001))],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            error(&heavy),
            "linux.resources.blockIO.weightDevice[0]: weight 1001 is outside 1..=1000"
        );
    }

    #[test]
    fn unified_keys_stay_in_the_cgroup() {
        let unified = |key: &str| Resources {
            unified: BTreeMap::from([(key.to_string(), "1".to_string())]),
            ..Default::default()
        };
        for key in [
            "../cgroup.procs",
            "a/memory.max",
            "..",
            "",
            "mem\0ory.max",
            "cgroup.procs",
            "memory",
        ] {
            let e = settings(&unified(key)).unwrap_err();
            assert!(
                matches!(&e, CgroupError::InvalidValue { field, .. } if field.starts_with("linux.resources.unified[")),
                "{key:?}: {e}"
            );
        }
        assert_eq!(
            error(&unified("../x.y")),
            "linux.resources.unified[\"../x.y\"]: it names a file outside the cgroup's directory"
        );
        let s = settings(&unified("cgroup.freeze")).unwrap();
        assert_eq!(s[0].controller(), None);
        let s = settings(&unified("memory.pressure")).unwrap();
        assert_eq!(s[0].controller(), None);
        let s = settings(&unified("hugetlb.2MB.max")).unwrap();
        assert_eq!(s[0].controller(), Some("hugetlb"));
    }
}
