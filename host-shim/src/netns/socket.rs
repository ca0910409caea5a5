//! The `NETLINK_ROUTE` socket itself: open, send, receive, nothing more.
//! The socket belongs to the network namespace of the thread that opens
//! it, for its whole life.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A blocking, close-on-exec routing netlink socket, with extended ACKs
/// (the kernel's explanation of an error) and capped ones (no echo of the
/// whole request) where the kernel knows them.
pub fn open() -> io::Result<OwnedFd> {
    // SAFETY: socket() has no memory preconditions; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    for option in [libc::NETLINK_EXT_ACK, libc::NETLINK_CAP_ACK] {
        let on: libc::c_int = 1;
        // SAFETY: `on` is an int that lives across the call, its size
        // passed. A kernel that does not know the option says so, which
        // is fine: its errors are bare errnos.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_NETLINK,
                option,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    Ok(fd)
}

/// The kernel's netlink address: port 0, no groups.
fn kernel_address() -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain integers, for which all zeros is valid.
    let mut address: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    address.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    address
}

/// Sends one message to the kernel.
pub fn send(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    let to = kernel_address();
    loop {
        // SAFETY: `bytes` is valid for its length; `to` is a sockaddr_nl
        // that lives across the call, its size passed.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent >= 0 {
            // A netlink datagram goes whole or not at all.
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one datagram from the kernel into `buf`, grown first if the
/// datagram would not fit; returns its length. Datagrams from anyone but
/// the kernel are dropped.
pub fn receive(fd: &OwnedFd, buf: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of its length. MSG_PEEK leaves
        // the datagram queued; MSG_TRUNC makes recv return its full length.
        let size = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_TRUNC,
            )
        };
        if size < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if size as usize > buf.len() {
            buf.resize(size as usize, 0);
        }
        let mut from = kernel_address();
        let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: as above; `from` and `from_len` live across the call and
        // describe a sockaddr_nl-sized buffer.
        let got = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_nl).cast(),
                &mut from_len,
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if from.nl_pid != 0 {
            continue;
        }
        return Ok((got as usize).min(buf.len()));
    }
}
