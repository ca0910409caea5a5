//! IPv4 subnets in CIDR notation, parsed strictly, and the address ranges no
//! vmshim network may overlap.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// The shortest prefix a network may have (a /8 is 16 million addresses).
pub const MIN_PREFIX: u8 = 8;
/// The longest prefix a network may have: a /29 leaves five VM addresses
/// beside the network, gateway and broadcast addresses.
pub const MAX_PREFIX: u8 = 29;

/// Ranges a network may not overlap, and why.
pub const RESERVED: [(Subnet, &str); 4] = [
    (Subnet::raw([0, 0, 0, 0], 8), "\"this network\" (0.0.0.0/8)"),
    (
        Subnet::raw([10, 0, 2, 0], 24),
        "the NAT network QEMU user networking gives every VM",
    ),
    (Subnet::raw([127, 0, 0, 0], 8), "the loopback range"),
    (Subnet::raw([224, 0, 0, 0], 3), "the multicast and reserved ranges"),
];

/// Why text is not a subnet a network may have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct SubnetError {
    /// The text as given.
    pub value: String,
    /// What is wrong with it, quoting it.
    pub why: String,
}

/// An IPv4 subnet: a network address with no host bits set, and a prefix
/// length between /8 and /29.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Subnet {
    /// A subnet known to be valid (for constants).
    const fn raw(octets: [u8; 4], prefix_len: u8) -> Subnet {
        Subnet {
            network: Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]),
            prefix_len,
        }
    }

    /// The subnet `network/prefix_len`, checked as [`FromStr`] checks text.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Subnet, SubnetError> {
        let value = format!("{network}/{prefix_len}");
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix_len) {
            return Err(SubnetError {
                why: format!("{value}: the prefix length must be between /{MIN_PREFIX} and /{MAX_PREFIX}"),
                value,
            });
        }
        let masked = Ipv4Addr::from(u32::from(network) & mask(prefix_len));
        if masked != network {
            return Err(SubnetError {
                why: format!("{value} has host bits set; did you mean {masked}/{prefix_len}?"),
                value,
            });
        }
        Ok(Subnet { network, prefix_len })
    }

    /// The network address (the first address).
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length: how many leading bits name the network.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The broadcast address (the last address).
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix_len))
    }

    /// The first host address, kept free for a gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The addresses VMs may lease, lowest first: all but the network,
    /// gateway and broadcast addresses.
    pub fn vm_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.network) + 2..u32::from(self.broadcast())).map(Ipv4Addr::from)
    }

    /// Whether `ip` is one of its addresses.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// Whether the two share any address (one then contains the other).
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.overlaps_range(other.network, other.prefix_len)
    }

    /// Whether it shares any address with the range `network/prefix_len`
    /// (a route's destination; any prefix length from 0 to 32).
    pub fn overlaps_range(&self, network: Ipv4Addr, prefix_len: u8) -> bool {
        let m = mask(self.prefix_len.min(prefix_len));
        u32::from(self.network) & m == u32::from(network) & m
    }

    /// The reserved range this subnet overlaps, with why it is reserved.
    pub fn reserved_overlap(&self) -> Option<(Subnet, &'static str)> {
        RESERVED.iter().copied().find(|(r, _)| self.overlaps(r))
    }
}

/// The netmask of a prefix length (0..=32) as a number.
fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl FromStr for Subnet {
    type Err = SubnetError;

    /// Parses `A.B.C.D/N`: four decimal octets without leading zeros (010
    /// could be read as octal), a prefix length between /8 and /29, and no
    /// host bits set.
    fn from_str(value: &str) -> Result<Subnet, SubnetError> {
        let bad = |why: String| SubnetError {
            value: value.to_owned(),
            why,
        };
        let Some((addr, prefix)) = value.split_once('/') else {
            return Err(bad(format!(
                "{value:?} is not an IPv4 subnet in CIDR notation, such as 10.89.0.0/24"
            )));
        };
        let octets: Vec<&str> = addr.split('.').collect();
        let parsed: Option<Vec<u8>> = octets
            .iter()
            .map(|o| decimal(o, 3).and_then(|n| u8::try_from(n).ok()))
            .collect();
        let octets = match parsed {
            Some(o) if o.len() == 4 => [o[0], o[1], o[2], o[3]],
            _ => {
                return Err(bad(format!(
                    "{value:?}: {addr:?} is not an IPv4 address (four numbers 0-255 without leading zeros, such as 10.89.0.0)"
                )))
            }
        };
        let Some(prefix_len) = decimal(prefix, 2).and_then(|n| u8::try_from(n).ok()) else {
            return Err(bad(format!("{value:?}: the prefix length {prefix:?} is not a number")));
        };
        Subnet::new(Ipv4Addr::from(octets), prefix_len).map_err(|e| bad(e.why))
    }
}

/// A decimal number of at most `max_digits` digits, without sign or leading
/// zeros.
fn decimal(s: &str, max_digits: usize) -> Option<u32> {
    let ok = !s.is_empty()
        && s.len() <= max_digits
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Subnet {
    type Error = SubnetError;

    fn try_from(s: String) -> Result<Subnet, SubnetError> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Subnet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn why(s: &str) -> String {
        match s.parse::<Subnet>() {
            Err(SubnetError { value, why }) => {
                assert_eq!(value, s);
                why
            }
            other => panic!("{s}: expected BadSubnet, got {other:?}"),
        }
    }

    #[test]
    fn parses_strict_cidr() {
        let s = subnet("10.1.2.0/24");
        assert_eq!(s.network(), Ipv4Addr::new(10, 1, 2, 0));
        assert_eq!(s.prefix_len(), 24);
        assert_eq!(s.to_string(), "10.1.2.0/24");
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 1, 2, 255));
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 1, 2, 1));
        assert_eq!(subnet("172.16.0.0/12").broadcast(), Ipv4Addr::new(172, 31, 255, 255));
        assert_eq!(subnet("10.0.0.0/8").prefix_len(), 8);
        let small: Vec<Ipv4Addr> = subnet("192.168.7.8/29").vm_addresses().collect();
        assert_eq!(small.first(), Some(&Ipv4Addr::new(192, 168, 7, 10)));
        assert_eq!(small.last(), Some(&Ipv4Addr::new(192, 168, 7, 14)));
        assert_eq!(small.len(), 5);
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(
            why("10.1.2.5/24"),
            "10.1.2.5/24 has host bits set; did you mean 10.1.2.0/24?"
        );
        for bad in [
            "",
            "10.1.2.0",
            "10.1.2/24",
            "10.1.2.0.0/24",
            "10.1.2.256/24",
            "10.01.2.0/24",
            "10.1.2.0/024",
            "10.1.2.0/",
            "/24",
            "10.1.2.0/+24",
            " 10.1.2.0/24",
            "10.1.2.0/24 ",
            "fd00::/64",
            "10.1.2.0/24/1",
            "a.b.c.d/24",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad:?} accepted");
        }
        assert!(why("10.0.0.0/7").contains("between /8 and /29"));
        assert!(why("10.1.2.0/30").contains("between /8 and /29"));
        assert!(why("10.1.2.0/33").contains("between /8 and /29"));
        assert!(why("10.1.02.0/24").contains("leading zeros"));
    }

    #[test]
    fn overlaps_and_reserved() {
        let a = subnet("10.89.0.0/16");
        assert!(a.overlaps(&subnet("10.89.3.0/24")));
        assert!(subnet("10.89.3.0/24").overlaps(&a));
        assert!(a.overlaps(&a));
        assert!(!a.overlaps(&subnet("10.90.0.0/24")));
        assert!(!subnet("10.89.0.0/24").overlaps(&subnet("10.89.1.0/24")));
        assert!(subnet("10.89.0.0/24").overlaps(&subnet("10.89.0.248/29")));
        // Host routes: any prefix length; /0 overlaps everything.
        assert!(a.overlaps_range(Ipv4Addr::new(10, 89, 7, 9), 32));
        assert!(!a.overlaps_range(Ipv4Addr::new(10, 90, 0, 1), 32));
        assert!(a.overlaps_range(Ipv4Addr::UNSPECIFIED, 0));
        assert!(subnet("10.89.0.0/24").contains(Ipv4Addr::new(10, 89, 0, 255)));
        assert!(!subnet("10.89.0.0/24").contains(Ipv4Addr::new(10, 89, 1, 0)));

        let (range, why) = subnet("10.0.0.0/8").reserved_overlap().unwrap();
        assert_eq!(range.to_string(), "10.0.2.0/24");
        assert!(why.contains("QEMU user networking"));
        assert_eq!(subnet("10.0.2.0/29").reserved_overlap().unwrap().0, range);
        assert_eq!(
            subnet("127.5.0.0/16").reserved_overlap().unwrap().0.to_string(),
            "127.0.0.0/8"
        );
        assert!(subnet("239.1.0.0/16").reserved_overlap().is_some());
        assert!(subnet("10.0.3.0/24").reserved_overlap().is_none());
        assert!(subnet("192.168.0.0/16").reserved_overlap().is_none());
    }

    #[test]
    fn serde_as_text() {
        let s = subnet("10.89.4.0/24");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"10.89.4.0/24\"");
        assert_eq!(serde_json::from_str::<Subnet>("\"10.89.4.0/24\"").unwrap(), s);
        assert!(serde_json::from_str::<Subnet>("\"10.89.4.1/24\"").is_err());
    }
}
