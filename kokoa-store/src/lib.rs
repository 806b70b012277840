//! Where Kokoa Proxy's control plane keeps its state: the [`Store`] trait and its backends,
//! and the sealing of the secrets it holds ([`MasterKey`]).
//!
//! - [`MemoryStore`]: always compiled; for tests and trials. Nothing survives a restart.
//! - `SqlStore` from `sqlite::open` (feature `sqlite`): one file, for a single control
//!   plane.
//! - `SqlStore` from `postgres::connect` (feature `postgres`): for several control planes
//!   on one database (SPEC §11).
//!
//! Every backend gives the same answers, which `conformance` (feature `test-util`) checks:
//! unique values are refused with [`Error::Conflict`] naming the field, missing records give
//! [`Error::NotFound`], and an operation that fails leaves nothing half written.
//!
//! Control planes sharing a database elect a leader with a fenced lease (SPEC §11):
//! [`Store::lease_acquire`] grants terms by the database's clock, each new term with a larger
//! token, and the leader records each side effect with [`Store::record_intent`] under its
//! [`Fence`], which fails with [`Error::Fenced`] once its term is over.
//!
//! ```
//! use std::sync::Arc;
//! use kokoa_core::{Name, OriginId, Port, Protocol, SubnetPool, Timestamp, WgPublicKey};
//! use kokoa_store::{MemoryStore, NewOrigin, NewService, Store};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let origin = store
//!     .create_origin(
//!         &SubnetPool::default(),
//!         NewOrigin {
//!             id: OriginId::new(),
//!             name: Name::parse("home-server")?,
//!             domain: None,
//!             services: vec![NewService {
//!                 name: Name::parse("web")?,
//!                 port: Port::new(8001)?,
//!                 protocol: Protocol::Http,
//!                 health_check_path: None,
//!             }],
//!             created_at: Timestamp::now(),
//!         },
//!     )
//!     .await?;
//! assert_eq!(origin.network_cidr.to_string(), "10.0.1.0/24");
//! assert_eq!(origin.wireguard_ip.to_string(), "10.0.1.1");
//! assert_eq!(store.origin_services(&origin.id).await?[0].port.get(), 8001);
//!
//! // Its agent made its key pair and registers the public half.
//! let key = WgPublicKey::parse("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=")?;
//! store.set_origin_key(&origin.id, &key).await?;
//! assert_eq!(store.get_origin(&origin.id).await?.wireguard_public_key, Some(key));
//! # Ok(())
//! # }
//! ```
//!
//! # Crate features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | no | `sqlite::open`, an `SqlStore` in an SQLite file (rusqlite, SQLite compiled in) |
//! | `postgres` | no | `postgres::connect`, an `SqlStore` in PostgreSQL (sqlx; TLS with rustls) |
//! | `test-util` | no | `conformance`, the test suite every `Store` backend must pass |
//!
//! [`MemoryStore`] and [`seal`] are always there.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

use std::{fmt, net::Ipv4Addr, time::Duration};

use async_trait::async_trait;

use kokoa_core::{
    ApiToken, ApiTokenId, Certificate, CertificateId, DnsRecord, DnsRecordId, DnsZone, DnsZoneId,
    EdgeNode, EdgeNodeId, EdgeTunnel, Email, Enrollment, Error, Event, EventFilter, HealthCheck,
    HealthCheckPath, Hostname, Name, NewEvent, NodeCredential, NodeCredentialId, NodeRef, Origin,
    OriginId, OriginService, OriginStatus, Port, Protocol, Role, Route, RouteId, Session,
    SessionId, SubnetPool, Timestamp, TrafficPoint, TrafficResolution, TrafficRow, TrafficScope,
    User, UserId, UserSecrets, WgPublicKey,
    secret::{Sealed, TokenHash},
};

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod conformance;
mod lease;
mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

pub mod seal;

pub use lease::{Fence, Intent, Lease, NewIntent};
pub use memory::MemoryStore;
pub use seal::MasterKey;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
pub use sql::SqlStore;

/// The first WireGuard listen port of an edge; its tunnels take the next free ones upward.
pub const FIRST_LISTEN_PORT: u16 = 51820;

/// What [`Store::create_origin`] needs; the store adds the subnet, the address and the
/// service ids.
#[derive(Debug, Clone)]
pub struct NewOrigin {
    /// The id to create it under.
    pub id: OriginId,
    /// Unique name.
    pub name: Name,
    /// The domain it mainly serves.
    pub domain: Option<Hostname>,
    /// Its services; names must be distinct.
    pub services: Vec<NewService>,
    /// Creation time, also used for the services.
    pub created_at: Timestamp,
}

/// One service of a [`NewOrigin`].
#[derive(Debug, Clone)]
pub struct NewService {
    /// Name, unique within the origin.
    pub name: Name,
    /// Port on the origin.
    pub port: Port,
    /// Protocol.
    pub protocol: Protocol,
    /// Path checked for health.
    pub health_check_path: Option<HealthCheckPath>,
}

/// What [`Store::create_tunnel`] needs; the store picks the address and the listen port.
#[derive(Debug, Clone)]
pub struct NewTunnel {
    /// The edge node.
    pub edge_node_id: EdgeNodeId,
    /// The origin it reaches.
    pub origin_id: OriginId,
    /// Creation time.
    pub created_at: Timestamp,
}

/// The control plane's state. Used as `Arc<dyn Store>`.
///
/// Getters return [`Error::NotFound`] for an unknown id; `find_*` methods look up by a
/// secret's hash and return `None` instead, since an unknown token is an ordinary event.
/// Lists come in a stable order, given per method. Each method is atomic: on error nothing
/// has changed.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    // --- origins ---

    /// Creates an origin with its services, on the first free /24 of `pool`; the origin is
    /// `.1` in it and starts [`OriginStatus::Inactive`].
    ///
    /// Errors: [`Error::Conflict`] on a taken name (`origin name`) or two services with one
    /// name (`service name`); [`Error::PoolExhausted`].
    async fn create_origin(&self, pool: &SubnetPool, new: NewOrigin) -> Result<Origin, Error>;

    /// One origin.
    async fn get_origin(&self, id: &OriginId) -> Result<Origin, Error>;

    /// All origins, by name.
    async fn list_origins(&self) -> Result<Vec<Origin>, Error>;

    /// The services of an origin, by name.
    async fn origin_services(&self, id: &OriginId) -> Result<Vec<OriginService>, Error>;

    /// Sets an origin's WireGuard public key: the one its agent registered, or its
    /// successor at the end of a key rotation (SPEC §10.3).
    async fn set_origin_key(&self, id: &OriginId, public_key: &WgPublicKey) -> Result<(), Error>;

    /// Deletes an origin with its services, enrollments and credentials. Without `force`,
    /// [`Error::InUse`] while routes point at it; with `force` its routes and the edges'
    /// tunnels to it go too. Edge nodes created for it are kept (they may be replaced or
    /// deleted by the caller).
    async fn delete_origin(&self, id: &OriginId, force: bool) -> Result<(), Error>;

    /// Records a heartbeat of an origin: time, status and the `metrics` object sent.
    async fn record_origin_heartbeat(
        &self,
        id: &OriginId,
        at: Timestamp,
        status: OriginStatus,
        metrics: Option<serde_json::Value>,
    ) -> Result<(), Error>;

    // --- routes ---

    /// Creates a route. Errors: [`Error::Conflict`] on a taken `hostname`;
    /// [`Error::NotFound`] for an unknown origin.
    async fn create_route(&self, route: &Route) -> Result<(), Error>;

    /// One route.
    async fn get_route(&self, id: &RouteId) -> Result<Route, Error>;

    /// All routes, by host name.
    async fn list_routes(&self) -> Result<Vec<Route>, Error>;

    /// Replaces a route's host name, origin and port (its id and creation time stay). Errors
    /// as for [`create_route`](Self::create_route), and [`Error::NotFound`] for an unknown
    /// route.
    async fn update_route(&self, route: &Route) -> Result<(), Error>;

    /// Deletes a route.
    async fn delete_route(&self, id: &RouteId) -> Result<(), Error>;

    // --- edge nodes and their tunnels ---

    /// Creates an edge node. [`Error::NotFound`] if it names an unknown origin.
    async fn create_edge(&self, edge: &EdgeNode) -> Result<(), Error>;

    /// One edge node, deleted ones included.
    async fn get_edge(&self, id: &EdgeNodeId) -> Result<EdgeNode, Error>;

    /// All edge nodes, deleted ones included, by creation time then id.
    async fn list_edges(&self) -> Result<Vec<EdgeNode>, Error>;

    /// Writes what the control plane changes of an edge node: name, provider, region,
    /// public address, status, deletion time, instance id and lifecycle. Its id, origin and
    /// creation time stay; its key is written only by [`set_edge_key`](Self::set_edge_key),
    /// its heartbeat and metrics only by
    /// [`record_edge_heartbeat`](Self::record_edge_heartbeat) and its failure count only by
    /// [`record_health_check`](Self::record_health_check), so neither is lost to a write
    /// made from an older copy.
    async fn update_edge(&self, edge: &EdgeNode) -> Result<(), Error>;

    /// Sets an edge's WireGuard public key, as [`set_origin_key`](Self::set_origin_key) does
    /// an origin's. [`Error::NotFound`] for an unknown edge.
    async fn set_edge_key(&self, id: &EdgeNodeId, public_key: &WgPublicKey) -> Result<(), Error>;

    /// Records a heartbeat of an edge node: time and the `metrics` object sent.
    async fn record_edge_heartbeat(
        &self,
        id: &EdgeNodeId,
        at: Timestamp,
        metrics: Option<serde_json::Value>,
    ) -> Result<(), Error>;

    /// Creates the tunnel of an edge to an origin: the edge's address is the first free one
    /// from `.10` in the origin's /24, its listen port the first free one on that edge from
    /// [`FIRST_LISTEN_PORT`].
    ///
    /// Errors: [`Error::NotFound`] for an unknown edge or origin; [`Error::Conflict`]
    /// (`edge tunnel`) if the edge has one to that origin already; [`Error::SubnetFull`],
    /// [`Error::NoFreePort`].
    async fn create_tunnel(&self, new: NewTunnel) -> Result<EdgeTunnel, Error>;

    /// Tunnels, optionally only those of one edge and/or to one origin, by edge then listen
    /// port.
    async fn list_tunnels(
        &self,
        edge: Option<&EdgeNodeId>,
        origin: Option<&OriginId>,
    ) -> Result<Vec<EdgeTunnel>, Error>;

    /// Deletes every tunnel of an edge; returns how many there were.
    async fn delete_tunnels_of_edge(&self, edge: &EdgeNodeId) -> Result<u64, Error>;

    // --- authentication ---

    /// Stores an API token under the hash of its secret. [`Error::Conflict`] on a taken
    /// `token hash`.
    async fn create_api_token(&self, token: &ApiToken, hash: &TokenHash) -> Result<(), Error>;

    /// The token with this hash, unless unknown or revoked.
    async fn find_api_token(&self, hash: &TokenHash) -> Result<Option<ApiToken>, Error>;

    /// Records that a token was used at `at`.
    async fn touch_api_token(&self, id: &ApiTokenId, at: Timestamp) -> Result<(), Error>;

    /// All API tokens, revoked ones included, by creation time then id.
    async fn list_api_tokens(&self) -> Result<Vec<ApiToken>, Error>;

    /// Revokes a token at `at` (a token revoked already keeps its first time).
    async fn revoke_api_token(&self, id: &ApiTokenId, at: Timestamp) -> Result<(), Error>;

    /// Stores an enrollment under the hash of its token. Errors: [`Error::Conflict`] on a
    /// taken `token hash`; [`Error::NotFound`] for an unknown node.
    async fn create_enrollment(
        &self,
        enrollment: &Enrollment,
        hash: &TokenHash,
    ) -> Result<(), Error>;

    /// The enrollment with this token hash if it can still be redeemed at `now` (see
    /// [`Enrollment::is_usable`]); it is not redeemed.
    async fn find_enrollment(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<Enrollment>, Error>;

    /// Trades an enrollment token for a node credential, in one step: the enrollment must
    /// exist, not be expired at `now` and have uses left (one is used up); then the
    /// credential `credential_id` is stored under `credential_hash` for the enrollment's
    /// node, and returned.
    ///
    /// Errors: [`Error::EnrollmentRefused`] for an unknown, expired or used-up token, or a
    /// node that no longer exists.
    async fn redeem_enrollment(
        &self,
        hash: &TokenHash,
        now: Timestamp,
        credential_id: &NodeCredentialId,
        credential_hash: &TokenHash,
    ) -> Result<NodeCredential, Error>;

    /// The credential with this hash, unless unknown or revoked.
    async fn find_node_credential(&self, hash: &TokenHash)
    -> Result<Option<NodeCredential>, Error>;

    /// Revokes every credential of a node at `at` and uses up its pending enrollments, so
    /// a removed node cannot come back. Returns how many credentials were revoked.
    async fn revoke_node_credentials(&self, node: &NodeRef, at: Timestamp) -> Result<u64, Error>;

    // --- DNS records ---

    /// Stores a DNS record Kokoa created at a provider.
    async fn add_dns_record(&self, record: &DnsRecord) -> Result<(), Error>;

    /// DNS records, optionally only those of one host name, by host name then id.
    async fn list_dns_records(&self, hostname: Option<&Hostname>) -> Result<Vec<DnsRecord>, Error>;

    /// Deletes a DNS record.
    async fn delete_dns_record(&self, id: &DnsRecordId) -> Result<(), Error>;

    // --- health check history ---

    /// Appends a health check result to the edge's history and, when given, sets its count
    /// of failed checks in a row, in one step. [`Error::NotFound`] for an unknown edge.
    async fn record_health_check(
        &self,
        check: &HealthCheck,
        consecutive_failures: Option<u32>,
    ) -> Result<(), Error>;

    /// The latest `limit` checks of an edge, newest first (checks with the same time in
    /// reverse order of adding).
    async fn health_history(
        &self,
        edge: &EdgeNodeId,
        limit: u32,
    ) -> Result<Vec<HealthCheck>, Error>;

    /// Deletes the health checks (of every edge) made before `before`; returns how many.
    async fn prune_health_checks(&self, before: Timestamp) -> Result<u64, Error>;

    // --- the schema ---

    /// The database's schema version and the one this build uses, `(found, built)`. They
    /// differ under a running control plane when a backup of an older schema was restored
    /// or a newer version upgraded the database; it is not ready then. A store without a
    /// schema answers `(0, 0)`.
    async fn schema_versions(&self) -> Result<(u32, u32), Error>;

    // --- traffic analytics ---

    /// Adds each row's counts to its bucket (creating it at zero), all rows in one
    /// transaction. Additions commute, so several control planes may add to one bucket.
    async fn add_traffic(&self, rows: &[TrafficRow]) -> Result<(), Error>;

    /// The buckets of one series starting at or after `since`, oldest first; buckets
    /// without traffic are absent.
    async fn traffic_series(
        &self,
        resolution: TrafficResolution,
        scope: &TrafficScope,
        since: Timestamp,
    ) -> Result<Vec<TrafficPoint>, Error>;

    /// Deletes the buckets of `resolution` (of every series) that start before `before`;
    /// returns how many.
    async fn prune_traffic(
        &self,
        resolution: TrafficResolution,
        before: Timestamp,
    ) -> Result<u64, Error>;

    // --- users and their Web UI sessions ---

    /// Creates a user, with a password hash (PHC string form) or none (an account that signs
    /// in through an OpenID provider only). [`Error::Conflict`] on a taken `e-mail address`.
    async fn create_user(&self, user: &User, password_hash: Option<&str>) -> Result<(), Error>;

    /// A user and their secrets, by e-mail address.
    async fn find_user_by_email(&self, email: &Email)
    -> Result<Option<(User, UserSecrets)>, Error>;

    /// A user and their secrets.
    async fn get_user(&self, id: &UserId) -> Result<(User, UserSecrets), Error>;

    /// Every user, by e-mail address.
    async fn list_users(&self) -> Result<Vec<User>, Error>;

    /// Changes a user's role.
    async fn set_user_role(&self, id: &UserId, role: Role) -> Result<(), Error>;

    /// Replaces a user's password hash (`None`: no password login); also lifts a lockout.
    async fn set_user_password(
        &self,
        id: &UserId,
        password_hash: Option<&str>,
    ) -> Result<(), Error>;

    /// Sets up, confirms or removes a user's second factor, in one step: the sealed TOTP
    /// secret (`None` removes it), whether it is enabled, and the hashes of the recovery
    /// codes, which replace the earlier ones. The last accepted TOTP step is forgotten.
    async fn set_user_totp(
        &self,
        id: &UserId,
        secret: Option<&Sealed>,
        enabled: bool,
        recovery_codes: &[TokenHash],
    ) -> Result<(), Error>;

    /// Accepts a TOTP code's time step once: records `step` and returns true if it is later
    /// than the last step accepted, returns false otherwise (a replayed or older code).
    async fn use_totp_step(&self, id: &UserId, step: u64) -> Result<bool, Error>;

    /// Uses up the recovery code with this hash; false if the user has no such code (left).
    async fn use_recovery_code(&self, id: &UserId, code: &TokenHash) -> Result<bool, Error>;

    /// How many recovery codes a user has left.
    async fn recovery_codes_left(&self, id: &UserId) -> Result<u32, Error>;

    /// Counts a failed login, in one step: the count goes up by one; when it reaches
    /// `threshold` the user is locked until `lock_until` and the count starts again from 0.
    /// Returns the user as it now is.
    async fn record_login_failure(
        &self,
        id: &UserId,
        threshold: u32,
        lock_until: Timestamp,
    ) -> Result<User, Error>;

    /// A successful login: the failure count goes back to 0 and a lock is lifted.
    async fn record_login_success(&self, id: &UserId) -> Result<(), Error>;

    /// Deletes a user with their recovery codes and sessions.
    async fn delete_user(&self, id: &UserId) -> Result<(), Error>;

    /// Stores a session under the hash of its cookie token. [`Error::NotFound`] for an
    /// unknown user; [`Error::Conflict`] on a taken `token hash`.
    async fn create_session(&self, session: &Session, hash: &TokenHash) -> Result<(), Error>;

    /// The session with this token hash, unless it has expired at `now`.
    async fn find_session(
        &self,
        hash: &TokenHash,
        now: Timestamp,
    ) -> Result<Option<Session>, Error>;

    /// Records that a session was used at `last_seen` and moves its end to `expires_at`.
    async fn touch_session(
        &self,
        id: &SessionId,
        last_seen: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), Error>;

    /// Deletes a session (logout); false if there was none.
    async fn delete_session(&self, id: &SessionId) -> Result<bool, Error>;

    /// Deletes every session of a user; returns how many.
    async fn delete_user_sessions(&self, user: &UserId) -> Result<u64, Error>;

    /// Deletes the sessions that have expired at `now`; returns how many.
    async fn prune_sessions(&self, now: Timestamp) -> Result<u64, Error>;

    // --- certificates ---

    /// Stores a certificate, replacing the one with its id; `key` (sealed for
    /// [`certificate_key_context`](seal::certificate_key_context)) replaces its
    /// private key when given. [`Error::Conflict`] (`certificate names`) when another
    /// certificate covers exactly the same names.
    async fn put_certificate(&self, cert: &Certificate, key: Option<&Sealed>) -> Result<(), Error>;

    /// One certificate.
    async fn get_certificate(&self, id: &CertificateId) -> Result<Certificate, Error>;

    /// Every certificate, by names.
    async fn list_certificates(&self) -> Result<Vec<Certificate>, Error>;

    /// The sealed private key of a certificate, if it has one yet.
    async fn certificate_key(&self, id: &CertificateId) -> Result<Option<Sealed>, Error>;

    /// Deletes a certificate and its key.
    async fn delete_certificate(&self, id: &CertificateId) -> Result<(), Error>;

    // --- DNS zones ---

    /// Adds a zone with its sealed credentials (for
    /// [`dns_zone_credentials_context`](seal::dns_zone_credentials_context)).
    /// [`Error::Conflict`] (`zone name`) on a zone already there.
    async fn create_dns_zone(
        &self,
        zone: &DnsZone,
        credentials: Option<&Sealed>,
    ) -> Result<(), Error>;

    /// One zone.
    async fn get_dns_zone(&self, id: &DnsZoneId) -> Result<DnsZone, Error>;

    /// Every zone, by name.
    async fn list_dns_zones(&self) -> Result<Vec<DnsZone>, Error>;

    /// Writes a zone's provider zone id, settings and TTL; `credentials` replace the
    /// stored ones when given. Its name, provider and creation time stay.
    async fn update_dns_zone(
        &self,
        zone: &DnsZone,
        credentials: Option<&Sealed>,
    ) -> Result<(), Error>;

    /// The sealed credentials of a zone, if it has any.
    async fn dns_zone_credentials(&self, id: &DnsZoneId) -> Result<Option<Sealed>, Error>;

    /// Deletes a zone. [`Error::InUse`] while DNS records made in it are recorded: the DNS
    /// manager removes them from the provider first.
    async fn delete_dns_zone(&self, id: &DnsZoneId) -> Result<(), Error>;

    // --- events ---

    /// Records an event and returns it with its number, larger than every earlier one.
    async fn append_event(&self, event: &NewEvent) -> Result<Event, Error>;

    /// The events that pass `filter`: newest first, or oldest first when
    /// [`EventFilter::after`] is set.
    async fn list_events(&self, filter: &EventFilter) -> Result<Vec<Event>, Error>;

    /// Deletes the events created before `before`; returns how many.
    async fn prune_events(&self, before: Timestamp) -> Result<u64, Error>;

    // --- small shared values: settings, leases, challenge responses ---

    /// The value at `key` in `namespace`, unless missing or expired at `now`.
    async fn kv_get(
        &self,
        namespace: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<String>, Error>;

    /// Every key and value in `namespace` not expired at `now`, by key.
    async fn kv_list(
        &self,
        namespace: &str,
        now: Timestamp,
    ) -> Result<Vec<(String, String)>, Error>;

    /// Sets `key` in `namespace` to `value`, until `expires_at` if given.
    async fn kv_put(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<(), Error>;

    /// Deletes `key` from `namespace`; returns whether it was there.
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, Error>;

    /// Deletes the values (of every namespace) expired at `now`; returns how many.
    async fn kv_prune(&self, now: Timestamp) -> Result<u64, Error>;

    /// A lease: sets `key` to `value` until `expires_at`, unless it holds another value
    /// that has not expired at `now`. Returns whether `key` now holds `value`. Atomic, so of
    /// several callers with different values only one holds the lease at a time.
    ///
    /// `now` is the caller's clock, so callers with skewed clocks may both think they hold
    /// it; leader election uses [`lease_acquire`](Self::lease_acquire) instead.
    async fn kv_claim(
        &self,
        namespace: &str,
        key: &str,
        value: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<bool, Error>;

    // --- fenced leases and the leader-only actions taken under them (SPEC §11) ---

    /// Grants lease `name` to `holder` for `ttl`, by the store's clock (the database's, for
    /// the SQL backends): if nobody holds it, its term has run out, or `holder` holds it
    /// already, `holder` holds it until the store's now plus `ttl` and the term is
    /// returned; otherwise `None`. Atomic: of several callers at once, one gets it.
    ///
    /// Renewing, by the holder before its term runs out, keeps the fencing token. Any other
    /// grant starts a new term with a larger token (by one), also for the same holder after
    /// its term ran out: what it did under the old token may have been refused meanwhile.
    /// Tokens are never given out twice for a name, also across
    /// [`lease_release`](Self::lease_release). The first term of a name has token 1.
    async fn lease_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error>;

    /// Ends `holder`'s term of lease `name` at once, so another holder can take it without
    /// waiting for it to run out (the next term gets a larger token). Returns false, and
    /// changes nothing, if `holder` does not hold it.
    async fn lease_release(&self, name: &str, holder: &str) -> Result<bool, Error>;

    /// The term of lease `name` that is running by the store's clock, if any (`new_term`
    /// is false).
    async fn lease_holder(&self, name: &str) -> Result<Option<Lease>, Error>;

    /// Records that a leader-only action is about to be taken under `fence`, in one step
    /// with the check that the fence's term is still running by the store's clock: then the
    /// intent is appended, numbered after every earlier one and stamped with the store's
    /// time, and returned.
    ///
    /// Errors: [`Error::Fenced`], with nothing recorded, if the term is over (the lease ran
    /// out, was released or was taken over) or `fence` was never granted; the caller is no
    /// longer the leader and must not take the action.
    async fn record_intent(&self, fence: &Fence, intent: &NewIntent) -> Result<Intent, Error>;

    /// Up to `limit` intents, oldest first; only those numbered after `after` when given.
    async fn list_intents(&self, after: Option<i64>, limit: u32) -> Result<Vec<Intent>, Error>;

    /// Deletes the intents recorded before `before`; returns how many. Numbers are not
    /// given out again.
    async fn prune_intents(&self, before: Timestamp) -> Result<u64, Error>;
}

/// The first free edge address of `origin`'s subnet and the first free listen port of the
/// edge, given the tunnels already there. Shared by every backend so they agree.
fn allocate_tunnel(
    origin: &Origin,
    edge: &EdgeNodeId,
    taken_addresses: &[Ipv4Addr],
    taken_ports: &[Port],
) -> Result<(Ipv4Addr, Port), Error> {
    let address = kokoa_core::allocate_edge_address(origin.network_cidr, taken_addresses)?;
    let port = (FIRST_LISTEN_PORT..=u16::MAX)
        .find(|p| !taken_ports.iter().any(|t| t.get() == *p))
        .and_then(|p| Port::new(p).ok())
        .ok_or_else(|| Error::NoFreePort {
            edge: edge.to_string(),
        })?;
    Ok((address, port))
}

const UNKNOWN_ENROLLMENT: Error = Error::EnrollmentRefused {
    reason: "the token is unknown",
};

const NODE_GONE: Error = Error::EnrollmentRefused {
    reason: "the node it was issued for no longer exists",
};

/// Refuses an enrollment that is expired at `now` or used up.
fn check_redeemable(enrollment: &Enrollment, now: Timestamp) -> Result<(), Error> {
    let reason = if now >= enrollment.expires_at {
        "the token has expired"
    } else if enrollment.uses_left == 0 {
        "the token has been used up"
    } else {
        return Ok(());
    };
    Err(Error::EnrollmentRefused { reason })
}

/// The orders lists come in, applied after loading so that every backend (and every
/// database collation) agrees.
mod sort {
    use kokoa_core::{
        ApiToken, Certificate, DnsRecord, DnsZone, EdgeNode, EdgeTunnel, Origin, OriginService,
        Route, User,
    };

    pub(super) fn origins(v: &mut [Origin]) {
        v.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub(super) fn services(v: &mut [OriginService]) {
        v.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub(super) fn routes(v: &mut [Route]) {
        v.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    }

    pub(super) fn edges(v: &mut [EdgeNode]) {
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    }

    pub(super) fn tunnels(v: &mut [EdgeTunnel]) {
        v.sort_by(|a, b| (&a.edge_node_id, a.listen_port).cmp(&(&b.edge_node_id, b.listen_port)));
    }

    pub(super) fn api_tokens(v: &mut [ApiToken]) {
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    }

    pub(super) fn dns_records(v: &mut [DnsRecord]) {
        v.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
    }

    pub(super) fn certificates(v: &mut [Certificate]) {
        v.sort_by(|a, b| a.names.cmp(&b.names));
    }

    pub(super) fn users(v: &mut [User]) {
        v.sort_by(|a, b| a.email.cmp(&b.email));
    }

    pub(super) fn dns_zones(v: &mut [DnsZone]) {
        v.sort_by(|a, b| a.name.cmp(&b.name));
    }
}
