//! The data plane of this host: WireGuard interfaces and nginx, behind [`DataPlane`] so the
//! agent's logic can be tested without them.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::chown,
    path::PathBuf,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use kokoa_agent::LinkState;
use kokoa_core::{CertificateRef, ContentHash, EdgeConfig, OriginId};
use kokoa_nginx::{CertName, Layout, Listen, NginxInstance};
use kokoa_wg::{
    InterfaceConfig, PrivateKey,
    apply::{Implementation, TunnelStatus as WgStatus, WgHost},
};
use serde::Serialize;

use crate::{
    Error,
    convert::{TunnelPlan, convert},
    state::{StateDir, write_atomic},
};

/// How long one tunnel's ping may wait for its answer.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Pings missed in a row before a tunnel whose origin answers pings counts as down (SPEC
/// §8.4's WireGuard check, with the default threshold of 3).
const PING_MISSES_DOWN: u32 = 3;

/// What the edge remembers of one tunnel's pings.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Pings {
    /// The origin answered a ping since the tunnel was set up.
    answered: bool,
    /// Pings missed since the last answer.
    misses: u32,
}

impl Pings {
    /// Folds in one reading (was the ping `answered`, is the last handshake `fresh`) and
    /// tells the tunnel's state: up while the origin answers pings; once it has answered
    /// one, down after [`PING_MISSES_DOWN`] misses in a row, however fresh the last
    /// handshake (a handshake counts as fresh for 180 s after the path broke); an origin
    /// that never answered (ICMP filtered on its side) is judged by its handshake alone.
    fn observe(&mut self, answered: bool, fresh: bool) -> LinkState {
        if answered {
            *self = Self {
                answered: true,
                misses: 0,
            };
            return LinkState::Up;
        }
        self.misses = self.misses.saturating_add(1);
        let up = if self.answered {
            self.misses < PING_MISSES_DOWN
        } else {
            fresh
        };
        if up { LinkState::Up } else { LinkState::Down }
    }
}

/// One tunnel in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TunnelReport {
    /// The origin at the other end.
    pub origin_id: OriginId,
    /// The interface carrying it.
    pub interface: String,
    /// Up while the origin answers pings through it (down after 3 misses in a row); for an
    /// origin that never answered one, up when a handshake happened in the last 180 s.
    pub status: LinkState,
    /// The ping's round trip in milliseconds, when it was answered.
    pub rtt_ms: Option<f64>,
    /// Seconds since the latest WireGuard handshake, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_age_seconds: Option<u64>,
    /// Bytes received through the tunnel since its interface was made.
    pub rx_bytes: u64,
    /// Bytes sent through it.
    pub tx_bytes: u64,
    /// The origin's application check through this tunnel, once it has a verdict (see
    /// [`ApplicationChecks`](crate::ApplicationChecks)); left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<LinkState>,
}

/// What the agent drives. Every method blocks: the agent calls them from
/// `spawn_blocking`.
pub trait DataPlane: Send + Sync + 'static {
    /// Makes `config` live with the edge's private `key`: WireGuard first (routes point
    /// into the tunnels), then nginx, started when it is not running. On failure the
    /// previous configuration keeps serving.
    fn apply(&self, config: &EdgeConfig, key: &PrivateKey) -> Result<(), Error>;

    /// The state of every tunnel of the live configuration. Bounded: about one second per
    /// tunnel at most.
    fn tunnels(&self) -> Vec<TunnelReport>;

    /// Whether nginx is running.
    fn serving(&self) -> bool;

    /// Replaces the body of `GET /health`.
    fn set_health(&self, body: &[u8]) -> Result<(), Error>;

    /// The certificates of `config` this host does not have with the right content yet.
    fn missing_certificates(&self, config: &EdgeConfig) -> Vec<CertificateRef> {
        let _ = config;
        Vec::new()
    }

    /// Installs a certificate's chain and key under `name`, for nginx to pick by SNI.
    fn install_certificate(&self, name: &CertName, chain: &[u8], key: &[u8]) -> Result<(), Error> {
        let _ = (name, chain, key);
        Ok(())
    }

    /// Hands an origin's address over to its new key in every tunnel where that key has
    /// completed a handshake (see `kokoa_wg::rotation`); returns the interfaces changed.
    /// Cheap while nothing is due: the agent calls it a few times a second.
    fn settle_keys(&self) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }

    /// Stops nginx and deletes the tunnels (only on request: normally both outlive the
    /// agent so traffic continues without it).
    fn stop(&self) -> Result<(), Error>;
}

/// How this host runs nginx and WireGuard.
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// nginx's prefix directory (`nginx -p DIR`).
    pub nginx_prefix: PathBuf,
    /// The nginx binary.
    pub nginx_binary: PathBuf,
    /// The user nginx's workers run as; they read the certificate keys, which are made
    /// readable by this user's group. `None`: nginx's built-in default (keys must then be
    /// readable by it some other way).
    pub nginx_user: Option<String>,
    /// The userspace WireGuard used where the kernel has none.
    pub wireguard: Implementation,
    /// Where nginx listens.
    pub listen: Listen,
}

/// The real data plane: nginx over a [`Layout`] and WireGuard through [`WgHost`].
#[derive(Debug)]
pub struct EdgeHost {
    nginx: NginxInstance,
    wg: WgHost,
    listen: Listen,
    key_group: Option<u32>,
    tunnels: Mutex<Vec<TunnelPlan>>,
    pings: Mutex<HashMap<OriginId, Pings>>,
}

impl EdgeHost {
    /// Sets up the nginx prefix and installs the fallback certificate from `state` (made
    /// once) as `certs/fallback.{crt,key}`.
    pub fn new(settings: HostSettings, state: &StateDir) -> Result<Self, Error> {
        let mut layout = Layout::new(&settings.nginx_prefix)?;
        let mut key_group = None;
        if let Some(user) = &settings.nginx_user {
            layout = layout.with_worker_user(user)?;
            key_group = Some(primary_group(user)?);
        }
        let host = Self {
            nginx: NginxInstance::new(&settings.nginx_binary, layout),
            wg: WgHost::new(settings.wireguard, state.path()),
            listen: settings.listen,
            key_group,
            tunnels: Mutex::new(Vec::new()),
            pings: Mutex::default(),
        };
        let (crt, key) = state.fallback_certificate()?;
        host.write_certificate(&CertName::default(), crt.as_bytes(), key.as_bytes())?;
        Ok(host)
    }

    /// The nginx instance.
    pub fn nginx(&self) -> &NginxInstance {
        &self.nginx
    }

    /// Writes `certs/NAME.crt` (0644) and `certs/NAME.key` (0640, group of the worker user)
    /// unless they already hold these bytes.
    fn write_certificate(&self, name: &CertName, crt: &[u8], key: &[u8]) -> Result<(), Error> {
        let dir = self.nginx.layout().certs_dir();
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        let (crt_path, key_path) = self.nginx.layout().certificate_files(name);
        for (path, bytes, mode) in [(&key_path, key, 0o640), (&crt_path, crt, 0o644)] {
            if fs::read(path).is_ok_and(|b| b == bytes) {
                continue;
            }
            write_atomic(path, bytes, mode)?;
        }
        if let Some(gid) = self.key_group {
            chown(&key_path, None, Some(gid))
                .map_err(Error::io("change the group of", &key_path))?;
        }
        Ok(())
    }

    /// Whether `certs/NAME.crt` holds the certificate `cert` names and its key is there.
    fn installed(&self, cert: &CertificateRef) -> bool {
        let Ok(name) = CertName::parse(cert.name.as_str()) else {
            return false;
        };
        let (crt, key) = self.nginx.layout().certificate_files(&name);
        key.is_file() && fs::read(crt).is_ok_and(|b| ContentHash::of(&b) == cert.sha256)
    }

    /// Makes `acme-challenge/` hold exactly the pending HTTP-01 responses of `config`
    /// (world-readable: they are public, and nginx's worker serves them).
    fn write_challenges(&self, config: &EdgeConfig) -> Result<(), Error> {
        let dir = self.nginx.layout().acme_challenge_dir();
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        let wanted = &config.content().acme_challenges;
        // Tokens are checked to be base64url by `EdgeConfig`, so each is a plain file name.
        for (token, key_authorization) in wanted {
            let path = dir.join(token);
            if fs::read(&path).is_ok_and(|b| b == key_authorization.as_bytes()) {
                continue;
            }
            write_atomic(&path, key_authorization.as_bytes(), 0o644)?;
        }
        let entries = fs::read_dir(&dir).map_err(Error::io("read directory", &dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_str().is_none_or(|n| !wanted.contains_key(n)) {
                let path = entry.path();
                fs::remove_file(&path).map_err(Error::io("remove", &path))?;
            }
        }
        Ok(())
    }

    fn live_tunnels(&self) -> Vec<TunnelPlan> {
        self.tunnels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl DataPlane for EdgeHost {
    fn apply(&self, config: &EdgeConfig, key: &PrivateKey) -> Result<(), Error> {
        let desired = convert(config, key, self.listen, &|c| self.installed(c))?;
        self.write_challenges(config)?;
        let interfaces: Vec<InterfaceConfig> = desired
            .tunnels
            .iter()
            .map(|t| t.interface.clone())
            .collect();
        let wg = self.wg.apply(&interfaces)?;
        tracing::debug!(created = ?wg.created, updated = ?wg.updated, removed = ?wg.removed, "WireGuard applied");
        let applied = self.nginx.apply(&desired.site)?;
        tracing::debug!(?applied, "nginx applied");
        if !self.nginx.is_running() {
            self.nginx.start()?;
            tracing::info!("nginx started");
        }
        *self.tunnels.lock().unwrap_or_else(PoisonError::into_inner) = desired.tunnels;
        Ok(())
    }

    fn settle_keys(&self) -> Result<Vec<String>, Error> {
        let interfaces: Vec<InterfaceConfig> = self
            .live_tunnels()
            .into_iter()
            .map(|t| t.interface)
            .filter(|i| !i.key_changes.is_empty())
            .collect();
        let changed = self.wg.settle(&interfaces)?;
        Ok(changed.iter().map(ToString::to_string).collect())
    }

    fn tunnels(&self) -> Vec<TunnelReport> {
        let live = self.live_tunnels();
        let readings: Vec<(TunnelPlan, WgStatus)> = live
            .into_iter()
            .map(|t| {
                let status = self
                    .wg
                    .status(&t.interface.name, t.origin_ip.into(), PING_TIMEOUT);
                (t, status)
            })
            .collect();
        let mut pings = self.pings.lock().unwrap_or_else(PoisonError::into_inner);
        pings.retain(|origin, _| readings.iter().any(|(t, _)| &t.origin_id == origin));
        readings
            .into_iter()
            .map(|(t, status)| TunnelReport {
                status: pings
                    .entry(t.origin_id.clone())
                    .or_default()
                    .observe(status.rtt.is_some(), status.up()),
                origin_id: t.origin_id,
                interface: t.interface.name.to_string(),
                rtt_ms: status.rtt.map(|d| d.as_secs_f64() * 1000.0),
                handshake_age_seconds: status.latest_handshake.map(|at| {
                    std::time::SystemTime::now()
                        .duration_since(at)
                        .unwrap_or_default()
                        .as_secs()
                }),
                rx_bytes: status.rx_bytes,
                tx_bytes: status.tx_bytes,
                application: None,
            })
            .collect()
    }

    fn serving(&self) -> bool {
        self.nginx.is_running()
    }

    fn missing_certificates(&self, config: &EdgeConfig) -> Vec<CertificateRef> {
        config
            .content()
            .certificates
            .iter()
            .filter(|c| !self.installed(c))
            .cloned()
            .collect()
    }

    fn install_certificate(&self, name: &CertName, chain: &[u8], key: &[u8]) -> Result<(), Error> {
        self.write_certificate(name, chain, key)
    }

    fn set_health(&self, body: &[u8]) -> Result<(), Error> {
        Ok(self.nginx.set_health_body(body)?)
    }

    fn stop(&self) -> Result<(), Error> {
        self.nginx.stop()?;
        let removed = self.wg.remove_managed()?;
        tracing::info!(?removed, "nginx stopped and tunnels removed");
        Ok(())
    }
}

/// The primary group id of `user`, from `/etc/passwd`.
fn primary_group(user: &str) -> Result<u32, Error> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(Error::io("read", "/etc/passwd"))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            (fields.next() == Some(user))
                .then(|| fields.nth(2)?.parse().ok())
                .flatten()
        })
        .ok_or_else(|| Error::UnknownUser(user.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_whose_pings_stop_goes_down_after_three_misses() {
        let mut pings = Pings::default();
        assert_eq!(pings.observe(true, true), LinkState::Up);
        // The path breaks; the last handshake stays fresh for minutes.
        assert_eq!(pings.observe(false, true), LinkState::Up);
        assert_eq!(pings.observe(false, true), LinkState::Up);
        assert_eq!(pings.observe(false, true), LinkState::Down);
        assert_eq!(pings.observe(false, true), LinkState::Down);
        assert_eq!(pings.observe(true, true), LinkState::Up);
    }

    #[test]
    fn an_origin_that_never_answers_pings_is_judged_by_its_handshake() {
        let mut pings = Pings::default();
        for _ in 0..5 {
            assert_eq!(pings.observe(false, true), LinkState::Up);
        }
        assert_eq!(pings.observe(false, false), LinkState::Down);
    }

    #[test]
    fn finds_primary_groups() {
        assert_eq!(primary_group("root").unwrap(), 0);
        let err = primary_group("kokoa-no-such-user").unwrap_err();
        assert!(err.to_string().contains("kokoa-no-such-user"), "{err}");
    }
}
