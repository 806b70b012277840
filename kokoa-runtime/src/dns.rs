//! The DNS manager (SPEC §8.1): for every routed host name in a managed zone, one A (or
//! AAAA) record per edge that serves it and is healthy, at the zone's provider.
//!
//! Zones, with their provider and sealed credentials, are kept in the store. Each
//! reconciliation reads the routes, the edges and the records the manager owns (the
//! `dns_records` table), lists the zone, plans with [`kokoa_dns::plan()`] and applies only
//! the difference, then records what it now owns.
//!
//! Nothing is left untracked: before a record is created, a row without a provider id
//! (the intent) is written for it; a record found at the provider with the name and value
//! of such a row is adopted, so a crash or a failed write between the provider's answer
//! and the row cannot leave a record that no round would ever remove. Every change is
//! recorded with the leader's fencing token first. A host name in no managed zone (or in a
//! zone whose provider is `manual`) is reported with the exact records a person must set.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use kokoa_core::{
    DnsRecord, DnsRecordId, DnsZone, EdgeNode, EdgeNodeId, EdgePhase, EdgeStatus, Hostname, Name,
    Route, Severity, Timestamp,
};
use kokoa_dns::{
    ApplyReport, Change, DesiredState, DnsProvider, EdgeState, EdgeTarget, Plan, ProviderConfig,
    RateLimiter, Reconciler, RecordId, Zone,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, watch};

use crate::{
    Module, Runtime,
    events::kinds,
    reports::{GUARDS, OBSERVER_SUSPECT, cut_off},
    seal::{self as keys, SealedJson},
    wait_or_stop,
};

/// How often every zone is reconciled when nothing asks for it sooner: it also repairs
/// records changed at the provider behind the manager's back.
const PERIOD: Duration = Duration::from_secs(60);
/// How soon a reconciliation that failed is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Why a zone's provider cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The zone's settings or credentials do not fit its provider.
    #[error("{0}")]
    Config(String),
    /// The provider answered with an error.
    #[error(transparent)]
    Provider(#[from] kokoa_dns::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] kokoa_core::Error),
}

/// The provider a zone names, built from its settings and credentials; `None` for
/// `manual`, which has no API.
pub fn build_provider(
    zone: &DnsZone,
    credentials: &Map<String, Value>,
) -> Result<Option<Arc<dyn DnsProvider>>, ZoneError> {
    let strings = |map: Option<&Map<String, Value>>| {
        map.into_iter()
            .flatten()
            .filter_map(|(key, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    Value::Number(_) | Value::Bool(_) => value.to_string(),
                    Value::Null | Value::Array(_) | Value::Object(_) => return None,
                };
                Some((key.clone(), text))
            })
            .collect()
    };
    let config = ProviderConfig {
        kind: zone.provider.as_str().to_owned(),
        settings: strings(zone.settings.as_object()),
        credentials: strings(Some(credentials)),
    };
    // Everything that fails before the provider is asked is the zone's settings' fault.
    config.build(&zone.name).map_err(|e| match e {
        kokoa_dns::Error::Other { .. } => ZoneError::Config(e.to_string()),
        e => ZoneError::Provider(e),
    })
}

/// The driver of `zone`'s records at its provider: paced by the provider's shared rate
/// limiter, retried; `None` for a manual zone.
pub async fn reconciler_of(
    runtime: &Runtime,
    zone: &DnsZone,
) -> Result<Option<Reconciler>, ZoneError> {
    Ok(open(runtime, zone).await?.map(|open| open.reconciler))
}

/// A managed zone, ready to reconcile.
struct OpenZone {
    zone: DnsZone,
    provider: Arc<dyn DnsProvider>,
    reconciler: Reconciler,
}

/// The provider and the provider's zone of `zone`; `None` for a manual zone. Looks the
/// zone up at the provider (and remembers its id) the first time.
async fn open(runtime: &Runtime, zone: &DnsZone) -> Result<Option<OpenZone>, ZoneError> {
    let Some((provider, provider_zone)) = provider_of(runtime, zone).await? else {
        return Ok(None);
    };
    let limiter = runtime.dns_limiter(zone.provider.as_str(), provider.rate_limit());
    let reconciler =
        Reconciler::new(Arc::clone(&provider), provider_zone).with_rate_limiter(limiter);
    Ok(Some(OpenZone {
        zone: zone.clone(),
        provider,
        reconciler,
    }))
}

/// The provider of `zone` and the provider's zone; `None` for a manual zone. Looks the
/// zone up at the provider (and remembers its id) the first time.
async fn provider_of(
    runtime: &Runtime,
    zone: &DnsZone,
) -> Result<Option<(Arc<dyn DnsProvider>, Zone)>, ZoneError> {
    let credentials = match runtime.store().dns_zone_credentials(&zone.id).await? {
        Some(sealed) => keys::open_json(runtime.master_key(), SealedJson::Zone(&zone.id), &sealed)?,
        None => Map::new(),
    };
    let Some(provider) = build_provider(zone, &credentials)? else {
        return Ok(None);
    };
    let metrics = runtime.clone();
    let name = zone.name.to_string();
    let provider: Arc<dyn DnsProvider> =
        Arc::new(kokoa_dns::Observed::new(provider, move |call| {
            metrics.duty_metrics().dns_call(&name, &call);
        }));
    let provider_zone = match &zone.provider_zone_id {
        Some(id) => Zone {
            id: id.clone(),
            name: zone.name.clone(),
        },
        None => {
            let found = provider.find_zone(&zone.name).await?;
            let mut updated = zone.clone();
            updated.provider_zone_id = Some(found.id.clone());
            runtime.store().update_dns_zone(&updated, None).await?;
            found
        }
    };
    Ok(Some((provider, provider_zone)))
}

/// Shares one rate limiter between the zones of one provider (its limit is per account).
#[derive(Debug, Default)]
pub(crate) struct Limiters(std::sync::Mutex<HashMap<String, RateLimiter>>);

impl Limiters {
    /// The limiter of `provider`, made on first use from its documented `limit`.
    pub(crate) fn get(
        &self,
        provider: &str,
        limit: Option<kokoa_dns::RateLimit>,
    ) -> Option<RateLimiter> {
        let limit = limit?;
        let mut all = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(
            all.entry(provider.to_owned())
                .or_insert_with(|| RateLimiter::new(limit))
                .clone(),
        )
    }
}

/// How the DNS manager sees an edge. While the health checks are suspect (`suspect`, see
/// the observer guard) an edge the judge took out is still published.
fn edge_state(edge: &EdgeNode, suspect: bool) -> EdgeState {
    match edge.status {
        // Withdrawn on purpose (deleted by hand, or about to be destroyed): its records go
        // even if they are a name's last.
        _ if matches!(
            edge.lifecycle.phase,
            EdgePhase::Draining | EdgePhase::Destroying | EdgePhase::Destroyed
        ) =>
        {
            EdgeState::Deleted
        }
        EdgeStatus::Active | EdgeStatus::Unhealthy if suspect => EdgeState::Serving,
        // Taken out by the health judge (a tunnel down, waiting for its checks).
        EdgeStatus::Active if edge.lifecycle.withdrawn_at.is_some() => EdgeState::Unhealthy,
        EdgeStatus::Active => EdgeState::Serving,
        EdgeStatus::Unhealthy => EdgeState::Unhealthy,
        EdgeStatus::Deleted => EdgeState::Deleted,
        _ => EdgeState::Provisioning,
    }
}

/// The zone of `hostname`: the managed zone with the longest apex containing it.
fn zone_of<'a>(zones: &'a [DnsZone], hostname: &Hostname) -> Option<&'a DnsZone> {
    zones
        .iter()
        .filter(|z| {
            Zone {
                id: String::new(),
                name: z.name.clone(),
            }
            .contains(hostname)
        })
        .max_by_key(|z| z.name.as_str().len())
}

/// Everything the desired state of the zones is made of, read once.
struct World {
    zones: Vec<DnsZone>,
    routes: Vec<Route>,
    edges: Vec<EdgeNode>,
    /// Which edges reach each origin (a tunnel exists).
    reach: HashMap<kokoa_core::OriginId, BTreeSet<EdgeNodeId>>,
    /// The edges whose tunnel to an origin is down while another edge's is up: out of DNS
    /// for that origin's host names only.
    cut_off: HashMap<kokoa_core::OriginId, BTreeSet<EdgeNodeId>>,
    records: Vec<DnsRecord>,
    /// Whether the health checks are suspect (too many edges unhealthy at once).
    suspect: bool,
}

impl World {
    async fn read(runtime: &Runtime) -> Result<Self, kokoa_core::Error> {
        let store = runtime.store();
        let tunnels = store.list_tunnels(None, None).await?;
        let edges = store.list_edges().await?;
        let cut_off = cut_off(
            &edges,
            &tunnels,
            runtime.settings().health.edge.heartbeat_timeout,
        );
        let mut reach: HashMap<_, BTreeSet<_>> = HashMap::new();
        for tunnel in tunnels {
            reach
                .entry(tunnel.origin_id)
                .or_default()
                .insert(tunnel.edge_node_id);
        }
        Ok(Self {
            zones: store.list_dns_zones().await?,
            routes: store.list_routes().await?,
            edges,
            reach,
            cut_off,
            records: store.list_dns_records(None).await?,
            suspect: store
                .kv_get(GUARDS, OBSERVER_SUSPECT, Timestamp::now())
                .await?
                .is_some(),
        })
    }

    /// The desired states of `zone`: one per set of edges that serve the same host names
    /// (edges created for one origin serve only its routes), and the names to retire.
    fn desired(&self, zone: &DnsZone) -> Vec<DesiredState> {
        type Group = (BTreeSet<EdgeNodeId>, BTreeSet<EdgeNodeId>);
        let mut groups: BTreeMap<Group, BTreeSet<Hostname>> = BTreeMap::new();
        let routed: BTreeSet<&Hostname> = self.routes.iter().map(|r| &r.hostname).collect();
        for route in &self.routes {
            if zone_of(&self.zones, &route.hostname).map(|z| &z.id) != Some(&zone.id) {
                continue;
            }
            let serving = self.serving(&route.origin_id);
            let cut = self
                .cut_off
                .get(&route.origin_id)
                .cloned()
                .unwrap_or_default();
            groups
                .entry((serving, cut))
                .or_default()
                .insert(route.hostname.clone());
        }
        let retired: BTreeSet<Hostname> = self
            .records
            .iter()
            .filter(|r| r.zone_id.as_ref() == Some(&zone.id) && !routed.contains(&r.hostname))
            .map(|r| r.hostname.clone())
            .collect();
        let mut states: Vec<DesiredState> = groups
            .into_iter()
            .map(|((serving, cut), hostnames)| DesiredState {
                hostnames,
                retired: BTreeSet::new(),
                edges: self
                    .edges
                    .iter()
                    .filter(|e| serving.contains(&e.id) || e.status == EdgeStatus::Deleted)
                    .map(|e| EdgeTarget {
                        state: if cut.contains(&e.id) {
                            EdgeState::Unhealthy
                        } else {
                            edge_state(e, self.suspect)
                        },
                        ..EdgeTarget::from(e)
                    })
                    .collect(),
                ttl: zone.ttl,
            })
            .collect();
        if !retired.is_empty() {
            states.push(DesiredState {
                hostnames: BTreeSet::new(),
                retired,
                edges: self.edges.iter().map(|e| self.target(e)).collect(),
                ttl: zone.ttl,
            });
        }
        states
    }

    /// The edges with a tunnel to `origin`.
    fn serving(&self, origin: &kokoa_core::OriginId) -> BTreeSet<EdgeNodeId> {
        self.reach.get(origin).cloned().unwrap_or_default()
    }

    /// The provider ids the manager owns in `zone`.
    fn owned(&self, zone: &DnsZone) -> BTreeSet<RecordId> {
        self.records
            .iter()
            .filter(|r| r.zone_id.as_ref() == Some(&zone.id))
            .filter_map(|r| r.provider_record_id.as_deref().map(RecordId::new))
            .collect()
    }

    /// Host names set by hand: those in no managed zone or in a manual one.
    fn manual(&self) -> Vec<ManualName> {
        let mut out = Vec::new();
        for route in &self.routes {
            let zone = zone_of(&self.zones, &route.hostname);
            if zone.is_some_and(|z| z.provider.as_str() != "manual") {
                continue;
            }
            let serving = self.serving(&route.origin_id);
            let desired = DesiredState {
                hostnames: [route.hostname.clone()].into(),
                retired: BTreeSet::new(),
                edges: self
                    .edges
                    .iter()
                    .filter(|e| serving.contains(&e.id))
                    .map(|e| self.target(e))
                    .collect(),
                ttl: zone.map_or(kokoa_dns::DEFAULT_TTL, |z| z.ttl),
            };
            out.push(ManualName {
                hostname: route.hostname.clone(),
                zone: zone.map(|z| z.name.clone()),
                records: kokoa_dns::manual::instructions(&desired)
                    .lines()
                    .map(str::to_owned)
                    .collect(),
            });
        }
        out
    }

    fn target(&self, edge: &EdgeNode) -> EdgeTarget {
        EdgeTarget {
            state: edge_state(edge, self.suspect),
            ..EdgeTarget::from(edge)
        }
    }
}

/// Merges the plans of one zone's parts, made from one listing.
fn merge(plans: Vec<Plan>) -> Plan {
    let mut merged = Plan::default();
    for p in plans {
        merged.creates.extend(p.creates);
        merged.deletes.extend(p.deletes);
        merged.updates.extend(p.updates);
        merged.owned.extend(p.owned);
    }
    merged
}

/// One planned or made change, for the API and the events.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeView {
    /// `create`, `update` or `delete`.
    pub action: &'static str,
    /// The record as a zone file line.
    pub record: String,
    /// Why, for deletes; the edge, for creates.
    pub reason: String,
}

impl From<&Change> for ChangeView {
    fn from(change: &Change) -> Self {
        match change {
            Change::Create(c) => Self {
                action: "create",
                record: c.spec.to_string(),
                reason: format!("edge {} serves", c.edge),
            },
            Change::Update(u) => Self {
                action: "update",
                record: u.spec.to_string(),
                reason: format!("TTL {} -> {}", u.current.spec.ttl, u.spec.ttl),
            },
            Change::Delete(d) => Self {
                action: "delete",
                record: d.record.spec.to_string(),
                reason: d.reason.to_string(),
            },
            _ => Self {
                action: "other",
                record: change.to_string(),
                reason: String::new(),
            },
        }
    }
}

/// What happened (or would happen) in one zone.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneOutcome {
    /// The zone's apex.
    pub zone: Hostname,
    /// The provider.
    pub provider: Name,
    /// The changes planned (a dry run) or made.
    pub changes: Vec<ChangeView>,
    /// Changes that failed, with the error.
    pub failed: Vec<String>,
    /// Why the zone could not be planned at all.
    pub error: Option<String>,
}

/// A host name whose records a person sets.
#[derive(Debug, Clone, Serialize)]
pub struct ManualName {
    /// The host name.
    pub hostname: Hostname,
    /// Its zone, when one is configured with the `manual` provider.
    pub zone: Option<Hostname>,
    /// The records to set, as zone file lines.
    pub records: Vec<String>,
}

/// The outcome of a reconciliation or a dry run over every zone.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Per managed zone.
    pub zones: Vec<ZoneOutcome>,
    /// Host names to set by hand.
    pub manual: Vec<ManualName>,
}

/// Serialises reconciliations: the loop, the API and the health checker's immediate
/// removals never apply two plans to one zone at once.
#[derive(Debug, Default)]
pub(crate) struct Gate(Mutex<()>);

/// Plans every zone and, unless `dry_run`, applies the plans and records what the manager
/// owns afterwards.
pub async fn reconcile(runtime: &Runtime, dry_run: bool) -> Result<Outcome, kokoa_core::Error> {
    let _turn = runtime.dns_gate().0.lock().await;
    let world = World::read(runtime).await?;
    let mut zones = Vec::new();
    let (mut managed, mut records, mut failures) = (0u64, 0u64, 0u64);
    for zone in world
        .zones
        .iter()
        .filter(|z| z.provider.as_str() != "manual")
    {
        managed += 1;
        let outcome = reconcile_zone(runtime, &world, zone, dry_run).await;
        failures += u64::from(outcome.error.is_some() || !outcome.failed.is_empty());
        zones.push(outcome);
    }
    if !dry_run {
        records = runtime
            .store()
            .list_dns_records(None)
            .await
            .map_or(0, |r| r.len() as u64);
    }
    let manual = world.manual();
    runtime.modules().report(Module::DnsManager, |s| {
        let mut providers: Vec<&str> = world.zones.iter().map(|z| z.provider.as_str()).collect();
        providers.sort_unstable();
        providers.dedup();
        s.provider = (!providers.is_empty()).then(|| providers.join(", "));
        if managed > 0 {
            s.connected = Some(failures == 0);
        }
        s.detail = zones
            .iter()
            .find_map(|z| z.error.clone().or_else(|| z.failed.first().cloned()));
        s.counts.insert("zones".into(), world.zones.len() as u64);
        s.counts
            .insert("manual_hostnames".into(), manual.len() as u64);
        if !dry_run {
            s.counts.insert("records".into(), records);
        }
    });
    Ok(Outcome { zones, manual })
}

async fn reconcile_zone(
    runtime: &Runtime,
    world: &World,
    zone: &DnsZone,
    dry_run: bool,
) -> ZoneOutcome {
    let mut outcome = ZoneOutcome {
        zone: zone.name.clone(),
        provider: zone.provider.clone(),
        changes: Vec::new(),
        failed: Vec::new(),
        error: None,
    };
    let open = match open(runtime, zone).await {
        Ok(Some(open)) => open,
        Ok(None) => return outcome,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    let current = match open.reconciler.records().await {
        Ok(current) => current,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return outcome;
        }
    };
    let mut owned = world.owned(zone);
    if let Err(e) = adopt(runtime, world, zone, &current, &mut owned, dry_run).await {
        outcome.error = Some(format!("cannot adopt records created earlier: {e}"));
        return outcome;
    }
    let plan = merge(
        world
            .desired(zone)
            .iter()
            .map(|d| kokoa_dns::plan(d, &current, &owned))
            .collect(),
    );
    if dry_run {
        outcome.changes = plan.changes().map(|c| ChangeView::from(&c)).collect();
        return outcome;
    }
    if plan.is_empty() && plan.owned == owned {
        return outcome;
    }
    if !plan.is_empty() {
        let changes: Vec<String> = plan.changes().map(|c| c.to_string()).collect();
        if let Err(e) = runtime
            .leader()
            .intend(
                runtime,
                "dns.apply",
                zone.name.as_str(),
                json!({ "changes": changes }),
            )
            .await
        {
            outcome.error = Some(e);
            return outcome;
        }
        if let Err(e) = note_creates(runtime, world, zone, &plan).await {
            outcome.error = Some(format!("cannot note the records to create: {e}"));
            return outcome;
        }
    }
    let report = open.reconciler.apply(plan).await;
    outcome.changes = made(&report);
    outcome.failed = report
        .failed
        .iter()
        .map(|(change, e)| format!("{change}: {e}"))
        .collect();
    if let Err(e) = record(runtime, world, &open, &report).await {
        outcome.error = Some(format!("the changes were made but not recorded: {e}"));
    }
    announce(runtime, &open, &report).await;
    outcome
}

/// The rows of `zone` noted before their record was created, whose provider id was never
/// written.
fn pending<'a>(rows: &'a [DnsRecord], zone: &DnsZone) -> impl Iterator<Item = &'a DnsRecord> {
    rows.iter()
        .filter(move |r| r.zone_id.as_ref() == Some(&zone.id) && r.provider_record_id.is_none())
}

/// Adopts the records at the provider that match a pending row by name and value: they
/// were created, but their id was never written. Unless `dry_run`, the rows get the ids.
async fn adopt(
    runtime: &Runtime,
    world: &World,
    zone: &DnsZone,
    current: &[kokoa_dns::ProviderRecord],
    owned: &mut BTreeSet<RecordId>,
    dry_run: bool,
) -> Result<(), kokoa_core::Error> {
    for row in pending(&world.records, zone) {
        let found = current.iter().find(|r| {
            !owned.contains(&r.id)
                && r.spec.data == row.data
                && r.spec.name.to_hostname().as_ref() == Some(&row.hostname)
        });
        let Some(found) = found else {
            continue;
        };
        owned.insert(found.id.clone());
        if !dry_run {
            tracing::info!(record = %found.spec, id = %found.id, "adopted a record created earlier");
            let store = runtime.store();
            store.delete_dns_record(&row.id).await?;
            store
                .add_dns_record(&DnsRecord {
                    id: DnsRecordId::new(),
                    provider_record_id: Some(found.id.as_str().to_owned()),
                    ..row.clone()
                })
                .await?;
        }
    }
    Ok(())
}

/// Writes a pending row for each record the plan creates (unless one is there already).
async fn note_creates(
    runtime: &Runtime,
    world: &World,
    zone: &DnsZone,
    plan: &Plan,
) -> Result<(), kokoa_core::Error> {
    let known: BTreeSet<&EdgeNodeId> = world.edges.iter().map(|e| &e.id).collect();
    let noted: Vec<&DnsRecord> = pending(&world.records, zone).collect();
    let now = Timestamp::now();
    for create in &plan.creates {
        let Some(hostname) = create.spec.name.to_hostname() else {
            continue;
        };
        if noted
            .iter()
            .any(|r| r.hostname == hostname && r.data == create.spec.data)
        {
            continue;
        }
        runtime
            .store()
            .add_dns_record(&DnsRecord {
                id: DnsRecordId::new(),
                hostname,
                data: create.spec.data.clone(),
                provider_record_id: None,
                provider: zone.provider.clone(),
                zone_id: Some(zone.id.clone()),
                edge_node_id: known.contains(&create.edge).then(|| create.edge.clone()),
                created_at: now,
            })
            .await?;
    }
    Ok(())
}

fn made(report: &ApplyReport) -> Vec<ChangeView> {
    let creates = report
        .created
        .iter()
        .map(|(_, c)| ChangeView::from(&Change::Create(c.clone())));
    let deletes = report
        .deleted
        .iter()
        .map(|d| ChangeView::from(&Change::Delete(d.clone())));
    let updates = report
        .updated
        .iter()
        .map(|(_, u)| ChangeView::from(&Change::Update(u.clone())));
    creates.chain(deletes).chain(updates).collect()
}

/// Brings the `dns_records` rows of the zone in line with what the manager owns now:
/// created records get their ids on their pending rows, pending rows of failed creates
/// stay (the next round adopts the record if it was made after all), other pending rows go.
async fn record(
    runtime: &Runtime,
    world: &World,
    open: &OpenZone,
    report: &ApplyReport,
) -> Result<(), kokoa_core::Error> {
    let store = runtime.store();
    let zone = &open.zone;
    // Read again: the pending rows of this round were written after `world` was read.
    let rows: Vec<DnsRecord> = store
        .list_dns_records(None)
        .await?
        .into_iter()
        .filter(|r| r.zone_id.as_ref() == Some(&zone.id))
        .collect();
    // Rows of records no longer owned (deleted, or gone at the provider), and rows whose
    // record changed id.
    let renamed: HashMap<&str, (&RecordId, &kokoa_dns::Update)> = report
        .updated
        .iter()
        .map(|(id, u)| (u.current.id.as_str(), (id, u)))
        .collect();
    let retry: Vec<(Hostname, &kokoa_core::RecordData)> = report
        .failed
        .iter()
        .filter_map(|(change, _)| match change {
            Change::Create(c) => Some((c.spec.name.to_hostname()?, &c.spec.data)),
            _ => None,
        })
        .collect();
    let now = Timestamp::now();
    let known: BTreeSet<&EdgeNodeId> = world.edges.iter().map(|e| &e.id).collect();
    let mut created: Vec<(&RecordId, &kokoa_dns::Create)> =
        report.created.iter().map(|(id, c)| (id, c)).collect();
    for row in &rows {
        let Some(id) = row.provider_record_id.as_deref() else {
            // A pending row: its record was created now, will be retried, or is not wanted.
            let made = created.iter().position(|(_, c)| {
                c.spec.data == row.data && c.spec.name.to_hostname().as_ref() == Some(&row.hostname)
            });
            if let Some(i) = made {
                let (id, _) = created.swap_remove(i);
                store.delete_dns_record(&row.id).await?;
                store
                    .add_dns_record(&DnsRecord {
                        id: DnsRecordId::new(),
                        provider_record_id: Some(id.as_str().to_owned()),
                        ..row.clone()
                    })
                    .await?;
            } else if !retry
                .iter()
                .any(|(h, d)| *h == row.hostname && **d == row.data)
            {
                store.delete_dns_record(&row.id).await?;
            }
            continue;
        };
        if let Some((new_id, _)) = renamed.get(id) {
            store.delete_dns_record(&row.id).await?;
            store
                .add_dns_record(&DnsRecord {
                    id: DnsRecordId::new(),
                    provider_record_id: Some(new_id.as_str().to_owned()),
                    ..row.clone()
                })
                .await?;
        } else if !report.owned.contains(&RecordId::new(id)) {
            store.delete_dns_record(&row.id).await?;
        }
    }
    // Created without a pending row (one noted by an older version, or a race): recorded.
    for (id, create) in created {
        // The reconciler creates address records at routed host names only.
        let Some(hostname) = create.spec.name.to_hostname() else {
            continue;
        };
        store
            .add_dns_record(&DnsRecord {
                id: DnsRecordId::new(),
                hostname,
                data: create.spec.data.clone(),
                provider_record_id: Some(id.as_str().to_owned()),
                provider: zone.provider.clone(),
                zone_id: Some(zone.id.clone()),
                edge_node_id: known.contains(&create.edge).then(|| create.edge.clone()),
                created_at: now,
            })
            .await?;
    }
    Ok(())
}

async fn announce(runtime: &Runtime, open: &OpenZone, report: &ApplyReport) {
    let events = runtime.events();
    let zone = open.zone.name.as_str();
    for (id, create) in &report.created {
        let line = create.spec.to_string();
        events
            .emit(
                kinds::DNS_RECORD_ADDED,
                Severity::Info,
                Some(create.spec.name.as_str()),
                format!("added {line} for edge {} in zone {zone}", create.edge),
                json!({
                    "hostname": create.spec.name, "type": create.spec.data.record_type(),
                    "value": create.spec.data.value(), "ttl": create.spec.ttl,
                    "edge_node_id": create.edge, "zone": zone, "record_id": id.as_str(),
                    "provider": open.provider.name(),
                }),
            )
            .await;
    }
    for delete in &report.deleted {
        let spec = &delete.record.spec;
        events
            .emit(
                kinds::DNS_RECORD_REMOVED,
                Severity::Info,
                Some(spec.name.as_str()),
                format!("removed {spec} from zone {zone}: {}", delete.reason),
                json!({
                    "hostname": spec.name, "type": spec.data.record_type(),
                    "value": spec.data.value(), "zone": zone,
                    "record_id": delete.record.id.as_str(), "reason": delete.reason.to_string(),
                    "provider": open.provider.name(),
                }),
            )
            .await;
    }
    for (id, update) in &report.updated {
        events
            .emit(
                kinds::DNS_RECORD_UPDATED,
                Severity::Info,
                Some(update.spec.name.as_str()),
                format!("set {} in zone {zone}", update.spec),
                json!({"hostname": update.spec.name, "zone": zone, "record_id": id.as_str(), "ttl": update.spec.ttl}),
            )
            .await;
    }
    for (change, error) in &report.failed {
        events
            .emit(
                kinds::DNS_RECONCILE_FAILED,
                Severity::Warning,
                Some(zone),
                format!("could not apply {change} in zone {zone}: {error}"),
                json!({"zone": zone, "change": change.to_string(), "error": error.to_string(), "retryable": error.is_retryable()}),
            )
            .await;
    }
}

/// The records a person must set: host names in no managed zone, or in a manual one.
pub async fn instructions(runtime: &Runtime) -> Result<Vec<ManualName>, kokoa_core::Error> {
    Ok(World::read(runtime).await?.manual())
}

/// Deletes at the provider every record the manager made in `zone`, and their rows; a
/// record already gone at the provider counts as deleted.
pub async fn remove_zone_records(runtime: &Runtime, zone: &DnsZone) -> Result<(), ZoneError> {
    let _turn = runtime.dns_gate().0.lock().await;
    let store = runtime.store();
    let rows: Vec<DnsRecord> = store
        .list_dns_records(None)
        .await?
        .into_iter()
        .filter(|r| r.zone_id.as_ref() == Some(&zone.id))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    runtime
        .leader()
        .intend(
            runtime,
            "dns.remove_zone",
            zone.name.as_str(),
            json!({ "records": rows.len() }),
        )
        .await
        .map_err(ZoneError::Config)?;
    let records = reconciler_of(runtime, zone).await?;
    for row in rows {
        if let (Some(records), Some(id)) = (&records, &row.provider_record_id) {
            records.delete_record(&RecordId::new(id.as_str())).await?;
        }
        store.delete_dns_record(&row.id).await?;
    }
    Ok(())
}

/// The address records in the managed zones that still hold `edge`'s address, read back
/// from each zone's provider (as zone file lines), owned or not. An error when nobody can
/// tell: a zone cannot be read, or the DNS manager is off (then nothing removes them
/// either). Host names set by hand (manual zones) are the person's to change.
pub async fn records_at(runtime: &Runtime, edge: &EdgeNode) -> Result<Vec<String>, String> {
    let Some(ip) = edge.public_ip else {
        return Ok(Vec::new());
    };
    let zones: Vec<DnsZone> = runtime
        .store()
        .list_dns_zones()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|z| z.provider.as_str() != "manual")
        .collect();
    if zones.is_empty() {
        return Ok(Vec::new());
    }
    if !runtime.modules().enabled(runtime, Module::DnsManager).await {
        return Err(
            "the DNS manager is off, so nothing removes its records or can tell they \
                    are gone (switch it on: kokoa module on dns_manager)"
                .to_owned(),
        );
    }
    let mut left = Vec::new();
    for zone in &zones {
        let failed = |e: &dyn std::fmt::Display| format!("zone {} cannot be read: {e}", zone.name);
        let Some(open) = open(runtime, zone).await.map_err(|e| failed(&e))? else {
            continue;
        };
        // One attempt, paced like every call: the edge automation asks again at its next
        // step, and must not stall on a provider that keeps failing.
        let once = kokoa_dns::RetryPolicy {
            attempts: 1,
            ..kokoa_dns::RetryPolicy::default()
        };
        let records = open
            .reconciler
            .with_retry(once)
            .records()
            .await
            .map_err(|e| failed(&e))?;
        left.extend(
            records
                .iter()
                .filter(|r| match &r.spec.data {
                    kokoa_core::RecordData::A(v4) => std::net::IpAddr::V4(*v4) == ip,
                    kokoa_core::RecordData::Aaaa(v6) => std::net::IpAddr::V6(*v6) == ip,
                    _ => false,
                })
                .map(|r| r.spec.to_string()),
        );
    }
    Ok(left)
}

/// Reconciles every zone when woken, and every minute anyway, on the leader while the
/// DNS manager is on.
pub async fn run(runtime: Runtime, mut stop: watch::Receiver<bool>) {
    loop {
        let mut failed = false;
        if runtime.leader().is_leader()
            && runtime
                .modules()
                .enabled(&runtime, Module::DnsManager)
                .await
        {
            let started = std::time::Instant::now();
            match reconcile(&runtime, false).await {
                Ok(outcome) => {
                    for zone in &outcome.zones {
                        if zone.error.is_some() {
                            tracing::warn!(zone = %zone.zone, error = ?zone.error, "DNS reconciliation failed");
                        }
                        let made: Vec<_> = zone.changes.iter().map(|c| c.action).collect();
                        let failures = zone.failed.len() + usize::from(zone.error.is_some());
                        runtime
                            .duty_metrics()
                            .dns_round(zone.zone.as_str(), &made, failures);
                    }
                    failed = outcome
                        .zones
                        .iter()
                        .any(|z| z.error.is_some() || !z.failed.is_empty());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "DNS reconciliation could not read the store");
                    failed = true;
                }
            }
            runtime
                .duty_metrics()
                .run("dns_manager", !failed, started.elapsed());
        }
        // A failed round is tried again soon: records of a withdrawn edge must go (and
        // its destroy waits for that) as soon as the provider answers again.
        let next = if failed { RETRY } else { PERIOD };
        if wait_or_stop(next, &runtime.wakers().dns, &mut stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn zone(provider: &str, settings: Value) -> DnsZone {
        DnsZone {
            id: kokoa_core::DnsZoneId::new(),
            name: Hostname::parse("hoge.com").unwrap(),
            provider: Name::parse(provider).unwrap(),
            provider_zone_id: None,
            settings,
            ttl: 30,
            created_at: Timestamp::now(),
        }
    }

    fn build(provider: &str, settings: Value, credentials: Value) -> Result<&'static str, String> {
        let credentials = credentials.as_object().cloned().unwrap_or_default();
        match build_provider(&zone(provider, settings), &credentials) {
            Ok(Some(p)) => Ok(p.name()),
            Ok(None) => Ok("none"),
            Err(ZoneError::Config(e)) => Err(format!("settings: {e}")),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn a_zone_provider_is_built_from_its_stored_settings() {
        assert_eq!(build("manual", json!({}), json!({})), Ok("none"));
        assert_eq!(
            build(
                "powerdns",
                json!({"url": "http://127.0.0.1:8081"}),
                json!({"api_key": "k"})
            ),
            Ok("powerdns")
        );
        // A number where an address is expected is named, never a secret's value.
        let err = build(
            "rfc2136",
            json!({"server": 53, "key_name": "k"}),
            json!({"secret": "c2VjcmV0"}),
        )
        .unwrap_err();
        assert!(
            err.starts_with("settings: ") && err.contains("\"server\""),
            "{err}"
        );
        let err = build("cloudflare", json!({}), json!({})).unwrap_err();
        assert!(err.contains("\"api_token\""), "{err}");
        let err = build("bind", json!({}), json!({})).unwrap_err();
        assert!(err.contains("\"bind\"") && err.contains("rfc2136"), "{err}");
    }
}
