//! Benchmarks, each printed beside a baseline measured in the same run.
//!
//!   bench boot [-n RUNS]   `vmshim run -- true` against QEMU booting the same
//!                          kernel with a busybox shell init that runs `true`
//!                          and reboots; and the guest's time from /init
//!                          entered to agent listening.
//!   bench net [-n MIB]     TCP throughput VM→host (NAT) and VM→VM (a vmshim
//!                          network), against the same transfer over the
//!                          host's loopback.

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
        Some("net") => net(if args.iter().any(|a| a == "-n") { runs } else { 32 }),
        _ => fail("usage: bench boot [-n RUNS] | bench net [-n MIB]"),
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

/// Receives one TCP connection on `listener` to its end, answers the byte
/// count and closes; returns the bytes and the seconds from the first byte
/// to the last.
fn receive(listener: std::net::TcpListener) -> std::thread::JoinHandle<(u64, f64)> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut conn, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            let n = conn.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            first.get_or_insert_with(Instant::now);
            total += n as u64;
        }
        let secs = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(0.0);
        let _ = writeln!(conn, "{total}");
        (total, secs)
    })
}

fn mib_per_s((bytes, secs): (u64, f64)) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
}

fn net(mib: usize) {
    let bytes = mib << 20;
    // Baseline: the same transfer over the host's loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = receive(listener);
    {
        use std::io::Write;
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let chunk = vec![0u8; 1 << 16];
        for _ in 0..bytes / chunk.len() {
            conn.write_all(&chunk).unwrap();
        }
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut conn, &mut answer).unwrap();
    }
    let loopback = rx.join().unwrap();
    println!("TCP throughput, {mib} MiB each");
    println!("  host loopback (baseline)        {:9.1} MiB/s", mib_per_s(loopback));

    // VM → host, through the NAT to a listener on the host's loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let rx = receive(listener);
    let script = format!(
        "dd if=/dev/zero bs=65536 count={} 2>/dev/null | nc host.vminitd.internal {port}",
        bytes >> 16
    );
    let out = Command::new(vmshim_bin())
        .args(["run", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if !out.status.success() {
        fail(&format!(
            "VM → host transfer failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let vm_host = rx.join().unwrap();
    if vm_host.0 != bytes as u64 {
        fail(&format!("VM → host: {} of {bytes} bytes arrived", vm_host.0));
    }
    println!(
        "  VM -> host (NAT)                {:9.1} MiB/s   ratio {:.4}",
        mib_per_s(vm_host),
        mib_per_s(vm_host) / mib_per_s(loopback)
    );
    vm_to_vm(mib, mib_per_s(loopback));
}

/// VM → VM on a vmshim network: a receiver VM listens, a sender VM streams
/// `mib` MiB to it by name and times the transfer inside the guest.
fn vm_to_vm(mib: usize, loopback: f64) {
    let net = format!("bench{}", std::process::id());
    let created = Command::new(vmshim_bin())
        .args(["network", "create", &net])
        .output()
        .unwrap();
    if !created.status.success() {
        fail(&format!("network create: {}", String::from_utf8_lossy(&created.stderr)));
    }
    // The receiver counts what arrives and answers the count, so that the
    // sender's timing ends when the last byte is in.
    let mut receiver = Command::new(vmshim_bin())
        .args(["run", "--network", &net, "--name", "rx", "--", "sh", "-c"])
        .arg("echo ready; nc -l -p 5000 -e sh -c 'wc -c'")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(receiver.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let script = format!(
        "s=$(cut -d' ' -f1 /proc/uptime); dd if=/dev/zero bs=65536 count={} 2>/dev/null | nc rx 5000; \
         e=$(cut -d' ' -f1 /proc/uptime); echo \"$s $e\"",
        mib * 16
    );
    let sender = Command::new(vmshim_bin())
        .args(["run", "--network", &net, "--name", "tx", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = receiver.wait();
    let _ = Command::new(vmshim_bin()).args(["network", "rm", &net]).output();
    let said = String::from_utf8_lossy(&sender.stdout).into_owned();
    let mut lines = said.lines();
    let count = lines.next().unwrap_or("").trim().to_owned();
    let times: Vec<f64> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    if !sender.status.success() || count != (mib << 20).to_string() || times.len() != 2 || times[1] <= times[0] {
        fail(&format!(
            "VM → VM transfer failed (the receiver counted {count:?}): {said} {}",
            String::from_utf8_lossy(&sender.stderr)
        ));
    }
    let rate = mib as f64 / (times[1] - times[0]);
    println!(
        "  VM -> VM (vmshim network)       {rate:9.1} MiB/s   ratio {:.4}",
        rate / loopback
    );
}
