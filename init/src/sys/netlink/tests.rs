//! The client against the real kernel, every test in a network namespace of
//! its own. Namespaces are per thread: each test runs on a thread that
//! unshares one, so nothing it does can reach the host's interfaces. Tests
//! need root (CAP_SYS_ADMIN for the namespace); elsewhere they are skipped
//! with a note.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};

use super::interface::{configure, loopback_up, InterfaceConfig};
use super::*;

/// `VETH_INFO_PEER`, from <linux/veth.h>.
const VETH_INFO_PEER: u16 = 1;

/// Runs `test` on a new thread in a fresh network namespace, where there is
/// nothing but a `lo` that is down.
fn in_private_netns(test: impl FnOnce(&mut Netlink) + Send + 'static) {
    let outcome = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this
        // thread, which runs nothing but this test and then ends.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) {
                eprintln!("skipped: no network namespace of our own ({e}); run as root");
                return;
            }
            panic!("unshare(CLONE_NEWNET): {e}");
        }
        let mut nl = Netlink::open().unwrap();
        // Refuse to touch anything unless this is a fresh namespace.
        let names: Vec<String> = nl.links().unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["lo"], "not a fresh network namespace");
        test(&mut nl);
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

impl Netlink {
    /// `ip link add NAME type KIND [peer name PEER]`.
    fn add_virtual_link(&mut self, name: &str, kind: &str, peer: Option<&str>) -> Result<(), NetlinkError> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let mut req = Request::new(RTM_NEWLINK, flags, &IfInfoMsg::default().to_bytes());
        req.attr_str(IFLA_IFNAME, name).nested(IFLA_LINKINFO, |info| {
            info.attr_str(IFLA_INFO_KIND, kind);
            if let Some(peer) = peer {
                info.nested(IFLA_INFO_DATA, |data| {
                    data.nested(VETH_INFO_PEER, |p| {
                        p.raw(&IfInfoMsg::default().to_bytes()).attr_str(IFLA_IFNAME, peer);
                    });
                });
            }
        });
        self.command("create interface", &mut req)
            .map_err(|f| self.failed("create interface", f, |_| format!("{name} type {kind}")))
    }
}

/// An interface to configure, like a VM's NIC: a dummy where the kernel has
/// the driver, else one end of a veth pair whose other end is up (so that it
/// has a carrier). `None` (and a note) where the kernel has neither.
fn test_link(nl: &mut Netlink, name: &str) -> Option<u32> {
    let unsupported = |e: &NetlinkError| e.raw_os_error() == Some(libc::EOPNOTSUPP);
    match nl.add_virtual_link(name, "dummy", None) {
        Ok(()) => {}
        Err(e) if unsupported(&e) => {
            eprintln!("no dummy interfaces in this kernel ({e}): a veth pair instead");
            let peer = format!("{name}p");
            match nl.add_virtual_link(name, "veth", Some(&peer)) {
                Ok(()) => {
                    let peer = nl.link_index(&peer).unwrap();
                    nl.set_link(peer, Some(true), None).unwrap();
                }
                Err(e) if unsupported(&e) => {
                    eprintln!("skipped: the kernel has neither dummy nor veth interfaces ({e})");
                    return None;
                }
                Err(e) => panic!("{e}"),
            }
        }
        Err(e) => panic!("{e}"),
    }
    Some(nl.link_index(name).unwrap())
}

fn vm0_config() -> InterfaceConfig {
    InterfaceConfig {
        name: "vm0".to_owned(),
        mtu: Some(1400),
        addresses: vec![
            (IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2)), 24),
            ("fd00::2".parse().unwrap(), 64),
        ],
        gateway4: Some(Ipv4Addr::new(10, 99, 0, 1)),
        gateway6: Some("fd00::1".parse().unwrap()),
    }
}

fn default_via(gateway: &str, device: u32) -> Route {
    Route {
        destination: None,
        gateway: Some(gateway.parse().unwrap()),
        device: Some(device),
    }
}

#[test]
fn loopback_up_brings_lo_up_with_its_addresses() {
    in_private_netns(|nl| {
        let lo = nl.link("lo").unwrap();
        assert!(!lo.up, "lo starts down in a new namespace");
        assert_eq!(lo.mac, Some([0; 6]));

        loopback_up(nl).unwrap();
        let links = nl.links().unwrap();
        let after = links.iter().find(|l| l.name == "lo").unwrap();
        assert!(after.up);
        assert_eq!((after.index, after.mtu), (lo.index, lo.mtu));
        let addresses = nl.addresses(Some(lo.index)).unwrap();
        assert!(
            addresses.contains(&(lo.index, Ipv4Addr::LOCALHOST.into(), 8)),
            "{addresses:?}"
        );
        assert!(
            addresses.contains(&(lo.index, Ipv6Addr::LOCALHOST.into(), 128)),
            "{addresses:?}"
        );
        loopback_up(nl).unwrap();

        // What a process notices: datagrams over 127.0.0.1 arrive.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(b"ping", socket.local_addr().unwrap()).unwrap();
        let mut buf = [0; 8];
        assert_eq!(socket.recv(&mut buf).unwrap(), 4);
    });
}

#[test]
fn configure_sets_mtu_addresses_and_default_routes() {
    in_private_netns(|nl| {
        let Some(index) = test_link(nl, "vm0") else { return };
        let cfg = vm0_config();
        configure(nl, &cfg).unwrap();

        let links = nl.links().unwrap();
        let link = links.iter().find(|l| l.index == index).unwrap();
        assert_eq!((link.name.as_str(), link.mtu, link.up), ("vm0", 1400, true));
        assert!(link.mac.is_some());

        let addresses = nl.addresses(Some(index)).unwrap();
        for &(address, prefix_len) in &cfg.addresses {
            assert!(addresses.contains(&(index, address, prefix_len)), "{addresses:?}");
        }
        assert!(addresses.iter().all(|&(i, _, _)| i == index), "filtered by interface");

        let v4 = nl.routes(Family::V4).unwrap();
        assert!(v4.contains(&default_via("10.99.0.1", index)), "{v4:?}");
        let subnet = Route {
            destination: Some(("10.99.0.0".parse().unwrap(), 24)),
            gateway: None,
            device: Some(index),
        };
        assert!(v4.contains(&subnet), "the kernel's prefix route: {v4:?}");
        let v6 = nl.routes(Family::V6).unwrap();
        assert!(v6.contains(&default_via("fd00::1", index)), "{v6:?}");

        // No duplicate address detection: the IPv6 address can be bound now.
        UdpSocket::bind("[fd00::2]:0").unwrap();

        // A second time: nothing fails, nothing is doubled.
        configure(nl, &cfg).unwrap();
        let again = nl.addresses(Some(index)).unwrap();
        for &(address, _) in &cfg.addresses {
            assert_eq!(again.iter().filter(|a| a.1 == address).count(), 1, "{again:?}");
        }
        let defaults = |routes: Vec<Route>| routes.iter().filter(|r| r.destination.is_none()).count();
        assert_eq!(defaults(nl.routes(Family::V4).unwrap()), 1);
        assert_eq!(defaults(nl.routes(Family::V6).unwrap()), 1);
    });
}

#[test]
fn set_link_changes_only_what_it_is_given() {
    in_private_netns(|nl| {
        let Some(index) = test_link(nl, "vm0") else { return };
        let link = |nl: &mut Netlink| nl.links().unwrap().into_iter().find(|l| l.index == index).unwrap();
        let before = link(nl);
        nl.set_link(index, None, Some(1280)).unwrap();
        assert_eq!((link(nl).mtu, link(nl).up), (1280, before.up));
        nl.set_link(index, Some(true), None).unwrap();
        assert_eq!((link(nl).mtu, link(nl).up), (1280, true));
        nl.set_link(index, Some(false), None).unwrap();
        assert_eq!((link(nl).mtu, link(nl).up), (1280, false));
        nl.set_link(index, None, None).unwrap();
        assert_eq!(link(nl).name, "vm0");
    });
}

#[test]
fn a_missing_interface_is_named() {
    in_private_netns(|nl| {
        let cfg = InterfaceConfig {
            name: "nosuch0".to_owned(),
            ..vm0_config()
        };
        match configure(nl, &cfg) {
            Err(NetlinkError::NoSuchLink { name }) => assert_eq!(name, "nosuch0"),
            other => panic!("{other:?}"),
        }
        let e = nl.link_index("nosuch0").unwrap_err();
        assert_eq!(e.to_string(), "no network interface named \"nosuch0\"");
        assert!(matches!(
            nl.link_index("a-name-far-too-long"),
            Err(NetlinkError::NoSuchLink { .. })
        ));
        // By index: the kernel's ENODEV, the index in place of a name.
        let e = nl.set_link(9999, Some(true), None).unwrap_err();
        assert!(e.to_string().starts_with("cannot set link ifindex 9999 up: "), "{e}");
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
    });
}

#[test]
fn a_refused_request_names_the_operation_the_target_and_the_errno() {
    in_private_netns(|nl| {
        loopback_up(nl).unwrap();
        let lo = nl.link_index("lo").unwrap();

        let e = nl.add_address(lo, "10.0.0.1".parse().unwrap(), 33).unwrap_err();
        match &e {
            NetlinkError::Request { op, target, source, .. } => {
                assert_eq!((*op, target.as_str()), ("add address", "10.0.0.1/33 on lo"));
                assert_eq!(source.raw_os_error(), Some(libc::EINVAL));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            e.to_string().starts_with("cannot add address 10.0.0.1/33 on lo: "),
            "{e}"
        );
        eprintln!("as the agent would log it: {e}");

        // The socket serves on after a refusal; a second add is EEXIST.
        nl.add_address(lo, "10.0.0.1".parse().unwrap(), 8).unwrap();
        let e = nl.add_address(lo, "10.0.0.1".parse().unwrap(), 8).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));

        // A gateway that no address of ours can reach.
        let e = nl.add_route(&default_via("192.0.2.1", lo)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot add route default via 192.0.2.1 dev lo: "),
            "{e}"
        );
        assert!(e.raw_os_error().is_some());
        eprintln!("as the agent would log it: {e}");

        // Refused before the kernel is asked.
        let mixed = Route {
            destination: Some(("10.1.0.0".parse().unwrap(), 16)),
            gateway: Some("fd00::1".parse().unwrap()),
            device: None,
        };
        assert!(matches!(
            nl.add_route(&mixed),
            Err(NetlinkError::Invalid { op: "add route", .. })
        ));
        let nowhere = Route {
            destination: None,
            gateway: None,
            device: Some(lo),
        };
        let e = nl.add_route(&nowhere).unwrap_err();
        assert!(e.to_string().starts_with("cannot add route default dev lo: "), "{e}");
    });
}

#[test]
fn routes_without_a_gateway_are_link_scoped() {
    in_private_netns(|nl| {
        let Some(index) = test_link(nl, "vm0") else { return };
        nl.set_link(index, Some(true), None).unwrap();
        let direct = Route {
            destination: Some(("198.51.100.0".parse().unwrap(), 24)),
            gateway: None,
            device: Some(index),
        };
        nl.add_route(&direct).unwrap();
        let direct6 = Route {
            destination: Some(("fd01::".parse().unwrap(), 48)),
            gateway: None,
            device: Some(index),
        };
        nl.add_route(&direct6).unwrap();
        assert!(nl.routes(Family::V4).unwrap().contains(&direct));
        assert!(nl.routes(Family::V6).unwrap().contains(&direct6));
        assert_eq!(nl.add_route(&direct).unwrap_err().raw_os_error(), Some(libc::EEXIST));
    });
}

#[test]
fn the_client_serves_on_after_abandoning_a_reply() {
    in_private_netns(|nl| {
        // Enough interfaces that a dump takes several datagrams.
        for i in 0..30 {
            if test_link(nl, &format!("t{i}")).is_none() {
                return;
            }
        }
        let all = nl.links().unwrap().len();
        assert!(all > 30);
        // A reply given up on at its first message, as after a malformed one:
        // the rest of that dump is still due on the socket.
        let mut req = Request::new(
            RTM_GETLINK,
            NLM_F_REQUEST | NLM_F_DUMP,
            &IfInfoMsg::default().to_bytes(),
        );
        let abandoned = nl.exchange("list", &mut req, |_| Err(Malformed::Unexpected("given up".to_owned())));
        assert!(matches!(
            abandoned,
            Err(Failure::Reply(NetlinkError::Unexpected { .. }))
        ));
        assert_eq!(nl.links().unwrap().len(), all);
        assert_eq!(nl.link("t0").unwrap().name, "t0");
    });
}
