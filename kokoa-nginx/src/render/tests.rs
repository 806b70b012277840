use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use kokoa_core::Hostname;
use proptest::prelude::*;

use super::*;
use crate::{CertName, Listen, RateLimits};

fn layout() -> Layout {
    Layout::new("/srv/kokoa").unwrap()
}

fn route(host: &str, backend: &str) -> Route {
    Route::new(host.parse().unwrap(), backend.parse().unwrap())
}

/// Reads back the entries of the map block that starts with `header`: (key, value) pairs
/// after the `hostnames;` and `default ...;` statements, which must come first.
fn read_map<'a>(conf: &'a str, header: &str) -> Vec<(&'a str, &'a str)> {
    let start = conf
        .find(&format!("map {header} {{\n"))
        .expect("map block present");
    let body = &conf[start..];
    let body = &body[body.find('\n').unwrap() + 1..body.find("\n}").unwrap()];
    let mut statements = body.lines().map(|l| {
        l.trim()
            .strip_suffix(';')
            .unwrap_or_else(|| panic!("not a statement: {l:?}"))
    });
    assert_eq!(statements.next(), Some("hostnames"));
    assert!(statements.next().unwrap().starts_with("default "));
    statements
        .map(|s| {
            let (key, value) = s.split_once(' ').expect("key and value");
            (key.trim_matches('"'), value.trim_matches('"'))
        })
        .collect()
}

fn statements(conf: &str) -> usize {
    conf.lines().filter(|l| l.trim_end().ends_with(';')).count()
}

#[test]
fn unavailable_page_is_inert_between_quotes() {
    assert!(!UNAVAILABLE_PAGE.contains(['"', '\\', '$']));
    assert!(UNAVAILABLE_PAGE.contains("Kokoa Proxy"));
}

#[test]
fn every_part_of_the_edge_is_rendered() {
    let mut down = route("down.hoge.com", "10.0.3.1:80");
    down.available = false;
    let site = EdgeSite::new(vec![
        route("app.hoge.com", "10.0.1.1:8080")
            .with_certificate(CertName::parse("app.hoge.com").unwrap()),
        down,
    ]);
    let conf = site.render(&layout()).unwrap();
    for line in [
        "listen 80 default_server;",
        "listen 443 ssl http2 default_server;",
        "server_name _;",
        "alias \"/srv/kokoa/acme-challenge/\";",
        "alias \"/srv/kokoa/health\";",
        "try_files /health =404;",
        "return 301 https://$host$request_uri;",
        "ssl_certificate \"/srv/kokoa/certs/fallback.crt\";",
        "ssl_certificate_key \"/srv/kokoa/certs/fallback.key\";",
        "listen 443 ssl http2;",
        "server_name \"app.hoge.com\";",
        "ssl_certificate \"/srv/kokoa/certs/app.hoge.com.crt\";",
        "ssl_certificate_key \"/srv/kokoa/certs/app.hoge.com.key\";",
        "upstream kk_10_0_1_1_8080 {",
        "server 10.0.1.1:8080;",
        "keepalive 32;",
        "keepalive_timeout 50s;",
        "upstream kk_10_0_3_1_80 {",
        "proxy_http_version 1.1;",
        "ssl_session_cache shared:kokoa_tls:10m;",
        "ssl_session_tickets on;",
        "ssl_early_data off;",
        "return 404;",
        "return 503;",
        "proxy_pass http://$kokoa_backend;",
        "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Proto https;",
        "proxy_set_header Connection $connection_upgrade;",
        "limit_req_zone $binary_remote_addr zone=kokoa_req:10m rate=10r/s;",
        "limit_req zone=kokoa_req burst=20 nodelay;",
        "limit_conn_zone $binary_remote_addr zone=kokoa_conn:10m;",
        "limit_conn kokoa_conn 10;",
    ] {
        assert!(
            conf.contains(&format!("    {line}\n")) || conf.contains(&format!("\n{line}\n")),
            "missing {line:?} in\n{conf}"
        );
    }
    assert_eq!(
        read_map(&conf, "$host $kokoa_unavailable"),
        [("down.hoge.com", "1")]
    );
    assert_eq!(
        read_map(&conf, "$host $kokoa_backend"),
        [
            ("app.hoge.com", "kk_10_0_1_1_8080"),
            ("down.hoge.com", "kk_10_0_3_1_80")
        ]
    );
    // Loaded at reload by its own server, so not chosen per handshake.
    assert_eq!(read_map(&conf, "$ssl_server_name $kokoa_cert"), []);
    assert!(conf.contains("    default \"fallback\";\n"));
    assert!(!conf.contains("$kokoa_cert.crt"), "{conf}");
    assert!(conf.contains(
        "map $http_upgrade $connection_upgrade {\n    default upgrade;\n    \"\" \"\";\n}"
    ));
    assert_eq!(conf.matches("Connection ").count(), 1);
}

#[test]
fn listen_address_ports_and_limits_are_configurable() {
    let site = EdgeSite {
        routes: vec![],
        rate_limits: RateLimits {
            rate_per_second: 7,
            burst: 3,
            connections_per_ip: 99,
        },
        listen: Listen {
            address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            http_port: 8080,
            https_port: 8443,
        },
        fallback_certificate: CertName::parse("edge-default").unwrap(),
    };
    let conf = site.render(&layout()).unwrap();
    assert!(
        conf.contains("listen 127.0.0.1:8080 default_server;"),
        "{conf}"
    );
    assert!(conf.contains("listen 127.0.0.1:8443 ssl http2 default_server;"));
    assert!(conf.contains("return 301 https://$host:8443$request_uri;"));
    assert!(conf.contains("rate=7r/s;") && conf.contains("burst=3 nodelay;"));
    assert!(conf.contains("limit_conn kokoa_conn 99;"));
    assert!(conf.contains("default \"edge-default\";"));

    let v6 = EdgeSite {
        listen: Listen {
            address: Some("::1".parse().unwrap()),
            ..Listen::default()
        },
        ..EdgeSite::default()
    };
    assert!(
        v6.render(&layout())
            .unwrap()
            .contains("listen [::1]:443 ssl http2 default_server;")
    );
}

#[test]
fn refuses_what_nginx_would_refuse() {
    let site = EdgeSite::new(vec![
        route("app.hoge.com", "10.0.1.1:80"),
        route("APP.hoge.com.", "10.0.1.2:80"),
    ]);
    let err = site.render(&layout()).unwrap_err();
    assert!(err.to_string().contains("app.hoge.com"), "{err}");

    let mut site = EdgeSite::default();
    site.rate_limits.connections_per_ip = 0;
    let err = site.render(&layout()).unwrap_err();
    assert!(err.to_string().contains("connections_per_ip"), "{err}");

    let mut site = EdgeSite::default();
    site.rate_limits.connections_per_ip = 65_536;
    let err = site.render(&layout()).unwrap_err();
    assert!(err.to_string().contains("65536"), "{err}");

    let mut site = EdgeSite::default();
    site.rate_limits.burst = 0;
    let conf = site.render(&layout()).unwrap();
    assert!(conf.contains("burst=0 nodelay;"), "{conf}");
}

#[test]
fn hash_sizes_grow_with_the_map() {
    let short = [route("a.io", "10.0.0.1:1")];
    let long_name = format!("{}.{}.io", "a".repeat(63), "b".repeat(63));
    let long = [route(&long_name, "10.0.0.1:1")];
    assert_eq!(map_hash_sizes(&[]), (2048, 128));
    assert_eq!(
        map_hash_sizes(&short.iter().collect::<Vec<_>>()),
        (2048, 128)
    );
    // 130 + 2 → 136 bytes per key, four keys and a pointer: 584 → 1024.
    assert_eq!(
        map_hash_sizes(&long.iter().collect::<Vec<_>>()),
        (2048, 1024)
    );
    let many: Vec<Route> = (0..5000)
        .map(|i| route(&format!("h{i}.io"), "10.0.0.1:1"))
        .collect();
    assert_eq!(map_hash_sizes(&many.iter().collect::<Vec<_>>()).0, 20000);
}

fn hostname() -> impl Strategy<Value = Hostname> {
    // A small alphabet on purpose: repeated names exercise the duplicate check. No `xn--`
    // label (it must be valid IDNA) and a top-level label with a letter, as real names have.
    let label = prop_oneof!["[a-c]{1,2}", "[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?"]
        .prop_filter("no IDNA labels", |l| !l.starts_with("xn--"));
    let top = prop_oneof!["[a-c]{1,2}", "[a-z][a-z0-9]{0,5}"];
    (any::<bool>(), prop::collection::vec(label, 1..3), top).prop_map(|(wild, labels, top)| {
        let name = format!("{}.{top}", labels.join("."));
        let name = if wild { format!("*.{name}") } else { name };
        Hostname::parse(&name).expect("generated names are valid")
    })
}

fn routes() -> impl Strategy<Value = Vec<Route>> {
    let backend = prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ];
    let cert = proptest::option::of(prop_oneof![
        Just(CertName::parse("shared").unwrap()),
        "[a-z0-9][a-z0-9._-]{0,20}".prop_map(|s| CertName::parse(&s).unwrap()),
    ]);
    let route = (hostname(), backend, cert, any::<bool>()).prop_map(
        |(hostname, backend, certificate, available)| Route {
            hostname,
            backend,
            certificate,
            available,
        },
    );
    prop::collection::vec(route, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn maps_hold_exactly_the_input(routes in routes()) {
        let site = EdgeSite::new(routes.clone());
        let distinct: BTreeSet<&Hostname> = routes.iter().map(|r| &r.hostname).collect();
        let conf = match site.render(&layout()) {
            Err(Error::DuplicateHostname(h)) => {
                prop_assert!(distinct.len() < routes.len());
                prop_assert!(routes.iter().filter(|r| r.hostname == h).count() > 1);
                return Ok(());
            }
            other => other.unwrap(),
        };
        prop_assert_eq!(distinct.len(), routes.len());

        let backends = read_map(&conf, "$host $kokoa_backend");
        let want: BTreeMap<String, String> = routes
            .iter()
            .map(|r| (r.hostname.to_string(), upstream_name(&r.backend)))
            .collect();
        prop_assert_eq!(backends.len(), routes.len(), "each route exactly once");
        let got: BTreeMap<String, String> =
            backends.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        prop_assert_eq!(&got, &want);
        prop_assert!(backends.windows(2).all(|w| w[0].0 < w[1].0), "sorted");

        // Routes map to upstream names; each upstream holds exactly its backend.
        let upstreams = read_upstreams(&conf);
        let want_upstreams: BTreeMap<String, String> = routes
            .iter()
            .map(|r| (upstream_name(&r.backend), r.backend.to_string()))
            .collect();
        prop_assert_eq!(&upstreams, &want_upstreams);
        prop_assert!(backends.iter().all(|(_, name)| upstreams.contains_key(*name)));

        // Below the static limit every certificate has its own server listing exactly its
        // hostnames; nothing is chosen per handshake.
        let certs = read_map(&conf, "$ssl_server_name $kokoa_cert");
        prop_assert!(certs.is_empty());
        let want_certs: BTreeMap<&str, &str> = routes
            .iter()
            .filter_map(|r| Some((r.hostname.as_str(), r.certificate.as_ref()?.as_str())))
            .collect();
        let servers = read_cert_servers(&conf);
        prop_assert_eq!(&servers, &want_certs);
        let per_cert = want_certs.values().collect::<BTreeSet<_>>().len();
        prop_assert_eq!(same_routing_in_every_tls_server(&conf), per_cert + 1);

        let down = read_map(&conf, "$host $kokoa_unavailable");
        let want_down: Vec<(&str, &str)> = routes
            .iter()
            .filter(|r| !r.available)
            .map(|r| (r.hostname.as_str(), "1"))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        prop_assert_eq!(&down, &want_down);

        // Nothing but the map entries and the hash sizes depends on the routes: every
        // other line is the same as for a site without routes.
        let empty = EdgeSite::default().render(&layout()).unwrap();
        prop_assert_eq!(fixed_lines(&conf), fixed_lines(&empty));
        prop_assert_eq!(
            statements(&conf),
            statements(&empty) + routes.len() + down.len() + 3 * upstreams.len()
                + per_cert * (4 + statements(cert_server_text(&empty)))
        );
    }
}

/// The lines that are not map entries (`"KEY" VALUE;` with a non-empty key), hash sizes,
/// upstreams or servers of a certificate, nor blank.
fn fixed_lines(conf: &str) -> Vec<&str> {
    let before_cert_servers = conf.split(CERT_SERVER).next().unwrap();
    let mut in_upstream = false;
    before_cert_servers
        .lines()
        .filter(|l| !l.starts_with("    \"") || l.starts_with("    \"\""))
        .filter(|l| !l.is_empty())
        .filter(|l| !l.starts_with("map_hash_") && !l.starts_with("server_names_hash_"))
        .filter(|l| {
            if l.starts_with("upstream ") {
                in_upstream = true;
            }
            let keep = !in_upstream;
            if *l == "}" {
                in_upstream = false;
            }
            keep
        })
        .collect()
}

/// How a server of one certificate starts.
const CERT_SERVER: &str = "\nserver {\n    listen 443 ssl http2;\n";

/// `upstream NAME { server ADDR; ... }` blocks as NAME → ADDR.
fn read_upstreams(conf: &str) -> BTreeMap<String, String> {
    conf.split("\nupstream ")
        .skip(1)
        .map(|block| {
            let (name, rest) = block.split_once(" {\n    server ").unwrap();
            let addr = rest.split_once(";\n").unwrap().0;
            (name.to_owned(), addr.to_owned())
        })
        .collect()
}

/// The hostnames of every certificate's server, as hostname → certificate name, checking
/// the certificate files are the static `certs/NAME.crt` and `.key`.
fn read_cert_servers(conf: &str) -> BTreeMap<&str, &str> {
    let mut out = BTreeMap::new();
    for server in conf.split(CERT_SERVER).skip(1) {
        let mut lines = server.lines();
        let names = lines
            .next()
            .unwrap()
            .strip_prefix("    server_name ")
            .unwrap();
        let crt = lines.next().unwrap();
        let cert = crt
            .strip_prefix("    ssl_certificate \"/srv/kokoa/certs/")
            .and_then(|c| c.strip_suffix(".crt\";"))
            .unwrap();
        assert_eq!(
            lines.next().unwrap(),
            format!("    ssl_certificate_key \"/srv/kokoa/certs/{cert}.key\";")
        );
        for name in names.strip_suffix(';').unwrap().split(' ') {
            assert!(
                out.insert(name.trim_matches('"'), cert).is_none(),
                "{name} twice"
            );
        }
    }
    out
}

/// The text of a certificate's server after its certificate lines, for a site without
/// certificates: the routing of the default HTTPS server.
fn cert_server_text(empty: &str) -> &str {
    let default = empty.split("ssl http2 default_server;\n").nth(1).unwrap();
    default.split_once(".key\";\n").unwrap().1
}

/// Checks that every HTTPS server routes with the same text as the default one; returns
/// how many there are.
fn same_routing_in_every_tls_server(conf: &str) -> usize {
    let routing = cert_server_text(conf);
    let mut count = 1;
    for server in conf.split(CERT_SERVER).skip(1) {
        let body = server.split_once(".key\";\n").unwrap().1;
        let body = body.split(CERT_SERVER).next().unwrap();
        assert_eq!(
            body.trim_end(),
            routing.split(CERT_SERVER).next().unwrap().trim_end()
        );
        count += 1;
    }
    count
}

#[test]
fn beyond_the_limits_certificates_go_per_handshake_and_backends_by_address() {
    let n = STATIC_CERTIFICATES_MAX.max(UPSTREAMS_MAX) + 2;
    let routes: Vec<Route> = (0..n)
        .map(|i| {
            let name = format!("h{i:05}.io");
            let backend = SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 80));
            route(&name, &backend.to_string()).with_certificate(CertName::parse(&name).unwrap())
        })
        .collect();
    let conf = EdgeSite::new(routes).render(&layout()).unwrap();
    assert_eq!(read_cert_servers(&conf).len(), STATIC_CERTIFICATES_MAX);
    let per_handshake = read_map(&conf, "$ssl_server_name $kokoa_cert");
    assert_eq!(per_handshake.len(), n - STATIC_CERTIFICATES_MAX);
    assert!(per_handshake.iter().all(|(host, cert)| host == cert));
    assert!(conf.contains("ssl_certificate \"/srv/kokoa/certs/$kokoa_cert.crt\";"));
    let upstreams = read_upstreams(&conf);
    assert_eq!(upstreams.len(), UPSTREAMS_MAX);
    let backends = read_map(&conf, "$host $kokoa_backend");
    let by_address = backends
        .iter()
        .filter(|(_, v)| !v.starts_with("kk_"))
        .count();
    assert_eq!(by_address, n - UPSTREAMS_MAX);
}

#[test]
fn upstream_names_are_made_of_the_address() {
    let name = |s: &str| upstream_name(&s.parse().unwrap());
    assert_eq!(name("10.0.1.1:8080"), "kk_10_0_1_1_8080");
    assert_eq!(
        name("[fd00::1]:80"),
        "kk_v6_fd000000000000000000000000000001_80"
    );
    assert_ne!(name("1.2.3.4:5"), name("1.2.34.5:5"));
}
