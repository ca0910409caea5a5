//! File descriptors: pipes, `/dev/null`, and non-blocking reads and writes
//! through tokio's `AsyncFd` (tokio's own pipe types would pull in
//! `tokio::process`, whose `waitpid` would race with the reaper).
//!
//! Every descriptor is opened close-on-exec: a child gets exactly the
//! descriptors that are `dup2`'d onto its 0, 1 and 2.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

/// `Ok(n)` from a syscall's return value, or the OS error.
fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// A pipe: (read end, write end), both close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `/dev/null`, read-write.
pub fn open_dev_null() -> io::Result<OwnedFd> {
    open(c"/dev/null", libc::O_RDWR)
}

/// Opens `path` close-on-exec and without becoming our controlling terminal.
pub fn open(path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `path` is NUL-terminated; the result is checked.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY) })?;
    // SAFETY: a fresh descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A close-on-exec duplicate numbered 3 or above.
pub fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid descriptor; the result is checked.
    let new = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: a fresh descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Sets O_NONBLOCK (on the open file description).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL on a valid descriptor.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: F_SETFL on a valid descriptor, with an integer argument.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Makes `fd` non-blocking and registers it with the runtime.
pub fn async_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    set_nonblocking(fd.as_fd())?;
    // SAFETY: the AsyncFd owns `fd`, so it stays open and the same
    // descriptor for the AsyncFd's whole life.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

fn sys_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn sys_write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid readable buffer of `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Reads what is available (waiting until something is); 0 is end-of-file.
pub async fn read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut ready = fd.readable().await?;
        match ready.try_io(|inner| sys_read(inner.get_ref().as_raw_fd(), buf)) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

/// Writes all of `buf`, waiting for room as needed.
pub async fn write_all(fd: &AsyncFd<OwnedFd>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let mut ready = fd.writable().await?;
        match ready.try_io(|inner| sys_write(inner.get_ref().as_raw_fd(), buf)) {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_close_on_exec() {
        let (r, w) = pipe().unwrap();
        let null = open_dev_null().unwrap();
        let copy = dup(r.as_fd()).unwrap();
        assert!(copy.as_raw_fd() >= 3);
        for fd in [&r, &w, &null, &copy] {
            // SAFETY: F_GETFD on a descriptor we own.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
    }

    #[tokio::test]
    async fn async_pipe_round_trip_and_eof() {
        let (r, w) = pipe().unwrap();
        let (r, w) = (async_fd(r).unwrap(), async_fd(w).unwrap());
        // More than a pipe holds: the writer must wait for the reader.
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            write_all(&w, &data).await.unwrap();
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = read(&r, &mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got, expected);
    }
}
