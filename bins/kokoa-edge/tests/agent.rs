//! The agent end to end with the real nginx (`/usr/sbin/nginx`) on high loopback ports and
//! a fake control plane: it enrolls, serves two hostnames from their backends, follows a
//! change within a second (long poll), refuses a forged payload while the previous
//! configuration keeps serving, reports heartbeats and ready, and after a restart with the
//! control plane gone serves its last good configuration.
//!
//! The configurations carry no tunnels: WireGuard is covered by kokoa-wg's tests and the
//! lab.

mod common;

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, http::HeaderMap};
use common::{ENROLL_TOKEN, FakeControl, NODE_ID, Served, eventually};
use kokoa_core::{EdgeConfig, EdgeContent, Hostname};
use kokoa_edge::{
    Agent, ControlPlane, EdgeHost, EdgeMetrics, Error, HostSettings, Sampler, Secret, StateDir,
    Timing,
};
use kokoa_nginx::{Listen, NginxInstance};
use kokoa_wg::apply::Implementation;
use test_ports::tcp as free_port;
use tokio::{sync::oneshot, task::JoinHandle};

const NGINX: &str = "/usr/sbin/nginx";

fn require_nginx() {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} not found: install it with `apt-get install -y --no-install-recommends nginx`"
    );
    assert!(
        std::process::Command::new("wg")
            .arg("--version")
            .output()
            .is_ok(),
        "wg not found: install it with \
         `apt-get install -y --no-install-recommends wireguard-tools`"
    );
}

/// A backend answering every request with its name and the Host it was asked for.
async fn backend(name: &'static str) -> SocketAddrV4 {
    let app = Router::new().fallback(move |headers: HeaderMap| async move {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        format!("backend={name} host={host}")
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
        unreachable!("bound to an IPv4 address")
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn config(routes: &[(&str, SocketAddrV4)], unavailable: &[&str]) -> EdgeConfig {
    let mut content = EdgeContent::default();
    for (name, backend) in routes {
        content
            .routes
            .insert(Hostname::parse(name).unwrap(), *backend);
    }
    for name in unavailable {
        content.unavailable.insert(Hostname::parse(name).unwrap());
    }
    EdgeConfig::new(content).unwrap()
}

/// Stops the test's nginx however the test ends.
struct NginxGuard(NginxInstance);

impl Drop for NginxGuard {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

struct Edge {
    state: PathBuf,
    listen: Listen,
}

impl Edge {
    fn host(&self) -> EdgeHost {
        let settings = HostSettings {
            nginx_prefix: self.state.join("nginx"),
            nginx_binary: NGINX.into(),
            nginx_user: Some("www-data".into()),
            wireguard: Implementation::WireguardGo,
            listen: self.listen,
        };
        EdgeHost::new(settings, &StateDir::open(&self.state).unwrap()).unwrap()
    }

    /// Starts the agent with the credential in the state directory, its metrics served at
    /// the address returned.
    async fn start(
        &self,
    ) -> (
        oneshot::Sender<()>,
        JoinHandle<Result<(), Error>>,
        NginxGuard,
        SocketAddr,
    ) {
        let state = StateDir::open(&self.state).unwrap();
        let client = ControlPlane::new(&state.read_credential().unwrap()).unwrap();
        let host = self.host();
        let guard = NginxGuard(host.nginx().clone());
        let metrics = Arc::new(EdgeMetrics::default());
        let sampler = Sampler::new(
            vec![self.listen.http_port, self.listen.https_port],
            host.nginx().layout().logs_dir().join("access.log"),
        )
        .with_traffic(metrics.traffic());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_address = listener.local_addr().unwrap();
        let served = Arc::clone(&metrics);
        tokio::spawn(kokoa_agent::prometheus::serve(
            listener,
            move || served.render(),
            std::future::pending(),
        ));
        let timing = Timing {
            long_poll: Duration::from_secs(5),
            poll_interval: Duration::from_millis(500),
            heartbeat_interval: Duration::from_millis(200),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(400),
            reconnect: Duration::from_millis(400),
        };
        let agent =
            Agent::new(client, Arc::new(host), state, timing, sampler, true).with_metrics(metrics);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async {
            let _ = stopped.await;
        }));
        (stop, task, guard, metrics_address)
    }
}

/// An HTTPS client that sends every name to the local nginx and accepts its self-signed
/// fallback certificate.
fn client(https_port: u16, names: &[&str]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .timeout(Duration::from_secs(2));
    for name in names {
        builder = builder.resolve(name, SocketAddr::from((Ipv4Addr::LOCALHOST, https_port)));
    }
    builder.build().unwrap()
}

/// `promtool check metrics` (Prometheus's own linter) finds nothing to say about `text`.
fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool: {e}; apt-get install -y --no-install-recommends prometheus")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {out:?}\n{text}"
    );
}

async fn get(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

async fn stop(stop: oneshot::Sender<()>, task: JoinHandle<Result<(), Error>>) {
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the agent stops")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_serves_follows_refuses_and_survives_a_restart() {
    require_nginx();
    let dir = tempfile::tempdir().unwrap();
    // nginx's workers (www-data) must reach the prefix inside.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let (a, b, c) = (backend("a").await, backend("b").await, backend("c").await);

    let first = config(&[("app.kokoa.test", a), ("wiki.kokoa.test", b)], &[]);
    let control = FakeControl::start(Served::config(&first)).await;
    let edge = Edge {
        state: dir.path().join("state"),
        listen: Listen {
            address: Some(Ipv4Addr::LOCALHOST.into()),
            http_port: free_port(),
            https_port: free_port(),
        },
    };
    let state = StateDir::open(&edge.state).unwrap();
    let key = state.keys().unwrap().newest().to_string();
    let credential = ControlPlane::enroll(&control.url(), None, &Secret::new(ENROLL_TOKEN), &key)
        .await
        .unwrap();
    state.write_credential(&credential).unwrap();

    let https = edge.listen.https_port;
    let names = [
        "app.kokoa.test",
        "wiki.kokoa.test",
        "new.kokoa.test",
        "down.kokoa.test",
        "nope.kokoa.test",
    ];
    let client = client(https, &names);
    let url = |name: &str| format!("https://{name}:{https}/");

    // Both hostnames answer through nginx with their own backend's body.
    let (stop_tx, task, _nginx, metrics) = edge.start().await;
    let start = Instant::now();
    loop {
        if let Some((200, body)) = get(&client, &url("app.kokoa.test")).await {
            assert_eq!(body, "backend=a host=app.kokoa.test");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "nginx never served app.kokoa.test"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&client, &url("wiki.kokoa.test")).await,
        Some((200, "backend=b host=wiki.kokoa.test".into()))
    );
    assert_eq!(
        get(&client, &url("nope.kokoa.test")).await.map(|r| r.0),
        Some(404)
    );
    eventually(Duration::from_secs(5), "ready", || {
        control.ready_calls() == [NODE_ID]
    })
    .await;
    // The payload names no key (as for a node the control plane knows no key of): the
    // agent used its own and registered its public half, never anything private.
    eventually(Duration::from_secs(5), "the key registered", || {
        control.registered_keys() == [key.clone()]
    })
    .await;

    // /metrics counts requests by route name and status class; any other name as other.
    let scrape = || async {
        let text = get(
            &reqwest::Client::new(),
            &format!("http://{metrics}/metrics"),
        )
        .await
        .expect("/metrics answers")
        .1;
        let count = |series: &str| {
            text.lines()
                .find_map(|l| {
                    l.strip_prefix(series)?
                        .strip_prefix(' ')?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0)
        };
        (
            count("kokoa_edge_requests_total{hostname=\"app.kokoa.test\",code=\"2xx\"}"),
            count("kokoa_edge_requests_total{hostname=\"other\",code=\"4xx\"}"),
            count("kokoa_edge_request_duration_seconds_count{hostname=\"app.kokoa.test\"}"),
            text,
        )
    };
    // Whatever the start counted, once a heartbeat read the log.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (app, other, timed, _) = scrape().await;
    for _ in 0..5 {
        assert_eq!(get(&client, &url("app.kokoa.test")).await.unwrap().0, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&client, &url("nope.kokoa.test")).await.unwrap().0, 404);
    }
    let counted = Instant::now();
    loop {
        let (app_now, other_now, timed_now, text) = scrape().await;
        if (app_now, other_now, timed_now) == (app + 5.0, other + 2.0, timed + 5.0) {
            assert!(
                text.contains("kokoa_edge_config_applies_total{outcome=\"applied\"} 1\n"),
                "{text}"
            );
            assert!(
                text.contains("kokoa_edge_status{status=\"healthy\"} 1\n"),
                "{text}"
            );
            assert!(!text.contains("nope.kokoa.test"), "{text}");
            // The backend's time apart from the whole request's, and the configuration.
            let upstream =
                "kokoa_edge_upstream_duration_seconds_count{hostname=\"app.kokoa.test\"} ";
            assert!(
                text.lines()
                    .find_map(|l| l.strip_prefix(upstream)?.parse::<f64>().ok())
                    .is_some_and(|n| n >= 5.0),
                "{text}"
            );
            assert!(
                text.contains("kokoa_edge_config_info{config_hash=\""),
                "{text}"
            );
            assert!(
                text.contains(
                    "kokoa_edge_rate_limited_requests_total{hostname=\"app.kokoa.test\"} 0\n"
                ),
                "{text}"
            );
            promtool_accepts(&text);
            // The heartbeats carried the same requests, each in one heartbeat only.
            eventually(
                Duration::from_secs(10),
                "the requests in heartbeats",
                || {
                    let sent: u64 = control
                        .heartbeats()
                        .iter()
                        .flat_map(|h| h["traffic"].as_array().cloned().unwrap_or_default())
                        .filter(|t| t["hostname"] == "app.kokoa.test")
                        .map(|t| t["requests"].as_u64().unwrap())
                        .sum();
                    sent as f64 == app_now
                },
            )
            .await;
            break;
        }
        assert!(
            counted.elapsed() < Duration::from_secs(5),
            "expected {} and {} requests, got:\n{text}",
            app + 5.0,
            other + 2.0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // /health tells whether the edge and its tunnels work.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let health_url = format!("http://127.0.0.1:{}/health", edge.listen.http_port);
    let start = Instant::now();
    loop {
        let (status, body) = get(&plain, &health_url).await.expect("/health answers");
        assert_eq!(status, 200);
        if body == "{\"status\":\"healthy\",\"tunnels\":\"up\"}\n" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "health body: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A change reaches the edge within a second: the agent's long poll returns at once.
    let second = config(
        &[
            ("app.kokoa.test", a),
            ("wiki.kokoa.test", c),
            ("new.kokoa.test", b),
            ("down.kokoa.test", a),
        ],
        &["down.kokoa.test"],
    );
    let changed = Instant::now();
    control.serve(Served::config(&second));
    loop {
        let wiki = get(&client, &url("wiki.kokoa.test")).await;
        let new = get(&client, &url("new.kokoa.test")).await;
        if wiki.as_ref().is_some_and(|r| r.1.starts_with("backend=c"))
            && new.as_ref().is_some_and(|r| r.1.starts_with("backend=b"))
        {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "the change was not served within 1 s: wiki {wiki:?}, new {new:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = changed.elapsed();
    eprintln!("change served after {took:?}");
    let (status, page) = get(&client, &url("down.kokoa.test")).await.unwrap();
    assert_eq!(status, 503, "{page}");
    assert!(page.contains("Service unavailable"), "{page}");

    // A forged payload is refused; the previous configuration keeps serving.
    let evil = config(&[("app.kokoa.test", c)], &[]);
    let claimed = config(&[("app.kokoa.test", b)], &[]);
    control.serve(Served::forged(&claimed, &evil));
    eventually(Duration::from_secs(5), "a degraded heartbeat", || {
        control
            .heartbeats()
            .iter()
            .any(|h| h["status"] == "degraded")
    })
    .await;
    assert_eq!(
        get(&client, &url("app.kokoa.test")).await,
        Some((200, "backend=a host=app.kokoa.test".into()))
    );
    assert!(
        get(&client, &url("new.kokoa.test"))
            .await
            .is_some_and(|r| r.0 == 200)
    );
    assert_eq!(state.read_last_good().unwrap(), Some(second.clone()));

    // Heartbeats carry the documented fields.
    let beats = control.heartbeats();
    let degraded = beats.iter().find(|h| h["status"] == "degraded").unwrap();
    assert!(
        degraded["last_error"]
            .as_str()
            .unwrap()
            .contains("hash mismatch"),
        "{degraded}"
    );
    let healthy = beats
        .iter()
        .find(|h| h["status"] == "healthy")
        .expect("a healthy heartbeat");
    assert_eq!(healthy["node_id"], NODE_ID);
    assert_eq!(healthy["tunnel_status"], "up");
    assert_eq!(healthy["tunnels"], serde_json::json!([]));
    assert!(healthy.get("last_error").is_none());
    let metrics = &healthy["metrics"];
    for field in [
        "connections_active",
        "cpu_percent",
        "memory_percent",
        "requests_per_second",
        "error_rate",
    ] {
        assert!(metrics[field].is_number(), "{field}: {healthy}");
    }
    assert!(metrics["tunnel_rtt_ms"].is_null(), "{healthy}");
    // The requests above went through nginx's access log.
    assert!(
        beats
            .iter()
            .any(|h| h["metrics"]["requests_per_second"].as_f64() > Some(0.0)),
        "no heartbeat counted a request"
    );

    // Stopped with --stop-on-exit semantics: nginx goes down.
    stop(stop_tx, task).await;
    assert!(
        get(&client, &url("app.kokoa.test")).await.is_none(),
        "nginx still serves"
    );

    // Restarted while the control plane is gone: the last good configuration serves.
    drop(control);
    let (stop_tx, task, _nginx, _) = edge.start().await;
    let start = Instant::now();
    loop {
        if let Some((200, body)) = get(&client, &url("wiki.kokoa.test")).await {
            assert_eq!(body, "backend=c host=wiki.kokoa.test");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "last good configuration not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        get(&client, &url("new.kokoa.test"))
            .await
            .is_some_and(|r| r.0 == 200)
    );
    stop(stop_tx, task).await;
}
