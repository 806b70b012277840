//! The context every duty works in: the store, the event bus, leadership, the module
//! switches, the duties' settings and metrics, the master key, and the change counter that
//! wakes long-polling nodes and the duties of other control planes.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use kokoa_core::{RateLimits, Timestamp};
use kokoa_store::{MasterKey, Store};
use tokio::sync::{Mutex, Notify, watch};

use crate::{
    AcmeSettings, Error, EventBus, Leader, Modules, RuntimeSettings, dns, metrics::DutyMetrics,
    payload::Snapshot, traffic::TrafficLog,
};

/// What the duties share. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    events: EventBus,
    leader: Arc<Leader>,
    modules: Modules,
    wakers: Wakers,
    settings: RuntimeSettings,
    master_key: MasterKey,
    /// A counter bumped after every change that can alter a node's configuration; the
    /// value itself means nothing, only that it moved.
    changes: watch::Sender<u64>,
    duty_metrics: DutyMetrics,
    dns_limiters: dns::Limiters,
    dns_gate: dns::Gate,
    traffic: TrafficLog,
    edge_writes: Mutex<()>,
    /// How certificates are ordered, once the configuration said so.
    acme: OnceLock<AcmeSettings>,
    /// The per client limits written into every edge's configuration.
    rate_limits: watch::Sender<RateLimits>,
    /// The last snapshot of origins and routes. An async mutex so that when many waiting
    /// nodes wake up after a change, one reads the store and the others reuse its result.
    snapshot: Arc<Mutex<Option<Arc<Snapshot>>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("store", &self.inner.store)
            .field("leader", &self.inner.leader.instance())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A runtime over `store`, sealing secrets with `master_key`, its duties run with
    /// `settings` (their modules' switches default to `settings.modules`).
    pub fn new(store: Arc<dyn Store>, master_key: MasterKey, settings: RuntimeSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                events: EventBus::new(Arc::clone(&store)),
                leader: Arc::new(Leader::new()),
                modules: Modules::new(settings.modules.clone()),
                wakers: Wakers::default(),
                changes: watch::Sender::new(0),
                duty_metrics: DutyMetrics::default(),
                dns_limiters: dns::Limiters::default(),
                dns_gate: dns::Gate::default(),
                traffic: TrafficLog::default(),
                edge_writes: Mutex::new(()),
                acme: OnceLock::new(),
                rate_limits: watch::Sender::new(RateLimits::default()),
                snapshot: Arc::default(),
                settings,
                store,
                master_key,
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The store, shared.
    pub fn store_arc(&self) -> Arc<dyn Store> {
        Arc::clone(&self.inner.store)
    }

    /// The duties' settings.
    pub fn settings(&self) -> &RuntimeSettings {
        &self.inner.settings
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// Whether this control plane leads.
    pub fn leader(&self) -> &Arc<Leader> {
        &self.inner.leader
    }

    /// The modules' switches and reports.
    pub fn modules(&self) -> &Modules {
        &self.inner.modules
    }

    /// The duties' wake-ups.
    pub fn wakers(&self) -> &Wakers {
        &self.inner.wakers
    }

    /// The key secrets are sealed with before they reach the store.
    pub fn master_key(&self) -> &MasterKey {
        &self.inner.master_key
    }

    /// What the duties did, counted for `/metrics`.
    pub fn duty_metrics(&self) -> &DutyMetrics {
        &self.inner.duty_metrics
    }

    /// Held by the duties while they read and write an edge's row, so the health judge and
    /// the edge automation never write from stale copies.
    pub fn edge_writes(&self) -> &Mutex<()> {
        &self.inner.edge_writes
    }

    /// Configures ordering certificates over ACME; only the first call counts. Without it
    /// the certificate manager reports "not configured".
    pub fn set_acme(&self, settings: AcmeSettings) {
        let _ = self.inner.acme.set(settings);
        self.wakers().certificates.notify_one();
    }

    /// How certificates are ordered, if configured.
    pub fn acme(&self) -> Option<&AcmeSettings> {
        self.inner.acme.get()
    }

    /// Traffic figures received from edges and not written yet (the metrics collector).
    pub fn traffic(&self) -> &TrafficLog {
        &self.inner.traffic
    }

    /// The rate limiter shared by the zones of one DNS provider.
    pub fn dns_limiter(
        &self,
        provider: &str,
        limit: Option<kokoa_dns::RateLimit>,
    ) -> Option<kokoa_dns::RateLimiter> {
        self.inner.dns_limiters.get(provider, limit)
    }

    /// Taken while a DNS reconciliation runs.
    pub(crate) fn dns_gate(&self) -> &dns::Gate {
        &self.inner.dns_gate
    }

    /// The per client limits every edge enforces (SPEC §10.4).
    pub fn rate_limits(&self) -> RateLimits {
        *self.inner.rate_limits.borrow()
    }

    /// Changes the per client limits; every edge picks them up with its next configuration.
    pub fn set_rate_limits(&self, limits: RateLimits) {
        if self.inner.rate_limits.send_replace(limits) != limits {
            self.notify_changed();
        }
    }

    /// The current snapshot of origins and routes, read again after a change or when it
    /// has aged (see [`Snapshot`]). A snapshot that aged out and reads differently for
    /// edges is a change no one announced here (made through another control plane, or a
    /// value that expired in the store): it is announced then, so cached payloads are
    /// built again and long polls wake.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, Error> {
        let mut slot = self.inner.snapshot.lock().await;
        self.current_snapshot(&mut slot).await
    }

    /// Re-reads an aged snapshot in the background: a request answered from the cached
    /// payloads does not wait for the store, yet the change checks of
    /// [`snapshot`](Self::snapshot) keep running while edges poll.
    pub fn refresh_snapshot_soon(&self) {
        // Held by the task, so one re-read runs at a time; if it is held, one runs now.
        let Ok(mut slot) = Arc::clone(&self.inner.snapshot).try_lock_owned() else {
            return;
        };
        let generation = self.change_count();
        if slot.as_ref().is_none_or(|s| s.is_current(generation)) {
            return;
        }
        let runtime = self.clone();
        tokio::spawn(async move {
            if let Err(e) = runtime.current_snapshot(&mut slot).await {
                tracing::warn!(error = %e, "cannot read origins and routes again");
            }
        });
    }

    async fn current_snapshot(
        &self,
        slot: &mut Option<Arc<Snapshot>>,
    ) -> Result<Arc<Snapshot>, Error> {
        // Read before the store, so a change committed meanwhile makes the next call read
        // again.
        let generation = self.change_count();
        if let Some(current) = slot.as_ref().filter(|s| s.is_current(generation)) {
            return Ok(Arc::clone(current));
        }
        let fresh = Arc::new(Snapshot::read(self, generation).await?);
        // Only a snapshot that merely aged is compared: after an announced change the
        // payloads are built again anyway, and announcing it twice would wake every long
        // poll twice.
        let unannounced = slot.as_ref().is_some_and(|old| {
            old.generation() == generation
                && self.change_count() == generation
                && !old.same_for_edges(&fresh)
        });
        if unannounced {
            self.notify_changed_here();
        }
        *slot = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    /// Wakes every long poll so it recomputes its node's configuration, here and (through
    /// the store, within a second) on the other control planes of this database.
    pub fn notify_changed(&self) {
        self.notify_changed_here();
        mark_changed(self);
    }

    /// Wakes the long polls of this control plane only.
    pub fn notify_changed_here(&self) {
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later [`notify_changed`](Self::notify_changed).
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The change counter: it grows with every change, its value means nothing else.
    pub fn change_count(&self) -> u64 {
        *self.inner.changes.borrow()
    }
}

/// Wakes a duty before its next periodic step, when something it acts on changed.
#[derive(Debug, Default)]
pub struct Wakers {
    /// The DNS manager: an edge's state or a route changed.
    pub dns: Notify,
    /// The certificate manager: a route or certificate changed.
    pub certificates: Notify,
    /// The edge automation: an edge was created, reported ready or is to be deleted.
    pub edges: Notify,
    /// The health judge: a check's state flipped.
    pub health: Notify,
}

/// Sleeps for `period` or until the stop signal; returns whether to stop.
pub async fn sleep_or_stop(period: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Where a change made through any control plane is noted, so the others hear of it: a
/// follower's API cannot wake the leader's duties, nor an agent long-polling another
/// control plane, directly. Each control plane writes a new mark under its own name, so
/// none overwrites another's and none wakes itself a second time for its own change.
const WAKES: &str = "change_marks";
/// How long a mark is kept: a control plane that changed nothing for this long has nothing
/// to announce.
const WAKE_KEPT_SECONDS: i64 = 86_400;
/// How often every control plane looks at the others' marks.
const WAKE_POLL: Duration = Duration::from_secs(1);

/// Notes in the store that something changed (see [`WAKES`]), without waiting.
pub(crate) fn mark_changed(runtime: &Runtime) {
    // Outside a runtime (a synchronous caller) there is no one to tell but this process.
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let store = runtime.store_arc();
    let instance = runtime.leader().instance().to_owned();
    handle.spawn(async move {
        let mark = kokoa_core::ApiTokenId::new();
        let until = Timestamp::now().plus_secs(WAKE_KEPT_SECONDS);
        if let Err(e) = store
            .kv_put(WAKES, &instance, mark.as_str(), Some(until))
            .await
        {
            tracing::warn!(error = %e, "cannot tell the other control planes of a change");
        }
    });
}

impl Wakers {
    /// Wakes the DNS manager, the certificate manager and the edge automation here and,
    /// through the store, on whichever control plane leads (within a second).
    pub fn everywhere(&self, runtime: &Runtime) {
        self.here();
        mark_changed(runtime);
    }

    fn here(&self) {
        for waker in [&self.dns, &self.certificates, &self.edges] {
            waker.notify_one();
        }
    }
}

/// Hears of changes made through the other control planes (each notes its changes in the
/// store; the notes are read every second): wakes the duties and the long-polling agents
/// of this one.
pub async fn follow_changes(runtime: Runtime, mut stop: watch::Receiver<bool>) {
    let own = runtime.leader().instance().to_owned();
    let read = || async {
        let marks = runtime.store().kv_list(WAKES, Timestamp::now()).await.ok();
        marks.map(|marks| {
            marks
                .into_iter()
                .filter(|(instance, _)| *instance != own)
                .collect::<Vec<_>>()
        })
    };
    let mut seen = read().await;
    loop {
        if sleep_or_stop(WAKE_POLL, &mut stop).await {
            return;
        }
        // A store that does not answer changes nothing: the marks are compared once it does.
        let Some(now) = read().await else {
            continue;
        };
        if seen.as_ref() != Some(&now) {
            seen = Some(now);
            runtime.notify_changed_here();
            runtime.wakers().here();
        }
    }
}

/// Waits for `period`, an early wake-up by `waker`, or the stop signal; returns whether to
/// stop.
pub async fn wait_or_stop(
    period: Duration,
    waker: &Notify,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => *stop.borrow(),
        () = waker.notified() => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kokoa_store::{MasterKey, MemoryStore};

    use super::*;
    use crate::RuntimeSettings;

    /// Two control planes on one memory store.
    fn two_planes() -> (Runtime, Runtime) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let plane = || {
            Runtime::new(
                Arc::clone(&store),
                MasterKey::generate(),
                RuntimeSettings::default(),
            )
        };
        (plane(), plane())
    }

    /// Two control planes on one store: a change made through one wakes the other within
    /// the poll, once; a control plane is not woken a second time by its own mark.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_wakes_the_other_control_planes_once_and_not_its_own() {
        let (a, b) = two_planes();
        let (stop, stopped) = watch::channel(false);
        let followers = [
            tokio::spawn(follow_changes(a.clone(), stopped.clone())),
            tokio::spawn(follow_changes(b.clone(), stopped)),
        ];
        // Let both read the marks as they are.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (a0, b0) = (a.change_count(), b.change_count());

        a.notify_changed();
        let settled = WAKE_POLL * 2 + Duration::from_millis(500);
        tokio::time::sleep(settled).await;
        assert_eq!(a.change_count(), a0 + 1, "its own mark woke it again");
        assert_eq!(
            b.change_count(),
            b0 + 1,
            "the other did not hear of it once"
        );

        // Changes on both within one poll: each hears of the other's.
        a.notify_changed();
        b.notify_changed();
        tokio::time::sleep(settled).await;
        assert_eq!(a.change_count(), a0 + 3);
        assert_eq!(b.change_count(), b0 + 3);

        let _ = stop.send(true);
        for follower in followers {
            follower.await.unwrap();
        }
    }
}
