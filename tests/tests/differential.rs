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
//! Besides `runc spec`'s bundle, the default specs podman and docker write
//! (`tests/fixtures/`) are compared the same ways: see `engines`.
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

#[path = "differential/engines.rs"]
mod engines;

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
# System calls busybox has no applet for, each made by a program of its
# own (see syscall_program): the errno it returned, 0 for success.
# Unfiltered, perf_event_open(NULL, ...) is EFAULT, futex_waitv(NULL, 0,
# ...) EINVAL and vmsplice(-1, ...) EBADF. Docker's profile denies the
# first by its default action (EPERM) and allows the others; podman's
# denies all three, the first and last by a rule (EPERM), futex_waitv by
# its default action (ENOSYS). Docker's also denies unshare.
for call in perf_event_open futex_waitv vmsplice; do /syscall/$call; echo "$call: errno $?"; done
# personality(PER_LINUX32): allowed by the engines' profiles by its argument.
echo "linux32: $(linux32 uname -m 2>&1)"
(unshare -U true) 2>&1; echo "unshare -U: $?"
echo "== network"
# Each interface's name, state, MTU, MAC and flags; IPv4 addresses (a
# link-local IPv6 one comes when the kernel's DAD is done); routes. The
# state of an interface that is up follows its carrier through the
# kernel's link watch, up to a second late: a VM's NIC was set up moments
# before the container started.
for i in $(seq 20); do
  settled=yes
  for d in /sys/class/net/*; do
    [ $(($(cat $d/flags) & 1)) = 1 ] && [ "$(cat $d/operstate)" = down ] && settled=no
  done
  [ $settled = yes ] && break
  sleep 0.1
done
for d in /sys/class/net/*; do
  echo "${d##*/} $(cat $d/operstate) mtu $(cat $d/mtu) $(cat $d/address) flags $(cat $d/flags)"
done
ip -o -4 addr show | awk '{ print $2, $4 }'
ip -4 route show
echo "== kernel settings"
for k in net/ipv4/ip_unprivileged_port_start net/ipv4/ping_group_range; do echo "$k $(cat /proc/sys/$k)"; done
echo "oom_score_adj $(cat /proc/self/oom_score_adj)"
# The pids limit: under cgroup v2 and no cgroup namespace, /sys/fs/cgroup
# is the whole hierarchy and the process's cgroup is in it; under v1, the
# pids hierarchy is the container's own cgroup.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cg=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
else cg=/sys/fs/cgroup/pids; fi
echo "pids.max $(cat $cg/pids.max 2>&1)"
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

/// The system calls the probe makes by programs of their own
/// (`/syscall/NAME`): name, number on x86_64, first argument.
const SYSCALLS: [(&str, u32, i32); 3] = [
    ("perf_event_open", 298, 0),
    ("futex_waitv", 449, 0),
    ("vmsplice", 278, -1),
];

/// A static x86_64 program that makes system call `nr` with `arg0` as its
/// first argument and zeros as the others, and exits with the errno it
/// returned (0 where it succeeded): one ELF header, one loadable segment,
/// the code.
fn syscall_program(nr: u32, arg0: i32) -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    let mut code = vec![0xb8]; // mov eax, nr
    code.extend_from_slice(&nr.to_le_bytes());
    code.extend_from_slice(&[0x48, 0xc7, 0xc7]); // mov rdi, arg0 (sign-extended)
    code.extend_from_slice(&arg0.to_le_bytes());
    code.extend_from_slice(&[
        0x31, 0xf6, // xor esi, esi
        0x31, 0xd2, // xor edx, edx
        0x45, 0x31, 0xd2, // xor r10d, r10d
        0x45, 0x31, 0xc0, // xor r8d, r8d
        0x45, 0x31, 0xc9, // xor r9d, r9d
        0x0f, 0x05, // syscall
        0x31, 0xff, // xor edi, edi
        0x48, 0x85, 0xc0, // test rax, rax
        0x79, 0x06, // jns exit
        0x48, 0x89, 0xc7, // mov rdi, rax
        0x48, 0xf7, 0xdf, // neg rdi
        0xb8, 0x3c, 0x00, 0x00, 0x00, // exit: mov eax, 60 (exit)
        0x0f, 0x05, // syscall
    ]);
    let size = HEADERS + code.len() as u64;
    let mut elf = Vec::new();
    // ELF header: 64-bit, little-endian, version 1, System V; an
    // executable for x86-64 starting right after the headers.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + HEADERS).to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    // The one program header: the whole file, read and execute, at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    for word in [0, BASE, BASE, size, size, 0x1000] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&code);
    elf
}

/// Writes an executable file.
fn write_executable(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// A busybox root at `DIR/rootfs` holding the probe at `/probe` and its
/// system call programs in `/syscall`.
fn probe_root(dir: &Path) {
    let rootfs = dir.join("rootfs");
    host_shim::rootfs::busybox_tree(Path::new("/bin/busybox"), &rootfs).expect("busybox root");
    write_executable(&rootfs.join("probe"), PROBE.as_bytes());
    std::fs::create_dir_all(rootfs.join("syscall")).unwrap();
    for (name, nr, arg0) in SYSCALLS {
        write_executable(&rootfs.join("syscall").join(name), &syscall_program(nr, arg0));
    }
}

/// A bundle made by `runc spec` over a busybox root holding the probe at
/// `/probe`, with `terminal` false and the probe as the process; `edit`
/// changes the config further.
struct Bundle {
    dir: TempDir,
    /// Mount points of the host side (an engine's shm, a network
    /// namespace), unmounted when the bundle is dropped.
    mounts: Vec<PathBuf>,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        for point in self.mounts.iter().rev() {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(point)
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Bundle {
    fn new(tag: &str, edit: impl FnOnce(&mut Value)) -> Bundle {
        let dir = TempDir::new(&format!("diff-{tag}"));
        probe_root(dir.path());
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
        Bundle {
            dir,
            mounts: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Changes the bundle's config.json.
    fn edit(&self, edit: impl FnOnce(&mut Value)) {
        let config = self.path().join("config.json");
        let mut spec: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        edit(&mut spec);
        std::fs::write(&config, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
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
    let (a, b) = (cgroup_neutral(&runc.stdout), cgroup_neutral(&ours.stdout));
    assert!(
        a == b && runc.stderr == ours.stderr,
        "the process saw something else under vminitd (- runc, + vminitd):\n{}\nstderr:\n{}",
        diff(&a, &b),
        diff(&runc.stderr, &ours.stderr)
    );
}

/// Whether this host's cgroup2 hierarchy (the first cgroup2 mount) offers
/// `controller`: on a cgroup v1 or hybrid host it is v1's, which runc
/// drives and vminitd's engine (cgroup v2 only, as in its guests) does not.
fn host_cgroup2_offers(controller: &str) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = mountinfo
        .lines()
        .find(|l| {
            l.split_once(" - ")
                .is_some_and(|(_, rest)| rest.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split(' ').nth(4));
    root.and_then(|r| std::fs::read_to_string(Path::new(r).join("cgroup.controllers")).ok())
        .is_some_and(|offered| offered.split_whitespace().any(|c| c == controller))
}

/// The probe's output without its `pids.max` line where this host's
/// cgroup2 has no pids controller (see [`host_cgroup2_offers`]): runc
/// shows v1's, and the agent on this host has none to show.
fn cgroup_neutral(probe: &str) -> String {
    if host_cgroup2_offers("pids") {
        return probe.to_owned();
    }
    probe
        .lines()
        .filter(|l| !l.starts_with("pids.max "))
        .map(|l| format!("{l}\n"))
        .collect()
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
/// image in a VM), the filesystem type of each bind mount of a host path
/// among `host_binds` (the host's own filesystem under runc; in a VM,
/// virtio-fs, which carries the host's file into the guest: its per-mount
/// options are still compared), and whether a masked path exists at all
/// (a masked path and a missing one both show nothing; only the first has
/// a mount).
fn kernel_neutral(probe: &str, spec_limits: &[&str], host_binds: &[String]) -> String {
    let mut section = "";
    let mut out = String::new();
    for line in probe.lines() {
        let point = line.split_whitespace().next().unwrap_or_default();
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
        } else if section == "mounts" && host_binds.iter().any(|b| b == point) {
            let options = line.split_whitespace().nth(2).unwrap_or_default();
            out += &format!("{point} (a host path) {options}\n");
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

/// The destinations of the bundle's bind mounts of host paths (not of
/// the kernel's own `/proc`, `/sys` or `/dev`).
fn host_binds(bundle: &Bundle) -> Vec<String> {
    let config = std::fs::read(bundle.path().join("config.json")).unwrap();
    let spec: Value = serde_json::from_slice(&config).unwrap();
    let kernel = |source: &str| {
        ["/proc", "/sys", "/dev"]
            .iter()
            .any(|k| Path::new(source).starts_with(k))
    };
    spec["mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            let options = m["options"].as_array().into_iter().flatten();
            m["type"] == "bind" || options.into_iter().any(|o| o == "bind" || o == "rbind")
        })
        .filter(|m| !kernel(m["source"].as_str().unwrap_or_default()))
        .filter_map(|m| m["destination"].as_str().map(str::to_owned))
        .collect()
}

/// Runs the bundle with runc on this host and in a micro-VM, and asserts
/// that the process saw the same, [`kernel_neutral`]ly.
fn compare_in_vm(bundle: Bundle, spec_limits: &[&str]) {
    let id = bundle.path().file_name().unwrap().to_string_lossy().into_owned();
    let runc = run_runc(&bundle, &id);
    assert_eq!(runc.code, 0, "runc failed: {}\n{}", runc.stderr, runc.stdout);
    let vm = run_in_vm(&bundle, &id);
    assert_eq!(vm.code, 0, "the probe failed in the VM: {}\n{}", vm.stderr, vm.stdout);
    let binds = host_binds(&bundle);
    let (a, b) = (
        kernel_neutral(&runc.stdout, spec_limits, &binds),
        kernel_neutral(&vm.stdout, spec_limits, &binds),
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
                 == mounts\n/ ext4 rw,relatime\n/etc/hosts virtiofs rw,relatime\n/etc/hostname tmpfs ro\n\
                 /proc proc rw\n== masked\n/proc/keys absent\n\
                 /proc/kcore file, reads 0 bytes\n/proc/version file, reads 16 bytes\n";
    assert_eq!(
        kernel_neutral(probe, &["Max open files"], &["/etc/hosts".into()]),
        "== limits\nLimit  Soft\nMax open files  1024\n== mounts\n/ (root) rw,relatime\n\
         /etc/hosts (a host path) rw,relatime\n/etc/hostname tmpfs ro\n/proc proc rw\n\
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
