//! `http` checks against a hyper server on 127.0.0.1.

use std::time::{Duration, Instant};

use kokoa_health::{CheckConfig, CheckExecutor, CheckStatus, DefaultExecutor};
use tokio::net::TcpListener;

use crate::support::{Server, refusing_port};

fn quick(mut check: CheckConfig) -> CheckConfig {
    check.retries = 0;
    check.timeout = Duration::from_secs(2);
    check
}

#[tokio::test]
async fn the_expected_status_and_body_pass() {
    let server = Server::http(200, "status: healthy\n").await;
    let mut check = quick(CheckConfig::http(server.url("http", "/health?full=1")));
    check.expected_body = Some("healthy".into());
    let outcome = DefaultExecutor::new().check(&check).await;
    assert_eq!(outcome.status, CheckStatus::Success, "{outcome:?}");
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.certificate_days_left, None);
    assert_eq!(
        server.requests(),
        [(server.addr.to_string(), "/health?full=1".to_owned())]
    );
}

#[tokio::test]
async fn a_wrong_status_fails_with_both_statuses_after_each_retry() {
    let server = Server::http(503, "maintenance").await;
    let mut check = CheckConfig::http(server.url("http", "/health"));
    check.retries = 2;
    let outcome = DefaultExecutor::new().check(&check).await;
    assert_eq!(outcome.status, CheckStatus::Failure);
    assert_eq!(
        outcome.error.as_deref(),
        Some(
            format!(
                "GET {}: expected status 200, got 503 (3 attempts)",
                server.url("http", "/health")
            )
            .as_str()
        )
    );
    assert_eq!(server.requests().len(), 3, "one request per attempt");

    server.set(200, "ok");
    let mut check = quick(CheckConfig::http(server.url("http", "/health")));
    check.expected_status = 204;
    let error = DefaultExecutor::new().check(&check).await.error.unwrap();
    assert!(error.ends_with("expected status 204, got 200"), "{error}");
}

#[tokio::test]
async fn with_a_status_limit_any_answer_below_it_passes() {
    // An application without a health path: its 404 still proves the way to it works.
    let server = Server::http(404, "no such page").await;
    let mut check = quick(CheckConfig::http(server.url("http", "/health")));
    check.any_status_below = Some(500);
    let outcome = DefaultExecutor::new().check(&check).await;
    assert_eq!(outcome.status, CheckStatus::Success, "{outcome:?}");

    server.set(502, "bad gateway");
    let error = DefaultExecutor::new().check(&check).await.error.unwrap();
    assert!(
        error.ends_with("expected a status below 500, got 502"),
        "{error}"
    );
}

#[tokio::test]
async fn a_body_without_the_text_fails() {
    let server = Server::http(200, "starting").await;
    let mut check = quick(CheckConfig::http(server.url("http", "/health")));
    check.expected_body = Some("ready".into());
    let error = DefaultExecutor::new().check(&check).await.error.unwrap();
    assert_eq!(
        error,
        format!(
            r#"GET {}: body does not contain "ready""#,
            server.url("http", "/health")
        )
    );
}

#[tokio::test]
async fn only_the_first_64_kib_of_a_body_are_searched() {
    let mut body = "x".repeat(64 * 1024 - 5);
    body.push_str("ready");
    let server = Server::http(200, &body).await;
    let mut check = quick(CheckConfig::http(server.url("http", "/health")));
    check.expected_body = Some("ready".into());
    let outcome = DefaultExecutor::new().check(&check).await;
    assert_eq!(
        outcome.status,
        CheckStatus::Success,
        "ends at the limit: {outcome:?}"
    );

    server.set(200, &format!("{}ready", "x".repeat(64 * 1024)));
    let error = DefaultExecutor::new().check(&check).await.error.unwrap();
    assert!(
        error.ends_with(r#"body does not contain "ready" (searched the first 64 KiB)"#),
        "{error}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_and_retries_fit_the_interval() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut check = CheckConfig::http(format!("http://{addr}/health"));
    check.timeout = Duration::from_millis(400);
    check.interval = Duration::from_secs(1);
    check.retries = 3;
    let started = Instant::now();
    let outcome = DefaultExecutor::new().check(&check).await;
    let took = started.elapsed();
    // A third attempt would end 1.2 s after the start, past the interval.
    assert_eq!(
        outcome.error.as_deref(),
        Some(format!("timed out after 0.4 s while waiting for the answer to GET http://{addr}/health (2 attempts)").as_str())
    );
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(1500)).contains(&took),
        "{took:?}"
    );
    assert!(
        (400..1000).contains(&outcome.response_time_ms),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    let (_reserved, addr) = refusing_port();
    let outcome = DefaultExecutor::new()
        .check(&quick(CheckConfig::http(format!("http://{addr}/health"))))
        .await;
    assert_eq!(
        outcome.error.as_deref(),
        Some(format!("cannot connect to {addr}: Connection refused").as_str())
    );
}

#[tokio::test]
async fn an_invalid_check_fails_with_the_reason() {
    let outcome = DefaultExecutor::new()
        .check(&CheckConfig::http("ftp://x/"))
        .await;
    assert_eq!(outcome.status, CheckStatus::Failure);
    assert_eq!(
        outcome.error.as_deref(),
        Some(r#"url "ftp://x/" of the http check must start with http:// and name a host"#)
    );
}
