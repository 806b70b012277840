//! The node credential or an enrollment token, kept out of logs.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A bearer token (the node credential or an enrollment token). `Debug` never shows it and
/// its memory is wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

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

impl Secret {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }

    /// The token itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trips_as_a_string_and_is_never_shown() {
        let secret: Secret = serde_json::from_str(r#""kk_node_secret""#).unwrap();
        assert_eq!(secret.expose(), "kk_node_secret");
        assert_eq!(
            serde_json::to_string(&secret).unwrap(),
            r#""kk_node_secret""#
        );
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }
}
