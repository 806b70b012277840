//! `kokoa-control`: the reference control plane of Kokoa Proxy. See `--help`.
//!
//! Exit codes: 0 success, 1 runtime failure (database, listen address, I/O), 2 bad usage or
//! configuration (clap's own code for bad arguments, reused for invalid settings).

use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;
use kokoa_control::{
    Error,
    config::{Cli, Command, Settings, resolve_init},
};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("KOKOA_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init(&args).await,
        Command::Serve(args) => match Settings::resolve(&args) {
            Ok(settings) => kokoa_control::serve(&settings, shutdown_signal()).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            let usage = matches!(
                e,
                Error::DataDirNotEmpty(_)
                    | Error::NoDataDir
                    | Error::Config { .. }
                    | Error::Setting { .. }
            );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

async fn init(args: &kokoa_control::config::InitArgs) -> Result<(), Error> {
    let (data_dir, database) = resolve_init(&args.common)?;
    let done = kokoa_control::init(&data_dir, &database).await?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let json = serde_json::json!({ "admin_token": done.admin_token.as_str() });
        writeln!(out, "{json}")
    } else {
        writeln!(
            out,
            "Initialised {}.\nAdmin API token (shown only now; keep it secret):\n\n  {}\n\n\
             Start the API with: kokoa-control serve --data-dir {}",
            data_dir.display(),
            done.admin_token.as_str(),
            data_dir.display()
        )
    };
    written.map_err(|source| Error::Io {
        what: "cannot print the admin token to",
        path: "stdout".into(),
        source,
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
