//! A provisioner built from its kind and credentials: what a control plane's configuration
//! file names.

use std::{fmt, sync::Arc};

use crate::{Error, Provisioner, Secret};

/// Every provisioner kind a [`ProvisionerConfig`] can name, whether this build includes it
/// or not (see [`ProvisionerConfig::build`]).
pub const PROVISIONER_KINDS: &[&str] = &["digitalocean", "vultr", "hetzner", "aws", "lab"];

/// A provisioner named by kind, with what it needs.
///
/// | kind | needs |
/// |---|---|
/// | `digitalocean`, `vultr`, `hetzner` | `token` |
/// | `aws` | `aws` (an access key), `security_groups`? |
/// | `lab` | `lab` (network namespaces on this machine, for labs and tests) |
///
/// `base_url` points a cloud provider elsewhere than its public API (a proxy, a test
/// server). `Debug` never shows a secret.
///
/// ```
/// use kokoa_provision::{ProvisionerConfig, Secret};
///
/// let mut config = ProvisionerConfig::new("digitalocean");
/// let err = config.build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid token \"\": this provider needs an API token");
///
/// config.token = Some(Secret::new("dop_v1_secret"));
/// assert_eq!(config.build()?.name(), "digitalocean");
/// assert!(!format!("{config:?}").contains("dop_v1_secret"));
/// # Ok::<(), kokoa_provision::Error>(())
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct ProvisionerConfig {
    /// One of [`PROVISIONER_KINDS`].
    pub kind: String,
    /// The API token of DigitalOcean, Vultr or Hetzner.
    pub token: Option<Secret>,
    /// Another API endpoint.
    pub base_url: Option<String>,
    /// AWS: the access key.
    #[cfg(feature = "ec2")]
    pub aws: Option<kokoa_core::sigv4::Credentials>,
    /// AWS: the security groups of new instances.
    pub security_groups: Vec<String>,
    /// `lab`: its settings.
    #[cfg(feature = "lab")]
    pub lab: Option<crate::lab::LabConfig>,
}

impl fmt::Debug for ProvisionerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionerConfig")
            .field("kind", &self.kind)
            .field("token", &self.token.as_ref().map(|_| "…"))
            .field("base_url", &self.base_url)
            .field("security_groups", &self.security_groups)
            .finish_non_exhaustive()
    }
}

impl ProvisionerConfig {
    /// A provisioner of `kind` with nothing set yet.
    pub fn new(kind: &str) -> Self {
        Self {
            kind: kind.to_owned(),
            ..Self::default()
        }
    }

    /// The provisioner. Errors ([`Error::InvalidConfig`]) name what is missing: an
    /// unknown kind, a kind this build leaves out (its cargo feature is off), a missing
    /// token, key or lab settings.
    pub fn build(&self) -> Result<Arc<dyn Provisioner>, Error> {
        match self.kind.as_str() {
            #[cfg(feature = "digitalocean")]
            "digitalocean" => self.with_token(
                "digitalocean",
                crate::digitalocean::DigitalOcean::new,
                crate::digitalocean::DigitalOcean::with_client,
            ),
            #[cfg(feature = "vultr")]
            "vultr" => self.with_token(
                "vultr",
                crate::vultr::Vultr::new,
                crate::vultr::Vultr::with_client,
            ),
            #[cfg(feature = "hetzner")]
            "hetzner" => self.with_token(
                "hetzner",
                crate::hetzner::Hetzner::new,
                crate::hetzner::Hetzner::with_client,
            ),
            #[cfg(feature = "ec2")]
            "aws" => {
                use crate::ec2::Ec2;
                let keys = self.aws.clone().ok_or(Error::InvalidConfig {
                    field: "aws",
                    value: String::new(),
                    reason: "this provider needs an access key",
                })?;
                let ec2 = match &self.base_url {
                    Some(url) => Ec2::with_client(crate::http::default_client("aws")?, url, keys)?,
                    None => Ec2::new(keys)?,
                };
                Ok(Arc::new(
                    ec2.with_security_groups(self.security_groups.clone())?,
                ))
            }
            #[cfg(feature = "lab")]
            "lab" => {
                let lab = self.lab.clone().ok_or(Error::InvalidConfig {
                    field: "lab",
                    value: String::new(),
                    reason: "the lab provisioner needs its settings",
                })?;
                Ok(Arc::new(crate::lab::LabProvisioner::new(lab)?))
            }
            kind => Err(Error::InvalidConfig {
                field: "provisioner kind",
                value: kind.chars().take(100).collect(),
                reason: if PROVISIONER_KINDS.contains(&kind) {
                    "this program is built without it (a cargo feature of kokoa-provision)"
                } else {
                    "use digitalocean, vultr, hetzner, aws or lab"
                },
            }),
        }
    }

    /// A provider whose credential is one API token, at its public API or at `base_url`.
    #[cfg(any(feature = "digitalocean", feature = "vultr", feature = "hetzner"))]
    fn with_token<P: Provisioner + 'static>(
        &self,
        name: &'static str,
        new: fn(&Secret) -> Result<P, Error>,
        with_client: fn(reqwest::Client, &str, &Secret) -> Result<P, Error>,
    ) -> Result<Arc<dyn Provisioner>, Error> {
        let token = self.token.as_ref().ok_or(Error::InvalidConfig {
            field: "token",
            value: String::new(),
            reason: "this provider needs an API token",
        })?;
        Ok(Arc::new(match &self.base_url {
            Some(url) => with_client(crate::http::default_client(name)?, url, token)?,
            None => new(token)?,
        }))
    }
}
