//! The address plan of the lab's small Internet: who lives where. Pure data.

use std::net::Ipv4Addr;

/// Every namespace and root-namespace link the lab makes starts with this.
pub const PREFIX: &str = "kl-";
/// The namespace holding the bridge that joins every host.
pub const HUB: &str = "kl-hub";
/// The bridge, inside [`HUB`].
pub const BRIDGE: &str = "br0";
/// The root namespace's veth to the bridge; the control plane listens on its address.
pub const ROOT_LINK: &str = "kl-root";
/// The lab's "Internet".
pub const NETWORK: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 0);
/// The prefix length of [`NETWORK`].
pub const NETWORK_LEN: u8 = 24;
/// The control plane's address, in the root namespace.
pub const CONTROL_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The control plane's port.
pub const CONTROL_PORT: u16 = 8080;
/// With two control planes (`check --chaos`), their ports on [`CONTROL_ADDRESS`]; a load
/// balancer takes [`CONTROL_PORT`].
pub const HA_CONTROL_PORTS: [u16; 2] = [18081, 18082];
/// Where the control plane takes each origin's tunnel /24 from. It only exists inside the
/// namespaces and does not overlap [`NETWORK`].
pub const SUBNET_POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 0, 0, 0), 16);

/// What a host does in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends requests, like a user on the Internet.
    Client,
    /// Runs `kokoa-edge` with nginx on 80/443.
    Edge,
    /// Runs an app on 127.0.0.1 and `kokoa-origin`.
    Origin,
}

/// One simulated host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Short name, e.g. `edge1`.
    pub name: &'static str,
    /// What it does.
    pub role: Role,
    /// Its address in [`NETWORK`].
    pub address: Ipv4Addr,
}

impl Host {
    /// The network namespace, e.g. `kl-edge1`.
    pub fn netns(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }

    /// The bridge-side end of its veth, inside [`HUB`] (an interface name: at most 15 bytes).
    pub fn hub_port(&self) -> String {
        format!("p-{}", self.name)
    }
}

/// The hosts, in start order.
pub const HOSTS: [Host; 5] = [
    Host {
        name: "client",
        role: Role::Client,
        address: Ipv4Addr::new(10, 99, 0, 100),
    },
    Host {
        name: "edge1",
        role: Role::Edge,
        address: Ipv4Addr::new(10, 99, 0, 11),
    },
    Host {
        name: "edge2",
        role: Role::Edge,
        address: Ipv4Addr::new(10, 99, 0, 12),
    },
    Host {
        name: "origin-a",
        role: Role::Origin,
        address: Ipv4Addr::new(10, 99, 0, 21),
    },
    Host {
        name: "origin-b",
        role: Role::Origin,
        address: Ipv4Addr::new(10, 99, 0, 22),
    },
];

/// The host called `name`.
///
/// # Panics
/// When no host has that name: names come from this module, never from outside input.
pub fn host(name: &str) -> Host {
    *HOSTS
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no lab host called {name:?}"))
}

/// The hosts with `role`.
pub fn hosts(role: Role) -> impl Iterator<Item = Host> {
    HOSTS.into_iter().filter(move |h| h.role == role)
}

/// Every namespace the lab makes: the hub first, so deleting in reverse leaves it last.
pub fn namespaces() -> Vec<String> {
    std::iter::once(HUB.to_owned())
        .chain(HOSTS.iter().map(Host::netns))
        .collect()
}

/// An app running on an origin and the route that publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct App {
    /// The origin host it runs on (and the origin's name in the control plane).
    pub origin: &'static str,
    /// Its port on 127.0.0.1 inside the origin's namespace.
    pub port: u16,
    /// The published host name.
    pub hostname: &'static str,
}

/// The two apps of the scenario.
pub const APPS: [App; 2] = [
    App {
        origin: "origin-a",
        port: 8080,
        hostname: "app.hoge.test",
    },
    App {
        origin: "origin-b",
        port: 8000,
        hostname: "wiki.fuga.test",
    },
];

/// Whether `address` is in `network/len`.
pub fn contains(network: Ipv4Addr, len: u8, address: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(network) & mask == u32::from(address) & mask
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_address_is_in_the_lab_network_and_unique() {
        let mut seen = HashSet::from([CONTROL_ADDRESS]);
        for h in HOSTS {
            assert!(contains(NETWORK, NETWORK_LEN, h.address), "{h:?}");
            assert!(seen.insert(h.address), "{} used twice", h.address);
            assert_ne!(h.address, NETWORK, "{h:?} has the network address");
        }
        assert!(contains(NETWORK, NETWORK_LEN, CONTROL_ADDRESS));
    }

    #[test]
    fn tunnel_pool_does_not_overlap_the_lab_network() {
        let (pool, len) = SUBNET_POOL;
        assert!(!contains(pool, len, NETWORK));
        assert!(!contains(NETWORK, NETWORK_LEN, pool));
        for h in HOSTS {
            assert!(!contains(pool, len, h.address), "{h:?}");
        }
    }

    #[test]
    fn names_are_prefixed_and_fit_interface_limits() {
        let namespaces = namespaces();
        assert_eq!(namespaces.len(), HOSTS.len() + 1);
        assert_eq!(
            namespaces.iter().collect::<HashSet<_>>().len(),
            namespaces.len()
        );
        for ns in &namespaces {
            assert!(ns.starts_with(PREFIX), "{ns}");
        }
        for name in HOSTS
            .iter()
            .map(Host::hub_port)
            .chain([ROOT_LINK.to_owned()])
        {
            assert!(name.len() <= 15, "{name} is too long for an interface name");
        }
    }

    #[test]
    fn apps_run_on_origins_with_distinct_hostnames() {
        for app in APPS {
            assert_eq!(host(app.origin).role, Role::Origin);
        }
        assert_ne!(APPS[0].hostname, APPS[1].hostname);
        assert_eq!(hosts(Role::Edge).count(), 2);
    }

    #[test]
    fn contains_respects_the_prefix_length() {
        let net = Ipv4Addr::new(10, 99, 0, 0);
        assert!(contains(net, 24, Ipv4Addr::new(10, 99, 0, 255)));
        assert!(!contains(net, 24, Ipv4Addr::new(10, 99, 1, 0)));
        assert!(contains(net, 0, Ipv4Addr::new(192, 0, 2, 1)));
        assert!(contains(net, 32, net));
    }
}
