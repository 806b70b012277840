//! The duties of a Kokoa Proxy control plane, without its web server: what runs on its own
//! next to answering requests (SPEC §8, §11). The DNS manager lives here; the certificate
//! manager, the health judge and the edge lifecycle still live in the reference control
//! plane, over the same [`Runtime`].
//!
//! - [`Runtime`]: the context every duty works in: the store, the [`EventBus`], the
//!   [`Leader`], the [`Modules`]' switches, the duties' [`RuntimeSettings`] and
//!   [`DutyMetrics`](metrics::DutyMetrics), the master key and the change counter.
//! - [`Leader`] and [`lease_loop`]: one control plane leads per database (the `leader`
//!   lease, timed by the database's clock); every leader-only action is first recorded
//!   with the lease's fencing token, so a leader that stalled cannot act next to its
//!   successor.
//! - [`dns`]: the DNS manager (SPEC §8.1): for every routed host name in a managed zone,
//!   one A (or AAAA) record per edge that serves it and is healthy, at the zone's provider
//!   (any `kokoa-dns` provider the program enables), paced and retried by the driver. The
//!   example `examples/dns-duty` runs it alone against PowerDNS.
//! - [`certs`]: the certificate manager (SPEC §8.3): ACME HTTP-01 through the edges and
//!   DNS-01 through the DNS driver, renewal timing, Cloudflare's Origin CA for the names of
//!   some zones; keys sealed under the master key.
//! - [`health`]: the health checker (its share of the checks on every control plane) and
//!   the judge (on the leader): out of DNS and `unhealthy` on failed checks, back on
//!   successful ones, 503 for an origin no edge reaches, alerts; guarded against a
//!   suspect observer.
//! - [`payload`]: what nodes pull: an edge's configuration (SPEC §4) and an origin's
//!   `wg0.conf`, local proxy and routes, from a shared snapshot of origins and routes.
//! - [`rotation`]: WireGuard key rotation (SPEC §10.3), by hand or on a schedule, never
//!   removing a working key before its successor carries traffic.
//! - [`traffic`]: the metrics collector (SPEC §8.5): the edges' traffic counts summed by
//!   minute and hour, per host name and per edge.
//! - [`retention`]: the leader deletes what is older than the retention settings.
//! - [`reports`]: what the edges' heartbeats say about their tunnels.
//! - [`events`]: what the control plane did and why, recorded in the store, announced to
//!   this process's listeners and handed to the notification sinks (`kokoa-notify`).
//! - [`operation`]: request and operation ids, carried from an API request or an automated
//!   action to the events of the work it started.
//! - [`seal`]: secret settings sealed under the master key before they reach the store.
//! - [`follow_changes`]: hears of changes made through the other control planes of the
//!   database.
//!
//! Every duty reads what it needs from the store at every step, so nothing is lost when
//! the leader changes or restarts.
//!
//! ```
//! use std::sync::Arc;
//!
//! use kokoa_runtime::{Module, Runtime, RuntimeSettings};
//! use kokoa_store::{MasterKey, MemoryStore};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let runtime = Runtime::new(Arc::new(MemoryStore::new()), MasterKey::generate(), RuntimeSettings::default());
//! // Alone on its store, it leads at once.
//! assert!(runtime.leader().claim(&runtime).await);
//! assert!(runtime.modules().enabled(&runtime, Module::DnsManager).await);
//! runtime.modules().set(&runtime, Module::DnsManager, false).await?;
//! assert!(!runtime.modules().enabled(&runtime, Module::DnsManager).await);
//! # Ok::<(), kokoa_core::Error>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod certs;
mod context;
pub mod dns;
mod error;
pub mod events;
pub mod health;
mod leader;
pub mod metrics;
mod modules;
pub mod operation;
pub mod payload;
pub mod reports;
pub mod retention;
pub mod rotation;
pub mod seal;
mod settings;
pub mod traffic;

pub use context::{Runtime, Wakers, follow_changes, sleep_or_stop, wait_or_stop};
pub use error::Error;
pub use events::EventBus;
pub use leader::{INSTANCES, LEASE_TTL, Leader, lease_loop};
pub use modules::{Module, ModuleStatus, Modules};
pub use settings::{
    AcmeSettings, EdgeSettings, HealthSettings, OriginCaSettings, ProvisionerEntry,
    RetentionSettings, RuntimeSettings,
};

// Keeps the README's example compiling and passing.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
