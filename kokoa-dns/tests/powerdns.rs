//! Against a real PowerDNS Authoritative (gsqlite3 backend) started by the test: records
//! written through the provider and the reconciler are checked with `dig`.
#![cfg(feature = "powerdns")]

use std::{
    collections::BTreeSet,
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use kokoa_core::{EdgeNodeId, Hostname, RecordData};
use kokoa_dns::{
    DesiredState, DnsProvider, EdgeState, EdgeTarget, Error, Reconciler, RecordSpec, Zone,
    powerdns::PowerDnsProvider,
};
use serde_json::json;

const KEY: &str = "kokoa-test-key";
const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";
const INSTALL: &str =
    "apt-get install -y --no-install-recommends pdns-server pdns-backend-sqlite3 sqlite3 dnsutils";

/// A pdns_server process with its own config directory; killed on drop, also when a test
/// fails.
struct Pdns {
    child: Child,
    dir: tempfile::TempDir,
    api: String,
    dns_port: u16,
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
    async fn start() -> Self {
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
        let config = format!(
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

    /// Creates `name` with an SOA record, as an operator would before handing it to Kokoa.
    async fn create_zone(&self, name: &str) {
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
        let answer = reqwest::Client::new()
            .post(format!("{}/api/v1/servers/localhost/zones", self.api))
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
            .await
            .expect("create the zone");
        assert_eq!(
            answer.status().as_u16(),
            201,
            "{}",
            answer.text().await.unwrap_or_default()
        );
    }

    /// `dig @127.0.0.1 -p PORT NAME TYPE +noall +answer`, sorted lines with single spaces.
    fn dig(&self, name: &str, kind: &str) -> Vec<String> {
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

fn host(name: &str) -> Hostname {
    Hostname::parse(name).expect("test host name")
}

fn edge(id: &str, v4: &str, v6: Option<&str>, state: EdgeState) -> EdgeTarget {
    EdgeTarget {
        id: EdgeNodeId::parse(id).expect("test edge id"),
        ipv4: Some(v4.parse().expect("test address")),
        ipv6: v6.map(|v| v.parse().expect("test address")),
        state,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_keeps_powerdns_in_step_with_the_edges() -> Result<(), Error> {
    let pdns = Pdns::start().await;
    pdns.create_zone("kokoa.test").await;
    let provider = Arc::new(PowerDnsProvider::new(&pdns.api, KEY)?);
    let zone = provider.find_zone(&host("kokoa.test")).await?;
    assert_eq!(zone.id, "kokoa.test.");

    // Someone else's record in the same set: it must survive everything below.
    let foreign = RecordSpec {
        name: host("app.kokoa.test"),
        data: RecordData::A("192.0.2.50".parse().expect("address")),
        ttl: 30,
    };
    provider.create_record(&zone, &foreign).await?;

    let reconciler = Reconciler::new(provider.clone(), zone.clone());
    let mut desired = DesiredState::default();
    desired.hostnames.insert(host("app.kokoa.test"));
    desired.edges = vec![
        edge("edge-1", "203.0.113.10", None, EdgeState::Serving),
        edge(
            "edge-2",
            "203.0.113.11",
            Some("2001:db8::11"),
            EdgeState::Serving,
        ),
    ];
    let plan = reconciler.plan(&desired, &BTreeSet::new()).await?;
    assert_eq!(plan.creates.len(), 3, "{plan}");
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(
        pdns.dig("app.kokoa.test", "A"),
        [
            "app.kokoa.test. 30 IN A 192.0.2.50",
            "app.kokoa.test. 30 IN A 203.0.113.10",
            "app.kokoa.test. 30 IN A 203.0.113.11",
        ]
    );
    assert_eq!(
        pdns.dig("app.kokoa.test", "AAAA"),
        ["app.kokoa.test. 30 IN AAAA 2001:db8::11"]
    );
    assert!(reconciler.plan(&desired, &report.owned).await?.is_empty());

    // edge-2 fails its checks: both of its records leave DNS, its AAAA set entirely.
    desired.edges[1].state = EdgeState::Unhealthy;
    let plan = reconciler.plan(&desired, &report.owned).await?;
    assert_eq!(plan.deletes.len(), 2, "{plan}");
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(
        pdns.dig("app.kokoa.test", "A"),
        [
            "app.kokoa.test. 30 IN A 192.0.2.50",
            "app.kokoa.test. 30 IN A 203.0.113.10"
        ]
    );
    assert!(pdns.dig("app.kokoa.test", "AAAA").is_empty());

    // A longer TTL is applied in place; the record keeps its id.
    desired.ttl = 120;
    let plan = reconciler.plan(&desired, &report.owned).await?;
    assert_eq!(
        plan.to_string(),
        "~ app.kokoa.test. 120 IN A 203.0.113.10 (id app.kokoa.test|A|203.0.113.10): ttl 30 -> 120\n"
    );
    let report = reconciler.apply(plan).await;
    assert!(report.is_complete(), "{:?}", report.failed);
    assert!(
        pdns.dig("app.kokoa.test", "A")
            .contains(&"app.kokoa.test. 120 IN A 203.0.113.10".to_owned())
    );
    assert!(reconciler.plan(&desired, &report.owned).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_added_to_and_removed_from_record_sets() -> Result<(), Error> {
    let pdns = Pdns::start().await;
    pdns.create_zone("kokoa.test").await;
    let provider = PowerDnsProvider::new(&pdns.api, KEY)?;
    let zone = Zone {
        id: "kokoa.test.".into(),
        name: host("kokoa.test"),
    };
    let spec = |ip: &str| RecordSpec {
        name: host("www.kokoa.test"),
        data: RecordData::A(ip.parse().expect("address")),
        ttl: 60,
    };
    let first = provider.create_record(&zone, &spec("198.51.100.1")).await?;
    let second = provider.create_record(&zone, &spec("198.51.100.2")).await?;
    assert_eq!(second.as_str(), "www.kokoa.test|A|198.51.100.2");
    let listed = provider
        .list_records(&zone, Some(&host("www.kokoa.test")))
        .await?;
    assert_eq!(listed.len(), 2);

    let moved = provider
        .update_record(&zone, &first, &spec("198.51.100.3"))
        .await?;
    assert_eq!(moved.as_str(), "www.kokoa.test|A|198.51.100.3");
    assert_eq!(
        pdns.dig("www.kokoa.test", "A"),
        [
            "www.kokoa.test. 60 IN A 198.51.100.2",
            "www.kokoa.test. 60 IN A 198.51.100.3"
        ]
    );
    provider.delete_record(&zone, &second).await?;
    provider.delete_record(&zone, &moved).await?;
    assert!(pdns.dig("www.kokoa.test", "A").is_empty());
    let again = provider
        .delete_record(&zone, &moved)
        .await
        .expect_err("already gone");
    assert!(again.is_not_found(), "{again}");

    let missing = Zone {
        id: "nowhere.test.".into(),
        name: host("nowhere.test"),
    };
    let error = provider
        .list_records(&missing, None)
        .await
        .expect_err("no such zone");
    assert!(error.is_not_found(), "{error}");
    assert!(error.to_string().contains("zones/nowhere.test."), "{error}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_is_an_auth_error() -> Result<(), Error> {
    let pdns = Pdns::start().await;
    let provider = PowerDnsProvider::new(&pdns.api, "not-the-key")?;
    let error = provider.list_zones().await.expect_err("wrong key");
    assert!(matches!(error, Error::Auth { .. }), "{error}");
    assert!(!error.to_string().contains("not-the-key"));
    assert!(!format!("{provider:?}").contains("not-the-key"));
    Ok(())
}
