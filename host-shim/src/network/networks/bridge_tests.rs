//! The bridge driver end to end, on a fake host that records the `ip`
//! commands ([`crate::network::links::fake`]).

use std::net::Ipv4Addr;

use super::tests::networks;
use super::*;
use crate::network::links::{self, fake::FakeLinks};
use crate::network::process::{dead_pid, Owner};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Networks in a fresh state directory on a fake host.
fn on_fake_host(tag: &str) -> (crate::test_dir::TestDir, Networks, FakeLinks) {
    let (dir, mut networks) = networks(tag);
    let host = FakeLinks::new();
    networks.links = Arc::new(host.clone());
    (dir, networks, host)
}

#[test]
fn create_lease_and_remove() {
    let (dir, networks, host) = on_fake_host("br-crud");
    let net = networks.create("lab", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
    assert_eq!((net.driver, net.bridge.as_deref()), (Driver::Bridge, Some("vmbr-lab")));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("networks/lab/network.json")).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"name": "lab", "subnet": "10.77.0.0/24", "driver": "bridge", "bridge": "vmbr-lab"})
    );
    assert_eq!(
        host.state().log,
        [
            "ip link add vmbr-lab type bridge",
            "ip addr add 10.77.0.1/24 dev vmbr-lab",
            "ip link set dev vmbr-lab up"
        ]
    );
    assert!(!dir.path().join("networks/lab/switch.sock").exists(), "no switch");

    let a = networks.lease("lab", "a", None).unwrap();
    assert_eq!(a.ip, ip("10.77.0.2"));
    assert_eq!(
        a.backend,
        PortBackend::Tap {
            ifname: "vmtap-0a4d0002".into()
        }
    );
    let b = networks.lease("lab", "b", None).unwrap();
    {
        let state = host.state();
        let tap = &state.links["vmtap-0a4d0003"];
        assert_eq!((tap.master.as_deref(), tap.up), (Some("vmbr-lab"), true));
    }
    let list = networks.list().unwrap();
    assert_eq!(list[0].driver, Driver::Bridge);
    assert_eq!(list[0].bridge.as_deref(), Some("vmbr-lab"));
    assert!(list[0].switch_running && list[0].members == 2, "{list:?}");

    let err = networks.remove("lab").unwrap_err();
    assert!(matches!(err, NetworkError::InUse { .. }), "{err:?}");
    drop(a);
    assert_eq!(
        host.ours(),
        ["vmbr-lab", "vmtap-0a4d0003"],
        "a's tap went with its lease"
    );
    assert!(!dir.path().join("networks/lab/leases/10.77.0.2").exists());
    drop(b);
    networks.remove("lab").unwrap();
    assert_eq!(host.ours(), Vec::<String>::new());
    assert_eq!(host.state().log.last().unwrap(), "ip link del dev vmbr-lab");
    assert!(!dir.path().join("networks/lab").exists());
}

#[test]
fn failures_leave_nothing() {
    let (dir, networks, host) = on_fake_host("br-fail");
    // The bridge is made, but its address cannot be added.
    host.state().fail = Some("addr add".into());
    let err = networks
        .create("lab", Some("10.77.0.0/24"), Driver::Bridge)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`ip addr add 10.77.0.1/24 dev vmbr-lab` failed: RTNETLINK answers: Operation not permitted"
    );
    assert_eq!(host.ours(), Vec::<String>::new());
    assert_eq!(host.state().log.last().unwrap(), "ip link del dev vmbr-lab");
    assert_eq!(networks.list().unwrap(), vec![]);
    host.state().fail = None;

    // A tap that cannot join the bridge is deleted, and the address
    // given back.
    networks.create("lab", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
    host.state().fail = Some("link set dev vmtap".into());
    let err = networks.lease("lab", "a", None).unwrap_err();
    assert!(matches!(err, NetworkError::Ip { .. }), "{err:?}");
    assert_eq!(host.ours(), ["vmbr-lab"]);
    assert_eq!(networks.members("lab").unwrap(), vec![]);
    host.state().fail = None;

    // Without CAP_NET_ADMIN: a clear error, and nothing made or lost.
    host.state().may_admin = false;
    let before = host.state().log.len();
    let err = networks.create("other", None, Driver::Bridge).unwrap_err();
    assert!(err.to_string().contains("needs root (CAP_NET_ADMIN"), "{err}");
    let err = networks.lease("lab", "a", None).unwrap_err();
    assert!(err.to_string().contains("needs root (CAP_NET_ADMIN"), "{err}");
    let err = networks.remove("lab").unwrap_err();
    assert!(err.to_string().contains("needs root (CAP_NET_ADMIN"), "{err}");
    assert_eq!(host.state().log.len(), before, "not one command ran");
    assert_eq!(networks.list().unwrap().len(), 1);
    assert!(!dir.path().join("networks/other").exists());
    // A switch network needs no root.
    networks.create("other", None, Driver::Switch).unwrap();
}

#[test]
fn taken_names_and_host_routes_are_refused() {
    let (_dir, networks, host) = on_fake_host("br-refuse");
    host.ip(&["link", "add", "vmbr-lab", "type", "bridge"]).unwrap();
    let err = networks
        .create("lab", Some("10.77.0.0/24"), Driver::Bridge)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "a network device named \"vmbr-lab\" already exists on this host, and is not vmshim's to take; \
         choose another network name"
    );
    let err = networks
        .create("home", Some("192.168.0.0/16"), Driver::Bridge)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "subnet 192.168.0.0/16 overlaps the host's route to 192.168.1.0/24 on eth0; choose another with --subnet"
    );
    networks.create("a", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
    let err = networks.create("b", Some("10.77.0.0/25"), Driver::Bridge).unwrap_err();
    assert!(matches!(err, NetworkError::Overlap { .. }), "{err:?}");
    assert_eq!(
        host.ours(),
        ["vmbr-a", "vmbr-lab"],
        "the device that was there is untouched"
    );
    assert_eq!(networks.list().unwrap().len(), 1);
    // A default subnet steps around the host's routes.
    host.state().routes.push(links::Route {
        destination: ip("10.89.0.0"),
        prefix_len: 23,
        device: "eth1".into(),
    });
    let net = networks.create("c", None, Driver::Bridge).unwrap();
    assert_eq!(net.subnet.to_string(), "10.89.2.0/24");
}

#[test]
fn stale_taps_are_swept_and_a_missing_bridge_remade() {
    let (_dir, networks, host) = on_fake_host("br-stale");
    networks.create("lab", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
    let gone = Owner {
        pid: dead_pid(),
        started: None,
    };
    // As a vmshim killed with SIGKILL leaves them: a lease and its tap.
    std::mem::forget(networks.lease_for("lab", "ghost", None, gone).unwrap());
    // A tap of another network's address, and one on another bridge.
    host.ip(&["tuntap", "add", "dev", "vmtap-0a4e0002", "mode", "tap"])
        .unwrap();
    host.ip(&["link", "add", "vmbr-else", "type", "bridge"]).unwrap();
    host.ip(&["tuntap", "add", "dev", "vmtap-0a4d0009", "mode", "tap"])
        .unwrap();
    host.ip(&["link", "set", "dev", "vmtap-0a4d0009", "master", "vmbr-else", "up"])
        .unwrap();
    // The host rebooted meanwhile: the bridge is gone.
    host.ip(&["link", "del", "dev", "vmbr-lab"]).unwrap();

    let a = networks.lease("lab", "a", None).unwrap();
    assert_eq!(a.ip, ip("10.77.0.2"), "the dead VM's address is free again");
    let err = networks.lease("lab", "b", Some(ip("10.77.0.9"))).unwrap_err();
    assert!(
        matches!(&err, NetworkError::DeviceExists { device, .. } if device == "vmtap-0a4d0009"),
        "another bridge's tap is not taken over: {err:?}"
    );
    assert_eq!(
        host.ours(),
        [
            "vmbr-else",
            "vmbr-lab",
            "vmtap-0a4d0002",
            "vmtap-0a4d0009",
            "vmtap-0a4e0002"
        ]
    );
    let tap = host.state().links["vmtap-0a4d0002"].clone();
    assert_eq!(
        tap.master.as_deref(),
        Some("vmbr-lab"),
        "a new tap on the remade bridge"
    );
    assert_eq!(host.state().links["vmbr-lab"].addresses, ["10.77.0.1/24"]);
    drop(a);
    networks.remove("lab").unwrap();
    assert_eq!(host.ours(), ["vmbr-else", "vmtap-0a4d0009", "vmtap-0a4e0002"]);
}

#[test]
fn a_half_made_network_is_swept_with_its_bridge() {
    let (dir, networks, host) = on_fake_host("br-half");
    networks.create("live", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
    // Two creates that died between making the bridge and renaming the
    // directory into place; the second bridge's name was reused since.
    let root = dir.path().join("networks");
    let dead = dead_pid();
    for (n, bridge) in ["vmbr-half", "vmbr-live"].into_iter().enumerate() {
        let tmp = root.join(format!(".tmp-{dead}-{n}"));
        std::fs::create_dir_all(tmp.join("leases")).unwrap();
        let json = serde_json::json!({
            "name": bridge.trim_start_matches("vmbr-"),
            "subnet": "10.78.0.0/24",
            "driver": "bridge",
            "bridge": bridge,
        });
        std::fs::write(tmp.join("network.json"), json.to_string()).unwrap();
    }
    host.ip(&["link", "add", "vmbr-half", "type", "bridge"]).unwrap();
    networks.create("next", None, Driver::Switch).unwrap();
    assert_eq!(host.ours(), ["vmbr-live"]);
    let hidden: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn a_switch_network_has_no_bridge_and_a_bridge_network_no_switch() {
    let (_dir, networks, host) = on_fake_host("br-kinds");
    networks.create("sw", None, Driver::Switch).unwrap();
    networks.create("br", Some("10.77.0.0/24"), Driver::Bridge).unwrap();
    assert_eq!(host.ours(), ["vmbr-br"]);
    let err = networks.ensure_switch("br").unwrap_err();
    assert_eq!(
        err.to_string(),
        "network \"br\" uses the bridge driver, which has no switch daemon"
    );
    let lease = networks.lease("sw", "a", None).unwrap();
    assert!(matches!(lease.backend, PortBackend::Switch { .. }), "{lease:?}");
}
