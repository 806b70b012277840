//! HTTP plumbing shared by the API providers: URLs, the credential header, and the mapping
//! of HTTP answers to [`Error`] variants.
//!
//! Route 53 signs each request itself and uses only the functions at the end; built with that
//! provider alone, `Api` is unused.
#![cfg_attr(
    not(any(feature = "cloudflare", feature = "powerdns", feature = "digitalocean")),
    allow(dead_code, unused_imports)
)]

use std::time::Duration;

use reqwest::{
    Client, Method, RequestBuilder, StatusCode, Url,
    header::{HeaderName, HeaderValue, RETRY_AFTER},
};
use serde::de::DeserializeOwned;

use crate::Error;

/// Timeout of the clients built by the providers' convenience constructors.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// A provider failure that fits no other variant, carried in [`Error::Other`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Failure(pub(crate) String);

/// What a provider's error body says.
#[derive(Debug, Default)]
pub(crate) struct Described {
    /// Human readable summary, with the provider's error codes.
    pub(crate) message: String,
    /// Whether the provider says the record clashes with an existing one, whatever the status.
    pub(crate) conflict: bool,
    /// Whether the provider says the request came too fast, whatever the status (Google
    /// answers some rate limits with 403 `rateLimitExceeded`).
    pub(crate) rate_limited: bool,
}

/// One provider's API endpoint and credential.
pub(crate) struct Api {
    pub(crate) provider: &'static str,
    client: Client,
    base: Url,
    /// The credential header, unless the provider sets one per request (a token that
    /// expires).
    auth: Option<(HeaderName, HeaderValue)>,
    describe: fn(&[u8]) -> Described,
}

/// Shows the endpoint only: the credential header is never printed.
impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("provider", &self.provider)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Api {
    /// `base_url` is the API root, e.g. `https://api.example.net/client/v4`; `auth` the
    /// header that carries the credential and its value.
    #[cfg(any(feature = "cloudflare", feature = "powerdns", feature = "digitalocean"))]
    pub(crate) fn new(
        provider: &'static str,
        client: Client,
        base_url: &str,
        auth: (HeaderName, &str),
        describe: fn(&[u8]) -> Described,
    ) -> Result<Self, Error> {
        let mut value = HeaderValue::from_str(auth.1).map_err(|_| Error::Auth {
            provider,
            // The value itself is a secret: say what is wrong, not what it is.
            detail: "the credential holds characters an HTTP header cannot carry".into(),
        })?;
        value.set_sensitive(true);
        Ok(Self {
            auth: Some((auth.0, value)),
            ..Self::without_credential(provider, client, base_url, describe)?
        })
    }

    /// An endpoint whose requests get their credential from the caller.
    pub(crate) fn without_credential(
        provider: &'static str,
        client: Client,
        base_url: &str,
        describe: fn(&[u8]) -> Described,
    ) -> Result<Self, Error> {
        let other = |message: String| Error::Other {
            provider,
            source: Box::new(Failure(message)),
        };
        let base = Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| other(format!("invalid API base URL {base_url:?}: {e}")))?;
        if base.cannot_be_a_base() {
            return Err(other(format!(
                "invalid API base URL {base_url:?}: not an http(s) URL"
            )));
        }
        Ok(Self {
            provider,
            client,
            base,
            auth: None,
            describe,
        })
    }

    /// The URL of `segments` below the base, each segment percent-encoded, so an id can
    /// never add a path level or a query.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Whether `url` points at the same scheme, host and port as the base: a pagination
    /// link elsewhere must not receive the credential.
    #[cfg(feature = "digitalocean")]
    pub(crate) fn same_origin(&self, url: &Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// A request with the credential header.
    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.client.request(method, url);
        match &self.auth {
            Some((name, value)) => request.header(name.clone(), value.clone()),
            None => request,
        }
    }

    /// Sends `request` and returns the body of a 2xx answer; any other answer becomes the
    /// matching [`Error`], its detail naming `call` (method and path) and the provider's
    /// message.
    pub(crate) async fn send(&self, call: &str, request: RequestBuilder) -> Result<Vec<u8>, Error> {
        let provider = self.provider;
        let response = request.send().await.map_err(|e| self.transport(call, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport(call, e))?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let described = (self.describe)(&body);
        let detail = format!("{call}: HTTP {}: {}", status.as_u16(), described.message);
        Err(match status {
            _ if described.rate_limited => Error::RateLimited {
                provider,
                retry_after,
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Auth { provider, detail },
            StatusCode::NOT_FOUND => Error::NotFound { provider, detail },
            StatusCode::TOO_MANY_REQUESTS => Error::RateLimited {
                provider,
                retry_after,
            },
            StatusCode::CONFLICT => Error::Conflict { provider, detail },
            _ if described.conflict => Error::Conflict { provider, detail },
            s if s.is_server_error() => Error::Transient { provider, detail },
            _ => Error::Other {
                provider,
                source: Box::new(Failure(detail)),
            },
        })
    }

    /// Sends `request` and reads the JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        call: &str,
        request: RequestBuilder,
    ) -> Result<T, Error> {
        let body = self.send(call, request).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Other {
            provider: self.provider,
            source: Box::new(Failure(format!("{call}: unexpected answer: {e}"))),
        })
    }

    fn transport(&self, call: &str, error: reqwest::Error) -> Error {
        // Without the URL: the call already names the path, and the host adds nothing.
        let error = error.without_url();
        if error.is_builder() || error.is_decode() {
            Error::Other {
                provider: self.provider,
                source: Box::new(Failure(format!("{call}: {error}"))),
            }
        } else {
            Error::Transient {
                provider: self.provider,
                detail: format!("{call}: {error}"),
            }
        }
    }
}

/// The start of a body as text, for messages about answers that are not the documented
/// JSON (a proxy's HTML error page, say).
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".into();
    }
    text.chars().take(200).collect()
}

/// A client with the default timeout, for the convenience constructors.
pub(crate) fn default_client(provider: &'static str) -> Result<Client, Error> {
    Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| Error::Other {
            provider,
            source: Box::new(e),
        })
}
