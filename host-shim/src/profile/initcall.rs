//! The kernel's initcalls, read from the guest's console log.
//!
//! With `initcall_debug` on its command line (and a console log level that
//! lets debug messages through) the kernel prints, for every initcall and
//! every driver probe, how long it took, stamped with its own clock:
//!
//! ```text
//! [    0.048779] initcall serial8250_init+0x0/0x137 returned 0 after 369 usecs
//! [    0.050580] probe of virtio0 returned 0 after 1187 usecs
//! ```
//!
//! The stamp is the kernel's `local_clock()`, which starts with the kernel
//! as the guest's `CLOCK_BOOTTIME` does: the calls land on the guest clock
//! of the boot profile as they are.
//!
//! The `after N usecs` of an initcall is read on the kernel's timekeeping
//! clock, which until `clocksource_done_booting` (an `fs_initcall`) ticks
//! in jiffies: the early initcalls all read 0 or 4000 (HZ=250). Where the
//! `calling  NAME @ PID` line was logged too, the initcall's time is
//! taken between the stamps of the two lines instead (which counts the
//! printing of the first line, a few microseconds).

/// The kernel command line words that make the kernel report its
/// initcalls on the console: `initcall_debug`, and `loglevel=8` for its
/// debug-level messages to pass `quiet`.
pub const KERNEL_CMDLINE: &[&str] = &["initcall_debug", "loglevel=8"];

/// What the kernel timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// An initcall (`initcall NAME returned R after N usecs`).
    Initcall,
    /// A driver's probe of a device (`probe of DEVICE returned R after N
    /// usecs`), inside the initcall that registered the driver.
    Probe,
}

/// One initcall or probe, on the guest's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCall {
    /// The initcall's function (`serial8250_init`) or `probe of DEVICE`.
    pub name: String,
    /// An initcall or a probe.
    pub kind: CallKind,
    /// When it was called, in nanoseconds since the kernel started (the
    /// stamp of its `calling` line, or its end less its reported time).
    pub start_ns: u64,
    /// When it returned, in nanoseconds since the kernel started (the
    /// printk stamp of its report).
    pub end_ns: u64,
    /// The time the kernel reported (`after N usecs`), in nanoseconds.
    pub reported_ns: u64,
    /// What it returned (0, or a negative errno such as -19, no device).
    pub returned: i64,
}

impl KernelCall {
    /// How long it ran, in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

/// One line of the log that matters here.
enum Line {
    /// `calling  FUNC+OFF/SIZE @ PID`, stamped.
    Calling { symbol: String, at_ns: u64 },
    /// `initcall FUNC+OFF/SIZE returned ...` or `probe of ... returned ...`.
    Returned { symbol: String, call: KernelCall },
}

/// Every initcall and probe report in a console log, in the order of the
/// log. Other lines (the kernel's other messages, vminitd's) are skipped,
/// as are reports cut short or garbled.
pub fn parse(log: &str) -> Vec<KernelCall> {
    let mut calling: Option<(String, u64)> = None;
    let mut out = Vec::new();
    for line in log.lines().filter_map(classify) {
        match line {
            Line::Calling { symbol, at_ns } => calling = Some((symbol, at_ns)),
            Line::Returned { symbol, mut call } => {
                if call.kind == CallKind::Initcall {
                    match calling.take() {
                        Some((called, at_ns)) if called == symbol && at_ns <= call.end_ns => call.start_ns = at_ns,
                        _ => {}
                    }
                }
                out.push(call);
            }
        }
    }
    out
}

/// One report line on its own (its start from its reported time), or
/// `None` for any other line.
pub fn parse_line(line: &str) -> Option<KernelCall> {
    match classify(line)? {
        Line::Returned { call, .. } => Some(call),
        Line::Calling { .. } => None,
    }
}

/// A line's stamp and text, or `None` for an unstamped line.
fn stamped(line: &str) -> Option<(u64, &str)> {
    let line = line.trim_end_matches('\r');
    // The stamp may follow other bytes on the same console line (a
    // process's output without its newline).
    let open = line.find('[')?;
    let rest = &line[open + 1..];
    let close = rest.find(']')?;
    let at_ns = stamp_ns(rest[..close].trim())?;
    Some((at_ns, rest[close + 1..].trim_start()))
}

fn classify(line: &str) -> Option<Line> {
    let (end_ns, text) = stamped(line)?;
    if let Some(tail) = text.strip_prefix("calling  ") {
        let (symbol, tail) = tail.split_once(' ')?;
        tail.strip_prefix("@ ")?;
        return Some(Line::Calling {
            symbol: symbol.to_owned(),
            at_ns: end_ns,
        });
    }
    let (kind, symbol, name, tail) = if let Some(tail) = text.strip_prefix("initcall ") {
        let (symbol, tail) = tail.split_once(' ')?;
        // `serial8250_init+0x0/0x137`: the function without its offset.
        let name = symbol.split_once('+').map_or(symbol, |(name, _)| name);
        (CallKind::Initcall, symbol, name.to_owned(), tail)
    } else if let Some(tail) = text.strip_prefix("probe of ") {
        let (device, tail) = tail.split_once(' ')?;
        (CallKind::Probe, device, format!("probe of {device}"), tail)
    } else {
        return None;
    };
    let tail = tail.strip_prefix("returned ")?;
    let (returned, tail) = tail.split_once(' ')?;
    let usecs = tail.strip_prefix("after ")?.strip_suffix(" usecs")?;
    if symbol.is_empty() {
        return None;
    }
    let reported_ns = usecs.parse::<u64>().ok()?.checked_mul(1000)?;
    Some(Line::Returned {
        symbol: symbol.to_owned(),
        call: KernelCall {
            name,
            kind,
            start_ns: end_ns.saturating_sub(reported_ns),
            end_ns,
            reported_ns,
            returned: returned.parse().ok()?,
        },
    })
}

/// `0.048779` (seconds, microseconds) in nanoseconds.
fn stamp_ns(stamp: &str) -> Option<u64> {
    let (secs, frac) = stamp.split_once('.')?;
    if secs.is_empty() || frac.is_empty() || frac.len() > 9 {
        return None;
    }
    if !secs.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_ns: u64 = format!("{frac:0<9}").parse().ok()?;
    secs.parse::<u64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines of a real boot's console (vminitd's kernel, `initcall_debug
    /// loglevel=8`, QEMU microvm under TCG), with what is between them.
    const LOG: &str = "\
[    0.048395] calling  serial8250_init+0x0/0x137 @ 1\r
[    0.048410] Serial: 8250/16550 driver, 4 ports, IRQ sharing disabled\r
[    0.048456] serial8250: ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A\r
[    0.048756] probe of serial8250 returned 0 after 13 usecs\r
[    0.048779] initcall serial8250_init+0x0/0x137 returned 0 after 369 usecs\r
[    0.034164] calling  hpet_late_init+0x0/0xbb @ 1\r
[    0.034179] initcall hpet_late_init+0x0/0xbb returned -19 after 0 usecs\r
[    0.022205] calling  param_sysfs_init+0x0/0x303 @ 1\r
[    0.024967] initcall param_sysfs_init+0x0/0x303 returned 0 after 4000 usecs\r
[    0.736014] initcall virtio_blk_init+0x0/0x72 returned 0 after 68004 usecs\r
vminitd: listening on vsock:4294967295:1024 (machine mode, ready in 2.5 ms)\r
[    1.044860] clocksource: Switched to clocksource tsc\r
";

    #[test]
    fn initcalls_and_probes_are_read_from_a_real_log() {
        let calls = parse(LOG);
        assert_eq!(
            calls,
            [
                KernelCall {
                    name: "probe of serial8250".into(),
                    kind: CallKind::Probe,
                    start_ns: 48_743_000,
                    end_ns: 48_756_000,
                    reported_ns: 13_000,
                    returned: 0,
                },
                KernelCall {
                    name: "serial8250_init".into(),
                    kind: CallKind::Initcall,
                    start_ns: 48_395_000,
                    end_ns: 48_779_000,
                    reported_ns: 369_000,
                    returned: 0,
                },
                KernelCall {
                    name: "hpet_late_init".into(),
                    kind: CallKind::Initcall,
                    start_ns: 34_164_000,
                    end_ns: 34_179_000,
                    reported_ns: 0,
                    returned: -19,
                },
                KernelCall {
                    name: "param_sysfs_init".into(),
                    kind: CallKind::Initcall,
                    start_ns: 22_205_000,
                    end_ns: 24_967_000,
                    reported_ns: 4_000_000,
                    returned: 0,
                },
                KernelCall {
                    name: "virtio_blk_init".into(),
                    kind: CallKind::Initcall,
                    start_ns: 668_010_000,
                    end_ns: 736_014_000,
                    reported_ns: 68_004_000,
                    returned: 0,
                },
            ]
        );
        // Between the stamps of its two lines: 2.762 ms, where the kernel's
        // jiffies clock read 4 ms.
        assert_eq!(calls[3].duration_ns(), 2_762_000);
        // No `calling` line: its reported time.
        assert_eq!(calls[4].duration_ns(), 68_004_000);
    }

    #[test]
    fn a_calling_line_of_another_initcall_is_not_its_start() {
        let log = "\
[    0.100000] calling  first_init+0x0/0x10 @ 1
[    0.300000] initcall second_init+0x0/0x10 returned 0 after 1000 usecs
";
        let calls = parse(log);
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].start_ns, calls[0].end_ns), (299_000_000, 300_000_000));
    }

    #[test]
    fn a_report_after_other_output_on_the_same_line_is_read() {
        let call = parse_line("hello[    2.500000] initcall late_fn+0x0/0x10 returned 0 after 1500 usecs").unwrap();
        assert_eq!(call.name, "late_fn");
        assert_eq!(call.end_ns, 2_500_000_000);
        assert_eq!(call.start_ns, 2_498_500_000);
    }

    #[test]
    fn cut_or_garbled_reports_are_skipped() {
        for line in [
            "[    0.048779] initcall serial8250_init+0x0/0x137 returned 0 after 369",
            "[    0.048779] initcall serial8250_init+0x0/0x137 returned 0 aft",
            "[    0.048779] initcall serial8250_init+0x0/0x137 returned x after 369 usecs",
            "[    0.048779] initcall serial8250_init+0x0/0x137 returned 0 after -3 usecs",
            "[    0.04x779] initcall serial8250_init+0x0/0x137 returned 0 after 369 usecs",
            "[    0.048779 initcall serial8250_init+0x0/0x137 returned 0 after 369 usecs",
            "[] initcall f returned 0 after 1 usecs",
            "[    0.048395] calling  serial8250_init+0x0/0x137 @ 1",
            "initcall serial8250_init+0x0/0x137 returned 0 after 369 usecs",
            "[    0.048779] initcall  returned 0 after 369 usecs",
            "",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }
}
