//! Renders arbitrary route sets and reads the maps back: every accepted route appears
//! exactly once with its backend, the certificate map names only the routes' certificates,
//! and nothing outside the map entries depends on the routes.
//!
//! Input: lines of one flag byte (bit 0: unavailable, bit 1: own certificate) followed by
//! a hostname candidate; lines whose name `Hostname::parse` rejects are skipped.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use kokoa_core::Hostname;
use kokoa_nginx::{CertName, EdgeSite, Error, Layout, Route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut routes = Vec::new();
    for (i, line) in data.split(|b| *b == b'\n').enumerate().take(200) {
        let Some((flags, name)) = line.split_first() else {
            continue;
        };
        let Ok(hostname) = Hostname::parse(&String::from_utf8_lossy(name)) else {
            continue;
        };
        let [hi, lo] = (i as u16).to_be_bytes();
        let mut route = Route::new(hostname, ([10, 0, hi, lo], 8000 + i as u16).into());
        route.available = flags & 1 == 0;
        if flags & 2 != 0 {
            route.certificate = Some(CertName::for_hostname(&route.hostname));
        }
        routes.push(route);
    }
    let layout = Layout::new("/srv/kokoa").unwrap();
    let distinct: BTreeSet<&Hostname> = routes.iter().map(|r| &r.hostname).collect();
    let conf = match EdgeSite::new(routes.clone()).render(&layout) {
        Err(Error::DuplicateHostname(h)) => {
            assert!(routes.iter().filter(|r| r.hostname == h).count() > 1);
            return;
        }
        other => other.unwrap(),
    };
    assert_eq!(distinct.len(), routes.len(), "duplicates were accepted");

    let backends = read_map(&conf, "$host $kokoa_backend");
    assert_eq!(backends.len(), routes.len());
    let want: BTreeMap<String, String> = routes
        .iter()
        .map(|r| (r.hostname.to_string(), r.backend.to_string()))
        .collect();
    let got: BTreeMap<String, String> = backends
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want);

    let known: BTreeMap<&str, &str> = routes
        .iter()
        .filter_map(|r| Some((r.hostname.as_str(), r.certificate.as_ref()?.as_str())))
        .collect();
    let certs: BTreeMap<&str, &str> = read_map(&conf, "$ssl_server_name $kokoa_cert")
        .into_iter()
        .collect();
    assert_eq!(certs, known);

    let down: BTreeSet<&str> = routes
        .iter()
        .filter(|r| !r.available)
        .map(|r| r.hostname.as_str())
        .collect();
    let got_down = read_map(&conf, "$host $kokoa_unavailable");
    assert!(got_down.iter().all(|(_, v)| *v == "1"));
    assert_eq!(got_down.iter().map(|(k, _)| *k).collect::<BTreeSet<_>>(), down);

    let empty = EdgeSite::default().render(&layout).unwrap();
    assert_eq!(fixed_lines(&conf), fixed_lines(&empty));
});

/// The `"KEY" VALUE` entries of the map block starting with `map HEADER {`, after its
/// `hostnames;` and `default ...;` statements.
fn read_map<'a>(conf: &'a str, header: &str) -> Vec<(&'a str, &'a str)> {
    let start = conf.find(&format!("map {header} {{\n")).expect("map present");
    let block = &conf[start..];
    let body = &block[block.find('\n').unwrap() + 1..block.find("\n}").unwrap()];
    let mut statements = body
        .lines()
        .map(|l| l.trim().strip_suffix(';').expect("one statement per line"));
    assert_eq!(statements.next(), Some("hostnames"));
    assert!(statements.next().unwrap().starts_with("default "));
    statements
        .map(|s| {
            let (k, v) = s.split_once(' ').expect("key and value");
            (k.trim_matches('"'), v.trim_matches('"'))
        })
        .collect()
}

/// Every line except map entries with a non-empty key and the hash sizes.
fn fixed_lines(conf: &str) -> Vec<&str> {
    conf.lines()
        .filter(|l| !l.starts_with("    \"") || l.starts_with("    \"\""))
        .filter(|l| !l.starts_with("map_hash_"))
        .collect()
}
