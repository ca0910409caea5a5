//! Benchmarks, each printed beside a baseline measured in the same run.
//!
//!   bench boot [-n RUNS] [--cpus N]
//!                          `vmshim run -- true` against QEMU booting the same
//!                          kernel with a busybox shell init that runs `true`
//!                          and reboots, bare and with vmshim's devices (the
//!                          root disk, the NIC, vsock with its backend, the
//!                          balloon); and the guest's time from /init
//!                          entered to agent listening. All three with N
//!                          vCPUs (default: vmshim's default, 1).
//!   bench net [-n MIB]     TCP throughput VM→host (NAT) and VM→VM (a vmshim
//!                          network), against the same transfer over the
//!                          host's loopback.
//!   bench oci [-n RUNS]    OCI container launch (create, start, wait,
//!                          delete of `/bin/true`) by vminitd's engine on
//!                          this host, against crun and runc on the same
//!                          bundle.
//!   bench fs [-n RUNS]     through a virtio-fs share (`vmshim run -v`):
//!                          sequential write and read of a 256 MiB file and
//!                          `ls -lR` of a 10,000-file tree, against the same
//!                          on the guest's own root, in the same VM.
//!   bench podman [-n RUNS] `podman run --rm IMAGE true` with vminitd-runtime
//!                          against runc (and crun where it runs here), in
//!                          the same run.
//!   bench cri [-n RUNS]    pod start through containerd's CRI service
//!                          (RunPodSandbox, CreateContainer, StartContainer
//!                          until the container's first output) with the
//!                          vminitd handler against runc's, and the shims'
//!                          resident memory per pod, in the same run.
//!   bench memory [-n RUNS] a guest's freed 512 MiB back on the host (host
//!                          RSS before, at the peak, 2/5/10 s after) against
//!                          the same VM without free page reporting; an idle
//!                          VM's host footprint against QEMU alone with a
//!                          busybox init; a balloon resize to 128 MiB with
//!                          400 MiB of page cache against the same without.

#[path = "bench/cri.rs"]
mod cri;
#[path = "bench/memory.rs"]
mod memory;
#[path = "bench/podman.rs"]
mod podman;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use host_shim::accel::{self, Accel};
use host_shim::profile::Profile;
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
        Some("boot") => boot(runs, cpus(&args)),
        Some("net") => net(if args.iter().any(|a| a == "-n") { runs } else { 32 }),
        Some("oci") => oci(if args.iter().any(|a| a == "-n") { runs } else { 50 }),
        Some("podman") => podman::podman(runs),
        Some("cri") => cri::cri(runs),
        Some("fs") => fs(if args.iter().any(|a| a == "-n") { runs } else { 3 }),
        Some("memory") => memory::memory(if args.iter().any(|a| a == "-n") { runs } else { 3 }),
        _ => fail("usage: bench boot [-n RUNS] [--cpus N] | bench net [-n MIB] | bench oci [-n RUNS] | bench fs [-n RUNS] | bench podman [-n RUNS] | bench cri [-n RUNS] | bench memory [-n RUNS]"),
    }
}

/// `--cpus N`: the vCPUs of every VM `bench boot` starts, ours and the
/// baselines' alike.
fn cpus(args: &[String]) -> u32 {
    match args.iter().position(|a| a == "--cpus") {
        None => 1,
        Some(i) => {
            let value = args.get(i + 1).map(String::as_str).unwrap_or("");
            match value.parse::<u32>() {
                Ok(n) if (1..=64).contains(&n) => n,
                _ => fail(&format!("--cpus takes a number of vCPUs from 1 to 64, not {value:?}")),
            }
        }
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

fn boot(runs: usize, cpus: u32) {
    let build = workspace_root().join("build");
    let kernel = build.join("vmlinux");
    if !kernel.is_file() || !build.join("initramfs.cpio").is_file() {
        fail("build/vmlinux and build/initramfs.cpio are missing: run `make run` first");
    }
    let dir = TempDir::new("bench");
    let baseline_initrd = busybox_true_initramfs(dir.path());
    let (accel, why) = accel::choose(None);
    println!("boot benchmark: {runs} runs each, {cpus} vCPU(s), accelerator {accel} ({why})");

    // Warm the caches (rootfs image, page cache) once for all.
    vmshim_true(dir.path(), cpus);
    let rootfs = host_shim::assets::rootfs_image(None).unwrap_or_else(|e| fail(&format!("the root image: {e}")));
    baseline_true(&kernel, &baseline_initrd, accel, cpus, dir.path());
    baseline_devices_true(&kernel, &baseline_initrd, accel, cpus, dir.path(), &rootfs);

    let mut ours = Vec::new();
    let mut init_to_listen = Vec::new();
    let mut vcpu_busy = Vec::new();
    let mut base = Vec::new();
    let mut devices = Vec::new();
    for _ in 0..runs {
        // Interleaved, so that drifts in machine load hit all alike.
        let (wall, guest, busy) = vmshim_true(dir.path(), cpus);
        ours.push(wall);
        init_to_listen.push(guest);
        vcpu_busy.extend(busy);
        base.push(baseline_true(&kernel, &baseline_initrd, accel, cpus, dir.path()));
        devices.push(baseline_devices_true(
            &kernel,
            &baseline_initrd,
            accel,
            cpus,
            dir.path(),
            &rootfs,
        ));
    }
    let (ours_m, base_m, devices_m) = (median(ours), median(base), median(devices));
    println!("  vmshim run -- true               median {ours_m:8.1} ms");
    println!("  baseline: QEMU + busybox init    median {base_m:8.1} ms");
    println!("  baseline with vmshim's devices   median {devices_m:8.1} ms");
    println!("  ratio (vmshim / baseline)               {:8.3}", ours_m / base_m);
    println!("  ratio (vmshim / with devices)           {:8.3}", ours_m / devices_m);
    println!(
        "  guest /init entered -> listening median {:8.3} ms",
        median(init_to_listen)
    );
    // Whether the guest computes or waits: a round trip saved shortens
    // only the time a vCPU idles.
    if !vcpu_busy.is_empty() {
        println!(
            "  guest vCPUs busy, VMM spawned -> process exited median {:7.1} % of one host CPU (--profile runs)",
            median(vcpu_busy)
        );
    }
    if accel == Accel::Tcg {
        icount_phases(dir.path());
    }
}

/// One `vmshim run --icount --profile -- true`: the guest's phases and
/// vminitd's spans counted in guest instructions (QEMU's `-icount
/// shift=0,sleep=off`: a nanosecond per instruction). What only computes
/// reads the same on every run; what waits for the disk also counts the
/// guest's idle time, which jumps to its next timer, and varies. The
/// host's phases of such a run are wall time of a ten times slower guest,
/// and are not printed.
///
/// With one vCPU whatever `--cpus`: a guest whose clock counts
/// instructions never brings up a second one.
fn icount_phases(dir: &Path) {
    let profile = profiled_true(dir, "icount.json", &["--icount", "--boot-timeout", "300"]);
    let at = |name: &str| {
        profile
            .get(name)
            .unwrap_or_else(|| fail(&format!("no {name} in the --icount trace")))
    };
    println!(
        "  in guest instructions (one --icount run, 1 vCPU: steady where the guest computes, not where it waits for the disk):"
    );
    println!(
        "    {:<60}{:8.1} ms",
        "kernel start -> /init entered (with initcall_debug)",
        at("/init entered") - at("kernel start")
    );
    println!(
        "    {:<60}{:8.1} ms",
        "/init entered -> listening",
        at("agent listening") - at("/init entered")
    );
    for span in profile.agent_spans() {
        let name = format!("vminitd: {}", span.name);
        println!("    {name:<60}{:8.1} ms", span.duration_ms);
    }
}

/// One `vmshim run -- true`: its wall time; then one with `--profile`
/// (whose kernel reports its initcalls on the console, which costs wall
/// time) for the guest's /init → listening and how busy its vCPUs were
/// (percent of one host CPU, where sampled).
fn vmshim_true(dir: &Path, cpus: u32) -> (f64, f64, Option<f64>) {
    let cpus = cpus.to_string();
    let started = Instant::now();
    let out = Command::new(vmshim_bin())
        .args(["run", "--cpus", &cpus, "--", "true"])
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim");
    let wall = started.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        fail(&format!("vmshim run failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let profile = profiled_true(dir, "trace.json", &["--cpus", &cpus]);
    let at = |name: &str| {
        profile
            .get(name)
            .unwrap_or_else(|| fail(&format!("no {name} in the profile")))
    };
    let busy = profile.vcpu_load().map(|load| load.busy_percent());
    (wall, at("agent listening") - at("/init entered"), busy)
}

/// One `vmshim run ARGS --profile=DIR/NAME -- true`, and its trace read
/// back.
fn profiled_true(dir: &Path, name: &str, args: &[&str]) -> Profile {
    let trace = dir.join(name);
    let out = Command::new(vmshim_bin())
        .arg("run")
        .args(args)
        .arg(format!("--profile={}", trace.display()))
        .args(["--", "true"])
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim");
    if !out.status.success() {
        fail(&format!(
            "vmshim run {} --profile failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap_or_default())
        .unwrap_or_else(|e| fail(&format!("bad profile {}: {e}", trace.display())));
    Profile::from_chrome_trace(&json).unwrap_or_else(|e| fail(&format!("the trace {}: {e}", trace.display())))
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

/// QEMU booting `kernel` and `initrd` the way vmshim boots a VM (`cpus`
/// vCPUs, 256 MiB, vmshim's kernel command line) with no device of
/// vmshim's: the baselines' VM, and the memory bench's idle one.
fn bare_qemu(kernel: &Path, initrd: &Path, accel: Accel, cpus: u32, console_log: PathBuf) -> QemuConfig {
    QemuConfig {
        qemu: "qemu-system-x86_64".into(),
        accel,
        cpus,
        memory_mib: 256,
        kernel: kernel.to_path_buf(),
        initramfs: initrd.to_path_buf(),
        cmdline: host_shim::vm::VmConfig::new(kernel.into(), initrd.into()).cmdline(accel),
        console_log,
        disks: Vec::new(),
        vsock_args: Vec::new(),
        net_args: Vec::new(),
        share_args: Vec::new(),
        balloon_args: Vec::new(),
        qmp_args: Vec::new(),
        icount: false,
    }
}

/// One boot of the baseline, QEMU start to QEMU exit, in ms.
fn baseline_true(kernel: &Path, initrd: &Path, accel: Accel, cpus: u32, dir: &Path) -> f64 {
    let cfg = bare_qemu(kernel, initrd, accel, cpus, dir.join("baseline-console.log"));
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
    check_rebooted(&cfg.console_log);
    wall.as_secs_f64() * 1e3
}

/// One boot of the baseline with the devices `vmshim run` gives a VM (the
/// root disk, the NIC, vsock with its vhost-user backend started first, the
/// balloon with free page reporting), from the backend's start to QEMU's
/// exit, in ms: what the devices cost, apart from what vminitd does.
fn baseline_devices_true(kernel: &Path, initrd: &Path, accel: Accel, cpus: u32, dir: &Path, rootfs: &Path) -> f64 {
    let runtime_dir = dir.join("devices");
    let _ = std::fs::remove_dir_all(&runtime_dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&runtime_dir)
        .unwrap_or_else(|e| fail(&format!("{}: {e}", runtime_dir.display())));
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    let vsock = tokio
        .block_on(host_shim::vm::vsock::Backend::start(&runtime_dir))
        .unwrap_or_else(|e| fail(&format!("the vsock backend: {e}")));
    let cfg = QemuConfig {
        disks: vec![rootfs.to_path_buf()],
        vsock_args: vsock.qemu_args(),
        net_args: host_shim::vm::net::GuestNetwork::default().qemu_args(),
        balloon_args: host_shim::vm::memory::balloon_args(true),
        ..bare_qemu(kernel, initrd, accel, cpus, dir.join("baseline-devices-console.log"))
    };
    let status = Command::new(&cfg.qemu)
        .args(cfg.args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("run qemu");
    let wall = started.elapsed();
    drop(vsock);
    if !status.success() || wall > Duration::from_secs(60) {
        fail(&format!("baseline boot with devices failed ({status})"));
    }
    check_rebooted(&cfg.console_log);
    wall.as_secs_f64() * 1e3
}

/// A baseline boot counts only if its init ran `true` and rebooted: QEMU
/// exits just the same when the kernel panics (`panic=-1`, `-no-reboot`).
fn check_rebooted(console_log: &Path) {
    let console = std::fs::read_to_string(console_log).unwrap_or_default();
    if console.contains("Kernel panic") || !console.contains("reboot: Restarting system") {
        let tail: Vec<&str> = console.lines().rev().take(15).collect();
        fail(&format!(
            "a baseline boot did not end in its init's reboot; its console ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
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

/// The `p`th percentile (nearest rank) of `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

/// The first line of `PROGRAM --version`, or why there is none.
fn version(program: &str) -> String {
    match Command::new(program).arg("--version").output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        Err(e) => fail(&format!("{program}: {e} (scripts/setup.sh installs it)")),
    }
}

/// OCI launch: create + start + wait + delete of `/bin/true` from the same
/// busybox bundle (a stock `runc spec`), by vminitd's engine, crun and
/// runc, interleaved run by run.
fn oci(runs: usize) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        fail("bench oci needs root (runc and crun make namespaces and cgroups)");
    }
    let (crun_version, runc_version) = (version("crun"), version("runc"));
    let dir = TempDir::new("bench-oci");
    let bundle = oci_bundle(dir.path());
    let state = dir.path().join("state");
    let crun = CrunThread::start(&bundle, &state.join("crun"));
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let agent = tokio.block_on(vminitd_tests::NamespacedAgent::start());
    let client = tokio.block_on(agent.client());
    let runc = |id: &str| oci_cli_run("runc", &state.join("runc"), &bundle, id);

    // One of each first: page cache, the agent's first container.
    tokio.block_on(ours_run(&client, &bundle, "warm"));
    crun.run("warm");
    runc("warm");
    let (mut ours, mut theirs, mut runcs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let id = format!("c{i}");
        ours.push(tokio.block_on(ours_run(&client, &bundle, &id)));
        theirs.push(crun.run(&id));
        runcs.push(runc(&id));
    }
    drop(agent);

    println!("OCI launch: create + start + wait + delete of /bin/true, a stock `runc spec` busybox bundle,");
    println!("{runs} runs each, interleaved; milliseconds");
    println!("  vminitd: {}", vminitd_tests::vminitd_bin().display());
    println!("                                                        p10   median      p90");
    let row = |name: &str, v: &[f64]| {
        println!(
            "  {name:<48} {:8.2} {:8.2} {:8.2}",
            percentile(v, 10.0),
            median(v.to_vec()),
            percentile(v, 90.0)
        );
    };
    row("vminitd engine: requests to a running agent", &ours);
    row(&format!("{crun_version}: one `crun run` process"), &theirs);
    row(&format!("{runc_version}: one `runc run` process"), &runcs);
    println!(
        "  ratio vminitd / crun (medians) {:.3}; vminitd / runc {:.3}",
        median(ours.clone()) / median(theirs),
        median(ours) / median(runcs)
    );
    println!("  vminitd: the bundle's config.json translated, then create_container, start_container,");
    println!("    wait and delete_container over the Unix socket of vminitd, started once before as");
    println!("    PID 1 of a namespace (as a shim that stays); no process is spawned but the container's.");
    println!("  crun, runc: the wall time of one `RUNTIME --root DIR run --bundle B ID` process, from");
    println!("    its spawn to its exit. crun runs in a mount namespace without /sys/fs/cgroup/unified,");
    println!("    entered once beforehand by the thread that spawns it (not timed).");
}

/// A busybox root and a stock `runc spec` whose process is `/bin/true`.
fn oci_bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    host_shim::rootfs::busybox_tree(Path::new("/bin/busybox"), &bundle.join("rootfs"))
        .unwrap_or_else(|e| fail(&format!("busybox root: {e}")));
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .output()
        .unwrap_or_else(|e| fail(&format!("runc spec: {e}")));
    if !out.status.success() {
        fail(&format!("runc spec: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    std::fs::write(&config, spec.to_string()).unwrap();
    bundle
}

/// One launch by vminitd's engine, in ms.
async fn ours_run(client: &host_shim::Client, bundle: &Path, id: &str) -> f64 {
    use host_shim::image::{container_spec, RootPlacement};
    let started = Instant::now();
    let spec = container_spec(bundle, id, RootPlacement::Host).unwrap_or_else(|e| fail(&e.to_string()));
    let run = async {
        let created = client.create_container(spec).await?;
        client.start_container(id).await?;
        let status = client.wait(created.process).await?;
        client.delete_container(id, false).await?;
        Ok::<_, host_shim::ClientError>(status)
    };
    match run.await {
        Ok(status) if status.code == Some(0) => started.elapsed().as_secs_f64() * 1e3,
        Ok(status) => fail(&format!("vminitd: /bin/true ended with {status:?}")),
        Err(e) => fail(&format!("vminitd: {e}")),
    }
}

/// One `RUNTIME --root ROOT run --bundle BUNDLE ID`, in ms.
fn oci_cli_run(runtime: &str, root: &Path, bundle: &Path, id: &str) -> f64 {
    let started = Instant::now();
    let out = Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| fail(&format!("{runtime}: {e}")));
    let wall = started.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        fail(&format!(
            "{runtime} run {id}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    wall
}

/// A thread in a mount namespace of its own, without the hybrid cgroup2
/// mount at /sys/fs/cgroup/unified (crun takes a host that has one for a
/// cgroup v2 host, and fails), that runs crun on request. Namespaces are a
/// thread's own: the processes it spawns start in its namespace, the rest
/// of the bench stays in the host's.
struct CrunThread {
    ids: std::sync::mpsc::Sender<String>,
    times: std::sync::mpsc::Receiver<f64>,
}

impl CrunThread {
    fn start(bundle: &Path, root: &Path) -> CrunThread {
        let (ids, ids_rx) = std::sync::mpsc::channel::<String>();
        let (times_tx, times) = std::sync::mpsc::channel();
        let (bundle, root) = (bundle.to_path_buf(), root.to_path_buf());
        std::thread::spawn(move || {
            leave_cgroup2_mount();
            for id in ids_rx {
                let _ = times_tx.send(oci_cli_run("crun", &root, &bundle, &id));
            }
        });
        CrunThread { ids, times }
    }

    fn run(&self, id: &str) -> f64 {
        self.ids.send(id.to_owned()).expect("the crun thread runs");
        self.times.recv().expect("the crun thread answers")
    }
}

/// Moves the calling thread to a private mount namespace and unmounts
/// /sys/fs/cgroup/unified there (nothing to do where it is not mounted).
fn leave_cgroup2_mount() {
    // SAFETY: unshare(CLONE_NEWNS) (with the CLONE_FS it implies) changes
    // only the calling thread's namespaces and root/cwd record.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        fail(&format!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error()));
    }
    // SAFETY: constant C strings; MS_REC | MS_PRIVATE stops the unmount
    // below from reaching the host's namespace.
    let private = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if private != 0 {
        fail(&format!("making / private: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a constant C string.
    if unsafe { libc::umount2(c"/sys/fs/cgroup/unified".as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = std::io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            fail(&format!("unmounting /sys/fs/cgroup/unified: {e}"));
        }
    }
}

/// The fs benchmark's file: 256 MiB.
const FS_BIG_MIB: usize = 256;
/// Its tree: 100 directories of 100 files.
const FS_TREE: (usize, usize) = (100, 100);

/// One VM whose root filesystem holds the tree and the big file under
/// `/bench`, and whose share (`-v`) holds the same at `/share`; in the
/// guest, `runs` rounds of: `ls -lR` of the tree, a sequential read of the
/// file (caches dropped before each), a sequential write of a new file of
/// the same size (flushed with fsync), on each side in turn; and the file
/// read again without dropping the caches: the root's from the guest's
/// page cache (the guest's own ceiling), the share's from the host again
/// (`--cache auto` revalidates data at each open). Times are the guest's
/// own (`/proc/uptime`, 10 ms).
fn fs(runs: usize) {
    let dir = TempDir::new("bench-fs");
    let share = dir.path().join("share");
    let root = dir.path().join("root");
    host_shim::rootfs::busybox_tree(Path::new("/bin/busybox"), &root).unwrap_or_else(|e| fail(&e.to_string()));
    for base in [share.clone(), root.join("bench")] {
        fs_tree(&base);
    }
    let script = format!(
        r#"set -e
t() {{ cut -d' ' -f1 /proc/uptime; }}
drop() {{ sync; echo 3 > /proc/sys/vm/drop_caches; }}
for i in $(seq {runs}); do
  for where in /share /bench; do
    drop; s=$(t); ls -lR $where/tree > /dev/null; echo "ls $where $s $(t)"
    drop; s=$(t); cat $where/big.bin > /dev/null; echo "read $where $s $(t)"
    s=$(t); cat $where/big.bin > /dev/null; echo "reread $where $s $(t)"
    s=$(t); dd if=/dev/zero of=$where/new.bin bs=1M count={FS_BIG_MIB} conv=fsync 2>/dev/null; echo "write $where $s $(t)"
    rm $where/new.bin
  done
done"#
    );
    let version = Command::new(host_shim_virtiofsd())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "virtiofsd (version unknown)".into());
    let (accel, _) = accel::choose(None);
    let volume = format!("{}:/share", share.display());
    let rootfs = root.display().to_string();
    let out = Command::new(vmshim_bin())
        .args([
            "run", "--memory", "1024", "--rootfs", &rootfs, "-v", &volume, "--", "sh", "-c", &script,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim");
    if !out.status.success() {
        fail(&format!(
            "the fs benchmark's VM failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut times: std::collections::BTreeMap<(String, String), Vec<f64>> = Default::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [op, at, start, end] = words.as_slice() {
            let (start, end): (f64, f64) = (start.parse().unwrap_or(0.0), end.parse().unwrap_or(0.0));
            times
                .entry((op.to_string(), at.to_string()))
                .or_default()
                .push(end - start);
        }
    }
    let secs = |op: &str, at: &str| {
        times
            .get(&(op.to_owned(), at.to_owned()))
            .filter(|v| v.len() == runs)
            .map(|v| median(v.clone()))
            .unwrap_or_else(|| {
                fail(&format!(
                    "no {op} times for {at} in: {}",
                    String::from_utf8_lossy(&out.stdout)
                ))
            })
    };
    let rate = |op: &str, at: &str| FS_BIG_MIB as f64 / secs(op, at).max(0.01);
    let files = FS_TREE.0 * FS_TREE.1;
    println!("fs benchmark: one VM ({accel}, 1 vCPU, 1 GiB), median of {runs} rounds, guest clock (10 ms)");
    println!("  share: {version}, --cache auto, a host directory (-v) at /share");
    println!(
        "  guest root: /bench in the root filesystem (a read-only ext4 image on virtio-blk under a tmpfs overlay)"
    );
    println!("                                          share     guest root   ratio share/root");
    let (sw, rw) = (rate("write", "/share"), rate("write", "/bench"));
    println!("  write {FS_BIG_MIB} MiB (dd bs=1M, fsync)       {sw:8.1} MiB/s {rw:8.1} MiB/s   {:.3}   (root: the tmpfs upper)", sw / rw);
    let (sr, rr) = (rate("read", "/share"), rate("read", "/bench"));
    println!("  read {FS_BIG_MIB} MiB (cat, caches dropped)    {sr:8.1} MiB/s {rr:8.1} MiB/s   {:.3}   (root: the ext4 image)", sr / rr);
    let (sc, rc) = (rate("reread", "/share"), rate("reread", "/bench"));
    println!("  read it again (no drop)                {sc:8.1} MiB/s {rc:8.1} MiB/s   {:.3}   (share: from the host again at each open; root: the page cache)", sc / rc);
    let (sl, rl) = (secs("ls", "/share") * 1e3, secs("ls", "/bench") * 1e3);
    println!(
        "  ls -lR of {files} files (caches dropped) {sl:8.0} ms    {rl:8.0} ms      {:.3}   (root: the ext4 image)",
        sl / rl
    );
}

/// `base/tree` (FS_TREE directories of files) and `base/big.bin`.
fn fs_tree(base: &Path) {
    let (dirs, per_dir) = FS_TREE;
    for d in 0..dirs {
        let dir = base.join("tree").join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            std::fs::write(dir.join(format!("f{f:03}")), format!("file {d}/{f}\n")).unwrap();
        }
    }
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut big = std::fs::File::create(base.join("big.bin")).unwrap();
    for _ in 0..FS_BIG_MIB {
        std::io::Write::write_all(&mut big, &chunk).unwrap();
    }
}

/// The virtiofsd that vmshim runs, for its version.
fn host_shim_virtiofsd() -> PathBuf {
    host_shim::vm::find_helper_program("VMSHIM_VIRTIOFSD", "virtiofsd").unwrap_or_else(|| "virtiofsd".into())
}
