//! `command` checks: a program run without a shell.

use std::{os::unix::process::ExitStatusExt, pin::pin, process::Stdio, time::Duration};

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::{io::AsyncReadExt, process::ChildStderr};

use super::{Progress, net::plain};

/// How much of the end of stderr a failure carries.
const STDERR_TAIL: usize = 1024;
/// How long stderr is read on once the program has exited.
const DRAIN: Duration = Duration::from_millis(100);

/// Runs `argv` in a process group of its own. When the program exits, or the caller drops
/// this future at the timeout, the group is killed: nothing it started outlives the check.
/// Messages name the program only, since arguments may carry a password.
pub(super) async fn run(argv: &[String], progress: &mut Progress) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("the command check needs `command`".into());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {}", plain(&e)))?;
    let group = child
        .id()
        .and_then(|id| Pid::from_raw(id.try_into().ok()?))
        .map(KillOnDrop);
    progress.doing(format_args!("running `{program}`, which was killed"));

    let mut tail = Vec::new();
    let status = {
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut read = pin!(read_tail(stderr, &mut tail));
        let mut eof = false;
        let status = tokio::select! {
            status = child.wait() => status,
            () = &mut read => {
                eof = true;
                child.wait().await
            }
        };
        drop(group);
        if !eof {
            // Whatever the program left running was killed above, closing the pipe.
            let _ = tokio::time::timeout(DRAIN, &mut read).await;
        }
        status.map_err(|e| format!("cannot wait for `{program}`: {}", plain(&e)))?
    };
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => status.to_string(),
    };
    let stderr = String::from_utf8_lossy(&tail);
    let stderr = stderr.trim();
    if stderr.is_empty() {
        Err(format!("`{program}` {how}"))
    } else {
        let cut = if tail.len() >= STDERR_TAIL { "…" } else { "" };
        Err(format!("`{program}` {how}: {cut}{stderr}"))
    }
}

/// Reads `stderr` to its end, keeping the last [`STDERR_TAIL`] bytes in `tail`.
async fn read_tail(mut stderr: ChildStderr, tail: &mut Vec<u8>) {
    let mut buffer = [0u8; 4096];
    while let Ok(read @ 1..) = stderr.read(&mut buffer).await {
        tail.extend_from_slice(&buffer[..read]);
        if tail.len() > STDERR_TAIL {
            tail.drain(..tail.len() - STDERR_TAIL);
        }
    }
}

/// Kills a process group when dropped.
#[derive(Debug)]
struct KillOnDrop(Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // ESRCH when the group is already gone: nothing to do.
        let _ = kill_process_group(self.0, Signal::KILL);
    }
}
