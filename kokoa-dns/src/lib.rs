//! DNS manager of Kokoa Proxy.
//!
//! This crate will hold the `DnsProvider` trait (add, remove and list records), its providers
//! (Cloudflare, Route53, Google Cloud DNS, PowerDNS, RFC 2136, DigitalOcean, manual) and the
//! reconciler that keeps one A/AAAA record per healthy edge for every managed hostname.
//! It is a placeholder until that work lands: nothing is exported yet.
#![cfg_attr(docsrs, feature(doc_cfg))]
