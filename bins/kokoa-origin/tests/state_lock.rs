//! One agent per state directory: `kokoa-origin run` on a directory another process holds
//! exits at once, naming the directory and the holder, before it touches anything.

use std::process::Command;

#[test]
fn a_second_agent_on_the_same_state_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _held = kokoa_agent::StateLock::acquire(dir.path()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kokoa-origin"))
        .args(["run", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it ran: {stderr}");
    assert!(
        stderr.contains("another agent runs with the state directory")
            && stderr.contains(&format!("process {}", std::process::id())),
        "{stderr}"
    );
    // Refused before reading its credential (there is none here).
    assert!(!stderr.contains("no credential"), "{stderr}");
}
