//! The one URL syntax for reaching an agent, parsed in one place.
//!
//! * `unix:PATH` — a Unix stream socket (the agent in a namespace on the host).
//! * `vsock:CID:PORT` — AF_VSOCK. CID may be a number or `any`, `local`, `host`.
//! * `hvsock:PATH:PORT` — hybrid vsock: a Unix socket of a vsock backend
//!   (vhost-device-vsock, Firecracker, Cloud Hypervisor) that forwards to the
//!   guest's PORT after a `CONNECT PORT\n` / `OK N\n` handshake.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where an agent listens, or where to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `unix:PATH`: a Unix stream socket at this path (the agent as PID 1
    /// of a namespace on the host listens on one).
    Unix(PathBuf),
    /// `vsock:CID:PORT`: an `AF_VSOCK` address.
    Vsock {
        /// The context id: the guest's to dial an agent, [`CID_ANY`] to
        /// listen, [`CID_HOST`] for the host as a guest sees it.
        cid: u32,
        /// The vsock port ([`crate::AGENT_PORT`] for the agent).
        port: u32,
    },
    /// `hvsock:PATH:PORT`: the Unix socket of a hybrid vsock backend, which
    /// forwards the connection to the guest's `port` after a `CONNECT`
    /// handshake. Only dialled, never listened on.
    Hvsock {
        /// The backend's Unix socket on the host.
        path: PathBuf,
        /// The guest's vsock port the backend connects to.
        port: u32,
    },
}

/// Why a string is not an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// No `scheme:` before the address (a bare path, say).
    #[error("\"{url}\" has no scheme: expected unix:PATH, vsock:CID:PORT or hvsock:PATH:PORT")]
    MissingScheme {
        /// The string as given.
        url: String,
    },
    /// A scheme other than `unix`, `vsock` and `hvsock`.
    #[error("unknown scheme \"{scheme}\" in \"{url}\": expected unix, vsock or hvsock")]
    UnknownScheme {
        /// What stood before the first `:`.
        scheme: String,
        /// The string as given.
        url: String,
    },
    /// `unix:` or `hvsock:` with nothing where the socket's path goes.
    #[error("\"{url}\" has an empty path")]
    EmptyPath {
        /// The string as given.
        url: String,
    },
    /// `vsock:` or `hvsock:` without a `:PORT`.
    #[error("\"{url}\" has no port: expected {expected}")]
    MissingPort {
        /// The string as given.
        url: String,
        /// The shape the scheme wants, e.g. `vsock:CID:PORT`.
        expected: &'static str,
    },
    /// A port that is not a number from 0 to 2^32 - 1.
    #[error("bad port \"{port}\" in \"{url}\": expected a number from 0 to 4294967295")]
    BadPort {
        /// The port as written.
        port: String,
        /// The string as given.
        url: String,
    },
    /// A CID that is neither a number nor `any`, `local` or `host`.
    #[error("bad CID \"{cid}\" in \"{url}\": expected a number, any, local or host")]
    BadCid {
        /// The CID as written.
        cid: String,
        /// The string as given.
        url: String,
    },
}

/// `VMADDR_CID_ANY`: bind on every CID.
pub const CID_ANY: u32 = u32::MAX;
/// `VMADDR_CID_LOCAL`: loopback within one kernel.
pub const CID_LOCAL: u32 = 1;
/// `VMADDR_CID_HOST`: the host, as seen from a guest.
pub const CID_HOST: u32 = 2;

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(EndpointError::MissingScheme { url: url.to_owned() });
        };
        match scheme {
            "unix" => {
                if rest.is_empty() {
                    return Err(EndpointError::EmptyPath { url: url.to_owned() });
                }
                Ok(Endpoint::Unix(PathBuf::from(rest)))
            }
            "vsock" => {
                let Some((cid, port)) = rest.split_once(':') else {
                    return Err(EndpointError::MissingPort {
                        url: url.to_owned(),
                        expected: "vsock:CID:PORT",
                    });
                };
                Ok(Endpoint::Vsock {
                    cid: parse_cid(cid, url)?,
                    port: parse_port(port, url)?,
                })
            }
            "hvsock" => {
                // The path may itself contain ':'; the port is after the last one.
                let Some((path, port)) = rest.rsplit_once(':') else {
                    return Err(EndpointError::MissingPort {
                        url: url.to_owned(),
                        expected: "hvsock:PATH:PORT",
                    });
                };
                if path.is_empty() {
                    return Err(EndpointError::EmptyPath { url: url.to_owned() });
                }
                Ok(Endpoint::Hvsock {
                    path: PathBuf::from(path),
                    port: parse_port(port, url)?,
                })
            }
            _ => Err(EndpointError::UnknownScheme {
                scheme: scheme.to_owned(),
                url: url.to_owned(),
            }),
        }
    }
}

fn parse_port(port: &str, url: &str) -> Result<u32, EndpointError> {
    port.parse().map_err(|_| EndpointError::BadPort {
        port: port.to_owned(),
        url: url.to_owned(),
    })
}

fn parse_cid(cid: &str, url: &str) -> Result<u32, EndpointError> {
    match cid {
        "any" => Ok(CID_ANY),
        "local" => Ok(CID_LOCAL),
        "host" => Ok(CID_HOST),
        _ => cid.parse().map_err(|_| EndpointError::BadCid {
            cid: cid.to_owned(),
            url: url.to_owned(),
        }),
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Endpoint::Hvsock { path, port } => write!(f, "hvsock:{}:{port}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        s.parse()
    }

    #[test]
    fn good_urls() {
        assert_eq!(parse("unix:/run/a.sock").unwrap(), Endpoint::Unix("/run/a.sock".into()));
        assert_eq!(parse("vsock:3:1024").unwrap(), Endpoint::Vsock { cid: 3, port: 1024 });
        assert_eq!(
            parse("vsock:any:1024").unwrap(),
            Endpoint::Vsock {
                cid: CID_ANY,
                port: 1024
            }
        );
        assert_eq!(
            parse("hvsock:/tmp/a:b.sock:1024").unwrap(),
            Endpoint::Hvsock {
                path: "/tmp/a:b.sock".into(),
                port: 1024
            }
        );
        for s in ["unix:/x", "vsock:3:1024", "hvsock:/v.sock:1024"] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(matches!(parse("/tmp/x"), Err(EndpointError::MissingScheme { .. })));
        assert!(matches!(
            parse("tcp:1.2.3.4:5"),
            Err(EndpointError::UnknownScheme { .. })
        ));
        assert!(matches!(parse("unix:"), Err(EndpointError::EmptyPath { .. })));
        assert!(matches!(parse("vsock:3"), Err(EndpointError::MissingPort { .. })));
        assert!(matches!(parse("vsock:x:1"), Err(EndpointError::BadCid { .. })));
        assert!(matches!(parse("vsock:3:-1"), Err(EndpointError::BadPort { .. })));
        assert!(matches!(parse("hvsock::1024"), Err(EndpointError::EmptyPath { .. })));
        assert!(matches!(
            parse("hvsock:/v.sock"),
            Err(EndpointError::MissingPort { .. })
        ));
        assert!(matches!(parse("hvsock:/v.sock:x"), Err(EndpointError::BadPort { .. })));
        let msg = parse("vsock:3:99999999999").unwrap_err().to_string();
        assert!(msg.contains("99999999999"), "{msg}");
    }
}
