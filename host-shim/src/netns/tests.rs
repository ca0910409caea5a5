//! Against the real kernel, each side of a test on a thread of its own in
//! a new network namespace (a thread's namespace is its own: the host's is
//! not touched). The namespaces are wired with `ip`, as a container's
//! network stack wires them; the code under test runs no program. They
//! need root, and are skipped (with a note) where a network namespace
//! cannot be made.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// Not vmshim's own namespace, for [`Attachment::attach`].
const ELSEWHERE: NamespaceId = (0, 0);

/// The container side's interface, as netavark names and addresses it.
const ETH0_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xc8, 0x00, 0x02];
/// The host side's end of the pair.
const PEER0_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xc8, 0x00, 0x01];

/// Moves this thread into a new network namespace; false (and a note)
/// where there is none to be had.
fn unshare_network() -> bool {
    // SAFETY: unshare has no memory preconditions; it moves only this
    // thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        eprintln!("skipped: no network namespace: {}", io::Error::last_os_error());
        return false;
    }
    true
}

/// Runs `test` on a thread in a new network namespace.
fn in_new_namespace(test: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        if unshare_network() {
            test();
        }
    })
    .join()
    .unwrap()
}

/// `ip ARGS` in this thread's namespace (a child starts in the namespace
/// of the thread that forks it).
fn ip(args: &str) {
    let out = Command::new("ip").args(args.split_whitespace()).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A container's namespace as netavark leaves it, on this thread, and the
/// host's side on another: `eth0`, one end of a veth pair, here, with a MAC,
/// an MTU, addresses, a default route and one more; `peer0`, the other
/// end, there, with the gateway's address. `host` runs on the host's side
/// with the container side's work done; `container` on this one, once
/// wired. Skipped where namespaces cannot be made.
fn with_a_veth_pair<T: Send + 'static>(
    container: impl FnOnce(mpsc::Sender<()>, mpsc::Receiver<()>) -> T + Send + 'static,
    host: impl FnOnce(mpsc::Sender<()>, mpsc::Receiver<()>) + Send + 'static,
) -> Option<T> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (wired_tx, wired_rx) = mpsc::channel();
    let (to_host, from_container) = mpsc::channel();
    let (to_container, from_host) = mpsc::channel();
    // Dropped when the container's side is done: the host's side (and its
    // namespace, and so the pair) lives until then.
    let (done, until_done) = mpsc::channel::<()>();
    let container = std::thread::spawn(move || {
        let _done = done;
        if !unshare_network() {
            let _ = tid_tx.send(None);
            return None;
        }
        // SAFETY: gettid has no preconditions.
        tid_tx.send(Some(unsafe { libc::gettid() })).unwrap();
        wired_rx.recv().unwrap();
        ip("link set eth0 address 0a:58:0a:c8:00:02 mtu 1400 up");
        ip("addr add 10.200.0.2/24 dev eth0");
        ip("addr add fd00:200::2/64 dev eth0 nodad");
        ip("route add default via 10.200.0.1 dev eth0");
        ip("route add 172.16.0.0/12 via 10.200.0.1 dev eth0");
        Some(container(to_host, from_host))
    });
    let host = std::thread::spawn(move || {
        let Some(tid) = tid_rx.recv().unwrap() else { return };
        assert!(unshare_network());
        ip("link add peer0 type veth peer name eth0");
        ip(&format!("link set eth0 netns {tid}"));
        ip("link set peer0 address 0a:58:0a:c8:00:01 mtu 1400 up");
        ip("addr add 10.200.0.1/24 dev peer0");
        wired_tx.send(()).unwrap();
        host(to_container, from_container);
        let _ = until_done.recv();
    });
    host.join().unwrap();
    container.join().unwrap()
}

#[test]
fn the_veth_is_joined_to_a_tap_and_the_guest_takes_its_settings() {
    let config = with_a_veth_pair(
        |_, _| {
            let attachment = Attachment::attach(ELSEWHERE).unwrap();
            let tap = &attachment.interfaces()[0].tap.name;
            let shown = String::from_utf8(
                Command::new("ip")
                    .args(["-d", "link", "show", tap])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap();
            assert!(
                shown.contains("mtu 1400") && shown.contains("tap") && shown.contains("UP"),
                "{shown}"
            );
            assert!(shown.contains("vnet_hdr on"), "{shown}");
            let nics = attachment.nics().unwrap();
            assert_eq!(nics.len(), 1);
            assert_eq!(nics[0].mac, ETH0_MAC);
            attachment.guest_config()
        },
        |_, _| {},
    );
    let Some(config) = config else { return };
    assert_eq!(
        config,
        [InterfaceConfig {
            name: "0a:58:0a:c8:00:02".into(),
            mtu: Some(1400),
            addresses: vec!["10.200.0.2/24".into(), "fd00:200::2/64".into()],
            gateways: vec!["10.200.0.1".into()],
            routes: vec![agent_proto::RouteConfig {
                destination: "172.16.0.0/12".into(),
                gateway: Some("10.200.0.1".into()),
            }],
        }],
        "the kernel's own routes (the subnets of the addresses, fe80::/64) and fe80:: addresses are the guest's to make"
    );
}

/// A frame in the host's namespace reaches the tap (what QEMU would hand
/// the guest), and a frame written to the tap (what the guest sends)
/// reaches the host's namespace: both redirects work.
#[test]
fn frames_go_both_ways_between_the_veth_and_the_tap() {
    let port = 47_000 + (std::process::id() % 1000) as u16;
    with_a_veth_pair(
        move |to_host, from_host| {
            let attachment = Attachment::attach(ELSEWHERE).unwrap();
            let tap = &attachment.interfaces()[0].tap;
            set_nonblocking(&tap.fd);
            let mut tap_file = std::fs::File::from(tap.fd.try_clone().unwrap());
            // The host asks who has 10.200.0.3 (by sending to it): the ARP
            // request comes out of the tap.
            to_host.send(()).unwrap();
            let arp = read_until(&mut tap_file, |frame| {
                frame.get(12..14) == Some(&[0x08, 0x06]) && frame.get(38..42) == Some(&[10, 200, 0, 3])
            });
            assert_eq!(&arp[6..12], &PEER0_MAC, "sent by the host's side");
            // What the guest would send: a UDP datagram to the host's
            // side, from the container's address and MAC.
            let frame = udp_frame(
                (ETH0_MAC, Ipv4Addr::new(10, 200, 0, 2), 4000),
                (PEER0_MAC, Ipv4Addr::new(10, 200, 0, 1), port),
                b"from the guest",
            );
            let mut written = vec![0u8; VNET_HDR_LEN];
            written.extend_from_slice(&frame);
            std::io::Write::write_all(&mut tap_file, &written).unwrap();
            from_host.recv().unwrap();
            let failures = attachment.detach();
            assert!(failures.is_empty(), "{failures:?}");
        },
        move |to_container, from_container| {
            let socket = UdpSocket::bind(("10.200.0.1", port)).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            from_container.recv().unwrap();
            socket.send_to(b"anyone?", "10.200.0.3:9").unwrap();
            let mut buf = [0u8; 64];
            let (len, from) = socket.recv_from(&mut buf).unwrap();
            assert_eq!(
                (&buf[..len], from.to_string()),
                (&b"from the guest"[..], "10.200.0.2:4000".into())
            );
            to_container.send(()).unwrap();
        },
    );
}

#[test]
fn an_interface_is_taken_once_and_given_back_on_detach() {
    with_a_veth_pair(
        |_, _| {
            let first = Attachment::attach(ELSEWHERE).unwrap();
            let again = Attachment::attach(ELSEWHERE).unwrap_err().to_string();
            assert_eq!(
                again,
                "the network namespace's interface eth0 already has an ingress qdisc (another VM is attached to it, or traffic control of someone else's is set up there)"
            );
            // The failed attempt left no tap behind.
            let links = netlink::Netlink::open().unwrap().links().unwrap();
            let taps: Vec<&str> = links
                .iter()
                .filter(|l| l.name.starts_with("vmtap"))
                .map(|l| l.name.as_str())
                .collect();
            assert_eq!(taps, ["vmtap0"]);
            assert!(first.detach().is_empty());
            let second = Attachment::attach(ELSEWHERE).unwrap();
            assert_eq!(
                second.interfaces()[0].tap.name,
                "vmtap0",
                "the first tap went with its descriptor"
            );
            assert!(second.detach().is_empty());
        },
        |_, _| {},
    );
}

#[test]
fn only_loopback_gives_no_nics() {
    in_new_namespace(|| {
        let attachment = Attachment::attach(ELSEWHERE).unwrap();
        assert!(attachment.interfaces().is_empty());
        assert!(attachment.nics().unwrap().is_empty() && attachment.guest_config().is_empty());
    });
}

#[test]
fn what_a_nic_cannot_take_the_place_of_is_refused_by_name() {
    in_new_namespace(|| {
        // An L3 tun device: no Ethernet frames, no MAC.
        ip("tuntap add tun7 mode tun");
        ip("link set tun7 up");
        let e = Attachment::attach(ELSEWHERE).unwrap_err().to_string();
        assert_eq!(
            e,
            "the network namespace's interface tun7 is not an Ethernet device (type 65534): a VM's NIC cannot take its place"
        );
        // Down, it is left alone.
        ip("link set tun7 down");
        assert!(Attachment::attach(ELSEWHERE).unwrap().interfaces().is_empty());
        // vmshim's own namespace is never taken.
        let own = own_namespace().unwrap();
        let e = Attachment::attach(own).unwrap_err().to_string();
        assert!(e.contains("vmshim's own network namespace"), "{e}");
    });
}

#[test]
fn namespaces_by_path_are_checked() {
    let e = open_namespace(Path::new("/nonexistent/netns")).unwrap_err().to_string();
    assert!(
        e.starts_with("cannot open the network namespace /nonexistent/netns:"),
        "{e}"
    );
    let e = open_namespace(Path::new("/proc/self/ns/ipc")).unwrap_err().to_string();
    assert_eq!(e, "/proc/self/ns/ipc is not a network namespace");
    let e = open_namespace(Path::new("/proc/thread-self/ns/net"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("is vmshim's own network namespace"), "{e}");
    in_new_namespace(|| {
        // SAFETY: gettid has no preconditions.
        let path = format!("/proc/self/task/{}/ns/net", unsafe { libc::gettid() });
        let e = open_namespace(Path::new(&path)).unwrap_err().to_string();
        assert!(e.contains("is vmshim's own network namespace"), "{e}");
        // From another namespace, it is a container's.
        let other = std::thread::spawn(move || {
            assert!(unshare_network());
            open_namespace(Path::new(&path)).map(drop).map_err(|e| e.to_string())
        });
        assert_eq!(other.join().unwrap(), Ok(()));
    });
}

/// The virtio-net header a tap with `IFF_VNET_HDR` puts before each frame
/// (and takes from before each frame written), at its default size.
const VNET_HDR_LEN: usize = 10;

fn set_nonblocking(fd: &OwnedFd) {
    // SAFETY: fcntl only reads and sets the descriptor's status flags.
    unsafe {
        let flags = libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// The first frame read from `tap` (virtio-net header stripped) that
/// `wanted` takes, within 10 seconds.
fn read_until(tap: &mut std::fs::File, wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65536];
    loop {
        match std::io::Read::read(tap, &mut buf) {
            Ok(len) if len > VNET_HDR_LEN && wanted(&buf[VNET_HDR_LEN..len]) => return buf[VNET_HDR_LEN..len].to_vec(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("reading the tap: {e}"),
        }
        assert!(Instant::now() < deadline, "no such frame came out of the tap");
    }
}

/// An Ethernet frame holding an IPv4 UDP datagram (no UDP checksum).
fn udp_frame(
    (src_mac, src, src_port): ([u8; 6], Ipv4Addr, u16),
    (dst_mac, dst, dst_port): ([u8; 6], Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut ip = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let sum = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    frame.extend_from_slice(&[0x08, 0x00]);
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&src_port.to_be_bytes());
    frame.extend_from_slice(&dst_port.to_be_bytes());
    frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(payload);
    frame
}
