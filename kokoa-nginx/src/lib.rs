//! nginx as the data plane of a Kokoa Proxy edge: render the routes into nginx `map`s and one
//! catch-all server, and apply the result safely.
//!
//! - [`EdgeSite`] is the input: [`Route`]s (hostname → backend address, certificate name,
//!   available or not), [`RateLimits`], [`Listen`] ports and the fallback certificate. It is
//!   independent of the control plane's payload so the crate can be used on its own.
//! - [`EdgeSite::render`] writes the `http`-context file: a routes map on `$host` whose
//!   values are `upstream` names (one upstream per backend address, with idle connections
//!   kept for reuse), a map of unavailable hostnames (answered with 503 and Kokoa's own
//!   page), rate limits, a port-80 server for ACME HTTP-01 challenges, `/health` and the
//!   redirect to HTTPS, and the HTTPS servers proxying to `http://$kokoa_backend` (404 for
//!   hostnames not in the map, WebSocket upgrades pass): a default one with the fallback
//!   certificate and one per certificate, listing the hostnames it covers, with the same
//!   routing. Certificates are thus loaded at reload, never from a path built from the
//!   client's SNI (beyond 250 certificates, the rest are chosen per handshake through a
//!   map on `$ssl_server_name` whose values are only known [`CertName`]s).
//! - [`Layout`] names the files of a standalone prefix (`nginx -p DIR -c DIR/nginx.conf`)
//!   and renders its main configuration.
//! - [`OriginProxy`] renders the origin side's optional local proxy (SPEC §6): the tunnel
//!   address and each route's port, forwarded to the service on loopback.
//! - [`NginxInstance::apply`] writes candidates, runs `nginx -t`, swaps them in by rename
//!   and reloads, restoring the previous files on any failure; an unchanged configuration
//!   is not touched. [`NginxInstance::start`] and [`NginxInstance::stop`] run the server.
//!
//! Rendering is pure; applying is blocking (`std::process`, `std::fs`).
//!
//! ```
//! use kokoa_core::Hostname;
//! use kokoa_nginx::{CertName, EdgeSite, Layout, Route};
//!
//! let app = Hostname::parse("app.hoge.com")?;
//! let site = EdgeSite::new(vec![
//!     Route::new(Hostname::parse("wiki.fuga.com")?, "10.0.2.1:8000".parse()?),
//!     Route::new(app.clone(), "10.0.1.1:8080".parse()?)
//!         .with_certificate(CertName::for_hostname(&app)),
//! ]);
//! let conf = site.render(&Layout::new("/srv/kokoa-nginx")?)?;
//!
//! let start = conf.find("map $host $kokoa_backend").ok_or("no routes map")?;
//! let routes_map = &conf[start..start + conf[start..].find('}').ok_or("unclosed")? + 1];
//! assert_eq!(
//!     routes_map,
//!     r#"map $host $kokoa_backend {
//!     hostnames;
//!     default "";
//!     "app.hoge.com" "kk_10_0_1_1_8080";
//!     "wiki.fuga.com" "kk_10_0_2_1_8000";
//! }"#
//! );
//! assert!(conf.contains("upstream kk_10_0_1_1_8080 {\n    server 10.0.1.1:8080;\n"));
//! // Its certificate, selected by SNI, loaded at reload:
//! assert!(conf.contains(r#"    server_name "app.hoge.com";"#));
//! assert!(conf.contains(r#"ssl_certificate "/srv/kokoa-nginx/certs/app.hoge.com.crt";"#));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Certificates and the worker user
//!
//! Up to 250 certificates are loaded by nginx's master process (root) at each reload:
//! [`NginxInstance::apply`] reloads when a certificate file was replaced (a renewal), even
//! if the configuration text is the same. Beyond 250, the remaining certificates are
//! chosen per handshake, and nginx's **worker** process reads their `certs/NAME.crt` and
//! `certs/NAME.key` at each handshake: for those, the key files must be readable by the
//! worker user ([`Layout::with_worker_user`]; nginx's default is `nobody`), by running the
//! worker as a dedicated user that owns `certs/` or making the keys readable by its group
//! (mode 0640).
//!
//! # Crate features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | — | | The crate has no optional features: rendering and apply need only `std`. |
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod instance;
mod layout;
mod model;
mod origin;
mod render;

pub use error::Error;
pub use instance::{Applied, NginxInstance};
pub use layout::Layout;
pub use model::{CertName, EdgeSite, Listen, RateLimits, Route};
pub use origin::OriginProxy;
