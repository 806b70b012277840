//! kokoa-runtime's DNS duty embedded alone: "keep these host names' A records on the
//! healthy edges", over a store of its own (here the in-memory one) and a PowerDNS server,
//! with no web server, API or database of the control plane.
//!
//! [`Published::new`] writes what the duty reads — a zone at PowerDNS with its sealed API
//! key, an origin with a route, and edges that reach the origin — and
//! [`Published::reconcile`] runs one round of the duty, as its loop
//! ([`kokoa_runtime::dns::run`]) would every minute and at every change.

use std::{error::Error, net::IpAddr, sync::Arc};

use kokoa_core::{
    CertificateMode, DnsZone, DnsZoneId, EdgeLifecycle, EdgeNode, EdgeNodeId, EdgeStatus, Hostname,
    Name, Port, Protocol, Route, RouteId, SubnetPool, Timestamp,
};
use kokoa_runtime::{
    Runtime, RuntimeSettings, dns,
    seal::{SealedJson, seal_json},
};
use kokoa_store::{MasterKey, MemoryStore, NewOrigin, NewService, NewTunnel, Store};

/// A boxed error, for an example.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// One host name published through edges, with the duty that keeps its records.
#[derive(Debug)]
pub struct Published {
    /// What the duty works with.
    pub runtime: Runtime,
    /// The edges, in the order of the addresses given.
    pub edges: Vec<EdgeNode>,
}

impl Published {
    /// `hostname` in `zone` (which must exist at the PowerDNS server of `api_url`),
    /// served by one edge per address of `edges`.
    pub async fn new(
        api_url: &str,
        api_key: &str,
        zone: &str,
        hostname: &str,
        edges: &[IpAddr],
    ) -> Result<Self, BoxError> {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let runtime = Runtime::new(
            Arc::clone(&store),
            MasterKey::generate(),
            RuntimeSettings::default(),
        );
        let now = Timestamp::now();

        // The zone, with the provider's API key sealed under the master key.
        let zone = DnsZone {
            id: DnsZoneId::new(),
            name: Hostname::parse(zone)?,
            provider: Name::parse("powerdns")?,
            provider_zone_id: None,
            settings: serde_json::json!({ "url": api_url }),
            ttl: 60,
            created_at: now,
        };
        let credentials = serde_json::json!({ "api_key": api_key });
        let sealed = seal_json(
            runtime.master_key(),
            SealedJson::Zone(&zone.id),
            credentials.as_object().ok_or("credentials are an object")?,
        );
        store.create_dns_zone(&zone, Some(&sealed)).await?;

        // An origin serving the host name, and the edges that reach it.
        let origin = store
            .create_origin(
                &SubnetPool::default(),
                NewOrigin {
                    id: kokoa_core::OriginId::new(),
                    name: Name::parse("home")?,
                    domain: None,
                    services: vec![NewService {
                        name: Name::parse("web")?,
                        port: Port::new(8080)?,
                        protocol: Protocol::Http,
                        health_check_path: None,
                    }],
                    created_at: now,
                },
            )
            .await?;
        store
            .create_route(&Route {
                id: RouteId::new(),
                hostname: Hostname::parse(hostname)?,
                origin_id: origin.id.clone(),
                target_port: Port::new(8080)?,
                certificate: CertificateMode::Manual,
                created_at: now,
            })
            .await?;
        let mut created = Vec::new();
        for (n, address) in edges.iter().enumerate() {
            let edge = EdgeNode {
                id: EdgeNodeId::new(),
                name: Name::parse(&format!("edge-{}", n + 1))?,
                origin_id: None,
                provider: Name::parse("manual")?,
                region: Name::parse("home")?,
                public_ip: Some(*address),
                status: EdgeStatus::Active,
                last_heartbeat: Some(now),
                last_metrics: None,
                health_check_failures: 0,
                created_at: now,
                deleted_at: None,
                instance_id: None,
                lifecycle: EdgeLifecycle::default(),
                wireguard_public_key: None,
            };
            store.create_edge(&edge).await?;
            store
                .create_tunnel(NewTunnel {
                    edge_node_id: edge.id.clone(),
                    origin_id: origin.id.clone(),
                    created_at: now,
                })
                .await?;
            created.push(edge);
        }
        Ok(Self {
            runtime,
            edges: created,
        })
    }

    /// Marks edge `index` healthy or not, as the health checks would.
    pub async fn set_healthy(&mut self, index: usize, healthy: bool) -> Result<(), BoxError> {
        let edge = self.edges.get_mut(index).ok_or("no such edge")?;
        edge.status = if healthy {
            EdgeStatus::Active
        } else {
            EdgeStatus::Unhealthy
        };
        self.runtime.store().update_edge(edge).await?;
        Ok(())
    }

    /// One round of the DNS duty: leads (alone on its store, at once), plans every zone
    /// and applies the difference; returns the changes made, as zone file lines.
    pub async fn reconcile(&self) -> Result<Vec<String>, BoxError> {
        if !self.runtime.leader().claim(&self.runtime).await {
            return Err("the lease is held by someone else".into());
        }
        let outcome = dns::reconcile(&self.runtime, false).await?;
        let mut changes = Vec::new();
        for zone in outcome.zones {
            if let Some(error) = zone.error {
                return Err(format!("zone {}: {error}", zone.zone).into());
            }
            if let Some(failed) = zone.failed.first() {
                return Err(format!("zone {}: {failed}", zone.zone).into());
            }
            changes.extend(
                zone.changes
                    .into_iter()
                    .map(|c| format!("{} {}", c.action, c.record)),
            );
        }
        Ok(changes)
    }
}
