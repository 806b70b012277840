//! Converter properties.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use ipnet::{IpNet, Ipv4Net};
use kokoa_core::{
    ApplicationCheck, CertificateRef, ContentHash, EdgeConfig, EdgeContent, Hostname, Name,
    OriginId, Port, Tunnel, WgPublicKey,
};
use kokoa_nginx::{CertName, Layout, Listen};
use kokoa_wg::{InterfaceName, PrivateKey};
use proptest::prelude::*;

use crate::convert::convert;

fn public_key(seed: u8) -> WgPublicKey {
    WgPublicKey::parse(&PrivateKey::from_bytes([seed; 32]).public_key().to_string()).unwrap()
}

/// A tunnel to origin number `n` (0-based): subnet 10.0.(n+1).0/24.
fn tunnel(n: u8, endpoint: bool) -> Tunnel {
    let octet = n + 1;
    Tunnel {
        origin_id: OriginId::parse(&format!("org_{n}")).unwrap(),
        origin_name: Name::parse(&format!("origin-{n}")).unwrap(),
        address: Ipv4Net::new(Ipv4Addr::new(10, 0, octet, 10), 24).unwrap(),
        origin_ip: Ipv4Addr::new(10, 0, octet, 1),
        origin_public_key: public_key(100 + n),
        listen_port: Port::new(51820 + u16::from(octet)).unwrap(),
        origin_endpoint: endpoint.then(|| ([192, 0, 2, octet], 51820).into()),
        application_check: None,
        origin_next_public_key: None,
    }
}

/// A configuration with one tunnel per entry of `checks`, each with that application check.
pub(crate) fn config_with_tunnels(checks: &[Option<ApplicationCheck>]) -> EdgeConfig {
    let tunnels = (0u8..)
        .zip(checks)
        .map(|(n, check)| Tunnel {
            application_check: *check,
            ..tunnel(n, false)
        })
        .collect();
    EdgeConfig::new(EdgeContent {
        tunnels,
        ..EdgeContent::default()
    })
    .unwrap()
}

prop_compose! {
    /// A configuration with up to 30 routes over up to 5 origins, some unavailable, some
    /// with certificates (wildcards too).
    fn arb_config()(
        origins in 0u8..=5,
        names in prop::collection::btree_set("[a-z]{1,6}\\.(hoge|fuga)\\.com", 0..30),
        picks in prop::collection::vec((any::<u8>(), any::<bool>(), 1u16.., any::<bool>()), 30),
        wildcard in any::<bool>(),
    ) -> EdgeConfig {
        let mut content = EdgeContent::default();
        for (name, (origin, down, port, _)) in names.iter().zip(&picks) {
            let octet = if origins == 0 { 1 } else { origin % origins + 1 };
            let host = Hostname::parse(name).unwrap();
            content.routes.insert(host.clone(), SocketAddrV4::new(Ipv4Addr::new(10, 0, octet, 1), *port));
            if *down {
                content.unavailable.insert(host);
            }
        }
        content.tunnels = (0..origins).map(|n| tunnel(n, picks[usize::from(n)].3)).collect();
        let exact: BTreeSet<Hostname> = content
            .routes
            .keys()
            .zip(&picks)
            .filter(|(_, p)| p.3)
            .map(|(h, _)| h.clone())
            .collect();
        let mut certificates = vec![CertificateRef {
            name: Name::parse("exact").unwrap(),
            hostnames: exact,
            sha256: ContentHash::of(b"exact"),
        }];
        if wildcard {
            certificates.push(CertificateRef {
                name: Name::parse("wild-fuga").unwrap(),
                hostnames: [Hostname::parse("*.fuga.com").unwrap()].into(),
                sha256: ContentHash::of(b"wild"),
            });
        }
        content.certificates = certificates;
        EdgeConfig::new(content).unwrap()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn converter_keeps_every_route_and_tunnel(config in arb_config(), installed in any::<[bool; 2]>()) {
        let is_installed = |c: &CertificateRef| match c.name.as_str() {
            "exact" => installed[0],
            _ => installed[1],
        };
        let key = PrivateKey::from_bytes([7; 32]);
        let desired = convert(&config, &key, Listen::default(), &is_installed).unwrap();
        let content = config.content();

        // Every route appears once, to its backend; unavailable ones are marked.
        prop_assert_eq!(desired.site.routes.len(), content.routes.len());
        let by_name: BTreeMap<_, _> = desired.site.routes.iter().map(|r| (&r.hostname, r)).collect();
        prop_assert_eq!(by_name.len(), content.routes.len());
        for (host, backend) in &content.routes {
            let route = by_name[host];
            prop_assert_eq!(route.backend, (*backend).into());
            prop_assert_eq!(route.available, !content.unavailable.contains(host));
            // A certificate only when installed and covering the name, the exact one first.
            let want = content
                .certificates
                .iter()
                .filter(|c| is_installed(c))
                .find(|c| c.hostnames.iter().any(|h| h.covers(host)))
                .map(|c| CertName::parse(c.name.as_str()).unwrap());
            prop_assert_eq!(&route.certificate, &want);
        }

        // One interface per origin, names unique, each the origin's only peer at its /32.
        prop_assert_eq!(desired.tunnels.len(), content.tunnels.len());
        let names: BTreeSet<&InterfaceName> = desired.tunnels.iter().map(|t| &t.interface.name).collect();
        prop_assert_eq!(names.len(), desired.tunnels.len());
        for (plan, tunnel) in desired.tunnels.iter().zip(&content.tunnels) {
            prop_assert_eq!(&plan.interface.name, &InterfaceName::for_origin(tunnel.origin_id.as_str()));
            prop_assert!(plan.interface.name.as_str().starts_with(kokoa_wg::apply::MANAGED_PREFIX));
            let wg = &plan.interface.config;
            prop_assert_eq!(&wg.interface.addresses, &vec![IpNet::V4(tunnel.address)]);
            prop_assert_eq!(wg.interface.listen_port, Some(tunnel.listen_port.get()));
            prop_assert_eq!(wg.interface.mtu, Some(1420));
            prop_assert_eq!(wg.peers.len(), 1);
            let peer = &wg.peers[0];
            prop_assert_eq!(peer.public_key.to_string(), tunnel.origin_public_key.as_str());
            prop_assert_eq!(&peer.allowed_ips, &vec![IpNet::V4(Ipv4Net::from(tunnel.origin_ip))]);
            prop_assert_eq!(peer.endpoint.is_some(), tunnel.origin_endpoint.is_some());
            prop_assert_eq!(peer.persistent_keepalive.is_some(), tunnel.origin_endpoint.is_some());
            prop_assert_eq!(&wg.interface.private_key, &key, "the edge's own key");
        }

        // nginx accepts the rendering.
        desired.site.render(&Layout::new("/srv/kokoa-edge-test").unwrap()).unwrap();
    }
}

#[test]
fn wildcard_certificate_covers_one_label_only() {
    let mut content = EdgeContent::default();
    for name in ["wiki.fuga.com", "a.wiki.fuga.com"] {
        content.routes.insert(
            Hostname::parse(name).unwrap(),
            "10.0.1.1:80".parse().unwrap(),
        );
    }
    content.certificates = vec![CertificateRef {
        name: Name::parse("wild").unwrap(),
        hostnames: [Hostname::parse("*.fuga.com").unwrap()].into(),
        sha256: ContentHash::of(b"x"),
    }];
    let config = EdgeConfig::new(content).unwrap();
    let key = PrivateKey::generate();
    let desired = convert(&config, &key, Listen::default(), &|_| true).unwrap();
    let certs: BTreeMap<&str, Option<&str>> = desired
        .site
        .routes
        .iter()
        .map(|r| {
            (
                r.hostname.as_str(),
                r.certificate.as_ref().map(CertName::as_str),
            )
        })
        .collect();
    assert_eq!(certs["wiki.fuga.com"], Some("wild"));
    assert_eq!(certs["a.wiki.fuga.com"], None);
}
