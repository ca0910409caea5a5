//! An instance's container ([`super::ContainerMain`]): the starting vmshim
//! hands its stdin, stdout and stderr to the daemon as descriptors 3, 4
//! and 5; the daemon creates the container, attaches its streams to them
//! (as runc hands its own stdio to the container), and learns when its
//! process has ended. A terminal goes to those too, or, with a console
//! socket, to a host pseudo-terminal whose master the socket receives
//! ([`crate::runtime::console`]).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use agent_proto::{ContainerSpec, ContainerStatus, ExitStatus, ProcessId, StreamKind};
use tokio::task::JoinHandle;

use crate::client::{Client, ClientError};
use crate::runtime::console::{self, ConsoleError};
use crate::runtime::relay::{relay_input, relay_output};

/// The descriptors the daemon finds the container's stdin, stdout and
/// stderr on.
const PASSED_FDS: [RawFd; 3] = [3, 4, 5];

/// How often the daemon asks whether the container has been started.
const START_POLL: Duration = Duration::from_millis(100);

/// How long the output relays may take to deliver their last bytes once
/// the container is known to have stopped, when the agent could not be
/// asked to wait for them.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Makes `cmd` (the daemon) find `sources` (this process's stdin, stdout
/// and stderr: 0, 1, 2) as descriptors 3, 4 and 5. Returns the copies it
/// made for that, to be dropped once `cmd` has been spawned.
pub(super) fn pass_stdio(cmd: &mut Command, sources: [RawFd; 3]) -> io::Result<Vec<OwnedFd>> {
    let mut copies = Vec::new();
    for fd in sources {
        copies.push(duplicate_high(fd).or_else(|_| {
            // Closed: the container gets /dev/null for it.
            let null = File::options().read(true).write(true).open("/dev/null")?;
            duplicate_high(null.as_raw_fd())
        })?);
    }
    let raw: Vec<RawFd> = copies.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls dup2, which is async-signal-safe. The sources are at 10 or
    // above, so no target (3 to 5) overwrites a source still to be copied.
    unsafe {
        cmd.pre_exec(move || {
            for (&from, &to) in raw.iter().zip(PASSED_FDS.iter()) {
                if libc::dup2(from, to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(copies)
}

/// A close-on-exec copy of `fd` numbered 10 or above.
pub(super) fn duplicate_high(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only duplicates; a bad fd is an error.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// The container's stdio in the daemon: the starting vmshim's.
pub(super) struct ContainerStdio {
    stdin: File,
    stdout: File,
    stderr: File,
}

impl ContainerStdio {
    /// Takes descriptors 3, 4 and 5 and makes them close-on-exec, so that
    /// QEMU and the vsock backend do not hold them. Call once, first thing
    /// in a daemon whose spec has a container.
    pub(super) fn inherited() -> io::Result<ContainerStdio> {
        let mut files = Vec::new();
        for fd in PASSED_FDS {
            // SAFETY: fcntl only reads and sets descriptor flags.
            let ok = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0;
            if !ok {
                return Err(io::Error::other(format!(
                    "descriptor {fd} (the container's stdio) was not passed: {}",
                    io::Error::last_os_error()
                )));
            }
            // SAFETY: the starting vmshim put its stdio at 3 to 5 for this
            // daemon (its spec has a container); they were open at exec,
            // so nothing in this process was given those numbers, and they
            // are taken once.
            files.push(unsafe { File::from_raw_fd(fd) });
        }
        let [stdin, stdout, stderr] = <[File; 3]>::try_from(files).map_err(|_| io::Error::other("three files"))?;
        Ok(ContainerStdio { stdin, stdout, stderr })
    }
}

/// How the container's stdio reaches the host.
pub(super) enum ContainerIo {
    /// The starting vmshim's stdio: stdin attached when `attach_stdin`;
    /// with a terminal, its stdin and stdout carry the terminal.
    Passed { stdio: ContainerStdio, attach_stdin: bool },
    /// A terminal handed to the console socket at this path.
    Console(PathBuf),
}

/// Why the container could not be created with its stdio.
#[derive(Debug, thiserror::Error)]
pub(super) enum CreateError {
    #[error(transparent)]
    Agent(#[from] ClientError),
    #[error(transparent)]
    Console(#[from] ConsoleError),
    #[error("cannot relay the terminal: {0}")]
    Relay(io::Error),
}

/// A created container whose streams are attached and relayed.
pub(super) struct Attached {
    id: String,
    process: ProcessId,
    stdin: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
    /// The host terminal handed to a console socket, whose size is
    /// followed.
    console: Option<OwnedFd>,
}

/// Creates the container and attaches its streams to `io`; the process
/// waits for `start_container`.
pub(super) async fn create(client: &Client, spec: ContainerSpec, io: ContainerIo) -> Result<Attached, CreateError> {
    let id = spec.id.clone();
    let terminal = spec.process.terminal;
    let size = spec.process.size;
    let created = client.create_container(spec).await?;
    let process = created.process;
    let attach_stdin = match &io {
        ContainerIo::Passed { attach_stdin, .. } => *attach_stdin,
        ContainerIo::Console(_) => true,
    };
    let attach = |wanted: bool, kind| async move {
        match wanted {
            true => client.attach(process, kind).await.map(Some),
            false => Ok(None),
        }
    };
    // A terminal has no stderr stream: everything is on stdout.
    let (stdin_conn, stdout_conn, stderr_conn) = tokio::try_join!(
        attach(attach_stdin, StreamKind::Stdin),
        attach(true, StreamKind::Stdout),
        attach(!terminal, StreamKind::Stderr),
    )?;
    let stdout_conn = stdout_conn.expect("stdout is attached");
    let mut attached = Attached {
        id,
        process,
        stdin: None,
        outputs: Vec::new(),
        console: None,
    };
    match io {
        ContainerIo::Passed { stdio, .. } => {
            attached.stdin = stdin_conn.map(|conn| tokio::spawn(relay_input(stdio.stdin, conn)));
            attached
                .outputs
                .push(tokio::spawn(relay_output(stdout_conn, stdio.stdout)));
            if let Some(conn) = stderr_conn {
                attached.outputs.push(tokio::spawn(relay_output(conn, stdio.stderr)));
            }
        }
        ContainerIo::Console(path) => {
            let slave = console::hand_over(&path, size)?;
            let (input, output) = console::relay(&slave, stdin_conn, stdout_conn).map_err(CreateError::Relay)?;
            attached.stdin = input;
            attached.outputs.push(output);
            attached.console = Some(slave);
        }
    }
    Ok(attached)
}

impl Attached {
    /// Waits until the container's process has ended and its output has
    /// been written out, then returns how it ended (`None`: the container
    /// was deleted before it ran, or the agent cannot say).
    pub(super) async fn wait(self, client: &Client) -> Option<ExitStatus> {
        // The agent waits only for a started process.
        loop {
            match client.container_state(&self.id).await {
                Ok(info) if matches!(info.status, ContainerStatus::Creating | ContainerStatus::Created) => {
                    tokio::time::sleep(START_POLL).await
                }
                Ok(_) => break,
                Err(_) => return None,
            }
        }
        let follow_size = async {
            match &self.console {
                Some(slave) => console::follow_size(client, self.process, slave.as_fd()).await,
                None => std::future::pending().await,
            }
        };
        let waited = tokio::select! {
            waited = client.wait(self.process) => waited,
            () = follow_size => unreachable!("following the window size never ends"),
        };
        let status = match waited {
            // Answered once every output stream has delivered its last byte.
            Ok(status) => Some(status),
            // Waited for by someone else: the container's state says.
            Err(e) if e.agent_error().is_some() => stopped_status(client, &self.id).await,
            Err(_) => None,
        };
        let drained = async {
            for relay in self.outputs {
                let _ = relay.await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_GRACE, drained).await;
        if let Some(stdin) = self.stdin {
            stdin.abort();
        }
        // The terminal's holder learns that the process has ended.
        drop(self.console);
        status
    }
}

/// How the container's process ended, once the agent says it stopped.
async fn stopped_status(client: &Client, id: &str) -> Option<ExitStatus> {
    loop {
        match client.container_state(id).await {
            Ok(info) if info.status == ContainerStatus::Stopped => return info.exit,
            Ok(_) => tokio::time::sleep(START_POLL).await,
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A pipe: (read end, write end).
    fn pipe() -> (File, File) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array on success.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors were just made and are owned here only.
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
    }

    #[test]
    fn stdio_reaches_the_daemon_as_3_4_5_and_nothing_else_leaks() {
        let (stdin_r, mut stdin_w) = pipe();
        let (mut out_r, out_w) = pipe();
        let (mut err_r, err_w) = pipe();
        let mut cmd = Command::new("sh");
        let copies = pass_stdio(&mut cmd, [stdin_r.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()]).unwrap();
        assert!(copies.iter().all(|f| f.as_raw_fd() >= 10));
        // The copies themselves do not reach the child.
        let leaked: Vec<String> = copies
            .iter()
            .map(|f| format!("[ -e /proc/$$/fd/{} ] && echo leaked >&4;", f.as_raw_fd()))
            .collect();
        cmd.args([
            "-c",
            &format!(
                "read line <&3; echo \"out $line\" >&4; echo err >&5; {} true",
                leaked.concat()
            ),
        ]);
        stdin_w.write_all(b"hi\n").unwrap();
        let mut child = cmd.spawn().unwrap();
        drop((cmd, copies, stdin_r, out_w, err_w));
        assert!(child.wait().unwrap().success());
        let (mut out, mut err) = (String::new(), String::new());
        out_r.read_to_string(&mut out).unwrap();
        err_r.read_to_string(&mut err).unwrap();
        assert_eq!((out.as_str(), err.as_str()), ("out hi\n", "err\n"));
    }
}
