//! The origin's download, `origin-config.tar.gz` (SPEC §6): `wireguard/wg0.conf`,
//! `nginx/nginx.conf`, `scripts/install.sh` and `credentials.json`.
//!
//! The nginx file is the origin-side local proxy, [`kokoa_nginx::OriginProxy`].

use std::io::Write as _;

use flate2::{Compression, write::GzEncoder};
use kokoa_core::{OriginId, Timestamp};
use serde::{Deserialize, Serialize};

/// The origin installer, shipped as `scripts/install.sh`.
pub const INSTALL_SH: &str = include_str!("install-origin.sh");

/// The origin agent's systemd unit, shipped as `systemd/kokoa-origin.service`: the packaged
/// unit itself.
pub const ORIGIN_UNIT: &str = include_str!("../../../packaging/systemd/kokoa-origin.service");

/// `credentials.json`: what the origin agent needs to enroll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Base URL of the control plane.
    pub control_plane_url: String,
    /// The origin's id.
    pub origin_id: OriginId,
    /// Single-use enrollment token, exchanged at `POST /api/v1/enroll` for the origin's
    /// long-lived credential.
    pub enrollment_token: String,
    /// The pin of the control plane's CA, when it serves a certificate of its own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pin: Option<kokoa_agent::CaPin>,
}

/// Packs the bundle into a gzip-compressed tar; secrets get mode 0600, the script 0755.
/// With `agent` (the URL of `kokoa-origin` at this control plane and its SHA-256), also
/// `agent.conf`, from which `install.sh` installs the agent when the machine has none.
pub fn origin_archive(
    wg0_conf: &str,
    nginx_conf: &str,
    credentials: &Credentials,
    agent: Option<(&str, &str)>,
    now: Timestamp,
) -> std::io::Result<Vec<u8>> {
    let credentials = serde_json::to_vec_pretty(credentials)?;
    let agent_conf = agent.map(|(url, sha256)| format!("{url}\n{sha256}\n"));
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mtime = u64::try_from(now.as_unix()).unwrap_or(0);
    let mut files = vec![
        ("wireguard/wg0.conf", 0o600, wg0_conf.as_bytes()),
        ("nginx/nginx.conf", 0o644, nginx_conf.as_bytes()),
        ("scripts/install.sh", 0o755, INSTALL_SH.as_bytes()),
        (
            "systemd/kokoa-origin.service",
            0o644,
            ORIGIN_UNIT.as_bytes(),
        ),
        ("credentials.json", 0o600, &credentials),
    ];
    if let Some(conf) = &agent_conf {
        files.push(("agent.conf", 0o644, conf.as_bytes()));
    }
    for (path, mode, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_mtime(mtime);
        tar.append_data(&mut header, path, bytes)?;
    }
    let mut gz = tar.into_inner()?;
    gz.flush()?;
    gz.finish()
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn archive_holds_its_files_with_their_modes() {
        let creds = Credentials {
            control_plane_url: "https://cp.example.com".into(),
            origin_id: OriginId::parse("org_1").unwrap(),
            enrollment_token: "kk_enr_x".into(),
            ca_pin: None,
        };
        let url = "https://cp.example.com/downloads/kokoa-origin";
        let bytes = origin_archive(
            "[Interface]\n",
            "server {}\n",
            &creds,
            Some((url, "ab12")),
            Timestamp::now(),
        )
        .unwrap();
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut seen = Vec::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mode = entry.header().mode().unwrap();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            if path == "credentials.json" {
                assert_eq!(serde_json::from_str::<Credentials>(&text).unwrap(), creds);
            }
            if path == "agent.conf" {
                assert_eq!(text, format!("{url}\nab12\n"));
            }
            if path == "systemd/kokoa-origin.service" {
                assert_eq!(text, ORIGIN_UNIT);
            }
            seen.push((path, mode));
        }
        assert_eq!(
            seen,
            [
                ("wireguard/wg0.conf".to_owned(), 0o600),
                ("nginx/nginx.conf".to_owned(), 0o644),
                ("scripts/install.sh".to_owned(), 0o755),
                ("systemd/kokoa-origin.service".to_owned(), 0o644),
                ("credentials.json".to_owned(), 0o600),
                ("agent.conf".to_owned(), 0o644),
            ]
        );
    }

    #[test]
    fn install_script_is_valid_posix_sh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install.sh");
        std::fs::write(&path, INSTALL_SH).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(INSTALL_SH.starts_with("#!/bin/sh\n"));
    }
}
