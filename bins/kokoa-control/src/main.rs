//! `kokoa-control`: the reference control plane of Kokoa Proxy. See `--help`.
//!
//! Exit codes: 0 success, 1 runtime failure (database, listen address, I/O), 2 bad usage or
//! configuration (clap's own code for bad arguments, reused for invalid settings).

use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;
use kokoa_control::{
    Error,
    config::{Cli, Command, Settings, UserArgs, UserCommand, resolve_init},
};
use kokoa_core::{Email, Role};
use zeroize::Zeroizing;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    kokoa_agent::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Init(args) => init(&args).await,
        Command::Serve(args) => match Settings::resolve(&args) {
            Ok(settings) => kokoa_control::serve(&settings, shutdown_signal()).await,
            Err(e) => Err(e),
        },
        Command::User(args) => user(&args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            let usage = matches!(
                e,
                Error::DataDirNotEmpty(_)
                    | Error::NoDataDir
                    | Error::Core(kokoa_core::Error::InvalidEmail { .. })
                    | Error::Config { .. }
                    | Error::Setting { .. }
            );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

async fn init(args: &kokoa_control::config::InitArgs) -> Result<(), Error> {
    let (data_dir, database) = resolve_init(&args.common)?;
    let password = match &args.admin_email {
        Some(email) => Some(read_password(email)?),
        None => None,
    };
    let admin = args
        .admin_email
        .as_deref()
        .zip(password.as_ref().map(|p| p.as_str()));
    let done = kokoa_control::init(&data_dir, &database, admin).await?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let json = serde_json::json!({
            "admin_token": done.admin_token.as_str(),
            "ca_pin": done.ca_pin.to_string(),
        });
        writeln!(out, "{json}")
    } else {
        writeln!(
            out,
            "Initialised {}.\nAdmin API token (shown only now; keep it secret):\n\n  {}\n\n\
             The control plane serves HTTPS with a certificate from its own CA; nodes and the \
             CLI trust it by this pin\n(not a secret; `kokoa --ca-pin`, KOKOA_CA_PIN):\n\n  {}\n\n\
             Start the API and the Web UI with: kokoa-control serve --data-dir {}{}",
            data_dir.display(),
            done.admin_token.as_str(),
            done.ca_pin,
            data_dir.display(),
            match &args.admin_email {
                Some(email) => format!(
                    "\nthen sign in as {email} and set up the second factor with an \
                     authenticator app."
                ),
                None => String::new(),
            }
        )
    };
    written.map_err(|source| Error::Io {
        what: "cannot print the admin token to",
        path: "stdout".into(),
        source,
    })
}

fn stdout_error(source: std::io::Error) -> Error {
    Error::Io {
        what: "cannot print to",
        path: "stdout".into(),
        source,
    }
}

/// `kokoa-control user …`.
async fn user(args: &UserArgs) -> Result<(), Error> {
    let (_, database) = resolve_init(&args.common)?;
    let store = kokoa_control::open_store(&database).await?;
    let find = |email: &str| {
        let store = store.clone();
        let email = email.to_owned();
        async move {
            let parsed = Email::parse(&email)?;
            store
                .find_user_by_email(&parsed)
                .await?
                .map(|(u, _)| u)
                .ok_or_else(|| Error::Setting {
                    setting: "email",
                    message: format!(
                        "no user has the e-mail address {email:?}; see `kokoa-control user list`"
                    ),
                })
        }
    };
    let mut out = std::io::stdout().lock();
    match &args.command {
        UserCommand::Add {
            email,
            role,
            no_password,
        } => {
            let role = match role.as_str() {
                "admin" => Role::Admin,
                "viewer" => Role::Viewer,
                other => {
                    return Err(Error::Setting {
                        setting: "role",
                        message: format!("unknown role {other:?}: use admin or viewer"),
                    });
                }
            };
            let password = if *no_password {
                None
            } else {
                Some(read_password(email)?)
            };
            let user = kokoa_control::add_user(
                &*store,
                Email::parse(email)?,
                role,
                password.as_ref().map(|p| p.as_str()),
            )
            .await?;
            writeln!(
                out,
                "Added {} ({}). They set up the second factor at their first sign-in.",
                user.email,
                role_word(user.role)
            )
            .map_err(stdout_error)
        }
        UserCommand::List { json } => {
            let users = store.list_users().await?;
            if *json {
                let list = serde_json::to_string(&users).map_err(|e| Error::Setting {
                    setting: "json",
                    message: e.to_string(),
                })?;
                return writeln!(out, "{list}").map_err(stdout_error);
            }
            writeln!(
                out,
                "{:<40} {:<7} {:<14} CREATED",
                "E-MAIL", "ROLE", "SECOND FACTOR"
            )
            .map_err(stdout_error)?;
            for u in users {
                let factor = if u.totp_enabled {
                    "set up"
                } else {
                    "not set up"
                };
                writeln!(
                    out,
                    "{:<40} {:<7} {:<14} {}",
                    u.email.as_str(),
                    role_word(u.role),
                    factor,
                    u.created_at
                )
                .map_err(stdout_error)?;
            }
            Ok(())
        }
        UserCommand::Remove { email } => {
            let user = find(email).await?;
            store.delete_user(&user.id).await?;
            writeln!(out, "Removed {}.", user.email).map_err(stdout_error)
        }
        UserCommand::ResetTotp { email } => {
            let user = find(email).await?;
            kokoa_control::api::reset_second_factor(&*store, &user.id)
                .await
                .map_err(|e| Error::Setting {
                    setting: "email",
                    message: e.message().to_owned(),
                })?;
            writeln!(
                out,
                "The second factor of {} is removed and their sessions ended; they set it up \
                 again at their next sign-in.",
                user.email
            )
            .map_err(stdout_error)
        }
    }
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Admin => "admin",
        _ => "viewer",
    }
}

/// The password for `email`: asked for twice without echo on a terminal, else the first
/// line of stdin.
fn read_password(email: &str) -> Result<Zeroizing<String>, Error> {
    use std::io::{BufRead as _, IsTerminal as _};
    let stdin = std::io::stdin();
    let io = |source| Error::Io {
        what: "cannot read the password from",
        path: "stdin".into(),
        source,
    };
    let read_line = || -> Result<Zeroizing<String>, Error> {
        let mut line = Zeroizing::new(String::new());
        stdin.lock().read_line(&mut line).map_err(io)?;
        let trimmed = line.trim_end_matches(['\n', '\r']).to_owned();
        Ok(Zeroizing::new(trimmed))
    };
    if !stdin.is_terminal() {
        return read_line();
    }
    let ask = |prompt: &str| -> Result<Zeroizing<String>, Error> {
        eprint!("{prompt}");
        let fd = std::io::stdin();
        let saved = rustix::termios::tcgetattr(&fd).ok();
        if let Some(saved) = &saved {
            let mut quiet = saved.clone();
            quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
            let _ = rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &quiet);
        }
        let line = read_line();
        if let Some(saved) = &saved {
            let _ = rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, saved);
        }
        eprintln!();
        line
    };
    let first = ask(&format!("Password for {email} (12 characters or more): "))?;
    let again = ask("The same password again: ")?;
    if *first != *again {
        return Err(Error::Setting {
            setting: "password",
            message: "the two passwords differ; run the command again".into(),
        });
    }
    Ok(first)
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
