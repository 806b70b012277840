//! Renders arbitrary route sets and reads the file back:
//!
//! - every accepted route appears exactly once in the routes map, and the upstream it names
//!   holds exactly its backend (`server ADDR;`), or, beyond the upstream limit, the value is
//!   the address itself;
//! - every certificate's hostnames are listed by one server with exactly that certificate,
//!   or, beyond the static limit, are in the `$kokoa_cert` map; and the server nginx picks for
//!   a route's name (SNI: exact name, then the longest wildcard) presents that certificate;
//! - every line that is not a map entry, a hash size, an upstream or a certificate's server
//!   is the same as for a site without routes, and those parts hold nothing but what the
//!   routes ask for.
//!
//! Input: lines of one flag byte followed by a hostname candidate; lines whose name
//! `Hostname::parse` rejects are skipped. Flag bits:
//!
//! - bit 0: unavailable;
//! - bits 1–2: certificate: 0 none, 1 its own (`CertName::for_hostname`), 2 `shared`,
//!   3 `0shared`;
//! - bit 3: IPv6 backend, with bits 5–6 as its scope id;
//! - bit 4: the same backend as the previous route (one upstream for several routes);
//! - bit 7: the line stands for 64 routes `rK.NAME` (`*.rK.NAME` for a wildcard), so that
//!   a short input passes the certificate limit.
//!
//! At most `MAX_ROUTES` routes are taken.
#![no_main]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv6Addr, SocketAddr, SocketAddrV6},
    sync::OnceLock,
};

use kokoa_core::Hostname;
use kokoa_nginx::{CertName, EdgeSite, Error, Layout, Route};
use libfuzzer_sys::fuzz_target;

/// The renderer's limits (crate-private there): certificates loaded by a server of their
/// own, and backends with an upstream.
const STATIC_CERTIFICATES_MAX: usize = 250;
const UPSTREAMS_MAX: usize = 1000;
/// Enough routes to pass the certificate limit, few enough to keep runs fast (over a second
/// per run for 1 000 routes in a `--dev` build). The upstream limit is left to the crate's
/// tests; beyond it, the checks below accept a backend by address.
const MAX_ROUTES: usize = 300;

/// How a server of one certificate starts (default ports and address).
const CERT_SERVER: &str = "\nserver {\n    listen 443 ssl http2;\n";
const CERTS_DIR: &str = "/srv/kokoa/certs/";
const BACKENDS: &str = "$host $kokoa_backend";
const CERT_MAP: &str = "$ssl_server_name $kokoa_cert";
const UNAVAILABLE: &str = "$host $kokoa_unavailable";
const HASH_SIZES: [&str; 4] = [
    "map_hash_max_size",
    "map_hash_bucket_size",
    "server_names_hash_max_size",
    "server_names_hash_bucket_size",
];

fuzz_target!(|data: &[u8]| {
    let routes = routes(data);
    let layout = layout();
    let distinct: BTreeSet<&Hostname> = routes.iter().map(|r| &r.hostname).collect();
    let conf = match EdgeSite::new(routes.clone()).render(layout) {
        Err(Error::DuplicateHostname(h)) => {
            assert!(routes.iter().filter(|r| r.hostname == h).count() > 1);
            return;
        }
        other => other.unwrap(),
    };
    assert_eq!(distinct.len(), routes.len(), "duplicates were accepted");
    // The same site renders the same text, whatever the order of its routes.
    let mut reversed = routes.clone();
    reversed.reverse();
    assert_eq!(EdgeSite::new(reversed).render(layout).unwrap(), conf);
    check(&routes, &conf);
});

/// The routes `data` describes (see the module documentation).
fn routes(data: &[u8]) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((&flags, name)) = line.split_first() else {
            continue;
        };
        let Ok(name) = Hostname::parse(&String::from_utf8_lossy(name)) else {
            continue;
        };
        let names = if flags & 0x80 == 0 {
            vec![name]
        } else {
            let (wild, base) = match name.as_str().strip_prefix("*.") {
                Some(base) => ("*.", base),
                None => ("", name.as_str()),
            };
            (0..64)
                .filter_map(|k| Hostname::parse(&format!("{wild}r{k}.{base}")).ok())
                .collect()
        };
        for hostname in names {
            if routes.len() == MAX_ROUTES {
                return routes;
            }
            let i = routes.len() as u16;
            let backend = match routes.last() {
                Some(previous) if flags & 0x10 != 0 => previous.backend,
                _ if flags & 0x08 != 0 => SocketAddrV6::new(
                    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i),
                    8000 + i,
                    0,
                    u32::from((flags >> 5) & 3),
                )
                .into(),
                _ => {
                    let [hi, lo] = i.to_be_bytes();
                    ([10, 0, hi, lo], 8000 + i).into()
                }
            };
            let mut route = Route::new(hostname, backend);
            route.available = flags & 1 == 0;
            route.certificate = match (flags >> 1) & 3 {
                0 => None,
                1 => Some(CertName::for_hostname(&route.hostname)),
                2 => Some(CertName::parse("shared").unwrap()),
                _ => Some(CertName::parse("0shared").unwrap()),
            };
            routes.push(route);
        }
    }
    routes
}

fn layout() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| Layout::new("/srv/kokoa").unwrap())
}

/// The parts of the file for a site without routes: its fixed lines and the text of the
/// default HTTPS server after its certificate, which every certificate's server repeats.
fn empty() -> &'static (Vec<String>, String) {
    static EMPTY: OnceLock<(Vec<String>, String)> = OnceLock::new();
    EMPTY.get_or_init(|| {
        let conf = EdgeSite::default().render(layout()).unwrap();
        assert!(!conf.contains(CERT_SERVER));
        let head = Head::read(&conf);
        assert!(head.maps.is_empty() && head.upstreams.is_empty());
        let key = format!("    ssl_certificate_key \"{CERTS_DIR}fallback.key\";\n");
        let (_, routing) = conf.split_once(&key).expect("the default HTTPS server");
        assert!(!routing.contains(&key));
        let fixed = head.fixed.iter().map(|l| l.to_string()).collect();
        (fixed, routing.to_owned())
    })
}

/// What the file before the first certificate's server holds, sorted out.
struct Head<'a> {
    /// The lines that do not depend on the routes (blank lines left out).
    fixed: Vec<&'a str>,
    /// Map header → its `"KEY" VALUE` entries with a non-empty key, in file order, the
    /// key unquoted.
    maps: BTreeMap<&'a str, Vec<(&'a str, &'a str)>>,
    /// The hash size directives and their values.
    hash_sizes: BTreeMap<&'a str, usize>,
    /// `upstream NAME { server ADDR; keepalive 32; keepalive_timeout 50s; }`: (NAME, ADDR).
    upstreams: Vec<(&'a str, &'a str)>,
}

impl<'a> Head<'a> {
    fn read(head: &'a str) -> Self {
        let mut out = Head {
            fixed: Vec::new(),
            maps: BTreeMap::new(),
            hash_sizes: BTreeMap::new(),
            upstreams: Vec::new(),
        };
        let mut map: Option<&str> = None;
        let mut lines = head.lines();
        while let Some(line) = lines.next() {
            if line.is_empty() {
                continue;
            }
            if let Some(header) = map {
                if line == "}" {
                    map = None;
                } else if let Some(entry) = line.strip_prefix("    \"")
                    && !entry.starts_with('"')
                {
                    let (key, value) = entry.split_once("\" ").expect("a quoted key");
                    let value = value.strip_suffix(';').expect("one entry per line");
                    out.maps.entry(header).or_default().push((key, value));
                    continue;
                }
            } else if let Some(header) =
                line.strip_prefix("map ").and_then(|l| l.strip_suffix(" {"))
            {
                map = Some(header);
            } else if let Some((name, value)) =
                line.strip_suffix(';').and_then(|l| l.split_once(' '))
                && HASH_SIZES.contains(&name)
            {
                let value = value.parse().expect("a hash size is a number");
                assert!(out.hash_sizes.insert(name, value).is_none(), "{name} twice");
                continue;
            } else if let Some(name) = line
                .strip_prefix("upstream ")
                .and_then(|l| l.strip_suffix(" {"))
            {
                let addr = lines
                    .next()
                    .and_then(|l| l.strip_prefix("    server "))
                    .and_then(|l| l.strip_suffix(';'))
                    .expect("an upstream starts with its server");
                assert_eq!(lines.next(), Some("    keepalive 32;"));
                assert_eq!(lines.next(), Some("    keepalive_timeout 50s;"));
                assert_eq!(lines.next(), Some("}"));
                out.upstreams.push((name, addr));
                continue;
            }
            out.fixed.push(line);
        }
        assert!(map.is_none(), "unclosed map");
        assert_eq!(
            out.hash_sizes.keys().copied().collect::<BTreeSet<_>>(),
            HASH_SIZES.into_iter().collect(),
        );
        out
    }
}

fn check(routes: &[Route], conf: &str) {
    let (empty_fixed, routing) = empty();
    let mut parts = conf.split(CERT_SERVER);
    let head = Head::read(parts.next().unwrap());
    let servers: Vec<&str> = parts.collect();
    let maps = &head.maps;
    for header in maps.keys() {
        assert!(
            [BACKENDS, CERT_MAP, UNAVAILABLE].contains(header),
            "entries in {header}"
        );
    }
    let entries = |header| maps.get(header).map_or(&[][..], Vec::as_slice);

    // Hash sizes: the same for maps and server names, enough for the longest name.
    let hash = &head.hash_sizes;
    let (max_size, bucket) = (hash["map_hash_max_size"], hash["map_hash_bucket_size"]);
    assert_eq!(hash["server_names_hash_max_size"], max_size);
    assert_eq!(hash["server_names_hash_bucket_size"], bucket);
    let longest = routes.iter().map(|r| r.hostname.as_str().len()).max();
    // nginx needs a bucket to hold one element: pointer, length, name (aligned), and the
    // bucket's end pointer.
    let element = (8 + longest.unwrap_or(0) + 2).next_multiple_of(8) + 8;
    assert!(bucket.is_power_of_two() && bucket >= element && bucket <= 65536 - 64);
    assert!(max_size >= routes.len());

    // Routes map: each route once, sorted, to an upstream holding exactly its backend.
    let backends = entries(BACKENDS);
    assert_eq!(backends.len(), routes.len());
    assert!(backends.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
    let upstreams: BTreeMap<&str, &str> = head.upstreams.iter().copied().collect();
    assert_eq!(
        upstreams.len(),
        head.upstreams.len(),
        "an upstream name twice"
    );
    let addrs: BTreeSet<&str> = upstreams.values().copied().collect();
    assert_eq!(addrs.len(), upstreams.len(), "a backend with two upstreams");
    let want: BTreeMap<&str, String> = routes
        .iter()
        .map(|r| (r.hostname.as_str(), r.backend.to_string()))
        .collect();
    let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
    for (host, value) in backends {
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .expect("a quoted value");
        let backend = want[host].as_str();
        *uses.entry(backend).or_default() += 1;
        match upstreams.get(value) {
            Some(addr) => {
                assert_eq!(*addr, backend, "{host} goes to upstream {value}");
                let addr: SocketAddr = backend.parse().unwrap();
                assert_eq!(value, upstream_name(&addr));
            }
            None => {
                // Beyond the limit, by address (no upstream of that name, checked above).
                assert_eq!(value, backend, "{host} goes to {value}");
                assert_eq!(upstreams.len(), UPSTREAMS_MAX, "{host} has no upstream");
            }
        }
    }
    // No upstream that no route uses; beyond the limit the busiest backends have one.
    assert!(
        addrs.iter().all(|a| uses.contains_key(a)),
        "unused upstream"
    );
    assert_eq!(upstreams.len(), uses.len().min(UPSTREAMS_MAX));
    let by_address = uses
        .iter()
        .filter(|(a, _)| !addrs.contains(*a))
        .map(|(_, n)| *n);
    let least_upstream = addrs.iter().map(|a| uses[a]).min();
    if let (Some(most), Some(least)) = (by_address.max(), least_upstream) {
        assert!(most <= least, "a busier backend went without upstream");
    }

    // Certificates: each route's, in one server of its own or, beyond the limit, in the map.
    let known: BTreeMap<&str, &str> = routes
        .iter()
        .filter_map(|r| Some((r.hostname.as_str(), r.certificate.as_ref()?.as_str())))
        .collect();
    let mut server_names: BTreeMap<&str, &str> = BTreeMap::new();
    let mut loaded: BTreeSet<&str> = BTreeSet::new();
    for server in &servers {
        let mut lines = server.splitn(4, '\n');
        let names = lines
            .next()
            .and_then(|l| l.strip_prefix("    server_name "))
            .and_then(|l| l.strip_suffix(';'))
            .expect("server_name first");
        let cert = lines
            .next()
            .and_then(|l| l.strip_prefix(&format!("    ssl_certificate \"{CERTS_DIR}")))
            .and_then(|l| l.strip_suffix(".crt\";"))
            .expect("ssl_certificate second");
        assert_eq!(
            lines.next().unwrap(),
            format!("    ssl_certificate_key \"{CERTS_DIR}{cert}.key\";")
        );
        // Nothing else: the same routing as the default server.
        assert_eq!(lines.next().unwrap(), routing, "the server of {cert}");
        assert!(loaded.insert(cert), "two servers for {cert}");
        let names: Vec<&str> = names
            .split(' ')
            .map(|n| {
                n.strip_prefix('"')
                    .and_then(|n| n.strip_suffix('"'))
                    .unwrap()
            })
            .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted");
        for name in names {
            assert!(server_names.insert(name, cert).is_none(), "{name} twice");
        }
    }
    let cert_map: BTreeMap<&str, &str> = entries(CERT_MAP)
        .iter()
        .map(|(host, cert)| {
            let cert = cert.strip_prefix('"').and_then(|c| c.strip_suffix('"'));
            (*host, cert.expect("a quoted value"))
        })
        .collect();
    assert_eq!(cert_map.len(), entries(CERT_MAP).len(), "a key twice");
    assert!(server_names.keys().all(|h| !cert_map.contains_key(h)));
    let mut served = server_names.clone();
    served.extend(&cert_map);
    assert_eq!(served, known);
    let per_handshake: BTreeSet<&str> = cert_map.values().copied().collect();
    assert!(loaded.is_disjoint(&per_handshake), "a certificate split");
    assert_eq!(
        loaded.len(),
        (loaded.len() + per_handshake.len()).min(STATIC_CERTIFICATES_MAX)
    );
    // The first certificates in sorted order are the loaded ones.
    if let (Some(last), Some(first)) = (loaded.last(), per_handshake.first()) {
        assert!(last < first);
    }

    // What a client gets: nginx picks the server by SNI (exact name, then the longest
    // wildcard); the default server takes its certificate from the map, alike.
    let route_names: BTreeSet<&str> = routes.iter().map(|r| r.hostname.as_str()).collect();
    for (host, cert) in &known {
        let sni = match host.strip_prefix("*.") {
            Some(base) => format!("kk-probe.{base}"),
            None => host.to_string(),
        };
        if sni != *host && route_names.contains(sni.as_str()) {
            continue;
        }
        match lookup(&server_names, &sni) {
            Some(got) => assert_eq!(
                got, *cert,
                "SNI {sni} lands in the server of certificate {got}, not {cert}"
            ),
            None => assert_eq!(lookup(&cert_map, &sni), Some(*cert), "SNI {sni}"),
        }
    }

    let down: Vec<(&str, &str)> = routes
        .iter()
        .filter(|r| !r.available)
        .map(|r| (r.hostname.as_str(), "1"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(entries(UNAVAILABLE), down);

    // Everything else is the same as without routes, but the default server's certificate
    // comes from the map when some are chosen per handshake.
    let want_fixed: Vec<String> = empty_fixed
        .iter()
        .map(|l| {
            if l.starts_with("    ssl_certificate") && !per_handshake.is_empty() {
                l.replace("/fallback.", "/$kokoa_cert.")
            } else {
                l.clone()
            }
        })
        .collect();
    assert_eq!(head.fixed, want_fixed);
}

/// What a `hostnames` map or `server_name` gives for `name`: an exact key, else the longest
/// `*.SUFFIX` key that `name` ends with.
fn lookup<'a>(keys: &BTreeMap<&str, &'a str>, name: &str) -> Option<&'a str> {
    if let Some(v) = keys.get(name) {
        return Some(*v);
    }
    name.match_indices('.')
        .find_map(|(i, _)| keys.get(format!("*{}", &name[i..]).as_str()))
        .copied()
}

/// The upstream name of `addr` as the renderer documents it: `kk_10_0_1_1_8080`,
/// `kk_v6_<32 hex digits>_8080`, with `_s<scope>` for a scoped IPv6 address.
fn upstream_name(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => {
            let [b0, b1, b2, b3] = a.ip().octets();
            format!("kk_{b0}_{b1}_{b2}_{b3}_{}", a.port())
        }
        SocketAddr::V6(a) => {
            let scope = match a.scope_id() {
                0 => String::new(),
                s => format!("_s{s}"),
            };
            format!("kk_v6_{:032x}_{}{scope}", u128::from(*a.ip()), a.port())
        }
    }
}
