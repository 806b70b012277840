//! WireGuard key pairs: generated here, private halves sealed under the master key before
//! they reach the store, opened only to build a node's configuration (SPEC §10.3).
//!
//! Each sealed key is bound to its row by its context (see `kokoa_core::secret`), so a
//! sealed value copied into another row does not open.

use kokoa_core::{EdgeNodeId, MasterKey, OriginId, Sealed, WgPrivateKey, WgPublicKey, secret};

use crate::error::ApiError;

/// Whose private key: the context bound into its seal.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyOwner<'a> {
    /// An origin's `wg0` key.
    Origin(&'a OriginId),
    /// An edge's key for its interface towards one origin.
    Tunnel(&'a EdgeNodeId, &'a OriginId),
}

impl KeyOwner<'_> {
    fn context(self) -> String {
        match self {
            Self::Origin(origin) => secret::origin_key_context(origin),
            Self::Tunnel(edge, origin) => secret::tunnel_key_context(edge, origin),
        }
    }
}

/// A new key pair for `owner`: the public key, and the private key sealed.
pub(crate) fn generate(
    master: &MasterKey,
    owner: KeyOwner<'_>,
) -> Result<(WgPublicKey, Sealed), ApiError> {
    let private = kokoa_wg::PrivateKey::generate();
    let public = WgPublicKey::parse(&private.public_key().to_string())?;
    let sealed = master.seal(&private.to_base64(), &owner.context());
    Ok((public, sealed))
}

/// Opens the sealed private key of `owner`.
pub(crate) fn open(
    master: &MasterKey,
    owner: KeyOwner<'_>,
    sealed: &Sealed,
) -> Result<WgPrivateKey, ApiError> {
    let text = master.open(sealed, &owner.context())?;
    Ok(WgPrivateKey::parse(&text)?)
}

/// The same key as the WireGuard crate's type, for rendering `wg-quick` files.
pub(crate) fn to_wg(key: &WgPrivateKey) -> Result<kokoa_wg::PrivateKey, ApiError> {
    kokoa_wg::PrivateKey::from_base64(key.expose_secret()).map_err(|e| ApiError::internal(&e))
}

/// Whose secret settings (a JSON object of credentials): the context bound into its seal.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SealedJson<'a> {
    /// A DNS zone's provider credentials.
    Zone(&'a kokoa_core::DnsZoneId),
}

impl SealedJson<'_> {
    fn context(self) -> String {
        match self {
            Self::Zone(zone) => secret::dns_zone_credentials_context(zone),
        }
    }
}

/// Seals a JSON object of credentials for `owner`.
pub(crate) fn seal_json(
    master: &MasterKey,
    owner: SealedJson<'_>,
    value: &serde_json::Map<String, serde_json::Value>,
) -> Sealed {
    let text = zeroize::Zeroizing::new(serde_json::Value::Object(value.clone()).to_string());
    master.seal(&text, &owner.context())
}

/// Opens the credentials sealed by [`seal_json`].
pub(crate) fn open_json(
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
