//! Notifications of Kokoa Proxy: control plane events (SPEC §8.7: `edge.ready`,
//! `edge_node_unhealthy`, `dns.record.added`, ...) delivered to people by webhook, Slack or
//! e-mail.
//!
//! A [`Notifier`] holds one bounded queue and one delivery task per sink. [`Notifier::notify`]
//! never waits: it puts the notification in the queue of every sink whose [`Filter`]
//! matches, and drops it for a sink whose queue is full (logged, and counted in
//! [`NotifierStats::dropped`]). Each attempt has a timeout; failures that may pass (5xx,
//! 429, connection errors, timeouts, transient SMTP replies) are retried with a doubling
//! backoff a bounded number of times, others (4xx, permanent SMTP replies) are not.
//!
//! The configuration is the `[notify]` part of the control plane's TOML settings:
//!
//! ```
//! use kokoa_notify::{NotifySettings, Severity};
//!
//! let settings: NotifySettings = toml::from_str(r#"
//!     [[sinks]]
//!     kind = "slack"
//!     url = "https://hooks.slack.com/services/T000/B000/XXXX"
//!     events = ["edge.*", "edge_node_unhealthy"]
//!     min_severity = "warning"
//!
//!     [[sinks]]
//!     kind = "webhook"
//!     url = "https://ops.example.com/kokoa"
//!     secret = "shared-secret"
//!     headers = { "X-Team" = "infra" }
//!
//!     [[sinks]]
//!     kind = "email"
//!     host = "smtp.example.com"
//!     port = 587
//!     tls = "starttls"
//!     username = "kokoa"
//!     password = "smtp-password"
//!     from = "Kokoa <kokoa@example.com>"
//!     to = ["ops@example.com"]
//!     min_severity = "critical"
//! "#)?;
//! // Secrets stay out of logs.
//! let debug = format!("{settings:?}");
//! assert!(!debug.contains("XXXX") && !debug.contains("shared-secret") && !debug.contains("smtp-password"));
//! assert_eq!(settings.sinks[0].filter.min_severity, Severity::Warning);
//! // Then: `Notifier::from_settings(&settings, reqwest::Client::new())?`.
//!
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{
    collections::BTreeMap,
    fmt,
    str::FromStr,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use hmac::{Hmac, Mac as _};
use kokoa_core::Timestamp;
use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        authentication::{Credentials, Mechanism},
        client::{Certificate, Tls, TlsParameters},
    },
};
use reqwest::{
    Url,
    header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue},
};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::Sha256;
use tokio::{sync::mpsc, task::JoinHandle};

/// The header carrying the webhook body's HMAC-SHA256 under the shared secret, as
/// `sha256=<lowercase hex>`.
pub const SIGNATURE_HEADER: &str = "x-kokoa-signature-256";
/// The header carrying the notification's kind, e.g. `edge.ready`.
pub const EVENT_HEADER: &str = "x-kokoa-event";
/// The header carrying the notification's id, the same on every retry of it.
pub const DELIVERY_HEADER: &str = "x-kokoa-delivery";

/// How important a notification is (the event's severity). Ordered:
/// `info < warning < critical`.
pub use kokoa_core::Severity;

/// One event, told to people. This is the webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique id, e.g. the event's row id; sent with every retry so receivers can ignore
    /// duplicates.
    pub id: i64,
    /// The event's kind, e.g. `edge.ready` or `edge_node_unhealthy`.
    pub kind: String,
    /// How important it is.
    pub severity: Severity,
    /// What it is about, e.g. the edge's id.
    pub subject: Option<String>,
    /// One sentence for people, e.g. "Edge edge-1 failed 3 health checks in a row".
    pub message: String,
    /// The event's details.
    pub data: serde_json::Value,
    /// When it happened.
    pub created_at: Timestamp,
}

impl From<&kokoa_core::Event> for Notification {
    fn from(event: &kokoa_core::Event) -> Self {
        Self {
            id: event.id,
            kind: event.kind.to_string(),
            severity: event.severity,
            subject: event.subject.clone(),
            message: event.message.clone(),
            data: event.data.clone(),
            created_at: event.created_at,
        }
    }
}

impl Notification {
    /// A one-line summary: `[critical] edge_node_unhealthy edge-1: Edge edge-1 failed ...`.
    pub fn summary(&self) -> String {
        let subject = self
            .subject
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        one_line(&format!(
            "[{}] {}{subject}: {}",
            self.severity, self.kind, self.message
        ))
    }
}

/// Text on one line: line breaks and tabs become spaces, other control characters go.
fn one_line(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

/// An event kind, or a prefix of kinds ending in `*`: `edge.ready`, `edge.*`, `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPattern {
    text: String,
}

impl EventPattern {
    /// Whether `kind` matches: equal, or starting with the part before the `*`.
    pub fn matches(&self, kind: &str) -> bool {
        match self.text.strip_suffix('*') {
            Some(prefix) => kind.starts_with(prefix),
            None => kind == self.text,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for EventPattern {
    type Err = NotifyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let body = text.strip_suffix('*').unwrap_or(text);
        let valid = !text.is_empty()
            && body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if valid {
            Ok(Self {
                text: text.to_owned(),
            })
        } else {
            Err(NotifyError::InvalidPattern {
                pattern: text.to_owned(),
            })
        }
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which notifications a sink gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Filter {
    /// Kinds it gets (`edge.*` for every kind starting with `edge.`); empty: all kinds.
    #[serde(default)]
    pub events: Vec<EventPattern>,
    /// The least severity it gets (default `info`: all).
    #[serde(default)]
    pub min_severity: Severity,
}

impl Filter {
    /// Whether `notification` passes.
    pub fn matches(&self, notification: &Notification) -> bool {
        notification.severity >= self.min_severity
            && (self.events.is_empty() || self.events.iter().any(|p| p.matches(&notification.kind)))
    }
}

pub use kokoa_core::Secret;

/// The `[notify]` settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// Where notifications go.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Queues, timeouts and retries.
    #[serde(default)]
    pub delivery: DeliveryOptions,
}

/// One sink: a kind with its parameters, and a filter.
#[derive(Debug, Clone, Deserialize)]
pub struct SinkConfig {
    /// A name for logs and errors (default: the kind and the host).
    #[serde(default)]
    pub name: Option<String>,
    /// Which notifications it gets.
    #[serde(flatten)]
    pub filter: Filter,
    /// `kind = "webhook" | "slack" | "email"` and its parameters.
    #[serde(flatten)]
    pub sink: SinkKind,
}

/// The kinds of sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum SinkKind {
    /// POST the notification as JSON.
    Webhook(WebhookConfig),
    /// A Slack incoming webhook.
    Slack(SlackConfig),
    /// E-mail over SMTP.
    Email(EmailConfig),
}

/// A webhook: `POST <url>` with the [`Notification`] as JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Extra headers, e.g. an `Authorization` the receiver wants.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// When set, the body is signed: header [`SIGNATURE_HEADER`] is `sha256=` and the hex
    /// HMAC-SHA256 of the body under this secret.
    #[serde(default)]
    pub secret: Option<Secret>,
}

/// A Slack incoming webhook (`https://hooks.slack.com/services/...`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The webhook URL; it is itself the credential, so it is kept secret.
    pub url: Secret,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection, upgraded with `STARTTLS` before anything else (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a trusted network.
    None,
}

/// E-mail over SMTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server.
    pub host: String,
    /// Its port (default: 587 for `starttls`, 465 for `tls`, 25 for `none`).
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is protected (default `starttls`).
    #[serde(default)]
    pub tls: SmtpTls,
    /// A PEM file of extra roots to trust for the server's certificate (a private CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// User for `AUTH` (PLAIN or LOGIN, whichever the server offers); none: no `AUTH`.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `AUTH`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender, e.g. `Kokoa <kokoa@example.com>`.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
}

/// Queues, timeouts and retries. Durations are in seconds in the TOML file.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryOptions {
    /// Notifications each sink's queue holds before new ones are dropped (default 256).
    pub queue_capacity: usize,
    /// Longest wait for one attempt (default 10 s).
    #[serde(deserialize_with = "seconds")]
    pub attempt_timeout: Duration,
    /// Attempts per notification and sink, the first included (default 4).
    pub max_attempts: u32,
    /// Wait before the first retry (default 1 s); it doubles with each further one.
    #[serde(deserialize_with = "seconds")]
    pub first_retry: Duration,
    /// Longest wait between retries (default 60 s).
    #[serde(deserialize_with = "seconds")]
    pub max_retry: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            attempt_timeout: Duration::from_secs(10),
            max_attempts: 4,
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(60),
        }
    }
}

fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let seconds = f64::deserialize(deserializer)?;
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        serde::de::Error::custom(format!(
            "{seconds} is not a duration in seconds: use a number from 0 up"
        ))
    })
}

/// Everything that can go wrong while configuring or delivering notifications.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// An event pattern that is not a kind or a kind prefix ending in `*`.
    #[error(
        "{pattern:?} is not an event pattern: use a kind like \"edge.ready\" or a prefix \
         ending in '*' like \"edge.*\" (letters, digits, '.', '_', '-')"
    )]
    InvalidPattern {
        /// The pattern as written.
        pattern: String,
    },
    /// A sink's settings cannot be used.
    #[error("notification sink {sink}: {message}")]
    Config {
        /// The sink's name.
        sink: String,
        /// What is wrong, quoting the value (never a secret) and what to do.
        message: String,
    },
    /// The receiver answered with an error status.
    #[error("{sink} answered HTTP {status}: {body}")]
    Status {
        /// The sink's name.
        sink: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The HTTP request could not be sent or its answer not read.
    #[error("{sink}: request failed: {source}")]
    Request {
        /// The sink's name.
        sink: String,
        /// What the HTTP client reported (without the URL, which may be a secret).
        #[source]
        source: reqwest::Error,
    },
    /// The SMTP server refused the message or could not be reached.
    #[error("{sink}: sending the e-mail failed: {source}")]
    Smtp {
        /// The sink's name.
        sink: String,
        /// What the SMTP client reported.
        #[source]
        source: lettre::transport::smtp::Error,
    },
    /// An attempt took longer than the attempt timeout.
    #[error("{sink}: no answer within {} s", .after.as_secs_f64())]
    Timeout {
        /// The sink's name.
        sink: String,
        /// The timeout.
        after: Duration,
    },
    /// Anything else, from a sink of another kind.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl NotifyError {
    /// Whether a later attempt may succeed: server errors, rate limits, timeouts, network
    /// failures and transient SMTP replies. Not client errors (4xx), permanent SMTP replies
    /// (5xx) or bad settings.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Request { source, .. } => !source.is_builder(),
            Self::Smtp { source, .. } => !source.is_permanent(),
            Self::Timeout { .. } => true,
            _ => false,
        }
    }
}

/// Somewhere notifications go. Implement it for kinds this module does not have.
#[async_trait]
pub trait Sink: Send + Sync + fmt::Debug {
    /// The name used in logs and errors; never a secret.
    fn name(&self) -> &str;

    /// Delivers `notification` once (retries are the [`Notifier`]'s business).
    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError>;
}

/// Answers a webhook POST: 2xx is delivered, anything else an error with the body's start.
async fn check_answer(sink: &str, response: reqwest::Response) -> Result<(), NotifyError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(NotifyError::Status {
        sink: sink.to_owned(),
        status: status.as_u16(),
        body: one_line(&body.chars().take(200).collect::<String>()),
    })
}

fn request_error(sink: &str) -> impl FnOnce(reqwest::Error) -> NotifyError + '_ {
    move |e| NotifyError::Request {
        sink: sink.to_owned(),
        source: e.without_url(),
    }
}

fn config_error(sink: &str, message: String) -> NotifyError {
    NotifyError::Config {
        sink: sink.to_owned(),
        message,
    }
}

fn parse_url(sink: &str, text: &str) -> Result<Url, NotifyError> {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => Err(config_error(
            sink,
            "the url is not an http:// or https:// URL".to_owned(),
        )),
    }
}

/// POSTs the notification as JSON, optionally signed.
pub struct WebhookSink {
    name: String,
    client: reqwest::Client,
    url: Url,
    headers: HeaderMap,
    secret: Option<Secret>,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("name", &self.name)
            .field("signed", &self.secret.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// A webhook sink sending with `client`. `name` defaults to `webhook <host>`.
    pub fn new(
        client: reqwest::Client,
        name: Option<&str>,
        config: &WebhookConfig,
    ) -> Result<Self, NotifyError> {
        let fallback = format!(
            "webhook {}",
            Url::parse(&config.url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default()
        );
        let name = name.map_or(fallback, str::to_owned);
        let url = parse_url(&name, &config.url)?;
        let mut headers = HeaderMap::new();
        for (key, value) in &config.headers {
            let header = HeaderName::from_str(key)
                .map_err(|_| config_error(&name, format!("{key:?} is not an HTTP header name")))?;
            let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                config_error(
                    &name,
                    format!("the value of header {key:?} is not a valid header value"),
                )
            })?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        Ok(Self {
            name,
            client,
            url,
            headers,
            secret: config.secret.clone(),
        })
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(notification).map_err(|e| NotifyError::Other(e.into()))?;
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, &notification.kind)
            .header(DELIVERY_HEADER, notification.id.to_string());
        if let Some(secret) = &self.secret {
            request = request.header(
                SIGNATURE_HEADER,
                signature(secret.expose().as_bytes(), &body),
            );
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(request_error(&self.name))?;
        check_answer(&self.name, response).await
    }
}

/// Posts a one-line summary to a Slack incoming webhook.
pub struct SlackSink {
    name: String,
    client: reqwest::Client,
    url: Url,
}

impl fmt::Debug for SlackSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SlackSink {
    /// A Slack sink sending with `client`. `name` defaults to `slack`.
    pub fn new(
        client: reqwest::Client,
        name: Option<&str>,
        config: &SlackConfig,
    ) -> Result<Self, NotifyError> {
        let name = name.unwrap_or("slack").to_owned();
        let url = parse_url(&name, config.url.expose())?;
        Ok(Self { name, client, url })
    }

    /// The message Slack shows: the summary, with `&`, `<` and `>` escaped as Slack asks
    /// (its formatting treats them as markup), and an emoji by severity.
    pub fn text(notification: &Notification) -> String {
        let icon = match notification.severity {
            Severity::Warning => ":warning:",
            Severity::Critical => ":rotating_light:",
            _ => ":information_source:",
        };
        let escaped = notification
            .summary()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        format!("{icon} {escaped}")
    }
}

#[async_trait]
impl Sink for SlackSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError> {
        let body = serde_json::json!({ "text": Self::text(notification) });
        let response = self
            .client
            .post(self.url.clone())
            .json(&body)
            .send()
            .await
            .map_err(request_error(&self.name))?;
        check_answer(&self.name, response).await
    }
}

/// Sends an e-mail per notification over SMTP.
pub struct EmailSink {
    name: String,
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl fmt::Debug for EmailSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailSink")
            .field("name", &self.name)
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

impl EmailSink {
    /// An e-mail sink. `name` defaults to `email <host>`; `timeout` bounds each SMTP
    /// command.
    pub fn new(
        name: Option<&str>,
        config: &EmailConfig,
        timeout: Duration,
    ) -> Result<Self, NotifyError> {
        let name = name.map_or_else(|| format!("email {}", config.host), str::to_owned);
        let mailbox = |text: &str| {
            text.parse::<Mailbox>()
                .map_err(|e| config_error(&name, format!("{text:?} is not an e-mail address: {e}")))
        };
        let from = mailbox(&config.from)?;
        let to = config
            .to
            .iter()
            .map(|t| mailbox(t))
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(config_error(
                &name,
                "`to` is empty: give at least one recipient".to_owned(),
            ));
        }
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(Self::tls_parameters(&name, config)?),
            SmtpTls::Tls => Tls::Wrapper(Self::tls_parameters(&name, config)?),
        };
        let port = config.port.unwrap_or(match config.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        });
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(port)
            .tls(tls)
            .timeout(Some(timeout));
        match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                builder = builder
                    .credentials(Credentials::new(user.clone(), password.expose().to_owned()))
                    .authentication(vec![Mechanism::Plain, Mechanism::Login]);
            }
            (None, None) => {}
            _ => {
                return Err(config_error(
                    &name,
                    "give both `username` and `password` for AUTH, or neither".to_owned(),
                ));
            }
        }
        Ok(Self {
            name,
            transport: builder.build(),
            from,
            to,
        })
    }

    fn tls_parameters(name: &str, config: &EmailConfig) -> Result<TlsParameters, NotifyError> {
        let mut builder = TlsParameters::builder(config.host.clone());
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                config_error(name, format!("cannot read ca_file {}: {e}", path.display()))
            })?;
            let root = Certificate::from_pem(&pem).map_err(|e| {
                config_error(name, format!("ca_file {} is not PEM: {e}", path.display()))
            })?;
            builder = builder.add_root_certificate(root);
        }
        builder
            .build_rustls()
            .map_err(|e| config_error(name, format!("TLS setup failed: {e}")))
    }

    /// The message: subject `[Kokoa] <message>`, a plain text body with every field.
    pub fn message(&self, notification: &Notification) -> Result<Message, NotifyError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(format!("[Kokoa] {}", one_line(&notification.message)))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .body(email_body(notification))
            .map_err(|e| config_error(&self.name, format!("cannot build the e-mail: {e}")))
    }
}

fn email_body(n: &Notification) -> String {
    let data = serde_json::to_string_pretty(&n.data).unwrap_or_default();
    format!(
        "{message}\n\nEvent:    {kind}\nSeverity: {severity}\nSubject:  {subject}\n\
         Time:     {time}\nId:       {id}\n\nData:\n{data}\n",
        message = n.message,
        kind = n.kind,
        severity = n.severity,
        subject = n.subject.as_deref().unwrap_or("-"),
        time = n.created_at,
        id = n.id,
    )
}

#[async_trait]
impl Sink for EmailSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), NotifyError> {
        let message = self.message(notification)?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|source| NotifyError::Smtp {
                sink: self.name.clone(),
                source,
            })
    }
}

/// A sink with the filter choosing its notifications.
#[derive(Debug, Clone)]
pub struct Route {
    /// Where they go.
    pub sink: Arc<dyn Sink>,
    /// Which ones.
    pub filter: Filter,
}

/// Counts since the notifier started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifierStats {
    /// Deliveries that succeeded (one per notification and sink).
    pub delivered: u64,
    /// Deliveries given up: a permanent error, or the last attempt failed.
    pub failed: u64,
    /// Notifications dropped because a sink's queue was full or the notifier had stopped.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

struct Queue {
    filter: Filter,
    name: String,
    sender: mpsc::Sender<Arc<Notification>>,
}

/// Delivers notifications to sinks in the background. Cheap to clone; clones share the
/// queues.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// Emptied by `shutdown`, which closes the queues.
    queues: RwLock<Vec<Queue>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let queues = self
            .inner
            .queues
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
        f.debug_struct("Notifier")
            .field("sinks", &names)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Notifier {
    /// Starts one delivery task per route. Must be called inside a Tokio runtime.
    pub fn new(routes: Vec<Route>, options: DeliveryOptions) -> Self {
        let counters = Arc::new(Counters::default());
        let mut queues = Vec::with_capacity(routes.len());
        let mut workers = Vec::with_capacity(routes.len());
        for route in routes {
            let (sender, receiver) = mpsc::channel(options.queue_capacity.max(1));
            queues.push(Queue {
                filter: route.filter,
                name: route.sink.name().to_owned(),
                sender,
            });
            workers.push(tokio::spawn(run(
                route.sink,
                receiver,
                options,
                Arc::clone(&counters),
            )));
        }
        Self {
            inner: Arc::new(Inner {
                queues: RwLock::new(queues),
                workers: Mutex::new(workers),
                counters,
            }),
        }
    }

    /// The sinks of `settings`, sending HTTP with `client`. Must be called inside a Tokio
    /// runtime.
    pub fn from_settings(
        settings: &NotifySettings,
        client: reqwest::Client,
    ) -> Result<Self, NotifyError> {
        let options = settings.delivery;
        if options.max_attempts == 0 || options.queue_capacity == 0 {
            return Err(config_error(
                "delivery options",
                "`max_attempts` and `queue_capacity` must be at least 1".to_owned(),
            ));
        }
        let routes = settings
            .sinks
            .iter()
            .map(|config| {
                let name = config.name.as_deref();
                let sink: Arc<dyn Sink> = match &config.sink {
                    SinkKind::Webhook(c) => Arc::new(WebhookSink::new(client.clone(), name, c)?),
                    SinkKind::Slack(c) => Arc::new(SlackSink::new(client.clone(), name, c)?),
                    SinkKind::Email(c) => {
                        Arc::new(EmailSink::new(name, c, options.attempt_timeout)?)
                    }
                };
                Ok(Route {
                    sink,
                    filter: config.filter.clone(),
                })
            })
            .collect::<Result<Vec<_>, NotifyError>>()?;
        Ok(Self::new(routes, options))
    }

    /// Queues `notification` for every sink whose filter matches, without waiting, and
    /// returns how many took it. A sink whose queue is full misses it: a warning is logged
    /// and [`NotifierStats::dropped`] counts it.
    ///
    /// ```
    /// use std::{sync::{Arc, Mutex}, time::Duration};
    /// use kokoa_notify::*;
    ///
    /// /// Keeps what it gets.
    /// #[derive(Debug, Default)]
    /// struct Memory(Mutex<Vec<String>>);
    ///
    /// #[async_trait::async_trait]
    /// impl Sink for Memory {
    ///     fn name(&self) -> &str { "memory" }
    ///     async fn deliver(&self, n: &Notification) -> Result<(), NotifyError> {
    ///         self.0.lock().unwrap().push(n.summary());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let memory = Arc::new(Memory::default());
    /// let filter = Filter { events: vec!["edge.*".parse()?], min_severity: Severity::Info };
    /// let notifier = Notifier::new(vec![Route { sink: memory.clone(), filter }], DeliveryOptions::default());
    /// let edge_ready = Notification {
    ///     id: 1,
    ///     kind: "edge.ready".into(),
    ///     severity: Severity::Info,
    ///     subject: Some("edge-1".into()),
    ///     message: "Edge edge-1 is ready".into(),
    ///     data: serde_json::json!({ "public_ip": "203.0.113.7" }),
    ///     created_at: kokoa_core::Timestamp::now(),
    /// };
    /// let dns = Notification { id: 2, kind: "dns.record.added".into(), ..edge_ready.clone() };
    /// assert_eq!(notifier.notify(edge_ready), 1);
    /// assert_eq!(notifier.notify(dns), 0); // filtered out
    ///
    /// assert!(notifier.shutdown(Duration::from_secs(5)).await); // delivers what is queued
    /// assert_eq!(*memory.0.lock().unwrap(), ["[info] edge.ready edge-1: Edge edge-1 is ready"]);
    /// assert_eq!(notifier.stats().delivered, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn notify(&self, notification: Notification) -> usize {
        let notification = Arc::new(notification);
        let queues = self
            .inner
            .queues
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut accepted = 0;
        for queue in queues.iter().filter(|q| q.filter.matches(&notification)) {
            match queue.sender.try_send(Arc::clone(&notification)) {
                Ok(()) => accepted += 1,
                Err(_) => {
                    self.inner.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        sink = %queue.name,
                        id = notification.id,
                        kind = %notification.kind,
                        "notification dropped: the sink's queue is full (is it down?)"
                    );
                }
            }
        }
        accepted
    }

    /// The counts so far.
    pub fn stats(&self) -> NotifierStats {
        let counters = &self.inner.counters;
        NotifierStats {
            delivered: counters.delivered.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops taking notifications and waits at most `grace` for the queued ones to be
    /// delivered (retries included); then stops the deliveries still running. Returns
    /// whether everything queued was handled in time. Later [`notify`](Self::notify) calls
    /// are dropped.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        // Dropping the senders closes the queues: each task ends after its last item.
        self.inner
            .queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let workers = std::mem::take(
            &mut *self
                .inner
                .workers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let aborts: Vec<_> = workers.iter().map(JoinHandle::abort_handle).collect();
        let all = async {
            for worker in workers {
                let _ = worker.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_ok() {
            return true;
        }
        let unfinished = aborts.iter().filter(|a| !a.is_finished()).count();
        for abort in aborts {
            abort.abort();
        }
        tracing::warn!(
            sinks = unfinished,
            grace_secs = grace.as_secs_f64(),
            "notifications still queued at shutdown were not delivered"
        );
        false
    }
}

async fn run(
    sink: Arc<dyn Sink>,
    mut receiver: mpsc::Receiver<Arc<Notification>>,
    options: DeliveryOptions,
    counters: Arc<Counters>,
) {
    while let Some(notification) = receiver.recv().await {
        let counter = match deliver(&*sink, &notification, &options).await {
            Ok(()) => &counters.delivered,
            Err(_) => &counters.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Delivers with a timeout per attempt and retries with doubling backoff.
async fn deliver(
    sink: &dyn Sink,
    notification: &Notification,
    options: &DeliveryOptions,
) -> Result<(), NotifyError> {
    let max_attempts = options.max_attempts.max(1);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = tokio::time::timeout(options.attempt_timeout, sink.deliver(notification))
            .await
            .unwrap_or_else(|_| {
                Err(NotifyError::Timeout {
                    sink: sink.name().to_owned(),
                    after: options.attempt_timeout,
                })
            });
        let error = match result {
            Ok(()) => {
                tracing::debug!(
                    sink = sink.name(),
                    id = notification.id,
                    attempt,
                    "notification delivered"
                );
                return Ok(());
            }
            Err(error) => error,
        };
        if attempt >= max_attempts || !error.is_retryable() {
            tracing::error!(
                sink = sink.name(),
                id = notification.id,
                kind = %notification.kind,
                attempt,
                %error,
                "notification not delivered"
            );
            return Err(error);
        }
        let wait = kokoa_core::doubling(options.first_retry, attempt - 1, options.max_retry);
        tracing::warn!(
            sink = sink.name(),
            id = notification.id,
            attempt,
            retry_in_ms = wait.as_millis() as u64,
            %error,
            "notification delivery failed; retrying"
        );
        tokio::time::sleep(wait).await;
    }
}

// Keeps the README's example compiling and passing.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(text: &str) -> EventPattern {
        text.parse().unwrap()
    }

    fn notification(kind: &str, severity: Severity) -> Notification {
        Notification {
            id: 7,
            kind: kind.to_owned(),
            severity,
            subject: Some("edge-1".into()),
            message: "Edge edge-1 is ready".into(),
            data: serde_json::Value::Null,
            created_at: Timestamp::from_unix(1_700_000_000).unwrap(),
        }
    }

    #[test]
    fn patterns_match_kinds_exactly_or_by_prefix() {
        assert!(pattern("edge.ready").matches("edge.ready"));
        assert!(!pattern("edge.ready").matches("edge.ready2"));
        assert!(pattern("edge.*").matches("edge.provisioned"));
        assert!(!pattern("edge.*").matches("edge_node_unhealthy"));
        assert!(!pattern("edge.*").matches("dns.record.added"));
        assert!(pattern("edge*").matches("edge_node_unhealthy"));
        assert!(pattern("*").matches("anything.at.all"));
        for bad in ["", "edge.*.ready", "*.ready", "edge ready", "edge.**"] {
            let err = bad.parse::<EventPattern>().unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn filters_take_kinds_and_a_least_severity() {
        let all = Filter::default();
        assert!(all.matches(&notification("dns.record.added", Severity::Info)));
        let edges_warning = Filter {
            events: vec![pattern("edge.*"), pattern("edge_node_unhealthy")],
            min_severity: Severity::Warning,
        };
        assert!(!edges_warning.matches(&notification("edge.ready", Severity::Info)));
        assert!(edges_warning.matches(&notification("edge.ready", Severity::Warning)));
        assert!(edges_warning.matches(&notification("edge_node_unhealthy", Severity::Critical)));
        assert!(!edges_warning.matches(&notification("dns.record.added", Severity::Critical)));
    }

    #[test]
    fn the_summary_is_one_line() {
        let mut n = notification("edge_node_unhealthy", Severity::Critical);
        n.message = "Edge edge-1 failed\n3 checks".into();
        assert_eq!(
            n.summary(),
            "[critical] edge_node_unhealthy edge-1: Edge edge-1 failed 3 checks"
        );
        n.subject = None;
        assert_eq!(
            n.summary(),
            "[critical] edge_node_unhealthy: Edge edge-1 failed 3 checks"
        );
    }

    #[test]
    fn settings_refuse_unknown_keys_and_bad_values() {
        let parse = |text: &str| toml::from_str::<NotifySettings>(text).map(drop);
        let typo = "[[sinks]]\nkind = \"slack\"\nurl = \"https://h/x\"\nmin_severty = \"info\"";
        let err = parse(typo).unwrap_err().to_string();
        assert!(err.contains("min_severty"), "{err}");
        let err = parse("[[sinks]]\nkind = \"pager\"\nurl = \"https://h/x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("pager"), "{err}");
        let err = parse("[[sinks]]\nkind = \"slack\"\nurl = \"https://h/x\"\nevents = [\"*.x\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"*.x\" is not an event pattern"), "{err}");
        let err = parse("[delivery]\nfirst_retry = -1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a duration"), "{err}");
        let ok = toml::from_str::<NotifySettings>(
            "[delivery]\nfirst_retry = 0.25\n[[sinks]]\nname = \"ops\"\nkind = \"webhook\"\n\
             url = \"https://h/x\"\nevents = [\"edge.*\"]",
        )
        .unwrap();
        assert_eq!(ok.delivery.first_retry, Duration::from_millis(250));
        assert_eq!(ok.delivery.max_attempts, 4);
        assert_eq!(ok.sinks[0].name.as_deref(), Some("ops"));
        assert_eq!(ok.sinks[0].filter.events, vec![pattern("edge.*")]);
    }

    #[test]
    fn sinks_refuse_bad_settings_naming_the_value_but_not_secrets() {
        let client = reqwest::Client::new();
        let slack = SlackConfig {
            url: Secret::new("ftp://hooks.example/T0/B0/SECRETPART"),
        };
        let err = SlackSink::new(client.clone(), None, &slack).unwrap_err();
        assert!(!err.to_string().contains("SECRETPART"), "{err}");
        let webhook = WebhookConfig {
            url: "https://h.example/x".into(),
            headers: [("bad header".to_owned(), Secret::new("v"))].into(),
            secret: None,
        };
        let err = WebhookSink::new(client, None, &webhook).unwrap_err();
        assert!(err.to_string().contains("\"bad header\""), "{err}");
        let email = EmailConfig {
            host: "smtp.example".into(),
            port: None,
            tls: SmtpTls::None,
            ca_file: None,
            username: Some("u".into()),
            password: None,
            from: "not an address".into(),
            to: vec!["ops@example.com".into()],
        };
        let err = EmailSink::new(None, &email, Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("\"not an address\""), "{err}");
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
