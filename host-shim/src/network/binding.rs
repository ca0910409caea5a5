//! What a switch port may send as, and which lease says so.
//!
//! A port is bound to the lease of the VM whose QEMU opened it: the MAC
//! and IPv4 address that VM leased ([`Binding`]). The daemon's switch finds
//! it from the connecting process ([`LeaseBinder`]), never from anything
//! the guest sends. From a bound port the switch passes only what the
//! lease allows ([`Binding::admits`]):
//!
//! * the frame's source MAC is the port's;
//! * an ARP packet's sender is the port's MAC and address (or, for a
//!   probe, 0.0.0.0);
//! * an IPv4 packet's source address is the port's;
//! * nothing else: IPv6, VLAN-tagged frames and every other EtherType are
//!   dropped (a lease is an IPv4 address).

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use super::lease::{format_mac, parse_mac, read_lease_dir, Record};

/// An Ethernet header: destination, source, type.
pub const ETH_HEADER: usize = 14;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;

/// An Ethernet address.
pub type Mac = [u8; 6];

/// What a port may send as: the MAC and address of its VM's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The only source MAC its frames may have.
    pub mac: Mac,
    /// The only IPv4 address its ARP and IPv4 packets may come from.
    pub ip: Ipv4Addr,
}

/// Why a frame from a bound port was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its source MAC is not the port's.
    SourceMac(Mac),
    /// An ARP packet whose sender (hardware, protocol) is not the port's,
    /// or that is not Ethernet/IPv4 ARP.
    ArpSender(Mac, Ipv4Addr),
    /// An IPv4 packet whose source address is not the port's.
    Ipv4Source(Ipv4Addr),
    /// An ARP or IPv4 packet too short to read.
    Truncated(u16),
    /// An EtherType the switch does not carry.
    EtherType(u16),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::SourceMac(mac) => write!(f, "source MAC {} is not the port's", format_mac(*mac)),
            Refusal::ArpSender(mac, ip) => write!(f, "ARP sender {} {ip} is not the port's", format_mac(*mac)),
            Refusal::Ipv4Source(ip) => write!(f, "IPv4 source {ip} is not the port's"),
            Refusal::Truncated(t) => write!(f, "a truncated packet of EtherType {t:#06x}"),
            Refusal::EtherType(t) => write!(f, "EtherType {t:#06x} is not carried"),
        }
    }
}

impl Binding {
    /// Whether the port bound to this may send `frame` (at least an
    /// Ethernet header long).
    pub fn admits(&self, frame: &[u8]) -> Result<(), Refusal> {
        let src: Mac = frame[6..12].try_into().expect("6 bytes");
        if src != self.mac {
            return Err(Refusal::SourceMac(src));
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let payload = &frame[ETH_HEADER..];
        match ethertype {
            ETHERTYPE_ARP => {
                // Ethernet (1) / IPv4, 6-byte and 4-byte addresses: the
                // sender's pair at 8..14 and 14..18.
                if payload.len() < 28 {
                    return Err(Refusal::Truncated(ethertype));
                }
                let sha: Mac = payload[8..14].try_into().expect("6 bytes");
                let spa = Ipv4Addr::new(payload[14], payload[15], payload[16], payload[17]);
                let ethernet_ipv4 = payload[..6] == [0, 1, 0x08, 0x00, 6, 4];
                let op = u16::from_be_bytes([payload[6], payload[7]]);
                // A probe (RFC 5227) asks with no address of its own.
                let probe = op == 1 && spa == Ipv4Addr::UNSPECIFIED;
                if !ethernet_ipv4 || sha != self.mac || (spa != self.ip && !probe) {
                    return Err(Refusal::ArpSender(sha, spa));
                }
                Ok(())
            }
            ETHERTYPE_IPV4 => {
                if payload.len() < 20 || payload[0] >> 4 != 4 {
                    return Err(Refusal::Truncated(ethertype));
                }
                let src = Ipv4Addr::new(payload[12], payload[13], payload[14], payload[15]);
                if src != self.ip {
                    return Err(Refusal::Ipv4Source(src));
                }
                Ok(())
            }
            other => Err(Refusal::EtherType(other)),
        }
    }
}

/// Finds what a new port may send as; `Err` says why it may not join.
pub trait Binder: Send + Sync + 'static {
    /// What the port at the switch's end of `port` may send as, or why it
    /// may not join.
    fn bind(&self, port: &UnixStream) -> Result<Binding, String>;
}

/// Binds a switch port to the lease of the VM whose QEMU opened it: the
/// connecting process (its credentials, `SO_PEERCRED`) or its parent must
/// hold a live lease on the network, as the vmshim that leased an address
/// is QEMU's parent. Where that process holds several, the port's MAC on
/// QEMU's command line (`virtio-net-device,netdev=switch,mac=..`) says
/// which. Nothing the guest sends has a say.
pub struct LeaseBinder {
    leases: PathBuf,
}

impl LeaseBinder {
    /// The binder of the network whose leases are in `leases`.
    pub fn new(leases: &Path) -> LeaseBinder {
        LeaseBinder {
            leases: leases.to_owned(),
        }
    }
}

impl Binder for LeaseBinder {
    fn bind(&self, port: &tokio::net::UnixStream) -> Result<Binding, String> {
        let cred = port.peer_cred().map_err(|e| format!("its credentials: {e}"))?;
        match cred.pid() {
            Some(pid) if pid > 0 => binding_for(&self.leases, pid as u32),
            _ => Err("its process cannot be told (another pid namespace?)".to_owned()),
        }
    }
}

/// The binding of the lease (in directory `leases`) held by process `pid`
/// or its parent.
pub(super) fn binding_for(leases: &Path, pid: u32) -> Result<Binding, String> {
    let parent = super::process::parent(pid);
    let held: Vec<(Ipv4Addr, Record)> = read_lease_dir(leases)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|(ip, r)| r.map(|r| (ip, r)))
        .filter(|(_, r)| (r.pid == pid || Some(r.pid) == parent) && r.owner().alive())
        .collect();
    let chosen = match held.len() {
        0 => {
            return Err(format!(
                "no live lease on the network is held by process {pid} or its parent"
            ))
        }
        1 => &held[0],
        n => {
            let mac = switch_mac(pid)
                .ok_or_else(|| format!("process {pid}'s parent holds {n} leases, and its command line names no MAC"))?;
            held.iter()
                .find(|(_, r)| parse_mac(&r.mac) == Some(mac))
                .ok_or_else(|| format!("no lease of process {pid}'s parent has MAC {}", format_mac(mac)))?
        }
    };
    let (ip, record) = chosen;
    let mac = parse_mac(&record.mac).ok_or_else(|| format!("the lease of {ip} has a bad MAC {:?}", record.mac))?;
    Ok(Binding { mac, ip: *ip })
}

/// The MAC of the switch device on process `pid`'s (QEMU's) command line.
fn switch_mac(pid: u32) -> Option<Mac> {
    super::process::cmdline(pid)?.iter().find_map(|arg| {
        let mut fields = arg.split(',');
        fields.next().filter(|d| *d == "virtio-net-device")?;
        let fields: Vec<&str> = fields.collect();
        fields.contains(&"netdev=switch").then_some(())?;
        fields.iter().find_map(|f| f.strip_prefix("mac=")).and_then(parse_mac)
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::network::lease::mac_for;
    use crate::network::process::Owner;
    use crate::test_dir::TestDir;

    pub(crate) const A: Mac = [0x02, 0x56, 0x4d, 0, 0, 0x02];
    pub(crate) const B: Mac = [0x02, 0x56, 0x4d, 0, 0, 0x03];
    pub(crate) const C: Mac = [0x02, 0x56, 0x4d, 0, 0, 0x04];
    pub(crate) const UNKNOWN: Mac = [0x02, 0, 0, 0, 0, 0xdd];
    pub(crate) const BROADCAST: Mac = [0xff; 6];
    pub(crate) const MULTICAST: Mac = [0x01, 0x00, 0x5e, 0, 0, 1];

    pub(crate) fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 89, 0, last)
    }

    /// Writes a lease of `ip` held by this process into `leases`, as
    /// leasing does; removing the file gives it back.
    fn hold(leases: &Path, ip: Ipv4Addr, name: &str) -> Binding {
        let owner = Owner::current();
        let record = Record {
            name: name.to_owned(),
            pid: owner.pid,
            started: owner.started,
            mac: format_mac(mac_for(ip)),
        };
        std::fs::write(leases.join(ip.to_string()), serde_json::to_vec(&record).unwrap()).unwrap();
        Binding { mac: mac_for(ip), ip }
    }

    pub(crate) fn binding(mac: Mac) -> Binding {
        Binding { mac, ip: ip(mac[5]) }
    }

    /// An IPv4 frame from `src` (MAC) and `src_ip` carrying `payload`.
    pub(crate) fn ipv4(dst: Mac, src: Mac, src_ip: Ipv4Addr, payload: &str) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = (20 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&src_ip.octets());
        f.extend_from_slice(&ip(0xff).octets());
        f.extend_from_slice(payload.as_bytes());
        f
    }

    /// An IPv4 frame from the port bound to `src`, as its lease allows.
    pub(crate) fn from(src: Mac, dst: Mac, payload: &str) -> Vec<u8> {
        ipv4(dst, src, ip(src[5]), payload)
    }

    /// An ARP packet (op 1: request, 2: reply) in a frame from `src`.
    pub(crate) fn arp(dst: Mac, src: Mac, op: u16, sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(&sha);
        f.extend_from_slice(&spa.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa.octets());
        f
    }

    /// A frame of another EtherType.
    pub(crate) fn other(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(&[0x60; 40]);
        f
    }

    #[test]
    fn what_a_lease_allows() {
        let a = binding(A);
        assert_eq!(a.admits(&from(A, B, "x")), Ok(()));
        assert_eq!(a.admits(&from(B, A, "x")), Err(Refusal::SourceMac(B)));
        assert_eq!(a.admits(&ipv4(B, A, ip(9), "x")), Err(Refusal::Ipv4Source(ip(9))));
        assert_eq!(
            a.admits(&arp(BROADCAST, A, 2, A, ip(9), ip(3))),
            Err(Refusal::ArpSender(A, ip(9)))
        );
        // A reply cannot claim no address; only a probe (a request) may.
        assert_eq!(
            a.admits(&arp(BROADCAST, A, 2, A, Ipv4Addr::UNSPECIFIED, ip(3))),
            Err(Refusal::ArpSender(A, Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(a.admits(&other(B, A, 0x86dd)), Err(Refusal::EtherType(0x86dd)));
        assert_eq!(
            Refusal::ArpSender(A, ip(9)).to_string(),
            "ARP sender 02:56:4d:00:00:02 10.89.0.9 is not the port's"
        );
    }

    #[test]
    fn ports_are_bound_to_the_lease_of_their_vm() {
        let dir = TestDir::new("lease-bind");
        let leases = dir.path().to_owned();
        let a_binding = hold(&leases, Ipv4Addr::new(10, 40, 0, 2), "a");
        // The lease holder itself, and its child (QEMU).
        assert_eq!(binding_for(&leases, std::process::id()), Ok(a_binding));
        let mut qemu = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        assert_eq!(binding_for(&leases, qemu.id()), Ok(a_binding));
        // A process that holds no lease and whose parent holds none.
        let err = binding_for(&leases, 1).unwrap_err();
        assert!(
            err.contains("no live lease on the network is held by process 1"),
            "{err}"
        );
        // Two leases of one process: QEMU's command line says which.
        let b = hold(&leases, Ipv4Addr::new(10, 40, 0, 3), "b");
        let err = binding_for(&leases, qemu.id()).unwrap_err();
        assert!(
            err.contains("holds 2 leases, and its command line names no MAC"),
            "{err}"
        );
        let device = format!("virtio-net-device,netdev=switch,mac={}", format_mac(b.mac));
        let mut qemu_b = std::process::Command::new("sh")
            .args([
                "-c",
                "sleep 10; :",
                "qemu",
                "-device",
                "virtio-net-device,netdev=nat,mac=02:76:6d:00:02:0f",
            ])
            .args(["-device", &device])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while switch_mac(qemu_b.id()).is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(binding_for(&leases, qemu_b.id()), Ok(b));
        // A lease given back binds nothing.
        for ip in [a_binding.ip, b.ip] {
            std::fs::remove_file(leases.join(ip.to_string())).unwrap();
        }
        assert!(binding_for(&leases, qemu.id()).is_err());
        for child in [&mut qemu, &mut qemu_b] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert_eq!(parse_mac("02:56:4D:0a:00:02"), Some([2, 0x56, 0x4d, 10, 0, 2]));
        for bad in [
            "",
            "02:56:4d:0a:00",
            "02:56:4d:0a:00:02:03",
            "2:56:4d:0a:00:02",
            "zz:56:4d:0a:00:02",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_binder_asks_the_connecting_process() {
        let dir = TestDir::new("lease-binder");
        let a = hold(dir.path(), Ipv4Addr::new(10, 41, 0, 2), "a");
        // The other end of the port is this process, which holds the lease.
        let (port, _peer) = UnixStream::pair().unwrap();
        let binder = LeaseBinder::new(dir.path());
        assert_eq!(binder.bind(&port), Ok(a));
        std::fs::remove_file(dir.path().join("10.41.0.2")).unwrap();
        let err = binder.bind(&port).unwrap_err();
        assert!(err.starts_with("no live lease on the network"), "{err}");
    }
}
