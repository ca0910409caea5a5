//! `bench cri`: pod start as the kubelet sees it, through containerd's CRI
//! service: `RunPodSandbox`, `CreateContainer` and `StartContainer` of one
//! container until its first line is in the log containerd writes for it
//! (CRI's `log_path`), under the `vminitd` handler beside the `runc` one,
//! interleaved pod by pod in one containerd (the tests' harness: its own
//! root, state, CNI bridge and images); and the shims' resident memory
//! while each pod runs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vminitd_tests::cri::{
    container_config, descendants, read_log, rss_kib, sandbox_config, Cri, CriContainerd, RUNC, VMINITD,
};

/// The container's command: a first line, then nothing until stopped.
const FIRST_OUTPUT: &str = "echo ready; exec sleep inf";

/// One pod's start, in ms, and what its processes held while it ran.
struct PodStart {
    /// `RunPodSandbox`.
    sandbox: f64,
    /// `CreateContainer` and `StartContainer`.
    container: f64,
    /// From `RunPodSandbox` sent to the container's first line in its log.
    first_output: f64,
    /// The shims containerd ran for the pod.
    shims: usize,
    /// Their VmRSS, in KiB.
    shim_kib: u64,
    /// Theirs and every process's below them (for vminitd: the instance
    /// daemon, QEMU and its helpers; for runc: the containers), in KiB.
    tree_kib: u64,
    /// The same by program (`/proc/PID/comm`), in KiB.
    by_program: std::collections::BTreeMap<String, u64>,
}

/// Starts pod `name` under `handler`, times it, measures its shims, and
/// removes it.
fn pod_start(containerd: &CriContainerd, cri: &Cri, handler: &str, name: &str) -> PodStart {
    let fail = |e: vminitd_tests::cri::CriError| -> ! {
        super::fail(&format!(
            "{handler}: {e}; containerd's log:\n{}",
            containerd.tail_of_log()
        ))
    };
    let logs = containerd.path().join("pods").join(name);
    std::fs::create_dir_all(&logs).unwrap();
    let sandbox = sandbox_config(name, &logs);
    let config = container_config("c", &["sh", "-c", FIRST_OUTPUT]);
    let log = logs.join("c.log");

    let started = Instant::now();
    let pod = cri.run_pod(&sandbox, handler).unwrap_or_else(|e| fail(e));
    let sandbox_ms = started.elapsed().as_secs_f64() * 1e3;
    let id = cri
        .create_container(&pod, &config, &sandbox)
        .unwrap_or_else(|e| fail(e));
    cri.start_container(&id).unwrap_or_else(|e| fail(e));
    let container_ms = started.elapsed().as_secs_f64() * 1e3 - sandbox_ms;
    let deadline = started + Duration::from_secs(60);
    while !first_line_in(&log) {
        if Instant::now() >= deadline {
            super::fail(&format!(
                "{handler}: no output from {name} in 60 s: {:?}",
                read_log(&log)
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let first_output = started.elapsed().as_secs_f64() * 1e3;

    let shims = containerd.shims();
    let shim_kib = shims.iter().filter_map(|p| rss_kib(*p)).sum();
    let mut by_program = std::collections::BTreeMap::new();
    for pid in descendants(&shims) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        *by_program.entry(comm.trim().to_owned()).or_insert(0) += rss_kib(pid).unwrap_or(0);
    }
    let tree_kib = by_program.values().sum();
    cri.stop_pod(&pod).unwrap_or_else(|e| fail(e));
    cri.remove_pod(&pod).unwrap_or_else(|e| fail(e));
    PodStart {
        sandbox: sandbox_ms,
        container: container_ms,
        first_output,
        shims: shims.len(),
        shim_kib,
        tree_kib,
        by_program,
    }
}

/// Whether the log at `path` holds the container's first line.
fn first_line_in(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0) && read_log(path).contains("ready\n")
}

/// The first line of `PROGRAM ARGS`, or `?`.
fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).lines().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// `runs` interleaved pods under each handler, after one warm-up pod each;
/// prints p10, median and p90 of each step, the ratio of the medians, and
/// the shims' memory.
pub fn cri(runs: usize) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        super::fail("bench cri needs root (containerd, runc, network namespaces, mounts)");
    }
    let containerd = CriContainerd::start("bench-cri");
    let cri = containerd.client();
    let (accel, why) = host_shim::accel::choose(None);
    // Warm-up: the images' snapshots, the VM's root filesystem image
    // cache, the page cache.
    pod_start(&containerd, &cri, VMINITD, "warm-vminitd");
    pod_start(&containerd, &cri, RUNC, "warm-runc");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..runs {
        ours.push(pod_start(&containerd, &cri, VMINITD, &format!("vminitd-{i}")));
        theirs.push(pod_start(&containerd, &cri, RUNC, &format!("runc-{i}")));
    }
    containerd.finish();

    let ms = |v: &[PodStart], f: fn(&PodStart) -> f64| v.iter().map(f).collect::<Vec<f64>>();
    println!("CRI pod start as the kubelet sees it: RunPodSandbox + CreateContainer + StartContainer of one");
    println!("busybox container until its first line is in its CRI log; {runs} pods each, interleaved; ms");
    println!(
        "  {}; handlers vminitd (io.containerd.vminitd.v2, accelerator {accel}: {why}) and runc ({})",
        first_line("containerd", &["--version"]),
        first_line("runc", &["--version"])
    );
    println!("                                             p10   median      p90");
    let row = |name: &str, v: &[f64]| {
        println!(
            "  {name:<38} {:8.1} {:8.1} {:8.1}",
            super::percentile(v, 10.0),
            super::median(v.to_vec()),
            super::percentile(v, 90.0)
        );
    };
    for (handler, pods) in [(VMINITD, &ours), (RUNC, &theirs)] {
        row(&format!("{handler}: to first output"), &ms(pods, |p| p.first_output));
        row("    RunPodSandbox", &ms(pods, |p| p.sandbox));
        row("    CreateContainer + StartContainer", &ms(pods, |p| p.container));
    }
    println!(
        "  ratio vminitd / runc (medians, to first output) {:.2}",
        super::median(ms(&ours, |p| p.first_output)) / super::median(ms(&theirs, |p| p.first_output))
    );
    println!("Shim resident memory per pod (VmRSS while the pod of one container runs), median over its pods");
    for (handler, shim, pods) in [
        (VMINITD, "containerd-shim-vminitd-v2", &ours),
        (RUNC, "containerd-shim-runc-v2", &theirs),
    ] {
        let kib = |f: fn(&PodStart) -> u64| super::median(pods.iter().map(|p| f(p) as f64).collect()) / 1024.0;
        let shims = pods.iter().map(|p| p.shims).max().unwrap_or(0);
        println!(
            "  {handler:<8} {shim}: {shims} process(es) per pod, {:6.1} MiB; with the processes below it {:7.1} MiB",
            kib(|p| p.shim_kib),
            kib(|p| p.tree_kib)
        );
    }
    for (handler, pods) in [(VMINITD, &ours), (RUNC, &theirs)] {
        let programs: std::collections::BTreeSet<&String> = pods.iter().flat_map(|p| p.by_program.keys()).collect();
        let each: Vec<String> = programs
            .into_iter()
            .map(|name| {
                let kib: Vec<f64> = pods
                    .iter()
                    .map(|p| p.by_program.get(name).copied().unwrap_or(0) as f64)
                    .collect();
                format!("{name} {:.1}", super::median(kib) / 1024.0)
            })
            .collect();
        println!("  {handler:<8} by program, MiB: {}", each.join(", "));
    }
}
