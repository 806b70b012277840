//! The Origin CA client against a local server that answers like Cloudflare's API, with
//! bodies shaped like the documented ones (`tests/fixtures/cloudflare_origin_ca_*.json`).

use kokoa_acme::{
    Error,
    cloudflare::{OriginCaAuth, OriginCaClient, OriginKeyType},
};
use kokoa_core::Hostname;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer,
    DistinguishedName, DnType, IsCa, KeyPair,
};
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{body_partial_json, header, method, path},
};

const CREATED: &str = include_str!("fixtures/cloudflare_origin_ca_create.json");
const REFUSED: &str = include_str!("fixtures/cloudflare_origin_ca_error.json");

fn names() -> Vec<Hostname> {
    vec![
        Hostname::parse("hoge.com").unwrap(),
        Hostname::parse("*.hoge.com").unwrap(),
    ]
}

fn client(server: &MockServer, auth: OriginCaAuth) -> OriginCaClient {
    OriginCaClient::with_http(
        reqwest::Client::new(),
        format!("{}/client/v4", server.uri()),
        auth,
    )
}

fn token() -> OriginCaAuth {
    OriginCaAuth::ApiToken("cf-token".to_owned().into())
}

/// Answers like the Origin CA: signs the request's CSR and returns it in the fixture.
struct SignCsr(CertifiedIssuer<'static, KeyPair>);

impl SignCsr {
    fn new() -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Test Origin CA");
        Self(CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap())
    }
}

impl Respond for SignCsr {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let csr = body["csr"].as_str().unwrap();
        let cert = CertificateSigningRequestParams::from_pem(csr)
            .unwrap()
            .signed_by(&self.0)
            .unwrap();
        let mut answer: Value = serde_json::from_str(CREATED).unwrap();
        answer["result"]["certificate"] = cert.pem().into();
        answer["result"]["csr"] = csr.into();
        ResponseTemplate::new(200).set_body_json(answer)
    }
}

#[tokio::test]
async fn an_ecc_certificate_is_created_with_the_documented_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/client/v4/certificates"))
        .and(header("authorization", "Bearer cf-token"))
        .and(body_partial_json(json!({
            "hostnames": ["hoge.com", "*.hoge.com"],
            "requested_validity": 5475,
            "request_type": "origin-ecc",
        })))
        .respond_with(SignCsr::new())
        .expect(1)
        .mount(&server)
        .await;

    let created = client(&server, token())
        .create_certificate(&names(), OriginKeyType::Ecc, 5475)
        .await
        .unwrap();
    assert_eq!(
        created.id,
        "328578533902268680212849205732770752308931942346"
    );
    // The names come from the signed CSR, and the key was checked against the certificate.
    assert_eq!(created.certificate.domains, names().into_iter().collect());
    assert_eq!(created.certificate.issuer, "CN=Test Origin CA");
    assert!(
        created
            .certificate
            .key_pem
            .expose_secret()
            .contains("BEGIN PRIVATE KEY")
    );
}

#[tokio::test]
async fn an_rsa_certificate_with_the_origin_ca_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/client/v4/certificates"))
        .and(header("x-auth-user-service-key", "v1.0-origin-ca-key"))
        .and(body_partial_json(
            json!({ "requested_validity": 7, "request_type": "origin-rsa" }),
        ))
        .respond_with(SignCsr::new())
        .expect(1)
        .mount(&server)
        .await;

    let auth = OriginCaAuth::ServiceKey("v1.0-origin-ca-key".to_owned().into());
    assert_eq!(format!("{auth:?}"), "ServiceKey(<redacted>)");
    let created = client(&server, auth)
        .create_certificate(&names(), OriginKeyType::Rsa, 7)
        .await
        .unwrap();
    assert_eq!(created.certificate.domains.len(), 2);
}

#[tokio::test]
async fn an_error_envelope_becomes_an_error_naming_the_code_and_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_raw(REFUSED, "application/json"))
        .expect(1)
        .mount(&server)
        .await;

    let err = client(&server, token())
        .create_certificate(&names(), OriginKeyType::Ecc, 90)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Cloudflare Origin CA answered HTTP 400: 1010: Failed to validate requested hostname \
         other.example: this zone is not part of the account."
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn an_outage_without_an_envelope_is_retryable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503).set_body_string("<html>503 Service Unavailable</html>"),
        )
        .expect(1)
        .mount(&server)
        .await;

    let err = client(&server, token())
        .create_certificate(&names(), OriginKeyType::Ecc, 90)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Cloudflare { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("<html>503"), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_validity_cloudflare_does_not_offer_is_refused_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    let err = client(&server, token())
        .create_certificate(&names(), OriginKeyType::Ecc, 100)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidValidity { days: 100 }),
        "{err:?}"
    );
}
