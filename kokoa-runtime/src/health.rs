//! The health checker (SPEC §8.4): checks every edge, judges edges and origins with the
//! decision tables of kokoa-health, and acts on what changed.
//!
//! Two halves, so that several control planes can share the checks (SPEC §12):
//! - the **checker** runs on every control plane, each taking its share of the edges by
//!   consistent hashing over the live control planes ([`Ring`]); every result goes into
//!   the edge's history and, with the check's state, into the store;
//! - the **judge** runs on the leader: every second it reads the checks' states, the
//!   heartbeats and the verdicts it acted on last, and acts on what changed — out of DNS
//!   and `unhealthy` on three failed checks, back on three successful ones, 503 for the
//!   routes of an origin no edge reaches, alerts for CPU, error rate, disk and missing
//!   heartbeats. Verdicts are kept in the store, so a restart acts on nothing twice.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use kokoa_core::{
    CheckStatus, EdgeNode, EdgeNodeId, EdgePhase, EdgeStatus, HealthCheck, Origin, OriginId,
    Severity, Timestamp,
};
use kokoa_health::{
    CheckConfig, CheckReport, CheckSink, Checker, CpuTracker, Damped, DefaultExecutor, EdgeAction,
    EdgeCondition, EdgeObservation, EdgeVerdict, FlapDamper, HealthState, OriginAction,
    OriginCondition, OriginObservation, OriginRules, OriginVerdict, Ring, Scope, Target,
    TargetCheck, TunnelStatus, observed_since,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    INSTANCES, Module, Runtime,
    events::kinds,
    operation as request_id,
    reports::{GUARDS, OBSERVER_SUSPECT, Seen, system_time, tunnel_reports},
    sleep_or_stop, wait_or_stop,
};

/// Where each check's last state is kept: key `<edge id>/<check name>`.
const CHECK_STATES: &str = "health-checks";
/// Where the verdict last acted on is kept, per edge id.
const EDGE_VERDICTS: &str = "edge-verdicts";
/// Where the verdict last acted on is kept, per origin id.
pub const ORIGIN_VERDICTS: &str = "origin-verdicts";
/// Where each origin's recent configuration changes are kept (flap damping), per origin id.
const ORIGIN_FLAPS: &str = "origin-flaps";
/// How often the checker reads the edges again.
const TARGETS_PERIOD: Duration = Duration::from_secs(2);
/// How often the judge looks.
const JUDGE_PERIOD: Duration = Duration::from_secs(1);

/// The name of the check of an edge's own `/health`.
pub const HTTP_CHECK: &str = "http";

/// A check's state, as the checker leaves it in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckState {
    pub(crate) state: HealthState,
    pub(crate) failures: u32,
    pub(crate) error: Option<String>,
    pub(crate) at: Timestamp,
}

fn timestamp(t: SystemTime) -> Timestamp {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Timestamp::from_unix(i64::try_from(secs).unwrap_or(0)).unwrap_or_else(|_| Timestamp::now())
}

/// A URL host part: IPv6 addresses go in brackets.
fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Whether the checker looks at `edge`: it has an address and is between enrollment and
/// removal.
fn checked(edge: &EdgeNode) -> bool {
    edge.public_ip.is_some()
        && edge.status != EdgeStatus::Deleted
        && matches!(
            edge.lifecycle.phase,
            EdgePhase::Booting | EdgePhase::Enrolled | EdgePhase::Verifying | EdgePhase::Serving
        )
        && edge.last_heartbeat.is_some()
}

/// The checks of every edge this control plane checks.
async fn targets(state: &Runtime, ring: &Ring) -> Result<Vec<Target>, kokoa_core::Error> {
    let settings = state.settings();
    let health = &settings.health;
    let management = &settings.edges.management;
    let store = state.store();
    let now = Timestamp::now();
    let stored: HashMap<String, CheckState> =
        parsed(CHECK_STATES, store.kv_list(CHECK_STATES, now).await?, |k| {
            Some(k.to_owned())
        });
    let routes = store.list_routes().await?;
    // The services of the origins checked end to end, read once each.
    let mut services: HashMap<OriginId, Vec<kokoa_core::OriginService>> = HashMap::new();
    let tunnels = store.list_tunnels(None, None).await?;
    let certificates = store.list_certificates().await?;
    let instance = state.leader().instance();
    let mut out = Vec::new();
    for edge in store.list_edges().await? {
        let (Some(ip), true) = (edge.public_ip, checked(&edge)) else {
            continue;
        };
        if !ring.owns(instance, edge.id.as_str()) {
            continue;
        }
        let initial = |name: &str| {
            stored
                .get(&format!("{}/{name}", edge.id))
                .map_or(HealthState::Unknown, |s| s.state)
        };
        let mut http = CheckConfig::https(match health.edge_https_port {
            443 => format!("https://{}/health", url_host(ip)),
            port => format!("https://{}:{port}/health", url_host(ip)),
        });
        // By address the edge presents its self-signed fallback certificate.
        http.verify_certificate = false;
        http.interval = Duration::from_secs(management.health_check_interval.max(1));
        http.timeout = health.timeout.min(http.interval);
        http.retries = 0;
        http.threshold = management.health_check_failure_threshold.max(1);
        http.recovery_threshold = health.recovery_threshold.max(1);
        let mut checks = vec![TargetCheck::new(HTTP_CHECK, http).starting(initial(HTTP_CHECK))];
        // One end-to-end check per origin the edge reaches, on one of its host names, and
        // one certificate check per certificate the edge serves.
        let reached: BTreeSet<&OriginId> = tunnels
            .iter()
            .filter(|t| t.edge_node_id == edge.id)
            .map(|t| &t.origin_id)
            .collect();
        for origin in reached {
            let Some(route) = routes.iter().find(|r| &r.origin_id == origin) else {
                continue;
            };
            let hostname = &route.hostname;
            if hostname.is_wildcard() {
                continue;
            }
            let certified = certificates.iter().any(|c| c.serves(hostname));
            if !services.contains_key(origin) {
                services.insert(origin.clone(), store.origin_services(origin).await?);
            }
            let mut e2e = end_to_end(hostname, &services[origin], route.target_port);
            e2e.address = Some(ip);
            e2e.verify_certificate = certified;
            e2e.interval = health.end_to_end_interval;
            e2e.timeout = health.timeout.min(e2e.interval);
            let name = format!("end_to_end:{hostname}");
            checks.push(TargetCheck::new(name.clone(), e2e).starting(initial(&name)));
        }
        for certificate in certificates.iter().filter(|c| c.chain_pem.is_some()) {
            let Some(hostname) = certificate
                .names
                .iter()
                .find(|n| !n.is_wildcard() && routes.iter().any(|r| &r.hostname == *n))
            else {
                continue;
            };
            let mut tls = CheckConfig::tls_certificate(hostname.to_string());
            tls.address = Some(ip);
            tls.interval = health.certificate_interval;
            tls.timeout = health.timeout.min(tls.interval);
            tls.min_days_left = health.certificate_min_days;
            let name = format!("certificate:{hostname}");
            checks.push(TargetCheck::new(name.clone(), tls).starting(initial(&name)));
        }
        out.push(Target::new(edge.id.as_str(), checks));
    }
    Ok(out)
}

/// The end-to-end check of `hostname`, served by the service on `port` of `services`: its
/// health path, expecting 200; without one, `/health` and any answer short of a server
/// error: the application answered, through edge, tunnel and origin.
fn end_to_end(
    hostname: &kokoa_core::Hostname,
    services: &[kokoa_core::OriginService],
    port: kokoa_core::Port,
) -> CheckConfig {
    let path = services
        .iter()
        .find(|s| s.port == port)
        .and_then(|s| s.health_check_path.as_ref());
    let mut check = CheckConfig::end_to_end(format!(
        "https://{hostname}{}",
        path.map_or("/health", |p| p.as_str())
    ));
    if path.is_none() {
        check.any_status_below = Some(500);
    }
    check
}

/// Writes every result into the edge's history and the check's state into the store.
struct Recorder {
    state: Runtime,
}

#[async_trait]
impl CheckSink for Recorder {
    async fn record(&self, report: CheckReport) {
        let Ok(edge) = EdgeNodeId::parse(&report.target) else {
            return;
        };
        let at = timestamp(report.at);
        let check = HealthCheck {
            edge_node_id: edge,
            check: report.check.clone(),
            status: match report.outcome.status {
                kokoa_health::CheckStatus::Success => CheckStatus::Success,
                _ => CheckStatus::Failure,
            },
            response_time_ms: u32::try_from(report.outcome.response_time_ms).ok(),
            error_message: report.outcome.error.clone(),
            checked_at: at,
        };
        let failures = (report.check == HTTP_CHECK).then_some(report.consecutive_failures);
        let store = self.state.store();
        if let Err(e) = store.record_health_check(&check, failures).await {
            // The edge may have been deleted meanwhile.
            tracing::debug!(edge = %report.target, error = %e, "check result not recorded");
            return;
        }
        let saved = CheckState {
            state: report.state,
            failures: report.consecutive_failures,
            error: report.outcome.error.clone(),
            at,
        };
        if let Ok(text) = serde_json::to_string(&saved) {
            let key = format!("{}/{}", report.target, report.check);
            if let Err(e) = store.kv_put(CHECK_STATES, &key, &text, None).await {
                tracing::warn!(error = %e, "cannot record a check's state");
            }
        }
        if report.transition.is_some() {
            self.state.wakers().health.notify_one();
        }
    }
}

/// The executor of every check: the system's roots and the configured extra ones.
fn executor(state: &Runtime) -> DefaultExecutor {
    let executor = DefaultExecutor::new();
    let Some(path) = &state.settings().health.trusted_ca_file else {
        return executor;
    };
    match std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|pem| {
            executor
                .clone()
                .with_root_pem(&pem)
                .map_err(|e| e.to_string())
        }) {
        Ok(with_roots) => with_roots,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot trust the health checks' CA file");
            executor
        }
    }
}

/// Runs this control plane's share of the checks while the health checker is on.
pub async fn run_checker(state: Runtime, mut stop: watch::Receiver<bool>) {
    let (targets_tx, targets_rx) = watch::channel(Vec::new());
    let workers =
        NonZeroUsize::new(state.settings().health.workers).unwrap_or(Checker::DEFAULT_WORKERS);
    let checker = Checker::new(
        Arc::new(executor(&state)),
        Arc::new(Recorder {
            state: state.clone(),
        }),
    )
    .with_workers(workers);
    let mut stop_checker = stop.clone();
    let checking = tokio::spawn(async move {
        checker
            .run(targets_rx, async move {
                let _ = stop_checker.wait_for(|s| *s).await;
            })
            .await;
    });
    loop {
        let list = if state.modules().enabled(&state, Module::HealthChecker).await {
            let ring = live_ring(&state).await;
            match targets(&state, &ring).await {
                Ok(list) => Some(list),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the edges to check");
                    None
                }
            }
        } else {
            Some(Vec::new())
        };
        if let Some(list) = list {
            let running: u64 = list.iter().map(|t| t.checks.len() as u64).sum();
            state.modules().report(Module::HealthChecker, |s| {
                s.counts.insert("running_checks".into(), running);
                s.counts
                    .insert("edges_checked_here".into(), list.len() as u64);
            });
            targets_tx.send_if_modified(|current| {
                let changed = *current != list;
                if changed {
                    *current = list;
                }
                changed
            });
        }
        if sleep_or_stop(TARGETS_PERIOD, &mut stop).await {
            break;
        }
    }
    let _ = checking.await;
}

/// The ring over the control planes alive now (this one at least).
async fn live_ring(state: &Runtime) -> Ring {
    let me = state.leader().instance().to_owned();
    let mut live: Vec<String> = state
        .store()
        .kv_list(INSTANCES, Timestamp::now())
        .await
        .map(|all| all.into_iter().map(|(k, _)| k).collect())
        .unwrap_or_default();
    if !live.contains(&me) {
        live.push(me);
    }
    Ring::new(live)
}

/// What the judge keeps between rounds (CPU windows need every heartbeat's figure).
#[derive(Debug, Default)]
pub struct JudgeMemory {
    cpu: Mutex<HashMap<String, (Option<Timestamp>, CpuTracker)>>,
}

/// A number from an edge's or origin's heartbeat metrics.
fn metric(metrics: Option<&Value>, path: &[&str]) -> Option<f64> {
    let mut value = metrics?;
    for key in path {
        value = value.get(key)?;
    }
    value.as_f64()
}

/// Whether the edge's tunnels are at fault as a whole: every tunnel it reports is down,
/// while another edge reaches one of those origins. (One tunnel down among others takes
/// the edge out of DNS for that origin's host names only, see [`cut_off`]; every edge's
/// tunnel to an origin down is the origin's fault: 503.)
fn edge_tunnel(edge: &EdgeNode, reports: &HashMap<OriginId, Vec<Seen>>) -> TunnelStatus {
    let mine: Vec<(&OriginId, TunnelStatus)> = reports
        .iter()
        .filter_map(|(origin, seen)| {
            seen.iter()
                .find(|s| s.edge == edge.id)
                .map(|s| (origin, s.tunnel))
        })
        .collect();
    let all_down = !mine.is_empty() && mine.iter().all(|(_, s)| *s == TunnelStatus::Down);
    let others_up = mine.iter().any(|(origin, _)| {
        reports[*origin]
            .iter()
            .any(|s| s.edge != edge.id && s.tunnel == TunnelStatus::Up)
    });
    if all_down && others_up {
        TunnelStatus::Down
    } else {
        TunnelStatus::Up
    }
}

/// The verdict to compare the first one with, for an edge never judged (or judged by a
/// control plane that kept no record): what its status says.
fn assumed(edge: &EdgeNode) -> EdgeVerdict {
    match edge.status {
        EdgeStatus::Active => EdgeVerdict {
            conditions: BTreeSet::new(),
        },
        EdgeStatus::Unhealthy => EdgeVerdict {
            conditions: BTreeSet::from([EdgeCondition::HttpCheckFailing]),
        },
        _ => EdgeVerdict::pending(),
    }
}

/// Judges every edge and origin once and acts on what changed.
///
/// Two guards keep the judge from causing an outage itself: a heartbeat counts as missing
/// only from when this control plane could have heard it (it leads since), and when more
/// edges look unhealthy at once than the observer guard allows, the checks are the likelier
/// fault — the verdicts stand (the pages show them), but the DNS manager keeps publishing
/// those edges, nothing is destroyed, and an alert says so.
pub async fn judge(state: &Runtime, memory: &JudgeMemory) -> Result<(), kokoa_core::Error> {
    let store = state.store();
    let now_ts = Timestamp::now();
    let now = system_time(now_ts);
    let observing_since = state.leader().leading_since().map_or(now, system_time);
    let settings = &state.settings().health;
    let rules = settings.edge;
    let checks: HashMap<String, CheckState> = parsed(
        CHECK_STATES,
        store.kv_list(CHECK_STATES, now_ts).await?,
        |k| Some(k.to_owned()),
    );
    let verdicts: HashMap<String, EdgeVerdict> = parsed(
        EDGE_VERDICTS,
        store.kv_list(EDGE_VERDICTS, now_ts).await?,
        |k| Some(k.to_owned()),
    );
    let edges = store.list_edges().await?;
    let tunnels = store.list_tunnels(None, None).await?;
    let reports = tunnel_reports(&edges, &tunnels, now, rules.heartbeat_timeout);
    // An edge still being set up is checked (its streak builds meanwhile) but judged only
    // from `verifying` on: the edge automation decides when it may go into DNS.
    let judged_now = |e: &&EdgeNode| {
        checked(e) && !matches!(e.lifecycle.phase, EdgePhase::Booting | EdgePhase::Enrolled)
    };
    let mut judged = Vec::new();
    for edge in edges.iter().filter(judged_now) {
        let http = checks.get(&format!("{}/{HTTP_CHECK}", edge.id));
        let cpu_overloaded = {
            let mut cpu = memory.cpu.lock().unwrap_or_else(PoisonError::into_inner);
            let (seen, tracker) = cpu
                .entry(edge.id.to_string())
                .or_insert_with(|| (None, CpuTracker::new(rules.cpu)));
            if *seen != edge.last_heartbeat
                && let (Some(at), Some(percent)) = (
                    edge.last_heartbeat,
                    metric(edge.last_metrics.as_ref(), &["cpu_percent"]),
                )
            {
                tracker.record(system_time(at), percent);
                *seen = edge.last_heartbeat;
            }
            tracker.is_overloaded()
        };
        let observation = EdgeObservation {
            at: now,
            last_heartbeat: observed_since(edge.last_heartbeat.map(system_time), observing_since),
            http: http.map_or(HealthState::Unknown, |c| c.state),
            tunnel: edge_tunnel(edge, &reports),
            cpu_overloaded,
            error_rate_percent: metric(edge.last_metrics.as_ref(), &["error_rate"]).unwrap_or(0.0),
        };
        let verdict = EdgeVerdict::judge(&observation, &rules);
        let previous = verdicts
            .get(edge.id.as_str())
            .cloned()
            .unwrap_or_else(|| assumed(edge));
        judged.push((edge, http, verdict, previous));
    }
    let unhealthy = judged
        .iter()
        .filter(|(_, _, v, _)| v.health() == HealthState::Unhealthy)
        .count();
    let suspect = settings.observer.suspects(unhealthy, judged.len());
    guard_observer(state, suspect, unhealthy, judged.len()).await?;
    let mut dns_changed = false;
    for (edge, http, verdict, previous) in &judged {
        let actions = verdict.actions_since(previous);
        if actions.is_empty() && verdicts.contains_key(edge.id.as_str()) {
            continue;
        }
        dns_changed |= act(state, edge, verdict, &actions, *http).await?;
        let text =
            serde_json::to_string(verdict).map_err(|e| kokoa_core::Error::Storage(Box::new(e)))?;
        store
            .kv_put(EDGE_VERDICTS, edge.id.as_str(), &text, None)
            .await?;
    }
    state.modules().report(Module::HealthChecker, |s| {
        s.counts.insert("edges_judged".into(), judged.len() as u64);
        s.counts.insert("edges_unhealthy".into(), unhealthy as u64);
        s.connected = Some(true);
        s.detail = suspect.then(|| {
            format!(
                "{unhealthy} of {} edges look unhealthy at once: the checks are suspect, \
                 DNS is kept and nothing is destroyed",
                judged.len()
            )
        });
    });
    let served_changed = judge_origins(state, &reports, now, observing_since).await?;
    if dns_changed {
        state.wakers().dns.notify_one();
        state.wakers().edges.notify_one();
    }
    if dns_changed || served_changed {
        state.notify_changed();
    }
    Ok(())
}

/// Notes whether the observer is suspect (the edge automation reads it before destroying
/// anything), with an event when that changes.
async fn guard_observer(
    state: &Runtime,
    suspect: bool,
    unhealthy: usize,
    judged: usize,
) -> Result<(), kokoa_core::Error> {
    let store = state.store();
    let now = Timestamp::now();
    let was = store.kv_get(GUARDS, OBSERVER_SUSPECT, now).await?.is_some();
    if suspect {
        // Kept fresh while it holds; it lapses on its own if this leader stops judging.
        store
            .kv_put(
                GUARDS,
                OBSERVER_SUSPECT,
                &unhealthy.to_string(),
                Some(now.plus_secs(30)),
            )
            .await?;
    } else if was {
        store.kv_delete(GUARDS, OBSERVER_SUSPECT).await?;
    }
    if suspect != was {
        // The DNS manager publishes the judged edges while the guard holds.
        state.wakers().dns.notify_one();
        let instance = state.leader().instance();
        let (severity, message) = if suspect {
            (
                Severity::Critical,
                format!(
                    "{unhealthy} of {judged} edges look unhealthy at once: the health checks \
                     (this control plane's network, resolver or clock) are suspect; they stay \
                     in DNS and none is destroyed until fewer look unhealthy"
                ),
            )
        } else {
            (
                Severity::Info,
                format!(
                    "{unhealthy} of {judged} edges look unhealthy: the health checks are trusted again"
                ),
            )
        };
        state
            .events()
            .emit(
                kinds::OBSERVER_SUSPECT,
                severity,
                Some(instance),
                message,
                json!({"raised": suspect, "unhealthy": unhealthy, "judged": judged,
                       "max_unhealthy_percent": state.settings().health.observer.max_unhealthy_percent}),
            )
            .await;
    }
    Ok(())
}

/// Acts on one edge's actions; returns whether its place in DNS changed.
async fn act(
    state: &Runtime,
    edge: &EdgeNode,
    verdict: &EdgeVerdict,
    actions: &[EdgeAction],
    http: Option<&CheckState>,
) -> Result<bool, kokoa_core::Error> {
    let store = state.store();
    let events = state.events();
    let now = Timestamp::now();
    // One writer of edges at a time in this process (the edge automation takes this too),
    // and a fresh read under it.
    let _writing = state.edge_writes().lock().await;
    let mut edge = store.get_edge(&edge.id).await?;
    if edge.status == EdgeStatus::Deleted {
        return Ok(false);
    }
    let subject = edge.id.to_string();
    let mut dns = false;
    for action in actions {
        match action {
            EdgeAction::RemoveFromDns => {
                edge.lifecycle.withdrawn_at = Some(now);
                dns = true;
                let why: Vec<String> = verdict
                    .conditions
                    .iter()
                    .filter(|c| c.removes_from_dns())
                    .map(|c| format!("{c:?}"))
                    .collect();
                tracing::warn!(edge = %edge.id, conditions = ?why, "edge out of DNS");
            }
            EdgeAction::AddToDns => {
                edge.lifecycle.withdrawn_at = None;
                dns = true;
                if edge.status == EdgeStatus::Provisioning {
                    edge.set_status(EdgeStatus::Active, now)?;
                    edge.lifecycle.enter(EdgePhase::Serving, now);
                    edge.lifecycle.steps.insert("checks_passed".into(), now);
                    state.duty_metrics().edge_step(
                        edge.provider.as_str(),
                        "checks_passed",
                        now.seconds_since(edge.created_at),
                    );
                    // The last step of the edge's setup, for the request that asked for it.
                    let ready = events.emit(
                        kinds::EDGE_READY,
                        Severity::Info,
                        Some(&subject),
                        format!("edge {} passed its checks and goes into DNS", edge.name),
                        json!({
                            "edge_node_id": edge.id, "public_ip": edge.public_ip,
                            "provider": edge.provider, "region": edge.region,
                            "seconds_since_created": now.seconds_since(edge.created_at),
                        }),
                    );
                    request_id::scope(edge.lifecycle.request_id.clone(), ready).await;
                }
            }
            EdgeAction::MarkUnhealthy => {
                let was = edge.status;
                edge.set_status(EdgeStatus::Unhealthy, now)?;
                let (failures, error) = http.map_or((0, None), |c| (c.failures, c.error.clone()));
                events
                    .emit(
                        kinds::EDGE_UNHEALTHY,
                        Severity::Warning,
                        Some(&subject),
                        format!(
                            "edge {} is unhealthy ({}) and leaves DNS",
                            edge.name,
                            error.as_deref().unwrap_or("no heartbeat")
                        ),
                        json!({
                            "edge_node_id": edge.id, "failure_count": failures,
                            "last_error": error, "was": was,
                            "conditions": verdict.conditions,
                        }),
                    )
                    .await;
            }
            EdgeAction::MarkHealthy if edge.status == EdgeStatus::Unhealthy => {
                edge.set_status(EdgeStatus::Active, now)?;
                events
                    .emit(
                        kinds::EDGE_RECOVERED,
                        Severity::Info,
                        Some(&subject),
                        format!("edge {} is healthy again", edge.name),
                        json!({"edge_node_id": edge.id}),
                    )
                    .await;
            }
            EdgeAction::Alert {
                condition,
                severity,
            } => {
                events
                    .emit(
                        kinds::EDGE_ALERT,
                        severity_of(*severity),
                        Some(&subject),
                        format!("edge {}: {}", edge.name, describe_edge(*condition)),
                        json!({"edge_node_id": edge.id, "condition": condition, "raised": true,
                               "metrics": edge.last_metrics}),
                    )
                    .await;
            }
            EdgeAction::ResolveAlert(condition) => {
                events
                    .emit(
                        kinds::EDGE_ALERT,
                        Severity::Info,
                        Some(&subject),
                        format!(
                            "edge {}: no longer {}",
                            edge.name,
                            describe_edge(*condition)
                        ),
                        json!({"edge_node_id": edge.id, "condition": condition, "raised": false}),
                    )
                    .await;
            }
            _ => {}
        }
    }
    store.update_edge(&edge).await?;
    Ok(dns)
}

fn describe_edge(condition: EdgeCondition) -> &'static str {
    match condition {
        EdgeCondition::CpuOverloaded => "CPU above the limit for the whole window",
        EdgeCondition::HighErrorRate => "error rate above the limit",
        EdgeCondition::TunnelDown => "a tunnel is down",
        EdgeCondition::HeartbeatMissing => "no heartbeat",
        EdgeCondition::HttpCheckFailing => "its health check fails",
        _ => "waiting for its checks",
    }
}

/// The stored origin verdicts: what edges serve as unavailable.
pub async fn origin_verdicts(
    state: &Runtime,
) -> Result<HashMap<OriginId, OriginVerdict>, kokoa_core::Error> {
    let stored = state
        .store()
        .kv_list(ORIGIN_VERDICTS, Timestamp::now())
        .await?;
    Ok(parsed(ORIGIN_VERDICTS, stored, |k| OriginId::parse(k).ok()))
}

/// The entries of `namespace` whose key and value parse. One that does not (damaged, or
/// written by another version) is left out, which counts as no record for it, and said in
/// the log with its key, so the judge's view never loses a record in silence.
fn parsed<K: std::hash::Hash + Eq, T: serde::de::DeserializeOwned>(
    namespace: &str,
    entries: Vec<(String, String)>,
    key: impl Fn(&str) -> Option<K>,
) -> HashMap<K, T> {
    entries
        .into_iter()
        .filter_map(|(k, v)| {
            let parsed = key(&k).ok_or_else(|| "not a valid key".to_owned()).and_then(|key| {
                serde_json::from_str(&v)
                    .map(|value| (key, value))
                    .map_err(|e| e.to_string())
            });
            parsed
                .map_err(|error| {
                    tracing::warn!(namespace, key = %k, %error, "ignoring an unreadable health record");
                })
                .ok()
        })
        .collect()
}

/// Judges each origin; returns whether what edges must serve as unavailable changed. An
/// origin whose state keeps flipping changes it at most as often as the damping allows: in
/// between, edges keep serving its routes as they last did.
async fn judge_origins(
    state: &Runtime,
    reports: &HashMap<OriginId, Vec<Seen>>,
    now: SystemTime,
    observing_since: SystemTime,
) -> Result<bool, kokoa_core::Error> {
    let settings = &state.settings().health;
    let rules = OriginRules {
        heartbeat_timeout: settings.origin_heartbeat_timeout,
        disk_percent: settings.origin_disk_percent,
    };
    let store = state.store();
    let now_ts = timestamp(now);
    let previous = origin_verdicts(state).await?;
    let mut changed = false;
    for origin in store.list_origins().await? {
        let observation = observe_origin(&origin, reports.get(&origin.id), now, observing_since);
        let verdict = OriginVerdict::judge(&observation, &rules);
        let before = previous.get(&origin.id).cloned().unwrap_or_default();
        let actions = verdict.actions_since(&before);
        if actions.is_empty() {
            continue;
        }
        let serves_otherwise = actions.iter().any(|a| {
            matches!(
                a,
                OriginAction::ServeUnavailable(_) | OriginAction::ServeNormally(_)
            )
        });
        if serves_otherwise && !damped(state, &origin, now_ts, &verdict).await? {
            continue;
        }
        for action in &actions {
            announce_origin(state, &origin, action).await;
        }
        changed |= serves_otherwise;
        let text =
            serde_json::to_string(&verdict).map_err(|e| kokoa_core::Error::Storage(Box::new(e)))?;
        store
            .kv_put(ORIGIN_VERDICTS, origin.id.as_str(), &text, None)
            .await?;
    }
    Ok(changed)
}

/// Offers a change of what edges serve for `origin` to its flap damper; returns whether it
/// may happen now. The first change held back is an event.
async fn damped(
    state: &Runtime,
    origin: &Origin,
    now: Timestamp,
    verdict: &OriginVerdict,
) -> Result<bool, kokoa_core::Error> {
    let store = state.store();
    let damping = state.settings().health.damping;
    let mut damper: FlapDamper = store
        .kv_get(ORIGIN_FLAPS, origin.id.as_str(), now)
        .await?
        .and_then(|text| {
            serde_json::from_str(&text)
                .map_err(|error| {
                    tracing::warn!(origin = %origin.id, %error, "ignoring an unreadable flap record; starting a new one");
                })
                .ok()
        })
        .unwrap_or_default();
    let decision = damper.offer(system_time(now), &damping);
    let text =
        serde_json::to_string(&damper).map_err(|e| kokoa_core::Error::Storage(Box::new(e)))?;
    // Kept a little past the window: older changes no longer count anyway.
    let keep = i64::try_from(damping.window.as_secs()).unwrap_or(i64::MAX / 2) * 2;
    store
        .kv_put(
            ORIGIN_FLAPS,
            origin.id.as_str(),
            &text,
            Some(now.plus_secs(keep)),
        )
        .await?;
    if decision == Damped::HeldFirst {
        state
            .events()
            .emit(
                kinds::ORIGIN_FLAPPING,
                Severity::Warning,
                Some(origin.id.as_str()),
                format!(
                    "origin {} changed state {} times within {} s: edges keep serving its \
                     routes as they do until it settles",
                    origin.name,
                    damping.max_changes,
                    damping.window.as_secs()
                ),
                json!({"origin_id": origin.id, "max_changes": damping.max_changes,
                       "window_seconds": damping.window.as_secs(),
                       "held": verdict.unavailable()}),
            )
            .await;
    }
    Ok(decision == Damped::Allowed)
}

fn observe_origin(
    origin: &Origin,
    tunnels: Option<&Vec<Seen>>,
    now: SystemTime,
    observing_since: SystemTime,
) -> OriginObservation {
    let seen = tunnels.map_or(&[][..], Vec::as_slice);
    // Down only when every edge that reports the tunnel sees it down: the origin, not an
    // edge, is then at fault.
    let tunnel = if !seen.is_empty() && seen.iter().all(|s| s.tunnel == TunnelStatus::Down) {
        TunnelStatus::Down
    } else {
        TunnelStatus::Up
    };
    let services: BTreeMap<String, HealthState> = origin
        .last_metrics
        .as_ref()
        .and_then(|m| m.get("services"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let name = s.get("name")?.as_str()?.to_owned();
            let state = match s.get("status")?.as_str()? {
                "down" => HealthState::Unhealthy,
                "up" => HealthState::Healthy,
                _ => HealthState::Unknown,
            };
            Some((name, state))
        })
        .collect();
    OriginObservation {
        at: now,
        last_heartbeat: observed_since(
            Some(
                origin
                    .last_heartbeat
                    .map_or(system_time(origin.created_at), system_time),
            ),
            observing_since,
        ),
        tunnel,
        application: application(seen),
        services,
        disk_percent: metric(origin.last_metrics.as_ref(), &["disk_percent"]).unwrap_or(0.0),
    }
}

/// The origin's application by the checks edges run through their tunnels: down only when
/// every edge with a verdict sees it down (one edge with a broken path cannot condemn an
/// origin that another edge reaches), up when any sees it answer, unknown without checks.
fn application(seen: &[Seen]) -> HealthState {
    let known: Vec<HealthState> = seen
        .iter()
        .map(|s| s.application)
        .filter(|a| *a != HealthState::Unknown)
        .collect();
    if known.is_empty() {
        HealthState::Unknown
    } else if known.contains(&HealthState::Healthy) {
        HealthState::Healthy
    } else {
        HealthState::Unhealthy
    }
}

async fn announce_origin(state: &Runtime, origin: &Origin, action: &OriginAction) {
    let scope = |s: &Scope| match s {
        Scope::Service(name) => format!("service {name}"),
        _ => "every route".to_owned(),
    };
    let name = &origin.name;
    let (kind, severity, message, data) = match action {
        OriginAction::ServeUnavailable(s) => (
            kinds::ORIGIN_UNAVAILABLE,
            Severity::Warning,
            format!("origin {name}: edges answer 503 for {}", scope(s)),
            json!({"scope": s}),
        ),
        OriginAction::ServeNormally(s) => (
            kinds::ORIGIN_AVAILABLE,
            Severity::Info,
            format!("origin {name}: {} served again", scope(s)),
            json!({"scope": s}),
        ),
        OriginAction::Alert {
            condition,
            severity,
        } => {
            let what = match condition {
                OriginCondition::HeartbeatMissing => "no heartbeat".to_owned(),
                OriginCondition::DiskFull => "disk almost full".to_owned(),
                other => format!("{other:?}"),
            };
            (
                kinds::ORIGIN_ALERT,
                severity_of(*severity),
                format!("origin {name}: {what}"),
                json!({"condition": condition, "raised": true}),
            )
        }
        OriginAction::ResolveAlert(condition) => (
            kinds::ORIGIN_ALERT,
            Severity::Info,
            format!("origin {name}: alert closed"),
            json!({"condition": condition, "raised": false}),
        ),
        _ => return,
    };
    let mut data = data;
    data["origin_id"] = json!(origin.id);
    state
        .events()
        .emit(kind, severity, Some(origin.id.as_str()), message, data)
        .await;
}

/// An alert's severity as the event log writes it.
fn severity_of(severity: kokoa_health::Severity) -> Severity {
    match severity {
        kokoa_health::Severity::Critical => Severity::Critical,
        _ => Severity::Warning,
    }
}

/// Whether every route of `origin` is unavailable by the stored verdict (its tunnel is down
/// at every edge, or its application check fails).
pub fn origin_down(verdict: Option<&OriginVerdict>) -> bool {
    verdict.is_some_and(|v| v.unavailable().contains(&Scope::Origin))
}

/// The ports of the services that `verdict` serves as unavailable, by the names and ports
/// the origin reports in its heartbeats (`"services": [{"name","port","status"}]`).
pub fn ports_unavailable(verdict: &OriginVerdict, metrics: Option<&Value>) -> BTreeSet<u16> {
    let names: BTreeSet<String> = verdict
        .unavailable()
        .into_iter()
        .filter_map(|scope| match scope {
            Scope::Service(name) => Some(name),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return BTreeSet::new();
    }
    metrics
        .and_then(|m| m.get("services"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|s| {
            s.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| names.contains(n))
        })
        .filter_map(|s| s.get("port")?.as_u64()?.try_into().ok())
        .collect()
}

/// Judges on the leader while the health checker is on.
pub async fn run_judge(state: Runtime, mut stop: watch::Receiver<bool>) {
    let memory = JudgeMemory::default();
    loop {
        if state.leader().is_leader()
            && state.modules().enabled(&state, Module::HealthChecker).await
        {
            let started = std::time::Instant::now();
            let result = judge(&state, &memory).await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "the health judge could not read the store");
            }
            state
                .duty_metrics()
                .run("health_judge", result.is_ok(), started.elapsed());
        }
        if wait_or_stop(JUDGE_PERIOD, &state.wakers().health, &mut stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn unreadable_records_are_left_out_and_the_rest_kept() {
        let good = OriginId::new();
        let entries = vec![
            (good.to_string(), "{\"unavailable\":[]}".to_owned()),
            (OriginId::new().to_string(), "{not json".to_owned()),
            ("not an id!".to_owned(), "{\"unavailable\":[]}".to_owned()),
        ];
        let read: HashMap<OriginId, Value> =
            parsed(ORIGIN_VERDICTS, entries, |k| OriginId::parse(k).ok());
        assert_eq!(read.len(), 1);
        assert!(read.contains_key(&good));
    }

    #[test]
    fn the_end_to_end_check_asks_the_services_health_path_or_accepts_any_answer() {
        let origin = OriginId::parse("org_1").unwrap();
        let service = |port: u16, path: Option<&str>| kokoa_core::OriginService {
            id: kokoa_core::ServiceId::parse(&format!("svc_{port}")).unwrap(),
            origin_id: origin.clone(),
            name: kokoa_core::Name::parse(&format!("s{port}")).unwrap(),
            port: kokoa_core::Port::new(port).unwrap(),
            protocol: kokoa_core::Protocol::Http,
            health_check_path: path.map(|p| kokoa_core::HealthCheckPath::parse(p).unwrap()),
            created_at: Timestamp::now(),
        };
        let services = [service(8001, Some("/healthz")), service(8002, None)];
        let host = kokoa_core::Hostname::parse("app.hoge.com").unwrap();
        let with_path = end_to_end(&host, &services, kokoa_core::Port::new(8001).unwrap());
        assert_eq!(
            with_path.url.as_deref(),
            Some("https://app.hoge.com/healthz")
        );
        assert_eq!(
            (with_path.expected_status, with_path.any_status_below),
            (200, None)
        );
        for port in [8002, 9000] {
            let without = end_to_end(&host, &services, kokoa_core::Port::new(port).unwrap());
            assert_eq!(without.url.as_deref(), Some("https://app.hoge.com/health"));
            assert_eq!(without.any_status_below, Some(500), "port {port}");
        }
    }

    fn seen(n: u8, tunnel: TunnelStatus, application: HealthState) -> Seen {
        Seen {
            edge: EdgeNodeId::parse(&format!("edge_{n}")).unwrap(),
            tunnel,
            application,
        }
    }

    fn any_state() -> impl Strategy<Value = HealthState> {
        prop_oneof![
            Just(HealthState::Healthy),
            Just(HealthState::Unhealthy),
            Just(HealthState::Unknown),
        ]
    }

    #[test]
    fn one_edge_cannot_condemn_an_application_another_reaches() {
        use HealthState::{Healthy, Unhealthy, Unknown};
        let up = TunnelStatus::Up;
        assert_eq!(application(&[]), Unknown);
        assert_eq!(application(&[seen(1, up, Unknown)]), Unknown);
        assert_eq!(application(&[seen(1, up, Unhealthy)]), Unhealthy);
        assert_eq!(
            application(&[seen(1, up, Unhealthy), seen(2, up, Healthy)]),
            Healthy
        );
        assert_eq!(
            application(&[seen(1, up, Unhealthy), seen(2, TunnelStatus::Down, Unknown)]),
            Unhealthy
        );
    }

    proptest! {
        /// Down exactly when some edge sees it down and none sees it up.
        #[test]
        fn down_only_when_no_edge_sees_it_answer(states in prop::collection::vec(any_state(), 0..6)) {
            let reports: Vec<Seen> = (0u8..)
                .zip(&states)
                .map(|(n, s)| seen(n, TunnelStatus::Up, *s))
                .collect();
            let down = application(&reports) == HealthState::Unhealthy;
            prop_assert_eq!(
                down,
                states.contains(&HealthState::Unhealthy) && !states.contains(&HealthState::Healthy)
            );
        }
    }
}
