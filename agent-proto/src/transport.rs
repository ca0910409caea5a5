//! Connections to and from the agent, one type whatever the transport.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_vsock::{VsockAddr, VsockListener, VsockStream};

use crate::Endpoint;

/// Why a connection could not be made or accepted.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket could not be opened or connected (nothing listens, no
    /// permission, no vsock in this kernel).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint dialled, as its URL.
        endpoint: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// A hybrid vsock backend answered `CONNECT` with something other than
    /// `OK`: usually nothing listens on that port in the guest (yet).
    #[error("{endpoint}: the vsock backend refused CONNECT {port}: {reply:?}")]
    HandshakeRefused {
        /// The endpoint dialled, as its URL.
        endpoint: String,
        /// The guest port asked for.
        port: u32,
        /// The backend's answer line, without its newline.
        reply: String,
    },
    /// The hybrid vsock handshake failed on the connection itself.
    #[error("{endpoint}: handshake failed: {source}")]
    Handshake {
        /// The endpoint dialled, as its URL.
        endpoint: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// The listening socket could not be made (a file in the way, an
    /// address in use, no vsock in this kernel).
    #[error("cannot listen on {endpoint}: {source}")]
    Bind {
        /// The endpoint to listen on, as its URL.
        endpoint: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// An `hvsock:` endpoint was given to listen on: it can only be dialled.
    #[error("cannot listen on {endpoint}: only unix: and vsock: endpoints can be listened on")]
    CannotListen {
        /// The endpoint, as its URL.
        endpoint: String,
    },
    /// Accepting a connection failed (out of descriptors, say); the
    /// listener still works.
    #[error("accept on {endpoint} failed: {source}")]
    Accept {
        /// The endpoint listened on, as its URL.
        endpoint: String,
        /// What the kernel said.
        source: io::Error,
    },
}

/// Something that can open a connection to an agent.
pub trait Transport {
    /// Opens a new connection; over `hvsock:` the backend's handshake is
    /// done, so the connection carries the guest's bytes from the start.
    fn connect(&self) -> impl Future<Output = Result<Conn, TransportError>> + Send;
}

impl Transport for Endpoint {
    async fn connect(&self) -> Result<Conn, TransportError> {
        let connect_err = |source| TransportError::Connect {
            endpoint: self.to_string(),
            source,
        };
        match self {
            Endpoint::Unix(path) => UnixStream::connect(path).await.map(Conn::Unix).map_err(connect_err),
            Endpoint::Vsock { cid, port } => VsockStream::connect(VsockAddr::new(*cid, *port))
                .await
                .map(Conn::Vsock)
                .map_err(connect_err),
            Endpoint::Hvsock { path, port } => {
                let stream = UnixStream::connect(path).await.map_err(connect_err)?;
                hvsock_handshake(stream, self, *port).await.map(Conn::Unix)
            }
        }
    }
}

/// The hybrid vsock handshake: `CONNECT <port>\n`, answered `OK <n>\n`.
///
/// The answer is read one byte at a time so that nothing after its newline,
/// which already belongs to the guest's stream, is consumed.
async fn hvsock_handshake(
    mut stream: UnixStream,
    endpoint: &Endpoint,
    port: u32,
) -> Result<UnixStream, TransportError> {
    let io_err = |source| TransportError::Handshake {
        endpoint: endpoint.to_string(),
        source,
    };
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(io_err)?;
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await.map_err(io_err)?;
        if n == 0 || byte[0] == b'\n' || line.len() > 64 {
            break;
        }
        line.push(byte[0]);
    }
    let reply = String::from_utf8_lossy(&line).into_owned();
    if reply.starts_with("OK ") {
        Ok(stream)
    } else {
        Err(TransportError::HandshakeRefused {
            endpoint: endpoint.to_string(),
            port,
            reply,
        })
    }
}

/// An open connection over any transport.
#[derive(Debug)]
pub enum Conn {
    /// Over a Unix socket: `unix:`, and `hvsock:` once its handshake is
    /// done.
    Unix(UnixStream),
    /// Over `AF_VSOCK`.
    Vsock(VsockStream),
}

impl AsRawFd for Conn {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Conn::Unix(s) => s.as_raw_fd(),
            Conn::Vsock(s) => s.as_raw_fd(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Vsock(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Vsock(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Vsock(s) => Pin::new(s).poll_flush(cx),
        }
    }

    /// Half-closes the connection: the peer reads end-of-file, and can still send.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Vsock(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The agent's listening socket.
pub enum Listener {
    /// A Unix socket, made 0600 ([`bind_private_socket`]).
    Unix {
        /// The bound socket.
        listener: UnixListener,
        /// Where it is, for messages.
        path: PathBuf,
    },
    /// A vsock port.
    Vsock {
        /// The bound socket.
        listener: VsockListener,
        /// The endpoint it was bound as, for messages.
        endpoint: String,
    },
}

impl Listener {
    /// Listens on a `unix:` or `vsock:` endpoint. A stale socket file left at
    /// a `unix:` path is replaced; any other file there is an error.
    pub fn bind(endpoint: &Endpoint) -> Result<Listener, TransportError> {
        let bind_err = |source| TransportError::Bind {
            endpoint: endpoint.to_string(),
            source,
        };
        match endpoint {
            Endpoint::Unix(path) => {
                remove_stale_socket(path).map_err(bind_err)?;
                let listener = bind_private_socket(path).map_err(bind_err)?;
                Ok(Listener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
            Endpoint::Vsock { cid, port } => {
                let listener = VsockListener::bind(VsockAddr::new(*cid, *port)).map_err(bind_err)?;
                Ok(Listener::Vsock {
                    listener,
                    endpoint: endpoint.to_string(),
                })
            }
            Endpoint::Hvsock { .. } => Err(TransportError::CannotListen {
                endpoint: endpoint.to_string(),
            }),
        }
    }

    /// Waits for the next connection; says who is at the other end.
    pub async fn accept(&self) -> Result<(Conn, Peer), TransportError> {
        match self {
            Listener::Unix { listener, path } => {
                let (stream, _) = listener.accept().await.map_err(|source| TransportError::Accept {
                    endpoint: format!("unix:{}", path.display()),
                    source,
                })?;
                let uid = stream.peer_cred().ok().map(|cred| cred.uid());
                Ok((Conn::Unix(stream), Peer::Unix { uid }))
            }
            Listener::Vsock { listener, endpoint } => {
                let (stream, addr) = listener.accept().await.map_err(|source| TransportError::Accept {
                    endpoint: endpoint.clone(),
                    source,
                })?;
                let peer = Peer::Vsock {
                    cid: addr.cid(),
                    port: addr.port(),
                };
                Ok((Conn::Vsock(stream), peer))
            }
        }
    }
}

/// Who connected, as the transport tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A Unix socket peer and its user (`SO_PEERCRED`), where the kernel
    /// said.
    Unix {
        /// The peer's effective uid when it connected; `None` if the kernel
        /// would not say.
        uid: Option<u32>,
    },
    /// A vsock peer: its CID ([`crate::endpoint::CID_HOST`] for the host)
    /// and port.
    Vsock {
        /// The peer's context id.
        cid: u32,
        /// The peer's (ephemeral) port.
        port: u32,
    },
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Unix { uid: Some(uid) } => write!(f, "unix peer uid {uid}"),
            Peer::Unix { uid: None } => write!(f, "unix peer of unknown uid"),
            Peer::Vsock { cid, port } => write!(f, "vsock peer {cid}:{port}"),
        }
    }
}

/// Binds a Unix socket that only its owner can connect to, whatever the
/// umask: bound under a temporary name, made 0600, then renamed into place,
/// so that the path never names a socket others may use.
pub fn bind_private_socket(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp)?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unix_round_trip_and_half_close() {
        let dir = std::env::temp_dir().join(format!("agent-proto-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ep = Endpoint::Unix(dir.join("s.sock"));
        let listener = Listener::bind(&ep).unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, peer) = listener.accept().await.unwrap();
            // SAFETY: geteuid has no preconditions.
            let uid = unsafe { libc::geteuid() };
            assert_eq!(peer, Peer::Unix { uid: Some(uid) });
            let mut got = Vec::new();
            conn.read_to_end(&mut got).await.unwrap();
            conn.write_all(&got).await.unwrap();
        });
        let mut c = ep.connect().await.unwrap();
        c.write_all(b"ping").await.unwrap();
        c.shutdown().await.unwrap();
        let mut back = Vec::new();
        c.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"ping");
        server.await.unwrap();
        // The socket is its owner's alone, whatever the umask.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::symlink_metadata(dir.join("s.sock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Binding again over the stale socket works.
        drop(Listener::bind(&ep).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn hvsock_handshake_leaves_stream_bytes() {
        let dir = std::env::temp_dir().join(format!("agent-proto-hv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.sock");
        let l = UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            for reply in [&b"OK 1024\nhello"[..], &b"NO\n"[..]] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 13];
                s.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"CONNECT 1024\n");
                s.write_all(reply).await.unwrap();
            }
        });
        let ep = Endpoint::Hvsock {
            path: path.clone(),
            port: 1024,
        };
        let mut c = ep.connect().await.unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        let err = ep.connect().await.unwrap_err();
        assert!(matches!(err, TransportError::HandshakeRefused { .. }), "{err}");
        server.await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn connect_error_names_the_endpoint() {
        let err = Endpoint::Unix("/nonexistent/x.sock".into())
            .connect()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unix:/nonexistent/x.sock"), "{err}");
    }
}
