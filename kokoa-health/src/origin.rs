//! The origin decision table (SPEC 8.4, "Origin decisions").

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{HealthState, Severity, TunnelStatus, is_stale};

/// Thresholds of the origin table, with the specification's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OriginRules {
    /// No heartbeat for this long raises an alert (default 60 s).
    #[serde(with = "crate::secs")]
    pub heartbeat_timeout: Duration,
    /// Disk use strictly above this percentage raises a critical alert (default 90).
    pub disk_percent: f64,
}

impl Default for OriginRules {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(60),
            disk_percent: 90.0,
        }
    }
}

/// What is known about one origin at one moment.
///
/// Unlike an edge, an origin or service in [`HealthState::Unknown`] is served normally:
/// answering 503 for every route while a restarted control plane rebuilds its streaks would
/// be an outage of its own making.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginObservation {
    /// When the observation is judged ("now").
    pub at: SystemTime,
    /// When the last heartbeat arrived (the time the origin registered if none has).
    pub last_heartbeat: SystemTime,
    /// Whether the origin's tunnels are up.
    pub tunnel: TunnelStatus,
    /// State of the tracker of the application check (`GET http://<origin_wg_ip>/health`).
    pub application: HealthState,
    /// State of each service's own check, by service name.
    pub services: BTreeMap<String, HealthState>,
    /// Disk use from the heartbeat, in percent.
    pub disk_percent: f64,
}

/// One row of the origin table that holds at the moment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OriginCondition {
    /// The tunnel is down.
    TunnelDown,
    /// The application check failed `threshold` times in a row.
    ApplicationDown,
    /// This service's check failed `threshold` times in a row.
    ServiceDown(String),
    /// No heartbeat for the heartbeat timeout.
    HeartbeatMissing,
    /// Disk use is above the limit.
    DiskFull,
}

impl OriginCondition {
    /// What must answer 503 while this holds, if anything.
    pub fn unavailable(&self) -> Option<Scope> {
        match self {
            Self::TunnelDown | Self::ApplicationDown => Some(Scope::Origin),
            Self::ServiceDown(name) => Some(Scope::Service(name.clone())),
            Self::HeartbeatMissing | Self::DiskFull => None,
        }
    }

    /// The alert this raises, if any.
    pub fn severity(&self) -> Option<Severity> {
        match self {
            Self::HeartbeatMissing => Some(Severity::Warning),
            Self::DiskFull => Some(Severity::Critical),
            Self::TunnelDown | Self::ApplicationDown | Self::ServiceDown(_) => None,
        }
    }
}

/// What a 503 covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every route of the origin.
    Origin,
    /// The routes of this service only; the others keep working.
    Service(String),
}

/// Something to do about an origin; see [`OriginVerdict::actions_since`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OriginAction {
    /// Tell every edge at once to answer 503 for this scope.
    ServeUnavailable(Scope),
    /// Tell every edge to route this scope to the origin again.
    ServeNormally(Scope),
    /// Raise an alert.
    Alert {
        /// What holds.
        condition: OriginCondition,
        /// How loud.
        severity: Severity,
    },
    /// The condition no longer holds: close its alert.
    ResolveAlert(OriginCondition),
}

/// The conditions that hold for an origin, and what follows from them.
///
/// Used like [`EdgeVerdict`](crate::EdgeVerdict): act on
/// [`actions_since`](Self::actions_since) the verdict last acted on. The default verdict has
/// no conditions: everything served, no alerts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OriginVerdict {
    /// The rows of the table that hold.
    pub conditions: BTreeSet<OriginCondition>,
}

impl OriginVerdict {
    /// Judges an observation. The disk comparison is strict (`>`) as in the table; a
    /// heartbeat exactly `heartbeat_timeout` old is missing (see [`is_stale`]).
    pub fn judge(observation: &OriginObservation, rules: &OriginRules) -> Self {
        let mut conditions = BTreeSet::new();
        if observation.tunnel == TunnelStatus::Down {
            conditions.insert(OriginCondition::TunnelDown);
        }
        if observation.application == HealthState::Unhealthy {
            conditions.insert(OriginCondition::ApplicationDown);
        }
        conditions.extend(
            observation
                .services
                .iter()
                .filter(|(_, state)| **state == HealthState::Unhealthy)
                .map(|(name, _)| OriginCondition::ServiceDown(name.clone())),
        );
        if is_stale(
            observation.last_heartbeat,
            observation.at,
            rules.heartbeat_timeout,
        ) {
            conditions.insert(OriginCondition::HeartbeatMissing);
        }
        if observation.disk_percent > rules.disk_percent {
            conditions.insert(OriginCondition::DiskFull);
        }
        Self { conditions }
    }

    /// What answers 503: [`Scope::Origin`] if the whole origin, else each service down.
    pub fn unavailable(&self) -> BTreeSet<Scope> {
        self.conditions
            .iter()
            .filter_map(OriginCondition::unavailable)
            .collect()
    }

    fn alerts(&self) -> BTreeSet<(&OriginCondition, Severity)> {
        self.conditions
            .iter()
            .filter_map(|c| Some((c, c.severity()?)))
            .collect()
    }

    /// What to do to get from `previous` to `self`: 503s first, then routes served again,
    /// then alerts raised and closed. Empty when nothing that matters changed.
    ///
    /// A service's 503 is independent of the origin's: when the origin recovers, a service
    /// still down keeps its own.
    pub fn actions_since(&self, previous: &Self) -> Vec<OriginAction> {
        let (before, now) = (previous.unavailable(), self.unavailable());
        let mut actions: Vec<_> = now
            .difference(&before)
            .cloned()
            .map(OriginAction::ServeUnavailable)
            .collect();
        actions.extend(
            before
                .difference(&now)
                .cloned()
                .map(OriginAction::ServeNormally),
        );
        let (before, now) = (previous.alerts(), self.alerts());
        actions.extend(
            now.difference(&before)
                .map(|&(condition, severity)| OriginAction::Alert {
                    condition: condition.clone(),
                    severity,
                }),
        );
        actions.extend(
            before
                .difference(&now)
                .map(|(condition, _)| OriginAction::ResolveAlert((*condition).clone())),
        );
        actions
    }
}

#[cfg(test)]
mod tests;
