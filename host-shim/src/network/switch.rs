//! The switch: an Ethernet learning switch on a Unix socket. Every accepted
//! connection is a port speaking QEMU's stream netdev framing (a 4-byte
//! big-endian length, then the frame, both ways).
//!
//! A frame's source MAC is learnt for the port it came from; a unicast frame
//! to a learnt MAC goes to that port alone, anything else (broadcast,
//! multicast, unknown unicast) to every other port. Each port has a bounded
//! queue, and a frame for a full queue is dropped: a port that does not
//! read loses frames, and nobody else waits for it. A port that leaves takes
//! its MACs with it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::{daemon, io_err, NetworkError};

/// The longest frame a port may send; a longer length closes the port.
/// (QEMU itself accepts 69,632 bytes, and sends at most 65,535 + 14.)
pub const MAX_FRAME: usize = 65_550;

/// Frames queued for one port before more are dropped.
pub const PORT_QUEUE: usize = 256;

/// MACs learnt at most; beyond that, frames to new MACs are flooded.
const MAX_MACS: usize = 4096;

/// An Ethernet header: destination, source, type.
const ETH_HEADER: usize = 14;

type Frame = Arc<[u8]>;
type Mac = [u8; 6];

/// Serves a switch on a new Unix socket at `socket` (a stale socket file
/// that no longer accepts connections is replaced); runs until dropped.
pub async fn serve_switch(socket: &Path) -> Result<Infallible, NetworkError> {
    let listener = bind(socket)?;
    match serve(listener, Arc::default()).await {}
}

/// Listens on `socket`, replacing a stale socket file.
pub(super) fn bind(socket: &Path) -> Result<UnixListener, NetworkError> {
    match UnixListener::bind(socket) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && !daemon::accepts(socket) => {
            std::fs::remove_file(socket).map_err(io_err("remove the stale socket", socket))?;
            UnixListener::bind(socket).map_err(io_err("listen on", socket))
        }
        other => other.map_err(io_err("listen on", socket)),
    }
}

/// Accepts ports on `listener` forever.
pub(super) async fn serve(listener: UnixListener, fabric: Arc<Mutex<Fabric>>) -> Infallible {
    let mut next_id = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                next_id += 1;
                tokio::spawn(run_port(fabric.clone(), next_id, stream));
            }
            Err(e) => {
                // Out of descriptors, most likely: wait for ports to leave.
                log(&format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The ports and what the switch has learnt.
#[derive(Default)]
pub(super) struct Fabric {
    ports: HashMap<u64, Port>,
    macs: HashMap<Mac, u64>,
}

/// The sending side of one port.
struct Port {
    queue: mpsc::Sender<Frame>,
    dropped: u64,
}

impl Port {
    /// Queues `frame`, or drops it when the queue is full.
    fn offer(&mut self, frame: &Frame) {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(frame.clone()) {
            self.dropped += 1;
        }
    }
}

impl Fabric {
    /// Learns the source of `frame` (at least an Ethernet header long) and
    /// passes it on.
    fn forward(&mut self, from: u64, frame: Frame) {
        let dst: Mac = frame[..6].try_into().expect("6 bytes");
        let src: Mac = frame[6..12].try_into().expect("6 bytes");
        if !is_group(src) && (self.macs.len() < MAX_MACS || self.macs.contains_key(&src)) {
            self.macs.insert(src, from);
        }
        if !is_group(dst) {
            if let Some(&to) = self.macs.get(&dst) {
                // A frame for a MAC on the port it came from goes nowhere.
                if to != from {
                    if let Some(port) = self.ports.get_mut(&to) {
                        port.offer(&frame);
                    }
                }
                return;
            }
        }
        for (_, port) in self.ports.iter_mut().filter(|(id, _)| **id != from) {
            port.offer(&frame);
        }
    }

    /// Forgets port `id` and its MACs; its queue closes.
    fn remove(&mut self, id: u64) -> Option<Port> {
        self.macs.retain(|_, port| *port != id);
        self.ports.remove(&id)
    }

    #[cfg(test)]
    fn ports(&self) -> usize {
        self.ports.len()
    }
}

/// Broadcast and multicast MACs have the group bit set.
fn is_group(mac: Mac) -> bool {
    mac[0] & 1 == 1
}

fn lock(fabric: &Mutex<Fabric>) -> MutexGuard<'_, Fabric> {
    fabric.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves one port until it leaves, breaks the framing, or stops reading.
async fn run_port(fabric: Arc<Mutex<Fabric>>, id: u64, stream: UnixStream) {
    let (rd, wr) = stream.into_split();
    let (queue, rx) = mpsc::channel(PORT_QUEUE);
    lock(&fabric).ports.insert(id, Port { queue, dropped: 0 });
    let mut writer = tokio::spawn(write_frames(wr, rx));
    let mut reader = BufReader::with_capacity(64 * 1024, rd);
    let mut received = 0u64;
    let why = loop {
        tokio::select! {
            frame = read_frame(&mut reader) => match frame {
                Ok(Some(frame)) => {
                    received += 1;
                    // Too short to name a destination: nothing to switch.
                    if frame.len() >= ETH_HEADER {
                        lock(&fabric).forward(id, frame);
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(e.to_string()),
            },
            written = &mut writer => break match written {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("write: {e}")),
                Err(e) => Some(format!("writer: {e}")),
            },
        }
    };
    // Dropping the port closes its queue: the writer ends and the
    // connection closes.
    let port = lock(&fabric).remove(id);
    let dropped = port.map_or(0, |p| p.dropped);
    // Probes (a connection that sends nothing) are not worth a line.
    if received > 0 || dropped > 0 || why.is_some() {
        let why = why.map(|w| format!(": {w}")).unwrap_or_default();
        log(&format!(
            "port {id} left after {received} frames in, {dropped} dropped for it{why}"
        ));
    }
}

/// Reads one frame; `None` at a clean end between frames.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Frame>> {
    let mut len = [0u8; 4];
    if r.read(&mut len[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut len[1..]).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut frame = vec![0; len];
    r.read_exact(&mut frame).await?;
    Ok(Some(frame.into()))
}

/// Writes queued frames to a port, a batch at a time.
async fn write_frames(wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Frame>) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(64 * 1024, wr);
    while let Some(frame) = rx.recv().await {
        write_frame(&mut w, &frame).await?;
        while let Ok(frame) = rx.try_recv() {
            write_frame(&mut w, &frame).await?;
        }
        w.flush().await?;
    }
    Ok(())
}

async fn write_frame(w: &mut BufWriter<OwnedWriteHalf>, frame: &[u8]) -> io::Result<()> {
    w.write_all(&(frame.len() as u32).to_be_bytes()).await?;
    w.write_all(frame).await
}

/// One line on stderr (`switch.log` for the daemon), with the time.
pub(super) fn log(message: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!("[{}.{:03}] {message}", now.as_secs(), now.subsec_millis());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::time::Instant;

    const A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    const B: Mac = [0x02, 0, 0, 0, 0, 0x0b];
    const C: Mac = [0x02, 0, 0, 0, 0, 0x0c];
    const UNKNOWN: Mac = [0x02, 0, 0, 0, 0, 0xdd];
    const BROADCAST: Mac = [0xff; 6];
    const MULTICAST: Mac = [0x01, 0x00, 0x5e, 0, 0, 1];

    fn frame(dst: Mac, src: Mac, payload: &str) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5]); // the local experimental EtherType
        f.extend_from_slice(payload.as_bytes());
        f
    }

    async fn send(port: &mut UnixStream, frame: &[u8]) {
        port.write_all(&(frame.len() as u32).to_be_bytes()).await.unwrap();
        port.write_all(frame).await.unwrap();
    }

    async fn recv(port: &mut UnixStream) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(5), read_frame(port))
            .await
            .expect("a frame within 5 s")
            .unwrap()
            .expect("a frame, not the end")
            .to_vec()
    }

    /// The payload of the next frame the port gets.
    async fn recv_payload(port: &mut UnixStream) -> String {
        String::from_utf8(recv(port).await[ETH_HEADER..].to_vec()).unwrap()
    }

    /// A switch on a fresh socket, and `n` ports on it, all registered.
    async fn switch(dir: &TestDir, n: usize) -> (Arc<Mutex<Fabric>>, Vec<UnixStream>) {
        let socket = dir.path().join("switch.sock");
        let listener = bind(&socket).unwrap();
        let fabric: Arc<Mutex<Fabric>> = Arc::default();
        tokio::spawn(serve(listener, fabric.clone()));
        let mut ports = Vec::new();
        for _ in 0..n {
            ports.push(UnixStream::connect(&socket).await.unwrap());
        }
        wait_for_ports(&fabric, n).await;
        (fabric, ports)
    }

    async fn wait_for_ports(fabric: &Mutex<Fabric>, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while lock(fabric).ports() != n {
            assert!(
                Instant::now() < deadline,
                "{} ports, expected {n}",
                lock(fabric).ports()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn floods_learns_and_closes_bad_ports() {
        let dir = TestDir::new("switch");
        let (fabric, ports) = switch(&dir, 3).await;
        let [mut a, mut b, mut c]: [UnixStream; 3] = ports.try_into().unwrap();

        // Broadcast reaches the two others, byte for byte.
        let hello = frame(BROADCAST, A, "hello from a");
        send(&mut a, &hello).await;
        assert_eq!(recv(&mut b).await, hello);
        assert_eq!(recv(&mut c).await, hello);

        // A has been learnt: b's unicast reaches a alone.
        send(&mut b, &frame(A, B, "b to a")).await;
        assert_eq!(recv_payload(&mut a).await, "b to a");
        // Had c got a copy, it would be queued before this marker.
        send(&mut a, &frame(BROADCAST, A, "marker 1")).await;
        assert_eq!(recv_payload(&mut c).await, "marker 1");
        assert_eq!(recv_payload(&mut b).await, "marker 1");

        // Unknown unicast and multicast are flooded.
        send(&mut c, &frame(UNKNOWN, C, "c to nobody")).await;
        assert_eq!(recv_payload(&mut a).await, "c to nobody");
        assert_eq!(recv_payload(&mut b).await, "c to nobody");
        send(&mut a, &frame(MULTICAST, A, "to a group")).await;
        assert_eq!(recv_payload(&mut b).await, "to a group");
        assert_eq!(recv_payload(&mut c).await, "to a group");

        // Now B and C are learnt too.
        send(&mut a, &frame(C, A, "a to c")).await;
        assert_eq!(recv_payload(&mut c).await, "a to c");
        send(&mut a, &frame(BROADCAST, A, "marker 2")).await;
        assert_eq!(recv_payload(&mut b).await, "marker 2", "b got a frame for c");
        assert_eq!(recv_payload(&mut c).await, "marker 2");

        // An oversized length closes c's port, and only c's.
        c.write_all(&((MAX_FRAME + 1) as u32).to_be_bytes()).await.unwrap();
        let mut rest = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .expect("c's port closes");
        assert!(
            matches!(&end, Ok(0)) || matches!(&end, Err(e) if e.kind() == io::ErrorKind::ConnectionReset),
            "{end:?} {rest:?}"
        );
        wait_for_ports(&fabric, 2).await;
        send(&mut a, &frame(B, A, "a to b")).await;
        assert_eq!(recv_payload(&mut b).await, "a to b");
        // C is forgotten with its port: a frame for it is flooded again.
        send(&mut a, &frame(C, A, "a to gone c")).await;
        assert_eq!(recv_payload(&mut b).await, "a to gone c");
        // A frame of exactly the limit is fine.
        let big = frame(B, A, &"x".repeat(MAX_FRAME - ETH_HEADER));
        assert_eq!(big.len(), MAX_FRAME);
        send(&mut a, &big).await;
        assert_eq!(recv(&mut b).await, big);
    }

    #[tokio::test]
    async fn a_port_that_does_not_read_stalls_nobody() {
        let dir = TestDir::new("switch-slow");
        let (fabric, ports) = switch(&dir, 3).await;
        let [mut a, mut b, stuck]: [UnixStream; 3] = ports.try_into().unwrap();
        // 1,000 broadcasts of 1,500 bytes: far more than the stuck port's
        // socket buffer and queue hold.
        for i in 0..1000 {
            let f = frame(BROADCAST, A, &format!("{i:04}{}", "y".repeat(1482)));
            send(&mut a, &f).await;
            assert_eq!(recv(&mut b).await, f, "frame {i}");
        }
        let dropped = lock(&fabric).ports.values().map(|p| p.dropped).sum::<u64>();
        assert!(dropped > 0, "the stuck port's queue never filled");
        drop(stuck);
        wait_for_ports(&fabric, 2).await;
        send(&mut b, &frame(A, B, "still here")).await;
        assert_eq!(recv_payload(&mut a).await, "still here");
    }

    #[tokio::test]
    async fn replaces_a_stale_socket_file() {
        let dir = TestDir::new("switch-stale");
        let socket = dir.path().join("switch.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert!(socket.exists() && !daemon::accepts(&socket));
        let server = tokio::spawn({
            let socket = socket.clone();
            async move { serve_switch(&socket).await }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !daemon::accepts(&socket) {
            assert!(!server.is_finished() && Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A second switch on a live socket is refused.
        let err = serve_switch(&socket).await.unwrap_err();
        assert!(matches!(err, NetworkError::Io { what: "listen on", .. }), "{err:?}");
        server.abort();
    }
}
