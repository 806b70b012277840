//! Bringing WireGuard interfaces up on this host and keeping them in step with a desired set.
//!
//! [`WgHost::apply`] takes the [`InterfaceConfig`]s a host should have and makes it so:
//! a missing interface is created (the kernel's WireGuard where `ip link add ... type
//! wireguard` works, else the userspace [`Implementation`]), loaded with `wg setconf`, given
//! its addresses (`ip address replace`), an MTU and brought up; an existing one is updated
//! with `wg syncconf`, which changes peers in place so live sessions are not dropped; and an
//! interface this layer manages (name starting with [`MANAGED_PREFIX`]) that is no longer
//! wanted is deleted. Anything else on the host is never touched.
//!
//! Userspace daemons are started **daemonised** (they fork into the background), not as
//! child processes of the caller: a tunnel must keep carrying traffic when the program that
//! set it up exits or restarts, and a restarted caller finds the interfaces again with
//! `wg show interfaces`. Deleting the link (`ip link del`) makes the daemon exit.
//!
//! The settings, private key included, reach `wg` through a file created with mode 0600 and
//! deleted right after, never through a command line, where every user could read it in
//! `ps`.
//!
//! Everything here is blocking (`std::process`): call it from a thread of its own, or
//! `spawn_blocking`, in async code.

use std::{
    ffi::OsString,
    fmt, fs,
    io::Write as _,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    str::FromStr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;

use crate::{Format, InterfaceConfig, InterfaceName, PublicKey, error::Error};

/// Interfaces whose name starts with this are managed by [`WgHost`]: only these are ever
/// deleted. [`InterfaceName::for_origin`] names start with it.
pub const MANAGED_PREFIX: &str = "kk";

/// The MTU set on an interface whose configuration names none: WireGuard's usual 1420
/// (1500 minus the largest WireGuard-over-IPv6 overhead of 80 bytes).
pub const DEFAULT_MTU: u16 = 1420;

/// A peer whose last handshake is older than this is considered gone. WireGuard renews a
/// session every two minutes while traffic (or a keepalive) flows, so 180 s leaves a margin.
pub const HANDSHAKE_FRESH: Duration = Duration::from_secs(180);

/// How long a userspace daemon may take to create its control socket.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which WireGuard implementation carries an interface when the kernel has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Implementation {
    /// The kernel module only (`ip link add ... type wireguard`); creating an interface
    /// fails where it is missing.
    Kernel,
    /// `wireguard-go`, the reference userspace implementation (Debian package
    /// `wireguard-go`).
    #[default]
    WireguardGo,
    /// Cloudflare's `boringtun-cli`. Its `wg show` handshake times are unreliable, which is
    /// why [`TunnelStatus::up`] also accepts a ping reply. boringtun-cli 0.7.1 answers
    /// `wg syncconf` on a configured interface with "Protocol error" and then stops
    /// answering its control socket, so an interface it runs takes its first configuration
    /// only: not for agents whose configuration changes.
    Boringtun,
    /// Built into the program itself ([`crate::userspace`], feature `userspace`, Linux):
    /// the program is started again as the interface's daemon, so it must call
    /// [`crate::userspace::run_if_asked`] first thing in `main`.
    #[cfg(all(feature = "userspace", target_os = "linux"))]
    Builtin,
}

impl Implementation {
    /// Every implementation this build offers.
    pub const ALL: &'static [Self] = &[
        Self::Kernel,
        Self::WireguardGo,
        Self::Boringtun,
        #[cfg(all(feature = "userspace", target_os = "linux"))]
        Self::Builtin,
    ];

    /// The name used on command lines: `kernel`, `wireguard-go`, `boringtun` or `builtin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::WireguardGo => "wireguard-go",
            Self::Boringtun => "boringtun",
            #[cfg(all(feature = "userspace", target_os = "linux"))]
            Self::Builtin => "builtin",
        }
    }
}

impl fmt::Display for Implementation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Implementation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .iter()
            .copied()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| Error::UnknownImplementation(s.chars().take(60).collect()))
    }
}

/// What [`WgHost::apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Applied {
    /// Interfaces that did not exist and were created.
    pub created: Vec<InterfaceName>,
    /// Existing interfaces brought in step with `wg syncconf`.
    pub updated: Vec<InterfaceName>,
    /// Managed interfaces deleted because they are no longer wanted.
    pub removed: Vec<InterfaceName>,
}

/// One peer's latest handshake and traffic, from [`WgHost::peers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer.
    pub public_key: PublicKey,
    /// Its latest completed handshake; `None` before the first.
    pub latest_handshake: Option<SystemTime>,
    /// Bytes received from it since the interface was made.
    pub rx_bytes: u64,
    /// Bytes sent to it since the interface was made.
    pub tx_bytes: u64,
}

impl PeerStats {
    /// The figures of `public_key`'s peer.
    pub fn new(
        public_key: PublicKey,
        latest_handshake: Option<SystemTime>,
        rx_bytes: u64,
        tx_bytes: u64,
    ) -> Self {
        Self {
            public_key,
            latest_handshake,
            rx_bytes,
            tx_bytes,
        }
    }
}

/// The state of one tunnel, from [`WgHost::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunnelStatus {
    /// The most recent handshake with any peer of the interface.
    pub latest_handshake: Option<SystemTime>,
    /// Round trip of one ping to the peer's tunnel address; `None` when it went unanswered.
    pub rtt: Option<Duration>,
    /// Bytes received from the interface's peers since it was made.
    pub rx_bytes: u64,
    /// Bytes sent to them.
    pub tx_bytes: u64,
}

impl TunnelStatus {
    /// Up when a handshake happened within [`HANDSHAKE_FRESH`] or the peer answered a ping.
    pub fn up(&self) -> bool {
        self.rtt.is_some()
            || self.latest_handshake.is_some_and(|at| {
                SystemTime::now()
                    .duration_since(at)
                    .is_ok_and(|age| age <= HANDSHAKE_FRESH)
            })
    }
}

/// The WireGuard interfaces of one host, driven through `ip`, `wg` and a userspace daemon.
///
/// Cheap to clone; holds no state besides its settings, so a restarted program picks up
/// where the previous one left off. Clones take turns in [`apply`](Self::apply) and
/// [`settle`](Self::settle), so a settled key change is never undone by an apply that read
/// the handshakes before it.
#[derive(Debug, Clone)]
pub struct WgHost {
    implementation: Implementation,
    scratch_dir: PathBuf,
    prefix: Vec<OsString>,
    turn: Arc<Mutex<()>>,
}

impl WgHost {
    /// A host using `implementation` where the kernel has no WireGuard, writing its
    /// short-lived settings files (mode 0600) into `scratch_dir`, which must exist and should
    /// be readable by root only.
    pub fn new(implementation: Implementation, scratch_dir: impl Into<PathBuf>) -> Self {
        Self {
            implementation,
            scratch_dir: scratch_dir.into(),
            prefix: Vec::new(),
            turn: Arc::default(),
        }
    }

    /// Runs every command behind `prefix`, e.g. `nsenter -t PID -m -n` to drive another
    /// network and mount namespace.
    pub fn with_command_prefix<I, S>(mut self, prefix: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.prefix = prefix.into_iter().map(Into::into).collect();
        self
    }

    /// Makes the host's WireGuard interfaces match `desired` (see the module documentation).
    ///
    /// Stops at the first failure; applying again retries what is left. Fails without
    /// touching anything when two entries share a name.
    pub fn apply(&self, desired: &[InterfaceConfig]) -> Result<Applied, Error> {
        for (n, wanted) in desired.iter().enumerate() {
            if let Some(m) = desired[..n].iter().position(|d| d.name == wanted.name) {
                return Err(Error::Duplicate {
                    what: "interface name",
                    value: wanted.name.to_string(),
                    first: format!("entry {m}"),
                    second: format!("entry {n}"),
                });
            }
        }
        let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
        let existing = self.interfaces()?;
        let mut applied = Applied::default();
        for wanted in desired {
            if existing.contains(&wanted.name) {
                let settled = if wanted.key_changes.is_empty() {
                    wanted.clone()
                } else {
                    settled(wanted, &self.latest_handshakes(&wanted.name)?)
                };
                self.load(&self.keeping_port(&settled)?, "syncconf")?;
                applied.updated.push(wanted.name.clone());
            } else {
                self.create(&wanted.name)?;
                self.load(wanted, "setconf")?;
                applied.created.push(wanted.name.clone());
            }
            self.configure_link(wanted)?;
        }
        for name in existing {
            let managed = name.as_str().starts_with(MANAGED_PREFIX);
            if managed && !desired.iter().any(|d| d.name == name) {
                self.remove(&name)?;
                applied.removed.push(name);
            }
        }
        Ok(applied)
    }

    /// Carries out the key changes of `desired` whose new key has completed a handshake
    /// since they were applied (see [`crate::rotation`]), on interfaces that exist; returns
    /// the interfaces changed. Reads only the handshakes while nothing is due, so it can run
    /// a few times a second while a change is pending.
    pub fn settle(&self, desired: &[InterfaceConfig]) -> Result<Vec<InterfaceName>, Error> {
        let mut changed = Vec::new();
        for wanted in desired.iter().filter(|w| !w.key_changes.is_empty()) {
            let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
            let Ok(handshakes) = self.latest_handshakes(&wanted.name) else {
                continue;
            };
            let present = |key: &PublicKey| handshakes.iter().any(|(k, _)| k == key);
            let due = wanted
                .key_changes
                .iter()
                .any(|c| present(&c.from) && shaken(&handshakes, &c.to));
            if due {
                let settled = settled(wanted, &handshakes);
                self.load(&self.keeping_port(&settled)?, "syncconf")?;
                changed.push(wanted.name.clone());
            }
        }
        Ok(changed)
    }

    /// Every WireGuard interface of this network namespace, managed or not.
    ///
    /// `wg show interfaces` also lists the control sockets of userspace interfaces that
    /// live in other network namespaces sharing `/run/wireguard`, so only names that are
    /// links here (`ip link show`) count.
    pub fn interfaces(&self) -> Result<Vec<InterfaceName>, Error> {
        let wg = self.run("wg", &["show", "interfaces"])?;
        let links = self.run("ip", &["-o", "link", "show"])?;
        let links = parse_links(&links);
        Ok(wg
            .split_whitespace()
            .filter(|name| links.contains(name))
            .filter_map(|name| InterfaceName::new(name).ok())
            .collect())
    }

    /// Deletes interface `name`; a userspace daemon exits with it.
    pub fn remove(&self, name: &InterfaceName) -> Result<(), Error> {
        self.run("ip", &["link", "delete", "dev", name.as_str()])
            .map(drop)
    }

    /// Deletes every managed interface (name starting with [`MANAGED_PREFIX`]) and returns
    /// their names.
    pub fn remove_managed(&self) -> Result<Vec<InterfaceName>, Error> {
        let managed: Vec<_> = self
            .interfaces()?
            .into_iter()
            .filter(|n| n.as_str().starts_with(MANAGED_PREFIX))
            .collect();
        for name in &managed {
            self.remove(name)?;
        }
        Ok(managed)
    }

    /// The latest handshake with each peer of `name` (`wg show NAME latest-handshakes`);
    /// `None` for a peer that never completed one.
    pub fn latest_handshakes(
        &self,
        name: &InterfaceName,
    ) -> Result<Vec<(PublicKey, Option<SystemTime>)>, Error> {
        let out = self.run("wg", &["show", name.as_str(), "latest-handshakes"])?;
        Ok(parse_handshakes(&out))
    }

    /// Every peer of `name` with its latest handshake and traffic (`wg show NAME
    /// latest-handshakes` and `transfer`: never `dump`, which prints the private key).
    pub fn peers(&self, name: &InterfaceName) -> Result<Vec<PeerStats>, Error> {
        let handshakes = self.latest_handshakes(name)?;
        let transfer = parse_transfer(&self.run("wg", &["show", name.as_str(), "transfer"])?);
        Ok(handshakes
            .into_iter()
            .map(|(public_key, latest_handshake)| {
                let (rx_bytes, tx_bytes) = transfer
                    .iter()
                    .find(|(key, ..)| *key == public_key)
                    .map_or((0, 0), |(_, rx, tx)| (*rx, *tx));
                PeerStats::new(public_key, latest_handshake, rx_bytes, tx_bytes)
            })
            .collect())
    }

    /// The round trip of one ping to `ip`, waiting at most `timeout` (rounded up to whole
    /// seconds, as `ping -W` wants); `None` when no reply came or ping could not run.
    pub fn ping(&self, ip: IpAddr, timeout: Duration) -> Option<Duration> {
        let wait = timeout.as_secs_f64().ceil().max(1.0).to_string();
        let out = self
            .command("ping")
            .args(["-n", "-c", "1", "-W", &wait])
            .arg(ip.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        parse_ping_time(&String::from_utf8_lossy(&out.stdout))
    }

    /// The state of the tunnel on interface `name` towards `peer_ip`: its latest handshake
    /// and one ping (bounded by `ping_timeout`).
    pub fn status(
        &self,
        name: &InterfaceName,
        peer_ip: IpAddr,
        ping_timeout: Duration,
    ) -> TunnelStatus {
        let peers = self.peers(name).unwrap_or_default();
        TunnelStatus {
            latest_handshake: peers.iter().filter_map(|p| p.latest_handshake).max(),
            rtt: self.ping(peer_ip, ping_timeout),
            rx_bytes: peers.iter().map(|p| p.rx_bytes).sum(),
            tx_bytes: peers.iter().map(|p| p.tx_bytes).sum(),
        }
    }

    /// Creates an empty interface: in the kernel when it can, else with the userspace
    /// daemon, which forks into the background once its interface and socket exist.
    fn create(&self, name: &InterfaceName) -> Result<(), Error> {
        let kernel = self.run(
            "ip",
            &["link", "add", "dev", name.as_str(), "type", "wireguard"],
        );
        let (program, mut cmd) = match (self.implementation, kernel) {
            (_, Ok(_)) => return Ok(()),
            (Implementation::Kernel, Err(e)) => return Err(e),
            (Implementation::WireguardGo, Err(_)) => ("wireguard-go", self.command("wireguard-go")),
            (Implementation::Boringtun, Err(_)) => {
                let mut cmd = self.command("boringtun-cli");
                // boringtun drops privileges to the user who ran sudo unless told otherwise;
                // it would then lose access to its own control socket. (The flag, not its
                // environment variable: boringtun-cli 0.7 takes only `true` or `false`.)
                cmd.arg("--disable-drop-privileges");
                ("boringtun-cli", cmd)
            }
            #[cfg(all(feature = "userspace", target_os = "linux"))]
            (Implementation::Builtin, Err(_)) => {
                let mut exe = std::env::current_exe().map_err(|source| Error::Spawn {
                    program: "the running program".to_owned(),
                    source,
                })?;
                // Replaced on disk (an upgrade before the restart): run the image this
                // process runs, which the kernel keeps.
                if exe.to_string_lossy().ends_with(" (deleted)") && self.prefix.is_empty() {
                    exe = PathBuf::from("/proc/self/exe");
                }
                let mut cmd = self.command(exe);
                cmd.arg(crate::userspace::DAEMON_ARG);
                ("the built-in WireGuard", cmd)
            }
        };
        cmd.arg(name.as_str())
            .env_remove("WG_PROCESS_FOREGROUND")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        check(&mut cmd, program)?;
        // The daemon's parent returns once the interface exists, but give a slow start a
        // bounded grace period before failing.
        let start = Instant::now();
        while self.run("wg", &["show", name.as_str()]).is_err() {
            if start.elapsed() > CREATE_TIMEOUT {
                return Err(Error::Timeout {
                    what: format!("{program} did not create interface {name}"),
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// `wanted`, with the port the interface listens on now when `wanted` names none.
    ///
    /// `wg syncconf` with no `ListenPort` moves the interface to a new random port. A side
    /// that dials out (an origin) has no fixed port, but its peers answer to the port they
    /// last heard from: moving it would cut every session until the next keepalive.
    fn keeping_port(&self, wanted: &InterfaceConfig) -> Result<InterfaceConfig, Error> {
        let mut config = wanted.clone();
        if config.config.interface.listen_port.is_none() {
            let out = self.run("wg", &["show", wanted.name.as_str(), "listen-port"])?;
            config.config.interface.listen_port = out.trim().parse().ok().filter(|p| *p != 0);
        }
        Ok(config)
    }

    /// `wg setconf` or `wg syncconf` with the settings in a 0600 file.
    fn load(&self, wanted: &InterfaceConfig, verb: &str) -> Result<(), Error> {
        let file = SecretFile::write(
            &self.scratch_dir,
            wanted.name.as_str(),
            &wanted.config.render(Format::SetConf),
        )?;
        let path = file.path.to_string_lossy().into_owned();
        self.run("wg", &[verb, wanted.name.as_str(), &path])
            .map(drop)
    }

    /// Addresses (adding missing ones, dropping stale global ones), MTU, up.
    fn configure_link(&self, wanted: &InterfaceConfig) -> Result<(), Error> {
        let name = wanted.name.as_str();
        let addresses = &wanted.config.interface.addresses;
        let current = self.run("ip", &["-o", "address", "show", "dev", name])?;
        for stale in parse_addresses(&current)
            .into_iter()
            .filter(|a| !addresses.contains(a))
        {
            self.run("ip", &["address", "del", &stale.to_string(), "dev", name])?;
        }
        for address in addresses {
            self.run(
                "ip",
                &["address", "replace", &address.to_string(), "dev", name],
            )?;
        }
        let mtu = wanted
            .config
            .interface
            .mtu
            .unwrap_or(DEFAULT_MTU)
            .to_string();
        self.run("ip", &["link", "set", "dev", name, "mtu", &mtu, "up"])
            .map(drop)
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    /// Runs `program args` and returns its standard output.
    fn run(&self, program: &str, args: &[&str]) -> Result<String, Error> {
        let mut cmd = self.command(program);
        cmd.args(args).stdin(Stdio::null());
        check(&mut cmd, program)
    }
}

/// Runs `cmd`; a failure carries what it printed on standard error. Command lines never hold
/// a secret, so they may appear in the error.
fn check(cmd: &mut Command, program: &str) -> Result<String, Error> {
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: program.to_owned(),
        source,
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let command = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    Err(Error::Command {
        command,
        message: if stderr.is_empty() {
            format!("exited with {}", out.status)
        } else {
            stderr
        },
    })
}

/// A file readable by its owner only, deleted when dropped.
struct SecretFile {
    path: PathBuf,
}

impl SecretFile {
    fn write(dir: &Path, stem: &str, contents: &str) -> Result<Self, Error> {
        // Unique per process and call, and opened with O_EXCL: a file planted at the name
        // in advance (or a symlink) makes the write fail instead of being followed.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{stem}.{}.{n}.setconf", std::process::id()));
        let io = |action| {
            let path = path.clone();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("create"))?;
        let file_guard = Self { path: path.clone() };
        file.write_all(contents.as_bytes()).map_err(io("write"))?;
        Ok(file_guard)
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `key` has completed a handshake, by `wg show latest-handshakes`.
fn shaken(handshakes: &[(PublicKey, Option<SystemTime>)], key: &PublicKey) -> bool {
    handshakes.iter().any(|(k, at)| k == key && at.is_some())
}

/// `wanted` with the key changes carried out whose new key has a handshake.
fn settled(
    wanted: &InterfaceConfig,
    handshakes: &[(PublicKey, Option<SystemTime>)],
) -> InterfaceConfig {
    let mut settled = wanted.clone();
    settled.config = wanted
        .config
        .settle(&wanted.key_changes, |key| shaken(handshakes, key));
    settled
}

/// Parses `wg show IFACE latest-handshakes`: `KEY<TAB>SECONDS` per peer, 0 for never.
fn parse_handshakes(out: &str) -> Vec<(PublicKey, Option<SystemTime>)> {
    out.lines()
        .filter_map(|line| {
            let (key, at) = line.split_once('\t')?;
            let key = PublicKey::from_base64(key.trim()).ok()?;
            let secs: u64 = at.trim().parse().ok()?;
            let at = (secs > 0).then(|| UNIX_EPOCH + Duration::from_secs(secs));
            Some((key, at))
        })
        .collect()
}

/// Parses `wg show IFACE transfer`: `KEY<TAB>RX<TAB>TX` per peer, in bytes.
fn parse_transfer(out: &str) -> Vec<(PublicKey, u64, u64)> {
    out.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let key = PublicKey::from_base64(fields.next()?.trim()).ok()?;
            let rx = fields.next()?.trim().parse().ok()?;
            let tx = fields.next()?.trim().parse().ok()?;
            Some((key, rx, tx))
        })
        .collect()
}

/// The `time=0.045 ms` of a ping reply line.
fn parse_ping_time(out: &str) -> Option<Duration> {
    let rest = &out[out.find("time=")? + "time=".len()..];
    let value = rest.split_whitespace().next()?;
    let ms: f64 = value.parse().ok()?;
    (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0))
}

/// The link names of `ip -o link show`: `7: kk0123456789ab: <POINTOPOINT,...> ...`, or
/// `NAME@PEER:` for paired links.
fn parse_links(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|line| {
            let name = line.split(": ").nth(1)?;
            Some(name.split('@').next().unwrap_or(name))
        })
        .collect()
}

/// The addresses of `ip -o address show dev IFACE` except link-local ones, which the kernel
/// manages.
fn parse_addresses(out: &str) -> Vec<IpNet> {
    out.lines()
        .filter(|line| !line.contains(" scope link"))
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::PrivateKey;

    #[test]
    fn implementation_names_round_trip() {
        for &i in Implementation::ALL {
            assert_eq!(i.as_str().parse::<Implementation>().unwrap(), i);
        }
        let err = "wireguard".parse::<Implementation>().unwrap_err();
        assert!(err.to_string().contains("\"wireguard\""), "{err}");
    }

    #[test]
    fn reads_transfer() {
        let (a, b) = (
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
        );
        let out = format!("{a}\t1234\t5678\n{b}\t0\t0\nnot a key\t1\t2\n");
        assert_eq!(parse_transfer(&out), vec![(a, 1234, 5678), (b, 0, 0)]);
    }

    #[test]
    fn reads_handshakes() {
        let (a, b) = (
            PrivateKey::generate().public_key(),
            PrivateKey::generate().public_key(),
        );
        let out = format!("{a}\t1700000000\n{b}\t0\n");
        assert_eq!(
            parse_handshakes(&out),
            vec![
                (a, Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))),
                (b, None)
            ]
        );
    }

    #[test]
    fn reads_ping_time() {
        let out = "PING 10.0.1.1 (10.0.1.1) 56(84) bytes of data.\n\
                   64 bytes from 10.0.1.1: icmp_seq=1 ttl=64 time=0.734 ms\n";
        assert_eq!(parse_ping_time(out), Some(Duration::from_micros(734)));
        assert_eq!(parse_ping_time("1 packets transmitted, 0 received"), None);
    }

    #[test]
    fn reads_addresses_but_not_link_local_ones() {
        let out = "7: kk0123456789ab    inet 10.0.1.10/24 scope global kk0123456789ab\\       valid_lft forever preferred_lft forever\n\
                   7: kk0123456789ab    inet6 fd00::a/64 scope global \\       valid_lft forever preferred_lft forever\n\
                   7: kk0123456789ab    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever\n";
        let want: Vec<IpNet> = vec![
            "10.0.1.10/24".parse().unwrap(),
            "fd00::a/64".parse().unwrap(),
        ];
        assert_eq!(parse_addresses(out), want);
    }

    #[test]
    fn reads_link_names() {
        let out = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT\n\
                   5: kkv-e@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP\n\
                   7: kk0123456789ab: <POINTOPOINT,MULTICAST,NOARP,UP,LOWER_UP> mtu 1420 qdisc fq_codel\n";
        assert_eq!(parse_links(out), vec!["lo", "kkv-e", "kk0123456789ab"]);
    }

    #[test]
    fn status_is_up_with_a_fresh_handshake_or_a_reply() {
        let now = SystemTime::now();
        let fresh = TunnelStatus {
            latest_handshake: Some(now - Duration::from_secs(60)),
            rtt: None,
            rx_bytes: 0,
            tx_bytes: 0,
        };
        let stale = TunnelStatus {
            latest_handshake: Some(now - Duration::from_secs(600)),
            ..fresh
        };
        let replied = TunnelStatus {
            latest_handshake: None,
            rtt: Some(Duration::from_millis(1)),
            ..fresh
        };
        assert!(fresh.up() && replied.up());
        assert!(!stale.up());
    }

    #[test]
    fn secret_file_is_private_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = SecretFile::write(dir.path(), "kk1", "[Interface]\n").unwrap();
        let meta = fs::metadata(&file.path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_to_string(&file.path).unwrap(), "[Interface]\n");
        let path = file.path.clone();
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_duplicate_names_before_running_anything() {
        let key = PrivateKey::generate();
        let config = crate::Config::new(crate::Interface::new(key), Vec::new());
        let entry = InterfaceConfig::new(InterfaceName::new("kk1").unwrap(), config);
        // A prefix that cannot run proves nothing was attempted.
        let host = WgHost::new(Implementation::default(), "/nonexistent")
            .with_command_prefix(["/nonexistent/prefix"]);
        let err = host.apply(&[entry.clone(), entry]).unwrap_err();
        assert!(err.to_string().contains("kk1"), "{err}");
    }
}
