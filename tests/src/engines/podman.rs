//! A podman of the test's own: its storage, run directory, temporary
//! directory, volumes and network configuration under a scratch directory,
//! set through `CONTAINERS_CONF` and `CONTAINERS_STORAGE_CONF` so that
//! `podman` and `podman-compose` both use them; the test's image loaded.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::host::{sweep, Leftovers, Subnet};
use super::{describe, runtime_entry, text, write_image_archive, Runtime, IMAGE, RUNTIME_ENTRY};
use crate::TempDir;

/// The ulimits every container gets. podman's own defaults (nofile
/// 1048576, nproc unlimited) are above what this host lets a process
/// without CAP_SYS_RESOURCE set (RLIMIT_NOFILE 20000, RLIMIT_NPROC 96367),
/// and runc and crun fail at `setrlimit` ("error setting rlimit type 7:
/// operation not permitted"); these fit under any such cap, and both
/// runtimes get the same (vminitd applies them in the guest, where no cap
/// of the host applies).
pub const ULIMITS: [&str; 2] = ["nofile=1024:1024", "nproc=4096:4096"];

/// A podman with its own state; everything it made is removed when it is
/// dropped (call [`Podman::finish`] to also check that nothing is left).
pub struct Podman {
    dir: TempDir,
    runtime: Runtime,
    subnets: Vec<Subnet>,
    /// The network namespaces the test's containers were given, checked
    /// gone by `finish`.
    netns: std::cell::RefCell<Vec<PathBuf>>,
    /// Whether `finish` has reset it.
    finished: std::cell::Cell<bool>,
}

impl Podman {
    /// A podman whose containers run under `runtime`, with the test's image
    /// loaded and a default network (`vmtest`) on a subnet and bridge of
    /// its own.
    pub fn start(runtime: Runtime) -> Podman {
        let dir = TempDir::new("podman");
        let mut podman = Podman {
            dir,
            runtime,
            subnets: Vec::new(),
            netns: Default::default(),
            finished: Default::default(),
        };
        podman.configure();
        let archive = podman.path().join("image.tar");
        write_image_archive(&archive);
        podman.ok(&["load", "-i", archive.to_str().unwrap()]);
        podman
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The runtime its containers run under.
    pub fn runtime(&self) -> Runtime {
        self.runtime
    }

    /// The name podman knows the runtime by.
    pub fn runtime_name(&self) -> &'static str {
        match self.runtime {
            Runtime::Runc => "runc",
            Runtime::Vminitd => RUNTIME_ENTRY,
        }
    }

    /// The image the tests run.
    pub fn image(&self) -> &'static str {
        IMAGE
    }

    fn configure(&mut self) {
        let dir = self.path().to_path_buf();
        let entry = runtime_entry(&dir);
        let ulimits: Vec<String> = ULIMITS.iter().map(|u| format!("{u:?}")).collect();
        std::fs::create_dir_all(dir.join("networks")).unwrap();
        // As podman's own default network: no DNS. Named after its subnet,
        // as every network here: netavark names its port-forwarding chain
        // after the network's name, and two podmans side by side (a test's
        // runc and vminitd runs) must not share one.
        let (default_network, _) = self.network("vmtest", false);
        let conf = format!(
            r#"[containers]
# podman's default ulimits exceed this host's caps: see ULIMITS.
default_ulimits = [{ulimits}]

[network]
network_config_dir = "{dir}/networks"
default_network = "{default_network}"

[engine]
runtime = "{runtime}"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{dir}/events.log"
tmp_dir = "{dir}/tmp"
volume_path = "{dir}/volumes"

# What the README's containers.conf registers, with this tree's vmshim.
[engine.runtimes]
{entry_name} = ["{entry}"]
"#,
            ulimits = ulimits.join(", "),
            dir = dir.display(),
            runtime = self.runtime_name(),
            entry_name = RUNTIME_ENTRY,
            entry = entry.display(),
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        let storage = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{dir}/storage\"\nrunroot = \"{dir}/run\"\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("storage.conf"), storage).unwrap();
    }

    /// A bridge network on a subnet and bridge of its own (its containers'
    /// names resolving in it when `dns`), written as `podman network create
    /// --subnet` writes it, with the bridge named: podman 4.3 has no flag
    /// that names the bridge (it takes the next free `podmanN`), and two
    /// podmans side by side would both take `podman1`. The network is
    /// named `BASE-N` after its subnet: aardvark-dns keeps one record file
    /// per network name, and netavark one port-forwarding chain, for every
    /// podman of the host. Returns its name and its subnet's address prefix
    /// (`10.123.N.`).
    pub fn network(&mut self, base: &str, dns: bool) -> (String, String) {
        let subnet = Subnet::take();
        let name = format!("{base}-{}", subnet.n());
        self.network_file(&name, subnet, dns)
    }

    /// A compose project's name, `composeN`, and its default network
    /// (`composeN_default`, with DNS), which podman-compose finds there and
    /// uses instead of making one with `podman network create` (see
    /// [`Podman::network`]); returns the project's name and the network's
    /// address prefix.
    pub fn compose_project(&mut self) -> (String, String) {
        let subnet = Subnet::take();
        let project = format!("compose{}", subnet.n());
        let (_, prefix) = self.network_file(&format!("{project}_default"), subnet, true);
        (project, prefix)
    }

    fn network_file(&mut self, name: &str, subnet: Subnet, dns: bool) -> (String, String) {
        let network = serde_json::json!({
            "name": name,
            // podman's ids are 64 random hex digits; any unique ones do.
            "id": super::image::sha256_hex(format!("{name} {} {}", subnet.cidr(), self.path().display()).as_bytes()),
            "driver": "bridge",
            "network_interface": subnet.bridge(),
            "created": "2026-01-01T00:00:00Z",
            "subnets": [{"subnet": subnet.cidr(), "gateway": subnet.gateway()}],
            "ipv6_enabled": false,
            "internal": false,
            "dns_enabled": dns,
            "ipam_options": {"driver": "host-local"},
        });
        let file = self.path().join("networks").join(format!("{name}.json"));
        std::fs::write(file, serde_json::to_vec_pretty(&network).unwrap()).unwrap();
        let prefix = subnet.prefix();
        self.subnets.push(subnet);
        (name.to_owned(), prefix)
    }

    /// `podman` with this podman's configuration in its environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        self.environment(&mut cmd);
        cmd
    }

    /// `podman-compose` with this podman's configuration.
    pub fn compose(&self) -> Command {
        let mut cmd = Command::new("podman-compose");
        self.environment(&mut cmd);
        cmd
    }

    fn environment(&self, cmd: &mut Command) {
        cmd.env("CONTAINERS_CONF", self.path().join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path().join("storage.conf"))
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION");
    }

    /// `podman ARGS`, stdin from /dev/null, output captured.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    /// `podman ARGS`, which must succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "podman {}: {}", args.join(" "), describe(&out));
        text(&out.stdout)
    }

    /// `podman inspect --format FORMAT NAME`, trimmed.
    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "--format", format, name]).trim().to_owned()
    }

    /// Records container NAME's network namespace, which `finish` checks
    /// is gone.
    pub fn track_netns(&self, name: &str) {
        let key = self.inspect(name, "{{.NetworkSettings.SandboxKey}}");
        if !key.is_empty() {
            self.netns.borrow_mut().push(PathBuf::from(key));
        }
    }

    /// Removes every container, pod, volume, network and image of this
    /// podman (`podman system reset`), then checks that nothing of it is
    /// left on the host: no process naming its directory (conmon, the
    /// runtime, a VM, aardvark-dns), no mount below it, no network
    /// namespace of a tracked container, none of its bridges, no iptables
    /// rule for its subnets.
    pub fn finish(self) {
        self.reset();
        self.finished.set(true);
        let mut left = Leftovers::default();
        let settled = crate::eventually(std::time::Duration::from_secs(10), || {
            left = self.leftovers();
            left.0.is_empty()
        });
        assert!(settled, "podman left behind:\n  {}", left.0.join("\n  "));
    }

    fn reset(&self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.run(&["pod", "rm", "--all", "--force"]);
        let out = self.run(&["system", "reset", "--force"]);
        if !out.status.success() {
            eprintln!("podman system reset: {}", describe(&out));
        }
    }

    fn leftovers(&self) -> Leftovers {
        let mut left = Leftovers::default();
        left.processes_naming(self.path());
        left.mounts_below(self.path());
        left.paths(&self.netns.borrow());
        for subnet in &self.subnets {
            left.link(&subnet.bridge());
            left.iptables_rules(&subnet.prefix());
        }
        left
    }
}

impl super::Engine for Podman {
    fn start(runtime: Runtime) -> Podman {
        Podman::start(runtime)
    }
    fn command(&self) -> Command {
        Podman::command(self)
    }
    fn runtime_name(&self) -> &'static str {
        Podman::runtime_name(self)
    }
    fn run_naming_the_runtime(&self, args: &[&str]) -> Output {
        let mut all = vec!["--runtime", self.runtime_name(), "run"];
        all.extend_from_slice(args);
        self.run(&all)
    }
    fn runtime(&self) -> Runtime {
        self.runtime
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn network(&mut self, base: &str) -> (String, String) {
        Podman::network(self, base, true)
    }
    fn track_netns(&self, name: &str) {
        Podman::track_netns(self, name)
    }
    fn finish(self) {
        Podman::finish(self)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if !self.finished.get() {
            self.reset();
        }
        sweep(self.path());
        for subnet in &self.subnets {
            let _ = Command::new("ip")
                .args(["link", "del", &subnet.bridge()])
                .stderr(Stdio::null())
                .status();
        }
    }
}
