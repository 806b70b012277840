//! The provider interface and the values it works with.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use async_trait::async_trait;
use kokoa_core::Name;
use serde::{Deserialize, Serialize};

use crate::Error;

pub use kokoa_core::Secret;

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

/// The caller's name for one VPS it asks for, so that asking again — after a timeout, a
/// crash, a failed write of the instance id — finds the VPS made the first time instead of
/// making a second one. The control plane makes one per VPS it creates, e.g.
/// `kokoa-edge-<32 hex digits>`, and keeps it before it calls
/// [`create_instance`](Provisioner::create_instance).
///
/// Each provider carries it on the instance (see [`InstanceConfig::idempotency_key`]), and
/// [`Provisioner::find_instance`] finds the instance by it.
///
/// A key names one VPS: a retry of the same creation sends the same key (and, for EC2, the
/// same user data), a new VPS — a replacement too — gets a new key. EC2 answers a token it
/// has seen with the instance it launched for it, terminated or not, for at least 24 hours
/// after that instance terminated.
///
/// Accepted: 1–63 characters of `a-z`, `0-9` and `-`, starting and ending with a letter or
/// digit. That fits every provider's rule for where it goes: a Hetzner label value (at most
/// 63 characters, starting and ending with an alphanumeric), an EC2 `ClientToken` (at most
/// 64 ASCII characters) and tag value, a DigitalOcean tag (letters, digits, `:`, `-`, `_`,
/// at most 255 with the `kokoa-key:` prefix), a Vultr tag. Lower case only, since tags are
/// compared as written at some providers and not at others.
///
/// ```
/// use kokoa_provision::IdempotencyKey;
///
/// let key = IdempotencyKey::parse("kokoa-edge-3f9a0c5e1b2d4f6a8c0e2b4d6f8a0c2e")?;
/// assert_eq!(key.as_str(), "kokoa-edge-3f9a0c5e1b2d4f6a8c0e2b4d6f8a0c2e");
/// assert!(IdempotencyKey::parse("Kokoa Edge").is_err());
/// # Ok::<(), kokoa_provision::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The tag key (EC2), label key (Hetzner) or tag prefix (`kokoa-key:` at DigitalOcean
    /// and Vultr) the key is carried under; an [`InstanceConfig::tags`] entry may not use it.
    pub const TAG: &'static str = "kokoa-key";

    /// Validates a key.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let alphanumeric =
            |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok = input.len() <= 63
            && alphanumeric(input.bytes().next())
            && alphanumeric(input.bytes().last())
            && input
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(Error::invalid(
                "idempotency key",
                input,
                "expected 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit, e.g. kokoa-edge-<32 hex digits>",
            ))
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tag that carries it where tags are plain strings: `kokoa-key:<key>`.
    #[cfg(any(feature = "digitalocean", feature = "vultr"))]
    pub(crate) fn to_tag(&self) -> String {
        format!("{}:{}", Self::TAG, self.0)
    }

    /// The key of the first `kokoa-key:<key>` among `tags` that holds a valid key.
    #[cfg(any(feature = "digitalocean", feature = "vultr"))]
    pub(crate) fn from_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        tags.into_iter()
            .filter_map(|tag| tag.strip_prefix(Self::TAG)?.strip_prefix(':'))
            .find_map(|key| Self::parse(key).ok())
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = Error;
    fn from_str(input: &str) -> Result<Self, Error> {
        Self::parse(input)
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = Error;
    fn try_from(value: String) -> Result<Self, Error> {
        Self::parse(&value)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> Self {
        key.0
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
    /// Tags (labels at Hetzner) to find Kokoa's servers by in the provider's console, and
    /// by [`Provisioner::list_instances`]. `kokoa-key` is reserved.
    pub tags: Vec<Name>,
    /// The caller's name for this VPS, so that asking again finds it instead of making a
    /// second one ([`Provisioner::find_instance`]). Where it goes: EC2 sends it as the
    /// `RunInstances` `ClientToken` (EC2 answers a repeated call with the instance it made
    /// the first time) and as tag `kokoa-key=<key>`; DigitalOcean and Vultr as tag
    /// `kokoa-key:<key>`; Hetzner as label `kokoa-key=<key>`; the lab keeps it in its state
    /// file. Only EC2 refuses to make a second instance with the same key by itself: at the
    /// others, look before creating again.
    pub idempotency_key: Option<IdempotencyKey>,
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
        if let Some(tag) = self.tags.iter().find(|t| t.as_str() == IdempotencyKey::TAG) {
            return Err(Error::invalid(
                "tags",
                tag.as_str(),
                "kokoa-key is reserved for the idempotency key; use another tag",
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

/// An instance found by [`Provisioner::list_instances`]: its id, where it is in its life,
/// and what it was created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedInstance {
    /// The provider's id, as [`Instance::id`].
    pub id: InstanceId,
    /// Where it is in its life, as [`Provisioner::instance_status`] reports it.
    pub status: InstanceStatus,
    /// Its name at the provider ([`InstanceConfig::name`] when Kokoa made it), if it has one.
    pub name: Option<String>,
    /// The [`InstanceConfig::idempotency_key`] it was created with; `None` for an instance
    /// created without one, or whose key tag was changed into something that is not a key.
    pub idempotency_key: Option<IdempotencyKey>,
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

    /// Every instance that carries `tag` (one of the [`InstanceConfig::tags`] it was
    /// created with), read over every page of the provider's list, with the
    /// [`IdempotencyKey`] each was created with. Instances the provider reports destroyed
    /// or being destroyed ([`InstanceStatus::Gone`]: terminated or shutting down at EC2,
    /// deleting at Hetzner, archived at DigitalOcean) are left out. A failure on any page
    /// fails the whole call: a partial list would hide the instance a caller looks for.
    ///
    /// The default answers [`Error::Unsupported`] naming the provider: a provider that
    /// cannot list its instances cannot say whether one exists.
    async fn list_instances(&self, tag: &Name) -> Result<Vec<TaggedInstance>, Error> {
        let _ = tag;
        Err(Error::Unsupported {
            provider: self.name().to_owned(),
            operation: "listing instances by tag",
        })
    }

    /// The instance that carries `tag` and was created with `key`, if there is one: call
    /// it before creating again after a failed or unanswered
    /// [`create_instance`](Self::create_instance).
    ///
    /// Should several carry the key (two creators raced at a provider without native
    /// idempotency), the first one not gone is returned and the others are named in a
    /// warning; [`list_instances`](Self::list_instances) shows them all.
    async fn find_instance(
        &self,
        tag: &Name,
        key: &IdempotencyKey,
    ) -> Result<Option<TaggedInstance>, Error> {
        let mut found: Vec<TaggedInstance> = self
            .list_instances(tag)
            .await?
            .into_iter()
            .filter(|i| i.idempotency_key.as_ref() == Some(key))
            .collect();
        if found.len() > 1 {
            let ids: Vec<&str> = found.iter().map(|i| i.id.as_str()).collect();
            tracing::warn!(
                provider = self.name(),
                %key,
                "{} instances carry idempotency key {key}: {}; destroy all but one",
                found.len(),
                ids.join(", ")
            );
        }
        let first = found
            .iter()
            .position(|i| i.status != InstanceStatus::Gone)
            .unwrap_or(0);
        Ok((!found.is_empty()).then(|| found.swap_remove(first)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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
            idempotency_key: None,
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
        let mut reserved = config();
        reserved.tags = vec![
            Name::parse("kokoa").unwrap(),
            Name::parse("kokoa-key").unwrap(),
        ];
        let err = reserved.check("vultr", 100).unwrap_err().to_string();
        assert!(err.starts_with("invalid tags \"kokoa-key\""), "{err}");
    }

    #[test]
    fn idempotency_keys() {
        let key = IdempotencyKey::parse("kokoa-edge-3f9a0c5e1b2d4f6a8c0e2b4d6f8a0c2e").unwrap();
        assert_eq!(
            format!("{key:?}"),
            "IdempotencyKey(kokoa-edge-3f9a0c5e1b2d4f6a8c0e2b4d6f8a0c2e)"
        );
        assert_eq!(key.to_string(), key.as_str());
        assert_eq!("a".parse::<IdempotencyKey>().unwrap().as_str(), "a");
        for bad in ["", "-a", "a-", "A", "a_b", "a:b", "a b", &"a".repeat(64)] {
            let err = IdempotencyKey::parse(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid idempotency key {bad:?}")),
                "{err}"
            );
        }
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<IdempotencyKey>(&json).unwrap(), key);
        assert!(serde_json::from_str::<IdempotencyKey>("\"Not-A-Key\"").is_err());
    }

    #[test]
    #[cfg(any(feature = "digitalocean", feature = "vultr"))]
    fn keys_ride_in_tags() {
        let key = IdempotencyKey::parse("kokoa-edge-01").unwrap();
        assert_eq!(key.to_tag(), "kokoa-key:kokoa-edge-01");
        let tags = [
            "kokoa",
            "kokoa-key:Bad Key",
            "kokoa-keyx:other",
            "kokoa-key:kokoa-edge-01",
        ];
        assert_eq!(IdempotencyKey::from_tags(tags), Some(key));
        assert_eq!(IdempotencyKey::from_tags(["kokoa", "kokoa-key"]), None);
    }

    /// What the test providers below answer to anything but listing: these tests use
    /// only the provided methods built on `list_instances`.
    fn only_listing(provider: &str, operation: &'static str) -> Error {
        Error::Unsupported {
            provider: provider.to_owned(),
            operation,
        }
    }

    /// A provider that lists what it is given, to check the provided methods.
    #[derive(Debug)]
    struct Listed(Vec<TaggedInstance>);

    #[async_trait]
    impl Provisioner for Listed {
        fn name(&self) -> &str {
            "listed"
        }
        async fn create_instance(&self, _: &InstanceConfig) -> Result<Instance, Error> {
            Err(only_listing(self.name(), "creating instances"))
        }
        async fn destroy_instance(&self, _: &InstanceId) -> Result<(), Error> {
            Err(only_listing(self.name(), "destroying instances"))
        }
        async fn instance_status(&self, _: &InstanceId) -> Result<InstanceStatus, Error> {
            Err(only_listing(self.name(), "reading an instance's status"))
        }
        async fn list_instances(&self, _: &Name) -> Result<Vec<TaggedInstance>, Error> {
            Ok(self.0.clone())
        }
    }

    /// A provider written before `list_instances` existed.
    #[derive(Debug)]
    struct Old;

    #[async_trait]
    impl Provisioner for Old {
        fn name(&self) -> &str {
            "old-cloud"
        }
        async fn create_instance(&self, _: &InstanceConfig) -> Result<Instance, Error> {
            Err(only_listing(self.name(), "creating instances"))
        }
        async fn destroy_instance(&self, _: &InstanceId) -> Result<(), Error> {
            Err(only_listing(self.name(), "destroying instances"))
        }
        async fn instance_status(&self, _: &InstanceId) -> Result<InstanceStatus, Error> {
            Err(only_listing(self.name(), "reading an instance's status"))
        }
    }

    fn tagged(id: &str, status: InstanceStatus, key: Option<&str>) -> TaggedInstance {
        TaggedInstance {
            id: InstanceId::parse(id).unwrap(),
            status,
            name: Some(format!("edge-{id}")),
            idempotency_key: key.map(|k| IdempotencyKey::parse(k).unwrap()),
        }
    }

    #[tokio::test]
    async fn find_instance_picks_the_key() {
        let tag = Name::parse("kokoa").unwrap();
        let key = IdempotencyKey::parse("kokoa-edge-b").unwrap();
        let listed = Listed(vec![
            tagged("1", InstanceStatus::Provisioning, Some("kokoa-edge-a")),
            tagged("2", InstanceStatus::Gone, Some("kokoa-edge-b")),
            tagged("3", InstanceStatus::Stopped, None),
            tagged("4", InstanceStatus::Provisioning, Some("kokoa-edge-b")),
        ]);
        let found = listed.find_instance(&tag, &key).await.unwrap().unwrap();
        assert_eq!(found.id.as_str(), "4", "one not gone comes first");
        let unknown = IdempotencyKey::parse("kokoa-edge-z").unwrap();
        assert_eq!(listed.find_instance(&tag, &unknown).await.unwrap(), None);
        let only_gone = Listed(vec![tagged(
            "2",
            InstanceStatus::Gone,
            Some("kokoa-edge-b"),
        )]);
        let found = only_gone.find_instance(&tag, &key).await.unwrap().unwrap();
        assert_eq!(found.status, InstanceStatus::Gone);

        let err = Old.find_instance(&tag, &key).await.unwrap_err();
        assert!(err.is_unsupported(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "old-cloud: listing instances by tag is not supported by this provider"
        );
    }

    #[test]
    fn user_data_is_hidden_in_debug() {
        let mut config = config();
        config.user_data = Secret::new("#cloud-config\n# token kk_enr_secret\n");
        assert!(!format!("{config:?}").contains("kk_enr_secret"));
    }

    proptest! {
        #[test]
        fn keys_accept_exactly_the_charset(input in "[a-z0-9A-Z:_ -]{0,66}|\\PC{0,70}") {
            let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            let allowed = input.len() <= 63
                && alphanumeric(input.chars().next())
                && alphanumeric(input.chars().last())
                && input.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            prop_assert_eq!(IdempotencyKey::parse(&input).is_ok(), allowed);
        }

        #[test]
        fn valid_keys_round_trip(input in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            let key = IdempotencyKey::parse(&input).unwrap();
            prop_assert_eq!(key.as_str(), input.as_str());
            let json = serde_json::to_string(&key).unwrap();
            prop_assert_eq!(serde_json::from_str::<IdempotencyKey>(&json).unwrap(), key);
        }

        #[test]
        fn ids_accept_exactly_the_charset(input in "\\PC{0,130}") {
            let allowed = (1..=128).contains(&input.len())
                && input != "." && input != ".."
                && input.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
            prop_assert_eq!(InstanceId::parse(&input).is_ok(), allowed);
        }
    }
}
