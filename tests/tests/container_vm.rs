//! The container engine inside a micro-VM: vminitd as the guest's init
//! creates a container over the root filesystem the VM booted with, with
//! cgroup v2 limits (the guest kernel has the controllers), a device
//! allow-list, a user namespace, and exec into it; a container's cgroup
//! figures, an OOM kill among them.

use std::process::{Command, Stdio};

use agent_proto::{
    ContainerSpec, ContainerStatus, CpuResources, DeviceRule, IdMapping, MemoryResources, Namespace, ProcessSpec,
    Resources, StreamKind, GUEST_ROOTFS,
};
use host_shim::instance::Instances;
use host_shim::Client;
use tokio::io::AsyncReadExt;
use vminitd_tests::{mount, runc_mounts, vmshim_bin, TempDir};

fn spec(id: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        id: id.into(),
        root: GUEST_ROOTFS.into(),
        process: ProcessSpec {
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin:/sbin:/usr/bin".into()],
            ..Default::default()
        },
        hostname: Some(id.into()),
        namespaces: ["pid", "network", "ipc", "uts", "mount", "cgroup"]
            .iter()
            .map(|k| Namespace {
                kind: (*k).into(),
                path: None,
            })
            .collect(),
        mounts: [
            runc_mounts(),
            vec![mount(
                "/sys/fs/cgroup",
                "cgroup",
                &["nosuid", "noexec", "nodev", "relatime", "ro"],
            )],
        ]
        .concat(),
        ..Default::default()
    }
}

/// Attaches `process`'s stdout (before its start); the task reads it all.
async fn output(client: &Client, process: u64) -> tokio::task::JoinHandle<String> {
    let mut out = client.attach(process, StreamKind::Stdout).await.unwrap();
    tokio::spawn(async move {
        let mut text = String::new();
        out.read_to_string(&mut text).await.unwrap();
        text
    })
}

#[tokio::test]
async fn containers_with_cgroup_limits_devices_and_user_namespaces_in_a_vm() {
    let state = TempDir::new("container-vm");
    let boot = Command::new(vmshim_bin())
        .args(["run", "-d", "--name", "engine", "--", "sleep", "600"])
        .env("VMSHIM_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim");
    assert!(boot.status.success(), "{}", String::from_utf8_lossy(&boot.stderr));
    let instances = Instances::at(state.path());
    let endpoint = instances.endpoint("engine").unwrap();
    let client = Client::connect(&endpoint).await.unwrap();

    // Limits, as a container's own cgroup (its cgroup namespace's root).
    let mut limited = spec(
        "limited",
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu.weight; \
         cat /proc/self/cgroup; \
         head -c 1 /dev/zero > /dev/null && echo zero-ok; \
         head -c 1 /dev/full 2>/dev/null > /dev/null && echo full-ok || echo full-denied",
    );
    limited.resources = Some(Resources {
        memory: Some(MemoryResources {
            limit: Some(64 << 20),
            ..Default::default()
        }),
        cpu: Some(CpuResources {
            shares: Some(1024),
            quota: Some(50000),
            period: Some(100000),
            ..Default::default()
        }),
        pids_limit: Some(32),
        // Everything but /dev/full (c 1:7).
        devices: vec![
            DeviceRule {
                allow: true,
                access: Some("rwm".into()),
                ..Default::default()
            },
            DeviceRule {
                allow: false,
                kind: Some("c".into()),
                major: Some(1),
                minor: Some(7),
                access: Some("rwm".into()),
            },
        ],
        ..Default::default()
    });
    let created = client.create_container(limited).await.expect("create in the VM");
    let out = output(&client, created.process).await;
    client.start_container("limited").await.unwrap();
    let status = client.wait(created.process).await.unwrap();
    let text = out.await.unwrap();
    assert_eq!(status.code, Some(0), "{text}");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["67108864", "32", "50000 100000", "39", "0::/", "zero-ok", "full-denied"],
        "{text}"
    );
    client.delete_container("limited", false).await.unwrap();

    // A user namespace, and exec into the running container.
    let mut userns = spec("userns", "exec sleep 60");
    userns.namespaces.push(Namespace {
        kind: "user".into(),
        path: None,
    });
    let map = IdMapping {
        container_id: 0,
        host_id: 200000,
        size: 65536,
    };
    userns.uid_mappings = vec![map];
    userns.gid_mappings = vec![map];
    userns.mounts.pop(); // no cgroup mount: sysfs/cgroup2 need more care in a user namespace
    client
        .create_container(userns)
        .await
        .expect("create with a user namespace");
    client.start_container("userns").await.unwrap();
    assert_eq!(
        client.container_state("userns").await.unwrap().status,
        ContainerStatus::Running
    );
    let exec = client
        .exec_container(
            "userns",
            ProcessSpec {
                args: vec![
                    "sh".into(),
                    "-c".into(),
                    "id -u; cat /proc/self/uid_map; hostname; cat /proc/1/comm".into(),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let reader = output(&client, exec).await;
    client.start(exec).await.unwrap();
    assert_eq!(client.wait(exec).await.unwrap().code, Some(0));
    let text = reader.await.unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines, ["0", "0 200000 65536", "userns", "sleep"], "{text}");
    client.delete_container("userns", true).await.unwrap();

    let stop = Command::new(vmshim_bin())
        .args(["stop", "engine"])
        .env("VMSHIM_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
}

#[tokio::test]
async fn a_containers_cgroup_figures_and_oom_kills_in_a_vm() {
    let state = TempDir::new("container-vm-stats");
    let boot = Command::new(vmshim_bin())
        .args(["run", "-d", "--name", "figures", "--", "sleep", "600"])
        .env("VMSHIM_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim");
    assert!(boot.status.success(), "{}", String::from_utf8_lossy(&boot.stderr));
    let endpoint = Instances::at(state.path()).endpoint("figures").unwrap();
    let client = Client::connect(&endpoint).await.unwrap();

    // A shell whose child outgrows the memory limit (bounded: 2^28 bytes)
    // and is OOM-killed, while the shell goes on.
    let hog = "x=a; i=0; while [ $i -lt 28 ]; do x=$x$x; i=$((i+1)); done";
    let mut hungry = spec("hungry", &format!("sh -c '{hog}'; echo child $?; exec sleep 60"));
    hungry.resources = Some(Resources {
        memory: Some(MemoryResources {
            limit: Some(32 << 20),
            ..Default::default()
        }),
        pids_limit: Some(16),
        ..Default::default()
    });
    let created = client.create_container(hungry).await.unwrap();
    let out = output(&client, created.process).await;

    // Created: its process waits in its cgroup, under its limits.
    let stats = client.container_stats("hungry").await.unwrap();
    let memory = stats.memory.clone().expect("memory figures");
    assert_eq!(memory.max, Some(32 << 20), "{stats:?}");
    assert!(memory.current > 0, "{stats:?}");
    let pids = stats.pids.expect("pids figures");
    assert_eq!((pids.current, pids.max), (1, Some(16)), "{stats:?}");
    assert_eq!(stats.oom_kills(), 0, "{stats:?}");

    client.start_container("hungry").await.unwrap();
    let mut stats = client.container_stats("hungry").await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while stats.oom_kills() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stats = client.container_stats("hungry").await.unwrap();
    }
    let events = stats.memory_events.expect("memory.events");
    assert_eq!((events.oom, events.oom_kill), (1, 1), "{stats:?}");
    assert!(events.max > 0, "{stats:?}");
    assert_eq!(
        client.container_state("hungry").await.unwrap().status,
        ContainerStatus::Running
    );
    let memory = stats.memory.clone().unwrap();
    assert!(
        memory.peak > Some(16 << 20),
        "it grew past 16 MiB before the kill: {stats:?}"
    );
    assert!(
        memory.stat.contains_key("anon") && memory.stat.get("pgfault") > Some(&0),
        "{stats:?}"
    );
    let cpu = stats.cpu.expect("cpu.stat");
    assert!(cpu.usage_usec > 0 && cpu.usage_usec >= cpu.user_usec, "{cpu:?}");
    assert!(stats.io.iter().any(|device| device.rbytes > 0), "{stats:?}");

    // The shell has said how its child ended once it has become `sleep`
    // (on a loaded host that can come well after the kill is counted).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let comm = ProcessSpec {
            args: vec!["cat".into(), "/proc/1/comm".into()],
            ..Default::default()
        };
        let exec = client.exec_container("hungry", comm).await.unwrap();
        let reader = output(&client, exec).await;
        client.start(exec).await.unwrap();
        client.wait(exec).await.unwrap();
        let comm = reader.await.unwrap();
        if comm == "sleep\n" || std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Stopped, not deleted: its cgroup and figures stay.
    client.kill_container("hungry", 9, false).await.unwrap();
    let status = client.wait(created.process).await.unwrap();
    assert_eq!(status.signal, Some(9));
    assert_eq!(out.await.unwrap(), "child 137\n");
    let stats = client.container_stats("hungry").await.unwrap();
    assert_eq!(stats.oom_kills(), 1, "{stats:?}");
    assert_eq!(stats.pids.map(|p| p.current), Some(0), "{stats:?}");

    // Deleted, or never made: not found, by name.
    client.delete_container("hungry", false).await.unwrap();
    for id in ["hungry", "nope"] {
        let e = client.container_stats(id).await.unwrap_err();
        let body = e.agent_error().expect("the agent's error");
        assert_eq!(body.code, agent_proto::ErrorCode::NotFound, "{e}");
        assert!(body.message.contains(&format!("\"{id}\"")), "{e}");
    }

    let stop = Command::new(vmshim_bin())
        .args(["stop", "figures"])
        .env("VMSHIM_STATE_DIR", state.path())
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
}
