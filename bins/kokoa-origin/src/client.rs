//! The control plane's API as an origin uses it: enroll, fetch the configuration
//! (conditional and long-polled), heartbeat.

use std::time::Duration;

use kokoa_core::OriginId;
use kokoa_edge::Secret;
use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Error, heartbeat::Heartbeat, payload::OriginConfig, state::Credential};

/// How long to wait for the control plane beyond a long poll's own wait.
const REQUEST_MARGIN: Duration = Duration::from_secs(10);

/// A client of the control plane for one enrolled origin.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    http: reqwest::Client,
    base: String,
    node_id: OriginId,
    credential: Secret,
}

impl ControlPlane {
    /// A client for the origin described by `credential`.
    pub fn new(credential: &Credential) -> Result<Self, Error> {
        Ok(Self {
            http: http_client()?,
            base: base_url(&credential.control_plane_url)?,
            node_id: credential.node_id.clone(),
            credential: credential.credential.clone(),
        })
    }

    /// This origin's id.
    pub fn node_id(&self) -> &OriginId {
        &self.node_id
    }

    /// Exchanges the single-use enrollment `token` for the origin's credential
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
            .timeout(REQUEST_MARGIN)
            .json(&Request {
                token: token.expose(),
            })
            .send()
            .await
            .map_err(http_error(&url))?;
        let answer: Answer = read_json(success(response, &url).await?, &url).await?;
        if answer.node.kind != "origin" {
            return Err(Error::WrongNodeKind {
                kind: answer.node.kind,
            });
        }
        let node_id = OriginId::parse(&answer.node.id).map_err(|e| Error::BadAnswer {
            url,
            message: e.to_string(),
        })?;
        Ok(Credential {
            control_plane_url: base,
            node_id,
            credential: answer.credential,
        })
    }

    /// `GET /api/v1/origins/me/config`, conditional on `current` (the `config_hash` this
    /// origin has) and, with `wait`, long-polled. `None`: unchanged (`304`).
    pub async fn fetch_config(
        &self,
        current: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<Option<OriginConfig>, Error> {
        let mut url = format!("{}/api/v1/origins/me/config", self.base);
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
            return Ok(None);
        }
        read_json(success(response, &url).await?, &url)
            .await
            .map(Some)
    }

    /// `POST /api/v1/heartbeat`.
    pub async fn heartbeat(&self, body: &Heartbeat) -> Result<(), Error> {
        let url = format!("{}/api/v1/heartbeat", self.base);
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

fn http_client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("kokoa-origin/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Http {
            url: "(client setup)".into(),
            message: e.to_string(),
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
    if parsed.query().is_some() || parsed.fragment().is_some() || parsed.password().is_some() {
        return Err(fail("give the base URL only, without query or credentials"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn http_error(url: &str) -> impl FnOnce(reqwest::Error) -> Error {
    let url = url.to_owned();
    move |e| {
        // reqwest's own message ("error sending request") does not say what went wrong:
        // add the causes.
        let e = e.without_url();
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::Http { url, message }
    }
}

/// The response when its status is a success, else the API's error message.
async fn success(response: reqwest::Response, url: &str) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(Error::Status {
        url: url.to_owned(),
        status: status.as_u16(),
        message: api_message(&body),
    })
}

/// `code: message` from the API's `{"error":{"code","message"}}`, else the start of `body`.
fn api_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    match serde_json::from_str::<Body>(body) {
        Ok(Body { error }) => format!("{}: {}", error.code, error.message),
        Err(_) => body.chars().take(300).collect(),
    }
}

async fn read_json<T: DeserializeOwned>(
    response: reqwest::Response,
    url: &str,
) -> Result<T, Error> {
    let bytes = response.bytes().await.map_err(http_error(url))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadAnswer {
        url: url.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_are_shown_as_the_api_said_them() {
        let body = r#"{"error":{"code":"unauthorized","message":"the bearer token is unknown"}}"#;
        assert_eq!(
            api_message(body),
            "unauthorized: the bearer token is unknown"
        );
        assert_eq!(api_message("Bad Gateway"), "Bad Gateway");
    }

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            base_url("http://127.0.0.1:8080/").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in ["ftp://x", "http://u:p@x", "http://x/?a=1", "not a url"] {
            let err = base_url(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
