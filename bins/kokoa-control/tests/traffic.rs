//! The built-in traffic analytics: what edges count in their heartbeats comes back, per
//! route and per edge, from `GET …/traffic`, on SQLite and PostgreSQL.

mod common;

use common::{Server, assert_error, backends};
use kokoa_control::runtime::traffic;
use reqwest::Method;
use serde_json::{Value, json};

/// `requests` answered, `errors` of them 5xx, `slow` of them over 10 s, the rest in 25 ms.
fn counted(hostname: &str, requests: u64, errors: u64, slow: u64) -> Value {
    let mut latency = vec![0u64; 12];
    latency[2] = requests - slow;
    latency[11] = slow;
    json!({"hostname": hostname, "requests": requests, "errors": errors, "latency": latency})
}

#[tokio::test]
async fn heartbeats_add_up_per_route_and_per_edge() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("home").await;
        let route = s
            .admin(
                Method::POST,
                "/api/v1/routes",
                Some(json!({"hostname": "app.hoge.com", "origin_id": origin["id"], "target_port": 8080})),
                201,
            )
            .await;
        let route_path = format!("/api/v1/routes/{}/traffic", route["id"].as_str().unwrap());
        let (edge, credential) = s.enrolled_edge(None).await;
        let edge_path = format!("/api/v1/edge-nodes/{edge}/traffic");
        let beat =
            |traffic: Value| json!({"node_id": edge, "status": "healthy", "traffic": traffic});

        s.heartbeat(
            &credential,
            beat(json!([
                counted("app.hoge.com", 150, 30, 0),
                counted("other", 20, 0, 0),
                counted("not-a-route.hoge.com", 5, 5, 0),
            ])),
        )
        .await;
        s.heartbeat(
            &credential,
            beat(json!([counted("APP.hoge.com", 50, 20, 1)])),
        )
        .await;
        // Figures that do not add up are refused whole and leave nothing.
        let (status, body) = s
            .call(
                Method::POST,
                "/api/v1/heartbeat",
                Some(&credential),
                Some(beat(json!([counted("app.hoge.com", 1, 2, 0)]))),
            )
            .await;
        assert_eq!(status, 422, "[{backend}] {body}");
        assert_eq!(assert_error(&body, "invalid_value")["field"], "traffic");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("app.hoge.com"),
            "{body}"
        );

        let before = s.admin(Method::GET, &route_path, None, 200).await;
        assert_eq!(
            before["total"]["requests"], 0,
            "[{backend}] not written yet"
        );
        assert!(
            traffic::flush(&s.state).await.expect("written") > 0,
            "[{backend}]"
        );

        let (status, series) = s
            .call(Method::GET, &route_path, Some(&s.viewer), None)
            .await;
        assert_eq!(status, 200, "[{backend}] {series}");
        assert_eq!(series["range"], "1h");
        assert_eq!(series["step_seconds"], 60);
        let buckets = series["buckets"].as_array().unwrap();
        assert_eq!(
            buckets.len(),
            60,
            "[{backend}] one bucket per minute of the hour"
        );
        assert_eq!(series["total"]["requests"], 200, "[{backend}] {series}");
        assert_eq!(series["total"]["errors"], 50);
        // 199 answers within 25 ms and one over 10 s: the 95th percentile is in 10–25 ms.
        let p95 = series["total"]["p95_ms"].as_f64().unwrap();
        assert!((10.0..=25.0).contains(&p95), "[{backend}] p95 {p95}");
        let filled: Vec<&Value> = buckets.iter().filter(|b| b["requests"] != 0).collect();
        assert!(
            (1..=2).contains(&filled.len()),
            "[{backend}] the minute of the heartbeats: {series}"
        );
        let starts: Vec<&str> = buckets
            .iter()
            .map(|b| b["start"].as_str().unwrap())
            .collect();
        assert!(starts.windows(2).all(|w| w[0] < w[1]), "oldest first");

        let edge_series = s.admin(Method::GET, &edge_path, None, 200).await;
        assert_eq!(
            edge_series["total"]["requests"], 225,
            "[{backend}] every Host the edge counted: {edge_series}"
        );
        assert_eq!(edge_series["total"]["errors"], 55);

        let month = s
            .admin(Method::GET, &format!("{route_path}?range=30d"), None, 200)
            .await;
        assert_eq!(month["step_seconds"], 3600);
        assert_eq!(month["buckets"].as_array().unwrap().len(), 720);
        assert_eq!(
            month["total"]["requests"], 200,
            "[{backend}] the hour bucket"
        );
        let day = s
            .admin(Method::GET, &format!("{route_path}?range=24h"), None, 200)
            .await;
        assert_eq!(day["buckets"].as_array().unwrap().len(), 1440);

        // Written once: a second flush has nothing to add.
        assert_eq!(traffic::flush(&s.state).await.expect("nothing"), 0);
        let again = s.admin(Method::GET, &route_path, None, 200).await;
        assert_eq!(again["total"]["requests"], 200);

        let (status, body) = s
            .call(
                Method::GET,
                &format!("{route_path}?range=2d"),
                Some(&s.viewer),
                None,
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(assert_error(&body, "invalid_value")["field"], "range");
        let (status, _) = s
            .call(
                Method::GET,
                &format!("/api/v1/routes/{}/traffic", kokoa_core::RouteId::new()),
                Some(&s.viewer),
                None,
            )
            .await;
        assert_eq!(status, 404);
        let (status, _) = s.call(Method::GET, &route_path, None, None).await;
        assert_eq!(status, 401);
    }
}
