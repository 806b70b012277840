//! Certificates for real in the lab: pebble (a test ACME server) and a PowerDNS that holds
//! the lab's zones, both in the root namespace on the control plane's address, and the
//! checks of what an edge presents (`curl --cacert` with pebble's root).

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use kokoa_dns::local::{LocalPowerDns, Options};
use serde_json::json;

use crate::{
    Error,
    lab::wait_for,
    net,
    plan::{self, CONTROL_ADDRESS},
    state::Ledger,
    supervisor::{Spec, Supervisor},
};

/// The lab's DNS zones; every app's host name lies in one.
pub const ZONES: [&str; 2] = ["hoge.test", "fuga.test"];
/// pebble's ACME directory, on loopback of the root namespace where the control plane runs.
pub const ACME_PORT: u16 = 14000;
/// The TTL of the lab zones' records: short, so the failover scenario's client (which
/// honours it) moves off a removed edge quickly.
pub const ZONE_TTL: u32 = 5;
const MANAGEMENT_PORT: u16 = 15000;

const INSTALL: &str = "apt-get install -y --no-install-recommends pebble pdns-server \
                       pdns-backend-sqlite3 sqlite3 curl openssl";

/// pebble and PowerDNS, as the lab runs them.
#[derive(Debug)]
pub struct Tls {
    /// The DNS server holding [`ZONES`], answering on the lab's network.
    pub dns: LocalPowerDns,
    /// The CA file of pebble's own TLS certificate (for the control plane's `[acme]`).
    pub acme_ca: PathBuf,
    /// The root that signs the certificates pebble issues (for `curl --cacert`).
    pub root: PathBuf,
}

impl Tls {
    /// Starts PowerDNS on the control plane's address and pebble validating through it,
    /// then fetches pebble's issuing root into `dir`.
    pub async fn start(
        dir: &Path,
        supervisor: &mut Supervisor,
        ledger: &mut Ledger,
    ) -> Result<Self, Error> {
        let fail = |what: &str, message: String| Error::Command {
            command: what.to_owned(),
            message: format!("{message}; {INSTALL}"),
        };
        let dns = LocalPowerDns::start_with(Options {
            address: IpAddr::V4(CONTROL_ADDRESS),
            ..Options::default()
        })
        .await
        .map_err(|e| fail("start PowerDNS", e.to_string()))?;
        for zone in ZONES {
            dns.create_zone(zone)
                .await
                .map_err(|e| fail("create a PowerDNS zone", e.to_string()))?;
        }

        fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let acme_ca = dir.join("pebble-tls-ca.pem");
        let (cert, key) = (dir.join("pebble-tls.pem"), dir.join("pebble-tls.key"));
        // pebble ships no TLS certificate: a CA and a certificate for 127.0.0.1 (made with
        // openssl, whose output pebble, curl and rustls all accept).
        let ca_key = dir.join("pebble-tls-ca.key");
        let (csr, ext) = (dir.join("pebble-tls.csr"), dir.join("pebble-tls.ext"));
        fs::write(
            &ext,
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .map_err(Error::io("write", &ext))?;
        let p = |path: &PathBuf| path.display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for argv in [
            [
                &["openssl", "req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    &p(&ca_key),
                    "-out",
                    &p(&acme_ca),
                    "-days",
                    "30",
                    "-subj",
                    "/CN=kokoa lab pebble TLS CA",
                ],
            ]
            .concat(),
            [
                &["openssl", "req"][..],
                &ec,
                &[
                    "-keyout",
                    &p(&key),
                    "-out",
                    &p(&csr),
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
            vec![
                "openssl",
                "x509",
                "-req",
                "-in",
                &p(&csr),
                "-CA",
                &p(&acme_ca),
                "-CAkey",
                &p(&ca_key),
                "-CAcreateserial",
                "-out",
                &p(&cert),
                "-days",
                "30",
                "-extfile",
                &p(&ext),
            ],
        ] {
            net::run(&Spec::root(argv.into_iter().map(String::from).collect()))
                .await
                .map_err(|e| fail("make pebble's TLS certificate", e.to_string()))?;
        }
        let config = dir.join("pebble.json");
        let body = json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{ACME_PORT}"),
            "managementListenAddress": format!("127.0.0.1:{MANAGEMENT_PORT}"),
            "certificate": cert, "privateKey": key,
            // The CA validates HTTP-01 on port 80 of the addresses DNS gives: the edges.
            "httpPort": 80, "tlsPort": 5001, "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        fs::write(&config, body.to_string()).map_err(Error::io("write", &config))?;
        let mut spec = Spec::root(vec![
            "pebble".into(),
            "-config".into(),
            config.display().to_string(),
            "-dnsserver".into(),
            dns.dns_address().to_string(),
        ]);
        // Validate at once, and nearly every order (pebble still reuses 1 in 100).
        spec.env.push(("PEBBLE_VA_NOSLEEP".into(), "1".into()));
        spec.env.push(("PEBBLE_AUTHZREUSE".into(), "0".into()));
        supervisor.start(ledger, "pebble", spec)?;

        let root = dir.join("pebble-root.pem");
        let ca_file = acme_ca.display().to_string();
        let url = format!("https://127.0.0.1:{MANAGEMENT_PORT}/roots/0");
        let last = std::sync::Mutex::new(String::new());
        let pem = wait_for(
            "pebble to serve its root certificate",
            Duration::from_secs(20),
            Duration::from_millis(100),
            || async {
                let argv = [
                    "curl",
                    "-sSf",
                    "--max-time",
                    "2",
                    "--cacert",
                    &ca_file,
                    &url,
                ];
                match net::run(&Spec::root(argv.map(String::from).to_vec())).await {
                    Ok(pem) if pem.contains("BEGIN CERTIFICATE") => Some(pem),
                    Ok(other) => {
                        *last
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = other;
                        None
                    }
                    Err(e) => {
                        *last
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = e.to_string();
                        None
                    }
                }
            },
        )
        .await
        .map_err(|e| Error::Command {
            command: format!("curl {url}"),
            message: format!(
                "{e}; last answer: {}; pebble's log: {}",
                last.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                crate::supervisor::tail(&supervisor.log_path("pebble"), 5)
            ),
        })?;
        fs::write(&root, pem).map_err(Error::io("write", &root))?;
        Ok(Self { dns, acme_ca, root })
    }

    /// The `[acme]` section of the control plane's configuration file.
    pub fn control_config(&self) -> String {
        format!(
            "[acme]\ndirectory = \"https://127.0.0.1:{ACME_PORT}/dir\"\n\
             ca_file = \"{}\"\ncontact = \"lab@kokoa.test\"\nrenew_days_before = 30\n",
            self.acme_ca.display()
        )
    }

    /// The body of `POST /api/v1/dns/zones` for `zone`, whose API the control plane reaches
    /// at `api_url` (PowerDNS's own, or a proxy in front of it).
    pub fn zone_request(&self, zone: &str, api_url: &str) -> serde_json::Value {
        json!({
            "name": zone, "provider": "powerdns", "ttl": ZONE_TTL,
            "settings": {
                "url": api_url,
                "nameservers": [self.dns.dns_address().to_string()],
            },
            "credentials": { "api_key": self.dns.api_key() },
        })
    }
}

/// What an edge presented for a host name and answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The HTTP answer.
    pub reply: net::Reply,
    /// The certificate's subject, e.g. `CN = app.hoge.test` (empty when none was read).
    pub subject: String,
    /// Its issuer.
    pub issuer: String,
    /// Its serial number.
    pub serial: String,
}

/// `GET https://HOST/PATH` from the client namespace through `edge`, trusting only
/// `root`: a certificate pebble did not issue for `host` fails the request (status 0).
pub async fn https_verified(
    edge: Ipv4Addr,
    host: &str,
    path: &str,
    root: &Path,
) -> Result<Verified, Error> {
    let tls = ["--cacert".to_owned(), root.display().to_string()];
    let reply = net::curl_via(edge, host, path, &tls, "\n%{certs}").await?;
    let rest = reply.body.as_str();
    let field = |name: &str| {
        rest.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    // The body comes first, then curl's certificate details: the first certificate
    // (the server's own) starts with "Subject:".
    let body = rest.split("\nSubject:").next().unwrap_or(rest).to_owned();
    Ok(Verified {
        subject: field("Subject:"),
        issuer: field("Issuer:"),
        serial: field("Serial Number:"),
        reply: net::Reply { body, ..reply },
    })
}

/// Waits until `host` answers through every edge with a certificate pebble issued for it;
/// returns what each edge presented.
pub async fn wait_valid(
    host: &str,
    origin: &str,
    root: &Path,
    limit: Duration,
) -> Result<Vec<(&'static str, Verified)>, Error> {
    let mut seen = Vec::new();
    for edge in plan::hosts(plan::Role::Edge) {
        let verified = wait_for(
            format!("{host} to answer over verified HTTPS through {}", edge.name),
            limit,
            Duration::from_millis(200),
            || async {
                let v = https_verified(edge.address, host, "/", root).await.ok()?;
                v.reply.is_from(origin).then_some(v)
            },
        )
        .await?;
        seen.push((edge.name, verified));
    }
    Ok(seen)
}
