//! Measurement, not a check: how long the edge agent takes to count access log lines by
//! host name ([`Traffic`], off nginx's request path, once per heartbeat). Writes 100 000
//! lines of the `kokoa` format for 20 route names (and some other names) and times the
//! sample that reads them, best of 5. Run with
//!
//! ```sh
//! cargo bench -p kokoa-agent --bench traffic
//! ```

use std::{fs, io::Write as _, sync::Arc, time::Instant};

use kokoa_agent::{Sampler, Traffic};

const LINES: usize = 100_000;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let hosts: Vec<String> = (0..20).map(|i| format!("app{i}.hoge.test")).collect();
    let mut text = String::new();
    for i in 0..LINES {
        let host = if i % 50 == 0 {
            format!("scanner{i}.example")
        } else {
            hosts[i % hosts.len()].clone()
        };
        let status = if i % 20 == 0 { 502 } else { 200 };
        text.push_str(&format!(
            "203.0.113.{} - - [07/Dec/2026:07:00:00 +0000] \"GET /page/{i} HTTP/1.1\" {status} \
             1234 \"-\" \"Mozilla/5.0 (X11; Linux x86_64)\" \"{host}\" 0.0{} 0.00{}\n",
            i % 250,
            i % 10,
            i % 10
        ));
    }
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        fs::write(&log, "").unwrap();
        let traffic = Arc::new(Traffic::default());
        traffic.set_hosts(hosts.iter().map(String::as_str));
        let mut sampler = Sampler::new(Vec::new(), log.clone()).with_traffic(traffic.clone());
        sampler.sample();
        fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let started = Instant::now();
        sampler.sample();
        best = best.min(started.elapsed().as_secs_f64());
        let mut out = String::new();
        traffic.render(&mut out, "kokoa_edge");
        assert!(out.contains("hostname=\"other\""));
    }
    eprintln!(
        "{LINES} lines ({:.1} MB) counted by host name in {:.1} ms: {:.0} ns a line, {:.1} M lines/s (best of 5)",
        text.len() as f64 / 1e6,
        best * 1e3,
        best * 1e9 / LINES as f64,
        LINES as f64 / best / 1e6
    );
}
