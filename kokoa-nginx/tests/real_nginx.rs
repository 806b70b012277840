//! Against the real nginx (`/usr/sbin/nginx`) on loopback: routing by Host, certificates by
//! SNI, 404 / 503 / redirect / ACME / health answers, safe apply and roll back.
//!
//! Requests are made with `curl` (`--resolve NAME:PORT:127.0.0.1`, so every name reaches
//! the local nginx and nothing else). Workers run as `root` (the `user` directive) so they
//! can read the test's key files, which are created with the default 0644/0600 modes.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use kokoa_core::Hostname;
use kokoa_core::Port;
use kokoa_nginx::{
    Applied, CertName, EdgeSite, Error, Layout, Listen, NginxInstance, OriginProxy, Route,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use test_ports::tcp as free_port;

const NGINX: &str = "/usr/sbin/nginx";

fn require_tools() {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} not found: install it with `apt-get install -y --no-install-recommends nginx`"
    );
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "curl not found: install it with `apt-get install -y --no-install-recommends curl`"
    );
}

fn host(name: &str) -> Hostname {
    Hostname::parse(name).unwrap()
}

/// A backend answering every request with its own name and the headers nginx sent it.
fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        // Bounded: far more than the test sends; the thread ends with the test process.
        for stream in listener.incoming().take(500).flatten() {
            let _ = answer(name, stream);
        }
    });
    addr
}

fn answer(name: &str, mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            headers.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let get = |key: &str| {
        headers
            .iter()
            .find(|(k, _)| k == key)
            .map_or("-", |(_, v)| v.as_str())
            .to_owned()
    };
    let body = format!(
        "backend={name} host={} xff={} real-ip={} proto={} upgrade={} connection={}\n",
        get("host"),
        get("x-forwarded-for"),
        get("x-real-ip"),
        get("x-forwarded-proto"),
        get("upgrade"),
        get("connection"),
    );
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A test CA and certificates it signs, written as `certs/NAME.crt` / `certs/NAME.key`.
struct Pki {
    ca_pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "Kokoa test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = dir.join("ca.pem");
        fs::write(&ca_pem, cert.pem()).unwrap();
        Self {
            ca_pem,
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, layout: &Layout, name: &CertName, common_name: &str, dns_name: &str) {
        let mut params = CertificateParams::new(vec![dns_name.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (crt, key_file) = layout.certificate_files(name);
        fs::create_dir_all(layout.certs_dir()).unwrap();
        fs::write(crt, cert.pem()).unwrap();
        fs::write(key_file, key.serialize_pem()).unwrap();
    }
}

/// Stops nginx when the test ends, also when it fails.
struct Running(NginxInstance);

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(e) = self.0.stop() {
            eprintln!("stopping nginx: {e}");
            if let Some(pid) = self.0.pid() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
}

struct Client {
    ca: PathBuf,
    http: u16,
    https: u16,
}

/// What curl saw: status code, response headers and body, and the server certificate's text.
struct Reply {
    status: u16,
    text: String,
}

impl Client {
    /// `curl` for `url` on `name`, resolved to 127.0.0.1, plus `extra` arguments. Verifies
    /// the server certificate against the test CA unless `extra` holds `-k`.
    fn get(&self, name: &str, path: &str, tls: bool, extra: &[&str]) -> Reply {
        let (scheme, port) = if tls {
            ("https", self.https)
        } else {
            ("http", self.http)
        };
        let output = Command::new("curl")
            .args(["-sS", "-i", "--max-time", "5", "--cacert"])
            .arg(&self.ca)
            .arg("--resolve")
            .arg(format!("{name}:{port}:127.0.0.1"))
            .args(["-w", "\n%{certs}\nstatus=%{http_code}"])
            .args(extra)
            .arg(format!("{scheme}://{name}:{port}{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "curl {scheme}://{name}:{port}{path} failed: {}{text}",
            String::from_utf8_lossy(&output.stderr)
        );
        let status = text
            .rsplit_once("status=")
            .unwrap()
            .1
            .trim()
            .parse()
            .unwrap();
        Reply { status, text }
    }

    /// Like `get` over HTTPS, repeated (at most 50 times, 50 ms apart) until `done` holds:
    /// nginx reloads asynchronously.
    fn eventually(&self, name: &str, done: impl Fn(&Reply) -> bool) -> Reply {
        let start = Instant::now();
        for _ in 0..50 {
            let reply = self.get(name, "/", true, &[]);
            if done(&reply) {
                return reply;
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!("{name}: no expected answer after {:?}", start.elapsed());
    }
}

fn site(a: SocketAddr, b: SocketAddr, http: u16, https: u16) -> EdgeSite {
    let app = host("app.kokoa.test");
    let wiki = host("wiki.kokoa.test");
    let mut down = Route::new(host("down.kokoa.test"), a);
    down.available = false;
    // Nothing listens on port 9 (discard) of 127.0.0.1 here: the origin "does not answer".
    let dead = Route::new(host("dead.kokoa.test"), ([127, 0, 0, 1], 9).into());
    let mut site = EdgeSite::new(vec![
        Route::new(app.clone(), a).with_certificate(CertName::for_hostname(&app)),
        Route::new(wiki.clone(), b).with_certificate(CertName::for_hostname(&wiki)),
        down,
        dead,
    ]);
    site.listen = Listen {
        address: Some([127, 0, 0, 1].into()),
        http_port: http,
        https_port: https,
    };
    site
}

#[test]
fn serves_routes_certificates_and_errors() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("edge"))
        .unwrap()
        .with_worker_user("root")
        .unwrap();
    let pki = Pki::new(dir.path());
    for name in ["app.kokoa.test", "wiki.kokoa.test"] {
        pki.issue(&layout, &CertName::parse(name).unwrap(), name, name);
    }
    pki.issue(
        &layout,
        &CertName::default(),
        "kokoa fallback",
        "fallback.invalid",
    );

    let (a, b) = (backend("a"), backend("b"));
    let client = Client {
        ca: pki.ca_pem,
        http: free_port(),
        https: free_port(),
    };
    let mut site = site(a, b, client.http, client.https);
    let nginx = NginxInstance::new(NGINX, layout.clone());
    let first = nginx.apply(&site).unwrap();
    assert!(
        matches!(
            first,
            Applied::Updated {
                reloaded: false,
                ..
            }
        ),
        "{first:?}"
    );
    nginx.start().unwrap();
    let nginx = Running(nginx);

    // Each hostname reaches its own backend, with its own certificate (curl verifies it
    // against the test CA and the name), and the proxy headers.
    let app = client.get(
        "app.kokoa.test",
        "/",
        true,
        &["-H", "X-Forwarded-For: 203.0.113.9"],
    );
    assert_eq!(app.status, 200, "{}", app.text);
    assert!(
        app.text
            .contains("backend=a host=app.kokoa.test xff=127.0.0.1 real-ip=127.0.0.1 proto=https"),
        "{}",
        app.text
    );
    assert!(
        app.text.contains("Subject:CN = app.kokoa.test"),
        "{}",
        app.text
    );
    let wiki = client.get("wiki.kokoa.test", "/", true, &[]);
    assert!(
        wiki.text.contains("backend=b host=wiki.kokoa.test"),
        "{}",
        wiki.text
    );
    assert!(
        wiki.text.contains("Subject:CN = wiki.kokoa.test"),
        "{}",
        wiki.text
    );

    // WebSocket upgrade headers reach the backend.
    let ws = client.get(
        "app.kokoa.test",
        "/ws",
        true,
        &[
            "--http1.1",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Connection: Upgrade",
        ],
    );
    assert!(
        ws.text.contains("upgrade=websocket connection=upgrade"),
        "{}",
        ws.text
    );

    // Unknown SNI and no SNI at all get a clean handshake with the fallback certificate;
    // an unknown Host gets 404.
    let unknown = client.get("nope.kokoa.test", "/", true, &["-k"]);
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert!(
        unknown.text.contains("Subject:CN = kokoa fallback"),
        "{}",
        unknown.text
    );
    let no_sni = client.get("127.0.0.1", "/", true, &["-k"]);
    assert!(
        no_sni.text.contains("Subject:CN = kokoa fallback"),
        "{}",
        no_sni.text
    );

    // An unavailable route answers 503 with Kokoa's page.
    let down = client.get("down.kokoa.test", "/", true, &["-k"]);
    assert_eq!(down.status, 503, "{}", down.text);
    assert!(
        down.text.contains("content-type: text/html"),
        "{}",
        down.text
    );
    assert!(
        down.text.contains("<small>Kokoa Proxy</small>"),
        "{}",
        down.text
    );

    // Port 80: ACME challenge files are served, everything else goes to HTTPS.
    fs::write(
        layout.acme_challenge_dir().join("tok-123"),
        "tok-123.thumbprint",
    )
    .unwrap();
    let challenge = || {
        client.get(
            "app.kokoa.test",
            "/.well-known/acme-challenge/tok-123",
            false,
            &[],
        )
    };
    let answer = challenge();
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(
        answer.text.contains("\r\n\r\ntok-123.thumbprint"),
        "{}",
        answer.text
    );
    let redirect = client.get("app.kokoa.test", "/x?y=1", false, &[]);
    assert_eq!(redirect.status, 301, "{}", redirect.text);
    let location = format!(
        "location: https://app.kokoa.test:{}/x?y=1\r\n",
        client.https
    );
    assert!(
        redirect.text.to_lowercase().contains(&location),
        "{}",
        redirect.text
    );

    // A route whose origin does not answer gets the same page, not nginx's 502.
    let dead = client.get("dead.kokoa.test", "/", true, &["-k"]);
    assert_eq!(dead.status, 503, "{}", dead.text);
    assert!(
        dead.text.contains("<small>Kokoa Proxy</small>"),
        "{}",
        dead.text
    );

    // A routed hostname's /health is its origin's (the end-to-end check), with the same
    // 503 page when the route is down.
    let through = client.get("app.kokoa.test", "/health", true, &[]);
    assert_eq!(through.status, 200, "{}", through.text);
    assert!(
        through.text.contains("backend=a host=app.kokoa.test"),
        "{}",
        through.text
    );
    let down_health = client.get("down.kokoa.test", "/health", true, &["-k"]);
    assert_eq!(down_health.status, 503, "{}", down_health.text);

    // The edge's own /health on both ports for any other name; its body is set without a
    // reload.
    let health = client.get("edge.example", "/health", false, &[]);
    assert_eq!(health.status, 200);
    assert!(health.text.contains("\r\n\r\nok\n"), "{}", health.text);
    nginx.0.set_health_body(b"edge-1 ready\n").unwrap();
    let health = client.get("edge.example", "/health", true, &["-k"]);
    assert!(
        health.text.contains("\r\n\r\nedge-1 ready\n"),
        "{}",
        health.text
    );

    // The same site again changes nothing; a changed one is served after the reload.
    let hash = match nginx.0.apply(&site).unwrap() {
        Applied::Unchanged { hash } => hash,
        other => panic!("expected Unchanged, got {other:?}"),
    };
    site.routes[1].backend = a;
    let applied = nginx.0.apply(&site).unwrap();
    assert!(matches!(&applied, Applied::Updated { reloaded: true, hash: h } if *h != hash));
    client.eventually("wiki.kokoa.test", |r| {
        r.text.contains("backend=a host=wiki")
    });

    // A candidate nginx rejects is not activated: the error carries nginx's message and the
    // previous configuration keeps serving.
    let live = fs::read_to_string(layout.main_config()).unwrap();
    let bad_layout = layout
        .clone()
        .with_worker_user("kokoa-no-such-user")
        .unwrap();
    let err = NginxInstance::new(NGINX, bad_layout)
        .apply(&site)
        .unwrap_err();
    assert!(err.is_config_rejected(), "{err}");
    assert!(err.to_string().contains("kokoa-no-such-user"), "{err}");
    assert_eq!(fs::read_to_string(layout.main_config()).unwrap(), live);
    assert!(!layout.prefix().join("nginx.conf.new").exists());
    let still = client.get("app.kokoa.test", "/", true, &[]);
    assert!(
        still.text.contains("backend=a host=app.kokoa.test"),
        "{}",
        still.text
    );

    // A certificate without files is refused before nginx is asked.
    let mut missing = site.clone();
    missing.routes[0].certificate = Some(CertName::parse("not-issued").unwrap());
    match nginx.0.apply(&missing) {
        Err(Error::MissingCertificate { name, path }) => {
            assert_eq!(name.as_str(), "not-issued");
            assert!(path.ends_with("certs/not-issued.crt"), "{path:?}");
        }
        other => panic!("expected MissingCertificate, got {other:?}"),
    }
    assert!(matches!(
        nginx.0.apply(&site).unwrap(),
        Applied::Unchanged { .. }
    ));

    // Rate limits: with 1 request/s and a burst of 1, a quick series is cut with 429.
    site.rate_limits.rate_per_second = 1;
    site.rate_limits.burst = 1;
    nginx.0.apply(&site).unwrap();
    // The reload is asynchronous: a few series at most until the new limits bite.
    let limited = (0..20).any(|_| {
        (0..5)
            .map(|_| client.get("app.kokoa.test", "/", true, &[]).status)
            .any(|s| s == 429)
    });
    assert!(limited, "no request was limited");
    // A certificate authority validates many names at once, several times each and from
    // few addresses; a 429 would fail the order. The challenge answers are never limited,
    // nor the edge's own /health (the control planes' checks).
    for _ in 0..10 {
        let answer = challenge();
        assert_eq!(answer.status, 200, "{}", answer.text);
        let health = client.get("edge.example", "/health", false, &[]);
        assert_eq!(health.status, 200, "{}", health.text);
    }
}

/// nginx builds large maps without "could not build optimal map_hash" warnings, and a large
/// candidate is tested and activated quickly.
#[test]
fn large_maps_build_cleanly() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("edge")).unwrap();
    let pki = Pki::new(dir.path());
    pki.issue(
        &layout,
        &CertName::default(),
        "kokoa fallback",
        "fallback.invalid",
    );
    let long = "l".repeat(60);
    let routes = (0..5000)
        .map(|i| {
            let name = match i % 3 {
                0 => format!("s{i}.kokoa.test"),
                1 => format!("*.w{i}.{long}.kokoa.test"),
                _ => format!("{long}.{long}.{long}.n{i}.test"),
            };
            Route::new(host(&name), SocketAddr::from(([10, 0, 0, 1], 8000)))
        })
        .collect();
    let site = EdgeSite::new(routes);
    let nginx = NginxInstance::new(NGINX, layout.clone());
    let start = Instant::now();
    nginx.apply(&site).unwrap();
    eprintln!(
        "apply of 5000 routes (render + nginx -t + swap): {:?}",
        start.elapsed()
    );

    let output = Command::new(NGINX)
        .arg("-t")
        .arg("-p")
        .arg(layout.prefix())
        .arg("-c")
        .arg(layout.main_config())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("[warn]"), "{stderr}");
}

/// When the reload itself fails, the previous files are put back and the next apply of the
/// previous site is a no-op. nginx is run through a wrapper that refuses `-s reload`.
#[test]
fn failed_reload_restores_previous_files() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("nginx-no-reload");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in *reload*) echo 'reload refused by test' >&2; exit 1;; esac\n\
             exec {NGINX} \"$@\"\n"
        ),
    )
    .unwrap();
    let chmod = Command::new("chmod")
        .arg("755")
        .arg(&wrapper)
        .status()
        .unwrap();
    assert!(chmod.success());

    let (nginx, layout, client, first) = serving_without_certificates(dir.path(), &wrapper);
    let live_site = fs::read_to_string(layout.site_config()).unwrap();
    let live_main = fs::read_to_string(layout.main_config()).unwrap();

    let mut second = first.clone();
    second.routes.truncate(1);
    match nginx.0.apply(&second) {
        Err(Error::Command { command, message }) => {
            assert!(command.contains("-s reload"), "{command}");
            assert_eq!(message, "reload refused by test");
        }
        other => panic!("expected a reload error, got {other:?}"),
    }
    let restored = fs::read_to_string(layout.site_config()).unwrap() == live_site
        && fs::read_to_string(layout.main_config()).unwrap() == live_main;
    assert!(restored, "the live files were not restored");
    let leftovers: Vec<_> = fs::read_dir(layout.prefix())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".new") || n.ends_with(".old") || n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(matches!(
        nginx.0.apply(&first).unwrap(),
        Applied::Unchanged { .. }
    ));
    assert_first_site_serves(&client);
}

/// nginx (run as `binary`) serving [`site`] with every route on the fallback certificate,
/// in `dir`: the instance, its layout, a client for its ports and the site.
fn serving_without_certificates(
    dir: &Path,
    binary: impl AsRef<Path>,
) -> (Running, Layout, Client, EdgeSite) {
    let layout = Layout::new(dir.join("edge")).unwrap();
    Pki::new(dir).issue(
        &layout,
        &CertName::default(),
        "kokoa fallback",
        "fallback.invalid",
    );
    let a = backend("a");
    let client = Client {
        ca: dir.join("ca.pem"),
        http: free_port(),
        https: free_port(),
    };
    let mut first = site(a, a, client.http, client.https);
    for route in &mut first.routes {
        route.certificate = None;
    }
    let nginx = NginxInstance::new(binary.as_ref(), layout.clone());
    nginx.apply(&first).unwrap();
    nginx.start().unwrap();
    (Running(nginx), layout, client, first)
}

/// The site of [`serving_without_certificates`] still answers from its backend.
fn assert_first_site_serves(client: &Client) {
    let wiki = client.get("wiki.kokoa.test", "/", true, &["-k"]);
    assert!(
        wiki.text.contains("backend=a host=wiki.kokoa.test"),
        "{}",
        wiki.text
    );
}

/// A configuration that passes `nginx -t` but that the master cannot load (its new port is
/// taken by another program) is reported as failed, the live files are put back, and the
/// previous configuration keeps serving.
#[test]
fn a_reload_the_master_cannot_take_keeps_the_previous_configuration() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let (nginx, layout, client, first) = serving_without_certificates(dir.path(), NGINX);
    let live_site = fs::read_to_string(layout.site_config()).unwrap();

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut second = first;
    second.listen.http_port = taken.local_addr().unwrap().port();
    match nginx.0.apply(&second) {
        Err(Error::Timeout { what, .. }) => {
            assert!(what.contains("new configuration"), "{what}");
        }
        other => panic!("expected the reload to be reported as failed, got {other:?}"),
    }
    assert_eq!(fs::read_to_string(layout.site_config()).unwrap(), live_site);
    assert_first_site_serves(&client);
    drop(taken);
}

/// A backend that keeps connections open (HTTP/1.1 keep-alive) and counts the connections
/// it accepted. A request with `Upgrade` gets `101 Switching Protocols`, then one line
/// naming the `Connection` header it saw, and the connection is closed.
fn keepalive_backend() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming().take(100).flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || serve_keepalive(stream));
        }
    });
    (addr, accepted)
}

fn serve_keepalive(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    // Bounded: far more requests than a test sends on one connection.
    for _ in 0..100 {
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((key, value)) = line.split_once(':') {
                headers.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let get = |key: &str| {
            headers
                .iter()
                .find(|(k, _)| k == key)
                .map_or("-", |(_, v)| v.as_str())
                .to_owned()
        };
        if get("upgrade") != "-" {
            write!(
                stream,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {}\r\nConnection: Upgrade\r\n\r\n\
                 upgraded connection={}\n",
                get("upgrade"),
                get("connection")
            )?;
            return Ok(());
        }
        let body = format!("keepalive connection={}\n", get("connection"));
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
    }
    Ok(())
}

/// Backend connections are kept open and reused (upstream `keepalive`), WebSocket upgrades
/// still pass with `Connection: upgrade`, and every hostname's handshake presents its own
/// certificate, loaded at reload.
#[test]
fn keeps_backend_connections_and_passes_upgrades() {
    use std::sync::atomic::Ordering;
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("edge"))
        .unwrap()
        .with_worker_user("root")
        .unwrap();
    let pki = Pki::new(dir.path());
    let names = ["app.kokoa.test", "wiki.kokoa.test", "shop.kokoa.test"];
    for name in names {
        pki.issue(&layout, &CertName::parse(name).unwrap(), name, name);
    }
    pki.issue(
        &layout,
        &CertName::default(),
        "kokoa fallback",
        "fallback.invalid",
    );
    let (backend, accepted) = keepalive_backend();
    let client = Client {
        ca: pki.ca_pem.clone(),
        http: free_port(),
        https: free_port(),
    };
    let mut site = EdgeSite::new(
        names
            .iter()
            .map(|n| Route::new(host(n), backend).with_certificate(CertName::parse(n).unwrap()))
            .collect(),
    );
    site.listen = Listen {
        address: Some([127, 0, 0, 1].into()),
        http_port: client.http,
        https_port: client.https,
    };
    let nginx = NginxInstance::new(NGINX, layout.clone());
    nginx.apply(&site).unwrap();
    nginx.start().unwrap();
    let _nginx = Running(nginx);

    // Two requests on one client connection: one backend connection, with an empty
    // `Connection` header (not `close`).
    let url = format!("https://app.kokoa.test:{}/", client.https);
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(&client.ca)
        .arg("--resolve")
        .arg(format!("app.kokoa.test:{}:127.0.0.1", client.https))
        .args([&url, &format!("{url}again")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}{:?}", output.stderr);
    assert_eq!(
        text.matches("keepalive connection=-\n").count(),
        2,
        "{text}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "backend connections");

    // A WebSocket-style upgrade reaches the backend with `Connection: upgrade` and the
    // 101 comes back through.
    let request = "GET /ws HTTP/1.1\r\nHost: app.kokoa.test\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let upgraded = s_client(client.https, Some("app.kokoa.test"), request.as_bytes());
    assert!(
        upgraded.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{upgraded}"
    );
    assert!(
        upgraded.contains("upgraded connection=upgrade\n"),
        "{upgraded}"
    );

    // Each name's handshake presents its own certificate; an unknown name and no SNI the
    // fallback one.
    for name in names {
        let reply = client.get(name, "/", true, &[]);
        assert!(
            reply.text.contains(&format!("Subject:CN = {name}\n")),
            "{}",
            reply.text
        );
    }
    let subject = |sni: Option<&str>| {
        let out = s_client(client.https, sni, b"");
        out.lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or_else(|| panic!("no subject in {out}"))
            .to_owned()
    };
    assert_eq!(
        subject(Some("wiki.kokoa.test")),
        "subject=CN = wiki.kokoa.test"
    );
    assert_eq!(
        subject(Some("nope.kokoa.test")),
        "subject=CN = kokoa fallback"
    );
    assert_eq!(subject(None), "subject=CN = kokoa fallback");

    // A renewed certificate under the same name is loaded by the next apply.
    pki.issue(
        &layout,
        &CertName::parse("wiki.kokoa.test").unwrap(),
        "wiki renewed",
        "wiki.kokoa.test",
    );
    let renewed = _nginx.0.apply(&site).unwrap();
    assert!(
        matches!(renewed, Applied::Updated { reloaded: true, .. }),
        "{renewed:?}"
    );
    let start = Instant::now();
    while subject(Some("wiki.kokoa.test")) != "subject=CN = wiki renewed" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "renewal not served"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// `openssl s_client` to 127.0.0.1:`port` with `sni` (none: `-noservername`). With an
/// `input`, sends it and returns the server's answer until it closes (`-quiet`); without,
/// returns the handshake report (`subject=...`).
fn s_client(port: u16, sni: Option<&str>, input: &[u8]) -> String {
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"));
    if !input.is_empty() {
        command.arg("-quiet");
    }
    match sni {
        Some(name) => command.args(["-servername", name]),
        None => command.arg("-noservername"),
    };
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl not found: apt-get install -y --no-install-recommends openssl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    // `-quiet` reads until the server closes; the backend closes after its answer.
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The origin's local proxy, served by nginx on a tunnel address of its own (127.42.0.1
/// here): a route's hostname reaches its service on 127.0.0.1 with the same port, another
/// hostname gets 404, and port 80 answers the health check.
#[test]
fn origin_proxy_forwards_each_route_to_its_loopback_service() {
    require_tools();
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path().join("origin")).unwrap();
    let service = backend("service");
    let port = Port::new(service.port()).unwrap();
    let proxy = OriginProxy::new([127, 42, 0, 1].into(), [(host("app.kokoa.test"), port)]);
    fs::create_dir_all(layout.prefix()).unwrap();
    fs::write(layout.site_config(), proxy.render()).unwrap();
    fs::write(
        layout.main_config(),
        layout.render_main(&layout.site_config()).unwrap(),
    )
    .unwrap();
    let nginx = NginxInstance::new(NGINX, layout);
    nginx.start().unwrap();
    let _running = Running(nginx);

    let get = |name: &str, port: u16, path: &str| {
        let output = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "-w",
                "\nstatus=%{http_code}",
                "-H",
            ])
            .arg(format!("Host: {name}"))
            .arg(format!("http://127.42.0.1:{port}{path}"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "curl {name}:{port}{path}: {output:?}"
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let routed = get("app.kokoa.test", port.get(), "/");
    assert!(
        routed.contains("backend=service host=app.kokoa.test") && routed.ends_with("status=200"),
        "{routed}"
    );
    let unknown = get("other.kokoa.test", port.get(), "/");
    assert!(unknown.ends_with("status=404"), "{unknown}");
    let health = get("127.42.0.1", 80, "/health");
    assert_eq!(
        health, "ok\n\nstatus=200",
        "the body, then curl's status line"
    );
}
