//! Two boot profiles side by side (`vmshim profile A.json B.json`): which
//! phase grew, and which of the kernel's initcalls.
//!
//! A phase's time is the time since the phase before it ended, in its
//! own run (the `+ms` column of [`Profile::table`]): the phase that grew
//! is the one whose `+ms` grew.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::initcall::CallKind;
use super::Profile;

/// The initcalls [`compare`] lists: those whose time changed by at least
/// this much.
pub const MIN_INITCALL_DELTA_MS: f64 = 1.0;

/// One phase in two runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseDelta {
    /// The phase's name.
    pub name: String,
    /// Its time since the previous phase in the first run (`None`: not
    /// in that run).
    pub a_ms: Option<f64>,
    /// The same in the second run.
    pub b_ms: Option<f64>,
}

impl PhaseDelta {
    /// How much longer it took in the second run (`None` where it is in
    /// one run only).
    pub fn delta_ms(&self) -> Option<f64> {
        Some(self.b_ms? - self.a_ms?)
    }
}

/// Each phase's time since the previous one, in time order.
fn spans(p: &Profile) -> Vec<(String, f64)> {
    let mut prev = 0.0;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for phase in p.phases() {
        let span = phase.at_ms - prev;
        prev = phase.at_ms;
        // A name that comes back (a phase recorded twice) counts once,
        // as it is matched by name.
        if seen.insert(phase.name.clone()) {
            out.push((phase.name, span));
        }
    }
    out
}

/// The phases of both runs, in the first run's order (the second run's
/// own phases after them), with each one's time in each run.
pub fn phase_deltas(a: &Profile, b: &Profile) -> Vec<PhaseDelta> {
    let (a, b) = (spans(a), spans(b));
    let in_b: BTreeMap<&str, f64> = b.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let mut out: Vec<PhaseDelta> = a
        .iter()
        .map(|(name, span)| PhaseDelta {
            name: name.clone(),
            a_ms: Some(*span),
            b_ms: in_b.get(name.as_str()).copied(),
        })
        .collect();
    for (name, span) in &b {
        if !a.iter().any(|(n, _)| n == name) {
            out.push(PhaseDelta {
                name: name.clone(),
                a_ms: None,
                b_ms: Some(*span),
            });
        }
    }
    out
}

/// Durations (ms) summed by name: a name that comes back adds up.
fn by_name<'a>(spans: impl Iterator<Item = (&'a str, f64)>) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, ms) in spans {
        *out.entry(name.to_owned()).or_insert(0.0) += ms;
    }
    out
}

/// Each initcall's time (ms) by name.
fn initcalls(p: &Profile) -> BTreeMap<String, f64> {
    by_name(
        p.kernel
            .iter()
            .filter(|c| c.kind == CallKind::Initcall)
            .map(|c| (c.name.as_str(), c.duration_ms)),
    )
}

/// The names whose time changed by [`MIN_INITCALL_DELTA_MS`] or more
/// between `a` and `b` (absent in one: `None` there), biggest change first.
fn changed<'a>(a: &'a BTreeMap<String, f64>, b: &'a BTreeMap<String, f64>) -> Vec<(&'a str, Option<f64>, Option<f64>)> {
    let delta = |(_, x, y): &(&str, Option<f64>, Option<f64>)| (y.unwrap_or(0.0) - x.unwrap_or(0.0)).abs();
    let mut changed: Vec<(&str, Option<f64>, Option<f64>)> = a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|name| (name.as_str(), a.get(name).copied(), b.get(name).copied()))
        .filter(|c| delta(c) >= MIN_INITCALL_DELTA_MS)
        .collect();
    changed.sort_by(|x, y| delta(y).total_cmp(&delta(x)));
    changed
}

/// The comparison as text: the phase table of both runs with the
/// difference, the phase that grew most, the end-to-end time, and the
/// initcalls whose time changed by [`MIN_INITCALL_DELTA_MS`] or more.
pub fn compare(a: &Profile, b: &Profile) -> String {
    let mut out = String::new();
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let signed = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:+.1}"));
    let _ = writeln!(out, "{:<24} {:>10} {:>10} {:>10}", "phase", "A +ms", "B +ms", "B-A ms");
    let deltas = phase_deltas(a, b);
    for d in &deltas {
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>10} {:>10}",
            d.name,
            cell(d.a_ms),
            cell(d.b_ms),
            signed(d.delta_ms())
        );
    }
    let end = |p: &Profile| p.phases().last().map(|p| p.at_ms);
    let (end_a, end_b) = (end(a), end(b));
    let _ = writeln!(
        out,
        "{:<24} {:>10} {:>10} {:>10}",
        "end to end",
        cell(end_a),
        cell(end_b),
        signed(end_a.zip(end_b).map(|(a, b)| b - a))
    );
    match (a.vcpu_load(), b.vcpu_load()) {
        (Some(la), Some(lb)) => {
            let _ = writeln!(
                out,
                "vCPUs on a host CPU, VMM spawned -> process exited: A {:.1} ms ({:.0}%), B {:.1} ms ({:.0}%), {:+.1} ms",
                la.vcpu_ms,
                la.busy_percent(),
                lb.vcpu_ms,
                lb.busy_percent(),
                lb.vcpu_ms - la.vcpu_ms
            );
        }
        (None, None) => {}
        (la, _) => {
            let which = if la.is_none() { "A" } else { "B" };
            let _ = writeln!(out, "vCPU load: not sampled in {which}, not compared");
        }
    }
    let grew = deltas
        .iter()
        .filter_map(|d| Some((d, d.delta_ms()?)))
        .max_by(|x, y| x.1.total_cmp(&y.1));
    match grew {
        Some((d, delta)) if delta > 0.0 => {
            let _ = writeln!(out, "grew most: {} ({delta:+.1} ms)", d.name);
        }
        _ => {
            let _ = writeln!(out, "no phase grew");
        }
    }
    agent_span_changes(a, b, &mut out);
    let (ia, ib) = (initcalls(a), initcalls(b));
    if ia.is_empty() || ib.is_empty() {
        if !(ia.is_empty() && ib.is_empty()) {
            let which = if ia.is_empty() { "A" } else { "B" };
            let _ = writeln!(out, "kernel initcalls: none in {which}, not compared");
        }
        return out;
    }
    let total = |m: &BTreeMap<String, f64>| m.values().sum::<f64>();
    let count = |p: &Profile| p.kernel.iter().filter(|c| c.kind == CallKind::Initcall).count();
    let _ = writeln!(
        out,
        "kernel initcalls: A {} in {:.1} ms, B {} in {:.1} ms ({:+.1})",
        count(a),
        total(&ia),
        count(b),
        total(&ib),
        total(&ib) - total(&ia)
    );
    let changed = changed(&ia, &ib);
    if changed.is_empty() {
        let _ = writeln!(out, "no initcall changed by {MIN_INITCALL_DELTA_MS} ms or more");
        return out;
    }
    let _ = writeln!(out, "initcalls that changed by {MIN_INITCALL_DELTA_MS} ms or more:");
    for (name, x, y) in changed {
        let delta = y.unwrap_or(0.0) - x.unwrap_or(0.0);
        let _ = writeln!(out, "  {:<32} {:>8} {:>8} {:>+8.1}", name, cell(x), cell(y), delta);
    }
    out
}

/// The spans of vminitd's work whose time changed by
/// [`MIN_INITCALL_DELTA_MS`] or more, matched by name, biggest change
/// first.
fn agent_span_changes(a: &Profile, b: &Profile, out: &mut String) {
    let sums = |p: &Profile| by_name(p.agent.iter().map(|s| (s.name.as_str(), s.duration_ms)));
    let (sa, sb) = (sums(a), sums(b));
    if sa.is_empty() || sb.is_empty() {
        return;
    }
    let changed = changed(&sa, &sb);
    if changed.is_empty() {
        let _ = writeln!(out, "no vminitd span changed by {MIN_INITCALL_DELTA_MS} ms or more");
        return;
    }
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let _ = writeln!(out, "vminitd spans that changed by {MIN_INITCALL_DELTA_MS} ms or more:");
    for (name, x, y) in changed {
        let delta = y.unwrap_or(0.0) - x.unwrap_or(0.0);
        let _ = writeln!(out, "  {:<44} {:>8} {:>8} {:>+8.1}", name, cell(x), cell(y), delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_proto::{BootPhase, BootTimeline};
    use std::time::{Duration, Instant};

    /// A run: host phases at the given times, the guest's `/init` at
    /// `init_ms` of guest time, and a console log with two initcalls.
    fn run(spawned_ms: u64, init_ms: u64, blk_usecs: u64, net_usecs: u64) -> Profile {
        let start = Instant::now();
        let mut p = Profile::new(start);
        p.mark_at("VMM spawned", start + Duration::from_millis(spawned_ms));
        let boot = BootTimeline {
            phases: vec![BootPhase {
                name: "entered".into(),
                boottime_ns: init_ms * 1_000_000,
            }],
            spans: Vec::new(),
        };
        // The kernel started 50 ms after QEMU was spawned; the hello is
        // answered 10 ms after /init, with no round trip.
        let hello_at = spawned_ms + 50 + init_ms + 10;
        p.add_guest(
            &boot,
            (init_ms + 10) * 1_000_000,
            start + Duration::from_millis(hello_at),
            Duration::ZERO,
        );
        p.mark_at("agent connected", start + Duration::from_millis(hello_at));
        let log = format!(
            "[    0.100000] initcall virtio_blk_init+0x0/0x72 returned 0 after {blk_usecs} usecs\n\
             [    0.200000] initcall virtio_net_driver_init+0x0/0x93 returned 0 after {net_usecs} usecs\n"
        );
        assert_eq!(p.add_kernel_log(&log), 2);
        p
    }

    #[test]
    fn the_phase_that_grew_is_named() {
        let a = run(20, 500, 40_000, 16_000);
        let b = run(20, 560, 100_000, 16_200);
        let deltas = phase_deltas(&a, &b);
        let names: Vec<&str> = deltas.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(
            names,
            ["VMM spawned", "kernel start", "/init entered", "agent connected"]
        );
        let init = &deltas[2];
        assert_eq!((init.a_ms, init.b_ms), (Some(500.0), Some(560.0)));
        assert_eq!(init.delta_ms(), Some(60.0));
        let text = compare(&a, &b);
        assert!(text.contains("grew most: /init entered (+60.0 ms)"), "{text}");
        assert!(text.contains("end to end"), "{text}");
        // Only the initcall that changed by a millisecond or more.
        assert!(text.contains("virtio_blk_init"), "{text}");
        assert!(!text.contains("virtio_net_driver_init"), "{text}");
        assert!(text.contains("+60.0"), "{text}");
        assert!(
            text.contains("kernel initcalls: A 2 in 56.0 ms, B 2 in 116.2 ms (+60.2)"),
            "{text}"
        );
    }

    #[test]
    fn a_trace_compares_as_the_profile_it_was_written_from() {
        let a = run(20, 500, 40_000, 16_000);
        let b = run(25, 480, 40_000, 16_000);
        let read = |p: &Profile| Profile::from_chrome_trace(&p.chrome_trace()).unwrap();
        let (ra, rb) = (read(&a), read(&b));
        for (x, y) in phase_deltas(&a, &b).iter().zip(phase_deltas(&ra, &rb)) {
            assert_eq!(x.name, y.name);
            let close = |u: Option<f64>, v: Option<f64>| (u.unwrap() - v.unwrap()).abs() < 1e-6;
            assert!(close(x.a_ms, y.a_ms) && close(x.b_ms, y.b_ms), "{x:?} {y:?}");
        }
        let text = compare(&ra, &rb);
        assert!(text.contains("grew most: VMM spawned (+5.0 ms)"), "{text}");
        assert!(text.contains("no initcall changed"), "{text}");
    }

    #[test]
    fn phases_of_one_run_only_are_shown_with_a_dash() {
        let a = run(20, 500, 40_000, 16_000);
        let mut b = run(20, 500, 40_000, 16_000);
        b.mark_at("process started", Instant::now() + Duration::from_secs(10));
        let deltas = phase_deltas(&a, &b);
        let last = deltas.last().unwrap();
        assert_eq!(last.name, "process started");
        assert_eq!(last.a_ms, None);
        assert_eq!(last.delta_ms(), None);
        let text = compare(&a, &b);
        let line = text.lines().find(|l| l.starts_with("process started")).unwrap();
        assert!(line.split_whitespace().nth(2) == Some("-"), "{line}");
        assert!(text.contains("no phase grew"), "{text}");
    }

    #[test]
    fn the_vcpus_load_is_compared_where_both_runs_sampled_it() {
        use crate::profile::cpu::CpuSample;
        let sampled = |busy_ms: f64| {
            let mut p = run(20, 500, 40_000, 16_000);
            let exited = p.get("agent connected").unwrap() + 100.0;
            p.mark_at("process exited", p.start() + Duration::from_secs_f64(exited / 1e3));
            p.add_cpu_samples(vec![
                CpuSample {
                    at_ms: 20.0,
                    vcpu_ms: 0.0,
                    qemu_ms: 0.0,
                },
                CpuSample {
                    at_ms: exited,
                    vcpu_ms: busy_ms,
                    qemu_ms: busy_ms + 5.0,
                },
            ]);
            p
        };
        let (a, b) = (sampled(300.0), sampled(450.0));
        let text = compare(&a, &b);
        assert!(
            text.contains(
                "vCPUs on a host CPU, VMM spawned -> process exited: A 300.0 ms (45%), B 450.0 ms (68%), +150.0 ms"
            ),
            "{text}"
        );
        let text = compare(&a, &run(20, 500, 40_000, 16_000));
        assert!(text.contains("vCPU load: not sampled in B, not compared"), "{text}");
        assert!(!compare(&run(20, 500, 1, 1), &run(20, 500, 1, 1)).contains("vCPU"));
    }
}
