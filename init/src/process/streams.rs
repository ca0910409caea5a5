//! The byte pumps between a process's stdio and the host's connections.
//!
//! Output pumps read until end-of-file (not until the process exits: a
//! process that writes and exits at once loses nothing), write everything
//! to the connection, then half-close it. A descendant that keeps the pipe
//! open after the process exited holds it only while it keeps writing. If the host's connection goes
//! away, the pump goes on draining and discarding, so the process never
//! blocks on a full pipe. The input pump copies the host's bytes to the
//! process and, at the host's half-close, closes the pipe (end-of-file) or
//! sends the terminal's end-of-file character.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use agent_proto::Conn;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::table::Phase;
use crate::sys::fdio;
use crate::sys::pty;

/// The copy buffer of each pump.
const BUF_SIZE: usize = 32 * 1024;

/// After the process has exited, how long an output may stay silent before
/// it is taken as ended: a descendant that inherited the pipe (a daemon the
/// process started) would otherwise hold the stream, and the exit status,
/// open forever. What the process wrote before it exited is in the pipe and
/// read long before that.
const QUIET_AFTER_EXIT: Duration = Duration::from_millis(250);

/// Copies an output (a pipe's read end, or a terminal's master) to `conn`
/// until end-of-file, or, once the process has exited, until it has been
/// quiet for [`QUIET_AFTER_EXIT`]. A terminal's master reads EIO once every
/// slave end is closed: that is its end-of-file.
pub async fn pump_output(
    src: AsyncFd<OwnedFd>,
    mut conn: Option<Conn>,
    what: String,
    mut phase: watch::Receiver<Phase>,
) {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total: u64 = 0;
    let mut process_exited = false;
    loop {
        let read = if process_exited {
            match tokio::time::timeout(QUIET_AFTER_EXIT, fdio::read(&src, &mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    debug!("{what}: quiet since the process exited: ending it");
                    break;
                }
            }
        } else {
            tokio::select! {
                read = fdio::read(&src, &mut buf) => read,
                _ = exited(&mut phase) => {
                    process_exited = true;
                    continue;
                }
            }
        };
        let n = match read {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                warn!("reading {what}: {e}");
                break;
            }
        };
        total += n as u64;
        if let Some(c) = conn.as_mut() {
            if let Err(e) = c.write_all(&buf[..n]).await {
                debug!("{what}: the host's connection failed ({e}): discarding the rest");
                conn = None;
            }
        }
    }
    if let Some(mut c) = conn {
        let _ = c.shutdown().await;
    }
    debug!("{what}: end of file after {total} bytes");
}

/// Copies the host's bytes from `conn` to the process until the host
/// half-closes (or the process has exited).
pub async fn pump_input(mut conn: Conn, dst: AsyncFd<OwnedFd>, terminal: bool, mut phase: watch::Receiver<Phase>) {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut last_byte = None;
    loop {
        let n = tokio::select! {
            read = conn.read(&mut buf) => read.unwrap_or(0),
            _ = exited(&mut phase) => return,
        };
        if n == 0 {
            break;
        }
        tokio::select! {
            written = fdio::write_all(&dst, &buf[..n]) => if written.is_err() { return },
            _ = exited(&mut phase) => return,
        }
        last_byte = Some(buf[n - 1]);
    }
    if terminal {
        // ^D ends input only at the start of a line; after a partial line
        // the first one sends the line and the second ends input.
        let eof = pty::eof_char(dst.get_ref().as_fd());
        let partial_line = matches!(last_byte, Some(b) if b != b'\n' && b != b'\r');
        let seq = if partial_line { vec![eof, eof] } else { vec![eof] };
        tokio::select! {
            _ = fdio::write_all(&dst, &seq) => {}
            _ = exited(&mut phase) => {}
        }
    }
    // Dropping `dst` closes the pipe's write end: the process reads EOF.
}

async fn exited(phase: &mut watch::Receiver<Phase>) {
    let _ = phase.wait_for(Phase::has_exited).await;
}
