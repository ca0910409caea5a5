//! Pseudo-terminals: a master for the agent, a slave for the process.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use agent_proto::WindowSize;

use super::fdio;

/// Why a pseudo-terminal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    /// No master.
    #[error("cannot open /dev/ptmx: {source}")]
    OpenMaster {
        /// Why.
        source: io::Error,
    },
    /// `unlockpt` failed.
    #[error("cannot unlock the pseudo-terminal: {source}")]
    Unlock {
        /// Why.
        source: io::Error,
    },
    /// No slave.
    #[error("cannot open the pseudo-terminal's slave {path}: {source}")]
    OpenSlave {
        /// Its path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The initial size could not be set.
    #[error("cannot set the terminal size to {rows}x{cols}: {source}")]
    SetSize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
        /// Why.
        source: io::Error,
    },
}

/// An open pseudo-terminal pair, both ends close-on-exec.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a new pseudo-terminal with the given initial size.
pub fn open(size: Option<WindowSize>) -> Result<Pty, PtyError> {
    let master = fdio::open(c"/dev/ptmx", libc::O_RDWR).map_err(|source| PtyError::OpenMaster { source })?;
    from_master(master, size)
}

/// Opens a new pseudo-terminal of a container's devpts: its `/dev/ptmx`,
/// looked up inside `root` (so a link there cannot lead elsewhere). A
/// process that runs in that root finds its terminal under its `/dev/pts`.
pub fn open_in_root(root: &std::path::Path, size: Option<WindowSize>) -> Result<Pty, PtyError> {
    let opened = super::in_root::open_in_root(root, "/dev/ptmx").and_then(|path| {
        // The lookup gives an O_PATH descriptor: open the node through it.
        let link = std::ffi::CString::new(format!("/proc/self/fd/{}", path.as_raw_fd()))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        fdio::open(&link, libc::O_RDWR | libc::O_NOCTTY)
    });
    let master = opened.map_err(|source| PtyError::OpenMaster { source })?;
    from_master(master, size)
}

/// Unlocks the pseudo-terminal of `master` and opens its slave.
fn from_master(master: OwnedFd, size: Option<WindowSize>) -> Result<Pty, PtyError> {
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from a valid pointer (unlockpt).
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK as _, &unlock) } < 0 {
        return Err(PtyError::Unlock {
            source: io::Error::last_os_error(),
        });
    }
    let slave = open_slave(&master)?;
    if let Some(WindowSize { rows, cols }) = size {
        set_size(borrow(&master), rows, cols).map_err(|source| PtyError::SetSize { rows, cols, source })?;
    }
    Ok(Pty { master, slave })
}

/// Opens the slave: through the master itself (TIOCGPTPEER, Linux 4.13+),
/// which cannot pick up another devpts instance's node, else by its path.
fn open_slave(master: &OwnedFd) -> Result<OwnedFd, PtyError> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER as _, flags) };
    if fd >= 0 {
        // SAFETY: a fresh descriptor that nobody else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int into a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN as _, &mut number) } < 0 {
        let source = io::Error::last_os_error();
        return Err(PtyError::OpenSlave {
            path: "(unknown)".into(),
            source,
        });
    }
    let path = format!("/dev/pts/{number}");
    let c_path = std::ffi::CString::new(path.clone()).map_err(|_| PtyError::OpenSlave {
        path: path.clone(),
        source: io::ErrorKind::InvalidInput.into(),
    })?;
    fdio::open(&c_path, libc::O_RDWR).map_err(|source| PtyError::OpenSlave { path, source })
}

fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(fd)
}

/// Sets the terminal size (the foreground process group gets SIGWINCH).
pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ as _, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal's end-of-file character (VEOF, normally ^D).
pub fn eof_char(fd: BorrowedFd<'_>) -> u8 {
    // SAFETY: an all-zero termios is a valid value to be overwritten.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: tcgetattr writes into a valid termios; on a master it reports
    // the terminal's settings.
    if unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) } == 0 && t.c_cc[libc::VEOF] != 0 {
        t.c_cc[libc::VEOF]
    } else {
        0x04
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_sets_size_and_has_eof() {
        let Ok(pty) = open(Some(WindowSize { rows: 33, cols: 101 })) else {
            return; // no /dev/ptmx here
        };
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a winsize into a valid pointer.
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ as _, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (33, 101));
        set_size(borrow(&pty.master), 10, 20).unwrap();
        // SAFETY: as above.
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ as _, &mut ws) };
        assert_eq!(rc, 0);
        assert_eq!((ws.ws_row, ws.ws_col), (10, 20));
        assert_eq!(eof_char(borrow(&pty.master)), 0x04);
    }
}
