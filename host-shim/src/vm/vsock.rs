//! The guest's vsock device and how the host reaches it.
//!
//! Where `/dev/vhost-vsock` works, QEMU's `vhost-vsock-device` hands the
//! device to the kernel and the host dials `vsock:CID:PORT`. Elsewhere a
//! `vhost-device-vsock` daemon (rust-vmm, vhost-user) serves the device and
//! exposes the guest as "hybrid vsock" on a Unix socket: `hvsock:PATH:PORT`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_proto::{Conn, Endpoint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;
use tokio_vsock::{VsockAddr, VsockListener};

use super::child::Supervised;
use super::VmError;

/// The guest CID used with the vhost-user backend (each VM has its own
/// daemon, so every guest can be CID 3).
const USER_BACKEND_CID: u32 = 3;

/// The host port the agent announces readiness to, with the vhost-user
/// backend (each VM has its own daemon, so one port serves).
const NOTIFY_PORT: u32 = 1025;

/// How long the daemon may take to create its socket.
const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How the VM's vsock reaches the host: the kernel's vhost-vsock where
/// `/dev/vhost-vsock` works, else a `vhost-device-vsock` daemon.
pub(crate) enum VsockBackend {
    /// The kernel's vhost-vsock, with the guest's CID.
    Kernel {
        /// The guest's context id.
        cid: u32,
    },
    /// A `vhost-device-vsock` daemon serving this VM alone.
    User {
        /// The daemon, killed with the VM.
        daemon: Supervised,
        /// Its vhost-user socket, which QEMU connects to.
        vhost_socket: PathBuf,
        /// Its hybrid vsock socket: the host's side of the guest's vsock.
        uds: PathBuf,
    },
}

/// A vsock backend started as a VM's is, outside any VM (the boot bench's
/// baseline with vmshim's devices); its daemon is killed when dropped.
pub struct Backend(VsockBackend);

impl Backend {
    /// Starts one whose runtime files live in `dir` (a private directory).
    pub async fn start(dir: &Path) -> Result<Backend, VmError> {
        Ok(Backend(VsockBackend::start(dir).await?))
    }

    /// The QEMU arguments that give a guest its device.
    pub fn qemu_args(&self) -> Vec<String> {
        self.0.qemu_args()
    }
}

impl VsockBackend {
    /// Whether the kernel's vhost-vsock can be used by this process.
    pub fn kernel_usable() -> bool {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/vhost-vsock")
            .is_ok()
    }

    /// Picks and starts a backend for a VM whose runtime files live in `dir`.
    pub async fn start(dir: &Path) -> Result<VsockBackend, VmError> {
        if std::env::var_os("VMSHIM_VSOCK").is_none_or(|v| v != "user") && Self::kernel_usable() {
            // CIDs 0-2 are reserved; collisions between VMs are unlikely in
            // 2^31 random values, and QEMU refuses a CID in use.
            let cid = 3 + (random_u32() % (1 << 31));
            return Ok(VsockBackend::Kernel { cid });
        }
        let daemon_bin = find_vhost_device_vsock()?;
        let vhost_socket = dir.join("vhost-vsock.sock");
        let uds = dir.join("vsock.sock");
        let log_path = dir.join("vhost-device-vsock.log");
        let log = crate::private::create_private_file(dir, "vhost-device-vsock.log")?;
        let mut cmd = Command::new(&daemon_bin);
        cmd.arg("--vm")
            .arg(format!(
                "guest-cid={USER_BACKEND_CID},socket={},uds-path={}",
                vhost_socket.display(),
                uds.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let mut daemon = Supervised::spawn("vhost-device-vsock", cmd).map_err(|source| VmError::Spawn {
            program: daemon_bin.clone(),
            source,
        })?;
        let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
        while !vhost_socket.exists() {
            if let Some(status) = daemon.try_status() {
                return Err(VmError::BackendFailed {
                    detail: format!(
                        "vhost-device-vsock exited ({status}): {}",
                        super::console::tail(&log_path, 5)
                    ),
                });
            }
            if Instant::now() >= deadline {
                return Err(VmError::BackendFailed {
                    detail: format!(
                        "vhost-device-vsock did not create {} within {:?}",
                        vhost_socket.display(),
                        DAEMON_READY_TIMEOUT
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(VsockBackend::User {
            daemon,
            vhost_socket,
            uds,
        })
    }

    /// The QEMU arguments that give the guest its vsock device.
    pub fn qemu_args(&self) -> Vec<String> {
        match self {
            VsockBackend::Kernel { cid } => vec!["-device".into(), format!("vhost-vsock-device,guest-cid={cid}")],
            VsockBackend::User { vhost_socket, .. } => vec![
                "-chardev".into(),
                format!("socket,id=vsock,path={}", vhost_socket.display()),
                "-device".into(),
                "vhost-user-vsock-device,chardev=vsock".into(),
            ],
        }
    }

    /// Where the host reaches guest port `port`.
    pub fn endpoint(&self, port: u32) -> Endpoint {
        match self {
            VsockBackend::Kernel { cid } => Endpoint::Vsock { cid: *cid, port },
            VsockBackend::User { uds, .. } => Endpoint::Hvsock {
                path: uds.clone(),
                port,
            },
        }
    }

    /// Listens for the agent's readiness announcement; returns the listener
    /// and the `vminitd.notify=` value that makes the guest use it.
    pub fn notify_listener(&self) -> Result<(NotifyListener, String), VmError> {
        let (listener, port) = self.guest_listener(NOTIFY_PORT)?;
        let listener = match listener {
            GuestListener::Unix { listener, path } => NotifyListener::Unix { listener, path },
            GuestListener::Vsock { listener, cid } => NotifyListener::Vsock { listener, cid },
        };
        Ok((listener, format!("vsock:2:{port}")))
    }

    /// A listener for connections the guest opens to a host port of this
    /// VM's (a service of the host's for the guest, such as the DNS
    /// relay), and the port the guest is to dial: `user_port` with the
    /// vhost-user backend (each VM has its own), a random one with the
    /// kernel's, where ports are shared by every VM of the host.
    pub fn guest_listener(&self, user_port: u32) -> Result<(GuestListener, u32), VmError> {
        match self {
            VsockBackend::Kernel { cid } => {
                let port = 1025 + random_u32() % (1 << 30);
                let listener =
                    VsockListener::bind(VsockAddr::new(agent_proto::endpoint::CID_ANY, port)).map_err(|source| {
                        VmError::Io {
                            what: "listen on vsock port",
                            path: port.to_string().into(),
                            source,
                        }
                    })?;
                Ok((GuestListener::Vsock { listener, cid: *cid }, port))
            }
            VsockBackend::User { uds, .. } => {
                // vhost-device-vsock forwards a guest's connection to host
                // port P to the Unix socket "<uds-path>_P".
                let path = PathBuf::from(format!("{}_{user_port}", uds.display()));
                let listener = agent_proto::transport::bind_private_socket(&path).map_err(|source| VmError::Io {
                    what: "listen on",
                    path: path.clone(),
                    source,
                })?;
                Ok((GuestListener::Unix { listener, path }, user_port))
            }
        }
    }

    /// A short name for logs and the profile.
    pub fn describe(&self) -> String {
        match self {
            VsockBackend::Kernel { cid } => format!("vhost-vsock (kernel), guest CID {cid}"),
            VsockBackend::User { daemon, .. } => format!("{} (vhost-user), pid {}", daemon.name(), daemon.pid()),
        }
    }
}

/// Where the agent's readiness announcement arrives.
pub enum NotifyListener {
    /// vhost-device-vsock's forward of the host port: a Unix socket, 0600,
    /// in the VM's 0700 runtime directory. Removed once the agent has its
    /// key, so that nothing in the guest can use the port afterwards.
    Unix {
        /// The listener.
        listener: UnixListener,
        /// Its socket file.
        path: PathBuf,
    },
    /// The kernel's vsock: only a connection from our guest's CID counts.
    Vsock {
        /// The listener.
        listener: VsockListener,
        /// The guest's context id.
        cid: u32,
    },
}

/// Connections the guest opens to a host port ([`VsockBackend::guest_listener`]).
pub enum GuestListener {
    /// vhost-device-vsock's forward of the port: a Unix socket, 0600, in
    /// the VM's 0700 runtime directory.
    Unix {
        /// The listener.
        listener: UnixListener,
        /// Its socket file.
        path: PathBuf,
    },
    /// The kernel's vsock: only connections from our guest's CID count.
    Vsock {
        /// The listener.
        listener: VsockListener,
        /// The guest's context id.
        cid: u32,
    },
}

/// A connection from the guest.
pub trait GuestStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> GuestStream for S {}

impl GuestListener {
    /// The next connection from our guest (one from another CID is
    /// dropped unread).
    pub async fn accept(&self) -> std::io::Result<Box<dyn GuestStream>> {
        loop {
            match self {
                GuestListener::Unix { listener, .. } => return Ok(Box::new(listener.accept().await?.0)),
                GuestListener::Vsock { listener, cid } => {
                    let (stream, peer) = listener.accept().await?;
                    if peer.cid() == *cid {
                        return Ok(Box::new(stream));
                    }
                }
            }
        }
    }
}

impl NotifyListener {
    /// The next connection from our guest (one from another CID is dropped
    /// unread): the agent announcing that it listens. The host answers it
    /// with the agent key and keeps it as its first control session
    /// ([`crate::client::Client::over_readiness`]).
    pub async fn accept(&self) -> std::io::Result<Conn> {
        loop {
            match self {
                NotifyListener::Unix { listener, .. } => return Ok(Conn::Unix(listener.accept().await?.0)),
                NotifyListener::Vsock { listener, cid } => {
                    let (stream, peer) = listener.accept().await?;
                    if peer.cid() == *cid {
                        return Ok(Conn::Vsock(stream));
                    }
                }
            }
        }
    }

    /// The agent has its key: the Unix socket of the port is removed, so
    /// that nothing in the guest can use the port afterwards.
    pub fn close(&self) {
        if let NotifyListener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `$VMSHIM_VHOST_DEVICE_VSOCK`, else `vhost-device-vsock` in PATH or in
/// cargo's bin directory (where `scripts/setup.sh` installs it).
fn find_vhost_device_vsock() -> Result<PathBuf, VmError> {
    super::find_helper_program("VMSHIM_VHOST_DEVICE_VSOCK", "vhost-device-vsock").ok_or(VmError::BackendFailed {
        detail: "vhost-device-vsock is not installed and /dev/vhost-vsock is not usable: run scripts/setup.sh".into(),
    })
}

/// A random number from the kernel.
pub fn random_u32() -> u32 {
    let mut buf = [0u8; 4];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != 4 {
        // Not cryptographic; any varying value will do.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return t ^ std::process::id();
    }
    u32::from_ne_bytes(buf)
}
