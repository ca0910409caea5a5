//! Helper processes (the VMM, the vsock backend) that must never outlive
//! vmshim: each gets `PR_SET_PDEATHSIG(SIGKILL)` and a process group of its
//! own (so a terminal's ^C reaches vmshim, which decides), and is killed and
//! reaped when its handle is dropped. Their umask is 177: the sockets and
//! files they create (vhost-device-vsock's Unix sockets, QEMU's logs) are
//! their owner's alone, whatever vmshim's caller had.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A child process killed and reaped on drop.
pub struct Supervised {
    name: &'static str,
    child: Child,
    status: Option<ExitStatus>,
}

impl Supervised {
    /// Spawns `cmd` tied to vmshim's life.
    pub fn spawn(name: &'static str, mut cmd: Command) -> io::Result<Supervised> {
        // SAFETY: the closure runs in the child between fork and exec and only
        // makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // vmshim may already be gone (between fork and prctl).
                if libc::getppid() == 1 {
                    libc::_exit(1);
                }
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::umask(0o177);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        Ok(Supervised {
            name,
            child,
            status: None,
        })
    }

    /// Its role (`qemu`, `vhost-device-vsock`).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Its host pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has ended.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Kills the process (if still running) and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.status
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}
