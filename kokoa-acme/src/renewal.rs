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

impl AriWindow {
    /// Whether the window is usable: RFC 9773 §4.2 makes one whose end is not after its
    /// start invalid, to be treated as no answer at all.
    pub fn is_valid(&self) -> bool {
        self.start < self.end
    }

    /// A time in the window, `start <= t < end`, chosen by `random`: uniformly distributed
    /// when `random` is, as RFC 9773 §4.2 asks so that renewals spread over the window.
    /// `None` for an invalid window.
    pub fn pick(&self, random: u64) -> Option<Timestamp> {
        let span = u64::try_from(self.end.as_unix() - self.start.as_unix())
            .ok()
            .filter(|&span| span > 0)?;
        // `offset < span`, so the sum lies inside the window.
        let offset = i64::try_from(random % span).ok()?;
        Timestamp::from_unix(self.start.as_unix() + offset).ok()
    }
}

/// The CA's answer about one certificate (RFC 9773 §4.2), from
/// [`CertificateManager::renewal_info`](crate::CertificateManager::renewal_info).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalInfo {
    /// The suggested renewal window.
    pub window: AriWindow,
    /// A page explaining the window, when the CA gave one (e.g. after an incident).
    pub explanation_url: Option<String>,
    /// When to ask again, from the `Retry-After` header.
    pub retry_after: Duration,
}

/// Bounds on the CA's `Retry-After`, as RFC 9773 §4.3.2 suggests: more often than once a
/// minute would hammer the CA, less often than once a day could miss a revocation.
const ARI_MIN_RETRY: Duration = Duration::from_secs(60);
const ARI_MAX_RETRY: Duration = Duration::from_secs(DAY);

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

    /// When a certificate valid from `not_before` to `not_after` should be renewed when the
    /// CA suggests no window: `renew_before` ahead of expiry, capped at a third of the
    /// lifetime.
    pub fn next_renewal(&self, not_before: Timestamp, not_after: Timestamp) -> Timestamp {
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
        kokoa_core::doubling(self.first_retry, failures.saturating_sub(1), self.max_retry)
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
///     ["app.hoge.com".parse()?].into(), "CN=R11".into(), issued, expires, &policy);
/// assert_eq!(status.next_renewal.to_string(), "2025-03-02T00:00:00Z");
///
/// let now = status.next_renewal;
/// assert!(status.is_due(now));
/// status.record_failure(&policy, "rate limited", now);
/// assert!(!status.is_due(now));
/// assert_eq!(status.next_renewal.to_string(), "2025-03-02T00:01:00Z");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// With a CA that offers renewal information (RFC 9773), a random time in its window
/// replaces the policy's:
///
/// ```
/// use std::time::Duration;
/// use kokoa_acme::{AriWindow, CertificateStatus, RenewalInfo, RenewalPolicy};
/// use kokoa_core::Timestamp;
///
/// let at = Timestamp::parse_rfc3339;
/// let policy = RenewalPolicy::default();
/// let mut status = CertificateStatus::new(["app.hoge.com".parse()?].into(), "CN=R11".into(),
///     at("2025-01-01T00:00:00Z")?, at("2025-04-01T00:00:00Z")?, &policy);
/// let now = at("2025-01-01T00:05:00Z")?;
/// assert!(status.is_renewal_info_due(now)); // ask right after issuance
///
/// let window = AriWindow { start: at("2025-03-01T00:00:00Z")?, end: at("2025-03-03T00:00:00Z")? };
/// let info = RenewalInfo { window, explanation_url: None, retry_after: Duration::from_secs(21600) };
/// status.record_renewal_info(&policy, info, now, 86_400 + 3_600); // the random number
/// assert_eq!(status.next_renewal.to_string(), "2025-03-02T01:00:00Z");
/// assert_eq!(status.ari_next_check.unwrap().to_string(), "2025-01-01T06:05:00Z");
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
    /// The CA's suggested renewal window, once it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ari_window: Option<AriWindow>,
    /// The CA's page explaining its window, if it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ari_explanation_url: Option<String>,
    /// When to ask the CA for its renewal window (again); `None` once it turned out to
    /// offer no renewal information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ari_next_check: Option<Timestamp>,
    /// Requests for the renewal window that failed in a row.
    #[serde(default)]
    pub ari_failures: u32,
}

impl CertificateStatus {
    /// The state of a certificate that has just been obtained or loaded: renewal planned by
    /// `policy`, and renewal information to be asked for at once (RFC 9773 §4.3.2).
    pub fn new(
        domains: BTreeSet<Hostname>,
        issuer: String,
        not_before: Timestamp,
        not_after: Timestamp,
        policy: &RenewalPolicy,
    ) -> Self {
        Self {
            domains,
            issuer,
            not_before,
            not_after,
            next_renewal: policy.next_renewal(not_before, not_after),
            failures: 0,
            last_error: None,
            ari_window: None,
            ari_explanation_url: None,
            ari_next_check: Some(not_before),
            ari_failures: 0,
        }
    }

    /// The state of `cert`.
    pub fn of(cert: &IssuedCertificate, policy: &RenewalPolicy) -> Self {
        Self::new(
            cert.domains.clone(),
            cert.issuer.clone(),
            cert.not_before,
            cert.not_after,
            policy,
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
        let retry = after(now, policy.retry_delay(self.failures)).unwrap_or(self.next_renewal);
        self.next_renewal = self.next_renewal.max(retry);
    }

    /// Whether the CA's renewal window should be asked for at `now`: the planned check has
    /// come, and the certificate has not expired (RFC 9773 §4.3.2 stops there).
    pub fn is_renewal_info_due(&self, now: Timestamp) -> bool {
        self.ari_next_check.is_some_and(|check| now >= check) && now <= self.not_after
    }

    /// Plans renewal by the CA's answer at `now` (RFC 9773 §4.2).
    ///
    /// A new window gets a renewal time picked inside it by `random` (pass a uniformly
    /// random number), never after expiry, and never before a retry that is already
    /// planned after a failure. The same window as before keeps the time picked then: picking
    /// again at every check would pull renewals towards the window's start. An invalid
    /// window counts as a failed request. The next check follows `Retry-After`, kept
    /// between a minute and a day.
    pub fn record_renewal_info(
        &mut self,
        policy: &RenewalPolicy,
        info: RenewalInfo,
        now: Timestamp,
        random: u64,
    ) {
        let Some(picked) = info.window.pick(random) else {
            self.record_renewal_info_failure(policy, now);
            return;
        };
        self.ari_failures = 0;
        self.ari_explanation_url = info.explanation_url;
        let retry = info.retry_after.clamp(ARI_MIN_RETRY, ARI_MAX_RETRY);
        self.ari_next_check = after(now, retry).or(self.ari_next_check);
        if self.ari_window == Some(info.window) {
            return;
        }
        self.ari_window = Some(info.window);
        let picked = picked.min(self.not_after);
        self.next_renewal = if self.failures > 0 {
            picked.max(self.next_renewal)
        } else {
            picked
        };
    }

    /// Records that asking for the renewal window failed at `now` (the CA answered an
    /// error, or could not be reached): the renewal plan stays as it was, and the next
    /// check backs off like renewal attempts do (`policy.retry_delay`).
    pub fn record_renewal_info_failure(&mut self, policy: &RenewalPolicy, now: Timestamp) {
        self.ari_failures = self.ari_failures.saturating_add(1);
        let retry = policy.retry_delay(self.ari_failures);
        self.ari_next_check = after(now, retry).or(self.ari_next_check);
    }

    /// Records that the CA offers no renewal information: the policy's plan holds, and the
    /// CA is not asked again for this certificate.
    pub fn record_no_renewal_info(&mut self) {
        self.ari_next_check = None;
    }
}

/// `now + delay`, or `None` past the year 9999, where there is nothing left to schedule.
fn after(now: Timestamp, delay: Duration) -> Option<Timestamp> {
    let delay = i64::try_from(delay.as_secs()).unwrap_or(i64::MAX);
    Timestamp::from_unix(now.as_unix().saturating_add(delay)).ok()
}

#[cfg(test)]
mod tests;
