//! The real WireGuard tools accept what kokoa-wg renders: `wg pubkey` agrees on keys,
//! `wg-quick strip` agrees on the setconf form, `wg setconf` / `wg showconf` on a userspace
//! interface (wireguard-go, and the built-in one with feature `userspace`) give the same
//! settings back, and a rendered topology carries pings between two network namespaces in
//! both dialling directions: wireguard-go on both ends, the built-in one on both ends, and
//! each of them against the other.
//!
//! Needs root (network namespaces) and wg, wg-quick, wireguard-go, ip, ping, nsenter,
//! unshare. Each wireguard-go runs in its own mount namespace with a private /run/wireguard,
//! so its control socket never meets another test's interface of the same name.

use std::{
    collections::BTreeMap,
    fs,
    io::Write as _,
    net::{IpAddr, Ipv4Addr},
    num::{NonZeroU16, NonZeroU32},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use ipnet::{IpNet, Ipv4Net};
use kokoa_wg::{
    BASE_LISTEN_PORT, Comment, Config, Direction, Edge, Endpoint, Format, Host, Interface,
    InterfaceConfig, Origin, Peer, PresharedKey, PrivateKey, Topology,
};

const INSTALL: &str = "apt-get install -y --no-install-recommends \
                       wireguard-tools wireguard-go iproute2 iputils-ping util-linux";

fn require_tools() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in [
        "wg",
        "wg-quick",
        "wireguard-go",
        "ip",
        "ping",
        "nsenter",
        "unshare",
    ] {
        let found = std::env::split_paths(&path).any(|dir| dir.join(tool).is_file());
        assert!(
            found,
            "`{tool}` is not installed; install it with: {INSTALL}"
        );
    }
}

/// Runs `cmd`, fails the test with its stderr unless it succeeds, returns its stdout.
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

/// Writes `text` readable by its owner only, as private keys deserve (and as wg-quick wants).
fn write_private(path: &Path, text: &str) {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// The userspace daemon a [`Node`] runs.
#[derive(Clone, Copy, Debug)]
enum Daemon {
    WireguardGo,
    #[cfg(feature = "userspace")]
    Builtin,
}

impl Daemon {
    fn program(self) -> &'static str {
        match self {
            Self::WireguardGo => "wireguard-go",
            #[cfg(feature = "userspace")]
            Self::Builtin => env!("CARGO_BIN_EXE_kokoa-wireguard"),
        }
    }
}

/// A network namespace with one userspace interface; both go away on drop, also when the
/// test panics.
struct Node {
    ns: String,
    iface: String,
    daemon: Option<Child>,
    dir: tempfile::TempDir,
}

impl Node {
    fn with(tag: &str, iface: &str, daemon: Daemon) -> Self {
        let ns = format!("kokoa-wgtest-{}-{tag}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &ns]));
        let mut host = Self {
            ns,
            iface: iface.to_owned(),
            daemon: None,
            dir: tempfile::tempdir().unwrap(),
        };
        run(Command::new("ip").args(["-n", &host.ns, "link", "set", "lo", "up"]));
        let daemon = Command::new("ip")
            .args(["netns", "exec", &host.ns, "unshare", "-m", "sh", "-c"])
            .arg(
                "mkdir -p /run/wireguard && mount -t tmpfs tmpfs /run/wireguard \
                 && exec \"$0\" \"$1\"",
            )
            .arg(daemon.program())
            .arg(iface)
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {daemon:?}: {e}; install with: {INSTALL}"));
        host.daemon = Some(daemon);
        host.wait_for(
            Duration::from_secs(5),
            "the daemon to create its interface",
            |h| {
                h.wg_command(&["show", &h.iface])
                    .output()
                    .is_ok_and(|o| o.status.success())
            },
        );
        host
    }

    fn pid(&self) -> String {
        self.daemon
            .as_ref()
            .map(Child::id)
            .unwrap_or_default()
            .to_string()
    }

    /// `wg ARGS` inside this host's network and mount namespaces.
    fn wg_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid(), "-m", "-n", "wg"]).args(args);
        cmd
    }

    fn wg(&self, args: &[&str]) -> String {
        run(&mut self.wg_command(args))
    }

    fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").args(["-n", &self.ns]).args(args))
    }

    fn wait_for(&self, limit: Duration, what: &str, ready: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !ready(self) {
            assert!(
                start.elapsed() < limit,
                "gave up after {limit:?} waiting for {what}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Loads `config` with `wg setconf`, then does what wg-quick would: addresses, MTU, up.
    fn apply(&self, config: &Config) {
        let file: PathBuf = self.dir.path().join(format!("{}.setconf", self.iface));
        write_private(&file, &config.render(Format::SetConf));
        self.wg(&["setconf", &self.iface, file.to_str().unwrap()]);
        for address in &config.interface.addresses {
            self.ip(&["addr", "add", &address.to_string(), "dev", &self.iface]);
        }
        self.ip(&["link", "set", &self.iface, "mtu", "1420", "up"]);
    }

    fn showconf(&self) -> Config {
        Config::parse(&self.wg(&["showconf", &self.iface]), Format::SetConf)
            .expect("our parser reads `wg showconf`")
    }

    fn ping(&self, ip: Ipv4Addr) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "ping", "-c", "1", "-W", "3"])
            .arg(ip.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Latest handshake time per peer, in seconds since the epoch (0: never).
    fn handshakes(&self) -> BTreeMap<String, u64> {
        self.wg(&["show", &self.iface, "latest-handshakes"])
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(key, at)| (key.to_owned(), at.trim().parse().expect("a number")))
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// What `wg showconf` gives back for what was set: no comments, allowed IPs as networks in
/// the daemon's order, peers in the daemon's order, and a listen port even when none was
/// set.
fn settings(config: &Config) -> (Config, Option<u16>) {
    let mut config = config.clone();
    config.interface.comment = None;
    config.interface.addresses.clear();
    config.interface.mtu = None;
    for peer in &mut config.peers {
        peer.comment = None;
        peer.allowed_ips = peer.allowed_ips.iter().map(IpNet::trunc).collect();
        peer.allowed_ips.sort();
    }
    config.peers.sort_by_key(|p| p.public_key);
    let port = config.interface.listen_port.take();
    (config, port)
}

fn full_config() -> Config {
    let mut interface = Interface::new(PrivateKey::generate());
    interface.comment = Some(Comment::new("origin: home-server").unwrap());
    interface.addresses = vec![
        "10.0.1.1/24".parse().unwrap(),
        "fd00:1::1/64".parse().unwrap(),
    ];
    interface.listen_port = Some(51820);
    interface.mtu = Some(1420);
    interface.fwmark = NonZeroU32::new(0xca6c);
    let mut a = Peer::new(PrivateKey::generate().public_key());
    a.comment = Some(Comment::new("edge: sgp1-01").unwrap());
    a.preshared_key = Some(PresharedKey::generate());
    a.allowed_ips = vec![
        "10.0.1.10/32".parse().unwrap(),
        "fd00:1::a/128".parse().unwrap(),
    ];
    a.endpoint = Some("[2001:db8::10]:51821".parse().unwrap());
    a.persistent_keepalive = NonZeroU16::new(25);
    let mut b = Peer::new(PrivateKey::generate().public_key());
    b.comment = Some(Comment::new("edge: fra1-01").unwrap());
    b.allowed_ips = vec!["10.0.1.11/32".parse().unwrap()];
    b.endpoint = Some("edge2.example.net:51821".parse().unwrap());
    Config::new(interface, vec![a, b])
}

#[test]
fn keys_agree_with_wg_pubkey() {
    require_tools();
    let wg_pubkey = |private: &str| {
        let mut child = Command::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(private.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    for _ in 0..5 {
        let ours = PrivateKey::generate();
        assert_eq!(wg_pubkey(&ours.to_base64()), ours.public_key().to_string());
        let theirs = run(Command::new("wg").arg("genkey"));
        let key = PrivateKey::from_base64(theirs.trim()).unwrap();
        assert_eq!(*key.to_base64(), theirs.trim());
        assert_eq!(key.public_key().to_string(), wg_pubkey(&theirs));
        let psk = run(Command::new("wg").arg("genpsk"));
        assert_eq!(
            *PresharedKey::from_base64(psk.trim()).unwrap().to_base64(),
            psk.trim()
        );
    }
}

#[test]
fn wg_quick_strip_agrees_with_the_setconf_rendering() {
    require_tools();
    let config = full_config();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wg0.conf");
    write_private(&file, &config.render(Format::WgQuick));
    let stripped = run(Command::new("wg-quick").arg("strip").arg(&file));
    let from_tool = Config::parse(&stripped, Format::SetConf).expect("strip output parses");
    let ours = Config::parse(&config.render(Format::SetConf), Format::SetConf).unwrap();
    assert_eq!(from_tool, ours);
    assert!(ours.interface.addresses.is_empty() && ours.interface.mtu.is_none());
    assert_eq!(ours.peers, config.peers);
}

#[test]
fn wg_setconf_then_showconf_gives_the_same_settings() {
    setconf_then_showconf(Daemon::WireguardGo, "");
}

#[cfg(feature = "userspace")]
#[test]
fn the_builtin_interface_gives_wg_setconf_back_to_wg_showconf() {
    setconf_then_showconf(Daemon::Builtin, "b");
}

fn setconf_then_showconf(daemon: Daemon, suffix: &str) {
    require_tools();
    let (origin_key, edge_key) = (PrivateKey::generate(), PrivateKey::generate());
    let subnet: Ipv4Net = "10.0.3.0/24".parse().unwrap();
    let origin = Origin::new(
        "setconf-test-origin",
        "home-server",
        subnet,
        Ipv4Addr::new(10, 0, 3, 1),
        origin_key.public_key(),
    );
    let edges = vec![
        Edge::new(
            "sgp1-01",
            edge_key.public_key(),
            Host::from(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10))),
            Ipv4Addr::new(10, 0, 3, 10),
            BASE_LISTEN_PORT,
        ),
        Edge::new(
            "fra1-01",
            PrivateKey::generate().public_key(),
            Host::parse("2001:db8::11").unwrap(),
            Ipv4Addr::new(10, 0, 3, 11),
            BASE_LISTEN_PORT,
        ),
    ];
    let topology = Topology::new(origin, edges, Direction::default()).unwrap();
    let mut wg0 = topology.origin_config(&origin_key).unwrap().config;
    wg0.interface.fwmark = NonZeroU32::new(51820);
    wg0.peers[1].preshared_key = Some(PresharedKey::generate());
    wg0.peers[1]
        .allowed_ips
        .push("fd00:3::b/128".parse().unwrap());
    let on_edge: InterfaceConfig = topology.edge_config("sgp1-01", &edge_key).unwrap();

    for (tag, name, config) in [
        ("showconf-o", "wg0", &wg0),
        ("showconf-e", on_edge.name.as_str(), &on_edge.config),
    ] {
        let host = Node::with(&format!("{tag}{suffix}"), name, daemon);
        let file = host.dir.path().join("in.setconf");
        write_private(&file, &config.render(Format::SetConf));
        host.wg(&["setconf", name, file.to_str().unwrap()]);
        let (want, want_port) = settings(config);
        let (got, got_port) = settings(&host.showconf());
        assert_eq!(
            got, want,
            "{name}: what wg showconf reports differs from what was set"
        );
        if want_port.is_some() {
            assert_eq!(got_port, want_port, "{name}: listen port");
        }
    }
}

/// Brings up a rendered origin/edge pair between two namespaces joined by a veth pair and
/// pings across the tunnel, starting from the side that dials.
fn tunnel(tag: &str, third_octet: u8, origin_dials: bool) {
    tunnel_between(tag, third_octet, origin_dials, [Daemon::WireguardGo; 2]);
}

/// Both ends of a tunnel that carried pings, for a test to go on with.
struct Pair {
    origin_host: Node,
    edge_host: Node,
    origin_key: PrivateKey,
    edge_ip: Ipv4Addr,
}

/// [`tunnel`] with the origin's and the edge's daemons given.
fn tunnel_between(
    tag: &str,
    third_octet: u8,
    origin_dials: bool,
    [on_origin, on_edge_daemon]: [Daemon; 2],
) -> Pair {
    require_tools();
    let (origin_key, edge_key) = (PrivateKey::generate(), PrivateKey::generate());
    let subnet = Ipv4Net::new(Ipv4Addr::new(10, 0, third_octet, 0), 24).unwrap();
    let origin_ip = Ipv4Addr::new(10, 0, third_octet, 1);
    let edge_ip = Ipv4Addr::new(10, 0, third_octet, 10);
    // The underlay: 10.99.<octet>.1 is the edge's public address, .2 the origin's.
    let edge_public = Ipv4Addr::new(10, 99, third_octet, 1);
    let origin_public = Ipv4Addr::new(10, 99, third_octet, 2);
    let direction = if origin_dials {
        Direction::OriginDialsOut
    } else {
        let port = BASE_LISTEN_PORT;
        Direction::EdgesDialIn(Endpoint::new(Host::from(IpAddr::V4(origin_public)), port))
    };
    let origin = Origin::new(
        format!("tunnel-{tag}"),
        "home-server",
        subnet,
        origin_ip,
        origin_key.public_key(),
    );
    let edge = Edge::new(
        "edge-1",
        edge_key.public_key(),
        Host::from(IpAddr::V4(edge_public)),
        edge_ip,
        BASE_LISTEN_PORT,
    );
    let topology = Topology::new(origin, vec![edge], direction).unwrap();
    let wg0 = topology.origin_config(&origin_key).unwrap();
    let on_edge = topology.edge_config("edge-1", &edge_key).unwrap();

    let origin_host = Node::with(&format!("{tag}-o"), wg0.name.as_str(), on_origin);
    let edge_host = Node::with(&format!("{tag}-e"), on_edge.name.as_str(), on_edge_daemon);
    run(Command::new("ip").args([
        "link",
        "add",
        "kkv-o",
        "netns",
        &origin_host.ns,
        "type",
        "veth",
        "peer",
        "name",
        "kkv-e",
        "netns",
        &edge_host.ns,
    ]));
    for (host, dev, ip) in [
        (&origin_host, "kkv-o", origin_public),
        (&edge_host, "kkv-e", edge_public),
    ] {
        host.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev]);
        host.ip(&["link", "set", dev, "up"]);
    }
    origin_host.apply(&wg0.config);
    edge_host.apply(&on_edge.config);

    let (dialler, dialled, target, back) = if origin_dials {
        (&origin_host, &edge_host, edge_ip, origin_ip)
    } else {
        (&edge_host, &origin_host, origin_ip, edge_ip)
    };
    // The first ping waits for the handshake (about a second here); allow three tries.
    let reached = (0..3).any(|_| dialler.ping(target));
    assert!(
        reached,
        "{tag}: no ping reply from {target} over the tunnel"
    );
    assert!(
        dialled.ping(back),
        "{tag}: no ping reply from {back} the other way"
    );
    for (host, peer) in [(&origin_host, &edge_key), (&edge_host, &origin_key)] {
        let at = host.handshakes();
        let key = peer.public_key().to_string();
        assert!(
            at.get(&key).is_some_and(|t| *t > 0),
            "{tag}: no handshake with {key}: {at:?}"
        );
    }
    // AllowedIPs is the edge's /32 only: the rest of the subnet is unreachable from the
    // origin even though its route covers the /24.
    let other = Ipv4Addr::new(10, 0, third_octet, 11);
    assert!(
        !origin_host.ping(other),
        "{tag}: {other} answered, but only the edge is allowed"
    );
    Pair {
        origin_host,
        edge_host,
        origin_key,
        edge_ip,
    }
}

#[test]
fn origin_dialling_out_carries_pings() {
    tunnel("out", 71, true);
}

#[test]
fn edges_dialling_in_carry_pings() {
    tunnel("in", 72, false);
}

#[cfg(feature = "userspace")]
#[test]
fn builtin_interfaces_carry_pings_both_ways() {
    tunnel_between("bb-out", 73, true, [Daemon::Builtin; 2]);
    tunnel_between("bb-in", 74, false, [Daemon::Builtin; 2]);
}

#[cfg(feature = "userspace")]
#[test]
fn the_builtin_interface_and_wireguard_go_understand_each_other() {
    tunnel_between("bg-out", 75, true, [Daemon::Builtin, Daemon::WireguardGo]);
    tunnel_between("gb-out", 76, true, [Daemon::WireguardGo, Daemon::Builtin]);
    tunnel_between("bg-in", 77, false, [Daemon::Builtin, Daemon::WireguardGo]);
}

/// Deleting the interface ends its daemon, which removes its control socket.
#[cfg(feature = "userspace")]
#[test]
fn the_builtin_daemon_exits_when_its_interface_is_deleted() {
    require_tools();
    let mut host = Node::with("bdel", "kkdel0", Daemon::Builtin);
    host.ip(&["link", "del", "kkdel0"]);
    let mut daemon = host.daemon.take().expect("started");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the daemon still runs 5 s after its interface was deleted"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the daemon exited with {status}");
}

/// A new private key on the built-in side starts a handshake at once: its peer, which still
/// holds sessions of the old key, sees the new key's handshake within a second without this
/// side sending any traffic (a keepalive would be 25 s away), and the tunnel carries pings.
#[cfg(feature = "userspace")]
#[test]
fn a_new_private_key_shakes_hands_at_once() {
    let pair = tunnel_between("bkey", 78, true, [Daemon::Builtin, Daemon::WireguardGo]);
    let edge_iface = pair.edge_host.iface.clone();
    let next = PrivateKey::generate();
    let next_public = next.public_key().to_string();
    // As a rotation does: the edge learns the next key (no addresses yet), then the origin
    // switches to it.
    pair.edge_host
        .wg(&["set", &edge_iface, "peer", &next_public]);
    let file = pair.origin_host.dir.path().join("next.key");
    write_private(&file, &next.to_base64());
    pair.origin_host.wg(&[
        "set",
        &pair.origin_host.iface,
        "private-key",
        file.to_str().unwrap(),
    ]);
    pair.edge_host.wait_for(
        Duration::from_secs(2),
        "the edge to see a handshake with the origin's new key",
        |h| h.handshakes().get(&next_public).is_some_and(|t| *t > 0),
    );
    assert_ne!(pair.origin_key.public_key().to_string(), next_public);
    // The addresses move to the new key, as the edge's settle does, and pings pass.
    pair.edge_host.wg(&[
        "set",
        &edge_iface,
        "peer",
        &pair.origin_key.public_key().to_string(),
        "remove",
        "peer",
        &next_public,
        "allowed-ips",
        &format!("{}/32", Ipv4Addr::new(10, 0, 78, 1)),
    ]);
    assert!(
        (0..3).any(|_| pair.origin_host.ping(pair.edge_ip)),
        "no ping over the tunnel after the key change"
    );
}
