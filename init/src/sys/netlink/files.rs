//! `/etc/hosts` and `/etc/resolv.conf` contents, rendered from settings.
//!
//! Pure functions: the caller writes the files. Both formats are one record
//! per line with blank-separated words, so a name that is not a single word
//! of visible ASCII (blanks, a newline, `#`, which starts a comment) could
//! only corrupt the file or add lines the host never sent: it is left out.

use std::net::IpAddr;

/// The hosts file: `localhost` for 127.0.0.1 and ::1, the hostname on
/// 127.0.1.1 (the Debian convention) unless an entry already maps it, then
/// the entries, each an address and its names. An entry whose names are all
/// left out is left out.
pub fn hosts_file(hostname: &str, entries: &[(IpAddr, Vec<String>)]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let mapped = entries.iter().any(|(_, names)| names.iter().any(|n| n == hostname));
    if is_word(hostname) && hostname != "localhost" && !mapped {
        out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for (address, names) in entries {
        let names = words(names);
        if !names.is_empty() {
            out.push_str(&format!("{address}\t{}\n", names.join(" ")));
        }
    }
    out
}

/// The resolver configuration: a `nameserver` line each, then one `search`
/// and one `options` line where there are any. (The C libraries read the
/// first three name servers.)
pub fn resolv_conf(nameservers: &[IpAddr], search: &[String], options: &[String]) -> String {
    let mut out = String::new();
    for nameserver in nameservers {
        out.push_str(&format!("nameserver {nameserver}\n"));
    }
    for (keyword, values) in [("search", search), ("options", options)] {
        let values = words(values);
        if !values.is_empty() {
            out.push_str(&format!("{keyword} {}\n", values.join(" ")));
        }
    }
    out
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

fn words(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).filter(|v| is_word(v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hosts_has_localhost_then_the_hostname_then_the_entries() {
        let entries = [
            ("10.99.0.1".parse().unwrap(), names(&["gateway", "host.internal"])),
            ("fd00::1".parse().unwrap(), names(&["gateway6"])),
        ];
        assert_eq!(
            hosts_file("vm1", &entries),
            "127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             127.0.1.1\tvm1\n\
             10.99.0.1\tgateway host.internal\n\
             fd00::1\tgateway6\n"
        );
    }

    #[test]
    fn a_hostname_an_entry_maps_gets_no_loopback_line() {
        let entries = [("10.99.0.2".parse().unwrap(), names(&["vm1", "vm1.local"]))];
        assert_eq!(
            hosts_file("vm1", &entries),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.99.0.2\tvm1 vm1.local\n"
        );
        let plain = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
        assert_eq!(hosts_file("", &[]), plain);
        assert_eq!(hosts_file("localhost", &[]), plain);
    }

    #[test]
    fn names_that_would_break_a_line_are_left_out() {
        let entries = [
            (
                "10.0.0.1".parse().unwrap(),
                names(&["ok", "two words", "evil\n1.2.3.4 bank", "#x", ""]),
            ),
            ("10.0.0.2".parse().unwrap(), names(&["bad name"])),
        ];
        assert_eq!(
            hosts_file("a b", &entries),
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.0.1\tok\n"
        );
    }

    #[test]
    fn resolv_conf_lists_servers_then_search_then_options() {
        let servers = ["10.0.2.3".parse().unwrap(), "fd00::3".parse().unwrap()];
        assert_eq!(
            resolv_conf(
                &servers,
                &names(&["example.com", "corp"]),
                &names(&["ndots:1", "edns0"])
            ),
            "nameserver 10.0.2.3\nnameserver fd00::3\nsearch example.com corp\noptions ndots:1 edns0\n"
        );
        assert_eq!(resolv_conf(&servers[..1], &[], &[]), "nameserver 10.0.2.3\n");
        assert_eq!(resolv_conf(&[], &[], &[]), "");
        assert_eq!(
            resolv_conf(&[], &names(&["a.b", "x\nnameserver 6.6.6.6"]), &names(&[" "])),
            "search a.b\n"
        );
    }
}
