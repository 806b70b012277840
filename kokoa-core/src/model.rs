//! The records the control plane keeps (SPEC §5, full version).
//!
//! Fields are public: every field holds an already validated value, so any combination is a
//! valid record. Credentials (password hashes, token hashes, sealed private keys) are not
//! part of these types: the store keeps them apart so a record can be logged or returned by
//! the API without leaking them.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    ApiTokenId, DnsRecordId, EdgeNodeId, Email, EnrollmentId, Error, HealthCheckPath, Hostname,
    Name, NodeCredentialId, OriginId, Port, RouteId, ServiceId, Timestamp, UserId, WgPublicKey,
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
    /// Its WireGuard public key.
    pub wireguard_public_key: WgPublicKey,
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
    /// When it was created.
    pub created_at: Timestamp,
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
/// listens on its own port (51820 and up). Its private key is kept sealed by the store,
/// apart from this type.
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
    /// The interface's public key.
    pub public_key: WgPublicKey,
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
    /// Text: 1–255 printable ASCII characters other than `"` and `\`, so it fits one DNS
    /// character-string and needs no escaping in any provider's API or zone file.
    #[serde(rename = "TXT", deserialize_with = "txt")]
    Txt(String),
}

fn txt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let value = String::deserialize(d)?;
    check_txt(&value).map_err(serde::de::Error::custom)?;
    Ok(value)
}

fn check_txt(value: &str) -> Result<(), Error> {
    let ok = (1..=255).contains(&value.len())
        && value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRecordValue {
            record_type: RecordType::Txt,
            value: value.chars().take(300).collect(),
        })
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
            RecordType::Txt => {
                check_txt(value)?;
                Self::Txt(value.to_owned())
            }
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
            Self::Txt(text) => text.clone(),
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
    /// The edge whose address the record points at; none for records such as ACME
    /// challenges that belong to no edge.
    pub edge_node_id: Option<EdgeNodeId>,
    /// When it was created.
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
    /// Outcome.
    pub status: CheckStatus,
    /// How long the answer took, when there was one.
    pub response_time_ms: Option<u32>,
    /// What went wrong, for failures.
    pub error_message: Option<String>,
    /// When the check ran.
    pub checked_at: Timestamp,
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

/// An administrator account. The password hash and TOTP secret are kept by the store,
/// outside this type, so a `User` can be logged and returned by the API as it is.
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
            public_key: WgPublicKey::parse(KEY).unwrap(),
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
            "edge_node_id": "edg_1", "created_at": "2025-01-21T10:30:00Z",
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
        let user = User {
            id: UserId::new(),
            email: Email::parse("admin@example.com").unwrap(),
            role: Role::Admin,
            created_at: Timestamp::now(),
        };
        let json = serde_json::to_value(&user).unwrap();
        let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["created_at", "email", "id", "role"]);
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
