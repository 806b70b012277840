//! `kokoa-lab`: build a small Internet of network namespaces and run Kokoa Proxy in it.
//! See `--help`.

use std::{io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use kokoa_lab::{
    Error,
    lab::{Bins, Lab, Options},
    net, state,
};
use tokio::signal::unix::{SignalKind, signal};

const AFTER_HELP: &str = "\
Examples:
  # Build everything, then try it by hand (needs root); Ctrl-C removes it all
  cargo build -p kokoa-control -p kokoa-edge -p kokoa-origin -p kokoa -p kokoa-lab
  sudo target/debug/kokoa-lab up

  # The unattended scenario, one line per step; exit code 1 on any failure
  sudo target/debug/kokoa-lab check

  # Then an edge dies: out of DNS, destroyed, replaced elsewhere, with the figures
  sudo target/debug/kokoa-lab check --failover

  # All of it on two control planes, PostgreSQL and a load balancer, then chaos: both
  # down, the leader killed and stalled, the database and the DNS API failing, a VPS
  # create that times out, a flapping origin, while DNS is sampled every 100 ms (what
  # scripts/lab-check runs for CI, with a PostgreSQL server of the lab's own)
  export KOKOA_LAB_POSTGRES_URL=$(KOKOA_PG_DIR=/tmp/kokoa-lab-pg KOKOA_PG_PORT=5434 \\
      scripts/start-postgres)
  sudo -E target/debug/kokoa-lab check --failover --chaos

  # After a crash: stop what is left and delete the namespaces
  sudo target/debug/kokoa-lab down

The lab uses 10.99.0.0/24 (client .100, edge1 .11, edge2 .12, origin-a .21, origin-b .22,
control plane .1 in the root namespace) and namespaces named kl-*. Its state file is
/run/kokoa-lab/state.json.";

#[derive(Debug, Parser)]
#[command(name = "kokoa-lab", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the lab, print the commands to try it, run until Ctrl-C, then remove it.
    Up {
        /// Where kokoa-control, kokoa-edge and kokoa-origin are [default: next to kokoa-lab].
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
    },
    /// Build the lab, run the scenario's checks, remove the lab.
    Check {
        /// Where kokoa-control, kokoa-edge and kokoa-origin are [default: next to kokoa-lab].
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<PathBuf>,
        /// Then kill edge1 and follow the self-healing: out of DNS, unhealthy on the Web
        /// UI's open Edge nodes page (headless Chromium), destroyed, replaced in another
        /// region by the edge automation, no failed request after the TTL.
        #[arg(long)]
        failover: bool,
        /// Run two control planes on one PostgreSQL database behind a load balancer, then
        /// (after the other steps) break things while a sampler asks PowerDNS every 100 ms:
        /// both control planes down, the leader killed and stalled, PostgreSQL stopped,
        /// the DNS API failing while an edge dies, a VPS create that times out, a flapping
        /// origin, an edge dying at the SPEC's check timing. Needs --postgres.
        #[arg(long)]
        chaos: bool,
        /// The PostgreSQL server for --chaos (the lab creates and drops a database of its
        /// own in it, and stops and starts the server once: give it one of its own, e.g.
        /// `KOKOA_PG_DIR=/tmp/kokoa-lab-pg KOKOA_PG_PORT=5434 scripts/start-postgres`).
        #[arg(
            long,
            env = "KOKOA_LAB_POSTGRES_URL",
            value_name = "URL",
            hide_env_values = true
        )]
        postgres: Option<String>,
        /// Copy every log and the newest 1000 events into DIR before the lab is removed.
        #[arg(long, value_name = "DIR")]
        keep_logs: Option<PathBuf>,
        /// Run the release artifacts in DIR (scripts/release, then scripts/package-deb):
        /// the control plane from its Debian package on TLS, the agents downloaded from it;
        /// then a VPS made from the cloud-init alone, timed, and a wrong CA pin refused.
        #[arg(long, value_name = "DIR")]
        packaged: Option<PathBuf>,
    },
    /// Remove what a crashed lab left: processes, namespaces, links, directories, its
    /// database (and start the PostgreSQL server it had stopped).
    Down,
    /// The tiny HTTP app an origin runs (the lab starts it inside a namespace).
    App {
        /// The name it answers with.
        #[arg(long)]
        name: String,
        /// Address and port to listen on.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: SocketAddr,
        /// `/ready` answers 503 while this file exists.
        #[arg(long, value_name = "FILE")]
        down_file: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Up { bin_dir } => interruptible(up(bin_dir)).await,
        Command::Check {
            bin_dir,
            failover,
            chaos,
            postgres,
            keep_logs,
            packaged,
        } => {
            let chaos = chaos.then_some(postgres);
            interruptible(check(bin_dir, failover, chaos, keep_logs, packaged)).await
        }
        Command::Down => down(),
        Command::App {
            name,
            listen,
            down_file,
        } => kokoa_lab::app::serve(name, listen, down_file, shutdown()).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kokoa-lab: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work` until it ends or a signal arrives; either way the lab inside it is dropped,
/// which removes everything it made.
async fn interruptible(work: impl Future<Output = Result<(), Error>>) -> Result<(), Error> {
    tokio::select! {
        result = work => result,
        () = shutdown() => {
            eprintln!("kokoa-lab: interrupted; removing the lab");
            Ok(())
        }
    }
}

/// Completes on SIGINT, SIGTERM or SIGHUP.
async fn shutdown() {
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = hup.recv() => {}
    }
}

/// Fails early, with what to do, when the lab cannot work on this machine.
async fn preflight(bin_dir: Option<PathBuf>, postgres: bool) -> Result<Bins, Error> {
    if !rustix::process::geteuid().is_root() {
        let args: Vec<String> = std::env::args().collect();
        return Err(Error::NotRoot(args.join(" ")));
    }
    net::ip(&["netns", "list"]).await?;
    for (tool, package) in [
        ("curl", "curl"),
        ("ping", "iputils-ping"),
        ("unshare", "util-linux"),
        ("nginx", "nginx"),
        ("wireguard-go", "wireguard-go"),
        ("wg", "wireguard-tools"),
        ("psql", "postgresql-client"),
        ("runuser", "util-linux"),
    ]
    .into_iter()
    .filter(|(tool, _)| postgres || !matches!(*tool, "psql" | "runuser"))
    {
        let found = ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]
            .iter()
            .any(|dir| std::path::Path::new(dir).join(tool).is_file());
        if !found {
            return Err(Error::Command {
                command: tool.into(),
                message: format!(
                    "not installed; run: apt-get install -y --no-install-recommends {package} \
                     (or scripts/install-deps)"
                ),
            });
        }
    }
    Bins::locate(bin_dir)
}

async fn up(bin_dir: Option<PathBuf>) -> Result<(), Error> {
    let bins = preflight(bin_dir, false).await?;
    eprintln!("kokoa-lab: building the lab (namespaces kl-*, 10.99.0.0/24)…");
    let lab = Lab::up(bins, Options::default()).await?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "The lab is up: both host names answer through both edges.\n\
         Logs: {}\n\
         The control plane's API, for the `kokoa` CLI or curl (the token is an admin token):\n  \
         export KOKOA_URL={} KOKOA_TOKEN={} KOKOA_CA_PIN={}\n\
         Try:",
        lab.dir.join("logs").display(),
        kokoa_lab::lab::control_url(),
        lab.api.token(),
        lab.api.ca_pin(),
    );
    for hint in lab.hints() {
        let _ = writeln!(out, "  {hint}");
    }
    let _ = writeln!(out, "Press Ctrl-C to stop and remove everything.");
    drop(out);
    std::future::pending::<()>().await;
    Ok(())
}

/// `chaos`: `None` without `--chaos`, else the PostgreSQL URL given, if any.
async fn check(
    bin_dir: Option<PathBuf>,
    failover: bool,
    chaos: Option<Option<String>>,
    keep_logs: Option<PathBuf>,
    packaged: Option<PathBuf>,
) -> Result<(), Error> {
    let postgres = match chaos {
        None => None,
        Some(Some(url)) => Some(url),
        Some(None) => {
            return Err(Error::Command {
                command: "kokoa-lab check --chaos".into(),
                message: "needs a PostgreSQL server: start one of the lab's own with \
                          `KOKOA_PG_DIR=/tmp/kokoa-lab-pg KOKOA_PG_PORT=5434 \
                          scripts/start-postgres` and pass the URL it prints with --postgres \
                          or KOKOA_LAB_POSTGRES_URL (scripts/lab-check does)"
                    .into(),
            });
        }
    };
    let bins = preflight(bin_dir, postgres.is_some()).await?;
    let mut out = std::io::stdout();
    let started = std::time::Instant::now();
    let chaos = postgres.is_some();
    let is_packaged = packaged.is_some();
    let mut lab = Lab::up(bins, Options { postgres, packaged }).await?;
    let _ = writeln!(
        out,
        "ok  0 lab up: both host names through both edges after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut result = kokoa_lab::check::run(&mut lab, &mut out).await;
    if is_packaged {
        let shipped = kokoa_lab::packaged::run(&mut lab, &mut out).await;
        result = result.and(shipped);
    }
    if failover {
        let healed = kokoa_lab::failover::run(&mut lab, &mut out).await;
        result = result.and(healed);
    }
    if chaos {
        let survived = kokoa_lab::chaos::run(&mut lab, &mut out).await;
        result = result.and(survived);
    }
    let _ = writeln!(
        out,
        "kokoa-lab check: {} in {:.0} s",
        if result.is_ok() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if result.is_err() {
        eprint!("{}", lab.supervisor.log_tails(25));
    }
    if let Some(dir) = keep_logs {
        match lab.keep_logs(&dir).await {
            Ok(n) => eprintln!("kokoa-lab: {n} logs kept in {}", dir.display()),
            Err(e) => eprintln!("kokoa-lab: cannot keep the logs: {e}"),
        }
    }
    result
}

fn down() -> Result<(), Error> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::NotRoot("kokoa-lab down".into()));
    }
    let found = state::down(std::path::Path::new(state::STATE_FILE))?;
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "{}",
        if found {
            "removed the lab's leftovers"
        } else {
            "nothing to remove"
        }
    );
    Ok(())
}
