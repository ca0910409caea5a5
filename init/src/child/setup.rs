//! The container's filesystem, set up by its forked process before exec, in
//! the order runc does it: propagation, the root bound onto itself, the
//! spec's mounts, the devices, `pivot_root`, the host and domain names, the
//! sysctls, read-only and masked paths, the read-only root.
//!
//! Everything here runs between fork and exec: async-signal-safe system
//! calls on strings prepared by the container engine (`container::plan`),
//! no allocation. Every path from the spec is resolved inside the root
//! with `openat2(RESOLVE_IN_ROOT)` and mounted on through
//! `/proc/self/fd/N`, so a symbolic link in the root filesystem can never
//! point a mount outside of it.

use std::ffi::{c_char, c_ulong, CStr, CString};

use super::sysctl::SysctlPlan;

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// statvfs's relatime flag (the libc crate has it for glibc only).
const ST_RELATIME: libc::c_ulong = 0x1000;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Which step failed; the index says which mount, device or path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStep {
    Propagation,
    BindRoot,
    OpenRoot,
    MountTarget(u32),
    Mount(u32),
    MountRemount(u32),
    MountPropagation(u32),
    Device(u32),
    Symlink(u32),
    Console,
    Pivot,
    MaskPath(u32),
    ReadonlyPath(u32),
    ReadonlyRoot,
    Hostname,
    Domainname,
    Sysctl(u32),
}

impl SetupStep {
    /// The step in the high 16 bits, the index in the low ones: what
    /// travels through the child's status pipe.
    pub fn code(self) -> u32 {
        let (step, index) = match self {
            SetupStep::Propagation => (1, 0),
            SetupStep::BindRoot => (2, 0),
            SetupStep::OpenRoot => (3, 0),
            SetupStep::MountTarget(i) => (4, i),
            SetupStep::Mount(i) => (5, i),
            SetupStep::MountRemount(i) => (6, i),
            SetupStep::MountPropagation(i) => (7, i),
            SetupStep::Device(i) => (8, i),
            SetupStep::Symlink(i) => (9, i),
            SetupStep::Pivot => (10, 0),
            SetupStep::MaskPath(i) => (11, i),
            SetupStep::ReadonlyPath(i) => (12, i),
            SetupStep::ReadonlyRoot => (13, 0),
            SetupStep::Hostname => (14, 0),
            SetupStep::Domainname => (15, 0),
            SetupStep::Sysctl(i) => (16, i),
            SetupStep::Console => (17, 0),
        };
        (step << 16) | (index & 0xffff)
    }

    pub fn from_code(code: u32) -> Option<SetupStep> {
        let i = code & 0xffff;
        Some(match code >> 16 {
            1 => SetupStep::Propagation,
            2 => SetupStep::BindRoot,
            3 => SetupStep::OpenRoot,
            4 => SetupStep::MountTarget(i),
            5 => SetupStep::Mount(i),
            6 => SetupStep::MountRemount(i),
            7 => SetupStep::MountPropagation(i),
            8 => SetupStep::Device(i),
            9 => SetupStep::Symlink(i),
            10 => SetupStep::Pivot,
            11 => SetupStep::MaskPath(i),
            12 => SetupStep::ReadonlyPath(i),
            13 => SetupStep::ReadonlyRoot,
            14 => SetupStep::Hostname,
            15 => SetupStep::Domainname,
            16 => SetupStep::Sysctl(i),
            17 => SetupStep::Console,
            _ => return None,
        })
    }
}

/// What a mount destination must be before mounting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Directory,
    /// A bind mount of a file: an empty file.
    File,
}

/// One of the spec's mounts, ready for `mount(2)`.
#[derive(Debug)]
pub struct MountStep {
    /// Relative to the root, without a leading `/` (empty for the root).
    pub target: CString,
    pub kind: TargetKind,
    pub source: CString,
    pub fstype: CString,
    /// Flags of the first mount (with `MS_BIND` and `MS_REC` for a bind).
    pub flags: c_ulong,
    /// Filesystem data (`mode=755,size=65536k`); empty for none.
    pub data: CString,
    /// A bind mount with other flags is remounted with them
    /// (`MS_REMOUNT | MS_BIND | flags`), as the first bind ignores them.
    pub remount_flags: Option<c_ulong>,
    /// Propagation flags, applied after the mount.
    pub propagation: Option<c_ulong>,
}

/// One device node, inside the root.
#[derive(Debug)]
pub struct DeviceStep {
    /// Relative to the root, without a leading `/`.
    pub path: CString,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`, with the permission bits.
    pub mode: libc::mode_t,
    pub dev: libc::dev_t,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// In a new user namespace `mknod` is refused: bind the agent's node
    /// (this absolute path) instead, as runc does.
    pub bind_from: Option<CString>,
}

/// Everything the child sets up, prepared by the agent.
#[derive(Debug)]
pub struct SetupPlan {
    /// The root, as the agent sees it (absolute).
    pub root: CString,
    /// Bind the root with what is mounted under it (`MS_REC`).
    pub recursive_root: bool,
    /// The propagation of `/` in the new mount namespace.
    pub root_propagation: c_ulong,
    pub mounts: Vec<MountStep>,
    pub devices: Vec<DeviceStep>,
    /// `(target, link)`: symbolic links created in the root's `/dev`
    /// (`link` relative to the root); one that exists is left alone.
    pub symlinks: Vec<(CString, CString)>,
    /// After `pivot_root`, absolute in the container.
    pub masked: Vec<CString>,
    pub readonly: Vec<CString>,
    pub readonly_root: bool,
    /// The process's terminal, by its path in the agent's devpts: bound
    /// onto `/dev/console`, as runc does, where `ttyname` finds it.
    pub console: Option<CString>,
    pub hostname: Option<CString>,
    pub domainname: Option<CString>,
    pub sysctl: SysctlPlan,
}

/// A path buffer on the stack: `/proc/self/fd/N` and path prefixes.
struct PathBuf {
    bytes: [u8; 4096],
    len: usize,
}

impl PathBuf {
    fn new() -> PathBuf {
        PathBuf {
            bytes: [0; 4096],
            len: 0,
        }
    }

    fn push(&mut self, part: &[u8]) -> bool {
        if self.len + part.len() + 1 > self.bytes.len() {
            return false;
        }
        self.bytes[self.len..self.len + part.len()].copy_from_slice(part);
        self.len += part.len();
        self.bytes[self.len] = 0;
        true
    }

    fn push_number(&mut self, mut n: u32) -> bool {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }

    fn as_ptr(&self) -> *const c_char {
        self.bytes.as_ptr().cast()
    }

    fn as_cstr(&self) -> &CStr {
        // SAFETY: `bytes` is NUL-terminated at `len` and has no NUL before
        // it (every part pushed is a piece of a C string, or digits).
        unsafe { CStr::from_bytes_with_nul_unchecked(&self.bytes[..=self.len]) }
    }
}

/// `/proc/self/fd/FD`, to mount on (or from) a descriptor.
fn fd_path(fd: libc::c_int) -> PathBuf {
    let mut path = PathBuf::new();
    path.push(b"/proc/self/fd/");
    path.push_number(fd as u32);
    path
}

/// Opens `path` (relative) inside the root `dirfd` with `flags`.
///
/// # Safety
/// Async-signal-safe; `path` is NUL-terminated.
unsafe fn open_in(dirfd: libc::c_int, path: *const c_char, flags: libc::c_int) -> libc::c_int {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid open_how of the size given.
    unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path,
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        ) as libc::c_int
    }
}

/// Creates `path` (relative, components separated by `/`) inside the root
/// `dirfd`, each component resolved inside the root: directories for all
/// but the last, which becomes `kind`. Returns an `O_PATH` descriptor of it.
///
/// # Safety
/// Async-signal-safe.
unsafe fn make_in_root(dirfd: libc::c_int, path: &CStr, kind: TargetKind) -> libc::c_int {
    let bytes = path.to_bytes();
    if bytes.is_empty() {
        // SAFETY: as the function's.
        return unsafe { open_in(dirfd, c".".as_ptr(), libc::O_PATH) };
    }
    let mut prefix = PathBuf::new();
    let mut start = 0;
    while start <= bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|b| *b == b'/')
            .map_or(bytes.len(), |i| start + i);
        let component = &bytes[start..end];
        let last = end == bytes.len();
        if !component.is_empty() {
            // The parent, resolved inside the root.
            let parent = if prefix.len == 0 {
                // SAFETY: as the function's.
                unsafe { open_in(dirfd, c".".as_ptr(), libc::O_PATH | libc::O_DIRECTORY) }
            } else {
                // SAFETY: as the function's; prefix is NUL-terminated.
                unsafe { open_in(dirfd, prefix.as_ptr(), libc::O_PATH | libc::O_DIRECTORY) }
            };
            if parent < 0 {
                return -1;
            }
            let mut name = PathBuf::new();
            if !name.push(component) {
                close(parent);
                return -1;
            }
            let made = if last && kind == TargetKind::File {
                let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
                // SAFETY: `parent` is our open directory, `name` NUL-terminated.
                let fd = unsafe { libc::openat(parent, name.as_ptr(), flags, 0o644) };
                if fd >= 0 {
                    close(fd);
                }
                // A symbolic link already there is resolved below.
                fd >= 0 || matches!(errno(), libc::EEXIST | libc::ELOOP | libc::EISDIR)
            } else {
                // SAFETY: `parent` is our open directory, `name` NUL-terminated.
                let rc = unsafe { libc::mkdirat(parent, name.as_ptr(), 0o755) };
                rc == 0 || errno() == libc::EEXIST
            };
            close(parent);
            if !made {
                return -1;
            }
        }
        if prefix.len > 0 && !prefix.push(b"/") {
            return -1;
        }
        if !prefix.push(component) {
            return -1;
        }
        start = end + 1;
    }
    // SAFETY: as the function's.
    unsafe { open_in(dirfd, path.as_ptr(), libc::O_PATH) }
}

/// Runs the plan up to `pivot_root`: the root and everything mounted in it.
///
/// # Safety
/// Only in a forked child before exec, in its new mount namespace.
pub unsafe fn mount_tree(plan: &SetupPlan) -> Result<(), SetupStep> {
    // 1. Nothing mounted below propagates back to the agent.
    if !mount(None, c"/", None, plan.root_propagation, None) {
        return Err(SetupStep::Propagation);
    }
    // 2. The root bound onto itself: a mount of its own, to pivot to.
    let recursive = if plan.recursive_root { libc::MS_REC } else { 0 };
    if !mount(Some(&plan.root), &plan.root, None, libc::MS_BIND | recursive, None) {
        return Err(SetupStep::BindRoot);
    }
    // SAFETY: open on a NUL-terminated path the agent prepared.
    let rootfd = unsafe { libc::open(plan.root.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if rootfd < 0 {
        return Err(SetupStep::OpenRoot);
    }
    // SAFETY: in the forked child, `rootfd` the root just opened.
    unsafe { mount_all(rootfd, &plan.mounts) }?;
    // SAFETY: as above.
    unsafe { make_devices(rootfd, &plan.devices) }?;
    // SAFETY: as above.
    unsafe { make_symlinks(rootfd, &plan.symlinks) }?;
    if let Some(terminal) = &plan.console {
        // SAFETY: as above.
        unsafe { bind_console(rootfd, terminal) }?;
    }
    close(rootfd);
    Ok(())
}

/// 3. The spec's mounts, in order, each on its target resolved inside
///    the root `rootfd`.
///
/// # Safety
/// Only in a forked child before exec.
unsafe fn mount_all(rootfd: libc::c_int, mounts: &[MountStep]) -> Result<(), SetupStep> {
    for (i, m) in mounts.iter().enumerate() {
        let i = i as u32;
        // SAFETY: in the forked child (async-signal-safe calls only).
        let target = unsafe { make_in_root(rootfd, &m.target, m.kind) };
        if target < 0 {
            return Err(SetupStep::MountTarget(i));
        }
        let on = fd_path(target);
        let data = (!m.data.is_empty()).then_some(m.data.as_c_str());
        if !mount(Some(&m.source), on.as_cstr(), Some(&m.fstype), m.flags, data) {
            return Err(SetupStep::Mount(i));
        }
        close(target);
        // The mounted filesystem, not the directory under it.
        // SAFETY: in the forked child; the target is NUL-terminated.
        let target = unsafe { open_in(rootfd, m.target.as_ptr(), libc::O_PATH) };
        if target < 0 {
            return Err(SetupStep::MountTarget(i));
        }
        let on = fd_path(target);
        if let Some(flags) = m.remount_flags {
            if !mount(None, on.as_cstr(), None, flags, None) {
                return Err(SetupStep::MountRemount(i));
            }
        }
        if let Some(flags) = m.propagation {
            if !mount(None, on.as_cstr(), None, flags, None) {
                return Err(SetupStep::MountPropagation(i));
            }
        }
        close(target);
    }
    Ok(())
}

/// 4. The device nodes (bound from the agent's in a new user namespace).
///
/// # Safety
/// Only in a forked child before exec.
unsafe fn make_devices(rootfd: libc::c_int, devices: &[DeviceStep]) -> Result<(), SetupStep> {
    for (i, d) in devices.iter().enumerate() {
        let i = i as u32;
        let Some((dir, name)) = split_parent(&d.path) else {
            return Err(SetupStep::Device(i));
        };
        // SAFETY: in the forked child (async-signal-safe calls only).
        let parent = unsafe { make_in_root(rootfd, dir.as_cstr(), TargetKind::Directory) };
        if parent < 0 {
            return Err(SetupStep::Device(i));
        }
        if let Some(from) = &d.bind_from {
            // SAFETY: as above.
            let node = unsafe { make_in_root(rootfd, &d.path, TargetKind::File) };
            if node < 0 {
                return Err(SetupStep::Device(i));
            }
            let on = fd_path(node);
            if !mount(Some(from), on.as_cstr(), None, libc::MS_BIND, None) {
                return Err(SetupStep::Device(i));
            }
            close(node);
        } else {
            let name = name.as_cstr();
            // SAFETY: `parent` is our open directory, `name` NUL-terminated.
            unsafe { libc::unlinkat(parent, name.as_ptr(), 0) };
            // SAFETY: as above.
            let made = unsafe { libc::mknodat(parent, name.as_ptr(), d.mode, d.dev) } == 0
                // SAFETY: as above.
                && unsafe { libc::fchownat(parent, name.as_ptr(), d.uid, d.gid, libc::AT_SYMLINK_NOFOLLOW) } == 0
                // SAFETY: as above.
                && unsafe { libc::fchmodat(parent, name.as_ptr(), d.mode & 0o7777, 0) } == 0;
            if !made {
                return Err(SetupStep::Device(i));
            }
        }
        close(parent);
    }
    Ok(())
}

/// 4b. `/dev`'s symbolic links; one that exists is left alone.
///
/// # Safety
/// Only in a forked child before exec.
unsafe fn make_symlinks(rootfd: libc::c_int, symlinks: &[(CString, CString)]) -> Result<(), SetupStep> {
    for (i, (target, link)) in symlinks.iter().enumerate() {
        let Some((dir, name)) = split_parent(link) else {
            return Err(SetupStep::Symlink(i as u32));
        };
        // SAFETY: in the forked child (async-signal-safe calls only).
        let parent = unsafe { make_in_root(rootfd, dir.as_cstr(), TargetKind::Directory) };
        if parent < 0 {
            return Err(SetupStep::Symlink(i as u32));
        }
        // SAFETY: `parent` is our open directory; both names NUL-terminated.
        if unsafe { libc::symlinkat(target.as_ptr(), parent, name.as_ptr()) } != 0 && errno() != libc::EEXIST {
            return Err(SetupStep::Symlink(i as u32));
        }
        close(parent);
    }
    Ok(())
}

/// 4c. The terminal, from the agent's devpts, as `/dev/console`.
///
/// # Safety
/// Only in a forked child before exec.
unsafe fn bind_console(rootfd: libc::c_int, terminal: &CStr) -> Result<(), SetupStep> {
    // SAFETY: in the forked child (async-signal-safe calls only).
    let target = unsafe { make_in_root(rootfd, c"dev/console", TargetKind::File) };
    if target < 0 {
        return Err(SetupStep::Console);
    }
    let on = fd_path(target);
    if !mount(Some(terminal), on.as_cstr(), None, libc::MS_BIND, None) {
        return Err(SetupStep::Console);
    }
    close(target);
    Ok(())
}

/// Makes the root the process's `/`.
///
/// # Safety
/// Only in a forked child before exec, after [`mount_tree`].
pub unsafe fn pivot(plan: &SetupPlan) -> Result<(), SetupStep> {
    // 5. pivot_root, or (off the initramfs, which cannot be pivoted
    //    away from) move the root onto `/` and chroot, as switch_root.
    // SAFETY: chdir on a NUL-terminated path the agent prepared.
    if unsafe { libc::chdir(plan.root.as_ptr()) } != 0 {
        return Err(SetupStep::Pivot);
    }
    let here = c".";
    // SAFETY: pivot_root on a static NUL-terminated path.
    if unsafe { libc::syscall(libc::SYS_pivot_root, here.as_ptr(), here.as_ptr()) } == 0 {
        // The old root is stacked under the new one: keep it from
        // propagating, then detach it.
        let slave = mount(None, here, None, libc::MS_SLAVE | libc::MS_REC, None);
        // SAFETY: umount2 on a static NUL-terminated path.
        if !slave || unsafe { libc::umount2(here.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(SetupStep::Pivot);
        }
    } else if errno() == libc::EINVAL {
        // SAFETY: chroot on a static NUL-terminated path.
        if !mount(Some(here), c"/", None, libc::MS_MOVE, None) || unsafe { libc::chroot(here.as_ptr()) } != 0 {
            return Err(SetupStep::Pivot);
        }
    } else {
        return Err(SetupStep::Pivot);
    }
    // SAFETY: chdir on a static NUL-terminated path.
    if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return Err(SetupStep::Pivot);
    }
    Ok(())
}

/// The steps after `pivot_root`: names, sysctls, read-only and masked
/// paths, the read-only root.
///
/// # Safety
/// Only in a forked child before exec, after [`pivot`].
pub unsafe fn finish_root(plan: &SetupPlan) -> Result<(), SetupStep> {
    // SAFETY: open on a static NUL-terminated path.
    let rootfd = unsafe { libc::open(c"/".as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if rootfd < 0 {
        return Err(SetupStep::OpenRoot);
    }
    // 6. Names, in the container's uts namespace.
    if let Some(name) = &plan.hostname {
        // SAFETY: a valid pointer and its length.
        if unsafe { libc::sethostname(name.as_ptr(), name.to_bytes().len()) } != 0 {
            return Err(SetupStep::Hostname);
        }
    }
    if let Some(name) = &plan.domainname {
        // SAFETY: a valid pointer and its length.
        if unsafe { libc::setdomainname(name.as_ptr(), name.to_bytes().len()) } != 0 {
            return Err(SetupStep::Domainname);
        }
    }
    // 7. Sysctls, through the container's /proc/sys (before it is
    //    made read-only).
    // SAFETY: in the forked child, in the container's namespaces.
    if let Err(index) = unsafe { plan.sysctl.apply() } {
        return Err(SetupStep::Sysctl(index as u32));
    }
    // SAFETY: in the forked child, `rootfd` the new root just opened.
    unsafe { make_readonly(rootfd, &plan.readonly) }?;
    // SAFETY: as above.
    unsafe { mask(rootfd, &plan.masked) }?;
    close(rootfd);
    // 10. The root read-only, keeping its other flags.
    if plan.readonly_root && !remount_readonly(c"/") {
        return Err(SetupStep::ReadonlyRoot);
    }
    Ok(())
}

/// 8. Read-only paths: bound onto themselves, remounted read-only; a
///    missing path is skipped (as runc).
///
/// # Safety
/// Only in a forked child before exec.
unsafe fn make_readonly(rootfd: libc::c_int, paths: &[CString]) -> Result<(), SetupStep> {
    for (i, path) in paths.iter().enumerate() {
        // SAFETY: in the forked child; `path` is NUL-terminated.
        let fd = unsafe { open_in(rootfd, path.as_ptr(), libc::O_PATH) };
        if fd < 0 {
            if errno() == libc::ENOENT {
                continue;
            }
            return Err(SetupStep::ReadonlyPath(i as u32));
        }
        let on = fd_path(fd);
        if !mount(
            Some(on.as_cstr()),
            on.as_cstr(),
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        ) {
            return Err(SetupStep::ReadonlyPath(i as u32));
        }
        close(fd);
        // SAFETY: as above.
        let fd = unsafe { open_in(rootfd, path.as_ptr(), libc::O_PATH) };
        if fd < 0 {
            return Err(SetupStep::ReadonlyPath(i as u32));
        }
        let on = fd_path(fd);
        if !remount_readonly(on.as_cstr()) {
            return Err(SetupStep::ReadonlyPath(i as u32));
        }
        close(fd);
    }
    Ok(())
}

/// 9. Masked paths: `/dev/null` over a file, an empty read-only tmpfs over
///    a directory; a missing path is skipped (as runc).
///
/// # Safety
/// Only in a forked child before exec.
unsafe fn mask(rootfd: libc::c_int, paths: &[CString]) -> Result<(), SetupStep> {
    for (i, path) in paths.iter().enumerate() {
        // SAFETY: in the forked child; `path` is NUL-terminated.
        let fd = unsafe { open_in(rootfd, path.as_ptr(), libc::O_PATH) };
        if fd < 0 {
            if errno() == libc::ENOENT {
                continue;
            }
            return Err(SetupStep::MaskPath(i as u32));
        }
        // SAFETY: a zeroed stat is valid output space for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open; `st` is valid.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(SetupStep::MaskPath(i as u32));
        }
        let on = fd_path(fd);
        let masked = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            mount(Some(c"tmpfs"), on.as_cstr(), Some(c"tmpfs"), libc::MS_RDONLY, None)
        } else {
            mount(Some(c"/dev/null"), on.as_cstr(), None, libc::MS_BIND, None)
        };
        if !masked {
            return Err(SetupStep::MaskPath(i as u32));
        }
        close(fd);
    }
    Ok(())
}

/// Remounts the mount at `path` read-only, keeping the flags it has
/// (a remount that drops `nosuid` or `nodev` of a locked mount is refused).
/// Async-signal-safe.
fn remount_readonly(path: &CStr) -> bool {
    // SAFETY: a zeroed statvfs is valid output space for statvfs.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut vfs) } != 0 {
        return false;
    }
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (ST_RELATIME, libc::MS_RELATIME),
    ] {
        if vfs.f_flag & st != 0 {
            flags |= ms;
        }
    }
    mount(None, path, None, flags, None)
}

/// mount(2), `None` as a null pointer; whether it succeeded.
/// Async-signal-safe.
fn mount(source: Option<&CStr>, target: &CStr, fstype: Option<&CStr>, flags: c_ulong, data: Option<&CStr>) -> bool {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string borrowed
    // for the call.
    unsafe { libc::mount(ptr(source), target.as_ptr(), ptr(fstype), flags, ptr(data).cast()) == 0 }
}

/// Closes a descriptor this module opened. Async-signal-safe.
fn close(fd: libc::c_int) {
    // SAFETY: `fd` is ours and used no more.
    unsafe { libc::close(fd) };
}

/// The errno the last failed call left. Async-signal-safe.
fn errno() -> libc::c_int {
    // SAFETY: errno is thread-local and readable.
    unsafe { *libc::__errno_location() }
}

/// A path split at its last `/`: the parent (possibly empty) and the name.
struct Parent {
    buf: PathBuf,
}

impl Parent {
    fn as_cstr(&self) -> &CStr {
        self.buf.as_cstr()
    }
}

/// Splits `path` into its parent and a NUL-terminated name.
fn split_parent(path: &CStr) -> Option<(Parent, PathBuf)> {
    let bytes = path.to_bytes();
    let (dir, name) = match bytes.iter().rposition(|b| *b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&bytes[..0], bytes),
    };
    if name.is_empty() {
        return None;
    }
    let mut parent = PathBuf::new();
    let mut leaf = PathBuf::new();
    if !parent.push(dir) || !leaf.push(name) {
        return None;
    }
    Some((Parent { buf: parent }, leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_codes_round_trip() {
        for step in [
            SetupStep::Propagation,
            SetupStep::Mount(7),
            SetupStep::Device(3),
            SetupStep::Sysctl(65535),
            SetupStep::Domainname,
        ] {
            assert_eq!(SetupStep::from_code(step.code()), Some(step));
        }
        assert_eq!(SetupStep::from_code(0), None);
    }

    #[test]
    fn fd_paths_and_splits() {
        let p = fd_path(1234);
        assert_eq!(&p.bytes[..p.len], b"/proc/self/fd/1234");
        assert_eq!(p.bytes[p.len], 0);
        let p = fd_path(0);
        assert_eq!(&p.bytes[..p.len], b"/proc/self/fd/0");
        let (dir, name) = split_parent(c"dev/pts/ptmx").unwrap();
        assert_eq!(dir.as_cstr(), c"dev/pts");
        assert_eq!(&name.bytes[..name.len], b"ptmx");
        let (dir, name) = split_parent(c"null").unwrap();
        assert_eq!(dir.as_cstr(), c"");
        assert_eq!(&name.bytes[..name.len], b"null");
        assert!(split_parent(c"dev/").is_none());
    }

    #[test]
    fn targets_are_made_inside_the_root_even_through_hostile_links() {
        let dir = std::env::temp_dir().join(format!("vminitd-setup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("root");
        let outside = dir.join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // An absolute link to `/`, a `..` link, and a link to a host
        // directory (which dangles inside the root).
        std::os::unix::fs::symlink("/", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("host")).unwrap();
        let root_c = CString::new(root.to_str().unwrap()).unwrap();
        // SAFETY: test; plain syscalls.
        unsafe {
            let rootfd = libc::open(root_c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY);
            assert!(rootfd >= 0);
            for (path, kind) in [
                (c"abs/a/b", TargetKind::Directory),
                (c"up/c", TargetKind::Directory),
                (c"../../x/file", TargetKind::File),
            ] {
                let fd = make_in_root(rootfd, path, kind);
                assert!(fd >= 0, "{path:?}: {}", std::io::Error::last_os_error());
                libc::close(fd);
            }
            assert!(make_in_root(rootfd, c"host/d", TargetKind::Directory) < 0);
            libc::close(rootfd);
        }
        // Everything landed inside the root; nothing outside.
        assert!(root.join("a/b").is_dir() && root.join("c").is_dir());
        assert!(root.join("x/file").is_file());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
