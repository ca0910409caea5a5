//! The switch daemon: `vmshim network serve NAME`, detached from whoever
//! starts it (its own session, no parent-death signal, stdio to
//! `switch.log`, capped and rotated), so it outlives the vmshim that
//! started it and serves every VM on the network, each port bound to its
//! VM's lease. Started under the network's lock when its socket does not
//! accept connections; stopped by `remove` with SIGTERM.
//!
//! [`SwitchDaemon`] is one network's daemon, seen from outside (start,
//! stop, is it ours) and from inside ([`SwitchDaemon::serve`], its body).
//! Also here: how any vmshim daemon is spawned detached (the instance
//! daemons too).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};

use super::binding::LeaseBinder;
use super::error::{io_err, NetworkError};
use super::process::Owner;
use super::store::{check_socket_path, NetDir, Network};
use super::switch::{self, accepts, log};
use crate::private::log::{self, RotatingLog};

/// How long a new switch may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a switch may take to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// How often a running switch checks that its socket is still in place.
const SOCKET_CHECK: Duration = Duration::from_secs(2);

/// How switches are started.
#[derive(Debug, Clone)]
pub(super) enum Launcher {
    /// `PROGRAM network serve NAME --state-dir DIR` as a daemon; the
    /// program is found at run time when not given.
    Program(Option<PathBuf>),
    /// A thread of this process (tests).
    #[cfg(test)]
    InProcess,
}

/// The switch daemon of one network.
pub(super) struct SwitchDaemon<'a> {
    /// The state directory the network is in (the daemon is told it).
    state_dir: &'a Path,
    /// The network's name.
    name: &'a str,
    /// The network's files.
    dir: NetDir,
}

impl<'a> SwitchDaemon<'a> {
    /// The daemon of network `name`, whose files are `dir`, in
    /// `state_dir`.
    pub fn new(state_dir: &'a Path, name: &'a str, dir: NetDir) -> SwitchDaemon<'a> {
        SwitchDaemon { state_dir, name, dir }
    }

    /// Makes sure the switch is running and returns its socket: if the
    /// socket does not accept a connection, (re)starts the daemon with
    /// `launcher` and waits until it does (5 seconds at most). Blocks
    /// meanwhile. Call with the network's lock held.
    pub fn ensure(&self, launcher: &Launcher) -> Result<PathBuf, NetworkError> {
        let socket = self.dir.socket();
        check_socket_path(&socket)?;
        if accepts(&socket) {
            return Ok(socket);
        }
        // A switch that no longer answers (its socket deleted, or stuck)
        // makes way, and takes its pid file and socket with it.
        self.stop();
        for stale in [self.dir.pid(), socket.clone()] {
            match fs::remove_file(&stale) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", stale)(e)),
            }
        }
        match launcher {
            Launcher::Program(program) => self.spawn(program.as_deref())?,
            #[cfg(test)]
            Launcher::InProcess => {
                let (socket, leases) = (socket.clone(), self.dir.leases());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    rt.block_on(switch::serve_switch(&socket, &leases))
                        .map_err(io::Error::other)
                });
            }
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if accepts(&socket) {
                return Ok(socket);
            }
            let died = read_pid(&self.dir.pid()).is_some_and(|pid| !Owner { pid, started: None }.alive());
            if died || Instant::now() >= deadline {
                let what = if died {
                    "it exited".to_owned()
                } else {
                    format!("it did not accept connections within {START_TIMEOUT:?}")
                };
                let log = self.dir.log();
                return Err(NetworkError::SwitchStart {
                    name: self.name.to_owned(),
                    detail: format!("{what}; {}:\n{}", log.display(), log_tail(&log, 5)),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts `vmshim network serve NAME` detached: it runs in a session of
    /// its own, is reparented at once (a double fork), and does not die
    /// with us.
    fn spawn(&self, program: Option<&Path>) -> Result<(), NetworkError> {
        let fail = |detail: String| NetworkError::SwitchStart {
            name: self.name.to_owned(),
            detail,
        };
        let program = match program {
            Some(p) => p.to_owned(),
            None => vmshim_program().ok_or_else(|| {
                fail("cannot find the vmshim program to run it (set VMSHIM_BIN to its path)".to_owned())
            })?,
        };
        // The daemon's stdio: rotated now if full, and by the daemon as it
        // writes.
        let log_path = self.dir.log();
        let log = RotatingLog::open(&log_path, log::limit())?;
        log.rotate_if_full().map_err(io_err("rotate", &log_path))?;
        let mut cmd = Command::new(&program);
        cmd.args(["network", "serve", self.name, "--state-dir"])
            .arg(self.state_dir)
            .stdout(log.file().map_err(io_err("open", &log_path))?)
            .stderr(log.file().map_err(io_err("open", &log_path))?);
        spawn_detached(cmd).map_err(|e| fail(format!("cannot run {}: {e}", program.display())))
    }

    /// Stops the switch named by `switch.pid`, if it is running and is
    /// really this network's switch; waits for it to go.
    pub fn stop(&self) {
        let Some(pid) = read_pid(&self.dir.pid()) else {
            return;
        };
        if !self.is_switch(pid) {
            return;
        }
        let owner = Owner { pid, started: None };
        for (signo, grace) in [(libc::SIGTERM, STOP_GRACE), (libc::SIGKILL, Duration::from_secs(1))] {
            // SAFETY: kill has no memory-safety preconditions; the pid was
            // just checked to be our switch.
            unsafe { libc::kill(pid as i32, signo) };
            let deadline = Instant::now() + grace;
            while owner.alive() {
                if Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            if !owner.alive() {
                return;
            }
        }
    }

    /// Whether process `pid` is `vmshim network serve NAME` of this state
    /// directory.
    fn is_switch(&self, pid: u32) -> bool {
        let Some(args) = super::process::cmdline(pid) else {
            return false;
        };
        let state_dir = self.state_dir.to_string_lossy();
        args.windows(3).any(|w| w == ["network", "serve", self.name])
            && args.windows(2).any(|w| w[0] == "--state-dir" && w[1] == state_dir)
    }

    /// The daemon's body (`vmshim network serve NAME`), for `network` (a
    /// switch network): serves its socket until SIGTERM or SIGINT, or until
    /// the socket is removed (the network deleted by hand); then removes
    /// its socket and pid file.
    pub async fn serve(&self, network: &Network) -> Result<(), NetworkError> {
        let name = self.name;
        // Our stdout and stderr are the log: capped and rotated with it.
        let _ = log::install_stdio(&self.dir.log(), log::limit());
        let socket = self.dir.socket();
        check_socket_path(&socket)?;
        if accepts(&socket) {
            return Err(NetworkError::SwitchStart {
                name: name.to_owned(),
                detail: format!("a switch already serves {}", socket.display()),
            });
        }
        let pid = std::process::id();
        write_pid(&self.dir.pid(), pid)?;
        let listener = match switch::bind(&socket) {
            Ok(l) => l,
            Err(e) => {
                remove_pid_file(&self.dir.pid(), pid);
                return Err(e);
            }
        };
        let ino = fs::metadata(&socket).map(|m| m.ino()).ok();
        log(&format!(
            "switch of network {name:?} ({}) listening on {}, pid {pid}",
            network.subnet,
            socket.display()
        ));
        let mut term = signal(SignalKind::terminate()).map_err(io_err("handle SIGTERM in", &socket))?;
        let mut int = signal(SignalKind::interrupt()).map_err(io_err("handle SIGINT in", &socket))?;
        let binder = Arc::new(LeaseBinder::new(&self.dir.leases()));
        let why = tokio::select! {
            never = switch::serve(listener, Default::default(), binder) => match never {},
            _ = term.recv() => "SIGTERM".to_owned(),
            _ = int.recv() => "SIGINT".to_owned(),
            why = socket_gone(&socket, ino) => why,
        };
        log(&format!("stopping: {why}"));
        if fs::metadata(&socket).map(|m| m.ino()).ok() == ino {
            let _ = fs::remove_file(&socket);
        }
        remove_pid_file(&self.dir.pid(), pid);
        Ok(())
    }
}

/// Returns when the socket file at `socket` is gone or replaced.
async fn socket_gone(socket: &Path, ino: Option<u64>) -> String {
    loop {
        tokio::time::sleep(SOCKET_CHECK).await;
        match fs::metadata(socket) {
            Ok(m) if Some(m.ino()) == ino => {}
            Ok(_) => return format!("{} was replaced", socket.display()),
            Err(e) => return format!("{}: {e}", socket.display()),
        }
    }
}

/// Runs `cmd` as a daemon: in `/`, stdin from /dev/null, in a session of
/// its own, reparented at once (a double fork), with no parent-death
/// signal, so it does not die with us. Returns once it has been exec'd (an
/// exec failure is reported here).
pub(crate) fn spawn_detached(mut cmd: Command) -> io::Result<()> {
    cmd.current_dir("/").stdin(Stdio::null());
    // SAFETY: the closure runs in the child between fork and exec and
    // makes only async-signal-safe calls (setsid, fork, _exit).
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                // The daemon: on to exec.
                0 => Ok(()),
                // The middle process, whom we reap at once.
                _ => libc::_exit(0),
            }
        });
    }
    let mut middle = cmd.spawn()?;
    let _ = middle.wait();
    Ok(())
}

/// The vmshim program to run a daemon (a switch, an instance) with: `$VMSHIM_BIN`, this program if
/// it is vmshim, a vmshim beside it or one directory up (tests run from
/// `target/debug/deps/`), else `vmshim` in PATH.
pub(crate) fn vmshim_program() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VMSHIM_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if exe.file_name().is_some_and(|n| n == "vmshim") {
            return Some(exe);
        }
        let beside = exe.ancestors().skip(1).take(2).map(|d| d.join("vmshim"));
        if let Some(p) = beside.into_iter().find(|p| p.is_file()) {
            return Some(p);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("vmshim"))
        .find(|p| p.is_file())
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes `switch.pid` whole (a 0600 temporary file renamed into place).
fn write_pid(path: &Path, pid: u32) -> Result<(), NetworkError> {
    Ok(crate::private::write_private_atomically(
        path,
        format!("{pid}\n").as_bytes(),
    )?)
}

/// Removes `switch.pid` if it still names `pid`.
fn remove_pid_file(path: &Path, pid: u32) {
    if read_pid(path) == Some(pid) {
        let _ = fs::remove_file(path);
    }
}

/// The last `lines` lines of a log file (and of its older generation,
/// `NAME.1`, where it has just been rotated).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match log::tail(path, lines) {
        Some(tail) if !tail.is_empty() => tail,
        _ => "(empty)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::store::Store;
    use crate::test_dir::TestDir;

    #[test]
    fn pid_files_and_cmdlines() {
        let dir = TestDir::new("pid");
        let path = dir.path().join("switch.pid");
        write_pid(&path, 1234).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "1234\n");
        assert_eq!(read_pid(&path), Some(1234));
        remove_pid_file(&path, 99);
        assert!(path.exists(), "another pid's file stays");
        remove_pid_file(&path, 1234);
        assert!(!path.exists());

        let store = Store::at(dir.path());
        let daemon = |state_dir, name| SwitchDaemon::new(state_dir, name, store.dir(name));
        // sh names the arguments after the script $0, $1, ...; the `:`
        // keeps it from replacing itself with sleep.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 60; :", "network", "serve", "n", "--state-dir"])
            .arg(dir.path())
            .spawn()
            .unwrap();
        // Until exec, the child shows our command line.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !daemon(dir.path(), "n").is_switch(child.id()) {
            assert!(
                Instant::now() < deadline,
                "{:?}",
                crate::network::process::cmdline(child.id())
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!daemon(dir.path(), "m").is_switch(child.id()));
        assert!(!daemon(Path::new("/elsewhere"), "n").is_switch(child.id()));
        assert!(!daemon(dir.path(), "n").is_switch(std::process::id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
