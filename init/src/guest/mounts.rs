//! The filesystems a Linux userland expects, mounted where they are missing.
//!
//! "Missing" means: the target is not a mount point, and it is an empty
//! directory or does not exist (it is then created). That rule never hides
//! anything: in a VM's initramfs these directories are empty, and on a host
//! (namespace mode) `/tmp` and `/run` are full or already mounted and are
//! left alone. One refinement: `/dev` whose entries are all device nodes
//! (an initramfs ships `/dev/console` so that the kernel can open it for
//! init) also counts as empty, since devtmpfs provides those nodes itself.
//!
//! `/proc` comes first, on its own ([`Mounts::mount_proc`]), because the
//! kernel command line and the mount table are read from it.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::config::Mode;
use crate::sys::procfs;

/// One filesystem to mount.
#[derive(Debug, Clone, Copy)]
pub struct MountSpec {
    pub target: &'static str,
    pub fstype: &'static str,
    pub source: &'static str,
    pub flags: libc::c_ulong,
    pub data: &'static str,
    /// A directory holding only device nodes counts as empty (devtmpfs).
    pub covers_device_nodes: bool,
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

pub const PROC: MountSpec = MountSpec {
    target: "/proc",
    fstype: "proc",
    source: "proc",
    flags: NOSUID_NODEV_NOEXEC,
    data: "",
    covers_device_nodes: false,
};

/// Everything after `/proc`, in mount order (parents before children).
pub const OTHERS: [MountSpec; 7] = [
    MountSpec {
        target: "/sys",
        fstype: "sysfs",
        source: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        covers_device_nodes: false,
    },
    MountSpec {
        target: "/dev",
        fstype: "devtmpfs",
        source: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
        covers_device_nodes: true,
    },
    MountSpec {
        target: "/dev/pts",
        fstype: "devpts",
        source: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "newinstance,ptmxmode=0666,mode=0620,gid=5",
        covers_device_nodes: false,
    },
    MountSpec {
        target: "/dev/shm",
        fstype: "tmpfs",
        source: "shm",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
        covers_device_nodes: false,
    },
    MountSpec {
        target: "/run",
        fstype: "tmpfs",
        source: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=0755",
        covers_device_nodes: false,
    },
    MountSpec {
        target: "/tmp",
        fstype: "tmpfs",
        source: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: "mode=1777",
        covers_device_nodes: false,
    },
    MountSpec {
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        source: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
        covers_device_nodes: false,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot inspect mount point {target}: {source}")]
    Inspect { target: PathBuf, source: io::Error },
    #[error("cannot create mount point {target}: {source}")]
    CreateDir { target: PathBuf, source: io::Error },
    #[error("cannot mount {fstype} on {target}: {source}")]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        source: io::Error,
    },
    #[error("{target} is not empty and has no {fstype} mounted")]
    Unusable { fstype: &'static str, target: PathBuf },
    #[error("cannot make the mounts of / slaves (so that nothing mounted here reaches the host): {source}")]
    MakeSlave { source: io::Error },
    #[error("cannot create {link}: {source}")]
    Symlink { link: PathBuf, source: io::Error },
    #[error("cannot unmount {target}: {source}")]
    Unmount { target: PathBuf, source: io::Error },
}

/// What is at a mount target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirState {
    Absent,
    Empty,
    /// A directory whose entries are all character or block devices.
    OnlyDeviceNodes,
    NotEmpty,
    NotADirectory,
}

/// What to do with a mount target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Mount { create: bool },
    Skip(Skip),
}

/// Why a target is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    MountPoint,
    NotEmpty,
    NotADirectory,
}

impl Skip {
    fn describe(self) -> &'static str {
        match self {
            Skip::MountPoint => "already a mount point",
            Skip::NotEmpty => "not empty",
            Skip::NotADirectory => "not a directory",
        }
    }
}

/// The "missing" rule.
pub fn decide(is_mount_point: bool, state: DirState, covers_device_nodes: bool) -> Decision {
    if is_mount_point {
        return Decision::Skip(Skip::MountPoint);
    }
    match state {
        DirState::Absent => Decision::Mount { create: true },
        DirState::Empty => Decision::Mount { create: false },
        DirState::OnlyDeviceNodes if covers_device_nodes => Decision::Mount { create: false },
        DirState::OnlyDeviceNodes | DirState::NotEmpty => Decision::Skip(Skip::NotEmpty),
        DirState::NotADirectory => Decision::Skip(Skip::NotADirectory),
    }
}

/// Looks at a mount target. A symlink counts as "not a directory": mounting
/// through it could land anywhere.
pub fn dir_state(target: &Path) -> io::Result<DirState> {
    let meta = match std::fs::symlink_metadata(target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DirState::Absent),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Ok(DirState::NotADirectory);
    }
    let mut state = DirState::Empty;
    for entry in std::fs::read_dir(target)? {
        let file_type = entry?.file_type()?;
        if file_type.is_char_device() || file_type.is_block_device() {
            state = DirState::OnlyDeviceNodes;
        } else {
            return Ok(DirState::NotEmpty);
        }
    }
    Ok(state)
}

/// Whether `target` is a mount point: from our mount table when `/proc` is
/// up, else by comparing its device with its parent's.
pub fn is_mount_point(target: &Path) -> bool {
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => procfs::mountinfo_mount_points(&text).iter().any(|p| p == target),
        Err(_) => differs_from_parent(target),
    }
}

/// `st_dev` of `target` differs from its parent's (or it is `/`).
pub fn differs_from_parent(target: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(target) else {
        return false;
    };
    let parent = target.parent().unwrap_or(Path::new("/"));
    match std::fs::metadata(parent) {
        Ok(parent_meta) => parent_meta.dev() != meta.dev() || parent_meta.ino() == meta.ino(),
        Err(_) => false,
    }
}

/// Whose `/proc` is mounted, as seen from PID 1 of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcOwner {
    /// No proc at /proc.
    Absent,
    /// A proc of our PID namespace (`/proc/self` is our pid).
    Ours,
    /// A proc of another PID namespace, and whether our mount namespace is
    /// our own (`None`: could not tell).
    Foreign { own_mount_ns: Option<bool> },
}

fn proc_owner(our_pid: i32) -> ProcOwner {
    let Ok(link) = std::fs::read_link("/proc/self") else {
        return ProcOwner::Absent;
    };
    let Some(link) = link.to_str() else {
        return ProcOwner::Foreign { own_mount_ns: None };
    };
    if link == our_pid.to_string() {
        return ProcOwner::Ours;
    }
    ProcOwner::Foreign {
        own_mount_ns: link.parse().ok().and_then(own_mount_namespace),
    }
}

/// Whether our mount namespace is our own rather than the host's, looking
/// through a foreign proc in which we are `pid_outside`. First against that
/// namespace's init (`/proc/1`). Where a sandbox hides it, against the
/// program that started us and its parent: `unshare --mount --pid --fork`
/// moves itself into the new mount namespace, so its parent is the one
/// left outside; a launcher that clones with CLONE_NEWNS is itself outside.
/// Only these two are asked: further up, a different mount namespace may
/// be a container's, shared with the host we must not touch.
fn own_mount_namespace(pid_outside: i32) -> Option<bool> {
    let ours = procfs::namespace_id("/proc/self/ns/mnt")?;
    if let Some(init) = procfs::namespace_id("/proc/1/ns/mnt") {
        return Some(init != ours);
    }
    let launcher = procfs::parent_of(pid_outside).filter(|p| *p > 0)?;
    let launchers_parent = procfs::parent_of(launcher).filter(|p| *p > 0);
    let mut all_same = true;
    for pid in std::iter::once(launcher).chain(launchers_parent) {
        match procfs::namespace_id(&format!("/proc/{pid}/ns/mnt")) {
            Some(theirs) if theirs != ours => return Some(true),
            Some(_) => {}
            None => all_same = false,
        }
    }
    all_same.then_some(false)
}

/// What vminitd mounted, to unmount at shutdown.
pub struct Mounts {
    mode: Mode,
    mounted: Vec<PathBuf>,
    /// False when sharing the host's mount namespace: then nothing is mounted.
    allowed: bool,
    /// In namespace mode, with a mount namespace of our own: make the mounts
    /// of / slaves before the first mount, so nothing propagates to the host.
    make_slave_first: bool,
}

impl Mounts {
    pub fn new(mode: Mode) -> Mounts {
        Mounts {
            mode,
            mounted: Vec::new(),
            allowed: mode.is_pid1(),
            make_slave_first: false,
        }
    }

    /// Mounts `/proc`. In machine mode a failure is fatal (the caller's
    /// decision); in namespace mode a foreign proc is replaced only inside a
    /// mount namespace of our own, never the host's.
    pub fn mount_proc(&mut self) -> Result<(), MountError> {
        match self.mode {
            Mode::Process => Ok(()),
            Mode::Machine => {
                self.mount_missing(&PROC)?;
                if std::fs::symlink_metadata("/proc/self").is_err() {
                    return Err(MountError::Unusable {
                        fstype: "proc",
                        target: PROC.target.into(),
                    });
                }
                Ok(())
            }
            Mode::Namespace => {
                match proc_owner(std::process::id() as i32) {
                    ProcOwner::Ours => self.make_slave_first = true,
                    ProcOwner::Absent => {
                        if let Err(e) = self.mount_missing(&PROC) {
                            warn!("{e}");
                        }
                    }
                    ProcOwner::Foreign {
                        own_mount_ns: Some(true),
                    } => {
                        self.make_slave_first = true;
                        debug!("/proc belongs to another PID namespace: mounting a fresh proc over it");
                        if let Err(e) = self.mount(&PROC) {
                            warn!("{e}");
                        }
                    }
                    ProcOwner::Foreign { own_mount_ns } => {
                        let why = match own_mount_ns {
                            Some(_) => "this is the host's mount namespace",
                            None => "cannot tell whether this is the host's mount namespace",
                        };
                        warn!("/proc belongs to another PID namespace and {why}: leaving /proc alone and mounting nothing (run under unshare --mount)");
                        self.allowed = false;
                    }
                }
                Ok(())
            }
        }
    }

    /// Mounts everything after `/proc` that is missing. Failures are logged
    /// as warnings and the rest goes on.
    pub fn mount_rest(&mut self) {
        if !self.allowed {
            return;
        }
        for spec in &OTHERS {
            match self.mount_missing(spec) {
                Ok(true) if spec.fstype == "devpts" => {
                    if let Err(e) = ensure_ptmx() {
                        warn!("{e}");
                    }
                }
                Ok(_) => {}
                Err(e) => warn!("{e}"),
            }
        }
    }

    /// Mounts `spec` if its target is missing; returns whether it mounted.
    fn mount_missing(&mut self, spec: &MountSpec) -> Result<bool, MountError> {
        let target = Path::new(spec.target);
        let state = dir_state(target).map_err(|source| MountError::Inspect {
            target: target.into(),
            source,
        })?;
        match decide(is_mount_point(target), state, spec.covers_device_nodes) {
            Decision::Skip(why) => {
                debug!("not mounting {} on {}: {}", spec.fstype, spec.target, why.describe());
                Ok(false)
            }
            Decision::Mount { create } => {
                if create {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(target)
                        .map_err(|source| MountError::CreateDir {
                            target: target.into(),
                            source,
                        })?;
                }
                self.mount(spec)?;
                Ok(true)
            }
        }
    }

    fn mount(&mut self, spec: &MountSpec) -> Result<(), MountError> {
        if std::mem::take(&mut self.make_slave_first) {
            sys_mount(None, "/", None, libc::MS_REC | libc::MS_SLAVE, None)
                .map_err(|source| MountError::MakeSlave { source })?;
        }
        sys_mount(
            Some(spec.source),
            spec.target,
            Some(spec.fstype),
            spec.flags,
            Some(spec.data),
        )
        .map_err(|source| MountError::Mount {
            fstype: spec.fstype,
            target: spec.target.into(),
            source,
        })?;
        debug!("mounted {} on {}", spec.fstype, spec.target);
        self.mounted.push(spec.target.into());
        Ok(())
    }

    /// Unmounts what vminitd mounted, in reverse order (lazily: a busy
    /// filesystem is detached and goes away when its last user does).
    pub fn unmount_all(&mut self) {
        while let Some(target) = self.mounted.pop() {
            if let Err(e) = sys_umount_detach(&target) {
                warn!("{}", MountError::Unmount { target, source: e });
            }
        }
    }
}

/// With a new devpts instance, `/dev/ptmx` must lead to it: devtmpfs's
/// `/dev/ptmx` node does (the kernel looks up `pts` beside it); where there
/// is none, a symlink to `pts/ptmx` is made.
fn ensure_ptmx() -> Result<(), MountError> {
    let link = Path::new("/dev/ptmx");
    match std::fs::symlink_metadata(link) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::os::unix::fs::symlink("pts/ptmx", link).map_err(|source| MountError::Symlink {
                link: link.into(),
                source,
            })
        }
        _ => Ok(()),
    }
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn sys_mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstring).transpose()?;
    let target = cstring(target)?;
    let fstype = fstype.map(cstring).transpose()?;
    let data = data.filter(|d| !d.is_empty()).map(cstring).transpose()?;
    let ptr = |s: &Option<CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string that lives
    // until the call returns; `data` is a string, as these filesystems expect.
    let rc = unsafe { libc::mount(ptr(&source), target.as_ptr(), ptr(&fstype), flags, ptr(&data).cast()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sys_umount_detach(target: &Path) -> io::Result<()> {
    let target =
        CString::new(target.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `target` is a NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vminitd-mounts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_missing_rule() {
        assert_eq!(decide(false, DirState::Absent, false), Decision::Mount { create: true });
        assert_eq!(decide(false, DirState::Empty, false), Decision::Mount { create: false });
        assert_eq!(decide(false, DirState::NotEmpty, false), Decision::Skip(Skip::NotEmpty));
        assert_eq!(
            decide(false, DirState::NotADirectory, false),
            Decision::Skip(Skip::NotADirectory)
        );
        assert_eq!(decide(true, DirState::Empty, false), Decision::Skip(Skip::MountPoint));
        assert_eq!(decide(true, DirState::Absent, true), Decision::Skip(Skip::MountPoint));
        // Only devtmpfs covers an initramfs's /dev/console.
        assert_eq!(
            decide(false, DirState::OnlyDeviceNodes, true),
            Decision::Mount { create: false }
        );
        assert_eq!(
            decide(false, DirState::OnlyDeviceNodes, false),
            Decision::Skip(Skip::NotEmpty)
        );
    }

    #[test]
    fn dir_state_on_a_temp_dir() {
        let root = temp_dir("state");
        assert_eq!(dir_state(&root.join("nope")).unwrap(), DirState::Absent);
        let empty = root.join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert_eq!(dir_state(&empty).unwrap(), DirState::Empty);
        let full = root.join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("socket-lives-here"), b"x").unwrap();
        assert_eq!(dir_state(&full).unwrap(), DirState::NotEmpty);
        let file = root.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(dir_state(&file).unwrap(), DirState::NotADirectory);
        let link = root.join("link");
        std::os::unix::fs::symlink(&empty, &link).unwrap();
        assert_eq!(dir_state(&link).unwrap(), DirState::NotADirectory);
        // A directory of device nodes, where we may make one (root).
        let dev = root.join("dev");
        std::fs::create_dir(&dev).unwrap();
        let node = CString::new(dev.join("null").as_os_str().as_bytes()).unwrap();
        // SAFETY: `node` is a NUL-terminated path in our temp dir.
        let made = unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) } == 0;
        if made {
            assert_eq!(dir_state(&dev).unwrap(), DirState::OnlyDeviceNodes);
            std::fs::write(dev.join("other"), b"x").unwrap();
            assert_eq!(dir_state(&dev).unwrap(), DirState::NotEmpty);
        }
        // Nothing in the temp dir is a mount point.
        assert!(!differs_from_parent(&empty));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn specs_are_ordered_parents_first() {
        let all: Vec<&str> = std::iter::once(PROC.target)
            .chain(OTHERS.iter().map(|s| s.target))
            .collect();
        for (i, t) in all.iter().enumerate() {
            for later in &all[i + 1..] {
                assert!(
                    !t.starts_with(&format!("{later}/")),
                    "{t} is mounted before its parent {later}"
                );
            }
        }
        let pts = OTHERS.iter().find(|s| s.target == "/dev/pts").unwrap();
        assert!(pts.data.contains("newinstance") && pts.data.contains("ptmxmode=0666"));
    }
}
