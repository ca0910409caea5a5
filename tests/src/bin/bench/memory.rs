//! `bench memory`: what a VM's memory costs the host, each figure beside
//! its baseline from the same run.
//!
//! * **Memory that comes back.** A guest of 1 GiB allocates and touches
//!   512 MiB (a file in a tmpfs of its own), frees it and idles: the host
//!   RSS of the VM's processes (QEMU and the vsock backend) before, at the
//!   peak, and 2, 5 and 10 s after the free. Baseline: the same VM with
//!   `--no-free-page-reporting`.
//! * **An idle VM's footprint.** `vmshim run -d` with the default settings,
//!   a few seconds after boot: the RSS and PSS of each of its host
//!   processes (the instance daemon, QEMU, the vsock backend), and what
//!   QEMU's are made of. Baseline: QEMU alone booting the same kernel with
//!   the same memory and a busybox shell as init that sleeps (no agent, no
//!   devices, no backend, no daemon).
//! * **Balloon resize.** The wall time of `vmshim update NAME --memory 128m`
//!   on a 512 MiB VM whose guest holds 400 MiB of page cache (a file of a
//!   virtio-fs share, read once), until the guest has given the memory
//!   back; baseline: the same resize of the same guest without the cache.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vminitd_tests::{vmshim_bin, workspace_root, TempDir};

use super::median;

const MIB: f64 = (1 << 20) as f64;

/// The instances running (state directory, name): a failure stops them
/// before the bench exits.
static LIVE: std::sync::Mutex<Vec<(std::path::PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// Stops every instance still running, then fails the bench.
fn fail(msg: &str) -> ! {
    let live = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for (state, name) in live {
        let _ = Command::new(vmshim_bin())
            .args(["stop", &name])
            .env("VMSHIM_STATE_DIR", state)
            .stdin(Stdio::null())
            .output();
    }
    super::fail(msg)
}

/// A detached VM of a state directory of its own, stopped when dropped.
struct Instance {
    state: TempDir,
    name: String,
}

impl Instance {
    fn start(name: &str, flags: &[&str]) -> Instance {
        let instance = Instance {
            state: TempDir::new(&format!("bench-memory-{name}")),
            name: name.to_owned(),
        };
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((instance.state.path().to_owned(), name.to_owned()));
        let out = instance.vmshim(&[&["run", "-d", "--name", name], flags].concat());
        if !out.status.success() {
            fail(&format!("run -d {name}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        instance
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(vmshim_bin());
        cmd.args(args).env("VMSHIM_STATE_DIR", self.state.path());
        cmd
    }

    fn vmshim(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| fail(&format!("vmshim: {e}")))
    }

    fn sh(&self, script: &str) -> String {
        let out = self.vmshim(&["exec", &self.name, "--", "sh", "-c", script]);
        if !out.status.success() {
            fail(&format!("{script}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `vmshim stats NAME --format json`'s figures.
    fn memory(&self) -> Value {
        let out = self.vmshim(&["stats", &self.name, "--format", "json"]);
        let line: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| fail(&format!("stats: {e}: {}", String::from_utf8_lossy(&out.stderr))));
        line["memory"].clone()
    }

    /// The RSS of the VM's processes (QEMU and its backends, not the
    /// daemon), in MiB.
    fn vm_rss(&self) -> f64 {
        let memory = self.memory();
        let processes = memory["host"]["processes"].as_array().cloned().unwrap_or_default();
        processes
            .iter()
            .filter(|p| p["role"] != "vmshim")
            .map(|p| p["rss_bytes"].as_f64().unwrap_or(0.0))
            .sum::<f64>()
            / MIB
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.vmshim(&["stop", &self.name]);
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(state, _)| state != self.state.path());
    }
}

pub fn memory(runs: usize) {
    let (accel, why) = host_shim::accel::choose(None);
    println!("memory benchmark: accelerator {accel} ({why})");
    reclaim();
    idle();
    resize(runs);
}

/// The RSS timeline of a VM whose guest touches and frees 512 MiB: before,
/// at the peak, 2, 5 and 10 s after the free.
fn timeline(flags: &[&str]) -> [f64; 5] {
    let vm = Instance::start("reclaim", &[&["--memory", "1024"], flags].concat());
    std::thread::sleep(Duration::from_secs(3));
    let before = vm.vm_rss();
    // The file lives in a tmpfs of the exec's own mount namespace: it is
    // freed when the process ends, on its stdin's end.
    let mut hold: Child = vm
        .command(&["exec", &vm.name, "--", "sh", "-c"])
        .arg(
            "mkdir -p /mnt/fill && mount -t tmpfs -o size=600m fill /mnt/fill && \
             dd if=/dev/zero of=/mnt/fill/f bs=1M count=512 2>/dev/null && echo filled && read x",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("exec: {e}")));
    let mut line = String::new();
    BufReader::new(hold.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.trim() != "filled" {
        fail(&format!("the guest did not fill 512 MiB: {line:?}"));
    }
    let peak = vm.vm_rss();
    drop(hold.stdin.take());
    let _ = hold.wait();
    let freed = Instant::now();
    let mut after = [0.0; 3];
    for (i, at) in [2, 5, 10].into_iter().enumerate() {
        if let Some(wait) = Duration::from_secs(at).checked_sub(freed.elapsed()) {
            std::thread::sleep(wait);
        }
        after[i] = vm.vm_rss();
    }
    [before, peak, after[0], after[1], after[2]]
}

fn reclaim() {
    println!();
    println!("Memory that comes back: a 1 GiB guest touches 512 MiB (a tmpfs file), frees it, idles;");
    println!("host RSS of the VM's processes (QEMU + vsock backend), MiB");
    println!("                                      before     peak   +2 s   +5 s  +10 s");
    let with = timeline(&[]);
    let without = timeline(&["--no-free-page-reporting"]);
    let row = |label: &str, t: [f64; 5]| {
        println!(
            "  {label:<34} {:8.1} {:8.1} {:6.1} {:6.1} {:6.1}",
            t[0], t[1], t[2], t[3], t[4]
        )
    };
    row("free page reporting (default)", with);
    row("baseline: --no-free-page-reporting", without);
    println!(
        "  10 s after the free: {:.1} MiB above the idle figure with reporting, {:.1} MiB without (goal: within 32)",
        with[4] - with[0],
        without[4] - without[0]
    );
}

/// `Rss`, `Pss` and QEMU's make-up (`Pss_Anon`, `Pss_File`, `Pss_Shmem`) of
/// `/proc/PID/smaps_rollup`, in MiB.
fn rollup(pid: u32) -> [f64; 5] {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    ["Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem"].map(field)
}

/// QEMU alone: the same kernel and memory, a busybox shell as init that
/// sleeps; its RSS and PSS after `settle`.
fn baseline_footprint(dir: &Path, settle: Duration) -> [f64; 5] {
    let build = workspace_root().join("build");
    let kernel = build.join("vmlinux");
    let initrd = dir.join("sleep.cpio");
    let mut archive = initramfs::Archive::new();
    initramfs::layout::add_skeleton(&mut archive);
    archive.file_from_path("/bin/busybox", "/bin/busybox", 0o755);
    archive.file("/init", "#!/bin/busybox sh\n/bin/busybox sleep 100000\n", 0o755);
    archive
        .write_to_path(&initrd)
        .unwrap_or_else(|e| fail(&format!("baseline initramfs: {e}")));
    let (accel, _) = host_shim::accel::choose(None);
    let cfg = super::bare_qemu(&kernel, &initrd, accel, 1, dir.join("sleep-console.log"));
    let mut qemu = Command::new(&cfg.qemu)
        .args(cfg.args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("qemu: {e}")));
    std::thread::sleep(settle);
    let figures = rollup(qemu.id());
    let _ = qemu.kill();
    let _ = qemu.wait();
    figures
}

fn idle() {
    const SETTLE: Duration = Duration::from_secs(4);
    println!();
    println!("An idle VM's host footprint: `vmshim run -d` with the default settings (256 MiB, 1 vCPU),");
    println!("{} s after boot; MiB", SETTLE.as_secs());
    let dir = TempDir::new("bench-memory-idle");
    let vm = Instance::start("idle", &[]);
    std::thread::sleep(SETTLE);
    let memory = vm.memory();
    let processes = memory["host"]["processes"].as_array().cloned().unwrap_or_default();
    println!("                                           RSS      PSS    (anon    file   guest RAM)");
    let (mut rss, mut pss) = (0.0, 0.0);
    for p in &processes {
        let pid = p["pid"].as_u64().unwrap_or(0) as u32;
        let r = rollup(pid);
        rss += r[0];
        pss += r[1];
        let role = p["role"].as_str().unwrap_or("?");
        let label = match role {
            "vmshim" => "instance daemon (vmshim)",
            "qemu" => "QEMU",
            other => other,
        };
        println!(
            "  {label:<36} {:8.1} {:8.1}   ({:6.1} {:7.1} {:8.1})",
            r[0], r[1], r[2], r[3], r[4]
        );
    }
    println!("  all its host processes               {rss:8.1} {pss:8.1}   (goal: under 64)");
    let guest = &memory["guest"];
    let figure = |v: &Value| v.as_f64().unwrap_or(0.0) / MIB;
    println!(
        "  the guest: {:.1} MiB used of {:.1} ({:.1} cache); guest RAM the host holds {:.1}",
        figure(&guest["used_bytes"]),
        figure(&guest["total_bytes"]),
        figure(&guest["cache_bytes"]),
        figure(&memory["host"]["guest_ram_bytes"])
    );
    drop(vm);
    let base = baseline_footprint(dir.path(), SETTLE);
    println!(
        "  baseline: QEMU + busybox init, same kernel, 256 MiB {:8.1} {:8.1}   ({:6.1} {:7.1} {:8.1})",
        base[0], base[1], base[2], base[3], base[4]
    );
    // Three at once: the file pages (QEMU's binary and libraries, the
    // kernel image QEMU maps) are shared, and PSS splits them.
    let three: Vec<Instance> = (0..3).map(|i| Instance::start(&format!("idle{i}"), &[])).collect();
    std::thread::sleep(SETTLE);
    let per_vm: Vec<f64> = three
        .iter()
        .map(|vm| {
            let memory = vm.memory();
            memory["host"]["pss_bytes"].as_f64().unwrap_or(0.0) / MIB
        })
        .collect();
    println!(
        "  three idle VMs at once: PSS per VM {:.1} (each VM's processes, shared pages split)",
        per_vm.iter().sum::<f64>() / per_vm.len() as f64
    );
}

/// One timed `vmshim update NAME --memory SIZE`, in ms.
fn update(vm: &Instance, size: &str) -> f64 {
    let started = Instant::now();
    let out = vm.vmshim(&["update", &vm.name, "--memory", size, "--wait", "60"]);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        fail(&format!(
            "update --memory {size}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    ms
}

fn resize(runs: usize) {
    println!();
    println!("Balloon resize: `vmshim update NAME --memory 128m` on a 512 MiB VM, until the guest has");
    println!("given the memory back (its MemTotal 384 MiB less); {runs} runs, median ms");
    let share = TempDir::new("bench-memory-share");
    let file = share.path().join("cache.bin");
    let data = vec![0x5au8; 400 << 20];
    std::fs::write(&file, &data).unwrap_or_else(|e| fail(&format!("{}: {e}", file.display())));
    drop(data);
    let volume = format!("{}:/data:ro", share.path().display());
    let vm = Instance::start("resize", &["--memory", "512", "-v", &volume]);
    let booted = mem_total(&vm);
    let (mut cached, mut plain, mut grow) = (Vec::new(), Vec::new(), Vec::new());
    let mut cache_mib = Vec::new();
    for _ in 0..runs {
        vm.sh("cat /data/cache.bin > /dev/null");
        cache_mib.push(vm.memory()["guest"]["cache_bytes"].as_f64().unwrap_or(0.0) / MIB);
        cached.push(update(&vm, "128m"));
        check_total(&vm, booted - (384 << 20));
        grow.push(update(&vm, "512m"));
        check_total(&vm, booted);
        // The same guest, its cache given up with the last resize.
        plain.push(update(&vm, "128m"));
        check_total(&vm, booted - (384 << 20));
        update(&vm, "512m");
    }
    println!(
        "  shrink to 128 MiB with {:.0} MiB of page cache  {:8.1}",
        median(cache_mib),
        median(cached)
    );
    println!("  baseline: the same shrink without the cache {:8.1}", median(plain));
    println!("  grow back to 512 MiB                        {:8.1}", median(grow));
}

/// The guest's MemTotal, in bytes.
fn mem_total(vm: &Instance) -> u64 {
    let line = vm.sh("head -1 /proc/meminfo");
    line.split_whitespace()
        .nth(1)
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib << 10)
        .unwrap_or_else(|| fail(&format!("MemTotal: {line:?}")))
}

fn check_total(vm: &Instance, expected: u64) {
    let total = mem_total(vm);
    if total != expected {
        fail(&format!("the guest's MemTotal is {total}, not {expected}"));
    }
}
