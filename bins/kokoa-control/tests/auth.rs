//! Authentication on every endpoint (SPEC §10.1), table-driven: no token and an unknown
//! token are 401, a valid token of the wrong kind is 403, a viewer may only read.

mod common;

use common::{Server, assert_error, backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Audience {
    /// API tokens of any role (reads).
    Reader,
    /// Admin API tokens only (writes).
    Admin,
    /// Node credentials.
    Node,
}

#[tokio::test]
async fn every_endpoint_checks_its_bearer_token() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("home-server").await;
        let origin_id = origin["id"].as_str().unwrap().to_owned();
        let (edge_id, edge_credential) = s.enrolled_edge(None).await;
        let origin_credential = s.enrolled_origin(&origin_id).await;
        let route = s
            .admin(
                Method::POST,
                "/api/v1/routes",
                Some(json!({"hostname": "app.hoge.com", "origin_id": origin_id, "target_port": 8080})),
                201,
            )
            .await;
        let route_id = route["id"].as_str().unwrap();
        let token_id = s.admin(Method::GET, "/api/v1/tokens", None, 200).await["tokens"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();

        let user_id = s
            .admin(
                Method::POST,
                "/api/v1/users",
                Some(json!({"email": "someone@example.com", "role": "viewer"})),
                201,
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let route_body =
            json!({"hostname": "b.hoge.com", "origin_id": origin_id, "target_port": 1});
        let table: Vec<(Method, String, Option<Value>, Audience)> = vec![
            (Method::GET, "/api/v1/routes".into(), None, Audience::Reader),
            (Method::GET, "/metrics".into(), None, Audience::Reader),
            (
                Method::GET,
                "/api/v1/prometheus/targets".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::POST,
                "/api/v1/routes".into(),
                Some(route_body.clone()),
                Audience::Admin,
            ),
            (
                Method::GET,
                format!("/api/v1/routes/{route_id}"),
                None,
                Audience::Reader,
            ),
            (
                Method::GET,
                format!("/api/v1/routes/{route_id}/traffic"),
                None,
                Audience::Reader,
            ),
            (
                Method::GET,
                format!("/api/v1/edge-nodes/{edge_id}/traffic"),
                None,
                Audience::Reader,
            ),
            (
                Method::PUT,
                format!("/api/v1/routes/{route_id}"),
                Some(route_body),
                Audience::Admin,
            ),
            (
                Method::DELETE,
                format!("/api/v1/routes/{route_id}"),
                None,
                Audience::Admin,
            ),
            (
                Method::GET,
                "/api/v1/origins".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::POST,
                "/api/v1/origins".into(),
                Some(json!({"name": "o2"})),
                Audience::Admin,
            ),
            (
                Method::GET,
                format!("/api/v1/origins/{origin_id}"),
                None,
                Audience::Reader,
            ),
            (
                Method::DELETE,
                format!("/api/v1/origins/{origin_id}"),
                None,
                Audience::Admin,
            ),
            (
                Method::GET,
                format!("/api/v1/origins/{origin_id}/config"),
                None,
                Audience::Admin,
            ),
            (
                Method::GET,
                format!("/api/v1/origins/{origin_id}/edge-nodes"),
                None,
                Audience::Reader,
            ),
            (
                Method::GET,
                "/api/v1/edge-nodes".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::POST,
                "/api/v1/edge-nodes".into(),
                Some(json!({"provider": "manual", "region": "x"})),
                Audience::Admin,
            ),
            (
                Method::GET,
                format!("/api/v1/edge-nodes/{edge_id}"),
                None,
                Audience::Reader,
            ),
            (
                Method::DELETE,
                format!("/api/v1/edge-nodes/{edge_id}"),
                None,
                Audience::Admin,
            ),
            (
                Method::GET,
                format!("/api/v1/edge-nodes/{edge_id}/health-history"),
                None,
                Audience::Reader,
            ),
            (
                Method::POST,
                format!("/api/v1/edge-nodes/{edge_id}/rotate-keys"),
                None,
                Audience::Admin,
            ),
            (
                Method::POST,
                format!("/api/v1/origins/{origin_id}/rotate-keys"),
                None,
                Audience::Admin,
            ),
            (Method::GET, "/api/v1/tokens".into(), None, Audience::Reader),
            (
                Method::POST,
                "/api/v1/tokens".into(),
                Some(json!({"name": "x"})),
                Audience::Admin,
            ),
            (
                Method::DELETE,
                format!("/api/v1/tokens/{token_id}"),
                None,
                Audience::Admin,
            ),
            (Method::GET, "/api/v1/users".into(), None, Audience::Reader),
            (
                Method::POST,
                "/api/v1/users".into(),
                Some(json!({"email": "other@example.com"})),
                Audience::Admin,
            ),
            (
                Method::PUT,
                format!("/api/v1/users/{user_id}"),
                Some(json!({"role": "admin"})),
                Audience::Admin,
            ),
            (
                Method::POST,
                format!("/api/v1/users/{user_id}/reset-totp"),
                None,
                Audience::Admin,
            ),
            (
                Method::DELETE,
                format!("/api/v1/users/{user_id}"),
                None,
                Audience::Admin,
            ),
            (
                Method::POST,
                "/api/v1/enrollments".into(),
                Some(json!({"node_kind": "origin", "node_id": origin_id})),
                Audience::Admin,
            ),
            (
                Method::POST,
                "/api/v1/internal/events".into(),
                Some(json!({"type": "edge.ready", "data": {}})),
                Audience::Admin,
            ),
            (Method::GET, "/api/v1/events".into(), None, Audience::Reader),
            (
                Method::GET,
                "/api/v1/modules".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::PUT,
                "/api/v1/modules/dns_manager".into(),
                Some(json!({"enabled": true})),
                Audience::Admin,
            ),
            (
                Method::GET,
                "/api/v1/dns/zones".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::POST,
                "/api/v1/dns/zones".into(),
                Some(json!({"name": "hoge.com", "provider": "manual"})),
                Audience::Admin,
            ),
            (
                Method::DELETE,
                "/api/v1/dns/zones/dnz_1".into(),
                None,
                Audience::Admin,
            ),
            (
                Method::GET,
                "/api/v1/dns/records".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::GET,
                "/api/v1/dns/plan".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::POST,
                "/api/v1/dns/reconcile".into(),
                None,
                Audience::Admin,
            ),
            (
                Method::GET,
                "/api/v1/dns/instructions".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::GET,
                "/api/v1/events/stream".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::GET,
                "/api/v1/certificates".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::POST,
                "/api/v1/certificates".into(),
                Some(json!({"certificate_pem": "x", "private_key_pem": "y"})),
                Audience::Admin,
            ),
            (
                Method::POST,
                "/api/v1/certificates/crt_1/renew".into(),
                None,
                Audience::Admin,
            ),
            (
                Method::GET,
                "/api/v1/certificates/settings".into(),
                None,
                Audience::Reader,
            ),
            (
                Method::PUT,
                "/api/v1/certificates/settings".into(),
                Some(json!({"renew_days_before": 30})),
                Audience::Admin,
            ),
            (
                Method::GET,
                "/api/v1/edge-nodes/me/certificates/crt-1".into(),
                None,
                Audience::Node,
            ),
            (
                Method::GET,
                "/api/v1/edge-nodes/me/config".into(),
                None,
                Audience::Node,
            ),
            (
                Method::GET,
                "/api/v1/origins/me/config".into(),
                None,
                Audience::Node,
            ),
            (
                Method::GET,
                format!("/api/v1/edge-nodes/{edge_id}/config"),
                None,
                Audience::Node,
            ),
            (
                Method::POST,
                format!("/api/v1/edge-nodes/{edge_id}/ready"),
                None,
                Audience::Node,
            ),
            (
                Method::POST,
                "/api/v1/heartbeat".into(),
                Some(json!({"node_id": edge_id, "status": "healthy"})),
                Audience::Node,
            ),
            (
                Method::POST,
                "/api/v1/wireguard-key".into(),
                Some(json!({"public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="})),
                Audience::Node,
            ),
        ];

        // The document lists exactly these secured operations (plus the open ones), so a
        // new endpoint cannot escape this table.
        let doc = kokoa_control::api::openapi();
        let mut documented = Vec::new();
        for (path, item) in &doc.paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
                ("DELETE", &item.delete),
            ] {
                if op
                    .as_ref()
                    .is_some_and(|o| o.security.as_ref().is_some_and(|s| !s.is_empty()))
                {
                    documented.push(format!("{method} {path}"));
                }
            }
        }
        let mut tested: Vec<String> = table
            .iter()
            .map(|(m, p, _, _)| {
                let template = p
                    .replace(&origin_id, "{id}")
                    .replace(&edge_id, "{id}")
                    .replace(route_id, "{id}")
                    .replace(&token_id, "{id}")
                    .replace(&user_id, "{id}")
                    .replace("dnz_1", "{id}")
                    .replace("crt_1", "{id}")
                    .replace("crt-1", "{name}")
                    .replace("dns_manager", "{name}");
                let template = if template.ends_with("/{id}/edge-nodes") {
                    template.replace("{id}", "{origin_id}")
                } else {
                    template
                };
                format!("{m} {template}")
            })
            .collect();
        documented.sort();
        tested.sort();
        assert_eq!(tested, documented);

        for (method, path, body, audience) in &table {
            let what = format!("[{}] {method} {path}", s.backend);

            let (status, answer) = s.call(method.clone(), path, None, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{what} without a token: {answer}"
            );
            assert_error(&answer, "unauthorized");
            for wrong in ["kk_api_wrong", "kk_node_wrong", "kk_enr_wrong", "garbage"] {
                let (status, answer) = s
                    .call(method.clone(), path, Some(wrong), body.clone())
                    .await;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{what} with {wrong}: {answer}"
                );
            }
            let malformed = s
                .send(
                    method.clone(),
                    path,
                    None,
                    body.clone(),
                    &[("authorization", "Basic YWJj")],
                )
                .await;
            assert_eq!(
                malformed.status(),
                StatusCode::UNAUTHORIZED,
                "{what} with Basic auth"
            );

            let forbidden: Vec<&str> = match audience {
                Audience::Reader => vec![&edge_credential, &origin_credential],
                Audience::Admin => vec![&edge_credential, &origin_credential, &s.viewer],
                Audience::Node => vec![&s.viewer],
            };
            for token in forbidden {
                let (status, answer) = s
                    .call(method.clone(), path, Some(token), body.clone())
                    .await;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{what} with {token:.9}…: {answer}"
                );
                assert_error(&answer, "forbidden");
            }
        }

        // Node endpoints: the right node only.
        let (other_edge, other_credential) = s.enrolled_edge(None).await;
        let checks = [
            (
                Method::GET,
                "/api/v1/edge-nodes/me/config".to_owned(),
                &s.admin,
                None,
            ),
            (
                Method::GET,
                "/api/v1/edge-nodes/me/config".to_owned(),
                &origin_credential,
                None,
            ),
            (
                Method::GET,
                "/api/v1/origins/me/config".to_owned(),
                &edge_credential,
                None,
            ),
            (
                Method::GET,
                "/api/v1/edge-nodes/me/certificates/crt-1".to_owned(),
                &origin_credential,
                None,
            ),
            (
                Method::GET,
                "/api/v1/origins/me/config".to_owned(),
                &s.admin,
                None,
            ),
            (
                Method::POST,
                format!("/api/v1/edge-nodes/{edge_id}/ready"),
                &other_credential,
                None,
            ),
            (
                Method::POST,
                format!("/api/v1/edge-nodes/{edge_id}/ready"),
                &s.admin,
                None,
            ),
            (
                Method::GET,
                format!("/api/v1/edge-nodes/{edge_id}/config"),
                &other_credential,
                None,
            ),
            (
                Method::POST,
                "/api/v1/heartbeat".to_owned(),
                &other_credential,
                Some(json!({"node_id": edge_id, "status": "healthy"})),
            ),
        ];
        for (method, path, token, body) in checks {
            let (status, answer) = s.call(method.clone(), &path, Some(token), body).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{method} {path} as another: {answer}"
            );
        }
        for (token, want) in [(&other_credential, 200), (&edge_credential, 403)] {
            let (status, _) = s
                .call(
                    Method::POST,
                    &format!("/api/v1/edge-nodes/{other_edge}/ready"),
                    Some(token),
                    None,
                )
                .await;
            assert_eq!(status.as_u16(), want);
        }

        // The open endpoints need no token.
        for path in ["/health", "/api/v1/openapi.json"] {
            let (status, _) = s.call(Method::GET, path, None, None).await;
            assert_eq!(status, 200, "{path}");
        }
    }
}

#[tokio::test]
async fn a_new_edge_reads_its_bundle_with_its_enrollment_token_until_it_is_used() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        s.origin("home-server").await;
        let created = s
            .admin(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(json!({"provider": "manual", "region": "fra1", "public_ip": "198.51.100.7"})),
                202,
            )
            .await;
        let id = created["id"].as_str().unwrap();
        let token = created["enrollment_token"].as_str().unwrap();
        let path = format!("/api/v1/edge-nodes/{id}/config");

        let (status, bundle) = s.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(status, 200, "{bundle}");
        assert_eq!(bundle["edge_node"]["id"], id);
        assert_eq!(bundle["control_plane_url"], "https://cp.example.com");
        assert_eq!(bundle["enroll_url"], "https://cp.example.com/api/v1/enroll");
        assert_eq!(bundle["config"]["tunnels"].as_array().unwrap().len(), 1);

        // Another edge's token is refused; once redeemed the token no longer opens it, the
        // credential does.
        let other = s
            .admin(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(json!({"provider": "manual", "region": "x"})),
                202,
            )
            .await;
        let (status, _) = s
            .call(
                Method::GET,
                &path,
                Some(other["enrollment_token"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(status, 403);
        let credential = s.enroll(token).await;
        let (status, _) = s.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(status, 401);
        let (status, again) = s.call(Method::GET, &path, Some(&credential), None).await;
        assert_eq!(status, 200);
        // The same configuration, now naming the key the edge registered at enrollment.
        assert_eq!(again["config"]["tunnels"], bundle["config"]["tunnels"]);
        assert!(bundle["config"].get("wireguard_public_key").is_none());
        assert!(
            again["config"]["wireguard_public_key"].is_string(),
            "{again}"
        );
        // An enrollment token opens nothing else.
        let (status, _) = s
            .call(
                Method::GET,
                "/api/v1/routes",
                Some(other["enrollment_token"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(status, 403);
    }
}
