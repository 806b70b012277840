//! Typed identifiers, so an origin id can never be passed where a route id is expected.

use std::{fmt, str::FromStr};

use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Longest id accepted from outside. Generated ids are 36 characters.
const MAX_LEN: usize = 64;

/// Checks the rule every id follows: 1–64 characters of `A-Z`, `a-z`, `0-9`, `_` and `-`.
///
/// Ids arrive in URL paths and end up in file and interface names, so the rule keeps out
/// everything that would need escaping there.
fn check(kind: &'static str, input: &str) -> Result<(), Error> {
    let ok = (1..=MAX_LEN).contains(&input.len())
        && input
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId {
            kind,
            input: input.chars().take(100).collect(),
        })
    }
}

/// A fresh id: `prefix`, `_`, then 128 random bits in hex, e.g. `org_3f2a…`.
///
/// The prefix lets a person reading logs tell an origin id from an edge id at a glance.
fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident => $prefix:literal, $kind:literal;)*) => {$(
        $(#[$doc])*
        ///
        /// Serialised as a plain string. [`new`](Self::new) makes a random id; ids that come
        /// from outside (URLs, JSON, the database) go through [`parse`](Self::parse), which
        /// accepts 1–64 characters of `A-Z`, `a-z`, `0-9`, `_` and `-`.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            #[doc = concat!("A new random id such as `", $prefix, "_9f86d081884c7d659a2feaa0c55ad015`.")]
            // A `Default` that returns a different random value each time would surprise.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(generate($prefix))
            }

            /// Validates an id given from outside.
            pub fn parse(input: &str) -> Result<Self, Error> {
                check($kind, input)?;
                Ok(Self(input.to_owned()))
            }

            /// The id as text.
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
    )*};
}

ids! {
    /// Identifies an [`Origin`](crate::Origin).
    OriginId => "org", "origin";
    /// Identifies an [`OriginService`](crate::OriginService).
    ServiceId => "svc", "service";
    /// Identifies a [`Route`](crate::Route).
    RouteId => "rt", "route";
    /// Identifies an [`EdgeNode`](crate::EdgeNode).
    EdgeNodeId => "edg", "edge node";
    /// Identifies a [`DnsRecord`](crate::DnsRecord) in Kokoa's own records (the DNS
    /// provider's id is [`DnsRecord::provider_record_id`](crate::DnsRecord::provider_record_id)).
    DnsRecordId => "dns", "DNS record";
    /// Identifies a [`DnsZone`](crate::DnsZone).
    DnsZoneId => "dnz", "DNS zone";
    /// Identifies a TLS certificate managed by the certificate manager.
    CertificateId => "crt", "certificate";
    /// Identifies a [`User`](crate::User).
    UserId => "usr", "user";
    /// Identifies a [`Session`](crate::Session) of the Web UI.
    SessionId => "ses", "session";
    /// Identifies an [`ApiToken`](crate::ApiToken).
    ApiTokenId => "tok", "API token";
    /// Identifies an [`Enrollment`](crate::Enrollment).
    EnrollmentId => "enr", "enrollment";
    /// Identifies a [`NodeCredential`](crate::NodeCredential).
    NodeCredentialId => "crd", "node credential";
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn new_ids_are_prefixed_unique_and_parse_back() {
        let ids: HashSet<OriginId> = (0..1000).map(|_| OriginId::new()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert!(id.as_str().starts_with("org_"), "{id}");
            assert_eq!(id.as_str().len(), 36);
            assert_eq!(&OriginId::parse(id.as_str()).unwrap(), id);
        }
        assert!(EdgeNodeId::new().as_str().starts_with("edg_"));
        assert!(RouteId::new().as_str().starts_with("rt_"));
    }

    #[test]
    fn ids_from_outside_are_checked() {
        assert_eq!(
            RouteId::parse("origin-id-1").unwrap().as_str(),
            "origin-id-1"
        );
        assert!(OriginId::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "a/b", "../etc", "a b", "a%20", "ü", &"a".repeat(65)] {
            let err = OriginId::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("origin id") && err.contains(&format!("{bad:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn serde_is_a_plain_string() {
        let id = UserId::parse("usr_1").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"usr_1\"");
        assert_eq!(serde_json::from_str::<UserId>("\"usr_1\"").unwrap(), id);
        assert!(serde_json::from_str::<UserId>("\"usr 1\"").is_err());
    }

    proptest! {
        #[test]
        fn parse_accepts_exactly_the_charset(input in "\\PC{0,70}") {
            let allowed = (1..=64).contains(&input.len())
                && input.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            prop_assert_eq!(ServiceId::parse(&input).is_ok(), allowed);
        }
    }
}
