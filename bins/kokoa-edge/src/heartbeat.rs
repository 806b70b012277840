//! What the edge reports every few seconds (SPEC §8.4), and the body of its `/health` page.

use kokoa_agent::{LinkState, NodeStatus, Sample};
use kokoa_core::{ContentHash, EdgeNodeId, HostTraffic};
use serde::Serialize;

use crate::plane::TunnelReport;

/// Host and traffic figures of a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Established connections on the HTTP and HTTPS ports.
    pub connections_active: u64,
    /// CPU in use since the previous heartbeat, 0–100.
    pub cpu_percent: f64,
    /// Memory in use, 0–100.
    pub memory_percent: f64,
    /// Average round trip to the origins that answered a ping, in milliseconds; `null`
    /// when none did.
    pub tunnel_rtt_ms: Option<f64>,
    /// Requests served per second since the previous heartbeat.
    pub requests_per_second: f64,
    /// Share of those requests answered with a 5xx status, 0–100.
    pub error_rate: f64,
}

/// The body of `POST /api/v1/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heartbeat {
    /// This edge.
    pub node_id: EdgeNodeId,
    /// See [`NodeStatus`].
    pub status: NodeStatus,
    /// Down when any tunnel is down (up when there are none).
    pub tunnel_status: LinkState,
    /// Host and traffic figures.
    pub metrics: Metrics,
    /// Each tunnel.
    pub tunnels: Vec<TunnelReport>,
    /// Why the edge is degraded by a configuration, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The `config_hash` of the configuration serving now: the control plane compares it
    /// with the current one to know the edge applied it (certificates included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<ContentHash>,
    /// Where the agent serves its metrics (`--metrics-listen`); none set by
    /// [`Heartbeat::new`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Requests counted since the previous delivered heartbeat, by host name (the
    /// control plane's traffic analytics); none set by [`Heartbeat::new`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<HostTraffic>,
}

impl Heartbeat {
    /// Judges the edge from what was observed.
    pub fn new(
        node_id: EdgeNodeId,
        serving: bool,
        last_error: Option<String>,
        sample: Sample,
        tunnels: Vec<TunnelReport>,
        config_hash: Option<ContentHash>,
    ) -> Self {
        let tunnel_status = if tunnels.iter().all(|t| t.status == LinkState::Up) {
            LinkState::Up
        } else {
            LinkState::Down
        };
        let status = if !serving {
            NodeStatus::Unhealthy
        } else if last_error.is_some() || tunnel_status == LinkState::Down {
            NodeStatus::Degraded
        } else {
            NodeStatus::Healthy
        };
        let rtts: Vec<f64> = tunnels.iter().filter_map(|t| t.rtt_ms).collect();
        let tunnel_rtt_ms =
            (!rtts.is_empty()).then(|| rtts.iter().sum::<f64>() / rtts.len() as f64);
        Self {
            node_id,
            status,
            tunnel_status,
            metrics: Metrics {
                connections_active: sample.connections_active,
                cpu_percent: sample.cpu_percent,
                memory_percent: sample.memory_percent,
                tunnel_rtt_ms,
                requests_per_second: sample.requests_per_second,
                error_rate: sample.error_rate,
            },
            tunnels,
            last_error,
            config_hash,
            metrics_address: None,
            traffic: Vec::new(),
        }
    }

    /// The body of the edge's public `GET /health`: `{"status":"healthy","tunnels":"up"}`.
    /// It tells a checker whether the edge and its tunnels work, and nothing about the
    /// origins behind it.
    pub fn health_body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Health {
            status: NodeStatus,
            tunnels: LinkState,
        }
        let mut body = serde_json::to_vec(&Health {
            status: self.status,
            tunnels: self.tunnel_status,
        })
        .unwrap_or_default();
        body.push(b'\n');
        body
    }
}

#[cfg(test)]
mod tests {
    use kokoa_core::OriginId;

    use super::*;

    fn tunnel(status: LinkState, rtt_ms: Option<f64>) -> TunnelReport {
        TunnelReport {
            origin_id: OriginId::new(),
            interface: "kk0123456789ab".into(),
            status,
            rtt_ms,
            handshake_age_seconds: None,
            rx_bytes: 0,
            tx_bytes: 0,
            application: None,
        }
    }

    fn beat(serving: bool, error: Option<&str>, tunnels: Vec<TunnelReport>) -> Heartbeat {
        Heartbeat::new(
            EdgeNodeId::parse("edge_1").unwrap(),
            serving,
            error.map(str::to_owned),
            Sample::default(),
            tunnels,
            None,
        )
    }

    #[test]
    fn judges_the_edge() {
        let up = || tunnel(LinkState::Up, Some(2.0));
        assert_eq!(
            beat(true, None, vec![up(), up()]).status,
            NodeStatus::Healthy
        );
        assert_eq!(beat(true, None, vec![]).tunnel_status, LinkState::Up);
        let down = beat(true, None, vec![up(), tunnel(LinkState::Down, None)]);
        assert_eq!(
            (down.status, down.tunnel_status),
            (NodeStatus::Degraded, LinkState::Down)
        );
        assert_eq!(
            beat(true, Some("refused"), vec![]).status,
            NodeStatus::Degraded
        );
        assert_eq!(beat(false, None, vec![up()]).status, NodeStatus::Unhealthy);
    }

    #[test]
    fn serialises_the_documented_fields() {
        let hb = beat(
            true,
            Some("refused configuration"),
            vec![
                tunnel(LinkState::Up, Some(2.0)),
                tunnel(LinkState::Up, Some(4.0)),
            ],
        );
        let json = serde_json::to_value(&hb).unwrap();
        assert_eq!(json["node_id"], "edge_1");
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["tunnel_status"], "up");
        assert_eq!(json["last_error"], "refused configuration");
        assert_eq!(json["metrics"]["tunnel_rtt_ms"], 3.0);
        for field in [
            "connections_active",
            "cpu_percent",
            "memory_percent",
            "requests_per_second",
            "error_rate",
        ] {
            assert!(json["metrics"][field].is_number(), "{field}: {json}");
        }
        assert_eq!(json["tunnels"][0]["status"], "up");
        assert_eq!(json["tunnels"][0]["interface"], "kk0123456789ab");
        let healthy = beat(true, None, vec![]);
        assert!(
            serde_json::to_value(&healthy)
                .unwrap()
                .get("last_error")
                .is_none()
        );
        assert!(serde_json::to_value(&healthy).unwrap()["metrics"]["tunnel_rtt_ms"].is_null());
        assert_eq!(
            healthy.health_body(),
            b"{\"status\":\"healthy\",\"tunnels\":\"up\"}\n"
        );
    }
}
