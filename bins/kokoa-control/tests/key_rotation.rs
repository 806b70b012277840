//! WireGuard key rotation (SPEC §10.3) as the control plane drives it: the peers learn the
//! new key, the node switches only once they applied it, the old key goes only once the
//! node applied the new one. The hand-over on the hosts is tested in kokoa-wg (real
//! wireguard-go) and end to end in the lab.

mod common;

use common::{Backend, Server, assert_error};
use reqwest::Method;
use serde_json::{Value, json};

async fn get(s: &Server, path: &str, credential: &str) -> Value {
    let (status, body) = s.call(Method::GET, path, Some(credential), None).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn tick(s: &Server) {
    kokoa_control::runtime::tick(&s.state).await.unwrap();
}

/// The public key of a base64 private key.
fn public_of(private: &Value) -> String {
    kokoa_wg::PrivateKey::from_base64(private.as_str().unwrap())
        .unwrap()
        .public_key()
        .to_string()
}

struct Nodes {
    origin: String,
    origin_cred: String,
    edge: String,
    edge_cred: String,
}

impl Nodes {
    async fn new(s: &Server) -> Self {
        let origin = s.origin("home-server").await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let origin_cred = s.enrolled_origin(&origin).await;
        let (edge, edge_cred) = s.enrolled_edge(Some(&origin)).await;
        Self {
            origin,
            origin_cred,
            edge,
            edge_cred,
        }
    }

    async fn origin_config(&self, s: &Server) -> Value {
        get(s, "/api/v1/origins/me/config", &self.origin_cred).await
    }

    async fn edge_config(&self, s: &Server) -> Value {
        get(s, "/api/v1/edge-nodes/me/config", &self.edge_cred).await
    }

    /// The origin reports `hash` applied (or none).
    async fn origin_beat(&self, s: &Server, hash: Option<&Value>) {
        let mut body = json!({"node_id": self.origin, "status": "healthy"});
        if let Some(hash) = hash {
            body["config_hash"] = hash.clone();
        }
        s.heartbeat(&self.origin_cred, body).await;
    }

    /// The edge reports `hash` applied (or none).
    async fn edge_beat(&self, s: &Server, hash: Option<&Value>) {
        let mut body = json!({"node_id": self.edge, "status": "healthy", "tunnels": [
            {"origin_id": self.origin, "interface": "kk0", "status": "up"}]});
        if let Some(hash) = hash {
            body["config_hash"] = hash.clone();
        }
        s.heartbeat(&self.edge_cred, body).await;
    }

    async fn edge_public_key(&self, s: &Server) -> Value {
        let edge = s
            .admin(
                Method::GET,
                &format!("/api/v1/edge-nodes/{}", self.edge),
                None,
                200,
            )
            .await;
        edge["tunnels"][0]["public_key"].clone()
    }

    async fn origin_public_key(&self, s: &Server) -> Value {
        let origin = s
            .admin(
                Method::GET,
                &format!("/api/v1/origins/{}", self.origin),
                None,
                200,
            )
            .await;
        origin["wireguard_public_key"].clone()
    }
}

async fn event_kinds(s: &Server) -> Vec<String> {
    let listed = s
        .admin(Method::GET, "/api/v1/events?limit=200", None, 200)
        .await;
    listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn an_edge_key_switches_only_after_the_origin_learned_it_and_goes_only_after_the_edge_used_it()
 {
    let s = Server::start(&Backend::Sqlite).await;
    let n = Nodes::new(&s).await;
    // Both report, so neither is skipped as silent.
    n.origin_beat(&s, None).await;
    n.edge_beat(&s, None).await;
    let old = n.edge_public_key(&s).await;
    let private_before = n.edge_config(&s).await["tunnels"][0]["private_key"].clone();
    assert_eq!(public_of(&private_before), old.as_str().unwrap());

    let path = format!("/api/v1/edge-nodes/{}/rotate-keys", n.edge);
    let started = s.admin(Method::POST, &path, None, 202).await;
    let next = started["rotations"][0]["next_public_key"].clone();
    assert_eq!(started["rotations"][0]["origin_id"], n.origin.as_str());
    assert_ne!(next, old);
    let again = s.admin(Method::POST, &path, None, 409).await;
    assert!(
        assert_error(&again, "conflict")["message"]
            .as_str()
            .unwrap()
            .contains("being rotated already")
    );

    // 1. The origin learns the new key as a second peer without addresses.
    let prepared = n.origin_config(&s).await;
    let wg0 = prepared["wg0_conf"].as_str().unwrap();
    let next_peer = wg0
        .split("[Peer]")
        .find(|p| p.contains(&format!("PublicKey = {}", next.as_str().unwrap())))
        .expect("the new key is a peer");
    assert!(!next_peer.contains("AllowedIPs"), "{next_peer}");
    assert!(
        next_peer.contains("Endpoint = 203.0.113.10:"),
        "{next_peer}"
    );
    assert!(wg0.contains(&format!("PublicKey = {}", old.as_str().unwrap())));
    assert_eq!(prepared["key_changes"], json!([{"from": old, "to": next}]));
    // The edge keeps its key while the origin has not applied that configuration.
    tick(&s).await;
    n.origin_beat(&s, Some(&json!("an older hash"))).await;
    tick(&s).await;
    assert_eq!(
        n.edge_config(&s).await["tunnels"][0]["private_key"],
        private_before
    );

    // 2. The origin reports it applied: the edge switches.
    n.origin_beat(&s, Some(&prepared["config_hash"])).await;
    tick(&s).await;
    let switched = n.edge_config(&s).await;
    assert_eq!(
        public_of(&switched["tunnels"][0]["private_key"]),
        next.as_str().unwrap()
    );
    // The origin keeps both keys until the edge applied the new one.
    tick(&s).await;
    assert_eq!(n.edge_public_key(&s).await, old);
    assert_eq!(n.origin_config(&s).await["key_changes"][0]["to"], next);

    // 3. The edge reports it applied: the new key is the key, the old one is gone.
    n.edge_beat(&s, Some(&switched["config_hash"])).await;
    tick(&s).await;
    assert_eq!(n.edge_public_key(&s).await, next);
    let done = n.origin_config(&s).await;
    let wg0 = done["wg0_conf"].as_str().unwrap();
    assert!(!wg0.contains(old.as_str().unwrap()), "{wg0}");
    assert!(wg0.contains(&format!("PublicKey = {}", next.as_str().unwrap())));
    assert!(done.get("key_changes").is_none(), "{done}");
    assert_eq!(
        public_of(&n.edge_config(&s).await["tunnels"][0]["private_key"]),
        next.as_str().unwrap()
    );
    let kinds = event_kinds(&s).await;
    for kind in [
        "wireguard.rotation_started",
        "wireguard.rotation_switched",
        "wireguard.key_rotated",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    // A new rotation may start now.
    s.admin(Method::POST, &path, None, 202).await;
}

#[tokio::test]
async fn an_origin_key_switches_only_after_every_edge_learned_it() {
    let s = Server::start(&Backend::Sqlite).await;
    let n = Nodes::new(&s).await;
    n.origin_beat(&s, None).await;
    n.edge_beat(&s, None).await;
    let old = n.origin_public_key(&s).await;
    let path = format!("/api/v1/origins/{}/rotate-keys", n.origin);
    let started = s.admin(Method::POST, &path, None, 202).await;
    let next = started["rotations"][0]["next_public_key"].clone();

    // 1. The edge learns the origin's next key; the origin keeps its key meanwhile.
    let prepared = n.edge_config(&s).await;
    assert_eq!(prepared["tunnels"][0]["origin_next_public_key"], next);
    assert_eq!(prepared["tunnels"][0]["origin_public_key"], old);
    let before = n.origin_config(&s).await;
    tick(&s).await;
    assert_eq!(n.origin_config(&s).await["wg0_conf"], before["wg0_conf"]);

    // 2. The edge applied it: the origin switches.
    n.edge_beat(&s, Some(&prepared["config_hash"])).await;
    tick(&s).await;
    let switched = n.origin_config(&s).await;
    assert_ne!(switched["wg0_conf"], before["wg0_conf"]);
    let private = switched["wg0_conf"]
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .unwrap()
        .to_owned();
    assert_eq!(public_of(&json!(private)), next.as_str().unwrap());
    assert_eq!(n.origin_public_key(&s).await, old);

    // 3. The origin applied it: the edges know only the new key.
    n.origin_beat(&s, Some(&switched["config_hash"])).await;
    tick(&s).await;
    assert_eq!(n.origin_public_key(&s).await, next);
    let done = n.edge_config(&s).await;
    assert_eq!(done["tunnels"][0]["origin_public_key"], next);
    assert!(done["tunnels"][0].get("origin_next_public_key").is_none());
}

#[tokio::test]
async fn a_silent_origin_is_not_waited_for_and_unknown_nodes_are_refused() {
    let s = Server::start(&Backend::Sqlite).await;
    let n = Nodes::new(&s).await;
    n.edge_beat(&s, None).await;
    // The origin never sent a heartbeat: the edge switches at the first step.
    let path = format!("/api/v1/edge-nodes/{}/rotate-keys", n.edge);
    let started = s.admin(Method::POST, &path, None, 202).await;
    tick(&s).await;
    let switched = n.edge_config(&s).await;
    assert_eq!(
        public_of(&switched["tunnels"][0]["private_key"]),
        started["rotations"][0]["next_public_key"].as_str().unwrap()
    );
    for path in [
        "/api/v1/edge-nodes/edge_0000000000000000000000/rotate-keys",
        "/api/v1/origins/org_0000000000000000000000/rotate-keys",
    ] {
        let (status, body) = s.call(Method::POST, path, Some(&s.admin), None).await;
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
    }
}
