//! The cloud-init user data's bootstrap script, run for real: `render_user_data` renders
//! it, the test writes the files it names and runs its command against a real control
//! plane (kokoa-control's API over SQLite, started by the test) with the real
//! `kokoa-edge enroll`, `install`, `sha256sum` and `curl`. Stand-ins replace only what
//! would change this machine or reach the Internet: `apt-get` (installs nothing),
//! `systemctl` (starting `kokoa-edge.service` runs the unit's `ExecStart` in the
//! background, so the real agent and nginx answer the script's `/health` wait and send
//! heartbeats), and the agent's download, which hands over the `kokoa-edge` binary under
//! test. The agent reports the edge ready itself; the control plane's own duties note it.
//!
//! Where the script runs: in a network namespace the test made, so `http://127.0.0.1/health`
//! and the control plane's `http://127.0.0.1:PORT` are the test's own (the control plane's
//! socket is bound inside it), and in a private mount namespace with the test's directories
//! bound over `/usr/local/bin` and `/var/lib`. The script runs unchanged, with its real
//! paths: it installs the agent as `/usr/local/bin/kokoa-edge` (where the unit runs it), and
//! `kokoa-edge enroll` writes the credential to `/var/lib/kokoa-edge/credential.json`, where
//! the agent reads it by default. Overriding those paths with environment variables instead
//! would leave the agreement between the script's paths, the unit and the agent's defaults
//! untested. The files the user data writes (`/etc/kokoa-edge/bootstrap.conf`, the script,
//! the unit) are written under the test's directory and the command is run with those
//! paths. Needs root and nginx. The script's `/health` wait takes one retry (5 s): the
//! agent starts nginx a moment after `systemctl` returns.

mod common;

use std::{
    fs,
    net::TcpListener,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command as StdCommand,
    time::Duration,
};

use axum::Router;
use common::netns::{Namespaces, Seen, listen_in};
use kokoa_control::{AppState, api, config::Database};
use kokoa_core::{Name, Role, SubnetPool};
use kokoa_provision::{AgentSource, EdgeBootstrap, Secret, render_user_data};
use kokoa_store::MasterKey;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const EDGE: &str = env!("CARGO_BIN_EXE_kokoa-edge");
const AGENT_URL: &str = "https://downloads.kokoa.invalid/kokoa-edge";

const APT_GET: &str = r#"#!/bin/sh
# Stand-in for apt-get: nothing is installed.
echo "apt-get $*" >>"$LOG"
"#;

const SYSTEMCTL: &str = r#"#!/bin/sh
# Stand-in for systemctl: starting kokoa-edge.service runs the unit's ExecStart in the
# background, as systemd would; nothing else is done.
echo "systemctl $*" >>"$LOG"
if [ "$*" = "enable --now kokoa-edge.service" ]; then
    exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
    $exec_start </dev/null >>"$AGENT_LOG" 2>&1 &
fi
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
        ("/usr/bin/unshare", "util-linux"),
        ("/usr/bin/sha256sum", "coreutils"),
        ("/usr/sbin/nginx", "nginx"),
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
    let [agents] =
        <[TcpListener; 1]>::try_from(listen_in(&netns, &["127.0.0.1:0".parse().unwrap()])).unwrap();
    let port = agents.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let store = kokoa_control::open_store(&Database::Sqlite(dir.path().join("kokoa.db")))
        .await
        .unwrap();
    let state = AppState::new(store, MasterKey::generate(), SubnetPool::default(), &url);
    let (_, admin) = api::issue_api_token(&state, Name::parse("admin").unwrap(), Role::Admin)
        .await
        .unwrap();
    let router = api::router(state.clone());
    let seen = Seen::default();
    serve(agents, seen.record(router.clone()));
    let here = TcpListener::bind("127.0.0.1:0").unwrap();
    here.set_nonblocking(true).unwrap();
    let here_url = format!("http://{}", here.local_addr().unwrap());
    serve(here, router);
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
    // An edge registered by hand: the API answers with its single-use enrollment token,
    // which the user data carries to the VPS.
    let (status, edge) = call(
        reqwest::Method::POST,
        "/api/v1/edge-nodes",
        Some(admin.as_str()),
        Some(json!({
            "provider": "manual", "region": "lab-a", "name": "edge-boot-01",
            "public_ip": "127.0.0.1",
        })),
    )
    .await;
    assert_eq!(status, 202, "{edge}");
    let id = edge["id"].as_str().unwrap().to_owned();
    let token = edge["enrollment_token"].as_str().unwrap().to_owned();

    let user_data = render_user_data(&EdgeBootstrap {
        control_plane_url: url.clone(),
        node_id: id.parse().unwrap(),
        enrollment_token: Secret::new(token.clone()),
        agent: AgentSource::Download {
            url: AGENT_URL.into(),
            sha256: sha256(EDGE),
        },
        ca_pin: None,
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
    assert!(unit.contains("ExecStart=kokoa-edge run\n"), "{unit}");

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
    let agent_log = dir.path().join("agent.log");
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
        .env("UNIT", root.join("etc/systemd/system/kokoa-edge.service"))
        .env("AGENT_LOG", &agent_log)
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
        stdout.ends_with(&format!("kokoa-edge-bootstrap: edge {id} serves\n")),
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
            "apt-get install -y --no-install-recommends wireguard-tools nginx curl ca-certificates".into(),
            "systemctl disable --now nginx.service".into(),
            format!("curl -fsSL --proto =https --retry 5 --max-time 600 -o <tmp> {AGENT_URL}"),
            "systemctl daemon-reload".into(),
            "systemctl enable --now kokoa-edge.service".into(),
            "curl (real) -fsS --retry 60 --retry-delay 5 --retry-all-errors --max-time 5 -o /dev/null http://127.0.0.1/health".into(),
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

    // The control plane accepted the enrollment and the agent's calls with the credential,
    // its ready report among them.
    let lines = seen.lines();
    assert_eq!(lines[0], "POST /api/v1/enroll 200 kokoa-edge", "{lines:?}");
    let ready = format!("POST /api/v1/edge-nodes/{id}/ready 200 kokoa-edge");
    assert!(lines.contains(&ready), "{lines:?}");
    // Its duties, a round at a time, note the edge enrolled (heartbeats) and ready.
    let waiting = std::time::Instant::now();
    let edge = loop {
        kokoa_control::runtime::tick(&state).await.unwrap();
        let (status, edge) = call(
            reqwest::Method::GET,
            &format!("/api/v1/edge-nodes/{id}"),
            Some(admin.as_str()),
            None,
        )
        .await;
        assert_eq!(status, 200, "{edge}");
        if edge["lifecycle"]["steps"]["reported_ready"].is_string() {
            break edge;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(15),
            "the edge is not noted ready after 15 s: {edge}\nagent:\n{}",
            fs::read_to_string(&agent_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(edge["lifecycle"]["steps"]["enrolled"].is_string(), "{edge}");
    assert!(edge["last_heartbeat"].is_string(), "{edge}");
    let lines = seen.lines();
    assert!(
        lines.contains(&"POST /api/v1/heartbeat 200 kokoa-edge".to_owned()),
        "{lines:?}"
    );

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
