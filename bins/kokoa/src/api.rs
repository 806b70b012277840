//! The control plane's REST API, as JSON in and out.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

use crate::{error::Error, settings::Target};

/// A client for one control plane and token.
#[derive(Debug)]
pub(crate) struct Api {
    http: reqwest::Client,
    target: Target,
}

impl Api {
    pub(crate) fn new(target: Target) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("kokoa/", env!("CARGO_PKG_VERSION")));
        if let Some(pin) = target.ca_pin {
            builder = builder.tls_backend_preconfigured(kokoa_agent::pinned_client_config(pin));
        }
        let http = builder
            .build()
            .map_err(|e| Error::Usage(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Self { http, target })
    }

    /// `method path` with an optional JSON body; the answer's JSON (`null` when empty).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let (url, status, bytes) = self.send(method, path, body).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::BadAnswer {
            url,
            status,
            message: e.to_string(),
        })
    }

    /// `GET path`; the answer's bytes.
    pub(crate) async fn download(&self, path: &str) -> Result<Vec<u8>, Error> {
        Ok(self.send(Method::GET, path, None).await?.2)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(String, u16, Vec<u8>), Error> {
        let url = format!("{}{path}", self.target.url);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&self.target.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let http_error = |e: reqwest::Error| {
            let e = e.without_url();
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(": ");
                message.push_str(&cause.to_string());
                source = cause.source();
            }
            Error::Http {
                url: url.clone(),
                message,
            }
        };
        let response = request.send().await.map_err(http_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http_error)?.to_vec();
        if status.is_success() {
            return Ok((url, status.as_u16(), bytes));
        }
        Err(api_error(status, &bytes))
    }
}

/// The API's `{"error":{"code","message"}}` as an error; a body of another shape (from a
/// proxy in front, say) is quoted after the status.
fn api_error(status: reqwest::StatusCode, body: &[u8]) -> Error {
    #[derive(Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(Body { error }) => Error::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        },
        Err(_) => Error::Api {
            status: status.as_u16(),
            code: status.to_string(),
            message: String::from_utf8_lossy(body).chars().take(300).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_the_api_body() {
        let body = br#"{"error":{"code":"conflict","message":"hostname \"a.b\" already exists","field":"hostname"}}"#;
        let err = api_error(reqwest::StatusCode::CONFLICT, body);
        assert_eq!(err.to_string(), "conflict: hostname \"a.b\" already exists");
        let err = api_error(reqwest::StatusCode::BAD_GATEWAY, b"upstream down");
        assert_eq!(err.to_string(), "502 Bad Gateway: upstream down");
    }
}
