//! How fast edges get their configuration, on SQLite in a temporary directory:
//!
//! 1. `GET /api/v1/edge-nodes/me/config` with 10 000 routes: building the payload from the
//!    store (with its hash), serialising it, and the whole request over HTTP.
//! 2. 1 000 edges polling with `If-None-Match` (answered `304`): requests per second and
//!    latency percentiles, 64 requests in flight.
//! 3. The same 1 000 edges long-polling (`?wait=30`) when a route is added to every
//!    origin: time until every edge has its new configuration.
//!
//! Run with `cargo bench -p kokoa-control`; figures are printed, nothing is asserted.
//! `KOKOA_BENCH_ROUTES` and `KOKOA_BENCH_EDGES` change the sizes.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use kokoa_control::{AppState, api};
use kokoa_core::{
    EdgeNodeId, Hostname, Name, OriginId, Port, Role, Route, RouteId, SubnetPool, Timestamp,
};
use kokoa_runtime::payload;
use kokoa_store::{MasterKey, sqlite};
use serde_json::{Value, json};

const ORIGINS: usize = 5;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median and 99th percentile of `samples`.
fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let routes = env_usize("KOKOA_BENCH_ROUTES", 10_000);
    let edges = env_usize("KOKOA_BENCH_EDGES", 1_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = sqlite::open(dir.path().join("kokoa.db"))
        .await
        .expect("SQLite store");
    let state = AppState::new(
        Arc::new(store),
        MasterKey::generate(),
        SubnetPool::default(),
        "http://127.0.0.1",
    );
    let (_, admin) = api::issue_api_token(&state, Name::parse("bench").unwrap(), Role::Admin)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, api::router(state.clone())).into_future());
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(admin.as_str())
            .json(&body)
            .send()
    };

    // Origins, and routes spread over them (inserted through the store: setup, not measured).
    let mut origin_ids = Vec::new();
    for i in 0..ORIGINS {
        let origin: Value = post("/api/v1/origins", json!({"name": format!("origin-{i}")}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        origin_ids.push(OriginId::parse(origin["id"].as_str().unwrap()).unwrap());
    }
    let started = Instant::now();
    for i in 0..routes {
        state
            .store()
            .create_route(&Route {
                id: RouteId::new(),
                hostname: Hostname::parse(&format!("app-{i}.example{}.com", i % 97)).unwrap(),
                origin_id: origin_ids[i % ORIGINS].clone(),
                target_port: Port::new(8000 + (i % 1000) as u16).unwrap(),
                certificate: Default::default(),
                created_at: Timestamp::now(),
            })
            .await
            .unwrap();
    }
    println!(
        "setup: {routes} routes over {ORIGINS} origins inserted in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // One edge serving every origin, enrolled.
    let enroll = |body: Value| async {
        let created: Value = post("/api/v1/edge-nodes", body)
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let enrolled: Value = post(
            "/api/v1/enroll",
            json!({"token": created["enrollment_token"].as_str().unwrap()}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        (
            EdgeNodeId::parse(created["id"].as_str().unwrap()).unwrap(),
            enrolled["credential"].as_str().unwrap().to_owned(),
        )
    };
    let (edge, credential) =
        enroll(json!({"provider": "manual", "region": "bench", "public_ip": "192.0.2.1"})).await;

    // 1a. Payload build + hash, and serialisation, in process.
    let rounds = 30;
    let (mut build, mut serialise) = (Vec::new(), Vec::new());
    let mut size = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let config = payload::edge_config(&state, &edge).await.unwrap();
        build.push(t.elapsed());
        let t = Instant::now();
        size = serde_json::to_vec(&config).unwrap().len();
        serialise.push(t.elapsed());
    }
    let (b50, b99) = percentiles(&mut build);
    let (s50, s99) = percentiles(&mut serialise);
    println!(
        "me/config, {routes} routes ({} KiB): build+hash p50 {} p99 {}; serialise p50 {} p99 {}",
        size / 1024,
        ms(b50),
        ms(b99),
        ms(s50),
        ms(s99)
    );

    // 1b. The same over HTTP.
    let mut http = Vec::new();
    let mut etag = String::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let response = client
            .get(format!("{base}/api/v1/edge-nodes/me/config"))
            .bearer_auth(&credential)
            .send()
            .await
            .unwrap();
        etag = response.headers()["etag"].to_str().unwrap().to_owned();
        response.bytes().await.unwrap();
        http.push(t.elapsed());
    }
    let (h50, h99) = percentiles(&mut http);
    println!(
        "me/config over HTTP, {routes} routes: p50 {} p99 {}",
        ms(h50),
        ms(h99)
    );
    let mut unchanged = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let response = client
            .get(format!("{base}/api/v1/edge-nodes/me/config"))
            .bearer_auth(&credential)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 304);
        unchanged.push(t.elapsed());
    }
    let (u50, u99) = percentiles(&mut unchanged);
    println!(
        "me/config over HTTP, {routes} routes, If-None-Match → 304: p50 {} p99 {}",
        ms(u50),
        ms(u99)
    );

    // 2. Many edges, each dedicated to one origin, polling with their current ETag.
    let started = Instant::now();
    let mut fleet = Vec::new();
    for i in 0..edges {
        let origin = &origin_ids[i % ORIGINS];
        fleet.push(
            enroll(json!({"provider": "manual", "region": "fleet", "origin_id": origin.as_str()}))
                .await
                .1,
        );
    }
    let mut tags = Vec::new();
    for credential in &fleet {
        let response = client
            .get(format!("{base}/api/v1/edge-nodes/me/config"))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        tags.push(response.headers()["etag"].to_str().unwrap().to_owned());
    }
    println!(
        "setup: {edges} edges enrolled and fetched once in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let fleet: Arc<Vec<(String, String)>> = Arc::new(fleet.into_iter().zip(tags).collect());
    let workers = 64;
    let per_worker = (edges * 2).div_ceil(workers);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, base, fleet) = (client.clone(), base.clone(), Arc::clone(&fleet));
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_worker);
            for i in 0..per_worker {
                let (credential, etag) = &fleet[(w * per_worker + i) % fleet.len()];
                let t = Instant::now();
                let response = client
                    .get(format!("{base}/api/v1/edge-nodes/me/config"))
                    .bearer_auth(credential)
                    .header("if-none-match", etag)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 304);
                samples.push(t.elapsed());
            }
            samples
        }));
    }
    let mut samples = Vec::new();
    for task in tasks {
        samples.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let (p50, p99) = percentiles(&mut samples);
    println!(
        "{edges} edges polling (If-None-Match, {workers} in flight, {} requests, {} routes per edge): \
         {:.0} req/s, p50 {} p99 {}",
        samples.len(),
        routes / ORIGINS,
        samples.len() as f64 / elapsed.as_secs_f64(),
        ms(p50),
        ms(p99)
    );

    // 3. Every edge long-polls; one route per origin is added; all must see it.
    let mut waiting = Vec::new();
    for (credential, etag) in fleet.iter() {
        let request = client
            .get(format!("{base}/api/v1/edge-nodes/me/config?wait=30"))
            .bearer_auth(credential)
            .header("if-none-match", etag);
        waiting.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            response.bytes().await.unwrap();
            (status, Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "polls wait for a change"
    );
    let changed = Instant::now();
    for (i, origin) in origin_ids.iter().enumerate() {
        let response = post(
            "/api/v1/routes",
            json!({"hostname": format!("late-{i}.example.com"), "origin_id": origin.as_str(), "target_port": 80}),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 201);
    }
    let mut last = changed;
    for w in waiting {
        let (status, at) = w.await.unwrap();
        assert_eq!(status, 200);
        last = last.max(at);
    }
    println!(
        "{edges} edges long-polling, one route added to each of the {ORIGINS} origins: \
         every edge had it after {}",
        ms(last - changed)
    );
}
