//! Host and traffic figures for heartbeats, read from `/proc` and nginx's access log.
//!
//! - CPU: the busy share of the time that passed between two samples (`/proc/stat`).
//! - Memory: `1 - MemAvailable / MemTotal` (`/proc/meminfo`).
//! - Active connections: established TCP connections on the HTTP and HTTPS ports
//!   (`/proc/net/tcp` and `tcp6`): kokoa-nginx renders no `stub_status`, and the kernel's
//!   count is the same figure without an extra listener.
//! - Requests per second and error rate: the lines appended to nginx's access log since
//!   the previous sample, and the share of them with a 5xx status. The log's format is
//!   `combined`, optionally followed by `"$host" $request_time $upstream_response_time`
//!   (kokoa-nginx's `kokoa` format); with those, [`Traffic`] counts requests, durations,
//!   upstream durations, bytes and rate-limited requests by host name.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{Read as _, Seek as _, SeekFrom},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use kokoa_core::{HostTraffic, TrafficCounts};

use crate::prometheus::{Histogram, escape, family};

/// Read at most this much of the access log per sample; more is counted by line only in
/// the part read, and the rest skipped, so a flood cannot make a heartbeat slow.
const MAX_LOG_READ: u64 = 16 << 20;

/// One sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Established connections on the listening ports.
    pub connections_active: u64,
    /// Busy CPU share since the previous sample, 0–100 (0 on the first).
    pub cpu_percent: f64,
    /// Memory in use, 0–100.
    pub memory_percent: f64,
    /// Requests logged per second since the previous sample.
    pub requests_per_second: f64,
    /// Share of those requests answered with a 5xx status, 0–100.
    pub error_rate: f64,
}

/// Takes samples; keeps what the next one needs to compute rates.
#[derive(Debug)]
pub struct Sampler {
    ports: Vec<u16>,
    access_log: PathBuf,
    cpu: Option<CpuTimes>,
    log_offset: Option<u64>,
    at: Instant,
    traffic: Option<Arc<Traffic>>,
}

impl Sampler {
    /// A sampler counting connections on `ports` and requests in `access_log`. The first
    /// sample starts counting from the current end of the log.
    pub fn new(ports: Vec<u16>, access_log: PathBuf) -> Self {
        Self {
            ports,
            access_log,
            cpu: None,
            log_offset: None,
            at: Instant::now(),
            traffic: None,
        }
    }

    /// Also counts every logged request into `traffic`, at each sample.
    pub fn with_traffic(mut self, traffic: Arc<Traffic>) -> Self {
        self.traffic = Some(traffic);
        self
    }

    /// Reads the figures; what cannot be read counts as 0.
    pub fn sample(&mut self) -> Sample {
        let elapsed = self.at.elapsed().as_secs_f64();
        self.at = Instant::now();

        let cpu = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| CpuTimes::parse(&s));
        let cpu_percent = match (self.cpu, cpu) {
            (Some(before), Some(now)) => now.busy_percent_since(before),
            _ => 0.0,
        };
        self.cpu = cpu;

        let memory_percent = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| memory_percent(&s))
            .unwrap_or(0.0);

        let connections_active = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .filter_map(|p| fs::read_to_string(p).ok())
            .map(|table| established_on(&table, &self.ports))
            .sum();

        let (requests, errors) = self.read_log();
        let requests_per_second = if elapsed > 0.0 {
            requests as f64 / elapsed
        } else {
            0.0
        };
        let error_rate = if requests > 0 {
            100.0 * errors as f64 / requests as f64
        } else {
            0.0
        };
        Sample {
            connections_active,
            cpu_percent,
            memory_percent,
            requests_per_second,
            error_rate,
        }
    }

    /// Requests and 5xx answers logged since the last call.
    fn read_log(&mut self) -> (u64, u64) {
        let Ok(mut file) = fs::File::open(&self.access_log) else {
            return (0, 0);
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return (0, 0);
        };
        let start = match self.log_offset {
            // Rotated or truncated: start over at the beginning of the new file.
            Some(offset) if offset <= len => offset,
            Some(_) => 0,
            // First sample: only what comes from now on counts.
            None => len,
        };
        self.log_offset = Some(len);
        let mut text = String::new();
        let read = file.seek(SeekFrom::Start(start)).and_then(|_| {
            file.take(MAX_LOG_READ.min(len - start))
                .read_to_string(&mut text)
        });
        if read.is_err() {
            return (0, 0);
        }
        let lines: Vec<LogLine<'_>> = text.lines().filter_map(LogLine::parse).collect();
        if let Some(traffic) = &self.traffic {
            traffic.count(&lines);
        }
        let errors = lines.iter().filter(|l| l.status >= 500).count();
        (lines.len() as u64, errors as u64)
    }
}

/// What one access log line tells.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LogLine<'a> {
    status: u16,
    /// `$body_bytes_sent`.
    bytes: u64,
    /// `$host`, in the `kokoa` format.
    host: Option<&'a str>,
    /// `$request_time` in seconds, in the `kokoa` format.
    seconds: Option<f64>,
    /// `$upstream_response_time` in seconds, summed over the upstreams tried; none when
    /// nginx answered itself (a refusal, a rate limit, the Kokoa error page).
    upstream_seconds: Option<f64>,
}

impl<'a> LogLine<'a> {
    /// Reads a line of the `combined` format, `ADDR - USER [TIME] "REQUEST" STATUS BYTES
    /// "REFERER" "AGENT"`, and of the `kokoa` format, which adds ` "HOST" SECONDS
    /// UPSTREAM_SECONDS` (the last `-`, one time, or several separated by `, ` and ` : `
    /// when nginx tried more than one upstream). nginx escapes quotes inside fields, so
    /// fields are told apart by the quotes.
    fn parse(line: &'a str) -> Option<Self> {
        let fields: Vec<&str> = line.split('"').collect();
        let mut numbers = fields.get(2)?.split_whitespace();
        let status = numbers.next()?.parse().ok()?;
        let bytes = numbers.next().and_then(|b| b.parse().ok()).unwrap_or(0);
        let host = fields.get(7).copied().filter(|h| !h.is_empty());
        let mut times = fields.get(8).map_or("", |t| t.trim()).splitn(2, ' ');
        let seconds = times.next().and_then(|t| t.parse().ok());
        let upstream: Vec<f64> = times
            .next()
            .unwrap_or("")
            .split([',', ':', ' '])
            .filter_map(|t| t.parse().ok())
            .collect();
        Some(Self {
            status,
            bytes,
            host,
            seconds,
            upstream_seconds: (!upstream.is_empty()).then(|| upstream.iter().sum()),
        })
    }
}

/// Requests by host name, counted from the access log since the agent started, for
/// `/metrics`. Only the names set with [`Traffic::set_hosts`] (the routes, wildcards
/// included) get series of their own; every other `Host` a client sends counts as
/// `other`, so the number of series stays bounded by the configuration.
#[derive(Debug, Default)]
pub struct Traffic {
    inner: Mutex<TrafficSeries>,
}

#[derive(Debug, Default)]
struct TrafficSeries {
    /// Exact names, and the suffixes (`.hoge.com`) of wildcard names (`*.hoge.com`).
    exact: BTreeSet<String>,
    wildcards: BTreeSet<String>,
    /// By (host label, status class 1–5).
    requests: BTreeMap<(String, u8), u64>,
    durations: BTreeMap<String, Histogram>,
    upstream_durations: BTreeMap<String, Histogram>,
    bytes: BTreeMap<String, u64>,
    /// Requests nginx refused with 429 itself (the per-client limits), by host label.
    rate_limited: BTreeMap<String, u64>,
    /// Counted since the last [`Traffic::take_window`], by host label.
    window: BTreeMap<String, TrafficCounts>,
}

impl TrafficSeries {
    /// The label `host` counts under: the route's name, or `other`.
    fn label(&self, host: Option<&str>) -> String {
        let Some(host) = host.map(str::to_ascii_lowercase) else {
            return "other".into();
        };
        if self.exact.contains(&host) {
            return host;
        }
        // The most specific wildcard covering the name, as nginx picks it.
        let mut suffix = host.as_str();
        while let Some((_, rest)) = suffix.split_once('.') {
            let dotted = &suffix[suffix.len() - rest.len() - 1..];
            if self.wildcards.contains(dotted) {
                return format!("*{dotted}");
            }
            suffix = rest;
        }
        "other".into()
    }
}

impl Traffic {
    fn lock(&self) -> std::sync::MutexGuard<'_, TrafficSeries> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The host names requests are counted by from now on (`app.hoge.com`,
    /// `*.hoge.com`). Each gets its request series at 0 for every status class at once, so
    /// a rate over the first requests sees them; series of names no longer set stay, as
    /// counters must.
    pub fn set_hosts<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) {
        let mut series = self.lock();
        series.exact.clear();
        series.wildcards.clear();
        let mut labels = vec!["other".to_owned()];
        for host in hosts {
            let host = host.to_ascii_lowercase();
            labels.push(host.clone());
            match host.strip_prefix('*') {
                Some(suffix) => series.wildcards.insert(suffix.to_owned()),
                None => series.exact.insert(host),
            };
        }
        for label in labels {
            for class in 1..=5 {
                series.requests.entry((label.clone(), class)).or_insert(0);
            }
            series.rate_limited.entry(label).or_insert(0);
        }
    }

    fn count(&self, lines: &[LogLine<'_>]) {
        let mut series = self.lock();
        for line in lines {
            let label = series.label(line.host);
            let class = (line.status / 100).clamp(1, 5) as u8;
            *series.requests.entry((label.clone(), class)).or_default() += 1;
            *series.bytes.entry(label.clone()).or_default() += line.bytes;
            series
                .window
                .entry(label.clone())
                .or_default()
                .observe(line.status, line.seconds);
            if let Some(seconds) = line.upstream_seconds {
                series
                    .upstream_durations
                    .entry(label.clone())
                    .or_default()
                    .observe(seconds);
            } else if line.status == 429 {
                *series.rate_limited.entry(label.clone()).or_default() += 1;
            }
            if let Some(seconds) = line.seconds {
                series.durations.entry(label).or_default().observe(seconds);
            }
        }
    }

    /// What was counted since the previous call, by host label (for a heartbeat); the
    /// window starts again empty.
    pub fn take_window(&self) -> Vec<HostTraffic> {
        std::mem::take(&mut self.lock().window)
            .into_iter()
            .map(|(hostname, counts)| HostTraffic { hostname, counts })
            .collect()
    }

    /// Puts back a window that could not be delivered, to go with the next one.
    pub fn restore(&self, window: Vec<HostTraffic>) {
        let mut series = self.lock();
        for host in window {
            series
                .window
                .entry(host.hostname)
                .or_default()
                .add(&host.counts);
        }
    }

    /// Writes `<prefix>_requests_total{hostname,code}`, `<prefix>_request_duration_seconds`,
    /// `<prefix>_upstream_duration_seconds`, `<prefix>_response_bytes_total` and
    /// `<prefix>_rate_limited_requests_total`.
    pub fn render(&self, out: &mut String, prefix: &str) {
        use std::fmt::Write as _;
        let series = self.lock();
        let requests = format!("{prefix}_requests_total");
        family(
            out,
            &requests,
            "counter",
            "Requests by host name (the route's; other: any other Host) and status class.",
        );
        for ((host, class), count) in &series.requests {
            let _ = writeln!(
                out,
                "{requests}{{hostname=\"{}\",code=\"{class}xx\"}} {count}",
                escape(host)
            );
        }
        let durations = format!("{prefix}_request_duration_seconds");
        family(
            out,
            &durations,
            "histogram",
            "How long requests took, from their first byte read to their last byte sent, \
             by host name.",
        );
        for (host, histogram) in &series.durations {
            histogram.write(out, &durations, &format!("hostname=\"{}\"", escape(host)));
        }
        let upstream = format!("{prefix}_upstream_duration_seconds");
        family(
            out,
            &upstream,
            "histogram",
            "How long the origins took to answer (through the tunnel, every upstream tried), \
             by host name.",
        );
        for (host, histogram) in &series.upstream_durations {
            histogram.write(out, &upstream, &format!("hostname=\"{}\"", escape(host)));
        }
        let limited = format!("{prefix}_rate_limited_requests_total");
        family(
            out,
            &limited,
            "counter",
            "Requests refused with 429 by the edge's per-client limits, by host name.",
        );
        for (host, count) in &series.rate_limited {
            let _ = writeln!(out, "{limited}{{hostname=\"{}\"}} {count}", escape(host));
        }
        let bytes = format!("{prefix}_response_bytes_total");
        family(
            out,
            &bytes,
            "counter",
            "Response body bytes sent, by host name.",
        );
        for (host, count) in &series.bytes {
            let _ = writeln!(out, "{bytes}{{hostname=\"{}\"}} {count}", escape(host));
        }
    }
}

/// Cumulative CPU time counters of `/proc/stat`'s `cpu` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    busy: u64,
    total: u64,
}

impl CpuTimes {
    fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
        // already part of user time.
        let total: u64 = values.iter().take(8).sum();
        let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
        Some(Self {
            busy: total.saturating_sub(idle),
            total,
        })
    }

    fn busy_percent_since(self, before: Self) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        let busy = self.busy.saturating_sub(before.busy).min(total);
        100.0 * busy as f64 / total as f64
    }
}

fn memory_percent(meminfo: &str) -> Option<f64> {
    let field = |name: &str| -> Option<f64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let total = field("MemTotal:")?;
    let available = field("MemAvailable:")?;
    (total > 0.0).then(|| (100.0 * (1.0 - available / total)).clamp(0.0, 100.0))
}

/// Established connections (state `01`) whose local port is one of `ports`, in a
/// `/proc/net/tcp` or `tcp6` table.
fn established_on(table: &str, ports: &[u16]) -> u64 {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let local = fields.next();
            let state = fields.nth(1);
            let port = local
                .and_then(|l| l.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            state == Some("01") && port.is_some_and(|p| ports.contains(&p))
        })
        .count() as u64
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn cpu_share_between_two_readings() {
        let a = CpuTimes::parse("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = CpuTimes::parse("cpu  200 0 200 1200 100 0 0 0 0 0\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 200,
                total: 1000
            }
        );
        assert!((b.busy_percent_since(a) - 200.0 / 700.0 * 100.0).abs() < 1e-9);
        assert_eq!(a.busy_percent_since(a), 0.0);
        assert!(CpuTimes::parse("intr 1 2 3\n").is_none());
    }

    #[test]
    fn memory_in_use() {
        let info = "MemTotal:       1000 kB\nMemFree:  10 kB\nMemAvailable:    250 kB\n";
        assert_eq!(memory_percent(info), Some(75.0));
        assert_eq!(memory_percent("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), None);
    }

    #[test]
    fn counts_established_connections_on_our_ports_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: 0100007F:0050 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n\
   2: 0100007F:01BB 0100007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n\
   3: 0100007F:1F90 0100007F:9C42 01 00000000:00000000 00:00000000 00000000     0        0 4 1\n\
   4: 0100007F:01BB 0100007F:9C43 06 00000000:00000000 00:00000000 00000000     0        0 5 1\n";
        assert_eq!(established_on(table, &[80, 443]), 2);
        assert_eq!(established_on(table, &[8080]), 1);
    }

    #[test]
    fn reads_combined_and_kokoa_lines() {
        let parse = |line| {
            LogLine::parse(line).map(|l| (l.status, l.bytes, l.host, l.seconds, l.upstream_seconds))
        };
        assert_eq!(
            parse(
                "127.0.0.1 - - [01/Jan/2026:00:00:00 +0000] \"GET / HTTP/1.1\" 200 12 \"-\" \"curl/8\""
            ),
            Some((200, 12, None, None, None))
        );
        assert_eq!(
            parse(
                "127.0.0.1 - - [t] \"GET /x\\x22y HTTP/1.1\" 503 99 \"-\" \"a \\x22b\" \"app.hoge.com\" 0.012"
            ),
            Some((503, 99, Some("app.hoge.com"), Some(0.012), None))
        );
        // The upstream's time: one, none (nginx answered itself), several tried.
        let kokoa = |times: &str| {
            let line = format!(
                "1.2.3.4 - - [t] \"GET / HTTP/1.1\" 200 1 \"-\" \"-\" \"app.hoge.com\" {times}"
            );
            LogLine::parse(&line).and_then(|l| l.upstream_seconds)
        };
        assert_eq!(kokoa("0.012 0.010"), Some(0.010));
        assert_eq!(kokoa("0.000 -"), None);
        let tried = kokoa("1.500 1.000, 0.250 : 0.125").unwrap();
        assert!((tried - 1.375).abs() < 1e-9, "{tried}");
        assert_eq!(parse("garbage"), None);
        assert_eq!(
            parse("1.2.3.4 - - [t] \"GET / HTTP/1.1\" x 1 \"-\" \"-\""),
            None
        );
    }

    #[test]
    fn traffic_counts_by_route_name_and_bounds_the_rest() {
        let traffic = Traffic::default();
        traffic.set_hosts(["app.hoge.com", "*.fuga.net"]);
        fn line(host: &str, status: u16, seconds: f64) -> LogLine<'_> {
            LogLine {
                status,
                bytes: 10,
                host: Some(host),
                seconds: Some(seconds),
                upstream_seconds: (status != 429).then_some(seconds / 2.0),
            }
        }
        traffic.count(&[
            line("app.hoge.com", 200, 0.003),
            line("APP.hoge.com", 502, 0.2),
            line("a.b.fuga.net", 404, 0.003),
            line("scanner.example", 200, 0.003),
            line("fuga.net", 200, 0.003),
            line("app.hoge.com", 429, 0.0),
        ]);
        let mut out = String::new();
        traffic.render(&mut out, "kokoa_edge");
        for expected in [
            "kokoa_edge_requests_total{hostname=\"app.hoge.com\",code=\"2xx\"} 1\n",
            "kokoa_edge_requests_total{hostname=\"app.hoge.com\",code=\"4xx\"} 1\n",
            "kokoa_edge_requests_total{hostname=\"app.hoge.com\",code=\"5xx\"} 1\n",
            "kokoa_edge_rate_limited_requests_total{hostname=\"app.hoge.com\"} 1\n",
            "kokoa_edge_rate_limited_requests_total{hostname=\"*.fuga.net\"} 0\n",
            "kokoa_edge_upstream_duration_seconds_count{hostname=\"app.hoge.com\"} 2\n",
            "kokoa_edge_upstream_duration_seconds_bucket{hostname=\"app.hoge.com\",le=\"0.1\"} 2\n",
            "kokoa_edge_requests_total{hostname=\"*.fuga.net\",code=\"4xx\"} 1\n",
            "kokoa_edge_requests_total{hostname=\"other\",code=\"2xx\"} 2\n",
            "kokoa_edge_request_duration_seconds_count{hostname=\"app.hoge.com\"} 3\n",
            "kokoa_edge_request_duration_seconds_bucket{hostname=\"app.hoge.com\",le=\"0.005\"} 2\n",
            "kokoa_edge_response_bytes_total{hostname=\"other\"} 20\n",
        ] {
            assert!(out.contains(expected), "{expected} not in\n{out}");
        }
        assert!(!out.contains("scanner"), "{out}");
        // Every class of every name is there from the start.
        assert!(
            out.contains("kokoa_edge_requests_total{hostname=\"*.fuga.net\",code=\"1xx\"} 0\n"),
            "{out}"
        );

        // The same requests as heartbeat windows, taken once; an undelivered one comes back.
        let window = traffic.take_window();
        let app = window
            .iter()
            .find(|h| h.hostname == "app.hoge.com")
            .expect("app.hoge.com counted");
        assert_eq!((app.counts.requests, app.counts.errors), (3, 1));
        assert_eq!(app.counts.latency[0] + app.counts.latency[5], 3);
        let labels: Vec<&str> = window.iter().map(|h| h.hostname.as_str()).collect();
        assert_eq!(labels, ["*.fuga.net", "app.hoge.com", "other"]);
        assert!(traffic.take_window().is_empty(), "taken once");
        traffic.restore(window.clone());
        traffic.count(&[line("app.hoge.com", 200, 0.003)]);
        let again = traffic.take_window();
        let app = again.iter().find(|h| h.hostname == "app.hoge.com").unwrap();
        assert_eq!(app.counts.requests, 4, "restored and added to");
        assert_eq!(again.len(), window.len());
    }

    #[test]
    fn access_log_rates_count_only_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let line = "1.2.3.4 - - [t] \"GET / HTTP/1.1\" 502 0 \"-\" \"-\"\n";
        fs::write(&path, line.repeat(5)).unwrap();
        let mut sampler = Sampler::new(vec![80], path.clone());
        assert_eq!(sampler.sample().requests_per_second, 0.0);
        let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(line.repeat(3).as_bytes()).unwrap();
        file.write_all(b"1.2.3.4 - - [t] \"GET / HTTP/1.1\" 200 0 \"-\" \"-\"\n")
            .unwrap();
        let sample = sampler.sample();
        assert!(sample.requests_per_second > 0.0);
        assert_eq!(sample.error_rate, 75.0);
        assert!((0.0..=100.0).contains(&sample.memory_percent) && sample.memory_percent > 0.0);
        // Rotation: a shorter file is read from its start.
        fs::write(&path, line).unwrap();
        assert_eq!(sampler.sample().error_rate, 100.0);
    }
}
