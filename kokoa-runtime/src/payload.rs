//! What nodes pull: an edge's [`EdgeConfig`] (SPEC §4) and an origin's `wg0.conf`, local
//! proxy and routes.
//!
//! Origins and routes, which every edge's payload needs, are read once into a shared
//! [`Snapshot`] and reused until a change is made through this control plane or the
//! snapshot is [`SNAPSHOT_TTL`] old. The age limit keeps several control planes on one
//! database (SPEC §11) in step: a change made through another one is seen within it. Each
//! edge's own part (its tunnels and key) is read whenever its payload is built (see
//! `payload_cache`).
//!
//! No payload holds a private key: each node made its own key pair and keeps the private
//! half; a payload names the public half of the key the node is to use.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{Ipv4Addr, SocketAddrV4},
    num::{NonZeroU16, NonZeroU32},
    time::Duration,
};

use ipnet::Ipv4Net;
use kokoa_core::{
    ApplicationCheck, CertificateRef, EdgeConfig, EdgeContent, EdgeNodeId, EdgeStatus, Hostname,
    KeyChangeEntry, Name, Origin, OriginConfig, OriginId, OriginRoute, Port, ServiceEntry, Tunnel,
    WgPublicKey,
};
use kokoa_wg::{Direction, Format, Host, Topology};
use tokio::time::Instant;

use crate::{
    Error, Runtime, certs, health,
    rotation::{Rotations, Subject},
};

/// How long a [`Snapshot`] is used when nothing changed through this control plane.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

/// Origins and their routes as read at one moment.
#[derive(Debug)]
pub struct Snapshot {
    /// The change counter when it was read (see [`Runtime::notify_changed`]).
    generation: u64,
    /// When it was read.
    taken: Instant,
    /// Origins by id.
    origins: HashMap<OriginId, Origin>,
    /// Each origin's routes, by host name.
    routes: HashMap<OriginId, Vec<(Hostname, Port)>>,
    /// The issued certificates, as edges refer to them.
    certificates: Vec<CertificateRef>,
    /// Pending ACME HTTP-01 responses: token, the host name validated, key authorization.
    challenges: Vec<(String, Option<Hostname>, String)>,
    /// The origins whose every route edges answer with 503 (SPEC §8.4: the tunnel is down
    /// at every edge, or the application fails its checks).
    down: HashSet<OriginId>,
    /// Per origin, the ports of the services whose routes edges answer with 503 (one
    /// service down).
    ports_down: HashMap<OriginId, BTreeSet<u16>>,
}

impl Snapshot {
    /// Whether it may still be used when the change counter is at `generation`.
    pub fn is_current(&self, generation: u64) -> bool {
        self.generation == generation && self.taken.elapsed() < SNAPSHOT_TTL
    }

    /// The change counter when it was read.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether [`edge_config`] builds the same payloads from `other` as from `self`: it
    /// compares all that edge_config reads, but not what every heartbeat moves.
    pub fn same_for_edges(&self, other: &Self) -> bool {
        fn read(o: &Origin) -> (&Name, Ipv4Net, Ipv4Addr, Option<&WgPublicKey>, Option<Port>) {
            (
                &o.name,
                o.network_cidr,
                o.wireguard_ip,
                o.wireguard_public_key.as_ref(),
                application_port(o.last_metrics.as_ref()),
            )
        }
        self.routes == other.routes
            && self.certificates == other.certificates
            && self.challenges == other.challenges
            && self.down == other.down
            && self.ports_down == other.ports_down
            && self.origins.len() == other.origins.len()
            && self.origins.iter().all(|(id, origin)| {
                other
                    .origins
                    .get(id)
                    .is_some_and(|o| read(o) == read(origin))
            })
    }

    /// Reads origins and routes; `generation` is the change counter read before.
    pub async fn read(state: &Runtime, generation: u64) -> Result<Self, Error> {
        let store = state.store();
        let origins: HashMap<OriginId, Origin> = store
            .list_origins()
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect();
        let mut routes: HashMap<OriginId, Vec<(Hostname, Port)>> = HashMap::new();
        for route in store.list_routes().await? {
            routes
                .entry(route.origin_id)
                .or_default()
                .push((route.hostname, route.target_port));
        }
        let certificates = store
            .list_certificates()
            .await?
            .into_iter()
            .filter(|c| c.chain_pem.is_some())
            .filter_map(|c| {
                Some(CertificateRef {
                    name: certs::ref_name(&c.id)?,
                    hostnames: c.names,
                    sha256: c.sha256?,
                })
            })
            .collect();
        let challenges = certs::pending_challenges(state)
            .await?
            .into_iter()
            .map(|(token, c)| (token, c.hostname, c.key_authorization))
            .collect();
        // What the health judge decided (damped against flapping), not the last heartbeat.
        let verdicts = health::origin_verdicts(state).await?;
        let down = verdicts
            .iter()
            .filter(|(_, verdict)| health::origin_down(Some(verdict)))
            .map(|(id, _)| id.clone())
            .collect();
        let ports_down = verdicts
            .iter()
            .filter_map(|(id, verdict)| {
                let origin: &Origin = origins.get(id)?;
                let ports = health::ports_unavailable(verdict, origin.last_metrics.as_ref());
                (!ports.is_empty()).then(|| (id.clone(), ports))
            })
            .collect();
        Ok(Self {
            generation,
            taken: Instant::now(),
            origins,
            routes,
            certificates,
            challenges,
            down,
            ports_down,
        })
    }

    /// The routes of `origin`, by host name.
    pub fn routes_of(&self, origin: &OriginId) -> &[(Hostname, Port)] {
        self.routes.get(origin).map_or(&[], Vec::as_slice)
    }
}

/// The configuration of edge `edge`: one tunnel per origin it has an interface to (and
/// whose key is known), the key its interfaces use, and the routes of those origins.
pub async fn edge_config(state: &Runtime, edge: &EdgeNodeId) -> Result<EdgeConfig, Error> {
    EdgeConfig::new(edge_content(state, edge).await?).map_err(|e| Error::internal(&e))
}

/// What [`edge_config`] holds, before it is checked and hashed.
pub async fn edge_content(state: &Runtime, edge: &EdgeNodeId) -> Result<EdgeContent, Error> {
    let store = state.store();
    let tunnels = store.list_tunnels(Some(edge), None).await?;
    let mut content = EdgeContent {
        rate_limits: state.rate_limits(),
        ..EdgeContent::default()
    };
    let rotations = Rotations::load(state).await?;
    if let Some(key) = store.get_edge(edge).await?.wireguard_public_key {
        let subject = Subject::Edge(edge.clone());
        content.wireguard_key_requested = rotations.key_requested(&subject, &key);
        content.wireguard_public_key = Some(rotations.in_use(&subject, &key));
    }
    if tunnels.is_empty() {
        return Ok(content);
    }
    let snapshot = state.snapshot().await?;
    let mut served: Vec<(&OriginId, Ipv4Addr)> = Vec::new();
    for tunnel in tunnels {
        // An origin deleted since the snapshot takes its tunnels with it; one without a
        // key (its agent has not enrolled) cannot be reached yet.
        let Some(origin) = snapshot.origins.get(&tunnel.origin_id) else {
            continue;
        };
        let Some(origin_key) = &origin.wireguard_public_key else {
            continue;
        };
        let origin_next_public_key = rotations
            .next_key(&Subject::Origin(origin.id.clone()), origin_key)
            .cloned();
        let address = Ipv4Net::new(tunnel.wireguard_ip, origin.network_cidr.prefix_len())
            .map_err(|e| Error::internal(&e))?;
        content.tunnels.push(Tunnel {
            origin_id: origin.id.clone(),
            origin_name: origin.name.clone(),
            address,
            origin_ip: origin.wireguard_ip,
            origin_public_key: origin_key.clone(),
            listen_port: tunnel.listen_port,
            origin_endpoint: None,
            application_check: application_check(state, origin.last_metrics.as_ref()),
            origin_next_public_key,
        });
        served.push((&origin.id, origin.wireguard_ip));
    }
    for (origin, ip) in served {
        let down = snapshot.ports_down.get(origin).cloned().unwrap_or_default();
        let origin_down = snapshot.down.contains(origin);
        for (hostname, port) in snapshot.routes_of(origin) {
            content
                .routes
                .insert(hostname.clone(), SocketAddrV4::new(ip, port.get()));
            // The origin down: 503 for all its routes; one service down: for the routes to
            // that service only (SPEC §8.4).
            if origin_down || down.contains(&port.get()) {
                content.unavailable.insert(hostname.clone());
            }
        }
    }
    // Only the certificates and challenge responses of the names this edge serves.
    content.certificates = snapshot
        .certificates
        .iter()
        .filter(|c| {
            content
                .routes
                .keys()
                .any(|h| c.hostnames.iter().any(|n| n.covers(h)))
        })
        .cloned()
        .collect();
    content.acme_challenges = snapshot
        .challenges
        .iter()
        .filter(|(_, h, _)| h.as_ref().is_none_or(|h| content.routes.contains_key(h)))
        .map(|(token, _, key)| (token.clone(), key.clone()))
        .collect();
    Ok(content)
}

/// The ports of the services an origin reported down in its last heartbeat
/// (`"services": [{"port": 8080, "status": "down"}, …]`).
pub fn ports_down(metrics: Option<&serde_json::Value>) -> BTreeSet<u16> {
    let services = metrics
        .and_then(|m| m.get("services"))
        .and_then(serde_json::Value::as_array);
    services
        .into_iter()
        .flatten()
        .filter(|s| s.get("status").and_then(serde_json::Value::as_str) == Some("down"))
        .filter_map(|s| s.get("port")?.as_u64()?.try_into().ok())
        .collect()
}

/// The port an origin answers its application check on, from its heartbeats
/// (`"application_port": 80`); none when it offers no check (an older agent, or the port
/// taken by a service).
pub fn application_port(metrics: Option<&serde_json::Value>) -> Option<Port> {
    let port = metrics?.get("application_port")?.as_u64()?;
    Port::new(u16::try_from(port).ok()?).ok()
}

/// The application check edges run towards an origin, with the `[health]` timing.
fn application_check(
    state: &Runtime,
    metrics: Option<&serde_json::Value>,
) -> Option<ApplicationCheck> {
    let health = &state.settings().health;
    let secs = |d: Duration| {
        NonZeroU32::new(u32::try_from(d.as_secs()).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
    };
    Some(ApplicationCheck {
        port: application_port(metrics)?,
        interval_secs: secs(health.origin_application_interval),
        timeout_secs: secs(health.timeout),
        failures: APPLICATION_FAILURES,
        recoveries: NonZeroU32::new(health.recovery_threshold).unwrap_or(NonZeroU32::MIN),
    })
}

/// Failed application checks in a row before an edge reports the origin's application
/// down (SPEC §8.4: "does not answer 3 times").
const APPLICATION_FAILURES: NonZeroU32 = NonZeroU32::new(3).unwrap();

/// The routes of `origin`, by host name.
pub async fn origin_routes(
    state: &Runtime,
    origin: &OriginId,
) -> Result<Vec<(Hostname, Port)>, Error> {
    Ok(state.snapshot().await?.routes_of(origin).to_vec())
}

/// The origin's `wg0.conf` as a template without `PrivateKey` (the origin holds its key):
/// one peer per edge that has a tunnel to it, a key and a known public address; the origin
/// dials out to each (it needs no open port, works behind NAT). While an edge's key
/// rotates, its new key is a second peer without addresses, named in the key changes
/// returned alongside (see [`rotation`](crate::rotation)).
pub async fn origin_wg0(
    state: &Runtime,
    origin: &Origin,
) -> Result<(String, Vec<KeyChangeEntry>), Error> {
    let store = state.store();
    let tunnels = store.list_tunnels(None, Some(&origin.id)).await?;
    let edges: HashMap<EdgeNodeId, _> = store
        .list_edges()
        .await?
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect();
    let rotations = Rotations::load(state).await?;
    let internal = |e: kokoa_wg::Error| Error::internal(&e);
    let wg_key = |k: &WgPublicKey| kokoa_wg::PublicKey::from_base64(k.as_str()).map_err(internal);
    let mut peers = Vec::new();
    let mut changes = Vec::new();
    for tunnel in &tunnels {
        let Some(edge) = edges.get(&tunnel.edge_node_id) else {
            continue;
        };
        let (Some(ip), Some(key)) = (
            edge.public_ip
                .filter(|_| edge.status != EdgeStatus::Deleted),
            &edge.wireguard_public_key,
        ) else {
            continue;
        };
        let port = NonZeroU16::new(tunnel.listen_port.get()).unwrap_or(kokoa_wg::BASE_LISTEN_PORT);
        peers.push(kokoa_wg::Edge::new(
            // Names label peers and must be unique; edge names need not be, ids are.
            format!("{} {}", edge.name, edge.id),
            wg_key(key)?,
            Host::from(ip),
            tunnel.wireguard_ip,
            port,
        ));
        if let Some(next) = rotations.next_key(&Subject::Edge(edge.id.clone()), key) {
            changes.push(KeyChangeEntry {
                from: key.clone(),
                to: next.clone(),
            });
        }
    }
    // The topology needs a key to build the interface; the template leaves it out.
    let placeholder = kokoa_wg::PrivateKey::generate();
    let wg_origin = kokoa_wg::Origin::new(
        origin.id.as_str(),
        origin.name.as_str(),
        origin.network_cidr,
        origin.wireguard_ip,
        placeholder.public_key(),
    );
    let topology = Topology::new(wg_origin, peers, Direction::OriginDialsOut).map_err(internal)?;
    let mut config = topology
        .origin_config(&placeholder)
        .map_err(internal)?
        .config;
    for change in &changes {
        let from = wg_key(&change.from)?;
        let Some(current) = config.peers.iter().find(|p| p.public_key == from) else {
            continue;
        };
        // Reached the same way as the current key, but owning no address until it has
        // made a handshake.
        let mut prepared = kokoa_wg::Peer::new(wg_key(&change.to)?);
        prepared.comment = current.comment.clone();
        prepared.endpoint = current.endpoint.clone();
        prepared.persistent_keepalive = current.persistent_keepalive;
        config.peers.push(prepared);
    }
    Ok((config.render_template(Format::WgQuick), changes))
}

/// Everything an origin agent follows: its `wg0.conf` (edges come and go), its local
/// proxy, its routes and services, with a hash over all of it.
pub async fn origin_config(state: &Runtime, id: &OriginId) -> Result<OriginConfig, Error> {
    let origin = state.store().get_origin(id).await?;
    let (wg0_conf, key_changes) = origin_wg0(state, &origin).await?;
    let rotations = Rotations::load(state).await?;
    let subject = Subject::Origin(origin.id.clone());
    let (wireguard_public_key, wireguard_key_requested) = match &origin.wireguard_public_key {
        Some(key) => (
            Some(rotations.in_use(&subject, key)),
            rotations.key_requested(&subject, key),
        ),
        None => (None, false),
    };
    let routes = origin_routes(state, id).await?;
    let nginx_conf =
        kokoa_nginx::OriginProxy::new(origin.wireguard_ip, routes.iter().cloned()).render();
    let services = state
        .store()
        .origin_services(id)
        .await?
        .into_iter()
        .map(ServiceEntry::from)
        .collect();
    let routes = routes
        .into_iter()
        .map(|(hostname, target_port)| OriginRoute {
            hostname,
            target_port,
        })
        .collect();
    Ok(OriginConfig {
        config_hash: String::new(),
        origin_id: origin.id,
        wg0_conf,
        nginx_conf,
        routes,
        services,
        key_changes,
        wireguard_public_key,
        wireguard_key_requested,
    }
    .with_computed_hash())
}
