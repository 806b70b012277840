//! `kokoa-origin`: enroll an origin with the control plane, then run the agent.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::{Parser, Subcommand};
use kokoa_agent::{CaPin, Secret};
use kokoa_origin::{
    Agent, ApplicationEndpoint, BundleCredentials, Checker, ControlPlane, DEFAULT_MAX_CONNECTIONS,
    Error, Firewall, Forwarder, OriginMetrics, Relay, Settings, StateDir, Timing, WgTunnel,
};
use kokoa_wg::{
    InterfaceName,
    apply::{Implementation, WgHost},
};
use tokio::signal::unix::{SignalKind, signal};

const AFTER_HELP: &str = "\
Examples:
  # Once, with the credentials.json of the origin bundle (origin-config.tar.gz):
  kokoa-origin enroll --bundle /etc/kokoa/credentials.json

  # Or with a token from `kokoa enrollment create --kind origin --node ORIGIN_ID`:
  KOKOA_ENROLL_TOKEN=... kokoa-origin enroll --control-plane https://control.example.net

  # Then (normally from kokoa-origin.service):
  kokoa-origin run

  # With the bundle's nginx serving the tunnel address instead of the built-in forwarding:
  kokoa-origin run --no-forward

  # On a host whose firewall is managed otherwise (no nftables table `inet kokoa`):
  kokoa-origin run --no-firewall

  # With Prometheus metrics for a scraper on this host:
  kokoa-origin run --metrics-listen 127.0.0.1:9582

Firewall: `run` installs the nftables table `inet kokoa` (needs the nft program, package
nftables): on the WireGuard interface only the edges' tunnel addresses get in, to the
declared ports, port 80 (health checks) and ping. Other services listening on 0.0.0.0
are not reachable through the tunnel. If the rules cannot be installed the agent keeps
serving, logs why and reports \"firewall\": \"failed: ...\" in its heartbeats.

Exit codes: 0 stopped normally, 1 failure, 2 bad usage, 3 not enrolled or token refused.
Logs go to standard error; set KOKOA_LOG (e.g. KOKOA_LOG=kokoa_origin=debug) for more.";

/// How long one service check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Parser)]
#[command(name = "kokoa-origin", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written: `text`, or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "KOKOA_LOG_FORMAT",
        default_value_t,
        value_name = "FORMAT"
    )]
    log_format: kokoa_agent::logging::LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exchange a single-use enrollment token for this origin's credential
    /// (saved as STATE_DIR/credential.json, mode 0600).
    #[command(after_help = AFTER_HELP)]
    Enroll {
        /// The bundle's credentials.json ({control_plane_url, origin_id, enrollment_token,
        /// ca_pin}).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["control_plane", "token"])]
        bundle: Option<PathBuf>,
        /// The control plane's base URL.
        #[arg(long, env = "KOKOA_CONTROL_PLANE", value_name = "URL")]
        control_plane: Option<String>,
        /// The SHA-256 pin of the control plane's CA (`sha256:…`, as `kokoa-control init`
        /// prints): only a server with a certificate from that CA is trusted, now and
        /// afterwards. Without it, the system's CAs.
        #[arg(long, env = "KOKOA_CA_PIN", value_name = "PIN")]
        ca_pin: Option<CaPin>,
        /// The enrollment token (prefer the environment variable: a command line is visible
        /// to every user in `ps`).
        #[arg(long, env = "KOKOA_ENROLL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Where the agent keeps its state.
        #[arg(
            long,
            env = "KOKOA_ORIGIN_STATE_DIR",
            default_value = "/var/lib/kokoa-origin"
        )]
        state_dir: PathBuf,
    },
    /// Follow the control plane's configuration: keep wg0 up, forward the edges' traffic to
    /// local services, check them and send heartbeats.
    #[command(after_help = AFTER_HELP)]
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Where the agent keeps its state.
    #[arg(
        long,
        env = "KOKOA_ORIGIN_STATE_DIR",
        default_value = "/var/lib/kokoa-origin"
    )]
    state_dir: PathBuf,
    /// WireGuard where the kernel has no module: builtin (this program, started again as
    /// the interface's daemon), wireguard-go, boringtun, or kernel (no fallback).
    #[arg(long, env = "KOKOA_ORIGIN_WG_USERSPACE", default_value = "builtin")]
    wg_userspace: Implementation,
    /// The WireGuard interface.
    #[arg(long, env = "KOKOA_ORIGIN_INTERFACE", default_value = "wg0")]
    interface: String,
    /// Do not forward: another proxy (the bundle's nginx.conf) listens on the tunnel
    /// address.
    #[arg(long)]
    no_forward: bool,
    /// Most connections forwarded at the same time.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// How forwarded connections move: `kernel` (Linux, the default there: the firewall
    /// table redirects the declared ports to 127.0.0.1, nothing passes through this
    /// process; needs the firewall and an IPv4 tunnel, `splice` otherwise), `splice` (through
    /// this process, the bytes staying in the kernel; Linux) or `copy` (everywhere).
    #[arg(long, value_name = "kernel|splice|copy", default_value_t = Relay::default())]
    relay: Relay,
    /// Delete the WireGuard interface when the agent stops (by default it keeps running).
    /// The firewall rules go with it.
    #[arg(long)]
    stop_on_exit: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics: each edge's tunnel (handshake age,
    /// bytes), the edges connected, the checked services. No authentication: bind loopback
    /// or a private address [default: off].
    #[arg(long, env = "KOKOA_ORIGIN_METRICS_LISTEN", value_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr>,
    /// The application's own health URL, e.g. `http://127.0.0.1:8080/health`: the edges'
    /// check `GET http://<tunnel address>/health` answers 200 while it answers 2xx, 503
    /// otherwise (the control plane then serves this origin's routes as 503). Without it
    /// the check tells whether this agent and its tunnel work.
    #[arg(long, env = "KOKOA_APPLICATION_URL", value_name = "URL")]
    application_url: Option<String>,
    /// Offer no application check (port 80 of the tunnel address stays closed).
    #[arg(long, conflicts_with = "application_url")]
    no_application_check: bool,
    /// Install no firewall rules (and remove the agent's table `inet kokoa` if one is
    /// left): for hosts that manage their own firewall.
    #[arg(long, env = "KOKOA_ORIGIN_NO_FIREWALL")]
    no_firewall: bool,
}

fn main() -> ExitCode {
    // Started again as its own WireGuard interface's daemon (`--wg-userspace builtin`)?
    #[cfg(target_os = "linux")]
    kokoa_wg::userspace::run_if_asked();
    let cli = Cli::parse();
    kokoa_agent::logging::init(cli.log_format);
    // Worker threads for the forwarded traffic; blocking work (wg, nft, ping) runs on the
    // blocking pool, whose threads leave when idle, so an idle agent stays small.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(Duration::from_secs(2))
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            match e {
                Error::EnrollArguments => ExitCode::from(2),
                Error::NotEnrolled { .. } => ExitCode::from(3),
                e if e.is_unauthorized() => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn execute(command: Command) -> Result<(), Error> {
    match command {
        Command::Enroll {
            bundle,
            control_plane,
            ca_pin,
            token,
            state_dir,
        } => {
            let (url, pin, token) = match (bundle, control_plane, token) {
                (Some(path), _, _) => {
                    let bundle = BundleCredentials::read(&path)?;
                    (
                        bundle.control_plane_url,
                        ca_pin.or(bundle.ca_pin),
                        bundle.enrollment_token,
                    )
                }
                (None, Some(url), Some(token)) => (url, ca_pin, Secret::new(token)),
                _ => return Err(Error::EnrollArguments),
            };
            let state = StateDir::open(state_dir)?;
            // The key pair is made here and stays here: only its public half is sent.
            let key = state.keys()?.newest().to_string();
            let credential = ControlPlane::enroll(&url, pin, &token, &key).await?;
            state.write_credential(&credential)?;
            tracing::info!(
                origin_id = %credential.node_id,
                path = %state.credential_path().display(),
                "enrolled; credential saved"
            );
            Ok(())
        }
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> Result<(), Error> {
    let state = StateDir::open(&args.state_dir)?;
    // Held until the agent exits: one agent per state directory.
    let _lock = state.lock()?;
    let credential = state.read_credential()?;
    let client = ControlPlane::new(&credential)?;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let firewall = if args.no_firewall {
        // Rules a previous run left would keep admitting its edges only.
        if let Err(e) = Firewall::new().remove(&InterfaceName::new(&args.interface)?) {
            tracing::debug!(error = %e, "no firewall table removed");
        }
        tracing::info!("firewall off (--no-firewall): the tunnel admits what the host admits");
        None
    } else {
        Some(Firewall::new())
    };
    let settings = Settings {
        interface: InterfaceName::new(&args.interface)?,
        forwarder: (!args.no_forward)
            .then(|| Forwarder::new(localhost, args.max_connections).with_relay(args.relay)),
        firewall,
        checker: Checker::new(localhost, CHECK_TIMEOUT)?,
        application: if args.no_application_check {
            None
        } else {
            Some(ApplicationEndpoint::new(
                args.application_url,
                CHECK_TIMEOUT,
            )?)
        },
        timing: Timing::default(),
        stop_on_exit: args.stop_on_exit,
        disk: PathBuf::from("/"),
    };
    let tunnel = WgTunnel(WgHost::new(args.wg_userspace, state.path()));
    tracing::info!(origin_id = %credential.node_id, control_plane = %credential.control_plane_url, "origin agent starting");
    let metrics = Arc::new(OriginMetrics::default());
    if let Some(address) = args.metrics_listen {
        let served = Arc::clone(&metrics);
        let bound = kokoa_agent::prometheus::spawn(address, move || served.render())
            .await
            .map_err(|source| Error::Io {
                action: "listen for metrics on",
                path: address.to_string().into(),
                source,
            })?;
        metrics.served_at(bound);
    }
    Agent::new(client, tunnel, state, settings)
        .with_metrics(metrics)
        .run(shutdown_signal())
        .await
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the agent");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
