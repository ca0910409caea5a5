//! The boot timeline: when each phase of the agent's start ended, on
//! `CLOCK_BOOTTIME` (nanoseconds since the kernel booted, suspend included),
//! the clock the host uses to place the guest's start on its own time axis.
//! Beside the phases, the spans of the agent's own work ([`begin`]): the
//! boot's steps, the first requests, the first processes' forks, kept for
//! `Op::Timeline` (at most [`MAX_SPANS`], the first ones).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use agent_proto::{BootPhase, BootTimeline, Span, MAX_SPANS};

/// The spans recorded so far.
static SPANS: Mutex<Vec<Span>> = Mutex::new(Vec::new());

/// Set once [`MAX_SPANS`] are kept: from then on a span costs a load, not
/// a lock (requests begin one each for the agent's whole life).
static FULL: AtomicBool = AtomicBool::new(false);

fn spans_lock() -> std::sync::MutexGuard<'static, Vec<Span>> {
    SPANS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A span of the agent's work, recorded when dropped.
#[must_use = "the span ends when this is dropped"]
pub struct SpanGuard {
    /// `None` once [`MAX_SPANS`] are kept: nothing is recorded.
    name: Option<String>,
    start_ns: u64,
}

/// Begins the span `name` (made only while there is room for it).
pub fn begin(name: impl FnOnce() -> String) -> SpanGuard {
    let room = !FULL.load(Ordering::Relaxed);
    SpanGuard {
        name: room.then(name),
        start_ns: boottime_ns(),
    }
}

impl Drop for SpanGuard {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            let end_ns = boottime_ns();
            let mut spans = spans_lock();
            if spans.len() < MAX_SPANS {
                spans.push(Span {
                    name,
                    start_ns: self.start_ns,
                    end_ns,
                });
            }
            if spans.len() >= MAX_SPANS {
                FULL.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// The spans recorded so far, in the order they began.
pub fn spans() -> Vec<Span> {
    let mut spans = spans_lock().clone();
    spans.sort_by_key(|s| s.start_ns);
    spans
}

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
            spans: Vec::new(),
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

    #[test]
    fn a_span_is_recorded_when_it_ends_and_no_more_than_the_cap() {
        {
            let _span = begin(|| "test span".into());
            assert!(!spans().iter().any(|s| s.name == "test span"));
        }
        let span = spans().into_iter().find(|s| s.name == "test span").unwrap();
        assert!(span.start_ns <= span.end_ns);
        for i in 0..MAX_SPANS + 10 {
            drop(begin(|| format!("filler {i}")));
        }
        assert_eq!(spans().len(), MAX_SPANS);
        // Past the cap the name is not even made.
        let guard = begin(|| unreachable!("no room: the name is not made"));
        assert!(guard.name.is_none());
    }
}
