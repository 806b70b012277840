//! A local ACME server for the tests that need a CA answering in a particular way: its
//! directory, nonces and account creation, and a manager with an account there.

use std::sync::Arc;

use async_trait::async_trait;
use kokoa_acme::{BoxError, CertificateManager, Http01Publisher, Issuer};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

/// Serves a directory (with `renewalInfo` when `ari`), nonces and account creation.
pub(crate) async fn acme_server(ari: bool) -> MockServer {
    let server = MockServer::start().await;
    let base = server.uri();
    let mut directory = serde_json::json!({
        "newNonce": format!("{base}/nonce"),
        "newAccount": format!("{base}/account"),
        "newOrder": format!("{base}/order"),
    });
    if ari {
        directory["renewalInfo"] = format!("{base}/renewal-info").into();
    }
    Mock::given(method("GET"))
        .and(path("/dir"))
        .respond_with(ResponseTemplate::new(200).set_body_json(directory))
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(path("/nonce"))
        .respond_with(ResponseTemplate::new(200).insert_header("Replay-Nonce", "nonce-1"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/account"))
        .respond_with(
            ResponseTemplate::new(201)
                .insert_header("Replay-Nonce", "nonce-2")
                .insert_header("Location", format!("{base}/account/1").as_str())
                .set_body_json(serde_json::json!({ "status": "valid" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    server
}

/// A manager with an account at `server`, over plain HTTP, whose random numbers are
/// always `random`, and whose HTTP-01 responses go nowhere.
pub(crate) async fn manager(server: &MockServer, random: u64) -> CertificateManager {
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<instant_acme::BodyWrapper<bytes::Bytes>>();
    let issuer = Issuer::Custom {
        directory_url: format!("{}/dir", server.uri()),
        trusted_root: None,
        external_account: None,
    };
    let (manager, _) = CertificateManager::builder(issuer)
        .http_client(Box::new(http))
        .random_source(Arc::new(move || random))
        .http01(Arc::new(Unserved))
        .create_account()
        .await
        .unwrap();
    manager
}

/// An HTTP-01 publisher for orders that never reach validation.
struct Unserved;

#[async_trait]
impl Http01Publisher for Unserved {
    async fn publish(&self, _token: &str, _key_authorization: &str) -> Result<(), BoxError> {
        Ok(())
    }

    async fn withdraw(&self, _token: &str) -> Result<(), BoxError> {
        Ok(())
    }
}
