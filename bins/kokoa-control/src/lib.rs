//! The reference control plane of Kokoa Proxy: the REST API of SPEC §6 over a
//! [`Store`], the Web UI, node enrollment, and the configuration edges and
//! origins pull.
//!
//! The binary `kokoa-control` is a thin shell over this library: `init` ([`init`]) creates a
//! data directory (and the first Web UI admin), `serve` ([`serve`]) runs [`api::router`]. Tests build the same router
//! over any store and call it over real HTTP.
//!
//! - [`api`]: the endpoints, their request and response bodies, and the OpenAPI document
//!   generated from them ([`api::openapi`]).
//! - [`auth`]: bearer tokens (API tokens with a role, node credentials, enrollment tokens)
//!   and people: passwords, TOTP, sessions with CSRF tokens, single sign-on (OIDC).
//! - [`ui`]: the Web UI (sign-in pages, and the pages a small script fills from the API).
//! - [`bundle`]: the origin's `origin-config.tar.gz`.
//! - [`config`]: command line, environment and configuration file.
//! - [`runtime`]: the duties, which live in `kokoa-runtime` ([`AppState`] derefs to its
//!   [`Runtime`](kokoa_runtime::Runtime)), started next to the API: DNS, certificates, health,
//!   key rotation, traffic, retention, and the edge lifecycle (still here: it issues
//!   enrollment tokens and tunnels through the API's functions).
//!
//! ```
//! use std::sync::Arc;
//! use kokoa_control::{AppState, api};
//! use kokoa_core::SubnetPool;
//! use kokoa_store::{MasterKey, MemoryStore};
//!
//! let state = AppState::new(
//!     Arc::new(MemoryStore::new()),
//!     MasterKey::generate(),
//!     SubnetPool::default(),
//!     "https://control.example.com",
//! );
//! // The API and the Web UI; serve with `axum::serve(listener,
//! // router.into_make_service_with_connect_info::<std::net::SocketAddr>())`.
//! let router = api::router(state);
//! # drop(router);
//!
//! let doc = serde_json::to_value(api::openapi())?;
//! assert!(doc["paths"]["/api/v1/routes"]["post"].is_object());
//! assert!(doc["paths"]["/api/v1/users"]["post"].is_object());
//! assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | — | | none: SQLite and PostgreSQL support are both always built in |

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::Path,
    sync::Arc,
};

use kokoa_core::{Email, Name, Role, User};
use kokoa_store::{MasterKey, Store};
use tokio::net::TcpListener;
use zeroize::Zeroizing;

pub mod api;
pub mod auth;
pub mod bundle;
pub mod config;
pub mod downloads;
pub mod error;
pub mod metrics;
mod payload_cache;
pub mod request_id;
pub mod runtime;
mod state;
pub mod tls;
pub mod ui;

pub use error::{ApiError, Error};
// The duties' parts, under the names the control plane's modules use.
use kokoa_runtime::{events, payload};
pub use state::AppState;

use config::{Database, Settings};

/// Opens (and migrates) the database.
pub async fn open_store(database: &Database) -> Result<Arc<dyn Store>, Error> {
    Ok(match database {
        Database::Sqlite(path) => Arc::new(kokoa_store::sqlite::open(path).await?),
        Database::Postgres(url) => Arc::new(kokoa_store::postgres::connect(url).await?),
    })
}

/// What `init` created.
#[derive(Debug)]
pub struct Initialised {
    /// The first admin API token. It is not stored anywhere: show it once.
    pub admin_token: Zeroizing<String>,
    /// The pin of the control plane's own CA, created too: nodes, the CLI and browsers
    /// trust the control plane by it.
    pub ca_pin: kokoa_agent::CaPin,
}

/// `kokoa-control init`: creates `data_dir` (refusing one that holds files), the database,
/// the master key file (`master.key`, mode 0600), the control plane's CA (see [`tls`]), a
/// first admin API token and, given `admin` (e-mail address and password), the first Web UI
/// admin.
pub async fn init(
    data_dir: &Path,
    database: &Database,
    admin: Option<(&str, &str)>,
) -> Result<Initialised, Error> {
    let admin = admin
        .map(|(email, password)| {
            let email = Email::parse(email)?;
            auth::password::check_new(password).map_err(|message| Error::Setting {
                setting: "password",
                message,
            })?;
            Ok::<_, Error>((email, password))
        })
        .transpose()?;
    let io = |what| {
        move |source| Error::Io {
            what,
            path: data_dir.to_owned(),
            source,
        }
    };
    match fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::DataDirNotEmpty(data_dir.to_owned()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io("cannot create data directory"))?,
        Err(e) => return Err(io("cannot read data directory")(e)),
    }
    let key = MasterKey::generate();
    let key_path = config::master_key_path(data_dir);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(|source| Error::Io {
            what: "cannot create master key file",
            path: key_path.clone(),
            source,
        })?;
    writeln!(file, "{}", key.to_base64().as_str())
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::Io {
            what: "cannot write master key file",
            path: key_path.clone(),
            source,
        })?;
    let store = open_store(database).await?;
    let ca_pin = tls::ControlCa::load_or_create(store.as_ref(), &key)
        .await?
        .pin();
    let state = AppState::new(store, key, Default::default(), "");
    let name = Name::parse("admin")?;
    let (_, admin_token) = api::issue_api_token(&state, name, Role::Admin).await?;
    if let Some((email, password)) = admin {
        add_user(state.store(), email, Role::Admin, Some(password)).await?;
    }
    Ok(Initialised {
        admin_token,
        ca_pin,
    })
}

/// Adds a Web UI user (`kokoa-control user add`).
pub async fn add_user(
    store: &dyn Store,
    email: Email,
    role: Role,
    password: Option<&str>,
) -> Result<User, Error> {
    api::create_user(store, email, role, password)
        .await
        .map_err(|e| Error::Setting {
            setting: if e.field() == Some("password") {
                "password"
            } else {
                "email"
            },
            message: e.message().to_owned(),
        })
}

/// Reads the master key written by [`init`].
pub fn load_master_key(path: &Path) -> Result<MasterKey, Error> {
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|source| Error::Io {
        what: "cannot read master key (run `kokoa-control init` first?)",
        path: path.to_owned(),
        source,
    })?);
    Ok(MasterKey::from_base64(text.trim())?)
}

/// Serves `router` on `listener` until `shutdown`, with each client's address at hand.
async fn serve_on<L>(
    listener: L,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    use axum::serve::ListenerExt as _;
    // The no-op tap makes `ConnectInfo<SocketAddr>` available for any listener.
    axum::serve(
        listener.tap_io(|_| {}),
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .map_err(Error::Serve)
}

/// `kokoa-control serve`: serves the API on `settings.listen` until `shutdown` resolves,
/// then stops accepting, ends long polls at once and waits for running requests.
pub async fn serve(
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let master_key = load_master_key(&settings.master_key_path())?;
    let store = open_store(&settings.database).await?;
    let mut tls = match &settings.tls {
        Some(source) => Some(tls::ServingTls::new(source, store.as_ref(), &master_key).await?),
        None => None,
    };
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| Error::Listen {
            address: settings.listen,
            source,
        })?;
    let state = AppState::with_settings(
        store,
        master_key,
        settings.subnet_pool,
        settings.public_url.clone(),
        settings.runtime.clone(),
    );
    if let (Some(tls), Some(tls::TlsSource::OwnCa { .. })) = (&tls, &settings.tls) {
        state.set_ca_pin(tls.pin);
    }
    if let Some(dir) = &settings.downloads_dir {
        let downloads = downloads::Downloads::scan(dir)?;
        tracing::info!(dir = %dir.display(), files = downloads.len(), "serving the agents for download");
        state.set_downloads(downloads);
    }
    state.set_rate_limits(settings.rate_limits);
    state.set_trusted_proxies(settings.trusted_proxies.clone());
    if let Some(config) = &settings.oidc {
        let oidc = auth::oidc::Oidc::with_default_client(config.clone(), state.public_url())?;
        tracing::info!(issuer = %config.issuer, redirect_uri = %oidc.redirect_uri(), "single sign-on enabled");
        state.set_oidc(oidc);
    }
    if let Some(acme) = &settings.acme {
        state.set_acme(acme.clone());
    }
    let acme_responder = match (&mut tls, &settings.tls) {
        (
            Some(tls),
            Some(tls::TlsSource::Acme {
                host, http_listen, ..
            }),
        ) => {
            let (listener, check) = tls::acme::bind(*http_listen).await?;
            tracing::info!(address = %http_listen, %host, "answering the CA's HTTP-01 requests");
            tls.keep_public(state.clone(), host.clone(), check);
            let stopping = state.clone();
            Some(tokio::spawn(serve_on(
                listener,
                tls::acme::responder(state.clone()),
                async move { stopping.shutting_down().await },
            )))
        }
        _ => None,
    };
    if let Some(notifications) = &settings.notifications {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Setting {
                setting: "notifications",
                message: format!("cannot build an HTTP client: {e}"),
            })?;
        let notifier =
            kokoa_notify::Notifier::from_settings(notifications, client).map_err(|e| {
                Error::Setting {
                    setting: "notifications",
                    message: e.to_string(),
                }
            })?;
        state.events().forward_to(notifier);
    }
    tracing::info!(
        listen = %listener.local_addr().map_err(Error::Serve)?,
        database = %settings.database,
        public_url = %settings.public_url,
        tls = match (&tls, &settings.tls) {
            (Some(_), Some(tls::TlsSource::Files { cert, .. })) => cert.display().to_string(),
            (Some(_), Some(tls::TlsSource::Acme { host, .. })) => {
                format!("public certificate for {host} through ACME (the own CA's until issued)")
            }
            (Some(tls), _) => format!("own CA, nodes pin {}", tls.pin),
            _ => "none: plain HTTP (--insecure-http)".into(),
        },
        "serving the API"
    );
    let router = api::router(state.clone());
    let state_for_shutdown = state.clone();
    let (stop_duties, duties_stopped) = tokio::sync::oneshot::channel::<()>();
    let duties = tokio::spawn(runtime::run(state.clone(), async move {
        let _ = duties_stopped.await;
    }));
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down");
        state.begin_shutdown();
    };
    let served = match &tls {
        Some(tls) => {
            // Browsers that met this server over TLS never try it without for a year.
            let router = router.layer(axum::middleware::map_response(
                |mut response: axum::response::Response| async move {
                    response.headers_mut().insert(
                        axum::http::header::STRICT_TRANSPORT_SECURITY,
                        axum::http::HeaderValue::from_static("max-age=31536000"),
                    );
                    response
                },
            ));
            serve_on(tls.listen(listener), router, shutdown).await
        }
        None => serve_on(listener, router, shutdown).await,
    };
    if let Some(responder) = acme_responder {
        let _ = responder.await;
    }
    let _ = stop_duties.send(());
    if let Err(e) = duties.await {
        tracing::error!(error = %e, "the control plane's duties ended abnormally");
    }
    if let Some(notifier) = state_for_shutdown.events().notifier()
        && !notifier.shutdown(std::time::Duration::from_secs(10)).await
    {
        tracing::warn!("some notifications were not delivered before shutting down");
    }
    served
}
