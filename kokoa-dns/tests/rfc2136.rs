//! The RFC 2136 provider against real servers that take TSIG-signed dynamic updates and
//! zone transfers, PowerDNS Authoritative, BIND 9 and Knot DNS, one conformance test run
//! against each with every change checked with `dig`; and against a small stub server for
//! the answers they do not give (TSIG errors, SERVFAIL, silence).
#![cfg(all(feature = "rfc2136", feature = "local-powerdns"))]

mod common;

use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

use common::{
    Pdns,
    updatable::{self, Flavour, Updatable},
};
use kokoa_core::{EdgeNodeId, Hostname, RecordData};
use kokoa_dns::{
    DesiredState, DnsProvider, EdgeState, EdgeTarget, Error, Reconciler, RecordId, RecordSpec,
    Zone,
    rfc2136::{
        Rfc2136Provider, TsigAlgorithm, TsigKey,
        wire::{CLASS_ANY, Message, RData, Rcode, Record, TYPE_TSIG, Tsig},
    },
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const KEY_NAME: &str = "kokoa-key";

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("test host name")
}

fn zone() -> Zone {
    Zone {
        id: "kokoa.test".into(),
        name: host("kokoa.test"),
    }
}

fn spec(name: &str, data: RecordData, ttl: u32) -> RecordSpec {
    RecordSpec {
        name: host(name).into(),
        data,
        ttl,
    }
}

fn a(ip: &str) -> RecordData {
    RecordData::A(ip.parse().expect("test address"))
}

/// PowerDNS serving `kokoa.test`, with dynamic updates on and a key of each algorithm
/// allowed to update and transfer the zone. Returns the server and the keys' secrets, as
/// PowerDNS generated them, in the order sha256, sha512, sha1.
async fn server() -> (Pdns, Vec<(String, TsigAlgorithm, String)>) {
    let pdns = Pdns::start(&[
        "dnsupdate=yes",
        "allow-dnsupdate-from=127.0.0.0/8",
        "allow-axfr-ips=127.0.0.0/8",
    ])
    .await;
    pdns.create_zone("kokoa.test").await;
    let mut keys = Vec::new();
    for (name, algorithm) in [
        (KEY_NAME.to_owned(), TsigAlgorithm::HmacSha256),
        (format!("{KEY_NAME}-512"), TsigAlgorithm::HmacSha512),
        (format!("{KEY_NAME}-1"), TsigAlgorithm::HmacSha1),
    ] {
        let body = json!({ "name": name, "algorithm": algorithm.as_str() });
        let created = pdns.call("POST", "/tsigkeys", body, 201).await;
        let secret = created["key"]
            .as_str()
            .expect("generated secret")
            .to_owned();
        keys.push((name, algorithm, secret));
    }
    let names: Vec<&str> = keys.iter().map(|(name, ..)| name.as_str()).collect();
    let body = json!({ "kind": "TSIG-ALLOW-DNSUPDATE", "metadata": names });
    pdns.call("POST", "/zones/kokoa.test./metadata", body, 201)
        .await;
    // The API sets TSIG-ALLOW-AXFR through the zone's master_tsig_key_ids.
    let body = json!({ "master_tsig_key_ids": names });
    pdns.call("PUT", "/zones/kokoa.test.", body, 204).await;
    (pdns, keys)
}

fn provider(pdns: &Pdns, name: &str, algorithm: TsigAlgorithm, secret: &str) -> Rfc2136Provider {
    let key = TsigKey::new(name, algorithm, secret).expect("TSIG key");
    let address = SocketAddr::from(([127, 0, 0, 1], pdns.dns_port));
    Rfc2136Provider::new(address, key, [host("kokoa.test")]).with_timeout(Duration::from_secs(5))
}

/// A server under test: where it answers, the key that may update its zone, and the
/// server itself, stopped when this is dropped.
struct Target {
    port: u16,
    key: (String, TsigAlgorithm, String),
    _server: Box<dyn Send>,
}

impl Target {
    fn provider(&self) -> Rfc2136Provider {
        let (name, algorithm, secret) = &self.key;
        let key = TsigKey::new(name, *algorithm, secret).expect("TSIG key");
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        Rfc2136Provider::new(address, key, [host("kokoa.test")])
            .with_timeout(Duration::from_secs(5))
    }

    fn dig(&self, name: &str, kind: &str) -> Vec<String> {
        common::dig(self.port, name, kind)
    }
}

/// Someone else's record, in the set the tests write to: it must survive everything.
const FOREIGN: &str = "app.kokoa.test. 30 IN A 192.0.2.50";

async fn powerdns() -> Target {
    let (pdns, mut keys) = server().await;
    pdns.call(
        "PATCH",
        "/zones/kokoa.test.",
        json!({ "rrsets": [{
            "name": "app.kokoa.test.", "type": "A", "ttl": 30, "changetype": "REPLACE",
            "records": [{ "content": "192.0.2.50", "disabled": false }],
        }]}),
        204,
    )
    .await;
    Target {
        port: pdns.dns_port,
        key: keys.swap_remove(0),
        _server: Box::new(pdns),
    }
}

async fn updatable(flavour: Flavour) -> Target {
    let server = Updatable::start(flavour, "kokoa.test", &[FOREIGN]).await;
    Target {
        port: server.port,
        key: (
            updatable::KEY_NAME.to_owned(),
            TsigAlgorithm::HmacSha256,
            server.secret.clone(),
        ),
        _server: Box::new(server),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn powerdns_serves_what_signed_updates_write() -> Result<(), Error> {
    conformance(powerdns().await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_serves_what_signed_updates_write() -> Result<(), Error> {
    conformance(updatable(Flavour::Bind).await).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_serves_what_signed_updates_write() -> Result<(), Error> {
    conformance(updatable(Flavour::Knot).await).await
}

/// What every server must do: records written by signed updates are what `dig` answers
/// and what a zone transfer lists; an add the server would ignore is an error.
async fn conformance(server: Target) -> Result<(), Error> {
    let provider = server.provider();
    let zone = provider.find_zone(&host("kokoa.test")).await?;
    assert_eq!(zone, self::zone());
    assert_eq!(server.dig("app.kokoa.test", "A"), [FOREIGN]);

    let first = provider
        .create_record(&zone, &spec("app.kokoa.test", a("203.0.113.10"), 30))
        .await?;
    assert_eq!(first, RecordId::new("app.kokoa.test|A|203.0.113.10"));
    let v6 = RecordData::Aaaa("2001:db8::10".parse().expect("address"));
    provider
        .create_record(&zone, &spec("app.kokoa.test", v6, 30))
        .await?;
    let txt = RecordData::Txt(kokoa_core::TxtText::new("kokoa verification=abc").unwrap());
    provider
        .create_record(&zone, &spec("app.kokoa.test", txt, 30))
        .await?;
    let target = RecordData::Cname(host("app.kokoa.test"));
    provider
        .create_record(&zone, &spec("www.kokoa.test", target.clone(), 30))
        .await?;
    // Creating the same CNAME again changes nothing and succeeds.
    provider
        .create_record(&zone, &spec("www.kokoa.test", target, 30))
        .await?;
    assert_eq!(
        server.dig("app.kokoa.test", "A"),
        [FOREIGN, "app.kokoa.test. 30 IN A 203.0.113.10"]
    );
    assert_eq!(
        server.dig("app.kokoa.test", "AAAA"),
        ["app.kokoa.test. 30 IN AAAA 2001:db8::10"]
    );
    assert_eq!(
        server.dig("app.kokoa.test", "TXT"),
        ["app.kokoa.test. 30 IN TXT \"kokoa verification=abc\""]
    );
    assert_eq!(
        server.dig("www.kokoa.test", "CNAME"),
        ["www.kokoa.test. 30 IN CNAME app.kokoa.test."]
    );

    // The zone transfer lists all of them, ids as the creates returned, and nothing of
    // types outside the model (SOA, NS). The name server's own address, which only BIND's
    // and Knot's zone files hold, is left out of the comparison.
    let expected = [
        "app.kokoa.test|AAAA|2001:db8::10 30",
        "app.kokoa.test|A|192.0.2.50 30",
        "app.kokoa.test|A|203.0.113.10 30",
        "app.kokoa.test|TXT|kokoa verification=abc 30",
        "www.kokoa.test|CNAME|app.kokoa.test 30",
    ];
    let listed = |records: Vec<kokoa_dns::ProviderRecord>| {
        let mut listed: Vec<String> = records
            .iter()
            .map(|r| format!("{} {}", r.id, r.spec.ttl))
            .filter(|line| !line.starts_with("ns1."))
            .collect();
        listed.sort();
        listed
    };
    assert_eq!(listed(provider.list_records(&zone, None).await?), expected);
    let only_www = provider
        .list_records(&zone, Some(&host("www.kokoa.test").into()))
        .await?;
    assert_eq!(only_www.len(), 1);

    // Adds the server would ignore with NOERROR (RFC 2136 §3.4.2.2) are refused, name the
    // record and change nothing: an A record beside a CNAME, a CNAME beside A records,
    // a CNAME over someone else's CNAME.
    let refused = [
        (
            spec("www.kokoa.test", a("203.0.113.7"), 30),
            "www.kokoa.test. 30 IN A 203.0.113.7 not written: www.kokoa.test holds a CNAME record",
        ),
        (
            spec(
                "app.kokoa.test",
                RecordData::Cname(host("edge.kokoa.test")),
                30,
            ),
            "app.kokoa.test. 30 IN CNAME edge.kokoa.test. not written: app.kokoa.test holds other records or another CNAME",
        ),
        (
            spec(
                "www.kokoa.test",
                RecordData::Cname(host("edge.kokoa.test")),
                30,
            ),
            "www.kokoa.test. 30 IN CNAME edge.kokoa.test. not written: www.kokoa.test holds other records or another CNAME",
        ),
    ];
    for (record, message) in refused {
        let error = provider
            .create_record(&zone, &record)
            .await
            .expect_err("an add the server would ignore");
        assert!(matches!(error, Error::Conflict { .. }), "{error}");
        assert!(error.to_string().contains(message), "{error}");
    }
    assert_eq!(listed(provider.list_records(&zone, None).await?), expected);
    assert_eq!(
        server.dig("www.kokoa.test", "CNAME"),
        ["www.kokoa.test. 30 IN CNAME app.kokoa.test."]
    );
    assert!(server.dig("app.kokoa.test", "CNAME").is_empty());

    // An update replaces the value in one message; the set takes the new TTL.
    let moved = provider
        .update_record(
            &zone,
            &first,
            &spec("app.kokoa.test", a("203.0.113.12"), 60),
        )
        .await?;
    assert_eq!(moved, RecordId::new("app.kokoa.test|A|203.0.113.12"));
    assert_eq!(
        server.dig("app.kokoa.test", "A"),
        [
            "app.kokoa.test. 60 IN A 192.0.2.50",
            "app.kokoa.test. 60 IN A 203.0.113.12"
        ]
    );

    // A delete removes that value only; deleting it again changes nothing and succeeds.
    provider.delete_record(&zone, &moved).await?;
    provider.delete_record(&zone, &moved).await?;
    assert_eq!(
        server.dig("app.kokoa.test", "A"),
        ["app.kokoa.test. 60 IN A 192.0.2.50"]
    );
    // The CNAME goes by its id too, and the name is free for an A record.
    provider
        .delete_record(&zone, &RecordId::new("www.kokoa.test|CNAME|app.kokoa.test"))
        .await?;
    provider
        .create_record(&zone, &spec("www.kokoa.test", a("203.0.113.7"), 30))
        .await?;
    assert_eq!(
        server.dig("www.kokoa.test", "A"),
        ["www.kokoa.test. 30 IN A 203.0.113.7"]
    );

    let outside = provider
        .create_record(&zone, &spec("app.elsewhere.test", a("203.0.113.1"), 30))
        .await
        .expect_err("outside the zone");
    assert!(matches!(outside, Error::OutsideZone { .. }), "{outside}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_signs_updates_powerdns_accepts() -> Result<(), Error> {
    let (pdns, keys) = server().await;
    for (index, (name, algorithm, secret)) in keys.iter().enumerate() {
        let provider = provider(&pdns, name, *algorithm, secret);
        let ip = format!("198.51.100.{}", index + 1);
        provider
            .create_record(&zone(), &spec("alg.kokoa.test", a(&ip), 30))
            .await?;
        let listed = provider
            .list_records(&zone(), Some(&host("alg.kokoa.test").into()))
            .await?;
        assert_eq!(listed.len(), index + 1, "{algorithm}");
    }
    assert_eq!(
        pdns.dig("alg.kokoa.test", "A"),
        [
            "alg.kokoa.test. 30 IN A 198.51.100.1",
            "alg.kokoa.test. 30 IN A 198.51.100.2",
            "alg.kokoa.test. 30 IN A 198.51.100.3",
        ]
    );
    Ok(())
}

fn edge(id: &str, v4: &str, state: EdgeState) -> EdgeTarget {
    EdgeTarget {
        id: EdgeNodeId::parse(id).expect("test edge id"),
        ipv4: Some(v4.parse().expect("test address")),
        ipv6: None,
        state,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_keeps_the_zone_in_step_with_the_edges() -> Result<(), Error> {
    let (pdns, keys) = server().await;
    let (name, algorithm, secret) = &keys[0];
    let provider = Arc::new(provider(&pdns, name, *algorithm, secret));
    let reconciler = Reconciler::new(provider, zone());
    let mut desired = DesiredState::default();
    desired.hostnames.insert(host("app.kokoa.test"));
    desired.edges = vec![
        edge("edge-1", "203.0.113.10", EdgeState::Serving),
        edge("edge-2", "203.0.113.11", EdgeState::Serving),
    ];

    let plan = reconciler.plan(&desired, &BTreeSet::new()).await?;
    assert_eq!(plan.creates.len(), 2, "{plan}");
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(
        pdns.dig("app.kokoa.test", "A"),
        [
            "app.kokoa.test. 30 IN A 203.0.113.10",
            "app.kokoa.test. 30 IN A 203.0.113.11"
        ]
    );
    assert!(reconciler.plan(&desired, &report.owned).await?.is_empty());

    desired.edges[1].state = EdgeState::Unhealthy;
    let plan = reconciler.plan(&desired, &report.owned).await?;
    assert_eq!(
        plan.to_string(),
        "- app.kokoa.test. 30 IN A 203.0.113.11 (id app.kokoa.test|A|203.0.113.11): edge edge-2 is unhealthy\n"
    );
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(
        pdns.dig("app.kokoa.test", "A"),
        ["app.kokoa.test. 30 IN A 203.0.113.10"]
    );
    assert!(reconciler.plan(&desired, &report.owned).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_or_an_unknown_key_is_refused_and_changes_nothing() {
    let (pdns, keys) = server().await;
    let (name, algorithm, secret) = &keys[0];
    let wrong_secret = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZyE=";
    for (key_name, key_secret) in [(name.as_str(), wrong_secret), ("stranger", secret.as_str())] {
        let provider = provider(&pdns, key_name, *algorithm, key_secret);
        let error = provider
            .create_record(&zone(), &spec("app.kokoa.test", a("203.0.113.66"), 30))
            .await
            .expect_err("refused");
        assert!(matches!(error, Error::Auth { .. }), "{error}");
        let text = error.to_string();
        // PowerDNS answers an update it cannot verify with an unsigned REFUSED.
        assert!(text.contains("REFUSED"), "{text}");
        assert!(text.contains(&format!("TSIG key {key_name}.")), "{text}");
        assert!(!text.contains(key_secret), "{text}");
        assert!(!format!("{provider:?}").contains(key_secret));

        let error = provider
            .list_records(&zone(), None)
            .await
            .expect_err("transfer refused");
        assert!(matches!(error, Error::Auth { .. }), "{error}");
    }
    assert!(pdns.dig("app.kokoa.test", "A").is_empty());
}

/// How the stub server answers.
#[derive(Clone, Copy)]
enum Stub {
    /// With this response code, unsigned.
    Rcode(Rcode),
    /// NOTAUTH with a TSIG record carrying this error and no MAC, as RFC 8945 §5.2 says a
    /// server answers a request whose signature it does not accept.
    TsigError(Rcode),
    /// Reads the request and never answers.
    Silent,
}

/// A TCP DNS server on loopback answering `answers` requests, one per connection.
async fn stub(answers: usize, how: Stub) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        for _ in 0..answers {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let mut length = [0; 2];
            stream.read_exact(&mut length).await.expect("length");
            let mut bytes = vec![0; usize::from(u16::from_be_bytes(length))];
            stream.read_exact(&mut bytes).await.expect("request");
            let request = Message::decode(&bytes).expect("the request is a DNS message");
            let mut answer = Message {
                id: request.id,
                flags: request.flags | 1 << 15,
                questions: request.questions.clone(),
                ..Message::default()
            };
            match how {
                Stub::Silent => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
                Stub::Rcode(rcode) => answer.flags |= rcode.0,
                Stub::TsigError(error) => {
                    answer.flags |= Rcode::NOTAUTH.0;
                    let Some(Record {
                        name,
                        data: RData::Tsig(tsig),
                        ..
                    }) = request.additionals.last()
                    else {
                        panic!("the request is not signed");
                    };
                    answer.additionals.push(Record {
                        name: name.clone(),
                        kind: TYPE_TSIG,
                        class: CLASS_ANY,
                        ttl: 0,
                        data: RData::Tsig(Tsig {
                            mac: Vec::new(),
                            error,
                            ..tsig.clone()
                        }),
                    });
                }
            }
            let bytes = answer.encode().expect("encode");
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend(bytes);
            stream.write_all(&framed).await.expect("answer");
        }
    });
    address
}

fn stub_provider(address: SocketAddr) -> Rfc2136Provider {
    let key =
        TsigKey::new(KEY_NAME, TsigAlgorithm::HmacSha256, "c3R1Yi1zZWNyZXQ=").expect("TSIG key");
    Rfc2136Provider::new(address, key, [host("kokoa.test")])
        .with_timeout(Duration::from_millis(300))
}

async fn create_via(how: Stub) -> Error {
    let provider = stub_provider(stub(1, how).await);
    provider
        .create_record(&zone(), &spec("app.kokoa.test", a("203.0.113.10"), 30))
        .await
        .expect_err("the stub never accepts")
}

#[tokio::test]
async fn tsig_errors_are_auth_errors_naming_the_key() {
    for code in [Rcode::BADKEY, Rcode::BADSIG, Rcode::BADTIME] {
        let error = create_via(Stub::TsigError(code)).await;
        assert!(matches!(error, Error::Auth { .. }), "{error}");
        let expected = format!("the server refused the TSIG key kokoa-key.: {code}");
        assert!(error.to_string().contains(&expected), "{error}");
        assert!(!error.is_retryable());
    }
    let provider = stub_provider(stub(1, Stub::TsigError(Rcode::BADKEY)).await);
    let error = provider
        .list_records(&zone(), None)
        .await
        .expect_err("transfer refused");
    assert!(
        error
            .to_string()
            .contains("AXFR kokoa.test from 127.0.0.1:"),
        "{error}"
    );
    assert!(error.to_string().contains(": BADKEY"), "{error}");
}

#[tokio::test]
async fn response_codes_map_to_error_classes() {
    let error = create_via(Stub::Rcode(Rcode::REFUSED)).await;
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    let error = create_via(Stub::Rcode(Rcode::NOTAUTH)).await;
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    assert!(error.to_string().contains("NOTAUTH"), "{error}");
    for code in [Rcode::NXDOMAIN, Rcode::NOTZONE] {
        let error = create_via(Stub::Rcode(code)).await;
        assert!(error.is_not_found(), "{error}");
        assert!(error.to_string().contains(&code.to_string()), "{error}");
    }
    let error = create_via(Stub::Rcode(Rcode::SERVFAIL)).await;
    assert!(matches!(error, Error::Transient { .. }), "{error}");
    assert!(error.is_retryable());
    // Success that is not signed is not believed.
    let error = create_via(Stub::Rcode(Rcode::NOERROR)).await;
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    assert!(error.to_string().contains("not signed"), "{error}");
}

#[tokio::test]
async fn silence_and_closed_ports_are_transient() {
    let error = create_via(Stub::Silent).await;
    assert!(matches!(error, Error::Transient { .. }), "{error}");
    assert!(
        error.to_string().contains("no answer within 0.3 s"),
        "{error}"
    );
    // A port nothing listens on: bound, then released.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address")
    };
    let error = stub_provider(closed)
        .delete_record(&zone(), &RecordId::new("app.kokoa.test|A|203.0.113.10"))
        .await
        .expect_err("nothing listens");
    assert!(error.is_retryable(), "{error}");
}
