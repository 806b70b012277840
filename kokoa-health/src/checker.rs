//! The checker: runs every target's checks on their own schedule and reports each result.

use std::time::SystemTime;

use async_trait::async_trait;

use crate::{CheckConfig, CheckKind, CheckOutcome, HealthState, Transition};

#[cfg(feature = "checker")]
mod scheduler;
#[cfg(feature = "checker")]
pub use scheduler::Checker;

/// Something checked: an edge, an origin, one service; what the [`Checker`] schedules.
///
/// `id` is the stable key: a target sent again with the same id and the same checks keeps
/// its state and schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Target {
    /// Stable identifier, such as the edge node's id; also the key sharding splits on.
    pub id: String,
    /// Its checks, each with a name unique within the target.
    pub checks: Vec<TargetCheck>,
}

impl Target {
    /// A target with these checks.
    pub fn new(id: impl Into<String>, checks: impl IntoIterator<Item = TargetCheck>) -> Self {
        Self {
            id: id.into(),
            checks: checks.into_iter().collect(),
        }
    }
}

/// One check of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetCheck {
    /// Name unique within the target (`http`, `wireguard`, `service:api`, ...).
    pub name: String,
    /// What to run and how often.
    pub config: CheckConfig,
    /// The state the check starts in when it first appears: the state stored before a
    /// restart, so that a healthy edge is not withdrawn while its streak is rebuilt.
    /// Ignored for a check the checker already runs.
    pub initial: HealthState,
}

impl TargetCheck {
    /// A check starting in [`HealthState::Unknown`].
    pub fn new(name: impl Into<String>, config: CheckConfig) -> Self {
        Self {
            name: name.into(),
            config,
            initial: HealthState::Unknown,
        }
    }

    /// The same check, starting in `state` when it first appears.
    pub fn starting(mut self, state: HealthState) -> Self {
        self.initial = state;
        self
    }
}

/// One run of one check, as handed to a [`CheckSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The target's id.
    pub target: String,
    /// The check's name within the target.
    pub check: String,
    /// The check's kind.
    pub kind: CheckKind,
    /// What the run found.
    pub outcome: CheckOutcome,
    /// When the run ended (the `checked_at` of the history).
    pub at: SystemTime,
    /// The check's state after this run.
    pub state: HealthState,
    /// Failures in a row up to this run (0 after a success): the `failure_count` of an
    /// `edge_node_unhealthy` event.
    pub consecutive_failures: u32,
    /// The flip this run caused, if any; each flip is reported exactly once.
    pub transition: Option<Transition>,
}

/// Where the [`Checker`] hands each report: the control plane writes the history and acts
/// on transitions here.
///
/// Calls for one check come one at a time, in order; calls for different checks may
/// overlap. A slow sink holds a worker, so it slows the checks down rather than piling
/// reports up.
#[async_trait]
pub trait CheckSink: Send + Sync {
    /// Takes one report.
    async fn record(&self, report: CheckReport);
}

/// Sends each report into the channel, waiting while it is full; reports are dropped once
/// the receiver is gone.
#[cfg(feature = "checker")]
#[cfg_attr(docsrs, doc(cfg(feature = "checker")))]
#[async_trait]
impl CheckSink for tokio::sync::mpsc::Sender<CheckReport> {
    async fn record(&self, report: CheckReport) {
        let _ = self.send(report).await;
    }
}
