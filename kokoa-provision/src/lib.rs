//! Edge provisioner of Kokoa Proxy.
//!
//! This crate will hold the `Provisioner` trait (create, destroy and inspect a VPS), its
//! providers (DigitalOcean, Vultr, Hetzner, AWS EC2, manual), the cloud-init user data of a new
//! edge and the replacement strategy that rotates providers and regions.
//! It is a placeholder until that work lands: nothing is exported yet.
#![cfg_attr(docsrs, feature(doc_cfg))]
