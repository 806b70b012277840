//! The PostgreSQL database `check --chaos` runs its two control planes on: a database of
//! the lab's own in a server someone else started (`scripts/start-postgres`), and that
//! server stopped and started again for the "database down" step.
//!
//! Everything goes through `psql` and `pg_ctl`, as a person would do it. The server is
//! found from its URL alone: `SHOW data_directory` names its data directory, whose
//! `postmaster.opts` holds the command line it was started with — what `pg_ctl restart`
//! uses too — so it comes back with the same port, socket directory and listen address.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde::{Deserialize, Serialize};

use crate::Error;

/// How to install the client and server programs.
const INSTALL: &str = "apt-get install -y --no-install-recommends postgresql, then \
                       start a server with scripts/start-postgres";

/// A database the lab created in a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    /// A URL of the server with a database that is always there (`…/postgres`).
    pub admin_url: String,
    /// The database's name.
    pub name: String,
}

impl Database {
    /// The lab's database for this process: `kokoa_lab_<pid>` next to `admin_url`'s.
    pub fn for_this_process(admin_url: &str) -> Self {
        Self {
            admin_url: admin_url.to_owned(),
            name: format!("kokoa_lab_{}", std::process::id()),
        }
    }

    /// The URL of this database.
    pub fn url(&self) -> Result<String, Error> {
        with_database(&self.admin_url, &self.name)
    }

    /// Creates it (it must not exist).
    pub async fn create(&self) -> Result<(), Error> {
        let admin_url = self.admin_url.clone();
        let sql = format!("CREATE DATABASE \"{}\"", self.name);
        tokio::task::spawn_blocking(move || psql_blocking(&admin_url, &sql))
            .await
            .map_err(|e| Error::Command {
                command: "psql".into(),
                message: e.to_string(),
            })?
            .map(drop)
    }

    /// Drops it, ending the sessions still connected; a missing database is fine.
    pub fn drop_blocking(&self) -> Result<(), Error> {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        psql_blocking(&self.admin_url, &sql).map(drop)
    }
}

/// `url` with its database (the path) replaced by `name`; the query is kept.
pub fn with_database(url: &str, name: &str) -> Result<String, Error> {
    let bad = || Error::Command {
        command: "postgres URL".into(),
        message: format!(
            "{url:?} is not a URL like postgres://postgres@127.0.0.1:5433/postgres \
             (scripts/start-postgres prints one)"
        ),
    };
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(bad)?;
    let scheme = &url[..url.len() - rest.len()];
    let (authority, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = authority.split_once('/').map_or(authority, |(a, _)| a);
    if authority.is_empty() {
        return Err(bad());
    }
    let mut out = format!("{scheme}{authority}/{name}");
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

/// Runs `sql` with `psql` against `url`: its output, unaligned, without headers.
pub async fn psql(url: &str, sql: &str) -> Result<String, Error> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || psql_blocking(&url, &sql))
        .await
        .map_err(|e| Error::Command {
            command: "psql".into(),
            message: e.to_string(),
        })?
}

fn psql_blocking(url: &str, sql: &str) -> Result<String, Error> {
    run_blocking(
        Command::new("psql").args([
            url,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ]),
        &format!("psql -c {sql:?}"),
    )
}

/// A PostgreSQL server on this machine, as `pg_ctl` controls it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The directory of its programs (`postgres`, `pg_ctl`).
    pub bin_dir: PathBuf,
    /// The options it was started with (`-D` left out), from `postmaster.opts`.
    pub options: Vec<String>,
    /// The owner of the data directory: the server runs as this user.
    pub user: String,
}

impl Server {
    /// The server `admin_url` reaches (it must run on this machine).
    pub async fn locate(admin_url: &str) -> Result<Self, Error> {
        let data_dir = PathBuf::from(psql(admin_url, "SHOW data_directory").await?.trim());
        let opts_path = data_dir.join("postmaster.opts");
        let opts = std::fs::read_to_string(&opts_path).map_err(|e| Error::Command {
            command: format!("read {}", opts_path.display()),
            message: format!(
                "{e}; the PostgreSQL server of the lab must run on this machine ({INSTALL})"
            ),
        })?;
        let words = split_opts(&opts);
        let program = words.first().ok_or_else(|| Error::Command {
            command: format!("read {}", opts_path.display()),
            message: "it is empty".into(),
        })?;
        let bin_dir = Path::new(program)
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default();
        let mut options = Vec::new();
        let mut rest = words[1..].iter();
        while let Some(word) = rest.next() {
            if word == "-D" {
                rest.next();
            } else {
                options.push(word.clone());
            }
        }
        let user = owner(&data_dir)?;
        Ok(Self {
            data_dir,
            bin_dir,
            options,
            user,
        })
    }

    /// `pg_ctl stop -m fast`: sessions end, the server is down when this returns.
    pub fn stop_blocking(&self) -> Result<(), Error> {
        let data = self.data_dir.display().to_string();
        self.pg_ctl(&["-D", &data, "-w", "-t", "60", "stop", "-m", "fast"])
    }

    /// `pg_ctl start` with the options it had; returns once it accepts connections.
    /// A server that already runs is left alone.
    pub fn start_blocking(&self) -> Result<(), Error> {
        let data = self.data_dir.display().to_string();
        if self.pg_ctl(&["-D", &data, "status"]).is_ok() {
            return Ok(());
        }
        // Next to the data directory, where scripts/start-postgres writes it too.
        let log = self
            .data_dir
            .parent()
            .unwrap_or(&self.data_dir)
            .join("log")
            .display()
            .to_string();
        let options = self
            .options
            .iter()
            .map(|o| format!("'{}'", o.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ");
        self.pg_ctl(&[
            "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
        ])
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), Error> {
        let pg_ctl = self.bin_dir.join("pg_ctl").display().to_string();
        let mut command = Command::new("runuser");
        command.args(["-u", &self.user, "--", &pg_ctl]).args(args);
        run_blocking(&mut command, &format!("pg_ctl {}", args.join(" "))).map(drop)
    }
}

/// The user owning `path`.
fn owner(path: &Path) -> Result<String, Error> {
    use std::os::unix::fs::MetadataExt as _;
    let uid = std::fs::metadata(path)
        .map_err(Error::io("read", path))?
        .uid();
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(Error::io("read", "/etc/passwd"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.get(2)?.parse::<u32>().ok()? == uid).then(|| fields[0].to_owned())
        })
        .ok_or_else(|| Error::Command {
            command: format!("find the owner of {}", path.display()),
            message: format!("no user has uid {uid}"),
        })
}

/// The words of a `postmaster.opts` line: `/usr/lib/postgresql/15/bin/postgres "-D" "/x"`.
fn split_opts(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in text.trim().chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

fn run_blocking(command: &mut Command, what: &str) -> Result<String, Error> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Command {
            command: what.to_owned(),
            message: format!("{e} ({INSTALL})"),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: what.to_owned(),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        let url = "postgres://postgres@127.0.0.1:5433/postgres";
        assert_eq!(
            with_database(url, "kokoa_lab_7").unwrap(),
            "postgres://postgres@127.0.0.1:5433/kokoa_lab_7"
        );
        assert_eq!(
            with_database("postgresql://u@h:1?sslmode=disable", "x").unwrap(),
            "postgresql://u@h:1/x?sslmode=disable"
        );
        assert!(with_database("mysql://h/db", "x").is_err());
        assert!(with_database("postgres:///db", "x").is_err());
    }

    #[test]
    fn postmaster_opts_split_into_words() {
        let line = "/usr/lib/postgresql/15/bin/postgres \"-D\" \"/tmp/kokoa-pg/data\" \"-p\" \
                    \"5433\" \"-c\" \"listen_addresses=127.0.0.1\"\n";
        assert_eq!(
            split_opts(line),
            [
                "/usr/lib/postgresql/15/bin/postgres",
                "-D",
                "/tmp/kokoa-pg/data",
                "-p",
                "5433",
                "-c",
                "listen_addresses=127.0.0.1"
            ]
        );
        assert_eq!(split_opts("a \"b c\" \"\""), ["a", "b c", ""]);
    }
}
