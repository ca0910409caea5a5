//! Hostile bytes against the parsers of kernel replies: the message and
//! attribute walkers, the family headers, `NLMSG_ERROR`, and the link,
//! address and route parsers. No socket: the kernel is trusted, but a
//! parser that panics on a reply it did not expect takes PID 1 with it.
//!
//! Each walk is compared with a model written from `netlink(7)`: what it
//! yields, where it stops, and that every slice it hands out lies inside
//! the buffer it was given.

use std::net::IpAddr;
use std::ops::Range;

use proptest::prelude::*;

use super::*;

fn truncated(what: &'static str, needed: usize, left: usize) -> Malformed {
    Malformed::Truncated { what, needed, left }
}

/// Where `inner` lies in `outer`; `None` if anywhere else.
fn range_in(outer: &[u8], inner: &[u8]) -> Option<Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start + inner.len();
    (end <= outer.len()).then_some(start..end)
}

fn ne16(buf: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([buf[at], buf[at + 1]])
}

fn ne32(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

/// A walk as the model sees it: the items (their fields and the byte range
/// of their payload), then the error that ended it, if one did.
type Walk<T> = (Vec<(T, Range<usize>)>, Option<Malformed>);

/// `NLMSG_OK` / `NLMSG_NEXT`: a header, a length of at least the header
/// and at most what is left, the next message at the aligned length.
fn model_messages(buf: &[u8]) -> Walk<(u16, u16, u32)> {
    let (mut items, mut at) = (Vec::new(), 0);
    while at < buf.len() {
        let left = buf.len() - at;
        // The fields read (length, type, flags, sequence) take 12 bytes;
        // with fewer the header is cut, with more the length decides.
        if left < 12 {
            return (items, Some(truncated("message header", 16, left)));
        }
        let len = ne32(buf, at) as usize;
        if len < 16 || len > left {
            return (items, Some(truncated("message", len.max(16), left)));
        }
        let fields = (ne16(buf, at + 4), ne16(buf, at + 6), ne32(buf, at + 8));
        items.push((fields, at + 16..at + len));
        at += (len + 3) & !3;
    }
    (items, None)
}

/// `RTA_OK` / `RTA_NEXT`, the type's two flag bits masked off.
fn model_attributes(buf: &[u8]) -> Walk<u16> {
    let (mut items, mut at) = (Vec::new(), 0);
    while at < buf.len() {
        let left = buf.len() - at;
        if left < 4 {
            return (items, Some(truncated("attribute header", 4, left)));
        }
        let len = usize::from(ne16(buf, at));
        if len < 4 || len > left {
            return (items, Some(truncated("attribute", len.max(4), left)));
        }
        items.push((ne16(buf, at + 2) & 0x3fff, at + 4..at + len));
        at += (len + 3) & !3;
    }
    (items, None)
}

fn walk_messages(buf: &[u8]) -> Result<Walk<(u16, u16, u32)>, TestCaseError> {
    let mut items = Vec::new();
    let mut it = messages(buf);
    while let Some(item) = it.next() {
        match item {
            Ok(m) => {
                let range =
                    range_in(buf, m.payload).ok_or_else(|| TestCaseError::fail("payload outside the buffer"))?;
                items.push(((m.kind, m.flags, m.seq), range));
            }
            Err(e) => {
                prop_assert!(it.next().is_none(), "a message after {:?}", e);
                return Ok((items, Some(e)));
            }
        }
        prop_assert!(items.len() <= buf.len() / 16, "more messages than headers fit");
    }
    Ok((items, None))
}

fn walk_attributes(buf: &[u8]) -> Result<Walk<u16>, TestCaseError> {
    let mut items = Vec::new();
    for item in attributes(buf) {
        match item {
            Ok((kind, payload)) => {
                let range = range_in(buf, payload).ok_or_else(|| TestCaseError::fail("payload outside the buffer"))?;
                items.push((kind, range));
            }
            Err(e) => return Ok((items, Some(e))),
        }
        prop_assert!(items.len() <= buf.len() / 4, "more attributes than headers fit");
    }
    Ok((items, None))
}

// ---------------------------------------------------------------------------
// Bytes that look like replies
// ---------------------------------------------------------------------------

/// A length field: the honest one, one a little off, or anything.
fn length(honest: usize) -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(honest as u32),
        2 => (-5i64..=5).prop_map(move |d| (honest as i64 + d).max(0) as u32),
        1 => 0u32..24,
        1 => any::<u32>(),
    ]
}

/// Attributes of the given types, with lengths that mostly tell the truth,
/// padded or not, nested ones among them.
fn attribute_bytes(kinds: Vec<u16>) -> BoxedStrategy<Vec<u8>> {
    let one = (
        prop::sample::select(kinds),
        prop::collection::vec(any::<u8>(), 0..24),
        any::<bool>(),
        any::<u16>(),
    )
        .prop_flat_map(|(kind, payload, pad, flags)| {
            let honest = 4 + payload.len();
            (length(honest), Just(kind | (flags & 0xc000)), Just(payload), Just(pad))
        })
        .prop_map(|(len, kind, payload, pad)| {
            let mut b = Vec::new();
            b.extend_from_slice(&(len as u16).to_ne_bytes());
            b.extend_from_slice(&kind.to_ne_bytes());
            b.extend_from_slice(&payload);
            if pad {
                b.resize((b.len() + 3) & !3, 0);
            }
            b
        });
    prop::collection::vec(one, 0..6)
        .prop_map(|parts| parts.concat())
        .boxed()
}

fn reply_bytes() -> impl Strategy<Value = Vec<u8>> {
    let message = (
        prop::sample::select(vec![
            NLMSG_NOOP,
            NLMSG_ERROR,
            NLMSG_DONE,
            NLMSG_OVERRUN,
            RTM_NEWLINK,
            RTM_NEWADDR,
            RTM_NEWROUTE,
            99,
        ]),
        any::<u16>(),
        any::<u32>(),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40),
            attribute_bytes(vec![1, 2, 3, 4, 5, 8, 15, 18]),
        ],
        any::<bool>(),
    )
        .prop_flat_map(|(kind, flags, seq, payload, pad)| {
            let honest = 16 + payload.len();
            (length(honest), Just((kind, flags, seq, payload, pad)))
        })
        .prop_map(|(len, (kind, flags, seq, payload, pad))| {
            let mut b = Vec::new();
            b.extend_from_slice(&len.to_ne_bytes());
            b.extend_from_slice(&kind.to_ne_bytes());
            b.extend_from_slice(&flags.to_ne_bytes());
            b.extend_from_slice(&seq.to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(&payload);
            if pad {
                b.resize((b.len() + 3) & !3, 0);
            }
            b
        });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..96),
        prop::collection::vec(message, 0..5).prop_map(|m| m.concat()),
    ]
}

fn header_then_attributes(header_len: usize, kinds: Vec<u16>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..48),
        4 => (prop::collection::vec(any::<u8>(), header_len), attribute_bytes(kinds)).prop_map(|(h, a)| [h, a].concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    /// The message walker yields exactly the messages `netlink(7)`'s macros
    /// find, each payload inside the buffer, then stops: at the end, or at
    /// the first header that does not fit, with the error naming it, and
    /// nothing after.
    #[test]
    fn prop_messages_walk_as_netlink_says(buf in reply_bytes()) {
        prop_assert_eq!(walk_messages(&buf)?, model_messages(&buf));
    }

    /// The attribute walker, the same for `rtattr`s: types with the flag
    /// bits masked off, lengths checked, the last attribute allowed to go
    /// without its padding.
    #[test]
    fn prop_attributes_walk_as_netlink_says(
        buf in prop_oneof![prop::collection::vec(any::<u8>(), 0..64), attribute_bytes(vec![1, 3, 4, 18, 0x3fff])],
    ) {
        prop_assert_eq!(walk_attributes(&buf)?, model_attributes(&buf));
    }

    /// What the request builder writes, the walkers read back: one message
    /// with the header given, then every attribute with its type and
    /// payload, nested ones holding theirs.
    #[test]
    fn prop_requests_read_back(
        kind in any::<u16>(),
        flags in any::<u16>(),
        seq in any::<u32>(),
        header in prop::collection::vec(any::<u8>(), 0..17),
        attrs in prop::collection::vec((0u16..0x3fff, prop::collection::vec(any::<u8>(), 0..40), any::<bool>()), 0..6),
    ) {
        let mut req = Request::new(kind, flags, &header);
        for (kind, payload, nest) in &attrs {
            if *nest {
                req.nested(*kind, |r| {
                    r.attr(kind ^ 1, payload);
                });
            } else {
                req.attr(*kind, payload);
            }
        }
        let bytes = req.finish(seq).to_vec();
        prop_assert_eq!(bytes.len() % 4, 0);
        let all: Vec<_> = messages(&bytes).collect();
        prop_assert_eq!(all.len(), 1);
        let msg = all[0].clone().unwrap();
        prop_assert_eq!((msg.kind, msg.flags, msg.seq), (kind, flags, seq));
        let padded = (header.len() + 3) & !3;
        prop_assert_eq!(&msg.payload[..header.len()], &header[..]);
        let got: Vec<_> = attributes(&msg.payload[padded..]).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got.len(), attrs.len());
        for ((kind, payload, nest), (got_kind, got_payload)) in attrs.iter().zip(got) {
            prop_assert_eq!(got_kind, *kind);
            if *nest {
                let inner: Vec<_> = attributes(got_payload).collect::<Result<_, _>>().unwrap();
                prop_assert_eq!(inner, vec![(kind ^ 1, &payload[..])]);
            } else {
                prop_assert_eq!(got_payload, &payload[..]);
            }
        }
    }

    /// The family headers: any bytes of at least their size parse, with
    /// the rest after them; fewer are an error naming the header; what
    /// `to_bytes` writes parses back.
    #[test]
    fn prop_family_headers(
        bytes in prop::collection::vec(any::<u8>(), 0..24),
        index in any::<u32>(),
        flags in any::<u32>(),
        small in any::<[u8; 6]>(),
    ) {
        for (len, parsed, name) in [
            (IfInfoMsg::LEN, IfInfoMsg::parse(&bytes).map(|(_, rest)| rest), "ifinfomsg"),
            (IfAddrMsg::LEN, IfAddrMsg::parse(&bytes).map(|(_, rest)| rest), "ifaddrmsg"),
            (RtMsg::LEN, RtMsg::parse(&bytes).map(|(_, rest)| rest), "rtmsg"),
        ] {
            match parsed {
                Ok(rest) => {
                    prop_assert!(bytes.len() >= len);
                    prop_assert_eq!(range_in(&bytes, rest), Some(len..bytes.len()));
                }
                Err(e) => {
                    prop_assert!(bytes.len() < len);
                    prop_assert_eq!(e, truncated(name, len, bytes.len()));
                }
            }
        }
        let link = IfInfoMsg { index, flags, change: !flags };
        let written = link.to_bytes();
        prop_assert_eq!(IfInfoMsg::parse(&written), Ok((link, &[][..])));
        let addr = IfAddrMsg { family: small[0], prefix_len: small[1], flags: small[2], scope: small[3], index };
        let written = addr.to_bytes();
        prop_assert_eq!(IfAddrMsg::parse(&written), Ok((addr, &[][..])));
        let route = RtMsg {
            family: small[0],
            dst_len: small[1],
            table: small[2],
            protocol: small[3],
            scope: small[4],
            kind: small[5],
            flags,
        };
        let written = route.to_bytes();
        prop_assert_eq!(RtMsg::parse(&written), Ok((route, &[][..])));
    }

    /// `NLMSG_ERROR` with any payload and flags: the errno whenever the
    /// error code is there, the kernel's text only as a non-empty string
    /// without NUL, never a panic on a lying echoed length.
    #[test]
    fn prop_error_messages(
        flags in prop_oneof![any::<u16>(), Just(NLM_F_ACK_TLVS), Just(NLM_F_ACK_TLVS | NLM_F_CAPPED)],
        code in any::<i32>(),
        echoed_len in prop_oneof![0u32..64, any::<u32>()],
        rest in prop_oneof![prop::collection::vec(any::<u8>(), 0..40), attribute_bytes(vec![NLMSGERR_ATTR_MSG, 2, 3])],
        short in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut payload = code.to_ne_bytes().to_vec();
        payload.extend_from_slice(&echoed_len.to_ne_bytes());
        payload.extend_from_slice(&rest);
        let msg = Message { kind: NLMSG_ERROR, flags, seq: 1, payload: &payload };
        let (errno, text) = parse_error(&msg).unwrap();
        prop_assert_eq!(errno, code.wrapping_neg());
        if let Some(text) = text {
            prop_assert!(flags & NLM_F_ACK_TLVS != 0);
            prop_assert!(!text.is_empty() && !text.contains('\0'));
        }
        let msg = Message { kind: NLMSG_ERROR, flags, seq: 1, payload: &short };
        prop_assert_eq!(parse_error(&msg), Err(truncated("error message", 4, short.len())));
    }

    /// A link reply, well formed or not: parsed with the values it carries
    /// (the last of each attribute winning, a name cut at its NUL, a MAC
    /// only when six bytes), or an error; never a panic.
    #[test]
    fn prop_link_replies(payload in header_then_attributes(IfInfoMsg::LEN, vec![IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO])) {
        let Ok((header, attrs)) = IfInfoMsg::parse(&payload) else {
            prop_assert!(parse_link(&payload).is_err());
            return Ok(());
        };
        let (items, fault) = model_attributes(attrs);
        let mut want = Link { index: header.index, name: String::new(), mtu: 0, up: header.flags & 1 != 0, mac: None };
        let mut error = fault;
        for (kind, range) in items {
            let value = &attrs[range];
            match kind {
                IFLA_IFNAME => want.name = c_string(value),
                IFLA_MTU if value.len() < 4 => {
                    error = Some(truncated("MTU", 4, value.len()));
                    break;
                }
                IFLA_MTU => want.mtu = ne32(value, 0),
                IFLA_ADDRESS => want.mac = <[u8; 6]>::try_from(value).ok(),
                _ => {}
            }
        }
        match error {
            Some(e) => prop_assert_eq!(parse_link(&payload), Err(e)),
            None => prop_assert_eq!(parse_link(&payload), Ok(want)),
        }
    }

    /// An address reply: ours is `IFA_LOCAL` over `IFA_ADDRESS`, of the
    /// header's family and full length; other families are skipped; a
    /// short address is an error.
    #[test]
    fn prop_address_replies(
        family in prop::sample::select(vec![libc::AF_INET as u8, libc::AF_INET6 as u8, 0, 7]),
        payload in header_then_attributes(IfAddrMsg::LEN, vec![IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS]),
    ) {
        let mut payload = payload;
        if let Some(first) = payload.first_mut() {
            *first = family;
        }
        let result = parse_address(&payload);
        let Ok((header, attrs)) = IfAddrMsg::parse(&payload) else {
            prop_assert!(result.is_err());
            return Ok(());
        };
        if family != libc::AF_INET as u8 && family != libc::AF_INET6 as u8 {
            prop_assert_eq!(result, Ok(None));
            return Ok(());
        }
        let width = if family == libc::AF_INET as u8 { 4 } else { 16 };
        let (items, mut error) = model_attributes(attrs);
        let (mut local, mut address) = (None, None);
        for (kind, range) in items {
            let value = &attrs[range];
            if kind != IFA_LOCAL && kind != IFA_ADDRESS {
                continue;
            }
            if value.len() < width {
                let what = if width == 4 { "IPv4 address" } else { "IPv6 address" };
                error = Some(truncated(what, width, value.len()));
                break;
            }
            let ip = if width == 4 {
                IpAddr::from(<[u8; 4]>::try_from(&value[..4]).unwrap())
            } else {
                IpAddr::from(<[u8; 16]>::try_from(&value[..16]).unwrap())
            };
            if kind == IFA_LOCAL { local = Some(ip) } else { address = Some(ip) }
        }
        match error {
            Some(e) => prop_assert_eq!(result, Err(e)),
            None => prop_assert_eq!(result, Ok(local.or(address).map(|a| (header.index, a, header.prefix_len)))),
        }
    }

    /// A route reply, any bytes: parsed or refused, never a panic; a route
    /// it returns is a unicast one of the main table whose addresses are
    /// of the header's family.
    #[test]
    fn prop_route_replies(
        family in prop::sample::select(vec![libc::AF_INET as u8, libc::AF_INET6 as u8, 0]),
        kind in prop::sample::select(vec![RTN_UNICAST, 0, 2]),
        payload in header_then_attributes(RtMsg::LEN, vec![RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE]),
    ) {
        let mut payload = payload;
        if payload.len() >= RtMsg::LEN {
            payload[0] = family;
            payload[7] = kind;
        }
        if let Ok(Some(route)) = parse_route(&payload) {
            let (header, _) = RtMsg::parse(&payload).unwrap();
            prop_assert_eq!(header.kind, RTN_UNICAST);
            prop_assert_eq!(header.flags & RTM_F_CLONED, 0);
            let v4 = header.family == libc::AF_INET as u8;
            for ip in route.destination.map(|d| d.0).into_iter().chain(route.gateway) {
                prop_assert_eq!(ip.is_ipv4(), v4);
            }
            prop_assert_eq!(route.destination.is_some(), route.destination.is_some_and(|d| d.1 == header.dst_len && d.1 != 0));
        }
    }
}
