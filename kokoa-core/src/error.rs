use std::{fmt, net::Ipv4Addr};

use ipnet::Ipv4Net;

use crate::{EdgeStatus, RecordType};

/// The error type of `kokoa-core`.
///
/// Values given from outside are quoted in the message (cut short when very long), except
/// secrets, which are never repeated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A hostname failed validation.
    #[error("invalid hostname {input:?}: {problem}")]
    InvalidHostname {
        /// The text as it was given (cut to 300 characters).
        input: String,
        /// What is wrong with it.
        problem: HostnameProblem,
    },

    /// A DNS owner name (a record's name) failed validation.
    #[error("invalid DNS name {input:?}: {reason}")]
    InvalidDnsName {
        /// The text as it was given (cut to 300 characters).
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An id failed validation.
    #[error("invalid {kind} id {input:?}: ids are 1-64 characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidId {
        /// What the id identifies, e.g. `origin`.
        kind: &'static str,
        /// The text as it was given (cut to 100 characters).
        input: String,
    },

    /// A name (origin, edge, provider, region...) failed validation.
    #[error(
        "invalid name {input:?}: {reason} (a name is 1-63 characters of a-z, 0-9 and '-', \
         not starting or ending with '-', like \"home-server\")"
    )]
    InvalidName {
        /// The text as it was given (cut to 100 characters).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A port number outside 1–65535.
    #[error("invalid port {value}: a port is a number from 1 to 65535")]
    InvalidPort {
        /// The number given.
        value: i64,
    },

    /// An e-mail address failed validation.
    #[error("invalid e-mail address {input:?}: {reason}")]
    InvalidEmail {
        /// The text as it was given (cut to 100 characters).
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A health check path failed validation.
    #[error(
        "invalid health check path {input:?}: it must start with '/' and hold at most 200 \
         characters of A-Z, a-z, 0-9 and - . _ ~ / ? = &"
    )]
    InvalidHealthCheckPath {
        /// The text as it was given (cut to 100 characters).
        input: String,
    },

    /// A WireGuard public key is not 32 bytes in base64.
    #[error(
        "invalid WireGuard public key {input:?}: expected 44 characters of base64 \
         as printed by `wg pubkey`"
    )]
    InvalidPublicKey {
        /// The text as it was given (cut to 100 characters).
        input: String,
    },

    /// A time outside what RFC 3339 can show.
    #[error("timestamp {seconds} (Unix seconds) is outside the years 0000-9999")]
    TimestampOutOfRange {
        /// The seconds given.
        seconds: i64,
    },

    /// A text that is not an RFC 3339 time.
    #[error("invalid time {input:?}: expected RFC 3339 like \"2025-01-21T10:30:00Z\"")]
    InvalidTimestamp {
        /// The text as it was given (cut to 100 characters).
        input: String,
    },

    /// A DNS record value that does not fit its type.
    #[error("invalid {record_type} record value {value:?}")]
    InvalidRecordValue {
        /// The record type.
        record_type: RecordType,
        /// The value as it was given (cut to 300 characters).
        value: String,
    },

    /// A certificate mode that is not one of the four.
    #[error(
        "invalid certificate mode {input:?}: use \"http-01\", \"dns-01\", \"manual\" or \"none\""
    )]
    InvalidCertificateMode {
        /// The text as it was given (cut to 100 characters).
        input: String,
    },

    /// An event kind failed validation.
    #[error(
        "invalid event type {input:?}: it is 1-100 characters of a-z, 0-9, '.', '_' and '-', \
         like \"dns.record.added\""
    )]
    InvalidEventKind {
        /// The text as it was given (cut to 101 characters).
        input: String,
    },

    /// An edge node status change the life cycle does not allow.
    #[error("an edge node cannot go from {from} to {to}")]
    IllegalTransition {
        /// The current state.
        from: EdgeStatus,
        /// The state asked for.
        to: EdgeStatus,
    },

    /// A subnet pool that cannot be used.
    #[error("invalid subnet pool {pool}: {reason}")]
    InvalidPool {
        /// The pool given.
        pool: Ipv4Net,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A subnet given as taken that cannot come from the pool.
    #[error(
        "subnet {subnet} cannot be taken from pool {pool}: \
         origin subnets are /24 networks inside the pool"
    )]
    ForeignSubnet {
        /// The subnet given.
        subnet: Ipv4Net,
        /// The pool.
        pool: Ipv4Net,
    },

    /// Every /24 of the pool is taken.
    #[error(
        "subnet pool {pool} is exhausted: all {capacity} origin subnets are taken; \
         configure a larger pool, e.g. 100.64.0.0/10"
    )]
    PoolExhausted {
        /// The pool.
        pool: Ipv4Net,
        /// How many origin subnets it holds.
        capacity: u32,
    },

    /// An origin subnet that is not a /24 network.
    #[error("{subnet} is not an origin subnet: expected a /24 network such as 10.0.1.0/24")]
    NotOriginSubnet {
        /// The subnet given.
        subnet: Ipv4Net,
    },

    /// An address given as taken that is outside the origin subnet.
    #[error("address {address} is outside origin subnet {subnet}")]
    ForeignAddress {
        /// The address given.
        address: Ipv4Addr,
        /// The subnet.
        subnet: Ipv4Net,
    },

    /// Every edge address (`.10`–`.254`) of an origin subnet is taken.
    #[error("origin subnet {subnet} has no free edge address left (.10 to .254 are taken)")]
    SubnetFull {
        /// The subnet.
        subnet: Ipv4Net,
    },

    /// A text that is not a hex SHA-256 digest.
    #[error("invalid content hash {input:?}: expected 64 lowercase hex characters (SHA-256)")]
    InvalidContentHash {
        /// The text as it was given (cut to 100 characters).
        input: String,
    },

    /// An edge configuration whose parts contradict each other.
    #[error("invalid edge configuration: {0}")]
    InvalidEdgeConfig(String),

    /// An edge or origin configuration whose content does not match its `config_hash`.
    #[error(
        "configuration hash mismatch: it says {stated} but its content hashes to {computed}; \
         the payload was altered or built by an incompatible version"
    )]
    ConfigHashMismatch {
        /// The hash the payload carries.
        stated: String,
        /// The hash of its content.
        computed: String,
    },

    /// No record of that kind with that id (or key).
    #[error("no {kind} {id:?} found")]
    NotFound {
        /// What was looked for, e.g. `origin`.
        kind: &'static str,
        /// Its id or key.
        id: String,
    },

    /// A value that must be unique is taken already.
    #[error("{what} {value:?} already exists")]
    Conflict {
        /// What is duplicated, e.g. `hostname`.
        what: &'static str,
        /// The duplicated value.
        value: String,
    },

    /// A record cannot be deleted while others still refer to it.
    #[error(
        "{kind} {id:?} is still used by {count} {by}; delete those first or force the deletion"
    )]
    InUse {
        /// What was to be deleted, e.g. `origin`.
        kind: &'static str,
        /// Its id.
        id: String,
        /// What refers to it, e.g. `routes`.
        by: &'static str,
        /// How many of them.
        count: u64,
    },

    /// An enrollment token that cannot be redeemed.
    #[error("enrollment refused: {reason}")]
    EnrollmentRefused {
        /// Why, e.g. `the token has expired`.
        reason: &'static str,
    },

    /// Every WireGuard listen port of an edge node (51820–65535) is taken.
    #[error("edge node {edge:?} has no free WireGuard listen port left (51820 to 65535 are taken)")]
    NoFreePort {
        /// The edge node.
        edge: String,
    },

    /// A master key that cannot be used. The key itself is not repeated.
    #[error(
        "invalid master key: {reason} (expected 32 random bytes in base64, \
         as written by `kokoa-control init`)"
    )]
    InvalidMasterKey {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A sealed secret that is not in the sealed format (base64 of nonce and ciphertext).
    #[error("invalid sealed secret ({length} characters): not base64 of a nonce and a ciphertext")]
    InvalidSealed {
        /// Length of the text given.
        length: usize,
    },

    /// A sealed secret that does not open with this master key and context.
    #[error(
        "cannot open the sealed secret for {context:?}: it was sealed with another master key \
         or for another record, or it was altered"
    )]
    Unseal {
        /// The context the secret was expected to be sealed for.
        context: String,
    },

    /// A leader-only action was refused because the lease term it was taken under is over:
    /// the lease has expired or another holder took it. The caller is no longer the leader
    /// and must not carry the action out.
    #[error(
        "lease {lease:?} term {token} is over ({}): this control plane no longer leads; \
         the action was refused",
        now_term(.current)
    )]
    Fenced {
        /// The lease's name, e.g. `leader`.
        lease: String,
        /// The fencing token the action was attempted with.
        token: u64,
        /// The token of the term holding the lease now; `None` while nobody holds it.
        current: Option<u64>,
    },

    /// The storage backend failed: the database is unreachable, a query failed, or a stored
    /// row no longer passes validation.
    #[error("storage failed: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Whether the error says a record does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether the error says the request collides with existing records: a duplicate
    /// unique value, or a deletion of something still in use (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. } | Self::InUse { .. })
    }

    /// Whether the error says a leader-only action was refused because its lease term is
    /// over ([`Error::Fenced`]): the caller has lost the leadership and should step down.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Self::Fenced { .. })
    }
}

/// The "now" part of [`Error::Fenced`]'s message.
fn now_term(current: &Option<u64>) -> String {
    match current {
        Some(token) => format!("now term {token}"),
        None => "nobody holds it now".to_owned(),
    }
}

/// What is wrong with a rejected hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostnameProblem {
    /// Nothing was given.
    Empty,
    /// The name (in its ASCII form) is longer than 253 characters.
    TooLong(usize),
    /// A name needs at least two labels (`example.com`, not `localhost`).
    TooFewLabels,
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    /// A label is longer than 63 characters.
    LabelTooLong(String),
    /// A label holds a character outside `a-z`, `0-9` and `-`.
    BadCharacter {
        /// The offending label.
        label: String,
        /// The offending character.
        character: char,
    },
    /// A label starts or ends with `-`.
    HyphenAtEdge(String),
    /// `*` is allowed only as the whole leftmost label.
    MisplacedWildcard(String),
    /// The internationalised name could not be converted to its ASCII form, or an
    /// `xn--` label is not the ASCII form of one.
    Idna,
    /// The name is internationalised (non-ASCII, or an `xn--` label) and this build has no
    /// IDNA support: kokoa-core's `idna` feature is off.
    IdnaUnsupported,
    /// The last label is all digits (no top-level domain is; `1.2.3.4` is an address).
    NumericTopLabel(String),
}

impl fmt::Display for HostnameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::TooLong(n) => write!(f, "it is {n} characters long, the limit is 253"),
            Self::TooFewLabels => {
                f.write_str("it needs at least two labels, like \"app.example.com\"")
            }
            Self::EmptyLabel => f.write_str("it has an empty label (two dots in a row?)"),
            Self::LabelTooLong(l) => {
                write!(
                    f,
                    "label {l:?} is {} characters long, the limit is 63",
                    l.len()
                )
            }
            Self::BadCharacter { label, character } => write!(
                f,
                "label {label:?} contains {character:?}; only a-z, 0-9 and '-' are allowed"
            ),
            Self::HyphenAtEdge(l) => write!(f, "label {l:?} starts or ends with '-'"),
            Self::MisplacedWildcard(l) => write!(
                f,
                "label {l:?}: '*' is allowed only as the whole leftmost label (\"*.example.com\")"
            ),
            Self::Idna => f.write_str("it is not a valid internationalised domain name"),
            Self::IdnaUnsupported => f.write_str(
                "it is an internationalised domain name, and this program was built without \
                 IDNA support (kokoa-core's `idna` feature)",
            ),
            Self::NumericTopLabel(l) => write!(
                f,
                "its last label {l:?} is all digits; no top-level domain is (an IP address is \
                 not a host name)"
            ),
        }
    }
}
