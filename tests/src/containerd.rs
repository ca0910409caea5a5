//! A containerd of a test's own: the daemon started on a configuration the
//! test wrote (its root, state and sockets in the test's scratch
//! directory), with the built `containerd-shim-vminitd-v2` first on its
//! `PATH`, as an installed shim is found; its log kept beside the
//! configuration; stopped with SIGTERM, then SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::binary;

/// The containerd process, until stopped.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// `containerd --config CONFIG`, its output to `log`, the built shim's
    /// directory first on its `PATH`.
    pub fn start(config: &Path, log: &Path) -> Daemon {
        // containerd finds `containerd-shim-vminitd-v2` on its PATH, as it
        // finds runc's shim: the built binary's directory first.
        let shim = binary("containerd-shim-vminitd-v2", "VMINITD_SHIM_BIN");
        let mut paths = vec![shim.parent().expect("the shim's directory").to_path_buf()];
        paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
        let file = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = Command::new("containerd")
            .arg("--config")
            .arg(config)
            .env("PATH", std::env::join_paths(paths).unwrap())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start containerd (scripts/setup.sh installs it)");
        Daemon {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// Its pid, while it is not stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is stopped (by [`Daemon::stop`]).
    pub fn is_stopped(&self) -> bool {
        self.child.is_none()
    }

    /// How it exited, where it did on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Its log, whole.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log, for a failed assertion's message.
    pub fn tail_of_log(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, and SIGKILL after 20 s; waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
