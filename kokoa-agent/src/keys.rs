//! The node's WireGuard keys: made on the node, kept in its state directory (mode 0600),
//! never sent anywhere. The control plane learns only their public halves, which the node
//! registers, and names in each configuration the key the node's interfaces use.
//!
//! A rotation (SPEC §10.3) asks for a next key: the node makes one, keeps it beside the
//! current one and registers it; once the peers know it, configurations name it and the
//! old key is dropped.

use std::{
    io,
    path::{Path, PathBuf},
};

use kokoa_wg::{PrivateKey, PublicKey};

use crate::{read_private, write_atomic};

/// The file in the state directory holding the keys, one base64 private key per line,
/// oldest first.
pub const KEYS_FILE: &str = "wireguard-keys";

/// The most keys kept: the one in use, a next one, and one spare for a rotation whose next
/// key was made twice.
const MAX_KEYS: usize = 3;

/// A key a configuration names that this node does not hold.
#[derive(Debug, thiserror::Error)]
#[error(
    "the control plane names WireGuard key {0}, which this node does not hold (were its state \
     directory's keys replaced? enroll it again)"
)]
pub struct NotHeld(pub String);

/// The node's keys, as kept in its state directory.
struct KeyRing {
    path: PathBuf,
    /// Oldest first; never empty.
    keys: Vec<PrivateKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let public: Vec<String> = self
            .keys
            .iter()
            .map(|k| k.public_key().to_string())
            .collect();
        f.debug_struct("KeyRing")
            .field("path", &self.path)
            .field("public_keys", &public)
            .finish()
    }
}

impl KeyRing {
    /// The keys in `dir`, or a new key saved there when it holds none.
    fn open(dir: &Path) -> io::Result<Self> {
        let path = dir.join(KEYS_FILE);
        let bad = |line: usize, problem: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} line {line}: {problem}", path.display()),
            )
        };
        let mut keys = Vec::new();
        if let Some(bytes) = read_private(&path)? {
            let text = std::str::from_utf8(&bytes).map_err(|_| bad(1, "not UTF-8".into()))?;
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                // The error names the line, never its content.
                let key = PrivateKey::from_base64(line.trim())
                    .map_err(|_| bad(i + 1, "not a WireGuard private key".into()))?;
                keys.push(key);
            }
        }
        let mut ring = Self { path, keys };
        if ring.keys.is_empty() {
            ring.keys.push(PrivateKey::generate());
            ring.save()?;
        }
        Ok(ring)
    }

    fn save(&self) -> io::Result<()> {
        let mut text = zeroize::Zeroizing::new(String::new());
        for key in &self.keys {
            text.push_str(&key.to_base64());
            text.push('\n');
        }
        write_atomic(&self.path, text.as_bytes(), 0o600)
    }

    /// The newest key's public half: what a node registers when the control plane knows
    /// none of its keys yet (at enrollment).
    fn newest(&self) -> PublicKey {
        self.keys
            .last()
            .map(PrivateKey::public_key)
            .unwrap_or_else(|| unreachable!("a key ring is never empty"))
    }

    /// The key a configuration naming `named` (base64 public key) is applied with: that
    /// key, or the newest when it names none.
    fn key_for(&self, named: Option<&str>) -> Result<&PrivateKey, NotHeld> {
        match named {
            None => Ok(self
                .keys
                .last()
                .unwrap_or_else(|| unreachable!("never empty"))),
            Some(public) => self
                .keys
                .iter()
                .find(|k| k.public_key().to_string() == public)
                .ok_or_else(|| NotHeld(public.to_owned())),
        }
    }

    /// Follows a configuration that names `named` and asks for a next key or not; returns
    /// the public key to register, if any:
    ///
    /// - none named: the newest key (the control plane knows none of this node's keys);
    /// - a next key asked for: the key made after the named one, made and saved now if
    ///   there is none yet (registering it again is harmless);
    /// - otherwise nothing, and the keys older than the named one are dropped (no
    ///   configuration uses them any more); a newer one stays: the next key of a rotation
    ///   that registered it and waits for the peers to learn it.
    fn follow(&mut self, named: Option<&str>, requested: bool) -> io::Result<Option<PublicKey>> {
        let Some(named) = named else {
            return Ok(Some(self.newest()));
        };
        let Some(at) = self
            .keys
            .iter()
            .position(|k| k.public_key().to_string() == named)
        else {
            // Nothing to keep or make: applying fails with `NotHeld`.
            return Ok(None);
        };
        if requested {
            if at + 1 < self.keys.len() {
                return Ok(Some(self.newest()));
            }
            self.keys.push(PrivateKey::generate());
            let excess = self.keys.len().saturating_sub(MAX_KEYS);
            self.keys.drain(..excess);
            self.save()?;
            return Ok(Some(self.newest()));
        }
        if at > 0 {
            self.keys.drain(..at);
            self.save()?;
        }
        Ok(None)
    }
}

/// A node's keys as its agent uses them: the key a configuration names, and the public key
/// to register after a configuration was applied, kept until the control plane took it (a
/// failed registration is tried again with the next heartbeat).
#[derive(Debug)]
pub struct NodeKeys {
    ring: std::sync::Mutex<KeyRing>,
    unregistered: std::sync::Mutex<Option<PublicKey>>,
}

impl NodeKeys {
    /// The keys in state directory `dir` (a new key is made when it holds none).
    pub fn open(dir: &Path) -> io::Result<Self> {
        Ok(Self {
            ring: std::sync::Mutex::new(KeyRing::open(dir)?),
            unregistered: std::sync::Mutex::default(),
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, KeyRing> {
        self.ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The newest key's public half (what enrollment registers).
    pub fn newest(&self) -> PublicKey {
        self.ring().newest()
    }

    /// The key a configuration naming `named` is applied with.
    pub fn key_for(&self, named: Option<&str>) -> Result<PrivateKey, NotHeld> {
        self.ring().key_for(named).cloned()
    }

    /// After a configuration naming `named` (asking for a next key or not) was applied:
    /// makes a next key if asked, drops keys no configuration uses any more, and notes
    /// the key to register (see [`register`](Self::register)).
    pub fn applied(&self, named: Option<&str>, requested: bool) -> io::Result<()> {
        let register = self.ring().follow(named, requested)?;
        *self
            .unregistered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = register;
        Ok(())
    }

    /// Registers the key [`applied`](Self::applied) noted, if any
    /// (`POST /api/v1/wireguard-key`); kept for the next try when that fails.
    pub async fn register(&self, api: &crate::Api) -> Result<(), crate::ApiError> {
        let pending = *self
            .unregistered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(key) = pending else {
            return Ok(());
        };
        #[derive(serde::Serialize)]
        struct Body {
            public_key: String,
        }
        api.post(
            "/api/v1/wireguard-key",
            &Body {
                public_key: key.to_string(),
            },
        )
        .await?;
        let mut unregistered = self
            .unregistered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *unregistered == Some(key) {
            *unregistered = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn public(ring: &KeyRing) -> String {
        ring.newest().to_string()
    }

    #[test]
    fn a_new_ring_has_one_key_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEYS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = KeyRing::open(dir.path()).unwrap();
        assert_eq!(public(&again), public(&ring));
        assert!(!format!("{again:?}").contains(&*ring.keys[0].to_base64()));
    }

    #[test]
    fn a_damaged_file_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEYS_FILE), "secret-but-broken\n").unwrap();
        let error = KeyRing::open(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("line 1") && !error.contains("secret"),
            "{error}"
        );
    }

    #[test]
    fn a_rotation_makes_one_next_key_then_drops_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = KeyRing::open(dir.path()).unwrap();
        let first = public(&ring);

        // Not registered yet: the newest key is registered.
        assert_eq!(
            ring.follow(None, false).unwrap().unwrap().to_string(),
            first
        );
        assert_eq!(ring.follow(Some(&first), false).unwrap(), None);

        // Asked for a next key: made once, saved, registered (again when asked again).
        let next = ring
            .follow(Some(&first), true)
            .unwrap()
            .unwrap()
            .to_string();
        assert_ne!(next, first);
        assert_eq!(
            ring.follow(Some(&first), true)
                .unwrap()
                .unwrap()
                .to_string(),
            next
        );
        let reopened = KeyRing::open(dir.path()).unwrap();
        assert_eq!(reopened.keys.len(), 2, "both kept across a restart");
        assert!(reopened.key_for(Some(&first)).is_ok());
        // Registered, not switched yet: the configuration still names the old key and asks
        // for nothing, and the next key stays.
        assert_eq!(ring.follow(Some(&first), false).unwrap(), None);
        assert!(ring.key_for(Some(&next)).is_ok());

        // Switched to the next key: the old one goes.
        assert_eq!(ring.follow(Some(&next), false).unwrap(), None);
        assert_eq!(ring.keys.len(), 1);
        assert_eq!(KeyRing::open(dir.path()).unwrap().keys.len(), 1);
        let error = ring.key_for(Some(&first)).unwrap_err().to_string();
        assert!(error.contains(&first), "{error}");
        assert_eq!(ring.key_for(None).unwrap().public_key().to_string(), next);
    }
}
