//! A dockerd of the test's own, started by hand: its data root, exec root
//! (and the containerd it starts there), Unix socket and daemon.json in a
//! scratch directory; a bridge and an address pool of its own; no iptables
//! rules (ports are published by docker's userland proxy, on loopback);
//! `vminitd-runtime` registered as `vminitd` the way the README's
//! daemon.json registers it; the test's image loaded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::host::{sweep, Leftovers, Subnet};
use super::{describe, runtime_entry, text, write_image_archive, Runtime, IMAGE};
use crate::TempDir;

/// The name the daemon knows vminitd's runtime by.
pub const RUNTIME_NAME: &str = "vminitd";

/// A dockerd with its own state; stopped and everything it made removed
/// when dropped (call [`Docker::finish`] to also check that nothing is
/// left).
pub struct Docker {
    dir: TempDir,
    runtime: Runtime,
    daemon: Option<Child>,
    bridge: Subnet,
    pool: Subnet,
    finished: bool,
}

impl Docker {
    /// A dockerd whose default runtime is `runtime` (each test also names
    /// it with `--runtime`), with the test's image loaded.
    pub fn start(runtime: Runtime) -> Docker {
        let dir = TempDir::new("docker");
        let entry = runtime_entry(dir.path());
        let daemon_json = serde_json::json!({
            "runtimes": {RUNTIME_NAME: {"path": entry}},
            "default-runtime": match runtime {
                Runtime::Runc => "runc",
                Runtime::Vminitd => RUNTIME_NAME,
            },
        });
        std::fs::write(
            dir.path().join("daemon.json"),
            serde_json::to_vec_pretty(&daemon_json).unwrap(),
        )
        .unwrap();
        let bridge = Subnet::take();
        let pool = Subnet::take();
        let mut docker = Docker {
            dir,
            runtime,
            daemon: None,
            bridge,
            pool,
            finished: false,
        };
        docker.make_bridge();
        docker.start_daemon();
        let archive = docker.path().join("image.tar");
        write_image_archive(&archive);
        docker.ok(&["load", "-i", archive.to_str().unwrap()]);
        docker
    }

    /// The default bridge: made by the test (dockerd's own would be
    /// `docker0` for every daemon), with the gateway's address.
    fn make_bridge(&self) {
        let name = self.bridge.bridge();
        let gateway = format!("{}/24", self.bridge.gateway());
        for args in [
            vec!["link", "add", name.as_str(), "type", "bridge"],
            vec!["addr", "add", gateway.as_str(), "dev", name.as_str()],
            vec!["link", "set", name.as_str(), "up"],
        ] {
            let out = Command::new("ip").args(&args).output().expect("run ip");
            assert!(out.status.success(), "ip {}: {}", args.join(" "), describe(&out));
        }
    }

    fn start_daemon(&mut self) {
        let dir = self.path().to_path_buf();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let pool = format!("base={},size=26", self.pool.cidr());
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(["--bridge", &self.bridge.bridge()])
            // Every daemon would share (and each one at its start flush)
            // the DOCKER chains: none are made, and published ports go
            // through docker's userland proxy.
            .args(["--iptables=false", "--ip-masq=false", "--ip-forward=false"])
            .args(["--default-address-pool", &pool])
            .args(["--storage-driver", "overlay2", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.daemon = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self
                .run(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
            {
                return;
            }
            let exited = self.daemon.as_mut().and_then(|d| d.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                panic!("dockerd did not start ({exited:?}); its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The scratch directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.path().join("docker.sock")
    }

    /// The daemon's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("dockerd.log")).unwrap_or_default()
    }

    /// The runtime's name for `--runtime`: `runc` or `vminitd`.
    pub fn runtime_name(&self) -> &'static str {
        match self.runtime {
            Runtime::Runc => "runc",
            Runtime::Vminitd => RUNTIME_NAME,
        }
    }

    /// The image the tests run.
    pub fn image(&self) -> &'static str {
        IMAGE
    }

    /// The default bridge's address prefix (`10.123.N.`).
    pub fn bridge_prefix(&self) -> String {
        self.bridge.prefix()
    }

    /// Debian's `docker` (the daemon's own version; another may come first
    /// on `PATH`), talking to this daemon.
    pub fn command(&self) -> Command {
        let program = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        let mut cmd = Command::new(program);
        self.environment(&mut cmd);
        cmd
    }

    /// `docker-compose` talking to this daemon.
    pub fn compose(&self) -> Command {
        let mut cmd = Command::new("docker-compose");
        self.environment(&mut cmd);
        cmd
    }

    fn environment(&self, cmd: &mut Command) {
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket().display()))
            .env("DOCKER_CONFIG", self.path().join("cli"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY");
    }

    /// `docker ARGS`, stdin from /dev/null, output captured.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    /// `docker ARGS`, which must succeed: its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "docker {}: {}", args.join(" "), describe(&out));
        text(&out.stdout)
    }

    /// Removes every container, network and volume, stops the daemon (and
    /// its containerd), removes the bridge, then checks that nothing is
    /// left: no process naming the scratch directory (containerd, a shim,
    /// the runtime, a VM, the userland proxy), no mount below it, no
    /// device or address on its subnets.
    pub fn finish(mut self) {
        self.stop();
        let mut left = Leftovers::default();
        let settled = crate::eventually(Duration::from_secs(10), || {
            left = self.leftovers();
            left.0.is_empty()
        });
        assert!(settled, "docker left behind:\n  {}", left.0.join("\n  "));
    }

    fn stop(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let ids = self.run(&["ps", "-aq"]);
        let ids: Vec<String> = text(&ids.stdout).split_whitespace().map(str::to_owned).collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids.iter().map(String::as_str));
            let _ = self.run(&args);
        }
        let _ = self.run(&["network", "prune", "-f"]);
        let _ = self.run(&["volume", "prune", "-f"]);
        if let Some(mut daemon) = self.daemon.take() {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while daemon.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    let _ = daemon.kill();
                    let _ = daemon.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge.bridge()])
            .stderr(Stdio::null())
            .status();
    }

    fn leftovers(&self) -> Leftovers {
        let mut left = Leftovers::default();
        left.processes_naming(self.path());
        left.mounts_below(self.path());
        left.link(&self.bridge.bridge());
        left.addresses(&self.bridge.prefix());
        left.addresses(&self.pool.prefix());
        left
    }
}

impl super::Engine for Docker {
    fn start(runtime: Runtime) -> Docker {
        Docker::start(runtime)
    }
    fn command(&self) -> Command {
        Docker::command(self)
    }
    fn runtime_name(&self) -> &'static str {
        Docker::runtime_name(self)
    }
    fn run_naming_the_runtime(&self, args: &[&str]) -> Output {
        let mut all = vec!["run", "--runtime", self.runtime_name()];
        all.extend_from_slice(args);
        self.run(&all)
    }
    fn runtime(&self) -> Runtime {
        self.runtime
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    /// `docker network create BASE`: a subnet of the daemon's own pool.
    fn network(&mut self, base: &str) -> (String, String) {
        Docker::ok(self, &["network", "create", base]);
        (base.to_owned(), self.pool.prefix())
    }
    fn finish(self) {
        Docker::finish(self)
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.stop();
        sweep(self.path());
    }
}
