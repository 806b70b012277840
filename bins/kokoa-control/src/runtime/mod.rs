//! What the control plane does on its own, next to answering requests: lead (SPEC §11),
//! keep DNS in step (§8.1), obtain certificates (§8.3), check health (§8.4) and create,
//! withdraw and replace edges (§8.2, §9).
//!
//! Every duty that changes the outside world runs only on the leader: the control plane
//! holding the `leader` lease in the store. On SQLite there is one control plane and it
//! always leads; on PostgreSQL several share the database and one leads, the others take
//! over within the lease's TTL when it stops renewing. Each duty reads what it needs from
//! the store at every step, so nothing is lost when the leader changes or restarts.

use tokio::task::JoinSet;

use crate::state::AppState;

pub mod lifecycle;

pub use kokoa_runtime::{
    EdgeSettings, HealthSettings, LEASE_TTL, Leader, Module, ModuleStatus, Modules,
    ProvisionerEntry, RetentionSettings, RuntimeSettings, Wakers, certs, dns, health, retention,
    rotation, sleep_or_stop, traffic, wait_or_stop,
};

/// Runs every duty until `shutdown` resolves.
pub async fn run(state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut duties = JoinSet::new();
    duties.spawn(kokoa_runtime::lease_loop(
        state.runtime().clone(),
        stopped.clone(),
    ));
    duties.spawn(dns::run(state.runtime().clone(), stopped.clone()));
    duties.spawn(certs::run(state.runtime().clone(), stopped.clone()));
    duties.spawn(health::run_checker(
        state.runtime().clone(),
        stopped.clone(),
    ));
    duties.spawn(health::run_judge(state.runtime().clone(), stopped.clone()));
    duties.spawn(lifecycle::run(state.clone(), stopped.clone()));
    duties.spawn(retention::run(state.runtime().clone(), stopped.clone()));
    duties.spawn(traffic::run(state.runtime().clone(), stopped.clone()));
    duties.spawn(rotation::run(state.runtime().clone(), stopped.clone()));
    duties.spawn(kokoa_runtime::follow_changes(
        state.runtime().clone(),
        stopped.clone(),
    ));
    shutdown.await;
    let _ = stop.send(true);
    while let Some(result) = duties.join_next().await {
        if let Err(e) = result {
            tracing::error!(error = %e, "a duty of the control plane failed");
        }
    }
    // Let another control plane take over at once rather than after the TTL.
    state.leader().release(&state).await;
    let _ = state
        .store()
        .kv_delete(kokoa_runtime::INSTANCES, state.leader().instance())
        .await;
}

/// One round of every duty, at once: the lease, the edge automation, the health judge, a
/// DNS reconciliation and a step of the key rotations (the checks themselves run only in [`run`]). For tests and tools
/// that drive the control plane step by step; [`run`] does the same on its own clock.
pub async fn tick(state: &AppState) -> Result<(), kokoa_core::Error> {
    if !state.leader().claim(state).await {
        return Ok(());
    }
    lifecycle::step_all(state).await?;
    if state.modules().enabled(state, Module::HealthChecker).await {
        health::judge(state, &health::JudgeMemory::default()).await?;
    }
    if state.modules().enabled(state, Module::DnsManager).await {
        dns::reconcile(state, false).await?;
    }
    rotation::step(state)
        .await
        .map_err(|e| kokoa_core::Error::Storage(e.to_string().into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use kokoa_core::SubnetPool;
    use kokoa_runtime::follow_changes;
    use kokoa_store::{MasterKey, MemoryStore};

    use super::*;
    use crate::state::AppState;

    /// Two control planes on one memory store.
    fn two_planes() -> (AppState, AppState) {
        let store: Arc<dyn kokoa_store::Store> = Arc::new(MemoryStore::new());
        let plane = || {
            AppState::new(
                Arc::clone(&store),
                MasterKey::generate(),
                SubnetPool::default(),
                "http://127.0.0.1",
            )
        };
        (plane(), plane())
    }

    /// The renewal setting changed through one control plane wakes the certificate
    /// manager of the other (the leader orders; it would otherwise look only every minute).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renewal_setting_changed_elsewhere_wakes_the_certificate_manager() {
        let (follower, leader) = two_planes();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let following = tokio::spawn(follow_changes(leader.runtime().clone(), stopped));
        let woken = || {
            tokio::time::timeout(
                Duration::from_millis(2500),
                leader.wakers().certificates.notified(),
            )
        };
        assert!(woken().await.is_err(), "woken before any change");

        certs::set_renew_days_before(&follower, 3650).await.unwrap();
        assert!(woken().await.is_ok(), "the leader's manager was not woken");

        let _ = stop.send(true);
        following.await.unwrap();
    }
}
