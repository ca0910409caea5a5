//! The boot profile: host and guest phases on one time axis.
//!
//! Host phases are `Instant`s. Guest phases are `CLOCK_BOOTTIME` readings of
//! the guest kernel; the agent's hello answer carries its clock (`now_ns`),
//! taken about half a round trip after the host sent the hello, which anchors
//! the guest's clock on the host's axis. Guest boottime 0 is then the moment
//! the guest kernel started. The kernel's initcalls, read from the guest's
//! console ([`initcall`]), are placed on the same axis, and so are the
//! spans of vminitd's own work (`Op::Timeline`: the boot's steps, the
//! requests, the forks).
//!
//! Where vmshim started QEMU, its threads' time on the host's CPUs is
//! sampled as well ([`cpu`]): the table says how busy the guest's vCPUs
//! were through each phase, the trace draws it as a counter.
//!
//! [`Profile::chrome_trace`] writes it all as a Chrome trace, and
//! [`Profile::from_chrome_trace`] reads such a trace back, for
//! [`compare`] to set two runs side by side.

pub mod compare;
pub mod cpu;
pub mod initcall;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use agent_proto::BootTimeline;
use serde_json::json;

use cpu::CpuSample;
use initcall::CallKind;

/// Which clock a phase was read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// vmshim's own monotonic clock.
    Host,
    /// The guest's `CLOCK_BOOTTIME`, placed on the host's axis with the
    /// handshake's round trip.
    Guest,
}

/// One phase: its name and when it ended, in milliseconds since vmshim
/// started.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// What ended (`vmshim start`, `agent listening`, ...).
    pub name: String,
    /// When, in milliseconds since vmshim started.
    pub at_ms: f64,
    /// The clock it was read on.
    pub clock: Clock,
}

/// One kernel initcall or driver probe on the host axis.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelSpan {
    /// The initcall's function, or `probe of DEVICE`.
    pub name: String,
    /// An initcall or a probe.
    pub kind: CallKind,
    /// When it was called, in milliseconds since vmshim started.
    pub start_ms: f64,
    /// How long it ran, in milliseconds.
    pub duration_ms: f64,
    /// What it returned.
    pub returned: i64,
}

/// One span of vminitd's own work (`Op::Timeline`) on the host axis.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpan {
    /// What ran (`mount root filesystem`, `request start`, ...).
    pub name: String,
    /// When it began, in milliseconds since vmshim started.
    pub start_ms: f64,
    /// How long it ran, in milliseconds.
    pub duration_ms: f64,
}

/// Collects the phases of one run.
#[derive(Debug, Clone)]
pub struct Profile {
    start: Instant,
    phases: Vec<Phase>,
    /// Where the guest's clock sits on the host axis: the host time (ms)
    /// at which the guest's clock read the given nanoseconds.
    guest_anchor: Option<(f64, u64)>,
    kernel: Vec<KernelSpan>,
    agent: Vec<AgentSpan>,
    cpu: Vec<CpuSample>,
}

/// QEMU's time on the host's CPUs over a stretch of a run
/// ([`Profile::vcpu_load`]), in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VcpuLoad {
    /// The vCPU threads' time on a host CPU, all vCPUs summed.
    pub vcpu_ms: f64,
    /// All of QEMU's threads' time on a host CPU.
    pub qemu_ms: f64,
    /// The wall time of the stretch.
    pub wall_ms: f64,
}

impl VcpuLoad {
    /// The vCPUs' time in percent of the wall time: of one host CPU.
    pub fn busy_percent(&self) -> f64 {
        100.0 * self.vcpu_ms / self.wall_ms.max(1e-9)
    }
}

/// The initcalls [`Profile::table`] lists: those that took at least this
/// long (every one is in the trace).
pub const TABLE_MIN_INITCALL_MS: f64 = 1.0;

/// A trace that [`Profile::from_chrome_trace`] cannot read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// Not a trace object with a `traceEvents` list.
    #[error("not a Chrome trace: no traceEvents list")]
    NotATrace,
    /// An event without the fields a phase or an initcall has.
    #[error("trace event {index} ({name:?}) lacks {field}")]
    BadEvent {
        /// Its position in `traceEvents`.
        index: usize,
        /// Its name, where it has one.
        name: String,
        /// The field that is missing or not a number.
        field: &'static str,
    },
    /// A trace without a single phase of vmshim's.
    #[error("no boot phases in the trace (not written by vmshim run --profile=FILE?)")]
    NoPhases,
}

/// The guest phase names of the agent's timeline, as the profile shows them.
const GUEST_NAMES: &[(&str, &str)] = &[
    ("entered", "/init entered"),
    ("mounts_done", "mounts done"),
    ("network_up", "network up"),
    ("rootfs_ready", "root filesystem ready"),
    ("listening", "agent listening"),
    ("key_received", "agent key received"),
];

impl Profile {
    /// An empty profile of a run that started at `start`.
    pub fn new(start: Instant) -> Profile {
        Profile {
            start,
            phases: Vec::new(),
            guest_anchor: None,
            kernel: Vec::new(),
            agent: Vec::new(),
            cpu: Vec::new(),
        }
    }

    /// When the run started: the origin of the profile's axis.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records a host phase as ending now.
    pub fn mark(&mut self, name: &str) {
        self.mark_at(name, Instant::now());
    }

    /// Records a host phase that ended at `at`.
    pub fn mark_at(&mut self, name: &str, at: Instant) {
        let at_ms = at.saturating_duration_since(self.start).as_secs_f64() * 1e3;
        self.phases.push(Phase {
            name: name.to_owned(),
            at_ms,
            clock: Clock::Host,
        });
    }

    /// Places the guest's boot timeline on the host axis. `hello_sent` and
    /// `rtt` time the hello exchange whose answer carried `guest_now_ns`.
    pub fn add_guest(&mut self, boot: &BootTimeline, guest_now_ns: u64, hello_sent: Instant, rtt: Duration) {
        let anchor_ms = (hello_sent + rtt / 2)
            .saturating_duration_since(self.start)
            .as_secs_f64()
            * 1e3;
        self.guest_anchor = Some((anchor_ms, guest_now_ns));
        let to_host = |ns: u64| guest_to_host((anchor_ms, guest_now_ns), ns);
        self.phases.push(Phase {
            name: "kernel start".into(),
            at_ms: to_host(0),
            clock: Clock::Guest,
        });
        for phase in &boot.phases {
            let name = GUEST_NAMES
                .iter()
                .find(|(k, _)| *k == phase.name)
                .map(|(_, v)| *v)
                .unwrap_or(&phase.name);
            self.phases.push(Phase {
                name: name.to_owned(),
                at_ms: to_host(phase.boottime_ns),
                clock: Clock::Guest,
            });
        }
    }

    /// Places the kernel's initcalls and probes reported in the guest's
    /// console log (booted with [`initcall::KERNEL_CMDLINE`]) on the host
    /// axis, as the guest's phases are ([`Profile::add_guest`] first;
    /// without it the guest clock has no place and nothing is added).
    /// Returns how many were added.
    pub fn add_kernel_log(&mut self, console: &str) -> usize {
        let Some(anchor) = self.guest_anchor else {
            return 0;
        };
        let calls = initcall::parse(console);
        let added = calls.len();
        self.kernel.extend(calls.into_iter().map(|call| KernelSpan {
            start_ms: guest_to_host(anchor, call.start_ns),
            duration_ms: call.duration_ns() as f64 / 1e6,
            name: call.name,
            kind: call.kind,
            returned: call.returned,
        }));
        added
    }

    /// Places the spans of vminitd's work (`Op::Timeline`) on the host
    /// axis, as the guest's phases are ([`Profile::add_guest`] first;
    /// without it nothing is added). Returns how many were added.
    pub fn add_agent_spans(&mut self, spans: &[agent_proto::Span]) -> usize {
        let Some(anchor) = self.guest_anchor else {
            return 0;
        };
        self.agent.extend(spans.iter().map(|s| AgentSpan {
            name: s.name.clone(),
            start_ms: guest_to_host(anchor, s.start_ns),
            duration_ms: s.end_ns.saturating_sub(s.start_ns) as f64 / 1e6,
        }));
        spans.len()
    }

    /// Adds samples of QEMU's time on the host's CPUs ([`cpu::Sampler`],
    /// started with this profile's [`Profile::start`]).
    pub fn add_cpu_samples(&mut self, samples: Vec<CpuSample>) {
        self.cpu.extend(samples);
        self.cpu.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    }

    /// The CPU time of QEMU's vCPU threads and of all its threads between
    /// two moments of the axis, in ms; `None` where no samples cover them.
    pub fn cpu_between(&self, from_ms: f64, to_ms: f64) -> Option<(f64, f64)> {
        cpu::between(&self.cpu, from_ms, to_ms)
    }

    /// How busy the vCPUs were from `VMM spawned` to `process exited`;
    /// `None` where the run was not sampled.
    pub fn vcpu_load(&self) -> Option<VcpuLoad> {
        let (from, to) = (self.get("VMM spawned")?, self.get("process exited")?);
        let (vcpu_ms, qemu_ms) = self.cpu_between(from, to)?;
        Some(VcpuLoad {
            vcpu_ms,
            qemu_ms,
            wall_ms: to - from,
        })
    }

    /// The spans of vminitd's work, in the order they began.
    pub fn agent_spans(&self) -> Vec<AgentSpan> {
        let mut v = self.agent.clone();
        v.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        v
    }

    /// The kernel's initcalls and probes, in the order they were called.
    pub fn kernel_calls(&self) -> Vec<KernelSpan> {
        let mut v = self.kernel.clone();
        v.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        v
    }

    /// The phases in time order.
    pub fn phases(&self) -> Vec<Phase> {
        let mut v = self.phases.clone();
        v.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        v
    }

    /// The time of the first phase named `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.phases.iter().find(|p| p.name == name).map(|p| p.at_ms)
    }

    /// A table: each phase, when it ended, and how long since the previous;
    /// with CPU samples, how busy the vCPUs were in that time (100% is one
    /// host CPU).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let sampled = !self.cpu.is_empty();
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>10}  clock{}",
            "phase",
            "at ms",
            "+ms",
            if sampled { "   vCPU busy" } else { "" }
        );
        let mut prev = 0.0;
        for p in self.phases() {
            let clock = match p.clock {
                Clock::Host => "host ",
                Clock::Guest => "guest",
            };
            let busy = match self.cpu_between(prev, p.at_ms) {
                Some((vcpu, _)) if p.at_ms - prev >= 1.0 => format!("{:>10.0}%", 100.0 * vcpu / (p.at_ms - prev)),
                _ => String::new(),
            };
            let line = format!(
                "{:<24} {:>10.1} {:>10.1}  {clock}  {busy}",
                p.name,
                p.at_ms,
                p.at_ms - prev
            );
            let _ = writeln!(out, "{}", line.trim_end());
            prev = p.at_ms;
        }
        if let Some(load) = self.vcpu_load() {
            let _ = writeln!(
                out,
                "QEMU from VMM spawned to process exited ({:.1} ms): vCPUs on a host CPU {:.1} ms ({:.0}%), all its threads {:.1} ms",
                load.wall_ms,
                load.vcpu_ms,
                load.busy_percent(),
                load.qemu_ms
            );
        }
        let agent = self.agent_spans();
        if !agent.is_empty() {
            let _ = writeln!(out, "vminitd spans: {} (start ms, duration ms):", agent.len());
            for s in agent {
                let _ = writeln!(out, "  {:<44} {:>10.1} {:>10.1}", s.name, s.start_ms, s.duration_ms);
            }
        }
        let slow: Vec<KernelSpan> = self
            .kernel_calls()
            .into_iter()
            .filter(|c| c.kind == CallKind::Initcall && c.duration_ms >= TABLE_MIN_INITCALL_MS)
            .collect();
        if !slow.is_empty() {
            let total: f64 = self
                .kernel
                .iter()
                .filter(|c| c.kind == CallKind::Initcall)
                .map(|c| c.duration_ms)
                .sum();
            let _ = writeln!(
                out,
                "kernel initcalls: {} in {total:.1} ms; those of {TABLE_MIN_INITCALL_MS} ms or more:",
                self.kernel.iter().filter(|c| c.kind == CallKind::Initcall).count(),
            );
            for c in slow {
                let _ = writeln!(out, "  {:<32} {:>10.1} {:>10.1}", c.name, c.start_ms, c.duration_ms);
            }
        }
        out
    }

    /// Chrome trace event JSON (opens in Perfetto and chrome://tracing): each
    /// phase as a span from the end of the previous phase, on a host and a
    /// guest track, plus an instant event at its end.
    pub fn chrome_trace(&self) -> serde_json::Value {
        let mut events = vec![
            json!({"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "vmshim boot"}}),
            json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "host"}}),
            json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "guest"}}),
            json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": KERNEL_TID, "args": {"name": "kernel initcalls"}}),
            json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": AGENT_TID, "args": {"name": "vminitd"}}),
        ];
        let mut prev = 0.0f64;
        for p in self.phases() {
            let (tid, clock) = match p.clock {
                Clock::Host => (1, "host"),
                Clock::Guest => (2, "guest"),
            };
            let start = prev.min(p.at_ms);
            events.push(json!({
                "ph": "X", "cat": PHASE_CAT, "name": p.name, "pid": 1, "tid": tid,
                "ts": start * 1e3, "dur": (p.at_ms - start) * 1e3, "args": {"clock": clock},
            }));
            events.push(json!({"ph": "i", "s": "t", "name": p.name, "pid": 1, "tid": tid, "ts": p.at_ms * 1e3}));
            prev = p.at_ms;
        }
        // Probes run inside the initcall that registered their driver:
        // Perfetto nests them under it on the same track.
        for c in self.kernel_calls() {
            let cat = match c.kind {
                CallKind::Initcall => INITCALL_CAT,
                CallKind::Probe => PROBE_CAT,
            };
            events.push(json!({
                "ph": "X", "cat": cat, "name": c.name, "pid": 1, "tid": KERNEL_TID,
                "ts": c.start_ms * 1e3, "dur": c.duration_ms * 1e3, "args": {"returned": c.returned},
            }));
        }
        // Spans overlap (requests run concurrently, the boot's threads
        // beside the agent): Perfetto stacks what nests and the rest reads
        // by its start.
        for s in self.agent_spans() {
            events.push(json!({
                "ph": "X", "cat": AGENT_CAT, "name": s.name, "pid": 1, "tid": AGENT_TID,
                "ts": s.start_ms * 1e3, "dur": s.duration_ms * 1e3,
            }));
        }
        // A counter's value holds from its event to the next: each sample
        // interval's load is written at the interval's start.
        for w in self.cpu.windows(2) {
            let span = (w[1].at_ms - w[0].at_ms).max(1e-9);
            events.push(json!({
                "ph": "C", "cat": CPU_CAT, "name": CPU_COUNTER, "pid": 1, "ts": w[0].at_ms * 1e3,
                "args": {
                    VCPU_ARG: 100.0 * (w[1].vcpu_ms - w[0].vcpu_ms) / span,
                    QEMU_ARG: 100.0 * (w[1].qemu_ms - w[0].qemu_ms) / span,
                },
            }));
        }
        if let Some(last) = self.cpu.last() {
            events.push(json!({
                "ph": "C", "cat": CPU_CAT, "name": CPU_COUNTER, "pid": 1, "ts": last.at_ms * 1e3,
                "args": {VCPU_ARG: 0.0, QEMU_ARG: 0.0},
            }));
        }
        json!({"traceEvents": events, "displayTimeUnit": "ms"})
    }

    /// Reads back a trace that [`Profile::chrome_trace`] wrote: its phases
    /// (where they ended) and its kernel calls.
    pub fn from_chrome_trace(trace: &serde_json::Value) -> Result<Profile, TraceError> {
        let events = trace["traceEvents"].as_array().ok_or(TraceError::NotATrace)?;
        let mut profile = Profile::new(Instant::now());
        let mut load = Vec::new();
        for (index, e) in events.iter().enumerate() {
            if e["ph"] == "C" && e["cat"] == CPU_CAT {
                let number = |field: &'static str, value: &serde_json::Value| {
                    value.as_f64().ok_or_else(|| TraceError::BadEvent {
                        index,
                        name: CPU_COUNTER.to_owned(),
                        field,
                    })
                };
                load.push((
                    number("ts", &e["ts"])? / 1e3,
                    number("args.vCPU %", &e["args"][VCPU_ARG])?,
                    number("args.QEMU %", &e["args"][QEMU_ARG])?,
                ));
                continue;
            }
            if e["ph"] != "X" {
                continue;
            }
            let name = e["name"].as_str().unwrap_or_default();
            let number = |field: &'static str| {
                e[field].as_f64().ok_or_else(|| TraceError::BadEvent {
                    index,
                    name: name.to_owned(),
                    field,
                })
            };
            let (ts_ms, dur_ms) = (number("ts")? / 1e3, number("dur")? / 1e3);
            let cat = e["cat"].as_str().unwrap_or_default();
            let kind = match cat {
                INITCALL_CAT => Some(CallKind::Initcall),
                PROBE_CAT => Some(CallKind::Probe),
                _ => None,
            };
            if cat == AGENT_CAT {
                profile.agent.push(AgentSpan {
                    name: name.to_owned(),
                    start_ms: ts_ms,
                    duration_ms: dur_ms,
                });
                continue;
            }
            if let Some(kind) = kind {
                profile.kernel.push(KernelSpan {
                    name: name.to_owned(),
                    kind,
                    start_ms: ts_ms,
                    duration_ms: dur_ms,
                    returned: e["args"]["returned"].as_i64().unwrap_or_default(),
                });
                continue;
            }
            // Traces written before phases had a category: the host and
            // guest tracks.
            let clock = match (cat, e["args"]["clock"].as_str(), e["tid"].as_u64()) {
                (PHASE_CAT, Some("guest"), _) | ("", _, Some(2)) => Clock::Guest,
                (PHASE_CAT, _, _) | ("", _, Some(1)) => Clock::Host,
                _ => continue,
            };
            profile.phases.push(Phase {
                name: name.to_owned(),
                at_ms: ts_ms + dur_ms,
                clock,
            });
        }
        if profile.phases.is_empty() {
            return Err(TraceError::NoPhases);
        }
        profile.cpu = cpu_from_load(load);
        Ok(profile)
    }
}

/// The trace category of the boot phases.
const PHASE_CAT: &str = "phase";
/// The trace category of the kernel's initcalls.
const INITCALL_CAT: &str = "initcall";
/// The trace category of the kernel's driver probes.
const PROBE_CAT: &str = "probe";
/// The trace track of the kernel's initcalls.
const KERNEL_TID: u64 = 3;
/// The trace category of vminitd's spans.
const AGENT_CAT: &str = "vminitd";
/// The trace track of vminitd's spans.
const AGENT_TID: u64 = 4;

/// The trace category of QEMU's CPU load.
const CPU_CAT: &str = "cpu";
/// The counter of QEMU's CPU load.
const CPU_COUNTER: &str = "QEMU on the host's CPUs";
/// The counter's series: the vCPU threads, and all of QEMU's threads, in
/// percent of one host CPU.
const VCPU_ARG: &str = "vCPU %";
const QEMU_ARG: &str = "QEMU %";

/// The samples behind a trace's load counter: its values (percent of a CPU
/// from one event to the next) summed back into running totals.
fn cpu_from_load(mut load: Vec<(f64, f64, f64)>) -> Vec<CpuSample> {
    load.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut samples: Vec<CpuSample> = Vec::with_capacity(load.len());
    for (i, &(at_ms, _, _)) in load.iter().enumerate() {
        let (vcpu_ms, qemu_ms) = match i {
            0 => (0.0, 0.0),
            i => {
                let (prev_at, vcpu_pct, qemu_pct) = load[i - 1];
                let prev = samples[i - 1];
                let span = at_ms - prev_at;
                (
                    prev.vcpu_ms + vcpu_pct / 100.0 * span,
                    prev.qemu_ms + qemu_pct / 100.0 * span,
                )
            }
        };
        samples.push(CpuSample {
            at_ms,
            vcpu_ms,
            qemu_ms,
        });
    }
    samples
}

/// A guest clock reading on the host axis, given the anchor: the host time
/// (ms) at which the guest's clock read the anchor's nanoseconds.
fn guest_to_host((anchor_ms, guest_ns): (f64, u64), ns: u64) -> f64 {
    anchor_ms - (guest_ns as f64 - ns as f64) / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::BootPhase;

    #[test]
    fn guest_phases_land_on_the_host_axis() {
        let start = Instant::now();
        let mut p = Profile::new(start);
        p.mark_at("VMM spawned", start + Duration::from_millis(5));
        let boot = BootTimeline {
            phases: vec![
                BootPhase {
                    name: "entered".into(),
                    boottime_ns: 900_000_000,
                },
                BootPhase {
                    name: "listening".into(),
                    boottime_ns: 902_000_000,
                },
            ],
            spans: Vec::new(),
        };
        // Hello sent at 1000 ms with a 2 ms round trip; the guest said 950 ms.
        p.add_guest(
            &boot,
            950_000_000,
            start + Duration::from_millis(1000),
            Duration::from_millis(2),
        );
        let at = |n: &str| p.get(n).unwrap();
        assert!((at("kernel start") - 51.0).abs() < 1e-6, "{}", at("kernel start"));
        assert!((at("/init entered") - 951.0).abs() < 1e-6);
        assert!((at("agent listening") - 953.0).abs() < 1e-6);
        let names: Vec<String> = p.phases().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["VMM spawned", "kernel start", "/init entered", "agent listening"]
        );
        let table = p.table();
        assert!(table.contains("/init entered") && table.contains("guest"), "{table}");
        let trace = p.chrome_trace();
        let events = trace["traceEvents"].as_array().unwrap();
        assert!(events
            .iter()
            .any(|e| e["ph"] == "X" && e["name"] == "kernel start" && e["tid"] == 2));
    }

    /// Places the guest's clock on `p`'s axis: it read 950 ms at 1001 ms of
    /// host time (the hello sent at 1000 ms, a 2 ms round trip), so the
    /// guest kernel started at 51 ms.
    fn anchor_guest(p: &mut Profile, start: Instant) {
        let boot = BootTimeline {
            phases: vec![BootPhase {
                name: "entered".into(),
                boottime_ns: 900_000_000,
            }],
            spans: Vec::new(),
        };
        p.add_guest(
            &boot,
            950_000_000,
            start + Duration::from_millis(1000),
            Duration::from_millis(2),
        );
    }

    #[test]
    fn initcalls_land_on_the_guest_clock_and_slow_ones_in_the_table() {
        let start = Instant::now();
        let mut p = Profile::new(start);
        let log = "[    0.736014] initcall virtio_blk_init+0x0/0x72 returned 0 after 68004 usecs\n";
        assert_eq!(p.add_kernel_log(log), 0, "no guest clock yet: nothing placed");
        // The kernel started at 51 ms of host time.
        anchor_guest(&mut p, start);
        let log = "\
[    0.034179] initcall hpet_late_init+0x0/0xbb returned -19 after 0 usecs\r
[    0.700000] probe of virtio0 returned 0 after 36000 usecs\r
[    0.736014] initcall virtio_blk_init+0x0/0x72 returned 0 after 68004 usecs\r
vminitd: listening\r
";
        assert_eq!(p.add_kernel_log(log), 3);
        let calls = p.kernel_calls();
        let blk = calls.iter().find(|c| c.name == "virtio_blk_init").unwrap();
        // Called at 736.014 - 68.004 ms of guest time, 51 ms on.
        assert!((blk.start_ms - (51.0 + 668.010)).abs() < 1e-6, "{}", blk.start_ms);
        assert!((blk.duration_ms - 68.004).abs() < 1e-9);
        let table = p.table();
        assert!(table.contains("kernel initcalls: 2 in 68.0 ms"), "{table}");
        assert!(table.contains("virtio_blk_init"), "{table}");
        assert!(
            !table.contains("hpet_late_init"),
            "under 1 ms: only in the trace\n{table}"
        );
        let trace = p.chrome_trace();
        let events = trace["traceEvents"].as_array().unwrap();
        let kernel: Vec<&str> = events
            .iter()
            .filter(|e| e["tid"] == KERNEL_TID && e["ph"] == "X")
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(kernel, ["hpet_late_init", "probe of virtio0", "virtio_blk_init"]);
        let back = Profile::from_chrome_trace(&trace).unwrap();
        assert_eq!(back.kernel_calls().len(), 3);
        assert_eq!(back.phases().len(), p.phases().len());
        let hpet = &back.kernel_calls()[0];
        assert_eq!((hpet.kind, hpet.returned), (CallKind::Initcall, -19));
    }

    #[test]
    fn what_is_not_a_trace_of_ours_is_refused_by_what_is_missing() {
        let err = |v: serde_json::Value| Profile::from_chrome_trace(&v).unwrap_err().to_string();
        assert_eq!(err(json!({"events": []})), "not a Chrome trace: no traceEvents list");
        assert!(err(json!({"traceEvents": []})).starts_with("no boot phases"));
        assert_eq!(
            err(json!({"traceEvents": [{"ph": "X", "name": "VM gone", "cat": "phase", "ts": 1.0}]})),
            "trace event 0 (\"VM gone\") lacks dur"
        );
        // A trace from before phases had a category reads by its tracks.
        let old = json!({"traceEvents": [
            {"ph": "X", "name": "VMM spawned", "pid": 1, "tid": 1, "ts": 0.0, "dur": 5000.0},
            {"ph": "X", "name": "kernel start", "pid": 1, "tid": 2, "ts": 5000.0, "dur": 50000.0},
        ]});
        let p = Profile::from_chrome_trace(&old).unwrap();
        assert_eq!(p.get("kernel start"), Some(55.0));
        assert_eq!(p.phases()[1].clock, Clock::Guest);
    }

    #[test]
    fn vminitd_spans_land_on_the_guest_clock_in_the_table_and_the_trace() {
        let start = Instant::now();
        let mut p = Profile::new(start);
        let span = |name: &str, start_ms: u64, end_ms: u64| agent_proto::Span {
            name: name.into(),
            start_ns: start_ms * 1_000_000,
            end_ns: end_ms * 1_000_000,
        };
        let spans = [span("request start", 960, 990), span("mount root filesystem", 920, 950)];
        // No anchor yet: nothing to place them with.
        assert_eq!(p.add_agent_spans(&spans), 0);
        anchor_guest(&mut p, start);
        assert_eq!(p.add_agent_spans(&spans), 2);
        let placed = p.agent_spans();
        assert_eq!(placed[0].name, "mount root filesystem");
        assert!((placed[0].start_ms - 971.0).abs() < 1e-6, "{placed:?}");
        assert!((placed[1].duration_ms - 30.0).abs() < 1e-6, "{placed:?}");
        let table = p.table();
        assert!(table.contains("vminitd spans: 2"), "{table}");
        assert!(table.contains("request start"), "{table}");
        let trace = p.chrome_trace();
        let back = Profile::from_chrome_trace(&trace).unwrap();
        assert_eq!(back.agent_spans(), placed);
        // Compared with itself, no span changed; with a slower start, it did.
        assert!(compare::compare(&p, &back).contains("no vminitd span changed"));
        let mut slower = back.clone();
        slower.agent[1].duration_ms += 12.0;
        let text = compare::compare(&p, &slower);
        assert!(text.contains("vminitd spans that changed"), "{text}");
        assert!(text.contains("+12.0"), "{text}");
    }

    #[test]
    fn the_vcpus_load_is_in_the_table_and_survives_the_trace() {
        let start = Instant::now();
        let mut p = Profile::new(start);
        p.mark_at("VMM spawned", start + Duration::from_millis(10));
        p.mark_at("agent connected", start + Duration::from_millis(110));
        p.mark_at("process exited", start + Duration::from_millis(210));
        p.mark_at("VM gone", start + Duration::from_millis(300));
        let sample = |at_ms: f64, vcpu_ms: f64, qemu_ms: f64| CpuSample {
            at_ms,
            vcpu_ms,
            qemu_ms,
        };
        // The vCPU busy the first 100 ms, idle half the next 100.
        p.add_cpu_samples(vec![
            sample(10.0, 0.0, 0.0),
            sample(110.0, 100.0, 120.0),
            sample(210.0, 150.0, 190.0),
        ]);
        assert_eq!(
            p.vcpu_load(),
            Some(VcpuLoad {
                vcpu_ms: 150.0,
                qemu_ms: 190.0,
                wall_ms: 200.0
            })
        );
        let table = p.table();
        assert!(table.contains("vCPU busy"), "{table}");
        let line = |name: &str| table.lines().find(|l| l.starts_with(name)).unwrap().to_owned();
        assert!(line("agent connected").ends_with("100%"), "{table}");
        assert!(line("process exited").ends_with("50%"), "{table}");
        assert!(!line("VM gone").ends_with('%'), "past the last sample: {table}");
        assert!(
            table.contains("(200.0 ms): vCPUs on a host CPU 150.0 ms (75%), all its threads 190.0 ms"),
            "{table}"
        );

        let back = Profile::from_chrome_trace(&p.chrome_trace()).unwrap();
        let VcpuLoad {
            vcpu_ms: vcpu,
            qemu_ms: qemu,
            wall_ms: wall,
        } = back.vcpu_load().unwrap();
        assert!(
            (vcpu - 150.0).abs() < 1e-6 && (qemu - 190.0).abs() < 1e-6,
            "{vcpu} {qemu}"
        );
        assert!((wall - 200.0).abs() < 1e-6);

        let without = Profile::new(start);
        assert!(!without.table().contains("vCPU"), "no samples, no column");
    }

    #[test]
    fn a_load_counter_without_its_values_is_refused_by_name() {
        let trace = json!({"traceEvents": [
            {"ph": "X", "cat": "phase", "name": "VMM spawned", "pid": 1, "tid": 1, "ts": 0.0, "dur": 5000.0},
            {"ph": "C", "cat": "cpu", "name": "QEMU on the host's CPUs", "pid": 1, "ts": 5000.0, "args": {"QEMU %": 3.0}},
        ]});
        let err = Profile::from_chrome_trace(&trace).unwrap_err().to_string();
        assert!(err.contains("vCPU %"), "{err}");
    }
}
