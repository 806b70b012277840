//! What every request handler shares.

use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use kokoa_core::SubnetPool;
use kokoa_store::{MasterKey, Store};
use tokio::sync::watch;

use kokoa_runtime::Runtime;

use crate::{
    auth::{limit::LoginLimiter, oidc::Oidc},
    payload_cache::EdgePayloads,
    runtime::RuntimeSettings,
};

/// The shared state of the API: the store, the master key, settings, and the change
/// signal that wakes long-polling nodes. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// What the duties share; the state derefs to it.
    runtime: Runtime,
    subnet_pool: SubnetPool,
    public_url: String,
    /// Login attempts left per client address.
    login_limiter: LoginLimiter,
    /// The OpenID provider people may sign in with, if one is configured.
    oidc: OnceLock<Arc<Oidc>>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    trusted_proxies: OnceLock<Vec<std::net::IpAddr>>,
    /// Turns true when the server is shutting down, so long polls answer at once.
    shutdown: watch::Sender<bool>,
    ca_pin: OnceLock<kokoa_agent::CaPin>,
    downloads: OnceLock<crate::downloads::Downloads>,
    /// Each edge's configuration as last built (see [`crate::payload_cache`]).
    edge_payloads: EdgePayloads,
    /// The API's requests, for `/metrics`.
    http_metrics: crate::metrics::HttpMetrics,
}

impl fmt::Debug for AppState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppState")
            .field("runtime", &self.inner.runtime)
            .field("subnet_pool", &self.inner.subnet_pool)
            .field("public_url", &self.inner.public_url)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for AppState {
    type Target = Runtime;

    /// The API composes the duties' context with its own parts: every duty takes the state
    /// as its [`Runtime`].
    fn deref(&self) -> &Runtime {
        &self.inner.runtime
    }
}

impl AppState {
    /// What the duties share.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// State over `store`; `public_url` (no trailing `/`) is what nodes are told to call.
    /// The duties run with their default settings (see [`with_settings`](Self::with_settings)).
    pub fn new(
        store: Arc<dyn Store>,
        master_key: MasterKey,
        subnet_pool: SubnetPool,
        public_url: impl Into<String>,
    ) -> Self {
        Self::with_settings(
            store,
            master_key,
            subnet_pool,
            public_url,
            RuntimeSettings::default(),
        )
    }

    /// Like [`new`](Self::new), with the duties' settings.
    pub fn with_settings(
        store: Arc<dyn Store>,
        master_key: MasterKey,
        subnet_pool: SubnetPool,
        public_url: impl Into<String>,
        settings: RuntimeSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                runtime: Runtime::new(store, master_key, settings),
                subnet_pool,
                public_url: public_url.into(),
                login_limiter: LoginLimiter::default(),
                oidc: OnceLock::new(),
                trusted_proxies: OnceLock::new(),
                shutdown: watch::Sender::new(false),
                edge_payloads: EdgePayloads::default(),
                http_metrics: crate::metrics::HttpMetrics::default(),
                ca_pin: OnceLock::new(),
                downloads: OnceLock::new(),
            }),
        }
    }

    /// The pool origin subnets come from.
    pub fn subnet_pool(&self) -> &SubnetPool {
        &self.inner.subnet_pool
    }

    /// The pin of the CA whose certificate this control plane serves, when it is its own
    /// CA: enrollment commands, bundles and cloud-init carry it.
    pub fn ca_pin(&self) -> Option<kokoa_agent::CaPin> {
        self.inner.ca_pin.get().copied()
    }

    /// Sets [`ca_pin`](Self::ca_pin); false if it was set already.
    pub fn set_ca_pin(&self, pin: kokoa_agent::CaPin) -> bool {
        self.inner.ca_pin.set(pin).is_ok()
    }

    /// The agents this control plane hands out, if it has any.
    pub fn downloads(&self) -> Option<&crate::downloads::Downloads> {
        self.inner.downloads.get()
    }

    /// Sets [`downloads`](Self::downloads); false if they were set already.
    pub fn set_downloads(&self, downloads: crate::downloads::Downloads) -> bool {
        self.inner.downloads.set(downloads).is_ok()
    }

    /// Where a node downloads `name` from this control plane, with its SHA-256: only over
    /// `https://` (nodes refuse plain HTTP downloads), and only if it is served.
    pub fn download_of(&self, name: &str) -> Option<(String, String)> {
        let file = self.downloads()?.get(name)?;
        self.public_url().starts_with("https://").then(|| {
            (
                format!("{}/downloads/{name}", self.public_url()),
                file.sha256.clone(),
            )
        })
    }

    /// The URL nodes reach this control plane at.
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// Whether session cookies get the `Secure` attribute: when the public URL is
    /// `https://` (the browser reaches the control plane over TLS).
    pub fn secure_cookies(&self) -> bool {
        self.inner.public_url.starts_with("https://")
    }

    /// Login attempts left per client address.
    pub fn login_limiter(&self) -> &LoginLimiter {
        &self.inner.login_limiter
    }

    /// Offers sign-in through `oidc`; false if a provider was set already.
    pub fn set_oidc(&self, oidc: Oidc) -> bool {
        self.inner.oidc.set(Arc::new(oidc)).is_ok()
    }

    /// Trusts the `X-Forwarded-For` header of requests from `proxies` to name the client
    /// (for the sign-in rate limit); false if set already.
    pub fn set_trusted_proxies(&self, proxies: Vec<std::net::IpAddr>) -> bool {
        self.inner.trusted_proxies.set(proxies).is_ok()
    }

    /// The reverse proxies trusted to name the client.
    pub fn trusted_proxies(&self) -> &[std::net::IpAddr] {
        self.inner.trusted_proxies.get().map_or(&[], Vec::as_slice)
    }

    /// The OpenID provider, if one is configured.
    pub fn oidc(&self) -> Option<&Arc<Oidc>> {
        self.inner.oidc.get()
    }

    /// The API's requests, counted for `/metrics`.
    pub fn http_metrics(&self) -> &crate::metrics::HttpMetrics {
        &self.inner.http_metrics
    }

    /// Each edge's configuration as last built.
    pub(crate) fn edge_payloads(&self) -> &EdgePayloads {
        &self.inner.edge_payloads
    }

    /// Ends every running long poll; called when the server starts shutting down.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Resolves once [`begin_shutdown`](Self::begin_shutdown) was called.
    pub async fn shutting_down(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|down| *down).await;
    }
}
