//! What the control plane does on its own, next to answering requests: lead (SPEC §11),
//! keep DNS in step (§8.1), obtain certificates (§8.3), check health (§8.4) and create,
//! withdraw and replace edges (§8.2, §9).
//!
//! Every duty that changes the outside world runs only on the leader: the control plane
//! holding the `leader` lease in the store. On SQLite there is one control plane and it
//! always leads; on PostgreSQL several share the database and one leads, the others take
//! over within the lease's TTL when it stops renewing. Each duty reads what it needs from
//! the store at every step, so nothing is lost when the leader changes or restarts.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kokoa_core::{Severity, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::{sync::Notify, task::JoinSet};

use crate::{events::kinds, state::AppState};

pub mod certs;
pub mod dns;
pub mod health;
pub mod lifecycle;
pub mod retention;
pub mod rotation;
mod settings;
pub mod traffic;

pub use settings::{
    EdgeSettings, HealthSettings, ProvisionerEntry, RetentionSettings, RuntimeSettings,
};

/// How long the leader lease lasts without renewal (SPEC §11: 10 s).
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the leader renews the lease.
const LEASE_RENEW: Duration = Duration::from_secs(3);
/// How often a follower asks for the lease: a cleanly stopped leader releases it, and a
/// follower takes over within this.
const LEASE_POLL: Duration = Duration::from_millis(500);
/// The lease's name in the store.
const LEADER_LEASE: &str = "leader";

/// This control plane's term as the leader: the lease's fencing token and when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Term {
    token: u64,
    since: Timestamp,
}

/// Whether this control plane leads, and its name in the lease.
///
/// The lease lives in the store and is timed by the database's clock, so control planes
/// with skewed clocks still agree on who leads. Every grant to a new holder raises the
/// lease's fencing token; every leader-only action (a DNS change, a VPS created or
/// destroyed, a certificate ordered) first records its intent with the token, and the
/// store refuses it once another term began: a leader that stalled (paused, swapped out,
/// cut off) and wakes up cannot act next to its successor.
#[derive(Debug)]
pub struct Leader {
    instance: String,
    leading: AtomicBool,
    term: Mutex<Option<Term>>,
}

impl Leader {
    fn new() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        let random = kokoa_core::ApiTokenId::new();
        let suffix = &random.as_str()[4..12];
        Self {
            instance: format!("{host}-{}-{suffix}", std::process::id()),
            leading: AtomicBool::new(false),
            term: Mutex::new(None),
        }
    }

    /// This control plane's name in the lease: host name, process id and a random part.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether this control plane held the lease when it last asked.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Since when this control plane leads without a break: it could not have heard from
    /// any node before (it was down, or someone else led), so nothing is judged missing
    /// from earlier. `None` while it does not lead.
    pub fn leading_since(&self) -> Option<Timestamp> {
        self.lock().map(|t| t.since)
    }

    /// The fence of the current term, for [`Store::record_intent`](kokoa_store::Store::record_intent).
    fn fence(&self) -> Option<kokoa_store::Fence> {
        self.lock().map(|t| kokoa_store::Fence {
            lease: LEADER_LEASE.to_owned(),
            holder: self.instance.clone(),
            token: t.token,
        })
    }

    fn lock(&self) -> Option<Term> {
        *self.term.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_term(&self, term: Option<Term>) {
        *self.term.lock().unwrap_or_else(PoisonError::into_inner) = term;
        self.leading.store(term.is_some(), Ordering::Release);
    }

    /// Asks for (or renews) the lease; returns whether this control plane leads now.
    pub async fn claim(&self, state: &AppState) -> bool {
        let before = self.lock();
        let granted = match state
            .store()
            .lease_acquire(LEADER_LEASE, &self.instance, LEASE_TTL)
            .await
        {
            Ok(lease) => lease,
            Err(e) => {
                // Leading on a store we cannot reach could mean two leaders: stop. When it
                // answers again, a new term begins and nothing is judged from before.
                tracing::warn!(error = %e, "cannot renew the leader lease; not leading");
                None
            }
        };
        let term = granted.map(|lease| match before {
            Some(term) if term.token == lease.token => term,
            _ => Term {
                token: lease.token,
                since: Timestamp::now(),
            },
        });
        self.set_term(term);
        if before.is_some() != term.is_some() {
            state.duty_metrics().leader_change(term.is_some());
        }
        match (before, term) {
            (None, Some(term)) => {
                state
                    .events()
                    .emit(
                        kinds::LEADER_ELECTED,
                        Severity::Info,
                        Some(&self.instance),
                        format!(
                            "control plane {} leads (term {})",
                            self.instance, term.token
                        ),
                        serde_json::json!({ "instance": self.instance, "term": term.token }),
                    )
                    .await;
            }
            (Some(_), None) => {
                tracing::warn!(instance = %self.instance, "no longer the leader");
            }
            _ => {}
        }
        term.is_some()
    }

    /// Records the intent of a leader-only action before it is taken: refused unless this
    /// control plane still leads in the term it believes it leads, by the store's word
    /// and clock. A refusal ends the term here at once and is an event.
    pub async fn intend(
        &self,
        state: &AppState,
        kind: &str,
        subject: &str,
        detail: serde_json::Value,
    ) -> Result<(), String> {
        let Some(fence) = self.fence() else {
            return Err(format!(
                "{kind} {subject} refused: this control plane does not lead"
            ));
        };
        let intent = kokoa_store::NewIntent {
            kind: kind.to_owned(),
            subject: subject.to_owned(),
            detail,
        };
        match state.store().record_intent(&fence, &intent).await {
            Ok(_) => Ok(()),
            Err(e @ kokoa_core::Error::Fenced { .. }) => {
                self.set_term(None);
                state.duty_metrics().leader_change(false);
                let message = format!("{kind} {subject} refused: {e}");
                tracing::warn!(instance = %self.instance, "{message}");
                state
                    .events()
                    .emit(
                        kinds::LEADER_FENCED,
                        Severity::Warning,
                        Some(&self.instance),
                        message.clone(),
                        serde_json::json!({ "instance": self.instance, "term": fence.token,
                                            "kind": kind, "subject": subject }),
                    )
                    .await;
                Err(message)
            }
            Err(e) => Err(format!(
                "{kind} {subject} not started: cannot record it: {e}"
            )),
        }
    }

    /// Ends this control plane's term at once (a clean stop), so a follower takes over
    /// within [`LEASE_POLL`] rather than the lease's TTL.
    async fn release(&self, state: &AppState) {
        if self.lock().is_some() {
            self.set_term(None);
            if let Err(e) = state
                .store()
                .lease_release(LEADER_LEASE, &self.instance)
                .await
            {
                tracing::warn!(error = %e, "cannot release the leader lease");
            }
        }
    }
}

impl kokoa_acme::Leadership for Leader {
    fn is_leader(&self) -> bool {
        Leader::is_leader(self)
    }
}

/// The modules of SPEC §8, each switched on or off at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Module {
    /// Keeps the A/AAAA records of the healthy edges (§8.1).
    DnsManager,
    /// Creates and destroys edge VPSes (§8.2).
    EdgeProvisioner,
    /// Obtains, renews and distributes certificates (§8.3).
    SslManager,
    /// Checks edges and origins and acts on the results (§8.4).
    HealthChecker,
    /// Traffic statistics from the edges' heartbeats (§8.5).
    MetricsCollector,
    /// Outbound traffic through the edges (§8.6); not part of this build.
    OutboundRouter,
}

impl Module {
    /// Every module, in the order the spec lists them.
    pub const ALL: [Module; 6] = [
        Self::DnsManager,
        Self::EdgeProvisioner,
        Self::SslManager,
        Self::HealthChecker,
        Self::MetricsCollector,
        Self::OutboundRouter,
    ];

    /// The name used in the API and the configuration, e.g. `dns_manager`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DnsManager => "dns_manager",
            Self::EdgeProvisioner => "edge_provisioner",
            Self::SslManager => "ssl_manager",
            Self::HealthChecker => "health_checker",
            Self::MetricsCollector => "metrics_collector",
            Self::OutboundRouter => "outbound_router",
        }
    }

    /// Whether this build has the module at all.
    pub fn available(self) -> bool {
        !matches!(self, Self::OutboundRouter)
    }

    /// The module called `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a module reports about itself (the Settings > Modules page, SPEC §8).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModuleStatus {
    /// The provider(s) in use, e.g. `powerdns` or `pebble, lab`.
    pub provider: Option<String>,
    /// Whether its last call to the outside world worked; `None` before the first.
    pub connected: Option<bool>,
    /// One line about its state, e.g. the last error.
    pub detail: Option<String>,
    /// What it handles, e.g. `{"zones": 2, "records": 8}`.
    pub counts: BTreeMap<String, u64>,
}

/// The switches and reported states of the modules. The switches live in the store, so
/// every control plane on one database sees the same; a switched-off module does nothing
/// from its next step on.
#[derive(Debug, Default)]
pub struct Modules {
    defaults: BTreeMap<Module, bool>,
    status: Mutex<BTreeMap<Module, ModuleStatus>>,
}

/// Where the switches are kept.
const SWITCHES: (&str, &str) = ("settings", "modules");

impl Modules {
    /// Modules with their switches' defaults (from the configuration file): available
    /// modules are on unless said otherwise.
    pub fn new(defaults: BTreeMap<Module, bool>) -> Self {
        Self {
            defaults,
            status: Mutex::default(),
        }
    }

    fn default_for(&self, module: Module) -> bool {
        module.available() && self.defaults.get(&module).copied().unwrap_or(true)
    }

    /// Every module's switch.
    pub async fn switches(&self, state: &AppState) -> BTreeMap<Module, bool> {
        let stored: BTreeMap<Module, bool> = match state
            .store()
            .kv_get(SWITCHES.0, SWITCHES.1, Timestamp::now())
            .await
        {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring unreadable module switches");
                BTreeMap::new()
            }),
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the module switches; using the defaults");
                BTreeMap::new()
            }
        };
        Module::ALL
            .into_iter()
            .map(|m| {
                let on = m.available() && stored.get(&m).copied().unwrap_or(self.default_for(m));
                (m, on)
            })
            .collect()
    }

    /// Whether `module` is on.
    pub async fn enabled(&self, state: &AppState, module: Module) -> bool {
        self.switches(state).await[&module]
    }

    /// Switches `module` on or off for every control plane on this database.
    pub async fn set(
        &self,
        state: &AppState,
        module: Module,
        on: bool,
    ) -> Result<(), kokoa_core::Error> {
        let mut switches = self.switches(state).await;
        switches.insert(module, on);
        let text = serde_json::to_string(&switches).map_err(|e| {
            kokoa_core::Error::Storage(format!("cannot write module switches: {e}").into())
        })?;
        state
            .store()
            .kv_put(SWITCHES.0, SWITCHES.1, &text, None)
            .await
    }

    /// What `module` last reported.
    pub fn status(&self, module: Module) -> ModuleStatus {
        self.lock().get(&module).cloned().unwrap_or_default()
    }

    /// Records what `module` reports.
    pub fn report(&self, module: Module, update: impl FnOnce(&mut ModuleStatus)) {
        update(self.lock().entry(module).or_default());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Module, ModuleStatus>> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
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

/// Runs every duty until `shutdown` resolves.
pub async fn run(state: AppState, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut duties = JoinSet::new();
    duties.spawn(lease_loop(state.clone(), stopped.clone()));
    duties.spawn(dns::run(state.clone(), stopped.clone()));
    duties.spawn(certs::run(state.clone(), stopped.clone()));
    duties.spawn(health::run_checker(state.clone(), stopped.clone()));
    duties.spawn(health::run_judge(state.clone(), stopped.clone()));
    duties.spawn(lifecycle::run(state.clone(), stopped.clone()));
    duties.spawn(retention::run(state.clone(), stopped.clone()));
    duties.spawn(traffic::run(state.clone(), stopped.clone()));
    duties.spawn(rotation::run(state.clone(), stopped.clone()));
    duties.spawn(follow_changes(state.clone(), stopped.clone()));
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
        .kv_delete(health::INSTANCES, state.leader().instance())
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
        .map_err(|e| kokoa_core::Error::Storage(e.message().into()))?;
    Ok(())
}

async fn lease_loop(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        // Announce this control plane, so the checks are shared among the live ones.
        let now = Timestamp::now();
        let until = now.plus_secs(LEASE_TTL.as_secs() as i64);
        if let Err(e) = state
            .store()
            .kv_put(
                health::INSTANCES,
                state.leader().instance(),
                "",
                Some(until),
            )
            .await
        {
            tracing::warn!(error = %e, "cannot announce this control plane");
        }
        let was = state.leader().is_leader();
        let leading = state.leader().claim(&state).await;
        if leading && !was {
            // A new leader looks at everything at once.
            state.wakers().dns.notify_one();
            state.wakers().certificates.notify_one();
            state.wakers().edges.notify_one();
        }
        let next = if leading { LEASE_RENEW } else { LEASE_POLL };
        if sleep_or_stop(next, &mut stop).await {
            return;
        }
    }
}

/// Sleeps for `period` or until the stop signal; returns whether to stop.
pub(crate) async fn sleep_or_stop(
    period: Duration,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
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
pub(crate) fn mark_changed(state: &AppState) {
    // Outside a runtime (a synchronous caller) there is no one to tell but this process.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let store = state.store_arc();
    let instance = state.leader().instance().to_owned();
    runtime.spawn(async move {
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
    pub fn everywhere(&self, state: &AppState) {
        self.here();
        mark_changed(state);
    }

    fn here(&self) {
        for waker in [&self.dns, &self.certificates, &self.edges] {
            waker.notify_one();
        }
    }
}

/// Hears of changes made through other control planes (see [`WAKES`]): wakes the duties
/// and the long-polling agents of this one.
async fn follow_changes(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let own = state.leader().instance().to_owned();
    let read = || async {
        let marks = state.store().kv_list(WAKES, Timestamp::now()).await.ok();
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
            state.notify_changed_here();
            state.wakers().here();
        }
    }
}

/// Waits for `period`, an early wake-up by `waker`, or the stop signal; returns whether to
/// stop.
pub(crate) async fn wait_or_stop(
    period: Duration,
    waker: &Notify,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    tokio::select! {
        () = tokio::time::sleep(period) => *stop.borrow(),
        () = waker.notified() => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// A leader and modules for a new [`AppState`].
pub(crate) fn new_parts(defaults: BTreeMap<Module, bool>) -> (Arc<Leader>, Modules, Wakers) {
    (
        Arc::new(Leader::new()),
        Modules::new(defaults),
        Wakers::default(),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kokoa_core::SubnetPool;
    use kokoa_store::{MasterKey, MemoryStore};

    use super::*;

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

    /// Two control planes on one store: a change made through one wakes the other within
    /// the poll, once; a control plane is not woken a second time by its own mark.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_wakes_the_other_control_planes_once_and_not_its_own() {
        let (a, b) = two_planes();
        let (stop, stopped) = tokio::sync::watch::channel(false);
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

    /// The renewal setting changed through one control plane wakes the certificate
    /// manager of the other (the leader orders; it would otherwise look only every minute).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_renewal_setting_changed_elsewhere_wakes_the_certificate_manager() {
        let (follower, leader) = two_planes();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let following = tokio::spawn(follow_changes(leader.clone(), stopped));
        let woken = || {
            tokio::time::timeout(
                WAKE_POLL * 2 + Duration::from_millis(500),
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
