//! Renders the WireGuard files of one origin and two edges into a directory, as the control
//! plane does when an origin is created:
//!
//! ```text
//! cargo run -p render-origin-configs -- /tmp/kokoa-wg-example
//! ```
//!
//! writes `origin/wg0.conf` and, for each edge, `<edge>/<interface>.conf`, each ready for
//! `wg-quick up <file>`. The files hold private keys, so they are created readable by their
//! owner only.
#![allow(clippy::print_stdout)] // a command-line example reports what it wrote

use std::{
    error::Error,
    fs,
    io::Write as _,
    net::Ipv4Addr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use kokoa_core::Hostname;
use kokoa_wg::{
    BASE_LISTEN_PORT, Direction, Edge, Format, Host, InterfaceConfig, Origin, PrivateKey, Topology,
};

fn main() -> Result<(), Box<dyn Error>> {
    let out: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: render-origin-configs OUT_DIR")?;

    // What the control plane knows about the origin: its subnet (10.0.X.0/24, the origin
    // is .1) and its key pair.
    let subnet: Ipv4Net = "10.0.1.0/24".parse()?;
    let origin_key = PrivateKey::generate();
    let origin = Origin::new(
        "origin-id-1",
        "home-server",
        subnet,
        Ipv4Addr::new(10, 0, 1, 1),
        origin_key.public_key(),
    );

    // Each edge gets its own key for this origin's interface, an address in the origin's
    // subnet (.10, .11, ...) and the origin's port.
    let edges = [
        (
            "sgp1-01",
            Host::try_from(Hostname::parse("edge-sgp1-01.example.net")?)?,
            Ipv4Addr::new(10, 0, 1, 10),
        ),
        (
            "fra1-01",
            Host::parse("203.0.113.11")?,
            Ipv4Addr::new(10, 0, 1, 11),
        ),
    ];
    let mut edge_keys = Vec::new();
    let mut members = Vec::new();
    for (name, host, tunnel_ip) in edges {
        let key = PrivateKey::generate();
        members.push(Edge::new(
            name,
            key.public_key(),
            host,
            tunnel_ip,
            BASE_LISTEN_PORT,
        ));
        edge_keys.push((name, key));
    }
    let topology = Topology::new(origin, members, Direction::OriginDialsOut)?;

    write(&out.join("origin"), &topology.origin_config(&origin_key)?)?;
    for (name, key) in &edge_keys {
        write(&out.join(name), &topology.edge_config(name, key)?)?;
    }
    Ok(())
}

fn write(dir: &Path, file: &InterfaceConfig) -> Result<(), Box<dyn Error>> {
    fs::create_dir_all(dir)?;
    let path = dir.join(file.file_name());
    // Removed first so the 0600 mode below applies even when the file was there before.
    if path.exists() {
        fs::remove_file(&path)?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?
        .write_all(file.config.render(Format::WgQuick).as_bytes())?;
    let peers = file.config.peers.len();
    println!(
        "{} (interface {}, {peers} peer(s))",
        path.display(),
        file.name
    );
    Ok(())
}
