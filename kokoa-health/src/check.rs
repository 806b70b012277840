//! What to check and how: configuration, outcome and the executor trait.

use std::{fmt, net::IpAddr, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{CheckStatus, Error, Thresholds};

/// The kind of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckKind {
    /// `GET url` over plain HTTP; status and optional body substring must match.
    #[default]
    Http,
    /// `GET url` over HTTPS; status and optional body substring must match.
    Https,
    /// A TCP connection to `host:port` is accepted.
    Tcp,
    /// An ICMP echo to `host` is answered.
    Icmp,
    /// An echo to `wireguard_ip` through the tunnel is answered.
    Wireguard,
    /// The certificate served for `host` (SNI) is valid, unexpired and names it.
    TlsCertificate,
    /// `GET url` of a public hostname through an edge reaches the origin.
    EndToEnd,
    /// `command` exits with status 0.
    Command,
}

impl CheckKind {
    fn needs_host(self) -> bool {
        matches!(self, Self::Tcp | Self::Icmp | Self::TlsCertificate)
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::Tcp => "tcp",
            Self::Icmp => "icmp",
            Self::Wireguard => "wireguard",
            Self::TlsCertificate => "tls_certificate",
            Self::EndToEnd => "end_to_end",
            Self::Command => "command",
        })
    }
}

/// One configured check, with the defaults of the specification: every 10 s, 5 s timeout,
/// 3 retries, unhealthy after 3 failures and healthy again after 3 successes, status 200;
/// certificates verified, and at least 7 days of validity left.
///
/// Fields a kind does not use are ignored. Durations are written in seconds.
///
/// ```
/// use kokoa_health::{CheckConfig, CheckKind};
///
/// let check: CheckConfig =
///     serde_json::from_str(r#"{"type": "https", "url": "https://203.0.113.7/health"}"#)?;
/// assert_eq!(check.kind, CheckKind::Https);
/// assert_eq!(check.interval.as_secs(), 10);
/// assert_eq!(check.expected_status, 200);
/// check.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CheckConfig {
    /// What kind of check this is.
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Time between the starts of two runs.
    #[serde(with = "crate::secs")]
    pub interval: Duration,
    /// Longest wait for one attempt; at most `interval`.
    #[serde(with = "crate::secs")]
    pub timeout: Duration,
    /// Attempts an executor may repeat after a failed one within a run, as long as the run
    /// ends before the next interval starts.
    pub retries: u32,
    /// Consecutive failed runs before the target is unhealthy.
    pub threshold: u32,
    /// Consecutive successful runs before an unhealthy target is healthy again.
    pub recovery_threshold: u32,
    /// URL of `http`, `https` and `end_to_end` checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Status an HTTP answer must have.
    pub expected_status: u16,
    /// When set, any status below it counts instead of `expected_status`: for the
    /// end-to-end check of an application that has no health path, any answer short of a
    /// server error (`500`) shows the way through edge, tunnel and origin works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any_status_below: Option<u16>,
    /// Text the HTTP answer body must contain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_body: Option<String>,
    /// Host of `tcp`, `icmp` and `tls_certificate` checks (the SNI name for the latter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Port of `tcp` and `tls_certificate` checks (the latter defaults to 443).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Tunnel address of `wireguard` checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_ip: Option<IpAddr>,
    /// Program and arguments of `command` checks (run without a shell).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Address to connect to instead of resolving the host of `url` or `host`, used by
    /// `http`, `https`, `end_to_end`, `tls_certificate` and `tcp` checks. The name is still
    /// the one sent (SNI, `Host`) and verified, so an `end_to_end` check can reach a
    /// hostname's origin through one given edge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Whether `https` and `end_to_end` checks verify the server's certificate (default
    /// `true`). Turn it off only for an address that presents a self-signed certificate on
    /// purpose, such as an edge's fallback certificate on `https://<edge_ip>/health`.
    pub verify_certificate: bool,
    /// Whole days of validity a `tls_certificate` check requires to remain (default 7).
    pub min_days_left: u32,
    /// Network namespace the check runs from: a name under `/run/netns` (as `ip netns add`
    /// creates) or an absolute path such as `/proc/<pid>/ns/net`. A tunnel address is only
    /// reachable from the host that has the tunnel; this lets a `wireguard` (or any network)
    /// check run from there. Names are still resolved in the checker's own namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        let thresholds = Thresholds::default();
        Self {
            kind: CheckKind::default(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            retries: 3,
            threshold: thresholds.failure.get(),
            recovery_threshold: thresholds.recovery.get(),
            url: None,
            expected_status: 200,
            any_status_below: None,
            expected_body: None,
            host: None,
            port: None,
            wireguard_ip: None,
            command: Vec::new(),
            address: None,
            verify_certificate: true,
            min_days_left: 7,
            netns: None,
        }
    }
}

impl CheckConfig {
    fn with_kind(kind: CheckKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    fn with_url(kind: CheckKind, url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::with_kind(kind)
        }
    }

    fn with_host(kind: CheckKind, host: impl Into<String>, port: Option<u16>) -> Self {
        Self {
            host: Some(host.into()),
            port,
            ..Self::with_kind(kind)
        }
    }

    /// A plain HTTP check of `url`.
    pub fn http(url: impl Into<String>) -> Self {
        Self::with_url(CheckKind::Http, url)
    }

    /// An HTTPS check of `url`.
    pub fn https(url: impl Into<String>) -> Self {
        Self::with_url(CheckKind::Https, url)
    }

    /// An end-to-end check of `url` through an edge.
    pub fn end_to_end(url: impl Into<String>) -> Self {
        Self::with_url(CheckKind::EndToEnd, url)
    }

    /// A TCP connect check.
    pub fn tcp(host: impl Into<String>, port: u16) -> Self {
        Self::with_host(CheckKind::Tcp, host, Some(port))
    }

    /// An ICMP echo check.
    pub fn icmp(host: impl Into<String>) -> Self {
        Self::with_host(CheckKind::Icmp, host, None)
    }

    /// A certificate check of the name `host`.
    pub fn tls_certificate(host: impl Into<String>) -> Self {
        Self::with_host(CheckKind::TlsCertificate, host, None)
    }

    /// An echo through the tunnel to `wireguard_ip`.
    pub fn wireguard(wireguard_ip: IpAddr) -> Self {
        Self {
            wireguard_ip: Some(wireguard_ip),
            ..Self::with_kind(CheckKind::Wireguard)
        }
    }

    /// A custom command: program first, then its arguments.
    pub fn command<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            command: argv.into_iter().map(Into::into).collect(),
            ..Self::with_kind(CheckKind::Command)
        }
    }

    /// The state machine thresholds of this check.
    ///
    /// # Errors
    /// [`Error::ZeroThreshold`] when `threshold` or `recovery_threshold` is 0.
    pub fn thresholds(&self) -> Result<Thresholds, Error> {
        Thresholds::new(self.threshold, self.recovery_threshold)
    }

    /// Checks that the configuration can be run.
    ///
    /// # Errors
    /// The first problem found, naming the offending value: a zero interval, timeout or
    /// threshold, a timeout longer than the interval, port 0, a malformed `netns`, an option
    /// the kind cannot honour, a field the kind needs that is missing, a URL whose scheme
    /// does not fit the kind, or a status outside 100-599.
    pub fn validate(&self) -> Result<(), Error> {
        for (name, value) in [("interval", self.interval), ("timeout", self.timeout)] {
            if value.is_zero() {
                return Err(Error::ZeroDuration { name });
            }
        }
        if self.timeout > self.interval {
            return Err(Error::TimeoutExceedsInterval {
                timeout: self.timeout,
                interval: self.interval,
            });
        }
        self.thresholds()?;
        if self.port == Some(0) {
            return Err(Error::PortZero);
        }
        if let Some(netns) = &self.netns {
            validate_netns(netns)?;
        }
        let unused = |field, instead| {
            Err(Error::UnusedField {
                kind: self.kind,
                field,
                instead,
            })
        };
        if self.kind == CheckKind::Command && self.netns.is_some() {
            return unused(
                "netns",
                "run the program through `ip netns exec <name>` in `command` instead",
            );
        }
        if self.kind == CheckKind::TlsCertificate && !self.verify_certificate {
            return unused(
                "verify_certificate: false",
                "it always verifies; use an https check to reach a server without verifying",
            );
        }
        let missing = |field| {
            Err(Error::MissingField {
                kind: self.kind,
                field,
            })
        };
        match self.kind {
            CheckKind::Http => self.validate_http(&["http://"], "http://"),
            CheckKind::Https => self.validate_http(&["https://"], "https://"),
            CheckKind::EndToEnd => {
                self.validate_http(&["http://", "https://"], "http:// or https://")
            }
            _ if self.kind.needs_host() && self.host.as_deref().is_none_or(str::is_empty) => {
                missing("host")
            }
            CheckKind::Tcp if self.port.is_none() => missing("port"),
            CheckKind::Wireguard if self.wireguard_ip.is_none() => missing("wireguard_ip"),
            CheckKind::Command if self.command.first().is_none_or(String::is_empty) => {
                missing("command")
            }
            _ => Ok(()),
        }
    }

    fn validate_http(&self, schemes: &[&str], expected: &'static str) -> Result<(), Error> {
        let url = self.url.as_deref().ok_or(Error::MissingField {
            kind: self.kind,
            field: "url",
        })?;
        let names_host = schemes
            .iter()
            .filter_map(|scheme| url.strip_prefix(scheme))
            .any(|rest| !rest.is_empty() && !rest.starts_with(['/', '?', '#']));
        let authority = schemes
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .and_then(|rest| rest.split(['/', '?', '#']).next());
        if authority.is_some_and(|authority| authority.contains('@')) {
            // Not echoed: the URL holds a password.
            return Err(Error::CredentialsInUrl { kind: self.kind });
        }
        if !names_host {
            return Err(Error::InvalidUrl {
                kind: self.kind,
                url: url.to_owned(),
                expected,
            });
        }
        if !(100..=599).contains(&self.expected_status) {
            return Err(Error::InvalidStatus {
                status: self.expected_status,
            });
        }
        if let Some(limit) = self.any_status_below.filter(|l| !(101..=600).contains(l)) {
            return Err(Error::InvalidStatusLimit { limit });
        }
        Ok(())
    }
}

/// A namespace name as `ip netns` takes it, or an absolute path to a namespace file.
fn validate_netns(netns: &str) -> Result<(), Error> {
    let valid = !netns.contains('\0')
        && if netns.contains('/') {
            netns.starts_with('/')
        } else {
            !matches!(netns, "" | "." | "..")
        };
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidNetns {
            netns: netns.to_owned(),
        })
    }
}

/// What one check run found, as kept in the check history.
///
/// Built with [`success`](Self::success) or [`failure`](Self::failure); fields added later
/// are optional in the serialised form, so older records still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckOutcome {
    /// Success or failure.
    pub status: CheckStatus,
    /// How long the attempt reported took (the last one, after retries), in milliseconds.
    pub response_time_ms: u64,
    /// Why it failed; `None` on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whole days the server's certificate has left (negative once expired), when the check
    /// saw one: `tls_certificate` checks, and `https` and `end_to_end` checks that verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_days_left: Option<i64>,
}

impl CheckOutcome {
    /// A successful run that took `response_time_ms`.
    pub fn success(response_time_ms: u64) -> Self {
        Self {
            status: CheckStatus::Success,
            response_time_ms,
            error: None,
            certificate_days_left: None,
        }
    }

    /// A failed run that took `response_time_ms`, with the reason.
    pub fn failure(response_time_ms: u64, error: impl Into<String>) -> Self {
        Self {
            status: CheckStatus::Failure,
            response_time_ms,
            error: Some(error.into()),
            certificate_days_left: None,
        }
    }

    /// The same outcome, recording the days the certificate seen has left.
    pub fn with_certificate_days_left(mut self, days: i64) -> Self {
        self.certificate_days_left = Some(days);
        self
    }
}

/// Runs checks of some kinds; stored as `Arc<dyn CheckExecutor>` by the scheduler.
///
/// An executor never returns an error: anything that goes wrong is a failed
/// [`CheckOutcome`] carrying the reason, because to the state machine it is one failure.
/// It must end within `check.timeout` per attempt, and may be cancelled (dropped) at any
/// await point, as the checker does when a check is removed.
#[async_trait]
pub trait CheckExecutor: Send + Sync {
    /// Runs `check` once.
    async fn check(&self, check: &CheckConfig) -> CheckOutcome;
}

#[cfg(test)]
mod tests;
