//! Safe apply and process control of one nginx instance.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

use crate::{EdgeSite, Error, Layout};

/// How often [`NginxInstance::start`] and [`NginxInstance::stop`] look at the pid file.
const POLL: Duration = Duration::from_millis(20);
/// How long starting may take before [`Error::Timeout`].
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful stop may take (open connections are finished first).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a graceful stop may take before the remaining connections are closed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the master may take to start the workers of a new configuration.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of [`NginxInstance::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Applied {
    /// The configuration hash equals the live one: nothing was written or reloaded.
    Unchanged {
        /// The hash of the live configuration.
        hash: String,
    },
    /// The new configuration passed `nginx -t` and is live; a running nginx was reloaded and
    /// its workers of the new configuration run (the old ones accept nothing more).
    Updated {
        /// The hash of the new live configuration.
        hash: String,
        /// Whether a running nginx was reloaded (`false`: it was not running).
        reloaded: bool,
    },
}

/// One nginx instance over a [`Layout`]: renders, checks and activates configurations, and
/// starts or stops the server.
///
/// Everything is blocking (`std::process` and `std::fs`): call it from a thread of its own,
/// or `spawn_blocking`, in async code. Apply to one prefix from one caller at a time; the
/// files of two concurrent applies would mix.
#[derive(Debug, Clone)]
pub struct NginxInstance {
    binary: PathBuf,
    layout: Layout,
}

impl NginxInstance {
    /// An instance run by the nginx binary `binary` (e.g. `/usr/sbin/nginx`) over `layout`.
    pub fn new(binary: impl Into<PathBuf>, layout: Layout) -> Self {
        Self {
            binary: binary.into(),
            layout,
        }
    }

    /// The files of this instance.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Makes `site` the live configuration, safely.
    ///
    /// 1. Renders it; when its hash (SHA-256 of the rendered files) is the hash of the live
    ///    configuration, returns [`Applied::Unchanged`] and does nothing else.
    /// 2. Checks that every certificate it names has both files in
    ///    [`Layout::certs_dir`]: nginx loads them only at handshake time, so `nginx -t`
    ///    cannot catch a missing one.
    /// 3. Writes candidate files next to the live ones (`*.new`) and runs `nginx -t` on a
    ///    full candidate configuration that includes the candidate site.
    /// 4. Swaps the candidates in by renaming and, when nginx is running, reloads it.
    ///
    /// On any failure the previous files are put back, so the last good configuration keeps
    /// serving, and the error carries nginx's message. Creates the prefix directories and a
    /// `health` file answering `ok` when they are missing.
    ///
    /// A reload returns once the master runs workers with the new configuration and the
    /// old ones accept nothing more, so a request made after this returns sees it. A
    /// failure only the master sees while reloading (a listen address already taken) leaves
    /// the old workers running: after 10 s that is an [`Error::Timeout`] and the previous
    /// files are put back (details in `logs/error.log`).
    pub fn apply(&self, site: &EdgeSite) -> Result<Applied, Error> {
        self.apply_inner(site, None)
    }

    /// Like [`apply`](Self::apply), but compares `hash` (e.g. the control plane's
    /// `config_hash`) instead of the hash of the rendered files. The caller's hash must then
    /// cover everything in `site`, listen ports and rate limits included.
    pub fn apply_with_hash(&self, site: &EdgeSite, hash: &str) -> Result<Applied, Error> {
        self.apply_inner(site, Some(hash))
    }

    fn apply_inner(&self, site: &EdgeSite, hash: Option<&str>) -> Result<Applied, Error> {
        let layout = &self.layout;
        let site_text = site.render(layout)?;
        let main_text = layout.render_main(&layout.site_config())?;
        let hash = match hash {
            Some(h) => h.to_owned(),
            None => {
                let mut digest = Sha256::new();
                digest.update(&main_text);
                digest.update([0]);
                digest.update(&site_text);
                hex::encode(digest.finalize())
            }
        };
        let hash_file = layout.prefix().join("kokoa-site.hash");
        // nginx loads certificate files at reload, so new files under the same names (a
        // renewal) need a reload although the configuration text is the same.
        let stamp = format!("{hash}\ncertificates {}\n", certificate_stamp(layout, site));
        let live = [layout.main_config(), layout.site_config()];
        if fs::read_to_string(&hash_file).is_ok_and(|h| h == stamp)
            && live.iter().all(|p| p.exists())
        {
            return Ok(Applied::Unchanged { hash });
        }

        self.prepare()?;
        for name in site.certificate_names() {
            let (crt, key) = layout.certificate_files(name);
            if let Some(path) = [crt, key].into_iter().find(|p| !p.is_file()) {
                return Err(Error::MissingCertificate {
                    name: name.clone(),
                    path,
                });
            }
        }

        let [main, site_file] = &live;
        let main_new = with_suffix(main, "new");
        let site_new = with_suffix(site_file, "new");
        write_file(&site_new, site_text.as_bytes())?;
        write_file(&main_new, layout.render_main(&site_new)?.as_bytes())?;
        if let Err(e) = self.run(&["-t", "-q", "-c"], &main_new) {
            let _ = fs::remove_file(&site_new);
            let _ = fs::remove_file(&main_new);
            return Err(match e {
                Error::Command { message, .. } => Error::ConfigRejected {
                    config: main_new,
                    message,
                },
                other => other,
            });
        }
        // The tested main file includes the candidate site; the live one the live site.
        write_file(&main_new, main_text.as_bytes())?;

        // The hash is swapped with the files, so it always describes the live ones.
        let hash_new = with_suffix(&hash_file, "new");
        write_file(&hash_new, stamp.as_bytes())?;

        let swap = Swap::new(&[
            (&site_new, site_file),
            (&main_new, main),
            (&hash_new, &hash_file),
        ])?;
        let master = self.pid();
        let reloaded = master.is_some();
        if let Some(master) = master {
            let before = workers(master);
            if let Err(e) = self
                .run(&["-s", "reload", "-c"], main)
                .and_then(|()| self.wait_reloaded(master, &before))
            {
                swap.roll_back();
                return Err(e);
            }
        }
        swap.commit();
        Ok(Applied::Updated { hash, reloaded })
    }

    /// Starts nginx with the live configuration and waits (up to 5 s) for its pid file.
    /// Apply a site first.
    pub fn start(&self) -> Result<(), Error> {
        self.prepare()?;
        let main = self.layout.main_config();
        self.run(&["-c"], &main)?;
        self.wait_for(START_TIMEOUT, "nginx did not write its pid file", || {
            self.is_running()
        })
    }

    /// Stops nginx gracefully (`-s quit`: open requests are finished); connections still
    /// open after 5 s (a client keeping one alive, a long download) are closed with a fast
    /// shutdown (`-s stop`). Waits up to 15 s more for it to exit. Does nothing when it is
    /// not running.
    pub fn stop(&self) -> Result<(), Error> {
        if !self.is_running() {
            return Ok(());
        }
        let main = self.layout.main_config();
        self.run(&["-s", "quit", "-c"], &main)?;
        if self
            .wait_for(STOP_GRACE, "nginx is still finishing requests", || {
                !self.is_running()
            })
            .is_ok()
        {
            return Ok(());
        }
        // The master may have exited between the check and the signal: that is a stop.
        if self.is_running() {
            let _ = self.run(&["-s", "stop", "-c"], &main);
        }
        self.wait_for(STOP_TIMEOUT, "nginx is still running", || {
            !self.is_running()
        })
    }

    /// The master process id, when nginx is running (Linux: its pid file names a live
    /// process).
    pub fn pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.layout.pid_file()).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        Path::new("/proc")
            .join(pid.to_string())
            .exists()
            .then_some(pid)
    }

    /// Whether nginx is running, see [`pid`](Self::pid).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Replaces the body of `GET /health` (atomically; no reload needed).
    pub fn set_health_body(&self, body: &[u8]) -> Result<(), Error> {
        write_file(&self.layout.health_file(), body)
    }

    /// Creates the directories nginx needs and the default `health` file.
    fn prepare(&self) -> Result<(), Error> {
        for dir in self.layout.dirs() {
            fs::create_dir_all(&dir).map_err(Error::io("create directory", dir))?;
        }
        let health = self.layout.health_file();
        if !health.exists() {
            write_file(&health, b"ok\n")?;
        }
        Ok(())
    }

    /// Runs `nginx -p PREFIX ARGS CONFIG`; a failure carries what nginx printed.
    fn run(&self, args: &[&str], config: &Path) -> Result<(), Error> {
        let output = Command::new(&self.binary)
            .arg("-p")
            .arg(self.layout.prefix())
            .args(args)
            .arg(config)
            .output()
            .map_err(|source| Error::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        Err(Error::Command {
            command: format!(
                "{} -p {} {} {}",
                self.binary.display(),
                self.layout.prefix().display(),
                args.join(" "),
                config.display()
            ),
            message: if stderr.is_empty() {
                format!("nginx exited with {}", output.status)
            } else {
                stderr
            },
        })
    }

    /// Waits until the master serves the new configuration: a worker that was not among
    /// `before` runs, and every one of `before` has stopped accepting (it finishes its open
    /// requests). A master that could not load the configuration keeps its old workers:
    /// that is a failure, and the previous configuration keeps serving.
    fn wait_reloaded(&self, master: u32, before: &[Worker]) -> Result<(), Error> {
        self.wait_for(
            RELOAD_TIMEOUT,
            "nginx did not start workers with the new configuration (see its error log)",
            || {
                let now = workers(master);
                let fresh = now
                    .iter()
                    .any(|w| !w.shutting_down && before.iter().all(|b| b.pid != w.pid));
                let old_done = before.iter().all(|b| {
                    now.iter()
                        .find(|w| w.pid == b.pid)
                        .is_none_or(|w| w.shutting_down)
                });
                fresh && old_done
            },
        )
    }

    fn wait_for(&self, limit: Duration, what: &str, done: impl Fn() -> bool) -> Result<(), Error> {
        let start = Instant::now();
        while !done() {
            if start.elapsed() > limit {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            thread::sleep(POLL);
        }
        Ok(())
    }
}

/// A worker process of an nginx master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Worker {
    pid: u32,
    /// It was told to quit: it accepts nothing new and ends with its last request.
    shutting_down: bool,
}

/// The worker processes of `master`, from `/proc` (children whose title is
/// `nginx: worker process`, `... is shutting down` once told to quit).
fn workers(master: u32) -> Vec<Worker> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            // `pid (comm) state ppid ...`: the name may hold spaces, the fields after the
            // last ')' do not.
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            if ppid != master {
                return None;
            }
            let title = fs::read(entry.path().join("cmdline")).ok()?;
            let title = String::from_utf8_lossy(&title);
            title.contains("worker process").then(|| Worker {
                pid,
                shutting_down: title.contains("shutting down"),
            })
        })
        .collect()
}

/// Live files replaced by candidates, with the previous versions kept as `*.old` until
/// [`commit`](Self::commit) or put back by [`roll_back`](Self::roll_back).
struct Swap<'a> {
    /// (live file, whether a previous version was kept)
    files: Vec<(&'a Path, bool)>,
}

impl<'a> Swap<'a> {
    /// Renames each candidate over its live file, keeping the live one as `*.old`. When a
    /// rename fails, what was already swapped is put back.
    fn new(pairs: &[(&Path, &'a Path)]) -> Result<Self, Error> {
        let mut swap = Swap { files: Vec::new() };
        for (candidate, live) in pairs {
            let old = with_suffix(live, "old");
            let kept = live.exists();
            let result = if kept {
                // A hard link keeps the live file in place: nginx never sees it missing.
                let _ = fs::remove_file(&old);
                fs::hard_link(live, &old).map_err(Error::io("keep a copy of", *live))
            } else {
                Ok(())
            };
            let result = result
                .and_then(|()| fs::rename(candidate, live).map_err(Error::io("activate", *live)));
            if let Err(e) = result {
                swap.roll_back();
                return Err(e);
            }
            swap.files.push((live, kept));
        }
        Ok(swap)
    }

    /// Drops the kept previous versions.
    fn commit(self) {
        for (live, kept) in self.files {
            if kept {
                let _ = fs::remove_file(with_suffix(live, "old"));
            }
        }
    }

    /// Puts the previous versions back (best effort: this runs while another error is
    /// being reported).
    fn roll_back(self) {
        for (live, kept) in self.files.into_iter().rev() {
            let _ = if kept {
                fs::rename(with_suffix(live, "old"), live)
            } else {
                fs::remove_file(live)
            };
        }
    }
}

/// A digest of the identity of every certificate file `site` names (device, inode, size,
/// modification time): it changes when a file is replaced, as the edge agent does by
/// renaming, or rewritten. Reading only metadata keeps an apply of thousands of
/// certificates cheap.
fn certificate_stamp(layout: &Layout, site: &EdgeSite) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let mut digest = Sha256::new();
    for name in site.certificate_names() {
        let (crt, key) = layout.certificate_files(name);
        for path in [crt, key] {
            let line = match fs::metadata(&path) {
                Ok(m) => format!(
                    "{} {} {} {} {}.{}\n",
                    path.display(),
                    m.dev(),
                    m.ino(),
                    m.len(),
                    m.mtime(),
                    m.mtime_nsec()
                ),
                Err(_) => format!("{} missing\n", path.display()),
            };
            digest.update(line);
        }
    }
    hex::encode(digest.finalize())
}

/// `path` with `.suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `contents` to a temporary file beside `path`, flushes it to disk and renames it over
/// `path`, so a reader sees the old or the new content, never a part.
fn write_file(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let tmp = with_suffix(path, "tmp");
    let result = fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("write", path)(e)
    })
}
