//! The guest's serial console, captured to a capped log.
//!
//! QEMU does not write the console to a file of its own making (a file it
//! would create through whatever link is at the path, and let grow
//! without bound): it connects its serial port to a Unix socket that
//! vmshim listens on (`console.sock`, 0600, in the VM's 0700 runtime
//! directory), and a thread of vmshim copies what arrives into
//! `console.log`, 0600, rotated to `console.log.1` when it passes the log
//! limit ([`crate::private::log`]).
//!
//! [`tail`] first has the capture write out everything QEMU has sent, so
//! an error quoting the console after QEMU died has its last lines.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::private::log::{self, RotatingLog};
use crate::private::PrivateDir;

/// The log's name in the runtime directory.
pub const LOG_NAME: &str = "console.log";
/// The socket QEMU's serial port connects to.
pub const SOCKET_NAME: &str = "console.sock";

/// How long [`tail`] waits for the capture to catch up.
const SYNC_TIMEOUT: Duration = Duration::from_millis(500);

/// The last `lines` lines of the console log, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    if let Some(shared) = registered(path) {
        shared.sync(SYNC_TIMEOUT);
    }
    let text = log::tail(path, usize::MAX).unwrap_or_default();
    let all: Vec<&str> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .collect();
    if all.is_empty() {
        return String::from("(no console output)");
    }
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A thread that copies the guest console from QEMU's connection into the
/// log; stopped (after writing out what is left) when dropped.
pub struct ConsoleCapture {
    log: PathBuf,
    socket: PathBuf,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ConsoleCapture {
    /// Listens on `console.sock` in `dir` and starts the copy into a new
    /// `console.log` there, rotated at the log limit ([`log::limit`]).
    pub fn start(dir: &PrivateDir) -> io::Result<ConsoleCapture> {
        ConsoleCapture::start_with_limit(dir, log::limit())
    }

    /// [`ConsoleCapture::start`], the log rotated at `limit` bytes.
    pub fn start_with_limit(dir: &PrivateDir, limit: u64) -> io::Result<ConsoleCapture> {
        let log = RotatingLog::create(dir, LOG_NAME, limit).map_err(io::Error::other)?;
        let socket = dir.join(SOCKET_NAME);
        let listener = UnixListener::bind(&socket)?;
        // The directory is 0700 already; the socket is made 0600 too, as
        // every file there.
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        let (wake_rx, wake_tx) = pipe()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            wake: wake_tx,
        });
        let path = log.path();
        let thread = std::thread::Builder::new().name("console".into()).spawn({
            let shared = shared.clone();
            move || {
                Copier {
                    listener: Some(listener),
                    conn: None,
                    log,
                    wake: wake_rx,
                    shared,
                }
                .run()
            }
        })?;
        registry().insert(path.clone(), Arc::downgrade(&shared));
        Ok(ConsoleCapture {
            log: path,
            socket,
            shared,
            thread: Some(thread),
        })
    }

    /// The console log it writes (`console.log`, rotated).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The socket QEMU's serial console connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for ConsoleCapture {
    fn drop(&mut self) {
        registry().remove(&self.log);
        self.shared.lock().quit = true;
        self.shared.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the capture and its users share.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Written to wake the thread.
    wake: OwnedFd,
}

#[derive(Default)]
struct State {
    /// Syncs asked for, and done: the thread has written out everything
    /// that had arrived when it was asked.
    requested: u64,
    done: u64,
    /// QEMU's connection ended (or the thread stopped): nothing more comes.
    finished: bool,
    quit: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wake(&self) {
        // SAFETY: one byte from a valid buffer to the pipe we own; a full
        // pipe (EAGAIN) already holds a wake-up.
        unsafe { libc::write(self.wake.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
    }

    /// Waits (up to `timeout`) until the thread has written out what QEMU
    /// has sent so far.
    fn sync(&self, timeout: Duration) {
        let mut state = self.lock();
        if state.finished {
            return;
        }
        state.requested += 1;
        let target = state.requested;
        self.wake();
        let deadline = Instant::now() + timeout;
        while state.done < target && !state.finished {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// The captures running in this process, by log path: [`tail`] takes a
/// path.
fn registry() -> MutexGuard<'static, BTreeMap<PathBuf, Weak<Shared>>> {
    static CAPTURES: Mutex<BTreeMap<PathBuf, Weak<Shared>>> = Mutex::new(BTreeMap::new());
    CAPTURES.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn registered(path: &Path) -> Option<Arc<Shared>> {
    registry().get(path).and_then(Weak::upgrade)
}

/// The capture thread's side.
struct Copier {
    /// Until QEMU connects; then closed, so nobody else can.
    listener: Option<UnixListener>,
    conn: Option<UnixStream>,
    log: RotatingLog,
    wake: OwnedFd,
    shared: Arc<Shared>,
}

impl Copier {
    fn run(mut self) {
        loop {
            let source = match (&self.conn, &self.listener) {
                (Some(c), _) => Some(c.as_raw_fd()),
                (None, Some(l)) => Some(l.as_raw_fd()),
                (None, None) => None,
            };
            let _ = poll(source, self.wake.as_raw_fd());
            drain_pipe(self.wake.as_raw_fd());
            let ended = self.copy();
            let mut state = self.shared.lock();
            state.done = state.requested;
            state.finished |= ended;
            let quit = state.quit;
            drop(state);
            self.shared.changed.notify_all();
            if quit {
                break;
            }
        }
        self.shared.lock().finished = true;
        self.shared.changed.notify_all();
    }

    /// Takes QEMU's connection if it is waiting, and writes out whatever
    /// it has sent; whether the connection has ended.
    fn copy(&mut self) -> bool {
        if self.conn.is_none() {
            if let Some(listener) = &self.listener {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let _ = conn.set_nonblocking(true);
                        self.conn = Some(conn);
                        self.listener = None;
                    }
                    Err(_) => return false,
                }
            }
        }
        let Some(conn) = &mut self.conn else {
            return self.listener.is_none();
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let _ = self.log.write(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => break,
            }
        }
        self.conn = None;
        true
    }
}

/// Waits until `source` (if any) or `wake` is readable (or hung up).
fn poll(source: Option<RawFd>, wake: RawFd) -> io::Result<()> {
    let mut fds = [
        libc::pollfd {
            fd: wake,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: source.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: fds is a valid array of two pollfd; a negative fd is ignored.
    if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned by no one else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn drain_pipe(fd: RawFd) {
    let mut buf = [0u8; 64];
    // SAFETY: reads into a valid buffer of its length from a non-blocking
    // pipe we own.
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::private::ensure_private_dir;
    use crate::test_dir::TestDir;
    use std::io::Write;

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = std::env::temp_dir().join(format!("console-tail-{}", std::process::id()));
        std::fs::write(&dir, "a\r\nb\n\nc\nd\n").unwrap();
        assert_eq!(super::tail(&dir, 2), "c\nd");
        assert_eq!(super::tail(&dir, 10), "a\nb\nc\nd");
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(super::tail(&dir, 2), "(no console output)");
    }

    #[test]
    fn the_console_is_copied_whole_and_capped() {
        let t = TestDir::new("console-capture");
        let dir = ensure_private_dir(&t.path().join("vm")).unwrap();
        let capture = ConsoleCapture::start_with_limit(&dir, 4096).unwrap();
        assert_eq!(
            super::tail(capture.log(), 3),
            "(no console output)",
            "QEMU not connected yet"
        );
        let mut qemu = UnixStream::connect(capture.socket()).unwrap();
        for i in 0..600 {
            writeln!(qemu, "[{i:4}] boot line").unwrap();
        }
        // Read while QEMU runs: everything sent so far is there.
        assert_eq!(super::tail(capture.log(), 1), "[ 599] boot line");
        writeln!(qemu, "the end").unwrap();
        drop(qemu);
        assert_eq!(super::tail(capture.log(), 2), "[ 599] boot line\nthe end");
        // 600 lines of 17 bytes went past 4 KiB twice: rotated, one older
        // generation kept, neither past the limit.
        let current = std::fs::read_to_string(capture.log()).unwrap();
        let older = std::fs::read_to_string(dir.join("console.log.1")).unwrap();
        assert!(
            current.len() <= 4096 && older.len() <= 4096,
            "{} {}",
            current.len(),
            older.len()
        );
        assert!(current.len() + older.len() < 600 * 17, "the oldest lines are gone");
        let log = capture.log().to_owned();
        drop(capture);
        assert!(registered(&log).is_none());
    }

    #[test]
    fn a_capture_that_qemu_never_joined_stops() {
        let t = TestDir::new("console-never");
        let dir = ensure_private_dir(&t.path().join("vm")).unwrap();
        let capture = ConsoleCapture::start(&dir).unwrap();
        let started = Instant::now();
        drop(capture);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
