//! Cloudflare Origin CA as an issuer (`[acme.origin_ca]`): a local server stands in for
//! Cloudflare's API, checks each request against the documented one and answers with the
//! documented bodies (kokoa-acme's fixtures). The route in the Origin CA zone gets a valid
//! certificate that its edge fetches; an error answer leaves Cloudflare's message on the
//! certificate.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use common::{Backend, Server};
use kokoa_acme::cloudflare::{OriginCaAuth, OriginKeyType};
use kokoa_control::config::{AcmeSettings, OriginCaSettings};
use reqwest::Method;
use serde_json::{Value, json};

const CREATED: &str =
    include_str!("../../../kokoa-acme/tests/fixtures/cloudflare_origin_ca_create.json");
const REFUSED: &str =
    include_str!("../../../kokoa-acme/tests/fixtures/cloudflare_origin_ca_error.json");
const TOKEN: &str = "cf-test-token-0123456789";
const REFUSAL: &str = "Failed to validate requested hostname bad.hoge.com: this zone is not \
                       part of the account.";

/// The stand-in for the Origin CA: its signing certificate, and what it was asked and
/// answered.
struct OriginCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    requests: Mutex<Vec<Value>>,
    issued: Mutex<Vec<String>>,
}

impl OriginCa {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "CloudFlare, Inc.");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "CloudFlare Origin SSL ECC Certificate Authority",
        );
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
            requests: Mutex::default(),
            issued: Mutex::default(),
        }
    }
}

/// `POST /client/v4/certificates`: anything other than the documented request is answered
/// with a 400 that says what differed (and so shows up in the certificate's last error).
async fn create(
    State(ca): State<Arc<OriginCa>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, Json<Value>) {
    let refuse = |why: String| {
        let body = json!({"success": false, "errors": [{"code": 9999, "message": why}],
                          "messages": [], "result": null});
        (StatusCode::BAD_REQUEST, Json(body))
    };
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return refuse(format!("test server: authorization is {auth:?}"));
    }
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    if content_type != Some("application/json") {
        return refuse(format!("test server: content-type is {content_type:?}"));
    }
    let Ok(request) = serde_json::from_str::<Value>(&body) else {
        return refuse(format!("test server: the body is not JSON: {body}"));
    };
    ca.requests.lock().unwrap().push(request.clone());
    let keys: Vec<&str> = request
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    if keys != ["csr", "hostnames", "request_type", "requested_validity"] {
        return refuse(format!("test server: the body has the fields {keys:?}"));
    }
    if request["request_type"] != "origin-ecc" || request["requested_validity"] != 5475 {
        return refuse(format!("test server: unexpected request {request}"));
    }
    let csr = request["csr"].as_str().unwrap_or_default();
    let Ok(csr_params) = rcgen::CertificateSigningRequestParams::from_pem(csr) else {
        return refuse(format!("test server: the csr is not a PEM CSR: {csr}"));
    };
    match request["hostnames"].as_array().map(Vec::as_slice) {
        Some([name]) if name == "app.hoge.com" => {
            let cert = csr_params.signed_by(&ca.issuer).unwrap().pem();
            ca.issued.lock().unwrap().push(cert.clone());
            let mut answer: Value = serde_json::from_str(CREATED).unwrap();
            answer["result"]["certificate"] = cert.into();
            answer["result"]["csr"] = csr.into();
            answer["result"]["hostnames"] = json!(["app.hoge.com"]);
            (StatusCode::OK, Json(answer))
        }
        Some([name]) if name == "bad.hoge.com" => {
            let mut answer: Value = serde_json::from_str(REFUSED).unwrap();
            answer["errors"][0]["message"] = REFUSAL.into();
            (StatusCode::BAD_REQUEST, Json(answer))
        }
        _ => refuse(format!("test server: unexpected hostnames {request}")),
    }
}

async fn certificates(s: &Server) -> Vec<Value> {
    let list = s
        .admin(Method::GET, "/api/v1/certificates", None, 200)
        .await;
    list["certificates"].as_array().unwrap().clone()
}

fn named<'a>(certs: &'a [Value], name: &str) -> Option<&'a Value> {
    certs.iter().find(|c| c["names"] == json!([name]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_in_an_origin_ca_zone_get_cloudflare_certificates_that_edges_fetch() {
    let ca = Arc::new(OriginCa::new());
    let app = Router::new()
        .route("/client/v4/certificates", post(create))
        .with_state(ca.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cloudflare = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let s = Server::start(&Backend::Sqlite).await;
    // ACME points at a closed port: names outside the zone cannot be ordered, and the
    // Origin CA does not depend on the ACME account.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut acme = AcmeSettings::new(kokoa_acme::Issuer::Custom {
        directory_url: format!("http://{closed}/dir"),
        trusted_root: None,
        external_account: None,
    });
    let mut origin_ca = OriginCaSettings::new(
        OriginCaAuth::ApiToken(TOKEN.to_owned().into()),
        vec![kokoa_core::Hostname::parse("hoge.com").unwrap()],
    );
    origin_ca.base_url = format!("http://{cloudflare}/client/v4");
    assert_eq!(origin_ca.key_type, OriginKeyType::Ecc);
    acme.origin_ca = Some(origin_ca);
    assert!(!format!("{acme:?}").contains(TOKEN), "{acme:?}");
    s.state.set_acme(acme);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let duties = tokio::spawn(kokoa_control::runtime::run(s.state.clone(), async move {
        let _ = stopped.await;
    }));

    let origin = s.origin("home-server").await;
    let origin_id = origin["id"].as_str().unwrap().to_owned();
    for name in ["app.hoge.com", "bad.hoge.com"] {
        let route = json!({"hostname": name, "origin_id": origin_id, "target_port": 8080});
        s.admin(Method::POST, "/api/v1/routes", Some(route), 201)
            .await;
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut certs = Vec::new();
    while Instant::now() < deadline {
        certs = certificates(&s).await;
        let app_valid = named(&certs, "app.hoge.com").is_some_and(|c| c["status"] == "valid");
        let bad_failed = named(&certs, "bad.hoge.com").is_some_and(|c| c["failures"] == 1);
        if app_valid && bad_failed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let app = named(&certs, "app.hoge.com")
        .expect("a row for app.hoge.com")
        .clone();
    assert_eq!(app["status"], "valid", "{app}");
    assert_eq!(app["source"], "cloudflare_origin_ca", "{app}");
    assert!(
        app["issuer"]
            .as_str()
            .unwrap()
            .contains("CloudFlare Origin SSL ECC Certificate Authority"),
        "{app}"
    );
    assert!(app["days_left"].as_i64().unwrap() > 5000, "{app}");
    assert!(app["last_error"].is_null(), "{app}");
    let bad = named(&certs, "bad.hoge.com")
        .expect("a row for bad.hoge.com")
        .clone();
    assert_eq!(bad["status"], "failed", "{bad}");
    assert_eq!(bad["source"], "cloudflare_origin_ca", "{bad}");
    let error = bad["last_error"].as_str().unwrap();
    assert!(error.contains("1010") && error.contains(REFUSAL), "{bad}");

    // One request per name, each the documented one (the failed name backs off a minute).
    let requests = ca.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    for request in &requests {
        assert!(
            request["csr"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
            "{request}"
        );
    }

    // The events say what happened, as for ACME.
    let events = s
        .admin(Method::GET, "/api/v1/events?kind=certificate.*", None, 200)
        .await
        .to_string();
    assert!(events.contains("certificate.issued"), "{events}");
    assert!(events.contains("certificate.failed"), "{events}");
    assert!(!events.contains(TOKEN), "{events}");

    // The edge serving the origin gets it like an ACME certificate.
    let (_, edge) = s.enrolled_edge(Some(&origin_id)).await;
    let (status, config) = s
        .call(
            Method::GET,
            "/api/v1/edge-nodes/me/config",
            Some(&edge),
            None,
        )
        .await;
    assert_eq!(status, 200, "{config}");
    let refs = config["certificates"].as_array().unwrap();
    assert_eq!(refs.len(), 1, "{config}");
    assert_eq!(refs[0]["hostnames"], json!(["app.hoge.com"]));
    assert_eq!(refs[0]["sha256"], app["sha256"]);
    let name = refs[0]["name"].as_str().unwrap();
    let (status, pems) = s
        .call(
            Method::GET,
            &format!("/api/v1/edge-nodes/me/certificates/{name}"),
            Some(&edge),
            None,
        )
        .await;
    assert_eq!(status, 200, "{pems}");
    let issued = ca.issued.lock().unwrap().clone();
    assert_eq!(issued.len(), 1);
    assert_eq!(pems["chain_pem"].as_str().unwrap().trim(), issued[0].trim());
    let key = pems["private_key_pem"].as_str().unwrap();
    assert!(rcgen::KeyPair::from_pem(key).is_ok(), "an unusable key");

    // A renewal asked by hand goes to Cloudflare again and replaces the certificate.
    let id = app["id"].as_str().unwrap();
    s.admin(
        Method::POST,
        &format!("/api/v1/certificates/{id}/renew"),
        None,
        202,
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut renewed = app.clone();
    while Instant::now() < deadline && renewed["sha256"] == app["sha256"] {
        tokio::time::sleep(Duration::from_millis(50)).await;
        renewed = named(&certificates(&s).await, "app.hoge.com")
            .expect("a row for app.hoge.com")
            .clone();
    }
    assert_ne!(renewed["sha256"], app["sha256"], "{renewed}");
    assert_eq!(renewed["status"], "valid", "{renewed}");
    assert_eq!(ca.issued.lock().unwrap().len(), 2);

    let _ = stop.send(());
    let _ = duties.await;
    server.abort();
}
