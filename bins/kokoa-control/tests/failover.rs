//! DNS failover with the control plane's own duties running: two edges (stand-ins that
//! answer `https://<address>/health` and send heartbeats like the agent) come up through
//! the edge automation and go into a real PowerDNS zone; one stops answering and leaves
//! DNS within the check period, its records the only ones touched; it recovers and comes
//! back; a manual delete removes it in the safe order. The warning reaches a webhook.

mod common;

use common::standin::{Plane, agent, free_port, health_server, until, webhook_receiver};
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use kokoa_control::runtime::RuntimeSettings;
use kokoa_notify::{Notifier, NotifySettings};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_stops_answering_leaves_dns_and_comes_back() {
    let port = free_port();
    let mut settings = RuntimeSettings::default();
    settings.health.edge_https_port = port;
    settings.health.timeout = Duration::from_millis(800);
    settings.health.recovery_threshold = 2;
    let m = &mut settings.edges.management;
    m.health_check_interval = 1;
    m.health_check_failure_threshold = 2;
    m.auto_destroy_unhealthy_vps = false;
    m.min_active_nodes = 0;
    // Warnings about edges go to a webhook, as `[notifications]` would set it up.
    let (hook_url, received) = webhook_receiver().await;
    let notifications: NotifySettings = toml::from_str(&format!(
        "[[sinks]]\nkind = \"webhook\"\nurl = \"{hook_url}\"\nevents = [\"edge_node_unhealthy\", \"edge.recovered\"]\n"
    ))
    .unwrap();
    let notifier = Notifier::from_settings(&notifications, reqwest::Client::new()).unwrap();
    let (plane, _) = Plane::start(settings, Some(notifier)).await;
    let pdns = &plane.pdns;
    let base = plane.base.clone();

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
        let created = plane
            .call(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(json!({"provider": "manual", "region": "lab", "public_ip": ip.to_string()})),
                202,
            )
            .await;
        let id = created["id"].as_str().unwrap().to_owned();
        let token = created["enrollment_token"].as_str().unwrap();
        let credential = plane.enroll(token).await;
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
        (plane.dig() == both).then_some(())
    })
    .await;
    let first = plane
        .call(
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
        (plane.dig() == one).then_some(())
    })
    .await;
    let removal = stopped_at.elapsed();
    eprintln!(
        "edge out of DNS {:.1} s after it stopped answering",
        removal.as_secs_f64()
    );
    assert!(removal < Duration::from_secs(6), "{removal:?}");
    let first = plane
        .call(
            Method::GET,
            &format!("/api/v1/edge-nodes/{}", edges[0].0),
            None,
            200,
        )
        .await;
    assert_eq!(first["status"], "unhealthy", "{first}");
    let events = plane
        .call(
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
    let history = plane
        .call(
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

    let told = until("the webhook told of it", Duration::from_secs(10), || {
        received.lock().unwrap().first().cloned()
    })
    .await;
    assert_eq!(told["kind"], "edge_node_unhealthy", "{told}");
    assert_eq!(told["subject"], edges[0].0.as_str());
    assert_eq!(told["severity"], "warning");

    // It answers again: two good checks and it is back.
    edges[0].2 = health_server(SocketAddr::new(IpAddr::V4(edges[0].1), port)).await;
    until("edge 1 back in DNS", Duration::from_secs(15), || {
        (plane.dig() == both).then_some(())
    })
    .await;

    // Deleted by hand: out of DNS at once, then (TTL 1 s) gone.
    plane
        .call(
            Method::DELETE,
            &format!("/api/v1/edge-nodes/{}", edges[1].0),
            None,
            202,
        )
        .await;
    let only_first = vec!["127.0.0.11".to_owned(), "192.0.2.99".to_owned()];
    until("edge 2 out of DNS", Duration::from_secs(10), || {
        (plane.dig() == only_first).then_some(())
    })
    .await;
    let second_id = edges[1].0.clone();
    let started = Instant::now();
    loop {
        let second = plane
            .call(
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
    let records = plane
        .call(Method::GET, "/api/v1/dns/records", None, 200)
        .await;
    assert_eq!(records["records"].as_array().unwrap().len(), 1, "{records}");

    // The zone removed: the record the manager made goes at the provider, the foreign one
    // stays.
    let zones = plane
        .call(Method::GET, "/api/v1/dns/zones", None, 200)
        .await;
    let zone = zones["zones"][0]["id"].as_str().unwrap().to_owned();
    plane
        .call(
            Method::DELETE,
            &format!("/api/v1/dns/zones/{zone}"),
            None,
            204,
        )
        .await;
    until(
        "our record gone at PowerDNS",
        Duration::from_secs(5),
        || (plane.dig() == ["192.0.2.99"]).then_some(()),
    )
    .await;
    let records = plane
        .call(Method::GET, "/api/v1/dns/records", None, 200)
        .await;
    assert_eq!(records["records"], json!([]), "{records}");

    for (_, _, health, agent) in edges {
        health.abort();
        agent.abort();
    }
    plane.stop().await;
}
