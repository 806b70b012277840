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
use kokoa_agent::prometheus::{CONTENT_TYPE, Histogram, escape, family};
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
