//! The store logic shared by the SQL backends.
//!
//! A backend only runs statements ([`Backend`], [`Conn`]); every query, transaction and
//! mapping from rows to records lives here once, so SQLite and PostgreSQL cannot drift
//! apart. Statements are written with `$1`-style placeholders, which the SQLite backend
//! rewrites. Both schemas use the same table and column names. The one statement that
//! differs, reading the database's clock, comes from the backend ([`Backend::clock`]).

use std::{
    collections::BTreeSet, error::Error as StdError, fmt, net::Ipv4Addr, str::FromStr,
    time::Duration,
};

use async_trait::async_trait;
use ipnet::Ipv4Net;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Fence, Intent, Lease, NewIntent, NewOrigin, NewTunnel, Store, allocate_tunnel,
    lease::{self, LeaseRow},
    sort,
};
use kokoa_core::{
    ApiToken, ApiTokenId, Certificate, CertificateId, DnsRecord, DnsRecordId, DnsZone, DnsZoneId,
    EdgeNode, EdgeNodeId, EdgeTunnel, Email, Enrollment, Error, Event, EventFilter, HealthCheck,
    Hostname, NewEvent, NodeCredential, NodeCredentialId, NodeRef, Origin, OriginId, OriginService,
    OriginStatus, Port, RecordData, Role, Route, RouteId, ServiceId, Session, SessionId, Severity,
    SubnetPool, Timestamp, TrafficCounts, TrafficPoint, TrafficResolution, TrafficRow,
    TrafficScope, User, UserId, UserSecrets, WgPublicKey, origin_address,
    secret::{Sealed, TokenHash},
};

/// How often an allocation (origin subnet, tunnel address or port) is retried when a
/// concurrent writer took the same value first. Each retry sees the winner's row, so with
/// N writers racing the last one succeeds after at most N - 1 retries.
const ALLOCATION_ATTEMPTS: usize = 32;

/// A statement parameter or a column value. Parameters carry their type even when null,
/// since PostgreSQL needs to know it.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    /// An integer column (`INTEGER` / `BIGINT`).
    Int(Option<i64>),
    /// A text column.
    Text(Option<String>),
}

fn int(v: impl Into<i64>) -> Value {
    Value::Int(Some(v.into()))
}

fn opt_int(v: Option<impl Into<i64>>) -> Value {
    Value::Int(v.map(Into::into))
}

fn text(v: impl ToString) -> Value {
    Value::Text(Some(v.to_string()))
}

fn opt_text(v: Option<impl ToString>) -> Value {
    Value::Text(v.map(|v| v.to_string()))
}

fn time(t: Timestamp) -> Value {
    int(t.as_unix())
}

/// A count as a column holds it (held at `i64::MAX`).
fn count(n: u64) -> Value {
    int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn opt_time(t: Option<Timestamp>) -> Value {
    opt_int(t.map(Timestamp::as_unix))
}

/// An enum as the word its serde form uses (`active`, `https`, ...), so the database holds
/// the same words as the API.
fn word(v: &impl Serialize) -> Result<Value, Error> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => Ok(Value::Text(Some(s))),
        _ => Err(Error::Storage("an enum without a word form".into())),
    }
}

fn json(v: &Option<serde_json::Value>) -> Value {
    opt_text(v.as_ref())
}

/// A record as JSON text.
fn to_json(v: &impl Serialize) -> Result<Value, Error> {
    serde_json::to_string(v)
        .map(|s| Value::Text(Some(s)))
        .map_err(|e| Error::Storage(Box::new(e)))
}

/// A result row.
#[derive(Debug)]
pub(crate) struct Row(pub(crate) Vec<Value>);

/// Reads a row's columns left to right.
struct Reader<'a> {
    columns: std::slice::Iter<'a, Value>,
}

fn corrupt(what: impl fmt::Display) -> Error {
    Error::Storage(format!("a stored value is invalid: {what}").into())
}

impl Reader<'_> {
    fn next(&mut self) -> Result<&Value, Error> {
        self.columns
            .next()
            .ok_or_else(|| corrupt("a row has fewer columns than expected"))
    }

    // A NULL may come back as either variant: SQLite does not type it.
    fn opt_text(&mut self) -> Result<Option<&str>, Error> {
        match self.next()? {
            Value::Text(v) => Ok(v.as_deref()),
            Value::Int(None) => Ok(None),
            Value::Int(Some(n)) => Err(corrupt(format_args!("{n} where text was expected"))),
        }
    }

    fn text(&mut self) -> Result<&str, Error> {
        self.opt_text()?
            .ok_or_else(|| corrupt("NULL where text was expected"))
    }

    fn opt_int(&mut self) -> Result<Option<i64>, Error> {
        match self.next()? {
            Value::Int(v) => Ok(*v),
            Value::Text(None) => Ok(None),
            Value::Text(Some(s)) => Err(corrupt(format_args!("{s:?} where a number was expected"))),
        }
    }

    fn int(&mut self) -> Result<i64, Error> {
        self.opt_int()?
            .ok_or_else(|| corrupt("NULL where a number was expected"))
    }

    fn opt_parse<T>(&mut self) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.opt_text()?
            .map(|s| s.parse().map_err(|e| corrupt(format_args!("{s:?}: {e}"))))
            .transpose()
    }

    fn parse<T>(&mut self) -> Result<T, Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.opt_parse()?
            .ok_or_else(|| corrupt("NULL where text was expected"))
    }

    fn opt_time(&mut self) -> Result<Option<Timestamp>, Error> {
        self.opt_int()?.map(Timestamp::from_unix).transpose()
    }

    fn time(&mut self) -> Result<Timestamp, Error> {
        Timestamp::from_unix(self.int()?)
    }

    fn port(&mut self) -> Result<Port, Error> {
        Port::try_from(self.int()?)
    }

    fn u32(&mut self) -> Result<u32, Error> {
        let n = self.int()?;
        u32::try_from(n).map_err(|e| corrupt(format_args!("{n}: {e}")))
    }

    fn word<T: DeserializeOwned>(&mut self) -> Result<T, Error> {
        let s = self.text()?;
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|e| corrupt(format_args!("{s:?}: {e}")))
    }

    fn json(&mut self) -> Result<Option<serde_json::Value>, Error> {
        self.opt_parse()
    }

    /// A JSON column holding a record; NULL (a row from before the column) is the default.
    fn json_or_default<T: DeserializeOwned + Default>(&mut self) -> Result<T, Error> {
        match self.opt_text()? {
            Some(s) => serde_json::from_str(s).map_err(|e| corrupt(format_args!("{s:?}: {e}"))),
            None => Ok(T::default()),
        }
    }

    fn opt_sealed(&mut self) -> Result<Option<Sealed>, Error> {
        self.opt_text()?.map(Sealed::parse).transpose()
    }

    fn node(&mut self) -> Result<NodeRef, Error> {
        let kind = self.text()?.to_owned();
        let id = self.text()?;
        match kind.as_str() {
            "edge" => EdgeNodeId::parse(id).map(NodeRef::Edge),
            "origin" => OriginId::parse(id).map(NodeRef::Origin),
            other => Err(corrupt(format_args!("node kind {other:?}"))),
        }
    }
}

impl Row {
    fn reader(&self) -> Reader<'_> {
        Reader {
            columns: self.0.iter(),
        }
    }
}

/// A failed statement, as far as the store logic cares.
#[derive(Debug)]
pub(crate) enum DbError {
    /// A unique constraint refused a row. The key names the table and the columns the way
    /// both backends can report them: `table.column[,column]`, e.g. `routes.hostname`.
    Unique(String),
    /// Anything else.
    Other(Box<dyn StdError + Send + Sync>),
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            // Callers map the keys they expect; one left over is a bug, but still a conflict.
            DbError::Unique(key) => Error::Conflict {
                what: "unique value",
                value: key,
            },
            DbError::Other(e) => Error::Storage(e),
        }
    }
}

impl DbError {
    /// Turns a unique violation on one of `keys` into the [`Error::Conflict`] it means:
    /// `(key, what, value)`.
    fn conflict(self, keys: &[(&str, &'static str, &str)]) -> Error {
        if let DbError::Unique(key) = &self
            && let Some((_, what, value)) = keys.iter().find(|(k, ..)| k == key)
        {
            return Error::Conflict {
                what,
                value: (*value).to_owned(),
            };
        }
        self.into()
    }
}

/// A connection of a backend, inside a transaction or not.
#[async_trait]
pub(crate) trait Conn: Send {
    /// Runs a statement; returns the number of rows changed.
    async fn execute(&mut self, sql: &'static str, params: Vec<Value>) -> Result<u64, DbError>;
    /// Runs a query.
    async fn query(&mut self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, DbError>;
    /// Runs several statements without parameters (migrations).
    async fn batch(&mut self, sql: &'static str) -> Result<(), DbError>;
    /// Commits the transaction (nothing to do outside one). Dropping the connection instead
    /// rolls back.
    async fn commit(self: Box<Self>) -> Result<(), DbError>;
}

/// A database the store runs on.
#[async_trait]
pub(crate) trait Backend: Send + Sync + fmt::Debug {
    /// A connection; inside a transaction that takes the write lock up front when
    /// `transaction` is set, so that read-then-write sequences are serialised.
    async fn connect(&self, transaction: bool) -> Result<Box<dyn Conn>, Error>;

    /// A query of one row and one integer column: the database's clock, in Unix
    /// milliseconds. Leases are timed by it, so that control planes whose clocks disagree
    /// still agree on who leads.
    fn clock(&self) -> &'static str;
}

/// A [`Store`] in an SQL database: SQLite ([`sqlite::open`](super::sqlite::open), feature
/// `sqlite`) or PostgreSQL ([`postgres::connect`](super::postgres::connect), feature
/// `postgres`). Both run the same statements.
#[derive(Debug)]
pub struct SqlStore {
    backend: Box<dyn Backend>,
    /// The schema version this build's migrations make.
    schema: u32,
}

/// Columns read by [`origin`], in order.
macro_rules! origin_columns {
    () => {
        "id, name, domain, status, last_heartbeat, last_metrics, network_cidr, wireguard_ip, \
         wireguard_public_key, created_at"
    };
}

fn origin(row: &Row) -> Result<Origin, Error> {
    let mut r = row.reader();
    Ok(Origin {
        id: r.parse()?,
        name: r.parse()?,
        domain: r.opt_parse()?,
        status: r.word()?,
        last_heartbeat: r.opt_time()?,
        last_metrics: r.json()?,
        network_cidr: r.parse()?,
        wireguard_ip: r.parse()?,
        wireguard_public_key: r.opt_parse()?,
        created_at: r.time()?,
    })
}

macro_rules! service_columns {
    () => {
        "id, origin_id, name, port, protocol, health_check_path, created_at"
    };
}

fn service(row: &Row) -> Result<OriginService, Error> {
    let mut r = row.reader();
    Ok(OriginService {
        id: r.parse()?,
        origin_id: r.parse()?,
        name: r.parse()?,
        port: r.port()?,
        protocol: r.word()?,
        health_check_path: r.opt_parse()?,
        created_at: r.time()?,
    })
}

macro_rules! route_columns {
    () => {
        "id, hostname, origin_id, target_port, certificate, created_at"
    };
}

fn route(row: &Row) -> Result<Route, Error> {
    let mut r = row.reader();
    Ok(Route {
        id: r.parse()?,
        hostname: r.parse()?,
        origin_id: r.parse()?,
        target_port: r.port()?,
        certificate: r.parse()?,
        created_at: r.time()?,
    })
}

macro_rules! edge_columns {
    () => {
        "id, name, origin_id, provider, region, public_ip, status, last_heartbeat, \
         last_metrics, health_check_failures, created_at, deleted_at, instance_id, lifecycle, \
         wireguard_public_key"
    };
}

fn edge(row: &Row) -> Result<EdgeNode, Error> {
    let mut r = row.reader();
    Ok(EdgeNode {
        id: r.parse()?,
        name: r.parse()?,
        origin_id: r.opt_parse()?,
        provider: r.parse()?,
        region: r.parse()?,
        public_ip: r.opt_parse()?,
        status: r.word()?,
        last_heartbeat: r.opt_time()?,
        last_metrics: r.json()?,
        health_check_failures: r.u32()?,
        created_at: r.time()?,
        deleted_at: r.opt_time()?,
        instance_id: r.opt_text()?.map(str::to_owned),
        lifecycle: r.json_or_default()?,
        wireguard_public_key: r.opt_parse()?,
    })
}

macro_rules! tunnel_columns {
    () => {
        "edge_node_id, origin_id, wireguard_ip, listen_port, created_at"
    };
}

fn tunnel(row: &Row) -> Result<EdgeTunnel, Error> {
    let mut r = row.reader();
    Ok(EdgeTunnel {
        edge_node_id: r.parse()?,
        origin_id: r.parse()?,
        wireguard_ip: r.parse()?,
        listen_port: r.port()?,
        created_at: r.time()?,
    })
}

macro_rules! api_token_columns {
    () => {
        "id, name, role, created_at, last_used_at, revoked_at"
    };
}

fn api_token(row: &Row) -> Result<ApiToken, Error> {
    let mut r = row.reader();
    Ok(ApiToken {
        id: r.parse()?,
        name: r.parse()?,
        role: r.word()?,
        created_at: r.time()?,
        last_used_at: r.opt_time()?,
        revoked_at: r.opt_time()?,
    })
}

macro_rules! enrollment_columns {
    () => {
        "id, node_kind, node_id, expires_at, uses_left, created_at"
    };
}

fn enrollment(row: &Row) -> Result<Enrollment, Error> {
    let mut r = row.reader();
    Ok(Enrollment {
        id: r.parse()?,
        node: r.node()?,
        expires_at: r.time()?,
        uses_left: r.u32()?,
        created_at: r.time()?,
    })
}

fn credential(row: &Row) -> Result<NodeCredential, Error> {
    let mut r = row.reader();
    Ok(NodeCredential {
        id: r.parse()?,
        node: r.node()?,
        created_at: r.time()?,
        revoked_at: r.opt_time()?,
    })
}

macro_rules! dns_record_columns {
    () => {
        "id, hostname, record_type, value, provider_record_id, provider, edge_node_id, \
         created_at, zone_id"
    };
}

fn dns_record(row: &Row) -> Result<DnsRecord, Error> {
    let mut r = row.reader();
    Ok(DnsRecord {
        id: r.parse()?,
        hostname: r.parse()?,
        data: {
            let record_type = r.word()?;
            RecordData::parse(record_type, r.text()?)?
        },
        provider_record_id: r.opt_text()?.map(str::to_owned),
        provider: r.parse()?,
        edge_node_id: r.opt_parse()?,
        created_at: r.time()?,
        zone_id: r.opt_parse()?,
    })
}

macro_rules! certificate_columns {
    () => {
        "id, names, source, method, issuer, not_before, not_after, sha256, chain_pem, \
         next_renewal, failures, last_error, created_at, updated_at"
    };
}

/// The names of a certificate as stored: sorted, joined by commas (no host name holds one).
fn certificate_names(names: &BTreeSet<Hostname>) -> String {
    names
        .iter()
        .map(Hostname::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

fn certificate(row: &Row) -> Result<Certificate, Error> {
    let mut r = row.reader();
    Ok(Certificate {
        id: r.parse()?,
        names: r
            .text()?
            .split(',')
            .filter(|n| !n.is_empty())
            .map(Hostname::parse)
            .collect::<Result<_, _>>()?,
        source: r.word()?,
        method: r.parse()?,
        issuer: r.opt_text()?.map(str::to_owned),
        not_before: r.opt_time()?,
        not_after: r.opt_time()?,
        sha256: r.opt_parse()?,
        chain_pem: r.opt_text()?.map(str::to_owned),
        next_renewal: r.opt_time()?,
        failures: r.u32()?,
        last_error: r.opt_text()?.map(str::to_owned),
        created_at: r.time()?,
        updated_at: r.time()?,
    })
}

macro_rules! dns_zone_columns {
    () => {
        "id, name, provider, provider_zone_id, settings, ttl, created_at"
    };
}

fn dns_zone(row: &Row) -> Result<DnsZone, Error> {
    let mut r = row.reader();
    Ok(DnsZone {
        id: r.parse()?,
        name: r.parse()?,
        provider: r.parse()?,
        provider_zone_id: r.opt_text()?.map(str::to_owned),
        settings: r.parse()?,
        ttl: r.u32()?,
        created_at: r.time()?,
    })
}

fn event(row: &Row) -> Result<Event, Error> {
    let mut r = row.reader();
    Ok(Event {
        id: r.int()?,
        kind: r.parse()?,
        severity: r.word()?,
        subject: r.opt_text()?.map(str::to_owned),
        message: r.text()?.to_owned(),
        data: r.parse()?,
        created_at: r.time()?,
    })
}

fn health_check(row: &Row) -> Result<HealthCheck, Error> {
    let mut r = row.reader();
    Ok(HealthCheck {
        edge_node_id: r.parse()?,
        check: r.text()?.to_owned(),
        status: r.word()?,
        response_time_ms: r
            .opt_int()?
            .map(u32::try_from)
            .transpose()
            .map_err(corrupt)?,
        error_message: r.opt_text()?.map(str::to_owned),
        checked_at: r.time()?,
    })
}

macro_rules! user_columns {
    () => {
        "id, email, role, created_at, totp_enabled, failed_logins, locked_until, \
         password_hash, totp_secret_encrypted, totp_last_step"
    };
}

/// A user row; the password hash is stored as the empty text when there is none, since
/// the column of schema version 1 cannot be NULL.
fn user(row: &Row) -> Result<(User, UserSecrets), Error> {
    let mut r = row.reader();
    let user = User {
        id: r.parse()?,
        email: r.parse()?,
        role: r.word()?,
        created_at: r.time()?,
        totp_enabled: r.int()? != 0,
        failed_logins: r.u32()?,
        locked_until: r.opt_time()?,
    };
    let secrets = UserSecrets {
        password_hash: Some(r.text()?.to_owned()).filter(|h| !h.is_empty()),
        totp_secret: r.opt_sealed()?,
        totp_last_step: r
            .opt_int()?
            .map(u64::try_from)
            .transpose()
            .map_err(corrupt)?,
    };
    Ok((user, secrets))
}

macro_rules! session_columns {
    () => {
        "id, user_id, stage, csrf_token, created_at, last_seen, expires_at"
    };
}

fn session(row: &Row) -> Result<Session, Error> {
    let mut r = row.reader();
    Ok(Session {
        id: r.parse()?,
        user_id: r.parse()?,
        stage: r.parse()?,
        csrf_token: r.text()?.to_owned(),
        created_at: r.time()?,
        last_seen: r.time()?,
        expires_at: r.time()?,
    })
}

async fn check_user(conn: &mut dyn Conn, id: &UserId) -> Result<(), Error> {
    let rows = conn
        .query("SELECT 1 FROM users WHERE id = $1", vec![text(id)])
        .await?;
    changed(rows.len() as u64, "user", id)
}

fn traffic_point(row: &Row) -> Result<TrafficPoint, Error> {
    let mut r = row.reader();
    let mut count = || r.int().and_then(|n| u64::try_from(n).map_err(corrupt));
    let start = Timestamp::from_unix(i64::try_from(count()?).map_err(corrupt)?)?;
    let mut counts = TrafficCounts {
        requests: count()?,
        errors: count()?,
        ..TrafficCounts::default()
    };
    for bucket in &mut counts.latency {
        *bucket = count()?;
    }
    Ok(TrafficPoint { start, counts })
}

fn all<T>(rows: &[Row], f: impl Fn(&Row) -> Result<T, Error>) -> Result<Vec<T>, Error> {
    rows.iter().map(f).collect()
}

/// The single row of an answer, or [`Error::NotFound`].
fn one<T>(
    rows: &[Row],
    f: impl Fn(&Row) -> Result<T, Error>,
    kind: &'static str,
    id: impl ToString,
) -> Result<T, Error> {
    rows.first().map(f).unwrap_or_else(|| {
        Err(Error::NotFound {
            kind,
            id: id.to_string(),
        })
    })
}

fn changed(rows: u64, kind: &'static str, id: impl ToString) -> Result<(), Error> {
    if rows == 0 {
        Err(Error::NotFound {
            kind,
            id: id.to_string(),
        })
    } else {
        Ok(())
    }
}

fn node_params(node: &NodeRef) -> [Value; 2] {
    [text(node.kind()), text(node.id())]
}

async fn check_origin(conn: &mut dyn Conn, id: &OriginId) -> Result<(), Error> {
    let rows = conn
        .query("SELECT 1 FROM origins WHERE id = $1", vec![text(id)])
        .await?;
    changed(rows.len() as u64, "origin", id)
}

async fn check_edge(conn: &mut dyn Conn, id: &EdgeNodeId) -> Result<(), Error> {
    let rows = conn
        .query("SELECT 1 FROM edge_nodes WHERE id = $1", vec![text(id)])
        .await?;
    changed(rows.len() as u64, "edge node", id)
}

async fn check_node(conn: &mut dyn Conn, node: &NodeRef) -> Result<(), Error> {
    match node {
        NodeRef::Edge(id) => check_edge(conn, id).await,
        NodeRef::Origin(id) => check_origin(conn, id).await,
    }
}

/// The first integer of the first row, e.g. of `COUNT(*)` or `RETURNING id`.
fn first_int(rows: &[Row], what: &str) -> Result<i64, Error> {
    rows.first()
        .ok_or_else(|| corrupt(format_args!("{what} gave no row")))?
        .reader()
        .int()
}

fn token(n: i64) -> Result<u64, Error> {
    u64::try_from(n).map_err(|e| corrupt(format_args!("fencing token {n}: {e}")))
}

fn lease_row(row: &Row) -> Result<LeaseRow, Error> {
    let mut r = row.reader();
    Ok(LeaseRow {
        holder: r.opt_text()?.map(str::to_owned),
        token: token(r.int()?)?,
        expires_at_ms: r.int()?,
    })
}

/// Lease `name` as stored, locked until the transaction ends so that concurrent grants and
/// intents of the lease take turns (PostgreSQL: an `UPDATE` waits for the row's lock and
/// then sees the latest committed version; SQLite: the transaction holds the write lock
/// already). `None` if it was never granted.
async fn lock_lease(conn: &mut dyn Conn, name: &str) -> Result<Option<LeaseRow>, Error> {
    let rows = conn
        .query(
            "UPDATE leases SET token = token WHERE name = $1 \
             RETURNING holder, token, expires_at_ms",
            vec![text(name)],
        )
        .await?;
    rows.first().map(lease_row).transpose()
}

macro_rules! intent_columns {
    () => {
        "id, lease, token, holder, kind, subject, detail, created_at"
    };
}

fn intent(row: &Row) -> Result<Intent, Error> {
    let mut r = row.reader();
    Ok(Intent {
        id: r.int()?,
        lease: r.text()?.to_owned(),
        token: token(r.int()?)?,
        holder: r.text()?.to_owned(),
        kind: r.text()?.to_owned(),
        subject: r.text()?.to_owned(),
        detail: r.parse()?,
        created_at: r.time()?,
    })
}

/// Applies the schema migrations not applied yet, in order, in one transaction.
/// Migration `i` (from 0) is schema version `i + 1`. `lock`, if given, is run first to keep
/// several control planes from migrating at once.
pub(crate) async fn migrate(
    backend: &dyn Backend,
    migrations: &[&'static str],
    lock: Option<&'static str>,
) -> Result<(), Error> {
    let mut conn = backend.connect(true).await?;
    if let Some(lock) = lock {
        conn.batch(lock).await?;
    }
    conn.batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
           version BIGINT PRIMARY KEY,
           applied_at BIGINT NOT NULL
         )",
    )
    .await?;
    let rows = conn
        .query(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            vec![],
        )
        .await?;
    let current = rows.first().map_or(Ok(0), |row| row.reader().int())?;
    let known = migrations.len() as i64;
    if current > known {
        return Err(Error::Storage(
            format!(
                "the database schema is version {current}, newer than this build knows \
                 ({known}); run a newer Kokoa version"
            )
            .into(),
        ));
    }
    for (version, sql) in (1..).zip(migrations).skip(current as usize) {
        conn.batch(sql).await?;
        conn.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            vec![int(version), time(Timestamp::now())],
        )
        .await?;
    }
    Ok(conn.commit().await?)
}

impl SqlStore {
    /// A store over `backend`, whose schema `migrations` made.
    pub(crate) fn new(backend: Box<dyn Backend>, migrations: &[&str]) -> Self {
        Self {
            backend,
            schema: u32::try_from(migrations.len()).unwrap_or(u32::MAX),
        }
    }

    /// The database's clock in Unix milliseconds, read on `conn`.
    async fn now_ms(&self, conn: &mut dyn Conn) -> Result<i64, Error> {
        first_int(
            &conn.query(self.backend.clock(), vec![]).await?,
            "the clock",
        )
    }

    async fn read(&self) -> Result<Box<dyn Conn>, Error> {
        self.backend.connect(false).await
    }

    async fn write(&self) -> Result<Box<dyn Conn>, Error> {
        self.backend.connect(true).await
    }

    /// Runs one statement on its own, for single-row changes that need no transaction.
    async fn execute(&self, sql: &'static str, params: Vec<Value>) -> Result<u64, Error> {
        Ok(self.read().await?.execute(sql, params).await?)
    }

    async fn query(&self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, Error> {
        Ok(self.read().await?.query(sql, params).await?)
    }

    /// One attempt at [`Store::create_origin`]; `Ok(None)` when a concurrent writer took
    /// the subnet first.
    async fn try_create_origin(
        &self,
        pool: &SubnetPool,
        new: &NewOrigin,
    ) -> Result<Option<Origin>, Error> {
        let mut conn = self.write().await?;
        let taken = all(
            &conn
                .query("SELECT network_cidr FROM origins", vec![])
                .await?,
            |row| row.reader().parse::<Ipv4Net>(),
        )?;
        let network_cidr = pool.allocate(&taken)?;
        let origin = Origin {
            id: new.id.clone(),
            name: new.name.clone(),
            domain: new.domain.clone(),
            status: OriginStatus::Inactive,
            last_heartbeat: None,
            last_metrics: None,
            network_cidr,
            wireguard_ip: origin_address(network_cidr)?,
            wireguard_public_key: None,
            created_at: new.created_at,
        };
        let inserted = conn
            .execute(
                concat!(
                    "INSERT INTO origins (",
                    origin_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                vec![
                    text(&origin.id),
                    text(&origin.name),
                    opt_text(origin.domain.as_ref()),
                    word(&origin.status)?,
                    opt_time(origin.last_heartbeat),
                    json(&origin.last_metrics),
                    text(origin.network_cidr),
                    text(origin.wireguard_ip),
                    opt_text(origin.wireguard_public_key.as_ref()),
                    time(origin.created_at),
                ],
            )
            .await;
        match inserted {
            Err(DbError::Unique(key))
                if key == "origins.network_cidr" || key == "origins.wireguard_ip" =>
            {
                return Ok(None);
            }
            other => other.map_err(|e| {
                e.conflict(&[
                    ("origins.id", "origin id", origin.id.as_str()),
                    ("origins.name", "origin name", origin.name.as_str()),
                ])
            })?,
        };
        for s in &new.services {
            conn.execute(
                concat!(
                    "INSERT INTO origin_services (",
                    service_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ),
                vec![
                    text(ServiceId::new()),
                    text(&origin.id),
                    text(&s.name),
                    int(s.port.get()),
                    word(&s.protocol)?,
                    opt_text(s.health_check_path.as_ref()),
                    time(new.created_at),
                ],
            )
            .await
            .map_err(|e| {
                e.conflict(&[(
                    "origin_services.origin_id,name",
                    "service name",
                    s.name.as_str(),
                )])
            })?;
        }
        conn.commit().await?;
        Ok(Some(origin))
    }

    /// One attempt at [`Store::create_tunnel`]; `Ok(None)` when a concurrent writer took
    /// the address or the port first.
    async fn try_create_tunnel(&self, new: &NewTunnel) -> Result<Option<EdgeTunnel>, Error> {
        let mut conn = self.write().await?;
        check_edge(&mut *conn, &new.edge_node_id).await?;
        let origin = one(
            &conn
                .query(
                    concat!("SELECT ", origin_columns!(), " FROM origins WHERE id = $1"),
                    vec![text(&new.origin_id)],
                )
                .await?,
            origin,
            "origin",
            &new.origin_id,
        )?;
        let pair = format!("{} to {}", new.edge_node_id, new.origin_id);
        let existing = conn
            .query(
                "SELECT 1 FROM edge_tunnels WHERE edge_node_id = $1 AND origin_id = $2",
                vec![text(&new.edge_node_id), text(&new.origin_id)],
            )
            .await?;
        if !existing.is_empty() {
            return Err(Error::Conflict {
                what: "edge tunnel",
                value: pair,
            });
        }
        let addresses = all(
            &conn
                .query(
                    "SELECT wireguard_ip FROM edge_tunnels WHERE origin_id = $1",
                    vec![text(&new.origin_id)],
                )
                .await?,
            |row| row.reader().parse::<Ipv4Addr>(),
        )?;
        let ports = all(
            &conn
                .query(
                    "SELECT listen_port FROM edge_tunnels WHERE edge_node_id = $1",
                    vec![text(&new.edge_node_id)],
                )
                .await?,
            |row| row.reader().port(),
        )?;
        let (wireguard_ip, listen_port) =
            allocate_tunnel(&origin, &new.edge_node_id, &addresses, &ports)?;
        let tunnel = EdgeTunnel {
            edge_node_id: new.edge_node_id.clone(),
            origin_id: new.origin_id.clone(),
            wireguard_ip,
            listen_port,
            created_at: new.created_at,
        };
        let inserted = conn
            .execute(
                concat!(
                    "INSERT INTO edge_tunnels (",
                    tunnel_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5)"
                ),
                vec![
                    text(&tunnel.edge_node_id),
                    text(&tunnel.origin_id),
                    text(tunnel.wireguard_ip),
                    int(tunnel.listen_port.get()),
                    time(tunnel.created_at),
                ],
            )
            .await;
        match inserted {
            Err(DbError::Unique(key))
                if key == "edge_tunnels.origin_id,wireguard_ip"
                    || key == "edge_tunnels.edge_node_id,listen_port" =>
            {
                return Ok(None);
            }
            other => other.map_err(|e| {
                e.conflict(&[("edge_tunnels.edge_node_id,origin_id", "edge tunnel", &pair)])
            })?,
        };
        conn.commit().await?;
        Ok(Some(tunnel))
    }
}

#[async_trait]
impl Store for SqlStore {
    async fn create_origin(&self, pool: &SubnetPool, new: NewOrigin) -> Result<Origin, Error> {
        for _ in 0..ALLOCATION_ATTEMPTS {
            if let Some(origin) = self.try_create_origin(pool, &new).await? {
                return Ok(origin);
            }
        }
        Err(Error::Storage(
            format!(
                "could not allocate a subnet for origin {:?}: other origins kept taking the \
                 free one ({ALLOCATION_ATTEMPTS} attempts); try again",
                new.name.as_str()
            )
            .into(),
        ))
    }

    async fn get_origin(&self, id: &OriginId) -> Result<Origin, Error> {
        let rows = self
            .query(
                concat!("SELECT ", origin_columns!(), " FROM origins WHERE id = $1"),
                vec![text(id)],
            )
            .await?;
        one(&rows, origin, "origin", id)
    }

    async fn list_origins(&self) -> Result<Vec<Origin>, Error> {
        let rows = self
            .query(
                concat!("SELECT ", origin_columns!(), " FROM origins"),
                vec![],
            )
            .await?;
        let mut origins = all(&rows, origin)?;
        sort::origins(&mut origins);
        Ok(origins)
    }

    async fn origin_services(&self, id: &OriginId) -> Result<Vec<OriginService>, Error> {
        let mut conn = self.read().await?;
        check_origin(&mut *conn, id).await?;
        let rows = conn
            .query(
                concat!(
                    "SELECT ",
                    service_columns!(),
                    " FROM origin_services WHERE origin_id = $1"
                ),
                vec![text(id)],
            )
            .await?;
        let mut services = all(&rows, service)?;
        sort::services(&mut services);
        Ok(services)
    }

    async fn set_origin_key(&self, id: &OriginId, public_key: &WgPublicKey) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE origins SET wireguard_public_key = $2 WHERE id = $1",
                vec![text(id), text(public_key)],
            )
            .await?;
        changed(rows, "origin", id)
    }

    async fn delete_origin(&self, id: &OriginId, force: bool) -> Result<(), Error> {
        let mut conn = self.write().await?;
        check_origin(&mut *conn, id).await?;
        let rows = conn
            .query(
                "SELECT COUNT(*) FROM routes WHERE origin_id = $1",
                vec![text(id)],
            )
            .await?;
        let routes = rows.first().map_or(Ok(0), |row| row.reader().int())?;
        if routes > 0 && !force {
            return Err(Error::InUse {
                kind: "origin",
                id: id.to_string(),
                by: "routes",
                count: routes.unsigned_abs(),
            });
        }
        for sql in [
            "DELETE FROM routes WHERE origin_id = $1",
            "DELETE FROM origin_services WHERE origin_id = $1",
            "DELETE FROM edge_tunnels WHERE origin_id = $1",
            "DELETE FROM enrollments WHERE node_kind = 'origin' AND node_id = $1",
            "DELETE FROM node_credentials WHERE node_kind = 'origin' AND node_id = $1",
            "DELETE FROM origins WHERE id = $1",
        ] {
            conn.execute(sql, vec![text(id)]).await?;
        }
        Ok(conn.commit().await?)
    }

    async fn record_origin_heartbeat(
        &self,
        id: &OriginId,
        at: Timestamp,
        status: OriginStatus,
        metrics: Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE origins SET last_heartbeat = $2, status = $3, last_metrics = $4 \
                 WHERE id = $1",
                vec![text(id), time(at), word(&status)?, json(&metrics)],
            )
            .await?;
        changed(rows, "origin", id)
    }

    async fn create_route(&self, r: &Route) -> Result<(), Error> {
        let mut conn = self.write().await?;
        check_origin(&mut *conn, &r.origin_id).await?;
        conn.execute(
            concat!(
                "INSERT INTO routes (",
                route_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6)"
            ),
            vec![
                text(&r.id),
                text(&r.hostname),
                text(&r.origin_id),
                int(r.target_port.get()),
                text(r.certificate),
                time(r.created_at),
            ],
        )
        .await
        .map_err(|e| {
            e.conflict(&[
                ("routes.id", "route id", r.id.as_str()),
                ("routes.hostname", "hostname", r.hostname.as_str()),
            ])
        })?;
        Ok(conn.commit().await?)
    }

    async fn get_route(&self, id: &RouteId) -> Result<Route, Error> {
        let rows = self
            .query(
                concat!("SELECT ", route_columns!(), " FROM routes WHERE id = $1"),
                vec![text(id)],
            )
            .await?;
        one(&rows, route, "route", id)
    }

    async fn list_routes(&self) -> Result<Vec<Route>, Error> {
        let rows = self
            .query(concat!("SELECT ", route_columns!(), " FROM routes"), vec![])
            .await?;
        let mut routes = all(&rows, route)?;
        sort::routes(&mut routes);
        Ok(routes)
    }

    async fn update_route(&self, r: &Route) -> Result<(), Error> {
        let mut conn = self.write().await?;
        check_origin(&mut *conn, &r.origin_id).await?;
        let rows = conn
            .execute(
                "UPDATE routes SET hostname = $2, origin_id = $3, target_port = $4, \
                 certificate = $5 WHERE id = $1",
                vec![
                    text(&r.id),
                    text(&r.hostname),
                    text(&r.origin_id),
                    int(r.target_port.get()),
                    text(r.certificate),
                ],
            )
            .await
            .map_err(|e| e.conflict(&[("routes.hostname", "hostname", r.hostname.as_str())]))?;
        changed(rows, "route", &r.id)?;
        Ok(conn.commit().await?)
    }

    async fn delete_route(&self, id: &RouteId) -> Result<(), Error> {
        let rows = self
            .execute("DELETE FROM routes WHERE id = $1", vec![text(id)])
            .await?;
        changed(rows, "route", id)
    }

    async fn create_edge(&self, e: &EdgeNode) -> Result<(), Error> {
        let mut conn = self.write().await?;
        if let Some(origin) = &e.origin_id {
            check_origin(&mut *conn, origin).await?;
        }
        conn.execute(
            concat!(
                "INSERT INTO edge_nodes (",
                edge_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
            ),
            vec![
                text(&e.id),
                text(&e.name),
                opt_text(e.origin_id.as_ref()),
                text(&e.provider),
                text(&e.region),
                opt_text(e.public_ip),
                word(&e.status)?,
                opt_time(e.last_heartbeat),
                json(&e.last_metrics),
                int(e.health_check_failures),
                time(e.created_at),
                opt_time(e.deleted_at),
                opt_text(e.instance_id.as_ref()),
                to_json(&e.lifecycle)?,
                opt_text(e.wireguard_public_key.as_ref()),
            ],
        )
        .await
        .map_err(|err| err.conflict(&[("edge_nodes.id", "edge node id", e.id.as_str())]))?;
        Ok(conn.commit().await?)
    }

    async fn get_edge(&self, id: &EdgeNodeId) -> Result<EdgeNode, Error> {
        let rows = self
            .query(
                concat!("SELECT ", edge_columns!(), " FROM edge_nodes WHERE id = $1"),
                vec![text(id)],
            )
            .await?;
        one(&rows, edge, "edge node", id)
    }

    async fn list_edges(&self) -> Result<Vec<EdgeNode>, Error> {
        let rows = self
            .query(
                concat!("SELECT ", edge_columns!(), " FROM edge_nodes"),
                vec![],
            )
            .await?;
        let mut edges = all(&rows, edge)?;
        sort::edges(&mut edges);
        Ok(edges)
    }

    async fn update_edge(&self, e: &EdgeNode) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE edge_nodes SET name = $2, provider = $3, region = $4, public_ip = $5, \
                 status = $6, deleted_at = $7, instance_id = $8, lifecycle = $9 WHERE id = $1",
                vec![
                    text(&e.id),
                    text(&e.name),
                    text(&e.provider),
                    text(&e.region),
                    opt_text(e.public_ip),
                    word(&e.status)?,
                    opt_time(e.deleted_at),
                    opt_text(e.instance_id.as_ref()),
                    to_json(&e.lifecycle)?,
                ],
            )
            .await?;
        changed(rows, "edge node", &e.id)
    }

    async fn set_edge_key(&self, id: &EdgeNodeId, public_key: &WgPublicKey) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE edge_nodes SET wireguard_public_key = $2 WHERE id = $1",
                vec![text(id), text(public_key)],
            )
            .await?;
        changed(rows, "edge node", id)
    }

    async fn record_edge_heartbeat(
        &self,
        id: &EdgeNodeId,
        at: Timestamp,
        metrics: Option<serde_json::Value>,
    ) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE edge_nodes SET last_heartbeat = $2, last_metrics = $3 WHERE id = $1",
                vec![text(id), time(at), json(&metrics)],
            )
            .await?;
        changed(rows, "edge node", id)
    }

    async fn create_tunnel(&self, new: NewTunnel) -> Result<EdgeTunnel, Error> {
        for _ in 0..ALLOCATION_ATTEMPTS {
            if let Some(tunnel) = self.try_create_tunnel(&new).await? {
                return Ok(tunnel);
            }
        }
        Err(Error::Storage(
            format!(
                "could not allocate a tunnel from edge {} to origin {}: other tunnels kept \
                 taking the free address or port ({ALLOCATION_ATTEMPTS} attempts); try again",
                new.edge_node_id, new.origin_id
            )
            .into(),
        ))
    }

    async fn list_tunnels(
        &self,
        edge: Option<&EdgeNodeId>,
        origin: Option<&OriginId>,
    ) -> Result<Vec<EdgeTunnel>, Error> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    tunnel_columns!(),
                    " FROM edge_tunnels WHERE ($1 IS NULL OR edge_node_id = $1) \
                     AND ($2 IS NULL OR origin_id = $2)"
                ),
                vec![opt_text(edge), opt_text(origin)],
            )
            .await?;
        let mut tunnels = all(&rows, tunnel)?;
        sort::tunnels(&mut tunnels);
        Ok(tunnels)
    }

    async fn delete_tunnels_of_edge(&self, edge: &EdgeNodeId) -> Result<u64, Error> {
        self.execute(
            "DELETE FROM edge_tunnels WHERE edge_node_id = $1",
            vec![text(edge)],
        )
        .await
    }

    async fn create_api_token(&self, t: &ApiToken, hash: &TokenHash) -> Result<(), Error> {
        self.read()
            .await?
            .execute(
                concat!(
                    "INSERT INTO api_tokens (",
                    api_token_columns!(),
                    ", token_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ),
                vec![
                    text(&t.id),
                    text(&t.name),
                    word(&t.role)?,
                    time(t.created_at),
                    opt_time(t.last_used_at),
                    opt_time(t.revoked_at),
                    text(hash.as_str()),
                ],
            )
            .await
            .map_err(|e| {
                e.conflict(&[
                    ("api_tokens.id", "API token id", t.id.as_str()),
                    ("api_tokens.token_hash", "token hash", hash.as_str()),
                ])
            })?;
        Ok(())
    }

    async fn find_api_token(&self, hash: &TokenHash) -> Result<Option<ApiToken>, Error> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    api_token_columns!(),
                    " FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
                ),
                vec![text(hash.as_str())],
            )
            .await?;
        rows.first().map(api_token).transpose()
    }

    async fn touch_api_token(&self, id: &ApiTokenId, at: Timestamp) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1",
                vec![text(id), time(at)],
            )
            .await?;
        changed(rows, "API token", id)
    }

    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>, Error> {
        let rows = self
            .query(
                concat!("SELECT ", api_token_columns!(), " FROM api_tokens"),
                vec![],
            )
            .await?;
        let mut tokens = all(&rows, api_token)?;
        sort::api_tokens(&mut tokens);
        Ok(tokens)
    }

    async fn revoke_api_token(&self, id: &ApiTokenId, at: Timestamp) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
                vec![text(id), time(at)],
            )
            .await?;
        changed(rows, "API token", id)
    }

    async fn create_enrollment(&self, e: &Enrollment, hash: &TokenHash) -> Result<(), Error> {
        let mut conn = self.write().await?;
        check_node(&mut *conn, &e.node).await?;
        let [kind, node_id] = node_params(&e.node);
        conn.execute(
            concat!(
                "INSERT INTO enrollments (",
                enrollment_columns!(),
                ", token_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            vec![
                text(&e.id),
                kind,
                node_id,
                time(e.expires_at),
                int(e.uses_left),
                time(e.created_at),
                text(hash.as_str()),
            ],
        )
        .await
        .map_err(|err| {
            err.conflict(&[
                ("enrollments.id", "enrollment id", e.id.as_str()),
                ("enrollments.token_hash", "token hash", hash.as_str()),
            ])
        })?;
        Ok(conn.commit().await?)
    }

    async fn find_enrollment(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<Enrollment>, Error> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    enrollment_columns!(),
                    " FROM enrollments WHERE token_hash = $1"
                ),
                vec![text(hash.as_str())],
            )
            .await?;
        Ok(rows
            .first()
            .map(enrollment)
            .transpose()?
            .filter(|e| e.is_usable(now)))
    }

    async fn redeem_enrollment(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        credential_id: &NodeCredentialId,
        credential_hash: &TokenHash,
    ) -> Result<NodeCredential, Error> {
        let mut conn = self.write().await?;
        let rows = conn
            .query(
                concat!(
                    "SELECT ",
                    enrollment_columns!(),
                    " FROM enrollments WHERE token_hash = $1"
                ),
                vec![text(hash.as_str())],
            )
            .await?;
        let enrollment = rows
            .first()
            .map(enrollment)
            .transpose()?
            .ok_or(super::UNKNOWN_ENROLLMENT)?;
        super::check_redeemable(&enrollment, now)?;
        if check_node(&mut *conn, &enrollment.node).await.is_err() {
            return Err(super::NODE_GONE);
        }
        // The condition guards against a concurrent redemption that used the last use
        // between the read above and this write.
        let rows = conn
            .execute(
                "UPDATE enrollments SET uses_left = uses_left - 1 WHERE id = $1 AND uses_left > 0",
                vec![text(&enrollment.id)],
            )
            .await?;
        if rows == 0 {
            return Err(Error::EnrollmentRefused {
                reason: "the token has been used up",
            });
        }
        let credential = NodeCredential {
            id: credential_id.clone(),
            node: enrollment.node,
            created_at: now,
            revoked_at: None,
        };
        let [kind, node_id] = node_params(&credential.node);
        conn.execute(
            "INSERT INTO node_credentials (id, node_kind, node_id, created_at, revoked_at, \
             token_hash) VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                text(&credential.id),
                kind,
                node_id,
                time(now),
                opt_time(None),
                text(credential_hash.as_str()),
            ],
        )
        .await
        .map_err(|e| {
            e.conflict(&[
                (
                    "node_credentials.id",
                    "node credential id",
                    credential_id.as_str(),
                ),
                (
                    "node_credentials.token_hash",
                    "token hash",
                    credential_hash.as_str(),
                ),
            ])
        })?;
        conn.commit().await?;
        Ok(credential)
    }

    async fn find_node_credential(
        &self,
        hash: &TokenHash,
    ) -> Result<Option<NodeCredential>, Error> {
        let rows = self
            .query(
                "SELECT id, node_kind, node_id, created_at, revoked_at FROM node_credentials \
                 WHERE token_hash = $1 AND revoked_at IS NULL",
                vec![text(hash.as_str())],
            )
            .await?;
        rows.first().map(credential).transpose()
    }

    async fn revoke_node_credentials(&self, node: &NodeRef, at: Timestamp) -> Result<u64, Error> {
        let mut conn = self.write().await?;
        let [kind, id] = node_params(node);
        let revoked = conn
            .execute(
                "UPDATE node_credentials SET revoked_at = $3 \
                 WHERE node_kind = $1 AND node_id = $2 AND revoked_at IS NULL",
                vec![kind.clone(), id.clone(), time(at)],
            )
            .await?;
        conn.execute(
            "UPDATE enrollments SET uses_left = 0 WHERE node_kind = $1 AND node_id = $2",
            vec![kind, id],
        )
        .await?;
        conn.commit().await?;
        Ok(revoked)
    }

    async fn add_dns_record(&self, r: &DnsRecord) -> Result<(), Error> {
        let mut conn = self.write().await?;
        if let Some(edge) = &r.edge_node_id {
            check_edge(&mut *conn, edge).await?;
        }
        conn.execute(
            concat!(
                "INSERT INTO dns_records (",
                dns_record_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            vec![
                text(&r.id),
                text(&r.hostname),
                word(&r.data.record_type())?,
                text(r.data.value()),
                opt_text(r.provider_record_id.as_ref()),
                text(&r.provider),
                opt_text(r.edge_node_id.as_ref()),
                time(r.created_at),
                opt_text(r.zone_id.as_ref()),
            ],
        )
        .await
        .map_err(|e| e.conflict(&[("dns_records.id", "DNS record id", r.id.as_str())]))?;
        Ok(conn.commit().await?)
    }

    async fn list_dns_records(&self, hostname: Option<&Hostname>) -> Result<Vec<DnsRecord>, Error> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    dns_record_columns!(),
                    " FROM dns_records WHERE ($1 IS NULL OR hostname = $1)"
                ),
                vec![opt_text(hostname)],
            )
            .await?;
        let mut records = all(&rows, dns_record)?;
        sort::dns_records(&mut records);
        Ok(records)
    }

    async fn delete_dns_record(&self, id: &DnsRecordId) -> Result<(), Error> {
        let rows = self
            .execute("DELETE FROM dns_records WHERE id = $1", vec![text(id)])
            .await?;
        changed(rows, "DNS record", id)
    }

    async fn record_health_check(
        &self,
        c: &HealthCheck,
        consecutive_failures: Option<u32>,
    ) -> Result<(), Error> {
        let mut conn = self.write().await?;
        let rows = conn
            .execute(
                "UPDATE edge_nodes SET health_check_failures = \
                 COALESCE($2, health_check_failures) WHERE id = $1",
                vec![text(&c.edge_node_id), opt_int(consecutive_failures)],
            )
            .await?;
        changed(rows, "edge node", &c.edge_node_id)?;
        conn.execute(
            "INSERT INTO health_checks (edge_node_id, check_name, status, response_time_ms, \
             error_message, checked_at) VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                text(&c.edge_node_id),
                text(&c.check),
                word(&c.status)?,
                opt_int(c.response_time_ms),
                opt_text(c.error_message.as_ref()),
                time(c.checked_at),
            ],
        )
        .await?;
        Ok(conn.commit().await?)
    }

    async fn health_history(
        &self,
        edge: &EdgeNodeId,
        limit: u32,
    ) -> Result<Vec<HealthCheck>, Error> {
        let rows = self
            .query(
                "SELECT edge_node_id, check_name, status, response_time_ms, error_message, \
                 checked_at FROM health_checks WHERE edge_node_id = $1 \
                 ORDER BY checked_at DESC, id DESC LIMIT $2",
                vec![text(edge), int(limit)],
            )
            .await?;
        all(&rows, health_check)
    }

    async fn prune_health_checks(&self, before: Timestamp) -> Result<u64, Error> {
        self.execute(
            "DELETE FROM health_checks WHERE checked_at < $1",
            vec![time(before)],
        )
        .await
    }

    async fn schema_versions(&self) -> Result<(u32, u32), Error> {
        let found = first_int(
            &self
                .query(
                    "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                    vec![],
                )
                .await?,
            "the schema version",
        )?;
        Ok((u32::try_from(found).map_err(corrupt)?, self.schema))
    }

    async fn add_traffic(&self, rows: &[TrafficRow]) -> Result<(), Error> {
        let mut conn = self.write().await?;
        for row in rows {
            let mut params = vec![
                int(row.resolution.code()),
                text(row.scope.kind()),
                text(row.scope.key()),
                time(row.start),
                count(row.counts.requests),
                count(row.counts.errors),
            ];
            params.extend(row.counts.latency.iter().map(|n| count(*n)));
            conn.execute(
                "INSERT INTO traffic (resolution, scope_kind, scope, bucket_start, requests, \
                 errors, latency_0, latency_1, latency_2, latency_3, latency_4, latency_5, latency_6, latency_7, latency_8, latency_9, latency_10, latency_11) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
                 ON CONFLICT (resolution, scope_kind, scope, bucket_start) DO UPDATE SET \
                 requests = traffic.requests + excluded.requests, \
                 errors = traffic.errors + excluded.errors, \
                 latency_0 = traffic.latency_0 + excluded.latency_0, latency_1 = traffic.latency_1 + excluded.latency_1, latency_2 = traffic.latency_2 + excluded.latency_2, latency_3 = traffic.latency_3 + excluded.latency_3, latency_4 = traffic.latency_4 + excluded.latency_4, latency_5 = traffic.latency_5 + excluded.latency_5, latency_6 = traffic.latency_6 + excluded.latency_6, latency_7 = traffic.latency_7 + excluded.latency_7, latency_8 = traffic.latency_8 + excluded.latency_8, latency_9 = traffic.latency_9 + excluded.latency_9, latency_10 = traffic.latency_10 + excluded.latency_10, latency_11 = traffic.latency_11 + excluded.latency_11",
                params,
            )
            .await?;
        }
        Ok(conn.commit().await?)
    }

    async fn traffic_series(
        &self,
        resolution: TrafficResolution,
        scope: &TrafficScope,
        since: Timestamp,
    ) -> Result<Vec<TrafficPoint>, Error> {
        let rows = self
            .query(
                "SELECT bucket_start, requests, errors, latency_0, latency_1, latency_2, latency_3, latency_4, latency_5, latency_6, latency_7, latency_8, latency_9, latency_10, latency_11 \
                 FROM traffic WHERE resolution = $1 AND scope_kind = $2 AND scope = $3 \
                 AND bucket_start >= $4 ORDER BY bucket_start",
                vec![
                    int(resolution.code()),
                    text(scope.kind()),
                    text(scope.key()),
                    time(since),
                ],
            )
            .await?;
        all(&rows, traffic_point)
    }

    async fn prune_traffic(
        &self,
        resolution: TrafficResolution,
        before: Timestamp,
    ) -> Result<u64, Error> {
        self.execute(
            "DELETE FROM traffic WHERE resolution = $1 AND bucket_start < $2",
            vec![int(resolution.code()), time(before)],
        )
        .await
    }

    async fn create_user(&self, u: &User, password_hash: Option<&str>) -> Result<(), Error> {
        self.read()
            .await?
            .execute(
                concat!(
                    "INSERT INTO users (",
                    user_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL)"
                ),
                vec![
                    text(&u.id),
                    text(&u.email),
                    word(&u.role)?,
                    time(u.created_at),
                    int(i64::from(u.totp_enabled)),
                    int(u.failed_logins),
                    opt_time(u.locked_until),
                    text(password_hash.unwrap_or_default()),
                ],
            )
            .await
            .map_err(|e| {
                e.conflict(&[
                    ("users.id", "user id", u.id.as_str()),
                    ("users.email", "e-mail address", u.email.as_str()),
                ])
            })?;
        Ok(())
    }

    async fn find_user_by_email(
        &self,
        email: &Email,
    ) -> Result<Option<(User, UserSecrets)>, Error> {
        let rows = self
            .query(
                concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1"),
                vec![text(email)],
            )
            .await?;
        rows.first().map(user).transpose()
    }

    async fn get_user(&self, id: &UserId) -> Result<(User, UserSecrets), Error> {
        let rows = self
            .query(
                concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"),
                vec![text(id)],
            )
            .await?;
        one(&rows, user, "user", id)
    }

    async fn list_users(&self) -> Result<Vec<User>, Error> {
        let rows = self
            .query(concat!("SELECT ", user_columns!(), " FROM users"), vec![])
            .await?;
        let mut users: Vec<User> = all(&rows, user)?.into_iter().map(|(u, _)| u).collect();
        sort::users(&mut users);
        Ok(users)
    }

    async fn set_user_role(&self, id: &UserId, role: Role) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE users SET role = $2 WHERE id = $1",
                vec![text(id), word(&role)?],
            )
            .await?;
        changed(rows, "user", id)
    }

    async fn set_user_password(
        &self,
        id: &UserId,
        password_hash: Option<&str>,
    ) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE users SET password_hash = $2, failed_logins = 0, locked_until = NULL \
                 WHERE id = $1",
                vec![text(id), text(password_hash.unwrap_or_default())],
            )
            .await?;
        changed(rows, "user", id)
    }

    async fn set_user_totp(
        &self,
        id: &UserId,
        secret: Option<&Sealed>,
        enabled: bool,
        recovery_codes: &[TokenHash],
    ) -> Result<(), Error> {
        let mut conn = self.write().await?;
        let rows = conn
            .execute(
                "UPDATE users SET totp_secret_encrypted = $2, totp_enabled = $3, \
                 totp_last_step = NULL WHERE id = $1",
                vec![
                    text(id),
                    opt_text(secret.map(Sealed::as_str)),
                    int(i64::from(enabled)),
                ],
            )
            .await?;
        changed(rows, "user", id)?;
        conn.execute(
            "DELETE FROM user_recovery_codes WHERE user_id = $1",
            vec![text(id)],
        )
        .await?;
        for code in recovery_codes {
            conn.execute(
                "INSERT INTO user_recovery_codes (user_id, code_hash) VALUES ($1, $2)",
                vec![text(id), text(code.as_str())],
            )
            .await
            .map_err(|e| {
                e.conflict(&[(
                    "user_recovery_codes.user_id,code_hash",
                    "recovery code",
                    "(a repeated code)",
                )])
            })?;
        }
        Ok(conn.commit().await?)
    }

    async fn use_totp_step(&self, id: &UserId, step: u64) -> Result<bool, Error> {
        let step = i64::try_from(step).map_err(corrupt)?;
        let rows = self
            .execute(
                "UPDATE users SET totp_last_step = $2 WHERE id = $1 \
                 AND (totp_last_step IS NULL OR totp_last_step < $2)",
                vec![text(id), int(step)],
            )
            .await?;
        if rows == 0 {
            self.get_user(id).await?;
        }
        Ok(rows > 0)
    }

    async fn use_recovery_code(&self, id: &UserId, code: &TokenHash) -> Result<bool, Error> {
        let rows = self
            .execute(
                "DELETE FROM user_recovery_codes WHERE user_id = $1 AND code_hash = $2",
                vec![text(id), text(code.as_str())],
            )
            .await?;
        Ok(rows > 0)
    }

    async fn recovery_codes_left(&self, id: &UserId) -> Result<u32, Error> {
        self.get_user(id).await?;
        let rows = self
            .query(
                "SELECT COUNT(*) FROM user_recovery_codes WHERE user_id = $1",
                vec![text(id)],
            )
            .await?;
        one(&rows, |row| row.reader().u32(), "user", id)
    }

    async fn record_login_failure(
        &self,
        id: &UserId,
        threshold: u32,
        lock_until: Timestamp,
    ) -> Result<User, Error> {
        let mut conn = self.write().await?;
        let rows = conn
            .execute(
                "UPDATE users SET \
                 locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END, \
                 failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END \
                 WHERE id = $1",
                vec![text(id), int(threshold), time(lock_until)],
            )
            .await?;
        changed(rows, "user", id)?;
        let rows = conn
            .query(
                concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"),
                vec![text(id)],
            )
            .await?;
        let (found, _) = one(&rows, user, "user", id)?;
        conn.commit().await?;
        Ok(found)
    }

    async fn record_login_success(&self, id: &UserId) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1",
                vec![text(id)],
            )
            .await?;
        changed(rows, "user", id)
    }

    async fn delete_user(&self, id: &UserId) -> Result<(), Error> {
        let mut conn = self.write().await?;
        for sql in [
            "DELETE FROM sessions WHERE user_id = $1",
            "DELETE FROM user_recovery_codes WHERE user_id = $1",
        ] {
            conn.execute(sql, vec![text(id)]).await?;
        }
        let rows = conn
            .execute("DELETE FROM users WHERE id = $1", vec![text(id)])
            .await?;
        changed(rows, "user", id)?;
        Ok(conn.commit().await?)
    }

    async fn create_session(&self, s: &Session, hash: &TokenHash) -> Result<(), Error> {
        let mut conn = self.write().await?;
        check_user(&mut *conn, &s.user_id).await?;
        conn.execute(
            concat!(
                "INSERT INTO sessions (",
                session_columns!(),
                ", token_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            vec![
                text(&s.id),
                text(&s.user_id),
                text(s.stage.as_str()),
                text(&s.csrf_token),
                time(s.created_at),
                time(s.last_seen),
                time(s.expires_at),
                text(hash.as_str()),
            ],
        )
        .await
        .map_err(|e| {
            e.conflict(&[
                ("sessions.id", "session id", s.id.as_str()),
                ("sessions.token_hash", "token hash", hash.as_str()),
            ])
        })?;
        Ok(conn.commit().await?)
    }

    async fn find_session(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<Session>, Error> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    session_columns!(),
                    " FROM sessions WHERE token_hash = $1 AND expires_at > $2"
                ),
                vec![text(hash.as_str()), time(now)],
            )
            .await?;
        rows.first().map(session).transpose()
    }

    async fn touch_session(
        &self,
        id: &SessionId,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE sessions SET last_seen = $2, expires_at = $3 WHERE id = $1",
                vec![text(id), time(last_seen), time(expires_at)],
            )
            .await?;
        changed(rows, "session", id)
    }

    async fn delete_session(&self, id: &SessionId) -> Result<bool, Error> {
        let rows = self
            .execute("DELETE FROM sessions WHERE id = $1", vec![text(id)])
            .await?;
        Ok(rows > 0)
    }

    async fn delete_user_sessions(&self, user: &UserId) -> Result<u64, Error> {
        self.execute("DELETE FROM sessions WHERE user_id = $1", vec![text(user)])
            .await
    }

    async fn prune_sessions(&self, now: Timestamp) -> Result<u64, Error> {
        self.execute(
            "DELETE FROM sessions WHERE expires_at <= $1",
            vec![time(now)],
        )
        .await
    }

    async fn put_certificate(&self, c: &Certificate, key: Option<&Sealed>) -> Result<(), Error> {
        let names = certificate_names(&c.names);
        self.read()
            .await?
            .execute(
                concat!(
                    "INSERT INTO certificates (",
                    certificate_columns!(),
                    ", private_key_encrypted) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (id) DO UPDATE SET names = excluded.names, \
                 source = excluded.source, method = excluded.method, issuer = excluded.issuer, \
                 not_before = excluded.not_before, not_after = excluded.not_after, \
                 sha256 = excluded.sha256, chain_pem = excluded.chain_pem, \
                 next_renewal = excluded.next_renewal, failures = excluded.failures, \
                 last_error = excluded.last_error, updated_at = excluded.updated_at, \
                 private_key_encrypted = COALESCE(excluded.private_key_encrypted, \
                 certificates.private_key_encrypted)"
                ),
                vec![
                    text(&c.id),
                    text(&names),
                    word(&c.source)?,
                    text(c.method),
                    opt_text(c.issuer.as_ref()),
                    opt_time(c.not_before),
                    opt_time(c.not_after),
                    opt_text(c.sha256.as_ref()),
                    opt_text(c.chain_pem.as_ref()),
                    opt_time(c.next_renewal),
                    int(c.failures),
                    opt_text(c.last_error.as_ref()),
                    time(c.created_at),
                    time(c.updated_at),
                    opt_text(key.map(Sealed::as_str)),
                ],
            )
            .await
            .map_err(|e| e.conflict(&[("certificates.names", "certificate names", &names)]))?;
        Ok(())
    }

    async fn get_certificate(&self, id: &CertificateId) -> Result<Certificate, Error> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    certificate_columns!(),
                    " FROM certificates WHERE id = $1"
                ),
                vec![text(id)],
            )
            .await?;
        one(&rows, certificate, "certificate", id)
    }

    async fn list_certificates(&self) -> Result<Vec<Certificate>, Error> {
        let rows = self
            .query(
                concat!("SELECT ", certificate_columns!(), " FROM certificates"),
                vec![],
            )
            .await?;
        let mut all = all(&rows, certificate)?;
        sort::certificates(&mut all);
        Ok(all)
    }

    async fn certificate_key(&self, id: &CertificateId) -> Result<Option<Sealed>, Error> {
        let rows = self
            .query(
                "SELECT private_key_encrypted FROM certificates WHERE id = $1",
                vec![text(id)],
            )
            .await?;
        one(&rows, |row| row.reader().opt_sealed(), "certificate", id)
    }

    async fn delete_certificate(&self, id: &CertificateId) -> Result<(), Error> {
        let rows = self
            .execute("DELETE FROM certificates WHERE id = $1", vec![text(id)])
            .await?;
        changed(rows, "certificate", id)
    }

    async fn create_dns_zone(
        &self,
        z: &DnsZone,
        credentials: Option<&Sealed>,
    ) -> Result<(), Error> {
        self.read()
            .await?
            .execute(
                concat!(
                    "INSERT INTO dns_zones (",
                    dns_zone_columns!(),
                    ", credentials_encrypted) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                vec![
                    text(&z.id),
                    text(&z.name),
                    text(&z.provider),
                    opt_text(z.provider_zone_id.as_ref()),
                    text(&z.settings),
                    int(z.ttl),
                    time(z.created_at),
                    opt_text(credentials.map(Sealed::as_str)),
                ],
            )
            .await
            .map_err(|e| {
                e.conflict(&[
                    ("dns_zones.name", "zone name", z.name.as_str()),
                    ("dns_zones.id", "DNS zone id", z.id.as_str()),
                ])
            })?;
        Ok(())
    }

    async fn get_dns_zone(&self, id: &DnsZoneId) -> Result<DnsZone, Error> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    dns_zone_columns!(),
                    " FROM dns_zones WHERE id = $1"
                ),
                vec![text(id)],
            )
            .await?;
        one(&rows, dns_zone, "DNS zone", id)
    }

    async fn list_dns_zones(&self) -> Result<Vec<DnsZone>, Error> {
        let rows = self
            .query(
                concat!("SELECT ", dns_zone_columns!(), " FROM dns_zones"),
                vec![],
            )
            .await?;
        let mut all = all(&rows, dns_zone)?;
        sort::dns_zones(&mut all);
        Ok(all)
    }

    async fn update_dns_zone(
        &self,
        z: &DnsZone,
        credentials: Option<&Sealed>,
    ) -> Result<(), Error> {
        let rows = self
            .execute(
                "UPDATE dns_zones SET provider_zone_id = $2, settings = $3, ttl = $4, \
                 credentials_encrypted = COALESCE($5, credentials_encrypted) WHERE id = $1",
                vec![
                    text(&z.id),
                    opt_text(z.provider_zone_id.as_ref()),
                    text(&z.settings),
                    int(z.ttl),
                    opt_text(credentials.map(Sealed::as_str)),
                ],
            )
            .await?;
        changed(rows, "DNS zone", &z.id)
    }

    async fn dns_zone_credentials(&self, id: &DnsZoneId) -> Result<Option<Sealed>, Error> {
        let rows = self
            .query(
                "SELECT credentials_encrypted FROM dns_zones WHERE id = $1",
                vec![text(id)],
            )
            .await?;
        one(&rows, |row| row.reader().opt_sealed(), "DNS zone", id)
    }

    async fn delete_dns_zone(&self, id: &DnsZoneId) -> Result<(), Error> {
        let mut conn = self.write().await?;
        let records = conn
            .query(
                "SELECT COUNT(*) FROM dns_records WHERE zone_id = $1",
                vec![text(id)],
            )
            .await?;
        let count = records
            .first()
            .map(|r| r.reader().int())
            .transpose()?
            .unwrap_or(0);
        let exists = conn
            .query("SELECT 1 FROM dns_zones WHERE id = $1", vec![text(id)])
            .await?;
        changed(exists.len() as u64, "DNS zone", id)?;
        if count > 0 {
            return Err(Error::InUse {
                kind: "DNS zone",
                id: id.to_string(),
                by: "DNS records",
                count: u64::try_from(count).unwrap_or(0),
            });
        }
        conn.execute("DELETE FROM dns_zones WHERE id = $1", vec![text(id)])
            .await?;
        Ok(conn.commit().await?)
    }

    async fn append_event(&self, e: &NewEvent) -> Result<Event, Error> {
        let mut conn = self.write().await?;
        let rows = conn
            .query(
                "INSERT INTO events (kind, severity, subject, message, data, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                vec![
                    text(&e.kind),
                    word(&e.severity)?,
                    opt_text(e.subject.as_ref()),
                    text(&e.message),
                    text(&e.data),
                    time(e.created_at),
                ],
            )
            .await?;
        let id = rows
            .first()
            .ok_or_else(|| corrupt("INSERT ... RETURNING gave no row"))?
            .reader()
            .int()?;
        conn.commit().await?;
        Ok(Event {
            id,
            kind: e.kind.clone(),
            severity: e.severity,
            subject: e.subject.clone(),
            message: e.message.clone(),
            data: e.data.clone(),
            created_at: e.created_at,
        })
    }

    async fn list_events(&self, f: &EventFilter) -> Result<Vec<Event>, Error> {
        macro_rules! select {
            ($order:literal) => {
                concat!(
                    "SELECT id, kind, severity, subject, message, data, created_at FROM events \
                     WHERE ($1 IS NULL OR id > $1) AND ($2 IS NULL OR id < $2) \
                     AND ($3 IS NULL OR subject = $3) AND ($4 IS NULL OR kind = $4) \
                     AND ($5 IS NULL OR substr(kind, 1, length($5)) = $5) \
                     AND (CASE severity WHEN 'info' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END) \
                     >= $6 ORDER BY id ",
                    $order,
                    " LIMIT $7"
                )
            };
        }
        let (exact, prefix) = match f.kind.as_deref() {
            Some(pattern) => match pattern.strip_suffix('*') {
                Some(prefix) => (None, Some(prefix)),
                None => (Some(pattern), None),
            },
            None => (None, None),
        };
        let rank = match f.min_severity {
            None | Some(Severity::Info) => 0,
            Some(Severity::Warning) => 1,
            Some(_) => 2,
        };
        let sql = if f.after.is_some() {
            select!("ASC")
        } else {
            select!("DESC")
        };
        let rows = self
            .query(
                sql,
                vec![
                    opt_int(f.after),
                    opt_int(f.before),
                    opt_text(f.subject.as_ref()),
                    opt_text(exact),
                    opt_text(prefix),
                    int(rank),
                    int(f.limit),
                ],
            )
            .await?;
        all(&rows, event)
    }

    async fn prune_events(&self, before: Timestamp) -> Result<u64, Error> {
        self.execute(
            "DELETE FROM events WHERE created_at < $1",
            vec![time(before)],
        )
        .await
    }

    async fn kv_get(
        &self,
        namespace: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<String>, Error> {
        let rows = self
            .query(
                "SELECT value FROM shared_values WHERE namespace = $1 AND key = $2 \
                 AND (expires_at IS NULL OR expires_at > $3)",
                vec![text(namespace), text(key), time(now)],
            )
            .await?;
        rows.first()
            .map(|row| Ok(row.reader().text()?.to_owned()))
            .transpose()
    }

    async fn kv_list(
        &self,
        namespace: &str,
        now: Timestamp,
    ) -> Result<Vec<(String, String)>, Error> {
        let rows = self
            .query(
                "SELECT key, value FROM shared_values WHERE namespace = $1 \
                 AND (expires_at IS NULL OR expires_at > $2)",
                vec![text(namespace), time(now)],
            )
            .await?;
        let mut pairs = all(&rows, |row| {
            let mut r = row.reader();
            Ok((r.text()?.to_owned(), r.text()?.to_owned()))
        })?;
        pairs.sort();
        Ok(pairs)
    }

    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<(), Error> {
        self.execute(
            "INSERT INTO shared_values (namespace, key, value, expires_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (namespace, key) \
             DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            vec![
                text(namespace),
                text(key),
                text(value),
                opt_time(expires_at),
            ],
        )
        .await?;
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, Error> {
        let rows = self
            .execute(
                "DELETE FROM shared_values WHERE namespace = $1 AND key = $2",
                vec![text(namespace), text(key)],
            )
            .await?;
        Ok(rows > 0)
    }

    async fn kv_prune(&self, now: Timestamp) -> Result<u64, Error> {
        self.execute(
            "DELETE FROM shared_values WHERE expires_at IS NOT NULL AND expires_at <= $1",
            vec![time(now)],
        )
        .await
    }

    async fn kv_claim(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, Error> {
        let rows = self
            .execute(
                "INSERT INTO shared_values (namespace, key, value, expires_at) \
                 VALUES ($1, $2, $3, $5) ON CONFLICT (namespace, key) \
                 DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at \
                 WHERE shared_values.value = excluded.value \
                 OR (shared_values.expires_at IS NOT NULL AND shared_values.expires_at <= $4)",
                vec![
                    text(namespace),
                    text(key),
                    text(value),
                    time(now),
                    time(expires_at),
                ],
            )
            .await?;
        Ok(rows > 0)
    }

    async fn lease_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        let mut conn = self.write().await?;
        // A lease is never deleted, so its token is never given out again; its row is made
        // on first use and then locked like any other.
        conn.execute(
            "INSERT INTO leases (name, holder, token, expires_at_ms) VALUES ($1, NULL, 0, 0) \
             ON CONFLICT (name) DO NOTHING",
            vec![text(name)],
        )
        .await?;
        let row = lock_lease(&mut *conn, name)
            .await?
            .ok_or_else(|| corrupt(format_args!("lease {name:?} vanished")))?;
        // Read after the lock: time spent waiting for it must not count against the holder.
        let now = self.now_ms(&mut *conn).await?;
        let Some((row, lease)) = lease::grant(name, &row, holder, now, ttl) else {
            return Ok(None);
        };
        conn.execute(
            "UPDATE leases SET holder = $2, token = $3, expires_at_ms = $4 WHERE name = $1",
            vec![
                text(name),
                text(holder),
                int(i64::try_from(row.token).map_err(corrupt)?),
                int(row.expires_at_ms),
            ],
        )
        .await?;
        conn.commit().await?;
        Ok(Some(lease))
    }

    async fn lease_release(&self, name: &str, holder: &str) -> Result<bool, Error> {
        let mut conn = self.write().await?;
        let Some(row) = lock_lease(&mut *conn, name).await? else {
            return Ok(false);
        };
        let now = self.now_ms(&mut *conn).await?;
        let Some(row) = lease::release(&row, holder, now) else {
            return Ok(false);
        };
        conn.execute(
            "UPDATE leases SET holder = NULL, expires_at_ms = $2 WHERE name = $1",
            vec![text(name), int(row.expires_at_ms)],
        )
        .await?;
        conn.commit().await?;
        Ok(true)
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<Lease>, Error> {
        let mut conn = self.read().await?;
        let rows = conn
            .query(
                "SELECT holder, token, expires_at_ms FROM leases WHERE name = $1",
                vec![text(name)],
            )
            .await?;
        let Some(row) = rows.first().map(lease_row).transpose()? else {
            return Ok(None);
        };
        let now = self.now_ms(&mut *conn).await?;
        Ok(row.lease(name, now, false))
    }

    async fn record_intent(&self, fence: &Fence, new: &NewIntent) -> Result<Intent, Error> {
        let mut conn = self.write().await?;
        // The lock keeps a new term from starting until this intent is committed, so an
        // intent is always recorded inside its term.
        let row = lock_lease(&mut *conn, &fence.lease).await?;
        let now = self.now_ms(&mut *conn).await?;
        lease::check_fence(fence, row.as_ref(), now)?;
        let created_at = lease::timestamp(now)?;
        let token = i64::try_from(fence.token).map_err(corrupt)?;
        let rows = conn
            .query(
                "INSERT INTO intents (lease, token, holder, kind, subject, detail, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                vec![
                    text(&fence.lease),
                    int(token),
                    text(&fence.holder),
                    text(&new.kind),
                    text(&new.subject),
                    text(&new.detail),
                    time(created_at),
                ],
            )
            .await?;
        let id = first_int(&rows, "INSERT ... RETURNING")?;
        conn.commit().await?;
        Ok(Intent {
            id,
            lease: fence.lease.clone(),
            token: fence.token,
            holder: fence.holder.clone(),
            kind: new.kind.clone(),
            subject: new.subject.clone(),
            detail: new.detail.clone(),
            created_at,
        })
    }

    async fn list_intents(&self, after: Option<i64>, limit: u32) -> Result<Vec<Intent>, Error> {
        let rows = self
            .query(
                concat!(
                    "SELECT ",
                    intent_columns!(),
                    " FROM intents WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
                ),
                vec![opt_int(after), int(limit)],
            )
            .await?;
        all(&rows, intent)
    }

    async fn prune_intents(&self, before: Timestamp) -> Result<u64, Error> {
        self.execute(
            "DELETE FROM intents WHERE created_at < $1",
            vec![time(before)],
        )
        .await
    }
}
