//! The cloud-init user data that turns a fresh VPS into a Kokoa edge (SPEC §8.2, §12).
//!
//! The user data writes three files and runs one command:
//!
//! - `/etc/kokoa-edge/bootstrap.conf` (0600): the values, one per line;
//! - `/usr/local/sbin/kokoa-edge-bootstrap`: a fixed script that reads them, installs
//!   `wireguard-tools` and `nginx` (without recommended packages), installs the agent,
//!   runs `kokoa-edge enroll --control-plane URL` with the enrollment token, enables
//!   `kokoa-edge.service`, waits for `http://127.0.0.1/health`, then calls
//!   `POST {control plane}/api/v1/edge-nodes/{id}/ready` with the node credential;
//! - `/etc/systemd/system/kokoa-edge.service` when the agent is a downloaded binary (a
//!   package ships its own unit).
//!
//! [`EdgeBootstrap::from_user_data`] reads the values back, refusing anything that is not
//! exactly what [`render_user_data`] writes.
//!
//! No value is ever part of the script: the script reads them with `read -r` and uses
//! them quoted, and in the YAML they are double-quoted scalars. On top of that every value
//! is checked against a narrow character set, so neither YAML nor shell injection is
//! possible.

use std::net::{Ipv4Addr, Ipv6Addr};

use kokoa_core::EdgeNodeId;

use crate::{Error, Secret};

/// The script the user data installs; it takes the values file as its argument.
const BOOTSTRAP_SCRIPT: &str = include_str!("cloud_init/bootstrap.sh");

/// The systemd unit for a downloaded agent binary.
const AGENT_UNIT: &str = include_str!("cloud_init/kokoa-edge.service");

const CONF_PATH: &str = "/etc/kokoa-edge/bootstrap.conf";
const SCRIPT_PATH: &str = "/usr/local/sbin/kokoa-edge-bootstrap";
const UNIT_PATH: &str = "/etc/systemd/system/kokoa-edge.service";

/// Where the new edge gets the `kokoa-edge` agent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentSource {
    /// A static binary over HTTPS, installed as `/usr/local/bin/kokoa-edge` only if its
    /// SHA-256 matches.
    Download {
        /// `https://` URL of the binary.
        url: String,
        /// Its SHA-256, 64 hexadecimal digits.
        sha256: String,
    },
    /// A Debian package from a repository the image already knows; it must ship
    /// `kokoa-edge.service`.
    Package {
        /// The package name, e.g. `kokoa-edge`.
        name: String,
    },
}

/// What a new edge needs to join the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeBootstrap {
    /// The control plane's URL as the VPS reaches it, e.g. `https://control.example.net`.
    ///
    /// `https://`, since the VPS sends its enrollment token and then its credential there.
    /// Plain `http://` is accepted only when the host is an IP address in a loopback or
    /// private range — `127.0.0.0/8`, `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`,
    /// `100.64.0.0/10` (RFC 6598), `::1` or `fd00::/8` — written as an IP literal
    /// (`http://10.99.0.1:8080`): a control plane on a lab network or a private link, where
    /// no name can be redirected and no traffic leaves the network. The agent's download
    /// stays `https://` only.
    pub control_plane_url: String,
    /// The edge node the VPS becomes.
    pub node_id: EdgeNodeId,
    /// The single-use enrollment token for that node.
    pub enrollment_token: Secret,
    /// Where to get the agent.
    pub agent: AgentSource,
    /// The pin of the control plane's CA (`sha256:` and 64 hexadecimal digits), which
    /// `kokoa-edge enroll --ca-pin` trusts alone; `None`: the system's CAs. Needs an
    /// `https://` control plane URL.
    pub ca_pin: Option<String>,
}

impl EdgeBootstrap {
    /// Reads the values back out of user data made by [`render_user_data`]: its inverse,
    /// for a provider that applies the user data itself (the lab provider, feature `lab`).
    ///
    /// Only exactly what `render_user_data` writes is accepted: the values are read from
    /// `bootstrap.conf`, checked as `render_user_data` checks them, and the user data must
    /// be byte for byte what it renders for them, so nothing can be added to it or changed
    /// in it. Values come back as rendered: the URL without a trailing `/`, the SHA-256 in
    /// lower case.
    ///
    /// ```
    /// use kokoa_core::EdgeNodeId;
    /// use kokoa_provision::{AgentSource, EdgeBootstrap, Secret, render_user_data};
    ///
    /// let bootstrap = EdgeBootstrap {
    ///     control_plane_url: "http://10.99.0.1:8080".into(),
    ///     node_id: EdgeNodeId::parse("edg_1")?,
    ///     enrollment_token: Secret::new("kk_enr_3f2a"),
    ///     agent: AgentSource::Package { name: "kokoa-edge".into() },
    ///     ca_pin: None,
    /// };
    /// let user_data = render_user_data(&bootstrap)?;
    /// assert_eq!(EdgeBootstrap::from_user_data(&user_data)?, bootstrap);
    ///
    /// let edited = Secret::new(format!("{}  - [reboot]\n", user_data.expose()));
    /// assert!(EdgeBootstrap::from_user_data(&edited).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_user_data(user_data: &Secret) -> Result<Self, Error> {
        let text = user_data.expose();
        // The user data holds the token: a message shows only its length.
        let refuse =
            |reason| Error::invalid("user_data", &format!("<{} bytes>", text.len()), reason);
        // The entry of bootstrap.conf up to its content.
        let marker = file(CONF_PATH, "0600", "");
        let marker = marker.trim_end_matches('\n');
        let start = text.find(marker).ok_or_else(|| {
            refuse("it writes no bootstrap.conf: not user data from render_user_data")
        })? + marker.len();
        let line = text[start..].split('\n').next().unwrap_or_default();
        let conf: String = serde_json::from_str(line)
            .map_err(|_| refuse("its bootstrap.conf is not one double-quoted scalar"))?;
        let values: Vec<&str> = conf.split_terminator('\n').collect();
        let [control_plane, node_id, token, source, agent, sha256, ca_pin] = values[..] else {
            return Err(refuse(
                "its bootstrap.conf does not hold exactly seven lines",
            ));
        };
        if !conf.ends_with('\n') {
            return Err(refuse("its bootstrap.conf does not end with a newline"));
        }
        let agent = match (source, sha256) {
            ("download", _) => AgentSource::Download {
                url: agent.to_owned(),
                sha256: sha256.to_owned(),
            },
            ("package", "") => AgentSource::Package {
                name: agent.to_owned(),
            },
            _ => {
                return Err(refuse(
                    "its agent source is neither a download nor a package",
                ));
            }
        };
        let bootstrap = Self {
            control_plane_url: control_plane.to_owned(),
            node_id: EdgeNodeId::parse(node_id)
                .map_err(|_| refuse("its edge node id is not valid"))?,
            enrollment_token: Secret::new(token),
            agent,
            ca_pin: Some(ca_pin)
                .filter(|pin| !pin.is_empty())
                .map(str::to_owned),
        };
        if render_user_data(&bootstrap)? != *user_data {
            return Err(refuse(
                "it is not what render_user_data writes for the values it holds: it was changed",
            ));
        }
        Ok(bootstrap)
    }
}

/// Renders the `#cloud-config` user data for `bootstrap`, after checking every value.
///
/// The result holds the enrollment token, hence a [`Secret`].
///
/// ```
/// use kokoa_core::EdgeNodeId;
/// use kokoa_provision::{AgentSource, EdgeBootstrap, Secret, render_user_data};
///
/// let user_data = render_user_data(&EdgeBootstrap {
///     control_plane_url: "https://control.example.net".into(),
///     node_id: EdgeNodeId::parse("edg_1")?,
///     enrollment_token: Secret::new("kk_enr_3f2a"),
///     agent: AgentSource::Package { name: "kokoa-edge".into() },
///     ca_pin: None,
/// })?;
/// assert!(user_data.expose().starts_with("#cloud-config\n"));
/// assert!(user_data.expose().contains(r#"content: "https://control.example.net\nedg_1\nkk_enr_3f2a\npackage\nkokoa-edge\n\n\n""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn render_user_data(bootstrap: &EdgeBootstrap) -> Result<Secret, Error> {
    let control_plane = checked_url(
        "control_plane_url",
        &bootstrap.control_plane_url,
        URL_PATH_CHARS,
        PlainHttp::PrivateAddress,
    )?
    .trim_end_matches('/');
    let token = bootstrap.enrollment_token.expose();
    let token_ok = (1..=512).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
    if !token_ok {
        return Err(Error::invalid(
            "enrollment_token",
            "<hidden>",
            "expected 1-512 characters of A-Z, a-z, 0-9 and -._~+/=",
        ));
    }
    let (source, agent, sha256, unit) = match &bootstrap.agent {
        AgentSource::Download { url, sha256 } => {
            let url = checked_url("agent url", url, URL_QUERY_CHARS, PlainHttp::Never)?;
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::invalid(
                    "agent sha256",
                    sha256,
                    "expected 64 hexadecimal digits",
                ));
            }
            (
                "download",
                url,
                sha256.to_ascii_lowercase(),
                Some(AGENT_UNIT),
            )
        }
        AgentSource::Package { name } => {
            let ok = (2..=100).contains(&name.len())
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b));
            if !ok {
                return Err(Error::invalid(
                    "agent package",
                    name,
                    "expected a Debian package name: a-z, 0-9, '+', '.', '-'",
                ));
            }
            ("package", name.as_str(), String::new(), None)
        }
    };
    let ca_pin = match &bootstrap.ca_pin {
        Some(pin) => {
            let digits = pin.strip_prefix("sha256:").unwrap_or_default();
            if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::invalid(
                    "ca_pin",
                    pin,
                    "expected \"sha256:\" and 64 hexadecimal digits",
                ));
            }
            if !control_plane.starts_with("https://") {
                return Err(Error::invalid(
                    "control_plane_url",
                    control_plane,
                    "a CA pin is for an https:// control plane",
                ));
            }
            format!("sha256:{}", digits.to_ascii_lowercase())
        }
        None => String::new(),
    };
    let conf = [
        control_plane,
        bootstrap.node_id.as_str(),
        token,
        source,
        agent,
        &sha256,
        &ca_pin,
    ]
    .map(|line| format!("{line}\n"))
    .concat();

    let mut out = String::from("#cloud-config\n");
    out += &format!(
        "# Kokoa Proxy edge {}: see {SCRIPT_PATH} for what this does.\n",
        bootstrap.node_id
    );
    out += "write_files:\n";
    out += &file(CONF_PATH, "0600", &quoted(&conf));
    out += &file(SCRIPT_PATH, "0755", &literal(BOOTSTRAP_SCRIPT));
    if let Some(unit) = unit {
        out += &file(UNIT_PATH, "0644", &literal(unit));
    }
    out += "runcmd:\n";
    out += &format!("  - [{}, {}]\n", quoted(SCRIPT_PATH), quoted(CONF_PATH));
    Ok(Secret::new(out))
}

/// Characters allowed in the control plane's URL: no query, since paths are appended.
const URL_PATH_CHARS: &[u8] = b"-._~:/%[]";
/// Characters allowed in a download URL, which may carry a (signed) query.
const URL_QUERY_CHARS: &[u8] = b"-._~:/%[]?=&+";

/// Whether a URL may be plain `http://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PlainHttp {
    /// Never: `https://` only.
    Never,
    /// When the host is an IP literal in a loopback or private range.
    PrivateAddress,
}

/// Checks a URL with a host, made of ASCII letters, digits and `extra`: `https://`, or
/// `http://` where `plain` allows it.
fn checked_url<'a>(
    field: &'static str,
    url: &'a str,
    extra: &[u8],
    plain: PlainHttp,
) -> Result<&'a str, Error> {
    let (rest, https) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (rest, true),
        (None, Some(rest)) if plain == PlainHttp::PrivateAddress => (rest, false),
        _ => {
            return Err(Error::invalid(
                field,
                url,
                match plain {
                    PlainHttp::Never => "expected an https:// URL",
                    PlainHttp::PrivateAddress => {
                        "expected an https:// URL: the VPS sends its token there"
                    }
                },
            ));
        }
    };
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    if host.is_empty() || url.len() > 2048 {
        return Err(Error::invalid(
            field,
            url,
            "expected https://HOST[:PORT][/PATH]",
        ));
    }
    if !url
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        return Err(Error::invalid(
            field,
            url,
            "it holds a character outside A-Z, a-z, 0-9 and the URL punctuation allowed here",
        ));
    }
    if !https && !is_private_ip_literal(host) {
        return Err(Error::invalid(
            field,
            url,
            "plain http:// is accepted only for an IP address in a loopback or private range \
             (127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, ::1, \
             fd00::/8), optionally with a port; use https:// otherwise: the VPS sends its \
             token there",
        ));
    }
    Ok(url)
}

/// Whether `authority` (`HOST[:PORT]`) is an IP literal in a loopback or private range.
///
/// An IPv4 address must be in its usual dotted form: `curl` reads `010.0.0.1` as octal, so a
/// form this parser and the VPS's tools could read differently is refused.
fn is_private_ip_literal(authority: &str) -> bool {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((host, after)) => (host, after),
            None => return false,
        },
        None => match authority.find(':') {
            Some(at) => authority.split_at(at),
            None => (authority, ""),
        },
    };
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => {
            !digits.is_empty()
                && digits.len() <= 5
                && digits.bytes().all(|b| b.is_ascii_digit())
                && digits.parse::<u16>().is_ok_and(|p| p != 0)
        }
    };
    let private = if authority.starts_with('[') {
        host.parse::<Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.segments()[0] & 0xff00 == 0xfd00)
    } else {
        host.parse::<Ipv4Addr>().is_ok_and(|ip| {
            let [a, b, ..] = ip.octets();
            ip.to_string() == host
                && (ip.is_loopback() || ip.is_private() || (a == 100 && (64..128).contains(&b)))
        })
    };
    port_ok && private
}

/// One `write_files` entry; `content` is already a YAML scalar.
fn file(path: &str, permissions: &str, content: &str) -> String {
    format!(
        "  - path: {}\n    owner: root:root\n    permissions: {}\n    content: {content}\n",
        quoted(path),
        quoted(permissions)
    )
}

/// A double-quoted YAML scalar. JSON string syntax is a subset of YAML's double-quoted
/// style, so serde_json's escaping (quotes, backslashes, control characters) is exact.
fn quoted(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

/// A literal block scalar (`|`) of our own fixed text, indented under `content:`.
fn literal(text: &str) -> String {
    let mut out = String::from("|\n");
    for line in text.lines() {
        if !line.is_empty() {
            out += "      ";
            out += line;
        }
        out += "\n";
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests;
