//! The configuration an edge pulls from the control plane (SPEC §4), and its hash; the
//! origin's ([`OriginConfig`]) is in the same form.
//!
//! The control plane fills an [`EdgeContent`] and calls [`EdgeConfig::new`], which checks
//! that the parts agree, puts lists in a canonical order and computes `config_hash`. The
//! edge deserialises the JSON (which validates every value again) and calls
//! [`EdgeConfig::verify_hash`] before applying anything; an unchanged hash means nothing to
//! apply.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    num::NonZeroU32,
    str::FromStr,
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer, ser::SerializeMap as _};
use sha2::{Digest, Sha256};

use crate::{Error, Hostname, Name, OriginId, Port, WgPublicKey};

/// A SHA-256 digest in lowercase hex: the `config_hash` of a payload, or the version of a
/// certificate's content.
///
/// ```
/// use kokoa_core::ContentHash;
/// let h = ContentHash::of(b"abc");
/// assert_eq!(h.as_str(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
/// assert_eq!(ContentHash::parse(h.as_str())?, h);
/// # Ok::<(), kokoa_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash(String);

impl ContentHash {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// Validates a digest given as text.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let ok = input.len() == 64
            && input
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(Error::InvalidContentHash {
                input: input.chars().take(100).collect(),
            })
        }
    }

    /// The 64 hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.0)
    }
}

impl FromStr for ContentHash {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl Serialize for ContentHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One WireGuard interface on the edge, towards one origin (SPEC §10.5: one interface per
/// origin, each with its own listen port). Every interface uses the edge's own key (see
/// [`EdgeContent::wireguard_public_key`]): no private key travels in a payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tunnel {
    /// The origin at the other end.
    pub origin_id: OriginId,
    /// The origin's name, for interface names and logs.
    pub origin_name: Name,
    /// The edge's own address in the origin's subnet, with its prefix: `10.0.1.10/24`.
    pub address: Ipv4Net,
    /// The origin's tunnel address (`.1`), the only address its peer entry allows.
    pub origin_ip: Ipv4Addr,
    /// The origin's public key.
    pub origin_public_key: WgPublicKey,
    /// The UDP port the interface listens on; origins dial in here.
    pub listen_port: Port,
    /// Where the origin listens, in the mode where the edge dials the origin; none when the
    /// origin dials out to the edge (works behind NAT).
    pub origin_endpoint: Option<SocketAddr>,
    /// The origin's application check the edge runs through this tunnel; none when the
    /// origin offers none (left out of the JSON then, so older payloads keep their hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_check: Option<ApplicationCheck>,
    /// The origin's next public key while the origin's keys rotate (SPEC §10.3): the edge
    /// keeps it as a second peer without addresses, and it takes over from
    /// `origin_public_key` at its first handshake. None otherwise (left out of the JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_next_public_key: Option<WgPublicKey>,
}

/// The origin's application check (SPEC §8.4): `GET http://<origin_ip>:<port>/health`
/// through the tunnel, expecting 200.
///
/// The edge reports the check's state in its heartbeats after `failures` failed or
/// `recoveries` passed checks in a row; the control plane then serves the origin's routes
/// as unavailable (503) when every edge that reaches it sees the check failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationCheck {
    /// The port the origin answers `/health` on, over the tunnel.
    pub port: Port,
    /// Seconds between checks (SPEC default 30).
    pub interval_secs: NonZeroU32,
    /// Seconds one check may take (SPEC default 5).
    pub timeout_secs: NonZeroU32,
    /// Failed checks in a row before the application is reported down (SPEC default 3).
    pub failures: NonZeroU32,
    /// Passed checks in a row before it is reported up again (SPEC default 3).
    pub recoveries: NonZeroU32,
}

/// A certificate the edge must install. The PEM travels separately; `sha256` tells the
/// edge whether the copy it has is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRef {
    /// Name, unique in the payload; also the file name stem on the edge.
    pub name: Name,
    /// The names the certificate covers.
    pub hostnames: BTreeSet<Hostname>,
    /// Digest of the certificate chain PEM.
    pub sha256: ContentHash,
}

/// Per client address limits the edge enforces (SPEC §10.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    /// Sustained requests per second (default 10).
    pub requests_per_second: NonZeroU32,
    /// Requests allowed above the rate at once (default 20).
    pub burst: u32,
    /// Open connections (default 10).
    pub connections_per_address: NonZeroU32,
}

impl Default for RateLimits {
    /// SPEC §10.4: 10 requests/s, burst 20, 10 connections per address.
    fn default() -> Self {
        const TEN: NonZeroU32 = NonZeroU32::new(10).unwrap();
        Self {
            requests_per_second: TEN,
            burst: 20,
            connections_per_address: TEN,
        }
    }
}

/// `routes` as serde writes it (`"a.example": "10.0.1.1:8080"`), with each address written
/// straight into a small buffer: through `Display` the addresses of a payload of thousands of
/// routes were a sixth of the time a control plane spent serving it.
fn routes_out<S: Serializer>(
    routes: &BTreeMap<Hostname, SocketAddrV4>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(routes.len()))?;
    for (hostname, addr) in routes {
        let mut buf = [0u8; 21];
        map.serialize_entry(hostname, socket_text(addr, &mut buf))?;
    }
    map.end()
}

/// `addr` as `a.b.c.d:port`, written into `buf` (21 bytes hold the longest).
pub(crate) fn socket_text<'a>(addr: &SocketAddrV4, buf: &'a mut [u8; 21]) -> &'a str {
    fn decimal(mut n: u32, out: &mut [u8], at: &mut usize) {
        let mut digits = [0u8; 5];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for d in digits[..len].iter().rev() {
            out[*at] = *d;
            *at += 1;
        }
    }
    let mut at = 0;
    for (i, octet) in addr.ip().octets().into_iter().enumerate() {
        if i > 0 {
            buf[at] = b'.';
            at += 1;
        }
        decimal(u32::from(octet), buf, &mut at);
    }
    buf[at] = b':';
    at += 1;
    decimal(u32::from(addr.port()), buf, &mut at);
    // Only ASCII digits, dots and a colon were written.
    std::str::from_utf8(&buf[..at]).unwrap_or_default()
}

/// Everything in an edge configuration except its hash.
///
/// Missing parts deserialise as empty (and rate limits as the defaults), so the minimal
/// SPEC §4 payload of `config_hash`, `routes` and `hostnames` is accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeContent {
    /// Host name → origin tunnel address and service port.
    #[serde(serialize_with = "routes_out")]
    pub routes: BTreeMap<Hostname, SocketAddrV4>,
    /// One interface per origin.
    pub tunnels: Vec<Tunnel>,
    /// Certificates to install.
    pub certificates: Vec<CertificateRef>,
    /// Request and connection limits.
    pub rate_limits: RateLimits,
    /// Routed host names whose origin or service is down: the edge answers 503 for them.
    pub unavailable: BTreeSet<Hostname>,
    /// Pending ACME HTTP-01 responses, token → key authorization: the edge serves each as
    /// `/.well-known/acme-challenge/<token>` on port 80 while the order runs. Public by
    /// design (the CA fetches them over plain HTTP). Left out of the JSON when empty, so
    /// payloads without any keep the hash they had before this part existed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub acme_challenges: BTreeMap<String, String>,
    /// The public half of the key the edge's interfaces use, which the edge made and holds
    /// (SPEC §10.3: private keys never leave their node). None until the edge registered
    /// one: it then uses the key it has and registers that. Left out of the JSON when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<WgPublicKey>,
    /// Set while a key rotation waits for the edge's next key: the edge makes a new key
    /// pair, keeps the private half and registers the public one. Left out of the JSON when
    /// false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub wireguard_key_requested: bool,
}

/// Longest ACME token or account key thumbprint accepted (pebble and Let's Encrypt send
/// 43 characters).
const MAX_ACME_PART: usize = 128;

fn is_base64url(text: &str) -> bool {
    (1..=MAX_ACME_PART).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks an HTTP-01 response: the token becomes a file name on the edge, so it must be
/// base64url (RFC 8555 §8.1); the key authorization is `<token>.<base64url thumbprint>`.
fn check_challenge(token: &str, key_authorization: &str) -> Result<(), String> {
    if !is_base64url(token) {
        return Err(format!(
            "ACME token {:?} is not 1-{MAX_ACME_PART} base64url characters",
            token.chars().take(MAX_ACME_PART).collect::<String>()
        ));
    }
    let thumbprint = key_authorization
        .strip_prefix(token)
        .and_then(|rest| rest.strip_prefix('.'));
    if !thumbprint.is_some_and(is_base64url) {
        return Err(format!(
            "the key authorization of ACME token {token} is not \"{token}.<base64url thumbprint>\""
        ));
    }
    Ok(())
}

impl EdgeContent {
    /// Checks that the parts agree and sorts the lists, so equal content always serialises
    /// to the same bytes whatever order it was gathered in.
    fn canonicalise(&mut self) -> Result<(), Error> {
        let fail = |msg: String| Err(Error::InvalidEdgeConfig(msg));
        if let Some(h) = self
            .unavailable
            .iter()
            .find(|h| !self.routes.contains_key(*h))
        {
            return fail(format!("{h} is marked unavailable but has no route"));
        }
        for (token, key_authorization) in &self.acme_challenges {
            check_challenge(token, key_authorization).map_err(Error::InvalidEdgeConfig)?;
        }
        self.tunnels.sort_by(|a, b| a.origin_id.cmp(&b.origin_id));
        self.certificates.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(w) = self
            .tunnels
            .windows(2)
            .find(|w| w[0].origin_id == w[1].origin_id)
        {
            return fail(format!("two tunnels to origin {}", w[0].origin_id));
        }
        if let Some(w) = self
            .certificates
            .windows(2)
            .find(|w| w[0].name == w[1].name)
        {
            return fail(format!("two certificates named {}", w[0].name));
        }
        let mut ports = HashSet::new();
        for (i, t) in self.tunnels.iter().enumerate() {
            let net = t.address.trunc();
            let host = t.address.addr();
            if host == net.network() || host == net.broadcast() {
                return fail(format!(
                    "tunnel to {}: {} is not a host address",
                    t.origin_id, t.address
                ));
            }
            if !net.contains(&t.origin_ip) || t.origin_ip == host {
                return fail(format!(
                    "tunnel to {}: origin address {} must be another address in {net}",
                    t.origin_id, t.origin_ip
                ));
            }
            if let Some(endpoint) = t.origin_endpoint.filter(|e| e.port() == 0) {
                return fail(format!(
                    "tunnel to {}: origin endpoint {endpoint} has no port",
                    t.origin_id
                ));
            }
            if !ports.insert(t.listen_port) {
                return fail(format!("listen port {} is used twice", t.listen_port));
            }
            if let Some(other) = self.tunnels[..i]
                .iter()
                .find(|o| o.address.contains(&net.network()) || net.contains(&o.address.addr()))
            {
                return fail(format!(
                    "tunnels to {} and {} have overlapping networks {} and {}",
                    other.origin_id, t.origin_id, other.address, t.address
                ));
            }
        }
        Ok(())
    }

    fn hash(&self) -> ContentHash {
        // Cannot fail: every map key serialises as a string and no type has a fallible
        // Serialize.
        let bytes = serde_json::to_vec(self).expect("edge content serialises to JSON");
        ContentHash::of(&bytes)
    }
}

/// The edge configuration payload: `config_hash` plus an [`EdgeContent`].
///
/// Serialised as in SPEC §4, with the extra parts alongside:
/// `{"config_hash": "…", "hostnames": ["app.hoge.com"], "routes": {"app.hoge.com":
/// "10.0.1.1:8080"}, "tunnels": […], "certificates": […], "rate_limits": {…},
/// "unavailable": […]}`. `hostnames` is the sorted list of routed names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    config_hash: ContentHash,
    content: EdgeContent,
}

impl EdgeConfig {
    /// Checks and canonicalises `content` and computes its hash.
    ///
    /// Errors: a name marked unavailable without a route, two tunnels to one origin, two
    /// certificates with one name, a tunnel whose addresses do not fit its network, two
    /// tunnels on one listen port or with overlapping networks.
    pub fn new(mut content: EdgeContent) -> Result<Self, Error> {
        content.canonicalise()?;
        Ok(Self {
            config_hash: content.hash(),
            content,
        })
    }

    /// As [`new`](Self::new), with the configuration as sent to edges: the bytes
    /// `serde_json::to_vec` of it gives, made from the ones the hash is computed over
    /// rather than by serialising the content a second time (a server answering many
    /// edges does this for each).
    pub fn new_with_json(mut content: EdgeContent) -> Result<(Self, Vec<u8>), Error> {
        content.canonicalise()?;
        // Cannot fail: see `EdgeContent::hash`.
        let inner = serde_json::to_vec(&content).expect("edge content serialises to JSON");
        let config_hash = ContentHash::of(&inner);
        let hostnames: Vec<&Hostname> = content.routes.keys().collect();
        let mut json = Vec::with_capacity(inner.len() + 96 + 24 * hostnames.len());
        json.extend_from_slice(b"{\"config_hash\":");
        serde_json::to_writer(&mut json, &config_hash).expect("a hash serialises");
        json.extend_from_slice(b",\"hostnames\":");
        serde_json::to_writer(&mut json, &hostnames).expect("host names serialise");
        // The content's own fields follow, as the flattened wire form has them.
        match inner.strip_prefix(b"{") {
            Some(b"}") | None => json.push(b'}'),
            Some(fields) => {
                json.push(b',');
                json.extend_from_slice(fields);
            }
        }
        Ok((
            Self {
                config_hash,
                content,
            },
            json,
        ))
    }

    /// The hash clients compare to see whether anything changed.
    pub fn config_hash(&self) -> &ContentHash {
        &self.config_hash
    }

    /// The content.
    pub fn content(&self) -> &EdgeContent {
        &self.content
    }

    /// Takes the content out, e.g. to change it and build a new configuration.
    pub fn into_content(self) -> EdgeContent {
        self.content
    }

    /// The host names the edge serves, sorted.
    pub fn hostnames(&self) -> impl Iterator<Item = &Hostname> {
        self.content.routes.keys()
    }

    /// Checks that `config_hash` matches the content: run on the edge before applying a
    /// received payload.
    pub fn verify_hash(&self) -> Result<(), Error> {
        let computed = self.content.hash();
        if computed == self.config_hash {
            Ok(())
        } else {
            Err(Error::ConfigHashMismatch {
                stated: self.config_hash.to_string(),
                computed: computed.to_string(),
            })
        }
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    config_hash: &'a ContentHash,
    hostnames: Vec<&'a Hostname>,
    #[serde(flatten)]
    content: &'a EdgeContent,
}

#[derive(Deserialize)]
struct WireIn {
    config_hash: ContentHash,
    hostnames: BTreeSet<Hostname>,
    #[serde(flatten)]
    content: EdgeContent,
}

impl Serialize for EdgeConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireOut {
            config_hash: &self.config_hash,
            hostnames: self.hostnames().collect(),
            content: &self.content,
        }
        .serialize(s)
    }
}

/// Validates every value and the agreement between the parts; the hash is checked
/// separately by [`EdgeConfig::verify_hash`].
impl<'de> Deserialize<'de> for EdgeConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let WireIn {
            config_hash,
            hostnames,
            mut content,
        } = WireIn::deserialize(d)?;
        if !hostnames.iter().eq(content.routes.keys()) {
            return Err(serde::de::Error::custom(Error::InvalidEdgeConfig(
                "\"hostnames\" differs from the names in \"routes\"".into(),
            )));
        }
        content.canonicalise().map_err(serde::de::Error::custom)?;
        Ok(Self {
            config_hash,
            content,
        })
    }
}

mod origin;

pub use origin::{KeyChangeEntry, OriginConfig, OriginRoute, ServiceEntry};

#[cfg(test)]
mod tests;
