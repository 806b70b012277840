//! Tunnel address allocation (SPEC §10.5): one /24 per origin, so origins never share a
//! network and a peer's `AllowedIPs` can be a single /32.
//!
//! Everything here is pure: the caller passes in what is already taken (from the store) and
//! records the answer. Releasing a subnet or address is simply no longer passing it in.

use std::{collections::HashSet, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// The first edge address in an origin subnet: `.2`–`.9` stay free for future use.
const FIRST_EDGE_HOST: u8 = 10;
/// The last edge address; `.255` is the broadcast address.
const LAST_EDGE_HOST: u8 = 254;

/// The range origin subnets are cut from, e.g. `10.0.0.0/16` (the default) or
/// `100.64.0.0/10`.
///
/// The pool's first /24 is reserved (for the control plane or a shared network), so
/// allocation starts at the second: `10.0.1.0/24` in the default pool, which then holds 255
/// origins.
///
/// ```
/// use kokoa_core::SubnetPool;
///
/// let pool = SubnetPool::default();
/// let first = pool.allocate([])?;
/// assert_eq!(first.to_string(), "10.0.1.0/24");
/// assert_eq!(pool.allocate([&first])?.to_string(), "10.0.2.0/24");
/// assert_eq!(pool.capacity(), 255);
/// # Ok::<(), kokoa_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubnetPool {
    pool: Ipv4Net,
}

impl Default for SubnetPool {
    /// `10.0.0.0/16`.
    fn default() -> Self {
        Self {
            pool: Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 16),
        }
    }
}

impl SubnetPool {
    /// A pool over `pool`, which must be a network address (no host bits set) with a
    /// prefix of /23 or shorter: it must hold the reserved first /24 and at least one more.
    pub fn new(pool: Ipv4Net) -> Result<Self, Error> {
        let reason = if pool.prefix_len() > 23 {
            "it must hold at least two /24 networks (prefix /23 or shorter), \
             since the first /24 is reserved"
        } else if pool.addr() != pool.network() {
            "it is not a network address (host bits are set)"
        } else {
            return Ok(Self { pool });
        };
        Err(Error::InvalidPool { pool, reason })
    }

    /// The pool's range.
    pub fn pool(&self) -> Ipv4Net {
        self.pool
    }

    /// How many origin subnets the pool holds: its /24s minus the reserved first one.
    pub fn capacity(&self) -> u32 {
        (1u32 << (24 - self.pool.prefix_len())) - 1
    }

    /// The first free origin /24 after the reserved one, given the subnets already `taken`.
    ///
    /// Errors: a taken entry that is not a /24 network inside the pool (a sign the store
    /// and the configured pool disagree), or every subnet taken.
    pub fn allocate<'a>(
        &self,
        taken: impl IntoIterator<Item = &'a Ipv4Net>,
    ) -> Result<Ipv4Net, Error> {
        let base = u32::from(self.pool.network());
        let taken = taken
            .into_iter()
            .map(|subnet| {
                let inside = subnet.prefix_len() == 24
                    && subnet.addr() == subnet.network()
                    && self.pool.contains(subnet);
                if inside {
                    Ok((u32::from(subnet.network()) - base) >> 8)
                } else {
                    Err(Error::ForeignSubnet {
                        subnet: *subnet,
                        pool: self.pool,
                    })
                }
            })
            .collect::<Result<HashSet<u32>, Error>>()?;
        let index =
            (1..=self.capacity())
                .find(|i| !taken.contains(i))
                .ok_or(Error::PoolExhausted {
                    pool: self.pool,
                    capacity: self.capacity(),
                })?;
        Ok(Ipv4Net::new_assert(Ipv4Addr::from(base + (index << 8)), 24))
    }
}

/// Serialised as the pool's range, e.g. `"10.0.0.0/16"`, for configuration files.
impl Serialize for SubnetPool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.pool.serialize(s)
    }
}

/// Checks the range as [`SubnetPool::new`] does.
impl<'de> Deserialize<'de> for SubnetPool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(Ipv4Net::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Host number `host` inside `subnet`, which must be a /24 network.
fn host(subnet: Ipv4Net, host: u8) -> Result<Ipv4Addr, Error> {
    if subnet.prefix_len() != 24 || subnet.addr() != subnet.network() {
        return Err(Error::NotOriginSubnet { subnet });
    }
    Ok(Ipv4Addr::from(
        u32::from(subnet.network()) | u32::from(host),
    ))
}

/// The origin's own tunnel address in its subnet: `.1`.
///
/// ```
/// use kokoa_core::origin_address;
/// assert_eq!(origin_address("10.0.1.0/24".parse()?)?.to_string(), "10.0.1.1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn origin_address(subnet: Ipv4Net) -> Result<Ipv4Addr, Error> {
    host(subnet, 1)
}

/// The first free edge address (`.10` up to `.254`) in an origin `subnet`, given the
/// addresses already `taken` there. Taken addresses outside the subnet are an error; taken
/// addresses outside the edge range (such as the origin's `.1`) are allowed and ignored.
///
/// ```
/// use std::net::Ipv4Addr;
/// use kokoa_core::allocate_edge_address;
///
/// let subnet = "10.0.1.0/24".parse()?;
/// let first = allocate_edge_address(subnet, [])?;
/// assert_eq!(first, Ipv4Addr::new(10, 0, 1, 10));
/// assert_eq!(allocate_edge_address(subnet, [&first])?, Ipv4Addr::new(10, 0, 1, 11));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn allocate_edge_address<'a>(
    subnet: Ipv4Net,
    taken: impl IntoIterator<Item = &'a Ipv4Addr>,
) -> Result<Ipv4Addr, Error> {
    host(subnet, 0)?;
    let taken = taken
        .into_iter()
        .map(|address| {
            if subnet.contains(address) {
                Ok(address.octets()[3])
            } else {
                Err(Error::ForeignAddress {
                    address: *address,
                    subnet,
                })
            }
        })
        .collect::<Result<HashSet<u8>, Error>>()?;
    let free = (FIRST_EDGE_HOST..=LAST_EDGE_HOST)
        .find(|h| !taken.contains(h))
        .ok_or(Error::SubnetFull { subnet })?;
    host(subnet, free)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// Allocates until the pool is exhausted; returns the subnets in order.
    fn drain(pool: &SubnetPool) -> (Vec<Ipv4Net>, Error) {
        let mut taken = Vec::new();
        loop {
            // Bounded: the loop ends at the first error, which must come after capacity().
            assert!(taken.len() <= pool.capacity() as usize);
            match pool.allocate(&taken) {
                Ok(subnet) => taken.push(subnet),
                Err(e) => return (taken, e),
            }
        }
    }

    #[test]
    fn default_pool_gives_255_disjoint_subnets_then_a_clear_error() {
        let pool = SubnetPool::default();
        let (subnets, err) = drain(&pool);
        assert_eq!(subnets.len(), 255);
        assert_eq!(subnets[0], net("10.0.1.0/24"));
        assert_eq!(subnets[254], net("10.0.255.0/24"));
        for (i, a) in subnets.iter().enumerate() {
            assert!(pool.pool().contains(a) && a.prefix_len() == 24, "{a}");
            assert!(
                !a.contains(&Ipv4Addr::new(10, 0, 0, 1)),
                "reserved /24 handed out"
            );
            for b in &subnets[i + 1..] {
                assert!(!a.contains(b) && !b.contains(a), "{a} overlaps {b}");
            }
        }
        let msg = err.to_string();
        assert!(msg.contains("10.0.0.0/16") && msg.contains("255"), "{msg}");
    }

    #[test]
    fn cgnat_pool_works() {
        let pool = SubnetPool::new(net("100.64.0.0/10")).unwrap();
        assert_eq!(pool.capacity(), 16_383);
        assert_eq!(pool.allocate([]).unwrap(), net("100.64.1.0/24"));
        let taken = [net("100.64.1.0/24"), net("100.64.2.0/24")];
        assert_eq!(pool.allocate(&taken).unwrap(), net("100.64.3.0/24"));
        // Every /24 but the reserved first, as the store would list them when full.
        let mut all: Vec<Ipv4Net> = (1..=16_383u32)
            .map(|i| Ipv4Net::new(Ipv4Addr::from(0x6440_0000 + (i << 8)), 24).unwrap())
            .collect();
        let last = all.pop().unwrap();
        assert_eq!(last, net("100.127.255.0/24"));
        assert_eq!(pool.allocate(&all).unwrap(), last);
        all.push(last);
        let err = pool.allocate(&all).unwrap_err().to_string();
        assert!(
            err.contains("100.64.0.0/10") && err.contains("16383"),
            "{err}"
        );
    }

    #[test]
    fn pools_come_from_configuration_as_strings() {
        let pool: SubnetPool = serde_json::from_str("\"100.64.0.0/10\"").unwrap();
        assert_eq!(serde_json::to_string(&pool).unwrap(), "\"100.64.0.0/10\"");
        let err = serde_json::from_str::<SubnetPool>("\"10.0.0.0/25\"").unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/25"), "{err}");
    }

    #[test]
    fn a_released_subnet_is_reused_first() {
        let pool = SubnetPool::default();
        let taken = [net("10.0.1.0/24"), net("10.0.3.0/24")];
        assert_eq!(pool.allocate(&taken).unwrap(), net("10.0.2.0/24"));
    }

    #[test]
    fn bad_pools_and_taken_entries_are_rejected_by_value() {
        for (pool, why) in [
            ("10.0.0.0/24", "/23"),
            ("10.0.0.0/25", "/23"),
            ("10.0.1.0/16", "host bits"),
        ] {
            let err = SubnetPool::new(net(pool)).unwrap_err().to_string();
            assert!(err.contains(pool) && err.contains(why), "{err}");
        }
        let pool = SubnetPool::default();
        for bad in ["10.1.0.0/24", "10.0.1.0/25", "10.0.0.0/23", "10.0.1.7/24"] {
            let err = pool.allocate(&[net(bad)]).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("10.0.0.0/16"), "{err}");
        }
    }

    #[test]
    fn edge_addresses_fill_10_to_254_then_error() {
        let subnet = net("10.0.7.0/24");
        assert_eq!(origin_address(subnet).unwrap(), Ipv4Addr::new(10, 0, 7, 1));
        let mut taken = vec![Ipv4Addr::new(10, 0, 7, 1)];
        let err = loop {
            assert!(taken.len() <= 256);
            match allocate_edge_address(subnet, &taken) {
                Ok(a) => taken.push(a),
                Err(e) => break e,
            }
        };
        let hosts: Vec<u8> = taken[1..].iter().map(|a| a.octets()[3]).collect();
        assert_eq!(hosts, (10..=254).collect::<Vec<u8>>());
        assert!(err.to_string().contains("10.0.7.0/24"), "{err}");
        let foreign = [Ipv4Addr::new(10, 0, 8, 10)];
        let err = allocate_edge_address(subnet, &foreign)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10.0.8.10") && err.contains("10.0.7.0/24"),
            "{err}"
        );
        for bad in ["10.0.7.0/23", "10.0.7.5/24"] {
            assert!(origin_address(net(bad)).is_err(), "{bad}");
            assert!(allocate_edge_address(net(bad), []).is_err(), "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn allocation_is_the_first_free_subnet_inside_the_pool(
            prefix in 14u8..=23,
            base in any::<u32>(),
            picks in proptest::collection::vec(any::<u32>(), 0..300),
        ) {
            let range = Ipv4Net::new(Ipv4Addr::from(base), prefix).unwrap().trunc();
            let pool = SubnetPool::new(range).unwrap();
            let start = u32::from(range.network());
            let index = |subnet: &Ipv4Net| (u32::from(subnet.network()) - start) >> 8;
            let count = pool.capacity() + 1;
            let taken: Vec<Ipv4Net> = picks
                .iter()
                .map(|p| Ipv4Net::new(Ipv4Addr::from(start + ((p % count) << 8)), 24).unwrap())
                .collect();
            match pool.allocate(&taken) {
                Ok(subnet) => {
                    prop_assert_eq!(subnet.prefix_len(), 24);
                    prop_assert!(pool.pool().contains(&subnet));
                    prop_assert!(subnet.network() != pool.pool().network(), "reserved /24");
                    prop_assert!(!taken.contains(&subnet));
                    // Nothing free before it, apart from the reserved first /24.
                    for i in 1..index(&subnet) {
                        let taken_i = taken.iter().any(|t| index(t) == i);
                        prop_assert!(taken_i, "/24 number {} was free", i);
                    }
                }
                Err(Error::PoolExhausted { capacity, .. }) => {
                    prop_assert_eq!(capacity, pool.capacity());
                    let distinct: HashSet<u32> =
                        taken.iter().map(index).filter(|i| *i != 0).collect();
                    prop_assert_eq!(distinct.len() as u32, capacity);
                }
                Err(other) => prop_assert!(false, "unexpected {}", other),
            }
        }

        #[test]
        fn edge_addresses_are_never_network_broadcast_or_taken(
            third in any::<u8>(),
            picks in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let subnet = Ipv4Net::new(Ipv4Addr::new(10, 0, third, 0), 24).unwrap();
            let taken: Vec<Ipv4Addr> =
                picks.iter().map(|h| Ipv4Addr::new(10, 0, third, *h)).collect();
            match allocate_edge_address(subnet, &taken) {
                Ok(address) => {
                    prop_assert!(subnet.contains(&address));
                    prop_assert!((10..=254).contains(&address.octets()[3]));
                    prop_assert!(!taken.contains(&address));
                }
                Err(Error::SubnetFull { .. }) => {
                    prop_assert!((10..=254).all(|h| picks.contains(&h)));
                }
                Err(other) => prop_assert!(false, "unexpected {}", other),
            }
        }
    }
}
