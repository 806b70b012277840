//! The async side of the reconciler: list, plan, and apply through a provider at a pace the
//! provider allows, retrying what may pass.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use kokoa_core::DnsName;
use tokio::time::{Instant, sleep};

use crate::{
    Change, Create, Delete, DesiredState, DnsProvider, Error, Plan, ProviderRecord, RecordId,
    RecordSpec, Update, Zone, plan,
};

/// A provider's request budget: `requests` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in one period.
    pub requests: u32,
    /// The period.
    pub per: Duration,
}

impl RateLimit {
    /// Cloudflare's documented API limit: 1200 requests per 5 minutes.
    pub const CLOUDFLARE: Self = Self {
        requests: 1200,
        per: Duration::from_secs(300),
    };

    /// Route53's documented API limit: 5 requests per second per account.
    pub const ROUTE53: Self = Self {
        requests: 5,
        per: Duration::from_secs(1),
    };
}

/// A token bucket: full at start (`requests` tokens), refilled evenly over `per`. Cheap to
/// clone; clones share the bucket, so reconcilers of several zones at one provider can share
/// one budget.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limit: RateLimit,
    bucket: Arc<Mutex<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    filled_at: Instant,
}

impl RateLimiter {
    /// A full bucket for `limit`. A limit of zero requests is treated as one.
    pub fn new(limit: RateLimit) -> Self {
        let limit = RateLimit {
            requests: limit.requests.max(1),
            per: limit.per,
        };
        Self {
            limit,
            bucket: Arc::new(Mutex::new(Bucket {
                tokens: f64::from(limit.requests),
                filled_at: Instant::now(),
            })),
        }
    }

    /// Waits until a request may be sent, and takes its token.
    pub async fn acquire(&self) {
        let capacity = f64::from(self.limit.requests);
        let per_second = capacity / self.limit.per.as_secs_f64().max(f64::MIN_POSITIVE);
        loop {
            let wait = {
                // Never held across an await: the sleep happens after the guard is dropped.
                let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
                let now = Instant::now();
                let refill = now.duration_since(bucket.filled_at).as_secs_f64() * per_second;
                bucket.tokens = (bucket.tokens + refill).min(capacity);
                bucket.filled_at = now;
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - bucket.tokens) / per_second)
            };
            sleep(wait).await;
        }
    }
}

/// How failed calls are retried: only [retryable](Error::is_retryable) errors, at most
/// `attempts` calls in all, waiting `base_delay`, then twice as long each time, never more
/// than `max_delay`. A `Retry-After` longer than `max_delay` ends the retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls in all, the first included (at least one is made).
    pub attempts: u32,
    /// Wait before the first retry.
    pub base_delay: Duration,
    /// Longest wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based) after `error`, or `None` to give up.
    fn delay(&self, retry: u32, error: &Error) -> Option<Duration> {
        if retry + 1 >= self.attempts || !error.is_retryable() {
            return None;
        }
        if let Error::RateLimited {
            retry_after: Some(wait),
            ..
        } = error
        {
            return (*wait <= self.max_delay).then_some(*wait);
        }
        Some(kokoa_core::doubling(self.base_delay, retry, self.max_delay))
    }
}

/// What [`Reconciler::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// The owned ids after applying: the plan's, minus deleted, plus created, with updated
    /// ids replaced. Store these; they are the input of the next plan.
    pub owned: BTreeSet<RecordId>,
    /// Records created, with their new ids.
    pub created: Vec<(RecordId, Create)>,
    /// Records updated, with their ids afterwards.
    pub updated: Vec<(RecordId, Update)>,
    /// Records deleted.
    pub deleted: Vec<Delete>,
    /// Deletes not made because a create for the same host name failed, so the name would
    /// have been left without an address.
    pub held: Vec<Delete>,
    /// Changes that failed, with the last error.
    pub failed: Vec<(Change, Error)>,
}

impl ApplyReport {
    /// Whether every change of the plan was made.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.held.is_empty()
    }
}

/// Keeps one zone's records in step with the desired state through a provider.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
/// use std::{collections::BTreeSet, sync::Arc};
/// use kokoa_core::{EdgeNodeId, Hostname};
/// use kokoa_dns::{DesiredState, EdgeState, EdgeTarget, MemoryProvider, Reconciler, Zone};
///
/// let zone = Zone { id: "z1".into(), name: Hostname::parse("hoge.com")? };
/// let provider = Arc::new(MemoryProvider::new([zone.clone()]));
/// let reconciler = Reconciler::new(provider.clone(), zone.clone());
///
/// let mut desired = DesiredState::default();
/// desired.hostnames.insert(Hostname::parse("app.hoge.com")?);
/// desired.edges.push(EdgeTarget {
///     id: EdgeNodeId::parse("edge-1")?,
///     ipv4: Some("203.0.113.10".parse()?),
///     ipv6: None,
///     state: EdgeState::Serving,
/// });
/// let plan = reconciler.plan(&desired, &BTreeSet::new()).await?;
/// let report = reconciler.apply(plan).await;
/// assert!(report.is_complete());
/// assert_eq!(provider.records(&zone).len(), 1);
/// // Nothing left to do.
/// assert!(reconciler.plan(&desired, &report.owned).await?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Reconciler {
    provider: Arc<dyn DnsProvider>,
    zone: Zone,
    limiter: Option<RateLimiter>,
    retry: RetryPolicy,
}

impl Reconciler {
    /// A reconciler for `zone` at `provider`, paced by the provider's documented
    /// [rate limit](DnsProvider::rate_limit) and the default [`RetryPolicy`].
    pub fn new(provider: Arc<dyn DnsProvider>, zone: Zone) -> Self {
        let limiter = provider.rate_limit().map(RateLimiter::new);
        Self {
            provider,
            zone,
            limiter,
            retry: RetryPolicy::default(),
        }
    }

    /// Paces calls with `limiter` instead (share one limiter between reconcilers of the same
    /// account), or not at all with `None`.
    pub fn with_rate_limiter(mut self, limiter: Option<RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Retries with `retry` instead of the default policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Lists the zone and plans the changes (see [`plan`](crate::plan())). Fails with
    /// [`Error::OutsideZone`] if a host name of `desired` is not in the zone.
    pub async fn plan(
        &self,
        desired: &DesiredState,
        owned: &BTreeSet<RecordId>,
    ) -> Result<Plan, Error> {
        let names = desired.hostnames.iter().chain(&desired.retired);
        if let Some(outside) = names.into_iter().find(|h| !self.zone.contains(h)) {
            return Err(Error::OutsideZone {
                name: outside.into(),
                zone: self.zone.name.clone(),
            });
        }
        let current = self.list(None).await?;
        Ok(plan(desired, &current, owned))
    }

    /// Applies `plan`: creates, then deletes, then TTL updates, each paced and retried. A failed
    /// change does not stop the others, except that the deletes of records kept only while
    /// their host name has another address are held when a create for that name failed.
    pub async fn apply(&self, plan: Plan) -> ApplyReport {
        let mut report = ApplyReport {
            owned: plan.owned,
            ..ApplyReport::default()
        };
        let mut failed_names: BTreeSet<DnsName> = BTreeSet::new();
        for create in plan.creates {
            match self.create_spec(&create.spec).await {
                Ok(id) => {
                    tracing::info!(record = %create.spec, %id, "created DNS record");
                    report.owned.insert(id.clone());
                    report.created.push((id, create));
                }
                Err(error) => {
                    tracing::warn!(record = %create.spec, %error, "could not create DNS record");
                    failed_names.insert(create.spec.name.clone());
                    report.failed.push((Change::Create(create), error));
                }
            }
        }
        for delete in plan.deletes {
            let name = &delete.record.spec.name;
            if delete.reason.needs_other_address() && failed_names.contains(name) {
                report.held.push(delete);
                continue;
            }
            let id = &delete.record.id;
            let result = self
                .call(|| self.provider.delete_record(&self.zone, id))
                .await;
            match result.0 {
                // Gone already is what we wanted.
                Ok(()) | Err(Error::NotFound { .. }) => {
                    tracing::info!(record = %delete.record.spec, %id, reason = %delete.reason, "deleted DNS record");
                    report.owned.remove(id);
                    report.deleted.push(delete);
                }
                Err(error) => {
                    tracing::warn!(record = %delete.record.spec, %error, "could not delete DNS record");
                    report.failed.push((Change::Delete(delete), error));
                }
            }
        }
        for update in plan.updates {
            let old = &update.current.id;
            let result = self
                .call(|| self.provider.update_record(&self.zone, old, &update.spec))
                .await;
            match result.0 {
                Ok(id) => {
                    tracing::info!(record = %update.spec, %id, "updated DNS record");
                    report.owned.remove(old);
                    report.owned.insert(id.clone());
                    report.updated.push((id, update));
                }
                Err(error) => {
                    tracing::warn!(record = %update.spec, %error, "could not update DNS record");
                    report.failed.push((Change::Update(update), error));
                }
            }
        }
        report
    }

    /// Creates one record outside a plan (a DNS-01 challenge's TXT record), paced and
    /// retried as a plan's changes are; a retried create that meets its own record made by
    /// the attempt that timed out returns that record's id.
    pub async fn create_record(&self, spec: &RecordSpec) -> Result<RecordId, Error> {
        self.create_spec(spec).await
    }

    /// Deletes one record outside a plan, paced and retried; a record gone already counts
    /// as deleted.
    pub async fn delete_record(&self, id: &RecordId) -> Result<(), Error> {
        match self
            .call(|| self.provider.delete_record(&self.zone, id))
            .await
            .0
        {
            Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a record. A create that timed out may still have been made; if the retry
    /// then hits a conflict, the record found with the same value is ours.
    async fn create_spec(&self, spec: &RecordSpec) -> Result<RecordId, Error> {
        let (result, attempts) = self
            .call(|| self.provider.create_record(&self.zone, spec))
            .await;
        match result {
            Err(Error::Conflict { .. }) if attempts > 1 => self
                .list(Some(&spec.name))
                .await?
                .into_iter()
                .find(|r| r.spec.data == spec.data)
                .map(|r| r.id)
                .ok_or_else(|| Error::NotFound {
                    provider: self.provider.name(),
                    detail: format!("{spec} after a conflicting create"),
                }),
            other => other,
        }
    }

    /// Every A, AAAA, CNAME and TXT record of the zone, listed under the rate limiter and
    /// the retry policy: the `current` input of [`plan`](crate::plan()) for callers that
    /// plan several parts of one zone from a single listing.
    pub async fn records(&self) -> Result<Vec<ProviderRecord>, Error> {
        self.list(None).await
    }

    async fn list(&self, name: Option<&DnsName>) -> Result<Vec<ProviderRecord>, Error> {
        self.call(|| self.provider.list_records(&self.zone, name))
            .await
            .0
    }

    /// Runs `op` under the rate limiter and retry policy; also returns how many calls were
    /// made.
    async fn call<T, F: Future<Output = Result<T, Error>>>(
        &self,
        // A plain closure returning a future rather than an async closure: futures built
        // from async closures are not `Send` for every lifetime (a compiler limitation),
        // and callers spawn reconciliations onto the runtime.
        mut op: impl FnMut() -> F,
    ) -> (Result<T, Error>, u32) {
        let mut retry = 0;
        loop {
            if let Some(limiter) = &self.limiter {
                limiter.acquire().await;
            }
            match op().await {
                Err(error) => match self.retry.delay(retry, &error) {
                    Some(wait) => {
                        tracing::debug!(%error, ?wait, "retrying DNS provider call");
                        sleep(wait).await;
                        retry += 1;
                    }
                    None => return (Err(error), retry + 1),
                },
                ok => return (ok, retry + 1),
            }
        }
    }
}

#[cfg(test)]
mod tests;
