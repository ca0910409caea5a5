//! Running one process through the agent, with its stdio relayed: a
//! process of the agent's ([`spawn`]) or a container's ([`spawn_container`]).

use agent_proto::Conn;
use agent_proto::{ContainerSpec, ExitStatus, Op, ProcessId, ProcessSpec, Started, StreamKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::client::{Answer, Client, ClientError};

/// Where a process's stdio comes from and goes to on the host. A stream left
/// `None` is not attached: the process gets `/dev/null` for it.
#[derive(Default)]
pub struct ExecIo {
    /// What the process reads on stdin (`None`: `/dev/null`).
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Where its stdout (and, with a terminal, the terminal's output) goes.
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Where its stderr goes (unused with a terminal).
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
}

/// A started process whose stdio is being relayed, and whose wait the
/// agent already has.
pub struct Running {
    /// The agent's id for the process.
    pub process: ProcessId,
    /// Its pid in the guest.
    pub pid: i32,
    stdin: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
    exit: Answer<ExitStatus>,
}

/// Creates the process, attaches the streams `io` asks for, starts it and
/// begins relaying. With `spec.terminal`, stdout carries the terminal and
/// `io.stderr` is not used.
///
/// The wait travels right behind the start: the agent holds it through the
/// start and answers it as the process ends, with no round trip after the
/// start's answer.
///
/// The stream connections are dialled while the `create` is on the way,
/// and attached once it has answered.
pub async fn spawn(client: &Client, spec: ProcessSpec, io: ExecIo) -> Result<Running, ClientError> {
    let terminal = spec.terminal;
    let wanted = io.wanted(terminal);
    let (process, conns) = tokio::try_join!(client.create(spec), dial(client, wanted))?;
    let relays = attach(client, process, conns, terminal, io).await?;
    start(client, relays, process, Op::Start { process }).await
}

/// Creates the container `spec` describes, attaches the streams `io` asks
/// for to its process, starts it and begins relaying: the container's
/// process is then a [`Running`] like any other (waited for, signalled,
/// its terminal resized through [`Running::process`]). With a terminal
/// (`spec.process.terminal`), stdout carries it and `io.stderr` is not
/// used.
pub async fn spawn_container(client: &Client, spec: ContainerSpec, io: ExecIo) -> Result<Running, ClientError> {
    let terminal = spec.process.terminal;
    let id = spec.id.clone();
    // A container's creation may take long (its root, its mounts): the
    // streams are dialled after it, so that none waits on its first frame.
    let created = client.create_container(spec).await?;
    let conns = dial(client, io.wanted(terminal)).await?;
    let relays = attach(client, created.process, conns, terminal, io).await?;
    start(client, relays, created.process, Op::StartContainer { container: id }).await
}

/// Sends `start_op` (a process's or a container's start) and, right behind
/// it, the wait for `process`; returns the process running with `relays`
/// once the start has answered.
async fn start(client: &Client, relays: Relays, process: ProcessId, start_op: Op) -> Result<Running, ClientError> {
    let started = client.send::<Started>(start_op).await?;
    let exit = client.send_wait(process).await?;
    let pid = started.get().await?.pid;
    Ok(relays.started(process, pid, exit))
}

/// The relays of a created process's streams, before its start.
struct Relays {
    stdin: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
}

impl Relays {
    /// The process, started as `pid`, with these relays.
    fn started(self, process: ProcessId, pid: i32, exit: Answer<ExitStatus>) -> Running {
        Running {
            process,
            pid,
            stdin: self.stdin,
            outputs: self.outputs,
            exit,
        }
    }
}

impl ExecIo {
    /// Which of stdin, stdout and stderr are attached; with `terminal`,
    /// there is no stderr stream.
    fn wanted(&self, terminal: bool) -> [bool; 3] {
        [
            self.stdin.is_some(),
            self.stdout.is_some(),
            self.stderr.is_some() && !terminal,
        ]
    }
}

/// Dials a stream connection for each of stdin, stdout and stderr that is
/// `wanted`, concurrently.
async fn dial(client: &Client, wanted: [bool; 3]) -> Result<[Option<Conn>; 3], ClientError> {
    let dial = |wanted: bool| async move {
        match wanted {
            true => client.dial_stream().await.map(Some),
            false => Ok(None),
        }
    };
    let (stdin, stdout, stderr) = tokio::try_join!(dial(wanted[0]), dial(wanted[1]), dial(wanted[2]))?;
    Ok([stdin, stdout, stderr])
}

/// Attaches the dialled connections `conns` (stdin, stdout, stderr) to the
/// created `process` and begins relaying them; with `terminal`, there is
/// no stderr stream.
async fn attach(
    client: &Client,
    process: ProcessId,
    conns: [Option<Conn>; 3],
    terminal: bool,
    io: ExecIo,
) -> Result<Relays, ClientError> {
    let stderr = if terminal { None } else { io.stderr };
    // The streams are attached concurrently: each is a connection of its own.
    let attach = |conn: Option<Conn>, kind| async move {
        match conn {
            Some(conn) => client.attach_over(conn, process, kind).await.map(Some),
            None => Ok(None),
        }
    };
    let [stdin, stdout, stderr_dialled] = conns;
    let (stdin_conn, stdout_conn, stderr_conn) = tokio::try_join!(
        attach(stdin, StreamKind::Stdin),
        attach(stdout, StreamKind::Stdout),
        attach(stderr_dialled, StreamKind::Stderr),
    )?;
    let stdin = match (io.stdin, stdin_conn) {
        (Some(mut reader), Some(mut conn)) => Some(tokio::spawn(async move {
            // The process may exit before its input ends; a failed write then
            // is expected and harmless.
            let _ = tokio::io::copy(&mut reader, &mut conn).await;
            let _ = conn.shutdown().await;
        })),
        _ => None,
    };
    let mut outputs = Vec::new();
    for (writer, conn) in [(io.stdout, stdout_conn), (stderr, stderr_conn)] {
        if let (Some(mut writer), Some(conn)) = (writer, conn) {
            outputs.push(tokio::spawn(async move { relay_output(conn, &mut writer).await }));
        }
    }
    Ok(Relays { stdin, outputs })
}

impl Running {
    /// Waits for the process to end and for its output to be written out on
    /// the host, then returns how it ended.
    pub async fn wait(self) -> Result<ExitStatus, ClientError> {
        let status = self.exit.get().await;
        // The agent answers only after the output streams ended, so these
        // relays are finishing their last writes.
        for relay in self.outputs {
            let _ = relay.await;
        }
        if let Some(stdin) = self.stdin {
            stdin.abort();
        }
        status
    }
}

/// Copies one output stream to `writer` until the agent ends it. When the
/// writer fails (a closed pipe on the host), the stream is still read to its
/// end and discarded: closing it early with unread data would leave the
/// guest's side waiting on some vsock backends, and the process blocked on a
/// full pipe.
async fn relay_output(mut conn: Conn, writer: &mut (dyn AsyncWrite + Send + Unpin)) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut writable = true;
    loop {
        let n = match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if writable && writer.write_all(&buf[..n]).await.is_err() {
            writable = false;
        }
    }
    if writable {
        let _ = writer.flush().await;
    }
}

/// Runs a process to completion: [`spawn`], then [`Running::wait`].
pub async fn exec(client: &Client, spec: ProcessSpec, io: ExecIo) -> Result<ExitStatus, ClientError> {
    spawn(client, spec, io).await?.wait().await
}
