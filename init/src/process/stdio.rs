//! A process's stdio, made before fork: pipes for the streams the host
//! attached and `/dev/null` for the others, or one pseudo-terminal for all
//! three. The child's ends go to the child ([`ChildStdio`]); the agent's
//! ends are pumped (`streams.rs`).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use crate::child::command::Command;
use crate::child::ChildStdio;
use crate::sys::fdio;
use crate::sys::pty::{self, PtyError};

/// Why a process's stdio could not be made.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    /// No pipe for one stream.
    #[error("cannot create a pipe for {stream}: {source}")]
    Pipe {
        /// `stdin`, `stdout` or `stderr`.
        stream: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// No `/dev/null` for the streams nobody attached.
    #[error("cannot open /dev/null: {source}")]
    DevNull {
        /// Why.
        source: std::io::Error,
    },
    /// No terminal.
    #[error("cannot open a terminal: {0}")]
    Pty(#[from] PtyError),
    /// The agent's end could not be registered with the runtime.
    #[error("cannot watch the {stream} descriptor: {source}")]
    Register {
        /// Which end.
        stream: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// A process's stdio before fork: the child's ends (closed in the agent
/// right after fork) and the agent's ends (pumped).
pub struct Stdio {
    pub child_ends: Vec<OwnedFd>,
    pub child: ChildStdio,
    pub(super) stdin: Option<AsyncFd<OwnedFd>>,
    /// With a terminal, always present: the terminal must be drained.
    pub(super) stdout: Option<AsyncFd<OwnedFd>>,
    pub(super) stderr: Option<AsyncFd<OwnedFd>>,
    pub(super) master: Option<OwnedFd>,
}

/// The agent's ends of a forked process's stdio, kept until its start.
pub struct AgentEnds {
    pub stdin: Option<AsyncFd<OwnedFd>>,
    pub stdout: Option<AsyncFd<OwnedFd>>,
    pub stderr: Option<AsyncFd<OwnedFd>>,
    pub master: Option<OwnedFd>,
}

impl Stdio {
    /// For a container's process, forked before anything can attach: pipes
    /// for all three streams (or one terminal).
    pub fn for_container(command: &Command) -> Result<Stdio, StdioError> {
        Stdio::prepare(command, [true; 3])
    }

    /// Splits off the agent's ends (after fork, with the child's closed).
    pub fn agent_ends(self) -> (Vec<OwnedFd>, AgentEnds) {
        (
            self.child_ends,
            AgentEnds {
                stdin: self.stdin,
                stdout: self.stdout,
                stderr: self.stderr,
                master: self.master,
            },
        )
    }
}

impl Stdio {
    /// Pipes for the attached streams, `/dev/null` for the others, or one
    /// terminal for all three.
    pub fn prepare(command: &Command, attached: [bool; 3]) -> Result<Stdio, StdioError> {
        if command.terminal {
            return Stdio::terminal(command, attached[0]);
        }
        let mut stdio = Stdio {
            child_ends: Vec::new(),
            child: ChildStdio {
                fds: [-1; 3],
                controlling_terminal: false,
            },
            stdin: None,
            stdout: None,
            stderr: None,
            master: None,
        };
        let mut null: Option<OwnedFd> = None;
        for (i, stream) in ["stdin", "stdout", "stderr"].into_iter().enumerate() {
            if !attached[i] {
                if null.is_none() {
                    null = Some(fdio::open_dev_null().map_err(|source| StdioError::DevNull { source })?);
                }
                stdio.child.fds[i] = null.as_ref().map_or(-1, |n| n.as_raw_fd());
                continue;
            }
            let (read, write) = fdio::pipe().map_err(|source| StdioError::Pipe { stream, source })?;
            let (child_end, ours) = if i == 0 { (read, write) } else { (write, read) };
            stdio.child.fds[i] = child_end.as_raw_fd();
            stdio.child_ends.push(child_end);
            let ours = Some(fdio::async_fd(ours).map_err(|source| StdioError::Register { stream, source })?);
            match i {
                0 => stdio.stdin = ours,
                1 => stdio.stdout = ours,
                _ => stdio.stderr = ours,
            }
        }
        stdio.child_ends.extend(null);
        Ok(stdio)
    }

    fn terminal(command: &Command, stdin_attached: bool) -> Result<Stdio, StdioError> {
        // A process joining a container gets a terminal of the container's
        // devpts where it has one (so that `tty` names it), else the agent's.
        let pty = match command.root.as_deref().filter(|r| r.starts_with("/proc/")) {
            Some(root) => pty::open_in_root(root, command.size).or_else(|e| {
                debug!("no terminal from the container's devpts ({e}): the agent's");
                pty::open(command.size)
            })?,
            None => pty::open(command.size)?,
        };
        let dup_async = |stream| {
            fdio::dup(pty.master.as_fd())
                .and_then(fdio::async_fd)
                .map_err(|source| StdioError::Register { stream, source })
        };
        let stdout = Some(dup_async("terminal output")?);
        let stdin = if stdin_attached {
            Some(dup_async("terminal input")?)
        } else {
            None
        };
        let slave: RawFd = pty.slave.as_raw_fd();
        Ok(Stdio {
            child: ChildStdio {
                fds: [slave; 3],
                controlling_terminal: true,
            },
            child_ends: vec![pty.slave],
            stdin,
            stdout,
            stderr: None,
            master: Some(pty.master),
        })
    }
}
