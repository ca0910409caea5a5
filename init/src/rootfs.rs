//! The root filesystem of the processes the agent runs.
//!
//! At boot, `vminitd.rootfs=DEVICE` names a block device (the host's
//! read-only ext4 image). It is mounted read-only under a writable overlay
//! whose upper layer is a tmpfs, at [`GUEST_ROOTFS`]:
//!
//! ```text
//! /run/vminitd/lower    DEVICE, ext4, read-only
//! /run/vminitd/overlay  tmpfs: upper/ and work/
//! /run/vminitd/rootfs   overlay of the two: the processes' /
//! ```
//!
//! A process whose spec names a `root` enters it in the child, between fork
//! and exec (see [`enter`]): a mount namespace of its own, the root bound onto
//! itself, `/proc`, `/sys` and `/dev` mounted in it, then `pivot_root`. The
//! program is looked up inside the root beforehand, with `openat2` and
//! `RESOLVE_IN_ROOT`, so that symbolic links resolve as they will for the
//! process and never out of the root.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_proto::GUEST_ROOTFS;
use tokio::sync::watch;

use crate::network::NetworkFiles;
use crate::timeline;

/// How long the root device may take to appear after the agent starts.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(5);

const LOWER: &str = "/run/vminitd/lower";
const OVERLAY: &str = "/run/vminitd/overlay";

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("root filesystem device {} did not appear within {timeout:?}", device.display())]
    NoDevice { device: PathBuf, timeout: Duration },
    #[error("cannot create {}: {source}", path.display())]
    Mkdir { path: PathBuf, source: io::Error },
    #[error("cannot mount {what} on {target}: {source}")]
    Mount {
        what: String,
        target: &'static str,
        source: io::Error,
    },
}

/// Where the root filesystem stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootfsStatus {
    /// No `vminitd.rootfs=`: processes with a root use whatever it names.
    Unused,
    Mounting,
    /// Mounted; when, on `CLOCK_BOOTTIME`.
    Ready {
        at_ns: u64,
    },
    Failed(String),
}

/// Mounts `device` on a thread of its own, so that the agent listens while
/// the block device is read; a process that needs the root waits for it
/// ([`wait_ready`]).
pub fn mount_in_background(device: PathBuf, files: NetworkFiles) -> watch::Receiver<RootfsStatus> {
    let (tx, rx) = watch::channel(RootfsStatus::Mounting);
    let work = move || match mount(&device).map_err(|e| e.to_string()).and_then(|()| {
        // The network files of the boot's settings, before any process runs.
        let boot_settings = files.hostname.is_some() || files.dns.is_some() || !files.hosts.is_empty();
        match boot_settings {
            true => files.write(Path::new(GUEST_ROOTFS)).map_err(|e| e.to_string()),
            false => Ok(()),
        }
    }) {
        Ok(()) => RootfsStatus::Ready {
            at_ns: timeline::boottime_ns(),
        },
        Err(e) => {
            warn!("{e}");
            RootfsStatus::Failed(e)
        }
    };
    let spawned = std::thread::Builder::new().name("rootfs".into()).spawn({
        let tx = tx.clone();
        let work = work.clone();
        move || {
            tx.send_replace(work());
        }
    });
    if spawned.is_err() {
        tx.send_replace(work());
    }
    rx
}

/// Waits until the root filesystem is mounted; its error if it failed.
pub async fn wait_ready(status: &watch::Receiver<RootfsStatus>) -> Result<(), String> {
    let mut status = status.clone();
    let settled = status.wait_for(|s| *s != RootfsStatus::Mounting).await;
    match settled.as_deref() {
        Ok(RootfsStatus::Failed(e)) => Err(e.clone()),
        Ok(_) => Ok(()),
        Err(_) => Err("the root filesystem mount was abandoned".into()),
    }
}

/// Mounts `device` read-only under a tmpfs-backed overlay at [`GUEST_ROOTFS`].
pub fn mount(device: &Path) -> Result<(), RootfsError> {
    wait_for_device(device)?;
    for dir in [LOWER, OVERLAY, GUEST_ROOTFS] {
        std::fs::create_dir_all(dir).map_err(|source| RootfsError::Mkdir {
            path: dir.into(),
            source,
        })?;
    }
    let device_str = device.to_string_lossy().into_owned();
    sys_mount(&device_str, LOWER, "ext4", libc::MS_RDONLY | libc::MS_NODEV, "").map_err(|source| {
        RootfsError::Mount {
            what: format!("{device_str} (ext4, read-only)"),
            target: LOWER,
            source,
        }
    })?;
    sys_mount("overlay-rw", OVERLAY, "tmpfs", libc::MS_NODEV, "mode=0755").map_err(|source| RootfsError::Mount {
        what: "tmpfs".into(),
        target: OVERLAY,
        source,
    })?;
    for dir in ["upper", "work"] {
        let path = Path::new(OVERLAY).join(dir);
        std::fs::create_dir(&path).map_err(|source| RootfsError::Mkdir { path, source })?;
    }
    let options = format!("lowerdir={LOWER},upperdir={OVERLAY}/upper,workdir={OVERLAY}/work");
    sys_mount("overlay", GUEST_ROOTFS, "overlay", 0, &options).map_err(|source| RootfsError::Mount {
        what: format!("overlay ({options})"),
        target: GUEST_ROOTFS,
        source,
    })?;
    // The kernel filesystems of the root, mounted once here: each process's
    // mount namespace gets them with the recursive bind of the root.
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let api = [
        ("proc", "proc", "proc", nosuid_nodev_noexec),
        ("sysfs", "sys", "sysfs", nosuid_nodev_noexec | libc::MS_RDONLY),
        ("/dev", "dev", "", libc::MS_BIND | libc::MS_REC),
    ];
    for (source, dir, fstype, flags) in api {
        let target = format!("{GUEST_ROOTFS}/{dir}");
        match std::fs::create_dir(&target) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(RootfsError::Mkdir {
                    path: target.into(),
                    source: e,
                })
            }
            _ => {}
        }
        sys_mount(source, &target, fstype, flags, "").map_err(|e| RootfsError::Mount {
            what: format!("{source} on /{dir} of the root"),
            target: GUEST_ROOTFS,
            source: e,
        })?;
    }
    Ok(())
}

/// Block devices are probed by the kernel before /init runs; still, give a
/// late one a moment rather than fail the boot.
fn wait_for_device(device: &Path) -> Result<(), RootfsError> {
    let deadline = Instant::now() + DEVICE_TIMEOUT;
    while !device.exists() {
        if Instant::now() >= deadline {
            return Err(RootfsError::NoDevice {
                device: device.to_owned(),
                timeout: DEVICE_TIMEOUT,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn sys_mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let c = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (source, target, fstype, data) = (c(source)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: all four are NUL-terminated strings alive across the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

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

/// What the child needs to enter a root, prepared before fork.
pub struct RootPlan {
    pub root: CString,
    /// Mount /proc, /sys and /dev in it (not needed in [`GUEST_ROOTFS`],
    /// which has them already).
    pub mount_api: bool,
}

/// Which part of entering the root failed in the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnterStep {
    MountNamespace,
    BindRoot,
    Proc,
    Sys,
    Dev,
    Pivot,
}

/// Enters `plan.root` in a freshly forked child: a new mount namespace whose
/// mounts do not propagate back, the root bound onto itself (recursively),
/// `/proc`, `/sys` (read-only) and `/dev` (the guest's, bound) in it unless
/// it has them already, then
/// `pivot_root` and the old root detached. Where `/` is the initramfs (which
/// cannot be pivoted away from), the root is moved onto `/` and chrooted
/// into instead.
///
/// # Safety
/// Only in a forked child before exec: async-signal-safe calls only.
pub unsafe fn enter(plan: &RootPlan) -> Result<(), EnterStep> {
    let null = std::ptr::null::<libc::c_char>();
    let root = plan.root.as_ptr();
    let here: &CStr = c".";
    // SAFETY (whole body): system calls on NUL-terminated static or
    // pre-built strings; no allocation.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(EnterStep::MountNamespace);
        }
        if libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
        {
            return Err(EnterStep::MountNamespace);
        }
        if libc::mount(root, root, null, libc::MS_BIND | libc::MS_REC, std::ptr::null()) != 0 || libc::chdir(root) != 0
        {
            return Err(EnterStep::BindRoot);
        }
        if plan.mount_api {
            mount_api_filesystems()?;
        }
        if libc::syscall(libc::SYS_pivot_root, here.as_ptr(), here.as_ptr()) == 0 {
            // The old root is stacked under the new one: detach it.
            if libc::umount2(here.as_ptr(), libc::MNT_DETACH) != 0 {
                return Err(EnterStep::Pivot);
            }
        } else if *libc::__errno_location() == libc::EINVAL {
            // The initramfs's rootfs cannot be pivoted: move the new root
            // over it and chroot, as switch_root does.
            if libc::mount(here.as_ptr(), c"/".as_ptr(), null, libc::MS_MOVE, std::ptr::null()) != 0
                || libc::chroot(here.as_ptr()) != 0
            {
                return Err(EnterStep::Pivot);
            }
        } else {
            return Err(EnterStep::Pivot);
        }
        if libc::chdir(c"/".as_ptr()) != 0 {
            return Err(EnterStep::Pivot);
        }
    }
    Ok(())
}

/// `/proc`, `/sys` (read-only) and the guest's `/dev` in the current
/// directory, the root being entered.
///
/// # Safety
/// As [`enter`].
unsafe fn mount_api_filesystems() -> Result<(), EnterStep> {
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: system calls on static NUL-terminated strings.
    unsafe {
        libc::mkdir(c"proc".as_ptr(), 0o555);
        let (proc_, sys, dev) = (c"proc".as_ptr(), c"sys".as_ptr(), c"dev".as_ptr());
        if libc::mount(proc_, proc_, proc_, nosuid_nodev_noexec, std::ptr::null()) != 0 {
            return Err(EnterStep::Proc);
        }
        libc::mkdir(sys, 0o555);
        let ro = nosuid_nodev_noexec | libc::MS_RDONLY;
        if libc::mount(c"sysfs".as_ptr(), sys, c"sysfs".as_ptr(), ro, std::ptr::null()) != 0 {
            return Err(EnterStep::Sys);
        }
        libc::mkdir(dev, 0o755);
        if libc::mount(
            c"/dev".as_ptr(),
            dev,
            null,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            return Err(EnterStep::Dev);
        }
    }
    Ok(())
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
