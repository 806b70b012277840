//! `kokoa-lab`: a small Internet of network namespaces on one Linux machine, running the
//! whole of Kokoa Proxy — control plane, two edges with nginx, two origins behind
//! WireGuard, a client — so a person can try it (`kokoa-lab up`) and CI can check it
//! end to end (`kokoa-lab check`).
//!
//! The pieces: [`plan`] (who lives at which address), [`net`] (namespaces, bridge, probes),
//! [`supervisor`] (the child processes), [`state`] (the state file and the guard that
//! removes everything), [`lab::Lab`] (the running scenario), [`check`] (its steps),
//! [`app`] (the tiny HTTP app each origin serves), [`tls`] (pebble and the DNS server
//! that give the edges real certificates), [`vps`] (the edge provisioner whose VPSes
//! are namespaces on the lab's bridge), [`failover`] (an edge dies; the system heals),
//! [`browser`] (the Web UI watched in Chromium meanwhile) and [`chaos`] (two control planes
//! on PostgreSQL behind a load balancer [`lb`], failing in every way while a [`sampler`]
//! watches DNS; with [`postgres`] and the DNS API's fault switch [`faults`]).
//!
//! ```
//! use kokoa_lab::plan::{self, Role};
//!
//! let edge1 = plan::host("edge1");
//! assert_eq!(edge1.netns(), "kl-edge1");
//! assert_eq!(edge1.role, Role::Edge);
//! assert!(plan::contains(plan::NETWORK, plan::NETWORK_LEN, edge1.address));
//! assert_eq!(plan::namespaces()[0], plan::HUB);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod api;
pub mod app;
pub mod browser;
pub mod chaos;
pub mod check;
mod error;
pub mod failover;
pub mod faults;
pub mod lab;
pub mod lb;
pub mod net;
pub mod packaged;
pub mod plan;
pub mod postgres;
pub mod prom;
pub mod sampler;
pub mod state;
pub mod supervisor;
pub mod tls;
pub mod vps;

pub use error::Error;
