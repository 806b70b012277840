//! The provider interface and the values it works with.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use async_trait::async_trait;
use kokoa_core::Name;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;

/// A secret string: an API token, an enrollment token, user data that holds one.
///
/// `Debug` never shows it and it is wiped from memory when dropped; read it with
/// [`expose`](Self::expose) where it must be sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes hidden>)", self.0.len())
    }
}

/// A provider's id of an instance: a number at DigitalOcean and Hetzner, a UUID at Vultr,
/// `region:instance` at EC2 (`ap-southeast-1:i-0123456789abcdef0`), the address for a VPS
/// registered by hand.
///
/// Accepted: 1–128 characters of `A-Z`, `a-z`, `0-9`, `.`, `_`, `:` and `-`, other than `.`
/// and `..`. The id ends up in API paths, so the rule keeps out anything that could add a
/// path level or a query.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

impl InstanceId {
    /// Validates an id given by a provider or read back from storage.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let ok = (1..=128).contains(&input.len())
            && input != "."
            && input != ".."
            && input
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(Error::invalid(
                "instance id",
                input,
                "expected 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'",
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({})", self.0)
    }
}

impl TryFrom<String> for InstanceId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> Self {
        id.0
    }
}

/// What to create (SPEC §8.2).
///
/// `region` and `size` are the provider's own codes (`sgp1` and `s-1vcpu-1gb` at
/// DigitalOcean, `sgp` and `vc2-1c-1gb` at Vultr); [`region_code`](crate::region_code)
/// turns a provider-neutral region such as `sgp` into the provider's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// The provider that should create it; a provider refuses a config meant for another.
    pub provider: Name,
    /// The provider's region code.
    pub region: Name,
    /// The provider's size or plan code.
    pub size: Name,
    /// The image: a slug or name (`ubuntu-24-04-x64`, `ubuntu-24.04`) or a numeric id.
    /// At Vultr a number is an `os_id`, anything else an `image_id`.
    pub image: String,
    /// The provider's id (or fingerprint) of the SSH key to install for `root`.
    pub ssh_key_id: Option<String>,
    /// The cloud-init user data, e.g. from [`render_user_data`](crate::render_user_data).
    /// It holds the enrollment token, hence a [`Secret`].
    pub user_data: Secret,
    /// The server's name (also its host name).
    pub name: Name,
    /// Tags (labels at Hetzner) to find Kokoa's servers by in the provider's console.
    pub tags: Vec<Name>,
    /// The public address of an existing VPS: only for the `manual` provider, which
    /// creates nothing.
    pub address: Option<IpAddr>,
}

impl InstanceConfig {
    /// Checks the parts every provider relies on: the config is meant for `provider`, the
    /// image and SSH key are plain text, and the user data fits in `max_user_data` bytes.
    pub(crate) fn check(&self, provider: &'static str, max_user_data: usize) -> Result<(), Error> {
        if self.provider.as_str() != provider {
            return Err(Error::invalid(
                "provider",
                self.provider.as_str(),
                "this configuration is meant for another provider",
            ));
        }
        let plain = |s: &str| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control);
        if !plain(&self.image) {
            return Err(Error::invalid(
                "image",
                &self.image,
                "expected 1-256 characters without control characters",
            ));
        }
        if let Some(key) = self.ssh_key_id.as_deref().filter(|key| !plain(key)) {
            return Err(Error::invalid(
                "ssh_key_id",
                key,
                "expected 1-256 characters without control characters",
            ));
        }
        if self.user_data.expose().len() > max_user_data {
            return Err(Error::invalid(
                "user_data",
                &format!("<{} bytes>", self.user_data.expose().len()),
                "longer than the provider accepts",
            ));
        }
        Ok(())
    }

    /// Refuses an [`address`](Self::address): a cloud provider creates a new VPS and
    /// learns its address, so one given here is a mistake.
    #[cfg(any(
        feature = "digitalocean",
        feature = "vultr",
        feature = "hetzner",
        feature = "ec2",
        feature = "lab"
    ))]
    pub(crate) fn check_no_address(&self) -> Result<(), Error> {
        match self.address {
            Some(address) => Err(Error::invalid(
                "address",
                &address.to_string(),
                "only the manual provider takes the address of an existing VPS",
            )),
            None => Ok(()),
        }
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InstanceStatus {
    /// Being created or booting: not reachable yet.
    Provisioning,
    /// Up, with its public addresses (either may be missing, e.g. an IPv6-only server).
    Running {
        /// Public IPv4 address.
        ipv4: Option<Ipv4Addr>,
        /// Public IPv6 address.
        ipv6: Option<Ipv6Addr>,
    },
    /// Powered off or suspended; it still exists (and still costs money).
    Stopped,
    /// Destroyed, or never existed.
    Gone,
}

impl InstanceStatus {
    /// The address to reach it by: IPv4 when it has one, else IPv6; `None` unless running.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Self::Running { ipv4: Some(ip), .. } => Some(IpAddr::V4(*ip)),
            Self::Running { ipv6: Some(ip), .. } => Some(IpAddr::V6(*ip)),
            _ => None,
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Provisioning => "provisioning",
            Self::Running { .. } => "running",
            Self::Stopped => "stopped",
            Self::Gone => "gone",
        })
    }
}

/// A created instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The provider's id, for [`Provisioner::instance_status`] and
    /// [`Provisioner::destroy_instance`].
    pub id: InstanceId,
    /// Its state when the provider answered, usually [`InstanceStatus::Provisioning`].
    pub status: InstanceStatus,
}

/// How to reach an instance over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    /// Its public address.
    pub host: IpAddr,
    /// 22.
    pub port: u16,
    /// `root`: cloud images install the SSH key for root.
    pub user: String,
}

/// Creates, inspects and destroys edge VPSes at one provider (SPEC §8.2).
///
/// Held as `Arc<dyn Provisioner>`. Each call is independent, so many replicas of the
/// provisioner can share one account.
#[async_trait]
pub trait Provisioner: Send + Sync + fmt::Debug {
    /// The provider's name, as in [`InstanceConfig::provider`]: `digitalocean`, `vultr`,
    /// `hetzner`, `aws`, `manual`.
    fn name(&self) -> &str;

    /// Creates an instance. It usually answers [`InstanceStatus::Provisioning`]; poll
    /// [`instance_status`](Self::instance_status) until it runs.
    async fn create_instance(&self, config: &InstanceConfig) -> Result<Instance, Error>;

    /// Destroys an instance. Idempotent: an instance that is already gone is a success.
    async fn destroy_instance(&self, id: &InstanceId) -> Result<(), Error>;

    /// Where the instance is; one the provider does not know is [`InstanceStatus::Gone`].
    async fn instance_status(&self, id: &InstanceId) -> Result<InstanceStatus, Error>;

    /// How to reach it over SSH: its address, port 22, user `root`. Fails with
    /// [`Error::NotRunning`] until it runs with an address.
    async fn ssh_config(&self, id: &InstanceId) -> Result<SshConfig, Error> {
        let status = self.instance_status(id).await?;
        match status.address() {
            Some(host) => Ok(SshConfig {
                host,
                port: 22,
                user: "root".to_owned(),
            }),
            None => Err(Error::NotRunning {
                instance: id.clone(),
                status,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn secrets_stay_out_of_debug() {
        let secret = Secret::new("dop_v1_very_secret");
        assert_eq!(secret.expose(), "dop_v1_very_secret");
        assert_eq!(format!("{secret:?}"), "Secret(<18 bytes hidden>)");
    }

    #[test]
    fn instance_ids() {
        for good in [
            "12345",
            "cb676a46-66fd-4dfb-b839-443f2e6c0b60",
            "203.0.113.10",
            "2001:db8::1",
        ] {
            assert_eq!(InstanceId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            ".",
            "..",
            "1/2",
            "1?x=2",
            "a b",
            "a%2F",
            &"1".repeat(129),
        ] {
            let err = InstanceId::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid instance id"), "{err}");
        }
        let id: InstanceId = serde_json::from_str("\"42\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"42\"");
        assert!(serde_json::from_str::<InstanceId>("\"../x\"").is_err());
    }

    #[test]
    fn running_instances_have_an_address() {
        let v4: Ipv4Addr = "203.0.113.10".parse().unwrap();
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let both = InstanceStatus::Running {
            ipv4: Some(v4),
            ipv6: Some(v6),
        };
        assert_eq!(both.address(), Some(IpAddr::V4(v4)));
        let only_v6 = InstanceStatus::Running {
            ipv4: None,
            ipv6: Some(v6),
        };
        assert_eq!(only_v6.address(), Some(IpAddr::V6(v6)));
        assert_eq!(InstanceStatus::Stopped.address(), None);
        assert_eq!(InstanceStatus::Provisioning.to_string(), "provisioning");
    }

    fn config() -> InstanceConfig {
        InstanceConfig {
            provider: Name::parse("vultr").unwrap(),
            region: Name::parse("nrt").unwrap(),
            size: Name::parse("vc2-1c-1gb").unwrap(),
            image: "2284".into(),
            ssh_key_id: None,
            user_data: Secret::new("#cloud-config\n"),
            name: Name::parse("edge-nrt-01").unwrap(),
            tags: vec![],
            address: None,
        }
    }

    #[test]
    fn configs_are_checked() {
        assert!(config().check("vultr", 100).is_ok());
        let err = config().check("hetzner", 100).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid provider \"vultr\": this configuration is meant for another provider"
        );
        let mut bad = config();
        bad.image = "ubuntu\n".into();
        assert!(
            bad.check("vultr", 100)
                .unwrap_err()
                .to_string()
                .contains("image")
        );
        let mut bad = config();
        bad.ssh_key_id = Some(String::new());
        assert!(
            bad.check("vultr", 100)
                .unwrap_err()
                .to_string()
                .contains("ssh_key_id")
        );
        let err = config().check("vultr", 5).unwrap_err().to_string();
        assert!(err.contains("user_data \"<14 bytes>\""), "{err}");
    }

    #[test]
    fn user_data_is_hidden_in_debug() {
        let mut config = config();
        config.user_data = Secret::new("#cloud-config\n# token kk_enr_secret\n");
        assert!(!format!("{config:?}").contains("kk_enr_secret"));
    }

    proptest! {
        #[test]
        fn ids_accept_exactly_the_charset(input in "\\PC{0,130}") {
            let allowed = (1..=128).contains(&input.len())
                && input != "." && input != ".."
                && input.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
            prop_assert_eq!(InstanceId::parse(&input).is_ok(), allowed);
        }
    }
}
