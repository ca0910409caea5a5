//! `exec`: another process in a created or running container, through its
//! VM's agent (`exec_container`, the streams attached, `start`), its stdio
//! relayed until it ends.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use agent_proto::{ContainerStatus, ExitStatus, ProcessId, ProcessSpec, StreamKind, WindowSize};
use tokio::task::JoinHandle;

use super::relay::{relay_input, relay_output};
use super::{agent_err, connect, console, process, ExecFlags, Runtime, RuntimeError};
use crate::client::Client;
use crate::image::{self, RootPlacement};

/// How long the output relays may take to deliver their last bytes once
/// the agent has said the process ended (a terminal whose master nobody
/// reads can hold them).
pub(super) const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Where `exec` takes its process from.
#[derive(Debug, Clone)]
pub enum ExecProcess {
    /// The flags, over the bundle's process.
    Flags(ExecFlags),
    /// A `process.json` (`--process`).
    File(PathBuf),
}

/// Where an exec'd process's stdio goes on the host.
#[derive(Debug)]
pub enum ExecStdio {
    /// Relayed from and to these files: pipes, files, or, for a terminal
    /// process, the caller's terminal (which the caller makes raw). No
    /// `stdin`: `/dev/null`. A terminal process has no `stderr`.
    Files {
        /// What the process reads; `None`: `/dev/null`.
        stdin: Option<File>,
        /// Where its stdout (or its terminal's output) goes.
        stdout: File,
        /// Where its stderr goes (unused with a terminal).
        stderr: File,
    },
    /// A terminal process's host terminal, whose master goes to the
    /// console socket at this path.
    ConsoleSocket(PathBuf),
}

/// A started exec'd process whose stdio is being relayed.
pub struct Exec {
    client: Client,
    process: ProcessId,
    pid: i32,
    stdin: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
    /// The host terminal handed to a console socket, whose size is
    /// followed.
    console: Option<OwnedFd>,
}

impl Runtime {
    /// The process `exec` would run in container `id`: `how` over the
    /// process of its bundle's `config.json`, as runc builds it.
    pub fn exec_process(&self, id: &str, how: &ExecProcess) -> Result<ProcessSpec, RuntimeError> {
        super::check_id(id)?;
        let record =
            super::state::read_record(&self.dir(id))?.ok_or_else(|| RuntimeError::NotExist { id: id.to_owned() })?;
        let container = image::container_spec(&record.bundle, id, RootPlacement::Guest)?.process;
        let built = match how {
            ExecProcess::Flags(flags) => process::from_flags(container, flags),
            ExecProcess::File(path) => process::from_file(path, &container),
        };
        built.map_err(|detail| RuntimeError::BadProcess { detail })
    }

    /// Starts `process` in created or running container `id`, its stdio
    /// relayed to `stdio`.
    pub async fn exec(&self, id: &str, process: ProcessSpec, stdio: ExecStdio) -> Result<Exec, RuntimeError> {
        if matches!(stdio, ExecStdio::ConsoleSocket(_)) && !process.terminal {
            return Err(RuntimeError::BadProcess {
                detail: "cannot use console socket if runc will not detach or allocate tty".into(),
            });
        }
        let live = self.live(id).await?;
        let endpoint = match (live.status, live.endpoint) {
            (ContainerStatus::Created | ContainerStatus::Running, Some(endpoint)) => endpoint,
            (ContainerStatus::Creating, _) => {
                return Err(RuntimeError::ExecOther {
                    id: id.to_owned(),
                    status: ContainerStatus::Creating.name(),
                })
            }
            _ => return Err(RuntimeError::ExecStopped { id: id.to_owned() }),
        };
        let client = connect(&endpoint, id).await?;
        exec_with(client, id, process, stdio).await
    }
}

/// Starts `process` in container `id` of the agent `client` talks to, its
/// stdio relayed to `stdio`.
pub(super) async fn exec_with(
    client: Client,
    id: &str,
    process: ProcessSpec,
    stdio: ExecStdio,
) -> Result<Exec, RuntimeError> {
    if matches!(stdio, ExecStdio::ConsoleSocket(_)) && !process.terminal {
        return Err(RuntimeError::BadProcess {
            detail: "cannot use console socket if runc will not detach or allocate tty".into(),
        });
    }
    let terminal = process.terminal;
    let size = process.size;
    let created = client.exec_container(id, process).await.map_err(|e| agent_err(id, e))?;
    let mut exec = attach(client, id, created, terminal, size, stdio).await?;
    exec.pid = exec.client.start(created).await.map_err(|e| agent_err(id, e))?;
    Ok(exec)
}

/// The streams of `process` (of container `id`, created, not started)
/// attached and relayed to `stdio`.
pub(super) async fn attach(
    client: Client,
    id: &str,
    created: ProcessId,
    terminal: bool,
    size: Option<WindowSize>,
    stdio: ExecStdio,
) -> Result<Exec, RuntimeError> {
    let (stdin, stdout, stderr, console_socket) = match stdio {
        ExecStdio::Files { stdin, stdout, stderr } => (stdin, Some(stdout), Some(stderr), None),
        ExecStdio::ConsoleSocket(path) => (None, None, None, Some(path)),
    };
    let attach = |wanted: bool, kind| {
        let client = &client;
        async move {
            match wanted {
                true => client.attach(created, kind).await.map(Some),
                false => Ok(None),
            }
        }
    };
    let (stdin_conn, stdout_conn, stderr_conn) = tokio::try_join!(
        attach(stdin.is_some() || console_socket.is_some(), StreamKind::Stdin),
        attach(true, StreamKind::Stdout),
        attach(!terminal, StreamKind::Stderr),
    )
    .map_err(|e| agent_err(id, e))?;
    let stdout_conn = stdout_conn.expect("stdout is attached");
    let mut exec = Exec {
        client,
        process: created,
        pid: 0,
        stdin: None,
        outputs: Vec::new(),
        console: None,
    };
    match console_socket {
        Some(path) => {
            let slave = console::hand_over(&path, size)?;
            let (input, output) =
                console::relay(&slave, stdin_conn, stdout_conn).map_err(|source| RuntimeError::Io {
                    what: "relay the terminal of",
                    path: path.clone(),
                    source,
                })?;
            exec.stdin = input;
            exec.outputs.push(output);
            exec.console = Some(slave);
        }
        None => {
            if let (Some(file), Some(conn)) = (stdin, stdin_conn) {
                exec.stdin = Some(tokio::spawn(relay_input(file, conn)));
            }
            if let Some(file) = stdout {
                exec.outputs.push(tokio::spawn(relay_output(stdout_conn, file)));
            }
            if let (Some(file), Some(conn)) = (stderr, stderr_conn) {
                exec.outputs.push(tokio::spawn(relay_output(conn, file)));
            }
        }
    }
    Ok(exec)
}

/// What an [`Exec`] is made of, for a pod's container, whose process is
/// the container's (see [`super::pod`]).
pub(super) struct ExecParts {
    pub(super) client: Client,
    pub(super) process: ProcessId,
    pub(super) stdin: Option<JoinHandle<()>>,
    pub(super) outputs: Vec<JoinHandle<()>>,
    pub(super) console: Option<OwnedFd>,
}

impl Exec {
    /// Its parts.
    pub(super) fn into_parts(self) -> ExecParts {
        ExecParts {
            client: self.client,
            process: self.process,
            stdin: self.stdin,
            outputs: self.outputs,
            console: self.console,
        }
    }

    /// The process's pid in the VM.
    pub fn guest_pid(&self) -> i32 {
        self.pid
    }

    /// Sends signal `signo` to the process.
    pub async fn signal(&self, signo: i32) -> Result<(), crate::ClientError> {
        self.client.signal(self.process, signo).await
    }

    /// Sets the size of the process's terminal.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), crate::ClientError> {
        self.client.resize(self.process, rows, cols).await
    }

    /// Waits until the process has ended and its output has been written
    /// out; returns how it ended. Meanwhile, a console socket's terminal
    /// has its window size followed.
    pub async fn wait(&self) -> Result<ExitStatus, crate::ClientError> {
        let follow_size = async {
            match &self.console {
                Some(slave) => console::follow_size(&self.client, self.process, slave.as_fd()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = self.client.wait(self.process) => status,
            () = follow_size => unreachable!("following the window size never ends"),
        }
    }

    /// Lets the relays write out the process's last output and ends them.
    pub async fn finish(self) {
        let drained = async {
            for relay in self.outputs {
                let _ = relay.await;
            }
        };
        let _ = tokio::time::timeout(DRAIN_GRACE, drained).await;
        if let Some(stdin) = self.stdin {
            stdin.abort();
        }
        self.client.close().await;
    }
}
