//! The origin's application check endpoint (SPEC §8.4): `GET http://<origin_wg_ip>/health`,
//! answered on the tunnel address for the edges, which check it through their tunnels.
//!
//! It answers `200 ok` while the application answers: the URL given with
//! `--application-url` (fetched at each check, 2xx expected), or, without one, the agent
//! itself. Anything else gets `503` with the reason. Only the edges' tunnel addresses may
//! connect, as for the forwarding. When a service of the origin is itself on port 80, the
//! agent leaves the port to it and offers no check (the control plane then asks none).

use std::{
    collections::BTreeSet,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError, RwLock},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::Error;

/// The port of the application check on the tunnel address (SPEC: `http://<origin_wg_ip>/`).
pub const APPLICATION_PORT: u16 = 80;

/// Longest request head read, and longest wait for it.
const MAX_HEAD: usize = 4096;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers the edges' application checks.
#[derive(Debug)]
pub struct ApplicationEndpoint {
    port: u16,
    probe: Arc<Probe>,
    allowed: Arc<RwLock<BTreeSet<IpAddr>>>,
    listener: Mutex<Option<(SocketAddr, JoinHandle<()>)>>,
}

#[derive(Debug)]
struct Probe {
    url: Option<String>,
    http: reqwest::Client,
}

impl ApplicationEndpoint {
    /// An endpoint reporting on the application at `url` (none: the agent itself), giving
    /// it `timeout` to answer.
    pub fn new(url: Option<String>, timeout: Duration) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("kokoa-origin/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Http {
                url: "(application check client)".into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            port: APPLICATION_PORT,
            probe: Arc::new(Probe { url, http }),
            allowed: Arc::default(),
            listener: Mutex::default(),
        })
    }

    /// Answers on `port` instead of [`APPLICATION_PORT`] (tests).
    pub fn on_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Listens on `listen:80` for `allowed`, unless `service_ports` holds that port; a
    /// listener on another address is closed. Must run inside a tokio runtime.
    ///
    /// Fails while the port cannot be opened (the tunnel address not configured yet,
    /// another program on it); calling again retries.
    pub fn set(
        &self,
        listen: IpAddr,
        service_ports: &BTreeSet<u16>,
        allowed: BTreeSet<IpAddr>,
    ) -> io::Result<()> {
        *self.allowed.write().unwrap_or_else(PoisonError::into_inner) = allowed;
        let wanted =
            (!service_ports.contains(&self.port)).then(|| SocketAddr::new(listen, self.port));
        let mut current = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().map(|(addr, _)| *addr) == wanted {
            return Ok(());
        }
        if let Some((_, task)) = current.take() {
            task.abort();
        }
        let Some(addr) = wanted else { return Ok(()) };
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(std_listener)?;
        let (probe, allowed) = (Arc::clone(&self.probe), Arc::clone(&self.allowed));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let admitted = allowed
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains(&peer.ip());
                if !admitted {
                    continue;
                }
                tokio::spawn(answer(stream, Arc::clone(&probe)));
            }
        });
        *current = Some((addr, task));
        tracing::info!(%addr, "answering the application check");
        Ok(())
    }

    /// The port the check is answered on, while it is.
    pub fn port(&self) -> Option<u16> {
        self.listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(addr, _)| addr.port())
    }

    /// Closes the listener.
    pub fn stop(&self) {
        if let Some((_, task)) = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Drop for ApplicationEndpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Probe {
    /// `(status, body)` of the answer to a check.
    async fn verdict(&self) -> (u16, String) {
        let Some(url) = &self.url else {
            return (200, "ok\n".into());
        };
        match self.http.get(url).send().await {
            Ok(r) if r.status().is_success() => (200, "ok\n".into()),
            Ok(r) => (
                503,
                format!("the application at {url} answered {}\n", r.status()),
            ),
            Err(e) => (
                503,
                format!("the application at {url} does not answer: {e}\n"),
            ),
        }
    }
}

/// Reads one request head and answers it: `GET /health` gets the verdict, anything else
/// 404; then the connection closes.
async fn answer(mut stream: TcpStream, probe: Arc<Probe>) {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let (status, body) = if is_health_request(&head) {
        probe.verdict().await
    } else {
        (404, "not found\n".into())
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Whether the request line is `GET /health` (a query string allowed).
fn is_health_request(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return false;
    };
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    method == b"GET" && path == b"/health"
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU16, Ordering};

    use axum::{Router, http::StatusCode, routing::get};

    use super::*;

    #[test]
    fn only_get_health_is_a_check() {
        assert!(is_health_request(
            b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"
        ));
        assert!(is_health_request(b"GET /health?from=edge HTTP/1.1\r\n\r\n"));
        assert!(!is_health_request(b"POST /health HTTP/1.1\r\n\r\n"));
        assert!(!is_health_request(b"GET /healthz HTTP/1.1\r\n\r\n"));
        assert!(!is_health_request(b"GET\r\n\r\n"));
        assert!(!is_health_request(b""));
    }

    async fn get_status(addr: SocketAddr, path: &str) -> Result<(u16, String), reqwest::Error> {
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .get(format!("http://{addr}{path}"))
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    #[tokio::test]
    async fn answers_for_the_application_and_only_to_the_edges() {
        // The application, answering what `code` says.
        let code = Arc::new(AtomicU16::new(200));
        let served = Arc::clone(&code);
        let app = Router::new().route(
            "/health",
            get(move || {
                let c = served.load(Ordering::SeqCst);
                async move { StatusCode::from_u16(c).unwrap() }
            }),
        );
        let app_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_url = format!("http://{}/health", app_listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(app_listener, app).await });

        // On a free port of a loopback address of its own, admitting 127.0.0.1 only.
        let listen: IpAddr = "127.0.0.80".parse().unwrap();
        let port = std::net::TcpListener::bind((listen, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = ApplicationEndpoint::new(Some(app_url.clone()), Duration::from_secs(2))
            .unwrap()
            .on_port(port);
        let edge: IpAddr = "127.0.0.1".parse().unwrap();
        endpoint
            .set(listen, &BTreeSet::from([8080]), BTreeSet::from([edge]))
            .unwrap();
        assert_eq!(endpoint.port(), Some(port));
        let addr = SocketAddr::new(listen, port);

        assert_eq!(
            get_status(addr, "/health").await.unwrap(),
            (200, "ok\n".into())
        );
        assert_eq!(get_status(addr, "/other").await.unwrap().0, 404);
        code.store(500, Ordering::SeqCst);
        let (status, body) = get_status(addr, "/health").await.unwrap();
        assert_eq!(status, 503);
        assert!(body.contains(&app_url) && body.contains("500"), "{body}");

        // Not an edge: closed without an answer.
        endpoint
            .set(listen, &BTreeSet::from([8080]), BTreeSet::new())
            .unwrap();
        assert!(get_status(addr, "/health").await.is_err());

        // A service on the port takes it: no check offered.
        endpoint
            .set(listen, &BTreeSet::from([port]), BTreeSet::from([edge]))
            .unwrap();
        assert_eq!(endpoint.port(), None);
        assert!(get_status(addr, "/health").await.is_err());
    }
}
