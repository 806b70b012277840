//! A provider whose "VPS" is a network namespace on this machine (provider `lab`), so the
//! control plane's edge automation — create, enroll, serve, destroy, replace — runs end to
//! end on one Linux machine. It needs root.
//!
//! Each instance is a namespace named `PREFIX<n>` (`kl-vps-3`, also its [`InstanceId`])
//! with a veth `eth0` whose other end, of the same name as the namespace, is a port of a
//! bridge in another namespace (the lab's `kl-hub`/`br0`). It gets the next free address
//! of a configured range, and the edge is brought up the way the user data's bootstrap
//! script does it on a real VPS, with the lab's paths: `kokoa-edge enroll` with the token in
//! the environment, then `kokoa-edge run` in its own session, in its own mount namespace
//! with a private `/run/wireguard`. When the user data names a download, the agent is
//! downloaded as the script does it (from a control plane with a CA pin without checking the
//! certificate; installed only if the SHA-256 matches); for a package, the configured
//! binary is used. Apt and systemd are left out.
//!
//! What it made is recorded in `DIR/state.json` before it is made, so a provisioner started
//! later over the same directory reports and destroys instances of an earlier one. Several
//! provisioners may use one directory at once — in this process or in others, e.g. two
//! control planes, a leader and the stand-by that takes over: each operation takes an
//! exclusive lock on `DIR/lock` (`flock`), reads the state file afresh, and writes it back
//! atomically (a temporary file, synced, renamed over it), so none works from a stale copy
//! or sees half a file. An edge's bring-up belongs to the process that created it; should
//! that process end before the agent started, the others report the instance `Stopped`.
//!
//! An [`InstanceConfig::idempotency_key`] is kept with the instance in the state file, and
//! [`list_instances`](Provisioner::list_instances) reads the instances carrying a tag from
//! there. Like the cloud providers other than EC2, the lab does not refuse a second
//! instance with the same key: the caller looks first, with
//! [`find_instance`](Provisioner::find_instance).
//!
//! | file | what |
//! |---|---|
//! | `DIR/state.json` | instance id → address, region, name, tags, idempotency key, edge node, agent pid, why it stopped |
//! | `DIR/lock` | the lock every operation holds while it reads and writes `state.json` |
//! | `DIR/faults/create-timeout` | a fault switch for end-to-end checks: while it exists, the next [`create_instance`](Provisioner::create_instance) makes its instance as usual (recorded, namespace, agent brought up), removes the file, and fails as a provider timeout would ([`Error::Transient`], retryable) — once |
//! | `DIR/<id>/edge.log` | what the provisioner did, and the output of `kokoa-edge` |
//! | `DIR/<id>/state/` | the agent's state directory (its credential) |
//! | `DIR/<id>/nginx/` | nginx's prefix |

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File},
    io::{self, Write as _},
    net::Ipv4Addr,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use ipnet::Ipv4Net;
use kokoa_core::{EdgeNodeId, Name};
use rustix::process::{Pid, Signal, kill_process, kill_process_group};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::{
    AgentSource, EdgeBootstrap, Error, IdempotencyKey, Instance, InstanceConfig, InstanceId,
    InstanceStatus, Provisioner, TaggedInstance,
};

const NAME: &str = "lab";
/// The largest user data accepted, as at the cloud providers (rendered user data is ~4 KiB).
const MAX_USER_DATA: usize = 64 * 1024;
/// Longest namespace prefix: with up to five digits after it, the name still fits in an
/// interface name (15 bytes), which the bridge port shares.
const MAX_PREFIX: usize = 10;
/// Instances are numbered below this, so their names fit in 15 bytes.
const MAX_NUMBER: u32 = 100_000;
/// How long `kokoa-edge enroll` may take.
const ENROLL_LIMIT: Duration = Duration::from_secs(120);
/// How long processes get after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
/// The `PATH` of the edge's processes, which get no other variable of this process (the
/// control plane's environment may hold its own secrets).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Runs the rest of its arguments in a mount namespace with a private `/run/wireguard`:
/// userspace WireGuard's control sockets live there and are otherwise shared by every
/// namespace on the machine.
const OWN_WIREGUARD: &str =
    "mkdir -p /run/wireguard && mount -t tmpfs tmpfs /run/wireguard && exec \"$@\"";
/// The fault switch below `DIR`: see the module documentation.
const CREATE_TIMEOUT: &str = "faults/create-timeout";
/// How long the timeout the fault switch plays took, in its message: the cloud clients'
/// limit for one call.
const FAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How a [`LabProvisioner`] builds its instances. Serde-ready, so it can sit in a
/// configuration file (unknown fields are refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// The namespace holding the bridge, e.g. `kl-hub`.
    pub hub_netns: String,
    /// The bridge inside it, e.g. `br0`.
    pub bridge: String,
    /// The network the bridge carries, e.g. `10.99.0.0/24`.
    pub network: Ipv4Net,
    /// The first address to hand out, e.g. `10.99.0.30`.
    pub first_address: Ipv4Addr,
    /// The last address to hand out, e.g. `10.99.0.60`.
    pub last_address: Ipv4Addr,
    /// The instances' default route, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Where the state file and each instance's files go. nginx's workers read files
    /// under it, so it and its parents must be searchable by them (it is made 0755).
    pub dir: PathBuf,
    /// The `kokoa-edge` binary.
    pub edge_binary: PathBuf,
    /// The `nginx` binary the agent runs.
    pub nginx_binary: PathBuf,
    /// The userspace WireGuard, as `kokoa-edge run --wg-userspace` takes it
    /// (`wireguard-go`, `boringtun`).
    pub wireguard: String,
    /// Namespace names start with this, e.g. `kl-vps-`: 1–10 characters of `a-z`, `0-9`
    /// and `-`.
    pub netns_prefix: String,
    /// The regions accepted in [`InstanceConfig::region`], e.g. `lab-a`, `lab-b`. Any size
    /// is accepted.
    pub regions: Vec<Name>,
}

impl LabConfig {
    fn check(&self) -> Result<(), Error> {
        let label = |field, value: &str, max: usize, extra: &[u8]| {
            let ok = (1..=max).contains(&value.len())
                && value != "."
                && value != ".."
                && value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b));
            match ok {
                true => Ok(()),
                false => Err(Error::invalid(
                    field,
                    value,
                    "expected a short name of a-z, 0-9 and the punctuation allowed there",
                )),
            }
        };
        label("hub_netns", &self.hub_netns, 64, b"-_.")?;
        label("bridge", &self.bridge, 15, b"-_.")?;
        label("netns_prefix", &self.netns_prefix, MAX_PREFIX, b"-")?;
        label("wireguard", &self.wireguard, 32, b"-")?;
        let net = self.network;
        let host = |a: Ipv4Addr| net.contains(&a) && a != net.network() && a != net.broadcast();
        let range = format!("{}-{}", self.first_address, self.last_address);
        if !host(self.first_address) || !host(self.last_address) {
            return Err(Error::invalid(
                "address range",
                &range,
                "both ends must be host addresses of the network",
            ));
        }
        if self.first_address > self.last_address {
            return Err(Error::invalid(
                "address range",
                &range,
                "the first address comes after the last",
            ));
        }
        if let Some(gateway) = self.gateway {
            if !host(gateway) {
                return Err(Error::invalid(
                    "gateway",
                    &gateway.to_string(),
                    "expected a host address of the network",
                ));
            }
            if (self.first_address..=self.last_address).contains(&gateway) {
                return Err(Error::invalid(
                    "gateway",
                    &gateway.to_string(),
                    "it is inside the range of addresses handed out",
                ));
            }
        }
        if self.regions.is_empty() {
            return Err(Error::invalid(
                "regions",
                "",
                "name at least one region, e.g. lab-a",
            ));
        }
        if !self.dir.is_absolute() {
            return Err(Error::invalid(
                "dir",
                &self.dir.display().to_string(),
                "expected an absolute path",
            ));
        }
        for (field, path) in [
            ("edge_binary", &self.edge_binary),
            ("nginx_binary", &self.nginx_binary),
        ] {
            if !path.is_absolute() || !path.is_file() {
                return Err(Error::invalid(
                    field,
                    &path.display().to_string(),
                    "no such file: give the absolute path of the installed binary",
                ));
            }
        }
        Ok(())
    }
}

/// The edge provisioner of a lab: instances are network namespaces on this machine
/// (provider name `lab`).
///
/// [`create_instance`](Provisioner::create_instance) checks the request (provider `lab`,
/// a configured region, no address), reads the enrollment out of the user data
/// ([`EdgeBootstrap::from_user_data`]), takes a free address, makes the namespace and its
/// veth on the bridge, and returns [`InstanceStatus::Provisioning`] at once. The edge comes
/// up in the background: `kokoa-edge enroll`, then `kokoa-edge run`, which reports ready
/// to the control plane by itself once its configuration applied.
/// [`instance_status`](Provisioner::instance_status) is `Running` with the address while
/// the namespace and the agent live, `Stopped` when the bring-up failed or the agent
/// exited (the reason is logged and written to the instance's `edge.log`), `Gone` once
/// destroyed. [`destroy_instance`](Provisioner::destroy_instance) stops the agent's process
/// group and everything else in the namespace (nginx, WireGuard), deletes the namespace
/// and the instance's directory, and frees the address.
///
/// Needs root and a Tokio runtime. A cheap handle: clones share the configuration; every
/// handle, in this process or another, shares the instances through the directory.
///
/// ```no_run
/// use std::sync::Arc;
/// use kokoa_core::Name;
/// use kokoa_provision::{Provisioner, lab::{LabConfig, LabProvisioner}};
///
/// let lab = LabProvisioner::new(LabConfig {
///     hub_netns: "kl-hub".into(),
///     bridge: "br0".into(),
///     network: "10.99.0.0/24".parse()?,
///     first_address: "10.99.0.30".parse()?,
///     last_address: "10.99.0.60".parse()?,
///     gateway: None,
///     dir: "/tmp/kokoa-lab/vps".into(),
///     edge_binary: "/usr/local/bin/kokoa-edge".into(),
///     nginx_binary: "/usr/sbin/nginx".into(),
///     wireguard: "wireguard-go".into(),
///     netns_prefix: "kl-vps-".into(),
///     regions: vec![Name::parse("lab-a")?, Name::parse("lab-b")?],
/// })?;
/// let provisioner: Arc<dyn Provisioner> = Arc::new(lab);
/// assert_eq!(provisioner.name(), "lab");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LabProvisioner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LabConfig,
}

/// The state file as read under the directory's lock, which is held until this is dropped.
struct Locked {
    /// The open lock file: closing it releases the lock.
    _lock: File,
    state: State,
    dir: PathBuf,
}

impl Locked {
    /// Writes the state file (atomically: beside it, synced, then renamed over it).
    fn save(&self) -> Result<(), Error> {
        let path = self.dir.join("state.json");
        let temp = self.dir.join("state.json.new");
        let json = serde_json::to_vec_pretty(&self.state).map_err(|e| lab_error(e.to_string()))?;
        File::create(&temp)
            .and_then(|mut file| {
                file.write_all(&json)?;
                file.sync_all()
            })
            .map_err(|e| io_error("write", &temp, &e))?;
        fs::rename(&temp, &path).map_err(|e| io_error("write", &path, &e))
    }
}

/// What the provisioner made, as kept in `state.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// The number of the next instance; never reused, so an old id never names a new one.
    next: u32,
    instances: BTreeMap<InstanceId, Host>,
}

/// One instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Host {
    address: Ipv4Addr,
    region: Name,
    name: Name,
    node_id: EdgeNodeId,
    /// `kokoa-edge run`, once started.
    agent: Option<Process>,
    /// Why it does not run: the bring-up failed, or the agent exited.
    stopped: Option<String>,
    /// Set when destroying began, so a bring-up still under way starts no agent.
    destroying: bool,
    /// The tags it was created with, for [`Provisioner::list_instances`].
    #[serde(default)]
    tags: Vec<Name>,
    /// The caller's name for it ([`InstanceConfig::idempotency_key`]).
    #[serde(default)]
    idempotency_key: Option<IdempotencyKey>,
    /// The provisioner's process that brings the edge up: while it lives and no agent runs,
    /// the instance is provisioning; once it is gone without an agent, the bring-up was cut
    /// short. `None` in state files of older versions.
    #[serde(default)]
    supervisor: Option<Process>,
}

impl Host {
    /// Whether its bring-up ended without starting an agent (its process ended).
    fn cut_short(&self) -> bool {
        self.agent.is_none()
            && self.stopped.is_none()
            && !self.destroying
            && !self.supervisor.is_some_and(Process::alive)
    }

    fn status(&self, id: &InstanceId) -> InstanceStatus {
        if !netns_exists(id.as_str()) {
            InstanceStatus::Gone
        } else if self.destroying || self.stopped.is_some() || self.cut_short() {
            InstanceStatus::Stopped
        } else {
            match self.agent {
                None => InstanceStatus::Provisioning,
                Some(agent) if agent.alive() => InstanceStatus::Running {
                    ipv4: Some(self.address),
                    ipv6: None,
                },
                Some(_) => InstanceStatus::Stopped,
            }
        }
    }
}

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Process {
    pid: u32,
    /// Clock ticks after boot (`/proc/PID/stat` field 22).
    start_time: u64,
}

impl Process {
    fn of(pid: u32) -> Option<Self> {
        start_time(pid).map(|start_time| Self { pid, start_time })
    }

    /// Whether it still runs (a zombie does not).
    fn alive(self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }

    fn pid(self) -> Option<Pid> {
        i32::try_from(self.pid).ok().and_then(Pid::from_raw)
    }
}

impl LabProvisioner {
    /// A provisioner for `config`: checks it, creates its directory (0755) and reads the
    /// state file earlier provisioners left there (and others may be using).
    ///
    /// An instance whose bring-up was cut short by the end of the process that created it
    /// (no agent was started) is reported as [`InstanceStatus::Stopped`], the reason
    /// recorded.
    pub fn new(config: LabConfig) -> Result<Self, Error> {
        config.check()?;
        make_dir(&config.dir)?;
        let inner = Inner { config };
        let mut locked = inner.lock()?;
        let mut changed = false;
        for (id, host) in &mut locked.state.instances {
            if host.cut_short() {
                let reason =
                    "its bring-up was cut short: the provisioner stopped before the agent started";
                tracing::warn!(instance = %id, "lab instance {id}: {reason}");
                host.stopped = Some(reason.to_owned());
                changed = true;
            }
        }
        if changed {
            locked.save()?;
        }
        drop(locked);
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LabConfig {
        &self.inner.config
    }

    /// The log of instance `id`: what the provisioner did and what `kokoa-edge` printed.
    pub fn log_path(&self, id: &InstanceId) -> PathBuf {
        self.inner.log_path(id)
    }
}

impl Inner {
    /// Makes the namespace of a recorded instance and its link to the bridge.
    async fn make_network(&self, id: &InstanceId, address: Ipv4Addr) -> Result<(), Error> {
        let LabConfig {
            hub_netns: hub,
            bridge,
            network,
            gateway,
            ..
        } = &self.config;
        let ns = id.as_str();
        let cidr = format!("{address}/{}", network.prefix_len());
        ip(&["netns", "add", ns]).await?;
        // Made inside the two namespaces at once, so no name is ever taken in this one.
        ip(&[
            "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", ns, "netns", hub,
        ])
        .await?;
        ip(&["-n", hub, "link", "set", ns, "master", bridge]).await?;
        ip(&["-n", hub, "link", "set", ns, "up"]).await?;
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"]).await?;
        ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        if let Some(gateway) = gateway {
            let gateway = gateway.to_string();
            ip(&["-n", ns, "route", "add", "default", "via", &gateway]).await?;
        }
        Ok(())
    }

    /// Takes the directory's lock — waiting while another provisioner, of this process or
    /// another, holds it — and reads the state file afresh.
    ///
    /// The lock is held until the answer is dropped, and every holder holds it only for a
    /// few file operations (never across an `.await`), so the wait is short; it blocks the
    /// thread, as a file read would.
    fn lock(&self) -> Result<Locked, Error> {
        let dir = &self.config.dir;
        let path = dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| io_error("open", &path, &e))?;
        // Each call opens the file anew, so the lock also keeps this process's threads
        // apart: flock(2) locks of separate opens exclude each other.
        loop {
            match file.lock() {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error("lock", &path, &e)),
            }
        }
        let state = read_state(&self.config)?;
        Ok(Locked {
            _lock: file,
            state,
            dir: dir.clone(),
        })
    }

    /// Changes the record of `id`, if it is still there, and saves.
    fn update(&self, id: &InstanceId, change: impl FnOnce(&mut Host)) {
        let saved = self.lock().and_then(|mut locked| {
            let Some(host) = locked.state.instances.get_mut(id) else {
                return Ok(());
            };
            change(host);
            locked.save()
        });
        if let Err(e) = saved {
            tracing::error!(instance = %id, error = %e, "cannot record a lab instance's state");
        }
    }

    fn forget(&self, id: &InstanceId) -> Result<(), Error> {
        let mut locked = self.lock()?;
        locked.state.instances.remove(id);
        locked.save()
    }

    fn host_dir(&self, id: &InstanceId) -> PathBuf {
        self.config.dir.join(id.as_str())
    }

    fn log_path(&self, id: &InstanceId) -> PathBuf {
        self.host_dir(id).join("edge.log")
    }

    /// Appends a line of the provisioner's own to the instance's log.
    fn note(&self, id: &InstanceId, line: &str) {
        let path = self.log_path(id);
        let written = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "kokoa-provision lab: {line}"));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write a lab instance's log");
        }
    }

    /// A `kokoa-edge` command run inside the instance's namespace and directory, with only
    /// `PATH` set and its output appended to the instance's log.
    fn edge_command(&self, id: &InstanceId, args: &[&str]) -> Result<Command, Error> {
        let path = self.log_path(id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, &e))?;
        let err = log.try_clone().map_err(|e| io_error("open", &path, &e))?;
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", id.as_str()])
            .args(args)
            .current_dir(self.host_dir(id))
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        Ok(command)
    }

    /// Downloads the agent as the user data's script does: over HTTPS (from a control plane
    /// with its own CA, which is pinned, without checking the certificate: the SHA-256 from
    /// the user data vouches for the binary), installed only if the SHA-256 matches.
    async fn download_agent(
        &self,
        id: &InstanceId,
        bootstrap: &EdgeBootstrap,
        url: &str,
        sha256: &str,
    ) -> Result<String, String> {
        use sha2::Digest as _;
        let own_ca = bootstrap.ca_pin.is_some()
            && url.starts_with(&format!("{}/", bootstrap.control_plane_url));
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .danger_accept_invalid_certs(own_ca)
            .build()
            .map_err(|e| format!("cannot set up the download: {e}"))?;
        let bytes = async {
            let response = client.get(url).send().await?.error_for_status()?;
            response.bytes().await
        }
        .await
        .map_err(|e| format!("download of {url} failed: {e}"))?;
        let got = sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        if got != sha256 {
            return Err(format!(
                "{url} has SHA-256 {got}, not {sha256} as the user data says: not installed"
            ));
        }
        let path = self.host_dir(id).join("kokoa-edge");
        fs::write(&path, &bytes).map_err(|e| io_error("write", &path, &e).to_string())?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(|e| io_error("chmod", &path, &e).to_string())?;
        self.note(
            id,
            &format!(
                "downloaded kokoa-edge from {url} ({} bytes), SHA-256 matches",
                bytes.len()
            ),
        );
        Ok(path.display().to_string())
    }

    /// Enrolls the edge and starts its agent; the agent's process when it started, `None`
    /// when the instance is being destroyed.
    async fn bring_up(
        &self,
        id: &InstanceId,
        bootstrap: &EdgeBootstrap,
    ) -> Result<Option<Child>, String> {
        let dir = self.host_dir(id);
        let state_dir = dir.join("state").display().to_string();
        let edge = match &bootstrap.agent {
            AgentSource::Download { url, sha256 } => {
                self.download_agent(id, bootstrap, url, sha256).await?
            }
            _ => self.config.edge_binary.display().to_string(),
        };
        self.note(
            id,
            &format!(
                "enrolling edge {} with {}",
                bootstrap.node_id, bootstrap.control_plane_url
            ),
        );
        let mut enroll = self
            .edge_command(
                id,
                &[
                    &edge,
                    "enroll",
                    "--control-plane",
                    &bootstrap.control_plane_url,
                    "--state-dir",
                    &state_dir,
                ],
            )
            .map_err(|e| e.to_string())?;
        // In the environment: a command line is visible to every process in `ps`.
        enroll
            .env("KOKOA_ENROLL_TOKEN", bootstrap.enrollment_token.expose())
            .kill_on_drop(true);
        if let Some(pin) = &bootstrap.ca_pin {
            enroll.args(["--ca-pin", pin]);
        }
        let mut child = enroll
            .spawn()
            .map_err(|e| format!("cannot start `ip netns exec {id} {edge} enroll`: {e}"))?;
        let status = match tokio::time::timeout(ENROLL_LIMIT, child.wait()).await {
            Ok(status) => status.map_err(|e| format!("kokoa-edge enroll: {e}"))?,
            Err(_) => {
                return Err(format!(
                    "kokoa-edge enroll did not finish within {} s",
                    ENROLL_LIMIT.as_secs()
                ));
            }
        };
        if !status.success() {
            return Err(format!("kokoa-edge enroll failed ({status})"));
        }

        let nginx = self.config.nginx_binary.display().to_string();
        let prefix = dir.join("nginx").display().to_string();
        let mut run = self
            .edge_command(
                id,
                &[
                    "unshare",
                    "-m",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    OWN_WIREGUARD,
                    "sh",
                    &edge,
                    "run",
                    "--state-dir",
                    &state_dir,
                    "--nginx-prefix",
                    &prefix,
                    "--nginx-bin",
                    &nginx,
                    "--wg-userspace",
                    &self.config.wireguard,
                ],
            )
            .map_err(|e| e.to_string())?;
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of this process; it
        // makes the agent the leader of its own session and process group, detached from
        // the control plane's terminal, so destroying the instance can signal the group.
        unsafe {
            run.pre_exec(|| rustix::process::setsid().map(drop).map_err(io::Error::from));
        }
        // Started under the lock, so a destroy — by any provisioner over the directory —
        // either sees the agent or stops its start.
        let mut locked = self.lock().map_err(|e| e.to_string())?;
        let Some(host) = locked.state.instances.get_mut(id).filter(|h| !h.destroying) else {
            return Ok(None);
        };
        let child = run
            .spawn()
            .map_err(|e| format!("cannot start `ip netns exec {id} {edge} run`: {e}"))?;
        host.agent = child.id().and_then(Process::of);
        if let Err(e) = locked.save() {
            tracing::error!(instance = %id, error = %e, "cannot record a lab instance's agent");
        }
        Ok(Some(child))
    }

    /// Brings the edge up, then waits for its agent to exit; records why it stopped.
    async fn supervise(self: Arc<Self>, id: InstanceId, bootstrap: EdgeBootstrap) {
        let reason = match self.bring_up(&id, &bootstrap).await {
            Ok(None) => return,
            Ok(Some(mut agent)) => {
                self.note(
                    &id,
                    &format!("kokoa-edge run started (pid {})", agent.id().unwrap_or(0)),
                );
                match agent.wait().await {
                    Ok(status) => format!("kokoa-edge run exited ({status})"),
                    Err(e) => format!("kokoa-edge run: {e}"),
                }
            }
            Err(reason) => reason,
        };
        let destroyed = match self.lock() {
            Ok(locked) => locked.state.instances.get(&id).is_none_or(|h| h.destroying),
            Err(e) => {
                tracing::error!(instance = %id, error = %e, "cannot read the lab's state");
                return;
            }
        };
        if destroyed {
            return;
        }
        let log = self.log_path(&id);
        tracing::warn!(instance = %id, log = %log.display(), "lab instance {id} stopped: {reason}");
        self.note(&id, &reason);
        self.update(&id, |host| {
            if !host.destroying {
                host.stopped = Some(reason);
            }
        });
    }
}

#[async_trait]
impl Provisioner for LabProvisioner {
    fn name(&self) -> &str {
        NAME
    }

    async fn create_instance(&self, config: &InstanceConfig) -> Result<Instance, Error> {
        config.check(NAME, MAX_USER_DATA)?;
        config.check_no_address()?;
        let lab = &self.inner.config;
        if !lab.regions.contains(&config.region) {
            let known: Vec<&str> = lab.regions.iter().map(Name::as_str).collect();
            return Err(Error::Rejected {
                provider: NAME,
                detail: format!(
                    "unknown region {:?}: this lab has {}",
                    config.region.as_str(),
                    known.join(", ")
                ),
            });
        }
        let bootstrap = EdgeBootstrap::from_user_data(&config.user_data)?;
        require_root()?;

        let (id, address) = {
            let mut locked = self.inner.lock()?;
            let state = &mut locked.state;
            let used = state.instances.values().map(|h| h.address).collect();
            let address = free_address(lab.first_address, lab.last_address, &used).ok_or_else(|| {
                Error::Quota {
                    provider: NAME,
                    detail: format!(
                        "every address of {}-{} is taken ({} instances); destroy one or widen the range",
                        lab.first_address,
                        lab.last_address,
                        used.len()
                    ),
                }
            })?;
            let id = loop {
                let number = state.next;
                if number >= MAX_NUMBER {
                    return Err(lab_error(format!(
                        "instance numbers are used up; remove {} and start afresh",
                        lab.dir.join("state.json").display()
                    )));
                }
                state.next += 1;
                let id = InstanceId::parse(&format!("{}{number}", lab.netns_prefix))?;
                // A namespace left by something else keeps its name; take the next.
                if !netns_exists(id.as_str()) {
                    break id;
                }
            };
            let host = Host {
                address,
                region: config.region.clone(),
                name: config.name.clone(),
                node_id: bootstrap.node_id.clone(),
                agent: None,
                stopped: None,
                destroying: false,
                tags: config.tags.clone(),
                idempotency_key: config.idempotency_key.clone(),
                supervisor: Process::of(std::process::id()),
            };
            // Recorded before anything is made, so a crash leaves nothing unrecorded.
            state.instances.insert(id.clone(), host);
            locked.save()?;
            (id, address)
        };

        let made = async {
            make_dir(&self.inner.host_dir(&id))?;
            self.inner.make_network(&id, address).await
        };
        if let Err(e) = made.await {
            let _ = ip(&["netns", "del", id.as_str()]).await;
            let _ = fs::remove_dir_all(self.inner.host_dir(&id));
            self.inner.forget(&id)?;
            return Err(e);
        }
        self.inner.note(
            &id,
            &format!(
                "namespace {id} with {address} on {}/{} for {} ({})",
                lab.hub_netns, lab.bridge, config.name, config.region
            ),
        );
        tracing::info!(instance = %id, %address, edge = %bootstrap.node_id, "lab instance created");
        tokio::spawn(Arc::clone(&self.inner).supervise(id.clone(), bootstrap));

        // The fault switch: removing the file is what arms it, so it fires once even when
        // several provisioners share the directory.
        let fault = lab.dir.join(CREATE_TIMEOUT);
        if fs::remove_file(&fault).is_ok() {
            tracing::warn!(instance = %id, fault = %fault.display(), "lab fault: instance {id} was created, answering with a timeout");
            self.inner.note(
                &id,
                &format!(
                    "fault {}: the create call answers with a timeout",
                    fault.display()
                ),
            );
            return Err(Error::Transient {
                provider: NAME,
                detail: format!(
                    "create instance: no answer within {} s (operation timed out)",
                    FAULT_TIMEOUT.as_secs()
                ),
            });
        }
        Ok(Instance {
            id,
            status: InstanceStatus::Provisioning,
        })
    }

    async fn destroy_instance(&self, id: &InstanceId) -> Result<(), Error> {
        let host = {
            let mut locked = self.inner.lock()?;
            let Some(host) = locked.state.instances.get_mut(id) else {
                return Ok(());
            };
            require_root()?;
            host.destroying = true;
            let host = host.clone();
            locked.save()?;
            host
        };
        let ns = id.as_str();
        // The agent's whole process group, then whatever else lives in the namespace:
        // nginx (which leaves the group when it daemonizes), wireguard-go, an enrollment.
        let group = host.agent.filter(|a| a.alive());
        let mut others = Vec::new();
        if netns_exists(ns) {
            for pid in netns_pids(ns).await? {
                others.extend(Process::of(pid));
            }
        }
        stop(group, &others).await;
        // The bridge's end first: a deleted namespace's veth goes away only when the kernel
        // gets round to it, and the port would linger on the bridge until then.
        let _ = ip(&["-n", &self.inner.config.hub_netns, "link", "del", ns]).await;
        if netns_exists(ns) {
            ip(&["netns", "del", ns]).await?;
        }
        let dir = self.inner.host_dir(id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io_error("remove", &dir, &e));
            }
            _ => {}
        }
        self.inner.forget(id)?;
        tracing::info!(instance = %id, address = %host.address, "lab instance destroyed");
        Ok(())
    }

    async fn instance_status(&self, id: &InstanceId) -> Result<InstanceStatus, Error> {
        let state = self.inner.lock()?.state;
        Ok(state
            .instances
            .get(id)
            .map_or(InstanceStatus::Gone, |host| host.status(id)))
    }

    async fn list_instances(&self, tag: &Name) -> Result<Vec<TaggedInstance>, Error> {
        let state = self.inner.lock()?.state;
        Ok(state
            .instances
            .iter()
            .filter(|(_, host)| host.tags.contains(tag))
            .map(|(id, host)| TaggedInstance {
                id: id.clone(),
                status: host.status(id),
                name: Some(host.name.to_string()),
                idempotency_key: host.idempotency_key.clone(),
            })
            .filter(|instance| instance.status != InstanceStatus::Gone)
            .collect())
    }
}

/// The state file of `config`'s directory; none yet is an empty state.
fn read_state(config: &LabConfig) -> Result<State, Error> {
    let path = config.dir.join("state.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            lab_error(format!(
                "state file {} is damaged ({e}); remove it and the namespaces named {}*",
                path.display(),
                config.netns_prefix
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(io_error("read", &path, &e)),
    }
}

/// The first address of `first..=last` not in `used`.
fn free_address(first: Ipv4Addr, last: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    (u32::from(first)..=u32::from(last))
        .map(Ipv4Addr::from)
        .find(|a| !used.contains(a))
}

/// SIGTERM to the process group of `group` and to each of `others`; SIGKILL to what is
/// still alive after [`GRACE`].
async fn stop(group: Option<Process>, others: &[Process]) {
    let signal = |sig: Signal| {
        if let Some(leader) = group.and_then(Process::pid) {
            let _ = kill_process_group(leader, sig);
        }
        for pid in others.iter().filter(|p| p.alive()).filter_map(|p| p.pid()) {
            let _ = kill_process(pid, sig);
        }
    };
    signal(Signal::TERM);
    let deadline = Instant::now() + GRACE;
    while group.iter().chain(others).any(|p| p.alive()) {
        if Instant::now() > deadline {
            signal(Signal::KILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// The processes in network namespace `ns`.
async fn netns_pids(ns: &str) -> Result<Vec<u32>, Error> {
    let out = ip(&["netns", "pids", ns]).await?;
    Ok(out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Runs `ip ARGS`; its standard output.
async fn ip(args: &[&str]) -> Result<String, Error> {
    let command = || format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            lab_error(format!(
                "cannot run `{}`: {e}; install iproute2 (apt-get install -y --no-install-recommends iproute2)",
                command()
            ))
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(lab_error(format!(
            "`{}` failed ({}): {}",
            command(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn require_root() -> Result<(), Error> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err(lab_error(format!(
            "the lab provider creates network namespaces and must run as root (this process runs as uid {})",
            rustix::process::geteuid().as_raw()
        )))
    }
}

/// Creates `dir` (and its parents) with mode 0755, and sets 0755 if it existed.
fn make_dir(dir: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)))
        .map_err(|e| io_error("create", dir, &e))
}

fn lab_error(message: String) -> Error {
    Error::Other {
        provider: NAME,
        source: message.into(),
    }
}

fn io_error(action: &str, path: &Path, e: &io::Error) -> Error {
    lab_error(format!("cannot {action} {}: {e}", path.display()))
}

/// The start time of process `pid`; `None` when it is gone or a zombie.
fn start_time(pid: u32) -> Option<u64> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Field 22 of a `/proc/PID/stat` line, `None` for a zombie. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if *fields.first()? == "Z" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests;
