//! A typed client of the vminitd agent.
//!
//! One [`Client`] owns one control session. Requests may be issued
//! concurrently from many tasks (`&self` methods): a reader task matches each
//! response to its request by id; [`Client::send`] writes a request and
//! leaves its answer to be awaited later, so that requests travel
//! together. Stdio streams are separate connections, opened with
//! [`Client::attach`] (or dialled ahead with [`Client::dial_stream`]).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_proto::{
    encode_frame, read_frame, write_frame, AgentKey, AttachReply, Conn, ContainerCreated, ContainerInfo, ContainerSpec,
    Created, Endpoint, ErrorBody, ExitStatus, FrameError, HelloReply, Op, Open, Outcome, ProcessId, ProcessSpec,
    Request, Response, Started, Stats, StreamKind, Transport, TransportError, MAX_FRAME_LEN, PROTOCOL_VERSION,
    READY_LINE,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use tokio::sync::oneshot;

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The agent could not be reached, or refused the connection.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A frame could not be written or read (too large, not JSON, cut
    /// short).
    #[error("{endpoint}: {source}")]
    Frame {
        /// The agent's address.
        endpoint: String,
        /// What was wrong with the frame.
        source: FrameError,
    },
    /// The agent answered with an error.
    #[error("{op}: {error}")]
    Agent {
        /// The request's op (`create`, `start_container`, ...).
        op: &'static str,
        /// The agent's error: its code, its message, what failed to start.
        error: ErrorBody,
    },
    /// The session ended before the answer came.
    #[error("{op}: the agent closed the connection")]
    Closed {
        /// The request's op.
        op: &'static str,
    },
    /// The answer did not have the expected shape.
    #[error("{op}: unexpected answer from the agent: {source}")]
    Decode {
        /// The request's op.
        op: &'static str,
        /// Why the answer did not decode.
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The agent's error, when the agent answered with one.
    pub fn agent_error(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Agent { error, .. } => Some(error),
            _ => None,
        }
    }
}

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Outcome<Value>>>>>>;

/// The id of a session's first request, the handshake.
const HELLO_ID: u64 = 1;

/// The session's first request, the handshake, encoded.
fn hello_frame() -> Result<Vec<u8>, FrameError> {
    encode_frame(&Request {
        id: HELLO_ID,
        op: Op::Hello {
            version: PROTOCOL_VERSION,
            client: format!("vmshim {}", env!("CARGO_PKG_VERSION")),
        },
    })
}

/// How long a client whose first write failed waits for the agent's reason.
const REFUSAL_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Where an agent listens, and the agent key it asks every connection for
/// (see [`agent_proto::key`]): the key of the VM the host booted, `None` for
/// an agent that was given none (one in a namespace, behind a 0600 socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentAddr {
    /// Where the agent listens: a Unix socket, vsock or hybrid vsock.
    pub endpoint: Endpoint,
    /// The key to show in the first frame; `None` for an agent given none.
    pub key: Option<AgentKey>,
}

impl AgentAddr {
    /// The agent at `endpoint` that asks for `key`.
    pub fn new(endpoint: Endpoint, key: Option<AgentKey>) -> AgentAddr {
        AgentAddr { endpoint, key }
    }
}

impl From<Endpoint> for AgentAddr {
    fn from(endpoint: Endpoint) -> AgentAddr {
        AgentAddr { endpoint, key: None }
    }
}

impl From<&Endpoint> for AgentAddr {
    fn from(endpoint: &Endpoint) -> AgentAddr {
        AgentAddr::from(endpoint.clone())
    }
}

impl From<&AgentAddr> for AgentAddr {
    fn from(addr: &AgentAddr) -> AgentAddr {
        addr.clone()
    }
}

/// A control session with an agent.
pub struct Client {
    addr: AgentAddr,
    writer: tokio::sync::Mutex<WriteHalf<Conn>>,
    /// Requests waiting for an answer; `None` once the session has ended.
    pending: Pending,
    /// Why the agent closed the session, where it said (an answer with id
    /// 0: a refused connection, a frame it could not read).
    refusal: Arc<Mutex<Option<ErrorBody>>>,
    next_id: AtomicU64,
    hello: HelloReply,
    hello_rtt: Duration,
    hello_sent: Instant,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects, opens a control session and shakes hands.
    pub async fn connect(addr: impl Into<AgentAddr>) -> Result<Client, ClientError> {
        let addr = addr.into();
        let conn = addr.endpoint.connect().await?;
        let frame_err = |source| ClientError::Frame {
            endpoint: addr.endpoint.to_string(),
            source,
        };
        // The opening and the handshake go in one write, and the first
        // answer is read here: an agent that refuses the connection answers
        // and closes without reading the rest, and its reason must still be
        // what the caller sees (not the broken pipe of a later write).
        let mut first = encode_frame(&Open::Control { key: addr.key.clone() }).map_err(frame_err)?;
        first.extend(hello_frame().map_err(frame_err)?);
        Client::handshake(addr, conn, first, None).await
    }

    /// Opens a control session on the connection the agent itself opened
    /// to announce that it listens (see [`agent_proto::key`]): the key line
    /// and the handshake go in one write, as soon as the connection is
    /// there, and the agent's readiness line is read before the answer.
    /// No connection is dialled: the session is there the moment the agent
    /// has its key. `addr` must carry the key.
    pub async fn over_readiness(addr: AgentAddr, conn: Conn) -> Result<Client, ClientError> {
        let frame_err = |source| ClientError::Frame {
            endpoint: addr.endpoint.to_string(),
            source,
        };
        let Some(key) = &addr.key else {
            let missing = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no agent key to hand over");
            return Err(frame_err(FrameError::Io(missing)));
        };
        let mut first = key.line();
        first.extend(hello_frame().map_err(frame_err)?);
        Client::handshake(addr, conn, first, Some(READY_LINE)).await
    }

    /// Writes `first` (ending with the hello), reads the line `expect`
    /// where there is one, then the hello's answer, and starts the reader.
    async fn handshake(
        addr: AgentAddr,
        mut conn: Conn,
        first: Vec<u8>,
        expect: Option<&[u8]>,
    ) -> Result<Client, ClientError> {
        let endpoint = &addr.endpoint;
        let frame_err = |source| ClientError::Frame {
            endpoint: endpoint.to_string(),
            source,
        };
        let sent = Instant::now();
        let written = conn.write_all(&first).await;
        if let (Ok(()), Some(expect)) = (&written, expect) {
            let mut line = vec![0u8; expect.len()];
            conn.read_exact(&mut line)
                .await
                .map_err(|e| frame_err(FrameError::Io(e)))?;
            if line != expect {
                let what = format!(
                    "the agent's readiness line is {:?}, not {:?}",
                    String::from_utf8_lossy(&line),
                    String::from_utf8_lossy(expect)
                );
                let bad = std::io::Error::new(std::io::ErrorKind::InvalidData, what);
                return Err(frame_err(FrameError::Io(bad)));
            }
        }
        let answer = match &written {
            Ok(()) => read_frame::<_, Response>(&mut conn, MAX_FRAME_LEN).await,
            // What the agent said before it closed, if anything.
            Err(_) => tokio::time::timeout(REFUSAL_READ_TIMEOUT, read_frame(&mut conn, MAX_FRAME_LEN))
                .await
                .unwrap_or(Ok(None)),
        };
        let hello_rtt = sent.elapsed();
        let hello: HelloReply = match (answer, written) {
            (Ok(Some(Response { id: HELLO_ID, outcome })), _) => match outcome {
                Outcome::Ok(value) => {
                    serde_json::from_value(value).map_err(|source| ClientError::Decode { op: "hello", source })?
                }
                Outcome::Err(error) => return Err(ClientError::Agent { op: "hello", error }),
            },
            (
                Ok(Some(Response {
                    outcome: Outcome::Err(error),
                    ..
                })),
                _,
            ) => return Err(ClientError::Agent { op: "hello", error }),
            (_, Err(e)) => return Err(frame_err(FrameError::Io(e))),
            (Ok(_), Ok(())) => return Err(ClientError::Closed { op: "hello" }),
            (Err(e), Ok(())) => return Err(frame_err(e)),
        };
        let (mut rd, wr) = tokio::io::split(conn);
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let refusal: Arc<Mutex<Option<ErrorBody>>> = Arc::default();
        let reader = {
            let pending = pending.clone();
            let refusal = refusal.clone();
            tokio::spawn(async move {
                while let Ok(Some(resp)) = read_frame::<_, Response>(&mut rd, MAX_FRAME_LEN).await {
                    // Id 0: the agent could not read a frame, and closes;
                    // everyone waiting learns why.
                    if resp.id == 0 {
                        if let Outcome::Err(error) = &resp.outcome {
                            *lock(&refusal) = Some(error.clone());
                        }
                        if let Some(map) = lock(&pending).take() {
                            for (_, tx) in map {
                                let _ = tx.send(resp.outcome.clone());
                            }
                        }
                        break;
                    }
                    let waiter = lock(&pending).as_mut().and_then(|map| map.remove(&resp.id));
                    if let Some(tx) = waiter {
                        let _ = tx.send(resp.outcome);
                    }
                }
                // The session is over: every outstanding request learns it.
                lock(&pending).take();
            })
        };
        Ok(Client {
            addr: addr.clone(),
            writer: tokio::sync::Mutex::new(wr),
            pending,
            next_id: AtomicU64::new(HELLO_ID + 1),
            refusal,
            hello,
            hello_rtt,
            hello_sent: sent,
            reader,
        })
    }

    /// Connects, retrying until the agent answers or `deadline` passes.
    /// Returns the last error when it never answered.
    pub async fn connect_with_deadline(addr: impl Into<AgentAddr>, deadline: Instant) -> Result<Client, ClientError> {
        let addr = addr.into();
        let mut delay = Duration::from_millis(2);
        loop {
            match Client::connect(&addr).await {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() + delay >= deadline => return Err(e),
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// The endpoint this client is connected to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.addr.endpoint
    }

    /// The endpoint and the key this client connected with.
    pub fn addr(&self) -> &AgentAddr {
        &self.addr
    }

    /// The agent's answer to the handshake.
    pub fn hello(&self) -> &HelloReply {
        &self.hello
    }

    /// The round trip of the handshake, and when it was sent: the agent's
    /// `now_ns` was taken about half a round trip after that instant.
    pub fn hello_timing(&self) -> (Instant, Duration) {
        (self.hello_sent, self.hello_rtt)
    }

    /// Sends one request and decodes its answer.
    pub async fn call<T: DeserializeOwned>(&self, op: Op) -> Result<T, ClientError> {
        self.send(op).await?.get().await
    }

    /// Writes one request and returns at once with the way to its answer:
    /// requests sent one after the other travel together, each answered
    /// as soon as the agent has done it (the agent runs a session's
    /// requests concurrently).
    pub async fn send<T: DeserializeOwned>(&self, op: Op) -> Result<Answer<T>, ClientError> {
        let name = op.name();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(map) => map.insert(id, tx),
            None => return Err(closed(&self.refusal, name)),
        };
        let sent = {
            let mut w = self.writer.lock().await;
            write_frame(&mut *w, &Request { id, op }).await
        };
        if let Err(source) = sent {
            if let Some(map) = lock(&self.pending).as_mut() {
                map.remove(&id);
            }
            return Err(ClientError::Frame {
                endpoint: self.addr.endpoint.to_string(),
                source,
            });
        }
        Ok(Answer {
            op: name,
            rx,
            refusal: self.refusal.clone(),
            answer: PhantomData,
        })
    }

    /// The agent's timeline with the spans of its work so far; see
    /// [`Op::Timeline`].
    pub async fn timeline(&self) -> Result<agent_proto::BootTimeline, ClientError> {
        self.call(Op::Timeline).await
    }

    /// Prepares a process; see [`Op::Create`].
    pub async fn create(&self, spec: ProcessSpec) -> Result<ProcessId, ClientError> {
        Ok(self.call::<Created>(Op::Create(spec)).await?.process)
    }

    /// Opens a stream connection for one stdio stream of a created process.
    pub async fn attach(&self, process: ProcessId, stream: StreamKind) -> Result<Conn, ClientError> {
        let conn = self.dial_stream().await?;
        self.attach_over(conn, process, stream).await
    }

    /// Dials a connection for a stream, to be attached with
    /// [`Client::attach_over`] once the process exists: a host dials while
    /// its `create` is on the way. The agent gives a connection 10 seconds
    /// to send its first frame.
    pub async fn dial_stream(&self) -> Result<Conn, ClientError> {
        Ok(self.addr.endpoint.connect().await?)
    }

    /// Attaches `conn`, from [`Client::dial_stream`], to one stdio stream
    /// of a created process.
    pub async fn attach_over(
        &self,
        mut conn: Conn,
        process: ProcessId,
        stream: StreamKind,
    ) -> Result<Conn, ClientError> {
        let frame_err = |source| ClientError::Frame {
            endpoint: self.addr.endpoint.to_string(),
            source,
        };
        let open = Open::Attach {
            process,
            stream,
            key: self.addr.key.clone(),
        };
        write_frame(&mut conn, &open).await.map_err(frame_err)?;
        match read_frame::<_, AttachReply>(&mut conn, MAX_FRAME_LEN)
            .await
            .map_err(frame_err)?
        {
            Some(Outcome::Ok(())) => Ok(conn),
            Some(Outcome::Err(error)) => Err(ClientError::Agent { op: "attach", error }),
            None => Err(ClientError::Closed { op: "attach" }),
        }
    }

    /// Starts a created process; returns its pid in the guest.
    pub async fn start(&self, process: ProcessId) -> Result<i32, ClientError> {
        Ok(self.call::<Started>(Op::Start { process }).await?.pid)
    }

    /// Waits until the process has ended and its output has been delivered.
    pub async fn wait(&self, process: ProcessId) -> Result<ExitStatus, ClientError> {
        self.call(Op::Wait { process }).await
    }

    /// Sends a [`Client::wait`] and returns at once with the way to its
    /// answer: sent right behind a `start`, it is held by the agent
    /// through the start (see [`Client::send`]).
    pub async fn send_wait(&self, process: ProcessId) -> Result<Answer<ExitStatus>, ClientError> {
        self.send(Op::Wait { process }).await
    }

    /// Sends signal number `signal` to the process.
    pub async fn signal(&self, process: ProcessId, signal: i32) -> Result<(), ClientError> {
        self.call(Op::Signal { process, signal }).await
    }

    /// Sets the terminal size of a process started with a terminal.
    pub async fn resize(&self, process: ProcessId, rows: u16, cols: u16) -> Result<(), ClientError> {
        self.call(Op::Resize { process, rows, cols }).await
    }

    /// Resource figures of the guest and the agent.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        self.call(Op::Stats).await
    }

    /// Sizes the workloads' cgroup for a guest of `guest_total_bytes`; see
    /// [`Op::ResizeWorkloads`].
    pub async fn resize_workloads(&self, guest_total_bytes: u64) -> Result<agent_proto::CgroupMemory, ClientError> {
        self.call(Op::ResizeWorkloads { guest_total_bytes }).await
    }

    /// Asks the agent to stop everything and power off (or exit).
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.call(Op::Shutdown).await
    }

    /// Creates a container; see [`Op::CreateContainer`].
    pub async fn create_container(&self, spec: ContainerSpec) -> Result<ContainerCreated, ClientError> {
        self.call(Op::CreateContainer { spec: Box::new(spec) }).await
    }

    /// Starts a created container; returns its process's pid in the guest.
    pub async fn start_container(&self, id: &str) -> Result<i32, ClientError> {
        Ok(self
            .call::<Started>(Op::StartContainer {
                container: id.to_owned(),
            })
            .await?
            .pid)
    }

    /// Prepares a process in a running container; start it with
    /// [`Client::start`].
    pub async fn exec_container(&self, id: &str, process: ProcessSpec) -> Result<ProcessId, ClientError> {
        Ok(self
            .call::<Created>(Op::ExecContainer {
                container: id.to_owned(),
                process,
            })
            .await?
            .process)
    }

    /// A container's state.
    pub async fn container_state(&self, id: &str) -> Result<ContainerInfo, ClientError> {
        self.call(Op::ContainerState {
            container: id.to_owned(),
        })
        .await
    }

    /// Every container of the agent.
    pub async fn list_containers(&self) -> Result<Vec<ContainerInfo>, ClientError> {
        self.call(Op::ListContainers).await
    }

    /// Signals a container's process (or, with `all`, every process of it).
    pub async fn kill_container(&self, id: &str, signal: i32, all: bool) -> Result<(), ClientError> {
        self.call(Op::KillContainer {
            container: id.to_owned(),
            signal,
            all,
        })
        .await
    }

    /// Deletes a container (with `force`, a running one is killed first).
    pub async fn delete_container(&self, id: &str, force: bool) -> Result<(), ClientError> {
        self.call(Op::DeleteContainer {
            container: id.to_owned(),
            force,
        })
        .await
    }

    /// Freezes a running container's processes.
    pub async fn pause_container(&self, id: &str) -> Result<(), ClientError> {
        self.call(Op::PauseContainer {
            container: id.to_owned(),
        })
        .await
    }

    /// Thaws a paused container.
    pub async fn resume_container(&self, id: &str) -> Result<(), ClientError> {
        self.call(Op::ResumeContainer {
            container: id.to_owned(),
        })
        .await
    }

    /// New cgroup limits for a container.
    pub async fn update_container(&self, id: &str, resources: agent_proto::Resources) -> Result<(), ClientError> {
        self.call(Op::UpdateContainer {
            container: id.to_owned(),
            resources,
        })
        .await
    }

    /// The figures of a container's cgroup; see [`Op::ContainerStats`].
    pub async fn container_stats(&self, id: &str) -> Result<agent_proto::ContainerStats, ClientError> {
        self.call(Op::ContainerStats {
            container: id.to_owned(),
        })
        .await
    }

    /// Closes the control session.
    pub async fn close(self) {
        let _ = self.writer.lock().await.shutdown().await;
    }
}

/// A request the agent has been sent, its answer still to come
/// ([`Client::send`]).
pub struct Answer<T> {
    op: &'static str,
    rx: oneshot::Receiver<Outcome<Value>>,
    refusal: Arc<Mutex<Option<ErrorBody>>>,
    answer: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Answer<T> {
    /// Waits for the answer and decodes it.
    pub async fn get(self) -> Result<T, ClientError> {
        let op = self.op;
        match self.rx.await {
            Ok(Outcome::Ok(value)) => {
                serde_json::from_value(value).map_err(|source| ClientError::Decode { op, source })
            }
            Ok(Outcome::Err(error)) => Err(ClientError::Agent { op, error }),
            Err(_) => Err(closed(&self.refusal, op)),
        }
    }
}

/// The error for a request on a session that has ended: the agent's
/// reason where it gave one.
fn closed(refusal: &Mutex<Option<ErrorBody>>, op: &'static str) -> ClientError {
    match lock(refusal).clone() {
        Some(error) => ClientError::Agent { op, error },
        None => ClientError::Closed { op },
    }
}

/// Locks `m`, whatever a panicking holder left in it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
