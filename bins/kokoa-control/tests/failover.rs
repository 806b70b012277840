//! DNS failover with the control plane's own duties running: two edges (stand-ins that
//! answer `https://<address>/health` and send heartbeats like the agent) come up through
//! the edge automation and go into a real PowerDNS zone; one stops answering and leaves
//! DNS within the check period, its records the only ones touched; it recovers and comes
//! back; a manual delete removes it in the safe order.

mod common;

use common::edge::{agent, health_server};

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use kokoa_control::{
    AppState, api,
    runtime::{self, RuntimeSettings},
};
use kokoa_core::{MasterKey, Name, Role, SubnetPool};
use kokoa_dns::local::LocalPowerDns;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Where every stand-in edge answers HTTPS (a port the tests choose, not 443).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The A records of `name`, as `dig` at the server gets them.
fn dig(pdns: &LocalPowerDns, name: &str) -> Vec<String> {
    let dns = pdns.dns_address();
    let output = Command::new("dig")
        .args([
            &format!("@{}", dns.ip()),
            "-p",
            &dns.port().to_string(),
            name,
            "A",
        ])
        .args(["+short", "+time=2", "+tries=1"])
        .output()
        .expect("run dig (apt-get install -y --no-install-recommends dnsutils)");
    let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

async fn until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_stops_answering_leaves_dns_and_comes_back() {
    let pdns = LocalPowerDns::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    pdns.create_zone("kokoa.test").await.expect("zone");
    let port = free_port();

    let dir = tempfile::tempdir().unwrap();
    let store = kokoa_control::open_store(&kokoa_control::config::Database::Sqlite(
        dir.path().join("kokoa.db"),
    ))
    .await
    .unwrap();
    let mut settings = RuntimeSettings::default();
    settings.health.edge_https_port = port;
    settings.health.timeout = Duration::from_millis(800);
    settings.health.recovery_threshold = 2;
    let m = &mut settings.edges.management;
    m.health_check_interval = 1;
    m.health_check_failure_threshold = 2;
    m.auto_destroy_unhealthy_vps = false;
    m.min_active_nodes = 0;
    let state = AppState::with_settings(
        store,
        MasterKey::generate(),
        SubnetPool::default(),
        "http://127.0.0.1",
        settings,
    );
    let (_, admin) = api::issue_api_token(&state, Name::parse("admin").unwrap(), Role::Admin)
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = api::router(state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let duties = tokio::spawn(runtime::run(state.clone(), async move {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::new();
    let call = |method: Method, path: &str, body: Option<Value>, want: u16| {
        let request = client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(admin.as_str());
        let request = match body {
            Some(b) => request.json(&b),
            None => request,
        };
        let path = path.to_owned();
        async move {
            let answer = request.send().await.expect("the API answers");
            let status = answer.status().as_u16();
            let json: Value = answer.json().await.unwrap_or(Value::Null);
            assert_eq!(status, want, "{method} {path}: {json}");
            json
        }
    };

    let origin = call(
        Method::POST,
        "/api/v1/origins",
        Some(json!({"name": "home", "services": [{"name": "web", "port": 8080}]})),
        201,
    )
    .await;
    let origin_id = origin["id"].as_str().unwrap();
    call(
        Method::POST,
        "/api/v1/routes",
        Some(
            json!({"hostname": "app.kokoa.test", "origin_id": origin_id, "target_port": 8080,
                    "certificate": "none"}),
        ),
        201,
    )
    .await;
    call(
        Method::POST,
        "/api/v1/dns/zones",
        Some(
            json!({"name": "kokoa.test", "provider": "powerdns", "ttl": 1,
                    "settings": {"url": pdns.api_url()},
                    "credentials": {"api_key": pdns.api_key()}}),
        ),
        201,
    )
    .await;
    // A record the DNS manager does not own, on the same name.
    reqwest::Client::new()
        .patch(format!(
            "{}/api/v1/servers/localhost/zones/kokoa.test.",
            pdns.api_url()
        ))
        .header("X-API-Key", pdns.api_key())
        .json(
            &json!({"rrsets": [{"name": "app.kokoa.test.", "type": "A", "ttl": 60,
            "changetype": "REPLACE", "records": [{"content": "192.0.2.99", "disabled": false}]}]}),
        )
        .send()
        .await
        .expect("a foreign record");

    let mut edges = Vec::new();
    for last in [11u8, 12] {
        let ip = Ipv4Addr::new(127, 0, 0, last);
        let created = call(
            Method::POST,
            "/api/v1/edge-nodes",
            Some(json!({"provider": "manual", "region": "lab", "public_ip": ip.to_string()})),
            202,
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        let token = created["enrollment_token"].as_str().unwrap();
        let enrolled: Value = client
            .post(format!("{base}/api/v1/enroll"))
            .json(&json!({"token": token}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let credential = enrolled["credential"].as_str().unwrap().to_owned();
        let health = health_server(SocketAddr::new(IpAddr::V4(ip), port)).await;
        let agent = agent(base.clone(), id.clone(), credential);
        edges.push((id, ip, health, agent));
    }

    // Both come up: enrolled, ready, tunnels up, configuration applied, two checks passed.
    let both = vec![
        "127.0.0.11".to_owned(),
        "127.0.0.12".to_owned(),
        "192.0.2.99".to_owned(),
    ];
    until("both edges in DNS", Duration::from_secs(30), || {
        (dig(&pdns, "app.kokoa.test") == both).then_some(())
    })
    .await;
    let first = call(
        Method::GET,
        &format!("/api/v1/edge-nodes/{}", edges[0].0),
        None,
        200,
    )
    .await;
    assert_eq!(first["status"], "active", "{first}");
    assert_eq!(first["lifecycle"]["phase"], "serving");

    // Edge 1 stops answering: out of DNS after two failed checks (1 s apart).
    edges[0].2.abort();
    let stopped_at = Instant::now();
    let one = vec!["127.0.0.12".to_owned(), "192.0.2.99".to_owned()];
    until("edge 1 out of DNS", Duration::from_secs(15), || {
        (dig(&pdns, "app.kokoa.test") == one).then_some(())
    })
    .await;
    let removal = stopped_at.elapsed();
    eprintln!(
        "edge out of DNS {:.1} s after it stopped answering",
        removal.as_secs_f64()
    );
    assert!(removal < Duration::from_secs(6), "{removal:?}");
    let first = call(
        Method::GET,
        &format!("/api/v1/edge-nodes/{}", edges[0].0),
        None,
        200,
    )
    .await;
    assert_eq!(first["status"], "unhealthy", "{first}");
    let events = call(
        Method::GET,
        &format!(
            "/api/v1/events?subject={}&type=edge_node_unhealthy",
            edges[0].0
        ),
        None,
        200,
    )
    .await;
    assert_eq!(events["events"][0]["data"]["failure_count"], 2, "{events}");
    let history = call(
        Method::GET,
        &format!("/api/v1/edge-nodes/{}/health-history?limit=5", edges[0].0),
        None,
        200,
    )
    .await;
    assert!(
        history["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["status"] == "failure"),
        "{history}"
    );

    // It answers again: two good checks and it is back.
    edges[0].2 = health_server(SocketAddr::new(IpAddr::V4(edges[0].1), port)).await;
    until("edge 1 back in DNS", Duration::from_secs(15), || {
        (dig(&pdns, "app.kokoa.test") == both).then_some(())
    })
    .await;

    // Deleted by hand: out of DNS at once, then (TTL 1 s) gone.
    call(
        Method::DELETE,
        &format!("/api/v1/edge-nodes/{}", edges[1].0),
        None,
        202,
    )
    .await;
    let only_first = vec!["127.0.0.11".to_owned(), "192.0.2.99".to_owned()];
    until("edge 2 out of DNS", Duration::from_secs(10), || {
        (dig(&pdns, "app.kokoa.test") == only_first).then_some(())
    })
    .await;
    let second_id = edges[1].0.clone();
    let started = Instant::now();
    loop {
        let second = call(
            Method::GET,
            &format!("/api/v1/edge-nodes/{second_id}"),
            None,
            200,
        )
        .await;
        if second["status"] == "deleted" {
            assert_eq!(second["lifecycle"]["phase"], "destroyed");
            assert!(second["lifecycle"]["steps"]["dns_removed"].is_string());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{second}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let records = call(Method::GET, "/api/v1/dns/records", None, 200).await;
    assert_eq!(records["records"].as_array().unwrap().len(), 1, "{records}");

    let _ = stop.send(());
    for (_, _, health, agent) in edges {
        health.abort();
        agent.abort();
    }
    state.begin_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(10), duties).await;
    server.abort();
}
