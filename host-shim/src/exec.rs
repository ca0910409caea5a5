//! Running one process through the agent, with its stdio relayed.

use agent_proto::{ExitStatus, ProcessId, ProcessSpec, StreamKind};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::client::{Client, ClientError};

/// Where a process's stdio comes from and goes to on the host. A stream left
/// `None` is not attached: the process gets `/dev/null` for it.
#[derive(Default)]
pub struct ExecIo {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
}

/// A started process whose stdio is being relayed.
pub struct Running {
    /// The agent's id for the process.
    pub process: ProcessId,
    /// Its pid in the guest.
    pub pid: i32,
    stdin: Option<JoinHandle<()>>,
    outputs: Vec<JoinHandle<()>>,
}

/// Creates the process, attaches the streams `io` asks for, starts it and
/// begins relaying. With `spec.terminal`, stdout carries the terminal and
/// `io.stderr` is not used.
pub async fn spawn(client: &Client, spec: ProcessSpec, io: ExecIo) -> Result<Running, ClientError> {
    let terminal = spec.terminal;
    let process = client.create(spec).await?;
    let mut outputs = Vec::new();
    let mut stdin = None;
    if let Some(mut reader) = io.stdin {
        let mut conn = client.attach(process, StreamKind::Stdin).await?;
        stdin = Some(tokio::spawn(async move {
            // The process may exit before its input ends; a failed write then
            // is expected and harmless.
            let _ = tokio::io::copy(&mut reader, &mut conn).await;
            let _ = conn.shutdown().await;
        }));
    }
    let out_streams = [
        (StreamKind::Stdout, io.stdout),
        (StreamKind::Stderr, if terminal { None } else { io.stderr }),
    ];
    for (kind, writer) in out_streams {
        if let Some(mut writer) = writer {
            let mut conn = client.attach(process, kind).await?;
            outputs.push(tokio::spawn(async move {
                if tokio::io::copy(&mut conn, &mut writer).await.is_ok() {
                    let _ = writer.flush().await;
                }
            }));
        }
    }
    let pid = client.start(process).await?;
    Ok(Running {
        process,
        pid,
        stdin,
        outputs,
    })
}

impl Running {
    /// Waits for the process to end and for its output to be written out on
    /// the host, then returns how it ended.
    pub async fn wait(self, client: &Client) -> Result<ExitStatus, ClientError> {
        let status = client.wait(self.process).await;
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

/// Runs a process to completion: [`spawn`], then [`Running::wait`].
pub async fn exec(client: &Client, spec: ProcessSpec, io: ExecIo) -> Result<ExitStatus, ClientError> {
    spawn(client, spec, io).await?.wait(client).await
}
