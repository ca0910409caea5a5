//! Hostile bytes against the parsers of kernel replies: the message and
//! attribute walkers, `NLMSG_ERROR`, and the link, address and route
//! parsers. The kernel is trusted, but a parser that panics or reads past
//! the end on a reply it did not expect takes the container's pid with it.
//! Well-formed replies, built as the kernel writes them, parse back to
//! what they hold.

use std::net::IpAddr;

use proptest::prelude::*;

use super::message::*;
use super::netlink::{parse_address, parse_link, parse_route};

/// Whether `inner` lies inside `outer`.
fn inside(outer: &[u8], inner: &[u8]) -> bool {
    let start = inner.as_ptr() as usize;
    let base = outer.as_ptr() as usize;
    start >= base && start + inner.len() <= base + outer.len()
}

proptest! {
    #[test]
    fn prop_walkers_stay_inside_what_they_are_given(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        for msg in messages(&bytes) {
            let Ok(msg) = msg else { break };
            prop_assert!(inside(&bytes, msg.payload));
            for attr in attributes(msg.payload) {
                let Ok((_, payload)) = attr else { break };
                prop_assert!(inside(&bytes, payload));
            }
            let _ = parse_error(&msg);
        }
    }

    #[test]
    fn prop_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_link(&bytes);
        let _ = parse_address(&bytes);
        let _ = parse_route(&bytes);
    }

    #[test]
    fn prop_a_link_reads_back_as_the_kernel_wrote_it(
        index in 1u32..100_000,
        name in "[a-z][a-z0-9]{0,14}",
        mtu in 68u32..65536,
        mac in any::<[u8; 6]>(),
        up in any::<bool>(),
    ) {
        let header = IfInfoMsg { kind: 1, index, flags: if up { libc::IFF_UP as u32 } else { 0 }, change: 0 };
        let mut reply = Request::new(RTM_NEWLINK, 0, &header.to_bytes());
        reply.attr_str(IFLA_IFNAME, &name).attr_u32(IFLA_MTU, mtu).attr(IFLA_ADDRESS, &mac);
        reply.nested(IFLA_LINKINFO, |info| {
            info.attr_str(IFLA_INFO_KIND, "veth");
        });
        let bytes = reply.finish(1).to_vec();
        let msg = messages(&bytes).next().unwrap().unwrap();
        let link = parse_link(msg.payload).unwrap();
        prop_assert_eq!((link.index, link.name.as_str(), link.mtu, link.mac, link.up), (index, name.as_str(), mtu, Some(mac), up));
        prop_assert_eq!(link.driver.as_deref(), Some("veth"));
    }

    #[test]
    fn prop_a_route_reads_back_as_the_kernel_wrote_it(
        dst in any::<[u8; 4]>(),
        len in 0u8..=32,
        gateway in proptest::option::of(any::<[u8; 4]>()),
        oif in 1u32..1000,
        protocol in any::<u8>(),
    ) {
        let header = RtMsg { family: libc::AF_INET as u8, dst_len: len, table: RT_TABLE_MAIN, protocol, scope: 0, kind: RTN_UNICAST, flags: 0 };
        let mut reply = Request::new(RTM_NEWROUTE, 0, &header.to_bytes());
        if len > 0 {
            reply.attr(RTA_DST, &dst);
        }
        if let Some(g) = gateway {
            reply.attr(RTA_GATEWAY, &g);
        }
        reply.attr_u32(RTA_OIF, oif);
        let bytes = reply.finish(1).to_vec();
        let msg = messages(&bytes).next().unwrap().unwrap();
        let route = parse_route(msg.payload).unwrap().unwrap();
        prop_assert_eq!(route.destination, (len > 0).then(|| (IpAddr::from(dst), len)));
        prop_assert_eq!(route.gateway, gateway.map(IpAddr::from));
        prop_assert_eq!((route.device, route.protocol), (Some(oif), protocol));
    }
}
