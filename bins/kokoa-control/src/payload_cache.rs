//! Each edge's configuration as last built, reused until something changes.
//!
//! Without it every poll, even one answered `304`, reads the edge's tunnels and keys and
//! builds and hashes a payload of thousands of routes: with 1 000 edges that is most of
//! what the control plane does. A payload is kept with the change counter it was built at
//! ([`AppState::notify_changed`]) and reused while the counter has not moved. Every change
//! to what [`payload::edge_content`] reads moves it: made through this control plane, made
//! through another one (within a second, through the store), or found when the shared
//! [`Snapshot`](payload::Snapshot) of origins and routes ages out and is read again
//! ([`AppState::snapshot`]).
//!
//! After a change each edge builds its own payload once, when it next asks (a long poll
//! asks as it wakes); the origins and routes they share are read once. One payload per edge
//! is kept: a long poll holds its payload while it waits anyway, and now holds this one.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use axum::{
    body::Bytes,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use kokoa_core::{EdgeConfig, EdgeNodeId};

use crate::{error::ApiError, payload, state::AppState};

/// The payloads built at one value of the change counter.
#[derive(Debug, Default)]
pub(crate) struct EdgePayloads(Mutex<Built>);

#[derive(Debug, Default)]
struct Built {
    generation: u64,
    configs: HashMap<EdgeNodeId, SharedConfig>,
}

impl EdgePayloads {
    fn get(&self, edge: &EdgeNodeId, generation: u64) -> Option<SharedConfig> {
        let built = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let config = built
            .configs
            .get(edge)
            .filter(|_| built.generation == generation);
        config.cloned()
    }

    fn put(&self, edge: &EdgeNodeId, generation: u64, config: SharedConfig) {
        let mut built = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // The counter only grows. A payload built before the last change is stale; the
        // first one built after it drops all older ones (and so those of deleted edges).
        if generation < built.generation {
            return;
        }
        let stale = (generation > built.generation).then(|| {
            std::mem::replace(
                &mut *built,
                Built {
                    generation,
                    configs: HashMap::new(),
                },
            )
        });
        built.configs.insert(edge.clone(), config);
        drop(built);
        // Freed outside the lock: a thousand payloads take a while.
        drop(stale);
    }
}

/// An edge's configuration, shared with the cache, with its wire form: serialised once,
/// when it is built (from the bytes its hash is computed over), and answered as is.
#[derive(Debug, Clone)]
pub(crate) struct SharedConfig {
    pub(crate) config: Arc<EdgeConfig>,
    json: Bytes,
}

impl IntoResponse for SharedConfig {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.json,
        )
            .into_response()
    }
}

/// The configuration of edge `edge`, as [`payload::edge_content`] builds it, built again
/// only once something changed since it was last built.
pub(crate) async fn edge_config(
    state: &AppState,
    edge: &EdgeNodeId,
) -> Result<SharedConfig, ApiError> {
    // Read before building: a change committed while the payload is built moves the
    // counter past this value, so the payload is not reused after it.
    let generation = state.change_count();
    if let Some(config) = state.edge_payloads().get(edge, generation) {
        state.refresh_snapshot_soon();
        return Ok(config);
    }
    let content = payload::edge_content(state, edge).await?;
    let (config, json) = EdgeConfig::new_with_json(content).map_err(|e| ApiError::internal(&e))?;
    let config = SharedConfig {
        config: Arc::new(config),
        json: Bytes::from(json),
    };
    state.edge_payloads().put(edge, generation, config.clone());
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use kokoa_core::{EdgeNodeId, Name, OriginId, RateLimits, Role, SubnetPool, WgPublicKey};
    use kokoa_store::{MasterKey, MemoryStore};
    use serde_json::{Value, json};

    use crate::{
        AppState, api,
        runtime::rotation::{self, Subject},
    };

    /// A control plane over a memory store with one origin and one enrolled edge.
    struct Plane {
        state: AppState,
        base: String,
        admin: String,
        client: reqwest::Client,
        origin: OriginId,
        edge: EdgeNodeId,
        credential: String,
        /// The public key the edge enrolled with.
        key: WgPublicKey,
    }

    impl Plane {
        async fn start() -> Self {
            let state = AppState::new(
                Arc::new(MemoryStore::new()),
                MasterKey::generate(),
                SubnetPool::default(),
                "http://127.0.0.1",
            );
            let (_, admin) = api::issue_api_token(&state, Name::parse("t").unwrap(), Role::Admin)
                .await
                .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(axum::serve(listener, api::router(state.clone())).into_future());
            let mut plane = Self {
                state,
                base,
                admin: admin.to_string(),
                client: reqwest::Client::new(),
                origin: OriginId::new(),
                edge: EdgeNodeId::new(),
                credential: String::new(),
                key: new_key(),
            };
            let origin = plane
                .admin("/api/v1/origins", json!({"name": "home"}))
                .await;
            plane.origin = OriginId::parse(origin["id"].as_str().unwrap()).unwrap();
            // Its agent enrolled and registered its key (edges reach it from then on).
            plane
                .state
                .store()
                .set_origin_key(&plane.origin, &new_key())
                .await
                .unwrap();
            let edge = plane
                .admin(
                    "/api/v1/edge-nodes",
                    json!({"provider": "manual", "region": "test", "public_ip": "192.0.2.1"}),
                )
                .await;
            plane.edge = EdgeNodeId::parse(edge["id"].as_str().unwrap()).unwrap();
            let enrolled = plane
                .admin(
                    "/api/v1/enroll",
                    json!({"token": edge["enrollment_token"], "wireguard_public_key": plane.key}),
                )
                .await;
            plane.credential = enrolled["credential"].as_str().unwrap().to_owned();
            plane
        }

        async fn admin(&self, path: &str, body: Value) -> Value {
            self.post(path, &self.admin, body).await
        }

        async fn post(&self, path: &str, bearer: &str, body: Value) -> Value {
            let response = self
                .client
                .post(format!("{}{path}", self.base))
                .bearer_auth(bearer)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            response.json().await.unwrap()
        }

        /// `GET …/me/config` with `If-None-Match: etag`: the status, the ETag and the body.
        async fn config(&self, etag: Option<&str>) -> (u16, String, Value) {
            let mut request = self
                .client
                .get(format!("{}/api/v1/edge-nodes/me/config", self.base))
                .bearer_auth(&self.credential);
            if let Some(etag) = etag {
                request = request.header("if-none-match", etag);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let etag = response.headers()["etag"].to_str().unwrap().to_owned();
            let body = response.json().await.unwrap_or(Value::Null);
            (status, etag, body)
        }

        /// Expects `200` with a new ETag for a request sending `etag`.
        async fn changed(&self, etag: &str) -> (String, Value) {
            let (status, new, body) = self.config(Some(etag)).await;
            assert_eq!(status, 200, "a change answered with the old payload");
            assert_ne!(new, etag);
            assert_eq!(
                new,
                format!("\"{}\"", body["config_hash"].as_str().unwrap())
            );
            (new, body)
        }
    }

    fn new_key() -> WgPublicKey {
        WgPublicKey::parse(&kokoa_wg::PrivateKey::generate().public_key().to_string()).unwrap()
    }

    #[tokio::test]
    async fn every_change_is_answered_with_a_payload_built_after_it() {
        let p = Plane::start().await;
        let (status, etag, before) = p.config(None).await;
        assert_eq!(status, 200);
        assert_eq!(p.config(Some(&etag)).await.0, 304);

        // A route.
        p.admin(
            "/api/v1/routes",
            json!({"hostname": "app.hoge.com", "origin_id": p.origin, "target_port": 8080}),
        )
        .await;
        let (etag, body) = p.changed(&etag).await;
        assert!(body["routes"]["app.hoge.com"].is_string(), "{body}");
        assert_eq!(p.config(Some(&etag)).await.0, 304);

        // A key rotation asking the edge for a new key, then the key it registers.
        assert_eq!(before["wireguard_public_key"], json!(p.key));
        let subject = Subject::Edge(p.edge.clone());
        rotation::start(&p.state, &subject, &p.key, "test")
            .await
            .unwrap();
        let (etag, body) = p.changed(&etag).await;
        assert_eq!(body["wireguard_key_requested"], true, "{body}");
        let next = new_key();
        let registered = p
            .post(
                "/api/v1/wireguard-key",
                &p.credential,
                json!({ "public_key": next }),
            )
            .await;
        assert_eq!(registered["status"], "next");
        let (etag, body) = p.changed(&etag).await;
        assert!(body.get("wireguard_key_requested").is_none(), "{body}");

        // The per client limits.
        p.state.set_rate_limits(RateLimits {
            burst: 7,
            ..RateLimits::default()
        });
        p.changed(&etag).await;
    }

    #[tokio::test]
    async fn a_304_comes_from_the_cache_until_a_change_is_announced() {
        let p = Plane::start().await;
        let (_, etag, _) = p.config(None).await;
        let first = super::edge_config(&p.state, &p.edge).await.unwrap();
        let again = super::edge_config(&p.state, &p.edge).await.unwrap();
        assert!(
            Arc::ptr_eq(&first.config, &again.config),
            "built again with nothing changed"
        );

        // The edge's tunnels are read on every build: gone behind the control plane's back,
        // a build would answer 200 without them. The cached payload answers.
        p.state
            .store()
            .delete_tunnels_of_edge(&p.edge)
            .await
            .unwrap();
        assert_eq!(p.config(Some(&etag)).await.0, 304);
        p.state.notify_changed();
        let (_, body) = p.changed(&etag).await;
        assert!(
            body["tunnels"].as_array().is_none_or(Vec::is_empty),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_change_made_around_this_control_plane_is_found_when_the_snapshot_ages() {
        let p = Plane::start().await;
        let (_, etag, _) = p.config(None).await;
        // Written to the store directly, as another control plane would.
        p.state
            .store()
            .create_route(&kokoa_core::Route {
                id: kokoa_core::RouteId::new(),
                hostname: kokoa_core::Hostname::parse("other.hoge.com").unwrap(),
                origin_id: p.origin.clone(),
                target_port: kokoa_core::Port::new(8080).unwrap(),
                certificate: Default::default(),
                created_at: kokoa_core::Timestamp::now(),
            })
            .await
            .unwrap();
        let limit = crate::payload::SNAPSHOT_TTL + Duration::from_secs(1);
        let started = tokio::time::Instant::now();
        loop {
            let (status, _, body) = p.config(Some(&etag)).await;
            if status == 200 {
                assert!(body["routes"]["other.hoge.com"].is_string(), "{body}");
                break;
            }
            assert!(started.elapsed() < limit, "never seen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
