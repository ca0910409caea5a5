//! The host's share of files (virtio-fs), mounted at boot where the kernel
//! command line names one (`vminitd.share=TAG`), and the shares bound into
//! the processes' root filesystem (`vminitd.volume=N,ro|rw,DEST`).
//!
//! ```text
//! /run/vminitd/shares      the share (virtiofs, TAG): N is the Nth host path
//! /run/vminitd/rootfs/DEST bind of /run/vminitd/shares/N (vmshim run -v)
//! ```
//!
//! A VM without the word has no device and mounts nothing. Both steps run
//! on the root filesystem's thread (`rootfs.rs`), the share first, the
//! binds once the root is there, so that every process and container that
//! runs in the root finds them. A container's bind mounts of host paths
//! are its own (`child::setup`), from `/run/vminitd/shares/N`.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use agent_proto::{GUEST_ROOTFS, GUEST_SHARES};

use super::config::VolumeBind;
use crate::sys::in_root::open_in_root;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("cannot create {}: {source}", path.display())]
    Mkdir { path: PathBuf, source: io::Error },
    #[error("cannot mount the host's share (virtiofs, tag {tag:?}) on {GUEST_SHARES}: {source}")]
    MountShare { tag: String, source: io::Error },
    #[error("cannot bind share {index} ({GUEST_SHARES}/{index}) at {destination}: {step}: {source}")]
    Bind {
        index: u32,
        destination: String,
        step: &'static str,
        source: io::Error,
    },
}

/// Mounts the host's share `tag` at [`GUEST_SHARES`].
pub fn mount_share(tag: &str) -> Result<(), ShareError> {
    std::fs::create_dir_all(GUEST_SHARES).map_err(|source| ShareError::Mkdir {
        path: GUEST_SHARES.into(),
        source,
    })?;
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let mount = || -> io::Result<()> {
        let (tag, target) = (c(tag)?, c(GUEST_SHARES)?);
        // SAFETY: NUL-terminated strings alive across the call; no data.
        let rc = unsafe { libc::mount(tag.as_ptr(), target.as_ptr(), c"virtiofs".as_ptr(), 0, std::ptr::null()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    mount().map_err(|source| ShareError::MountShare {
        tag: tag.to_owned(),
        source,
    })
}

/// Binds each of `volumes` from the share into [`GUEST_ROOTFS`], its
/// destination made inside the root (directories, and an empty file for
/// a file), never through a link that leads out of it.
pub fn bind_volumes(volumes: &[VolumeBind]) -> Result<(), ShareError> {
    for volume in volumes {
        bind_volume(Path::new(GUEST_ROOTFS), volume)?;
    }
    Ok(())
}

fn bind_volume(root: &Path, volume: &VolumeBind) -> Result<(), ShareError> {
    let fail = |step: &'static str| {
        move |source: io::Error| ShareError::Bind {
            index: volume.index,
            destination: volume.destination.clone(),
            step,
            source,
        }
    };
    let source = format!("{GUEST_SHARES}/{}", volume.index);
    let is_dir = std::fs::metadata(&source).map_err(fail("look at the share"))?.is_dir();
    make_in_root(root, &volume.destination, is_dir).map_err(fail("make the mount point"))?;
    let target = open_in_root(root, &volume.destination).map_err(fail("open the mount point"))?;
    let on = format!("/proc/self/fd/{}", target.as_raw_fd());
    sys_mount(&source, &on, libc::MS_BIND | libc::MS_REC).map_err(fail("bind"))?;
    drop(target);
    if volume.readonly {
        // The new mount, not the directory under it; read-only with what
        // is mounted below it.
        let target = open_in_root(root, &volume.destination).map_err(fail("open the mount"))?;
        set_readonly(target.as_raw_fd()).map_err(fail("make it read-only"))?;
    }
    Ok(())
}

/// Makes `path` inside `root`: each missing component a directory, the
/// last one a directory or (not `dir`) an empty file; each parent
/// resolved inside the root.
fn make_in_root(root: &Path, path: &str, dir: bool) -> io::Result<()> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let mut prefix = String::from("/");
    for (i, name) in components.iter().enumerate() {
        let parent = open_in_root(root, &prefix)?;
        let last = i + 1 == components.len();
        let cname = CString::new(*name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        if last && !dir {
            let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: our open directory and a NUL-terminated name.
            let fd = unsafe { libc::openat(parent.as_raw_fd(), cname.as_ptr(), flags, 0o644) };
            if fd >= 0 {
                // SAFETY: the descriptor just opened.
                unsafe { libc::close(fd) };
            } else {
                let e = io::Error::last_os_error();
                // A link there is resolved inside the root by the open that follows.
                if !matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ELOOP | libc::EISDIR)) {
                    return Err(e);
                }
            }
        } else {
            // SAFETY: our open directory and a NUL-terminated name.
            if unsafe { libc::mkdirat(parent.as_raw_fd(), cname.as_ptr(), 0o755) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
        }
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        prefix.push_str(name);
    }
    Ok(())
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Makes the mount open at `fd` read-only, with every mount below it.
fn set_readonly(fd: libc::c_int) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: an open descriptor, an empty NUL-terminated path and a
    // mount_attr of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sys_mount(source: &str, target: &str, flags: libc::c_ulong) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (source, target) = (c(source)?, c(target)?);
    // SAFETY: NUL-terminated strings alive across the call; no type or data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vminitd-shares-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn mount_points_are_made_inside_the_root_even_through_links() {
        let outside = scratch("outside");
        let root = scratch("root");
        // Links that would lead out of the root if followed on the host.
        std::os::unix::fs::symlink("/", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        make_in_root(&root, "/etc/data/x", true).unwrap();
        make_in_root(&root, "/up/hosts", false).unwrap();
        make_in_root(&root, "/srv//./file", false).unwrap();
        // Where it points, inside the root, there is nothing: refused.
        assert!(make_in_root(&root, "/out/x", true).is_err());
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "nothing made outside"
        );
        assert!(root.join("data/x").is_dir());
        assert!(root.join("hosts").is_file());
        assert!(root.join("srv/file").is_file());
        // Made again: nothing to do.
        make_in_root(&root, "/srv/file", false).unwrap();
        make_in_root(&root, "/data/x", true).unwrap();
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&outside);
    }
}
