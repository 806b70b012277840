use std::{fmt, io, net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;

use crate::key::PublicKey;

/// The error type of `kokoa-wg`.
///
/// No variant ever holds a private or preshared key: errors end up in logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key is not the 44-character base64 text of 32 bytes.
    #[error("invalid {kind}{}: {problem}", shown(.value))]
    InvalidKey {
        /// Which kind of key.
        kind: KeyKind,
        /// The text as given (cut to 60 characters); `None` for secret keys, which are never
        /// repeated.
        value: Option<String>,
        /// What is wrong with it.
        problem: KeyProblem,
    },
    /// A configuration file could not be parsed.
    #[error("line {line}: {problem} (in `{text}`)")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// The line, with secret key values replaced by `<redacted>`.
        text: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A comment would not stay a single, visible line.
    #[error("invalid comment {text:?}: {problem}")]
    InvalidComment {
        /// The text as given (cut to 200 characters).
        text: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A name Linux or `wg-quick` would not accept for a network interface.
    #[error(
        "invalid interface name {name:?}: {problem}; use 1-15 bytes of a-z, A-Z, 0-9, _ = + . -"
    )]
    InvalidInterfaceName {
        /// The name as given (cut to 60 characters).
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// An endpoint is not `host:port` / `[ipv6]:port`.
    #[error("invalid endpoint {input:?}: {problem}")]
    InvalidEndpoint {
        /// The text as given (cut to 300 characters).
        input: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A host name failed validation.
    #[error(transparent)]
    Hostname(#[from] kokoa_core::Error),
    /// A tunnel address is outside the origin's subnet, or is its network or broadcast
    /// address.
    #[error("{owner}: tunnel address {address} is {problem} of subnet {subnet}")]
    AddressNotUsable {
        /// Who the address belongs to, e.g. `edge "sgp1-01"`.
        owner: String,
        /// The address.
        address: Ipv4Addr,
        /// The origin's subnet.
        subnet: Ipv4Net,
        /// `"outside"`, `"the network address"` or `"the broadcast address"`.
        problem: &'static str,
    },
    /// Two members of one topology share something that must be unique.
    #[error("{first} and {second} have the same {what} {value}")]
    Duplicate {
        /// What is shared: `"tunnel address"`, `"public key"`, `"name"`.
        what: &'static str,
        /// The shared value.
        value: String,
        /// The first member, e.g. `origin "home-server"`.
        first: String,
        /// The second member.
        second: String,
    },
    /// A name was asked for that is not part of the topology.
    #[error("no edge named {name:?} in the topology of origin {origin:?}")]
    UnknownEdge {
        /// The name asked for.
        name: String,
        /// The origin whose topology was asked.
        origin: String,
    },
    /// A private key given for rendering does not belong to the public key in the topology.
    #[error(
        "the private key given for {owner} belongs to public key {actual}, \
         but the topology has {expected}; pass the matching key"
    )]
    KeyMismatch {
        /// Whose key, e.g. `origin "home-server"`.
        owner: String,
        /// The public key in the topology.
        expected: PublicKey,
        /// The public key of the private key given.
        actual: PublicKey,
    },
    /// A WireGuard implementation name this build does not offer.
    #[error(
        "unknown WireGuard implementation {0:?}; use kernel, wireguard-go, boringtun or \
         builtin (Linux, with kokoa-wg's userspace feature)"
    )]
    UnknownImplementation(String),
    /// A program could not be started.
    #[error(
        "cannot run `{program}`: {source}; install it, e.g. apt-get install -y \
         --no-install-recommends wireguard-tools wireguard-go iproute2 iputils-ping"
    )]
    Spawn {
        /// The program.
        program: String,
        /// Why it could not start.
        #[source]
        source: io::Error,
    },
    /// A command (`ip`, `wg`, a userspace daemon) failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line; command lines never hold a key.
        command: String,
        /// What it printed on standard error, or its exit status.
        message: String,
    },
    /// A file could not be written.
    #[error("cannot {action} {path:?}: {source}")]
    Io {
        /// What was being done: `"create"`, `"write"`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Something did not happen in time.
    #[error("{what} within {waited_ms} ms")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        waited_ms: u128,
    },
}

fn shown(value: &Option<String>) -> String {
    match value {
        Some(v) => format!(" {v:?}"),
        None => " (value not shown)".to_owned(),
    }
}

/// Which kind of key an [`Error::InvalidKey`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyKind {
    /// A private key (never shown).
    Private,
    /// A public key.
    Public,
    /// A preshared key (never shown).
    Preshared,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Private => "private key",
            Self::Public => "public key",
            Self::Preshared => "preshared key",
        })
    }
}

/// What is wrong with a rejected key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// Not 44 characters long.
    Length(usize),
    /// Does not end in exactly one `=`.
    Padding,
    /// A character outside the base64 alphabet, at this 0-based position.
    Character(usize),
    /// The last character carries bits a 32-byte key does not have (a mistyped key).
    NotCanonical,
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(n) => write!(
                f,
                "it is {n} characters long; a key is 44 base64 characters, as printed by `wg genkey`"
            ),
            Self::Padding => f.write_str("a key ends in exactly one '='"),
            Self::Character(at) => write!(f, "the character at position {at} is not base64"),
            Self::NotCanonical => f.write_str(
                "the last character before '=' is not one a 32-byte key can end with (mistyped?)",
            ),
        }
    }
}

/// Cuts `text` to at most `max` characters, for error messages.
pub(crate) fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}
