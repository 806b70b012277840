//! `kokoa-lab`: build a small Internet of network namespaces and run Kokoa Proxy in it.
//! See `--help`.

use std::{io::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use kokoa_lab::{
    Error,
    lab::{Bins, Lab},
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
    },
    /// Remove what a crashed lab left: processes, namespaces, links, directories.
    Down,
    /// The tiny HTTP app an origin runs (the lab starts it inside a namespace).
    App {
        /// The name it answers with.
        #[arg(long)]
        name: String,
        /// Address and port to listen on.
        #[arg(long, value_name = "ADDR:PORT")]
        listen: SocketAddr,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Up { bin_dir } => interruptible(up(bin_dir)).await,
        Command::Check { bin_dir, failover } => interruptible(check(bin_dir, failover)).await,
        Command::Down => down(),
        Command::App { name, listen } => kokoa_lab::app::serve(name, listen, shutdown()).await,
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
async fn preflight(bin_dir: Option<PathBuf>) -> Result<Bins, Error> {
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
    ] {
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
    let bins = preflight(bin_dir).await?;
    eprintln!("kokoa-lab: building the lab (namespaces kl-*, 10.99.0.0/24)…");
    let lab = Lab::up(bins).await?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "The lab is up: both host names answer through both edges.\n\
         Logs: {}\n\
         The control plane's API, for the `kokoa` CLI or curl (the token is an admin token):\n  \
         export KOKOA_URL={} KOKOA_TOKEN={}\n\
         Try:",
        lab.dir.join("logs").display(),
        kokoa_lab::lab::control_url(),
        lab.api.token(),
    );
    for hint in lab.hints() {
        let _ = writeln!(out, "  {hint}");
    }
    let _ = writeln!(out, "Press Ctrl-C to stop and remove everything.");
    drop(out);
    std::future::pending::<()>().await;
    Ok(())
}

async fn check(bin_dir: Option<PathBuf>, failover: bool) -> Result<(), Error> {
    let bins = preflight(bin_dir).await?;
    let mut out = std::io::stdout();
    let started = std::time::Instant::now();
    let mut lab = Lab::up(bins).await?;
    let _ = writeln!(
        out,
        "ok  0 lab up: both host names through both edges after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut result = kokoa_lab::check::run(&mut lab, &mut out).await;
    if failover {
        let healed = kokoa_lab::failover::run(&mut lab, &mut out).await;
        result = result.and(healed);
    }
    if result.is_err() {
        eprint!("{}", lab.supervisor.log_tails(25));
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
