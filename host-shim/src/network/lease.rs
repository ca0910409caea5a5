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

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::bridge::{tap_name, Tap};
use super::process::Owner;
use super::store::{unique, NetDir};
use super::{check_name, io_err, NetworkError, Networks};
use crate::private::PrivateDir;

/// An address on a network, held by this process until dropped.
#[derive(Debug)]
pub struct Lease {
    pub network: String,
    /// The VM's name on the network (its host name for the other VMs).
    pub name: String,
    pub ip: Ipv4Addr,
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
    Switch { socket: PathBuf },
    /// A tap device attached to the network's bridge (bridge driver).
    Tap { ifname: String },
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
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The tap goes first: once the file is gone, the address (and the
        // tap's name with it) may be leased again.
        drop(self.tap.take());
        let _ = fs::remove_file(&self.file);
    }
}

/// A VM on a network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    pub name: String,
    pub ip: Ipv4Addr,
}

/// What a lease file holds.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Record {
    pub name: String,
    pub pid: u32,
    /// The owner's start time, which tells it from a later process with
    /// the same pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    pub mac: String,
}

impl Record {
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

impl Networks {
    /// Leases an address on `network` for the VM `owner_name`, held by
    /// this process: `requested`, or the lowest free one from .2 up (.1 is
    /// the gateway: the host's address on a bridge). The switch is running
    /// when this returns; on a bridge network, the VM's tap is made and on
    /// the bridge (which is made again if it is gone).
    pub fn lease(&self, network: &str, owner_name: &str, requested: Option<Ipv4Addr>) -> Result<Lease, NetworkError> {
        self.lease_for(network, owner_name, requested, Owner::current())
    }

    pub(super) fn lease_for(
        &self,
        network: &str,
        owner_name: &str,
        requested: Option<Ipv4Addr>,
        owner: Owner,
    ) -> Result<Lease, NetworkError> {
        check_name("VM", owner_name)?;
        let (_lock, config) = self.lock_network(network)?;
        if config.bridge.is_some() {
            self.check_may_admin(|| format!("joining bridge network {network:?} (through a tap device)"))?;
        }
        let dir = self.dir(network);
        let live = self.sweep_leases(&dir)?;
        if let Some((ip, _)) = live.iter().find(|(_, r)| r.name.eq_ignore_ascii_case(owner_name)) {
            return Err(NetworkError::NameTaken {
                network: network.to_owned(),
                name: owner_name.to_owned(),
                ip: *ip,
            });
        }
        let subnet = config.subnet;
        let ip = match requested {
            Some(ip) => {
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
                        by: r.name.clone(),
                    });
                }
                ip
            }
            None => subnet
                .vm_addresses()
                .find(|ip| !live.contains_key(ip))
                .ok_or_else(|| NetworkError::Exhausted {
                    name: network.to_owned(),
                    subnet,
                })?,
        };
        let mac = mac_for(ip);
        let record = Record {
            name: owner_name.to_owned(),
            pid: owner.pid,
            started: owner.started,
            mac: format_mac(mac),
        };
        let backend = match config.bridge {
            Some(_) => PortBackend::Tap { ifname: tap_name(ip) },
            None => PortBackend::Switch { socket: dir.socket() },
        };
        let mut lease = Lease {
            network: network.to_owned(),
            name: owner_name.to_owned(),
            ip,
            prefix_len: subnet.prefix_len(),
            mac,
            backend,
            tap: None,
            file: dir.leases().join(ip.to_string()),
        };
        write_lease(&dir, &lease.file, &record).map_err(|e| match e {
            // Only a writer that ignores the lock gets here.
            LeaseWrite::Exists => NetworkError::AddressTaken {
                network: network.to_owned(),
                ip,
                by: "another process".to_owned(),
            },
            LeaseWrite::Io(e) => e,
        })?;
        // Dropping the lease on error gives the address back.
        match &config.bridge {
            None => {
                self.ensure_switch_locked(network)?;
            }
            Some(_) => {
                let bridge = self.ensure_bridge_locked(&config)?;
                self.sweep_taps(&config, &live)?;
                lease.tap = Some(self.plug_tap(bridge, ip)?);
            }
        }
        Ok(lease)
    }

    /// The VMs on `network` now, by address. Takes no lock.
    pub fn members(&self, network: &str) -> Result<Vec<Member>, NetworkError> {
        self.get(network)?;
        let live = self.live_leases(&self.dir(network))?;
        Ok(live.into_iter().map(|(ip, r)| Member { name: r.name, ip }).collect())
    }

    /// The live leases of a network, by address.
    pub(super) fn live_leases(&self, dir: &NetDir) -> Result<BTreeMap<Ipv4Addr, Record>, NetworkError> {
        Ok(read_leases(dir)?
            .into_iter()
            .filter_map(|(ip, r)| r.filter(|r| r.owner().alive()).map(|r| (ip, r)))
            .collect())
    }

    /// The live leases of a network, after deleting the stale ones (and the
    /// half-written files of dead writers). Call with the network locked.
    pub(super) fn sweep_leases(&self, dir: &NetDir) -> Result<BTreeMap<Ipv4Addr, Record>, NetworkError> {
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

enum LeaseWrite {
    Exists,
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
    use crate::network::process::dead_pid;
    use crate::network::store::tests::networks;
    use crate::network::Driver;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_free_and_requested() {
        let (dir, networks) = networks("lease");
        networks.create("n", Some("10.50.0.0/24"), Driver::Switch).unwrap();
        let a = networks.lease("n", "a", None).unwrap();
        assert_eq!(a.ip, ip("10.50.0.2"));
        assert_eq!(a.prefix_len, 24);
        assert_eq!(a.cidr(), "10.50.0.2/24");
        assert_eq!(a.mac_string(), "02:56:4d:32:00:02");
        assert_eq!(
            a.backend,
            PortBackend::Switch {
                socket: dir.path().join("networks/n/switch.sock")
            }
        );
        let c = networks.lease("n", "c", Some(ip("10.50.0.4"))).unwrap();
        assert_eq!(c.ip, ip("10.50.0.4"));
        let b = networks.lease("n", "b", None).unwrap();
        assert_eq!(b.ip, ip("10.50.0.3"));
        let d = networks.lease("n", "d", None).unwrap();
        assert_eq!(d.ip, ip("10.50.0.5"));

        let file: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("networks/n/leases/10.50.0.2")).unwrap()).unwrap();
        assert_eq!(file["name"], "a");
        assert_eq!(file["pid"], std::process::id());
        assert_eq!(file["mac"], "02:56:4d:32:00:02");

        let names = |m: Vec<Member>| m.into_iter().map(|m| (m.name, m.ip.to_string())).collect::<Vec<_>>();
        assert_eq!(
            names(networks.members("n").unwrap()),
            [
                ("a", "10.50.0.2"),
                ("b", "10.50.0.3"),
                ("c", "10.50.0.4"),
                ("d", "10.50.0.5")
            ]
            .map(|(n, i)| (n.to_owned(), i.to_owned()))
        );
        drop(b);
        assert!(!dir.path().join("networks/n/leases/10.50.0.3").exists());
        assert_eq!(networks.lease("n", "e", None).unwrap().ip, ip("10.50.0.3"));
        assert_eq!(networks.list().unwrap()[0].members, 3, "e's lease was dropped at once");
    }

    #[test]
    fn refusals() {
        let (_dir, networks) = networks("lease-refusals");
        networks.create("n", Some("10.60.0.0/29"), Driver::Switch).unwrap();
        let a = networks.lease("n", "a", Some(ip("10.60.0.6"))).unwrap();
        let err = networks.lease("n", "b", Some(ip("10.60.0.6"))).unwrap_err();
        assert!(
            matches!(&err, NetworkError::AddressTaken { ip: taken, by, .. } if *taken == a.ip && by == "a"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "10.60.0.6 on network \"n\" is already leased by \"a\"");
        let err = networks.lease("n", "b", Some(ip("10.60.0.8"))).unwrap_err();
        assert_eq!(err.to_string(), "10.60.0.8 is outside network \"n\" (10.60.0.0/29)");
        for (addr, role) in [
            ("10.60.0.0", "network"),
            ("10.60.0.1", "gateway"),
            ("10.60.0.7", "broadcast"),
        ] {
            let err = networks.lease("n", "b", Some(ip(addr))).unwrap_err();
            assert!(
                matches!(&err, NetworkError::AddressReserved { role: r, .. } if *r == role),
                "{err:?}"
            );
        }
        let err = networks.lease("n", "A", None).unwrap_err();
        assert!(
            matches!(&err, NetworkError::NameTaken { ip: at, .. } if *at == a.ip),
            "{err:?}"
        );
        assert!(matches!(
            networks.lease("n", "bad name", None),
            Err(NetworkError::BadName { what: "VM", .. })
        ));
        assert!(matches!(
            networks.lease("nope", "b", None),
            Err(NetworkError::UnknownNetwork { .. })
        ));
        // A /29 holds five VMs.
        let more: Vec<Lease> = (0..4)
            .map(|i| networks.lease("n", &format!("m{i}"), None).unwrap())
            .collect();
        assert_eq!(more.last().unwrap().ip, ip("10.60.0.5"));
        let err = networks.lease("n", "full", None).unwrap_err();
        assert_eq!(err.to_string(), "network \"n\" (10.60.0.0/29) has no free address left");
    }

    #[test]
    fn stale_leases_are_reclaimed() {
        let (dir, networks) = networks("lease-stale");
        networks.create("n", Some("10.70.0.0/24"), Driver::Switch).unwrap();
        let gone = Owner {
            pid: dead_pid(),
            started: None,
        };
        let stale = networks.lease_for("n", "ghost", None, gone).unwrap();
        assert_eq!(stale.ip, ip("10.70.0.2"));
        let file = stale.file.clone();
        std::mem::forget(stale); // as a vmshim killed with SIGKILL leaves it
        assert!(file.exists());
        assert_eq!(
            networks.members("n").unwrap(),
            vec![],
            "a dead owner's lease is not live"
        );
        assert_eq!(networks.list().unwrap()[0].members, 0);
        // The address and the name are free again, and the file is swept.
        let again = networks.lease("n", "ghost", None).unwrap();
        assert_eq!(again.ip, ip("10.70.0.2"));
        let record: Record = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        assert_eq!(record.pid, std::process::id());
        // A corrupt lease file is stale too.
        fs::write(dir.path().join("networks/n/leases/10.70.0.3"), "{").unwrap();
        assert_eq!(networks.lease("n", "x", None).unwrap().ip, ip("10.70.0.3"));
    }

    #[test]
    fn concurrent_leases_are_distinct() {
        let (_dir, networks) = networks("lease-concurrent");
        networks.create("n", Some("10.80.0.0/24"), Driver::Switch).unwrap();
        let leases: Vec<Lease> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let networks = &networks;
                    s.spawn(move || networks.lease("n", &format!("vm{i}"), None).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut ips: Vec<Ipv4Addr> = leases.iter().map(|l| l.ip).collect();
        ips.sort();
        let expected: Vec<Ipv4Addr> = (2..18).map(|i| Ipv4Addr::new(10, 80, 0, i)).collect();
        assert_eq!(ips, expected);
        let mut macs: Vec<[u8; 6]> = leases.iter().map(|l| l.mac).collect();
        macs.sort();
        macs.dedup();
        assert_eq!(macs.len(), 16);
        assert_eq!(networks.members("n").unwrap().len(), 16);
    }

    #[test]
    fn remove_is_refused_while_leased() {
        let (_dir, networks) = networks("lease-rm");
        networks.create("n", None, Driver::Switch).unwrap();
        let web = networks.lease("n", "web", None).unwrap();
        let err = networks.remove("n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "network \"n\" is in use by 1 VM: web (10.89.0.2); stop them first"
        );
        assert_eq!(networks.list().unwrap().len(), 1);
        drop(web);
        networks.remove("n").unwrap();
        assert_eq!(networks.list().unwrap(), vec![]);
    }

    #[test]
    fn lease_files_are_private_under_umask_0() {
        use crate::private::tests::{mode, under_umask_0};
        if !under_umask_0("network::lease::tests::lease_files_are_private_under_umask_0") {
            return;
        }
        let (dir, networks) = networks("lease-umask");
        // (Made 0777 under umask 0: a state directory in it is refused.)
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        networks.create("n", None, Driver::Switch).unwrap();
        let _a = networks.lease("n", "a", None).unwrap();
        let net = dir.path().join("networks/n");
        for (path, want) in [
            (dir.path().to_owned(), 0o700),
            (dir.path().join("networks"), 0o700),
            (dir.path().join("networks.lock"), 0o600),
            (net.clone(), 0o700),
            (net.join("leases"), 0o700),
            (net.join("leases/10.89.0.2"), 0o600),
            (net.join("network.json"), 0o600),
            (net.join("lock"), 0o600),
            (net.join("switch.sock"), 0o600),
        ] {
            assert_eq!(mode(&path), want, "{}", path.display());
        }
    }

    #[test]
    fn macs_are_locally_administered_unicast() {
        let mac = mac_for(ip("10.1.2.3"));
        assert_eq!(mac, [0x02, 0x56, 0x4d, 1, 2, 3]);
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
    }
}
