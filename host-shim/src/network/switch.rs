//! The switch: an Ethernet switch on a Unix socket. Every accepted
//! connection is a port speaking QEMU's stream netdev framing (a 4-byte
//! big-endian length, then the frame, both ways).
//!
//! Each port is bound, at its first frame, to the lease of the VM whose
//! QEMU opened it ([`Binder`]; the daemon's is [`LeaseBinder`]): the MAC
//! and IPv4 address that VM leased. A connection that no lease names is
//! refused. From a bound port the switch passes only what the lease allows
//! ([`Binding::admits`]: its source MAC, ARP and IPv4 from its address,
//! nothing else).
//!
//! Dropped frames are counted, and the first of each port is logged. The
//! forwarding table holds each port's bound MAC and nothing else: nothing
//! is learnt from frames, so a VM cannot take another's MAC or fill the
//! table, and the ports are capped. A unicast frame to a bound MAC goes to
//! that port alone, anything else (broadcast, multicast, unknown unicast)
//! to every other port. Each port has a bounded queue, and a frame for a
//! full queue is dropped: a port that does not read loses frames, and
//! nobody else waits for it. A port that leaves takes its MAC with it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::binding::{Binder, Binding, LeaseBinder, Mac, Refusal, ETH_HEADER};
use super::error::{io_err, NetworkError};
use super::lease::format_mac;

/// The longest frame a port may send; a longer length closes the port.
/// (QEMU itself accepts 69,632 bytes, and sends at most 65,535 + 14.)
pub const MAX_FRAME: usize = 65_550;

/// Frames queued for one port before more are dropped.
pub const PORT_QUEUE: usize = 256;

/// Ports (and so MACs in the table) at most; more are refused.
pub const MAX_PORTS: usize = 4096;

type Frame = Arc<[u8]>;

/// Serves a switch on a new Unix socket at `socket` (a stale socket file
/// that no longer accepts connections is replaced), its ports bound to the
/// leases in directory `leases`; runs until dropped.
pub async fn serve_switch(socket: &Path, leases: &Path) -> Result<Infallible, NetworkError> {
    let listener = bind(socket)?;
    match serve(listener, Arc::default(), Arc::new(LeaseBinder::new(leases))).await {}
}

/// Listens on `socket`, replacing a stale socket file; the socket is 0600
/// (QEMU runs as its owner).
pub(super) fn bind(socket: &Path) -> Result<UnixListener, NetworkError> {
    let listener = match UnixListener::bind(socket) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && !accepts(socket) => {
            std::fs::remove_file(socket).map_err(io_err("remove the stale socket", socket))?;
            UnixListener::bind(socket).map_err(io_err("listen on", socket))
        }
        other => other.map_err(io_err("listen on", socket)),
    }?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(io_err("chmod", socket))?;
    Ok(listener)
}

/// Whether a Unix socket at `path` accepts a connection now: whether a
/// switch serves it. Never blocks: a listener with a full backlog counts
/// as accepting.
pub(super) fn accepts(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeros is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() {
        return false;
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, &src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    // SAFETY: a plain socket call; the descriptor is closed below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return false;
    }
    // SAFETY: addr is a valid sockaddr_un and the length is its size.
    let rc = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    let ok = rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    ok
}

/// Accepts ports on `listener` forever, each bound by `binder`.
pub(super) async fn serve(listener: UnixListener, fabric: Arc<Mutex<Fabric>>, binder: Arc<dyn Binder>) -> Infallible {
    let mut next_id = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                next_id += 1;
                tokio::spawn(run_port(fabric.clone(), binder.clone(), next_id, stream));
            }
            Err(e) => {
                // Out of descriptors, most likely: wait for ports to leave.
                log(&format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The ports and their MACs.
#[derive(Default)]
pub(super) struct Fabric {
    ports: HashMap<u64, Port>,
    macs: HashMap<Mac, u64>,
}

/// The sending side of one port, and what it may send as.
struct Port {
    queue: mpsc::Sender<Frame>,
    binding: Binding,
    /// Frames for it dropped because its queue was full.
    dropped: u64,
    /// Frames from it dropped because its lease does not allow them.
    refused: u64,
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
    /// Adds port `id`, bound to `binding`: refused while another port has
    /// its MAC, or when the switch has all the ports it takes.
    fn add(&mut self, id: u64, binding: Binding, queue: mpsc::Sender<Frame>) -> Result<(), String> {
        if let Some(other) = self.macs.get(&binding.mac) {
            return Err(format!("{} is port {other}'s", format_mac(binding.mac)));
        }
        if self.ports.len() >= MAX_PORTS {
            return Err(format!("the switch has its {MAX_PORTS} ports"));
        }
        self.macs.insert(binding.mac, id);
        self.ports.insert(
            id,
            Port {
                queue,
                binding,
                dropped: 0,
                refused: 0,
            },
        );
        Ok(())
    }

    /// Passes `frame` (at least an Ethernet header long) from port `from`
    /// on, if its lease allows it; the refusal, and whether it is the
    /// port's first, if not.
    fn forward(&mut self, from: u64, frame: Frame) -> Result<(), (Refusal, bool)> {
        let Some(port) = self.ports.get_mut(&from) else {
            return Ok(());
        };
        if let Err(refusal) = port.binding.admits(&frame) {
            port.refused += 1;
            return Err((refusal, port.refused == 1));
        }
        let dst: Mac = frame[..6].try_into().expect("6 bytes");
        if !is_group(dst) {
            if let Some(&to) = self.macs.get(&dst) {
                // A frame for a MAC on the port it came from goes nowhere.
                if to != from {
                    if let Some(port) = self.ports.get_mut(&to) {
                        port.offer(&frame);
                    }
                }
                return Ok(());
            }
        }
        for (_, port) in self.ports.iter_mut().filter(|(id, _)| **id != from) {
            port.offer(&frame);
        }
        Ok(())
    }

    /// Forgets port `id` and its MAC; its queue closes.
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
/// It is bound when its first frame arrives (a probe that connects and
/// leaves is no port), and refused if no lease binds it.
async fn run_port(fabric: Arc<Mutex<Fabric>>, binder: Arc<dyn Binder>, id: u64, stream: UnixStream) {
    let (rd, wr) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, rd);
    let first = match read_frame(&mut reader).await {
        Ok(Some(frame)) => frame,
        Ok(None) => return,
        Err(e) => {
            log(&format!("port {id} left before it was bound: {e}"));
            return;
        }
    };
    let binding = match binder.bind(reader.get_ref().as_ref()) {
        Ok(binding) => binding,
        Err(why) => {
            log(&format!("port {id} refused: {why}"));
            return;
        }
    };
    let (queue, rx) = mpsc::channel(PORT_QUEUE);
    if let Err(why) = lock(&fabric).add(id, binding, queue) {
        log(&format!(
            "port {id} ({} {}) refused: {why}",
            format_mac(binding.mac),
            binding.ip
        ));
        return;
    }
    let mut writer = tokio::spawn(write_frames(wr, rx));
    let mut received = 0u64;
    let mut next = Some(first);
    let why = loop {
        let frame = match next.take() {
            Some(frame) => Ok(Some(frame)),
            None => tokio::select! {
                frame = read_frame(&mut reader) => frame,
                written = &mut writer => break match written {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("write: {e}")),
                    Err(e) => Some(format!("writer: {e}")),
                },
            },
        };
        match frame {
            Ok(Some(frame)) => {
                received += 1;
                // Too short to name a destination: nothing to switch.
                if frame.len() >= ETH_HEADER {
                    if let Err((refusal, true)) = lock(&fabric).forward(id, frame) {
                        log(&format!(
                            "port {id} ({} {}): dropping what its lease does not allow, first: {refusal}",
                            format_mac(binding.mac),
                            binding.ip
                        ));
                    }
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    // Dropping the port closes its queue: the writer ends and the
    // connection closes.
    let port = lock(&fabric).remove(id);
    let (dropped, refused) = port.map_or((0, 0), |p| (p.dropped, p.refused));
    let why = why.map(|w| format!(": {w}")).unwrap_or_default();
    log(&format!(
        "port {id} ({} {}) left after {received} frames in ({refused} not allowed), {dropped} dropped for it{why}",
        format_mac(binding.mac),
        binding.ip
    ));
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

/// One line on stderr (`switch.log` for the daemon, rotated with it), with
/// the time.
pub(super) fn log(message: &str) {
    crate::private::log::rotate_stdio();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    eprintln!("[{}.{:03}] {message}", now.as_secs(), now.subsec_millis());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_dir::TestDir;
    use std::collections::VecDeque;
    use std::net::Ipv4Addr;
    use std::time::Instant;

    use crate::network::binding::tests::{arp, binding, from, ip, ipv4, other, A, B, BROADCAST, C, MULTICAST, UNKNOWN};

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

    /// The payload of the next (IPv4) frame the port gets.
    async fn recv_payload(port: &mut UnixStream) -> String {
        String::from_utf8(recv(port).await[ETH_HEADER + 20..].to_vec()).unwrap()
    }

    /// Binds ports in the order they connect; `None`: no lease.
    #[derive(Default)]
    struct InOrder(Mutex<VecDeque<Option<Binding>>>);

    impl Binder for InOrder {
        fn bind(&self, _: &UnixStream) -> Result<Binding, String> {
            match self.0.lock().unwrap().pop_front() {
                Some(Some(binding)) => Ok(binding),
                _ => Err("no lease names it".to_owned()),
            }
        }
    }

    struct Switch {
        socket: std::path::PathBuf,
        fabric: Arc<Mutex<Fabric>>,
        binder: Arc<InOrder>,
    }

    impl Switch {
        fn start(dir: &TestDir) -> Switch {
            let socket = dir.path().join("switch.sock");
            let listener = bind(&socket).unwrap();
            let fabric: Arc<Mutex<Fabric>> = Arc::default();
            let binder: Arc<InOrder> = Arc::default();
            tokio::spawn(serve(listener, fabric.clone(), binder.clone()));
            Switch { socket, fabric, binder }
        }

        /// A port bound to `mac` (and its address), registered: bound by
        /// its first frame, one to itself that goes nowhere.
        async fn port(&self, mac: Mac) -> UnixStream {
            let before = lock(&self.fabric).ports();
            self.binder.0.lock().unwrap().push_back(Some(binding(mac)));
            let mut port = UnixStream::connect(&self.socket).await.unwrap();
            send(&mut port, &from(mac, mac, "hello")).await;
            wait_for_ports(&self.fabric, before + 1).await;
            port
        }

        /// A port the switch refuses (bound to `binding`, or to no lease):
        /// closed at its first frame.
        async fn refused(&self, binding: Option<Binding>) {
            self.binder.0.lock().unwrap().push_back(binding);
            let mut port = UnixStream::connect(&self.socket).await.unwrap();
            let mac = binding.map_or(UNKNOWN, |b| b.mac);
            send(&mut port, &from(mac, BROADCAST, "let me in")).await;
            let mut rest = Vec::new();
            let end = tokio::time::timeout(Duration::from_secs(5), port.read_to_end(&mut rest))
                .await
                .expect("the refused port closes");
            assert!(matches!(end, Ok(0)) || end.is_err(), "{end:?}");
        }
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
    async fn bound_ports_switch_and_bad_ports_close() {
        let dir = TestDir::new("switch");
        let switch = Switch::start(&dir);
        let (mut a, mut b, mut c) = (switch.port(A).await, switch.port(B).await, switch.port(C).await);

        // A broadcast ARP request reaches the two others, byte for byte.
        let who_has = arp(BROADCAST, A, 1, A, ip(2), ip(3));
        send(&mut a, &who_has).await;
        assert_eq!(recv(&mut b).await, who_has);
        assert_eq!(recv(&mut c).await, who_has);

        // b's unicast reaches a alone.
        send(&mut b, &from(B, A, "b to a")).await;
        assert_eq!(recv_payload(&mut a).await, "b to a");
        // Had c got a copy, it would be queued before this marker.
        send(&mut a, &from(A, BROADCAST, "marker 1")).await;
        assert_eq!(recv_payload(&mut c).await, "marker 1");
        assert_eq!(recv_payload(&mut b).await, "marker 1");

        // Unknown unicast and multicast are flooded.
        send(&mut c, &from(C, UNKNOWN, "c to nobody")).await;
        assert_eq!(recv_payload(&mut a).await, "c to nobody");
        assert_eq!(recv_payload(&mut b).await, "c to nobody");
        send(&mut a, &from(A, MULTICAST, "to a group")).await;
        assert_eq!(recv_payload(&mut b).await, "to a group");
        assert_eq!(recv_payload(&mut c).await, "to a group");

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
        wait_for_ports(&switch.fabric, 2).await;
        send(&mut a, &from(A, B, "a to b")).await;
        assert_eq!(recv_payload(&mut b).await, "a to b");
        // C is forgotten with its port: a frame for it is flooded.
        send(&mut a, &from(A, C, "a to gone c")).await;
        assert_eq!(recv_payload(&mut b).await, "a to gone c");
        // A frame of exactly the limit is fine.
        let big = from(A, B, &"x".repeat(MAX_FRAME - ETH_HEADER - 20));
        assert_eq!(big.len(), MAX_FRAME);
        send(&mut a, &big).await;
        assert_eq!(recv(&mut b).await, big);
    }

    #[tokio::test]
    async fn forged_macs_and_spoofed_addresses_are_not_forwarded() {
        let dir = TestDir::new("switch-spoof");
        let switch = Switch::start(&dir);
        let (mut a, mut b, mut c) = (switch.port(A).await, switch.port(B).await, switch.port(C).await);
        let forged = [
            // b's MAC as the source, to c and to everyone.
            ipv4(C, B, ip(3), "a as b's MAC"),
            ipv4(BROADCAST, B, ip(2), "a as b's MAC, its own address"),
            // Its own MAC, b's address.
            ipv4(C, A, ip(3), "a as b's address"),
            // ARP: b's address claimed for a's MAC (a reply and a request),
            // and b's MAC inside the packet.
            arp(BROADCAST, A, 2, A, ip(3), ip(4)),
            arp(BROADCAST, A, 1, A, ip(3), ip(4)),
            arp(BROADCAST, A, 2, B, ip(3), ip(4)),
            // Not ARP or IPv4: IPv6, and an IPv4 packet in a VLAN tag.
            other(BROADCAST, A, 0x86dd),
            other(BROADCAST, A, 0x8100),
            // Too short to check.
            ipv4(C, A, ip(2), "")[..ETH_HEADER + 12].to_vec(),
        ];
        for frame in &forged {
            send(&mut a, frame).await;
        }
        // What a's lease allows still passes: an ARP probe and reply, and
        // IPv4 from its address. Had anything forged got through, it would
        // be queued before these.
        let probe = arp(BROADCAST, A, 1, A, Ipv4Addr::UNSPECIFIED, ip(2));
        send(&mut a, &probe).await;
        assert_eq!(recv(&mut b).await, probe);
        assert_eq!(recv(&mut c).await, probe);
        let reply = arp(B, A, 2, A, ip(2), ip(3));
        send(&mut a, &reply).await;
        assert_eq!(recv(&mut b).await, reply);
        send(&mut a, &from(A, C, "a as itself")).await;
        assert_eq!(recv_payload(&mut c).await, "a as itself");
        // b's MAC is still b's: c's frame for it reaches b, not a.
        send(&mut c, &from(C, B, "c to b")).await;
        assert_eq!(recv_payload(&mut b).await, "c to b");
        send(&mut c, &from(C, A, "c to a")).await;
        assert_eq!(recv_payload(&mut a).await, "c to a", "a got nothing meant for b");
        let refused = lock(&switch.fabric).ports.values().map(|p| p.refused).sum::<u64>();
        assert_eq!(refused, forged.len() as u64);
    }

    #[tokio::test]
    async fn a_port_cannot_fill_the_table_or_take_a_bound_mac() {
        let dir = TestDir::new("switch-fill");
        let switch = Switch::start(&dir);
        let (mut a, mut b) = (switch.port(A).await, switch.port(B).await);
        for i in 0..5000u32 {
            let n = i.to_be_bytes();
            let mac = [0x02, 0xee, n[0], n[1], n[2], n[3]];
            send(&mut a, &ipv4(BROADCAST, mac, ip(2), "flood")).await;
        }
        send(&mut a, &from(A, B, "done")).await;
        assert_eq!(recv_payload(&mut b).await, "done", "none of the flood passed");
        assert_eq!(lock(&switch.fabric).macs.len(), 2);
        // Another port bound to a's MAC, and one with no lease: refused.
        switch.refused(Some(binding(A))).await;
        switch.refused(None).await;
        assert_eq!(lock(&switch.fabric).ports(), 2);
        send(&mut b, &from(B, A, "still a's")).await;
        assert_eq!(recv_payload(&mut a).await, "still a's");
    }

    #[tokio::test]
    async fn a_probe_is_no_port() {
        let dir = TestDir::new("switch-probe");
        let switch = Switch::start(&dir);
        // Connects and leaves (as `accepts` does): never bound, no lease
        // asked for.
        drop(UnixStream::connect(&switch.socket).await.unwrap());
        let mut a = switch.port(A).await;
        let mut b = switch.port(B).await;
        send(&mut a, &from(A, B, "after the probe")).await;
        assert_eq!(recv_payload(&mut b).await, "after the probe");
        assert!(switch.binder.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_port_that_does_not_read_stalls_nobody() {
        let dir = TestDir::new("switch-slow");
        let switch = Switch::start(&dir);
        let (mut a, mut b, stuck) = (switch.port(A).await, switch.port(B).await, switch.port(C).await);
        // 1,000 broadcasts of 1,500 bytes: far more than the stuck port's
        // socket buffer and queue hold.
        for i in 0..1000 {
            let f = from(A, BROADCAST, &format!("{i:04}{}", "y".repeat(1462)));
            send(&mut a, &f).await;
            assert_eq!(recv(&mut b).await, f, "frame {i}");
        }
        let dropped = lock(&switch.fabric).ports.values().map(|p| p.dropped).sum::<u64>();
        assert!(dropped > 0, "the stuck port's queue never filled");
        drop(stuck);
        wait_for_ports(&switch.fabric, 2).await;
        send(&mut b, &from(B, A, "still here")).await;
        assert_eq!(recv_payload(&mut a).await, "still here");
    }

    #[tokio::test]
    async fn replaces_a_stale_socket_file() {
        let dir = TestDir::new("switch-stale");
        let socket = dir.path().join("switch.sock");
        let leases = dir.path().join("leases");
        std::fs::create_dir(&leases).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert!(socket.exists() && !accepts(&socket));
        let server = tokio::spawn({
            let (socket, leases) = (socket.clone(), leases.clone());
            async move { serve_switch(&socket, &leases).await }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while !accepts(&socket) {
            assert!(!server.is_finished() && Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);
        // A second switch on a live socket is refused.
        let err = serve_switch(&socket, &leases).await.unwrap_err();
        assert!(matches!(err, NetworkError::Io { what: "listen on", .. }), "{err:?}");
        server.abort();
    }

    #[test]
    fn accepts_only_listening_sockets() {
        let dir = TestDir::new("accepts");
        let path = dir.path().join("s.sock");
        assert!(!accepts(&path));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(accepts(&path));
        drop(listener);
        assert!(!accepts(&path), "a socket file with nobody listening");
        assert!(!accepts(&dir.path().join("x".repeat(200))));
    }
}
