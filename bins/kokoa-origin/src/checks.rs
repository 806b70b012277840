//! Service checks: is each of the origin's services answering on its local port?
//!
//! A service with a `health_check_path` is up when `GET <path>` answers 2xx (redirects are
//! not followed: a health path that redirects is reported down); one without is up when a
//! TCP connection to its port opens. HTTPS services are checked without verifying their
//! certificate: the check is about liveness on loopback, not identity.

use std::{net::IpAddr, time::Duration};

use kokoa_agent::LinkState;
use kokoa_core::{Name, Protocol, ServiceEntry};
use serde::Serialize;
use tokio::{net::TcpStream, task::JoinSet};

use crate::Error;

/// A service's state in a heartbeat: `{"name","port","status":"up|down"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceReport {
    /// The service's name.
    pub name: Name,
    /// Its local port.
    pub port: u16,
    /// Whether it answered its check.
    pub status: LinkState,
}

/// Checks services listening on one address (127.0.0.1 in production).
#[derive(Debug, Clone)]
pub struct Checker {
    http: reqwest::Client,
    host: IpAddr,
    timeout: Duration,
}

impl Checker {
    /// A checker of services on `host`, giving each check at most `timeout`.
    pub fn new(host: IpAddr, timeout: Duration) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tls_danger_accept_invalid_certs(true)
            .user_agent(concat!("kokoa-origin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Http {
                url: "(service check client)".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            host,
            timeout,
        })
    }

    /// Whether `service` is up.
    pub async fn check(&self, service: &ServiceEntry) -> LinkState {
        let port = service.port.get();
        let up = match &service.health_check_path {
            Some(path) => {
                let scheme = match service.protocol {
                    Protocol::Https => "https",
                    _ => "http",
                };
                let host = match self.host {
                    IpAddr::V4(ip) => ip.to_string(),
                    IpAddr::V6(ip) => format!("[{ip}]"),
                };
                let url = format!("{scheme}://{host}:{port}{path}");
                self.http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
            None => tokio::time::timeout(self.timeout, TcpStream::connect((self.host, port)))
                .await
                .is_ok_and(|r| r.is_ok()),
        };
        if up { LinkState::Up } else { LinkState::Down }
    }

    /// Checks every service at once; the reports come in the order of `services`.
    pub async fn check_all(&self, services: &[ServiceEntry]) -> Vec<ServiceReport> {
        let mut running = JoinSet::new();
        for (i, service) in services.iter().enumerate() {
            let (checker, service) = (self.clone(), service.clone());
            running.spawn(async move { (i, checker.check(&service).await) });
        }
        let mut states = vec![LinkState::Down; services.len()];
        while let Some(done) = running.join_next().await {
            // A check that panicked leaves its service reported down.
            if let Ok((i, state)) = done {
                states[i] = state;
            }
        }
        services
            .iter()
            .zip(states)
            .map(|(s, status)| ServiceReport {
                name: s.name.clone(),
                port: s.port.get(),
                status,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use axum::{Router, http::StatusCode, routing::get};
    use kokoa_core::{HealthCheckPath, Port};
    use tokio::net::TcpListener;

    use super::*;

    fn service(name: &str, port: u16, path: Option<&str>) -> ServiceEntry {
        ServiceEntry {
            id: None,
            name: Name::parse(name).unwrap(),
            port: Port::new(port).unwrap(),
            protocol: Protocol::Http,
            health_check_path: path.map(|p| HealthCheckPath::parse(p).unwrap()),
        }
    }

    /// A port nothing listens on.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn tcp_and_http_checks_see_what_answers() {
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/broken", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
            .route(
                "/moved",
                get(|| async { (StatusCode::FOUND, [("location", "/healthz")]) }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let closed = closed_port();

        let checker = Checker::new("127.0.0.1".parse().unwrap(), Duration::from_secs(2)).unwrap();
        let services = [
            service("web", http_port, Some("/healthz")),
            service("tcp", http_port, None),
            service("broken", http_port, Some("/broken")),
            service("moved", http_port, Some("/moved")),
            service("missing", http_port, Some("/nope")),
            service("gone", closed, None),
            service("gone-http", closed, Some("/healthz")),
        ];
        let reports = checker.check_all(&services).await;
        let got: Vec<(&str, LinkState)> = reports
            .iter()
            .map(|r| (r.name.as_str(), r.status))
            .collect();
        use LinkState::{Down, Up};
        assert_eq!(
            got,
            [
                ("web", Up),
                ("tcp", Up),
                ("broken", Down),
                ("moved", Down),
                ("missing", Down),
                ("gone", Down),
                ("gone-http", Down),
            ]
        );
        assert_eq!(
            serde_json::to_value(&reports[0]).unwrap(),
            serde_json::json!({"name": "web", "port": http_port, "status": "up"})
        );
    }

    #[tokio::test]
    async fn a_hanging_service_is_down_within_the_timeout() {
        // Accepts connections but never answers the request.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let checker =
            Checker::new("127.0.0.1".parse().unwrap(), Duration::from_millis(300)).unwrap();
        let started = std::time::Instant::now();
        let state = checker.check(&service("slow", port, Some("/health"))).await;
        assert_eq!(state, LinkState::Down);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}
