//! The automation must never cause the outage it exists to prevent. Each test runs the
//! control plane's duties against stand-in edges and a real PowerDNS (behind a proxy that
//! can fail on demand) and checks what a user would: the A records `dig` gets, the edges'
//! state, the events.
//!
//! - a control plane that was down longer than the heartbeat timeout removes no record
//!   when it comes back;
//! - an edge is not destroyed while the DNS provider cannot confirm its records are gone,
//!   and is once they are;
//! - every edge looking unhealthy at once points at the observer: DNS is kept, nothing
//!   destroyed, an alert raised;
//! - a control plane that lost its term cannot act (fencing).

mod common;

use common::standin::{Plane, agent, free_port, health_server, until};
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use kokoa_control::runtime::RuntimeSettings;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Fast checks: every second, out after two failures, heartbeats missing after 3 s.
fn settings(port: u16) -> RuntimeSettings {
    let mut settings = RuntimeSettings::default();
    settings.health.edge_https_port = port;
    settings.health.timeout = Duration::from_millis(800);
    settings.health.recovery_threshold = 2;
    settings.health.edge.heartbeat_timeout = Duration::from_secs(3);
    let m = &mut settings.edges.management;
    m.health_check_interval = 1;
    m.health_check_failure_threshold = 2;
    m.destroy_delay = 1;
    m.auto_replace_unhealthy_nodes = false;
    m.min_active_nodes = 0;
    settings
}

/// A stand-in edge: its id, address, `/health` server and agent.
struct Edge {
    id: String,
    ip: Ipv4Addr,
    credential: String,
    health: JoinHandle<()>,
    agent: JoinHandle<()>,
}

/// Two manual edges on 127.0.0.`first` and the next address, up and in DNS.
async fn two_edges(plane: &Plane, port: u16, first: u8) -> Vec<Edge> {
    let mut edges = Vec::new();
    for last in [first, first + 1] {
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let created = plane
            .call(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(json!({"provider": "manual", "region": "lab", "public_ip": ip.to_string()})),
                202,
            )
            .await;
        let id = created["id"].as_str().unwrap().to_owned();
        let credential = plane
            .enroll(created["enrollment_token"].as_str().unwrap())
            .await;
        let health = health_server(SocketAddr::new(IpAddr::V4(ip), port)).await;
        let agent = agent(plane.base.clone(), id.clone(), credential.clone());
        edges.push(Edge {
            id,
            ip,
            credential,
            health,
            agent,
        });
    }
    let both: Vec<String> = edges.iter().map(|e| e.ip.to_string()).collect();
    until("both edges in DNS", Duration::from_secs(30), || {
        (plane.dig() == both).then_some(())
    })
    .await;
    edges
}

async fn edge(plane: &Plane, id: &str) -> Value {
    plane
        .call(Method::GET, &format!("/api/v1/edge-nodes/{id}"), None, 200)
        .await
}

async fn events(plane: &Plane, kind: &str) -> Vec<Value> {
    let answer = plane
        .call(
            Method::GET,
            &format!("/api/v1/events?type={kind}"),
            None,
            200,
        )
        .await;
    answer["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_back_after_an_outage_removes_no_record() {
    let port = free_port();
    let (mut plane, _) = Plane::start(settings(port), None).await;
    let mut edges = two_edges(&plane, port, 21).await;
    let both = plane.dig();

    // The control plane goes down: no duties, and no heartbeat reaches it (its agents'
    // requests fail) for twice the heartbeat timeout. The edges keep serving.
    plane.stop_duties().await;
    for edge in &edges {
        edge.agent.abort();
    }
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Back: a new leader over the same database. The agents reconnect within a second.
    plane.start_duties().await;
    let back = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for edge in &mut edges {
        edge.agent = agent(plane.base.clone(), edge.id.clone(), edge.credential.clone());
    }
    let mut samples = 0;
    while back.elapsed() < Duration::from_secs(8) {
        let seen = plane.dig();
        assert_eq!(
            seen,
            both,
            "{:.1} s after the restart DNS lost an edge that kept serving",
            back.elapsed().as_secs_f64()
        );
        samples += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(samples > 40, "{samples} samples");
    assert!(events(&plane, "edge_node_unhealthy").await.is_empty());
    for edge in &edges {
        assert_eq!(self::edge(&plane, &edge.id).await["status"], "active");
    }
    for edge in edges {
        edge.health.abort();
        edge.agent.abort();
    }
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_is_destroyed_only_after_its_records_are_read_back_gone() {
    let port = free_port();
    let (plane, _) = Plane::start(settings(port), None).await;
    let edges = two_edges(&plane, port, 31).await;

    // The DNS provider's API fails, then edge 1 stops answering.
    plane.dns_api.fail(true);
    edges[0].health.abort();
    until("edge 1 unhealthy", Duration::from_secs(15), || {
        let id = edges[0].id.clone();
        let plane = &plane;
        futures_now(async move { edge(plane, &id).await["status"] == "unhealthy" }).then_some(())
    })
    .await;
    // Its record could not be removed, so it must not be destroyed: the destroy is held
    // with an event, also well past destroy_delay and the TTL.
    let held = until("the destroy held", Duration::from_secs(20), || {
        let plane = &plane;
        futures_now(async move { events(plane, "edge.step_failed").await })
            .into_iter()
            .find(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("not destroyed while its DNS records may remain"))
            })
    })
    .await;
    assert_eq!(held["subject"], edges[0].id.as_str(), "{held}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let first = edge(&plane, &edges[0].id).await;
    assert_ne!(first["status"], "deleted", "{first}");
    assert_eq!(first["lifecycle"]["phase"], "draining", "{first}");
    assert!(plane.dig().contains(&edges[0].ip.to_string()));

    // The provider answers again: the record goes, and only then the edge.
    plane.dns_api.fail(false);
    let only_second = vec![edges[1].ip.to_string()];
    until("edge 1 out of DNS", Duration::from_secs(20), || {
        (plane.dig() == only_second).then_some(())
    })
    .await;
    let removed_at = Instant::now();
    let destroyed_after = loop {
        let first = edge(&plane, &edges[0].id).await;
        if first["status"] == "deleted" {
            break removed_at.elapsed();
        }
        assert!(removed_at.elapsed() < Duration::from_secs(30), "{first}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The TTL (1 s) passes between the read-back and the destroy.
    assert!(
        destroyed_after >= Duration::from_millis(500),
        "{destroyed_after:?}"
    );
    for edge in edges {
        edge.health.abort();
        edge.agent.abort();
    }
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_edge_failing_at_once_points_at_the_observer() {
    let port = free_port();
    let (plane, _) = Plane::start(settings(port), None).await;
    let edges = two_edges(&plane, port, 41).await;
    let both = plane.dig();

    // Both stop answering the checks at once (as when the control plane's own network
    // breaks): the name never goes empty, both are published while the observer is
    // suspect (the first to fail may leave for a moment, before the second fails too),
    // nothing is destroyed, an alert says why. The pages show what the checks see.
    for edge in &edges {
        edge.health.abort();
    }
    let alert = until("the observer alert", Duration::from_secs(15), || {
        assert!(!plane.dig().is_empty(), "app.kokoa.test lost every record");
        let plane = &plane;
        futures_now(async move { events(plane, "health.observer_suspect").await })
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert_eq!(alert["data"]["raised"], true, "{alert}");
    until("both published again", Duration::from_secs(5), || {
        (plane.dig() == both).then_some(())
    })
    .await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            plane.dig(),
            both,
            "records removed while the observer is suspect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for edge in &edges {
        let seen = self::edge(&plane, &edge.id).await;
        assert_eq!(seen["status"], "unhealthy", "{seen}");
        assert_eq!(
            seen["lifecycle"]["phase"], "serving",
            "not destroyed: {seen}"
        );
    }

    // One comes back: the guard lifts, and the other, still failing, leaves DNS.
    let back = health_server(SocketAddr::new(IpAddr::V4(edges[0].ip), port)).await;
    let only_first = vec![edges[0].ip.to_string()];
    until(
        "edge 2 out of DNS once edge 1 answers",
        Duration::from_secs(20),
        || (plane.dig() == only_first).then_some(()),
    )
    .await;
    let lifted = events(&plane, "health.observer_suspect").await;
    assert!(
        lifted.iter().any(|e| e["data"]["raised"] == false),
        "{lifted:?}"
    );
    back.abort();
    for edge in edges {
        edge.agent.abort();
    }
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_term_ended_cannot_act() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kokoa.db");
    let key = kokoa_store::MasterKey::generate().to_base64().to_string();
    let state = |store| {
        kokoa_control::AppState::with_settings(
            store,
            kokoa_store::MasterKey::from_base64(&key).unwrap(),
            kokoa_core::SubnetPool::default(),
            "http://127.0.0.1:1".to_owned(),
            RuntimeSettings::default(),
        )
    };
    let database = kokoa_control::config::Database::Sqlite(path);
    let a = state(kokoa_control::open_store(&database).await.unwrap());
    let b = state(kokoa_control::open_store(&database).await.unwrap());

    assert!(a.leader().claim(&a).await, "the first to ask leads");
    assert!(!b.leader().claim(&b).await, "one leader at a time");
    a.leader()
        .intend(&a, "dns.apply", "kokoa.test", json!({}))
        .await
        .expect("the leader may act");

    // A stalls; its lease ends (here: released behind its back, as an expiry would) and B
    // takes over in a new term.
    assert!(
        a.store()
            .lease_release("leader", a.leader().instance())
            .await
            .unwrap()
    );
    assert!(b.leader().claim(&b).await);
    // A wakes up still believing it leads, and tries to act: refused.
    assert!(a.leader().is_leader());
    let refused = a
        .leader()
        .intend(&a, "vps.destroy", "edg_1", json!({}))
        .await
        .unwrap_err();
    assert!(refused.contains("refused"), "{refused}");
    assert!(!a.leader().is_leader(), "a refusal ends the term at once");
    b.leader()
        .intend(&b, "vps.destroy", "edg_1", json!({}))
        .await
        .expect("the new leader may act");

    let intents = a.store().list_intents(None, 10).await.unwrap();
    let holders: Vec<(&str, &str)> = intents
        .iter()
        .map(|i| (i.holder.as_str(), i.kind.as_str()))
        .collect();
    assert_eq!(
        holders,
        [
            (a.leader().instance(), "dns.apply"),
            (b.leader().instance(), "vps.destroy")
        ]
    );
    assert!(intents[1].token > intents[0].token);
    let fenced = a
        .store()
        .list_events(&kokoa_core::EventFilter::default())
        .await
        .unwrap();
    assert!(
        fenced
            .iter()
            .any(|e| e.kind.as_str() == "control_plane.fenced"),
        "{fenced:?}"
    );
}

/// Runs `future` to completion from a synchronous probe (the `until` helper takes one).
fn futures_now<T>(future: impl Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test]
async fn old_records_are_deleted_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let database = kokoa_control::config::Database::Sqlite(dir.path().join("kokoa.db"));
    let state = kokoa_control::AppState::with_settings(
        kokoa_control::open_store(&database).await.unwrap(),
        kokoa_store::MasterKey::generate(),
        kokoa_core::SubnetPool::default(),
        "http://127.0.0.1:1".to_owned(),
        RuntimeSettings::default(),
    );
    let store = state.store();
    state
        .events()
        .emit(
            "module.changed",
            kokoa_core::Severity::Info,
            None,
            "old",
            json!({}),
        )
        .await;
    let now = kokoa_core::Timestamp::now();
    store
        .kv_put("oidc-pending", "s1", "{}", Some(now.plus_secs(600)))
        .await
        .unwrap();
    store.kv_put("settings", "kept", "1", None).await.unwrap();

    // Six days on, nothing is due; eight days on, the event and the expired value go.
    let pruned = kokoa_control::runtime::retention::prune(&state, now.plus_secs(6 * 86_400))
        .await
        .unwrap();
    assert_eq!(pruned.events, 0);
    assert_eq!(pruned.shared_values, 1, "the pending sign-in expired");
    let pruned = kokoa_control::runtime::retention::prune(&state, now.plus_secs(8 * 86_400))
        .await
        .unwrap();
    assert_eq!(pruned.events, 1);
    let left = store
        .list_events(&kokoa_core::EventFilter::default())
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        store
            .kv_get("settings", "kept", now)
            .await
            .unwrap()
            .as_deref(),
        Some("1"),
        "values without an expiry stay"
    );
}
