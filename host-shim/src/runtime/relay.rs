//! Relays between host files (the caller's stdio: pipes, files, a
//! terminal) and a process's stdio streams in the VM. Each file is read or
//! written on a thread of its own, where a call may block as long as the
//! other side takes.

use std::fs::File;
use std::io::{self, Read, Write};

use agent_proto::Conn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How many chunks a relay holds between the agent's stream and a host
/// file.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Copies `file` to the process's stdin stream, then half-closes it.
pub async fn relay_input(mut file: File, mut conn: Conn) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) if tx.blocking_send(buf[..n].to_vec()).is_ok() => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => break,
            }
        }
    });
    while let Some(chunk) = rx.recv().await {
        // The process may end before its input does; a failed write is
        // expected then.
        if conn.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = conn.shutdown().await;
}

/// Copies one output stream to `file` until the agent ends it. When the
/// file can no longer be written (a closed pipe), the rest is read and
/// dropped so that the process never blocks on it. Returns once the last
/// byte is written.
pub async fn relay_output(mut conn: Conn, mut file: File) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(CHUNKS_IN_FLIGHT);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut writable = true;
        while let Some(chunk) = rx.blocking_recv() {
            writable = writable && file.write_all(&chunk).is_ok();
        }
        let _ = done_tx.send(());
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = done_rx.await;
}
