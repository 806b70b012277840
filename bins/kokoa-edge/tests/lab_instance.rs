//! kokoa-provision's lab provider with the real agent: an instance is made from rendered
//! user data on a bridge the test built, enrolls with a real control plane (kokoa-control's
//! API over SQLite, bound inside a namespace on that bridge), runs the real `kokoa-edge run`
//! with the real nginx, reports ready by itself, serves `/health` on its address, and is
//! destroyed with every process it started (nginx included). Needs root and nginx.

mod common;

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use common::netns::{Namespaces, Seen, ip, listen_in};
use kokoa_control::{
    AppState, api,
    config::Database,
    runtime::{ProvisionerEntry, RuntimeSettings},
};
use kokoa_core::{Name, Role, SubnetPool};
use kokoa_provision::{
    AgentSource, EdgeBootstrap, InstanceConfig, InstanceStatus, Provisioner, Secret,
    lab::{LabConfig, LabProvisioner},
    render_user_data,
};
use kokoa_store::MasterKey;
use serde_json::{Value, json};

const EDGE: &str = env!("CARGO_BIN_EXE_kokoa-edge");
const NGINX: &str = "/usr/sbin/nginx";
const CONTROL: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);
const FIRST: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 30);

fn serve(listener: TcpListener, router: axum::Router) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
}

/// `GET http://ADDRESS/health` from namespace `ns`: status code and body.
fn health_from(ns: &str, address: Ipv4Addr) -> (String, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "--max-time",
            "2",
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("http://{address}/health"))
        .output()
        .expect("curl runs (apt-get install -y --no-install-recommends curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_instance_enrolls_serves_and_is_destroyed_with_the_real_agent() {
    let namespaces = Namespaces::new("li");
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} not found: apt-get install -y --no-install-recommends nginx"
    );
    // The bridge, and the control plane's host on it.
    let hub = namespaces.add("h");
    let control = namespaces.add("c");
    ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &hub, "link", "set", "br0", "up"]);
    ip(&[
        "link", "add", "eth0", "netns", &control, "type", "veth", "peer", "name", &control,
        "netns", &hub,
    ]);
    ip(&["-n", &hub, "link", "set", &control, "master", "br0"]);
    ip(&["-n", &hub, "link", "set", &control, "up"]);
    ip(&[
        "-n",
        &control,
        "addr",
        "add",
        &format!("{CONTROL}/24"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", &control, "link", "set", "eth0", "up"]);

    // The control plane: edges reach it on the bridge, the test on loopback.
    let dir = tempfile::tempdir().unwrap();
    // nginx's workers (www-data) read the instance's files under it.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let [agents] =
        <[TcpListener; 1]>::try_from(listen_in(&control, &[SocketAddr::from((CONTROL, 0))]))
            .unwrap();
    let url = format!("http://{}", agents.local_addr().unwrap());
    let lab = LabProvisioner::new(LabConfig {
        hub_netns: hub.clone(),
        bridge: "br0".into(),
        network: "10.97.0.0/24".parse().unwrap(),
        first_address: FIRST,
        last_address: Ipv4Addr::new(10, 97, 0, 31),
        gateway: None,
        dir: dir.path().join("vps"),
        edge_binary: EDGE.into(),
        nginx_binary: NGINX.into(),
        wireguard: "wireguard-go".into(),
        netns_prefix: format!("{}v", namespaces.tag),
        regions: vec![Name::parse("lab-a").unwrap()],
    })
    .unwrap();
    // The control plane knows the provider, as the edge automation's would; its duties
    // do not run here: the test drives the provisioner.
    let mut settings = RuntimeSettings::default();
    settings.edges.provisioners.insert(
        "lab".into(),
        ProvisionerEntry {
            provisioner: Arc::new(lab.clone()),
            image: "debian-12".into(),
            size: "any".into(),
            ssh_key_id: None,
        },
    );
    let store = kokoa_control::open_store(&Database::Sqlite(dir.path().join("kokoa.db")))
        .await
        .unwrap();
    let state = AppState::with_settings(
        store,
        MasterKey::generate(),
        SubnetPool::default(),
        &url,
        settings,
    );
    let (_, admin) = api::issue_api_token(&state, Name::parse("admin").unwrap(), Role::Admin)
        .await
        .unwrap();
    let router = api::router(state);
    let seen = Seen::default();
    serve(agents, seen.record(router.clone()));
    let here = TcpListener::bind("127.0.0.1:0").unwrap();
    here.set_nonblocking(true).unwrap();
    let api_url = format!("http://{}", here.local_addr().unwrap());
    serve(here, router);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let admin_call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = client
            .request(method, format!("{api_url}{path}"))
            .bearer_auth(admin.as_str());
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
    let (status, edge) = admin_call(
        reqwest::Method::POST,
        "/api/v1/edge-nodes",
        Some(json!({"provider": "lab", "region": "lab-a", "name": "edge-lab-a-01"})),
    )
    .await;
    assert_eq!(status, 202, "{edge}");
    let id = edge["id"].as_str().unwrap().to_owned();
    let (status, enrollment) = admin_call(
        reqwest::Method::POST,
        "/api/v1/enrollments",
        Some(json!({"node_kind": "edge", "node_id": id})),
    )
    .await;
    assert_eq!(status, 201, "{enrollment}");

    let user_data = render_user_data(&EdgeBootstrap {
        control_plane_url: url.clone(),
        node_id: id.parse().unwrap(),
        enrollment_token: Secret::new(enrollment["token"].as_str().unwrap()),
        agent: AgentSource::Package {
            name: "kokoa-edge".into(),
        },
        ca_pin: None,
    })
    .unwrap();
    let started = Instant::now();
    let instance = lab
        .create_instance(&InstanceConfig {
            provider: Name::parse("lab").unwrap(),
            region: Name::parse("lab-a").unwrap(),
            size: Name::parse("any").unwrap(),
            image: "debian-12".into(),
            ssh_key_id: None,
            user_data,
            name: Name::parse("edge-lab-a-01").unwrap(),
            tags: vec![],
            address: None,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let log = || fs::read_to_string(lab.log_path(&instance.id)).unwrap_or_default();

    // Ready by itself: the control plane accepted its ready call, and it serves /health.
    let ready = format!("POST /api/v1/edge-nodes/{id}/ready 200 kokoa-edge");
    let ready_after = loop {
        if seen.lines().contains(&ready) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "edge {id} did not report ready within 20 s; requests: {:?}; instance log:\n{}",
            seen.lines(),
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("created to ready in {:.2} s", ready_after.as_secs_f64());
    let lines = seen.lines();
    assert_eq!(lines[0], "POST /api/v1/enroll 200 kokoa-edge", "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("GET /api/v1/edge-nodes/me/config")
                && l.ends_with(" 200 kokoa-edge")),
        "{lines:?}"
    );
    assert_eq!(
        lab.instance_status(&instance.id).await.unwrap(),
        InstanceStatus::Running {
            ipv4: Some(FIRST),
            ipv6: None
        }
    );
    let (code, body) = health_from(&control, FIRST);
    assert_eq!(code, "200", "{body}\n{}", log());
    assert!(!body.trim().is_empty(), "an empty /health page");

    let pids: Vec<u32> = ip(&["netns", "pids", instance.id.as_str()])
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let nginx = pids
        .iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "nginx")
        })
        .count();
    assert!(nginx >= 2, "nginx master and workers expected in {pids:?}");
    let destroying = Instant::now();
    lab.destroy_instance(&instance.id).await.unwrap();
    eprintln!("destroyed in {:.2} s", destroying.elapsed().as_secs_f64());
    assert_eq!(
        lab.instance_status(&instance.id).await.unwrap(),
        InstanceStatus::Gone
    );
    for pid in pids {
        // Gone, or a zombie not yet reaped by its parent.
        let alive = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        });
        assert!(!alive, "process {pid} outlived its instance");
    }
    assert_eq!(
        namespaces.existing().len(),
        2,
        "{:?}",
        namespaces.existing()
    );
}
