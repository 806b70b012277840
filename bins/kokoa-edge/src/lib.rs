//! The Kokoa Proxy edge agent: it pulls the edge's configuration from the control plane and
//! applies it to WireGuard and nginx, and reports the edge's health.
//!
//! - [`ControlPlane`]: the API as an edge uses it — enroll with a single-use token, fetch
//!   the configuration (`If-None-Match` on the live `config_hash`, long-polled with
//!   `?wait=`), heartbeat, ready.
//! - [`convert()`]: a [`kokoa_core::EdgeConfig`] becomes an nginx [`kokoa_nginx::EdgeSite`]
//!   and one WireGuard interface per origin.
//! - [`DataPlane`] / [`EdgeHost`]: WireGuard first, then nginx (validated with `nginx -t`,
//!   rolled back on failure), started when not running.
//! - [`StateDir`]: `credential.json`, `last-good.json` (written only after a configuration
//!   applied) and the self-signed fallback certificate.
//! - [`Agent`]: the loops. On start it applies the last good configuration, so the edge
//!   serves while the control plane is down; a payload that fails its hash check or nginx's
//!   validation is refused, logged and reported (`status: degraded`, `last_error`) while the
//!   previous configuration keeps serving; failures back off with jitter (1 s doubling to
//!   30 s); a [`Heartbeat`] goes out every 5 s, with each tunnel's state (the origin
//!   answers pings through it: 3 unanswered in a row, down).
//! - [`ApplicationChecks`]: the origins' application checks the configuration asks for
//!   (`GET http://<origin tunnel address>/health` through each tunnel), reported per tunnel
//!   after their thresholds, with a heartbeat at once when a verdict changes.
//!
//! ```
//! use std::net::SocketAddrV4;
//! use kokoa_core::{EdgeConfig, EdgeContent, Hostname};
//! use kokoa_nginx::Listen;
//!
//! let mut content = EdgeContent::default();
//! let app = Hostname::parse("app.hoge.com")?;
//! content.routes.insert(app.clone(), "10.0.1.1:8080".parse::<SocketAddrV4>()?);
//! content.routes.insert(Hostname::parse("wiki.fuga.com")?, "10.0.2.1:8000".parse()?);
//! content.unavailable.insert(app);
//! let config = EdgeConfig::new(content)?;
//!
//! // No certificate of the payload is installed yet: every name gets the fallback. The
//! // interfaces use the edge's own key, which no payload carries.
//! let key = kokoa_wg::PrivateKey::generate();
//! let desired = kokoa_edge::convert(&config, &key, Listen::default(), &|_| false)?;
//! let routes = &desired.site.routes;
//! assert_eq!(routes.len(), 2);
//! assert!(routes.iter().any(|r| r.hostname.as_str() == "app.hoge.com" && !r.available));
//! assert!(routes.iter().all(|r| r.certificate.is_none()));
//! assert!(desired.tunnels.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | — | | none |

mod agent;
mod application;
mod client;
mod convert;
mod error;
mod heartbeat;
mod metrics;
mod plane;
mod state;

pub use agent::{Agent, Timing, apply_and_save};
pub use application::{ApplicationChecks, ApplicationTarget, application_targets};
pub use client::{ControlPlane, Fetched};
pub use convert::{Desired, TunnelPlan, convert};
pub use error::Error;
pub use heartbeat::{Heartbeat, Metrics};
pub use kokoa_agent::{Backoff, LinkState, NodeStatus, Sample, Sampler, Secret, Traffic};
pub use metrics::EdgeMetrics;
pub use plane::{DataPlane, EdgeHost, HostSettings, TunnelReport};
pub use state::{Credential, StateDir};

#[cfg(test)]
mod tests;
