//! Edge provisioner of Kokoa Proxy: creates and destroys the disposable VPSes that serve as
//! edges, and decides where an attacked edge's replacement goes (SPEC §8.2, §9).
//!
//! - [`Provisioner`]: the provider interface (create, destroy, status, SSH access, list by
//!   tag), held as `Arc<dyn Provisioner>`. Providers: [`Manual`] (always), DigitalOcean,
//!   Vultr, Hetzner Cloud, Amazon EC2 and the lab's network namespaces (features).
//!   [`ProvisionerConfig`] builds one from its kind and credentials.
//! - [`IdempotencyKey`]: the caller's name for one VPS, carried on the instance (EC2's
//!   `ClientToken` too), so that [`Provisioner::find_instance`] finds a VPS whose creation
//!   timed out or whose id was never stored, and no edge gets a second VPS.
//! - [`render_user_data`]: the cloud-init user data that installs WireGuard, nginx and the
//!   `kokoa-edge` agent on a new VPS, enrolls it and reports it ready;
//!   [`EdgeBootstrap::from_user_data`] reads it back.
//! - [`EdgeNodeManagement`]: the replacement settings with the spec's defaults;
//!   [`choose_replacement`] picks another provider and region for a replacement,
//!   [`nodes_to_create`] keeps `min_active_nodes` within `max_nodes`; [`region_code`] maps
//!   region areas (`sgp`) to each provider's codes (`sgp1`).
//!
//! # Example
//!
//! An edge at DigitalOcean in Singapore is attacked; its replacement goes to another
//! provider and region (SPEC §9).
//!
//! ```
//! use kokoa_core::Name;
//! use kokoa_provision::{EdgeNodeManagement, Placement, choose_replacement, nodes_to_create};
//!
//! let settings = EdgeNodeManagement::default();
//! let failed = Placement { provider: Name::parse("digitalocean")?, region: Name::parse("sgp1")? };
//! let live = [Placement { provider: Name::parse("vultr")?, region: Name::parse("sgp")? }];
//!
//! let next = choose_replacement(&failed, &live, &settings.replacement_strategy);
//! assert_eq!((next.provider.as_str(), next.region.as_str()), ("hetzner", "nbg1"));
//! assert_eq!(next.area(), "fra");
//!
//! // One edge left and none on its way: one more brings it back to min_active_nodes (2).
//! assert_eq!(nodes_to_create(1, 0, &settings), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Crate features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `digitalocean` | yes | `digitalocean::DigitalOcean`: droplets through the DigitalOcean API v2. |
//! | `vultr` | no | `vultr::Vultr`: instances through the Vultr API v2. |
//! | `hetzner` | no | `hetzner::Hetzner`: servers through the Hetzner Cloud API v1. |
//! | `ec2` | no | `ec2::Ec2`: Amazon EC2 instances through the EC2 Query API, requests signed with AWS Signature Version 4 (`kokoa-core/sigv4`); provider name `aws`. |
//! | `lab` | no | `lab::LabProvisioner`: network namespaces on this Linux machine as edge VPSes (needs root), so the edge automation runs end to end in a lab; provider name `lab`. |
//!
//! Each cloud provider has a constructor for the real API (`new`) and one taking a
//! `reqwest::Client` and a base URL (`with_client`), so tests can point it at a local
//! server.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod cloud_init;
mod config;
mod error;
mod manual;
mod provider;
mod strategy;

#[cfg(any(
    feature = "digitalocean",
    feature = "vultr",
    feature = "hetzner",
    feature = "ec2"
))]
mod http;

#[cfg(feature = "digitalocean")]
#[cfg_attr(docsrs, doc(cfg(feature = "digitalocean")))]
pub mod digitalocean;
#[cfg(feature = "ec2")]
#[cfg_attr(docsrs, doc(cfg(feature = "ec2")))]
pub mod ec2;
#[cfg(feature = "hetzner")]
#[cfg_attr(docsrs, doc(cfg(feature = "hetzner")))]
pub mod hetzner;
#[cfg(feature = "lab")]
#[cfg_attr(docsrs, doc(cfg(feature = "lab")))]
pub mod lab;
#[cfg(feature = "vultr")]
#[cfg_attr(docsrs, doc(cfg(feature = "vultr")))]
pub mod vultr;

pub use cloud_init::{AgentSource, EdgeBootstrap, render_user_data};
pub use config::{PROVISIONER_KINDS, ProvisionerConfig};
pub use error::Error;
pub use manual::Manual;
pub use provider::{
    IdempotencyKey, Instance, InstanceConfig, InstanceId, InstanceStatus, Provisioner, Secret,
    SshConfig, TaggedInstance,
};
pub use strategy::{
    EdgeNodeManagement, Placement, ReplacementStrategy, choose_replacement, nodes_to_create,
    region_area, region_code,
};

/// Runs the README's example as a doctest so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
