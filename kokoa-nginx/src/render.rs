//! Rendering an [`EdgeSite`] into nginx's `http` context.

use std::fmt::Write as _;

use crate::{EdgeSite, Error, Layout, Route, layout::quoted};

/// The body of the 503 answer for unavailable routes. It is written into the configuration
/// between double quotes, so it must hold no `"`, `\` or `$` (checked by a unit test).
const UNAVAILABLE_PAGE: &str = "<!doctype html>\
<html lang='en'><head><meta charset='utf-8'><title>503 Service Unavailable</title>\
<style>body{font-family:sans-serif;max-width:40em;margin:4em auto;color:#333}</style></head>\
<body><h1>Service unavailable</h1>\
<p>The service behind this address is not reachable right now. Please try again in a few minutes.</p>\
<hr><p><small>Kokoa Proxy</small></p></body></html>";

impl EdgeSite {
    /// Renders the maps, rate limits and the two servers (HTTP and HTTPS) as one file for
    /// nginx's `http` context, with the files of `layout`.
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

        let mut out =
            String::from("# Edge site rendered by kokoa-nginx; overwritten on every apply.\n\n");
        let (max_size, bucket_size) = map_hash_sizes(&routes);
        let _ = writeln!(
            out,
            "map_hash_max_size {max_size};\nmap_hash_bucket_size {bucket_size};\n"
        );

        // Routing by the Host header; `hostnames` makes "*.fuga.com" keys match subdomains.
        map_block(
            &mut out,
            "$host $kokoa_backend",
            "\"\"",
            routes
                .iter()
                .map(|r| (r.hostname.as_str(), format!("\"{}\"", r.backend))),
        );
        // The certificate is chosen from the client's SNI, but only among names we know:
        // building a path from the SNI itself would let a client pick any file.
        map_block(
            &mut out,
            "$ssl_server_name $kokoa_cert",
            &format!("\"{}\"", self.fallback_certificate),
            routes.iter().filter_map(|r| {
                let cert = r.certificate.as_ref()?;
                Some((r.hostname.as_str(), format!("\"{cert}\"")))
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
        out.push_str(
            "map $http_upgrade $connection_upgrade {\n    default upgrade;\n    \"\" close;\n}\n\n",
        );

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

        let health = format!(
            "    location = /health {{\n        default_type text/plain;\n        alias {};\n    }}\n",
            quoted(&layout.health_file())
        );
        let listen = |port: u16| match self.listen.address {
            Some(ip) => std::net::SocketAddr::new(ip, port).to_string(),
            None => port.to_string(),
        };
        let https_port = match self.listen.https_port {
            443 => String::new(),
            port => format!(":{port}"),
        };
        let _ = write!(
            out,
            "server {{\n    listen {http} default_server;\n    server_name _;\n\n    \
             location ^~ /.well-known/acme-challenge/ {{\n        default_type text/plain;\n        \
             alias {acme};\n    }}\n\n{health}\n    \
             location / {{\n        return 301 https://$host{https_port}$request_uri;\n    }}\n}}\n\n",
            http = listen(self.listen.http_port),
            // Both the location and the alias end in '/', so no request maps outside it.
            acme = quoted(&layout.acme_challenge_dir().join("")),
        );
        let certs = layout.certs_dir();
        let _ = write!(
            out,
            "server {{\n    listen {https} ssl http2 default_server;\n    server_name _;\n\n    \
             ssl_certificate {crt};\n    ssl_certificate_key {key};\n    \
             ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache shared:kokoa_tls:10m;\n\n    \
             proxy_http_version 1.1;\n    \
             proxy_set_header Host $host;\n    \
             proxy_set_header X-Real-IP $remote_addr;\n    \
             # The edge is the first proxy: a client's own X-Forwarded-For is not trusted.\n    \
             proxy_set_header X-Forwarded-For $remote_addr;\n    \
             proxy_set_header X-Forwarded-Proto https;\n    \
             proxy_set_header Upgrade $http_upgrade;\n    \
             proxy_set_header Connection $connection_upgrade;\n\n    \
             # /health of a routed hostname is its origin's (the end-to-end check); asked by\n    \
             # address or an unknown name, the edge answers for itself.\n    \
             location = /health {{\n        \
             error_page 418 = @kokoa_health;\n        \
             if ($kokoa_backend = \"\") {{\n            return 418;\n        }}\n        \
             if ($kokoa_unavailable) {{\n            return 503;\n        }}\n        \
             proxy_pass http://$kokoa_backend;\n        \
             error_page 502 503 504 =503 @kokoa_unavailable;\n    }}\n\n    \
             location @kokoa_health {{\n        default_type text/plain;\n        \
             root {prefix};\n        try_files /health =404;\n    }}\n\n    \
             # An origin that does not answer (502/504) gets the same page as one marked down.\n    \
             location / {{\n        \
             if ($kokoa_backend = \"\") {{\n            return 404;\n        }}\n        \
             if ($kokoa_unavailable) {{\n            return 503;\n        }}\n        \
             proxy_pass http://$kokoa_backend;\n        \
             error_page 502 503 504 =503 @kokoa_unavailable;\n    }}\n\n    \
             location @kokoa_unavailable {{\n        default_type text/html;\n        \
             return 503 \"{UNAVAILABLE_PAGE}\";\n    }}\n}}\n",
            https = listen(self.listen.https_port),
            crt = quoted(&certs.join("$kokoa_cert.crt")),
            key = quoted(&certs.join("$kokoa_cert.key")),
            // `Layout::health_file` is `<prefix>/health`.
            prefix = quoted(layout.prefix()),
        );
        Ok(out)
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
