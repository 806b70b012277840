//! The second isolation layer (SPEC §10.5): nftables rules that let through the WireGuard
//! interface only what the edges may send.
//!
//! WireGuard's `AllowedIPs` keeps strangers out of the tunnel, and the [`Forwarder`]
//! listens only on the declared ports. But every other service the host exposes on
//! `0.0.0.0` (a database, an admin page, a container's published port) is reachable from
//! the edges through the origin's tunnel address. These rules drop it: on the tunnel
//! interface only the edges' tunnel addresses get in, and only to the tunnel address's
//! declared ports, [`APPLICATION_PORT`] and ping; answers to the origin's own connections
//! come back as established traffic.
//!
//! The rules live in their own table, `table inet kokoa`, so the host's other rules are
//! never touched. Each change replaces the whole table in one `nft -f` transaction: a
//! ruleset nft refuses leaves the previous one working.
//!
//! The chain hooks `prerouting` at the mangle priority, after connection tracking and before
//! destination NAT (Docker's published ports): it sees the address and port the edge asked
//! for, and drops what is refused before it is delivered or forwarded anywhere.
//!
//! **Forwarding in the kernel.** With [`Rules::redirecting`] the table also sends the
//! edges' connections to the declared ports on to `127.0.0.1` (`dnat`, same port): the
//! kernel forwards them and the [`Forwarder`] never sees them (it keeps listening, and
//! serves whenever the redirect is not installed). Loopback destinations arriving from an
//! interface are dropped by Linux unless the interface's `route_localnet` is set, and with
//! it set anything addressed to `127.0.0.0/8` through the tunnel would be delivered: so
//! [`Firewall::apply`] sets it only *after* nft installed the filter above (which drops
//! every destination but the tunnel address), and clears it when redirecting stops, before
//! the rules go. IPv4 only: Linux cannot redirect IPv6 to `::1`.
//!
//! [`Forwarder`]: crate::Forwarder

use std::{
    collections::BTreeSet,
    fmt::{self, Write as _},
    io::{self, Write as _},
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::{Command, Stdio},
};

use kokoa_wg::InterfaceName;
use serde::{Serialize, Serializer};

use crate::{APPLICATION_PORT, Error};

/// The nftables table holding the rules (family `inet`).
pub const TABLE: &str = "kokoa";

/// What the firewall admits through the tunnel interface, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    interface: InterfaceName,
    tunnel_ip: IpAddr,
    edges: BTreeSet<IpAddr>,
    ports: BTreeSet<u16>,
    redirect: Option<Ipv4Addr>,
}

impl Rules {
    /// Rules for `interface` admitting `edges` to `tunnel_ip` on `ports` (and on
    /// [`APPLICATION_PORT`]).
    ///
    /// Fails when an edge's address is not of the tunnel address's family (it could never
    /// reach it) or when a port is 0.
    pub fn new(
        interface: InterfaceName,
        tunnel_ip: IpAddr,
        edges: BTreeSet<IpAddr>,
        mut ports: BTreeSet<u16>,
    ) -> Result<Self, Error> {
        if let Some(edge) = edges.iter().find(|e| e.is_ipv4() != tunnel_ip.is_ipv4()) {
            return Err(Error::Firewall {
                message: format!(
                    "edge address {edge} and tunnel address {tunnel_ip} are of different IP \
                     versions"
                ),
            });
        }
        if ports.contains(&0) {
            return Err(Error::Firewall {
                message: "port 0 cannot be admitted".to_owned(),
            });
        }
        ports.insert(APPLICATION_PORT);
        Ok(Self {
            interface,
            tunnel_ip,
            edges,
            ports,
            redirect: None,
        })
    }

    /// The same rules, also redirecting the edges' connections to the declared ports (not
    /// [`APPLICATION_PORT`]) to `target`, port unchanged: forwarding in the kernel.
    ///
    /// Fails for an IPv6 tunnel address (Linux redirects IPv6 to no loopback address).
    pub fn redirecting(mut self, target: Ipv4Addr) -> Result<Self, Error> {
        if !self.tunnel_ip.is_ipv4() {
            return Err(Error::Firewall {
                message: format!(
                    "cannot redirect to {target} from the IPv6 tunnel address {}",
                    self.tunnel_ip
                ),
            });
        }
        self.redirect = Some(target);
        Ok(self)
    }

    /// Where the declared ports are redirected to, if they are.
    pub fn redirect(&self) -> Option<Ipv4Addr> {
        self.redirect
    }

    /// The ports admitted: the declared ones and [`APPLICATION_PORT`].
    pub fn ports(&self) -> &BTreeSet<u16> {
        &self.ports
    }

    /// The `nft -f` input: creates the table if it is missing, deletes it and creates it
    /// again with the rules, all in one transaction.
    pub fn render(&self) -> String {
        let (family, ping) = match self.tunnel_ip {
            IpAddr::V4(_) => ("ip", "icmp type echo-request"),
            IpAddr::V6(_) => ("ip6", "icmpv6 type echo-request"),
        };
        let interface = self.interface.as_str();
        let mut out = String::new();
        let mut line = |text: &str| {
            out.push_str(text);
            out.push('\n');
        };
        line(&format!(
            "# Kokoa Proxy origin agent: what may arrive through the WireGuard interface \
             {interface}."
        ));
        line("# Replaced as a whole at each configuration change; do not edit.");
        line(&format!("table inet {TABLE}"));
        line(&format!("delete table inet {TABLE}"));
        line(&format!("table inet {TABLE} {{"));
        line("\tchain tunnel_in {");
        line("\t\ttype filter hook prerouting priority mangle; policy accept;");
        line(&format!("\t\tiifname != \"{interface}\" accept"));
        line("\t\tct state established,related accept");
        if !self.edges.is_empty() {
            let edges = set(&self.edges);
            let ports = set(&self.ports);
            let to = format!("{family} saddr {edges} {family} daddr {}", self.tunnel_ip);
            line(&format!("\t\t{to} tcp dport {ports} accept"));
            line(&format!("\t\t{to} {ping} accept"));
        }
        line("\t\tdrop");
        line("\t}");
        let redirected: BTreeSet<u16> = self
            .ports
            .iter()
            .copied()
            .filter(|p| *p != APPLICATION_PORT)
            .collect();
        if let Some(target) = self.redirect
            && !self.edges.is_empty()
            && !redirected.is_empty()
        {
            line("\tchain tunnel_redirect {");
            line("\t\ttype nat hook prerouting priority dstnat; policy accept;");
            line(&format!(
                "\t\tiifname \"{interface}\" ip saddr {} ip daddr {} tcp dport {} dnat ip to {target}",
                set(&self.edges),
                self.tunnel_ip,
                set(&redirected)
            ));
            line("\t}");
        }
        line("}");
        out
    }
}

impl fmt::Display for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// An nftables anonymous set, `{ a, b }`; never given an empty set.
fn set<T: fmt::Display>(items: &BTreeSet<T>) -> String {
    let mut out = String::from("{ ");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{item}");
    }
    out.push_str(" }");
    out
}

/// Installs and removes the rules with the `nft` program.
#[derive(Debug, Clone)]
pub struct Firewall {
    command: Vec<String>,
}

impl Default for Firewall {
    fn default() -> Self {
        Self::new()
    }
}

impl Firewall {
    /// The `nft` found on `PATH`.
    pub fn new() -> Self {
        Self::with_command(vec!["nft".to_owned()])
    }

    /// `command` runs nft (its arguments follow), e.g. `["ip", "netns", "exec", "NS",
    /// "nft"]` to work inside a network namespace.
    ///
    /// # Panics
    /// When `command` is empty.
    pub fn with_command(command: Vec<String>) -> Self {
        assert!(!command.is_empty(), "the nft command is empty");
        Self { command }
    }

    /// Replaces the table with `rules`, atomically: when nft refuses, the rules installed
    /// before stay. Then sets the interface's `route_localnet` when the rules redirect to
    /// a loopback address, and clears it otherwise (see the module's documentation). When
    /// it cannot be set, the rules are installed again without the redirect, and the
    /// forwarder serves (logged as a warning).
    pub fn apply(&self, rules: &Rules) -> Result<(), Error> {
        let local = rules.redirect.is_some_and(|target| target.is_loopback());
        if !local {
            // Cleared before the rules that guard it change.
            route_localnet(&rules.interface, false)?;
        }
        self.run(&["-f", "-"], Some(&rules.render()))?;
        if local && let Err(e) = route_localnet(&rules.interface, true) {
            tracing::warn!(error = %e, "not forwarding in the kernel: the forwarder serves");
            let plain = Rules {
                redirect: None,
                ..rules.clone()
            };
            self.run(&["-f", "-"], Some(&plain.render()))?;
        }
        Ok(())
    }

    /// Whether the interface's `route_localnet` is as `rules` need it. An interface made
    /// again (its daemon died and the tunnel came back) starts with it clear, and the
    /// redirected connections would be dropped: the agent checks this at every service
    /// check round and applies the rules again when it is not.
    pub fn in_place(&self, rules: &Rules) -> bool {
        let wanted = rules.redirect.is_some_and(|target| target.is_loopback());
        let set = std::fs::read_to_string(localnet_path(&rules.interface))
            .is_ok_and(|value| value.trim() == "1");
        set == wanted
    }

    /// Clears `interface`'s `route_localnet`, then deletes the table; nothing to do when
    /// there is none.
    pub fn remove(&self, interface: &InterfaceName) -> Result<(), Error> {
        route_localnet(interface, false)?;
        match self.run(&["delete", "table", "inet", TABLE], None) {
            Err(Error::Firewall { message }) if message.contains("No such file or directory") => {
                Ok(())
            }
            done => done,
        }
    }

    fn run(&self, args: &[&str], input: Option<&str>) -> Result<(), Error> {
        let program = &self.command[0];
        let mut command = Command::new(program);
        command
            .args(&self.command[1..])
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| Error::Firewall {
            message: if e.kind() == io::ErrorKind::NotFound {
                format!(
                    "{program} not found: install the nftables package, or run with \
                     --no-firewall"
                )
            } else {
                format!("cannot run {program}: {e}")
            },
        })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            // A failed write shows as nft's own error below.
            let _ = stdin.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| Error::Firewall {
            message: format!("cannot run {program}: {e}"),
        })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let hint = if stderr.contains("Operation not permitted") {
            " (the agent needs CAP_NET_ADMIN, or run with --no-firewall)"
        } else {
            ""
        };
        Err(Error::Firewall {
            message: format!(
                "{} {} failed ({}): {stderr}{hint}",
                self.command.join(" "),
                args.join(" "),
                out.status
            ),
        })
    }
}

/// Sets or clears `interface`'s `net.ipv4.conf.<interface>.route_localnet` (in this
/// thread's network namespace). Clearing it on an interface that does not exist, or where it
/// is clear, changes nothing.
fn route_localnet(interface: &InterfaceName, on: bool) -> Result<(), Error> {
    let path = localnet_path(interface);
    let fail = |e: io::Error| Error::Firewall {
        message: format!(
            "cannot {} {}: {e}",
            if on { "set" } else { "clear" },
            path.display()
        ),
    };
    if !on {
        match std::fs::read_to_string(&path) {
            Ok(value) if value.trim() == "0" => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(fail(e)),
        }
    }
    std::fs::write(&path, if on { "1\n" } else { "0\n" }).map_err(fail)
}

fn localnet_path(interface: &InterfaceName) -> PathBuf {
    PathBuf::from("/proc/sys/net/ipv4/conf")
        .join(interface.as_str())
        .join("route_localnet")
}

/// The firewall's state, as heartbeats report it: `"on"`, `"off"` (turned off with
/// `--no-firewall`, or no configuration applied yet), or `"failed: <reason>"`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FirewallState {
    /// Not installed: turned off, or nothing applied yet.
    #[default]
    Off,
    /// The rules of the live configuration are installed.
    On,
    /// The rules could not be installed; the agent keeps forwarding without them.
    Failed(String),
}

impl fmt::Display for FirewallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::On => f.write_str("on"),
            Self::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

impl Serialize for FirewallState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests;
