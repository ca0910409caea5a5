//! The name servers on the loopback of a container's network namespace
//! (docker's embedded DNS at `127.0.0.11`), answered for the guest.
//!
//! Traffic of the namespace's interfaces reaches the VM through its taps,
//! but the namespace's loopback does not: the guest's `127.0.0.11` is the
//! guest's own. So where the container's `/etc/resolv.conf` (a bind mount
//! of a host file, shared with the VM) names a loopback name server, the
//! agent listens on that address in the guest and relays each query over
//! vsock ([`agent_proto::DnsRelay`]), and the instance daemon, which runs
//! in the container's namespace, asks the name server there
//! ([`serve`]). Docker's own rules in the namespace (a DNAT of
//! `127.0.0.11:53` to its resolver's port) apply to the daemon's query as
//! to a process of the container's.
//!
//! Bounded: at most [`CONNECTIONS`] relay connections at once, each idle
//! for at most [`IDLE`], each query waiting [`ANSWER_TIMEOUT`] for its
//! answer.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agent_proto::{ContainerSpec, GUEST_SHARES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use crate::vm::virtiofs::SharedPath;
use crate::vm::vsock::{GuestListener, GuestStream};

/// The guest's port for the relay with the vhost-user backend.
pub const RELAY_PORT: u32 = 1053;

/// Relay connections served at once.
const CONNECTIONS: usize = 64;

/// How long a relay connection may stay without a query.
const IDLE: Duration = Duration::from_secs(30);

/// How long a query waits for the name server.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The loopback name servers of the `/etc/resolv.conf` that container
/// `spec` gets from the host: the file its bind mount at
/// `/etc/resolv.conf` takes from the VM's share (`shares`). None where it
/// has no such mount, or names no loopback server.
pub fn loopback_nameservers(spec: &ContainerSpec, shares: &[SharedPath]) -> Vec<IpAddr> {
    let prefix = format!("{GUEST_SHARES}/");
    let source = spec
        .mounts
        .iter()
        .rev()
        .find(|m| m.destination == "/etc/resolv.conf")
        .and_then(|m| m.source.as_deref())
        .and_then(|s| s.strip_prefix(&prefix))
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| shares.get(n));
    match source {
        Some(share) => read_loopback_nameservers(&share.source),
        None => Vec::new(),
    }
}

/// The loopback `nameserver` lines of resolv.conf `path`, in order.
fn read_loopback_nameservers(path: &Path) -> Vec<IpAddr> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_loopback_nameservers(&text)
}

fn parse_loopback_nameservers(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        if let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) {
            if ip.is_loopback() && !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// Serves the guest's relay connections on `listener`: each query is
/// asked of the name server at the address it was sent to in the guest,
/// which the agent cannot tell the host, so of `servers` in order (the
/// first that answers). Runs until the daemon ends.
pub async fn serve(listener: GuestListener, servers: Vec<IpAddr>) {
    let servers = Arc::new(servers);
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let Ok(stream) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let servers = servers.clone();
        tokio::spawn(async move {
            relay(stream, &servers).await;
            drop(slot);
        });
    }
}

/// Answers the queries of one connection, framed with a 16-bit length.
async fn relay(mut stream: Box<dyn GuestStream>, servers: &[IpAddr]) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut query).await.is_err() {
            return;
        }
        let Some(answer) = ask(servers, &query).await else {
            return;
        };
        let Ok(len) = u16::try_from(answer.len()) else {
            return;
        };
        let mut frame = Vec::with_capacity(answer.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&answer);
        if stream.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// `query` asked of each of `servers` in turn over UDP; the first answer
/// that carries the query's id.
async fn ask(servers: &[IpAddr], query: &[u8]) -> Option<Vec<u8>> {
    for &server in servers {
        let local: SocketAddr = match server {
            IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
            IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let Ok(socket) = UdpSocket::bind(local).await else {
            continue;
        };
        if socket.connect((server, 53)).await.is_err() || socket.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        let answer = async {
            loop {
                let n = socket.recv(&mut buf).await.ok()?;
                // A stray datagram that is not this query's answer is skipped.
                if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                    return Some(buf[..n].to_vec());
                }
            }
        };
        if let Ok(Some(answer)) = tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            return Some(answer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_name_servers_are_relayed() {
        let text = "search example.org\nnameserver 127.0.0.11\nnameserver 10.0.0.1\n# nameserver 127.0.0.2\nnameserver ::1\nnameserver 127.0.0.11\nnameserver nope\noptions ndots:0\n";
        assert_eq!(
            parse_loopback_nameservers(text),
            ["127.0.0.11".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]
        );
        assert!(parse_loopback_nameservers("nameserver 10.88.0.1\n").is_empty());
    }

    #[test]
    fn the_resolv_conf_is_the_one_the_container_binds_from_the_share() {
        let dir = std::env::temp_dir().join(format!("vmshim-dns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, "nameserver 127.0.0.11\noptions ndots:0\n").unwrap();
        let shares = vec![
            SharedPath {
                source: dir.join("hosts"),
                readonly: false,
                recursive: false,
                guest_bind: None,
            },
            SharedPath {
                source: resolv.clone(),
                readonly: false,
                recursive: false,
                guest_bind: None,
            },
        ];
        let mut spec: ContainerSpec = serde_json::from_value(serde_json::json!({
            "id": "c",
            "root": "/",
            "process": {"args": ["true"]},
            "mounts": [{"destination": "/etc/resolv.conf", "type": "bind", "source": format!("{GUEST_SHARES}/1")}]
        }))
        .unwrap();
        assert_eq!(
            loopback_nameservers(&spec, &shares),
            ["127.0.0.11".parse::<IpAddr>().unwrap()]
        );
        spec.mounts.clear();
        assert!(loopback_nameservers(&spec, &shares).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
