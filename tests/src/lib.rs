//! Test harness: the agent as PID 1 of a fresh PID + mount namespace on the
//! host, reached over a Unix socket, exactly as a VM's agent is reached over
//! vsock.

pub mod containerd;
pub mod cri;
pub mod engines;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_proto::{AgentKey, Endpoint, ExitStatus, ProcessSpec};
use host_shim::exec::{exec, ExecIo};
use host_shim::{AgentAddr, Client, ClientError};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A binary of the workspace: `$ENV_VAR` if set, else the newest of the
/// release musl build and the debug build.
pub fn binary(name: &str, env_var: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_var) {
        return PathBuf::from(path);
    }
    let target = target_dir();
    let candidates = [
        target.join("x86_64-unknown-linux-musl/release").join(name),
        target.join("release").join(name),
        target.join("debug").join(name),
    ];
    candidates
        .iter()
        .filter_map(|p| Some((std::fs::metadata(p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| {
            panic!("{name} is not built: run `make test`, or `cargo build -p {name}` first, or set {env_var}")
        })
}

/// The vminitd binary under test.
pub fn vminitd_bin() -> PathBuf {
    binary("vminitd", "VMINITD_BIN")
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, or the workspace's.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The static vsock probe (`tests/probe`), built for the guest by `make
/// build`.
pub fn probe_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("VSOCK_PROBE_BIN") {
        return path.into();
    }
    let path = target_dir().join("x86_64-unknown-linux-musl/release/vsock-probe");
    assert!(
        path.is_file(),
        "{} is missing: `make build` builds it (cargo build --release --target x86_64-unknown-linux-musl -p vsock-probe)",
        path.display()
    );
    path
}

/// The vmshim binary under test.
pub fn vmshim_bin() -> PathBuf {
    binary("vmshim", "VMSHIM_BIN")
}

/// Runs `vmshim ARGS` with `stdin` as its input (written from a thread of
/// its own, so that a large input cannot deadlock against the output) and
/// captures its output.
pub fn vmshim_with_input(args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(vmshim_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vmshim");
    let mut input = child.stdin.take().expect("piped stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for vmshim");
    let _ = writer.join();
    out
}

/// A fresh scratch directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system's temporary directory, named
    /// after `tag`, this process and a counter.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vminitd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        TempDir(dir)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// vminitd running as PID 1 of its own PID and mount namespaces.
pub struct NamespacedAgent {
    /// The `unshare` process; vminitd is its only child.
    pub unshare: Child,
    /// Its socket: `unix:DIR/agent.sock`.
    pub endpoint: Endpoint,
    /// The agent key it was handed (`--notify`), if any.
    pub key: Option<AgentKey>,
    /// The scratch directory that holds its socket, removed with it.
    pub dir: TempDir,
}

impl NamespacedAgent {
    /// Starts the agent and waits until it answers `hello`.
    pub async fn start() -> NamespacedAgent {
        Self::start_with(&[]).await
    }

    /// Starts the agent with extra vminitd flags.
    pub async fn start_with(extra: &[&str]) -> NamespacedAgent {
        Self::start_keyed(extra, None).await
    }

    /// Starts the agent with extra flags that make it receive `key` (the
    /// caller hands it over on its `--notify` socket meanwhile).
    pub async fn start_with_key(extra: &[&str], key: AgentKey) -> NamespacedAgent {
        Self::start_keyed(extra, Some(key)).await
    }

    async fn start_keyed(extra: &[&str], key: Option<AgentKey>) -> NamespacedAgent {
        let dir = TempDir::new("agent");
        let sock = dir.path().join("agent.sock");
        let endpoint = Endpoint::Unix(sock.clone());
        let mut cmd = Command::new("unshare");
        // Without root, a user namespace maps us to root inside.
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            cmd.args(["--user", "--map-root-user"]);
        }
        cmd.args(["--pid", "--mount", "--fork", "--kill-child"])
            .arg(vminitd_bin())
            .arg("--listen")
            .arg(endpoint.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        let unshare = cmd.spawn().expect("spawn unshare (util-linux)");
        let agent = NamespacedAgent {
            unshare,
            endpoint,
            key,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        if let Err(e) = Client::connect_with_deadline(agent.addr(), deadline).await {
            panic!("the agent never answered on {}: {e}", agent.endpoint);
        }
        agent
    }

    /// Where the agent listens, with its key.
    pub fn addr(&self) -> AgentAddr {
        AgentAddr::new(self.endpoint.clone(), self.key.clone())
    }

    /// A new control session.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr()).await.expect("connect to the agent")
    }

    /// The host pid of vminitd (the child of `unshare`).
    pub fn agent_host_pid(&self) -> i32 {
        let path = format!("/proc/{0}/task/{0}/children", self.unshare.id());
        let children = std::fs::read_to_string(&path).unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .expect("vminitd is unshare's child")
    }

    /// Waits up to `timeout` for the namespace to end; returns unshare's status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.unshare.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for NamespacedAgent {
    fn drop(&mut self) {
        // --kill-child: vminitd, and with it the whole PID namespace, dies
        // with unshare.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// What a process printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

impl Output {
    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A shared in-memory sink for captured output.
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    /// What was written so far, leaving it empty.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Runs `spec` with `stdin` as input and captures stdout and stderr.
pub async fn run(client: &Client, spec: ProcessSpec, stdin: Option<Vec<u8>>) -> Result<Output, ClientError> {
    let (out, err) = (Capture::default(), Capture::default());
    let io = ExecIo {
        stdin: stdin.map(|data| Box::new(std::io::Cursor::new(data)) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        stdout: Some(Box::new(out.clone())),
        stderr: Some(Box::new(err.clone())),
    };
    let status = exec(client, spec, io).await?;
    Ok(Output {
        stdout: out.take(),
        stderr: err.take(),
        status,
    })
}

/// A process spec for `sh -c SCRIPT`.
pub fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        args: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

/// One OCI mount of `kind` (its source named after it), with `options`.
pub fn mount(destination: &str, kind: &str, options: &[&str]) -> agent_proto::Mount {
    agent_proto::Mount {
        destination: destination.into(),
        kind: Some(kind.into()),
        source: Some(kind.into()),
        options: options.iter().map(|o| (*o).into()).collect(),
    }
}

/// The mounts of a `runc spec` container that the tests' specs share:
/// `/proc`, a tmpfs `/dev`, its `devpts`, and a read-only `/sys`.
pub fn runc_mounts() -> Vec<agent_proto::Mount> {
    vec![
        mount("/proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount(
            "/dev/pts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"],
        ),
        mount("/sys", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
    ]
}

/// A bundle in `dir/NAME`: a busybox root and `runc spec`'s config.json
/// with no terminal, its process `args` with `env`.
pub fn runc_bundle(dir: &Path, name: &str, args: &[&str], env: &[&str]) -> PathBuf {
    let bundle = dir.join(name);
    host_shim::rootfs::busybox_tree(Path::new("/bin/busybox"), &bundle.join("rootfs")).expect("busybox tree");
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .output()
        .expect("run runc spec (scripts/setup.sh installs runc)");
    assert!(
        out.status.success(),
        "runc spec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["env"] = serde_json::json!(env);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    bundle
}

/// Waits up to `timeout` for `done`, checking every 50 ms; whether it came.
pub fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
