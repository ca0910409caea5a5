//! The default specs podman and docker write, run by runc and by vminitd.
//!
//! `tests/fixtures/` holds the config.json that podman 4.3 (`podman create`
//! then `podman init`) and docker 20.10 (`docker create` then `docker
//! start`) wrote for the tests' busybox image, with runc as their runtime,
//! and what named the capturing host made neutral
//! ([`capture_the_engines_default_specs`] captures them again;
//! tests/fixtures/README.md says how). Each test takes one as it is (its
//! capabilities, seccomp profile, masked paths, mounts, rlimits, sysctls,
//! resources, annotations) and changes only what an engine's host holds:
//! the probe in place of the command, the busybox root, the engine's files
//! (`/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`,
//! `/run/.containerenv`, podman's `/dev/shm`) as files of the same kind in
//! the bundle, and the network namespace wired as netavark (a namespace by
//! path) or libnetwork (a new one, wired in the `prestart` hook) wires it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use vminitd_tests::engines::Subnet;
use vminitd_tests::TempDir;

use super::{can_compare, compare, compare_in_vm, host_cgroup2_offers, probe_root, write_executable, Bundle, PROBE};

/// The container id in the fixtures (every engine's ids are 64 hex digits;
/// the hostname is its first 12).
const NEUTRAL_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The id of the container's layer in the fixtures (the root's directory).
const NEUTRAL_LAYER: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// The network namespace podman's fixture joins.
const NEUTRAL_NETNS: &str = "/run/netns/netns-00000000-0000-0000-0000-000000000000";

/// The creation time in podman's fixture (`io.kubernetes.cri-o.Created`).
const NEUTRAL_CREATED: &str = "1970-01-01T00:00:00Z";

/// dockerd's pid in docker's fixture: its `prestart` hook is dockerd
/// itself, `/proc/PID/exe`.
const NEUTRAL_DOCKERD_PID: &str = "1000";

/// libnetwork's sandbox id (12 hex digits) in docker's fixture, the hook's
/// last argument.
const NEUTRAL_SANDBOX: &str = "abcdefabcdef";

/// Where the fixtures are.
fn fixtures() -> PathBuf {
    vminitd_tests::workspace_root().join("tests/fixtures")
}

/// A fixture's spec.
fn fixture(name: &str) -> Value {
    let path = fixtures().join(name);
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// What the probe shows of the files an engine binds into the container.
const ENGINE_FILES: &str = r#"echo "== engine files"
for f in /etc/hostname /etc/hosts /etc/resolv.conf /run/.containerenv; do
  if [ -f "$f" ]; then echo "$f:"; sed 's/^/  /' "$f"; else echo "$f absent"; fi
done
(echo probe > /dev/shm/probe && cat /dev/shm/probe && rm /dev/shm/probe) 2>&1; echo "write /dev/shm: $?"
echo "/dev/shm size $(df -k /dev/shm | awk 'NR == 2 { print $2 }') KiB"
"#;

/// How the test gives the container the network its engine would.
#[derive(Clone, Copy)]
enum Network {
    /// podman's: the spec's namespace by path, made and wired (as netavark
    /// wires it) before the runtime runs.
    Path,
    /// docker's: a new namespace, wired by the spec's `prestart` hook
    /// (libnetwork's, replaced by one that wires it the same way).
    Hook,
}

/// A shell program that wires a network namespace as netavark and
/// libnetwork do: a veth pair with `eth0` inside (a fixed MAC, the
/// subnet's `.2/24`, a default route through `.1`), the host's end (the
/// subnet's `.1/24`) and loopback up. Its first argument is the
/// namespace's file; as a `prestart` hook (its first argument is then
/// libnetwork's `-exec-root=...`), the namespace of the pid in the state
/// on its stdin.
fn wire_script(subnet: &Subnet) -> String {
    let n = subnet.n();
    format!(
        r#"#!/bin/sh
set -e
PATH=/usr/sbin:/usr/bin:/sbin:/bin
case "$1" in
  /*) ns=$1 ;;
  *) ns=/proc/$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p')/ns/net ;;
esac
# A namespace of the runtime's earlier run may still be going away.
ip link del {host} 2>/dev/null || true
ip link add {host} type veth peer name eth0 address 02:00:0a:7b:{n:02x}:02 netns "$ns"
ip addr add {prefix}1/24 dev {host}
ip link set {host} up
nsenter --net="$ns" ip link set lo up
nsenter --net="$ns" ip addr add {prefix}2/24 dev eth0
nsenter --net="$ns" ip link set eth0 up
nsenter --net="$ns" ip route add default via {prefix}1
"#,
        host = subnet.bridge(),
        prefix = subnet.prefix(),
    )
}

/// The host side of an engine's container: its files in `DIR/host`, its
/// shm, its network namespace.
struct HostSide<'a> {
    bundle: &'a mut Bundle,
    hostname: String,
    subnet: &'a Subnet,
}

impl HostSide<'_> {
    fn dir(&self) -> PathBuf {
        self.bundle.path().join("host")
    }

    /// A host path of the same kind as the engine's bind source for
    /// `destination`, with what the engine writes there.
    fn source_for(&mut self, destination: &str) -> PathBuf {
        let prefix = self.subnet.prefix();
        let (name, contents) = match destination {
            "/etc/hostname" => ("hostname", format!("{}\n", self.hostname)),
            "/etc/hosts" => (
                "hosts",
                format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{prefix}2\t{}\n",
                    self.hostname
                ),
            ),
            "/etc/resolv.conf" => ("resolv.conf", format!("nameserver {prefix}1\noptions ndots:0\n")),
            "/run/.containerenv" => (
                ".containerenv",
                format!(
                    "engine=\"podman-4.3.1\"\nname=\"probe\"\nid=\"{NEUTRAL_ID}\"\n\
                     image=\"localhost/vminitd-busybox:latest\"\nimageid=\"{NEUTRAL_LAYER}\"\nrootless=0\n"
                ),
            ),
            // podman's: a tmpfs of the host, bound in.
            "/dev/shm" => {
                let shm = self.dir().join("shm");
                std::fs::create_dir_all(&shm).unwrap();
                let out = Command::new("mount")
                    .args(["-t", "tmpfs", "-o", "nosuid,nodev,noexec,size=64000k", "shm"])
                    .arg(&shm)
                    .output()
                    .expect("run mount");
                assert!(
                    out.status.success(),
                    "mount shm: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                self.bundle.mounts.push(shm.clone());
                return shm;
            }
            other => panic!("the fixture binds {other} from the engine's host: the test has no file for it"),
        };
        let path = self.dir().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// A network namespace at `DIR/netns`, wired.
    fn namespace(&mut self) -> PathBuf {
        let file = self.bundle.path().join("netns");
        std::fs::write(&file, "").unwrap();
        let out = Command::new("unshare")
            .arg(format!("--net={}", file.display()))
            .arg("true")
            .output()
            .expect("run unshare");
        assert!(
            out.status.success(),
            "unshare --net: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.bundle.mounts.push(file.clone());
        let out = Command::new("sh")
            .arg(self.dir().join("wire"))
            .arg(&file)
            .stdin(Stdio::null())
            .output()
            .expect("run the wiring");
        assert!(
            out.status.success(),
            "wire {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        file
    }
}

/// Fixture `name` as a bundle that runs here (see the module's docs):
/// `network` says how its network namespace is given.
fn fixture_bundle(tag: &str, name: &str, network: Network, subnet: &Subnet) -> Bundle {
    let dir = TempDir::new(&format!("diff-{tag}"));
    probe_root(dir.path());
    std::fs::write(dir.path().join("rootfs/probe"), format!("{PROBE}{ENGINE_FILES}")).unwrap();
    let mut bundle = Bundle {
        dir,
        mounts: Vec::new(),
    };
    let unique = bundle.path().file_name().unwrap().to_string_lossy().into_owned();
    let mut spec = fixture(name);
    spec["process"]["args"] = json!(["sh", "/probe"]);
    spec["root"]["path"] = json!("rootfs");
    // As in Bundle::new: vminitd's own vsock filter would be one more
    // seccomp filter than runc's; the spec's profile is compared alone.
    spec["annotations"][agent_proto::VSOCK_ANNOTATION] = json!("allow");
    // runc makes the cgroup on this host: tests side by side take one each.
    if let Some(path) = spec["linux"]["cgroupsPath"].as_str() {
        spec["linux"]["cgroupsPath"] = json!(path.replace(NEUTRAL_ID, &unique));
    }
    let hostname = spec["hostname"].as_str().unwrap_or_default().to_owned();
    std::fs::create_dir_all(bundle.path().join("host")).unwrap();
    let wire = bundle.path().join("host/wire");
    write_executable(&wire, wire_script(subnet).as_bytes());
    let mut host = HostSide {
        bundle: &mut bundle,
        hostname,
        subnet,
    };
    for m in spec["mounts"].as_array_mut().into_iter().flatten() {
        if m["type"] == "bind" {
            let source = host.source_for(m["destination"].as_str().unwrap_or_default());
            m["source"] = json!(source);
        }
    }
    let namespaces = spec["linux"]["namespaces"]
        .as_array_mut()
        .expect("the fixture's namespaces");
    let netns = namespaces
        .iter_mut()
        .find(|n| n["type"] == "network")
        .expect("the fixture's network namespace");
    match network {
        Network::Path => {
            assert!(netns.get("path").is_some(), "{name} asks for a new network namespace");
            netns["path"] = json!(host.namespace());
        }
        Network::Hook => {
            let hook = &mut spec["hooks"]["prestart"][0];
            assert!(hook["path"].as_str().is_some(), "{name} has no prestart hook");
            hook["path"] = json!(wire);
        }
    }
    std::fs::write(
        bundle.path().join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();
    bundle
}

/// podman's default spec: its profile (ENOSYS by default, EPERM for the
/// calls it names), its masked and read-only paths, rlimits and pids
/// limit, its host files and shm, a network namespace by path.
#[test]
fn podmans_default_spec_in_a_vm() {
    if !can_compare() {
        return;
    }
    let subnet = Subnet::take();
    let bundle = fixture_bundle("vm-podman", "podman-4.3-default.json", Network::Path, &subnet);
    compare_in_vm(bundle, &["Max open files", "Max processes"]);
}

/// docker's default spec: its profile (EPERM by default), device rules,
/// sysctls, oom_score_adj, its host files, a new network namespace wired
/// by the `prestart` hook.
#[test]
fn dockers_default_spec_in_a_vm() {
    if !can_compare() {
        return;
    }
    let subnet = Subnet::take();
    let bundle = fixture_bundle("vm-docker", "docker-20.10-default.json", Network::Hook, &subnet);
    compare_in_vm(bundle, &[]);
}

#[tokio::test]
async fn podmans_default_spec() {
    if !can_compare() {
        return;
    }
    let subnet = Subnet::take();
    let bundle = fixture_bundle("podman", "podman-4.3-default.json", Network::Path, &subnet);
    if !host_cgroup2_offers("pids") {
        // runc would limit the pids with cgroup v1's controller, which the
        // agent on this host does not drive (see host_cgroup2_offers); the
        // limit is compared in the VM.
        bundle.edit(|spec| {
            spec["linux"]["resources"].as_object_mut().unwrap().remove("pids");
        });
    }
    compare(bundle).await;
}

#[tokio::test]
async fn dockers_default_spec() {
    if !can_compare() {
        return;
    }
    let subnet = Subnet::take();
    compare(fixture_bundle(
        "docker",
        "docker-20.10-default.json",
        Network::Hook,
        &subnet,
    ))
    .await;
}

/// Replaces every `from` in `text` by `to`, in order.
fn replace_all(mut text: String, pairs: &[(String, String)]) -> String {
    for (from, to) in pairs {
        text = text.replace(from.as_str(), to);
    }
    text
}

/// The 64-hex-digit directory name before `/merged` in the spec's root.
fn layer_of(spec: &Value) -> String {
    let root = spec["root"]["path"].as_str().expect("root.path");
    let dir = root.strip_suffix("/merged").expect("an overlay root ends in /merged");
    dir.rsplit('/').next().unwrap().to_owned()
}

/// Writes `spec` (captured from an engine whose scratch directory is
/// `scratch`) as fixture `name`, after checking that nothing of this
/// host is left in it.
fn write_fixture(name: &str, spec: &Value, scratch: &Path, id: &str) {
    let text = serde_json::to_string_pretty(spec).unwrap() + "\n";
    for left in [scratch.to_string_lossy().as_ref(), id, &id[..12], "vminitd-"] {
        assert!(!text.contains(left), "{name} still holds {left:?}");
    }
    let path = fixtures().join(name);
    std::fs::write(&path, text).unwrap();
    eprintln!("wrote {}", path.display());
}

/// Captures the fixtures again from this host's podman and docker, with
/// runc as their runtime (see tests/fixtures/README.md): run by hand, as a
/// new engine's version is a new fixture.
#[test]
#[ignore = "writes tests/fixtures/ from this host's podman and docker: run it by hand"]
fn capture_the_engines_default_specs() {
    use vminitd_tests::engines::{Docker, Engine, Podman, Runtime, IMAGE};

    let podman = Podman::start(Runtime::Runc);
    podman.ok(&["create", "--name", "probe", IMAGE, "sleep", "3600"]);
    podman.ok(&["init", "probe"]);
    let id = podman.inspect("probe", "{{.Id}}");
    let config = podman.inspect("probe", "{{.OCIConfigPath}}");
    let version = podman.ok(&["version", "--format", "{{.Client.Version}}"]);
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    spec["annotations"]["io.kubernetes.cri-o.Created"] = json!(NEUTRAL_CREATED);
    for ns in spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = json!(NEUTRAL_NETNS);
        }
    }
    let scratch = podman.path().to_path_buf();
    let text = replace_all(
        spec.to_string(),
        &[
            (
                format!("{}/storage", scratch.display()),
                "/var/lib/containers/storage".into(),
            ),
            (format!("{}/run", scratch.display()), "/run/containers/storage".into()),
            (layer_of(&spec), NEUTRAL_LAYER.into()),
            (id.clone(), NEUTRAL_ID.into()),
            (id[..12].to_owned(), NEUTRAL_ID[..12].into()),
        ],
    );
    let minor = version.trim().rsplit_once('.').unwrap().0.to_owned();
    write_fixture(
        &format!("podman-{minor}-default.json"),
        &serde_json::from_str(&text).unwrap(),
        &scratch,
        &id,
    );
    podman.ok(&["rm", "--force", "probe"]);
    podman.finish();

    let docker = Docker::start(Runtime::Runc);
    docker.ok(&["create", "--name", "probe", IMAGE, "sleep", "3600"]);
    docker.ok(&["start", "probe"]);
    let id = docker.inspect("probe", "{{.Id}}");
    let scratch = docker.path().to_path_buf();
    let config = scratch
        .join("exec/containerd/daemon/io.containerd.runtime.v2.task/moby")
        .join(&id)
        .join("config.json");
    let version = docker.ok(&["version", "--format", "{{.Server.Version}}"]);
    let spec: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let hook = &spec["hooks"]["prestart"][0];
    let dockerd = hook["path"].as_str().expect("libnetwork's hook").to_owned();
    let sandbox = hook["args"][3].as_str().expect("the hook's sandbox id").to_owned();
    let text = replace_all(
        spec.to_string(),
        &[
            (format!("{}/data", scratch.display()), "/var/lib/docker".into()),
            (format!("{}/exec", scratch.display()), "/run/docker".into()),
            (dockerd, format!("/proc/{NEUTRAL_DOCKERD_PID}/exe")),
            (format!("\"{sandbox}\""), format!("\"{NEUTRAL_SANDBOX}\"")),
            (layer_of(&spec), NEUTRAL_LAYER.into()),
            (id.clone(), NEUTRAL_ID.into()),
            (id[..12].to_owned(), NEUTRAL_ID[..12].into()),
        ],
    );
    let version = version.trim();
    let minor = version
        .split('+')
        .next()
        .unwrap()
        .rsplit_once('.')
        .unwrap()
        .0
        .to_owned();
    write_fixture(
        &format!("docker-{minor}-default.json"),
        &serde_json::from_str(&text).unwrap(),
        &scratch,
        &id,
    );
    docker.ok(&["rm", "--force", "probe"]);
    docker.finish();
}
