//! The Google Cloud DNS provider against a local mock of API v1 and of the OAuth 2.0 token
//! endpoint. The token request's JWT is decoded and its RS256 signature verified with the
//! public half of a key pair made by the test; every API request is checked for its method,
//! path, query, `Authorization: Bearer` header and JSON body, and answered with the
//! documented response shapes kept in `tests/fixtures/google/`.
#![cfg(feature = "google")]

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    encoding::AsDer,
    rsa::{KeyPair, KeySize},
    signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use kokoa_core::{EdgeNodeId, Hostname, RecordData};
use kokoa_dns::{
    DesiredState, DnsProvider, EdgeState, EdgeTarget, Error, Reconciler, RecordId, RecordSpec,
    Zone,
    google::{GoogleCloudDns, SCOPE, ServiceAccountKey},
};
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{body_json, header, method, path, path_regex},
};

const PROJECT: &str = "kokoa-demo";
const EMAIL: &str = "kokoa-dns@kokoa-demo.iam.gserviceaccount.com";
const KEY_ID: &str = "3f0c2b9a7d1e4f6a8b5c0d2e9f1a3b4c5d6e7f80";
const TOKEN: &str = "ya29.c.kokoa-test-access-token";
const ZONES: &str = "/dns/v1/projects/kokoa-demo/managedZones";
const RRSETS: &str = "/dns/v1/projects/kokoa-demo/managedZones/hoge-com/rrsets";
const CHANGES: &str = "/dns/v1/projects/kokoa-demo/managedZones/hoge-com/changes";

fn fixture(name: &str) -> Value {
    let file = format!(
        "{}/tests/fixtures/google/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A test-only RSA key pair, made once per test binary: the private key as PKCS#8 PEM, as
/// a key file holds it, and the public key (PKCS#1 DER) to verify signatures with.
fn key_pair() -> &'static (String, Vec<u8>) {
    static PAIR: OnceLock<(String, Vec<u8>)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let pair = KeyPair::generate(KeySize::Rsa2048).expect("generate an RSA key");
        let der = AsDer::as_der(&pair).expect("PKCS#8 encoding");
        let base64 = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = base64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        (pem, pair.public_key().as_ref().to_vec())
    })
}

/// The JSON key file of the test account, with its token endpoint on `server`.
fn key_file(server: &MockServer) -> String {
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": KEY_ID,
        "private_key": key_pair().0,
        "client_email": EMAIL,
        "client_id": "104523938193402257013",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": format!("{}/token", server.uri()),
    })
    .to_string()
}

fn provider(server: &MockServer) -> GoogleCloudDns {
    let key = ServiceAccountKey::from_json(&key_file(server)).expect("the key file");
    GoogleCloudDns::with_client(
        reqwest::Client::new(),
        &format!("{}/dns/v1", server.uri()),
        key,
    )
    .expect("provider")
}

/// Answers token requests with `answer`, expecting `times` of them.
async fn token_endpoint(server: &MockServer, answer: Value, times: impl Into<wiremock::Times>) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(times)
        .mount(server)
        .await;
}

/// Matches the query string exactly, so no parameter is missing or extra.
fn query(expected: &'static str) -> impl Fn(&Request) -> bool + Send + Sync + 'static {
    move |request: &Request| request.url.query().unwrap_or_default() == expected
}

fn bearer() -> wiremock::matchers::HeaderExactMatcher {
    header("authorization", format!("Bearer {TOKEN}").as_str())
}

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("test host name")
}

fn zone() -> Zone {
    Zone {
        id: "hoge-com".into(),
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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Checks a token request as Google's endpoint would: a form with the JWT bearer grant,
/// and an assertion signed RS256 by the account's key with the documented claims.
fn check_token_request(request: &Request, token_uri: &str) {
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(
        request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-www-form-urlencoded")
    );
    let body = std::str::from_utf8(&request.body).expect("a text form");
    let form = reqwest::Url::parse(&format!("http://form.invalid/?{body}")).expect("form");
    let fields: Vec<(String, String)> = form.query_pairs().into_owned().collect();
    assert_eq!(fields.len(), 2, "{body}");
    assert_eq!(
        fields[0],
        (
            "grant_type".to_owned(),
            "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned()
        )
    );
    assert_eq!(fields[1].0, "assertion");
    let parts: Vec<&str> = fields[1].1.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).expect("base64url");
    let header: Value = serde_json::from_slice(&decode(parts[0])).expect("header JSON");
    assert_eq!(
        header,
        json!({ "alg": "RS256", "typ": "JWT", "kid": KEY_ID })
    );
    let claims: Value = serde_json::from_slice(&decode(parts[1])).expect("claims JSON");
    assert_eq!(claims["iss"], EMAIL);
    assert_eq!(claims["scope"], SCOPE);
    assert_eq!(claims["aud"], token_uri);
    let iat = claims["iat"].as_u64().expect("iat");
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(now().abs_diff(iat) < 60, "iat {iat} is not now");
    assert_eq!(exp - iat, 3600, "a token for an hour at most");
    let signed = format!("{}.{}", parts[0], parts[1]);
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key_pair().1)
        .verify(signed.as_bytes(), &decode(parts[2]))
        .expect("the JWT's RS256 signature verifies with the account's public key");
}

#[tokio::test]
async fn the_token_is_asked_for_with_a_signed_jwt_and_then_kept() -> Result<(), Error> {
    let server = MockServer::start().await;
    token_endpoint(&server, fixture("token"), 1).await;
    Mock::given(method("GET"))
        .and(path(ZONES))
        .and(query(""))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("managed_zones_page1")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(ZONES))
        .and(query("pageToken=CiZob2dlLWNvbQ"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("managed_zones_page2")))
        .expect(1)
        .mount(&server)
        .await;
    let google = provider(&server);
    let zones = google.list_zones().await?;
    assert_eq!(
        zones,
        [
            zone(),
            Zone {
                id: "fuga-com".into(),
                name: host("fuga.com"),
            }
        ]
    );

    let requests = server.received_requests().await.expect("recorded requests");
    let tokens: Vec<&Request> = requests
        .iter()
        .filter(|r| r.url.path() == "/token")
        .collect();
    assert_eq!(tokens.len(), 1, "one token for both pages");
    check_token_request(tokens[0], &format!("{}/token", server.uri()));

    // Neither the key nor the token shows in Debug.
    let shown = format!("{google:?}");
    assert!(shown.contains(EMAIL), "{shown}");
    assert!(
        !shown.contains("PRIVATE KEY") && !shown.contains(TOKEN),
        "{shown}"
    );
    Ok(())
}

#[tokio::test]
async fn a_token_close_to_its_expiry_is_replaced() -> Result<(), Error> {
    let server = MockServer::start().await;
    let mut short = fixture("token");
    short["expires_in"] = json!(30);
    token_endpoint(&server, short, 2).await;
    Mock::given(method("GET"))
        .and(path(ZONES))
        .and(query("dnsName=hoge.com."))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("managed_zones_by_name")))
        .expect(2)
        .mount(&server)
        .await;
    let google = provider(&server);
    assert_eq!(google.find_zone(&host("hoge.com")).await?, zone());
    assert_eq!(google.find_zone(&host("hoge.com")).await?, zone());
    Ok(())
}

#[tokio::test]
async fn records_are_listed_over_every_page() -> Result<(), Error> {
    let server = MockServer::start().await;
    token_endpoint(&server, fixture("token"), 1).await;
    for (expected, file) in [
        ("name=app.hoge.com.", "rrsets_page1"),
        (
            "name=app.hoge.com.&pageToken=Cg1hcHAuaG9nZS5jb20uEgFB",
            "rrsets_page2",
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(RRSETS))
            .and(query(expected))
            .and(bearer())
            .respond_with(ResponseTemplate::new(200).set_body_json(fixture(file)))
            .expect(1)
            .mount(&server)
            .await;
    }
    let records = provider(&server)
        .list_records(&zone(), Some(&host("app.hoge.com").into()))
        .await?;
    // NS, SOA, MX, the two-string TXT and the geo-routed set are outside the model; the
    // mock's answers are not filtered, so the other names show that the provider filters.
    let listed: Vec<String> = records
        .iter()
        .map(|r| format!("{} {}", r.id, r.spec.ttl))
        .collect();
    assert_eq!(
        listed,
        [
            "app.hoge.com|A|198.51.100.4 60",
            "app.hoge.com|A|198.51.100.5 60",
            "app.hoge.com|TXT|hello from elsewhere 300",
        ]
    );
    Ok(())
}

/// Mounts the read of the A set of app.hoge.com, answered with `file`.
async fn read_set(server: &MockServer, file: &str) {
    Mock::given(method("GET"))
        .and(path(RRSETS))
        .and(query("name=app.hoge.com.&type=A"))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture(file)))
        .mount(server)
        .await;
}

/// The A set of app.hoge.com as `rrset_app_a` holds it, to be deleted exactly so.
fn set_as_read() -> Value {
    fixture("rrset_app_a")["rrsets"][0].clone()
}

fn set(ttl: u32, rrdatas: &[&str]) -> Value {
    json!({ "name": "app.hoge.com.", "type": "A", "ttl": ttl, "rrdatas": rrdatas })
}

#[tokio::test]
async fn a_record_is_added_to_its_set_in_one_change_that_is_waited_for() -> Result<(), Error> {
    let server = MockServer::start().await;
    token_endpoint(&server, fixture("token"), 1).await;
    read_set(&server, "rrset_app_a").await;
    Mock::given(method("POST"))
        .and(path(CHANGES))
        .and(query(""))
        .and(bearer())
        .and(body_json(json!({
            "deletions": [set_as_read()],
            "additions": [set(60, &["198.51.100.4", "203.0.113.10"])],
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("change_pending")))
        .expect(1)
        .mount(&server)
        .await;
    // Pending once more, then done.
    Mock::given(method("GET"))
        .and(path(format!("{CHANGES}/12")))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("change_pending")))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{CHANGES}/12")))
        .and(bearer())
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("change_done")))
        .expect(1)
        .mount(&server)
        .await;
    let id = provider(&server)
        .create_record(&zone(), &a_record("app.hoge.com", "203.0.113.10", 60))
        .await?;
    assert_eq!(id, RecordId::new("app.hoge.com|A|203.0.113.10"));
    Ok(())
}

#[tokio::test]
async fn updates_replace_a_value_and_deletes_remove_the_last_one() -> Result<(), Error> {
    let server = MockServer::start().await;
    token_endpoint(&server, fixture("token"), 1).await;
    read_set(&server, "rrset_app_a").await;
    Mock::given(method("POST"))
        .and(path(CHANGES))
        .and(bearer())
        .and(body_json(json!({
            "deletions": [set_as_read()],
            "additions": [set(120, &["203.0.113.10"])],
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("change_done")))
        .expect(1)
        .mount(&server)
        .await;
    // The set's last value: the set goes, nothing is added.
    Mock::given(method("POST"))
        .and(path(CHANGES))
        .and(bearer())
        .and(body_json(json!({ "deletions": [set_as_read()] })))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("change_done")))
        .expect(1)
        .mount(&server)
        .await;
    let google = provider(&server);
    let old = RecordId::new("app.hoge.com|A|198.51.100.4");
    let new = google
        .update_record(
            &zone(),
            &old,
            &a_record("app.hoge.com", "203.0.113.10", 120),
        )
        .await?;
    assert_eq!(new, RecordId::new("app.hoge.com|A|203.0.113.10"));
    google.delete_record(&zone(), &old).await?;

    // A value the set does not hold is not found, and no change is sent for it.
    let error = google
        .delete_record(&zone(), &RecordId::new("app.hoge.com|A|192.0.2.1"))
        .await
        .expect_err("not in the set");
    assert!(error.is_not_found(), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_change_that_stays_pending_is_a_transient_failure() {
    let server = MockServer::start().await;
    token_endpoint(&server, fixture("token"), 1).await;
    read_set(&server, "rrset_none").await;
    Mock::given(method("POST"))
        .and(path(CHANGES))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("change_pending")))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{CHANGES}/12")))
        .respond_with(ResponseTemplate::new(200).set_body_json(fixture("change_pending")))
        .mount(&server)
        .await;
    let error = provider(&server)
        .with_change_timeout(Duration::from_millis(500))
        .create_record(&zone(), &a_record("app.hoge.com", "203.0.113.10", 60))
        .await
        .expect_err("never done");
    assert!(matches!(error, Error::Transient { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("change 12 of zone hoge.com is still pending"),
        "{error}"
    );
}

/// A server whose token endpoint works and whose API answers every call with `status`,
/// `fixture` and `headers`.
async fn failing(status: u16, fixture_name: &str, headers: &[(&str, &str)]) -> MockServer {
    let server = MockServer::start().await;
    token_endpoint(&server, fixture("token"), 1..=2).await;
    let mut response = ResponseTemplate::new(status).set_body_json(fixture(fixture_name));
    for (name, value) in headers {
        response = response.insert_header(*name, *value);
    }
    Mock::given(path_regex("^/dns/v1/"))
        .respond_with(response)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn refused_credentials_are_auth_errors_and_the_token_is_dropped() {
    let server = failing(401, "error_401", &[]).await;
    let google = provider(&server);
    let error = google.list_zones().await.expect_err("401");
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    assert!(
        error.to_string().contains(
            "GET /dns/v1/projects/kokoa-demo/managedZones: HTTP 401: Request had invalid authentication credentials"
        ),
        "{error}"
    );
    assert!(!error.to_string().contains(TOKEN));
    // The refused token is not used again: the next call asks for a new one.
    let _ = google.list_zones().await.expect_err("401 again");
    let requests = server.received_requests().await.expect("recorded requests");
    assert_eq!(
        requests.iter().filter(|r| r.url.path() == "/token").count(),
        2
    );

    let server = failing(403, "error_403", &[]).await;
    let error = provider(&server).list_zones().await.expect_err("403");
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    assert!(
        error.to_string().contains("Forbidden [forbidden]"),
        "{error}"
    );
}

#[tokio::test]
async fn a_refused_assertion_is_an_auth_error_that_does_not_repeat_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(fixture("token_invalid_grant")))
        .expect(1)
        .mount(&server)
        .await;
    let error = provider(&server).list_zones().await.expect_err("400");
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("POST /token: HTTP 400: invalid_grant: Invalid JWT Signature."),
        "{text}"
    );
    assert!(text.contains(EMAIL), "{text}");
    assert!(!text.contains("eyJ") && !text.contains("PRIVATE"), "{text}");
}

#[tokio::test]
async fn rate_limits_carry_retry_after_whether_403_or_429() {
    for (status, file, wait) in [(403, "error_403_rate_limit", 7), (429, "error_429", 17)] {
        let wait_text = wait.to_string();
        let server = failing(status, file, &[("retry-after", &wait_text)]).await;
        let error = provider(&server).list_zones().await.expect_err("limited");
        match error {
            Error::RateLimited { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(wait)), "{status}");
            }
            other => panic!("expected RateLimited for {status}, got {other}"),
        }
    }
}

#[tokio::test]
async fn missing_zones_conflicts_and_server_errors_are_told_apart() {
    let server = failing(404, "error_404", &[]).await;
    let missing = Zone {
        id: "nowhere-com".into(),
        name: host("nowhere.com"),
    };
    let error = provider(&server)
        .list_records(&missing, None)
        .await
        .expect_err("404");
    assert!(error.is_not_found(), "{error}");
    assert!(
        error.to_string().contains("'nowhere-com' does not exist"),
        "{error}"
    );

    for (status, file) in [(409, "error_409"), (412, "error_412")] {
        let server = failing(status, file, &[]).await;
        let error = provider(&server).list_zones().await.expect_err("conflict");
        assert!(matches!(error, Error::Conflict { .. }), "{status}: {error}");
    }

    let server = failing(503, "error_503", &[]).await;
    let error = provider(&server).list_zones().await.expect_err("503");
    assert!(matches!(error, Error::Transient { .. }), "{error}");
    assert!(error.is_retryable());
}

/// A stateful stand-in for one managed zone: lists its record sets and applies changes
/// as Cloud DNS documents (a deletion must match a set exactly, an addition must not
/// exist), so a reconciler run can be checked by the state it leaves.
struct FakeZone {
    sets: Arc<Mutex<Vec<Value>>>,
}

impl Respond for FakeZone {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let authorized = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(format!("Bearer {TOKEN}").as_str());
        if !authorized {
            return ResponseTemplate::new(401).set_body_json(fixture("error_401"));
        }
        let mut sets = self.sets.lock().expect("zone state");
        match (request.method.as_str(), request.url.path()) {
            ("GET", RRSETS) => {
                let pairs: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
                let wanted =
                    |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
                let listed: Vec<Value> = sets
                    .iter()
                    .filter(|s| wanted("name").is_none_or(|n| s["name"] == n.as_str()))
                    .filter(|s| wanted("type").is_none_or(|t| s["type"] == t.as_str()))
                    .cloned()
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({
                    "kind": "dns#resourceRecordSetsListResponse", "rrsets": listed,
                }))
            }
            ("POST", CHANGES) => {
                let change: Value = serde_json::from_slice(&request.body).expect("JSON change");
                let none = Vec::new();
                let deletions = change["deletions"].as_array().unwrap_or(&none);
                let additions = change["additions"].as_array().unwrap_or(&none);
                let mut next = sets.clone();
                for deletion in deletions {
                    let Some(at) = next.iter().position(|s| s == deletion) else {
                        return ResponseTemplate::new(412).set_body_json(fixture("error_412"));
                    };
                    next.remove(at);
                }
                for addition in additions {
                    if next
                        .iter()
                        .any(|s| s["name"] == addition["name"] && s["type"] == addition["type"])
                    {
                        return ResponseTemplate::new(409).set_body_json(fixture("error_409"));
                    }
                    let mut stored = addition.clone();
                    stored["kind"] = json!("dns#resourceRecordSet");
                    next.push(stored);
                }
                *sets = next;
                let mut answer = change.clone();
                answer["kind"] = json!("dns#change");
                answer["id"] = json!("31");
                answer["status"] = json!("done");
                ResponseTemplate::new(200).set_body_json(answer)
            }
            _ => ResponseTemplate::new(404).set_body_json(fixture("error_404")),
        }
    }
}

fn edge(id: &str, v4: &str, state: EdgeState) -> EdgeTarget {
    EdgeTarget {
        id: EdgeNodeId::parse(id).expect("test edge id"),
        ipv4: Some(v4.parse().expect("test address")),
        ipv6: None,
        state,
    }
}

#[tokio::test]
async fn the_reconciler_reaches_the_desired_state() -> Result<(), Error> {
    let server = MockServer::start().await;
    token_endpoint(&server, fixture("token"), 1).await;
    // Someone else's value in the same set, and a set of another type.
    let sets = Arc::new(Mutex::new(vec![
        json!({ "kind": "dns#resourceRecordSet", "name": "app.hoge.com.", "type": "A", "ttl": 30, "rrdatas": ["192.0.2.50"] }),
        json!({ "kind": "dns#resourceRecordSet", "name": "hoge.com.", "type": "MX", "ttl": 3600, "rrdatas": ["10 mail.hoge.com."] }),
    ]));
    Mock::given(path_regex(
        "^/dns/v1/projects/kokoa-demo/managedZones/hoge-com/",
    ))
    .respond_with(FakeZone { sets: sets.clone() })
    .mount(&server)
    .await;
    let reconciler = Reconciler::new(Arc::new(provider(&server)), zone());
    let mut desired = DesiredState::default();
    desired.hostnames.insert(host("app.hoge.com"));
    desired.edges = vec![
        edge("edge-1", "203.0.113.10", EdgeState::Serving),
        edge("edge-2", "203.0.113.11", EdgeState::Serving),
    ];
    let app_a = |sets: &Arc<Mutex<Vec<Value>>>| {
        let sets = sets.lock().expect("zone state");
        let set = sets
            .iter()
            .find(|s| s["name"] == "app.hoge.com." && s["type"] == "A")
            .cloned()
            .unwrap_or(Value::Null);
        let mut values: Vec<String> = set["rrdatas"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        values.sort();
        (set["ttl"].clone(), values)
    };

    let plan = reconciler.plan(&desired, &BTreeSet::new()).await?;
    assert_eq!(plan.creates.len(), 2, "{plan}");
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(
        app_a(&sets),
        (
            json!(30),
            vec![
                "192.0.2.50".into(),
                "203.0.113.10".into(),
                "203.0.113.11".into()
            ]
        )
    );
    assert!(reconciler.plan(&desired, &report.owned).await?.is_empty());

    desired.edges[1].state = EdgeState::Unhealthy;
    desired.ttl = 60;
    let report = reconciler
        .apply(reconciler.plan(&desired, &report.owned).await?)
        .await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(
        app_a(&sets),
        (json!(60), vec!["192.0.2.50".into(), "203.0.113.10".into()])
    );
    assert!(reconciler.plan(&desired, &report.owned).await?.is_empty());
    assert_eq!(
        sets.lock().expect("zone state").len(),
        2,
        "the MX set is untouched"
    );
    Ok(())
}

#[tokio::test]
async fn unusable_key_files_are_refused_without_repeating_the_key() {
    let server = MockServer::start().await;
    let good: Value = serde_json::from_str(&key_file(&server)).expect("key file");
    let pem = key_pair().0.clone();
    let body = pem.lines().nth(1).expect("a base64 line").to_owned();

    let mut user = good.clone();
    user["type"] = json!("authorized_user");
    let mut truncated = good.clone();
    truncated["private_key"] = json!(pem.replace(&body, &body[..20]));
    let mut missing = good;
    missing
        .as_object_mut()
        .expect("an object")
        .remove("token_uri");
    for (file, expected) in [
        (user, "of type \"authorized_user\", not \"service_account\""),
        (truncated, "is not a PEM PKCS#8 RSA key"),
        (missing, "missing field `token_uri`"),
    ] {
        let error = ServiceAccountKey::from_json(&file.to_string()).expect_err(expected);
        let text = error.to_string();
        assert!(text.contains(expected), "{text}");
        assert!(!text.contains(&body[..20]), "{text}");
    }
}
