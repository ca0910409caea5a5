//! In a real micro-VM, as an attacker would try it: a process of the guest
//! and a container's process try to reach the agent over vsock, root on the
//! host tries without the VM's agent key, and another local user tries the
//! VM's sockets and state. None gets through; the owner still does.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_proto::{ContainerSpec, ErrorCode, Namespace, ProcessSpec, User, GUEST_ROOTFS, VSOCK_ANNOTATION};
use host_shim::instance::Instances;
use host_shim::Client;
use vminitd_tests::{probe_bin, run, vmshim_bin, Output, TempDir};

/// `vsock-probe CID PORT` as a plain process of the guest.
fn probe(cid: u32, uid: u32, allow_vsock: bool) -> ProcessSpec {
    ProcessSpec {
        args: vec!["/bin/vsock-probe".into(), cid.to_string(), "1024".into()],
        user: Some(User {
            uid,
            gid: uid,
            additional_gids: vec![],
        }),
        root: Some(GUEST_ROOTFS.into()),
        allow_vsock,
        ..Default::default()
    }
}

/// A container in its own user, network, pid, ipc, uts and mount
/// namespaces that runs the probe against the guest's own CID.
fn container(id: &str, annotations: BTreeMap<String, String>) -> ContainerSpec {
    let map = agent_proto::IdMapping {
        container_id: 0,
        host_id: 100000,
        size: 65536,
    };
    ContainerSpec {
        id: id.into(),
        root: GUEST_ROOTFS.into(),
        process: ProcessSpec {
            args: vec!["/bin/vsock-probe".into(), "3".into(), "1024".into()],
            ..Default::default()
        },
        namespaces: ["user", "pid", "network", "ipc", "uts", "mount"]
            .iter()
            .map(|k| Namespace {
                kind: (*k).into(),
                path: None,
            })
            .collect(),
        uid_mappings: vec![map],
        gid_mappings: vec![map],
        mounts: vminitd_tests::runc_mounts(),
        annotations,
        ..Default::default()
    }
}

async fn container_output(client: &Client, spec: ContainerSpec) -> Output {
    let id = spec.id.clone();
    let created = client.create_container(spec).await.expect("create the container");
    let (out, err) = (vminitd_tests::Capture::default(), vminitd_tests::Capture::default());
    let mut stdout = client
        .attach(created.process, agent_proto::StreamKind::Stdout)
        .await
        .unwrap();
    let mut stderr = client
        .attach(created.process, agent_proto::StreamKind::Stderr)
        .await
        .unwrap();
    let copy_out = {
        let mut out = out.clone();
        tokio::spawn(async move { tokio::io::copy(&mut stdout, &mut out).await })
    };
    let copy_err = {
        let mut err = err.clone();
        tokio::spawn(async move { tokio::io::copy(&mut stderr, &mut err).await })
    };
    client.start_container(&id).await.unwrap();
    let status = client.wait(created.process).await.unwrap();
    let _ = (copy_out.await, copy_err.await);
    client.delete_container(&id, true).await.unwrap();
    Output {
        stdout: out.take(),
        stderr: err.take(),
        status,
    }
}

#[tokio::test]
async fn nothing_in_the_guest_and_no_other_user_reaches_a_vms_agent() {
    let state = TempDir::new("access-vm");
    let root = TempDir::new("access-root");
    let tree = root.path().join("tree");
    host_shim::rootfs::busybox_tree(std::path::Path::new("/bin/busybox"), &tree).expect("a busybox tree");
    std::fs::copy(probe_bin(), tree.join("bin/vsock-probe")).unwrap();
    let boot = Command::new(vmshim_bin())
        .args(["run", "-d", "--name", "guard", "--rootfs"])
        .arg(&tree)
        .args(["--", "sleep", "600"])
        .env("VMSHIM_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim");
    assert!(boot.status.success(), "{}", String::from_utf8_lossy(&boot.stderr));
    let addr = Instances::at(state.path()).endpoint("guard").unwrap();
    let client = Client::connect(&addr).await.expect("the owner, with the key");

    // A process of the guest, as nobody: no vsock socket at all (seccomp).
    let out = run(&client, probe(1, 65534, false), None).await.unwrap();
    assert_eq!(
        (out.status.code, out.stdout_str().trim()),
        (Some(2), "socket: Operation not permitted (os error 1)"),
        "{}",
        out.stderr_str()
    );
    // Allowed vsock, it still finds no way to the agent: the guest kernel
    // has no loopback transport, for CID 1 (local) or its own CID 3.
    for cid in [1, 3] {
        let out = run(&client, probe(cid, 65534, true), None).await.unwrap();
        assert_eq!(out.status.code, Some(3), "CID {cid}: {}", out.stdout_str());
        assert!(
            out.stdout_str().starts_with("connect: "),
            "CID {cid}: {}",
            out.stdout_str()
        );
    }
    // Not even root in the guest.
    let out = run(&client, probe(3, 0, true), None).await.unwrap();
    assert_eq!(out.status.code, Some(3), "{}", out.stdout_str());
    // Nor by way of the agent's memory, which would put code in the agent,
    // outside the vsock filter: root of the guest has no CAP_SYS_PTRACE.
    let mem = ProcessSpec {
        root: Some(GUEST_ROOTFS.into()),
        ..vminitd_tests::sh("(exec 3</proc/1/mem) 2>/dev/null && echo open || echo refused")
    };
    let out = run(&client, mem, None).await.unwrap();
    assert_eq!(out.stdout_str(), "refused\n", "{}", out.stderr_str());

    // A container's process: no vsock socket, unless its spec allows it;
    // then no route to the agent either.
    let out = container_output(&client, container("denied", BTreeMap::new())).await;
    assert_eq!(
        (out.status.code, out.stdout_str().trim()),
        (Some(2), "socket: Operation not permitted (os error 1)"),
        "{}",
        out.stderr_str()
    );
    let allow = BTreeMap::from([(VSOCK_ANNOTATION.to_owned(), "allow".to_owned())]);
    let out = container_output(&client, container("allowed", allow)).await;
    assert_eq!(out.status.code, Some(3), "{} {}", out.stdout_str(), out.stderr_str());
    let bad = BTreeMap::from([(VSOCK_ANNOTATION.to_owned(), "yes".to_owned())]);
    let err = client.create_container(container("bad", bad)).await.unwrap_err();
    assert!(err.to_string().contains(VSOCK_ANNOTATION), "{err}");

    // Root on the host without the VM's agent key: refused, and told why.
    let err = Client::connect(&addr.endpoint).await.err().expect("no key: refused");
    assert_eq!(
        err.agent_error().map(|e| e.code),
        Some(ErrorCode::Unauthorized),
        "{err}"
    );

    // Another local user: neither the VM's sockets nor its state.
    let nobody = |args: &[&str]| {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", "env"])
            .arg(format!("VMSHIM_STATE_DIR={}", state.path().display()))
            .arg(vmshim_bin())
            .args(args)
            .output()
            .expect("runuser");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let url = addr.endpoint.to_string();
    let (code, stderr) = nobody(&["exec", "--connect", &url, "--", "true"]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{url}: {stderr}");
    let (code, stderr) = nobody(&["exec", "guard", "--", "true"]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");

    // The agent keeps the means to serve: the OOM killer passes it over,
    // its descriptor limit is raised, and its processes get neither; they
    // live in the workloads' cgroup, whose memory.max leaves it headroom.
    let script = "cat /proc/1/oom_score_adj /proc/self/oom_score_adj; \
                  grep 'open files' /proc/1/limits /proc/self/limits | tr -s ' ' | cut -d' ' -f4,5; \
                  cat /proc/self/cgroup /proc/1/cgroup; \
                  mkdir -p /mnt/cgroup && mount -t cgroup2 none /mnt/cgroup && \
                  cat /mnt/cgroup/workloads/memory.max";
    let seen = ProcessSpec {
        root: Some(GUEST_ROOTFS.into()),
        ..vminitd_tests::sh(script)
    };
    let out = run(&client, seen, None).await.unwrap();
    let lines: Vec<&str> = out
        .stdout
        .split(|b| *b == b'\n')
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    assert_eq!(out.status.code, Some(0), "{}", out.stderr_str());
    assert_eq!(&lines[..2], ["-1000", "0"], "{}", out.stdout_str());
    assert_eq!(lines[2], "1048576 1048576", "{}", out.stdout_str());
    assert_eq!(lines[3], "1024 4096", "{}", out.stdout_str());
    assert_eq!(
        &lines[4..6],
        ["0::/workloads/processes", "0::/"],
        "{}",
        out.stdout_str()
    );
    let memory_max: u64 = lines[6].parse().expect("a number");
    assert!(memory_max > 128 << 20 && memory_max <= (256 - 16) << 20, "{memory_max}");
    // A process that asks for more than the VM has fills the workloads'
    // share: the agent keeps answering meanwhile (the workloads thrash or
    // meet their OOM killer, the agent does neither), and stops it.
    let hog = ProcessSpec {
        root: Some(GUEST_ROOTFS.into()),
        ..vminitd_tests::sh("exec awk 'BEGIN { for (i = 0; ; i++) a[i] = sprintf(\"%1048576d\", i) }'")
    };
    let hog = host_shim::exec::spawn(&client, hog, Default::default()).await.unwrap();
    let started = std::time::Instant::now();
    let mut least_available = u64::MAX;
    while started.elapsed() < Duration::from_secs(120) {
        let stats = tokio::time::timeout(Duration::from_secs(10), client.stats())
            .await
            .expect("the agent answers while the workloads fill their memory")
            .unwrap();
        least_available = least_available.min(stats.memory.available_bytes);
        if least_available < 64 << 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = client.signal(hog.process, libc::SIGKILL).await;
    let status = tokio::time::timeout(Duration::from_secs(60), hog.wait())
        .await
        .expect("the hog ends once killed")
        .unwrap();
    assert_eq!(status.signal, Some(libc::SIGKILL), "{status:?}");
    assert!(
        least_available < 128 << 20,
        "the hog never pressed: {least_available} bytes available"
    );
    eprintln!(
        "memory hog: least available {} MiB after {:?}",
        least_available >> 20,
        started.elapsed()
    );

    // The owner is still served.
    let owner = ProcessSpec {
        root: Some(GUEST_ROOTFS.into()),
        ..vminitd_tests::sh("echo owner")
    };
    let out = run(&client, owner, None).await.unwrap();
    assert_eq!(out.stdout_str(), "owner\n");
    let stop = Command::new(vmshim_bin())
        .args(["stop", "guard"])
        .env("VMSHIM_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
}
