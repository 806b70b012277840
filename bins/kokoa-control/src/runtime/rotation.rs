//! WireGuard key rotation (SPEC §10.3): an edge's tunnel keys or an origin's key replaced,
//! by hand (`POST …/rotate-keys`) or on a schedule (`[wireguard] rotate_keys_days`),
//! without cutting traffic.
//!
//! WireGuard lets one peer own an address, so a key cannot simply be swapped on both ends
//! at once. A rotation goes through three steps, each proven before the next:
//!
//! 1. **prepare** — a new key pair is made (the private half sealed, as every key) and the
//!    peers' configurations gain the new public key as a second peer without addresses
//!    (`kokoa_wg::rotation`). Nothing changes for traffic.
//! 2. **switch** — once every peer that reports reports the configuration with the new
//!    key as applied (a peer silent for its heartbeat timeout is not waited for: it gets
//!    the final configuration when it returns), the rotating node's configuration carries
//!    the new private key. Its next packet makes a handshake with the new key, and each
//!    peer hands the address over at that handshake, within a fraction of a second.
//! 3. **commit** — once the rotating node reports the configuration with the new key as
//!    applied, the new pair replaces the old in the store and the old key leaves every
//!    configuration.
//!
//! A rotation waits in the store (`key_rotation` values), so it survives restarts and a
//! change of leader; a step that cannot be proven waits, it never guesses. Nothing here
//! removes a working key before its successor carries traffic.

use std::time::Duration;

use kokoa_core::{
    EdgeNodeId, EdgeStatus, OriginId, Sealed, Severity, Timestamp, WgPrivateKey, WgPublicKey,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::ApiError,
    events::kinds,
    keys::{self, KeyOwner},
    payload,
    runtime::sleep_or_stop,
    state::AppState,
};

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

/// Whose key rotates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// An edge's key for its interface towards one origin.
    Tunnel(EdgeNodeId, OriginId),
    /// An origin's key.
    Origin(OriginId),
}

impl Subject {
    fn key(&self) -> String {
        match self {
            Self::Tunnel(edge, origin) => format!("tunnel/{edge}/{origin}"),
            Self::Origin(origin) => format!("origin/{origin}"),
        }
    }

    fn parse(key: &str) -> Option<Self> {
        let mut parts = key.split('/');
        let subject = match (parts.next()?, parts.next()?, parts.next()) {
            ("tunnel", edge, Some(origin)) => {
                Self::Tunnel(EdgeNodeId::parse(edge).ok()?, OriginId::parse(origin).ok()?)
            }
            ("origin", origin, None) => Self::Origin(OriginId::parse(origin).ok()?),
            _ => return None,
        };
        parts.next().is_none().then_some(subject)
    }

    fn owner(&self) -> KeyOwner<'_> {
        match self {
            Self::Tunnel(edge, origin) => KeyOwner::Tunnel(edge, origin),
            Self::Origin(origin) => KeyOwner::Origin(origin),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Tunnel(edge, origin) => format!("edge {edge}'s key towards origin {origin}"),
            Self::Origin(origin) => format!("origin {origin}'s key"),
        }
    }
}

/// One rotation in progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The new public key.
    pub next_public_key: WgPublicKey,
    /// The new private key, sealed like every private key.
    next_private_key: String,
    /// Whether the rotating node was told to use the new key (step 2).
    pub switched: bool,
    /// When the rotation began.
    pub started_at: Timestamp,
    /// `manual` or `schedule`.
    pub reason: String,
}

impl Pending {
    fn sealed(&self) -> Result<Sealed, ApiError> {
        Ok(Sealed::parse(&self.next_private_key)?)
    }
}

/// Every rotation in progress, read once for one configuration.
#[derive(Debug, Default)]
pub struct Rotations(Vec<(Subject, Pending)>);

impl Rotations {
    /// The rotations in the store.
    pub async fn load(state: &AppState) -> Result<Self, ApiError> {
        let values = state.store().kv_list(NAMESPACE, Timestamp::now()).await?;
        Ok(Self(
            values
                .into_iter()
                .filter_map(|(key, value)| {
                    Some((Subject::parse(&key)?, serde_json::from_str(&value).ok()?))
                })
                .collect(),
        ))
    }

    /// The rotation of `subject` whose new key is not the one in use (`current`): a
    /// rotation committed but not yet deleted (a crash between the two) counts as none.
    pub fn of(&self, subject: &Subject, current: &WgPublicKey) -> Option<&Pending> {
        self.0
            .iter()
            .find(|(s, p)| s == subject && p.next_public_key != *current)
            .map(|(_, p)| p)
    }

    /// The private key `subject` uses now: the new one once switched, else `sealed`.
    pub fn private_key(
        &self,
        state: &AppState,
        subject: &Subject,
        current: &WgPublicKey,
        sealed: &Sealed,
    ) -> Result<(WgPublicKey, WgPrivateKey), ApiError> {
        match self.of(subject, current).filter(|p| p.switched) {
            Some(p) => Ok((
                p.next_public_key.clone(),
                keys::open(state.master_key(), subject.owner(), &p.sealed()?)?,
            )),
            None => Ok((
                current.clone(),
                keys::open(state.master_key(), subject.owner(), sealed)?,
            )),
        }
    }
}

/// Starts rotating the keys of `subjects` (all of one node); refused with 409 when one of
/// them rotates already.
pub async fn start(
    state: &AppState,
    subjects: &[Subject],
    reason: &str,
) -> Result<Vec<(Subject, Pending)>, ApiError> {
    let store = state.store();
    let now = Timestamp::now();
    for subject in subjects {
        if store
            .kv_get(NAMESPACE, &subject.key(), now)
            .await?
            .is_some()
        {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "conflict",
                format!(
                    "{} is being rotated already; wait until it finishes",
                    subject.describe()
                ),
            ));
        }
    }
    let mut started = Vec::new();
    for subject in subjects {
        let (public, sealed) = keys::generate(state.master_key(), subject.owner())?;
        let pending = Pending {
            next_public_key: public,
            next_private_key: sealed.as_str().to_owned(),
            switched: false,
            started_at: now,
            reason: reason.to_owned(),
        };
        put(state, subject, &pending).await?;
        let message = format!(
            "{} rotates ({reason}): the peers learn the new key",
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
                serde_json::json!({ "reason": reason, "public_key": pending.next_public_key }),
            )
            .await;
        started.push((subject.clone(), pending));
    }
    state.notify_changed();
    Ok(started)
}

async fn put(state: &AppState, subject: &Subject, pending: &Pending) -> Result<(), ApiError> {
    let text = serde_json::to_string(pending).map_err(|e| ApiError::internal(&e))?;
    Ok(state
        .store()
        .kv_put(NAMESPACE, &subject.key(), &text, None)
        .await?)
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
    /// Its node or tunnel is gone (or the rotation was committed): forget it.
    Drop,
}

/// Whether the origin serves its current configuration, or cannot be waited for.
async fn origin_ready(
    state: &AppState,
    origin: &OriginId,
    now: Timestamp,
) -> Result<bool, ApiError> {
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
    state: &AppState,
    edge: &EdgeNodeId,
    now: Timestamp,
) -> Result<Option<bool>, ApiError> {
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
    state: &AppState,
    subject: &Subject,
    pending: &Pending,
    now: Timestamp,
) -> Result<Outcome, ApiError> {
    let store = state.store();
    match subject {
        Subject::Tunnel(edge, origin) => {
            let Some(tunnel) = store
                .list_tunnels(Some(edge), Some(origin))
                .await?
                .into_iter()
                .next()
            else {
                return Ok(Outcome::Drop);
            };
            if tunnel.public_key == pending.next_public_key {
                return Ok(Outcome::Drop);
            }
            if !pending.switched {
                let ready = origin_ready(state, origin, now).await?;
                return Ok(if ready {
                    Outcome::Switch
                } else {
                    Outcome::Wait
                });
            }
            Ok(match edge_ready(state, edge, now).await? {
                Some(true) => Outcome::Commit,
                Some(false) => Outcome::Wait,
                // A deleted edge's tunnels go with it; a silent one takes the new key
                // when it returns, and its origin knows only that key by then.
                None => Outcome::Commit,
            })
        }
        Subject::Origin(origin) => {
            let row = match store.get_origin(origin).await {
                Ok(row) => row,
                Err(kokoa_core::Error::NotFound { .. }) => return Ok(Outcome::Drop),
                Err(e) => return Err(e.into()),
            };
            if row.wireguard_public_key == pending.next_public_key {
                return Ok(Outcome::Drop);
            }
            if !pending.switched {
                for tunnel in store.list_tunnels(None, Some(origin)).await? {
                    if edge_ready(state, &tunnel.edge_node_id, now).await? == Some(false) {
                        return Ok(Outcome::Wait);
                    }
                }
                return Ok(Outcome::Switch);
            }
            let ready = origin_ready(state, origin, now).await?;
            Ok(if ready {
                Outcome::Commit
            } else {
                Outcome::Wait
            })
        }
    }
}

/// One step of every pending rotation; returns how many are still pending.
pub async fn step(state: &AppState) -> Result<usize, ApiError> {
    let now = Timestamp::now();
    let store = state.store();
    let Rotations(pending) = Rotations::load(state).await?;
    let mut left = 0;
    for (subject, mut rotation) in pending {
        let outcome = match judge(state, &subject, &rotation, now).await {
            Ok(outcome) => outcome,
            Err(e) if e.status() == axum::http::StatusCode::NOT_FOUND => Outcome::Drop,
            Err(e) => return Err(e),
        };
        match outcome {
            Outcome::Wait => left += 1,
            Outcome::Drop => {
                store.kv_delete(NAMESPACE, &subject.key()).await?;
            }
            Outcome::Switch => {
                rotation.switched = true;
                put(state, &subject, &rotation).await?;
                state.notify_changed();
                left += 1;
                let message = format!(
                    "{}: the peers know the new key; switching to it",
                    subject.describe()
                );
                tracing::info!(subject = %subject.key(), "{message}");
                state
                    .events()
                    .emit(
                        kinds::KEY_ROTATION_SWITCHED,
                        Severity::Info,
                        Some(&subject.key()),
                        message,
                        serde_json::json!({}),
                    )
                    .await;
            }
            Outcome::Commit => {
                let sealed = rotation.sealed()?;
                match &subject {
                    Subject::Tunnel(edge, origin) => {
                        store
                            .set_tunnel_key(edge, origin, &rotation.next_public_key, &sealed)
                            .await?
                    }
                    Subject::Origin(origin) => {
                        store
                            .set_origin_key(origin, &rotation.next_public_key, &sealed)
                            .await?
                    }
                }
                store.kv_delete(NAMESPACE, &subject.key()).await?;
                store
                    .kv_put(ROTATED, &subject.key(), &now.to_string(), None)
                    .await?;
                state.notify_changed();
                let took = now.seconds_since(rotation.started_at);
                let message = format!("{} rotated in {took} s", subject.describe());
                tracing::info!(subject = %subject.key(), "{message}");
                state
                    .events()
                    .emit(
                        kinds::KEY_ROTATED,
                        Severity::Info,
                        Some(&subject.key()),
                        message,
                        serde_json::json!({ "public_key": rotation.next_public_key, "seconds": took }),
                    )
                    .await;
            }
        }
    }
    Ok(left)
}

/// Starts the rotation of the oldest key older than `every`, if none is pending: one at a
/// time, so a schedule never touches many nodes at once.
pub async fn schedule(state: &AppState, every: Duration) -> Result<(), ApiError> {
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
    let mut due: Vec<(Timestamp, Subject)> = Vec::new();
    for origin in store.list_origins().await? {
        let subject = Subject::Origin(origin.id.clone());
        due.push((since(&subject, origin.created_at), subject));
    }
    for tunnel in store.list_tunnels(None, None).await? {
        let subject = Subject::Tunnel(tunnel.edge_node_id, tunnel.origin_id);
        due.push((since(&subject, tunnel.created_at), subject));
    }
    let oldest = due
        .into_iter()
        .filter(|(at, _)| now.seconds_since(*at) > every.as_secs() as i64)
        .min_by_key(|(at, _)| *at);
    if let Some((_, subject)) = oldest {
        start(state, &[subject], "schedule").await?;
    }
    Ok(())
}

/// Advances rotations every second on the leader, and starts scheduled ones.
pub async fn run(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut round: u32 = 0;
    loop {
        if sleep_or_stop(PERIOD, &mut stop).await {
            return;
        }
        if !state.leader().is_leader() {
            continue;
        }
        round = round.wrapping_add(1);
        if let Err(e) = step(&state).await {
            tracing::warn!(error = %e.message(), "key rotation step failed; will retry");
        }
        if let Some(every) = state.settings().key_rotation
            && round.is_multiple_of(SCHEDULE_EVERY)
            && let Err(e) = schedule(&state, every).await
        {
            tracing::warn!(error = %e.message(), "cannot start a scheduled key rotation");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_through_their_keys() {
        let (edge, origin) = (EdgeNodeId::new(), OriginId::new());
        for subject in [
            Subject::Tunnel(edge, origin.clone()),
            Subject::Origin(origin),
        ] {
            assert_eq!(Subject::parse(&subject.key()), Some(subject));
        }
        for bad in ["", "tunnel/x", "origin/a/b", "node/x", "origin/x/"] {
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
