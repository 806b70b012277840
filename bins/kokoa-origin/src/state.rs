//! The agent's state directory and the bundle's `credentials.json`.
//!
//! | file | mode | what |
//! |---|---|---|
//! | `credential.json` | 0600 | `{control_plane_url, node_id, credential}` from enrollment |
//! | `wireguard-keys` | 0600 | the origin's WireGuard private keys, made here (see `kokoa_agent::keys`) |
//! | `last-good.json` | 0600 | the last configuration that applied |
//!
//! Files are replaced atomically (write beside, flush, rename): a crash leaves the old or
//! the new version, never a mix.

use std::{
    fs,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use kokoa_agent::{CaPin, Secret, read_private, write_atomic};
use kokoa_core::{OriginConfig, OriginId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use zeroize::Zeroizing;

use crate::Error;

/// What enrollment gives an origin: who it is and how to prove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// The control plane's base URL.
    pub control_plane_url: String,
    /// This origin's id.
    pub node_id: OriginId,
    /// The long-lived node credential.
    pub credential: Secret,
    /// The control plane's CA pin, when enrollment was given one: then only that CA is
    /// trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pin: Option<CaPin>,
}

/// `credentials.json` of the origin bundle (`GET /api/v1/origins/{id}/config`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BundleCredentials {
    /// The control plane's base URL.
    pub control_plane_url: String,
    /// The origin the token enrolls.
    pub origin_id: OriginId,
    /// The single-use enrollment token.
    pub enrollment_token: Secret,
    /// The control plane's CA pin, when it is its own CA.
    #[serde(default)]
    pub ca_pin: Option<CaPin>,
}

impl BundleCredentials {
    /// Reads `credentials.json`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        read_json(path)?.ok_or_else(|| {
            Error::io("read", path)(std::io::Error::from(std::io::ErrorKind::NotFound))
        })
    }
}

/// The state directory (`/var/lib/kokoa-origin` by default).
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory at `dir`, created (mode 0700) when missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(Error::io("create directory", &dir))?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The origin's WireGuard keys (a new one is made when there is none).
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

    /// Saves the credential (mode 0600).
    pub fn write_credential(&self, credential: &Credential) -> Result<(), Error> {
        write_json(&self.credential_path(), credential)
    }

    /// The saved credential; [`Error::NotEnrolled`] when there is none.
    pub fn read_credential(&self) -> Result<Credential, Error> {
        let path = self.credential_path();
        read_json(&path)?.ok_or(Error::NotEnrolled { path })
    }

    /// Saves `config` as the last good configuration (mode 0600).
    pub fn save_last_good(&self, config: &OriginConfig) -> Result<(), Error> {
        write_json(&self.last_good_path(), config)
    }

    /// The last good configuration; `None` when there is none.
    pub fn read_last_good(&self) -> Result<Option<OriginConfig>, Error> {
        read_json(&self.last_good_path())
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    let Some(bytes) = read_private(path).map_err(Error::io("read", path))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::BadFile {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Writes `value` as JSON to `path`, atomically and with mode 0600.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let json = Zeroizing::new(
        serde_json::to_vec_pretty(value).map_err(|e| Error::BadFile {
            path: path.to_owned(),
            message: e.to_string(),
        })?,
    );
    write_atomic(path, &json, 0o600).map_err(Error::io("write", path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn credential_is_private_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path().join("state")).unwrap();
        assert!(matches!(
            state.read_credential(),
            Err(Error::NotEnrolled { .. })
        ));
        let credential = Credential {
            control_plane_url: "http://127.0.0.1:8080".into(),
            node_id: OriginId::parse("org_1").unwrap(),
            credential: Secret::new("kk_node_secret"),
            ca_pin: None,
        };
        state.write_credential(&credential).unwrap();
        assert_eq!(mode(&state.credential_path()), 0o600);
        assert_eq!(mode(state.path()), 0o700);
        assert_eq!(state.read_credential().unwrap(), credential);
        assert!(!format!("{credential:?}").contains("kk_node_secret"));
    }

    #[test]
    fn bundle_credentials_name_the_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        fs::write(
            &path,
            r#"{"control_plane_url":"http://x","origin_id":"org_1"}"#,
        )
        .unwrap();
        let err = BundleCredentials::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("credentials.json") && err.contains("enrollment_token"),
            "{err}"
        );
        let missing = BundleCredentials::read(&dir.path().join("nope.json")).unwrap_err();
        assert!(missing.to_string().contains("nope.json"), "{missing}");
    }
}
