//! Leadership (SPEC §11): the control plane holding the `leader` lease in the store runs
//! every duty that changes the outside world, and fences each of its actions with the
//! lease's token.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kokoa_core::{Severity, Timestamp};
use tokio::sync::watch;

use crate::{Runtime, events::kinds, sleep_or_stop};

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
    pub(crate) fn new() -> Self {
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
    pub async fn claim(&self, runtime: &Runtime) -> bool {
        let before = self.lock();
        let granted = match runtime
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
            runtime.duty_metrics().leader_change(term.is_some());
        }
        match (before, term) {
            (None, Some(term)) => {
                runtime
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
        runtime: &Runtime,
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
        match runtime.store().record_intent(&fence, &intent).await {
            Ok(_) => Ok(()),
            Err(e @ kokoa_core::Error::Fenced { .. }) => {
                self.set_term(None);
                runtime.duty_metrics().leader_change(false);
                let message = format!("{kind} {subject} refused: {e}");
                tracing::warn!(instance = %self.instance, "{message}");
                runtime
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
    /// within half a second rather than the lease's TTL.
    pub async fn release(&self, runtime: &Runtime) {
        if self.lock().is_some() {
            self.set_term(None);
            if let Err(e) = runtime
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

/// Where the live control planes announce themselves (for sharing the checks).
pub const INSTANCES: &str = "instances";

/// Announces this control plane in [`INSTANCES`] and holds or asks for the leader lease,
/// until `stop`; a new leader wakes the DNS manager, the certificate manager and the edge
/// automation at once.
pub async fn lease_loop(runtime: Runtime, mut stop: watch::Receiver<bool>) {
    loop {
        // Announce this control plane, so the checks are shared among the live ones.
        let now = Timestamp::now();
        let until = now.plus_secs(LEASE_TTL.as_secs() as i64);
        if let Err(e) = runtime
            .store()
            .kv_put(INSTANCES, runtime.leader().instance(), "", Some(until))
            .await
        {
            tracing::warn!(error = %e, "cannot announce this control plane");
        }
        let was = runtime.leader().is_leader();
        let leading = runtime.leader().claim(&runtime).await;
        if leading && !was {
            // A new leader looks at everything at once.
            runtime.wakers().dns.notify_one();
            runtime.wakers().certificates.notify_one();
            runtime.wakers().edges.notify_one();
        }
        let next = if leading { LEASE_RENEW } else { LEASE_POLL };
        if sleep_or_stop(next, &mut stop).await {
            return;
        }
    }
}
