//! The root filesystem of the processes the agent runs, mounted at boot.
//!
//! `vminitd.rootfs=DEVICE` names a block device (the host's read-only ext4
//! image). It is mounted read-only under a writable overlay whose upper
//! layer is a tmpfs, at [`GUEST_ROOTFS`]:
//!
//! ```text
//! /run/vminitd/lower    DEVICE, ext4, read-only
//! /run/vminitd/overlay  tmpfs: upper/ and work/
//! /run/vminitd/rootfs   overlay of the two: the processes' /
//! ```
//!
//! The mount runs on a thread of its own while the agent starts to
//! listen; it publishes a [`RootfsStatus`] that the processes and
//! containers which run in the root wait on. A process enters the root in
//! its child (`child::root`); its program is looked up inside it
//! beforehand (`sys::in_root`).

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent_proto::{NetworkConfig, GUEST_ROOTFS};
use tokio::sync::watch;

use super::config::{Mode, VolumeBind};
use super::network::NetworkFiles;
use super::shares;
use crate::process::RootfsStatus;
use crate::sys::timeline;

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

/// The host's share and the shares bound into the root at boot (see
/// `shares.rs`).
#[derive(Debug, Clone, Default)]
pub struct BootShares {
    /// The share's virtio-fs tag; none: no share.
    pub tag: Option<String>,
    /// Shares bound into the root once it is mounted.
    pub volumes: Vec<VolumeBind>,
}

/// Mounts `device` on a thread of its own, so that the agent listens while
/// the block device is read; a process that needs the root waits for it
/// ([`wait_ready`]). The boot's network is brought up first on the same
/// thread (so a process that waits for the root finds it up too), then the
/// host's share is mounted, and its volumes bound into the root last.
pub fn mount_in_background(
    device: PathBuf,
    shares: BootShares,
    files: NetworkFiles,
    network: (Mode, NetworkConfig),
) -> watch::Receiver<RootfsStatus> {
    let (tx, rx) = watch::channel(RootfsStatus::Mounting);
    let mount_all = move || {
        shares
            .tag
            .as_deref()
            .map_or(Ok(()), shares::mount_share)
            .map_err(|e| e.to_string())
            .and_then(|()| mount(&device).map_err(|e| e.to_string()))
            .and_then(|()| {
                // The network files of the boot's settings, before any process runs.
                let boot_settings = files.hostname.is_some() || files.dns.is_some() || !files.hosts.is_empty();
                match boot_settings {
                    true => files.write(Path::new(GUEST_ROOTFS)).map_err(|e| e.to_string()),
                    false => Ok(()),
                }
            })
            .and_then(|()| shares::bind_volumes(&shares.volumes).map_err(|e| e.to_string()))
    };
    let work = move || {
        {
            let _span = timeline::begin(|| "network".into());
            super::network::bring_up(network.0, &network.1);
        }
        let mounted = {
            let _span = timeline::begin(|| "mount root filesystem".into());
            mount_all()
        };
        match mounted {
            Ok(()) => RootfsStatus::Ready {
                at_ns: timeline::boottime_ns(),
            },
            Err(e) => {
                warn!("{e}");
                RootfsStatus::Failed(e)
            }
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

/// Mounts `device` read-only under a tmpfs-backed overlay at [`GUEST_ROOTFS`].
pub fn mount(device: &Path) -> Result<(), RootfsError> {
    let span = timeline::begin(|| format!("wait for {}", device.display()));
    wait_for_device(device)?;
    drop(span);
    for dir in [LOWER, OVERLAY, GUEST_ROOTFS] {
        std::fs::create_dir_all(dir).map_err(|source| RootfsError::Mkdir {
            path: dir.into(),
            source,
        })?;
    }
    let device_str = device.to_string_lossy().into_owned();
    let span = timeline::begin(|| format!("mount {device_str} (ext4, read-only)"));
    sys_mount(&device_str, LOWER, "ext4", libc::MS_RDONLY | libc::MS_NODEV, "").map_err(|source| {
        RootfsError::Mount {
            what: format!("{device_str} (ext4, read-only)"),
            target: LOWER,
            source,
        }
    })?;
    drop(span);
    let span = timeline::begin(|| "mount the overlay and the kernel filesystems".into());
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
    drop(span);
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
