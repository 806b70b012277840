//! The origin's configuration as `GET /api/v1/origins/me/config` serves it, and what the
//! agent derives from it.

use std::{collections::BTreeSet, net::IpAddr};

use kokoa_core::{HealthCheckPath, Hostname, Name, OriginId, Port, Protocol, WgPublicKey};
use kokoa_wg::{Config, Format, InterfaceConfig, InterfaceName, KeyChange, PrivateKey, PublicKey};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The configuration payload of one origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginConfig {
    /// Hash of the rest; also the `ETag`.
    pub config_hash: String,
    /// The origin.
    pub origin_id: OriginId,
    /// Its `wg0.conf` in wg-quick format without `PrivateKey`: one peer per edge, each
    /// dialled out to. The agent adds the key named by `wireguard_public_key`, which it
    /// made and holds.
    pub wg0_conf: String,
    /// The nginx alternative to the agent's forwarding (not used by the agent).
    pub nginx_conf: String,
    /// Routes to this origin.
    pub routes: Vec<OriginRoute>,
    /// Its services.
    pub services: Vec<Service>,
    /// Edges whose key is being replaced (SPEC §10.3): the new key is a peer of `wg0_conf`
    /// without addresses that takes over from the old one at its first handshake.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_changes: Vec<KeyChangeEntry>,
    /// The public half of the key `wg0_conf` is used with; none until the origin
    /// registered one (it then uses the key it has and registers that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_public_key: Option<WgPublicKey>,
    /// Set while a key rotation waits for the origin's next key: the agent makes one and
    /// registers its public half.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wireguard_key_requested: bool,
}

/// One peer key being replaced, as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChangeEntry {
    /// The key in use.
    pub from: WgPublicKey,
    /// Its successor.
    pub to: WgPublicKey,
}

/// A route to this origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginRoute {
    /// Public host name.
    pub hostname: Hostname,
    /// The local port its traffic goes to.
    pub target_port: Port,
}

/// A service running on this origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    /// Name, unique within the origin.
    pub name: Name,
    /// Its local port.
    pub port: Port,
    /// `http`, `https` or `tcp`.
    pub protocol: Protocol,
    /// The path an HTTP(S) check asks for; without one, a TCP connect is the check.
    pub health_check_path: Option<HealthCheckPath>,
}

/// What the agent makes of a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The WireGuard interface: `wg0.conf` under the agent's interface name.
    pub interface: InterfaceConfig,
    /// The origin's tunnel address, where forwarded ports listen.
    pub tunnel_ip: IpAddr,
    /// The edges' tunnel addresses: the only sources forwarded connections may come from.
    pub edges: BTreeSet<IpAddr>,
    /// The local ports routes lead to.
    pub ports: BTreeSet<u16>,
    /// The services to check.
    pub services: Vec<Service>,
}

impl OriginConfig {
    /// Parses `wg0.conf` for interface `name`, completed with the origin's private `key`,
    /// and collects the addresses and ports the agent serves.
    ///
    /// An edge's address is the host of each single-address `AllowedIPs` entry of its
    /// peer: the control plane gives every edge exactly its /32 (SPEC §10.5). A wider
    /// entry is refused, since it would let any address of that range through.
    pub fn plan(&self, name: InterfaceName, key: PrivateKey) -> Result<Plan, Error> {
        let refused = |reason: String| Error::Refused {
            hash: self.config_hash.clone(),
            reason,
        };
        let config = Config::parse_template(&self.wg0_conf, Format::WgQuick, key)
            .map_err(|e| refused(format!("wg0.conf does not parse: {e}")))?;
        let tunnel_ip = config
            .interface
            .addresses
            .first()
            .map(|net| net.addr())
            .ok_or_else(|| refused("wg0.conf has no Address".to_owned()))?;
        let mut edges = BTreeSet::new();
        for peer in &config.peers {
            for net in &peer.allowed_ips {
                if net.prefix_len() != net.max_prefix_len() {
                    return Err(refused(format!(
                        "peer {} has AllowedIPs {net}, wider than one address",
                        peer.public_key
                    )));
                }
                edges.insert(net.addr());
            }
        }
        let mut interface = InterfaceConfig::new(name, config);
        for change in &self.key_changes {
            let key = |k: &WgPublicKey| {
                PublicKey::from_base64(k.as_str()).map_err(|e| refused(format!("key change: {e}")))
            };
            let (from, to) = (key(&change.from)?, key(&change.to)?);
            let present = |k| interface.config.peers.iter().any(|p| p.public_key == k);
            if from != to && present(from) && present(to) {
                interface = interface.with_key_change(KeyChange { from, to });
            }
        }
        Ok(Plan {
            interface,
            tunnel_ip,
            edges,
            ports: self.routes.iter().map(|r| r.target_port.get()).collect(),
            services: self.services.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use kokoa_wg::{Interface, Peer, PrivateKey};

    use super::*;

    fn config_with(peers: &[&str]) -> OriginConfig {
        let mut interface = Interface::new(PrivateKey::generate());
        interface.addresses = vec!["10.0.1.1/24".parse().unwrap()];
        let peers = peers
            .iter()
            .map(|ip| {
                let mut peer = Peer::new(PrivateKey::generate().public_key());
                peer.allowed_ips = vec![ip.parse().unwrap()];
                peer
            })
            .collect();
        let wg0 = Config::new(interface, peers).render_template(Format::WgQuick);
        OriginConfig {
            config_hash: "h1".into(),
            origin_id: OriginId::parse("org_1").unwrap(),
            wg0_conf: wg0,
            nginx_conf: String::new(),
            routes: vec![
                OriginRoute {
                    hostname: Hostname::parse("app.hoge.com").unwrap(),
                    target_port: Port::new(8080).unwrap(),
                },
                OriginRoute {
                    hostname: Hostname::parse("api.hoge.com").unwrap(),
                    target_port: Port::new(8080).unwrap(),
                },
                OriginRoute {
                    hostname: Hostname::parse("wiki.fuga.com").unwrap(),
                    target_port: Port::new(8000).unwrap(),
                },
            ],
            services: Vec::new(),
            key_changes: Vec::new(),
            wireguard_public_key: None,
            wireguard_key_requested: false,
        }
    }

    #[test]
    fn plan_prepares_a_changing_key_without_giving_it_an_address() {
        let mut config = config_with(&["10.0.1.10/32"]);
        let mut wg0 = Config::parse_template(&config.wg0_conf, Format::WgQuick, key()).unwrap();
        let (old, new) = (wg0.peers[0].public_key, PrivateKey::generate().public_key());
        wg0.peers.push(Peer::new(new));
        config.wg0_conf = wg0.render_template(Format::WgQuick);
        let entry = |from: PublicKey, to: PublicKey| KeyChangeEntry {
            from: WgPublicKey::parse(&from.to_string()).unwrap(),
            to: WgPublicKey::parse(&to.to_string()).unwrap(),
        };
        // A change naming a peer the configuration lacks is left out.
        let stranger = PrivateKey::generate().public_key();
        config.key_changes = vec![entry(old, new), entry(stranger, new)];
        let plan = config
            .plan(InterfaceName::new("wg0").unwrap(), key())
            .unwrap();
        assert_eq!(
            plan.interface.key_changes,
            [KeyChange { from: old, to: new }]
        );
        let edges: Vec<String> = plan.edges.iter().map(ToString::to_string).collect();
        assert_eq!(edges, ["10.0.1.10"]);
    }

    #[test]
    fn plan_collects_edges_and_ports() {
        let config = config_with(&["10.0.1.10/32", "10.0.1.11/32"]);
        let plan = config
            .plan(InterfaceName::new("wg0").unwrap(), key())
            .unwrap();
        assert_eq!(plan.interface.name.as_str(), "wg0");
        assert_eq!(plan.tunnel_ip, "10.0.1.1".parse::<IpAddr>().unwrap());
        let edges: Vec<String> = plan.edges.iter().map(ToString::to_string).collect();
        assert_eq!(edges, ["10.0.1.10", "10.0.1.11"]);
        assert_eq!(plan.ports.into_iter().collect::<Vec<_>>(), [8000, 8080]);
    }

    #[test]
    fn plan_refuses_a_peer_with_a_range() {
        let config = config_with(&["10.0.1.0/24"]);
        let err = config
            .plan(InterfaceName::new("wg0").unwrap(), key())
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.0.1.0/24"), "{err}");
    }

    fn key() -> PrivateKey {
        PrivateKey::from_bytes([9; 32])
    }

    #[test]
    fn the_plan_uses_the_origins_own_key_and_a_payload_with_a_key_is_refused() {
        let config = config_with(&["10.0.1.10/32"]);
        assert!(!config.wg0_conf.contains("PrivateKey"));
        let plan = config
            .plan(InterfaceName::new("wg0").unwrap(), key())
            .unwrap();
        assert_eq!(plan.interface.config.interface.private_key, key());

        let mut full = config.clone();
        let mut wg0 = Config::parse_template(&config.wg0_conf, Format::WgQuick, key()).unwrap();
        wg0.interface.private_key = PrivateKey::generate();
        full.wg0_conf = wg0.render(Format::WgQuick);
        let err = full
            .plan(InterfaceName::new("wg0").unwrap(), key())
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no PrivateKey"), "{err}");
        assert!(
            !err.contains(&*wg0.interface.private_key.to_base64()),
            "{err}"
        );
    }
}
