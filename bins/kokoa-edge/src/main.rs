//! `kokoa-edge`: enroll an edge with the control plane, then run the agent.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use kokoa_agent::CaPin;
use kokoa_edge::{
    Agent, ControlPlane, EdgeHost, EdgeMetrics, Error, HostSettings, Sampler, Secret, StateDir,
    Timing,
};
use kokoa_nginx::Listen;
use kokoa_wg::apply::Implementation;
use tokio::signal::unix::{SignalKind, signal};

const AFTER_HELP: &str = "\
Examples:
  # Once, with a token from `POST /api/v1/edge-nodes` (provider \"manual\"):
  KOKOA_ENROLL_TOKEN=\"$TOKEN\" kokoa-edge enroll --control-plane https://control.example.net

  # Then (normally from kokoa-edge.service):
  kokoa-edge run

  # A test edge on high ports, taking nginx and the tunnels down when it stops:
  kokoa-edge run --state-dir /tmp/edge --listen-http 8080 --listen-https 8443 \\
      --listen-address 127.0.0.1 --stop-on-exit

  # With Prometheus metrics on a private address (scraped as http://10.8.0.2:9581/metrics):
  kokoa-edge run --metrics-listen 10.8.0.2:9581

Exit codes: 0 stopped normally, 1 failure, 2 bad usage, 3 not enrolled or credential refused.
Logs go to standard error; set KOKOA_LOG (e.g. KOKOA_LOG=kokoa_edge=debug) for more.";

#[derive(Debug, Parser)]
#[command(name = "kokoa-edge", version, about, after_help = AFTER_HELP)]
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
    /// Exchange a single-use enrollment token for this edge's credential
    /// (saved as STATE_DIR/credential.json, mode 0600).
    #[command(after_help = AFTER_HELP)]
    Enroll {
        /// The control plane's base URL.
        #[arg(long, env = "KOKOA_CONTROL_PLANE", value_name = "URL")]
        control_plane: String,
        /// The SHA-256 pin of the control plane's CA (`sha256:…`, as `kokoa-control init`
        /// prints): only a server with a certificate from that CA is trusted, now and
        /// afterwards. Without it, the system's CAs.
        #[arg(long, env = "KOKOA_CA_PIN", value_name = "PIN")]
        ca_pin: Option<CaPin>,
        /// The enrollment token (prefer the environment variable: a command line is visible
        /// to every user in `ps`).
        #[arg(long, env = "KOKOA_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
        /// Where the agent keeps its state.
        #[arg(
            long,
            env = "KOKOA_EDGE_STATE_DIR",
            default_value = "/var/lib/kokoa-edge"
        )]
        state_dir: PathBuf,
    },
    /// Follow the control plane's configuration and serve it with nginx and WireGuard.
    #[command(after_help = AFTER_HELP)]
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Where the agent keeps its state.
    #[arg(
        long,
        env = "KOKOA_EDGE_STATE_DIR",
        default_value = "/var/lib/kokoa-edge"
    )]
    state_dir: PathBuf,
    /// nginx's prefix directory [default: STATE_DIR/nginx].
    #[arg(long, env = "KOKOA_EDGE_NGINX_PREFIX")]
    nginx_prefix: Option<PathBuf>,
    /// The nginx binary.
    #[arg(long, env = "KOKOA_EDGE_NGINX_BIN", default_value = "/usr/sbin/nginx")]
    nginx_bin: PathBuf,
    /// The user nginx's worker processes run as; certificate keys are made readable by its
    /// group.
    #[arg(long, env = "KOKOA_EDGE_NGINX_USER", default_value = "www-data")]
    nginx_user: String,
    /// WireGuard where the kernel has no module: builtin (this program, started again as
    /// the interface's daemon), wireguard-go, boringtun, or kernel (no fallback).
    #[arg(long, env = "KOKOA_EDGE_WG_USERSPACE", default_value = "builtin")]
    wg_userspace: Implementation,
    /// Plain HTTP port (ACME challenges, /health, redirect to HTTPS).
    #[arg(long, env = "KOKOA_EDGE_LISTEN_HTTP", default_value_t = 80)]
    listen_http: u16,
    /// HTTPS port.
    #[arg(long, env = "KOKOA_EDGE_LISTEN_HTTPS", default_value_t = 443)]
    listen_https: u16,
    /// The address nginx binds [default: every IPv4 address].
    #[arg(long, env = "KOKOA_EDGE_LISTEN_ADDRESS")]
    listen_address: Option<IpAddr>,
    /// Stop nginx and delete the tunnels when the agent stops (by default they keep
    /// serving without it).
    #[arg(long)]
    stop_on_exit: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics: requests by host name and status
    /// class, durations, bytes, configuration applies, tunnels. No authentication: bind
    /// loopback or a private address [default: off].
    #[arg(long, env = "KOKOA_EDGE_METRICS_LISTEN", value_name = "ADDR:PORT")]
    metrics_listen: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    // Started again as its own WireGuard interface's daemon (`--wg-userspace builtin`)?
    #[cfg(target_os = "linux")]
    kokoa_wg::userspace::run_if_asked();
    let cli = Cli::parse();
    kokoa_agent::logging::init(cli.log_format);
    // One thread: the agent only polls, reports and checks; nginx and WireGuard carry the
    // traffic. Blocking work (nginx, wg, ping) runs on the blocking pool, whose threads
    // leave when idle, so an idle agent stays small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(2))
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
                Error::NotEnrolled { .. } | Error::Unauthorized { .. } => ExitCode::from(3),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn execute(command: Command) -> Result<(), Error> {
    match command {
        Command::Enroll {
            control_plane,
            ca_pin,
            token,
            state_dir,
        } => {
            let state = StateDir::open(state_dir)?;
            // The key pair is made here and stays here: only its public half is sent.
            let key = state.keys()?.newest().to_string();
            let credential =
                ControlPlane::enroll(&control_plane, ca_pin, &Secret::new(token), &key).await?;
            state.write_credential(&credential)?;
            tracing::info!(
                node_id = %credential.node_id,
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
    let listen = Listen {
        address: args.listen_address,
        http_port: args.listen_http,
        https_port: args.listen_https,
    };
    let settings = HostSettings {
        nginx_prefix: args
            .nginx_prefix
            .unwrap_or_else(|| args.state_dir.join("nginx")),
        nginx_binary: args.nginx_bin,
        nginx_user: Some(args.nginx_user),
        wireguard: args.wg_userspace,
        listen,
    };
    let plane = EdgeHost::new(settings, &state)?;
    let access_log = plane.nginx().layout().logs_dir().join("access.log");
    let metrics = Arc::new(EdgeMetrics::default());
    let sampler = Sampler::new(vec![listen.http_port, listen.https_port], access_log)
        .with_traffic(metrics.traffic());
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
    tracing::info!(node_id = %credential.node_id, control_plane = %credential.control_plane_url, "edge agent starting");
    let agent = Agent::new(
        client,
        Arc::new(plane),
        state,
        Timing::default(),
        sampler,
        args.stop_on_exit,
    )
    .with_metrics(metrics);
    agent.run(shutdown_signal()).await
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
