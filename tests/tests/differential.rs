//! Differential tests: the same OCI bundle run by runc and by vminitd's
//! container engine (the agent as PID 1 of a namespace on this host, given
//! `container_spec(bundle, id, RootPlacement::Host)`). A probe script prints
//! what the container's process sees, normalised so that only what a
//! runtime decides is left; the two outputs must be the same.
//!
//! The same comparison runs with the bundle in a micro-VM (`vmshim runtime
//! run`), where what the guest's kernel decides rather than the runtime is
//! normalised away (see [`kernel_neutral`]).
//!
//! Needs root and runc (scripts/setup.sh installs runc); without either the
//! tests fail, saying which is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_proto::{ContainerStatus, StreamKind};
use host_shim::image::{container_spec, RootPlacement};
use host_shim::Client;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use vminitd_tests::{NamespacedAgent, TempDir};

/// What the container's process sees, one fact a line, in sections. Where
/// the output could name this host (mount sources, superblock options,
/// dates, pipe inodes) only the part a runtime decides is printed.
const PROBE: &str = r#"#!/bin/sh
echo "== process"
echo "pid $$ cwd $(pwd)"
# The shell's own status (read by the shell itself), then a child's: the
# capabilities a program it runs keeps.
while IFS= read -r line; do
  case "$line" in
    CapInh:*|CapPrm:*|CapEff:*|CapBnd:*|CapAmb:*|NoNewPrivs:*|Seccomp:*|Seccomp_filters:*) echo "sh $line" ;;
  esac
done < /proc/self/status
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp(_filters)?):' /proc/self/status | sed 's/^/child /'
echo "uid $(id -u) gid $(id -g) groups $(id -G)"
echo "hostname $(hostname)"
echo "umask $(umask)"
echo "fds $(ls /proc/self/fd | sort -n | tr '\n' ' ')"
echo "== environment"
env | sort
echo "== limits"
cat /proc/self/limits
echo "== mounts"
# Mount point, filesystem type, per-mount options; sorted, as the order of
# mountinfo is the order the runtime mounted in (runc and crun differ).
# /sys/fs/cgroup is left out: it differs by design (runc mounts this host's
# cgroup v1 hierarchies there, vminitd a cgroup2 of the container's own).
awk '{ for (i = 7; $i != "-"; i++); print $5, $(i + 1), $6 }' /proc/self/mountinfo |
  grep -v '^/sys/fs/cgroup' | sort
echo "== dev"
# Type and mode, owner, major and minor, name; a link's target.
ls -ln /dev | awk 'NR > 1 {
  t = substr($1, 1, 1)
  if (t == "c" || t == "b") print $1, $3 ":" $4, $5 $6, $NF
  else if (t == "l") print $1, $(NF - 2), $(NF - 1), $NF
  else print $1, $3 ":" $4, $NF
}'
echo "== masked"
# /proc/version is not masked: it shows what an unmasked file reads.
for p in /proc/acpi /proc/asound /proc/kcore /proc/keys /proc/latency_stats /proc/timer_list \
         /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware /proc/version; do
  if [ -d "$p" ]; then echo "$p dir, $(ls -A "$p" 2>&1 | wc -l) entries"
  elif [ -e "$p" ]; then echo "$p file, reads $(head -c 16 "$p" 2>&1 | wc -c) bytes"
  else echo "$p absent"; fi
done
echo "== read-only"
(echo x > /proc/sys/kernel/domainname) 2>&1; echo "write /proc/sys: $?"
(echo x > /proc/probe) 2>&1; echo "create in /proc: $?"
(touch /probe-root-write && rm /probe-root-write) 2>&1; echo "write /: $?"
echo "== seccomp"
(mkdir /tmp/probe-dir && rmdir /tmp/probe-dir) 2>&1; echo "mkdir: $?"
(ln -s a /tmp/probe-link && rm /tmp/probe-link) 2>&1; echo "symlink: $?"
"#;

/// Whether this machine can run the comparison: root and runc. A machine
/// without them fails the test rather than passing it unchecked.
fn can_compare() -> bool {
    // SAFETY: geteuid has no preconditions.
    assert!(unsafe { libc::geteuid() } == 0, "the comparison with runc needs root");
    assert!(
        Command::new("runc").arg("--version").output().is_ok(),
        "runc is not installed (scripts/setup.sh installs it)"
    );
    true
}

/// A bundle made by `runc spec` over a busybox root holding the probe at
/// `/probe`, with `terminal` false and the probe as the process; `edit`
/// changes the config further.
struct Bundle {
    dir: TempDir,
}

impl Bundle {
    fn new(tag: &str, edit: impl FnOnce(&mut Value)) -> Bundle {
        let dir = TempDir::new(&format!("diff-{tag}"));
        let rootfs = dir.path().join("rootfs");
        host_shim::rootfs::busybox_tree(Path::new("/bin/busybox"), &rootfs).expect("busybox root");
        let probe = rootfs.join("probe");
        std::fs::write(&probe, PROBE).unwrap();
        std::fs::set_permissions(&probe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let out = Command::new("runc")
            .args(["spec", "--bundle"])
            .arg(dir.path())
            .output()
            .expect("runc spec");
        assert!(
            out.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.path().join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(["sh", "/probe"]);
        // vminitd's own filter that keeps workloads off vsock would be one
        // more seccomp filter than runc's in every comparison: the bundle
        // lifts it (runc ignores the annotation), so that the spec's own
        // seccomp is compared alone. Its effect is tested in access_vm.rs.
        spec["annotations"][agent_proto::VSOCK_ANNOTATION] = json!("allow");
        edit(&mut spec);
        std::fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        Bundle { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// What a run printed, and its exit code.
#[derive(Debug)]
struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

impl From<std::process::Output> for Run {
    fn from(out: std::process::Output) -> Run {
        Run {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            code: out.status.code().unwrap_or(-1),
        }
    }
}

/// `runc run` of the bundle, with a state directory of its own.
fn run_runc(bundle: &Bundle, id: &str) -> Run {
    let root = bundle.path().join("runc-state");
    let out = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .expect("run runc");
    Run::from(out)
}

/// The same bundle through the agent: create, attach stdout and stderr,
/// start, wait, delete.
async fn run_ours(client: &Client, bundle: &Bundle, id: &str) -> Run {
    let spec = container_spec(bundle.path(), id, RootPlacement::Host).expect("container_spec of the bundle");
    let created = client.create_container(spec).await.expect("create_container");
    let mut out = client.attach(created.process, StreamKind::Stdout).await.unwrap();
    let mut err = client.attach(created.process, StreamKind::Stderr).await.unwrap();
    client.start_container(id).await.expect("start_container");
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
    let status = client.wait(created.process).await.expect("wait");
    client.delete_container(id, false).await.expect("delete_container");
    Run {
        stdout: read_out.await.unwrap(),
        stderr: read_err.await.unwrap(),
        code: status.shell_code(),
    }
}

/// A line diff of `a` (runc) and `b` (ours): `-` only runc's, `+` only
/// ours, two spaces both; the longest common subsequence kept in place.
fn diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out += &format!("  {}\n", a[i]);
            (i, j) = (i + 1, j + 1);
        } else if j == b.len() || (i < a.len() && lcs[i + 1][j] >= lcs[i][j + 1]) {
            out += &format!("- {}\n", a[i]);
            i += 1;
        } else {
            out += &format!("+ {}\n", b[j]);
            j += 1;
        }
    }
    out
}

/// Runs the bundle with runc and with the engine, and asserts that the
/// process saw the same.
async fn compare(bundle: Bundle) {
    let id = bundle.path().file_name().unwrap().to_string_lossy().into_owned();
    let runc = run_runc(&bundle, &id);
    assert_eq!(runc.code, 0, "runc failed: {}\n{}", runc.stderr, runc.stdout);
    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    let ours = run_ours(&client, &bundle, &id).await;
    assert_eq!(
        ours.code, 0,
        "the probe failed under vminitd: {}\n{}",
        ours.stderr, ours.stdout
    );
    assert!(
        runc.stdout == ours.stdout && runc.stderr == ours.stderr,
        "the process saw something else under vminitd (- runc, + vminitd):\n{}\nstderr:\n{}",
        diff(&runc.stdout, &ours.stdout),
        diff(&runc.stderr, &ours.stderr)
    );
}

/// `vmshim runtime run` of the bundle: the container in a micro-VM.
fn run_in_vm(bundle: &Bundle, id: &str) -> Run {
    let root = bundle.path().join("vmshim-state");
    let out = Command::new(vminitd_tests::vmshim_bin())
        .arg("runtime")
        .arg("--root")
        .arg(&root)
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .expect("run vmshim runtime");
    Run::from(out)
}

/// The masked paths the probe looks at (the stock spec's).
const MASKED: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

/// The probe's output without what the kernel under the runtime decides
/// rather than the runtime: the limits the spec does not set (inherited
/// from the runtime's parent: this test, or the guest's init), the root's
/// filesystem type (the bundle's directory here, an overlay over the
/// image in a VM), and whether a masked path exists at all (a masked path
/// and a missing one both show nothing; only the first has a mount).
fn kernel_neutral(probe: &str, spec_limits: &[&str]) -> String {
    let mut section = "";
    let mut out = String::new();
    for line in probe.lines() {
        if let Some(name) = line.strip_prefix("== ") {
            section = name;
        } else if section == "limits" && !line.starts_with("Limit ") && !spec_limits.iter().any(|l| line.starts_with(l))
        {
            continue;
        } else if section == "mounts" && MASKED.iter().any(|m| line.starts_with(&format!("{m} "))) {
            // Masked where the kernel has it, absent where it does not.
            continue;
        } else if section == "mounts" && line.starts_with("/ ") {
            let options = line.split_whitespace().nth(2).unwrap_or_default();
            out += &format!("/ (root) {options}\n");
            continue;
        } else if section == "masked"
            && (line.ends_with(" absent") || line.ends_with(" 0 entries") || line.ends_with(" reads 0 bytes"))
        {
            out += &format!("{} shows nothing\n", line.split_whitespace().next().unwrap_or_default());
            continue;
        }
        out += line;
        out.push('\n');
    }
    out
}

/// Runs the bundle with runc on this host and in a micro-VM, and asserts
/// that the process saw the same, [`kernel_neutral`]ly.
fn compare_in_vm(bundle: Bundle, spec_limits: &[&str]) {
    let id = bundle.path().file_name().unwrap().to_string_lossy().into_owned();
    let runc = run_runc(&bundle, &id);
    assert_eq!(runc.code, 0, "runc failed: {}\n{}", runc.stderr, runc.stdout);
    let vm = run_in_vm(&bundle, &id);
    assert_eq!(vm.code, 0, "the probe failed in the VM: {}\n{}", vm.stderr, vm.stdout);
    let (a, b) = (
        kernel_neutral(&runc.stdout, spec_limits),
        kernel_neutral(&vm.stdout, spec_limits),
    );
    assert!(
        a == b,
        "the process saw something else in the VM (- runc, + vminitd in a VM):\n{}",
        diff(&a, &b)
    );
}

#[test]
fn the_stock_runc_spec_in_a_vm() {
    if !can_compare() {
        return;
    }
    compare_in_vm(Bundle::new("vm-stock", |_| {}), &["Max open files"]);
}

#[test]
fn a_user_seccomp_and_fewer_capabilities_in_a_vm() {
    if !can_compare() {
        return;
    }
    let bundle = Bundle::new("vm-user", |spec| {
        let p = &mut spec["process"];
        p["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 2000], "umask": 0o077});
        p["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048},
            {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200},
        ]);
        p["noNewPrivileges"] = json!(true);
        let caps = json!(["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"]);
        p["capabilities"] = json!({
            "bounding": caps,
            "effective": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
            "permitted": caps,
            "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"],
        });
        spec["root"]["readonly"] = json!(false);
        spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["symlink", "symlinkat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            ],
        });
    });
    compare_in_vm(bundle, &["Max open files", "Max processes"]);
}

#[test]
fn kernel_neutral_keeps_what_the_runtime_decides() {
    let probe = "== limits\nLimit  Soft\nMax cpu time  unlimited\nMax open files  1024\n\
                 == mounts\n/ ext4 rw,relatime\n/proc proc rw\n== masked\n/proc/keys absent\n\
                 /proc/kcore file, reads 0 bytes\n/proc/version file, reads 16 bytes\n";
    assert_eq!(
        kernel_neutral(probe, &["Max open files"]),
        "== limits\nLimit  Soft\nMax open files  1024\n== mounts\n/ (root) rw,relatime\n/proc proc rw\n\
         == masked\n/proc/keys shows nothing\n/proc/kcore shows nothing\n/proc/version file, reads 16 bytes\n"
    );
}

#[tokio::test]
async fn the_stock_runc_spec() {
    if !can_compare() {
        return;
    }
    compare(Bundle::new("stock", |_| {})).await;
}

#[tokio::test]
async fn a_user_with_groups_umask_rlimits_and_fewer_capabilities() {
    if !can_compare() {
        return;
    }
    compare(Bundle::new("user", |spec| {
        let p = &mut spec["process"];
        p["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 2000], "umask": 0o077});
        p["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048}]);
        p["noNewPrivileges"] = json!(true);
        let caps = json!(["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"]);
        p["capabilities"] = json!({
            "bounding": caps,
            "effective": ["CAP_NET_BIND_SERVICE", "CAP_KILL"],
            "permitted": caps,
            "inheritable": ["CAP_NET_BIND_SERVICE"],
            "ambient": ["CAP_NET_BIND_SERVICE"],
        });
    }))
    .await;
}

#[tokio::test]
async fn a_seccomp_filter_that_denies_mkdir() {
    if !can_compare() {
        return;
    }
    compare(Bundle::new("seccomp", |spec| {
        // A writable root, so that only the filter can fail mkdir.
        spec["root"]["readonly"] = json!(false);
        // mkdirat too: a libc may make mkdir(2) with it. The default errno
        // (EPERM), and an explicit one.
        spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
                {"names": ["symlink", "symlinkat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            ],
        });
    }))
    .await;
}

/// The stock spec's root is read-only already: this is the other way.
#[tokio::test]
async fn a_writable_root() {
    if !can_compare() {
        return;
    }
    compare(Bundle::new("rw", |spec| spec["root"]["readonly"] = json!(false))).await;
}

/// runc's `state` status of a container.
fn runc_status(root: &Path, id: &str) -> String {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["state", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "runc state: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    state["status"].as_str().unwrap().to_owned()
}

/// Polls runc's status until it is `want` (a killed process takes a
/// moment to be reaped).
fn runc_status_becomes(root: &Path, id: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = runc_status(root, id);
        if status == want || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `runc --root ROOT ARGS`. Its stderr goes to a file: after `create`, the
/// container's process holds runc's stdio, so a pipe would not end.
fn runc(root: &Path, args: &[&str]) {
    let log = root.with_extension("stderr");
    let status = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "runc {args:?}: {said}");
}

/// `runc delete --force` on drop, so that a failed test leaves no container.
struct ForceDelete<'a>(&'a Path, &'a str);

impl Drop for ForceDelete<'_> {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.0)
            .args(["delete", "--force", self.1])
            .output();
    }
}

/// The status names of create → start → kill → delete, as runc's `state`
/// and the agent's `container_state` report them.
#[tokio::test]
async fn the_lifecycle_reports_runcs_status_names() {
    if !can_compare() {
        return;
    }
    let bundle = Bundle::new("life", |spec| spec["process"]["args"] = json!(["sleep", "60"]));
    let root: PathBuf = bundle.path().join("runc-state");
    // Unique: runc names the container's cgroups after its id.
    let name = bundle.path().file_name().unwrap().to_string_lossy().into_owned();
    let id = name.as_str();
    let mut theirs = Vec::new();
    let _cleanup = ForceDelete(&root, id);
    runc(&root, &["create", "--bundle", &bundle.path().to_string_lossy(), id]);
    theirs.push(runc_status(&root, id));
    runc(&root, &["start", id]);
    theirs.push(runc_status(&root, id));
    runc(&root, &["kill", id, "KILL"]);
    theirs.push(runc_status_becomes(&root, id, "stopped"));
    runc(&root, &["delete", id]);
    let gone = Command::new("runc")
        .arg("--root")
        .arg(&root)
        .args(["state", id])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "runc still knows {id} after delete");

    let agent = NamespacedAgent::start().await;
    let client = agent.client().await;
    // The name on the wire.
    let name = |s: ContainerStatus| serde_json::to_value(s).unwrap().as_str().unwrap().to_owned();
    let mut ours = Vec::new();
    let spec = container_spec(bundle.path(), id, RootPlacement::Host).unwrap();
    let created = client.create_container(spec).await.unwrap();
    ours.push(name(client.container_state(id).await.unwrap().status));
    client.start_container(id).await.unwrap();
    ours.push(name(client.container_state(id).await.unwrap().status));
    client.kill_container(id, libc::SIGKILL, false).await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), client.wait(created.process))
        .await
        .expect("the killed process ends")
        .unwrap();
    assert_eq!(status.signal, Some(libc::SIGKILL));
    ours.push(name(client.container_state(id).await.unwrap().status));
    client.delete_container(id, false).await.unwrap();
    assert!(
        client.container_state(id).await.is_err(),
        "the agent still knows {id} after delete"
    );

    assert_eq!(theirs, ["created", "running", "stopped"]);
    assert_eq!(ours, theirs);
}
