//! Certificate manager of Kokoa Proxy.
//!
//! This crate will hold the ACME client side (HTTP-01 across many edges, DNS-01 through a
//! `kokoa-dns` provider), the other issuers (Cloudflare Origin CA, manual upload), the renewal
//! scheduler and the certificate stores.
//! It is a placeholder until that work lands: nothing is exported yet.
#![cfg_attr(docsrs, feature(doc_cfg))]
