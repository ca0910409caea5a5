//! Network interfaces: for now, the loopback interface up.
//!
//! `SIOCGIFFLAGS`/`SIOCSIFFLAGS` on a datagram socket: two ioctls, no netlink
//! library. An interface that is already up is left untouched, so PID 1 of a
//! namespace that shares the host's network namespace changes nothing there.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot open a socket to configure interfaces: {source}")]
    Socket { source: io::Error },
    #[error("interface name \"{ifname}\" is too long")]
    BadName { ifname: String },
    #[error("cannot read the flags of interface {ifname}: {source}")]
    GetFlags { ifname: String, source: io::Error },
    #[error("cannot bring interface {ifname} up: {source}")]
    SetFlags { ifname: String, source: io::Error },
}

/// `struct ifreq` as the flag ioctls use it: the name, then `short ifr_flags`
/// at the start of the 24-byte union.
#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _rest: [u8; 22],
}

/// Brings `ifname` up; returns false when it already was.
pub fn bring_up(ifname: &str) -> Result<bool, NetworkError> {
    if ifname.len() >= libc::IFNAMSIZ || ifname.as_bytes().contains(&0) {
        return Err(NetworkError::BadName {
            ifname: ifname.to_owned(),
        });
    }
    // SAFETY: socket() has no memory preconditions; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(NetworkError::Socket {
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req = IfreqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _rest: [0; 22],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: `req` is a properly sized, NUL-terminated ifreq that lives
    // across the call; SIOCGIFFLAGS writes only ifr_flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(NetworkError::GetFlags {
            ifname: ifname.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    let up = libc::IFF_UP as libc::c_short;
    if req.flags & up != 0 {
        return Ok(false);
    }
    req.flags |= up;
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(NetworkError::SetFlags {
            ifname: ifname.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfreqFlags>(), 40);
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        assert!(matches!(
            bring_up("a-name-far-too-long"),
            Err(NetworkError::BadName { .. })
        ));
    }

    #[test]
    fn bringing_up_twice_changes_nothing_the_second_time() {
        // Where we may (root, or lo already up), a second call is a no-op.
        if bring_up("lo").is_ok() {
            assert!(!bring_up("lo").unwrap());
        }
    }
}
