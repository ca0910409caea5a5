//! A plain process's root filesystem, entered in the child between fork
//! and exec: a mount namespace of its own, the root bound onto itself,
//! `/proc`, `/sys` and `/dev` mounted in it, then `pivot_root`. (A
//! container's root is entered by its setup, `setup.rs`.)

use std::ffi::{CStr, CString};

/// What the child needs to enter a root, prepared before fork.
pub struct RootPlan {
    pub root: CString,
    /// Mount /proc, /sys and /dev in it (not needed in
    /// [`agent_proto::GUEST_ROOTFS`], which has them already).
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
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(EnterStep::MountNamespace);
    }
    // SAFETY: a static NUL-terminated target; no source, type or data.
    let slave = unsafe {
        libc::mount(
            null,
            c"/".as_ptr(),
            null,
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        )
    };
    if slave != 0 {
        return Err(EnterStep::MountNamespace);
    }
    // SAFETY: `root` is the NUL-terminated path the agent prepared before
    // fork (copied with the rest of its memory).
    let bound = unsafe { libc::mount(root, root, null, libc::MS_BIND | libc::MS_REC, std::ptr::null()) };
    // SAFETY: as above.
    if bound != 0 || unsafe { libc::chdir(root) } != 0 {
        return Err(EnterStep::BindRoot);
    }
    if plan.mount_api {
        // SAFETY: in the forked child, as this function's contract says.
        unsafe { mount_api_filesystems() }?;
    }
    // SAFETY: pivot_root on a static NUL-terminated path.
    if unsafe { libc::syscall(libc::SYS_pivot_root, here.as_ptr(), here.as_ptr()) } == 0 {
        // The old root is stacked under the new one: detach it.
        // SAFETY: umount2 on a static NUL-terminated path.
        if unsafe { libc::umount2(here.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(EnterStep::Pivot);
        }
    // SAFETY: errno is thread-local and readable.
    } else if unsafe { *libc::__errno_location() } == libc::EINVAL {
        // The initramfs's rootfs cannot be pivoted: move the new root
        // over it and chroot, as switch_root does.
        // SAFETY: static NUL-terminated paths; no type or data.
        let moved = unsafe { libc::mount(here.as_ptr(), c"/".as_ptr(), null, libc::MS_MOVE, std::ptr::null()) };
        // SAFETY: chroot on a static NUL-terminated path.
        if moved != 0 || unsafe { libc::chroot(here.as_ptr()) } != 0 {
            return Err(EnterStep::Pivot);
        }
    } else {
        return Err(EnterStep::Pivot);
    }
    // SAFETY: chdir on a static NUL-terminated path.
    if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        return Err(EnterStep::Pivot);
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
    let (proc_, sys, dev) = (c"proc".as_ptr(), c"sys".as_ptr(), c"dev".as_ptr());
    // SAFETY: mkdir on a static NUL-terminated path (it may exist).
    unsafe { libc::mkdir(proc_, 0o555) };
    // SAFETY: mount with static NUL-terminated strings and no data.
    if unsafe { libc::mount(proc_, proc_, proc_, nosuid_nodev_noexec, std::ptr::null()) } != 0 {
        return Err(EnterStep::Proc);
    }
    // SAFETY: mkdir on a static NUL-terminated path (it may exist).
    unsafe { libc::mkdir(sys, 0o555) };
    let ro = nosuid_nodev_noexec | libc::MS_RDONLY;
    // SAFETY: mount with static NUL-terminated strings and no data.
    if unsafe { libc::mount(c"sysfs".as_ptr(), sys, c"sysfs".as_ptr(), ro, std::ptr::null()) } != 0 {
        return Err(EnterStep::Sys);
    }
    // SAFETY: mkdir on a static NUL-terminated path (it may exist).
    unsafe { libc::mkdir(dev, 0o755) };
    // SAFETY: a bind mount of static NUL-terminated paths, no type or data.
    if unsafe {
        libc::mount(
            c"/dev".as_ptr(),
            dev,
            null,
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(EnterStep::Dev);
    }
    Ok(())
}
