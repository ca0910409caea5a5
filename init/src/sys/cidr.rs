//! `ADDRESS/PREFIX`, as the kernel command line and the protocol write an
//! interface's address.

use std::net::IpAddr;

/// `ADDRESS/PREFIX`, the prefix at most 32 for IPv4 and 128 for IPv6.
pub fn parse_cidr(value: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = value.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((address, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.2.15/24"), Some(("10.0.2.15".parse().unwrap(), 24)));
        assert_eq!(parse_cidr("fd00::2/64"), Some(("fd00::2".parse().unwrap(), 64)));
        assert_eq!(parse_cidr("10.0.2.15/33"), None);
        assert_eq!(parse_cidr("10.0.2.15"), None);
        assert_eq!(parse_cidr("x/24"), None);
    }
}
