//! Request and response bodies of the API, with their OpenAPI schemas.
//!
//! Requests take plain JSON types (strings, integers) and handlers validate them into
//! domain types, so a bad value is answered with 422 naming the field. Responses hold
//! domain types (ids, host names, timestamps) annotated with the JSON type they serialise
//! to.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use kokoa_core::{
    ApiTokenId, CheckStatus, EdgeConfig, EdgeNodeId, EdgeStatus, EnrollmentId, Hostname, Name,
    OriginId, OriginStatus, Protocol, Role, RouteId, ServiceId, Timestamp, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

// Patterns in the schema describe the usual form of a value so generated requests are
// mostly valid; the domain types still validate everything (and accept a little more, e.g.
// upper case and internationalised host names, which they normalise).

// ---------------------------------------------------------------- requests

/// `POST /api/v1/routes` and `PUT /api/v1/routes/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RouteRequest {
    /// Public host name, e.g. `app.hoge.com` (a leading `*.` makes a wildcard).
    #[schema(
        example = "app.hoge.com",
        pattern = "^(\\*\\.)?([a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\\.){1,4}[a-z]{2,10}$",
        max_length = 253
    )]
    pub hostname: String,
    /// The origin serving it.
    #[schema(
        example = "org_3f2a9c0e1b2d4f6a8c0e1b2d4f6a8c0e",
        pattern = "^[A-Za-z0-9_-]{1,64}$"
    )]
    pub origin_id: String,
    /// Port of the service on the origin, 1–65535.
    #[schema(example = 8080, minimum = 1, maximum = 65535)]
    pub target_port: i64,
    /// How its certificate is obtained: `http-01` (the default) or `dns-01` over ACME,
    /// `manual` upload, or `none` (edges present their fallback certificate).
    #[serde(default)]
    #[schema(example = "http-01", pattern = "^(http-01|dns-01|manual|none)$")]
    pub certificate: Option<String>,
}

/// `POST /api/v1/origins`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct OriginRequest {
    /// Unique name: 1–63 characters of `a-z`, `0-9`, `-`.
    #[schema(
        example = "home-server",
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub name: String,
    /// The domain it mainly serves.
    #[schema(
        example = "app.example.com",
        pattern = "^(\\*\\.)?([a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\\.){1,4}[a-z]{2,10}$",
        max_length = 253
    )]
    pub domain: Option<String>,
    /// Services running on it.
    #[serde(default)]
    pub services: Vec<ServiceRequest>,
}

/// One service of a new origin.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ServiceRequest {
    /// Name, unique within the origin.
    #[schema(example = "web", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// Port on the origin, 1–65535.
    #[schema(example = 8001, minimum = 1, maximum = 65535)]
    pub port: i64,
    /// `http` (default), `https` or `tcp`.
    #[schema(example = "http", pattern = "^(http|https|tcp)$")]
    pub protocol: Option<String>,
    /// Path of its health check, e.g. `/api/health`.
    #[schema(example = "/health", pattern = "^/[A-Za-z0-9._~/?=&-]{0,199}$")]
    pub health_check_path: Option<String>,
}

/// `POST /api/v1/edge-nodes`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EdgeRequest {
    /// Serve only this origin; omitted: serve every origin.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub origin_id: Option<String>,
    /// VPS provider (`digitalocean`, `vultr`, `hetzner`, …) or `manual` for a server
    /// registered by hand.
    #[schema(
        example = "digitalocean",
        pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub provider: String,
    /// Provider region.
    #[schema(example = "sgp1", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub region: String,
    /// Provider size slug, passed to the provisioner.
    #[schema(example = "s-1vcpu-1gb", max_length = 16384)]
    pub size: Option<String>,
    /// SSH key (or its id at the provider), passed to the provisioner.
    #[schema(max_length = 16384)]
    pub ssh_key: Option<String>,
    /// Name; default `edge-<region>-<NN>`.
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: Option<String>,
    /// Public address, for servers registered by hand.
    #[schema(example = "203.0.113.10")]
    pub public_ip: Option<String>,
    /// Give the enroll command even though the control plane's public URL is a loopback
    /// address (an edge on this same machine); without it that command is left out, as no
    /// other machine could follow it.
    #[serde(default)]
    pub allow_loopback_url: bool,
}

/// `POST /api/v1/enroll`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EnrollRequest {
    /// The enrollment token.
    pub token: String,
    /// The public half of the WireGuard key the node made (it keeps the private half):
    /// registered with the enrollment. A node enrolled without one registers it later
    /// with `POST /api/v1/wireguard-key`.
    #[schema(example = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")]
    pub wireguard_public_key: Option<String>,
}

/// `POST /api/v1/wireguard-key`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct WireguardKeyRequest {
    /// The public half of a WireGuard key the node made.
    #[schema(example = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")]
    pub public_key: String,
}

/// `POST /api/v1/heartbeat`. Fields beyond these (SPEC §8.4: `tunnel_status`,
/// `active_connections`, …) are kept with the metrics.
#[derive(Debug, Deserialize, ToSchema)]
pub struct HeartbeatRequest {
    /// The sending node; must be the node the credential belongs to.
    pub node_id: String,
    /// `healthy`, `degraded` or `unhealthy`.
    #[schema(example = "healthy", pattern = "^(healthy|degraded|unhealthy)$")]
    pub status: String,
    /// Free-form numbers such as `cpu_percent`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metrics: Map<String, Value>,
    /// Edges: requests counted since the previous delivered heartbeat, by host name (at
    /// most 1 000 entries), for the traffic analytics.
    #[serde(default)]
    #[schema(value_type = Vec<HostTrafficSchema>)]
    pub traffic: Vec<kokoa_core::HostTraffic>,
    /// Anything else the node reports.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

/// What an edge counted for one host name since its previous heartbeat
/// (`kokoa_core::HostTraffic`).
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // Only describes the document's shape.
pub struct HostTrafficSchema {
    /// The route's host name as configured (`*.hoge.com` for a wildcard), or `other`.
    #[schema(example = "app.hoge.com")]
    hostname: String,
    /// Requests answered.
    #[schema(maximum = 1_000_000_000)]
    requests: u64,
    /// Of those, answered with a 5xx status.
    #[schema(maximum = 1_000_000_000)]
    errors: u64,
    /// Requests by latency bucket: at most 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000
    /// and 10000 ms, then slower.
    #[schema(min_items = 12, max_items = 12)]
    latency: Vec<u64>,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// A name to recognise the token by, e.g. `ci`.
    #[schema(example = "ci", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    pub name: String,
    /// `admin` (default) or `viewer` (read only).
    #[schema(pattern = "^(admin|viewer)$")]
    pub role: Option<String>,
}

/// `POST /api/v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserRequest {
    /// E-mail address, the sign-in name.
    #[schema(
        example = "admin@example.com",
        pattern = "^[a-z0-9._-]{1,30}@[a-z0-9-]{1,20}\\.[a-z]{2,6}$"
    )]
    pub email: String,
    /// `admin` or `viewer` (default: read only).
    #[schema(pattern = "^(admin|viewer)$")]
    pub role: Option<String>,
    /// At least 12 characters; omitted: the user signs in only through the OpenID provider.
    #[schema(min_length = 12, max_length = 1024)]
    pub password: Option<String>,
}

/// `PUT /api/v1/users/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UserRoleRequest {
    /// `admin` or `viewer`.
    #[schema(pattern = "^(admin|viewer)$")]
    pub role: String,
}

/// `POST /api/v1/enrollments`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EnrollmentRequest {
    /// `edge` or `origin`.
    #[schema(example = "edge", pattern = "^(edge|origin)$")]
    pub node_kind: String,
    /// The node's id.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub node_id: String,
    /// Lifetime, 60 s to 30 days; default 1 day.
    #[schema(minimum = 60, maximum = 2592000)]
    pub expires_in_seconds: Option<i64>,
    /// How many times it may be used, 1–100; default 1.
    #[schema(minimum = 1, maximum = 100)]
    pub uses: Option<i64>,
}

/// `POST /api/v1/internal/events`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct EventRequest {
    /// Event type, e.g. `dns.record.added`.
    #[serde(rename = "type")]
    #[schema(example = "dns.record.added", pattern = "^[a-z0-9._-]{1,100}$")]
    pub kind: String,
    /// The event's data.
    #[schema(value_type = Object)]
    pub data: Map<String, Value>,
    /// `info` (the default), `warning` or `critical`.
    #[serde(default)]
    #[schema(example = "info", pattern = "^(info|warning|critical)$")]
    pub severity: Option<String>,
    /// What it is about, e.g. an edge node id.
    #[serde(default)]
    #[schema(max_length = 200)]
    pub subject: Option<String>,
    /// One sentence for a person.
    #[serde(default)]
    #[schema(max_length = 1000)]
    pub message: Option<String>,
}

/// `GET /api/v1/events` and `/api/v1/events/stream`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events numbered above this one, oldest first.
    pub after: Option<i64>,
    /// Only events numbered below this one.
    pub before: Option<i64>,
    /// Only this type, or types starting with the text before a trailing `*` (`edge.*`).
    #[serde(rename = "type")]
    #[param(rename = "type", example = "edge.*")]
    pub kind: Option<String>,
    /// Only events about this subject (an id, a host name).
    pub subject: Option<String>,
    /// Only events at least this severe: `info`, `warning`, `critical`.
    pub severity: Option<String>,
    /// At most this many (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// `GET /api/v1/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// The events: `id`, `type`, `severity`, `subject`, `message`, `data`, `created_at`.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<kokoa_core::Event>,
}

/// `?force=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ForceQuery {
    /// Also delete the routes that use it.
    #[serde(default)]
    pub force: bool,
}

/// `?limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LimitQuery {
    /// How many checks, newest first: 1–1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// `?range=`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// `1h` (one-minute buckets, the default), `24h` (one-minute buckets) or `30d`
    /// (one-hour buckets).
    #[param(pattern = "^(1h|24h|30d)$")]
    pub range: Option<String>,
}

/// One bucket, or the sum of a whole range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TrafficFigures {
    /// Requests answered.
    pub requests: u64,
    /// Of those, answered with a 5xx status.
    pub errors: u64,
    /// 95th percentile of the request time, in milliseconds (from a histogram: exact to its
    /// bucket); none without timed requests.
    pub p95_ms: Option<f64>,
}

impl From<&kokoa_core::TrafficCounts> for TrafficFigures {
    fn from(c: &kokoa_core::TrafficCounts) -> Self {
        Self {
            requests: c.requests,
            errors: c.errors,
            p95_ms: c.p95_ms().map(|ms| (ms * 10.0).round() / 10.0),
        }
    }
}

/// One bucket of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficBucket {
    /// When the bucket starts.
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    /// Its figures (0 for a bucket without traffic).
    #[serde(flatten)]
    pub figures: TrafficFigures,
}

/// A traffic series over a range, every bucket present, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrafficSeries {
    /// `1h`, `24h` or `30d`.
    #[schema(example = "1h")]
    pub range: String,
    /// Length of a bucket in seconds: 60 or 3600.
    pub step_seconds: i64,
    /// The buckets. The last is the current one, still filling; figures reach the
    /// control plane with the edges' heartbeats and are written every few seconds.
    pub buckets: Vec<TrafficBucket>,
    /// The whole range.
    pub total: TrafficFigures,
}

// ---------------------------------------------------------------- responses

/// One target group of `GET /api/v1/prometheus/targets` (Prometheus's HTTP service
/// discovery): a node's metrics address and labels naming it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TargetGroup {
    /// `ADDRESS:PORT` of the node's `/metrics`.
    #[schema(example = json!(["203.0.113.10:9581"]))]
    pub targets: Vec<String>,
    /// `node` (`edge` or `origin`), `name` and `id`.
    #[schema(example = json!({"node": "edge", "name": "edge-nrt-01", "id": "edg_01J..."}))]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthAnswer {
    /// `ok` (`/health`), `ready`, or `not_ready: …` with the reason (`/ready`).
    pub status: String,
}

/// A route.
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteView {
    /// Its id.
    #[schema(value_type = String)]
    pub id: RouteId,
    /// Public host name.
    #[schema(value_type = String)]
    pub hostname: Hostname,
    /// The origin serving it.
    #[schema(value_type = String)]
    pub origin_id: OriginId,
    /// Port on the origin.
    #[schema(value_type = u16)]
    pub target_port: kokoa_core::Port,
    /// How its certificate is obtained.
    #[schema(value_type = String, example = "http-01")]
    pub certificate: kokoa_core::CertificateMode,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// What will not work as asked, e.g. a certificate to be ordered by a control plane
    /// without ACME; left out when nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `GET /api/v1/routes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteList {
    /// All routes, by host name.
    pub routes: Vec<RouteView>,
}

/// A service of an origin.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceView {
    /// Its id.
    #[schema(value_type = String)]
    pub id: ServiceId,
    /// Name.
    #[schema(value_type = String)]
    pub name: Name,
    /// Port on the origin.
    #[schema(value_type = u16)]
    pub port: kokoa_core::Port,
    /// `http`, `https` or `tcp`.
    #[schema(value_type = String)]
    pub protocol: Protocol,
    /// Health check path.
    #[schema(value_type = Option<String>)]
    pub health_check_path: Option<kokoa_core::HealthCheckPath>,
}

/// An origin.
#[derive(Debug, Serialize, ToSchema)]
pub struct OriginView {
    /// Its id.
    #[schema(value_type = String)]
    pub id: OriginId,
    /// Unique name.
    #[schema(value_type = String)]
    pub name: Name,
    /// Main domain.
    #[schema(value_type = Option<String>)]
    pub domain: Option<Hostname>,
    /// `active` or `inactive`.
    #[schema(value_type = String, example = "active")]
    pub status: OriginStatus,
    /// Edges with a tunnel to it.
    pub edge_nodes_count: usize,
    /// Last heartbeat.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_heartbeat: Option<Timestamp>,
    /// Its own /24.
    #[schema(value_type = String, example = "10.0.1.0/24")]
    pub network_cidr: Ipv4Net,
    /// Its tunnel address.
    #[schema(value_type = String, example = "10.0.1.1")]
    pub wireguard_ip: Ipv4Addr,
    /// Its WireGuard public key, registered by its agent (which made the key and keeps the
    /// private half); null until the agent enrolls.
    #[schema(value_type = Option<String>)]
    pub wireguard_public_key: Option<kokoa_core::WgPublicKey>,
    /// Its services.
    pub services: Vec<ServiceView>,
    /// The names of the services its last heartbeat reported down (the others were up,
    /// if it sent a heartbeat).
    pub services_down: Vec<String>,
    /// Its tunnel's firewall as its last heartbeat said: `on`, `off` or `failed: <why>`
    /// (SPEC §10.5); none before a heartbeat that says.
    #[schema(example = "on")]
    pub firewall: Option<String>,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Where to download its configuration bundle.
    #[schema(example = "/api/v1/origins/org_1/config")]
    pub config_download_url: String,
}

/// `GET /api/v1/origins`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OriginList {
    /// All origins, by name.
    pub origins: Vec<OriginView>,
}

/// `202` answer of `POST /api/v1/edge-nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeCreated {
    /// The new edge's id.
    #[schema(value_type = String)]
    pub id: EdgeNodeId,
    /// `provisioning`.
    #[schema(value_type = String)]
    pub status: EdgeStatus,
    /// Typical time until the edge is active.
    pub estimated_time_seconds: u32,
    /// For `manual` edges: the single-use token the server enrolls with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enrollment_token: Option<String>,
    /// For `manual` edges: the command to run on the server; left out while the public URL
    /// is a loopback address, unless `allow_loopback_url` was asked (see `warnings`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enroll_command: Option<String>,
    /// What will not work as asked; left out when nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One WireGuard interface of an edge, towards one origin.
#[derive(Debug, Serialize, ToSchema)]
pub struct TunnelView {
    /// The origin.
    #[schema(value_type = String)]
    pub origin_id: OriginId,
    /// The edge's address in the origin's /24.
    #[schema(value_type = String, example = "10.0.1.10")]
    pub wireguard_ip: Ipv4Addr,
    /// The interface's UDP port on the edge.
    pub listen_port: u16,
    /// The interface's public key: the edge's own (every interface of an edge uses it);
    /// null until the edge enrolls.
    #[schema(value_type = Option<String>)]
    pub public_key: Option<kokoa_core::WgPublicKey>,
}

/// An edge node.
#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeView {
    /// Its id.
    #[schema(value_type = String)]
    pub id: EdgeNodeId,
    /// Name.
    #[schema(value_type = String, example = "edge-sgp1-01")]
    pub name: Name,
    /// The only origin it serves; null: every origin.
    #[schema(value_type = Option<String>)]
    pub origin_id: Option<OriginId>,
    /// VPS provider.
    #[schema(value_type = String)]
    pub provider: Name,
    /// Provider region.
    #[schema(value_type = String)]
    pub region: Name,
    /// Public address, once known.
    #[schema(value_type = Option<String>)]
    pub public_ip: Option<IpAddr>,
    /// Its WireGuard public key, registered by its agent (which made the key and keeps the
    /// private half); null until the agent enrolls.
    #[schema(value_type = Option<String>)]
    pub wireguard_public_key: Option<kokoa_core::WgPublicKey>,
    /// `provisioning`, `active`, `unhealthy` or `deleted`.
    #[schema(value_type = String, example = "active")]
    pub status: EdgeStatus,
    /// `healthy`, `degraded` (active but its last checks failed), `unhealthy` or
    /// `unknown` (not serving yet, or deleted).
    #[schema(example = "healthy")]
    pub health: String,
    /// Seconds since it was created, while it is active or unhealthy; 0 otherwise.
    pub uptime_seconds: u64,
    /// Last heartbeat.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_heartbeat: Option<Timestamp>,
    /// Failed health checks in a row.
    pub health_check_failures: u32,
    /// What its agent reported failing in its last heartbeat (nginx does not start, a
    /// configuration does not apply); absent while it reports nothing wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_error: Option<String>,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it was deleted.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deleted_at: Option<Timestamp>,
    /// Its interfaces, one per origin it serves.
    pub tunnels: Vec<TunnelView>,
    /// The provider's id of its VPS.
    pub instance_id: Option<String>,
    /// Where the automation is with it: `phase` (`create_instance`, `booting`,
    /// `enrolled`, `verifying`, `serving`, `draining`, `destroying`, `destroyed`),
    /// `phase_since`, `steps` (step → when it was done), `last_error`, `attempts`,
    /// `removal`, `replaces`, `replaced_by`, `withdrawn_at`.
    #[schema(value_type = Object)]
    pub lifecycle: kokoa_core::EdgeLifecycle,
}

/// `GET /api/v1/edge-nodes` and `GET /api/v1/origins/{origin_id}/edge-nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeList {
    /// The edges, oldest first.
    pub edge_nodes: Vec<EdgeView>,
}

/// `202` answer of `DELETE /api/v1/edge-nodes/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletionStarted {
    /// `Edge node deletion initiated`.
    pub message: String,
    /// What happens, in order.
    pub steps: Vec<String>,
}

/// `202` answer of `POST /api/v1/edge-nodes/{id}/rotate-keys` and
/// `POST /api/v1/origins/{id}/rotate-keys`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotationStarted {
    /// What happens, in order.
    pub message: String,
    /// One entry per key that rotates.
    pub rotations: Vec<RotationView>,
}

/// One key rotation in progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotationView {
    /// The key in use, which is being replaced; the rotation is done when the node shows
    /// another.
    #[schema(value_type = String)]
    pub public_key: kokoa_core::WgPublicKey,
}

/// One health check result.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckView {
    /// When the check ran.
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: Timestamp,
    /// `success` or `failure`.
    #[schema(value_type = String, example = "success")]
    pub status: CheckStatus,
    /// Answer time.
    pub response_time_ms: Option<u32>,
    /// What went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// `GET /api/v1/edge-nodes/{id}/health-history`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthHistory {
    /// Newest first.
    pub checks: Vec<CheckView>,
}

/// A node, as `{"kind":"edge","id":"…"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    /// `edge` or `origin`.
    #[schema(example = "edge")]
    pub kind: String,
    /// Its id.
    pub id: String,
}

/// Answer of `POST /api/v1/enroll`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Enrolled {
    /// The node the token was issued for.
    pub node: NodeView,
    /// The node's long-lived credential: the bearer token of its later calls. Shown once.
    pub credential: String,
}

/// Answer of `POST /api/v1/heartbeat`.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// `Heartbeat received`.
    pub message: String,
    /// Seconds until the next heartbeat is expected: 5 for edges, 30 for origins.
    pub next_check_in: u32,
}

/// An API token (without its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Its id.
    #[schema(value_type = String)]
    pub id: ApiTokenId,
    /// Name.
    pub name: String,
    /// `admin` or `viewer`.
    #[schema(value_type = String, example = "admin")]
    pub role: Role,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it was revoked.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

/// `201` answer of `POST /api/v1/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    /// The token.
    #[serde(flatten)]
    pub token: TokenView,
    /// The bearer token itself. Shown once: only its hash is kept.
    #[serde(rename = "token")]
    pub secret: String,
}

/// `GET /api/v1/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// Tokens that are not revoked.
    pub tokens: Vec<TokenView>,
}

/// A user of the Web UI (no password hash, no second-factor secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// Its id.
    #[schema(value_type = String)]
    pub id: UserId,
    /// E-mail address.
    pub email: String,
    /// `admin` or `viewer`.
    #[schema(value_type = String, example = "admin")]
    pub role: Role,
    /// Whether the TOTP second factor is set up.
    pub totp_enabled: bool,
    /// Sign-ins are refused until then, after too many failures.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub locked_until: Option<Timestamp>,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// `GET /api/v1/users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// By e-mail address.
    pub users: Vec<UserView>,
}

/// `201` answer of `POST /api/v1/enrollments`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentCreated {
    /// Its id.
    #[schema(value_type = String)]
    pub id: EnrollmentId,
    /// The token; shown once.
    pub token: String,
    /// The node it enrolls.
    pub node: NodeView,
    /// When it expires.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// How many more times it may be used.
    pub uses_left: u32,
}

/// `202` answer of `POST /api/v1/internal/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventAccepted {
    /// `Event accepted`.
    pub message: String,
    /// The number the event was recorded under.
    pub id: i64,
}

/// The origin configuration payload, as serialised by `kokoa_core::OriginConfig`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // describes the JSON of `OriginConfig`; never built
pub struct OriginConfigDoc {
    /// Hash of the rest; also the `ETag`.
    config_hash: String,
    /// The origin.
    origin_id: String,
    /// Its `wg0.conf` without `PrivateKey`: the agent adds the key named by
    /// `wireguard_public_key`, which it made and holds.
    wg0_conf: String,
    /// Its local proxy (nginx, http context).
    nginx_conf: String,
    /// Routes to it: `hostname` and the local `target_port`.
    #[schema(value_type = Vec<Object>)]
    routes: Value,
    /// Its services.
    services: Vec<ServiceView>,
    /// Edges whose key is being replaced (`from`, `to`): the new key is a peer of
    /// `wg0_conf` without addresses that takes over from the old one at its first
    /// handshake (SPEC §10.3). Absent when none is.
    #[schema(value_type = Option<Vec<Object>>)]
    key_changes: Value,
    /// The public half of the key `wg0_conf` is used with; absent until the origin
    /// registered one (it then uses the key it has and registers that).
    wireguard_public_key: Option<String>,
    /// Present (true) while a key rotation waits for the origin's next key: the agent makes
    /// one and registers its public half.
    wireguard_key_requested: Option<bool>,
}

/// Answer of `GET /api/v1/edge-nodes/{id}/config`: what a new edge unpacks.
#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeBundle {
    /// The edge.
    pub edge_node: EdgeView,
    /// Its configuration, as `GET /api/v1/edge-nodes/me/config` returns it.
    #[schema(value_type = EdgeConfigDoc)]
    pub config: EdgeConfig,
    /// Base URL of the control plane.
    pub control_plane_url: String,
    /// Where the edge trades its enrollment token for its credential.
    pub enroll_url: String,
}

/// The edge configuration payload (SPEC §4), as serialised by `kokoa_core::EdgeConfig`.
#[derive(Debug, Serialize, ToSchema)]
#[allow(dead_code)] // describes the JSON of `EdgeConfig`; never built
pub struct EdgeConfigDoc {
    /// SHA-256 of the content; also the `ETag`.
    config_hash: String,
    /// Host names served, sorted.
    hostnames: Vec<String>,
    /// Host name → `origin tunnel IP:port`.
    #[schema(value_type = std::collections::HashMap<String, String>)]
    routes: Value,
    /// One WireGuard interface per origin (the edge's own key is named by
    /// `wireguard_public_key`; no private key is part of a configuration).
    #[schema(value_type = Vec<Object>)]
    tunnels: Value,
    /// Certificates to install.
    #[schema(value_type = Vec<Object>)]
    certificates: Value,
    /// Per client address limits.
    #[schema(value_type = Object)]
    rate_limits: Value,
    /// Routed host names answered with 503.
    unavailable: Vec<String>,
    /// The public half of the key the edge's interfaces use, which the edge made and holds;
    /// absent until it registered one.
    wireguard_public_key: Option<String>,
    /// Present (true) while a key rotation waits for the edge's next key.
    wireguard_key_requested: Option<bool>,
}

#[cfg(test)]
mod tests {
    use kokoa_core::{EdgeConfig, EdgeContent};

    #[test]
    fn the_documented_origin_config_has_the_fields_origins_receive() {
        let doc = serde_json::to_value(super::super::openapi()).unwrap();
        let documented = &doc["components"]["schemas"]["OriginConfigDoc"]["properties"];
        let mut documented: Vec<&String> = documented.as_object().unwrap().keys().collect();
        let key =
            kokoa_core::WgPublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=").unwrap();
        // With the parts left out of the JSON when empty or false set.
        let config = kokoa_core::OriginConfig {
            config_hash: String::new(),
            origin_id: kokoa_core::OriginId::new(),
            wg0_conf: String::new(),
            nginx_conf: String::new(),
            routes: Vec::new(),
            services: Vec::new(),
            key_changes: vec![kokoa_core::KeyChangeEntry {
                from: key.clone(),
                to: key.clone(),
            }],
            wireguard_public_key: Some(key),
            wireguard_key_requested: true,
        };
        let real = serde_json::to_value(config.with_computed_hash()).unwrap();
        let mut real: Vec<&String> = real.as_object().unwrap().keys().collect();
        documented.sort();
        real.sort();
        assert_eq!(documented, real);
    }

    #[test]
    fn the_documented_edge_config_has_the_fields_edges_receive() {
        let doc = serde_json::to_value(super::super::openapi()).unwrap();
        let documented = &doc["components"]["schemas"]["EdgeConfigDoc"]["properties"];
        let mut documented: Vec<&String> = documented.as_object().unwrap().keys().collect();
        // With the parts left out of the JSON when empty or false set.
        let content = EdgeContent {
            wireguard_public_key: Some(
                kokoa_core::WgPublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")
                    .unwrap(),
            ),
            wireguard_key_requested: true,
            ..EdgeContent::default()
        };
        let real = serde_json::to_value(EdgeConfig::new(content).unwrap()).unwrap();
        let mut real: Vec<&String> = real.as_object().unwrap().keys().collect();
        documented.sort();
        real.sort();
        assert_eq!(documented, real);
    }
}
