//! OAuth 2.0 for service accounts: a JWT signed with the account's RSA key (RS256) is
//! exchanged at the key's token endpoint for an access token, kept until shortly before it
//! expires.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{RSA_PKCS1_SHA256, RsaKeyPair},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use reqwest::{Method, header::CONTENT_TYPE};
use serde::Deserialize;
use serde_json::json;
use tokio::{sync::Mutex, time::Instant};
use zeroize::{Zeroize, Zeroizing};

use super::NAME;
use crate::{
    Error,
    http::{Api, Failure},
};

/// The scope that lets the token read and change Cloud DNS zones.
pub const SCOPE: &str = "https://www.googleapis.com/auth/ndev.clouddns.readwrite";
/// The grant type of a JWT assertion (RFC 7523), form-encoded.
const JWT_BEARER: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
/// Lifetime asked for in the assertion, the most Google accepts.
const ASSERTION_LIFETIME: u64 = 3600;
/// A token is fetched again when it has less than this left.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);

/// A service account's JSON key file, as the Google Cloud console downloads it.
///
/// `Debug` shows the account and project only, never the private key, which is wiped from
/// memory once parsed.
pub struct ServiceAccountKey {
    client_email: String,
    project_id: String,
    private_key_id: String,
    token_uri: String,
    key: RsaKeyPair,
}

impl ServiceAccountKey {
    /// Reads the key file's JSON: `type` (`service_account`), `project_id`,
    /// `private_key_id`, `private_key` (PKCS#8 PEM), `client_email` and `token_uri`. Other
    /// fields are ignored. Errors never contain the private key.
    ///
    /// ```
    /// use kokoa_dns::google::ServiceAccountKey;
    /// let error = ServiceAccountKey::from_json(r#"{
    ///     "type": "service_account", "project_id": "kokoa-demo", "private_key_id": "1",
    ///     "private_key": "not a key", "client_email": "dns@kokoa-demo.iam.gserviceaccount.com",
    ///     "token_uri": "https://oauth2.googleapis.com/token"
    /// }"#).expect_err("no usable key");
    /// assert!(error.to_string().contains("is not a PEM PKCS#8 RSA key"));
    /// assert!(!error.to_string().contains("not a key"));
    /// ```
    pub fn from_json(json: &str) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct File {
            #[serde(rename = "type")]
            kind: String,
            project_id: String,
            private_key_id: String,
            private_key: String,
            client_email: String,
            token_uri: String,
        }
        let mut file: File = serde_json::from_str(json).map_err(|e| {
            // serde_json names the field and position; the private key, a string where a
            // string is expected, does not appear.
            invalid(format!(
                "the service account key is not the JSON of a key file: {e}"
            ))
        })?;
        let pem = Zeroizing::new(std::mem::take(&mut file.private_key));
        if file.kind != "service_account" {
            return Err(invalid(format!(
                "the key file is of type {:?}, not \"service_account\"; download a service account key",
                file.kind.chars().take(100).collect::<String>()
            )));
        }
        let key = private_key(&pem).ok_or_else(|| {
            invalid(format!(
                "the private_key of {} is not a PEM PKCS#8 RSA key",
                file.client_email
            ))
        })?;
        Ok(Self {
            client_email: file.client_email,
            project_id: file.project_id,
            private_key_id: file.private_key_id,
            token_uri: file.token_uri,
            key,
        })
    }

    /// The account, e.g. `kokoa@project.iam.gserviceaccount.com`.
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The project the account belongs to.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// Where tokens are asked for.
    pub(super) fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The signed JWT asking for a token with [`SCOPE`], issued at `now` (seconds since the
    /// Unix epoch) and valid for an hour.
    pub(super) fn assertion(&self, now: u64) -> Result<String, Error> {
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": self.private_key_id });
        let claims = json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|_| {
                invalid(format!(
                    "could not sign with the key of {}",
                    self.client_email
                ))
            })?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

/// The key of a `-----BEGIN PRIVATE KEY-----` block.
fn private_key(pem: &str) -> Option<RsaKeyPair> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PRIVATE KEY-----")?
        .strip_suffix("-----END PRIVATE KEY-----")?;
    let mut base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = Zeroizing::new(STANDARD.decode(&base64).ok()?);
    base64.zeroize();
    RsaKeyPair::from_pkcs8(&der).ok()
}

/// A key file that cannot be used.
fn invalid(message: String) -> Error {
    Error::Other {
        provider: NAME,
        source: Box::new(Failure(message)),
    }
}

/// An access token and when to stop using it.
struct Token {
    value: Zeroizing<String>,
    refresh_at: Instant,
}

/// Fetches access tokens for a key and keeps the current one.
pub(super) struct Tokens {
    key: ServiceAccountKey,
    endpoint: Api,
    current: Mutex<Option<Token>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("key", &self.key)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    pub(super) fn new(key: ServiceAccountKey, endpoint: Api) -> Self {
        Self {
            key,
            endpoint,
            current: Mutex::new(None),
        }
    }

    /// The `Authorization` header value: the kept token, or a new one.
    pub(super) async fn bearer(&self) -> Result<Zeroizing<String>, Error> {
        // Held while fetching, so concurrent calls wait for one new token.
        let mut current = self.current.lock().await;
        if let Some(token) = current.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(Zeroizing::new(format!("Bearer {}", token.value.as_str())));
        }
        let token = self.fetch().await?;
        let bearer = Zeroizing::new(format!("Bearer {}", token.value.as_str()));
        *current = Some(token);
        Ok(bearer)
    }

    /// Drops the kept token, after the API refused it.
    pub(super) async fn forget(&self) {
        *self.current.lock().await = None;
    }

    async fn fetch(&self) -> Result<Token, Error> {
        #[derive(Deserialize)]
        struct Answer {
            access_token: String,
            expires_in: u64,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = Zeroizing::new(self.key.assertion(now)?);
        let url = self.endpoint.url(&[]);
        let call = format!("POST {}", url.path());
        // The assertion is base64url and dots: nothing in it needs form encoding.
        let body = format!("grant_type={JWT_BEARER}&assertion={}", assertion.as_str());
        let request = self
            .endpoint
            .request(Method::POST, url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        let answer = match self.endpoint.send(&call, request).await {
            Ok(answer) => answer,
            // The token endpoint answers a refused assertion with 400 (invalid_grant).
            Err(Error::Other { source, .. }) => {
                return Err(Error::Auth {
                    provider: NAME,
                    detail: format!("{source} (service account {})", self.key.client_email),
                });
            }
            Err(other) => return Err(other),
        };
        let answer: Answer = serde_json::from_slice(&answer).map_err(|e| Error::Other {
            provider: NAME,
            source: Box::new(Failure(format!("{call}: unexpected answer: {e}"))),
        })?;
        let lifetime = Duration::from_secs(answer.expires_in);
        Ok(Token {
            value: Zeroizing::new(answer.access_token),
            refresh_at: Instant::now() + lifetime.saturating_sub(REFRESH_BEFORE),
        })
    }
}
