//! `bench podman`: the wall time of `podman run --rm IMAGE true`, with
//! vminitd-runtime (each container a micro-VM) beside runc, and crun where
//! it runs on this host, interleaved run by run in one invocation; each
//! runtime in a podman of its own (the tests' harness: storage, run
//! directory and default network in a scratch directory, the tests'
//! busybox image).

use std::process::{Command, Stdio};
use std::time::Instant;

use vminitd_tests::engines::{Podman, Runtime, IMAGE};

/// One timed `podman [--runtime NAME] run --rm IMAGE true`, in ms; the
/// error's output when it fails.
fn run_true(podman: &Podman, runtime: Option<&str>) -> Result<f64, String> {
    let mut cmd = podman.command();
    if let Some(name) = runtime {
        cmd.args(["--runtime", name]);
    }
    cmd.args(["run", "--rm", IMAGE, "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let out = cmd.output().map_err(|e| format!("podman: {e}"))?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match out.status.success() {
        true => Ok(ms),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
    }
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

/// `runs` interleaved rounds of `podman run --rm IMAGE true` under each
/// runtime, after one warm-up run each; prints p10, median and p90 and the
/// ratios of the medians.
pub fn podman(runs: usize) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        super::fail("bench podman needs root (rootful podman: netavark, overlay mounts)");
    }
    let vminitd = Podman::start(Runtime::Vminitd);
    let runc = Podman::start(Runtime::Runc);
    let (accel, why) = host_shim::accel::choose(None);
    let fail = |what: &str, e: String| -> ! { super::fail(&format!("{what}: podman run --rm {IMAGE} true: {e}")) };
    // Warm-up: the image's overlay, the VM's root filesystem image cache,
    // the page cache.
    run_true(&vminitd, None).unwrap_or_else(|e| fail("vminitd", e));
    run_true(&runc, None).unwrap_or_else(|e| fail("runc", e));
    // crun is measured where it runs here: on a host whose cgroups are
    // hybrid (v1 controllers with an empty cgroup2 at unified) it refuses.
    let crun = run_true(&runc, Some("crun"));

    let (mut ours, mut runcs, mut cruns) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(run_true(&vminitd, None).unwrap_or_else(|e| fail("vminitd", e)));
        runcs.push(run_true(&runc, None).unwrap_or_else(|e| fail("runc", e)));
        if crun.is_ok() {
            cruns.push(run_true(&runc, Some("crun")).unwrap_or_else(|e| fail("crun", e)));
        }
    }

    println!("podman run --rm {IMAGE} true: the wall time of the podman process, {runs} runs each,");
    println!("interleaved; milliseconds");
    println!(
        "  {}; conmon {}",
        first_line("podman", &["--version"]),
        first_line("conmon", &["--version"]).trim_start_matches("conmon version ")
    );
    println!(
        "  VMs: accelerator {accel} ({why}); vmshim {}",
        vminitd_tests::vmshim_bin().display()
    );
    println!("                                                        p10   median      p90");
    let row = |name: &str, v: &[f64]| {
        println!(
            "  {name:<48} {:8.1} {:8.1} {:8.1}",
            super::percentile(v, 10.0),
            super::median(v.to_vec()),
            super::percentile(v, 90.0)
        );
    };
    row("vminitd-runtime: a micro-VM per container", &ours);
    row(&first_line("runc", &["--version"]), &runcs);
    match &crun {
        Ok(_) => row(&first_line("crun", &["--version"]), &cruns),
        Err(e) => println!("  crun: not measured here: {}", e.lines().last().unwrap_or(e)),
    }
    let mut ratios = format!(
        "  ratio vminitd / runc (medians) {:.2}",
        super::median(ours.clone()) / super::median(runcs)
    );
    if crun.is_ok() {
        ratios.push_str(&format!(
            "; vminitd / crun {:.2}",
            super::median(ours) / super::median(cruns)
        ));
    }
    println!("{ratios}");
    println!("  each: podman creates the container (overlay root, netavark network), conmon runs the");
    println!("    runtime's create and start, the process runs `true`, conmon's exit and podman's");
    println!("    cleanup, `--rm` removes it. vminitd-runtime's create also packs the root into an");
    println!("    ext4 image and boots the VM; its delete shuts the VM down.");
    vminitd.finish();
    runc.finish();
}
