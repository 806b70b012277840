//! WireGuard key rotation (SPEC §10.3) as the control plane drives it: the node is asked
//! for a new key and registers its public half, the peers learn it, the node switches only
//! once they applied it, the old key goes only once the node applied the new one. No
//! private key is ever part of it. The hand-over on the hosts is tested in kokoa-wg (real
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

/// A new public key, as a node makes one.
fn new_key() -> Value {
    json!(kokoa_wg::PrivateKey::generate().public_key().to_string())
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
        assert_eq!(
            edge["tunnels"][0]["public_key"],
            edge["wireguard_public_key"]
        );
        edge["wireguard_public_key"].clone()
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

/// `POST /api/v1/wireguard-key` with `credential`: the status and answer.
async fn register(s: &Server, credential: &str, key: &Value) -> (u16, Value) {
    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/wireguard-key",
            Some(credential),
            Some(json!({ "public_key": key })),
        )
        .await;
    (status.as_u16(), body)
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
    let before = n.edge_config(&s).await;
    assert_eq!(before["wireguard_public_key"], old);
    assert!(!before.to_string().contains("private"), "{before}");

    let path = format!("/api/v1/edge-nodes/{}/rotate-keys", n.edge);
    let started = s.admin(Method::POST, &path, None, 202).await;
    assert_eq!(started["rotations"], json!([{ "public_key": old }]));
    let again = s.admin(Method::POST, &path, None, 409).await;
    assert!(
        assert_error(&again, "conflict")["message"]
            .as_str()
            .unwrap()
            .contains("being rotated already")
    );

    // 1. The edge is asked for a new key; nothing else changes until it sends one.
    let asked = n.edge_config(&s).await;
    assert_eq!(asked["wireguard_key_requested"], true, "{asked}");
    assert_eq!(asked["wireguard_public_key"], old);
    let origin_before = n.origin_config(&s).await;
    assert!(origin_before.get("key_changes").is_none());
    tick(&s).await;
    assert_eq!(n.origin_config(&s).await, origin_before);

    // 2. It registers the public half of its new key: the origin learns it as a second
    //    peer without addresses. Registering it again changes nothing.
    let next = new_key();
    assert_eq!(
        register(&s, &n.edge_cred, &next).await,
        (200, json!({"status": "next"}))
    );
    assert_eq!(
        register(&s, &n.edge_cred, &next).await.1["status"],
        "unchanged"
    );
    let prepared = n.origin_config(&s).await;
    let wg0 = prepared["wg0_conf"].as_str().unwrap();
    assert!(!wg0.contains("PrivateKey"), "{wg0}");
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
    let waiting = n.edge_config(&s).await;
    assert_eq!(waiting["wireguard_public_key"], old);
    assert!(
        waiting.get("wireguard_key_requested").is_none(),
        "{waiting}"
    );

    // 3. The origin reports it applied: the edge is told to use its new key.
    n.origin_beat(&s, Some(&prepared["config_hash"])).await;
    tick(&s).await;
    let switched = n.edge_config(&s).await;
    assert_eq!(switched["wireguard_public_key"], next);
    // The origin keeps both keys until the edge applied the new one.
    tick(&s).await;
    assert_eq!(n.edge_public_key(&s).await, old);
    assert_eq!(n.origin_config(&s).await["key_changes"][0]["to"], next);
    // Settled: another key is refused now.
    let (status, refused) = register(&s, &n.edge_cred, &new_key()).await;
    assert_eq!(status, 409, "{refused}");

    // 4. The edge reports it applied: the new key is the key, the old one is gone.
    n.edge_beat(&s, Some(&switched["config_hash"])).await;
    tick(&s).await;
    assert_eq!(n.edge_public_key(&s).await, next);
    let done = n.origin_config(&s).await;
    let wg0 = done["wg0_conf"].as_str().unwrap();
    assert!(!wg0.contains(old.as_str().unwrap()), "{wg0}");
    assert!(wg0.contains(&format!("PublicKey = {}", next.as_str().unwrap())));
    assert!(done.get("key_changes").is_none(), "{done}");
    assert_eq!(n.edge_config(&s).await["wireguard_public_key"], next);
    let kinds = event_kinds(&s).await;
    for kind in [
        "wireguard.rotation_started",
        "wireguard.rotation_switched",
        "wireguard.key_rotated",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    // Without a rotation, a key other than the node's is refused; a new rotation may start.
    let (status, refused) = register(&s, &n.edge_cred, &new_key()).await;
    assert_eq!(status, 409, "{refused}");
    assert!(
        assert_error(&refused, "conflict")["message"]
            .as_str()
            .unwrap()
            .contains("rotate-keys")
    );
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
    s.admin(Method::POST, &path, None, 202).await;
    assert_eq!(n.origin_config(&s).await["wireguard_key_requested"], true);
    let next = new_key();
    assert_eq!(register(&s, &n.origin_cred, &next).await.0, 200);

    // 1. The edge learns the origin's next key; the origin keeps its key meanwhile.
    let prepared = n.edge_config(&s).await;
    assert_eq!(prepared["tunnels"][0]["origin_next_public_key"], next);
    assert_eq!(prepared["tunnels"][0]["origin_public_key"], old);
    let before = n.origin_config(&s).await;
    assert_eq!(before["wireguard_public_key"], old);
    tick(&s).await;
    assert_eq!(n.origin_config(&s).await, before);

    // 2. The edge applied it: the origin is told to use its new key.
    n.edge_beat(&s, Some(&prepared["config_hash"])).await;
    tick(&s).await;
    let switched = n.origin_config(&s).await;
    assert_eq!(switched["wireguard_public_key"], next);
    assert!(
        !switched["wg0_conf"]
            .as_str()
            .unwrap()
            .contains("PrivateKey")
    );
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
async fn a_silent_origin_is_not_waited_for_a_silent_node_is_given_up_and_unknown_nodes_are_refused()
{
    let s = Server::start(&Backend::Sqlite).await;
    let n = Nodes::new(&s).await;
    n.edge_beat(&s, None).await;
    // The origin never sent a heartbeat: the edge switches at the first step after it
    // registered its next key.
    let path = format!("/api/v1/edge-nodes/{}/rotate-keys", n.edge);
    s.admin(Method::POST, &path, None, 202).await;
    let next = new_key();
    register(&s, &n.edge_cred, &next).await;
    tick(&s).await;
    assert_eq!(n.edge_config(&s).await["wireguard_public_key"], next);

    // An origin whose agent never sends its next key: dropped after the wait, with an
    // event, its key as it was.
    let old = n.origin_public_key(&s).await;
    let origin_path = format!("/api/v1/origins/{}/rotate-keys", n.origin);
    s.admin(Method::POST, &origin_path, None, 202).await;
    let long_ago = kokoa_core::Timestamp::from_unix(
        kokoa_core::Timestamp::now().as_unix()
            - kokoa_control::runtime::rotation::NEXT_KEY_WAIT.as_secs() as i64
            - 1,
    )
    .unwrap();
    let stale = kokoa_control::runtime::rotation::Pending {
        current: kokoa_core::WgPublicKey::parse(old.as_str().unwrap()).unwrap(),
        next_public_key: None,
        switched: false,
        started_at: long_ago,
        reason: "manual".into(),
    };
    s.state
        .store()
        .kv_put(
            "key_rotation",
            &format!("origin/{}", n.origin),
            &serde_json::to_string(&stale).unwrap(),
            None,
        )
        .await
        .unwrap();
    tick(&s).await;
    assert!(
        event_kinds(&s)
            .await
            .iter()
            .any(|k| k == "wireguard.rotation_abandoned")
    );
    assert_eq!(n.origin_public_key(&s).await, old);
    assert!(
        n.origin_config(&s)
            .await
            .get("wireguard_key_requested")
            .is_none()
    );
    s.admin(Method::POST, &origin_path, None, 202).await;

    for path in [
        "/api/v1/edge-nodes/edge_0000000000000000000000/rotate-keys",
        "/api/v1/origins/org_0000000000000000000000/rotate-keys",
    ] {
        let (status, body) = s.call(Method::POST, path, Some(&s.admin), None).await;
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
    }
}

/// A node enrolled without a key registers its first one; an origin not enrolled yet has
/// no key and no rotation, and edges get no tunnel to it.
#[tokio::test]
async fn a_first_key_is_registered_once_and_keyless_nodes_do_not_rotate() {
    let s = Server::start(&Backend::Sqlite).await;
    let origin = s.new_origin("later".into()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let shown = s
        .admin(Method::GET, &format!("/api/v1/origins/{origin}"), None, 200)
        .await;
    assert_eq!(shown["wireguard_public_key"], Value::Null);
    let (status, body) = s
        .call(
            Method::POST,
            &format!("/api/v1/origins/{origin}/rotate-keys"),
            Some(&s.admin),
            None,
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (_, edge_cred) = s.enrolled_edge(None).await;
    let edge_config = get(&s, "/api/v1/edge-nodes/me/config", &edge_cred).await;
    assert_eq!(edge_config["tunnels"], json!([]));

    // Enrolled without a key (an agent of an earlier version): the first key it sends is
    // its key; another one after that is refused.
    let issued = s
        .admin(
            Method::POST,
            "/api/v1/enrollments",
            Some(json!({"node_kind": "origin", "node_id": origin})),
            201,
        )
        .await;
    let (status, enrolled) = s
        .call(
            Method::POST,
            "/api/v1/enroll",
            None,
            Some(json!({"token": issued["token"]})),
        )
        .await;
    assert_eq!(status, 200, "{enrolled}");
    let cred = enrolled["credential"].as_str().unwrap();
    let config = get(&s, "/api/v1/origins/me/config", cred).await;
    assert!(config.get("wireguard_public_key").is_none(), "{config}");
    let key = new_key();
    let (status, body) = register(&s, cred, &key).await;
    assert_eq!((status, body["status"].clone()), (200, json!("registered")));
    assert_eq!(
        get(&s, "/api/v1/origins/me/config", cred).await["wireguard_public_key"],
        key
    );
    assert_eq!(
        get(&s, "/api/v1/edge-nodes/me/config", &edge_cred).await["tunnels"][0]["origin_public_key"],
        key
    );
    let (status, body) = register(&s, cred, &new_key()).await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = register(&s, cred, &json!("not a key")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(assert_error(&body, "invalid_value")["field"], "public_key");
}
