//! DigitalOcean DNS (`/v2/domains/{domain}/records`) with a personal access token
//! (`Authorization: Bearer`).
//!
//! DigitalOcean names records relative to the domain (`app`, `@` for the apex); the
//! provider turns them into full host names. Listings follow `links.pages.next`, but only
//! to the API's own host, so the token is never sent elsewhere.

use std::time::Duration;

use async_trait::async_trait;
use kokoa_core::{DnsName, Hostname, RecordData, RecordType};
use reqwest::{Client, Method, Url, header::AUTHORIZATION};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::json;

use crate::{
    DnsProvider, Error, ProviderRecord, RateLimit, RecordId, RecordSpec, Zone,
    http::{Api, Described, Failure, default_client, snippet},
};

const NAME: &str = "digitalocean";
/// The real API.
pub const API_URL: &str = "https://api.digitalocean.com/v2";
/// Records asked for per page, the API's maximum.
const PER_PAGE: u32 = 200;
/// Bound on pages read in one listing.
const MAX_PAGES: u32 = 500;

/// DigitalOcean's DNS API.
///
/// ```
/// use kokoa_dns::{DnsProvider, digitalocean::DigitalOceanProvider};
/// let digitalocean = DigitalOceanProvider::new("dop_v1_value")?;
/// assert_eq!(digitalocean.name(), "digitalocean");
/// assert!(!format!("{digitalocean:?}").contains("dop_v1_value"));
/// # Ok::<(), kokoa_dns::Error>(())
/// ```
// Debug shows the endpoint only: `Api` never prints the credential.
#[derive(Debug)]
pub struct DigitalOceanProvider {
    api: Api,
}

impl DigitalOceanProvider {
    /// The real API with `token`, through a client with a 30 s timeout.
    pub fn new(token: &str) -> Result<Self, Error> {
        Self::with_client(default_client(NAME)?, API_URL, token)
    }

    /// The API at `base_url` (up to and including `/v2`) through `client`.
    pub fn with_client(client: Client, base_url: &str, token: &str) -> Result<Self, Error> {
        let bearer = format!("Bearer {token}");
        Ok(Self {
            api: Api::new(NAME, client, base_url, (AUTHORIZATION, &bearer), describe)?,
        })
    }

    /// Every page of a listing, following `links.pages.next`.
    async fn pages<T: DeserializeOwned>(&self, mut url: Url) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let call = format!("GET {}?{}", url.path(), url.query().unwrap_or_default());
            let page: Page<T> = self
                .api
                .json(&call, self.api.request(Method::GET, url))
                .await?;
            all.extend(page.items);
            let Some(next) = page.links.pages.next else {
                return Ok(all);
            };
            url = Url::parse(&next)
                .ok()
                .filter(|next| self.api.same_origin(next))
                .ok_or_else(|| {
                    failure(format!(
                        "{call}: refusing to follow next page link {next:?}"
                    ))
                })?;
        }
        Err(failure(format!(
            "more than {MAX_PAGES} pages; refusing to read further"
        )))
    }

    async fn write(
        &self,
        method: Method,
        url: Url,
        zone: &Zone,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error> {
        let call = format!("{method} {}", url.path());
        let request = self.api.request(method, url).json(&body(zone, spec));
        let answer: RecordAnswer = self.api.json(&call, request).await?;
        Ok(RecordId::new(answer.domain_record.id.to_string()))
    }
}

#[async_trait]
impl DnsProvider for DigitalOceanProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    /// 250 requests a minute, the tighter of DigitalOcean's two documented limits
    /// (5000 an hour, 250 a minute).
    fn rate_limit(&self) -> Option<RateLimit> {
        Some(RateLimit {
            requests: 250,
            per: Duration::from_secs(60),
        })
    }

    async fn list_zones(&self) -> Result<Vec<Zone>, Error> {
        let mut url = self.api.url(&["domains"]);
        url.query_pairs_mut()
            .append_pair("per_page", &PER_PAGE.to_string());
        let domains: Vec<Domain> = self.pages(url).await?;
        Ok(domains
            .into_iter()
            .filter_map(|d| {
                Some(Zone {
                    name: Hostname::parse(&d.name).ok()?,
                    id: d.name,
                })
            })
            .collect())
    }

    async fn list_records(
        &self,
        zone: &Zone,
        name: Option<&DnsName>,
    ) -> Result<Vec<ProviderRecord>, Error> {
        let mut url = self.api.url(&["domains", &zone.id, "records"]);
        {
            let mut query = url.query_pairs_mut();
            if let Some(name) = name {
                query.append_pair("name", name.as_str());
            }
            query.append_pair("per_page", &PER_PAGE.to_string());
        }
        let records: Vec<DomainRecord> = self.pages(url).await?;
        Ok(records.into_iter().filter_map(|r| r.record(zone)).collect())
    }

    async fn create_record(&self, zone: &Zone, spec: &RecordSpec) -> Result<RecordId, Error> {
        let url = self.api.url(&["domains", &zone.id, "records"]);
        self.write(Method::POST, url, zone, spec).await
    }

    async fn update_record(
        &self,
        zone: &Zone,
        id: &RecordId,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error> {
        let url = self.api.url(&["domains", &zone.id, "records", id.as_str()]);
        self.write(Method::PUT, url, zone, spec).await
    }

    async fn delete_record(&self, zone: &Zone, id: &RecordId) -> Result<(), Error> {
        let url = self.api.url(&["domains", &zone.id, "records", id.as_str()]);
        let call = format!("DELETE {}", url.path());
        self.api
            .send(&call, self.api.request(Method::DELETE, url))
            .await
            .map(drop)
    }
}

fn failure(message: String) -> Error {
    Error::Other {
        provider: NAME,
        source: Box::new(Failure(message)),
    }
}

/// The record name relative to the zone, `@` for the apex.
fn relative(zone: &Zone, name: &DnsName) -> String {
    let full = name.as_str();
    match full
        .strip_suffix(zone.name.as_str())
        .and_then(|rest| rest.strip_suffix('.'))
    {
        Some(label) => label.to_owned(),
        None if full == zone.name.as_str() => "@".to_owned(),
        // Not in the zone: the API will refuse it and say so.
        None => full.to_owned(),
    }
}

fn body(zone: &Zone, spec: &RecordSpec) -> serde_json::Value {
    let data = match &spec.data {
        // DigitalOcean wants absolute CNAME targets.
        RecordData::Cname(target) => format!("{target}."),
        other => other.value(),
    };
    json!({
        "type": spec.data.record_type().as_str(),
        "name": relative(zone, &spec.name),
        "data": data,
        "ttl": spec.ttl,
    })
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(alias = "domains", alias = "domain_records")]
    items: Vec<T>,
    #[serde(default)]
    links: Links,
}

#[derive(Deserialize, Default)]
struct Links {
    #[serde(default)]
    pages: Pages,
}

#[derive(Deserialize, Default)]
struct Pages {
    next: Option<String>,
}

#[derive(Deserialize)]
struct Domain {
    name: String,
}

#[derive(Deserialize)]
struct RecordAnswer {
    domain_record: DomainRecord,
}

#[derive(Deserialize)]
struct DomainRecord {
    id: u64,
    #[serde(rename = "type")]
    kind: String,
    name: String,
    data: String,
    ttl: u32,
}

impl DomainRecord {
    fn record(self, zone: &Zone) -> Option<ProviderRecord> {
        let kind = [
            RecordType::A,
            RecordType::Aaaa,
            RecordType::Cname,
            RecordType::Txt,
        ]
        .into_iter()
        .find(|t| t.as_str() == self.kind)?;
        let name = match self.name.as_str() {
            "@" => DnsName::from(&zone.name),
            label => DnsName::parse(&format!("{label}.{}", zone.name)).ok()?,
        };
        Some(ProviderRecord {
            id: RecordId::new(self.id.to_string()),
            spec: RecordSpec {
                name,
                data: RecordData::parse(kind, &self.data).ok()?,
                ttl: self.ttl,
            },
        })
    }
}

/// DigitalOcean answers errors as `{"id": "not_found", "message": "..."}`.
fn describe(body: &[u8]) -> Described {
    #[derive(Deserialize)]
    struct Answer {
        id: String,
        message: String,
    }
    let message = match serde_json::from_slice::<Answer>(body) {
        Ok(answer) => format!("{} [{}]", answer.message, answer.id),
        Err(_) => snippet(body),
    };
    Described {
        message,
        conflict: false,
        rate_limited: false,
    }
}
