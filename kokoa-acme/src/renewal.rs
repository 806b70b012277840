//! When to renew: a pure schedule over an injected clock, so it is tested without waiting.

use std::{collections::BTreeSet, fmt, time::Duration};

use kokoa_core::{Hostname, Timestamp};
use serde::{Deserialize, Serialize};

use crate::IssuedCertificate;

const DAY: u64 = 86_400;

/// A renewal window suggested by the certificate authority (ACME Renewal Information,
/// RFC 9773), for servers that offer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AriWindow {
    /// Earliest suggested renewal time.
    pub start: Timestamp,
    /// Latest suggested renewal time.
    pub end: Timestamp,
}

/// When certificates are renewed and how failed renewals are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenewalPolicy {
    /// Renew this long before expiry (`renew_days_before`, default 30 days), but never
    /// before two thirds of the lifetime have passed, so that short-lived certificates are
    /// not renewed again and again.
    pub renew_before: Duration,
    /// Wait after the first failure (default 1 minute); it doubles with each further one.
    pub first_retry: Duration,
    /// Longest wait between retries (default 6 hours).
    pub max_retry: Duration,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self::renew_days_before(30)
    }
}

impl RenewalPolicy {
    /// The default policy, renewing `days` before expiry.
    pub fn renew_days_before(days: u32) -> Self {
        Self {
            renew_before: Duration::from_secs(u64::from(days) * DAY),
            first_retry: Duration::from_secs(60),
            max_retry: Duration::from_secs(6 * 3600),
        }
    }

    /// When a certificate valid from `not_before` to `not_after` should be renewed: at the
    /// start of the CA's window when one is given (a valid one: `start <= end`, never later
    /// than expiry), otherwise `renew_before` ahead of expiry, capped at a third of the
    /// lifetime.
    pub fn next_renewal(
        &self,
        not_before: Timestamp,
        not_after: Timestamp,
        ari: Option<AriWindow>,
    ) -> Timestamp {
        if let Some(window) = ari.filter(|w| w.start <= w.end) {
            return window.start.min(not_after);
        }
        let lifetime = not_after
            .as_unix()
            .saturating_sub(not_before.as_unix())
            .max(0);
        let renew_before = i64::try_from(self.renew_before.as_secs()).unwrap_or(i64::MAX);
        let ahead = renew_before.min(lifetime / 3);
        // Between `not_before` and `not_after`, so always a valid timestamp.
        Timestamp::from_unix(not_after.as_unix() - ahead).unwrap_or(not_after)
    }

    /// How long to wait after `failures` consecutive failures (`0` and `1` both give
    /// `first_retry`): doubling, at most `max_retry`.
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1));
        self.first_retry.saturating_mul(factor).min(self.max_retry)
    }
}

/// The renewal state of one certificate, as the API shows it.
///
/// ```
/// use kokoa_acme::{CertificateStatus, RenewalPolicy};
/// use kokoa_core::Timestamp;
///
/// let issued = Timestamp::parse_rfc3339("2025-01-01T00:00:00Z")?;
/// let expires = Timestamp::parse_rfc3339("2025-04-01T00:00:00Z")?;
/// let policy = RenewalPolicy::default();
/// let mut status = CertificateStatus::new(
///     ["app.hoge.com".parse()?].into(), "CN=R11".into(), issued, expires, &policy, None);
/// assert_eq!(status.next_renewal.to_string(), "2025-03-02T00:00:00Z");
///
/// let now = status.next_renewal;
/// assert!(status.is_due(now));
/// status.record_failure(&policy, "rate limited", now);
/// assert!(!status.is_due(now));
/// assert_eq!(status.next_renewal.to_string(), "2025-03-02T00:01:00Z");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// The names the certificate covers.
    pub domains: BTreeSet<Hostname>,
    /// Who issued it.
    pub issuer: String,
    /// Start of its validity.
    pub not_before: Timestamp,
    /// End of its validity.
    pub not_after: Timestamp,
    /// The next renewal attempt.
    pub next_renewal: Timestamp,
    /// Renewal attempts that failed in a row since the last success.
    pub failures: u32,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

impl CertificateStatus {
    /// The state of a certificate that has just been obtained or loaded.
    pub fn new(
        domains: BTreeSet<Hostname>,
        issuer: String,
        not_before: Timestamp,
        not_after: Timestamp,
        policy: &RenewalPolicy,
        ari: Option<AriWindow>,
    ) -> Self {
        Self {
            domains,
            issuer,
            not_before,
            not_after,
            next_renewal: policy.next_renewal(not_before, not_after, ari),
            failures: 0,
            last_error: None,
        }
    }

    /// The state of `cert`.
    pub fn of(cert: &IssuedCertificate, policy: &RenewalPolicy, ari: Option<AriWindow>) -> Self {
        Self::new(
            cert.domains.clone(),
            cert.issuer.clone(),
            cert.not_before,
            cert.not_after,
            policy,
            ari,
        )
    }

    /// Whether a renewal should be attempted at `now`.
    pub fn is_due(&self, now: Timestamp) -> bool {
        now >= self.next_renewal
    }

    /// Records a failed attempt at `now`: the next one is after the backoff delay, and never
    /// earlier than already planned, so a failure cannot pull renewal before its window.
    pub fn record_failure(
        &mut self,
        policy: &RenewalPolicy,
        error: impl fmt::Display,
        now: Timestamp,
    ) {
        self.failures = self.failures.saturating_add(1);
        self.last_error = Some(error.to_string());
        let delay = i64::try_from(policy.retry_delay(self.failures).as_secs()).unwrap_or(i64::MAX);
        // Past the year 9999 there is nothing left to schedule: keep the current plan.
        let retry =
            Timestamp::from_unix(now.as_unix().saturating_add(delay)).unwrap_or(self.next_renewal);
        self.next_renewal = self.next_renewal.max(retry);
    }
}

#[cfg(test)]
mod tests;
