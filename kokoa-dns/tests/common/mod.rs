//! A PowerDNS Authoritative server (gsqlite3 backend) started by a test on loopback, and
//! `dig` to read what it serves. Shared by the PowerDNS and RFC 2136 tests.

use std::{
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

/// The API key of every test server.
pub(crate) const KEY: &str = "kokoa-test-key";
const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";
const INSTALL: &str =
    "apt-get install -y --no-install-recommends pdns-server pdns-backend-sqlite3 sqlite3 dnsutils";

/// A pdns_server process with its own config directory; killed on drop, also when a test
/// fails.
pub(crate) struct Pdns {
    child: Child,
    dir: tempfile::TempDir,
    /// The HTTP API's base URL.
    pub(crate) api: String,
    /// The DNS port on 127.0.0.1 (UDP and TCP).
    pub(crate) dns_port: u16,
}

impl Drop for Pdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(program: &str) -> PathBuf {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} not found; install it with: {INSTALL}"))
}

fn free_tcp_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free TCP port");
    listener.local_addr().expect("local address").port()
}

/// A port free for both UDP and TCP, as a DNS server needs.
fn free_dns_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a free UDP port");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

impl Pdns {
    /// A server with the API on and `extra` lines added to its configuration.
    pub(crate) async fn start(extra: &[&str]) -> Self {
        let pdns_server = find("pdns_server");
        let sqlite3 = find("sqlite3");
        assert!(
            Path::new(SCHEMA).is_file(),
            "{SCHEMA} missing; install it with: {INSTALL}"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = dir.path().join("pdns.sqlite3");
        let schema = std::fs::File::open(SCHEMA).expect("open the schema");
        let status = Command::new(sqlite3)
            .arg(&db)
            .stdin(schema)
            .status()
            .expect("run sqlite3");
        assert!(
            status.success(),
            "sqlite3 could not create {}",
            db.display()
        );
        std::fs::create_dir(dir.path().join("run")).expect("socket directory");
        let (api_port, dns_port) = (free_tcp_port(), free_dns_port());
        // security-poll-suffix= keeps PowerDNS from sending a query to the outside world at
        // start; the caches are off so dig sees every change at once.
        let mut config = format!(
            "launch=gsqlite3\n\
             gsqlite3-database={db}\n\
             local-address=127.0.0.1\n\
             local-port={dns_port}\n\
             socket-dir={run}\n\
             api=yes\n\
             api-key={KEY}\n\
             webserver=yes\n\
             webserver-address=127.0.0.1\n\
             webserver-port={api_port}\n\
             webserver-allow-from=127.0.0.1/32\n\
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
            run = dir.path().join("run").display(),
        );
        for line in extra {
            config.push_str(line);
            config.push('\n');
        }
        std::fs::write(dir.path().join("pdns.conf"), config).expect("write pdns.conf");
        let log = std::fs::File::create(dir.path().join("pdns.log")).expect("log file");
        let child = Command::new(pdns_server)
            .arg(format!("--config-dir={}", dir.path().display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pdns_server");
        let pdns = Self {
            child,
            dir,
            api: format!("http://127.0.0.1:{api_port}"),
            dns_port,
        };
        pdns.wait_until_ready().await;
        pdns
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pdns.log")).unwrap_or_default()
    }

    async fn wait_until_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..100 {
            let answer = client
                .get(format!("{}/api/v1/servers/localhost", self.api))
                .header("X-API-Key", KEY)
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "pdns_server did not answer within 10 s; its log:\n{}",
            self.log()
        );
    }

    /// Calls the API at `path` below `/api/v1/servers/localhost`, asserts the status is
    /// `expected` and returns the JSON answer (`null` when there is none).
    pub(crate) async fn call(&self, method: &str, path: &str, body: Value, expected: u16) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let answer = reqwest::Client::new()
            .request(
                method.clone(),
                format!("{}/api/v1/servers/localhost{path}", self.api),
            )
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        assert_eq!(status, expected, "{method} {path}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates `name` with an SOA record, as an operator would before handing it to Kokoa.
    pub(crate) async fn create_zone(&self, name: &str) {
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
        self.call("POST", "/zones", body, 201).await;
    }

    /// `dig @127.0.0.1 -p PORT NAME TYPE +noall +answer`, sorted lines with single spaces.
    pub(crate) fn dig(&self, name: &str, kind: &str) -> Vec<String> {
        let output = Command::new(find("dig"))
            .args(["@127.0.0.1", "-p", &self.dns_port.to_string(), name, kind])
            .args(["+noall", "+answer", "+time=2", "+tries=1"])
            .output()
            .expect("run dig");
        assert!(output.status.success(), "dig failed: {output:?}");
        let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect();
        lines.sort();
        lines
    }
}
