//! WireGuard for Kokoa Proxy: keys, the `wg-quick` / `wg setconf` file model (render and
//! parse), and the per-origin topology that isolates origins from each other.
//!
//! - [`PrivateKey`], [`PublicKey`], [`PresharedKey`]: generate, derive, base64 in and out.
//!   Secrets are never shown by `Debug` or in errors and are zeroed on drop.
//! - [`Config`]: an `[Interface]` and its `[Peer]`s; [`Config::render`] and
//!   [`Config::parse`] in either [`Format`]. Comments are one line by construction
//!   ([`Comment`]), so a user-supplied name can never add a line to a file.
//! - [`Topology`]: an origin with its own subnet and its edges. The origin gets `wg0.conf`
//!   with one peer per edge; each edge gets one interface per origin
//!   ([`InterfaceName::for_origin`]) whose only peer is that origin. Every `AllowedIPs` is a
//!   single `/32`. By default the origin dials out ([`Direction`]).
//! - [`apply::WgHost`] (Unix): brings interfaces up on the host and keeps them in step with a
//!   desired set (`wg setconf` / `wg syncconf`, addresses, MTU), with the kernel's WireGuard
//!   or a userspace daemon ([`apply::Implementation`]); reports handshakes and ping times.
//!
//! ```
//! use kokoa_wg::{BASE_LISTEN_PORT, Edge, Format, Host, Origin, PrivateKey, Topology};
//!
//! let origin_key = PrivateKey::generate();
//! let edge_key = PrivateKey::generate();
//! let subnet = "10.0.1.0/24".parse()?;
//! let origin = Origin::new(
//!     "origin-id-1", "home-server", subnet, "10.0.1.1".parse()?, origin_key.public_key(),
//! );
//! let edge = Edge::new(
//!     "sgp1-01",
//!     edge_key.public_key(),
//!     Host::parse("edge1.example.net")?,
//!     "10.0.1.10".parse()?,
//!     BASE_LISTEN_PORT,
//! );
//! let topology = Topology::new(origin, vec![edge], Default::default())?;
//!
//! let wg0 = topology.origin_config(&origin_key)?;
//! let text = wg0.config.render(Format::WgQuick);
//! assert_eq!(wg0.file_name(), "wg0.conf");
//! assert!(text.contains("# origin: home-server\n"));
//! assert!(text.contains("Address = 10.0.1.1/24\n"));
//! assert!(text.contains("AllowedIPs = 10.0.1.10/32\nEndpoint = edge1.example.net:51820\n"));
//! assert!(text.contains("PersistentKeepalive = 25\n"));
//!
//! let on_edge = topology.edge_config("sgp1-01", &edge_key)?;
//! assert!(on_edge.name.as_str().starts_with("kk") && on_edge.name.as_str().len() == 14);
//! let text = on_edge.config.render(Format::WgQuick);
//! assert!(text.contains("ListenPort = 51820\n"));
//! assert!(text.contains("AllowedIPs = 10.0.1.1/32\n") && !text.contains("Endpoint"));
//! assert_eq!(kokoa_wg::Config::parse(&text, Format::WgQuick)?, on_edge.config);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | — | | none; `apply` (Unix only) runs `ip`, `wg` and a userspace daemon, the rest is pure logic |
//! | `userspace` | no | [`userspace`] (Linux): a WireGuard interface built into the program (boringtun's protocol, a TUN device, `wg`'s control socket) |
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(unix)]
pub mod apply;
mod config;
mod endpoint;
mod error;
mod key;
mod parse;
pub mod rotation;
mod topology;
#[cfg(all(feature = "userspace", target_os = "linux"))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "userspace", target_os = "linux"))))]
pub mod userspace;

#[cfg(test)]
mod tests;

pub use config::{Comment, Config, Format, Interface, Peer};
pub use endpoint::{Endpoint, Host};
pub use error::{Error, KeyKind, KeyProblem};
pub use key::{PresharedKey, PrivateKey, PublicKey};
pub use rotation::KeyChange;
pub use topology::{
    BASE_LISTEN_PORT, Direction, Edge, InterfaceConfig, InterfaceName, Origin,
    PERSISTENT_KEEPALIVE, Topology,
};
