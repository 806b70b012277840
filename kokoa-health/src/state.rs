//! The per-target health state machine.

use std::{fmt, num::NonZeroU32};

use serde::{Deserialize, Serialize};

use crate::Error;

/// The judged health of one target (an edge, an origin's application, one service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Not judged yet: neither threshold has been reached since the tracker was created.
    Unknown,
    /// The last `recovery` results in a row were successes (or it started healthy).
    Healthy,
    /// The last `failure` results in a row were failures (or it started unhealthy).
    Unhealthy,
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        })
    }
}

/// The result of one check run, as kept in the check history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// The target answered as expected.
    Success,
    /// The target did not answer, or answered wrongly.
    Failure,
}

/// How many consecutive results flip a [`HealthTracker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// Consecutive failures that make a target unhealthy (default 3).
    pub failure: NonZeroU32,
    /// Consecutive successes that make a target healthy again (default 3).
    pub recovery: NonZeroU32,
}

impl Thresholds {
    /// Thresholds from plain counts, refusing zero.
    ///
    /// # Errors
    /// [`Error::ZeroThreshold`] naming the count that is zero.
    pub fn new(failure: u32, recovery: u32) -> Result<Self, Error> {
        let nonzero = |value, name| NonZeroU32::new(value).ok_or(Error::ZeroThreshold { name });
        Ok(Self {
            failure: nonzero(failure, "threshold")?,
            recovery: nonzero(recovery, "recovery_threshold")?,
        })
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        const THREE: NonZeroU32 = NonZeroU32::new(3).expect("3 is not zero");
        Self {
            failure: THREE,
            recovery: THREE,
        }
    }
}

/// A change of [`HealthState`], reported once, by the result that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The state before.
    pub from: HealthState,
    /// The state after; never equal to `from`.
    pub to: HealthState,
}

/// Health of one target, judged from its consecutive check results.
///
/// `failure` failures in a row make it [`Unhealthy`](HealthState::Unhealthy), `recovery`
/// successes in a row make it [`Healthy`](HealthState::Healthy); anything shorter changes
/// nothing. [`observe`](Self::observe) returns the [`Transition`] only on the result that
/// completes the streak, so a caller acts exactly once per flip.
///
/// The initial state is the caller's choice: a new edge starts
/// [`Unknown`](HealthState::Unknown), so it is kept out of DNS until it has proven itself
/// with `recovery` successes; a control plane that restarts passes the state it had stored,
/// so that a healthy edge is not withdrawn while the streak is rebuilt.
///
/// ```
/// use kokoa_health::{CheckStatus, HealthState, HealthTracker, Thresholds};
///
/// let mut edge = HealthTracker::new(Thresholds::default(), HealthState::Healthy);
/// assert_eq!(edge.observe(CheckStatus::Failure), None);
/// assert_eq!(edge.observe(CheckStatus::Failure), None);
/// let flip = edge.observe(CheckStatus::Failure).expect("third failure flips");
/// assert_eq!(flip.to, HealthState::Unhealthy);
/// assert_eq!(edge.observe(CheckStatus::Failure), None); // already unhealthy
/// assert_eq!(edge.consecutive_failures(), 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthTracker {
    thresholds: Thresholds,
    state: HealthState,
    last: Option<CheckStatus>,
    streak: u32,
}

impl HealthTracker {
    /// A tracker in `initial` state with no results seen yet.
    pub fn new(thresholds: Thresholds, initial: HealthState) -> Self {
        Self {
            thresholds,
            state: initial,
            last: None,
            streak: 0,
        }
    }

    /// Records one result; returns the transition if this result flipped the state.
    pub fn observe(&mut self, status: CheckStatus) -> Option<Transition> {
        if self.last == Some(status) {
            self.streak = self.streak.saturating_add(1);
        } else {
            self.last = Some(status);
            self.streak = 1;
        }
        let (target, needed) = match status {
            CheckStatus::Success => (HealthState::Healthy, self.thresholds.recovery),
            CheckStatus::Failure => (HealthState::Unhealthy, self.thresholds.failure),
        };
        if self.state == target || self.streak < needed.get() {
            return None;
        }
        let from = std::mem::replace(&mut self.state, target);
        Some(Transition { from, to: target })
    }

    /// The current state.
    pub fn state(&self) -> HealthState {
        self.state
    }

    /// The thresholds in force.
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Failures in a row up to now (0 after a success): the `failure_count` of an
    /// `edge_node_unhealthy` event and the `health_check_failures` column.
    pub fn consecutive_failures(&self) -> u32 {
        self.streak_of(CheckStatus::Failure)
    }

    /// Successes in a row up to now (0 after a failure).
    pub fn consecutive_successes(&self) -> u32 {
        self.streak_of(CheckStatus::Success)
    }

    fn streak_of(&self, status: CheckStatus) -> u32 {
        if self.last == Some(status) {
            self.streak
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests;
