//! The container engine, with the agent as PID 1 of a namespace on the
//! host: namespaces, mounts, masked and read-only paths, devices, the
//! lifecycle, exec into a running container, and bad specs.

use std::path::Path;
use std::time::Duration;

use agent_proto::{ContainerSpec, ContainerStatus, ErrorCode, Mount, Namespace, ProcessSpec, StreamKind};
use host_shim::Client;
use tokio::io::AsyncReadExt;
use vminitd_tests::{mount, runc_mounts, NamespacedAgent, TempDir};

fn ns(kinds: &[&str]) -> Vec<Namespace> {
    kinds
        .iter()
        .map(|k| Namespace {
            kind: (*k).into(),
            path: None,
        })
        .collect()
}

/// A busybox root and a spec shaped like `runc spec`'s.
fn container(dir: &Path, id: &str, script: &str) -> ContainerSpec {
    let root = dir.join(format!("rootfs-{id}"));
    host_shim::rootfs::busybox_tree(Path::new("/bin/busybox"), &root).unwrap();
    ContainerSpec {
        id: id.into(),
        bundle: dir.display().to_string(),
        root: root.display().to_string(),
        process: ProcessSpec {
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin:/sbin".into()],
            ..Default::default()
        },
        hostname: Some("box".into()),
        namespaces: ns(&["pid", "network", "ipc", "uts", "mount"]),
        mounts: {
            // runc's, with /dev/shm and /dev/mqueue before /sys.
            let mut mounts = runc_mounts();
            mounts.insert(
                3,
                mount(
                    "/dev/shm",
                    "tmpfs",
                    &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
                ),
            );
            mounts.insert(4, mount("/dev/mqueue", "mqueue", &["nosuid", "noexec", "nodev"]));
            mounts
        },
        masked_paths: vec!["/proc/version".into(), "/sys/kernel".into(), "/proc/nonexistent".into()],
        readonly_paths: vec!["/proc/sys".into(), "/proc/sysrq-trigger".into()],
        ..Default::default()
    }
}

/// Creates, attaches stdout and stderr, starts and waits; returns the
/// output and the exit code.
async fn run_container(client: &Client, spec: ContainerSpec) -> (String, String, i32) {
    let id = spec.id.clone();
    let created = client.create_container(spec).await.expect("create");
    let state = client.container_state(&id).await.unwrap();
    assert_eq!(state.status, ContainerStatus::Created);
    assert_eq!(state.pid, Some(created.pid));
    let mut out = client.attach(created.process, StreamKind::Stdout).await.unwrap();
    let mut err = client.attach(created.process, StreamKind::Stderr).await.unwrap();
    client.start_container(&id).await.expect("start");
    let read_out = tokio::spawn(async move {
        let mut s = String::new();
        out.read_to_string(&mut s).await.unwrap();
        s
    });
    let read_err = tokio::spawn(async move {
        let mut s = String::new();
        err.read_to_string(&mut s).await.unwrap();
        s
    });
    let status = client.wait(created.process).await.unwrap();
    let state = client.container_state(&id).await.unwrap();
    assert_eq!(state.status, ContainerStatus::Stopped);
    assert_eq!(state.exit, Some(status));
    client.delete_container(&id, false).await.expect("delete");
    (read_out.await.unwrap(), read_err.await.unwrap(), status.shell_code())
}

/// Runs `process` in running container `id`; its stdout and exit code.
async fn exec_output(client: &Client, id: &str, process: ProcessSpec) -> (String, i32) {
    let exec = client.exec_container(id, process).await.expect("exec_container");
    let mut out = client.attach(exec, StreamKind::Stdout).await.unwrap();
    client.start(exec).await.expect("start");
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    (text, client.wait(exec).await.unwrap().shell_code())
}

#[tokio::test]
async fn a_container_sees_its_own_namespaces_and_mounts() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    let mut spec = container(
        dir.path(),
        "c1",
        "echo pid=$$; hostname; \
         wc -c < /proc/version; \
         echo x > /proc/sys/kernel/hostname 2>/dev/null && echo sys-writable || echo sys-readonly; \
         ls /sys/kernel | wc -l; \
         ls -l /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty | cut -c1; \
         readlink /dev/ptmx; readlink /dev/fd; \
         touch /newfile 2>/dev/null && echo root-writable || echo root-readonly; \
         grep ' / ' /proc/self/mountinfo | grep -o ' ro,\\| rw,' | head -1; \
         ip link 2>/dev/null | grep -c '^[0-9]' || cat /proc/net/dev | tail -n +3 | wc -l",
    );
    spec.readonly_root = true;
    let (out, err, code) = run_container(&client, spec).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pid=1", "{out}");
    assert_eq!(lines[1], "box");
    assert_eq!(lines[2].trim(), "0", "/proc/version is masked: {out}");
    assert_eq!(lines[3], "sys-readonly");
    assert_eq!(lines[4].trim(), "0", "/sys/kernel is masked: {out}");
    assert_eq!(&lines[5..11], ["c"; 6], "default devices: {out}");
    assert_eq!(&lines[11..13], ["pts/ptmx", "/proc/self/fd"]);
    assert_eq!(lines[13], "root-readonly");
    assert_eq!(lines[14].trim(), "ro,");
    // A new network namespace has only its loopback.
    assert_eq!(lines[15].trim(), "1", "{out}");
}

#[tokio::test]
async fn lifecycle_kill_exec_and_delete() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    let spec = container(dir.path(), "web", "echo started; exec sleep 60");
    let created = client.create_container(spec.clone()).await.unwrap();
    // The id is taken.
    let e = client.create_container(spec).await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidState);
    assert!(e.to_string().contains("already exists"), "{e}");
    client.start_container("web").await.unwrap();
    assert_eq!(
        client.container_state("web").await.unwrap().status,
        ContainerStatus::Running
    );
    let e = client.start_container("web").await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidState);

    // exec joins every namespace: same hostname, same pid namespace (sees
    // the container's sleep as pid 1), same root.
    let script = "hostname; cat /proc/1/comm; ls /";
    let (text, code) = exec_output(&client, "web", vminitd_tests::sh(script)).await;
    assert_eq!(code, 0, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..2], ["box", "sleep"], "{text}");
    assert!(lines.contains(&"bin") && !lines.contains(&"rootfs-web"), "{text}");

    // A running container is not deleted without force.
    let e = client.delete_container("web", false).await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidState);
    client.kill_container("web", libc::SIGKILL, false).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), client.wait(created.process))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.signal, Some(libc::SIGKILL));
    let state = client.container_state("web").await.unwrap();
    assert_eq!((state.status, state.pid), (ContainerStatus::Stopped, None));
    let e = client.kill_container("web", libc::SIGTERM, false).await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidState);
    client.delete_container("web", false).await.unwrap();
    let e = client.container_state("web").await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::NotFound);
    assert!(client.list_containers().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_created_container_can_be_deleted_and_a_forced_delete_kills() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    client
        .create_container(container(dir.path(), "never", "echo never"))
        .await
        .unwrap();
    let list = client.list_containers().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].status, ContainerStatus::Created);
    client.delete_container("never", false).await.unwrap();

    client
        .create_container(container(dir.path(), "busy", "exec sleep 60"))
        .await
        .unwrap();
    client.start_container("busy").await.unwrap();
    client.delete_container("busy", true).await.unwrap();
    assert!(client.list_containers().await.unwrap().is_empty());
    // The id is free again.
    client
        .create_container(container(dir.path(), "busy", "true"))
        .await
        .unwrap();
    client.delete_container("busy", false).await.unwrap();
}

#[tokio::test]
async fn hostile_links_in_the_root_stay_inside_it() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let mut spec = container(dir.path(), "links", "grep -c ' /t1 \\| /t2 ' /proc/self/mountinfo");
    let root = Path::new(&spec.root).to_owned();
    // Mount destinations through a link to `/` and a `..` link: both are
    // resolved inside the root.
    std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", root.join("up")).unwrap();
    spec.mounts.push(mount("/escape/t1", "tmpfs", &[]));
    spec.mounts.push(mount("/up/t2", "tmpfs", &[]));
    let (out, err, code) = run_container(&client, spec).await;
    assert_eq!((out.trim(), code), ("2", 0), "{err}");
    assert!(
        root.join("t1").is_dir() && root.join("t2").is_dir(),
        "made inside the root"
    );
    assert!(!Path::new("/t1").exists() && !Path::new("/t2").exists());

    // A link to the host's directory is the root's path of that name: it
    // dangles there, and the directories are made there (as runc's
    // SecureJoin + MkdirAll do), never outside.
    let mut spec = container(dir.path(), "dangling", "grep -c '/outside/t3 ' /proc/self/mountinfo");
    let root = Path::new(&spec.root).to_owned();
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    spec.mounts.push(mount("/escape/t3", "tmpfs", &[]));
    let (out, err, code) = run_container(&client, spec).await;
    assert_eq!((out.trim(), code), ("1", 0), "{err}");
    assert!(root.join(outside.strip_prefix("/").unwrap()).join("t3").is_dir());
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing was made outside"
    );
}

#[tokio::test]
async fn bad_specs_are_refused_naming_the_field() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    let base = container(dir.path(), "bad", "true");
    let cases: Vec<(ContainerSpec, &str)> = vec![
        (
            ContainerSpec {
                id: "../x".into(),
                ..base.clone()
            },
            "container id \"../x\" is invalid",
        ),
        (
            ContainerSpec {
                namespaces: ns(&["pid", "mount", "time"]),
                ..base.clone()
            },
            "linux.namespaces[2]: unknown type \"time\"",
        ),
        (
            ContainerSpec {
                namespaces: ns(&["pid"]),
                ..base.clone()
            },
            "a container needs a new mount namespace",
        ),
        (
            ContainerSpec {
                mounts: vec![mount("/x", "tmpfs", &["tmpcopyup"])],
                ..base.clone()
            },
            "mounts[0] (/x): unknown option \"tmpcopyup\"",
        ),
        (
            ContainerSpec {
                root: "/nonexistent-root".into(),
                ..base.clone()
            },
            "root.path \"/nonexistent-root\"",
        ),
        (
            ContainerSpec {
                namespaces: ns(&["pid", "mount"]),
                ..base.clone()
            },
            "hostname: a new uts namespace is needed",
        ),
    ];
    for (spec, message) in cases {
        let e = client.create_container(spec).await.unwrap_err();
        let body = e.agent_error().unwrap_or_else(|| panic!("{e}"));
        assert_eq!(body.code, ErrorCode::InvalidRequest, "{e}");
        assert!(
            body.message.contains(message),
            "{:?} does not name {message:?}",
            body.message
        );
    }
    // A mount the kernel refuses names the mount.
    let mut spec = base.clone();
    spec.mounts.push(mount("/bad", "nosuchfs", &[]));
    let e = client.create_container(spec).await.unwrap_err();
    let body = e.agent_error().unwrap();
    assert_eq!(body.code, ErrorCode::ExecFailed);
    assert!(body.message.contains("mounts[6]: cannot mount"), "{}", body.message);
    // Nothing is left behind, and the agent serves on.
    assert!(client.list_containers().await.unwrap().is_empty());
    client.create_container(base).await.unwrap();
    client.delete_container("bad", false).await.unwrap();
}

#[tokio::test]
async fn a_user_namespace_with_id_maps() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    let mut spec = container(
        dir.path(),
        "userns",
        "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; ls -l /dev/null | cut -c1; \
         touch /tmp/made && ls -ln /tmp/made | awk '{print $3}'; \
         [ -n \"$(ls /sys/fs/cgroup)\" ] && echo cgroups-visible; \
         touch /sys/fs/cgroup/x 2>/dev/null || echo cgroups-readonly",
    );
    spec.namespaces = ns(&["user", "pid", "network", "ipc", "uts", "mount"]);
    let map = agent_proto::IdMapping {
        container_id: 0,
        host_id: 100000,
        size: 65536,
    };
    spec.uid_mappings = vec![map];
    spec.gid_mappings = vec![map];
    spec.mounts.push(mount("/tmp", "tmpfs", &[]));
    // As in a rootless spec: a cgroup mount without a cgroup namespace,
    // which the kernel refuses in a user namespace: the agent's is bound.
    spec.mounts.push(mount(
        "/sys/fs/cgroup",
        "cgroup",
        &["nosuid", "noexec", "nodev", "relatime", "ro"],
    ));
    let (out, err, code) = run_container(&client, spec).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "0",
            "0",
            "0 100000 65536",
            "0 100000 65536",
            "c",
            "0",
            "cgroups-visible",
            "cgroups-readonly"
        ],
        "stdout: {out}\nstderr: {err}"
    );
}

#[tokio::test]
async fn sysctls_and_hooks() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    let log = dir.path().join("hooks.log");
    let hook = |stage: &str| agent_proto::Hook {
        path: "/bin/sh".into(),
        args: vec![
            "sh".into(),
            "-c".into(),
            format!(
                "read -r state; echo \"{stage} $state\" >> {}; [ -e /bin/busybox ] && echo {stage}-sees-bin >> {}",
                log.display(),
                log.display()
            ),
        ],
        ..Default::default()
    };
    let mut spec = container(dir.path(), "hooked", "cat /proc/sys/net/ipv4/ip_forward /started");
    spec.sysctl.insert("net.ipv4.ip_forward".into(), "1".into());
    spec.hooks = agent_proto::Hooks {
        create_runtime: vec![hook("createRuntime")],
        // In the container's namespaces before pivot_root: the agent's
        // files, and the container's mounts under its root.
        create_container: vec![agent_proto::Hook {
            path: "/bin/sh".into(),
            args: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "echo createContainer-mounts-$(grep -c 'rootfs-hooked/proc ' /proc/self/mountinfo) >> {}",
                    log.display()
                ),
            ],
            ..Default::default()
        }],
        // Inside the container, before its program.
        start_container: vec![agent_proto::Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), "hostname > /started".into()],
            ..Default::default()
        }],
        poststart: vec![hook("poststart")],
        poststop: vec![hook("poststop")],
    };
    let (out, err, code) = run_container(&client, spec).await;
    assert_eq!((out.as_str(), code), ("1\nbox\n", 0), "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let stages: Vec<&str> = text
        .lines()
        .filter(|l| !l.ends_with("-sees-bin"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["createRuntime", "createContainer-mounts-1", "poststart", "poststop"],
        "{text}"
    );
    let first: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap().split_once(' ').unwrap().1).unwrap();
    assert_eq!(first["id"], "hooked");
    assert_eq!(first["status"], "creating");
    assert!(first["pid"].as_i64().unwrap() > 0);

    // A failing createRuntime hook fails the create, naming the hook and
    // quoting its output; nothing is left.
    let mut spec = container(dir.path(), "failing", "true");
    spec.hooks.create_runtime = vec![agent_proto::Hook {
        path: "/bin/sh".into(),
        args: vec!["sh".into(), "-c".into(), "echo no network for you; exit 3".into()],
        ..Default::default()
    }];
    let e = client.create_container(spec).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("createRuntime hook 0 (/bin/sh): exited with status 3: no network for you"),
        "{e}"
    );
    assert!(client.list_containers().await.unwrap().is_empty());

    // A sysctl that is not namespaced is refused by name.
    let mut spec = container(dir.path(), "sysctl", "true");
    spec.sysctl.insert("vm.swappiness".into(), "10".into());
    let e = client.create_container(spec).await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidRequest);
    assert!(e.to_string().contains("vm.swappiness"), "{e}");
}

#[tokio::test]
async fn bind_mounts_and_joining_namespaces_by_path() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(shared.join("sub")).unwrap();
    std::fs::write(shared.join("data"), "from the host\n").unwrap();
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "a file\n").unwrap();

    // A long-running container whose uts and ipc namespaces another joins.
    let first = container(dir.path(), "first", "exec sleep 60");
    let created = client.create_container(first).await.unwrap();
    client.start_container("first").await.unwrap();
    // The agent sees the container's pid in its own pid namespace.
    let pid = created.pid;

    let mut second = container(
        dir.path(),
        "second",
        "hostname; cat /data/data /etc/file.txt; \
         echo x > /data/new 2>/dev/null && echo bind-writable || echo bind-readonly; \
         echo y > /etc/file.txt 2>/dev/null && echo file-writable || echo file-readonly; \
         grep -c ' /data ' /proc/self/mountinfo",
    );
    second.hostname = None;
    second.namespaces = vec![
        Namespace {
            kind: "mount".into(),
            path: None,
        },
        Namespace {
            kind: "pid".into(),
            path: None,
        },
        Namespace {
            kind: "uts".into(),
            path: Some(format!("/proc/{pid}/ns/uts")),
        },
    ];
    second.mounts.push(Mount {
        destination: "/data".into(),
        kind: Some("bind".into()),
        source: Some(shared.display().to_string()),
        options: vec!["rbind".into(), "ro".into(), "rprivate".into()],
    });
    second.mounts.push(Mount {
        destination: "/etc/file.txt".into(),
        kind: None,
        source: Some(file.display().to_string()),
        options: vec!["bind".into()],
    });
    let (out, err, code) = run_container(&client, second).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["box", "from the host", "a file", "bind-readonly", "file-writable", "1"],
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "y\n",
        "the bound file is the host's"
    );
    assert!(!shared.join("new").exists());
    client.delete_container("first", true).await.unwrap();

    // A path that is not a namespace of that type is refused by name.
    let mut bad = container(dir.path(), "bad", "true");
    bad.namespaces.push(Namespace {
        kind: "cgroup".into(),
        path: Some(file.display().to_string()),
    });
    let e = client.create_container(bad).await.unwrap_err();
    assert!(e.to_string().contains("is not a cgroup namespace"), "{e}");
}

#[tokio::test]
async fn a_terminal_is_the_containers_console() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    let mut spec = container(dir.path(), "tty", "tty; [ -t 0 ] && [ -t 1 ] && echo on-a-terminal");
    spec.process.terminal = true;
    let created = client.create_container(spec).await.unwrap();
    let mut out = client.attach(created.process, StreamKind::Stdout).await.unwrap();
    client.start_container("tty").await.unwrap();
    let mut text = String::new();
    out.read_to_string(&mut text).await.unwrap();
    assert_eq!(client.wait(created.process).await.unwrap().code, Some(0), "{text}");
    assert_eq!(text.replace('\r', ""), "/dev/console\non-a-terminal\n");
    client.delete_container("tty", false).await.unwrap();

    // A process joining a container gets a terminal of the container's own
    // devpts: its first, as `tty` names it there.
    let spec = container(dir.path(), "joined", "exec sleep 60");
    client.create_container(spec).await.unwrap();
    client.start_container("joined").await.unwrap();
    let tty = ProcessSpec {
        args: vec!["tty".into()],
        terminal: true,
        ..Default::default()
    };
    let (text, code) = exec_output(&client, "joined", tty).await;
    assert_eq!(code, 0, "{text}");
    assert_eq!(text.replace('\r', ""), "/dev/pts/0\n");
    client.delete_container("joined", true).await.unwrap();
}

#[tokio::test]
async fn pause_freezes_every_process_and_resume_thaws_them() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    // A counter that ticks every 10 ms into a file of the host.
    let ticks = dir.path().join("ticks");
    let mut spec = container(
        dir.path(),
        "ticker",
        "i=0; while true; do i=$((i+1)); echo $i > /out/ticks; sleep 0.01; done",
    );
    spec.mounts.push(Mount {
        destination: "/out".into(),
        kind: Some("bind".into()),
        source: Some(dir.path().display().to_string()),
        options: vec!["bind".into()],
    });
    client.create_container(spec).await.unwrap();
    // Only a running container pauses.
    let e = client.pause_container("ticker").await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidState, "{e}");
    client.start_container("ticker").await.unwrap();
    let read = || std::fs::read_to_string(&ticks).unwrap_or_default();
    while read().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.pause_container("ticker").await.unwrap();
    assert_eq!(
        client.container_state("ticker").await.unwrap().status,
        ContainerStatus::Paused
    );
    let frozen_at = read();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read(), frozen_at, "nothing runs while paused");
    // Paused: no exec, no delete without force.
    let e = client
        .exec_container(
            "ticker",
            ProcessSpec {
                args: vec!["true".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot exec in a paused container"), "{e}");
    let e = client.delete_container("ticker", false).await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidState);
    client.resume_container("ticker").await.unwrap();
    assert_eq!(
        client.container_state("ticker").await.unwrap().status,
        ContainerStatus::Running
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while read() == frozen_at && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(read(), frozen_at, "it runs again once resumed");
    let e = client.resume_container("ticker").await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidState);
    // A paused container is deleted with force.
    client.pause_container("ticker").await.unwrap();
    client.delete_container("ticker", true).await.unwrap();
    assert!(client.list_containers().await.unwrap().is_empty());
}

#[tokio::test]
async fn updates_that_cannot_be_honoured_are_refused_by_name() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    client
        .create_container(container(dir.path(), "upd", "exec sleep 60"))
        .await
        .unwrap();
    client.start_container("upd").await.unwrap();
    let devices = agent_proto::Resources {
        devices: vec![agent_proto::DeviceRule {
            allow: false,
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = client.update_container("upd", devices).await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidRequest);
    assert!(e.to_string().contains("linux.resources.devices"), "{e}");
    let bad = agent_proto::Resources {
        cpu: Some(agent_proto::CpuResources {
            shares: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let e = client.update_container("upd", bad).await.unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidRequest);
    assert!(e.to_string().contains("linux.resources.cpu.shares"), "{e}");
    client.kill_container("upd", libc::SIGKILL, false).await.unwrap();
    let process = client.container_state("upd").await.unwrap().process;
    client.wait(process).await.unwrap();
    let e = client
        .update_container("upd", agent_proto::Resources::default())
        .await
        .unwrap_err();
    assert_eq!(e.agent_error().unwrap().code, ErrorCode::InvalidState);
    client.delete_container("upd", false).await.unwrap();
}

/// The host's cgroup2 mount point (`/sys/fs/cgroup/unified` on a hybrid
/// host).
fn host_cgroup2() -> std::path::PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, rest)| rest.starts_with("cgroup2 "))
        })
        .expect("a cgroup2 mount");
    line.split(' ').nth(4).unwrap().into()
}

#[tokio::test]
async fn kill_all_reaches_processes_in_sub_cgroups() {
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let dir = TempDir::new("container");
    let id = format!("killall-{}", std::process::id());
    let mut spec = container(
        dir.path(),
        &id,
        "sleep 1000 & sleep 1000 & echo started > /out/started; wait; echo done > /out/done",
    );
    spec.mounts.push(Mount {
        destination: "/out".into(),
        kind: Some("bind".into()),
        source: Some(dir.path().display().to_string()),
        options: vec!["bind".into()],
    });
    spec.cgroups_path = Some(format!("vminitd-tests/{id}"));
    client.create_container(spec).await.unwrap();
    client.start_container(&id).await.unwrap();
    while !dir.path().join("started").exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // One of the sleeps moves to a cgroup of its own below the container's,
    // as a process that makes sub-cgroups would.
    let cgroup = host_cgroup2().join("vminitd-tests").join(&id);
    let procs = |dir: &Path| -> Vec<i32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };
    let sleeping = || -> Vec<i32> {
        procs(&cgroup)
            .into_iter()
            .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep"))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sleeping().len() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sleeps = sleeping();
    assert_eq!(sleeps.len(), 2, "{sleeps:?}");
    let sub = cgroup.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("cgroup.procs"), sleeps[0].to_string()).unwrap();

    client.kill_container(&id, libc::SIGTERM, true).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !dir.path().join("done").exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left: Vec<i32> = procs(&sub);
    assert!(left.is_empty(), "SIGTERM to all missed {left:?} in a sub-cgroup");
    assert!(
        dir.path().join("done").exists(),
        "both sleeps died and the script ended"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client.container_state(&id).await.unwrap().status != ContainerStatus::Stopped
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        client.container_state(&id).await.unwrap().status,
        ContainerStatus::Stopped
    );
    client.delete_container(&id, false).await.unwrap();
    assert!(!cgroup.exists(), "the cgroup and its sub-cgroup are removed");
}
