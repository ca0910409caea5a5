//! The skeleton a vminitd guest boots from: `/init`, the mount points it
//! mounts on, and the two device nodes the kernel needs before `/dev` is a
//! devtmpfs. Everything else (pts, shm, cgroup2...) `/init` creates itself.

use std::path::Path;

use crate::Archive;

/// Where the kernel looks for the first program to run.
pub const INIT_PATH: &str = "/init";

/// `/init` must be executable; nobody but root needs to write it.
pub const INIT_MODE: u32 = 0o755;

/// The guest's top-level directories and their modes. They are mount points
/// (`/proc`, `/sys`, `/dev`, `/run`, `/tmp`, `/newroot` for the container
/// root) or homes for what `/init` writes (`/etc`, `/root`, `/mnt`); modes
/// follow a stock Debian root.
pub const GUEST_DIRS: &[(&str, u32)] = &[
    ("/dev", 0o755),
    ("/etc", 0o755),
    ("/mnt", 0o755),
    ("/newroot", 0o755),
    ("/proc", 0o555),
    ("/root", 0o700),
    ("/run", 0o755),
    ("/sys", 0o555),
    ("/tmp", 0o1777),
];

/// A device node the guest needs from the first instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceNode {
    /// Where it goes in the guest (`/dev/console`).
    pub path: &'static str,
    /// Its permission bits; it is always a character device.
    pub mode: u32,
    /// The device's major number.
    pub major: u32,
    /// The device's minor number.
    pub minor: u32,
}

/// The kernel opens `/dev/console` for `/init`'s stdin, stdout and stderr
/// before `/init` runs, so it must exist in the initramfs itself; `/dev/null`
/// is there for anything `/init` runs before devtmpfs is mounted.
pub const GUEST_DEVICES: &[DeviceNode] = &[
    DeviceNode {
        path: "/dev/console",
        mode: 0o600,
        major: 5,
        minor: 1,
    },
    DeviceNode {
        path: "/dev/null",
        mode: 0o666,
        major: 1,
        minor: 3,
    },
];

/// Adds [`GUEST_DIRS`] and [`GUEST_DEVICES`] to `archive`.
pub fn add_skeleton(archive: &mut Archive) -> &mut Archive {
    for &(path, mode) in GUEST_DIRS {
        archive.dir(path, mode);
    }
    for node in GUEST_DEVICES {
        archive.char_device(node.path, node.mode, node.major, node.minor);
    }
    archive
}

/// The guest's initramfs: the skeleton, and the host file `init` (the
/// vminitd binary) as `/init`. Add more entries before writing it.
pub fn guest_archive(init: impl AsRef<Path>) -> Archive {
    let mut archive = Archive::new();
    add_skeleton(&mut archive).file_from_path(INIT_PATH, init, INIT_MODE);
    archive
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::newc::{S_IFCHR, S_IFDIR, S_IFREG};
    use crate::testutil::{parse, TempDir};

    #[test]
    fn guest_archive_has_init_the_mount_points_and_the_console() {
        let dir = TempDir::new();
        let init = dir.write("vminitd", b"\x7fELF");
        let mut bytes = Vec::new();
        guest_archive(&init).write_to(&mut bytes).unwrap();
        let members = parse(&bytes);
        let summary: Vec<(&str, u32)> = members.iter().map(|m| (m.name.as_str(), m.header.mode)).collect();
        assert_eq!(
            summary,
            [
                ("dev", S_IFDIR | 0o755),
                ("dev/console", S_IFCHR | 0o600),
                ("dev/null", S_IFCHR | 0o666),
                ("etc", S_IFDIR | 0o755),
                ("init", S_IFREG | 0o755),
                ("mnt", S_IFDIR | 0o755),
                ("newroot", S_IFDIR | 0o755),
                ("proc", S_IFDIR | 0o555),
                ("root", S_IFDIR | 0o700),
                ("run", S_IFDIR | 0o755),
                ("sys", S_IFDIR | 0o555),
                ("tmp", S_IFDIR | 0o1777),
                ("TRAILER!!!", 0),
            ]
        );
        let console = &members[1];
        assert_eq!((console.header.rdev_major, console.header.rdev_minor), (5, 1));
        assert_eq!(members[4].data, b"\x7fELF");
    }
}
