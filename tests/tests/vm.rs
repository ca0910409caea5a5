//! Real micro-VMs: `vmshim run` boots the guest kernel with vminitd as /init
//! under QEMU (KVM where it really runs a guest, else TCG) and runs commands
//! in the default busybox root filesystem.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vminitd_tests::{vmshim_bin, TempDir};

fn vmshim_run(args: &[&str], stdin: &[u8]) -> Output {
    vminitd_tests::vmshim_with_input(&[&["run"], args].concat(), stdin)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn echo_and_exit_codes() {
    let out = vmshim_run(&["--", "sh", "-c", "echo hi from $(cat /proc/1/comm)"], b"");
    assert_eq!(text(&out.stdout), "hi from vminitd\n", "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));

    let out = vmshim_run(&["--", "sh", "-c", "echo out; echo err >&2; exit 42"], b"");
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("out\n", Some(42)),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("err\n"));
}

/// The guest kernel mitigates the speculative-execution flaws of the CPU
/// it runs on (docs/security.md): no flaw it could mitigate itself is
/// reported "Vulnerable". One that needs microcode the host's CPU does not
/// give the guest is the host's to fix, and only printed.
#[test]
fn the_guest_kernel_mitigates_the_cpus_speculation_flaws() {
    let script = "cd /sys/devices/system/cpu/vulnerabilities && for f in *; do echo \"$f: $(cat $f)\"; done";
    let out = vmshim_run(&["--", "sh", "-c", script], b"");
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(report.lines().any(|line| line.starts_with("spectre_v2: ")), "{report}");
    let (microcode, vulnerable): (Vec<&str>, Vec<&str>) = report
        .lines()
        .filter(|line| line.contains(": Vulnerable"))
        .partition(|line| line.contains("microcode"));
    for line in microcode {
        eprintln!("the host's CPU gives the guest no microcode for: {line}");
    }
    assert!(
        vulnerable.is_empty(),
        "unmitigated in the guest kernel: {vulnerable:?}\n{report}"
    );
}

#[test]
fn death_by_signal_is_128_plus_n() {
    let out = vmshim_run(&["--", "sh", "-c", "kill -9 $$"], b"");
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
}

#[test]
fn stdin_round_trip_and_big_stdout() {
    let input: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let out = vmshim_run(&["-i", "--", "cat"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout == input,
        "stdin came back altered ({} of {} bytes)",
        out.stdout.len(),
        input.len()
    );

    // Over 16 MiB on stdout, ending right at exit.
    let n = 2_300_000u32;
    let expected: Vec<u8> = (1..=n).flat_map(|i| format!("{i}\n").into_bytes()).collect();
    assert!(expected.len() > 16 << 20);
    let out = vmshim_run(&["--", "seq", "1", &n.to_string()], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected, "stdout bytes differ");
}

#[test]
fn a_terminal_program() {
    let out = vmshim_run(
        &["-t", "--", "sh", "-c", "tty; [ -t 0 ] && [ -t 1 ] && echo both-ttys"],
        b"",
    );
    let s = text(&out.stdout);
    assert!(
        s.contains("/dev/pts/") && s.contains("both-ttys"),
        "{s:?} {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn two_vms_at_once() {
    let a = std::thread::spawn(|| vmshim_run(&["--", "sh", "-c", "echo one"], b""));
    let b = std::thread::spawn(|| vmshim_run(&["--", "sh", "-c", "echo two"], b""));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(text(&a.stdout), "one\n", "{}", text(&a.stderr));
    assert_eq!(text(&b.stdout), "two\n", "{}", text(&b.stderr));
}

/// Every descendant of `pid` (from /proc/*/stat parent links).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            if let Some((_, rest)) = stat.rsplit_once(") ") {
                if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok()) {
                    parents.push((p, ppid));
                }
            }
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let cur = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    found.remove(0);
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
}

/// Starts `vmshim run` with stdout piped and waits for `ready` on it.
fn start_until_ready(args: &[&str]) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(vmshim_bin())
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    (child, out)
}

#[test]
fn sigterm_to_vmshim_leaves_nothing_behind() {
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let (mut child, mut out) = start_until_ready(&["--", "sh", "-c", "trap '' TERM; echo ready; exec sleep 1000"]);
        let helpers = descendants(child.id());
        assert!(!helpers.is_empty(), "QEMU runs under vmshim");
        let started = Instant::now();
        // SAFETY: signals our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let mut rest = Vec::new();
        let _ = out.read_to_end(&mut rest);
        if signal == libc::SIGTERM {
            // The process ignores TERM: after the grace period the VM is stopped.
            assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
            assert!(started.elapsed() < Duration::from_secs(20));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while helpers.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<u32> = helpers.iter().copied().filter(|&p| alive(p)).collect();
        assert!(left.is_empty(), "after signal {signal}, still running: {left:?}");
    }
}

/// A throwaway initramfs whose /init is a busybox shell script.
fn busybox_initramfs(dir: &Path, script: &str) -> PathBuf {
    let path = dir.join("init.cpio");
    let mut archive = initramfs::Archive::new();
    initramfs::layout::add_skeleton(&mut archive);
    archive.file_from_path("/bin/busybox", "/bin/busybox", 0o755);
    archive.file("/init", format!("#!/bin/busybox sh\n{script}\n"), 0o755);
    archive.write_to_path(&path).unwrap();
    path
}

#[test]
fn a_kernel_panic_is_a_clear_error() {
    // An initramfs with no /init at all: the kernel panics looking for a root.
    let dir = TempDir::new("panic");
    let empty = dir.path().join("empty.cpio");
    initramfs::Archive::new()
        .dir("/dev", 0o755)
        .write_to_path(&empty)
        .unwrap();
    let started = Instant::now();
    let out = vmshim_run(
        &[
            "--initramfs",
            empty.to_str().unwrap(),
            "--boot-timeout",
            "60",
            "--",
            "true",
        ],
        b"",
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("exited") && err.to_lowercase().contains("panic"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "reported when the VM died, not at the deadline"
    );
}

#[test]
fn an_init_that_never_answers_is_a_clear_error() {
    let dir = TempDir::new("silent");
    let init = busybox_initramfs(dir.path(), "exec /bin/busybox sleep 1000");
    let started = Instant::now();
    let out = vmshim_run(
        &[
            "--initramfs",
            init.to_str().unwrap(),
            "--boot-timeout",
            "6",
            "--",
            "true",
        ],
        b"",
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(err.contains("did not answer within 6s"), "{err}");
    assert!(err.contains("guest console"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The profile table's load line: the wall time from `VMM spawned` to
/// `process exited`, the vCPUs' time on a host CPU and all of QEMU's, in ms.
fn vcpu_load(table: &str) -> (f64, f64, f64) {
    let line = table
        .lines()
        .find(|l| l.starts_with("QEMU from VMM spawned to process exited ("))
        .unwrap_or_else(|| panic!("no load line in:\n{table}"));
    let number_after = |marker: &str| -> f64 {
        let rest = &line[line.find(marker).unwrap_or_else(|| panic!("{marker:?} in {line}")) + marker.len()..];
        rest.split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    (
        number_after("exited ("),
        number_after("vCPUs on a host CPU "),
        number_after("all its threads "),
    )
}

#[test]
fn boot_profile() {
    let dir = TempDir::new("profile");
    let trace = dir.path().join("trace.json");
    let out = vmshim_run(&[&format!("--profile={}", trace.display()), "--", "true"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stderr);
    for phase in [
        "vmshim start",
        "vsock backend ready",
        "VMM spawned",
        "kernel start",
        "/init entered",
        "mounts done",
        "agent listening",
        "agent connected",
        "process started",
        "process exited",
        "VM gone",
    ] {
        assert!(table.contains(phase), "{phase} missing from:\n{table}");
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    assert!(events.len() > 10);
    // The kernel's initcalls, on the guest's clock: after the kernel
    // started, before /init was entered.
    let at = |name: &str| {
        let e = events.iter().find(|e| e["name"] == name && e["ph"] == "X").unwrap();
        e["ts"].as_f64().unwrap() + e["dur"].as_f64().unwrap()
    };
    let initcalls: Vec<&serde_json::Value> = events.iter().filter(|e| e["cat"] == "initcall").collect();
    assert!(initcalls.len() > 100, "{} initcalls", initcalls.len());
    let blk = initcalls
        .iter()
        .find(|e| e["name"] == "virtio_blk_init")
        .expect("virtio_blk_init");
    let ts = blk["ts"].as_f64().unwrap();
    assert!(at("kernel start") < ts && ts < at("/init entered"), "{blk}");

    // QEMU's threads were sampled: its one vCPU (a thread QEMU names
    // `CPU 0/...`) ran, for no more than the wall time, and within all of
    // QEMU's threads' time.
    let (wall, vcpu, qemu) = vcpu_load(&table);
    assert!(vcpu > 0.0 && vcpu <= wall * 1.05 + 20.0, "{table}");
    assert!(qemu >= vcpu * 0.99, "{table}");
    assert!(
        events.iter().filter(|e| e["ph"] == "C" && e["cat"] == "cpu").count() > 10,
        "a counter track of the load"
    );

    // vmshim profile reads it back: the phases, and against itself
    // nothing grew.
    let profile = Command::new(vmshim_bin()).arg("profile").arg(&trace).output().unwrap();
    assert!(profile.status.success(), "{}", text(&profile.stderr));
    let table = text(&profile.stdout);
    assert!(
        table.contains("/init entered") && table.contains("kernel initcalls:"),
        "{table}"
    );
    let (wall_back, vcpu_back, _) = vcpu_load(&table);
    assert!(
        (wall_back - wall).abs() < 0.2 && (vcpu_back - vcpu).abs() < 0.2,
        "the load read back from the trace: {table}"
    );
    let same = Command::new(vmshim_bin())
        .arg("profile")
        .args([&trace, &trace])
        .output()
        .unwrap();
    assert!(same.status.success(), "{}", text(&same.stderr));
    assert!(text(&same.stdout).contains("no phase grew"), "{}", text(&same.stdout));
    let missing = Command::new(vmshim_bin())
        .args(["profile", "/nonexistent/trace.json"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(125));
    assert!(
        text(&missing.stderr).contains("cannot read /nonexistent/trace.json"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn sigterm_while_booting_leaves_nothing_behind() {
    let mut child = Command::new(vmshim_bin())
        .args(["run", "--", "sleep", "100"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Long enough for QEMU and the vsock backend to be running, well before
    // the guest's agent answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while descendants(child.id()).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let helpers = descendants(child.id());
    // SAFETY: signals our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(128 + libc::SIGTERM));
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<u32> = helpers.iter().copied().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still running: {left:?}");
}
