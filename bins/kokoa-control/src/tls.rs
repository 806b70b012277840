//! The control plane's own TLS: nodes fetch credentials and keys from it, so it serves
//! HTTPS unless told `--insecure-http`.
//!
//! By default it is its own CA ([`ControlCa`]): the CA's certificate and its private key
//! (sealed under the master key) live in the store, so every control plane that shares the
//! database and `master.key` shares the CA, and its pin ([`CaPin`], the SHA-256 of the CA
//! certificate) is what enrollment commands, bundles and cloud-init carry. Each control
//! plane issues itself a serving certificate from it when it starts, for the public URL's
//! host, loopback and the names asked (`--tls-name`), and a new one every day
//! ([`RENEW_EVERY`]; each is valid [`LEAF_DAYS`] days).
//!
//! Or it serves a certificate chain and key from files (`--tls-cert`, `--tls-key`),
//! re-read when they change ([`RELOAD_EVERY`]), e.g. from a public CA or a company CA.
//!
//! Or a public certificate for the public URL's host (`--tls-acme`), ordered through the
//! `[acme]` CA by the leader and kept in the store for every control plane ([`acme`]).
//!
//! [`TlsListener`] completes TLS handshakes off the accept loop, each within
//! [`HANDSHAKE_TIMEOUT`], so a client that stalls its handshake holds up nobody else.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use kokoa_agent::CaPin;
use kokoa_core::{Sealed, Timestamp};
use kokoa_store::{MasterKey, Store};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::{
    ServerConfig,
    crypto::aws_lc_rs,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use zeroize::Zeroizing;

use crate::Error;

/// Where the CA lives in the store's small values.
const KV: (&str, &str) = ("tls", "ca");
/// The context bound into the sealed CA key.
const CA_KEY_CONTEXT: &str = "control-plane-tls-ca";
/// How long a serving certificate is valid.
pub const LEAF_DAYS: i64 = 90;
/// How often a control plane issues itself a fresh serving certificate.
pub const RENEW_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How often certificate files given with `--tls-cert` are looked at for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 512;

fn tls_error(message: impl std::fmt::Display) -> Error {
    Error::Tls {
        message: message.to_string(),
    }
}

/// The CA as stored: its certificate (PEM) and its PKCS#8 key, sealed.
#[derive(Serialize, Deserialize)]
struct StoredCa {
    certificate: String,
    key: String,
}

/// The control plane's CA.
pub struct ControlCa {
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ControlCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlCa")
            .field("pin", &self.pin())
            .finish_non_exhaustive()
    }
}

impl ControlCa {
    /// The CA in `store`, created there first if there is none. Of several control planes
    /// creating it at once, one wins and all use its CA.
    pub async fn load_or_create(store: &dyn Store, master: &MasterKey) -> Result<Self, Error> {
        let now = Timestamp::now();
        if let Some(text) = store.kv_get(KV.0, KV.1, now).await? {
            return Self::open(&text, master);
        }
        let created = Self::create_text(master)?;
        // Never expires: the far end of the store's time range.
        let forever = Timestamp::from_unix(253_402_300_799)?;
        store.kv_claim(KV.0, KV.1, &created, now, forever).await?;
        let text = store
            .kv_get(KV.0, KV.1, now)
            .await?
            .ok_or_else(|| tls_error("the CA just stored cannot be read back"))?;
        Self::open(&text, master)
    }

    fn create_text(master: &MasterKey) -> Result<String, Error> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Kokoa Proxy");
        // A random suffix: two installations' CAs are told apart by name, too.
        name.push(
            DnType::CommonName,
            format!(
                "Kokoa Proxy control plane CA {}",
                hex::encode(rand_bytes::<4>())
            ),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365 * 30);
        let certificate = params.self_signed(&key).map_err(tls_error)?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        let stored = StoredCa {
            certificate: certificate.pem(),
            key: master.seal(&key_pem, CA_KEY_CONTEXT).as_str().to_owned(),
        };
        serde_json::to_string(&stored).map_err(tls_error)
    }

    fn open(text: &str, master: &MasterKey) -> Result<Self, Error> {
        let stored: StoredCa = serde_json::from_str(text)
            .map_err(|e| tls_error(format!("the stored CA cannot be read: {e}")))?;
        let key_pem = master
            .open(&Sealed::parse(&stored.key)?, CA_KEY_CONTEXT)
            .map_err(|e| tls_error(format!("the stored CA key does not open: {e}")))?;
        let key = KeyPair::from_pem(&key_pem).map_err(tls_error)?;
        let der = CertificateDer::from_pem_slice(stored.certificate.as_bytes())
            .map_err(|e| tls_error(format!("the stored CA certificate: {e}")))?;
        let issuer = Issuer::from_ca_cert_der(&der, key).map_err(tls_error)?;
        Ok(Self { der, issuer })
    }

    /// The pin nodes trust this CA by.
    pub fn pin(&self) -> CaPin {
        CaPin::of(&self.der)
    }

    /// A serving certificate for `names` (DNS names or IP addresses), with this CA's
    /// certificate after it in the chain, valid from a day ago for [`LEAF_DAYS`].
    pub fn issue(&self, names: &[String]) -> Result<CertifiedKey, Error> {
        let key = KeyPair::generate().map_err(tls_error)?;
        let mut params = CertificateParams::new(names.to_vec())
            .map_err(|e| tls_error(format!("a name of {names:?}: {e}")))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Kokoa Proxy control plane");
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(LEAF_DAYS);
        let leaf = params.signed_by(&key, &self.issuer).map_err(tls_error)?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(tls_error)?;
        certified(vec![leaf.der().clone(), self.der.clone()], key_der)
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, Error> {
    CertifiedKey::from_der(chain, key, &aws_lc_rs::default_provider())
        .map_err(|e| tls_error(format!("the certificate and key do not go together: {e}")))
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    use rand_core::{OsRng, RngCore as _};
    let mut bytes = [0; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// The names a self-issued serving certificate covers: the public URL's host, loopback,
/// the listen address when it is a specific one, and `extra`. Sorted, without repeats.
pub fn serving_names(public_url: &str, listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(url) = reqwest::Url::parse(public_url)
        && let Some(host) = url.host_str()
    {
        names.push(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        );
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// Issued by the control plane's CA for these names.
    OwnCa {
        /// DNS names and IP addresses.
        names: Vec<String>,
    },
    /// A PEM chain and key from files, re-read when they change.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A public certificate for `host` through ACME; until it is issued, one of the
    /// control plane's CA for `fallback`.
    Acme {
        /// The public URL's host.
        host: kokoa_core::Hostname,
        /// Where the CA's HTTP-01 requests are answered.
        http_listen: SocketAddr,
        /// The names of the own-CA certificate served meanwhile.
        fallback: Vec<String>,
    },
}

/// The serving certificate of the moment; [`TlsListener`] hands it to every handshake.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Current {
    fn set(&self, key: CertifiedKey) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
    }
}

/// What serving TLS needs, ready: the server configuration, the pin to print, and the task
/// that keeps the certificate fresh.
#[derive(Debug)]
pub struct ServingTls {
    config: Arc<ServerConfig>,
    current: Arc<Current>,
    /// The pin of the control plane's CA, or of the last certificate of a chain from files.
    pub pin: CaPin,
    refresher: Option<JoinHandle<()>>,
}

impl Drop for ServingTls {
    fn drop(&mut self) {
        if let Some(refresher) = &self.refresher {
            refresher.abort();
        }
    }
}

impl ServingTls {
    /// Prepares `source`: issues the first certificate, or reads the files.
    pub async fn new(
        source: &TlsSource,
        store: &dyn Store,
        master: &MasterKey,
    ) -> Result<Self, Error> {
        let (first, pin, refresher): (CertifiedKey, CaPin, Option<Refresh>) = match source {
            TlsSource::OwnCa { names } => {
                let ca = ControlCa::load_or_create(store, master).await?;
                let pin = ca.pin();
                (
                    ca.issue(names)?,
                    pin,
                    Some(Refresh::Issue(ca, names.clone())),
                )
            }
            TlsSource::Acme { host, fallback, .. } => {
                let ca = ControlCa::load_or_create(store, master).await?;
                let first = match acme::stored(store, master, host).await? {
                    Some(public) => public.certified()?,
                    None => ca.issue(fallback)?,
                };
                // Renewed by the ACME task, started with the rest of the control plane.
                (first, ca.pin(), None)
            }
            TlsSource::Files { cert, key } => {
                let (loaded, stamp) = read_files(cert, key)?;
                let last = loaded
                    .cert
                    .last()
                    .expect("a chain read from a file is not empty");
                let pin = CaPin::of(last);
                (
                    loaded,
                    pin,
                    Some(Refresh::Files(cert.clone(), key.clone(), stamp)),
                )
            }
        };
        let current = Arc::new(Current(RwLock::new(Arc::new(first))));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(tls_error)?
                .with_no_client_auth()
                .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
            pin,
            refresher: refresher.map(|r| tokio::spawn(r.run(current.clone()))),
            current,
        })
    }

    /// For [`TlsSource::Acme`]: keeps the public certificate for `host` (the leader orders
    /// and renews it; every control plane serves what is stored) until this is dropped.
    pub fn keep_public(
        &mut self,
        state: crate::state::AppState,
        host: kokoa_core::Hostname,
        responder: SocketAddr,
    ) {
        let current = self.current.clone();
        self.refresher = Some(tokio::spawn(acme::keep(state, current, host, responder)));
    }

    /// Listens on `listener` with this configuration.
    pub fn listen(&self, listener: TcpListener) -> TlsListener {
        TlsListener::new(listener, TlsAcceptor::from(self.config.clone()))
    }
}

enum Refresh {
    Issue(ControlCa, Vec<String>),
    Files(PathBuf, PathBuf, Stamp),
}

impl Refresh {
    async fn run(self, current: Arc<Current>) {
        match self {
            Self::Issue(ca, names) => loop {
                tokio::time::sleep(RENEW_EVERY).await;
                match ca.issue(&names) {
                    Ok(key) => {
                        current.set(key);
                        tracing::info!("issued a fresh serving certificate");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot issue a serving certificate; the current one stays")
                    }
                }
            },
            Self::Files(cert, key, mut stamp) => loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                if file_stamp(&cert, &key) == stamp {
                    continue;
                }
                match read_files(&cert, &key) {
                    Ok((loaded, new_stamp)) => {
                        current.set(loaded);
                        stamp = new_stamp;
                        tracing::info!(cert = %cert.display(), "serving the changed certificate");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the changed certificate files cannot be used; the last good certificate stays")
                    }
                }
            },
        }
    }
}

/// The files' modification times: a change means reading them again.
type Stamp = (Option<SystemTime>, Option<SystemTime>);

fn file_stamp(cert: &Path, key: &Path) -> Stamp {
    let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn read_files(cert: &Path, key: &Path) -> Result<(CertifiedKey, Stamp), Error> {
    let stamp = file_stamp(cert, key);
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::Io {
            what: "cannot read TLS file",
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = Zeroizing::new(read(key)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(tls_error(format!(
            "{} holds no PEM certificate",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| tls_error(format!("{}: {e}", key.display())))?;
    Ok((certified(chain, private)?, stamp))
}

/// A listener that hands out connections whose TLS handshake is complete. Handshakes run
/// in their own tasks, so a slow one does not hold up the others.
#[derive(Debug)]
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl TlsListener {
    fn new(listener: TcpListener, tls: TlsAcceptor) -> Self {
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (sender, connections) = mpsc::channel(64);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let tls = tls.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Self {
            connections,
            local,
            acceptor,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept task ended only if the semaphore closed, which never happens.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

pub mod acme;
#[cfg(test)]
mod tests;
