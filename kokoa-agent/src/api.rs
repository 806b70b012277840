//! The control plane's API as both agents use it: enroll, fetch the configuration
//! (conditional and long-polled), post heartbeats and reports.

use std::{fmt::Display, str::FromStr, time::Duration};

use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{CaPin, Secret, pinned_client_config};

/// How long to wait for the control plane beyond a long poll's own wait.
const REQUEST_MARGIN: Duration = Duration::from_secs(10);

/// Why a request to the control plane failed. Never holds the credential or a token.
///
/// Not `#[non_exhaustive]`, unlike the other error types: each agent turns every variant
/// into its own error, worded for its own command line, and a new variant must be worded
/// there too.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The control plane URL cannot be used.
    #[error("invalid control plane URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (its first 300 characters).
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A request did not complete (connection refused, timeout, ...).
    #[error("request to {url} failed: {}", with_causes(source))]
    Http {
        /// The URL asked.
        url: String,
        /// The cause, without the URL.
        #[source]
        source: reqwest::Error,
    },

    /// The control plane answered with an error status.
    #[error("{url} answered {status}: {}", body.chars().take(300).collect::<String>())]
    Status {
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The answer's body.
        body: String,
    },

    /// The control plane's answer is not what the API promises.
    #[error("{url} sent an answer that cannot be read: {message}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        message: String,
    },

    /// Enrollment made a credential for another kind of node.
    #[error("the token enrolls a node of kind {kind:?}")]
    WrongNodeKind {
        /// The kind the control plane returned.
        kind: String,
    },
}

/// `error: cause: cause's cause`: reqwest's own message alone ("error sending request")
/// does not say what went wrong.
pub fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What enrollment returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled<I> {
    /// The control plane's base URL, checked, without a trailing `/`.
    pub control_plane_url: String,
    /// The node's id.
    pub node_id: I,
    /// The long-lived node credential.
    pub credential: Secret,
    /// The control plane's CA pin enrollment trusted, if any.
    pub ca_pin: Option<CaPin>,
}

/// A client of the control plane for one enrolled node.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    credential: Secret,
}

impl Api {
    /// A client of the control plane at `control_plane_url` proving itself with
    /// `credential`; `user_agent` names the agent, e.g. `kokoa-edge/0.1.0`. With `ca_pin`,
    /// only a server whose certificate that CA issued is trusted; without, the system's
    /// CAs.
    pub fn new(
        user_agent: &str,
        control_plane_url: &str,
        ca_pin: Option<CaPin>,
        credential: Secret,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            http: http_client(user_agent, ca_pin)?,
            base: base_url(control_plane_url, ca_pin)?,
            credential,
        })
    }

    /// Exchanges the single-use enrollment `token` for a node credential
    /// (`POST /api/v1/enroll`), registering the public half of the node's WireGuard key;
    /// the node must be of `kind` (`"edge"`, `"origin"`). `ca_pin` as for
    /// [`new`](Self::new).
    pub async fn enroll<I>(
        user_agent: &str,
        control_plane_url: &str,
        ca_pin: Option<CaPin>,
        token: &Secret,
        kind: &str,
        wireguard_public_key: &str,
    ) -> Result<Enrolled<I>, ApiError>
    where
        I: FromStr,
        I::Err: Display,
    {
        #[derive(Serialize)]
        struct Request<'a> {
            token: &'a str,
            wireguard_public_key: &'a str,
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
        let base = base_url(control_plane_url, ca_pin)?;
        let url = format!("{base}/api/v1/enroll");
        let response = http_client(user_agent, ca_pin)?
            .post(&url)
            .timeout(REQUEST_MARGIN)
            .json(&Request {
                token: token.expose(),
                wireguard_public_key,
            })
            .send()
            .await
            .map_err(http_error(&url))?;
        let answer: Answer = read_json(success(response, &url).await?, &url).await?;
        if answer.node.kind != kind {
            return Err(ApiError::WrongNodeKind {
                kind: answer.node.kind,
            });
        }
        let node_id = answer
            .node
            .id
            .parse()
            .map_err(|e: I::Err| ApiError::BadAnswer {
                url,
                message: e.to_string(),
            })?;
        Ok(Enrolled {
            control_plane_url: base,
            node_id,
            credential: answer.credential,
            ca_pin,
        })
    }

    /// The URL of `GET path` long-polled for `wait`.
    pub fn config_url(&self, path: &str, wait: Option<Duration>) -> String {
        match wait {
            Some(wait) => format!("{}{path}?wait={}", self.base, wait.as_secs()),
            None => format!("{}{path}", self.base),
        }
    }

    /// `GET path` (e.g. `/api/v1/edge-nodes/me/config`), conditional on `current` (the
    /// `config_hash` the node has, sent as `If-None-Match`) and, when `wait` is given,
    /// long-polled: the control plane holds the request until the configuration changes or
    /// `wait` has passed. `None`: unchanged (`304`); else the payload as sent.
    pub async fn fetch_config(
        &self,
        path: &str,
        current: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, ApiError> {
        let url = self.config_url(path, wait);
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
            return Ok(None);
        }
        let response = success(response, &url).await?;
        let bytes = response.bytes().await.map_err(http_error(&url))?;
        Ok(Some(bytes.into()))
    }

    /// `POST path` with `body` as JSON (heartbeats, reports).
    pub async fn post(&self, path: &str, body: &impl Serialize) -> Result<(), ApiError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .bearer_auth(self.credential.expose())
            .timeout(REQUEST_MARGIN)
            .json(body)
            .send()
            .await
            .map_err(http_error(&url))?;
        success(response, &url).await.map(drop)
    }
}

fn http_client(user_agent: &str, ca_pin: Option<CaPin>) -> Result<reqwest::Client, ApiError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(user_agent);
    if let Some(pin) = ca_pin {
        builder = builder.tls_backend_preconfigured(pinned_client_config(pin));
    }
    builder.build().map_err(|source| ApiError::Http {
        url: "(client setup)".into(),
        source,
    })
}

/// Checks `url` (`https://` when a CA is pinned) and drops a trailing `/`.
fn base_url(url: &str, ca_pin: Option<CaPin>) -> Result<String, ApiError> {
    let fail = |reason: &str| ApiError::InvalidUrl {
        url: url.chars().take(300).collect(),
        reason: reason.to_owned(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(fail("use http:// or https://"));
    }
    if ca_pin.is_some() && parsed.scheme() != "https" {
        return Err(fail(
            "a CA pin is for https:// URLs; use https:// or leave the pin out",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(fail("give the base URL without a query or fragment"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(fail("credentials do not belong in the URL"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn http_error(url: &str) -> impl FnOnce(reqwest::Error) -> ApiError {
    let url = url.to_owned();
    // Without the URL: ours is in the message already, and a redirect's could be long.
    move |source| ApiError::Http {
        url,
        source: source.without_url(),
    }
}

/// The response when its status is a success, else [`ApiError::Status`].
async fn success(response: reqwest::Response, url: &str) -> Result<reqwest::Response, ApiError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(ApiError::Status {
        url: url.to_owned(),
        status: status.as_u16(),
        body,
    })
}

async fn read_json<T: DeserializeOwned>(
    response: reqwest::Response,
    url: &str,
) -> Result<T, ApiError> {
    let bytes = response.bytes().await.map_err(http_error(url))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadAnswer {
        url: url.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            base_url("http://127.0.0.1:8080/", None).unwrap(),
            "http://127.0.0.1:8080"
        );
        let pin = Some(CaPin::of(b"ca"));
        assert_eq!(
            base_url("https://cp.example.net/", pin).unwrap(),
            "https://cp.example.net"
        );
        let err = base_url("http://cp.example.net", pin)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a CA pin is for https:// URLs"), "{err}");
        for bad in [
            "ftp://x",
            "http://u:p@x",
            "http://u@x",
            "http://x/?a=1",
            "http://x/#f",
            "not a url",
        ] {
            let err = base_url(bad, None).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn config_urls_carry_the_long_poll_wait() {
        let api = Api::new("test/0", "http://127.0.0.1:8080/", None, Secret::new("s")).unwrap();
        assert_eq!(
            api.config_url("/api/v1/origins/me/config", Some(Duration::from_secs(30))),
            "http://127.0.0.1:8080/api/v1/origins/me/config?wait=30"
        );
        assert_eq!(
            api.config_url("/api/v1/edge-nodes/me/config", None),
            "http://127.0.0.1:8080/api/v1/edge-nodes/me/config"
        );
    }
}
