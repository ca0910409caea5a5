//! Who may talk to the agent.
//!
//! Three checks, in the order a connection meets them:
//!
//! 1. **The peer** ([`Access::admit`]), before a byte is read: over vsock
//!    only the host (CID 2), never a process of the guest itself (the guest
//!    kernel has no vsock loopback either) nor another VM; over a Unix
//!    socket only root or the agent's own user (`SO_PEERCRED`; the socket
//!    itself is 0600).
//! 2. **The key** ([`Access::authorize`]), in the first frame: where the
//!    host hands the agent a key at boot ([`receive_key`]), every
//!    other connection must present it (the readiness connection itself,
//!    which the agent opened to the host, goes on as the host's first
//!    control session). Connections are accepted and their first
//!    frame read while the key is on its way (the host dials the moment it
//!    has sent it); none is authorized before it has arrived. A VM's agent
//!    (listening on vsock) that was given no key serves no one: with the
//!    kernel's vhost-vsock every local user of the host can reach it.
//! 3. **The limits** (in `server.rs`): a deadline for the first frame, a
//!    cap on connections that have not shown their key yet (the oldest is
//!    dropped for a new one), and on sessions.

use std::time::Duration;

use tokio::sync::watch;

use agent_proto::endpoint::CID_HOST;
use agent_proto::key::KEY_LINE_LEN;
use agent_proto::{AgentKey, Conn, Endpoint, ErrorBody, ErrorCode, Peer, Transport, READY_LINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the host may take to answer the readiness line with the key.
const KEY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection must show.
#[derive(Debug, Clone)]
enum KeyPolicy {
    /// The readiness exchange is under way: wait for its outcome.
    Awaited,
    /// No key: a Unix socket without a readiness exchange (a namespace on
    /// the host, where the socket's mode and the peer's uid decide).
    NotRequired,
    /// The key the host handed over at boot.
    Required(AgentKey),
    /// A key is needed and none was handed over: nothing is served.
    Locked { why: String },
}

/// The agent's access rules (see the module doc).
#[derive(Debug)]
pub struct Access {
    key: watch::Sender<KeyPolicy>,
    /// The agent's effective uid, the other user a Unix peer may be.
    own_uid: u32,
    /// When the key arrived (`CLOCK_BOOTTIME`), for the boot timeline.
    key_received_ns: std::sync::OnceLock<u64>,
}

/// Why a peer was turned away before anything was read from it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{peer}: only the host (CID {CID_HOST}) may connect over vsock")]
    NotTheHost { peer: Peer },
    #[error("{peer}: only root or uid {own_uid} may connect")]
    OtherUser { peer: Peer, own_uid: u32 },
}

/// Why the key exchange at boot failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyExchangeError {
    #[error("cannot announce readiness to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: agent_proto::TransportError,
    },
    #[error("readiness exchange with {endpoint}: {source}")]
    Io { endpoint: String, source: std::io::Error },
    #[error("readiness exchange with {endpoint}: no answer within {KEY_TIMEOUT:?}")]
    Timeout { endpoint: String },
    #[error("readiness exchange with {endpoint}: the host closed the connection without handing over a key")]
    NoKey { endpoint: String },
    #[error("readiness exchange with {endpoint}: {source}")]
    BadKey {
        endpoint: String,
        source: agent_proto::KeyError,
    },
}

impl Access {
    /// The rules for an agent listening on `listen` that will (`exchange`)
    /// or will not receive a key; with one coming, [`Access::set_key`]
    /// says how the exchange ended.
    pub fn new(listen: &Endpoint, exchange: bool) -> Access {
        // SAFETY: geteuid has no preconditions.
        let own_uid = unsafe { libc::geteuid() };
        let key = match (exchange, listen) {
            (true, _) => KeyPolicy::Awaited,
            (false, Endpoint::Unix(_)) => KeyPolicy::NotRequired,
            (false, _) => KeyPolicy::Locked {
                why: "the agent has no key: a VM's agent serves only after its host hands it one \
                      (boot it with vminitd.notify=)"
                    .into(),
            },
        };
        Access {
            key: watch::Sender::new(key),
            own_uid,
            key_received_ns: std::sync::OnceLock::new(),
        }
    }

    /// The outcome of the readiness exchange.
    pub fn set_key(&self, key: Result<AgentKey, KeyExchangeError>) {
        let policy = match key {
            Ok(key) => {
                let _ = self.key_received_ns.set(crate::sys::timeline::boottime_ns());
                KeyPolicy::Required(key)
            }
            Err(e) => {
                warn!("{e}");
                KeyPolicy::Locked {
                    why: format!("the agent has no key: {e}"),
                }
            }
        };
        self.key.send_replace(policy);
        debug!("access: {}", self.describe());
    }

    /// When the key arrived, if it has.
    pub fn key_received_ns(&self) -> Option<u64> {
        self.key_received_ns.get().copied()
    }

    /// Whether the agent asks for a key, or serves no one (for the log).
    pub fn describe(&self) -> String {
        match &*self.key.borrow() {
            KeyPolicy::Awaited => "waiting for the agent key".into(),
            KeyPolicy::NotRequired => "no agent key (a 0600 socket)".into(),
            KeyPolicy::Required(_) => "agent key required".into(),
            KeyPolicy::Locked { why } => why.clone(),
        }
    }

    /// Check 1: whether `peer` may connect at all.
    pub fn admit(&self, peer: &Peer) -> Result<(), Refusal> {
        match *peer {
            Peer::Vsock { cid, .. } if cid == CID_HOST => Ok(()),
            Peer::Vsock { .. } => Err(Refusal::NotTheHost { peer: *peer }),
            Peer::Unix { uid: Some(uid) } if uid == 0 || uid == self.own_uid => Ok(()),
            Peer::Unix { .. } => Err(Refusal::OtherUser {
                peer: *peer,
                own_uid: self.own_uid,
            }),
        }
    }

    /// Check 2: whether the key `presented` in a connection's first frame
    /// opens the agent; waits for the key while it is on its way.
    pub async fn authorize(&self, presented: Option<&AgentKey>) -> Result<(), ErrorBody> {
        let mut rx = self.key.subscribe();
        // The sender lives as long as `self`: the wait ends with the key.
        let policy = match rx.wait_for(|p| !matches!(p, KeyPolicy::Awaited)).await {
            Ok(policy) => policy.clone(),
            Err(_) => KeyPolicy::Locked {
                why: "the agent has no key".into(),
            },
        };
        Self::check(&policy, presented)
    }

    fn check(policy: &KeyPolicy, presented: Option<&AgentKey>) -> Result<(), ErrorBody> {
        let refused = |message: &str| Err(ErrorBody::new(ErrorCode::Unauthorized, message));
        match (policy, presented) {
            (KeyPolicy::Awaited, _) => refused("the agent key has not arrived yet"),
            (KeyPolicy::NotRequired, _) => Ok(()),
            (KeyPolicy::Required(key), Some(presented)) if key.matches(presented) => Ok(()),
            (KeyPolicy::Required(_), Some(_)) => {
                refused("the agent key presented is not this VM's: connect with the key its host was given at boot")
            }
            (KeyPolicy::Required(_), None) => {
                refused("this agent requires its agent key in the first frame (\"key\"), and none was presented")
            }
            (KeyPolicy::Locked { why }, _) => refused(why),
        }
    }
}

/// The readiness exchange (`vminitd.notify=`): tells the host that the
/// agent listens, and receives the VM's agent key in answer. The agent
/// serves nothing before this returns. The connection is returned open:
/// the host goes on with it as its first control session (the frames it
/// wrote behind the key are still unread), or closes it.
pub async fn receive_key(endpoint: &Endpoint) -> Result<(AgentKey, Conn), KeyExchangeError> {
    let name = || endpoint.to_string();
    let exchange = async {
        let mut conn = endpoint.connect().await.map_err(|source| KeyExchangeError::Connect {
            endpoint: name(),
            source,
        })?;
        let io_err = |source| KeyExchangeError::Io {
            endpoint: name(),
            source,
        };
        conn.write_all(READY_LINE).await.map_err(io_err)?;
        // Exactly the key line: what follows it is the session's.
        let mut line = Vec::with_capacity(KEY_LINE_LEN);
        (&mut conn)
            .take(KEY_LINE_LEN as u64)
            .read_to_end(&mut line)
            .await
            .map_err(io_err)?;
        if line.is_empty() {
            return Err(KeyExchangeError::NoKey { endpoint: name() });
        }
        let key = AgentKey::from_line(&line).map_err(|source| KeyExchangeError::BadKey {
            endpoint: name(),
            source,
        })?;
        Ok((key, conn))
    };
    match tokio::time::timeout(KEY_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(KeyExchangeError::Timeout { endpoint: name() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AgentKey {
        AgentKey::from_hex(&"5a".repeat(32)).unwrap()
    }

    fn with_key(listen: &str, key: Result<AgentKey, KeyExchangeError>) -> Access {
        let access = Access::new(&listen.parse().unwrap(), true);
        access.set_key(key);
        access
    }

    #[test]
    fn only_the_host_cid_is_admitted_over_vsock() {
        let access = with_key("vsock:any:1024", Ok(key()));
        assert_eq!(access.admit(&Peer::Vsock { cid: 2, port: 5000 }), Ok(()));
        for cid in [0, 1, 3, 4, u32::MAX] {
            let peer = Peer::Vsock { cid, port: 5000 };
            let e = access.admit(&peer).unwrap_err();
            assert!(e.to_string().contains("only the host (CID 2)"), "{e}");
        }
    }

    #[test]
    fn only_root_or_our_user_is_admitted_over_unix() {
        let access = Access::new(&"unix:/x.sock".parse().unwrap(), false);
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(access.admit(&Peer::Unix { uid: Some(0) }), Ok(()));
        assert_eq!(access.admit(&Peer::Unix { uid: Some(me) }), Ok(()));
        let e = access.admit(&Peer::Unix { uid: Some(65534) }).unwrap_err();
        assert!(e.to_string().contains("uid 65534"), "{e}");
        assert!(access.admit(&Peer::Unix { uid: None }).is_err());
    }

    #[tokio::test]
    async fn a_required_key_must_be_presented_and_match() {
        let access = with_key("vsock:any:1024", Ok(key()));
        assert!(access.authorize(Some(&key())).await.is_ok());
        assert!(access.key_received_ns().is_some());
        let other = AgentKey::from_hex(&"5b".repeat(32)).unwrap();
        let e = access.authorize(Some(&other)).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.message.contains("not this VM's"), "{e}");
        let e = access.authorize(None).await.unwrap_err();
        assert!(e.message.contains("none was presented"), "{e}");
    }

    #[tokio::test]
    async fn a_connection_waits_for_the_key_on_its_way() {
        let access = std::sync::Arc::new(Access::new(&"vsock:any:1024".parse().unwrap(), true));
        let waiting = {
            let access = access.clone();
            tokio::spawn(async move { access.authorize(Some(&key())).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nothing is authorized before the key is there");
        access.set_key(Ok(key()));
        assert!(waiting.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_vm_agent_without_a_key_serves_no_one() {
        let access = Access::new(&"vsock:any:1024".parse().unwrap(), false);
        let e = access.authorize(Some(&key())).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(e.message.contains("vminitd.notify="), "{e}");
        let failed = Err(KeyExchangeError::NoKey {
            endpoint: "vsock:2:1025".into(),
        });
        let access = with_key("unix:/x.sock", failed);
        let e = access.authorize(None).await.unwrap_err();
        assert!(e.message.contains("without handing over a key"), "{e}");
        // A socket in a namespace, with no exchange: its mode decides.
        let access = Access::new(&"unix:/x.sock".parse().unwrap(), false);
        assert!(access.authorize(None).await.is_ok());
    }
}
