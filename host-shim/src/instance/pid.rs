//! A container's instance daemon is the container's pid: the process a
//! runtime's caller waits on (conmon, containerd's shim), as runc's init
//! is.
//!
//! [`Instances::start_container`] spawns the daemon as a child that it
//! does not wait for (its own session, in the container's network
//! namespace), so that once `vmshim runtime create` has exited it is the
//! child of the caller's subreaper. The daemon then waits, before it boots
//! anything, for the go-ahead on a pipe ([`Starting::proceed`]): the
//! caller runs the hooks that set up the namespace in between, with the
//! daemon's pid in their state. Closing the pipe instead
//! ([`Starting::abort`]) makes it leave.
//!
//! Once the container exists, every signal sent to the daemon that a
//! process may catch ([`FORWARDED`]) goes to the container's process; a
//! SIGKILL takes QEMU and the vsock backend with it (their parent-death
//! signal). When the container's process ends, the daemon shuts the VM
//! down and exits with the process's status, 128+N for signal N
//! ([`exit_code`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent_proto::ExitStatus;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::{container, Instance, InstanceError, InstanceSpec, Instances, LOG_LINES};
use crate::netns::{enter_on_exec, Enter};
use crate::network::process::Owner;

/// The descriptor the daemon of a container finds its go-ahead pipe on
/// (3 to 5 are the container's stdio).
const GO_FD: RawFd = 6;

/// How long [`Starting::abort`] waits for the daemon to leave before it
/// kills it.
const ABORT_GRACE: Duration = Duration::from_secs(5);

/// The signals the daemon of a created container passes on to its
/// process: every one a process may catch, but `SIGCHLD` (the daemon's
/// own: QEMU and the vsock backend are its children), `SIGPIPE` (a write to
/// a closed pipe of its own) and the faults the CPU raises (`SIGILL`,
/// `SIGTRAP`, `SIGABRT`, `SIGBUS`, `SIGFPE`, `SIGSEGV`, `SIGSTKFLT`); and
/// the real-time signals, 34 to 64.
pub const FORWARDED: [i32; 20] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGCONT,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGURG,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGWINCH,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGSYS,
];

/// The first and last real-time signal passed on.
const REALTIME: std::ops::RangeInclusive<i32> = 34..=64;

/// The status the daemon exits with when its container's process ended
/// `status`: its code, or 128+N for signal N, as a shell reports it;
/// 255 when the VM ended without saying.
pub fn exit_code(status: Option<&ExitStatus>) -> u8 {
    match status {
        Some(status) if status.code.is_some() || status.signal.is_some() => status.shell_code().clamp(0, 255) as u8,
        _ => 255,
    }
}

/// The container's daemon, started, waiting for the go-ahead.
#[derive(Debug)]
pub struct Starting {
    instances: Instances,
    name: String,
    spec: InstanceSpec,
    pid: u32,
    /// The starting vmshim, the instance's owner until the daemon takes
    /// over.
    me: Owner,
    go: File,
}

impl Instances {
    /// Starts the daemon of container instance `name` (`spec.container`
    /// set) as a child of this process that this process does not wait
    /// for, in the network namespace `netns` says (`None`: this one's),
    /// and returns while it waits for [`Starting::proceed`]. Blocks while
    /// it takes the instance over.
    pub fn start_container(
        &self,
        name: &str,
        spec: &InstanceSpec,
        netns: Option<Enter>,
    ) -> Result<Starting, InstanceError> {
        let me = self.prepare(name, spec)?;
        let dir = self.dir(name);
        let fail = |detail: String| {
            let log = crate::network::daemon::log_tail(&dir.log(), LOG_LINES);
            let _ = dir.remove();
            InstanceError::StartFailed {
                name: name.to_owned(),
                detail: format!("{detail}; its log:\n{log}"),
            }
        };
        let (go_read, go) = pipe().map_err(|e| fail(format!("cannot make a pipe: {e}")))?;
        let pid = self
            .spawn_child(name, spec, go_read, netns)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Starting {
            instances: self.clone(),
            name: name.to_owned(),
            spec: spec.clone(),
            pid,
            me,
            go: File::from(go),
        })
    }

    /// `vmshim instance serve NAME` as a child in its own session, with
    /// this process's stdio as the container's (where it goes to the
    /// daemon), `go` as descriptor 6, in the network namespace `netns`.
    fn spawn_child(&self, name: &str, spec: &InstanceSpec, go: OwnedFd, netns: Option<Enter>) -> io::Result<u32> {
        let mut cmd = self.daemon_command(name).map_err(io::Error::other)?;
        let pass_stdio = spec.container.as_ref().is_some_and(super::ContainerMain::passes_stdio);
        let _passed = match pass_stdio {
            true => container::pass_stdio(&mut cmd, [0, 1, 2])?,
            false => Vec::new(),
        };
        cmd.current_dir("/").stdin(Stdio::null());
        // Numbered 10 or above, as the stdio's copies: the child's dup2s to
        // 3 to 6 cannot overwrite them.
        let go = container::duplicate_high(go.as_raw_fd())?;
        let go_raw = go.as_raw_fd();
        let netns = match netns {
            Some(Enter::Join(fd)) => Some(Enter::Join(container::duplicate_high(fd.as_raw_fd())?)),
            other => other,
        };
        // SAFETY: the closure runs in the child between fork and exec and
        // makes only setsid and dup2, which are async-signal-safe. The go
        // pipe's end is open until the spawn returns (it is dropped after).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 || libc::dup2(go_raw, GO_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        if let Some(enter) = netns {
            enter_on_exec(&mut cmd, enter);
        }
        // Not waited for: once this process exits, the daemon is the child
        // of its subreaper, which reaps it.
        let child = cmd.spawn()?;
        drop(go);
        Ok(child.id())
    }
}

impl Starting {
    /// The daemon's pid: the container's.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Tells the daemon to go on: boot the VM (its network is what the
    /// namespace holds now), create the container. Returns once the
    /// container is created or the daemon failed; on failure nothing of
    /// the instance is left. Blocks meanwhile.
    pub fn proceed(mut self) -> Result<Instance, InstanceError> {
        let written = self.go.write_all(b"g");
        let dir = self.instances.dir(&self.name);
        if let Err(e) = written {
            let log = crate::network::daemon::log_tail(&dir.log(), LOG_LINES);
            let _ = dir.remove();
            return Err(InstanceError::StartFailed {
                name: self.name.clone(),
                detail: format!("its daemon is gone ({e}); its log:\n{log}"),
            });
        }
        self.instances.wait_running(&self.name, &self.spec, self.me)
    }

    /// Tells the daemon to leave without booting anything, waits for it
    /// (killing it after a while) and removes what is left of the
    /// instance.
    pub fn abort(self) {
        drop(self.go);
        let owner = Owner {
            pid: self.pid,
            started: None,
        };
        let deadline = Instant::now() + ABORT_GRACE;
        while owner.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if owner.alive() {
            // SAFETY: kill has no memory-safety preconditions; the pid is
            // our child's, not reaped, so it cannot have been reused.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
        let _ = self.instances.dir(&self.name).remove();
    }
}

/// The go-ahead, in the daemon: descriptor 6.
pub(super) struct Go(File);

impl Go {
    /// Takes descriptor 6 and makes it close-on-exec. Call once, first
    /// thing in a daemon whose spec has a container.
    pub(super) fn inherited() -> io::Result<Go> {
        // SAFETY: fcntl only reads and sets descriptor flags.
        if unsafe { libc::fcntl(GO_FD, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::other(format!(
                "descriptor {GO_FD} (the go-ahead) was not passed: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: the starting vmshim put the pipe at 6 for this daemon
        // (its spec has a container); it was open at exec, so nothing in
        // this process was given that number, and it is taken once.
        Ok(Go(unsafe { File::from_raw_fd(GO_FD) }))
    }

    /// Whether the starting vmshim said go (else it closed the pipe, or
    /// died).
    pub(super) async fn wait(self) -> bool {
        let mut file = self.0;
        tokio::task::spawn_blocking(move || {
            let mut byte = [0u8; 1];
            matches!(file.read(&mut byte), Ok(1))
        })
        .await
        .unwrap_or(false)
    }
}

/// The signals passed on to the container's process, handled from the
/// start (before the container exists they end the daemon).
pub(super) struct Forwarded(Vec<(i32, Signal)>);

impl Forwarded {
    pub(super) fn new() -> io::Result<Forwarded> {
        let mut signals = Vec::new();
        for signo in FORWARDED.into_iter().chain(REALTIME) {
            signals.push((signo, signal(SignalKind::from_raw(signo))?));
        }
        Ok(Forwarded(signals))
    }

    /// The next to arrive, by number.
    pub(super) async fn next(&mut self) -> i32 {
        std::future::poll_fn(|cx| {
            for (signo, sig) in self.0.iter_mut() {
                if sig.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(*signo);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned here only.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_as_a_shell_reports_them() {
        let code = |code, signal| exit_code(Some(&ExitStatus { code, signal }));
        assert_eq!(code(Some(0), None), 0);
        assert_eq!(code(Some(42), None), 42);
        assert_eq!(code(None, Some(libc::SIGKILL)), 137);
        assert_eq!(code(None, Some(libc::SIGTERM)), 143);
        assert_eq!(code(None, None), 255);
        assert_eq!(exit_code(None), 255);
    }

    #[test]
    fn every_catchable_signal_but_the_daemons_own_is_forwarded() {
        for own in [
            libc::SIGCHLD,
            libc::SIGPIPE,
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
        ] {
            assert!(!FORWARDED.contains(&own) && !REALTIME.contains(&own), "{own}");
        }
        // What `podman stop` and `docker stop` send, and systemd's.
        for wanted in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, 34 + 3] {
            assert!(FORWARDED.contains(&wanted) || REALTIME.contains(&wanted), "{wanted}");
        }
    }
}
