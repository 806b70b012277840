//! `GET /metrics`: the control plane in the Prometheus text exposition format (0.0.4), for
//! a Prometheus that scrapes it with an API token (any role) as its bearer token.
//!
//! What it shows: the build, whether this control plane leads, edges by status and health,
//! origins by status, routes, each certificate's expiry per host name, which modules are on,
//! the API's requests by route, method and status with their latency histogram, the duties'
//! runs by outcome with their durations and last success, DNS changes by zone and ACME
//! orders by outcome. Labels are bounded: routes are the API's path templates
//! (`/api/v1/routes/{id}`), host names and zones are bounded by the configuration; never a
//! client address or a raw path.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use kokoa_agent::prometheus::{CONTENT_TYPE, Histogram, MINUTE_BUCKETS, escape, family, number};
use kokoa_core::{EdgeNode, EdgeStatus, OriginStatus};

use crate::{error::ApiError, runtime::Module, state::AppState};

/// Request counts by (route, method, status).
type Requests = Vec<((String, String, u16), u64)>;
/// Duration histograms by (route, method).
type Durations = Vec<((String, String), Histogram)>;

/// The API's requests, counted since this control plane started.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    inner: Mutex<HttpSeries>,
    long_polls: std::sync::atomic::AtomicU64,
}

/// A configuration request held for a change; counted while it lives.
#[derive(Debug)]
pub struct LongPoll<'a>(&'a HttpMetrics);

impl Drop for LongPoll<'_> {
    fn drop(&mut self) {
        self.0
            .long_polls
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
struct HttpSeries {
    /// By (route, method, status).
    requests: BTreeMap<(String, String, u16), u64>,
    /// By (route, method).
    durations: BTreeMap<(String, String), Histogram>,
}

impl HttpMetrics {
    /// Counts one request to `route` (a path template) that was answered `status` after
    /// `took`.
    pub fn observe(&self, route: &str, method: &str, status: u16, took: Duration) {
        let mut series = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *series
            .requests
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
        let histogram = series
            .durations
            .entry((route.to_owned(), method.to_owned()))
            .or_default();
        histogram.observe(took.as_secs_f64());
    }

    /// Counts a configuration request held for a change until the guard is dropped.
    pub fn long_poll(&self) -> LongPoll<'_> {
        self.long_polls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LongPoll(self)
    }

    fn snapshot(&self) -> (Requests, Durations) {
        let series = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            series
                .requests
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            series
                .durations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
}

/// The duties whose runs are counted, as their `duty` label.
pub const DUTIES: [&str; 4] = [
    "dns_manager",
    "edge_automation",
    "health_judge",
    "key_rotation",
];

/// What the duties did since this control plane started: every series of a duty and of
/// an ACME outcome exists from the start (at 0), so rules can compare them at once.
#[derive(Debug, Default)]
pub struct DutyMetrics {
    inner: Mutex<DutySeries>,
}

#[derive(Debug, Default)]
struct DutySeries {
    /// By (duty, succeeded).
    runs: BTreeMap<(&'static str, bool), u64>,
    durations: BTreeMap<&'static str, Histogram>,
    /// Unix time of each duty's last successful run.
    last_success: BTreeMap<&'static str, f64>,
    /// By (zone, action): records created, updated or deleted at the provider.
    dns_changes: BTreeMap<(String, &'static str), u64>,
    /// By zone: changes the provider refused, and rounds the zone could not be planned.
    dns_failures: BTreeMap<String, u64>,
    /// Calls to the DNS providers by (provider, zone, operation, succeeded).
    dns_calls: BTreeMap<(&'static str, String, &'static str, bool), u64>,
    /// Their durations by (provider, zone).
    dns_call_seconds: BTreeMap<(&'static str, String), Histogram>,
    /// By outcome (`issued`, `failed`).
    acme_orders: BTreeMap<&'static str, u64>,
    /// By change (`acquired`, `lost`).
    leader_changes: BTreeMap<&'static str, u64>,
    /// By (provider, step).
    edge_steps: BTreeMap<(String, String), u64>,
    /// Seconds from an edge's creation to each step, by step.
    edge_step_seconds: BTreeMap<String, Histogram>,
    /// Failed lifecycle attempts, by provider.
    edge_failures: BTreeMap<String, u64>,
}

impl DutyMetrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, DutySeries> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one run of `duty` (one of [`DUTIES`]) that took `took`.
    pub fn run(&self, duty: &'static str, succeeded: bool, took: Duration) {
        let mut series = self.lock();
        *series.runs.entry((duty, succeeded)).or_default() += 1;
        series
            .durations
            .entry(duty)
            .or_default()
            .observe(took.as_secs_f64());
        if succeeded {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            series.last_success.insert(duty, now.as_secs_f64());
        }
    }

    /// Counts what a DNS round did in `zone`: changes made by action, and failures.
    pub fn dns_round(&self, zone: &str, made: &[&'static str], failures: usize) {
        let mut series = self.lock();
        for action in made {
            *series
                .dns_changes
                .entry((zone.to_owned(), action))
                .or_default() += 1;
        }
        *series.dns_failures.entry(zone.to_owned()).or_default() += failures as u64;
    }

    /// Counts a call to a zone's DNS provider and its duration.
    pub fn dns_call(&self, zone: &str, call: &kokoa_dns::Call) {
        let mut series = self.lock();
        *series
            .dns_calls
            .entry((call.provider, zone.to_owned(), call.operation, call.ok))
            .or_default() += 1;
        series
            .dns_call_seconds
            .entry((call.provider, zone.to_owned()))
            .or_default()
            .observe(call.duration.as_secs_f64());
    }

    /// Counts an ACME order that ended `issued` or `failed`.
    pub fn acme_order(&self, issued: bool) {
        *self
            .lock()
            .acme_orders
            .entry(if issued { "issued" } else { "failed" })
            .or_default() += 1;
    }

    /// Counts this control plane taking the lease (`acquired`) or losing it.
    pub fn leader_change(&self, acquired: bool) {
        *self
            .lock()
            .leader_changes
            .entry(if acquired { "acquired" } else { "lost" })
            .or_default() += 1;
    }

    /// Counts an edge at `provider` reaching `step` of its lifecycle (`instance_created`,
    /// `enrolled`, …, `destroyed`) `seconds` after it was created.
    pub fn edge_step(&self, provider: &str, step: &str, seconds: i64) {
        let mut series = self.lock();
        *series
            .edge_steps
            .entry((provider.to_owned(), step.to_owned()))
            .or_default() += 1;
        series
            .edge_step_seconds
            .entry(step.to_owned())
            .or_insert_with(|| Histogram::with_bounds(&MINUTE_BUCKETS))
            .observe(seconds.max(0) as f64);
    }

    /// Counts a failed attempt of an edge's lifecycle at `provider`.
    pub fn edge_failure(&self, provider: &str) {
        *self
            .lock()
            .edge_failures
            .entry(provider.to_owned())
            .or_default() += 1;
    }

    fn render(&self, out: &mut String) {
        let series = self.lock();
        family(
            out,
            "kokoa_duty_runs_total",
            "counter",
            "Runs of the leader's duties by outcome (ok, failed).",
        );
        for duty in DUTIES {
            for (outcome, succeeded) in [("ok", true), ("failed", false)] {
                let count = series.runs.get(&(duty, succeeded)).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "kokoa_duty_runs_total{{duty=\"{duty}\",outcome=\"{outcome}\"}} {count}"
                );
            }
        }
        family(
            out,
            "kokoa_duty_run_duration_seconds",
            "histogram",
            "How long the duties' runs took.",
        );
        for duty in DUTIES {
            let histogram = series.durations.get(duty).cloned().unwrap_or_default();
            histogram.write(
                out,
                "kokoa_duty_run_duration_seconds",
                &format!("duty=\"{duty}\""),
            );
        }
        family(
            out,
            "kokoa_duty_last_success_timestamp_seconds",
            "gauge",
            "When each duty last ran without a failure (Unix time; absent before the first).",
        );
        for (duty, at) in &series.last_success {
            let _ = writeln!(
                out,
                "kokoa_duty_last_success_timestamp_seconds{{duty=\"{duty}\"}} {}",
                number(*at)
            );
        }
        family(
            out,
            "kokoa_dns_changes_total",
            "counter",
            "DNS records created, updated or deleted at the providers, by zone and action.",
        );
        for ((zone, action), count) in &series.dns_changes {
            let _ = writeln!(
                out,
                "kokoa_dns_changes_total{{zone=\"{}\",action=\"{action}\"}} {count}",
                escape(zone)
            );
        }
        family(
            out,
            "kokoa_dns_failures_total",
            "counter",
            "DNS changes a provider refused, and rounds a zone could not be planned, by zone.",
        );
        for (zone, count) in &series.dns_failures {
            let _ = writeln!(
                out,
                "kokoa_dns_failures_total{{zone=\"{}\"}} {count}",
                escape(zone)
            );
        }
        family(
            out,
            "kokoa_dns_provider_calls_total",
            "counter",
            "Calls to the DNS providers' APIs by provider, zone, operation and outcome (ok, \
             failed).",
        );
        for ((provider, zone, operation, ok), count) in &series.dns_calls {
            let _ = writeln!(
                out,
                "kokoa_dns_provider_calls_total{{provider=\"{provider}\",zone=\"{}\",\
                 operation=\"{operation}\",outcome=\"{}\"}} {count}",
                escape(zone),
                if *ok { "ok" } else { "failed" }
            );
        }
        family(
            out,
            "kokoa_dns_provider_call_duration_seconds",
            "histogram",
            "How long calls to the DNS providers' APIs took, by provider and zone.",
        );
        for ((provider, zone), histogram) in &series.dns_call_seconds {
            histogram.write(
                out,
                "kokoa_dns_provider_call_duration_seconds",
                &format!("provider=\"{provider}\",zone=\"{}\"", escape(zone)),
            );
        }
        family(
            out,
            "kokoa_acme_orders_total",
            "counter",
            "Certificate orders by outcome (issued, failed), the control plane's own included.",
        );
        for outcome in ["issued", "failed"] {
            let count = series.acme_orders.get(outcome).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "kokoa_acme_orders_total{{outcome=\"{outcome}\"}} {count}"
            );
        }
        family(
            out,
            "kokoa_leader_changes_total",
            "counter",
            "Times this control plane took the leader lease (acquired) or lost it.",
        );
        for change in ["acquired", "lost"] {
            let count = series.leader_changes.get(change).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "kokoa_leader_changes_total{{change=\"{change}\"}} {count}"
            );
        }
        family(
            out,
            "kokoa_lifecycle_steps_total",
            "counter",
            "Edges that reached a step of their lifecycle (instance_created … serving, \
             dns_removed, destroyed), by provider.",
        );
        for ((provider, step), count) in &series.edge_steps {
            let _ = writeln!(
                out,
                "kokoa_lifecycle_steps_total{{provider=\"{}\",step=\"{}\"}} {count}",
                escape(provider),
                escape(step)
            );
        }
        family(
            out,
            "kokoa_lifecycle_step_seconds",
            "histogram",
            "Seconds from an edge's creation to each step of its lifecycle.",
        );
        for (step, histogram) in &series.edge_step_seconds {
            histogram.write(
                out,
                "kokoa_lifecycle_step_seconds",
                &format!("step=\"{}\"", escape(step)),
            );
        }
        family(
            out,
            "kokoa_lifecycle_failures_total",
            "counter",
            "Failed attempts of the edges' lifecycle (a provider call, a timeout), by provider.",
        );
        for (provider, count) in &series.edge_failures {
            let _ = writeln!(
                out,
                "kokoa_lifecycle_failures_total{{provider=\"{}\"}} {count}",
                escape(provider)
            );
        }
    }
}

/// Counts every request the router matched, by its path template (layered on the routes,
/// so an unknown path is not a series of its own).
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    // Any client can send any method: those the API does not know count as one.
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
        _ => "OTHER",
    }
    .to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    if let Some(route) = route {
        state.http_metrics().observe(
            &route,
            &method,
            response.status().as_u16(),
            started.elapsed(),
        );
    }
    response
}

/// The health word an edge's view shows.
pub(crate) fn edge_health(edge: &EdgeNode) -> &'static str {
    match edge.status {
        EdgeStatus::Active if edge.health_check_failures == 0 => "healthy",
        EdgeStatus::Active => "degraded",
        EdgeStatus::Unhealthy => "unhealthy",
        _ => "unknown",
    }
}

/// Renders every metric of this control plane.
pub async fn render(state: &AppState) -> Result<String, ApiError> {
    let store = state.store();
    let mut out = String::new();

    family(
        &mut out,
        "kokoa_build_info",
        "gauge",
        "The running build, by version.",
    );
    let _ = writeln!(
        out,
        "kokoa_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(
        &mut out,
        "kokoa_leader",
        "gauge",
        "1 while this control plane leads (runs the duties), else 0.",
    );
    let _ = writeln!(out, "kokoa_leader {}", u8::from(state.leader().is_leader()));

    let mut edges: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let listed = store.list_edges().await?;
    for edge in &listed {
        *edges
            .entry((edge.status.as_str(), edge_health(edge)))
            .or_default() += 1;
    }
    family(
        &mut out,
        "kokoa_edges",
        "gauge",
        "Edge nodes by status and health (deleted ones included).",
    );
    for ((status, health), count) in edges {
        let _ = writeln!(
            out,
            "kokoa_edges{{status=\"{status}\",health=\"{health}\"}} {count}"
        );
    }

    let mut origins: BTreeMap<&str, u64> = [OriginStatus::Active, OriginStatus::Inactive]
        .into_iter()
        .map(|s| (s.as_str(), 0))
        .collect();
    for origin in store.list_origins().await? {
        *origins.entry(origin.status.as_str()).or_default() += 1;
    }
    family(&mut out, "kokoa_origins", "gauge", "Origins by status.");
    for (status, count) in origins {
        let _ = writeln!(out, "kokoa_origins{{status=\"{status}\"}} {count}");
    }
    let down = crate::runtime::health::origin_verdicts(state)
        .await?
        .values()
        .filter(|v| crate::runtime::health::origin_down(Some(v)))
        .count();
    family(
        &mut out,
        "kokoa_origins_down",
        "gauge",
        "Origins the health judge holds down: their tunnel fails at every edge, or their \
         application check fails; the edges answer 503 for their routes.",
    );
    let _ = writeln!(out, "kokoa_origins_down {down}");

    family(
        &mut out,
        "kokoa_routes",
        "gauge",
        "Routes (host names published).",
    );
    let _ = writeln!(out, "kokoa_routes {}", store.list_routes().await?.len());

    family(
        &mut out,
        "kokoa_certificate_expiry_timestamp_seconds",
        "gauge",
        "When each issued certificate expires, in Unix seconds, by host name it covers.",
    );
    for certificate in store.list_certificates().await? {
        let Some(not_after) = certificate.not_after else {
            continue;
        };
        for name in &certificate.names {
            let _ = writeln!(
                out,
                "kokoa_certificate_expiry_timestamp_seconds{{hostname=\"{}\"}} {}",
                escape(name.as_str()),
                not_after.as_unix()
            );
        }
    }

    family(
        &mut out,
        "kokoa_module_enabled",
        "gauge",
        "1 for each module switched on, else 0.",
    );
    let switches = state.modules().switches(state).await;
    for module in Module::ALL {
        let on = switches.get(&module).copied().unwrap_or(false);
        let _ = writeln!(
            out,
            "kokoa_module_enabled{{module=\"{}\"}} {}",
            module.as_str(),
            u8::from(on)
        );
    }

    let (requests, durations) = state.http_metrics().snapshot();
    family(
        &mut out,
        "kokoa_http_requests_total",
        "counter",
        "API and Web UI requests by route template, method and status.",
    );
    for ((route, method, status), count) in requests {
        let _ = writeln!(
            out,
            "kokoa_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {count}",
            escape(&route)
        );
    }
    family(
        &mut out,
        "kokoa_http_request_duration_seconds",
        "histogram",
        "How long requests took to answer, by route template and method.",
    );
    for ((route, method), histogram) in durations {
        let labels = format!("route=\"{}\",method=\"{method}\"", escape(&route));
        histogram.write(&mut out, "kokoa_http_request_duration_seconds", &labels);
    }
    family(
        &mut out,
        "kokoa_config_long_polls",
        "gauge",
        "Configuration requests of nodes held open until a change (?wait=).",
    );
    let _ = writeln!(
        out,
        "kokoa_config_long_polls {}",
        state
            .http_metrics()
            .long_polls
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    family(
        &mut out,
        "kokoa_event_stream_subscribers",
        "gauge",
        "Clients following GET /api/v1/events/stream.",
    );
    let _ = writeln!(
        out,
        "kokoa_event_stream_subscribers {}",
        state.events().subscribers()
    );
    state.duty_metrics().render(&mut out);
    Ok(out)
}

/// A node's metrics address from its last heartbeat (`metrics_address`), with `public_ip`
/// for an agent that listens on every address; `None` when it serves none or cannot be
/// reached that way.
fn scrape_address(
    last_metrics: Option<&serde_json::Value>,
    public_ip: Option<std::net::IpAddr>,
) -> Option<std::net::SocketAddr> {
    let address: std::net::SocketAddr = last_metrics?
        .get("metrics_address")?
        .as_str()?
        .parse()
        .ok()?;
    if address.ip().is_unspecified() {
        Some(std::net::SocketAddr::new(public_ip?, address.port()))
    } else {
        Some(address)
    }
}

/// The target groups of `GET /api/v1/prometheus/targets`: every edge (not deleted) and
/// origin whose agent serves metrics.
pub async fn targets(state: &AppState) -> Result<Vec<crate::api::TargetGroup>, ApiError> {
    let store = state.store();
    let group =
        |node: &str, name: &str, id: &str, address: std::net::SocketAddr| crate::api::TargetGroup {
            targets: vec![address.to_string()],
            labels: [("node", node), ("name", name), ("id", id)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        };
    let mut groups: Vec<_> = store
        .list_edges()
        .await?
        .into_iter()
        .filter(|e| e.status != EdgeStatus::Deleted)
        .filter_map(|e| {
            let address = scrape_address(e.last_metrics.as_ref(), e.public_ip)?;
            Some(group("edge", e.name.as_str(), e.id.as_str(), address))
        })
        .collect();
    groups.extend(store.list_origins().await?.into_iter().filter_map(|o| {
        let address = scrape_address(o.last_metrics.as_ref(), None)?;
        Some(group("origin", o.name.as_str(), o.id.as_str(), address))
    }));
    Ok(groups)
}

/// The answer of `GET /metrics`.
pub fn response(text: String) -> Response {
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_in_every_bucket_from_its_duration_up() {
        let metrics = HttpMetrics::default();
        metrics.observe("/api/v1/routes", "GET", 200, Duration::from_millis(30));
        metrics.observe("/api/v1/routes", "GET", 404, Duration::from_millis(3));
        let (requests, durations) = metrics.snapshot();
        assert_eq!(requests.len(), 2);
        let (_, histogram) = &durations[0];
        assert_eq!(histogram.count, 2);
        // 3 ms in every bucket, 30 ms from 0.05 s on.
        assert_eq!(histogram.buckets, [1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]);
        assert!((histogram.sum - 0.033).abs() < 1e-9);
    }
}
