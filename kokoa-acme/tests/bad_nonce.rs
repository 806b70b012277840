//! A CA that refuses anti-replay nonces (RFC 8555 §6.5): the order is placed again, a
//! bounded number of times, and what the caller finally sees names the step and the
//! problem.

mod common;

use common::{acme_server, manager};
use kokoa_acme::{ChallengeMethod, Error};
use kokoa_core::Hostname;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

const BAD_NONCE: &str = "urn:ietf:params:acme:error:badNonce";

/// Makes the CA refuse the nonce of every new order, or of the first `times` ones.
async fn refuse_new_orders(server: &MockServer, times: Option<u64>) {
    let refused = ResponseTemplate::new(400)
        .insert_header("Replay-Nonce", "fresh")
        .set_body_raw(
            serde_json::json!({ "type": BAD_NONCE, "detail": "JWS has an invalid anti-replay nonce" })
                .to_string(),
            "application/problem+json",
        );
    let mock = Mock::given(method("POST"))
        .and(path("/order"))
        .respond_with(refused)
        .with_priority(1);
    match times {
        Some(times) => mock.up_to_n_times(times).mount(server).await,
        None => mock.mount(server).await,
    }
}

/// An order the CA gave up on, with no authorizations left to satisfy.
fn invalid_order(server: &MockServer) -> serde_json::Value {
    serde_json::json!({
        "status": "invalid",
        "identifiers": [{ "type": "dns", "value": "app.hoge.com" }],
        "authorizations": [],
        "finalize": format!("{}/order/1/finalize", server.uri()),
        "error": { "type": "urn:ietf:params:acme:error:unauthorized", "detail": "no" },
    })
}

async fn new_order_requests(server: &MockServer) -> usize {
    let requests = server.received_requests().await.unwrap();
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/order")
        .count()
}

fn app() -> Vec<Hostname> {
    vec!["app.hoge.com".parse().unwrap()]
}

#[tokio::test]
async fn an_order_whose_nonces_were_all_refused_is_placed_again() {
    let server = acme_server(false).await;
    let manager = manager(&server, 0).await;
    // The ACME client's three tries of the first order are refused; the second order
    // reaches the CA, which answers it (as invalid, so no certificate is needed here).
    refuse_new_orders(&server, Some(3)).await;
    let order = invalid_order(&server);
    Mock::given(method("POST"))
        .and(path("/order"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("Replay-Nonce", "fresh")
                .insert_header("Location", format!("{}/order/1", server.uri()).as_str())
                .set_body_json(&order),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/order/1"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Replay-Nonce", "fresh")
                .set_body_json(&order),
        )
        .mount(&server)
        .await;

    let error = manager
        .obtain(&app(), ChallengeMethod::Http01)
        .await
        .unwrap_err();
    // The CA's own verdict on the second order, not the refused nonces of the first.
    assert!(
        matches!(&error, Error::ValidationFailed { detail, .. } if detail.contains("unauthorized")),
        "{error}"
    );
    assert_eq!(new_order_requests(&server).await, 4);
}

#[tokio::test]
async fn a_ca_that_keeps_refusing_nonces_is_given_up_on_after_three_orders() {
    let server = acme_server(false).await;
    let manager = manager(&server, 0).await;
    refuse_new_orders(&server, None).await;

    let error = manager
        .obtain(&app(), ChallengeMethod::Http01)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Acme {
                step: "new order",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("anti-replay nonce"), "{error}");
    assert!(error.is_retryable());
    // Three orders, each sent three times by the ACME client.
    assert_eq!(new_order_requests(&server).await, 9);
}
