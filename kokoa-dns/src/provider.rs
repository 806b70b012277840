//! The provider interface: zones, records and the calls every DNS provider answers.

use std::{fmt, time::Duration};

use async_trait::async_trait;
use kokoa_core::{DnsName, HealthCheckPath, Hostname, Port, RecordData};

use crate::Error;

/// A DNS zone as a provider knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Zone {
    /// The provider's id for the zone: a Cloudflare zone id, the PowerDNS zone id
    /// (`hoge.com.`), the DigitalOcean domain name.
    pub id: String,
    /// The zone apex, e.g. `hoge.com`.
    pub name: Hostname,
}

impl Zone {
    /// Whether `name` (a [`Hostname`] or a [`DnsName`]) is the apex or lies below it.
    ///
    /// ```
    /// use kokoa_core::Hostname;
    /// use kokoa_dns::Zone;
    /// let zone = Zone { id: "z1".into(), name: Hostname::parse("hoge.com")? };
    /// assert!(zone.contains(&Hostname::parse("app.hoge.com")?));
    /// assert!(!zone.contains(&Hostname::parse("apphoge.com")?));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn contains(&self, name: impl AsRef<str>) -> bool {
        let (name, apex) = (name.as_ref(), self.name.as_str());
        name == apex
            || name
                .strip_suffix(apex)
                .is_some_and(|below| below.ends_with('.'))
    }
}

/// A provider's own id for one record, kept so the record can be updated or deleted and so
/// the manager knows which records it owns.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(String);

impl RecordId {
    /// Wraps an id as the provider wrote it.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text, as stored in the `dns_records` table.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", self.0)
    }
}

/// What a record should be: name, type and value, TTL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordSpec {
    /// The record's name, e.g. `app.hoge.com` or `_acme-challenge.app.hoge.com`.
    pub name: DnsName,
    /// Type and value.
    pub data: RecordData,
    /// Time to live in seconds.
    pub ttl: u32,
}

/// A zone file line: `app.hoge.com. 30 IN A 203.0.113.10`, the form a person types into a
/// provider's web console or a zone file.
impl fmt::Display for RecordSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}. {} IN {} ",
            self.name,
            self.ttl,
            self.data.record_type()
        )?;
        match &self.data {
            // TXT values never hold `"` or `\` (kokoa-core checks), so quoting is enough.
            RecordData::Txt(text) => write!(f, "\"{text}\""),
            RecordData::Cname(target) => write!(f, "{target}."),
            other => f.write_str(&other.value()),
        }
    }
}

/// A record as the provider holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderRecord {
    /// The provider's id.
    pub id: RecordId,
    /// Name, value, TTL.
    pub spec: RecordSpec,
}

/// Health checking done by the DNS provider itself (e.g. Route53 health checks), for
/// providers that offer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// Path requested over HTTPS, e.g. `/health`.
    pub path: HealthCheckPath,
    /// Port requested.
    pub port: Port,
    /// Time between checks.
    pub interval: Duration,
    /// Failed checks in a row before the record is withdrawn.
    pub failure_threshold: u32,
}

/// A DNS provider: Cloudflare, PowerDNS, DigitalOcean, or one written elsewhere.
///
/// Object safe, so the control plane holds an `Arc<dyn DnsProvider>` chosen from its
/// configuration. Only A, AAAA, CNAME and TXT records are handled; listings leave other
/// types out. Implementations never put credentials in `Debug` output or errors.
#[async_trait]
pub trait DnsProvider: Send + Sync + fmt::Debug {
    /// Short provider name, e.g. `cloudflare`, used in errors and the `dns_records` table.
    fn name(&self) -> &'static str;

    /// Requests allowed per period, when the provider documents a limit. The reconciler
    /// paces its calls to stay under it.
    fn rate_limit(&self) -> Option<crate::RateLimit> {
        None
    }

    /// Every zone the credentials can see.
    async fn list_zones(&self) -> Result<Vec<Zone>, Error>;

    /// The zone whose apex is `name`, or [`Error::NotFound`].
    async fn find_zone(&self, name: &Hostname) -> Result<Zone, Error> {
        self.list_zones()
            .await?
            .into_iter()
            .find(|zone| &zone.name == name)
            .ok_or_else(|| Error::NotFound {
                provider: self.name(),
                detail: format!("zone {name}"),
            })
    }

    /// The A, AAAA, CNAME and TXT records of `zone`, only those named `name` if given.
    async fn list_records(
        &self,
        zone: &Zone,
        name: Option<&DnsName>,
    ) -> Result<Vec<ProviderRecord>, Error>;

    /// Creates a record and returns its id.
    async fn create_record(&self, zone: &Zone, spec: &RecordSpec) -> Result<RecordId, Error>;

    /// Replaces the record `id` with `spec` and returns its id afterwards, which differs
    /// from `id` for providers whose ids are derived from the content (PowerDNS).
    async fn update_record(
        &self,
        zone: &Zone,
        id: &RecordId,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error>;

    /// Deletes the record `id`.
    async fn delete_record(&self, zone: &Zone, id: &RecordId) -> Result<(), Error>;

    /// Asks the provider to check the record's target itself and withdraw it when it fails.
    /// Most providers cannot; the default answers [`Error::Unsupported`].
    async fn enable_health_check(
        &self,
        zone: &Zone,
        id: &RecordId,
        check: &HealthCheckSpec,
    ) -> Result<(), Error> {
        let _ = (zone, id, check);
        Err(Error::Unsupported {
            provider: self.name(),
            operation: "enable_health_check",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, data: RecordData) -> RecordSpec {
        RecordSpec {
            name: DnsName::parse(name).expect("test name"),
            data,
            ttl: 30,
        }
    }

    #[test]
    fn specs_print_as_zone_file_lines() {
        let a = spec("app.hoge.com", RecordData::A([203, 0, 113, 10].into()));
        assert_eq!(a.to_string(), "app.hoge.com. 30 IN A 203.0.113.10");
        let txt = spec(
            "txt.hoge.com",
            RecordData::Txt(kokoa_core::TxtText::new("abc def").unwrap()),
        );
        assert_eq!(txt.to_string(), "txt.hoge.com. 30 IN TXT \"abc def\"");
        let target = Hostname::parse("edge.hoge.com").expect("test name");
        let cname = spec("www.hoge.com", RecordData::Cname(target));
        assert_eq!(
            cname.to_string(),
            "www.hoge.com. 30 IN CNAME edge.hoge.com."
        );
    }

    #[test]
    fn the_zone_apex_and_names_below_it_are_in_the_zone() {
        let zone = Zone {
            id: "hoge.com.".into(),
            name: Hostname::parse("hoge.com").expect("test name"),
        };
        for inside in ["hoge.com", "a.hoge.com", "*.b.hoge.com"] {
            assert!(
                zone.contains(Hostname::parse(inside).expect("test name")),
                "{inside}"
            );
        }
        for outside in ["xhoge.com", "hoge.co", "hoge.com.evil.net"] {
            assert!(
                !zone.contains(Hostname::parse(outside).expect("test name")),
                "{outside}"
            );
        }
    }
}
