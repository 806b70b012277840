//! The in-memory store: a mutex over plain collections, with the same rules as the SQL
//! backends (unique values, references, ordering).

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;

use super::{
    Fence, Intent, Lease, NewIntent, NewOrigin, NewTunnel, Store, allocate_tunnel,
    lease::{self, LeaseRow},
    sort,
};
use kokoa_core::{
    ApiToken, ApiTokenId, Certificate, CertificateId, DnsRecord, DnsRecordId, DnsZone, DnsZoneId,
    EdgeNode, EdgeNodeId, EdgeTunnel, Email, Enrollment, Error, Event, EventFilter, HealthCheck,
    Hostname, NewEvent, NodeCredential, NodeCredentialId, NodeRef, Origin, OriginId, OriginService,
    OriginStatus, Role, Route, RouteId, ServiceId, Session, SessionId, SubnetPool, Timestamp,
    TrafficCounts, TrafficPoint, TrafficResolution, TrafficRow, TrafficScope, User, UserId,
    UserSecrets, WgPublicKey, origin_address,
    secret::{Sealed, TokenHash},
};

/// A [`Store`] in memory, for tests and trials: nothing survives the process.
///
/// Every operation takes one lock and checks everything before changing anything, so
/// operations are atomic as in the SQL backends.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    origins: Vec<Origin>,
    services: Vec<OriginService>,
    routes: Vec<Route>,
    edges: Vec<EdgeNode>,
    tunnels: Vec<EdgeTunnel>,
    api_tokens: Vec<(ApiToken, TokenHash)>,
    enrollments: Vec<(Enrollment, TokenHash)>,
    credentials: Vec<(NodeCredential, TokenHash)>,
    dns_records: Vec<DnsRecord>,
    health_checks: Vec<HealthCheck>,
    traffic: BTreeMap<(TrafficResolution, TrafficScope, Timestamp), TrafficCounts>,
    users: Vec<StoredUser>,
    sessions: Vec<(Session, TokenHash)>,
    certificates: Vec<(Certificate, Option<Sealed>)>,
    dns_zones: Vec<(DnsZone, Option<Sealed>)>,
    events: Vec<Event>,
    values: BTreeMap<(String, String), (String, Option<Timestamp>)>,
    leases: BTreeMap<String, LeaseRow>,
    intents: Vec<Intent>,
    /// The number of the last intent recorded, pruned or not.
    last_intent: i64,
}

/// A user with what only the store sees.
#[derive(Debug)]
struct StoredUser {
    user: User,
    secrets: UserSecrets,
    recovery_codes: Vec<TokenHash>,
}

/// Whether a value that expires at `expires` is still there at `now`.
fn live(expires: Option<Timestamp>, now: Timestamp) -> bool {
    expires.is_none_or(|at| now < at)
}

/// The store's clock for leases: the system clock, in Unix milliseconds.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Certificate names as one text, for conflict messages.
fn names(names: &std::collections::BTreeSet<Hostname>) -> String {
    names
        .iter()
        .map(Hostname::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn not_found(kind: &'static str, id: impl ToString) -> Error {
    Error::NotFound {
        kind,
        id: id.to_string(),
    }
}

fn conflict(what: &'static str, value: impl ToString) -> Error {
    Error::Conflict {
        what,
        value: value.to_string(),
    }
}

/// `Err(conflict)` if `taken` holds.
fn unique(taken: bool, what: &'static str, value: impl ToString) -> Result<(), Error> {
    if taken {
        Err(conflict(what, value))
    } else {
        Ok(())
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        // A panic while the lock was held may have left a change half made.
        self.state
            .lock()
            .map_err(|_| Error::Storage("the in-memory store was poisoned by a panic".into()))
    }
}

impl State {
    fn origin(&self, id: &OriginId) -> Result<&Origin, Error> {
        self.origins
            .iter()
            .find(|o| &o.id == id)
            .ok_or_else(|| not_found("origin", id))
    }

    fn origin_mut(&mut self, id: &OriginId) -> Result<&mut Origin, Error> {
        self.origins
            .iter_mut()
            .find(|o| &o.id == id)
            .ok_or_else(|| not_found("origin", id))
    }

    fn edge_mut(&mut self, id: &EdgeNodeId) -> Result<&mut EdgeNode, Error> {
        self.edges
            .iter_mut()
            .find(|e| &e.id == id)
            .ok_or_else(|| not_found("edge node", id))
    }

    fn user_mut(&mut self, id: &UserId) -> Result<&mut StoredUser, Error> {
        self.users
            .iter_mut()
            .find(|u| &u.user.id == id)
            .ok_or_else(|| not_found("user", id))
    }

    fn check_hostname(&self, route: &Route) -> Result<(), Error> {
        let taken = self
            .routes
            .iter()
            .any(|r| r.hostname == route.hostname && r.id != route.id);
        unique(taken, "hostname", &route.hostname)
    }

    fn check_node(&mut self, node: &NodeRef) -> Result<(), Error> {
        match node {
            NodeRef::Edge(id) => self.edge_mut(id).map(drop),
            NodeRef::Origin(id) => self.origin(id).map(drop),
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn create_origin(&self, pool: &SubnetPool, new: NewOrigin) -> Result<Origin, Error> {
        let mut state = self.lock()?;
        unique(
            state.origins.iter().any(|o| o.id == new.id),
            "origin id",
            &new.id,
        )?;
        unique(
            state.origins.iter().any(|o| o.name == new.name),
            "origin name",
            &new.name,
        )?;
        for (i, service) in new.services.iter().enumerate() {
            unique(
                new.services[..i].iter().any(|s| s.name == service.name),
                "service name",
                &service.name,
            )?;
        }
        let network_cidr = pool.allocate(state.origins.iter().map(|o| &o.network_cidr))?;
        let origin = Origin {
            id: new.id,
            name: new.name,
            domain: new.domain,
            status: OriginStatus::Inactive,
            last_heartbeat: None,
            last_metrics: None,
            network_cidr,
            wireguard_ip: origin_address(network_cidr)?,
            wireguard_public_key: None,
            created_at: new.created_at,
        };
        state
            .services
            .extend(new.services.into_iter().map(|s| OriginService {
                id: ServiceId::new(),
                origin_id: origin.id.clone(),
                name: s.name,
                port: s.port,
                protocol: s.protocol,
                health_check_path: s.health_check_path,
                created_at: new.created_at,
            }));
        state.origins.push(origin.clone());
        Ok(origin)
    }

    async fn get_origin(&self, id: &OriginId) -> Result<Origin, Error> {
        Ok(self.lock()?.origin(id)?.clone())
    }

    async fn list_origins(&self) -> Result<Vec<Origin>, Error> {
        let mut origins: Vec<Origin> = self.lock()?.origins.clone();
        sort::origins(&mut origins);
        Ok(origins)
    }

    async fn origin_services(&self, id: &OriginId) -> Result<Vec<OriginService>, Error> {
        let state = self.lock()?;
        state.origin(id)?;
        let mut services: Vec<OriginService> = state
            .services
            .iter()
            .filter(|s| &s.origin_id == id)
            .cloned()
            .collect();
        sort::services(&mut services);
        Ok(services)
    }

    async fn set_origin_key(&self, id: &OriginId, public_key: &WgPublicKey) -> Result<(), Error> {
        self.lock()?.origin_mut(id)?.wireguard_public_key = Some(public_key.clone());
        Ok(())
    }

    async fn delete_origin(&self, id: &OriginId, force: bool) -> Result<(), Error> {
        let mut state = self.lock()?;
        state.origin(id)?;
        let routes = state.routes.iter().filter(|r| &r.origin_id == id).count();
        if routes > 0 && !force {
            return Err(Error::InUse {
                kind: "origin",
                id: id.to_string(),
                by: "routes",
                count: routes as u64,
            });
        }
        let node = NodeRef::Origin(id.clone());
        state.routes.retain(|r| &r.origin_id != id);
        state.services.retain(|s| &s.origin_id != id);
        state.tunnels.retain(|t| &t.origin_id != id);
        state.enrollments.retain(|(e, _)| e.node != node);
        state.credentials.retain(|(c, _)| c.node != node);
        state.origins.retain(|o| &o.id != id);
        Ok(())
    }

    async fn record_origin_heartbeat(
        &self,
        id: &OriginId,
        at: Timestamp,
        status: OriginStatus,
        metrics: Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let mut state = self.lock()?;
        let origin = state.origin_mut(id)?;
        origin.last_heartbeat = Some(at);
        origin.status = status;
        origin.last_metrics = metrics;
        Ok(())
    }

    async fn create_route(&self, route: &Route) -> Result<(), Error> {
        let mut state = self.lock()?;
        state.origin(&route.origin_id)?;
        unique(
            state.routes.iter().any(|r| r.id == route.id),
            "route id",
            &route.id,
        )?;
        state.check_hostname(route)?;
        state.routes.push(route.clone());
        Ok(())
    }

    async fn get_route(&self, id: &RouteId) -> Result<Route, Error> {
        self.lock()?
            .routes
            .iter()
            .find(|r| &r.id == id)
            .cloned()
            .ok_or_else(|| not_found("route", id))
    }

    async fn list_routes(&self) -> Result<Vec<Route>, Error> {
        let mut routes = self.lock()?.routes.clone();
        sort::routes(&mut routes);
        Ok(routes)
    }

    async fn update_route(&self, route: &Route) -> Result<(), Error> {
        let mut state = self.lock()?;
        state.origin(&route.origin_id)?;
        let index = state
            .routes
            .iter()
            .position(|r| r.id == route.id)
            .ok_or_else(|| not_found("route", &route.id))?;
        state.check_hostname(route)?;
        let stored = &mut state.routes[index];
        stored.hostname = route.hostname.clone();
        stored.origin_id = route.origin_id.clone();
        stored.target_port = route.target_port;
        Ok(())
    }

    async fn delete_route(&self, id: &RouteId) -> Result<(), Error> {
        let mut state = self.lock()?;
        let before = state.routes.len();
        state.routes.retain(|r| &r.id != id);
        if state.routes.len() == before {
            return Err(not_found("route", id));
        }
        Ok(())
    }

    async fn create_edge(&self, edge: &EdgeNode) -> Result<(), Error> {
        let mut state = self.lock()?;
        if let Some(origin) = &edge.origin_id {
            state.origin(origin)?;
        }
        unique(
            state.edges.iter().any(|e| e.id == edge.id),
            "edge node id",
            &edge.id,
        )?;
        state.edges.push(edge.clone());
        Ok(())
    }

    async fn get_edge(&self, id: &EdgeNodeId) -> Result<EdgeNode, Error> {
        Ok(self.lock()?.edge_mut(id)?.clone())
    }

    async fn list_edges(&self) -> Result<Vec<EdgeNode>, Error> {
        let mut edges = self.lock()?.edges.clone();
        sort::edges(&mut edges);
        Ok(edges)
    }

    async fn update_edge(&self, edge: &EdgeNode) -> Result<(), Error> {
        let mut state = self.lock()?;
        let stored = state.edge_mut(&edge.id)?;
        *stored = EdgeNode {
            id: stored.id.clone(),
            origin_id: stored.origin_id.clone(),
            created_at: stored.created_at,
            last_heartbeat: stored.last_heartbeat,
            last_metrics: stored.last_metrics.take(),
            health_check_failures: stored.health_check_failures,
            wireguard_public_key: stored.wireguard_public_key.take(),
            ..edge.clone()
        };
        Ok(())
    }

    async fn set_edge_key(&self, id: &EdgeNodeId, public_key: &WgPublicKey) -> Result<(), Error> {
        self.lock()?.edge_mut(id)?.wireguard_public_key = Some(public_key.clone());
        Ok(())
    }

    async fn record_edge_heartbeat(
        &self,
        id: &EdgeNodeId,
        at: Timestamp,
        metrics: Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let mut state = self.lock()?;
        let edge = state.edge_mut(id)?;
        edge.last_heartbeat = Some(at);
        edge.last_metrics = metrics;
        Ok(())
    }

    async fn create_tunnel(&self, new: NewTunnel) -> Result<EdgeTunnel, Error> {
        let mut state = self.lock()?;
        state.edge_mut(&new.edge_node_id)?;
        let origin = state.origin(&new.origin_id)?.clone();
        let mut addresses = Vec::new();
        let mut ports = Vec::new();
        for t in &state.tunnels {
            if t.edge_node_id == new.edge_node_id && t.origin_id == new.origin_id {
                return Err(conflict(
                    "edge tunnel",
                    format!("{} to {}", new.edge_node_id, new.origin_id),
                ));
            }
            if t.origin_id == new.origin_id {
                addresses.push(t.wireguard_ip);
            }
            if t.edge_node_id == new.edge_node_id {
                ports.push(t.listen_port);
            }
        }
        let (wireguard_ip, listen_port) =
            allocate_tunnel(&origin, &new.edge_node_id, &addresses, &ports)?;
        let tunnel = EdgeTunnel {
            edge_node_id: new.edge_node_id,
            origin_id: new.origin_id,
            wireguard_ip,
            listen_port,
            created_at: new.created_at,
        };
        state.tunnels.push(tunnel.clone());
        Ok(tunnel)
    }

    async fn list_tunnels(
        &self,
        edge: Option<&EdgeNodeId>,
        origin: Option<&OriginId>,
    ) -> Result<Vec<EdgeTunnel>, Error> {
        let mut tunnels: Vec<EdgeTunnel> = self
            .lock()?
            .tunnels
            .iter()
            .filter(|t| edge.is_none_or(|e| &t.edge_node_id == e))
            .filter(|t| origin.is_none_or(|o| &t.origin_id == o))
            .cloned()
            .collect();
        sort::tunnels(&mut tunnels);
        Ok(tunnels)
    }

    async fn delete_tunnels_of_edge(&self, edge: &EdgeNodeId) -> Result<u64, Error> {
        let mut state = self.lock()?;
        let before = state.tunnels.len();
        state.tunnels.retain(|t| &t.edge_node_id != edge);
        Ok((before - state.tunnels.len()) as u64)
    }

    async fn create_api_token(&self, token: &ApiToken, hash: &TokenHash) -> Result<(), Error> {
        let mut state = self.lock()?;
        unique(
            state.api_tokens.iter().any(|(t, _)| t.id == token.id),
            "API token id",
            &token.id,
        )?;
        unique(
            state.api_tokens.iter().any(|(_, h)| h == hash),
            "token hash",
            hash.as_str(),
        )?;
        state.api_tokens.push((token.clone(), hash.clone()));
        Ok(())
    }

    async fn find_api_token(&self, hash: &TokenHash) -> Result<Option<ApiToken>, Error> {
        Ok(self
            .lock()?
            .api_tokens
            .iter()
            .find(|(t, h)| h == hash && t.revoked_at.is_none())
            .map(|(t, _)| t.clone()))
    }

    async fn touch_api_token(&self, id: &ApiTokenId, at: Timestamp) -> Result<(), Error> {
        let mut state = self.lock()?;
        let token = api_token_mut(&mut state, id)?;
        token.last_used_at = Some(at);
        Ok(())
    }

    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>, Error> {
        let mut tokens: Vec<ApiToken> = self
            .lock()?
            .api_tokens
            .iter()
            .map(|(t, _)| t.clone())
            .collect();
        sort::api_tokens(&mut tokens);
        Ok(tokens)
    }

    async fn revoke_api_token(&self, id: &ApiTokenId, at: Timestamp) -> Result<(), Error> {
        let mut state = self.lock()?;
        let token = api_token_mut(&mut state, id)?;
        token.revoked_at.get_or_insert(at);
        Ok(())
    }

    async fn create_enrollment(
        &self,
        enrollment: &Enrollment,
        hash: &TokenHash,
    ) -> Result<(), Error> {
        let mut state = self.lock()?;
        state.check_node(&enrollment.node)?;
        unique(
            state.enrollments.iter().any(|(e, _)| e.id == enrollment.id),
            "enrollment id",
            &enrollment.id,
        )?;
        unique(
            state.enrollments.iter().any(|(_, h)| h == hash),
            "token hash",
            hash.as_str(),
        )?;
        state.enrollments.push((enrollment.clone(), hash.clone()));
        Ok(())
    }

    async fn find_enrollment(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<Enrollment>, Error> {
        Ok(self
            .lock()?
            .enrollments
            .iter()
            .find(|(e, h)| h == hash && e.is_usable(now))
            .map(|(e, _)| e.clone()))
    }

    async fn redeem_enrollment(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        credential_id: &NodeCredentialId,
        credential_hash: &TokenHash,
    ) -> Result<NodeCredential, Error> {
        let mut state = self.lock()?;
        let index = state
            .enrollments
            .iter()
            .position(|(_, h)| h == hash)
            .ok_or(super::UNKNOWN_ENROLLMENT)?;
        let node = state.enrollments[index].0.node.clone();
        super::check_redeemable(&state.enrollments[index].0, now)?;
        if state.check_node(&node).is_err() {
            return Err(super::NODE_GONE);
        }
        unique(
            state
                .credentials
                .iter()
                .any(|(c, _)| &c.id == credential_id),
            "node credential id",
            credential_id,
        )?;
        unique(
            state.credentials.iter().any(|(_, h)| h == credential_hash),
            "token hash",
            credential_hash.as_str(),
        )?;
        state.enrollments[index].0.uses_left -= 1;
        let credential = NodeCredential {
            id: credential_id.clone(),
            node,
            created_at: now,
            revoked_at: None,
        };
        state
            .credentials
            .push((credential.clone(), credential_hash.clone()));
        Ok(credential)
    }

    async fn find_node_credential(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<NodeCredential>, Error> {
        Ok(self
            .lock()?
            .credentials
            .iter()
            .find(|(c, h)| h == hash && c.revoked_at.is_none())
            .map(|(c, _)| c.clone()))
    }

    async fn revoke_node_credentials(&self, node: &NodeRef, at: Timestamp) -> Result<u64, Error> {
        let mut state = self.lock()?;
        let mut revoked = 0;
        for (credential, _) in &mut state.credentials {
            if &credential.node == node && credential.revoked_at.is_none() {
                credential.revoked_at = Some(at);
                revoked += 1;
            }
        }
        for (enrollment, _) in &mut state.enrollments {
            if &enrollment.node == node {
                enrollment.uses_left = 0;
            }
        }
        Ok(revoked)
    }

    async fn add_dns_record(&self, record: &DnsRecord) -> Result<(), Error> {
        let mut state = self.lock()?;
        if let Some(edge) = &record.edge_node_id {
            state.edge_mut(edge)?;
        }
        unique(
            state.dns_records.iter().any(|r| r.id == record.id),
            "DNS record id",
            &record.id,
        )?;
        state.dns_records.push(record.clone());
        Ok(())
    }

    async fn list_dns_records(&self, hostname: Option<&Hostname>) -> Result<Vec<DnsRecord>, Error> {
        let mut records: Vec<DnsRecord> = self
            .lock()?
            .dns_records
            .iter()
            .filter(|r| hostname.is_none_or(|h| &r.hostname == h))
            .cloned()
            .collect();
        sort::dns_records(&mut records);
        Ok(records)
    }

    async fn delete_dns_record(&self, id: &DnsRecordId) -> Result<(), Error> {
        let mut state = self.lock()?;
        let before = state.dns_records.len();
        state.dns_records.retain(|r| &r.id != id);
        if state.dns_records.len() == before {
            return Err(not_found("DNS record", id));
        }
        Ok(())
    }

    async fn record_health_check(
        &self,
        check: &HealthCheck,
        consecutive_failures: Option<u32>,
    ) -> Result<(), Error> {
        let mut state = self.lock()?;
        let edge = state.edge_mut(&check.edge_node_id)?;
        if let Some(failures) = consecutive_failures {
            edge.health_check_failures = failures;
        }
        state.health_checks.push(check.clone());
        Ok(())
    }

    async fn health_history(
        &self,
        edge: &EdgeNodeId,
        limit: u32,
    ) -> Result<Vec<HealthCheck>, Error> {
        let state = self.lock()?;
        // Newest added first, then a stable sort by time keeps that order among equal times.
        let mut checks: Vec<HealthCheck> = state
            .health_checks
            .iter()
            .rev()
            .filter(|c| &c.edge_node_id == edge)
            .cloned()
            .collect();
        checks.sort_by_key(|c| std::cmp::Reverse(c.checked_at));
        checks.truncate(limit as usize);
        Ok(checks)
    }

    async fn prune_health_checks(&self, before: Timestamp) -> Result<u64, Error> {
        let mut state = self.lock()?;
        let count = state.health_checks.len();
        state.health_checks.retain(|c| c.checked_at >= before);
        Ok((count - state.health_checks.len()) as u64)
    }

    async fn schema_versions(&self) -> Result<(u32, u32), Error> {
        Ok((0, 0))
    }

    async fn add_traffic(&self, rows: &[TrafficRow]) -> Result<(), Error> {
        let mut state = self.lock()?;
        for row in rows {
            state
                .traffic
                .entry((row.resolution, row.scope.clone(), row.start))
                .or_default()
                .add(&row.counts);
        }
        Ok(())
    }

    async fn traffic_series(
        &self,
        resolution: TrafficResolution,
        scope: &TrafficScope,
        since: Timestamp,
    ) -> Result<Vec<TrafficPoint>, Error> {
        let state = self.lock()?;
        Ok(state
            .traffic
            .range((resolution, scope.clone(), since)..)
            .take_while(|((r, s, _), _)| *r == resolution && s == scope)
            .map(|((_, _, start), counts)| TrafficPoint {
                start: *start,
                counts: *counts,
            })
            .collect())
    }

    async fn prune_traffic(
        &self,
        resolution: TrafficResolution,
        before: Timestamp,
    ) -> Result<u64, Error> {
        let mut state = self.lock()?;
        let count = state.traffic.len();
        state
            .traffic
            .retain(|(r, _, start), _| *r != resolution || *start >= before);
        Ok((count - state.traffic.len()) as u64)
    }

    async fn create_user(&self, user: &User, password_hash: Option<&str>) -> Result<(), Error> {
        let mut state = self.lock()?;
        unique(
            state.users.iter().any(|u| u.user.id == user.id),
            "user id",
            &user.id,
        )?;
        unique(
            state.users.iter().any(|u| u.user.email == user.email),
            "e-mail address",
            &user.email,
        )?;
        state.users.push(StoredUser {
            user: user.clone(),
            secrets: UserSecrets {
                password_hash: password_hash.map(str::to_owned),
                ..UserSecrets::default()
            },
            recovery_codes: Vec::new(),
        });
        Ok(())
    }

    async fn find_user_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<(User, UserSecrets)>, Error> {
        Ok(self
            .lock()?
            .users
            .iter()
            .find(|u| &u.user.email == email)
            .map(|u| (u.user.clone(), u.secrets.clone())))
    }

    async fn get_user(&self, id: &UserId) -> Result<(User, UserSecrets), Error> {
        let mut state = self.lock()?;
        let u = state.user_mut(id)?;
        Ok((u.user.clone(), u.secrets.clone()))
    }

    async fn list_users(&self) -> Result<Vec<User>, Error> {
        let mut users: Vec<User> = self.lock()?.users.iter().map(|u| u.user.clone()).collect();
        sort::users(&mut users);
        Ok(users)
    }

    async fn set_user_role(&self, id: &UserId, role: Role) -> Result<(), Error> {
        self.lock()?.user_mut(id)?.user.role = role;
        Ok(())
    }

    async fn set_user_password(
        &self,
        id: &UserId,
        password_hash: Option<&str>,
    ) -> Result<(), Error> {
        let mut state = self.lock()?;
        let u = state.user_mut(id)?;
        u.secrets.password_hash = password_hash.map(str::to_owned);
        u.user.failed_logins = 0;
        u.user.locked_until = None;
        Ok(())
    }

    async fn set_user_totp(
        &self,
        id: &UserId,
        secret: Option<&Sealed>,
        enabled: bool,
        recovery_codes: &[TokenHash],
    ) -> Result<(), Error> {
        let mut state = self.lock()?;
        let u = state.user_mut(id)?;
        u.secrets.totp_secret = secret.cloned();
        u.secrets.totp_last_step = None;
        u.user.totp_enabled = enabled;
        u.recovery_codes = recovery_codes.to_vec();
        Ok(())
    }

    async fn use_totp_step(&self, id: &UserId, step: u64) -> Result<bool, Error> {
        let mut state = self.lock()?;
        let u = state.user_mut(id)?;
        if u.secrets.totp_last_step.is_some_and(|last| last >= step) {
            return Ok(false);
        }
        u.secrets.totp_last_step = Some(step);
        Ok(true)
    }

    async fn use_recovery_code(&self, id: &UserId, code: &TokenHash) -> Result<bool, Error> {
        let mut state = self.lock()?;
        let u = state.user_mut(id)?;
        let before = u.recovery_codes.len();
        u.recovery_codes.retain(|c| c != code);
        Ok(u.recovery_codes.len() < before)
    }

    async fn recovery_codes_left(&self, id: &UserId) -> Result<u32, Error> {
        let mut state = self.lock()?;
        Ok(state.user_mut(id)?.recovery_codes.len() as u32)
    }

    async fn record_login_failure(
        &self,
        id: &UserId,
        threshold: u32,
        lock_until: Timestamp,
    ) -> Result<User, Error> {
        let mut state = self.lock()?;
        let user = &mut state.user_mut(id)?.user;
        user.failed_logins += 1;
        if user.failed_logins >= threshold {
            user.failed_logins = 0;
            user.locked_until = Some(lock_until);
        }
        Ok(user.clone())
    }

    async fn record_login_success(&self, id: &UserId) -> Result<(), Error> {
        let mut state = self.lock()?;
        let user = &mut state.user_mut(id)?.user;
        user.failed_logins = 0;
        user.locked_until = None;
        Ok(())
    }

    async fn delete_user(&self, id: &UserId) -> Result<(), Error> {
        let mut state = self.lock()?;
        state.user_mut(id)?;
        state.users.retain(|u| &u.user.id != id);
        state.sessions.retain(|(s, _)| &s.user_id != id);
        Ok(())
    }

    async fn create_session(&self, session: &Session, hash: &TokenHash) -> Result<(), Error> {
        let mut state = self.lock()?;
        state.user_mut(&session.user_id)?;
        unique(
            state.sessions.iter().any(|(_, h)| h == hash),
            "token hash",
            hash.as_str(),
        )?;
        unique(
            state.sessions.iter().any(|(s, _)| s.id == session.id),
            "session id",
            &session.id,
        )?;
        state.sessions.push((session.clone(), hash.clone()));
        Ok(())
    }

    async fn find_session(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<Session>, Error> {
        Ok(self
            .lock()?
            .sessions
            .iter()
            .find(|(s, h)| h == hash && now < s.expires_at)
            .map(|(s, _)| s.clone()))
    }

    async fn touch_session(
        &self,
        id: &SessionId,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), Error> {
        let mut state = self.lock()?;
        let (session, _) = state
            .sessions
            .iter_mut()
            .find(|(s, _)| &s.id == id)
            .ok_or_else(|| not_found("session", id))?;
        session.last_seen = last_seen;
        session.expires_at = expires_at;
        Ok(())
    }

    async fn delete_session(&self, id: &SessionId) -> Result<bool, Error> {
        let mut state = self.lock()?;
        let before = state.sessions.len();
        state.sessions.retain(|(s, _)| &s.id != id);
        Ok(state.sessions.len() < before)
    }

    async fn delete_user_sessions(&self, user: &UserId) -> Result<u64, Error> {
        let mut state = self.lock()?;
        let before = state.sessions.len();
        state.sessions.retain(|(s, _)| &s.user_id != user);
        Ok((before - state.sessions.len()) as u64)
    }

    async fn prune_sessions(&self, now: Timestamp) -> Result<u64, Error> {
        let mut state = self.lock()?;
        let before = state.sessions.len();
        state.sessions.retain(|(s, _)| now < s.expires_at);
        Ok((before - state.sessions.len()) as u64)
    }

    async fn put_certificate(&self, cert: &Certificate, key: Option<&Sealed>) -> Result<(), Error> {
        let mut state = self.lock()?;
        let taken = state
            .certificates
            .iter()
            .any(|(c, _)| c.names == cert.names && c.id != cert.id);
        unique(taken, "certificate names", names(&cert.names))?;
        match state.certificates.iter_mut().find(|(c, _)| c.id == cert.id) {
            Some((stored, stored_key)) => {
                *stored = cert.clone();
                if let Some(key) = key {
                    *stored_key = Some(key.clone());
                }
            }
            None => state.certificates.push((cert.clone(), key.cloned())),
        }
        Ok(())
    }

    async fn get_certificate(&self, id: &CertificateId) -> Result<Certificate, Error> {
        self.lock()?
            .certificates
            .iter()
            .find(|(c, _)| &c.id == id)
            .map(|(c, _)| c.clone())
            .ok_or_else(|| not_found("certificate", id))
    }

    async fn list_certificates(&self) -> Result<Vec<Certificate>, Error> {
        let mut all: Vec<Certificate> = self
            .lock()?
            .certificates
            .iter()
            .map(|(c, _)| c.clone())
            .collect();
        sort::certificates(&mut all);
        Ok(all)
    }

    async fn certificate_key(&self, id: &CertificateId) -> Result<Option<Sealed>, Error> {
        self.lock()?
            .certificates
            .iter()
            .find(|(c, _)| &c.id == id)
            .map(|(_, key)| key.clone())
            .ok_or_else(|| not_found("certificate", id))
    }

    async fn delete_certificate(&self, id: &CertificateId) -> Result<(), Error> {
        let mut state = self.lock()?;
        let before = state.certificates.len();
        state.certificates.retain(|(c, _)| &c.id != id);
        if state.certificates.len() == before {
            return Err(not_found("certificate", id));
        }
        Ok(())
    }

    async fn create_dns_zone(
        &self,
        zone: &DnsZone,
        credentials: Option<&Sealed>,
    ) -> Result<(), Error> {
        let mut state = self.lock()?;
        unique(
            state.dns_zones.iter().any(|(z, _)| z.name == zone.name),
            "zone name",
            &zone.name,
        )?;
        unique(
            state.dns_zones.iter().any(|(z, _)| z.id == zone.id),
            "DNS zone id",
            &zone.id,
        )?;
        state.dns_zones.push((zone.clone(), credentials.cloned()));
        Ok(())
    }

    async fn get_dns_zone(&self, id: &DnsZoneId) -> Result<DnsZone, Error> {
        self.lock()?
            .dns_zones
            .iter()
            .find(|(z, _)| &z.id == id)
            .map(|(z, _)| z.clone())
            .ok_or_else(|| not_found("DNS zone", id))
    }

    async fn list_dns_zones(&self) -> Result<Vec<DnsZone>, Error> {
        let mut all: Vec<DnsZone> = self
            .lock()?
            .dns_zones
            .iter()
            .map(|(z, _)| z.clone())
            .collect();
        sort::dns_zones(&mut all);
        Ok(all)
    }

    async fn update_dns_zone(
        &self,
        zone: &DnsZone,
        credentials: Option<&Sealed>,
    ) -> Result<(), Error> {
        let mut state = self.lock()?;
        let (stored, stored_credentials) = state
            .dns_zones
            .iter_mut()
            .find(|(z, _)| z.id == zone.id)
            .ok_or_else(|| not_found("DNS zone", &zone.id))?;
        stored.provider_zone_id.clone_from(&zone.provider_zone_id);
        stored.settings.clone_from(&zone.settings);
        stored.ttl = zone.ttl;
        if let Some(credentials) = credentials {
            *stored_credentials = Some(credentials.clone());
        }
        Ok(())
    }

    async fn dns_zone_credentials(&self, id: &DnsZoneId) -> Result<Option<Sealed>, Error> {
        self.lock()?
            .dns_zones
            .iter()
            .find(|(z, _)| &z.id == id)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| not_found("DNS zone", id))
    }

    async fn delete_dns_zone(&self, id: &DnsZoneId) -> Result<(), Error> {
        let mut state = self.lock()?;
        if !state.dns_zones.iter().any(|(z, _)| &z.id == id) {
            return Err(not_found("DNS zone", id));
        }
        let count = state
            .dns_records
            .iter()
            .filter(|r| r.zone_id.as_ref() == Some(id))
            .count() as u64;
        if count > 0 {
            return Err(Error::InUse {
                kind: "DNS zone",
                id: id.to_string(),
                by: "DNS records",
                count,
            });
        }
        state.dns_zones.retain(|(z, _)| &z.id != id);
        Ok(())
    }

    async fn append_event(&self, event: &NewEvent) -> Result<Event, Error> {
        let mut state = self.lock()?;
        let id = state.events.last().map_or(1, |e| e.id + 1);
        let event = Event {
            id,
            kind: event.kind.clone(),
            severity: event.severity,
            subject: event.subject.clone(),
            message: event.message.clone(),
            data: event.data.clone(),
            created_at: event.created_at,
        };
        state.events.push(event.clone());
        Ok(event)
    }

    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>, Error> {
        let state = self.lock()?;
        let admitted = |e: &&Event| filter.admits(e);
        let limit = filter.limit as usize;
        Ok(if filter.after.is_some() {
            state
                .events
                .iter()
                .filter(admitted)
                .take(limit)
                .cloned()
                .collect()
        } else {
            state
                .events
                .iter()
                .rev()
                .filter(admitted)
                .take(limit)
                .cloned()
                .collect()
        })
    }

    async fn prune_events(&self, before: Timestamp) -> Result<u64, Error> {
        let mut state = self.lock()?;
        let count = state.events.len();
        state.events.retain(|e| e.created_at >= before);
        Ok((count - state.events.len()) as u64)
    }

    async fn kv_get(
        &self,
        namespace: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<String>, Error> {
        Ok(self
            .lock()?
            .values
            .get(&(namespace.to_owned(), key.to_owned()))
            .filter(|(_, expires)| live(*expires, now))
            .map(|(value, _)| value.clone()))
    }

    async fn kv_list(
        &self,
        namespace: &str,
        now: Timestamp,
    ) -> Result<Vec<(String, String)>, Error> {
        Ok(self
            .lock()?
            .values
            .iter()
            .filter(|((ns, _), (_, expires))| ns == namespace && live(*expires, now))
            .map(|((_, key), (value, _))| (key.clone(), value.clone()))
            .collect())
    }

    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<(), Error> {
        self.lock()?.values.insert(
            (namespace.to_owned(), key.to_owned()),
            (value.to_owned(), expires_at),
        );
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, Error> {
        Ok(self
            .lock()?
            .values
            .remove(&(namespace.to_owned(), key.to_owned()))
            .is_some())
    }

    async fn kv_prune(&self, now: Timestamp) -> Result<u64, Error> {
        let mut state = self.lock()?;
        let count = state.values.len();
        state.values.retain(|_, (_, expires)| live(*expires, now));
        Ok((count - state.values.len()) as u64)
    }

    async fn kv_claim(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, Error> {
        let mut state = self.lock()?;
        let slot = (namespace.to_owned(), key.to_owned());
        let free = state
            .values
            .get(&slot)
            .is_none_or(|(held, expires)| held == value || !live(*expires, now));
        if free {
            state
                .values
                .insert(slot, (value.to_owned(), Some(expires_at)));
        }
        Ok(free)
    }

    async fn lease_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        let mut state = self.lock()?;
        let row = state.leases.get(name).unwrap_or(&LeaseRow::NEW);
        let Some((row, lease)) = lease::grant(name, row, holder, now_ms(), ttl) else {
            return Ok(None);
        };
        state.leases.insert(name.to_owned(), row);
        Ok(Some(lease))
    }

    async fn lease_release(&self, name: &str, holder: &str) -> Result<bool, Error> {
        let mut state = self.lock()?;
        let released = state
            .leases
            .get(name)
            .and_then(|row| lease::release(row, holder, now_ms()));
        Ok(match released {
            Some(row) => {
                state.leases.insert(name.to_owned(), row);
                true
            }
            None => false,
        })
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<Lease>, Error> {
        let state = self.lock()?;
        Ok(state
            .leases
            .get(name)
            .and_then(|row| row.lease(name, now_ms(), false)))
    }

    async fn record_intent(&self, fence: &Fence, intent: &NewIntent) -> Result<Intent, Error> {
        let mut state = self.lock()?;
        let now = now_ms();
        lease::check_fence(fence, state.leases.get(&fence.lease), now)?;
        let recorded = Intent {
            id: state.last_intent + 1,
            lease: fence.lease.clone(),
            token: fence.token,
            holder: fence.holder.clone(),
            kind: intent.kind.clone(),
            subject: intent.subject.clone(),
            detail: intent.detail.clone(),
            created_at: lease::timestamp(now)?,
        };
        state.last_intent = recorded.id;
        state.intents.push(recorded.clone());
        Ok(recorded)
    }

    async fn list_intents(&self, after: Option<i64>, limit: u32) -> Result<Vec<Intent>, Error> {
        let state = self.lock()?;
        Ok(state
            .intents
            .iter()
            .filter(|i| after.is_none_or(|after| i.id > after))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn prune_intents(&self, before: Timestamp) -> Result<u64, Error> {
        let mut state = self.lock()?;
        let count = state.intents.len();
        state.intents.retain(|i| i.created_at >= before);
        Ok((count - state.intents.len()) as u64)
    }
}

fn api_token_mut<'a>(state: &'a mut State, id: &ApiTokenId) -> Result<&'a mut ApiToken, Error> {
    state
        .api_tokens
        .iter_mut()
        .map(|(t, _)| t)
        .find(|t| &t.id == id)
        .ok_or_else(|| not_found("API token", id))
}
