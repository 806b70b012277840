//! Cloudflare DNS through API v4 with an API token (`Authorization: Bearer`).
//!
//! Records are created unproxied (`proxied: false`: traffic goes straight to the edges)
//! with the comment `managed-by: kokoa`, so a person looking at the dashboard sees which
//! records Kokoa manages. Ownership itself is the set of ids the manager keeps.
//! Listings follow `result_info` pagination. Note that Cloudflare accepts TTLs below 60 s
//! only on Enterprise zones (1 means "automatic").

use async_trait::async_trait;
use kokoa_core::{DnsName, Hostname, RecordData, RecordType};
use reqwest::{Client, Method, Url, header::AUTHORIZATION};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{
    DnsProvider, Error, ProviderRecord, RateLimit, RecordId, RecordSpec, Zone,
    http::{Api, Described, Failure, default_client, snippet},
};

const NAME: &str = "cloudflare";
/// The real API.
pub const API_URL: &str = "https://api.cloudflare.com/client/v4";
/// The comment that marks a record as Kokoa's in the dashboard.
pub const OWNER_COMMENT: &str = "managed-by: kokoa";
/// Records asked for per page (the API's maximum for DNS records is larger; 100 keeps
/// answers small).
const RECORDS_PER_PAGE: u32 = 100;
/// Zones per page, the API's maximum.
const ZONES_PER_PAGE: u32 = 50;
/// Bound on pages read in one listing: 100 000 records at 100 a page.
const MAX_PAGES: u32 = 1000;
/// Error codes meaning the record clashes with an existing one: an A/AAAA/CNAME clash,
/// "record already exists", "an identical record already exists".
const CONFLICT_CODES: [u64; 3] = [81053, 81057, 81058];

/// Cloudflare's API v4.
///
/// ```
/// use kokoa_dns::{DnsProvider, cloudflare::CloudflareProvider};
/// let cloudflare = CloudflareProvider::new("token-value")?;
/// assert_eq!(cloudflare.name(), "cloudflare");
/// assert!(!format!("{cloudflare:?}").contains("token-value"));
/// # Ok::<(), kokoa_dns::Error>(())
/// ```
// Debug shows the endpoint only: `Api` never prints the credential.
#[derive(Debug)]
pub struct CloudflareProvider {
    api: Api,
}

impl CloudflareProvider {
    /// The real API with `api_token` (needs the Zone:Read and DNS:Edit permissions),
    /// through a client with a 30 s timeout.
    pub fn new(api_token: &str) -> Result<Self, Error> {
        Self::with_client(default_client(NAME)?, API_URL, api_token)
    }

    /// The API at `base_url` (up to and including `/client/v4`) through `client`.
    pub fn with_client(client: Client, base_url: &str, api_token: &str) -> Result<Self, Error> {
        let bearer = format!("Bearer {api_token}");
        Ok(Self {
            api: Api::new(NAME, client, base_url, (AUTHORIZATION, &bearer), describe)?,
        })
    }

    /// Sends one request and unwraps the envelope.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<Envelope<T>, Error> {
        let call = match url.query() {
            Some(query) => format!("{method} {}?{query}", url.path()),
            None => format!("{method} {}", url.path()),
        };
        let mut request = self.api.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let envelope: Envelope<T> = self.api.json(&call, request).await?;
        if !envelope.success {
            return Err(Error::Other {
                provider: NAME,
                source: Box::new(Failure(format!("{call}: {}", messages(&envelope.errors)))),
            });
        }
        Ok(envelope)
    }

    /// Every page of a listing at `url` with `query`.
    async fn pages<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &[(&str, &str)],
        per_page: u32,
    ) -> Result<Vec<T>, Error> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut url = self.api.url(segments);
            url.query_pairs_mut()
                .extend_pairs(query)
                .append_pair("page", &page.to_string())
                .append_pair("per_page", &per_page.to_string());
            let envelope: Envelope<Vec<T>> = self.call(Method::GET, url, None).await?;
            all.extend(envelope.result.unwrap_or_default());
            let total = envelope.result_info.map_or(1, |info| info.total_pages);
            if page >= total {
                return Ok(all);
            }
        }
        Err(Error::Other {
            provider: NAME,
            source: Box::new(Failure(format!(
                "GET /{}: more than {MAX_PAGES} pages; refusing to read further",
                segments.join("/")
            ))),
        })
    }

    async fn write(&self, method: Method, url: Url, spec: &RecordSpec) -> Result<RecordId, Error> {
        let envelope: Envelope<RecordEntry> = self.call(method, url, Some(body(spec))).await?;
        let record = envelope.result.ok_or_else(|| Error::Other {
            provider: NAME,
            source: Box::new(Failure(format!("no record in the answer for {spec}"))),
        })?;
        Ok(RecordId::new(record.id))
    }
}

#[async_trait]
impl DnsProvider for CloudflareProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        Some(RateLimit::CLOUDFLARE)
    }

    async fn list_zones(&self) -> Result<Vec<Zone>, Error> {
        let zones: Vec<ZoneEntry> = self.pages(&["zones"], &[], ZONES_PER_PAGE).await?;
        Ok(zones.into_iter().filter_map(ZoneEntry::zone).collect())
    }

    async fn find_zone(&self, name: &Hostname) -> Result<Zone, Error> {
        let zones: Vec<ZoneEntry> = self
            .pages(&["zones"], &[("name", name.as_str())], ZONES_PER_PAGE)
            .await?;
        zones
            .into_iter()
            .filter_map(ZoneEntry::zone)
            .find(|zone| &zone.name == name)
            .ok_or_else(|| Error::NotFound {
                provider: NAME,
                detail: format!("zone {name}: no such zone for this token"),
            })
    }

    async fn list_records(
        &self,
        zone: &Zone,
        name: Option<&DnsName>,
    ) -> Result<Vec<ProviderRecord>, Error> {
        let query: Vec<(&str, &str)> = name.map(|n| ("name", n.as_str())).into_iter().collect();
        let records: Vec<RecordEntry> = self
            .pages(
                &["zones", &zone.id, "dns_records"],
                &query,
                RECORDS_PER_PAGE,
            )
            .await?;
        Ok(records
            .into_iter()
            .filter_map(RecordEntry::record)
            .collect())
    }

    async fn create_record(&self, zone: &Zone, spec: &RecordSpec) -> Result<RecordId, Error> {
        let url = self.api.url(&["zones", &zone.id, "dns_records"]);
        self.write(Method::POST, url, spec).await
    }

    async fn update_record(
        &self,
        zone: &Zone,
        id: &RecordId,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error> {
        let url = self
            .api
            .url(&["zones", &zone.id, "dns_records", id.as_str()]);
        self.write(Method::PUT, url, spec).await
    }

    async fn delete_record(&self, zone: &Zone, id: &RecordId) -> Result<(), Error> {
        let url = self
            .api
            .url(&["zones", &zone.id, "dns_records", id.as_str()]);
        let _: Envelope<Value> = self.call(Method::DELETE, url, None).await?;
        Ok(())
    }
}

/// The JSON body of a create or update.
fn body(spec: &RecordSpec) -> Value {
    let (kind, content) = match &spec.data {
        // Cloudflare stores TXT content with its quotes.
        RecordData::Txt(text) => (RecordType::Txt, format!("\"{text}\"")),
        other => (other.record_type(), other.value()),
    };
    let mut body = json!({
        "type": kind.as_str(),
        "name": spec.name.as_str(),
        "content": content,
        "ttl": spec.ttl,
        "comment": OWNER_COMMENT,
    });
    // Only A, AAAA and CNAME records can be proxied; Kokoa's edges must be reached directly.
    if kind != RecordType::Txt {
        body["proxied"] = Value::Bool(false);
    }
    body
}

#[derive(Deserialize)]
struct Envelope<T> {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    result: Option<T>,
    result_info: Option<ResultInfo>,
}

#[derive(Deserialize)]
struct ApiMessage {
    code: u64,
    message: String,
}

#[derive(Deserialize)]
struct ResultInfo {
    total_pages: u32,
}

#[derive(Deserialize)]
struct ZoneEntry {
    id: String,
    name: String,
}

impl ZoneEntry {
    fn zone(self) -> Option<Zone> {
        Some(Zone {
            name: Hostname::parse(&self.name).ok()?,
            id: self.id,
        })
    }
}

#[derive(Deserialize)]
struct RecordEntry {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    content: String,
    ttl: u32,
}

impl RecordEntry {
    /// The record, when its name and type fit the model (MX, `_dmarc` and such do not).
    fn record(self) -> Option<ProviderRecord> {
        let kind = [
            RecordType::A,
            RecordType::Aaaa,
            RecordType::Cname,
            RecordType::Txt,
        ]
        .into_iter()
        .find(|t| t.as_str() == self.kind)?;
        let content = match kind {
            RecordType::Txt => {
                let quoted = self
                    .content
                    .strip_prefix('"')
                    .and_then(|c| c.strip_suffix('"'));
                quoted.unwrap_or(&self.content)
            }
            _ => &self.content,
        };
        Some(ProviderRecord {
            spec: RecordSpec {
                name: DnsName::parse(&self.name).ok()?,
                data: RecordData::parse(kind, content).ok()?,
                ttl: self.ttl,
            },
            id: RecordId::new(self.id),
        })
    }
}

fn messages(errors: &[ApiMessage]) -> String {
    if errors.is_empty() {
        return "no error message".into();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{} [{}]", e.message, e.code))
        .collect();
    parts.join("; ")
}

/// Reads the error envelope `{"success":false,"errors":[{"code":..,"message":..}]}`.
fn describe(body: &[u8]) -> Described {
    match serde_json::from_slice::<Envelope<Value>>(body) {
        Ok(envelope) => Described {
            message: messages(&envelope.errors),
            conflict: envelope
                .errors
                .iter()
                .any(|e| CONFLICT_CODES.contains(&e.code)),
            rate_limited: false,
        },
        Err(_) => Described {
            message: snippet(body),
            conflict: false,
            rate_limited: false,
        },
    }
}
