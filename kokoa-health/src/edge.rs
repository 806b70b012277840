//! The edge decision table (SPEC 8.4, "Edge decisions").

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{CpuRule, HealthState, Severity, TunnelStatus, is_stale};

/// Thresholds of the edge table, with the specification's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeRules {
    /// No heartbeat for this long removes the edge (default 30 s).
    #[serde(with = "crate::secs")]
    pub heartbeat_timeout: Duration,
    /// An error rate strictly above this percentage raises an alert (default 10).
    pub error_rate_percent: f64,
    /// When CPU load is an overload (default above 90 % for 5 minutes); give it to the
    /// edge's [`CpuTracker`](crate::CpuTracker).
    pub cpu: CpuRule,
}

impl Default for EdgeRules {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(30),
            error_rate_percent: 10.0,
            cpu: CpuRule::default(),
        }
    }
}

/// What is known about one edge at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeObservation {
    /// When the observation is judged ("now").
    pub at: SystemTime,
    /// When the last heartbeat arrived (the time the edge reported ready if none has).
    pub last_heartbeat: SystemTime,
    /// State of the edge's HTTP check tracker.
    pub http: HealthState,
    /// Tunnel status from the heartbeat or the WireGuard check.
    pub tunnel: TunnelStatus,
    /// From the edge's [`CpuTracker`](crate::CpuTracker).
    pub cpu_overloaded: bool,
    /// Percentage of requests that failed, from the heartbeat.
    pub error_rate_percent: f64,
}

/// One row of the edge table that holds at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EdgeCondition {
    /// The HTTP check has not yet succeeded `recovery` times in a row: a new edge stays out
    /// of DNS until it has.
    Pending,
    /// The HTTP check failed `threshold` times in a row.
    HttpCheckFailing,
    /// The tunnel is down.
    TunnelDown,
    /// No heartbeat for the heartbeat timeout.
    HeartbeatMissing,
    /// CPU load has been high for the whole window.
    CpuOverloaded,
    /// The error rate is above the limit.
    HighErrorRate,
}

impl EdgeCondition {
    /// Whether the edge must be out of DNS while this holds.
    pub fn removes_from_dns(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::HttpCheckFailing | Self::TunnelDown | Self::HeartbeatMissing
        )
    }

    /// Whether the edge is marked unhealthy while this holds.
    pub fn marks_unhealthy(self) -> bool {
        matches!(self, Self::HttpCheckFailing | Self::HeartbeatMissing)
    }

    /// The alert this raises, if any (such an edge stays in DNS).
    pub fn severity(self) -> Option<Severity> {
        match self {
            Self::CpuOverloaded | Self::HighErrorRate => Some(Severity::Warning),
            Self::Pending | Self::HttpCheckFailing | Self::TunnelDown | Self::HeartbeatMissing => {
                None
            }
        }
    }
}

/// Something to do to an edge; see [`EdgeVerdict::actions_since`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EdgeAction {
    /// Delete the edge's records from every hostname.
    RemoveFromDns,
    /// Add the edge's records back.
    AddToDns,
    /// Set the edge's status to unhealthy.
    MarkUnhealthy,
    /// Set the edge's status to healthy.
    MarkHealthy,
    /// Set the edge's status to pending: it waits for its checks to succeed again, as when
    /// a pending edge whose heartbeat was missing sends one again.
    MarkPending,
    /// Raise an alert.
    Alert {
        /// What holds.
        condition: EdgeCondition,
        /// How loud.
        severity: Severity,
    },
    /// The condition no longer holds: close its alert.
    ResolveAlert(EdgeCondition),
}

/// The conditions that hold for an edge, and what follows from them.
///
/// Keep the verdict last acted on (store it to survive a restart) and act on
/// [`actions_since`](Self::actions_since) of each new one: every change then produces its
/// action exactly once, and recovery (back into DNS, healthy again, alert closed) comes from
/// the same comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeVerdict {
    /// The rows of the table that hold.
    pub conditions: BTreeSet<EdgeCondition>,
}

impl EdgeVerdict {
    /// The verdict of a new edge, before any observation: pending, out of DNS.
    pub fn pending() -> Self {
        Self {
            conditions: BTreeSet::from([EdgeCondition::Pending]),
        }
    }

    /// Judges an observation. Comparisons are strict (`>`) as in the table; a heartbeat
    /// exactly `heartbeat_timeout` old is missing (see [`is_stale`]).
    pub fn judge(observation: &EdgeObservation, rules: &EdgeRules) -> Self {
        let holds = [
            (
                EdgeCondition::Pending,
                observation.http == HealthState::Unknown,
            ),
            (
                EdgeCondition::HttpCheckFailing,
                observation.http == HealthState::Unhealthy,
            ),
            (
                EdgeCondition::TunnelDown,
                observation.tunnel == TunnelStatus::Down,
            ),
            (
                EdgeCondition::HeartbeatMissing,
                is_stale(
                    observation.last_heartbeat,
                    observation.at,
                    rules.heartbeat_timeout,
                ),
            ),
            (EdgeCondition::CpuOverloaded, observation.cpu_overloaded),
            (
                EdgeCondition::HighErrorRate,
                observation.error_rate_percent > rules.error_rate_percent,
            ),
        ];
        Self {
            conditions: holds
                .into_iter()
                .filter_map(|(condition, holds)| holds.then_some(condition))
                .collect(),
        }
    }

    /// Whether the edge belongs in DNS.
    pub fn in_dns(&self) -> bool {
        !self.conditions.iter().any(|c| c.removes_from_dns())
    }

    /// The status to show: unhealthy by the table, unknown while pending, healthy otherwise
    /// (an edge whose tunnel is down is out of DNS but not marked unhealthy).
    pub fn health(&self) -> HealthState {
        if self.conditions.iter().any(|c| c.marks_unhealthy()) {
            HealthState::Unhealthy
        } else if self.conditions.contains(&EdgeCondition::Pending) {
            HealthState::Unknown
        } else {
            HealthState::Healthy
        }
    }

    fn alerts(&self) -> BTreeSet<(EdgeCondition, Severity)> {
        self.conditions
            .iter()
            .filter_map(|c| Some((*c, c.severity()?)))
            .collect()
    }

    /// What to do to get from `previous` to `self`: DNS first, then the status, then the
    /// alerts raised and closed. Empty when nothing that matters changed.
    pub fn actions_since(&self, previous: &Self) -> Vec<EdgeAction> {
        let mut actions = Vec::new();
        match (previous.in_dns(), self.in_dns()) {
            (true, false) => actions.push(EdgeAction::RemoveFromDns),
            (false, true) => actions.push(EdgeAction::AddToDns),
            _ => {}
        }
        let health = self.health();
        if health != previous.health() {
            actions.push(match health {
                HealthState::Unhealthy => EdgeAction::MarkUnhealthy,
                HealthState::Healthy => EdgeAction::MarkHealthy,
                HealthState::Unknown => EdgeAction::MarkPending,
            });
        }
        let (before, now) = (previous.alerts(), self.alerts());
        actions.extend(
            now.difference(&before)
                .map(|&(condition, severity)| EdgeAction::Alert {
                    condition,
                    severity,
                }),
        );
        actions.extend(
            before
                .difference(&now)
                .map(|&(condition, _)| EdgeAction::ResolveAlert(condition)),
        );
        actions
    }
}

#[cfg(test)]
mod tests;
