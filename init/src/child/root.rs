//! A plain process's root filesystem, entered in the child between fork
//! and exec: a mount namespace of its own, the root bound onto itself,
//! `/proc`, `/sys` and `/dev` mounted in it, then `pivot_root`. (A
//! container's root is entered by its setup, `setup.rs`.)

use std::ffi::{CStr, CString};

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
