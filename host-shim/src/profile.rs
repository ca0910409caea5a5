//! The boot profile: host and guest phases on one time axis.
//!
//! Host phases are `Instant`s. Guest phases are `CLOCK_BOOTTIME` readings of
//! the guest kernel; the agent's hello answer carries its clock (`now_ns`),
//! taken about half a round trip after the host sent the hello, which anchors
//! the guest's clock on the host's axis. Guest boottime 0 is then the moment
//! the guest kernel started.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use agent_proto::BootTimeline;
use serde_json::json;

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

/// Collects the phases of one run.
#[derive(Debug, Clone)]
pub struct Profile {
    start: Instant,
    phases: Vec<Phase>,
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
        }
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
        let to_host = |ns: u64| anchor_ms - (guest_now_ns as f64 - ns as f64) / 1e6;
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

    /// A table: each phase, when it ended, and how long since the previous.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<24} {:>10} {:>10}  clock", "phase", "at ms", "+ms");
        let mut prev = 0.0;
        for p in self.phases() {
            let clock = match p.clock {
                Clock::Host => "host",
                Clock::Guest => "guest",
            };
            let _ = writeln!(
                out,
                "{:<24} {:>10.1} {:>10.1}  {clock}",
                p.name,
                p.at_ms,
                p.at_ms - prev
            );
            prev = p.at_ms;
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
        ];
        let mut prev = 0.0f64;
        for p in self.phases() {
            let tid = if p.clock == Clock::Host { 1 } else { 2 };
            let start = prev.min(p.at_ms);
            events.push(json!({
                "ph": "X", "name": p.name, "pid": 1, "tid": tid,
                "ts": start * 1e3, "dur": (p.at_ms - start) * 1e3,
            }));
            events.push(json!({"ph": "i", "s": "t", "name": p.name, "pid": 1, "tid": tid, "ts": p.at_ms * 1e3}));
            prev = p.at_ms;
        }
        json!({"traceEvents": events, "displayTimeUnit": "ms"})
    }
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
}
