//! The metrics collector (SPEC §8.5): the built-in traffic analytics.
//!
//! Edges send what they counted since their previous heartbeat, by host name. Each control
//! plane sums what it receives in memory by minute and, every [`FLUSH`], adds the sums to
//! the store's one-minute and one-hour buckets, per route host name (over every edge) and
//! per edge (over every host name). The store's buckets are sums, so any number of control
//! planes add to them in any order. Host names that are no route's are dropped then, so
//! the number of series is bounded by the configuration. Old buckets are pruned with the
//! other retention ([`prune`]): minutes after a day, hours after 30 days.
//!
//! What a control plane holds in memory is lost when it stops uncleanly (at most one
//! [`FLUSH`]); while the store does not answer it keeps at most [`MAX_PENDING`] sums.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use kokoa_core::{
    EdgeNodeId, HostTraffic, Timestamp, TrafficCounts, TrafficResolution, TrafficRow, TrafficScope,
};
use tokio::sync::watch;

use crate::{Module, Runtime, sleep_or_stop};

/// How often each control plane writes what it summed.
pub const FLUSH: Duration = Duration::from_secs(5);

/// Sums kept in memory at most (a store that does not answer for long); the oldest
/// minutes are dropped beyond it.
pub const MAX_PENDING: usize = 50_000;

/// The label edges count requests under when no route has their `Host`.
const OTHER: &str = "other";

/// What this control plane received and has not written yet.
#[derive(Debug, Default)]
pub struct TrafficLog {
    pending: Mutex<BTreeMap<(Timestamp, TrafficScope), TrafficCounts>>,
}

impl TrafficLog {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<(Timestamp, TrafficScope), TrafficCounts>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds what `edge` counted, received at `at`, to the minute of `at`.
    pub fn record(&self, edge: &EdgeNodeId, at: Timestamp, hosts: &[HostTraffic]) {
        if hosts.is_empty() {
            return;
        }
        let minute = TrafficResolution::Minute.bucket_start(at);
        let mut pending = self.lock();
        let mut total = TrafficCounts::default();
        for host in hosts {
            total.add(&host.counts);
            if host.hostname != OTHER {
                let scope = TrafficScope::Host(host.hostname.to_ascii_lowercase());
                pending
                    .entry((minute, scope))
                    .or_default()
                    .add(&host.counts);
            }
        }
        pending
            .entry((minute, TrafficScope::Edge(edge.clone())))
            .or_default()
            .add(&total);
        while pending.len() > MAX_PENDING {
            pending.pop_first();
        }
    }

    /// Takes everything pending.
    fn take(&self) -> BTreeMap<(Timestamp, TrafficScope), TrafficCounts> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back sums that could not be written.
    fn restore(&self, sums: BTreeMap<(Timestamp, TrafficScope), TrafficCounts>) {
        let mut pending = self.lock();
        for (key, counts) in sums {
            pending.entry(key).or_default().add(&counts);
        }
        while pending.len() > MAX_PENDING {
            pending.pop_first();
        }
    }
}

/// The rows that add `sums` to the minute and hour buckets, leaving out host names
/// that are not in `hosts` (the routes').
fn rows(
    sums: &BTreeMap<(Timestamp, TrafficScope), TrafficCounts>,
    hosts: &BTreeSet<String>,
) -> Vec<TrafficRow> {
    let mut hourly: BTreeMap<(Timestamp, &TrafficScope), TrafficCounts> = BTreeMap::new();
    let mut rows = Vec::new();
    for ((minute, scope), counts) in sums {
        if matches!(scope, TrafficScope::Host(h) if !hosts.contains(h)) || counts.is_empty() {
            continue;
        }
        rows.push(TrafficRow {
            resolution: TrafficResolution::Minute,
            scope: scope.clone(),
            start: *minute,
            counts: *counts,
        });
        hourly
            .entry((TrafficResolution::Hour.bucket_start(*minute), scope))
            .or_default()
            .add(counts);
    }
    rows.extend(
        hourly
            .into_iter()
            .map(|((start, scope), counts)| TrafficRow {
                resolution: TrafficResolution::Hour,
                scope: scope.clone(),
                start,
                counts,
            }),
    );
    rows
}

/// Writes what is pending; puts it back when the store fails.
pub async fn flush(runtime: &Runtime) -> Result<usize, kokoa_core::Error> {
    let sums = runtime.traffic().take();
    if sums.is_empty() {
        return Ok(0);
    }
    let hosts = match runtime.store().list_routes().await {
        Ok(routes) => routes
            .iter()
            .map(|r| r.hostname.as_str().to_ascii_lowercase())
            .collect(),
        Err(e) => {
            runtime.traffic().restore(sums);
            return Err(e);
        }
    };
    let rows = rows(&sums, &hosts);
    match runtime.store().add_traffic(&rows).await {
        Ok(()) => Ok(rows.len()),
        Err(e) => {
            runtime.traffic().restore(sums);
            Err(e)
        }
    }
}

/// Deletes the buckets past their retention at `now`; returns how many.
pub async fn prune(runtime: &Runtime, now: Timestamp) -> Result<u64, kokoa_core::Error> {
    let mut pruned = 0;
    for resolution in TrafficResolution::ALL {
        let before = resolution.bucket_start(now.plus_secs(-resolution.retention_seconds()));
        pruned += runtime.store().prune_traffic(resolution, before).await?;
    }
    Ok(pruned)
}

/// Writes every [`FLUSH`] on every control plane (each writes what it received) while the
/// module is on; what arrives while it is off is dropped.
pub async fn run(runtime: Runtime, mut stop: watch::Receiver<bool>) {
    let mut written: u64 = 0;
    loop {
        let stopping = sleep_or_stop(FLUSH, &mut stop).await;
        if !runtime
            .modules()
            .enabled(&runtime, Module::MetricsCollector)
            .await
        {
            runtime.traffic().take();
        } else {
            let result = flush(&runtime).await;
            if let Ok(n) = &result {
                written += *n as u64;
            }
            runtime
                .modules()
                .report(Module::MetricsCollector, |status| {
                    status.provider = Some("built-in (edge heartbeats)".to_owned());
                    status.connected = Some(result.is_ok());
                    status.detail = result
                        .as_ref()
                        .err()
                        .map(|e| format!("cannot write traffic figures: {e}"));
                    status.counts.insert("buckets_written".to_owned(), written);
                });
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot write traffic figures; kept for the next try");
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(requests: u64, errors: u64) -> TrafficCounts {
        TrafficCounts {
            requests,
            errors,
            ..TrafficCounts::default()
        }
    }

    fn host(name: &str, requests: u64, errors: u64) -> HostTraffic {
        HostTraffic {
            hostname: name.to_owned(),
            counts: counts(requests, errors),
        }
    }

    #[test]
    fn sums_by_minute_per_route_and_per_edge() {
        let log = TrafficLog::default();
        let (e1, e2) = (EdgeNodeId::new(), EdgeNodeId::new());
        let t = Timestamp::from_unix(7_200 + 65).unwrap();
        log.record(&e1, t, &[host("App.hoge.com", 10, 1), host("other", 5, 5)]);
        log.record(&e2, t.plus_secs(10), &[host("app.hoge.com", 3, 0)]);
        log.record(&e2, t.plus_secs(60), &[host("gone.hoge.com", 4, 0)]);
        log.record(&e2, t, &[]);
        let sums = log.take();
        let hosts = BTreeSet::from(["app.hoge.com".to_owned()]);
        let rows = rows(&sums, &hosts);
        let find = |resolution, scope: &TrafficScope, start: i64| {
            rows.iter()
                .filter(|r| r.resolution == resolution && &r.scope == scope)
                .find(|r| r.start.as_unix() == start)
                .map(|r| (r.counts.requests, r.counts.errors))
        };
        let app = TrafficScope::Host("app.hoge.com".into());
        assert_eq!(find(TrafficResolution::Minute, &app, 7_260), Some((13, 1)));
        assert_eq!(find(TrafficResolution::Hour, &app, 7_200), Some((13, 1)));
        let edge1 = TrafficScope::Edge(e1);
        assert_eq!(
            find(TrafficResolution::Minute, &edge1, 7_260),
            Some((15, 6)),
            "other counts for the edge"
        );
        let edge2 = TrafficScope::Edge(e2);
        assert_eq!(find(TrafficResolution::Minute, &edge2, 7_320), Some((4, 0)));
        assert_eq!(
            find(TrafficResolution::Hour, &edge2, 7_200),
            Some((7, 0)),
            "two minutes in one hour"
        );
        assert!(
            rows.iter()
                .all(|r| !matches!(&r.scope, TrafficScope::Host(h) if h != "app.hoge.com")),
            "no series for names without a route: {rows:?}"
        );
        assert!(log.take().is_empty(), "taken once");
    }

    #[test]
    fn pending_sums_are_bounded() {
        let log = TrafficLog::default();
        let edge = EdgeNodeId::new();
        for minute in 0..(MAX_PENDING as i64 + 10) {
            log.record(
                &edge,
                Timestamp::from_unix(minute * 60).unwrap(),
                &[host("other", 1, 0)],
            );
        }
        let sums = log.take();
        assert_eq!(sums.len(), MAX_PENDING);
        assert_eq!(
            sums.keys().next().unwrap().0.as_unix(),
            600,
            "the oldest dropped"
        );
        log.restore(sums);
        assert_eq!(log.take().len(), MAX_PENDING);
    }
}
