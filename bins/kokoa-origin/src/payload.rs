//! What the agent derives from the origin's configuration (`kokoa_core::OriginConfig`, as
//! `GET /api/v1/origins/me/config` serves it).

use std::{collections::BTreeSet, net::IpAddr};

use kokoa_core::{OriginConfig, ServiceEntry, WgPublicKey};
use kokoa_wg::{Config, Format, InterfaceConfig, InterfaceName, KeyChange, PrivateKey, PublicKey};

use crate::Error;

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
    pub services: Vec<ServiceEntry>,
}

impl Plan {
    /// Parses the `wg0.conf` of `config` for interface `name`, completed with the origin's
    /// private `key`, and collects the addresses and ports the agent serves.
    ///
    /// An edge's address is the host of each single-address `AllowedIPs` entry of its
    /// peer: the control plane gives every edge exactly its /32 (SPEC §10.5). A wider
    /// entry is refused, since it would let any address of that range through.
    pub fn new(config: &OriginConfig, name: InterfaceName, key: PrivateKey) -> Result<Self, Error> {
        let refused = |reason: String| Error::Refused {
            hash: config.config_hash.clone(),
            reason,
        };
        let wg0 = Config::parse_template(&config.wg0_conf, Format::WgQuick, key)
            .map_err(|e| refused(format!("wg0.conf does not parse: {e}")))?;
        let tunnel_ip = wg0
            .interface
            .addresses
            .first()
            .map(|net| net.addr())
            .ok_or_else(|| refused("wg0.conf has no Address".to_owned()))?;
        let mut edges = BTreeSet::new();
        for peer in &wg0.peers {
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
        let mut interface = InterfaceConfig::new(name, wg0);
        for change in &config.key_changes {
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
            ports: config.routes.iter().map(|r| r.target_port.get()).collect(),
            services: config.services.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use kokoa_core::{Hostname, KeyChangeEntry, OriginId, OriginRoute, Port};
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
        let plan = Plan::new(&config, InterfaceName::new("wg0").unwrap(), key()).unwrap();
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
        let plan = Plan::new(&config, InterfaceName::new("wg0").unwrap(), key()).unwrap();
        assert_eq!(plan.interface.name.as_str(), "wg0");
        assert_eq!(plan.tunnel_ip, "10.0.1.1".parse::<IpAddr>().unwrap());
        let edges: Vec<String> = plan.edges.iter().map(ToString::to_string).collect();
        assert_eq!(edges, ["10.0.1.10", "10.0.1.11"]);
        assert_eq!(plan.ports.into_iter().collect::<Vec<_>>(), [8000, 8080]);
    }

    #[test]
    fn plan_refuses_a_peer_with_a_range() {
        let config = config_with(&["10.0.1.0/24"]);
        let err = Plan::new(&config, InterfaceName::new("wg0").unwrap(), key())
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
        let plan = Plan::new(&config, InterfaceName::new("wg0").unwrap(), key()).unwrap();
        assert_eq!(plan.interface.config.interface.private_key, key());

        let mut full = config.clone();
        let mut wg0 = Config::parse_template(&config.wg0_conf, Format::WgQuick, key()).unwrap();
        wg0.interface.private_key = PrivateKey::generate();
        full.wg0_conf = wg0.render(Format::WgQuick);
        let err = Plan::new(&full, InterfaceName::new("wg0").unwrap(), key())
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no PrivateKey"), "{err}");
        assert!(
            !err.contains(&*wg0.interface.private_key.to_base64()),
            "{err}"
        );
    }
}
