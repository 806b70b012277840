//! `kokoa-lab check --failover`: an edge dies and the system heals on its own (SPEC §9).
//!
//! A client in its own namespace sends a bounded stream of requests to both host names the
//! way a browser behind a resolver would: it asks the lab's PowerDNS for the host name's A
//! records, keeps the answer for its TTL, and spreads its requests over the addresses.
//! Then edge1's link goes down, and the scenario measures, with the control plane's lab
//! settings (checks every 2 s, 2 failures, `destroy_delay` 5 s, `replace_delay` 1 s, TTL
//! 5 s): the time until edge1's records are gone from PowerDNS; the time until a
//! replacement (created by the edge automation in another lab region, through the lab
//! provisioner) answers the client's first request; the failed requests of the whole run,
//! none of them allowed once the TTL after the removal has passed; and origin-a's routes
//! answering 503 at the edges now serving while origin-b's answer 200. Meanwhile a
//! person has the Web UI's Edge nodes page open in Chromium: edge1 must turn unhealthy there
//! without a reload.

use std::{
    collections::HashMap,
    io::Write,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use reqwest::{Method, StatusCode};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    Error,
    browser::EdgesPage,
    check::{self, Step},
    lab::{Lab, control_url, wait_for},
    net,
    plan::{self, APPS, HUB, Role},
    supervisor::Spec,
    tls,
};

/// How often the stream sends a request.
const EVERY: Duration = Duration::from_millis(200);
/// The stream's bounds: it stops after this long or this many requests at the latest.
const STREAM_LIMIT: (Duration, usize) = (Duration::from_secs(180), 900);
/// SPEC §9 figures, for comparison: removal from DNS 23 s after the first failed check,
/// traffic on the replacement at 295 s.
const SPEC_REMOVAL: u64 = 23;
const SPEC_REPLACED: u64 = 295;
/// The goals of the issue for the lab's settings.
const GOAL_REMOVAL: Duration = Duration::from_secs(6);
const GOAL_REPLACED: Duration = Duration::from_secs(60);

/// One request of the stream.
#[derive(Debug, Clone)]
struct Attempt {
    /// When it was sent.
    at: Instant,
    /// When it ended (answered or given up): a request in flight at the kill may fail.
    done: Instant,
    host: &'static str,
    edge: Option<Ipv4Addr>,
    ok: bool,
    detail: String,
}

/// A stub resolver in the client's namespace that honours TTLs.
struct Resolver {
    server: SocketAddr,
    cache: HashMap<&'static str, (Vec<Ipv4Addr>, Instant)>,
}

impl Resolver {
    async fn addresses(&mut self, host: &'static str) -> Vec<Ipv4Addr> {
        if let Some((addresses, until)) = self.cache.get(host)
            && Instant::now() < *until
        {
            return addresses.clone();
        }
        let client = plan::host("client").netns();
        let (addresses, ttl) = dig(Some(&client), self.server, host).await;
        self.cache
            .insert(host, (addresses.clone(), Instant::now() + ttl));
        addresses
    }
}

/// `dig @SERVER HOST A`, from namespace `ns` (the root namespace with `None`): the
/// addresses, sorted, and the smallest TTL.
async fn dig(ns: Option<&str>, server: SocketAddr, host: &str) -> (Vec<Ipv4Addr>, Duration) {
    let argv: Vec<String> = [
        "dig",
        &format!("@{}", server.ip()),
        "-p",
        &server.port().to_string(),
        host,
        "A",
        "+noall",
        "+answer",
        "+time=1",
        "+tries=1",
    ]
    .map(String::from)
    .to_vec();
    let spec = match ns {
        Some(ns) => Spec::netns(ns, argv),
        None => Spec::root(argv),
    };
    let text = net::run(&spec).await.unwrap_or_default();
    let mut ttl = u64::MAX;
    let mut addresses = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, seconds, _, "A", address] = fields[..]
            && let (Ok(seconds), Ok(address)) = (seconds.parse::<u64>(), address.parse())
        {
            ttl = ttl.min(seconds);
            addresses.push(address);
        }
    }
    addresses.sort();
    let ttl = if ttl == u64::MAX { 1 } else { ttl };
    (addresses, Duration::from_secs(ttl))
}

/// The A records of both host names as PowerDNS serves them now (no cache).
async fn served(lab: &Lab) -> Vec<Vec<Ipv4Addr>> {
    let mut all = Vec::new();
    for app in APPS {
        all.push(served_at(lab.tls.dns.dns_address(), app.hostname).await);
    }
    all
}

/// The A records of `host` at `server`, asked from the root namespace.
pub(crate) async fn served_at(server: SocketAddr, host: &str) -> Vec<Ipv4Addr> {
    dig(None, server, host).await.0
}

/// The stream's requests so far.
type Attempts = Arc<Mutex<Vec<Attempt>>>;

/// Starts the client's stream; it ends when `stop` turns true or at its bounds.
fn stream(
    server: SocketAddr,
    root: PathBuf,
    stop: watch::Receiver<bool>,
    attempts: Attempts,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut resolver = Resolver {
            server,
            cache: HashMap::new(),
        };
        let started = Instant::now();
        let mut turn = 0usize;
        while !*stop.borrow() && started.elapsed() < STREAM_LIMIT.0 && turn < STREAM_LIMIT.1 {
            let app = APPS[turn % APPS.len()];
            let addresses = resolver.addresses(app.hostname).await;
            let edge = (!addresses.is_empty()).then(|| addresses[(turn / 2) % addresses.len()]);
            turn += 1;
            let at = Instant::now();
            let (ok, detail) = match edge {
                None => (false, "no address in DNS".to_owned()),
                Some(address) => {
                    match tls::https_verified(address, app.hostname, "/", &root).await {
                        Ok(v) if v.reply.status == 0 => (false, "no HTTP answer".to_owned()),
                        Ok(v) => (
                            v.reply.is_from(app.origin),
                            format!("{} {:.40}", v.reply.status, v.reply.body),
                        ),
                        Err(e) => (false, e.to_string()),
                    }
                }
            };
            let attempt = Attempt {
                at,
                done: Instant::now(),
                host: app.hostname,
                edge,
                ok,
                detail,
            };
            attempts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(attempt);
            tokio::time::sleep(EVERY).await;
        }
    })
}

/// `d` in seconds, one decimal.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// What the steps share.
struct Run {
    killed: Instant,
    removed: Option<Instant>,
    stop: watch::Sender<bool>,
    stream: Option<JoinHandle<()>>,
    attempts: Attempts,
    replacement: Option<(String, Ipv4Addr)>,
}

/// Runs steps 13–17, one line each; the first failure is returned.
pub async fn run(lab: &mut Lab, out: &mut dyn Write) -> Result<(), Error> {
    let edge1 = plan::host("edge1");
    // The lab's two edges serve: from now on the automation keeps two and replaces losses.
    lab.api
        .json(
            Method::PUT,
            "/api/v1/modules/edge_provisioner",
            Some(serde_json::json!({"enabled": true})),
            StatusCode::OK,
        )
        .await?;
    // Someone watches the Edge nodes page; a browser that cannot start fails step 13 only.
    let page = EdgesPage::open(lab, &control_url(), "edge1").await;
    let (stop, stopped) = watch::channel(false);
    let attempts = Attempts::default();
    let handle = stream(
        lab.tls.dns.dns_address(),
        lab.tls.root.clone(),
        stopped,
        Arc::clone(&attempts),
    );
    // A few answers through both edges before anything happens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // edge1 is cut off the network, as a host that died or is flooded.
    net::ip(&["-n", HUB, "link", "set", &edge1.hub_port(), "down"]).await?;
    let killed_at = SystemTime::now();
    let mut shared = Run {
        killed: Instant::now(),
        removed: None,
        stop,
        stream: Some(handle),
        attempts,
        replacement: None,
    };
    let steps: [(u8, &'static str); 5] = [
        (13, "edge killed, out of DNS"),
        (14, "unhealthy on the open Edge nodes page"),
        (15, "replaced elsewhere"),
        (16, "requests"),
        (17, "origin down at the new edges"),
    ];
    let mut first_failure = None;
    for (number, name) in steps {
        let result = match number {
            13 => removed(lab, &mut shared).await,
            14 => seen_on_page(&page, killed_at).await,
            15 => replaced(lab, &mut shared).await,
            16 => requests(&mut shared).await,
            _ => origin_down(lab, &shared).await,
        };
        check::report(out, number, name, result, &mut first_failure);
    }
    let _ = shared.stop.send(true);
    if let Ok(page) = page {
        page.close(lab).await;
    }
    first_failure.map_or(Ok(()), Err)
}

/// 13. edge1's records leave PowerDNS.
async fn removed(lab: &Lab, run: &mut Run) -> Step {
    let dead = plan::host("edge1").address;
    wait_for(
        "edge1's A records to leave PowerDNS",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            served(lab)
                .await
                .iter()
                .all(|a| !a.contains(&dead))
                .then_some(())
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let now = Instant::now();
    run.removed = Some(now);
    let took = now - run.killed;
    let goal = if took <= GOAL_REMOVAL {
        "met"
    } else {
        "missed"
    };
    Ok(format!(
        "edge1's records left PowerDNS {} after its link went down (checks every 2 s, 2 \
         failures; goal {} {goal}; SPEC §9 timeline: {SPEC_REMOVAL} s after the first failed \
         check with its 10 s / 3 failures)",
        secs(took),
        secs(GOAL_REMOVAL)
    ))
}

/// 14. The Edge nodes page, open since before the kill, showed edge1 unhealthy by itself.
async fn seen_on_page(page: &Result<EdgesPage, String>, killed: SystemTime) -> Step {
    let page = page
        .as_ref()
        .map_err(|e| format!("the browser did not start: {e}"))?;
    let after = page
        .unhealthy_after(killed, Duration::from_secs(30))
        .await?;
    Ok(format!(
        "edge1 shown unhealthy {} after the kill, on the page opened before it (no reload; \
         the page follows the event stream)",
        secs(after)
    ))
}

/// 15. A replacement in another region passes its checks, goes into DNS and serves the
///     client.
async fn replaced(lab: &Lab, run: &mut Run) -> Step {
    let fixed: Vec<Ipv4Addr> = plan::hosts(Role::Edge).map(|h| h.address).collect();
    let address = wait_for(
        "a replacement edge in PowerDNS for both host names",
        Duration::from_secs(90),
        Duration::from_millis(200),
        || async {
            let served = served(lab).await;
            let new = served
                .first()?
                .iter()
                .find(|a| !fixed.contains(a))
                .copied()?;
            served.iter().all(|a| a.contains(&new)).then_some(new)
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let in_dns = run.killed.elapsed();
    // The client's first answer through it (its resolver honours the TTL).
    let first = wait_for(
        "the client's first answer through the replacement",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            run.attempts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .find(|a| a.ok && a.edge == Some(address))
                .map(|a| a.at)
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let edges = lab
        .api
        .json(Method::GET, "/api/v1/edge-nodes", None, StatusCode::OK)
        .await
        .map_err(|e| e.to_string())?;
    let edges = edges["edge_nodes"].as_array().cloned().unwrap_or_default();
    let dead = edges
        .iter()
        .find(|e| e["name"] == "edge1")
        .ok_or("edge1 is not listed")?;
    if dead["status"] != "deleted" || dead["lifecycle"]["removal"] != "unhealthy" {
        return Err(format!(
            "edge1 was not removed as unhealthy: {}",
            dead["lifecycle"]
        ));
    }
    let replacement = edges
        .iter()
        // A deleted edge may have had the address before (a provider reuses them).
        .find(|e| e["public_ip"] == address.to_string() && e["status"] != "deleted")
        .ok_or("the replacement is not listed")?;
    let (provider, region) = (
        replacement["provider"].as_str().unwrap_or_default(),
        replacement["region"].as_str().unwrap_or_default(),
    );
    if dead["lifecycle"]["replaced_by"] != replacement["id"] || provider != "lab" || region == "lab"
    {
        return Err(format!(
            "expected edge1 replaced by a lab edge in another region, got {provider}/{region} \
             ({})",
            dead["lifecycle"]
        ));
    }
    let steps = &replacement["lifecycle"]["steps"];
    let at = |step: &str| {
        steps[step]
            .as_str()
            .and_then(|t| kokoa_core::Timestamp::parse_rfc3339(t).ok())
    };
    let created = kokoa_core::Timestamp::parse_rfc3339(
        replacement["created_at"].as_str().unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    let mut timeline = Vec::new();
    for step in [
        "instance_created",
        "provisioned",
        "enrolled",
        "reported_ready",
        "tunnels_up",
        "certificates_installed",
        "checks_passed",
    ] {
        let done =
            at(step).ok_or_else(|| format!("the replacement has no step {step}: {steps}"))?;
        timeline.push(format!("{step} +{} s", done.seconds_since(created)));
    }
    let name = replacement["name"].as_str().unwrap_or_default().to_owned();
    run.replacement = Some((name.clone(), address));
    let took = first - run.killed;
    let goal = if took <= GOAL_REPLACED {
        "met"
    } else {
        "missed"
    };
    Ok(format!(
        "{name} ({provider}/{region}, {address}) in DNS {} after the kill, first answer {} \
         after it (goal {} {goal}; SPEC §9 timeline: {SPEC_REPLACED} s); its steps from \
         its creation: {}",
        secs(in_dns),
        secs(took),
        secs(GOAL_REPLACED),
        timeline.join(", ")
    ))
}

/// 16. No request fails before the kill (one in flight at that moment may), nor once the
///     TTL after the removal has run out.
async fn requests(run: &mut Run) -> Step {
    // A few more answers through the new set of edges first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = run.stop.send(true);
    run.stream
        .take()
        .ok_or("the stream was not running")?
        .await
        .map_err(|e| e.to_string())?;
    let attempts =
        std::mem::take(&mut *run.attempts.lock().unwrap_or_else(PoisonError::into_inner));
    let removed = run.removed.ok_or("edge1 was never removed")?;
    let settled = removed + Duration::from_secs(u64::from(tls::ZONE_TTL));
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| !a.ok).collect();
    let late: Vec<&Attempt> = failed.iter().copied().filter(|a| a.at > settled).collect();
    let early: Vec<&Attempt> = failed
        .iter()
        .copied()
        .filter(|a| a.done < run.killed)
        .collect();
    let replacement_served = run.replacement.as_ref().map_or(0, |(_, address)| {
        attempts
            .iter()
            .filter(|a| a.ok && a.edge == Some(*address))
            .count()
    });
    if let Some(first) = late.first().or(early.first()) {
        return Err(format!(
            "{} of {} requests failed, {} after the TTL following the removal ({} before the \
             kill); e.g. {} via {:?}: {}",
            failed.len(),
            attempts.len(),
            late.len(),
            early.len(),
            first.host,
            first.edge,
            first.detail
        ));
    }
    Ok(format!(
        "{} requests, {} failed (all between the kill and the TTL after the removal), none \
         after; {replacement_served} served by the replacement",
        attempts.len(),
        failed.len()
    ))
}

/// 17. origin-a's app stops: its routes answer 503 at every serving edge (edge2 and the
///     replacement) while origin-b's answer 200; it restarts: 200 again.
async fn origin_down(lab: &mut Lab, run: &Run) -> Step {
    let Some((name, address)) = run.replacement.clone() else {
        return Err("no replacement edge to check".into());
    };
    let edge2 = plan::host("edge2");
    let edges = [(edge2.name.to_owned(), edge2.address), (name, address)];
    check::origin_down_at(lab, &edges).await
}
