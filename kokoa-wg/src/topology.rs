//! One origin and its edges: which file each side gets.
//!
//! Each origin has its own subnet; every edge runs one interface per origin, and every
//! `AllowedIPs` is a single `/32`, so an origin can reach its own edges and nothing else.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    num::NonZeroU16,
    str::FromStr,
};

use ipnet::{IpNet, Ipv4Net};
use sha2::{Digest as _, Sha256};

use crate::{
    config::{Comment, Config, Interface, Peer},
    endpoint::{Endpoint, Host},
    error::{Error, cut},
    key::{PrivateKey, PublicKey},
    rotation::KeyChange,
};

/// The default WireGuard port: the origin's in [`Direction::EdgesDialIn`], and the first of
/// the edges' per-origin ports. Which port an edge uses for which origin is decided by the
/// caller (Kokoa's control plane allocates and stores one per tunnel), so it never moves when
/// other origins come or go.
pub const BASE_LISTEN_PORT: NonZeroU16 = NonZeroU16::new(51820).expect("51820 is not zero");

/// Keepalive interval of the dialling side: short enough to hold a NAT mapping open (most
/// expire UDP after 30 s or more).
pub const PERSISTENT_KEEPALIVE: NonZeroU16 = NonZeroU16::new(25).expect("25 is not zero");

/// A network interface name that Linux and `wg-quick` accept: 1–15 bytes of
/// `a-z A-Z 0-9 _ = + . -`, not `.` or `..`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, Error> {
        let fail = |problem| Error::InvalidInterfaceName {
            name: cut(name, 60),
            problem,
        };
        if name.is_empty() || name.len() > 15 {
            return Err(fail("it is empty or longer than 15 bytes"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_=+.-".contains(&b))
        {
            return Err(fail("it holds a character outside the allowed set"));
        }
        if name == "." || name == ".." {
            return Err(fail("Linux reserves it"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name of an edge's interface for the origin with `origin_id`: `kk` and 12 hex
    /// digits of the id's SHA-256, e.g. `kk3f9a0c1be24d`.
    ///
    /// `wg-origin-<name>` would pass the 15-byte limit for most names; a hash fits, never
    /// changes for an origin, and 48 bits make two origins on one edge sharing a name
    /// practically impossible. The origin's name goes into the file as a comment.
    pub fn for_origin(origin_id: &str) -> Self {
        let digest = Sha256::digest(origin_id.as_bytes());
        Self(format!("kk{}", hex::encode(&digest[..6])))
    }

    /// `wg0`, the origin's interface.
    fn origin() -> Self {
        Self("wg0".to_owned())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InterfaceName({})", self.0)
    }
}

impl FromStr for InterfaceName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// A configuration and the interface it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterfaceConfig {
    /// The interface name.
    pub name: InterfaceName,
    /// Its configuration.
    pub config: Config,
    /// Peers whose key is being replaced (see [`crate::rotation`]): applied, the
    /// configuration is [settled](Config::settle) against the live handshakes.
    pub key_changes: Vec<KeyChange>,
}

impl InterfaceConfig {
    /// `config` for the interface `name`.
    pub fn new(name: InterfaceName, config: Config) -> Self {
        Self {
            name,
            config,
            key_changes: Vec::new(),
        }
    }

    /// This, with the peer `change.to` taking over from `change.from` once it has a
    /// handshake.
    pub fn with_key_change(mut self, change: KeyChange) -> Self {
        self.key_changes.push(change);
        self
    }

    /// `<name>.conf`: wg-quick takes the interface name from the file name.
    pub fn file_name(&self) -> String {
        format!("{}.conf", self.name)
    }
}

/// The origin side of a [`Topology`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Origin {
    /// Stable id; the edges' interface names derive from it.
    pub id: String,
    /// Display name, written into the files as a comment.
    pub name: String,
    /// The origin's own subnet, e.g. `10.0.1.0/24`.
    pub subnet: Ipv4Net,
    /// The origin's address in it, e.g. `10.0.1.1`.
    pub tunnel_ip: Ipv4Addr,
    /// The origin's public key.
    pub public_key: PublicKey,
}

impl Origin {
    /// An origin; checked by [`Topology::new`].
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        subnet: Ipv4Net,
        tunnel_ip: Ipv4Addr,
        public_key: PublicKey,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            subnet,
            tunnel_ip,
            public_key,
        }
    }
}

/// One edge as the origin's topology sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Edge {
    /// Name, unique within the topology, written into the files as a comment.
    pub name: String,
    /// The public key of the edge's interface for this origin.
    pub public_key: PublicKey,
    /// The edge's public address or name.
    pub host: Host,
    /// The edge's address in the origin's subnet, e.g. `10.0.1.10`.
    pub tunnel_ip: Ipv4Addr,
    /// The port the edge's interface for this origin listens on.
    pub listen_port: NonZeroU16,
}

impl Edge {
    /// An edge; checked by [`Topology::new`].
    pub fn new(
        name: impl Into<String>,
        public_key: PublicKey,
        host: Host,
        tunnel_ip: Ipv4Addr,
        listen_port: NonZeroU16,
    ) -> Self {
        Self {
            name: name.into(),
            public_key,
            host,
            tunnel_ip,
            listen_port,
        }
    }
}

/// Which side opens the tunnel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Direction {
    /// The origin dials every edge and keeps the path open with keepalives, so it needs no
    /// open inbound port and works behind NAT. Edge peers in the origin's file carry
    /// `Endpoint` and `PersistentKeepalive`; the edges' origin peer has no `Endpoint`.
    #[default]
    OriginDialsOut,
    /// The origin listens on this endpoint's port and the edges dial it at this address,
    /// with keepalives.
    EdgesDialIn(Endpoint),
}

/// An origin, its edges and the direction of dialling, checked for consistency. Holds only
/// public data: the private key of the side being rendered is passed to the render call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    origin: Origin,
    edges: Vec<Edge>,
    direction: Direction,
    origin_note: Comment,
    edge_notes: Vec<Comment>,
}

impl Topology {
    /// Checks that every tunnel address is a usable host address of the origin's subnet,
    /// that addresses, public keys and edge names are unique, and that names fit in a
    /// one-line comment.
    pub fn new(origin: Origin, edges: Vec<Edge>, direction: Direction) -> Result<Self, Error> {
        let subnet = origin.subnet;
        let origin_owner = format!("origin {:?}", origin.name);
        check_usable(&origin_owner, origin.tunnel_ip, subnet)?;
        let origin_note = Comment::new(&format!("origin: {}", origin.name))?;
        let mut edge_notes = Vec::with_capacity(edges.len());
        let mut members = vec![(origin_owner, origin.tunnel_ip, origin.public_key)];
        for edge in &edges {
            let owner = format!("edge {:?}", edge.name);
            check_usable(&owner, edge.tunnel_ip, subnet)?;
            for (other, ip, key) in &members {
                let (what, value) = if *other == owner {
                    ("name", format!("{:?}", edge.name))
                } else if *ip == edge.tunnel_ip {
                    ("tunnel address", ip.to_string())
                } else if *key == edge.public_key {
                    ("public key", key.to_string())
                } else {
                    continue;
                };
                return Err(Error::Duplicate {
                    what,
                    value,
                    first: other.clone(),
                    second: owner,
                });
            }
            edge_notes.push(Comment::new(&format!("edge: {}", edge.name))?);
            members.push((owner, edge.tunnel_ip, edge.public_key));
        }
        Ok(Self {
            origin,
            edges,
            direction,
            origin_note,
            edge_notes,
        })
    }

    /// The origin.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The edges, in the order given.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// The origin's `wg0.conf`: one peer per edge, each allowed only its `/32`.
    ///
    /// Fails when `key` is not the origin's private key.
    pub fn origin_config(&self, key: &PrivateKey) -> Result<InterfaceConfig, Error> {
        let origin = &self.origin;
        check_key(
            || format!("origin {:?}", origin.name),
            origin.public_key,
            key,
        )?;
        let dial_out = self.direction == Direction::OriginDialsOut;
        let mut interface = Interface::new(key.clone());
        interface.comment = Some(self.origin_note.clone());
        interface.addresses = vec![address(origin.tunnel_ip, origin.subnet)];
        if let Direction::EdgesDialIn(endpoint) = &self.direction {
            interface.listen_port = Some(endpoint.port.get());
        }
        let peers = self
            .edges
            .iter()
            .zip(&self.edge_notes)
            .map(|(edge, note)| {
                let mut peer = Peer::new(edge.public_key);
                peer.comment = Some(note.clone());
                peer.allowed_ips = vec![host_net(edge.tunnel_ip)];
                if dial_out {
                    peer.endpoint = Some(Endpoint::new(edge.host.clone(), edge.listen_port));
                    peer.persistent_keepalive = Some(PERSISTENT_KEEPALIVE);
                }
                peer
            })
            .collect();
        Ok(InterfaceConfig::new(
            InterfaceName::origin(),
            Config::new(interface, peers),
        ))
    }

    /// The configuration of edge `edge_name`'s interface for this origin, named by
    /// [`InterfaceName::for_origin`]. It always listens on the edge's port; its only peer is
    /// the origin, allowed only its `/32`.
    ///
    /// Fails when there is no such edge or `key` is not that edge's private key.
    pub fn edge_config(&self, edge_name: &str, key: &PrivateKey) -> Result<InterfaceConfig, Error> {
        let origin = &self.origin;
        let edge = self
            .edges
            .iter()
            .find(|e| e.name == edge_name)
            .ok_or_else(|| Error::UnknownEdge {
                name: edge_name.to_owned(),
                origin: origin.name.clone(),
            })?;
        check_key(|| format!("edge {edge_name:?}"), edge.public_key, key)?;
        let mut interface = Interface::new(key.clone());
        interface.comment = Some(self.origin_note.clone());
        interface.addresses = vec![address(edge.tunnel_ip, origin.subnet)];
        interface.listen_port = Some(edge.listen_port.get());
        let mut peer = Peer::new(origin.public_key);
        peer.comment = Some(self.origin_note.clone());
        peer.allowed_ips = vec![host_net(origin.tunnel_ip)];
        if let Direction::EdgesDialIn(endpoint) = &self.direction {
            peer.endpoint = Some(endpoint.clone());
            peer.persistent_keepalive = Some(PERSISTENT_KEEPALIVE);
        }
        Ok(InterfaceConfig::new(
            InterfaceName::for_origin(&origin.id),
            Config::new(interface, vec![peer]),
        ))
    }
}

fn check_usable(owner: &str, ip: Ipv4Addr, subnet: Ipv4Net) -> Result<(), Error> {
    let problem = if !subnet.contains(&ip) {
        "outside"
    } else if ip == subnet.network() {
        "the network address"
    } else if ip == subnet.broadcast() {
        "the broadcast address"
    } else {
        return Ok(());
    };
    Err(Error::AddressNotUsable {
        owner: owner.to_owned(),
        address: ip,
        subnet,
        problem,
    })
}

fn check_key(
    owner: impl FnOnce() -> String,
    expected: PublicKey,
    key: &PrivateKey,
) -> Result<(), Error> {
    let actual = key.public_key();
    if actual == expected {
        Ok(())
    } else {
        Err(Error::KeyMismatch {
            owner: owner(),
            expected,
            actual,
        })
    }
}

/// `ip` with the subnet's prefix, as an interface address.
fn address(ip: Ipv4Addr, subnet: Ipv4Net) -> IpNet {
    IpNet::V4(Ipv4Net::new_assert(ip, subnet.prefix_len()))
}

fn host_net(ip: Ipv4Addr) -> IpNet {
    IpNet::from(IpAddr::V4(ip))
}
