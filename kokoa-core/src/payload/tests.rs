use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A valid WireGuard key that differs for each `i`.
fn key(i: u8) -> String {
    let c = char::from(ALPHABET[usize::from(i) % 64]);
    format!("{}A=", c.to_string().repeat(42))
}

fn host(s: &str) -> Hostname {
    Hostname::parse(s).unwrap()
}

fn tunnel(i: u8) -> Tunnel {
    Tunnel {
        origin_id: OriginId::parse(&format!("org_{i}")).unwrap(),
        origin_name: Name::parse(&format!("origin-{i}")).unwrap(),
        address: format!("10.0.{i}.10/24").parse().unwrap(),
        origin_ip: Ipv4Addr::new(10, 0, i, 1),
        origin_public_key: WgPublicKey::parse(&key(i)).unwrap(),
        listen_port: Port::new(51_820 + u16::from(i)).unwrap(),
        origin_endpoint: None,
        application_check: None,
        origin_next_public_key: None,
    }
}

fn spec_content() -> EdgeContent {
    EdgeContent {
        routes: [
            (host("wiki.fuga.com"), "10.0.2.1:8000".parse().unwrap()),
            (host("app.hoge.com"), "10.0.1.1:8080".parse().unwrap()),
        ]
        .into(),
        tunnels: vec![tunnel(2), tunnel(1)],
        certificates: vec![CertificateRef {
            name: Name::parse("wildcard-fuga-com").unwrap(),
            hostnames: [host("*.fuga.com")].into(),
            sha256: ContentHash::of(b"pem"),
        }],
        rate_limits: RateLimits::default(),
        unavailable: [host("wiki.fuga.com")].into(),
        acme_challenges: BTreeMap::new(),
        wireguard_public_key: Some(WgPublicKey::parse(&key(100)).unwrap()),
        wireguard_key_requested: false,
    }
}

fn invalid(content: EdgeContent) -> String {
    match EdgeConfig::new(content) {
        Err(e @ Error::InvalidEdgeConfig(_)) => e.to_string(),
        other => panic!("expected InvalidEdgeConfig, got {other:?}"),
    }
}

#[test]
fn serialises_in_the_spec_shape() {
    let config = EdgeConfig::new(spec_content()).unwrap();
    let v = serde_json::to_value(&config).unwrap();
    assert_eq!(v["config_hash"], config.config_hash().as_str());
    assert_eq!(v["config_hash"].as_str().unwrap().len(), 64);
    assert_eq!(
        v["routes"],
        json!({"app.hoge.com": "10.0.1.1:8080", "wiki.fuga.com": "10.0.2.1:8000"})
    );
    assert_eq!(v["hostnames"], json!(["app.hoge.com", "wiki.fuga.com"]));
    assert_eq!(
        v["rate_limits"],
        json!({"requests_per_second": 10, "burst": 20, "connections_per_address": 10})
    );
    assert_eq!(v["unavailable"], json!(["wiki.fuga.com"]));
    let origins: Vec<&Value> = v["tunnels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["origin_id"])
        .collect();
    assert_eq!(origins, ["org_1", "org_2"], "tunnels are sorted by origin");
    assert_eq!(v["tunnels"][0]["address"], "10.0.1.10/24");
    assert_eq!(v["wireguard_public_key"], key(100));
    assert!(
        v.get("wireguard_key_requested").is_none(),
        "false is left out: {v}"
    );
    let text = v.to_string();
    assert!(!text.contains("private"), "no private key travels: {text}");
}

#[test]
fn round_trips_and_verifies() {
    let config = EdgeConfig::new(spec_content()).unwrap();
    let text = serde_json::to_string(&config).unwrap();
    let back: EdgeConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, config);
    back.verify_hash().unwrap();
}

#[test]
fn the_minimal_spec_payload_is_accepted() {
    let mut content = EdgeContent::default();
    content
        .routes
        .insert(host("app.hoge.com"), "10.100.1.1:8080".parse().unwrap());
    let hash = EdgeConfig::new(content).unwrap().config_hash().clone();
    let text = format!(
        r#"{{"config_hash": "{hash}", "routes": {{"app.hoge.com": "10.100.1.1:8080"}},
            "hostnames": ["app.hoge.com"]}}"#
    );
    let config: EdgeConfig = serde_json::from_str(&text).unwrap();
    config.verify_hash().unwrap();
    assert_eq!(config.content().rate_limits, RateLimits::default());
}

#[test]
fn a_tampered_payload_fails_verification() {
    let config = EdgeConfig::new(spec_content()).unwrap();
    let mut v = serde_json::to_value(&config).unwrap();
    v["routes"]["app.hoge.com"] = json!("10.0.1.1:9999");
    let tampered: EdgeConfig = serde_json::from_value(v).unwrap();
    let err = tampered.verify_hash().unwrap_err();
    assert!(matches!(err, Error::ConfigHashMismatch { .. }));
    let msg = err.to_string();
    assert!(msg.contains(config.config_hash().as_str()), "{msg}");
}

#[test]
fn a_key_request_is_part_of_the_hash() {
    let mut content = spec_content();
    let quiet = EdgeConfig::new(content.clone()).unwrap();
    content.wireguard_key_requested = true;
    let asking = EdgeConfig::new(content).unwrap();
    assert_ne!(asking.config_hash(), quiet.config_hash());
    let v = serde_json::to_value(&asking).unwrap();
    assert_eq!(v["wireguard_key_requested"], true);
}

#[test]
fn contradictions_are_rejected_naming_the_part() {
    let mut c = spec_content();
    c.unavailable.insert(host("gone.hoge.com"));
    assert!(invalid(c).contains("gone.hoge.com"));

    let mut c = spec_content();
    c.tunnels.push(tunnel(1));
    assert!(invalid(c).contains("org_1"));

    let mut c = spec_content();
    c.certificates.push(c.certificates[0].clone());
    assert!(invalid(c).contains("wildcard-fuga-com"));

    let mut c = spec_content();
    c.tunnels[0].listen_port = c.tunnels[1].listen_port;
    assert!(invalid(c).contains("listen port"));

    let mut c = spec_content();
    c.tunnels[0].address = "10.0.1.10/16".parse().unwrap();
    assert!(invalid(c).contains("overlapping"));

    let mut c = spec_content();
    c.tunnels[0].origin_ip = Ipv4Addr::new(10, 9, 9, 1);
    assert!(invalid(c).contains("10.9.9.1"));

    let mut c = spec_content();
    c.tunnels[0].address = "10.0.2.255/24".parse().unwrap();
    assert!(invalid(c).contains("10.0.2.255/24"));

    let mut c = spec_content();
    c.tunnels[0].origin_endpoint = Some("198.51.100.7:0".parse().unwrap());
    assert!(invalid(c).contains("198.51.100.7:0"));
}

#[test]
fn deserialising_validates() {
    let good = serde_json::to_value(EdgeConfig::new(spec_content()).unwrap()).unwrap();
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::from_value::<EdgeConfig>(v)
            .unwrap_err()
            .to_string()
    };
    let err = mutate(&|v| v["hostnames"] = json!(["app.hoge.com"]));
    assert!(err.contains("hostnames"), "{err}");
    let err = mutate(&|v| v["routes"] = json!({"app;hoge.com": "10.0.1.1:80"}));
    assert!(err.contains("app;hoge.com"), "{err}");
    let err = mutate(&|v| v["routes"]["app.hoge.com"] = json!("10.0.1.1"));
    assert!(err.contains("socket address"), "{err}");
    let err = mutate(&|v| v["config_hash"] = json!("sha256-of-this-payload"));
    assert!(err.contains("sha256-of-this-payload"), "{err}");
    let err = mutate(&|v| v["unavailable"] = json!(["nowhere.hoge.com"]));
    assert!(err.contains("nowhere.hoge.com"), "{err}");
    let err = mutate(&|v| v["rate_limits"]["requests_per_second"] = json!(0));
    assert!(err.contains("zero") || err.contains('0'), "{err}");
}

type Routes = Vec<(Hostname, SocketAddrV4)>;

/// Distinct host names with targets, then the same pairs in a shuffled order.
fn routes_twice() -> impl Strategy<Value = (Routes, Routes)> {
    proptest::collection::btree_map(
        "[a-z][a-z0-9]{0,8}\\.(hoge|fuga)\\.(com|net)",
        (any::<[u8; 4]>(), 1u16..),
        1..30,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(h, (ip, port))| (host(&h), SocketAddrV4::new(ip.into(), port)))
            .collect::<Vec<_>>()
    })
    .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
}

fn content_from(routes: Routes, tunnels: &[u8]) -> EdgeContent {
    EdgeContent {
        // Chosen by content, not position, so a shuffled list marks the same names.
        unavailable: routes
            .iter()
            .filter(|(_, t)| t.port() % 3 == 0)
            .map(|(h, _)| h.clone())
            .collect(),
        routes: routes.into_iter().collect(),
        tunnels: tunnels.iter().map(|i| tunnel(*i)).collect(),
        ..EdgeContent::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hash_ignores_insertion_order(
        (routes, shuffled) in routes_twice(),
        tunnels in Just((1u8..=20).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let a = EdgeConfig::new(content_from(routes, &(1..=20).collect::<Vec<_>>())).unwrap();
        let b = EdgeConfig::new(content_from(shuffled, &tunnels)).unwrap();
        prop_assert_eq!(a.config_hash(), b.config_hash());
        prop_assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    }

    #[test]
    fn any_route_change_changes_the_hash(
        (routes, _) in routes_twice(),
        pick in any::<prop::sample::Index>(),
        change in 0u8..4,
    ) {
        let before = EdgeConfig::new(content_from(routes.clone(), &[1])).unwrap();
        let mut content = content_from(routes, &[1]);
        let pairs: Vec<(Hostname, SocketAddrV4)> =
            content.routes.iter().map(|(h, t)| (h.clone(), *t)).collect();
        let (name, target) = pick.get(&pairs).clone();
        match change {
            0 => {
                let port = if target.port() == u16::MAX { 1 } else { target.port() + 1 };
                content.routes.insert(name, SocketAddrV4::new(*target.ip(), port));
            }
            1 => {
                let ip = Ipv4Addr::from(u32::from(*target.ip()) ^ 1);
                content.routes.insert(name, SocketAddrV4::new(ip, target.port()));
            }
            2 => {
                content.unavailable.remove(&name);
                content.routes.remove(&name);
            }
            _ => {
                if !content.unavailable.remove(&name) {
                    content.unavailable.insert(name);
                }
            }
        }
        let after = EdgeConfig::new(content).unwrap();
        prop_assert_ne!(before.config_hash(), after.config_hash());
    }

    #[test]
    fn serde_round_trip_keeps_everything(
        (routes, _) in routes_twice(),
        tunnels in proptest::collection::btree_set(0u8..=255, 0..5),
        // Built from address and port: JSON has no place for IPv6 flow info.
        endpoint in proptest::option::of(
            (any::<std::net::IpAddr>(), 1u16..).prop_map(SocketAddr::from),
        ),
    ) {
        let mut content = content_from(routes, &tunnels.into_iter().collect::<Vec<_>>());
        if let Some(t) = content.tunnels.first_mut() {
            t.origin_endpoint = endpoint;
        }
        let config = EdgeConfig::new(content).unwrap();
        let text = serde_json::to_string(&config).unwrap();
        let back: EdgeConfig = serde_json::from_str(&text).unwrap();
        back.verify_hash().unwrap();
        prop_assert_eq!(back, config);
    }
}

#[test]
fn acme_challenges_are_checked_and_absent_when_empty() {
    let without = EdgeConfig::new(spec_content()).unwrap();
    let v = serde_json::to_value(&without).unwrap();
    assert!(v.get("acme_challenges").is_none(), "{v}");

    let mut content = spec_content();
    content
        .acme_challenges
        .insert("tok-1_A".into(), "tok-1_A.thumb_print-9".into());
    let with = EdgeConfig::new(content).unwrap();
    assert_ne!(with.config_hash(), without.config_hash());
    let v = serde_json::to_value(&with).unwrap();
    assert_eq!(
        v["acme_challenges"],
        json!({"tok-1_A": "tok-1_A.thumb_print-9"})
    );

    for (token, key_authorization, needle) in [
        ("../etc/passwd", "../etc/passwd.x", "\"../etc/passwd\""),
        ("", ".x", "\"\""),
        ("tok", "other.thumb", "tok.<base64url thumbprint>"),
        ("tok", "tok.", "tok.<base64url thumbprint>"),
        ("tok", "tok.a b", "tok.<base64url thumbprint>"),
    ] {
        let mut content = spec_content();
        content
            .acme_challenges
            .insert(token.into(), key_authorization.into());
        let err = invalid(content);
        assert!(err.contains(needle), "{token:?}: {err}");
    }
    let mut text = serde_json::to_value(&with).unwrap();
    text["acme_challenges"] = json!({"a/b": "a/b.c"});
    assert!(serde_json::from_value::<EdgeConfig>(text).is_err());
}

proptest! {
    #[test]
    fn acme_challenges_round_trip(
        challenges in proptest::collection::btree_map(
            "[A-Za-z0-9_-]{1,64}", "[A-Za-z0-9_-]{1,64}", 0..6),
    ) {
        let mut content = spec_content();
        content.acme_challenges = challenges
            .into_iter()
            .map(|(token, thumbprint)| (token.clone(), format!("{token}.{thumbprint}")))
            .collect();
        let config = EdgeConfig::new(content).unwrap();
        let text = serde_json::to_string(&config).unwrap();
        let back: EdgeConfig = serde_json::from_str(&text).unwrap();
        back.verify_hash().unwrap();
        prop_assert_eq!(back, config);
    }
}

proptest! {
    /// The wire form built from the hashed bytes is byte for byte what serialising the
    /// configuration gives, and reads back as the same configuration.
    #[test]
    fn json_from_the_hashed_bytes_is_the_serialised_configuration(
        (routes, _) in routes_twice(),
        tunnels in Just((1u8..=3).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        let content = content_from(routes, &tunnels);
        let (config, json) = EdgeConfig::new_with_json(content.clone()).unwrap();
        prop_assert_eq!(&config, &EdgeConfig::new(content).unwrap());
        prop_assert_eq!(&json, &serde_json::to_vec(&config).unwrap());
        let back: EdgeConfig = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(back, config);
    }

    /// The routes' addresses are written exactly as `Display` writes them, for every
    /// address and port (the edges compare hashes of these bytes).
    #[test]
    fn socket_text_is_display(ip in any::<u32>(), port in any::<u16>()) {
        let addr = SocketAddrV4::new(Ipv4Addr::from(ip), port);
        let mut buf = [0u8; 21];
        prop_assert_eq!(socket_text(&addr, &mut buf), addr.to_string());
    }
}

#[test]
fn json_of_an_empty_configuration() {
    let (config, json) = EdgeConfig::new_with_json(EdgeContent::default()).unwrap();
    assert_eq!(json, serde_json::to_vec(&config).unwrap());
}

#[test]
fn socket_text_of_the_longest_and_shortest_addresses() {
    let mut buf = [0u8; 21];
    let longest = SocketAddrV4::new(Ipv4Addr::new(255, 255, 255, 255), 65535);
    assert_eq!(socket_text(&longest, &mut buf), "255.255.255.255:65535");
    let shortest = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    assert_eq!(socket_text(&shortest, &mut buf), "0.0.0.0:0");
}
