//! HTTP plumbing shared by the cloud providers: URLs, the bearer token, and the mapping of
//! HTTP answers to [`Error`] variants.
//!
//! EC2 signs each request itself and uses only the client, the timeout and [`Failure`];
//! built with that provider alone, `Api` is unused.
#![cfg_attr(
    not(any(feature = "digitalocean", feature = "vultr", feature = "hetzner")),
    allow(dead_code, unused_imports)
)]

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use reqwest::{
    Client, Method, StatusCode, Url,
    header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER},
};
use serde::de::DeserializeOwned;

use crate::{Error, Secret};

/// Longest wait for one API call: a stuck provider must not hold a replacement forever.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// A client for a provider's real API: a connect timeout, our user agent. (Every request
/// gets [`TIMEOUT`] whatever the client.)
pub(crate) fn default_client(provider: &'static str) -> Result<Client, Error> {
    Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("kokoa-provision/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Other {
            provider,
            source: Box::new(e),
        })
}

/// A provider failure that fits no other variant, carried in [`Error::Other`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Failure(pub(crate) String);

/// One provider's API root and token.
pub(crate) struct Api {
    provider: &'static str,
    client: Client,
    base: Url,
    auth: HeaderValue,
    /// Reads the provider's message out of an error body.
    describe: fn(&[u8]) -> Option<String>,
}

/// Shows the endpoint only: the token is never printed.
impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("provider", &self.provider)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Api {
    /// `base_url` is the API's root without its version, e.g. `https://api.example.net`.
    pub(crate) fn new(
        provider: &'static str,
        client: Client,
        base_url: &str,
        token: &Secret,
        describe: fn(&[u8]) -> Option<String>,
    ) -> Result<Self, Error> {
        let base = Url::parse(base_url.trim_end_matches('/'))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| Error::invalid("API base URL", base_url, "expected an http(s) URL"))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            // The value is a secret: say what is wrong, not what it is.
            .map_err(|_| {
                Error::invalid(
                    "API token",
                    "<hidden>",
                    "it holds characters an HTTP header cannot carry",
                )
            })?;
        auth.set_sensitive(true);
        Ok(Self {
            provider,
            client,
            base,
            auth,
            describe,
        })
    }

    /// The URL of `segments` below the base, each segment percent-encoded so an id can
    /// never add a path level or a query, with `query` (percent-encoded too).
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Sends a request to `segments` below the base and returns the body of a 2xx answer. Any
    /// other answer becomes the matching [`Error`], its detail naming the call and the
    /// provider's message.
    pub(crate) async fn send(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, Error> {
        self.request(method, self.url(segments, &[]), body).await
    }

    /// `GET segments?query` and reads the JSON answer: one page of a list.
    pub(crate) async fn get_page<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<T, Error> {
        let url = self.url(segments, query);
        let call = format!("GET {}", url.path());
        let bytes = self.request(Method::GET, url, None).await?;
        self.read(&call, &bytes)
    }

    /// [`send`](Self::send)'s work, for a complete URL below the base. The detail of an
    /// error names the method and path, not the query.
    async fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Vec<u8>, Error> {
        let provider = self.provider;
        let call = format!("{method} {}", url.path());
        let mut request = self
            .client
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let transient = |e: reqwest::Error| Error::Transient {
            provider,
            detail: format!("{call}: {e}"),
        };
        let response = request.send().await.map_err(transient)?;
        let status = response.status();
        let retry_after = retry_after(response.headers(), SystemTime::now());
        let body = response.bytes().await.map_err(transient)?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let message = (self.describe)(&body)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        let detail = format!("{call}: HTTP {}: {message}", status.as_u16());
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Auth { provider, detail },
            StatusCode::NOT_FOUND => Error::NotFound { provider, detail },
            StatusCode::CONFLICT => Error::Conflict { provider, detail },
            StatusCode::TOO_MANY_REQUESTS => Error::RateLimited {
                provider,
                retry_after,
            },
            // Hetzner answers 423 while another action runs on the server.
            StatusCode::LOCKED => Error::Transient { provider, detail },
            s if s.is_server_error() => Error::Transient { provider, detail },
            _ => Error::Rejected { provider, detail },
        })
    }

    /// [`send`](Self::send), then reads the JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&serde_json::Value>,
    ) -> Result<T, Error> {
        let call = format!("{method} {}", self.url(segments, &[]).path());
        let bytes = self.send(method, segments, body).await?;
        self.read(&call, &bytes)
    }

    /// Reads the JSON answer to `call`.
    fn read<T: DeserializeOwned>(&self, call: &str, bytes: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::Other {
            provider: self.provider,
            source: Box::new(Failure(format!("{call}: unexpected answer: {e}"))),
        })
    }

    /// Destroys with `DELETE segments`; a 404 means it is already gone.
    pub(crate) async fn delete(&self, segments: &[&str]) -> Result<(), Error> {
        match self.send(Method::DELETE, segments, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => {
                tracing::debug!(provider = self.provider, "already destroyed: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// The most pages a list is read to: far more than an account holds servers, and a
/// provider that keeps answering "next page" past it is broken, not busy.
pub(crate) const MAX_PAGES: usize = 1000;

/// The error for a list that still had pages after [`MAX_PAGES`].
pub(crate) fn too_many_pages(provider: &'static str, call: &str) -> Error {
    Error::Other {
        provider,
        source: Box::new(Failure(format!(
            "{call}: still more pages after {MAX_PAGES}; the provider's pagination does not end"
        ))),
    }
}

/// How long a 429 asks us to wait: `Retry-After` in seconds, else the time until the
/// `RateLimit-Reset` epoch second (DigitalOcean and Hetzner send that one).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(seconds) = number(RETRY_AFTER.as_str()) {
        return Some(Duration::from_secs(seconds));
    }
    let reset = UNIX_EPOCH + Duration::from_secs(number("ratelimit-reset")?);
    Some(reset.duration_since(now).unwrap_or_default())
}

/// The numeric id DigitalOcean and Hetzner give their servers, checked before it goes in
/// a path.
#[cfg(any(feature = "digitalocean", feature = "hetzner"))]
pub(crate) fn numeric_id<'a>(
    id: &'a crate::InstanceId,
    what: &'static str,
) -> Result<&'a str, Error> {
    if id.as_str().bytes().all(|b| b.is_ascii_digit()) {
        Ok(id.as_str())
    } else {
        Err(Error::invalid("instance id", id.as_str(), what))
    }
}

/// A number as a JSON number, anything else as a string: DigitalOcean and Hetzner take
/// either an id or a slug/name/fingerprint in the same field.
#[cfg(any(feature = "digitalocean", feature = "hetzner"))]
pub(crate) fn id_or_name(value: &str) -> serde_json::Value {
    match value.parse::<u64>() {
        Ok(number) => number.into(),
        Err(_) => value.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_prefers_the_standard_header() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert("ratelimit-reset", HeaderValue::from_static("1030"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(30)));
        headers.insert("ratelimit-reset", HeaderValue::from_static("900"));
        assert_eq!(retry_after(&headers, now), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
    }

    #[test]
    #[cfg(any(feature = "digitalocean", feature = "hetzner"))]
    fn ids_and_names() {
        assert_eq!(id_or_name("512189"), serde_json::json!(512189));
        assert_eq!(
            id_or_name("ubuntu-24-04-x64"),
            serde_json::json!("ubuntu-24-04-x64")
        );
        let id = crate::InstanceId::parse("cb676a46-66fd").unwrap();
        assert!(numeric_id(&id, "droplet ids are numbers").is_err());
    }

    #[test]
    fn bad_base_urls_and_tokens_are_refused() {
        let client = Client::new();
        let token = Secret::new("t");
        for bad in [
            "",
            "api.example.net",
            "ftp://api.example.net",
            "mailto:x@example.net",
        ] {
            let err = Api::new("vultr", client.clone(), bad, &token, |_| None).unwrap_err();
            assert!(err.to_string().starts_with("invalid API base URL"), "{err}");
        }
        let err = Api::new(
            "vultr",
            client,
            "http://127.0.0.1:1",
            &Secret::new("line\nbreak-secret"),
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("API token") && !err.contains("break-secret"),
            "{err}"
        );
    }
}
