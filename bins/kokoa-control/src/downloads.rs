//! The agents this control plane hands out, so that nodes need no package repository: the
//! files of one directory (`downloads_dir`; the Debian package puts `kokoa-edge` and
//! `kokoa-origin` in `/usr/share/kokoa/downloads`), served as `GET /downloads/NAME` with
//! their SHA-256 in `GET /downloads/SHA256SUMS`.
//!
//! The directory is read once at start: a name, its size and its SHA-256 are fixed for the
//! life of the process, so what a cloud-init or a bundle says about a file stays true.
//! Only plain files with names of `A-Z a-z 0-9 . _ -` (not starting with `.`) are served.
//!
//! Nothing here is secret and no credential is asked: what makes a download safe is the
//! SHA-256 the node was given over a trusted channel (the user data, the bundle), which it
//! checks before running anything.

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
};

use axum::{
    extract::{Path as UrlPath, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest as _, Sha256};

use crate::{Error, state::AppState};

/// Where the Debian package puts the agents.
pub const PACKAGED_DIR: &str = "/usr/share/kokoa/downloads";

/// One file that is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// Its SHA-256, 64 lower-case hexadecimal digits.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The files of the downloads directory, as they were at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Downloads {
    dir: PathBuf,
    files: BTreeMap<String, Download>,
}

impl Downloads {
    /// Reads `dir`: every plain file with a servable name, hashed.
    pub fn scan(dir: &Path) -> Result<Self, Error> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io {
                what: "cannot read the downloads directory's",
                path,
                source,
            }
        };
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !servable(&name) || !entry.file_type().map_err(io(dir))?.is_file() {
                continue;
            }
            let path = entry.path();
            let mut file = std::fs::File::open(&path).map_err(io(&path))?;
            let mut hasher = Sha256::new();
            let mut buffer = vec![0; 1 << 16];
            let mut size = 0;
            loop {
                let read = file.read(&mut buffer).map_err(io(&path))?;
                if read == 0 {
                    break;
                }
                hasher.update(&buffer[..read]);
                size += read as u64;
            }
            let sha256 = hex::encode(hasher.finalize());
            files.insert(name, Download { sha256, size });
        }
        Ok(Self {
            dir: dir.to_owned(),
            files,
        })
    }

    /// The file called `name`, if served.
    pub fn get(&self, name: &str) -> Option<&Download> {
        self.files.get(name)
    }

    /// `SHA256SUMS`: a line `HASH  NAME` per file, by name.
    pub fn sha256sums(&self) -> String {
        self.files
            .iter()
            .map(|(name, file)| format!("{}  {name}\n", file.sha256))
            .collect()
    }

    /// How many files are served.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is served.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Whether `name` may be served: `A-Z a-z 0-9 . _ -`, not starting with `.`.
fn servable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name != "SHA256SUMS"
}

fn not_found(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("no download called {name:?}; GET /downloads/SHA256SUMS lists them\n"),
    )
        .into_response()
}

/// `GET /downloads/SHA256SUMS`.
pub(crate) async fn sums(State(state): State<AppState>) -> Response {
    let text = state
        .downloads()
        .map(Downloads::sha256sums)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

/// `GET /downloads/{name}`.
pub(crate) async fn file(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Response {
    let Some(downloads) = state.downloads() else {
        return not_found(&name);
    };
    let Some(file) = downloads.get(&name) else {
        return not_found(&name);
    };
    let path = downloads.dir.join(&name);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "a download cannot be read");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the file cannot be read now\n",
            )
                .into_response();
        }
    };
    // Changed on disk since start: serving it would contradict the hash handed out.
    if bytes.len() as u64 != file.size || hex::encode(Sha256::digest(&bytes)) != file.sha256 {
        tracing::error!(path = %path.display(), "a download changed since the control plane started; restart it to serve the new file");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the file changed since the control plane started\n",
        )
            .into_response();
    }
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&file.sha256) {
        headers.insert("x-content-sha256", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_files_with_plain_names_are_served_with_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kokoa-edge"), b"edge").unwrap();
        std::fs::write(dir.path().join(".hidden"), b"x").unwrap();
        std::fs::write(dir.path().join("with space"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let downloads = Downloads::scan(dir.path()).unwrap();
        assert_eq!(downloads.len(), 1);
        let edge = downloads.get("kokoa-edge").unwrap();
        assert_eq!(edge.size, 4);
        assert_eq!(edge.sha256, hex::encode(Sha256::digest(b"edge")));
        assert_eq!(
            downloads.sha256sums(),
            format!("{}  kokoa-edge\n", edge.sha256)
        );
        for name in ["..", "../etc/passwd", "SHA256SUMS", "", "a/b"] {
            assert!(!servable(name), "{name}");
        }
        let err = Downloads::scan(&dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent"), "{err}");
    }
}
