//! The end of vminitd, planned or not.
//!
//! PID 1 must never exit or panic by accident: the kernel panics when init
//! exits. A fatal error is written to the console, then a machine is
//! synced and powered off (the configured `vminitd.halt` action), and
//! anywhere else the process exits with a status.

use std::fmt::Display;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use super::config::{Halt, Mode};

static MODE: AtomicU8 = AtomicU8::new(MODE_PROCESS);
static HALT: AtomicU8 = AtomicU8::new(HALT_REBOOT);
static SOCKET: Mutex<Option<PathBuf>> = Mutex::new(None);

const MODE_MACHINE: u8 = 0;
const MODE_NAMESPACE: u8 = 1;
const MODE_PROCESS: u8 = 2;
const HALT_REBOOT: u8 = 0;
const HALT_POWEROFF: u8 = 1;

/// Records the mode, which decides what "the end" means.
pub fn set_mode(mode: Mode) {
    let v = match mode {
        Mode::Machine => MODE_MACHINE,
        Mode::Namespace => MODE_NAMESPACE,
        Mode::Process => MODE_PROCESS,
    };
    MODE.store(v, Ordering::SeqCst);
}

/// Records how a machine ends (`vminitd.halt`).
pub fn set_halt(halt: Halt) {
    let v = match halt {
        Halt::Reboot => HALT_REBOOT,
        Halt::PowerOff => HALT_POWEROFF,
    };
    HALT.store(v, Ordering::SeqCst);
}

/// Records the Unix socket file to remove when vminitd ends.
pub fn set_socket_path(path: Option<PathBuf>) {
    if let Ok(mut slot) = SOCKET.lock() {
        *slot = path;
    }
}

fn is_machine() -> bool {
    MODE.load(Ordering::SeqCst) == MODE_MACHINE
}

/// Installs the panic hook: the message goes to stderr (the console), then
/// the machine is powered off or the process exits with status 1. Never
/// returns to the unwinder, so a panic in any task ends vminitd cleanly.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        crate::sys::log::write_line(format_args!("fatal: {info}"));
        end(1);
    }));
}

/// Logs `vminitd: fatal: <error>` and ends vminitd with status 1.
pub fn die(error: &dyn Display) -> ! {
    crate::sys::log::write_line(format_args!("fatal: {error}"));
    end(1)
}

/// Ends vminitd: a machine is synced and powered off; otherwise the socket
/// file is removed and the process exits with `code`.
pub fn end(code: i32) -> ! {
    remove_socket();
    if is_machine() {
        power_off();
    }
    std::process::exit(code)
}

/// Removes the listening socket's file, if there is one.
pub fn remove_socket() {
    // try_lock: this can run from the panic hook while the lock is held.
    if let Ok(mut slot) = SOCKET.try_lock() {
        if let Some(path) = slot.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Syncs the disks and ends the machine with the configured halt action
/// (named "power off" in the logs whatever it is). Falls back to the other
/// action, and as a last resort exits, which the kernel turns into a panic
/// that the VMM sees.
pub fn power_off() -> ! {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    let first = match HALT.load(Ordering::SeqCst) {
        HALT_POWEROFF => libc::RB_POWER_OFF,
        _ => libc::RB_AUTOBOOT,
    };
    let second = if first == libc::RB_POWER_OFF {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    crate::sys::log::write_line(format_args!("power off"));
    for cmd in [first, second] {
        // SAFETY: reboot with a valid command; it only returns on failure.
        unsafe { libc::reboot(cmd) };
        let err = std::io::Error::last_os_error();
        crate::sys::log::write_line(format_args!("warning: power off failed: {err}"));
    }
    std::process::exit(1)
}
