//! Rendering an [`EdgeSite`] into nginx's `http` context.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::SocketAddr,
};

use crate::{CertName, EdgeSite, Error, Layout, Route, layout::quoted};

/// The body of the 503 answer for unavailable routes. It is written into the configuration
/// between double quotes, so it must hold no `"`, `\` or `$` (checked by a unit test).
const UNAVAILABLE_PAGE: &str = "<!doctype html>\
<html lang='en'><head><meta charset='utf-8'><title>503 Service Unavailable</title>\
<style>body{font-family:sans-serif;max-width:40em;margin:4em auto;color:#333}</style></head>\
<body><h1>Service unavailable</h1>\
<p>The service behind this address is not reachable right now. Please try again in a few minutes.</p>\
<hr><p><small>Kokoa Proxy</small></p></body></html>";

/// Idle connections to one backend that each worker keeps open (`keepalive`). Only idle
/// ones count, so a busy backend still gets as many connections as it needs.
pub(crate) const UPSTREAM_KEEPALIVE: u32 = 32;

/// How long an idle backend connection is kept (`keepalive_timeout`). The origin agent
/// forwards plain TCP without an idle timeout of its own; a service that closes sooner is
/// noticed when its FIN arrives (nginx watches pooled connections), and a request that
/// meets a connection closed in that instant is retried on a new one when it is idempotent.
pub(crate) const UPSTREAM_IDLE_SECONDS: u32 = 50;

/// At most this many certificates get a `server` of their own, loaded once at reload.
///
/// With nginx 1.22 and OpenSSL 3.0 each such server costs about 1 ms of every `nginx -t`
/// (twice that for a reload) and ~130 KB per process (TLS context, key, locations;
/// measured by `benches/scale.rs`: 10 000 of them took 12 s to test, 27 s to reload and
/// 1.3 GB Pss). Beyond the limit, the remaining certificates are chosen per handshake
/// through `$kokoa_cert` in the default server: slower handshakes for those names (the
/// worker parses the files each time) but a reload that does not grow with them.
pub(crate) const STATIC_CERTIFICATES_MAX: usize = 250;

/// At most this many backend addresses get an `upstream` (with kept connections); the
/// others are proxied to by address, a new connection per request, as before upstreams.
///
/// Each `upstream` costs nginx ~0.09 ms of every test and reload and ~10 KB per process
/// (10 000 took 0.9 s and 100 MB), and nginx finds a proxied upstream by a linear search.
/// The busiest backends (most routes) get them first.
pub(crate) const UPSTREAMS_MAX: usize = 1000;

impl EdgeSite {
    /// Renders the maps, upstreams, rate limits and the servers (HTTP, and HTTPS: a default
    /// server plus one per certificate) as one file for nginx's `http` context, with the
    /// files of `layout`.
    ///
    /// Routes are written sorted by hostname, so the same site always renders the same
    /// text. Fails when two routes share a hostname or a rate limit is zero.
    pub fn render(&self, layout: &Layout) -> Result<String, Error> {
        let limits = self.rate_limits;
        // A burst of 0 is valid (no request above the rate); a rate or a connection limit of 0
        // would refuse every client.
        for (field, value) in [
            ("rate_per_second", limits.rate_per_second),
            ("connections_per_ip", limits.connections_per_ip),
        ] {
            if value == 0 {
                return Err(Error::ZeroRateLimit { field });
            }
        }
        // `limit_conn` takes at most 65535.
        if limits.connections_per_ip > u32::from(u16::MAX) {
            return Err(Error::RateLimitTooLarge {
                field: "connections_per_ip",
                value: limits.connections_per_ip,
                max: u16::MAX.into(),
            });
        }
        let mut routes: Vec<&Route> = self.routes.iter().collect();
        routes.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        if let Some(pair) = routes.windows(2).find(|w| w[0].hostname == w[1].hostname) {
            return Err(Error::DuplicateHostname(pair[0].hostname.clone()));
        }
        let certificates = Certificates::split(&routes);

        let mut out =
            String::from("# Edge site rendered by kokoa-nginx; overwritten on every apply.\n\n");
        let (max_size, bucket_size) = map_hash_sizes(&routes);
        // The server names are a subset of the routes' hostnames: the same sizes fit.
        let _ = writeln!(
            out,
            "map_hash_max_size {max_size};\nmap_hash_bucket_size {bucket_size};\n\
             server_names_hash_max_size {max_size};\nserver_names_hash_bucket_size {bucket_size};\n"
        );

        let upstreams = Upstreams::choose(&routes);
        // Routing by the Host header to an upstream named after the backend address (or the
        // address itself beyond `UPSTREAMS_MAX`); `hostnames` makes "*.fuga.com" keys match
        // subdomains.
        map_block(
            &mut out,
            "$host $kokoa_backend",
            "\"\"",
            routes.iter().map(|r| {
                (
                    r.hostname.as_str(),
                    format!("\"{}\"", upstreams.target(&r.backend)),
                )
            }),
        );
        // Certificates beyond `STATIC_CERTIFICATES_MAX` are chosen from the client's SNI,
        // but only among names we know: building a path from the SNI itself would let a
        // client pick any file.
        map_block(
            &mut out,
            "$ssl_server_name $kokoa_cert",
            &format!("\"{}\"", self.fallback_certificate),
            routes.iter().filter_map(|r| {
                let cert = r.certificate.as_ref()?;
                certificates
                    .per_handshake(cert)
                    .then(|| (r.hostname.as_str(), format!("\"{cert}\"")))
            }),
        );
        map_block(
            &mut out,
            "$host $kokoa_unavailable",
            "0",
            routes
                .iter()
                .filter(|r| !r.available)
                .map(|r| (r.hostname.as_str(), "1".to_owned())),
        );
        // An empty `Connection` header lets the backend connection go back to the pool;
        // upgrades (WebSocket) keep theirs.
        out.push_str(
            "map $http_upgrade $connection_upgrade {\n    default upgrade;\n    \"\" \"\";\n}\n\n",
        );

        for (name, addr) in &upstreams.0 {
            let _ = writeln!(
                out,
                "upstream {name} {{\n    server {addr};\n    \
                 keepalive {UPSTREAM_KEEPALIVE};\n    \
                 keepalive_timeout {UPSTREAM_IDLE_SECONDS}s;\n}}\n"
            );
        }

        let _ = write!(
            out,
            "limit_req_zone $binary_remote_addr zone=kokoa_req:10m rate={}r/s;\n\
             limit_conn_zone $binary_remote_addr zone=kokoa_conn:10m;\n\
             limit_req zone=kokoa_req burst={} nodelay;\n\
             limit_conn kokoa_conn {};\n\
             # 429, not nginx's default 503, so a limited client is not told the origin is down.\n\
             limit_req_status 429;\n\
             limit_conn_status 429;\n\
             server_tokens off;\n\n",
            limits.rate_per_second, limits.burst, limits.connections_per_ip,
        );
        // Inherited by every HTTPS server. HTTP/1.1 with an empty `Connection` header keeps
        // backend connections open for the upstreams' `keepalive`.
        out.push_str(
            "proxy_http_version 1.1;\n\
             proxy_set_header Host $host;\n\
             proxy_set_header X-Real-IP $remote_addr;\n\
             # The edge is the first proxy: a client's own X-Forwarded-For is not trusted.\n\
             proxy_set_header X-Forwarded-For $remote_addr;\n\
             proxy_set_header X-Forwarded-Proto https;\n\
             proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection $connection_upgrade;\n\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n\
             ssl_session_cache shared:kokoa_tls:10m;\n\
             ssl_session_tickets on;\n\
             # 0-RTT data can be replayed; origins are not prepared for that.\n\
             ssl_early_data off;\n\n",
        );

        // Never rate limited (as `@kokoa_health` below): the control planes' checks share
        // the limit of their address and must not see 429.
        let health = format!(
            "    location = /health {{\n        default_type text/plain;\n        \
             limit_req_dry_run on;\n        limit_conn_dry_run on;\n        alias {};\n    }}\n",
            quoted(&layout.health_file())
        );
        let listen = |port: u16| match self.listen.address {
            Some(ip) => SocketAddr::new(ip, port).to_string(),
            None => port.to_string(),
        };
        let https_port = match self.listen.https_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let _ = write!(
            out,
            "server {{\n    listen {http} default_server;\n    server_name _;\n\n    \
             # A certificate authority validates many names at once, several times each and\n    \
             # from few addresses: a 429 here would fail its orders.\n    \
             location ^~ /.well-known/acme-challenge/ {{\n        default_type text/plain;\n        \
             limit_req_dry_run on;\n        limit_conn_dry_run on;\n        \
             alias {acme};\n    }}\n\n{health}\n    \
             location / {{\n        return 301 https://$host{https_port}$request_uri;\n    }}\n}}\n\n",
            http = listen(self.listen.http_port),
            // Both the location and the alias end in '/', so no request maps outside it.
            acme = quoted(&layout.acme_challenge_dir().join("")),
        );

        // What every HTTPS server does with a request, rendered once: the server a request
        // lands in (by SNI, then by Host) only decides the certificate.
        let routing = format!(
            "    # /health of a routed hostname is its origin's (the end-to-end check); asked by\n    \
             # address or an unknown name, the edge answers for itself.\n    \
             location = /health {{\n        \
             error_page 418 = @kokoa_health;\n        \
             if ($kokoa_backend = \"\") {{\n            return 418;\n        }}\n        \
             if ($kokoa_unavailable) {{\n            return 503;\n        }}\n        \
             proxy_pass http://$kokoa_backend;\n        \
             error_page 502 503 504 =503 @kokoa_unavailable;\n    }}\n\n    \
             # The edge's own answer, a static file, is never rate limited: the control\n    \
             # planes' checks share the limit of their address and must not see 429.\n    \
             location @kokoa_health {{\n        default_type text/plain;\n        \
             limit_req_dry_run on;\n        limit_conn_dry_run on;\n        \
             root {prefix};\n        try_files /health =404;\n    }}\n\n    \
             # An origin that does not answer (502/504) gets the same page as one marked down.\n    \
             location / {{\n        \
             if ($kokoa_backend = \"\") {{\n            return 404;\n        }}\n        \
             if ($kokoa_unavailable) {{\n            return 503;\n        }}\n        \
             proxy_pass http://$kokoa_backend;\n        \
             error_page 502 503 504 =503 @kokoa_unavailable;\n    }}\n\n    \
             location @kokoa_unavailable {{\n        default_type text/html;\n        \
             return 503 \"{UNAVAILABLE_PAGE}\";\n    }}\n",
            // `Layout::health_file` is `<prefix>/health`.
            prefix = quoted(layout.prefix()),
        );
        let https = listen(self.listen.https_port);
        let certs = layout.certs_dir();
        // Unknown or missing SNI, hostnames without a certificate, and the certificates
        // chosen per handshake.
        let fallback = if certificates.any_per_handshake() {
            "$kokoa_cert".to_owned()
        } else {
            self.fallback_certificate.to_string()
        };
        // The hostnames whose certificate is chosen per handshake are named here too: a
        // loaded wildcard server (`*.fuga.com`) would otherwise take `zz.fuga.com` away
        // from the map, and present the wildcard's certificate instead of its own.
        let _ = write!(
            out,
            "server {{\n    listen {https} ssl http2 default_server;\n    server_name _"
        );
        for name in certificates.per_handshake_names(&routes) {
            let _ = write!(out, " \"{name}\"");
        }
        let _ = write!(
            out,
            ";\n    ssl_certificate {crt};\n    ssl_certificate_key {key};\n\n{routing}}}\n",
            crt = quoted(&certs.join(format!("{fallback}.crt"))),
            key = quoted(&certs.join(format!("{fallback}.key"))),
        );
        for (cert, names) in &certificates.loaded {
            let (crt, key) = layout.certificate_files(cert);
            let _ = write!(
                out,
                "\nserver {{\n    listen {https} ssl http2;\n    server_name"
            );
            for name in names {
                let _ = write!(out, " \"{name}\"");
            }
            let _ = write!(
                out,
                ";\n    ssl_certificate {crt};\n    ssl_certificate_key {key};\n\n{routing}}}\n",
                crt = quoted(&crt),
                key = quoted(&key),
            );
        }
        Ok(out)
    }
}

/// The certificates of the routes: those loaded at reload by a `server` of their own, with
/// the hostnames each covers, and the rest, chosen per handshake.
struct Certificates<'a> {
    loaded: BTreeMap<&'a CertName, Vec<&'a str>>,
    per_handshake: BTreeSet<&'a CertName>,
}

impl<'a> Certificates<'a> {
    /// The first `STATIC_CERTIFICATES_MAX` certificate names in sorted order are loaded.
    // Sorted order, not traffic: the renderer knows no traffic. A certificate covering more
    // hostnames is no better a guess.
    fn split(routes: &[&'a Route]) -> Self {
        let mut all: BTreeMap<&CertName, Vec<&str>> = BTreeMap::new();
        for route in routes {
            if let Some(cert) = &route.certificate {
                all.entry(cert).or_default().push(route.hostname.as_str());
            }
        }
        let per_handshake = all
            .keys()
            .skip(STATIC_CERTIFICATES_MAX)
            .copied()
            .collect::<BTreeSet<_>>();
        all.retain(|cert, _| !per_handshake.contains(cert));
        Self {
            loaded: all,
            per_handshake,
        }
    }

    fn per_handshake(&self, cert: &CertName) -> bool {
        self.per_handshake.contains(cert)
    }

    fn any_per_handshake(&self) -> bool {
        !self.per_handshake.is_empty()
    }

    /// The hostnames of `routes` whose certificate is chosen per handshake, in order.
    fn per_handshake_names<'r>(&self, routes: &[&'r Route]) -> Vec<&'r str> {
        routes
            .iter()
            .filter(|r| {
                r.certificate
                    .as_ref()
                    .is_some_and(|c| self.per_handshake(c))
            })
            .map(|r| r.hostname.as_str())
            .collect()
    }
}

/// The upstreams: name → backend address.
struct Upstreams<'a>(BTreeMap<String, &'a SocketAddr>);

impl<'a> Upstreams<'a> {
    /// One upstream per distinct backend, named from the address only; the
    /// `UPSTREAMS_MAX` used by the most routes when there are more.
    fn choose(routes: &[&'a Route]) -> Self {
        let mut uses: BTreeMap<String, (usize, &SocketAddr)> = BTreeMap::new();
        for route in routes {
            uses.entry(upstream_name(&route.backend))
                .or_insert((0, &route.backend))
                .0 += 1;
        }
        let mut ranked: Vec<(String, (usize, &SocketAddr))> = uses.into_iter().collect();
        // Most routes first, then by name: the same site always chooses the same.
        ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(UPSTREAMS_MAX);
        Self(
            ranked
                .into_iter()
                .map(|(name, (_, addr))| (name, addr))
                .collect(),
        )
    }

    /// What `proxy_pass http://$kokoa_backend` gets for `addr`: its upstream's name, or
    /// the address itself.
    fn target(&self, addr: &SocketAddr) -> String {
        let name = upstream_name(addr);
        if self.0.contains_key(&name) {
            name
        } else {
            addr.to_string()
        }
    }
}

/// The name of the upstream for `addr`, made only of its numbers: `kk_10_0_1_1_8080`,
/// `kk_v6_<32 hex digits>_8080` (and `_s<scope>` for a scoped IPv6 address).
pub(crate) fn upstream_name(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => {
            let [b0, b1, b2, b3] = a.ip().octets();
            format!("kk_{b0}_{b1}_{b2}_{b3}_{}", a.port())
        }
        SocketAddr::V6(a) => {
            let scope = match a.scope_id() {
                0 => String::new(),
                s => format!("_s{s}"),
            };
            format!("kk_v6_{:032x}_{}{scope}", u128::from(*a.ip()), a.port())
        }
    }
}

/// Writes `map FROM TO { hostnames; default DEFAULT; "KEY" VALUE; ... }`.
fn map_block<'a>(
    out: &mut String,
    variables: &str,
    default: &str,
    entries: impl Iterator<Item = (&'a str, String)>,
) {
    let _ = writeln!(
        out,
        "map {variables} {{\n    hostnames;\n    default {default};"
    );
    for (key, value) in entries {
        // A `Hostname` never holds a quote or anything else nginx would read specially.
        let _ = writeln!(out, "    \"{key}\" {value};");
    }
    out.push_str("}\n\n");
}

/// `map_hash_max_size` and `map_hash_bucket_size` for the routes map, the largest map.
///
/// nginx stores a key of length `L` in `8 + align8(L + 2)` bytes plus 8 bytes per bucket,
/// and tries table sizes up to the maximum until no bucket overflows. A bucket that holds
/// only one or two of the longest keys makes that search fail for a few hundred names
/// ("could not build optimal map_hash"); room for four, rounded up to a power of two, and up
/// to four buckets per key succeeded for every set measured (up to 30 000 names of 6 to 253
/// characters). Only the buckets in use cost memory.
fn map_hash_sizes(routes: &[&Route]) -> (usize, usize) {
    let longest = routes
        .iter()
        .map(|r| r.hostname.as_str().len())
        .max()
        .unwrap_or(0);
    let bucket = (8 + 4 * (8 + (longest + 2).next_multiple_of(8))).next_power_of_two();
    let max_size = (4 * routes.len()).max(2048);
    (max_size, bucket)
}

#[cfg(test)]
mod tests;
