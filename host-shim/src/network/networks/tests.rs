//! [`Networks`] end to end: networks made, listed and removed, their
//! switches kept running, addresses leased and given back, in a fresh state
//! directory each, with switches on threads of this process. The bridge
//! driver's are in [`super::bridge_tests`].

use std::fs;
use std::net::Ipv4Addr;

use super::*;
use crate::network::lease::Record;
use crate::network::process::dead_pid;
use crate::test_dir::TestDir;

/// Networks in a fresh state directory whose switches run on threads of
/// this process.
pub(super) fn networks(tag: &str) -> (TestDir, Networks) {
    let dir = TestDir::new(tag);
    let mut networks = Networks::at(dir.path());
    networks.launcher = Launcher::InProcess;
    (dir, networks)
}

fn names(networks: &Networks) -> Vec<(String, String)> {
    let list = networks.list().unwrap();
    list.into_iter().map(|n| (n.name, n.subnet.to_string())).collect()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn create_list_remove() {
    let (dir, networks) = networks("crud");
    assert_eq!(networks.list().unwrap(), vec![]);
    let a = networks.create("a", None, Driver::Switch).unwrap();
    assert_eq!(a.subnet.to_string(), "10.89.0.0/24");
    let b = networks.create("b", Some("192.168.50.0/24"), Driver::Switch).unwrap();
    assert_eq!(b.subnet.to_string(), "192.168.50.0/24");
    let c = networks.create("c", None, Driver::Switch).unwrap();
    assert_eq!(c.subnet.to_string(), "10.89.1.0/24");

    let list = networks.list().unwrap();
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|n| n.switch_running && n.members == 0), "{list:?}");
    assert_eq!(
        names(&networks),
        [("a", "10.89.0.0/24"), ("b", "192.168.50.0/24"), ("c", "10.89.1.0/24")]
            .map(|(n, s)| (n.to_owned(), s.to_owned()))
    );
    let on_disk = dir.path().join("networks/a");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(on_disk.join("network.json")).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"name": "a", "subnet": "10.89.0.0/24", "driver": "switch"})
    );
    assert!(on_disk.join("leases").is_dir() && on_disk.join("lock").is_file());

    assert!(matches!(networks.create("a", None, Driver::Switch), Err(NetworkError::Exists { name }) if name == "a"));
    networks.remove("a").unwrap();
    assert!(!on_disk.exists());
    assert!(matches!(networks.remove("a"), Err(NetworkError::UnknownNetwork { name }) if name == "a"));
    assert!(matches!(networks.get("a"), Err(NetworkError::UnknownNetwork { .. })));
    // The freed default subnet is the first free one again.
    assert_eq!(
        networks.create("d", None, Driver::Switch).unwrap().subnet.to_string(),
        "10.89.0.0/24"
    );
    assert_eq!(names(&networks).len(), 3);
    // Nothing hidden left behind.
    let hidden: Vec<_> = fs::read_dir(dir.path().join("networks"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn bad_names_and_subnets_leave_nothing() {
    let (dir, networks) = networks("bad");
    for bad in ["", "../x", ".x", "a/b", "a b"] {
        assert!(
            matches!(
                networks.create(bad, None, Driver::Switch),
                Err(NetworkError::BadName { .. })
            ),
            "{bad:?}"
        );
        assert!(
            matches!(networks.remove(bad), Err(NetworkError::BadName { .. })),
            "{bad:?}"
        );
    }
    let err = networks.create("x", Some("10.1.2.5/24"), Driver::Switch).unwrap_err();
    assert_eq!(
        err.to_string(),
        "10.1.2.5/24 has host bits set; did you mean 10.1.2.0/24?"
    );
    let err = networks.create("x", Some("10.0.0.0/16"), Driver::Switch).unwrap_err();
    assert!(matches!(err, NetworkError::Reserved { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("10.0.2.0/24, the NAT network QEMU user networking"),
        "{err}"
    );
    let err = networks.create("x", Some("127.0.0.0/24"), Driver::Switch).unwrap_err();
    assert!(err.to_string().contains("127.0.0.0/8"), "{err}");
    // Too long for a socket address under this state directory.
    let long = "n".repeat(64);
    let err = networks.create(&long, None, Driver::Switch).unwrap_err();
    assert!(
        matches!(err, NetworkError::SocketPathTooLong { len, .. } if len > 107),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("over the 107 a Unix socket address holds"),
        "{err}"
    );
    assert!(!dir.path().join("networks").join(&long).exists());
    assert_eq!(networks.list().unwrap(), vec![]);
}

#[test]
fn overlapping_subnets_are_refused() {
    let (_dir, networks) = networks("overlap");
    networks.create("wide", Some("172.20.0.0/16"), Driver::Switch).unwrap();
    let err = networks
        .create("narrow", Some("172.20.5.0/24"), Driver::Switch)
        .unwrap_err();
    match &err {
        NetworkError::Overlap {
            subnet,
            other,
            other_subnet,
        } => {
            assert_eq!(subnet.to_string(), "172.20.5.0/24");
            assert_eq!(other, "wide");
            assert_eq!(other_subnet.to_string(), "172.20.0.0/16");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "subnet 172.20.5.0/24 overlaps 172.20.0.0/16 of network \"wide\""
    );
    // A default subnet steps around a user's choice.
    networks.create("mine", Some("10.89.0.0/23"), Driver::Switch).unwrap();
    assert_eq!(
        networks
            .create("auto", None, Driver::Switch)
            .unwrap()
            .subnet
            .to_string(),
        "10.89.2.0/24"
    );
}

#[test]
fn concurrent_creates_get_distinct_default_subnets() {
    let (_dir, networks) = networks("concurrent-create");
    let subnets: Vec<Subnet> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let networks = &networks;
                s.spawn(move || networks.create(&format!("n{i}"), None, Driver::Switch).unwrap().subnet)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut distinct = subnets.clone();
    distinct.sort_by_key(|s| u32::from(s.network()));
    distinct.dedup();
    assert_eq!(distinct.len(), 8, "{subnets:?}");
    assert_eq!(distinct.last().unwrap().to_string(), "10.89.7.0/24");
}

#[test]
fn leftovers_of_dead_processes_are_swept() {
    let (dir, networks) = networks("leftovers");
    let root = dir.path().join("networks");
    let dead = dead_pid();
    fs::create_dir_all(root.join(format!(".tmp-{dead}-0/leases"))).unwrap();
    fs::create_dir_all(root.join(format!(".rm-{dead}-0"))).unwrap();
    let mine = root.join(format!(".tmp-{}-999999", std::process::id()));
    fs::create_dir_all(&mine).unwrap();
    networks.create("x", None, Driver::Switch).unwrap();
    let left: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(mine.exists());
}

#[test]
fn ensure_switch_restarts_a_dead_switch() {
    let (dir, networks) = networks("ensure");
    networks.create("n", None, Driver::Switch).unwrap();
    let socket = networks.ensure_switch("n").unwrap();
    assert_eq!(socket, dir.path().join("networks/n/switch.sock"));
    assert!(accepts(&socket));
    // The socket is deleted by hand: the next ensure starts a new switch.
    fs::remove_file(&socket).unwrap();
    assert!(!networks.list().unwrap()[0].switch_running);
    assert_eq!(networks.ensure_switch("n").unwrap(), socket);
    assert!(networks.list().unwrap()[0].switch_running);
    assert!(matches!(
        networks.ensure_switch("nope"),
        Err(NetworkError::UnknownNetwork { .. })
    ));
}

#[test]
fn a_switch_that_cannot_start_leaves_no_network() {
    let dir = TestDir::new("nostart");
    let networks = Networks::at(dir.path()).with_switch_program("/nonexistent/vmshim");
    let err = networks.create("n", None, Driver::Switch).unwrap_err();
    assert!(
        matches!(&err, NetworkError::SwitchStart { name, detail } if name == "n" && detail.contains("/nonexistent/vmshim")),
        "{err:?}"
    );
    assert_eq!(networks.list().unwrap(), vec![]);
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
    let file = dir.path().join("networks/n/leases/10.70.0.2");
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
    if !under_umask_0("network::networks::tests::lease_files_are_private_under_umask_0") {
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
