//! The process's standard descriptors and arguments, before anything else.
//!
//! vminitd provides its own C `main` (see `main.rs`): the Rust runtime's
//! start-up would abort the process when fds 0-2 are closed and `/dev/null`
//! cannot be opened, which is exactly the situation of an init started from
//! an initramfs without `/dev/console`. Here we do that repair ourselves.

use std::ffi::{c_char, c_int, CStr};

/// Makes sure fds 0, 1 and 2 are open: each closed one gets `/dev/console`
/// (in machine mode, where the kernel normally opens it for init) or else
/// `/dev/null`. Returns whether all three are open afterwards. Nothing is
/// allocated, so it can run before anything else.
pub fn ensure_std_fds(prefer_console: bool) -> bool {
    let mut all_open = true;
    for fd in 0..3 {
        if is_open(fd) {
            continue;
        }
        let opened = (prefer_console && reopen(fd, c"/dev/console")) || reopen(fd, c"/dev/null");
        all_open &= opened;
    }
    all_open
}

fn is_open(fd: c_int) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Opens `path` onto the closed descriptor `fd`.
fn reopen(fd: c_int, path: &CStr) -> bool {
    // SAFETY: `path` is NUL-terminated. O_NOCTTY: the console must not become
    // our controlling terminal. Not O_CLOEXEC: these are the stdio of init.
    let got = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY) };
    if got < 0 {
        return false;
    }
    if got != fd {
        // open() returns the lowest free descriptor, which is `fd` when the
        // lower ones are open; otherwise move it into place.
        // SAFETY: both descriptors are ours; `got` is closed right after.
        unsafe {
            let ok = libc::dup2(got, fd) == fd;
            libc::close(got);
            return ok;
        }
    }
    true
}

/// Marks every inherited descriptor above 2 close-on-exec, so that what the
/// launcher left open (in namespace or process mode) does not reach the
/// processes we start. `close_range` (Linux 5.11+), else one by one from
/// `/proc/self/fd`, where it can be read.
pub fn close_inherited_fds_on_exec() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with the CLOEXEC flag only sets descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<c_int> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only change descriptor flags; a descriptor
        // that was the directory's own (now closed) fails harmlessly.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// The arguments of the C `main`, as strings (lossily decoded).
///
/// # Safety
/// `argv` must point to `argc` valid NUL-terminated strings, as the C
/// start-up code passes them to `main`.
pub unsafe fn args_from_c(argc: c_int, argv: *const *const c_char) -> Vec<String> {
    let mut args = Vec::with_capacity(argc.max(0) as usize);
    if argv.is_null() {
        return args;
    }
    for i in 0..argc.max(0) as usize {
        // SAFETY: the caller guarantees argv[0..argc] are valid pointers.
        let ptr = unsafe { *argv.add(i) };
        if ptr.is_null() {
            break;
        }
        // SAFETY: each argv entry is a NUL-terminated string.
        args.push(unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_fds_are_left_alone() {
        assert!(ensure_std_fds(false));
    }

    #[test]
    fn args_from_c_strings() {
        let a = c"vminitd";
        let b = c"--listen";
        let argv = [a.as_ptr(), b.as_ptr(), std::ptr::null()];
        // SAFETY: argv holds two valid C strings.
        let args = unsafe { args_from_c(2, argv.as_ptr()) };
        assert_eq!(args, ["vminitd", "--listen"]);
    }
}
