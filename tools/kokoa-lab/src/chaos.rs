//! `kokoa-lab check --chaos`: two control planes on one PostgreSQL database behind a load
//! balancer, and everything around them failing, one step at a time, while a sampler asks
//! PowerDNS for every host name every 100 ms (SPEC §11; the README says more of each step).
//!
//! | step | breaks | asserts |
//! |---|---|---|
//! | A | — | the sampler runs; over the whole run no name that had records answered none |
//! | B | both control planes stopped 40 s | no empty answer during and 30 s after, no serving edge judged unhealthy; agents back (goal 1 s) |
//! | C | the leader killed (SIGKILL) | the other leads within 12 s, a new route is served, no address twice for a name |
//! | D | the leader stalled 30 s (SIGSTOP) | the other leads; once woken, the stalled one records no action (intents) |
//! | E | PostgreSQL stopped 30 s | every request through every edge answers, no record removed; a route added after serves |
//! | F | PowerDNS's API fails (500, then no answer) 60 s while edge2 (or a lab VPS) dies | it is not destroyed meanwhile; destroyed only after its address left PowerDNS |
//! | G | the provider's create call times out after creating | exactly one VPS for the new edge, no orphan |
//! | H | origin-a's app flaps every second for 30 s | each edge applies at most `flap_max_changes` + 1 configurations; origin-b answers throughout |
//! | I | an edge dies at SPEC §9's timing (checks every 10 s, 3 failures), just before its next check (T+0) | its address leaves PowerDNS within 23 s |
//!
//! Every step checks the sampler for its own span: an edge serves each name throughout, so
//! no name may ever answer empty.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fs,
    io::Write,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use reqwest::{Method, StatusCode};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::{Value, json};

use crate::{
    Error,
    api::Api,
    check::{self, APPLIED, Step, count_lines, first_failures, get_at, served_on},
    failover::{secs, served_at},
    faults::Fault,
    lab::{Control, Ha, Lab, wait_for},
    net,
    plan::{self, APPS, CONTROL_ADDRESS, HUB, Role},
    postgres,
    sampler::{self, Sampler},
    vps::{self, Timing},
};

/// Step B: how long both control planes stay down (more than the 30 s heartbeat timeout),
/// and how long DNS is watched after they answer again.
const BOTH_DOWN: Duration = Duration::from_secs(40);
const AFTER_RESTART: Duration = Duration::from_secs(30);
/// Guarantee 6: agents are back this soon after the control plane answers (a goal).
const RECONNECT_GOAL: Duration = Duration::from_secs(1);
/// After an outage an agent may still be in its back-off.
const RECONNECT_LIMIT: Duration = Duration::from_secs(45);
/// Step C: the lease lasts 10 s; the takeover after a SIGKILL may take this long.
const TAKEOVER_LIMIT: Duration = Duration::from_secs(12);
/// Guarantee 4: after a clean stop (SIGTERM) the other leads this soon (a goal).
const CLEAN_TAKEOVER_GOAL: Duration = Duration::from_secs(1);
/// Step D: how long the leader stays stalled, and how long it gets to act once woken.
const STALL: Duration = Duration::from_secs(30);
const WOKEN: Duration = Duration::from_secs(8);
/// Step E: how long PostgreSQL stays down.
const DATABASE_DOWN: Duration = Duration::from_secs(30);
/// Step F: how long the DNS API answers 500, then how long it answers nothing.
const API_ERRORS: Duration = Duration::from_secs(30);
const API_HANGS: Duration = Duration::from_secs(30);
/// Step H: how long origin-a's app flaps, and the control plane's `flap_max_changes`
/// (its default: the lab does not set it).
const FLAPPING: Duration = Duration::from_secs(30);
const FLAP_MAX_CHANGES: usize = 4;
/// Step I: SPEC §9's removal from DNS, 23 s after the first failed check; the link is cut
/// this long before the edge's next check.
const SPEC_REMOVAL: Duration = Duration::from_secs(23);
const CUT_BEFORE_CHECK: Duration = Duration::from_millis(300);
/// How long a new route may take to reach every edge when nothing is broken.
const CONVERGE_LIMIT: Duration = Duration::from_secs(15);

/// An edge as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    id: String,
    name: String,
    address: Ipv4Addr,
    provider: String,
    instance_id: Option<String>,
    created_at: String,
}

impl Edge {
    fn parse(value: &Value) -> Option<Self> {
        Some(Self {
            id: value["id"].as_str()?.to_owned(),
            name: value["name"].as_str()?.to_owned(),
            address: value["public_ip"].as_str()?.parse().ok()?,
            provider: value["provider"].as_str().unwrap_or_default().to_owned(),
            instance_id: value["instance_id"].as_str().map(str::to_owned),
            created_at: value["created_at"].as_str().unwrap_or_default().to_owned(),
        })
    }

    /// Its port on the lab's bridge: `p-<name>` for the lab's own edges, the namespace's
    /// name for a lab VPS.
    fn hub_port(&self) -> Option<String> {
        match plan::HOSTS.iter().find(|h| h.name == self.name) {
            Some(host) => Some(host.hub_port()),
            None if self.provider == "lab" => self.instance_id.clone(),
            None => None,
        }
    }

    fn pair(&self) -> (String, Ipv4Addr) {
        (self.name.clone(), self.address)
    }
}

/// What the steps share.
struct Run {
    sampler: Sampler,
    /// Addresses of the edges whose link a step cut.
    cut: Vec<Ipv4Addr>,
    /// Edges a step made the control plane destroy (ids).
    destroyed: Vec<String>,
    /// The edge step G asked for (id).
    created: Option<String>,
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Runs steps A–I, one line each; the first failure is returned.
pub async fn run(lab: &mut Lab, out: &mut dyn Write) -> Result<(), Error> {
    if lab.ha.is_none() {
        return Err(Error::Command {
            command: "kokoa-lab check --chaos".into(),
            message: "the lab was built with one control plane; --chaos builds it with two".into(),
        });
    }
    // The edge automation replaces the edges the steps destroy (on already with --failover).
    lab.api
        .json(
            Method::PUT,
            "/api/v1/modules/edge_provisioner",
            Some(json!({"enabled": true})),
            StatusCode::OK,
        )
        .await?;
    let routes = lab
        .api
        .json(Method::GET, "/api/v1/routes", None, StatusCode::OK)
        .await?;
    let names: Vec<String> = routes["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["hostname"].as_str().map(str::to_owned))
        .collect();
    let dns = lab.tls.dns.dns_address();
    let sampler = Sampler::start(dns, names)
        .await
        .map_err(Error::io("ask PowerDNS at", dns.to_string()))?;
    let started = now();
    let mut run = Run {
        sampler,
        cut: Vec::new(),
        destroyed: Vec::new(),
        created: None,
    };
    let mut first_failure = None;
    // A few rounds, so every name is known to have records.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rounds, _) = run.sampler.counts();
    let first = if rounds == 0 {
        Err(format!("no round of questions to PowerDNS at {dns} in 1 s"))
    } else {
        Ok(format!(
            "asking PowerDNS at {dns} for the A records of {} host names every {} ms ({}), \
             for the steps below",
            run.sampler.names().len(),
            sampler::EVERY.as_millis(),
            run.sampler.names().join(", ")
        ))
    };
    check::report(out, "A", "dns sampler started", first, &mut first_failure);
    let steps: [(&str, &'static str); 8] = [
        ("B", "both control planes down 40 s"),
        ("C", "kill -9 the leader"),
        ("D", "the leader stalled 30 s (SIGSTOP)"),
        ("E", "PostgreSQL stopped 30 s"),
        ("F", "DNS API fails while an edge dies"),
        ("G", "VPS create times out after creating"),
        ("H", "origin flaps"),
        ("I", "edge link cut at the SPEC's timing"),
    ];
    for (letter, name) in steps {
        let result = match letter {
            "B" => both_down(lab, &mut run).await,
            "C" => kill_leader(lab, &mut run).await,
            "D" => stall_leader(lab, &mut run).await,
            "E" => database_down(lab, &mut run).await,
            "F" => dns_api_fails(lab, &mut run).await,
            "G" => create_times_out(lab, &mut run).await,
            "H" => origin_flaps(lab, &mut run).await,
            _ => spec_timing(lab, &mut run).await,
        };
        check::report(out, letter, name, result, &mut first_failure);
        // A step that failed half-way may have left a control plane or an app stopped.
        if let Err(e) = restart_stopped(lab).await {
            check::report(
                out,
                letter,
                "restart what it stopped",
                Err(e),
                &mut first_failure,
            );
        }
    }
    let whole = no_empty_answer(&run, started, now()).map(|dns| {
        let (rounds, unanswered) = run.sampler.counts();
        format!(
            "{rounds} rounds over {} host names: {dns}; {unanswered} questions unanswered",
            run.sampler.names().len()
        )
    });
    check::report(
        out,
        "A",
        "dns sampler, whole run",
        whole,
        &mut first_failure,
    );
    first_failure.map_or(Ok(()), Err)
}

/// Starts again every control plane and app a step stopped and did not start.
async fn restart_stopped(lab: &mut Lab) -> Result<(), String> {
    let apps = APPS.map(|a| Lab::app_child(a.origin));
    for name in lab.control_names().iter().chain(&apps) {
        if lab.supervisor.pid(name).is_none() {
            lab.supervisor
                .restart(&mut lab.ledger, name)
                .map_err(text)?;
        }
    }
    for control in lab.controls.clone() {
        lab.wait_control_at(&control).await.map_err(text)?;
    }
    Ok(())
}

fn ha(lab: &Lab) -> Result<&Ha, String> {
    lab.ha
        .as_ref()
        .ok_or_else(|| "the lab runs one control plane".to_owned())
}

/// Fails when a name that had records answered none within `from`..`to`.
fn no_empty_answer(run: &Run, from: SystemTime, to: SystemTime) -> Result<String, String> {
    let (empties, total) = run.sampler.empties(from, to);
    if empties.is_empty() {
        return Ok("0 empty-answer ms".into());
    }
    let list: Vec<String> = empties
        .iter()
        .take(5)
        .map(|e| {
            let lasted =
                e.to.and_then(|t| t.duration_since(e.from).ok())
                    .map_or_else(
                        || "until the end".to_owned(),
                        |d| format!("{} ms", d.as_millis()),
                    );
            format!("{} at {} for {lasted}", e.name, clock(e.from))
        })
        .collect();
    Err(format!(
        "{} ms of empty answers from PowerDNS ({} stretches: {})",
        total.as_millis(),
        empties.len(),
        list.join("; ")
    ))
}

/// `HH:MM:SS.mmm` (UTC) of `t`, for messages.
fn clock(t: SystemTime) -> String {
    let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let day = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3_600_000,
        day / 60_000 % 60,
        day / 1000 % 60,
        day % 1000
    )
}

async fn edge_list(api: &Api) -> Result<Vec<Value>, String> {
    let edges = api
        .json(Method::GET, "/api/v1/edge-nodes", None, StatusCode::OK)
        .await
        .map_err(text)?;
    Ok(edges["edge_nodes"].as_array().cloned().unwrap_or_default())
}

/// The edges that serve now: active, with an address, and not cut by a step.
async fn serving(api: &Api, run: &Run) -> Result<Vec<Edge>, String> {
    let serving: Vec<Edge> = edge_list(api)
        .await?
        .iter()
        .filter(|e| e["status"] == "active")
        .filter_map(Edge::parse)
        .filter(|e| !run.cut.contains(&e.address))
        .collect();
    if serving.is_empty() {
        return Err("no edge serves".into());
    }
    Ok(serving)
}

fn pairs(edges: &[Edge]) -> Vec<(String, Ipv4Addr)> {
    edges.iter().map(Edge::pair).collect()
}

/// The time of an event (whole seconds).
fn event_time(event: &Value) -> Option<SystemTime> {
    let at = kokoa_core::Timestamp::parse_rfc3339(event["created_at"].as_str()?).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(at.as_unix()).ok()?))
}

/// The current leader: which of the lab's control planes wrote the newest
/// `control_plane.leader` event (its instance name holds its process id).
struct Leader {
    control: Control,
    instance: String,
    event: i64,
}

async fn leader(lab: &Lab, api: &Api) -> Result<Leader, String> {
    let event = api
        .newest_event("control_plane.leader")
        .await
        .map_err(text)?
        .ok_or("no control plane has led yet")?;
    let instance = event["data"]["instance"]
        .as_str()
        .or(event["subject"].as_str())
        .unwrap_or_default()
        .to_owned();
    let control = lab
        .controls
        .iter()
        .find(|c| {
            lab.supervisor
                .pid(&c.name)
                .is_some_and(|pid| instance.contains(&format!("-{pid}-")))
        })
        .ok_or_else(|| {
            format!("the last leader, {instance}, is none of the lab's running control planes")
        })?
        .clone();
    Ok(Leader {
        control,
        instance,
        event: event["id"].as_i64().unwrap_or_default(),
    })
}

/// The control plane other than `leader`.
fn other(lab: &Lab, leader: &Leader) -> Result<Control, String> {
    lab.controls
        .iter()
        .find(|c| c.name != leader.control.name)
        .cloned()
        .ok_or_else(|| "there is no second control plane".to_owned())
}

/// Waits for a `control_plane.leader` event after event `after` by another instance than
/// `old`: that instance, and the time from `since` until it was seen.
async fn new_leader(
    api: &Api,
    after: i64,
    old: &str,
    since: Instant,
    limit: Duration,
) -> Result<(String, Duration), String> {
    wait_for(
        format!("another control plane than {old} to lead"),
        limit,
        Duration::from_millis(100),
        || async {
            let events = api.events_after("control_plane.leader", after).await.ok()?;
            events.iter().find_map(|e| {
                let instance = e["data"]["instance"].as_str()?;
                (instance != old).then(|| (instance.to_owned(), since.elapsed()))
            })
        },
    )
    .await
    .map_err(text)
}

/// Events of `kind` after `after` about `subject`.
async fn events_about(
    api: &Api,
    kind: &str,
    after: i64,
    subjects: &[&str],
) -> Result<Vec<Value>, String> {
    Ok(api
        .events_after(kind, after)
        .await
        .map_err(text)?
        .into_iter()
        .filter(|e| {
            let subject = e["subject"].as_str().unwrap_or_default();
            let about = e["data"]["edge_node_id"].as_str().unwrap_or_default();
            subjects.iter().any(|s| *s == subject || *s == about)
        })
        .collect())
}

/// B. Both control planes stopped for longer than the heartbeat timeout, then started.
async fn both_down(lab: &mut Lab, run: &mut Run) -> Step {
    let edges = serving(&lab.api, run).await?;
    let ids: Vec<&str> = edges.iter().map(|e| e.id.as_str()).collect();
    let before = lab.api.last_event_id().await.map_err(text)?;
    let from = now();
    // The agents that must come back: the serving edges' and the origins'.
    let agents: BTreeSet<IpAddr> = edges
        .iter()
        .map(|e| IpAddr::V4(e.address))
        .chain(plan::hosts(Role::Origin).map(|h| IpAddr::V4(h.address)))
        .collect();
    let controls = lab.control_names();
    lab.supervisor
        .stop_all(&mut lab.ledger, &controls)
        .await
        .map_err(text)?;
    if lab.api.healthy().await {
        return Err("the control plane still answers after both were stopped".into());
    }
    tokio::time::sleep(BOTH_DOWN).await;
    let spawned = now();
    for control in &controls {
        lab.supervisor
            .restart(&mut lab.ledger, control)
            .map_err(text)?;
    }
    lab.wait_control().await.map_err(text)?;
    let answered = now();
    let answered_at = Instant::now();
    // Each agent's first connection a control plane took after the restart.
    let back = wait_for(
        format!("every agent ({agents:?}) to reconnect"),
        RECONNECT_LIMIT,
        Duration::from_millis(50),
        || async {
            let mut first: BTreeMap<IpAddr, SystemTime> = BTreeMap::new();
            for s in ha(lab).ok()?.lb.sessions_since(spawned) {
                if s.at >= spawned && agents.contains(&s.client) {
                    let at = first.entry(s.client).or_insert(s.at);
                    *at = (*at).min(s.at);
                }
            }
            (first.len() == agents.len()).then_some(first)
        },
    )
    .await
    .map_err(text)?;
    let (slowest_agent, slowest) = back
        .iter()
        .map(|(agent, at)| (*agent, at.duration_since(answered).unwrap_or_default()))
        .max_by_key(|(_, d)| *d)
        .unwrap_or((IpAddr::V4(CONTROL_ADDRESS), Duration::ZERO));
    let route = "chaos-b.hoge.test";
    let served = check::converge_on(lab, route, "origin-a", &pairs(&edges), RECONNECT_LIMIT)
        .await
        .map_err(|e| format!("after the restart: {e}"))?;
    run.sampler.add(route);
    if let Some(left) = AFTER_RESTART.checked_sub(answered_at.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let dns = no_empty_answer(run, from, now())?;
    let unhealthy = events_about(&lab.api, "edge_node_unhealthy", before, &ids).await?;
    if !unhealthy.is_empty() {
        return Err(format!(
            "{} edge_node_unhealthy events for serving edges: {}",
            unhealthy.len(),
            unhealthy
                .iter()
                .map(|e| e["message"].to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let goal = if slowest <= RECONNECT_GOAL {
        "met"
    } else {
        "missed"
    };
    Ok(format!(
        "{dns} during the {} and {} after; 0 edge_node_unhealthy for the {} serving edges; \
         {} agents reconnected at most {} after the control plane answered ({slowest_agent}; \
         goal {} {goal}); new route {route}: {served}",
        secs(BOTH_DOWN),
        secs(AFTER_RESTART),
        edges.len(),
        back.len(),
        secs(slowest),
        secs(RECONNECT_GOAL),
    ))
}

/// C. The leader dies without a word (SIGKILL): the other leads within the lease's TTL,
///    its duties go on, and no address is published twice.
async fn kill_leader(lab: &mut Lab, run: &mut Run) -> Step {
    let from = now();
    let leader = leader(lab, &lab.api).await?;
    let survivor = other(lab, &leader)?;
    let api = lab.control_api(&survivor).map_err(text)?;
    lab.supervisor
        .kill(&mut lab.ledger, &leader.control.name)
        .await
        .map_err(text)?;
    let killed = Instant::now();
    let (instance, took) = new_leader(
        &api,
        leader.event,
        &leader.instance,
        killed,
        Duration::from_secs(30),
    )
    .await?;
    if took > TAKEOVER_LIMIT {
        return Err(format!(
            "{instance} led only {} after {} was killed (limit {})",
            secs(took),
            leader.instance,
            secs(TAKEOVER_LIMIT)
        ));
    }
    let edges = serving(&api, run).await?;
    let route = "chaos-c.fuga.test";
    let served = check::converge_on(lab, route, "origin-b", &pairs(&edges), CONVERGE_LIMIT)
        .await
        .map_err(|e| format!("after the takeover: {e}"))?;
    run.sampler.add(route);
    lab.supervisor
        .restart(&mut lab.ledger, &leader.control.name)
        .map_err(text)?;
    lab.wait_control_at(&leader.control).await.map_err(text)?;
    // Back as a follower: the lease is the survivor's.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = self::leader(lab, &api).await?;
    if still.instance != instance {
        return Err(format!(
            "the restarted {} took the lead from {instance}",
            still.instance
        ));
    }
    let duplicates = run.sampler.duplicates(from, now());
    if let Some((name, address)) = duplicates.first() {
        return Err(format!(
            "PowerDNS answered {address} twice for {name} ({} such answers)",
            duplicates.len()
        ));
    }
    let dns = no_empty_answer(run, from, now())?;
    Ok(format!(
        "{} ({}) killed; {} (the other) led {} after (limit {}); new route {route} through \
         the load balancer: {served}; no address twice for a name; {dns}; {} restarted as a \
         follower",
        leader.control.name,
        leader.instance,
        survivor.name,
        secs(took),
        secs(TAKEOVER_LIMIT),
        leader.control.name,
    ))
}

/// Sends SIGCONT to a stopped process when dropped, whatever happened meanwhile.
struct Resume(Option<u32>);

impl Resume {
    fn now(&mut self) {
        if let Some(pid) = self
            .0
            .take()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(Pid::from_raw)
        {
            let _ = kill_process(pid, Signal::CONT);
        }
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        self.now();
    }
}

/// D. The leader stalls (SIGSTOP) past its lease: the other takes over; woken up, the
///    stalled one must not act in the new term — every leader-only action (DNS change,
///    VPS created or destroyed, certificate ordered) is recorded first as an intent under
///    the leader's fencing token, so the intents table shows any it took.
async fn stall_leader(lab: &mut Lab, run: &mut Run) -> Step {
    let from = now();
    let leader = leader(lab, &lab.api).await?;
    let survivor = other(lab, &leader)?;
    let api = lab.control_api(&survivor).map_err(text)?;
    let edges = serving(&api, run).await?;
    let ids: Vec<&str> = edges.iter().map(|e| e.id.as_str()).collect();
    let before = api.last_event_id().await.map_err(text)?;
    let stopped_at = now();
    if !lab.supervisor.signal(&leader.control.name, Signal::STOP) {
        return Err(format!("cannot stop {}", leader.control.name));
    }
    let mut resume = Resume(lab.supervisor.pid(&leader.control.name));
    let stopped = Instant::now();
    let takeover = new_leader(&api, leader.event, &leader.instance, stopped, STALL).await;
    if let Some(left) = STALL.checked_sub(stopped.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let woken_after = api.last_event_id().await.map_err(text)?;
    resume.now();
    tokio::time::sleep(WOKEN).await;
    let (instance, took) =
        takeover.map_err(|e| format!("while {} was stalled: {e}", leader.control.name))?;
    let fenced: Vec<Value> = api
        .events_after("control_plane.fenced", woken_after)
        .await
        .map_err(text)?
        .into_iter()
        .filter(|e| {
            e["subject"].as_str() == Some(&leader.instance)
                || e["data"]["instance"].as_str() == Some(&leader.instance)
        })
        .collect();
    // Whole seconds of the database's clock: nothing the stalled process did can carry a
    // later second than the one it was stopped in, until it woke (after the takeover).
    let stop_second = stopped_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let sql = format!(
        "SELECT kind || ' ' || subject || ' (term ' || token || ', at ' || created_at || ')' \
         FROM intents WHERE holder = '{}' AND created_at > {stop_second} ORDER BY id",
        leader.instance.replace('\'', "''")
    );
    let acted = postgres::psql(&ha(lab)?.database_url, &sql)
        .await
        .map_err(text)?;
    let acted: Vec<&str> = acted.lines().filter(|l| !l.trim().is_empty()).collect();
    if !acted.is_empty() {
        return Err(format!(
            "the stalled {} acted after {} took over ({} intents recorded under its name: {}); \
             refused actions: {}",
            leader.instance,
            instance,
            acted.len(),
            acted.join("; "),
            fenced.len()
        ));
    }
    let unhealthy = events_about(&api, "edge_node_unhealthy", before, &ids).await?;
    let dns = no_empty_answer(run, from, now())?;
    Ok(format!(
        "{} stalled {}: {} led {} after the stop; woken, the stalled one recorded 0 actions \
         (intents) and had {} refused (control_plane.fenced); {} edge_node_unhealthy for \
         serving edges; {dns}",
        leader.control.name,
        secs(STALL),
        survivor.name,
        secs(took),
        fenced.len(),
        unhealthy.len(),
    ))
}

/// Starts the PostgreSQL server again when dropped, unless it was started already.
struct Restart(Option<postgres::Server>);

impl Drop for Restart {
    fn drop(&mut self) {
        if let Some(server) = self.0.take()
            && let Err(e) = server.start_blocking()
        {
            eprintln!("kokoa-lab: cannot start PostgreSQL again: {e}");
        }
    }
}

/// Runs a blocking PostgreSQL server command off the runtime.
async fn blocking(
    server: &postgres::Server,
    what: fn(&postgres::Server) -> Result<(), Error>,
) -> Result<(), String> {
    let server = server.clone();
    tokio::task::spawn_blocking(move || what(&server))
        .await
        .map_err(text)?
        .map_err(text)
}

/// E. The database stops: the edges serve on and keep their records, every control plane
///    answers `/ready` 503 but `/health` 200; once it is back, they are ready again and a
///    change goes through.
async fn database_down(lab: &mut Lab, run: &mut Run) -> Step {
    let from = now();
    let server = ha(lab)?.server.clone();
    let edges = serving(&lab.api, run).await?;
    lab.ledger
        .record(|s| s.stopped_postgres = Some(server.clone()))
        .map_err(text)?;
    let mut restart = Restart(Some(server.clone()));
    let apis = lab
        .controls
        .iter()
        .map(|control| lab.control_api(control).map_err(text))
        .collect::<Result<Vec<_>, _>>()?;
    blocking(&server, postgres::Server::stop_blocking).await?;
    let stopped = Instant::now();
    let (mut sent, mut failures) = (0usize, Vec::new());
    // Readiness follows the database, liveness does not: asked once it is surely down.
    let mut readiness_while_down = None;
    // Bounded: at most one request per edge each 0.5 s, for the outage.
    while stopped.elapsed() < DATABASE_DOWN {
        for edge in &edges {
            let app = APPS[sent % APPS.len()];
            sent += 1;
            match get_at(edge.address, app.hostname).await {
                Ok(r) if r.is_from(app.origin) => {}
                Ok(r) => failures.push(format!(
                    "{} via {}: {}",
                    app.hostname,
                    edge.name,
                    r.outcome()
                )),
                Err(e) => failures.push(e),
            }
        }
        if readiness_while_down.is_none() && stopped.elapsed() > Duration::from_secs(5) {
            let mut seen = Vec::new();
            for api in &apis {
                seen.push((api.readiness().await, api.healthy().await));
            }
            readiness_while_down = Some(seen);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    blocking(&server, postgres::Server::start_blocking).await?;
    restart.0 = None;
    let started = Instant::now();
    let ready_again = wait_for(
        "every control plane to be ready again after PostgreSQL is back",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            for api in &apis {
                if api.readiness().await != 200 {
                    return None;
                }
            }
            Some(started.elapsed())
        },
    )
    .await
    .map_err(text)?;
    lab.ledger
        .record(|s| s.stopped_postgres = None)
        .map_err(text)?;
    let route = "chaos-e.hoge.test";
    let origin = lab.origins.get("origin-a").cloned().unwrap_or_default();
    let api = &lab.api;
    let accepted = wait_for(
        format!("the API to take the route {route} after PostgreSQL is back"),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            match api.add_route(route, &origin, APPS[0].port).await {
                Ok(_) | Err(Error::Api { status: 409, .. }) => Some(started.elapsed()),
                Err(_) => None,
            }
        },
    )
    .await
    .map_err(text)?;
    let served = served_on(
        route,
        "origin-a",
        &pairs(&edges),
        started,
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| format!("after PostgreSQL came back: {e}"))?;
    run.sampler.add(route);
    if !failures.is_empty() {
        return Err(format!(
            "{} of {sent} requests failed while PostgreSQL was down: {}",
            failures.len(),
            first_failures(&failures)
        ));
    }
    let seen = readiness_while_down.unwrap_or_default();
    if seen.is_empty() || seen.iter().any(|&(ready, alive)| ready != 503 || !alive) {
        return Err(format!(
            "while PostgreSQL was down, expected /ready 503 and /health 200 from every control \
             plane, got (status of /ready, /health answered) {seen:?}"
        ));
    }
    let dns = no_empty_answer(run, from, now())?;
    Ok(format!(
        "{sent}/{sent} requests through {} edges answered while it was down; {dns}; /ready 503 \
         on all {} control planes while down (/health 200), 200 again {} after; recovery: the \
         API took a route {} after PostgreSQL was back, every edge served it after {} ({})",
        edges.len(),
        seen.len(),
        secs(ready_again),
        secs(accepted),
        secs(served.slowest),
        served.times
    ))
}

/// Puts the DNS API's fault switch back to passing requests when dropped.
struct Heal<'a>(&'a crate::faults::DnsApiProxy);

impl Drop for Heal<'_> {
    fn drop(&mut self) {
        self.0.set(Fault::Pass);
    }
}

/// F. PowerDNS's API fails (500, then no answer) while edge2 (or, if it is gone, a lab
///    VPS) dies: it must not be destroyed while its records may remain; once the API
///    answers, it is destroyed only after PowerDNS stopped answering its address.
async fn dns_api_fails(lab: &mut Lab, run: &mut Run) -> Step {
    let from = now();
    // edge2, or a lab VPS if an earlier step already lost edge2; another edge must serve.
    let edges = serving(&lab.api, run).await?;
    if edges.len() < 2 {
        return Err(format!(
            "only {} edge serves; cutting it would leave none",
            edges.len()
        ));
    }
    let victim = edges
        .iter()
        .find(|e| e.name == "edge2")
        .or_else(|| {
            edges
                .iter()
                .filter(|e| e.provider == "lab")
                .max_by_key(|e| &e.created_at)
        })
        .cloned()
        .ok_or("neither edge2 nor a lab VPS serves")?;
    let who = victim.name.clone();
    let port = victim
        .hub_port()
        .ok_or_else(|| format!("{who} has no port on the bridge"))?;
    let before = lab.api.last_event_id().await.map_err(text)?;
    let proxy = &ha(lab)?.dns_api;
    let heal = Heal(proxy);
    proxy.set(Fault::Error);
    net::ip(&["-n", HUB, "link", "set", &port, "down"])
        .await
        .map_err(text)?;
    run.cut.push(victim.address);
    let cut = Instant::now();
    let path = format!("/api/v1/edge-nodes/{}", victim.id);
    let mut phases = Vec::new();
    // Bounded: one look a second while the API fails.
    while cut.elapsed() < API_ERRORS + API_HANGS {
        if cut.elapsed() >= API_ERRORS {
            proxy.set(Fault::Hang);
        }
        let edge = lab
            .api
            .json(Method::GET, &path, None, StatusCode::OK)
            .await
            .map_err(text)?;
        let phase = format!(
            "{}/{}",
            edge["status"].as_str().unwrap_or("?"),
            edge["lifecycle"]["phase"].as_str().unwrap_or("?")
        );
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        let destroyed =
            events_about(&lab.api, "edge.destroyed", before, &[victim.id.as_str()]).await?;
        if edge["status"] == "deleted" || !destroyed.is_empty() {
            return Err(format!(
                "{who} was destroyed {} after its link went down while the DNS API failed \
                 (its records may remain): {}",
                secs(cut.elapsed()),
                phases.join(" -> ")
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let [_, errors, held] = proxy.counts();
    let step_failed = events_about(&lab.api, "edge.step_failed", before, &[victim.id.as_str()])
        .await?
        .len();
    drop(heal);
    let healed = Instant::now();
    // Each look at the edge brackets when it was destroyed: after the last one (by its
    // sending time) that saw it alive, before the first one (by its arrival) that did not.
    let alive_at = Mutex::new(from);
    let gone_seen = wait_for(
        format!("{who} to be destroyed once the DNS API answers"),
        Duration::from_secs(120),
        Duration::from_millis(200),
        || async {
            let sent = now();
            let edge = lab
                .api
                .json(Method::GET, &path, None, StatusCode::OK)
                .await
                .ok()?;
            if edge["status"] == "deleted" {
                Some(now())
            } else {
                *alive_at.lock().unwrap_or_else(PoisonError::into_inner) = sent;
                None
            }
        },
    )
    .await
    .map_err(|e| format!("{e}; its phases: {}", phases.join(" -> ")))?;
    let took = healed.elapsed();
    let event = events_about(&lab.api, "edge.destroyed", before, &[victim.id.as_str()])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{who} is deleted but no edge.destroyed event says so"))?;
    let second = event_time(&event).ok_or("the edge.destroyed event has no time")?;
    let alive_at = *alive_at.lock().unwrap_or_else(PoisonError::into_inner);
    let destroyed_after = alive_at.max(second);
    let destroyed_before = gone_seen.min(second + Duration::from_secs(1));
    let last = run
        .sampler
        .last_seen(victim.address)
        .ok_or_else(|| format!("the sampler never saw {who}'s address"))?;
    if last >= destroyed_after {
        return Err(format!(
            "{who} was destroyed between {} and {} while PowerDNS still answered its address \
             (last at {})",
            clock(destroyed_after),
            clock(destroyed_before),
            clock(last)
        ));
    }
    // Let the sampler look once more after the destruction.
    tokio::time::sleep(sampler::EVERY * 3).await;
    let mut left = run.sampler.seen_after(victim.address, destroyed_before);
    let live: HashSet<Ipv4Addr> = edge_list(&lab.api)
        .await?
        .iter()
        .filter(|e| e["status"] != "deleted")
        .filter_map(Edge::parse)
        .map(|e| e.address)
        .collect();
    let dead: HashSet<Ipv4Addr> = edge_list(&lab.api)
        .await?
        .iter()
        .filter(|e| e["status"] == "deleted")
        .filter_map(Edge::parse)
        .map(|e| e.address)
        .filter(|a| !live.contains(a))
        .collect();
    let dns = lab.tls.dns.dns_address();
    let mut where_left = Vec::new();
    for name in run.sampler.names() {
        for address in served_at(dns, &name).await {
            if dead.contains(&address) {
                left += 1;
                where_left.push(format!("{name} -> {address}"));
            }
        }
    }
    if left > 0 {
        return Err(format!(
            "records left at destroyed edges: {left} ({})",
            where_left.join(", ")
        ));
    }
    run.destroyed.push(victim.id.clone());
    let dns_figure = no_empty_answer(run, from, now())?;
    let margin = destroyed_after.duration_since(last).unwrap_or_default();
    Ok(format!(
        "{who} cut while the DNS API answered 500 ({errors} calls, {}) then nothing ({held} \
         calls, {}): not destroyed ({}; {step_failed} edge.step_failed); healed: destroyed \
         {} later, at least {} after its address last left PowerDNS (TTL {} s); records left \
         at destroyed edges: 0; {dns_figure}",
        secs(API_ERRORS),
        secs(API_HANGS),
        phases.join(" -> "),
        secs(took),
        secs(margin),
        crate::tls::ZONE_TTL,
    ))
}

/// Waits until no edge is being created: none in `create_instance` and the edges a step
/// destroyed have their replacement (the automation asks for it right after).
async fn settle(lab: &Lab, run: &Run) -> Result<(), String> {
    let started = Instant::now();
    wait_for(
        "the edge automation to finish creating edges",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || async {
            let edges = edge_list(&lab.api).await.ok()?;
            let creating = edges
                .iter()
                .any(|e| e["status"] != "deleted" && e["lifecycle"]["phase"] == "create_instance");
            // A replacement that does not come within 20 s is not waited for.
            let replaced = started.elapsed() > Duration::from_secs(20)
                || run.destroyed.iter().all(|id| {
                    edges
                        .iter()
                        .any(|e| e["id"] == id.as_str() && !e["lifecycle"]["replaced_by"].is_null())
                });
            (!creating && replaced).then_some(())
        },
    )
    .await
    .map_err(text)
}

/// The lab provider's record: the number its next instance gets, and each instance's
/// edge.
fn provider_state(lab: &Lab) -> Result<(u64, BTreeMap<String, String>), String> {
    let path = vps::config(&lab.dir, lab.bins())
        .map_err(text)?
        .dir
        .join("state.json");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        // No instance made yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, BTreeMap::new())),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let state: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let instances = state["instances"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(id, host)| {
            (
                id.clone(),
                host["node_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Ok((state["next"].as_u64().unwrap_or_default(), instances))
}

/// Removes the fault switch when dropped (if the step ended before it was used).
struct Unarm(PathBuf);

impl Drop for Unarm {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// G. The provider's create call makes the VPS, then times out: the control plane must find
///    that VPS by its idempotency key rather than make a second one.
async fn create_times_out(lab: &mut Lab, run: &mut Run) -> Step {
    let from = now();
    settle(lab, run).await?;
    let (next_before, _) = provider_state(lab)?;
    let before = lab.api.last_event_id().await.map_err(text)?;
    let fault = vps::config(&lab.dir, lab.bins())
        .map_err(text)?
        .dir
        .join("faults/create-timeout");
    if let Some(dir) = fault.parent() {
        fs::create_dir_all(dir).map_err(text)?;
    }
    fs::write(&fault, "").map_err(text)?;
    let _unarm = Unarm(fault.clone());
    let asked = Instant::now();
    let created = lab
        .api
        .json(
            Method::POST,
            "/api/v1/edge-nodes",
            Some(json!({"provider": "lab", "region": vps::REGIONS[0], "name": "chaos-g"})),
            StatusCode::ACCEPTED,
        )
        .await
        .map_err(text)?;
    let id = created["id"]
        .as_str()
        .ok_or("no id in the answer")?
        .to_owned();
    run.created = Some(id.clone());
    let path = format!("/api/v1/edge-nodes/{id}");
    let dns = lab.tls.dns.dns_address();
    let api = &lab.api;
    let address = wait_for(
        "chaos-g to serve and be in DNS for every app",
        Duration::from_secs(150),
        Duration::from_millis(500),
        || async {
            let edge = api
                .json(Method::GET, &path, None, StatusCode::OK)
                .await
                .ok()?;
            if edge["status"] != "active" || edge["lifecycle"]["phase"] != "serving" {
                return None;
            }
            let address: Ipv4Addr = edge["public_ip"].as_str()?.parse().ok()?;
            for app in APPS {
                if !served_at(dns, app.hostname).await.contains(&address) {
                    return None;
                }
            }
            Some(address)
        },
    )
    .await
    .map_err(text)?;
    let serving_in = asked.elapsed();
    if fault.exists() {
        return Err(format!(
            "the fault switch {} was not used: no VPS was created while it was set",
            fault.display()
        ));
    }
    let created_events = events_about(&lab.api, "edge.created", before, &[id.as_str()]).await?;
    let how = created_events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect::<Vec<_>>()
        .join("; ");
    settle(lab, run).await?;
    let (next_after, instances) = provider_state(lab)?;
    let made = next_after.saturating_sub(next_before);
    // Every VPS that exists must be the one VPS of an edge that is not deleted.
    let namespaces = vps::namespaces();
    let owned: BTreeMap<String, String> = edge_list(&lab.api)
        .await?
        .iter()
        .filter(|e| e["status"] != "deleted" && e["provider"] == "lab")
        .filter_map(|e| {
            Some((
                e["instance_id"].as_str()?.to_owned(),
                e["id"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let orphans: Vec<String> = namespaces
        .iter()
        .filter(|ns| !owned.contains_key(*ns))
        .map(|ns| {
            let edge = instances.get(ns).map_or("?", String::as_str);
            format!("{ns} (made for {edge})")
        })
        .collect();
    let ours: Vec<&String> = instances
        .iter()
        .filter(|(ns, edge)| **edge == id && namespaces.contains(ns))
        .map(|(ns, _)| ns)
        .collect();
    if !orphans.is_empty() || ours.len() != 1 || made != 1 {
        return Err(format!(
            "orphan VPSes: {} ({}); VPSes for chaos-g: {ours:?}; VPSes the provider made \
             during the step: {made}; edge.created: {how}",
            orphans.len(),
            orphans.join(", ")
        ));
    }
    let dns_figure = no_empty_answer(run, from, now())?;
    Ok(format!(
        "orphan VPSes: 0 ({} kl-vps-* namespaces, each an edge's); the create call made {} \
         then timed out, and it is chaos-g's only VPS (edge.created: {how}); chaos-g \
         ({address}) serving and in DNS {} after it was asked for; {dns_figure}",
        namespaces.len(),
        ours[0],
        secs(serving_in),
    ))
}

/// The log of edge `edge`'s agent.
fn edge_log(lab: &Lab, edge: &Edge) -> Result<PathBuf, String> {
    let path = if plan::HOSTS.iter().any(|h| h.name == edge.name) {
        lab.supervisor.log_path(&edge.name)
    } else {
        let instance = edge
            .instance_id
            .as_deref()
            .ok_or_else(|| format!("{} has no VPS", edge.name))?;
        vps::config(&lab.dir, lab.bins())
            .map_err(text)?
            .dir
            .join(instance)
            .join("edge.log")
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{}'s log {} is missing", edge.name, path.display()))
    }
}

/// Waits (at most 90 s) until every route has a valid certificate and no edge of `logs`
/// applied a configuration for 3 s; says how it went.
async fn quiet(lab: &Lab, logs: &[PathBuf]) -> String {
    const CALM: Duration = Duration::from_secs(3);
    let started = Instant::now();
    let api = &lab.api;
    let counts = || {
        logs.iter()
            .map(|l| count_lines(l, APPLIED))
            .collect::<Vec<_>>()
    };
    let mut last = (counts(), Instant::now());
    let calm = wait_for(
        "every route certified and the edges calm",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || {
            let now = counts();
            if now != last.0 {
                last = (now, Instant::now());
            }
            let calm_for = last.1.elapsed();
            async move {
                let routes = api
                    .json(Method::GET, "/api/v1/routes", None, StatusCode::OK)
                    .await
                    .ok()?;
                let certificates = api
                    .json(Method::GET, "/api/v1/certificates", None, StatusCode::OK)
                    .await
                    .ok()?;
                let valid: HashSet<&str> = certificates["certificates"]
                    .as_array()?
                    .iter()
                    .filter(|c| c["status"] == "valid")
                    .flat_map(|c| c["names"].as_array().into_iter().flatten())
                    .filter_map(Value::as_str)
                    .collect();
                let certified = routes["routes"]
                    .as_array()?
                    .iter()
                    .filter_map(|r| r["hostname"].as_str())
                    .all(|h| valid.contains(h));
                (certified && calm_for >= CALM).then_some(())
            }
        },
    )
    .await;
    match calm {
        Ok(()) => format!(
            "every route certified and the edges calm after {}",
            secs(started.elapsed())
        ),
        Err(e) => format!("not calm: {e}"),
    }
}

/// H. origin-a's app stops and starts every second for 30 s: the damping keeps each edge's
///    nginx from reloading more than `flap_max_changes` times a minute (+1), and origin-b's
///    route answers throughout.
async fn origin_flaps(lab: &mut Lab, run: &mut Run) -> Step {
    let from = now();
    let edges = serving(&lab.api, run).await?;
    let logs: Vec<PathBuf> = edges
        .iter()
        .map(|e| edge_log(lab, e))
        .collect::<Result<_, _>>()?;
    // Only the flapping may change the edges' configuration meanwhile.
    let quiet = quiet(lab, &logs).await;
    let applied_before: Vec<usize> = logs.iter().map(|l| count_lines(l, APPLIED)).collect();
    let before = lab.api.last_event_id().await.map_err(text)?;
    let failures = Arc::new(Mutex::new(Vec::new()));
    let watched = Arc::new(Mutex::new(0usize));
    let watcher = tokio::spawn({
        let (edges, failures, watched) =
            (pairs(&edges), Arc::clone(&failures), Arc::clone(&watched));
        async move {
            let app = APPS[1];
            let started = Instant::now();
            // Bounded: one request per edge each 0.5 s, for the flapping and 3 s more.
            while started.elapsed() < FLAPPING + Duration::from_secs(3) {
                for (name, address) in &edges {
                    let reply = get_at(*address, app.hostname).await;
                    *watched.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                    match reply {
                        Ok(r) if r.is_from(app.origin) => {}
                        Ok(r) => failures
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!("{} via {name}: {}", app.hostname, r.status)),
                        Err(e) => failures
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(e),
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    let child = Lab::app_child(APPS[0].origin);
    let started = Instant::now();
    let mut flips = 0;
    let second = Duration::from_secs(1);
    let until = |n: u32| started + second * n;
    for n in 0..u32::try_from(FLAPPING.as_secs()).unwrap_or(30) {
        tokio::time::sleep_until(until(n).into()).await;
        let flipped = if n % 2 == 0 {
            lab.supervisor.stop(&mut lab.ledger, &child).await
        } else {
            lab.supervisor.restart(&mut lab.ledger, &child)
        };
        flipped.map_err(text)?;
        flips += 1;
    }
    // It ends running (the loop's last flip is a start when FLAPPING is even), whatever.
    lab.supervisor
        .restart(&mut lab.ledger, &child)
        .map_err(text)?;
    watcher.await.map_err(text)?;
    let applied: Vec<usize> = logs
        .iter()
        .zip(&applied_before)
        .map(|(l, before)| count_lines(l, APPLIED).saturating_sub(*before))
        .collect();
    let flapping = lab
        .api
        .events_after("origin.flapping", before)
        .await
        .map_err(text)?
        .len();
    let per_edge: Vec<String> = edges
        .iter()
        .zip(&applied)
        .map(|(e, n)| format!("{} {n}", e.name))
        .collect();
    let bound = FLAP_MAX_CHANGES + 1;
    if applied.iter().any(|n| *n > bound) {
        return Err(format!(
            "configurations applied during {} of {flips} flips: {} (at most {bound} each: \
             flap_max_changes {FLAP_MAX_CHANGES} a minute + 1); {flapping} origin.flapping \
             events; before: {quiet}",
            secs(FLAPPING),
            per_edge.join(", ")
        ));
    }
    let failures = failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let watched = *watched.lock().unwrap_or_else(PoisonError::into_inner);
    if !failures.is_empty() {
        return Err(format!(
            "{} of {watched} requests for {} failed while origin-a flapped: {}",
            failures.len(),
            APPS[1].hostname,
            first_failures(&failures)
        ));
    }
    // The damping lets the last state through within its window.
    let calm = Instant::now();
    let targets = pairs(&edges);
    wait_for(
        format!("{} to answer 200 again on every edge", APPS[0].hostname),
        Duration::from_secs(75),
        Duration::from_millis(500),
        || async {
            for (_, address) in &targets {
                if !get_at(*address, APPS[0].hostname)
                    .await
                    .ok()?
                    .is_from(APPS[0].origin)
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await
    .map_err(text)?;
    let dns = no_empty_answer(run, from, now())?;
    Ok(format!(
        "{flips} flips in {}: configurations applied per edge {} (at most {bound}); \
         {flapping} origin.flapping events; {watched}/{watched} requests for {} answered; \
         {} answers 200 again {} after the flapping; {dns}; before: {quiet}",
        secs(FLAPPING),
        per_edge.join(", "),
        APPS[1].hostname,
        APPS[0].hostname,
        secs(calm.elapsed()),
    ))
}

/// I. With SPEC §9's check timing (every 10 s, 3 failures; the control planes restarted
///    one after the other, which must not touch DNS), an edge's link goes down just before
///    its next HTTP check, as at T+0 of SPEC §9's timeline: its address must leave
///    PowerDNS within 23 s. (Cut at a random moment, up to one interval more passes before
///    the first check fails.) Last, so the lab's short timing need not come back.
async fn spec_timing(lab: &mut Lab, run: &mut Run) -> Step {
    let from = now();
    lab.timing = Timing::SPEC;
    lab.write_control_config().map_err(text)?;
    let leader = leader(lab, &lab.api).await?;
    let follower = other(lab, &leader)?;
    lab.supervisor
        .stop(&mut lab.ledger, &follower.name)
        .await
        .map_err(text)?;
    lab.supervisor
        .restart(&mut lab.ledger, &follower.name)
        .map_err(text)?;
    lab.wait_control_at(&follower).await.map_err(text)?;
    let api = lab.control_api(&follower).map_err(text)?;
    let term = Instant::now();
    lab.supervisor
        .stop(&mut lab.ledger, &leader.control.name)
        .await
        .map_err(text)?;
    let (_, handover) = new_leader(
        &api,
        leader.event,
        &leader.instance,
        term,
        Duration::from_secs(15),
    )
    .await?;
    lab.supervisor
        .restart(&mut lab.ledger, &leader.control.name)
        .map_err(text)?;
    lab.wait_control_at(&leader.control).await.map_err(text)?;

    let edges = serving(&api, run).await?;
    if edges.len() < 2 {
        return Err(format!(
            "only {} edge serves; cutting it would leave none",
            edges.len()
        ));
    }
    let victim = edges
        .iter()
        .find(|e| Some(&e.id) == run.created.as_ref())
        .or_else(|| {
            edges
                .iter()
                .filter(|e| e.provider == "lab")
                .max_by_key(|e| &e.created_at)
        })
        .or(edges.last())
        .cloned()
        .ok_or("no edge to cut")?;
    let port = victim
        .hub_port()
        .ok_or_else(|| format!("{} has no port on the bridge", victim.name))?;
    // SPEC §9's timeline starts at the first check that fails (T+0): the link goes down
    // just before the edge's next HTTP check, found from when the last one was recorded.
    let database = &ha(lab)?.database_url;
    let id = victim.id.replace('\'', "''");
    let last_check = format!(
        "SELECT coalesce(max(id), 0) FROM health_checks \
         WHERE edge_node_id = '{id}' AND check_name = 'http'"
    );
    let seen = postgres::psql(database, &last_check).await.map_err(text)?;
    let checked = wait_for(
        format!("an HTTP check of {}", victim.name),
        Duration::from_secs(u64::from(Timing::SPEC.threshold) * Timing::SPEC.interval),
        Duration::from_millis(100),
        || async {
            let now = postgres::psql(database, &last_check).await.ok()?;
            (now != seen).then(Instant::now)
        },
    )
    .await
    .map_err(text)?;
    let interval = Duration::from_secs(Timing::SPEC.interval);
    tokio::time::sleep_until((checked + interval - CUT_BEFORE_CHECK).into()).await;
    net::ip(&["-n", HUB, "link", "set", &port, "down"])
        .await
        .map_err(text)?;
    let cut_at = now();
    run.cut.push(victim.address);
    let sampler = &run.sampler;
    let gone = wait_for(
        format!(
            "{}'s address {} to leave PowerDNS",
            victim.name, victim.address
        ),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { sampler.gone_since(victim.address, cut_at) },
    )
    .await
    .map_err(text)?;
    let removal = gone.duration_since(cut_at).unwrap_or_default();
    let cut_second = cut_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let first_failure = postgres::psql(
        database,
        &format!(
            "SELECT coalesce(min(checked_at), 0) FROM health_checks WHERE edge_node_id = \
             '{id}' AND check_name = 'http' AND status <> 'success' AND checked_at >= \
             {cut_second}"
        ),
    )
    .await
    .map_err(text)?;
    let from_failure = match first_failure.trim().parse::<u64>() {
        Ok(at) if at > 0 => format!(
            "{} after its first failed HTTP check, whole seconds",
            secs(
                gone.duration_since(UNIX_EPOCH + Duration::from_secs(at))
                    .unwrap_or_default()
            )
        ),
        _ => "no failed HTTP check recorded".to_owned(),
    };
    let dns = no_empty_answer(run, from, now());
    let goal = if handover <= CLEAN_TAKEOVER_GOAL {
        "met"
    } else {
        "missed"
    };
    let figure = format!(
        "checks every {} s, {} failures: {}'s address left PowerDNS {} after its link went \
         down {} before its next HTTP check ({from_failure}; limit {}); rolling restart onto \
         this timing: {} led {} after \
         SIGTERM to {} (goal {} {goal})",
        Timing::SPEC.interval,
        Timing::SPEC.threshold,
        victim.name,
        secs(removal),
        secs(CUT_BEFORE_CHECK),
        secs(SPEC_REMOVAL),
        follower.name,
        secs(handover),
        leader.control.name,
        secs(CLEAN_TAKEOVER_GOAL),
    );
    if removal > SPEC_REMOVAL {
        return Err(format!("too slow: {figure}"));
    }
    Ok(format!("{figure}; {}", dns?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edge_is_cut_at_its_bridge_port() {
        let mut edge = Edge {
            id: "edg_1".into(),
            name: "edge2".into(),
            address: Ipv4Addr::new(10, 99, 0, 12),
            provider: "manual".into(),
            instance_id: None,
            created_at: String::new(),
        };
        assert_eq!(edge.hub_port().as_deref(), Some("p-edge2"));
        edge.name = "edge-lab-a-01".into();
        assert_eq!(edge.hub_port(), None);
        edge.provider = "lab".into();
        edge.instance_id = Some("kl-vps-3".into());
        assert_eq!(edge.hub_port().as_deref(), Some("kl-vps-3"));
    }

    #[test]
    fn clock_reads_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(86_400_000 * 3 + 3_723_045);
        assert_eq!(clock(t), "01:02:03.045");
    }
}
