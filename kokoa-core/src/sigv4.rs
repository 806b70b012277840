//! AWS Signature Version 4: the `Authorization` header that AWS APIs (Route53, EC2, ...)
//! require on every request, computed as AWS documents it.
//!
//! The signature covers a *canonical request* — the method, the URI-encoded path, the
//! sorted and encoded query, the lowercase sorted headers with trimmed values, and the
//! SHA-256 of the body — under a key derived from the secret access key, the date, the
//! region and the service. [`sign`] takes the request's parts and returns the headers to
//! add; nothing here does I/O or reads the clock, so the same input always gives the same
//! signature.
//!
//! ```
//! use kokoa_core::{Timestamp, sigv4::{self, Credentials, Request}};
//!
//! // AWS's documented example: IAM ListUsers at 2015-08-30T12:36:00Z.
//! let credentials = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
//! let request = Request {
//!     method: "GET",
//!     host: "iam.amazonaws.com",
//!     path: "/",
//!     query: &[("Action", "ListUsers"), ("Version", "2010-05-08")],
//!     headers: &[("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
//!     ..Request::default()
//! };
//! let time = "2015-08-30T12:36:00Z".parse::<Timestamp>()?;
//! let signed = sigv4::sign(&credentials, "us-east-1", "iam", time, &request);
//! assert_eq!(signed.get("x-amz-date"), Some("20150830T123600Z"));
//! assert_eq!(
//!     signed.get("authorization"),
//!     Some(
//!         "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
//!          SignedHeaders=content-type;host;x-amz-date, \
//!          Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
//!     )
//! );
//! // The query goes on the wire exactly as it was signed.
//! assert_eq!(sigv4::canonical_query(request.query), "Action=ListUsers&Version=2010-05-08");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Timestamp;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// An AWS access key: its id, its secret, and the session token of temporary credentials.
///
/// `Debug` shows the key id only (it names the key, it does not unlock anything); the
/// secret and the token are wiped from memory when dropped.
///
/// ```
/// use kokoa_core::sigv4::Credentials;
/// let credentials = Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
///     .with_session_token("FwoGZXIvYXdzEXAMPLE");
/// let shown = format!("{credentials:?}");
/// assert!(shown.contains("AKIDEXAMPLE"));
/// assert!(!shown.contains("EXAMPLEKEY") && !shown.contains("FwoG"));
/// ```
#[derive(Clone)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Option<Zeroizing<String>>,
}

impl Credentials {
    /// A long-term access key (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: Zeroizing::new(secret_access_key.into()),
            session_token: None,
        }
    }

    /// Adds the session token of temporary credentials (`AWS_SESSION_TOKEN`), sent as
    /// `X-Amz-Security-Token`.
    pub fn with_session_token(mut self, session_token: impl Into<String>) -> Self {
        self.session_token = Some(Zeroizing::new(session_token.into()));
        self
    }

    /// The access key id, e.g. `AKIDEXAMPLE`.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &format_args!("<redacted>"))
            .field(
                "session_token",
                &self
                    .session_token
                    .as_ref()
                    .map(|_| format_args!("<redacted>")),
            )
            .finish()
    }
}

/// The body of a request, or its SHA-256 when the body is not at hand (a stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// The body itself; empty for a request without one.
    Bytes(&'a [u8]),
    /// The SHA-256 of the body.
    Sha256([u8; 32]),
}

impl Default for Payload<'_> {
    fn default() -> Self {
        Self::Bytes(&[])
    }
}

/// The parts of a request that are signed.
///
/// `host`, `x-amz-date` and, when asked, `x-amz-content-sha256` are added by [`sign`]; do
/// not repeat them in `headers`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The `Host` header as sent: the host name, with `:port` when it is not the scheme's
    /// default.
    pub host: &'a str,
    /// The path as it goes on the wire, e.g. `/2013-04-01/hostedzone`. It is URI-encoded
    /// once more for the canonical request, as every service but S3 expects; an empty path
    /// is `/`.
    pub path: &'a str,
    /// The query parameters, decoded. Send them encoded as [`canonical_query`] does, so
    /// what travels is what was signed.
    pub query: &'a [(&'a str, &'a str)],
    /// Further headers to sign, e.g. `content-type`: any case, values trimmed and inner
    /// runs of spaces squeezed to one; a name given twice is signed as `a,b`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The body.
    pub payload: Payload<'a>,
    /// Also send and sign `x-amz-content-sha256` (S3 requires it; most services do not).
    pub content_sha256_header: bool,
}

/// The headers [`sign`] computed, to add to the request.
///
/// `Debug` shows the header names only: the session token is among the values.
#[derive(Clone)]
pub struct SignedHeaders(Vec<(&'static str, String)>);

impl SignedHeaders {
    /// `(name, value)` pairs, names in lowercase: `authorization`, `x-amz-date`, then
    /// `x-amz-content-sha256` and `x-amz-security-token` when they apply.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0.iter().map(|(name, value)| (*name, value.as_str()))
    }

    /// The value of header `name` (lowercase), if it was added.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

impl Drop for SignedHeaders {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (_, value) in &mut self.0 {
            value.zeroize();
        }
    }
}

/// Signs `request` for `service` in `region` (`us-east-1`, `route53`) at `time`, which must
/// be within five minutes of AWS's clock.
///
/// `region` and `service` go into the credential scope as given: they are the codes AWS
/// uses, of letters, digits and `-`.
pub fn sign(
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: Timestamp,
    request: &Request<'_>,
) -> SignedHeaders {
    let amz_date = amz_date(time);
    let payload_hash = match request.payload {
        Payload::Bytes(bytes) => hex::encode(Sha256::digest(bytes)),
        Payload::Sha256(hash) => hex::encode(hash),
    };
    let mut added: Vec<(&'static str, String)> = vec![("x-amz-date", amz_date.clone())];
    if request.content_sha256_header {
        added.push(("x-amz-content-sha256", payload_hash.clone()));
    }
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token", token.as_str().to_owned()));
    }
    let mut headers: Vec<(&str, &str)> = request.headers.to_vec();
    headers.push(("host", request.host));
    headers.extend(added.iter().map(|(n, v)| (*n, v.as_str())));
    let (canonical_headers, signed_headers) = canonical_headers(&headers);
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        request.method,
        canonical_path(request.path),
        canonical_query(request.query),
    );
    let scope = format!("{}/{region}/{service}/aws4_request", &amz_date[..8]);
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let key = signing_key(
        &credentials.secret_access_key,
        &amz_date[..8],
        region,
        service,
    );
    let signature = hex::encode(hmac(key.as_ref(), string_to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    );
    added.insert(0, ("authorization", authorization));
    SignedHeaders(added)
}

/// `time` as `X-Amz-Date` writes it: `20150830T123600Z`.
fn amz_date(time: Timestamp) -> String {
    time.to_string().replace(['-', ':'], "")
}

/// Percent-encodes `input` as SigV4 does: the unreserved characters `A-Z a-z 0-9 - _ . ~`
/// stay, every other byte of its UTF-8 becomes `%XX` in uppercase hex (a space is `%20`,
/// never `+`). `/` stays too when `keep_slash` (for paths).
///
/// ```
/// use kokoa_core::sigv4::uri_encode;
/// assert_eq!(uri_encode("a b/c~*", false), "a%20b%2Fc~%2A");
/// assert_eq!(uri_encode("/2013-04-01/hostedzone", true), "/2013-04-01/hostedzone");
/// ```
pub fn uri_encode(input: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for byte in input.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) || (keep_slash && byte == b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The canonical query string: every name and value [encoded](uri_encode), sorted by name
/// and then value, joined as `a=1&b=2`. It is also a valid query (and form body) to send.
///
/// ```
/// use kokoa_core::sigv4::canonical_query;
/// assert_eq!(canonical_query(&[("b", "2 3"), ("a", ""), ("b", "1")]), "a=&b=1&b=2%203");
/// ```
pub fn canonical_query(pairs: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .map(|(name, value)| (uri_encode(name, false), uri_encode(value, false)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        uri_encode(path, true)
    }
}

/// The canonical headers block (one `name:value\n` per name) and the signed header list
/// (`a;b;c`). Names are lowercased and sorted; a name given twice keeps its values in the
/// order given, joined by `,`.
fn canonical_headers(headers: &[(&str, &str)]) -> (String, String) {
    let mut lowered: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), squeeze(value)))
        .collect();
    // Stable: values of one name stay in the order given.
    lowered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut block = String::new();
    let mut names: Vec<&str> = Vec::new();
    for (name, value) in &lowered {
        if names.last() == Some(&name.as_str()) {
            block.pop();
            block.push(',');
        } else {
            names.push(name);
            block.push_str(name);
            block.push(':');
        }
        block.push_str(value);
        block.push('\n');
    }
    (block, names.join(";"))
}

/// A header value trimmed, with each run of spaces inside replaced by one space.
fn squeeze(value: &str) -> String {
    value
        .split(' ')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// The key for `date` (`YYYYMMDD`), `region` and `service`: HMAC-SHA256 chained over
/// `"AWS4" + secret`, the date, the region, the service and `aws4_request`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Zeroizing<[u8; 32]> {
    let first = Zeroizing::new(format!("AWS4{secret}"));
    let date_key = hmac(first.as_bytes(), date.as_bytes());
    let region_key = hmac(date_key.as_ref(), region.as_bytes());
    let service_key = hmac(region_key.as_ref(), service.as_bytes());
    hmac(service_key.as_ref(), b"aws4_request")
}

#[cfg(test)]
mod tests;
