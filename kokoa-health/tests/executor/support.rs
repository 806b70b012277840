//! Servers and certificates the executor tests run against, all on loopback.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use kokoa_health::DefaultExecutor;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};
use rustls::{
    ServerConfig,
    crypto::aws_lc_rs,
    pki_types::PrivateKeyDer,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub(crate) const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// What a test server answers, and what it saw.
#[derive(Debug)]
pub(crate) struct Behaviour {
    pub(crate) status: u16,
    pub(crate) body: String,
    /// `Host` header and path of every request, in order.
    pub(crate) requests: Vec<(String, String)>,
    /// SNI of every TLS handshake (`None`: no SNI sent).
    pub(crate) sni: Vec<Option<String>>,
}

/// An HTTP (or HTTPS) server on 127.0.0.1, stopped when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) behaviour: Arc<Mutex<Behaviour>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// A plain HTTP server answering `status` with `body`.
    pub(crate) async fn http(status: u16, body: &str) -> Self {
        Self::start(status, body, None).await
    }

    /// An HTTPS server presenting the certificate `certificates` maps the SNI to (the
    /// `""` entry without SNI or for an unknown name).
    pub(crate) async fn https(
        status: u16,
        body: &str,
        certificates: Vec<(&str, Arc<CertifiedKey>)>,
    ) -> Self {
        Self::start(status, body, Some(certificates)).await
    }

    async fn start(status: u16, body: &str, tls: Option<Vec<(&str, Arc<CertifiedKey>)>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local address");
        let behaviour = Arc::new(Mutex::new(Behaviour {
            status,
            body: body.to_owned(),
            requests: Vec::new(),
            sni: Vec::new(),
        }));
        let acceptor = tls.map(|certificates| {
            let resolver = BySni {
                certificates: certificates
                    .into_iter()
                    .map(|(name, key)| (name.to_owned(), key))
                    .collect(),
                behaviour: behaviour.clone(),
            };
            let config =
                ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("default versions")
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(resolver));
            TlsAcceptor::from(Arc::new(config))
        });
        let task = tokio::spawn(serve(listener, acceptor, behaviour.clone()));
        Self {
            addr,
            behaviour,
            task,
        }
    }

    pub(crate) fn set(&self, status: u16, body: &str) {
        let mut behaviour = self.behaviour.lock().unwrap();
        behaviour.status = status;
        behaviour.body = body.to_owned();
    }

    pub(crate) fn requests(&self) -> Vec<(String, String)> {
        self.behaviour.lock().unwrap().requests.clone()
    }

    pub(crate) fn sni(&self) -> Vec<Option<String>> {
        self.behaviour.lock().unwrap().sni.clone()
    }

    pub(crate) fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }
}

/// Serves HTTP/1.1 on `listener` (over TLS with `acceptor`) until aborted; used by tests
/// that bring a server up again on the same port.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    behaviour: Arc<Mutex<Behaviour>>,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let behaviour = behaviour.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let behaviour = behaviour.clone();
                async move {
                    let mut behaviour = behaviour.lock().unwrap();
                    let host = request
                        .headers()
                        .get(hyper::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let path = request
                        .uri()
                        .path_and_query()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    behaviour.requests.push((host, path));
                    let response = Response::builder()
                        .status(behaviour.status)
                        .body(Full::new(Bytes::from(behaviour.body.clone())))
                        .expect("valid response");
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = http1::Builder::new();
            let _ = match acceptor {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        connection
                            .serve_connection(TokioIo::new(tls), service)
                            .await
                    }
                    Err(_) => return,
                },
                None => {
                    connection
                        .serve_connection(TokioIo::new(tcp), service)
                        .await
                }
            };
        });
    }
}

/// Picks the certificate by SNI and records the SNI of each handshake.
#[derive(Debug)]
struct BySni {
    certificates: HashMap<String, Arc<CertifiedKey>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(str::to_owned);
        self.behaviour.lock().unwrap().sni.push(sni.clone());
        let name = sni.unwrap_or_default();
        self.certificates
            .get(&name)
            .or_else(|| self.certificates.get(""))
            .cloned()
    }
}

/// A private certificate authority.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// An executor trusting this CA only.
    pub(crate) fn executor(&self) -> DefaultExecutor {
        DefaultExecutor::without_system_roots()
            .with_root_pem(self.pem().as_bytes())
            .expect("the CA is a valid root")
    }

    /// A certificate for `names`, valid from `not_before` to `not_after` (from now).
    pub(crate) fn leaf(
        &self,
        names: &[&str],
        not_before: Offset,
        not_after: Offset,
    ) -> Arc<CertifiedKey> {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = date_time_ymd(1970, 1, 1) + since_epoch(not_before);
        params.not_after = date_time_ymd(1970, 1, 1) + since_epoch(not_after);
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        Arc::new(
            CertifiedKey::from_der(
                vec![certificate.der().clone()],
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                &aws_lc_rs::default_provider(),
            )
            .unwrap(),
        )
    }

    /// A certificate for `names` valid from a day ago for `days` days from now.
    pub(crate) fn valid_for(&self, names: &[&str], days: u32) -> Arc<CertifiedKey> {
        self.leaf(
            names,
            Offset::Past(DAY),
            Offset::Future(DAY * days + Duration::from_secs(3600)),
        )
    }
}

/// A time relative to now.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Offset {
    Past(Duration),
    Future(Duration),
}

fn since_epoch(offset: Offset) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    match offset {
        Offset::Past(d) => now - d,
        Offset::Future(d) => now + d,
    }
}

/// A port on 127.0.0.1 that refuses connections: bound, so no other test can take it
/// meanwhile, but not listening. Keep the socket alive while using the port.
pub(crate) fn refusing_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}
