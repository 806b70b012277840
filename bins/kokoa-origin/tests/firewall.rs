//! The firewall rules against the real `nft`, in two network namespaces the test makes: an
//! "origin" whose tunnel interface is `wg0` (a veth: the rules match the interface by name,
//! whatever carries it) and an "edge" with the edge's tunnel address and a stranger's
//! address on the other end. Services listen on 0.0.0.0 in the origin, as a database or
//! an admin page would; the test connects to them from the edge's side.
//!
//! Needs root, `ip` and `nft` (scripts/install-deps installs both).

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::fd::AsFd as _,
    path::Path,
    process::Command,
    time::Duration,
};

use kokoa_origin::{Firewall, Rules};
use kokoa_wg::InterfaceName;

const TUNNEL_IP: &str = "10.77.0.1";
const EDGE: &str = "10.77.0.10";
const STRANGER: &str = "10.77.0.99";
/// The origin's other network, not the tunnel.
const LAN_IP: &str = "10.78.0.1";
const LAN_EDGE: &str = "10.78.0.10";
const DECLARED: u16 = 8080;
const UNDECLARED: u16 = 5432;
/// A connection the rules drop gets no answer: this long decides.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs (scripts/install-deps installs iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `nft ARGS` in namespace `ns`; its output.
fn nft(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The test's two namespaces; dropping this deletes them (and everything in them), also
/// when the test fails.
struct Hosts {
    origin: String,
    edge: String,
}

impl Hosts {
    /// `test` (one letter) and this process's id make the names: tests running at the
    /// same time never share one.
    fn new(test: &str) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test makes network namespaces: run it as root"
        );
        let found = Command::new("nft").arg("--version").output();
        assert!(
            found.is_ok_and(|out| out.status.success()),
            "nft is missing: run scripts/install-deps (or apt-get install -y nftables)"
        );
        let tag = format!("ktfw{test}{}", std::process::id());
        let hosts = Self {
            origin: format!("{tag}o"),
            edge: format!("{tag}e"),
        };
        hosts.clean();
        for ns in [&hosts.origin, &hosts.edge] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        let (o, e) = (hosts.origin.as_str(), hosts.edge.as_str());
        for (here, there, here_ip, there_ips) in [
            ("wg0", "eth0", TUNNEL_IP, &[EDGE, STRANGER][..]),
            ("lan0", "lan1", LAN_IP, &[LAN_EDGE][..]),
        ] {
            ip(&[
                "link", "add", here, "netns", o, "type", "veth", "peer", "name", there, "netns", e,
            ]);
            ip(&[
                "-n",
                o,
                "addr",
                "add",
                &format!("{here_ip}/24"),
                "dev",
                here,
            ]);
            ip(&["-n", o, "link", "set", here, "up"]);
            for address in there_ips {
                ip(&[
                    "-n",
                    e,
                    "addr",
                    "add",
                    &format!("{address}/24"),
                    "dev",
                    there,
                ]);
            }
            ip(&["-n", e, "link", "set", there, "up"]);
        }
        hosts
    }

    fn clean(&self) {
        for ns in [&self.origin, &self.edge] {
            if Path::new("/run/netns").join(ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }

    fn firewall(&self) -> Firewall {
        Firewall::with_command(
            ["ip", "netns", "exec", &self.origin, "nft"]
                .map(String::from)
                .to_vec(),
        )
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.clean();
    }
}

/// Runs `work` on a thread inside namespace `ns`: the sockets it makes belong there.
fn inside<R: Send + 'static>(ns: &str, work: impl FnOnce() -> R + Send + 'static) -> R {
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let ns = File::open(&path).unwrap();
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns into the test's namespace");
        work()
    })
    .join()
    .unwrap()
}

/// Listeners on `0.0.0.0:PORT` in `ns`; the kernel completes handshakes without accept.
fn listen_in(ns: &str, ports: &[u16]) -> Vec<TcpListener> {
    listen_on(ns, "0.0.0.0", ports)
}

/// Listeners on `ADDRESS:PORT` in `ns`.
fn listen_on(ns: &str, address: &'static str, ports: &[u16]) -> Vec<TcpListener> {
    let ports = ports.to_vec();
    inside(ns, move || {
        ports
            .into_iter()
            .map(|port| TcpListener::bind((address, port)).unwrap())
            .collect()
    })
}

/// `route_localnet` of the origin's `wg0`.
fn route_localnet(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg("/proc/sys/net/ipv4/conf/wg0/route_localnet")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// For each (source, destination, port): whether a TCP connection from `ns` gets through
/// within [`CONNECT_TIMEOUT`].
fn connects(ns: &str, probes: &[(&str, &str, u16)]) -> Vec<bool> {
    let probes: Vec<(SocketAddr, SocketAddr)> = probes
        .iter()
        .map(|(from, to, port)| {
            (
                SocketAddr::new(from.parse().unwrap(), 0),
                SocketAddr::new(to.parse().unwrap(), *port),
            )
        })
        .collect();
    inside(ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut through = Vec::new();
            for (from, to) in probes {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(from).unwrap();
                let connected = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(to)).await;
                through.push(matches!(connected, Ok(Ok(_))));
            }
            through
        })
    })
}

/// Whether one ping from `ns`, sent from `from`, is answered.
fn pings(ns: &str, from: &str, to: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-c1", "-W1", "-I", from, to,
        ])
        .output()
        .expect("ping runs (scripts/install-deps installs iputils-ping)")
        .status
        .success()
}

fn rules(edges: &[&str], ports: &[u16]) -> Rules {
    Rules::new(
        InterfaceName::new("wg0").unwrap(),
        TUNNEL_IP.parse().unwrap(),
        edges.iter().map(|e| e.parse().unwrap()).collect(),
        ports.iter().copied().collect(),
    )
    .unwrap()
}

#[test]
fn only_the_edges_reach_the_declared_ports_through_the_tunnel() {
    let hosts = Hosts::new("r");
    let (origin, edge) = (hosts.origin.as_str(), hosts.edge.as_str());
    let _listeners = listen_in(origin, &[DECLARED, UNDECLARED, 80]);
    // A table of the host's own, which the agent must leave alone.
    nft(
        origin,
        &[
            "add table inet host; add chain inet host input { type filter hook input priority 10; policy accept; }; add rule inet host input tcp dport 9 counter drop",
        ],
    );

    let all = [
        (EDGE, TUNNEL_IP, DECLARED),
        (EDGE, TUNNEL_IP, 80),
        (EDGE, TUNNEL_IP, UNDECLARED),
        (STRANGER, TUNNEL_IP, DECLARED),
        (LAN_EDGE, LAN_IP, UNDECLARED),
    ];
    // Without rules everything gets through: the probes can tell.
    assert_eq!(connects(edge, &all), [true; 5]);

    let firewall = hosts.firewall();
    firewall.apply(&rules(&[EDGE], &[DECLARED])).unwrap();
    let table = nft(origin, &["list", "table", "inet", "kokoa"]);
    assert!(
        table.contains("iifname != \"wg0\" accept") && table.contains("10.77.0.10"),
        "{table}"
    );
    assert_eq!(
        connects(edge, &all),
        [true, true, false, false, true],
        "edge -> declared, edge -> 80, edge -> undeclared, stranger -> declared, \
         other interface -> undeclared"
    );
    assert!(pings(edge, EDGE, TUNNEL_IP), "the edge's ping is answered");
    assert!(
        !pings(edge, STRANGER, TUNNEL_IP),
        "a stranger's ping is not"
    );

    // The origin's own connections out through the tunnel get their answers.
    let _edge_listener = listen_in(edge, &[9000]);
    assert_eq!(connects(origin, &[(TUNNEL_IP, EDGE, 9000)]), [true]);

    // A new configuration replaces the rules: another edge, another port.
    firewall
        .apply(&rules(&[EDGE, STRANGER], &[UNDECLARED]))
        .unwrap();
    assert_eq!(
        connects(edge, &all[..4]),
        [false, true, true, false],
        "after the change: 8080 no longer declared, 5432 declared, 80 stays"
    );
    assert!(pings(edge, STRANGER, TUNNEL_IP));
    let tables = nft(origin, &["list", "tables"]);
    assert_eq!(
        tables.matches("table inet kokoa").count(),
        1,
        "one table, replaced: {tables}"
    );

    firewall
        .remove(&InterfaceName::new("wg0").unwrap())
        .unwrap();
    firewall
        .remove(&InterfaceName::new("wg0").unwrap())
        .expect("removing again is not an error");
    let tables = nft(origin, &["list", "tables"]);
    assert!(!tables.contains("kokoa"), "{tables}");
    assert!(
        tables.contains("table inet host"),
        "the host's table stays: {tables}"
    );
    assert_eq!(connects(edge, &all), [true; 5]);
}

#[test]
fn without_permission_the_error_says_so() {
    let hosts = Hosts::new("p");
    // `setpriv` drops every capability: nft then cannot change the ruleset, as for an
    // agent run by an unprivileged user.
    let firewall = Firewall::with_command(
        [
            "ip",
            "netns",
            "exec",
            &hosts.origin,
            "setpriv",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "nft",
        ]
        .map(String::from)
        .to_vec(),
    );
    let err = firewall.apply(&rules(&[EDGE], &[DECLARED])).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("Operation not permitted"), "{message}");
    assert!(message.contains("--no-firewall"), "{message}");
    let tables = nft(&hosts.origin, &["list", "tables"]);
    assert!(!tables.contains("kokoa"), "{tables}");
}

#[test]
fn the_kernel_redirect_reaches_loopback_services_on_the_declared_ports_only() {
    let hosts = Hosts::new("k");
    let (origin, edge) = (hosts.origin.as_str(), hosts.edge.as_str());
    // Applications listen on loopback, as they do behind an origin.
    let served = listen_on(origin, "127.0.0.1", &[DECLARED, UNDECLARED]);
    let probes = [
        (EDGE, TUNNEL_IP, DECLARED),
        (EDGE, TUNNEL_IP, UNDECLARED),
        (STRANGER, TUNNEL_IP, DECLARED),
    ];
    assert_eq!(
        connects(edge, &probes),
        [false; 3],
        "nothing on the tunnel address yet"
    );

    let rules = rules(&[EDGE], &[DECLARED])
        .redirecting(Ipv4Addr::LOCALHOST)
        .unwrap();
    let firewall = Firewall::new();
    let applied = rules.clone();
    inside(origin, move || Firewall::new().apply(&applied)).unwrap();
    assert_eq!(route_localnet(origin), "1");
    assert_eq!(
        connects(edge, &probes),
        [true, false, false],
        "edge -> declared, edge -> undeclared, stranger -> declared"
    );

    // Bytes go both ways, and the application sees the edge's tunnel address.
    let listener = served[0].try_clone().unwrap();
    let answering = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        // The probes above left connections in the backlog that close at once.
        loop {
            let (mut stream, peer) = listener.accept().unwrap();
            let mut asked = [0; 4];
            if stream.read_exact(&mut asked).is_ok() {
                stream.write_all(b"pong").unwrap();
                return (asked, peer);
            }
        }
    });
    let answer = inside(edge, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::new(EDGE.parse().unwrap(), 0))
                .unwrap();
            let to = SocketAddr::new(TUNNEL_IP.parse().unwrap(), DECLARED);
            let mut stream = socket.connect(to).await.unwrap();
            stream.write_all(b"ping").await.unwrap();
            let mut answer = [0; 4];
            tokio::time::timeout(CONNECT_TIMEOUT, stream.read_exact(&mut answer))
                .await
                .expect("answered in time")
                .unwrap();
            answer
        })
    });
    assert_eq!(&answer, b"pong");
    let (asked, peer) = answering.join().unwrap();
    assert_eq!(&asked, b"ping");
    assert_eq!(peer.ip().to_string(), EDGE);

    // An interface made again starts with route_localnet clear: the agent sees the rules
    // are no longer in place and applies them again.
    let check = rules.clone();
    assert!(inside(origin, move || Firewall::new().in_place(&check)));
    let clear = Command::new("ip")
        .args(["netns", "exec", origin, "sh", "-c"])
        .arg("echo 0 > /proc/sys/net/ipv4/conf/wg0/route_localnet")
        .status()
        .unwrap();
    assert!(clear.success());
    assert_eq!(
        connects(edge, &probes[..1]),
        [false],
        "redirected, then dropped"
    );
    let check = rules.clone();
    assert!(!inside(origin, move || Firewall::new().in_place(&check)));
    let applied = rules.clone();
    inside(origin, move || Firewall::new().apply(&applied)).unwrap();
    assert_eq!(connects(edge, &probes[..1]), [true], "applied again");

    // route_localnet lets loopback destinations in through the tunnel; the rules must
    // keep an edge from addressing the origin's loopback services directly. The edge routes
    // 127.0.0.0/8 into the tunnel, as a compromised one could.
    ip(&["-n", edge, "addr", "flush", "dev", "lo"]);
    let localnet = "/proc/sys/net/ipv4/conf/eth0/route_localnet";
    let set = Command::new("ip")
        .args(["netns", "exec", edge, "sh", "-c"])
        .arg(format!("echo 1 > {localnet}"))
        .status()
        .unwrap();
    assert!(set.success());
    ip(&[
        "-n",
        edge,
        "route",
        "add",
        "127.0.0.0/8",
        "via",
        TUNNEL_IP,
        "dev",
        "eth0",
    ]);
    let loopback = [
        (EDGE, "127.0.0.1", UNDECLARED),
        (EDGE, "127.0.0.1", DECLARED),
    ];
    assert_eq!(connects(edge, &loopback), [false, false], "with the rules");
    // Without them (the table deleted by hand, route_localnet left set) the probes get
    // through: they can tell.
    nft(origin, &["delete", "table", "inet", "kokoa"]);
    assert_eq!(connects(edge, &loopback), [true, true], "without the rules");

    // Removing clears route_localnet; rules without the redirect keep it clear.
    inside(origin, move || {
        firewall.apply(&rules)?;
        firewall.remove(&InterfaceName::new("wg0").unwrap())
    })
    .unwrap();
    assert_eq!(route_localnet(origin), "0");
    assert_eq!(connects(edge, &loopback), [false, false], "after removing");
    let plain = self::rules(&[EDGE], &[DECLARED]);
    inside(origin, move || Firewall::new().apply(&plain)).unwrap();
    assert_eq!(route_localnet(origin), "0");
    assert_eq!(
        connects(edge, &probes),
        [false; 3],
        "no redirect: the forwarder's job"
    );
}
