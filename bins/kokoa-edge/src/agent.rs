//! The agent's loops: follow the configuration, apply it, report.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use kokoa_agent::{Backoff, LinkState, Sampler, keys::NodeKeys};
use kokoa_core::{ContentHash, EdgeConfig, OriginId};
use tokio::{
    sync::{Notify, watch},
    task::JoinError,
};

use crate::{
    Error,
    application::{self, ApplicationChecks, ApplicationTarget},
    client::{ControlPlane, Fetched},
    heartbeat::Heartbeat,
    metrics::{Apply, EdgeMetrics},
    plane::DataPlane,
    state::StateDir,
};

/// The agent's clock: how long to wait for what. Tests shorten it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long the control plane may hold a configuration request (`?wait=`).
    pub long_poll: Duration,
    /// The pause between requests when the control plane answers at once instead of
    /// holding the request (long polling not available).
    pub poll_interval: Duration,
    /// The period of heartbeats.
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
    /// Long poll 30 s, polling every 10 s, heartbeats every 5 s, back-off from 1 s to 30 s,
    /// an unreachable control plane asked again within 1 s.
    fn default() -> Self {
        Self {
            long_poll: Duration::from_secs(30),
            poll_interval: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(5),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            reconnect: Duration::from_secs(1),
        }
    }
}

/// What the loops share.
#[derive(Debug, Default)]
struct Shared {
    /// The hash of the configuration serving now.
    applied: Option<ContentHash>,
    /// Why the latest configuration is not serving; reported in heartbeats until a
    /// configuration applies.
    last_error: Option<String>,
    /// Whether `.../ready` went through (or is on its way).
    ready_sent: bool,
    /// The application checks of the configuration serving now.
    targets: Vec<ApplicationTarget>,
    /// Their verdicts, by origin.
    application: HashMap<OriginId, LinkState>,
    /// Whether an origin's key changes in the configuration serving now (the key loop
    /// looks at the tunnels only then).
    keys_changing: bool,
}

/// One edge agent: a control plane client, a data plane and the state directory.
#[derive(Debug)]
pub struct Agent<P> {
    client: ControlPlane,
    plane: Arc<P>,
    state: StateDir,
    timing: Timing,
    sampler: Sampler,
    stop_on_exit: bool,
    shared: Arc<Mutex<Shared>>,
    metrics: Arc<EdgeMetrics>,
}

impl<P: DataPlane> Agent<P> {
    /// An agent. With `stop_on_exit`, nginx and the tunnels are taken down when it stops;
    /// otherwise they keep serving without it.
    pub fn new(
        client: ControlPlane,
        plane: Arc<P>,
        state: StateDir,
        timing: Timing,
        sampler: Sampler,
        stop_on_exit: bool,
    ) -> Self {
        Self {
            client,
            plane,
            state,
            timing,
            sampler,
            stop_on_exit,
            shared: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// Records what the agent does into `metrics` (served by `--metrics-listen`); give the
    /// sampler its [`traffic`](EdgeMetrics::traffic) to count requests too.
    pub fn with_metrics(mut self, metrics: Arc<EdgeMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Runs until `shutdown` completes.
    ///
    /// First applies the last good configuration, if any, so the edge serves while the
    /// control plane is unreachable. Then follows the control plane's configuration
    /// (long-polled, conditional on the live hash) and sends a heartbeat every
    /// [`Timing::heartbeat_interval`].
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let Self {
            client,
            plane,
            state,
            timing,
            sampler,
            stop_on_exit,
            shared,
            metrics,
        } = self;
        let keys = state.keys()?;
        let ctx = Arc::new(Ctx {
            client,
            plane,
            state,
            keys,
            timing,
            shared,
            metrics,
            beat_now: Notify::new(),
        });
        ctx.apply_last_good().await;

        let (stop_tx, stop_rx) = watch::channel(false);
        let config = tokio::spawn(Arc::clone(&ctx).config_loop(stop_rx.clone()));
        let heartbeat = tokio::spawn(Arc::clone(&ctx).heartbeat_loop(sampler, stop_rx.clone()));
        let checks = tokio::spawn(Arc::clone(&ctx).application_loop(stop_rx.clone()));
        let keys = tokio::spawn(Arc::clone(&ctx).key_loop(stop_rx));
        shutdown.await;
        tracing::info!("shutting down");
        // Receivers live in the tasks until they end.
        let _ = stop_tx.send(true);
        for task in [config, heartbeat, checks, keys] {
            task.await.unwrap_or_else(log_join_error);
        }
        if stop_on_exit {
            let plane = Arc::clone(&ctx.plane);
            blocking(move || plane.stop()).await?;
        } else {
            tracing::info!("nginx and the tunnels keep running");
        }
        Ok(())
    }
}

fn log_join_error(e: JoinError) {
    tracing::error!(error = %e, "an agent task failed");
}

/// Runs blocking work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// What the agent keeps of the configuration serving now.
struct Live {
    hash: ContentHash,
    targets: Vec<ApplicationTarget>,
    keys_changing: bool,
    hostnames: Vec<String>,
}

impl Live {
    fn of(config: &EdgeConfig) -> Self {
        Self {
            hash: config.config_hash().clone(),
            targets: application::application_targets(config),
            keys_changing: config
                .content()
                .tunnels
                .iter()
                .any(|t| t.origin_next_public_key.is_some()),
            hostnames: config
                .content()
                .routes
                .keys()
                .map(|h| h.as_str().to_owned())
                .collect(),
        }
    }
}

/// How often a tunnel whose peer's key changes is looked at: the few hundred milliseconds
/// between the peer switching keys and the hand-over are all its traffic waits.
const KEY_SETTLE: Duration = Duration::from_millis(200);

struct Ctx<P> {
    client: ControlPlane,
    plane: Arc<P>,
    state: StateDir,
    /// The edge's own WireGuard keys.
    keys: NodeKeys,
    timing: Timing,
    shared: Arc<Mutex<Shared>>,
    metrics: Arc<EdgeMetrics>,
    /// Sends a heartbeat before the next tick (an application verdict changed).
    beat_now: Notify,
}

impl<P: DataPlane> Ctx<P> {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that the configuration `live` was taken from serves now.
    fn serving(&self, live: Live) {
        self.metrics.apply(Apply::Applied);
        self.metrics
            .traffic()
            .set_hosts(live.hostnames.iter().map(String::as_str));
        let mut shared = self.shared();
        shared.applied = Some(live.hash);
        shared.last_error = None;
        shared.targets = live.targets;
        shared.keys_changing = live.keys_changing;
    }

    /// Applies `config` with the key it names, then follows what it says of the keys:
    /// a next key made when asked, old keys dropped, a key to register registered.
    async fn apply(&self, config: EdgeConfig) -> Result<(), Error> {
        let content = config.content();
        let named = content
            .wireguard_public_key
            .as_ref()
            .map(|k| k.as_str().to_owned());
        let requested = content.wireguard_key_requested;
        let key = self
            .keys
            .key_for(named.as_deref())
            .map_err(|e| Error::Refused {
                hash: config.config_hash().to_string(),
                reason: e.to_string(),
            })?;
        apply_and_save(Arc::clone(&self.plane), self.state.clone(), config, key).await?;
        self.keys
            .applied(named.as_deref(), requested)
            .map_err(Error::io("save the WireGuard keys in", self.state.path()))?;
        self.register_key().await;
        Ok(())
    }

    /// Registers the key the last applied configuration calls for, if any; a failure is
    /// tried again with the next heartbeat.
    async fn register_key(&self) {
        if let Err(e) = self.keys.register(self.client.api()).await {
            tracing::warn!(error = %e, "cannot register the WireGuard key yet; will retry");
        }
    }

    async fn apply_last_good(&self) {
        match self.state.read_last_good() {
            Ok(Some(config)) => {
                let live = Live::of(&config);
                match self.apply(config).await {
                    Ok(()) => {
                        tracing::info!(hash = %live.hash, "serving the last good configuration");
                        self.serving(live);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the last good configuration does not apply")
                    }
                }
            }
            Ok(None) => tracing::info!("no last good configuration yet"),
            Err(e) => tracing::warn!(error = %e, "ignoring the last good configuration"),
        }
    }

    async fn config_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let timing = self.timing;
        let mut backoff = Backoff::new(timing.backoff_initial, timing.backoff_max);
        // The hash named in If-None-Match: the live configuration's, or the last refused
        // one's, so a refused payload is not sent (and refused) again until it changes.
        let mut known = self.shared().applied.clone();
        self.send_ready_once().await;
        loop {
            let asked = Instant::now();
            let fetch = self.client.fetch_config(
                known.as_ref().map(ContentHash::as_str),
                Some(timing.long_poll),
            );
            let fetched = tokio::select! {
                fetched = fetch => fetched,
                _ = stop.changed() => return,
            };
            let pause = match fetched {
                Ok(Fetched::NotModified) => {
                    backoff.reset();
                    // A control plane without long polling answers at once: poll instead.
                    // One that held the request at all (perhaps capping the wait below
                    // ours) is asked again right away.
                    let held =
                        asked.elapsed() >= (timing.long_poll / 2).min(Duration::from_secs(1));
                    if held {
                        Duration::ZERO
                    } else {
                        timing.poll_interval
                    }
                }
                Ok(Fetched::Config(config)) if known.as_ref() == Some(config.config_hash()) => {
                    // The same configuration again: If-None-Match was not honoured.
                    backoff.reset();
                    timing.poll_interval
                }
                Ok(Fetched::Config(config)) => {
                    let hash = config.config_hash().clone();
                    let live = Live::of(&config);
                    let applied = match self.install_certificates(&config).await {
                        Ok(()) => self.apply(config).await,
                        Err(e) => Err(e),
                    };
                    match applied {
                        Ok(()) => {
                            tracing::info!(%hash, "configuration applied");
                            backoff.reset();
                            known = Some(hash);
                            self.serving(live);
                            self.send_ready_once().await;
                            Duration::ZERO
                        }
                        Err(e) if e.is_refusal() => {
                            tracing::error!(%hash, error = %e, "configuration refused; the previous one keeps serving");
                            self.metrics.apply(Apply::Refused);
                            self.shared().last_error = Some(e.to_string());
                            known = Some(hash);
                            Duration::ZERO
                        }
                        Err(e) => {
                            tracing::error!(%hash, error = %e, "configuration failed to apply; will retry");
                            self.metrics.apply(Apply::Failed);
                            self.shared().last_error = Some(e.to_string());
                            backoff.next_delay()
                        }
                    }
                }
                Err(e) if e.is_refusal() => {
                    tracing::error!(error = %e, "configuration refused; the previous one keeps serving");
                    self.metrics.apply(Apply::Refused);
                    self.shared().last_error = Some(e.to_string());
                    let stated = match &e {
                        Error::Refused { hash, .. } => ContentHash::parse(hash).ok(),
                        _ => None,
                    };
                    match stated {
                        Some(hash) if known.as_ref() != Some(&hash) => {
                            known = Some(hash);
                            Duration::ZERO
                        }
                        _ => backoff.next_delay(),
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

    async fn heartbeat_loop(
        self: Arc<Self>,
        mut sampler: Sampler,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(self.timing.heartbeat_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = self.beat_now.notified() => {}
                _ = stop.changed() => return,
            }
            let plane = Arc::clone(&self.plane);
            let observed = blocking(move || {
                let sample = sampler.sample();
                (sampler, sample, plane.tunnels(), plane.serving())
            })
            .await;
            let (returned, sample, mut tunnels, serving) = observed;
            sampler = returned;
            let (last_error, applied) = {
                let shared = self.shared();
                for tunnel in &mut tunnels {
                    tunnel.application = shared.application.get(&tunnel.origin_id).copied();
                }
                (shared.last_error.clone(), shared.applied.clone())
            };
            let mut heartbeat = Heartbeat::new(
                self.client.node_id().clone(),
                serving,
                last_error,
                sample,
                tunnels,
                applied,
            );
            heartbeat.metrics_address = self.metrics.address();
            heartbeat.traffic = self.metrics.traffic().take_window();
            self.metrics.heartbeat(&heartbeat);
            let plane = Arc::clone(&self.plane);
            let body = heartbeat.health_body();
            if let Err(e) = blocking(move || plane.set_health(&body)).await {
                tracing::warn!(error = %e, "cannot update the health page");
            }
            match self.client.heartbeat(&heartbeat).await {
                Ok(()) => tracing::debug!(status = ?heartbeat.status, "heartbeat sent"),
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat not delivered");
                    self.metrics.traffic().restore(heartbeat.traffic);
                }
            }
            self.register_key().await;
            self.send_ready_once().await;
        }
    }

    /// Runs the application checks of the live configuration as they fall due (each second
    /// at most) and sends a heartbeat at once when a verdict changes.
    async fn application_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut checks = match ApplicationChecks::new() {
            Ok(checks) => checks,
            Err(e) => {
                tracing::error!(error = %e, "cannot run the origins' application checks");
                return;
            }
        };
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            let targets = self.shared().targets.clone();
            if !checks.round(&targets, Instant::now()).await {
                continue;
            }
            self.shared().application = targets
                .iter()
                .filter_map(|t| Some((t.origin_id.clone(), checks.state(&t.origin_id)?)))
                .collect();
            self.beat_now.notify_one();
        }
    }

    /// While an origin's keys rotate, hands its address over to the new key as soon as that
    /// key has a handshake (see `kokoa_wg::rotation`): checked every [`KEY_SETTLE`].
    async fn key_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(KEY_SETTLE);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            if !self.shared().keys_changing {
                continue;
            }
            let plane = Arc::clone(&self.plane);
            match blocking(move || plane.settle_keys()).await {
                Ok(changed) if changed.is_empty() => {}
                Ok(changed) => {
                    tracing::info!(interfaces = ?changed, "an origin's new WireGuard key took over");
                }
                Err(e) => tracing::warn!(error = %e, "cannot hand a tunnel over to a new key yet"),
            }
        }
    }

    /// Fetches and installs every certificate of `config` this host lacks (new ones, and
    /// renewed ones: new content under the same name), before the configuration that uses
    /// them is applied.
    async fn install_certificates(&self, config: &EdgeConfig) -> Result<(), Error> {
        let plane = Arc::clone(&self.plane);
        let wanted = config.clone();
        let missing = blocking(move || plane.missing_certificates(&wanted)).await;
        for cert in missing {
            let name =
                kokoa_nginx::CertName::parse(cert.name.as_str()).map_err(|e| Error::Refused {
                    hash: config.config_hash().to_string(),
                    reason: e.to_string(),
                })?;
            let pems = self.client.fetch_certificate(&cert).await?;
            let plane = Arc::clone(&self.plane);
            blocking(move || {
                plane.install_certificate(
                    &name,
                    pems.chain_pem.as_bytes(),
                    pems.private_key_pem.as_bytes(),
                )
            })
            .await?;
            tracing::info!(certificate = %cert.name, sha256 = %cert.sha256, hostnames = ?cert.hostnames, "certificate installed");
        }
        Ok(())
    }

    /// Tells the control plane the edge is up, once, after a configuration applied.
    async fn send_ready_once(&self) {
        {
            // Claimed before sending: the configuration and heartbeat loops both call this,
            // and only one of them may send.
            let mut shared = self.shared();
            if shared.ready_sent || shared.applied.is_none() {
                return;
            }
            shared.ready_sent = true;
        }
        match self.client.ready().await {
            Ok(()) => tracing::info!("reported ready"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot report ready yet; will retry");
                self.shared().ready_sent = false;
            }
        }
    }
}

/// Applies `config` and, only when that succeeded, saves it as the last good one.
///
/// A payload whose content does not match its `config_hash` is refused before anything
/// is touched.
pub async fn apply_and_save<P: DataPlane>(
    plane: Arc<P>,
    state: StateDir,
    config: EdgeConfig,
    key: kokoa_wg::PrivateKey,
) -> Result<(), Error> {
    blocking(move || {
        config.verify_hash().map_err(|e| Error::Refused {
            hash: config.config_hash().to_string(),
            reason: e.to_string(),
        })?;
        plane.apply(&config, &key)?;
        state.save_last_good(&config)
    })
    .await
}
