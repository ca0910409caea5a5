//! One line per message on stderr (the console, in a VM): `vminitd: <message>`.
//!
//! No logging framework: PID 1 pays for every dependency in size and start
//! time. Debug lines are written only when `vminitd.log=debug` (or
//! `--log debug`) was given.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

/// Turns debug lines on or off.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether debug lines are written.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Writes `vminitd: <args>\n` to stderr with one `write`, so that lines from
/// the agent and from processes sharing the console do not interleave inside
/// a line. Errors are ignored: there is nowhere else to report them.
pub fn write_line(args: fmt::Arguments<'_>) {
    let mut line = String::with_capacity(128);
    line.push_str("vminitd: ");
    let _ = line.write_fmt(args);
    line.push('\n');
    write_fd(2, line.as_bytes());
}

/// Writes raw bytes to `fd` (1 or 2), retrying short writes and EINTR.
pub fn write_fd(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid, initialised buffer of `bytes.len()`
        // bytes for the duration of the call; the fd may be closed, in which
        // case write fails with EBADF and nothing happens.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n > 0 {
            bytes = &bytes[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        } else {
            return;
        }
    }
}

/// An ordinary message.
macro_rules! info {
    ($($arg:tt)*) => { $crate::sys::log::write_line(format_args!($($arg)*)) };
}

/// Something went wrong and the agent goes on.
macro_rules! warn {
    ($($arg:tt)*) => { $crate::sys::log::write_line(format_args!("warning: {}", format_args!($($arg)*))) };
}

/// Only with `vminitd.log=debug`.
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::sys::log::debug_enabled() {
            $crate::sys::log::write_line(format_args!($($arg)*))
        }
    };
}
