//! Notification sinks against local receivers: an HTTP server checking what a webhook
//! receiver and Slack would get, and a small SMTP server written here (plain and
//! STARTTLS, AUTH PLAIN and LOGIN) checking envelope, headers and body.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use kokoa_core::Timestamp;
use kokoa_notify::{
    DELIVERY_HEADER, DeliveryOptions, EVENT_HEADER, EmailConfig, EmailSink, Filter, Notification,
    Notifier, NotifyError, NotifySettings, Route, SIGNATURE_HEADER, Severity, Sink, SmtpTls,
    signature,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

/// Fast retries so that the tests take milliseconds.
const FAST: DeliveryOptions = DeliveryOptions {
    queue_capacity: 16,
    attempt_timeout: Duration::from_secs(2),
    max_attempts: 3,
    first_retry: Duration::from_millis(20),
    max_retry: Duration::from_millis(100),
};

/// Long enough for every delivery here; shutdown returns as soon as they are done.
const GRACE: Duration = Duration::from_secs(10);

fn notification(id: i64, kind: &str, severity: Severity) -> Notification {
    Notification {
        id,
        kind: kind.to_owned(),
        severity,
        subject: Some("edge-1".into()),
        message: "Edge edge-1 failed 3 health checks in a row".into(),
        data: serde_json::json!({ "edge_node_id": "edge-1", "failure_count": 3 }),
        created_at: Timestamp::parse_rfc3339("2025-06-01T12:00:00Z").unwrap(),
    }
}

fn settings(toml_text: &str) -> NotifySettings {
    let mut settings: NotifySettings = toml::from_str(toml_text).unwrap();
    settings.delivery = FAST;
    settings
}

fn notifier(toml_text: &str) -> Notifier {
    Notifier::from_settings(&settings(toml_text), reqwest::Client::new()).unwrap()
}

#[tokio::test]
async fn the_webhook_gets_signed_json_with_its_headers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks/kokoa"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let notifier = notifier(&format!(
        r#"[[sinks]]
        kind = "webhook"
        url = "{}/hooks/kokoa"
        secret = "s3cr3t-shared"
        headers = {{ "Authorization" = "Bearer receiver-token", "X-Team" = "infra" }}"#,
        server.uri()
    ));
    let sent = notification(42, "edge_node_unhealthy", Severity::Critical);
    assert_eq!(notifier.notify(sent.clone()), 1);
    assert!(notifier.shutdown(GRACE).await);
    assert_eq!(notifier.stats().delivered, 1);

    let requests = server.received_requests().await.unwrap();
    let request = &requests[0];
    let header = |name: &str| request.headers.get(name).unwrap().to_str().unwrap();
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header(EVENT_HEADER), "edge_node_unhealthy");
    assert_eq!(header(DELIVERY_HEADER), "42");
    assert_eq!(header("authorization"), "Bearer receiver-token");
    assert_eq!(header("x-team"), "infra");
    // The receiver recomputes the HMAC over the raw body with the shared secret.
    assert_eq!(
        header(SIGNATURE_HEADER),
        signature(b"s3cr3t-shared", &request.body)
    );
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "id": 42,
            "kind": "edge_node_unhealthy",
            "severity": "critical",
            "subject": "edge-1",
            "message": "Edge edge-1 failed 3 health checks in a row",
            "data": { "edge_node_id": "edge-1", "failure_count": 3 },
            "created_at": "2025-06-01T12:00:00Z",
        })
    );
    assert_eq!(
        serde_json::from_slice::<Notification>(&request.body).unwrap(),
        sent
    );
}

#[tokio::test]
async fn slack_gets_one_readable_line() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/T000/B000/XXXXXXXX"))
        // What Slack answers to a good post.
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(1)
        .mount(&server)
        .await;
    let notifier = notifier(&format!(
        "[[sinks]]\nkind = \"slack\"\nurl = \"{}/services/T000/B000/XXXXXXXX\"",
        server.uri()
    ));
    let mut sent = notification(1, "edge_node_unhealthy", Severity::Critical);
    sent.message = "Edge edge-1 <10.0.1.11> is down & out".into();
    notifier.notify(sent);
    assert!(notifier.shutdown(GRACE).await);

    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests[0].headers.get("content-type").unwrap(),
        "application/json"
    );
    let body: serde_json::Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "text": ":rotating_light: [critical] edge_node_unhealthy edge-1: \
                     Edge edge-1 &lt;10.0.1.11&gt; is down &amp; out"
        })
    );
}

#[tokio::test]
async fn server_errors_are_retried_client_errors_are_not() {
    let server = MockServer::start().await;
    // /flaky fails once with 500, then takes it.
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(500).set_body_string("try again"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    // /refuses answers 400: retrying would not help.
    Mock::given(path("/refuses"))
        .respond_with(ResponseTemplate::new(400).set_body_string("invalid_payload"))
        .expect(1)
        .mount(&server)
        .await;
    // /down always fails: three attempts, then given up.
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount(&server)
        .await;
    // /slow answers after the attempt timeout, then fast.
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let sinks: String = ["flaky", "refuses", "down", "slow"]
        .iter()
        .map(|p| {
            format!(
                "[[sinks]]\nkind = \"webhook\"\nurl = \"{}/{p}\"\n",
                server.uri()
            )
        })
        .collect();
    let mut options = settings(&sinks);
    options.delivery.attempt_timeout = Duration::from_millis(500);
    let notifier = Notifier::from_settings(&options, reqwest::Client::new()).unwrap();

    let started = Instant::now();
    assert_eq!(
        notifier.notify(notification(1, "edge.ready", Severity::Info)),
        4
    );
    assert!(notifier.shutdown(GRACE).await);
    eprintln!(
        "4 sinks, 1 retry each + 2 for /down: {:?}",
        started.elapsed()
    );
    assert_eq!(notifier.stats().delivered, 2, "{:?}", notifier.stats());
    assert_eq!(notifier.stats().failed, 2, "{:?}", notifier.stats());
    server.verify().await;
}

#[tokio::test]
async fn filters_choose_the_sinks() {
    let server = MockServer::start().await;
    for p in ["/edges", "/critical", "/all"] {
        Mock::given(path(p))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
    }
    let uri = server.uri();
    let notifier = notifier(&format!(
        r#"[[sinks]]
        kind = "webhook"
        url = "{uri}/edges"
        events = ["edge.*"]

        [[sinks]]
        kind = "webhook"
        url = "{uri}/critical"
        events = ["edge_node_unhealthy", "dns.*"]
        min_severity = "critical"

        [[sinks]]
        kind = "webhook"
        url = "{uri}/all""#
    ));
    let sent = [
        (1, "edge.provisioned", Severity::Info, 2),
        (2, "edge.ready", Severity::Info, 2),
        (3, "edge_node_unhealthy", Severity::Critical, 2),
        (4, "edge_node_unhealthy", Severity::Warning, 1),
        (5, "dns.record.added", Severity::Info, 1),
        (6, "dns.record.deleted", Severity::Critical, 2),
    ];
    for (id, kind, severity, sinks) in sent {
        assert_eq!(
            notifier.notify(notification(id, kind, severity)),
            sinks,
            "{kind}"
        );
    }
    assert!(notifier.shutdown(GRACE).await);

    let mut got: Vec<(String, i64)> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let n: Notification = serde_json::from_slice(&r.body).unwrap();
            (r.url.path().to_owned(), n.id)
        })
        .collect();
    got.sort();
    let expected: Vec<(String, i64)> = [
        ("/all", 1),
        ("/all", 2),
        ("/all", 3),
        ("/all", 4),
        ("/all", 5),
        ("/all", 6),
        ("/critical", 3),
        ("/critical", 6),
        ("/edges", 1),
        ("/edges", 2),
    ]
    .iter()
    .map(|(p, id)| (p.to_string(), *id))
    .collect();
    assert_eq!(got, expected);
}

/// A sink that waits on `gate` for each delivery and records the ids it got.
#[derive(Debug, Default)]
struct Gated {
    gate: Notify,
    started: Notify,
    got: Mutex<Vec<i64>>,
}

#[async_trait]
impl Sink for Gated {
    fn name(&self) -> &str {
        "gated"
    }

    async fn deliver(&self, n: &Notification) -> Result<(), NotifyError> {
        self.started.notify_one();
        self.gate.notified().await;
        self.got.lock().unwrap().push(n.id);
        Ok(())
    }
}

#[tokio::test]
async fn a_full_queue_drops_without_blocking_and_shutdown_delivers_what_is_queued() {
    let sink = Arc::new(Gated::default());
    let options = DeliveryOptions {
        queue_capacity: 2,
        attempt_timeout: Duration::from_secs(30),
        ..FAST
    };
    let route = Route {
        sink: sink.clone(),
        filter: Filter::default(),
    };
    let notifier = Notifier::new(vec![route], options);
    assert_eq!(
        notifier.notify(notification(1, "edge.ready", Severity::Info)),
        1
    );
    // The first is being delivered (and hangs); two fit in the queue; the rest are dropped.
    tokio::time::timeout(Duration::from_secs(5), sink.started.notified())
        .await
        .unwrap();
    let started = Instant::now();
    let accepted: Vec<usize> = (2..=5)
        .map(|id| notifier.notify(notification(id, "edge.ready", Severity::Info)))
        .collect();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(50),
        "notify blocked for {took:?}"
    );
    assert_eq!(accepted, [1, 1, 0, 0]);
    assert_eq!(notifier.stats().dropped, 2);

    // Shutdown lets the queued ones through...
    let stop = tokio::spawn({
        let notifier = notifier.clone();
        async move { notifier.shutdown(GRACE).await }
    });
    // ...and takes no more.
    for queued in [true, true, false] {
        sink.gate.notify_one();
        if queued {
            tokio::time::timeout(Duration::from_secs(5), sink.started.notified())
                .await
                .unwrap();
        }
    }
    assert!(stop.await.unwrap());
    assert_eq!(*sink.got.lock().unwrap(), [1, 2, 3]);
    assert_eq!(
        notifier.notify(notification(9, "edge.ready", Severity::Info)),
        0
    );
    assert_eq!(notifier.stats().delivered, 3);
}

#[tokio::test]
async fn shutdown_gives_up_on_a_sink_that_hangs_after_the_grace_period() {
    let sink = Arc::new(Gated::default());
    let route = Route {
        sink: sink.clone(),
        filter: Filter::default(),
    };
    let notifier = Notifier::new(vec![route], FAST);
    notifier.notify(notification(1, "edge.ready", Severity::Info));
    let started = Instant::now();
    assert!(!notifier.shutdown(Duration::from_millis(200)).await);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

// ---- SMTP ----

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the SMTP server received in one transaction.
#[derive(Debug, Clone, Default)]
struct Mail {
    tls: bool,
    auth: Option<(String, String, String)>,
    from: String,
    to: Vec<String>,
    data: String,
}

/// How the SMTP server behaves.
#[derive(Clone)]
struct SmtpBehaviour {
    /// The mechanisms `EHLO` offers, e.g. "PLAIN LOGIN".
    auth: &'static str,
    /// Offer and accept STARTTLS with this acceptor.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Speak TLS from the first byte, with this acceptor.
    implicit_tls: Option<tokio_rustls::TlsAcceptor>,
    /// Replies to `RCPT TO`, first to last, then "250 OK".
    rcpt_replies: Arc<Mutex<Vec<&'static str>>>,
}

struct SmtpServer {
    port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
    connections: Arc<Mutex<u32>>,
}

const USER: &str = "kokoa@example.com";
const PASSWORD: &str = "pa55 w0rd";

impl SmtpServer {
    async fn start(behaviour: SmtpBehaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (m, c) = (mails.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *c.lock().unwrap() += 1;
                let (m, behaviour) = (m.clone(), behaviour.clone());
                tokio::spawn(async move {
                    if let Err(e) = session(stream, behaviour, m).await {
                        eprintln!("SMTP session ended: {e}");
                    }
                });
            }
        });
        Self {
            port,
            mails,
            connections,
        }
    }

    fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

async fn read_line(io: &mut Box<dyn Io>) -> std::io::Result<String> {
    let mut line = Vec::new();
    // Bounded: a line is at most 64 KiB here.
    while line.len() < 65536 {
        let byte = io.read_u8().await?;
        line.push(byte);
        if line.ends_with(b"\r\n") {
            line.truncate(line.len() - 2);
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
    }
    Err(std::io::Error::other("line too long"))
}

async fn reply(io: &mut Box<dyn Io>, text: &str) -> std::io::Result<()> {
    io.write_all(format!("{text}\r\n").as_bytes()).await?;
    io.flush().await
}

fn b64(text: &str) -> String {
    String::from_utf8(B64.decode(text.trim()).unwrap()).unwrap()
}

/// The address inside `<...>` of `MAIL FROM:<a> BODY=8BITMIME`.
fn address(arg: &str) -> String {
    let start = arg.find('<').unwrap() + 1;
    let end = arg.find('>').unwrap();
    arg[start..end].to_owned()
}

async fn session(
    stream: TcpStream,
    behaviour: SmtpBehaviour,
    mails: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let mut io: Box<dyn Io> = Box::new(stream);
    let mut mail = Mail::default();
    if let Some(acceptor) = &behaviour.implicit_tls {
        io = Box::new(acceptor.accept(io).await?);
        mail.tls = true;
    }
    reply(&mut io, "220 test.invalid ESMTP ready").await?;
    loop {
        let line = read_line(&mut io).await?;
        let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                let starttls = if behaviour.tls.is_some() && !mail.tls {
                    "250-STARTTLS\r\n"
                } else {
                    ""
                };
                let text = format!(
                    "250-test.invalid\r\n{starttls}250-AUTH {}\r\n250 8BITMIME",
                    behaviour.auth
                );
                reply(&mut io, &text).await?;
            }
            "STARTTLS" => {
                reply(&mut io, "220 2.0.0 go ahead").await?;
                let acceptor = behaviour.tls.clone().unwrap();
                io = Box::new(acceptor.accept(io).await?);
                mail.tls = true;
            }
            "AUTH" => {
                let mut parts = arg.split(' ');
                let mechanism = parts.next().unwrap_or_default().to_owned();
                let (user, password) = match mechanism.as_str() {
                    "PLAIN" => {
                        let response = match parts.next() {
                            Some(initial) => initial.to_owned(),
                            None => {
                                reply(&mut io, "334 ").await?;
                                read_line(&mut io).await?
                            }
                        };
                        let decoded = b64(&response);
                        let fields: Vec<&str> = decoded.split('\0').collect();
                        (fields[1].to_owned(), fields[2].to_owned())
                    }
                    "LOGIN" => {
                        reply(&mut io, "334 VXNlcm5hbWU6").await?;
                        let user = b64(&read_line(&mut io).await?);
                        reply(&mut io, "334 UGFzc3dvcmQ6").await?;
                        (user, b64(&read_line(&mut io).await?))
                    }
                    _ => {
                        reply(&mut io, "504 5.5.4 unknown mechanism").await?;
                        continue;
                    }
                };
                let ok = user == USER && password == PASSWORD;
                mail.auth = Some((mechanism, user, password));
                let answer = if ok {
                    "235 2.7.0 Authentication successful"
                } else {
                    "535 5.7.8 Authentication credentials invalid"
                };
                reply(&mut io, answer).await?;
            }
            "MAIL" => {
                mail.from = address(arg);
                reply(&mut io, "250 2.1.0 OK").await?;
            }
            "RCPT" => {
                let next = behaviour.rcpt_replies.lock().unwrap().pop();
                let answer = next.unwrap_or("250 2.1.5 OK");
                if answer.starts_with('2') {
                    mail.to.push(address(arg));
                }
                reply(&mut io, answer).await?;
            }
            "DATA" => {
                reply(&mut io, "354 end with <CRLF>.<CRLF>").await?;
                let mut data = String::new();
                loop {
                    let line = read_line(&mut io).await?;
                    if line == "." {
                        break;
                    }
                    // Undo dot-stuffing (RFC 5321 §4.5.2).
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    data.push('\n');
                }
                mail.data = data;
                mails.lock().unwrap().push(mail.clone());
                reply(&mut io, "250 2.0.0 queued").await?;
            }
            "RSET" => {
                mail = Mail {
                    tls: mail.tls,
                    auth: mail.auth.clone(),
                    ..Mail::default()
                };
                reply(&mut io, "250 2.0.0 OK").await?;
            }
            "QUIT" => {
                reply(&mut io, "221 2.0.0 bye").await?;
                return Ok(());
            }
            _ => reply(&mut io, "502 5.5.2 command not recognised").await?,
        }
    }
}

fn email_config(port: u16, tls: SmtpTls) -> EmailConfig {
    EmailConfig {
        host: "127.0.0.1".into(),
        port: Some(port),
        tls,
        ca_file: None,
        username: Some(USER.into()),
        password: Some(kokoa_notify::Secret::new(PASSWORD)),
        from: "Kokoa <kokoa@example.com>".into(),
        to: vec![
            "ops@example.com".into(),
            "Oncall <oncall@example.com>".into(),
        ],
    }
}

fn plain_behaviour(auth: &'static str) -> SmtpBehaviour {
    SmtpBehaviour {
        auth,
        tls: None,
        implicit_tls: None,
        rcpt_replies: Arc::default(),
    }
}

async fn send_one(config: &EmailConfig, n: Notification) -> Notifier {
    let sink = EmailSink::new(Some("ops mail"), config, Duration::from_secs(5)).unwrap();
    let route = Route {
        sink: Arc::new(sink),
        filter: Filter::default(),
    };
    let notifier = Notifier::new(vec![route], FAST);
    assert_eq!(notifier.notify(n), 1);
    assert!(notifier.shutdown(GRACE).await);
    notifier
}

/// The value of header `name` in `data` (unfolded).
fn header<'a>(data: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    data.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} header in\n{data}"))
}

#[tokio::test]
async fn email_with_auth_plain_has_the_envelope_headers_and_body() {
    let server = SmtpServer::start(plain_behaviour("PLAIN LOGIN")).await;
    let notifier = send_one(
        &email_config(server.port, SmtpTls::None),
        notification(42, "edge_node_unhealthy", Severity::Critical),
    )
    .await;
    assert_eq!(notifier.stats().delivered, 1);

    let mails = server.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(
        mail.auth,
        Some(("PLAIN".into(), USER.into(), PASSWORD.into()))
    );
    assert!(!mail.tls);
    assert_eq!(mail.from, "kokoa@example.com");
    assert_eq!(mail.to, ["ops@example.com", "oncall@example.com"]);
    let data = &mail.data;
    assert_eq!(header(data, "From"), "Kokoa <kokoa@example.com>");
    assert_eq!(
        header(data, "To"),
        "ops@example.com, Oncall <oncall@example.com>"
    );
    assert_eq!(
        header(data, "Subject"),
        "[Kokoa] Edge edge-1 failed 3 health checks in a row"
    );
    assert!(
        header(data, "Content-Type").starts_with("text/plain"),
        "{data}"
    );
    assert!(!header(data, "Date").is_empty());
    let body = data.split_once("\n\n").unwrap().1;
    for line in [
        "Edge edge-1 failed 3 health checks in a row",
        "Event:    edge_node_unhealthy",
        "Severity: critical",
        "Subject:  edge-1",
        "Time:     2025-06-01T12:00:00Z",
        "Id:       42",
        "  \"failure_count\": 3",
    ] {
        assert!(body.contains(line), "{line:?} missing in\n{body}");
    }
}

/// A TLS acceptor with a certificate for 127.0.0.1, and a file with the CA that signed it.
fn tls_server(dir: &std::path::Path) -> (tokio_rustls::TlsAcceptor, std::path::PathBuf) {
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(tls)), ca_file)
}

#[tokio::test]
async fn email_over_starttls_with_auth_login_and_over_implicit_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (acceptor, ca_file) = tls_server(dir.path());
    let server = SmtpServer::start(SmtpBehaviour {
        auth: "LOGIN",
        tls: Some(acceptor.clone()),
        implicit_tls: None,
        rcpt_replies: Arc::default(),
    })
    .await;
    let mut config = email_config(server.port, SmtpTls::Starttls);
    config.ca_file = Some(ca_file.clone());
    send_one(&config, notification(7, "edge.ready", Severity::Info)).await;
    let mails = server.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].tls, "the message went after STARTTLS");
    assert_eq!(
        mails[0].auth,
        Some(("LOGIN".into(), USER.into(), PASSWORD.into()))
    );

    // Without the CA the server's certificate is refused and nothing is sent.
    let config = email_config(server.port, SmtpTls::Starttls);
    let notifier = send_one(&config, notification(8, "edge.ready", Severity::Info)).await;
    assert_eq!(notifier.stats().failed, 1);
    assert_eq!(server.mails().len(), 1);

    // TLS from the first byte (port 465 style).
    let server = SmtpServer::start(SmtpBehaviour {
        auth: "PLAIN",
        tls: None,
        implicit_tls: Some(acceptor),
        rcpt_replies: Arc::default(),
    })
    .await;
    let mut config = email_config(server.port, SmtpTls::Tls);
    config.ca_file = Some(ca_file);
    send_one(&config, notification(9, "edge.ready", Severity::Info)).await;
    let mails = server.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(mails[0].tls);
    assert_eq!(mails[0].auth.as_ref().unwrap().0, "PLAIN");
}

#[tokio::test]
async fn smtp_refusals_are_retried_only_when_transient() {
    // The first RCPT is refused for now (451), then accepted: retried and delivered.
    let behaviour = plain_behaviour("PLAIN");
    *behaviour.rcpt_replies.lock().unwrap() = vec!["451 4.3.0 try again later"];
    let server = SmtpServer::start(behaviour).await;
    let mut config = email_config(server.port, SmtpTls::None);
    config.to = vec!["ops@example.com".into()];
    let notifier = send_one(&config, notification(1, "edge.ready", Severity::Info)).await;
    assert_eq!(notifier.stats().delivered, 1);
    assert_eq!(*server.connections.lock().unwrap(), 2);

    // A recipient that does not exist (550) is not retried.
    let behaviour = plain_behaviour("PLAIN");
    *behaviour.rcpt_replies.lock().unwrap() = vec!["550 5.1.1 no such user"];
    let server = SmtpServer::start(behaviour).await;
    config.port = Some(server.port);
    let notifier = send_one(&config, notification(2, "edge.ready", Severity::Info)).await;
    assert_eq!(notifier.stats().failed, 1);
    assert_eq!(*server.connections.lock().unwrap(), 1);
    assert!(server.mails().is_empty());

    // Wrong credentials (535) are not retried either, and the error does not show them.
    let server = SmtpServer::start(plain_behaviour("PLAIN")).await;
    config.port = Some(server.port);
    config.password = Some(kokoa_notify::Secret::new("wrong-password"));
    let sink = EmailSink::new(None, &config, Duration::from_secs(5)).unwrap();
    let err = sink
        .deliver(&notification(3, "edge.ready", Severity::Info))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err:?}");
    let shown = format!("{err} {err:?} {sink:?}");
    assert!(shown.contains("535"), "{shown}");
    assert!(!shown.contains("wrong-password"), "{shown}");
}
