//! PowerDNS Authoritative through its HTTP API (`X-API-Key`).
//!
//! PowerDNS stores record sets (name + type, one TTL, many contents), not records. Here a
//! record is one content of a set: creating adds the content to the set, deleting removes
//! it (and the set with its last content), and the record id is `name|type|value`, e.g.
//! `app.hoge.com|A|203.0.113.10`. The TTL belongs to the set, so setting a record's TTL
//! sets it for the other contents of the set too. Disabled contents are not listed.

use async_trait::async_trait;
use kokoa_core::{DnsName, Hostname, RecordData, RecordType};
use reqwest::{Client, Method, header::HeaderName};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    DnsProvider, Error, ProviderRecord, RecordId, RecordSpec, Zone,
    http::{Api, Described, default_client, snippet},
    rrset::{self, record_id, record_type},
};

const NAME: &str = "powerdns";
/// The server id every PowerDNS Authoritative answers to.
const SERVER: &str = "localhost";

/// A PowerDNS Authoritative server's HTTP API.
///
/// ```
/// use kokoa_dns::{DnsProvider, powerdns::PowerDnsProvider};
/// let pdns = PowerDnsProvider::new("http://127.0.0.1:8081", "secret")?;
/// assert_eq!(pdns.name(), "powerdns");
/// assert!(!format!("{pdns:?}").contains("secret"));
/// # Ok::<(), kokoa_dns::Error>(())
/// ```
// Debug shows the endpoint only: `Api` never prints the credential.
#[derive(Debug)]
pub struct PowerDnsProvider {
    api: Api,
}

impl PowerDnsProvider {
    /// The API at `base_url` (the webserver address, e.g. `http://127.0.0.1:8081`) with
    /// `api_key`, through a client with a 30 s timeout.
    pub fn new(base_url: &str, api_key: &str) -> Result<Self, Error> {
        Self::with_client(default_client(NAME)?, base_url, api_key)
    }

    /// The same through `client`.
    pub fn with_client(client: Client, base_url: &str, api_key: &str) -> Result<Self, Error> {
        let key = (HeaderName::from_static("x-api-key"), api_key);
        Ok(Self {
            api: Api::new(NAME, client, base_url, key, describe)?,
        })
    }

    async fn rrsets(&self, zone: &Zone) -> Result<Vec<RrSet>, Error> {
        let url = self
            .api
            .url(&["api", "v1", "servers", SERVER, "zones", &zone.id]);
        let call = format!("GET {}", url.path());
        let answer: ZoneAnswer = self
            .api
            .json(&call, self.api.request(Method::GET, url))
            .await?;
        Ok(answer.rrsets)
    }

    /// The set `name`/`kind` of the zone, if it exists.
    async fn rrset(
        &self,
        zone: &Zone,
        name: &DnsName,
        kind: RecordType,
    ) -> Result<Option<RrSet>, Error> {
        let fqdn = fqdn(name);
        Ok(self
            .rrsets(zone)
            .await?
            .into_iter()
            .find(|set| set.name == fqdn && set.kind == kind.as_str()))
    }

    /// Writes the set `name`/`kind`: its contents and TTL, or deletes it when `contents` is
    /// empty.
    async fn patch(
        &self,
        zone: &Zone,
        name: &DnsName,
        kind: RecordType,
        ttl: u32,
        contents: Vec<Content>,
    ) -> Result<(), Error> {
        let set = if contents.is_empty() {
            json!({ "name": fqdn(name), "type": kind.as_str(), "changetype": "DELETE" })
        } else {
            json!({
                "name": fqdn(name), "type": kind.as_str(), "ttl": ttl,
                "changetype": "REPLACE", "records": contents,
            })
        };
        let url = self
            .api
            .url(&["api", "v1", "servers", SERVER, "zones", &zone.id]);
        let call = format!("PATCH {}", url.path());
        let request = self
            .api
            .request(Method::PATCH, url)
            .json(&json!({ "rrsets": [set] }));
        self.api.send(&call, request).await.map(drop)
    }

    /// Replaces `old` (if given) in its set by `spec`'s value, and sets the TTL.
    async fn put(
        &self,
        zone: &Zone,
        old: Option<&RecordData>,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error> {
        let kind = spec.data.record_type();
        let existing = self.rrset(zone, &spec.name, kind).await?;
        let mut contents: Vec<Content> = existing.map(|set| set.records).unwrap_or_default();
        if let Some(old) = old {
            let before = contents.len();
            contents.retain(|c| c.data(kind).as_ref() != Some(old));
            if contents.len() == before {
                return Err(not_found(&spec.name, old));
            }
        }
        contents.retain(|c| c.data(kind).as_ref() != Some(&spec.data));
        contents.push(Content {
            content: content(&spec.data),
            disabled: false,
        });
        self.patch(zone, &spec.name, kind, spec.ttl, contents)
            .await?;
        Ok(record_id(&spec.name, &spec.data))
    }
}

#[async_trait]
impl DnsProvider for PowerDnsProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn list_zones(&self) -> Result<Vec<Zone>, Error> {
        let url = self.api.url(&["api", "v1", "servers", SERVER, "zones"]);
        let call = format!("GET {}", url.path());
        let zones: Vec<ZoneEntry> = self
            .api
            .json(&call, self.api.request(Method::GET, url))
            .await?;
        // Zones whose names are not host names (single labels, say) cannot hold managed
        // records; they are left out rather than failing the whole listing.
        Ok(zones
            .into_iter()
            .filter_map(|z| {
                Some(Zone {
                    name: Hostname::parse(&z.name).ok()?,
                    id: z.id,
                })
            })
            .collect())
    }

    async fn list_records(
        &self,
        zone: &Zone,
        name: Option<&DnsName>,
    ) -> Result<Vec<ProviderRecord>, Error> {
        let mut records = Vec::new();
        for set in self.rrsets(zone).await? {
            // Names and types outside the model (`_acme-challenge`, SOA, MX...) are skipped.
            let (Ok(set_name), Some(kind)) = (DnsName::parse(&set.name), record_type(&set.kind))
            else {
                continue;
            };
            if name.is_some_and(|n| n != &set_name) {
                continue;
            }
            for data in set
                .records
                .iter()
                .filter(|c| !c.disabled)
                .filter_map(|c| c.data(kind))
            {
                records.push(ProviderRecord {
                    id: record_id(&set_name, &data),
                    spec: RecordSpec {
                        name: set_name.clone(),
                        data,
                        ttl: set.ttl,
                    },
                });
            }
        }
        Ok(records)
    }

    async fn create_record(&self, zone: &Zone, spec: &RecordSpec) -> Result<RecordId, Error> {
        self.put(zone, None, spec).await
    }

    async fn update_record(
        &self,
        zone: &Zone,
        id: &RecordId,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error> {
        let (name, old) = parse_id(id)?;
        if name == spec.name && old.record_type() == spec.data.record_type() {
            return self.put(zone, Some(&old), spec).await;
        }
        let new = self.create_record(zone, spec).await?;
        self.delete_record(zone, id).await?;
        Ok(new)
    }

    async fn delete_record(&self, zone: &Zone, id: &RecordId) -> Result<(), Error> {
        let (name, data) = parse_id(id)?;
        let kind = data.record_type();
        let set = self
            .rrset(zone, &name, kind)
            .await?
            .ok_or_else(|| not_found(&name, &data))?;
        let mut contents = set.records;
        let before = contents.len();
        contents.retain(|c| c.data(kind).as_ref() != Some(&data));
        if contents.len() == before {
            return Err(not_found(&name, &data));
        }
        self.patch(zone, &name, kind, set.ttl, contents).await
    }
}

#[derive(Deserialize)]
struct ZoneEntry {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct ZoneAnswer {
    #[serde(default)]
    rrsets: Vec<RrSet>,
}

#[derive(Deserialize)]
struct RrSet {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    ttl: u32,
    records: Vec<Content>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
struct Content {
    content: String,
    disabled: bool,
}

impl Content {
    /// The value, when it is one the model can hold (a TXT of several strings is not).
    fn data(&self, kind: RecordType) -> Option<RecordData> {
        let text = match kind {
            RecordType::Txt => {
                let inner = self.content.strip_prefix('"')?.strip_suffix('"')?;
                if inner.contains('"') {
                    return None;
                }
                inner
            }
            _ => self.content.as_str(),
        };
        RecordData::parse(kind, text).ok()
    }
}

/// The content as PowerDNS writes it: CNAME targets absolute, TXT quoted.
fn content(data: &RecordData) -> String {
    match data {
        RecordData::Cname(target) => format!("{target}."),
        RecordData::Txt(text) => format!("\"{text}\""),
        other => other.value(),
    }
}

fn fqdn(name: &DnsName) -> String {
    format!("{name}.")
}

fn parse_id(id: &RecordId) -> Result<(DnsName, RecordData), Error> {
    rrset::parse_id(NAME, id)
}

fn not_found(name: &DnsName, data: &RecordData) -> Error {
    rrset::not_found(NAME, name, data)
}

/// PowerDNS answers errors as `{"error": "..."}`; a 401 comes as plain text.
fn describe(body: &[u8]) -> Described {
    #[derive(Deserialize)]
    struct Answer {
        error: String,
    }
    let message = match serde_json::from_slice::<Answer>(body) {
        Ok(answer) => answer.error,
        Err(_) => snippet(body),
    };
    Described {
        message,
        conflict: false,
        rate_limited: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_are_read_as_powerdns_writes_them() -> Result<(), Box<dyn std::error::Error>> {
        let quoted = Content {
            content: "\"hello world\"".into(),
            disabled: false,
        };
        assert_eq!(
            quoted.data(RecordType::Txt),
            Some(RecordData::Txt(
                kokoa_core::TxtText::new("hello world").unwrap()
            ))
        );
        let split = Content {
            content: "\"a\" \"b\"".into(),
            disabled: false,
        };
        assert_eq!(split.data(RecordType::Txt), None);
        let cname = Content {
            content: "edge.hoge.com.".into(),
            disabled: false,
        };
        assert_eq!(
            cname.data(RecordType::Cname),
            Some(RecordData::parse(RecordType::Cname, "edge.hoge.com")?)
        );
        assert_eq!(
            content(&RecordData::parse(RecordType::Cname, "edge.hoge.com")?),
            "edge.hoge.com."
        );
        Ok(())
    }
}
