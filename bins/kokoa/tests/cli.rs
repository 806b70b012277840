//! The built `kokoa` binary against the real control plane router, served on 127.0.0.1
//! over a temporary SQLite database.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Output},
    sync::Arc,
};

use kokoa_control::{AppState, api, config::Database};
use kokoa_core::{Name, Role, SubnetPool};
use kokoa_store::MasterKey;
use serde_json::Value;

struct Server {
    url: String,
    admin: String,
    /// Home of the runs: no configuration file unless a test writes one.
    home: tempfile::TempDir,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (url, admin) = runtime.block_on(async {
            let store = kokoa_control::open_store(&Database::Sqlite(dir.path().join("kokoa.db")))
                .await
                .expect("SQLite store opens");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let state = AppState::new(
                Arc::clone(&store),
                MasterKey::generate(),
                SubnetPool::default(),
                url.clone(),
            );
            let (_, admin) =
                api::issue_api_token(&state, Name::parse("admin").unwrap(), Role::Admin)
                    .await
                    .unwrap();
            let router = api::router(state);
            tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
            (url, admin.to_string())
        });
        Self {
            url,
            admin,
            home: tempfile::tempdir().unwrap(),
            _dir: dir,
            _runtime: runtime,
        }
    }

    /// `kokoa ARGS` with nothing from the caller's environment but `env`.
    fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kokoa"));
        command
            .args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .envs(env.iter().copied());
        command.output().expect("kokoa runs")
    }

    /// `kokoa ARGS` with the server's URL and admin token in the environment.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(
            &[("KOKOA_URL", &self.url), ("KOKOA_TOKEN", &self.admin)],
            args,
        )
    }

    /// Runs, asserts success, returns standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kokoa {args:?}: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("--json prints JSON")
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The column at which `word` starts in `line`.
fn column(line: &str, word: &str) -> usize {
    line.find(word)
        .unwrap_or_else(|| panic!("{word:?} not in {line:?}"))
}

#[test]
fn manage_origins_and_routes() {
    let server = Server::start();

    let origin = server.json(&[
        "origin",
        "create",
        "home-server",
        "--domain",
        "app.example.com",
        "--service",
        "web:8001",
        "--service",
        "api:8002:http:/health",
    ]);
    let origin_id = origin["id"].as_str().unwrap().to_owned();
    assert_eq!(origin["services"].as_array().unwrap().len(), 2, "{origin}");
    assert_eq!(
        origin["config_download_url"],
        format!("/api/v1/origins/{origin_id}/config")
    );

    let added = server.ok(&[
        "route",
        "add",
        "app.hoge.com",
        "--origin",
        &origin_id,
        "--port",
        "8001",
    ]);
    assert!(
        added.contains("app.hoge.com") && added.contains(&origin_id),
        "{added}"
    );
    server.ok(&[
        "route",
        "add",
        "wiki.fuga.com",
        "--origin",
        &origin_id,
        "--port",
        "8002",
    ]);

    // The table: a heading and one line per route, columns aligned.
    let table = server.ok(&["route", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID "), "{table}");
    let hostname_at = column(lines[0], "HOSTNAME");
    let port_at = column(lines[0], "PORT");
    assert_eq!(column(lines[1], "app.hoge.com"), hostname_at, "{table}");
    assert_eq!(column(lines[2], "wiki.fuga.com"), hostname_at, "{table}");
    // No certificate yet (no [acme]): the edges serve their fallback, and the list says so.
    assert_eq!(
        &lines[1][port_at..],
        "8001  http-01      fallback (none yet)",
        "{table}"
    );
    assert_eq!(
        &lines[2][port_at..],
        "8002  http-01      fallback (none yet)",
        "{table}"
    );

    // --json: the API's own answer.
    let list = server.json(&["route", "list"]);
    let hostnames: Vec<&str> = list["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(hostnames, ["app.hoge.com", "wiki.fuga.com"]);

    // A duplicate: the API's 409 message, exit code 1.
    let dup = server.run(&[
        "route",
        "add",
        "app.hoge.com",
        "--origin",
        &origin_id,
        "--port",
        "9000",
    ]);
    assert_eq!(dup.status.code(), Some(1));
    assert_eq!(
        stderr(&dup),
        "error: conflict: hostname \"app.hoge.com\" already exists\n"
    );
    assert!(dup.stdout.is_empty());

    // An invalid value: the API's 422 message names it.
    let bad = server.run(&[
        "route",
        "add",
        "bad_host!",
        "--origin",
        &origin_id,
        "--port",
        "80",
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).starts_with("error: invalid_value: ") && stderr(&bad).contains("bad_host!"),
        "{}",
        stderr(&bad)
    );

    // Origins in a table; deleting one that routes use needs --force.
    let origins = server.ok(&["origin", "list"]);
    assert!(
        origins
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with(&origin_id) && l.contains("home-server")),
        "{origins}"
    );
    let in_use = server.run(&["origin", "delete", &origin_id]);
    assert_eq!(in_use.status.code(), Some(1));
    assert!(
        stderr(&in_use).starts_with("error: in_use: "),
        "{}",
        stderr(&in_use)
    );

    // Remove by host name and by id.
    server.ok(&["route", "rm", "app.hoge.com"]);
    let wiki = server.json(&["route", "list"])["routes"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let removed = server.ok(&["route", "rm", &wiki]);
    assert!(removed.contains(&wiki), "{removed}");
    assert_eq!(
        server.ok(&["route", "list"]),
        "ID  HOSTNAME  ORIGIN  PORT  CERTIFICATE  TLS\n"
    );
    let gone = server.run(&["route", "rm", "app.hoge.com"]);
    assert_eq!(
        stderr(&gone),
        "error: not_found: no route for hostname \"app.hoge.com\"\n"
    );

    // The bundle is written privately.
    let bundle = server.home.path().join("origin-config.tar.gz");
    server.ok(&[
        "origin",
        "bundle",
        &origin_id,
        "-o",
        bundle.to_str().unwrap(),
    ]);
    let bytes = fs::read(&bundle).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip");
    assert_eq!(
        fs::metadata(&bundle).unwrap().permissions().mode() & 0o777,
        0o600
    );

    server.ok(&["origin", "delete", &origin_id]);
    assert_eq!(
        server.json(&["origin", "list"])["origins"],
        Value::Array(Vec::new())
    );
}

#[test]
fn edges_tokens_and_enrollments() {
    let server = Server::start();
    let origin = server.json(&["origin", "create", "lab"]);
    let origin_id = origin["id"].as_str().unwrap();

    let out = server.run(&[
        "edge",
        "add",
        "--provider",
        "manual",
        "--region",
        "sgp1",
        "--public-ip",
        "203.0.113.10",
    ]);
    let (added, warned) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(
        out.status.success() && added.contains("provisioning"),
        "{added}{warned}"
    );
    // The test's control plane has a loopback public URL: no command no other machine
    // could follow, and a warning that says why and what to do.
    assert!(!added.contains("kokoa-edge enroll"), "{added}");
    assert!(
        warned.contains("warning: no enroll command") && warned.contains("--allow-loopback-url"),
        "{warned}"
    );
    let local = server.ok(&[
        "edge",
        "add",
        "--provider",
        "manual",
        "--region",
        "sgp1",
        "--public-ip",
        "203.0.113.11",
        "--allow-loopback-url",
    ]);
    assert!(
        local.contains("KOKOA_ENROLL_TOKEN=kk_enr_")
            && local.contains("kokoa-edge enroll --control-plane http://127.0.0.1:"),
        "{local}"
    );
    let edges = server.json(&["edge", "list", "--origin", origin_id]);
    let edge_id = edges["edge_nodes"][0]["id"].as_str().unwrap().to_owned();
    let table = server.ok(&["edge", "list"]);
    assert!(
        table.contains("203.0.113.10") && table.contains("manual"),
        "{table}"
    );
    let removed = server.ok(&["edge", "rm", &edge_id]);
    assert!(
        removed.starts_with("Edge node deletion initiated: "),
        "{removed}"
    );
    assert!(removed.contains("1. Remove from DNS"), "{removed}");

    let created = server.json(&["token", "create", "ci", "--role", "viewer"]);
    let viewer = created["token"].as_str().unwrap().to_owned();
    assert!(server.ok(&["token", "list"]).contains("viewer"));
    // A viewer may read, not write.
    let env = [
        ("KOKOA_URL", server.url.as_str()),
        ("KOKOA_TOKEN", viewer.as_str()),
    ];
    assert!(server.run_with(&env, &["origin", "list"]).status.success());
    let denied = server.run_with(&env, &["origin", "create", "nope"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        stderr(&denied).starts_with("error: forbidden: "),
        "{}",
        stderr(&denied)
    );
    server.ok(&["token", "revoke", created["id"].as_str().unwrap()]);
    let revoked = server.run_with(&env, &["origin", "list"]);
    assert!(
        stderr(&revoked).starts_with("error: unauthorized: "),
        "{}",
        stderr(&revoked)
    );

    let enrollment = server.ok(&[
        "enrollment",
        "create",
        "--kind",
        "origin",
        "--node",
        origin_id,
    ]);
    assert!(
        enrollment.contains(&format!("origin {origin_id}")),
        "{enrollment}"
    );
    assert!(enrollment.contains("kk_enr_"), "{enrollment}");
}

#[test]
fn wrong_token_shows_the_api_401_message() {
    let server = Server::start();
    let out = server.run_with(
        &[
            ("KOKOA_URL", &server.url),
            ("KOKOA_TOKEN", "kk_api_not-a-real-token"),
        ],
        &["origin", "list"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: unauthorized: the bearer token is unknown, revoked or expired; ask an \
         administrator for a new one\n"
    );
}

#[test]
fn usage_errors_exit_with_2() {
    let server = Server::start();
    let missing_args = server.run(&["route", "add", "app.hoge.com"]);
    assert_eq!(
        missing_args.status.code(),
        Some(2),
        "{}",
        stderr(&missing_args)
    );
    let no_url = server.run_with(&[], &["origin", "list"]);
    assert_eq!(no_url.status.code(), Some(2));
    assert!(stderr(&no_url).contains("KOKOA_URL"), "{}", stderr(&no_url));
    let help = server.run_with(&[], &["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("Examples:"));
}

#[test]
fn configuration_file_supplies_url_and_token_and_must_be_private() {
    let server = Server::start();
    let dir = server.home.path().join(".config/kokoa");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    fs::write(
        &path,
        format!("url = \"{}\"\ntoken = \"{}\"\n", server.url, server.admin),
    )
    .unwrap();
    let set_mode = |mode| fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();

    set_mode(0o644);
    let open = server.run_with(&[], &["origin", "list"]);
    assert!(open.status.success(), "{}", stderr(&open));
    let warning = stderr(&open);
    assert!(
        warning.starts_with("warning: ") && warning.contains("chmod 600"),
        "{warning}"
    );

    set_mode(0o600);
    let private = server.run_with(&[], &["origin", "list"]);
    assert!(private.status.success());
    assert_eq!(stderr(&private), "");

    // The environment wins over the file.
    let env = server.run_with(&[("KOKOA_TOKEN", "kk_api_wrong")], &["origin", "list"]);
    assert!(
        stderr(&env).starts_with("error: unauthorized: "),
        "{}",
        stderr(&env)
    );
    assert!(Path::new(&path).exists());
}

#[test]
fn dns_events_and_modules() {
    let server = Server::start();
    let origin = server.json(&[
        "origin",
        "create",
        "home",
        "--service",
        "web:8001",
        "--json",
    ]);
    let origin_id = origin["id"].as_str().unwrap();
    server.ok(&[
        "route",
        "add",
        "app.hoge.com",
        "--origin",
        origin_id,
        "--port",
        "8001",
        "--certificate",
        "none",
    ]);
    server.ok(&[
        "route",
        "add",
        "wiki.fuga.com",
        "--origin",
        origin_id,
        "--port",
        "8001",
    ]);

    // A zone whose records are set by hand; a credential from the environment only.
    let added = server.run_with(
        &[
            ("KOKOA_URL", &server.url),
            ("KOKOA_TOKEN", &server.admin),
            ("ZONE_SECRET", "s3cret"),
        ],
        &[
            "dns",
            "add-zone",
            "hoge.com",
            "--provider",
            "manual",
            "--ttl",
            "60",
            "--credential",
            "token=env:ZONE_SECRET",
        ],
    );
    assert!(added.status.success(), "{}", stderr(&added));
    let zones = server.ok(&["dns", "zones"]);
    assert!(
        zones.contains("hoge.com") && zones.contains("manual"),
        "{zones}"
    );
    assert!(!zones.contains("s3cret"), "{zones}");
    let missing = server.run(&[
        "dns",
        "add-zone",
        "x.com",
        "--provider",
        "manual",
        "--credential",
        "token=env:NOT_SET",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("NOT_SET"), "{}", stderr(&missing));

    // No edge serves yet: nothing to set, but both host names are named.
    let instructions = server.ok(&["dns", "instructions"]);
    assert!(
        instructions.contains("app.hoge.com: no edge serves it yet")
            && instructions.contains("wiki.fuga.com: no edge serves it yet"),
        "{instructions}"
    );
    let plan = server.ok(&["dns", "plan"]);
    assert!(plan.contains("set by hand"), "{plan}");
    assert_eq!(
        server.json(&["dns", "records", "--json"])["records"],
        serde_json::json!([])
    );

    // Modules: switched off and on, each an event.
    let off = server.ok(&["module", "off", "health_checker"]);
    assert!(
        off.contains("health_checker") && off.contains("false"),
        "{off}"
    );
    let list = server.ok(&["module", "list"]);
    for module in [
        "dns_manager",
        "edge_provisioner",
        "ssl_manager",
        "health_checker",
    ] {
        assert!(list.contains(module), "{list}");
    }
    let unknown = server.run(&["module", "on", "coffee_maker"]);
    assert_eq!(unknown.status.code(), Some(1));
    let events = server.ok(&["events", "--type", "module.*"]);
    assert!(
        events.contains("module health_checker switched off"),
        "{events}"
    );
}

#[test]
fn certificates_are_listed_uploaded_and_renewed() {
    let server = Server::start();
    assert!(
        server.json(&["certificate", "list"])["certificates"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![
        "shop.kokoa.test".to_owned(),
        "www.shop.kokoa.test".to_owned(),
    ])
    .unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    fs::write(&cert_path, cert.pem()).unwrap();
    fs::write(&key_path, key.serialize_pem()).unwrap();

    // A key file that is not there: named, and nothing is uploaded.
    let missing = dir.path().join("missing.pem");
    let out = server.run(&[
        "certificate",
        "upload",
        "--cert",
        cert_path.to_str().unwrap(),
        "--key",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "cannot read the private key {}",
            missing.display()
        )),
        "{}",
        stderr(&out)
    );

    let uploaded = server.ok(&[
        "certificate",
        "upload",
        "--cert",
        cert_path.to_str().unwrap(),
        "--key",
        key_path.to_str().unwrap(),
    ]);
    assert!(
        uploaded.contains("shop.kokoa.test,www.shop.kokoa.test") && uploaded.contains("manual"),
        "{uploaded}"
    );
    let table = server.ok(&["certificate", "list"]);
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("shop.kokoa.test,www.shop.kokoa.test")
            && row.contains("manual")
            && row.contains("valid"),
        "{table}"
    );
    // The private key is never shown back.
    assert!(!table.contains("PRIVATE KEY"), "{table}");

    // An uploaded certificate is not ordered again: the API says so, exit code 1.
    let id = server.json(&["certificate", "list"])["certificates"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = server.run(&["certificate", "renew", &id]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("only ACME and Origin CA certificates are renewed here"),
        "{}",
        stderr(&out)
    );
}
