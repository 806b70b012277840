//! What the Kokoa Proxy edge agent (`kokoa-edge`) and origin agent (`kokoa-origin`) share,
//! so that both behave the same where they do the same thing:
//!
//! - [`Api`]: the control plane's API as a node uses it — enroll with a single-use token,
//!   fetch the configuration (`If-None-Match` on the live `config_hash`, long-polled with
//!   `?wait=`), post heartbeats; failures are [`ApiError`]s each agent words its own way.
//! - [`CaPin`]: the control plane's CA, pinned by its SHA-256; [`pinned_client_config`]
//!   trusts it and nothing else.
//! - [`Backoff`]: exponential back-off with jitter between retries of the control plane.
//! - [`Secret`]: the node credential or an enrollment token; never shown by `Debug`, wiped
//!   from memory when dropped.
//! - [`LinkState`] and [`NodeStatus`]: the states a heartbeat reports.
//! - [`Sampler`]: CPU, memory, connections and request figures for heartbeats.
//! - [`keys::NodeKeys`]: the node's WireGuard keys, made and kept on the node; only their
//!   public halves are registered with the control plane.
//! - [`logging::init`]: logs as every Kokoa program writes them (`KOKOA_LOG`, text or
//!   JSON lines).
//! - [`read_private`] and [`write_atomic`]: the state directory's files, read into wiped
//!   memory and replaced atomically with the mode asked (0600 for secrets); [`StateLock`]:
//!   one agent per state directory.
//!
//! ```
//! use std::time::Duration;
//! use kokoa_agent::{Backoff, Secret};
//!
//! let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
//! let first = backoff.next_delay();
//! assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
//!
//! let token = Secret::new("kk_node_secret");
//! assert_eq!(token.expose(), "kk_node_secret");
//! assert!(!format!("{token:?}").contains("kk_node_secret"));
//! ```
//!
//! # Crate features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | — | | none |

mod api;
mod backoff;
mod files;
pub mod keys;
pub mod logging;
mod metrics;
pub mod prometheus;
mod status;
mod tls;

pub use api::{Api, ApiError, Enrolled, with_causes};
pub use backoff::Backoff;
pub use files::{StateLock, read_private, write_atomic};
pub use kokoa_core::Secret;
pub use metrics::{Sample, Sampler, Traffic};
pub use status::{LinkState, NodeStatus};
pub use tls::{CaPin, InvalidPin, pinned_client_config};
