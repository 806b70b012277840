//! A real Prometheus (the Debian package's) for the lab: it scrapes the control plane, both
//! edges and both origins every second and evaluates the shipped alert rules, their `for:`
//! shortened to the lab's pace. It listens on loopback only, keeps its data in the lab's
//! directory and sends nothing anywhere (no remote write; Prometheus has no update check).

use std::{
    collections::BTreeMap,
    fs,
    net::{SocketAddr, TcpListener},
    path::Path,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    lab::{Lab, control_url},
    plan::{self, Role},
    supervisor::Spec,
};

/// Where edges serve `--metrics-listen` on their lab address.
pub const EDGE_METRICS_PORT: u16 = 9581;
/// Where origins do.
pub const ORIGIN_METRICS_PORT: u16 = 9582;
/// The shipped rules, as an operator copies them.
const RULES: &str = include_str!("../../../packaging/prometheus/kokoa-alerts.yml");
/// The shipped Grafana dashboard.
const DASHBOARD: &str = include_str!("../../../packaging/grafana/kokoa.json");
/// How long Prometheus may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Prometheus and a client of its HTTP API.
#[derive(Debug)]
pub struct Prometheus {
    base: String,
    http: reqwest::Client,
}

/// The shipped rules with every `for:` at `2s`, so the lab sees them fire in seconds.
pub fn lab_rules(rules: &str) -> String {
    rules
        .lines()
        .map(|line| match line.split_once("for: ") {
            Some((indent, _)) if indent.trim().is_empty() => format!("{indent}for: 2s"),
            _ => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every query of the shipped Grafana dashboard: (panel title, PromQL).
pub fn dashboard_queries() -> Result<Vec<(String, String)>, String> {
    let dashboard: Value = serde_json::from_str(DASHBOARD)
        .map_err(|e| format!("packaging/grafana/kokoa.json: {e}"))?;
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push((title.to_owned(), expr.to_owned()));
            }
        }
    }
    Ok(queries)
}

/// The addresses Prometheus should scrape: every control plane (configured), then both
/// edges and both origins (discovered through the control planes).
pub fn targets(controls: &[SocketAddr]) -> Vec<String> {
    let mut targets: Vec<String> = controls.iter().map(ToString::to_string).collect();
    targets.extend(plan::hosts(Role::Edge).map(|h| format!("{}:{EDGE_METRICS_PORT}", h.address)));
    targets
        .extend(plan::hosts(Role::Origin).map(|h| format!("{}:{ORIGIN_METRICS_PORT}", h.address)));
    targets
}

/// Every control plane as a static target (each one: whether it leads is its own); the
/// nodes through their HTTP service discovery (the load balancer, with two), as
/// `packaging/prometheus/prometheus.yml` does. The lab's own CA is not checked here: its pin
/// is, by every other step.
fn config(dir: &Path, controls: &[SocketAddr]) -> String {
    let control = control_url();
    let token = dir.join("token");
    let token = token.display();
    let hosts: Vec<String> = controls.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files: [\"{rules}\"]\n\
         scrape_configs:\n\
         \x20 - job_name: kokoa-control\n\
         \x20   scheme: https\n\
         \x20   tls_config: {{ insecure_skip_verify: true }}\n\
         \x20   authorization: {{ credentials_file: {token} }}\n\
         \x20   static_configs: [{{ targets: [{hosts}] }}]\n\
         \x20 - job_name: kokoa-nodes\n\
         \x20   http_sd_configs:\n\
         \x20     - url: {control}/api/v1/prometheus/targets\n\
         \x20       refresh_interval: 2s\n\
         \x20       tls_config: {{ insecure_skip_verify: true }}\n\
         \x20       authorization: {{ type: Bearer, credentials_file: {token} }}\n",
        rules = dir.join("kokoa-alerts.yml").display(),
        hosts = hosts.join(", "),
    )
}

impl Prometheus {
    /// Writes the configuration into the lab's directory and starts Prometheus as a child
    /// of the lab; returns once it is ready.
    pub async fn start(lab: &mut Lab) -> Result<Self, String> {
        let dir = lab.dir.join("prometheus");
        fs::create_dir_all(dir.join("data")).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: &str| {
            fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write("token", lab.api.token())?;
        write("kokoa-alerts.yml", &lab_rules(RULES))?;
        let controls: Vec<SocketAddr> = lab.controls.iter().map(|c| c.listen).collect();
        write("prometheus.yml", &config(&dir, &controls))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let argv = vec![
            "prometheus".to_owned(),
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_owned(),
        ];
        lab.supervisor
            .start(&mut lab.ledger, "prometheus", Spec::root(argv))
            .map_err(|e| format!("{e} (apt-get install -y --no-install-recommends prometheus)"))?;
        let prometheus = Self {
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())?,
        };
        let started = Instant::now();
        loop {
            let ready = prometheus
                .http
                .get(format!("{}/-/ready", prometheus.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(prometheus);
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "Prometheus not ready after {} s; its log:\n{}",
                    START_TIMEOUT.as_secs(),
                    lab.supervisor.log_tails(20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The instant vector `promql` evaluates to: each series' labels and value.
    pub async fn query(
        &self,
        promql: &str,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.base),
            &[("query", promql)],
        )
        .map_err(|e| format!("{promql}: {e}"))?;
        let answer: Value = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{promql}: {e}"))?
            .json()
            .await
            .map_err(|e| format!("{promql}: {e}"))?;
        if answer["status"] != "success" {
            return Err(format!("{promql}: {answer}"));
        }
        let series = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        Ok(series
            .iter()
            .filter_map(|s| {
                let labels = s["metric"]
                    .as_object()?
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = s["value"][1].as_str()?.parse().ok()?;
                Some((labels, value))
            })
            .collect())
    }

    /// The value of a query that yields one number (a `sum`), 0 when it yields nothing.
    pub async fn scalar(&self, promql: &str) -> Result<f64, String> {
        Ok(self.query(promql).await?.first().map_or(0.0, |(_, v)| *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lab_rules_fire_after_two_seconds_and_keep_the_rest() {
        let rules = lab_rules(RULES);
        assert!(rules.contains("for: 2s"));
        assert!(
            !rules.contains("for: 5m") && !rules.contains("for: 1m"),
            "{rules}"
        );
        assert_eq!(rules.lines().count(), RULES.lines().count());
        assert!(rules.contains("alert: KokoaHostnameServerErrors"));
    }

    #[test]
    fn the_dashboard_has_a_query_in_every_panel() {
        let queries = dashboard_queries().unwrap();
        assert!(queries.len() >= 10, "{queries:?}");
        assert!(
            queries.iter().all(|(_, q)| q.contains("kokoa_")),
            "{queries:?}"
        );
    }

    #[test]
    fn the_control_plane_is_configured_and_tells_the_rest() {
        let controls: Vec<SocketAddr> = vec![
            "10.99.0.1:18081".parse().unwrap(),
            "10.99.0.1:18082".parse().unwrap(),
        ];
        let config = config(Path::new("/lab/prometheus"), &controls);
        assert!(
            config.contains("targets: [\"10.99.0.1:18081\", \"10.99.0.1:18082\"]"),
            "{config}"
        );
        assert!(
            config.contains("url: https://10.99.0.1:8080/api/v1/prometheus/targets"),
            "{config}"
        );
        assert_eq!(
            config
                .matches("credentials_file: /lab/prometheus/token")
                .count(),
            2
        );
        assert_eq!(targets(&controls).len(), 6);
    }
}
