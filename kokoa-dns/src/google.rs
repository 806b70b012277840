//! Google Cloud DNS through API v1 (`/dns/v1/projects/{project}/...`), authenticated as a
//! service account.
//!
//! The account's JSON key signs a JWT (RS256) that the key's token endpoint exchanges for
//! an access token with the [`SCOPE`] to change zones; the token is kept until a minute
//! before it expires, and dropped when the API refuses it.
//!
//! Cloud DNS stores record sets (name + type, one TTL, many values), not records. As for
//! PowerDNS, a record is one value of a set and its id is `name|type|value`, e.g.
//! `app.hoge.com|A|203.0.113.10`. Creating, updating and deleting a record read its set,
//! then send one change that deletes the set as read and adds it back with the value
//! added, replaced or removed: Cloud DNS applies a change entirely or not at all, and
//! refuses it (`conditionNotMet`, a [conflict](Error::Conflict)) if the set changed in the
//! meantime. The provider waits until the change is `done`. The TTL belongs to the set.
//! A zone's [`Zone::id`] is its managed zone name, e.g. `hoge-com`. Sets with a routing
//! policy (geo, weighted) are not listed and not changed.
//!
//! ```no_run
//! use kokoa_dns::{DnsProvider, google::{GoogleCloudDns, ServiceAccountKey}};
//! // The key file of a service account with the role DNS Administrator.
//! let key = ServiceAccountKey::from_json(&std::fs::read_to_string("kokoa-dns-key.json")?)?;
//! let google = GoogleCloudDns::new(key)?;
//! assert_eq!(google.name(), "google");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use async_trait::async_trait;
use kokoa_core::{DnsName, Hostname, RecordData, RecordType};
use reqwest::{
    Client, Method, Url,
    header::{AUTHORIZATION, HeaderValue},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use tokio::time::{Instant, sleep};

use crate::{
    DnsProvider, Error, ProviderRecord, RecordId, RecordSpec, Zone,
    http::{Api, Described, Failure, default_client, snippet},
    rrset::{parse_id, record_id, record_type},
};

mod auth;

use auth::Tokens;
pub use auth::{SCOPE, ServiceAccountKey};

const NAME: &str = "google";
/// The real API.
pub const API_URL: &str = "https://dns.googleapis.com/dns/v1";
/// How long to wait for a change to be `done`, unless set otherwise.
pub const DEFAULT_CHANGE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on pages read in one listing.
const MAX_PAGES: u32 = 1000;
/// First wait before asking whether a change is done; it doubles up to [`LONGEST_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(100);
const LONGEST_POLL: Duration = Duration::from_secs(2);
/// Bound on the times one change is asked about.
const MAX_POLLS: u32 = 200;

/// Google Cloud DNS.
// Debug shows the endpoints, project and account: never the key or a token.
#[derive(Debug)]
pub struct GoogleCloudDns {
    api: Api,
    tokens: Tokens,
    project: String,
    change_timeout: Duration,
}

impl GoogleCloudDns {
    /// The real API, as the account of `key`, for zones of the key's project, through a
    /// client with a 30 s timeout.
    pub fn new(key: ServiceAccountKey) -> Result<Self, Error> {
        Self::with_client(default_client(NAME)?, API_URL, key)
    }

    /// The API at `base_url` (up to and including `/dns/v1`) through `client`. Tokens are
    /// asked for at the key's `token_uri`.
    pub fn with_client(
        client: Client,
        base_url: &str,
        key: ServiceAccountKey,
    ) -> Result<Self, Error> {
        let api = Api::without_credential(NAME, client.clone(), base_url, describe)?;
        let endpoint = Api::without_credential(NAME, client, key.token_uri(), describe_oauth)?;
        Ok(Self {
            api,
            project: key.project_id().to_owned(),
            tokens: Tokens::new(key, endpoint),
            change_timeout: DEFAULT_CHANGE_TIMEOUT,
        })
    }

    /// Manages the zones of `project` instead of the key's own project.
    pub fn with_project(mut self, project: &str) -> Self {
        self.project = project.to_owned();
        self
    }

    /// Waits up to `timeout` for each change to be `done`.
    pub fn with_change_timeout(mut self, timeout: Duration) -> Self {
        self.change_timeout = timeout;
        self
    }

    fn url(&self, below: &[&str]) -> Url {
        let mut segments = vec!["projects", self.project.as_str(), "managedZones"];
        segments.extend_from_slice(below);
        self.api.url(&segments)
    }

    /// Sends one request with the current token and reads the JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<T, Error> {
        let call = match url.query() {
            Some(query) => format!("{method} {}?{query}", url.path()),
            None => format!("{method} {}", url.path()),
        };
        let bearer = self.tokens.bearer().await?;
        let mut value = HeaderValue::from_str(&bearer).map_err(|_| Error::Auth {
            provider: NAME,
            detail: "the access token holds characters an HTTP header cannot carry".into(),
        })?;
        value.set_sensitive(true);
        let mut request = self.api.request(method, url).header(AUTHORIZATION, value);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer = self.api.json(&call, request).await;
        if let Err(Error::Auth { .. }) = answer {
            // A revoked or expired token: the next call gets a new one.
            self.tokens.forget().await;
        }
        answer
    }

    /// Every page of a listing below the project's managed zones.
    async fn pages<T: DeserializeOwned>(
        &self,
        below: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, Error> {
        #[derive(Deserialize)]
        struct Page<T> {
            #[serde(default = "Vec::new", alias = "managedZones", alias = "rrsets")]
            items: Vec<T>,
            #[serde(rename = "nextPageToken")]
            next: Option<String>,
        }
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = self.url(below);
            let mut pairs: Vec<(&str, &str)> = query.to_vec();
            if let Some(token) = &token {
                pairs.push(("pageToken", token));
            }
            if !pairs.is_empty() {
                url.query_pairs_mut().extend_pairs(pairs);
            }
            let page: Page<T> = self.call(Method::GET, url, None).await?;
            all.extend(page.items);
            match page.next.filter(|next| !next.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(all),
            }
        }
        Err(Error::Other {
            provider: NAME,
            source: Box::new(Failure(format!(
                "listing {}: more than {MAX_PAGES} pages; refusing to read further",
                below.join("/")
            ))),
        })
    }

    async fn zones(&self, query: &[(&str, &str)]) -> Result<Vec<Zone>, Error> {
        let zones: Vec<ZoneEntry> = self.pages(&[], query).await?;
        // Zones whose names are not host names cannot hold managed records.
        Ok(zones
            .into_iter()
            .filter_map(|z| {
                Some(Zone {
                    name: Hostname::parse(&z.dns_name).ok()?,
                    id: z.name,
                })
            })
            .collect())
    }

    /// The set `name`/`kind` of the zone, if it exists.
    async fn rrset(
        &self,
        zone: &Zone,
        name: &DnsName,
        kind: RecordType,
    ) -> Result<Option<RrSet>, Error> {
        let fqdn = fqdn(name);
        let query = [("name", fqdn.as_str()), ("type", kind.as_str())];
        let sets: Vec<RrSet> = self.pages(&[&zone.id, "rrsets"], &query).await?;
        let set = sets
            .into_iter()
            .find(|set| set.name == fqdn && set.kind == kind.as_str());
        if let Some(set) = &set
            && set.rest.contains_key("routingPolicy")
        {
            return Err(Error::Conflict {
                provider: NAME,
                detail: format!(
                    "the {kind} record set of {name} has a routing policy; Kokoa changes plain record sets only"
                ),
            });
        }
        Ok(set)
    }

    /// Applies one change to the zone and waits until it is done.
    async fn change(
        &self,
        zone: &Zone,
        deletions: Vec<RrSet>,
        additions: Vec<RrSet>,
    ) -> Result<(), Error> {
        #[derive(Serialize)]
        struct NewChange {
            #[serde(skip_serializing_if = "Vec::is_empty")]
            additions: Vec<RrSet>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            deletions: Vec<RrSet>,
        }
        let body = serde_json::to_value(NewChange {
            additions,
            deletions,
        })
        .map_err(|e| Error::Other {
            provider: NAME,
            source: Box::new(e),
        })?;
        let url = self.url(&[&zone.id, "changes"]);
        let mut change: Change = self.call(Method::POST, url, Some(body)).await?;
        let started = Instant::now();
        for poll in 0..MAX_POLLS {
            if change.status == "done" {
                return Ok(());
            }
            let wait = kokoa_core::doubling(FIRST_POLL, poll, LONGEST_POLL);
            if started.elapsed() + wait > self.change_timeout {
                break;
            }
            sleep(wait).await;
            let url = self.url(&[&zone.id, "changes", &change.id]);
            change = self.call(Method::GET, url, None).await?;
        }
        Err(Error::Transient {
            provider: NAME,
            detail: format!(
                "change {} of zone {} is still {} after {:.1} s",
                change.id,
                zone.name,
                change.status,
                started.elapsed().as_secs_f64()
            ),
        })
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
        let mut values: Vec<String> = existing
            .as_ref()
            .map(|set| set.rrdatas.clone())
            .unwrap_or_default();
        if let Some(old) = old {
            let before = values.len();
            values.retain(|v| data(kind, v).as_ref() != Some(old));
            if values.len() == before {
                return Err(not_found(&spec.name, old));
            }
        }
        values.retain(|v| data(kind, v).as_ref() != Some(&spec.data));
        values.push(text(&spec.data));
        let addition = RrSet::new(&spec.name, kind, spec.ttl, values);
        self.change(zone, existing.into_iter().collect(), vec![addition])
            .await?;
        Ok(record_id(&spec.name, &spec.data))
    }
}

#[async_trait]
impl DnsProvider for GoogleCloudDns {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn list_zones(&self) -> Result<Vec<Zone>, Error> {
        self.zones(&[]).await
    }

    async fn find_zone(&self, name: &Hostname) -> Result<Zone, Error> {
        let fqdn = fqdn(&DnsName::from(name));
        self.zones(&[("dnsName", &fqdn)])
            .await?
            .into_iter()
            .find(|zone| &zone.name == name)
            .ok_or_else(|| Error::NotFound {
                provider: NAME,
                detail: format!("zone {name}: no managed zone of project {}", self.project),
            })
    }

    async fn list_records(
        &self,
        zone: &Zone,
        name: Option<&DnsName>,
    ) -> Result<Vec<ProviderRecord>, Error> {
        let fqdn = name.map(fqdn);
        let query: Vec<(&str, &str)> = fqdn.iter().map(|n| ("name", n.as_str())).collect();
        let sets: Vec<RrSet> = self.pages(&[&zone.id, "rrsets"], &query).await?;
        let mut records = Vec::new();
        for set in sets {
            // Names and types outside the model (`_acme-challenge`, SOA, MX...) are skipped.
            let (Ok(set_name), Some(kind)) = (DnsName::parse(&set.name), record_type(&set.kind))
            else {
                continue;
            };
            if name.is_some_and(|n| n != &set_name) || set.rest.contains_key("routingPolicy") {
                continue;
            }
            for value in set.rrdatas.iter().filter_map(|v| data(kind, v)) {
                records.push(ProviderRecord {
                    id: record_id(&set_name, &value),
                    spec: RecordSpec {
                        name: set_name.clone(),
                        data: value,
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
        let (name, old) = parse_id(NAME, id)?;
        if name == spec.name && old.record_type() == spec.data.record_type() {
            return self.put(zone, Some(&old), spec).await;
        }
        let new = self.create_record(zone, spec).await?;
        self.delete_record(zone, id).await?;
        Ok(new)
    }

    async fn delete_record(&self, zone: &Zone, id: &RecordId) -> Result<(), Error> {
        let (name, value) = parse_id(NAME, id)?;
        let kind = value.record_type();
        let set = self
            .rrset(zone, &name, kind)
            .await?
            .ok_or_else(|| not_found(&name, &value))?;
        let mut values = set.rrdatas.clone();
        let before = values.len();
        values.retain(|v| data(kind, v).as_ref() != Some(&value));
        if values.len() == before {
            return Err(not_found(&name, &value));
        }
        let rest = (!values.is_empty()).then(|| RrSet::new(&name, kind, set.ttl, values));
        self.change(zone, vec![set], rest.into_iter().collect())
            .await
    }
}

#[derive(Deserialize)]
struct ZoneEntry {
    name: String,
    #[serde(rename = "dnsName")]
    dns_name: String,
}

/// A resource record set as the API writes it. Fields other than these four are kept, so
/// a set is deleted exactly as it was read.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct RrSet {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    ttl: u32,
    #[serde(default)]
    rrdatas: Vec<String>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

impl RrSet {
    fn new(name: &DnsName, kind: RecordType, ttl: u32, rrdatas: Vec<String>) -> Self {
        Self {
            name: fqdn(name),
            kind: kind.as_str().to_owned(),
            ttl,
            rrdatas,
            rest: Map::new(),
        }
    }
}

#[derive(Deserialize)]
struct Change {
    id: String,
    status: String,
}

fn fqdn(name: &DnsName) -> String {
    format!("{name}.")
}

/// The value as Cloud DNS writes it: CNAME targets absolute, TXT quoted.
fn text(data: &RecordData) -> String {
    match data {
        RecordData::Cname(target) => format!("{target}."),
        RecordData::Txt(text) => format!("\"{text}\""),
        other => other.value(),
    }
}

/// A value of the set, when it is one the model can hold (a TXT of several strings is not).
fn data(kind: RecordType, value: &str) -> Option<RecordData> {
    let value = match kind {
        RecordType::Txt => match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) if !inner.contains('"') => inner,
            // Cloud DNS also takes a single unquoted word.
            None if !value.contains(['"', ' ']) => value,
            _ => return None,
        },
        _ => value,
    };
    RecordData::parse(kind, value).ok()
}

fn not_found(name: &DnsName, data: &RecordData) -> Error {
    Error::NotFound {
        provider: NAME,
        detail: format!(
            "no {} record {} at {name}",
            data.record_type(),
            data.value()
        ),
    }
}

/// Reads the API's error body:
/// `{"error": {"code": 403, "message": "...", "errors": [{"reason": "rateLimitExceeded", ...}]}}`.
fn describe(body: &[u8]) -> Described {
    #[derive(Deserialize)]
    struct Answer {
        error: Body,
    }
    #[derive(Deserialize)]
    struct Body {
        message: String,
        #[serde(default)]
        errors: Vec<Detail>,
    }
    #[derive(Deserialize)]
    struct Detail {
        reason: String,
    }
    let Ok(Answer { error }) = serde_json::from_slice::<Answer>(body) else {
        return Described {
            message: snippet(body),
            conflict: false,
            rate_limited: false,
        };
    };
    let reasons: Vec<&str> = error.errors.iter().map(|e| e.reason.as_str()).collect();
    Described {
        message: if reasons.is_empty() {
            error.message.clone()
        } else {
            format!("{} [{}]", error.message, reasons.join(", "))
        },
        conflict: reasons
            .iter()
            .any(|r| ["alreadyExists", "conditionNotMet"].contains(r)),
        rate_limited: reasons
            .iter()
            .any(|r| ["rateLimitExceeded", "userRateLimitExceeded"].contains(r)),
    }
}

/// Reads the token endpoint's error body: `{"error": "invalid_grant", "error_description": "..."}`.
fn describe_oauth(body: &[u8]) -> Described {
    #[derive(Deserialize)]
    struct Answer {
        error: String,
        error_description: Option<String>,
    }
    let message = match serde_json::from_slice::<Answer>(body) {
        Ok(Answer {
            error,
            error_description: Some(description),
        }) => format!("{error}: {description}"),
        Ok(Answer { error, .. }) => error,
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
    fn values_are_read_and_written_as_cloud_dns_holds_them()
    -> Result<(), Box<dyn std::error::Error>> {
        let txt = RecordData::Txt(kokoa_core::TxtText::new("hello world").unwrap());
        assert_eq!(text(&txt), "\"hello world\"");
        assert_eq!(data(RecordType::Txt, "\"hello world\""), Some(txt));
        assert_eq!(
            data(RecordType::Txt, "token"),
            Some(RecordData::Txt(kokoa_core::TxtText::new("token").unwrap()))
        );
        assert_eq!(data(RecordType::Txt, "\"a\" \"b\""), None);
        let cname = RecordData::parse(RecordType::Cname, "edge.hoge.com")?;
        assert_eq!(text(&cname), "edge.hoge.com.");
        assert_eq!(data(RecordType::Cname, "edge.hoge.com."), Some(cname));
        assert_eq!(data(RecordType::A, "not-an-address"), None);
        Ok(())
    }

    #[test]
    fn error_bodies_say_what_went_wrong() {
        let rate = describe(
            br#"{"error":{"code":403,"message":"Rate Limit Exceeded","errors":[{"message":"Rate Limit Exceeded","domain":"usageLimits","reason":"rateLimitExceeded"}]}}"#,
        );
        assert!(rate.rate_limited && !rate.conflict);
        assert_eq!(rate.message, "Rate Limit Exceeded [rateLimitExceeded]");
        let html = describe(b"<html>502 Bad Gateway</html>");
        assert_eq!(html.message, "<html>502 Bad Gateway</html>");
        let grant = describe_oauth(
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        );
        assert_eq!(grant.message, "invalid_grant: Invalid JWT Signature.");
    }
}
