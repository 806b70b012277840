//! The SSL manager (SPEC §8.3): one certificate per routed host name whose route asks for
//! ACME, ordered when the route appears, renewed before expiry, handed to the edges that
//! serve the name.
//!
//! - Rows: [`sync_rows`] keeps one `Certificate` row (names = the host name) per ACME
//!   route and drops the rows no route needs; manual uploads are left alone. A route whose
//!   name lies in a zone of `[acme.origin_ca]` gets a row of source `cloudflare_origin_ca`
//!   instead: Cloudflare's Origin CA issues it on request (no challenge), and it is stored,
//!   renewed and handed to the edges like an ACME one.
//! - Orders run on the leader only, through one ACME account kept sealed in the store's
//!   shared values. HTTP-01 responses are put into the shared values too; every edge
//!   serving the name gets them with its configuration and writes them where nginx
//!   answers `/.well-known/acme-challenge/`, and the publisher returns only once each
//!   of those edges answers. DNS-01 goes through the DNS provider of the zone holding the
//!   name and waits until the zone's authoritative servers answer.
//! - Renewal: `renew_days_before` (the `[acme]` default, or the runtime setting of
//!   `PUT /api/v1/certificates/settings`), or the CA's renewal window (ARI) where offered.
//!   A failed order keeps the old chain serving, records the error and backs off.
//!
//! The schedule itself ([`due`], [`next_wake`], [`record_issued`], [`record_failed`],
//! [`replan`], [`status`]) is pure and takes the time as an argument.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use kokoa_acme::{
    AccountSecret, BoxError, CertificateManager, CertificateStatus, ChallengeMethod, Dns01Solver,
    Http01Publisher, IssuedCertificate, RenewalPolicy,
};
use kokoa_core::{
    Certificate, CertificateId, CertificateMode, CertificateSource, ContentHash, DnsName, DnsZone,
    EdgeStatus, Hostname, Name, RecordData, Route, Sealed, Severity, Timestamp,
};
use kokoa_dns::{Reconciler, RecordId, RecordSpec};
use kokoa_store::seal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::{AcmeSettings, Module, OriginCaSettings, Runtime, dns, events::kinds, wait_or_stop};

/// What the status says while no `[acme]` section is configured.
pub const NOT_CONFIGURED: &str = "ACME is not configured: add an [acme] section to the \
                                  control plane's configuration file and restart it";

/// How often the manager looks at every certificate when nothing wakes it sooner.
const PERIOD: Duration = Duration::from_secs(60);
/// The shared values holding pending HTTP-01 responses, by token.
pub const HTTP01_NAMESPACE: &str = "acme-http-01";
/// How long a published HTTP-01 response stays when its order never withdraws it.
const HTTP01_TTL_SECS: i64 = 15 * 60;
/// Where the ACME account's sealed credentials are kept.
const ACCOUNT: (&str, &str) = ("acme", "account");
/// Where the runtime renewal setting is kept.
const SETTINGS: (&str, &str) = ("settings", "certificates");
/// The ARI state of each certificate (when to ask the CA again), by certificate id.
const RENEWAL_NAMESPACE: &str = "acme-renewal";
/// How long each wait of an order may take (validation, then the certificate).
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);
/// How long HTTP-01 waits for every edge to serve a response, and DNS-01 for the
/// authoritative servers to answer a record.
const HTTP01_WAIT: Duration = Duration::from_secs(60);
const DNS01_WAIT: Duration = Duration::from_secs(120);
/// Polling period of those waits.
const POLL: Duration = Duration::from_millis(100);
/// TTL of DNS-01 TXT records.
const TXT_TTL: u32 = 60;
/// How long one request to the Origin CA API may take.
const ORIGIN_CA_TIMEOUT: Duration = Duration::from_secs(30);

tokio::task_local! {
    /// The host name of the order running in this task, for the HTTP-01 publisher (the
    /// library's publisher interface names only the token).
    static ORDER_HOSTNAME: Hostname;
}

// --- the pure schedule ---

/// A certificate's state, as `GET /api/v1/certificates` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertState {
    /// Issued and valid now; a failed renewal attempt does not change this while the old
    /// certificate is valid.
    Valid,
    /// Not issued yet, and no order failed so far.
    Pending,
    /// Not issued yet, and the last order failed.
    Failed,
    /// The chain on hand has expired.
    Expired,
}

/// The state of `cert` at `now`.
pub fn status(cert: &Certificate, now: Timestamp) -> CertState {
    match (&cert.chain_pem, cert.not_after) {
        (Some(_), Some(not_after)) if not_after < now => CertState::Expired,
        (Some(_), _) => CertState::Valid,
        (None, _) if cert.failures > 0 => CertState::Failed,
        (None, _) => CertState::Pending,
    }
}

/// Whole days until `cert` expires at `now` (negative once expired).
pub fn days_left(cert: &Certificate, now: Timestamp) -> Option<i64> {
    cert.not_after
        .map(|end| (end.as_unix() - now.as_unix()).div_euclid(86_400))
}

/// The name edges know a certificate by (its file name stem): the id with `-` for `_`.
pub fn ref_name(id: &CertificateId) -> Option<Name> {
    Name::parse(&id.as_str().replace('_', "-")).ok()
}

/// The certificate id behind a [`ref_name`].
pub fn id_of_ref(name: &str) -> Option<CertificateId> {
    let (prefix, rest) = name.split_once('-')?;
    CertificateId::parse(&format!("{prefix}_{rest}")).ok()
}

/// What [`sync_rows`] wants changed.
#[derive(Debug, Default, PartialEq)]
pub struct RowChanges {
    /// New rows, to be ordered at once.
    pub create: Vec<Certificate>,
    /// Rows whose method changed with their route's.
    pub update: Vec<Certificate>,
    /// ACME rows no route needs any more.
    pub delete: Vec<CertificateId>,
}

/// Whether the manager issues rows of `source` itself (rather than an administrator).
fn is_issued(source: CertificateSource) -> bool {
    matches!(
        source,
        CertificateSource::Acme | CertificateSource::CloudflareOriginCa
    )
}

/// One issued row per routed host name with an ACME mode; the method follows the route,
/// the source is the Origin CA for the names `origin_ca` covers and ACME otherwise. A row
/// whose source changes is issued again at once (its old chain serves meanwhile). Manual
/// and other rows are never touched, and a name that already has one gets no issued row.
pub fn sync_rows(
    routes: &[Route],
    certs: &[Certificate],
    origin_ca: Option<&OriginCaSettings>,
    now: Timestamp,
) -> RowChanges {
    let mut changes = RowChanges::default();
    let wanted: HashMap<BTreeSet<Hostname>, (CertificateSource, CertificateMode)> = routes
        .iter()
        .filter(|r| r.certificate.is_acme())
        .map(|r| {
            let source = if origin_ca.is_some_and(|o| o.covers(&r.hostname)) {
                CertificateSource::CloudflareOriginCa
            } else {
                CertificateSource::Acme
            };
            ([r.hostname.clone()].into(), (source, r.certificate))
        })
        .collect();
    let by_names: HashMap<&BTreeSet<Hostname>, &Certificate> =
        certs.iter().map(|c| (&c.names, c)).collect();
    for (names, &(source, method)) in &wanted {
        match by_names.get(names) {
            Some(cert) if is_issued(cert.source) && cert.source != source => {
                changes.update.push(Certificate {
                    source,
                    method,
                    next_renewal: None,
                    failures: 0,
                    last_error: None,
                    updated_at: now,
                    ..(*cert).clone()
                });
            }
            Some(cert) if is_issued(cert.source) && cert.method != method => {
                changes.update.push(Certificate {
                    method,
                    updated_at: now,
                    ..(*cert).clone()
                });
            }
            Some(_) => {}
            None => changes.create.push(Certificate {
                id: CertificateId::new(),
                names: names.clone(),
                source,
                method,
                issuer: None,
                not_before: None,
                not_after: None,
                sha256: None,
                chain_pem: None,
                next_renewal: None,
                failures: 0,
                last_error: None,
                created_at: now,
                updated_at: now,
            }),
        }
    }
    changes.delete = certs
        .iter()
        .filter(|c| is_issued(c.source) && !wanted.contains_key(&c.names))
        .map(|c| c.id.clone())
        .collect();
    // Stable order, so that logs and tests read the same every time.
    changes.create.sort_by(|a, b| a.names.cmp(&b.names));
    changes.update.sort_by(|a, b| a.names.cmp(&b.names));
    changes.delete.sort();
    changes
}

/// The ACME and Origin CA certificates to order at `now`: never ordered (no
/// `next_renewal`), or whose planned renewal or retry has come.
pub fn due(certs: &[Certificate], now: Timestamp) -> Vec<&Certificate> {
    certs
        .iter()
        .filter(|c| is_issued(c.source) && c.method.is_acme())
        .filter(|c| c.next_renewal.is_none_or(|at| at <= now))
        .collect()
}

/// How long to sleep after a step at `now`: until the earliest planned renewal, at least
/// a second and at most a minute.
pub fn next_wake(certs: &[Certificate], now: Timestamp) -> Duration {
    let soonest = certs
        .iter()
        .filter(|c| is_issued(c.source) && c.method.is_acme())
        .filter_map(|c| c.next_renewal)
        .map(|at| at.as_unix() - now.as_unix())
        .min();
    let secs = soonest.map_or(PERIOD.as_secs(), |s| {
        s.clamp(1, PERIOD.as_secs() as i64) as u64
    });
    Duration::from_secs(secs)
}

/// Records a new chain in `cert` at `now`, with its renewal planned for `next_renewal`.
pub fn record_issued(
    cert: &mut Certificate,
    issued: &IssuedCertificate,
    next_renewal: Timestamp,
    now: Timestamp,
) {
    cert.issuer = Some(issued.issuer.clone());
    cert.not_before = Some(issued.not_before);
    cert.not_after = Some(issued.not_after);
    cert.sha256 = Some(ContentHash::of(issued.chain_pem.as_bytes()));
    cert.chain_pem = Some(issued.chain_pem.clone());
    cert.next_renewal = Some(next_renewal);
    cert.failures = 0;
    cert.last_error = None;
    cert.updated_at = now;
}

/// Records a failed order at `now`: the chain on hand (if any) stays, the next attempt
/// backs off (1 min, doubling, at most 6 h) and never comes before an already planned
/// renewal.
pub fn record_failed(cert: &mut Certificate, error: &str, policy: &RenewalPolicy, now: Timestamp) {
    cert.failures = cert.failures.saturating_add(1);
    cert.last_error = Some(error.to_owned());
    let delay = policy.retry_delay(cert.failures).as_secs() as i64;
    let retry = now.plus_secs(delay);
    cert.next_renewal = Some(
        cert.next_renewal
            .map_or(retry, |planned| planned.max(retry)),
    );
    cert.updated_at = now;
}

/// Plans an issued certificate's renewal `days` before its expiry, as asked by an
/// operator changing `renew_days_before` at run time: taken literally, so a number larger
/// than the remaining lifetime renews at once. (A certificate issued afterwards is planned
/// by [`RenewalPolicy`], which never renews before two thirds of the lifetime, so this
/// cannot turn into a loop.) `false` when the certificate has no chain.
pub fn replan(cert: &mut Certificate, days: u32) -> bool {
    let Some(not_after) = cert.not_after.filter(|_| cert.chain_pem.is_some()) else {
        return false;
    };
    cert.next_renewal = Some(not_after.plus_secs(-(i64::from(days) * 86_400)));
    true
}

// --- settings ---

/// The renewal setting changed at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewalSetting {
    /// Renew this many days before expiry.
    pub renew_days_before: u32,
}

/// The effective `renew_days_before`: the runtime setting, else the configuration's.
pub async fn renew_days_before(state: &Runtime) -> u32 {
    let configured = state.acme().map_or(30, |a| a.renew_days_before);
    match state
        .store()
        .kv_get(SETTINGS.0, SETTINGS.1, Timestamp::now())
        .await
    {
        Ok(Some(text)) => serde_json::from_str::<RenewalSetting>(&text)
            .map_or(configured, |s| s.renew_days_before),
        _ => configured,
    }
}

/// Stores the runtime setting and replans every issued ACME and Origin CA certificate by
/// it.
pub async fn set_renew_days_before(state: &Runtime, days: u32) -> Result<(), kokoa_core::Error> {
    let store = state.store();
    let text = json!({ "renew_days_before": days }).to_string();
    store.kv_put(SETTINGS.0, SETTINGS.1, &text, None).await?;
    for mut cert in store.list_certificates().await? {
        if is_issued(cert.source) && replan(&mut cert, days) {
            cert.updated_at = Timestamp::now();
            store.put_certificate(&cert, None).await?;
        }
    }
    // The leader orders: through the store when that is another control plane.
    state.wakers().everywhere(state);
    Ok(())
}

// --- the loop ---

/// Orders and renews certificates when woken and at least every minute, on the leader
/// while the SSL manager is on.
pub async fn run(state: Runtime, mut stop: watch::Receiver<bool>) {
    let mut manager: Option<CertificateManager> = None;
    loop {
        let wait = if state.leader().is_leader()
            && state.modules().enabled(&state, Module::SslManager).await
        {
            step(&state, &mut manager).await
        } else {
            PERIOD
        };
        if wait_or_stop(wait, &state.wakers().certificates, &mut stop).await {
            return;
        }
    }
}

/// One pass: rows in step with the routes, due orders placed (concurrently, each name set
/// once), renewal windows refreshed. Returns how long to sleep.
async fn step(state: &Runtime, manager: &mut Option<CertificateManager>) -> Duration {
    let store = state.store();
    let certs = match sync(state).await {
        Ok(certs) => certs,
        Err(e) => {
            tracing::warn!(error = %e, "the SSL manager cannot read the store");
            return PERIOD;
        }
    };
    let Some(acme) = state.acme() else {
        for mut cert in certs.into_iter().filter(|c| c.chain_pem.is_none()) {
            if is_issued(cert.source) && cert.last_error.as_deref() != Some(NOT_CONFIGURED) {
                cert.last_error = Some(NOT_CONFIGURED.to_owned());
                let _ = store.put_certificate(&cert, None).await;
            }
        }
        state.modules().report(Module::SslManager, |s| {
            s.provider = None;
            s.connected = None;
            s.detail = Some(NOT_CONFIGURED.to_owned());
        });
        return PERIOD;
    };
    let policy = RenewalPolicy::renew_days_before(renew_days_before(state).await);
    // The Origin CA needs no account: its orders go first, whatever becomes of ACME's.
    let now = Timestamp::now();
    let (origin_due, acme_due): (Vec<&Certificate>, Vec<&Certificate>) = due(&certs, now)
        .into_iter()
        .partition(|c| c.source == CertificateSource::CloudflareOriginCa);
    let mut results = match (&acme.origin_ca, origin_due.is_empty()) {
        (Some(settings), false) => {
            let client = origin_ca_client(settings);
            let orders = origin_due
                .into_iter()
                .map(|cert| origin_ca_order(state, &client, settings, cert.clone(), policy));
            futures_util::future::join_all(orders).await
        }
        _ => Vec::new(),
    };
    if manager.is_none() {
        match open_account(state, acme, None).await {
            Ok(m) => *manager = Some(m),
            Err(e) => {
                let detail = format!("cannot use the ACME account at {}: {e}", acme.provider());
                tracing::warn!("{detail}");
                state.modules().report(Module::SslManager, |s| {
                    s.provider = Some(acme.provider());
                    s.connected = Some(false);
                    s.detail = Some(detail);
                });
                return Duration::from_secs(30);
            }
        }
    }
    let Some(manager) = manager.as_ref() else {
        return PERIOD;
    };
    let orders = acme_due
        .into_iter()
        .map(|cert| order(state, manager, cert.clone(), policy));
    results.extend(futures_util::future::join_all(orders).await);
    refresh_renewal_windows(state, manager, &certs, &policy).await;

    let certs = store.list_certificates().await.unwrap_or(certs);
    let now = Timestamp::now();
    let count = |want: CertState| certs.iter().filter(|c| status(c, now) == want).count() as u64;
    let last_failure = results.iter().flatten().next_back().cloned();
    state.modules().report(Module::SslManager, |s| {
        s.provider = Some(acme.provider());
        if !results.is_empty() {
            s.connected = Some(last_failure.is_none());
            s.detail = last_failure.clone();
        } else if s.connected.is_none() {
            s.connected = Some(true);
        }
        s.counts.insert("certificates".into(), certs.len() as u64);
        s.counts.insert("valid".into(), count(CertState::Valid));
        s.counts.insert("pending".into(), count(CertState::Pending));
        s.counts.insert("failed".into(), count(CertState::Failed));
        s.counts.insert("expired".into(), count(CertState::Expired));
    });
    next_wake(&certs, now)
}

/// Applies [`sync_rows`] and returns the certificates afterwards.
async fn sync(state: &Runtime) -> Result<Vec<Certificate>, kokoa_core::Error> {
    let store = state.store();
    let routes = store.list_routes().await?;
    let certs = store.list_certificates().await?;
    let origin_ca = state.acme().and_then(|a| a.origin_ca.as_ref());
    let changes = sync_rows(&routes, &certs, origin_ca, Timestamp::now());
    if changes == RowChanges::default() {
        return Ok(certs);
    }
    for cert in changes.create.iter().chain(&changes.update) {
        if let Err(e) = store.put_certificate(cert, None).await {
            tracing::warn!(names = ?cert.names, error = %e, "cannot record the certificate");
        }
    }
    for id in &changes.delete {
        match store.delete_certificate(id).await {
            Ok(()) => {
                let _ = store.kv_delete(RENEWAL_NAMESPACE, id.as_str()).await;
                tracing::info!(certificate = %id, "certificate no route needs deleted");
            }
            Err(e) => {
                tracing::warn!(certificate = %id, error = %e, "cannot delete the certificate")
            }
        }
    }
    if !changes.delete.is_empty() {
        state.notify_changed();
    }
    store.list_certificates().await
}

/// Restores the stored ACME account, or creates one (and stores it) the first time or
/// when the configured certificate authority changed. HTTP-01 responses are checked on
/// the edges serving the name, or at `responder` when given (the control plane's own).
pub async fn open_account(
    state: &Runtime,
    acme: &AcmeSettings,
    responder: Option<SocketAddr>,
) -> Result<CertificateManager, kokoa_acme::Error> {
    let builder = || {
        let mut builder = CertificateManager::builder(acme.issuer.clone())
            .http01(Arc::new(EdgePublisher::new(
                state.clone(),
                acme.http01_port,
                responder,
            )))
            .dns01(Arc::new(ZoneSolver::new(state.clone())))
            .leadership(state.leader().clone())
            .order_timeout(ORDER_TIMEOUT);
        if let Some(contact) = &acme.contact {
            builder = builder.contact(contact.clone());
        }
        builder
    };
    let store = state.store();
    let context = seal::value_context(ACCOUNT.0, ACCOUNT.1);
    // A store that does not answer is not an account that does not exist: no new account
    // at the CA for it.
    let stored = store
        .kv_get(ACCOUNT.0, ACCOUNT.1, Timestamp::now())
        .await
        .map_err(|e| kokoa_acme::Error::Other(e.into()))?
        .and_then(|text| Sealed::parse(&text).ok())
        .and_then(|sealed| state.master_key().open(&sealed, &context).ok());
    if let Some(text) = stored {
        match builder()
            .restore(&AccountSecret::new(text.to_string()))
            .await
        {
            Ok(manager) => return Ok(manager),
            Err(e @ kokoa_acme::Error::AccountIssuerMismatch { .. }) => {
                tracing::info!(error = %e, "creating a new ACME account");
            }
            Err(e) => return Err(e),
        }
    }
    let (manager, secret) = builder().create_account().await?;
    let sealed = state.master_key().seal(secret.expose_secret(), &context);
    if let Err(e) = store
        .kv_put(ACCOUNT.0, ACCOUNT.1, sealed.as_str(), None)
        .await
    {
        tracing::warn!(error = %e, "the new ACME account could not be stored; it is used until restart");
    }
    tracing::info!(account = %manager.account_id(), "ACME account created");
    Ok(manager)
}

/// Orders a certificate for `names` (the first one is what HTTP-01 responses are
/// published for).
pub async fn obtain(
    manager: &CertificateManager,
    names: &[Hostname],
    method: ChallengeMethod,
) -> Result<IssuedCertificate, kokoa_acme::Error> {
    let Some(first) = names.first() else {
        return Err(kokoa_acme::Error::NoDomains);
    };
    ORDER_HOSTNAME
        .scope(first.clone(), manager.obtain(names, method))
        .await
}

/// Orders `cert`, stores the outcome and announces it. Returns the error on failure.
async fn order(
    state: &Runtime,
    manager: &CertificateManager,
    cert: Certificate,
    policy: RenewalPolicy,
) -> Option<String> {
    let method = match cert.method {
        CertificateMode::Http01 => ChallengeMethod::Http01,
        CertificateMode::Dns01 => ChallengeMethod::Dns01,
        _ => return None,
    };
    let names: Vec<Hostname> = cert.names.iter().cloned().collect();
    let hostname = names.first()?.clone();
    let started = Instant::now();
    if let Err(e) = state
        .leader()
        .intend(
            state,
            "acme.order",
            hostname.as_str(),
            serde_json::json!({ "names": names, "method": method.to_string() }),
        )
        .await
    {
        // Not this control plane's to order any more; the new leader does.
        tracing::warn!(%hostname, error = %e, "certificate order not started");
        return None;
    }
    tracing::info!(names = ?names, %method, "ordering a certificate");
    let result = obtain(manager, &names, method).await;
    if !matches!(
        result,
        Err(kokoa_acme::Error::AlreadyInProgress { .. } | kokoa_acme::Error::NotLeader { .. })
    ) {
        state.duty_metrics().acme_order(result.is_ok());
    }
    let mut current = reread(state, &cert.id).await?;
    let now = Timestamp::now();
    let subject = hostname.as_str();
    match result {
        Ok(issued) => {
            let mut plan = CertificateStatus::of(&issued, &policy);
            if let Err(e) = manager
                .refresh_renewal(&issued, &mut plan, &policy, now)
                .await
            {
                tracing::warn!(%hostname, error = %e, "the CA's renewal window is unknown for now");
            }
            if let Err(message) =
                store_issued(state, &mut current, &issued, plan.next_renewal, now).await
            {
                return Some(message);
            }
            save_plan(state, &cert.id, &plan).await;
            state.notify_changed();
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(%hostname, not_after = %issued.not_after, seconds, "certificate issued");
            state
                .events()
                .emit(
                    kinds::CERTIFICATE_ISSUED,
                    Severity::Info,
                    Some(subject),
                    format!(
                        "certificate for {} issued by {}, valid until {} ({seconds:.1} s)",
                        join(&names),
                        issued.issuer,
                        issued.not_after
                    ),
                    json!({
                        "certificate_id": cert.id, "names": names, "method": cert.method,
                        "issuer": issued.issuer, "not_after": issued.not_after,
                        "next_renewal": plan.next_renewal, "seconds": seconds,
                    }),
                )
                .await;
            None
        }
        Err(kokoa_acme::Error::AlreadyInProgress { .. } | kokoa_acme::Error::NotLeader { .. }) => {
            None
        }
        Err(e) => {
            let failure = Failure {
                by: Issuing::Acme,
                method: cert.method.to_string(),
                message: e.to_string(),
            };
            Some(
                failure
                    .record(state, &cert, &mut current, &policy, now)
                    .await,
            )
        }
    }
}

/// A client of the Origin CA API of `settings`, each request bounded in time.
fn origin_ca_client(settings: &OriginCaSettings) -> kokoa_acme::cloudflare::OriginCaClient {
    let http = reqwest::Client::builder()
        .timeout(ORIGIN_CA_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    kokoa_acme::cloudflare::OriginCaClient::with_http(
        http,
        settings.base_url.clone(),
        settings.auth.clone(),
    )
}

/// Asks the Origin CA for `cert` (one request), stores the outcome and announces it like
/// an ACME order. Returns the error on failure.
async fn origin_ca_order(
    state: &Runtime,
    client: &kokoa_acme::cloudflare::OriginCaClient,
    settings: &OriginCaSettings,
    cert: Certificate,
    policy: RenewalPolicy,
) -> Option<String> {
    let names: Vec<Hostname> = cert.names.iter().cloned().collect();
    let hostname = names.first()?.clone();
    let started = Instant::now();
    if let Err(e) = state
        .leader()
        .intend(
            state,
            "origin_ca.order",
            hostname.as_str(),
            json!({
                "names": names, "key_type": format!("{:?}", settings.key_type),
                "validity_days": settings.validity_days,
            }),
        )
        .await
    {
        tracing::warn!(%hostname, error = %e, "Origin CA certificate not requested");
        return None;
    }
    tracing::info!(names = ?names, "asking Cloudflare's Origin CA for a certificate");
    let result = client
        .create_certificate(&names, settings.key_type, settings.validity_days)
        .await;
    let mut current = reread(state, &cert.id).await?;
    let now = Timestamp::now();
    let subject = hostname.as_str();
    let method = "cloudflare-origin-ca";
    match result {
        Ok(created) => {
            let issued = &created.certificate;
            let next_renewal = policy.next_renewal(issued.not_before, issued.not_after);
            if let Err(message) = store_issued(state, &mut current, issued, next_renewal, now).await
            {
                return Some(message);
            }
            state.notify_changed();
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(
                %hostname, cloudflare_id = %created.id, not_after = %issued.not_after, seconds,
                "Origin CA certificate issued"
            );
            state
                .events()
                .emit(
                    kinds::CERTIFICATE_ISSUED,
                    Severity::Info,
                    Some(subject),
                    format!(
                        "certificate for {} issued by Cloudflare's Origin CA ({}), valid until \
                         {} ({seconds:.1} s)",
                        join(&names),
                        issued.issuer,
                        issued.not_after
                    ),
                    json!({
                        "certificate_id": cert.id, "names": names, "method": method,
                        "issuer": issued.issuer, "not_after": issued.not_after,
                        "next_renewal": next_renewal, "seconds": seconds,
                        "cloudflare_id": created.id,
                    }),
                )
                .await;
            None
        }
        Err(e) => {
            let failure = Failure {
                by: Issuing::OriginCa,
                method: method.to_owned(),
                message: e.to_string(),
            };
            Some(
                failure
                    .record(state, &cert, &mut current, &policy, now)
                    .await,
            )
        }
    }
}

/// Who refused a certificate.
#[derive(Debug, Clone, Copy)]
enum Issuing {
    /// The ACME CA (an order).
    Acme,
    /// Cloudflare's Origin CA (a request).
    OriginCa,
}

/// A certificate that was not issued, and why.
struct Failure {
    by: Issuing,
    /// The certificate's method as events name it.
    method: String,
    message: String,
}

impl Failure {
    /// Records the failure on `current` (the row of `cert` as stored now) for the next
    /// attempt, logs it and emits `certificate.failed`; returns the message.
    async fn record(
        self,
        state: &Runtime,
        cert: &Certificate,
        current: &mut Certificate,
        policy: &RenewalPolicy,
        now: Timestamp,
    ) -> String {
        let Self {
            by,
            method,
            message,
        } = self;
        let names: Vec<Hostname> = cert.names.iter().cloned().collect();
        let Some(hostname) = names.first() else {
            return message;
        };
        let (what, log, issuer) = match by {
            Issuing::Acme => ("order", "certificate order failed", ""),
            Issuing::OriginCa => (
                "request",
                "Origin CA certificate request failed",
                " by Cloudflare's Origin CA",
            ),
        };
        record_failed(current, &message, policy, now);
        if let Err(e) = state.store().put_certificate(current, None).await {
            tracing::warn!(%hostname, error = %e, "cannot record the failed {what}");
        }
        let serving = current.chain_pem.is_some();
        tracing::warn!(
            %hostname, failures = current.failures, retry_at = ?current.next_renewal,
            old_certificate_serving = serving, error = %message, "{log}"
        );
        state
            .events()
            .emit(
                kinds::CERTIFICATE_FAILED,
                Severity::Warning,
                Some(hostname.as_str()),
                format!(
                    "certificate for {} not issued{issuer} ({} failure(s) in a row{}): {message}",
                    join(&names),
                    current.failures,
                    if serving {
                        "; the old one keeps serving"
                    } else {
                        ""
                    }
                ),
                json!({
                    "certificate_id": cert.id, "names": names, "method": method,
                    "failures": current.failures, "error": message,
                    "next_attempt": current.next_renewal, "old_certificate_serving": serving,
                }),
            )
            .await;
        message
    }
}

/// The row `id` as stored now: an order or request may run for a while, during which it
/// can be deleted (none then) or changed.
async fn reread(state: &Runtime, id: &CertificateId) -> Option<Certificate> {
    match state.store().get_certificate(id).await {
        Ok(current) => Some(current),
        Err(e) => {
            if !e.is_not_found() {
                tracing::warn!(certificate = %id, error = %e, "cannot re-read the certificate");
            }
            None
        }
    }
}

/// Records `issued` on `current` and stores it with its key sealed; the error says why it
/// could not be stored.
async fn store_issued(
    state: &Runtime,
    current: &mut Certificate,
    issued: &IssuedCertificate,
    next_renewal: Timestamp,
    now: Timestamp,
) -> Result<(), String> {
    let sealed = state.master_key().seal(
        issued.key_pem.expose_secret(),
        &seal::certificate_key_context(&current.id),
    );
    record_issued(current, issued, next_renewal, now);
    state
        .store()
        .put_certificate(current, Some(&sealed))
        .await
        .map_err(|e| {
            let message = format!("the certificate was issued but cannot be stored: {e}");
            tracing::error!(certificate = %current.id, "{message}");
            message
        })
}

fn join(names: &[Hostname]) -> String {
    names
        .iter()
        .map(Hostname::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

async fn save_plan(state: &Runtime, id: &CertificateId, plan: &CertificateStatus) {
    if let Ok(text) = serde_json::to_string(plan) {
        let _ = state
            .store()
            .kv_put(RENEWAL_NAMESPACE, id.as_str(), &text, None)
            .await;
    }
}

/// Asks the CA for the renewal window of the issued certificates whose check is due
/// (RFC 9773); a new window moves the planned renewal.
async fn refresh_renewal_windows(
    state: &Runtime,
    manager: &CertificateManager,
    certs: &[Certificate],
    policy: &RenewalPolicy,
) {
    let store = state.store();
    let now = Timestamp::now();
    for cert in certs.iter().filter(|c| c.source == CertificateSource::Acme) {
        let (Some(chain), Ok(Some(text))) = (
            &cert.chain_pem,
            store.kv_get(RENEWAL_NAMESPACE, cert.id.as_str(), now).await,
        ) else {
            continue;
        };
        let Ok(mut plan) = serde_json::from_str::<CertificateStatus>(&text) else {
            continue;
        };
        if !plan.is_renewal_info_due(now) {
            continue;
        }
        let Some(key) = certificate_key(state, &cert.id).await else {
            continue;
        };
        let Ok(issued) = IssuedCertificate::from_pem(chain, &key) else {
            continue;
        };
        let before = plan.next_renewal;
        if let Err(e) = manager
            .refresh_renewal(&issued, &mut plan, policy, now)
            .await
        {
            tracing::warn!(certificate = %cert.id, error = %e, "asking the CA for the renewal window failed");
        }
        // Written over the row as it is now, and only if nothing replanned it since it
        // was read (an operator's renewal setting wins over the CA's window).
        if plan.next_renewal != before
            && let Ok(mut updated) = store.get_certificate(&cert.id).await
            && updated.next_renewal == cert.next_renewal
        {
            updated.next_renewal = Some(plan.next_renewal);
            updated.updated_at = now;
            let _ = store.put_certificate(&updated, None).await;
        }
        save_plan(state, &cert.id, &plan).await;
    }
}

/// The opened private key of certificate `id`, if it has one.
pub async fn certificate_key(
    state: &Runtime,
    id: &CertificateId,
) -> Option<zeroize::Zeroizing<String>> {
    let sealed = state.store().certificate_key(id).await.ok()??;
    state
        .master_key()
        .open(&sealed, &seal::certificate_key_context(id))
        .map_err(
            |e| tracing::error!(certificate = %id, error = %e, "cannot open a certificate key"),
        )
        .ok()
}

// --- HTTP-01 on every edge ---

/// A pending HTTP-01 response as kept in the shared values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingChallenge {
    /// The host name being validated; edges serving it get the response.
    pub hostname: Option<Hostname>,
    /// `<token>.<thumbprint>`.
    pub key_authorization: String,
}

/// Every pending HTTP-01 response: token, host name, key authorization.
pub async fn pending_challenges(
    state: &Runtime,
) -> Result<Vec<(String, PendingChallenge)>, kokoa_core::Error> {
    Ok(state
        .store()
        .kv_list(HTTP01_NAMESPACE, Timestamp::now())
        .await?
        .into_iter()
        .filter_map(|(token, text)| Some((token, serde_json::from_str(&text).ok()?)))
        .collect())
}

/// Puts HTTP-01 responses into the configuration of the edges serving the name, and
/// returns once every one of them answers the response on port 80. For the control
/// plane's own certificate, its responder answers them (from the same shared values) and
/// is the one checked.
struct EdgePublisher {
    state: Runtime,
    port: u16,
    responder: Option<SocketAddr>,
    client: reqwest::Client,
}

impl EdgePublisher {
    fn new(state: Runtime, port: u16, responder: Option<SocketAddr>) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            state,
            port,
            responder,
            client,
        }
    }

    /// Where the CA may ask: the control plane's responder, or the edges for the name.
    async fn targets(
        &self,
        hostname: Option<&Hostname>,
    ) -> Result<Vec<(String, SocketAddr)>, kokoa_core::Error> {
        if let Some(responder) = self.responder {
            return Ok(vec![("this control plane".into(), responder)]);
        }
        Ok(self
            .edges_for(hostname)
            .await?
            .into_iter()
            .map(|(name, ip)| (name, SocketAddr::new(ip, self.port)))
            .collect())
    }

    /// The edges the CA may ask: those in DNS for the name (active, with a public
    /// address) among the edges that serve it; with none active, every edge serving it.
    async fn edges_for(
        &self,
        hostname: Option<&Hostname>,
    ) -> Result<Vec<(String, IpAddr)>, kokoa_core::Error> {
        let store = self.state.store();
        let origins: HashSet<_> = store
            .list_routes()
            .await?
            .into_iter()
            .filter(|r| hostname.is_none_or(|h| r.hostname.covers(h)))
            .map(|r| r.origin_id)
            .collect();
        let serving: HashSet<_> = store
            .list_tunnels(None, None)
            .await?
            .into_iter()
            .filter(|t| origins.contains(&t.origin_id))
            .map(|t| t.edge_node_id)
            .collect();
        let edges: Vec<_> = store
            .list_edges()
            .await?
            .into_iter()
            .filter(|e| serving.contains(&e.id) && e.status != EdgeStatus::Deleted)
            .filter_map(|e| Some((e.status, format!("{} ({})", e.name, e.id), e.public_ip?)))
            .collect();
        let active: Vec<_> = edges
            .iter()
            .filter(|(status, ..)| *status == EdgeStatus::Active)
            .map(|(_, name, ip)| (name.clone(), *ip))
            .collect();
        Ok(if active.is_empty() {
            edges.into_iter().map(|(_, name, ip)| (name, ip)).collect()
        } else {
            active
        })
    }

    /// Whether the server at `address` answers `token` with `key_authorization` for
    /// `hostname`.
    async fn answers(
        &self,
        address: SocketAddr,
        hostname: Option<&Hostname>,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), String> {
        let url = format!("http://{address}/.well-known/acme-challenge/{token}");
        let mut request = self.client.get(&url);
        if let Some(h) = hostname {
            request = request.header(reqwest::header::HOST, h.as_str());
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => match r.text().await {
                Ok(body) if body.trim() == key_authorization => Ok(()),
                Ok(_) => Err(format!("{url} answers another response")),
                Err(e) => Err(format!("{url}: {e}")),
            },
            Ok(r) => Err(format!("{url} answers {}", r.status())),
            Err(e) => Err(format!("{url}: {}", with_causes(&e))),
        }
    }
}

/// An error with its causes, since reqwest's own message hides why a connection failed.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl Http01Publisher for EdgePublisher {
    async fn publish(&self, token: &str, key_authorization: &str) -> Result<(), BoxError> {
        let hostname = ORDER_HOSTNAME.try_with(Clone::clone).ok();
        let pending = PendingChallenge {
            hostname: hostname.clone(),
            key_authorization: key_authorization.to_owned(),
        };
        let expires = Timestamp::now().plus_secs(HTTP01_TTL_SECS);
        self.state
            .store()
            .kv_put(
                HTTP01_NAMESPACE,
                token,
                &serde_json::to_string(&pending)?,
                Some(expires),
            )
            .await?;
        self.state.notify_changed();
        let started = Instant::now();
        let host = hostname.as_ref();
        loop {
            let edges = self.targets(host).await?;
            if edges.is_empty() {
                tracing::warn!(
                    ?hostname,
                    "no edge serves the name; the CA will find no HTTP-01 response"
                );
                return Ok(());
            }
            let checks = edges.iter().map(|(name, address)| async move {
                self.answers(*address, host, token, key_authorization)
                    .await
                    .map_err(|e| format!("{name}: {e}"))
            });
            let missing: Vec<String> = futures_util::future::join_all(checks)
                .await
                .into_iter()
                .filter_map(Result::err)
                .collect();
            if missing.is_empty() {
                tracing::debug!(
                    ?hostname,
                    edges = edges.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "HTTP-01 response served by every edge"
                );
                return Ok(());
            }
            if started.elapsed() >= HTTP01_WAIT {
                return Err(format!(
                    "after {} s the HTTP-01 response is still not served by {}",
                    HTTP01_WAIT.as_secs(),
                    missing.join("; ")
                )
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn withdraw(&self, token: &str) -> Result<(), BoxError> {
        self.state
            .store()
            .kv_delete(HTTP01_NAMESPACE, token)
            .await?;
        self.state.notify_changed();
        Ok(())
    }
}

// --- DNS-01 through the zone's provider ---

/// Sets DNS-01 TXT records through the DNS provider of the longest managed zone holding
/// the name, and waits until the zone's authoritative servers answer them.
struct ZoneSolver {
    state: Runtime,
    /// The records this solver made: (name, value) → zone and record id.
    made: Mutex<HashMap<(DnsName, String), (DnsZone, RecordId)>>,
}

impl ZoneSolver {
    fn new(state: Runtime) -> Self {
        Self {
            state,
            made: Mutex::default(),
        }
    }

    /// The managed zone holding `name` and the driver of its records.
    async fn zone_of(&self, name: &DnsName) -> Result<(DnsZone, Reconciler), BoxError> {
        let zones = self.state.store().list_dns_zones().await?;
        let zone = zones
            .into_iter()
            .filter(|z| name.is_within(&z.name))
            .max_by_key(|z| z.name.as_str().len());
        let needs = || {
            format!(
                "DNS-01 for {name} needs a managed DNS zone holding it: add its zone with \
                 POST /api/v1/dns/zones and a provider other than manual"
            )
        };
        let Some(zone) = zone else {
            return Err(needs().into());
        };
        match dns::reconciler_of(&self.state, &zone).await? {
            Some(records) => Ok((zone, records)),
            None => Err(format!("{} (zone {} is manual)", needs(), zone.name).into()),
        }
    }
}

#[async_trait]
impl Dns01Solver for ZoneSolver {
    async fn set_txt(&self, name: &str, value: &str) -> Result<(), BoxError> {
        let name = DnsName::parse(name)?;
        let (zone, records) = self.zone_of(&name).await?;
        let spec = RecordSpec {
            name: name.clone(),
            data: RecordData::Txt(kokoa_core::TxtText::new(value)?),
            ttl: TXT_TTL,
        };
        let id = records.create_record(&spec).await?;
        self.made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((name.clone(), value.to_owned()), (zone.clone(), id));
        tracing::info!(record = %spec, zone = %zone.name, "DNS-01 record set");
        let servers = authoritative_servers(&zone).await?;
        wait_for_txt(&servers, &name, value, DNS01_WAIT).await?;
        Ok(())
    }

    async fn remove_txt(&self, name: &str, value: &str) -> Result<(), BoxError> {
        let name = DnsName::parse(name)?;
        let made = self
            .made
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(name.clone(), value.to_owned()));
        let Some((zone, id)) = made else {
            return Ok(());
        };
        let Some(records) = dns::reconciler_of(&self.state, &zone).await? else {
            return Ok(());
        };
        records.delete_record(&id).await?;
        tracing::info!(%name, zone = %zone.name, "DNS-01 record removed");
        Ok(())
    }
}

/// The servers to ask for a zone's records: its `"nameservers"` setting (`"ip"` or
/// `"ip:port"`), else the addresses of its NS records as the system's resolver finds them.
async fn authoritative_servers(zone: &DnsZone) -> Result<Vec<SocketAddr>, BoxError> {
    if let Some(list) = zone.settings.get("nameservers").and_then(|v| v.as_array()) {
        return list
            .iter()
            .map(|v| {
                let text = v.as_str().unwrap_or_default();
                text.parse::<SocketAddr>()
                    .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| {
                        format!(
                            "zone {}: nameserver {v} is not an address like \"192.0.2.53\" or \
                             \"192.0.2.53:5300\"",
                            zone.name
                        )
                        .into()
                    })
            })
            .collect();
    }
    let resolvers = system_resolvers();
    let Some(resolver) = resolvers.first() else {
        return Err(format!(
            "zone {}: no nameserver in /etc/resolv.conf to look up its NS records; set the \
             zone's \"nameservers\" setting",
            zone.name
        )
        .into());
    };
    let targets = wire::query(*resolver, &DnsName::from(&zone.name), wire::TYPE_NS, true)
        .await
        .map_err(|e| format!("looking up the NS records of {}: {e}", zone.name))?;
    let mut servers = Vec::new();
    for target in targets {
        if let Ok(found) = tokio::net::lookup_host((target.as_str(), 53)).await {
            servers.extend(found);
        }
    }
    if servers.is_empty() {
        return Err(format!(
            "zone {}: its NS records lead to no address; set the zone's \"nameservers\" setting",
            zone.name
        )
        .into());
    }
    Ok(servers)
}

fn system_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Polls every server until each answers `value` at `name`, for at most `limit`.
async fn wait_for_txt(
    servers: &[SocketAddr],
    name: &DnsName,
    value: &str,
    limit: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    let mut waiting: Vec<SocketAddr> = servers.to_vec();
    let mut last = HashMap::new();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for server in waiting {
            match wire::query(server, name, wire::TYPE_TXT, false).await {
                Ok(values) if values.iter().any(|v| v == value) => {}
                Ok(values) => {
                    last.insert(server, format!("answers {values:?}"));
                    still.push(server);
                }
                Err(e) => {
                    last.insert(server, e);
                    still.push(server);
                }
            }
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if started.elapsed() >= limit {
            let detail: Vec<String> = waiting
                .iter()
                .map(|s| format!("{s} {}", last.get(s).map_or("", String::as_str)))
                .collect();
            return Err(format!(
                "the TXT record {name} was not answered by every authoritative server after \
                 {} s: {}",
                limit.as_secs(),
                detail.join("; ")
            ));
        }
        tokio::time::sleep(POLL * 2).await;
    }
    Ok(())
}

/// A single-question DNS query over UDP, enough to see what an authoritative server
/// answers.
mod wire {
    use std::{net::SocketAddr, time::Duration};

    use kokoa_core::DnsName;
    use kokoa_dns::rfc2136::wire::{
        CLASS_IN, Message, Name, OPCODE_QUERY, Question, RData, TYPE_TXT as TXT,
    };

    pub(super) use kokoa_dns::rfc2136::wire::TYPE_TXT;
    /// Type NS.
    pub(super) const TYPE_NS: u16 = 2;

    /// The TXT strings (joined per record) or NS targets at `name`, from `server`.
    pub(super) async fn query(
        server: SocketAddr,
        name: &DnsName,
        kind: u16,
        recursive: bool,
    ) -> Result<Vec<String>, String> {
        let bind = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let socket = tokio::net::UdpSocket::bind(bind)
            .await
            .map_err(|e| e.to_string())?;
        let id = random_id();
        let mut message = Message::new(id, OPCODE_QUERY);
        if recursive {
            message.flags |= 0x0100;
        }
        message.questions.push(Question {
            name: Name::from_dns_name(name),
            kind,
            class: CLASS_IN,
        });
        let bytes = message.encode().map_err(|e| e.to_string())?;
        socket
            .send_to(&bytes, server)
            .await
            .map_err(|e| e.to_string())?;
        let mut buffer = vec![0u8; 4096];
        let received = tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buffer))
            .await
            .map_err(|_| "no answer within 1 s".to_owned())?
            .map_err(|e| e.to_string())?;
        let raw = &buffer[..received];
        let answer = Message::decode(raw).map_err(|e| e.to_string())?;
        if answer.id != id || !answer.is_response() {
            return Err("an answer to another question".into());
        }
        let owner = Name::from_dns_name(name);
        Ok(answer
            .answers
            .iter()
            .filter(|r| r.kind == kind && r.name.eq_ignore_case(&owner))
            .filter_map(|r| match (&r.data, kind) {
                (RData::Txt(parts), TXT) => Some(
                    parts
                        .iter()
                        .map(|p| String::from_utf8_lossy(p))
                        .collect::<String>(),
                ),
                (RData::Other(data), TYPE_NS) => read_name(raw, data),
                _ => None,
            })
            .collect())
    }

    /// A name in record data, following compression pointers into the whole message.
    fn read_name(message: &[u8], data: &[u8]) -> Option<String> {
        let mut labels = Vec::new();
        let (mut bytes, mut at) = (data, 0usize);
        for _ in 0..128 {
            let len = usize::from(*bytes.get(at)?);
            match len {
                0 => return Some(labels.join(".")),
                l if l & 0xc0 == 0xc0 => {
                    let offset = (l & 0x3f) << 8 | usize::from(*bytes.get(at + 1)?);
                    (bytes, at) = (message, offset);
                }
                l => {
                    let label = bytes.get(at + 1..at + 1 + l)?;
                    labels.push(String::from_utf8_lossy(label).into_owned());
                    at += 1 + l;
                }
            }
        }
        None
    }

    fn random_id() -> u16 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.finish() as u16
    }
}

#[cfg(test)]
mod tests;
