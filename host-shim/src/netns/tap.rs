//! A tap device made through `/dev/net/tun`, in the network namespace of
//! the thread that makes it. It is not persistent: it lives as long as a
//! descriptor of it is open (this one, and QEMU's copy).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// `TUNSETIFF`: `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// An open tap device.
#[derive(Debug)]
pub struct Tap {
    /// The descriptor QEMU gets (`-netdev tap,fd=N`).
    pub fd: OwnedFd,
    /// Its name in the namespace.
    pub name: String,
}

impl Tap {
    /// Makes tap device `name`: Ethernet frames (`IFF_TAP`), no packet
    /// information header (`IFF_NO_PI`), with a virtio-net header
    /// (`IFF_VNET_HDR`, which lets QEMU pass the guest's checksum and
    /// segmentation offloads through, as Kata's taps do). `EBUSY` if a
    /// device of that name is in use.
    pub fn create(name: &str) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let file = File::options().read(true).write(true).open("/dev/net/tun")?;
        // SAFETY: ifreq is plain integers and arrays, for which zeros are
        // valid.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
            *slot = byte as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which lives across
        // the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel wrote back a NUL-terminated name (IFNAMSIZ
        // bytes, the last always NUL).
        let name = unsafe { CStr::from_ptr(request.ifr_name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        Ok(Tap { fd: file.into(), name })
    }
}
