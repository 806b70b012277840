//! A fault switch in front of PowerDNS's HTTP API for `check --chaos`: the control planes
//! reach the API through this proxy on 127.0.0.1 (the lab's zones are created with its URL),
//! which passes requests on, answers 500 to every one, or holds every one without answer.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderName, StatusCode},
    response::{IntoResponse, Response},
};
use tokio::task::JoinHandle;

use crate::Error;

/// The most a request held by [`Fault::Hang`] waits before it is answered 504.
const HANG_LIMIT: Duration = Duration::from_secs(120);
/// The largest request body passed on.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What the proxy does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Pass it on to PowerDNS.
    Pass = 0,
    /// Answer 500, as a broken API server does.
    Error = 1,
    /// Answer nothing (until the switch moves, then 504), as an API behind a dead link.
    Hang = 2,
}

impl Fault {
    fn from_u8(n: u8) -> Self {
        match n {
            1 => Self::Error,
            2 => Self::Hang,
            _ => Self::Pass,
        }
    }
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    fault: AtomicU8,
    /// Requests seen in each [`Fault`] mode.
    counts: [AtomicU64; 3],
}

/// The running proxy; dropping it stops it.
#[derive(Debug)]
pub struct DnsApiProxy {
    shared: Arc<Shared>,
    url: String,
    task: JoinHandle<()>,
}

impl Drop for DnsApiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsApiProxy {
    /// Starts a proxy to the API at `upstream` (e.g. `http://10.99.0.1:8081`) on a free
    /// port of 127.0.0.1, passing requests on.
    pub async fn start(upstream: &str) -> Result<Self, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|source| Error::Io {
                action: "listen on",
                path: "127.0.0.1:0".into(),
                source,
            })?;
        let address: SocketAddr = listener.local_addr().map_err(|source| Error::Io {
            action: "listen on",
            path: "127.0.0.1:0".into(),
            source,
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Command {
                command: "DNS API proxy".into(),
                message: e.to_string(),
            })?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http,
            fault: AtomicU8::new(Fault::Pass as u8),
            counts: Default::default(),
        });
        let router = Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            shared,
            url: format!("http://{address}"),
            task,
        })
    }

    /// The URL to give the control planes instead of the API's.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Switches what happens to the next requests (and to those held now).
    pub fn set(&self, fault: Fault) {
        self.shared.fault.store(fault as u8, Ordering::Release);
    }

    /// How many requests arrived while each fault was set: passed on, answered 500, held.
    pub fn counts(&self) -> [u64; 3] {
        self.shared
            .counts
            .each_ref()
            .map(|c| c.load(Ordering::Acquire))
    }
}

fn fault(shared: &Shared) -> Fault {
    Fault::from_u8(shared.fault.load(Ordering::Acquire))
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let now = fault(&shared);
    shared.counts[now as usize].fetch_add(1, Ordering::AcqRel);
    match now {
        Fault::Error => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error": "kokoa-lab fault switch: the DNS API fails"}"#,
            )
                .into_response();
        }
        Fault::Hang => {
            let held = Instant::now();
            while fault(&shared) == Fault::Hang && held.elapsed() < HANG_LIMIT {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            return StatusCode::GATEWAY_TIMEOUT.into_response();
        }
        Fault::Pass => {}
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = shared
        .http
        .request(parts.method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// Headers that belong to one connection (and the length, which the body sets again).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "connection" | "keep-alive" | "transfer-encoding" | "content-length" | "upgrade"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_on_fails_and_holds_as_switched() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = upstream.local_addr().unwrap();
        let app = Router::new().fallback(|request: Request| async move {
            let key = request
                .headers()
                .get("x-api-key")
                .map(|v| v.to_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            format!("{} {} {key}", request.method(), request.uri())
        });
        tokio::spawn(async move { axum::serve(upstream, app).await.unwrap() });
        let proxy = DnsApiProxy::start(&format!("http://{at}")).await.unwrap();
        let client = reqwest::Client::new();
        let url = format!("{}/api/v1/servers/localhost/zones?x=1", proxy.url());
        let ask = || {
            client
                .patch(&url)
                .header("X-API-Key", "k")
                .body("{}")
                .send()
        };
        let passed = ask().await.unwrap();
        assert_eq!(passed.status(), 200);
        assert_eq!(
            passed.text().await.unwrap(),
            "PATCH /api/v1/servers/localhost/zones?x=1 k"
        );
        proxy.set(Fault::Error);
        assert_eq!(ask().await.unwrap().status(), 500);
        proxy.set(Fault::Hang);
        let (c, u) = (client.clone(), url.clone());
        let held =
            tokio::spawn(
                async move { c.patch(&u).header("X-API-Key", "k").body("{}").send().await },
            );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held.is_finished(), "a held request was answered");
        proxy.set(Fault::Pass);
        assert_eq!(held.await.unwrap().unwrap().status(), 504);
        assert_eq!(proxy.counts(), [1, 1, 1]);
    }
}
