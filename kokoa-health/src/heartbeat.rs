//! Signals derived from heartbeats: staleness and sustained CPU load.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Tunnel status as a heartbeat reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelStatus {
    /// The WireGuard tunnel carries traffic.
    Up,
    /// It does not.
    Down,
}

/// Whether a heartbeat last received at `last_heartbeat` is too old at `now`.
///
/// Stale from the moment the age reaches `timeout` (inclusive): with the edge's 30 s, a
/// heartbeat 29 s old is fresh and one 30 s old is stale, because by then there has been "no
/// heartbeat for 30 s". A heartbeat stamped after `now` (clocks stepped back) counts as
/// fresh. For a node that has never sent one, pass the time it reported ready.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use kokoa_health::is_stale;
///
/// let last = SystemTime::UNIX_EPOCH;
/// let timeout = Duration::from_secs(30);
/// assert!(!is_stale(last, last + Duration::from_secs(29), timeout));
/// assert!(is_stale(last, last + Duration::from_secs(30), timeout));
/// ```
pub fn is_stale(last_heartbeat: SystemTime, now: SystemTime, timeout: Duration) -> bool {
    now.duration_since(last_heartbeat)
        .is_ok_and(|age| age >= timeout)
}

/// When CPU load counts as an overload: above `percent` for at least `window`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuRule {
    /// Load strictly above this is high (default 90).
    pub percent: f64,
    /// How long the load must stay high (default 300 s).
    #[serde(with = "crate::secs")]
    pub window: Duration,
}

impl Default for CpuRule {
    fn default() -> Self {
        Self {
            percent: 90.0,
            window: Duration::from_secs(5 * 60),
        }
    }
}

/// Follows the CPU samples of one node's heartbeats and says when the load has stayed high
/// for the whole window.
///
/// Only the start of the current high streak is kept: a sample at or below the threshold
/// ends the streak, and a sample older than the newest one seen is ignored, because
/// heartbeats can arrive out of order.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use kokoa_health::{CpuRule, CpuTracker};
///
/// let start = SystemTime::UNIX_EPOCH;
/// let mut cpu = CpuTracker::new(CpuRule::default());
/// for secs in (0..=300).step_by(5) {
///     cpu.record(start + Duration::from_secs(secs), 95.0);
/// }
/// assert!(cpu.is_overloaded());
/// cpu.record(start + Duration::from_secs(305), 40.0);
/// assert!(!cpu.is_overloaded());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CpuTracker {
    rule: CpuRule,
    newest: Option<SystemTime>,
    high_since: Option<SystemTime>,
}

impl CpuTracker {
    /// A tracker that has seen no sample.
    pub fn new(rule: CpuRule) -> Self {
        Self {
            rule,
            newest: None,
            high_since: None,
        }
    }

    /// Records the load a heartbeat stamped `at` reported.
    pub fn record(&mut self, at: SystemTime, cpu_percent: f64) {
        if self.newest.is_some_and(|newest| at < newest) {
            return;
        }
        self.newest = Some(at);
        if cpu_percent > self.rule.percent {
            self.high_since.get_or_insert(at);
        } else {
            self.high_since = None;
        }
    }

    /// How long the samples have been high, from the first high sample of the streak to
    /// the newest sample; `None` when the newest sample is not high.
    pub fn high_for(&self) -> Option<Duration> {
        let since = self.high_since?;
        let newest = self.newest?;
        Some(newest.duration_since(since).unwrap_or_default())
    }

    /// Whether the load has been high for at least the rule's window.
    pub fn is_overloaded(&self) -> bool {
        self.high_for().is_some_and(|high| high >= self.rule.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EDGE_TIMEOUT: Duration = Duration::from_secs(30);
    const ORIGIN_TIMEOUT: Duration = Duration::from_secs(60);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn edge_heartbeat_is_fresh_at_29_s_and_stale_at_30_s() {
        assert!(!is_stale(at(0), at(0), EDGE_TIMEOUT));
        assert!(!is_stale(at(0), at(29), EDGE_TIMEOUT));
        assert!(!is_stale(
            at(0),
            at(30) - Duration::from_millis(1),
            EDGE_TIMEOUT
        ));
        assert!(is_stale(at(0), at(30), EDGE_TIMEOUT));
        assert!(is_stale(at(0), at(31), EDGE_TIMEOUT));
    }

    #[test]
    fn origin_heartbeat_is_fresh_at_59_s_and_stale_at_60_s() {
        assert!(!is_stale(at(0), at(59), ORIGIN_TIMEOUT));
        assert!(is_stale(at(0), at(60), ORIGIN_TIMEOUT));
    }

    #[test]
    fn heartbeat_from_the_future_is_fresh() {
        assert!(!is_stale(at(100), at(0), EDGE_TIMEOUT));
    }

    fn tracker_fed(samples: &[(u64, f64)]) -> CpuTracker {
        let mut cpu = CpuTracker::new(CpuRule::default());
        for &(secs, percent) in samples {
            cpu.record(at(secs), percent);
        }
        cpu
    }

    #[test]
    fn cpu_above_90_for_5_minutes_is_an_overload() {
        let high: Vec<_> = (0..=60).map(|i| (i * 5, 95.0)).collect();
        let cpu = tracker_fed(&high[..60]);
        assert_eq!(cpu.high_for(), Some(Duration::from_secs(295)));
        assert!(!cpu.is_overloaded());
        assert!(tracker_fed(&high).is_overloaded());
    }

    #[test]
    fn one_sample_at_or_below_90_restarts_the_window() {
        let cpu = tracker_fed(&[(0, 99.0), (200, 90.0), (210, 99.0), (500, 99.0)]);
        assert_eq!(cpu.high_for(), Some(Duration::from_secs(290)));
        assert!(!cpu.is_overloaded());
        assert!(
            tracker_fed(&[(0, 99.0), (300, 99.0), (305, 50.0)])
                .high_for()
                .is_none()
        );
    }

    #[test]
    fn a_late_heartbeat_does_not_reset_the_window() {
        let cpu = tracker_fed(&[(0, 95.0), (300, 95.0), (100, 10.0)]);
        assert!(cpu.is_overloaded());
    }

    #[test]
    fn no_samples_is_no_overload() {
        assert!(!tracker_fed(&[]).is_overloaded());
        assert_eq!(tracker_fed(&[]).high_for(), None);
    }
}
