//! The edge's figures for Prometheus (`kokoa-edge run --metrics-listen ADDR`): requests by
//! host name and status class with their durations and bytes (from nginx's access log, as
//! of the last heartbeat), the edge's state and connections, configuration applies, and
//! each tunnel's state and round trip.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use kokoa_agent::{
    LinkState, NodeStatus, Traffic,
    prometheus::{escape, family, number},
};

use crate::heartbeat::Heartbeat;

/// How a configuration apply ended, as the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Apply {
    /// Serving now.
    Applied,
    /// Refused as invalid (or forged); the previous one keeps serving.
    Refused,
    /// Failed to apply (nginx, WireGuard); tried again.
    Failed,
}

impl Apply {
    const ALL: [Self; 3] = [Self::Applied, Self::Refused, Self::Failed];

    fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// What the edge agent shows at `/metrics`; shared by the agent's loops and the server.
#[derive(Debug, Default)]
pub struct EdgeMetrics {
    traffic: Arc<Traffic>,
    inner: Mutex<Observed>,
    address: OnceLock<SocketAddr>,
}

#[derive(Debug, Default)]
struct Observed {
    heartbeat: Option<Heartbeat>,
    applies: BTreeMap<Apply, u64>,
    /// Unix time of the last successful apply.
    applied_at: Option<f64>,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

impl EdgeMetrics {
    /// Where the access log's requests are counted: give it to the
    /// [`Sampler`](kokoa_agent::Sampler) with `with_traffic`.
    pub fn traffic(&self) -> Arc<Traffic> {
        Arc::clone(&self.traffic)
    }

    /// Notes where these metrics are served; heartbeats tell the control plane, which lists
    /// it for Prometheus (`GET /api/v1/prometheus/targets`).
    pub fn served_at(&self, address: SocketAddr) {
        let _ = self.address.set(address);
    }

    pub(crate) fn address(&self) -> Option<SocketAddr> {
        self.address.get().copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn heartbeat(&self, heartbeat: &Heartbeat) {
        self.lock().heartbeat = Some(heartbeat.clone());
    }

    pub(crate) fn apply(&self, outcome: Apply) {
        let mut observed = self.lock();
        *observed.applies.entry(outcome).or_default() += 1;
        if outcome == Apply::Applied {
            observed.applied_at = Some(unix_now());
        }
    }

    /// The text of `GET /metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "kokoa_edge_build_info",
            "gauge",
            "The agent's version.",
        );
        let _ = writeln!(
            out,
            "kokoa_edge_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let observed = self.lock();
        family(
            &mut out,
            "kokoa_edge_config_applies_total",
            "counter",
            "Configurations applied, refused (the previous one kept serving) or failed.",
        );
        for outcome in Apply::ALL {
            let count = observed.applies.get(&outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "kokoa_edge_config_applies_total{{outcome=\"{}\"}} {count}",
                outcome.as_str()
            );
        }
        if let Some(at) = observed.applied_at {
            family(
                &mut out,
                "kokoa_edge_config_applied_timestamp_seconds",
                "gauge",
                "When the configuration serving now was applied (Unix time).",
            );
            let _ = writeln!(
                out,
                "kokoa_edge_config_applied_timestamp_seconds {}",
                number(at)
            );
        }
        if let Some(heartbeat) = &observed.heartbeat {
            if let Some(hash) = &heartbeat.config_hash {
                family(
                    &mut out,
                    "kokoa_edge_config_info",
                    "gauge",
                    "The configuration serving now, by its hash (the control plane's \
                     config_hash).",
                );
                let _ = writeln!(
                    out,
                    "kokoa_edge_config_info{{config_hash=\"{}\"}} 1",
                    escape(&hash.to_string())
                );
            }
            family(
                &mut out,
                "kokoa_edge_status",
                "gauge",
                "The edge's state as its last heartbeat told (1 for the current one).",
            );
            for (status, name) in [
                (NodeStatus::Healthy, "healthy"),
                (NodeStatus::Degraded, "degraded"),
                (NodeStatus::Unhealthy, "unhealthy"),
            ] {
                let _ = writeln!(
                    out,
                    "kokoa_edge_status{{status=\"{name}\"}} {}",
                    u8::from(heartbeat.status == status)
                );
            }
            family(
                &mut out,
                "kokoa_edge_connections_active",
                "gauge",
                "Established connections on the HTTP and HTTPS ports.",
            );
            let _ = writeln!(
                out,
                "kokoa_edge_connections_active {}",
                heartbeat.metrics.connections_active
            );
            family(
                &mut out,
                "kokoa_edge_tunnel_up",
                "gauge",
                "Whether the origin answers through its tunnel (1) or not (0), by origin.",
            );
            for tunnel in &heartbeat.tunnels {
                let _ = writeln!(
                    out,
                    "kokoa_edge_tunnel_up{{origin_id=\"{}\"}} {}",
                    escape(tunnel.origin_id.as_str()),
                    u8::from(tunnel.status == LinkState::Up)
                );
            }
            family(
                &mut out,
                "kokoa_edge_tunnel_rtt_seconds",
                "gauge",
                "The last ping's round trip through each tunnel, by origin.",
            );
            for tunnel in &heartbeat.tunnels {
                if let Some(ms) = tunnel.rtt_ms {
                    let _ = writeln!(
                        out,
                        "kokoa_edge_tunnel_rtt_seconds{{origin_id=\"{}\"}} {}",
                        escape(tunnel.origin_id.as_str()),
                        number(ms / 1000.0)
                    );
                }
            }
            family(
                &mut out,
                "kokoa_edge_tunnel_handshake_age_seconds",
                "gauge",
                "Seconds since each tunnel's latest WireGuard handshake, by origin.",
            );
            for tunnel in &heartbeat.tunnels {
                if let Some(age) = tunnel.handshake_age_seconds {
                    let _ = writeln!(
                        out,
                        "kokoa_edge_tunnel_handshake_age_seconds{{origin_id=\"{}\"}} {age}",
                        escape(tunnel.origin_id.as_str())
                    );
                }
            }
            for (name, help, bytes) in [
                (
                    "kokoa_edge_tunnel_receive_bytes_total",
                    "Bytes received through each tunnel, by origin.",
                    (|t: &crate::plane::TunnelReport| t.rx_bytes) as fn(&_) -> u64,
                ),
                (
                    "kokoa_edge_tunnel_transmit_bytes_total",
                    "Bytes sent through each tunnel, by origin.",
                    |t| t.tx_bytes,
                ),
            ] {
                family(&mut out, name, "counter", help);
                for tunnel in &heartbeat.tunnels {
                    let _ = writeln!(
                        out,
                        "{name}{{origin_id=\"{}\"}} {}",
                        escape(tunnel.origin_id.as_str()),
                        bytes(tunnel)
                    );
                }
            }
        }
        drop(observed);
        self.traffic.render(&mut out, "kokoa_edge");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every edge metric the shipped alert rules and Grafana dashboard name is one the
    /// edge serves (a histogram by its family name).
    #[test]
    fn the_shipped_rules_and_dashboard_name_served_metrics() {
        let metrics = EdgeMetrics::default();
        metrics.apply(Apply::Applied);
        metrics.heartbeat(&Heartbeat::new(
            kokoa_core::EdgeNodeId::new(),
            true,
            None,
            kokoa_agent::Sample::default(),
            Vec::new(),
            None,
        ));
        let text = metrics.render();
        for (file, shipped) in [
            (
                "kokoa-alerts.yml",
                include_str!("../../../packaging/prometheus/kokoa-alerts.yml"),
            ),
            (
                "kokoa.json",
                include_str!("../../../packaging/grafana/kokoa.json"),
            ),
        ] {
            let named: Vec<&str> = shipped
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("kokoa_edge_"))
                .map(|w| w.trim_end_matches("_bucket"))
                .collect();
            assert!(!named.is_empty(), "{file}");
            for name in named {
                assert!(
                    text.contains(&format!("# TYPE {name} ")),
                    "{file} names {name}, which the edge does not serve:\n{text}"
                );
            }
        }
    }
}
