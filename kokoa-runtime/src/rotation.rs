//! WireGuard key rotation (SPEC §10.3): an edge's or an origin's key replaced, by hand
//! (`POST …/rotate-keys`) or on a schedule (`[wireguard] rotate_keys_days`), without
//! cutting traffic. Keys are made by the nodes, which keep the private halves: the control
//! plane only ever sees public keys.
//!
//! WireGuard lets one peer own an address, so a key cannot simply be swapped on both ends
//! at once. A rotation goes through these steps, each proven before the next:
//!
//! 1. **request** — the rotating node's configuration asks for a next key; the node makes
//!    a key pair, keeps it beside the current one and registers the public half
//!    (`POST /api/v1/wireguard-key`, see [`register`]).
//! 2. **prepare** — the peers' configurations gain the new public key as a second peer
//!    without addresses (`kokoa_wg::rotation`). Nothing changes for traffic.
//! 3. **switch** — once every peer that reports reports the configuration with the new
//!    key as applied (a peer silent for its heartbeat timeout is not waited for: it gets
//!    the final configuration when it returns), the rotating node's configuration names
//!    the new key. Its next packet makes a handshake with it, and each peer hands the
//!    address over at that handshake, within a fraction of a second.
//! 4. **commit** — once the rotating node reports the configuration naming the new key
//!    as applied, the new key replaces the old in the store and the old key leaves every
//!    configuration; the node drops the old private key.
//!
//! A rotation waits in the store (`key_rotation` values), so it survives restarts and a
//! change of leader; a step that cannot be proven waits, it never guesses. A node that
//! sends no next key within [`NEXT_KEY_WAIT`] has its rotation dropped (with an event),
//! leaving its key as it was. Nothing here removes a working key before its successor
//! carries traffic.

use std::time::Duration;

use kokoa_core::{EdgeNodeId, EdgeStatus, NodeRef, OriginId, Severity, Timestamp, WgPublicKey};
use serde::{Deserialize, Serialize};

use crate::{Error, Runtime, events::kinds, payload, sleep_or_stop};

/// Where pending rotations are kept.
const NAMESPACE: &str = "key_rotation";
/// When each key was last rotated (for the schedule).
const ROTATED: &str = "key_rotated";
/// How often the duty looks at pending rotations.
const PERIOD: Duration = Duration::from_secs(1);
/// How often the schedule is looked at.
const SCHEDULE_EVERY: u32 = 60;
/// An edge silent this long is not waited for (it sends a heartbeat every 5 s).
const EDGE_SILENT: Duration = Duration::from_secs(30);
/// How long a rotation waits for its node's next key before it is dropped.
pub const NEXT_KEY_WAIT: Duration = Duration::from_secs(3600);

/// Whose key rotates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// An edge's key (every interface of the edge uses it).
    Edge(EdgeNodeId),
    /// An origin's key.
    Origin(OriginId),
}

impl Subject {
    fn key(&self) -> String {
        match self {
            Self::Edge(edge) => format!("edge/{edge}"),
            Self::Origin(origin) => format!("origin/{origin}"),
        }
    }

    fn parse(key: &str) -> Option<Self> {
        match key.split_once('/')? {
            ("edge", edge) => Some(Self::Edge(EdgeNodeId::parse(edge).ok()?)),
            ("origin", origin) => Some(Self::Origin(OriginId::parse(origin).ok()?)),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Edge(edge) => format!("edge {edge}'s key"),
            Self::Origin(origin) => format!("origin {origin}'s key"),
        }
    }
}

impl From<&NodeRef> for Subject {
    fn from(node: &NodeRef) -> Self {
        match node {
            NodeRef::Edge(edge) => Self::Edge(edge.clone()),
            NodeRef::Origin(origin) => Self::Origin(origin.clone()),
        }
    }
}

/// One rotation in progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The key being replaced.
    pub current: WgPublicKey,
    /// The node's next public key, once it registered one.
    pub next_public_key: Option<WgPublicKey>,
    /// Whether the rotating node was told to use the new key (step 3).
    pub switched: bool,
    /// When the rotation began.
    pub started_at: Timestamp,
    /// `manual` or `schedule`.
    pub reason: String,
}

/// Every rotation in progress, read once for one configuration.
#[derive(Debug, Default)]
pub struct Rotations(Vec<(Subject, Pending)>);

impl Rotations {
    /// The rotations in the store.
    pub async fn load(state: &Runtime) -> Result<Self, Error> {
        let values = state.store().kv_list(NAMESPACE, Timestamp::now()).await?;
        Ok(Self(
            values
                .into_iter()
                .filter_map(|(key, value)| {
                    let parsed = Subject::parse(&key).zip(serde_json::from_str(&value).ok());
                    if parsed.is_none() {
                        tracing::warn!(%key, "ignoring a key rotation record that does not parse");
                    }
                    parsed
                })
                .collect(),
        ))
    }

    /// The rotation of `subject` away from `current`, the key in the store (one that was
    /// committed but not yet deleted, after a crash between the two, counts as none).
    fn of(&self, subject: &Subject, current: &WgPublicKey) -> Option<&Pending> {
        self.0
            .iter()
            .find(|(s, p)| s == subject && p.current == *current)
            .map(|(_, p)| p)
    }

    /// The next key of `subject` its peers must know: registered, not yet committed.
    pub fn next_key(&self, subject: &Subject, current: &WgPublicKey) -> Option<&WgPublicKey> {
        self.of(subject, current)?.next_public_key.as_ref()
    }

    /// The key `subject` uses now: the next one once switched, else `current`.
    pub fn in_use(&self, subject: &Subject, current: &WgPublicKey) -> WgPublicKey {
        self.of(subject, current)
            .filter(|p| p.switched)
            .and_then(|p| p.next_public_key.clone())
            .unwrap_or_else(|| current.clone())
    }

    /// Whether `subject` is asked for a next key (a rotation waits for it).
    pub fn key_requested(&self, subject: &Subject, current: &WgPublicKey) -> bool {
        self.of(subject, current)
            .is_some_and(|p| p.next_public_key.is_none())
    }
}

/// Starts rotating `subject`'s key `current`; refused with 409 when it rotates already.
pub async fn start(
    state: &Runtime,
    subject: &Subject,
    current: &WgPublicKey,
    reason: &str,
) -> Result<Pending, Error> {
    let now = Timestamp::now();
    if state
        .store()
        .kv_get(NAMESPACE, &subject.key(), now)
        .await?
        .is_some()
    {
        return Err(Error::Conflict(format!(
            "{} is being rotated already; wait until it finishes",
            subject.describe()
        )));
    }
    let pending = Pending {
        current: current.clone(),
        next_public_key: None,
        switched: false,
        started_at: now,
        reason: reason.to_owned(),
    };
    put(state, subject, &pending).await?;
    let message = format!(
        "{} rotates ({reason}): the node is asked for a new key",
        subject.describe()
    );
    tracing::info!(subject = %subject.key(), "{message}");
    state
        .events()
        .emit(
            kinds::KEY_ROTATION_STARTED,
            Severity::Info,
            Some(&subject.key()),
            message,
            serde_json::json!({ "reason": reason, "public_key": current }),
        )
        .await;
    state.notify_changed();
    Ok(pending)
}

async fn put(state: &Runtime, subject: &Subject, pending: &Pending) -> Result<(), Error> {
    let text = serde_json::to_string(pending).map_err(|e| Error::internal(&e))?;
    Ok(state
        .store()
        .kv_put(NAMESPACE, &subject.key(), &text, None)
        .await?)
}

/// The key `node` has in the store; none before it registered one.
async fn stored_key(state: &Runtime, node: &NodeRef) -> Result<Option<WgPublicKey>, Error> {
    Ok(match node {
        NodeRef::Edge(edge) => state.store().get_edge(edge).await?.wireguard_public_key,
        NodeRef::Origin(origin) => state.store().get_origin(origin).await?.wireguard_public_key,
    })
}

async fn set_key(state: &Runtime, node: &NodeRef, key: &WgPublicKey) -> Result<(), Error> {
    match node {
        NodeRef::Edge(edge) => state.store().set_edge_key(edge, key).await?,
        NodeRef::Origin(origin) => state.store().set_origin_key(origin, key).await?,
    }
    Ok(())
}

/// What [`register`] did with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// It is the node's key now (the node had none).
    Key,
    /// It is the next key of the node's rotation.
    Next,
    /// It was registered already; nothing changed.
    Unchanged,
}

/// Registers `key`, a public key node `node` made: its first key, or the next key its
/// rotation asked for. Anything else is refused with 409: a node's key is replaced only
/// through a rotation (or a new enrollment, see [`enrolled`]).
pub async fn register(
    state: &Runtime,
    node: &NodeRef,
    key: &WgPublicKey,
) -> Result<Registered, Error> {
    let Some(current) = stored_key(state, node).await? else {
        set_key(state, node, key).await?;
        tracing::info!(%node, public_key = %key, "WireGuard key registered");
        state.notify_changed();
        return Ok(Registered::Key);
    };
    if current == *key {
        return Ok(Registered::Unchanged);
    }
    let subject = Subject::from(node);
    let rotations = Rotations::load(state).await?;
    let refused = || {
        Error::Conflict(format!(
            "{node} has WireGuard key {current} registered; another key is accepted only when \
             a rotation asks for one (POST …/rotate-keys)"
        ))
    };
    let Some(mut pending) = rotations.of(&subject, &current).cloned() else {
        return Err(refused());
    };
    match &pending.next_public_key {
        Some(next) if next == key => return Ok(Registered::Unchanged),
        // Once the node was told to use it, the next key is settled.
        Some(_) if pending.switched => return Err(refused()),
        _ => {}
    }
    pending.next_public_key = Some(key.clone());
    put(state, &subject, &pending).await?;
    tracing::info!(%node, public_key = %key, "next WireGuard key registered; the peers learn it");
    state.notify_changed();
    Ok(Registered::Next)
}

/// A new enrollment of `node` with `key`: the key is the node's from now on (an
/// administrator issued the token), and a rotation it was in is over.
pub async fn enrolled(state: &Runtime, node: &NodeRef, key: &WgPublicKey) -> Result<(), Error> {
    set_key(state, node, key).await?;
    state
        .store()
        .kv_delete(NAMESPACE, &Subject::from(node).key())
        .await?;
    tracing::info!(%node, public_key = %key, "WireGuard key registered at enrollment");
    state.notify_changed();
    Ok(())
}

/// The `config_hash` a node last reported applied.
fn reported(metrics: Option<&serde_json::Value>) -> Option<&str> {
    metrics?.get("config_hash")?.as_str()
}

/// Whether a heartbeat at `last` is older than `limit` at `now` (or there was none).
fn silent(last: Option<Timestamp>, limit: Duration, now: Timestamp) -> bool {
    last.is_none_or(|at| now.seconds_since(at) > limit.as_secs() as i64)
}

/// What one step did to a rotation.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Wait,
    Switch,
    Commit,
    /// Its node is gone, its key changed otherwise, or the rotation was committed: forget
    /// it.
    Drop,
    /// The node sent no next key in time: forget it, and say so.
    GiveUp,
}

/// Whether the origin serves its current configuration, or cannot be waited for.
async fn origin_ready(state: &Runtime, origin: &OriginId, now: Timestamp) -> Result<bool, Error> {
    let row = state.store().get_origin(origin).await?;
    if silent(
        row.last_heartbeat,
        state.settings().health.origin_heartbeat_timeout,
        now,
    ) {
        return Ok(true);
    }
    let current = payload::origin_config(state, origin).await?;
    Ok(reported(row.last_metrics.as_ref()) == Some(current.config_hash.as_str()))
}

/// Whether the edge serves its current configuration; `None` when it cannot be waited for
/// (silent, or deleted).
async fn edge_ready(
    state: &Runtime,
    edge: &EdgeNodeId,
    now: Timestamp,
) -> Result<Option<bool>, Error> {
    let row = state.store().get_edge(edge).await?;
    if row.status == EdgeStatus::Deleted || silent(row.last_heartbeat, EDGE_SILENT, now) {
        return Ok(None);
    }
    let current = payload::edge_config(state, edge).await?;
    Ok(Some(
        reported(row.last_metrics.as_ref()) == Some(current.config_hash().as_str()),
    ))
}

async fn judge(
    state: &Runtime,
    subject: &Subject,
    pending: &Pending,
    now: Timestamp,
) -> Result<Outcome, Error> {
    let store = state.store();
    let node = match subject {
        Subject::Edge(edge) => NodeRef::Edge(edge.clone()),
        Subject::Origin(origin) => NodeRef::Origin(origin.clone()),
    };
    let current = match stored_key(state, &node).await {
        Ok(key) => key,
        Err(e) if e.is_not_found() => return Ok(Outcome::Drop),
        Err(e) => return Err(e),
    };
    if current.as_ref() != Some(&pending.current) {
        return Ok(Outcome::Drop);
    }
    if pending.next_public_key.is_none() {
        let waited = now.seconds_since(pending.started_at);
        return Ok(if waited > NEXT_KEY_WAIT.as_secs() as i64 {
            Outcome::GiveUp
        } else {
            Outcome::Wait
        });
    }
    match subject {
        Subject::Edge(edge) => {
            if store.get_edge(edge).await?.status == EdgeStatus::Deleted {
                return Ok(Outcome::Drop);
            }
            if !pending.switched {
                for tunnel in store.list_tunnels(Some(edge), None).await? {
                    if !origin_ready(state, &tunnel.origin_id, now).await? {
                        return Ok(Outcome::Wait);
                    }
                }
                return Ok(Outcome::Switch);
            }
            Ok(match edge_ready(state, edge, now).await? {
                Some(false) => Outcome::Wait,
                // A silent edge takes the new key when it returns, and its origins know
                // only that key by then.
                Some(true) | None => Outcome::Commit,
            })
        }
        Subject::Origin(origin) => {
            if !pending.switched {
                for tunnel in store.list_tunnels(None, Some(origin)).await? {
                    if edge_ready(state, &tunnel.edge_node_id, now).await? == Some(false) {
                        return Ok(Outcome::Wait);
                    }
                }
                return Ok(Outcome::Switch);
            }
            Ok(if origin_ready(state, origin, now).await? {
                Outcome::Commit
            } else {
                Outcome::Wait
            })
        }
    }
}

/// One step of every pending rotation; returns how many are still pending.
pub async fn step(state: &Runtime) -> Result<usize, Error> {
    let now = Timestamp::now();
    let store = state.store();
    let Rotations(pending) = Rotations::load(state).await?;
    let mut left = 0;
    for (subject, mut rotation) in pending {
        let outcome = match judge(state, &subject, &rotation, now).await {
            Ok(outcome) => outcome,
            Err(e) if e.is_not_found() => Outcome::Drop,
            Err(e) => return Err(e),
        };
        let (kind, severity, message, data) = match outcome {
            Outcome::Wait => {
                left += 1;
                continue;
            }
            Outcome::Drop => {
                store.kv_delete(NAMESPACE, &subject.key()).await?;
                continue;
            }
            Outcome::GiveUp => {
                store.kv_delete(NAMESPACE, &subject.key()).await?;
                state.notify_changed();
                (
                    kinds::KEY_ROTATION_ABANDONED,
                    Severity::Warning,
                    format!(
                        "{}: the node sent no new key within {} min; the rotation is dropped \
                         and the key stays as it was",
                        subject.describe(),
                        NEXT_KEY_WAIT.as_secs() / 60
                    ),
                    serde_json::json!({ "public_key": rotation.current }),
                )
            }
            Outcome::Switch => {
                rotation.switched = true;
                put(state, &subject, &rotation).await?;
                state.notify_changed();
                left += 1;
                (
                    kinds::KEY_ROTATION_SWITCHED,
                    Severity::Info,
                    format!(
                        "{}: the peers know the new key; switching to it",
                        subject.describe()
                    ),
                    serde_json::json!({ "public_key": rotation.next_public_key }),
                )
            }
            Outcome::Commit => {
                let Some(next) = rotation.next_public_key.clone() else {
                    continue;
                };
                match &subject {
                    Subject::Edge(edge) => store.set_edge_key(edge, &next).await?,
                    Subject::Origin(origin) => store.set_origin_key(origin, &next).await?,
                }
                store.kv_delete(NAMESPACE, &subject.key()).await?;
                store
                    .kv_put(ROTATED, &subject.key(), &now.to_string(), None)
                    .await?;
                state.notify_changed();
                let took = now.seconds_since(rotation.started_at);
                (
                    kinds::KEY_ROTATED,
                    Severity::Info,
                    format!("{} rotated in {took} s", subject.describe()),
                    serde_json::json!({ "public_key": next, "seconds": took }),
                )
            }
        };
        tracing::info!(subject = %subject.key(), "{message}");
        state
            .events()
            .emit(kind, severity, Some(&subject.key()), message, data)
            .await;
    }
    Ok(left)
}

/// Starts the rotation of the oldest key older than `every`, if none is pending: one at a
/// time, so a schedule never touches many nodes at once.
pub async fn schedule(state: &Runtime, every: Duration) -> Result<(), Error> {
    let now = Timestamp::now();
    let store = state.store();
    if !store.kv_list(NAMESPACE, now).await?.is_empty() {
        return Ok(());
    }
    let rotated = store.kv_list(ROTATED, now).await?;
    let since = |subject: &Subject, created: Timestamp| {
        rotated
            .iter()
            .find(|(k, _)| *k == subject.key())
            .and_then(|(_, v)| v.parse::<Timestamp>().ok())
            .map_or(created, |at| at.max(created))
    };
    let mut due: Vec<(Timestamp, Subject, WgPublicKey)> = Vec::new();
    for origin in store.list_origins().await? {
        let subject = Subject::Origin(origin.id.clone());
        if let Some(key) = origin.wireguard_public_key {
            due.push((since(&subject, origin.created_at), subject, key));
        }
    }
    for edge in store.list_edges().await? {
        let subject = Subject::Edge(edge.id.clone());
        if let (Some(key), false) = (
            edge.wireguard_public_key,
            edge.status == EdgeStatus::Deleted,
        ) {
            due.push((since(&subject, edge.created_at), subject, key));
        }
    }
    let oldest = due
        .into_iter()
        .filter(|(at, _, _)| now.seconds_since(*at) > every.as_secs() as i64)
        .min_by_key(|(at, _, _)| *at);
    if let Some((_, subject, key)) = oldest {
        start(state, &subject, &key, "schedule").await?;
    }
    Ok(())
}

/// Advances rotations every second on the leader, and starts scheduled ones.
pub async fn run(state: Runtime, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut round: u32 = 0;
    loop {
        if sleep_or_stop(PERIOD, &mut stop).await {
            return;
        }
        if !state.leader().is_leader() {
            continue;
        }
        round = round.wrapping_add(1);
        let started = std::time::Instant::now();
        let result = step(&state).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "key rotation step failed; will retry");
        }
        state
            .duty_metrics()
            .run("key_rotation", result.is_ok(), started.elapsed());
        if let Some(every) = state.settings().key_rotation
            && round.is_multiple_of(SCHEDULE_EVERY)
            && let Err(e) = schedule(&state, every).await
        {
            tracing::warn!(error = %e, "cannot start a scheduled key rotation");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_through_their_keys() {
        for subject in [
            Subject::Edge(EdgeNodeId::new()),
            Subject::Origin(OriginId::new()),
        ] {
            assert_eq!(Subject::parse(&subject.key()), Some(subject));
        }
        for bad in [
            "",
            "tunnel/edg_1/org_1",
            "origin/a/b",
            "node/x",
            "origin/x/",
            "edge",
        ] {
            assert_eq!(Subject::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn silence_is_judged_by_the_heartbeat_age() {
        let now = Timestamp::from_unix(1_000).unwrap();
        assert!(silent(None, EDGE_SILENT, now));
        assert!(silent(
            Some(Timestamp::from_unix(900).unwrap()),
            EDGE_SILENT,
            now
        ));
        assert!(!silent(
            Some(Timestamp::from_unix(980).unwrap()),
            EDGE_SILENT,
            now
        ));
    }
}
