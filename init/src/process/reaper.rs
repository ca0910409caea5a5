//! The reaper: PID 1 (or a child subreaper) collects every child that ends,
//! its own and re-parented orphans alike.
//!
//! One mutex guards the table of registered pids. [`Reaper::spawn`] holds it
//! across fork and registration, and [`Reaper::sweep`] holds it across each
//! round of `waitpid(-1, WNOHANG)`, so a child is never reaped before its
//! pid is registered. While a pid is registered its process has not been
//! reaped, so [`Reaper::kill`] (under the same lock) never signals a pid
//! that the kernel may already have given to someone else.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use agent_proto::ExitStatus;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::oneshot;

/// A raw wait status, as `waitpid` returns it.
pub type RawStatus = libc::c_int;

/// Why the reaper could not start, or not signal a child.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    /// No SIGCHLD handler.
    #[error("cannot install the SIGCHLD handler: {source}")]
    Signal {
        /// Why.
        source: io::Error,
    },
    /// `kill` failed.
    #[error("cannot send signal {signal} to pid {pid}: {source}")]
    Kill {
        /// The child.
        pid: i32,
        /// The signal.
        signal: i32,
        /// Why.
        source: io::Error,
    },
}

/// Whether any child is left after a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Children {
    /// Some are still running.
    Remaining,
    /// None is left.
    None,
}

/// Collects every child that ends, and hands the status of the registered
/// ones to whoever waits for them.
pub struct Reaper {
    waiters: Mutex<HashMap<libc::pid_t, oneshot::Sender<RawStatus>>>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts the reaping task. Call it
    /// inside the runtime, before anything is spawned.
    pub fn start() -> Result<Arc<Reaper>, ReaperError> {
        let sigchld = signal(SignalKind::child()).map_err(|source| ReaperError::Signal { source })?;
        let reaper = Arc::new(Reaper {
            waiters: Mutex::new(HashMap::new()),
        });
        // Children that ended before the handler was there (orphans handed
        // to a new init) are collected by the task's first sweep.
        tokio::spawn(reaper.clone().run(sigchld));
        Ok(reaper)
    }

    async fn run(self: Arc<Self>, mut sigchld: Signal) {
        loop {
            self.sweep();
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<libc::pid_t, oneshot::Sender<RawStatus>>> {
        self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `fork` (which returns the child's pid and anything else) with
    /// the table locked, and registers the pid before anyone can reap it.
    /// The receiver gets the child's raw wait status.
    pub fn spawn<T, E>(
        &self,
        fork: impl FnOnce() -> Result<(libc::pid_t, T), E>,
    ) -> Result<(libc::pid_t, T, oneshot::Receiver<RawStatus>), E> {
        let mut waiters = self.lock();
        let (pid, extra) = fork()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid, tx);
        Ok((pid, extra, rx))
    }

    /// Reaps every child that has ended; delivers the status of registered
    /// ones. Returns whether children remain (`ECHILD` means none).
    pub fn sweep(&self) -> Children {
        let mut waiters = self.lock();
        loop {
            let mut status: RawStatus = 0;
            // SAFETY: `status` is a valid int to write into.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                match waiters.remove(&pid) {
                    Some(tx) => {
                        let _ = tx.send(status);
                    }
                    None => debug!("reaped pid {pid} ({})", describe(status)),
                }
                continue;
            }
            if pid == 0 {
                return Children::Remaining;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECHILD) => return Children::None,
                _ => {
                    warn!("waitpid failed: {err}");
                    return Children::Remaining;
                }
            }
        }
    }

    /// Sends `signal` to `pid` if it is registered (not reaped yet); returns
    /// whether it was.
    pub fn kill(&self, pid: libc::pid_t, signal: i32) -> Result<bool, ReaperError> {
        let waiters = self.lock();
        if !waiters.contains_key(&pid) {
            return Ok(false);
        }
        // SAFETY: kill has no memory preconditions; `pid` is a registered,
        // unreaped child, so it cannot have been reused.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(true)
        } else {
            Err(ReaperError::Kill {
                pid,
                signal,
                source: io::Error::last_os_error(),
            })
        }
    }

    /// Runs `f` with the table locked: no child is reaped meanwhile, so
    /// the pids of children seen during `f` stay theirs. `f` gets the
    /// registered (spawned, not yet reaped) pids.
    pub fn while_locked<R>(&self, f: impl FnOnce(Vec<libc::pid_t>) -> R) -> R {
        let waiters = self.lock();
        f(waiters.keys().copied().collect())
    }
}

/// How a process ended, from its raw wait status.
pub fn decode(status: RawStatus) -> ExitStatus {
    if libc::WIFEXITED(status) {
        ExitStatus {
            code: Some(libc::WEXITSTATUS(status)),
            signal: None,
        }
    } else if libc::WIFSIGNALED(status) {
        ExitStatus {
            code: None,
            signal: Some(libc::WTERMSIG(status)),
        }
    } else {
        ExitStatus {
            code: None,
            signal: None,
        }
    }
}

fn describe(status: RawStatus) -> String {
    match decode(status) {
        ExitStatus { code: Some(code), .. } => format!("exit code {code}"),
        ExitStatus {
            signal: Some(signal), ..
        } => format!("killed by signal {signal}"),
        _ => format!("status {status:#x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_decoding() {
        assert_eq!(
            decode(0),
            ExitStatus {
                code: Some(0),
                signal: None
            }
        );
        assert_eq!(
            decode(42 << 8),
            ExitStatus {
                code: Some(42),
                signal: None
            }
        );
        assert_eq!(
            decode(255 << 8),
            ExitStatus {
                code: Some(255),
                signal: None
            }
        );
        assert_eq!(
            decode(9),
            ExitStatus {
                code: None,
                signal: Some(9)
            }
        );
        // Killed by SIGSEGV with a core dump (0x80).
        assert_eq!(
            decode(0x80 | 11),
            ExitStatus {
                code: None,
                signal: Some(11)
            }
        );
        assert_eq!(describe(3 << 8), "exit code 3");
        assert_eq!(describe(15), "killed by signal 15");
    }
}
