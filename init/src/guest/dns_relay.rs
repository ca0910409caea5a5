//! Name servers of the host's network namespace that live on its loopback
//! (docker's embedded DNS at `127.0.0.11`), answered in the guest.
//!
//! A VM whose network stands for a container's network namespace
//! (`vmshim runtime` with podman or docker) gets its interfaces' traffic
//! through taps, but not what the namespace's own loopback serves: a
//! resolver there is out of the guest's reach. So the agent listens on UDP
//! port 53 of the same loopback address in the guest (the container joins
//! the VM's network, so its `/etc/resolv.conf` names it unchanged) and
//! relays each query to the host over a vsock connection of its own,
//! framed as DNS over TCP frames it; the host asks the name server in the
//! namespace and answers on that connection (see
//! [`agent_proto::DnsRelay`]).
//!
//! Bounded: at most [`IN_FLIGHT`] queries wait for the host at once (more
//! are dropped, as a busy resolver drops them, and the client asks again),
//! each for at most [`ANSWER_TIMEOUT`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use agent_proto::{DnsRelay, Endpoint, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// An address that is not a loopback address.
    #[error("{0:?} is not an IPv4 or IPv6 loopback address")]
    NotLoopback(String),
    /// An address that could not be listened on.
    #[error("cannot relay DNS on {address}:53: {source}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The host's CID.
const HOST_CID: u32 = 2;

/// How many queries may wait for the host at once.
const IN_FLIGHT: usize = 64;

/// How long a query may wait for its answer (a resolver's own timeout is
/// 5 s; it asks again after).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest DNS message over UDP.
const MAX_MESSAGE: usize = 65535;

/// Starts relaying `relay`'s addresses: each bound now (an error names
/// the address), served by a task from then on.
pub fn start(relay: &DnsRelay) -> Result<(), RelayError> {
    let mut sockets = Vec::new();
    for address in &relay.addresses {
        let ip = match address.parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() => ip,
            _ => return Err(RelayError::NotLoopback(address.clone())),
        };
        let socket = bind(SocketAddr::new(ip, 53)).map_err(|source| RelayError::Bind {
            address: address.clone(),
            source,
        })?;
        sockets.push(socket);
    }
    let host = Endpoint::Vsock {
        cid: HOST_CID,
        port: relay.port,
    };
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    for socket in sockets {
        tokio::spawn(serve(Arc::new(socket), host.clone(), in_flight.clone()));
    }
    Ok(())
}

/// A UDP socket bound to `address`, for tokio.
fn bind(address: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(address)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Answers the queries that reach `socket`, each relayed on its own.
async fn serve(socket: Arc<UdpSocket>, host: Endpoint, in_flight: Arc<Semaphore>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        // Full: dropped, as a busy server drops it; the client asks again.
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (socket, host) = (socket.clone(), host.clone());
        tokio::spawn(async move {
            if let Ok(Ok(answer)) = tokio::time::timeout(ANSWER_TIMEOUT, ask(&host, &query)).await {
                let _ = socket.send_to(&answer, from).await;
            }
            drop(permit);
        });
    }
}

/// `query` asked of the host, framed both ways with a 16-bit length.
async fn ask(host: &Endpoint, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut conn = host.connect().await.map_err(std::io::Error::other)?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long"))?;
    let mut frame = Vec::with_capacity(query.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(query);
    conn.write_all(&frame).await?;
    let mut len = [0u8; 2];
    conn.read_exact(&mut len).await?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    conn.read_exact(&mut answer).await?;
    Ok(answer)
}
