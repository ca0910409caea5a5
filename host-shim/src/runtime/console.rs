//! Terminals of processes whose pty is in the VM, handed over as runc
//! hands its terminals over (`--console-socket`): a host pseudo-terminal
//! pair is opened, its master is sent to the caller's `AF_UNIX` socket with
//! `SCM_RIGHTS`, and its slave is relayed to the guest process's terminal
//! streams. The slave is raw: the guest's terminal echoes, edits lines and
//! turns keys into signals. Window sizes set on the master are polled on
//! the slave and passed on with the agent's `resize`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use agent_proto::{Conn, ProcessId, WindowSize};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::terminal::window_size;

/// How often the slave's window size is looked at.
const RESIZE_POLL: Duration = Duration::from_millis(100);

/// The name sent with the master, as runc sends it.
const MASTER_NAME: &[u8] = b"/dev/ptmx";

/// Why a terminal could not be handed over.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No host pseudo-terminal could be opened.
    #[error("cannot open a pseudo-terminal: {source}")]
    Open {
        /// What the system said.
        source: io::Error,
    },
    /// The master could not be sent to the console socket.
    #[error("cannot send the terminal to the console socket {}: {source}", path.display())]
    Send {
        /// The console socket.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// A host pseudo-terminal pair, both ends close-on-exec, the slave raw.
pub struct HostPty {
    /// The master: what the console socket receives.
    pub master: OwnedFd,
    /// The slave: what the daemon relays to the process's terminal.
    pub slave: OwnedFd,
}

impl HostPty {
    /// Opens a pair whose window size is `size`, if given.
    pub fn open(size: Option<WindowSize>) -> Result<HostPty, ConsoleError> {
        let open = || -> io::Result<HostPty> {
            // SAFETY: a plain open of the multiplexer; the result is checked.
            let master = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
            let master = owned(master)?;
            // SAFETY: unlockpt takes the master just opened.
            if unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
            // SAFETY: TIOCGPTPEER takes open flags by value and returns a new
            // descriptor of the master's own slave.
            let slave = owned(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER as _, flags) })?;
            make_raw(slave.as_fd())?;
            if let Some(size) = size {
                set_size(master.as_fd(), size)?;
            }
            Ok(HostPty { master, slave })
        };
        open().map_err(|source| ConsoleError::Open { source })
    }
}

/// Sends `master` to the console socket at `path`: one message whose body
/// is the master's name and whose `SCM_RIGHTS` carries the descriptor.
pub fn send_master(path: &Path, master: BorrowedFd<'_>) -> Result<(), ConsoleError> {
    let fail = |source| ConsoleError::Send {
        path: path.to_path_buf(),
        source,
    };
    let socket = UnixStream::connect(path).map_err(fail)?;
    let fd: RawFd = master.as_raw_fd();
    let fd_len = std::mem::size_of::<RawFd>() as u32;
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    // u64s: the control buffer must be aligned for a cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: MASTER_NAME.as_ptr() as *mut libc::c_void,
        iov_len: MASTER_NAME.len(),
    };
    // SAFETY: msghdr is plain data; all zeros is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer holds one cmsghdr with room for one
    // descriptor (CMSG_SPACE), aligned; CMSG_FIRSTHDR and CMSG_DATA point
    // inside it. sendmsg reads the iovec (the name, never written) and the
    // control buffer, both alive for the call.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(fail(io::Error::last_os_error()));
    }
    Ok(())
}

/// Receives a terminal's master on `conn`, a connection to a console
/// socket, as [`send_master`] sends it (what a console socket's owner does,
/// runc's `--console-socket` protocol): the descriptor (close-on-exec) and
/// the name that came with it.
pub fn receive_master(conn: &UnixStream) -> io::Result<(OwnedFd, String)> {
    let mut name = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: name.as_mut_ptr().cast(),
        iov_len: name.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: a msghdr is plain data; zeroed is its empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: recvmsg fills the buffers msg describes, which outlive the
    // call.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CMSG_FIRSTHDR reads the msghdr recvmsg filled; the header it
    // returns, if any, lies in `control`.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    // SAFETY: a non-null header from CMSG_FIRSTHDR is within `control`.
    if cmsg.is_null() || unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) } != (libc::SOL_SOCKET, libc::SCM_RIGHTS) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the console socket's message carries no descriptor",
        ));
    }
    // SAFETY: an SCM_RIGHTS message carries at least one descriptor, which
    // is ours now.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>()) };
    let name = String::from_utf8_lossy(&name[..n as usize]).into_owned();
    Ok((owned(fd)?, name))
}

/// Opens a pair sized `size`, sends its master to the console socket at
/// `path`, and returns the slave.
pub fn hand_over(path: &Path, size: Option<WindowSize>) -> Result<OwnedFd, ConsoleError> {
    let pty = HostPty::open(size)?;
    send_master(path, pty.master.as_fd())?;
    Ok(pty.slave)
}

/// Relays a guest terminal (its `stdin` and `stdout` streams) to the host
/// terminal `slave`: what the slave reads goes in, what the process shows
/// comes out. Returns the relays' tasks: (input, output).
pub fn relay(
    slave: &OwnedFd,
    stdin: Option<Conn>,
    stdout: Conn,
) -> io::Result<(Option<JoinHandle<()>>, JoinHandle<()>)> {
    let input = match stdin {
        Some(conn) => {
            let from = PtyStream::new(slave.try_clone()?)?;
            Some(tokio::spawn(relay_input(from, conn)))
        }
        None => None,
    };
    let to = PtyStream::new(slave.try_clone()?)?;
    Ok((input, tokio::spawn(relay_output(stdout, to))))
}

/// Copies what the terminal's user types into the process's stdin until
/// the master is closed (the slave reads EIO), then half-closes it (the
/// guest's terminal gets its end-of-file character).
async fn relay_input(mut from: PtyStream, mut conn: Conn) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = conn.shutdown().await;
}

/// Copies what the process shows to the terminal until the agent ends the
/// stream; once the master is gone the rest is read and dropped.
async fn relay_output(mut conn: Conn, mut to: PtyStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut writable = true;
    loop {
        let n = match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        writable = writable && to.write_all(&buf[..n]).await.is_ok();
    }
}

/// Passes the window size of `slave` on to `process` whenever it changes
/// (the master's holder sets it); never returns.
pub async fn follow_size(client: &Client, process: ProcessId, slave: BorrowedFd<'_>) {
    let mut last = None;
    loop {
        let now = window_size(slave.as_raw_fd());
        if let Some((rows, cols)) = now.filter(|_| now != last) {
            if client.resize(process, rows, cols).await.is_ok() {
                last = now;
            }
        }
        tokio::time::sleep(RESIZE_POLL).await;
    }
}

/// One end of a terminal, non-blocking, read and written through the
/// runtime's reactor (so that dropping it closes it, unlike a descriptor
/// that a thread blocks on).
struct PtyStream(AsyncFd<OwnedFd>);

impl PtyStream {
    fn new(fd: OwnedFd) -> io::Result<PtyStream> {
        // SAFETY: F_GETFL/F_SETFL only change the file's status flags.
        unsafe {
            let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: an OwnedFd stays open, on the same file, until the
        // AsyncFd that owns it is dropped.
        Ok(PtyStream(unsafe { AsyncFd::register(fd) }?))
    }
}

impl AsyncRead for PtyStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let read = guard.try_io(|fd| {
                // SAFETY: reads into the initialized, unfilled part of buf.
                let n = unsafe { libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len()) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(n as usize)
            });
            match read {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            let written = guard.try_io(|fd| {
                // SAFETY: writes from a valid buffer.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(n as usize)
            });
            match written {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor just returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Puts the terminal on `fd` in raw mode.
fn make_raw(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid pointer.
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: t is a valid termios.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: as above.
    if unsafe { libc::tcsetattr(fd.as_raw_fd(), libc::TCSANOW, &t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the window size of the terminal on `fd`.
pub fn set_size(fd: BorrowedFd<'_>, size: WindowSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize through a valid pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn the_master_reaches_the_console_socket_and_talks_to_the_raw_slave() {
        let t = TestDir::new("console");
        let path = t.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let slave = hand_over(&path, Some(WindowSize { rows: 30, cols: 100 })).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let (master, name) = receive_master(&conn).unwrap();
        assert_eq!(name, "/dev/ptmx");
        assert_eq!(window_size(slave.as_raw_fd()), Some((30, 100)));
        let mut master = std::fs::File::from(master);
        let mut slave = std::fs::File::from(slave);
        // Raw: no echo, no newline translation, ^C is a byte.
        master.write_all(b"hi\x03\n").unwrap();
        let mut got = [0u8; 4];
        slave.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi\x03\n");
        slave.write_all(b"out\n").unwrap();
        let mut got = [0u8; 4];
        master.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"out\n");
        // A size set on the master is seen on the slave.
        set_size(master.as_fd(), WindowSize { rows: 40, cols: 120 }).unwrap();
        assert_eq!(window_size(slave.as_raw_fd()), Some((40, 120)));
    }

    #[test]
    fn no_listener_is_an_error_that_names_the_socket() {
        let t = TestDir::new("console-none");
        let err = hand_over(&t.path().join("nope.sock"), None).unwrap_err().to_string();
        assert!(err.contains("nope.sock"), "{err}");
    }
}
