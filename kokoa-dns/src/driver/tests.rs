use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use kokoa_core::{EdgeNodeId, Hostname, RecordData};

use super::*;
use crate::{EdgeState, EdgeTarget, MemoryProvider};

/// Fails the first `failures` creates with `error()`; with `commit`, a failed create still
/// reaches the inner provider, like a request whose answer was lost.
#[derive(Debug)]
struct Flaky {
    inner: MemoryProvider,
    failures: u32,
    commit: bool,
    error: fn() -> Error,
    calls: AtomicU32,
}

#[async_trait]
impl DnsProvider for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    async fn list_zones(&self) -> Result<Vec<Zone>, Error> {
        self.inner.list_zones().await
    }
    async fn list_records(
        &self,
        zone: &Zone,
        name: Option<&DnsName>,
    ) -> Result<Vec<ProviderRecord>, Error> {
        self.inner.list_records(zone, name).await
    }
    async fn create_record(&self, zone: &Zone, spec: &RecordSpec) -> Result<RecordId, Error> {
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            if self.commit {
                self.inner.create_record(zone, spec).await?;
            }
            return Err((self.error)());
        }
        self.inner.create_record(zone, spec).await
    }
    async fn update_record(
        &self,
        zone: &Zone,
        id: &RecordId,
        spec: &RecordSpec,
    ) -> Result<RecordId, Error> {
        self.inner.update_record(zone, id, spec).await
    }
    async fn delete_record(&self, zone: &Zone, id: &RecordId) -> Result<(), Error> {
        self.inner.delete_record(zone, id).await
    }
}

fn zone() -> Zone {
    Zone {
        id: "z1".into(),
        name: Hostname::parse("hoge.com").expect("test zone"),
    }
}

fn flaky(failures: u32, commit: bool, error: fn() -> Error) -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: MemoryProvider::new([zone()]),
        failures,
        commit,
        error,
        calls: AtomicU32::new(0),
    })
}

fn one_edge() -> DesiredState {
    let mut desired = DesiredState::default();
    desired
        .hostnames
        .insert(Hostname::parse("app.hoge.com").expect("test name"));
    desired.edges.push(EdgeTarget {
        id: EdgeNodeId::parse("e1").expect("test id"),
        ipv4: Some("203.0.113.1".parse().expect("test address")),
        ipv6: None,
        state: EdgeState::Serving,
    });
    desired
}

fn rate_limited() -> Error {
    Error::RateLimited {
        provider: "flaky",
        retry_after: Some(Duration::from_secs(7)),
    }
}

fn transient() -> Error {
    Error::Transient {
        provider: "flaky",
        detail: "HTTP 502".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limited_calls_wait_as_told_and_then_succeed() -> Result<(), Error> {
    let provider = flaky(2, false, rate_limited);
    let reconciler = Reconciler::new(provider.clone(), zone());
    let started = Instant::now();
    let plan = reconciler.plan(&one_edge(), &BTreeSet::new()).await?;
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(started.elapsed(), Duration::from_secs(14));
    assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
    assert_eq!(provider.inner.records(&zone()).len(), 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn retries_are_bounded_and_failures_reported() -> Result<(), Error> {
    let provider = flaky(u32::MAX, false, transient);
    let retry = RetryPolicy {
        attempts: 3,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
    };
    let reconciler = Reconciler::new(provider.clone(), zone()).with_retry(retry);
    let started = Instant::now();
    let plan = reconciler.plan(&one_edge(), &BTreeSet::new()).await?;
    let report = reconciler.apply(plan).await;
    // Three calls, with 1 s and 2 s of backoff between them.
    assert_eq!(provider.calls.load(Ordering::SeqCst), 3);
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(report.failed.len(), 1);
    assert!(
        report.failed[0]
            .0
            .to_string()
            .starts_with("+ app.hoge.com. 30 IN A 203.0.113.1")
    );
    assert!(report.owned.is_empty());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_longest_wait_is_not_waited_for() -> Result<(), Error> {
    let provider = flaky(1, false, rate_limited);
    let retry = RetryPolicy {
        max_delay: Duration::from_secs(5),
        ..RetryPolicy::default()
    };
    let reconciler = Reconciler::new(provider.clone(), zone()).with_retry(retry);
    let plan = reconciler.plan(&one_edge(), &BTreeSet::new()).await?;
    let report = reconciler.apply(plan).await;
    assert!(matches!(report.failed[0].1, Error::RateLimited { .. }));
    assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_create_whose_answer_was_lost_is_adopted_not_duplicated() -> Result<(), Error> {
    let provider = flaky(1, true, transient);
    let reconciler = Reconciler::new(provider.clone(), zone());
    let plan = reconciler.plan(&one_edge(), &BTreeSet::new()).await?;
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    let records = provider.inner.records(&zone());
    assert_eq!(records.len(), 1);
    assert_eq!(report.owned, BTreeSet::from([records[0].id.clone()]));
    assert!(
        reconciler
            .plan(&one_edge(), &report.owned)
            .await?
            .is_empty()
    );
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_failed_create_holds_deletes_that_would_empty_the_name() -> Result<(), Error> {
    let provider = flaky(u32::MAX, false, transient);
    // An old record of an address no edge has: it may go only once the new one exists.
    let old = RecordSpec {
        name: Hostname::parse("app.hoge.com").expect("test name").into(),
        data: RecordData::A("198.51.100.1".parse().expect("test address")),
        ttl: 30,
    };
    let old_id = provider.inner.create_record(&zone(), &old).await?;
    let retry = RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    };
    let reconciler = Reconciler::new(provider.clone(), zone()).with_retry(retry);
    let plan = reconciler
        .plan(&one_edge(), &BTreeSet::from([old_id.clone()]))
        .await?;
    assert_eq!(plan.deletes.len(), 1);
    let report = reconciler.apply(plan).await;
    assert_eq!(report.held.len(), 1);
    assert!(!report.is_complete());
    assert_eq!(provider.inner.records(&zone())[0].id, old_id);
    assert_eq!(report.owned, BTreeSet::from([old_id]));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_token_bucket_spreads_requests_over_the_period() {
    let limiter = RateLimiter::new(RateLimit {
        requests: 2,
        per: Duration::from_secs(10),
    });
    let started = Instant::now();
    for _ in 0..5 {
        limiter.acquire().await;
    }
    // Two at once, then one every 5 s.
    assert_eq!(started.elapsed(), Duration::from_secs(15));
    // A clone shares the budget.
    let clone = limiter.clone();
    let before = Instant::now();
    clone.acquire().await;
    assert_eq!(before.elapsed(), Duration::from_secs(5));
}

#[tokio::test]
async fn names_outside_the_zone_are_refused() {
    let reconciler = Reconciler::new(Arc::new(MemoryProvider::new([zone()])), zone());
    let mut desired = one_edge();
    desired
        .hostnames
        .insert(Hostname::parse("app.fuga.com").expect("test name"));
    let error = reconciler
        .plan(&desired, &BTreeSet::new())
        .await
        .expect_err("outside the zone");
    assert_eq!(
        error.to_string(),
        "app.fuga.com is not in the zone hoge.com: manage it in its own zone or set its records by hand"
    );
}

/// One record outside a plan (a DNS-01 challenge): created exactly once though the
/// answers to two attempts were lost, and deleted twice without an error.
#[tokio::test(start_paused = true)]
async fn single_records_are_paced_and_retried_like_a_plan() -> Result<(), Error> {
    let provider = flaky(2, true, transient);
    let reconciler = Reconciler::new(provider.clone(), zone());
    let spec = RecordSpec {
        name: DnsName::parse("_acme-challenge.app.hoge.com").expect("test name"),
        data: RecordData::Txt(kokoa_core::TxtText::new("token").expect("test text")),
        ttl: 60,
    };
    let id = reconciler.create_record(&spec).await?;
    let records = provider.inner.records(&zone());
    assert_eq!(records.len(), 1, "made once, though two answers were lost");
    assert_eq!(records[0].id, id);
    reconciler.delete_record(&id).await?;
    assert!(provider.inner.records(&zone()).is_empty());
    reconciler.delete_record(&id).await?;
    Ok(())
}
