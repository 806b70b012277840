//! DNS manager of Kokoa Proxy: keeps one A (and AAAA) record per healthy edge for every
//! routed host name, at whichever DNS provider holds the zone.
//!
//! - [`DnsProvider`]: the provider interface (zones, records, optional health checks), held
//!   as `Arc<dyn DnsProvider>`. Providers: [`MemoryProvider`] (always), Cloudflare,
//!   PowerDNS, DigitalOcean, Route 53, Google Cloud DNS and RFC 2136 (features), and
//!   [`manual`] instructions for a person.
//! - [`ProviderConfig`]: a provider named by kind with its settings and credentials (what
//!   a control plane stores per zone), built into one of the above.
//! - [`plan()`]: the pure core. From the [`DesiredState`] (routed host names, every edge with
//!   its [`EdgeState`]), the zone's records and the ids the manager owns, it plans the
//!   creates, TTL updates and deletes. Foreign records are never touched, and a host name
//!   keeps its last record unless that edge was judged unhealthy or deleted.
//! - [`Reconciler`]: lists, plans and applies through a provider, paced by a
//!   [`RateLimiter`] and retried with backoff ([`RetryPolicy`]).
//!
//! # Example
//!
//! A dry run against the in-memory provider: one edge serving, one judged unhealthy.
//!
//! ```
//! use std::collections::BTreeSet;
//! use kokoa_core::{EdgeNodeId, Hostname, RecordData};
//! use kokoa_dns::{
//!     DesiredState, DnsProvider, EdgeState, EdgeTarget, MemoryProvider, RecordSpec, Zone, plan,
//! };
//!
//! let runtime = tokio::runtime::Builder::new_current_thread().build()?;
//! let zone = Zone { id: "z1".into(), name: Hostname::parse("hoge.com")? };
//! let provider = MemoryProvider::new([zone.clone()]);
//! let app = Hostname::parse("app.hoge.com")?;
//!
//! // Earlier, the manager created a record for edge-2 and stored its id.
//! let old = RecordSpec { name: app.clone().into(), data: RecordData::A("198.51.100.7".parse()?), ttl: 30 };
//! let owned = BTreeSet::from([runtime.block_on(provider.create_record(&zone, &old))?]);
//!
//! let mut desired = DesiredState::default();
//! desired.hostnames.insert(app);
//! desired.edges.push(EdgeTarget {
//!     id: EdgeNodeId::parse("edge-1")?,
//!     ipv4: Some("203.0.113.10".parse()?),
//!     ipv6: None,
//!     state: EdgeState::Serving,
//! });
//! desired.edges.push(EdgeTarget {
//!     id: EdgeNodeId::parse("edge-2")?,
//!     ipv4: Some("198.51.100.7".parse()?),
//!     ipv6: None,
//!     state: EdgeState::Unhealthy,
//! });
//!
//! let current = runtime.block_on(provider.list_records(&zone, None))?;
//! let plan = plan(&desired, &current, &owned);
//! assert_eq!(
//!     plan.to_string(),
//!     "+ app.hoge.com. 30 IN A 203.0.113.10 (edge edge-1)\n\
//!      - app.hoge.com. 30 IN A 198.51.100.7 (id mem-1): edge edge-2 is unhealthy\n",
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `cloudflare` | yes | [`cloudflare::CloudflareProvider`]: Cloudflare API v4 with an API token. |
//! | `powerdns` | no | [`powerdns::PowerDnsProvider`]: the PowerDNS Authoritative HTTP API. |
//! | `digitalocean` | no | [`digitalocean::DigitalOceanProvider`]: DigitalOcean DNS. |
//! | `local-powerdns` | no | [`local::LocalPowerDns`]: runs a PowerDNS Authoritative server on this machine, for tests and labs. |
//! | `route53` | no | [`route53::Route53Provider`]: Amazon Route 53, requests signed with AWS Signature Version 4 (`kokoa-core/sigv4`). |
//! | `google` | no | [`google::GoogleCloudDns`]: Google Cloud DNS as a service account (JSON key). |
//! | `rfc2136` | no | [`rfc2136::Rfc2136Provider`]: dynamic updates signed with TSIG, for BIND, Knot, PowerDNS. |
//!
//! Each HTTP provider has a constructor taking a `reqwest::Client` and a base URL, so tests
//! and proxies can point it elsewhere, next to the one for the real API.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod driver;
mod error;
pub mod manual;
mod memory;
mod observed;
mod provider;
mod reconcile;

#[cfg(any(
    feature = "cloudflare",
    feature = "powerdns",
    feature = "digitalocean",
    feature = "route53",
    feature = "google"
))]
mod http;
#[cfg(any(
    feature = "powerdns",
    feature = "route53",
    feature = "google",
    feature = "rfc2136"
))]
mod rrset;

#[cfg(feature = "cloudflare")]
#[cfg_attr(docsrs, doc(cfg(feature = "cloudflare")))]
pub mod cloudflare;
#[cfg(feature = "digitalocean")]
#[cfg_attr(docsrs, doc(cfg(feature = "digitalocean")))]
pub mod digitalocean;
#[cfg(feature = "google")]
#[cfg_attr(docsrs, doc(cfg(feature = "google")))]
pub mod google;
#[cfg(feature = "local-powerdns")]
#[cfg_attr(docsrs, doc(cfg(feature = "local-powerdns")))]
pub mod local;
#[cfg(feature = "powerdns")]
#[cfg_attr(docsrs, doc(cfg(feature = "powerdns")))]
pub mod powerdns;
#[cfg(feature = "rfc2136")]
#[cfg_attr(docsrs, doc(cfg(feature = "rfc2136")))]
pub mod rfc2136;
#[cfg(feature = "route53")]
#[cfg_attr(docsrs, doc(cfg(feature = "route53")))]
pub mod route53;

pub use config::{PROVIDER_KINDS, ProviderConfig};
pub use driver::{ApplyReport, RateLimit, RateLimiter, Reconciler, RetryPolicy};
pub use error::Error;
pub use memory::MemoryProvider;
pub use observed::{Call, Observed};
pub use provider::{DnsProvider, HealthCheckSpec, ProviderRecord, RecordId, RecordSpec, Zone};
pub use reconcile::{
    Change, Create, DEFAULT_TTL, Delete, DeleteReason, DesiredState, EdgeState, EdgeTarget, Plan,
    Update, plan,
};

/// Runs the README's example as a doctest so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
