//! A PowerDNS Authoritative server started by a test on loopback ([`LocalPowerDns`]), its
//! API, and `dig` to read what it serves; BIND 9 and Knot DNS servers taking dynamic
//! updates ([`updatable`]). Shared by the PowerDNS and RFC 2136 tests.
#![allow(dead_code)] // each test file uses its own part of the harness

pub(crate) mod updatable;

use std::process::Command;

use kokoa_dns::local::{LocalPowerDns, Options};
use serde_json::Value;

/// A running server; stopped on drop, also when a test fails.
pub(crate) struct Pdns {
    server: LocalPowerDns,
    /// The HTTP API's base URL.
    pub(crate) api: String,
    /// The DNS port on 127.0.0.1 (UDP and TCP).
    pub(crate) dns_port: u16,
}

impl Pdns {
    /// A server with the API on and `extra` lines added to its configuration.
    pub(crate) async fn start(extra: &[&str]) -> Self {
        let server = LocalPowerDns::start_with(Options {
            extra_config: extra.iter().map(|l| (*l).to_owned()).collect(),
            ..Options::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        Self {
            api: server.api_url().to_owned(),
            dns_port: server.dns_address().port(),
            server,
        }
    }

    /// The API key.
    pub(crate) fn key(&self) -> &str {
        self.server.api_key()
    }

    /// Calls the API at `path` below `/api/v1/servers/localhost`, asserts the status is
    /// `expected` and returns the JSON answer (`null` when there is none).
    pub(crate) async fn call(&self, method: &str, path: &str, body: Value, expected: u16) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let answer = reqwest::Client::new()
            .request(
                method.clone(),
                format!("{}/api/v1/servers/localhost{path}", self.api),
            )
            .header("X-API-Key", self.key())
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        assert_eq!(
            status,
            expected,
            "{method} {path}: {text}\n{}",
            self.server.log()
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates `name` with an SOA record, as an operator would before handing it to Kokoa.
    pub(crate) async fn create_zone(&self, name: &str) {
        self.server
            .create_zone(name)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// What it answers for `name` and `kind`, as [`dig`] gives it.
    pub(crate) fn dig(&self, name: &str, kind: &str) -> Vec<String> {
        dig(self.dns_port, name, kind)
    }
}

/// `dig @127.0.0.1 -p PORT NAME TYPE +noall +answer`, sorted lines with single spaces.
pub(crate) fn dig(port: u16, name: &str, kind: &str) -> Vec<String> {
    let output = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string(), name, kind])
        .args(["+noall", "+answer", "+time=2", "+tries=1"])
        .output()
        .expect("run dig (scripts/install-deps installs it, Debian package dnsutils)");
    assert!(output.status.success(), "dig failed: {output:?}");
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}
