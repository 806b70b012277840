//! The state file: what a running lab made, so `kokoa-lab down` can remove it after a
//! crash, and [`Ledger`], the guard that removes it when the lab ends in any way.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal, kill_process};
use serde::{Deserialize, Serialize};

use crate::{Error, plan, postgres, vps};

/// Where `up` and `check` record what they make.
pub const STATE_FILE: &str = "/run/kokoa-lab/state.json";

/// How long a process gets to stop after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Everything a lab made.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Network namespaces, in creation order.
    pub namespaces: Vec<String>,
    /// Links in the root namespace.
    pub links: Vec<String>,
    /// Processes started directly by the lab.
    pub processes: Vec<Process>,
    /// Temporary directories.
    pub dirs: Vec<PathBuf>,
    /// PostgreSQL databases the lab created (`check --chaos`), dropped at the end.
    #[serde(default)]
    pub databases: Vec<postgres::Database>,
    /// The PostgreSQL server while the lab has it stopped (`check --chaos`): started again
    /// at the end, whatever happened.
    #[serde(default)]
    pub stopped_postgres: Option<postgres::Server>,
}

/// A process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// What it is, e.g. `edge1`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Its start time in clock ticks after boot (`/proc/PID/stat` field 22): a pid reused by
    /// an unrelated process after a crash has another start time, so it is left alone.
    pub start_time: u64,
}

impl State {
    /// Parses a state file's text.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        serde_json::from_str(text).map_err(|e| Error::State {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.links.is_empty()
            && self.processes.is_empty()
            && self.dirs.is_empty()
            && self.databases.is_empty()
            && self.stopped_postgres.is_none()
    }
}

/// Reads the state file at `path`; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<State>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => State::parse(path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

/// Writes `state` to `path` atomically (a crash never leaves half a file).
pub fn save(path: &Path, state: &State) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    }
    let text = serde_json::to_string_pretty(state).map_err(|e| Error::State {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let temp = path.with_extension("json.new");
    fs::write(&temp, text).map_err(Error::io("write", &temp))?;
    fs::rename(&temp, path).map_err(Error::io("rename", path))
}

/// The start time of process `pid`, or `None` when it is gone or a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Field 22 (start time) of a `/proc/PID/stat` line, `None` for a zombie. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if *fields.first()? == "Z" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// What is left of a previous lab, described for a person; `None` when nothing is.
pub fn leftovers(path: &Path) -> Result<Option<String>, Error> {
    if load(path)?.is_some() {
        return Ok(Some(format!("state file {}", path.display())));
    }
    let existing: Vec<String> = plan::namespaces()
        .into_iter()
        .filter(|ns| Path::new("/run/netns").join(ns).exists())
        .chain(vps::namespaces())
        .collect();
    if !existing.is_empty() {
        return Ok(Some(format!("namespaces {}", existing.join(", "))));
    }
    if Path::new("/sys/class/net").join(plan::ROOT_LINK).exists() {
        return Ok(Some(format!("link {}", plan::ROOT_LINK)));
    }
    Ok(None)
}

/// The record of what a running lab made. Every change is saved to the state file at once,
/// before the thing is made; dropping the ledger removes all of it (processes, namespaces,
/// links, directories) and the file, also when the lab panics or is interrupted.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    state: State,
}

impl Ledger {
    /// Starts an empty ledger at `path`; refuses while anything of a previous lab is left.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        if let Some(what) = leftovers(&path)? {
            return Err(Error::Leftovers(what));
        }
        let ledger = Self {
            path,
            state: State::default(),
        };
        save(&ledger.path, &ledger.state)?;
        Ok(ledger)
    }

    /// Records a change and saves the file.
    pub fn record(&mut self, change: impl FnOnce(&mut State)) -> Result<(), Error> {
        change(&mut self.state);
        save(&self.path, &self.state)
    }

    /// What is recorded.
    pub fn state(&self) -> &State {
        &self.state
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let mut state = self.state.clone();
        // The edge VPSes: the control plane made them, so they are found by name.
        if state.namespaces.iter().any(|ns| ns == plan::HUB) {
            state.namespaces.extend(vps::namespaces());
        }
        for problem in clean(&state) {
            eprintln!("cleanup: {problem}");
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// Removes what a previous lab left, as recorded in its state file, plus any namespace or
/// link of the address plan that still exists. Returns `false` when there was nothing.
pub fn down(path: &Path) -> Result<bool, Error> {
    let mut state = load(path)?.unwrap_or_default();
    for ns in plan::namespaces() {
        if !state.namespaces.contains(&ns) && Path::new("/run/netns").join(&ns).exists() {
            state.namespaces.push(ns);
        }
    }
    state.namespaces.extend(vps::namespaces());
    if Path::new("/sys/class/net").join(plan::ROOT_LINK).exists() {
        state.links.push(plan::ROOT_LINK.to_owned());
    }
    let found = !state.is_empty() || path.exists();
    let problems = clean(&state);
    let _ = fs::remove_file(path);
    match problems.is_empty() {
        true => Ok(found),
        false => Err(Error::Command {
            command: "kokoa-lab down".into(),
            message: problems.join("; "),
        }),
    }
}

/// Stops the processes (SIGTERM, then SIGKILL after a grace period), then everything still
/// running in the namespaces (nginx, wireguard-go), deletes the namespaces (the hub last),
/// starts a PostgreSQL server the lab stopped, drops the lab's databases, deletes the links
/// and directories. Missing things are fine. Returns what could not be removed.
fn clean(state: &State) -> Vec<String> {
    let mut problems = Vec::new();
    let mut pids: Vec<u32> = state
        .processes
        .iter()
        .filter(|p| start_time(p.pid) == Some(p.start_time))
        .map(|p| p.pid)
        .collect();
    stop_all(&pids);
    for ns in state.namespaces.iter().rev() {
        if !Path::new("/run/netns").join(ns).exists() {
            continue;
        }
        pids = netns_pids(ns);
        stop_all(&pids);
        if let Err(e) = run_quiet("ip", &["netns", "del", ns]) {
            problems.push(e);
        }
    }
    if let Some(server) = &state.stopped_postgres
        && let Err(e) = server.start_blocking()
    {
        problems.push(e.to_string());
    }
    for database in &state.databases {
        if let Err(e) = database.drop_blocking() {
            problems.push(e.to_string());
        }
    }
    for link in &state.links {
        if Path::new("/sys/class/net").join(link).exists()
            && let Err(e) = run_quiet("ip", &["link", "del", link])
        {
            problems.push(e);
        }
    }
    for dir in &state.dirs {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                problems.push(format!("cannot remove {}: {e}", dir.display()));
            }
            _ => {}
        }
    }
    problems
}

/// The processes living in network namespace `ns`.
fn netns_pids(ns: &str) -> Vec<u32> {
    std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGTERM to every pid, then SIGKILL to those still alive after [`GRACE`].
fn stop_all(pids: &[u32]) {
    let signal = |sig: Signal| {
        for &pid in pids {
            if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                let _ = kill_process(pid, sig);
            }
        }
    };
    signal(Signal::TERM);
    let deadline = Instant::now() + GRACE;
    while pids.iter().any(|&p| start_time(p).is_some()) {
        if Instant::now() > deadline {
            signal(Signal::KILL);
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn run_quiet(program: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            namespaces: vec!["kl-hub".into(), "kl-edge1".into()],
            links: vec!["kl-root".into()],
            processes: vec![Process {
                name: "control".into(),
                pid: 4242,
                start_time: 123_456,
            }],
            dirs: vec!["/tmp/kokoa-lab.x".into()],
            databases: vec![postgres::Database {
                admin_url: "postgres://postgres@127.0.0.1:5433/postgres".into(),
                name: "kokoa_lab_4242".into(),
            }],
            stopped_postgres: None,
        }
    }

    #[test]
    fn state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &sample()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(sample()));
        assert!(!path.with_extension("json.new").exists());
    }

    #[test]
    fn a_state_file_of_an_older_lab_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let old = r#"{"namespaces": ["kl-hub"], "links": [], "processes": [], "dirs": []}"#;
        let state = State::parse(&path, old).unwrap();
        assert!(state.databases.is_empty() && state.stopped_postgres.is_none());
        assert!(!state.is_empty());
    }

    #[test]
    fn a_damaged_state_file_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "{\"namespaces\": [").unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("state.json"), "{e}");
    }

    #[test]
    fn a_new_ledger_refuses_while_a_state_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, &sample()).unwrap();
        let e = Ledger::create(&path).unwrap_err();
        assert!(matches!(e, Error::Leftovers(_)), "{e}");
        assert!(e.to_string().contains("kokoa-lab down"), "{e}");
        assert!(path.exists(), "the leftover record must be kept for `down`");
    }

    #[test]
    fn dropping_the_ledger_removes_what_it_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let work = dir.path().join("work");
        fs::create_dir_all(work.join("logs")).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut ledger = Ledger {
            path: path.clone(),
            state: State::default(),
        };
        ledger
            .record(|s| {
                s.dirs.push(work.clone());
                s.processes.push(Process {
                    name: "sleeper".into(),
                    pid,
                    start_time: start_time(pid).unwrap(),
                });
            })
            .unwrap();
        assert_eq!(load(&path).unwrap().unwrap().processes.len(), 1);
        drop(ledger);
        assert!(!work.exists());
        assert!(!path.exists());
        assert!(!child.wait().unwrap().success());
    }

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "77 (a (b) c) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(line), Some(98765));
        let zombie = line.replace(") S ", ") Z ");
        assert_eq!(parse_stat(&zombie), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn start_time_of_this_process_is_stable_and_gone_pids_have_none() {
        let me = std::process::id();
        let first = start_time(me).unwrap();
        assert_eq!(start_time(me), Some(first));
        assert_eq!(start_time(u32::MAX), None);
    }

    #[test]
    fn clean_leaves_a_process_whose_start_time_differs() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let real = start_time(pid).unwrap();
        let stale = State {
            processes: vec![Process {
                name: "reused".into(),
                pid,
                start_time: real + 1,
            }],
            ..State::default()
        };
        assert!(clean(&stale).is_empty());
        assert_eq!(
            child.try_wait().unwrap(),
            None,
            "an unrelated process was killed"
        );
        let ours = State {
            processes: vec![Process {
                name: "ours".into(),
                pid,
                start_time: real,
            }],
            ..State::default()
        };
        assert!(clean(&ours).is_empty());
        let status = child.wait().unwrap();
        assert!(!status.success(), "sleep should have been terminated");
    }
}
