//! Where the control plane is and which token to use: flags, then the environment (both
//! handled by clap), then the configuration file.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use kokoa_agent::CaPin;
use serde::Deserialize;

use crate::error::Error;

/// The configuration file: `url`, `token` and `ca_pin`, each optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    url: Option<String>,
    token: Option<String>,
    ca_pin: Option<String>,
}

/// The control plane to talk to.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) token: String,
    /// Trust only the control plane's own CA, by this pin; `None`: the system's CAs.
    pub(crate) ca_pin: Option<CaPin>,
}

/// `$XDG_CONFIG_HOME/kokoa/config.toml`, else `~/.config/kokoa/config.toml`.
pub(crate) fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")))?;
    Some(base.join("kokoa").join("config.toml"))
}

/// Fills in what the flags and environment left out from the file at `path` (when it
/// exists; a file named explicitly must exist). Warns when the file is readable by others:
/// it holds a token.
pub(crate) fn resolve(
    url: Option<String>,
    token: Option<String>,
    ca_pin: Option<String>,
    path: Option<PathBuf>,
    explicit: bool,
) -> Result<Target, Error> {
    let file = match (&url, &token, &ca_pin, &path) {
        (Some(_), Some(_), Some(_), _) | (_, _, _, None) => File::default(),
        (_, _, _, Some(path)) => read(path, explicit)?,
    };
    let shown = path.as_deref().map_or_else(
        || "~/.config/kokoa/config.toml".into(),
        |p| p.display().to_string(),
    );
    let url = url.or(file.url).ok_or_else(|| {
        Error::Usage(format!(
            "no control plane URL: pass --url URL, set KOKOA_URL, or set `url` in {shown}"
        ))
    })?;
    let token = token.or(file.token).ok_or_else(|| {
        Error::Usage(format!(
            "no API token: pass --token TOKEN, set KOKOA_TOKEN, or set `token` in {shown}"
        ))
    })?;
    let ca_pin = ca_pin
        .or(file.ca_pin)
        .map(|pin| pin.parse::<CaPin>())
        .transpose()
        .map_err(|e| Error::Usage(e.to_string()))?;
    Ok(Target {
        url: url.trim_end_matches('/').to_owned(),
        token,
        ca_pin,
    })
}

fn read(path: &Path, explicit: bool) -> Result<File, Error> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(File::default());
        }
        Err(source) => {
            return Err(Error::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            let _ = writeln!(
                std::io::stderr(),
                "warning: {} holds an API token but has mode {mode:04o}, readable by other \
                 users; run: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
    toml::from_str(&text).map_err(|e| {
        Error::Usage(format!(
            "invalid configuration file {}: {e}",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_which_fills_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        fs::write(
            &path,
            "url = \"http://file:8080/\"\ntoken = \"kk_api_file\"\n",
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let both = resolve(
            Some("http://flag".into()),
            None,
            None,
            Some(path.clone()),
            true,
        )
        .unwrap();
        assert_eq!(
            (both.url.as_str(), both.token.as_str()),
            ("http://flag", "kk_api_file")
        );
        let file = resolve(None, None, None, Some(path.clone()), true).unwrap();
        assert_eq!(file.url, "http://file:8080");
        assert_eq!(file.ca_pin, None);

        let pin = format!("sha256:{}", "1f".repeat(32));
        fs::write(
            &path,
            format!("url = \"https://cp\"\ntoken = \"t\"\nca_pin = \"{pin}\"\n"),
        )
        .unwrap();
        let pinned = resolve(None, None, None, Some(path.clone()), true).unwrap();
        assert_eq!(pinned.ca_pin.map(|p| p.to_string()), Some(pin));
        let err = resolve(None, None, Some("sha256:12".into()), Some(path), true).unwrap_err();
        assert!(
            matches!(err, Error::Usage(_)) && err.to_string().contains("\"sha256:12\""),
            "{err}"
        );
    }

    #[test]
    fn missing_values_and_bad_files_are_usage_errors() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.toml");
        let err = resolve(None, Some("t".into()), None, Some(absent.clone()), false).unwrap_err();
        assert!(
            matches!(err, Error::Usage(_)) && err.to_string().contains("KOKOA_URL"),
            "{err}"
        );
        let err = resolve(None, None, None, Some(absent), true).unwrap_err();
        assert!(err.to_string().contains("absent.toml"), "{err}");
        let bad = dir.path().join("bad.toml");
        fs::write(&bad, "url = 3\n").unwrap();
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o600)).unwrap();
        let err = resolve(None, None, None, Some(bad), true).unwrap_err();
        assert!(
            matches!(err, Error::Usage(_)) && err.to_string().contains("bad.toml"),
            "{err}"
        );
    }
}
