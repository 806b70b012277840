//! Keeps storage bounded: the leader deletes what is older than the retention settings
//! (events, health check history, its record of actions, traffic buckets) and what has expired (shared
//! values such as pending sign-ins and challenge responses, sessions).

use std::time::Duration;

use kokoa_core::Timestamp;
use tokio::sync::watch;

use crate::{Runtime, sleep_or_stop};

/// How often the leader looks whether a pruning is due.
const CHECK: Duration = Duration::from_secs(30);
/// How often it prunes.
const PERIOD: Duration = Duration::from_secs(600);

/// How many rows one pruning deleted, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Events.
    pub events: u64,
    /// Health check results.
    pub health_checks: u64,
    /// Recorded intents of the leader.
    pub intents: u64,
    /// Expired shared values.
    pub shared_values: u64,
    /// Expired sessions.
    pub sessions: u64,
    /// Traffic buckets past their retention (a day of minutes, 30 days of hours).
    pub traffic_buckets: u64,
}

fn before(now: Timestamp, keep: Duration) -> Timestamp {
    now.plus_secs(-i64::try_from(keep.as_secs()).unwrap_or(i64::MAX / 2))
}

/// Deletes everything past its retention at `now`.
pub async fn prune(runtime: &Runtime, now: Timestamp) -> Result<Pruned, kokoa_core::Error> {
    let store = runtime.store();
    let keep = runtime.settings().retention;
    Ok(Pruned {
        events: store.prune_events(before(now, keep.events)).await?,
        health_checks: store
            .prune_health_checks(before(now, keep.health_history))
            .await?,
        intents: store.prune_intents(before(now, keep.intents)).await?,
        shared_values: store.kv_prune(now).await?,
        sessions: store.prune_sessions(now).await?,
        traffic_buckets: crate::traffic::prune(runtime, now).await?,
    })
}

/// Prunes every ten minutes on the leader.
pub async fn run(runtime: Runtime, mut stop: watch::Receiver<bool>) {
    let mut last: Option<tokio::time::Instant> = None;
    loop {
        let due = last.is_none_or(|at| at.elapsed() >= PERIOD);
        if due && runtime.leader().is_leader() {
            last = Some(tokio::time::Instant::now());
            match prune(&runtime, Timestamp::now()).await {
                Ok(pruned) if pruned != Pruned::default() => {
                    tracing::info!(?pruned, "old records deleted");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot delete old records"),
            }
        }
        if sleep_or_stop(CHECK, &mut stop).await {
            return;
        }
    }
}
