//! What the provider tests share: fixtures, a configuration, and the error-mapping checks
//! every provider must pass.

use std::{fs, time::Duration};

use kokoa_core::Name;
use kokoa_provision::{Error, IdempotencyKey, InstanceConfig, Provisioner, Secret};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};

/// The API token the tests use; it must never show up in a message.
pub(crate) const TOKEN: &str = "test-token-3f9a0c";

/// `Authorization` as every provider sends it.
pub(crate) const BEARER: &str = "Bearer test-token-3f9a0c";

/// The idempotency key of the first VPS in the list fixtures (and of the create tests).
pub(crate) const KEY_A: &str = "kokoa-edge-3f9a0c5e1b2d4f6a8c0e2b4d6f8a0c2e";

/// The idempotency key of the second VPS in the list fixtures.
pub(crate) const KEY_B: &str = "kokoa-edge-7d1e4b9a2c6f8e0d3a5b7c9e1f2a4b6c";

/// An idempotency key.
pub(crate) fn key(key: &str) -> IdempotencyKey {
    IdempotencyKey::parse(key).unwrap()
}

/// The installation's tag the list fixtures carry.
pub(crate) fn kokoa() -> Name {
    Name::parse("kokoa").unwrap()
}

/// The text of `tests/fixtures/<provider>/<call>.json`.
pub(crate) fn fixture(provider: &str, call: &str) -> String {
    let file = format!(
        "{}/tests/fixtures/{provider}/{call}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// An answer with `status` and the fixture as a JSON body.
pub(crate) fn answer(status: u16, provider: &str, call: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(fixture(provider, call), "application/json")
}

/// An edge configuration for `provider`, with user data that holds a token.
pub(crate) fn config(provider: &str, region: &str, size: &str, image: &str) -> InstanceConfig {
    let name = |s: &str| Name::parse(s).unwrap();
    InstanceConfig {
        provider: name(provider),
        region: name(region),
        size: name(size),
        image: image.into(),
        ssh_key_id: Some("512189".into()),
        user_data: Secret::new("#cloud-config\nruncmd: [[echo, kk_enr_secret]]\n"),
        name: name(&format!("edge-{region}-01")),
        tags: vec![name("kokoa-edge")],
        idempotency_key: None,
        address: None,
    }
}

/// How a provider answers the error cases: the create call's path and the statuses it
/// uses for a server failure and a refused request.
pub(crate) struct ErrorCases {
    /// Provider name, also its fixtures folder.
    pub(crate) provider: &'static str,
    /// A provider whose calls go to `base_url`.
    pub(crate) make: fn(base_url: &str) -> Box<dyn Provisioner>,
    /// The create call's path, e.g. `/v2/droplets`.
    pub(crate) create_path: &'static str,
    /// The configuration to create.
    pub(crate) config: InstanceConfig,
    /// The status of `server_error.json` (5xx).
    pub(crate) server_error: u16,
    /// The status of `invalid.json` (a refused request).
    pub(crate) invalid: u16,
}

impl ErrorCases {
    /// Answers the create call with `template` and returns the error it turned into.
    async fn create_error(&self, template: ResponseTemplate) -> Error {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(self.create_path))
            .and(header("authorization", BEARER))
            .respond_with(template)
            .expect(1)
            .mount(&server)
            .await;
        let provisioner = (self.make)(&server.uri());
        let err = provisioner
            .create_instance(&self.config)
            .await
            .expect_err("the provider answered with an error");
        let shown = format!("{err} {err:?} {provisioner:?}");
        assert!(!shown.contains(TOKEN), "the token leaked: {shown}");
        assert!(
            !shown.contains("kk_enr_secret"),
            "the user data leaked: {shown}"
        );
        err
    }

    /// Every error status maps to its variant, with the provider's message and the call.
    pub(crate) async fn check(&self) {
        let p = self.provider;
        let message = |call: &str| -> String {
            let body: serde_json::Value = serde_json::from_str(&fixture(p, call)).unwrap();
            let text = body["message"]
                .as_str()
                .or(body["error"].as_str())
                .or(body["error"]["message"].as_str());
            text.unwrap().to_owned()
        };
        let post = format!("POST {}", self.create_path);

        let err = self.create_error(answer(401, p, "unauthorized")).await;
        assert!(
            matches!(err, Error::Auth { provider, .. } if provider == p),
            "{err:?}"
        );
        let shown = err.to_string();
        assert!(
            shown.contains(&message("unauthorized")) && shown.contains(&post),
            "{shown}"
        );
        assert!(!err.is_retryable());

        let err = self.create_error(answer(404, p, "not_found")).await;
        assert!(err.is_not_found(), "{err:?}");
        assert!(err.to_string().contains(&message("not_found")), "{err}");

        let err = self.create_error(answer(409, p, "conflict")).await;
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
        assert!(err.to_string().contains(&message("conflict")), "{err}");

        let limited = answer(429, p, "rate_limited").insert_header("Retry-After", "7");
        let err = self.create_error(limited).await;
        assert!(
            matches!(err, Error::RateLimited { retry_after: Some(wait), .. } if wait == Duration::from_secs(7)),
            "{err:?}"
        );
        assert!(err.is_retryable());

        let err = self
            .create_error(answer(self.server_error, p, "server_error"))
            .await;
        assert!(matches!(err, Error::Transient { .. }), "{err:?}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains(&message("server_error")), "{err}");

        let err = self.create_error(answer(self.invalid, p, "invalid")).await;
        assert!(matches!(err, Error::Rejected { .. }), "{err:?}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains(&message("invalid")), "{err}");

        // A body that is not the documented shape is an error, not a panic.
        let err = self
            .create_error(ResponseTemplate::new(202).set_body_string("{\"unexpected\":true}"))
            .await;
        assert!(matches!(err, Error::Other { .. }), "{err:?}");
        assert!(err.to_string().contains("unexpected answer"), "{err}");

        // Nothing listens there: a temporary failure.
        let closed = (self.make)("http://127.0.0.1:1");
        let err = closed.create_instance(&self.config).await.unwrap_err();
        assert!(matches!(err, Error::Transient { .. }), "{err:?}");

        // A configuration meant for another provider is refused before any request.
        let mut other = self.config.clone();
        other.provider = Name::parse("someone-else").unwrap();
        let err = closed.create_instance(&other).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    field: "provider",
                    ..
                }
            ),
            "{err:?}"
        );
        let mut manual_only = self.config.clone();
        manual_only.address = Some("203.0.113.99".parse().unwrap());
        let err = closed.create_instance(&manual_only).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidConfig {
                    field: "address",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

/// How a provider's list call answers the error cases: 401, 429 with `Retry-After`, a
/// server failure, and a failure on a later page.
pub(crate) struct ListErrorCases {
    /// Provider name, also its fixtures folder.
    pub(crate) provider: &'static str,
    /// A provider whose calls go to `base_url`.
    pub(crate) make: fn(base_url: &str) -> Box<dyn Provisioner>,
    /// The list call's path, e.g. `/v2/droplets`.
    pub(crate) list_path: &'static str,
    /// The status of `server_error.json` (5xx).
    pub(crate) server_error: u16,
}

impl ListErrorCases {
    /// A server that answers the list call with `first`, and once `then` is given, answers
    /// `first` once and `then` after it.
    async fn serve(&self, first: &ResponseTemplate, then: Option<&ResponseTemplate>) -> MockServer {
        let server = MockServer::start().await;
        let mut first_mock = Mock::given(method("GET"))
            .and(path(self.list_path))
            .and(header("authorization", BEARER))
            .respond_with(first.clone());
        if let Some(then) = then {
            first_mock = first_mock.up_to_n_times(1);
            first_mock.mount(&server).await;
            Mock::given(method("GET"))
                .and(path(self.list_path))
                .respond_with(then.clone())
                .mount(&server)
                .await;
        } else {
            first_mock.mount(&server).await;
        }
        server
    }

    /// What `list_instances` and `find_instance` turn these answers into.
    async fn list_error(&self, first: ResponseTemplate, then: Option<ResponseTemplate>) -> Error {
        let server = self.serve(&first, then.as_ref()).await;
        let provisioner = (self.make)(&server.uri());
        let err = provisioner
            .list_instances(&kokoa())
            .await
            .expect_err("the provider answered with an error");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(TOKEN), "the token leaked: {shown}");
        // find_instance answers the same: it cannot say "none" when it could not look.
        let server = self.serve(&first, then.as_ref()).await;
        let provisioner = (self.make)(&server.uri());
        let found = provisioner.find_instance(&kokoa(), &key(KEY_A)).await;
        assert_eq!(
            found.map_err(|e| e.to_string()).unwrap_err(),
            err.to_string()
        );
        err
    }

    /// Every error status maps to its variant, naming the call; no partial list is returned.
    pub(crate) async fn check(&self) {
        let p = self.provider;
        let call = format!("GET {}", self.list_path);

        let err = self.list_error(answer(401, p, "unauthorized"), None).await;
        assert!(
            matches!(err, Error::Auth { provider, .. } if provider == p),
            "{err:?}"
        );
        assert!(err.to_string().contains(&call), "{err}");
        assert!(!err.is_retryable());

        let limited = answer(429, p, "rate_limited").insert_header("Retry-After", "7");
        let err = self.list_error(limited, None).await;
        assert!(
            matches!(err, Error::RateLimited { retry_after: Some(wait), .. } if wait == Duration::from_secs(7)),
            "{err:?}"
        );
        assert!(err.is_retryable());

        let err = self
            .list_error(answer(self.server_error, p, "server_error"), None)
            .await;
        assert!(matches!(err, Error::Transient { .. }), "{err:?}");
        assert!(
            err.is_retryable() && err.to_string().contains(&call),
            "{err}"
        );

        // The first page arrives, the second fails: the whole list fails.
        let err = self
            .list_error(
                answer(200, p, "list_page1"),
                Some(answer(self.server_error, p, "server_error")),
            )
            .await;
        assert!(matches!(err, Error::Transient { .. }), "{err:?}");

        let err = self
            .list_error(
                ResponseTemplate::new(200).set_body_string("{\"unexpected\":true}"),
                None,
            )
            .await;
        assert!(matches!(err, Error::Other { .. }), "{err:?}");
        assert!(err.to_string().contains("unexpected answer"), "{err}");
    }
}
