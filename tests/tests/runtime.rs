//! `vmshim runtime`: runc's lifecycle with each container in a real VM
//! (create, state, start, exec, kill, delete, run), terminals handed to a
//! console socket, hooks run on the host, runc's errors, and a stock `runc
//! spec` bundle translated for the agent in a namespace.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
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
    vminitd_tests::runc_bundle(dir, name, args, &["PATH=/bin:/sbin"])
}

/// Changes `bundle`'s config.json with `edit`.
fn edit(bundle: &Path, edit: impl FnOnce(&mut Value)) {
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut spec);
    fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
}

/// A hook script in `dir` that appends `STAGE STATE` (its first argument
/// and its stdin) to `log`, a path it gets in its environment; returns
/// the hook for `stage`.
fn logging_hook(dir: &Path, log: &Path, stage: &str) -> Value {
    let script = dir.join("hook.sh");
    fs::write(&script, "#!/bin/sh\necho \"$1 $(cat)\" >> \"$LOG\"\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    json!({
        "path": script,
        "args": ["hook.sh", stage],
        "env": ["PATH=/usr/bin:/bin", format!("LOG={}", log.display())],
    })
}

/// The hook log's lines: each stage with the state JSON it was given.
fn hook_log(log: &Path) -> Vec<(String, Value)> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let (stage, state) = line.split_once(' ').unwrap();
            (stage.to_owned(), serde_json::from_str(state).unwrap())
        })
        .collect()
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

/// A console socket, as runc's callers listen on one: it receives a
/// terminal's master with SCM_RIGHTS.
struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn bind(path: PathBuf) -> ConsoleSocket {
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        ConsoleSocket { path, listener }
    }

    fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The master sent to it, within 10 s.
    fn receive(&self) -> Terminal {
        let deadline = Instant::now() + Duration::from_secs(10);
        let conn = loop {
            match self.listener.accept() {
                Ok((conn, _)) => break conn,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("no terminal reached the console socket: {e}"),
            }
        };
        conn.set_nonblocking(false).unwrap();
        let (master, _) = host_shim::runtime::receive_master(&conn).expect("a descriptor came to the console socket");
        Terminal::new(fs::File::from(master))
    }
}

/// A terminal's master: written to, and read by a thread into a buffer.
struct Terminal {
    master: fs::File,
    shown: Arc<Mutex<Vec<u8>>>,
    /// Whether reading it failed (EIO: the last slave is closed).
    hung_up: Arc<Mutex<bool>>,
}

impl Terminal {
    fn new(master: fs::File) -> Terminal {
        let shown = Arc::new(Mutex::new(Vec::new()));
        let hung_up = Arc::new(Mutex::new(false));
        let mut reader = master.try_clone().unwrap();
        let (out, end) = (shown.clone(), hung_up.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
            *end.lock().unwrap() = true;
        });
        Terminal { master, shown, hung_up }
    }

    fn write(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize through a valid pointer.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(rc, 0);
    }

    /// Everything shown so far, once it contains `wanted` (within 10 s).
    fn shows(&self, wanted: &str) -> String {
        let shown = || text(&self.shown.lock().unwrap());
        assert!(
            vminitd_tests::eventually(Duration::from_secs(10), || shown().contains(wanted)),
            "{wanted:?} not shown: {:?}",
            shown()
        );
        shown()
    }

    /// Whether the terminal was hung up (its process ended) within 10 s.
    fn hangs_up(&self) -> bool {
        vminitd_tests::eventually(Duration::from_secs(10), || *self.hung_up.lock().unwrap())
    }
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
    let hooks = t.path().join("hooks.log");
    edit(&b, |spec| {
        spec["process"]["env"] = json!(["PATH=/bin:/sbin", "A=1"]);
        let hook = |stage| json!([logging_hook(t.path(), &hooks, stage)]);
        spec["hooks"] = json!({
            "prestart": hook("prestart"),
            "createRuntime": hook("createRuntime"),
            "createContainer": hook("createContainer"),
            "poststart": hook("poststart"),
            // A failing poststop hook is a warning; the next still runs.
            "poststop": [{"path": "/bin/false"}, logging_hook(t.path(), &hooks, "poststop")],
        });
    });
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
    assert!(runs(pid), "the container's pid runs");
    // The pid is the container's instance daemon, which holds its VM.
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("instance\0serve\0c1\0"), "{cmdline:?}");
    assert_eq!(fs::read_to_string(&stdout).unwrap(), "", "not started yet");
    // The host ran the creation's hooks, in order, each with the state.
    let log = hook_log(&hooks);
    let stages: Vec<&str> = log.iter().map(|(stage, _)| stage.as_str()).collect();
    assert_eq!(stages, ["prestart", "createRuntime", "createContainer"]);
    for (_, state) in &log {
        assert_eq!(
            (state["id"].as_str(), state["status"].as_str(), state["pid"].as_u64()),
            (Some("c1"), Some("creating"), Some(pid)),
            "{state}"
        );
        assert_eq!(state["bundle"].as_str(), Some(b.to_str().unwrap()));
    }

    fails_with(
        &runtime(&root, &["create", "--bundle", b.to_str().unwrap(), "c1"]),
        "container with id exists: c1",
    );

    let out = runtime(&root, &["start", "c1"]);
    assert_eq!(out.status.code(), Some(0), "start: {}", text(&out.stderr));
    assert_eq!(state(&root, "c1")["status"], "running");

    // pause and resume, as runc's: the freezer, status "paused" between.
    fails_with(&runtime(&root, &["resume", "c1"]), "container not paused");
    let out = runtime(&root, &["pause", "c1"]);
    assert_eq!(out.status.code(), Some(0), "pause: {}", text(&out.stderr));
    assert_eq!(state(&root, "c1")["status"], "paused");
    fails_with(&runtime(&root, &["pause", "c1"]), "container not running");
    let out = runtime(&root, &["resume", "c1"]);
    assert_eq!(out.status.code(), Some(0), "resume: {}", text(&out.stderr));
    assert_eq!(state(&root, "c1")["status"], "running");

    // update, as runc's: new limits on the running container's cgroup,
    // seen from inside it.
    let out = runtime(&root, &["update", "--pids-limit", "50", "--memory", "64m", "c1"]);
    assert_eq!(out.status.code(), Some(0), "update: {}", text(&out.stderr));
    // (The stock spec has no cgroup namespace: the whole tree is seen, the
    // container's cgroup at its path in it.)
    let own = "cd /sys/fs/cgroup/$(cut -d: -f3 /proc/self/cgroup) && cat pids.max memory.max";
    let out = runtime(&root, &["exec", "c1", "sh", "-c", own]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("50\n67108864\n", Some(0)),
        "{}",
        text(&out.stderr)
    );
    // Its VM follows: the balloon leaves the guest the limit and the
    // agent's headroom (256 MiB at boot, about 80 now).
    let mem_total = |root: &Path| {
        let out = runtime(root, &["exec", "c1", "cat", "/proc/meminfo"]);
        let line = text(&out.stdout).lines().next().unwrap_or_default().to_owned();
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line:?} {}", text(&out.stderr)));
        kib << 10
    };
    let shrunk = mem_total(&root);
    assert!((64 << 20..100 << 20).contains(&shrunk), "MemTotal {shrunk}");
    let out = runtime(&root, &["update", "--memory", "-1", "c1"]);
    assert_eq!(out.status.code(), Some(0), "update: {}", text(&out.stderr));
    assert!(mem_total(&root) > 200 << 20, "all of the VM's memory back");
    let out = runtime(&root, &["update", "--memory", "lots", "c1"]);
    assert_eq!(out.status.code(), Some(1));
    // (The message is a logrus line: its quotes escaped.)
    assert!(
        text(&out.stderr).contains(r#"--memory: \"lots\" is not a size"#),
        "{}",
        text(&out.stderr)
    );
    let (stage, started) = hook_log(&hooks).pop().unwrap();
    assert_eq!(
        (stage.as_str(), started["status"].as_str()),
        ("poststart", Some("running"))
    );
    let printed = vminitd_tests::eventually(Duration::from_secs(10), || {
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
        vminitd_tests::eventually(Duration::from_secs(10), || !runs(relay)),
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
        vminitd_tests::eventually(Duration::from_secs(10), || state(&root, "c1")["status"] == "stopped"),
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
    let warned = "level=warning msg=\"error running poststop hook #0: error running hook: exit status 1";
    assert!(text(&out.stderr).contains(warned), "{}", text(&out.stderr));
    assert!(
        vminitd_tests::eventually(Duration::from_secs(5), || !runs(pid)),
        "the pid is gone"
    );
    fails_with(&runtime(&root, &["state", "c1"]), "container does not exist");
    assert!(!root.join("c1").exists());
    assert_eq!(text(&runtime(&root, &["list", "-q"]).stdout), "");
    let (stage, stopped) = hook_log(&hooks).pop().unwrap();
    assert_eq!(
        (stage.as_str(), stopped["status"].as_str(), stopped["pid"].as_u64()),
        ("poststop", Some("stopped"), Some(0))
    );
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

    // A terminal without a console socket is refused before anything
    // boots, as is a console socket without a terminal; nothing is left.
    let b = bundle(t.path(), "tty", &["sh"]);
    let mut spec: Value = serde_json::from_slice(&fs::read(b.join("config.json")).unwrap()).unwrap();
    spec["process"]["terminal"] = json!(true);
    fs::write(b.join("config.json"), spec.to_string()).unwrap();
    fails_with(
        &runtime(&root, &["create", "-b", b.to_str().unwrap(), "t"]),
        "cannot allocate tty if runc will detach without setting console socket",
    );
    spec["process"]["terminal"] = json!(false);
    fs::write(b.join("config.json"), spec.to_string()).unwrap();
    let socket = t.path().join("console.sock");
    fails_with(
        &runtime(
            &root,
            &[
                "create",
                "-b",
                b.to_str().unwrap(),
                "--console-socket",
                socket.to_str().unwrap(),
                "t",
            ],
        ),
        "cannot use console socket if runc will not detach or allocate tty",
    );
    // So is a bind mount of a host socket, which a VM cannot reach (host
    // files and directories are shared with it).
    let host_socket = t.path().join("host.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&host_socket).unwrap();
    spec["mounts"] =
        json!([{"destination": "/run/host.sock", "type": "bind", "source": host_socket, "options": ["rbind"]}]);
    fs::write(b.join("config.json"), spec.to_string()).unwrap();
    fails_with(
        &runtime(&root, &["create", "-b", b.to_str().unwrap(), "t"]),
        "mounts[0] (a bind mount of",
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

/// A terminal: its master goes to the console socket, and keys, output and
/// window sizes pass through it to the process in the VM; `exec -t -d`
/// hands over a terminal the same way. Without a console socket, `run`
/// relays the terminal over its own stdio.
#[test]
fn a_terminal_reaches_the_console_socket() {
    let t = TempDir::new("runtime-tty");
    let root = t.path().join("root");
    let b = bundle(t.path(), "bundle", &["sh"]);
    edit(&b, |spec| spec["process"]["terminal"] = json!(true));
    let console = ConsoleSocket::bind(t.path().join("console.sock"));
    let out = runtime(
        &root,
        &[
            "create",
            "--bundle",
            b.to_str().unwrap(),
            "--console-socket",
            console.arg(),
            "t1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "create: {}", text(&out.stderr));
    let mut term = console.receive();
    let out = runtime(&root, &["start", "t1"]);
    assert_eq!(out.status.code(), Some(0), "start: {}", text(&out.stderr));
    term.resize(33, 77);
    // The size is passed on within the poll interval.
    std::thread::sleep(Duration::from_millis(500));
    term.write("tty; [ -t 0 ] && [ -t 1 ] && echo on-a-terminal; stty size; echo o''k\n");
    let shown = term.shows("\r\nok\r\n");
    // The terminal is the container's /dev/console, where ttyname finds it.
    assert!(
        shown.contains("/dev/console\r\non-a-terminal\r\n33 77\r\n"),
        "{shown:?}"
    );

    let exec_console = ConsoleSocket::bind(t.path().join("exec.sock"));
    let root_arg = root.to_str().unwrap();
    let exec_pid = t.path().join("exec.pid");
    let status = Command::new(vminitd_tests::vmshim_bin())
        .args(["runtime", "--root", root_arg, "exec", "-t", "-d", "--console-socket"])
        .arg(&exec_console.path)
        .arg("--pid-file")
        .arg(&exec_pid)
        .args(["t1", "sh"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut exec_term = exec_console.receive();
    // Its terminal is one of the container's own devpts.
    exec_term.write("tty; echo exec-$((6 * 7))\n");
    exec_term.shows("/dev/pts/0\r\nexec-42");
    exec_term.write("exit 3\n");
    assert!(exec_term.hangs_up(), "the exec's terminal hangs up when it exits");
    let relay: u64 = fs::read_to_string(&exec_pid).unwrap().parse().unwrap();
    assert!(vminitd_tests::eventually(Duration::from_secs(10), || !runs(relay)));

    term.write("exit 4\n");
    assert!(term.hangs_up(), "the terminal hangs up when the process exits");
    assert!(vminitd_tests::eventually(Duration::from_secs(10), || state(
        &root, "t1"
    )["status"]
        == "stopped"));
    let out = runtime(&root, &["delete", "t1"]);
    assert_eq!(out.status.code(), Some(0), "delete: {}", text(&out.stderr));

    let out = vminitd_tests::vmshim_with_input(
        &[
            "runtime",
            "--root",
            root_arg,
            "run",
            "--bundle",
            b.to_str().unwrap(),
            "r1",
        ],
        b"[ -t 0 ] && echo on-a-terminal; exit 6\n",
    );
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("on-a-terminal\r\n"), "{}", text(&out.stdout));
}

/// A create-time hook that fails fails `create` with runc's message, and
/// the container's pid leaves (a failing `createRuntime` hook runs before
/// the VM boots; the `poststop` hooks run); nothing is left.
#[test]
fn a_failing_creation_hook_fails_create_and_leaves_nothing() {
    let t = TempDir::new("runtime-hook");
    let root = t.path().join("root");
    let b = bundle(t.path(), "bundle", &["true"]);
    let hooks = t.path().join("hooks.log");
    edit(&b, |spec| {
        spec["hooks"] = json!({
            "prestart": [logging_hook(t.path(), &hooks, "prestart")],
            "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo bad; exit 3"]}],
            "createContainer": [logging_hook(t.path(), &hooks, "createContainer")],
            "poststop": [logging_hook(t.path(), &hooks, "poststop")],
        });
    });
    fails_with(
        &runtime(&root, &["create", "--bundle", b.to_str().unwrap(), "h1"]),
        "error running createRuntime hook #0: error running hook: exit status 3, stdout: bad",
    );
    let log = hook_log(&hooks);
    let stages: Vec<&str> = log.iter().map(|(stage, _)| stage.as_str()).collect();
    assert_eq!(stages, ["prestart", "poststop"]);
    let pid = log[0].1["pid"].as_u64().unwrap();
    assert!(pid > 0 && !runs(pid), "the container's pid is gone");
    fails_with(&runtime(&root, &["state", "h1"]), "container does not exist");
    assert!(!root.join("h1").exists());
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

/// `events --stats` prints the event runc prints for the same bundle:
/// the same parts, the spec's limits as the limits, memory in use and a
/// task (runc's figures are cgroup v1's on a v1 host: `raw` holds other
/// keys there); a stopped container's is refused in runc's words by both.
#[test]
fn events_stats_print_what_runc_prints() {
    let t = TempDir::new("runtime-events");
    let (root, runc_root) = (t.path().join("root"), t.path().join("runc-root"));
    let b = bundle(t.path(), "bundle", &["sleep", "60"]);
    edit(&b, |spec| {
        spec["linux"]["resources"] = json!({"memory": {"limit": 67108864}, "pids": {"limit": 50}})
    });
    // Unique: runc names the container's cgroups after its id.
    let id = t.path().file_name().unwrap().to_string_lossy().into_owned();
    let id = id.as_str();
    let runc = |args: &[&str]| {
        Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run runc")
    };
    // Created with their stdio on /dev/null: the container keeps it.
    let bundle_arg = b.to_str().unwrap();
    for program in [vmshim_bin(), PathBuf::from("runc")] {
        let mut command = Command::new(&program);
        if program != Path::new("runc") {
            command.arg("runtime");
        }
        let ours = program != Path::new("runc");
        let status = command
            .arg("--root")
            .arg(if ours { &root } else { &runc_root })
            .args(["run", "-d", "--bundle", bundle_arg, id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{} run -d", program.display());
    }
    // runc's container goes however the test ends.
    struct ForceDelete<'a>(&'a Path, &'a str);
    impl Drop for ForceDelete<'_> {
        fn drop(&mut self) {
            let root = self.0.to_str().unwrap();
            let _ = Command::new("runc")
                .args(["--root", root, "delete", "--force", self.1])
                .output();
        }
    }
    let _delete = ForceDelete(&runc_root, id);

    let event = |out: Output, who: &str| -> Value {
        assert_eq!(out.status.code(), Some(0), "{who}: {}", text(&out.stderr));
        let line = text(&out.stdout);
        assert_eq!(line.lines().count(), 1, "{who}: one line: {line}");
        serde_json::from_str(&line).unwrap()
    };
    let ours = event(runtime(&root, &["events", "--stats", id]), "vmshim");
    let theirs = event(runc(&["events", "--stats", id]), "runc");
    eprintln!("vmshim runtime events --stats:\n{ours}\nrunc events --stats:\n{theirs}");
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    for e in [&ours, &theirs] {
        assert_eq!((e["type"].as_str(), e["id"].as_str()), (Some("stats"), Some(id)), "{e}");
        let data = &e["data"];
        assert_eq!(data["memory"]["usage"]["limit"], 67108864, "{e}");
        assert!(data["memory"]["usage"]["usage"].as_u64() > Some(0), "{e}");
        assert!(!keys(&data["memory"]["raw"]).is_empty(), "{e}");
        assert_eq!(data["pids"]["limit"], 50, "{e}");
        assert!(data["pids"]["current"].as_u64() >= Some(1), "{e}");
        assert!(data["cpu"]["usage"]["total"].as_u64() > Some(0), "{e}");
    }
    let (ours, theirs) = (&ours["data"], &theirs["data"]);
    assert_eq!(keys(ours), keys(theirs));
    // (`cache` is there when not 0.)
    let without_cache = |v: &Value| -> Vec<String> { keys(v).into_iter().filter(|k| k != "cache").collect() };
    assert_eq!(without_cache(&ours["memory"]), without_cache(&theirs["memory"]));
    // What we print of a part, runc prints too (it may print more: the
    // per-CPU times, the peak of swap).
    for part in [
        "/cpu",
        "/cpu/usage",
        "/cpuset",
        "/pids",
        "/memory/usage",
        "/memory/swap",
        "/memory/kernel",
    ] {
        let theirs = keys(theirs.pointer(part).unwrap());
        let extra: Vec<String> = keys(ours.pointer(part).unwrap())
            .into_iter()
            .filter(|k| !theirs.contains(k))
            .collect();
        assert!(extra.is_empty(), "{part}: runc has no {extra:?}");
    }

    // Stopped: refused by both, in the same words.
    assert_eq!(runtime(&root, &["kill", id, "KILL"]).status.code(), Some(0));
    assert!(runc(&["kill", id, "KILL"]).status.success());
    let stopped = vminitd_tests::eventually(Duration::from_secs(20), || {
        state(&root, id)["status"] == "stopped"
            && serde_json::from_slice::<Value>(&runc(&["state", id]).stdout).unwrap()["status"] == "stopped"
    });
    assert!(stopped, "both stop after SIGKILL");
    let said = format!("container with id {id} is not running");
    fails_with(&runtime(&root, &["events", "--stats", id]), &said);
    fails_with(&runc(&["events", "--stats", id]), &said);
    assert_eq!(runtime(&root, &["delete", id]).status.code(), Some(0));
}
