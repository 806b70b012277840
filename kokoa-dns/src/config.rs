//! A provider built from its kind, settings and credentials: the form a control plane
//! stores a zone's provider in.

use std::{collections::BTreeMap, fmt, sync::Arc};

use kokoa_core::Hostname;

use crate::{DnsProvider, Error};

/// Every provider kind a [`ProviderConfig`] can name, whether this build includes it or
/// not (see [`ProviderConfig::build`]). `manual` has no API: a person sets the records.
pub const PROVIDER_KINDS: &[&str] = &[
    "cloudflare",
    "route53",
    "google",
    "powerdns",
    "rfc2136",
    "digitalocean",
    "manual",
];

/// A DNS provider named by kind, with its settings and its credentials.
///
/// | kind | settings | credentials |
/// |---|---|---|
/// | `cloudflare` | `base_url`? | `api_token` |
/// | `route53` | `base_url`? | `access_key_id`, `secret_access_key`, `session_token`? |
/// | `google` | `base_url`?, `project`? | `service_account` (the JSON key) |
/// | `powerdns` | `url` | `api_key` |
/// | `rfc2136` | `server` (`192.0.2.53:53`), `key_name`, `algorithm`? | `secret` (base64) |
/// | `digitalocean` | `base_url`? | `token` |
/// | `manual` | | |
///
/// `base_url` points an HTTP provider elsewhere than its public API (a proxy, a test
/// server). `Debug` never shows a credential's value.
///
/// ```
/// use kokoa_core::Hostname;
/// use kokoa_dns::ProviderConfig;
///
/// let zone = Hostname::parse("hoge.com")?;
/// let mut config = ProviderConfig::new("cloudflare");
/// let err = config.build(&zone).unwrap_err();
/// assert_eq!(err.to_string(), "cloudflare: credential \"api_token\" is missing");
///
/// config.credentials.insert("api_token".into(), "secret-token".into());
/// assert_eq!(config.build(&zone)?.map(|p| p.name()), Some("cloudflare"));
/// assert!(!format!("{config:?}").contains("secret-token"));
/// assert!(ProviderConfig::new("manual").build(&zone)?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProviderConfig {
    /// One of [`PROVIDER_KINDS`].
    pub kind: String,
    /// Settings that are not secret.
    pub settings: BTreeMap<String, String>,
    /// Secrets: API tokens and keys.
    pub credentials: BTreeMap<String, String>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("settings", &self.settings)
            .field("credentials", &self.credentials.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A configuration error: nothing was asked of the provider yet.
#[derive(Debug)]
struct Invalid(String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

impl ProviderConfig {
    /// A provider of `kind` with no settings or credentials yet.
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            ..Self::default()
        }
    }

    /// The provider for the zone whose apex is `zone`; `None` for `manual`.
    ///
    /// Errors ([`Error::Other`]) name what is missing or wrong, never a credential's value:
    /// an unknown kind, a kind this build leaves out (its cargo feature is off), a missing
    /// setting or credential, a value of the wrong form.
    #[cfg_attr(not(feature = "rfc2136"), expect(unused_variables))]
    pub fn build(&self, zone: &Hostname) -> Result<Option<Arc<dyn DnsProvider>>, Error> {
        let provider: Result<Arc<dyn DnsProvider>, Error> = match self.kind.as_str() {
            "manual" => return Ok(None),
            #[cfg(feature = "cloudflare")]
            "cloudflare" => self.with_token(
                "cloudflare",
                "api_token",
                crate::cloudflare::CloudflareProvider::new,
                crate::cloudflare::CloudflareProvider::with_client,
            ),
            #[cfg(feature = "powerdns")]
            "powerdns" => Ok(Arc::new(crate::powerdns::PowerDnsProvider::with_client(
                crate::http::default_client("powerdns")?,
                self.required("url")?,
                self.credential("api_key")?,
            )?)),
            #[cfg(feature = "digitalocean")]
            "digitalocean" => self.with_token(
                "digitalocean",
                "token",
                crate::digitalocean::DigitalOceanProvider::new,
                crate::digitalocean::DigitalOceanProvider::with_client,
            ),
            #[cfg(feature = "route53")]
            "route53" => {
                use crate::{http::default_client, route53::Route53Provider};
                let mut keys = kokoa_core::sigv4::Credentials::new(
                    self.credential("access_key_id")?,
                    self.credential("secret_access_key")?,
                );
                if let Some(token) = self.credentials.get("session_token") {
                    keys = keys.with_session_token(token);
                }
                Ok(Arc::new(match self.setting("base_url") {
                    Some(url) => {
                        Route53Provider::with_client(default_client("route53")?, url, keys)?
                    }
                    None => Route53Provider::new(keys)?,
                }))
            }
            #[cfg(feature = "google")]
            "google" => {
                use crate::google::{GoogleCloudDns, ServiceAccountKey};
                let key = ServiceAccountKey::from_json(self.credential("service_account")?)?;
                let provider = match self.setting("base_url") {
                    Some(url) => GoogleCloudDns::with_client(
                        crate::http::default_client("google")?,
                        url,
                        key,
                    )?,
                    None => GoogleCloudDns::new(key)?,
                };
                Ok(Arc::new(match self.setting("project") {
                    Some(project) => provider.with_project(project),
                    None => provider,
                }))
            }
            #[cfg(feature = "rfc2136")]
            "rfc2136" => {
                use crate::rfc2136::{Rfc2136Provider, TsigAlgorithm, TsigKey};
                let server = self.required("server")?.parse().map_err(|_| {
                    self.invalid(
                        "setting \"server\" is not an address and port like \"192.0.2.53:53\"",
                    )
                })?;
                let algorithm = match self.setting("algorithm") {
                    Some(name) => name.parse()?,
                    None => TsigAlgorithm::default(),
                };
                let key = TsigKey::new(
                    self.required("key_name")?,
                    algorithm,
                    self.credential("secret")?,
                )?;
                Ok(Arc::new(Rfc2136Provider::new(server, key, [zone.clone()])))
            }
            kind if PROVIDER_KINDS.contains(&kind) => Err(self.invalid(&format!(
                "this program is built without the DNS provider {kind:?} \
                 (the {kind:?} feature of kokoa-dns)"
            ))),
            other => Err(self.invalid(&format!(
                "unknown DNS provider {other:?}; use one of {}",
                PROVIDER_KINDS.join(", ")
            ))),
        };
        provider.map(Some)
    }

    fn invalid(&self, message: &str) -> Error {
        Error::Other {
            provider: PROVIDER_KINDS
                .iter()
                .find(|k| **k == self.kind)
                .copied()
                .unwrap_or("dns"),
            source: Box::new(Invalid(message.to_owned())),
        }
    }

    #[allow(dead_code, reason = "unused when no provider feature is on")]
    fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    #[allow(dead_code, reason = "unused when no provider feature is on")]
    fn required(&self, key: &str) -> Result<&str, Error> {
        self.setting(key)
            .ok_or_else(|| self.invalid(&format!("setting {key:?} is missing")))
    }

    #[allow(dead_code, reason = "unused when no provider feature is on")]
    fn credential(&self, key: &str) -> Result<&str, Error> {
        self.credentials
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| self.invalid(&format!("credential {key:?} is missing")))
    }

    /// A provider whose credential is one token, at its public API or at `base_url`.
    #[cfg(any(feature = "cloudflare", feature = "digitalocean"))]
    fn with_token<P: DnsProvider + 'static>(
        &self,
        name: &'static str,
        key: &str,
        new: fn(&str) -> Result<P, Error>,
        with_client: fn(reqwest::Client, &str, &str) -> Result<P, Error>,
    ) -> Result<Arc<dyn DnsProvider>, Error> {
        let token = self.credential(key)?;
        Ok(Arc::new(match self.setting("base_url") {
            Some(url) => with_client(crate::http::default_client(name)?, url, token)?,
            None => new(token)?,
        }))
    }
}

#[cfg(all(
    test,
    feature = "cloudflare",
    feature = "powerdns",
    feature = "digitalocean",
    feature = "route53",
    feature = "google",
    feature = "rfc2136"
))]
mod tests {
    use super::*;

    fn build(
        kind: &str,
        settings: &[(&str, &str)],
        credentials: &[(&str, &str)],
    ) -> Result<&'static str, String> {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let config = ProviderConfig {
            kind: kind.to_owned(),
            settings: map(settings),
            credentials: map(credentials),
        };
        match config.build(&Hostname::parse("kokoa.test").unwrap()) {
            Ok(Some(p)) => Ok(p.name()),
            Ok(None) => Ok("none"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn every_provider_is_built_from_its_settings_and_credentials() {
        assert_eq!(build("manual", &[], &[]), Ok("none"));
        assert_eq!(
            build("cloudflare", &[], &[("api_token", "t")]),
            Ok("cloudflare")
        );
        assert_eq!(
            build(
                "powerdns",
                &[("url", "http://127.0.0.1:8081")],
                &[("api_key", "k")]
            ),
            Ok("powerdns")
        );
        assert_eq!(
            build("digitalocean", &[], &[("token", "t")]),
            Ok("digitalocean")
        );
        assert_eq!(
            build(
                "route53",
                &[],
                &[("access_key_id", "AKID"), ("secret_access_key", "s")]
            ),
            Ok("route53")
        );
        assert_eq!(
            build(
                "rfc2136",
                &[
                    ("server", "127.0.0.1:53"),
                    ("key_name", "kokoa"),
                    ("algorithm", "hmac-sha512")
                ],
                &[("secret", "c2VjcmV0LXNlY3JldC1zZWNyZXQ=")]
            ),
            Ok("rfc2136")
        );
        // What is missing or wrong is named, never a secret's value.
        let err = build("cloudflare", &[], &[]).unwrap_err();
        assert_eq!(err, "cloudflare: credential \"api_token\" is missing");
        let err = build("powerdns", &[], &[("api_key", "k")]).unwrap_err();
        assert_eq!(err, "powerdns: setting \"url\" is missing");
        let err = build(
            "rfc2136",
            &[("server", "nowhere"), ("key_name", "k")],
            &[("secret", "c2VjcmV0")],
        )
        .unwrap_err();
        assert!(err.contains("\"server\""), "{err}");
        let err = build("google", &[], &[("service_account", "{}")]).unwrap_err();
        assert!(err.starts_with("google: "), "{err}");
        let err = build("bind", &[], &[]).unwrap_err();
        assert!(err.contains("\"bind\"") && err.contains("rfc2136"), "{err}");
    }
}
