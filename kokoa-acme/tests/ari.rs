//! ACME Renewal Information (RFC 9773) against a local HTTP server that serves an ACME
//! directory with `renewalInfo`, an account endpoint and the renewal information of one
//! certificate, answering as a CA would: a window with `Retry-After`, 404, 500.

mod common;

use std::time::Duration;

use common::{acme_server, manager};
use kokoa_acme::{AriWindow, CertificateStatus, Error, IssuedCertificate, RenewalPolicy};
use kokoa_core::Timestamp;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, date_time_ymd};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

fn at(rfc3339: &str) -> Timestamp {
    Timestamp::parse_rfc3339(rfc3339).unwrap()
}

/// A certificate for app.hoge.com valid in the first quarter of 2025, signed by a CA, with
/// the authority key identifier its ARI identifier is made of.
fn certificate() -> IssuedCertificate {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["app.hoge.com".into()]).unwrap();
    params.not_before = date_time_ymd(2025, 1, 1);
    params.not_after = date_time_ymd(2025, 4, 1);
    params.use_authority_key_identifier_extension = true;
    let leaf = params.signed_by(&key, &ca).unwrap();
    IssuedCertificate::from_pem(&format!("{}{}", leaf.pem(), ca.pem()), &key.serialize_pem())
        .unwrap()
}

/// Answers the next GET of the certificate's renewal information (and only that one).
async fn answer(server: &MockServer, cert: &IssuedCertificate, response: ResponseTemplate) {
    server.reset().await;
    let id = cert.ari_certificate_id().unwrap();
    Mock::given(method("GET"))
        .and(path(format!("/renewal-info/{id}")))
        .respond_with(response)
        .expect(1)
        .mount(server)
        .await;
}

fn window_body(start: &str, end: &str) -> serde_json::Value {
    serde_json::json!({
        "suggestedWindow": { "start": start, "end": end },
        "explanationURL": "https://ca.example/docs/ari",
    })
}

#[tokio::test]
async fn the_window_plans_renewal_and_errors_keep_the_plan() {
    let server = acme_server(true).await;
    // 25 hours into the two-day window.
    let manager = manager(&server, 25 * 3600).await;
    let cert = certificate();
    let policy = RenewalPolicy::default();
    let mut status = CertificateStatus::of(&cert, &policy);
    assert_eq!(status.next_renewal, at("2025-03-02T00:00:00Z"), "by policy");
    let now = at("2025-01-01T00:10:00Z");
    assert!(status.is_renewal_info_due(now));

    // The CA suggests 1–3 March and to ask again in six hours.
    answer(
        &server,
        &cert,
        ResponseTemplate::new(200)
            .insert_header("Retry-After", "21600")
            .set_body_json(window_body("2025-03-01T00:00:00Z", "2025-03-03T00:00:00Z")),
    )
    .await;
    let info = manager.renewal_info(&cert).await.unwrap().unwrap();
    let window = AriWindow {
        start: at("2025-03-01T00:00:00Z"),
        end: at("2025-03-03T00:00:00Z"),
    };
    assert_eq!(info.window, window);
    assert_eq!(
        info.explanation_url.as_deref(),
        Some("https://ca.example/docs/ari")
    );
    assert_eq!(info.retry_after, Duration::from_secs(21600));
    server.verify().await;

    answer(
        &server,
        &cert,
        ResponseTemplate::new(200)
            .insert_header("Retry-After", "21600")
            .set_body_json(window_body("2025-03-01T00:00:00Z", "2025-03-03T00:00:00Z")),
    )
    .await;
    manager
        .refresh_renewal(&cert, &mut status, &policy, now)
        .await
        .unwrap();
    assert!(window.start <= status.next_renewal && status.next_renewal < window.end);
    assert_eq!(status.next_renewal, at("2025-03-02T01:00:00Z"));
    assert_eq!(status.ari_next_check, Some(at("2025-01-01T06:10:00Z")));
    assert!(!status.is_renewal_info_due(at("2025-01-01T06:09:59Z")));
    assert!(status.is_renewal_info_due(at("2025-01-01T06:10:00Z")));
    server.verify().await;
    let planned = status.next_renewal;

    // The CA does not know the certificate: the plan stays, the next check backs off.
    let later = at("2025-01-01T06:10:00Z");
    answer(
        &server,
        &cert,
        ResponseTemplate::new(404)
            .insert_header("Retry-After", "21600")
            .insert_header("Content-Type", "application/problem+json")
            .set_body_json(serde_json::json!({
                "type": "urn:ietf:params:acme:error:malformed",
                "detail": "Certificate not found",
                "status": 404,
            })),
    )
    .await;
    let err = manager
        .refresh_renewal(&cert, &mut status, &policy, later)
        .await
        .unwrap_err();
    eprintln!("404: {err}");
    assert!(
        matches!(
            err,
            Error::Acme {
                step: "renewal info",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("Certificate not found"), "{err}");
    assert_eq!(status.next_renewal, planned);
    assert_eq!(status.ari_window, Some(window));
    assert_eq!(status.ari_next_check, Some(at("2025-01-01T06:11:00Z")));
    server.verify().await;

    // A server error: the same, backing off further.
    answer(
        &server,
        &cert,
        ResponseTemplate::new(500)
            .insert_header("Retry-After", "60")
            .set_body_string("internal error"),
    )
    .await;
    let err = manager
        .refresh_renewal(&cert, &mut status, &policy, later)
        .await
        .unwrap_err();
    eprintln!("500: {err}");
    assert!(err.is_retryable());
    assert_eq!(status.next_renewal, planned);
    assert_eq!(status.ari_failures, 2);
    assert_eq!(status.ari_next_check, Some(at("2025-01-01T06:12:00Z")));
    server.verify().await;

    // An answer without Retry-After is an error too (RFC 9773 §4.3.3).
    answer(
        &server,
        &cert,
        ResponseTemplate::new(200)
            .set_body_json(window_body("2025-02-01T00:00:00Z", "2025-02-02T00:00:00Z")),
    )
    .await;
    let err = manager
        .refresh_renewal(&cert, &mut status, &policy, later)
        .await
        .unwrap_err();
    eprintln!("no Retry-After: {err}");
    assert!(err.to_string().contains("Retry-After"), "{err}");
    assert_eq!(status.next_renewal, planned);
    server.verify().await;

    // The CA moves the window forward, with Retry-After as an HTTP date two hours ahead.
    let two_hours = std::time::SystemTime::now() + Duration::from_secs(7200);
    answer(
        &server,
        &cert,
        ResponseTemplate::new(200)
            .insert_header("Retry-After", httpdate::fmt_http_date(two_hours).as_str())
            .set_body_json(window_body("2025-01-05T00:00:00Z", "2025-01-07T00:00:00Z")),
    )
    .await;
    manager
        .refresh_renewal(&cert, &mut status, &policy, later)
        .await
        .unwrap();
    assert_eq!(status.next_renewal, at("2025-01-06T01:00:00Z"));
    assert_eq!(status.ari_failures, 0);
    let next = status.ari_next_check.unwrap().as_unix() - later.as_unix();
    assert!((7198..=7200).contains(&next), "next check in {next} s");
    server.verify().await;
}

#[tokio::test]
async fn a_directory_without_renewal_info_means_no_window() {
    let server = acme_server(false).await;
    let manager = manager(&server, 0).await;
    let cert = certificate();
    let policy = RenewalPolicy::default();
    assert_eq!(manager.renewal_info(&cert).await.unwrap(), None);

    let mut status = CertificateStatus::of(&cert, &policy);
    let before = status.next_renewal;
    manager
        .refresh_renewal(&cert, &mut status, &policy, at("2025-01-01T00:10:00Z"))
        .await
        .unwrap();
    assert_eq!(status.next_renewal, before);
    assert_eq!(status.ari_next_check, None);
    assert!(!status.is_renewal_info_due(at("2025-02-01T00:00:00Z")));
    // Nothing was asked beyond the directory, a nonce and the account.
    let requests = server.received_requests().await.unwrap();
    assert!(
        requests.iter().all(|r| !r.url.path().contains("renewal")),
        "{requests:?}"
    );
}
