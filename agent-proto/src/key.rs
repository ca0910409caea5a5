//! The agent key: a per-VM secret that proves a connection comes from the
//! VM's owner.
//!
//! With the kernel's vhost-vsock, every local user of the host can connect to
//! any guest's vsock ports, and the transport says nothing about who they
//! are. So the host that boots a VM draws 32 random bytes and hands them to
//! the agent over the readiness connection (the one the agent itself opens to
//! the host at boot, see [`crate::READY_LINE`]): the agent writes
//! `READY\n`, the host writes [`KEY_LINE_PREFIX`] + 64 hex digits + `\n`
//! (the two cross: neither waits for the other's line).
//! The key never appears on a command line or in a file other users can
//! read. From then on the agent asks every connection for it, in the first
//! frame ([`crate::Open`]), before it does anything else.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many random bytes a key has.
pub const KEY_LEN: usize = 32;

/// What the host's answer to the readiness line starts with.
pub const KEY_LINE_PREFIX: &[u8] = b"KEY ";

/// The length of the host's whole answer: prefix, hex digits, newline.
pub const KEY_LINE_LEN: usize = KEY_LINE_PREFIX.len() + 2 * KEY_LEN + 1;

/// A per-VM secret. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey([u8; KEY_LEN]);

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// `getrandom(2)` failed: no key is made rather than a weak one.
    #[error("cannot draw random bytes for the agent key: {0}")]
    Random(#[source] std::io::Error),
    /// The text is not 64 characters long (surrounding whitespace aside).
    #[error("an agent key is {} hex digits; got {got} characters", 2 * KEY_LEN)]
    Length {
        /// How many characters it has.
        got: usize,
    },
    /// A character that is not a hex digit.
    #[error("an agent key is hex digits; found {found:?}")]
    NotHex {
        /// The first such character.
        found: char,
    },
    /// The host's answer to the readiness line is not `KEY <hex>\n`.
    #[error("expected the line \"KEY <{} hex digits>\", got {got:?}", 2 * KEY_LEN)]
    BadLine {
        /// The start of what arrived (80 bytes at most), for the message.
        got: String,
    },
}

impl AgentKey {
    /// A new key from the kernel's random source. There is no fallback: a
    /// key that could be guessed protects nothing.
    pub fn generate() -> Result<AgentKey, KeyError> {
        let mut bytes = [0u8; KEY_LEN];
        let mut filled = 0;
        while filled < KEY_LEN {
            let rest = &mut bytes[filled..];
            // SAFETY: getrandom writes at most rest.len() bytes into rest.
            let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(KeyError::Random(e));
            }
            filled += n as usize;
        }
        Ok(AgentKey(bytes))
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads 64 hex digits (surrounding whitespace is ignored, so a key file
    /// may end with a newline).
    pub fn from_hex(text: &str) -> Result<AgentKey, KeyError> {
        let text = text.trim();
        if text.len() != 2 * KEY_LEN {
            return Err(KeyError::Length {
                got: text.chars().count(),
            });
        }
        let mut bytes = [0u8; KEY_LEN];
        let digits = text.as_bytes();
        for (i, byte) in bytes.iter_mut().enumerate() {
            let hi = hex_value(digits[2 * i])?;
            let lo = hex_value(digits[2 * i + 1])?;
            *byte = hi << 4 | lo;
        }
        Ok(AgentKey(bytes))
    }

    /// The host's answer to the readiness line: `KEY <hex>\n`.
    pub fn line(&self) -> Vec<u8> {
        let mut line = KEY_LINE_PREFIX.to_vec();
        line.extend_from_slice(self.to_hex().as_bytes());
        line.push(b'\n');
        line
    }

    /// Reads the host's answer to the readiness line.
    pub fn from_line(line: &[u8]) -> Result<AgentKey, KeyError> {
        let bad = || KeyError::BadLine {
            got: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
        };
        let rest = line.strip_prefix(KEY_LINE_PREFIX).ok_or_else(bad)?;
        let rest = rest.strip_suffix(b"\n").ok_or_else(bad)?;
        let text = std::str::from_utf8(rest).map_err(|_| bad())?;
        AgentKey::from_hex(text)
    }

    /// Whether `presented` is this key, in time that does not depend on
    /// where the two differ.
    pub fn matches(&self, presented: &AgentKey) -> bool {
        let diff = self
            .0
            .iter()
            .zip(presented.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // The fold above has no early exit; black_box keeps the compiler
        // from adding one.
        std::hint::black_box(diff) == 0
    }
}

fn hex_value(digit: u8) -> Result<u8, KeyError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        _ => Err(KeyError::NotHex { found: digit as char }),
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentKey(..)")
    }
}

impl Serialize for AgentKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for AgentKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        AgentKey::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_round_trip_as_hex_lines_and_json() {
        let (a, b) = (AgentKey::generate().unwrap(), AgentKey::generate().unwrap());
        assert_ne!(a, b);
        assert!(a.matches(&a.clone()) && !a.matches(&b));
        assert_eq!(AgentKey::from_hex(&a.to_hex()).unwrap(), a);
        assert_eq!(AgentKey::from_hex(&a.to_hex().to_uppercase()).unwrap(), a);
        assert_eq!(AgentKey::from_line(&a.line()).unwrap(), a);
        assert_eq!(a.line().len(), KEY_LINE_LEN);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<AgentKey>(&json).unwrap(), a);
        assert_eq!(format!("{a:?}"), "AgentKey(..)");
    }

    #[test]
    fn bad_keys_say_what_is_wrong() {
        let e = AgentKey::from_hex("abc").unwrap_err();
        assert!(e.to_string().contains("64 hex digits; got 3"), "{e}");
        let e = AgentKey::from_hex(&"g".repeat(64)).unwrap_err();
        assert!(e.to_string().contains("'g'"), "{e}");
        let e = AgentKey::from_line(b"READY\n").unwrap_err();
        assert!(e.to_string().contains("READY"), "{e}");
        let e = AgentKey::from_line(&[b'K'; 300]).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
        assert!(serde_json::from_str::<AgentKey>("\"00\"").is_err());
    }
}
