//! `kokoa-lab check`: the scenario, one asserted step at a time, each with its figure.

use std::{
    fs,
    io::Write,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::{
    Error,
    lab::{Lab, wait_for},
    net::{self, Reply},
    plan::{self, APPS, Host, Role},
    tls,
};

/// The longest the WireGuard check may take to move an edge out of DNS, or back.
const WIREGUARD_LIMIT: Duration = Duration::from_secs(45);
/// Polling period over a longer wait: 4 requests a second stay under an edge's per-client
/// rate limit (10/s) for as long as it takes.
const SLOW_POLL: Duration = Duration::from_millis(250);
/// Polling period while waiting for a change to reach an edge.
const POLL: Duration = Duration::from_millis(20);
/// How fast a change should reach every edge (SPEC §4); slower is reported, not failed.
const CONVERGE_GOAL: Duration = Duration::from_secs(1);
/// The longest a change may take to reach an edge.
const CONVERGE_LIMIT: Duration = Duration::from_secs(15);
/// After a control-plane restart an edge may be in its back-off (up to 30 s).
const RECONNECT_LIMIT: Duration = Duration::from_secs(45);
/// Edges allow 10 requests/s per client with a burst of 20 (SPEC §10.4); waiting this long
/// between steps refills the burst, so a step's polling is not answered 429.
const RATE_REFILL: Duration = Duration::from_secs(2);

/// The result of a step: its figure, or why it failed.
pub(crate) type Step = Result<String, String>;

/// Prints a step's line, and keeps the first failure.
pub(crate) fn report(
    out: &mut dyn Write,
    number: impl std::fmt::Display,
    name: &'static str,
    result: Step,
    first_failure: &mut Option<Error>,
) {
    match result {
        Ok(figure) => {
            let _ = writeln!(out, "ok  {number} {name}: {figure}");
        }
        Err(message) => {
            let _ = writeln!(out, "FAIL {number} {name}: {message}");
            first_failure.get_or_insert(Error::Step {
                step: number.to_string(),
                name,
                message,
            });
        }
    }
}

/// Runs every step in order, printing one line each. A failed step does not stop the
/// others (one run shows every problem); the first failure is returned.
pub async fn run(lab: &mut Lab, out: &mut dyn Write) -> Result<(), Error> {
    let steps: [(u8, &'static str); 12] = [
        (1, "routing"),
        (2, "convergence"),
        (3, "isolation"),
        (4, "control plane down"),
        (5, "bad config refused"),
        (6, "origin down"),
        (7, "certificates"),
        (8, "application check"),
        (9, "WireGuard check"),
        (10, "key rotation"),
        (11, "keep-alive and WebSocket"),
        (12, "metrics in Prometheus"),
    ];
    let mut first_failure = None;
    for (number, name) in steps {
        tokio::time::sleep(RATE_REFILL).await;
        let result = match number {
            1 => routing().await,
            2 => convergence(lab).await,
            3 => isolation(lab).await,
            4 => control_plane_down(lab).await,
            5 => bad_config(lab).await,
            6 => origin_down(lab).await,
            7 => certificates(lab).await,
            8 => application_down(lab).await,
            9 => wireguard_path(lab).await,
            10 => key_rotation(lab).await,
            11 => keep_alive_and_websocket(lab).await,
            _ => metrics(lab).await,
        };
        report(out, number, name, result, &mut first_failure);
    }
    first_failure.map_or(Ok(()), Err)
}

fn edges() -> Vec<Host> {
    plan::hosts(Role::Edge).collect()
}

async fn get(edge: Host, host: &str) -> Result<Reply, String> {
    get_at(edge.address, host).await
}

/// `GET https://HOST/` through the edge at `edge`, from the client.
pub(crate) async fn get_at(edge: Ipv4Addr, host: &str) -> Result<Reply, String> {
    net::https_via(edge, host, "/")
        .await
        .map_err(|e| e.to_string())
}

/// The lab's two edges, as (name, address).
fn fixed_edges() -> Vec<(String, Ipv4Addr)> {
    edges()
        .into_iter()
        .map(|e| (e.name.to_owned(), e.address))
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// 1. Both host names through each edge, with the client's address in X-Forwarded-For;
///    an unknown host name gets 404.
async fn routing() -> Step {
    let client = plan::host("client").address;
    let mut times = Vec::new();
    for edge in edges() {
        for app in APPS {
            let reply = get(edge, app.hostname).await?;
            let expected = format!(
                "app={} host={} xff={client} proto=https\n",
                app.origin, app.hostname
            );
            if reply.status != 200 || reply.body != expected {
                return Err(format!(
                    "{} via {}: expected 200 {expected:?}, got {} {:?}",
                    app.hostname, edge.name, reply.status, reply.body
                ));
            }
            times.push(reply.elapsed);
        }
        let unknown = get(edge, "unknown.hoge.test").await?;
        if unknown.status != 404 {
            return Err(format!(
                "unknown.hoge.test via {}: expected 404, got {}",
                edge.name, unknown.status
            ));
        }
    }
    times.sort();
    Ok(format!(
        "{} answers with xff={client}, unknown host 404 on both edges, median curl {} ms",
        times.len(),
        times[times.len() / 2].as_millis()
    ))
}

/// Adds a route and measures, for each edge, the time from the API's 201 to the first
/// request the route's app answers. Meanwhile the app's existing route must keep
/// answering on every edge: applying a change must not interrupt what already works.
async fn converge(lab: &Lab, hostname: &str, origin: &str, limit: Duration) -> Step {
    converge_on(lab, hostname, origin, &fixed_edges(), limit).await
}

/// [`converge`] through `edges` (name, address).
pub(crate) async fn converge_on(
    lab: &Lab,
    hostname: &str,
    origin: &str,
    edges: &[(String, Ipv4Addr)],
    limit: Duration,
) -> Step {
    let app = APPS
        .iter()
        .find(|a| a.origin == origin)
        .ok_or("no such app")?;
    let id = lab.origins.get(origin).ok_or("no such origin")?;
    lab.api
        .add_route(hostname, id, app.port)
        .await
        .map_err(|e| e.to_string())?;
    let created = Instant::now();
    served_on(hostname, origin, edges, created, limit)
        .await
        .map(|served| served.figure)
}

/// How a new route reached the edges.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    /// Each edge's time, e.g. `edge1 0.21 s, edge2 0.19 s`, and the goal if missed.
    pub figure: String,
    /// Each edge's time alone.
    pub times: String,
    /// The slowest edge's.
    pub slowest: Duration,
}

/// Measures, for each of `edges`, the time from `created` to the first request for
/// `hostname` that `origin`'s app answers, while `origin`'s existing route must keep
/// answering.
pub(crate) async fn served_on(
    hostname: &str,
    origin: &str,
    edges: &[(String, Ipv4Addr)],
    created: Instant,
    limit: Duration,
) -> Result<Served, String> {
    let app = APPS
        .iter()
        .find(|a| a.origin == origin)
        .ok_or("no such app")?;
    let mut polls = JoinSet::new();
    for (name, address) in edges.iter().cloned() {
        let hostname = hostname.to_owned();
        let origin = origin.to_owned();
        polls.spawn(async move {
            let what = format!("{hostname} on {name}");
            wait_for(what, limit, POLL, || async {
                let reply = get_at(address, &hostname).await.ok()?;
                reply.is_from(&origin).then(|| created.elapsed())
            })
            .await
            .map(|took| (name, took))
        });
    }
    // While the edges and the origin apply the change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut interrupted = Vec::new();
    for (name, address) in edges {
        let reply = get_at(*address, app.hostname).await?;
        if !reply.is_from(origin) {
            interrupted.push(format!(
                "{} via {name} answered {} after {} (curl gives up after 5 s)",
                app.hostname,
                reply.status,
                secs(reply.elapsed)
            ));
        }
    }
    let mut figures = Vec::new();
    let mut slowest = Duration::ZERO;
    for joined in polls.join_all().await {
        let (name, took) = joined.map_err(|e| e.to_string())?;
        slowest = slowest.max(took);
        figures.push(format!("{name} {}", secs(took)));
    }
    figures.sort();
    let times = figures.join(", ");
    if slowest > CONVERGE_GOAL {
        figures.push(format!("(goal {} missed)", secs(CONVERGE_GOAL)));
    }
    if !interrupted.is_empty() {
        return Err(format!(
            "the existing route stopped answering while the change was applied: {}; \
             the new route arrived after {}",
            interrupted.join(", "),
            figures.join(", ")
        ));
    }
    Ok(Served {
        figure: figures.join(", "),
        times,
        slowest,
    })
}

/// 2. A new route is served by both edges; the time from 201 to the first answer.
async fn convergence(lab: &Lab) -> Step {
    converge(lab, "new.hoge.test", "origin-a", CONVERGE_LIMIT).await
}

/// The tunnel addresses of origin `origin` and of the edges in its subnet.
async fn tunnel_addresses(lab: &Lab, origin: &str) -> Result<(Ipv4Addr, Vec<Ipv4Addr>), String> {
    let id = lab.origins.get(origin).ok_or("no such origin")?;
    let api = |path: String| async move {
        lab.api
            .json(Method::GET, &path, None, StatusCode::OK)
            .await
            .map_err(|e| e.to_string())
    };
    let view = api(format!("/api/v1/origins/{id}")).await?;
    let origin_ip = parse_ip(&view["wireguard_ip"])?;
    let edges = api("/api/v1/edge-nodes".into()).await?;
    let mut edge_ips = Vec::new();
    for edge in edges["edge_nodes"].as_array().into_iter().flatten() {
        for tunnel in edge["tunnels"].as_array().into_iter().flatten() {
            if tunnel["origin_id"].as_str() == Some(id) {
                edge_ips.push(parse_ip(&tunnel["wireguard_ip"])?);
            }
        }
    }
    if edge_ips.len() != 2 {
        return Err(format!(
            "expected 2 edge tunnels to {origin}, the API lists {edge_ips:?}"
        ));
    }
    Ok((origin_ip, edge_ips))
}

fn parse_ip(value: &Value) -> Result<Ipv4Addr, String> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{value} is not an IPv4 address"))
}

/// A packet an isolated host must not get through: ping, or TCP to a port.
#[derive(Debug, Clone, Copy)]
enum Probe {
    Ping(Ipv4Addr),
    Tcp(Ipv4Addr, u16),
}

/// Runs every probe from `ns` at once; the ones that got an answer.
async fn reachable(ns: &str, probes: &[Probe]) -> Vec<String> {
    let mut set = JoinSet::new();
    for &probe in probes {
        let ns = ns.to_owned();
        set.spawn(async move {
            let through = match probe {
                Probe::Ping(ip) => net::ping(&ns, ip).await.is_some(),
                Probe::Tcp(ip, port) => net::tcp_connects(&ns, ip, port).await,
            };
            through.then(|| format!("{ns} -> {probe:?}"))
        });
    }
    set.join_all().await.into_iter().flatten().collect()
}

/// A port no route or service declares, where origin-a also serves on 0.0.0.0.
const UNDECLARED_PORT: u16 = 9100;

/// 3. Nothing in origin-a's subnet answers origin-b; from the client no origin app and no
///    tunnel address answers except through an edge. Origin-a's firewall lets edge1 reach
///    the declared port through the tunnel (redirected to 127.0.0.1 by its nftables table)
///    but not a service on 0.0.0.0 that no route declares (which answers inside origin-a).
///    Then origin-b and the client play attackers that route the tunnel networks into
///    origin-b's tunnel or at edge1's public address: origin-a must stay out of reach
///    (the edge forwards nothing between interfaces). An edge answering for its own tunnel
///    address then is reported, not failed: it is the same nginx as on its public address.
async fn isolation(lab: &Lab) -> Step {
    let (a_ip, a_edges) = tunnel_addresses(lab, "origin-a").await?;
    let (b_ip, _) = tunnel_addresses(lab, "origin-b").await?;
    // The probes could fail for a dull reason (a wrong address, ping missing): the edge
    // itself must reach origin-a over the tunnel.
    let edge1 = plan::host("edge1");
    let control_rtt = net::ping(&edge1.netns(), a_ip)
        .await
        .ok_or_else(|| format!("control probe failed: edge1 cannot ping origin-a's {a_ip}"))?;
    let a_ns = plan::host("origin-a").netns();
    let _undeclared = net::serve_app_in(&a_ns, "origin-a-undeclared", UNDECLARED_PORT)
        .map_err(|e| e.to_string())?;
    let undeclared = Probe::Tcp(a_ip, UNDECLARED_PORT);
    let declared = Probe::Tcp(a_ip, APPS[0].port);
    if reachable(&a_ns, &[undeclared]).await.is_empty() {
        return Err(format!(
            "control probe failed: {a_ip}:{UNDECLARED_PORT} does not answer inside origin-a"
        ));
    }
    if reachable(&edge1.netns(), &[declared]).await.is_empty() {
        return Err(format!(
            "control probe failed: edge1 cannot reach origin-a's declared {declared:?}"
        ));
    }
    let firewall_leak = reachable(&edge1.netns(), &[undeclared]).await;
    // The declared port answered through the kernel's redirect, the origin agent's default.
    let redirect = net::ip(&[
        "netns",
        "exec",
        &a_ns,
        "nft",
        "list",
        "chain",
        "inet",
        "kokoa",
        "tunnel_redirect",
    ])
    .await
    .map_err(|e| format!("origin-a forwards nothing in the kernel: {e}"))?;
    if !redirect.contains("dnat ip to 127.0.0.1") {
        return Err(format!(
            "origin-a's redirect chain sends nothing to 127.0.0.1: {redirect}"
        ));
    }

    let origin_a = [Probe::Ping(a_ip), Probe::Tcp(a_ip, 8080)];
    let mut edges_in_a: Vec<Probe> = a_edges.iter().map(|&ip| Probe::Ping(ip)).collect();
    edges_in_a.extend(
        a_edges
            .iter()
            .flat_map(|&ip| [Probe::Tcp(ip, 80), Probe::Tcp(ip, 443)]),
    );
    let mut client_probes = vec![
        Probe::Ping(a_ip),
        Probe::Tcp(a_ip, 8080),
        Probe::Ping(b_ip),
        Probe::Tcp(b_ip, 8000),
    ];
    for app in APPS {
        client_probes.push(Probe::Tcp(plan::host(app.origin).address, app.port));
    }

    let b = plan::host("origin-b").netns();
    let client = plan::host("client").netns();
    let mut leaks = firewall_leak;
    leaks.extend(reachable(&b, &[&origin_a[..], &edges_in_a].concat()).await);
    leaks.extend(reachable(&client, &client_probes).await);
    let plain = origin_a.len() + edges_in_a.len() + client_probes.len();

    let (pool, len) = plan::SUBNET_POOL;
    let a_net = format!("{}/24", Ipv4Addr::from(u32::from(a_ip) & !0xff));
    let pool_net = format!("{pool}/{len}");
    let b_iface = net::interface_in(&b, pool, len)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("origin-b has no interface with an address in {pool_net}"))?;
    let via = edge1.address.to_string();
    let mut noted = Vec::new();
    for (ns, network, route) in [
        (&b, &a_net, ["dev", b_iface.as_str()]),
        (&b, &a_net, ["via", via.as_str()]),
        (&client, &pool_net, ["via", via.as_str()]),
    ] {
        net::add_route(ns, network, &route)
            .await
            .map_err(|e| e.to_string())?;
        let must_fail = if ns == &client {
            &client_probes[..]
        } else {
            &origin_a[..]
        };
        leaks.extend(reachable(ns, must_fail).await);
        for seen in reachable(ns, &edges_in_a).await {
            noted.push(format!("{seen} ({} {})", route[0], route[1]));
        }
        let _ = net::ip(&["-n", ns, "route", "del", network]).await;
    }
    if !leaks.is_empty() {
        return Err(format!("reachable but must not be: {}", leaks.join(", ")));
    }
    let mut figure = format!(
        "{plain} direct probes and {} attacker-routed probes all failed; control ping \
         edge1 -> origin-a {:.2} ms; origin-a's firewall: edge1 -> {a_ip}:{UNDECLARED_PORT} \
         (0.0.0.0, undeclared) dropped, :{} answers (redirected to 127.0.0.1 by the kernel)",
        origin_a.len() * 2 + client_probes.len(),
        control_rtt.as_secs_f64() * 1000.0,
        APPS[0].port
    );
    if !noted.is_empty() {
        figure.push_str(&format!(
            "; note: with attacker routes an edge answers on its own tunnel address: {}",
            noted.join(", ")
        ));
    }
    Ok(figure)
}

/// 4. With the control plane stopped (both, with `--chaos`), 200 requests over both edges
///    all succeed; after a restart on the same data directory, a change converges again.
async fn control_plane_down(lab: &mut Lab) -> Step {
    let controls = lab.control_names();
    lab.supervisor
        .stop_all(&mut lab.ledger, &controls)
        .await
        .map_err(|e| e.to_string())?;
    if lab.api.healthy().await {
        return Err("the control plane still answers after being stopped".into());
    }
    let started = Instant::now();
    let mut set = JoinSet::new();
    for edge in edges() {
        set.spawn(async move {
            let mut failures = Vec::new();
            for i in 0..100 {
                let app = APPS[i % APPS.len()];
                match get(edge, app.hostname).await {
                    Ok(r) if r.is_from(app.origin) => {}
                    Ok(r) => failures.push(format!(
                        "{} via {}: {}",
                        app.hostname,
                        edge.name,
                        r.outcome()
                    )),
                    Err(e) => failures.push(e),
                }
                // Stay under the edge's 10 requests/s per client.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            failures
        });
    }
    let failures: Vec<String> = set.join_all().await.into_iter().flatten().collect();
    let served_for = started.elapsed();
    if !failures.is_empty() {
        return Err(format!(
            "{} of 200 requests failed while the control plane was down: {}",
            failures.len(),
            first_failures(&failures)
        ));
    }
    for control in &controls {
        lab.supervisor
            .restart(&mut lab.ledger, control)
            .map_err(|e| e.to_string())?;
    }
    let restarted = Instant::now();
    lab.wait_control().await.map_err(|e| e.to_string())?;
    let up_in = restarted.elapsed();
    let converged = converge(lab, "after.fuga.test", "origin-b", RECONNECT_LIMIT).await?;
    Ok(format!(
        "200/200 answered in {} while down; restarted in {}; new route after restart: {converged}",
        secs(served_for),
        secs(up_in)
    ))
}

/// The number of lines of `log` that contain `needle`.
pub(crate) fn count_lines(log: &Path, needle: &str) -> usize {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Undoes the sabotage of an edge's nginx log file even when the step fails.
struct Sabotage {
    log: PathBuf,
    saved: PathBuf,
}

impl Sabotage {
    /// Replaces nginx's `access.log` by a directory: `nginx -t` must open every log file,
    /// so it rejects any new configuration, while the running nginx keeps its open file
    /// and serves on.
    fn new(nginx_prefix: &Path) -> Result<Self, String> {
        let log = nginx_prefix.join("logs/access.log");
        let saved = nginx_prefix.join("logs/access.log.lab-saved");
        fs::rename(&log, &saved).map_err(|e| format!("cannot move {}: {e}", log.display()))?;
        fs::create_dir(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        Ok(Self { log, saved })
    }
}

impl Drop for Sabotage {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.log);
        let _ = fs::rename(&self.saved, &self.log);
    }
}

const REFUSED: &str = "configuration refused";
/// What an edge agent logs for each configuration it applied (nginx reloaded).
pub(crate) const APPLIED: &str = "configuration applied";

/// 5. A configuration edge1's nginx rejects is refused; the previous one keeps serving;
///    edge2 takes it; once edge1 can apply again, the next change reaches it.
async fn bad_config(lab: &mut Lab) -> Step {
    let log = lab.supervisor.log_path("edge1");
    let edge1 = plan::host("edge1");
    let edge2 = plan::host("edge2");
    let refused_before = count_lines(&log, REFUSED);
    let sabotage = Sabotage::new(&lab.dir.join("edge1/nginx"))?;
    let origin_a = lab.origins.get("origin-a").cloned().unwrap_or_default();
    let bad = lab
        .api
        .add_route("bad.hoge.test", &origin_a, 8080)
        .await
        .map_err(|e| e.to_string())?;
    let created = Instant::now();
    let refused_in = wait_for(
        format!("edge1 to log \"{REFUSED}\" in {}", log.display()),
        CONVERGE_LIMIT,
        POLL,
        || async { (count_lines(&log, REFUSED) > refused_before).then(|| created.elapsed()) },
    )
    .await
    .map_err(|e| e.to_string())?;
    // nginx's own complaint, which ends the agent's log line.
    let reason = fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .rfind(|l| l.contains(REFUSED))
        .and_then(|l| l.rsplit_once("[emerg]"))
        .map_or_else(String::new, |(_, why)| why.trim().to_owned());
    // Bounded wait rather than one request: step 2 already fails when a change interrupts
    // a route; here the question is whether edge1 serves its previous configuration.
    let mut old_routes = Vec::new();
    for app in APPS {
        let asked = Instant::now();
        wait_for(
            format!("{} to answer on edge1 after the refusal", app.hostname),
            RECONNECT_LIMIT,
            Duration::from_millis(200),
            || async {
                get(edge1, app.hostname)
                    .await
                    .ok()?
                    .is_from(app.origin)
                    .then_some(())
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        old_routes.push(format!("{} {}", app.hostname, secs(asked.elapsed())));
    }
    let on_edge1 = get(edge1, "bad.hoge.test").await?;
    if on_edge1.status != 404 {
        return Err(format!(
            "edge1 serves the refused configuration: bad.hoge.test answered {}",
            on_edge1.status
        ));
    }
    let on_edge2 = wait_for("bad.hoge.test on edge2", CONVERGE_LIMIT, POLL, || async {
        get(edge2, "bad.hoge.test")
            .await
            .ok()?
            .is_from("origin-a")
            .then_some(())
    })
    .await;
    on_edge2.map_err(|e| e.to_string())?;

    drop(sabotage);
    let applied_before = count_lines(&log, APPLIED);
    lab.api
        .delete_route(&bad)
        .await
        .map_err(|e| e.to_string())?;
    wait_for(
        "edge1 to apply the next configuration",
        CONVERGE_LIMIT,
        POLL,
        || async { (count_lines(&log, APPLIED) > applied_before).then_some(()) },
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "edge1 refused it after {} and kept serving (old routes 200: {}; new one 404), \
         edge2 served it, edge1 applied the next change; nginx said: {reason}",
        secs(refused_in),
        old_routes.join(", ")
    ))
}

/// 6. With origin-a's app stopped its routes answer Kokoa's 503 page while origin-b's
///    answer 200; with the app back, 200 again.
async fn origin_down(lab: &mut Lab) -> Step {
    origin_down_at(lab, &fixed_edges()).await
}

/// origin-a's app stops: every one of `edges` answers 503 with Kokoa's page for its route
/// while origin-b's still answers 200; it restarts: 200 again.
pub(crate) async fn origin_down_at(lab: &mut Lab, edges: &[(String, Ipv4Addr)]) -> Step {
    let child = Lab::app_child(APPS[0].origin);
    lab.supervisor
        .stop(&mut lab.ledger, &child)
        .await
        .map_err(|e| e.to_string())?;
    let to_503 = wait_unavailable(edges, POLL).await?;
    lab.supervisor
        .restart(&mut lab.ledger, &child)
        .map_err(|e| e.to_string())?;
    let restarted = Instant::now();
    wait_served(edges, POLL).await?;
    Ok(format!(
        "503 with the Kokoa page after {}, {} still 200, back to 200 {} after the restart",
        timings(&to_503),
        APPS[1].hostname,
        secs(restarted.elapsed())
    ))
}

/// Waits until every one of `edges` answers 503 with Kokoa's page for origin-a's route
/// (asking every `poll`), checking that origin-b's still answers 200 there; returns the time
/// each took, from the call.
async fn wait_unavailable(
    edges: &[(String, Ipv4Addr)],
    poll: Duration,
) -> Result<Vec<(String, Duration)>, String> {
    let (app_a, app_b) = (APPS[0], APPS[1]);
    let started = Instant::now();
    let mut took = Vec::new();
    for (name, edge) in edges {
        let at = wait_for(
            format!("{} to answer 503 on {name}", app_a.hostname),
            CONVERGE_LIMIT,
            poll,
            || async {
                let r = get_at(*edge, app_a.hostname).await.ok()?;
                (r.status == 503 && r.body.contains("Kokoa Proxy")).then(|| started.elapsed())
            },
        )
        .await
        .map_err(|e| e.to_string())?;
        took.push((name.clone(), at));
        let other = get_at(*edge, app_b.hostname).await?;
        if !other.is_from(app_b.origin) {
            return Err(format!(
                "{} via {name} while origin-a's routes answer 503: {} {:?}",
                app_b.hostname, other.status, other.body
            ));
        }
    }
    Ok(took)
}

/// Waits until every one of `edges` has origin-a's app answer its route again.
async fn wait_served(edges: &[(String, Ipv4Addr)], poll: Duration) -> Result<(), String> {
    let app_a = APPS[0];
    for (name, edge) in edges {
        wait_for(
            format!("{} to answer 200 again on {name}", app_a.hostname),
            CONVERGE_LIMIT,
            poll,
            || async {
                get_at(*edge, app_a.hostname)
                    .await
                    .ok()?
                    .is_from(app_a.origin)
                    .then_some(())
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The first five of `failures`, for a step's error line.
pub(crate) fn first_failures(failures: &[String]) -> String {
    failures
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ")
}

/// `edge1 0.02 s, edge2 0.05 s`.
fn timings(took: &[(String, Duration)]) -> String {
    took.iter()
        .map(|(name, d)| format!("{name} {}", secs(*d)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// 8. origin-a's application stops answering its origin agent's application URL while its
///    port and service check stay up: the edges' application checks through their tunnels
///    fail, and every edge answers 503 with Kokoa's page for origin-a's route within
///    3 × the check interval (plus the heartbeat, the judge and the edges' reload), while
///    origin-b's still answers 200; it answers again: 200 again.
async fn application_down(lab: &mut Lab) -> Step {
    let interval = Duration::from_secs(crate::vps::APPLICATION_INTERVAL);
    // Three checks fail after at most 3 intervals; the verdict's heartbeat leaves at once,
    // the judge runs each second and the edges reload within about two more.
    let limit = interval * 3 + Duration::from_secs(4);
    let flag = lab.app_down_file(APPS[0].origin);
    fs::write(&flag, b"").map_err(|e| format!("cannot create {}: {e}", flag.display()))?;
    let to_503 = wait_unavailable(&fixed_edges(), SLOW_POLL).await;
    // Whatever happened, the application answers again.
    fs::remove_file(&flag).map_err(|e| format!("cannot remove {}: {e}", flag.display()))?;
    let to_503 = to_503?;
    let recovered = Instant::now();
    wait_served(&fixed_edges(), SLOW_POLL).await?;
    let back = recovered.elapsed();
    let slowest = to_503.iter().map(|(_, t)| *t).max().unwrap_or_default();
    if slowest > limit {
        return Err(format!(
            "503 only after {}: more than {} (3 checks every {} and the round to the edges)",
            timings(&to_503),
            secs(limit),
            secs(interval)
        ));
    }
    Ok(format!(
        "checks every {}: 503 with the Kokoa page after {} (limit {}), {} still 200, back to \
         200 {} after the application answered again",
        secs(interval),
        timings(&to_503),
        secs(limit),
        APPS[1].hostname,
        secs(back)
    ))
}

/// 9. edge1's WireGuard path breaks (its tunnel interfaces down) while its HTTPS `/health`
///    still answers: its pings to the origins go unanswered, it reports its tunnels down
///    after 3 misses while edge2's stay up, and the control plane takes edge1's records
///    out of PowerDNS (SPEC §8.4: tunnel down, out of DNS at once). The path comes back:
///    edge1's records return.
async fn wireguard_path(lab: &mut Lab) -> Step {
    let edge1 = plan::host("edge1");
    let (ns, dead) = (edge1.netns(), edge1.address);
    let dns = lab.tls.dns.dns_address();
    let in_dns = |present: bool| async move {
        let mut all = true;
        for app in APPS {
            all &= crate::failover::served_at(dns, app.hostname)
                .await
                .contains(&dead)
                == present;
        }
        all.then_some(())
    };
    if in_dns(true).await.is_none() {
        return Err("edge1 is not in PowerDNS before its tunnels are cut".into());
    }
    let (pool, len) = plan::SUBNET_POOL;
    let tunnels = net::interfaces_in(&ns, pool, len)
        .await
        .map_err(|e| e.to_string())?;
    if tunnels.is_empty() {
        return Err(format!("edge1 has no tunnel interface in {pool}/{len}"));
    }
    let set = |state: &'static str| {
        let (ns, tunnels) = (ns.clone(), tunnels.clone());
        async move {
            for iface in &tunnels {
                net::ip(&["-n", &ns, "link", "set", iface, state])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }
    };
    set("down").await?;
    let cut = Instant::now();
    let removed = wait_for(
        "edge1's records to leave PowerDNS after its tunnels broke",
        WIREGUARD_LIMIT,
        Duration::from_millis(100),
        || in_dns(false),
    )
    .await;
    let took = cut.elapsed();
    let health = net::https_via(dead, &dead.to_string(), "/health").await;
    set("up").await?;
    removed.map_err(|e| e.to_string())?;
    match health {
        Ok(r) if r.status == 200 => {}
        other => {
            return Err(format!(
                "edge1's own /health did not answer 200 while only its tunnels were down: \
                 {other:?}"
            ));
        }
    }
    let back = Instant::now();
    wait_for(
        "edge1's records to return to PowerDNS",
        WIREGUARD_LIMIT,
        Duration::from_millis(100),
        || in_dns(true),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "{} tunnels of edge1 down, its /health still 200: out of PowerDNS after {} (3 \
         unanswered pings at 5 s heartbeats); back in {} after the tunnels came up",
        tunnels.len(),
        secs(took),
        secs(back.elapsed())
    ))
}

/// The longest one key rotation may take.
const ROTATION_LIMIT: Duration = Duration::from_secs(60);

/// 10. edge1's key and then origin-a's key are rotated while a stream of requests goes
///     through both edges to both origins: every request is answered by its origin (goal of
///     SPEC §10.3: no traffic lost), the API shows the new keys, and each node holds the
///     private half the control plane never saw.
async fn key_rotation(lab: &mut Lab) -> Step {
    let api = |method: Method, path: String, want: StatusCode| {
        let api = &lab.api;
        async move {
            api.json(method, &path, None, want)
                .await
                .map_err(|e| e.to_string())
        }
    };
    let edge1 = plan::host("edge1").address.to_string();
    let listed = api(Method::GET, "/api/v1/edge-nodes".into(), StatusCode::OK).await?;
    let edge_id = listed["edge_nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["public_ip"].as_str() == Some(edge1.as_str()) && e["status"] != "deleted")
        .and_then(|e| e["id"].as_str())
        .ok_or("edge1 is not listed by the API")?
        .to_owned();
    let origin_id = lab
        .origins
        .get(APPS[0].origin)
        .ok_or("no origin-a")?
        .clone();
    let rotations = [
        ("edge1", format!("/api/v1/edge-nodes/{edge_id}")),
        (APPS[0].origin, format!("/api/v1/origins/{origin_id}")),
    ];
    let mut tally = Tally {
        start: Instant::now(),
        requests: 0,
        failures: Vec::new(),
    };
    let mut took = Vec::new();
    let mut shown = Vec::new();
    // Bounded: each rotation at most ROTATION_LIMIT, four requests a round (each edge sees
    // two per 250 ms, under its 10 per second).
    for (who, path) in &rotations {
        tally.round().await;
        let started = api(
            Method::POST,
            format!("{path}/rotate-keys"),
            StatusCode::ACCEPTED,
        )
        .await?;
        let began = Instant::now();
        let old = started["rotations"][0]["public_key"].clone();
        if !old.is_string() {
            return Err(format!("rotating {who}'s key started nothing: {started}"));
        }
        loop {
            tally.round().await;
            // Done when the node shows a key of its own making other than the old one.
            let node = api(Method::GET, path.clone(), StatusCode::OK).await?;
            let key = &node["wireguard_public_key"];
            if key.is_string() && *key != old {
                took.push((who.to_string(), began.elapsed()));
                shown.push((who.to_string(), key.as_str().unwrap_or_default().to_owned()));
                break;
            }
            if began.elapsed() > ROTATION_LIMIT {
                return Err(format!(
                    "{who}'s keys not rotated after {} ({} requests, {} failed)",
                    secs(ROTATION_LIMIT),
                    tally.requests,
                    tally.failures.len()
                ));
            }
        }
    }
    // The old keys are gone everywhere now: traffic still flows on the new ones.
    let after = Instant::now();
    while after.elapsed() < Duration::from_secs(3) {
        tally.round().await;
    }
    let Tally {
        requests, failures, ..
    } = tally;
    if !failures.is_empty() {
        return Err(format!(
            "{} of {requests} requests failed during the rotations: {}",
            failures.len(),
            first_failures(&failures)
        ));
    }
    for (who, key) in &shown {
        holds_its_key(lab, who, key)?;
    }
    let took: Vec<String> = took
        .iter()
        .map(|(who, d)| format!("{who} in {}", secs(*d)))
        .collect();
    Ok(format!(
        "rotated {}; 0 of {requests} requests through both edges to both origins failed; \
         each node holds the one private key whose public half the API shows, and its last \
         configuration from the control plane holds no private key",
        took.join(", ")
    ))
}

/// Node `name` keeps exactly one WireGuard key now, whose public half is `shown`, and the
/// configuration it last received does not contain it: the key never left the node.
fn holds_its_key(lab: &Lab, name: &str, shown: &str) -> Result<(), String> {
    let state = lab.dir.join(name).join("state");
    let read = |file: &str| {
        let path = state.join(file);
        fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let keys = read(kokoa_agent::keys::KEYS_FILE)?;
    let keys: Vec<&str> = keys.lines().filter(|l| !l.trim().is_empty()).collect();
    let [key] = keys.as_slice() else {
        return Err(format!(
            "{name} keeps {} keys after its rotation, not 1",
            keys.len()
        ));
    };
    let public = kokoa_wg::PrivateKey::from_base64(key.trim())
        .map_err(|e| format!("{name}'s key file: {e}"))?
        .public_key()
        .to_string();
    if public != shown {
        return Err(format!(
            "{name} holds the key of {public}, the API shows {shown}"
        ));
    }
    if read("last-good.json")?.contains(key.trim()) {
        return Err(format!(
            "{name}'s configuration from the control plane holds its private key"
        ));
    }
    Ok(())
}

/// Requests asked over one client connection in step 11.
const KEPT_ALIVE: usize = 10;
/// The WebSocket key of RFC 6455's example, and the answer it must get.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// 11. Through edge1, over one client connection with pebble's root trusted: the app sees
///     the requests arrive over fewer connections than there were requests (the edge keeps
///     its connections to the origin open through the tunnel), and a WebSocket upgrade is
///     answered 101 with the right `Sec-WebSocket-Accept` and carries a message both ways.
async fn keep_alive_and_websocket(lab: &Lab) -> Step {
    use base64::Engine as _;
    use sha1::Digest as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let app = APPS[0];
    let edge1 = plan::host("edge1").address;
    let root = fs::read(&lab.tls.root).map_err(|e| format!("cannot read pebble's root: {e}"))?;
    let root = reqwest::Certificate::from_pem(&root).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .resolve(app.hostname, std::net::SocketAddr::new(edge1.into(), 443))
        .tls_certs_merge([root])
        .http1_only()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let mut peers = std::collections::BTreeSet::new();
    for _ in 0..KEPT_ALIVE {
        let body = client
            .get(format!("https://{}/conn", app.hostname))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("GET /conn via edge1: {e}"))?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let prefix = format!("app={} peer=", app.origin);
        let peer = body
            .trim()
            .strip_prefix(&prefix)
            .ok_or_else(|| format!("/conn answered {body:?}"))?;
        peers.insert(peer.to_owned());
        tokio::time::sleep(SLOW_POLL).await;
    }
    // One client connection goes to one nginx worker, which reuses its idle connection;
    // a few more allow for the control plane's own checks taking it in between.
    if peers.len() > 3 {
        return Err(format!(
            "{KEPT_ALIVE} requests reached the app over {} connections: the edge does not keep \
             its connections to the origin alive ({peers:?})",
            peers.len()
        ));
    }

    let answer = client
        .get(format!("https://{}/ws", app.hostname))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", WS_KEY)
        .send()
        .await
        .map_err(|e| format!("WebSocket upgrade via edge1: {e}"))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(format!("the upgrade was answered {}", answer.status()));
    }
    let expected = base64::engine::general_purpose::STANDARD
        .encode(sha1::Sha1::digest(format!("{WS_KEY}{WS_GUID}")));
    let accept = answer
        .headers()
        .get("sec-websocket-accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if accept != expected {
        return Err(format!(
            "Sec-WebSocket-Accept {accept:?}, expected {expected:?}"
        ));
    }
    let mut socket = answer.upgrade().await.map_err(|e| e.to_string())?;
    // One masked text frame (RFC 6455 §5.2), as a browser sends it.
    let text = b"hello through the tunnel";
    let mask = [0x5a, 0x17, 0xc3, 0x08];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let echoed = tokio::time::timeout(Duration::from_secs(5), async {
        socket.write_all(&frame).await?;
        let mut head = [0u8; 2];
        socket.read_exact(&mut head).await?;
        let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
        socket.read_exact(&mut payload).await?;
        Ok::<_, std::io::Error>((head, payload))
    })
    .await
    .map_err(|_| "no WebSocket answer within 5 s".to_owned())?
    .map_err(|e| format!("WebSocket exchange: {e}"))?;
    let want = format!("app={} echo=hello through the tunnel", app.origin);
    if echoed.0[0] != 0x81 || echoed.1 != want.as_bytes() {
        return Err(format!(
            "WebSocket answer {:02x?} {:?}, expected a text frame {want:?}",
            echoed.0,
            String::from_utf8_lossy(&echoed.1)
        ));
    }
    Ok(format!(
        "{KEPT_ALIVE} requests over one client connection reached the app over {} upstream \
         connection(s); WebSocket 101 with the right accept key, \"{want}\" echoed back",
        peers.len()
    ))
}

/// Requests through both edges to both origins, and the ones not answered by their origin.
struct Tally {
    start: Instant,
    requests: usize,
    failures: Vec<String>,
}

impl Tally {
    /// One request per edge and host name, then a pause of [`SLOW_POLL`].
    async fn round(&mut self) {
        for edge in edges() {
            for app in APPS {
                let reply = get(edge, app.hostname).await;
                self.requests += 1;
                match reply {
                    Ok(r) if r.is_from(app.origin) => {}
                    Ok(r) => self.failures.push(format!(
                        "{} via {} after {}: {:.120}",
                        app.hostname,
                        edge.name,
                        secs(self.start.elapsed()),
                        r.outcome()
                    )),
                    Err(e) => self.failures.push(format!(
                        "{} via {} after {}: {e}",
                        app.hostname,
                        edge.name,
                        secs(self.start.elapsed()),
                    )),
                }
            }
        }
        tokio::time::sleep(SLOW_POLL).await;
    }
}

/// What `host` presents through `edge`, verified against pebble's root.
async fn verified(lab: &Lab, edge: Host, host: &str) -> Result<tls::Verified, String> {
    tls::https_verified(edge.address, host, "/", &lab.tls.root)
        .await
        .map_err(|e| e.to_string())
}

/// Each certificate's names, status, planned renewal and last error, as the API lists
/// them (for a failed step).
async fn certificate_states(lab: &Lab) -> String {
    let list = match lab
        .api
        .json(Method::GET, "/api/v1/certificates", None, StatusCode::OK)
        .await
    {
        Ok(list) => list,
        Err(e) => return format!("cannot list the certificates: {e}"),
    };
    let rows: Vec<String> = list["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} {} (next renewal {}, {} failure(s), last error {})",
                c["names"], c["status"], c["next_renewal"], c["failures"], c["last_error"]
            )
        })
        .collect();
    rows.join("; ")
}

/// 7. Both host names over HTTPS through both edges with a certificate pebble issued for
///    each (checked with `curl --cacert`), two different certificates; a new route gets
///    its own within the figure given; a renewal forced by a large `renew_days_before`
///    replaces the certificates on both edges while a stream of requests sees no failure.
async fn certificates(lab: &mut Lab) -> Step {
    let mut serials = std::collections::BTreeMap::new();
    for app in APPS {
        for (edge, v) in tls::wait_valid(app.hostname, app.origin, &lab.tls.root, CONVERGE_LIMIT)
            .await
            .map_err(|e| e.to_string())?
        {
            if !v.subject.contains(app.hostname) || !v.issuer.contains("Pebble") {
                return Err(format!(
                    "{} via {edge} presents subject {:?} issued by {:?}",
                    app.hostname, v.subject, v.issuer
                ));
            }
            serials.insert((edge, app.hostname), v.serial);
        }
    }
    let (a, b) = (APPS[0].hostname, APPS[1].hostname);
    if serials[&("edge1", a)] == serials[&("edge1", b)] || serials[&("edge1", a)].is_empty() {
        return Err(format!(
            "{a} and {b} present the same certificate: {serials:?}"
        ));
    }

    // A route created now: from 201 to its first verified HTTPS answer through an edge.
    let origin_a = lab.origins.get("origin-a").cloned().unwrap_or_default();
    lab.api
        .add_route("tls.hoge.test", &origin_a, APPS[0].port)
        .await
        .map_err(|e| e.to_string())?;
    let created = Instant::now();
    let first = wait_for(
        "tls.hoge.test to answer over verified HTTPS through an edge",
        Duration::from_secs(90),
        Duration::from_millis(100),
        || async {
            for edge in edges() {
                let v = verified(lab, edge, "tls.hoge.test").await.ok()?;
                if v.reply.is_from("origin-a") {
                    return Some((edge.name, created.elapsed()));
                }
            }
            None
        },
    )
    .await
    .map_err(|e| e.to_string())?;

    // Forced renewal under a stream of requests.
    tokio::time::sleep(RATE_REFILL).await;
    lab.api
        .json(
            Method::PUT,
            "/api/v1/certificates/settings",
            Some(serde_json::json!({"renew_days_before": 3650})),
            StatusCode::OK,
        )
        .await
        .map_err(|e| e.to_string())?;
    let forced = Instant::now();
    let (mut requests, mut failures) = (0usize, Vec::new());
    let mut renewed = std::collections::BTreeMap::new();
    // Bounded: at most 90 s, four requests per round (each edge sees two per 250 ms,
    // under its 10 per second).
    while renewed.len() < serials.len() && forced.elapsed() < Duration::from_secs(90) {
        for edge in edges() {
            for app in APPS {
                let v = verified(lab, edge, app.hostname).await?;
                requests += 1;
                if !v.reply.is_from(app.origin) {
                    failures.push(format!(
                        "{} via {}: {} after {}",
                        app.hostname,
                        edge.name,
                        v.reply.status,
                        secs(forced.elapsed())
                    ));
                } else if v.serial != serials[&(edge.name, app.hostname)] {
                    renewed
                        .entry((edge.name, app.hostname))
                        .or_insert(forced.elapsed());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Back to normal, so the lab does not go on renewing.
    let _ = lab
        .api
        .json(
            Method::PUT,
            "/api/v1/certificates/settings",
            Some(serde_json::json!({"renew_days_before": 30})),
            StatusCode::OK,
        )
        .await;
    if renewed.len() < serials.len() {
        return Err(format!(
            "after {} only {renewed:?} present a new certificate; the control plane says: {}",
            secs(forced.elapsed()),
            certificate_states(lab).await
        ));
    }
    if !failures.is_empty() {
        return Err(format!(
            "{} of {requests} requests failed during the renewal: {}",
            failures.len(),
            first_failures(&failures)
        ));
    }
    let slowest = renewed.values().max().copied().unwrap_or_default();
    Ok(format!(
        "both names verified on both edges (issuer Pebble, different serials); lab start: \
         SSL manager on to all verified {}; new route tls.hoge.test: 201 to first verified \
         HTTPS answer via {} in {}; forced renewal replaced all 4 in {} with 0 of {requests} \
         requests failed",
        lab.tls_ready.map_or_else(|| "n/a".to_owned(), secs),
        first.0,
        secs(first.1),
        secs(slowest)
    ))
}

/// 12. A real Prometheus scrapes the control plane, both edges and both origins with the
///     shipped alert rules; a burst of known requests through edge1 (30 answered, 10
///     failing with 500) shows up in edge1's series for app.hoge.test (the failures
///     exactly) and in the control plane's own traffic analytics of the route, and makes
///     the 5xx alert for that name fire.
async fn metrics(lab: &mut Lab) -> Step {
    use crate::prom::{EDGE_METRICS_PORT, Prometheus, targets};
    let prometheus = Prometheus::start(lab).await?;
    // The control plane is configured; the nodes come from its service discovery.
    let started = Instant::now();
    let controls: Vec<std::net::SocketAddr> = lab.controls.iter().map(|c| c.listen).collect();
    let mut expected = targets(&controls);
    expected.sort();
    let discovered = loop {
        let mut up: Vec<String> = prometheus
            .query("up == 1")
            .await?
            .into_iter()
            .filter_map(|(labels, _)| labels.get("instance").cloned())
            .collect();
        up.sort();
        if up == expected {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(30) {
            let all = prometheus.query("up").await?;
            return Err(format!(
                "after 30 s up are {up:?}, not {expected:?}: {all:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let leaders = prometheus.scalar("sum(kokoa_leader)").await?;
    if leaders != 1.0 {
        return Err(format!(
            "{leaders} control planes lead by their kokoa_leader, not 1"
        ));
    }

    let edge = plan::host("edge1");
    let app = APPS[0];
    let instance = format!("{}:{EDGE_METRICS_PORT}", edge.address);
    let count = |code: &str| {
        format!(
            "sum(kokoa_edge_requests_total{{instance=\"{instance}\",hostname=\"{}\",code=\"{code}\"}})",
            app.hostname
        )
    };
    let before = (
        prometheus.scalar(&count("2xx")).await?,
        prometheus.scalar(&count("5xx")).await?,
    );
    // The built-in analytics count the same burst (over both edges, from heartbeats).
    let routes = lab
        .api
        .json(Method::GET, "/api/v1/routes", None, StatusCode::OK)
        .await
        .map_err(|e| e.to_string())?;
    let route = routes["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["hostname"] == app.hostname)
        .and_then(|r| r["id"].as_str())
        .ok_or_else(|| format!("no route of {}: {routes}", app.hostname))?
        .to_owned();
    let traffic_path = format!("/api/v1/routes/{route}/traffic?range=24h");
    let analytics = |series: &Value| {
        (
            series["total"]["requests"].as_u64().unwrap_or(0),
            series["total"]["errors"].as_u64().unwrap_or(0),
        )
    };
    let analytics_before = analytics(
        &lab.api
            .json(Method::GET, &traffic_path, None, StatusCode::OK)
            .await
            .map_err(|e| e.to_string())?,
    );
    let (answered, failing): (u32, u32) = (30, 10);
    for i in 0..answered + failing {
        let path = if i % 4 == 3 { "/fail" } else { "/" };
        let reply = net::https_via(edge.address, app.hostname, path)
            .await
            .map_err(|e| e.to_string())?;
        let want = if path == "/fail" { 500 } else { 200 };
        if reply.status != want {
            return Err(format!("GET {path} via edge1: {}", reply.outcome()));
        }
        // 8 a second: under the edge's per-client limit.
        tokio::time::sleep(Duration::from_millis(125)).await;
    }
    let burst = Instant::now();
    let counted = loop {
        let now = (
            prometheus.scalar(&count("2xx")).await?,
            prometheus.scalar(&count("5xx")).await?,
        );
        let delta = (now.0 - before.0, now.1 - before.1);
        // The control plane's end-to-end checks add answered requests of their own;
        // nothing else fails there.
        if delta.0 >= f64::from(answered) && delta.1 == f64::from(failing) {
            break (burst.elapsed(), delta.0);
        }
        if burst.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "after 30 s Prometheus counts +{} 2xx and +{} 5xx for {} via edge1, not \
                 +{answered} (or more) and +{failing}",
                delta.0, delta.1, app.hostname
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let in_analytics = loop {
        let series = lab
            .api
            .json(Method::GET, &traffic_path, None, StatusCode::OK)
            .await
            .map_err(|e| e.to_string())?;
        let now = analytics(&series);
        let delta = (
            now.0.saturating_sub(analytics_before.0),
            now.1.saturating_sub(analytics_before.1),
        );
        if delta.0 >= u64::from(answered + failing) && delta.1 == u64::from(failing) {
            break burst.elapsed();
        }
        if burst.elapsed() > Duration::from_secs(30) {
            return Err(format!(
                "after 30 s GET {traffic_path} counts +{} requests and +{} errors, not \
                 +{} (or more) and +{failing}: {}",
                delta.0,
                delta.1,
                answered + failing,
                series["total"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let firing = format!(
        "ALERTS{{alertname=\"KokoaHostnameServerErrors\",alertstate=\"firing\",hostname=\"{}\"}}",
        app.hostname
    );
    let fired = loop {
        if !prometheus.query(&firing).await?.is_empty() {
            break burst.elapsed();
        }
        if burst.elapsed() > Duration::from_secs(60) {
            let alerts = prometheus.query("ALERTS").await?;
            return Err(format!(
                "the 5xx alert for {} did not fire: {alerts:?}",
                app.hostname
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let connected = prometheus
        .scalar("min(kokoa_origin_edges_connected)")
        .await?;
    if connected != 2.0 {
        return Err(format!(
            "an origin counts {connected} edges connected, not 2"
        ));
    }
    // edge1's agent stops answering (SIGSTOP; nginx serves on): the node alert fires.
    let stopped = Instant::now();
    if !lab
        .supervisor
        .signal("edge1", rustix::process::Signal::STOP)
    {
        return Err("cannot stop edge1's agent".into());
    }
    let unreachable = format!(
        "ALERTS{{alertname=\"KokoaNodeUnreachable\",alertstate=\"firing\",instance=\"{instance}\"}}"
    );
    let node_alert = loop {
        if !prometheus.query(&unreachable).await?.is_empty() {
            break Ok(stopped.elapsed());
        }
        if stopped.elapsed() > Duration::from_secs(30) {
            break Err(format!(
                "edge1's agent stopped 30 s, no KokoaNodeUnreachable: {:?}",
                prometheus.query("ALERTS").await?
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    lab.supervisor
        .signal("edge1", rustix::process::Signal::CONT);
    let node_alert = node_alert?;
    let queries = crate::prom::dashboard_queries()?;
    for (panel, query) in &queries {
        if prometheus.query(query).await?.is_empty() {
            return Err(format!(
                "the dashboard's panel {panel:?} shows nothing: {query}"
            ));
        }
    }
    let (counted, answered_seen) = counted;
    Ok(format!(
        "the 4 nodes discovered through the control plane and all {} targets up after {}, \
         one control plane leading; \
         {answered} answered and {failing} failing requests for {} \
         via edge1 counted after {} (+{answered_seen} 2xx with the control plane's checks, \
         +{failing} 5xx), and by the control plane's traffic analytics after {}; its 5xx \
         alert firing after {}; every origin sees 2 edges; edge1's \
         agent stopped: KokoaNodeUnreachable firing after {}; all {} queries of the Grafana \
         dashboard return data",
        expected.len(),
        secs(discovered),
        app.hostname,
        secs(counted),
        secs(in_analytics),
        secs(fired),
        secs(node_alert),
        queries.len()
    ))
}
