//! The origin's `origin-config.tar.gz`: unpacked and checked the way an administrator's
//! origin would use it.

mod common;

use std::{collections::BTreeMap, io::Read as _, process::Command};

use common::{Server, backends};
use flate2::read::GzDecoder;
use kokoa_wg::{Config, Format};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn the_origin_bundle_holds_a_working_installation() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let origin = s.origin("home-server").await;
        let id = origin["id"].as_str().unwrap();
        s.admin(
            Method::POST,
            "/api/v1/routes",
            Some(json!({"hostname": "app.hoge.com", "origin_id": id, "target_port": 8080})),
            201,
        )
        .await;
        s.enrolled_edge(None).await;
        // An edge with no public address yet cannot be dialled: not in wg0.conf.
        s.admin(
            Method::POST,
            "/api/v1/edge-nodes",
            Some(json!({"provider": "vultr", "region": "nrt"})),
            202,
        )
        .await;

        let response = s
            .send(
                Method::GET,
                &format!("/api/v1/origins/{id}/config"),
                Some(&s.admin),
                None,
                &[],
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/gzip");
        assert_eq!(
            response.headers()["content-disposition"],
            "attachment; filename=\"origin-config.tar.gz\""
        );
        let bytes = response.bytes().await.unwrap();
        let mut files = BTreeMap::new();
        let mut archive = tar::Archive::new(GzDecoder::new(&bytes[..]));
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mode = entry.header().mode().unwrap();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            files.insert(path, (mode, text));
        }
        let names: Vec<&str> = files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "credentials.json",
                "nginx/nginx.conf",
                "scripts/install.sh",
                "systemd/kokoa-origin.service",
                "wireguard/wg0.conf"
            ]
        );

        // wg0.conf: the origin's address, one peer per dialable edge, and no private key
        // (the origin's agent makes its own and completes the file with it).
        let (mode, wg0) = &files["wireguard/wg0.conf"];
        assert_eq!(*mode, 0o600);
        assert!(!wg0.contains("PrivateKey"), "{wg0}");
        let own = kokoa_wg::PrivateKey::generate();
        let wg = Config::parse_template(wg0, Format::WgQuick, own.clone()).unwrap();
        assert_eq!(wg.interface.private_key, own);
        assert_eq!(wg.interface.addresses[0].to_string(), "10.0.1.1/24");
        assert_eq!(wg.peers.len(), 1, "{wg0}");
        let peer = &wg.peers[0];
        assert_eq!(
            peer.endpoint.as_ref().unwrap().to_string(),
            "203.0.113.10:51820"
        );
        assert_eq!(peer.allowed_ips.len(), 1);
        assert_eq!(peer.allowed_ips[0].to_string(), "10.0.1.10/32");
        assert!(
            peer.persistent_keepalive.is_some(),
            "the origin dials out, so it keeps alive"
        );

        // nginx.conf: the route's host name on the tunnel address, to the local service.
        let (_, nginx) = &files["nginx/nginx.conf"];
        assert!(nginx.contains("listen 10.0.1.1:8080;"), "{nginx}");
        assert!(nginx.contains("server_name app.hoge.com;"), "{nginx}");
        assert!(
            nginx.contains("proxy_pass http://127.0.0.1:8080;"),
            "{nginx}"
        );

        // install.sh: a POSIX script that does what the brief says, in order.
        let (mode, script) = &files["scripts/install.sh"];
        assert_eq!(*mode, 0o755);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("install.sh");
        std::fs::write(&path, script).unwrap();
        let check = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        // The steps, in order, in the code after the header comment.
        let code = &script[script.find("set -eu").unwrap()..];
        let steps = [
            "id -u",
            "apt-get install -y --no-install-recommends",
            // Without an agent: the one of agent.conf, checked, with the bundle's unit.
            "curl -fsSL",
            "sha256sum -c -",
            "install -m 0755 \"$download\" /usr/local/bin/kokoa-origin",
            "\"$BUNDLE/systemd/kokoa-origin.service\" /etc/systemd/system/kokoa-origin.service",
            "/etc/kokoa/credentials.json",
            // With the agent: enroll once, start it, done.
            "kokoa-origin enroll --state-dir \"$STATE\" --bundle /etc/kokoa/credentials.json",
            "systemctl enable --now kokoa-origin",
            "nohup kokoa-origin run",
        ];
        let positions: Vec<usize> = steps
            .iter()
            .map(|step| code.find(step).unwrap_or_else(|| panic!("{step} missing")))
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "steps out of order: {positions:?}"
        );
        assert!(script.contains("install -m 0600 \"$BUNDLE/credentials.json\""));

        // credentials.json: a single-use token that enrolls this origin.
        let (mode, credentials) = &files["credentials.json"];
        assert_eq!(*mode, 0o600);
        let credentials: Value = serde_json::from_str(credentials).unwrap();
        assert_eq!(credentials["control_plane_url"], "https://cp.example.com");
        assert_eq!(credentials["origin_id"], id);
        let token = credentials["enrollment_token"].as_str().unwrap();
        let (status, enrolled) = s
            .call(
                Method::POST,
                "/api/v1/enroll",
                None,
                Some(json!({"token": token})),
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(enrolled["node"], json!({"kind": "origin", "id": id}));
        let (status, _) = s
            .call(
                Method::POST,
                "/api/v1/enroll",
                None,
                Some(json!({"token": token})),
            )
            .await;
        assert_eq!(status, 401, "the bundle's token is single use");

        // The enrolled origin pulls the same wg0.conf.
        let credential = enrolled["credential"].as_str().unwrap();
        let (_, own) = s
            .call(
                Method::GET,
                "/api/v1/origins/me/config",
                Some(credential),
                None,
            )
            .await;
        assert_eq!(own["wg0_conf"].as_str().unwrap(), wg0);
        assert_eq!(own["nginx_conf"].as_str().unwrap(), nginx);
        assert_eq!(
            own["routes"],
            json!([{"hostname": "app.hoge.com", "target_port": 8080}])
        );

        s.admin(Method::GET, "/api/v1/origins/org_nope/config", None, 404)
            .await;
    }
}

/// A network namespace with the origin's tunnel address on its loopback, and the nginx
/// started in it; both removed on drop, also when the test fails.
struct OriginHost {
    name: String,
    dir: tempfile::TempDir,
}

impl OriginHost {
    fn new() -> Self {
        for tool in ["ip", "nginx", "curl"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output();
            assert!(
                found.is_ok_and(|o| o.status.success()),
                "{tool} is needed: apt-get install -y --no-install-recommends iproute2 nginx curl"
            );
        }
        let name = format!("kkctl-{}", &kokoa_core::OriginId::new().as_str()[4..12]);
        let host = Self {
            name,
            dir: tempfile::tempdir().unwrap(),
        };
        host.ip(&["netns", "add", &host.name]);
        host.ip(&["-n", &host.name, "link", "set", "lo", "up"]);
        host.ip(&["-n", &host.name, "addr", "add", "10.0.1.1/32", "dev", "lo"]);
        host
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn exec(&self, command: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(command)
            .output()
            .unwrap()
    }

    /// `curl` inside the namespace: status code and body.
    fn get(&self, url: &str, host: &str) -> (String, String) {
        let out = self.exec(&[
            "curl",
            "-s",
            "-m",
            "5",
            "-H",
            &format!("Host: {host}"),
            "-w",
            "\n%{http_code}",
            url,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_owned(), body.to_owned())
    }
}

impl Drop for OriginHost {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("nginx.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test]
async fn the_origin_proxy_serves_each_route_on_the_tunnel_address() {
    let s = Server::start(&common::Backend::Sqlite).await;
    let origin = s.origin("home-server").await;
    let id = origin["id"].as_str().unwrap();
    for (hostname, port) in [("app.hoge.com", 8080), ("wiki.fuga.com", 8000)] {
        s.admin(
            Method::POST,
            "/api/v1/routes",
            Some(json!({"hostname": hostname, "origin_id": id, "target_port": port})),
            201,
        )
        .await;
    }
    let credential = s.enrolled_origin(id).await;
    let (_, own) = s
        .call(
            Method::GET,
            "/api/v1/origins/me/config",
            Some(&credential),
            None,
        )
        .await;

    // The origin's nginx: the generated file, plus two stand-in services on loopback.
    let host = OriginHost::new();
    let dir = host.dir.path();
    std::fs::write(dir.join("origin.conf"), own["nginx_conf"].as_str().unwrap()).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/t1;\nproxy_temp_path {d}/t2;\n\
             fastcgi_temp_path {d}/t3;\nuwsgi_temp_path {d}/t4;\nscgi_temp_path {d}/t5;\n\
             include {d}/origin.conf;\n\
             server {{ listen 127.0.0.1:8080; return 200 \"app backend for $host\"; }}\n\
             server {{ listen 127.0.0.1:8000; return 200 \"wiki backend\"; }}\n}}\n"
        ),
    )
    .unwrap();
    let conf = dir.join("nginx.conf");
    let conf = conf.to_str().unwrap();
    let started = host.exec(&["nginx", "-p", dir.to_str().unwrap(), "-c", conf]);
    assert!(
        started.status.success(),
        "nginx: {}",
        String::from_utf8_lossy(&started.stderr)
    );

    assert_eq!(
        host.get("http://10.0.1.1:8080/", "app.hoge.com"),
        ("200".into(), "app backend for app.hoge.com".into()),
        "the route's host name reaches its service with its Host header"
    );
    assert_eq!(
        host.get("http://10.0.1.1:8000/x", "wiki.fuga.com"),
        ("200".into(), "wiki backend".into())
    );
    assert_eq!(
        host.get("http://10.0.1.1:8080/", "evil.example.com").0,
        "404",
        "unknown host names"
    );
    assert_eq!(
        host.get("http://10.0.1.1:8000/", "app.hoge.com").0,
        "404",
        "a route only on its port"
    );
    assert_eq!(
        host.get("http://10.0.1.1/health", "10.0.1.1"),
        ("200".into(), "ok\n".into())
    );
}
