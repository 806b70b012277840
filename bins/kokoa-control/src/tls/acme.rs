//! The control plane's own public certificate (`--tls-acme`): ordered through the `[acme]`
//! CA for the public URL's host, with the same account as the routes' certificates.
//!
//! - The leader orders it (HTTP-01) and renews it ([`RenewalPolicy`] of `[acme]`); a
//!   failed order is retried with the policy's backoff, the current certificate serving.
//! - The certificate and its sealed key live in the store's shared values, so every
//!   control plane on the database serves it: each looks every [`RELOAD_EVERY`], or every
//!   [`WAITING_POLL`] while it serves none yet.
//! - HTTP-01 responses are put into the same shared values as the routes' ([`certs`]); each
//!   control plane answers them on `--acme-http-listen` ([`responder`]), so the CA may
//!   reach any of them. Every other plain HTTP request is sent to the public URL.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use kokoa_acme::{ChallengeMethod, RenewalPolicy};
use kokoa_core::{Hostname, Sealed, Severity, Timestamp};
use kokoa_store::{MasterKey, Store};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    sign::CertifiedKey,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{net::TcpListener, time::Instant};
use zeroize::Zeroizing;

use super::{Current, RELOAD_EVERY, certified, tls_error};
use crate::{Error, events::kinds, runtime::certs, state::AppState};

/// Where the public certificate lives in the store's shared values.
const KV: (&str, &str) = ("tls", "public");
/// The context bound into its sealed key.
const KEY_CONTEXT: &str = "control-plane-tls-public";
/// How often a control plane that serves no public certificate yet looks for one.
pub const WAITING_POLL: Duration = Duration::from_secs(2);

/// The public certificate as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    host: Hostname,
    chain_pem: String,
    /// The PEM key, sealed under the master key.
    key: String,
    issuer: String,
    not_after: Timestamp,
    renew_at: Timestamp,
}

/// A stored public certificate, its key opened.
pub(super) struct Public {
    chain_pem: String,
    key_pem: Zeroizing<String>,
    renew_at: Timestamp,
}

impl Public {
    /// The certificate and key, ready for handshakes.
    pub(super) fn certified(&self) -> Result<CertifiedKey, Error> {
        let chain = CertificateDer::pem_slice_iter(self.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("the stored public certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| tls_error(format!("the stored public certificate's key: {e}")))?;
        certified(chain, key)
    }
}

/// The stored public certificate for `host`, if there is one whose key opens. One for
/// another host (the public URL changed) does not count. An error only when the store
/// cannot be read: then nothing is known, and nothing should be ordered.
pub(super) async fn stored(
    store: &dyn Store,
    master: &MasterKey,
    host: &Hostname,
) -> Result<Option<Public>, kokoa_core::Error> {
    let Some(text) = store.kv_get(KV.0, KV.1, Timestamp::now()).await? else {
        return Ok(None);
    };
    let opened = serde_json::from_str::<Stored>(&text)
        .map_err(|e| e.to_string())
        .and_then(|stored| {
            let sealed = Sealed::parse(&stored.key).map_err(|e| e.to_string())?;
            let key_pem = master
                .open(&sealed, KEY_CONTEXT)
                .map_err(|e| e.to_string())?;
            Ok((stored, key_pem))
        });
    Ok(match opened {
        Ok((stored, key_pem)) if stored.host == *host => Some(Public {
            chain_pem: stored.chain_pem,
            key_pem: Zeroizing::new(key_pem.to_string()),
            renew_at: stored.renew_at,
        }),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "the stored public certificate cannot be used; ordering another");
            None
        }
    })
}

/// Serves the stored public certificate for `host` as it changes, and on the leader orders
/// it when there is none or it is due. Runs until aborted.
pub(super) async fn keep(
    state: AppState,
    current: Arc<Current>,
    host: Hostname,
    responder: SocketAddr,
) {
    let mut serving: Option<String> = None;
    let mut failures = 0;
    let mut next_attempt = Instant::now();
    loop {
        let public = match stored(state.store(), state.master_key(), &host).await {
            Ok(public) => public,
            Err(e) => {
                // The store does not answer: what serves keeps serving, nothing is ordered.
                tracing::warn!(error = %e, "cannot read the stored public certificate");
                tokio::time::sleep(WAITING_POLL).await;
                continue;
            }
        };
        let mut due = public
            .as_ref()
            .is_none_or(|p| Timestamp::now() >= p.renew_at);
        if let Some(public) = &public
            && serving.as_ref() != Some(&public.chain_pem)
        {
            match public.certified() {
                Ok(key) => {
                    current.set(key);
                    serving = Some(public.chain_pem.clone());
                    tracing::info!(%host, renew_at = %public.renew_at, "serving the public certificate");
                }
                Err(e) => {
                    tracing::error!(%host, error = %e, "the stored public certificate cannot be served; ordering another");
                    due = true;
                }
            }
        }
        if due && state.leader().is_leader() && Instant::now() >= next_attempt {
            let result = order(&state, &host, responder).await;
            state.duty_metrics().acme_order(result.is_ok());
            match result {
                Ok(()) => {
                    // Served from the store at once; never ordered again sooner than a
                    // failure would be, whatever goes wrong there.
                    failures = 0;
                    next_attempt = Instant::now() + policy(&state).retry_delay(1);
                    continue;
                }
                Err(message) => {
                    failures += 1;
                    let delay = policy(&state).retry_delay(failures);
                    next_attempt = Instant::now() + delay;
                    failed(&state, &host, &message, failures, delay, serving.is_some()).await;
                }
            }
        }
        tokio::time::sleep(if serving.is_some() {
            RELOAD_EVERY
        } else {
            WAITING_POLL
        })
        .await;
    }
}

fn policy(state: &AppState) -> RenewalPolicy {
    RenewalPolicy::renew_days_before(state.acme().map_or(30, |a| a.renew_days_before))
}

/// Orders the certificate for `host` and stores it.
async fn order(state: &AppState, host: &Hostname, responder: SocketAddr) -> Result<(), String> {
    let acme = state
        .acme()
        .ok_or("the [acme] section is missing from the configuration")?;
    let manager = certs::open_account(state, acme, Some(responder))
        .await
        .map_err(|e| e.to_string())?;
    state
        .leader()
        .intend(
            state,
            "acme.order",
            host.as_str(),
            json!({ "names": [host], "method": "http-01", "control_plane": true }),
        )
        .await?;
    tracing::info!(%host, "ordering the control plane's public certificate");
    let started = std::time::Instant::now();
    let issued = certs::obtain(
        &manager,
        std::slice::from_ref(host),
        ChallengeMethod::Http01,
    )
    .await
    .map_err(|e| e.to_string())?;
    let renew_at = policy(state).next_renewal(issued.not_before, issued.not_after);
    let stored = Stored {
        host: host.clone(),
        chain_pem: issued.chain_pem.clone(),
        key: state
            .master_key()
            .seal(issued.key_pem.expose_secret(), KEY_CONTEXT)
            .as_str()
            .to_owned(),
        issuer: issued.issuer.clone(),
        not_after: issued.not_after,
        renew_at,
    };
    let text = serde_json::to_string(&stored).map_err(|e| e.to_string())?;
    state
        .store()
        .kv_put(KV.0, KV.1, &text, None)
        .await
        .map_err(|e| format!("the certificate was issued but cannot be stored: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    state
        .events()
        .emit(
            kinds::CERTIFICATE_ISSUED,
            Severity::Info,
            Some(host.as_str()),
            format!(
                "the control plane's certificate for {host} issued by {}, valid until {} \
                 ({seconds:.1} s)",
                issued.issuer, issued.not_after
            ),
            json!({ "names": [host], "method": "http-01", "control_plane": true,
                    "issuer": issued.issuer, "not_after": issued.not_after,
                    "next_renewal": renew_at, "seconds": seconds }),
        )
        .await;
    Ok(())
}

async fn failed(
    state: &AppState,
    host: &Hostname,
    message: &str,
    failures: u32,
    retry_in: Duration,
    serving: bool,
) {
    tracing::warn!(%host, failures, retry_in_s = retry_in.as_secs(), public_certificate_serving = serving,
                   error = %message, "the control plane's certificate was not issued");
    let keeps = if serving {
        "the current one keeps serving"
    } else {
        "the control plane's own CA keeps serving"
    };
    state
        .events()
        .emit(
            kinds::CERTIFICATE_FAILED,
            Severity::Warning,
            Some(host.as_str()),
            format!(
                "the control plane's certificate for {host} not issued ({failures} failure(s) \
                 in a row; {keeps}; next attempt in {} s): {message}",
                retry_in.as_secs()
            ),
            json!({ "names": [host], "method": "http-01", "control_plane": true,
                    "failures": failures, "error": message,
                    "retry_in_seconds": retry_in.as_secs() }),
        )
        .await;
}

/// Binds `--acme-http-listen`. Returns the listener and the address its own responses are
/// checked at before the CA is told to look: loopback when it listens everywhere.
pub async fn bind(address: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Setting {
                setting: "acme_http_listen",
                message: format!(
                    "cannot listen on {address}: {source}; ports below 1024 need root or \
                     CAP_NET_BIND_SERVICE (under systemd: \
                     AmbientCapabilities=CAP_NET_BIND_SERVICE). The CA asks on port 80: \
                     listen elsewhere only if port 80 is forwarded there"
                ),
            },
            _ => Error::Listen { address, source },
        })?;
    let bound = listener.local_addr().map_err(Error::Serve)?;
    let check = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, bound.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, bound.port()).into(),
        _ => bound,
    };
    Ok((listener, check))
}

/// The plain HTTP server of `--acme-http-listen`: HTTP-01 responses from the shared
/// values, and a redirect to `public_url` for everything else.
pub fn responder(state: AppState) -> Router {
    Router::new()
        .route("/.well-known/acme-challenge/{token}", get(challenge))
        .fallback(redirect)
        .with_state(state)
}

async fn challenge(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let found = state
        .store()
        .kv_get(certs::HTTP01_NAMESPACE, &token, Timestamp::now())
        .await
        .map(|text| text.and_then(|t| serde_json::from_str::<certs::PendingChallenge>(&t).ok()));
    match found {
        Ok(Some(pending)) => (
            [(header::CONTENT_TYPE, "text/plain")],
            pending.key_authorization,
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the HTTP-01 responses");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

async fn redirect(State(state): State<AppState>, uri: Uri) -> Redirect {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    Redirect::permanent(&format!("{}{path}", state.public_url()))
}
