//! Paths looked up inside a root, as a process running there would see
//! them: `openat2` with `RESOLVE_IN_ROOT`, so that `..` and absolute
//! symbolic links stay inside the root and never lead to the agent's own
//! files. Programs, `/etc/passwd` and a container's `/dev/ptmx` are found
//! this way before fork.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_IN_ROOT: u64 = 0x10;

/// Opens `path` as if `root` were `/`: `..` and absolute symbolic links stay
/// inside `root`.
pub fn open_in_root(root: &Path, path: &str) -> io::Result<OwnedFd> {
    let root_c = CString::new(root.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: a NUL-terminated path; the result is checked.
    let dirfd = unsafe { libc::open(root_c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if dirfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dirfd is a descriptor we just opened and now own.
    let dir = unsafe { OwnedFd::from_raw_fd(dirfd) };
    let path_c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT,
    };
    // SAFETY: openat2 with a valid dirfd, path and open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path_c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether `path`, resolved inside `root`, is an executable regular file.
pub fn is_executable_in_root(root: &Path, path: &str) -> bool {
    let Ok(fd) = open_in_root(root, path) else { return false };
    // SAFETY: a zeroed stat is valid output space for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is valid.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_mode & 0o111 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn lookups_resolve_inside_the_root() {
        let root = std::env::temp_dir().join(format!("vminitd-root-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/busybox"), b"#!x").unwrap();
        std::fs::set_permissions(
            root.join("bin/busybox"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        // An absolute link resolves inside the root, not on the host.
        symlink("/bin/busybox", root.join("bin/sh")).unwrap();
        symlink("../../../../../../bin/busybox", root.join("bin/up")).unwrap();
        symlink("/etc/hostname", root.join("bin/escape")).unwrap();
        std::fs::write(root.join("bin/data"), b"x").unwrap();
        match open_in_root(&root, "/bin/sh") {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                eprintln!("openat2 is not available here; skipping");
                return;
            }
            _ => {}
        }
        assert!(is_executable_in_root(&root, "/bin/sh"));
        assert!(is_executable_in_root(&root, "/bin/up"), "'..' stops at the root");
        assert!(
            !is_executable_in_root(&root, "/bin/escape"),
            "no escape to the host's /etc"
        );
        assert!(!is_executable_in_root(&root, "/bin/data"), "not executable");
        assert!(!is_executable_in_root(&root, "/bin/none"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
