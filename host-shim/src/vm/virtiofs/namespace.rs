//! The daemon's mount namespace, made between fork and exec: a user
//! namespace too where vmshim is not root (the caller is root in it, no
//! one else is mapped), every mount a slave of the host's (nothing made
//! here propagates back), a tmpfs over the share's directory, and each
//! shared path bound into it as `N` (an empty file under a file's bind),
//! read-only with what is below it where the share is. Every string is
//! made before fork ([`NamespacePlan::new`]); the child only makes system
//! calls, and reports the step that failed on a pipe, so that the error
//! names it.

use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{ShareError, SharedPath};

/// Whether a shared path is a directory or a file (bound onto an empty
/// file in the share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Directory,
    File,
}

/// The kind of `path` (followed through links, as the bind follows them).
fn source_kind(path: &Path) -> Result<SourceKind, ShareError> {
    let meta = std::fs::metadata(path).map_err(|source| ShareError::Source {
        path: path.to_owned(),
        source,
    })?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Ok(SourceKind::Directory);
    }
    if ft.is_file() {
        return Ok(SourceKind::File);
    }
    use std::os::unix::fs::FileTypeExt;
    let kind = match () {
        _ if ft.is_socket() => "a socket",
        _ if ft.is_fifo() => "a FIFO",
        _ if ft.is_char_device() => "a character device",
        _ if ft.is_block_device() => "a block device",
        _ => "not a regular file",
    };
    // Device nodes and FIFOs of the host mean nothing in the guest, and
    // virtio-fs cannot carry a socket's connections.
    Err(ShareError::SourceKind {
        path: path.to_owned(),
        kind,
    })
}

/// A pipe whose write end the child reports its failed step on (the write
/// end closes on exec).
pub(super) fn report_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The step the child reported before it failed, if any, named with the
/// share it was about.
pub(super) fn read_report(read: OwnedFd, shares: &[SharedPath], shared: &Path) -> Option<String> {
    let mut file = std::fs::File::from(read);
    let mut buf = [0u8; 8];
    let n = file.read(&mut buf).ok()?;
    if n != buf.len() {
        return None;
    }
    let code = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let index = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    let source = || {
        shares
            .get(index)
            .map(|s| s.source.display().to_string())
            .unwrap_or_default()
    };
    Some(match code {
        CODE_USER_NS => "a user namespace of its own".to_owned(),
        CODE_MOUNT_NS => "a mount namespace of its own".to_owned(),
        CODE_SLAVE => "its mounts made slaves of the host's".to_owned(),
        CODE_TMPFS => format!("a tmpfs on {}", shared.display()),
        CODE_TARGET => format!("the mount point of share {index} ({})", source()),
        CODE_BIND => format!("bind {} as share {index}", source()),
        CODE_READONLY => format!("share {index} ({}) read-only", source()),
        _ => return None,
    })
}

/// What the child does between fork and exec, prepared before fork: every
/// string made, so that the child only makes system calls.
pub(super) struct NamespacePlan {
    /// Unprivileged: a user namespace where the caller is root, too.
    pub(super) user_namespace: bool,
    /// `0 UID 1` and `0 GID 1`: the caller is root in it, and no one else
    /// is mapped.
    uid_map: CString,
    gid_map: CString,
    /// The share's directory.
    shared: CString,
    shares: Vec<PlannedShare>,
}

/// One share, ready for `mount(2)`.
struct PlannedShare {
    source: CString,
    /// `SHARED/N`.
    target: CString,
    kind: SourceKind,
    recursive: bool,
    readonly: bool,
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

impl NamespacePlan {
    /// The plan for `shares` in `shared`; each source checked (there, a
    /// directory or a file) before anything starts.
    pub(super) fn new(shared: &Path, shares: &[SharedPath]) -> Result<NamespacePlan, ShareError> {
        let cstring = |p: &Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| ShareError::Source {
                path: p.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"),
            })
        };
        let mut planned = Vec::with_capacity(shares.len());
        for (i, share) in shares.iter().enumerate() {
            planned.push(PlannedShare {
                source: cstring(&share.source)?,
                target: cstring(&shared.join(i.to_string()))?,
                kind: source_kind(&share.source)?,
                recursive: share.recursive,
                readonly: share.readonly,
            });
        }
        // SAFETY: geteuid and getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Ok(NamespacePlan {
            user_namespace: uid != 0,
            uid_map: CString::new(format!("0 {uid} 1\n")).expect("no NUL in a number"),
            gid_map: CString::new(format!("0 {gid} 1\n")).expect("no NUL in a number"),
            shared: cstring(shared)?,
            shares: planned,
        })
    }

    /// In the forked child: the namespaces, the tmpfs over the share's
    /// directory, and each share bound into it. On failure the step is
    /// written to `report` and the error returned (the spawn fails with it).
    ///
    /// Async-signal-safe: system calls on strings made before fork.
    pub(super) fn enter(&self, report: libc::c_int) -> io::Result<()> {
        let fail = |code: u32, index: u32| {
            let err = io::Error::last_os_error();
            let mut buf = [0u8; 8];
            buf[0..4].copy_from_slice(&code.to_ne_bytes());
            buf[4..8].copy_from_slice(&index.to_ne_bytes());
            // SAFETY: write of a local buffer to the report pipe.
            unsafe { libc::write(report, buf.as_ptr().cast(), buf.len()) };
            err
        };
        let null = std::ptr::null::<libc::c_char>();
        if self.user_namespace {
            // SAFETY: unshare takes flags only.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
                return Err(fail(CODE_USER_NS, 0));
            }
            let maps = [
                (c"/proc/self/setgroups", c"deny\n"),
                (c"/proc/self/uid_map", self.uid_map.as_c_str()),
                (c"/proc/self/gid_map", self.gid_map.as_c_str()),
            ];
            for (file, text) in maps {
                if !write_file(file, text) {
                    return Err(fail(CODE_USER_NS, 0));
                }
            }
        // SAFETY: unshare takes flags only.
        } else if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(fail(CODE_MOUNT_NS, 0));
        }
        // Nothing mounted here propagates to the host; the host's mounts
        // still propagate here.
        // SAFETY: a static path; no source, type or data.
        if unsafe {
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            )
        } != 0
        {
            return Err(fail(CODE_SLAVE, 0));
        }
        let tmpfs_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // SAFETY: NUL-terminated strings made before fork.
        if unsafe {
            libc::mount(
                c"vmshim-shares".as_ptr(),
                self.shared.as_ptr(),
                c"tmpfs".as_ptr(),
                tmpfs_flags,
                c"mode=0700".as_ptr().cast(),
            )
        } != 0
        {
            return Err(fail(CODE_TMPFS, 0));
        }
        for (i, share) in self.shares.iter().enumerate() {
            let i = i as u32;
            let target = share.target.as_ptr();
            let made = match share.kind {
                // SAFETY: a NUL-terminated path made before fork.
                SourceKind::Directory => (unsafe { libc::mkdir(target, 0o700) }) == 0,
                SourceKind::File => {
                    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC;
                    // SAFETY: as above.
                    let fd = unsafe { libc::open(target, flags, 0o600) };
                    // SAFETY: our own descriptor.
                    fd >= 0 && unsafe { libc::close(fd) } == 0
                }
            };
            if !made {
                return Err(fail(CODE_TARGET, i));
            }
            let rec = if share.recursive { libc::MS_REC } else { 0 };
            // SAFETY: NUL-terminated paths made before fork; no type or data.
            if unsafe {
                libc::mount(
                    share.source.as_ptr(),
                    target,
                    null,
                    libc::MS_BIND | rec,
                    std::ptr::null(),
                )
            } != 0
            {
                return Err(fail(CODE_BIND, i));
            }
            if share.readonly && !make_readonly(&share.target, share.recursive) {
                return Err(fail(CODE_READONLY, i));
            }
        }
        Ok(())
    }
}

const CODE_USER_NS: u32 = 1;
const CODE_MOUNT_NS: u32 = 2;
const CODE_SLAVE: u32 = 3;
const CODE_TMPFS: u32 = 4;
const CODE_TARGET: u32 = 5;
const CODE_BIND: u32 = 6;
const CODE_READONLY: u32 = 7;

/// Makes the bind mount at `target` read-only, with what is mounted below
/// it when `recursive` (mount_setattr, Linux 5.12); where that call is
/// missing, the top mount alone, keeping the flags it has (a user
/// namespace may not clear them).
///
/// Async-signal-safe.
fn make_readonly(target: &CStr, recursive: bool) -> bool {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: a NUL-terminated path and a mount_attr of the size given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return true;
    }
    // SAFETY: errno is thread-local.
    if unsafe { *libc::__errno_location() } != libc::ENOSYS {
        return false;
    }
    // SAFETY: a zeroed statvfs is valid output space.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and our statvfs. (glibc's statvfs is
    // statfs(2) and a conversion on any kernel since 2.6.36.)
    if unsafe { libc::statvfs(target.as_ptr(), &mut st) } != 0 {
        return false;
    }
    // statvfs's ST_* flags are the MS_* ones.
    let kept = st.f_flag
        & (libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC
            | libc::MS_NOATIME
            | libc::MS_NODIRATIME
            | libc::MS_RELATIME);
    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | kept;
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: a NUL-terminated path; no source, type or data.
    unsafe { libc::mount(null, target.as_ptr(), null, flags, std::ptr::null()) == 0 }
}

/// Writes `text` to `file`. Async-signal-safe.
fn write_file(file: &CStr, text: &CStr) -> bool {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let bytes = text.to_bytes();
    // SAFETY: our descriptor and a buffer of the length given.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    // SAFETY: our descriptor.
    unsafe { libc::close(fd) };
    n == bytes.len() as isize
}
