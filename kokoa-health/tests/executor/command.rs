//! `command` checks: real programs, without a shell unless the argv names one.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use kokoa_health::{CheckConfig, CheckExecutor, CheckStatus, DefaultExecutor};

fn command(argv: &[&str]) -> CheckConfig {
    let mut check = CheckConfig::command(argv.iter().copied());
    check.retries = 0;
    check.timeout = Duration::from_secs(1);
    check
}

#[tokio::test]
async fn exit_status_zero_passes() {
    let outcome = DefaultExecutor::new().check(&command(&["true"])).await;
    assert_eq!(outcome.status, CheckStatus::Success, "{outcome:?}");
}

#[tokio::test]
async fn a_failure_carries_the_status_and_the_end_of_stderr_but_not_the_arguments() {
    let check = command(&[
        "sh",
        "-c",
        "echo connecting >&2; echo 'database down' >&2; exit 3",
    ]);
    assert_eq!(
        DefaultExecutor::new().check(&check).await.error.as_deref(),
        Some("`sh` exited with status 3: connecting\ndatabase down")
    );
    let check = command(&[
        "sh",
        "-c",
        "head -c 5000 /dev/zero | tr '\\0' x >&2; echo ' the end' >&2; exit 1",
    ]);
    let error = DefaultExecutor::new().check(&check).await.error.unwrap();
    assert!(
        error.starts_with("`sh` exited with status 1: …xxx"),
        "{error}"
    );
    assert!(error.ends_with("x the end"), "{error}");
    assert!(
        error.len() < 1200,
        "the tail is bounded: {} bytes",
        error.len()
    );
}

#[tokio::test]
async fn arguments_are_not_interpreted_by_a_shell() {
    let check = command(&["test", "$HOME", "=", "$HOME;false"]);
    let error = DefaultExecutor::new().check(&check).await.error.unwrap();
    assert_eq!(error, "`test` exited with status 1");
    let check = command(&["test", "a;b", "=", "a;b"]);
    assert_eq!(
        DefaultExecutor::new().check(&check).await.status,
        CheckStatus::Success
    );
}

#[tokio::test]
async fn a_missing_program_is_named() {
    let error = DefaultExecutor::new()
        .check(&command(&["/nonexistent/check-db", "--quick"]))
        .await
        .error
        .unwrap();
    assert_eq!(
        error,
        "cannot start `/nonexistent/check-db`: No such file or directory"
    );
}

#[tokio::test]
async fn a_hanging_command_is_killed_with_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    let started = Instant::now();
    let outcome = DefaultExecutor::new()
        .check(&command(&["sh", "-c", &script]))
        .await;
    let took = started.elapsed();
    assert_eq!(
        outcome.error.as_deref(),
        Some("timed out after 1 s while running `sh`, which was killed")
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The `sleep` the shell started was in the command's process group, so it died too.
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let proc = Path::new("/proc").join(pid.trim());
    for _ in 0..100 {
        let state = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
        // Gone, or a zombie waiting for a parent that does not reap.
        if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("sleep {} survived the timeout", pid.trim());
}
