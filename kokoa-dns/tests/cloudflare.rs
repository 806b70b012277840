//! The Cloudflare provider against a local mock of API v4: every request is checked for its
//! exact method, path, query, `Authorization` header and JSON body, and answered with the
//! documented response shapes kept in `tests/fixtures/cloudflare/`.
#![cfg(feature = "cloudflare")]

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use kokoa_core::{EdgeNodeId, Hostname, RecordData};
use kokoa_dns::{
    DesiredState, DnsProvider, EdgeState, EdgeTarget, Error, Reconciler, RecordId, RecordSpec,
    Zone, cloudflare::CloudflareProvider,
};
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, ResponseTemplate,
    matchers::{body_json, header, method, path},
};

const TOKEN: &str = "cf-test-token-4f1c";
const ZONE_ID: &str = "9a7806061c88ada191ed06f989cc3dac";
const RECORD_ID: &str = "372e67954025e0ba6aaa6d586b9e0b59";

fn fixture(name: &str) -> Value {
    let file = format!(
        "{}/tests/fixtures/cloudflare/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Matches the query string exactly, so no parameter is missing or extra.
fn query(expected: &'static str) -> impl Fn(&Request) -> bool + Send + Sync + 'static {
    move |request: &Request| request.url.query().unwrap_or_default() == expected
}

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("test host name")
}

fn zone() -> Zone {
    Zone {
        id: ZONE_ID.into(),
        name: host("hoge.com"),
    }
}

fn a_record(name: &str, ip: &str, ttl: u32) -> RecordSpec {
    RecordSpec {
        name: host(name).into(),
        data: RecordData::A(ip.parse().expect("test address")),
        ttl,
    }
}

async fn provider(server: &MockServer) -> CloudflareProvider {
    let base = format!("{}/client/v4", server.uri());
    CloudflareProvider::with_client(reqwest::Client::new(), &base, TOKEN).expect("provider")
}

fn records_path() -> String {
    format!("/client/v4/zones/{ZONE_ID}/dns_records")
}

fn record_path(id: &str) -> String {
    format!("/client/v4/zones/{ZONE_ID}/dns_records/{id}")
}

fn bearer() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

#[tokio::test]
async fn a_zone_is_found_by_name() -> Result<(), Error> {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/client/v4/zones"))
        .and(query("name=hoge.com&page=1&per_page=50"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("zones_by_name")))
        .expect(1)
        .mount(&server)
        .await;
    let zone = provider(&server).await.find_zone(&host("hoge.com")).await?;
    assert_eq!(zone, self::zone());
    Ok(())
}

#[tokio::test]
async fn records_are_listed_over_every_page() -> Result<(), Error> {
    let server = MockServer::start().await;
    for (page, file) in [(1, "dns_records_page1"), (2, "dns_records_page2")] {
        let expected = if page == 1 {
            "name=app.hoge.com&page=1&per_page=100"
        } else {
            "name=app.hoge.com&page=2&per_page=100"
        };
        Mock::given(method("GET"))
            .and(path(records_path()))
            .and(query(expected))
            .and(bearer())
            .respond_with(ResponseTemplate::new(200).set_body_json(fixture(file)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let records = provider(&server)
        .await
        .list_records(&zone(), Some(&host("app.hoge.com").into()))
        .await?;
    // The MX record is outside the model and left out; the TXT comes without its quotes.
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].id, RecordId::new(RECORD_ID));
    assert_eq!(
        records[0].spec,
        a_record("app.hoge.com", "198.51.100.4", 60)
    );
    assert_eq!(
        records[1].spec.data,
        RecordData::Txt(kokoa_core::TxtText::new("hello from elsewhere").unwrap())
    );
    Ok(())
}

#[tokio::test]
async fn create_update_and_delete_send_the_documented_requests() -> Result<(), Error> {
    let server = MockServer::start().await;
    let body = |ttl: u32, ip: &str| {
        json!({
            "type": "A", "name": "app.hoge.com", "content": ip, "ttl": ttl,
            "proxied": false, "comment": "managed-by: kokoa",
        })
    };
    Mock::given(method("POST"))
        .and(path(records_path()))
        .and(query(""))
        .and(bearer())
        .and(body_json(body(60, "203.0.113.10")))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("dns_records_create")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(record_path(RECORD_ID)))
        .and(bearer())
        .and(body_json(body(120, "198.51.100.4")))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("dns_records_update")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(record_path(RECORD_ID)))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("dns_records_delete")))
        .expect(1)
        .mount(&server)
        .await;

    let cloudflare = provider(&server).await;
    let created = cloudflare
        .create_record(&zone(), &a_record("app.hoge.com", "203.0.113.10", 60))
        .await?;
    assert_eq!(created.as_str(), "0e5c6b3c1f8a4d2b9e7f6a5d4c3b2a10");
    let id = RecordId::new(RECORD_ID);
    let updated = cloudflare
        .update_record(&zone(), &id, &a_record("app.hoge.com", "198.51.100.4", 120))
        .await?;
    assert_eq!(updated, id);
    cloudflare.delete_record(&zone(), &id).await?;
    Ok(())
}

#[tokio::test]
async fn txt_records_are_sent_quoted_and_unproxied() -> Result<(), Error> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(records_path()))
        .and(bearer())
        .and(body_json(json!({
            "type": "TXT", "name": "txt.hoge.com", "content": "\"token value\"", "ttl": 60,
            "comment": "managed-by: kokoa",
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("dns_records_create")))
        .expect(1)
        .mount(&server)
        .await;
    let spec = RecordSpec {
        name: host("txt.hoge.com").into(),
        data: RecordData::Txt(kokoa_core::TxtText::new("token value").unwrap()),
        ttl: 60,
    };
    provider(&server)
        .await
        .create_record(&zone(), &spec)
        .await?;
    Ok(())
}

/// Answers every request with `status`, `fixture` and extra headers.
async fn failing(status: u16, fixture_name: &str, headers: &[(&str, &str)]) -> MockServer {
    let server = MockServer::start().await;
    let mut response = ResponseTemplate::new(status).set_body_json(fixture(fixture_name));
    for (name, value) in headers {
        response = response.insert_header(*name, *value);
    }
    Mock::given(wiremock::matchers::any())
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_refused_token_is_an_auth_error_that_does_not_repeat_it() {
    let server = failing(401, "error_401", &[]).await;
    let cloudflare = provider(&server).await;
    let error = cloudflare.list_zones().await.expect_err("401");
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(
            "GET /client/v4/zones?page=1&per_page=50: HTTP 401: Authentication error [10000]"
        ),
        "{text}"
    );
    assert!(!text.contains(TOKEN) && !format!("{cloudflare:?}").contains(TOKEN));
}

#[tokio::test]
async fn a_missing_record_is_not_found() {
    let server = failing(404, "error_404", &[]).await;
    let error = provider(&server)
        .await
        .delete_record(&zone(), &RecordId::new("nope"))
        .await
        .expect_err("404");
    assert!(error.is_not_found(), "{error}");
    assert!(
        error.to_string().contains("Record does not exist. [81044]"),
        "{error}"
    );
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let server = failing(429, "error_429", &[("retry-after", "17")]).await;
    let error = provider(&server).await.list_zones().await.expect_err("429");
    match error {
        Error::RateLimited { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(17)));
        }
        other => panic!("expected RateLimited, got {other}"),
    }
}

#[tokio::test]
async fn server_errors_are_transient() {
    let server = failing(502, "error_500", &[]).await;
    let error = provider(&server).await.list_zones().await.expect_err("502");
    assert!(matches!(error, Error::Transient { .. }), "{error}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn an_identical_record_is_a_conflict() {
    let server = failing(400, "error_identical_record", &[]).await;
    let error = provider(&server)
        .await
        .create_record(&zone(), &a_record("app.hoge.com", "203.0.113.10", 60))
        .await
        .expect_err("400");
    assert!(matches!(error, Error::Conflict { .. }), "{error}");
}

#[tokio::test]
async fn the_reconciler_replaces_an_unhealthy_edge_and_leaves_foreign_records() {
    let server = MockServer::start().await;
    // The zone holds the manager's record for edge-2 (198.51.100.4), someone's MX and TXT.
    Mock::given(method("GET"))
        .and(path(records_path()))
        .and(query("page=1&per_page=100"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("dns_records_page1")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(records_path()))
        .and(query("page=2&per_page=100"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("dns_records_page2")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(records_path()))
        .and(bearer())
        .and(body_json(json!({
            "type": "A", "name": "app.hoge.com", "content": "203.0.113.10", "ttl": 60,
            "proxied": false, "comment": "managed-by: kokoa",
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("dns_records_create")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(record_path(RECORD_ID)))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("dns_records_delete")))
        .expect(1)
        .mount(&server)
        .await;

    let reconciler = Reconciler::new(Arc::new(provider(&server).await), zone());
    let mut desired = DesiredState {
        ttl: 60,
        ..DesiredState::default()
    };
    desired.hostnames.insert(host("app.hoge.com"));
    desired.hostnames.insert(host("www.hoge.com"));
    for (id, ip, state) in [
        ("edge-1", "203.0.113.10", EdgeState::Serving),
        ("edge-2", "198.51.100.4", EdgeState::Unhealthy),
    ] {
        desired.edges.push(EdgeTarget {
            id: EdgeNodeId::parse(id).expect("test id"),
            ipv4: Some(ip.parse().expect("test address")),
            ipv6: None,
            state,
        });
    }
    // www.hoge.com is served too, but its only record is a foreign TXT: an A is created
    // there as well.
    Mock::given(method("POST"))
        .and(path(records_path()))
        .and(bearer())
        .and(body_json(json!({
            "type": "A", "name": "www.hoge.com", "content": "203.0.113.10", "ttl": 60,
            "proxied": false, "comment": "managed-by: kokoa",
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("dns_records_create")))
        .expect(1)
        .mount(&server)
        .await;

    let owned = BTreeSet::from([RecordId::new(RECORD_ID)]);
    let plan = reconciler.plan(&desired, &owned).await.expect("plan");
    assert_eq!(
        plan.to_string(),
        "+ app.hoge.com. 60 IN A 203.0.113.10 (edge edge-1)\n\
         + www.hoge.com. 60 IN A 203.0.113.10 (edge edge-1)\n\
         - app.hoge.com. 60 IN A 198.51.100.4 (id 372e67954025e0ba6aaa6d586b9e0b59): edge edge-2 is unhealthy\n"
    );
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(
        report.owned,
        BTreeSet::from([RecordId::new("0e5c6b3c1f8a4d2b9e7f6a5d4c3b2a10")])
    );
}
