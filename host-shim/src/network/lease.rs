//! Addresses for VMs. A lease is a file `leases/<ip>` naming the VM and the
//! process that holds it; it is live while that process runs. Leases are
//! handed out under the network's lock, and each file appears whole and at
//! once (`link` of a finished file, which also fails if the name exists),
//! so readers need no lock and no address is ever given twice.
//!
//! On a bridge network a lease also owns the VM's tap device, made under
//! the network's lock after the lease file and deleted before it. On a
//! switch network the lease binds the VM's port on the switch
//! ([`super::binding`]): the switch passes only frames from the leased MAC
//! and address.
//!
//! Lease files are 0600, in the network's 0700 directory.
//!
//! This module reads and writes the files and picks addresses; taking a
//! lease under the network's lock, with its switch or tap, is
//! [`super::networks`]'s.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::bridge::Tap;
use super::error::{io_err, NetworkError};
use super::process::Owner;
use super::store::{unique, NetDir};
use super::subnet::Subnet;
use crate::private::PrivateDir;

/// An address on a network, held by this process until dropped.
#[derive(Debug)]
pub struct Lease {
    /// The network the address is on.
    pub network: String,
    /// The VM's name on the network (its host name for the other VMs).
    pub name: String,
    /// The address.
    pub ip: Ipv4Addr,
    /// The network's prefix length, for the guest's interface.
    pub prefix_len: u8,
    /// Locally administered, derived from the address: unique on the
    /// network.
    pub mac: [u8; 6],
    /// Where the VM's network device plugs in.
    pub backend: PortBackend,
    /// The tap device of a VM on a bridge network.
    tap: Option<Tap>,
    file: PathBuf,
}

/// Where a VM's device on a network plugs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortBackend {
    /// The socket of the network's switch daemon (switch driver).
    Switch {
        /// Where the switch listens.
        socket: PathBuf,
    },
    /// A tap device attached to the network's bridge (bridge driver).
    Tap {
        /// The tap device's name.
        ifname: String,
    },
}

impl Lease {
    /// The MAC address as `02:56:4d:xx:xx:xx`.
    pub fn mac_string(&self) -> String {
        format_mac(self.mac)
    }

    /// The address with its prefix length, as `ip addr add` takes it.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix_len)
    }

    /// Writes the lease file of `ip` on the network whose files are `dir`
    /// for the VM `owner_name`, held by `owner`; the lease is given back
    /// when dropped. Call with the network locked, `ip` free.
    pub(super) fn write(
        dir: &NetDir,
        network: &str,
        owner_name: &str,
        ip: Ipv4Addr,
        subnet: Subnet,
        owner: Owner,
        backend: PortBackend,
    ) -> Result<Lease, NetworkError> {
        let mac = mac_for(ip);
        let record = Record {
            name: owner_name.to_owned(),
            pid: owner.pid,
            started: owner.started,
            mac: format_mac(mac),
        };
        let file = dir.leases().join(ip.to_string());
        write_lease(dir, &file, &record).map_err(|e| match e {
            // Only a writer that ignores the lock gets here.
            LeaseWrite::Exists => NetworkError::AddressTaken {
                network: network.to_owned(),
                ip,
                by: "another process".to_owned(),
            },
            LeaseWrite::Io(e) => e,
        })?;
        Ok(Lease {
            network: network.to_owned(),
            name: owner_name.to_owned(),
            ip,
            prefix_len: subnet.prefix_len(),
            mac,
            backend,
            tap: None,
            file,
        })
    }

    /// Gives the lease the VM's tap device, deleted with it.
    pub(super) fn attach_tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The tap goes first: once the file is gone, the address (and the
        // tap's name with it) may be leased again.
        drop(self.tap.take());
        let _ = fs::remove_file(&self.file);
    }
}

/// What a lease file holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Record {
    /// The VM's name on the network.
    pub name: String,
    /// The process that holds the lease (the vmshim or instance daemon
    /// that runs the VM).
    pub pid: u32,
    /// The owner's start time, which tells it from a later process with
    /// the same pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    /// The VM's MAC, `02:56:4d:xx:xx:xx`.
    pub mac: String,
}

impl Record {
    /// The process that holds the lease.
    pub(super) fn owner(&self) -> Owner {
        Owner {
            pid: self.pid,
            started: self.started,
        }
    }
}

/// The MAC address of `ip`: 02:56:4d ("VM", locally administered) and the
/// low 24 bits of the address, which differ between any two addresses of a
/// /8 or smaller network.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x56, 0x4d, o[1], o[2], o[3]]
}

/// `02:56:4d:xx:xx:xx`.
pub fn format_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// `02:56:4d:xx:xx:xx` (either case) as bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The address to lease on network `network` (of `subnet`): `requested`,
/// if it is a VM address of the subnet that no lease in `live` holds, else
/// the lowest free one from .2 up (.1 is the gateway: the host's address
/// on a bridge).
pub(super) fn choose_address<T>(
    network: &str,
    subnet: Subnet,
    live: &BTreeMap<Ipv4Addr, T>,
    requested: Option<Ipv4Addr>,
    holder: impl Fn(&T) -> String,
) -> Result<Ipv4Addr, NetworkError> {
    let Some(ip) = requested else {
        return subnet
            .vm_addresses()
            .find(|ip| !live.contains_key(ip))
            .ok_or_else(|| NetworkError::Exhausted {
                name: network.to_owned(),
                subnet,
            });
    };
    if !subnet.contains(ip) {
        return Err(NetworkError::AddressOutside {
            network: network.to_owned(),
            ip,
            subnet,
        });
    }
    let role = [
        (subnet.network(), "network"),
        (subnet.gateway(), "gateway"),
        (subnet.broadcast(), "broadcast"),
    ]
    .into_iter()
    .find_map(|(a, role)| (a == ip).then_some(role));
    if let Some(role) = role {
        return Err(NetworkError::AddressReserved {
            network: network.to_owned(),
            ip,
            subnet,
            role,
        });
    }
    if let Some(r) = live.get(&ip) {
        return Err(NetworkError::AddressTaken {
            network: network.to_owned(),
            ip,
            by: holder(r),
        });
    }
    Ok(ip)
}

/// The live leases of a network, by address. Takes no lock.
pub(super) fn live_leases(dir: &NetDir) -> Result<BTreeMap<Ipv4Addr, Record>, NetworkError> {
    Ok(read_leases(dir)?
        .into_iter()
        .filter_map(|(ip, r)| r.filter(|r| r.owner().alive()).map(|r| (ip, r)))
        .collect())
}

/// The live leases of a network, after deleting the stale ones (and the
/// half-written files of dead writers). Call with the network locked.
pub(super) fn sweep_leases(dir: &NetDir) -> Result<BTreeMap<Ipv4Addr, Record>, NetworkError> {
    let mut live = BTreeMap::new();
    for (ip, record) in read_leases(dir)? {
        match record {
            Some(r) if r.owner().alive() => {
                live.insert(ip, r);
            }
            _ => {
                let path = dir.leases().join(ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove the stale lease", path)(e)),
                }
            }
        }
    }
    if let Ok(entries) = fs::read_dir(dir.leases()) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix(".tmp-"))
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                if !(Owner { pid, started: None }).alive() {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
    Ok(live)
}

/// Every lease file of a network; `None` for one that cannot be read.
fn read_leases(dir: &NetDir) -> Result<Vec<(Ipv4Addr, Option<Record>)>, NetworkError> {
    read_lease_dir(&dir.leases())
}

/// Every lease file in directory `leases`; `None` for one that cannot be
/// read.
pub(super) fn read_lease_dir(leases: &Path) -> Result<Vec<(Ipv4Addr, Option<Record>)>, NetworkError> {
    let entries = fs::read_dir(leases).map_err(io_err("read", leases))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read", leases))?;
        let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
            continue;
        };
        let record = match fs::read(entry.path()) {
            Ok(bytes) => serde_json::from_slice::<Record>(&bytes).ok(),
            // Released while we looked.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => None,
        };
        out.push((ip, record));
    }
    out.sort_by_key(|(ip, _)| *ip);
    Ok(out)
}

/// Why a lease file was not written.
enum LeaseWrite {
    /// A file of that name is there.
    Exists,
    /// Anything else.
    Io(NetworkError),
}

/// Writes `record` beside `file` (0600, never through a link), then links
/// it into place: the lease file appears whole, and only if no other has
/// that name.
fn write_lease(dir: &NetDir, file: &PathBuf, record: &Record) -> Result<(), LeaseWrite> {
    let name = format!(".tmp-{}-{}", std::process::id(), unique());
    let tmp = dir.leases().join(&name);
    let json = serde_json::to_vec(record).expect("a lease record serializes");
    PrivateDir::open(&dir.leases())
        .and_then(|leases| leases.create_file(&name))
        .map_err(|e| LeaseWrite::Io(e.into()))?
        .write_all(&json)
        .map_err(|e| LeaseWrite::Io(io_err("write", &tmp)(e)))?;
    let linked = fs::hard_link(&tmp, file);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(LeaseWrite::Exists),
        Err(e) => Err(LeaseWrite::Io(io_err("create", file)(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::store::{Driver, Network, Store};
    use crate::test_dir::TestDir;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn macs_are_locally_administered_unicast() {
        let mac = mac_for(ip("10.1.2.3"));
        assert_eq!(mac, [0x02, 0x56, 0x4d, 1, 2, 3]);
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_eq!(format_mac(mac), "02:56:4d:01:02:03");
        assert_eq!(parse_mac("02:56:4D:01:02:03"), Some(mac));
    }

    #[test]
    fn addresses_are_chosen_lowest_free_or_as_asked() {
        let subnet: Subnet = "10.60.0.0/29".parse().unwrap();
        let live: BTreeMap<Ipv4Addr, &str> = [(ip("10.60.0.2"), "a"), (ip("10.60.0.4"), "c")].into();
        let choose = |requested| choose_address("n", subnet, &live, requested, |r| r.to_string());
        assert_eq!(choose(None).unwrap(), ip("10.60.0.3"));
        assert_eq!(choose(Some(ip("10.60.0.6"))).unwrap(), ip("10.60.0.6"));
        let err = choose(Some(ip("10.60.0.4"))).unwrap_err();
        assert_eq!(err.to_string(), "10.60.0.4 on network \"n\" is already leased by \"c\"");
        let err = choose(Some(ip("10.60.0.8"))).unwrap_err();
        assert_eq!(err.to_string(), "10.60.0.8 is outside network \"n\" (10.60.0.0/29)");
        for (addr, role) in [
            ("10.60.0.0", "network"),
            ("10.60.0.1", "gateway"),
            ("10.60.0.7", "broadcast"),
        ] {
            let err = choose(Some(ip(addr))).unwrap_err();
            assert!(
                matches!(&err, NetworkError::AddressReserved { role: r, .. } if *r == role),
                "{err:?}"
            );
        }
        let full: BTreeMap<Ipv4Addr, &str> = subnet.vm_addresses().map(|a| (a, "x")).collect();
        let err = choose_address("n", subnet, &full, None, |r| r.to_string()).unwrap_err();
        assert_eq!(err.to_string(), "network \"n\" (10.60.0.0/29) has no free address left");
    }

    #[test]
    fn a_lease_file_lives_as_long_as_its_lease() {
        let t = TestDir::new("lease-file");
        let store = Store::at(t.path());
        store.ensure_root().unwrap();
        let network = Network {
            name: "n".into(),
            subnet: "10.50.0.0/24".parse().unwrap(),
            driver: Driver::Switch,
            bridge: None,
        };
        store.stage(&network).unwrap().commit().unwrap();
        let dir = store.dir("n");
        let backend = PortBackend::Switch { socket: dir.socket() };
        let a = Lease::write(
            &dir,
            "n",
            "a",
            ip("10.50.0.2"),
            network.subnet,
            Owner::current(),
            backend.clone(),
        )
        .unwrap();
        assert_eq!(
            (a.cidr(), a.mac_string()),
            ("10.50.0.2/24".to_owned(), "02:56:4d:32:00:02".to_owned())
        );
        let file: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.leases().join("10.50.0.2")).unwrap()).unwrap();
        assert_eq!(file["name"], "a");
        assert_eq!(file["pid"], std::process::id());
        assert_eq!(file["mac"], "02:56:4d:32:00:02");
        let live = live_leases(&dir).unwrap();
        assert_eq!(live.keys().copied().collect::<Vec<_>>(), [ip("10.50.0.2")]);
        // A second file for the address is refused, and the first stays.
        let err = Lease::write(
            &dir,
            "n",
            "b",
            ip("10.50.0.2"),
            network.subnet,
            Owner::current(),
            backend,
        )
        .unwrap_err();
        assert!(
            matches!(&err, NetworkError::AddressTaken { by, .. } if by == "another process"),
            "{err:?}"
        );
        assert_eq!(live_leases(&dir).unwrap().len(), 1);
        drop(a);
        assert!(!dir.leases().join("10.50.0.2").exists());
        assert!(live_leases(&dir).unwrap().is_empty());
    }
}
