//! Small validated values: names, ports, e-mail addresses, health check paths, WireGuard keys.
//!
//! Each one is checked once, where it enters (API, JSON, database), so code further on can
//! write it into an nginx or WireGuard file without quoting worries.

use std::{fmt, num::NonZeroU16, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Hostname};

/// Implements `Display`, `FromStr`, `AsRef<str>` and string serde for a `String` newtype
/// with a `parse` function.
macro_rules! string_value {
    ($name:ident) => {
        impl $name {
            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Keeps error messages short when someone sends a megabyte of text.
fn cut(input: &str) -> String {
    input.chars().take(100).collect()
}

/// A short lowercase name: an origin (`home-server`), an edge node (`edge-sgp1-01`), a
/// provider (`digitalocean`), a region (`sgp1`), a certificate.
///
/// Rule: 1–63 characters of `a-z`, `0-9` and `-`, not starting or ending with `-` — the
/// rule of a DNS label, so a name is safe in a host name, a file name, a WireGuard interface
/// suffix and a log line alike. Upper case is rejected rather than folded so that what the
/// user typed is what they see everywhere.
///
/// ```
/// use kokoa_core::Name;
/// assert_eq!(Name::parse("edge-sgp1-01")?.as_str(), "edge-sgp1-01");
/// assert!(Name::parse("Home Server").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Validates a name.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let reason = if input.is_empty() {
            "it is empty"
        } else if input.len() > 63 {
            "it is longer than 63 characters"
        } else if !input
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            "it holds a character other than a-z, 0-9 and '-'"
        } else if input.starts_with('-') || input.ends_with('-') {
            "it starts or ends with '-'"
        } else {
            return Ok(Self(input.to_owned()));
        };
        Err(Error::InvalidName {
            input: cut(input),
            reason,
        })
    }
}

string_value!(Name);

/// A TCP or UDP port, 1–65535.
///
/// ```
/// use kokoa_core::Port;
/// assert_eq!(Port::new(8080)?.get(), 8080);
/// assert!(Port::new(0).is_err());
/// assert!(Port::try_from(70_000_i64).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(NonZeroU16);

impl Port {
    /// A port; 0 is an error.
    pub fn new(value: u16) -> Result<Self, Error> {
        NonZeroU16::new(value).map(Self).ok_or(Error::InvalidPort {
            value: i64::from(value),
        })
    }

    /// The port number.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

/// For numbers that come from a database column or JSON, where any integer can appear.
impl TryFrom<i64> for Port {
    type Error = Error;
    fn try_from(value: i64) -> Result<Self, Error> {
        u16::try_from(value)
            .map_err(|_| Error::InvalidPort { value })
            .and_then(Self::new)
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Port({})", self.0)
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.get())
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::try_from(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An e-mail address, normalised to lower case (`Admin@Example.COM` and
/// `admin@example.com` are one user).
///
/// Deliberately narrower than RFC 5322: the local part is 1–64 characters of `a-z`, `0-9`
/// and `.` `_` `%` `+` `-`, without a leading, trailing or doubled dot; the domain is a
/// [`Hostname`] (internationalised domains become punycode) without a wildcard. That covers
/// real addresses while keeping quotes and other characters that need escaping out of
/// certificate account contacts and logs.
///
/// ```
/// use kokoa_core::Email;
/// assert_eq!(Email::parse("Admin@Example.COM")?.as_str(), "admin@example.com");
/// assert!(Email::parse("admin@localhost").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Email(String);

impl Email {
    /// Validates and normalises an address.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let fail = |reason: String| Error::InvalidEmail {
            input: cut(input),
            reason,
        };
        if input.len() > 254 {
            return Err(fail("it is longer than 254 characters".into()));
        }
        let Some((local, domain)) = input.split_once('@') else {
            return Err(fail("it has no '@'".into()));
        };
        let local = local.to_ascii_lowercase();
        let local_ok = (1..=64).contains(&local.len())
            && local
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._%+-".contains(&b))
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..");
        if !local_ok {
            return Err(fail(format!(
                "the part before '@' ({local:?}) must be 1-64 characters of a-z, 0-9 and . _ % + - \
                 with no leading, trailing or doubled dot"
            )));
        }
        let domain = Hostname::parse(domain).map_err(|e| fail(e.to_string()))?;
        if domain.is_wildcard() {
            return Err(fail("the domain must not be a wildcard".into()));
        }
        Ok(Self(format!("{local}@{domain}")))
    }
}

string_value!(Email);

/// The path a health check requests from a service, e.g. `/api/health`.
///
/// Starts with `/`, at most 200 characters of `A-Z`, `a-z`, `0-9` and `-` `.` `_` `~` `/`
/// `?` `=` `&`: enough for a path with a simple query, and inert in an nginx file or a
/// request line (no spaces, quotes, `;`, `$`, braces, `%`-escapes or `#`).
///
/// ```
/// use kokoa_core::HealthCheckPath;
/// assert!(HealthCheckPath::parse("/api/health?deep=1").is_ok());
/// assert!(HealthCheckPath::parse("health").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HealthCheckPath(String);

impl HealthCheckPath {
    /// Validates a path.
    pub fn parse(input: &str) -> Result<Self, Error> {
        let ok = input.starts_with('/')
            && input.len() <= 200
            && input
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~/?=&".contains(&b));
        if ok {
            Ok(Self(input.to_owned()))
        } else {
            Err(Error::InvalidHealthCheckPath { input: cut(input) })
        }
    }
}

string_value!(HealthCheckPath);

/// Whether `s` is the standard base64 form of 32 bytes, as `wg` prints keys: 43 characters
/// of the base64 alphabet and `=`, the last of the 43 carrying only 4 bits.
fn is_wg_key(s: &str) -> bool {
    let b = s.as_bytes();
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/';
    b.len() == 44
        && b[43] == b'='
        && b[..43].iter().all(alphabet)
        // The 43rd character encodes the last 4 bits of byte 31 and 2 padding bits, which
        // must be zero: its alphabet index is a multiple of 4.
        && b"AEIMQUYcgkosw048".contains(&b[42])
}

/// A WireGuard public key in the base64 form `wg` uses (44 characters).
///
/// ```
/// use kokoa_core::WgPublicKey;
/// assert!(WgPublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=").is_ok());
/// assert!(WgPublicKey::parse("not a key").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WgPublicKey(String);

impl WgPublicKey {
    /// Validates a key.
    pub fn parse(input: &str) -> Result<Self, Error> {
        if is_wg_key(input) {
            Ok(Self(input.to_owned()))
        } else {
            Err(Error::InvalidPublicKey { input: cut(input) })
        }
    }
}

string_value!(WgPublicKey);

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

    #[test]
    fn names() {
        for good in ["a", "home-server", "edge-sgp1-01", "0", &"a".repeat(63)] {
            assert_eq!(Name::parse(good).unwrap().as_str(), good);
        }
        for (bad, why) in [
            ("", "empty"),
            ("Home", "other than"),
            ("a_b", "other than"),
            ("a b", "other than"),
            ("-a", "starts or ends"),
            ("a-", "starts or ends"),
            (&"a".repeat(64), "63"),
        ] {
            let err = Name::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{bad:?}")) && err.contains(why),
                "{err}"
            );
        }
        assert!(serde_json::from_str::<Name>("\"a;b\"").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(Port::new(65535).unwrap().get(), 65535);
        for bad in [0, -1, 65536, i64::MAX] {
            let err = Port::try_from(bad).unwrap_err().to_string();
            assert!(err.contains(&bad.to_string()), "{err}");
        }
        assert_eq!(
            serde_json::to_string(&Port::new(8080).unwrap()).unwrap(),
            "8080"
        );
        let err = serde_json::from_str::<Port>("70000")
            .unwrap_err()
            .to_string();
        assert!(err.contains("70000"), "{err}");
        assert!(serde_json::from_str::<Port>("0").is_err());
    }

    #[test]
    fn emails() {
        #[cfg(feature = "idna")]
        assert_eq!(
            Email::parse("Ops+Kokoa@Bücher.Example").unwrap().as_str(),
            "ops+kokoa@xn--bcher-kva.example"
        );
        for bad in [
            "",
            "admin",
            "@example.com",
            "a@b@example.com",
            ".a@example.com",
            "a..b@example.com",
            "a\"b@example.com",
            "a b@example.com",
            "a@*.example.com",
            "a@example",
        ] {
            let err = Email::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn health_check_paths() {
        assert!(HealthCheckPath::parse("/").is_ok());
        for bad in [
            "", "health", "/a b", "/a;b", "/${x}", "/a\"", "/a#b", "/%2e",
        ] {
            let err = HealthCheckPath::parse(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn keys() {
        assert!(WgPublicKey::parse(KEY).is_ok());
        // 'B' leaves non-zero padding bits: not what `wg` would ever print.
        let bad_tail = format!("{}B=", &KEY[..42]);
        for bad in [
            "",
            &KEY[..43],
            &format!("{KEY}="),
            &bad_tail,
            &KEY.replace('+', "-"),
        ] {
            assert!(WgPublicKey::parse(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn accepted_values_are_inert(input in "\\PC{0,70}") {
            let special = |s: &str| s.chars().any(|c| c.is_whitespace() || c.is_control()
                || matches!(c, '"' | '\'' | ';' | '{' | '}' | '$' | '\\' | '#'));
            for accepted in [
                Name::parse(&input).map(|v| v.to_string()),
                Email::parse(&input).map(|v| v.to_string()),
                HealthCheckPath::parse(&input).map(|v| v.to_string()),
            ].into_iter().flatten() {
                prop_assert!(!special(&accepted), "{:?}", accepted);
            }
        }

        #[test]
        fn every_32_byte_key_is_accepted(bytes in any::<[u8; 32]>()) {
            // Standard base64, written out here so the test does not trust the checker.
            const ALPHABET: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut text = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
                for i in 0..=chunk.len() {
                    text.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                }
            }
            text.push('=');
            prop_assert!(WgPublicKey::parse(&text).is_ok(), "{}", text);
        }
    }
}
