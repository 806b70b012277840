//! Traffic figures that add up: requests, 5xx errors and a latency histogram with fixed
//! bounds, counted per host name by the edges, summed per minute and per hour by the
//! control plane, per host name and per edge (SPEC §8.5, the built-in analytics).
//!
//! Every figure is a sum, so counts from several edges, heartbeats and control planes
//! merge in any order, and the 95th percentile of any sum is read from its histogram.
//!
//! ```
//! use kokoa_core::TrafficCounts;
//! let mut a = TrafficCounts::default();
//! a.observe(200, Some(0.004));
//! let mut b = TrafficCounts::default();
//! b.observe(502, Some(0.3));
//! a.add(&b);
//! assert_eq!((a.requests, a.errors), (2, 1));
//! assert!(a.p95_ms().unwrap() > 250.0);
//! ```

use serde::{Deserialize, Serialize};

use crate::{EdgeNodeId, Timestamp};

/// Upper bounds (milliseconds) of the latency buckets; one more bucket takes the rest.
pub const LATENCY_BOUNDS_MS: [u32; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000];

/// Number of latency buckets ([`LATENCY_BOUNDS_MS`] and one above the last bound).
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// Requests, errors and latencies of a stretch of time, as a sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficCounts {
    /// Requests answered.
    pub requests: u64,
    /// Of those, answered with a 5xx status.
    pub errors: u64,
    /// Requests by how long they took: `latency[i]` counts those at most
    /// `LATENCY_BOUNDS_MS[i]` (and above the bound before); the last, the slower ones.
    /// Requests without a measured time are not in it.
    pub latency: [u64; LATENCY_BUCKETS],
}

impl TrafficCounts {
    /// Counts one request answered with `status` after `seconds` (when measured).
    pub fn observe(&mut self, status: u16, seconds: Option<f64>) {
        self.requests += 1;
        if (500..600).contains(&status) {
            self.errors += 1;
        }
        if let Some(seconds) = seconds.filter(|s| s.is_finite() && *s >= 0.0) {
            let ms = seconds * 1000.0;
            let bucket = LATENCY_BOUNDS_MS
                .iter()
                .position(|bound| ms <= f64::from(*bound))
                .unwrap_or(LATENCY_BUCKETS - 1);
            self.latency[bucket] += 1;
        }
    }

    /// Adds `other` to these counts (saturating).
    pub fn add(&mut self, other: &Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.errors = self.errors.saturating_add(other.errors);
        for (mine, theirs) in self.latency.iter_mut().zip(other.latency) {
            *mine = mine.saturating_add(theirs);
        }
    }

    /// Requests with a measured time: the histogram's total (saturating).
    pub fn timed(&self) -> u64 {
        self.latency
            .iter()
            .fold(0u64, |sum, n| sum.saturating_add(*n))
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The 95th percentile latency in milliseconds, interpolated within its bucket as
    /// Prometheus's `histogram_quantile` does (the last bound when it falls above it);
    /// `None` without measured requests.
    pub fn p95_ms(&self) -> Option<f64> {
        self.quantile_ms(0.95)
    }

    /// The `q` quantile (0–1) latency in milliseconds; see [`TrafficCounts::p95_ms`].
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.timed();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, count) in self.latency.iter().enumerate() {
            if *count > 0 && below.saturating_add(*count) as f64 >= rank {
                let Some(upper) = LATENCY_BOUNDS_MS.get(i) else {
                    return Some(f64::from(LATENCY_BOUNDS_MS[LATENCY_BOUNDS_MS.len() - 1]));
                };
                let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_MS[i - 1] };
                let share = ((rank - below as f64) / *count as f64).clamp(0.0, 1.0);
                return Some(f64::from(lower) + f64::from(upper - lower) * share);
            }
            below = below.saturating_add(*count);
        }
        None
    }
}

/// What an edge counted for one host name since its previous heartbeat: the route's name,
/// or `other` for every `Host` no route has (in a heartbeat's `traffic`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostTraffic {
    /// The route's host name as configured (`*.hoge.com` for a wildcard), or `other`.
    pub hostname: String,
    /// The figures.
    #[serde(flatten)]
    pub counts: TrafficCounts,
}

/// What a traffic series is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrafficScope {
    /// One route's host name as edges count it (lowercase; `*.hoge.com` for a wildcard
    /// route), over every edge.
    Host(String),
    /// One edge, over every host name.
    Edge(EdgeNodeId),
}

impl TrafficScope {
    /// `host` or `edge`, as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Host(_) => "host",
            Self::Edge(_) => "edge",
        }
    }

    /// The host name or the edge's id, as stored.
    pub fn key(&self) -> String {
        match self {
            Self::Host(host) => host.clone(),
            Self::Edge(id) => id.to_string(),
        }
    }
}

/// How long the buckets of a series are, and how long they are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrafficResolution {
    /// One-minute buckets, kept 24 hours.
    Minute,
    /// One-hour buckets, kept 30 days.
    Hour,
}

impl TrafficResolution {
    /// Both resolutions.
    pub const ALL: [Self; 2] = [Self::Minute, Self::Hour];

    /// Length of a bucket, in seconds.
    pub fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3600,
        }
    }

    /// How long buckets are kept, in seconds.
    pub fn retention_seconds(self) -> i64 {
        match self {
            Self::Minute => 24 * 3600,
            Self::Hour => 30 * 24 * 3600,
        }
    }

    /// The start of the bucket `at` falls in.
    ///
    /// ```
    /// use kokoa_core::{Timestamp, TrafficResolution};
    /// let t = Timestamp::from_unix(3_725)?;
    /// assert_eq!(TrafficResolution::Minute.bucket_start(t).as_unix(), 3_720);
    /// assert_eq!(TrafficResolution::Hour.bucket_start(t).as_unix(), 3_600);
    /// # Ok::<(), kokoa_core::Error>(())
    /// ```
    pub fn bucket_start(self, at: Timestamp) -> Timestamp {
        let t = at.as_unix();
        at.plus_secs(-t.rem_euclid(self.seconds()))
    }

    /// As stored: the bucket length in seconds.
    pub fn code(self) -> i64 {
        self.seconds()
    }
}

/// Counts to add to one bucket of one series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficRow {
    /// The series' resolution.
    pub resolution: TrafficResolution,
    /// What the series is about.
    pub scope: TrafficScope,
    /// The bucket's start ([`TrafficResolution::bucket_start`]).
    pub start: Timestamp,
    /// What to add.
    pub counts: TrafficCounts,
}

/// One bucket of a series as read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrafficPoint {
    /// The bucket's start.
    pub start: Timestamp,
    /// Its sums.
    #[serde(flatten)]
    pub counts: TrafficCounts,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_take_their_bounds_inclusive() {
        let mut c = TrafficCounts::default();
        for seconds in [0.0, 0.005, 0.0051, 10.0, 10.5] {
            c.observe(200, Some(seconds));
        }
        c.observe(200, None);
        assert_eq!(c.requests, 6);
        assert_eq!(c.latency[0], 2);
        assert_eq!(c.latency[1], 1);
        assert_eq!(c.latency[10], 1);
        assert_eq!(c.latency[11], 1);
    }

    #[test]
    fn p95_interpolates_within_its_bucket() {
        let mut c = TrafficCounts::default();
        // 100 requests between 50 and 100 ms: the 95th sits 95 % into that bucket.
        c.latency[4] = 100;
        assert_eq!(c.p95_ms(), Some(50.0 + 50.0 * 0.95));
        // Slower than the last bound reads as the last bound.
        c.latency[11] = 10_000;
        assert_eq!(c.p95_ms(), Some(10_000.0));
        assert_eq!(TrafficCounts::default().p95_ms(), None);
    }

    proptest! {
        #[test]
        fn adding_is_the_same_in_any_order(
            a in proptest::collection::vec((100u16..600, proptest::option::of(0.0f64..20.0)), 0..40),
            split in 0usize..40,
        ) {
            let mut whole = TrafficCounts::default();
            for (status, s) in &a {
                whole.observe(*status, *s);
            }
            let split = split.min(a.len());
            let (mut left, mut right) = (TrafficCounts::default(), TrafficCounts::default());
            for (status, s) in &a[..split] {
                left.observe(*status, *s);
            }
            for (status, s) in &a[split..] {
                right.observe(*status, *s);
            }
            right.add(&left);
            prop_assert_eq!(right, whole);
            prop_assert!(whole.errors <= whole.requests);
            prop_assert!(whole.timed() <= whole.requests);
        }

        #[test]
        fn quantiles_grow_with_q(counts in proptest::array::uniform12(0u64..50), q in 0.0f64..1.0) {
            let c = TrafficCounts { requests: counts.iter().sum(), errors: 0, latency: counts };
            match (c.quantile_ms(q), c.quantile_ms((q + 0.05).min(1.0))) {
                (Some(low), Some(high)) => prop_assert!(low <= high + 1e-9),
                (None, None) => prop_assert_eq!(c.requests, 0),
                other => prop_assert!(false, "{other:?}"),
            }
        }
    }
}
