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
//! No value is ever part of the script: the script reads them with `read -r` and uses
//! them quoted, and in the YAML they are double-quoted scalars. On top of that every value
//! is checked against a narrow character set, so neither YAML nor shell injection is
//! possible.

use crate::{Error, Secret};
use kokoa_core::EdgeNodeId;

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
#[derive(Debug, Clone)]
pub struct EdgeBootstrap {
    /// The control plane's public `https://` URL, e.g. `https://control.example.net`.
    pub control_plane_url: String,
    /// The edge node the VPS becomes.
    pub node_id: EdgeNodeId,
    /// The single-use enrollment token for that node.
    pub enrollment_token: Secret,
    /// Where to get the agent.
    pub agent: AgentSource,
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
/// })?;
/// assert!(user_data.expose().starts_with("#cloud-config\n"));
/// assert!(user_data.expose().contains(r#"content: "https://control.example.net\nedg_1\nkk_enr_3f2a\npackage\nkokoa-edge\n\n""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn render_user_data(bootstrap: &EdgeBootstrap) -> Result<Secret, Error> {
    let control_plane = https_url(
        "control_plane_url",
        &bootstrap.control_plane_url,
        URL_PATH_CHARS,
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
            let url = https_url("agent url", url, URL_QUERY_CHARS)?;
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
    let conf = [
        control_plane,
        bootstrap.node_id.as_str(),
        token,
        source,
        agent,
        &sha256,
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

/// Checks an `https://` URL with a host, made of ASCII letters, digits and `extra`.
fn https_url<'a>(field: &'static str, url: &'a str, extra: &[u8]) -> Result<&'a str, Error> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(Error::invalid(
            field,
            url,
            "expected an https:// URL: the VPS sends its token there",
        ));
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
    Ok(url)
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
