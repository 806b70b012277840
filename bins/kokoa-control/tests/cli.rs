//! The `kokoa-control` binary: `init` and `serve`, run as a user would.

use std::{
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kokoa-control");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("KOKOA_DATA_DIR")
        .env_remove("KOKOA_DATABASE_URL")
        .output()
        .expect("the binary runs")
}

/// Kills the server if a test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn init_creates_the_data_directory_once() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let dir_arg = dir.to_str().unwrap();

    let out = run(&["init", "--data-dir", dir_arg, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let token = printed["admin_token"].as_str().unwrap();
    assert!(
        token.starts_with("kk_api_") && token.len() == 7 + 43,
        "{token}"
    );
    let pin = printed["ca_pin"].as_str().unwrap();
    assert!(
        pin.parse::<kokoa_agent::CaPin>().is_ok(),
        "the CA pin, as nodes take it: {pin}"
    );
    assert_eq!(printed.as_object().unwrap().len(), 2);

    let key = dir.join("master.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "master.key must be readable by its owner only");
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 44);
    assert!(dir.join("kokoa.db").is_file());
    let db = std::fs::read(dir.join("kokoa.db")).unwrap();
    assert!(db.starts_with(b"SQLite format 3\0"));

    // A second init refuses, saying why, and leaves the key alone.
    let before = std::fs::read(&key).unwrap();
    let out = run(&["init", "--data-dir", dir_arg]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not empty") && stderr.contains(dir_arg),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);

    // Without --json the token is printed for a person, once.
    let other = parent.path().join("other");
    let out = run(&["init", "--data-dir", other.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(stdout.matches("kk_api_").count(), 1, "{stdout}");
}

/// `--log-format json`: every line is one JSON object a log collector can read, with the
/// level and the message; an unknown format is refused naming it.
#[test]
fn logs_can_be_json_lines() {
    let out = run(&["--log-format", "json", "serve"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let error = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("no data directory")),
        "{error}"
    );
    let out = run(&["--log-format", "xml", "serve"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown log format \"xml\""), "{stderr}");
}

#[test]
fn help_shows_examples() {
    let out = run(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("Examples:") && text.contains("kokoa-control init --data-dir"),
        "{text}"
    );
    let out = run(&["serve", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--listen",
        "--database",
        "--public-url",
        "--config",
        "KOKOA_LISTEN",
    ] {
        assert!(text.contains(flag), "{flag} missing in\n{text}");
    }
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let out = run(&["init", "--data-dir", dir.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let printed = serde_json::from_slice::<Value>(&out.stdout).unwrap();
    let token = printed["admin_token"].as_str().unwrap().to_owned();
    let pin: kokoa_agent::CaPin = printed["ca_pin"].as_str().unwrap().parse().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");

    // Settings from the environment and a configuration file; the flag wins.
    let config = parent.path().join("kokoa.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\npublic_url = \"https://cp.example.com\"\n",
    )
    .unwrap();
    let server = Command::new(BIN)
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--listen",
            &listen,
        ])
        .env("KOKOA_DATA_DIR", &dir)
        .env_remove("KOKOA_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut server = Running(server);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // HTTPS by default, trusted by the pin `init` printed.
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(kokoa_agent::pinned_client_config(pin))
            .build()
            .unwrap();
        let started = Instant::now();
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "serve did not answer /health"
            );
            if let Ok(r) = client.get(format!("https://{listen}/health")).send().await {
                assert_eq!(r.status(), 200);
                assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
                assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok");
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let plain = reqwest::Client::new()
            .get(format!("http://{listen}/health"))
            .send()
            .await;
        assert!(plain.is_err(), "no plain HTTP on the TLS port: {plain:?}");
        let routes = client
            .get(format!("https://{listen}/api/v1/routes"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(routes.status(), 200, "the token printed by init works");
        let origin: Value = client
            .post(format!("https://{listen}/api/v1/origins"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "home-server"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(origin["wireguard_ip"], "10.0.1.1");
    });

    let pid = server.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "serve ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status}: {stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(!stderr.contains(&token), "the log must not show tokens");
}

/// Runs the binary with `stdin` as its standard input.
fn run_with_input(args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("KOKOA_DATA_DIR")
        .env_remove("KOKOA_DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn init_adds_the_first_admin_and_user_manages_the_others() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let dir_arg = dir.to_str().unwrap();

    // A short password is refused before anything is created.
    let out = run_with_input(
        &[
            "init",
            "--data-dir",
            dir_arg,
            "--admin-email",
            "admin@example.com",
        ],
        "short\n",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("at least 12") && !stderr.contains("short"),
        "{stderr}"
    );
    assert!(!dir.exists());

    let out = run_with_input(
        &[
            "init",
            "--data-dir",
            dir_arg,
            "--admin-email",
            "Admin@Example.com",
        ],
        "a long admin passphrase\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sign in as Admin@Example.com"), "{stdout}");
    assert!(!stdout.contains("passphrase"));

    let out = run_with_input(
        &[
            "user",
            "add",
            "--data-dir",
            dir_arg,
            "viewer@example.com",
            "--role",
            "viewer",
        ],
        "a viewer passphrase\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = run_with_input(
        &["user", "add", "--data-dir", dir_arg, "viewer@example.com"],
        "a viewer passphrase\n",
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("viewer@example.com"));

    let out = run(&["user", "list", "--data-dir", dir_arg, "--json"]);
    let users: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let listed: Vec<(&str, &str)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["email"].as_str().unwrap(), u["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed,
        [
            ("admin@example.com", "admin"),
            ("viewer@example.com", "viewer")
        ]
    );
    let text = String::from_utf8(run(&["user", "list", "--data-dir", dir_arg]).stdout).unwrap();
    assert!(
        text.contains("viewer@example.com") && text.contains("not set up"),
        "{text}"
    );
    assert!(!text.contains("argon2"), "no hash is printed: {text}");

    let out = run(&[
        "user",
        "reset-totp",
        "--data-dir",
        dir_arg,
        "viewer@example.com",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "user",
        "remove",
        "--data-dir",
        dir_arg,
        "viewer@example.com",
    ]);
    assert!(out.status.success());
    let out = run(&[
        "user",
        "remove",
        "--data-dir",
        dir_arg,
        "viewer@example.com",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("user list"));
}
