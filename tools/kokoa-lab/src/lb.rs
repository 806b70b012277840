//! The load balancer in front of `check --chaos`'s two control planes: a TCP proxy on the
//! control plane's usual address that passes each connection to a control plane that
//! answers, as an HAProxy with health checks would.
//!
//! Why not nginx's `stream` module: it only notices a backend that refuses connections. A
//! stalled control plane (SIGSTOP, the "stalled leader" step) still accepts them — the
//! kernel completes the handshake — and never answers, so nginx would keep sending half of
//! the agents into it. This one checks `GET /health` of each backend every
//! [`CHECK_EVERY`]; after [`FAILURES`] failed checks in a row the backend is down, new
//! connections go elsewhere, and the connections it carried are closed (HAProxy's
//! `on-marked-down shutdown-sessions`) so their clients reconnect to the other one. A new
//! connection tries the backends that are up first, then the others; when none takes it,
//! it is closed.
//!
//! It also keeps when each client address connected, which is how the chaos steps see the
//! agents come back after an outage.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

use crate::Error;

/// How often each backend's `/health` is asked.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed checks in a row that take a backend out.
pub const FAILURES: u32 = 2;
/// How long connecting to a backend may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The most connections remembered.
const MAX_SESSIONS: usize = 100_000;

/// One connection passed to a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// When the backend took it.
    pub at: SystemTime,
    /// The client's address.
    pub client: IpAddr,
    /// The backend.
    pub backend: SocketAddr,
    /// When it ended, if it has.
    pub ended: Option<SystemTime>,
}

#[derive(Debug)]
struct Backend {
    address: SocketAddr,
    up: AtomicBool,
    /// Bumped when the backend is taken out: its connections end.
    taken_out: watch::Sender<u64>,
}

#[derive(Debug)]
struct Inner {
    backends: Vec<Backend>,
    sessions: Mutex<Vec<Session>>,
    /// How checks reach backends that serve HTTPS, once known.
    tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
}

/// The running load balancer; dropping it stops it (and every connection it carries).
#[derive(Debug)]
pub struct LoadBalancer {
    inner: Arc<Inner>,
    listen: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl LoadBalancer {
    /// Listens on `listen` and passes connections to `backends` (in this order of
    /// preference).
    pub async fn start(listen: SocketAddr, backends: &[SocketAddr]) -> Result<Self, Error> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| Error::Io {
                action: "listen on",
                path: listen.to_string().into(),
                source,
            })?;
        let inner = Arc::new(Inner {
            backends: backends
                .iter()
                .map(|&address| Backend {
                    address,
                    up: AtomicBool::new(false),
                    taken_out: watch::channel(0).0,
                })
                .collect(),
            sessions: Mutex::new(Vec::new()),
            tls: std::sync::OnceLock::new(),
        });
        let mut tasks = Vec::new();
        for index in 0..backends.len() {
            tasks.push(tokio::spawn(check_loop(Arc::clone(&inner), index)));
        }
        tasks.push(tokio::spawn(accept_loop(Arc::clone(&inner), listener)));
        Ok(Self {
            inner,
            listen,
            tasks,
        })
    }

    /// From now on checks speak TLS with `config` (the backends serve HTTPS); the
    /// connections themselves pass through untouched. Only the first call counts.
    pub fn check_over_tls(&self, config: rustls::ClientConfig) {
        let _ = self.inner.tls.set(Arc::new(config));
    }

    /// Where it listens.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// Whether `backend` passes its checks now.
    pub fn is_up(&self, backend: SocketAddr) -> bool {
        self.inner
            .backends
            .iter()
            .any(|b| b.address == backend && b.up.load(Ordering::Acquire))
    }

    /// The connections passed on since `since`, or still open then.
    pub fn sessions_since(&self, since: SystemTime) -> Vec<Session> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|s| s.at >= since || s.ended.is_none_or(|e| e >= since))
            .cloned()
            .collect()
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(pass_on(Arc::clone(&inner), client, peer.ip()));
    }
}

/// Passes `client` to the first backend that takes it, the ones up first.
async fn pass_on(inner: Arc<Inner>, mut client: TcpStream, peer: IpAddr) {
    let mut order: Vec<&Backend> = inner.backends.iter().collect();
    order.sort_by_key(|b| !b.up.load(Ordering::Acquire));
    for backend in order {
        let mut taken_out = backend.taken_out.subscribe();
        let Ok(Ok(mut server)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend.address)).await
        else {
            continue;
        };
        let index = {
            let mut sessions = inner
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (sessions.len() < MAX_SESSIONS).then(|| {
                sessions.push(Session {
                    at: SystemTime::now(),
                    client: peer,
                    backend: backend.address,
                    ended: None,
                });
                sessions.len() - 1
            })
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            _ = taken_out.changed() => {}
        }
        if let Some(index) = index {
            let mut sessions = inner
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            sessions[index].ended = Some(SystemTime::now());
        }
        return;
    }
    // No backend took it: the client sees the connection closed.
}

async fn check_loop(inner: Arc<Inner>, index: usize) {
    let backend = &inner.backends[index];
    let mut failures = 0;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if healthy(backend.address, inner.tls.get()).await {
            failures = 0;
            backend.up.store(true, Ordering::Release);
        } else {
            failures += 1;
            if failures >= FAILURES && backend.up.swap(false, Ordering::AcqRel) {
                backend.taken_out.send_modify(|n| *n += 1);
            }
        }
    }
}

/// Whether `GET /health` at `address` answers 200 within [`CHECK_TIMEOUT`], over `tls`
/// when given.
async fn healthy(address: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) -> bool {
    async fn ask(
        mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    ) -> Option<bool> {
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: lb\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
    }
    let check = async {
        let stream = TcpStream::connect(address).await.ok()?;
        match tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
                let tls = tokio_rustls::TlsConnector::from(Arc::clone(tls));
                ask(tls.connect(name, stream).await.ok()?).await
            }
            None => ask(stream).await,
        }
    };
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, check).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend answering `/health` with 200 and anything else with its name.
    async fn backend(name: &'static str) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let body = if buf.starts_with(b"GET /health") {
                        "ok"
                    } else {
                        name
                    };
                    let answer = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        (address, task)
    }

    async fn ask(address: SocketAddr) -> String {
        let Ok(mut s) = TcpStream::connect(address).await else {
            return String::new();
        };
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn connections_go_to_a_backend_that_answers() {
        let (a, a_task) = backend("a").await;
        let (b, _b_task) = backend("b").await;
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listen = free.local_addr().unwrap();
        drop(free);
        let lb = LoadBalancer::start(listen, &[a, b]).await.unwrap();
        for _ in 0..40 {
            if lb.is_up(a) && lb.is_up(b) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(ask(listen).await, "a");
        a_task.abort();
        // Refused at once: the next backend takes it even before a check notices.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(ask(listen).await, "b");
        let sessions = lb.sessions_since(SystemTime::UNIX_EPOCH);
        assert_eq!(sessions.len(), 2, "{sessions:?}");
        assert_eq!(sessions[1].backend, b);
        assert!(sessions[1].client.is_loopback());
    }
}
