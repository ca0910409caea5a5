//! Instances: VMs that outlive the command (`run -d`), reached by name with
//! `exec`, listed by `ps`, stopped by `stop`; each test has a state
//! directory of its own.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vminitd_tests::{vmshim_bin, TempDir};

fn vmshim(state: &TempDir, args: &[&str]) -> Output {
    Command::new(vmshim_bin())
        .args(args)
        .env("VMSHIM_STATE_DIR", state.path())
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ps`'s names, header left out.
fn ps_names(state: &TempDir) -> Vec<String> {
    let out = vmshim(state, &["ps"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

/// The daemon's and the VM's host pids, from `instance.json`.
fn pids(state: &TempDir, name: &str) -> Vec<u32> {
    let path = state.path().join("instances").join(name).join("instance.json");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut pids = vec![record["pid"].as_u64().unwrap() as u32];
    for entry in record["vm_pids"].as_array().unwrap() {
        pids.push(entry[1].as_u64().unwrap() as u32);
    }
    assert!(pids.len() >= 2, "the daemon and QEMU at least: {record}");
    pids
}

/// Whether `pid` runs (a zombie does not).
fn runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            !matches!(state, "Z" | "X")
        }
        Err(_) => false,
    }
}

fn wait_gone(pids: &[u32], timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| runs(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start(state: &TempDir, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    let out = vmshim(state, &args);
    assert!(out.status.success(), "run -d {name}: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{name}\n"));
}

#[test]
fn a_detached_vm_runs_execs_and_stops() {
    let state = TempDir::new("detached");
    let began = Instant::now();
    start(&state, "a", &[]);
    assert!(began.elapsed() < Duration::from_secs(40), "within the boot time");
    assert_eq!(ps_names(&state), ["a"]);
    let pids = pids(&state, "a");

    let out = vmshim(&state, &["exec", "a", "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));

    // Two at once, in the same VM: each sees the other's marker.
    let spawn = |me: &str, other: &str| {
        Command::new(vmshim_bin())
            .args(["exec", "a", "--", "sh", "-c"])
            .arg(format!(
                "touch /tmp/{me}; for i in $(seq 100); do [ -e /tmp/{other} ] && echo saw-{other} && exit 0; sleep 0.1; done; exit 1"
            ))
            .env("VMSHIM_STATE_DIR", state.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn("one", "two"), spawn("two", "one"));
    let (one, two) = (one.wait_with_output().unwrap(), two.wait_with_output().unwrap());
    assert_eq!(
        (text(&one.stdout), one.status.code()),
        ("saw-two\n".to_owned(), Some(0))
    );
    assert_eq!(
        (text(&two.stdout), two.status.code()),
        ("saw-one\n".to_owned(), Some(0))
    );

    // The same overlay from one exec to the next.
    assert!(vmshim(&state, &["exec", "a", "--", "touch", "/tmp/x"]).status.success());
    let out = vmshim(&state, &["exec", "a", "--", "ls", "/tmp/x"]);
    assert_eq!((text(&out.stdout), out.status.code()), ("/tmp/x\n".to_owned(), Some(0)));

    // The name is taken while it runs.
    let out = vmshim(&state, &["run", "-d", "--name", "a"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("\"a\" is already running"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(ps_names(&state), ["a"], "the running one is untouched");

    let out = vmshim(&state, &["stop", "a"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ps_names(&state), Vec::<String>::new());
    assert_eq!(
        wait_gone(&pids, Duration::from_secs(5)),
        Vec::<u32>::new(),
        "nothing of it runs"
    );
    assert!(!state.path().join("instances/a").exists(), "no state left");
}

#[test]
fn unknown_instances_are_clear_errors() {
    let state = TempDir::new("detached-unknown");
    for args in [&["exec", "nope", "--", "true"][..], &["stop", "nope"]] {
        let out = vmshim(&state, args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(
            text(&out.stderr).contains("no instance \"nope\""),
            "{}",
            text(&out.stderr)
        );
    }
    let out = vmshim(&state, &["exec", "--", "true"]);
    assert_eq!(out.status.code(), Some(2), "a NAME or --connect is required");
    let out = vmshim(&state, &["run", "-d", "--name", "-bad", "--", "true"]);
    assert_ne!(out.status.code(), Some(0));
    let out = vmshim(&state, &["run", "-d", "--name", "bad/name"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("invalid instance name"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_vm_stops_when_its_main_process_exits() {
    let state = TempDir::new("detached-main");
    start(&state, "m", &["--", "sh", "-c", "echo main-ran; sleep 1"]);
    let pids = pids(&state, "m");
    assert_eq!(wait_gone(&pids, Duration::from_secs(30)), Vec::<u32>::new());
    assert_eq!(ps_names(&state), Vec::<String>::new());
    assert!(!state.path().join("instances/m").exists());
}

#[test]
fn a_killed_daemon_takes_its_vm_along_and_is_swept() {
    let state = TempDir::new("detached-kill");
    start(&state, "k", &[]);
    let pids = pids(&state, "k");
    // SAFETY: kill with a pid this test read from the instance's record.
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    assert_eq!(
        wait_gone(&pids, Duration::from_secs(5)),
        Vec::<u32>::new(),
        "QEMU dies with it"
    );
    assert!(state.path().join("instances/k").exists(), "until swept");
    assert_eq!(ps_names(&state), Vec::<String>::new());
    assert!(!state.path().join("instances/k").exists(), "ps swept it");
    // The name is free again.
    start(&state, "k", &[]);
    let out = vmshim(&state, &["exec", "k", "--", "true"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(vmshim(&state, &["stop", "k"]).status.success());
}

#[test]
fn a_boot_that_fails_leaves_nothing() {
    let state = TempDir::new("detached-fail");
    let out = vmshim(&state, &["run", "-d", "--name", "f", "--kernel", "/etc/hostname"]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains("instance \"f\" did not start") && err.contains("its log"),
        "{err}"
    );
    assert_eq!(ps_names(&state), Vec::<String>::new());
    assert!(!state.path().join("instances/f").exists());
}

#[test]
fn detached_vms_on_a_network_know_each_other_and_give_their_addresses_back() {
    let state = TempDir::new("detached-net");
    let out = vmshim(&state, &["network", "create", "back", "--subnet", "10.123.9.0/24"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    start(&state, "db", &["--network", "back", "--ip", "10.123.9.10"]);
    start(&state, "web", &["--network", "back"]);
    // db learns of web after it booted: the daemon keeps /etc/hosts current.
    let out = vmshim(
        &state,
        &[
            "exec",
            "db",
            "--",
            "sh",
            "-c",
            "for i in $(seq 50); do grep -w web /etc/hosts && exit 0; sleep 0.1; done; exit 1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = vmshim(&state, &["exec", "web", "--", "grep", "-w", "db", "/etc/hosts"]);
    assert_eq!(text(&out.stdout), "10.123.9.10\tdb\n");
    for name in ["db", "web"] {
        assert!(vmshim(&state, &["stop", name]).status.success());
    }
    let out = vmshim(&state, &["network", "rm", "back"]);
    assert!(out.status.success(), "the leases are gone: {}", text(&out.stderr));
}
