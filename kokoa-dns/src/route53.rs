//! Amazon Route 53 through its REST API (version 2013-04-01), every request signed with AWS
//! Signature Version 4 (region `us-east-1`, service `route53`).
//!
//! | call | request |
//! |---|---|
//! | ListHostedZones | `GET /2013-04-01/hostedzone?maxitems=100`, then `&marker=` the `NextMarker` |
//! | ListResourceRecordSets | `GET /2013-04-01/hostedzone/{id}/rrset?maxitems=300`, then `&name=&type=` the `NextRecordName`/`NextRecordType` |
//! | ChangeResourceRecordSets | `POST /2013-04-01/hostedzone/{id}/rrset/` with a `ChangeBatch` of one `UPSERT` or `DELETE` |
//! | GetChange | `GET /2013-04-01/change/{id}`, polled until `INSYNC` |
//!
//! Route 53 stores record *sets* (name + type, one TTL, many values), as PowerDNS does, and
//! records map onto them the same way: a record is one value of a set and its id is
//! `name|type|value` (`app.hoge.com|A|203.0.113.10`). Creating a record reads its set and
//! `UPSERT`s it with the value added; deleting `UPSERT`s it without the value, or `DELETE`s
//! the set with its last value. The TTL belongs to the set. Route 53 has no conditional
//! writes, so two writers changing one set at the same moment can lose a value: keep one
//! writer per zone (SPEC §8.1's lock per host name for several replicas).
//!
//! Left alone, never listed nor changed: alias records and sets with a routing policy
//! (`SetIdentifier`), which are not plain values (a change to one is refused as a
//! [`Error::Conflict`]), and private hosted zones, which public clients never see.
//!
//! After each change the provider polls `GetChange` until Route 53 reports the change on
//! all its name servers ([`ChangeWait`]: every 5 s, at most 2 min). Every request waits for
//! a token of a [`RateLimiter`] holding Route 53's limit of five requests per second per
//! account; share one limiter between providers of the same account.

use std::time::Duration;

use async_trait::async_trait;
use kokoa_core::{
    DnsName, RecordData, RecordType, Timestamp,
    sigv4::{self, Credentials, Payload},
};
use quick_xml::escape::partial_escape as escape;
use reqwest::{
    Client, Method, StatusCode, Url,
    header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER},
};
use serde::{Deserialize, de::DeserializeOwned};
use tokio::time::{Instant, sleep};

use crate::{
    DnsProvider, Error, ProviderRecord, RateLimit, RateLimiter, RecordId, RecordSpec, Zone,
    http::{Failure, default_client, snippet},
    rrset::{self, record_id, record_type},
};

const NAME: &str = "route53";
/// The real API.
pub const API_URL: &str = "https://route53.amazonaws.com";
/// Route 53 is a global service, signed for this region.
const REGION: &str = "us-east-1";
const SERVICE: &str = "route53";
const VERSION: &str = "2013-04-01";
const XMLNS: &str = "https://route53.amazonaws.com/doc/2013-04-01/";
/// The API's maximum for ListHostedZones.
const ZONES_PER_PAGE: &str = "100";
/// The API's maximum for ListResourceRecordSets.
const SETS_PER_PAGE: &str = "300";
/// Bound on pages read in one listing: 300 000 record sets at 300 a page.
const MAX_PAGES: u32 = 1000;
/// The shortest wait between two GetChange calls, whatever [`ChangeWait`] says.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Codes of refused credentials (HTTP 403 mostly).
const AUTH_CODES: [&str; 7] = [
    "SignatureDoesNotMatch",
    "AccessDenied",
    "InvalidClientTokenId",
    "ExpiredToken",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "UnrecognizedClientException",
];
/// Codes that mean "slow down"; Route 53 sends them with HTTP 400.
const THROTTLE_CODES: [&str; 3] = [
    "Throttling",
    "ThrottlingException",
    "PriorRequestNotComplete",
];

/// How long to wait for a change to reach all of Route 53's name servers.
///
/// `GetChange` is asked every `poll_interval` (10 ms at least) until it answers `INSYNC`,
/// for at most `max_wait`; a change still `PENDING` then is a [`Error::Transient`] (it was accepted and
/// will still apply). A `max_wait` of zero returns as soon as Route 53 accepted the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeWait {
    /// Time between two `GetChange` calls.
    pub poll_interval: Duration,
    /// Longest wait in all.
    pub max_wait: Duration,
}

impl Default for ChangeWait {
    /// Every 5 s, at most 2 min: changes usually reach `INSYNC` within a minute.
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            max_wait: Duration::from_secs(120),
        }
    }
}

/// Amazon Route 53 with an access key.
///
/// ```
/// use kokoa_core::sigv4::Credentials;
/// use kokoa_dns::{DnsProvider, RateLimit, route53::Route53Provider};
///
/// let credentials = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
/// let route53 = Route53Provider::new(credentials)?;
/// assert_eq!(route53.name(), "route53");
/// assert_eq!(route53.rate_limit(), Some(RateLimit::ROUTE53));
/// assert!(!format!("{route53:?}").contains("EXAMPLEKEY"));
/// # Ok::<(), kokoa_dns::Error>(())
/// ```
// Debug is safe to derive: `Credentials` shows the key id only.
#[derive(Debug)]
pub struct Route53Provider {
    client: Client,
    base: Url,
    credentials: Credentials,
    limiter: Option<RateLimiter>,
    wait: ChangeWait,
    clock: fn() -> Timestamp,
}

impl Route53Provider {
    /// The real API with `credentials` (the policy needs `route53:ListHostedZones`,
    /// `ListResourceRecordSets`, `ChangeResourceRecordSets` and `GetChange`), through a
    /// client with a 30 s timeout.
    pub fn new(credentials: Credentials) -> Result<Self, Error> {
        Self::with_client(default_client(NAME)?, API_URL, credentials)
    }

    /// The API at `base_url` (the root, without `/2013-04-01`) through `client`.
    pub fn with_client(
        client: Client,
        base_url: &str,
        credentials: Credentials,
    ) -> Result<Self, Error> {
        let base = Url::parse(base_url.trim_end_matches('/'))
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                failure(format!(
                    "invalid API base URL {base_url:?}: expected an http(s) URL"
                ))
            })?;
        Ok(Self {
            client,
            base,
            credentials,
            limiter: Some(RateLimiter::new(RateLimit::ROUTE53)),
            wait: ChangeWait::default(),
            clock: Timestamp::now,
        })
    }

    /// Waits for changes with `wait` instead of the default.
    pub fn with_change_wait(mut self, wait: ChangeWait) -> Self {
        self.wait = wait;
        self
    }

    /// Paces every request with `limiter` instead of one of its own (share one between
    /// providers of the same AWS account), or not at all with `None`.
    pub fn with_rate_limiter(mut self, limiter: Option<RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Reads the time to sign requests with from `clock` instead of the system clock (for
    /// tests that check signatures).
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Self {
        self.clock = clock;
        self
    }

    /// Sends a signed request to `/2013-04-01/{segments}` and returns the body of a 2xx
    /// answer; any other answer becomes the matching [`Error`].
    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<Vec<u8>, Error> {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push(VERSION).extend(segments);
        }
        let query_text = sigv4::canonical_query(query);
        url.set_query(
            Some(&query_text)
                .filter(|q| !q.is_empty())
                .map(String::as_str),
        );
        let call = match url.query() {
            Some(query) => format!("{method} {}?{query}", url.path()),
            None => format!("{method} {}", url.path()),
        };
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let body = body.map(String::into_bytes);
        let xml = [("content-type", "application/xml")];
        // Waiting for a token comes before signing: the signature holds the time.
        if let Some(limiter) = &self.limiter {
            limiter.acquire().await;
        }
        let signed = sigv4::sign(
            &self.credentials,
            REGION,
            SERVICE,
            (self.clock)(),
            &sigv4::Request {
                method: method.as_str(),
                host: &host,
                path: url.path(),
                query,
                headers: if body.is_some() { &xml } else { &[] },
                payload: Payload::Bytes(body.as_deref().unwrap_or_default()),
                ..sigv4::Request::default()
            },
        );
        let mut request = self.client.request(method, url);
        for (name, value) in signed.iter() {
            let mut value = HeaderValue::from_str(value).map_err(|_| Error::Auth {
                provider: NAME,
                // The value may hold the session token: say what is wrong, not what it is.
                detail: "the access key id or session token holds characters an HTTP header cannot carry".into(),
            })?;
            value.set_sensitive(true);
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, xml[0].1).body(body);
        }
        let transport = |e: reqwest::Error| {
            let e = e.without_url();
            if e.is_builder() {
                failure(format!("{call}: {e}"))
            } else {
                Error::Transient {
                    provider: NAME,
                    detail: format!("{call}: {e}"),
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            Ok(bytes.to_vec())
        } else {
            Err(answer_error(&call, status, retry_after, &bytes))
        }
    }

    /// [`send`](Self::send), then reads the XML answer.
    async fn xml<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<String>,
    ) -> Result<T, Error> {
        let call = format!("{method} /{VERSION}/{}", segments.join("/"));
        let bytes = self.send(method, segments, query, body).await?;
        let text = String::from_utf8_lossy(&bytes);
        quick_xml::de::from_str(&text).map_err(|e| {
            failure(format!(
                "{call}: unexpected answer: {e}: {}",
                snippet(&bytes)
            ))
        })
    }

    /// Every record set of the zone, or from `name` on while the names are `name`.
    async fn sets(&self, zone: &Zone, name: Option<&DnsName>) -> Result<Vec<RrSet>, Error> {
        let start = name.map(query_name);
        let mut next: Option<(String, String, Option<String>)> = None;
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let mut query = vec![("maxitems", SETS_PER_PAGE)];
            match &next {
                Some((name, kind, identifier)) => {
                    query.push(("name", name));
                    query.push(("type", kind));
                    if let Some(identifier) = identifier {
                        query.push(("identifier", identifier));
                    }
                }
                None => query.extend(start.as_deref().map(|name| ("name", name))),
            }
            let page: ListSets = self
                .xml(
                    Method::GET,
                    &["hostedzone", &zone.id, "rrset"],
                    &query,
                    None,
                )
                .await?;
            all.extend(page.resource_record_sets.sets);
            next = match (
                page.is_truncated,
                page.next_record_name,
                page.next_record_type,
            ) {
                (true, Some(name), Some(kind)) => Some((name, kind, page.next_record_identifier)),
                _ => return Ok(all),
            };
            // Listing from `name` goes on to the names after it: stop once past it.
            if let (Some(start), Some((next_name, _, _))) = (&start, &next)
                && next_name != start
            {
                return Ok(all);
            }
        }
        Err(failure(format!(
            "GET /{VERSION}/hostedzone/{}/rrset: more than {MAX_PAGES} pages; refusing to read further",
            zone.id
        )))
    }

    /// The plain set `name`/`kind`, read right before changing it; `None` if there is none.
    async fn set(
        &self,
        zone: &Zone,
        name: &DnsName,
        kind: RecordType,
    ) -> Result<Option<RrSet>, Error> {
        let query_name = query_name(name);
        let query = [
            ("maxitems", "1"),
            ("name", query_name.as_str()),
            ("type", kind.as_str()),
        ];
        let page: ListSets = self
            .xml(
                Method::GET,
                &["hostedzone", &zone.id, "rrset"],
                &query,
                None,
            )
            .await?;
        let Some(set) = page
            .resource_record_sets
            .sets
            .into_iter()
            .find(|set| set.kind == kind.as_str() && set.dns_name().as_ref() == Some(name))
        else {
            return Ok(None);
        };
        if !set.is_plain() {
            return Err(Error::Conflict {
                provider: NAME,
                detail: format!(
                    "{name} {kind} is an alias record or has a routing policy; Kokoa manages only plain record sets"
                ),
            });
        }
        Ok(Some(set))
    }

    /// Sends one change and waits for it to be in sync.
    async fn change(&self, zone: &Zone, action: &str, set: &RrSet) -> Result<(), Error> {
        let answer: ChangeAnswer = self
            .xml(
                Method::POST,
                &["hostedzone", &zone.id, "rrset", ""],
                &[],
                Some(change_batch(action, set)),
            )
            .await?;
        self.wait_for(answer.change_info).await
    }

    /// Polls GetChange until `INSYNC`: at most every [`MIN_POLL_INTERVAL`], so the number
    /// of calls is bounded as well as the time.
    async fn wait_for(&self, mut info: ChangeInfo) -> Result<(), Error> {
        let id = info.id.trim_start_matches("/change/").to_owned();
        let started = Instant::now();
        let interval = self.wait.poll_interval.max(MIN_POLL_INTERVAL);
        while info.status != "INSYNC" {
            let left = self.wait.max_wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            sleep(interval.min(left)).await;
            let answer: ChangeAnswer = self.xml(Method::GET, &["change", &id], &[], None).await?;
            info = answer.change_info;
        }
        if info.status == "INSYNC" || self.wait.max_wait.is_zero() {
            return Ok(());
        }
        Err(Error::Transient {
            provider: NAME,
            detail: format!(
                "change {id} is still {} after {} s; Route 53 accepted it and will apply it",
                info.status,
                self.wait.max_wait.as_secs()
            ),
        })
    }

    /// Puts `spec`'s value into its set (replacing `old`, when given) with `spec`'s TTL.
    async fn put(
        &self,
        zone: &Zone,
        old: Option<&RecordData>,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error> {
        let kind = spec.data.record_type();
        let existing = self.set(zone, &spec.name, kind).await?;
        let mut set = existing
            .clone()
            .unwrap_or_else(|| RrSet::new(&spec.name, kind));
        if let Some(old) = old
            && !set.remove(old)
        {
            return Err(rrset::not_found(NAME, &spec.name, old));
        }
        set.remove(&spec.data);
        set.resource_records.records.push(Value {
            value: value(&spec.data),
        });
        set.ttl = Some(spec.ttl);
        // Already so (a retried create, say): nothing to send.
        let unchanged = existing
            .as_ref()
            .is_some_and(|e| e.ttl == set.ttl && e.has_same_values(&set));
        if !unchanged {
            self.change(zone, "UPSERT", &set).await?;
        }
        Ok(record_id(&spec.name, &spec.data))
    }
}

#[async_trait]
impl DnsProvider for Route53Provider {
    fn name(&self) -> &'static str {
        NAME
    }

    fn rate_limit(&self) -> Option<RateLimit> {
        Some(RateLimit::ROUTE53)
    }

    async fn list_zones(&self) -> Result<Vec<Zone>, Error> {
        let mut zones = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("maxitems", ZONES_PER_PAGE)];
            query.extend(marker.as_deref().map(|m| ("marker", m)));
            let page: ListZones = self.xml(Method::GET, &["hostedzone"], &query, None).await?;
            zones.extend(
                page.hosted_zones
                    .zones
                    .into_iter()
                    .filter_map(HostedZone::zone),
            );
            marker = match (page.is_truncated, page.next_marker) {
                (true, Some(next)) => Some(next),
                _ => return Ok(zones),
            };
        }
        Err(failure(format!(
            "GET /{VERSION}/hostedzone: more than {MAX_PAGES} pages; refusing to read further"
        )))
    }

    async fn list_records(
        &self,
        zone: &Zone,
        name: Option<&DnsName>,
    ) -> Result<Vec<ProviderRecord>, Error> {
        let mut records = Vec::new();
        for set in self.sets(zone, name).await? {
            // Names and types outside the model (SOA, NS, MX...), aliases and routed sets
            // are left out.
            let (Some(set_name), Some(kind), Some(ttl)) =
                (set.dns_name(), record_type(&set.kind), set.ttl)
            else {
                continue;
            };
            if !set.is_plain() || name.is_some_and(|n| n != &set_name) {
                continue;
            }
            for data in set
                .resource_records
                .records
                .iter()
                .filter_map(|v| v.data(kind))
            {
                records.push(ProviderRecord {
                    id: record_id(&set_name, &data),
                    spec: RecordSpec {
                        name: set_name.clone(),
                        data,
                        ttl,
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
        let (name, old) = rrset::parse_id(NAME, id)?;
        if name == spec.name && old.record_type() == spec.data.record_type() {
            return self.put(zone, Some(&old), spec).await;
        }
        let new = self.create_record(zone, spec).await?;
        self.delete_record(zone, id).await?;
        Ok(new)
    }

    async fn delete_record(&self, zone: &Zone, id: &RecordId) -> Result<(), Error> {
        let (name, data) = rrset::parse_id(NAME, id)?;
        let not_found = || rrset::not_found(NAME, &name, &data);
        let set = self
            .set(zone, &name, data.record_type())
            .await?
            .ok_or_else(not_found)?;
        let mut rest = set.clone();
        if !rest.remove(&data) {
            return Err(not_found());
        }
        if rest.resource_records.records.is_empty() {
            // DELETE must repeat the set exactly as it is.
            self.change(zone, "DELETE", &set).await
        } else {
            self.change(zone, "UPSERT", &rest).await
        }
    }
}

/// `name` as Route 53 lists it: absolute, with the wildcard written `\052`.
fn query_name(name: &DnsName) -> String {
    format!("{}.", name.as_str().replace('*', "\\052"))
}

/// The value as Route 53 takes it: CNAME targets absolute, TXT quoted.
fn value(data: &RecordData) -> String {
    match data {
        RecordData::Cname(target) => format!("{target}."),
        // TXT values never hold `"` or `\` (kokoa-core checks) and fit one string.
        RecordData::Txt(text) => format!("\"{text}\""),
        other => other.value(),
    }
}

/// The XML body of ChangeResourceRecordSets with one change.
fn change_batch(action: &str, set: &RrSet) -> String {
    let mut records = String::new();
    for record in &set.resource_records.records {
        records.push_str(&format!(
            "<ResourceRecord><Value>{}</Value></ResourceRecord>",
            escape(record.value.as_str())
        ));
    }
    let ttl = set
        .ttl
        .map(|ttl| format!("<TTL>{ttl}</TTL>"))
        .unwrap_or_default();
    let health_check = set
        .health_check_id
        .as_deref()
        .map(|id| format!("<HealthCheckId>{}</HealthCheckId>", escape(id)))
        .unwrap_or_default();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <ChangeResourceRecordSetsRequest xmlns=\"{XMLNS}\"><ChangeBatch>\
         <Comment>managed-by: kokoa</Comment><Changes><Change><Action>{action}</Action>\
         <ResourceRecordSet><Name>{}</Name><Type>{}</Type>{ttl}\
         <ResourceRecords>{records}</ResourceRecords>{health_check}</ResourceRecordSet>\
         </Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>",
        escape(set.name.as_str()),
        escape(set.kind.as_str()),
    )
}

fn failure(message: String) -> Error {
    Error::Other {
        provider: NAME,
        source: Box::new(Failure(message)),
    }
}

/// The [`Error`] for a non-2xx answer, from its status and the error code in its body.
fn answer_error(
    call: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Error {
    let (code, message) = describe(body);
    let detail = format!(
        "{call}: HTTP {}: {}{message}",
        status.as_u16(),
        code.as_deref()
            .map(|c| format!("{c}: "))
            .unwrap_or_default()
    );
    let code = code.as_deref().unwrap_or_default();
    if THROTTLE_CODES.contains(&code) || status == StatusCode::TOO_MANY_REQUESTS {
        Error::RateLimited {
            provider: NAME,
            retry_after,
        }
    } else if AUTH_CODES.contains(&code) || matches!(status.as_u16(), 401 | 403) {
        Error::Auth {
            provider: NAME,
            detail,
        }
    } else if matches!(code, "NoSuchHostedZone" | "NoSuchChange") || status == StatusCode::NOT_FOUND
    {
        Error::NotFound {
            provider: NAME,
            detail,
        }
    } else if code == "InvalidChangeBatch" {
        failure(format!(
            "{detail} (Route 53 refused the change as it does not fit the zone's records)"
        ))
    } else if status.is_server_error() {
        Error::Transient {
            provider: NAME,
            detail,
        }
    } else {
        failure(detail)
    }
}

/// The error code and message of an error body: `<ErrorResponse><Error><Code>…` for most
/// errors, `<InvalidChangeBatch><Messages><Message>…` for a refused change.
fn describe(body: &[u8]) -> (Option<String>, String) {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ErrorResponse {
        error: ErrorBody,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct ErrorBody {
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct InvalidChangeBatch {
        messages: Messages,
    }
    #[derive(Deserialize)]
    struct Messages {
        #[serde(rename = "Message", default)]
        messages: Vec<String>,
    }
    let text = String::from_utf8_lossy(body);
    if let Ok(answer) = quick_xml::de::from_str::<ErrorResponse>(&text) {
        return (Some(answer.error.code), answer.error.message);
    }
    if let Ok(answer) = quick_xml::de::from_str::<InvalidChangeBatch>(&text) {
        return (
            Some("InvalidChangeBatch".into()),
            answer.messages.messages.join("; "),
        );
    }
    (None, snippet(body))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListZones {
    #[serde(default)]
    hosted_zones: HostedZones,
    is_truncated: bool,
    next_marker: Option<String>,
}

#[derive(Default, Deserialize)]
struct HostedZones {
    #[serde(rename = "HostedZone", default)]
    zones: Vec<HostedZone>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HostedZone {
    id: String,
    name: String,
    #[serde(default)]
    config: ZoneConfig,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ZoneConfig {
    #[serde(default)]
    private_zone: bool,
}

impl HostedZone {
    /// The zone, unless it is private or its name is not a host name.
    fn zone(self) -> Option<Zone> {
        if self.config.private_zone {
            return None;
        }
        Some(Zone {
            name: dns_name(&self.name)?.to_hostname()?,
            id: self.id.trim_start_matches("/hostedzone/").to_owned(),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListSets {
    #[serde(default)]
    resource_record_sets: Sets,
    is_truncated: bool,
    next_record_name: Option<String>,
    next_record_type: Option<String>,
    next_record_identifier: Option<String>,
}

#[derive(Default, Deserialize)]
struct Sets {
    #[serde(rename = "ResourceRecordSet", default)]
    sets: Vec<RrSet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RrSet {
    /// As Route 53 writes it: absolute, `*` as `\052`.
    name: String,
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "TTL")]
    ttl: Option<u32>,
    #[serde(default)]
    resource_records: Records,
    set_identifier: Option<String>,
    alias_target: Option<serde::de::IgnoredAny>,
    health_check_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct Records {
    #[serde(rename = "ResourceRecord", default)]
    records: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
struct Value {
    #[serde(rename = "Value")]
    value: String,
}

impl RrSet {
    fn new(name: &DnsName, kind: RecordType) -> Self {
        Self {
            name: format!("{name}."),
            kind: kind.as_str().to_owned(),
            ttl: None,
            resource_records: Records::default(),
            set_identifier: None,
            alias_target: None,
            health_check_id: None,
        }
    }

    fn dns_name(&self) -> Option<DnsName> {
        dns_name(&self.name)
    }

    /// Plain values: not an alias, no routing policy.
    fn is_plain(&self) -> bool {
        self.alias_target.is_none() && self.set_identifier.is_none()
    }

    /// Removes the value `data`; whether it was there.
    fn remove(&mut self, data: &RecordData) -> bool {
        let Some(kind) = record_type(&self.kind) else {
            return false;
        };
        let records = &mut self.resource_records.records;
        let before = records.len();
        records.retain(|v| v.data(kind).as_ref() != Some(data));
        records.len() != before
    }

    fn has_same_values(&self, other: &Self) -> bool {
        self.sorted_values() == other.sorted_values()
    }

    fn sorted_values(&self) -> Vec<&str> {
        let mut values: Vec<&str> = self
            .resource_records
            .records
            .iter()
            .map(|v| v.value.as_str())
            .collect();
        values.sort_unstable();
        values
    }
}

impl Value {
    /// The value, when the model can hold it (a TXT of several strings it cannot).
    fn data(&self, kind: RecordType) -> Option<RecordData> {
        let text = match kind {
            RecordType::Txt => {
                let inner = self.value.strip_prefix('"')?.strip_suffix('"')?;
                if inner.contains('"') || inner.contains('\\') {
                    return None;
                }
                inner
            }
            RecordType::Cname => self.value.strip_suffix('.').unwrap_or(&self.value),
            _ => self.value.as_str(),
        };
        RecordData::parse(kind, text).ok()
    }
}

/// A name as Route 53 writes it (`\052.hoge.com.`) as a DNS name, if it is one.
fn dns_name(name: &str) -> Option<DnsName> {
    let name = name.strip_suffix('.').unwrap_or(name).replace("\\052", "*");
    if name.contains('\\') {
        return None;
    }
    DnsName::parse(&name).ok()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeAnswer {
    change_info: ChangeInfo,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ChangeInfo {
    id: String,
    status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_read_as_route53_writes_them() -> Result<(), Box<dyn std::error::Error>>
    {
        assert_eq!(
            dns_name("\\052.hoge.com."),
            Some(DnsName::parse("*.hoge.com")?)
        );
        assert_eq!(dns_name("a\\100b.hoge.com."), None);
        assert_eq!(
            dns_name("_acme-challenge.hoge.com."),
            Some(DnsName::parse("_acme-challenge.hoge.com")?)
        );
        assert_eq!(
            query_name(&DnsName::parse("*.hoge.com")?),
            "\\052.hoge.com."
        );
        let txt = Value {
            value: "\"hello world\"".into(),
        };
        assert_eq!(
            txt.data(RecordType::Txt),
            Some(RecordData::Txt(
                kokoa_core::TxtText::new("hello world").unwrap()
            ))
        );
        let split = Value {
            value: "\"a\" \"b\"".into(),
        };
        assert_eq!(split.data(RecordType::Txt), None);
        let cname = Value {
            value: "edge.hoge.com.".into(),
        };
        let target = RecordData::parse(RecordType::Cname, "edge.hoge.com")?;
        assert_eq!(cname.data(RecordType::Cname), Some(target.clone()));
        assert_eq!(value(&target), "edge.hoge.com.");
        Ok(())
    }

    #[test]
    fn error_bodies_of_both_shapes() {
        let (code, message) = describe(
            br#"<?xml version="1.0"?>
<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>x</RequestId></ErrorResponse>"#,
        );
        assert_eq!(
            (code.as_deref(), message.as_str()),
            (Some("Throttling"), "Rate exceeded")
        );
        let (code, message) = describe(
            br#"<InvalidChangeBatch xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><Messages><Message>one</Message><Message>two</Message></Messages></InvalidChangeBatch>"#,
        );
        assert_eq!(
            (code.as_deref(), message.as_str()),
            (Some("InvalidChangeBatch"), "one; two")
        );
        assert_eq!(
            describe(b"<html>busy</html>"),
            (None, "<html>busy</html>".into())
        );
    }

    #[test]
    fn a_change_batch_escapes_its_values() {
        let mut set = RrSet::new(&DnsName::parse("txt.hoge.com").unwrap(), RecordType::Txt);
        set.ttl = Some(60);
        set.resource_records.records.push(Value {
            value: "\"a<b&c\"".into(),
        });
        let xml = change_batch("UPSERT", &set);
        assert!(
            xml.contains("<ResourceRecord><Value>\"a&lt;b&amp;c\"</Value></ResourceRecord>"),
            "{xml}"
        );
    }
}
