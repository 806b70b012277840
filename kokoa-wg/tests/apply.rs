//! `WgHost` against the real tools: interfaces come up from rendered configurations between
//! two network namespaces, a peer added with `wg syncconf` leaves the live session alone,
//! and unwanted interfaces are deleted.
//!
//! Needs root and wg, wireguard-go, ip, ping, nsenter, unshare. Each namespace gets a holder
//! process in its own mount namespace with a private /run/wireguard; the `WgHost` of that
//! host runs every command through `nsenter` into it.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;
use kokoa_wg::{
    BASE_LISTEN_PORT, Direction, Edge, Host, InterfaceName, Origin, PrivateKey, Topology,
    apply::{Implementation, WgHost},
};

const INSTALL: &str = "apt-get install -y --no-install-recommends \
                       wireguard-tools wireguard-go iproute2 iputils-ping util-linux";

fn require_tools() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["wg", "wireguard-go", "ip", "ping", "nsenter", "unshare"] {
        let found = std::env::split_paths(&path).any(|dir| dir.join(tool).is_file());
        assert!(
            found,
            "`{tool}` is not installed; install it with: {INSTALL}"
        );
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}; install with: {INSTALL}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}\n(these tests need root for network namespaces)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

/// A network namespace with a private /run/wireguard and a `WgHost` driving it. Every
/// process in the namespace is killed and the namespace deleted on drop, also on panic.
struct Node {
    ns: String,
    holder: Child,
    host: WgHost,
    dir: tempfile::TempDir,
}

impl Node {
    fn new(tag: &str) -> Self {
        let ns = format!("kokoa-wgapply-{}-{tag}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &ns]));
        let dir = tempfile::tempdir().unwrap();
        let ready = dir.path().join("ready");
        let holder = Command::new("ip")
            .args(["netns", "exec", &ns, "unshare", "-m", "sh", "-c"])
            .arg(
                "mkdir -p /run/wireguard && mount -t tmpfs tmpfs /run/wireguard \
                 && touch \"$0\" && exec sleep 300",
            )
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start a namespace holder: {e}; install: {INSTALL}"));
        let host = WgHost::new(Implementation::WireguardGo, dir.path()).with_command_prefix([
            "nsenter".to_owned(),
            "-t".to_owned(),
            holder.id().to_string(),
            "-m".to_owned(),
            "-n".to_owned(),
        ]);
        let node = Self {
            ns,
            holder,
            host,
            dir,
        };
        wait_for(Duration::from_secs(5), "the namespace holder", || {
            ready.exists()
        });
        node.ip(&["link", "set", "lo", "up"]);
        node
    }

    fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").args(["-n", &self.ns]).args(args))
    }

    /// `ip -o link show dev NAME`: index, flags and MTU of the link.
    fn link(&self, name: &InterfaceName) -> String {
        self.ip(&["-o", "link", "show", "dev", name.as_str()])
    }

    /// `wg show NAME WHAT` inside this host's namespaces.
    fn wg_show(&self, name: &InterfaceName, what: &str) -> String {
        let pid = self.holder.id().to_string();
        run(Command::new("nsenter").args([
            "-t",
            &pid,
            "-m",
            "-n",
            "wg",
            "show",
            name.as_str(),
            what,
        ]))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Daemonised wireguard-go processes keep the namespace alive: kill them all.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// An edge and an origin namespace joined by a veth pair: the edge is 10.99.NET.1, the
/// origin 10.99.NET.2.
fn linked(edge_tag: &str, origin_tag: &str, net: u8) -> (Node, Node) {
    let (edge_node, origin_node) = (Node::new(edge_tag), Node::new(origin_tag));
    let (edge_dev, origin_dev) = (format!("kkv{net}-e"), format!("kkv{net}-o"));
    run(Command::new("ip")
        .args(["link", "add", &edge_dev, "netns", &edge_node.ns])
        .args([
            "type",
            "veth",
            "peer",
            "name",
            &origin_dev,
            "netns",
            &origin_node.ns,
        ]));
    for (node, dev, host) in [(&edge_node, &edge_dev, 1), (&origin_node, &origin_dev, 2)] {
        node.ip(&["addr", "add", &format!("10.99.{net}.{host}/24"), "dev", dev]);
        node.ip(&["link", "set", dev, "up"]);
    }
    (edge_node, origin_node)
}

fn wait_for(limit: Duration, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "gave up after {limit:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

fn edge(name: &str, key: &PrivateKey, public: Ipv4Addr, tunnel_ip: Ipv4Addr) -> Edge {
    Edge::new(
        name,
        key.public_key(),
        Host::from(IpAddr::V4(public)),
        tunnel_ip,
        BASE_LISTEN_PORT,
    )
}

#[test]
fn syncconf_adds_a_peer_without_dropping_the_live_session() {
    require_tools();
    let subnet: Ipv4Net = "10.0.81.0/24".parse().unwrap();
    let origin_ip = Ipv4Addr::new(10, 0, 81, 1);
    let edge_ip = Ipv4Addr::new(10, 0, 81, 10);
    let (origin_key, edge1_key, edge2_key) = (
        PrivateKey::generate(),
        PrivateKey::generate(),
        PrivateKey::generate(),
    );
    let origin = Origin::new(
        format!("apply-test-{}", std::process::id()),
        "home-server",
        subnet,
        origin_ip,
        origin_key.public_key(),
    );
    // The underlay: the edge is 10.99.81.1, the origin 10.99.81.2.
    let edge1 = edge("edge-1", &edge1_key, Ipv4Addr::new(10, 99, 81, 1), edge_ip);
    let edge2 = edge(
        "edge-2",
        &edge2_key,
        Ipv4Addr::new(10, 99, 81, 3),
        Ipv4Addr::new(10, 0, 81, 11),
    );
    let one = Topology::new(
        origin.clone(),
        vec![edge1.clone()],
        Direction::OriginDialsOut,
    )
    .unwrap();
    let two = Topology::new(origin, vec![edge1, edge2], Direction::OriginDialsOut).unwrap();

    let (edge_node, origin_node) = linked("e", "o", 81);

    // Both sides come up from nothing.
    let on_edge = one.edge_config("edge-1", &edge1_key).unwrap();
    let applied = edge_node
        .host
        .apply(std::slice::from_ref(&on_edge))
        .unwrap();
    assert_eq!(applied.created, vec![on_edge.name.clone()]);
    let wg0 = one.origin_config(&origin_key).unwrap();
    let applied = origin_node.host.apply(std::slice::from_ref(&wg0)).unwrap();
    assert_eq!(applied.created, vec![wg0.name.clone()]);
    assert!(applied.removed.is_empty());

    let link = edge_node.link(&on_edge.name);
    assert!(
        link.contains(" mtu 1420 ") && link.contains(",UP"),
        "{link}"
    );
    let addresses = edge_node.ip(&["-o", "addr", "show", "dev", on_edge.name.as_str()]);
    assert!(addresses.contains(" 10.0.81.10/24 "), "{addresses}");
    assert_eq!(
        edge_node.host.interfaces().unwrap(),
        vec![on_edge.name.clone()]
    );

    // The origin dials; the first ping waits for the handshake.
    let reached = (0..3).any(|_| {
        origin_node
            .host
            .ping(edge_ip.into(), Duration::from_secs(3))
            .is_some()
    });
    assert!(reached, "no ping reply from {edge_ip} over the tunnel");
    let status = edge_node
        .host
        .status(&on_edge.name, origin_ip.into(), Duration::from_secs(1));
    assert!(status.up() && status.rtt.is_some(), "{status:?}");
    let before = origin_node.host.latest_handshakes(&wg0.name).unwrap();
    let edge1_key_pub = edge1_key.public_key();
    let session = before
        .iter()
        .find(|(k, _)| *k == edge1_key_pub)
        .and_then(|(_, at)| *at)
        .expect("a handshake with edge 1");
    let index = origin_node.link(&wg0.name);
    // Traffic counters well above what a fresh session would show, and a second boundary
    // so a fresh handshake would carry another timestamp.
    for _ in 0..5 {
        assert!(
            origin_node
                .host
                .ping(edge_ip.into(), Duration::from_secs(1))
                .is_some()
        );
    }
    let traffic = |name| {
        origin_node
            .host
            .peers(name)
            .unwrap()
            .into_iter()
            .find(|p| p.public_key == edge1_key_pub)
            .expect("edge 1 is a peer")
    };
    let first = traffic(&wg0.name);
    assert_eq!(first.latest_handshake, Some(session));
    // Five pings of 84 bytes each way, and more with WireGuard's framing.
    assert!(
        first.rx_bytes >= 5 * 84 && first.tx_bytes >= 5 * 84,
        "{first:?}"
    );
    let counted = (first.rx_bytes, first.tx_bytes);
    let port = origin_node.wg_show(&wg0.name, "listen-port");
    thread::sleep(Duration::from_millis(1100));

    // A second edge joins: the same interface is updated in place.
    let wg0 = two.origin_config(&origin_key).unwrap();
    let applied = origin_node.host.apply(std::slice::from_ref(&wg0)).unwrap();
    assert_eq!(applied.updated, vec![wg0.name.clone()]);
    assert!(applied.created.is_empty() && applied.removed.is_empty());
    let after = origin_node.host.latest_handshakes(&wg0.name).unwrap();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.contains(&(edge1_key_pub, Some(session))),
        "session with edge 1 lost: {after:?}"
    );
    assert!(after.contains(&(edge2_key.public_key(), None)));
    // The dialling side has no fixed port; an update must not move it, or the edges would
    // answer to the old one until the next keepalive.
    assert_eq!(origin_node.wg_show(&wg0.name, "listen-port"), port);
    let later = traffic(&wg0.name);
    let (rx, tx) = (later.rx_bytes, later.tx_bytes);
    assert!(
        rx >= counted.0 && tx >= counted.1,
        "counters restarted: {counted:?} then {:?}",
        (rx, tx)
    );
    let index_after = origin_node.link(&wg0.name);
    assert_eq!(
        index.split(':').next(),
        index_after.split(':').next(),
        "the interface was recreated"
    );
    assert!(
        origin_node
            .host
            .ping(edge_ip.into(), Duration::from_secs(1))
            .is_some(),
        "the tunnel stopped carrying traffic after syncconf"
    );

    // No longer wanted: the managed interface goes, its daemon with it.
    let applied = edge_node.host.apply(&[]).unwrap();
    assert_eq!(applied.removed, vec![on_edge.name.clone()]);
    assert!(edge_node.host.interfaces().unwrap().is_empty());
    let links = edge_node.ip(&["-o", "link", "show"]);
    assert!(!links.contains(on_edge.name.as_str()), "{links}");
    // The settings files never outlive a command.
    assert_no_setconf_left(edge_node.dir.path());
    assert_no_setconf_left(origin_node.dir.path());
}

fn assert_no_setconf_left(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".setconf"))
        .collect();
    assert!(left.is_empty(), "settings files left behind: {left:?}");
}

/// Settles `node`'s interface `wanted` a few times a second until a key change is carried
/// out; returns how long that took.
fn settle_until_done(node: &Node, wanted: &kokoa_wg::InterfaceConfig) -> Duration {
    let start = Instant::now();
    loop {
        let changed = node.host.settle(std::slice::from_ref(wanted)).unwrap();
        if !changed.is_empty() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the new key made no handshake within 10 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The peers of `name` on `node`, by key.
fn peers(node: &Node, name: &InterfaceName) -> Vec<String> {
    node.wg_show(name, "peers")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn either_side_changes_its_key_while_traffic_flows() {
    require_tools();
    let subnet: Ipv4Net = "10.0.82.0/24".parse().unwrap();
    let origin_ip = Ipv4Addr::new(10, 0, 82, 1);
    let edge_ip = Ipv4Addr::new(10, 0, 82, 10);
    let keys = [(); 4].map(|()| PrivateKey::generate());
    let [origin_key, origin_next, edge_key, edge_next] = &keys;
    let topology = |origin_key: &PrivateKey, edge_key: &PrivateKey| {
        let origin = Origin::new(
            format!("rotate-test-{}", std::process::id()),
            "home-server",
            subnet,
            origin_ip,
            origin_key.public_key(),
        );
        let edge = edge("edge-1", edge_key, Ipv4Addr::new(10, 99, 82, 1), edge_ip);
        Topology::new(origin, vec![edge], Direction::OriginDialsOut).unwrap()
    };
    let (edge_node, origin_node) = linked("re", "ro", 82);
    let first = topology(origin_key, edge_key);
    let on_edge = first.edge_config("edge-1", edge_key).unwrap();
    let wg0 = first.origin_config(origin_key).unwrap();
    edge_node
        .host
        .apply(std::slice::from_ref(&on_edge))
        .unwrap();
    origin_node.host.apply(std::slice::from_ref(&wg0)).unwrap();
    let reach = || {
        (0..3).any(|_| {
            edge_node
                .host
                .ping(origin_ip.into(), Duration::from_secs(2))
                .is_some()
        })
    };
    assert!(reach(), "no ping reply over the tunnel before any change");

    // The edge's key: the origin prepares the new one next to the old, the edge switches,
    // the origin hands the address over at the first handshake with the new key.
    let mut prepared = wg0.clone();
    let mut next = kokoa_wg::Peer::new(edge_next.public_key());
    next.endpoint = wg0.config.peers[0].endpoint.clone();
    next.persistent_keepalive = wg0.config.peers[0].persistent_keepalive;
    prepared.config.peers.push(next);
    let prepared = prepared.with_key_change(kokoa_wg::KeyChange {
        from: edge_key.public_key(),
        to: edge_next.public_key(),
    });
    origin_node
        .host
        .apply(std::slice::from_ref(&prepared))
        .unwrap();
    assert_eq!(peers(&origin_node, &wg0.name).len(), 2);
    assert!(reach(), "preparing the new key cut the tunnel");
    let switched = topology(origin_key, edge_next);
    edge_node
        .host
        .apply(&[switched.edge_config("edge-1", edge_next).unwrap()])
        .unwrap();
    // Traffic from the edge starts the handshake with the new key.
    let _ = edge_node
        .host
        .ping(origin_ip.into(), Duration::from_secs(1));
    let took = settle_until_done(&origin_node, &prepared);
    eprintln!("edge key: the origin handed over after {took:?}");
    assert_eq!(
        peers(&origin_node, &wg0.name),
        vec![edge_next.public_key().to_string()]
    );
    assert!(reach(), "no ping reply after the edge's key changed");
    // Applying the same configuration again keeps the hand-over.
    origin_node
        .host
        .apply(std::slice::from_ref(&prepared))
        .unwrap();
    assert_eq!(peers(&origin_node, &wg0.name).len(), 1);

    // The origin's key: the edge prepares it, the origin switches and dials.
    let on_edge = switched.edge_config("edge-1", edge_next).unwrap();
    let mut prepared = on_edge.clone();
    prepared
        .config
        .peers
        .push(kokoa_wg::Peer::new(origin_next.public_key()));
    let prepared = prepared.with_key_change(kokoa_wg::KeyChange {
        from: origin_key.public_key(),
        to: origin_next.public_key(),
    });
    edge_node
        .host
        .apply(std::slice::from_ref(&prepared))
        .unwrap();
    assert!(reach(), "preparing the origin's new key cut the tunnel");
    let last = topology(origin_next, edge_next);
    origin_node
        .host
        .apply(&[last.origin_config(origin_next).unwrap()])
        .unwrap();
    let _ = origin_node
        .host
        .ping(edge_ip.into(), Duration::from_secs(1));
    let took = settle_until_done(&edge_node, &prepared);
    eprintln!("origin key: the edge handed over after {took:?}");
    assert_eq!(
        peers(&edge_node, &on_edge.name),
        vec![origin_next.public_key().to_string()]
    );
    assert!(reach(), "no ping reply after the origin's key changed");
}
