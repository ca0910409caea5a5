//! Kubernetes through containerd's CRI service: a pod of two containers run
//! as the kubelet runs one (`RunPodSandbox` with a runtime handler,
//! `CreateContainer` and `StartContainer` of each, `ExecSync`,
//! `ContainerStats`, one container stopped, removed and replaced with
//! `StopContainer` and `RemoveContainer`, then `StopPodSandbox` and
//! `RemovePodSandbox`), first under containerd's `runc` handler, which
//! proves the harness, then under `vminitd`, where the pod is one
//! micro-VM: both containers see one guest kernel, one QEMU runs for the
//! pod, and the VM has the memory the pod's annotation asks for (passed on
//! by the containerd configuration of `deploy/kubernetes/`). Each pod
//! leaves no process, tap, mount or network namespace behind.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_cri::v1::{ContainerState, PodSandboxState};
use vminitd_tests::cri::{
    container_config, links_in, netns_of, read_log, sandbox_config, CriContainerd, CriError, RUNC, VMINITD,
};
use vminitd_tests::engines::INDEX_HTML;
use vminitd_tests::eventually;

/// The port the pod's web server listens on, on the pod's loopback alone.
const PORT: u16 = 8080;

/// The server container: busybox httpd serving the image's web root on
/// the pod's 127.0.0.1 only.
const SERVER: &[&str] = &["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"];

/// The client container: fetches the server's page over the pod's
/// localhost (tried for up to 30 s while the server starts), says whether
/// it got it, then sleeps.
const CLIENT: &str = "i=0; until wget -q -O - http://127.0.0.1:8080/; do \
    i=$((i+1)); if [ $i -ge 150 ]; then echo unreachable; exec sleep inf; fi; sleep 0.2; done; \
    echo reached; exec sleep inf";

/// What a pod of two showed while it ran.
struct Pod {
    /// `/proc/sys/kernel/random/boot_id` as the server and the client read
    /// it.
    boot_ids: (String, String),
    /// The QEMU processes containerd's shims ran for the pod.
    qemus: usize,
    /// The taps in the pod's network namespace (vmshim's `vmtapN`).
    taps: Vec<String>,
    /// `MemTotal` of the client's `/proc/meminfo`, in KiB.
    mem_total_kib: u64,
}

/// The VM's memory the pod asks for, in MiB, by the annotation that
/// `deploy/kubernetes/containerd-vminitd.toml` passes on to the shim.
const VM_MEMORY_MIB: u64 = 384;

/// `MemTotal` of a `/proc/meminfo`, in KiB.
fn mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {meminfo:?}"))
}

/// A CRI call's answer, or the test fails naming the call and showing
/// containerd's log.
fn ok<T>(containerd: &CriContainerd, answer: Result<T, CriError>) -> T {
    answer.unwrap_or_else(|e| panic!("{e}\ncontainerd's log:\n{}", containerd.tail_of_log()))
}

/// Runs the pod of two under `handler`, checks what any runtime must do,
/// removes it and checks that nothing of it is left.
fn pod_of_two(containerd: &CriContainerd, handler: &str) -> Pod {
    let cri = containerd.client();
    let logs = containerd.path().join("pods").join(handler);
    std::fs::create_dir_all(&logs).unwrap();
    let mut sandbox = sandbox_config("web", &logs);
    sandbox
        .annotations
        .insert("io.vminitd.vm.memory-mib".into(), VM_MEMORY_MIB.to_string());

    let started = Instant::now();
    let pod = ok(containerd, cri.run_pod(&sandbox, handler));
    eprintln!("{handler}: RunPodSandbox {:.2} s", started.elapsed().as_secs_f64());
    let status = ok(containerd, cri.pod_status(&pod));
    let state = status.status.as_ref().map(|s| s.state);
    assert_eq!(
        state,
        Some(PodSandboxState::SandboxReady as i32),
        "{handler}: {status:?}"
    );
    let ip = status
        .status
        .as_ref()
        .and_then(|s| s.network.as_ref())
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    assert!(
        ip.starts_with(&containerd.subnet().prefix()),
        "{handler}: the pod's address {ip:?} is not of {}",
        containerd.subnet().cidr()
    );
    let info: serde_json::Value = serde_json::from_str(status.info.get("info").map_or("{}", String::as_str)).unwrap();
    assert_eq!(info["runtimeHandler"], handler, "{handler}: {info}");
    let netns: PathBuf = netns_of(&status.info).unwrap_or_else(|| panic!("{handler}: no netns in {info}"));
    assert!(
        netns.starts_with(containerd.path()),
        "{handler}: the pod's netns {} is not under containerd's state",
        netns.display()
    );

    // Two containers: a server on the pod's loopback, and a client that
    // reaches it there.
    let server_config = container_config("server", SERVER);
    let server = ok(containerd, cri.create_container(&pod, &server_config, &sandbox));
    ok(containerd, cri.start_container(&server));
    let client_config = container_config("client", &["sh", "-c", CLIENT]);
    let client = ok(containerd, cri.create_container(&pod, &client_config, &sandbox));
    ok(containerd, cri.start_container(&client));
    let client_log = logs.join("client.log");
    let said = eventually(Duration::from_secs(60), || {
        let log = read_log(&client_log);
        log.contains("reached") || log.contains("unreachable")
    });
    assert!(
        said,
        "{handler}: the client said nothing in 60 s: {:?}",
        read_log(&client_log)
    );
    assert_eq!(
        read_log(&client_log),
        format!("{INDEX_HTML}reached\n"),
        "{handler}: the client's log"
    );
    for id in [&server, &client] {
        let status = ok(containerd, cri.container_status(id));
        assert_eq!(
            status.state,
            ContainerState::ContainerRunning as i32,
            "{handler}: {status:?}"
        );
    }

    // ExecSync: stdout and stderr apart, the exit code; the server reached
    // from the client's exec too.
    let exec = ok(
        containerd,
        cri.exec_sync(&client, &["sh", "-c", "echo out; echo err >&2; exit 3"], 30),
    );
    assert_eq!(
        (
            String::from_utf8_lossy(&exec.stdout).as_ref(),
            String::from_utf8_lossy(&exec.stderr).as_ref(),
            exec.exit_code
        ),
        ("out\n", "err\n", 3),
        "{handler}"
    );
    let url = format!("http://localhost:{PORT}/");
    let exec = ok(containerd, cri.exec_sync(&client, &["wget", "-q", "-O", "-", &url], 30));
    assert_eq!(
        (String::from_utf8_lossy(&exec.stdout).as_ref(), exec.exit_code),
        (INDEX_HTML, 0),
        "{handler}: {exec:?}"
    );
    // The pod's hostname in both (its UTS namespace).
    for id in [&server, &client] {
        let exec = ok(containerd, cri.exec_sync(id, &["hostname"], 30));
        assert_eq!(String::from_utf8_lossy(&exec.stdout), "web\n", "{handler}: {exec:?}");
    }
    let boot_id = |id: &str| {
        let exec = ok(
            containerd,
            cri.exec_sync(id, &["cat", "/proc/sys/kernel/random/boot_id"], 30),
        );
        assert_eq!(exec.exit_code, 0, "{handler}: {exec:?}");
        String::from_utf8_lossy(&exec.stdout).trim().to_owned()
    };
    let boot_ids = (boot_id(&server), boot_id(&client));
    let exec = ok(containerd, cri.exec_sync(&client, &["cat", "/proc/meminfo"], 30));
    let mem_total_kib = mem_total_kib(&String::from_utf8_lossy(&exec.stdout));

    // ContainerStats: the figures a kubelet reads.
    for id in [&server, &client] {
        let stats = ok(containerd, cri.container_stats(id));
        let cpu = stats
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map_or(0, |v| v.value);
        let memory = stats
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        assert!(cpu > 0, "{handler}: no CPU time for {id}: {stats:?}");
        assert!(memory > 0, "{handler}: no working set for {id}: {stats:?}");
        assert_eq!(
            stats.attributes.as_ref().map(|a| a.id.as_str()),
            Some(id.as_str()),
            "{handler}: {stats:?}"
        );
    }

    // One container stopped and removed, as the kubelet restarts one, and
    // started again: the pod and its other container go on.
    ok(containerd, cri.stop_container(&client, 1));
    let status = ok(containerd, cri.container_status(&client));
    assert_eq!(
        (status.state, status.exit_code),
        (ContainerState::ContainerExited as i32, 128 + 9),
        "{handler}: the client after StopContainer (sleep ignores SIGTERM as its namespace's PID 1): {status:?}"
    );
    ok(containerd, cri.remove_container(&client));
    assert_eq!(ok(containerd, cri.containers()), vec![server.clone()], "{handler}");
    let again_config = container_config(
        "again",
        &["sh", "-c", "wget -q -O - http://127.0.0.1:8080/; exec sleep inf"],
    );
    let again = ok(containerd, cri.create_container(&pod, &again_config, &sandbox));
    ok(containerd, cri.start_container(&again));
    let again_log = logs.join("again.log");
    let fetched = eventually(Duration::from_secs(30), || read_log(&again_log) == INDEX_HTML);
    assert!(
        fetched,
        "{handler}: the restarted container's log: {:?}",
        read_log(&again_log)
    );
    let client = again;

    let qemus = containerd.qemus().len();
    let taps: Vec<String> = links_in(&netns)
        .unwrap_or_else(|e| panic!("{handler}: the pod's links: {e}"))
        .into_iter()
        .filter(|l| l.starts_with("vmtap"))
        .collect();

    // Stopped: its containers exited. Removed: nothing listed.
    ok(containerd, cri.stop_pod(&pod));
    for id in [&server, &client] {
        let status = ok(containerd, cri.container_status(id));
        assert_eq!(
            status.state,
            ContainerState::ContainerExited as i32,
            "{handler}: {status:?}"
        );
    }
    let status = ok(containerd, cri.pod_status(&pod));
    assert_eq!(
        status.status.as_ref().map(|s| s.state),
        Some(PodSandboxState::SandboxNotready as i32),
        "{handler}: {status:?}"
    );
    ok(containerd, cri.remove_pod(&pod));
    assert_eq!(ok(containerd, cri.pods()), Vec::<String>::new(), "{handler}");
    assert_eq!(ok(containerd, cri.containers()), Vec::<String>::new(), "{handler}");
    let mut left = Vec::new();
    let gone = eventually(Duration::from_secs(20), || {
        left = containerd.left_of_pod(&netns, &taps);
        left.is_empty()
    });
    assert!(gone, "{handler}: the removed pod left behind:\n  {}", left.join("\n  "));
    Pod {
        boot_ids,
        qemus,
        taps,
        mem_total_kib,
    }
}

fn host_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn cri_runs_a_pod_of_two_with_runc() {
    let started = Instant::now();
    let containerd = CriContainerd::start("cri-runc");
    let pod = pod_of_two(&containerd, RUNC);
    // runc's containers share the host's kernel; no VM, no tap.
    assert_eq!(pod.boot_ids, (host_boot_id(), host_boot_id()));
    assert_eq!(pod.qemus, 0);
    assert_eq!(pod.taps, Vec::<String>::new());
    let host = mem_total_kib(&std::fs::read_to_string("/proc/meminfo").unwrap());
    assert_eq!(pod.mem_total_kib, host, "runc's containers see the host's memory");
    containerd.finish();
    eprintln!("cri runc test: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn cri_runs_a_pod_of_two_in_one_vm_with_vminitd() {
    let started = Instant::now();
    let containerd = CriContainerd::start("cri-vminitd");
    let pod = pod_of_two(&containerd, VMINITD);
    // One guest kernel for both containers, not the host's; one QEMU for
    // the pod; the pod's network reached the VM through a tap beside its
    // interface.
    let (server, client) = &pod.boot_ids;
    assert_eq!(server, client, "the two containers run on different kernels");
    assert_ne!(*server, host_boot_id(), "the containers run on the host's kernel");
    assert_eq!(pod.qemus, 1, "QEMU processes for the pod");
    assert!(!pod.taps.is_empty(), "no tap in the pod's network namespace");
    // The VM has the memory the pod's annotation asked for (less what the
    // guest kernel keeps for itself).
    let mib = pod.mem_total_kib / 1024;
    assert!(
        (VM_MEMORY_MIB - 64..=VM_MEMORY_MIB).contains(&mib),
        "the guest has {mib} MiB, not the {VM_MEMORY_MIB} MiB the pod asked for"
    );
    containerd.finish();
    eprintln!("cri vminitd test: {:.1} s", started.elapsed().as_secs_f64());
}
