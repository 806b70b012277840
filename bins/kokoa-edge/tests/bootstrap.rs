//! The cloud-init user data's bootstrap script, run for real: `render_user_data` renders
//! it, the test writes the files it names and runs its command against a real control
//! plane (kokoa-control's API over SQLite, started by the test) with the real
//! `kokoa-edge enroll`, `install`, `sha256sum`, `jq` and `curl`. Stand-ins replace only what
//! would change this machine or reach the Internet: `apt-get`, `systemctl`, and the
//! agent's download, which hands over the `kokoa-edge` binary under test.
//!
//! Where the script runs: in a network namespace the test made, so `http://127.0.0.1/health`
//! and the control plane's `http://127.0.0.1:PORT` are the test's own (both are bound inside
//! it), and in a private mount namespace with the test's directories bound over
//! `/usr/local/bin` and `/var/lib`. The script runs unchanged, with its real paths: it
//! installs the agent as `/usr/local/bin/kokoa-edge`, and reads the credential from
//! `/var/lib/kokoa-edge/credential.json`, where `kokoa-edge enroll` writes it by default.
//! Overriding those paths with environment variables instead would leave the agreement
//! between the script's paths and the agent's defaults untested. The files the user data
//! writes (`/etc/kokoa-edge/bootstrap.conf`, the script) are written under the test's
//! directory and the command is run with those paths. Needs root.

mod common;

use std::{
    fs,
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command as StdCommand,
    sync::Arc,
    time::Duration,
};

use axum::{Router, http::StatusCode, routing::get};
use common::netns::{Namespaces, listen_in};
use kokoa_control::{AppState, api, config::Database};
use kokoa_core::{MasterKey, Name, Role, SubnetPool};
use kokoa_provision::{AgentSource, EdgeBootstrap, Secret, render_user_data};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const EDGE: &str = env!("CARGO_BIN_EXE_kokoa-edge");
const AGENT_URL: &str = "https://downloads.kokoa.invalid/kokoa-edge";

const APT_GET: &str = r#"#!/bin/sh
# Stand-in for apt-get: nothing is installed.
echo "apt-get $*" >>"$LOG"
"#;

const SYSTEMCTL: &str = r#"#!/bin/sh
# Stand-in for systemctl: starting the agent is noted, for the /health stand-in.
echo "systemctl $*" >>"$LOG"
if [ "$*" = "enable --now kokoa-edge.service" ]; then : >"$AGENT_STARTED"; fi
"#;

const CURL: &str = r#"#!/bin/sh
# Stand-in for curl: the agent's download (the call restricted with --proto) gets the
# kokoa-edge binary under test; every other call goes to the real curl.
case " $* " in
*" --proto "*)
    echo "curl $*" >>"$LOG"
    previous=
    for arg in "$@"; do
        if [ "$previous" = -o ]; then cp "$AGENT_BINARY" "$arg"; fi
        previous=$arg
    done
    ;;
*)
    echo "curl (real) $*" >>"$LOG"
    exec /usr/bin/curl "$@"
    ;;
esac
"#;

fn require_tools() {
    for (tool, package) in [
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/jq", "jq"),
        ("/usr/bin/unshare", "util-linux"),
        ("/usr/bin/sha256sum", "coreutils"),
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} not found: apt-get install -y --no-install-recommends {package} (or scripts/install-deps)"
        );
    }
    assert!(
        StdCommand::new("ip").arg("-V").output().is_ok(),
        "ip not found: apt-get install -y --no-install-recommends iproute2"
    );
}

fn serve(listener: TcpListener, router: Router) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn sha256(path: &str) -> String {
    format!("{:x}", Sha256::digest(fs::read(path).unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_script_enrolls_the_edge_and_reports_it_ready() {
    let namespaces = Namespaces::new("eb");
    require_tools();
    let netns = namespaces.add("");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");

    // The control plane: agents reach it inside the namespace, the test from here.
    let addresses = [
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:80".parse().unwrap(),
    ];
    let [agents, health] = <[TcpListener; 2]>::try_from(listen_in(&netns, &addresses)).unwrap();
    let port = agents.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let store = kokoa_control::open_store(&Database::Sqlite(dir.path().join("kokoa.db")))
        .await
        .unwrap();
    let state = AppState::new(store, MasterKey::generate(), SubnetPool::default(), &url);
    let (_, admin) = api::issue_api_token(&state, Name::parse("admin").unwrap(), Role::Admin)
        .await
        .unwrap();
    let router = api::router(state);
    serve(agents, router.clone());
    let here = TcpListener::bind("127.0.0.1:0").unwrap();
    here.set_nonblocking(true).unwrap();
    let here_url = format!("http://{}", here.local_addr().unwrap());
    serve(here, router);
    // /health as the agent's nginx answers it, once systemctl "started" the agent.
    let started = dir.path().join("agent-started");
    let flag = Arc::new(started.clone());
    serve(
        health,
        Router::new().route(
            "/health",
            get(move || {
                let flag = Arc::clone(&flag);
                async move {
                    match flag.exists() {
                        true => (StatusCode::OK, "ok\n"),
                        false => (StatusCode::SERVICE_UNAVAILABLE, "agent not started\n"),
                    }
                }
            }),
        ),
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let call = |method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut request = client.request(method, format!("{here_url}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // An edge as the edge automation creates one: stored as provisioning, then an
    // enrollment token for the VPS's user data.
    let (status, edge) = call(
        reqwest::Method::POST,
        "/api/v1/edge-nodes",
        Some(admin.as_str()),
        Some(json!({"provider": "lab", "region": "lab-a", "name": "edge-boot-01"})),
    )
    .await;
    assert_eq!(status, 202, "{edge}");
    let id = edge["id"].as_str().unwrap().to_owned();
    let (status, enrollment) = call(
        reqwest::Method::POST,
        "/api/v1/enrollments",
        Some(admin.as_str()),
        Some(json!({"node_kind": "edge", "node_id": id})),
    )
    .await;
    assert_eq!(status, 201, "{enrollment}");
    let token = enrollment["token"].as_str().unwrap().to_owned();

    let user_data = render_user_data(&EdgeBootstrap {
        control_plane_url: url.clone(),
        node_id: id.parse().unwrap(),
        enrollment_token: Secret::new(token.clone()),
        agent: AgentSource::Download {
            url: AGENT_URL.into(),
            sha256: sha256(EDGE),
        },
    })
    .unwrap();

    // The files the user data writes, under the test's root, and its one command.
    let doc: serde_norway::Value = serde_norway::from_str(user_data.expose()).unwrap();
    for file in doc["write_files"].as_sequence().unwrap() {
        let path = file["path"].as_str().unwrap().trim_start_matches('/');
        let permissions = u32::from_str_radix(file["permissions"].as_str().unwrap(), 8).unwrap();
        write(
            &root.join(path),
            file["content"].as_str().unwrap(),
            permissions,
        );
    }
    let runcmd: Vec<Vec<String>> = serde_norway::from_value(doc["runcmd"].clone()).unwrap();
    let [command] = &runcmd[..] else {
        panic!("one command expected: {runcmd:?}")
    };
    let command: Vec<PathBuf> = command
        .iter()
        .map(|arg| root.join(arg.trim_start_matches('/')))
        .collect();
    let unit = fs::read_to_string(root.join("etc/systemd/system/kokoa-edge.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/kokoa-edge run\n"),
        "{unit}"
    );

    let stand_ins = dir.path().join("stand-ins");
    for (name, text) in [
        ("apt-get", APT_GET),
        ("systemctl", SYSTEMCTL),
        ("curl", CURL),
    ] {
        write(&stand_ins.join(name), text, 0o755);
    }
    for path in ["usr/local/bin", "var/lib", "tmp"] {
        fs::create_dir_all(root.join(path)).unwrap();
    }
    let log = dir.path().join("log");
    let tmp = root.join("tmp");
    let mounts = "mount --bind \"$0/usr/local/bin\" /usr/local/bin \
                  && mount --bind \"$0/var/lib\" /var/lib && exec \"$@\"";
    let mut script = tokio::process::Command::new("ip");
    script
        .args([
            "netns",
            "exec",
            &netns,
            "unshare",
            "-m",
            "--propagation",
            "private",
        ])
        .args(["sh", "-c", mounts])
        .arg(&root)
        .args(&command)
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                stand_ins.display()
            ),
        )
        .env("HOME", dir.path())
        .env("TMPDIR", &tmp)
        .env("LOG", &log)
        .env("AGENT_STARTED", &started)
        .env("AGENT_BINARY", EDGE)
        .kill_on_drop(true);
    let begun = std::time::Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(120), script.output())
        .await
        .expect("the bootstrap script finishes within 120 s")
        .unwrap();
    let elapsed = begun.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "the bootstrap script failed ({}):\n{stdout}\n{stderr}\nlog:\n{log}",
        out.status
    );
    eprintln!("bootstrap script ran in {:.2} s", elapsed.as_secs_f64());
    assert!(
        stdout.ends_with(&format!("kokoa-edge-bootstrap: edge {id} is ready\n")),
        "{stdout}"
    );

    // What it did, in order; the download's temporary name is random.
    let log: Vec<String> = log
        .lines()
        .map(|line| {
            line.split(' ')
                .map(|w| {
                    if w.starts_with(&*tmp.to_string_lossy()) {
                        "<tmp>"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(
        log,
        [
            "apt-get update".to_owned(),
            "apt-get install -y --no-install-recommends wireguard-tools nginx curl ca-certificates jq".into(),
            "systemctl disable --now nginx.service".into(),
            format!("curl -fsSL --proto =https --retry 5 --max-time 600 -o <tmp> {AGENT_URL}"),
            "systemctl daemon-reload".into(),
            "systemctl enable --now kokoa-edge.service".into(),
            "curl (real) -fsS --retry 60 --retry-delay 5 --retry-all-errors --max-time 5 -o /dev/null http://127.0.0.1/health".into(),
            format!("curl (real) -fsS --retry 5 --max-time 30 -K - -X POST -H Content-Type: application/json -d {{}} -o /dev/null {url}/api/v1/edge-nodes/{id}/ready"),
        ]
    );
    assert!(
        !log.iter().any(|line| line.contains(&token)),
        "the token is on a command line"
    );
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "the download is cleaned up"
    );

    // The real binary installed where the unit runs it.
    let installed = root.join("usr/local/bin/kokoa-edge");
    assert_eq!(mode(&installed), 0o755);
    assert_eq!(sha256(installed.to_str().unwrap()), sha256(EDGE));

    // The credential, private, where the agent reads it by default.
    let path = root.join("var/lib/kokoa-edge/credential.json");
    assert_eq!(mode(&path), 0o600);
    let credential: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(credential["node_id"], id.as_str());
    assert_eq!(credential["control_plane_url"], url.as_str());
    let credential = credential["credential"].as_str().unwrap().to_owned();

    // The control plane: the edge is ready (active), the token used up, the credential good.
    let (status, edge) = call(
        reqwest::Method::GET,
        &format!("/api/v1/edge-nodes/{id}"),
        Some(admin.as_str()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{edge}");
    assert_eq!(edge["status"], "active", "{edge}");
    let (status, body) = call(
        reqwest::Method::POST,
        "/api/v1/enroll",
        None,
        Some(json!({"token": token})),
    )
    .await;
    assert_eq!(status, 401, "the enrollment token works twice: {body}");
    let (status, body) = call(
        reqwest::Method::GET,
        "/api/v1/edge-nodes/me/config",
        Some(&credential),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
