//! The built-in [`CheckExecutor`]: every [`CheckKind`] over real sockets and processes.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use rustls::RootCertStore;
use tokio::time::Instant;

use crate::{CheckConfig, CheckExecutor, CheckKind, CheckOutcome, Error};

mod command;
mod http;
mod icmp;
mod net;
mod tls;

/// Runs every kind of check; cheap to clone (the TLS configuration is shared).
///
/// | kind | what an attempt does | success |
/// |---|---|---|
/// | `http`, `https`, `end_to_end` | `GET url` on a fresh connection (to `address` if set), body read up to 64 KiB | status is `expected_status` and the body contains `expected_body` |
/// | `tls_certificate` | TLS handshake with `host:port` (443), SNI = `host` | chain valid against the roots, not expired, names `host`, at least `min_days_left` days left |
/// | `tcp` | connect to `host:port` | accepted |
/// | `icmp`, `wireguard` | one echo request to `host` / `wireguard_ip` | answered |
/// | `command` | runs `command` without a shell, in its own process group, killed with it at the timeout | exit status 0; a failure carries the end of stderr (1 KiB) and names the program, not its arguments |
///
/// Each attempt is bounded by `timeout`; a failed attempt is retried at once up to
/// `retries` times, while another attempt still ends within `interval` of the run's start.
/// `netns` makes network checks open their sockets inside that namespace.
///
/// HTTPS certificates are verified for the URL's host (unless `verify_certificate` is off)
/// against the system's roots plus any given with [`with_root_pem`](Self::with_root_pem).
/// Connections are never reused: each attempt makes a new connection and a full TLS
/// handshake, so a check sees what a new visitor would.
///
/// ICMP uses an unprivileged ICMP socket where `net.ipv4.ping_group_range` allows it, else
/// a raw socket (root or `CAP_NET_RAW`), rather than running `ping`: no process per check
/// (1 000 targets every 10 s would be 100 processes a second), exact round-trip times, and
/// entering a namespace is one `setns` on a short-lived thread.
///
/// ```no_run
/// use kokoa_health::{CheckConfig, CheckExecutor, CheckStatus, DefaultExecutor};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let executor = DefaultExecutor::new().with_root_pem(&std::fs::read("/etc/kokoa/ca.pem")?)?;
/// let mut check = CheckConfig::end_to_end("https://app.hoge.com/health");
/// check.address = Some("203.0.113.7".parse()?); // through this edge
/// let outcome = executor.check(&check).await;
/// if outcome.status == CheckStatus::Failure {
///     eprintln!("app.hoge.com through 203.0.113.7: {}", outcome.error.unwrap_or_default());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DefaultExecutor {
    tls: Arc<tls::Tls>,
}

impl fmt::Debug for DefaultExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultExecutor")
            .field("trusted_roots", &self.tls.root_count())
            .finish()
    }
}

impl Default for DefaultExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl DefaultExecutor {
    /// An executor trusting the system's root certificates (`/etc/ssl/certs` or what
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` name). Certificates that cannot be read are logged
    /// and left out.
    pub fn new() -> Self {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "cannot read a system root certificate");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::warn!(
                added,
                ignored,
                "system root certificates rustls cannot use were left out"
            );
        }
        Self::with_roots(roots)
    }

    /// An executor trusting no root until some are added with
    /// [`with_root_pem`](Self::with_root_pem): a private CA only, as in tests.
    pub fn without_system_roots() -> Self {
        Self::with_roots(RootCertStore::empty())
    }

    fn with_roots(roots: RootCertStore) -> Self {
        Self {
            tls: Arc::new(tls::Tls::new(roots)),
        }
    }

    /// The same executor trusting the certificates of `pem` as well, such as a private CA
    /// or the test CA of an ACME server.
    ///
    /// # Errors
    /// [`Error::InvalidRootCertificate`] when `pem` holds no certificate, or one that is
    /// not a usable trust anchor.
    pub fn with_root_pem(self, pem: &[u8]) -> Result<Self, Error> {
        let mut roots = self.tls.roots().clone();
        tls::add_pem(&mut roots, pem)?;
        Ok(Self::with_roots(roots))
    }

    async fn attempt(&self, check: &CheckConfig, progress: &mut Progress) -> Result<(), String> {
        let netns = check.netns.as_deref();
        match check.kind {
            CheckKind::Http | CheckKind::Https | CheckKind::EndToEnd => {
                http::get(&self.tls, check, progress).await
            }
            CheckKind::TlsCertificate => tls::check_certificate(&self.tls, check, progress).await,
            CheckKind::Tcp => {
                let host = check.host.as_deref().unwrap_or_default();
                let port = check.port.unwrap_or_default();
                net::connect(host, port, check.address, netns, progress)
                    .await
                    .map(drop)
            }
            CheckKind::Icmp => {
                let host = check.host.as_deref().unwrap_or_default();
                let ip = net::resolve_one(host, progress).await?;
                icmp::echo(ip, netns, progress).await
            }
            CheckKind::Wireguard => {
                let ip = check
                    .wireguard_ip
                    .ok_or("the wireguard check needs `wireguard_ip`")?;
                icmp::echo(ip, netns, progress).await
            }
            CheckKind::Command => command::run(&check.command, progress).await,
        }
    }
}

/// What an attempt was doing, for the message when it times out, and what it learnt.
#[derive(Debug)]
struct Progress {
    doing: String,
    certificate_days_left: Option<i64>,
}

impl Progress {
    fn doing(&mut self, what: impl fmt::Display) {
        self.doing = what.to_string();
    }
}

#[async_trait]
impl CheckExecutor for DefaultExecutor {
    async fn check(&self, check: &CheckConfig) -> CheckOutcome {
        if let Err(error) = check.validate() {
            return CheckOutcome::failure(0, error.to_string());
        }
        let run = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let started = Instant::now();
            let mut progress = Progress {
                doing: format!("running the {} check", check.kind),
                certificate_days_left: None,
            };
            let result = tokio::time::timeout(check.timeout, self.attempt(check, &mut progress))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "timed out after {} while {}",
                        seconds(check.timeout),
                        progress.doing
                    ))
                });
            let elapsed = started.elapsed();
            let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            let outcome = match result {
                Ok(()) => CheckOutcome::success(ms),
                Err(error) => {
                    let another_fits = run.elapsed() + check.timeout <= check.interval;
                    if attempts <= check.retries && another_fits {
                        tracing::debug!(kind = %check.kind, attempts, %error, "check attempt failed; retrying");
                        continue;
                    }
                    let error = match attempts {
                        1 => error,
                        n => format!("{error} ({n} attempts)"),
                    };
                    CheckOutcome::failure(ms, error)
                }
            };
            return match progress.certificate_days_left {
                Some(days) => outcome.with_certificate_days_left(days),
                None => outcome,
            };
        }
    }
}

/// `5 s`, `0.5 s`: durations in messages, written as the configuration writes them.
fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}
