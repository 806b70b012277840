//! [`doubling`]: the one back-off rule every retry in Kokoa follows.

use std::time::Duration;

/// The wait before retry number `retry` (0-based): `first`, then twice as long each time,
/// never more than `max` (and never overflowing).
///
/// ```
/// use std::time::Duration;
/// use kokoa_core::doubling;
/// let s = Duration::from_secs;
/// let waits: Vec<_> = (0..6).map(|n| doubling(s(1), n, s(10))).collect();
/// assert_eq!(waits, [s(1), s(2), s(4), s(8), s(10), s(10)]);
/// assert_eq!(doubling(s(1), u32::MAX, s(3600)), s(3600));
/// ```
pub fn doubling(first: Duration, retry: u32, max: Duration) -> Duration {
    first.saturating_mul(2u32.saturating_pow(retry)).min(max)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn grows_to_its_cap_and_stays(first in 0u64..10_000, max in 0u64..100_000, n in 0u32..200) {
            let (first, max) = (Duration::from_millis(first), Duration::from_millis(max));
            let now = doubling(first, n, max);
            let next = doubling(first, n + 1, max);
            prop_assert!(now <= max);
            prop_assert!(now <= next);
            prop_assert!(next <= now.saturating_mul(2).max(first.min(max)));
        }
    }
}
