//! `check --packaged`: the release artifacts, as a self-hoster installs them. The lab's
//! control plane is the binary of the `kokoa-control` Debian package, on TLS with its own CA
//! (every request of the lab trusts it by the pin `init` printed), handing out the agents
//! the package carries at `/downloads/`; the lab's edges and origins run agents downloaded
//! from it and checked against its `SHA256SUMS`. Then:
//!
//! - P1. the artifacts and their sizes;
//! - P2. a VPS made from the rendered cloud-init alone: the lab provider downloads the
//!   agent from the URL in the user data, checks its SHA-256, enrolls it with the pin and
//!   starts it; timed from the create request to HTTPS answers through it; then deleted;
//! - P3. an enrollment with another pin is refused before the token is sent;
//! - P4. an origin installed as an administrator installs one: its bundle downloaded, then
//!   `sudo sh scripts/install.sh` on a new home server (a namespace of its own, and a mount
//!   namespace where the script's system paths are empty), which downloads the agent,
//!   checks it, enrolls it with the pin and starts it; timed until its app answers through
//!   both edges; then removed.

use std::{
    io::Write,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{
    Error,
    check::{Step, get_at, report},
    lab::{AGENTS, Lab, control_url, wait_for},
    net,
    plan::APPS,
    vps,
};

/// Runs P1-P4, printing a line each; the first failure is returned.
pub async fn run(lab: &mut Lab, out: &mut dyn Write) -> Result<(), Error> {
    let mut first_failure = None;
    report(
        out,
        "P1",
        "release artifacts",
        artifacts(lab),
        &mut first_failure,
    );
    let result = vps_from_cloud_init(lab).await;
    report(out, "P2", "VPS from cloud-init", result, &mut first_failure);
    let result = wrong_pin(lab).await;
    report(out, "P3", "wrong CA pin", result, &mut first_failure);
    let result = origin_from_bundle(lab).await;
    report(
        out,
        "P4",
        "origin from its bundle's install.sh",
        result,
        &mut first_failure,
    );
    first_failure.map_or(Ok(()), Err)
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `POST /api/v1/edge-nodes` with `body`: the new edge's id and the whole answer.
async fn create_edge(
    lab: &Lab,
    body: serde_json::Value,
) -> Result<(String, serde_json::Value), String> {
    let created = lab
        .api
        .json(
            Method::POST,
            "/api/v1/edge-nodes",
            Some(body),
            StatusCode::ACCEPTED,
        )
        .await
        .map_err(text)?;
    let id = created["id"]
        .as_str()
        .ok_or("no id in the answer")?
        .to_owned();
    Ok((id, created))
}

/// P1. Every artifact with its size, and the agents as downloaded.
fn artifacts(lab: &Lab) -> Step {
    let packaged = lab.packaged.as_ref().ok_or("not a --packaged lab")?;
    let mut sizes = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&packaged.artifacts)
        .map_err(text)?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".deb") || name.ends_with(".tar.gz") {
            let size = entry.metadata().map_err(text)?.len();
            sizes.push(format!("{name} {}", megabytes(size)));
        }
    }
    if !sizes.iter().any(|s| s.starts_with("kokoa-control_")) {
        return Err(format!(
            "no kokoa-control package in {}",
            packaged.artifacts.display()
        ));
    }
    let mut agents = Vec::new();
    for agent in AGENTS {
        let path = lab.bins().path(agent).map_err(text)?;
        let size = std::fs::metadata(&path).map_err(text)?.len();
        agents.push(format!("{agent} {}", megabytes(size)));
    }
    Ok(format!(
        "{}; agents downloaded from {control}/downloads/ over TLS and checked against its \
         SHA256SUMS: {}",
        sizes.join(", "),
        agents.join(", "),
        control = control_url(),
    ))
}

/// P2. An edge created through the lab provider, from its user data alone.
async fn vps_from_cloud_init(lab: &mut Lab) -> Step {
    // The edge automation creates VPSes; it is off until the failover steps.
    switch_provisioner(lab, true).await?;
    let created = create_and_delete(lab).await;
    switch_provisioner(lab, false).await?;
    created
}

async fn switch_provisioner(lab: &Lab, on: bool) -> Result<(), String> {
    lab.api
        .json(
            Method::PUT,
            "/api/v1/modules/edge_provisioner",
            Some(json!({ "enabled": on })),
            StatusCode::OK,
        )
        .await
        .map(drop)
        .map_err(text)
}

async fn create_and_delete(lab: &mut Lab) -> Step {
    let asked = Instant::now();
    let (id, _) = create_edge(
        lab,
        json!({"provider": "lab", "region": vps::REGIONS[0], "name": "packaged"}),
    )
    .await?;
    let path = format!("/api/v1/edge-nodes/{id}");
    let api = &lab.api;
    let served = wait_for(
        "the new VPS to serve every app over HTTPS",
        Duration::from_secs(150),
        Duration::from_millis(250),
        || async {
            let edge = api
                .json(Method::GET, &path, None, StatusCode::OK)
                .await
                .ok()?;
            if edge["status"] != "active" {
                return None;
            }
            let address: Ipv4Addr = edge["public_ip"].as_str()?.parse().ok()?;
            for app in APPS {
                let reply = get_at(address, app.hostname).await.ok()?;
                if reply.status != 200 {
                    return None;
                }
            }
            Some(edge)
        },
    )
    .await;
    let outcome = match served {
        Ok(edge) => {
            let serving_in = asked.elapsed();
            let instance = edge["instance_id"].as_str().unwrap_or_default().to_owned();
            let log = vps::config(&lab.dir, lab.bins())
                .map_err(text)?
                .dir
                .join(&instance)
                .join("edge.log");
            let log =
                std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let url = format!("{}/downloads/kokoa-edge", control_url());
            match log
                .lines()
                .find(|line| line.contains(&format!("downloaded kokoa-edge from {url}")))
            {
                Some(line) => Ok(format!(
                    "create request to HTTPS answers of both apps through it in {:.1} s; {}",
                    serving_in.as_secs_f64(),
                    line.trim()
                )),
                None => Err(format!(
                    "{id} serves, but its agent was not the download of {url}:\n{log}"
                )),
            }
        }
        Err(e) => {
            // What the edge and its VPS got to.
            let edge = api
                .json(Method::GET, &path, None, StatusCode::OK)
                .await
                .unwrap_or_default();
            let log = edge["instance_id"]
                .as_str()
                .and_then(|instance| {
                    let dir = vps::config(&lab.dir, lab.bins()).ok()?.dir;
                    std::fs::read_to_string(dir.join(instance).join("edge.log")).ok()
                })
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            Err(format!(
                "{e}; the edge: status {}, phase {}, address {}, last error {}; its VPS's log \
                 ends:\n{}",
                edge["status"],
                edge["lifecycle"]["phase"],
                edge["public_ip"],
                edge["agent_error"],
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        }
    };
    // The rest of the scenario counts on the lab's own edges only.
    let deleted = async {
        lab.api
            .send(Method::DELETE, &path, None, StatusCode::ACCEPTED)
            .await
            .map_err(text)?;
        wait_for(
            format!("{id} to be deleted"),
            Duration::from_secs(90),
            Duration::from_millis(500),
            || async {
                let edge = api
                    .json(Method::GET, &path, None, StatusCode::OK)
                    .await
                    .ok()?;
                (edge["status"] == "deleted").then_some(())
            },
        )
        .await
        .map_err(text)
    };
    let deleted = deleted.await;
    match (outcome, deleted) {
        (Ok(figure), Ok(())) => Ok(format!("{figure}; deleted again")),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    }
}

/// P3. `kokoa-edge enroll` with a pin that is not the control plane's: refused, and the
/// token is still good afterwards (it was never sent).
async fn wrong_pin(lab: &mut Lab) -> Step {
    let (id, created) = create_edge(
        lab,
        json!({"provider": "manual", "region": "lab", "name": "wrong-pin"}),
    )
    .await?;
    let token = created["enrollment_token"]
        .as_str()
        .ok_or("no enrollment token in the answer")?
        .to_owned();
    let edge = lab.bins().path("kokoa-edge").map_err(text)?;
    let state = tempfile::tempdir().map_err(text)?;
    let wrong = format!("sha256:{}", "0".repeat(64));
    let enroll = |pin: String| {
        let mut command = tokio::process::Command::new(&edge);
        command
            .args([
                "enroll",
                "--control-plane",
                &control_url(),
                "--ca-pin",
                &pin,
            ])
            .arg("--state-dir")
            .arg(state.path())
            .env("KOKOA_ENROLL_TOKEN", &token)
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(30), command.output())
                .await
                .map_err(|_| "kokoa-edge enroll did not finish within 30 s".to_owned())?
                .map_err(text)
        }
    };
    let refused = enroll(wrong.clone()).await?;
    let stderr = String::from_utf8_lossy(&refused.stderr).into_owned();
    let outcome = if refused.status.success() {
        Err(format!("kokoa-edge enroll --ca-pin {wrong} succeeded"))
    } else if !stderr.contains(&format!("pinned {wrong}")) {
        Err(format!("refused, but without naming the pin: {stderr}"))
    } else {
        // The right pin still enrolls with the same token: the refusal sent nothing.
        let right = enroll(lab.api.ca_pin().to_string()).await?;
        if right.status.success() {
            let reason = stderr
                .lines()
                .find(|l| l.contains("pinned"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            Ok(format!(
                "refused before the token was sent ({reason}); the right pin then enrolls with \
                 the same token"
            ))
        } else {
            Err(format!(
                "the right pin did not enroll afterwards: {}",
                String::from_utf8_lossy(&right.stderr)
            ))
        }
    };
    lab.api
        .send(
            Method::DELETE,
            &format!("/api/v1/edge-nodes/{id}"),
            None,
            StatusCode::ACCEPTED,
        )
        .await
        .map_err(text)?;
    outcome
}

/// The home server of P4: its namespace, the bridge port and address (clear of the fixed
/// hosts and of the VPS range), and the port its app listens on.
const HOME: (&str, &str, Ipv4Addr, u16) = ("kl-home", "p-home", Ipv4Addr::new(10, 99, 0, 25), 8090);
/// The host name P4 publishes.
const HOME_HOSTNAME: &str = "home.hoge.test";
/// The paths `install.sh` writes to, each an empty tmpfs in its mount namespace (the
/// machine running the lab keeps its own), and `/run/systemd` hidden so the script sees a
/// machine without systemd, as in a container. A mount point the machine lacks is made for
/// the step and removed after it: the machine is left as it was.
const HIDDEN: [&str; 5] = [
    "/usr/local/bin",
    "/etc/kokoa",
    "/var/lib/kokoa-origin",
    "/run/wireguard",
    "/run/systemd",
];

/// The mount points of [`HIDDEN`] this machine lacks, made (and recorded, so the lab's
/// teardown removes them should it stop half way).
fn mount_points(lab: &mut Lab) -> Result<Vec<std::path::PathBuf>, String> {
    let mut made = Vec::new();
    for path in HIDDEN.map(std::path::PathBuf::from) {
        if path.exists() {
            continue;
        }
        lab.ledger
            .record(|s| s.dirs.push(path.clone()))
            .map_err(text)?;
        std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        made.push(path);
    }
    Ok(made)
}

/// P4. An origin made through the API, its bundle downloaded and its `install.sh` run on a
/// new home server; the rest is up to the script and the agent it installs.
async fn origin_from_bundle(lab: &mut Lab) -> Step {
    let (ns, port, address, app_port) = HOME;
    let origin = lab
        .api
        .json(
            Method::POST,
            "/api/v1/origins",
            Some(json!({"name": "home", "services": [{"name": "web", "port": app_port}]})),
            StatusCode::CREATED,
        )
        .await
        .map_err(text)?;
    let id = origin["id"]
        .as_str()
        .ok_or("no id in the answer")?
        .to_owned();
    let made = mount_points(lab)?;
    let installed = install_and_serve(lab, &id, ns, port, address, app_port).await;
    // Gone again, so the later steps see the lab's own origins only.
    let _ = net::run(&crate::supervisor::Spec::root(
        [
            "sh",
            "-c",
            &format!("kill $(ip netns pids {ns}) 2>/dev/null; true"),
        ]
        .map(String::from)
        .to_vec(),
    ))
    .await;
    for dir in made.iter().rev() {
        match std::fs::remove_dir(dir) {
            // Not the teardown's any more: whatever is there later is not the lab's.
            Ok(()) => {
                let _ = lab.ledger.record(|s| s.dirs.retain(|d| d != dir));
            }
            Err(e) => eprintln!("kokoa-lab: cannot remove {}: {e}", dir.display()),
        }
    }
    let removed = async {
        let routes = lab
            .api
            .json(Method::GET, "/api/v1/routes", None, StatusCode::OK)
            .await
            .map_err(text)?;
        for route in routes["routes"].as_array().into_iter().flatten() {
            if route["hostname"] == HOME_HOSTNAME {
                let path = format!(
                    "/api/v1/routes/{}",
                    route["id"].as_str().unwrap_or_default()
                );
                lab.api
                    .send(Method::DELETE, &path, None, StatusCode::NO_CONTENT)
                    .await
                    .map_err(text)?;
            }
        }
        lab.api
            .send(
                Method::DELETE,
                &format!("/api/v1/origins/{id}"),
                None,
                StatusCode::NO_CONTENT,
            )
            .await
            .map_err(text)
    };
    let removed = removed.await;
    match (installed, removed) {
        (Ok(figure), Ok(_)) => Ok(format!("{figure}; removed again")),
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    }
}

async fn install_and_serve(
    lab: &mut Lab,
    id: &str,
    ns: &str,
    port: &str,
    address: Ipv4Addr,
    app_port: u16,
) -> Step {
    lab.api
        .json(
            Method::POST,
            "/api/v1/routes",
            Some(json!({"hostname": HOME_HOSTNAME, "origin_id": id,
                        "target_port": app_port, "certificate": "none"})),
            StatusCode::CREATED,
        )
        .await
        .map_err(text)?;
    net::add_host(&mut lab.ledger, ns, port, address)
        .await
        .map_err(text)?;
    let _app = net::serve_app_in(ns, "home", app_port).map_err(text)?;

    // What the administrator downloads and unpacks on the home server.
    let bundle = lab
        .api
        .send(
            Method::GET,
            &format!("/api/v1/origins/{id}/config"),
            None,
            StatusCode::OK,
        )
        .await
        .map_err(text)?;
    let home = lab.dir.join("home");
    let unpacked = home.join("origin-config");
    let logs = home.join("log");
    for dir in [&unpacked, &logs] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    tar::Archive::new(flate2::read::GzDecoder::new(&bundle[..]))
        .unpack(&unpacked)
        .map_err(|e| format!("unpack the bundle: {e}"))?;

    let started = Instant::now();
    let mut script = String::from("set -e; ");
    for path in HIDDEN {
        script.push_str(&format!("mount -t tmpfs tmpfs {path}; "));
    }
    script.push_str(&format!(
        "mount --bind {} /var/log; exec sh {}/scripts/install.sh",
        logs.display(),
        unpacked.display()
    ));
    let mut command = tokio::process::Command::new("ip");
    command
        .args(["netns", "exec", ns, "unshare", "-m", "sh", "-c", &script])
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .kill_on_drop(true);
    let ran = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .map_err(|_| "install.sh did not finish within 180 s".to_owned())?
        .map_err(text)?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    if !ran.status.success() {
        return Err(format!("install.sh failed ({}):\n{output}", ran.status));
    }
    let url = format!("{}/downloads/kokoa-origin", control_url());
    if !output.contains(&format!("Downloading kokoa-origin from {url}")) {
        return Err(format!(
            "install.sh did not download the agent from {url}:\n{output}"
        ));
    }
    let installed_in = started.elapsed();

    let edges = crate::plan::hosts(crate::plan::Role::Edge)
        .map(|h| h.address)
        .collect::<Vec<_>>();
    let served = wait_for(
        format!("{HOME_HOSTNAME} to answer from the home server through both edges"),
        Duration::from_secs(90),
        Duration::from_millis(250),
        || async {
            for edge in &edges {
                if !get_at(*edge, HOME_HOSTNAME).await.ok()?.is_from("home") {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    if let Err(e) = served {
        let log = std::fs::read_to_string(logs.join("kokoa-origin.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        return Err(format!(
            "{e}; install.sh said:\n{output}\nthe agent's log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(format!(
        "install.sh downloaded, checked and enrolled the agent in {:.1} s; {HOME_HOSTNAME} \
         answered from the home server through both edges {:.1} s after it started",
        installed_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ))
}
