//! Replacing a peer's key without cutting its traffic.
//!
//! WireGuard lets one peer own an address: the peer with the new key cannot share the old
//! one's `AllowedIPs`. So a key changes in three moves, and only the last one needs the
//! other side to have moved:
//!
//! 1. the new key is added as a peer **without** `AllowedIPs` next to the old one, which
//!    keeps carrying the traffic ([`KeyChange`] on the [`InterfaceConfig`]);
//! 2. the other end switches its private key; its next packet starts a handshake that the
//!    prepared peer completes (a handshake needs no `AllowedIPs`);
//! 3. as soon as the new peer has completed a handshake, it takes the old one's addresses
//!    and the old peer goes ([`Config::settle`], run by
//!    [`WgHost::settle`](crate::apply::WgHost::settle) a few times a second while a change
//!    is pending).
//!
//! Between 2 and 3 only the packets of a few hundred milliseconds are lost, which TCP sends
//! again: a request in flight takes that much longer and does not fail.
//!
//! ```
//! use kokoa_wg::{Config, Interface, KeyChange, Peer, PrivateKey};
//!
//! let (old, new) = (PrivateKey::generate().public_key(), PrivateKey::generate().public_key());
//! let mut current = Peer::new(old);
//! current.allowed_ips = vec!["10.0.1.10/32".parse()?];
//! let config = Config::new(Interface::new(PrivateKey::generate()), vec![current, Peer::new(new)]);
//! let change = [KeyChange { from: old, to: new }];
//!
//! // No handshake with the new key yet: nothing moves.
//! assert_eq!(config.settle(&change, |_| false), config);
//! // Once the new key has a handshake, it alone carries the address.
//! let settled = config.settle(&change, |key| *key == new);
//! assert_eq!(settled.peers.len(), 1);
//! assert_eq!((settled.peers[0].public_key, settled.peers[0].allowed_ips[0].to_string()), (new, "10.0.1.10/32".into()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`InterfaceConfig`]: crate::InterfaceConfig

use crate::{Config, PublicKey};

/// The peer `from` is being replaced by the peer `to` (a new key of the same node).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyChange {
    /// The key in use.
    pub from: PublicKey,
    /// The key that takes over once it has completed a handshake.
    pub to: PublicKey,
}

impl Config {
    /// This configuration with every change in `changes` whose new key `handshaken`
    /// carried out: the `to` peer takes the `from` peer's `AllowedIPs` (and its endpoint and
    /// keepalive where it has none) and the `from` peer is left out. Changes whose new key
    /// has no handshake yet, or where either peer is missing, leave the peers as they are.
    ///
    /// Pure and idempotent: settling a settled configuration changes nothing.
    pub fn settle(&self, changes: &[KeyChange], handshaken: impl Fn(&PublicKey) -> bool) -> Config {
        let mut settled = self.clone();
        for change in changes
            .iter()
            .filter(|c| c.from != c.to && handshaken(&c.to))
        {
            let Some(from) = settled
                .peers
                .iter()
                .position(|p| p.public_key == change.from)
            else {
                continue;
            };
            if !settled.peers.iter().any(|p| p.public_key == change.to) {
                continue;
            }
            let old = settled.peers.remove(from);
            let Some(new) = settled.peers.iter_mut().find(|p| p.public_key == change.to) else {
                continue;
            };
            for net in old.allowed_ips {
                if !new.allowed_ips.contains(&net) {
                    new.allowed_ips.push(net);
                }
            }
            new.endpoint = new.endpoint.take().or(old.endpoint);
            new.persistent_keepalive = new.persistent_keepalive.or(old.persistent_keepalive);
            if new.comment.is_none() {
                new.comment = old.comment;
            }
        }
        settled
    }
}
