//! Domain types of Kokoa Proxy: validated host names, origins, routes, edge nodes, subnet
//! allocation, the edge configuration payload, sealed secrets and token hashes. Pure and
//! synchronous; the control plane's storage is `kokoa-store`.
//!
//! Every value that comes from outside — a host name in an API call, an id in a URL, a
//! field in a JSON payload — is validated once, when it becomes one of these types, so the
//! crates that write nginx and WireGuard files can trust it.
//!
//! - [`Hostname`], [`Name`], [`Port`], [`Email`], [`HealthCheckPath`], [`WgPublicKey`],
//!   [`Timestamp`], typed ids such as [`OriginId`]: validated values.
//! - [`Origin`], [`OriginService`], [`Route`], [`EdgeNode`] (with the [`EdgeStatus`] life
//!   cycle) and its [`EdgeTunnel`]s, [`DnsRecord`], [`HealthCheck`], [`User`], [`ApiToken`],
//!   [`Enrollment`], [`NodeCredential`]: the records of the control plane.
//! - [`SubnetPool`], [`origin_address`], [`allocate_edge_address`]: one /24 per origin.
//! - [`EdgeConfig`]: what an edge pulls from the control plane, with its `config_hash`;
//!   [`OriginConfig`]: what an origin agent pulls.
//! - [`secret`]: [`Sealed`], a private key as the database keeps it (`kokoa_store::MasterKey`
//!   seals and opens it); [`TokenHash`] is all that is kept of a token.
//! - `sigv4` (feature `sigv4`): AWS Signature Version 4, the request signing of AWS APIs.
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddrV4;
//! use kokoa_core::{EdgeConfig, EdgeContent, Hostname, Port, SubnetPool, origin_address};
//!
//! // A route's host name, as a user typed it.
//! let hostname = Hostname::parse("App.Hoge.com")?;
//!
//! // A new origin gets the first free /24; the origin itself is .1 in it.
//! let subnet = SubnetPool::default().allocate([])?;
//! let origin_ip = origin_address(subnet)?;
//! assert_eq!(origin_ip.to_string(), "10.0.1.1");
//!
//! // The payload an edge pulls: app.hoge.com goes to port 8080 on that origin.
//! let port = Port::new(8080)?;
//! let mut content = EdgeContent::default();
//! content.routes.insert(hostname, SocketAddrV4::new(origin_ip, port.get()));
//! let config = EdgeConfig::new(content)?;
//! config.verify_hash()?;
//! println!("config_hash = {}", config.config_hash());
//! assert_eq!(serde_json::to_value(&config)?["routes"]["app.hoge.com"], "10.0.1.1:8080");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sigv4` | no | `sigv4`: AWS Signature Version 4 request signing (HMAC-SHA256), for the Route53 and EC2 clients |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod dns_name;
mod error;
mod event;
mod hostname;
mod id;
mod model;
mod payload;
mod redacted;
pub mod secret;
#[cfg(feature = "sigv4")]
#[cfg_attr(docsrs, doc(cfg(feature = "sigv4")))]
pub mod sigv4;
mod subnet;
mod time;
mod traffic;
mod value;

pub use backoff::doubling;
pub use dns_name::DnsName;
pub use error::{Error, HostnameProblem};
pub use event::{Event, EventFilter, EventKind, NewEvent, Severity};
pub use hostname::Hostname;
pub use id::{
    ApiTokenId, CertificateId, DnsRecordId, DnsZoneId, EdgeNodeId, EnrollmentId, NodeCredentialId,
    OriginId, RouteId, ServiceId, SessionId, UserId,
};
pub use model::{
    ApiToken, Certificate, CertificateMode, CertificateSource, CheckStatus, DnsRecord, DnsZone,
    EdgeLifecycle, EdgeNode, EdgePhase, EdgeStatus, EdgeTunnel, Enrollment, HealthCheck,
    NodeCredential, NodeRef, Origin, OriginService, OriginStatus, Protocol, RecordData, RecordType,
    RemovalReason, Role, Route, Session, SessionStage, TxtText, User, UserSecrets,
};
pub use payload::{
    ApplicationCheck, CertificateRef, ContentHash, EdgeConfig, EdgeContent, KeyChangeEntry,
    OriginConfig, OriginRoute, RateLimits, ServiceEntry, Tunnel,
};
pub use redacted::Secret;
pub use secret::{Sealed, TokenHash};
pub use subnet::{SubnetPool, allocate_edge_address, origin_address};
pub use time::Timestamp;
pub use traffic::{
    HostTraffic, LATENCY_BOUNDS_MS, LATENCY_BUCKETS, TrafficCounts, TrafficPoint,
    TrafficResolution, TrafficRow, TrafficScope,
};
pub use value::{Email, HealthCheckPath, Name, Port, WgPublicKey};

/// Runs the README's example as a doctest so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
