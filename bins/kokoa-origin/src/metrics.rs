//! The origin's figures for Prometheus (`kokoa-origin run --metrics-listen ADDR`), as of
//! the last heartbeat: each edge's tunnel (latest handshake, bytes each way), the edges
//! connected, and each checked service.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{Mutex, OnceLock, PoisonError},
    time::SystemTime,
};

use kokoa_agent::{
    LinkState,
    prometheus::{escape, family, number},
};
use kokoa_wg::{InterfaceConfig, apply::PeerStats};

use crate::checks::ServiceReport;

/// One edge's tunnel as the origin sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EdgeTunnel {
    /// The edge's name (its peer's comment `edge: NAME`), else its tunnel address.
    pub edge: String,
    pub stats: PeerStats,
}

impl EdgeTunnel {
    /// Names each of `peers` by the edge it is in `interface`'s configuration.
    pub(crate) fn named(interface: &InterfaceConfig, peers: Vec<PeerStats>) -> Vec<Self> {
        peers
            .into_iter()
            .map(|stats| {
                let peer = interface
                    .config
                    .peers
                    .iter()
                    .find(|p| p.public_key == stats.public_key);
                let edge = peer
                    .and_then(|p| p.comment.as_ref())
                    .and_then(|c| c.as_str().strip_prefix("edge: ").map(str::to_owned))
                    .or_else(|| {
                        peer.and_then(|p| p.allowed_ips.first())
                            .map(|net| net.addr().to_string())
                    })
                    .unwrap_or_else(|| stats.public_key.to_string());
                Self { edge, stats }
            })
            .collect()
    }
}

/// What the origin agent shows at `/metrics`.
#[derive(Debug, Default)]
pub struct OriginMetrics {
    inner: Mutex<Observed>,
    address: OnceLock<SocketAddr>,
}

#[derive(Debug, Default)]
struct Observed {
    /// `None` before the first heartbeat.
    edges_connected: Option<usize>,
    tunnels: Vec<EdgeTunnel>,
    services: Vec<ServiceReport>,
}

impl OriginMetrics {
    /// Notes where these metrics are served; heartbeats tell the control plane, which lists
    /// it for Prometheus (`GET /api/v1/prometheus/targets`).
    pub fn served_at(&self, address: SocketAddr) {
        let _ = self.address.set(address);
    }

    pub(crate) fn address(&self) -> Option<SocketAddr> {
        self.address.get().copied()
    }

    pub(crate) fn observe(
        &self,
        edges_connected: usize,
        tunnels: Vec<EdgeTunnel>,
        services: Vec<ServiceReport>,
    ) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = Observed {
            edges_connected: Some(edges_connected),
            tunnels,
            services,
        };
    }

    /// The text of `GET /metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        family(
            &mut out,
            "kokoa_origin_build_info",
            "gauge",
            "The agent's version.",
        );
        let _ = writeln!(
            out,
            "kokoa_origin_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let observed = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(connected) = observed.edges_connected else {
            return out;
        };
        family(
            &mut out,
            "kokoa_origin_edges_connected",
            "gauge",
            "Edges with a handshake in the last 180 s.",
        );
        let _ = writeln!(out, "kokoa_origin_edges_connected {connected}");
        let now = SystemTime::now();
        family(
            &mut out,
            "kokoa_origin_tunnel_handshake_age_seconds",
            "gauge",
            "Seconds since the latest handshake with each edge (absent before the first).",
        );
        for tunnel in &observed.tunnels {
            if let Some(at) = tunnel.stats.latest_handshake {
                let age = now.duration_since(at).unwrap_or_default().as_secs_f64();
                let _ = writeln!(
                    out,
                    "kokoa_origin_tunnel_handshake_age_seconds{{edge=\"{}\"}} {}",
                    escape(&tunnel.edge),
                    number(age)
                );
            }
        }
        for (name, help, bytes) in [
            (
                "kokoa_origin_tunnel_receive_bytes_total",
                "Bytes received from each edge through its tunnel.",
                (|s: &PeerStats| s.rx_bytes) as fn(&PeerStats) -> u64,
            ),
            (
                "kokoa_origin_tunnel_transmit_bytes_total",
                "Bytes sent to each edge through its tunnel.",
                |s: &PeerStats| s.tx_bytes,
            ),
        ] {
            family(&mut out, name, "counter", help);
            for tunnel in &observed.tunnels {
                let _ = writeln!(
                    out,
                    "{name}{{edge=\"{}\"}} {}",
                    escape(&tunnel.edge),
                    bytes(&tunnel.stats)
                );
            }
        }
        family(
            &mut out,
            "kokoa_origin_service_up",
            "gauge",
            "Whether each checked service answers (1) or not (0).",
        );
        for service in &observed.services {
            let _ = writeln!(
                out,
                "kokoa_origin_service_up{{service=\"{}\",port=\"{}\"}} {}",
                escape(service.name.as_str()),
                service.port,
                u8::from(service.status == LinkState::Up)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kokoa_wg::{Comment, Config, Interface, InterfaceName, Peer, PrivateKey};

    use super::*;

    #[test]
    fn tunnels_are_named_by_their_edge_and_rendered() {
        let (named, unnamed, stranger) = (
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
        );
        let mut edge1 = Peer::new(named);
        edge1.comment = Some(Comment::new("edge: edge1").unwrap());
        edge1.allowed_ips = vec!["10.0.1.10/32".parse().unwrap()];
        let mut edge2 = Peer::new(unnamed);
        edge2.allowed_ips = vec!["10.0.1.11/32".parse().unwrap()];
        let config = Config::new(Interface::new(PrivateKey::generate()), vec![edge1, edge2]);
        let interface = InterfaceConfig::new(InterfaceName::new("wg0").unwrap(), config);
        let recent = SystemTime::now() - Duration::from_secs(30);
        let tunnels = EdgeTunnel::named(
            &interface,
            vec![
                PeerStats::new(named, Some(recent), 1000, 2000),
                PeerStats::new(unnamed, None, 0, 0),
                PeerStats::new(stranger, None, 5, 6),
            ],
        );
        let edges: Vec<&str> = tunnels.iter().map(|t| t.edge.as_str()).collect();
        assert_eq!(edges, ["edge1", "10.0.1.11", &stranger.to_string()]);

        let metrics = OriginMetrics::default();
        assert!(!metrics.render().contains("kokoa_origin_edges_connected"));
        metrics.observe(1, tunnels, Vec::new());
        let text = metrics.render();
        for expected in [
            "kokoa_origin_edges_connected 1\n",
            "kokoa_origin_tunnel_receive_bytes_total{edge=\"edge1\"} 1000\n",
            "kokoa_origin_tunnel_transmit_bytes_total{edge=\"edge1\"} 2000\n",
            "kokoa_origin_tunnel_receive_bytes_total{edge=\"10.0.1.11\"} 0\n",
        ] {
            assert!(text.contains(expected), "{expected} not in\n{text}");
        }
        let age: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("kokoa_origin_tunnel_handshake_age_seconds{edge=\"edge1\"} ")
            })
            .unwrap()
            .parse()
            .unwrap();
        assert!((29.0..60.0).contains(&age), "{age}");
        assert!(
            !text.contains("handshake_age_seconds{edge=\"10.0.1.11\"}"),
            "{text}"
        );

        // What the shipped dashboard shows of an origin is served.
        let dashboard = include_str!("../../../packaging/grafana/kokoa.json");
        let named: Vec<&str> = dashboard
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("kokoa_origin_"))
            .collect();
        assert!(!named.is_empty());
        for name in named {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
    }
}
