//! Login rate limiting per client address: a token bucket per address, kept in memory.
//!
//! It slows down guessing from one address; the lockout kept with each account in the
//! store (see `kokoa_store::Store::record_login_failure`) stops guessing against
//! one account from many addresses, and is shared by every control plane on one database.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Attempts an address may make at once.
pub const BURST: u32 = 10;
/// Then one more attempt per this long.
pub const REFILL: Duration = Duration::from_secs(6);
/// Addresses remembered at most; the idle ones go first when it is full.
const MAX_ADDRESSES: usize = 10_000;

/// The login attempts left to each client address.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl LoginLimiter {
    /// Takes one attempt for `address` at `now`; `Err(wait)` when none is left.
    pub fn attempt(&self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_ADDRESSES && !buckets.contains_key(&address) {
            // Full buckets carry no information: forget them first.
            buckets.retain(|_, b| refilled(*b, now) < f64::from(BURST));
            if buckets.len() >= MAX_ADDRESSES {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(address).or_insert(Bucket {
            tokens: f64::from(BURST),
            updated: now,
        });
        bucket.tokens = refilled(*bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(REFILL.mul_f64(1.0 - bucket.tokens))
        }
    }
}

fn refilled(bucket: Bucket, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated);
    (bucket.tokens + elapsed.as_secs_f64() / REFILL.as_secs_f64()).min(f64::from(BURST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_attempt_per_refill() {
        let limiter = LoginLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let start = Instant::now();
        for _ in 0..BURST {
            assert!(limiter.attempt(a, start).is_ok());
        }
        let wait = limiter.attempt(a, start).unwrap_err();
        assert!(wait <= REFILL && wait > Duration::ZERO, "{wait:?}");
        assert!(
            limiter.attempt(b, start).is_ok(),
            "another address is not limited"
        );
        assert!(limiter.attempt(a, start + REFILL).is_ok());
        assert!(limiter.attempt(a, start + REFILL).is_err());
    }
}
