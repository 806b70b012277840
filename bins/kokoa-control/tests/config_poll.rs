//! The configuration nodes pull (SPEC §4): contents, `ETag` / `304`, and long polling that
//! delivers a change within a second.

mod common;

use std::time::{Duration, Instant};

use common::{Server, backends};
use kokoa_core::EdgeConfig;
use reqwest::Method;
use serde_json::{Value, json};

const ME: &str = "/api/v1/edge-nodes/me/config";

#[tokio::test]
async fn an_edge_gets_its_routes_tunnels_and_keys() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let a = s.new_origin("origin-a".into()).await;
        let b = s.new_origin("origin-b".into()).await;
        let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
        for (host, origin, port) in [("app.hoge.com", a_id, 8080), ("wiki.fuga.com", b_id, 8000)] {
            s.admin(
                Method::POST,
                "/api/v1/routes",
                Some(json!({"hostname": host, "origin_id": origin, "target_port": port})),
                201,
            )
            .await;
        }
        let (all_id, all_credential) = s.enrolled_edge(None).await;
        let (_, only_b) = s.enrolled_edge(Some(b_id)).await;
        // Tunnels appear once the origins' agents have registered their keys.
        let (status, body) = s.call(Method::GET, ME, Some(&all_credential), None).await;
        assert_eq!(
            (status.as_u16(), &body["tunnels"]),
            (200, &json!([])),
            "{body}"
        );
        s.enrolled_origin(a_id).await;
        s.enrolled_origin(b_id).await;
        let a = s
            .admin(Method::GET, &format!("/api/v1/origins/{a_id}"), None, 200)
            .await;

        let (status, body) = s.call(Method::GET, ME, Some(&all_credential), None).await;
        assert_eq!(status, 200);
        // SPEC §4 shape, parsed and checked by the edge's own type.
        let config: EdgeConfig = serde_json::from_value(body.clone()).unwrap();
        config.verify_hash().unwrap();
        assert_eq!(body["hostnames"], json!(["app.hoge.com", "wiki.fuga.com"]));
        // SPEC §10.4 limits unless the operator set others.
        assert_eq!(
            body["rate_limits"],
            json!({"requests_per_second": 10, "burst": 20, "connections_per_address": 10})
        );
        assert_eq!(
            body["routes"],
            json!({"app.hoge.com": "10.0.1.1:8080", "wiki.fuga.com": "10.0.2.1:8000"})
        );
        // One tunnel per origin, all with the key the edge registered; no private key.
        let edge = s
            .admin(
                Method::GET,
                &format!("/api/v1/edge-nodes/{all_id}"),
                None,
                200,
            )
            .await;
        assert!(edge["wireguard_public_key"].is_string(), "{edge}");
        assert_eq!(body["wireguard_public_key"], edge["wireguard_public_key"]);
        assert!(!body.to_string().contains("private"), "{body}");
        let tunnels = &config.content().tunnels;
        assert_eq!(tunnels.len(), 2);
        for tunnel in tunnels {
            let published = edge["tunnels"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["origin_id"] == tunnel.origin_id.as_str())
                .unwrap();
            assert_eq!(published["public_key"], edge["wireguard_public_key"]);
            assert_eq!(tunnel.address.addr().to_string(), published["wireguard_ip"]);
            assert_eq!(
                u64::from(tunnel.listen_port.get()),
                published["listen_port"]
            );
        }
        let to_a = tunnels
            .iter()
            .find(|t| t.origin_id.as_str() == a_id)
            .unwrap();
        assert_eq!(to_a.origin_public_key.as_str(), a["wireguard_public_key"]);
        assert_eq!(to_a.origin_ip.to_string(), "10.0.1.1");

        // The edge created for origin B sees B only.
        let (_, body) = s.call(Method::GET, ME, Some(&only_b), None).await;
        assert_eq!(body["routes"], json!({"wiki.fuga.com": "10.0.2.1:8000"}));
        assert_eq!(body["tunnels"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn etag_gives_304_and_a_long_poll_returns_a_change_within_a_second() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("home-server").await;
        let origin_id = origin["id"].as_str().unwrap().to_owned();
        let (_, credential) = s.enrolled_edge(None).await;

        let first = s.send(Method::GET, ME, Some(&credential), None, &[]).await;
        assert_eq!(first.status(), 200);
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        let body: Value = first.json().await.unwrap();
        assert_eq!(
            etag,
            format!("\"{}\"", body["config_hash"].as_str().unwrap())
        );

        // Unchanged → 304 with the same ETag and no body.
        let again = s
            .send(
                Method::GET,
                ME,
                Some(&credential),
                None,
                &[("if-none-match", &etag)],
            )
            .await;
        assert_eq!(again.status(), 304);
        assert_eq!(again.headers()["etag"], etag.as_str());
        assert!(again.bytes().await.unwrap().is_empty());
        let stale = s
            .send(
                Method::GET,
                ME,
                Some(&credential),
                None,
                &[("if-none-match", "\"0000\"")],
            )
            .await;
        assert_eq!(stale.status(), 200);

        // A long poll with nothing changing answers 304 after the wait.
        let started = Instant::now();
        let waited = s
            .send(
                Method::GET,
                &format!("{ME}?wait=1"),
                Some(&credential),
                None,
                &[("if-none-match", &etag)],
            )
            .await;
        assert_eq!(waited.status(), 304);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );

        // A route created while the edge waits reaches it at once.
        let poll = {
            let (client, url, credential, etag) = (
                s.client.clone(),
                format!("{}{ME}?wait=30", s.base),
                credential.clone(),
                etag.clone(),
            );
            tokio::spawn(async move {
                let response = client
                    .get(url)
                    .bearer_auth(credential)
                    .header("if-none-match", etag)
                    .send()
                    .await
                    .unwrap();
                let arrived = Instant::now();
                (
                    response.status(),
                    response.json::<Value>().await.unwrap(),
                    arrived,
                )
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished(), "the poll must wait for a change");
        let changed_at = Instant::now();
        s.admin(
            Method::POST,
            "/api/v1/routes",
            Some(json!({"hostname": "new.hoge.com", "origin_id": origin_id, "target_port": 3000})),
            201,
        )
        .await;
        let (status, body, arrived) = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("the poll answers after the change")
            .unwrap();
        let latency = arrived.duration_since(changed_at);
        assert_eq!(status, 200);
        assert_eq!(body["routes"]["new.hoge.com"], "10.0.1.1:3000");
        assert!(
            latency < Duration::from_secs(1),
            "change reached the edge after {latency:?}"
        );
        eprintln!("[{}] long-poll change latency: {latency:?}", s.backend);

        // A change signal that leaves this edge's configuration as it was keeps it waiting
        // until the deadline.
        let new_etag = format!("\"{}\"", body["config_hash"].as_str().unwrap());
        let poll = {
            let (client, url, credential) = (
                s.client.clone(),
                format!("{}{ME}?wait=1", s.base),
                credential.clone(),
            );
            tokio::spawn(async move {
                client
                    .get(url)
                    .bearer_auth(credential)
                    .header("if-none-match", new_etag)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.state.notify_changed();
        assert_eq!(poll.await.unwrap(), 304);

        // Bad wait values are 422.
        let (status, _) = s
            .call(
                Method::GET,
                &format!("{ME}?wait=-1"),
                Some(&credential),
                None,
            )
            .await;
        assert_eq!(status, 422);
    }
}

#[tokio::test]
async fn an_origin_follows_its_edges() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("home-server").await;
        let id = origin["id"].as_str().unwrap();
        let credential = s.enrolled_origin(id).await;
        let path = "/api/v1/origins/me/config";

        let response = s
            .send(Method::GET, path, Some(&credential), None, &[])
            .await;
        assert_eq!(response.status(), 200);
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        let first: Value = response.json().await.unwrap();
        assert_eq!(first["origin_id"], id);
        let wg = kokoa_wg::Config::parse_template(
            first["wg0_conf"].as_str().unwrap(),
            kokoa_wg::Format::WgQuick,
            kokoa_wg::PrivateKey::generate(),
        )
        .unwrap();
        assert!(wg.peers.is_empty());

        // An edge appears: the origin's long poll returns a wg0.conf that dials it.
        let poll = {
            let (client, url, credential) = (
                s.client.clone(),
                format!("{}{path}?wait=30", s.base),
                credential.clone(),
            );
            tokio::spawn(async move {
                client
                    .get(url)
                    .bearer_auth(credential)
                    .header("if-none-match", etag)
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.enrolled_edge(None).await;
        let body = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .unwrap()
            .unwrap();
        let wg = kokoa_wg::Config::parse_template(
            body["wg0_conf"].as_str().unwrap(),
            kokoa_wg::Format::WgQuick,
            kokoa_wg::PrivateKey::generate(),
        )
        .unwrap();
        assert_eq!(wg.peers.len(), 1);
        assert_eq!(
            wg.peers[0].endpoint.as_ref().unwrap().to_string(),
            "203.0.113.10:51820"
        );
        assert_eq!(wg.peers[0].allowed_ips[0].to_string(), "10.0.1.10/32");
        assert_ne!(body["config_hash"], first["config_hash"]);
    }
}

#[tokio::test]
async fn a_change_made_by_another_control_plane_is_seen_within_the_snapshot_age() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("home-server").await;
        let (_, credential) = s.enrolled_edge(None).await;
        let (_, before) = s.call(Method::GET, ME, Some(&credential), None).await;
        assert_eq!(before["routes"], json!({}));

        // Written to the database directly, as another control plane would: nothing tells
        // this one, so it is seen once the cached snapshot has aged out.
        let written = Instant::now();
        s.state
            .store()
            .create_route(&kokoa_core::Route {
                id: kokoa_core::RouteId::new(),
                hostname: kokoa_core::Hostname::parse("other.hoge.com").unwrap(),
                origin_id: kokoa_core::OriginId::parse(origin["id"].as_str().unwrap()).unwrap(),
                target_port: kokoa_core::Port::new(8080).unwrap(),
                certificate: Default::default(),
                created_at: kokoa_core::Timestamp::now(),
            })
            .await
            .unwrap();
        let seen = loop {
            let (_, body) = s.call(Method::GET, ME, Some(&credential), None).await;
            if body["routes"]["other.hoge.com"] == "10.0.1.1:8080" {
                break written.elapsed();
            }
            assert!(
                written.elapsed() < Duration::from_secs(5),
                "never seen: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let limit = kokoa_runtime::payload::SNAPSHOT_TTL + Duration::from_millis(500);
        assert!(seen <= limit, "seen after {seen:?}");
    }
}

#[tokio::test]
async fn a_service_reported_down_gets_503_on_the_edges_for_its_routes_only() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("origin-a").await;
        let id = origin["id"].as_str().unwrap();
        for (host, port) in [("app.hoge.com", 8080), ("api.hoge.com", 8081)] {
            s.admin(
                Method::POST,
                "/api/v1/routes",
                Some(json!({"hostname": host, "origin_id": id, "target_port": port})),
                201,
            )
            .await;
        }
        let origin_credential = s.enrolled_origin(id).await;
        let (_, edge_credential) = s.enrolled_edge(None).await;
        let heartbeat = |api: &str| {
            json!({"node_id": id, "status": "degraded", "services": [
                {"name": "app", "port": 8080, "status": "up"},
                {"name": "api", "port": 8081, "status": api},
            ]})
        };
        let (status, _) = s
            .call(
                Method::POST,
                "/api/v1/heartbeat",
                Some(&origin_credential),
                Some(heartbeat("up")),
            )
            .await;
        assert_eq!(status, 200);
        let response = s
            .send(Method::GET, ME, Some(&edge_credential), None, &[])
            .await;
        let etag = response.headers()["etag"].to_str().unwrap().to_owned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["unavailable"], json!([]));

        // The edge waits; the origin reports one service down; the edge hears at once.
        let poll = {
            let (client, url, credential) = (
                s.client.clone(),
                format!("{}{ME}?wait=30", s.base),
                edge_credential.clone(),
            );
            tokio::spawn(async move {
                client
                    .get(url)
                    .bearer_auth(credential)
                    .header("if-none-match", etag)
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let reported = Instant::now();
        s.call(
            Method::POST,
            "/api/v1/heartbeat",
            Some(&origin_credential),
            Some(heartbeat("down")),
        )
        .await;
        // The health judge (woken by the heartbeat where the duties run) decides.
        kokoa_control::runtime::tick(&s.state).await.unwrap();
        let body = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .unwrap()
            .unwrap();
        assert!(reported.elapsed() < Duration::from_secs(1));
        assert_eq!(body["unavailable"], json!(["api.hoge.com"]));
        let config: EdgeConfig = serde_json::from_value(body).unwrap();
        config.verify_hash().unwrap();

        // Back up: served again.
        s.call(
            Method::POST,
            "/api/v1/heartbeat",
            Some(&origin_credential),
            Some(heartbeat("up")),
        )
        .await;
        kokoa_control::runtime::tick(&s.state).await.unwrap();
        let (_, body) = s.call(Method::GET, ME, Some(&edge_credential), None).await;
        assert_eq!(body["unavailable"], json!([]));
    }
}

#[tokio::test]
async fn a_flapping_service_changes_the_edges_configuration_a_bounded_number_of_times() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("origin-a").await;
        let id = origin["id"].as_str().unwrap();
        s.admin(
            Method::POST,
            "/api/v1/routes",
            Some(json!({"hostname": "api.hoge.com", "origin_id": id, "target_port": 8081})),
            201,
        )
        .await;
        let origin_credential = s.enrolled_origin(id).await;
        let (_, edge_credential) = s.enrolled_edge(None).await;
        let limit = s.state.settings().health.damping.max_changes as usize;
        // The service goes down and up twenty times within a few seconds: every report is
        // judged at once, but the edge's configuration changes only `limit` times.
        let (_, body) = s.call(Method::GET, ME, Some(&edge_credential), None).await;
        let mut hashes = vec![body["config_hash"].as_str().unwrap().to_owned()];
        for flip in 0..20 {
            let status = if flip % 2 == 0 { "down" } else { "up" };
            let heartbeat = json!({"node_id": id, "status": "healthy", "services": [
                {"name": "api", "port": 8081, "status": status},
            ]});
            let (code, _) = s
                .call(
                    Method::POST,
                    "/api/v1/heartbeat",
                    Some(&origin_credential),
                    Some(heartbeat),
                )
                .await;
            assert_eq!(code, 200);
            kokoa_control::runtime::tick(&s.state).await.unwrap();
            let (_, body) = s.call(Method::GET, ME, Some(&edge_credential), None).await;
            let hash = body["config_hash"].as_str().unwrap().to_owned();
            if hashes.last() != Some(&hash) {
                hashes.push(hash);
            }
        }
        // The first configuration, then at most `limit` changes.
        assert_eq!(hashes.len(), limit + 1, "{hashes:?}");
        let (_, events) = s
            .call(
                Method::GET,
                "/api/v1/events?type=origin.flapping",
                Some(&s.admin),
                None,
            )
            .await;
        assert_eq!(
            events["events"].as_array().map(Vec::len),
            Some(1),
            "{events}"
        );
    }
}
