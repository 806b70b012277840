//! `kokoa`: the admin command line of Kokoa Proxy. It talks to the control plane's REST API
//! (`/api/v1`) and prints aligned tables, or the API's own JSON with `--json`.
//!
//! The control plane URL, API token and CA pin come from `--url`/`--token`/`--ca-pin`, else
//! `KOKOA_URL`/`KOKOA_TOKEN`/`KOKOA_CA_PIN`, else the configuration file
//! (`~/.config/kokoa/config.toml` with `url`, `token` and `ca_pin`; it should be mode 0600). API errors are printed as the API states them, e.g.
//! `error: conflict: hostname "app.hoge.com" already exists`; the exit code is 1 for those
//! and 2 for usage errors.

use std::{
    fs, io::Write as _, os::unix::fs::OpenOptionsExt as _, path::PathBuf, process::ExitCode,
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

mod api;
mod error;
mod settings;
mod table;

use api::Api;
use error::Error;
use table::Column;

const AFTER_HELP: &str = "\
Examples:
  export KOKOA_URL=https://control.example.net KOKOA_TOKEN=kk_api_... KOKOA_CA_PIN=sha256:...
  kokoa origin create home-server --domain app.example.com --service web:8001 --service api:8002:http:/health
  kokoa origin bundle org_3f2a... -o origin-config.tar.gz
  kokoa route add app.hoge.com --origin org_3f2a... --port 8001
  kokoa route list --json
  kokoa edge add --provider manual --region sgp1 --public-ip 203.0.113.10
  kokoa enrollment create --kind origin --node org_3f2a...
  kokoa dns add-zone hoge.com --provider cloudflare --credential api_token=env:CLOUDFLARE_API_TOKEN
  kokoa dns plan                 # what the DNS manager would change (a dry run)
  kokoa dns instructions         # records to set by hand outside the managed zones
  kokoa certificate list
  kokoa certificate upload --cert fullchain.pem --key privkey.pem
  kokoa events --type 'edge.*' --severity warning
  kokoa module off health_checker

The URL and token can also live in ~/.config/kokoa/config.toml (mode 0600):
  url = \"https://control.example.net\"
  token = \"kk_api_...\"

Exit codes: 0 success, 1 the API refused or could not be reached, 2 usage error.";

#[derive(Debug, Parser)]
#[command(name = "kokoa", version, about = "Manage Kokoa Proxy through its control plane's API", after_help = AFTER_HELP)]
struct Cli {
    /// The control plane's base URL.
    #[arg(long, global = true, env = "KOKOA_URL", value_name = "URL")]
    url: Option<String>,
    /// The API token (prefer the environment or the configuration file: a command line is
    /// visible to every user in `ps`).
    #[arg(long, global = true, env = "KOKOA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The SHA-256 pin of the control plane's CA (`sha256:…`, as `kokoa-control init`
    /// prints): only a server with a certificate from that CA is trusted.
    #[arg(long, global = true, env = "KOKOA_CA_PIN", value_name = "PIN")]
    ca_pin: Option<String>,
    /// The configuration file [default: ~/.config/kokoa/config.toml].
    #[arg(long, global = true, env = "KOKOA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Origins: the private networks that run the services.
    #[command(subcommand)]
    Origin(OriginCommand),
    /// Routes: public host names and the origin port they lead to.
    #[command(subcommand)]
    Route(RouteCommand),
    /// Edge nodes: the Internet-facing servers.
    #[command(subcommand)]
    Edge(EdgeCommand),
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Enrollment tokens, with which a node obtains its credential.
    #[command(subcommand)]
    Enrollment(EnrollmentCommand),
    /// DNS: the zones the control plane keeps the edges' records in.
    #[command(subcommand)]
    Dns(DnsCommand),
    /// TLS certificates: the ones ordered for routes, and uploaded ones.
    #[command(subcommand)]
    Certificate(CertificateCommand),
    /// The event log: what the control plane did and why.
    Events(EventsArgs),
    /// Modules: switch the DNS manager, provisioner, SSL manager, health checker on or off.
    #[command(subcommand)]
    Module(ModuleCommand),
}

#[derive(Debug, Subcommand)]
enum CertificateCommand {
    /// List every certificate: names, where it comes from, state, days left, next renewal
    /// and the last error.
    List,
    /// Upload a certificate for the names it holds (it then serves those names instead of
    /// an ordered one).
    Upload {
        /// The certificate chain, PEM (leaf first).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Its private key, PEM (read from the file, never from the command line).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Order an ACME (or Origin CA) certificate again now.
    Renew {
        /// The certificate's id (see `kokoa certificate list`).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum DnsCommand {
    /// List the managed zones.
    Zones,
    /// Add a zone: the provider is asked for it at once, so wrong credentials are refused.
    AddZone {
        /// The zone apex, e.g. hoge.com.
        name: String,
        /// cloudflare, route53, google, powerdns, rfc2136, digitalocean or manual.
        #[arg(long)]
        provider: String,
        /// TTL of the records, in seconds [default: 30].
        #[arg(long)]
        ttl: Option<u32>,
        /// A setting that is not secret, KEY=VALUE (e.g. url=http://127.0.0.1:8081).
        #[arg(long = "setting", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        /// A credential, KEY=env:VARIABLE to read it from the environment (a command line
        /// is visible in `ps`), or KEY=VALUE.
        #[arg(long = "credential", value_name = "KEY=env:VAR")]
        credentials: Vec<String>,
    },
    /// Remove a zone (its records are deleted at the provider first).
    RemoveZone {
        /// The zone's id.
        id: String,
    },
    /// The records the DNS manager made.
    Records,
    /// What a reconciliation would change now (nothing is changed).
    Plan,
    /// Reconcile every zone now.
    Apply,
    /// The records to set by hand for host names outside the managed zones.
    Instructions,
}

#[derive(Debug, Args)]
struct EventsArgs {
    /// Only this type, or types starting with the text before a trailing `*` (edge.*).
    #[arg(long = "type", value_name = "TYPE")]
    kind: Option<String>,
    /// Only events about this subject (an id, a host name).
    #[arg(long)]
    subject: Option<String>,
    /// Only events at least this severe: info, warning, critical.
    #[arg(long)]
    severity: Option<String>,
    /// At most this many [default: 50].
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

#[derive(Debug, Subcommand)]
enum ModuleCommand {
    /// Every module with its state.
    List,
    /// Switch a module on (for every control plane on the database, without a restart).
    On {
        /// dns_manager, edge_provisioner, ssl_manager, health_checker.
        name: String,
    },
    /// Switch a module off.
    Off {
        /// dns_manager, edge_provisioner, ssl_manager, health_checker.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum OriginCommand {
    /// Create an origin: its key pair and subnet are made by the control plane.
    Create {
        /// Unique name: a-z, 0-9, -.
        name: String,
        /// The domain it mainly serves.
        #[arg(long)]
        domain: Option<String>,
        /// A service: its name, port, protocol (http, https or tcp) and health check path,
        /// e.g. web:8001:http:/health.
        #[arg(long = "service", value_name = "NAME:PORT[:PROTOCOL[:PATH]]")]
        services: Vec<String>,
    },
    /// List origins.
    List,
    /// Delete an origin.
    Delete {
        /// The origin's id.
        id: String,
        /// Also delete the routes that use it.
        #[arg(long)]
        force: bool,
    },
    /// Rotate an origin's WireGuard key without cutting traffic: the origin makes a new key,
    /// its edges learn it, the origin switches to it, the old key is removed.
    ///
    /// Example: kokoa origin rotate-keys org_2x7…
    RotateKeys(RotateArgs),
    /// Download an origin's installation bundle (origin-config.tar.gz).
    Bundle {
        /// The origin's id.
        id: String,
        /// Where to write it (mode 0600: it holds a single-use enrollment token).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Publish a host name.
    Add {
        /// The public host name, e.g. app.hoge.com.
        hostname: String,
        /// The origin serving it.
        #[arg(long, value_name = "ORIGIN_ID")]
        origin: String,
        /// The port of the service on the origin.
        #[arg(long)]
        port: i64,
        /// How its certificate is obtained: http-01 (the default), dns-01, manual or none.
        #[arg(long)]
        certificate: Option<String>,
    },
    /// List routes.
    List,
    /// Remove a route, by id or host name.
    Rm {
        /// The route's id or its host name.
        route: String,
    },
}

#[derive(Debug, Subcommand)]
enum EdgeCommand {
    /// Register an edge node (provider `manual` for a server you already have).
    Add(EdgeAdd),
    /// List edge nodes.
    List {
        /// Only the edges with a tunnel to this origin.
        #[arg(long, value_name = "ORIGIN_ID")]
        origin: Option<String>,
    },
    /// Delete an edge node.
    Rm {
        /// The edge node's id.
        id: String,
    },
    /// Rotate an edge's WireGuard key without cutting traffic: the edge makes a new key,
    /// every origin it reaches learns it, the edge switches to it, the old key is removed.
    ///
    /// Example: kokoa edge rotate-keys edge_7f3… --timeout 120
    RotateKeys(RotateArgs),
}

#[derive(Debug, Args)]
struct RotateArgs {
    /// The node's id.
    id: String,
    /// Return once the rotation started instead of waiting until it is done.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the rotation to finish.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    timeout: u64,
}

#[derive(Debug, Args)]
struct EdgeAdd {
    /// VPS provider (digitalocean, vultr, hetzner, ...) or manual.
    #[arg(long)]
    provider: String,
    /// Provider region, e.g. sgp1.
    #[arg(long)]
    region: String,
    /// Serve only this origin (default: every origin).
    #[arg(long, value_name = "ORIGIN_ID")]
    origin: Option<String>,
    /// Name (default edge-REGION-NN).
    #[arg(long)]
    name: Option<String>,
    /// Public address, for a manual edge.
    #[arg(long)]
    public_ip: Option<String>,
    /// Provider size slug.
    #[arg(long)]
    size: Option<String>,
    /// SSH key (or its id at the provider).
    #[arg(long)]
    ssh_key: Option<String>,
    /// Print the enroll command of a manual edge even though the control plane's public
    /// URL is a loopback address (the edge runs on the control plane's machine).
    #[arg(long)]
    allow_loopback_url: bool,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create an API token; it is shown once.
    Create {
        /// A name to recognise it by.
        name: String,
        /// admin or viewer (read only).
        #[arg(long, default_value = "admin")]
        role: String,
    },
    /// List API tokens.
    List,
    /// Revoke an API token.
    Revoke {
        /// The token's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum EnrollmentCommand {
    /// Issue an enrollment token for an edge or an origin; it is shown once.
    Create {
        /// edge or origin.
        #[arg(long)]
        kind: String,
        /// The node's id.
        #[arg(long, value_name = "ID")]
        node: String,
        /// Lifetime in seconds (default: one day).
        #[arg(long, value_name = "SECONDS")]
        expires_in: Option<i64>,
        /// How many times it may be used (default 1).
        #[arg(long)]
        uses: Option<i64>,
    },
}

const ORIGIN_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("DOMAIN", "domain"),
    ("STATUS", "status"),
    ("WIREGUARD_IP", "wireguard_ip"),
    ("EDGES", "edge_nodes_count"),
    ("LAST_HEARTBEAT", "last_heartbeat"),
];
const ROUTE_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("HOSTNAME", "hostname"),
    ("ORIGIN", "origin_id"),
    ("PORT", "target_port"),
    ("CERTIFICATE", "certificate"),
    ("TLS", "tls"),
];
const CERTIFICATE_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAMES", "names"),
    ("SOURCE", "source"),
    ("METHOD", "method"),
    ("STATUS", "status"),
    ("DAYS_LEFT", "days_left"),
    ("NEXT_RENEWAL", "next_renewal"),
    ("LAST_ERROR", "last_error"),
];
const ZONE_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("PROVIDER", "provider"),
    ("TTL", "ttl"),
    ("PROVIDER_ZONE", "provider_zone_id"),
];
const RECORD_COLUMNS: &[Column] = &[
    ("HOSTNAME", "hostname"),
    ("TYPE", "type"),
    ("VALUE", "value"),
    ("ZONE", "zone"),
    ("EDGE", "edge_node_id"),
];
const EVENT_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("TIME", "created_at"),
    ("SEVERITY", "severity"),
    ("TYPE", "type"),
    ("MESSAGE", "message"),
];
const MODULE_COLUMNS: &[Column] = &[
    ("MODULE", "name"),
    ("ENABLED", "enabled"),
    ("PROVIDER", "provider"),
    ("CONNECTED", "connected"),
    ("DETAIL", "detail"),
];
const EDGE_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("PROVIDER", "provider"),
    ("REGION", "region"),
    ("PUBLIC_IP", "public_ip"),
    ("STATUS", "status"),
    ("HEALTH", "health"),
    ("LAST_HEARTBEAT", "last_heartbeat"),
    ("AGENT_ERROR", "agent_error"),
];
const TOKEN_COLUMNS: &[Column] = &[
    ("ID", "id"),
    ("NAME", "name"),
    ("ROLE", "role"),
    ("CREATED", "created_at"),
];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(&Error::Usage(format!(
                "cannot start the async runtime: {e}"
            )));
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(text) => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`kokoa route list | head -1`) is not an error of ours.
            let _ = stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {e}");
    e.exit_code()
}

/// Runs the command; what to print.
async fn execute(cli: Cli) -> Result<String, Error> {
    let explicit = cli.config.is_some();
    let path = cli.config.or_else(settings::default_path);
    let api = Api::new(settings::resolve(
        cli.url, cli.token, cli.ca_pin, path, explicit,
    )?)?;
    let json = cli.json;
    // With --json the API's answer as it came; else the table or message `human` makes.
    let show = |value: Value, human: &dyn Fn(&Value) -> String| -> String {
        if json {
            if value.is_null() {
                String::new()
            } else {
                format!("{value:#}\n")
            }
        } else {
            human(&value)
        }
    };
    match cli.command {
        Command::Origin(command) => match command {
            OriginCommand::Create {
                name,
                domain,
                services,
            } => {
                let services = services
                    .iter()
                    .map(|s| service_spec(s))
                    .collect::<Result<Vec<_>, _>>()?;
                let body = json!({"name": name, "domain": domain, "services": services});
                let created = api
                    .call(Method::POST, "/api/v1/origins", Some(body))
                    .await?;
                Ok(show(created, &|v| {
                    format!(
                        "{}\nDownload its bundle with: kokoa origin bundle {} -o origin-config.tar.gz\n",
                        table::render(std::slice::from_ref(v), ORIGIN_COLUMNS),
                        text(&v["id"])
                    )
                }))
            }
            OriginCommand::List => {
                let list = api.call(Method::GET, "/api/v1/origins", None).await?;
                Ok(show(list, &|v| list_table(&v["origins"], ORIGIN_COLUMNS)))
            }
            OriginCommand::Delete { id, force } => {
                let path = format!("/api/v1/origins/{}?force={force}", segment(&id)?);
                let answer = api.call(Method::DELETE, &path, None).await?;
                Ok(show(answer, &|_| format!("Deleted origin {id}\n")))
            }
            OriginCommand::RotateKeys(args) => {
                let path = format!("/api/v1/origins/{}", segment(&args.id)?);
                rotate(&api, &path, &args, &show).await
            }
            OriginCommand::Bundle { id, output } => {
                let bytes = api
                    .download(&format!("/api/v1/origins/{}/config", segment(&id)?))
                    .await?;
                write_private(&output, &bytes)?;
                Ok(format!(
                    "Wrote {} ({} bytes, mode 0600). It holds a single-use enrollment token: \
                     copy it to the origin, unpack it and run `sudo sh scripts/install.sh` (the \
                     origin makes its own WireGuard key there).\n",
                    output.display(),
                    bytes.len()
                ))
            }
        },
        Command::Route(command) => match command {
            RouteCommand::Add {
                hostname,
                origin,
                port,
                certificate,
            } => {
                let body = json!({"hostname": hostname, "origin_id": origin, "target_port": port,
                                  "certificate": certificate});
                let created = api.call(Method::POST, "/api/v1/routes", Some(body)).await?;
                for warning in created["warnings"].as_array().into_iter().flatten() {
                    eprintln!("warning: {}", text(warning));
                }
                Ok(show(created, &|v| {
                    table::render(std::slice::from_ref(v), ROUTE_COLUMNS)
                }))
            }
            RouteCommand::List => {
                let mut list = api.call(Method::GET, "/api/v1/routes", None).await?;
                if !json {
                    let certificates = api.call(Method::GET, "/api/v1/certificates", None).await?;
                    add_tls_state(&mut list["routes"], &certificates["certificates"]);
                }
                Ok(show(list, &|v| list_table(&v["routes"], ROUTE_COLUMNS)))
            }
            RouteCommand::Rm { route } => {
                // A route is named by its id or, more memorably, its host name.
                let id = if route.contains('.') {
                    let list = api.call(Method::GET, "/api/v1/routes", None).await?;
                    list["routes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|r| r["hostname"] == route.as_str())
                        .map(|r| text(&r["id"]))
                        .ok_or_else(|| Error::Api {
                            status: 404,
                            code: "not_found".into(),
                            message: format!("no route for hostname {route:?}"),
                        })?
                } else {
                    route.clone()
                };
                let path = format!("/api/v1/routes/{}", segment(&id)?);
                let answer = api.call(Method::DELETE, &path, None).await?;
                Ok(show(answer, &|_| format!("Deleted route {id} ({route})\n")))
            }
        },
        Command::Edge(command) => match command {
            EdgeCommand::Add(add) => {
                let body = json!({
                    "provider": add.provider,
                    "region": add.region,
                    "origin_id": add.origin,
                    "name": add.name,
                    "public_ip": add.public_ip,
                    "size": add.size,
                    "ssh_key": add.ssh_key,
                    "allow_loopback_url": add.allow_loopback_url,
                });
                let created = api
                    .call(Method::POST, "/api/v1/edge-nodes", Some(body))
                    .await?;
                for warning in created["warnings"].as_array().into_iter().flatten() {
                    eprintln!("warning: {}", text(warning));
                }
                Ok(show(created, &|v| {
                    let mut out = table::render(
                        std::slice::from_ref(v),
                        &[
                            ("ID", "id"),
                            ("STATUS", "status"),
                            ("ESTIMATED_SECONDS", "estimated_time_seconds"),
                        ],
                    );
                    if let Some(command) = v["enroll_command"].as_str() {
                        out.push_str(&format!(
                            "\nRun on the edge server (the token works once):\n  {command}\n"
                        ));
                    }
                    out
                }))
            }
            EdgeCommand::List { origin } => {
                let path = match origin {
                    Some(id) => format!("/api/v1/origins/{}/edge-nodes", segment(&id)?),
                    None => "/api/v1/edge-nodes".to_owned(),
                };
                let list = api.call(Method::GET, &path, None).await?;
                Ok(show(list, &|v| list_table(&v["edge_nodes"], EDGE_COLUMNS)))
            }
            EdgeCommand::RotateKeys(args) => {
                let path = format!("/api/v1/edge-nodes/{}", segment(&args.id)?);
                rotate(&api, &path, &args, &show).await
            }
            EdgeCommand::Rm { id } => {
                let path = format!("/api/v1/edge-nodes/{}", segment(&id)?);
                let answer = api.call(Method::DELETE, &path, None).await?;
                Ok(show(answer, &|v| {
                    let steps: Vec<String> = v["steps"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, s)| format!("  {}. {}\n", i + 1, text(s)))
                        .collect();
                    format!("{}: {id}\n{}", text(&v["message"]), steps.concat())
                }))
            }
        },
        Command::Token(command) => match command {
            TokenCommand::Create { name, role } => {
                let body = json!({"name": name, "role": role});
                let created = api.call(Method::POST, "/api/v1/tokens", Some(body)).await?;
                Ok(show(created, &|v| {
                    format!(
                        "{}\nToken (shown once, only its hash is kept):\n  {}\n",
                        table::render(std::slice::from_ref(v), TOKEN_COLUMNS),
                        text(&v["token"])
                    )
                }))
            }
            TokenCommand::List => {
                let list = api.call(Method::GET, "/api/v1/tokens", None).await?;
                Ok(show(list, &|v| list_table(&v["tokens"], TOKEN_COLUMNS)))
            }
            TokenCommand::Revoke { id } => {
                let path = format!("/api/v1/tokens/{}", segment(&id)?);
                let answer = api.call(Method::DELETE, &path, None).await?;
                Ok(show(answer, &|_| format!("Revoked token {id}\n")))
            }
        },
        Command::Certificate(command) => match command {
            CertificateCommand::List => {
                let list = api.call(Method::GET, "/api/v1/certificates", None).await?;
                Ok(show(list, &|v| {
                    list_table(&names_joined(&v["certificates"]), CERTIFICATE_COLUMNS)
                }))
            }
            CertificateCommand::Upload { cert, key } => {
                let read = |path: &PathBuf, what: &str| {
                    fs::read_to_string(path).map_err(|e| {
                        Error::Usage(format!("cannot read the {what} {}: {e}", path.display()))
                    })
                };
                let body = json!({
                    "certificate_pem": read(&cert, "certificate")?,
                    "private_key_pem": read(&key, "private key")?,
                });
                let created = api
                    .call(Method::POST, "/api/v1/certificates", Some(body))
                    .await?;
                Ok(show(created, &|v| {
                    list_table(&names_joined(&json!([v])), CERTIFICATE_COLUMNS)
                }))
            }
            CertificateCommand::Renew { id } => {
                let path = format!("/api/v1/certificates/{}/renew", segment(&id)?);
                let renewed = api.call(Method::POST, &path, None).await?;
                Ok(show(renewed, &|v| {
                    format!(
                        "Ordering {} again now; `kokoa certificate list` shows when it is \
                         issued\n",
                        names_joined(&json!([v]))[0]["names"]
                            .as_str()
                            .unwrap_or_default()
                    )
                }))
            }
        },
        Command::Dns(command) => match command {
            DnsCommand::Zones => {
                let list = api.call(Method::GET, "/api/v1/dns/zones", None).await?;
                Ok(show(list, &|v| list_table(&v["zones"], ZONE_COLUMNS)))
            }
            DnsCommand::AddZone {
                name,
                provider,
                ttl,
                settings,
                credentials,
            } => {
                let body = json!({
                    "name": name,
                    "provider": provider,
                    "ttl": ttl,
                    "settings": pairs(&settings, "setting", false)?,
                    "credentials": pairs(&credentials, "credential", true)?,
                });
                let created = api
                    .call(Method::POST, "/api/v1/dns/zones", Some(body))
                    .await?;
                Ok(show(created, &|v| {
                    table::render(std::slice::from_ref(v), ZONE_COLUMNS)
                }))
            }
            DnsCommand::RemoveZone { id } => {
                let path = format!("/api/v1/dns/zones/{}", segment(&id)?);
                let answer = api.call(Method::DELETE, &path, None).await?;
                Ok(show(answer, &|_| format!("Removed zone {id}\n")))
            }
            DnsCommand::Records => {
                let list = api.call(Method::GET, "/api/v1/dns/records", None).await?;
                Ok(show(list, &|v| list_table(&v["records"], RECORD_COLUMNS)))
            }
            DnsCommand::Plan => {
                let plan = api.call(Method::GET, "/api/v1/dns/plan", None).await?;
                Ok(show(plan, &|v| {
                    dns_outcome(v, "set by hand (outside the managed zones):\n")
                }))
            }
            DnsCommand::Apply => {
                let done = api
                    .call(Method::POST, "/api/v1/dns/reconcile", None)
                    .await?;
                Ok(show(done, &|v| {
                    dns_outcome(v, "set by hand (outside the managed zones):\n")
                }))
            }
            DnsCommand::Instructions => {
                let manual = api
                    .call(Method::GET, "/api/v1/dns/instructions", None)
                    .await?;
                Ok(show(manual, &|v| {
                    let text = dns_outcome(v, "");
                    if text.is_empty() {
                        "Every routed host name is in a managed zone: nothing to set by hand.\n"
                            .to_owned()
                    } else {
                        format!("Set these records at your DNS provider:\n{text}")
                    }
                }))
            }
        },
        Command::Events(args) => {
            let mut query = vec![format!("limit={}", args.limit)];
            for (key, value) in [
                ("type", &args.kind),
                ("subject", &args.subject),
                ("severity", &args.severity),
            ] {
                if let Some(value) = value {
                    query.push(format!("{key}={}", query_value(value)));
                }
            }
            let path = format!("/api/v1/events?{}", query.join("&"));
            let list = api.call(Method::GET, &path, None).await?;
            Ok(show(list, &|v| list_table(&v["events"], EVENT_COLUMNS)))
        }
        Command::Module(command) => {
            let (path, body) = match &command {
                ModuleCommand::List => ("/api/v1/modules".to_owned(), None),
                ModuleCommand::On { name } | ModuleCommand::Off { name } => (
                    format!("/api/v1/modules/{}", segment(name)?),
                    Some(json!({"enabled": matches!(command, ModuleCommand::On { .. })})),
                ),
            };
            let method = if body.is_some() {
                Method::PUT
            } else {
                Method::GET
            };
            let answer = api.call(method, &path, body).await?;
            Ok(show(answer, &|v| match v.get("modules") {
                Some(list) => list_table(list, MODULE_COLUMNS),
                None => table::render(std::slice::from_ref(v), MODULE_COLUMNS),
            }))
        }
        Command::Enrollment(EnrollmentCommand::Create {
            kind,
            node,
            expires_in,
            uses,
        }) => {
            let body = json!({
                "node_kind": kind,
                "node_id": node,
                "expires_in_seconds": expires_in,
                "uses": uses,
            });
            let created = api
                .call(Method::POST, "/api/v1/enrollments", Some(body))
                .await?;
            Ok(show(created, &|v| {
                let row = json!({
                    "id": v["id"],
                    "node": format!("{} {}", text(&v["node"]["kind"]), text(&v["node"]["id"])),
                    "expires_at": v["expires_at"],
                    "uses_left": v["uses_left"],
                });
                format!(
                    "{}\nToken (shown once):\n  {}\n",
                    table::render(
                        &[row],
                        &[
                            ("ID", "id"),
                            ("NODE", "node"),
                            ("EXPIRES", "expires_at"),
                            ("USES", "uses_left")
                        ]
                    ),
                    text(&v["token"])
                )
            }))
        }
    }
}

/// `KEY=VALUE` pairs as a JSON object; with `secret`, `KEY=env:VAR` reads the environment.
fn pairs(items: &[String], flag: &str, secret: bool) -> Result<Value, Error> {
    let mut map = serde_json::Map::new();
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            return Err(Error::Usage(format!(
                "--{flag} {:?}: use KEY=VALUE",
                if secret { "<hidden>" } else { item.as_str() }
            )));
        };
        let value = match value.strip_prefix("env:") {
            Some(var) if secret => std::env::var(var).map_err(|_| {
                Error::Usage(format!(
                    "--{flag} {key}=env:{var}: the environment variable {var} is not set"
                ))
            })?,
            _ => value.to_owned(),
        };
        map.insert(key.to_owned(), Value::String(value));
    }
    Ok(Value::Object(map))
}

/// A DNS manager outcome as text: each zone's changes and errors, then the records to set
/// by hand.
fn dns_outcome(v: &Value, heading: &str) -> String {
    let mut out = String::new();
    for zone in v["zones"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "zone {} ({}):\n",
            text(&zone["zone"]),
            text(&zone["provider"])
        ));
        if let Some(error) = zone["error"].as_str() {
            out.push_str(&format!("  error: {error}\n"));
        }
        let changes = zone["changes"].as_array().map_or(&[][..], Vec::as_slice);
        if changes.is_empty() && zone["error"].is_null() {
            out.push_str("  nothing to change\n");
        }
        for change in changes {
            let sign = match change["action"].as_str() {
                Some("create") => "+",
                Some("delete") => "-",
                _ => "~",
            };
            out.push_str(&format!(
                "  {sign} {}  ({})\n",
                text(&change["record"]),
                text(&change["reason"])
            ));
        }
        for failed in zone["failed"].as_array().into_iter().flatten() {
            out.push_str(&format!("  failed: {}\n", text(failed)));
        }
    }
    let manual = v["manual"].as_array().map_or(&[][..], Vec::as_slice);
    if !manual.is_empty() {
        out.push_str(heading);
        for name in manual {
            for record in name["records"].as_array().into_iter().flatten() {
                out.push_str(&format!("  {}\n", text(record)));
            }
            if name["records"].as_array().is_none_or(Vec::is_empty) {
                out.push_str(&format!(
                    "  {}: no edge serves it yet; nothing to set\n",
                    text(&name["hostname"])
                ));
            }
        }
    }
    out
}

/// The table of a list answer's array.
/// `certificates` with each one's `names` as one comma-separated cell.
fn names_joined(certificates: &Value) -> Value {
    let mut rows = certificates.clone();
    for row in rows.as_array_mut().into_iter().flatten() {
        let names: Vec<&str> = row["names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        row["names"] = Value::String(names.join(","));
    }
    rows
}

/// Sets each route's `tls`: the state of the certificate its edges serve for it, or what
/// they serve without one.
fn add_tls_state(routes: &mut Value, certificates: &Value) {
    let covers = |name: &str, hostname: &str| {
        name == hostname
            || name.strip_prefix("*.").is_some_and(|parent| {
                hostname
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent)
            })
    };
    for route in routes.as_array_mut().into_iter().flatten() {
        let hostname = route["hostname"].as_str().unwrap_or_default().to_owned();
        let certificate = certificates.as_array().into_iter().flatten().find(|c| {
            c["names"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| covers(n.as_str().unwrap_or_default(), &hostname))
        });
        let tls = match certificate {
            Some(c) => match c["days_left"].as_i64() {
                Some(days) => format!("{} ({days} d)", text(&c["status"])),
                None => text(&c["status"]),
            },
            None if route["certificate"] == "none" => "none".to_owned(),
            None => "fallback (none yet)".to_owned(),
        };
        route["tls"] = Value::String(tls);
    }
}

fn list_table(items: &Value, columns: &[Column]) -> String {
    table::render(items.as_array().map_or(&[], Vec::as_slice), columns)
}

/// A JSON string's text (other values as JSON).
/// Renders an answer: as JSON with `--json`, else with the given function.
type Show<'a> = &'a dyn Fn(Value, &dyn Fn(&Value) -> String) -> String;

/// Starts the key rotation of the node at `path` and, unless told not to, waits until the
/// node shows a key other than the one it had.
async fn rotate(api: &Api, path: &str, args: &RotateArgs, show: Show<'_>) -> Result<String, Error> {
    let started = api
        .call(Method::POST, &format!("{path}/rotate-keys"), None)
        .await?;
    if args.no_wait {
        return Ok(show(started, &|v| format!("{}\n", text(&v["message"]))));
    }
    eprintln!("{}", text(&started["message"]));
    let old = started["rotations"][0]["public_key"].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let node = api.call(Method::GET, path, None).await?;
        let key = &node["wireguard_public_key"];
        if key.is_string() && *key != old {
            return Ok(show(node.clone(), &|_| {
                format!("Rotated the key of {}: {}\n", args.id, text(key))
            }));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Usage(format!(
                "the key of {} is still rotating after {} s; the rotation goes on (it waits \
                 for the node to send its new key and for nodes that are down to come back): \
                 see `kokoa events`",
                args.id, args.timeout
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

/// A query value with the characters that would end or change it escaped.
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'*' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// An id as one URL path segment: ids are letters, digits, `_` and `-`, so anything else
/// (a `/`, `?`, `#`) is refused rather than sent somewhere else.
fn segment(id: &str) -> Result<&str, Error> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(id)
    } else {
        Err(Error::Usage(format!(
            "{id:?} is not an id (ids look like org_3f2a9c0e…)"
        )))
    }
}

/// `NAME:PORT[:PROTOCOL[:HEALTH_PATH]]` as the API's service object.
fn service_spec(spec: &str) -> Result<Value, Error> {
    let mut parts = spec.splitn(4, ':');
    let (Some(name), Some(port)) = (parts.next(), parts.next()) else {
        return Err(Error::Usage(format!(
            "--service {spec:?}: use NAME:PORT[:PROTOCOL[:HEALTH_PATH]], e.g. web:8001:http:/health"
        )));
    };
    let port: i64 = port.parse().map_err(|_| {
        Error::Usage(format!(
            "--service {spec:?}: the port {port:?} is not a number"
        ))
    })?;
    Ok(json!({
        "name": name,
        "port": port,
        "protocol": parts.next(),
        "health_check_path": parts.next(),
    }))
}

/// Writes `bytes` to a new file at `path` readable by its owner only.
fn write_private(path: &PathBuf, bytes: &[u8]) -> Result<(), Error> {
    let io = |action| {
        move |source| Error::Io {
            action,
            path: path.clone(),
            source,
        }
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create"))?;
    file.write_all(bytes).map_err(io("write"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_shows_the_certificate_that_covers_it() {
        let mut routes = json!([
            {"hostname": "app.hoge.com", "certificate": "http-01"},
            {"hostname": "api.hoge.com", "certificate": "dns-01"},
            {"hostname": "a.b.hoge.com", "certificate": "dns-01"},
            {"hostname": "wiki.fuga.com", "certificate": "http-01"},
            {"hostname": "raw.fuga.com", "certificate": "none"},
        ]);
        let certificates = json!([
            {"names": ["app.hoge.com"], "status": "valid", "days_left": 62},
            {"names": ["*.hoge.com"], "status": "pending", "days_left": null},
        ]);
        add_tls_state(&mut routes, &certificates);
        let tls: Vec<&str> = routes
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["tls"].as_str().unwrap())
            .collect();
        assert_eq!(
            tls,
            [
                "valid (62 d)",
                "pending",
                "fallback (none yet)",
                "fallback (none yet)",
                "none"
            ]
        );
    }

    #[test]
    fn service_specs() {
        assert_eq!(
            service_spec("web:8001").unwrap(),
            json!({"name": "web", "port": 8001, "protocol": null, "health_check_path": null})
        );
        assert_eq!(
            service_spec("api:8002:https:/v1/health?deep=1").unwrap()["health_check_path"],
            "/v1/health?deep=1"
        );
        for bad in ["web", "web:http"] {
            let err = service_spec(bad).unwrap_err();
            assert!(
                matches!(err, Error::Usage(_)) && err.to_string().contains(bad),
                "{err}"
            );
        }
    }

    #[test]
    fn ids_cannot_leave_their_path_segment() {
        assert_eq!(segment("org_3f2a").unwrap(), "org_3f2a");
        for bad in ["", "../tokens", "a?force=true", "a/b"] {
            assert!(segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
