//! Measurement, not a check: `nginx -t`, reload and memory of nginx 1.22 for 10 000 routes
//! with 10 000 distinct certificates, for the rendered configuration and for the designs it
//! was chosen against. Prints a table; run with
//!
//! ```sh
//! cargo bench -p kokoa-nginx --bench scale
//! ```
//!
//! Takes about a minute on two cores and uses nothing but loopback.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use kokoa_core::Hostname;
use kokoa_nginx::{CertName, EdgeSite, Layout, Listen, NginxInstance, Route};
use rcgen::{CertificateParams, DnType, KeyPair};

const NGINX: &str = "/usr/sbin/nginx";
const ROUTES: usize = 10_000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `ROUTES` routes, each with its own backend address and certificate.
fn site(certificates: usize) -> EdgeSite {
    let routes = (0..ROUTES)
        .map(|i| {
            let name = format!("h{i}.scale.test");
            let backend = SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8], 8080));
            let route = Route::new(Hostname::parse(&name).unwrap(), backend);
            if i < certificates {
                route.with_certificate(CertName::parse(&name).unwrap())
            } else {
                route
            }
        })
        .collect();
    let mut site = EdgeSite::new(routes);
    site.listen = Listen {
        address: Some([127, 0, 0, 1].into()),
        http_port: free_port(),
        https_port: free_port(),
    };
    site
}

/// Self-signed certificates for every route and the fallback, all with one key.
fn write_certificates(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let key = KeyPair::generate().unwrap();
    let key_pem = key.serialize_pem();
    for name in (0..ROUTES)
        .map(|i| format!("h{i}.scale.test"))
        .chain(["fallback".to_owned()])
    {
        let mut params = CertificateParams::new(vec![name.clone()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, &name);
        let cert = params.self_signed(&key).unwrap();
        fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        fs::write(dir.join(format!("{name}.key")), &key_pem).unwrap();
    }
}

/// The routing locations of the rendered default HTTPS server.
fn routing(conf: &str) -> &str {
    let default = conf.split("ssl http2 default_server;\n").nth(1).unwrap();
    let body = default.split_once(".key\";\n").unwrap().1;
    &body[..body.find("\n}\n").unwrap() + 1]
}

/// The previous design: backends as `IP:port` without upstreams, every certificate chosen
/// per handshake through `$kokoa_cert` in one server.
fn variable_path_design(site: &EdgeSite, layout: &Layout) -> String {
    let rendered = site.render(layout).unwrap();
    let mut out = String::from(
        "map_hash_max_size 40000;\nmap_hash_bucket_size 128;\n\
         map $host $kokoa_backend {\n    hostnames;\n    default \"\";\n",
    );
    for r in &site.routes {
        out.push_str(&format!("    \"{}\" \"{}\";\n", r.hostname, r.backend));
    }
    out.push_str("}\nmap $ssl_server_name $kokoa_cert {\n    hostnames;\n    default fallback;\n");
    for r in &site.routes {
        if let Some(c) = &r.certificate {
            out.push_str(&format!("    \"{}\" \"{c}\";\n", r.hostname));
        }
    }
    let certs = layout.certs_dir();
    out.push_str(&format!(
        "}}\nmap $host $kokoa_unavailable {{\n    default 0;\n}}\n\
         map $http_upgrade $connection_upgrade {{\n    default upgrade;\n    \"\" close;\n}}\n\
         proxy_http_version 1.1;\nssl_session_cache shared:kokoa_tls:10m;\n\
         server {{\n    listen {} ssl http2 default_server;\n    server_name _;\n    \
         ssl_certificate \"{}/$kokoa_cert.crt\";\n    ssl_certificate_key \"{}/$kokoa_cert.key\";\n{}}}\n",
        SocketAddr::from(([127, 0, 0, 1], site.listen.https_port)),
        certs.display(),
        certs.display(),
        routing(&rendered),
    ));
    out
}

/// The rendered configuration with every certificate in a server of its own, also beyond
/// the limit of the renderer.
fn server_per_certificate_design(site: &EdgeSite, layout: &Layout) -> String {
    let rendered = site.render(layout).unwrap();
    let routing = routing(&rendered).to_owned();
    let (head, rest) = rendered
        .split_once("map $ssl_server_name $kokoa_cert {\n")
        .unwrap();
    let (entries, tail) = rest.split_once("}\n").unwrap();
    let mut out = format!("{head}map $ssl_server_name $kokoa_cert {{\n");
    let mut extra = String::new();
    for line in entries.lines() {
        if let Some(entry) = line.strip_prefix("    \"") {
            let (host, cert) = entry.split_once("\" \"").unwrap();
            let cert = cert.trim_end_matches("\";");
            let (crt, key) = layout.certificate_files(&CertName::parse(cert).unwrap());
            extra.push_str(&format!(
                "\nserver {{\n    listen {} ssl http2;\n    server_name \"{host}\";\n    \
                 ssl_certificate \"{}\";\n    ssl_certificate_key \"{}\";\n{routing}}}\n",
                SocketAddr::from(([127, 0, 0, 1], site.listen.https_port)),
                crt.display(),
                key.display()
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("}\n");
    out.push_str(&tail.replace("$kokoa_cert.", "fallback."));
    out.push_str(&extra);
    out
}

/// The pids of `master`'s children.
fn workers(master: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(master) {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// Rss and Pss in MB, summed over `pids`.
fn memory(pids: &[u32]) -> (f64, f64) {
    let (mut rss, mut pss) = (0.0, 0.0);
    for pid in pids {
        let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        for line in text.lines() {
            let kb = |l: &str| l.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap();
            if line.starts_with("Rss:") {
                rss += kb(line) / 1024.0;
            } else if line.starts_with("Pss:") {
                pss += kb(line) / 1024.0;
            }
        }
    }
    (rss, pss)
}

struct Row {
    design: &'static str,
    site_mb: f64,
    test: Duration,
    reload: Duration,
    rss: (f64, f64),
    workers: usize,
}

fn measure(design: &'static str, root: &Path, certs: &Path, site_text: &str) -> Row {
    let layout = Layout::new(root.join(design.replace(' ', "-")))
        .unwrap()
        .with_worker_user("root")
        .unwrap();
    fs::create_dir_all(layout.prefix()).unwrap();
    std::os::unix::fs::symlink(certs, layout.certs_dir()).unwrap();
    for dir in ["logs", "acme-challenge"] {
        fs::create_dir_all(layout.prefix().join(dir)).unwrap();
    }
    for dir in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        fs::create_dir_all(layout.prefix().join("temp").join(dir)).unwrap();
    }
    fs::write(layout.health_file(), "ok\n").unwrap();
    // Same design as rendered, with the measured site text in place of the rendered one.
    fs::write(layout.site_config(), site_text).unwrap();
    fs::write(
        layout.main_config(),
        layout.render_main(&layout.site_config()).unwrap(),
    )
    .unwrap();
    let nginx = |args: &[&str]| {
        let out = Command::new(NGINX)
            .arg("-p")
            .arg(layout.prefix())
            .args(args)
            .arg("-c")
            .arg(layout.main_config())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("[warn]"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let start = Instant::now();
    nginx(&["-t", "-q"]);
    let test = start.elapsed();

    let instance = NginxInstance::new(NGINX, layout.clone());
    nginx(&[]);
    let master = (0..500)
        .find_map(|_| {
            thread::sleep(Duration::from_millis(20));
            instance.pid()
        })
        .expect("nginx started");
    let before = loop {
        let w = workers(master);
        if !w.is_empty() {
            break w;
        }
        thread::sleep(Duration::from_millis(10));
    };
    thread::sleep(Duration::from_millis(300));
    let mut pids = vec![master];
    pids.extend(workers(master));
    let rss = memory(&pids);

    // Reload: from the signal until the master has started workers with the new
    // configuration (it parses and loads everything before that).
    let start = Instant::now();
    nginx(&["-s", "reload"]);
    let reload = loop {
        let now = workers(master);
        if now.len() >= before.len() && now.iter().all(|p| !before.contains(p)) {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "reload did not finish"
        );
        thread::sleep(Duration::from_millis(5));
    };
    instance.stop().unwrap();
    Row {
        design,
        site_mb: site_text.len() as f64 / 1e6,
        test,
        reload,
        rss,
        workers: before.len(),
    }
}

fn main() {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} not found: install it with `apt-get install -y --no-install-recommends nginx`"
    );
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let start = Instant::now();
    write_certificates(&certs);
    eprintln!(
        "{} certificates written in {:?}",
        ROUTES + 1,
        start.elapsed()
    );

    let layout = |design: &str| {
        Layout::new(dir.path().join(design.replace(' ', "-")))
            .unwrap()
            .with_worker_user("root")
            .unwrap()
    };
    let all = site(ROUTES);
    let mut rows = Vec::new();
    let old = "variable path";
    rows.push(measure(
        old,
        dir.path(),
        &certs,
        &variable_path_design(&all, &layout(old)),
    ));
    let new = "rendered";
    rows.push(measure(
        new,
        dir.path(),
        &certs,
        &all.render(&layout(new)).unwrap(),
    ));
    // Every certificate in a server of its own: 12 s to test, 27 s to reload, 3.9 GB Rss
    // when measured; run it on a machine with the memory to spare.
    if std::env::var_os("KOKOA_SCALE_ALL_STATIC").is_some() {
        let per = "server per certificate";
        rows.push(measure(
            per,
            dir.path(),
            &certs,
            &server_per_certificate_design(&all, &layout(per)),
        ));
    }

    eprintln!(
        "\n{ROUTES} routes, 10 000 distinct backends, nginx {NGINX}\n\n\
         | design | site file MB | nginx -t s | reload s | master+workers Rss MB | Pss MB |\n\
         |---|---|---|---|---|---|"
    );
    for r in rows {
        eprintln!(
            "| {} | {:.1} | {:.2} | {:.2} | {:.0} ({} workers) | {:.0} |",
            r.design,
            r.site_mb,
            r.test.as_secs_f64(),
            r.reload.as_secs_f64(),
            r.rss.0,
            r.workers,
            r.rss.1
        );
    }
}
