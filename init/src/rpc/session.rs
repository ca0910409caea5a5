//! A control session: requests in, responses out.
//!
//! One reader decodes each frame; each request runs in its own task
//! (requests overlap: a wait does not hold up a signal); every response goes
//! through one writer task. An unknown op or a request with bad fields gets
//! an error and the session goes on; a frame that cannot be read gets
//! `bad_frame` and the session ends. Closing (or half-closing) the session
//! cancels its outstanding requests and releases its processes.
//!
//! Bounded: at most [`MAX_IN_FLIGHT`] requests run at once (one more is
//! answered `busy`), and at most [`RESPONSE_QUEUE`] answers wait for the
//! writer; a host that stops reading holds up its own requests, not the
//! agent's memory.

use std::sync::Arc;
use std::time::Duration;

use agent_proto::frame::{encode_frame, read_frame_bytes};
use agent_proto::{
    parse_request, BootTimeline, Conn, ErrorBody, ErrorCode, FrameError, HelloReply, Op, Outcome, Request, Response,
    MAX_FRAME_LEN, PROTOCOL_VERSION,
};
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::agent::Agent;
use super::errors::{shutting_down, WireError};
use crate::guest::{network, protect, stats};
use crate::process::SessionId;
use crate::sys::timeline;

/// How long a shutdown waits for its answer to be written.
const SHUTDOWN_ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// How many requests of one session may run at once.
pub const MAX_IN_FLIGHT: usize = 1024;

/// How many encoded answers may wait for the session's writer.
const RESPONSE_QUEUE: usize = 64;

/// One encoded response, and who wants to know it was written.
struct Outgoing {
    frame: Vec<u8>,
    written: Option<oneshot::Sender<()>>,
}

/// The way to the session's writer.
#[derive(Clone)]
struct Responder(mpsc::Sender<Outgoing>);

impl Responder {
    async fn send(&self, id: u64, outcome: Outcome<Value>) {
        let _ = self
            .0
            .send(Outgoing {
                frame: encode(id, outcome),
                written: None,
            })
            .await;
    }

    /// Sends, and returns what resolves once the response is written.
    async fn send_acked(&self, id: u64, outcome: Outcome<Value>) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let _ = self
            .0
            .send(Outgoing {
                frame: encode(id, outcome),
                written: Some(tx),
            })
            .await;
        rx
    }
}

fn encode(id: u64, outcome: Outcome<Value>) -> Vec<u8> {
    encode_frame(&Response { id, outcome }).unwrap_or_else(|e| {
        let error = ErrorBody::new(ErrorCode::Internal, format!("cannot encode the response: {e}"));
        // A short error always encodes.
        encode_frame(&Response {
            id,
            outcome: Outcome::Err(error),
        })
        .unwrap_or_default()
    })
}

/// Serves one control session until the host closes it.
pub async fn serve(agent: Arc<Agent>, conn: Conn) {
    let session = agent.new_session();
    debug!("session {session}: opened");
    let (mut reader, writer) = tokio::io::split(conn);
    let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
    let writer = tokio::spawn(write_responses(writer, rx));
    let responder = Responder(tx);
    let mut requests = JoinSet::new();
    loop {
        while requests.try_join_next().is_some() {}
        let body = match read_frame_bytes(&mut reader, MAX_FRAME_LEN).await {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(FrameError::Io(e)) => {
                debug!("session {session}: {e}");
                break;
            }
            Err(e) => {
                debug!("session {session}: {e}");
                responder
                    .send(0, Outcome::Err(ErrorBody::new(ErrorCode::BadFrame, e.to_string())))
                    .await;
                break;
            }
        };
        match parse_request(&body) {
            Ok(Request { id, op: Op::Shutdown }) => {
                // Answered before the shutdown begins.
                let written = responder.send_acked(id, Outcome::Ok(Value::Null)).await;
                let agent = agent.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(SHUTDOWN_ANSWER_TIMEOUT, written).await;
                    agent.request_shutdown();
                });
            }
            Ok(Request { id, op }) if requests.len() >= MAX_IN_FLIGHT => {
                let message = format!(
                    "{}: {MAX_IN_FLIGHT} requests of this session are still running; retry once one has answered",
                    op.name()
                );
                responder
                    .send(id, Outcome::Err(ErrorBody::new(ErrorCode::Busy, message)))
                    .await;
            }
            Ok(Request { id, op }) => {
                let agent = agent.clone();
                let responder = responder.clone();
                requests.spawn(async move {
                    let name = op.name();
                    let _span = timeline::begin(|| format!("request {name}"));
                    let outcome = match handle(&agent, session, op).await {
                        Ok(value) => Outcome::Ok(value),
                        Err(error) => Outcome::Err(error),
                    };
                    responder.send(id, outcome).await;
                });
            }
            Err((id, error)) => {
                let bad_frame = error.code == ErrorCode::BadFrame;
                debug!("session {session}: request {id}: {error}");
                responder.send(id, Outcome::Err(error)).await;
                if bad_frame {
                    break;
                }
            }
        }
    }
    requests.abort_all();
    drop(requests);
    agent.processes.session_closed(session);
    drop(responder);
    let _ = writer.await;
    debug!("session {session}: closed");
}

async fn write_responses(mut writer: WriteHalf<Conn>, mut rx: mpsc::Receiver<Outgoing>) {
    while let Some(out) = rx.recv().await {
        if let Err(e) = writer.write_all(&out.frame).await {
            debug!("cannot write a response: {e}");
            break;
        }
        if let Some(written) = out.written {
            let _ = written.send(());
        }
    }
    let _ = writer.shutdown().await;
}

/// Runs one request: each op a call into the layer that does it, its error
/// mapped to the protocol's. Work that starts something new is refused
/// once the shutdown has begun.
async fn handle(agent: &Arc<Agent>, session: SessionId, op: Op) -> Result<Value, ErrorBody> {
    let processes = &agent.processes;
    let containers = &agent.containers;
    let takes_work = matches!(
        op,
        Op::Create(_)
            | Op::Start { .. }
            | Op::CreateContainer { .. }
            | Op::StartContainer { .. }
            | Op::ExecContainer { .. }
    );
    if takes_work && agent.shutting_down() {
        return Err(shutting_down());
    }
    match op {
        Op::Hello { version, client } => hello(agent, version, &client),
        Op::Create(spec) => json(processes.create(session, spec).map_err(|e| e.to_body())?),
        Op::ConfigureNetwork(config) => {
            network::apply(agent.mode, &agent.rootfs, &agent.network_files, &config)
                .await
                .map_err(|e| e.to_body())?;
            Ok(Value::Null)
        }
        Op::Start { process } => json(processes.start(process).await.map_err(|e| e.to_body())?),
        Op::Wait { process } => json(processes.wait(process).await.map_err(|e| e.to_body())?),
        Op::Signal { process, signal } => {
            processes.signal(process, signal).await.map_err(|e| e.to_body())?;
            Ok(Value::Null)
        }
        Op::Resize { process, rows, cols } => {
            processes.resize(process, rows, cols).await.map_err(|e| e.to_body())?;
            Ok(Value::Null)
        }
        Op::Stats => json(stats::collect(processes.len()).map_err(|e| e.to_body())?),
        Op::Timeline => json(BootTimeline {
            spans: timeline::spans(),
            ..agent.timeline()
        }),
        Op::Shutdown => {
            agent.request_shutdown();
            Ok(Value::Null)
        }
        Op::CreateContainer { spec } => json(containers.create(*spec).await.map_err(|e| e.to_body())?),
        Op::StartContainer { container: id } => json(containers.start(&id).await.map_err(|e| e.to_body())?),
        Op::ExecContainer { container: id, process } => {
            json(containers.exec(session, &id, process).map_err(|e| e.to_body())?)
        }
        Op::ContainerState { container: id } => json(containers.state(&id).map_err(|e| e.to_body())?),
        Op::ListContainers => json(containers.list()),
        Op::KillContainer {
            container: id,
            signal,
            all,
        } => {
            containers.kill(&id, signal, all).await.map_err(|e| e.to_body())?;
            Ok(Value::Null)
        }
        Op::DeleteContainer { container: id, force } => {
            containers.delete(&id, force).await.map_err(|e| e.to_body())?;
            Ok(Value::Null)
        }
        Op::PauseContainer { container: id } => {
            containers.pause(&id).await.map_err(|e| e.to_body())?;
            Ok(Value::Null)
        }
        Op::ResumeContainer { container: id } => {
            containers.resume(&id).await.map_err(|e| e.to_body())?;
            Ok(Value::Null)
        }
        Op::UpdateContainer {
            container: id,
            resources,
        } => {
            containers.update(&id, &resources).map_err(|e| e.to_body())?;
            Ok(Value::Null)
        }
        Op::ContainerStats { container: id } => json(containers.stats(&id).map_err(|e| e.to_body())?),
        Op::ResizeWorkloads { guest_total_bytes } => {
            // The write waits for the kernel to reclaim: off the event loop.
            let resized = tokio::task::spawn_blocking(move || protect::resize_workloads(guest_total_bytes))
                .await
                .map_err(|e| ErrorBody::new(ErrorCode::Internal, format!("resizing the workloads: {e}")))?;
            json(resized.map_err(|e| e.to_body())?)
        }
    }
}

fn hello(agent: &Agent, version: u32, client: &str) -> Result<Value, ErrorBody> {
    if version != PROTOCOL_VERSION {
        return Err(ErrorBody::new(
            ErrorCode::VersionMismatch,
            format!("client \"{client}\" speaks protocol version {version}, this agent speaks {PROTOCOL_VERSION}"),
        ));
    }
    debug!("hello from \"{client}\"");
    json(HelloReply {
        version: PROTOCOL_VERSION,
        agent: format!("vminitd {}", env!("CARGO_PKG_VERSION")),
        mode: agent.mode.name().to_owned(),
        boot: agent.timeline(),
        now_ns: timeline::boottime_ns(),
    })
}

fn json<T: Serialize>(value: T) -> Result<Value, ErrorBody> {
    serde_json::to_value(value)
        .map_err(|e| ErrorBody::new(ErrorCode::Internal, format!("cannot encode the answer: {e}")))
}
