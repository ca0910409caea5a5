//! The pid `vmshim runtime create` reports is what conmon and containerd's
//! runc shim wait on: a process that exits with the container process's
//! status (128+N for signal N) once the process has ended and its VM is
//! shut down, a child of the caller's subreaper once `create` has exited,
//! through which signals reach the container's process, and whose SIGKILL
//! leaves no VM behind. [`FakeConmon`] drives the runtime as conmon does.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;
use vminitd_tests::{vmshim_bin, TempDir};

/// conmon's part: a subreaper (`PR_SET_CHILD_SUBREAPER`) that runs
/// `vmshim runtime create --pid-file`, reads the pid, runs `start`, waits
/// for the pid with `waitpid` and takes its status as the container's
/// (`WEXITSTATUS`, or 128 + `WTERMSIG`), and signals it. This test
/// process is the subreaper: once `create` has exited, the pid is its
/// child.
struct FakeConmon {
    root: PathBuf,
}

impl FakeConmon {
    fn new(root: PathBuf) -> FakeConmon {
        static SUBREAPER: Once = Once::new();
        SUBREAPER.call_once(|| {
            // SAFETY: prctl with integer arguments.
            let set = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            assert_eq!(set, 0, "prctl: {}", std::io::Error::last_os_error());
        });
        FakeConmon { root }
    }

    fn runtime(&self, args: &[&str]) -> Output {
        Command::new(vmshim_bin())
            .arg("runtime")
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run vmshim runtime")
    }

    /// `create --bundle B --pid-file F ID`, its stdout and stderr (the
    /// container's) into `out`; the pid from the file.
    fn create(&self, bundle: &Path, id: &str, out: &Path) -> u32 {
        let pid_file = self.root.with_extension(format!("{id}.pid"));
        let log = fs::File::create(out).unwrap();
        let status = Command::new(vmshim_bin())
            .arg("runtime")
            .arg("--root")
            .arg(&self.root)
            .args(["create", "--bundle"])
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap();
        assert!(status.success(), "create: {}", fs::read_to_string(out).unwrap());
        fs::read_to_string(&pid_file).unwrap().parse().unwrap()
    }

    fn start(&self, id: &str) {
        let out = self.runtime(&["start", id]);
        assert!(out.status.success(), "start: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn state(&self, id: &str) -> Value {
        let out = self.runtime(&["state", id]);
        assert!(out.status.success(), "state: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits up to `timeout` for `pid` (our child) to exit; its status as
    /// conmon reports it. `None` if it still runs.
    fn wait(&self, pid: u32, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes one int, which lives across the call.
            let got = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
            assert!(got >= 0, "waitpid {pid}: {}", std::io::Error::last_os_error());
            if got == pid as i32 {
                return Some(match libc::WIFEXITED(status) {
                    true => libc::WEXITSTATUS(status),
                    false => 128 + libc::WTERMSIG(status),
                });
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&self, pid: u32, signo: i32) {
        // SAFETY: kill with integer arguments; the pid is our child, not
        // reaped yet.
        assert_eq!(unsafe { libc::kill(pid as i32, signo) }, 0);
    }
}

/// A `runc spec` busybox bundle running `script` (with `sh -c`), in
/// `dir/NAME`, changed by `edit`.
fn bundle(dir: &Path, name: &str, script: &str, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let b = vminitd_tests::runc_bundle(dir, name, &["sh", "-c", script], &["PATH=/bin:/sbin"]);
    let path = b.join("config.json");
    let mut spec: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut spec);
    fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    b
}

/// The parent of `pid`.
fn parent(pid: u32) -> u32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(") ")
        .unwrap()
        .1
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// The children of `pid` (its VM: QEMU, the vsock backend).
fn children(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    for task in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let list = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        all.extend(list.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
    }
    all
}

/// Whether `pid` runs (a zombie does not).
fn runs(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
}

#[test]
fn the_pid_exits_with_the_process_status_once_its_vm_is_gone() {
    let t = TempDir::new("runtime-pid");
    let conmon = FakeConmon::new(t.path().join("root"));
    let b = bundle(t.path(), "b", "echo started; exit 7", |_| {});
    let out = t.path().join("out");
    let pid = conmon.create(&b, "p1", &out);
    // As runc's init: `create`'s child, now the subreaper's.
    assert_eq!(parent(pid), std::process::id(), "reparented to the subreaper");
    let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(cmdline.contains("instance\0serve\0p1\0"), "{cmdline:?}");
    let vm = children(pid);
    assert!(
        vm.iter()
            .any(|c| fs::read_to_string(format!("/proc/{c}/cmdline")).is_ok_and(|c| c.contains("qemu"))),
        "the pid holds the VM: {vm:?}"
    );
    assert_eq!(conmon.state("p1")["pid"].as_u64(), Some(u64::from(pid)));
    assert_eq!(conmon.wait(pid, Duration::from_secs(2)), None, "created: still there");
    conmon.start("p1");
    assert_eq!(conmon.wait(pid, Duration::from_secs(60)), Some(7));
    assert_eq!(fs::read_to_string(&out).unwrap(), "started\n");
    // The VM was shut down before the pid exited.
    for process in vm {
        assert!(!runs(process), "{process} of the VM runs after the pid exited");
    }
    // state and delete still answer, as runc's do for a stopped container.
    let s = conmon.state("p1");
    assert_eq!(
        (s["status"].as_str(), s["pid"].as_u64()),
        (Some("stopped"), Some(0)),
        "{s}"
    );
    let deleted = conmon.runtime(&["delete", "p1"]);
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    assert!(!t.path().join("root/p1").exists());
}

/// `podman stop`: SIGTERM to the pid, which the process's trap sees; and
/// a process killed by a signal is 128+N.
#[test]
fn signals_to_the_pid_reach_the_process() {
    let t = TempDir::new("runtime-pid-term");
    let conmon = FakeConmon::new(t.path().join("root"));
    let script = "trap 'echo got TERM; exit 42' TERM; echo ready; while :; do sleep 1; done";
    let b = bundle(t.path(), "b", script, |_| {});
    let out = t.path().join("out");
    let pid = conmon.create(&b, "t1", &out);
    conmon.start("t1");
    assert!(
        vminitd_tests::eventually(Duration::from_secs(30), || fs::read_to_string(&out)
            .unwrap()
            .contains("ready")),
        "{}",
        fs::read_to_string(&out).unwrap()
    );
    conmon.kill(pid, libc::SIGTERM);
    assert_eq!(conmon.wait(pid, Duration::from_secs(30)), Some(42));
    assert_eq!(fs::read_to_string(&out).unwrap(), "ready\ngot TERM\n");
    assert!(conmon.runtime(&["delete", "t1"]).status.success());

    // Outside a pid namespace of its own (so not its namespace's init,
    // which the kernel shields from its own signals), a process that
    // kills itself with SIGUSR1 ends as a shell reports it: 128 + 10.
    let b = bundle(t.path(), "b2", "kill -USR1 $$", |spec| {
        let namespaces = spec["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|ns| ns["type"] != "pid");
    });
    let pid = conmon.create(&b, "t2", &t.path().join("out2"));
    conmon.start("t2");
    assert_eq!(conmon.wait(pid, Duration::from_secs(60)), Some(128 + libc::SIGUSR1));
    assert!(conmon.runtime(&["delete", "t2"]).status.success());
}

/// `podman stop`'s end: a process that ignores SIGTERM (a pid namespace's
/// init without a handler, as with runc) gets SIGKILL after the timeout;
/// SIGKILL of the pid leaves no VM running.
#[test]
fn sigkill_of_the_pid_takes_the_vm_with_it() {
    let t = TempDir::new("runtime-pid-kill");
    let conmon = FakeConmon::new(t.path().join("root"));
    let b = bundle(t.path(), "b", "echo ready; exec sleep 600", |_| {});
    let out = t.path().join("out");
    let pid = conmon.create(&b, "k1", &out);
    conmon.start("k1");
    assert!(vminitd_tests::eventually(Duration::from_secs(30), || {
        fs::read_to_string(&out).unwrap().contains("ready")
    }));
    let vm = children(pid);
    assert!(!vm.is_empty());
    conmon.kill(pid, libc::SIGTERM);
    assert_eq!(
        conmon.wait(pid, Duration::from_secs(3)),
        None,
        "sleep, its namespace's init, ignores SIGTERM as under runc"
    );
    assert_eq!(conmon.state("k1")["status"], "running");
    conmon.kill(pid, libc::SIGKILL);
    assert_eq!(conmon.wait(pid, Duration::from_secs(10)), Some(128 + libc::SIGKILL));
    for process in &vm {
        assert!(
            vminitd_tests::eventually(Duration::from_secs(5), || !runs(*process)),
            "{process} of the VM outlived the pid's SIGKILL"
        );
        // Orphaned to this subreaper: reaped, as conmon reaps them.
        // SAFETY: waitpid with a null status pointer.
        unsafe { libc::waitpid(*process as i32, std::ptr::null_mut(), libc::WNOHANG) };
    }
    let s = conmon.state("k1");
    assert_eq!(
        (s["status"].as_str(), s["pid"].as_u64()),
        (Some("stopped"), Some(0)),
        "{s}"
    );
    assert!(conmon.runtime(&["delete", "k1"]).status.success());
    assert!(!t.path().join("root/k1").exists());
}

/// `runtime kill` (podman's and docker's way to stop) and `delete
/// --force` end the pid as runc's kill and delete end its init.
#[test]
fn kill_and_delete_force_end_the_pid() {
    let t = TempDir::new("runtime-pid-rt");
    let conmon = FakeConmon::new(t.path().join("root"));
    let b = bundle(t.path(), "b", "exec sleep 600", |_| {});
    let pid = conmon.create(&b, "r1", &t.path().join("out"));
    conmon.start("r1");
    assert!(conmon.runtime(&["kill", "r1", "KILL"]).status.success());
    assert_eq!(conmon.wait(pid, Duration::from_secs(30)), Some(128 + libc::SIGKILL));
    assert!(conmon.runtime(&["delete", "r1"]).status.success());

    // A created container, never started, and a running one: delete
    // --force kills the process; the pid exits with its status.
    for (id, started) in [("r2", false), ("r3", true)] {
        let pid = conmon.create(&b, id, &t.path().join(format!("out-{id}")));
        if started {
            conmon.start(id);
        }
        let deleted = conmon.runtime(&["delete", "--force", id]);
        assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
        assert_eq!(
            conmon.wait(pid, Duration::from_secs(30)),
            Some(128 + libc::SIGKILL),
            "{id}"
        );
        assert!(!t.path().join("root").join(id).exists());
    }
}
