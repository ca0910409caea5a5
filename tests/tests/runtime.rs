//! `vmshim runtime`: runc's lifecycle with each container in a real VM
//! (create, state, start, exec, kill, delete, run), runc's errors, and a
//! stock `runc spec` bundle translated for the agent in a namespace.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use agent_proto::{ContainerStatus, StreamKind};
use host_shim::image::{container_spec, RootPlacement};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use vminitd_tests::{vmshim_bin, NamespacedAgent, TempDir};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A bundle in `dir/NAME`: a busybox root, `runc spec`'s config.json with
/// no terminal and `args` as the process.
fn bundle(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let bundle = dir.join(name);
    let rootfs = bundle.join("rootfs");
    host_shim::rootfs::busybox_tree(Path::new("/bin/busybox"), &rootfs).expect("busybox tree");
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .output()
        .expect("run runc spec (scripts/setup.sh installs runc)");
    assert!(out.status.success(), "runc spec: {}", text(&out.stderr));
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(args);
    spec["process"]["env"] = json!(["PATH=/bin:/sbin"]);
    fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    bundle
}

/// Changes `bundle`'s config.json with `edit`.
fn edit(bundle: &Path, edit: impl FnOnce(&mut Value)) {
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut spec);
    fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

/// `vmshim runtime --root ROOT ARGS`, stdin from /dev/null, output
/// captured.
fn runtime(root: &Path, args: &[&str]) -> Output {
    Command::new(vmshim_bin())
        .arg("runtime")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim runtime")
}

/// `state ID`'s JSON; panics if it fails.
fn state(root: &Path, id: &str) -> Value {
    let out = runtime(root, &["state", id]);
    assert_eq!(out.status.code(), Some(0), "state {id}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("state {id}: {e}: {}", text(&out.stdout)))
}

/// Fails with runc's exit status 1 and `message` on stderr.
fn fails_with(out: &Output, message: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(message), "{message:?} not in: {stderr}");
}

/// `exec` fails as runc's does: status 255, `exec failed: MESSAGE`.
fn exec_fails_with(out: &Output, message: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    let wanted = format!("exec failed: {message}");
    assert!(stderr.contains(&wanted), "{wanted:?} not in: {stderr}");
}

/// Waits up to `timeout` for `done`.
fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Whether `pid` runs (a zombie does not).
fn runs(pid: u64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
}

#[test]
fn a_container_in_a_vm_lives_as_a_runc_container_does() {
    let t = TempDir::new("runtime");
    let root = t.path().join("root");
    let b = bundle(
        t.path(),
        "bundle",
        &["sh", "-c", "echo out; echo err >&2; exec sleep 60"],
    );
    edit(&b, |spec| spec["process"]["env"] = json!(["PATH=/bin:/sbin", "A=1"]));
    let pid_file = t.path().join("pid");
    let (stdout, stderr) = (t.path().join("stdout"), t.path().join("stderr"));

    // create: its stdout and stderr are the container's, as with runc
    // (files, so that nothing waits on a pipe the container holds).
    let status = Command::new(vmshim_bin())
        .arg("runtime")
        .arg("--root")
        .arg(&root)
        .args(["create", "--bundle"])
        .arg(&b)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("c1")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).unwrap())
        .stderr(fs::File::create(&stderr).unwrap())
        .status()
        .unwrap();
    assert!(status.success(), "create: {}", fs::read_to_string(&stderr).unwrap());
    let s = state(&root, "c1");
    assert_eq!(
        (s["id"].as_str(), s["status"].as_str()),
        (Some("c1"), Some("created")),
        "{s}"
    );
    assert_eq!(s["bundle"].as_str(), Some(b.to_str().unwrap()));
    assert_eq!(s["rootfs"].as_str(), Some(b.join("rootfs").to_str().unwrap()));
    assert!(s["created"].as_str().unwrap().ends_with('Z'), "{s}");
    assert_eq!(
        (s["ociVersion"].as_str(), s["owner"].as_str()),
        (Some("1.0.2"), Some(""))
    );
    let pid = s["pid"].as_u64().unwrap();
    assert_eq!(fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    assert!(runs(pid), "the VM's QEMU runs");
    assert!(fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .contains("qemu"));
    assert_eq!(fs::read_to_string(&stdout).unwrap(), "", "not started yet");
    fails_with(
        &runtime(&root, &["create", "--bundle", b.to_str().unwrap(), "c1"]),
        "container with id exists: c1",
    );

    let out = runtime(&root, &["start", "c1"]);
    assert_eq!(out.status.code(), Some(0), "start: {}", text(&out.stderr));
    assert_eq!(state(&root, "c1")["status"], "running");
    let printed = eventually(Duration::from_secs(10), || {
        fs::read_to_string(&stdout).unwrap() == "out\n" && fs::read_to_string(&stderr).unwrap() == "err\n"
    });
    assert!(
        printed,
        "stdout {:?}, stderr {:?}",
        fs::read_to_string(&stdout).unwrap(),
        fs::read_to_string(&stderr).unwrap()
    );
    fails_with(
        &runtime(&root, &["start", "c1"]),
        "cannot start an already running container",
    );
    fails_with(
        &runtime(&root, &["delete", "c1"]),
        "cannot delete container c1 that is not stopped: running",
    );

    // exec: the bundle's process (env, user, cwd) changed by the flags,
    // its stdio relayed, its status exit's.
    let script = "echo $A $B; pwd; id -u; id -g; echo oops >&2; exit 3";
    let out = runtime(
        &root,
        &[
            "exec",
            "-e",
            "B=2",
            "--cwd",
            "/tmp",
            "-u",
            "1000:1001",
            "c1",
            "sh",
            "-c",
            script,
        ],
    );
    assert_eq!(
        (
            text(&out.stdout).as_str(),
            text(&out.stderr).as_str(),
            out.status.code()
        ),
        ("1 2\n/tmp\n1000\n1001\n", "oops\n", Some(3))
    );
    let root_arg = root.to_str().unwrap();
    let out = vminitd_tests::vmshim_with_input(&["runtime", "--root", root_arg, "exec", "c1", "cat"], b"piped\n");
    assert_eq!((text(&out.stdout).as_str(), out.status.code()), ("piped\n", Some(0)));
    let out = runtime(&root, &["exec", "c1", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(128 + 9), "{}", text(&out.stderr));
    let process = t.path().join("process.json");
    let from_file = json!({"args": ["sh", "-c", "echo $X; id -u"], "env": ["X=from-file"], "cwd": "/", "user": {"uid": 7, "gid": 7}});
    fs::write(&process, from_file.to_string()).unwrap();
    let out = runtime(&root, &["exec", "--process", process.to_str().unwrap(), "c1"]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("from-file\n7\n", Some(0))
    );
    exec_fails_with(
        &runtime(&root, &["exec", "c1", "no-such-program"]),
        "container c1: start",
    );

    // exec --detach: returns once started; the pid file names the vmshim
    // that relays the process, which lives as long as the process does.
    let exec_pid = t.path().join("exec.pid");
    let detached = Command::new(vminitd_tests::vmshim_bin())
        .args(["runtime", "--root", root_arg, "exec", "--detach", "--pid-file"])
        .arg(&exec_pid)
        .args(["c1", "sh", "-c", "sleep 1; echo done > /dev/shm/detached"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(detached.success());
    let relay: u64 = fs::read_to_string(&exec_pid).unwrap().parse().unwrap();
    assert!(runs(relay), "the relay runs while the process does");
    assert!(
        eventually(Duration::from_secs(10), || !runs(relay)),
        "the relay ends with the process"
    );
    let out = runtime(&root, &["exec", "c1", "cat", "/dev/shm/detached"]);
    assert_eq!(text(&out.stdout), "done\n", "{}", text(&out.stderr));

    let out = runtime(&root, &["list"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("ID "), "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..4],
        ["c1", &pid.to_string(), "running", b.to_str().unwrap()],
        "{table}"
    );
    let listed: Value = serde_json::from_slice(&runtime(&root, &["list", "--format", "json"]).stdout).unwrap();
    assert_eq!(listed[0]["id"], "c1");
    assert_eq!(text(&runtime(&root, &["list", "-q"]).stdout), "c1\n");

    let out = runtime(&root, &["kill", "c1", "KILL"]);
    assert_eq!(out.status.code(), Some(0), "kill: {}", text(&out.stderr));
    assert!(
        eventually(Duration::from_secs(10), || state(&root, "c1")["status"] == "stopped"),
        "{}",
        state(&root, "c1")
    );
    assert_eq!(state(&root, "c1")["pid"], 0);
    fails_with(
        &runtime(&root, &["start", "c1"]),
        "cannot start a container that has stopped",
    );
    fails_with(&runtime(&root, &["kill", "c1"]), "container not running");
    exec_fails_with(
        &runtime(&root, &["exec", "c1", "true"]),
        "cannot exec in a stopped container",
    );

    let out = runtime(&root, &["delete", "c1"]);
    assert_eq!(out.status.code(), Some(0), "delete: {}", text(&out.stderr));
    assert!(eventually(Duration::from_secs(5), || !runs(pid)), "QEMU is gone");
    fails_with(&runtime(&root, &["state", "c1"]), "container does not exist");
    assert!(!root.join("c1").exists());
    assert_eq!(text(&runtime(&root, &["list", "-q"]).stdout), "");
}

#[test]
fn unknown_ids_and_bad_requests_fail_as_with_runc() {
    let t = TempDir::new("runtime-errors");
    let root = t.path().join("root");
    for args in [
        &["start", "nope"][..],
        &["state", "nope"],
        &["kill", "nope", "9"],
        &["delete", "nope"],
    ] {
        fails_with(&runtime(&root, args), "container does not exist");
    }
    let out = runtime(&root, &["delete", "--force", "nope"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a forced delete of nothing: {}",
        text(&out.stderr)
    );
    fails_with(&runtime(&root, &["kill", "nope", "NOSUCH"]), "unknown signal");
    exec_fails_with(&runtime(&root, &["exec", "nope", "true"]), "container does not exist");

    // Errors go to --log as well, as JSON lines with --log-format json.
    let log = t.path().join("log.json");
    let out = Command::new(vmshim_bin())
        .args(["runtime", "--log"])
        .arg(&log)
        .args(["--log-format", "json", "--root"])
        .arg(&root)
        .args(["start", "nope"])
        .output()
        .unwrap();
    assert_eq!(
        (out.status.code(), text(&out.stderr).as_str()),
        (Some(1), "container does not exist\n")
    );
    let line: Value = serde_json::from_str(fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(
        (line["level"].as_str(), line["msg"].as_str()),
        (Some("error"), Some("container does not exist"))
    );

    // A terminal is refused before anything boots, and nothing is left.
    let b = bundle(t.path(), "tty", &["sh"]);
    let mut spec: Value = serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
    spec["process"]["terminal"] = json!(true);
    fs::write(b.join("config.json"), spec.to_string()).unwrap();
    fails_with(
        &runtime(&root, &["create", "-b", b.to_str().unwrap(), "t"]),
        "--console-socket",
    );
    // So is a bind mount of a host directory, which a VM cannot reach.
    spec["process"]["terminal"] = json!(false);
    spec["mounts"] = json!([{"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind"]}]);
    fs::write(b.join("config.json"), spec.to_string()).unwrap();
    fails_with(
        &runtime(&root, &["create", "-b", b.to_str().unwrap(), "t"]),
        "mounts[0]",
    );
    assert!(!root.join("t").exists());
}

#[test]
fn run_relays_stdin_and_exits_as_the_process_did() {
    let t = TempDir::new("runtime-run");
    let root = t.path().join("root");
    let b = bundle(
        t.path(),
        "bundle",
        &["sh", "-c", "read x; echo \"got $x\"; echo bye >&2; exit 7"],
    );
    let out = vminitd_tests::vmshim_with_input(
        &[
            "runtime",
            "--root",
            root.to_str().unwrap(),
            "run",
            "--bundle",
            b.to_str().unwrap(),
            "r1",
        ],
        b"hello\n",
    );
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("got hello\n", Some(7)),
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).ends_with("bye\n"), "{}", text(&out.stderr));
    fails_with(&runtime(&root, &["state", "r1"]), "container does not exist");
}

/// The stock `runc spec`, translated for an agent on this host, runs in
/// the agent in a namespace with everything it asks for.
#[tokio::test]
async fn a_stock_runc_spec_runs_in_the_namespaced_agent() {
    let t = TempDir::new("runtime-host");
    let b = bundle(
        t.path(),
        "bundle",
        &[
            "sh",
            "-c",
            "echo $(hostname) $$; touch /x 2>/dev/null || echo read-only; m=ok; \
             for f in /proc/timer_list /proc/keys /proc/kcore; do [ -n \"$(head -c1 $f 2>/dev/null)\" ] && m=$f; done; \
             echo masked=$m",
        ],
    );
    // The agent's cgroups are the host's: an id of this run's own.
    let id = format!("stock-{}", std::process::id());
    let spec = container_spec(&b, &id, RootPlacement::Host).expect("a stock runc spec translates");
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let created = client.create_container(spec).await.expect("create");
    let mut out = client.attach(created.process, StreamKind::Stdout).await.unwrap();
    client.start_container(&id).await.expect("start");
    let mut printed = String::new();
    out.read_to_string(&mut printed).await.unwrap();
    let status = client.wait(created.process).await.unwrap();
    let state = client.container_state(&id).await.unwrap().status;
    // Deleted before anything is asserted: its cgroup is the host's.
    client.delete_container(&id, false).await.unwrap();
    assert_eq!(
        (printed.as_str(), status.shell_code()),
        ("runc 1\nread-only\nmasked=ok\n", 0)
    );
    assert_eq!(state, ContainerStatus::Stopped);
}
