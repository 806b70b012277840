//! From the control plane's payload to what this host runs: an nginx [`EdgeSite`] and one
//! WireGuard interface per origin.
//!
//! Pure: the only outside fact it needs, whether a certificate's files are installed, is
//! passed in.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    num::NonZeroU16,
};

use ipnet::{IpNet, Ipv4Net};
use kokoa_core::{CertificateRef, EdgeConfig, OriginId, Tunnel};
use kokoa_nginx::{CertName, EdgeSite, Listen, RateLimits, Route};
use kokoa_wg::{
    Comment, Config, Endpoint, Host, Interface, InterfaceConfig, InterfaceName, KeyChange,
    PERSISTENT_KEEPALIVE, Peer, PrivateKey, PublicKey,
};

use crate::Error;

/// The MTU of every tunnel interface (see [`kokoa_wg::apply::DEFAULT_MTU`]).
const TUNNEL_MTU: u16 = kokoa_wg::apply::DEFAULT_MTU;

/// One tunnel as this host runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPlan {
    /// The origin at the other end.
    pub origin_id: OriginId,
    /// The origin's tunnel address, pinged for the tunnel's health.
    pub origin_ip: Ipv4Addr,
    /// The interface and its WireGuard settings.
    pub interface: InterfaceConfig,
}

/// Everything this host should run for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// What nginx serves.
    pub site: EdgeSite,
    /// The WireGuard interfaces, one per origin, in the payload's order (by origin id).
    pub tunnels: Vec<TunnelPlan>,
}

/// Turns `config` into the nginx site and the WireGuard interfaces of this host.
///
/// - Every route becomes an nginx route; a name in `unavailable` is marked unavailable
///   (nginx answers 503 for it).
/// - A route gets the first certificate (by name) that covers its host name, exactly or by
///   a `*.` wildcard, and that `installed` says is present with the right content; otherwise
///   nginx presents the fallback certificate.
/// - Every tunnel becomes an interface named [`InterfaceName::for_origin`] with the edge's
///   own `key`, address, listen port and MTU 1420, whose only peer is the origin, allowed only its
///   `/32`. When the origin listens (`origin_endpoint`), the edge dials it and keeps the path
///   open with keepalives.
///
/// Fails (a refusal: the payload is at fault) when a public key is not a WireGuard key or
/// two origins would get the same interface name.
pub fn convert(
    config: &EdgeConfig,
    key: &PrivateKey,
    listen: Listen,
    installed: &dyn Fn(&CertificateRef) -> bool,
) -> Result<Desired, Error> {
    let content = config.content();
    let refuse = |reason: String| Error::Refused {
        hash: config.config_hash().to_string(),
        reason,
    };
    let mut certificates: Vec<&CertificateRef> = content
        .certificates
        .iter()
        .filter(|c| installed(c))
        .collect();
    certificates.sort_by(|a, b| a.name.cmp(&b.name));

    let routes = content
        .routes
        .iter()
        .map(|(hostname, backend)| {
            let mut route = Route::new(hostname.clone(), SocketAddr::V4(*backend));
            route.available = !content.unavailable.contains(hostname);
            route.certificate = certificates
                .iter()
                .find(|c| c.hostnames.iter().any(|name| name.covers(hostname)))
                .map(|c| CertName::parse(c.name.as_str()))
                .transpose()
                .map_err(|e| refuse(e.to_string()))?;
            Ok(route)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let limits = content.rate_limits;
    let site = EdgeSite {
        routes,
        rate_limits: RateLimits {
            rate_per_second: limits.requests_per_second.get(),
            burst: limits.burst,
            connections_per_ip: limits.connections_per_address.get(),
        },
        listen,
        fallback_certificate: CertName::default(),
    };

    let mut names: BTreeMap<InterfaceName, &OriginId> = BTreeMap::new();
    let mut tunnels = Vec::with_capacity(content.tunnels.len());
    for tunnel in &content.tunnels {
        let interface = interface_for(tunnel, key).map_err(|e| refuse(e.to_string()))?;
        if let Some(other) = names.insert(interface.name.clone(), &tunnel.origin_id) {
            return Err(refuse(format!(
                "origins {other} and {} map to the same interface name {}",
                tunnel.origin_id, interface.name
            )));
        }
        tunnels.push(TunnelPlan {
            origin_id: tunnel.origin_id.clone(),
            origin_ip: tunnel.origin_ip,
            interface,
        });
    }
    Ok(Desired { site, tunnels })
}

fn interface_for(tunnel: &Tunnel, key: &PrivateKey) -> Result<InterfaceConfig, kokoa_wg::Error> {
    let note = Comment::new(&format!("origin: {}", tunnel.origin_name))?;
    let mut interface = Interface::new(key.clone());
    interface.comment = Some(note.clone());
    interface.addresses = vec![IpNet::V4(tunnel.address)];
    interface.listen_port = Some(tunnel.listen_port.get());
    interface.mtu = Some(TUNNEL_MTU);
    let mut peer = Peer::new(PublicKey::from_base64(tunnel.origin_public_key.as_str())?);
    peer.comment = Some(note);
    peer.allowed_ips = vec![IpNet::V4(Ipv4Net::from(tunnel.origin_ip))];
    if let Some(endpoint) = tunnel.origin_endpoint {
        // `EdgeConfig` refuses port 0, so this always succeeds.
        if let Some(port) = NonZeroU16::new(endpoint.port()) {
            peer.endpoint = Some(Endpoint::new(Host::from(endpoint.ip()), port));
            peer.persistent_keepalive = Some(PERSISTENT_KEEPALIVE);
        }
    }
    let mut peers = vec![peer];
    let mut change = None;
    let next = tunnel.origin_next_public_key.as_ref();
    if let Some(next) = next.filter(|n| **n != tunnel.origin_public_key) {
        // The origin's keys rotate: its next key waits beside the current one, without
        // addresses, and takes over at its first handshake.
        let mut prepared = Peer::new(PublicKey::from_base64(next.as_str())?);
        prepared.comment = peers[0].comment.clone();
        prepared.endpoint = peers[0].endpoint.clone();
        prepared.persistent_keepalive = peers[0].persistent_keepalive;
        change = Some(KeyChange {
            from: peers[0].public_key,
            to: prepared.public_key,
        });
        peers.push(prepared);
    }
    let interface = InterfaceConfig::new(
        InterfaceName::for_origin(tunnel.origin_id.as_str()),
        Config::new(interface, peers),
    );
    Ok(match change {
        Some(change) => interface.with_key_change(change),
        None => interface,
    })
}
