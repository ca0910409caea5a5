//! The accept loop: every connection starts with one `Open` frame that says
//! whether it is a control session or an attached stream.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use agent_proto::frame::read_frame_bytes;
use agent_proto::{
    write_frame, Conn, ErrorBody, ErrorCode, FrameError, Listener, Open, Outcome, Response, MAX_FRAME_LEN,
};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::agent::Agent;
use crate::{process, session};

/// How long writing a refusal may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until the future is dropped (shutdown).
pub async fn serve(agent: Arc<Agent>, listener: Listener) -> Infallible {
    loop {
        match listener.accept().await {
            Ok(conn) => {
                tokio::spawn(connection(agent.clone(), conn));
            }
            Err(e) => {
                // E.g. out of descriptors: wait a little rather than spin.
                warn!("{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Reads the `Open` frame and hands the connection on.
async fn connection(agent: Arc<Agent>, mut conn: Conn) {
    let body = match read_frame_bytes(&mut conn, MAX_FRAME_LEN).await {
        Ok(Some(body)) => body,
        Ok(None) => return,
        Err(FrameError::Io(e)) => {
            debug!("connection failed before its first frame: {e}");
            return;
        }
        Err(e) => return refuse(conn, ErrorBody::new(ErrorCode::BadFrame, e.to_string())).await,
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
    match open {
        Open::Control => session::serve(agent, conn).await,
        Open::Attach { process, stream } => process::attach(&agent.processes, process, stream, conn).await,
    }
}

/// Answers `{"id":0,"err":..}` and closes the connection.
async fn refuse(mut conn: Conn, error: ErrorBody) {
    debug!("connection refused: {error}");
    let response = Response {
        id: 0,
        outcome: Outcome::Err(error),
    };
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let _ = write_frame(&mut conn, &response).await;
        let _ = conn.shutdown().await;
    })
    .await;
}
