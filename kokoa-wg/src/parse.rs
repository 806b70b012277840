//! Reading both file formats back into the model.

use std::{
    net::IpAddr,
    num::{NonZeroU16, NonZeroU32},
};

use ipnet::IpNet;

use crate::{
    config::{Comment, Config, Format, Interface, Peer},
    endpoint::Endpoint,
    error::{Error, cut},
    key::{PresharedKey, PrivateKey, PublicKey},
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Interface,
    Peer,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    PrivateKey,
    Address,
    ListenPort,
    Mtu,
    FwMark,
    PublicKey,
    PresharedKey,
    AllowedIps,
    Endpoint,
    PersistentKeepalive,
}

/// Every key read, with its spelling in rendered files and its section. Names match without
/// regard to case, as in `wg` and `wg-quick`.
const KEYS: [(Field, &str, Kind); 10] = [
    (Field::PrivateKey, "PrivateKey", Kind::Interface),
    (Field::Address, "Address", Kind::Interface),
    (Field::ListenPort, "ListenPort", Kind::Interface),
    (Field::Mtu, "MTU", Kind::Interface),
    (Field::FwMark, "FwMark", Kind::Interface),
    (Field::PublicKey, "PublicKey", Kind::Peer),
    (Field::PresharedKey, "PresharedKey", Kind::Peer),
    (Field::AllowedIps, "AllowedIPs", Kind::Peer),
    (Field::Endpoint, "Endpoint", Kind::Peer),
    (
        Field::PersistentKeepalive,
        "PersistentKeepalive",
        Kind::Peer,
    ),
];

/// wg-quick keys that are deliberately not modelled (see [`Interface`]).
const UNSUPPORTED: [&str; 7] = [
    "DNS",
    "Table",
    "SaveConfig",
    "PreUp",
    "PostUp",
    "PreDown",
    "PostDown",
];

/// The index in [`KEYS`] of the key spelled `name`.
fn lookup(name: &str) -> Option<usize> {
    KEYS.iter()
        .position(|(_, spelling, _)| spelling.eq_ignore_ascii_case(name))
}

/// A line as it may be shown in an error: secret values replaced, and anything that looks
/// like a pasted key outside a `PublicKey` line too.
fn shown(line: &str) -> String {
    let line = line.trim();
    if let Some((name, _)) = line.split_once('=') {
        match lookup(name.trim()).map(|index| KEYS[index].0) {
            Some(Field::PrivateKey | Field::PresharedKey) => {
                return format!("{} = <redacted>", name.trim());
            }
            Some(Field::PublicKey) => return cut(line, 200),
            _ => {}
        }
    }
    redact(line)
}

/// `text` cut to 200 characters, with every run of 20 or more base64 characters (more than
/// any value but a key needs) replaced by `<redacted>`.
fn redact(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in text.chars().chain(['\n']) {
        if c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=') {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() >= 20 { "<redacted>" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    cut(&out, 200)
}

fn fail(line: usize, text: &str, problem: impl Into<String>) -> Error {
    Error::Parse {
        line,
        text: shown(text),
        problem: problem.into(),
    }
}

struct Entry<'a> {
    line: usize,
    text: &'a str,
    key: Field,
    value: &'a str,
}

impl Entry<'_> {
    fn fail(&self, problem: impl Into<String>) -> Error {
        fail(self.line, self.text, problem)
    }
}

struct Section<'a> {
    kind: Kind,
    line: usize,
    text: &'a str,
    comment: Option<Comment>,
    entries: Vec<Entry<'a>>,
    /// Bit `n` is set once key `KEYS[n]` was seen, to refuse a second value.
    seen: u16,
}

impl Config {
    /// Parses a file in `format`. Keys and section names match without regard to case; `#`
    /// starts a comment, and the first whole-line comment of a section becomes its
    /// [`comment`](Interface::comment).
    ///
    /// Stricter than the tools where they would silently pick one of two values: a single-valued
    /// key given twice, a second `[Interface]` or two peers with one public key are errors.
    /// [`Format::SetConf`] refuses the wg-quick keys, as `wg setconf` does.
    ///
    /// ```
    /// use kokoa_wg::{Config, Format};
    ///
    /// let text = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nMTU = 1420\n";
    /// let config = Config::parse(text, Format::WgQuick)?;
    /// assert_eq!(config.interface.mtu, Some(1420));
    ///
    /// let err = Config::parse(text, Format::SetConf).unwrap_err().to_string();
    /// assert_eq!(err, "line 3: `MTU` is a wg-quick key, not part of the `wg setconf` format (in `MTU = 1420`)");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(text: &str, format: Format) -> Result<Self, Error> {
        Self::parse_with(text, format, None)
    }

    /// Parses a template as [`render_template`](Config::render_template) writes it: a file
    /// without `PrivateKey`, completed with `key`, which the node that uses it holds (and
    /// which never travelled). A template that does hold a private key is refused.
    ///
    /// ```
    /// use kokoa_wg::{Config, Format, Interface, PrivateKey};
    ///
    /// let mut interface = Interface::new(PrivateKey::generate());
    /// interface.mtu = Some(1420);
    /// let template = Config::new(interface, Vec::new()).render_template(Format::WgQuick);
    /// assert!(!template.contains("PrivateKey"));
    ///
    /// let mine = PrivateKey::generate();
    /// let config = Config::parse_template(&template, Format::WgQuick, mine.clone())?;
    /// assert_eq!(config.interface.private_key, mine);
    /// assert_eq!(config.interface.mtu, Some(1420));
    ///
    /// let full = config.render(Format::WgQuick);
    /// let err = Config::parse_template(&full, Format::WgQuick, mine).unwrap_err().to_string();
    /// assert!(err.contains("a template holds no PrivateKey"), "{err}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse_template(text: &str, format: Format, key: PrivateKey) -> Result<Self, Error> {
        Self::parse_with(text, format, Some(key))
    }

    fn parse_with(text: &str, format: Format, key: Option<PrivateKey>) -> Result<Self, Error> {
        let mut key = key;
        let mut sections: Vec<Section<'_>> = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if let Some(note) = trimmed.strip_prefix('#') {
                // A comment that cannot be rendered back as one line is ignored: it is only
                // a comment.
                if let (Some(section), Ok(note)) = (sections.last_mut(), Comment::new(note)) {
                    section.comment.get_or_insert(note);
                }
                continue;
            }
            let content = trimmed.split('#').next().unwrap_or_default().trim_end();
            if content.is_empty() {
                continue;
            }
            if let Some(name) = content.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
                let kind = match name.trim() {
                    n if n.eq_ignore_ascii_case("Interface") => Kind::Interface,
                    n if n.eq_ignore_ascii_case("Peer") => Kind::Peer,
                    _ => {
                        return Err(fail(
                            line,
                            raw,
                            "unknown section; expected [Interface] or [Peer]",
                        ));
                    }
                };
                if kind == Kind::Interface && sections.iter().any(|s| s.kind == kind) {
                    return Err(fail(line, raw, "a second [Interface] section"));
                }
                sections.push(Section {
                    kind,
                    line,
                    text: raw,
                    comment: None,
                    entries: Vec::new(),
                    seen: 0,
                });
                continue;
            }
            let Some((name, value)) = content.split_once('=') else {
                return Err(fail(line, raw, "expected `Key = value` or a [Section]"));
            };
            let name = name.trim();
            let Some(index) = lookup(name) else {
                let problem = match UNSUPPORTED.iter().find(|u| u.eq_ignore_ascii_case(name)) {
                    Some(u) => format!("`{u}` is not supported by kokoa-wg"),
                    None => format!("unknown key `{}`", redact(name)),
                };
                return Err(fail(line, raw, problem));
            };
            let (key, spelling, kind) = KEYS[index];
            let Some(section) = sections.last_mut() else {
                return Err(fail(
                    line,
                    raw,
                    format!("`{spelling}` outside a section; the file starts with [Interface]"),
                ));
            };
            if section.kind != kind {
                let (want, got) = match kind {
                    Kind::Interface => ("[Interface]", "[Peer]"),
                    Kind::Peer => ("[Peer]", "[Interface]"),
                };
                return Err(fail(
                    line,
                    raw,
                    format!("`{spelling}` belongs in {want}, not {got}"),
                ));
            }
            if format == Format::SetConf && matches!(key, Field::Address | Field::Mtu) {
                return Err(fail(
                    line,
                    raw,
                    format!("`{spelling}` is a wg-quick key, not part of the `wg setconf` format"),
                ));
            }
            let bit = 1u16 << index;
            if section.seen & bit != 0 && !matches!(key, Field::Address | Field::AllowedIps) {
                return Err(fail(line, raw, format!("`{spelling}` is given twice")));
            }
            section.seen |= bit;
            section.entries.push(Entry {
                line,
                text: raw,
                key,
                value: value.trim(),
            });
        }

        let mut interface = None;
        let mut peers: Vec<(usize, Peer)> = Vec::new();
        for section in sections {
            match section.kind {
                Kind::Interface => interface = Some(build_interface(section, key.take())?),
                Kind::Peer => {
                    let (line, text) = (section.line, section.text);
                    let peer = build_peer(section)?;
                    if let Some((first, _)) =
                        peers.iter().find(|(_, p)| p.public_key == peer.public_key)
                    {
                        return Err(fail(
                            line,
                            text,
                            format!(
                                "peer {} is already defined at line {first}",
                                peer.public_key
                            ),
                        ));
                    }
                    peers.push((line, peer));
                }
            }
        }
        let interface = interface.ok_or_else(|| {
            fail(
                1,
                text.lines().next().unwrap_or_default(),
                "the file has no [Interface] section",
            )
        })?;
        Ok(Self {
            interface,
            peers: peers.into_iter().map(|(_, peer)| peer).collect(),
        })
    }
}

/// The `[Interface]` of `section`; with `given`, the section must hold no private key and
/// `given` is the interface's.
fn build_interface(section: Section<'_>, given: Option<PrivateKey>) -> Result<Interface, Error> {
    let template = given.is_some();
    let mut private_key = given;
    let mut addresses = Vec::new();
    let mut listen_port = None;
    let mut mtu = None;
    let mut fwmark = None;
    for e in &section.entries {
        let v = e.value;
        match e.key {
            Field::PrivateKey if template => {
                return Err(
                    e.fail("a template holds no PrivateKey: the node adds its own".to_owned())
                );
            }
            Field::PrivateKey => {
                private_key =
                    Some(PrivateKey::from_base64(v).map_err(|err| e.fail(err.to_string()))?);
            }
            Field::Address => addresses.extend(nets(v).map_err(|p| e.fail(p))?),
            Field::ListenPort => {
                listen_port = Some(number(v, "a port number (0-65535)").map_err(|p| e.fail(p))?)
            }
            Field::Mtu => mtu = Some(number(v, "an MTU (1-65535)").map_err(|p| e.fail(p))?),
            Field::FwMark => fwmark = NonZeroU32::new(fwmark_value(v).map_err(|p| e.fail(p))?),
            _ => unreachable!("peer keys are sorted into [Peer] sections"),
        }
    }
    let private_key = private_key
        .ok_or_else(|| fail(section.line, section.text, "[Interface] has no PrivateKey"))?;
    Ok(Interface {
        comment: section.comment,
        private_key,
        addresses,
        listen_port,
        mtu,
        fwmark,
    })
}

fn build_peer(section: Section<'_>) -> Result<Peer, Error> {
    let mut public_key = None;
    let mut preshared_key = None;
    let mut allowed_ips = Vec::new();
    let mut endpoint = None;
    let mut persistent_keepalive = None;
    for e in &section.entries {
        let v = e.value;
        let key_error = |err: Error| e.fail(err.to_string());
        match e.key {
            Field::PublicKey => public_key = Some(PublicKey::from_base64(v).map_err(key_error)?),
            Field::PresharedKey => {
                preshared_key = Some(PresharedKey::from_base64(v).map_err(key_error)?);
            }
            Field::AllowedIps => allowed_ips.extend(nets(v).map_err(|p| e.fail(p))?),
            Field::Endpoint => endpoint = Some(Endpoint::parse(v).map_err(key_error)?),
            Field::PersistentKeepalive => {
                let seconds = if v.eq_ignore_ascii_case("off") {
                    0
                } else {
                    number(v, "a number of seconds (0-65535) or `off`").map_err(|p| e.fail(p))?
                };
                persistent_keepalive = NonZeroU16::new(seconds);
            }
            _ => unreachable!("interface keys are sorted into [Interface] sections"),
        }
    }
    let public_key =
        public_key.ok_or_else(|| fail(section.line, section.text, "[Peer] has no PublicKey"))?;
    Ok(Peer {
        comment: section.comment,
        public_key,
        preshared_key,
        allowed_ips,
        endpoint,
        persistent_keepalive,
    })
}

fn number(value: &str, what: &str) -> Result<u16, String> {
    value
        .parse()
        .map_err(|_| format!("{:?} is not {what}", cut(value, 40)))
}

fn fwmark_value(value: &str) -> Result<u32, String> {
    let parsed = if value.eq_ignore_ascii_case("off") {
        Ok(0)
    } else if let Some(hex) = value.strip_prefix("0x") {
        u32::from_str_radix(hex, 16)
    } else {
        value.parse()
    };
    parsed.map_err(|_| {
        format!(
            "{:?} is not a 32-bit mark (decimal, 0x-hex or `off`)",
            cut(value, 40)
        )
    })
}

/// A comma-separated list of `address/prefix`; a bare address stands for itself alone.
fn nets(value: &str) -> Result<Vec<IpNet>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    value
        .split(',')
        .map(|item| {
            let item = item.trim();
            item.parse::<IpNet>()
                .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "{:?} is not an address or address/prefix like 10.0.1.1/24",
                        cut(item, 60)
                    )
                })
        })
        .collect()
}
