//! The control plane's API as an edge uses it: enroll, fetch the configuration (conditional
//! and long-polled), heartbeat, ready.

use std::time::Duration;

use kokoa_core::{EdgeConfig, EdgeNodeId};
use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::{
    Error,
    state::{Credential, Secret},
};

/// How long to wait for the control plane beyond a long poll's own wait.
const REQUEST_MARGIN: Duration = Duration::from_secs(10);

/// The answer to a configuration fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// `304 Not Modified`: the configuration is still the one named in `If-None-Match`.
    NotModified,
    /// `200 OK` with a configuration, parsed and checked against its hash.
    Config(EdgeConfig),
}

/// A client of the control plane for one enrolled edge.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    node_id: EdgeNodeId,
    credential: Secret,
}

impl ControlPlane {
    /// A client for the edge described by `credential`.
    pub fn new(credential: &Credential) -> Result<Self, Error> {
        Ok(Self {
            http: http_client()?,
            base: base_url(&credential.control_plane_url)?,
            node_id: credential.node_id.clone(),
            credential: credential.credential.clone(),
        })
    }

    /// This edge's id.
    pub fn node_id(&self) -> &EdgeNodeId {
        &self.node_id
    }

    /// Exchanges the single-use enrollment `token` for a node credential
    /// (`POST /api/v1/enroll`).
    pub async fn enroll(control_plane_url: &str, token: &Secret) -> Result<Credential, Error> {
        #[derive(Serialize)]
        struct Request<'a> {
            token: &'a str,
        }
        #[derive(Deserialize)]
        struct Node {
            kind: String,
            id: String,
        }
        #[derive(Deserialize)]
        struct Answer {
            node: Node,
            credential: Secret,
        }
        let base = base_url(control_plane_url)?;
        let url = format!("{base}/api/v1/enroll");
        let response = http_client()?
            .post(&url)
            .json(&Request {
                token: token.expose(),
            })
            .send()
            .await
            .map_err(http_error(&url))?;
        let response = success(response, &url).await?;
        let answer: Answer = read_json(response, &url).await?;
        if answer.node.kind != "edge" {
            return Err(Error::WrongNodeKind {
                kind: answer.node.kind,
            });
        }
        let node_id = EdgeNodeId::parse(&answer.node.id).map_err(|e| Error::BadAnswer {
            url,
            message: e.to_string(),
        })?;
        Ok(Credential {
            control_plane_url: base,
            node_id,
            credential: answer.credential,
        })
    }

    /// `GET /api/v1/edge-nodes/me/config`, conditional on `current` (the `config_hash` this
    /// edge has) and, when `wait` is given, long-polled: the control plane holds the request
    /// until the configuration changes or `wait` has passed.
    ///
    /// A payload that does not parse or does not match its hash is [`Error::Refused`].
    pub async fn fetch_config(
        &self,
        current: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Fetched, Error> {
        let mut url = format!("{}/api/v1/edge-nodes/me/config", self.base);
        if let Some(wait) = wait {
            url = format!("{url}?wait={}", wait.as_secs());
        }
        let mut request = self
            .http
            .get(&url)
            .bearer_auth(self.credential.expose())
            .timeout(wait.unwrap_or_default() + REQUEST_MARGIN);
        if let Some(hash) = current {
            request = request.header(header::IF_NONE_MATCH, format!("\"{hash}\""));
        }
        let response = request.send().await.map_err(http_error(&url))?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        let response = success(response, &url).await?;
        let bytes = response.bytes().await.map_err(http_error(&url))?;
        let config: EdgeConfig = serde_json::from_slice(&bytes).map_err(|e| Error::Refused {
            hash: stated_hash(&bytes),
            reason: format!("the payload does not parse: {e}"),
        })?;
        config.verify_hash().map_err(|e| Error::Refused {
            hash: config.config_hash().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Fetched::Config(config))
    }

    /// `POST /api/v1/heartbeat`.
    pub async fn heartbeat(&self, body: &impl Serialize) -> Result<(), Error> {
        let url = format!("{}/api/v1/heartbeat", self.base);
        self.post(&url, body).await
    }

    /// `POST /api/v1/edge-nodes/{id}/ready`: the edge serves its first configuration.
    pub async fn ready(&self) -> Result<(), Error> {
        let url = format!("{}/api/v1/edge-nodes/{}/ready", self.base, self.node_id);
        self.post(&url, &serde_json::json!({})).await
    }

    async fn post(&self, url: &str, body: &impl Serialize) -> Result<(), Error> {
        let response = self
            .http
            .post(url)
            .bearer_auth(self.credential.expose())
            .timeout(REQUEST_MARGIN)
            .json(body)
            .send()
            .await
            .map_err(http_error(url))?;
        success(response, url).await.map(drop)
    }
}

fn http_client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("kokoa-edge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| Error::Http {
            url: "(client setup)".into(),
            source,
        })
}

/// Checks `url` and drops a trailing `/`.
fn base_url(url: &str) -> Result<String, Error> {
    let fail = |reason: &str| Error::InvalidUrl {
        url: url.chars().take(300).collect(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(fail("use http:// or https://"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(fail("give the base URL without a query or fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(fail("credentials do not belong in the URL"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn http_error(url: &str) -> impl FnOnce(reqwest::Error) -> Error {
    let url = url.to_owned();
    // Without the URL: ours is in the message already, and a redirect's could be long.
    move |source| Error::Http {
        url,
        source: source.without_url(),
    }
}

/// The response when its status is a success, else the matching error.
async fn success(response: reqwest::Response, url: &str) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(Error::Unauthorized {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let body = response.text().await.unwrap_or_default();
    Err(Error::Status {
        url: url.to_owned(),
        status: status.as_u16(),
        body: body.chars().take(300).collect(),
    })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
    url: &str,
) -> Result<T, Error> {
    let bytes = response.bytes().await.map_err(http_error(url))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadAnswer {
        url: url.to_owned(),
        message: e.to_string(),
    })
}

/// The `config_hash` a payload that failed to parse claims, to name it in logs.
fn stated_hash(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("config_hash")?
                .as_str()
                .map(|s| s.chars().take(64).collect())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
