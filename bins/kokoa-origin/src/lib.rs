//! The Kokoa Proxy origin agent: it keeps the origin's WireGuard tunnel to its edges in step
//! with the control plane, forwards what the edges send to the local services, checks those
//! services and reports them in heartbeats.
//!
//! - [`ControlPlane`]: the API as an origin uses it — enroll with the single-use token of
//!   the bundle's `credentials.json`, fetch `GET /api/v1/origins/me/config` (`If-None-Match`
//!   on the live `config_hash`, long-polled with `?wait=`), heartbeat.
//! - [`Plan::new`]: the payload's `wg0.conf` (`kokoa_core::OriginConfig`, whose
//!   `config_hash` the client checks) becomes the interface to apply with
//!   kokoa-wg ([`WgTunnel`]); its peers' `/32`s are the only sources the [`Forwarder`]
//!   admits; its routes' target ports are what it listens on, at the tunnel address.
//! - [`Rules`] and [`Firewall`]: the second isolation layer (SPEC §10.5), an nftables table
//!   that lets through the tunnel only the edges, to the declared ports, port 80 and ping.
//! - [`Checker`]: each service by TCP connect, or `GET` of its health check path.
//! - [`Agent`]: the loops. The last good configuration is applied first, so the tunnel is up
//!   while the control plane is unreachable; edges come and go without a restart (the
//!   interface is updated in place); checks run every 5 s and a [`Heartbeat`] goes out every
//!   30 s and at once when a service goes up or down.
//!
//! ```
//! use kokoa_core::OriginConfig;
//! use kokoa_origin::Plan;
//! use kokoa_wg::{Config, Format, Interface, InterfaceName, Peer, PrivateKey};
//!
//! // wg0.conf as the control plane renders it, without a private key: the origin dials
//! // out to one edge.
//! let mut interface = Interface::new(PrivateKey::generate());
//! interface.addresses = vec!["10.0.1.1/24".parse()?];
//! let mut edge = Peer::new(PrivateKey::generate().public_key());
//! edge.allowed_ips = vec!["10.0.1.10/32".parse()?];
//! let wg0 = Config::new(interface, vec![edge]).render_template(Format::WgQuick);
//!
//! let config: OriginConfig = serde_json::from_value(serde_json::json!({
//!     "config_hash": "3b5d…",
//!     "origin_id": "org_1",
//!     "wg0_conf": wg0,
//!     "nginx_conf": "",
//!     "routes": [{"hostname": "app.hoge.com", "target_port": 8080}],
//!     "services": [{"id": "svc_1", "name": "web", "port": 8080, "protocol": "http",
//!                   "health_check_path": "/health"}],
//! }))?;
//! // The origin's own key, which it made and keeps, completes it.
//! let own = PrivateKey::generate();
//! let plan = Plan::new(&config, InterfaceName::new("wg0")?, own.clone())?;
//! assert_eq!(plan.interface.config.interface.private_key, own);
//! assert_eq!(plan.tunnel_ip.to_string(), "10.0.1.1");
//! assert_eq!(plan.edges.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.1.10"]);
//! assert_eq!(plan.ports.into_iter().collect::<Vec<_>>(), [8080]);
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
mod checks;
mod client;
mod error;
mod firewall;
mod forward;
mod heartbeat;
mod metrics;
mod payload;
mod state;

pub use agent::{Agent, Settings, Timing, Tunnel, WgTunnel};
pub use application::{APPLICATION_PORT, ApplicationEndpoint};
pub use checks::{Checker, ServiceReport};
pub use client::ControlPlane;
pub use error::Error;
pub use firewall::{Firewall, FirewallState, Rules, TABLE};
pub use forward::{DEFAULT_MAX_CONNECTIONS, Forwarder, Relay};
pub use heartbeat::{Heartbeat, Metrics, disk_percent};
pub use metrics::OriginMetrics;
pub use payload::Plan;
pub use state::{BundleCredentials, Credential, StateDir};
