//! The accept loop: every connection is checked ([`Access`]) and starts
//! with one `Open` frame that shows the agent key and says whether it is a
//! control session or an attached stream.
//!
//! Limits, so that no client, hostile or broken, can stop the agent serving
//! its host:
//!
//! * a peer that may not connect is told so and closed before a byte is
//!   read from it;
//! * the first frame has [`OPEN_DEADLINE`] to arrive whole and at most
//!   [`MAX_OPEN_FRAME_LEN`] bytes;
//! * at most [`MAX_UNAUTHENTICATED`] connections wait for their first frame
//!   (or, at boot, for the agent key to check it against): a new one drops
//!   the oldest, so a flood of idle or half-written connections cannot keep
//!   the host's own out;
//! * at most [`MAX_SESSIONS`] control sessions at once (more are answered
//!   `busy`); attached streams are bounded by the processes they belong to.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_proto::frame::read_frame_bytes;
use agent_proto::{
    write_frame, AttachReply, Conn, ErrorBody, ErrorCode, FrameError, Listener, Open, Outcome, Response,
};
use agent_proto::{Peer, MAX_OPEN_FRAME_LEN};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::access::Access;
use super::agent::Agent;
use super::errors::WireError;
use super::session;

/// How long writing a refusal may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection has to send its whole first frame.
const OPEN_DEADLINE: Duration = Duration::from_secs(10);

/// How many connections may wait for their first frame at once: enough
/// for a host that opens hundreds of streams at once (each connection
/// costs the agent a descriptor and at most a 4 KiB frame meanwhile).
pub const MAX_UNAUTHENTICATED: usize = 512;

/// How many control sessions may be open at once.
pub const MAX_SESSIONS: usize = 256;

/// Accepts connections until the future is dropped (shutdown).
pub async fn serve(agent: Arc<Agent>, listener: Listener, access: Arc<Access>) -> Infallible {
    let waiting = Waiting::default();
    let sessions = Arc::new(Semaphore::new(MAX_SESSIONS));
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                if let Err(refusal) = access.admit(&peer) {
                    // Told why and closed, unread; logged at debug level,
                    // so that a flood of them cannot flood the console.
                    let error = ErrorBody::new(ErrorCode::Unauthorized, refusal.to_string());
                    tokio::spawn(refuse(conn, error));
                    continue;
                }
                let ticket = waiting.enter();
                tokio::spawn(connection(
                    agent.clone(),
                    access.clone(),
                    sessions.clone(),
                    conn,
                    peer,
                    ticket,
                ));
            }
            Err(e) => {
                // E.g. out of descriptors: wait a little rather than spin.
                warn!("{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connections that have not shown their key yet, oldest first; each
/// leaves on its first frame (or its end), or is told to go when
/// [`MAX_UNAUTHENTICATED`] newer ones wait.
#[derive(Clone, Default)]
struct Waiting(Arc<Mutex<WaitingInner>>);

#[derive(Default)]
struct WaitingInner {
    next: u64,
    /// By arrival: how to tell each to go.
    tasks: BTreeMap<u64, Arc<Notify>>,
}

/// A connection's place among the waiting ones.
struct Ticket {
    id: u64,
    waiting: Waiting,
    /// Notified when the connection must make room for a newer one (a
    /// notification before anyone waits is kept).
    evicted: Arc<Notify>,
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitingInner> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new connection waits; at the cap, the oldest one is told to go.
    fn enter(&self) -> Ticket {
        let evicted = Arc::new(Notify::new());
        let mut inner = self.lock();
        let id = inner.next;
        inner.next += 1;
        inner.tasks.insert(id, evicted.clone());
        while inner.tasks.len() > MAX_UNAUTHENTICATED {
            if let Some((oldest, task)) = inner.tasks.pop_first() {
                debug!("connection {oldest}: dropped unread for a newer one ({MAX_UNAUTHENTICATED} wait at most)");
                task.notify_one();
            }
        }
        Ticket {
            id,
            waiting: self.clone(),
            evicted,
        }
    }
}

impl Ticket {
    /// The connection has sent its first frame, or ended.
    fn leave(&self) {
        self.waiting.lock().tasks.remove(&self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Reads the `Open` frame, checks the key and hands the connection on.
async fn connection(
    agent: Arc<Agent>,
    access: Arc<Access>,
    sessions: Arc<Semaphore>,
    mut conn: Conn,
    peer: Peer,
    ticket: Ticket,
) {
    let first = tokio::select! {
        // A frame that has arrived is read even if the connection was told
        // to go before its task first ran.
        biased;
        first = tokio::time::timeout(OPEN_DEADLINE, read_frame_bytes(&mut conn, MAX_OPEN_FRAME_LEN)) => first,
        () = ticket.evicted.notified() => return,
    };
    let body = match first {
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return,
        Ok(Err(FrameError::Io(e))) => {
            debug!("{peer}: connection failed before its first frame: {e}");
            return;
        }
        Ok(Err(e)) => return refuse(conn, ErrorBody::new(ErrorCode::BadFrame, e.to_string())).await,
        Err(_) => {
            let message = format!("no complete first frame within {OPEN_DEADLINE:?}");
            return refuse(conn, ErrorBody::new(ErrorCode::BadFrame, message)).await;
        }
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return refuse(
                conn,
                ErrorBody::new(ErrorCode::BadFrame, format!("frame is not JSON: {e}")),
            )
            .await
        }
    };
    let open: Open = match serde_json::from_value(value) {
        Ok(open) => open,
        Err(e) => {
            let message = format!("the first frame must be {{\"open\":\"control\"}} or an attach: {e}");
            return refuse(conn, ErrorBody::new(ErrorCode::InvalidRequest, message)).await;
        }
    };
    // Still among the waiting while the agent key is on its way at boot.
    let authorized = tokio::select! {
        biased;
        authorized = access.authorize(open.key()) => authorized,
        () = ticket.evicted.notified() => return,
    };
    drop(ticket);
    if let Err(error) = authorized {
        warn!("{peer}: {error}");
        return match open {
            // An attach is answered the way attaches are.
            Open::Attach { .. } => reply(conn, &AttachReply::Err(error)).await,
            Open::Control { .. } => refuse(conn, error).await,
        };
    }
    match open {
        Open::Control { .. } => {
            let Some(permit) = session_permit(&sessions) else {
                let message = format!("too many control sessions: at most {MAX_SESSIONS} may be open at once");
                return refuse(conn, ErrorBody::new(ErrorCode::Busy, message)).await;
            };
            session::serve(agent, conn).await;
            drop(permit);
        }
        Open::Attach { process, stream, .. } => {
            if let Err(refused) = agent.processes.attach(process, stream, conn).await {
                debug!("attach refused: {}", refused.error);
                reply(refused.conn, &AttachReply::Err(refused.error.to_body())).await;
            }
        }
    }
}

fn session_permit(sessions: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    sessions.clone().try_acquire_owned().ok()
}

/// Answers `{"id":0,"err":..}` and closes the connection.
async fn refuse(conn: Conn, error: ErrorBody) {
    debug!("connection refused: {error}");
    let response = Response {
        id: 0,
        outcome: Outcome::Err(error),
    };
    reply(conn, &response).await;
}

/// Writes one last frame and closes the connection.
async fn reply<T: serde::Serialize>(mut conn: Conn, frame: &T) {
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let _ = write_frame(&mut conn, frame).await;
        let _ = conn.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_waiting_connection_makes_room_for_a_new_one() {
        let waiting = Waiting::default();
        let tickets: Vec<Ticket> = (0..MAX_UNAUTHENTICATED + 3).map(|_| waiting.enter()).collect();
        assert_eq!(waiting.lock().tasks.len(), MAX_UNAUTHENTICATED);
        for (i, ticket) in tickets.iter().enumerate() {
            // Told before it waited: the notification is kept.
            let told = tokio::time::timeout(Duration::from_millis(1), ticket.evicted.notified()).await;
            assert_eq!(told.is_ok(), i < 3, "ticket {i}");
        }
        // Leaving after being dropped, and twice, is harmless.
        tickets[0].leave();
        tickets[5].leave();
        tickets[5].leave();
        assert_eq!(waiting.lock().tasks.len(), MAX_UNAUTHENTICATED - 1);
        drop(tickets);
        assert!(waiting.lock().tasks.is_empty());
    }
}
