//! Sign-in through an OpenID provider: the authorization code flow with PKCE (RFC 7636),
//! the provider's endpoints from its discovery document, and the ID token verified against
//! the provider's published keys (JWKS), its issuer, audience, expiry and nonce.
//!
//! Who may sign in is configured: e-mail addresses and/or groups (from a claim, `groups`
//! by default). A person allowed in becomes the user with their e-mail address, created on
//! first sign-in with the configured role (admin when in one of the admin groups).

use std::{fmt, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use kokoa_core::{Role, Timestamp};
use kokoa_store::Store;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::error::Error;

/// The store namespace of sign-ins under way, keyed by their `state`.
const PENDING: &str = "oidc_login";
/// How long a sign-in may take at the provider.
pub const PENDING_SECONDS: i64 = 10 * 60;
/// Clock difference tolerated on token times.
const LEEWAY_SECONDS: u64 = 60;

/// The settings of the OpenID provider.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; its discovery document is `ISSUER/.well-known/openid-configuration`.
    pub issuer: String,
    /// This control plane's client id at the provider.
    pub client_id: String,
    /// The client secret, if the provider issued one (else a public client with PKCE).
    /// Also from `KOKOA_OIDC_CLIENT_SECRET`.
    #[serde(default)]
    pub client_secret: Option<Zeroizing<String>>,
    /// E-mail addresses allowed to sign in.
    #[serde(default)]
    pub allowed_emails: Vec<String>,
    /// Groups whose members may sign in.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Groups whose members get the admin role when their user is created.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// The role of other new users: `viewer` (default) or `admin`.
    #[serde(default = "default_role")]
    pub default_role: String,
    /// The claim that lists a person's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Ask for the TOTP second factor after the provider too (set up at first sign-in).
    #[serde(default)]
    pub require_totp: bool,
    /// What the sign-in button says.
    #[serde(default = "default_label")]
    pub label: String,
}

fn default_role() -> String {
    "viewer".into()
}

fn default_groups_claim() -> String {
    "groups".into()
}

fn default_label() -> String {
    "Sign in with single sign-on".into()
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("allowed_emails", &self.allowed_emails)
            .field("allowed_groups", &self.allowed_groups)
            .field("admin_groups", &self.admin_groups)
            .field("default_role", &self.default_role)
            .finish_non_exhaustive()
    }
}

impl OidcConfig {
    /// Checks the settings; the error names the setting.
    pub fn check(&self) -> Result<(), Error> {
        let setting = |setting, message: String| Err(Error::Setting { setting, message });
        if !(self.issuer.starts_with("https://") || self.issuer.starts_with("http://")) {
            return setting(
                "oidc.issuer",
                format!("{:?} is not an http(s) URL", self.issuer),
            );
        }
        if self.client_id.is_empty() {
            return setting("oidc.client_id", "it is empty".into());
        }
        if self.allowed_emails.is_empty() && self.allowed_groups.is_empty() {
            return setting(
                "oidc.allowed_emails",
                "neither allowed_emails nor allowed_groups is set, so nobody could sign in; \
                 list the e-mail addresses or groups that may"
                    .into(),
            );
        }
        if !matches!(self.default_role.as_str(), "admin" | "viewer") {
            return setting(
                "oidc.default_role",
                format!("{:?} is not admin or viewer", self.default_role),
            );
        }
        Ok(())
    }
}

/// The endpoints from the provider's discovery document.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
}

/// A sign-in under way, kept in the store under its `state`.
#[derive(Serialize, Deserialize)]
struct Pending {
    nonce: String,
    verifier: String,
}

/// Who the provider says signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's subject id.
    pub subject: String,
    /// The verified e-mail address.
    pub email: String,
    /// The groups from the groups claim.
    pub groups: Vec<String>,
}

/// An OpenID provider, with its discovery document and keys cached.
pub struct Oidc {
    config: OidcConfig,
    http: reqwest::Client,
    redirect_uri: String,
    discovery: Mutex<Option<Discovery>>,
    keys: Mutex<Option<JwkSet>>,
}

impl fmt::Debug for Oidc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Oidc")
            .field("config", &self.config)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

fn fail(step: &'static str, message: impl fmt::Display) -> Error {
    Error::Oidc {
        step,
        message: message.to_string(),
    }
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE challenge of a verifier (method `S256`).
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[derive(Deserialize)]
struct Tokens {
    id_token: String,
    #[serde(default)]
    access_token: Option<Zeroizing<String>>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Oidc {
    /// A provider reached with `http`; the provider redirects back to
    /// `PUBLIC_URL/login/oidc/callback`, which must be registered with it.
    pub fn new(config: OidcConfig, http: reqwest::Client, public_url: &str) -> Self {
        Self {
            redirect_uri: format!("{public_url}/login/oidc/callback"),
            config,
            http,
            discovery: Mutex::new(None),
            keys: Mutex::new(None),
        }
    }

    /// A provider reached with a default HTTP client (10 s timeout, no redirects).
    pub fn with_default_client(config: OidcConfig, public_url: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| fail("HTTP client", e))?;
        Ok(Self::new(config, http, public_url))
    }

    /// The settings.
    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// The URL the provider sends people back to.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    async fn discovery(&self) -> Result<Discovery, Error> {
        let mut slot = self.discovery.lock().await;
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let found: Discovery = self.get_json("discovery", &url).await?;
        if found.issuer.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') {
            return Err(fail(
                "discovery",
                format!(
                    "the document at {url} names the issuer {:?}, not the configured {:?}",
                    found.issuer, self.config.issuer
                ),
            ));
        }
        *slot = Some(found.clone());
        Ok(found)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        step: &'static str,
        url: &str,
    ) -> Result<T, Error> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fail(step, format!("cannot reach {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(fail(step, format!("{url} answered {}", response.status())));
        }
        response
            .json()
            .await
            .map_err(|e| fail(step, format!("{url} did not answer the expected JSON: {e}")))
    }

    /// Starts a sign-in: remembers a fresh state, nonce and PKCE verifier, and returns the
    /// provider URL to send the browser to, with the state (for the browser's cookie).
    pub async fn start(&self, store: &dyn Store) -> Result<(String, String), Error> {
        let discovery = self.discovery().await?;
        let (state, nonce, verifier) = (random(), random(), random());
        let pending = serde_json::to_string(&Pending {
            nonce: nonce.clone(),
            verifier: verifier.clone(),
        })
        .map_err(|e| fail("start", e))?;
        let expires = Timestamp::from_unix(Timestamp::now().as_unix() + PENDING_SECONDS)?;
        store
            .kv_put(PENDING, &state, &pending, Some(expires))
            .await?;
        let mut url = reqwest::Url::parse(&discovery.authorization_endpoint)
            .map_err(|e| fail("discovery", format!("bad authorization_endpoint: {e}")))?;
        let scope = if self.config.allowed_groups.is_empty() && self.config.admin_groups.is_empty()
        {
            "openid email".to_owned()
        } else {
            format!("openid email {}", self.config.groups_claim)
        };
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("scope", &scope)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge(&verifier))
            .append_pair("code_challenge_method", "S256");
        Ok((url.into(), state))
    }

    /// Finishes a sign-in the provider sent back with `code` and `state`; `cookie_state`
    /// is the state this browser started with. Each state is usable once.
    pub async fn finish(
        &self,
        store: &dyn Store,
        cookie_state: Option<&str>,
        state: &str,
        code: &str,
    ) -> Result<Identity, Error> {
        if cookie_state != Some(state) {
            return Err(fail(
                "callback",
                "the sign-in was not started in this browser (the state does not match); \
                 start again",
            ));
        }
        let now = Timestamp::now();
        let pending = store.kv_get(PENDING, state, now).await?;
        if !store.kv_delete(PENDING, state).await? {
            return Err(fail(
                "callback",
                "the sign-in expired or was used; start again",
            ));
        }
        let pending: Pending = pending
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| fail("callback", e))?
            .ok_or_else(|| fail("callback", "the sign-in expired; start again"))?;
        let discovery = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
            ("code_verifier", &pending.verifier),
        ];
        let mut request = self.http.post(&discovery.token_endpoint);
        match &self.config.client_secret {
            Some(secret) => {
                request = request.basic_auth(&self.config.client_id, Some(secret.as_str()));
            }
            None => form.push(("client_id", &self.config.client_id)),
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(|e| fail("token", format!("cannot reach the token endpoint: {e}")))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(fail(
                "token",
                format!(
                    "the token endpoint answered {status}: {}",
                    body.chars().take(300).collect::<String>()
                ),
            ));
        }
        let tokens: Tokens = response
            .json()
            .await
            .map_err(|e| fail("token", format!("no ID token in the answer: {e}")))?;
        let claims = self.verify(&discovery, &tokens.id_token, now).await?;
        if claims.nonce.as_deref() != Some(pending.nonce.as_str()) {
            return Err(fail(
                "ID token",
                "its nonce is not the one this sign-in sent",
            ));
        }
        let (mut email, mut verified, mut rest) =
            (claims.email, claims.email_verified, claims.rest);
        if email.is_none()
            && let (Some(url), Some(access)) = (&discovery.userinfo_endpoint, &tokens.access_token)
        {
            let info: Claims = self
                .http
                .get(url)
                .bearer_auth(access.as_str())
                .send()
                .await
                .map_err(|e| fail("userinfo", e))?
                .json()
                .await
                .map_err(|e| fail("userinfo", e))?;
            if info.sub != claims.sub {
                return Err(fail(
                    "userinfo",
                    "it describes another subject than the ID token",
                ));
            }
            (email, verified, rest) = (info.email, info.email_verified, info.rest);
        }
        let email = email.ok_or_else(|| {
            fail(
                "ID token",
                "the provider gave no e-mail address; allow the `email` scope for this client",
            )
        })?;
        if verified == Some(false) {
            return Err(fail(
                "ID token",
                format!("the provider has not verified the e-mail address {email:?}"),
            ));
        }
        let groups = rest
            .remove(&self.config.groups_claim)
            .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
            .unwrap_or_default();
        Ok(Identity {
            subject: claims.sub,
            email,
            groups,
        })
    }

    /// The key set, fetched again when `refresh` (a key id not seen before: the provider
    /// rotated its keys).
    async fn keys(&self, discovery: &Discovery, refresh: bool) -> Result<JwkSet, Error> {
        let mut slot = self.keys.lock().await;
        if !refresh && let Some(keys) = slot.as_ref() {
            return Ok(keys.clone());
        }
        let keys: JwkSet = self.get_json("keys", &discovery.jwks_uri).await?;
        *slot = Some(keys.clone());
        Ok(keys)
    }

    async fn verify(
        &self,
        discovery: &Discovery,
        token: &str,
        now: Timestamp,
    ) -> Result<Claims, Error> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| fail("ID token", e))?;
        let asymmetric = matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        );
        if !asymmetric {
            return Err(fail(
                "ID token",
                format!(
                    "it is signed with {:?}; only public-key signatures are accepted",
                    header.alg
                ),
            ));
        }
        let pick = |keys: &JwkSet| match &header.kid {
            Some(kid) => keys.find(kid).cloned(),
            None if keys.keys.len() == 1 => keys.keys.first().cloned(),
            None => None,
        };
        let jwk = match pick(&self.keys(discovery, false).await?) {
            Some(k) => k,
            None => pick(&self.keys(discovery, true).await?).ok_or_else(|| {
                fail(
                    "ID token",
                    "it is signed with a key the provider does not publish",
                )
            })?,
        };
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| fail("keys", e))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&discovery.issuer]);
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| fail("ID token", format!("it does not verify: {e}")))?;
        if let Some(iat) = data
            .claims
            .rest
            .get("iat")
            .and_then(serde_json::Value::as_i64)
            && iat > now.as_unix() + LEEWAY_SECONDS as i64
        {
            return Err(fail("ID token", "it was issued in the future"));
        }
        Ok(data.claims)
    }

    /// Whether `who` may sign in; `Err` says why not.
    pub fn allows(&self, who: &Identity) -> Result<(), Error> {
        let email_ok = self
            .config
            .allowed_emails
            .iter()
            .any(|e| e.eq_ignore_ascii_case(&who.email));
        let group_ok = who
            .groups
            .iter()
            .any(|g| self.config.allowed_groups.contains(g));
        if email_ok || group_ok {
            Ok(())
        } else {
            Err(fail(
                "access",
                format!(
                    "{} is not allowed to sign in here (neither the address nor a group is \
                     listed); ask an administrator",
                    who.email
                ),
            ))
        }
    }

    /// The role a new user signing in as `who` gets.
    pub fn role_of(&self, who: &Identity) -> Role {
        let admin_group = who
            .groups
            .iter()
            .any(|g| self.config.admin_groups.contains(g));
        if admin_group || self.config.default_role == "admin" {
            Role::Admin
        } else {
            Role::Viewer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_matches_rfc_7636() {
        // RFC 7636 appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: "https://id.example.com".into(),
            client_id: "kokoa".into(),
            client_secret: Some(Zeroizing::new("s3cret".into())),
            allowed_emails: vec!["Amy@example.com".into()],
            allowed_groups: vec!["ops".into()],
            admin_groups: vec!["ops-admins".into()],
            default_role: "viewer".into(),
            groups_claim: "groups".into(),
            require_totp: false,
            label: default_label(),
        }
    }

    #[test]
    fn access_by_address_or_group_and_roles_by_group() {
        let oidc = Oidc::new(config(), reqwest::Client::new(), "https://cp.example.com");
        assert_eq!(
            oidc.redirect_uri(),
            "https://cp.example.com/login/oidc/callback"
        );
        let who = |email: &str, groups: &[&str]| Identity {
            subject: "s".into(),
            email: email.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        };
        assert!(oidc.allows(&who("amy@example.com", &[])).is_ok());
        assert!(oidc.allows(&who("bob@example.com", &["ops"])).is_ok());
        let err = oidc
            .allows(&who("eve@example.com", &["ops-admins"]))
            .unwrap_err();
        assert!(err.to_string().contains("eve@example.com"), "{err}");
        assert_eq!(
            oidc.role_of(&who("bob@example.com", &["ops"])),
            Role::Viewer
        );
        assert_eq!(
            oidc.role_of(&who("bob@example.com", &["ops", "ops-admins"])),
            Role::Admin
        );
        assert!(!format!("{oidc:?}").contains("s3cret"));
    }

    #[test]
    fn settings_that_let_nobody_in_are_refused() {
        let mut c = config();
        assert!(c.check().is_ok());
        c.allowed_emails.clear();
        c.allowed_groups.clear();
        assert!(c.check().unwrap_err().to_string().contains("nobody"));
        let mut c = config();
        c.default_role = "root".into();
        assert!(c.check().unwrap_err().to_string().contains("root"));
    }
}
