//! The VM's network devices. Every VM gets NAT through QEMU's user
//! networking (no root needed): the guest is 10.0.2.15/24, the host's
//! loopback is reachable at 10.0.2.2 (named `host.vminitd.internal` in the
//! guest), and `-p` publishes guest ports on the host. A VM on a vmshim
//! network also gets a second interface on that network's switch: the
//! switch daemon's socket, or a tap device on the network's bridge.
//!
//! Interfaces are named to the guest by MAC address, set on the kernel
//! command line, so they are up before the agent listens.
//!
//! A container's VM whose network is the container's network namespace
//! ([`crate::netns`]) has neither: its NICs are taps in that namespace
//! ([`GuestNetwork::taps`]), handed to QEMU as descriptors, and the guest
//! learns their settings from the host after boot (`configure_network`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;

use crate::network::Lease;
pub use crate::network::PortBackend;

/// The guest's address on the NAT network.
pub const NAT_GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The NAT gateway: the host's loopback, seen from the guest.
pub const NAT_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// QEMU's DNS forwarder on the NAT network.
pub const NAT_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The name of the host in the guest's `/etc/hosts`.
pub const HOST_ALIAS: &str = "host.vminitd.internal";
/// The NAT interface's MAC (each VM has a NAT network of its own).
const NAT_MAC: [u8; 6] = [0x02, 0x76, 0x6d, 0x00, 0x02, 0x0f];

/// Why a network setting is refused.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A `-p` value that does not parse.
    #[error("bad port mapping {value:?}: {why} (expected [ADDRESS:]HOST_PORT:GUEST_PORT[/tcp|/udp])")]
    BadMapping {
        /// As given.
        value: String,
        /// Which part is wrong.
        why: &'static str,
    },
    /// A host port that something on the host already holds.
    #[error("cannot publish {mapping}: {addr}:{port}/{proto} is already in use on the host")]
    PortInUse {
        /// The mapping, as `-p` gave it.
        mapping: String,
        /// The host address.
        addr: IpAddr,
        /// The host port.
        port: u16,
        /// Its protocol.
        proto: Protocol,
        /// What binding it said.
        source: std::io::Error,
    },
}

/// A published port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// `-p [ADDRESS:]HOST_PORT:GUEST_PORT[/tcp|/udp]`: the host address defaults
/// to 127.0.0.1, so that a published port is not opened to the network
/// unless asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// The host address QEMU listens on (127.0.0.1 unless given).
    pub host_addr: IpAddr,
    /// The host port.
    pub host_port: u16,
    /// The port in the guest it forwards to.
    pub guest_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl FromStr for PortMapping {
    type Err = NetError;

    fn from_str(value: &str) -> Result<Self, NetError> {
        let bad = |why| NetError::BadMapping {
            value: value.to_owned(),
            why,
        };
        let (ports, protocol) = match value.rsplit_once('/') {
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some(_) => return Err(bad("the protocol must be tcp or udp")),
            None => (value, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (addr, host, guest) = match parts[..] {
            [host, guest] => (IpAddr::V4(Ipv4Addr::LOCALHOST), host, guest),
            [addr, host, guest] => (
                addr.parse().map_err(|_| bad("the host address is not an IP address"))?,
                host,
                guest,
            ),
            _ => return Err(bad("expected two or three ':'-separated parts")),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
        Ok(PortMapping {
            host_addr: addr,
            host_port: port(host).ok_or_else(|| bad("the host port must be a number from 1 to 65535"))?,
            guest_port: port(guest).ok_or_else(|| bad("the guest port must be a number from 1 to 65535"))?,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}/{}",
            self.host_addr, self.host_port, self.guest_port, self.protocol
        )
    }
}

impl PortMapping {
    /// Checks that the host port is free, for a clear error before QEMU
    /// starts (QEMU would only say that a forwarding rule failed).
    pub fn check_free(&self) -> Result<(), NetError> {
        let addr = (self.host_addr, self.host_port);
        let result = match self.protocol {
            Protocol::Tcp => TcpListener::bind(addr).map(drop),
            Protocol::Udp => UdpSocket::bind(addr).map(drop),
        };
        result.map_err(|source| NetError::PortInUse {
            mapping: self.to_string(),
            addr: self.host_addr,
            port: self.host_port,
            proto: self.protocol,
            source,
        })
    }

    fn hostfwd(&self) -> String {
        format!(
            "hostfwd={}:{}:{}-{}:{}",
            self.protocol, self.host_addr, self.host_port, NAT_GUEST, self.guest_port
        )
    }
}

/// A port on a vmshim network's switch (the switch daemon, or the Linux
/// bridge).
#[derive(Debug, Clone)]
pub struct SwitchPort {
    /// Where the VM's network device plugs in: the switch's socket, or a
    /// tap device on the bridge.
    pub backend: PortBackend,
    /// The device's MAC, the one its lease binds.
    pub mac: [u8; 6],
    /// The VM's address on the network.
    pub address: Ipv4Addr,
    /// The network's prefix length.
    pub prefix_len: u8,
}

impl SwitchPort {
    /// The port a lease gives the VM.
    pub fn for_lease(lease: &Lease) -> SwitchPort {
        SwitchPort {
            backend: lease.backend.clone(),
            mac: lease.mac,
            address: lease.ip,
            prefix_len: lease.prefix_len,
        }
    }

    /// QEMU's `-netdev` value. Option values escape a comma by doubling it.
    fn netdev(&self) -> String {
        match &self.backend {
            PortBackend::Switch { socket } => format!(
                "stream,id=switch,server=off,addr.type=unix,addr.path={}",
                socket.to_string_lossy().replace(',', ",,")
            ),
            PortBackend::Tap { ifname } => format!(
                "tap,id=switch,ifname={},script=no,downscript=no",
                ifname.replace(',', ",,")
            ),
        }
    }
}

/// A NIC on a tap device of the host that QEMU gets as a descriptor (a
/// tap in a container's network namespace, [`crate::netns`]).
#[derive(Debug, Clone)]
pub struct TapNic {
    /// The tap's descriptor; QEMU inherits it at the same number.
    pub fd: Arc<OwnedFd>,
    /// The guest NIC's MAC.
    pub mac: [u8; 6],
}

/// The network of one VM.
#[derive(Debug, Clone, Default)]
pub struct GuestNetwork {
    /// No network at all but loopback.
    pub none: bool,
    /// Host ports forwarded to the guest through the NAT (`-p`).
    pub publish: Vec<PortMapping>,
    /// A port on a vmshim network, besides the NAT.
    pub switch: Option<SwitchPort>,
    /// The guest's host name.
    pub hostname: Option<String>,
    /// NICs on taps of a container's network namespace: when there are
    /// any, they are the VM's only NICs (no NAT, no switch).
    pub taps: Vec<TapNic>,
}

fn mac_string(mac: &[u8; 6]) -> String {
    crate::network::format_mac(*mac)
}

impl GuestNetwork {
    /// QEMU's network devices.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.none {
            return args;
        }
        if !self.taps.is_empty() {
            for (i, tap) in self.taps.iter().enumerate() {
                args.extend([
                    "-netdev".into(),
                    format!("tap,id=tap{i},fd={}", tap.fd.as_raw_fd()),
                    "-device".into(),
                    format!("virtio-net-device,netdev=tap{i},mac={}", mac_string(&tap.mac)),
                ]);
            }
            return args;
        }
        let mut nat = String::from("user,id=nat,net=10.0.2.0/24,ipv6=off");
        for mapping in &self.publish {
            nat.push(',');
            nat.push_str(&mapping.hostfwd());
        }
        args.extend(["-netdev".into(), nat]);
        args.extend([
            "-device".into(),
            format!("virtio-net-device,netdev=nat,mac={}", mac_string(&NAT_MAC)),
        ]);
        if let Some(port) = &self.switch {
            args.extend([
                "-netdev".into(),
                port.netdev(),
                "-device".into(),
                format!("virtio-net-device,netdev=switch,mac={}", mac_string(&port.mac)),
            ]);
        }
        args
    }

    /// Kernel command-line words that configure the guest at boot.
    pub fn cmdline(&self) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(name) = &self.hostname {
            words.push(format!("vminitd.hostname={name}"));
        }
        // Taps: set up over the agent once it answers (MTU and routes are
        // more than the command line carries).
        if self.none || !self.taps.is_empty() {
            return words;
        }
        words.push(format!("vminitd.ip={},{NAT_GUEST}/24,{NAT_HOST}", mac_string(&NAT_MAC)));
        words.push(format!("vminitd.dns={NAT_DNS}"));
        words.push(format!("vminitd.host={NAT_HOST},{HOST_ALIAS}"));
        if let Some(port) = &self.switch {
            words.push(format!(
                "vminitd.ip={},{}/{}",
                mac_string(&port.mac),
                port.address,
                port.prefix_len
            ));
            if let Some(name) = &self.hostname {
                words.push(format!("vminitd.host={},{name}", port.address));
            }
        }
        words
    }

    /// Lets QEMU, spawned by `cmd`, inherit the taps' descriptors (they
    /// are close-on-exec, so no other child gets them).
    pub fn pass_taps(&self, cmd: &mut Command) {
        if self.taps.is_empty() {
            return;
        }
        let fds: Vec<Arc<OwnedFd>> = self.taps.iter().map(|t| t.fd.clone()).collect();
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls fcntl, which is async-signal-safe; the descriptors are
        // held by the closure, so they are open then.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &fds {
                    if libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings() {
        let m: PortMapping = "8080:80".parse().unwrap();
        assert_eq!((m.host_port, m.guest_port, m.protocol), (8080, 80, Protocol::Tcp));
        assert_eq!(m.host_addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let m: PortMapping = "0.0.0.0:5353:53/udp".parse().unwrap();
        assert_eq!((m.host_port, m.guest_port, m.protocol), (5353, 53, Protocol::Udp));
        assert_eq!(m.hostfwd(), "hostfwd=udp:0.0.0.0:5353-10.0.2.15:53");
        for bad in ["80", "a:80", "80:0", "80:70000", "1:2/sctp", "x:1:2", "1:2:3:4"] {
            let e = bad.parse::<PortMapping>().unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn a_port_in_use_is_named() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let m: PortMapping = format!("{port}:80").parse().unwrap();
        let e = m.check_free().unwrap_err().to_string();
        assert!(
            e.contains(&format!("127.0.0.1:{port}/tcp")) && e.contains("already in use"),
            "{e}"
        );
        drop(taken);
        m.check_free().unwrap();
    }

    #[test]
    fn devices_and_boot_settings() {
        let net = GuestNetwork {
            publish: vec!["8080:80".parse().unwrap()],
            switch: Some(SwitchPort {
                backend: PortBackend::Switch {
                    socket: "/s/switch.sock".into(),
                },
                mac: [2, 0x56, 0x4d, 10, 89, 2],
                address: Ipv4Addr::new(10, 89, 0, 2),
                prefix_len: 24,
            }),
            hostname: Some("web".into()),
            none: false,
            taps: Vec::new(),
        };
        let args = net.qemu_args().join(" ");
        assert!(
            args.contains("user,id=nat,net=10.0.2.0/24,ipv6=off,hostfwd=tcp:127.0.0.1:8080-10.0.2.15:80"),
            "{args}"
        );
        assert!(
            args.contains("stream,id=switch,server=off,addr.type=unix,addr.path=/s/switch.sock"),
            "{args}"
        );
        let words = net.cmdline().join(" ");
        assert!(
            words.contains("vminitd.ip=02:76:6d:00:02:0f,10.0.2.15/24,10.0.2.2"),
            "{words}"
        );
        assert!(words.contains("vminitd.ip=02:56:4d:0a:59:02,10.89.0.2/24"), "{words}");
        assert!(words.contains("vminitd.host=10.89.0.2,web"), "{words}");
        let none = GuestNetwork {
            none: true,
            ..Default::default()
        };
        assert!(none.qemu_args().is_empty());
    }

    #[test]
    fn a_tap_port_on_a_bridge() {
        let mut net = GuestNetwork {
            switch: Some(SwitchPort {
                backend: PortBackend::Tap {
                    ifname: "vmtap-0a590002".into(),
                },
                mac: [2, 0x56, 0x4d, 89, 0, 2],
                address: Ipv4Addr::new(10, 89, 0, 2),
                prefix_len: 24,
            }),
            ..Default::default()
        };
        let args = net.qemu_args();
        let at = args.iter().position(|a| a.starts_with("tap,")).unwrap();
        assert_eq!(
            args[at - 1..],
            [
                "-netdev",
                "tap,id=switch,ifname=vmtap-0a590002,script=no,downscript=no",
                "-device",
                "virtio-net-device,netdev=switch,mac=02:56:4d:59:00:02"
            ]
        );
        // The guest is set up the same way on either driver.
        assert!(net
            .cmdline()
            .contains(&"vminitd.ip=02:56:4d:59:00:02,10.89.0.2/24".to_owned()));
        net.switch.as_mut().unwrap().backend = PortBackend::Switch {
            socket: "/a,b/switch.sock".into(),
        };
        assert!(net
            .qemu_args()
            .contains(&"stream,id=switch,server=off,addr.type=unix,addr.path=/a,,b/switch.sock".to_owned()));
    }

    #[test]
    fn taps_are_the_only_nics_and_passed_as_descriptors() {
        let tap = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::OwnedFd::from(tap);
        let raw = fd.as_raw_fd();
        let net = GuestNetwork {
            publish: vec!["8080:80".parse().unwrap()],
            hostname: Some("web".into()),
            taps: vec![TapNic {
                fd: Arc::new(fd),
                mac: [0x0a, 0x58, 0x0a, 0x58, 0, 2],
            }],
            ..Default::default()
        };
        assert_eq!(
            net.qemu_args(),
            [
                "-netdev".to_owned(),
                format!("tap,id=tap0,fd={raw}"),
                "-device".to_owned(),
                "virtio-net-device,netdev=tap0,mac=0a:58:0a:58:00:02".to_owned(),
            ],
            "no NAT beside the taps"
        );
        assert_eq!(net.cmdline(), ["vminitd.hostname=web"]);
        // The child gets the descriptor open at its number; the parent's
        // stays close-on-exec.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("[ -e /proc/self/fd/{raw} ]")]);
        net.pass_taps(&mut cmd);
        assert!(cmd.status().unwrap().success());
        let mut plain = Command::new("sh");
        plain.args(["-c", &format!("[ -e /proc/self/fd/{raw} ]")]);
        assert!(!plain.status().unwrap().success());
    }
}
