//! `GET /metrics`: what a Prometheus scraping the control plane reads, checked against the
//! text format's rules (ours and `promtool check metrics`) and against what was done
//! through the API and by the duties.

mod common;

use std::collections::BTreeMap;

use common::{Backend, Server};
use reqwest::Method;
use serde_json::json;

/// The samples of a scrape by series (`name{labels}`), after checking the format: every
/// family has `# HELP` and `# TYPE` before its samples, names and values are well formed,
/// and each histogram's buckets grow up to `+Inf`, which equals its `_count`.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut helped = Vec::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.push(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(helped.iter().any(|h| h == name), "TYPE before HELP: {line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            typed.contains_key(family),
            "a sample before its TYPE: {line}"
        );
        let labels = &series[name.len()..];
        assert!(
            labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
            "{line}"
        );
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|e| panic!("{line}: {e}")),
        };
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "twice: {line}"
        );
    }
    // Histograms: cumulative buckets, +Inf = _count.
    for (name, kind) in &typed {
        if kind != "histogram" {
            continue;
        }
        let mut by_series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (series, value) in &samples {
            let Some(labels) = series.strip_prefix(&format!("{name}_bucket{{")) else {
                continue;
            };
            let (rest, le) = labels.rsplit_once(",le=\"").unwrap();
            let le = le.trim_end_matches("\"}");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            by_series
                .entry(rest.to_owned())
                .or_default()
                .push((le, *value));
        }
        for (labels, mut buckets) in by_series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{labels}");
            let count = samples[&format!("{name}_count{{{labels}}}")];
            assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count), "{labels}");
        }
    }
    samples
}

/// The text of `GET /metrics`, read with the viewer's token.
async fn scrape(s: &Server) -> String {
    s.send(Method::GET, "/metrics", Some(&s.viewer), None, &[])
        .await
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_show_the_deployment_and_the_api_traffic_to_a_token_holder() {
    let s = Server::start(&Backend::Sqlite).await;
    let origin = s.origin("home-server").await;
    let origin_id = origin["id"].as_str().unwrap();
    s.admin(
        Method::POST,
        "/api/v1/routes",
        Some(json!({"hostname": "app.hoge.com", "origin_id": origin_id, "target_port": 8080})),
        201,
    )
    .await;
    let (_, credential) = s.enrolled_edge(None).await;
    // An issued certificate, as the SSL manager stores one.
    let expires = kokoa_core::Timestamp::from_unix(1_900_000_000).unwrap();
    let now = kokoa_core::Timestamp::now();
    let certificate = kokoa_core::Certificate {
        id: kokoa_core::CertificateId::new(),
        names: ["app.hoge.com".parse().unwrap()].into(),
        source: kokoa_core::CertificateSource::Acme,
        method: kokoa_core::CertificateMode::Http01,
        issuer: Some("CN=Pebble".into()),
        not_before: Some(now),
        not_after: Some(expires),
        sha256: None,
        chain_pem: None,
        next_renewal: None,
        failures: 0,
        last_error: None,
        created_at: now,
        updated_at: now,
    };
    s.state
        .store()
        .put_certificate(&certificate, None)
        .await
        .unwrap();
    for _ in 0..3 {
        s.admin(Method::GET, "/api/v1/routes", None, 200).await;
    }
    s.admin(Method::GET, "/api/v1/routes/rt_nope", None, 404)
        .await;

    // Without a token: refused, like every API read.
    let (status, _) = s.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, 401);
    let response = s
        .send(Method::GET, "/metrics", Some(&s.viewer), None, &[])
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let samples = parse(&text);
    let get = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };

    assert_eq!(get("kokoa_routes"), 1.0);
    assert_eq!(
        get("kokoa_certificate_expiry_timestamp_seconds{hostname=\"app.hoge.com\"}"),
        1_900_000_000.0
    );
    assert_eq!(get("kokoa_origins{status=\"inactive\"}"), 1.0);
    assert_eq!(get("kokoa_origins{status=\"active\"}"), 0.0);
    assert_eq!(get("kokoa_origins_down"), 0.0);
    assert_eq!(
        get("kokoa_edges{status=\"provisioning\",health=\"unknown\"}"),
        1.0
    );
    assert_eq!(get("kokoa_leader"), 0.0, "no duties run in this test");
    assert_eq!(get("kokoa_module_enabled{module=\"dns_manager\"}"), 1.0);
    assert_eq!(
        get("kokoa_http_requests_total{route=\"/api/v1/routes\",method=\"GET\",status=\"200\"}"),
        3.0
    );
    assert_eq!(
        get(
            "kokoa_http_requests_total{route=\"/api/v1/routes/{id}\",method=\"GET\",status=\"404\"}"
        ),
        1.0
    );
    assert_eq!(
        get("kokoa_http_request_duration_seconds_count{route=\"/api/v1/routes\",method=\"GET\"}"),
        3.0
    );
    // Every duty's series exist before its first run, so rules can compare them at once.
    assert_eq!(
        get("kokoa_duty_runs_total{duty=\"dns_manager\",outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(get("kokoa_acme_orders_total{outcome=\"issued\"}"), 0.0);
    // Bounded labels: path templates, never a raw path or an id.
    assert!(!text.contains("rt_nope"), "{text}");
    assert!(!text.contains(origin_id), "{text}");
    promtool_accepts(&text);
    assert_eq!(get("kokoa_config_long_polls"), 0.0);
    assert_eq!(get("kokoa_event_stream_subscribers"), 0.0);

    // A node waiting for a change of the configuration it holds, and a client following
    // the events, count while they last.
    let config = "/api/v1/edge-nodes/me/config";
    let held = s
        .send(Method::GET, config, Some(&credential), None, &[])
        .await;
    let etag = held.headers()["etag"].to_str().unwrap().to_owned();
    let _stream = s
        .send(
            Method::GET,
            "/api/v1/events/stream",
            Some(&s.viewer),
            None,
            &[],
        )
        .await;
    let (waiting, headers) = (
        format!("{config}?wait=30"),
        [("if-none-match", etag.as_str())],
    );
    let long_poll = s.send(Method::GET, &waiting, Some(&credential), None, &headers);
    let counted = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let text = scrape(&s).await;
            let samples = parse(&text);
            if samples.get("kokoa_config_long_polls") == Some(&1.0) {
                break samples;
            }
        }
    };
    let samples = tokio::select! {
        _ = long_poll => panic!("the long poll was answered"),
        samples = tokio::time::timeout(std::time::Duration::from_secs(10), counted) => {
            samples.expect("the long poll was never counted")
        }
    };
    assert_eq!(samples["kokoa_event_stream_subscribers"], 1.0);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_duties_count_their_runs_and_last_success() {
    let s = Server::start(&Backend::Sqlite).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let duties = tokio::spawn(kokoa_control::runtime::run(s.state.clone(), async move {
        let _ = stopped.await;
    }));
    let started = std::time::Instant::now();
    let samples = loop {
        let text = scrape(&s).await;
        let samples = parse(&text);
        let ran = |duty: &str| {
            samples
                .get(&format!(
                    "kokoa_duty_runs_total{{duty=\"{duty}\",outcome=\"ok\"}}"
                ))
                .is_some_and(|n| *n >= 1.0)
        };
        if ["edge_automation", "health_judge", "key_rotation"]
            .into_iter()
            .all(ran)
        {
            promtool_accepts(&text);
            break samples;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "the duties did not run:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(samples["kokoa_leader"], 1.0);
    assert_eq!(
        samples["kokoa_leader_changes_total{change=\"acquired\"}"],
        1.0
    );
    assert_eq!(samples["kokoa_leader_changes_total{change=\"lost\"}"], 0.0);
    let runs = samples["kokoa_duty_runs_total{duty=\"health_judge\",outcome=\"ok\"}"];
    assert_eq!(
        samples["kokoa_duty_run_duration_seconds_count{duty=\"health_judge\"}"],
        runs
    );
    assert_eq!(
        samples["kokoa_duty_runs_total{duty=\"health_judge\",outcome=\"failed\"}"],
        0.0
    );
    let now = kokoa_core::Timestamp::now().as_unix() as f64;
    let last = samples["kokoa_duty_last_success_timestamp_seconds{duty=\"health_judge\"}"];
    assert!((now - 20.0..=now + 1.0).contains(&last), "{last} vs {now}");
    let _ = stop.send(());
    let _ = duties.await;
}

/// `packaging/prometheus/`: the alert rules pass `promtool check rules` and their unit
/// tests, the scrape configuration `promtool check config` (its files stood in for), and
/// every metric the rules and the Grafana dashboard (`packaging/grafana/`) name is one the
/// control plane serves (`kokoa_edge_…` and `kokoa_origin_…` are the agents', checked by
/// their tests).
#[tokio::test]
async fn the_shipped_alert_rules_pass_their_tests_and_name_served_metrics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/prometheus");
    let promtool = |cwd: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool: {e}; apt-get install -y --no-install-recommends prometheus")
            });
        assert!(out.status.success(), "promtool {args:?}: {out:?}");
    };
    promtool(&dir, &["check", "rules", "kokoa-alerts.yml"]);
    promtool(&dir, &["test", "rules", "kokoa-alerts.test.yml"]);
    // The configuration as installed: its files in /etc/prometheus, here a directory.
    let etc = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(dir.join("prometheus.yml"))
        .unwrap()
        .replace("/etc/prometheus", etc.path().to_str().unwrap());
    std::fs::write(etc.path().join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        dir.join("kokoa-alerts.yml"),
        etc.path().join("kokoa-alerts.yml"),
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(etc.path().join("kokoa-ca.pem"), ca.pem()).unwrap();
    std::fs::write(etc.path().join("kokoa-token"), "kokoa_viewer_token").unwrap();
    promtool(etc.path(), &["check", "config", "prometheus.yml"]);

    let s = Server::start(&Backend::Sqlite).await;
    let text = scrape(&s).await;
    let served: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    // The agents' metrics (kokoa_edge_…, kokoa_origin_…) are checked by their own tests.
    let agents = |w: &&str| w.starts_with("kokoa_edge_") || w.starts_with("kokoa_origin_");
    for file in [
        dir.join("kokoa-alerts.yml"),
        dir.join("../grafana/kokoa.json"),
    ] {
        let text = std::fs::read_to_string(&file).unwrap();
        let named: std::collections::BTreeSet<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("kokoa_") && !agents(w))
            .map(|w| w.trim_end_matches("_bucket"))
            .collect();
        assert!(named.len() >= 5, "{}: {named:?}", file.display());
        for name in named {
            assert!(
                served.contains(name),
                "{} names {name}, which /metrics does not serve",
                file.display()
            );
        }
    }
}

/// `GET /api/v1/prometheus/targets`: the nodes whose agents serve metrics, as their
/// heartbeats tell, in the format of Prometheus's HTTP service discovery.
#[tokio::test]
async fn prometheus_discovers_the_nodes_that_serve_metrics() {
    let s = Server::start(&Backend::Sqlite).await;
    let (everywhere, everywhere_cred) = s.enrolled_edge(None).await;
    let (private, private_cred) = s.enrolled_edge(None).await;
    let (silent, silent_cred) = s.enrolled_edge(None).await;
    let origin = s.new_origin("home".into()).await;
    let origin_id = origin["id"].as_str().unwrap();
    let origin_cred = s.enrolled_origin(origin_id).await;
    let beat = |id: &str, address: Option<&str>| {
        let mut body = json!({"node_id": id, "status": "healthy"});
        if let Some(address) = address {
            body["metrics_address"] = json!(address);
        }
        body
    };
    s.heartbeat(&everywhere_cred, beat(&everywhere, Some("0.0.0.0:9581")))
        .await;
    s.heartbeat(&private_cred, beat(&private, Some("10.8.0.12:9581")))
        .await;
    s.heartbeat(&silent_cred, beat(&silent, None)).await;
    s.heartbeat(&origin_cred, beat(origin_id, Some("192.168.1.20:9582")))
        .await;

    let (status, _) = s
        .call(Method::GET, "/api/v1/prometheus/targets", None, None)
        .await;
    assert_eq!(status, 401);
    let groups = s
        .send(
            Method::GET,
            "/api/v1/prometheus/targets",
            Some(&s.viewer),
            None,
            &[],
        )
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let target = |id: &str| {
        groups
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["labels"]["id"] == id)
            .map(|g| (g["targets"].clone(), g["labels"]["node"].clone()))
    };
    // An agent on every address is scraped at the edge's public address.
    assert_eq!(
        target(&everywhere),
        Some((json!(["203.0.113.10:9581"]), json!("edge")))
    );
    assert_eq!(
        target(&private),
        Some((json!(["10.8.0.12:9581"]), json!("edge")))
    );
    assert_eq!(target(&silent), None);
    assert_eq!(
        target(origin_id),
        Some((json!(["192.168.1.20:9582"]), json!("origin")))
    );
    assert_eq!(groups.as_array().unwrap().len(), 3, "{groups}");
    assert!(
        groups[0]["labels"]["name"].is_string(),
        "every group names its node: {groups}"
    );
}
