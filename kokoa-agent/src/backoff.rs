//! Exponential back-off with jitter between retries.

use std::time::Duration;

use rand_core::{OsRng, RngCore as _};

/// Exponential back-off with jitter: each pause is drawn from the upper half of the current
/// step, which doubles from `initial` up to `max`. The jitter keeps a fleet of nodes from
/// hitting a recovering control plane in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Pauses since the last reset.
    taken: u32,
}

impl Backoff {
    /// A back-off starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            taken: 0,
        }
    }

    /// The next pause, between half the current step and the step itself.
    pub fn next_delay(&mut self) -> Duration {
        let step = kokoa_core::doubling(self.initial, self.taken, self.max);
        self.taken = self.taken.saturating_add(1);
        let half = step / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = if nanos == 0 {
            0
        } else {
            OsRng.next_u64() % (nanos + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.taken = 0;
    }

    /// The pause after a failed request: within `reconnect` (jittered from half of it) when
    /// the control plane could not be reached at all — it restarts, and nodes must be back
    /// the moment it answers — and the next growing step otherwise.
    pub fn after_failure(&mut self, unreachable: bool, reconnect: Duration) -> Duration {
        if unreachable {
            self.reset();
            Backoff::new(reconnect, reconnect).next_delay()
        } else {
            self.next_delay()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn an_unreachable_control_plane_is_asked_again_within_reconnect() {
        let reconnect = Duration::from_secs(1);
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..5 {
            backoff.next_delay();
        }
        for _ in 0..50 {
            let delay = backoff.after_failure(true, reconnect);
            assert!(delay >= reconnect / 2 && delay <= reconnect, "{delay:?}");
        }
        // An answer with an error grows the back-off again, from the start.
        let delay = backoff.after_failure(false, reconnect);
        assert!(delay <= Duration::from_secs(1), "{delay:?}");
        let delay = backoff.after_failure(false, reconnect);
        assert!(delay >= Duration::from_secs(1), "{delay:?}");
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let steps = [1, 2, 4, 8, 16, 30, 30];
        for _ in 0..20 {
            for step in steps {
                let step = Duration::from_secs(step);
                let delay = backoff.next_delay();
                assert!(
                    delay >= step / 2 && delay <= step,
                    "{delay:?} for step {step:?}"
                );
            }
            backoff.reset();
        }
        // Jitter: a fleet does not retry in lockstep.
        let delays: BTreeSet<Duration> = (0..10)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(30)).next_delay())
            .collect();
        assert!(delays.len() > 1);
    }
}
