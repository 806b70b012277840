//! [`Secret`]: a secret string that stays out of logs.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A secret string: a bearer token, an API token, a password from a configuration file,
/// user data that holds one.
///
/// `Debug` never shows it and its memory is wiped when dropped; read it with
/// [`expose`](Self::expose) only where it must be sent. It serialises as the plain string
/// (to the one place that needs it: a state file, a request body).
///
/// ```
/// use kokoa_core::Secret;
/// let token = Secret::new("kk_node_secret");
/// assert_eq!(token.expose(), "kk_node_secret");
/// assert_eq!(format!("{token:?}"), "Secret(<redacted>)");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_a_string_and_is_never_shown() {
        let secret: Secret = serde_json::from_str(r#""kk_node_secret""#).unwrap();
        assert_eq!(secret.expose(), "kk_node_secret");
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            r#""kk_node_secret""#
        );
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }
}
