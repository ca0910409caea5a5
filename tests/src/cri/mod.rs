//! Kubernetes' door to vminitd: containerd's CRI service, driven as the
//! kubelet drives it. A containerd of the test's own with the CRI plugin on
//! (root, state, sockets, CNI configuration and IP leases in a scratch
//! directory; the pods' network namespaces mounted under its state), whose
//! runtime handlers are `runc` (containerd's runc shim) and `vminitd`
//! (`containerd-shim-vminitd-v2`, found on containerd's `PATH`); its pods
//! wired by the CNI bridge plugin to a bridge and a /24 of the test's own
//! (no masquerade, no traffic leaves the machine); the tests' busybox and
//! pause images imported from an OCI archive with `ctr -n k8s.io image
//! import`. [`Cri`] is the client, [`pod`] what the kubelet sends.

mod client;
pub mod pod;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use client::{Cri, CriError, CALL_TIMEOUT};
pub use pod::{container_config, read_log, sandbox_config};

use crate::containerd::Daemon;
use crate::engines::{describe, processes, sweep, text, write_oci_archive, Leftovers, Subnet, IMAGE, PAUSE_IMAGE};
use crate::{eventually, TempDir};

/// The runtime handler of containerd's runc shim.
pub const RUNC: &str = "runc";
/// The runtime handler of `containerd-shim-vminitd-v2`.
pub const VMINITD: &str = "vminitd";
/// The runtime type that handler names.
pub const VMINITD_RUNTIME_TYPE: &str = "io.containerd.vminitd.v2";
/// The containerd namespace of CRI's pods, containers and images.
pub const NAMESPACE: &str = "k8s.io";
/// Where Debian's containernetworking-plugins are.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// A containerd of the test's own with its CRI service on; stopped, and
/// everything it made removed, when dropped.
pub struct CriContainerd {
    dir: TempDir,
    subnet: Subnet,
    daemon: Daemon,
}

impl CriContainerd {
    /// Starts one (scratch directory named after `tag`), waits until its
    /// CRI service says the runtime and the network are ready, and imports
    /// the tests' images.
    pub fn start(tag: &str) -> CriContainerd {
        let dir = TempDir::new(tag);
        let subnet = Subnet::take();
        let path = dir.path();
        let cni = path.join("cni");
        std::fs::create_dir_all(&cni).unwrap();
        std::fs::write(cni.join("10-vminitd-test.conflist"), cni_conflist(path, &subnet)).unwrap();
        std::fs::write(path.join("config.toml"), config(path)).unwrap();
        let daemon = Daemon::start(&path.join("config.toml"), &path.join("containerd.log"));
        let mut containerd = CriContainerd { dir, subnet, daemon };
        containerd.wait_ready();
        let archive = containerd.path().join("images.tar");
        write_oci_archive(&archive);
        let out = containerd.ctr(&["image", "import", archive.to_str().unwrap()]);
        assert!(out.status.success(), "ctr image import: {}", describe(&out));
        let cri = containerd.client();
        let imported = eventually(Duration::from_secs(20), || {
            [IMAGE, PAUSE_IMAGE].iter().all(|i| cri.has_image(i).unwrap_or(false))
        });
        assert!(
            imported,
            "the CRI service lacks {IMAGE} or {PAUSE_IMAGE} after ctr image import"
        );
        containerd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        loop {
            let exited = self.daemon.exited();
            if exited.is_some() || Instant::now() >= deadline {
                panic!(
                    "containerd's CRI service is not ready ({exited:?}; {last}); its log:\n{}",
                    self.tail_of_log()
                );
            }
            if self.socket().exists() {
                match Cri::connect(&self.socket()).and_then(|cri| cri.ready()) {
                    Ok(true) => return,
                    Ok(false) => last = "Status: not ready".into(),
                    Err(e) => last = e.to_string(),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Its socket (gRPC: containerd's API and the CRI service).
    pub fn socket(&self) -> PathBuf {
        self.path().join("c.sock")
    }

    /// The subnet and bridge its pods are wired to.
    pub fn subnet(&self) -> &Subnet {
        &self.subnet
    }

    /// A CRI client on its socket.
    pub fn client(&self) -> Cri {
        Cri::connect(&self.socket()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// containerd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// Its log, whole.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// The last 40 lines of its log, for a failed assertion's message.
    pub fn tail_of_log(&self) -> String {
        self.daemon.tail_of_log(40)
    }

    /// `ctr ARGS` against it, in CRI's namespace, killed after 60 s.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["-s", "KILL", "60", "ctr", "--address"])
            .arg(self.socket())
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// The shims it started (their command line names its socket), runc's
    /// or vminitd's.
    pub fn shims(&self) -> Vec<u32> {
        let address = self.socket().display().to_string();
        processes()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.starts_with("containerd-shim") || cmdline.contains("/containerd-shim"))
            .filter(|(_, cmdline)| cmdline.contains(&address))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// The QEMU processes its shims started: QEMU among their descendants,
    /// or naming its scratch directory.
    pub fn qemus(&self) -> Vec<u32> {
        let below = descendants(&self.shims());
        let needle = self.path().display().to_string();
        processes()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains("qemu-system"))
            .filter(|(pid, cmdline)| below.contains(pid) || cmdline.contains(&needle))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// What of a removed pod is still on the host: processes naming the
    /// scratch directory (containerd's own aside), shims, QEMU, mounts
    /// below it, its network namespace `netns` (mounted or not), ports on
    /// its bridge, and the taps `taps` the pod's namespace held.
    pub fn left_of_pod(&self, netns: &Path, taps: &[String]) -> Vec<String> {
        let mut left = Leftovers::default();
        left.processes_naming(self.path());
        let daemon = self.pid().map(|pid| format!("process {pid}:"));
        left.0
            .retain(|line| !daemon.as_ref().is_some_and(|d| line.starts_with(d.as_str())));
        for shim in self.shims() {
            left.0.push(format!("shim {shim}"));
        }
        for qemu in self.qemus() {
            left.0.push(format!("QEMU {qemu}"));
        }
        left.mounts_below(self.path());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&*netns.to_string_lossy()))
        {
            left.0.push(format!("netns mount {}", netns.display()));
        }
        left.paths(&[netns.to_path_buf()]);
        let ports = Path::new("/sys/class/net").join(self.subnet.bridge()).join("brif");
        for port in std::fs::read_dir(ports).into_iter().flatten().flatten() {
            left.0
                .push(format!("port {:?} on {}", port.file_name(), self.subnet.bridge()));
        }
        for tap in taps {
            left.link(tap);
        }
        left.0
    }

    /// Stops containerd, then checks that nothing naming its directory is
    /// left (no shim, instance daemon or QEMU, no mount) and removes its
    /// bridge.
    pub fn finish(mut self) {
        self.daemon.stop();
        let mut left = Leftovers::default();
        let settled = eventually(Duration::from_secs(10), || {
            left = Leftovers::default();
            left.processes_naming(self.path());
            left.mounts_below(self.path());
            left.0.is_empty()
        });
        assert!(settled, "containerd left behind:\n  {}", left.0.join("\n  "));
        self.remove_bridge();
        let mut left = Leftovers::default();
        left.link(&self.subnet.bridge());
        assert!(left.0.is_empty(), "{:?}", left.0);
    }

    fn remove_bridge(&self) {
        if Path::new("/sys/class/net").join(self.subnet.bridge()).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.subnet.bridge()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for CriContainerd {
    fn drop(&mut self) {
        if !self.daemon.is_stopped() {
            // A failed test: its pods' tasks, shims and VMs go too.
            for task in text(&self.ctr(&["task", "ls", "-q"]).stdout).split_whitespace() {
                let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", task]);
                let _ = self.ctr(&["task", "delete", "-f", task]);
            }
            self.daemon.stop();
        }
        sweep(self.path());
        self.remove_bridge();
    }
}

/// containerd's configuration (version 2): everything it keeps in `dir`,
/// the CRI plugin with the pause image, the CNI configuration directory,
/// the `runc` handler and the `vminitd` one as `deploy/kubernetes/`
/// registers it. The sandbox's `oom_score_adj` is kept no lower
/// than containerd's own (this host withholds CAP_SYS_RESOURCE from runc).
fn config(dir: &Path) -> String {
    let d = dir.display();
    let snippet = deploy_snippet();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{d}/c.sock"

[ttrpc]
  address = "{d}/c.sock.ttrpc"

[debug]
  address = "{d}/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "{RUNC}"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{RUNC}]
      runtime_type = "io.containerd.runc.v2"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/cni"
    max_conf_num = 1

{snippet}"#
    )
}

/// The containerd configuration that registers the `vminitd` handler, as
/// `deploy/kubernetes/` gives it to a cluster's nodes.
pub fn deploy_snippet() -> String {
    let path = crate::workspace_root().join("deploy/kubernetes/containerd-vminitd.toml");
    let snippet = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        snippet.contains(&format!("runtimes.{VMINITD}]")) && snippet.contains(VMINITD_RUNTIME_TYPE),
        "{} does not register the handler {VMINITD} as {VMINITD_RUNTIME_TYPE}",
        path.display()
    );
    snippet
}

/// The pods' network: the bridge plugin on the subnet's own bridge, its
/// gateway the bridge's address, no masquerade; host-local addresses, the
/// leases kept in `dir`; the loopback plugin.
fn cni_conflist(dir: &Path, subnet: &Subnet) -> String {
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("vminitd-cri-{}", subnet.n()),
        "plugins": [
            {
                "type": "bridge",
                "bridge": subnet.bridge(),
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet.cidr(), "gateway": subnet.gateway()}]],
                    "dataDir": dir.join("cni-ipam").display().to_string(),
                },
            },
            {"type": "loopback"},
        ],
    });
    serde_json::to_string_pretty(&conflist).unwrap()
}

/// `roots` and every process below them.
pub fn descendants(roots: &[u32]) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // After the command's closing parenthesis: state, then ppid.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found: Vec<u32> = roots.to_vec();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (pid, ppid) in &parents {
            if *ppid == parent && !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    found
}

/// A process's resident memory (`VmRSS` of `/proc/PID/status`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The network namespace path of the pod whose verbose
/// `PodSandboxStatus` info is `info` (containerd's `runtimeSpec`).
pub fn netns_of(info: &std::collections::HashMap<String, String>) -> Option<PathBuf> {
    let info: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|ns| ns["type"] == "network")
        .and_then(|ns| ns["path"].as_str())
        .map(PathBuf::from)
}

/// The links in the network namespace at `netns`, by name (`nsenter
/// --net=NETNS ip -o link`).
pub fn links_in(netns: &Path) -> Result<Vec<String>, String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["ip", "-o", "link", "show"])
        .output()
        .map_err(|e| format!("nsenter: {e}"))?;
    if !out.status.success() {
        return Err(describe(&out));
    }
    Ok(text(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect())
}
