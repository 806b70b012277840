//! The SPEC §6 API over real HTTP: request and answer shapes, status codes, error bodies.

mod common;

use common::{Server, assert_error, backends};
use kokoa_core::{CheckStatus, EdgeNodeId, HealthCheck, Timestamp};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn routes_follow_the_spec_and_errors_have_the_documented_shape() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("home-server").await;
        let origin_id = origin["id"].as_str().unwrap();

        // SPEC §6: POST /api/v1/routes → 201.
        let route = s
            .admin(
                Method::POST,
                "/api/v1/routes",
                Some(json!({"hostname": "app.hoge.com", "origin_id": origin_id, "target_port": 8080})),
                201,
            )
            .await;
        let id = route["id"].as_str().unwrap().to_owned();
        let id = id.as_str();
        assert_eq!(route["hostname"], "app.hoge.com");
        assert_eq!(route["origin_id"], origin_id);
        assert_eq!(route["target_port"], 8080);
        // http-01 by default, on a control plane without [acme]: said at once.
        let mut route = route;
        let warnings = route
            .as_object_mut()
            .unwrap()
            .remove("warnings")
            .expect("a warning");
        assert!(
            warnings[0]
                .as_str()
                .unwrap()
                .contains("no certificate will be ordered for app.hoge.com"),
            "{warnings}"
        );

        let listed = s.admin(Method::GET, "/api/v1/routes", None, 200).await;
        assert_eq!(listed["routes"].as_array().unwrap().len(), 1);
        assert_eq!(listed["routes"][0], route);
        let path = format!("/api/v1/routes/{id}");
        assert_eq!(s.admin(Method::GET, &path, None, 200).await, route);

        // Update: same id, new port; host names are normalised.
        let updated = s
            .admin(
                Method::PUT,
                &path,
                Some(json!({"hostname": "App.Hoge.com", "origin_id": origin_id, "target_port": 9090})),
                200,
            )
            .await;
        assert_eq!(
            (updated["id"].as_str(), updated["target_port"].as_u64()),
            (Some(id), Some(9090))
        );
        assert_eq!(updated["hostname"], "app.hoge.com");
        assert_eq!(updated["created_at"], route["created_at"]);

        // A route that orders nothing warns of nothing.
        let quiet = s
            .admin(
                Method::POST,
                "/api/v1/routes",
                Some(json!({"hostname": "plain.hoge.com", "origin_id": origin_id,
                            "target_port": 8080, "certificate": "none"})),
                201,
            )
            .await;
        assert!(quiet.get("warnings").is_none(), "{quiet}");
        let quiet_path = format!("/api/v1/routes/{}", quiet["id"].as_str().unwrap());
        s.admin(Method::DELETE, &quiet_path, None, 204).await;

        // Duplicate → 409 naming the field.
        let body = s
            .admin(
                Method::POST,
                "/api/v1/routes",
                Some(json!({"hostname": "app.hoge.com", "origin_id": origin_id, "target_port": 1})),
                409,
            )
            .await;
        let e = assert_error(&body, "conflict");
        assert_eq!(e["field"], "hostname");
        assert!(
            e["message"].as_str().unwrap().contains("app.hoge.com"),
            "{e}"
        );

        // Invalid values → 422 with the field and the value.
        for (body, field, value) in [
            (
                json!({"hostname": "bad host", "origin_id": origin_id, "target_port": 80}),
                "hostname",
                "bad host",
            ),
            (
                json!({"hostname": "b.hoge.com", "origin_id": origin_id, "target_port": 70000}),
                "target_port",
                "70000",
            ),
            (
                json!({"hostname": "b.hoge.com", "origin_id": origin_id, "target_port": 0}),
                "target_port",
                "0",
            ),
            (
                json!({"hostname": "b.hoge.com", "origin_id": "a/b", "target_port": 80}),
                "origin_id",
                "a/b",
            ),
            (
                json!({"hostname": "b.hoge.com", "origin_id": origin_id, "target_port": "80"}),
                "target_port",
                "\"80\"",
            ),
            (
                json!({"hostname": "b.hoge.com", "origin_id": origin_id}),
                "body",
                "target_port",
            ),
        ] {
            let answer = s
                .admin(Method::POST, "/api/v1/routes", Some(body), 422)
                .await;
            let e = assert_error(&answer, "invalid_value");
            assert_eq!(e["field"], field, "{answer}");
            assert!(e["message"].as_str().unwrap().contains(value), "{answer}");
        }

        // Unknown origin → 404 naming the field; malformed JSON → 400.
        let answer = s
            .admin(
                Method::POST,
                "/api/v1/routes",
                Some(json!({"hostname": "b.hoge.com", "origin_id": "org_nope", "target_port": 80})),
                404,
            )
            .await;
        assert_eq!(assert_error(&answer, "not_found")["field"], "origin_id");
        let response = s
            .client
            .post(format!("{}/api/v1/routes", s.base))
            .bearer_auth(&s.admin)
            .header("content-type", "application/json")
            .body("{\"hostname\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_error(&response.json::<Value>().await.unwrap(), "bad_request");

        // Delete → 204, then 404 everywhere.
        let (status, body) = s.call(Method::DELETE, &path, Some(&s.admin), None).await;
        assert_eq!((status.as_u16(), body), (204, Value::Null));
        for method in [Method::GET, Method::DELETE] {
            let answer = s.admin(method, &path, None, 404).await;
            assert!(
                assert_error(&answer, "not_found")["message"]
                    .as_str()
                    .unwrap()
                    .contains(id)
            );
        }
        let answer = s
            .admin(Method::GET, "/api/v1/routes/not%20an%20id", None, 404)
            .await;
        assert_error(&answer, "not_found");
    }
}

#[tokio::test]
async fn origins_get_their_own_subnet_and_keep_their_routes_safe() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        // SPEC §6 example body and answer.
        let origin = s
            .admin(
                Method::POST,
                "/api/v1/origins",
                Some(json!({
                    "name": "home-server",
                    "domain": "app.example.com",
                    "services": [
                        {"name": "web", "port": 8001, "protocol": "http"},
                        {"name": "api", "port": 8002, "protocol": "http"}
                    ]
                })),
                201,
            )
            .await;
        let id = origin["id"].as_str().unwrap();
        assert_eq!(origin["name"], "home-server");
        assert_eq!(origin["domain"], "app.example.com");
        assert_eq!(origin["wireguard_ip"], "10.0.1.1");
        assert_eq!(origin["network_cidr"], "10.0.1.0/24");
        // Its agent makes its key and registers the public half when it enrolls.
        assert_eq!(origin["wireguard_public_key"], Value::Null);
        assert_eq!(
            origin["config_download_url"],
            format!("/api/v1/origins/{id}/config")
        );
        assert_eq!(origin["services"].as_array().unwrap().len(), 2);

        let second = s.origin("office").await;
        assert_eq!(second["wireguard_ip"], "10.0.2.1");

        // SPEC §6 list shape.
        let list = s.admin(Method::GET, "/api/v1/origins", None, 200).await;
        let first = &list["origins"][0];
        for key in [
            "id",
            "name",
            "domain",
            "status",
            "edge_nodes_count",
            "last_heartbeat",
        ] {
            assert!(first.get(key).is_some(), "{key} missing in {first}");
        }
        assert_eq!(first["name"], "home-server");
        assert_eq!(first["status"], "inactive");
        assert_eq!(first["edge_nodes_count"], 0);
        assert_eq!(first["last_heartbeat"], Value::Null);
        assert_eq!(
            s.admin(Method::GET, &format!("/api/v1/origins/{id}"), None, 200)
                .await["id"],
            id
        );

        // Conflicts and validation name the field.
        let body = s
            .admin(
                Method::POST,
                "/api/v1/origins",
                Some(json!({"name": "home-server"})),
                409,
            )
            .await;
        assert_eq!(assert_error(&body, "conflict")["field"], "name");
        for (body, field) in [
            (json!({"name": "Home Server"}), "name"),
            (json!({"name": "x", "domain": "not a domain"}), "domain"),
            (
                json!({"name": "x", "services": [{"name": "web", "port": 99999}]}),
                "services[0].port",
            ),
            (
                json!({"name": "x", "services": [{"name": "web", "port": 1, "protocol": "udp"}]}),
                "services[0].protocol",
            ),
        ] {
            let answer = s
                .admin(Method::POST, "/api/v1/origins", Some(body), 422)
                .await;
            assert_eq!(
                assert_error(&answer, "invalid_value")["field"],
                field,
                "{answer}"
            );
        }
        let dup = json!({"name": "x", "services": [{"name": "web", "port": 1}, {"name": "web", "port": 2}]});
        let answer = s
            .admin(Method::POST, "/api/v1/origins", Some(dup), 409)
            .await;
        assert_eq!(assert_error(&answer, "conflict")["field"], "services");
        // Nothing half written: no origin "x".
        let names: Vec<Value> = s.admin(Method::GET, "/api/v1/origins", None, 200).await["origins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].clone())
            .collect();
        assert_eq!(names, [json!("home-server"), json!("office")]);

        // A route keeps its origin from being deleted, unless forced.
        let route = s
            .admin(
                Method::POST,
                "/api/v1/routes",
                Some(json!({"hostname": "app.hoge.com", "origin_id": id, "target_port": 8001})),
                201,
            )
            .await;
        let path = format!("/api/v1/origins/{id}");
        let answer = s.admin(Method::DELETE, &path, None, 409).await;
        assert!(
            assert_error(&answer, "in_use")["message"]
                .as_str()
                .unwrap()
                .contains(id)
        );
        s.admin(Method::DELETE, &format!("{path}?force=true"), None, 204)
            .await;
        s.admin(Method::GET, &path, None, 404).await;
        s.admin(
            Method::GET,
            &format!("/api/v1/routes/{}", route["id"].as_str().unwrap()),
            None,
            404,
        )
        .await;
        let answer = s
            .admin(Method::DELETE, &format!("{path}?force=maybe"), None, 422)
            .await;
        assert_error(&answer, "invalid_value");

        // Its subnet is free again.
        assert_eq!(s.origin("third").await["network_cidr"], "10.0.1.0/24");
    }
}

#[tokio::test]
async fn edge_nodes_follow_the_spec_and_get_a_tunnel_per_origin() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let a = s.origin("origin-a").await;
        let a_id = a["id"].as_str().unwrap();

        // SPEC §6 example: a cloud edge for one origin → 202 provisioning.
        let created = s
            .admin(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(
                    json!({"origin_id": a_id, "provider": "digitalocean", "region": "sgp1",
                            "size": "s-1vcpu-1gb", "ssh_key": "ssh-ed25519 AAAA test"}),
                ),
                202,
            )
            .await;
        assert_eq!(created["status"], "provisioning");
        assert_eq!(created["estimated_time_seconds"], 120);
        assert!(created.get("enrollment_token").is_none(), "{created}");
        let dedicated = created["id"].as_str().unwrap().to_owned();

        // A manual edge serving every origin, with an enrollment token and command.
        let manual = s
            .admin(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(json!({"provider": "manual", "region": "sgp1", "public_ip": "203.0.113.10"})),
                202,
            )
            .await;
        let token = manual["enrollment_token"].as_str().unwrap();
        assert!(token.starts_with("kk_enr_"), "{manual}");
        assert_eq!(
            manual["enroll_command"],
            format!(
                "KOKOA_ENROLL_TOKEN={token} kokoa-edge enroll --control-plane https://cp.example.com"
            )
        );
        let shared = manual["id"].as_str().unwrap().to_owned();

        // Tunnels: .10/.11 in origin A's subnet, each edge listening from 51820.
        let edge = s
            .admin(
                Method::GET,
                &format!("/api/v1/edge-nodes/{dedicated}"),
                None,
                200,
            )
            .await;
        assert_eq!(edge["name"], "edge-sgp1-01");
        assert_eq!(edge["tunnels"][0]["wireguard_ip"], "10.0.1.10");
        assert_eq!(edge["tunnels"][0]["listen_port"], 51820);
        let edge = s
            .admin(
                Method::GET,
                &format!("/api/v1/edge-nodes/{shared}"),
                None,
                200,
            )
            .await;
        assert_eq!(edge["name"], "edge-sgp1-02");
        assert_eq!(edge["tunnels"][0]["wireguard_ip"], "10.0.1.11");

        // A new origin gets a tunnel from the edge serving all origins only.
        let b = s.origin("origin-b").await;
        assert_eq!(b["edge_nodes_count"], 1);
        let edge = s
            .admin(
                Method::GET,
                &format!("/api/v1/edge-nodes/{shared}"),
                None,
                200,
            )
            .await;
        let tunnels = edge["tunnels"].as_array().unwrap();
        assert_eq!(tunnels.len(), 2);
        let to_b = tunnels.iter().find(|t| t["origin_id"] == b["id"]).unwrap();
        assert_eq!(
            (to_b["wireguard_ip"].as_str(), to_b["listen_port"].as_u64()),
            (Some("10.0.2.10"), Some(51821))
        );

        // SPEC §6 list shape per origin.
        let list = s
            .admin(
                Method::GET,
                &format!("/api/v1/origins/{a_id}/edge-nodes"),
                None,
                200,
            )
            .await;
        let edges = list["edge_nodes"].as_array().unwrap();
        assert_eq!(edges.len(), 2);
        for key in [
            "id",
            "name",
            "provider",
            "region",
            "public_ip",
            "status",
            "health",
            "uptime_seconds",
            "last_heartbeat",
        ] {
            assert!(edges[0].get(key).is_some(), "{key} missing in {}", edges[0]);
        }
        let manual = edges.iter().find(|e| e["provider"] == "manual").unwrap();
        assert_eq!(manual["public_ip"], "203.0.113.10");
        assert_eq!(
            s.admin(Method::GET, "/api/v1/origins", None, 200).await["origins"][0]["edge_nodes_count"],
            2
        );

        // Validation.
        for (body, field) in [
            (
                json!({"provider": "Digital Ocean", "region": "sgp1"}),
                "provider",
            ),
            (
                json!({"provider": "manual", "region": "sgp1", "public_ip": "1.2.3"}),
                "public_ip",
            ),
            (json!({"provider": "manual", "region": ""}), "region"),
        ] {
            let answer = s
                .admin(Method::POST, "/api/v1/edge-nodes", Some(body), 422)
                .await;
            assert_eq!(
                assert_error(&answer, "invalid_value")["field"],
                field,
                "{answer}"
            );
        }
        let answer = s
            .admin(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(json!({"origin_id": "org_nope", "provider": "manual", "region": "x"})),
                404,
            )
            .await;
        assert_eq!(assert_error(&answer, "not_found")["field"], "origin_id");

        // SPEC §6 deletion answer; in the safe order the edge leaves DNS, the TTL runs out
        // (the longest of the zones': 1 s here), then it is marked deleted and loses its
        // tunnels and its credential.
        let credential = s.enroll(token).await;
        s.admin(
            Method::POST,
            "/api/v1/dns/zones",
            Some(json!({"name": "example.com", "provider": "manual", "ttl": 1})),
            201,
        )
        .await;
        let deleted = s
            .admin(
                Method::DELETE,
                &format!("/api/v1/edge-nodes/{shared}"),
                None,
                202,
            )
            .await;
        assert_eq!(
            deleted,
            json!({"message": "Edge node deletion initiated",
                   "steps": ["Remove from DNS", "Wait for TTL expiration (1s)", "Destroy VPS"]})
        );
        kokoa_control::runtime::tick(&s.state).await.unwrap();
        let draining = s
            .admin(
                Method::GET,
                &format!("/api/v1/edge-nodes/{shared}"),
                None,
                200,
            )
            .await;
        // Out of DNS at once; destroyed only once the TTL has run out.
        assert_eq!(draining["lifecycle"]["removal"], "manual", "{draining}");
        assert!(
            draining["lifecycle"]["steps"]["dns_removed"].is_string(),
            "{draining}"
        );
        assert_ne!(draining["status"], "deleted", "{draining}");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        for _ in 0..3 {
            kokoa_control::runtime::tick(&s.state).await.unwrap();
        }
        let edge = s
            .admin(
                Method::GET,
                &format!("/api/v1/edge-nodes/{shared}"),
                None,
                200,
            )
            .await;
        assert_eq!(edge["status"], "deleted");
        assert!(edge["deleted_at"].is_string());
        assert_eq!(edge["tunnels"], json!([]));
        let (status, body) = s
            .call(
                Method::GET,
                "/api/v1/edge-nodes/me/config",
                Some(&credential),
                None,
            )
            .await;
        assert_eq!(status, 401);
        assert_error(&body, "unauthorized");
        let all = s.admin(Method::GET, "/api/v1/edge-nodes", None, 200).await;
        assert_eq!(all["edge_nodes"].as_array().unwrap().len(), 2);
        s.admin(Method::DELETE, "/api/v1/edge-nodes/edg_nope", None, 404)
            .await;
    }
}

/// Origins created while edges register: each side lists the other after writing its own
/// row, so every edge that serves all origins ends with a tunnel to every one of them (an
/// edge that missed a new origin would never serve its routes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_and_edges_created_at_once_all_get_their_tunnels() {
    const EACH: usize = 6;
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origins = (0..EACH).map(|i| s.new_origin(format!("origin-{i}")));
        let edges = (0..EACH).map(|i| {
            s.admin(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(json!({"provider": "manual", "region": "sgp1",
                            "public_ip": format!("203.0.113.{}", 10 + i)})),
                202,
            )
        });
        let (_, edges) = tokio::join!(
            futures_util::future::join_all(origins),
            futures_util::future::join_all(edges)
        );
        for edge in edges {
            let id = edge["id"].as_str().unwrap();
            let edge = s
                .admin(Method::GET, &format!("/api/v1/edge-nodes/{id}"), None, 200)
                .await;
            let tunnels = edge["tunnels"].as_array().unwrap();
            assert_eq!(tunnels.len(), EACH, "{backend:?}: {edge}");
        }
    }
}

#[tokio::test]
async fn nodes_enroll_once_report_ready_and_send_heartbeats() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("home-server").await;
        let origin_id = origin["id"].as_str().unwrap();
        let created = s
            .admin(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(json!({"provider": "manual", "region": "nrt"})),
                202,
            )
            .await;
        let edge_id = created["id"].as_str().unwrap();
        let token = created["enrollment_token"].as_str().unwrap();

        let (status, enrolled) = s
            .call(
                Method::POST,
                "/api/v1/enroll",
                None,
                Some(json!({"token": token})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(enrolled["node"], json!({"kind": "edge", "id": edge_id}));
        let credential = enrolled["credential"].as_str().unwrap();
        assert!(credential.starts_with("kk_node_"));
        // Single use.
        let (status, body) = s
            .call(
                Method::POST,
                "/api/v1/enroll",
                None,
                Some(json!({"token": token})),
            )
            .await;
        assert_eq!(status, 401);
        assert_error(&body, "unauthorized");

        // SPEC §6 heartbeat.
        let beat = json!({"node_id": edge_id, "status": "healthy",
                          "metrics": {"connections_active": 42, "cpu_percent": 12.3,
                                      "memory_percent": 45.6, "tunnel_rtt_ms": 23}});
        let (status, body) = s
            .call(
                Method::POST,
                "/api/v1/heartbeat",
                Some(credential),
                Some(beat),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            json!({"message": "Heartbeat received", "next_check_in": 5})
        );
        let edge = s
            .admin(
                Method::GET,
                &format!("/api/v1/edge-nodes/{edge_id}"),
                None,
                200,
            )
            .await;
        assert!(edge["last_heartbeat"].is_string(), "{edge}");
        assert_eq!(edge["status"], "provisioning");
        assert_eq!(edge["health"], "unknown");
        assert!(edge.get("agent_error").is_none(), "{edge}");

        // An agent that cannot do its work says why in its heartbeats: the edge shows it,
        // and one event marks when it started and one when it ended (not one per beat).
        let server = &s;
        let edge_id: &str = edge_id;
        let beat = |body: Value| async move {
            let (status, _) = server
                .call(
                    Method::POST,
                    "/api/v1/heartbeat",
                    Some(credential),
                    Some(body),
                )
                .await;
            assert_eq!(status, 200);
            server
                .admin(
                    Method::GET,
                    &format!("/api/v1/edge-nodes/{edge_id}"),
                    None,
                    200,
                )
                .await
        };
        let mut edge = Value::Null;
        for error in [
            "nginx: [emerg] bind() to 0.0.0.0:80 failed (98: Address already in use)",
            "nginx: [emerg] bind() to 0.0.0.0:80 failed (98: Address already in use) again",
        ] {
            edge =
                beat(json!({"node_id": edge_id, "status": "unhealthy", "last_error": error})).await;
        }
        assert!(
            edge["agent_error"]
                .as_str()
                .is_some_and(|e| e.contains("Address already in use) again")),
            "{edge}"
        );
        let edge = beat(json!({"node_id": edge_id, "status": "healthy"})).await;
        assert!(edge.get("agent_error").is_none(), "{edge}");
        let events = s
            .admin(Method::GET, "/api/v1/events?type=edge.agent_*", None, 200)
            .await;
        let seen: Vec<(&str, &str)> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["type"].as_str().unwrap(), e["message"].as_str().unwrap()))
            .collect();
        assert_eq!(seen.len(), 2, "{events}");
        assert!(
            seen.iter()
                .any(|(kind, message)| *kind == "edge.agent_error"
                    && message.contains("agent reports: nginx: [emerg] bind()")),
            "{events}"
        );
        assert!(
            seen.iter().any(|(kind, _)| *kind == "edge.agent_recovered"),
            "{events}"
        );

        // Another node's id → 403; a bad status → 422.
        let (status, body) = s
            .call(
                Method::POST,
                "/api/v1/heartbeat",
                Some(credential),
                Some(json!({"node_id": origin_id, "status": "healthy"})),
            )
            .await;
        assert_eq!(status, 403);
        assert_eq!(assert_error(&body, "forbidden")["field"], "node_id");
        let (status, body) = s
            .call(
                Method::POST,
                "/api/v1/heartbeat",
                Some(credential),
                Some(json!({"node_id": edge_id, "status": "great"})),
            )
            .await;
        assert_eq!(status, 422);
        assert_eq!(assert_error(&body, "invalid_value")["field"], "status");

        // Ready is noted; the edge automation then waits for the tunnels, the current
        // configuration applied and (health checker off here) no checks, and puts the edge
        // into service. Each step is an event.
        let (status, body) = s
            .call(
                Method::POST,
                &format!("/api/v1/edge-nodes/{edge_id}/ready"),
                Some(credential),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "provisioning", "{body}");
        s.admin(
            Method::PUT,
            "/api/v1/modules/health_checker",
            Some(json!({"enabled": false})),
            200,
        )
        .await;
        let (_, config) = s
            .call(
                Method::GET,
                "/api/v1/edge-nodes/me/config",
                Some(credential),
                None,
            )
            .await;
        let tunnels: Vec<Value> = config["tunnels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| json!({"origin_id": t["origin_id"], "interface": "kk0", "status": "up"}))
            .collect();
        let (status, _) = s
            .call(
                Method::POST,
                "/api/v1/heartbeat",
                Some(credential),
                Some(
                    json!({"node_id": edge_id, "status": "healthy", "tunnels": tunnels,
                            "config_hash": config["config_hash"]}),
                ),
            )
            .await;
        assert_eq!(status, 200);
        for _ in 0..3 {
            kokoa_control::runtime::tick(&s.state).await.unwrap();
        }
        let edge = s
            .admin(
                Method::GET,
                &format!("/api/v1/edge-nodes/{edge_id}"),
                None,
                200,
            )
            .await;
        assert_eq!(
            (
                edge["status"].as_str(),
                edge["health"].as_str(),
                edge["lifecycle"]["phase"].as_str()
            ),
            (Some("active"), Some("healthy"), Some("serving")),
            "{edge}"
        );
        let events = s
            .admin(
                Method::GET,
                &format!("/api/v1/events?subject={edge_id}&after=0"),
                None,
                200,
            )
            .await;
        let kinds: Vec<&str> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "edge.agent_error",
                "edge.agent_recovered",
                "edge.enrolled",
                "edge.reported_ready",
                "edge.tunnels_up",
                "edge.certificates_installed",
                "edge.ready"
            ],
            "[{}]",
            s.backend
        );

        // Origins beat every 30 s and turn active.
        let origin_credential = s.enrolled_origin(origin_id).await;
        let (status, body) = s
            .call(Method::POST, "/api/v1/heartbeat", Some(&origin_credential),
                  Some(json!({"node_id": origin_id, "status": "healthy", "metrics": {"disk_percent": 40}})))
            .await;
        assert_eq!(
            (status.as_u16(), body["next_check_in"].as_u64()),
            (200, Some(30))
        );
        let origin = s
            .admin(
                Method::GET,
                &format!("/api/v1/origins/{origin_id}"),
                None,
                200,
            )
            .await;
        assert_eq!(origin["status"], "active");
        assert!(origin["last_heartbeat"].is_string());
        assert_eq!(origin["services_down"], json!([]));
        // A service reported down is named in the origin's view (the Origins page).
        let (status, _) = s
            .call(
                Method::POST,
                "/api/v1/heartbeat",
                Some(&origin_credential),
                Some(json!({"node_id": origin_id, "status": "degraded",
                              "services": [{"name": "web", "port": 8001, "status": "down"}]})),
            )
            .await;
        assert_eq!(status, 200);
        let origin = s
            .admin(
                Method::GET,
                &format!("/api/v1/origins/{origin_id}"),
                None,
                200,
            )
            .await;
        assert_eq!(origin["services_down"], json!(["web"]), "{origin}");

        // Health history: newest first, limited.
        let path = format!("/api/v1/edge-nodes/{edge_id}/health-history");
        assert_eq!(
            s.admin(Method::GET, &path, None, 200).await,
            json!({"checks": []})
        );
        let id = EdgeNodeId::parse(edge_id).unwrap();
        for (i, status) in [
            CheckStatus::Success,
            CheckStatus::Failure,
            CheckStatus::Success,
        ]
        .into_iter()
        .enumerate()
        {
            s.state
                .store()
                .record_health_check(
                    &HealthCheck {
                        edge_node_id: id.clone(),
                        check: "http".into(),
                        status,
                        response_time_ms: Some(40 + i as u32),
                        error_message: None,
                        checked_at: Timestamp::from_unix(1_737_455_400 + i as i64).unwrap(),
                    },
                    None,
                )
                .await
                .unwrap();
        }
        let history = s
            .admin(Method::GET, &format!("{path}?limit=2"), None, 200)
            .await;
        assert_eq!(
            history,
            json!({"checks": [
                {"timestamp": "2025-01-21T10:30:02Z", "status": "success", "response_time_ms": 42},
                {"timestamp": "2025-01-21T10:30:01Z", "status": "failure", "response_time_ms": 41},
            ]})
        );
        assert_eq!(
            s.admin(Method::GET, &path, None, 200).await["checks"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        for bad in ["0", "1001", "x"] {
            let answer = s
                .admin(Method::GET, &format!("{path}?limit={bad}"), None, 422)
                .await;
            assert_error(&answer, "invalid_value");
        }
        s.admin(
            Method::GET,
            "/api/v1/edge-nodes/edg_nope/health-history",
            None,
            404,
        )
        .await;
    }
}

#[tokio::test]
async fn tokens_enrollments_events_and_unknown_endpoints() {
    for backend in backends() {
        let s = Server::start(&backend).await;

        let created = s
            .admin(
                Method::POST,
                "/api/v1/tokens",
                Some(json!({"name": "ci", "role": "viewer"})),
                201,
            )
            .await;
        let token = created["token"].as_str().unwrap();
        assert!(
            token.starts_with("kk_api_") && token.len() > 40,
            "{created}"
        );
        assert_eq!(
            (created["name"].as_str(), created["role"].as_str()),
            (Some("ci"), Some("viewer"))
        );
        let (status, _) = s
            .call(Method::GET, "/api/v1/routes", Some(token), None)
            .await;
        assert_eq!(status, 200);
        let listed = s.admin(Method::GET, "/api/v1/tokens", None, 200).await;
        let mut names: Vec<&str> = listed["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["admin", "ci", "viewer"]);
        assert!(
            listed["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t.get("token").is_none()),
            "secrets are shown once"
        );
        s.admin(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", created["id"].as_str().unwrap()),
            None,
            204,
        )
        .await;
        let (status, _) = s
            .call(Method::GET, "/api/v1/routes", Some(token), None)
            .await;
        assert_eq!(status, 401, "a revoked token is refused");
        let answer = s
            .admin(
                Method::POST,
                "/api/v1/tokens",
                Some(json!({"name": "x", "role": "root"})),
                422,
            )
            .await;
        assert_eq!(assert_error(&answer, "invalid_value")["field"], "role");
        s.admin(Method::DELETE, "/api/v1/tokens/tok_nope", None, 404)
            .await;

        // Enrollment tokens for an origin.
        let origin = s.origin("home-server").await;
        let id = origin["id"].as_str().unwrap();
        let issued = s
            .admin(
                Method::POST,
                "/api/v1/enrollments",
                Some(json!({"node_kind": "origin", "node_id": id, "expires_in_seconds": 600, "uses": 2})),
                201,
            )
            .await;
        assert_eq!(issued["node"], json!({"kind": "origin", "id": id}));
        assert_eq!(issued["uses_left"], 2);
        let token = issued["token"].as_str().unwrap();
        s.enroll(token).await;
        s.enroll(token).await;
        let (status, _) = s
            .call(
                Method::POST,
                "/api/v1/enroll",
                None,
                Some(json!({"token": token})),
            )
            .await;
        assert_eq!(status, 401, "two uses only");
        for (body, field, status) in [
            (
                json!({"node_kind": "user", "node_id": id}),
                "node_kind",
                422,
            ),
            (
                json!({"node_kind": "origin", "node_id": id, "uses": 0}),
                "uses",
                422,
            ),
            (
                json!({"node_kind": "origin", "node_id": id, "expires_in_seconds": 5}),
                "expires_in_seconds",
                422,
            ),
            (
                json!({"node_kind": "edge", "node_id": "edg_nope"}),
                "node_id",
                404,
            ),
        ] {
            let answer = s
                .admin(Method::POST, "/api/v1/enrollments", Some(body), status)
                .await;
            assert_eq!(answer["error"]["field"], field, "{answer}");
        }

        // Events.
        let accepted = s
            .admin(
                Method::POST,
                "/api/v1/internal/events",
                Some(json!({"type": "dns.record.added", "data": {"hostname": "app.hoge.com"}})),
                202,
            )
            .await;
        assert_eq!(accepted["message"], "Event accepted");
        let listed = s
            .admin(Method::GET, "/api/v1/events?type=dns.*", None, 200)
            .await;
        assert_eq!(listed["events"][0]["id"], accepted["id"], "{listed}");
        assert_eq!(listed["events"][0]["data"]["hostname"], "app.hoge.com");
        let answer = s
            .admin(
                Method::POST,
                "/api/v1/internal/events",
                Some(json!({"type": "Bad Type", "data": {}})),
                422,
            )
            .await;
        assert_eq!(assert_error(&answer, "invalid_value")["field"], "type");
        let answer = s
            .admin(
                Method::POST,
                "/api/v1/internal/events",
                Some(json!({"type": "x", "data": [1]})),
                422,
            )
            .await;
        assert_eq!(assert_error(&answer, "invalid_value")["field"], "data");

        // Unknown endpoints and methods answer in the same shape.
        let (status, body) = s
            .call(Method::GET, "/api/v1/nothing", Some(&s.admin), None)
            .await;
        assert_eq!(status, 404);
        assert_error(&body, "not_found");
        let (status, body) = s
            .call(Method::PATCH, "/api/v1/routes", Some(&s.admin), None)
            .await;
        assert_eq!(status, 405);
        assert_error(&body, "method_not_allowed");
        let (status, body) = s.call(Method::GET, "/health", None, None).await;
        assert_eq!((status.as_u16(), body), (200, json!({"status": "ok"})));
        let (status, body) = s.call(Method::GET, "/ready", None, None).await;
        assert_eq!((status.as_u16(), body), (200, json!({"status": "ready"})));
    }
}

/// `/ready` answers 503 while the database's schema is not this build's (an older backup
/// restored under the running control plane, or a newer version's upgrade), and ready
/// again once it is; `/health` stays 200 throughout.
#[tokio::test]
async fn ready_needs_the_schema_of_this_build() {
    let s = Server::start(&common::Backend::Sqlite).await;
    let (status, body) = s.call(Method::GET, "/ready", None, None).await;
    assert_eq!((status.as_u16(), body), (200, json!({"status": "ready"})));
    let db = rusqlite::Connection::open(common::sqlite_path(s.dir.path())).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)",
        [],
    )
    .unwrap();
    let (status, body) = s.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, 503, "{body}");
    let said = body["status"].as_str().unwrap();
    assert!(
        said.starts_with("not_ready: the database's schema is version 99, this control plane's "),
        "{said}"
    );
    let (status, _) = s.call(Method::GET, "/health", None, None).await;
    assert_eq!(status, 200);
    db.execute("DELETE FROM schema_migrations WHERE version = 99", [])
        .unwrap();
    let (status, _) = s.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, 200);
}
