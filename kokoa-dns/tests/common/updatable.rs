//! BIND 9 (`named`) and Knot DNS (`knotd`) started by a test on a free loopback port, each
//! with its own configuration in a temporary directory, serving one zone that a fresh
//! TSIG key (HMAC-SHA256) may update and transfer. Killed and removed on drop.

use std::{
    fmt::Write as _,
    io::Read,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use test_ports::tcp_and_udp as free_port;

/// The key's name in the servers' configurations.
pub(crate) const KEY_NAME: &str = "kokoa-key";

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// BIND 9, Debian package `bind9`.
    Bind,
    /// Knot DNS, Debian package `knot`.
    Knot,
}

impl Flavour {
    fn program(self) -> &'static str {
        match self {
            Self::Bind => "named",
            Self::Knot => "knotd",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Self::Bind => "bind9",
            Self::Knot => "knot",
        }
    }
}

/// A running server; killed, and its directory removed, on drop (also when a test fails).
pub(crate) struct Updatable {
    child: Child,
    dir: tempfile::TempDir,
    flavour: Flavour,
    /// The DNS port on 127.0.0.1 (UDP and TCP).
    pub(crate) port: u16,
    /// The key's secret, base64, as the servers' configurations take it.
    pub(crate) secret: String,
}

impl Drop for Updatable {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The full path of `program`; panics, so that the test fails, when it is not installed.
fn find(flavour: Flavour) -> PathBuf {
    let program = flavour.program();
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{program} not found: install it with scripts/install-deps (Debian package {})",
                flavour.package()
            )
        })
}

fn random_secret() -> String {
    let mut bytes = [0; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Updatable {
    /// Starts `flavour` serving `zone` (e.g. `kokoa.test`) with an SOA, an NS record and
    /// `records` (zone file lines, relative names allowed), and waits (at most 10 s) until
    /// it answers the zone's SOA over TCP.
    pub(crate) async fn start(flavour: Flavour, zone: &str, records: &[&str]) -> Self {
        let program = find(flavour);
        let dir = tempfile::Builder::new()
            .prefix(&format!("kokoa-{}.", flavour.program()))
            .tempdir()
            .expect("create a temporary directory");
        let port = free_port();
        let secret = random_secret();
        let mut zone_file = format!(
            "$ORIGIN {zone}.\n$TTL 3600\n\
             @ SOA ns1 hostmaster 1 10800 3600 604800 3600\n\
             @ NS ns1\nns1 A 127.0.0.1\n"
        );
        for line in records {
            writeln!(zone_file, "{line}").expect("write to a string");
        }
        let path = dir.path();
        write(&path.join(format!("{zone}.zone")), &zone_file);
        let log = std::fs::File::create(path.join("server.log")).expect("create the log");
        let d = path.display();
        let mut command = Command::new(program);
        match flavour {
            Flavour::Bind => {
                // No control channel (the default listens on 127.0.0.1:953), no recursion,
                // no trust anchor upkeep: nothing but the zone on the given port.
                let config = format!(
                    "options {{\n\
                     \tdirectory \"{d}\";\n\
                     \tpid-file \"{d}/named.pid\";\n\
                     \tsession-keyfile \"{d}/session.key\";\n\
                     \tmanaged-keys-directory \"{d}\";\n\
                     \tlisten-on port {port} {{ 127.0.0.1; }};\n\
                     \tlisten-on-v6 {{ none; }};\n\
                     \trecursion no;\n\
                     \tnotify no;\n\
                     \tdnssec-validation no;\n\
                     }};\n\
                     controls {{ }};\n\
                     key \"{KEY_NAME}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
                     zone \"{zone}\" {{\n\
                     \ttype primary;\n\
                     \tfile \"{d}/{zone}.zone\";\n\
                     \tallow-update {{ key {KEY_NAME}; }};\n\
                     \tallow-transfer {{ key {KEY_NAME}; }};\n\
                     }};\n"
                );
                write(&path.join("named.conf"), &config);
                // -g: foreground, logging to stderr; -n 1: one worker thread.
                command
                    .args(["-g", "-n", "1", "-c"])
                    .arg(path.join("named.conf"));
            }
            Flavour::Knot => {
                let config = format!(
                    "server:\n\
                     \x20   rundir: \"{d}\"\n\
                     \x20   listen: 127.0.0.1@{port}\n\
                     \x20   udp-workers: 1\n\
                     \x20   tcp-workers: 1\n\
                     \x20   background-workers: 1\n\
                     log:\n\
                     \x20 - target: stderr\n\
                     \x20   any: info\n\
                     database:\n\
                     \x20   storage: \"{d}\"\n\
                     control:\n\
                     \x20   listen: \"{d}/knot.sock\"\n\
                     key:\n\
                     \x20 - id: {KEY_NAME}\n\
                     \x20   algorithm: hmac-sha256\n\
                     \x20   secret: {secret}\n\
                     acl:\n\
                     \x20 - id: kokoa\n\
                     \x20   key: {KEY_NAME}\n\
                     \x20   action: [update, transfer]\n\
                     zone:\n\
                     \x20 - domain: {zone}\n\
                     \x20   storage: \"{d}\"\n\
                     \x20   file: \"{zone}.zone\"\n\
                     \x20   acl: kokoa\n"
                );
                write(&path.join("knot.conf"), &config);
                // knotd stays in the foreground unless given -d.
                command.arg("-c").arg(path.join("knot.conf"));
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", flavour.program()));
        let mut server = Self {
            child,
            dir,
            flavour,
            port,
            secret,
        };
        server.wait_until_ready(zone).await;
        server
    }

    /// What the server has written to its log.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    async fn wait_until_ready(&mut self, zone: &str) {
        let started = Instant::now();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited at start ({status}); its log:\n{}",
                    self.flavour.program(),
                    self.log()
                );
            }
            let answer = Command::new("dig")
                .args(["@127.0.0.1", "-p", &self.port.to_string(), zone, "SOA"])
                .args(["+tcp", "+short", "+time=1", "+tries=1"])
                .output()
                .expect("run dig (scripts/install-deps installs it, Debian package dnsutils)");
            if answer.status.success() && !answer.stdout.is_empty() {
                return;
            }
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{} did not answer for {zone} within 10 s; its log:\n{}",
            self.flavour.program(),
            self.log()
        );
    }
}
