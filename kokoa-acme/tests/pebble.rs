//! Real issuance against pebble, Let's Encrypt's test ACME server, on loopback.
//!
//! Each test starts its own `pebble` and `pebble-challtestsrv` (the DNS server pebble asks
//! for TXT records and addresses) on free ports, with a TLS certificate made here since
//! the package ships none. HTTP-01 is validated for real through nginx serving the token
//! files; DNS-01 through TXT records set in pebble-challtestsrv.

use std::{
    fs,
    io::ErrorKind,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use kokoa_acme::{
    BoxError, CertificateManager, ChallengeMethod, Dns01Solver, Error, ExternalAccountBinding,
    Http01Publisher, Issuer, Leadership, parse_manual,
};
use kokoa_core::{Email, Hostname, Timestamp};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tempfile::TempDir;
use test_ports::tcp_and_udp as free_port;

const INSTALL_HINT: &str =
    "install it with: apt-get install -y --no-install-recommends pebble nginx";

fn host(name: &str) -> Hostname {
    Hostname::parse(name).unwrap()
}

/// A child process, killed when dropped; its output goes to a log file shown on failure.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Self {
        let out = fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| match e.kind() {
                ErrorKind::NotFound => panic!("`{name}` is not installed; {INSTALL_HINT}"),
                _ => panic!("cannot start {name}: {e}"),
            });
        Self { name, child, log }
    }

    /// Panics with the process's output if it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            panic!("{} exited with {status}:\n{log}", self.name);
        }
    }

    /// Waits (bounded) for the process to exit by itself.
    fn wait_exit(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ready` every 100 ms for at most 10 s.
async fn wait_until(what: &str, process: &mut Process, mut ready: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        process.assert_running();
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} was not ready after 10 s");
}

/// pebble and its DNS server, stopped when dropped.
struct Pebble {
    pebble: Process,
    challtestsrv: Process,
    acme_port: u16,
    management_port: u16,
    dns_management_port: u16,
    ca_file: PathBuf,
    /// Trusts only the CA of pebble's own TLS certificate.
    client: reqwest::Client,
    _dir: TempDir,
}

impl Pebble {
    /// Starts pebble validating HTTP-01 on `http_port` of 127.0.0.1.
    async fn start(http_port: u16) -> Self {
        Self::launch(http_port, &[]).await
    }

    /// Starts pebble refusing to create accounts without an external account binding to
    /// one of `eab_keys` (key id, base64url HMAC key).
    async fn requiring_eab(eab_keys: &[(&str, &str)]) -> Self {
        assert!(!eab_keys.is_empty());
        Self::launch(free_port(), eab_keys).await
    }

    async fn launch(http_port: u16, eab_keys: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();

        // pebble ships no TLS certificate: make a CA and a certificate for 127.0.0.1.
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let ca_file = path.join("ca.pem");
        fs::write(&ca_file, ca.pem()).unwrap();
        fs::write(path.join("cert.pem"), server.pem()).unwrap();
        fs::write(path.join("key.pem"), server_key.serialize_pem()).unwrap();

        let (acme_port, management_port) = (free_port(), free_port());
        let (dns_port, dns_management_port) = (free_port(), free_port());
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": path.join("cert.pem"),
            "privateKey": path.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": !eab_keys.is_empty(),
            "externalAccountMACKeys": eab_keys
                .iter()
                .map(|(kid, key)| (kid.to_string(), serde_json::Value::from(*key)))
                .collect::<serde_json::Map<_, _>>(),
        }});
        fs::write(path.join("pebble.json"), config.to_string()).unwrap();

        let mut challtestsrv = Process::spawn(
            "pebble-challtestsrv",
            Command::new("pebble-challtestsrv").args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{dns_management_port}"),
            ]),
            path.join("challtestsrv.log"),
        );
        let mut pebble = Process::spawn(
            "pebble",
            Command::new("pebble")
                .arg("-config")
                .arg(path.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                // Validate at once, and (all but one order in a hundred: pebble's
                // draw) validate every order: a reused authorization skips the check.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_AUTHZREUSE", "0"),
            path.join("pebble.log"),
        );

        let ca_cert = reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only([ca_cert])
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let management = SocketAddr::from(([127, 0, 0, 1], dns_management_port));
        wait_until("pebble-challtestsrv", &mut challtestsrv, async || {
            TcpStream::connect(management).is_ok()
        })
        .await;
        let directory = format!("https://127.0.0.1:{acme_port}/dir");
        wait_until("pebble", &mut pebble, async || {
            client
                .get(&directory)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        Self {
            pebble,
            challtestsrv,
            acme_port,
            management_port,
            dns_management_port,
            ca_file,
            client,
            _dir: dir,
        }
    }

    fn issuer(&self) -> Issuer {
        self.issuer_with(None)
    }

    fn issuer_with(&self, external_account: Option<ExternalAccountBinding>) -> Issuer {
        Issuer::Custom {
            directory_url: format!("https://127.0.0.1:{}/dir", self.acme_port),
            trusted_root: Some(self.ca_file.clone()),
            external_account,
        }
    }

    /// The root that signs issued certificates: new at each start of pebble.
    async fn issuing_root(&self) -> String {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        let response = self.client.get(url).send().await.unwrap();
        assert!(response.status().is_success(), "{response:?}");
        response.text().await.unwrap()
    }

    /// A DNS-01 solver writing into pebble-challtestsrv.
    fn solver(&self, hang_on: Option<&str>) -> Arc<ChalltestsrvSolver> {
        Arc::new(ChalltestsrvSolver {
            base: format!("http://127.0.0.1:{}", self.dns_management_port),
            client: reqwest::Client::new(),
            calls: Mutex::default(),
            hang_on: hang_on.map(str::to_owned),
        })
    }

    fn assert_running(&mut self) {
        self.pebble.assert_running();
        self.challtestsrv.assert_running();
    }
}

const NGINX: &str = "/usr/sbin/nginx";

/// nginx serving `<dir>/acme/` under `/.well-known/acme-challenge/` on 127.0.0.1:`port`,
/// stopped when dropped.
struct Nginx {
    process: Process,
    dir: TempDir,
    port: u16,
}

impl Nginx {
    fn start() -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing; {INSTALL_HINT}"
        );
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("acme")).unwrap();
        // The workers run as `nobody` and must get through the temporary directory.
        for path in [dir.path().to_owned(), dir.path().join("acme")] {
            let mut permissions = fs::metadata(&path).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
            fs::set_permissions(&path, permissions).unwrap();
        }
        let port = free_port();
        fs::write(dir.path().join("nginx.conf"), config(dir.path(), port, "")).unwrap();
        let mut process = Process::spawn(
            "nginx",
            Command::new(NGINX)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf")),
            dir.path().join("stderr.log"),
        );
        for _ in 0..100 {
            process.assert_running();
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { process, dir, port };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nginx did not listen on port {port} within 5 s");
    }

    /// Adds a TLS server on a new port with `chain` and `key`, reloads, and returns the port.
    fn serve_tls(&self, chain: &str, key: &str) -> u16 {
        let dir = self.dir.path();
        fs::write(dir.join("chain.pem"), chain).unwrap();
        fs::write(dir.join("key.pem"), key).unwrap();
        let tls_port = free_port();
        let server = format!(
            "server {{
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        location / {{ return 200 \"served over TLS\"; }}
    }}",
            chain = dir.join("chain.pem").display(),
            key = dir.join("key.pem").display(),
        );
        fs::write(dir.join("nginx.conf"), config(dir, self.port, &server)).unwrap();
        let status = self.signal("reload").unwrap();
        assert!(status.success(), "nginx -s reload: {status}");
        tls_port
    }

    /// Runs `nginx -s <signal>` against this instance.
    fn signal(&self, signal: &str) -> std::io::Result<std::process::ExitStatus> {
        Command::new(NGINX)
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(self.dir.path().join("nginx.conf"))
            .args(["-s", signal])
            .stderr(Stdio::null())
            .status()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // A fast stop lets the master take its workers down; killing only the master
        // would leave them running, holding the port.
        let _ = self.signal("stop");
        self.process.wait_exit(Duration::from_secs(3));
    }
}

fn config(dir: &Path, port: u16, extra: &str) -> String {
    let dir = dir.display();
    format!(
        "daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /.well-known/acme-challenge/ {{
            alias {dir}/acme/;
            default_type text/plain;
        }}
    }}
    {extra}
}}
"
    )
}

/// GETs `https://<name>:<port>/` on 127.0.0.1, trusting only `root_pem`.
async fn https_get(root_pem: &str, name: &str, port: u16) -> Result<String, reqwest::Error> {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem.as_bytes())?])
        .resolve(name, SocketAddr::from(([127, 0, 0, 1], port)))
        .timeout(Duration::from_secs(5))
        .build()?;
    client
        .get(format!("https://{name}:{port}/"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await
}

/// Writes HTTP-01 token files into nginx's challenge directory and logs its calls.
struct FilePublisher {
    dir: PathBuf,
    /// When false, tokens are "published" without writing them, so validation fails.
    serve: AtomicBool,
    calls: Mutex<Vec<String>>,
}

#[async_trait]
impl Http01Publisher for FilePublisher {
    async fn publish(&self, token: &str, key_authorization: &str) -> Result<(), BoxError> {
        self.calls.lock().unwrap().push(format!("publish {token}"));
        if self.serve.load(Ordering::SeqCst) {
            fs::write(self.dir.join(token), key_authorization)?;
        }
        Ok(())
    }

    async fn withdraw(&self, token: &str) -> Result<(), BoxError> {
        self.calls.lock().unwrap().push(format!("withdraw {token}"));
        match fs::remove_file(self.dir.join(token)) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Sets TXT records through pebble-challtestsrv's management API and logs its calls.
struct ChalltestsrvSolver {
    base: String,
    client: reqwest::Client,
    calls: Mutex<Vec<String>>,
    /// A record name for which `set_txt` never returns, to test cancellation.
    hang_on: Option<String>,
}

impl ChalltestsrvSolver {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> Result<(), BoxError> {
        self.client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

#[async_trait]
impl Dns01Solver for ChalltestsrvSolver {
    async fn set_txt(&self, name: &str, value: &str) -> Result<(), BoxError> {
        self.calls.lock().unwrap().push(format!("set {name}"));
        if self.hang_on.as_deref() == Some(name) {
            std::future::pending::<()>().await;
        }
        let body = serde_json::json!({ "host": format!("{name}."), "value": value });
        self.post("/set-txt", body).await
    }

    async fn remove_txt(&self, name: &str, _value: &str) -> Result<(), BoxError> {
        self.calls.lock().unwrap().push(format!("remove {name}"));
        // challtestsrv clears every value of the name at once; here that is the same.
        self.post(
            "/clear-txt",
            serde_json::json!({ "host": format!("{name}.") }),
        )
        .await
    }
}

#[derive(Debug)]
struct Switch(AtomicBool);

impl Leadership for Switch {
    fn is_leader(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn http01_is_validated_through_nginx_and_the_certificate_serves_tls() {
    let nginx = Nginx::start();
    let mut pebble = Pebble::start(nginx.port).await;
    let publisher = Arc::new(FilePublisher {
        dir: nginx.dir.path().join("acme"),
        serve: AtomicBool::new(true),
        calls: Mutex::default(),
    });
    let (manager, _secret) = CertificateManager::builder(pebble.issuer())
        .contact(Email::parse("ops@hoge.test").unwrap())
        .http01(publisher.clone())
        .create_account()
        .await
        .unwrap();

    let name = host("a.hoge.test");
    let started = Instant::now();
    let cert = manager
        .obtain(std::slice::from_ref(&name), ChallengeMethod::Http01)
        .await
        .unwrap();
    eprintln!("HTTP-01 obtain → certificate: {:?}", started.elapsed());
    assert_eq!(cert.domains, [name.clone()].into());

    // The token was published, served by nginx to pebble, and withdrawn.
    let calls = publisher.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].starts_with("publish ") && calls[1].starts_with("withdraw "),
        "{calls:?}"
    );
    assert_eq!(fs::read_dir(&publisher.dir).unwrap().count(), 0);

    // What a user sees: nginx serves the certificate, a client trusting only pebble's
    // issuing root accepts it for the name and refuses it for another name, and nginx
    // loaded the key with it (it refuses a key that does not match).
    let root = pebble.issuing_root().await;
    let tls_port = nginx.serve_tls(&cert.chain_pem, cert.key_pem.expose_secret());
    let mut body = None;
    for _ in 0..50 {
        if let Ok(text) = https_get(&root, "a.hoge.test", tls_port).await {
            body = Some(text);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body.as_deref(), Some("served over TLS"));
    let err = https_get(&root, "b.hoge.test", tls_port).await.unwrap_err();
    assert!(format!("{err:?}").contains("NotValidForName"), "{err:?}");
    let pebble_tls_ca = fs::read_to_string(&pebble.ca_file).unwrap();
    assert!(
        https_get(&pebble_tls_ca, "a.hoge.test", tls_port)
            .await
            .is_err()
    );
    parse_manual(
        &cert.chain_pem,
        cert.key_pem.expose_secret(),
        &name,
        Timestamp::now(),
    )
    .unwrap();

    // A token nginx does not serve fails validation, with the server's reason, and is
    // withdrawn all the same.
    publisher.serve.store(false, Ordering::SeqCst);
    let err = manager
        .obtain(&[host("c.hoge.test")], ChallengeMethod::Http01)
        .await
        .unwrap_err();
    let Error::ValidationFailed { detail, .. } = &err else {
        panic!("expected a validation failure, got {err:?}");
    };
    assert!(
        detail.contains("c.hoge.test") && detail.contains("404"),
        "{detail}"
    );
    let calls = publisher.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[3].starts_with("withdraw "), "{calls:?}");
    pebble.assert_running();
}

#[tokio::test]
async fn dns01_wildcard_order_and_a_restored_account() {
    let mut pebble = Pebble::start(free_port()).await;
    let solver = pebble.solver(None);
    let (manager, secret) = CertificateManager::builder(pebble.issuer())
        .dns01(solver.clone())
        .create_account()
        .await
        .unwrap();
    assert_eq!(format!("{secret:?}"), "AccountSecret(<redacted>)");

    // The wildcard and its base share one record name and need two values at once.
    let names = [host("*.fuga.test"), host("fuga.test")];
    let started = Instant::now();
    let cert = manager
        .obtain(&names, ChallengeMethod::Dns01)
        .await
        .unwrap();
    eprintln!(
        "DNS-01 obtain (2 names) → certificate: {:?}",
        started.elapsed()
    );
    assert_eq!(cert.domains, names.clone().into());
    assert!(cert.covers(&host("wiki.fuga.test")));
    assert!(!cert.covers(&host("a.wiki.fuga.test")));
    assert_eq!(
        solver.calls(),
        [
            "set _acme-challenge.fuga.test",
            "set _acme-challenge.fuga.test",
            "remove _acme-challenge.fuga.test",
            "remove _acme-challenge.fuga.test",
        ]
    );

    // Refused before any order is made.
    let err = manager
        .obtain(&[host("*.fuga.test")], ChallengeMethod::Http01)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "*.fuga.test is a wildcard name: ACME validates wildcard names only with dns-01"
    );
    let err = manager
        .obtain(&[host("x.fuga.test")], ChallengeMethod::Http01)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoChallengeHandler { .. }), "{err:?}");

    // The stored secret brings back the same account, which can order.
    let restored = CertificateManager::builder(pebble.issuer())
        .dns01(solver.clone())
        .restore(&secret)
        .await
        .unwrap();
    assert_eq!(restored.account_id(), manager.account_id());
    restored
        .obtain(&[host("b.fuga.test")], ChallengeMethod::Dns01)
        .await
        .unwrap();

    // ...but not at another ACME server.
    let elsewhere = Issuer::Custom {
        directory_url: "https://127.0.0.1:1/dir".into(),
        trusted_root: None,
        external_account: None,
    };
    let err = CertificateManager::builder(elsewhere)
        .restore(&secret)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::AccountIssuerMismatch { .. }),
        "{err:?}"
    );
    pebble.assert_running();
}

#[tokio::test]
async fn one_order_per_name_set_only_on_the_leader_and_cleanup_when_cancelled() {
    let mut pebble = Pebble::start(free_port()).await;
    let solver = pebble.solver(Some("_acme-challenge.hang.fuga.test"));
    let leader = Arc::new(Switch(AtomicBool::new(false)));
    let (manager, _) = CertificateManager::builder(pebble.issuer())
        .dns01(solver.clone())
        .leadership(leader.clone())
        .create_account()
        .await
        .unwrap();
    let names = [host("c.fuga.test")];

    let err = manager
        .obtain(&names, ChallengeMethod::Dns01)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotLeader { .. }), "{err:?}");
    assert!(err.to_string().contains("c.fuga.test"), "{err}");
    assert!(solver.calls().is_empty());

    leader.0.store(true, Ordering::SeqCst);
    let (first, second) = tokio::join!(
        manager.obtain(&names, ChallengeMethod::Dns01),
        manager.obtain(&names, ChallengeMethod::Dns01),
    );
    let busy = match (first, second) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        other => panic!("expected one certificate and one refusal, got {other:?}"),
    };
    assert!(matches!(busy, Error::AlreadyInProgress { .. }), "{busy:?}");
    let sets = |solver: &ChalltestsrvSolver| {
        solver
            .calls()
            .iter()
            .filter(|c| c.starts_with("set "))
            .count()
    };
    assert_eq!(sets(&solver), 1, "exactly one order placed a challenge");

    // Once done, the same names can be ordered again. (Whether that order places a new
    // challenge is pebble's choice: it reuses a valid authorization once in a hundred orders
    // even with PEBBLE_AUTHZREUSE=0.)
    manager
        .obtain(&names, ChallengeMethod::Dns01)
        .await
        .unwrap();

    // An order dropped while placing its record still removes it, from a spawned task.
    let hang = [host("hang.fuga.test")];
    let cancelled = tokio::time::timeout(
        Duration::from_secs(1),
        manager.obtain(&hang, ChallengeMethod::Dns01),
    )
    .await;
    assert!(
        cancelled.is_err(),
        "the solver never returns, so the order cannot finish"
    );
    let removed = "remove _acme-challenge.hang.fuga.test".to_owned();
    for _ in 0..50 {
        if solver.calls().contains(&removed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(solver.calls().contains(&removed), "{:?}", solver.calls());
    // ...and frees its name set: a new attempt is not refused as in progress.
    let again = tokio::time::timeout(
        Duration::from_millis(500),
        manager.obtain(&hang, ChallengeMethod::Dns01),
    )
    .await;
    assert!(again.is_err(), "{again:?}");
    pebble.assert_running();
}

#[tokio::test]
async fn external_account_binding_is_required_checked_and_then_orders() {
    // pebble reads the HMAC keys as unpadded base64url, as CAs' dashboards show them.
    const KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    const WRONG: &str = "b3RoZXIta2V5LW9mLXRoZS1zYW1lLWxlbmd0aC10aGFuLXRoZS1yaWdodC1vbmU";
    let mut pebble = Pebble::requiring_eab(&[("kid-1", KEY)]).await;
    let solver = pebble.solver(None);
    let create = |eab: Option<ExternalAccountBinding>| {
        CertificateManager::builder(pebble.issuer_with(eab))
            .dns01(solver.clone())
            .create_account()
    };
    let eab = |kid: &str, key: &str| Some(ExternalAccountBinding::new(kid, key).unwrap());

    let err = create(None).await.unwrap_err();
    assert!(
        matches!(err, Error::ExternalAccountRequired { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("requires an external account binding"),
        "{err}"
    );

    // A key that is not the one issued with the key id, and a key id pebble does not
    // know: refused, naming the key id and never the key.
    for (kid, key) in [("kid-1", WRONG), ("kid-2", KEY)] {
        let err = create(eab(kid, key)).await.unwrap_err();
        let Error::ExternalAccountRejected { key_id, detail } = &err else {
            panic!("expected a refused binding for {kid}, got {err:?}");
        };
        assert_eq!(key_id, kid);
        assert!(!detail.is_empty());
        let shown = format!("{err} {err:?}");
        assert!(shown.contains(kid), "{shown}");
        assert!(
            !shown.contains(key) && !shown.contains(&key[..12]),
            "{shown}"
        );
        assert!(!err.is_retryable());
    }

    let (manager, _secret) = create(eab("kid-1", KEY)).await.unwrap();
    let names = [host("eab.fuga.test")];
    let cert = manager
        .obtain(&names, ChallengeMethod::Dns01)
        .await
        .unwrap();
    assert_eq!(cert.domains, names.into());

    // pebble 2.4 offers no renewal information: no window, not an error.
    assert_eq!(manager.renewal_info(&cert).await.unwrap(), None);
    pebble.assert_running();
}
