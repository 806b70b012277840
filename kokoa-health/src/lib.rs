//! Health checks of Kokoa Proxy: the per-target state machine, heartbeat staleness, the edge
//! and origin decision tables, check configuration, the executor that runs checks, the
//! checker that schedules them, and the ring that splits targets between checker instances.
//!
//! The core is pure and synchronous: time is passed in, no clock is read, so a control
//! plane (or a test) decides exactly when "now" is. The networked parts are behind features.
//!
//! - [`HealthTracker`] turns check results into [`HealthState`]: 3 failures in a row make a
//!   target unhealthy, 3 successes in a row healthy again (both configurable), and the flip
//!   is reported once, as a [`Transition`].
//! - [`is_stale`] and [`CpuTracker`] judge heartbeats: missing for 30 s (edge) or 60 s
//!   (origin), CPU above 90 % for 5 minutes.
//! - [`EdgeVerdict`] and [`OriginVerdict`] apply the decision tables to an observation;
//!   [`EdgeVerdict::actions_since`] and [`OriginVerdict::actions_since`] say what to do
//!   about the change from the verdict last acted on, recovery included.
//! - [`CheckConfig`] describes a check with the specification's defaults and validates it;
//!   [`CheckExecutor`] runs one and returns a [`CheckOutcome`].
//! - [`DefaultExecutor`] (feature `executors`) runs every [`CheckKind`]: HTTP(S) and end to
//!   end through a given edge, TLS certificates (chain, expiry, name, days left), TCP, ICMP
//!   and WireGuard echoes (also from inside a network namespace), and commands.
//! - [`Checker`] (feature `checker`) runs a changing set of [`Target`]s' checks on their
//!   intervals with bounded concurrency, feeds each result to the check's tracker and hands
//!   a [`CheckReport`] to a [`CheckSink`].
//! - [`Ring`] splits targets between several checker instances by consistent hashing.
//! - [`observed_since`], [`ObserverGuard`] and [`FlapDamper`] keep the automation safe: a
//!   heartbeat counts as missing only from when the observer could have heard it, many
//!   edges failing at once point at the observer, and a flapping target changes the
//!   configuration a bounded number of times per minute.
//!
//! # Example
//!
//! An edge whose `/health` stops answering is withdrawn from DNS on the third failure, and
//! nothing more is asked of the caller on the fourth:
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use kokoa_health::{
//!     CheckConfig, CheckOutcome, EdgeAction, EdgeObservation, EdgeRules, EdgeVerdict, HealthState,
//!     HealthTracker, TunnelStatus,
//! };
//!
//! let check = CheckConfig::https("https://203.0.113.7/health");
//! check.validate()?;
//! let rules = EdgeRules::default();
//! // A running edge, restored as healthy after a control plane restart.
//! let mut tracker = HealthTracker::new(check.thresholds()?, HealthState::Healthy);
//! let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let mut acted_on = EdgeVerdict::judge(
//!     &EdgeObservation {
//!         at: start,
//!         last_heartbeat: start,
//!         http: tracker.state(),
//!         tunnel: TunnelStatus::Up,
//!         cpu_overloaded: false,
//!         error_rate_percent: 0.5,
//!     },
//!     &rules,
//! );
//! assert!(acted_on.in_dns());
//!
//! let mut done = Vec::new();
//! for run in 1..=4 {
//!     let outcome = CheckOutcome::failure(5_000, "timed out after 5 s");
//!     tracker.observe(outcome.status);
//!     let now = start + check.interval * run;
//!     let verdict = EdgeVerdict::judge(
//!         &EdgeObservation {
//!             at: now,
//!             last_heartbeat: now - Duration::from_secs(2),
//!             http: tracker.state(),
//!             tunnel: TunnelStatus::Up,
//!             cpu_overloaded: false,
//!             error_rate_percent: 0.5,
//!         },
//!         &rules,
//!     );
//!     done.push(verdict.actions_since(&acted_on));
//!     acted_on = verdict;
//! }
//! assert_eq!(
//!     done,
//!     [vec![], vec![], vec![EdgeAction::RemoveFromDns, EdgeAction::MarkUnhealthy], vec![]]
//! );
//! assert_eq!(tracker.consecutive_failures(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Several checker instances each keep their share of the targets, and hand it to their
//! [`Checker`]; when an instance joins or leaves, each sends its new share and only the
//! targets that changed hands start or stop:
//!
//! ```
//! use kokoa_health::{CheckConfig, Ring, Target, TargetCheck};
//!
//! let edges: Vec<Target> = (0..100)
//!     .map(|i| {
//!         let check = CheckConfig::https(format!("https://203.0.113.{i}/health"));
//!         Target::new(format!("edg_{i}"), [TargetCheck::new("http", check)])
//!     })
//!     .collect();
//! let live = ["checker-0", "checker-1", "checker-2", "checker-3", "checker-4"];
//! let ring = Ring::new(live);
//! let mine: Vec<&Target> = edges.iter().filter(|t| ring.owns("checker-2", &t.id)).collect();
//! assert!((10..=30).contains(&mine.len()), "about 100 / 5");
//! ```
//!
//! # Crate features
//!
//! The pure core (state machine, decision tables, configuration, [`Ring`], the [`Target`]
//! and [`CheckSink`] types) needs only `serde`, `thiserror` and `async-trait`.
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `checker` | yes | [`Checker`], the scheduler (tokio), and [`CheckSink`] for a tokio `mpsc::Sender` |
//! | `executors` | yes | [`DefaultExecutor`] (tokio, hyper, rustls with aws-lc-rs, x509-parser, rustix) |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod check;
mod checker;
mod edge;
mod error;
#[cfg(feature = "executors")]
mod executor;
mod heartbeat;
mod origin;
mod safety;
mod secs;
mod shard;
mod state;

use serde::{Deserialize, Serialize};

pub use check::{CheckConfig, CheckExecutor, CheckKind, CheckOutcome};
#[cfg(feature = "checker")]
#[cfg_attr(docsrs, doc(cfg(feature = "checker")))]
pub use checker::Checker;
pub use checker::{CheckReport, CheckSink, Target, TargetCheck};
pub use edge::{EdgeAction, EdgeCondition, EdgeObservation, EdgeRules, EdgeVerdict};
pub use error::Error;
#[cfg(feature = "executors")]
#[cfg_attr(docsrs, doc(cfg(feature = "executors")))]
pub use executor::DefaultExecutor;
pub use heartbeat::{CpuRule, CpuTracker, TunnelStatus, is_stale};
pub use origin::{
    OriginAction, OriginCondition, OriginObservation, OriginRules, OriginVerdict, Scope,
};
pub use safety::{Damped, Damping, FlapDamper, ObserverGuard, observed_since};
pub use shard::Ring;
pub use state::{CheckStatus, HealthState, HealthTracker, Thresholds, Transition};

/// How loud an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Someone should look.
    Warning,
    /// Someone should look now.
    Critical,
}

// Keeps the README's example compiling and passing.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
