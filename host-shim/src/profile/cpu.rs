//! QEMU's use of the host's CPUs while a profiled VM runs: whether the
//! guest computes or waits.
//!
//! Every [`SAMPLE_EVERY`] a thread of vmshim reads each QEMU thread's time
//! on a CPU from `/proc/PID/task/TID/schedstat` (nanoseconds, the
//! scheduler's own count). QEMU names its vCPU threads `CPU N/TCG` or
//! `CPU N/KVM` (`ALL CPUs/TCG` where one thread runs them all, as under
//! `-icount`) when started with `-name ...,debug-threads=on`, which vmshim
//! passes. A vCPU busy through a phase is a guest computing (under TCG,
//! QEMU translating and running its code); a vCPU idle through one is a
//! guest waiting, for the host's next frame or for a device. Pipelining
//! round trips shortens only the second kind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the sampler reads QEMU's threads.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// What QEMU's threads had run at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuSample {
    /// When, in milliseconds since vmshim started.
    pub at_ms: f64,
    /// The vCPU threads' time on a host CPU so far, all vCPUs summed, in
    /// milliseconds.
    pub vcpu_ms: f64,
    /// All of QEMU's threads' time on a host CPU so far, in milliseconds
    /// (a thread that ended counts until its last sample).
    pub qemu_ms: f64,
}

/// A thread sampling one QEMU process until [`Sampler::finish`].
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<CpuSample>>>,
}

impl Sampler {
    /// Starts sampling process `pid`, spawned just before: its first
    /// sample is now, with nothing run yet. Sample times are counted from
    /// `origin` (the profile's start).
    pub fn start(pid: u32, origin: Instant) -> Sampler {
        let spawned = CpuSample {
            at_ms: origin.elapsed().as_secs_f64() * 1e3,
            vcpu_ms: 0.0,
            qemu_ms: 0.0,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("qemu-cpu".into())
            .spawn(move || {
                let mut totals = Totals::default();
                let mut samples = vec![spawned];
                // One more sample after the stop: the last phase's end.
                loop {
                    let done = stopped.load(Ordering::Relaxed);
                    if !totals.read(pid) {
                        break;
                    }
                    samples.push(CpuSample {
                        at_ms: origin.elapsed().as_secs_f64() * 1e3,
                        vcpu_ms: totals.vcpu_ns as f64 / 1e6,
                        qemu_ms: totals.all_ns as f64 / 1e6,
                    });
                    if done {
                        break;
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
                samples
            })
            .ok();
        Sampler { stop, thread }
    }

    /// Stops sampling (after one last sample) and returns the samples; none
    /// where the thread could not be started, the spawn's alone where the
    /// process was already gone.
    pub fn finish(mut self) -> Vec<CpuSample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Running totals over QEMU's threads, which come and go (its worker
/// pool): each thread's growth since it was last read is added, so a
/// thread that ends takes nothing already counted with it.
#[derive(Debug, Default)]
struct Totals {
    last: HashMap<u32, u64>,
    vcpu_ns: u64,
    all_ns: u64,
}

impl Totals {
    /// Reads every thread of `pid`; false when the process is gone.
    fn read(&mut self, pid: u32) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else {
                continue;
            };
            // A thread that ended between the listing and the read is
            // skipped: its time up to its last sample is counted.
            let Some(ns) = read_on_cpu_ns(&task.path()) else {
                continue;
            };
            let grown = ns.saturating_sub(self.last.insert(tid, ns).unwrap_or(0));
            self.all_ns += grown;
            if is_vcpu(&std::fs::read_to_string(task.path().join("comm")).unwrap_or_default()) {
                self.vcpu_ns += grown;
            }
        }
        true
    }
}

/// A thread's time on a CPU: the first field of its `schedstat`.
fn read_on_cpu_ns(task: &std::path::Path) -> Option<u64> {
    parse_schedstat(&std::fs::read_to_string(task.join("schedstat")).ok()?)
}

/// The first field of a `schedstat` line (`ON_CPU_NS WAIT_NS SLICES`).
fn parse_schedstat(line: &str) -> Option<u64> {
    line.split_whitespace().next()?.parse().ok()
}

/// QEMU's name for a vCPU thread with `debug-threads=on`: `CPU 0/TCG`,
/// `CPU 1/KVM`, and `ALL CPUs/TCG` for the one thread that runs every vCPU
/// in turn (TCG with `-icount`).
fn is_vcpu(comm: &str) -> bool {
    let comm = comm.trim_end();
    comm.starts_with("ALL CPUs/")
        || comm
            .strip_prefix("CPU ")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The CPU time the samples give between `from_ms` and `to_ms` (vCPUs,
/// all threads), interpolated between the samples around each end; `None`
/// where the samples do not cover the interval.
pub fn between(samples: &[CpuSample], from_ms: f64, to_ms: f64) -> Option<(f64, f64)> {
    let (a, b) = (at(samples, from_ms)?, at(samples, to_ms)?);
    Some((b.vcpu_ms - a.vcpu_ms, b.qemu_ms - a.qemu_ms))
}

/// The totals at `t_ms`, interpolated; `None` outside the samples (a
/// sample's own time, to a tenth of a millisecond, counts as inside).
fn at(samples: &[CpuSample], t_ms: f64) -> Option<CpuSample> {
    const SLACK_MS: f64 = 0.1;
    let first = samples.first()?;
    let last = samples.last()?;
    if t_ms < first.at_ms - SLACK_MS || t_ms > last.at_ms + SLACK_MS {
        return None;
    }
    let t_ms = t_ms.clamp(first.at_ms, last.at_ms);
    let i = samples.partition_point(|s| s.at_ms <= t_ms);
    let (lo, hi) = match i {
        0 => (first, first),
        i if i >= samples.len() => (last, last),
        i => (&samples[i - 1], &samples[i]),
    };
    let span = hi.at_ms - lo.at_ms;
    let f = if span > 0.0 { (t_ms - lo.at_ms) / span } else { 0.0 };
    Some(CpuSample {
        at_ms: t_ms,
        vcpu_ms: lo.vcpu_ms + f * (hi.vcpu_ms - lo.vcpu_ms),
        qemu_ms: lo.qemu_ms + f * (hi.qemu_ms - lo.qemu_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: f64, vcpu_ms: f64, qemu_ms: f64) -> CpuSample {
        CpuSample {
            at_ms,
            vcpu_ms,
            qemu_ms,
        }
    }

    #[test]
    fn vcpu_threads_are_told_by_qemus_names() {
        assert!(is_vcpu("CPU 0/TCG\n"));
        assert!(is_vcpu("CPU 12/KVM"));
        assert!(is_vcpu("ALL CPUs/TCG\n"));
        assert!(!is_vcpu("qemu-system-x86\n"));
        assert!(!is_vcpu("worker"));
        assert!(!is_vcpu("CPU /TCG"));
        assert!(!is_vcpu("CPU x/TCG"));
    }

    #[test]
    fn a_schedstat_line_gives_its_on_cpu_time() {
        assert_eq!(parse_schedstat("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn time_between_two_moments_is_interpolated_and_bounded_by_the_samples() {
        let s = [
            sample(10.0, 0.0, 1.0),
            sample(20.0, 10.0, 12.0),
            sample(30.0, 12.0, 15.0),
        ];
        assert_eq!(between(&s, 10.0, 30.0), Some((12.0, 14.0)));
        let (vcpu, qemu) = between(&s, 15.0, 25.0).unwrap();
        assert!((vcpu - 6.0).abs() < 1e-9 && (qemu - 7.0).abs() < 1e-9, "{vcpu} {qemu}");
        assert_eq!(between(&s, 5.0, 20.0), None, "before the first sample");
        assert_eq!(between(&s, 20.0, 31.0), None, "after the last");
        assert_eq!(between(&[], 0.0, 1.0), None);
    }

    #[test]
    fn a_running_process_is_sampled_until_finished() {
        // This test's own process: its threads are no vCPUs, and it runs.
        let sampler = Sampler::start(std::process::id(), Instant::now());
        let until = Instant::now() + Duration::from_millis(60);
        let mut spin = 0u64;
        while Instant::now() < until {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let samples = sampler.finish();
        assert!(samples.len() >= 3, "{samples:?}");
        let (first, last) = (samples[0], samples[samples.len() - 1]);
        assert!(last.at_ms > first.at_ms);
        assert!(last.qemu_ms - first.qemu_ms > 20.0, "60 ms of spinning: {samples:?}");
        assert_eq!(last.vcpu_ms, 0.0);
        assert!(samples.windows(2).all(|w| w[1].qemu_ms >= w[0].qemu_ms));
    }

    #[test]
    fn a_process_that_is_gone_gives_the_spawns_sample_alone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let samples = Sampler::start(pid, Instant::now()).finish();
        assert_eq!(samples.len(), 1, "the spawn's alone: {samples:?}");
        assert_eq!((samples[0].vcpu_ms, samples[0].qemu_ms), (0.0, 0.0));
    }
}
