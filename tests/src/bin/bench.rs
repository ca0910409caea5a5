//! Benchmarks, each printed beside a baseline measured in the same run.
//!
//!   bench boot [-n RUNS]   `vmshim run -- true` against QEMU booting the same
//!                          kernel with a busybox shell init that runs `true`
//!                          and reboots; and the guest's time from /init
//!                          entered to agent listening.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use host_shim::accel::{self, Accel};
use host_shim::vm::qemu::QemuConfig;
use vminitd_tests::{vmshim_bin, workspace_root, TempDir};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs = args
        .iter()
        .position(|a| a == "-n")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().unwrap_or_else(|_| fail(&format!("bad -n value {n:?}"))))
        .unwrap_or(10usize);
    match args.first().map(String::as_str) {
        Some("boot") => boot(runs),
        _ => fail("usage: bench boot [-n RUNS]"),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("bench: {msg}");
    std::process::exit(2);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn boot(runs: usize) {
    let build = workspace_root().join("build");
    let kernel = build.join("vmlinux");
    if !kernel.is_file() || !build.join("initramfs.cpio").is_file() {
        fail("build/vmlinux and build/initramfs.cpio are missing: run `make run` first");
    }
    let dir = TempDir::new("bench");
    let baseline_initrd = busybox_true_initramfs(dir.path());
    let (accel, why) = accel::choose(None);
    println!("boot benchmark: {runs} runs each, accelerator {accel} ({why})");

    // Warm the caches (rootfs image, page cache) once for both.
    vmshim_true(dir.path());
    baseline_true(&kernel, &baseline_initrd, accel, dir.path());

    let mut ours = Vec::new();
    let mut init_to_listen = Vec::new();
    let mut base = Vec::new();
    for _ in 0..runs {
        // Interleaved, so that drifts in machine load hit both alike.
        let (wall, guest) = vmshim_true(dir.path());
        ours.push(wall);
        init_to_listen.push(guest);
        base.push(baseline_true(&kernel, &baseline_initrd, accel, dir.path()));
    }
    let (ours_m, base_m) = (median(ours), median(base));
    println!("  vmshim run -- true               median {ours_m:8.1} ms");
    println!("  baseline: QEMU + busybox init    median {base_m:8.1} ms");
    println!("  ratio (vmshim / baseline)               {:8.3}", ours_m / base_m);
    println!(
        "  guest /init entered -> listening median {:8.3} ms",
        median(init_to_listen)
    );
}

/// One `vmshim run -- true`: wall time, and the guest's /init → listening.
fn vmshim_true(dir: &Path) -> (f64, f64) {
    let trace = dir.join("trace.json");
    let started = Instant::now();
    let out = Command::new(vmshim_bin())
        .args(["run", &format!("--profile={}", trace.display()), "--", "true"])
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim");
    let wall = started.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        fail(&format!("vmshim run failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap_or_default())
        .unwrap_or_else(|e| fail(&format!("bad profile: {e}")));
    let at = |name: &str| {
        json["traceEvents"]
            .as_array()
            .and_then(|evs| evs.iter().find(|e| e["ph"] == "i" && e["name"] == name))
            .and_then(|e| e["ts"].as_f64())
            .unwrap_or_else(|| fail(&format!("no {name} in the profile")))
    };
    (wall, (at("agent listening") - at("/init entered")) / 1e3)
}

/// An initramfs whose /init is a busybox shell that runs `true` and reboots.
fn busybox_true_initramfs(dir: &Path) -> PathBuf {
    let path = dir.join("baseline.cpio");
    let mut archive = initramfs::Archive::new();
    initramfs::layout::add_skeleton(&mut archive);
    archive.file_from_path("/bin/busybox", "/bin/busybox", 0o755);
    archive.file(
        "/init",
        "#!/bin/busybox sh\n/bin/busybox true\n/bin/busybox reboot -f\n",
        0o755,
    );
    archive
        .write_to_path(&path)
        .unwrap_or_else(|e| fail(&format!("baseline initramfs: {e}")));
    path
}

/// One boot of the baseline, QEMU start to QEMU exit, in ms.
fn baseline_true(kernel: &Path, initrd: &Path, accel: Accel, dir: &Path) -> f64 {
    let cfg = QemuConfig {
        qemu: "qemu-system-x86_64".into(),
        accel,
        cpus: 1,
        memory_mib: 256,
        kernel: kernel.to_path_buf(),
        initramfs: initrd.to_path_buf(),
        cmdline: host_shim::vm::VmConfig::new(kernel.into(), initrd.into()).cmdline(accel),
        console_log: dir.join("baseline-console.log"),
        disks: Vec::new(),
        vsock_args: Vec::new(),
        net_args: Vec::new(),
    };
    let started = Instant::now();
    let status = Command::new(&cfg.qemu)
        .args(cfg.args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("run qemu");
    let wall = started.elapsed();
    if !status.success() || wall > Duration::from_secs(60) {
        fail(&format!("baseline boot failed ({status})"));
    }
    wall.as_secs_f64() * 1e3
}
