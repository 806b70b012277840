//! The process supervisor: starts the lab's long-running programs as children, each with
//! its own log file, records them in the [`Ledger`], stops and restarts them by name.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use rustix::process::{Pid, Signal, kill_process};
use tokio::process::{Child, Command};

use crate::{
    Error,
    state::{Ledger, Process, start_time},
};

/// How long a child gets to stop after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// A program and its arguments, run inside a network namespace when `netns` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The network namespace, or `None` for the root namespace.
    pub netns: Option<String>,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Spec {
    /// `argv` in the root namespace.
    pub fn root(argv: Vec<String>) -> Self {
        Self {
            netns: None,
            argv,
            env: Vec::new(),
        }
    }

    /// `argv` inside network namespace `netns`.
    pub fn netns(netns: &str, argv: Vec<String>) -> Self {
        Self {
            netns: Some(netns.to_owned()),
            argv,
            env: Vec::new(),
        }
    }

    /// `argv` inside `netns` and in a mount namespace of its own with a private tmpfs on
    /// `/run/wireguard`: WireGuard's userspace control sockets live there, and without this
    /// two hosts with the same interface name would share (and fight over) one socket.
    pub fn netns_own_wireguard(netns: &str, argv: Vec<String>) -> Self {
        let mut wrapped: Vec<String> = [
            "unshare",
            "-m",
            "sh",
            "-c",
            "mkdir -p /run/wireguard && mount -t tmpfs tmpfs /run/wireguard && exec \"$@\"",
            "sh",
        ]
        .map(String::from)
        .to_vec();
        wrapped.extend(argv);
        Self::netns(netns, wrapped)
    }

    /// The full command line, `ip netns exec NS` included.
    pub fn command_line(&self) -> Vec<String> {
        let mut line = Vec::new();
        if let Some(ns) = &self.netns {
            line.extend(["ip", "netns", "exec", ns].map(String::from));
        }
        line.extend(self.argv.iter().cloned());
        line
    }

    /// The command, ready to spawn or run.
    pub fn command(&self) -> Command {
        let line = self.command_line();
        let mut command = Command::new(&line[0]);
        command.args(&line[1..]);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

#[derive(Debug)]
struct Running {
    spec: Spec,
    child: Option<Child>,
}

/// The lab's children by name.
#[derive(Debug)]
pub struct Supervisor {
    log_dir: PathBuf,
    children: BTreeMap<String, Running>,
}

impl Supervisor {
    /// A supervisor writing each child's output to `log_dir/NAME.log`.
    pub fn new(log_dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let log_dir = log_dir.into();
        fs::create_dir_all(&log_dir).map_err(Error::io("create", &log_dir))?;
        Ok(Self {
            log_dir,
            children: BTreeMap::new(),
        })
    }

    /// The log file of child `name`.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.log"))
    }

    /// Starts `spec` as child `name` and records it in `ledger`.
    ///
    /// The child gets its own process group, so a Ctrl-C in the terminal reaches only the
    /// lab, which then stops the children in order.
    pub fn start(&mut self, ledger: &mut Ledger, name: &str, spec: Spec) -> Result<(), Error> {
        let log = self.log_path(name);
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(Error::io("open", &log))?;
        let err = out.try_clone().map_err(Error::io("open", &log))?;
        let mut command = spec.command();
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command.spawn().map_err(|e| Error::Command {
            command: spec.command_line().join(" "),
            message: e.to_string(),
        })?;
        if let Some(pid) = child.id() {
            let process = Process {
                name: name.to_owned(),
                pid,
                start_time: start_time(pid).unwrap_or_default(),
            };
            ledger.record(|s| s.processes.push(process))?;
        }
        self.children.insert(
            name.to_owned(),
            Running {
                spec,
                child: Some(child),
            },
        );
        Ok(())
    }

    /// Stops child `name`: SIGTERM, SIGKILL after a grace period. Its spec is kept for
    /// [`Supervisor::restart`].
    pub async fn stop(&mut self, ledger: &mut Ledger, name: &str) -> Result<(), Error> {
        let Some(mut child) = self.children.get_mut(name).and_then(|r| r.child.take()) else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                let _ = kill_process(pid, Signal::TERM);
            }
            if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
            ledger.record(|s| s.processes.retain(|p| p.pid != pid))?;
        }
        Ok(())
    }

    /// Stops every child of `names` at once: SIGTERM to all, then each gets the grace
    /// period before SIGKILL.
    pub async fn stop_all(&mut self, ledger: &mut Ledger, names: &[String]) -> Result<(), Error> {
        for name in names {
            self.signal(name, Signal::TERM);
        }
        for name in names {
            self.stop(ledger, name).await?;
        }
        Ok(())
    }

    /// Kills child `name` with SIGKILL (no chance to clean up) and waits for it. Its spec is
    /// kept for [`Supervisor::restart`].
    pub async fn kill(&mut self, ledger: &mut Ledger, name: &str) -> Result<(), Error> {
        let Some(mut child) = self.children.get_mut(name).and_then(|r| r.child.take()) else {
            return Ok(());
        };
        let pid = child.id();
        let _ = child.kill().await;
        if let Some(pid) = pid {
            ledger.record(|s| s.processes.retain(|p| p.pid != pid))?;
        }
        Ok(())
    }

    /// The process id of child `name` while it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children.get(name)?.child.as_ref()?.id()
    }

    /// Sends `signal` to child `name` (e.g. SIGSTOP and SIGCONT); whether it was sent.
    pub fn signal(&self, name: &str, signal: Signal) -> bool {
        self.pid(name)
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(Pid::from_raw)
            .is_some_and(|pid| kill_process(pid, signal).is_ok())
    }

    /// Starts a stopped child again with the same spec.
    pub fn restart(&mut self, ledger: &mut Ledger, name: &str) -> Result<(), Error> {
        let spec = match self.children.get(name) {
            Some(Running { spec, child: None }) => spec.clone(),
            _ => return Ok(()),
        };
        self.start(ledger, name, spec)
    }

    /// Children that have exited by themselves, with their status.
    pub fn exited(&mut self) -> Vec<(String, String)> {
        self.children
            .iter_mut()
            .filter_map(|(name, r)| {
                let status = r.child.as_mut()?.try_wait().ok()??;
                Some((name.clone(), status.to_string()))
            })
            .collect()
    }

    /// The last `lines` lines of every child's log, for a failure report.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for name in self.children.keys() {
            let path = self.log_path(name);
            out.push_str(&format!("--- {} (last {lines} lines)\n", path.display()));
            out.push_str(&tail(&path, lines));
        }
        out
    }
}

/// The last `lines` lines of the file at `path` (empty when unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let mut out = all[all.len().saturating_sub(lines)..].join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_specs_wrap_the_program() {
        let spec = Spec::netns_own_wireguard("kl-edge1", vec!["kokoa-edge".into(), "run".into()]);
        let line = spec.command_line();
        assert_eq!(&line[..4], &["ip", "netns", "exec", "kl-edge1"]);
        assert_eq!(&line[4..6], &["unshare", "-m"]);
        assert!(line[8].contains("mount -t tmpfs tmpfs /run/wireguard"));
        assert_eq!(&line[line.len() - 2..], &["kokoa-edge", "run"]);
        assert_eq!(Spec::root(vec!["x".into()]).command_line(), vec!["x"]);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, "1\n2\n3\n4\n").unwrap();
        assert_eq!(tail(&path, 2), "3\n4\n");
        assert_eq!(tail(&path, 10), "1\n2\n3\n4\n");
        assert_eq!(tail(&dir.path().join("missing"), 3), "\n");
    }
}
