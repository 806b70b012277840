//! The ACME certificate manager: one account, orders through HTTP-01 or DNS-01.

use std::{
    collections::{BTreeSet, HashSet},
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use instant_acme::{
    Account, AccountBuilder, AccountCredentials, AuthorizationStatus, HttpClient, Identifier,
    NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use kokoa_core::{Email, Hostname, Timestamp};
use rand_core::RngCore as _;
use zeroize::Zeroizing;

use crate::{
    AriWindow, CertificateStatus, ChallengeMethod, Dns01Solver, Error, Http01Publisher,
    IssuedCertificate, Issuer, RenewalInfo, RenewalPolicy, error::BAD_NONCE,
};

/// Whole orders tried when the CA keeps refusing nonces. The ACME client already sends
/// each request up to three times with a fresh nonce; a CA that rejects nonces at random
/// (as the test CA pebble does with 5 % of them) still fails one request in 8 000 that
/// way, which over the requests of an order is too often to pass to the caller.
const ORDER_ATTEMPTS: u32 = 3;

/// Where the random numbers that spread renewals over the CA's window come from.
pub type RandomSource = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Tells whether this instance may order certificates. With several control plane
/// instances only the leader orders, so that Let's Encrypt's rate limits are not spent
/// twice and no name set is ordered twice at once.
pub trait Leadership: Send + Sync + fmt::Debug {
    /// Whether this instance holds the leader lock now.
    fn is_leader(&self) -> bool;
}

/// The [`Leadership`] of a single instance: always the leader.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysLeader;

impl Leadership for AlwaysLeader {
    fn is_leader(&self) -> bool {
        true
    }
}

/// The ACME account's credentials (its private key and URL) as text, for the caller to
/// store encrypted and give back to [`CertificateManagerBuilder::restore`]. `Debug` does
/// not show it and the memory is wiped when dropped.
#[derive(Clone)]
pub struct AccountSecret(Zeroizing<String>);

impl AccountSecret {
    /// Wraps the text stored earlier.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// The text to store.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccountSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountSecret(<redacted>)")
    }
}

/// Orders certificates from one ACME account.
///
/// Cheap to clone; clones share the account and the set of running orders. At most one
/// order per set of names runs at a time: a second [`obtain`](Self::obtain) for the same
/// names gets [`Error::AlreadyInProgress`] rather than waiting for the first one's
/// certificate, because exactly one caller should store and distribute a new key.
#[derive(Clone)]
pub struct CertificateManager {
    inner: Arc<Inner>,
}

struct Inner {
    account: Account,
    random: RandomSource,
    http01: Option<Arc<dyn Http01Publisher>>,
    dns01: Option<Arc<dyn Dns01Solver>>,
    leadership: Arc<dyn Leadership>,
    order_timeout: Duration,
    in_flight: Mutex<HashSet<BTreeSet<Hostname>>>,
}

impl fmt::Debug for CertificateManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateManager")
            .field("account", &self.inner.account.id())
            .field("http01", &self.inner.http01.is_some())
            .field("dns01", &self.inner.dns01.is_some())
            .field("leadership", &self.inner.leadership)
            .field("order_timeout", &self.inner.order_timeout)
            .finish_non_exhaustive()
    }
}

/// Configures a [`CertificateManager`], then creates or restores its account.
///
/// ```no_run
/// # async fn run(publisher: std::sync::Arc<dyn kokoa_acme::Http01Publisher>) -> Result<(), Box<dyn std::error::Error>> {
/// use kokoa_acme::{CertificateManager, ChallengeMethod, Issuer};
///
/// let (manager, secret) = CertificateManager::builder(Issuer::LetsEncryptStaging)
///     .http01(publisher)
///     .create_account()
///     .await?;
/// // Store `secret.expose_secret()` encrypted; next time use `.restore(&secret)`.
/// let cert = manager.obtain(&["app.hoge.com".parse()?], ChallengeMethod::Http01).await?;
/// println!("valid until {}", cert.not_after);
/// # Ok(()) }
/// ```
pub struct CertificateManagerBuilder {
    issuer: Issuer,
    contact: Option<Email>,
    http01: Option<Arc<dyn Http01Publisher>>,
    dns01: Option<Arc<dyn Dns01Solver>>,
    leadership: Arc<dyn Leadership>,
    order_timeout: Duration,
    http: Option<Box<dyn HttpClient>>,
    random: RandomSource,
}

impl fmt::Debug for CertificateManagerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateManagerBuilder")
            .field("issuer", &self.issuer)
            .field("contact", &self.contact)
            .field("http01", &self.http01)
            .field("dns01", &self.dns01)
            .field("leadership", &self.leadership)
            .field("order_timeout", &self.order_timeout)
            .field("http", &self.http.as_ref().map(|_| "custom"))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for dyn Http01Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Http01Publisher")
    }
}

impl fmt::Debug for dyn Dns01Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dns01Solver")
    }
}

impl CertificateManager {
    /// Starts configuring a manager for `issuer`.
    pub fn builder(issuer: Issuer) -> CertificateManagerBuilder {
        CertificateManagerBuilder {
            issuer,
            contact: None,
            http01: None,
            dns01: None,
            leadership: Arc::new(AlwaysLeader),
            order_timeout: Duration::from_secs(120),
            http: None,
            random: Arc::new(|| rand_core::OsRng.next_u64()),
        }
    }
}

impl CertificateManagerBuilder {
    /// The e-mail address the CA may write to about the account.
    pub fn contact(mut self, email: Email) -> Self {
        self.contact = Some(email);
        self
    }

    /// Where HTTP-01 responses are published.
    pub fn http01(mut self, publisher: Arc<dyn Http01Publisher>) -> Self {
        self.http01 = Some(publisher);
        self
    }

    /// Where DNS-01 records are set.
    pub fn dns01(mut self, solver: Arc<dyn Dns01Solver>) -> Self {
        self.dns01 = Some(solver);
        self
    }

    /// Who decides whether this instance may order (default: [`AlwaysLeader`]).
    pub fn leadership(mut self, leadership: Arc<dyn Leadership>) -> Self {
        self.leadership = leadership;
        self
    }

    /// How long each of the two waits of an order (for validation, for the certificate)
    /// may take at most (default 2 minutes).
    pub fn order_timeout(mut self, timeout: Duration) -> Self {
        self.order_timeout = timeout;
        self
    }

    /// Sends every request to the ACME server through `http` instead of the built-in
    /// HTTPS client (which trusts the issuer's `trusted_root` or the system's roots): e.g.
    /// through a proxy, or to a test server over plain HTTP.
    pub fn http_client(mut self, http: Box<dyn HttpClient>) -> Self {
        self.http = Some(http);
        self
    }

    /// Where the random numbers come from that pick a renewal time inside the CA's window
    /// (default: the operating system's generator). Tests pass a fixed one.
    pub fn random_source(mut self, random: RandomSource) -> Self {
        self.random = random;
        self
    }

    fn account_builder(&mut self) -> Result<AccountBuilder, Error> {
        match self.http.take() {
            Some(http) => Ok(Account::builder_with_http(http)),
            None => self.issuer.account_builder(),
        }
    }

    /// Registers a new account with the issuer, agreeing to its terms of service. Returns
    /// the manager and the account's secret to store.
    pub async fn create_account(mut self) -> Result<(CertificateManager, AccountSecret), Error> {
        let contact = self.contact.as_ref().map(|email| format!("mailto:{email}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = self
            .account_builder()?
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.issuer.directory_url().to_owned(),
                self.issuer.external_account_key().as_ref(),
            )
            .await
            .map_err(|source| account_error(&self.issuer, source))?;
        let secret = serde_json::to_string(&credentials).map_err(Error::InvalidAccountSecret)?;
        Ok((self.build(account), AccountSecret::new(secret)))
    }

    /// Uses the account created earlier, from its stored secret. Fails when the account
    /// was created at another issuer than the configured one.
    pub async fn restore(mut self, secret: &AccountSecret) -> Result<CertificateManager, Error> {
        /// The one field of the stored credentials we look at ourselves.
        #[derive(serde::Deserialize)]
        struct Stored {
            directory: Option<String>,
        }
        let text = secret.expose_secret();
        let stored: Stored = serde_json::from_str(text).map_err(Error::InvalidAccountSecret)?;
        let configured = self.issuer.directory_url();
        if stored.directory.as_deref() != Some(configured) {
            return Err(Error::AccountIssuerMismatch {
                stored: stored
                    .directory
                    .unwrap_or_else(|| "an unknown directory".to_owned()),
                configured: configured.to_owned(),
            });
        }
        let credentials: AccountCredentials =
            serde_json::from_str(text).map_err(Error::InvalidAccountSecret)?;
        let account = self
            .account_builder()?
            .from_credentials(credentials)
            .await
            .map_err(|source| Error::Acme {
                step: "account restore",
                source,
            })?;
        Ok(self.build(account))
    }

    fn build(self, account: Account) -> CertificateManager {
        CertificateManager {
            inner: Arc::new(Inner {
                account,
                random: self.random,
                http01: self.http01,
                dns01: self.dns01,
                leadership: self.leadership,
                order_timeout: self.order_timeout,
                in_flight: Mutex::new(HashSet::new()),
            }),
        }
    }
}

/// Tells external account binding problems apart from other failures of account creation.
fn account_error(issuer: &Issuer, source: instant_acme::Error) -> Error {
    const PREFIX: &str = "urn:ietf:params:acme:error:";
    if let instant_acme::Error::Api(problem) = &source {
        let kind = problem
            .r#type
            .as_deref()
            .and_then(|t| t.strip_prefix(PREFIX));
        match (kind, issuer.external_account_binding()) {
            (Some("externalAccountRequired"), _) => {
                return Error::ExternalAccountRequired {
                    directory_url: issuer.directory_url().to_owned(),
                };
            }
            (Some("unauthorized" | "malformed"), Some(eab)) => {
                return Error::ExternalAccountRejected {
                    key_id: eab.key_id().to_owned(),
                    detail: problem
                        .detail
                        .clone()
                        .unwrap_or_else(|| problem.to_string()),
                };
            }
            _ => {}
        }
    }
    Error::Acme {
        step: "account creation",
        source,
    }
}

impl CertificateManager {
    /// The account's URL at the ACME server, which identifies it there.
    pub fn account_id(&self) -> &str {
        self.inner.account.id()
    }

    /// Asks the CA when to renew `cert` (ACME Renewal Information, RFC 9773): a plain GET
    /// of `<renewalInfo>/<certificate id>`. `Ok(None)` when the CA's directory has no
    /// `renewalInfo`: it offers no window, and the renewal policy decides alone.
    ///
    /// An answer without `Retry-After`, any error status (404 for a certificate the CA does
    /// not know, 5xx) and a body without a window are errors
    /// ([`Error::Acme`], step "renewal info").
    pub async fn renewal_info(
        &self,
        cert: &IssuedCertificate,
    ) -> Result<Option<RenewalInfo>, Error> {
        let id = cert.certificate_id()?;
        let (info, retry_after) = match self.inner.account.renewal_info(&id).await {
            Ok(answer) => answer,
            Err(instant_acme::Error::Unsupported(_)) => return Ok(None),
            Err(source) => {
                return Err(Error::Acme {
                    step: "renewal info",
                    source,
                });
            }
        };
        let time = |seconds: i64| {
            Timestamp::from_unix(seconds).map_err(|e| Error::InvalidRenewalInfo {
                detail: format!("the suggested window is out of range: {e}"),
            })
        };
        Ok(Some(RenewalInfo {
            window: AriWindow {
                start: time(info.suggested_window.start.unix_timestamp())?,
                end: time(info.suggested_window.end.unix_timestamp())?,
            },
            explanation_url: info.explanation_url,
            // instant-acme measures from its own clock a moment after the answer came:
            // `Retry-After: 21600` arrives as 21599.99… seconds.
            retry_after: Duration::from_secs(
                retry_after.as_secs() + u64::from(retry_after.subsec_millis() >= 500),
            ),
        }))
    }

    /// Asks the CA for `cert`'s renewal window at `now` and plans `status` by the answer
    /// ([`CertificateStatus::record_renewal_info`], with a number from the builder's
    /// [`random_source`](CertificateManagerBuilder::random_source)). On an error the
    /// renewal plan stays as it was, the next check backs off, and the error is returned
    /// for the caller to log.
    pub async fn refresh_renewal(
        &self,
        cert: &IssuedCertificate,
        status: &mut CertificateStatus,
        policy: &RenewalPolicy,
        now: Timestamp,
    ) -> Result<(), Error> {
        match self.renewal_info(cert).await {
            Ok(Some(info)) => {
                status.record_renewal_info(policy, info, now, (self.inner.random)());
                Ok(())
            }
            Ok(None) => {
                status.record_no_renewal_info();
                Ok(())
            }
            Err(error) => {
                status.record_renewal_info_failure(policy, now);
                Err(error)
            }
        }
    }

    /// Orders a certificate for `domains` with a fresh key, proving control with `method`.
    ///
    /// Publishes each challenge response, waits (at most the order timeout, with backoff)
    /// for the order to become ready, finalises it and downloads the chain. The responses
    /// are withdrawn in every case: on success, on error, and when this future is dropped
    /// (then from a spawned task). An order whose request the CA refused for its nonce
    /// three times is placed again, at most three orders in all.
    pub async fn obtain(
        &self,
        domains: &[Hostname],
        method: ChallengeMethod,
    ) -> Result<IssuedCertificate, Error> {
        let names: BTreeSet<Hostname> = domains.iter().cloned().collect();
        if names.is_empty() {
            return Err(Error::NoDomains);
        }
        if !self.inner.leadership.is_leader() {
            return Err(Error::NotLeader {
                domains: names.into_iter().collect(),
            });
        }
        if method == ChallengeMethod::Http01
            && let Some(wildcard) = names.iter().find(|name| name.is_wildcard())
        {
            return Err(Error::WildcardNeedsDns01 {
                hostname: wildcard.clone(),
            });
        }
        let handler = match method {
            ChallengeMethod::Http01 => self.inner.http01.clone().map(Handler::Http),
            ChallengeMethod::Dns01 => self.inner.dns01.clone().map(Handler::Dns),
        }
        .ok_or(Error::NoChallengeHandler { method })?;

        let _slot = InFlight::claim(&self.inner, names.clone())?;
        let mut attempt = 1;
        loop {
            let mut placed = Placed::default();
            let result = self.run_order(&names, method, &handler, &mut placed).await;
            placed.withdraw().await;
            match result {
                // Only a leader orders: leadership lost meanwhile ends the retries.
                Err(error)
                    if error.is_bad_nonce()
                        && attempt < ORDER_ATTEMPTS
                        && self.inner.leadership.is_leader() =>
                {
                    tracing::warn!(%error, attempt, "the CA refused our nonces; ordering again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn run_order(
        &self,
        names: &BTreeSet<Hostname>,
        method: ChallengeMethod,
        handler: &Handler,
        placed: &mut Placed,
    ) -> Result<IssuedCertificate, Error> {
        let domains = || names.iter().cloned().collect::<Vec<_>>();
        let acme = |step| move |source| Error::Acme { step, source };
        let identifiers: Vec<Identifier> = names
            .iter()
            .map(|name| Identifier::Dns(name.as_str().to_owned()))
            .collect();
        let mut order = self
            .inner
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(acme("new order"))?;

        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(acme("authorization fetch"))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                // Proven recently for this account: nothing to publish.
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(Error::ValidationFailed {
                        domains: domains(),
                        detail: format!(
                            "the authorization for {} is {status:?}",
                            authorization.identifier()
                        ),
                    });
                }
            }
            let hostname = authorization.identifier().to_string();
            let Some(mut challenge) = authorization.challenge(method.acme_type()) else {
                return Err(Error::ChallengeNotOffered { hostname, method });
            };
            let key_authorization = challenge.key_authorization();
            let placement = match handler {
                Handler::Http(publisher) => {
                    check_token(&challenge.token)?;
                    Placement::Http {
                        publisher: Arc::clone(publisher),
                        token: challenge.token.clone(),
                        key_authorization: key_authorization.as_str().to_owned(),
                    }
                }
                Handler::Dns(solver) => {
                    // The record name has no `*.`: the wildcard and its base share it.
                    let base = hostname.strip_prefix("*.").unwrap_or(&hostname);
                    Placement::Dns {
                        solver: Arc::clone(solver),
                        name: format!("_acme-challenge.{base}"),
                        value: key_authorization.dns_value(),
                    }
                }
            };
            placed
                .place(placement)
                .await
                .map_err(|source| Error::PlaceChallenge {
                    hostname: hostname.clone(),
                    method,
                    source,
                })?;
            challenge
                .set_ready()
                .await
                .map_err(acme("challenge ready"))?;
        }

        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(2.0)
            .timeout(self.inner.order_timeout);
        let timeout = || Error::OrderTimeout {
            domains: domains(),
            after: self.inner.order_timeout,
        };
        match order.poll_ready(&retry).await {
            Ok(OrderStatus::Ready) => {}
            Err(instant_acme::Error::Api(problem))
                if problem.r#type.as_deref() == Some(BAD_NONCE) =>
            {
                return Err(acme("order poll")(instant_acme::Error::Api(problem)));
            }
            Ok(_) | Err(instant_acme::Error::Api(_)) => {
                return Err(Error::ValidationFailed {
                    domains: domains(),
                    detail: failure_detail(&mut order).await,
                });
            }
            Err(instant_acme::Error::Timeout(_)) => return Err(timeout()),
            Err(source) => return Err(acme("order poll")(source)),
        }
        let key_pem = Zeroizing::new(order.finalize().await.map_err(acme("finalize"))?);
        let chain_pem = match order.poll_certificate(&retry).await {
            Ok(chain) => chain,
            Err(instant_acme::Error::Timeout(_)) => return Err(timeout()),
            Err(source) => return Err(acme("certificate download")(source)),
        };
        let cert = IssuedCertificate::from_pem(&chain_pem, &key_pem)?;
        for name in names {
            cert.check_covers(name)?;
        }
        Ok(cert)
    }
}

/// Why an order failed, per name, from the server's challenge errors.
async fn failure_detail(order: &mut Order) -> String {
    let mut details = Vec::new();
    if let Some(problem) = &order.state().error {
        details.push(problem.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        let name = state.identifier().to_string();
        details.extend(
            state
                .challenges
                .iter()
                .filter_map(|c| c.error.as_ref())
                .map(|problem| format!("{name}: {problem}")),
        );
    }
    if details.is_empty() {
        "the order became invalid without a reason".to_owned()
    } else {
        details.join("; ")
    }
}

/// ACME tokens are base64url (RFC 8555 §8.1); anything else could walk out of the
/// challenge directory on an edge.
fn check_token(token: &str) -> Result<(), Error> {
    let ok = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidToken {
            token: token.chars().take(100).collect(),
        })
    }
}

/// A running order's name set, removed from the manager's set when dropped (also when the
/// order's future is dropped).
struct InFlight {
    inner: Arc<Inner>,
    names: BTreeSet<Hostname>,
}

impl InFlight {
    fn claim(inner: &Arc<Inner>, names: BTreeSet<Hostname>) -> Result<Self, Error> {
        let mut running = inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !running.insert(names.clone()) {
            return Err(Error::AlreadyInProgress {
                domains: names.into_iter().collect(),
            });
        }
        Ok(Self {
            inner: Arc::clone(inner),
            names,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.names);
    }
}

enum Handler {
    Http(Arc<dyn Http01Publisher>),
    Dns(Arc<dyn Dns01Solver>),
}

/// One challenge response, with the handler that places and withdraws it.
enum Placement {
    Http {
        publisher: Arc<dyn Http01Publisher>,
        token: String,
        key_authorization: String,
    },
    Dns {
        solver: Arc<dyn Dns01Solver>,
        name: String,
        value: String,
    },
}

impl Placement {
    async fn place(&self) -> Result<(), crate::BoxError> {
        match self {
            Self::Http {
                publisher,
                token,
                key_authorization,
            } => publisher.publish(token, key_authorization).await,
            Self::Dns {
                solver,
                name,
                value,
            } => solver.set_txt(name, value).await,
        }
    }

    /// Withdraws the response; a failure is logged and does not hide the order's result.
    async fn withdraw(&self) {
        let (what, result) = match self {
            Self::Http {
                publisher, token, ..
            } => (token, publisher.withdraw(token).await),
            Self::Dns {
                solver,
                name,
                value,
            } => (name, solver.remove_txt(name, value).await),
        };
        if let Err(error) = result {
            tracing::warn!(challenge = %what, %error, "withdrawing an ACME challenge response failed");
        }
    }
}

/// The challenge responses of an order. Each is recorded before it is placed, so that a
/// half-done placement is withdrawn too.
#[derive(Default)]
struct Placed(Vec<Placement>);

impl Placed {
    async fn place(&mut self, placement: Placement) -> Result<(), crate::BoxError> {
        let index = self.0.len();
        self.0.push(placement);
        self.0[index].place().await
    }

    async fn withdraw(&mut self) {
        withdraw_all(std::mem::take(&mut self.0)).await;
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        // Reached only when `obtain`'s future was dropped half way: finish the cleanup
        // in the background, since `drop` cannot wait.
        let placements = std::mem::take(&mut self.0);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(withdraw_all(placements));
            }
            Err(_) => tracing::warn!(
                count = placements.len(),
                "ACME challenge responses left in place: no runtime to withdraw them"
            ),
        }
    }
}

async fn withdraw_all(placements: Vec<Placement>) {
    for placement in placements {
        placement.withdraw().await;
    }
}
