//! The agent's state directory: its credential, its WireGuard keys, the last good
//! configuration and the fallback certificate.
//!
//! | file | mode | what |
//! |---|---|---|
//! | `credential.json` | 0600 | `{control_plane_url, node_id, credential}` from enrollment |
//! | `wireguard-keys` | 0600 | the edge's WireGuard private keys, made here (see `kokoa_agent::keys`) |
//! | `last-good.json` | 0600 | the last configuration that was applied successfully |
//! | `fallback.crt`, `fallback.key` | 0644, 0600 | self-signed certificate for names without their own |
//!
//! Every file is replaced atomically (write beside, flush, rename), so a crash leaves the
//! old or the new version, never a mix.

use std::{
    fs,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use kokoa_agent::{CaPin, Secret, read_private};
use kokoa_core::{EdgeConfig, EdgeNodeId};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;

/// What enrollment gives an edge: who it is and how to prove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The control plane's base URL, e.g. `https://control.example.net`.
    pub control_plane_url: String,
    /// This edge's id.
    pub node_id: EdgeNodeId,
    /// The long-lived node credential.
    pub credential: Secret,
    /// The control plane's CA pin, when enrollment was given one: then only that CA is
    /// trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pin: Option<CaPin>,
}

/// The state directory (`/var/lib/kokoa-edge` by default).
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory at `dir`; created when missing, with mode 0755 so nginx's
    /// workers can reach a prefix inside it (the files holding secrets are 0600).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(Error::io("create directory", &dir))?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The edge's WireGuard keys (a new one is made when there is none).
    pub fn keys(&self) -> Result<kokoa_agent::keys::NodeKeys, Error> {
        kokoa_agent::keys::NodeKeys::open(&self.dir)
            .map_err(Error::io("read the WireGuard keys in", &self.dir))
    }

    /// Takes this directory for one agent until the lock is dropped; fails at once, naming
    /// the holder, when another agent has it.
    pub fn lock(&self) -> Result<kokoa_agent::StateLock, Error> {
        kokoa_agent::StateLock::acquire(&self.dir).map_err(Error::io("lock", &self.dir))
    }

    /// `credential.json`.
    pub fn credential_path(&self) -> PathBuf {
        self.dir.join("credential.json")
    }

    /// `last-good.json`.
    pub fn last_good_path(&self) -> PathBuf {
        self.dir.join("last-good.json")
    }

    /// `fallback.crt` and `fallback.key`.
    pub fn fallback_certificate_paths(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("fallback.crt"), self.dir.join("fallback.key"))
    }

    /// Saves the credential (mode 0600).
    pub fn write_credential(&self, credential: &Credential) -> Result<(), Error> {
        let json = Zeroizing::new(serde_json::to_vec_pretty(credential).map_err(|e| {
            Error::BadStateFile {
                path: self.credential_path(),
                message: e.to_string(),
            }
        })?);
        write_atomic(&self.credential_path(), &json, 0o600)
    }

    /// The saved credential; [`Error::NotEnrolled`] when there is none.
    pub fn read_credential(&self) -> Result<Credential, Error> {
        let path = self.credential_path();
        let Some(bytes) = read_private(&path).map_err(Error::io("read", &path))? else {
            return Err(Error::NotEnrolled { path });
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::BadStateFile {
            path,
            message: e.to_string(),
        })
    }

    /// Saves `config` as the last good configuration (mode 0600: it holds private keys).
    pub fn save_last_good(&self, config: &EdgeConfig) -> Result<(), Error> {
        let path = self.last_good_path();
        let json = Zeroizing::new(serde_json::to_vec(config).map_err(|e| Error::BadStateFile {
            path: path.clone(),
            message: e.to_string(),
        })?);
        write_atomic(&path, &json, 0o600)
    }

    /// The last good configuration, checked against its hash; `None` when there is none.
    pub fn read_last_good(&self) -> Result<Option<EdgeConfig>, Error> {
        let path = self.last_good_path();
        let Some(bytes) = read_private(&path).map_err(Error::io("read", &path))? else {
            return Ok(None);
        };
        let bad = |message: String| Error::BadStateFile {
            path: path.clone(),
            message,
        };
        let config: EdgeConfig = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        config.verify_hash().map_err(|e| bad(e.to_string()))?;
        Ok(Some(config))
    }

    /// The fallback certificate and key (PEM), generated once: a self-signed certificate
    /// so nginx can complete TLS handshakes for names that have no certificate yet.
    pub fn fallback_certificate(&self) -> Result<(String, Zeroizing<String>), Error> {
        let (crt_path, key_path) = self.fallback_certificate_paths();
        if let (Ok(crt), Ok(key)) = (fs::read_to_string(&crt_path), fs::read_to_string(&key_path)) {
            return Ok((crt, Zeroizing::new(key)));
        }
        let generated = rcgen::generate_simple_self_signed(vec!["kokoa-edge.invalid".to_owned()])
            .map_err(|e| Error::Certificate(e.to_string()))?;
        let crt = generated.cert.pem();
        let key = Zeroizing::new(generated.signing_key.serialize_pem());
        // The key first: a certificate without its key would be taken as complete above.
        write_atomic(&key_path, key.as_bytes(), 0o600)?;
        write_atomic(&crt_path, crt.as_bytes(), 0o644)?;
        Ok((crt, key))
    }
}

/// [`kokoa_agent::write_atomic`], its failure naming `path`.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    kokoa_agent::write_atomic(path, contents, mode).map_err(Error::io("write", path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn credential_round_trips_privately_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path().join("state")).unwrap();
        assert_eq!(mode(state.path()), 0o755);
        assert!(matches!(
            state.read_credential(),
            Err(Error::NotEnrolled { .. })
        ));
        let credential = Credential {
            control_plane_url: "http://127.0.0.1:8080".into(),
            node_id: EdgeNodeId::parse("edge_1").unwrap(),
            credential: Secret::new("very-secret-token"),
            ca_pin: None,
        };
        state.write_credential(&credential).unwrap();
        assert_eq!(mode(&state.credential_path()), 0o600);
        assert_eq!(state.read_credential().unwrap(), credential);
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(state.credential_path()).unwrap()).unwrap();
        assert_eq!(json["credential"], "very-secret-token");
        assert_eq!(json["node_id"], "edge_1");
        assert!(!format!("{credential:?}").contains("very-secret-token"));
    }

    #[test]
    fn fallback_certificate_is_generated_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let (crt, key) = state.fallback_certificate().unwrap();
        assert!(crt.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.contains("PRIVATE KEY"));
        let (_, key_path) = state.fallback_certificate_paths();
        assert_eq!(mode(&key_path), 0o600);
        let (again, _) = state.fallback_certificate().unwrap();
        assert_eq!(again, crt);
    }

    #[test]
    fn last_good_that_does_not_match_its_hash_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(state.read_last_good().unwrap().is_none());
        let config = EdgeConfig::new(kokoa_core::EdgeContent::default()).unwrap();
        state.save_last_good(&config).unwrap();
        assert_eq!(mode(&state.last_good_path()), 0o600);
        assert_eq!(state.read_last_good().unwrap(), Some(config));
        let text = fs::read_to_string(state.last_good_path()).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["config_hash"] = "0".repeat(64).into();
        fs::write(state.last_good_path(), json.to_string()).unwrap();
        let err = state.read_last_good().unwrap_err();
        assert!(matches!(err, Error::BadStateFile { .. }), "{err}");
    }
}
