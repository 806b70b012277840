//! [`Lab`]: the running small Internet with the control plane, edges, origins and apps.

use std::{
    collections::BTreeMap,
    fs,
    io::Read as _,
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    Error,
    api::{Api, string_field},
    faults::DnsApiProxy,
    lb::LoadBalancer,
    net,
    plan::{self, APPS, CONTROL_ADDRESS, CONTROL_PORT, HA_CONTROL_PORTS, Role},
    postgres,
    state::{Ledger, STATE_FILE},
    supervisor::{Spec, Supervisor},
    tls::{self, Tls},
    vps::Timing,
};

/// Where the other programs are: next to this one (`target/debug`, `target/release`) or a
/// directory given with `--bin-dir`.
#[derive(Debug, Clone)]
pub struct Bins {
    dir: PathBuf,
    lab: PathBuf,
    /// With `--packaged`: where the agents go once downloaded from the control plane.
    agents: Option<PathBuf>,
    /// With `--packaged`: the agents as the control plane's package ships them.
    shipped: Option<PathBuf>,
}

/// The agents, which `--packaged` downloads from the control plane.
pub const AGENTS: [&str; 2] = ["kokoa-edge", "kokoa-origin"];

impl Bins {
    /// Programs in `dir`, or next to the running executable.
    pub fn locate(dir: Option<PathBuf>) -> Result<Self, Error> {
        let lab = std::env::current_exe().map_err(Error::io("locate", "this executable"))?;
        let dir = match dir {
            Some(dir) => dir,
            None => lab.parent().map(Path::to_owned).unwrap_or_default(),
        };
        let bins = Self {
            dir,
            lab,
            agents: None,
            shipped: None,
        };
        for name in ["kokoa-control", "kokoa-edge", "kokoa-origin"] {
            bins.path(name)?;
        }
        Ok(bins)
    }

    /// The edge agent the lab provider falls back on when the user data names a package:
    /// with `--packaged`, the package's copy, which exists before any download (the
    /// control plane checks that it does; its user data names the download instead).
    pub fn provisioner_edge(&self) -> Result<String, Error> {
        match &self.shipped {
            Some(dir) => Ok(dir.join("kokoa-edge").display().to_string()),
            None => self.path("kokoa-edge"),
        }
    }

    /// The full path of program `name`: an agent downloaded (`--packaged`), which need not
    /// be there yet, or a program that must exist.
    pub fn path(&self, name: &str) -> Result<String, Error> {
        if let Some(agents) = self.agents.as_ref().filter(|_| AGENTS.contains(&name)) {
            return Ok(agents.join(name).display().to_string());
        }
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path.display().to_string())
        } else {
            Err(Error::MissingBinary {
                name: name.to_owned(),
                path,
            })
        }
    }
}

/// Polls `probe` every `every` until it returns `Some`, for at most `limit`; the timeout
/// error names `what`.
pub async fn wait_for<T, F, Fut>(
    what: impl Into<String>,
    limit: Duration,
    every: Duration,
    mut probe: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if started.elapsed() >= limit {
            return Err(Error::Timeout {
                what: what.into(),
                after: started.elapsed(),
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// How the lab runs its control plane.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The release artifacts (`scripts/release`, `scripts/package-deb`): run the control
    /// plane from its Debian package, on TLS, handing out the agents the package carries;
    /// the lab's edges and origins download them from it (`check --packaged`).
    pub packaged: Option<PathBuf>,
    /// A PostgreSQL server's URL (`postgres://postgres@127.0.0.1:5433/postgres`): run two
    /// control planes on a database of the lab's own in it, behind a load balancer on the
    /// control plane's address, with a fault switch in front of PowerDNS's API (`check
    /// --chaos`). `None`: one control plane on SQLite.
    pub postgres: Option<String>,
}

/// One control-plane process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// Its name in the supervisor (`control`, or `control-1` and `control-2`).
    pub name: String,
    /// Where it listens.
    pub listen: SocketAddr,
}

/// What a lab with two control planes has besides (see [`Options::postgres`]).
#[derive(Debug)]
pub struct Ha {
    /// The load balancer on the control plane's address.
    pub lb: LoadBalancer,
    /// The fault switch the control planes reach PowerDNS's API through.
    pub dns_api: DnsApiProxy,
    /// The lab's database.
    pub database: postgres::Database,
    /// Its URL.
    pub database_url: String,
    /// The server it is in.
    pub server: postgres::Server,
}

/// The running lab. Dropping it stops every process and removes every namespace, link and
/// directory it made (see [`Ledger`]).
#[derive(Debug)]
pub struct Lab {
    /// The lab's children (control plane, edges, origins, apps).
    pub supervisor: Supervisor,
    /// What the lab made; cleans up when dropped (declared after the supervisor, so it is
    /// dropped after it).
    pub ledger: Ledger,
    /// The temporary directory holding every host's files and the logs.
    pub dir: PathBuf,
    /// The control plane's API with the admin token.
    pub api: Api,
    /// Origin ids by origin host name.
    pub origins: BTreeMap<&'static str, String>,
    /// pebble and the lab's DNS server, issuing the edges' certificates.
    pub tls: Tls,
    /// From the moment routes and edges were ready and the SSL manager was switched on to
    /// the first verified HTTPS answer of every app through every edge.
    pub tls_ready: Option<Duration>,
    /// The control-plane processes.
    pub controls: Vec<Control>,
    /// How fast the control planes check the edges; written into their configuration
    /// file at each (re)start.
    pub timing: Timing,
    /// Two control planes on PostgreSQL behind a load balancer, when asked for.
    pub ha: Option<Ha>,
    /// With `--packaged`: the release artifacts and the root the control plane's package
    /// was unpacked into.
    pub packaged: Option<Packaged>,
    bins: Bins,
}

/// The release artifacts the lab runs (`check --packaged`).
#[derive(Debug, Clone)]
pub struct Packaged {
    /// Where `scripts/release` and `scripts/package-deb` wrote them.
    pub artifacts: PathBuf,
    /// The `kokoa-control` package, unpacked.
    pub root: PathBuf,
}

impl Packaged {
    /// Unpacks the control plane's package from `artifacts` into `into`.
    async fn unpack(artifacts: &Path, into: PathBuf) -> Result<Self, Error> {
        let deb = fs::read_dir(artifacts)
            .map_err(Error::io("read", artifacts))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("kokoa-control_") && n.ends_with(".deb"))
            })
            .ok_or_else(|| Error::Command {
                command: "kokoa-lab check --packaged".into(),
                message: format!(
                    "no kokoa-control_*.deb in {}: run scripts/release and scripts/package-deb",
                    artifacts.display()
                ),
            })?;
        net::run(&Spec::root(vec![
            "dpkg-deb".into(),
            "-x".into(),
            deb.display().to_string(),
            into.display().to_string(),
        ]))
        .await?;
        Ok(Self {
            artifacts: artifacts.to_owned(),
            root: into,
        })
    }

    /// The agents the package hands out.
    pub fn downloads(&self) -> PathBuf {
        self.root.join("usr/share/kokoa/downloads")
    }
}

/// How long the whole scenario may take to serve its first request through every edge.
const READY_LIMIT: Duration = Duration::from_secs(90);

impl Lab {
    /// Builds the lab and waits until both host names answer through both edges.
    pub async fn up(bins: Bins, options: Options) -> Result<Self, Error> {
        let mut ledger = Ledger::create(STATE_FILE)?;
        let dir = tempfile::Builder::new()
            .prefix("kokoa-lab.")
            .tempdir()
            .map_err(Error::io("create", "a temporary directory"))?
            .keep();
        ledger.record(|s| s.dirs.push(dir.clone()))?;
        // nginx's workers (www-data) read certificates and the health file under it.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(Error::io("set permissions of", &dir))?;
        let mut supervisor = Supervisor::new(dir.join("logs"))?;
        let (bins, packaged) = match &options.packaged {
            Some(artifacts) => {
                let packaged = Packaged::unpack(artifacts, dir.join("package")).await?;
                let bins = Bins {
                    dir: packaged.root.join("usr/bin"),
                    lab: bins.lab,
                    agents: Some(dir.join("downloads")),
                    shipped: Some(packaged.downloads()),
                };
                bins.path("kokoa-control")?;
                (bins, Some(packaged))
            }
            None => (bins, None),
        };
        net::build(&mut ledger).await?;
        let tls = Tls::start(&dir.join("pebble"), &mut supervisor, &mut ledger).await?;

        let (controls, ha) = match options.postgres {
            None => (
                vec![Control {
                    name: "control".into(),
                    listen: SocketAddr::new(IpAddr::V4(CONTROL_ADDRESS), CONTROL_PORT),
                }],
                None,
            ),
            Some(admin_url) => {
                let ha = Ha::start(&admin_url, &tls, &mut ledger).await?;
                let controls = HA_CONTROL_PORTS
                    .iter()
                    .enumerate()
                    .map(|(i, &port)| Control {
                        name: format!("control-{}", i + 1),
                        listen: SocketAddr::new(IpAddr::V4(CONTROL_ADDRESS), port),
                    })
                    .collect();
                (controls, Some(ha))
            }
        };
        let control = dir.join("control");
        let mut init = vec![
            bins.path("kokoa-control")?,
            "init".into(),
            "--data-dir".into(),
            control.display().to_string(),
            "--json".into(),
        ];
        if let Some(ha) = &ha {
            init.extend(["--database".into(), ha.database_url.clone()]);
        }
        let init = net::run(&Spec::root(init)).await?;
        let token: Value = serde_json::from_str(&init).map_err(|e| Error::Command {
            command: "kokoa-control init --json".into(),
            message: format!("printed no JSON ({e})"),
        })?;
        let printed = token;
        let token = string_field(&printed, "admin_token", "kokoa-control init --json")?;
        let pin = string_field(&printed, "ca_pin", "kokoa-control init --json")?;
        let pin = pin
            .parse()
            .map_err(|e: kokoa_agent::InvalidPin| Error::Command {
                command: "kokoa-control init --json".into(),
                message: e.to_string(),
            })?;
        if let Some(ha) = &ha {
            ha.lb.check_over_tls(kokoa_agent::pinned_client_config(pin));
        }
        let api = Api::new(control_url(), token, pin)?;
        let mut lab = Self {
            supervisor,
            ledger,
            dir,
            api,
            origins: BTreeMap::new(),
            tls,
            tls_ready: None,
            controls,
            timing: Timing::LAB,
            ha,
            packaged,
            bins,
        };
        if let Err(e) = lab.start_all().await {
            eprint!("{}", lab.supervisor.log_tails(25));
            return Err(e);
        }
        Ok(lab)
    }

    async fn start_all(&mut self) -> Result<(), Error> {
        self.start_controls().await?;
        if self.packaged.is_some() {
            self.download_agents().await?;
        }
        // No orders before the edges serve and DNS points at them: pebble would find
        // nothing, and each failure backs off.
        self.switch_ssl_manager(false).await?;
        self.create_origins_and_routes().await?;
        for edge in plan::hosts(Role::Edge) {
            self.start_edge(edge.name, edge.address.to_string()).await?;
        }
        for app in APPS {
            self.start_app(app.origin)?;
            self.start_origin(app.origin).await?;
        }
        self.wait_serving().await?;
        self.start_certificates().await
    }

    async fn switch_ssl_manager(&self, on: bool) -> Result<(), Error> {
        let body = json!({ "enabled": on });
        self.api
            .json(
                Method::PUT,
                "/api/v1/modules/ssl_manager",
                Some(body),
                StatusCode::OK,
            )
            .await
            .map(drop)
    }

    /// Adds the lab's zones (the DNS manager publishes the edges' addresses in them),
    /// switches the SSL manager on and waits until every app answers over HTTPS with a
    /// certificate pebble issued, through every edge.
    async fn start_certificates(&mut self) -> Result<(), Error> {
        for zone in tls::ZONES {
            let body = self.tls.zone_request(zone, &self.dns_api_url());
            self.api
                .json(
                    Method::POST,
                    "/api/v1/dns/zones",
                    Some(body),
                    StatusCode::CREATED,
                )
                .await?;
        }
        // The edges go into DNS once they pass their checks; pebble resolves the names
        // through it, so orders wait for that (a failed order backs off a minute).
        let dns = self.tls.dns.dns_address();
        let api = &self.api;
        wait_for(
            "both edges in DNS for every host name",
            READY_LIMIT,
            Duration::from_millis(250),
            || async {
                let _ = api
                    .json(Method::POST, "/api/v1/dns/reconcile", None, StatusCode::OK)
                    .await;
                let mut all = true;
                for app in APPS {
                    let found = crate::failover::served_at(dns, app.hostname).await;
                    all &= plan::hosts(Role::Edge).all(|e| found.contains(&e.address));
                }
                all.then_some(())
            },
        )
        .await?;
        let started = Instant::now();
        self.switch_ssl_manager(true).await?;
        for app in APPS {
            tls::wait_valid(app.hostname, app.origin, &self.tls.root, READY_LIMIT).await?;
        }
        self.tls_ready = Some(started.elapsed());
        Ok(())
    }

    /// The URL of PowerDNS's API the control planes are given: the fault switch's, when
    /// there is one.
    pub fn dns_api_url(&self) -> String {
        match &self.ha {
            Some(ha) => ha.dns_api.url().to_owned(),
            None => self.tls.dns.api_url().to_owned(),
        }
    }

    /// The names of the control-plane processes.
    pub fn control_names(&self) -> Vec<String> {
        self.controls.iter().map(|c| c.name.clone()).collect()
    }

    /// Writes the control planes' configuration file, with the checks at [`Lab::timing`].
    pub fn write_control_config(&self) -> Result<(), Error> {
        let config = self.dir.join("control.toml");
        let text = format!(
            "{}\n{}",
            self.tls.control_config(),
            crate::vps::control_config(&self.dir, &self.bins, &self.tls.root, self.timing)?
        );
        fs::write(&config, text).map_err(Error::io("write", &config))
    }

    /// Starts the control planes (root namespace, on [`CONTROL_ADDRESS`] or behind the
    /// load balancer there) and waits for them.
    pub async fn start_controls(&mut self) -> Result<(), Error> {
        self.write_control_config()?;
        let (pool, len) = plan::SUBNET_POOL;
        for control in self.controls.clone() {
            let mut argv = vec![
                self.bins.path("kokoa-control")?,
                "serve".into(),
                "--data-dir".into(),
                self.dir.join("control").display().to_string(),
                "--listen".into(),
                control.listen.to_string(),
                "--public-url".into(),
                control_url(),
                "--subnet-pool".into(),
                format!("{pool}/{len}"),
                "--config".into(),
                self.dir.join("control.toml").display().to_string(),
            ];
            if let Some(ha) = &self.ha {
                argv.extend(["--database".into(), ha.database_url.clone()]);
            }
            if let Some(packaged) = &self.packaged {
                argv.extend([
                    "--downloads-dir".into(),
                    packaged.downloads().display().to_string(),
                ]);
            }
            self.supervisor
                .start(&mut self.ledger, &control.name, Spec::root(argv))?;
        }
        for control in &self.controls {
            self.wait_control_at(control).await?;
        }
        self.wait_control().await
    }

    /// Downloads the agents from the control plane as a node would: `SHA256SUMS`, then each
    /// agent, kept only if its SHA-256 is the one listed.
    async fn download_agents(&mut self) -> Result<(), Error> {
        let fail = |message: String| Error::Command {
            command: "GET /downloads/".into(),
            message,
        };
        let sums = String::from_utf8(self.api.download("/downloads/SHA256SUMS").await?)
            .map_err(|e| fail(e.to_string()))?;
        let dir = self.dir.join("downloads");
        fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        for agent in AGENTS {
            let listed = sums
                .lines()
                .find_map(|line| line.strip_suffix(&format!("  {agent}")))
                .ok_or_else(|| fail(format!("{agent} is not in SHA256SUMS:\n{sums}")))?;
            let bytes = self.api.download(&format!("/downloads/{agent}")).await?;
            let got = hex_sha256(&bytes);
            if got != listed {
                return Err(fail(format!(
                    "{agent} has SHA-256 {got}, SHA256SUMS says {listed}"
                )));
            }
            let path = dir.join(agent);
            fs::write(&path, &bytes).map_err(Error::io("write", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                .map_err(Error::io("set permissions of", &path))?;
        }
        Ok(())
    }

    /// The API of one control plane, without the load balancer.
    pub fn control_api(&self, control: &Control) -> Result<Api, Error> {
        Api::new(
            format!("https://{}", control.listen),
            self.api.token().to_owned(),
            self.api.ca_pin(),
        )
    }

    /// Waits until control plane `control` itself answers `/health`.
    pub async fn wait_control_at(&self, control: &Control) -> Result<(), Error> {
        let api = self.control_api(control)?;
        wait_for(
            format!("{} to answer on {}/health", control.name, control.listen),
            Duration::from_secs(15),
            Duration::from_millis(50),
            || async { api.healthy().await.then_some(()) },
        )
        .await
    }

    /// Waits until the control plane answers `/health` (through the load balancer, if any).
    pub async fn wait_control(&self) -> Result<(), Error> {
        let api = &self.api;
        wait_for(
            format!("kokoa-control to answer on {}/health", control_url()),
            Duration::from_secs(15),
            Duration::from_millis(50),
            || async { api.healthy().await.then_some(()) },
        )
        .await
    }

    async fn create_origins_and_routes(&mut self) -> Result<(), Error> {
        for app in APPS {
            let body = json!({
                "name": app.origin,
                "services": [{
                    "name": "web", "port": app.port, "protocol": "http",
                    "health_check_path": "/health",
                }],
            });
            let origin = self
                .api
                .json(
                    Method::POST,
                    "/api/v1/origins",
                    Some(body),
                    StatusCode::CREATED,
                )
                .await?;
            let id = string_field(&origin, "id", "POST /api/v1/origins")?;
            self.api.add_route(app.hostname, &id, app.port).await?;
            self.origins.insert(app.origin, id);
        }
        Ok(())
    }

    /// Registers edge `name` as a manual edge, enrolls it and starts its agent.
    async fn start_edge(&mut self, name: &str, public_ip: String) -> Result<(), Error> {
        let body = json!({
            "provider": "manual", "region": "lab", "name": name, "public_ip": public_ip,
        });
        let edge = self
            .api
            .json(
                Method::POST,
                "/api/v1/edge-nodes",
                Some(body),
                StatusCode::ACCEPTED,
            )
            .await?;
        let token = string_field(&edge, "enrollment_token", "POST /api/v1/edge-nodes")?;
        let ns = plan::host(name).netns();
        let home = self.dir.join(name);
        let state_dir = home.join("state").display().to_string();
        let program = self.bins.path("kokoa-edge")?;
        let mut enroll = Spec::netns(
            &ns,
            vec![
                program.clone(),
                "enroll".into(),
                "--control-plane".into(),
                control_url(),
                "--ca-pin".into(),
                self.api.ca_pin().to_string(),
                "--state-dir".into(),
                state_dir.clone(),
            ],
        );
        // From the environment, so the token does not show in `ps`.
        enroll.env.push(("KOKOA_ENROLL_TOKEN".into(), token));
        net::run(&enroll).await?;
        let run = vec![
            program,
            "run".into(),
            "--state-dir".into(),
            state_dir,
            "--nginx-prefix".into(),
            home.join("nginx").display().to_string(),
            "--stop-on-exit".into(),
            "--metrics-listen".into(),
            format!(
                "{}:{}",
                plan::host(name).address,
                crate::prom::EDGE_METRICS_PORT
            ),
        ];
        self.supervisor
            .start(&mut self.ledger, name, Spec::netns_own_wireguard(&ns, run))
    }

    /// The name of the app child of `origin`.
    pub fn app_child(origin: &str) -> String {
        format!("app-{origin}")
    }

    /// While this file exists, the app of origin host `origin` fails its origin agent's
    /// application check (its `/ready`), its port and service check staying up.
    pub fn app_down_file(&self, origin: &str) -> PathBuf {
        self.dir.join(origin).join("app-down")
    }

    /// Starts the app of origin host `origin` on 127.0.0.1 in its namespace.
    pub fn start_app(&mut self, origin: &str) -> Result<(), Error> {
        let app = APPS
            .iter()
            .find(|a| a.origin == origin)
            .ok_or_else(|| Error::Command {
                command: format!("start app on {origin}"),
                message: "no app planned there".into(),
            })?;
        let argv = vec![
            self.bins.lab.display().to_string(),
            "app".into(),
            "--name".into(),
            origin.to_owned(),
            "--listen".into(),
            format!("127.0.0.1:{}", app.port),
            "--down-file".into(),
            self.app_down_file(origin).display().to_string(),
        ];
        let spec = Spec::netns(&plan::host(origin).netns(), argv);
        self.supervisor
            .start(&mut self.ledger, &Self::app_child(origin), spec)
    }

    /// Downloads origin `origin`'s bundle, enrolls its agent with the bundle's
    /// `credentials.json` and starts the agent.
    async fn start_origin(&mut self, origin: &str) -> Result<(), Error> {
        let id = self.origins.get(origin).cloned().unwrap_or_default();
        let path = format!("/api/v1/origins/{id}/config");
        let bundle = self
            .api
            .send(Method::GET, &path, None, StatusCode::OK)
            .await?;
        let home = self.dir.join(origin);
        fs::create_dir_all(&home).map_err(Error::io("create", &home))?;
        let credentials = home.join("credentials.json");
        let text = bundle_file(&bundle, "credentials.json").map_err(|message| Error::Api {
            request: format!("GET {path}"),
            status: 200,
            body: message,
        })?;
        fs::write(&credentials, text).map_err(Error::io("write", &credentials))?;
        fs::set_permissions(&credentials, fs::Permissions::from_mode(0o600))
            .map_err(Error::io("set permissions of", &credentials))?;

        let ns = plan::host(origin).netns();
        let program = self.bins.path("kokoa-origin")?;
        let state_dir = home.join("state").display().to_string();
        net::run(&Spec::netns(
            &ns,
            vec![
                program.clone(),
                "enroll".into(),
                "--bundle".into(),
                credentials.display().to_string(),
                "--state-dir".into(),
                state_dir.clone(),
            ],
        ))
        .await?;
        let app_port = APPS.iter().find(|a| a.origin == origin).map(|a| a.port);
        let mut run = vec![
            program,
            "run".into(),
            "--state-dir".into(),
            state_dir,
            "--stop-on-exit".into(),
            "--metrics-listen".into(),
            format!(
                "{}:{}",
                plan::host(origin).address,
                crate::prom::ORIGIN_METRICS_PORT
            ),
        ];
        if let Some(port) = app_port {
            run.extend([
                "--application-url".into(),
                format!("http://127.0.0.1:{port}/ready"),
            ]);
        }
        self.supervisor.start(
            &mut self.ledger,
            origin,
            Spec::netns_own_wireguard(&ns, run),
        )
    }

    /// Waits until every app answers through every edge.
    pub async fn wait_serving(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        for edge in plan::hosts(Role::Edge) {
            for app in APPS {
                let last = loop {
                    let reply = net::https_via(edge.address, app.hostname, "/").await?;
                    if reply.is_from(app.origin) {
                        break None;
                    }
                    if started.elapsed() > READY_LIMIT {
                        break Some(reply);
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                };
                if let Some(reply) = last {
                    return Err(Error::Timeout {
                        what: format!(
                            "{} to answer through {} (last answer: {} {:?}; exited: {:?})",
                            app.hostname,
                            edge.name,
                            reply.status,
                            reply.body,
                            self.supervisor.exited()
                        ),
                        after: started.elapsed(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Copies every log (the children's, the edge VPSes', PowerDNS's) and the newest
    /// 1000 events into `to`, for a person or a CI artifact: the lab's own directory is
    /// removed with it.
    pub async fn keep_logs(&self, to: &Path) -> Result<usize, Error> {
        fs::create_dir_all(to).map_err(Error::io("create", to))?;
        let mut copied = 0;
        let mut copy = |from: &Path, name: String| {
            if fs::copy(from, to.join(&name)).is_ok() {
                copied += 1;
            }
        };
        for entry in fs::read_dir(self.dir.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
        {
            copy(
                &entry.path(),
                entry.file_name().to_string_lossy().into_owned(),
            );
        }
        let vps = crate::vps::config(&self.dir, &self.bins)?.dir;
        for entry in fs::read_dir(&vps).into_iter().flatten().flatten() {
            let log = entry.path().join("edge.log");
            if log.is_file() {
                copy(&log, format!("{}.log", entry.file_name().to_string_lossy()));
            }
        }
        let mut write = |name: &str, text: &str| {
            if fs::write(to.join(name), text).is_ok() {
                copied += 1;
            }
        };
        write("pdns.log", &self.tls.dns.log());
        if let Ok(events) = self
            .api
            .send(
                Method::GET,
                "/api/v1/events?limit=1000",
                None,
                StatusCode::OK,
            )
            .await
        {
            write("events.json", &String::from_utf8_lossy(&events));
        }
        Ok(copied)
    }

    /// Where the lab's programs are.
    pub fn bins(&self) -> &Bins {
        &self.bins
    }

    /// The curl commands a person can paste to try the lab.
    pub fn hints(&self) -> Vec<String> {
        let root = self.tls.root.display();
        plan::hosts(Role::Edge)
            .flat_map(|edge| {
                APPS.map(|app| {
                    net::curl_hint(edge.address, app.hostname)
                        .replace("curl -k", &format!("curl --cacert {root}"))
                })
            })
            .collect()
    }
}

impl Ha {
    /// Creates the lab's database in the server at `admin_url` (recorded in `ledger`
    /// first), and starts the load balancer and the DNS API's fault switch.
    async fn start(admin_url: &str, tls: &Tls, ledger: &mut Ledger) -> Result<Self, Error> {
        let server = postgres::Server::locate(admin_url).await?;
        let database = postgres::Database::for_this_process(admin_url);
        ledger.record(|s| s.databases.push(database.clone()))?;
        database.create().await?;
        let database_url = database.url()?;
        let backends: Vec<SocketAddr> = HA_CONTROL_PORTS
            .iter()
            .map(|&port| SocketAddr::new(IpAddr::V4(CONTROL_ADDRESS), port))
            .collect();
        let lb = LoadBalancer::start(
            SocketAddr::new(IpAddr::V4(CONTROL_ADDRESS), CONTROL_PORT),
            &backends,
        )
        .await?;
        let dns_api = DnsApiProxy::start(tls.dns.api_url()).await?;
        Ok(Self {
            lb,
            dns_api,
            database,
            database_url,
            server,
        })
    }
}

/// The SHA-256 of `bytes` in lower-case hexadecimal.
pub fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The control plane's URL as every host sees it.
pub fn control_url() -> String {
    format!("https://{CONTROL_ADDRESS}:{CONTROL_PORT}")
}

/// The text of file `name` (at any depth) in a gzipped tar bundle.
pub fn bundle_file(bundle: &[u8], name: &str) -> Result<String, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bundle));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar.gz: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("damaged tar.gz: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if path.file_name().is_some_and(|f| f == name) {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            return Ok(text);
        }
    }
    Err(format!("the bundle holds no {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targz(files: &[(&str, &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (path, text) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            builder
                .append_data(&mut header, path, text.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn bundle_file_finds_credentials_at_any_depth() {
        let bundle = targz(&[
            ("origin-config/wireguard/wg0.conf", "[Interface]\n"),
            ("origin-config/credentials.json", "{\"origin_id\":\"o1\"}"),
        ]);
        assert_eq!(
            bundle_file(&bundle, "credentials.json").unwrap(),
            "{\"origin_id\":\"o1\"}"
        );
        let missing = bundle_file(&bundle, "install.sh").unwrap_err();
        assert!(missing.contains("install.sh"), "{missing}");
        assert!(bundle_file(b"not gzip", "x").is_err());
    }

    #[tokio::test]
    async fn wait_for_is_bounded_and_names_what_it_waited_for() {
        let e = wait_for(
            "the moon",
            Duration::from_millis(50),
            Duration::from_millis(10),
            || async { None::<()> },
        )
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("the moon"), "{text}");
        let mut calls = 0;
        let got = wait_for("a value", Duration::from_secs(1), Duration::ZERO, || {
            calls += 1;
            let n = calls;
            async move { (n == 3).then_some(n) }
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
    }
}
