//! The agent's loops: follow the configuration, keep the tunnel and the forwarding in step,
//! check the services, report.

use std::{
    collections::BTreeSet,
    future::Future,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use kokoa_agent::{Backoff, Sampler, keys::NodeKeys};
use kokoa_core::OriginConfig;
use kokoa_wg::{
    InterfaceConfig, InterfaceName,
    apply::{HANDSHAKE_FRESH, PeerStats, WgHost},
};
use tokio::sync::{Notify, watch};

use crate::{
    Error,
    application::ApplicationEndpoint,
    checks::{Checker, ServiceReport},
    client::ControlPlane,
    firewall::{Firewall, FirewallState, Rules},
    forward::{Forwarder, Relay},
    heartbeat::{Heartbeat, Metrics, disk_percent},
    metrics::{EdgeTunnel, OriginMetrics},
    payload::Plan,
    state::StateDir,
};

/// The origin's WireGuard interface, behind a trait so the agent's logic can be tested
/// without one. Every method blocks: the agent calls them from `spawn_blocking`.
pub trait Tunnel: Send + Sync + 'static {
    /// Brings the interface up, or brings its peers in step with `wanted`.
    fn apply(&self, wanted: &InterfaceConfig) -> Result<(), Error>;

    /// How many peers of `name` completed a handshake within the last 180 s.
    fn edges_connected(&self, name: &InterfaceName) -> usize;

    /// Each peer of `name` with its latest handshake and traffic (for `/metrics`).
    fn peers(&self, name: &InterfaceName) -> Vec<PeerStats> {
        let _ = name;
        Vec::new()
    }

    /// Hands an edge's address over to its new key once that key has completed a
    /// handshake (see `kokoa_wg::rotation`); returns whether anything changed. Cheap while
    /// nothing is due.
    fn settle(&self, wanted: &InterfaceConfig) -> Result<bool, Error> {
        let _ = wanted;
        Ok(false)
    }

    /// Deletes the interface.
    fn stop(&self, name: &InterfaceName) -> Result<(), Error>;
}

/// [`Tunnel`] over kokoa-wg's [`WgHost`].
///
/// `WgHost::apply` also deletes interfaces named `kk…` that it is not given: an origin host
/// must not also run an edge agent in the same network namespace.
#[derive(Debug, Clone)]
pub struct WgTunnel(pub WgHost);

impl Tunnel for WgTunnel {
    fn apply(&self, wanted: &InterfaceConfig) -> Result<(), Error> {
        let applied = self.0.apply(std::slice::from_ref(wanted))?;
        tracing::debug!(created = ?applied.created, updated = ?applied.updated, removed = ?applied.removed, "WireGuard applied");
        Ok(())
    }

    fn peers(&self, name: &InterfaceName) -> Vec<PeerStats> {
        self.0.peers(name).unwrap_or_default()
    }

    fn edges_connected(&self, name: &InterfaceName) -> usize {
        let Ok(peers) = self.0.latest_handshakes(name) else {
            return 0;
        };
        let now = SystemTime::now();
        peers
            .into_iter()
            .filter_map(|(_, at)| at)
            .filter(|at| {
                now.duration_since(*at)
                    .is_ok_and(|age| age <= HANDSHAKE_FRESH)
            })
            .count()
    }

    fn settle(&self, wanted: &InterfaceConfig) -> Result<bool, Error> {
        Ok(!self.0.settle(std::slice::from_ref(wanted))?.is_empty())
    }

    fn stop(&self, name: &InterfaceName) -> Result<(), Error> {
        Ok(self.0.remove(name)?)
    }
}

/// How often the tunnel is looked at while an edge's key changes: the few hundred
/// milliseconds between the edge switching keys and the hand-over are all its traffic waits.
const KEY_SETTLE: Duration = Duration::from_millis(200);

/// The agent's clock. Tests shorten it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long the control plane may hold a configuration request (`?wait=`).
    pub long_poll: Duration,
    /// The pause between requests when the control plane answers at once instead of
    /// holding the request.
    pub poll_interval: Duration,
    /// The period of service checks.
    pub check_interval: Duration,
    /// The period of heartbeats (one also goes out when a service changes state).
    pub heartbeat_interval: Duration,
    /// The first pause after a failure; it doubles up to [`Timing::backoff_max`].
    pub backoff_initial: Duration,
    /// The longest pause after failures.
    pub backoff_max: Duration,
    /// The longest pause before asking a control plane that could not be reached again
    /// (it restarts): nodes are back within this of it answering.
    pub reconnect: Duration,
}

impl Default for Timing {
    /// Long poll 30 s, polling every 10 s, checks every 5 s, heartbeats every 30 s,
    /// back-off from 1 s to 30 s, an unreachable control plane asked again within 1 s.
    fn default() -> Self {
        Self {
            long_poll: Duration::from_secs(30),
            poll_interval: Duration::from_secs(10),
            check_interval: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(30),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            reconnect: Duration::from_secs(1),
        }
    }
}

/// How the agent runs besides its client and tunnel.
#[derive(Debug)]
pub struct Settings {
    /// The WireGuard interface name (`wg0`).
    pub interface: InterfaceName,
    /// The built-in forwarding; `None` when another proxy (the bundle's nginx) serves the
    /// tunnel address.
    pub forwarder: Option<Forwarder>,
    /// The rules that admit only the edges through the tunnel (SPEC §10.5); `None` when the
    /// host manages its own firewall.
    pub firewall: Option<Firewall>,
    /// The service checker.
    pub checker: Checker,
    /// The answer to the edges' application check; `None` offers none.
    pub application: Option<ApplicationEndpoint>,
    /// The clock.
    pub timing: Timing,
    /// Delete the interface when the agent stops (by default the tunnel outlives it).
    pub stop_on_exit: bool,
    /// The file system whose use is reported as `disk_percent`.
    pub disk: PathBuf,
}

/// What the loops share.
#[derive(Debug, Default)]
struct Shared {
    /// The configuration applied now.
    live: Option<(String, Plan)>,
    /// Why the latest configuration is not applied; reported until one applies.
    last_error: Option<String>,
    /// The latest service checks.
    services: Vec<ServiceReport>,
    /// The firewall's state, and the rules installed.
    firewall: FirewallState,
    installed: Option<Rules>,
}

/// One origin agent.
#[derive(Debug)]
pub struct Agent<T> {
    client: ControlPlane,
    tunnel: T,
    state: StateDir,
    settings: Settings,
    metrics: Arc<OriginMetrics>,
}

#[derive(Debug)]
struct Ctx<T> {
    client: ControlPlane,
    tunnel: Arc<T>,
    state: StateDir,
    /// The origin's own WireGuard keys.
    keys: NodeKeys,
    settings: Settings,
    shared: Mutex<Shared>,
    metrics: Arc<OriginMetrics>,
    /// Wakes the checks: a new configuration may name other services.
    recheck: Notify,
    /// Wakes the heartbeat: a service changed state.
    report: Notify,
}

impl<T: Tunnel> Agent<T> {
    /// An agent.
    pub fn new(client: ControlPlane, tunnel: T, state: StateDir, settings: Settings) -> Self {
        Self {
            client,
            tunnel,
            state,
            settings,
            metrics: Arc::default(),
        }
    }

    /// Records what the agent observes into `metrics` (served by `--metrics-listen`).
    pub fn with_metrics(mut self, metrics: Arc<OriginMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown` completes.
    ///
    /// First applies the last good configuration, if any, so the tunnel is up while the
    /// control plane is unreachable. Then follows the configuration (long-polled,
    /// conditional on the live hash), checks the services every
    /// [`Timing::check_interval`] and sends a heartbeat every
    /// [`Timing::heartbeat_interval`] and at once when a service changes state.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let ctx = Arc::new(Ctx {
            keys: self.state.keys()?,
            client: self.client,
            tunnel: Arc::new(self.tunnel),
            state: self.state,
            settings: self.settings,
            shared: Mutex::default(),
            metrics: self.metrics,
            recheck: Notify::new(),
            report: Notify::new(),
        });
        if let Ok(Some(config)) = ctx
            .state
            .read_last_good()
            .inspect_err(|e| tracing::warn!(error = %e, "ignoring the last good configuration"))
        {
            match ctx.apply(config).await {
                Ok(hash) => tracing::info!(%hash, "serving the last good configuration"),
                Err(e) => tracing::error!(error = %e, "the last good configuration does not apply"),
            }
        }
        let (stop_tx, stop_rx) = watch::channel(());
        let tasks = [
            tokio::spawn(Arc::clone(&ctx).config_loop(stop_rx.clone())),
            tokio::spawn(Arc::clone(&ctx).check_loop(stop_rx.clone())),
            tokio::spawn(Arc::clone(&ctx).heartbeat_loop(stop_rx.clone())),
            tokio::spawn(Arc::clone(&ctx).key_loop(stop_rx)),
        ];
        shutdown.await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(());
        for task in tasks {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "an agent task failed");
            }
        }
        if let Some(endpoint) = &ctx.settings.application {
            endpoint.stop();
        }
        if let Some(forwarder) = &ctx.settings.forwarder {
            forwarder.stop();
        }
        if ctx.settings.stop_on_exit {
            let (tunnel, name) = (Arc::clone(&ctx.tunnel), ctx.settings.interface.clone());
            let stopped = name.clone();
            blocking(move || tunnel.stop(&stopped)).await?;
            tracing::info!("tunnel removed");
            if let Some(firewall) = ctx.settings.firewall.clone() {
                match blocking(move || firewall.remove(&name)).await {
                    Ok(()) => tracing::info!("firewall rules removed"),
                    Err(e) => tracing::warn!(error = %e, "cannot remove the firewall rules"),
                }
            }
        } else {
            // The rules protect the tunnel, so they stay as long as it does.
            tracing::info!("the tunnel and its firewall rules keep running");
        }
        Ok(())
    }
}

/// Runs blocking work off the async threads.
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

impl<T: Tunnel> Ctx<T> {
    fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the application check on the tunnel address of `plan`, for its edges.
    fn set_application(&self, plan: &Plan, retrying: bool) {
        let Some(endpoint) = &self.settings.application else {
            return;
        };
        if let Err(e) = endpoint.set(plan.tunnel_ip, &plan.ports, plan.edges.clone()) {
            if retrying {
                tracing::debug!(error = %e, "still cannot answer the application check");
            } else {
                tracing::warn!(ip = %plan.tunnel_ip, port = crate::APPLICATION_PORT, error = %e, "cannot answer the application check yet; will retry");
            }
        }
    }

    fn live_hash(&self) -> Option<String> {
        self.shared().live.as_ref().map(|(hash, _)| hash.clone())
    }

    /// Applies `config` with the key it names (tunnel first, then forwarding), saves it as
    /// the last good one, then follows what it says of the keys: a next key made when
    /// asked, old keys dropped, a key to register registered.
    async fn apply(&self, config: OriginConfig) -> Result<String, Error> {
        let named = config
            .wireguard_public_key
            .as_ref()
            .map(|k| k.as_str().to_owned());
        let requested = config.wireguard_key_requested;
        let key = self
            .keys
            .key_for(named.as_deref())
            .map_err(|e| Error::Refused {
                hash: config.config_hash.clone(),
                reason: e.to_string(),
            })?;
        let plan = Plan::new(&config, self.settings.interface.clone(), key)?;
        let (tunnel, state, wanted) = (
            Arc::clone(&self.tunnel),
            self.state.clone(),
            plan.interface.clone(),
        );
        let hash = config.config_hash.clone();
        blocking(move || {
            tunnel.apply(&wanted)?;
            state.save_last_good(&config)
        })
        .await?;
        if let Some(forwarder) = &self.settings.forwarder {
            for (addr, e) in forwarder.set(plan.tunnel_ip, &plan.ports, plan.edges.clone()) {
                tracing::warn!(%addr, error = %e, "cannot forward yet (is another proxy on this port?); will retry");
            }
        }
        self.set_application(&plan, false);
        self.install_firewall(&plan).await;
        {
            let mut shared = self.shared();
            shared.live = Some((hash.clone(), plan));
            shared.last_error = None;
        }
        self.keys
            .applied(named.as_deref(), requested)
            .map_err(Error::io("save the WireGuard keys in", self.state.path()))?;
        self.register_key().await;
        Ok(hash)
    }

    /// Registers the key the last applied configuration calls for, if any; a failure is
    /// tried again with the next heartbeat.
    async fn register_key(&self) {
        if let Err(e) = self.keys.register(self.client.api()).await {
            tracing::warn!(error = %e, "cannot register the WireGuard key yet; will retry");
        }
    }

    /// Installs the firewall rules of `plan` unless they are installed already. A failure
    /// is logged and reported in heartbeats, never returned: the agent serves without the
    /// rules (nft refusing leaves the rules installed before in place).
    async fn install_firewall(&self, plan: &Plan) {
        let Some(firewall) = self.settings.firewall.clone() else {
            return;
        };
        let redirect = match &self.settings.forwarder {
            #[cfg(target_os = "linux")]
            Some(forwarder) if forwarder.relay() == Relay::Kernel && plan.tunnel_ip.is_ipv4() => {
                match forwarder.target() {
                    IpAddr::V4(target) => Some(target),
                    IpAddr::V6(_) => None,
                }
            }
            _ => None,
        };
        let rules = Rules::new(
            self.settings.interface.clone(),
            plan.tunnel_ip,
            plan.edges.clone(),
            plan.ports.clone(),
        )
        .and_then(|rules| match redirect {
            Some(target) => rules.redirecting(target),
            None => Ok(rules),
        });
        let rules = match rules {
            Ok(rules) => rules,
            Err(e) => {
                tracing::warn!(error = %e, "firewall rules not installed; the previous ones stay");
                self.shared().firewall = FirewallState::Failed(e.to_string());
                return;
            }
        };
        {
            let shared = self.shared();
            if shared.firewall == FirewallState::On
                && shared.installed.as_ref() == Some(&rules)
                && firewall.in_place(&rules)
            {
                return;
            }
        }
        let installing = rules.clone();
        let (state, installed) = match blocking(move || firewall.apply(&installing)).await {
            Ok(()) => {
                tracing::info!(ports = ?rules.ports(), edges = plan.edges.len(), redirect = ?rules.redirect(), "firewall rules installed: the tunnel admits only the edges, to these ports");
                (FirewallState::On, Some(rules))
            }
            Err(e) => {
                tracing::warn!(error = %e, "firewall rules not installed; other services on this host stay reachable from the edges through the tunnel");
                (FirewallState::Failed(e.to_string()), None)
            }
        };
        let mut shared = self.shared();
        shared.firewall = state;
        if installed.is_some() {
            shared.installed = installed;
        }
    }

    async fn config_loop(self: Arc<Self>, mut stop: watch::Receiver<()>) {
        let timing = self.settings.timing;
        let mut backoff = Backoff::new(timing.backoff_initial, timing.backoff_max);
        // The hash sent in If-None-Match: the live configuration's, or the last refused
        // one's, so a refused payload is not fetched (and refused) again until it changes.
        let mut known = self.live_hash();
        loop {
            let asked = Instant::now();
            let fetch = self
                .client
                .fetch_config(known.as_deref(), Some(timing.long_poll));
            let fetched = tokio::select! {
                fetched = fetch => fetched,
                _ = stop.changed() => return,
            };
            let pause = match fetched {
                Ok(None) => {
                    backoff.reset();
                    // A control plane that answers at once does not long-poll: poll.
                    if asked.elapsed() >= (timing.long_poll / 2).min(Duration::from_secs(1)) {
                        Duration::ZERO
                    } else {
                        timing.poll_interval
                    }
                }
                Ok(Some(config)) if known.as_deref() == Some(config.config_hash.as_str()) => {
                    backoff.reset();
                    timing.poll_interval
                }
                Ok(Some(config)) => {
                    let hash = config.config_hash.clone();
                    match self.apply(config).await {
                        Ok(_) => {
                            tracing::info!(%hash, "configuration applied");
                            backoff.reset();
                            known = Some(hash);
                            // Services or ports may have changed: check now. The control
                            // plane hears at once which configuration is live (a key
                            // rotation waits for it).
                            self.recheck.notify_one();
                            self.report.notify_one();
                            Duration::ZERO
                        }
                        Err(e @ Error::Refused { .. }) => {
                            tracing::error!(%hash, error = %e, "configuration refused; the previous one stays");
                            self.shared().last_error = Some(e.to_string());
                            known = Some(hash);
                            Duration::ZERO
                        }
                        Err(e) => {
                            tracing::error!(%hash, error = %e, "configuration failed to apply; will retry");
                            self.shared().last_error = Some(e.to_string());
                            backoff.next_delay()
                        }
                    }
                }
                Err(e) => {
                    let delay = backoff.after_failure(e.is_unreachable(), timing.reconnect);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot fetch the configuration");
                    delay
                }
            };
            if !pause.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Checks the services; wakes the heartbeat when one changed state (and after the
    /// first round). Also reopens forwarding listeners that could not be opened before.
    async fn check_loop(self: Arc<Self>, mut stop: watch::Receiver<()>) {
        let mut ticks = tokio::time::interval(self.settings.timing.check_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous: Option<Vec<ServiceReport>> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.recheck.notified() => {}
                _ = stop.changed() => return,
            }
            let plan = self.shared().live.as_ref().map(|(_, plan)| plan.clone());
            let services = plan.as_ref().map(|p| p.services.as_slice()).unwrap_or(&[]);
            let reports = self.settings.checker.check_all(services).await;
            if let (Some(forwarder), Some(plan)) = (&self.settings.forwarder, &plan) {
                let wanted: BTreeSet<SocketAddr> = plan
                    .ports
                    .iter()
                    .map(|p| SocketAddr::new(plan.tunnel_ip, *p))
                    .collect();
                if forwarder.listening() != wanted {
                    for (addr, e) in forwarder.set(plan.tunnel_ip, &plan.ports, plan.edges.clone())
                    {
                        tracing::debug!(%addr, error = %e, "still cannot forward");
                    }
                }
            }
            if let Some(plan) = &plan {
                self.set_application(plan, true);
                // Installed rules whose interface setting was lost (see Firewall::in_place)
                // are applied again; failed ones wait for the next configuration.
                if self.shared().firewall == FirewallState::On {
                    self.install_firewall(plan).await;
                }
            }
            if previous.as_ref() != Some(&reports) {
                for report in &reports {
                    let was = previous
                        .iter()
                        .flatten()
                        .find(|p| p.name == report.name)
                        .map(|p| p.status);
                    if was != Some(report.status) {
                        tracing::info!(service = %report.name, port = report.port, status = ?report.status, "service state");
                    }
                }
                self.shared().services = reports.clone();
                previous = Some(reports);
                self.report.notify_one();
            }
        }
    }

    /// While an edge's keys rotate, hands its address over to the new key as soon as that
    /// key has a handshake: checked every [`KEY_SETTLE`].
    async fn key_loop(self: Arc<Self>, mut stop: watch::Receiver<()>) {
        let mut ticks = tokio::time::interval(KEY_SETTLE);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            let wanted = match &self.shared().live {
                Some((_, plan)) if !plan.interface.key_changes.is_empty() => plan.interface.clone(),
                _ => continue,
            };
            let tunnel = Arc::clone(&self.tunnel);
            match blocking(move || tunnel.settle(&wanted)).await {
                Ok(false) => {}
                Ok(true) => tracing::info!("an edge's new WireGuard key took over"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand the tunnel over to a new key yet")
                }
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, mut stop: watch::Receiver<()>) {
        let period = self.settings.timing.heartbeat_interval;
        // The first heartbeat follows the first round of checks, which wakes this loop.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sampler = Sampler::new(Vec::new(), PathBuf::new());
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.report.notified() => {}
                _ = stop.changed() => return,
            }
            let (live, hash, services, last_error, firewall, interface) = {
                let shared = self.shared();
                let live = shared.live.as_ref().map(|(_, plan)| plan.edges.len());
                (
                    live,
                    shared.live.as_ref().map(|(hash, _)| hash.clone()),
                    shared.services.clone(),
                    shared.last_error.clone(),
                    shared.firewall.clone(),
                    shared.live.as_ref().map(|(_, plan)| plan.interface.clone()),
                )
            };
            let (tunnel, name, disk) = (
                Arc::clone(&self.tunnel),
                self.settings.interface.clone(),
                self.settings.disk.clone(),
            );
            let (returned, metrics, peers) = blocking(move || {
                let sample = sampler.sample();
                let metrics = Metrics {
                    cpu_percent: sample.cpu_percent,
                    memory_percent: sample.memory_percent,
                    disk_percent: disk_percent(&disk),
                    edges_connected: live.map_or(0, |_| tunnel.edges_connected(&name)),
                };
                let peers = live.map_or_else(Vec::new, |_| tunnel.peers(&name));
                (sampler, metrics, peers)
            })
            .await;
            sampler = returned;
            let tunnels = interface.map_or_else(Vec::new, |i| EdgeTunnel::named(&i, peers));
            self.metrics
                .observe(metrics.edges_connected, tunnels, services.clone());
            let mut heartbeat = Heartbeat::new(
                self.client.node_id().clone(),
                live.is_some(),
                live.unwrap_or(0),
                services,
                metrics,
                last_error,
                firewall,
            );
            heartbeat.config_hash = hash;
            heartbeat.metrics_address = self.metrics.address();
            heartbeat.application_port = self
                .settings
                .application
                .as_ref()
                .and_then(ApplicationEndpoint::port);
            match self.client.heartbeat(&heartbeat).await {
                Ok(()) => tracing::debug!(status = ?heartbeat.status, "heartbeat sent"),
                Err(e) => tracing::warn!(error = %e, "heartbeat not delivered"),
            }
            self.register_key().await;
        }
    }
}
