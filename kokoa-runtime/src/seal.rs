//! Secret settings sealed under the master key before they reach the store (SPEC §10.3).
//!
//! Each sealed value is bound to its row by its context (see `kokoa_store::seal`), so a
//! sealed value copied into another row does not open. WireGuard private keys are not
//! among them: each node makes its own and keeps it.

use kokoa_core::Sealed;
use kokoa_store::{MasterKey, seal};

/// Whose secret settings (a JSON object of credentials): the context bound into its seal.
#[derive(Debug, Clone, Copy)]
pub enum SealedJson<'a> {
    /// A DNS zone's provider credentials.
    Zone(&'a kokoa_core::DnsZoneId),
}

impl SealedJson<'_> {
    fn context(self) -> String {
        match self {
            Self::Zone(zone) => seal::dns_zone_credentials_context(zone),
        }
    }
}

/// Seals a JSON object of credentials for `owner`.
pub fn seal_json(
    master: &MasterKey,
    owner: SealedJson<'_>,
    value: &serde_json::Map<String, serde_json::Value>,
) -> Sealed {
    let text = zeroize::Zeroizing::new(serde_json::Value::Object(value.clone()).to_string());
    master.seal(&text, &owner.context())
}

/// Opens the credentials sealed by [`seal_json`].
pub fn open_json(
    master: &MasterKey,
    owner: SealedJson<'_>,
    sealed: &Sealed,
) -> Result<serde_json::Map<String, serde_json::Value>, kokoa_core::Error> {
    let text = master.open(sealed, &owner.context())?;
    serde_json::from_str(&text).map_err(|_| {
        kokoa_core::Error::Storage(
            format!(
                "the sealed credentials of {} are not a JSON object",
                owner.context()
            )
            .into(),
        )
    })
}
