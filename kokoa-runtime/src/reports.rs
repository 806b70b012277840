//! What the edges' heartbeats say about their tunnels, as the health judge and the DNS
//! manager both read it, and the judge's guard against itself.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, SystemTime},
};

use kokoa_core::{EdgeNode, EdgeNodeId, EdgeStatus, EdgeTunnel, OriginId, Timestamp};
use kokoa_health::{HealthState, TunnelStatus};
use serde_json::Value;

/// Where the health judge notes that it suspects itself (key [`OBSERVER_SUSPECT`]): while
/// it is there, no edge leaves DNS for its checks and none is destroyed.
pub const GUARDS: &str = "health-guards";
/// The key of the observer guard in [`GUARDS`].
pub const OBSERVER_SUSPECT: &str = "observer-suspect";

/// What one edge reports of its tunnel to an origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The edge that reports.
    pub edge: EdgeNodeId,
    /// Its tunnel to the origin.
    pub tunnel: TunnelStatus,
    /// The origin's application check through this tunnel (unknown when the edge runs
    /// none, or its tunnel is down: a check that cannot reach the origin says nothing of
    /// the application).
    pub application: HealthState,
}

/// Each origin's tunnel as each edge with a fresh heartbeat reports it. An edge speaks only
/// for the tunnels it has: a report about any other origin is ignored.
pub fn tunnel_reports(
    edges: &[EdgeNode],
    tunnels: &[EdgeTunnel],
    now: SystemTime,
    fresh_for: Duration,
) -> HashMap<OriginId, Vec<Seen>> {
    let own: BTreeSet<(&EdgeNodeId, &OriginId)> = tunnels
        .iter()
        .map(|t| (&t.edge_node_id, &t.origin_id))
        .collect();
    let mut out: HashMap<OriginId, Vec<_>> = HashMap::new();
    for edge in edges.iter().filter(|e| e.status != EdgeStatus::Deleted) {
        let fresh = edge
            .last_heartbeat
            .is_some_and(|t| !kokoa_health::is_stale(system_time(t), now, fresh_for));
        if !fresh {
            continue;
        }
        let tunnels = edge
            .last_metrics
            .as_ref()
            .and_then(|m| m.get("tunnels"))
            .and_then(Value::as_array);
        for tunnel in tunnels.into_iter().flatten() {
            let (Some(origin), Some(status)) = (
                tunnel
                    .get("origin_id")
                    .and_then(Value::as_str)
                    .and_then(|o| OriginId::parse(o).ok()),
                tunnel.get("status").and_then(Value::as_str),
            ) else {
                continue;
            };
            if !own.contains(&(&edge.id, &origin)) {
                continue;
            }
            let (tunnel, application) = if status == "up" {
                let application = match tunnel.get("application").and_then(Value::as_str) {
                    Some("up") => HealthState::Healthy,
                    Some("down") => HealthState::Unhealthy,
                    _ => HealthState::Unknown,
                };
                (TunnelStatus::Up, application)
            } else {
                (TunnelStatus::Down, HealthState::Unknown)
            };
            out.entry(origin).or_default().push(Seen {
                edge: edge.id.clone(),
                tunnel,
                application,
            });
        }
    }
    out
}

/// Per origin, the edges whose tunnel to it is down while another edge's is up (by fresh
/// heartbeats): the edge is at fault, not the origin.
pub fn cut_off(
    edges: &[EdgeNode],
    tunnels: &[EdgeTunnel],
    fresh_for: Duration,
) -> HashMap<OriginId, BTreeSet<EdgeNodeId>> {
    tunnel_reports(edges, tunnels, SystemTime::now(), fresh_for)
        .into_iter()
        .filter_map(|(origin, seen)| {
            let any_up = seen.iter().any(|s| s.tunnel == TunnelStatus::Up);
            let down: BTreeSet<_> = seen
                .into_iter()
                .filter(|s| s.tunnel == TunnelStatus::Down)
                .map(|s| s.edge)
                .collect();
            (any_up && !down.is_empty()).then_some((origin, down))
        })
        .collect()
}

/// `t` as a [`SystemTime`] (times before 1970 as 1970).
pub fn system_time(t: Timestamp) -> SystemTime {
    let secs = u64::try_from(t.as_unix()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}
