//! Where a peer is reached: `host:port`.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU16,
    str::FromStr,
};

use kokoa_core::Hostname;

use crate::error::{Error, cut};

/// The host part of an [`Endpoint`]: an IP address or a DNS name that `wg` resolves when the
/// configuration is loaded.
///
/// A name is never a wildcard and never has an all-numeric last label (no top-level domain
/// is numeric), so a name can never be read back as an IP address.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Host(HostKind);

#[derive(Clone, PartialEq, Eq, Hash)]
enum HostKind {
    Ip(IpAddr),
    Name(Hostname),
}

impl Host {
    /// Parses an IPv4 or IPv6 address (no brackets) or a host name.
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text.parse::<IpAddr>() {
            Ok(ip) => Ok(Self::from(ip)),
            Err(_) => Self::try_from(Hostname::parse(text)?),
        }
    }

    /// The address, when the host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match &self.0 {
            HostKind::Ip(ip) => Some(*ip),
            HostKind::Name(_) => None,
        }
    }

    /// The name, when the host is one.
    pub fn name(&self) -> Option<&Hostname> {
        match &self.0 {
            HostKind::Ip(_) => None,
            HostKind::Name(name) => Some(name),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        Self(HostKind::Ip(ip))
    }
}

impl TryFrom<Hostname> for Host {
    type Error = Error;
    fn try_from(name: Hostname) -> Result<Self, Error> {
        let fail = |problem: &str| Error::InvalidEndpoint {
            input: name.to_string(),
            problem: problem.to_owned(),
        };
        if name.is_wildcard() {
            return Err(fail("a wildcard name cannot be dialled"));
        }
        let last = name.as_str().rsplit('.').next().unwrap_or_default();
        if last.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(
                "the last label is all digits; write an IP address in its plain form (no leading zeros)",
            ));
        }
        Ok(Self(HostKind::Name(name)))
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            HostKind::Ip(ip) => ip.fmt(f),
            HostKind::Name(name) => name.fmt(f),
        }
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Host({self})")
    }
}

impl FromStr for Host {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

/// A peer's `Endpoint`: `203.0.113.10:51820`, `[2001:db8::1]:51820` or
/// `edge1.example.net:51820`.
///
/// ```
/// use kokoa_wg::Endpoint;
///
/// let e: Endpoint = "[2001:db8::1]:51821".parse()?;
/// assert_eq!(e.port.get(), 51821);
/// assert_eq!(e.to_string(), "[2001:db8::1]:51821");
/// assert!("2001:db8::1:51821".parse::<Endpoint>().is_err()); // IPv6 needs brackets
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Address or name.
    pub host: Host,
    /// UDP port.
    pub port: NonZeroU16,
}

impl Endpoint {
    /// The endpoint `host:port`.
    pub fn new(host: Host, port: NonZeroU16) -> Self {
        Self { host, port }
    }

    /// Parses `host:port`, with an IPv6 address in brackets.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let fail = |problem: String| Error::InvalidEndpoint {
            input: cut(text, 300),
            problem,
        };
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (ip, port) = rest
                    .split_once("]:")
                    .ok_or_else(|| fail("an IPv6 endpoint is written [address]:port".to_owned()))?;
                let ip: Ipv6Addr = ip
                    .parse()
                    .map_err(|_| fail(format!("{ip:?} is not an IPv6 address")))?;
                (Host::from(IpAddr::V6(ip)), port)
            }
            None => {
                let (host, port) = text
                    .rsplit_once(':')
                    .ok_or_else(|| fail("the \":port\" is missing".to_owned()))?;
                if host.contains(':') {
                    return Err(fail(
                        "an IPv6 address needs brackets: [address]:port".to_owned(),
                    ));
                }
                (Host::parse(host)?, port)
            }
        };
        match port.parse::<NonZeroU16>() {
            Ok(port) => Ok(Self { host, port }),
            Err(_) => Err(fail(format!(
                "port {port:?} is not a number from 1 to 65535"
            ))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.ip() {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl FromStr for Endpoint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The two validators agree: every host name `kokoa_core` accepts (but a wildcard)
        /// can be dialled, and reads back as itself, never as an address.
        #[test]
        fn every_hostname_dials(input in "(\\*\\.)?[a-z0-9xn-]{1,12}(\\.[a-z0-9-]{1,8}){1,3}") {
            if let Ok(name) = Hostname::parse(&input) {
                let wildcard = name.is_wildcard();
                match Host::try_from(name.clone()) {
                    Ok(host) => {
                        prop_assert!(!wildcard);
                        prop_assert_eq!(host.to_string().parse::<Host>().unwrap(), host);
                        prop_assert!(name.as_str().parse::<IpAddr>().is_err());
                    }
                    Err(e) => prop_assert!(wildcard, "{} refused: {}", name, e),
                }
            }
        }
    }

    #[test]
    fn parses_every_form() {
        for (text, shown) in [
            ("203.0.113.10:51820", "203.0.113.10:51820"),
            ("[2001:db8::1]:1", "[2001:db8::1]:1"),
            ("[::ffff:1.2.3.4]:65535", "[::ffff:1.2.3.4]:65535"),
            ("Edge1.Example.NET:51821", "edge1.example.net:51821"),
            #[cfg(feature = "idna")]
            ("bücher.example:9", "xn--bcher-kva.example:9"),
        ] {
            let e = Endpoint::parse(text).unwrap();
            assert_eq!(e.to_string(), shown, "{text}");
            assert_eq!(Endpoint::parse(shown).unwrap(), e);
        }
        let e = Endpoint::parse("edge1.example.net:7").unwrap();
        assert_eq!(
            e.host.name().map(Hostname::as_str),
            Some("edge1.example.net")
        );
        assert_eq!(e.host.ip(), None);
        #[cfg(not(feature = "idna"))]
        assert!(
            Endpoint::parse("bücher.example:9")
                .unwrap_err()
                .to_string()
                .contains("`idna` feature")
        );
    }

    #[test]
    fn rejects_with_the_reason() {
        for (text, says) in [
            ("203.0.113.10", "port"),
            ("203.0.113.10:0", "port \"0\""),
            ("203.0.113.10:65536", "1 to 65535"),
            ("edge.example.net:", "port \"\""),
            ("2001:db8::1:51820", "brackets"),
            ("[2001:db8::1]51820", "[address]:port"),
            ("[1.2.3.4]:5", "not an IPv6"),
            ("*.example.net:5", "wildcard"),
            ("010.1.2.3:5", "all digits"),
            ("localhost:5", "two labels"),
            ("a b.example:5", "' '"),
            ("edge.example.net:5\nPostUp = x", "port"),
        ] {
            let err = Endpoint::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
    }
}
