//! A PowerDNS Authoritative server run on this machine, with its HTTP API, for tests and
//! labs: the real DNS server Kokoa's DNS manager is checked against.
//!
//! The server keeps its zones in an SQLite file in a temporary directory and is killed
//! when the [`LocalPowerDns`] is dropped. It never sends anything to the outside world
//! (`security-poll-suffix=` is empty) and answers only on the address it is given.
//!
//! Needs Debian's `pdns-server`, `pdns-backend-sqlite3` and `sqlite3`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::Error;

const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";
const INSTALL: &str = "apt-get install -y --no-install-recommends pdns-server \
                       pdns-backend-sqlite3 sqlite3";
const PROVIDER: &str = "local powerdns";

/// How to start a [`LocalPowerDns`].
#[derive(Debug, Clone)]
pub struct Options {
    /// The address DNS and the API listen on (default 127.0.0.1).
    pub address: IpAddr,
    /// The DNS port (UDP and TCP); 0 picks a free one.
    pub dns_port: u16,
    /// The API port; 0 picks a free one.
    pub api_port: u16,
    /// Who may use the API, in `webserver-allow-from` form (default the address itself).
    pub api_allow_from: Option<String>,
    /// More `pdns.conf` lines, e.g. `dnsupdate=yes`.
    pub extra_config: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            dns_port: 0,
            api_port: 0,
            api_allow_from: None,
            extra_config: Vec::new(),
        }
    }
}

/// A running `pdns_server`; stopped when dropped.
#[derive(Debug)]
pub struct LocalPowerDns {
    child: Child,
    dir: tempfile::TempDir,
    api_url: String,
    api_key: String,
    dns: SocketAddr,
}

impl Drop for LocalPowerDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn failed(detail: impl Into<String>) -> Error {
    Error::Transient {
        provider: PROVIDER,
        detail: detail.into(),
    }
}

/// The full path of `program` on `PATH` or in the system directories.
fn find(program: &str) -> Result<PathBuf, Error> {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .ok_or_else(|| failed(format!("{program} not found; install it with: {INSTALL}")))
}

fn free_tcp_port(address: IpAddr) -> Result<u16, Error> {
    let listener = TcpListener::bind((address, 0))
        .map_err(|e| failed(format!("no free TCP port on {address}: {e}")))?;
    Ok(listener
        .local_addr()
        .map_err(|e| failed(e.to_string()))?
        .port())
}

/// A port free for both UDP and TCP, as a DNS server needs.
fn free_dns_port(address: IpAddr) -> Result<u16, Error> {
    for _ in 0..50 {
        let udp = UdpSocket::bind((address, 0))
            .map_err(|e| failed(format!("no free UDP port on {address}: {e}")))?;
        let port = udp.local_addr().map_err(|e| failed(e.to_string()))?.port();
        if TcpListener::bind((address, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(failed(format!(
        "no port free for both UDP and TCP on {address}"
    )))
}

impl LocalPowerDns {
    /// Starts a server on 127.0.0.1 with free ports.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(Options::default()).await
    }

    /// Starts a server as `options` say and waits (at most 10 s) until its API answers.
    pub async fn start_with(options: Options) -> Result<Self, Error> {
        let pdns_server = find("pdns_server")?;
        let sqlite3 = find("sqlite3")?;
        if !Path::new(SCHEMA).is_file() {
            return Err(failed(format!(
                "{SCHEMA} missing; install it with: {INSTALL}"
            )));
        }
        let io = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| failed(format!("{what}: {e}"))
        };
        let dir = tempfile::Builder::new()
            .prefix("kokoa-pdns.")
            .tempdir()
            .map_err(io("create a temporary directory"))?;
        let db = dir.path().join("pdns.sqlite3");
        let schema = std::fs::File::open(SCHEMA).map_err(io("open the schema"))?;
        let status = Command::new(sqlite3)
            .arg(&db)
            .stdin(schema)
            .status()
            .map_err(io("run sqlite3"))?;
        if !status.success() {
            return Err(failed(format!("sqlite3 could not create {}", db.display())));
        }
        let run = dir.path().join("run");
        std::fs::create_dir(&run).map_err(io("create the socket directory"))?;
        let address = options.address;
        let dns_port = match options.dns_port {
            0 => free_dns_port(address)?,
            port => port,
        };
        let api_port = match options.api_port {
            0 => free_tcp_port(address)?,
            port => port,
        };
        let api_key = format!("kokoa-{}", kokoa_core::ApiTokenId::new().as_str());
        let allow = options
            .api_allow_from
            .clone()
            .unwrap_or_else(|| format!("{address}/32"));
        // security-poll-suffix= keeps PowerDNS from sending a query to the outside world at
        // start; the caches are off so every change is answered at once.
        let mut config = format!(
            "launch=gsqlite3\n\
             gsqlite3-database={db}\n\
             local-address={address}\n\
             local-port={dns_port}\n\
             socket-dir={run}\n\
             api=yes\n\
             api-key={api_key}\n\
             webserver=yes\n\
             webserver-address={address}\n\
             webserver-port={api_port}\n\
             webserver-allow-from={allow}\n\
             daemon=no\n\
             guardian=no\n\
             disable-syslog=yes\n\
             setuid=\n\
             setgid=\n\
             security-poll-suffix=\n\
             cache-ttl=0\n\
             negquery-cache-ttl=0\n\
             query-cache-ttl=0\n",
            db = db.display(),
            run = run.display(),
        );
        for line in &options.extra_config {
            config.push_str(line);
            config.push('\n');
        }
        std::fs::write(dir.path().join("pdns.conf"), config).map_err(io("write pdns.conf"))?;
        let log =
            std::fs::File::create(dir.path().join("pdns.log")).map_err(io("create the log"))?;
        let child = Command::new(pdns_server)
            .arg(format!("--config-dir={}", dir.path().display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io("start pdns_server"))?;
        let server = Self {
            child,
            dir,
            api_url: format!("http://{}", SocketAddr::new(address, api_port)),
            api_key,
            dns: SocketAddr::new(address, dns_port),
        };
        server.wait_until_ready().await?;
        Ok(server)
    }

    /// The API's base URL, e.g. `http://127.0.0.1:8081`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The API key (random for each server).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// Where DNS is answered.
    pub fn dns_address(&self) -> SocketAddr {
        self.dns
    }

    /// What the server has written to its log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default()
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default()
    }

    async fn wait_until_ready(&self) -> Result<(), Error> {
        let client = Self::client();
        for _ in 0..100 {
            let answer = client
                .get(format!("{}/api/v1/servers/localhost", self.api_url))
                .header("X-API-Key", &self.api_key)
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(failed(format!(
            "pdns_server did not answer within 10 s; its log:\n{}",
            self.log()
        )))
    }

    /// Creates the zone `name` (`hoge.com`) with an SOA and one NS record, as an operator
    /// would before handing it to Kokoa.
    pub async fn create_zone(&self, name: &str) -> Result<(), Error> {
        let body = json!({
            "name": format!("{name}."),
            "kind": "Native",
            "nameservers": [format!("ns1.{name}.")],
            "rrsets": [{
                "name": format!("{name}."), "type": "SOA", "ttl": 3600,
                "records": [{
                    "content": format!("ns1.{name}. hostmaster.{name}. 1 10800 3600 604800 3600"),
                    "disabled": false,
                }],
            }],
        });
        let answer = Self::client()
            .post(format!("{}/api/v1/servers/localhost/zones", self.api_url))
            .header("X-API-Key", &self.api_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| failed(format!("create zone {name}: {e}")))?;
        if answer.status().as_u16() == 201 {
            Ok(())
        } else {
            let status = answer.status();
            Err(failed(format!(
                "create zone {name}: {status} {}",
                answer.text().await.unwrap_or_default()
            )))
        }
    }
}
