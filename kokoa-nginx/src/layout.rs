//! The files of a standalone nginx prefix and its main configuration.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use crate::Error;

/// The five `*_temp_path` directives and their directory names under `temp/`: the compiled-in
/// defaults point into `/var/lib/nginx`, which a standalone prefix must not share.
const TEMP_PATHS: [(&str, &str); 5] = [
    ("client_body_temp_path", "client_body"),
    ("proxy_temp_path", "proxy"),
    ("fastcgi_temp_path", "fastcgi"),
    ("uwsgi_temp_path", "uwsgi"),
    ("scgi_temp_path", "scgi"),
];

/// Where everything of one nginx instance lives: a prefix directory run with
/// `nginx -p DIR -c DIR/nginx.conf`, and the worker user.
///
/// | path | what |
/// |---|---|
/// | `nginx.conf` | main configuration ([`Layout::render_main`]) |
/// | `kokoa-site.conf` | maps and servers ([`EdgeSite::render`](crate::EdgeSite::render)) |
/// | `certs/NAME.crt`, `certs/NAME.key` | certificates, by [`CertName`](crate::CertName) |
/// | `acme-challenge/TOKEN` | ACME HTTP-01 answers, served at `/.well-known/acme-challenge/TOKEN` |
/// | `health` | the body of `GET /health` |
/// | `kokoa-site.hash` | the hash of the live configuration and a digest of its certificate files' identity |
/// | `logs/`, `temp/`, `nginx.pid` | nginx's own state |
///
/// The prefix is written into the configuration, so it must be absolute, UTF-8 and free of
/// characters that mean something to nginx (quotes, `\`, `$`, `;`, `{`, `}`, `#`, whitespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: PathBuf,
    worker_user: Option<String>,
}

impl Layout {
    /// A layout under `prefix`, with nginx's default worker user.
    pub fn new(prefix: impl Into<PathBuf>) -> Result<Self, Error> {
        let prefix = prefix.into();
        check_path(&prefix)?;
        Ok(Self {
            prefix,
            worker_user: None,
        })
    }

    /// Runs the worker processes as `user` (nginx's `user` directive, effective when nginx is
    /// started as root).
    ///
    /// Certificates beyond the first 250 are chosen per handshake, so the **worker** reads
    /// those key files: they must be readable by this user (or its group). Without this call the worker runs as
    /// nginx's compiled-in default (`nobody` on Debian).
    pub fn with_worker_user(mut self, user: &str) -> Result<Self, Error> {
        let mut chars = user.chars();
        let plain = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
            && user.len() <= 32;
        if !plain {
            return Err(Error::InvalidUser(user.chars().take(300).collect()));
        }
        self.worker_user = Some(user.to_owned());
        Ok(self)
    }

    /// The prefix directory.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    /// `nginx.conf`: the main configuration file.
    pub fn main_config(&self) -> PathBuf {
        self.prefix.join("nginx.conf")
    }

    /// `kokoa-site.conf`: the maps and servers, included by the main configuration.
    pub fn site_config(&self) -> PathBuf {
        self.prefix.join("kokoa-site.conf")
    }

    /// `certs/`: holds `NAME.crt` and `NAME.key` for every certificate name.
    pub fn certs_dir(&self) -> PathBuf {
        self.prefix.join("certs")
    }

    /// `certs/NAME.crt` and `certs/NAME.key`.
    pub fn certificate_files(&self, name: &crate::CertName) -> (PathBuf, PathBuf) {
        let dir = self.certs_dir();
        (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        )
    }

    /// `acme-challenge/`: a file `TOKEN` here is served on the HTTP port at
    /// `/.well-known/acme-challenge/TOKEN`.
    pub fn acme_challenge_dir(&self) -> PathBuf {
        self.prefix.join("acme-challenge")
    }

    /// `health`: its content is the body of `GET /health` (200, `text/plain`). Changing it
    /// needs no reload.
    pub fn health_file(&self) -> PathBuf {
        self.prefix.join("health")
    }

    /// `nginx.pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.prefix.join("nginx.pid")
    }

    /// `logs/`: `error.log` and `access.log`.
    pub fn logs_dir(&self) -> PathBuf {
        self.prefix.join("logs")
    }

    /// Every directory nginx expects to exist.
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        let temp = self.prefix.join("temp");
        let mut dirs = vec![self.certs_dir(), self.acme_challenge_dir(), self.logs_dir()];
        dirs.extend(TEMP_PATHS.iter().map(|(_, name)| temp.join(name)));
        dirs
    }

    /// Renders the main configuration: worker user, workers that a reload replaced closing
    /// what is still open after 240 s (`worker_shutdown_timeout`: a WebSocket outlives a
    /// few reloads, and old workers do not pile up over many), pid file, error log, the
    /// five temporary
    /// paths inside the prefix, the access log (format `kokoa`: `combined` followed by
    /// `"$host" $request_time $upstream_response_time`), and an `include` of `site_config`
    /// in the `http` block.
    ///
    /// `site_config` is normally [`Layout::site_config`]; a candidate is tested by including
    /// the candidate file instead.
    pub fn render_main(&self, site_config: &Path) -> Result<String, Error> {
        check_path(site_config)?;
        let q = |p: &Path| quoted(p);
        let mut out = String::from(
            "# Main configuration rendered by kokoa-nginx; overwritten on every apply.\n",
        );
        if let Some(user) = &self.worker_user {
            let _ = writeln!(out, "user {user};");
        }
        let _ = write!(
            out,
            "worker_processes auto;\n\
             # Workers a reload replaced close what is still open after this (WebSockets, long downloads).\n\
             worker_shutdown_timeout 240s;\npid {};\nerror_log {};\n\n\
             events {{\n    worker_connections 1024;\n}}\n\nhttp {{\n",
            q(&self.pid_file()),
            q(&self.logs_dir().join("error.log")),
        );
        let temp = self.prefix.join("temp");
        for (directive, name) in TEMP_PATHS {
            let _ = writeln!(out, "    {directive} {};", q(&temp.join(name)));
        }
        // `combined` and then the name asked for, the time taken and the time the upstreams
        // took (`-` without one), which the agent counts requests by host name with.
        let _ = write!(
            out,
            "    log_format kokoa '$remote_addr - $remote_user [$time_local] \"$request\" \
             $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" \"$host\" \
             $request_time $upstream_response_time';\n    access_log {} kokoa;\n    \
             include {};\n}}\n",
            q(&self.logs_dir().join("access.log")),
            q(site_config),
        );
        Ok(out)
    }
}

/// `path` between double quotes. Only call on paths that passed [`check_path`] (every path
/// built from a checked prefix and fixed names does).
pub(crate) fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

fn check_path(path: &Path) -> Result<(), Error> {
    let fail = |reason| Error::UnsafePath {
        path: path.to_owned(),
        reason,
    };
    let Some(text) = path.to_str() else {
        return Err(fail("it is not UTF-8"));
    };
    if !path.is_absolute() {
        return Err(fail("it must be absolute"));
    }
    if text.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '"' | '\'' | '\\' | '$' | ';' | '{' | '}' | '#')
    }) {
        return Err(fail(
            "it holds whitespace, a control character or one of \" ' \\ $ ; { } #",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_paths_nginx_would_misread() {
        for bad in [
            "relative/dir",
            "/a b",
            "/a$b",
            "/a;b",
            "/a\"b",
            "/a{b",
            "/a#b",
            "/a\nb",
        ] {
            let err = Layout::new(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{:?}", Path::new(bad))), "{err}");
        }
        assert!(Layout::new("/srv/kokoa-nginx_1.0").is_ok());
    }

    #[test]
    fn rejects_odd_user_names() {
        let layout = Layout::new("/srv/k").unwrap();
        for bad in ["", "root nogroup", "a;b", "1abc", "x\"y"] {
            assert!(layout.clone().with_worker_user(bad).is_err(), "{bad:?}");
        }
        assert!(layout.with_worker_user("www-data").is_ok());
    }

    #[test]
    fn main_keeps_every_path_in_the_prefix() {
        let layout = Layout::new("/srv/k")
            .unwrap()
            .with_worker_user("kokoa")
            .unwrap();
        let main = layout.render_main(&layout.site_config()).unwrap();
        assert!(main.starts_with("# Main configuration"));
        assert!(main.contains("\nuser kokoa;\n"), "{main}");
        assert!(
            main.contains("include \"/srv/k/kokoa-site.conf\";"),
            "{main}"
        );
        for line in main.lines().filter(|l| l.contains('/')) {
            assert!(
                line.contains("\"/srv/k/"),
                "path outside the prefix: {line}"
            );
        }
        for (directive, _) in TEMP_PATHS {
            assert_eq!(main.matches(directive).count(), 1, "{directive}");
        }
        assert!(
            !Layout::new("/srv/k")
                .unwrap()
                .render_main(&layout.site_config())
                .unwrap()
                .lines()
                .any(|l| l.starts_with("user "))
        );
    }
}
