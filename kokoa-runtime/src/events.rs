//! The event bus (SPEC §8.7): what the control plane did and why, recorded in the store,
//! announced to this process's listeners (the live API stream) and handed to the
//! notification sinks.
//!
//! The store is the bus's memory: a listener that missed events (it connected late, or
//! they were recorded by another control plane on the same database) reads them from the
//! store by number. The in-process broadcast only says "there is something new".

use std::sync::{Arc, OnceLock};

use kokoa_core::{Event, EventKind, NewEvent, Severity, Timestamp};
use kokoa_store::Store;
use serde_json::Value;
use tokio::sync::broadcast;

use kokoa_notify::{Notification, Notifier};

/// The event types the control plane itself emits. Modules may report others through
/// `POST /api/v1/internal/events`.
pub mod kinds {
    /// A VPS was asked of a provider for a new edge.
    pub const EDGE_CREATED: &str = "edge.created";
    /// The provider reports the edge's VPS running, with its address.
    pub const EDGE_PROVISIONED: &str = "edge.provisioned";
    /// The edge's agent enrolled.
    pub const EDGE_ENROLLED: &str = "edge.enrolled";
    /// The edge applied its configuration and reported ready.
    pub const EDGE_REPORTED_READY: &str = "edge.reported_ready";
    /// Every tunnel of the edge is up.
    pub const EDGE_TUNNELS_UP: &str = "edge.tunnels_up";
    /// The edge holds a certificate for every host name it serves that has one.
    pub const EDGE_CERTIFICATES_INSTALLED: &str = "edge.certificates_installed";
    /// The edge passed its checks and serves in DNS (SPEC §8.7 `edge.ready`).
    pub const EDGE_READY: &str = "edge.ready";
    /// The edge was judged unhealthy (SPEC §8.7 `edge_node_unhealthy`).
    pub const EDGE_UNHEALTHY: &str = "edge_node_unhealthy";
    /// An unhealthy edge passed its checks again.
    pub const EDGE_RECOVERED: &str = "edge.recovered";
    /// An alert about an edge that stays in DNS (CPU, error rate).
    pub const EDGE_ALERT: &str = "edge.alert";
    /// The removal of an edge began (by hand, or because it is unhealthy).
    pub const EDGE_REMOVAL_STARTED: &str = "edge.removal_started";
    /// The edge's VPS was destroyed and the edge marked deleted.
    pub const EDGE_DESTROYED: &str = "edge.destroyed";
    /// A new edge was asked for to replace another or to keep `min_active_nodes`.
    pub const EDGE_REPLACEMENT: &str = "edge.replacement_requested";
    /// A step of an edge's automation failed (it is retried).
    pub const EDGE_STEP_FAILED: &str = "edge.step_failed";
    /// The DNS manager added a record (SPEC §8.7 `dns.record.added`).
    pub const DNS_RECORD_ADDED: &str = "dns.record.added";
    /// The DNS manager removed a record.
    pub const DNS_RECORD_REMOVED: &str = "dns.record.removed";
    /// The DNS manager changed a record's TTL.
    pub const DNS_RECORD_UPDATED: &str = "dns.record.updated";
    /// A reconciliation of a zone failed.
    pub const DNS_RECONCILE_FAILED: &str = "dns.reconcile_failed";
    /// A certificate was issued or renewed.
    pub const CERTIFICATE_ISSUED: &str = "certificate.issued";
    /// An order for a certificate failed (it is retried).
    pub const CERTIFICATE_FAILED: &str = "certificate.failed";
    /// An origin's routes (or some of them) became unavailable: edges answer 503.
    pub const ORIGIN_UNAVAILABLE: &str = "origin.unavailable";
    /// An origin's routes are served again.
    pub const ORIGIN_AVAILABLE: &str = "origin.available";
    /// An alert about an origin (no heartbeat, disk full).
    pub const ORIGIN_ALERT: &str = "origin.alert";
    /// A module was switched on or off.
    pub const MODULE_CHANGED: &str = "module.changed";
    /// This control plane became the leader (SPEC §11).
    pub const LEADER_ELECTED: &str = "control_plane.leader";
    /// An action of this control plane was refused: another began a new term as leader.
    pub const LEADER_FENCED: &str = "control_plane.fenced";
    /// So many edges look unhealthy at once that the observer is suspect: nothing more
    /// leaves DNS and nothing is destroyed until it passes (or it passed).
    pub const OBSERVER_SUSPECT: &str = "health.observer_suspect";
    /// An unhealthy edge is kept (not destroyed) for now, and why.
    pub const EDGE_DESTROY_HELD: &str = "edge.destroy_held";
    /// An origin's state flaps: the edges' configuration keeps its last state for now.
    pub const ORIGIN_FLAPPING: &str = "origin.flapping";
    /// A VPS carrying this installation's tag that no edge owns was found (and adopted or
    /// destroyed).
    pub const ORPHAN_VPS: &str = "edge.orphan_vps";
    /// A WireGuard key rotation began: the node is asked for a new key (SPEC §10.3).
    pub const KEY_ROTATION_STARTED: &str = "wireguard.rotation_started";
    /// The peers know the new key; the node switches to it.
    pub const KEY_ROTATION_SWITCHED: &str = "wireguard.rotation_switched";
    /// The node uses the new key; the old one is gone everywhere.
    pub const KEY_ROTATED: &str = "wireguard.key_rotated";
    /// A rotation was dropped: its node sent no new key in time; its key stays.
    pub const KEY_ROTATION_ABANDONED: &str = "wireguard.rotation_abandoned";
    /// An edge's agent reports that it cannot do its work (nginx does not start, a
    /// configuration does not apply): its heartbeat carries the error.
    pub const EDGE_AGENT_ERROR: &str = "edge.agent_error";
    /// That edge's agent reports no error any more.
    pub const EDGE_AGENT_RECOVERED: &str = "edge.agent_recovered";

    /// Every type above. The Web UI listens for these on the live stream (an
    /// `EventSource` cannot listen for "any type"), so a new type belongs here too.
    pub const ALL: &[&str] = &[
        EDGE_CREATED,
        EDGE_PROVISIONED,
        EDGE_ENROLLED,
        EDGE_REPORTED_READY,
        EDGE_TUNNELS_UP,
        EDGE_CERTIFICATES_INSTALLED,
        EDGE_READY,
        EDGE_UNHEALTHY,
        EDGE_RECOVERED,
        EDGE_ALERT,
        EDGE_REMOVAL_STARTED,
        EDGE_DESTROYED,
        EDGE_REPLACEMENT,
        EDGE_STEP_FAILED,
        DNS_RECORD_ADDED,
        DNS_RECORD_REMOVED,
        DNS_RECORD_UPDATED,
        DNS_RECONCILE_FAILED,
        CERTIFICATE_ISSUED,
        CERTIFICATE_FAILED,
        ORIGIN_UNAVAILABLE,
        ORIGIN_AVAILABLE,
        ORIGIN_ALERT,
        MODULE_CHANGED,
        LEADER_ELECTED,
        LEADER_FENCED,
        OBSERVER_SUSPECT,
        EDGE_DESTROY_HELD,
        ORIGIN_FLAPPING,
        ORPHAN_VPS,
        KEY_ROTATION_STARTED,
        KEY_ROTATION_SWITCHED,
        KEY_ROTATED,
        KEY_ROTATION_ABANDONED,
        EDGE_AGENT_ERROR,
        EDGE_AGENT_RECOVERED,
    ];
}

/// How many "something new" signals a slow listener may fall behind; it then reads the
/// store, so nothing is lost.
const BROADCAST_CAPACITY: usize = 256;

/// Records events and tells listeners. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    tx: broadcast::Sender<Event>,
    notifier: OnceLock<Notifier>,
}

impl EventBus {
    /// A bus recording into `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                tx: broadcast::Sender::new(BROADCAST_CAPACITY),
                notifier: OnceLock::new(),
            }),
        }
    }

    /// Also hands every event to the notification sinks of `notifier`, without waiting (a
    /// full queue loses the event there; it stays recorded). Only the first call has an
    /// effect.
    pub fn forward_to(&self, notifier: Notifier) {
        if self.inner.notifier.set(notifier).is_err() {
            tracing::warn!("events are forwarded to notification sinks already");
        }
    }

    /// The notifier events are forwarded to, if any.
    pub fn notifier(&self) -> Option<&Notifier> {
        self.inner.notifier.get()
    }

    /// Records an event and announces it. `kind` is one of [`kinds`] or another
    /// well-formed type; `data` should be a JSON object. A failure to record is logged,
    /// not returned: an event is never a reason for the action it reports to fail.
    pub async fn emit(
        &self,
        kind: &str,
        severity: Severity,
        subject: Option<&str>,
        message: impl Into<String>,
        data: Value,
    ) -> Option<Event> {
        let message = message.into();
        let kind = match EventKind::parse(kind) {
            Ok(kind) => kind,
            Err(e) => {
                tracing::error!(error = %e, "not recording a malformed event");
                return None;
            }
        };
        let mut data = data;
        if let (Some(id), Value::Object(fields)) = (crate::operation::current(), &mut data) {
            fields
                .entry("request_id")
                .or_insert_with(|| Value::String(id));
        }
        let new = NewEvent {
            kind,
            severity,
            subject: subject.map(str::to_owned),
            message,
            data,
            created_at: Timestamp::now(),
        };
        self.record(new).await
    }

    /// Records an event built by the caller and announces it.
    pub async fn record(&self, new: NewEvent) -> Option<Event> {
        match self.inner.store.append_event(&new).await {
            Ok(event) => {
                match event.severity {
                    Severity::Info => {
                        tracing::info!(event = %event.kind, subject = ?event.subject, "{}", event.message)
                    }
                    _ => {
                        tracing::warn!(event = %event.kind, severity = %event.severity, subject = ?event.subject, "{}", event.message)
                    }
                }
                // Nobody listening is fine.
                let _ = self.inner.tx.send(event.clone());
                if let Some(notifier) = self.inner.notifier.get() {
                    notifier.notify(Notification::from(&event));
                }
                Some(event)
            }
            Err(e) => {
                tracing::error!(event = %new.kind, error = %e, "cannot record event: {}", new.message);
                None
            }
        }
    }

    /// A receiver of every event this process records from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.tx.subscribe()
    }

    /// How many receivers [`subscribe`](Self::subscribe) handed out are still alive.
    pub fn subscribers(&self) -> usize {
        self.inner.tx.receiver_count()
    }
}
