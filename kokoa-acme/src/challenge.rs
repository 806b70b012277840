//! How a challenge response is put where the ACME server looks for it.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::BoxError;

/// How control of a name is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChallengeMethod {
    /// A file under `http://<name>/.well-known/acme-challenge/`, served by every edge.
    #[serde(rename = "http-01")]
    Http01,
    /// A TXT record at `_acme-challenge.<name>`; the only method for wildcard names.
    #[serde(rename = "dns-01")]
    Dns01,
}

impl ChallengeMethod {
    pub(crate) fn acme_type(self) -> instant_acme::ChallengeType {
        match self {
            Self::Http01 => instant_acme::ChallengeType::Http01,
            Self::Dns01 => instant_acme::ChallengeType::Dns01,
        }
    }
}

impl fmt::Display for ChallengeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http01 => "http-01",
            Self::Dns01 => "dns-01",
        })
    }
}

/// Serves HTTP-01 responses. The control plane implements it by putting the token into
/// every edge's configuration, since the ACME server may connect to any edge the name
/// resolves to.
#[async_trait]
pub trait Http01Publisher: Send + Sync {
    /// Serve `key_authorization` (as `text/plain`) at
    /// `/.well-known/acme-challenge/<token>` for every name; return once it is served.
    /// `token` is checked to be base64url text (`A-Z a-z 0-9 - _`) before this is called.
    async fn publish(&self, token: &str, key_authorization: &str) -> Result<(), BoxError>;

    /// Stop serving `token`. Called once the order is over, whatever its outcome, also
    /// when `publish` failed part way.
    async fn withdraw(&self, token: &str) -> Result<(), BoxError>;
}

/// Sets DNS-01 TXT records, e.g. through a DNS provider.
#[async_trait]
pub trait Dns01Solver: Send + Sync {
    /// Add the TXT record `value` at `name` (such as `_acme-challenge.app.hoge.com`, no
    /// trailing dot) and return once authoritative servers answer with it. Other values at
    /// the same name must stay: an order for `hoge.com` and `*.hoge.com` sets two.
    async fn set_txt(&self, name: &str, value: &str) -> Result<(), BoxError>;

    /// Remove the TXT record `value` at `name`. Called once the order is over, whatever its
    /// outcome, also when `set_txt` failed part way.
    async fn remove_txt(&self, name: &str, value: &str) -> Result<(), BoxError>;
}
