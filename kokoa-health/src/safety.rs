//! Guards that keep the automation from causing the outage it exists to prevent.
//!
//! - [`observed_since`]: a heartbeat is judged missing only from when the observer could
//!   have received one. A control plane that was down (or cut off from its database) for
//!   minutes must not condemn every edge for heartbeats it could not hear.
//! - [`ObserverGuard`]: when a large share of the edges looks unhealthy at once, the observer
//!   (its network, its resolver, its clock) is the likelier fault, as with Envoy's panic
//!   threshold: nothing more is taken out of DNS and nothing is destroyed until the share
//!   drops again.
//! - [`FlapDamper`]: a target whose state keeps flipping changes the edges' configuration
//!   at most a bounded number of times per window, like route-flap damping (RFC 2439).

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The time a heartbeat is judged from: the last one received, but never earlier than
/// `observing_since`, the moment this observer could first have received one (it became
/// the leader, it started, its database answered again).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use kokoa_health::{is_stale, observed_since};
///
/// let last = SystemTime::UNIX_EPOCH;
/// // The control plane was down for 3 minutes and leads again since `back`.
/// let back = last + Duration::from_secs(180);
/// let now = back + Duration::from_secs(5);
/// assert!(is_stale(last, now, Duration::from_secs(30)));
/// assert!(!is_stale(observed_since(Some(last), back), now, Duration::from_secs(30)));
/// ```
pub fn observed_since(
    last_heartbeat: Option<SystemTime>,
    observing_since: SystemTime,
) -> SystemTime {
    last_heartbeat.map_or(observing_since, |last| last.max(observing_since))
}

/// When the observer, not the edges, is suspect.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObserverGuard {
    /// The observer is suspect when strictly more than this percentage of the judged edges
    /// looks unhealthy at once (default 50, as Envoy's panic threshold). 100 turns the
    /// guard off.
    pub max_unhealthy_percent: f64,
    /// The guard needs at least this many judged edges to say anything (default 2): with
    /// a single edge there is nothing to compare.
    pub min_edges: usize,
}

impl Default for ObserverGuard {
    fn default() -> Self {
        Self {
            max_unhealthy_percent: 50.0,
            min_edges: 2,
        }
    }
}

impl ObserverGuard {
    /// Whether `unhealthy` edges out of `judged` point at the observer.
    ///
    /// ```
    /// use kokoa_health::ObserverGuard;
    ///
    /// let guard = ObserverGuard::default();
    /// assert!(!guard.suspects(1, 2), "one of two edges down is an edge's fault");
    /// assert!(guard.suspects(2, 2), "every edge down at once: suspect the observer");
    /// assert!(guard.suspects(3, 5));
    /// assert!(!guard.suspects(1, 1), "a single edge has nothing to compare with");
    /// ```
    pub fn suspects(&self, unhealthy: usize, judged: usize) -> bool {
        judged >= self.min_edges.max(1)
            && (unhealthy as f64) * 100.0 > self.max_unhealthy_percent * judged as f64
    }
}

/// How often a target's state may change the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Damping {
    /// Changes allowed within one window (default 4).
    pub max_changes: u32,
    /// The window (default 60 s).
    #[serde(with = "crate::secs")]
    pub window: Duration,
}

impl Default for Damping {
    fn default() -> Self {
        Self {
            max_changes: 4,
            window: Duration::from_secs(60),
        }
    }
}

/// The recent changes of one target, to decide whether the next one may happen now.
/// Serde-ready, so it can be kept between rounds and across restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlapDamper {
    /// When the allowed changes happened, oldest first (seconds since the Unix epoch).
    changes: Vec<u64>,
    /// Whether a change is being held back now.
    held: bool,
}

/// What [`FlapDamper::offer`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Damped {
    /// The change may happen now.
    Allowed,
    /// The change is held back; this is the first refusal since the last allowed change
    /// (tell someone once).
    HeldFirst,
    /// The change is still held back.
    Held,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl FlapDamper {
    /// Offers a change at `now`: allowed while fewer than `damping.max_changes` were
    /// allowed in the window before `now`, held back otherwise. A held change is offered
    /// again later by the caller (its state is still different then).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use kokoa_health::{Damped, Damping, FlapDamper};
    ///
    /// let damping = Damping { max_changes: 2, window: Duration::from_secs(60) };
    /// let mut damper = FlapDamper::default();
    /// let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    /// assert_eq!(damper.offer(t0, &damping), Damped::Allowed);
    /// assert_eq!(damper.offer(t0 + Duration::from_secs(1), &damping), Damped::Allowed);
    /// assert_eq!(damper.offer(t0 + Duration::from_secs(2), &damping), Damped::HeldFirst);
    /// assert_eq!(damper.offer(t0 + Duration::from_secs(3), &damping), Damped::Held);
    /// assert_eq!(damper.offer(t0 + Duration::from_secs(61), &damping), Damped::Allowed);
    /// ```
    pub fn offer(&mut self, now: SystemTime, damping: &Damping) -> Damped {
        let now = unix_secs(now);
        let window = damping.window.as_secs();
        // A change counts while it is less than a window old.
        self.changes.retain(|&t| t <= now && now - t < window);
        if self.changes.len() < damping.max_changes as usize {
            self.changes.push(now);
            self.held = false;
            Damped::Allowed
        } else if self.held {
            Damped::Held
        } else {
            self.held = true;
            Damped::HeldFirst
        }
    }

    /// Whether a change is being held back.
    pub fn is_holding(&self) -> bool {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_heartbeat_floor_is_the_later_of_the_two() {
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(observed_since(None, t(10)), t(10));
        assert_eq!(observed_since(Some(t(5)), t(10)), t(10));
        assert_eq!(observed_since(Some(t(15)), t(10)), t(15));
    }

    #[test]
    fn the_guard_can_be_turned_off() {
        let off = ObserverGuard {
            max_unhealthy_percent: 100.0,
            min_edges: 2,
        };
        assert!(!off.suspects(10, 10));
    }

    proptest! {
        /// Whatever the offers, no window ever holds more allowed changes than the limit,
        /// and an offer after a quiet window is always allowed.
        #[test]
        fn damping_bounds_changes_per_window(
            gaps in proptest::collection::vec(0u64..40, 1..80),
            max in 1u32..6,
            window in 1u64..90,
        ) {
            let damping = Damping { max_changes: max, window: Duration::from_secs(window) };
            let mut damper = FlapDamper::default();
            let mut at = 1_000_000u64;
            let mut allowed = Vec::new();
            for gap in gaps {
                at += gap;
                let quiet = allowed.last().is_none_or(|&last: &u64| at - last >= window);
                let now = SystemTime::UNIX_EPOCH + Duration::from_secs(at);
                let result = damper.offer(now, &damping);
                if quiet {
                    prop_assert_eq!(result, Damped::Allowed);
                }
                if result == Damped::Allowed {
                    allowed.push(at);
                }
            }
            for (i, &start) in allowed.iter().enumerate() {
                let within = allowed[i..].iter().take_while(|&&t| t - start < window).count();
                prop_assert!(within <= max as usize, "{within} changes within {window} s");
            }
        }

        /// The guard suspects the observer exactly above its share.
        #[test]
        fn the_guard_fires_above_its_share(judged in 0usize..50, unhealthy_seed in 0usize..50, percent in 0u32..=100) {
            let unhealthy = unhealthy_seed.min(judged);
            let guard = ObserverGuard { max_unhealthy_percent: f64::from(percent), min_edges: 2 };
            let expected = judged >= 2 && unhealthy * 100 > percent as usize * judged;
            prop_assert_eq!(guard.suspects(unhealthy, judged), expected);
        }
    }
}
