//! The edge automation (SPEC §8.2, §9): creates an edge's VPS, follows it until it serves,
//! takes it out safely, destroys it, and replaces it elsewhere — with no human.
//!
//! Every edge carries its step ([`EdgePhase`]) and what the step needs in its
//! [`EdgeLifecycle`], in the store; the leader looks at every edge each second and moves
//! each one step when it can. A restart (or a new leader) picks up where the last left off:
//!
//! ```text
//! create_instance ─ VPS created ─▶ booting ─ heartbeat ─▶ enrolled ─ ready, tunnels up,
//!   certificates installed ─▶ verifying ─ checks pass (health judge) ─▶ serving
//! serving ─ unhealthy for destroy_delay ─▶ draining ─ records read back gone, TTL ─▶
//!   destroying ─▶ destroyed ─ replace_delay ─▶ a replacement at another provider and
//!   region (create_instance)
//! DELETE /api/v1/edge-nodes/{id} ─▶ draining (out of DNS) ─ records read back gone, TTL ─▶
//!   destroying ─▶ destroyed
//! ```
//!
//! What must hold before anything is taken away:
//! - no VPS is destroyed while a record still points at it: every zone's provider is read
//!   back without the edge's address, and the TTL has passed since that read; a provider
//!   that cannot be read (or the DNS manager switched off) holds the destroy, with an event;
//! - no unhealthy edge is destroyed while the health checks themselves are suspect (too
//!   many edges look unhealthy at once), or while it is the last edge serving one of its
//!   host names — a replacement is created first, and the edge goes once that serves;
//! - exactly one VPS per edge: the creation is noted with an idempotency key before the
//!   provider is called, and after a crash or an error the VPS is looked up by that key
//!   before another is created;
//! - every create and destroy is recorded with the leader's fencing token first, so a
//!   control plane that no longer leads cannot act.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use kokoa_core::{
    EdgeLifecycle, EdgeNode, EdgeNodeId, EdgePhase, EdgeStatus, Name, NodeRef, OriginId,
    RemovalReason, Severity, Timestamp,
};
use kokoa_provision::{
    AgentSource, EdgeBootstrap, IdempotencyKey, InstanceConfig, InstanceId, InstanceStatus,
    Placement, Secret, choose_replacement, nodes_to_create, render_user_data,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use super::{Module, ProvisionerEntry, dns, wait_or_stop};
use kokoa_runtime::operation as request_id;

use crate::{error::ApiError, events::kinds, payload, state::AppState};

/// How often every edge is looked at when nothing wakes the automation sooner.
const PERIOD: Duration = Duration::from_secs(1);
/// Where an edge's `POST .../ready` is noted, per edge id (kept apart from the edge's row,
/// which only the leader writes).
pub(crate) const READY: &str = "edge-ready";
/// The longest wait before a failed step is tried again (2 s, doubling).
const RETRY_LONGEST: Duration = Duration::from_secs(300);
/// Failed attempts at one step before the edge is given up (and replaced).
const MAX_ATTEMPTS: u32 = 8;
/// Replacements of replacements that never came up before the automation stops trying.
const MAX_FAILED_CHAIN: usize = 3;

/// A request for a new edge.
#[derive(Debug, Clone)]
pub struct NewEdge {
    /// Its name; a default from the region when `None`.
    pub name: Option<Name>,
    /// The only origin it serves, or every origin.
    pub origin_id: Option<OriginId>,
    /// `manual` or a configured provider.
    pub provider: Name,
    /// The provider's region.
    pub region: Name,
    /// The address of an existing VPS (manual edges).
    pub public_ip: Option<IpAddr>,
    /// The provider's size code.
    pub size: Option<String>,
    /// The provider's SSH key id.
    pub ssh_key_id: Option<String>,
    /// The edge it replaces.
    pub replaces: Option<EdgeNodeId>,
}

/// Registers an edge and its tunnels (one per origin it serves). A manual edge gets a
/// single-use enrollment token, returned; a cloud edge's VPS is created by the automation.
pub async fn register(
    state: &AppState,
    request: NewEdge,
    manual_token_seconds: i64,
) -> Result<(EdgeNode, Option<zeroize::Zeroizing<String>>), ApiError> {
    let store = state.store();
    let manual = request.provider.as_str() == "manual";
    if !manual
        && !state
            .settings()
            .edges
            .provisioners
            .contains_key(request.provider.as_str())
    {
        let known: Vec<&str> = state
            .settings()
            .edges
            .provisioners
            .keys()
            .map(String::as_str)
            .chain(["manual"])
            .collect();
        return Err(ApiError::invalid(
            "provider",
            format!(
                "no provisioner is configured for provider {:?}; this control plane knows {} \
                 (add one under [[provisioners]] in its configuration file)",
                request.provider.as_str(),
                known.join(", ")
            ),
        ));
    }
    if let Some(id) = &request.origin_id {
        store
            .get_origin(id)
            .await
            .map_err(|e| ApiError::from(e).with_field("origin_id"))?;
    }
    let id = EdgeNodeId::new();
    let name = match request.name {
        Some(name) => name,
        None => default_name(state, &request.region, &id).await?,
    };
    let now = Timestamp::now();
    let mut lifecycle = EdgeLifecycle {
        size: request.size,
        ssh_key_id: request.ssh_key_id,
        replaces: request.replaces,
        request_id: request_id::current(),
        ..EdgeLifecycle::default()
    };
    // An existing VPS has nothing to create.
    lifecycle.enter(
        if manual {
            EdgePhase::Booting
        } else {
            EdgePhase::CreateInstance
        },
        now,
    );
    let mut edge = EdgeNode {
        id: id.clone(),
        name,
        origin_id: request.origin_id,
        provider: request.provider,
        region: request.region,
        public_ip: request.public_ip,
        status: EdgeStatus::Provisioning,
        last_heartbeat: None,
        last_metrics: None,
        health_check_failures: 0,
        created_at: now,
        deleted_at: None,
        instance_id: None,
        lifecycle,
        wireguard_public_key: None,
    };
    store.create_edge(&edge).await?;
    // Listed after the edge is written, as an origin being created lists the edges after
    // it is written: of the two, at least one sees the other and makes their tunnel.
    let origins = match &edge.origin_id {
        Some(id) => vec![id.clone()],
        None => store
            .list_origins()
            .await?
            .into_iter()
            .map(|o| o.id)
            .collect(),
    };
    for origin in &origins {
        if let Err(e) = crate::api::create_tunnel(state, &id, origin).await {
            // Undo: the edge never served, so it is marked deleted without tunnels.
            let undo = async {
                store.delete_tunnels_of_edge(&id).await?;
                edge.set_status(EdgeStatus::Deleted, Timestamp::now())?;
                edge.lifecycle.enter(EdgePhase::Destroyed, Timestamp::now());
                store.update_edge(&edge).await
            };
            if let Err(undo) = undo.await {
                tracing::error!(edge = %id, error = %undo, "cannot undo edge creation");
            }
            return Err(e);
        }
    }
    let token = if manual {
        let (_, token) =
            crate::api::issue_enrollment(state, NodeRef::Edge(id.clone()), manual_token_seconds, 1)
                .await?;
        Some(token)
    } else {
        None
    };
    state.notify_changed();
    state.wakers().edges.notify_one();
    tracing::info!(edge = %id, name = %edge.name, provider = %edge.provider, tunnels = origins.len(), "edge node registered");
    Ok((edge, token))
}

/// `edge-<region>-<NN>`, NN counting the region's edges; a region too long for that gets
/// `edge-<first 8 hex digits of the id>`.
async fn default_name(state: &AppState, region: &Name, id: &EdgeNodeId) -> Result<Name, ApiError> {
    let in_region = state
        .store()
        .list_edges()
        .await?
        .iter()
        .filter(|e| e.region == *region)
        .count();
    Name::parse(&format!("edge-{region}-{:02}", in_region + 1))
        .or_else(|_| {
            let hex = id.as_str().trim_start_matches("edg_");
            Name::parse(&format!("edge-{}", &hex[..hex.len().min(8)]))
        })
        .map_err(|e| ApiError::internal(&e))
}

/// Where removals asked through the API wait for the leader, per edge id: the edge's row
/// is written by the leader alone.
pub(crate) const REMOVALS: &str = "edge-removals";

/// Asks for the safe removal of an edge (SPEC §9): out of DNS at once, destroyed once the
/// records' TTL has run out. The leader starts it within a second; asking again changes
/// nothing.
pub async fn request_removal(state: &AppState, id: &EdgeNodeId) -> Result<(), ApiError> {
    let edge = state.store().get_edge(id).await?;
    if edge.status != EdgeStatus::Deleted {
        let asked = RemovalRequest {
            reason: RemovalReason::Manual,
            request_id: request_id::current(),
        };
        let asked = serde_json::to_string(&asked).unwrap_or_default();
        state
            .store()
            .kv_put(REMOVALS, id.as_str(), &asked, None)
            .await?;
        state.wakers().edges.notify_one();
    }
    Ok(())
}

/// A removal asked through the API, until the automation starts it.
#[derive(Debug, Serialize, Deserialize)]
struct RemovalRequest {
    reason: RemovalReason,
    request_id: Option<String>,
}

/// The steps of a removal, for the API's answer.
pub async fn removal_steps(state: &AppState) -> Vec<String> {
    vec![
        "Remove from DNS".to_owned(),
        format!("Wait for TTL expiration ({}s)", max_ttl(state).await),
        "Destroy VPS".to_owned(),
    ]
}

/// Starts the removals asked for.
async fn start_removals(state: &AppState) -> Result<(), kokoa_core::Error> {
    let store = state.store();
    let now = Timestamp::now();
    for (id, asked) in store.kv_list(REMOVALS, now).await? {
        // Before request ids the reason alone was kept.
        let asked: RemovalRequest = serde_json::from_str(&asked).unwrap_or(RemovalRequest {
            reason: RemovalReason::Manual,
            request_id: None,
        });
        let reason = asked.reason;
        let Ok(id) = EdgeNodeId::parse(&id) else {
            store.kv_delete(REMOVALS, &id).await?;
            continue;
        };
        let _writing = state.edge_writes().lock().await;
        let mut edge = match store.get_edge(&id).await {
            Ok(edge) => edge,
            Err(kokoa_core::Error::NotFound { .. }) => {
                store.kv_delete(REMOVALS, id.as_str()).await?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let underway = edge.status == EdgeStatus::Deleted
            || matches!(
                edge.lifecycle.phase,
                EdgePhase::Draining | EdgePhase::Destroying | EdgePhase::Destroyed
            );
        if !underway {
            edge.lifecycle.removal = Some(reason);
            edge.lifecycle.request_id = asked.request_id.clone();
            edge.lifecycle.withdrawn_at.get_or_insert(now);
            edge.lifecycle.enter(EdgePhase::Draining, now);
            store.update_edge(&edge).await?;
            let started = state.events().emit(
                kinds::EDGE_REMOVAL_STARTED,
                Severity::Info,
                Some(edge.id.as_str()),
                format!(
                    "removal of edge {} started: out of DNS, then destroyed",
                    edge.name
                ),
                json!({"edge_node_id": edge.id, "reason": reason,
                       "steps": removal_steps(state).await}),
            );
            request_id::scope(asked.request_id, started).await;
            state.wakers().dns.notify_one();
        }
        store.kv_delete(REMOVALS, id.as_str()).await?;
    }
    Ok(())
}

/// Runs the automation on the leader.
pub(super) async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        if state.leader().is_leader() {
            let started = std::time::Instant::now();
            let result = step_all(&state).await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "the edge automation could not read the store");
            }
            state
                .duty_metrics()
                .run("edge_automation", result.is_ok(), started.elapsed());
        }
        if wait_or_stop(PERIOD, &state.wakers().edges, &mut stop).await {
            return;
        }
    }
}

/// Moves every edge one step where it can, then keeps the number of edges.
pub(crate) async fn step_all(state: &AppState) -> Result<(), kokoa_core::Error> {
    start_removals(state).await?;
    let provisioning = state
        .modules()
        .enabled(state, Module::EdgeProvisioner)
        .await;
    let checking = state.modules().enabled(state, Module::HealthChecker).await;
    let zones_ttl = max_ttl(state).await;
    for listed in state.store().list_edges().await? {
        if listed.lifecycle.phase == EdgePhase::Destroyed && !wants_replacement(state, &listed) {
            continue;
        }
        // One writer of edges at a time in this process: the health judge takes this too.
        let _writing = state.edge_writes().lock().await;
        let edge = state.store().get_edge(&listed.id).await?;
        let mut step = Step {
            state,
            edge,
            provisioning,
            checking,
            zones_ttl,
            changed: false,
            notify: false,
        };
        let working_for = step.edge.lifecycle.request_id.clone();
        request_id::scope(working_for, step.go()).await;
        if step.changed
            && let Err(e) = state.store().update_edge(&step.edge).await
        {
            tracing::warn!(edge = %step.edge.id, error = %e, "cannot record the edge's step");
        }
        if step.notify {
            state.notify_changed();
        }
    }
    if provisioning {
        keep_minimum(state).await?;
        sweep_orphans(state).await?;
    }
    let edges = state.store().list_edges().await?;
    state.modules().report(Module::EdgeProvisioner, |s| {
        let providers: Vec<&str> = state
            .settings()
            .edges
            .provisioners
            .keys()
            .map(String::as_str)
            .collect();
        s.provider = (!providers.is_empty()).then(|| providers.join(", "));
        let count = |f: &dyn Fn(&EdgeNode) -> bool| edges.iter().filter(|e| f(e)).count() as u64;
        s.counts
            .insert("active".into(), count(&|e| e.status == EdgeStatus::Active));
        s.counts.insert(
            "provisioning".into(),
            count(&|e| e.status == EdgeStatus::Provisioning),
        );
        s.counts.insert(
            "unhealthy".into(),
            count(&|e| e.status == EdgeStatus::Unhealthy),
        );
        s.detail = edges
            .iter()
            .rev()
            .filter(|e| e.status != EdgeStatus::Deleted)
            .find_map(|e| {
                e.lifecycle
                    .last_error
                    .as_ref()
                    .map(|m| format!("{}: {m}", e.name))
            });
    });
    Ok(())
}

/// The longest TTL of the managed zones, in seconds.
async fn max_ttl(state: &AppState) -> u64 {
    state
        .store()
        .list_dns_zones()
        .await
        .ok()
        .and_then(|zones| zones.iter().map(|z| z.ttl).max())
        .map_or(u64::from(kokoa_dns::DEFAULT_TTL), u64::from)
}

/// Whether a destroyed edge is still to be replaced.
fn wants_replacement(state: &AppState, edge: &EdgeNode) -> bool {
    state
        .settings()
        .edges
        .management
        .auto_replace_unhealthy_nodes
        && edge.lifecycle.replaced_by.is_none()
        && matches!(
            edge.lifecycle.removal,
            Some(RemovalReason::Unhealthy | RemovalReason::ProvisioningFailed)
        )
}

/// One edge's step.
struct Step<'a> {
    state: &'a AppState,
    edge: EdgeNode,
    provisioning: bool,
    checking: bool,
    zones_ttl: u64,
    changed: bool,
    /// Whether nodes' configurations change once the edge is written.
    notify: bool,
}

impl Step<'_> {
    async fn go(&mut self) {
        let now = Timestamp::now();
        if !self.edge.lifecycle.due(now) {
            return;
        }
        let result = match self.edge.lifecycle.phase {
            EdgePhase::CreateInstance => self.create_instance(now).await,
            EdgePhase::Booting => self.booting(now).await,
            EdgePhase::Enrolled => self.enrolled(now).await,
            EdgePhase::Verifying => self.verifying(now).await,
            EdgePhase::Serving => self.serving(now).await,
            EdgePhase::Draining => self.draining(now).await,
            EdgePhase::Destroying => self.destroying(now).await,
            EdgePhase::Destroyed => self.replace(now).await,
            _ => Ok(()),
        };
        if let Err(message) = result {
            self.fail(now, message).await;
        }
    }

    /// The provider of this edge's VPS.
    fn provisioner(&self) -> Result<ProvisionerEntry, String> {
        self.state
            .settings()
            .edges
            .provisioners
            .get(self.edge.provider.as_str())
            .cloned()
            .ok_or_else(|| {
                format!(
                    "no provisioner is configured for provider {}",
                    self.edge.provider
                )
            })
    }

    fn enter(&mut self, phase: EdgePhase, now: Timestamp) {
        self.edge.lifecycle.enter(phase, now);
        self.changed = true;
    }

    /// Notes a step done once, with an event.
    async fn done(&mut self, step: &str, kind: &str, message: String, now: Timestamp) {
        if self.edge.lifecycle.steps.contains_key(step) {
            return;
        }
        self.edge.lifecycle.steps.insert(step.to_owned(), now);
        self.changed = true;
        self.state.duty_metrics().edge_step(
            self.edge.provider.as_str(),
            step,
            now.seconds_since(self.edge.created_at),
        );
        self.state
            .events()
            .emit(
                kind,
                Severity::Info,
                Some(self.edge.id.as_str()),
                message,
                json!({
                    "edge_node_id": self.edge.id, "step": step,
                    "seconds_since_created": now.seconds_since(self.edge.created_at),
                    "provider": self.edge.provider, "region": self.edge.region,
                    "public_ip": self.edge.public_ip, "instance_id": self.edge.instance_id,
                }),
            )
            .await;
    }

    /// A failed attempt: retried with a doubling delay; given up after [`MAX_ATTEMPTS`].
    async fn fail(&mut self, now: Timestamp, message: String) {
        self.state
            .duty_metrics()
            .edge_failure(self.edge.provider.as_str());
        let attempts = self.edge.lifecycle.attempts + 1;
        let delay = kokoa_core::doubling(Duration::from_secs(2), attempts - 1, RETRY_LONGEST);
        self.edge
            .lifecycle
            .failed(message.clone(), now.plus_secs(delay.as_secs() as i64));
        self.changed = true;
        let give_up = attempts >= MAX_ATTEMPTS
            && matches!(
                self.edge.lifecycle.phase,
                EdgePhase::CreateInstance | EdgePhase::Booting
            );
        self.state
            .events()
            .emit(
                kinds::EDGE_STEP_FAILED,
                if give_up {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                Some(self.edge.id.as_str()),
                format!(
                    "edge {}: {} failed (attempt {attempts}): {message}",
                    self.edge.name, self.edge.lifecycle.phase
                ),
                json!({"edge_node_id": self.edge.id, "phase": self.edge.lifecycle.phase,
                       "attempt": attempts, "error": message, "retry_in_seconds": delay}),
            )
            .await;
        if give_up {
            self.edge.lifecycle.withdrawn_at.get_or_insert(now);
            self.start_removal(RemovalReason::ProvisioningFailed, now);
        }
    }

    /// Starts removing this edge on the automation's own decision, as an operation of its
    /// own: its id ties together the events of the removal and of the replacement.
    fn start_removal(&mut self, reason: RemovalReason, now: Timestamp) {
        self.edge.lifecycle.removal = Some(reason);
        self.edge.lifecycle.request_id = Some(request_id::begin());
        self.enter(EdgePhase::Draining, now);
    }

    /// A VPS that has not come up in time is taken away (and replaced).
    fn timed_out(&mut self, now: Timestamp) -> bool {
        let limit = self.state.settings().edges.provision_timeout.as_secs() as i64;
        if now.seconds_since(self.edge.created_at) <= limit {
            return false;
        }
        tracing::warn!(edge = %self.edge.id, "edge did not come up in {limit} s; removing it");
        self.edge.lifecycle.withdrawn_at.get_or_insert(now);
        self.start_removal(RemovalReason::ProvisioningFailed, now);
        self.edge.lifecycle.last_error = Some(format!("did not come up within {limit} s"));
        true
    }

    async fn create_instance(&mut self, now: Timestamp) -> Result<(), String> {
        if !self.provisioning {
            return Ok(());
        }
        let settings = &self.state.settings().edges;
        let entry = self.provisioner()?;
        let key = idempotency_key(&self.edge.id)?;
        let tag = installation_tag(self.state).await?;
        let store = self.state.store();
        if self.edge.lifecycle.steps.contains_key(CREATE_REQUESTED) {
            // Asked for before: the provider may have made it although the answer was lost
            // (a timeout, a crash, a failed write). Look it up by its key first.
            let found = entry
                .provisioner
                .find_instance(&tag, &key)
                .await
                .map_err(|e| {
                    format!("cannot tell whether the VPS asked for earlier exists ({e}); not creating another")
                })?;
            if let Some(found) = found {
                return self.created(found.id, &found.status, true, now).await;
            }
            // It was never made: the earlier enrollment token goes with it.
            store
                .revoke_node_credentials(&NodeRef::Edge(self.edge.id.clone()), now)
                .await
                .map_err(|e| e.to_string())?;
        }
        self.state
            .leader()
            .intend(
                self.state,
                "vps.create",
                self.edge.id.as_str(),
                json!({"provider": self.edge.provider, "region": self.edge.region,
                       "idempotency_key": key.as_str()}),
            )
            .await?;
        // Noted with the edge before the provider is called, so a crash after it is found.
        self.edge
            .lifecycle
            .steps
            .insert(CREATE_REQUESTED.to_owned(), now);
        store
            .update_edge(&self.edge)
            .await
            .map_err(|e| format!("cannot note the VPS request: {e}"))?;
        let (_, token) = crate::api::issue_enrollment(
            self.state,
            NodeRef::Edge(self.edge.id.clone()),
            settings.enrollment_ttl.as_secs() as i64,
            1,
        )
        .await
        .map_err(|e| e.message().to_owned())?;
        let user_data = render_user_data(&EdgeBootstrap {
            control_plane_url: self.state.public_url().to_owned(),
            node_id: self.edge.id.clone(),
            enrollment_token: Secret::new(token.as_str()),
            agent: edge_agent(self.state, settings.agent.as_ref()),
            ca_pin: self.state.ca_pin().map(|pin| pin.to_string()),
        })
        .map_err(|e| e.to_string())?;
        let size = self
            .edge
            .lifecycle
            .size
            .clone()
            .unwrap_or_else(|| entry.size.clone());
        let config = InstanceConfig {
            provider: self.edge.provider.clone(),
            region: self.edge.region.clone(),
            size: Name::parse(&size).map_err(|e| e.to_string())?,
            image: entry.image.clone(),
            ssh_key_id: self
                .edge
                .lifecycle
                .ssh_key_id
                .clone()
                .or_else(|| entry.ssh_key_id.clone()),
            user_data,
            name: self.edge.name.clone(),
            tags: vec![Name::parse("kokoa").map_err(|e| e.to_string())?, tag],
            address: None,
            idempotency_key: Some(key),
        };
        let instance = entry
            .provisioner
            .create_instance(&config)
            .await
            .map_err(|e| e.to_string())?;
        self.created(instance.id, &instance.status, false, now)
            .await
    }

    /// The edge's VPS exists: noted, and on to booting.
    async fn created(
        &mut self,
        id: InstanceId,
        status: &InstanceStatus,
        found: bool,
        now: Timestamp,
    ) -> Result<(), String> {
        self.edge.instance_id = Some(id.as_str().to_owned());
        if let Some(ip) = status.address() {
            self.edge.public_ip = Some(ip);
        }
        self.enter(EdgePhase::Booting, now);
        let how = if found {
            "found (created by an earlier request)"
        } else {
            "created"
        };
        let message = format!(
            "VPS {id} {how} at {} in {} for edge {}",
            self.edge.provider, self.edge.region, self.edge.name
        );
        self.done("instance_created", kinds::EDGE_CREATED, message, now)
            .await;
        Ok(())
    }

    async fn booting(&mut self, now: Timestamp) -> Result<(), String> {
        if self.timed_out(now) || !self.provisioned(now).await? {
            return Ok(());
        }
        if self.edge.last_heartbeat.is_some() {
            let message = format!("edge {} enrolled and sends heartbeats", self.edge.name);
            self.done("enrolled", kinds::EDGE_ENROLLED, message, now)
                .await;
            self.enter(EdgePhase::Enrolled, now);
        }
        Ok(())
    }

    /// Whether the edge's VPS runs, learning its address from the provider the first time
    /// (a manual edge has no VPS of ours and its address already).
    async fn provisioned(&mut self, now: Timestamp) -> Result<bool, String> {
        let Some(instance) = self.edge.instance_id.clone() else {
            return Ok(true);
        };
        if self.edge.lifecycle.steps.contains_key("provisioned") {
            return Ok(true);
        }
        let entry = self.provisioner()?;
        let id = InstanceId::parse(&instance).map_err(|e| e.to_string())?;
        let status = entry
            .provisioner
            .instance_status(&id)
            .await
            .map_err(|e| e.to_string())?;
        match status {
            InstanceStatus::Running { .. } => {
                if let Some(ip) = status.address()
                    && self.edge.public_ip != Some(ip)
                {
                    self.edge.public_ip = Some(ip);
                    self.changed = true;
                    // Origins add the new peer (once the address is written).
                    self.notify = true;
                }
                let address = self
                    .edge
                    .public_ip
                    .map(|ip| ip.to_string())
                    .unwrap_or_default();
                let message = format!("VPS of edge {} runs at {address}", self.edge.name);
                self.done("provisioned", kinds::EDGE_PROVISIONED, message, now)
                    .await;
                Ok(true)
            }
            InstanceStatus::Gone => Err(format!("the provider no longer knows VPS {instance}")),
            _ => Ok(false),
        }
    }

    async fn enrolled(&mut self, now: Timestamp) -> Result<(), String> {
        if self.timed_out(now) {
            return Ok(());
        }
        let ready = self
            .state
            .store()
            .kv_get(READY, self.edge.id.as_str(), now)
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        if ready {
            let message = format!("edge {} applied its configuration", self.edge.name);
            self.done("reported_ready", kinds::EDGE_REPORTED_READY, message, now)
                .await;
        }
        // The tunnels its configuration has: to origins whose agent registered a key.
        let expected = payload::edge_content(self.state, &self.edge.id)
            .await
            .map_err(|e| e.to_string())?
            .tunnels
            .into_iter()
            .map(|t| t.origin_id)
            .collect::<BTreeSet<_>>();
        let up = tunnels_up(&self.edge);
        if expected.iter().all(|o| up.contains(o)) {
            let message = format!(
                "every tunnel of edge {} is up ({})",
                self.edge.name,
                expected.len()
            );
            self.done("tunnels_up", kinds::EDGE_TUNNELS_UP, message, now)
                .await;
        }
        let applied = self
            .edge
            .last_metrics
            .as_ref()
            .and_then(|m| m.get("config_hash"))
            .and_then(|h| h.as_str())
            .map(str::to_owned);
        let current = payload::edge_config(self.state, &self.edge.id)
            .await
            .map_err(|e| e.to_string())?;
        if applied.as_deref() == Some(current.config_hash().as_str()) {
            let count = current.content().certificates.len();
            let message = format!(
                "edge {} serves its current configuration with its {count} certificate(s)",
                self.edge.name
            );
            self.done(
                "certificates_installed",
                kinds::EDGE_CERTIFICATES_INSTALLED,
                message,
                now,
            )
            .await;
        }
        let steps = &self.edge.lifecycle.steps;
        if ["reported_ready", "tunnels_up", "certificates_installed"]
            .iter()
            .all(|s| steps.contains_key(*s))
        {
            self.enter(EdgePhase::Verifying, now);
            // The checks start; the health judge takes it from here.
            self.state.wakers().health.notify_one();
        }
        Ok(())
    }

    async fn verifying(&mut self, now: Timestamp) -> Result<(), String> {
        if self.timed_out(now) {
            return Ok(());
        }
        if !self.checking {
            // Nobody checks: the edge goes into DNS as it is.
            self.edge
                .set_status(EdgeStatus::Active, now)
                .map_err(|e| e.to_string())?;
            self.enter(EdgePhase::Serving, now);
            let message = format!("edge {} serves (the health checker is off)", self.edge.name);
            self.done("checks_passed", kinds::EDGE_READY, message, now)
                .await;
            self.state.wakers().dns.notify_one();
        }
        Ok(())
    }

    async fn serving(&mut self, now: Timestamp) -> Result<(), String> {
        let management = &self.state.settings().edges.management;
        if self.edge.status != EdgeStatus::Unhealthy || !management.auto_destroy_unhealthy_vps {
            self.changed |= self.edge.lifecycle.steps.remove(DESTROY_HELD).is_some();
            return Ok(());
        }
        let since = self.edge.lifecycle.withdrawn_at.unwrap_or(now);
        if now.seconds_since(since) < management.destroy_delay as i64 {
            return Ok(());
        }
        if let Some(hold) = self.destroy_hold().await? {
            if hold == Hold::LastServing
                && management.auto_replace_unhealthy_nodes
                && self.edge.lifecycle.replaced_by.is_none()
            {
                // Replace before destroying: the edge goes once its replacement serves.
                self.create_replacement().await?;
            }
            if !self.edge.lifecycle.steps.contains_key(DESTROY_HELD) {
                self.edge
                    .lifecycle
                    .steps
                    .insert(DESTROY_HELD.to_owned(), now);
                self.changed = true;
                let why = hold.describe();
                self.state
                    .events()
                    .emit(
                        kinds::EDGE_DESTROY_HELD,
                        Severity::Warning,
                        Some(self.edge.id.as_str()),
                        format!("edge {} is unhealthy but kept: {why}", self.edge.name),
                        json!({"edge_node_id": self.edge.id, "reason": hold.as_str(),
                               "replaced_by": self.edge.lifecycle.replaced_by}),
                    )
                    .await;
            }
            return Ok(());
        }
        self.edge.lifecycle.steps.remove(DESTROY_HELD);
        self.start_removal(RemovalReason::Unhealthy, now);
        self.state
            .events()
            .emit(
                kinds::EDGE_REMOVAL_STARTED,
                Severity::Warning,
                Some(self.edge.id.as_str()),
                format!(
                    "edge {} is still unhealthy {} s after leaving DNS: destroying it once its \
                     records are read back gone",
                    self.edge.name, management.destroy_delay
                ),
                json!({"edge_node_id": self.edge.id, "reason": RemovalReason::Unhealthy}),
            )
            .await;
        Ok(())
    }

    /// Why this unhealthy edge must not be destroyed now, if it must not.
    async fn destroy_hold(&self) -> Result<Option<Hold>, String> {
        let store = self.state.store();
        let now = Timestamp::now();
        let suspect = store
            .kv_get(
                kokoa_runtime::reports::GUARDS,
                kokoa_runtime::reports::OBSERVER_SUSPECT,
                now,
            )
            .await
            .map_err(|e| e.to_string())?;
        if suspect.is_some() {
            return Ok(Some(Hold::ObserverSuspect));
        }
        let tunnels = store
            .list_tunnels(None, None)
            .await
            .map_err(|e| e.to_string())?;
        let routed: BTreeSet<OriginId> = store
            .list_routes()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| r.origin_id)
            .collect();
        let edges = store.list_edges().await.map_err(|e| e.to_string())?;
        let serving: BTreeSet<&EdgeNodeId> = edges
            .iter()
            .filter(|e| {
                e.id != self.edge.id
                    && e.status == EdgeStatus::Active
                    && e.lifecycle.phase == EdgePhase::Serving
                    && e.lifecycle.withdrawn_at.is_none()
            })
            .map(|e| &e.id)
            .collect();
        let mine = tunnels
            .iter()
            .filter(|t| t.edge_node_id == self.edge.id && routed.contains(&t.origin_id));
        for tunnel in mine {
            let covered = tunnels
                .iter()
                .any(|t| t.origin_id == tunnel.origin_id && serving.contains(&t.edge_node_id));
            if !covered {
                return Ok(Some(Hold::LastServing));
            }
        }
        Ok(None)
    }

    async fn draining(&mut self, now: Timestamp) -> Result<(), String> {
        if !self.edge.lifecycle.steps.contains_key("dns_removed") {
            let left = dns::records_at(self.state, &self.edge).await.map_err(|e| {
                // The DNS manager tries again (and removes them) once the provider answers.
                self.state.wakers().dns.notify_one();
                format!("not destroyed while its DNS records may remain: {e}")
            })?;
            if !left.is_empty() {
                let since = self.edge.lifecycle.phase_since.unwrap_or(now);
                let patience = (self.zones_ttl as i64 * 4).max(60);
                if now.seconds_since(since) > patience {
                    return Err(format!(
                        "not destroyed: {} DNS record(s) still point at it after {patience} s: {}",
                        left.len(),
                        left.join(", ")
                    ));
                }
                // The DNS manager is taking them out.
                self.state.wakers().dns.notify_one();
                return Ok(());
            }
            let message = format!(
                "edge {} is out of DNS: no zone's records point at it any more",
                self.edge.name
            );
            self.done("dns_removed", kinds::EDGE_REMOVAL_STARTED, message, now)
                .await;
        }
        let confirmed = self
            .edge
            .lifecycle
            .steps
            .get("dns_removed")
            .copied()
            .unwrap_or(now);
        if now.seconds_since(confirmed) >= self.zones_ttl as i64 {
            self.enter(EdgePhase::Destroying, now);
        }
        Ok(())
    }

    async fn destroying(&mut self, now: Timestamp) -> Result<(), String> {
        if let Some(instance) = self.edge.instance_id.clone() {
            let entry = self
                .provisioner()
                .map_err(|e| format!("{e}; destroy VPS {instance} by hand"))?;
            if !self.provisioning {
                return Ok(());
            }
            let id = InstanceId::parse(&instance).map_err(|e| e.to_string())?;
            self.state
                .leader()
                .intend(
                    self.state,
                    "vps.destroy",
                    self.edge.id.as_str(),
                    json!({"provider": self.edge.provider, "instance_id": instance}),
                )
                .await?;
            entry
                .provisioner
                .destroy_instance(&id)
                .await
                .map_err(|e| e.to_string())?;
        }
        let store = self.state.store();
        self.edge
            .set_status(EdgeStatus::Deleted, now)
            .map_err(|e| e.to_string())?;
        store
            .revoke_node_credentials(&NodeRef::Edge(self.edge.id.clone()), now)
            .await
            .map_err(|e| e.to_string())?;
        store
            .delete_tunnels_of_edge(&self.edge.id)
            .await
            .map_err(|e| e.to_string())?;
        self.enter(EdgePhase::Destroyed, now);
        let message = match &self.edge.instance_id {
            Some(instance) => format!("edge {} destroyed (VPS {instance})", self.edge.name),
            None => format!("edge {} removed", self.edge.name),
        };
        self.done("destroyed", kinds::EDGE_DESTROYED, message, now)
            .await;
        self.notify = true;
        self.state.wakers().dns.notify_one();
        Ok(())
    }

    async fn replace(&mut self, now: Timestamp) -> Result<(), String> {
        if !self.provisioning || !wants_replacement(self.state, &self.edge) {
            return Ok(());
        }
        let management = &self.state.settings().edges.management;
        if now.seconds_since(self.edge.lifecycle.phase_since.unwrap_or(now))
            < management.replace_delay as i64
        {
            return Ok(());
        }
        self.create_replacement().await
    }

    /// Asks for an edge to replace this one, at another provider and region.
    async fn create_replacement(&mut self) -> Result<(), String> {
        if !self.provisioning {
            return Ok(());
        }
        let edges = self
            .state
            .store()
            .list_edges()
            .await
            .map_err(|e| e.to_string())?;
        if failed_chain(&edges, &self.edge) >= MAX_FAILED_CHAIN {
            self.edge.lifecycle.replaced_by = None;
            return Err(format!(
                "{MAX_FAILED_CHAIN} replacements in a row never came up; not replacing again"
            ));
        }
        let live = live_placements(&edges);
        let failed = Placement {
            provider: self.edge.provider.clone(),
            region: self.edge.region.clone(),
        };
        let Some(placement) = place(self.state, &failed, &live) else {
            return Err("no configured provider can take a replacement".to_owned());
        };
        let (new, _) = register(
            self.state,
            NewEdge {
                name: None,
                origin_id: self.edge.origin_id.clone(),
                provider: placement.provider.clone(),
                region: placement.region.clone(),
                public_ip: None,
                size: None,
                ssh_key_id: None,
                replaces: Some(self.edge.id.clone()),
            },
            0,
        )
        .await
        .map_err(|e| e.message().to_owned())?;
        self.edge.lifecycle.replaced_by = Some(new.id.clone());
        self.changed = true;
        self.state
            .events()
            .emit(
                kinds::EDGE_REPLACEMENT,
                Severity::Info,
                Some(new.id.as_str()),
                format!(
                    "edge {} replaces {} at {} in {}",
                    new.name, self.edge.name, placement.provider, placement.region
                ),
                json!({"edge_node_id": new.id, "replaces": self.edge.id,
                       "provider": placement.provider, "region": placement.region,
                       "reason": self.edge.lifecycle.removal}),
            )
            .await;
        Ok(())
    }
}

/// Why an unhealthy edge is kept for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// So many edges look unhealthy at once that the health checks are suspect.
    ObserverSuspect,
    /// No other healthy edge serves one of its origins' host names.
    LastServing,
}

impl Hold {
    fn as_str(self) -> &'static str {
        match self {
            Self::ObserverSuspect => "observer_suspect",
            Self::LastServing => "last_serving",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::ObserverSuspect => {
                "so many edges look unhealthy at once that the health checks are suspect; \
                 nothing is destroyed until fewer do"
            }
            Self::LastServing => {
                "no other healthy edge serves some of its host names; it is destroyed once a \
                 replacement serves them"
            }
        }
    }
}

/// The step noted before a VPS is asked of the provider.
const CREATE_REQUESTED: &str = "create_requested";
/// The step noted while an unhealthy edge is kept rather than destroyed.
const DESTROY_HELD: &str = "destroy_held";

/// The key an edge's VPS is created under: the provider returns (or lists) the same VPS for
/// it, so a repeated request never makes a second one.
fn idempotency_key(edge: &EdgeNodeId) -> Result<IdempotencyKey, String> {
    let hex = edge.as_str().trim_start_matches("edg_");
    IdempotencyKey::parse(&format!("kokoa-{hex}")).map_err(|e| e.to_string())
}

/// The edge whose VPS carries `key`, if the key is one of ours.
fn edge_of_key(key: &IdempotencyKey) -> Option<EdgeNodeId> {
    let hex = key.as_str().strip_prefix("kokoa-")?;
    EdgeNodeId::parse(&format!("edg_{hex}")).ok()
}

/// Where the installation's tag is kept.
const INSTALLATION: (&str, &str) = ("settings", "installation-tag");

/// The tag every VPS of this installation carries (`kokoa-<16 hex digits>`), made once
/// and kept in the store: the sweep finds VPSes by it, never someone else's.
async fn installation_tag(state: &AppState) -> Result<Name, String> {
    let store = state.store();
    let now = Timestamp::now();
    let stored = store
        .kv_get(INSTALLATION.0, INSTALLATION.1, now)
        .await
        .map_err(|e| e.to_string())?;
    let tag = match stored {
        Some(tag) => tag,
        None => {
            let random = kokoa_core::ApiTokenId::new();
            let hex: String = random
                .as_str()
                .chars()
                .filter(char::is_ascii_hexdigit)
                .take(16)
                .collect();
            let candidate = format!("kokoa-{hex}");
            // Of two control planes making one at once, the first one written wins.
            let forever = now.plus_secs(100 * 365 * 86_400);
            let won = store
                .kv_claim(INSTALLATION.0, INSTALLATION.1, &candidate, now, forever)
                .await
                .map_err(|e| e.to_string())?;
            if won {
                candidate
            } else {
                store
                    .kv_get(INSTALLATION.0, INSTALLATION.1, now)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the installation tag vanished")?
            }
        }
    };
    Name::parse(&tag).map_err(|e| e.to_string())
}

/// Where the time of the last sweep is kept (it runs once a [`SWEEP_PERIOD`]).
const SWEEP: (&str, &str) = ("edge-sweep", "last");
/// How often the providers are swept for VPSes no edge owns.
const SWEEP_PERIOD: i64 = 60;

/// Finds VPSes carrying this installation's tag that no edge owns (a create whose answer
/// was lost and whose edge was given up, a crash before an id was written) and destroys
/// them: each holds an enrollment token and would receive certificates. A VPS whose edge
/// is still being created is left to that edge's step, which adopts it.
async fn sweep_orphans(state: &AppState) -> Result<(), kokoa_core::Error> {
    let store = state.store();
    let now = Timestamp::now();
    if store.kv_get(SWEEP.0, SWEEP.1, now).await?.is_some() {
        return Ok(());
    }
    store
        .kv_put(SWEEP.0, SWEEP.1, "", Some(now.plus_secs(SWEEP_PERIOD)))
        .await?;
    let tag = match installation_tag(state).await {
        Ok(tag) => tag,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the installation tag; no sweep");
            return Ok(());
        }
    };
    let edges = store.list_edges().await?;
    let owned: BTreeSet<&str> = edges
        .iter()
        .filter(|e| e.status != EdgeStatus::Deleted)
        .filter_map(|e| e.instance_id.as_deref())
        .collect();
    for (provider, entry) in &state.settings().edges.provisioners {
        let found = match entry.provisioner.list_instances(&tag).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(%provider, error = %e, "cannot list the provider's VPSes");
                continue;
            }
        };
        for instance in found {
            if owned.contains(instance.id.as_str()) || instance.status == InstanceStatus::Gone {
                continue;
            }
            let edge = instance
                .idempotency_key
                .as_ref()
                .and_then(edge_of_key)
                .and_then(|id| edges.iter().find(|e| e.id == id));
            if edge.is_some_and(|e| {
                e.lifecycle.phase == EdgePhase::CreateInstance && e.instance_id.is_none()
            }) {
                continue;
            }
            let subject = format!("{provider}:{}", instance.id);
            if let Err(e) = state
                .leader()
                .intend(state, "vps.destroy", &subject, json!({"orphan": true}))
                .await
            {
                tracing::warn!(error = %e, "orphan VPS left for the leader");
                return Ok(());
            }
            let result = entry.provisioner.destroy_instance(&instance.id).await;
            let (severity, message) = match &result {
                Ok(()) => (
                    Severity::Warning,
                    format!(
                        "VPS {} at {provider} carried this installation's tag but no edge owned \
                         it: destroyed",
                        instance.id
                    ),
                ),
                Err(e) => (
                    Severity::Critical,
                    format!(
                        "VPS {} at {provider} is owned by no edge and could not be destroyed \
                         ({e}): destroy it by hand",
                        instance.id
                    ),
                ),
            };
            state
                .events()
                .emit(
                    kinds::ORPHAN_VPS,
                    severity,
                    Some(&subject),
                    message,
                    json!({"provider": provider, "instance_id": instance.id.as_str(),
                           "edge_node_id": edge.map(|e| &e.id), "destroyed": result.is_ok()}),
                )
                .await;
        }
    }
    Ok(())
}

/// The origins an edge reports its tunnel up to.
fn tunnels_up(edge: &EdgeNode) -> BTreeSet<OriginId> {
    edge.last_metrics
        .as_ref()
        .and_then(|m| m.get("tunnels"))
        .and_then(|t| t.as_array())
        .into_iter()
        .flatten()
        .filter(|t| t.get("status").and_then(|s| s.as_str()) == Some("up"))
        .filter_map(|t| OriginId::parse(t.get("origin_id")?.as_str()?).ok())
        .collect()
}

/// How many edges in a row, following `replaces` back from `edge`, never came up.
fn failed_chain(edges: &[EdgeNode], edge: &EdgeNode) -> usize {
    let mut count = 0;
    let mut current = Some(edge);
    while let Some(e) = current {
        if e.lifecycle.removal != Some(RemovalReason::ProvisioningFailed) {
            break;
        }
        count += 1;
        current = e
            .lifecycle
            .replaces
            .as_ref()
            .and_then(|id| edges.iter().find(|x| &x.id == id));
    }
    count
}

/// Where the edges that are not on their way out run.
fn live_placements(edges: &[EdgeNode]) -> Vec<Placement> {
    edges
        .iter()
        .filter(|e| e.status != EdgeStatus::Deleted && e.lifecycle.removal.is_none())
        .map(|e| Placement {
            provider: e.provider.clone(),
            region: e.region.clone(),
        })
        .collect()
}

/// A placement among the configured providers, by the replacement strategy.
fn place(state: &AppState, failed: &Placement, live: &[Placement]) -> Option<Placement> {
    let settings = &state.settings().edges;
    let mut strategy = settings.management.replacement_strategy.clone();
    strategy
        .preferred_providers
        .retain(|p| settings.provisioners.contains_key(p.as_str()));
    if strategy.preferred_providers.is_empty() {
        // The configured providers, in name order, when the preferred list names none.
        strategy.preferred_providers = settings
            .provisioners
            .keys()
            .filter_map(|p| Name::parse(p).ok())
            .collect();
    }
    let chosen = choose_replacement(failed, live, &strategy);
    settings
        .provisioners
        .contains_key(chosen.provider.as_str())
        .then_some(chosen)
}

/// Creates edges while fewer than `min_active_nodes` are active or on their way, never
/// more than `max_nodes` in all.
async fn keep_minimum(state: &AppState) -> Result<(), kokoa_core::Error> {
    let settings = &state.settings().edges;
    if settings.provisioners.is_empty() {
        return Ok(());
    }
    let edges = state.store().list_edges().await?;
    let active = edges
        .iter()
        .filter(|e| e.status == EdgeStatus::Active && e.lifecycle.removal.is_none())
        .count();
    // On their way: being set up, and those the replacement rule will replace (an
    // unhealthy edge that will be destroyed, one being destroyed, one destroyed but not
    // replaced yet), so the two rules never create two edges for one loss.
    let management = &settings.management;
    let replaced_later =
        management.auto_destroy_unhealthy_vps && management.auto_replace_unhealthy_nodes;
    let coming = edges
        .iter()
        .filter(|e| {
            (e.status == EdgeStatus::Provisioning && e.lifecycle.removal.is_none())
                || (e.status == EdgeStatus::Unhealthy
                    && e.lifecycle.removal.is_none()
                    && replaced_later)
                || (e.lifecycle.removal.is_some() && wants_replacement(state, e))
        })
        .count();
    let existing = edges
        .iter()
        .filter(|e| e.status != EdgeStatus::Deleted)
        .count();
    let room = (settings.management.max_nodes as usize).saturating_sub(existing);
    let wanted = nodes_to_create(active, coming, &settings.management).min(room);
    for _ in 0..wanted {
        let live = live_placements(&state.store().list_edges().await?);
        let seed = live.first().cloned().or_else(|| {
            let provider = settings
                .management
                .replacement_strategy
                .preferred_providers
                .first()?
                .clone();
            Some(Placement {
                region: provider.clone(),
                provider,
            })
        });
        let Some(seed) = seed else { break };
        let Some(placement) = place(state, &seed, &live) else {
            break;
        };
        // An operation of the automation's own, from this event to the edge in DNS.
        let created = request_id::scope(None, async {
            request_id::begin();
            let (edge, _) = register(
                state,
                NewEdge {
                    name: None,
                    origin_id: None,
                    provider: placement.provider.clone(),
                    region: placement.region.clone(),
                    public_ip: None,
                    size: None,
                    ssh_key_id: None,
                    replaces: None,
                },
                0,
            )
            .await?;
            state
                .events()
                .emit(
                    kinds::EDGE_REPLACEMENT,
                    Severity::Info,
                    Some(edge.id.as_str()),
                    format!(
                        "edge {} created at {} in {}: fewer than {} edges were active",
                        edge.name,
                        placement.provider,
                        placement.region,
                        settings.management.min_active_nodes
                    ),
                    json!({"edge_node_id": edge.id, "provider": placement.provider,
                           "region": placement.region, "reason": "min_active_nodes"}),
                )
                .await;
            Ok::<_, ApiError>(())
        })
        .await;
        if let Err(e) = created {
            tracing::warn!(error = %e.message(), "cannot create an edge to keep min_active_nodes");
            break;
        }
    }
    Ok(())
}

/// Where a new VPS gets `kokoa-edge`: as configured (`[edge_agent]`), else from this control
/// plane's downloads, else the `kokoa-edge` package of the image's repositories.
fn edge_agent(state: &AppState, configured: Option<&AgentSource>) -> AgentSource {
    if let Some(agent) = configured {
        return agent.clone();
    }
    match state.download_of("kokoa-edge") {
        Some((url, sha256)) => AgentSource::Download { url, sha256 },
        None => AgentSource::Package {
            name: "kokoa-edge".into(),
        },
    }
}
