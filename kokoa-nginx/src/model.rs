//! The input model: what one edge serves.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use kokoa_core::Hostname;
use sha2::{Digest, Sha256};

use crate::Error;

/// Longest certificate name: `NAME.crt` must fit the 255-byte file name limit.
const MAX_LEN: usize = 251;

/// The name of a certificate: a safe file stem. The files are `certs/NAME.crt` and
/// `certs/NAME.key` in the nginx prefix.
///
/// 1–251 characters of `a-z`, `A-Z`, `0-9`, `.`, `_` and `-`, starting with a letter, a digit
/// or `_`: it holds no `/`, cannot be `..` or a hidden file, cannot be read as an option, and
/// `NAME.crt` fits in a file name (255 bytes).
///
/// ```
/// use kokoa_core::Hostname;
/// use kokoa_nginx::CertName;
///
/// assert_eq!(CertName::parse("app.hoge.com")?.as_str(), "app.hoge.com");
/// assert!(CertName::parse("../etc/passwd").is_err());
/// let wildcard = CertName::for_hostname(&Hostname::parse("*.fuga.com")?);
/// assert_eq!(wildcard.as_str(), "_.fuga.com");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CertName(String);

impl CertName {
    /// Validates `input`.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let fail = |reason| Error::InvalidCertName {
            input: input.chars().take(300).collect(),
            reason,
        };
        let Some(first) = input.chars().next() else {
            return Err(fail("it is empty"));
        };
        if input.len() > MAX_LEN {
            return Err(fail("it is longer than 251 characters"));
        }
        if !(first.is_ascii_alphanumeric() || first == '_') {
            return Err(fail("it must start with a letter, a digit or '_'"));
        }
        if !input
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(fail(
                "it holds a character other than a-z, A-Z, 0-9, '.', '_', '-'",
            ));
        }
        Ok(Self(input.to_owned()))
    }

    /// The conventional name of the certificate for `hostname`: the name itself, with a
    /// wildcard's `*` written as `_` (`*.fuga.com` → `_.fuga.com`). The rare name longer than
    /// 251 characters becomes `_` and the hex SHA-256 of the name.
    pub fn for_hostname(hostname: &Hostname) -> Self {
        // A normalised hostname only holds a-z, 0-9, '-', '.' and a leading "*.", so the
        // result always satisfies `parse`.
        let name = hostname.as_str();
        if name.len() > MAX_LEN {
            return Self(format!("_{}", hex::encode(Sha256::digest(name))));
        }
        Self(name.replacen('*', "_", 1))
    }

    /// The name, e.g. `app.hoge.com`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertName({})", self.0)
    }
}

impl FromStr for CertName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl Default for CertName {
    /// `fallback`: the certificate served for unknown or missing SNI.
    fn default() -> Self {
        Self("fallback".to_owned())
    }
}

/// One published hostname and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The public name (`app.hoge.com` or `*.fuga.com`).
    pub hostname: Hostname,
    /// The origin service as seen from the edge, e.g. `10.0.1.1:8080` over WireGuard.
    pub backend: SocketAddr,
    /// The certificate to present for this name; `None` presents the fallback certificate
    /// (e.g. while the real one is still being issued).
    pub certificate: Option<CertName>,
    /// `false` when the origin or the service is down: the edge answers 503 with Kokoa's
    /// error page instead of proxying.
    pub available: bool,
}

impl Route {
    /// An available route without its own certificate yet.
    pub fn new(hostname: Hostname, backend: SocketAddr) -> Self {
        Self {
            hostname,
            backend,
            certificate: None,
            available: true,
        }
    }

    /// Sets the certificate presented for this hostname.
    pub fn with_certificate(mut self, certificate: CertName) -> Self {
        self.certificate = Some(certificate);
        self
    }
}

/// Per-client-address limits (SPEC §10.4), applied to every request the edge receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Sustained requests per second per client address (`limit_req_zone ... rate=`).
    pub rate_per_second: u32,
    /// Requests above the rate that are still served at once (`limit_req ... burst= nodelay`).
    pub burst: u32,
    /// Concurrent connections per client address (`limit_conn`).
    pub connections_per_ip: u32,
}

impl Default for RateLimits {
    /// 10 requests/s, burst 20, 10 connections per address.
    fn default() -> Self {
        Self {
            rate_per_second: 10,
            burst: 20,
            connections_per_ip: 10,
        }
    }
}

/// Where nginx listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// The address to bind; `None` binds every IPv4 address (`listen 80;`).
    pub address: Option<IpAddr>,
    /// Plain HTTP port: ACME HTTP-01 challenges, `/health`, redirect to HTTPS.
    pub http_port: u16,
    /// HTTPS port (HTTP/2 enabled).
    pub https_port: u16,
}

impl Default for Listen {
    /// Ports 80 and 443 on every IPv4 address.
    fn default() -> Self {
        Self {
            address: None,
            http_port: 80,
            https_port: 443,
        }
    }
}

/// Everything one edge serves: the input of rendering.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeSite {
    /// The routes, in any order; at most one per hostname.
    pub routes: Vec<Route>,
    /// Per-client limits.
    pub rate_limits: RateLimits,
    /// Listening address and ports.
    pub listen: Listen,
    /// The certificate presented for SNI that matches no route, or no SNI at all.
    pub fallback_certificate: CertName,
}

impl EdgeSite {
    /// A site with the given routes and default settings.
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes,
            ..Self::default()
        }
    }

    /// Every certificate name the rendered configuration refers to: the fallback and each
    /// route's, sorted, without repeats.
    pub fn certificate_names(&self) -> Vec<&CertName> {
        let mut names: Vec<&CertName> = std::iter::once(&self.fallback_certificate)
            .chain(self.routes.iter().filter_map(|r| r.certificate.as_ref()))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_names() {
        for good in ["fallback", "app.hoge.com", "_.fuga.com", "A-1_b.c"] {
            assert_eq!(CertName::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "", ".hidden", "..", "-x", "a/b", "a b", "a\"b", "$x", "a;b", "é",
        ] {
            let err = CertName::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(CertName::parse(&"a".repeat(252)).is_err());
        assert!(CertName::parse(&"a".repeat(251)).is_ok());
    }

    #[test]
    fn cert_name_for_any_hostname_is_valid() {
        let long = vec!["a".repeat(63); 4].join(".");
        assert_eq!(long.len(), 255);
        let long = &long[2..];
        for h in ["*.fuga.com", "app.hoge.com", "xn--wgv71a.jp", long] {
            let name = CertName::for_hostname(&Hostname::parse(h).unwrap());
            assert_eq!(CertName::parse(name.as_str()).unwrap(), name);
        }
    }
}
