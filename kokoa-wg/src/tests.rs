//! Render/parse and topology cases that span modules.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    num::{NonZeroU16, NonZeroU32},
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

use crate::*;

const PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
const PEER_A: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const PEER_B: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";
const PSK: &str = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=";

fn sample() -> Config {
    let mut interface = Interface::new(PRIVATE.parse().unwrap());
    interface.comment = Some(Comment::new("origin: home-server").unwrap());
    interface.addresses = vec![
        "10.0.1.1/24".parse().unwrap(),
        "fd00::1/64".parse().unwrap(),
    ];
    interface.listen_port = Some(51820);
    interface.mtu = Some(1420);
    interface.fwmark = NonZeroU32::new(0xca6c);
    let mut a = Peer::new(PEER_A.parse().unwrap());
    a.comment = Some(Comment::new("edge: sgp1-01").unwrap());
    a.preshared_key = Some(PSK.parse().unwrap());
    a.allowed_ips = vec![
        "10.0.1.10/32".parse().unwrap(),
        "fd00::a/128".parse().unwrap(),
    ];
    a.endpoint = Some("[2001:db8::1]:51821".parse().unwrap());
    a.persistent_keepalive = Some(PERSISTENT_KEEPALIVE);
    let mut b = Peer::new(PEER_B.parse().unwrap());
    b.endpoint = Some("edge2.example.net:51821".parse().unwrap());
    Config::new(interface, vec![a, b])
}

const SAMPLE_WG_QUICK: &str = "\
[Interface]
# origin: home-server
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.0.1.1/24, fd00::1/64
ListenPort = 51820
MTU = 1420
FwMark = 0xca6c

[Peer]
# edge: sgp1-01
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
PresharedKey = FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=
AllowedIPs = 10.0.1.10/32, fd00::a/128
Endpoint = [2001:db8::1]:51821
PersistentKeepalive = 25

[Peer]
PublicKey = TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=
Endpoint = edge2.example.net:51821
";

fn setconf_part(config: &Config) -> Config {
    let mut config = config.clone();
    config.interface.addresses.clear();
    config.interface.mtu = None;
    config
}

fn parse_err(text: &str, format: Format) -> String {
    Config::parse(text, format).unwrap_err().to_string()
}

#[test]
fn renders_both_formats() {
    let config = sample();
    assert_eq!(config.render(Format::WgQuick), SAMPLE_WG_QUICK);
    let setconf = config.render(Format::SetConf);
    assert_eq!(
        setconf,
        SAMPLE_WG_QUICK
            .replace("Address = 10.0.1.1/24, fd00::1/64\n", "")
            .replace("MTU = 1420\n", "")
    );
    assert_eq!(
        Config::parse(SAMPLE_WG_QUICK, Format::WgQuick).unwrap(),
        config
    );
    assert_eq!(
        Config::parse(&setconf, Format::SetConf).unwrap(),
        setconf_part(&config)
    );
}

#[test]
fn reads_what_the_tools_write_and_accept() {
    // `wg showconf` style plus the liberties `wg` allows: any case, inline comments, bare
    // addresses, repeated list keys, `off`, decimal marks.
    let text = format!(
        "# file comment, kept by nobody\n\
         [interface]\n\
         listenport=51820\n\
         fwmark = 51820 # decimal\n\
         privatekey = {PRIVATE}\n\
         \n\
         [PEER]\n\
         \t# first comment wins\n\
         # second comment is dropped\n\
         PublicKey = {PEER_A}\n\
         AllowedIPs = 10.0.1.10, 10.0.2.0/24\n\
         AllowedIPs = fd00::a\n\
         AllowedIPs =\n\
         PersistentKeepalive = off\n"
    );
    let config = Config::parse(&text, Format::SetConf).unwrap();
    assert_eq!(config.interface.fwmark, NonZeroU32::new(51820));
    assert_eq!(config.interface.comment, None);
    let peer = &config.peers[0];
    assert_eq!(
        peer.comment.as_ref().unwrap().as_str(),
        "first comment wins"
    );
    let want: Vec<IpNet> = ["10.0.1.10/32", "10.0.2.0/24", "fd00::a/128"]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(peer.allowed_ips, want);
    assert_eq!(peer.persistent_keepalive, None);
    let zero = text.replace("= off", "= 0").replace("51820 #", "off #");
    let config = Config::parse(&zero, Format::SetConf).unwrap();
    assert_eq!(
        (
            config.interface.fwmark,
            config.peers[0].persistent_keepalive
        ),
        (None, None)
    );
}

#[test]
fn errors_name_the_line_and_never_a_secret() {
    let head = format!("[Interface]\nPrivateKey = {PRIVATE}\n");
    let cases = [
        (
            format!("{head}PostUp = iptables -F\n"),
            "line 3: `PostUp` is not supported by kokoa-wg (in `PostUp = iptables -F`)",
        ),
        (
            format!("{head}Address = 10.0.1.1/24\n"),
            "line 3: `Address` is a wg-quick key, not part of the `wg setconf` format",
        ),
        (
            format!("{head}ListenPort = 1\nlistenport = 2\n"),
            "line 4: `ListenPort` is given twice (in `listenport = 2`)",
        ),
        (
            format!("{head}ListenPort = 70000\n"),
            "line 3: \"70000\" is not a port number (0-65535)",
        ),
        (
            format!("{head}FwMark = 0xZZ\n"),
            "line 3: \"0xZZ\" is not a 32-bit mark",
        ),
        (
            format!("{head}PublicKey = {PEER_A}\n"),
            "line 3: `PublicKey` belongs in [Peer], not [Interface]",
        ),
        (
            format!("ListenPort = 1\n{head}"),
            "line 1: `ListenPort` outside a section",
        ),
        (
            format!("{head}[Interface]\n"),
            "line 3: a second [Interface] section",
        ),
        (format!("{head}[Wat]\n"), "line 3: unknown section"),
        (format!("{head}junk\n"), "line 3: expected `Key = value`"),
        (
            format!("{head}\n[Peer]\nEndpoint = 1.2.3.4:1\n"),
            "line 4: [Peer] has no PublicKey",
        ),
        (
            format!("{head}[Peer]\nPublicKey = {PEER_A}\n[Peer]\nPublicKey = {PEER_A}\n"),
            "line 5: peer xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg= is already defined at line 3",
        ),
        (
            format!("{head}[Peer]\nPublicKey = {PEER_A}\nEndpoint = 1.2.3.4\n"),
            "line 5: invalid endpoint \"1.2.3.4\": the \":port\" is missing",
        ),
        (
            format!("{head}[Peer]\nPublicKey = {PEER_A}\nAllowedIPs = 10.0.0.1/33\n"),
            "line 5: \"10.0.0.1/33\" is not an address",
        ),
        (
            "[Interface]\nListenPort = 1\n".to_owned(),
            "line 1: [Interface] has no PrivateKey",
        ),
        (
            format!("[Peer]\nPublicKey = {PEER_A}\n"),
            "line 1: the file has no [Interface] section",
        ),
        (String::new(), "line 1: the file has no [Interface] section"),
    ];
    for (text, want) in cases {
        let err = parse_err(&text, Format::SetConf);
        assert!(err.starts_with(want), "{text:?}\n got: {err}\nwant: {want}");
        assert!(!err.contains(PRIVATE), "{err}");
    }

    // A broken secret is named but not repeated, wherever it was pasted.
    let typo = PRIVATE.replace('+', "-");
    let err = parse_err(
        &format!("[Interface]\nPrivateKey = {typo}\n"),
        Format::WgQuick,
    );
    assert_eq!(
        err,
        "line 2: invalid private key (value not shown): the character at position 7 is not base64 \
         (in `PrivateKey = <redacted>`)"
    );
    let err = parse_err(&format!("[Interface]\n{PRIVATE}\n"), Format::WgQuick);
    assert!(!err.contains(&PRIVATE[..20]), "{err}");
    let err = parse_err(
        &format!("[Interface]\nPrivate Key = {PRIVATE}\n"),
        Format::WgQuick,
    );
    assert!(
        !err.contains(&PRIVATE[..20]) && err.contains("<redacted>"),
        "{err}"
    );
    let err = parse_err(
        &format!("[Interface]\nPresharedKey = {PSK}\n"),
        Format::WgQuick,
    );
    assert!(err.ends_with("(in `PresharedKey = <redacted>`)"), "{err}");
}

#[test]
fn comments_cannot_inject_lines() {
    for text in [
        "a\nPostUp = rm -rf /",
        "a\rb",
        "a\u{2028}b",
        "a\u{85}b",
        "a\0b",
        "   ",
    ] {
        assert!(Comment::new(text).is_err(), "{text:?}");
    }
    let key = PrivateKey::generate();
    let origin = Origin::new(
        "id",
        "home\n[Peer]",
        "10.0.1.0/24".parse().unwrap(),
        Ipv4Addr::new(10, 0, 1, 1),
        key.public_key(),
    );
    let err = Topology::new(origin, vec![], Direction::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("line break"), "{err}");
}

fn edge(name: &str, key: &PrivateKey, last_octet: u8) -> Edge {
    Edge::new(
        name,
        key.public_key(),
        Host::from(IpAddr::V4(Ipv4Addr::new(203, 0, 113, last_octet))),
        Ipv4Addr::new(10, 0, 1, last_octet),
        BASE_LISTEN_PORT,
    )
}

fn origin(key: &PrivateKey) -> Origin {
    Origin::new(
        "origin-id-1",
        "home-server",
        "10.0.1.0/24".parse().unwrap(),
        Ipv4Addr::new(10, 0, 1, 1),
        key.public_key(),
    )
}

#[test]
fn origin_dials_out_by_default() {
    let (o, e1, e2) = (
        PrivateKey::generate(),
        PrivateKey::generate(),
        PrivateKey::generate(),
    );
    let edges = vec![edge("sgp1-01", &e1, 10), edge("fra1-01", &e2, 11)];
    let topology = Topology::new(origin(&o), edges, Direction::default()).unwrap();

    let wg0 = topology.origin_config(&o).unwrap();
    assert_eq!(wg0.name.as_str(), "wg0");
    let config = &wg0.config;
    assert_eq!(config.interface.listen_port, None);
    assert_eq!(config.interface.addresses, ["10.0.1.1/24".parse().unwrap()]);
    assert_eq!(config.peers.len(), 2);
    for (peer, (key, octet)) in config.peers.iter().zip([(&e1, 10), (&e2, 11)]) {
        assert_eq!(peer.public_key, key.public_key());
        assert_eq!(
            peer.allowed_ips,
            [format!("10.0.1.{octet}/32").parse().unwrap()]
        );
        assert_eq!(
            peer.endpoint.as_ref().unwrap().to_string(),
            format!("203.0.113.{octet}:51820")
        );
        assert_eq!(peer.persistent_keepalive, Some(PERSISTENT_KEEPALIVE));
    }

    let on_edge = topology.edge_config("fra1-01", &e2).unwrap();
    assert_eq!(on_edge.name, InterfaceName::for_origin("origin-id-1"));
    assert_eq!(on_edge.file_name(), format!("{}.conf", on_edge.name));
    let config = &on_edge.config;
    assert_eq!(config.interface.listen_port, Some(51820));
    assert_eq!(
        config.interface.addresses,
        ["10.0.1.11/24".parse().unwrap()]
    );
    assert_eq!(
        config.interface.comment.as_ref().unwrap().as_str(),
        "origin: home-server"
    );
    let [peer] = config.peers.as_slice() else {
        panic!("one peer: {config:?}")
    };
    assert_eq!(peer.public_key, o.public_key());
    assert_eq!(peer.allowed_ips, ["10.0.1.1/32".parse().unwrap()]);
    assert_eq!((&peer.endpoint, peer.persistent_keepalive), (&None, None));
}

#[test]
fn edges_can_dial_in_instead() {
    let (o, e1) = (PrivateKey::generate(), PrivateKey::generate());
    let at: Endpoint = "home.example.org:51820".parse().unwrap();
    let topology = Topology::new(
        origin(&o),
        vec![edge("sgp1-01", &e1, 10)],
        Direction::EdgesDialIn(at.clone()),
    )
    .unwrap();
    let wg0 = topology.origin_config(&o).unwrap().config;
    assert_eq!(wg0.interface.listen_port, Some(51820));
    assert_eq!(
        (&wg0.peers[0].endpoint, wg0.peers[0].persistent_keepalive),
        (&None, None)
    );
    let on_edge = topology.edge_config("sgp1-01", &e1).unwrap().config;
    assert_eq!(on_edge.interface.listen_port, Some(51820));
    assert_eq!(on_edge.peers[0].endpoint, Some(at));
    assert_eq!(
        on_edge.peers[0].persistent_keepalive,
        Some(PERSISTENT_KEEPALIVE)
    );
}

#[test]
fn topology_mistakes_are_refused_with_the_culprit() {
    let (o, e1, e2) = (
        PrivateKey::generate(),
        PrivateKey::generate(),
        PrivateKey::generate(),
    );
    let try_edges = |edges: Vec<Edge>| {
        Topology::new(origin(&o), edges, Direction::default())
            .unwrap_err()
            .to_string()
    };
    let mut outside = edge("a", &e1, 10);
    outside.tunnel_ip = Ipv4Addr::new(10, 0, 2, 10);
    let mut broadcast = edge("a", &e1, 10);
    broadcast.tunnel_ip = Ipv4Addr::new(10, 0, 1, 255);
    let mut on_origin = edge("a", &e1, 10);
    on_origin.tunnel_ip = Ipv4Addr::new(10, 0, 1, 1);
    let mut origin_key = edge("a", &e1, 10);
    origin_key.public_key = o.public_key();
    for (edges, want) in [
        (
            vec![outside],
            "edge \"a\": tunnel address 10.0.2.10 is outside of subnet 10.0.1.0/24",
        ),
        (
            vec![broadcast],
            "edge \"a\": tunnel address 10.0.1.255 is the broadcast address of subnet 10.0.1.0/24",
        ),
        (
            vec![on_origin],
            "origin \"home-server\" and edge \"a\" have the same tunnel address 10.0.1.1",
        ),
        (
            vec![origin_key],
            "origin \"home-server\" and edge \"a\" have the same public key",
        ),
        (
            vec![edge("a", &e1, 10), edge("b", &e2, 10)],
            "edge \"a\" and edge \"b\" have the same tunnel address 10.0.1.10",
        ),
        (
            vec![edge("a", &e1, 10), edge("b", &e1, 11)],
            "edge \"a\" and edge \"b\" have the same public key",
        ),
        (
            vec![edge("a", &e1, 10), edge("a", &e2, 11)],
            "edge \"a\" and edge \"a\" have the same name \"a\"",
        ),
    ] {
        let err = try_edges(edges);
        assert!(err.starts_with(want), "got: {err}\nwant: {want}");
    }
    let mut network = origin(&o);
    network.tunnel_ip = Ipv4Addr::new(10, 0, 1, 0);
    let err = Topology::new(network, vec![], Direction::default()).unwrap_err();
    assert!(err.to_string().contains("is the network address"), "{err}");

    let topology =
        Topology::new(origin(&o), vec![edge("a", &e1, 10)], Direction::default()).unwrap();
    let err = topology.edge_config("b", &e1).unwrap_err().to_string();
    assert_eq!(
        err,
        "no edge named \"b\" in the topology of origin \"home-server\""
    );
    let err = topology.edge_config("a", &e2).unwrap_err().to_string();
    assert!(
        err.contains(&e2.public_key().to_string()) && err.contains(&e1.public_key().to_string()),
        "{err}"
    );
    assert!(topology.origin_config(&e1).is_err());
}

#[test]
fn interface_names() {
    for bad in [
        "",
        "a-very-long-name",
        "wg 0",
        "wg/0",
        "wg:0",
        ".",
        "..",
        "é",
    ] {
        assert!(InterfaceName::new(bad).is_err(), "{bad:?}");
    }
    for good in ["wg0", "kk0123456789ab", "a_=+.-Z", "123456789012345"] {
        assert_eq!(InterfaceName::new(good).unwrap().as_str(), good);
    }
    // Stable: the name is part of every edge's configuration, and must not change between
    // releases.
    assert_eq!(
        InterfaceName::for_origin("origin-id-1").as_str(),
        "kkcfe963229d0b"
    );
}

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0..=32u8)
            .prop_map(|(a, p)| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(a), p))),
        (any::<u128>(), 0..=128u8)
            .prop_map(|(a, p)| IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(a), p))),
    ]
}

fn comment() -> impl Strategy<Value = Option<Comment>> {
    proptest::option::of("\\PC{1,30}".prop_filter_map("not a comment", |t| Comment::new(&t).ok()))
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    let host = prop_oneof![
        any::<IpAddr>().prop_map(Host::from),
        "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?\\.[a-z]{2,6}".prop_map(|n| Host::parse(&n).unwrap()),
    ];
    (host, any::<NonZeroU16>()).prop_map(|(host, port)| Endpoint::new(host, port))
}

fn peer() -> impl Strategy<Value = Peer> {
    (
        comment(),
        any::<[u8; 32]>(),
        proptest::option::of(any::<[u8; 32]>()),
        proptest::collection::vec(net(), 0..4),
        proptest::option::of(endpoint()),
        any::<Option<NonZeroU16>>(),
    )
        .prop_map(
            |(comment, key, psk, allowed_ips, endpoint, keepalive)| Peer {
                comment,
                public_key: PublicKey::from_bytes(key),
                preshared_key: psk.map(PresharedKey::from_bytes),
                allowed_ips,
                endpoint,
                persistent_keepalive: keepalive,
            },
        )
}

fn config() -> impl Strategy<Value = Config> {
    (
        comment(),
        any::<[u8; 32]>(),
        proptest::collection::vec(net(), 0..4),
        any::<Option<u16>>(),
        any::<Option<u16>>(),
        any::<Option<NonZeroU32>>(),
        proptest::collection::vec(peer(), 0..4),
    )
        .prop_map(
            |(comment, key, addresses, listen_port, mtu, fwmark, mut peers)| {
                let mut seen = std::collections::HashSet::new();
                peers.retain(|p| seen.insert(p.public_key));
                Config {
                    interface: Interface {
                        comment,
                        private_key: PrivateKey::from_bytes(key),
                        addresses,
                        listen_port,
                        mtu,
                        fwmark,
                    },
                    peers,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn wg_quick_round_trips(config in config()) {
        let text = config.render(Format::WgQuick);
        prop_assert_eq!(Config::parse(&text, Format::WgQuick)?, config);
    }

    #[test]
    fn setconf_round_trips(config in config()) {
        let text = config.render(Format::SetConf);
        prop_assert_eq!(Config::parse(&text, Format::SetConf)?, setconf_part(&config));
    }

    #[test]
    fn parsing_any_text_is_stable(text in "(\\[Interface\\]|\\[Peer\\]|#|=|[A-Za-z]{1,12}|[ ,./:0-9]|\n){0,60}") {
        if let Ok(config) = Config::parse(&text, Format::WgQuick) {
            let again = Config::parse(&config.render(Format::WgQuick), Format::WgQuick)?;
            prop_assert_eq!(again, config);
        }
    }

    #[test]
    fn interface_names_are_valid_and_distinct(a in "\\PC{0,40}", b in "\\PC{0,40}") {
        let (na, nb) = (InterfaceName::for_origin(&a), InterfaceName::for_origin(&b));
        prop_assert_eq!(na.as_str().len(), 14);
        prop_assert_eq!(InterfaceName::new(na.as_str())?, na);
        prop_assert_eq!(InterfaceName::for_origin(&a) == nb, a == b);
    }
}

/// A configuration whose peers each own distinct addresses (as WireGuard has it), with one
/// new key prepared, without addresses, per change.
fn rotating() -> impl Strategy<Value = (Config, Vec<KeyChange>, Vec<bool>)> {
    (
        config(),
        proptest::collection::vec(any::<(usize, [u8; 32], bool)>(), 0..4),
    )
        .prop_map(|(mut config, picks)| {
            let mut owned = std::collections::HashSet::new();
            for peer in &mut config.peers {
                peer.allowed_ips.retain(|net| owned.insert(*net));
            }
            let (mut changes, mut shaken) = (Vec::new(), Vec::new());
            let original = config.peers.len();
            for (pick, key, shook) in picks {
                if original == 0 {
                    break;
                }
                let from = config.peers[pick % original].public_key;
                let to = PublicKey::from_bytes(key);
                if config.peers.iter().any(|p| p.public_key == to)
                    || changes.iter().any(|c: &KeyChange| c.from == from)
                {
                    continue;
                }
                config.peers.push(Peer::new(to));
                changes.push(KeyChange { from, to });
                shaken.push(shook);
            }
            (config, changes, shaken)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Settling moves every address of a replaced peer to its successor and no other
    /// address, keeps every address owned by exactly one peer, removes exactly the peers
    /// whose successor has a handshake, and is idempotent.
    #[test]
    fn settling_key_changes_keeps_every_address_owned_once((config, changes, shaken) in rotating()) {
        let handshaken = |key: &PublicKey| {
            changes.iter().zip(&shaken).any(|(c, s)| *s && c.to == *key)
        };
        let settled = config.settle(&changes, handshaken);
        let owners = |c: &Config| {
            let mut map = std::collections::BTreeMap::new();
            for peer in &c.peers {
                for net in &peer.allowed_ips {
                    prop_assert!(map.insert(net.to_string(), peer.public_key).is_none(), "{net} owned twice");
                }
            }
            Ok(map)
        };
        let before = owners(&config)?;
        let after = owners(&settled)?;
        prop_assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
        for (net, owner) in &before {
            let moved = changes.iter().zip(&shaken).find(|(c, s)| **s && c.from == *owner);
            let expected = moved.map_or(*owner, |(c, _)| c.to);
            prop_assert_eq!(after[net], expected);
        }
        for (change, shook) in changes.iter().zip(&shaken) {
            let present = |key| settled.peers.iter().any(|p| p.public_key == key);
            prop_assert_eq!(present(change.from), !shook);
            prop_assert!(present(change.to));
        }
        prop_assert_eq!(settled.settle(&changes, handshaken), settled);
        prop_assert_eq!(config.settle(&changes, |_| false), config);
    }
}
