//! `https`, `end_to_end` and `tls_certificate` checks against a rustls server whose
//! certificate depends on the SNI it receives, with rcgen certificates.

use std::{net::Ipv4Addr, time::Duration};

use kokoa_health::{CheckConfig, CheckExecutor, CheckOutcome, CheckStatus, DefaultExecutor};

use crate::support::{Ca, DAY, Offset, Server};

/// A server for several names of `hoge.test`, each with its own kind of certificate.
struct Site {
    ca: Ca,
    server: Server,
}

impl Site {
    async fn start() -> Self {
        let ca = Ca::new("Kokoa Test CA");
        let stranger = Ca::new("Someone Else's CA");
        let certificates = vec![
            ("app.hoge.test", ca.valid_for(&["app.hoge.test"], 90)),
            ("soon.hoge.test", ca.valid_for(&["soon.hoge.test"], 3)),
            (
                "expired.hoge.test",
                ca.leaf(
                    &["expired.hoge.test"],
                    Offset::Past(DAY * 30),
                    Offset::Past(DAY * 2 + Duration::from_secs(3600)),
                ),
            ),
            (
                "wrong.hoge.test",
                ca.valid_for(&["other.hoge.test", "www.other.hoge.test"], 90),
            ),
            (
                "untrusted.hoge.test",
                stranger.valid_for(&["untrusted.hoge.test"], 90),
            ),
            // What an edge shows without SNI: its self-signed fallback.
            ("", stranger.valid_for(&["fallback.invalid"], 90)),
        ];
        let server = Server::https(200, "ok from the origin", certificates).await;
        Self { ca, server }
    }

    fn certificate_check(&self, host: &str) -> CheckConfig {
        let mut check = CheckConfig::tls_certificate(host);
        check.port = Some(self.server.addr.port());
        check.address = Some(Ipv4Addr::LOCALHOST.into());
        check.retries = 0;
        check
    }

    async fn check_certificate(&self, host: &str) -> CheckOutcome {
        self.ca
            .executor()
            .check(&self.certificate_check(host))
            .await
    }
}

#[tokio::test]
async fn end_to_end_reaches_the_hostname_through_the_given_address() {
    let site = Site::start().await;
    let port = site.server.addr.port();
    let mut check = CheckConfig::end_to_end(format!("https://app.hoge.test:{port}/health"));
    check.address = Some(Ipv4Addr::LOCALHOST.into());
    check.expected_body = Some("origin".into());
    let outcome = site.ca.executor().check(&check).await;
    assert_eq!(outcome.status, CheckStatus::Success, "{outcome:?}");
    assert_eq!(outcome.certificate_days_left, Some(90));
    // The name went out as SNI and as Host, though the connection went to 127.0.0.1.
    assert_eq!(site.server.sni(), [Some("app.hoge.test".to_owned())]);
    assert_eq!(
        site.server.requests(),
        [(format!("app.hoge.test:{port}"), "/health".to_owned())]
    );
}

#[tokio::test]
async fn https_to_an_address_verifies_unless_told_not_to() {
    let site = Site::start().await;
    let mut check = CheckConfig::https(site.server.url("https", "/health"));
    check.retries = 0;
    let outcome = site.ca.executor().check(&check).await;
    assert_eq!(
        outcome.error.as_deref(),
        Some(
            "certificate for 127.0.0.1 is not signed by a trusted root (issuer: CN=Someone Else's CA)"
        )
    );
    assert!(
        site.server.requests().is_empty(),
        "nothing is sent before verification"
    );

    check.verify_certificate = false;
    let outcome = site.ca.executor().check(&check).await;
    assert_eq!(outcome.status, CheckStatus::Success, "{outcome:?}");
    assert_eq!(outcome.certificate_days_left, None);
    // An IP address is never sent as SNI.
    assert_eq!(site.server.sni(), [None, None]);
}

#[tokio::test]
async fn a_valid_certificate_passes_and_reports_its_days() {
    let site = Site::start().await;
    let outcome = site.check_certificate("app.hoge.test").await;
    assert_eq!(outcome.status, CheckStatus::Success, "{outcome:?}");
    assert_eq!(outcome.certificate_days_left, Some(90));
    assert_eq!(site.server.sni(), [Some("app.hoge.test".to_owned())]);
}

#[tokio::test]
async fn an_expired_certificate_says_since_when() {
    let site = Site::start().await;
    let outcome = site.check_certificate("expired.hoge.test").await;
    let error = outcome.error.unwrap();
    assert!(
        error.starts_with("certificate for expired.hoge.test expired 2 days ago, at 20"),
        "{error}"
    );
    assert!(error.ends_with('Z'), "{error}");
    assert_eq!(outcome.certificate_days_left, Some(-2));
}

#[tokio::test]
async fn a_certificate_for_other_names_lists_them() {
    let site = Site::start().await;
    assert_eq!(
        site.check_certificate("wrong.hoge.test")
            .await
            .error
            .as_deref(),
        Some(
            "certificate for wrong.hoge.test names other.hoge.test, www.other.hoge.test, not wrong.hoge.test"
        )
    );
}

#[tokio::test]
async fn an_untrusted_certificate_names_its_issuer() {
    let site = Site::start().await;
    assert_eq!(
        site.check_certificate("untrusted.hoge.test")
            .await
            .error
            .as_deref(),
        Some(
            "certificate for untrusted.hoge.test is not signed by a trusted root (issuer: CN=Someone Else's CA)"
        )
    );
    // With that CA trusted as well, the same certificate passes.
    let both = site
        .ca
        .executor()
        .with_root_pem(Ca::new("unrelated").pem().as_bytes())
        .unwrap();
    assert_eq!(
        both.check(&site.certificate_check("app.hoge.test"))
            .await
            .status,
        CheckStatus::Success
    );
}

#[tokio::test]
async fn too_few_days_left_fail_at_the_configured_margin() {
    let site = Site::start().await;
    let outcome = site.check_certificate("soon.hoge.test").await;
    assert_eq!(
        outcome.error.as_deref(),
        Some("certificate for soon.hoge.test expires in 3 days, fewer than the 7 required")
    );
    assert_eq!(outcome.certificate_days_left, Some(3));

    let mut check = site.certificate_check("soon.hoge.test");
    check.min_days_left = 3;
    assert_eq!(
        site.ca.executor().check(&check).await.status,
        CheckStatus::Success
    );
}

#[tokio::test]
async fn an_executor_without_roots_says_so() {
    let site = Site::start().await;
    let outcome = DefaultExecutor::without_system_roots()
        .check(&site.certificate_check("app.hoge.test"))
        .await;
    assert_eq!(
        outcome.error.as_deref(),
        Some(
            "cannot verify the certificate of app.hoge.test: no trusted root certificates are configured"
        )
    );
}

#[tokio::test]
async fn a_plain_http_server_fails_the_handshake() {
    let server = Server::http(200, "ok").await;
    let mut check = CheckConfig::tls_certificate("127.0.0.1");
    check.port = Some(server.addr.port());
    check.retries = 0;
    let error = DefaultExecutor::new().check(&check).await.error.unwrap();
    assert!(
        error.starts_with("TLS handshake with 127.0.0.1 failed: "),
        "{error}"
    );
}

#[test]
fn a_pem_without_certificates_is_refused() {
    let error = DefaultExecutor::new()
        .with_root_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "trusted root certificate 0 of the PEM given is unusable: no `BEGIN CERTIFICATE` block found"
    );
}
