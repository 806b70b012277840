//! The Route 53 provider against a local mock of the 2013-04-01 REST API: every request is
//! checked for its exact method, path, query and XML body, and its SigV4 `Authorization`
//! is recomputed here with `kokoa_core::sigv4` from what arrived, at a fixed clock. The
//! answers are the documented response shapes kept in `tests/fixtures/route53/`; the
//! reconciler runs against a stateful fake that applies the change batches it receives.
#![cfg(feature = "route53")]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use kokoa_core::{
    EdgeNodeId, Hostname, RecordData, Timestamp,
    sigv4::{self, Credentials, Payload},
};
use kokoa_dns::{
    DesiredState, DnsProvider, EdgeState, EdgeTarget, Error, Reconciler, RecordId, RecordSpec,
    RetryPolicy, Zone,
    route53::{ChangeWait, Route53Provider},
};
use serde::Deserialize;
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{any, body_string, method, path},
};

const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const ZONE_ID: &str = "Z1D633PJN98FT9";
const RRSET: &str = "/2013-04-01/hostedzone/Z1D633PJN98FT9/rrset";
const CHANGE: &str = "/2013-04-01/hostedzone/Z1D633PJN98FT9/rrset/";

/// 2025-01-21T10:30:00Z: every request is signed at this time.
fn fixed_clock() -> Timestamp {
    Timestamp::from_unix(1_737_455_400).expect("a valid time")
}

fn credentials() -> Credentials {
    Credentials::new(KEY_ID, SECRET)
}

fn fixture(name: &str) -> String {
    let file = format!(
        "{}/tests/fixtures/route53/{name}.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn xml(status: u16, name: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(fixture(name), "text/xml")
}

/// Matches the query string exactly, so no parameter is missing, extra or encoded
/// differently from what was signed.
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

fn provider(server: &MockServer) -> Route53Provider {
    Route53Provider::with_client(reqwest::Client::new(), &server.uri(), credentials())
        .expect("provider")
        .with_clock(fixed_clock)
        // Pacing is the reconciler's and the limiter's own tests' concern; here it only
        // slows the tests down.
        .with_rate_limiter(None)
        .with_change_wait(ChangeWait {
            poll_interval: Duration::from_millis(10),
            max_wait: Duration::from_secs(5),
        })
}

/// Recomputes the signature of every request the server received and compares it with the
/// `Authorization` header sent: GETs sign `host;x-amz-date`, POSTs `content-type` too.
async fn assert_signed(server: &MockServer) {
    let requests = server.received_requests().await.expect("recording is on");
    assert!(!requests.is_empty(), "no request was made");
    for request in requests {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("{} {} has no {name}", request.method, request.url))
                .to_str()
                .expect("a text header")
                .to_owned()
        };
        assert_eq!(header("x-amz-date"), "20250121T103000Z");
        let pairs: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let content_type = request
            .headers
            .get("content-type")
            .map(|_| header("content-type"));
        let headers: Vec<(&str, &str)> = content_type
            .as_deref()
            .map(|value| ("content-type", value))
            .into_iter()
            .collect();
        let host = header("host");
        let expected = sigv4::sign(
            &credentials(),
            "us-east-1",
            "route53",
            fixed_clock(),
            &sigv4::Request {
                method: request.method.as_str(),
                host: &host,
                path: request.url.path(),
                query: &pairs,
                headers: &headers,
                payload: Payload::Bytes(&request.body),
                ..sigv4::Request::default()
            },
        );
        let authorization = header("authorization");
        assert_eq!(Some(authorization.as_str()), expected.get("authorization"));
        let signed = if request.method.as_str() == "POST" {
            "content-type;host;x-amz-date"
        } else {
            "host;x-amz-date"
        };
        assert!(
            authorization.starts_with(&format!(
                "AWS4-HMAC-SHA256 Credential={KEY_ID}/20250121/us-east-1/route53/aws4_request, SignedHeaders={signed}, "
            )),
            "{authorization}"
        );
    }
}

fn change_body(action: &str, name: &str, kind: &str, ttl: u32, values: &[&str]) -> String {
    let records: String = values
        .iter()
        .map(|v| format!("<ResourceRecord><Value>{v}</Value></ResourceRecord>"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
         <ChangeBatch><Comment>managed-by: kokoa</Comment><Changes><Change><Action>{action}</Action>\
         <ResourceRecordSet><Name>{name}</Name><Type>{kind}</Type><TTL>{ttl}</TTL>\
         <ResourceRecords>{records}</ResourceRecords></ResourceRecordSet>\
         </Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
    )
}

/// Mounts the ChangeResourceRecordSets call expecting `body`, and GetChange answering
/// PENDING once, then INSYNC.
async fn expect_change(server: &MockServer, body: String) {
    Mock::given(method("POST"))
        .and(path(CHANGE))
        .and(query(""))
        .and(body_string(body))
        .respond_with(xml(200, "change_pending"))
        .expect(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/2013-04-01/change/C2682N5HXP0BZ4"))
        .respond_with(xml(200, "get_change_pending"))
        .up_to_n_times(1)
        .expect(1)
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/2013-04-01/change/C2682N5HXP0BZ4"))
        .respond_with(xml(200, "get_change_insync"))
        .expect(1)
        .mount(server)
        .await;
}

async fn expect_set_read(server: &MockServer, expected_query: &'static str, answer: &str) {
    Mock::given(method("GET"))
        .and(path(RRSET))
        .and(query(expected_query))
        .respond_with(xml(200, answer))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn public_zones_are_listed_over_every_page() -> Result<(), Error> {
    let server = MockServer::start().await;
    for (expected, answer) in [
        ("maxitems=100", "list_hosted_zones_page1"),
        (
            "marker=Z2682N5HXP0BZ4&maxitems=100",
            "list_hosted_zones_page2",
        ),
    ] {
        Mock::given(method("GET"))
            .and(path("/2013-04-01/hostedzone"))
            .and(query(expected))
            .respond_with(xml(200, answer))
            .expect(1)
            .mount(&server)
            .await;
    }
    let zones = provider(&server).list_zones().await?;
    // The private zone internal.hoge.com is left out; ids lose their /hostedzone/ prefix.
    assert_eq!(
        zones,
        [
            zone(),
            Zone {
                id: "Z3M3LMPEXAMPLE".into(),
                name: host("fuga.net"),
            }
        ]
    );
    assert_signed(&server).await;
    Ok(())
}

#[tokio::test]
async fn records_are_listed_over_every_page() -> Result<(), Error> {
    let server = MockServer::start().await;
    expect_set_read(&server, "maxitems=300", "list_rrsets_page1").await;
    expect_set_read(
        &server,
        "maxitems=300&name=app.hoge.com.&type=TXT",
        "list_rrsets_page2",
    )
    .await;
    let records = provider(&server).list_records(&zone(), None).await?;
    // MX, the alias and the weighted set are outside the model; the TXT loses its quotes
    // and the wildcard its \052.
    let lines: Vec<String> = records
        .iter()
        .map(|r| format!("{} {}", r.id, r.spec))
        .collect();
    assert_eq!(
        lines,
        [
            "app.hoge.com|A|198.51.100.4 app.hoge.com. 60 IN A 198.51.100.4",
            "app.hoge.com|A|203.0.113.20 app.hoge.com. 60 IN A 203.0.113.20",
            "app.hoge.com|TXT|hello from elsewhere app.hoge.com. 300 IN TXT \"hello from elsewhere\"",
            "*.dev.hoge.com|CNAME|app.hoge.com *.dev.hoge.com. 300 IN CNAME app.hoge.com.",
        ]
    );
    assert_signed(&server).await;
    Ok(())
}

#[tokio::test]
async fn records_of_one_name_stop_at_the_next_name() -> Result<(), Error> {
    let server = MockServer::start().await;
    expect_set_read(
        &server,
        "maxitems=300&name=app.hoge.com.",
        "list_rrsets_page1",
    )
    .await;
    expect_set_read(
        &server,
        "maxitems=300&name=app.hoge.com.&type=TXT",
        "list_rrsets_page2",
    )
    .await;
    let records = provider(&server)
        .list_records(&zone(), Some(&host("app.hoge.com").into()))
        .await?;
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.spec.name == host("app.hoge.com")));
    assert_signed(&server).await;
    Ok(())
}

#[tokio::test]
async fn create_upserts_the_set_with_the_value_added_and_waits_for_insync() -> Result<(), Error> {
    let server = MockServer::start().await;
    expect_set_read(
        &server,
        "maxitems=1&name=app.hoge.com.&type=A",
        "rrset_app_a",
    )
    .await;
    expect_change(
        &server,
        change_body(
            "UPSERT",
            "app.hoge.com.",
            "A",
            60,
            &["198.51.100.4", "203.0.113.10"],
        ),
    )
    .await;
    let id = provider(&server)
        .create_record(&zone(), &a_record("app.hoge.com", "203.0.113.10", 60))
        .await?;
    assert_eq!(id, RecordId::new("app.hoge.com|A|203.0.113.10"));
    assert_signed(&server).await;
    Ok(())
}

#[tokio::test]
async fn a_new_name_gets_a_new_set_with_quoted_txt() -> Result<(), Error> {
    let server = MockServer::start().await;
    // Listing from a name that has no set answers the next one: there is none to extend.
    expect_set_read(
        &server,
        "maxitems=1&name=txt.hoge.com.&type=TXT",
        "rrset_next_name",
    )
    .await;
    expect_change(
        &server,
        change_body("UPSERT", "txt.hoge.com.", "TXT", 30, &["\"token value\""]),
    )
    .await;
    let spec = RecordSpec {
        name: host("txt.hoge.com").into(),
        data: RecordData::Txt(kokoa_core::TxtText::new("token value").unwrap()),
        ttl: 30,
    };
    let id = provider(&server).create_record(&zone(), &spec).await?;
    assert_eq!(id.as_str(), "txt.hoge.com|TXT|token value");
    assert_signed(&server).await;
    Ok(())
}

#[tokio::test]
async fn a_value_already_in_place_sends_no_change() -> Result<(), Error> {
    let server = MockServer::start().await;
    expect_set_read(
        &server,
        "maxitems=1&name=app.hoge.com.&type=A",
        "rrset_app_a",
    )
    .await;
    let id = provider(&server)
        .create_record(&zone(), &a_record("app.hoge.com", "198.51.100.4", 60))
        .await?;
    assert_eq!(id.as_str(), "app.hoge.com|A|198.51.100.4");
    assert_eq!(server.received_requests().await.map(|r| r.len()), Some(1));
    Ok(())
}

#[tokio::test]
async fn a_ttl_update_rewrites_the_set() -> Result<(), Error> {
    let server = MockServer::start().await;
    expect_set_read(
        &server,
        "maxitems=1&name=app.hoge.com.&type=A",
        "rrset_app_a_two_values",
    )
    .await;
    expect_change(
        &server,
        change_body(
            "UPSERT",
            "app.hoge.com.",
            "A",
            300,
            &["203.0.113.20", "198.51.100.4"],
        ),
    )
    .await;
    let id = RecordId::new("app.hoge.com|A|198.51.100.4");
    let updated = provider(&server)
        .update_record(&zone(), &id, &a_record("app.hoge.com", "198.51.100.4", 300))
        .await?;
    assert_eq!(updated, id);
    assert_signed(&server).await;
    Ok(())
}

#[tokio::test]
async fn delete_upserts_the_other_values() -> Result<(), Error> {
    let server = MockServer::start().await;
    expect_set_read(
        &server,
        "maxitems=1&name=app.hoge.com.&type=A",
        "rrset_app_a_two_values",
    )
    .await;
    expect_change(
        &server,
        change_body("UPSERT", "app.hoge.com.", "A", 60, &["203.0.113.20"]),
    )
    .await;
    provider(&server)
        .delete_record(&zone(), &RecordId::new("app.hoge.com|A|198.51.100.4"))
        .await?;
    assert_signed(&server).await;
    Ok(())
}

#[tokio::test]
async fn deleting_the_last_value_deletes_the_set_exactly_as_it_is() -> Result<(), Error> {
    let server = MockServer::start().await;
    expect_set_read(
        &server,
        "maxitems=1&name=app.hoge.com.&type=A",
        "rrset_app_a",
    )
    .await;
    expect_change(
        &server,
        change_body("DELETE", "app.hoge.com.", "A", 60, &["198.51.100.4"]),
    )
    .await;
    provider(&server)
        .delete_record(&zone(), &RecordId::new("app.hoge.com|A|198.51.100.4"))
        .await?;
    assert_signed(&server).await;
    Ok(())
}

#[tokio::test]
async fn missing_values_and_foreign_sets_are_not_touched() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(RRSET))
        .and(query("maxitems=1&name=app.hoge.com.&type=A"))
        .respond_with(xml(200, "rrset_app_a"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RRSET))
        .and(query("maxitems=1&name=www.hoge.com.&type=A"))
        .respond_with(xml(200, "rrset_www_alias"))
        .mount(&server)
        .await;
    let route53 = provider(&server);
    let error = route53
        .delete_record(&zone(), &RecordId::new("app.hoge.com|A|192.0.2.1"))
        .await
        .expect_err("no such value");
    assert!(error.is_not_found(), "{error}");
    assert!(
        error
            .to_string()
            .contains("no A record 192.0.2.1 at app.hoge.com"),
        "{error}"
    );
    let error = route53
        .create_record(&zone(), &a_record("www.hoge.com", "203.0.113.10", 60))
        .await
        .expect_err("an alias is in the way");
    assert!(matches!(error, Error::Conflict { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("www.hoge.com A is an alias record"),
        "{error}"
    );
    let error = route53
        .delete_record(&zone(), &RecordId::new("nonsense"))
        .await
        .expect_err("not an id");
    assert!(matches!(error, Error::InvalidRecordId { .. }), "{error}");
    // No change was sent.
    let requests = server.received_requests().await.expect("recording is on");
    assert!(requests.iter().all(|r| r.method.as_str() == "GET"));
}

#[tokio::test]
async fn a_change_that_stays_pending_is_a_transient_error() {
    let server = MockServer::start().await;
    expect_set_read(
        &server,
        "maxitems=1&name=app.hoge.com.&type=A",
        "rrset_app_a",
    )
    .await;
    Mock::given(method("POST"))
        .and(path(CHANGE))
        .respond_with(xml(200, "change_pending"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/2013-04-01/change/C2682N5HXP0BZ4"))
        .respond_with(xml(200, "get_change_pending"))
        .mount(&server)
        .await;
    let route53 = provider(&server).with_change_wait(ChangeWait {
        poll_interval: Duration::from_millis(10),
        max_wait: Duration::from_millis(50),
    });
    let error = route53
        .create_record(&zone(), &a_record("app.hoge.com", "203.0.113.10", 60))
        .await
        .expect_err("never in sync");
    assert!(matches!(error, Error::Transient { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("change C2682N5HXP0BZ4 is still PENDING"),
        "{error}"
    );
    // Polled every 10 ms for 50 ms: a bounded number of calls.
    let polls = server
        .received_requests()
        .await
        .expect("recording is on")
        .iter()
        .filter(|r| r.url.path().starts_with("/2013-04-01/change/"))
        .count();
    assert!((1..=6).contains(&polls), "{polls} polls");
}

/// Answers every request with `status` and the error fixture `name`.
async fn failing(status: u16, name: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(xml(status, name))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn errors_map_to_their_classes() {
    type Class = fn(&Error) -> bool;
    let cases: [(u16, &str, Class, &str); 8] = [
        (
            403,
            "error_signature_does_not_match",
            |e| matches!(e, Error::Auth { .. }),
            "SignatureDoesNotMatch: The request signature we calculated",
        ),
        (
            403,
            "error_access_denied",
            |e| matches!(e, Error::Auth { .. }),
            "AccessDenied: User: arn:aws:iam::123456789012:user/kokoa is not authorized",
        ),
        (
            403,
            "error_invalid_client_token_id",
            |e| matches!(e, Error::Auth { .. }),
            "InvalidClientTokenId",
        ),
        (
            404,
            "error_no_such_hosted_zone",
            Error::is_not_found,
            "NoSuchHostedZone: No hosted zone found with ID: Z1D633PJN98FT9",
        ),
        (
            400,
            "error_throttling",
            |e| {
                matches!(
                    e,
                    Error::RateLimited {
                        retry_after: None,
                        ..
                    }
                )
            },
            "rate limited",
        ),
        (
            400,
            "error_prior_request_not_complete",
            |e| matches!(e, Error::RateLimited { .. }),
            "rate limited",
        ),
        (
            400,
            "error_invalid_change_batch",
            |e| matches!(e, Error::Other { .. }),
            "HTTP 400: InvalidChangeBatch: RRSet of type A with DNS name app.hoge.com. is not permitted",
        ),
        (
            503,
            "error_service_unavailable",
            |e| matches!(e, Error::Transient { .. }),
            "ServiceUnavailable",
        ),
    ];
    for (status, name, class, text) in cases {
        let server = failing(status, name).await;
        let route53 = provider(&server);
        let error = route53.list_zones().await.expect_err(name);
        assert!(class(&error), "{name}: {error:?}");
        let shown = error.to_string();
        assert!(shown.contains(text), "{name}: {shown}");
        if !error.is_retryable() {
            assert!(
                shown.contains("GET /2013-04-01/hostedzone?maxitems=100"),
                "{shown}"
            );
        }
        let all = format!("{shown} {error:?} {route53:?}");
        assert!(
            !all.contains(SECRET) && !all.contains("EXAMPLEKEY"),
            "{all}"
        );
    }
    // Nothing listens there: a temporary failure.
    let closed =
        Route53Provider::with_client(reqwest::Client::new(), "http://127.0.0.1:1", credentials())
            .expect("provider");
    let error = closed.list_zones().await.expect_err("closed port");
    assert!(matches!(error, Error::Transient { .. }), "{error}");
    assert!(
        Route53Provider::with_client(
            reqwest::Client::new(),
            "route53.amazonaws.com",
            credentials()
        )
        .is_err()
    );
}

#[tokio::test]
async fn a_session_token_is_sent_and_signed() -> Result<(), Error> {
    let server = MockServer::start().await;
    expect_set_read(&server, "maxitems=300", "list_rrsets_page2").await;
    let token = "FwoGZXIvYXdzEBYaDExampleSessionToken";
    Route53Provider::with_client(
        reqwest::Client::new(),
        &server.uri(),
        credentials().with_session_token(token),
    )?
    .with_clock(fixed_clock)
    .list_records(&zone(), None)
    .await?;
    let requests = server.received_requests().await.expect("recording is on");
    let sent = &requests[0].headers;
    assert_eq!(
        sent.get("x-amz-security-token").map(|v| v.as_bytes()),
        Some(token.as_bytes())
    );
    let authorization = sent
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        authorization.contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"),
        "{authorization}"
    );
    Ok(())
}

/// A zone held in memory that answers ListResourceRecordSets and applies change batches as
/// Route 53 does, two sets a page, refusing a DELETE that does not match the set.
#[derive(Clone, Default)]
struct FakeRoute53 {
    state: Arc<Mutex<FakeZone>>,
}

#[derive(Default)]
struct FakeZone {
    /// (name as Route 53 writes it, type) → (TTL, values).
    sets: BTreeMap<(String, String), (u32, Vec<String>)>,
    /// Answer this many requests with Throttling first.
    throttle: u32,
    changes: u32,
}

/// Route 53 sorts by name with the labels reversed (`com.hoge.app`), then by type.
fn route53_order(name: &str, kind: &str) -> (String, String) {
    let reversed: Vec<&str> = name.trim_end_matches('.').rsplit('.').collect();
    (reversed.join("."), kind.to_owned())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeRequest {
    change_batch: ChangeBatch,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeBatch {
    changes: Changes,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Changes {
    change: Vec<ChangeItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeItem {
    action: String,
    resource_record_set: SetItem,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SetItem {
    name: String,
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "TTL")]
    ttl: u32,
    resource_records: Records,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Records {
    resource_record: Vec<ValueItem>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ValueItem {
    value: String,
}

impl FakeZone {
    fn list(&self, request: &Request) -> ResponseTemplate {
        let param = |name: &str| {
            request
                .url
                .query_pairs()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.into_owned())
        };
        let max: usize = param("maxitems")
            .and_then(|m| m.parse().ok())
            .unwrap_or(300);
        let start = route53_order(
            &param("name").unwrap_or_default(),
            &param("type").unwrap_or_default(),
        );
        let mut sorted: Vec<_> = self
            .sets
            .iter()
            .map(|((name, kind), value)| (route53_order(name, kind), name, kind, value))
            .filter(|(order, ..)| *order >= start)
            .collect();
        sorted.sort();
        let page = max.min(2);
        let mut body = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <ListResourceRecordSetsResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\"><ResourceRecordSets>",
        );
        for (_, name, kind, (ttl, values)) in sorted.iter().take(page) {
            body.push_str(&format!(
                "<ResourceRecordSet><Name>{name}</Name><Type>{kind}</Type><TTL>{ttl}</TTL><ResourceRecords>"
            ));
            for value in values {
                body.push_str(&format!(
                    "<ResourceRecord><Value>{value}</Value></ResourceRecord>"
                ));
            }
            body.push_str("</ResourceRecords></ResourceRecordSet>");
        }
        body.push_str("</ResourceRecordSets>");
        match sorted.get(page) {
            Some((_, name, kind, _)) => body.push_str(&format!(
                "<IsTruncated>true</IsTruncated><NextRecordName>{name}</NextRecordName><NextRecordType>{kind}</NextRecordType>"
            )),
            None => body.push_str("<IsTruncated>false</IsTruncated>"),
        }
        body.push_str(&format!(
            "<MaxItems>{max}</MaxItems></ListResourceRecordSetsResponse>"
        ));
        ResponseTemplate::new(200).set_body_raw(body, "text/xml")
    }

    fn apply(&mut self, request: &Request) -> ResponseTemplate {
        let text = String::from_utf8_lossy(&request.body);
        let batch: ChangeRequest = quick_xml::de::from_str(&text).expect("a ChangeBatch");
        for change in batch.change_batch.changes.change {
            let set = change.resource_record_set;
            let key = (set.name, set.kind);
            let values: Vec<String> = set
                .resource_records
                .resource_record
                .into_iter()
                .map(|v| v.value)
                .collect();
            match change.action.as_str() {
                "UPSERT" => {
                    self.sets.insert(key, (set.ttl, values));
                }
                "DELETE" if self.sets.get(&key) == Some(&(set.ttl, values)) => {
                    self.sets.remove(&key);
                }
                _ => return xml(400, "error_invalid_change_batch"),
            }
        }
        self.changes += 1;
        xml(200, "change_pending")
    }
}

impl Respond for FakeRoute53 {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut zone = self.state.lock().expect("not poisoned");
        if zone.throttle > 0 {
            zone.throttle -= 1;
            return xml(400, "error_throttling");
        }
        match (request.method.as_str(), request.url.path()) {
            ("GET", RRSET) => zone.list(request),
            ("POST", CHANGE) => zone.apply(request),
            ("GET", "/2013-04-01/change/C2682N5HXP0BZ4") => xml(200, "get_change_insync"),
            _ => xml(404, "error_no_such_hosted_zone"),
        }
    }
}

#[tokio::test]
async fn the_reconciler_reaches_the_desired_state_through_throttling() {
    let fake = FakeRoute53::default();
    {
        let mut zone = fake.state.lock().expect("not poisoned");
        let mut put = |name: &str, kind: &str, ttl: u32, values: &[&str]| {
            zone.sets.insert(
                (name.to_owned(), kind.to_owned()),
                (ttl, values.iter().map(|v| (*v).to_owned()).collect()),
            );
        };
        put("hoge.com.", "NS", 172800, &["ns-2048.awsdns-64.com."]);
        put(
            "hoge.com.",
            "SOA",
            900,
            &["ns-2048.awsdns-64.com. hostmaster.example.com. 1 7200 900 1209600 86400"],
        );
        // The manager's record for edge-2, and someone else's TXT at the same name.
        put("app.hoge.com.", "A", 60, &["198.51.100.4"]);
        put("app.hoge.com.", "TXT", 300, &["\"hello from elsewhere\""]);
        // The first call is throttled; the reconciler retries it.
        zone.throttle = 1;
    }
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(fake.clone())
        .mount(&server)
        .await;

    let reconciler = Reconciler::new(Arc::new(provider(&server)), zone())
        .with_rate_limiter(None)
        .with_retry(RetryPolicy {
            attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
        });
    let mut desired = DesiredState {
        ttl: 60,
        ..DesiredState::default()
    };
    desired.hostnames.insert(host("app.hoge.com"));
    desired.hostnames.insert(host("www.hoge.com"));
    for (id, ipv4, ipv6, state) in [
        (
            "edge-1",
            Some("203.0.113.10"),
            Some("2001:db8::10"),
            EdgeState::Serving,
        ),
        ("edge-2", Some("198.51.100.4"), None, EdgeState::Unhealthy),
    ] {
        desired.edges.push(EdgeTarget {
            id: EdgeNodeId::parse(id).expect("test id"),
            ipv4: ipv4.map(|ip| ip.parse().expect("test address")),
            ipv6: ipv6.map(|ip| ip.parse().expect("test address")),
            state,
        });
    }
    let owned = BTreeSet::from([RecordId::new("app.hoge.com|A|198.51.100.4")]);
    let plan = reconciler
        .plan(&desired, &owned)
        .await
        .expect("plan after a retry");
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);

    let zone_now = {
        let zone = fake.state.lock().expect("not poisoned");
        zone.sets
            .iter()
            .map(|((name, kind), (ttl, values))| {
                format!("{name} {ttl} {kind} {}", values.join(","))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        zone_now,
        [
            "app.hoge.com. 60 A 203.0.113.10",
            "app.hoge.com. 60 AAAA 2001:db8::10",
            "app.hoge.com. 300 TXT \"hello from elsewhere\"",
            "hoge.com. 172800 NS ns-2048.awsdns-64.com.",
            "hoge.com. 900 SOA ns-2048.awsdns-64.com. hostmaster.example.com. 1 7200 900 1209600 86400",
            "www.hoge.com. 60 A 203.0.113.10",
            "www.hoge.com. 60 AAAA 2001:db8::10",
        ]
    );
    assert_eq!(
        report.owned,
        BTreeSet::from([
            RecordId::new("app.hoge.com|A|203.0.113.10"),
            RecordId::new("app.hoge.com|AAAA|2001:db8::10"),
            RecordId::new("www.hoge.com|A|203.0.113.10"),
            RecordId::new("www.hoge.com|AAAA|2001:db8::10"),
        ])
    );
    // Reached: nothing left to do.
    let again = reconciler
        .plan(&desired, &report.owned)
        .await
        .expect("plan");
    assert!(again.is_empty(), "{again}");
    assert_eq!(fake.state.lock().expect("not poisoned").changes, 5);
    assert_signed(&server).await;
}
