//! The configuration model and its rendering.

use std::{
    fmt::{self, Write as _},
    num::{NonZeroU16, NonZeroU32},
};

use ipnet::IpNet;

use crate::{
    endpoint::Endpoint,
    error::{Error, cut},
    key::{PresharedKey, PrivateKey, PublicKey},
};

/// The two file formats of the WireGuard tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// What `wg-quick up FILE` reads: also `Address` and `MTU`.
    WgQuick,
    /// What `wg setconf` / `wg syncconf` read and `wg showconf` prints: WireGuard settings only.
    SetConf,
}

/// One WireGuard interface and its peers: a `wg0.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The `[Interface]` section.
    pub interface: Interface,
    /// The `[Peer]` sections, in file order.
    pub peers: Vec<Peer>,
}

/// The `[Interface]` section.
///
/// `DNS`, `Table`, `SaveConfig` and the `PreUp`/`PostUp`/`PreDown`/`PostDown` hooks are not
/// modelled: a tunnel to an edge must not rewrite the host's resolver or routing table, and
/// shell hooks in a generated file would be a way to run commands on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Interface {
    /// Rendered as `# text` right below `[Interface]`.
    pub comment: Option<Comment>,
    /// `PrivateKey`.
    pub private_key: PrivateKey,
    /// `Address` (wg-quick only): the interface's own addresses with their prefix.
    pub addresses: Vec<IpNet>,
    /// `ListenPort`; without it the interface listens on a random port.
    pub listen_port: Option<u16>,
    /// `MTU` (wg-quick only); without it wg-quick derives one from the default route.
    pub mtu: Option<u16>,
    /// `FwMark` put on the tunnel's own UDP packets (`off` is `None`).
    pub fwmark: Option<NonZeroU32>,
}

impl Interface {
    /// An interface with only a private key.
    pub fn new(private_key: PrivateKey) -> Self {
        Self {
            comment: None,
            private_key,
            addresses: Vec::new(),
            listen_port: None,
            mtu: None,
            fwmark: None,
        }
    }
}

/// A `[Peer]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Peer {
    /// Rendered as `# text` right below `[Peer]`.
    pub comment: Option<Comment>,
    /// `PublicKey`.
    pub public_key: PublicKey,
    /// `PresharedKey`.
    pub preshared_key: Option<PresharedKey>,
    /// `AllowedIPs`: the source addresses accepted from this peer and routed to it.
    pub allowed_ips: Vec<IpNet>,
    /// `Endpoint`; without it the peer must dial in first.
    pub endpoint: Option<Endpoint>,
    /// `PersistentKeepalive` in seconds (`off` is `None`).
    pub persistent_keepalive: Option<NonZeroU16>,
}

impl Peer {
    /// A peer with only a public key.
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            comment: None,
            public_key,
            preshared_key: None,
            allowed_ips: Vec::new(),
            endpoint: None,
            persistent_keepalive: None,
        }
    }
}

impl Config {
    /// A configuration of `interface` and `peers`.
    pub fn new(interface: Interface, peers: Vec<Peer>) -> Self {
        Self { interface, peers }
    }

    /// Renders the file in `format`. [`Format::SetConf`] leaves out `Address` and `MTU`, as
    /// `wg-quick strip` does.
    ///
    /// The text holds the private key: write it to a file only its owner can read.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out, format, true);
        out
    }

    /// Renders the file without the interface's `PrivateKey`: a template for a node that
    /// holds its key itself and completes it with
    /// [`parse_template`](Config::parse_template). The rest is as [`render`](Self::render)
    /// writes it (preshared keys included).
    pub fn render_template(&self, format: Format) -> String {
        let mut out = String::new();
        let _ = self.write(&mut out, format, false);
        out
    }

    fn write(&self, out: &mut String, format: Format, private_key: bool) -> fmt::Result {
        let i = &self.interface;
        out.push_str("[Interface]\n");
        write_comment(out, i.comment.as_ref())?;
        if private_key {
            i.private_key
                .with_base64(|key| writeln!(out, "PrivateKey = {key}"))?;
        }
        if format == Format::WgQuick {
            write_list(out, "Address", &i.addresses)?;
        }
        if let Some(port) = i.listen_port {
            writeln!(out, "ListenPort = {port}")?;
        }
        if let (Format::WgQuick, Some(mtu)) = (format, i.mtu) {
            writeln!(out, "MTU = {mtu}")?;
        }
        if let Some(mark) = i.fwmark {
            writeln!(out, "FwMark = {mark:#x}")?;
        }
        for peer in &self.peers {
            out.push_str("\n[Peer]\n");
            write_comment(out, peer.comment.as_ref())?;
            writeln!(out, "PublicKey = {}", peer.public_key)?;
            if let Some(psk) = &peer.preshared_key {
                psk.with_base64(|key| writeln!(out, "PresharedKey = {key}"))?;
            }
            write_list(out, "AllowedIPs", &peer.allowed_ips)?;
            if let Some(endpoint) = &peer.endpoint {
                writeln!(out, "Endpoint = {endpoint}")?;
            }
            if let Some(seconds) = peer.persistent_keepalive {
                writeln!(out, "PersistentKeepalive = {seconds}")?;
            }
        }
        Ok(())
    }
}

fn write_comment(out: &mut String, comment: Option<&Comment>) -> fmt::Result {
    match comment {
        Some(comment) => writeln!(out, "# {}", comment.0),
        None => Ok(()),
    }
}

fn write_list(out: &mut String, key: &str, nets: &[IpNet]) -> fmt::Result {
    if nets.is_empty() {
        return Ok(());
    }
    write!(out, "{key} = ")?;
    for (n, net) in nets.iter().enumerate() {
        let sep = if n == 0 { "" } else { ", " };
        write!(out, "{sep}{net}")?;
    }
    out.push('\n');
    Ok(())
}

/// A one-line note kept with a section, such as `origin: home-server`.
///
/// Always exactly one line: text with a line break or any other control character is
/// rejected, so a name that comes from a user can never add a line (a key, a section) to a
/// rendered file. Surrounding whitespace is trimmed.
///
/// ```
/// use kokoa_wg::Comment;
///
/// assert_eq!(Comment::new("  origin: home-server ")?.as_str(), "origin: home-server");
/// assert!(Comment::new("x\nPostUp = rm -rf /").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Comment(String);

impl Comment {
    /// Validates `text` as a comment.
    pub fn new(text: &str) -> Result<Self, Error> {
        let fail = |problem| Error::InvalidComment {
            text: cut(text, 200),
            problem,
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(fail("it is empty"));
        }
        // U+2028 and U+2029 are not control characters, but some readers treat them as line
        // breaks.
        if trimmed
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
        {
            return Err(fail(
                "it contains a line break or another control character",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The text, without the leading `#`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Comment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
