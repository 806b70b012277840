//! What the origin reports every 30 s and whenever a service goes up or down (SPEC §8.4):
//! its services' states, CPU, memory, disk and the number of edges connected.

use std::path::Path;

use kokoa_agent::{LinkState, NodeStatus};
use kokoa_core::OriginId;
use serde::Serialize;

use crate::{checks::ServiceReport, firewall::FirewallState};

/// The body of `POST /api/v1/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Heartbeat {
    /// This origin.
    pub node_id: OriginId,
    /// Its own judgement, see [`Heartbeat::new`].
    pub status: NodeStatus,
    /// Each service's state.
    pub services: Vec<ServiceReport>,
    /// Host figures.
    pub metrics: Metrics,
    /// Why the latest configuration is not applied, while it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The tunnel's firewall rules: `"on"`, `"off"` or `"failed: <reason>"`.
    pub firewall: FirewallState,
    /// The port the edges' application check is answered on over the tunnel, while it is
    /// (see [`ApplicationEndpoint`](crate::ApplicationEndpoint)); none set by [`Heartbeat::new`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_port: Option<u16>,
    /// The `config_hash` of the configuration applied now; none before the first (and
    /// none set by [`Heartbeat::new`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// Where the agent serves its metrics (`--metrics-listen`); none set by
    /// [`Heartbeat::new`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// Host figures of a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    /// Busy CPU share since the previous heartbeat, 0–100.
    pub cpu_percent: f64,
    /// Memory in use, 0–100.
    pub memory_percent: f64,
    /// Space used on the root file system, 0–100, as `df` counts it.
    pub disk_percent: f64,
    /// Edges whose latest handshake is less than 180 s old.
    pub edges_connected: usize,
}

impl Heartbeat {
    /// A heartbeat. The status is `unhealthy` while no configuration is applied (no
    /// tunnel), `degraded` when a service is down, the latest configuration failed, or
    /// edges are configured but none is connected, and `healthy` otherwise. The firewall's
    /// state does not count: without its rules the origin serves as before.
    pub fn new(
        node_id: OriginId,
        applied: bool,
        edges_configured: usize,
        services: Vec<ServiceReport>,
        metrics: Metrics,
        last_error: Option<String>,
        firewall: FirewallState,
    ) -> Self {
        let status = if !applied {
            NodeStatus::Unhealthy
        } else if last_error.is_some()
            || services.iter().any(|s| s.status == LinkState::Down)
            || (edges_configured > 0 && metrics.edges_connected == 0)
        {
            NodeStatus::Degraded
        } else {
            NodeStatus::Healthy
        };
        Self {
            node_id,
            status,
            services,
            metrics,
            last_error,
            firewall,
            application_port: None,
            config_hash: None,
            metrics_address: None,
        }
    }
}

/// The used share of the file system holding `path`, 0–100: used blocks over the blocks
/// available to unprivileged users plus the used ones (what `df` prints as Use%). 0 when it
/// cannot be read.
pub fn disk_percent(path: &Path) -> f64 {
    let Ok(stat) = rustix::fs::statvfs(path) else {
        return 0.0;
    };
    let used = stat.f_blocks.saturating_sub(stat.f_bfree);
    let usable = used + stat.f_bavail;
    if usable == 0 {
        return 0.0;
    }
    100.0 * used as f64 / usable as f64
}

#[cfg(test)]
mod tests {
    use kokoa_core::Name;

    use super::*;

    fn report(name: &str, status: LinkState) -> ServiceReport {
        ServiceReport {
            name: Name::parse(name).unwrap(),
            port: 8001,
            status,
        }
    }

    fn metrics(edges_connected: usize) -> Metrics {
        Metrics {
            cpu_percent: 1.5,
            memory_percent: 40.0,
            disk_percent: 50.0,
            edges_connected,
        }
    }

    #[test]
    fn status_follows_tunnel_services_and_errors() {
        let id = OriginId::parse("org_1").unwrap();
        let up = || vec![report("web", LinkState::Up)];
        let status = |applied, configured, services, m, err| {
            Heartbeat::new(
                id.clone(),
                applied,
                configured,
                services,
                m,
                err,
                FirewallState::On,
            )
            .status
        };
        assert_eq!(status(true, 1, up(), metrics(1), None), NodeStatus::Healthy);
        assert_eq!(status(true, 0, up(), metrics(0), None), NodeStatus::Healthy);
        assert_eq!(
            status(false, 1, up(), metrics(1), None),
            NodeStatus::Unhealthy
        );
        assert_eq!(
            status(true, 2, up(), metrics(0), None),
            NodeStatus::Degraded
        );
        let one_down = vec![report("web", LinkState::Up), report("api", LinkState::Down)];
        assert_eq!(
            status(true, 1, one_down, metrics(1), None),
            NodeStatus::Degraded
        );
        let failed = Some("wg0.conf does not parse".to_owned());
        assert_eq!(
            status(true, 1, up(), metrics(1), failed),
            NodeStatus::Degraded
        );
    }

    #[test]
    fn body_has_the_documented_fields() {
        let heartbeat = Heartbeat::new(
            OriginId::parse("org_1").unwrap(),
            true,
            1,
            vec![report("web", LinkState::Down)],
            metrics(1),
            None,
            FirewallState::Failed("nft not found".into()),
        );
        assert_eq!(
            serde_json::to_value(&heartbeat).unwrap(),
            serde_json::json!({
                "node_id": "org_1",
                "status": "degraded",
                "services": [{"name": "web", "port": 8001, "status": "down"}],
                "metrics": {
                    "cpu_percent": 1.5,
                    "memory_percent": 40.0,
                    "disk_percent": 50.0,
                    "edges_connected": 1,
                },
                "firewall": "failed: nft not found",
            })
        );
    }

    #[test]
    fn disk_use_of_the_root_file_system_is_a_share() {
        let used = disk_percent(Path::new("/"));
        assert!(used > 0.0 && used <= 100.0, "{used}");
        assert_eq!(disk_percent(Path::new("/no/such/dir")), 0.0);
    }
}
