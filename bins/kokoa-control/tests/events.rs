//! The event log: recorded events listed with filters, and followed live over
//! Server-Sent Events, resuming after a reconnect with `Last-Event-ID`.

mod common;

use std::time::Duration;

use common::{Server, backends};
use kokoa_core::Severity;
use reqwest::Method;
use serde_json::{Value, json};

/// Reads Server-Sent Events from a response: `(id, event, data)` per event, skipping
/// comments (keep-alives).
struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    async fn next(&mut self) -> (String, String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return (
                    id,
                    event,
                    serde_json::from_str(&data).expect("data is JSON"),
                );
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("an event within 10 s")
                .expect("the stream goes on")
                .expect("the stream is not closed");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }
}

async fn stream(s: &Server, headers: &[(&str, &str)]) -> SseReader {
    let response = s
        .send(
            Method::GET,
            "/api/v1/events/stream?type=edge.*",
            Some(&s.viewer),
            None,
            headers,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    SseReader {
        response,
        buffer: String::new(),
    }
}

#[tokio::test]
async fn events_are_listed_filtered_and_streamed() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let bus = s.state.events();
        bus.emit(
            "edge.provisioned",
            Severity::Info,
            Some("edg_1"),
            "edge one is up",
            json!({"public_ip": "203.0.113.10"}),
        )
        .await
        .expect("recorded");
        bus.emit(
            "edge_node_unhealthy",
            Severity::Warning,
            Some("edg_1"),
            "edge one failed",
            json!({"failure_count": 3}),
        )
        .await
        .expect("recorded");

        let all = s.admin(Method::GET, "/api/v1/events", None, 200).await;
        let kinds: Vec<&str> = all["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["edge_node_unhealthy", "edge.provisioned"],
            "[{backend}] newest first"
        );
        let warnings = s
            .admin(
                Method::GET,
                "/api/v1/events?severity=warning&subject=edg_1",
                None,
                200,
            )
            .await;
        assert_eq!(
            warnings["events"].as_array().unwrap().len(),
            1,
            "{warnings}"
        );
        assert_eq!(warnings["events"][0]["data"]["failure_count"], 3);
        let first = all["events"][1]["id"].as_i64().unwrap();
        let after = s
            .admin(
                Method::GET,
                &format!("/api/v1/events?after={first}"),
                None,
                200,
            )
            .await;
        assert_eq!(after["events"][0]["type"], "edge_node_unhealthy");
        // The list and the stream refuse the same bad filters (the stream before it starts).
        for path in ["/api/v1/events", "/api/v1/events/stream"] {
            for bad in [
                "limit=0",
                "limit=1001",
                "severity=loud",
                "type=Edge%20Ready",
            ] {
                let uri = format!("{path}?{bad}");
                let call = s.call(Method::GET, &uri, Some(&s.admin), None);
                // Bounded: a stream that wrongly started would never end.
                let (status, body) = tokio::time::timeout(Duration::from_secs(5), call)
                    .await
                    .unwrap_or_else(|_| panic!("[{backend}] {path}?{bad} was not refused"));
                assert_eq!(status, 422, "[{backend}] {path}?{bad}: {body}");
            }
        }

        // Live: a stream opened now sees the next edge event (not the older ones, and not
        // the DNS one, filtered out), with its number as the SSE id.
        let mut live = stream(&s, &[]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        bus.emit(
            "dns.record.added",
            Severity::Info,
            None,
            "filtered out",
            json!({}),
        )
        .await;
        let ready = bus
            .emit(
                "edge.ready",
                Severity::Info,
                Some("edg_2"),
                "edge two serves",
                json!({}),
            )
            .await
            .expect("recorded");
        let (id, event, data) = live.next().await;
        assert_eq!(
            (id, event.as_str()),
            (ready.id.to_string(), "edge.ready"),
            "[{backend}]"
        );
        assert_eq!(data["message"], "edge two serves");
        drop(live);

        // Reconnecting with Last-Event-ID replays what was missed, in order.
        let missed = bus
            .emit(
                "edge.destroyed",
                Severity::Info,
                Some("edg_1"),
                "edge one is gone",
                json!({}),
            )
            .await
            .expect("recorded");
        let mut resumed = stream(&s, &[("Last-Event-ID", &ready.id.to_string())]).await;
        let (id, event, _) = resumed.next().await;
        assert_eq!(
            (id, event.as_str()),
            (missed.id.to_string(), "edge.destroyed")
        );

        // An event written by another control plane on the same database (straight into
        // the store, not through this bus) reaches the stream too.
        let other = s
            .state
            .store()
            .append_event(&kokoa_core::NewEvent {
                kind: kokoa_core::EventKind::parse("edge.created").unwrap(),
                severity: Severity::Info,
                subject: None,
                message: "from elsewhere".into(),
                data: json!({}),
                created_at: kokoa_core::Timestamp::now(),
            })
            .await
            .unwrap();
        let (id, _, data) = resumed.next().await;
        assert_eq!(
            (id, data["message"].as_str()),
            (other.id.to_string(), Some("from elsewhere"))
        );

        // A node credential may not read the log.
        let (status, _) = s
            .call(Method::GET, "/api/v1/events/stream", None, None)
            .await;
        assert_eq!(status, 401);
    }
}

/// Every answer names its request in `X-Request-Id` (the client's own when it is a short
/// token), and the events a request causes carry that id in their data.
#[tokio::test]
async fn requests_have_ids_that_their_events_carry() {
    let s = Server::start(&common::Backend::Sqlite).await;
    let post = |id: Option<&'static str>| {
        let headers: Vec<(&str, &str)> = id.map(|id| ("X-Request-Id", id)).into_iter().collect();
        let s = &s;
        async move {
            s.send(
                Method::POST,
                "/api/v1/internal/events",
                Some(&s.admin),
                Some(json!({"type": "deploy.finished", "data": {"version": "1.2"}})),
                &headers,
            )
            .await
        }
    };
    let answer = post(Some("deploy-42")).await;
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.headers()["x-request-id"], "deploy-42");
    let generated = post(None).await.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        generated.starts_with("req_") && generated.len() == 20,
        "{generated}"
    );
    let replaced = post(Some("no spaces please")).await.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(replaced.starts_with("req_"), "{replaced}");

    let (_, listed) = s
        .call(
            Method::GET,
            "/api/v1/events?type=deploy.finished&after=0",
            Some(&s.admin),
            None,
        )
        .await;
    let ids: Vec<&Value> = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"]["request_id"])
        .collect();
    assert_eq!(
        ids,
        [&json!("deploy-42"), &json!(generated), &json!(replaced)],
        "{listed}"
    );
    // Answers without a route, and refusals, are named too.
    let (status, _) = s
        .call(Method::GET, "/api/v1/nothing-here", None, None)
        .await;
    assert_eq!(status, 404);
    let missing = s
        .send(
            Method::GET,
            "/api/v1/nothing-here",
            None,
            None,
            &[("X-Request-Id", "x1")],
        )
        .await;
    assert_eq!(missing.headers()["x-request-id"], "x1");
}
