//! The records the control plane keeps (SPEC §5, full version).
//!
//! Fields are public: every field holds an already validated value, so any combination is a
//! valid record. Credentials (password hashes, token hashes, sealed private keys) are not
//! part of these types: the store keeps them apart so a record can be logged or returned by
//! the API without leaking them.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    ApiTokenId, CertificateId, ContentHash, DnsRecordId, DnsZoneId, EdgeNodeId, Email,
    EnrollmentId, Error, HealthCheckPath, Hostname, Name, NodeCredentialId, OriginId, Port,
    RouteId, Sealed, ServiceId, SessionId, Timestamp, UserId, WgPublicKey,
};

/// Whether an origin is connected: it turns active with its first heartbeat and inactive
/// when heartbeats stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OriginStatus {
    /// Heartbeats arrive.
    Active,
    /// Never connected, or heartbeats stopped.
    Inactive,
}

impl OriginStatus {
    /// The word the API uses: `active` or `inactive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
        }
    }
}

/// A private network running services (home server, VM, cluster), reached over WireGuard.
///
/// Each origin owns one /24 ([`network_cidr`](Self::network_cidr), see
/// [`SubnetPool`](crate::SubnetPool)) in which it is `.1` and its edges `.10` and up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Its id.
    pub id: OriginId,
    /// Unique name, e.g. `home-server`.
    pub name: Name,
    /// The domain it mainly serves, if given at creation.
    pub domain: Option<Hostname>,
    /// Connection state.
    pub status: OriginStatus,
    /// When its last heartbeat arrived.
    pub last_heartbeat: Option<Timestamp>,
    /// The `metrics` object of its last heartbeat, as sent.
    pub last_metrics: Option<serde_json::Value>,
    /// Its own /24, e.g. `10.0.1.0/24`.
    pub network_cidr: Ipv4Net,
    /// Its tunnel address, `.1` of [`network_cidr`](Self::network_cidr).
    pub wireguard_ip: Ipv4Addr,
    /// Its WireGuard public key, registered by its agent, which made the key pair and keeps
    /// the private half; none before it enrolls.
    pub wireguard_public_key: Option<WgPublicKey>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// The protocol a service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Protocol {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
    /// Raw TCP.
    Tcp,
}

/// One application running on an origin, e.g. `web` on port 8001.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginService {
    /// Its id.
    pub id: ServiceId,
    /// The origin it runs on.
    pub origin_id: OriginId,
    /// Name, unique within the origin.
    pub name: Name,
    /// Port on the origin.
    pub port: Port,
    /// Protocol.
    pub protocol: Protocol,
    /// Path checked for health, if the service has one.
    pub health_check_path: Option<HealthCheckPath>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// A published host name and where its traffic goes: a port on an origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Its id.
    pub id: RouteId,
    /// The public host name, unique across routes.
    pub hostname: Hostname,
    /// The origin that serves it.
    pub origin_id: OriginId,
    /// Port on the origin.
    pub target_port: Port,
    /// How its TLS certificate is obtained.
    #[serde(default)]
    pub certificate: CertificateMode,
    /// When it was created.
    pub created_at: Timestamp,
}

/// How a route's TLS certificate is obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CertificateMode {
    /// Ordered over ACME, proven with a file every edge serves on port 80 (the default).
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// Ordered over ACME, proven with a TXT record set through the zone's DNS provider;
    /// the only way to a wildcard certificate.
    #[serde(rename = "dns-01")]
    Dns01,
    /// Uploaded by an administrator (`POST /api/v1/certificates`).
    #[serde(rename = "manual")]
    Manual,
    /// None is managed: edges present their fallback certificate.
    #[serde(rename = "none")]
    None,
}

impl CertificateMode {
    /// The word used in the API and the database, e.g. `http-01`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http01 => "http-01",
            Self::Dns01 => "dns-01",
            Self::Manual => "manual",
            Self::None => "none",
        }
    }

    /// Whether the certificate manager orders it over ACME.
    pub fn is_acme(self) -> bool {
        matches!(self, Self::Http01 | Self::Dns01)
    }
}

impl fmt::Display for CertificateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CertificateMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        [Self::Http01, Self::Dns01, Self::Manual, Self::None]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| Error::InvalidCertificateMode {
                input: s.chars().take(100).collect(),
            })
    }
}

/// Where an edge node is in its life.
///
/// ```text
/// provisioning → active | unhealthy | deleted
/// active       → unhealthy | deleted
/// unhealthy    → active | deleted
/// deleted      → (nothing: terminal)
/// ```
///
/// `provisioning → unhealthy` is legal: a node that never comes up is judged unhealthy, so it
/// leaves DNS (it was never added) and is replaced along the same path as a node that failed
/// later. Asking for the state a node is already in succeeds and changes nothing, so a retried
/// request is harmless; every other move not listed above is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EdgeStatus {
    /// The VPS is being created and set up.
    Provisioning,
    /// Up and in DNS.
    Active,
    /// Failing checks; out of DNS.
    Unhealthy,
    /// Destroyed; kept for history.
    Deleted,
}

impl EdgeStatus {
    /// The state after moving from `self` to `to`, or an error naming both if the life
    /// cycle does not allow it.
    ///
    /// ```
    /// use kokoa_core::EdgeStatus::*;
    /// assert_eq!(Provisioning.transition(Active)?, Active);
    /// assert_eq!(Active.transition(Unhealthy)?.transition(Active)?, Active);
    /// assert!(Deleted.transition(Active).is_err());
    /// assert!(Active.transition(Provisioning).is_err());
    /// # Ok::<(), kokoa_core::Error>(())
    /// ```
    pub fn transition(self, to: EdgeStatus) -> Result<EdgeStatus, Error> {
        use EdgeStatus::*;
        let legal = self == to
            || matches!(
                (self, to),
                (Provisioning | Active | Unhealthy, Deleted)
                    | (Provisioning, Active | Unhealthy)
                    | (Active, Unhealthy)
                    | (Unhealthy, Active)
            );
        if legal {
            Ok(to)
        } else {
            Err(Error::IllegalTransition { from: self, to })
        }
    }

    /// The word used in the API and the database, e.g. `provisioning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Unhealthy => "unhealthy",
            Self::Deleted => "deleted",
        }
    }
}

impl fmt::Display for EdgeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An Internet-facing VPS that terminates TLS and forwards to origins over WireGuard.
///
/// It reaches each origin it serves through its own WireGuard interface, an
/// [`EdgeTunnel`] (SPEC §10.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeNode {
    /// Its id.
    pub id: EdgeNodeId,
    /// Name, e.g. `edge-sgp1-01`.
    pub name: Name,
    /// The origin it was created for, if any: it then serves only that origin. `None`
    /// means it serves every origin.
    pub origin_id: Option<OriginId>,
    /// VPS provider, e.g. `digitalocean`, `vultr`, `hetzner`, `manual`.
    pub provider: Name,
    /// Provider region, e.g. `sgp1`.
    pub region: Name,
    /// Public address; unknown until the provider has assigned it.
    pub public_ip: Option<IpAddr>,
    /// Life-cycle state.
    pub status: EdgeStatus,
    /// When its last heartbeat arrived.
    pub last_heartbeat: Option<Timestamp>,
    /// The `metrics` object of its last heartbeat, as sent.
    pub last_metrics: Option<serde_json::Value>,
    /// Failed health checks in a row.
    pub health_check_failures: u32,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was destroyed.
    pub deleted_at: Option<Timestamp>,
    /// The provider's id of its VPS, once created.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Where the control plane's automation is with it (SPEC §9).
    #[serde(default)]
    pub lifecycle: EdgeLifecycle,
    /// Its WireGuard public key, registered by its agent, which made the key pair and keeps
    /// the private half; none before it enrolls.
    #[serde(default)]
    pub wireguard_public_key: Option<WgPublicKey>,
}

/// The step an edge is at in the automation that creates, checks, withdraws and destroys
/// edges (SPEC §9). Coarser than this, [`EdgeStatus`] is what the API shows first.
///
/// ```text
/// create_instance → booting → enrolled → verifying → serving
///                                                        ↓ (unhealthy, or deleted by hand)
///                                  draining → destroying → destroyed
/// ```
/// A manual edge (an existing VPS) starts at `booting`: nothing to create.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EdgePhase {
    /// The VPS is to be created at the provider.
    #[default]
    CreateInstance,
    /// The VPS exists; waiting for its agent to enroll.
    Booting,
    /// The agent enrolled; waiting for its tunnels, certificates and first configuration.
    Enrolled,
    /// Up; waiting for consecutive healthy checks before it goes into DNS.
    Verifying,
    /// In DNS (or judged unhealthy and out of it, waiting to recover or be destroyed).
    Serving,
    /// Out of DNS on purpose; waiting for the records' TTL before the VPS goes.
    Draining,
    /// The VPS is to be destroyed.
    Destroying,
    /// Gone: nothing left to do.
    Destroyed,
}

impl EdgePhase {
    /// The word used in the API, e.g. `create_instance`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateInstance => "create_instance",
            Self::Booting => "booting",
            Self::Enrolled => "enrolled",
            Self::Verifying => "verifying",
            Self::Serving => "serving",
            Self::Draining => "draining",
            Self::Destroying => "destroying",
            Self::Destroyed => "destroyed",
        }
    }
}

impl fmt::Display for EdgePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an edge is being taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RemovalReason {
    /// `DELETE /api/v1/edge-nodes/{id}`.
    Manual,
    /// Judged unhealthy, and `auto_destroy_unhealthy_vps` is on.
    Unhealthy,
    /// It never came up.
    ProvisioningFailed,
}

/// The automation's record of one edge: the step it is at and what it needs to go on
/// after a restart of the control plane. Kept with the edge, written only by the control
/// plane that leads (SPEC §11).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeLifecycle {
    /// The step.
    pub phase: EdgePhase,
    /// When it entered that step.
    pub phase_since: Option<Timestamp>,
    /// Failed attempts at this step so far.
    pub attempts: u32,
    /// Not before this time is the step tried again (after a failure).
    pub retry_at: Option<Timestamp>,
    /// What went wrong last.
    pub last_error: Option<String>,
    /// The provider's size or plan code asked for (SPEC §6 `size`).
    pub size: Option<String>,
    /// The provider's id of the SSH key to install (SPEC §6 `ssh_key`).
    pub ssh_key_id: Option<String>,
    /// When the agent reported ready (`POST /api/v1/edge-nodes/{id}/ready`).
    pub ready_at: Option<Timestamp>,
    /// When it was taken out of DNS.
    pub withdrawn_at: Option<Timestamp>,
    /// Why it is being removed.
    pub removal: Option<RemovalReason>,
    /// The edge it replaces.
    pub replaces: Option<EdgeNodeId>,
    /// The edge that replaces it.
    pub replaced_by: Option<EdgeNodeId>,
    /// When each step of its setup and removal was done, by step name (`instance_created`,
    /// `enrolled`, `tunnels_up`, `checks_passed`, `dns_removed`, `destroyed`, ...).
    pub steps: std::collections::BTreeMap<String, Timestamp>,
    /// The API request (or the automation's own operation) the current setup or removal
    /// is done for; the automation's events about it carry this id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl EdgeLifecycle {
    /// Moves to `phase` at `now`, clearing the attempt count and error of the step left.
    pub fn enter(&mut self, phase: EdgePhase, now: Timestamp) {
        if self.phase != phase {
            self.phase = phase;
            self.phase_since = Some(now);
            self.attempts = 0;
            self.retry_at = None;
            self.last_error = None;
        }
    }

    /// Records a failed attempt at the current step: try again at `retry_at`.
    pub fn failed(&mut self, error: impl Into<String>, retry_at: Timestamp) {
        self.attempts += 1;
        self.last_error = Some(error.into());
        self.retry_at = Some(retry_at);
    }

    /// Whether the step may be tried at `now` (no failure is waiting out its delay).
    pub fn due(&self, now: Timestamp) -> bool {
        self.retry_at.is_none_or(|at| now >= at)
    }
}

impl EdgeNode {
    /// Whether it serves `origin`: it serves every origin unless it was created for one.
    pub fn serves(&self, origin: &OriginId) -> bool {
        self.origin_id.as_ref().is_none_or(|own| own == origin)
    }

    /// Moves the node to `to` (see [`EdgeStatus::transition`]); entering `deleted` records
    /// `now` as [`deleted_at`](Self::deleted_at). On error nothing changes.
    pub fn set_status(&mut self, to: EdgeStatus, now: Timestamp) -> Result<(), Error> {
        self.status = self.status.transition(to)?;
        if to == EdgeStatus::Deleted && self.deleted_at.is_none() {
            self.deleted_at = Some(now);
        }
        Ok(())
    }
}

/// One WireGuard interface of an edge node: the one that reaches one origin.
///
/// The edge's address lies in the origin's /24 (`.10` and up) and each interface of an edge
/// listens on its own port (51820 and up). Every interface of an edge uses the edge's own
/// key ([`EdgeNode::wireguard_public_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeTunnel {
    /// The edge node.
    pub edge_node_id: EdgeNodeId,
    /// The origin reached.
    pub origin_id: OriginId,
    /// The edge's address in the origin's /24.
    pub wireguard_ip: Ipv4Addr,
    /// The UDP port the interface listens on.
    pub listen_port: Port,
    /// When it was created.
    pub created_at: Timestamp,
}

/// The type of a DNS record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    #[serde(rename = "AAAA")]
    Aaaa,
    /// Alias of another name.
    #[serde(rename = "CNAME")]
    Cname,
    /// Text (ACME DNS-01 challenges).
    #[serde(rename = "TXT")]
    Txt,
}

impl RecordType {
    /// The usual upper-case spelling, e.g. `AAAA`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::Aaaa => "AAAA",
            Self::Cname => "CNAME",
            Self::Txt => "TXT",
        }
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A record's type together with a value that fits it, serialised as
/// `"record_type": "A", "value": "203.0.113.10"`.
///
/// ```
/// use kokoa_core::{RecordData, RecordType};
/// let data = RecordData::parse(RecordType::A, "203.0.113.10")?;
/// assert_eq!(data.record_type(), RecordType::A);
/// assert_eq!(data.value(), "203.0.113.10");
/// assert!(RecordData::parse(RecordType::A, "2001:db8::1").is_err());
/// # Ok::<(), kokoa_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "record_type", content = "value")]
#[non_exhaustive]
pub enum RecordData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    #[serde(rename = "AAAA")]
    Aaaa(Ipv6Addr),
    /// Target name.
    #[serde(rename = "CNAME")]
    Cname(Hostname),
    /// Text (see [`TxtText`]).
    #[serde(rename = "TXT")]
    Txt(TxtText),
}

/// The text of a TXT record: 1–255 printable ASCII characters other than `"` and `\`, so it
/// fits one DNS character-string and needs no escaping in any provider's API or zone file.
/// Every value is checked where it is made, so whatever a provider writes it can also list
/// and delete.
///
/// ```
/// use kokoa_core::TxtText;
/// assert_eq!(TxtText::new("v=kokoa token")?.as_str(), "v=kokoa token");
/// assert!(TxtText::new("say \"hi\"").is_err());
/// assert!(TxtText::new("").is_err());
/// # Ok::<(), kokoa_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TxtText(String);

impl TxtText {
    /// Checks `text` against the rule above.
    pub fn new(text: impl Into<String>) -> Result<Self, Error> {
        let text = text.into();
        let ok = (1..=255).contains(&text.len())
            && text
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        if ok {
            Ok(Self(text))
        } else {
            Err(Error::InvalidRecordValue {
                record_type: RecordType::Txt,
                value: text.chars().take(300).collect(),
            })
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TxtText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TxtText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl RecordData {
    /// Validates `value` for `record_type`.
    pub fn parse(record_type: RecordType, value: &str) -> Result<Self, Error> {
        let fail = || Error::InvalidRecordValue {
            record_type,
            value: value.chars().take(300).collect(),
        };
        Ok(match record_type {
            RecordType::A => Self::A(value.parse().map_err(|_| fail())?),
            RecordType::Aaaa => Self::Aaaa(value.parse().map_err(|_| fail())?),
            RecordType::Cname => Self::Cname(Hostname::parse(value).map_err(|_| fail())?),
            RecordType::Txt => Self::Txt(TxtText::new(value)?),
        })
    }

    /// The record type.
    pub fn record_type(&self) -> RecordType {
        match self {
            Self::A(_) => RecordType::A,
            Self::Aaaa(_) => RecordType::Aaaa,
            Self::Cname(_) => RecordType::Cname,
            Self::Txt(_) => RecordType::Txt,
        }
    }

    /// The value as text, as a DNS provider's API takes it.
    pub fn value(&self) -> String {
        match self {
            Self::A(ip) => ip.to_string(),
            Self::Aaaa(ip) => ip.to_string(),
            Self::Cname(name) => name.to_string(),
            Self::Txt(text) => text.as_str().to_owned(),
        }
    }
}

/// A DNS record Kokoa created at a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// Its id in Kokoa.
    pub id: DnsRecordId,
    /// The name the record is for.
    pub hostname: Hostname,
    /// Type and value.
    #[serde(flatten)]
    pub data: RecordData,
    /// The provider's own id for the record, once the provider has answered (used to
    /// delete it).
    pub provider_record_id: Option<String>,
    /// DNS provider, e.g. `cloudflare`, `route53`, `powerdns`.
    pub provider: Name,
    /// The zone it was created in, for records made by the DNS manager.
    #[serde(default)]
    pub zone_id: Option<DnsZoneId>,
    /// The edge whose address the record points at; none for records such as ACME
    /// challenges that belong to no edge.
    pub edge_node_id: Option<EdgeNodeId>,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CertificateSource {
    /// Ordered from an ACME server.
    Acme,
    /// Uploaded by an administrator.
    Manual,
    /// Issued by Cloudflare's Origin CA.
    CloudflareOriginCa,
}

impl CertificateSource {
    /// The word used in the API and the database, e.g. `acme`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Acme => "acme",
            Self::Manual => "manual",
            Self::CloudflareOriginCa => "cloudflare_origin_ca",
        }
    }
}

/// A TLS certificate the control plane manages for a set of host names, and its status.
///
/// A certificate that was asked for but not issued yet has no chain: then `last_error`
/// says why, and `next_renewal` when the next attempt is. The private key is kept sealed
/// by the store, apart from this type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Its id.
    pub id: CertificateId,
    /// The names it covers (the subject alternative names); unique across certificates.
    pub names: BTreeSet<Hostname>,
    /// Where it comes from.
    pub source: CertificateSource,
    /// How control of the names is proven, for ACME certificates.
    pub method: CertificateMode,
    /// Its issuer, as the certificate names it.
    pub issuer: Option<String>,
    /// Start of validity.
    pub not_before: Option<Timestamp>,
    /// End of validity.
    pub not_after: Option<Timestamp>,
    /// SHA-256 of `chain_pem`, which edges compare with their copy.
    pub sha256: Option<ContentHash>,
    /// The chain, leaf first, in PEM.
    pub chain_pem: Option<String>,
    /// When it is renewed (or, before the first issue, ordered again).
    pub next_renewal: Option<Timestamp>,
    /// Failed orders in a row.
    pub failures: u32,
    /// Why the last order failed.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

impl Certificate {
    /// Whether it has been issued and covers `hostname` (exactly or by a wildcard).
    pub fn serves(&self, hostname: &Hostname) -> bool {
        self.chain_pem.is_some() && self.names.iter().any(|n| n.covers(hostname))
    }
}

/// A DNS zone the DNS manager keeps records in, with the provider that holds it.
///
/// Credentials are kept sealed by the store, apart from this type; `settings` holds only
/// what is not secret (a server address, a project id, a key name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsZone {
    /// Its id.
    pub id: DnsZoneId,
    /// The zone apex, e.g. `hoge.com`; unique.
    pub name: Hostname,
    /// The provider, e.g. `cloudflare`, `powerdns`, `rfc2136`.
    pub provider: Name,
    /// The provider's id of the zone, once looked up.
    pub provider_zone_id: Option<String>,
    /// The provider's settings that are not secret, a JSON object.
    pub settings: serde_json::Value,
    /// TTL of the records it manages, in seconds.
    pub ttl: u32,
    /// When it was added.
    pub created_at: Timestamp,
}

/// The outcome of one health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckStatus {
    /// The check passed.
    Success,
    /// The check failed.
    Failure,
}

/// One row of an edge node's health check history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// The edge checked.
    pub edge_node_id: EdgeNodeId,
    /// Which check: `http`, `end_to_end`, `tls_certificate`, ...
    #[serde(default = "default_check")]
    pub check: String,
    /// Outcome.
    pub status: CheckStatus,
    /// How long the answer took, when there was one.
    pub response_time_ms: Option<u32>,
    /// What went wrong, for failures.
    pub error_message: Option<String>,
    /// When the check ran.
    pub checked_at: Timestamp,
}

fn default_check() -> String {
    "http".to_owned()
}

/// What a user may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// Everything (the default, as in SPEC §5).
    #[default]
    Admin,
    /// Read only.
    Viewer,
}

/// An account of the Web UI. The password hash and TOTP secret are kept by the store,
/// outside this type ([`UserSecrets`]), so a `User` can be logged and returned by the API
/// as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Unique, normalised e-mail address.
    pub email: Email,
    /// Permissions.
    pub role: Role,
    /// When it was created.
    pub created_at: Timestamp,
    /// Whether the TOTP second factor is set up (and asked for at every password login).
    #[serde(default)]
    pub totp_enabled: bool,
    /// Failed logins in a row since the last success or lockout.
    #[serde(default)]
    pub failed_logins: u32,
    /// Logins are refused until then, after too many failures in a row.
    #[serde(default)]
    pub locked_until: Option<Timestamp>,
}

impl User {
    /// A new account with no second factor, no failures and no lock.
    pub fn new(email: Email, role: Role, created_at: Timestamp) -> Self {
        Self {
            id: UserId::new(),
            email,
            role,
            created_at,
            totp_enabled: false,
            failed_logins: 0,
            locked_until: None,
        }
    }

    /// Whether logins are refused at `now`.
    pub fn is_locked(&self, now: Timestamp) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }
}

/// What the store keeps to check a user's login. `Debug` shows none of it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct UserSecrets {
    /// The password's hash in PHC string form (`$argon2id$…`); `None` for an account that
    /// signs in only through an OpenID provider.
    pub password_hash: Option<String>,
    /// The TOTP secret, sealed for `kokoa_store::seal::totp_secret_context`: set at enrollment,
    /// before [`User::totp_enabled`] turns true.
    pub totp_secret: Option<Sealed>,
    /// The last TOTP time step a code was accepted for: a code is accepted once.
    pub totp_last_step: Option<u64>,
}

impl fmt::Debug for UserSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSecrets")
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "totp_secret",
                &self.totp_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("totp_last_step", &self.totp_last_step)
            .finish()
    }
}

/// How far a Web UI session has got through the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SessionStage {
    /// The password (or the OpenID provider) was verified; the second factor, or its
    /// enrollment, is still to come. Such a session may do nothing else.
    SecondFactor,
    /// Fully signed in.
    Full,
}

impl SessionStage {
    /// The word stored and shown: `second_factor` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SecondFactor => "second_factor",
            Self::Full => "full",
        }
    }
}

impl std::str::FromStr for SessionStage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "second_factor" => Ok(Self::SecondFactor),
            "full" => Ok(Self::Full),
            other => Err(Error::Storage(
                format!("unknown session stage {other:?}").into(),
            )),
        }
    }
}

/// A Web UI session. The store keeps it under the hash of the cookie's token; the token
/// itself is only in the browser. `Debug` hides the CSRF token.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// Who is signed in.
    pub user_id: UserId,
    /// How far the login got.
    pub stage: SessionStage,
    /// The token every state-changing request of this session must echo in a header.
    pub csrf_token: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last used.
    pub last_seen: Timestamp,
    /// When it ends unless used again.
    pub expires_at: Timestamp,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("stage", &self.stage)
            .field("csrf_token", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("last_seen", &self.last_seen)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A token for the management API. The token itself is shown once, at creation; the store
/// keeps only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Its id.
    pub id: ApiTokenId,
    /// A label chosen by the administrator, e.g. `ci-deploy`.
    pub name: Name,
    /// What it may do.
    pub role: Role,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last used, if ever.
    pub last_used_at: Option<Timestamp>,
    /// When it was revoked; a revoked token is refused.
    pub revoked_at: Option<Timestamp>,
}

/// An edge node or an origin: the two kinds of node that authenticate with node
/// credentials. Serialised as `{"kind": "edge", "id": "edg_…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum NodeRef {
    /// An edge node.
    Edge(EdgeNodeId),
    /// An origin.
    Origin(OriginId),
}

impl NodeRef {
    /// `edge` or `origin`, as in the JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Edge(_) => "edge",
            Self::Origin(_) => "origin",
        }
    }

    /// The node's id as text.
    pub fn id(&self) -> &str {
        match self {
            Self::Edge(id) => id.as_str(),
            Self::Origin(id) => id.as_str(),
        }
    }
}

impl fmt::Display for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.id())
    }
}

/// A limited, short-lived enrollment token issued for one node (SPEC §10.1): the node trades
/// it for a long-lived [`NodeCredential`]. The store keeps only the token's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// Its id.
    pub id: EnrollmentId,
    /// The node that may enroll with it.
    pub node: NodeRef,
    /// After this it is refused.
    pub expires_at: Timestamp,
    /// How many more times it may be redeemed.
    pub uses_left: u32,
    /// When it was issued.
    pub created_at: Timestamp,
}

impl Enrollment {
    /// Whether it can still be redeemed at `now`.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        self.uses_left > 0 && now < self.expires_at
    }
}

/// A node's long-lived credential, used for heartbeats and configuration pulls. The store
/// keeps only the hash of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCredential {
    /// Its id.
    pub id: NodeCredentialId,
    /// The node it authenticates.
    pub node: NodeRef,
    /// When it was issued.
    pub created_at: Timestamp,
    /// When it was revoked; a revoked credential is refused.
    pub revoked_at: Option<Timestamp>,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    const ALL: [EdgeStatus; 4] = [
        EdgeStatus::Provisioning,
        EdgeStatus::Active,
        EdgeStatus::Unhealthy,
        EdgeStatus::Deleted,
    ];

    /// The life cycle written out edge by edge, independently of `transition`.
    fn listed_edge(from: EdgeStatus, to: EdgeStatus) -> bool {
        use EdgeStatus::*;
        const EDGES: [(EdgeStatus, EdgeStatus); 7] = [
            (Provisioning, Active),
            (Provisioning, Unhealthy),
            (Provisioning, Deleted),
            (Active, Unhealthy),
            (Active, Deleted),
            (Unhealthy, Active),
            (Unhealthy, Deleted),
        ];
        EDGES.contains(&(from, to))
    }

    fn edge(status: EdgeStatus) -> EdgeNode {
        EdgeNode {
            id: EdgeNodeId::parse("edg_1").unwrap(),
            name: Name::parse("edge-sgp1-01").unwrap(),
            origin_id: Some(OriginId::parse("org_1").unwrap()),
            provider: Name::parse("digitalocean").unwrap(),
            region: Name::parse("sgp1").unwrap(),
            public_ip: Some("203.0.113.10".parse().unwrap()),
            status,
            last_heartbeat: None,
            last_metrics: Some(json!({"cpu_percent": 12.3})),
            health_check_failures: 0,
            created_at: Timestamp::from_unix(1_737_455_400).unwrap(),
            deleted_at: None,
            instance_id: None,
            lifecycle: EdgeLifecycle::default(),
            wireguard_public_key: Some(WgPublicKey::parse(KEY).unwrap()),
        }
    }

    #[test]
    fn illegal_transitions_name_both_states() {
        let err = EdgeStatus::Deleted
            .transition(EdgeStatus::Active)
            .unwrap_err()
            .to_string();
        assert!(err.contains("deleted") && err.contains("active"), "{err}");
        for from in ALL {
            for to in ALL {
                let want = from == to || listed_edge(from, to);
                assert_eq!(from.transition(to).is_ok(), want, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn deleting_records_the_time_once() {
        let mut node = edge(EdgeStatus::Active);
        let t1 = Timestamp::from_unix(1_800_000_000).unwrap();
        node.set_status(EdgeStatus::Deleted, t1).unwrap();
        node.set_status(EdgeStatus::Deleted, Timestamp::now())
            .unwrap();
        assert_eq!(
            (node.status, node.deleted_at),
            (EdgeStatus::Deleted, Some(t1))
        );
        assert!(node.set_status(EdgeStatus::Active, t1).is_err());
        assert_eq!(node.status, EdgeStatus::Deleted);
    }

    #[test]
    fn serde_uses_the_spec_words() {
        let value = serde_json::to_value(edge(EdgeStatus::Provisioning)).unwrap();
        assert_eq!(value["status"], "provisioning");
        assert_eq!(value["created_at"], "2025-01-21T10:30:00Z");
        assert_eq!(value["public_ip"], "203.0.113.10");
        let back: EdgeNode = serde_json::from_value(value).unwrap();
        assert_eq!(back, edge(EdgeStatus::Provisioning));
        assert_eq!(serde_json::to_value(Protocol::Https).unwrap(), "https");
        assert_eq!(
            serde_json::to_value(OriginStatus::Inactive).unwrap(),
            "inactive"
        );
        assert_eq!(
            serde_json::to_value(CheckStatus::Success).unwrap(),
            "success"
        );
        assert_eq!(serde_json::to_value(Role::default()).unwrap(), "admin");
        assert_eq!(serde_json::to_value(RecordType::Aaaa).unwrap(), "AAAA");
    }

    #[test]
    fn an_edge_serves_its_own_origin_or_all() {
        let (own, other) = (OriginId::parse("org_1").unwrap(), OriginId::new());
        let mut node = edge(EdgeStatus::Active);
        assert!(node.serves(&own) && !node.serves(&other));
        node.origin_id = None;
        assert!(node.serves(&own) && node.serves(&other));
    }

    #[test]
    fn tunnels_nodes_and_enrollments_serialise_plainly() {
        let tunnel = EdgeTunnel {
            edge_node_id: EdgeNodeId::parse("edg_1").unwrap(),
            origin_id: OriginId::parse("org_1").unwrap(),
            wireguard_ip: Ipv4Addr::new(10, 0, 1, 10),
            listen_port: Port::new(51820).unwrap(),
            created_at: Timestamp::from_unix(1_737_455_400).unwrap(),
        };
        let value = serde_json::to_value(&tunnel).unwrap();
        assert_eq!(value["wireguard_ip"], "10.0.1.10");
        assert_eq!(value["listen_port"], 51820);
        assert_eq!(serde_json::from_value::<EdgeTunnel>(value).unwrap(), tunnel);

        let node = NodeRef::Edge(EdgeNodeId::parse("edg_1").unwrap());
        assert_eq!(
            serde_json::to_value(&node).unwrap(),
            json!({"kind": "edge", "id": "edg_1"})
        );
        assert_eq!(node.to_string(), "edge edg_1");
        let origin: NodeRef =
            serde_json::from_value(json!({"kind": "origin", "id": "org_1"})).unwrap();
        assert_eq!(origin, NodeRef::Origin(OriginId::parse("org_1").unwrap()));
        assert!(serde_json::from_value::<NodeRef>(json!({"kind": "user", "id": "u"})).is_err());

        let at = |s| Timestamp::from_unix(s).unwrap();
        let mut enrollment = Enrollment {
            id: EnrollmentId::new(),
            node,
            expires_at: at(1_000),
            uses_left: 1,
            created_at: at(0),
        };
        assert!(enrollment.is_usable(at(999)));
        assert!(!enrollment.is_usable(at(1_000)));
        enrollment.uses_left = 0;
        assert!(!enrollment.is_usable(at(0)));
    }

    #[test]
    fn records_deserialise_only_with_a_fitting_value() {
        let mut record = json!({
            "id": "dns_1", "hostname": "app.hoge.com", "record_type": "A",
            "value": "203.0.113.10", "provider_record_id": "abc", "provider": "cloudflare",
            "edge_node_id": "edg_1", "created_at": "2025-01-21T10:30:00Z", "zone_id": null,
        });
        let parsed: DnsRecord = serde_json::from_value(record.clone()).unwrap();
        assert_eq!(parsed.data, RecordData::A(Ipv4Addr::new(203, 0, 113, 10)));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), record);
        record["record_type"] = json!("AAAA");
        assert!(serde_json::from_value::<DnsRecord>(record.clone()).is_err());
        record["record_type"] = json!("TXT");
        record["value"] = json!("say \"hi\"");
        assert!(serde_json::from_value::<DnsRecord>(record.clone()).is_err());
        record["value"] = json!("gfj9Xq...Rg85nM");
        assert!(serde_json::from_value::<DnsRecord>(record).is_ok());
    }

    #[test]
    fn record_values_are_checked_per_type() {
        let cname = RecordData::parse(RecordType::Cname, "Edge.Example.com.").unwrap();
        assert_eq!(cname.value(), "edge.example.com");
        for (t, bad) in [
            (RecordType::A, "10.0.0"),
            (RecordType::Aaaa, "10.0.0.1"),
            (RecordType::Cname, "a b"),
            (RecordType::Txt, ""),
            (RecordType::Txt, "a\\b"),
        ] {
            let err = RecordData::parse(t, bad).unwrap_err().to_string();
            assert!(
                err.contains(t.as_str()) && err.contains(&format!("{bad:?}")),
                "{err}"
            );
        }
        assert!(RecordData::parse(RecordType::Txt, &"a".repeat(256)).is_err());
    }

    #[test]
    fn a_user_shows_no_secret_because_it_holds_none() {
        let user = User::new(
            Email::parse("admin@example.com").unwrap(),
            Role::Admin,
            Timestamp::now(),
        );
        let json = serde_json::to_value(&user).unwrap();
        let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "created_at",
                "email",
                "failed_logins",
                "id",
                "locked_until",
                "role",
                "totp_enabled"
            ]
        );
        let secrets = UserSecrets {
            password_hash: Some("$argon2id$v=19$secret".into()),
            // Any well-formed sealed value: 12-byte nonce, ciphertext, 16-byte tag.
            totp_secret: Some(Sealed::parse(&"A".repeat(64)).unwrap()),
            totp_last_step: Some(1),
        };
        let shown = format!("{secrets:?}");
        assert!(
            !shown.contains("argon2") && !shown.contains("Sealed"),
            "{shown}"
        );
        let session = Session {
            id: SessionId::new(),
            user_id: user.id,
            stage: SessionStage::Full,
            csrf_token: "csrf-secret".into(),
            created_at: Timestamp::now(),
            last_seen: Timestamp::now(),
            expires_at: Timestamp::now(),
        };
        assert!(!format!("{session:?}").contains("csrf-secret"));
        for stage in [SessionStage::SecondFactor, SessionStage::Full] {
            assert_eq!(stage.as_str().parse::<SessionStage>().unwrap(), stage);
        }
    }

    proptest! {
        #[test]
        fn random_requests_only_walk_listed_edges(
            requests in proptest::collection::vec(proptest::sample::select(ALL.to_vec()), 0..40),
        ) {
            let mut state = EdgeStatus::Provisioning;
            let (mut left_provisioning, mut deleted) = (false, false);
            for to in requests {
                match state.transition(to) {
                    Ok(next) => {
                        prop_assert_eq!(next, to);
                        prop_assert!(state == to || listed_edge(state, to), "{} -> {}", state, to);
                        state = next;
                    }
                    Err(Error::IllegalTransition { from, to: rejected }) => {
                        prop_assert_eq!((from, rejected), (state, to));
                        prop_assert!(state != to && !listed_edge(state, to));
                    }
                    Err(other) => prop_assert!(false, "unexpected {}", other),
                }
                // Once left, provisioning never comes back; once deleted, always deleted.
                prop_assert!(!left_provisioning || state != EdgeStatus::Provisioning);
                prop_assert!(!deleted || state == EdgeStatus::Deleted);
                left_provisioning |= state != EdgeStatus::Provisioning;
                deleted |= state == EdgeStatus::Deleted;
            }
        }
    }
}
