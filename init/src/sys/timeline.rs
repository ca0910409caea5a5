//! The boot timeline: when each phase of the agent's start ended, on
//! `CLOCK_BOOTTIME` (nanoseconds since the kernel booted, suspend included),
//! the clock the host uses to place the guest's start on its own time axis.

use agent_proto::{BootPhase, BootTimeline};

/// `CLOCK_BOOTTIME` now, in nanoseconds.
pub fn boottime_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_BOOTTIME exists
    // on every kernel vminitd supports (2.6.39+).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The phases recorded so far, in order.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    phases: Vec<BootPhase>,
}

impl Timeline {
    /// Starts the timeline with the `entered` phase: call it first thing.
    pub fn entered() -> Timeline {
        let mut timeline = Timeline {
            phases: Vec::with_capacity(4),
        };
        timeline.mark("entered");
        timeline
    }

    /// Records that the phase `name` ended now.
    pub fn mark(&mut self, name: &str) {
        self.phases.push(BootPhase {
            name: name.to_owned(),
            boottime_ns: boottime_ns(),
        });
    }

    /// Milliseconds from `entered` to the last phase.
    pub fn elapsed_ms(&self) -> f64 {
        match (self.phases.first(), self.phases.last()) {
            (Some(first), Some(last)) => last.boottime_ns.saturating_sub(first.boottime_ns) as f64 / 1e6,
            _ => 0.0,
        }
    }

    /// The timeline as the protocol carries it.
    pub fn to_boot(&self) -> BootTimeline {
        BootTimeline {
            phases: self.phases.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_in_order_and_monotonic() {
        let mut t = Timeline::entered();
        t.mark("mounts_done");
        t.mark("listening");
        let boot = t.to_boot();
        let names: Vec<_> = boot.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["entered", "mounts_done", "listening"]);
        assert!(boot.phases.windows(2).all(|w| w[0].boottime_ns <= w[1].boottime_ns));
        assert!(boot.get("entered").unwrap() > 0);
        assert!(t.elapsed_ms() >= 0.0);
    }
}
