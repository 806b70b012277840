//! Files of a state directory: read whole into wiped memory, replaced atomically.

use std::{
    fs, io,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use zeroize::Zeroizing;

/// The contents of `path`, in memory that is wiped when dropped (state files hold the node
/// credential and private keys); `None` when there is no such file.
pub fn read_private(path: &Path) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `contents` to a new file beside `path` with `mode`, flushes it and renames it over
/// `path`: a crash leaves the old or the new version, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash would make `create_new` fail; its content is stale anyway.
    let _ = fs::remove_file(&tmp);
    let result = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(contents)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive hold on a state directory, kept while the value lives: two agents on one
/// state directory would fight over its interface, files and firewall. The lock is the
/// operating system's (`flock` on `agent.lock` inside), so it goes away with the process,
/// however that ends; the file holds the holder's process id, for the error of the next.
#[derive(Debug)]
pub struct StateLock {
    _file: fs::File,
}

impl StateLock {
    /// Takes the lock on `dir`, or fails at once with an error naming the directory and
    /// the process holding it.
    pub fn acquire(dir: &Path) -> io::Result<Self> {
        let path = dir.join("agent.lock");
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (process {holder})")
                };
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "another agent runs with the state directory {}{holder}; stop it \
                         first (systemctl stop, or kill it) or give this one another --state-dir",
                        dir.display()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn writes_replace_the_file_with_the_mode_asked_and_leave_nothing_beside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credential.json");
        assert!(read_private(&path).unwrap().is_none());
        // A leftover of a crash does not stop the next write.
        fs::write(dir.path().join("credential.json.tmp"), "stale").unwrap();
        write_atomic(&path, b"old", 0o600).unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(read_private(&path).unwrap().unwrap().as_slice(), b"new");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["credential.json"]);
    }

    #[test]
    fn one_agent_per_state_directory_and_the_second_is_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let refused = StateLock::acquire(dir.path()).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
        let text = refused.to_string();
        assert!(
            text.contains(&dir.path().display().to_string())
                && text.contains(&format!("process {}", std::process::id())),
            "{text}"
        );
        // Released with its holder, however that ends.
        drop(first);
        let again = StateLock::acquire(dir.path()).unwrap();
        drop(again);
    }

    #[test]
    fn a_failed_write_names_its_cause_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("last-good.json");
        let err = write_atomic(&path, b"{}", 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            read_private(dir.path()).is_err(),
            "a directory is not a file"
        );
    }
}
