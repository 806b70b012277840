//! The control plane on TLS, as a user runs it: `kokoa-control serve` serves HTTPS with a
//! certificate from its own CA by default, nodes trust it by the pin `init` printed and
//! refuse any other server; `--insecure-http` and `--tls-cert`/`--tls-key` as asked; and
//! `--tls-acme`, a public certificate from pebble over HTTP-01.

mod common;

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use kokoa_agent::{Api, CaPin, Secret, pinned_client_config};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_kokoa-control");
const UA: &str = "tls-test/0";
/// The public key the test's edge enrolls with.
const KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_address() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `init --json` in `dir`: the admin token and the CA pin.
fn init(dir: &Path) -> (String, CaPin) {
    let out = Command::new(BIN)
        .args(["init", "--json", "--data-dir", dir.to_str().unwrap()])
        .env_remove("KOKOA_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        printed["admin_token"].as_str().unwrap().to_owned(),
        printed["ca_pin"].as_str().unwrap().parse().unwrap(),
    )
}

fn serve(dir: &Path, args: &[&str]) -> Running {
    Running(
        Command::new(BIN)
            .arg("serve")
            .args(["--data-dir", dir.to_str().unwrap()])
            .args(args)
            .env_remove("KOKOA_DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn serve_fails(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(BIN)
        .arg("serve")
        .args(["--data-dir", dir.to_str().unwrap()])
        .args(args)
        .env_remove("KOKOA_DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    out
}

/// `GET url` until it answers (20 s at most).
async fn answered(client: &reqwest::Client, url: &str) -> reqwest::Response {
    let started = Instant::now();
    loop {
        match client.get(url).send().await {
            Ok(response) => return response,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(20),
                "{url} did not answer: {}",
                kokoa_agent::with_causes(&e)
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST url` with `body` and the admin `token`: the answer's JSON.
async fn post(client: &reqwest::Client, url: String, token: &str, body: Value) -> Value {
    client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn pinned(pin: CaPin) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(pinned_client_config(pin))
        .build()
        .unwrap()
}

/// A TLS server with a certificate of another CA, as a machine in the middle would present:
/// it answers nothing, the handshake is all that counts.
async fn stranger() -> String {
    let acceptor = common::standin::acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = acceptor.accept(stream).await;
        }
    });
    format!("https://{address}")
}

#[tokio::test]
async fn an_edge_enrolls_by_the_pin_and_refuses_any_other_server() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let (token, pin) = init(&dir);
    let listen = free_address();
    let url = format!("https://{listen}");
    let _server = serve(&dir, &["--listen", &listen, "--public-url", &url]);
    let client = pinned(pin);
    let health = answered(&client, &format!("{url}/health")).await;
    assert_eq!(health.status(), 200);

    // The enroll command of a manual edge carries the pin, and enrolling by it works.
    let created = post(
        &client,
        format!("{url}/api/v1/edge-nodes"),
        &token,
        json!({"provider": "manual", "region": "nrt", "allow_loopback_url": true}),
    )
    .await;
    let command = created["enroll_command"].as_str().unwrap();
    assert!(
        command.ends_with(&format!(
            " kokoa-edge enroll --control-plane {url} --ca-pin {pin}"
        )),
        "{command}"
    );
    let enrollment = Secret::new(created["enrollment_token"].as_str().unwrap());
    let enrolled = Api::enroll::<String>(UA, &url, Some(pin), &enrollment, "edge", KEY)
        .await
        .unwrap();
    assert_eq!(enrolled.ca_pin, Some(pin));

    // The origin bundle's credentials.json carries it too.
    let origin = post(
        &client,
        format!("{url}/api/v1/origins"),
        &token,
        json!({"name": "home"}),
    )
    .await;
    let bundle = client
        .get(format!(
            "{url}/api/v1/origins/{}/config",
            origin["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bundle[..]));
    let credentials: Value = archive
        .entries()
        .unwrap()
        .map(Result::unwrap)
        .find(|entry| entry.path().unwrap().ends_with("credentials.json"))
        .map(|entry| serde_json::from_reader(entry).unwrap())
        .expect("credentials.json in the bundle");
    assert_eq!(credentials["ca_pin"], pin.to_string());

    // A server with another CA is refused before the token leaves the node, with the pin
    // in the message.
    let other = stranger().await;
    let token = Secret::new("kk_enr_never_sent");
    let err = Api::enroll::<String>(UA, &other, Some(pin), &token, "edge", KEY)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds no certificate with the pinned") && err.contains(&pin.to_string()),
        "{err}"
    );
    // So is this control plane when the pin is another one.
    let wrong = CaPin::of(b"another CA");
    let err = Api::enroll::<String>(UA, &url, Some(wrong), &token, "edge", KEY)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&wrong.to_string()), "{err}");
}

#[tokio::test]
async fn plain_http_and_certificate_files_are_served_as_asked() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let _ = init(&dir);

    // --insecure-http: plain HTTP, no HSTS.
    let listen = free_address();
    let server = serve(&dir, &["--listen", &listen, "--insecure-http"]);
    let plain = answered(&reqwest::Client::new(), &format!("http://{listen}/health")).await;
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("strict-transport-security").is_none());
    drop(server);

    // --tls-cert/--tls-key: that certificate, here a self-signed one pinned itself.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = parent.path().join("cp.pem");
    let key_path = parent.path().join("cp.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let listen = free_address();
    let _server = serve(
        &dir,
        &[
            "--listen",
            &listen,
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let own = answered(
        &pinned(CaPin::of(cert.der())),
        &format!("https://{listen}/health"),
    )
    .await;
    assert_eq!(own.status(), 200);

    // Contradictions are refused before anything is served, naming the setting.
    let stderr = |out: Output| String::from_utf8_lossy(&out.stderr).into_owned();
    let err = stderr(serve_fails(
        &dir,
        &[
            "--insecure-http",
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("exclude each other"), "{err}");
    let err = stderr(serve_fails(
        &dir,
        &["--public-url", "http://cp.example.com"],
    ));
    assert!(
        err.contains("\"http://cp.example.com\" is plain HTTP") && err.contains("--insecure-http"),
        "{err}"
    );
    let err = stderr(serve_fails(&dir, &["--tls-name", "bad name"]));
    assert!(err.contains("\"bad name\""), "{err}");
}

/// The events of `kind` about `subject`, read over `client`.
async fn events(client: &reqwest::Client, base: &str, token: &str, kind: &str) -> Vec<Value> {
    let answer: Value = client
        .get(format!(
            "{base}/api/v1/events?type={kind}&subject=cp.kokoa.test"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["events"].as_array().unwrap().clone()
}

/// Polls `probe` every 100 ms until it gives something, for `limit` at most.
async fn until<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_certificate_is_ordered_over_http_01_and_kept_across_restarts() {
    use common::pebble::{INSTALL, Pebble, free_port};

    // cp.kokoa.test is 127.0.0.1 for pebble, which asks PowerDNS.
    let pdns = kokoa_dns::local::LocalPowerDns::start()
        .await
        .unwrap_or_else(|e| panic!("{e}; {INSTALL}"));
    pdns.create_zone("kokoa.test").await.unwrap();
    let rrsets = json!({"rrsets": [{"name": "cp.kokoa.test.", "type": "A", "ttl": 60,
        "changetype": "REPLACE", "records": [{"content": "127.0.0.1", "disabled": false}]}]});
    reqwest::Client::new()
        .patch(format!(
            "{}/api/v1/servers/localhost/zones/kokoa.test.",
            pdns.api_url()
        ))
        .header("X-API-Key", pdns.api_key())
        .json(&rrsets)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let (token, pin) = init(&dir);
    let port = free_port();
    let listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let base = format!("https://cp.kokoa.test:{port}");
    let config = parent.path().join("control.toml");
    let write_config = |directory: &str, ca_file: Option<&Path>, http_port: u16| {
        let mut text = format!(
            "listen = \"{listen}\"\npublic_url = \"{base}\"\ntls_acme = true\n\
             acme_http_listen = \"127.0.0.1:{http_port}\"\n[acme]\ndirectory = \"{directory}\"\n"
        );
        if let Some(file) = ca_file {
            text.push_str(&format!("ca_file = \"{}\"\n", file.display()));
        }
        std::fs::write(&config, text).unwrap();
    };
    let serve_config = || serve(&dir, &["--config", config.to_str().unwrap()]);
    let own_ca = pinned(pin);
    let own_url = format!("https://{listen}");

    // The CA cannot be reached: the own CA's certificate serves, and an event says why.
    write_config(
        &format!("https://127.0.0.1:{}/dir", free_port()),
        None,
        free_port(),
    );
    let server = serve_config();
    let health = answered(&own_ca, &format!("{own_url}/health")).await;
    assert_eq!(health.status(), 200);
    let failed = until(
        "a certificate.failed event",
        Duration::from_secs(20),
        || {
            let own_ca = own_ca.clone();
            let (own_url, token) = (own_url.clone(), token.clone());
            async move {
                let found = events(&own_ca, &own_url, &token, "certificate.failed").await;
                found.into_iter().next()
            }
        },
    )
    .await;
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains("cp.kokoa.test") && message.contains("own CA keeps serving"),
        "{failed}"
    );
    drop(server);

    // With pebble: ordered, proven over HTTP-01 at the responder, served.
    let pebble = Pebble::start(pdns.dns_address()).await;
    write_config(
        &pebble.directory(),
        Some(&pebble.tls_root()),
        pebble.http_port,
    );
    let server = serve_config();
    let root = reqwest::Certificate::from_pem(pebble.issuing_root().await.as_bytes()).unwrap();
    let public = reqwest::Client::builder()
        .tls_certs_only([root])
        .resolve("cp.kokoa.test", listen)
        .build()
        .unwrap();
    let health = until("the public certificate", Duration::from_secs(60), || {
        let request = public.get(format!("{base}/health")).send();
        async move { request.await.ok() }
    })
    .await;
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("strict-transport-security"));
    let issued = events(&public, &base, &token, "certificate.issued").await;
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["data"]["control_plane"], true, "{issued:?}");

    // The responder answers only responses it holds, and sends the rest to the API.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let responder = format!("http://127.0.0.1:{}", pebble.http_port);
    let unknown = plain
        .get(format!("{responder}/.well-known/acme-challenge/unknown"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let moved = plain
        .get(format!("{responder}/ui/edges?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.headers()["location"], format!("{base}/ui/edges?x=1"));

    // A restart serves the stored certificate from the first handshake, with no new order.
    drop(server);
    let _server = serve_config();
    let started = Instant::now();
    while std::net::TcpStream::connect(listen).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "not listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = public.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let issued = events(&public, &base, &token, "certificate.issued").await;
    assert_eq!(issued.len(), 1, "{issued:?}");
}
