//! pebble, the ACME test CA, on loopback: its directory behind a TLS certificate of a
//! throwaway CA, asking a given DNS server for names, validating without its usual random
//! sleeps and without reusing authorizations.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;
use tempfile::TempDir;

/// What to install when pebble or the DNS tools are missing.
pub const INSTALL: &str = "apt-get install -y --no-install-recommends pebble pdns-server \
                           pdns-backend-sqlite3 sqlite3 dnsutils";

/// A port free on 127.0.0.1 for TCP and UDP.
pub fn free_port() -> u16 {
    test_ports::tcp_and_udp()
}

/// A running pebble, killed when dropped.
pub struct Pebble {
    child: Child,
    dir: TempDir,
    /// The ACME directory's port.
    pub acme_port: u16,
    /// The management API's port (`/roots/0`: the root it issues under).
    pub management_port: u16,
    /// The port it asks HTTP-01 responses on.
    pub http_port: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pebble {
    /// Starts pebble resolving names with the DNS server at `dns`, and waits until it
    /// listens.
    pub async fn start(dns: SocketAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let path = dir.path();
        std::fs::write(path.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path.join("cert.pem"), server.pem()).unwrap();
        std::fs::write(path.join("key.pem"), server_key.serialize_pem()).unwrap();
        let (acme_port, management_port, http_port) = (free_port(), free_port(), free_port());
        let config = json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": path.join("cert.pem"), "privateKey": path.join("key.pem"),
            "httpPort": http_port, "tlsPort": free_port(), "ocspResponderURL": "",
        }});
        std::fs::write(path.join("pebble.json"), config.to_string()).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(path.join("pebble.json"))
            .args(["-dnsserver", &dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("pebble: {e}; {INSTALL}"));
        let pebble = Self {
            child,
            dir,
            acme_port,
            management_port,
            http_port,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", acme_port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "pebble does not listen"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        pebble
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The CA of pebble's own TLS certificate (not of what it issues).
    pub fn tls_root(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The root certificate pebble issues under (PEM), from its management API.
    pub async fn issuing_root(&self) -> String {
        let root =
            reqwest::Certificate::from_pem(&std::fs::read(self.tls_root()).unwrap()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([root])
            .build()
            .unwrap()
            .get(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}
