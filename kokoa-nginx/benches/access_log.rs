//! Measurement, not a check: what the `kokoa` access log format (the edge agent's per host
//! name metrics come from it) costs nginx 1.22 on its request path, side by side with the
//! `combined` format and with no access log. wrk (`-t2 -c50 -d5s`, keep-alive) asks a
//! server answering `return 200` on loopback, three rounds per variant, interleaved; prints
//! each variant's best round and its ratio to no log. Run with
//!
//! ```sh
//! cargo bench -p kokoa-nginx --bench access_log
//! ```

use std::{
    fs,
    net::TcpListener,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use kokoa_nginx::{Layout, NginxInstance};

const NGINX: &str = "/usr/sbin/nginx";
const ROUNDS: usize = 3;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The rendered main configuration with its `access_log` line replaced by `access_log`.
fn variant(main: &str, access_log: &str) -> String {
    main.lines()
        .map(|line| {
            if line.trim_start().starts_with("access_log ") {
                format!("    {access_log}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Requests per second wrk reports for `url`.
fn wrk(url: &str) -> f64 {
    let out = Command::new("wrk")
        .args(["-t2", "-c50", "-d5s", url])
        .output()
        .expect("wrk (apt-get install -y --no-install-recommends wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{text}"))
}

fn main() {
    assert!(
        std::path::Path::new(NGINX).exists(),
        "{NGINX}: apt-get install -y --no-install-recommends nginx"
    );
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path()).unwrap();
    let port = free_port();
    fs::write(
        layout.site_config(),
        format!(
            "server {{\n    listen 127.0.0.1:{port};\n    location / {{\n        \
             return 200 \"ok\\n\";\n    }}\n}}\n"
        ),
    )
    .unwrap();
    let rendered = layout.render_main(&layout.site_config()).unwrap();
    let log = layout.logs_dir().join("access.log");
    let variants = [
        ("no access log", variant(&rendered, "access_log off;")),
        (
            "combined",
            variant(&rendered, &format!("access_log \"{}\";", log.display())),
        ),
        ("kokoa (as rendered)", rendered.clone()),
    ];
    let instance = NginxInstance::new(NGINX, layout.clone());
    let url = format!("http://127.0.0.1:{port}/");
    let mut best = [0.0f64; 3];
    for _ in 0..ROUNDS {
        for (i, (_, main)) in variants.iter().enumerate() {
            fs::write(layout.main_config(), main).unwrap();
            instance.start().unwrap();
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(started.elapsed() < Duration::from_secs(10), "nginx not up");
                thread::sleep(Duration::from_millis(20));
            }
            best[i] = best[i].max(wrk(&url));
            instance.stop().unwrap();
            let _ = fs::remove_file(&log);
        }
    }
    eprintln!("nginx `return 200`, wrk -t2 -c50 -d5s, best of {ROUNDS} interleaved rounds");
    eprintln!("{:<22} {:>12} {:>14}", "access log", "req/s", "vs no log");
    for ((name, _), rps) in variants.iter().zip(best) {
        eprintln!("{name:<22} {rps:>12.0} {:>14.3}", rps / best[0]);
    }
    eprintln!(
        "kokoa vs combined: {:.3} (the agent counts by host name from the kokoa lines)",
        best[2] / best[1]
    );
}
