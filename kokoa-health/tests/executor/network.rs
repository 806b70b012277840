//! `tcp`, `icmp` and `wireguard` checks on loopback, and checks run from inside a network
//! namespace: two namespaces made by the test, joined by a veth pair, deleted on drop.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use kokoa_health::{CheckConfig, CheckExecutor, CheckStatus, DefaultExecutor};
use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};
use tokio::net::TcpListener;

use crate::support::{Behaviour, refusing_port, serve};

const INSTALL: &str = "install it with: apt-get install -y --no-install-recommends iproute2";

fn quick(mut check: CheckConfig) -> CheckConfig {
    check.retries = 0;
    check.timeout = Duration::from_secs(1);
    check
}

#[tokio::test]
async fn tcp_accepted_and_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let executor = DefaultExecutor::new();
    let outcome = executor
        .check(&quick(CheckConfig::tcp("127.0.0.1", port)))
        .await;
    assert_eq!(outcome.status, CheckStatus::Success, "{outcome:?}");
    let outcome = executor
        .check(&quick(CheckConfig::tcp("localhost", port)))
        .await;
    assert_eq!(
        outcome.status,
        CheckStatus::Success,
        "names resolve: {outcome:?}"
    );

    let (_reserved, closed) = refusing_port();
    let port = closed.port();
    let outcome = executor
        .check(&quick(CheckConfig::tcp("127.0.0.1", port)))
        .await;
    assert_eq!(
        outcome.error.as_deref(),
        Some(format!("cannot connect to 127.0.0.1:{port}: Connection refused").as_str())
    );
}

#[tokio::test]
async fn icmp_echo_to_loopback_is_answered() {
    assert_root();
    let executor = DefaultExecutor::new();
    for host in ["127.0.0.1", "::1", "localhost"] {
        let outcome = executor.check(&quick(CheckConfig::icmp(host))).await;
        assert_eq!(outcome.status, CheckStatus::Success, "{host}: {outcome:?}");
    }
    let outcome = executor
        .check(&quick(CheckConfig::wireguard(IpAddr::V6(
            Ipv6Addr::LOCALHOST,
        ))))
        .await;
    assert_eq!(outcome.status, CheckStatus::Success, "{outcome:?}");
}

#[tokio::test]
async fn a_missing_namespace_is_named() {
    let mut check = quick(CheckConfig::icmp("127.0.0.1"));
    check.netns = Some("kokoa-no-such-namespace".into());
    assert_eq!(
        DefaultExecutor::new().check(&check).await.error.as_deref(),
        Some(
            "cannot open an ICMP socket: cannot open network namespace /run/netns/kokoa-no-such-namespace: No such file or directory"
        )
    );
}

#[tokio::test]
async fn wireguard_echo_from_inside_a_namespace() {
    let pair = Pair::create("w");
    let executor = DefaultExecutor::new();
    let mut check = quick(CheckConfig::wireguard(Pair::FAR.into()));
    check.netns = Some(pair.near.clone());
    // A new namespace allows no ping sockets: a raw socket is used.
    let outcome = executor.check(&check).await;
    assert_eq!(
        outcome.status,
        CheckStatus::Success,
        "raw socket: {outcome:?}"
    );

    pair.exec_near("echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range");
    let outcome = executor.check(&check).await;
    assert_eq!(
        outcome.status,
        CheckStatus::Success,
        "ping socket: {outcome:?}"
    );

    // The far host goes away.
    ip(&[
        "-n",
        &pair.far,
        "addr",
        "del",
        "10.201.0.2/30",
        "dev",
        "veth1",
    ]);
    let outcome = executor.check(&check).await;
    assert_eq!(
        outcome.error.as_deref(),
        Some(format!("timed out after 1 s while waiting for an echo reply from 10.201.0.2 in network namespace {}", pair.near).as_str())
    );
}

#[tokio::test]
async fn http_and_tcp_from_inside_a_namespace() {
    let pair = Pair::create("h");
    let addr = SocketAddr::from((Pair::FAR, 8080));
    let listener = pair.listen_far(addr);
    let behaviour = Arc::new(Mutex::new(Behaviour {
        status: 200,
        body: "ok".into(),
        requests: Vec::new(),
        sni: Vec::new(),
    }));
    let server = tokio::spawn(serve(listener, None, behaviour.clone()));

    let executor = DefaultExecutor::new();
    let mut check = quick(CheckConfig::http("http://10.201.0.2:8080/health"));
    check.netns = Some(pair.near.clone());
    let outcome = executor.check(&check).await;
    assert_eq!(outcome.status, CheckStatus::Success, "{outcome:?}");
    assert_eq!(behaviour.lock().unwrap().requests.len(), 1);

    let mut check = quick(CheckConfig::tcp("10.201.0.2", 8080));
    check.netns = Some(format!("/run/netns/{}", pair.near));
    let outcome = executor.check(&check).await;
    assert_eq!(outcome.status, CheckStatus::Success, "by path: {outcome:?}");
    check.port = Some(8081);
    assert_eq!(
        executor.check(&check).await.error.as_deref(),
        Some(format!("cannot connect to 10.201.0.2:8081 from network namespace /run/netns/{}: Connection refused", pair.near).as_str())
    );
    server.abort();
}

fn assert_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "ICMP and network namespace tests need root (raw sockets, `ip netns`); run them as root, as CI does"
    );
}

fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}); {INSTALL}"));
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Namespaces `near` (10.201.0.1) and `far` (10.201.0.2) joined by a veth pair; deleted,
/// with the pair, when dropped.
struct Pair {
    near: String,
    far: String,
}

impl Pair {
    const FAR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);

    fn create(tag: &str) -> Self {
        assert_root();
        // Unique per process and test: other test runs may share the machine.
        let prefix = format!("kh{}{tag}", std::process::id());
        let pair = Self {
            near: format!("{prefix}n"),
            far: format!("{prefix}f"),
        };
        ip(&["netns", "add", &pair.near]);
        ip(&["netns", "add", &pair.far]);
        // Made inside `near`, so no interface name is ever used in the host's namespace.
        ip(&[
            "-n", &pair.near, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            "netns", &pair.far,
        ]);
        for (ns, dev, addr) in [
            (&pair.near, "veth0", "10.201.0.1/30"),
            (&pair.far, "veth1", "10.201.0.2/30"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    fn exec_near(&self, script: &str) {
        ip(&["netns", "exec", &self.near, "sh", "-c", script]);
    }

    /// A listener bound inside `far`.
    fn listen_far(&self, addr: SocketAddr) -> TcpListener {
        let namespace = File::open(format!("/run/netns/{}", self.far)).unwrap();
        let listener = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    move_into_link_name_space(namespace.as_fd(), Some(LinkNameSpaceType::Network))
                        .unwrap();
                    std::net::TcpListener::bind(addr).unwrap()
                })
                .join()
                .unwrap()
        });
        listener.set_nonblocking(true).unwrap();
        TcpListener::from_std(listener).unwrap()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.near, &self.far] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
