//! Command line, configuration file and environment, merged into [`Settings`].
//!
//! Precedence, highest first: command-line flags, environment variables (`KOKOA_…`), the
//! TOML configuration file (`--config FILE`), built-in defaults. TOML was chosen over YAML
//! because its parser is maintained and strict (unknown keys are an error, so a typo does
//! not silently fall back to a default).

use std::{
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, SocketAddr},
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use kokoa_core::{RateLimits, SubnetPool};
use kokoa_notify::NotifySettings;
use kokoa_provision::{AgentSource, EdgeNodeManagement};
use serde::Deserialize;

use crate::{
    auth::oidc::OidcConfig,
    error::Error,
    runtime::{EdgeSettings, HealthSettings, Module, ProvisionerEntry, RuntimeSettings},
    tls::TlsSource,
};

/// Where `--tls-acme` answers HTTP-01 by default: the port the CA asks on.
pub const DEFAULT_ACME_HTTP_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80);
/// The default listen address: local only, so a fresh install is not exposed by accident.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

const EXAMPLES: &str = "\
Examples:
  # Create the data directory: SQLite database, master key, first admin token (shown once)
  # and the first Web UI admin (the password is asked for, or read from stdin)
  kokoa-control init --data-dir /var/lib/kokoa --admin-email admin@example.com

  # More people for the Web UI; list them; make one set up the second factor again
  kokoa-control user add --data-dir /var/lib/kokoa viewer@example.com --role viewer
  kokoa-control user list --data-dir /var/lib/kokoa
  kokoa-control user reset-totp --data-dir /var/lib/kokoa viewer@example.com

  # Serve the API over HTTPS, with a certificate from the control plane's own CA
  # (nodes trust it by the pin `init` printed)
  kokoa-control serve --data-dir /var/lib/kokoa --listen 0.0.0.0:8443 \\
      --public-url https://control.example.com:8443

  # Same with a certificate of your own, or plain HTTP behind a TLS proxy
  kokoa-control serve --data-dir /var/lib/kokoa --tls-cert cp.pem --tls-key cp.key
  kokoa-control serve --data-dir /var/lib/kokoa --insecure-http --listen 127.0.0.1:8080

  # Or a public certificate from the [acme] section's CA for the public URL's host,
  # proven over HTTP-01 on port 80 (nodes then trust the system's roots, no pin)
  kokoa-control serve --config /etc/kokoa/control.toml --tls-acme \\
      --listen 0.0.0.0:443 --public-url https://control.example.com

  # Same, settings from a file and the environment (flags win over both)
  KOKOA_DATABASE_URL=postgres://kokoa@db/kokoa kokoa-control serve --config /etc/kokoa/control.toml

Configuration file (TOML, every key optional):
  data_dir = \"/var/lib/kokoa\"
  listen = \"127.0.0.1:8080\"
  database_url = \"postgres://kokoa@db/kokoa\"   # default: SQLite in data_dir
  public_url = \"https://control.example.com\"   # what nodes use to reach this server
  tls_names = [\"cp.internal\"]                # more names for the own-CA certificate
  # tls_cert = \"/etc/kokoa/cp.pem\"           # or serve this chain and key
  # tls_key = \"/etc/kokoa/cp.key\"
  # insecure_http = true                       # or plain HTTP (development, TLS proxy)
  # tls_acme = true                            # or a public certificate through [acme]
  # acme_http_listen = \"0.0.0.0:80\"           # where its HTTP-01 responses are served
  downloads_dir = \"/usr/share/kokoa/downloads\"  # agents handed out at /downloads/
  subnet_pool = \"10.0.0.0/16\"                  # one /24 per origin is taken from it
  edge_requests_per_second = 10                # per client address, at every edge
  edge_burst = 20
  edge_connections_per_address = 10
  trusted_proxies = [\"127.0.0.1\"]            # TLS proxy in front: its X-Forwarded-For counts

  [oidc]                                       # optional: sign-in through an OpenID provider
  issuer = \"https://id.example.com/realms/ops\"
  client_id = \"kokoa\"                         # secret: KOKOA_OIDC_CLIENT_SECRET
  allowed_groups = [\"ops\"]                    # and/or allowed_emails = [...]
  admin_groups = [\"ops-admins\"]               # new users: admin; others: default_role
  # redirect URI to register: PUBLIC_URL/login/oidc/callback

  [modules.health_checker]                     # every module starts on; switch at run
  enabled = true                               # time with PUT /api/v1/modules/NAME

  [edge_node_management]                       # SPEC §9, these are the defaults
  health_check_failure_threshold = 3
  health_check_interval = 10
  auto_destroy_unhealthy_vps = true
  destroy_delay = 60
  auto_replace_unhealthy_nodes = true
  replace_delay = 5
  min_active_nodes = 2
  max_nodes = 10
  [edge_node_management.replacement_strategy]
  change_provider = true
  change_region = true
  preferred_providers = [\"vultr\", \"digitalocean\", \"hetzner\"]
  preferred_regions = [\"nrt\", \"sgp\", \"fra\"]

  [health]                                     # seconds; SPEC §8.4 defaults
  timeout = 5
  recovery_threshold = 3
  end_to_end_interval = 30
  origin_application_interval = 30             # edges GET each origin's /health
  trusted_ca_file = \"/etc/kokoa/private-ca.pem\"  # beyond the system's roots
  observer_max_unhealthy_percent = 50          # more edges unhealthy at once: suspect the
                                               # checks, keep DNS, destroy nothing
  flap_max_changes = 4                         # an origin changes edges' configuration at
  flap_window = 60                             # most this often per window

  [retention]                                  # the leader deletes older records
  events_days = 7
  health_history_days = 7
  intents_days = 7

  [wireguard]                                  # keys older than this are rotated, one
  rotate_keys_days = 90                        # at a time, without cutting traffic; 0: by
                                               # hand only (kokoa edge|origin rotate-keys)

  [[provisioners]]                             # providers new edges are created at
  kind = \"digitalocean\"                        # digitalocean, vultr, hetzner or aws
  token_env = \"DO_API_TOKEN\"
  image = \"debian-12-x64\"
  size = \"s-1vcpu-1gb\"
  ssh_key_id = \"12345\"

  [edge_agent]                                 # how a new VPS gets kokoa-edge
  package = \"kokoa-edge\"                       # or url = \"https://…\" with sha256 = \"…\"

  [[notifications.sinks]]                      # where events are told to people
  kind = \"slack\"                               # webhook, slack or email
  url = \"https://hooks.slack.com/services/…\"
  events = [\"edge.*\", \"edge_node_unhealthy\"]
  min_severity = \"warning\"

  [acme]                                       # without it no certificate is ordered
  directory = \"letsencrypt\"                  # or letsencrypt-staging, zerossl, or a URL
  contact = \"admin@example.com\"
  ca_file = \"/etc/kokoa/acme-root.pem\"        # root of the directory's TLS (pebble, step-ca)
  eab_key_id = \"kid-1\"                        # external account binding (zerossl);
                                               # HMAC key in KOKOA_ACME_EAB_HMAC_KEY
  renew_days_before = 30

  [acme.origin_ca]                             # Cloudflare Origin CA instead of ACME for
  zones = [\"hoge.com\"]                         # the names in these proxied zones
  token_env = \"CF_ORIGIN_CA_TOKEN\"             # API token (SSL and Certificates: Edit),
                                               # or service_key_env (Origin CA key)
  key_type = \"ecc\"                             # or rsa
  validity_days = 5475                         # 7, 30, 90, 365, 730, 1095 or 5475

DNS zones are added through the API (`kokoa dns add-zone`), their credentials sealed in
the database. Logs go to stderr; KOKOA_LOG sets the level (e.g. KOKOA_LOG=debug).";

/// `kokoa-control`: the reference control plane of Kokoa Proxy.
#[derive(Debug, Parser)]
#[command(version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// How log lines are written: `text`, or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "KOKOA_LOG_FORMAT",
        default_value_t,
        value_name = "FORMAT"
    )]
    pub log_format: kokoa_agent::logging::LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new data directory: database, master key and the first admin API token.
    #[command(after_help = EXAMPLES)]
    Init(InitArgs),
    /// Serve the REST API and the Web UI until SIGINT or SIGTERM.
    #[command(after_help = EXAMPLES)]
    Serve(ServeArgs),
    /// Manage the people who sign in to the Web UI.
    #[command(after_help = EXAMPLES)]
    User(UserArgs),
}

/// `user` arguments.
#[derive(Debug, Clone, Args)]
pub struct UserArgs {
    /// Common settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: UserCommand,
}

/// The `user` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Add a user. The password is asked for (or read from the first line of stdin); they
    /// set up their second factor at their first sign-in.
    Add {
        /// E-mail address, the sign-in name.
        email: String,
        /// `admin` or `viewer` (read only).
        #[arg(long, default_value = "admin")]
        role: String,
        /// No password: the user signs in only through the OpenID provider.
        #[arg(long)]
        no_password: bool,
    },
    /// List users.
    List {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a user and end their sessions.
    Remove {
        /// E-mail address.
        email: String,
    },
    /// Remove a user's second factor (a lost phone) and end their sessions; they set it up
    /// again at their next sign-in.
    ResetTotp {
        /// E-mail address.
        email: String,
    },
}

/// Settings both subcommands take.
#[derive(Debug, Clone, Default, Args)]
pub struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "KOKOA_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Directory holding the SQLite database and `master.key`.
    #[arg(long, env = "KOKOA_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (`postgres://user@host/db`) instead of SQLite in the data directory.
    #[arg(
        long = "database",
        env = "KOKOA_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true,
        global = true
    )]
    pub database_url: Option<String>,
}

/// `init` arguments.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Common settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print the admin token as JSON: `{"admin_token":"…"}`.
    #[arg(long)]
    pub json: bool,
    /// Also create this Web UI admin; the password is asked for, or read from the first
    /// line of stdin.
    #[arg(long, value_name = "EMAIL")]
    pub admin_email: Option<String>,
}

/// `serve` arguments.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Common settings.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Address and port to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "KOKOA_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// URL nodes use to reach this server, written into bundles [default: https://LISTEN].
    #[arg(long, env = "KOKOA_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Serve plain HTTP: for development, or behind a proxy that ends TLS. Nodes fetch their
    /// credentials from this server; never expose it without TLS.
    #[arg(long, env = "KOKOA_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// Serve this PEM certificate chain (leaf first) instead of one from the control
    /// plane's own CA; re-read when it changes.
    #[arg(
        long,
        env = "KOKOA_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "KOKOA_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Another DNS name or IP address for the own-CA certificate (repeat, or separate with
    /// commas); the public URL's host, localhost and loopback are always in it.
    #[arg(
        long = "tls-name",
        env = "KOKOA_TLS_NAMES",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub tls_names: Vec<String>,
    /// Serve a public certificate for the public URL's host, ordered through the `[acme]`
    /// section's CA and renewed by the leader; until it is issued, the own CA's serves.
    /// Nodes then trust the system's roots: enrollment commands carry no pin.
    #[arg(long, env = "KOKOA_TLS_ACME", conflicts_with_all = ["insecure_http", "tls_cert"])]
    pub tls_acme: bool,
    /// Where --tls-acme answers the CA's HTTP-01 requests (and sends every other plain
    /// HTTP request to the public URL) [default: 0.0.0.0:80].
    #[arg(long, env = "KOKOA_ACME_HTTP_LISTEN", value_name = "ADDR:PORT")]
    pub acme_http_listen: Option<SocketAddr>,
    /// Hand out the files of this directory at /downloads/ (the agents, for new edges and
    /// origins) [default: /usr/share/kokoa/downloads when it exists].
    #[arg(long, env = "KOKOA_DOWNLOADS_DIR", value_name = "DIR")]
    pub downloads_dir: Option<PathBuf>,
    /// Pool the origins' /24 subnets come from [default: 10.0.0.0/16].
    #[arg(long, env = "KOKOA_SUBNET_POOL", value_name = "CIDR", value_parser = parse_pool)]
    pub subnet_pool: Option<SubnetPool>,
    /// Requests per second each client address may make at every edge (SPEC §10.4) [default: 10].
    #[arg(long, env = "KOKOA_EDGE_REQUESTS_PER_SECOND", value_name = "N")]
    pub edge_requests_per_second: Option<NonZeroU32>,
    /// Requests a client may make at once above that rate [default: 20].
    #[arg(long, env = "KOKOA_EDGE_BURST", value_name = "N")]
    pub edge_burst: Option<u32>,
    /// Connections each client address may hold open at every edge [default: 10].
    #[arg(long, env = "KOKOA_EDGE_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub edge_connections_per_address: Option<NonZeroU32>,
    /// A reverse proxy in front of this server whose X-Forwarded-For names the client
    /// (repeat, or separate with commas).
    #[arg(
        long = "trusted-proxy",
        env = "KOKOA_TRUSTED_PROXIES",
        value_name = "IP",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

fn parse_pool(text: &str) -> Result<SubnetPool, String> {
    let net = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 network like 10.0.0.0/16"))?;
    SubnetPool::new(net).map_err(|e| e.to_string())
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    database_url: Option<String>,
    public_url: Option<String>,
    insecure_http: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_names: Option<Vec<String>>,
    tls_acme: Option<bool>,
    acme_http_listen: Option<SocketAddr>,
    downloads_dir: Option<PathBuf>,
    subnet_pool: Option<SubnetPool>,
    edge_requests_per_second: Option<NonZeroU32>,
    edge_burst: Option<u32>,
    edge_connections_per_address: Option<NonZeroU32>,
    oidc: Option<OidcConfig>,
    trusted_proxies: Option<Vec<std::net::IpAddr>>,
    #[serde(default)]
    modules: BTreeMap<String, ModuleFile>,
    #[serde(default)]
    health: HealthFile,
    #[serde(default)]
    retention: RetentionFile,
    #[serde(default)]
    wireguard: WireguardFile,
    edge_node_management: Option<EdgeNodeManagement>,
    #[serde(default)]
    provisioners: Vec<ProvisionerFile>,
    edge_agent: Option<AgentFile>,
    #[serde(default)]
    edge_provisioning: ProvisioningFile,
    notifications: Option<NotifySettings>,
    acme: Option<AcmeFile>,
}

/// `[modules.NAME]`: whether a module starts switched on (SPEC §8).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModuleFile {
    enabled: Option<bool>,
}

/// `[health]`: how edges and origins are checked (SPEC §8.4); the HTTP check's interval
/// and threshold are in `[edge_node_management]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFile {
    timeout: Option<u64>,
    recovery_threshold: Option<u32>,
    workers: Option<usize>,
    end_to_end_interval: Option<u64>,
    certificate_interval: Option<u64>,
    certificate_min_days: Option<u32>,
    trusted_ca_file: Option<PathBuf>,
    edge_heartbeat_timeout: Option<u64>,
    origin_heartbeat_timeout: Option<u64>,
    origin_application_interval: Option<u64>,
    error_rate_percent: Option<f64>,
    cpu_percent: Option<f64>,
    cpu_window: Option<u64>,
    origin_disk_percent: Option<f64>,
    observer_max_unhealthy_percent: Option<f64>,
    flap_max_changes: Option<u32>,
    flap_window: Option<u64>,
}

/// `[retention]`: how many days records are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    events_days: Option<u32>,
    health_history_days: Option<u32>,
    intents_days: Option<u32>,
}

/// `[wireguard]`: key rotation (SPEC §10.3).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireguardFile {
    rotate_keys_days: Option<u32>,
}

/// `[edge_provisioning]`: timing of new edges.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvisioningFile {
    /// Seconds a new VPS has to come up before it is destroyed and replaced.
    timeout: Option<u64>,
    /// Seconds a new VPS's enrollment token stays valid.
    enrollment_ttl: Option<u64>,
}

/// `[[provisioners]]`: a VPS provider the edge automation may use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvisionerFile {
    /// The provider name edges carry (default: the kind).
    name: Option<String>,
    /// `digitalocean`, `vultr`, `hetzner`, `aws` or `lab`.
    kind: String,
    /// The API token (DigitalOcean, Vultr, Hetzner) — better from the environment.
    token: Option<String>,
    /// The environment variable holding the API token, e.g. `DO_API_TOKEN`.
    token_env: Option<String>,
    /// AWS: the environment variables of the access key (default `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, and `AWS_SESSION_TOKEN` when set).
    #[cfg(feature = "vps-aws")]
    access_key_id_env: Option<String>,
    #[cfg(feature = "vps-aws")]
    secret_access_key_env: Option<String>,
    /// AWS: security groups of new instances.
    #[serde(default)]
    security_groups: Vec<String>,
    /// Another API endpoint (a proxy, a test server).
    base_url: Option<String>,
    /// The image new edges boot.
    image: String,
    /// The size or plan when an edge asks for none.
    size: String,
    /// The SSH key id installed when an edge asks for none.
    ssh_key_id: Option<String>,
    /// `kind = "lab"`: network namespaces on this machine as edge VPSes, for labs and
    /// tests (`[provisioners.lab]`, see kokoa-provision's `LabConfig`).
    #[cfg(feature = "lab")]
    lab: Option<kokoa_provision::lab::LabConfig>,
}

/// `[edge_agent]`: where new VPSes get `kokoa-edge`: a binary by URL with its SHA-256, or
/// a package of the image's repositories.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    url: Option<String>,
    sha256: Option<String>,
    package: Option<String>,
}

/// The `[acme]` section of the configuration file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcmeFile {
    directory: Option<String>,
    contact: Option<String>,
    ca_file: Option<PathBuf>,
    eab_key_id: Option<String>,
    eab_hmac_key: Option<String>,
    renew_days_before: Option<u32>,
    http01_port: Option<u16>,
    origin_ca: Option<OriginCaFile>,
}

/// `[acme.origin_ca]`: Cloudflare's Origin CA for the names in some zones. A subsection of
/// `[acme]`, since it shares its renewal rule and its place in the control plane; names
/// outside the zones keep ACME (an Origin CA certificate is trusted by Cloudflare's proxy
/// only).
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OriginCaFile {
    #[serde(default)]
    zones: Vec<String>,
    token_env: Option<String>,
    service_key_env: Option<String>,
    key_type: Option<String>,
    validity_days: Option<i64>,
    base_url: Option<String>,
}

impl fmt::Debug for AcmeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeFile")
            .field("directory", &self.directory)
            .field("eab_key_id", &self.eab_key_id)
            .finish_non_exhaustive()
    }
}

/// The environment variable the external account binding's HMAC key may come from, so it
/// need not be written into the configuration file.
pub const EAB_HMAC_KEY_ENV: &str = "KOKOA_ACME_EAB_HMAC_KEY";

pub use kokoa_runtime::{AcmeSettings, OriginCaSettings};

/// How `[acme.origin_ca]` names its credential, told when it names none.
const ORIGIN_CA_ENV_HINT: &str = "token_env = \"CF_ORIGIN_CA_TOKEN\" (an API token with \
                                  SSL and Certificates: Edit) or service_key_env (the \
                                  account's Origin CA key)";

/// The `[acme.origin_ca]` settings of `file`, reading the environment variables it names
/// through `env`.
fn resolve_origin_ca(
    file: OriginCaFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<OriginCaSettings, Error> {
    use kokoa_acme::cloudflare::{OriginCaAuth, OriginKeyType, VALIDITIES};
    let setting = |setting, message| Error::Setting { setting, message };
    let from_env = |field: &'static str, var: &str| {
        env(var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
            setting(
                field,
                format!(
                    "the environment variable {var} is not set (or empty); export the \
                     Cloudflare credential in it before starting the control plane"
                ),
            )
        })
    };
    let auth = match (&file.token_env, &file.service_key_env) {
        (Some(var), None) => OriginCaAuth::ApiToken(zeroize::Zeroizing::new(from_env(
            "acme.origin_ca.token_env",
            var,
        )?)),
        (None, Some(var)) => OriginCaAuth::ServiceKey(zeroize::Zeroizing::new(from_env(
            "acme.origin_ca.service_key_env",
            var,
        )?)),
        (Some(_), Some(_)) => {
            return Err(setting(
                "acme.origin_ca.token_env",
                "give either token_env or service_key_env, not both".into(),
            ));
        }
        (None, None) => {
            return Err(setting(
                "acme.origin_ca.token_env",
                format!("the Origin CA needs a credential: {ORIGIN_CA_ENV_HINT}"),
            ));
        }
    };
    if file.zones.is_empty() {
        return Err(setting(
            "acme.origin_ca.zones",
            "list the zones proxied through Cloudflare whose names get Origin CA \
             certificates, e.g. zones = [\"hoge.com\"]"
                .into(),
        ));
    }
    let zones = file
        .zones
        .iter()
        .map(|z| {
            kokoa_core::Hostname::parse(z)
                .ok()
                .filter(|h| !h.is_wildcard())
                .ok_or_else(|| {
                    setting(
                        "acme.origin_ca.zones",
                        format!("{z:?} is not a zone name like \"hoge.com\""),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key_type = match file.key_type.as_deref() {
        None | Some("ecc") => OriginKeyType::Ecc,
        Some("rsa") => OriginKeyType::Rsa,
        Some(other) => {
            return Err(setting(
                "acme.origin_ca.key_type",
                format!("{other:?} is neither \"ecc\" nor \"rsa\""),
            ));
        }
    };
    let validity_days = match file.validity_days {
        None => 5475,
        Some(days) => u16::try_from(days)
            .ok()
            .filter(|d| VALIDITIES.contains(d))
            .ok_or_else(|| {
                setting(
                    "acme.origin_ca.validity_days",
                    format!(
                        "{days} is not a validity Cloudflare offers; choose one of {}",
                        VALIDITIES.map(|d| d.to_string()).join(", ")
                    ),
                )
            })?,
    };
    let base_url = match file.base_url {
        None => kokoa_acme::cloudflare::API_BASE.to_owned(),
        Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
            url.trim_end_matches('/').to_owned()
        }
        Some(url) => {
            return Err(setting(
                "acme.origin_ca.base_url",
                format!("{url:?} is not an http(s):// URL"),
            ));
        }
    };
    Ok(OriginCaSettings {
        auth,
        key_type,
        validity_days,
        base_url,
        zones,
    })
}

/// The settings of `file`, reading the environment variables it names through `env`.
fn resolve_acme(
    file: AcmeFile,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AcmeSettings, Error> {
    use kokoa_acme::{ExternalAccountBinding, Issuer};
    let setting = |setting, message| Error::Setting { setting, message };
    let hmac = zeroize::Zeroizing::new(env(EAB_HMAC_KEY_ENV).or(file.eab_hmac_key));
    let eab = match (&file.eab_key_id, hmac.as_deref()) {
        (Some(kid), Some(key)) => Some(
            ExternalAccountBinding::new(kid.clone(), key)
                .map_err(|e| setting("acme.eab_hmac_key", e.to_string()))?,
        ),
        (None, None) => None,
        (Some(kid), None) => {
            return Err(setting(
                "acme.eab_hmac_key",
                format!(
                    "the external account binding {kid:?} has no HMAC key; set \
                     eab_hmac_key or {EAB_HMAC_KEY_ENV}"
                ),
            ));
        }
        (None, Some(_)) => {
            return Err(setting(
                "acme.eab_key_id",
                "an HMAC key is given without its key id (eab_key_id)".into(),
            ));
        }
    };
    let directory = file.directory.unwrap_or_else(|| "letsencrypt".into());
    let issuer = match directory.as_str() {
        "letsencrypt" => Issuer::LetsEncrypt,
        "letsencrypt-staging" => Issuer::LetsEncryptStaging,
        "zerossl" => Issuer::ZeroSsl(eab.ok_or_else(|| {
            setting(
                "acme.eab_key_id",
                "ZeroSSL needs an external account binding: set eab_key_id and \
                 eab_hmac_key from the ZeroSSL dashboard"
                    .into(),
            )
        })?),
        url if url.starts_with("https://") || url.starts_with("http://") => {
            if let Some(ca) = &file.ca_file
                && !ca.is_file()
            {
                return Err(setting(
                    "acme.ca_file",
                    format!("{} is not a readable file", ca.display()),
                ));
            }
            Issuer::Custom {
                directory_url: url.to_owned(),
                trusted_root: file.ca_file,
                external_account: eab,
            }
        }
        other => {
            return Err(setting(
                "acme.directory",
                format!(
                    "{other:?} is neither letsencrypt, letsencrypt-staging, zerossl nor \
                     an https:// directory URL"
                ),
            ));
        }
    };
    let contact = file
        .contact
        .map(|c| kokoa_core::Email::parse(&c))
        .transpose()
        .map_err(|e| setting("acme.contact", e.to_string()))?;
    let origin_ca = file
        .origin_ca
        .map(|o| resolve_origin_ca(o, env))
        .transpose()?;
    Ok(AcmeSettings {
        issuer,
        contact,
        renew_days_before: file.renew_days_before.unwrap_or(30),
        http01_port: file.http01_port.unwrap_or(80),
        origin_ca,
    })
}

impl FileConfig {
    fn load(path: Option<&Path>) -> Result<Self, Error> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: "cannot read configuration file",
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| Error::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

/// Where the state lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// SQLite file.
    Sqlite(PathBuf),
    /// PostgreSQL URL (may hold a password: `Debug` and `Display` show only the kind).
    Postgres(String),
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "SQLite {}", path.display()),
            Self::Postgres(_) => f.write_str("PostgreSQL"),
        }
    }
}

/// The merged settings of `serve` (and the subset `init` uses).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database.
    pub database: Database,
    /// Listen address.
    pub listen: SocketAddr,
    /// URL nodes reach the API at, without a trailing `/`.
    pub public_url: String,
    /// How the API is served over TLS; `None`: plain HTTP (`--insecure-http`).
    pub tls: Option<TlsSource>,
    /// The directory whose files are handed out at `/downloads/`, if any.
    pub downloads_dir: Option<PathBuf>,
    /// Pool of origin subnets.
    pub subnet_pool: SubnetPool,
    /// The per client limits every edge enforces.
    pub rate_limits: RateLimits,
    /// Sign-in through an OpenID provider, if configured (`[oidc]` in the file).
    pub oidc: Option<OidcConfig>,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// How certificates are ordered; `None` without an `[acme]` section.
    pub acme: Option<AcmeSettings>,
    /// The duties' settings: health checks, edge automation, providers, modules.
    pub runtime: RuntimeSettings,
    /// Where events are told to people.
    pub notifications: Option<NotifySettings>,
}

impl Settings {
    /// The file holding the master key.
    pub fn master_key_path(&self) -> PathBuf {
        master_key_path(&self.data_dir)
    }

    /// Merges flags and environment (already combined by clap) over the configuration
    /// file over the defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Self, Error> {
        let file = FileConfig::load(args.common.config.as_deref())?;
        let runtime = runtime_settings(&file)?;
        let notifications = file.notifications.clone();
        let data_dir = args
            .common
            .data_dir
            .clone()
            .or(file.data_dir)
            .ok_or(Error::NoDataDir)?;
        let database = database(
            &data_dir,
            args.common
                .database_url
                .clone()
                .or(file.database_url.clone()),
        )?;
        let listen = args.listen.or(file.listen).unwrap_or(DEFAULT_LISTEN);
        let oidc = match file.oidc {
            Some(mut oidc) => {
                if let Ok(secret) = std::env::var("KOKOA_OIDC_CLIENT_SECRET") {
                    oidc.client_secret = Some(zeroize::Zeroizing::new(secret));
                }
                oidc.check()?;
                Some(oidc)
            }
            None => None,
        };
        let acme = file
            .acme
            .map(|acme| resolve_acme(acme, &|var| std::env::var(var).ok()))
            .transpose()?;
        let insecure_http = args.insecure_http || file.insecure_http.unwrap_or(false);
        let public_url = match args.public_url.clone().or(file.public_url.clone()) {
            Some(url) => check_public_url(&url)?,
            None if insecure_http => format!("http://{listen}"),
            None => format!("https://{listen}"),
        };
        let acme_http_listen = (args.tls_acme || file.tls_acme.unwrap_or(false)).then(|| {
            args.acme_http_listen
                .or(file.acme_http_listen)
                .unwrap_or(DEFAULT_ACME_HTTP_LISTEN)
        });
        if acme_http_listen.is_some() && acme.is_none() {
            return Err(Error::Setting {
                setting: "tls_acme",
                message: "a public certificate is ordered through the [acme] section of the \
                          configuration file (--config), and it has none"
                    .into(),
            });
        }
        let tls = tls_source(
            insecure_http,
            acme_http_listen,
            args.tls_cert.clone().or(file.tls_cert.clone()),
            args.tls_key.clone().or(file.tls_key.clone()),
            if args.tls_names.is_empty() {
                file.tls_names.clone().unwrap_or_default()
            } else {
                args.tls_names.clone()
            },
            &public_url,
            listen,
        )?;
        let downloads_dir = args
            .downloads_dir
            .clone()
            .or(file.downloads_dir.clone())
            .or_else(|| {
                let packaged = Path::new(crate::downloads::PACKAGED_DIR);
                packaged.is_dir().then(|| packaged.to_owned())
            });
        Ok(Self {
            data_dir,
            database,
            listen,
            public_url,
            tls,
            downloads_dir,
            subnet_pool: args.subnet_pool.or(file.subnet_pool).unwrap_or_default(),
            acme,
            rate_limits: {
                let default = RateLimits::default();
                let connections = args
                    .edge_connections_per_address
                    .or(file.edge_connections_per_address)
                    .unwrap_or(default.connections_per_address);
                // nginx refuses `limit_conn` values of 65536 and more.
                if connections.get() > u32::from(u16::MAX) {
                    return Err(Error::Setting {
                        setting: "edge_connections_per_address",
                        message: format!("{connections} is too large; the most is 65535"),
                    });
                }
                RateLimits {
                    requests_per_second: args
                        .edge_requests_per_second
                        .or(file.edge_requests_per_second)
                        .unwrap_or(default.requests_per_second),
                    burst: args.edge_burst.or(file.edge_burst).unwrap_or(default.burst),
                    connections_per_address: connections,
                }
            },
            oidc,
            trusted_proxies: if args.trusted_proxies.is_empty() {
                file.trusted_proxies.unwrap_or_default()
            } else {
                args.trusted_proxies.clone()
            },
            runtime,
            notifications,
        })
    }
}

/// The duties' settings from the file (and the environment, for providers' secrets).
fn runtime_settings(file: &FileConfig) -> Result<RuntimeSettings, Error> {
    let setting = |setting: &'static str, message: String| Error::Setting { setting, message };
    let mut modules = BTreeMap::new();
    for (name, module) in &file.modules {
        let known = Module::parse(name).ok_or_else(|| {
            setting(
                "modules",
                format!(
                    "unknown module {name:?}; the modules are {}",
                    Module::ALL.map(Module::as_str).join(", ")
                ),
            )
        })?;
        if let Some(enabled) = module.enabled {
            modules.insert(known, enabled);
        }
    }
    let h = &file.health;
    let defaults = HealthSettings::default();
    let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
    let mut edge_rules = defaults.edge;
    edge_rules.heartbeat_timeout = secs(h.edge_heartbeat_timeout, edge_rules.heartbeat_timeout);
    edge_rules.error_rate_percent = h
        .error_rate_percent
        .unwrap_or(edge_rules.error_rate_percent);
    edge_rules.cpu.percent = h.cpu_percent.unwrap_or(edge_rules.cpu.percent);
    edge_rules.cpu.window = secs(h.cpu_window, edge_rules.cpu.window);
    let health = HealthSettings {
        edge_https_port: defaults.edge_https_port,
        timeout: secs(h.timeout, defaults.timeout),
        recovery_threshold: h.recovery_threshold.unwrap_or(defaults.recovery_threshold),
        workers: h.workers.unwrap_or(defaults.workers),
        end_to_end_interval: secs(h.end_to_end_interval, defaults.end_to_end_interval),
        certificate_interval: secs(h.certificate_interval, defaults.certificate_interval),
        certificate_min_days: h
            .certificate_min_days
            .unwrap_or(defaults.certificate_min_days),
        trusted_ca_file: h.trusted_ca_file.clone(),
        origin_heartbeat_timeout: secs(
            h.origin_heartbeat_timeout,
            defaults.origin_heartbeat_timeout,
        ),
        origin_application_interval: secs(
            h.origin_application_interval,
            defaults.origin_application_interval,
        ),
        origin_disk_percent: h
            .origin_disk_percent
            .unwrap_or(defaults.origin_disk_percent),
        edge: edge_rules,
        observer: kokoa_health::ObserverGuard {
            max_unhealthy_percent: h
                .observer_max_unhealthy_percent
                .unwrap_or(defaults.observer.max_unhealthy_percent),
            ..defaults.observer
        },
        damping: kokoa_health::Damping {
            max_changes: h.flap_max_changes.unwrap_or(defaults.damping.max_changes),
            window: secs(h.flap_window, defaults.damping.window),
        },
    };
    if health.timeout.is_zero()
        || health.workers == 0
        || health.recovery_threshold == 0
        || health.origin_application_interval.is_zero()
    {
        return Err(setting(
            "health",
            "timeout, workers, recovery_threshold and origin_application_interval must be at \
             least 1"
                .to_owned(),
        ));
    }
    if !(0.0..=100.0).contains(&health.observer.max_unhealthy_percent) {
        return Err(setting(
            "health",
            format!(
                "observer_max_unhealthy_percent {} is not a percentage (0-100; 100 turns the \
                 guard off)",
                health.observer.max_unhealthy_percent
            ),
        ));
    }
    if health.damping.max_changes == 0 || health.damping.window.is_zero() {
        return Err(setting(
            "health",
            "flap_max_changes and flap_window must be at least 1".to_owned(),
        ));
    }
    let days =
        |v: Option<u32>, d: Duration| v.map_or(d, |n| Duration::from_secs(u64::from(n) * 86_400));
    let retention_defaults = crate::runtime::RetentionSettings::default();
    let r = &file.retention;
    let retention = crate::runtime::RetentionSettings {
        events: days(r.events_days, retention_defaults.events),
        health_history: days(r.health_history_days, retention_defaults.health_history),
        intents: days(r.intents_days, retention_defaults.intents),
    };
    if [
        retention.events,
        retention.health_history,
        retention.intents,
    ]
    .iter()
    .any(Duration::is_zero)
    {
        return Err(setting(
            "retention",
            "events_days, health_history_days and intents_days must be at least 1".to_owned(),
        ));
    }
    let management = file.edge_node_management.clone().unwrap_or_default();
    let mut provisioners = BTreeMap::new();
    for p in &file.provisioners {
        let name = p.name.clone().unwrap_or_else(|| p.kind.clone());
        if name == "manual" || provisioners.contains_key(&name) {
            return Err(setting(
                "provisioners",
                format!("provider name {name:?} is reserved or used twice"),
            ));
        }
        provisioners.insert(name, provisioner(p)?);
    }
    // Providers the automation may place edges at must be configured.
    let mut management = management;
    if !provisioners.is_empty() {
        let strategy = &mut management.replacement_strategy;
        strategy
            .preferred_providers
            .retain(|p| provisioners.contains_key(p.as_str()));
    }
    management
        .validate()
        .map_err(|e| setting("edge_node_management", e.to_string()))?;
    let agent = match &file.edge_agent {
        None => None,
        Some(AgentFile {
            url: Some(url),
            sha256: Some(sha256),
            package: None,
        }) => Some(AgentSource::Download {
            url: url.clone(),
            sha256: sha256.clone(),
        }),
        Some(AgentFile {
            url: None,
            sha256: None,
            package: Some(name),
        }) => Some(AgentSource::Package { name: name.clone() }),
        Some(_) => {
            return Err(setting(
                "edge_agent",
                "give either `url` and `sha256`, or `package`".to_owned(),
            ));
        }
    };
    let provisioning_defaults = EdgeSettings::default();
    let edges = EdgeSettings {
        management,
        provisioners,
        agent,
        provision_timeout: secs(
            file.edge_provisioning.timeout,
            provisioning_defaults.provision_timeout,
        ),
        enrollment_ttl: secs(
            file.edge_provisioning.enrollment_ttl,
            provisioning_defaults.enrollment_ttl,
        ),
    };
    let key_rotation = match file.wireguard.rotate_keys_days {
        Some(0) => None,
        days => Some(Duration::from_secs(
            u64::from(days.unwrap_or(DEFAULT_ROTATE_KEYS_DAYS)) * 86_400,
        )),
    };
    Ok(RuntimeSettings {
        health,
        retention,
        edges,
        modules,
        key_rotation,
    })
}

/// Days after which a WireGuard key is rotated when `[wireguard] rotate_keys_days` is not
/// set.
const DEFAULT_ROTATE_KEYS_DAYS: u32 = 90;

/// A provider's client from its `[[provisioners]]` entry.
fn provisioner(p: &ProvisionerFile) -> Result<ProvisionerEntry, Error> {
    use kokoa_provision::Secret;
    let fail = |message: String| Error::Setting {
        setting: "provisioners",
        message,
    };
    let from_env = |var: &str| {
        std::env::var(var).map_err(|_| {
            fail(format!(
                "provider {:?}: the environment variable {var} is not set",
                p.kind
            ))
        })
    };
    let mut config = kokoa_provision::ProvisionerConfig::new(&p.kind);
    config.token = match (&p.token, &p.token_env) {
        (Some(token), None) => Some(Secret::new(token.clone())),
        (None, Some(var)) => Some(Secret::new(from_env(var)?)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(fail(format!(
                "provider {:?}: give the API token with `token_env` or `token`, not both",
                p.kind
            )));
        }
    };
    config.base_url.clone_from(&p.base_url);
    #[cfg(feature = "vps-aws")]
    if p.kind == "aws" {
        let id = from_env(
            p.access_key_id_env
                .as_deref()
                .unwrap_or("AWS_ACCESS_KEY_ID"),
        )?;
        let key = from_env(
            p.secret_access_key_env
                .as_deref()
                .unwrap_or("AWS_SECRET_ACCESS_KEY"),
        )?;
        let mut keys = kokoa_core::sigv4::Credentials::new(id, key);
        if let Ok(session) = std::env::var("AWS_SESSION_TOKEN") {
            keys = keys.with_session_token(session);
        }
        config.aws = Some(keys);
    }
    config.security_groups.clone_from(&p.security_groups);
    #[cfg(feature = "lab")]
    config.lab.clone_from(&p.lab);
    let provisioner = config
        .build()
        .map_err(|e| fail(format!("provider {:?}: {e}", p.kind)))?;
    Ok(ProvisionerEntry {
        provisioner,
        image: p.image.clone(),
        size: p.size.clone(),
        ssh_key_id: p.ssh_key_id.clone(),
    })
}

/// The data directory and database `init` uses.
pub fn resolve_init(args: &CommonArgs) -> Result<(PathBuf, Database), Error> {
    let file = FileConfig::load(args.config.as_deref())?;
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .ok_or(Error::NoDataDir)?;
    let database = database(&data_dir, args.database_url.clone().or(file.database_url))?;
    Ok((data_dir, database))
}

/// `DIR/master.key`.
pub fn master_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("master.key")
}

fn database(data_dir: &Path, url: Option<String>) -> Result<Database, Error> {
    match url {
        None => Ok(Database::Sqlite(data_dir.join("kokoa.db"))),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(Database::Postgres(url))
        }
        Some(url) => Err(Error::Setting {
            setting: "database_url",
            message: format!(
                "expected a postgres:// or postgresql:// URL, got one starting with {:?}; \
                 leave it unset to use SQLite in the data directory",
                url.split(':').next().unwrap_or_default()
            ),
        }),
    }
}

/// Accepts `http://` and `https://` URLs with a host, and drops a trailing `/`.
/// How to serve TLS, from the flags and file: `None` for plain HTTP.
fn tls_source(
    insecure_http: bool,
    acme_http_listen: Option<SocketAddr>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    names: Vec<String>,
    public_url: &str,
    listen: SocketAddr,
) -> Result<Option<TlsSource>, Error> {
    let setting = |setting, message: String| Error::Setting { setting, message };
    if insecure_http {
        if cert.is_some() || key.is_some() {
            return Err(setting(
                "insecure_http",
                "plain HTTP and a TLS certificate (tls_cert, tls_key) exclude each other; \
                 choose one"
                    .into(),
            ));
        }
        if acme_http_listen.is_some() {
            return Err(setting(
                "insecure_http",
                "plain HTTP and a public certificate (tls_acme) exclude each other; \
                 choose one"
                    .into(),
            ));
        }
        return Ok(None);
    }
    if public_url.starts_with("http://") {
        return Err(setting(
            "public_url",
            format!(
                "{public_url:?} is plain HTTP but this server serves HTTPS; use https://, \
                 or serve plain HTTP with --insecure-http"
            ),
        ));
    }
    for name in &names {
        let ok = name.parse::<std::net::IpAddr>().is_ok()
            || (!name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.*".contains(&b)));
        if !ok {
            return Err(setting(
                "tls_names",
                format!("{name:?} is neither a DNS name nor an IP address"),
            ));
        }
    }
    let own_ca = crate::tls::serving_names(public_url, listen, &names);
    Ok(Some(match (cert, key, acme_http_listen) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(setting(
                "tls_acme",
                "a public certificate (tls_acme) and one from files (tls_cert, tls_key) \
                 exclude each other; choose one"
                    .into(),
            ));
        }
        (None, None, Some(http_listen)) => TlsSource::Acme {
            host: acme_host(public_url)?,
            http_listen,
            fallback: own_ca,
        },
        (Some(cert), Some(key), None) => TlsSource::Files { cert, key },
        (None, None, None) => TlsSource::OwnCa { names: own_ca },
        (Some(_), None, None) | (None, Some(_), None) => {
            return Err(setting(
                "tls_cert",
                "give both a certificate (tls_cert) and its key (tls_key), or neither".into(),
            ));
        }
    }))
}

/// The host a public certificate is ordered for: the public URL's, a DNS name.
fn acme_host(public_url: &str) -> Result<kokoa_core::Hostname, Error> {
    let host = reqwest::Url::parse(public_url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_owned))
        .unwrap_or_default();
    let refused = |why: &str| Error::Setting {
        setting: "tls_acme",
        message: format!(
            "the public URL's host {host:?} {why}; a public certificate needs the DNS name \
             clients reach this server by, in --public-url"
        ),
    };
    if host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        return Err(refused("is an IP address"));
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return Err(refused("is loopback"));
    }
    kokoa_core::Hostname::parse(&host)
        .ok()
        .filter(|h| !h.is_wildcard())
        .ok_or_else(|| refused("is not a DNS name a CA issues for"))
}

fn check_public_url(url: &str) -> Result<String, Error> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        !r.is_empty()
            && !r.starts_with('/')
            && r.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\'')
    });
    if ok {
        Ok(url.trim_end_matches('/').to_owned())
    } else {
        Err(Error::Setting {
            setting: "public_url",
            message: format!(
                "{url:?} is not an http:// or https:// URL with a host, like \
                 \"https://control.example.com\""
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn serve_args(argv: &[&str]) -> ServeArgs {
        let mut full = vec!["kokoa-control", "serve"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Serve(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(
            file,
            "data_dir = \"/from/file\"\nlisten = \"127.0.0.1:9000\"\n\
             subnet_pool = \"100.64.0.0/10\"\npublic_url = \"https://cp.example.com/\"\n\
             edge_burst = 50\n"
        )
        .unwrap();
        let path = file.path().to_str().unwrap();
        let s = Settings::resolve(&serve_args(&["--config", path])).unwrap();
        assert_eq!(s.rate_limits.burst, 50);
        assert_eq!(s.rate_limits.requests_per_second.get(), 10);
        let flagged = serve_args(&["--config", path, "--edge-requests-per-second", "500"]);
        let limits = Settings::resolve(&flagged).unwrap().rate_limits;
        assert_eq!((limits.requests_per_second.get(), limits.burst), (500, 50));
        let too_many = serve_args(&["--config", path, "--edge-connections-per-address", "65536"]);
        let err = Settings::resolve(&too_many).unwrap_err().to_string();
        assert!(err.contains("65536") && err.contains("65535"), "{err}");
        assert_eq!(s.data_dir, PathBuf::from("/from/file"));
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.public_url, "https://cp.example.com");
        assert_eq!(s.subnet_pool.pool().to_string(), "100.64.0.0/10");
        assert_eq!(s.database, Database::Sqlite("/from/file/kokoa.db".into()));

        let s = Settings::resolve(&serve_args(&[
            "--config",
            path,
            "--data-dir",
            "/from/flag",
            "--listen",
            "127.0.0.1:9001",
            "--database",
            "postgres://u:secret@db/kokoa",
        ]))
        .unwrap();
        assert_eq!(s.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(s.listen.to_string(), "127.0.0.1:9001");
        assert_eq!(
            format!("{:?}", s.database),
            "PostgreSQL",
            "no password in logs"
        );
    }

    fn acme(text: &str, env: Option<&str>) -> Result<AcmeSettings, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let env = |var: &str| env.filter(|_| var == EAB_HMAC_KEY_ENV).map(str::to_owned);
        resolve_acme(file.acme.unwrap_or_default(), &env).map_err(|e| e.to_string())
    }

    fn origin_ca(text: &str) -> Result<OriginCaSettings, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let env = |var: &str| (var == "CF_TOKEN").then(|| "cf-secret-token".to_owned());
        let settings =
            resolve_acme(file.acme.unwrap_or_default(), &env).map_err(|e| e.to_string())?;
        Ok(settings.origin_ca.expect("an origin_ca section"))
    }

    #[test]
    fn the_origin_ca_takes_its_token_from_the_environment_and_checks_its_values() {
        let base = "[acme.origin_ca]\nzones = [\"hoge.com\"]\ntoken_env = \"CF_TOKEN\"\n";
        let s = origin_ca(base).unwrap();
        assert_eq!(s.validity_days, 5475);
        assert_eq!(s.key_type, kokoa_acme::cloudflare::OriginKeyType::Ecc);
        assert_eq!(s.base_url, kokoa_acme::cloudflare::API_BASE);
        assert!(!format!("{s:?}").contains("cf-secret-token"), "{s:?}");
        let host = |h: &str| kokoa_core::Hostname::parse(h).unwrap();
        assert!(s.covers(&host("hoge.com")) && s.covers(&host("app.hoge.com")));
        assert!(s.covers(&host("*.hoge.com")));
        assert!(!s.covers(&host("xhoge.com")) && !s.covers(&host("app.fuga.com")));

        let s = origin_ca(&format!(
            "{base}key_type = \"rsa\"\nvalidity_days = 90\nbase_url = \"http://127.0.0.1:9/\"\n"
        ))
        .unwrap();
        assert_eq!(s.key_type, kokoa_acme::cloudflare::OriginKeyType::Rsa);
        assert_eq!(
            (s.validity_days, s.base_url.as_str()),
            (90, "http://127.0.0.1:9")
        );

        let err = origin_ca(&format!("{base}validity_days = 100\n")).unwrap_err();
        assert!(
            err.contains("validity_days") && err.contains("100") && err.contains("5475"),
            "{err}"
        );
        let err = origin_ca(&format!("{base}validity_days = -7\n")).unwrap_err();
        assert!(err.contains("-7"), "{err}");
        let err = origin_ca(&format!("{base}key_type = \"ed25519\"\n")).unwrap_err();
        assert!(err.contains("\"ed25519\""), "{err}");
        let err =
            origin_ca("[acme.origin_ca]\nzones = [\"hoge.com\"]\ntoken_env = \"CF_MISSING\"\n")
                .unwrap_err();
        assert!(
            err.contains("CF_MISSING") && err.contains("acme.origin_ca.token_env"),
            "{err}"
        );
        let err = origin_ca(
            "[acme.origin_ca]\nzones = [\"hoge.com\"]\nservice_key_env = \"CF_KEY_MISSING\"\n",
        )
        .unwrap_err();
        assert!(err.contains("CF_KEY_MISSING"), "{err}");
        let err = origin_ca("[acme.origin_ca]\nzones = [\"hoge.com\"]\n").unwrap_err();
        assert!(err.contains("token_env"), "{err}");
        let err = origin_ca("[acme.origin_ca]\ntoken_env = \"CF_TOKEN\"\n").unwrap_err();
        assert!(err.contains("zones"), "{err}");
        let err = origin_ca(&format!("{base}token = \"inline\"\n")).unwrap_err();
        assert!(err.contains("token"), "{err}");
        let err =
            origin_ca("[acme.origin_ca]\nzones = [\"Not A Zone\"]\ntoken_env = \"CF_TOKEN\"\n")
                .unwrap_err();
        assert!(err.contains("\"Not A Zone\""), "{err}");
    }

    #[test]
    fn the_acme_section_names_its_issuer_and_keeps_the_hmac_key_out_of_sight() {
        let s = acme("[acme]\ncontact = \"Ops@Example.com\"\n", None).unwrap();
        assert_eq!(s.provider(), "letsencrypt");
        assert_eq!(s.contact.unwrap().as_str(), "ops@example.com");
        assert_eq!((s.renew_days_before, s.http01_port), (30, 80));
        let s = acme(
            "[acme]\ndirectory = \"letsencrypt-staging\"\nrenew_days_before = 10\n",
            None,
        )
        .unwrap();
        assert!(s.issuer.directory_url().contains("staging"));
        assert_eq!(s.renew_days_before, 10);

        let zerossl = "[acme]\ndirectory = \"zerossl\"\neab_key_id = \"kid-9\"\n";
        let err = acme(zerossl, None).unwrap_err();
        assert!(
            err.contains("kid-9") && err.contains(EAB_HMAC_KEY_ENV),
            "{err}"
        );
        let s = acme(zerossl, Some("c2VjcmV0LWhtYWM")).unwrap();
        assert_eq!(s.provider(), "zerossl");
        assert!(!format!("{s:?}").contains("c2VjcmV0"), "{s:?}");
        let err = acme("[acme]\ndirectory = \"zerossl\"\n", None).unwrap_err();
        assert!(err.contains("external account binding"), "{err}");

        let url =
            "[acme]\ndirectory = \"https://127.0.0.1:14000/dir\"\nca_file = \"/no/such.pem\"\n";
        let err = acme(url, None).unwrap_err();
        assert!(err.contains("/no/such.pem"), "{err}");
        let err = acme("[acme]\ndirectory = \"lets-encrypt\"\n", None).unwrap_err();
        assert!(err.contains("\"lets-encrypt\""), "{err}");
        let err = acme("[acme]\nrenew_day_before = 3\n", None).unwrap_err();
        assert!(err.contains("renew_day_before"), "{err}");
    }

    #[test]
    fn the_documented_file_is_valid() {
        let start = EXAMPLES.find("Configuration file").unwrap();
        let end = EXAMPLES.find("DNS zones are added").unwrap();
        let toml: String = EXAMPLES[start..end]
            .lines()
            .skip(1)
            .map(|l| l.strip_prefix("  ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let file: FileConfig = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(file.provisioners.len(), 1);
        assert_eq!(file.notifications.unwrap().sinks.len(), 1);
        let origin_ca = file.acme.unwrap().origin_ca.unwrap();
        assert_eq!(origin_ca.token_env.as_deref(), Some("CF_ORIGIN_CA_TOKEN"));
        let management = file.edge_node_management.unwrap();
        assert_eq!(management, EdgeNodeManagement::default());
    }

    #[test]
    fn a_provisioner_entry_names_what_it_lacks() {
        let entry = |toml_text: &str| {
            let file: FileConfig = toml::from_str(toml_text).unwrap();
            provisioner(&file.provisioners[0]).map(|e| e.provisioner.name().to_owned())
        };
        let base = "image = \"debian-12\"\nsize = \"s\"\n";
        let ok = entry(&format!(
            "[[provisioners]]\nkind = \"hetzner\"\ntoken = \"t\"\n{base}"
        ));
        assert_eq!(ok.unwrap(), "hetzner");
        let err = entry(&format!("[[provisioners]]\nkind = \"vultr\"\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"vultr\"") && err.contains("needs an API token"),
            "{err}"
        );
        let err = entry(&format!("[[provisioners]]\nkind = \"openstack\"\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"openstack\"") && err.contains("hetzner"),
            "{err}"
        );
        let err = entry(&format!("[[provisioners]]\nkind = \"lab\"\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lab") && err.contains("settings"), "{err}");
    }

    #[test]
    fn defaults_and_clear_errors() {
        let s = Settings::resolve(&serve_args(&["--data-dir", "/d"])).unwrap();
        assert_eq!(s.listen, DEFAULT_LISTEN);
        assert_eq!(s.public_url, "https://127.0.0.1:8080");
        assert_eq!(
            s.tls,
            Some(TlsSource::OwnCa {
                names: vec!["127.0.0.1".into(), "::1".into(), "localhost".into()]
            })
        );
        assert_eq!(s.subnet_pool.pool().to_string(), "10.0.0.0/16");
        let plain =
            Settings::resolve(&serve_args(&["--data-dir", "/d", "--insecure-http"])).unwrap();
        assert_eq!(plain.public_url, "http://127.0.0.1:8080");
        assert_eq!(plain.tls, None);

        let err = Settings::resolve(&serve_args(&[])).unwrap_err().to_string();
        assert!(
            err.contains("--data-dir") && err.contains("KOKOA_DATA_DIR"),
            "{err}"
        );
        let err = Settings::resolve(&serve_args(&[
            "--data-dir",
            "/d",
            "--database",
            "mysql://x",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"mysql\""), "{err}");
        let err = Settings::resolve(&serve_args(&[
            "--data-dir",
            "/d",
            "--public-url",
            "ftp://x",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"ftp://x\""), "{err}");

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "data_dri = \"/typo\"").unwrap();
        let path = file.path().to_str().unwrap();
        let err = Settings::resolve(&serve_args(&["--config", path]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("data_dri") && err.contains(path), "{err}");
    }
    #[test]
    fn a_public_certificate_needs_acme_a_dns_name_and_no_other_tls() {
        let resolve = |text: &str, flags: &[&str]| {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            write!(file, "data_dir = \"/d\"\n{text}").unwrap();
            let mut argv = vec!["--config", file.path().to_str().unwrap()];
            argv.extend_from_slice(flags);
            Settings::resolve(&serve_args(&argv)).map_err(|e| e.to_string())
        };
        let acme = "[acme]\ndirectory = \"letsencrypt-staging\"\n";
        let url = "public_url = \"https://cp.example.com\"\n";

        let s = resolve(&format!("{url}{acme}"), &["--tls-acme"]).unwrap();
        let Some(TlsSource::Acme {
            host,
            http_listen,
            fallback,
        }) = s.tls
        else {
            panic!("{:?}", s.tls)
        };
        assert_eq!(host.as_str(), "cp.example.com");
        assert_eq!(http_listen, DEFAULT_ACME_HTTP_LISTEN);
        assert!(
            fallback.contains(&"cp.example.com".to_owned()),
            "{fallback:?}"
        );
        let s = resolve(
            &format!("{url}tls_acme = true\nacme_http_listen = \"127.0.0.1:8081\"\n{acme}"),
            &[],
        )
        .unwrap();
        assert!(
            matches!(s.tls, Some(TlsSource::Acme { http_listen, .. }) if http_listen.port() == 8081)
        );

        let err = resolve(url, &["--tls-acme"]).unwrap_err();
        assert!(err.contains("tls_acme") && err.contains("[acme]"), "{err}");
        for (public_url, why) in [
            ("https://192.0.2.7:8443", "IP address"),
            ("https://[2001:db8::1]", "IP address"),
            ("https://localhost:8443", "loopback"),
        ] {
            let text = format!("public_url = \"{public_url}\"\n{acme}");
            let err = resolve(&text, &["--tls-acme"]).unwrap_err();
            assert!(
                err.contains(why) && err.contains("--public-url"),
                "{public_url}: {err}"
            );
        }
        let err = resolve(
            &format!("{url}insecure_http = true\n{acme}"),
            &["--tls-acme"],
        )
        .unwrap_err();
        assert!(
            err.contains("tls_acme") && err.contains("insecure_http"),
            "{err}"
        );
        let err = resolve(
            &format!("{url}tls_cert = \"/c.pem\"\ntls_key = \"/c.key\"\n{acme}"),
            &["--tls-acme"],
        )
        .unwrap_err();
        assert!(
            err.contains("tls_acme") && err.contains("tls_cert"),
            "{err}"
        );
    }
}
