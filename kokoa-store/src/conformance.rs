//! The behaviour every [`Store`] backend must show, as a test suite to run against a
//! backend: `run_all(|| async { Arc::new(MyStore::new()) as Arc<dyn Store> }).await`.
//!
//! Each check gets a fresh, empty store from the factory and panics with a message naming
//! what went wrong.

use std::{collections::BTreeSet, future::Future, net::Ipv4Addr, sync::Arc, time::Duration};

use ipnet::Ipv4Net;
use serde_json::json;

use super::{
    FIRST_LISTEN_PORT, Fence, Intent, Lease, MasterKey, NewIntent, NewOrigin, NewService,
    NewTunnel, Store, seal,
};
use kokoa_core::{
    ApiToken, ApiTokenId, Certificate, CertificateId, CertificateMode, CertificateSource,
    CheckStatus, ContentHash, DnsRecord, DnsRecordId, DnsZone, DnsZoneId, EdgeLifecycle, EdgeNode,
    EdgeNodeId, EdgePhase, EdgeStatus, Email, Enrollment, EnrollmentId, Error, EventFilter,
    EventKind, HealthCheck, HealthCheckPath, Hostname, Name, NewEvent, NodeCredentialId, NodeRef,
    Origin, OriginId, OriginStatus, Port, Protocol, RecordData, RemovalReason, Role, Route,
    RouteId, Sealed, Session, SessionId, SessionStage, Severity, SubnetPool, Timestamp, TokenHash,
    User, UserId, WgPublicKey,
};

const PUBLIC_KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

/// Runs every check, each on a fresh store from `fresh`.
pub async fn run_all<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    origins_round_trip(&*fresh().await).await;
    subnets_are_allocated_in_order_and_reused(&*fresh().await).await;
    concurrent_origins_get_distinct_subnets(fresh().await).await;
    conflicts_are_typed(&*fresh().await).await;
    failed_writes_leave_nothing(&*fresh().await).await;
    routes_round_trip(&*fresh().await).await;
    deleting_an_origin_in_use(&*fresh().await).await;
    edges_round_trip(&*fresh().await).await;
    tunnels_get_addresses_and_ports(&*fresh().await).await;
    concurrent_tunnels_get_distinct_addresses(fresh().await).await;
    enrollment_and_credentials(&*fresh().await).await;
    api_tokens_round_trip(&*fresh().await).await;
    dns_records_round_trip(&*fresh().await).await;
    health_history_is_newest_first(&*fresh().await).await;
    users_round_trip(&*fresh().await).await;
    sessions_expire_and_end(&*fresh().await).await;
    certificates_round_trip(&*fresh().await).await;
    dns_zones_round_trip(&*fresh().await).await;
    events_are_numbered_and_filtered(&*fresh().await).await;
    shared_values_expire(&*fresh().await).await;
    leases_have_one_holder(fresh().await).await;
    fenced_leases_have_terms(&*fresh().await).await;
    intents_are_fenced(&*fresh().await).await;
    racing_holders_get_one_term(fresh().await).await;
    retention_prunes_only_old_rows(&*fresh().await).await;
    traffic_adds_up_per_bucket(&*fresh().await).await;
    the_schema_is_the_builds(&*fresh().await).await;
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix(1_737_455_400 + seconds).expect("a time in range")
}

fn name(s: &str) -> Name {
    Name::parse(s).expect("a valid name")
}

fn host(s: &str) -> Hostname {
    Hostname::parse(s).expect("a valid host name")
}

fn port(n: u16) -> Port {
    Port::new(n).expect("a valid port")
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("a valid network")
}

fn public_key() -> WgPublicKey {
    WgPublicKey::parse(PUBLIC_KEY).expect("a valid key")
}

fn other_public_key() -> WgPublicKey {
    WgPublicKey::parse("HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=").expect("a valid key")
}

fn service(n: &str, p: u16) -> NewService {
    NewService {
        name: name(n),
        port: port(p),
        protocol: Protocol::Http,
        health_check_path: None,
    }
}

fn new_origin(n: &str) -> NewOrigin {
    NewOrigin {
        id: OriginId::new(),
        name: name(n),
        domain: None,
        services: Vec::new(),
        created_at: at(0),
    }
}

async fn create(store: &dyn Store, n: &str) -> Origin {
    store
        .create_origin(&SubnetPool::default(), new_origin(n))
        .await
        .unwrap_or_else(|e| panic!("creating origin {n}: {e}"))
}

fn route(origin: &OriginId, hostname: &str, target: u16) -> Route {
    Route {
        id: RouteId::new(),
        hostname: host(hostname),
        origin_id: origin.clone(),
        target_port: port(target),
        certificate: CertificateMode::Http01,
        created_at: at(1),
    }
}

fn edge(n: &str, origin: Option<&OriginId>, created: i64) -> EdgeNode {
    EdgeNode {
        id: EdgeNodeId::new(),
        name: name(n),
        origin_id: origin.cloned(),
        provider: name("manual"),
        region: name("home"),
        public_ip: None,
        status: EdgeStatus::Provisioning,
        last_heartbeat: None,
        last_metrics: None,
        health_check_failures: 0,
        created_at: at(created),
        deleted_at: None,
        instance_id: None,
        lifecycle: EdgeLifecycle::default(),
        wireguard_public_key: None,
    }
}

fn new_tunnel(edge: &EdgeNodeId, origin: &OriginId) -> NewTunnel {
    NewTunnel {
        edge_node_id: edge.clone(),
        origin_id: origin.clone(),
        created_at: at(2),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(result: Result<T, Error>, field: &str, value: &str) {
    match result {
        Err(Error::Conflict { what, value: v }) => {
            assert_eq!(
                (what, v.as_str()),
                (field, value),
                "conflict names the field"
            );
        }
        other => panic!("expected a conflict on {field} {value:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, Error>, kind: &str) {
    match result {
        Err(Error::NotFound { kind: k, .. }) => assert_eq!(k, kind),
        other => panic!("expected no {kind} found, got {other:?}"),
    }
}

#[track_caller]
fn assert_fenced<T: std::fmt::Debug>(
    result: Result<T, Error>,
    lease: &str,
    token: u64,
    current: Option<u64>,
) {
    match result {
        Err(e @ Error::Fenced { .. }) => {
            assert!(e.is_fenced());
            let Error::Fenced {
                lease: l,
                token: t,
                current: c,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((l.as_str(), *t, *c), (lease, token, current), "{e}");
            assert!(
                e.to_string()
                    .contains(&format!("lease {lease:?} term {token} is over")),
                "{e}"
            );
        }
        other => panic!("expected term {token} of lease {lease:?} to be over, got {other:?}"),
    }
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, Error>, reason_part: &str) {
    match result {
        Err(Error::EnrollmentRefused { reason }) => {
            assert!(reason.contains(reason_part), "{reason}");
        }
        other => panic!("expected the enrollment to be refused ({reason_part}), got {other:?}"),
    }
}

/// Origins, their services, public keys and heartbeats come back as stored.
pub async fn origins_round_trip(store: &dyn Store) {
    let mut new = new_origin("home-server");
    new.domain = Some(host("app.example.com"));
    new.services = vec![
        NewService {
            health_check_path: Some(HealthCheckPath::parse("/health").expect("valid path")),
            protocol: Protocol::Https,
            ..service("web", 8001)
        },
        service("api", 8002),
    ];
    let created = store
        .create_origin(&SubnetPool::default(), new.clone())
        .await
        .expect("create origin");
    assert_eq!(
        (
            created.id.clone(),
            created.name.clone(),
            created.domain.clone()
        ),
        (new.id.clone(), new.name, new.domain)
    );
    assert_eq!(created.status, OriginStatus::Inactive);
    assert_eq!(created.wireguard_ip, Ipv4Addr::new(10, 0, 1, 1));
    assert_eq!(
        created.wireguard_public_key, None,
        "no key before its agent registers one"
    );
    assert_eq!(store.get_origin(&created.id).await.expect("get"), created);
    let other = create(store, "another").await;
    assert_eq!(
        store.list_origins().await.expect("list"),
        [other.clone(), created.clone()],
        "origins by name"
    );

    let services = store.origin_services(&created.id).await.expect("services");
    let summary: Vec<_> = services
        .iter()
        .map(|s| {
            (
                s.name.as_str(),
                s.port.get(),
                s.protocol,
                s.health_check_path.as_ref().map(HealthCheckPath::as_str),
                &s.origin_id,
                s.created_at,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("api", 8002, Protocol::Http, None, &created.id, at(0)),
            (
                "web",
                8001,
                Protocol::Https,
                Some("/health"),
                &created.id,
                at(0)
            ),
        ],
        "services by name"
    );
    assert!(
        store
            .origin_services(&other.id)
            .await
            .expect("services")
            .is_empty()
    );

    // The key its agent registers, then a rotation's end: the successor replaces it;
    // nothing else changes.
    for key in [public_key(), other_public_key()] {
        store
            .set_origin_key(&created.id, &key)
            .await
            .expect("set key");
        let after = store.get_origin(&created.id).await.expect("get");
        assert_eq!(after.wireguard_public_key, Some(key));
        assert_eq!(
            (after.name, after.wireguard_ip),
            (created.name.clone(), created.wireguard_ip)
        );
    }
    assert_not_found(
        store.set_origin_key(&OriginId::new(), &public_key()).await,
        "origin",
    );

    let metrics = json!({"connections_active": 42, "cpu_percent": 12.3, "tunnels": ["a"]});
    store
        .record_origin_heartbeat(
            &created.id,
            at(30),
            OriginStatus::Active,
            Some(metrics.clone()),
        )
        .await
        .expect("heartbeat");
    let beating = store.get_origin(&created.id).await.expect("get");
    assert_eq!(
        (beating.status, beating.last_heartbeat, beating.last_metrics),
        (OriginStatus::Active, Some(at(30)), Some(metrics))
    );

    let unknown = OriginId::new();
    assert_not_found(store.get_origin(&unknown).await, "origin");
    assert_not_found(store.origin_services(&unknown).await, "origin");
    assert_not_found(
        store
            .record_origin_heartbeat(&unknown, at(1), OriginStatus::Active, None)
            .await,
        "origin",
    );
}

/// Origins get 10.0.1.0/24, then 10.0.2.0/24; a deleted origin's subnet is reused.
pub async fn subnets_are_allocated_in_order_and_reused(store: &dyn Store) {
    // A pool with room for one origin runs out with the error that says so.
    let small = SubnetPool::new(net("10.0.0.0/23")).expect("a /23 pool");
    let only = store
        .create_origin(&small, new_origin("only"))
        .await
        .expect("one subnet in a /23");
    assert_eq!(only.network_cidr, net("10.0.1.0/24"));
    match store.create_origin(&small, new_origin("too-many")).await {
        Err(Error::PoolExhausted { capacity: 1, .. }) => {}
        other => panic!("expected the pool to be exhausted, got {other:?}"),
    }
    store.delete_origin(&only.id, false).await.expect("delete");

    let first = create(store, "first").await;
    let second = create(store, "second").await;
    assert_eq!(
        (first.network_cidr, second.network_cidr),
        (net("10.0.1.0/24"), net("10.0.2.0/24"))
    );
    assert_eq!(second.wireguard_ip, Ipv4Addr::new(10, 0, 2, 1));
    store
        .delete_origin(&first.id, false)
        .await
        .expect("delete first");
    let third = create(store, "third").await;
    assert_eq!(
        third.network_cidr,
        net("10.0.1.0/24"),
        "the freed subnet is reused"
    );
}

/// Eight origins created at once get eight different subnets.
pub async fn concurrent_origins_get_distinct_subnets(store: Arc<dyn Store>) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            store
                .create_origin(&SubnetPool::default(), new_origin(&format!("origin-{i}")))
                .await
        });
    }
    let mut subnets = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        let origin = joined
            .expect("task finished")
            .expect("concurrent create_origin");
        subnets.insert(origin.network_cidr.to_string());
    }
    let expected: BTreeSet<String> = (1..=8).map(|i| format!("10.0.{i}.0/24")).collect();
    assert_eq!(subnets, expected);
    assert_eq!(store.list_origins().await.expect("list").len(), 8);
}

/// Duplicate unique values are refused with [`Error::Conflict`] naming the field.
pub async fn conflicts_are_typed(store: &dyn Store) {
    let origin = create(store, "home").await;
    assert_conflict(
        store
            .create_origin(&SubnetPool::default(), new_origin("home"))
            .await,
        "origin name",
        "home",
    );

    store
        .create_route(&route(&origin.id, "app.hoge.com", 8080))
        .await
        .expect("route");
    assert_conflict(
        store
            .create_route(&route(&origin.id, "app.hoge.com", 9090))
            .await,
        "hostname",
        "app.hoge.com",
    );
    let mut other = route(&origin.id, "wiki.fuga.com", 8000);
    store.create_route(&other).await.expect("second route");
    other.hostname = host("app.hoge.com");
    assert_conflict(store.update_route(&other).await, "hostname", "app.hoge.com");

    let hash = TokenHash::of("kk_adm_one");
    let token = |n: &str| ApiToken {
        id: ApiTokenId::new(),
        name: name(n),
        role: Role::Admin,
        created_at: at(0),
        last_used_at: None,
        revoked_at: None,
    };
    store
        .create_api_token(&token("first"), &hash)
        .await
        .expect("token");
    assert_conflict(
        store.create_api_token(&token("second"), &hash).await,
        "token hash",
        hash.as_str(),
    );

    let enrollment = || Enrollment {
        id: EnrollmentId::new(),
        node: NodeRef::Origin(origin.id.clone()),
        expires_at: at(600),
        uses_left: 1,
        created_at: at(0),
    };
    let hash = TokenHash::of("kk_enr_one");
    store
        .create_enrollment(&enrollment(), &hash)
        .await
        .expect("enrollment");
    assert_conflict(
        store.create_enrollment(&enrollment(), &hash).await,
        "token hash",
        hash.as_str(),
    );

    let user = || {
        User::new(
            Email::parse("admin@example.com").expect("valid address"),
            Role::Admin,
            at(0),
        )
    };
    store
        .create_user(&user(), Some("$argon2id$one"))
        .await
        .expect("user");
    assert_conflict(
        store.create_user(&user(), Some("$argon2id$two")).await,
        "e-mail address",
        "admin@example.com",
    );
}

/// An operation that fails half-way leaves no row behind.
pub async fn failed_writes_leave_nothing(store: &dyn Store) {
    let mut twice = new_origin("twice");
    twice.services = vec![service("web", 8001), service("web", 8002)];
    assert_conflict(
        store.create_origin(&SubnetPool::default(), twice).await,
        "service name",
        "web",
    );
    assert!(
        store.list_origins().await.expect("list").is_empty(),
        "no origin row left by a failed creation"
    );

    let mut first = new_origin("first");
    first.services = vec![service("web", 8001)];
    let first = store
        .create_origin(&SubnetPool::default(), first)
        .await
        .expect("first origin");
    assert_eq!(
        first.network_cidr,
        net("10.0.1.0/24"),
        "the failed creation did not keep a subnet"
    );
    let mut clash = new_origin("first");
    clash.services = vec![service("api", 8002)];
    assert_conflict(
        store.create_origin(&SubnetPool::default(), clash).await,
        "origin name",
        "first",
    );
    let services = store.origin_services(&first.id).await.expect("services");
    assert_eq!(services.len(), 1, "{services:?}");
    assert_eq!(
        store.list_origins().await.expect("list"),
        std::slice::from_ref(&first)
    );

    // A refused enrollment uses nothing up.
    let hash = TokenHash::of("kk_enr_future");
    let enrollment = Enrollment {
        id: EnrollmentId::new(),
        node: NodeRef::Origin(first.id.clone()),
        expires_at: at(100),
        uses_left: 1,
        created_at: at(0),
    };
    store
        .create_enrollment(&enrollment, &hash)
        .await
        .expect("enrollment");
    let credential_hash = TokenHash::of("kk_node_x");
    assert_refused(
        store
            .redeem_enrollment(&hash, at(100), &NodeCredentialId::new(), &credential_hash)
            .await,
        "expired",
    );
    assert_eq!(
        store
            .find_node_credential(&credential_hash)
            .await
            .expect("find"),
        None
    );
    assert_eq!(
        store
            .find_enrollment(&hash, at(50))
            .await
            .expect("find")
            .map(|e| e.uses_left),
        Some(1)
    );
}

/// Routes: create, get, list by host name, update, delete.
pub async fn routes_round_trip(store: &dyn Store) {
    let (a, b) = (create(store, "a").await, create(store, "b").await);
    let wiki = route(&a.id, "wiki.fuga.com", 8000);
    let app = route(&a.id, "app.hoge.com", 8080);
    store.create_route(&wiki).await.expect("wiki");
    store.create_route(&app).await.expect("app");
    assert_eq!(store.get_route(&app.id).await.expect("get"), app);
    assert_eq!(
        store.list_routes().await.expect("list"),
        [app.clone(), wiki.clone()],
        "routes by host name"
    );

    let mut moved = Route {
        hostname: host("app2.hoge.com"),
        origin_id: b.id.clone(),
        target_port: port(9000),
        created_at: at(999),
        ..app.clone()
    };
    store.update_route(&moved).await.expect("update");
    moved.created_at = app.created_at;
    assert_eq!(
        store.get_route(&app.id).await.expect("get"),
        moved,
        "updated, creation time kept"
    );

    assert_not_found(
        store
            .create_route(&route(&OriginId::new(), "x.example.com", 80))
            .await,
        "origin",
    );
    assert_not_found(
        store.update_route(&route(&a.id, "y.example.com", 80)).await,
        "route",
    );
    store.delete_route(&wiki.id).await.expect("delete");
    assert_not_found(store.get_route(&wiki.id).await, "route");
    assert_not_found(store.delete_route(&wiki.id).await, "route");
    assert_eq!(store.list_routes().await.expect("list"), [moved]);
}

/// An origin with routes is not deleted unless forced; forcing removes what hangs on it.
pub async fn deleting_an_origin_in_use(store: &dyn Store) {
    let mut new = new_origin("busy");
    new.services = vec![service("web", 8001)];
    let origin = store
        .create_origin(&SubnetPool::default(), new)
        .await
        .expect("origin");
    let keep = create(store, "keep").await;
    store
        .create_route(&route(&origin.id, "a.hoge.com", 8001))
        .await
        .expect("route a");
    store
        .create_route(&route(&origin.id, "b.hoge.com", 8001))
        .await
        .expect("route b");
    let kept_route = route(&keep.id, "c.hoge.com", 80);
    store.create_route(&kept_route).await.expect("route c");
    let all_origins = edge("edge-1", None, 0);
    store.create_edge(&all_origins).await.expect("edge");
    store
        .create_tunnel(new_tunnel(&all_origins.id, &origin.id))
        .await
        .expect("tunnel to busy");
    store
        .create_tunnel(new_tunnel(&all_origins.id, &keep.id))
        .await
        .expect("tunnel to keep");
    let credential_hash = TokenHash::of("kk_node_busy");
    let enrollment_hash = TokenHash::of("kk_enr_busy");
    store
        .create_enrollment(
            &Enrollment {
                id: EnrollmentId::new(),
                node: NodeRef::Origin(origin.id.clone()),
                expires_at: at(600),
                uses_left: 2,
                created_at: at(0),
            },
            &enrollment_hash,
        )
        .await
        .expect("enrollment");
    store
        .redeem_enrollment(
            &enrollment_hash,
            at(1),
            &NodeCredentialId::new(),
            &credential_hash,
        )
        .await
        .expect("redeem");

    let refused = store.delete_origin(&origin.id, false).await;
    assert!(
        refused.as_ref().is_err_and(Error::is_conflict),
        "{refused:?}"
    );
    match refused {
        Err(Error::InUse {
            count: 2,
            by: "routes",
            ..
        }) => {}
        other => panic!("expected the origin to be in use by 2 routes, got {other:?}"),
    }
    assert_eq!(
        store.get_origin(&origin.id).await.expect("still there"),
        origin
    );
    assert_eq!(store.list_routes().await.expect("list").len(), 3);

    store
        .delete_origin(&origin.id, true)
        .await
        .expect("forced delete");
    assert_not_found(store.get_origin(&origin.id).await, "origin");
    assert_not_found(store.origin_services(&origin.id).await, "origin");
    assert_eq!(store.list_routes().await.expect("list"), [kept_route]);
    let tunnels = store.list_tunnels(None, None).await.expect("tunnels");
    assert_eq!(
        tunnels.iter().map(|t| &t.origin_id).collect::<Vec<_>>(),
        [&keep.id]
    );
    assert_eq!(
        store
            .find_node_credential(&credential_hash)
            .await
            .expect("find"),
        None,
        "the origin's credentials went with it"
    );
    assert_eq!(
        store.get_edge(&all_origins.id).await.expect("edge kept").id,
        all_origins.id
    );
    assert_not_found(store.delete_origin(&origin.id, true).await, "origin");
}

/// Edge nodes: create, get, list by creation time, update, heartbeat.
pub async fn edges_round_trip(store: &dyn Store) {
    let origin = create(store, "home").await;
    let mut dedicated = edge("edge-sgp1-01", Some(&origin.id), 10);
    dedicated.public_ip = Some("2001:db8::10".parse().expect("an address"));
    let shared = edge("edge-fra1-01", None, 5);
    store.create_edge(&dedicated).await.expect("dedicated");
    store.create_edge(&shared).await.expect("shared");
    assert_eq!(store.get_edge(&dedicated.id).await.expect("get"), dedicated);
    assert_eq!(
        store.list_edges().await.expect("list"),
        [shared.clone(), dedicated.clone()],
        "edges by creation time"
    );
    assert_not_found(
        store
            .create_edge(&edge("stray", Some(&OriginId::new()), 0))
            .await,
        "origin",
    );

    let mut changed = dedicated.clone();
    changed.public_ip = Some("203.0.113.10".parse().expect("an address"));
    changed.instance_id = Some("12345".to_owned());
    changed.lifecycle.enter(EdgePhase::Draining, at(30));
    changed.lifecycle.removal = Some(RemovalReason::Manual);
    changed.lifecycle.failed("provider answered 503", at(35));
    changed
        .set_status(EdgeStatus::Unhealthy, at(20))
        .expect("legal");
    changed
        .set_status(EdgeStatus::Deleted, at(40))
        .expect("legal");
    let mut attempt = changed.clone();
    attempt.origin_id = None;
    attempt.created_at = at(999);
    // Heartbeats and the failure count have their own writers; a copy's are ignored.
    attempt.health_check_failures = 7;
    attempt.last_heartbeat = Some(at(998));
    store.update_edge(&attempt).await.expect("update");
    assert_eq!(
        store.get_edge(&dedicated.id).await.expect("get"),
        changed,
        "origin, creation time, heartbeat and failure count kept"
    );

    // The key its agent registers; a copy written later keeps it.
    store
        .set_edge_key(&shared.id, &public_key())
        .await
        .expect("set key");
    let mut stale = shared.clone();
    stale.name = name("edge-fra1-renamed");
    store.update_edge(&stale).await.expect("update");
    let keyed = store.get_edge(&shared.id).await.expect("get");
    assert_eq!(
        (keyed.wireguard_public_key, keyed.name),
        (Some(public_key()), stale.name)
    );

    let metrics = json!({"connections_active": 42, "tunnel_rtt_ms": 23});
    store
        .record_edge_heartbeat(&shared.id, at(50), Some(metrics.clone()))
        .await
        .expect("heartbeat");
    let beating = store.get_edge(&shared.id).await.expect("get");
    assert_eq!(
        (beating.last_heartbeat, beating.last_metrics),
        (Some(at(50)), Some(metrics))
    );

    let unknown = edge("ghost", None, 0);
    assert_not_found(store.get_edge(&unknown.id).await, "edge node");
    assert_not_found(store.update_edge(&unknown).await, "edge node");
    assert_not_found(
        store.record_edge_heartbeat(&unknown.id, at(1), None).await,
        "edge node",
    );
    assert_not_found(
        store.set_edge_key(&unknown.id, &public_key()).await,
        "edge node",
    );
}

/// Tunnels get `.10`, `.11` in the origin's /24 and ports 51820, 51821 on the edge.
pub async fn tunnels_get_addresses_and_ports(store: &dyn Store) {
    let (one, two) = (create(store, "one").await, create(store, "two").await);
    let (a, b) = (edge("edge-a", None, 0), edge("edge-b", None, 1));
    store.create_edge(&a).await.expect("edge a");
    store.create_edge(&b).await.expect("edge b");

    let a1 = store
        .create_tunnel(new_tunnel(&a.id, &one.id))
        .await
        .expect("a to one");
    let a2 = store
        .create_tunnel(new_tunnel(&a.id, &two.id))
        .await
        .expect("a to two");
    let b1 = store
        .create_tunnel(new_tunnel(&b.id, &one.id))
        .await
        .expect("b to one");
    let placed = |t: &kokoa_core::EdgeTunnel| (t.wireguard_ip.to_string(), t.listen_port.get());
    assert_eq!(placed(&a1), ("10.0.1.10".to_owned(), FIRST_LISTEN_PORT));
    assert_eq!(placed(&a2), ("10.0.2.10".to_owned(), 51821));
    assert_eq!(placed(&b1), ("10.0.1.11".to_owned(), 51820));
    assert_eq!(a1.created_at, at(2));

    assert_conflict(
        store.create_tunnel(new_tunnel(&a.id, &one.id)).await,
        "edge tunnel",
        &format!("{} to {}", a.id, one.id),
    );
    assert_not_found(
        store
            .create_tunnel(new_tunnel(&a.id, &OriginId::new()))
            .await,
        "origin",
    );
    assert_not_found(
        store
            .create_tunnel(new_tunnel(&EdgeNodeId::new(), &one.id))
            .await,
        "edge node",
    );

    assert_eq!(
        store.list_tunnels(Some(&a.id), None).await.expect("list"),
        [a1.clone(), a2.clone()]
    );
    let to_one = store.list_tunnels(None, Some(&one.id)).await.expect("list");
    assert_eq!(to_one.len(), 2);
    assert!(to_one.contains(&a1) && to_one.contains(&b1));
    assert_eq!(
        store
            .list_tunnels(Some(&b.id), Some(&two.id))
            .await
            .expect("list"),
        []
    );
    assert_eq!(store.list_tunnels(None, None).await.expect("list").len(), 3);

    assert_eq!(
        store.delete_tunnels_of_edge(&a.id).await.expect("delete"),
        2
    );
    assert_eq!(
        store.delete_tunnels_of_edge(&a.id).await.expect("delete"),
        0
    );
    let c = edge("edge-c", None, 2);
    store.create_edge(&c).await.expect("edge c");
    let c1 = store
        .create_tunnel(new_tunnel(&c.id, &one.id))
        .await
        .expect("c to one");
    assert_eq!(
        placed(&c1),
        ("10.0.1.10".to_owned(), 51820),
        "freed address reused"
    );
}

/// Eight edges joining one origin at once get eight different addresses, and one edge
/// joining eight origins at once gets eight different ports.
pub async fn concurrent_tunnels_get_distinct_addresses(store: Arc<dyn Store>) {
    let origin = create(&*store, "shared").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (store, origin) = (Arc::clone(&store), origin.id.clone());
        tasks.spawn(async move {
            let node = edge(&format!("edge-{i}"), None, i);
            store.create_edge(&node).await?;
            store.create_tunnel(new_tunnel(&node.id, &origin)).await
        });
    }
    let mut addresses = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        let tunnel = joined
            .expect("task finished")
            .expect("concurrent create_tunnel");
        assert_eq!(tunnel.listen_port.get(), FIRST_LISTEN_PORT);
        addresses.insert(tunnel.wireguard_ip.octets()[3]);
    }
    assert_eq!(addresses, (10..18).collect());

    let hub = edge("hub", None, 0);
    store.create_edge(&hub).await.expect("hub");
    let mut origins = Vec::new();
    for i in 0..8 {
        origins.push(create(&*store, &format!("origin-{i}")).await.id);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for origin in origins {
        let (store, hub) = (Arc::clone(&store), hub.id.clone());
        tasks.spawn(async move { store.create_tunnel(new_tunnel(&hub, &origin)).await });
    }
    let mut ports = BTreeSet::new();
    while let Some(joined) = tasks.join_next().await {
        let tunnel = joined
            .expect("task finished")
            .expect("concurrent create_tunnel");
        ports.insert(tunnel.listen_port.get());
    }
    assert_eq!(ports, (51820..51828).collect());
}

/// Enrollment tokens are redeemed once, not after expiry, and revoked credentials stop
/// working.
pub async fn enrollment_and_credentials(store: &dyn Store) {
    let node_edge = edge("edge-1", None, 0);
    store.create_edge(&node_edge).await.expect("edge");
    let node = NodeRef::Edge(node_edge.id.clone());
    let enrollment = Enrollment {
        id: EnrollmentId::new(),
        node: node.clone(),
        expires_at: at(600),
        uses_left: 1,
        created_at: at(0),
    };
    let token = TokenHash::of("kk_enr_edge");
    store
        .create_enrollment(&enrollment, &token)
        .await
        .expect("enrollment");
    assert_eq!(
        store.find_enrollment(&token, at(10)).await.expect("find"),
        Some(enrollment.clone())
    );
    assert_eq!(
        store.find_enrollment(&token, at(600)).await.expect("find"),
        None,
        "expired"
    );
    assert_not_found(
        store
            .create_enrollment(
                &Enrollment {
                    id: EnrollmentId::new(),
                    node: NodeRef::Edge(EdgeNodeId::new()),
                    ..enrollment.clone()
                },
                &TokenHash::of("kk_enr_ghost"),
            )
            .await,
        "edge node",
    );

    let credential_id = NodeCredentialId::new();
    let credential_hash = TokenHash::of("kk_node_edge");
    let credential = store
        .redeem_enrollment(&token, at(10), &credential_id, &credential_hash)
        .await
        .expect("first redemption");
    assert_eq!(
        (
            &credential.id,
            &credential.node,
            credential.created_at,
            credential.revoked_at
        ),
        (&credential_id, &node, at(10), None)
    );
    assert_refused(
        store
            .redeem_enrollment(
                &token,
                at(11),
                &NodeCredentialId::new(),
                &TokenHash::of("x"),
            )
            .await,
        "used up",
    );
    assert_eq!(
        store.find_enrollment(&token, at(11)).await.expect("find"),
        None,
        "used up"
    );
    assert_refused(
        store
            .redeem_enrollment(
                &TokenHash::of("kk_enr_unknown"),
                at(11),
                &NodeCredentialId::new(),
                &TokenHash::of("y"),
            )
            .await,
        "unknown",
    );
    assert_eq!(
        store
            .find_node_credential(&credential_hash)
            .await
            .expect("find"),
        Some(credential)
    );

    // A second enrollment for the same node, still pending when the node is revoked.
    let pending = TokenHash::of("kk_enr_edge_2");
    store
        .create_enrollment(
            &Enrollment {
                id: EnrollmentId::new(),
                uses_left: 3,
                ..enrollment.clone()
            },
            &pending,
        )
        .await
        .expect("second enrollment");
    assert_eq!(
        store
            .revoke_node_credentials(&node, at(20))
            .await
            .expect("revoke"),
        1
    );
    assert_eq!(
        store
            .find_node_credential(&credential_hash)
            .await
            .expect("find"),
        None,
        "revoked"
    );
    assert_refused(
        store
            .redeem_enrollment(
                &pending,
                at(21),
                &NodeCredentialId::new(),
                &TokenHash::of("z"),
            )
            .await,
        "used up",
    );
    assert_eq!(
        store
            .revoke_node_credentials(&node, at(30))
            .await
            .expect("revoke"),
        0
    );
}

/// API tokens: create, find by hash, record use, list, revoke.
pub async fn api_tokens_round_trip(store: &dyn Store) {
    let token = |n: &str, role, created| ApiToken {
        id: ApiTokenId::new(),
        name: name(n),
        role,
        created_at: at(created),
        last_used_at: None,
        revoked_at: None,
    };
    let admin = token("admin", Role::Admin, 5);
    let viewer = token("dashboard", Role::Viewer, 1);
    let (admin_hash, viewer_hash) = (TokenHash::of("kk_adm_1"), TokenHash::of("kk_adm_2"));
    store
        .create_api_token(&admin, &admin_hash)
        .await
        .expect("admin");
    store
        .create_api_token(&viewer, &viewer_hash)
        .await
        .expect("viewer");
    assert_eq!(
        store.find_api_token(&admin_hash).await.expect("find"),
        Some(admin.clone())
    );
    assert_eq!(
        store
            .find_api_token(&TokenHash::of("kk_adm_3"))
            .await
            .expect("find"),
        None
    );
    store
        .touch_api_token(&viewer.id, at(7))
        .await
        .expect("touch");
    store
        .revoke_api_token(&admin.id, at(8))
        .await
        .expect("revoke");
    store
        .revoke_api_token(&admin.id, at(9))
        .await
        .expect("revoke again");
    assert_eq!(store.find_api_token(&admin_hash).await.expect("find"), None);
    let listed = store.list_api_tokens().await.expect("list");
    assert_eq!(
        listed,
        [
            ApiToken {
                last_used_at: Some(at(7)),
                ..viewer
            },
            ApiToken {
                revoked_at: Some(at(8)),
                ..admin
            },
        ],
        "by creation time, first revocation time kept"
    );
    assert_not_found(
        store.revoke_api_token(&ApiTokenId::new(), at(1)).await,
        "API token",
    );
    assert_not_found(
        store.touch_api_token(&ApiTokenId::new(), at(1)).await,
        "API token",
    );
}

/// DNS records: add, list (all or by host name), delete.
pub async fn dns_records_round_trip(store: &dyn Store) {
    let node = edge("edge-1", None, 0);
    store.create_edge(&node).await.expect("edge");
    let record = |hostname: &str, data, edge: Option<&EdgeNodeId>| DnsRecord {
        id: DnsRecordId::new(),
        hostname: host(hostname),
        data,
        provider_record_id: Some("abc123".to_owned()),
        provider: name("cloudflare"),
        zone_id: None,
        edge_node_id: edge.cloned(),
        created_at: at(3),
    };
    let a = record(
        "app.hoge.com",
        RecordData::A(Ipv4Addr::new(203, 0, 113, 10)),
        Some(&node.id),
    );
    let aaaa = record(
        "app.hoge.com",
        RecordData::Aaaa("2001:db8::10".parse().expect("an address")),
        Some(&node.id),
    );
    let txt = DnsRecord {
        provider_record_id: None,
        ..record(
            "acme.app.hoge.com",
            RecordData::Txt(kokoa_core::TxtText::new("gfj9Xq-Rg85nM").unwrap()),
            None,
        )
    };
    for r in [&a, &aaaa, &txt] {
        store.add_dns_record(r).await.expect("add");
    }
    let all = store.list_dns_records(None).await.expect("list");
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], txt, "by host name");
    let app = store
        .list_dns_records(Some(&host("app.hoge.com")))
        .await
        .expect("list");
    assert_eq!(app.len(), 2);
    assert!(app.contains(&a) && app.contains(&aaaa));
    assert_not_found(
        store
            .add_dns_record(&record(
                "x.hoge.com",
                RecordData::A(Ipv4Addr::LOCALHOST),
                Some(&EdgeNodeId::new()),
            ))
            .await,
        "edge node",
    );
    store.delete_dns_record(&a.id).await.expect("delete");
    assert_not_found(store.delete_dns_record(&a.id).await, "DNS record");
    assert_eq!(
        store
            .list_dns_records(Some(&host("app.hoge.com")))
            .await
            .expect("list"),
        [aaaa]
    );
}

/// Health history comes newest first, at most `limit` entries.
pub async fn health_history_is_newest_first(store: &dyn Store) {
    let (watched, other) = (edge("edge-1", None, 0), edge("edge-2", None, 0));
    store.create_edge(&watched).await.expect("edge");
    store.create_edge(&other).await.expect("edge");
    let check = |edge: &EdgeNodeId, seconds, ms: Option<u32>| HealthCheck {
        edge_node_id: edge.clone(),
        check: if seconds == 20 { "end_to_end" } else { "http" }.to_owned(),
        status: if ms.is_some() {
            CheckStatus::Success
        } else {
            CheckStatus::Failure
        },
        response_time_ms: ms,
        error_message: ms.is_none().then(|| "connection refused".to_owned()),
        checked_at: at(seconds),
    };
    // Added out of order; two share a time.
    let checks = [
        check(&watched.id, 10, Some(45)),
        check(&watched.id, 30, None),
        check(&watched.id, 20, Some(50)),
        check(&other.id, 40, Some(1)),
        check(&watched.id, 30, Some(60)),
    ];
    for c in &checks {
        store.record_health_check(c, None).await.expect("add");
    }
    let history = store.health_history(&watched.id, 3).await.expect("history");
    assert_eq!(
        history,
        [checks[4].clone(), checks[1].clone(), checks[2].clone()],
        "newest first, later-added first among equal times"
    );
    assert_eq!(
        store
            .health_history(&watched.id, 100)
            .await
            .expect("history")
            .len(),
        4
    );
    assert_eq!(
        store.health_history(&watched.id, 0).await.expect("history"),
        []
    );
    assert_not_found(
        store
            .record_health_check(&check(&EdgeNodeId::new(), 1, None), Some(1))
            .await,
        "edge node",
    );
    store
        .record_health_check(&check(&watched.id, 50, None), Some(3))
        .await
        .expect("add");
    assert_eq!(
        store
            .get_edge(&watched.id)
            .await
            .expect("get")
            .health_check_failures,
        3,
        "the failure count is written with the check"
    );
    store
        .record_health_check(&check(&watched.id, 60, Some(5)), None)
        .await
        .expect("add");
    assert_eq!(
        store
            .get_edge(&watched.id)
            .await
            .expect("get")
            .health_check_failures,
        3,
        "a check of another kind leaves the count"
    );
}

/// Users: created with or without a password, found by e-mail address and id, listed by
/// address; role, password, second factor, lockout and deletion.
pub async fn users_round_trip(store: &dyn Store) {
    let email = |s: &str| Email::parse(s).expect("valid address");
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
    let user = User::new(email("Zed@Example.com"), Role::Viewer, at(0));
    store.create_user(&user, Some(hash)).await.expect("create");
    let oidc = User::new(email("amy@example.com"), Role::Admin, at(1));
    store.create_user(&oidc, None).await.expect("create");
    let (found, secrets) = store
        .find_user_by_email(&email("zed@example.com"))
        .await
        .expect("find")
        .expect("the user is there");
    assert_eq!(found, user);
    assert_eq!(secrets.password_hash.as_deref(), Some(hash));
    assert_eq!((secrets.totp_secret, secrets.totp_last_step), (None, None));
    let (_, secrets) = store.get_user(&oidc.id).await.expect("get");
    assert_eq!(secrets.password_hash, None, "no password stays no password");
    assert_eq!(
        store
            .find_user_by_email(&email("nobody@example.com"))
            .await
            .expect("find"),
        None
    );
    assert_not_found(store.get_user(&UserId::new()).await, "user");
    let listed: Vec<UserId> = store
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(
        listed,
        [oidc.id.clone(), user.id.clone()],
        "by e-mail address"
    );

    store
        .set_user_role(&user.id, Role::Admin)
        .await
        .expect("role");
    assert_eq!(
        store.get_user(&user.id).await.expect("get").0.role,
        Role::Admin
    );
    assert_not_found(
        store.set_user_role(&UserId::new(), Role::Admin).await,
        "user",
    );

    // Lockout: the third failure in a row locks and starts the count again.
    for expected in [1, 2] {
        let u = store
            .record_login_failure(&user.id, 3, at(900))
            .await
            .expect("failure");
        assert_eq!((u.failed_logins, u.locked_until), (expected, None));
    }
    let locked = store
        .record_login_failure(&user.id, 3, at(900))
        .await
        .expect("failure");
    assert_eq!(
        (locked.failed_logins, locked.locked_until),
        (0, Some(at(900)))
    );
    assert!(locked.is_locked(at(899)) && !locked.is_locked(at(900)));
    store.record_login_success(&user.id).await.expect("success");
    let u = store.get_user(&user.id).await.expect("get").0;
    assert_eq!((u.failed_logins, u.locked_until), (0, None));
    store
        .record_login_failure(&user.id, 3, at(900))
        .await
        .expect("failure");
    store
        .set_user_password(&user.id, Some("$argon2id$new"))
        .await
        .expect("password");
    let (u, secrets) = store.get_user(&user.id).await.expect("get");
    assert_eq!(u.failed_logins, 0, "a new password lifts the failures");
    assert_eq!(secrets.password_hash.as_deref(), Some("$argon2id$new"));

    // Second factor: a secret, then enabled with recovery codes; each code step and each
    // recovery code is accepted once.
    let key = MasterKey::from_bytes([7; 32]);
    let sealed = key.seal("JBSWY3DPEHPK3PXP", &seal::totp_secret_context(&user.id));
    store
        .set_user_totp(&user.id, Some(&sealed), false, &[])
        .await
        .expect("pending totp");
    let (u, secrets) = store.get_user(&user.id).await.expect("get");
    assert!(!u.totp_enabled);
    assert_eq!(secrets.totp_secret.as_ref(), Some(&sealed));
    let codes = [TokenHash::of("code-one"), TokenHash::of("code-two")];
    store
        .set_user_totp(&user.id, Some(&sealed), true, &codes)
        .await
        .expect("enable totp");
    assert!(store.get_user(&user.id).await.expect("get").0.totp_enabled);
    assert_eq!(store.recovery_codes_left(&user.id).await.expect("left"), 2);
    assert!(store.use_totp_step(&user.id, 100).await.expect("step"));
    assert!(
        !store.use_totp_step(&user.id, 100).await.expect("step"),
        "replay"
    );
    assert!(
        !store.use_totp_step(&user.id, 99).await.expect("step"),
        "older"
    );
    assert!(store.use_totp_step(&user.id, 101).await.expect("step"));
    assert_eq!(
        store
            .get_user(&user.id)
            .await
            .expect("get")
            .1
            .totp_last_step,
        Some(101)
    );
    assert!(
        store
            .use_recovery_code(&user.id, &codes[0])
            .await
            .expect("code")
    );
    assert!(
        !store
            .use_recovery_code(&user.id, &codes[0])
            .await
            .expect("code"),
        "used"
    );
    assert!(
        !store
            .use_recovery_code(&oidc.id, &codes[1])
            .await
            .expect("code"),
        "not theirs"
    );
    assert_eq!(store.recovery_codes_left(&user.id).await.expect("left"), 1);
    store
        .set_user_totp(&user.id, None, false, &[])
        .await
        .expect("reset totp");
    let (u, secrets) = store.get_user(&user.id).await.expect("get");
    assert!(!u.totp_enabled && secrets.totp_secret.is_none() && secrets.totp_last_step.is_none());
    assert_eq!(store.recovery_codes_left(&user.id).await.expect("left"), 0);
    assert_not_found(store.use_totp_step(&UserId::new(), 1).await, "user");

    // Deleting a user takes their sessions along.
    let session = Session {
        id: SessionId::new(),
        user_id: user.id.clone(),
        stage: SessionStage::Full,
        csrf_token: "csrf".into(),
        created_at: at(0),
        last_seen: at(0),
        expires_at: at(3600),
    };
    store
        .create_session(&session, &TokenHash::of("kk_ses_gone"))
        .await
        .expect("session");
    store.delete_user(&user.id).await.expect("delete");
    assert_not_found(store.get_user(&user.id).await, "user");
    assert_eq!(
        store
            .find_session(&TokenHash::of("kk_ses_gone"), at(1))
            .await
            .expect("find"),
        None
    );
    assert_not_found(store.delete_user(&user.id).await, "user");
    assert_eq!(store.list_users().await.expect("list").len(), 1);
}

/// Sessions: found by token hash until they expire, touched, deleted one by one, per user,
/// or when expired.
pub async fn sessions_expire_and_end(store: &dyn Store) {
    let user = User::new(
        Email::parse("admin@example.com").expect("valid address"),
        Role::Admin,
        at(0),
    );
    store
        .create_user(&user, Some("$argon2id$x"))
        .await
        .expect("user");
    let session = |stage, expires| Session {
        id: SessionId::new(),
        user_id: user.id.clone(),
        stage,
        csrf_token: "csrf-token".into(),
        created_at: at(0),
        last_seen: at(0),
        expires_at: at(expires),
    };
    let pending = session(SessionStage::SecondFactor, 300);
    let full = session(SessionStage::Full, 3600);
    let (pending_hash, full_hash) = (TokenHash::of("kk_ses_a"), TokenHash::of("kk_ses_b"));
    store
        .create_session(&pending, &pending_hash)
        .await
        .expect("create");
    store
        .create_session(&full, &full_hash)
        .await
        .expect("create");
    assert_conflict(
        store
            .create_session(&session(SessionStage::Full, 10), &full_hash)
            .await,
        "token hash",
        full_hash.as_str(),
    );
    let stranger = Session {
        user_id: UserId::new(),
        ..session(SessionStage::Full, 10)
    };
    assert_not_found(
        store
            .create_session(&stranger, &TokenHash::of("kk_ses_c"))
            .await,
        "user",
    );
    let found = store.find_session(&full_hash, at(10)).await.expect("find");
    assert_eq!(found.as_ref(), Some(&full));
    assert_eq!(
        store
            .find_session(&pending_hash, at(10))
            .await
            .expect("find")
            .map(|s| s.stage),
        Some(SessionStage::SecondFactor)
    );
    assert_eq!(
        store
            .find_session(&pending_hash, at(300))
            .await
            .expect("find"),
        None,
        "expired"
    );
    store
        .touch_session(&full.id, at(3000), at(7000))
        .await
        .expect("touch");
    let touched = store
        .find_session(&full_hash, at(5000))
        .await
        .expect("find")
        .expect("still there after its first end");
    assert_eq!(
        (touched.last_seen, touched.expires_at),
        (at(3000), at(7000))
    );
    assert_not_found(
        store.touch_session(&SessionId::new(), at(1), at(2)).await,
        "session",
    );
    assert_eq!(
        store.prune_sessions(at(5000)).await.expect("prune"),
        1,
        "the pending one"
    );
    assert!(store.delete_session(&full.id).await.expect("delete"));
    assert!(!store.delete_session(&full.id).await.expect("delete"));
    assert_eq!(
        store.find_session(&full_hash, at(10)).await.expect("find"),
        None
    );
    for i in 0..3 {
        store
            .create_session(
                &session(SessionStage::Full, 3600),
                &TokenHash::of(&format!("kk_ses_{i}")),
            )
            .await
            .expect("create");
    }
    assert_eq!(
        store.delete_user_sessions(&user.id).await.expect("delete"),
        3
    );
}

/// Certificates: stored, replaced by id (keeping the key unless a new one is given), names
/// unique, listed by names.
pub async fn certificates_round_trip(store: &dyn Store) {
    let key = MasterKey::from_bytes([7; 32]);
    let pending = Certificate {
        id: CertificateId::new(),
        names: [host("wiki.fuga.com")].into(),
        source: CertificateSource::Acme,
        method: CertificateMode::Http01,
        issuer: None,
        not_before: None,
        not_after: None,
        sha256: None,
        chain_pem: None,
        next_renewal: Some(at(60)),
        failures: 1,
        last_error: Some("the CA could not reach the edges".to_owned()),
        created_at: at(0),
        updated_at: at(0),
    };
    store.put_certificate(&pending, None).await.expect("put");
    assert_eq!(
        store.get_certificate(&pending.id).await.expect("get"),
        pending
    );
    assert_eq!(store.certificate_key(&pending.id).await.expect("key"), None);

    let chain = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let issued = Certificate {
        issuer: Some("CN=Pebble Intermediate CA".to_owned()),
        not_before: Some(at(100)),
        not_after: Some(at(100 + 90 * 86_400)),
        sha256: Some(ContentHash::of(chain.as_bytes())),
        chain_pem: Some(chain.to_owned()),
        next_renewal: Some(at(100 + 60 * 86_400)),
        failures: 0,
        last_error: None,
        updated_at: at(100),
        ..pending.clone()
    };
    let context = seal::certificate_key_context(&issued.id);
    let sealed = key.seal("-----BEGIN PRIVATE KEY-----", &context);
    store
        .put_certificate(&issued, Some(&sealed))
        .await
        .expect("replace");
    assert_eq!(
        store.get_certificate(&issued.id).await.expect("get"),
        issued
    );
    let renewed = Certificate {
        updated_at: at(200),
        ..issued.clone()
    };
    store.put_certificate(&renewed, None).await.expect("touch");
    let kept = store.certificate_key(&issued.id).await.expect("key");
    assert_eq!(
        kept.as_ref()
            .map(|k| key.open(k, &context).expect("opens").to_string()),
        Some("-----BEGIN PRIVATE KEY-----".to_owned()),
        "the key is kept when none is given"
    );

    let app = Certificate {
        id: CertificateId::new(),
        names: [host("app.hoge.com"), host("*.hoge.com")].into(),
        ..pending.clone()
    };
    store.put_certificate(&app, None).await.expect("second");
    let twin = Certificate {
        id: CertificateId::new(),
        ..app.clone()
    };
    assert_conflict(
        store.put_certificate(&twin, None).await,
        "certificate names",
        "*.hoge.com,app.hoge.com",
    );
    let listed = store.list_certificates().await.expect("list");
    assert_eq!(listed, [app.clone(), renewed], "by names");
    store.delete_certificate(&app.id).await.expect("delete");
    assert_not_found(store.get_certificate(&app.id).await, "certificate");
    assert_not_found(store.delete_certificate(&app.id).await, "certificate");
    assert_not_found(store.certificate_key(&app.id).await, "certificate");
}

/// DNS zones: names unique, credentials kept apart and replaced only when given, in use
/// while records made in them are recorded.
pub async fn dns_zones_round_trip(store: &dyn Store) {
    let key = MasterKey::from_bytes([7; 32]);
    let zone = DnsZone {
        id: DnsZoneId::new(),
        name: host("hoge.com"),
        provider: name("powerdns"),
        provider_zone_id: None,
        settings: json!({"url": "http://127.0.0.1:8081"}),
        ttl: 30,
        created_at: at(0),
    };
    let context = seal::dns_zone_credentials_context(&zone.id);
    let credentials = key.seal(r#"{"api_key":"k1"}"#, &context);
    store
        .create_dns_zone(&zone, Some(&credentials))
        .await
        .expect("create");
    let other = DnsZone {
        id: DnsZoneId::new(),
        name: host("fuga.com"),
        provider: name("manual"),
        settings: json!({}),
        ..zone.clone()
    };
    store.create_dns_zone(&other, None).await.expect("second");
    assert_conflict(
        store
            .create_dns_zone(
                &DnsZone {
                    id: DnsZoneId::new(),
                    ..zone.clone()
                },
                None,
            )
            .await,
        "zone name",
        "hoge.com",
    );
    assert_eq!(store.get_dns_zone(&zone.id).await.expect("get"), zone);
    assert_eq!(
        store.list_dns_zones().await.expect("list"),
        [other.clone(), zone.clone()],
        "by name"
    );
    assert_eq!(
        store.dns_zone_credentials(&other.id).await.expect("none"),
        None
    );

    let mut changed = zone.clone();
    changed.provider_zone_id = Some("hoge.com.".to_owned());
    changed.ttl = 60;
    changed.name = host("ignored.com");
    store.update_dns_zone(&changed, None).await.expect("update");
    changed.name = zone.name.clone();
    assert_eq!(store.get_dns_zone(&zone.id).await.expect("get"), changed);
    let open =
        |sealed: Option<Sealed>| sealed.map(|s| key.open(&s, &context).expect("opens").to_string());
    assert_eq!(
        open(store.dns_zone_credentials(&zone.id).await.expect("kept")),
        Some(r#"{"api_key":"k1"}"#.to_owned())
    );
    let replaced = key.seal(r#"{"api_key":"k2"}"#, &context);
    store
        .update_dns_zone(&changed, Some(&replaced))
        .await
        .expect("update");
    assert_eq!(
        open(
            store
                .dns_zone_credentials(&zone.id)
                .await
                .expect("replaced")
        ),
        Some(r#"{"api_key":"k2"}"#.to_owned())
    );

    let record = DnsRecord {
        id: DnsRecordId::new(),
        hostname: host("app.hoge.com"),
        data: RecordData::A(Ipv4Addr::new(203, 0, 113, 10)),
        provider_record_id: Some("app.hoge.com./A/203.0.113.10".to_owned()),
        provider: name("powerdns"),
        zone_id: Some(zone.id.clone()),
        edge_node_id: None,
        created_at: at(5),
    };
    store.add_dns_record(&record).await.expect("record");
    assert_eq!(
        store.list_dns_records(None).await.expect("list")[0].zone_id,
        Some(zone.id.clone())
    );
    match store.delete_dns_zone(&zone.id).await {
        Err(Error::InUse { count: 1, .. }) => {}
        other => panic!("expected the zone to be in use by one record, got {other:?}"),
    }
    store
        .delete_dns_record(&record.id)
        .await
        .expect("delete record");
    store.delete_dns_zone(&zone.id).await.expect("delete");
    assert_not_found(store.get_dns_zone(&zone.id).await, "DNS zone");
    assert_not_found(store.delete_dns_zone(&zone.id).await, "DNS zone");
    assert_not_found(store.update_dns_zone(&zone, None).await, "DNS zone");
}

/// Events: numbered in order, listed newest first or (after a number) oldest first,
/// filtered by kind, subject and severity, pruned by age.
pub async fn events_are_numbered_and_filtered(store: &dyn Store) {
    let new = |kind: &str, severity, subject: Option<&str>, seconds| NewEvent {
        kind: EventKind::parse(kind).expect("a valid kind"),
        severity,
        subject: subject.map(str::to_owned),
        message: format!("{kind} happened"),
        data: json!({"n": seconds}),
        created_at: at(seconds),
    };
    let mut recorded = Vec::new();
    for e in [
        new("edge.provisioned", Severity::Info, Some("edg_1"), 0),
        new("edge_node_unhealthy", Severity::Warning, Some("edg_1"), 10),
        new(
            "dns.record.removed",
            Severity::Info,
            Some("app.hoge.com"),
            11,
        ),
        new("edge.ready", Severity::Info, Some("edg_2"), 20),
        new("edge.no_healthy_left", Severity::Critical, None, 30),
    ] {
        let event = store.append_event(&e).await.expect("append");
        assert_eq!(
            (&event.kind, &event.data, event.created_at),
            (&e.kind, &e.data, e.created_at)
        );
        recorded.push(event);
    }
    let ids: Vec<i64> = recorded.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing: {ids:?}");

    let list = |filter: EventFilter| async move {
        store
            .list_events(&filter)
            .await
            .expect("list")
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
    };
    let newest: Vec<i64> = ids.iter().rev().copied().collect();
    assert_eq!(list(EventFilter::default()).await, newest);
    assert_eq!(
        list(EventFilter {
            limit: 2,
            ..Default::default()
        })
        .await,
        newest[..2]
    );
    assert_eq!(
        list(EventFilter {
            after: Some(ids[1]),
            limit: 2,
            ..Default::default()
        })
        .await,
        ids[2..4],
        "oldest first after a number"
    );
    assert_eq!(
        list(EventFilter {
            before: Some(ids[2]),
            ..Default::default()
        })
        .await,
        [ids[1], ids[0]]
    );
    assert_eq!(
        list(EventFilter {
            kind: Some("edge.*".to_owned()),
            ..Default::default()
        })
        .await,
        [ids[4], ids[3], ids[0]],
        "a prefix; `edge_node_unhealthy` is not under `edge.`"
    );
    assert_eq!(
        list(EventFilter {
            kind: Some("edge_node_unhealthy".to_owned()),
            ..Default::default()
        })
        .await,
        [ids[1]]
    );
    assert_eq!(
        list(EventFilter {
            subject: Some("edg_1".to_owned()),
            ..Default::default()
        })
        .await,
        [ids[1], ids[0]]
    );
    assert_eq!(
        list(EventFilter {
            min_severity: Some(Severity::Warning),
            ..Default::default()
        })
        .await,
        [ids[4], ids[1]]
    );
    assert_eq!(store.prune_events(at(11)).await.expect("prune"), 2);
    assert_eq!(list(EventFilter::default()).await, newest[..3]);
    let next = store
        .append_event(&new("edge.ready", Severity::Info, None, 40))
        .await
        .expect("append");
    assert!(next.id > ids[4], "numbers are not reused after pruning");
}

/// Shared values: put, get, list by key, delete; expired ones are gone.
pub async fn shared_values_expire(store: &dyn Store) {
    store
        .kv_put("settings", "modules", r#"{"dns":true}"#, None)
        .await
        .expect("put");
    store
        .kv_put("acme-http-01", "tok2", "tok2.thumb", Some(at(100)))
        .await
        .expect("put");
    store
        .kv_put("acme-http-01", "tok1", "tok1.thumb", Some(at(50)))
        .await
        .expect("put");
    assert_eq!(
        store
            .kv_get("settings", "modules", at(0))
            .await
            .expect("get")
            .as_deref(),
        Some(r#"{"dns":true}"#)
    );
    assert_eq!(
        store
            .kv_get("settings", "nothing", at(0))
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        store.kv_list("acme-http-01", at(10)).await.expect("list"),
        [
            ("tok1".to_owned(), "tok1.thumb".to_owned()),
            ("tok2".to_owned(), "tok2.thumb".to_owned())
        ]
    );
    assert_eq!(
        store.kv_list("acme-http-01", at(50)).await.expect("list"),
        [("tok2".to_owned(), "tok2.thumb".to_owned())],
        "expired at its time"
    );
    assert_eq!(
        store
            .kv_get("acme-http-01", "tok1", at(60))
            .await
            .expect("get"),
        None
    );
    store
        .kv_put("settings", "modules", r#"{"dns":false}"#, None)
        .await
        .expect("replace");
    assert_eq!(
        store
            .kv_get("settings", "modules", at(0))
            .await
            .expect("get")
            .as_deref(),
        Some(r#"{"dns":false}"#)
    );
    assert!(
        store
            .kv_delete("settings", "modules")
            .await
            .expect("delete")
    );
    assert!(
        !store
            .kv_delete("settings", "modules")
            .await
            .expect("delete again")
    );
    assert!(
        store
            .kv_list("settings", at(0))
            .await
            .expect("list")
            .is_empty()
    );
}

/// A lease has one holder until it expires; the holder renews it; anyone takes it after.
pub async fn leases_have_one_holder(store: Arc<dyn Store>) {
    let claim = |who: &'static str, now, until| {
        let store = Arc::clone(&store);
        async move {
            store
                .kv_claim("leases", "leader", who, at(now), at(until))
                .await
                .expect("claim")
        }
    };
    assert!(claim("cp-a", 0, 10).await, "free: taken");
    assert!(!claim("cp-b", 5, 15).await, "held by another");
    assert!(claim("cp-a", 8, 18).await, "renewed by its holder");
    assert!(!claim("cp-b", 17, 27).await, "still held after the renewal");
    assert!(claim("cp-b", 18, 28).await, "expired: taken over");
    assert!(!claim("cp-a", 19, 29).await, "the old holder lost it");

    // Racing for a free lease: exactly one wins.
    let tasks: Vec<_> = ["x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8"]
        .into_iter()
        .map(|who| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                store
                    .kv_claim("leases", "race", who, at(0), at(10))
                    .await
                    .expect("claim")
            })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.expect("task"));
    }
    assert_eq!(winners, 1, "one holder among racers");
}

/// A long lease term, and a short one that the checks wait out.
const LONG: Duration = Duration::from_secs(30);
const SHORT: Duration = Duration::from_millis(300);

/// Waits `duration`. (Tokio's timer is not among the features the suite needs.)
async fn pause(duration: Duration) {
    tokio::task::spawn_blocking(move || std::thread::sleep(duration))
        .await
        .expect("the pause ended");
}

/// Fenced leases: a term runs by the store's clock; its holder renews it and keeps the
/// token; anyone else, and the holder once its term ran out, starts a new term with a larger
/// token; a release ends the term at once and keeps the token.
pub async fn fenced_leases_have_terms(store: &dyn Store) {
    let acquire = |name: &'static str, who: &'static str, ttl| async move {
        store
            .lease_acquire(name, who, ttl)
            .await
            .unwrap_or_else(|e| panic!("{who} acquiring {name}: {e}"))
    };
    let holder =
        |name: &'static str| async move { store.lease_holder(name).await.expect("holder") };

    assert_eq!(holder("leader").await, None, "never granted");
    let first = acquire("leader", "cp-a", LONG)
        .await
        .expect("free: granted");
    assert_eq!(
        first,
        Lease {
            name: "leader".to_owned(),
            holder: "cp-a".to_owned(),
            token: 1,
            expires_in: LONG,
            new_term: true,
        }
    );
    let renewed = acquire("leader", "cp-a", LONG)
        .await
        .expect("renewed by its holder");
    assert_eq!((renewed.token, renewed.new_term), (1, false), "a renewal");
    assert_eq!(
        acquire("leader", "cp-b", LONG).await,
        None,
        "held by another"
    );
    let seen = holder("leader").await.expect("held");
    assert_eq!(
        (seen.holder.as_str(), seen.token, seen.new_term),
        ("cp-a", 1, false)
    );
    assert!(
        seen.expires_in <= LONG && seen.expires_in > LONG - Duration::from_secs(5),
        "time left by the store's clock: {:?}",
        seen.expires_in
    );

    // Two terms that run out together.
    let shortened = acquire("leader", "cp-a", SHORT)
        .await
        .expect("renewed for less");
    assert_eq!((shortened.token, shortened.expires_in), (1, SHORT));
    let other = acquire("other", "cp-a", SHORT)
        .await
        .expect("another lease");
    assert_eq!(
        (other.token, other.new_term),
        (1, true),
        "tokens count per lease"
    );
    pause(SHORT + Duration::from_millis(100)).await;
    assert_eq!(holder("leader").await, None, "the term ran out");
    let taken = acquire("leader", "cp-b", LONG)
        .await
        .expect("ran out: taken over");
    assert_eq!((taken.token, taken.new_term), (2, true));
    assert_eq!(
        acquire("leader", "cp-a", LONG).await,
        None,
        "the old holder lost it"
    );
    let again = acquire("other", "cp-a", LONG)
        .await
        .expect("ran out: granted again");
    assert_eq!(
        (again.token, again.new_term),
        (2, true),
        "a term that ran out is not renewed, even for its holder"
    );

    assert!(
        !store
            .lease_release("leader", "cp-a")
            .await
            .expect("release"),
        "not cp-a's to release"
    );
    assert!(
        !store
            .lease_release("nothing", "cp-a")
            .await
            .expect("release"),
        "never granted"
    );
    assert_eq!(
        holder("leader").await.map(|l| l.token),
        Some(2),
        "a refused release changes nothing"
    );
    assert!(
        store
            .lease_release("leader", "cp-b")
            .await
            .expect("release")
    );
    assert!(
        !store
            .lease_release("leader", "cp-b")
            .await
            .expect("release"),
        "released already"
    );
    assert_eq!(holder("leader").await, None, "released");
    let next = acquire("leader", "cp-a", LONG)
        .await
        .expect("released: free");
    assert_eq!(
        (next.token, next.new_term),
        (3, true),
        "the token outlives a release"
    );
    assert!(
        store
            .lease_release("leader", "cp-a")
            .await
            .expect("release")
    );
    let back = acquire("leader", "cp-a", LONG)
        .await
        .expect("released: free");
    assert_eq!(
        (back.token, back.new_term),
        (4, true),
        "a holder that released starts a new term"
    );
}

/// Intents: recorded under the running term, numbered in order and stamped by the store's
/// clock; under a term that is over (ran out, taken over, never granted) refused with
/// [`Error::Fenced`] and nothing recorded.
pub async fn intents_are_fenced(store: &dyn Store) {
    let new = |kind: &str, subject: &str| NewIntent {
        kind: kind.to_owned(),
        subject: subject.to_owned(),
        detail: json!({"subject": subject, "records": ["A 203.0.113.7"]}),
    };
    let record =
        |fence: Fence, intent: NewIntent| async move { store.record_intent(&fence, &intent).await };
    let list = |after, limit| async move { store.list_intents(after, limit).await.expect("list") };
    let before = Timestamp::now();
    let a = store
        .lease_acquire("leader", "cp-a", SHORT)
        .await
        .expect("acquire")
        .expect("free");
    let first = record(a.fence(), new("vps.create", "edg_1"))
        .await
        .expect("under the running term");
    assert_eq!(
        first,
        Intent {
            id: first.id,
            lease: "leader".to_owned(),
            token: 1,
            holder: "cp-a".to_owned(),
            kind: "vps.create".to_owned(),
            subject: "edg_1".to_owned(),
            detail: json!({"subject": "edg_1", "records": ["A 203.0.113.7"]}),
            created_at: first.created_at,
        }
    );
    assert!(
        first.created_at >= before.plus_secs(-5)
            && first.created_at <= Timestamp::now().plus_secs(5),
        "stamped by the store's clock: {}",
        first.created_at
    );
    let second = record(a.fence(), new("dns.apply", "hoge.com"))
        .await
        .expect("under the running term");
    assert!(second.id > first.id, "numbered in order");
    let recorded = list(None, 100).await;
    assert_eq!(recorded, [first.clone(), second.clone()]);

    pause(SHORT + Duration::from_millis(100)).await;
    assert_fenced(
        record(a.fence(), new("vps.destroy", "edg_1")).await,
        "leader",
        1,
        None,
    );
    let b = store
        .lease_acquire("leader", "cp-b", LONG)
        .await
        .expect("acquire")
        .expect("ran out: taken over");
    assert_eq!(b.token, 2);
    assert_fenced(
        record(a.fence(), new("vps.destroy", "edg_1")).await,
        "leader",
        1,
        Some(2),
    );
    let forged = Fence {
        holder: "cp-a".to_owned(),
        ..b.fence()
    };
    assert_fenced(
        record(forged, new("vps.destroy", "edg_1")).await,
        "leader",
        2,
        Some(2),
    );
    let unknown = Fence {
        lease: "nothing".to_owned(),
        holder: "cp-a".to_owned(),
        token: 1,
    };
    assert_fenced(
        record(unknown, new("acme.order", "app.hoge.com")).await,
        "nothing",
        1,
        None,
    );
    assert_eq!(
        list(None, 100).await,
        recorded,
        "refused intents leave nothing"
    );

    let third = record(b.fence(), new("vps.destroy", "edg_1"))
        .await
        .expect("under the new term");
    assert_eq!(
        (third.token, third.holder.as_str()),
        (2, "cp-b"),
        "recorded under the new term"
    );
    assert!(third.id > second.id);
    assert_eq!(
        list(Some(first.id), 1).await,
        std::slice::from_ref(&second),
        "oldest first after a number"
    );
    assert_eq!(
        list(Some(second.id), 10).await,
        std::slice::from_ref(&third)
    );
    assert_eq!(list(None, 0).await, []);
    assert!(
        store
            .lease_release("leader", "cp-b")
            .await
            .expect("release")
    );
    assert_fenced(
        record(b.fence(), new("vps.destroy", "edg_2")).await,
        "leader",
        2,
        None,
    );
}

/// Holders racing for a lease, free or released: exactly one gets the term.
pub async fn racing_holders_get_one_term(store: Arc<dyn Store>) {
    let race = || async {
        let tasks: Vec<_> = (1..=8)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .lease_acquire("leader", &format!("cp-{i}"), LONG)
                        .await
                        .expect("acquire")
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.expect("task"));
        }
        assert_eq!(winners.len(), 1, "one holder among racers: {winners:?}");
        winners.remove(0)
    };
    let first = race().await;
    assert_eq!((first.token, first.new_term), (1, true));
    let held = store
        .lease_holder("leader")
        .await
        .expect("holder")
        .expect("held");
    assert_eq!(
        (held.holder.as_str(), held.token),
        (first.holder.as_str(), 1),
        "the winner holds it"
    );
    assert!(
        store
            .lease_release("leader", &first.holder)
            .await
            .expect("release")
    );
    let second = race().await;
    assert_eq!((second.token, second.new_term), (2, true));
}

/// Retention: old health checks, expired shared values and old intents are deleted, and
/// nothing newer.
pub async fn retention_prunes_only_old_rows(store: &dyn Store) {
    let watched = edge("edge-1", None, 0);
    store.create_edge(&watched).await.expect("edge");
    for seconds in [10, 20, 30] {
        let check = HealthCheck {
            edge_node_id: watched.id.clone(),
            check: "http".to_owned(),
            status: CheckStatus::Success,
            response_time_ms: Some(5),
            error_message: None,
            checked_at: at(seconds),
        };
        store.record_health_check(&check, None).await.expect("add");
    }
    assert_eq!(
        store.prune_health_checks(at(20)).await.expect("prune"),
        1,
        "only the check before"
    );
    let left: Vec<Timestamp> = store
        .health_history(&watched.id, 10)
        .await
        .expect("history")
        .into_iter()
        .map(|c| c.checked_at)
        .collect();
    assert_eq!(left, [at(30), at(20)]);
    assert_eq!(store.prune_health_checks(at(20)).await.expect("prune"), 0);

    for (key, expires) in [("a", Some(at(50))), ("b", Some(at(100))), ("c", None)] {
        store
            .kv_put("acme-http-01", key, key, expires)
            .await
            .expect("put");
    }
    assert_eq!(store.kv_prune(at(49)).await.expect("prune"), 0);
    assert_eq!(
        store.kv_prune(at(50)).await.expect("prune"),
        1,
        "expired at its time"
    );
    let keys = |pairs: Vec<(String, String)>| pairs.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        keys(store.kv_list("acme-http-01", at(0)).await.expect("list")),
        ["b", "c"],
        "pruned for good, not only hidden"
    );
    assert_eq!(store.kv_prune(at(1_000)).await.expect("prune"), 1);
    assert_eq!(
        keys(store.kv_list("acme-http-01", at(0)).await.expect("list")),
        ["c"],
        "a value without an end stays"
    );

    let fence = store
        .lease_acquire("leader", "cp-a", LONG)
        .await
        .expect("acquire")
        .expect("free")
        .fence();
    let intent = NewIntent {
        kind: "dns.apply".to_owned(),
        subject: "hoge.com".to_owned(),
        detail: json!({}),
    };
    let first = store.record_intent(&fence, &intent).await.expect("record");
    // Intents are stamped in whole seconds of the store's clock: wait for the next one.
    for _ in 0..30 {
        if Timestamp::now() > first.created_at {
            break;
        }
        pause(Duration::from_millis(50)).await;
    }
    pause(Duration::from_millis(20)).await;
    let second = store.record_intent(&fence, &intent).await.expect("record");
    assert!(
        second.created_at > first.created_at,
        "{} then {}",
        first.created_at,
        second.created_at
    );
    assert_eq!(
        store.prune_intents(first.created_at).await.expect("prune"),
        0
    );
    assert_eq!(
        store.prune_intents(second.created_at).await.expect("prune"),
        1,
        "only the intent before"
    );
    assert_eq!(
        store.list_intents(None, 10).await.expect("list"),
        std::slice::from_ref(&second)
    );
    assert_eq!(
        store
            .prune_intents(second.created_at.plus_secs(1))
            .await
            .expect("prune"),
        1
    );
    let third = store.record_intent(&fence, &intent).await.expect("record");
    assert!(third.id > second.id, "numbers are not reused after pruning");
}

/// Traffic: rows add to their bucket (in one call or several, as control planes do), each
/// series is read alone and in order, and pruning keeps the other resolution.
pub async fn traffic_adds_up_per_bucket(store: &dyn Store) {
    use kokoa_core::{TrafficCounts, TrafficResolution as R, TrafficRow, TrafficScope};
    let app = TrafficScope::Host("app.hoge.com".to_owned());
    let edge = TrafficScope::Edge(EdgeNodeId::new());
    let counts = |requests: u64, errors: u64, slow: u64| {
        let mut c = TrafficCounts {
            requests,
            errors,
            ..TrafficCounts::default()
        };
        c.latency[2] = requests - slow;
        c.latency[11] = slow;
        c
    };
    let row = |resolution, scope: &TrafficScope, start, counts| TrafficRow {
        resolution,
        scope: scope.clone(),
        start,
        counts,
    };
    store
        .add_traffic(&[
            row(R::Minute, &app, at(60), counts(10, 1, 2)),
            row(R::Minute, &app, at(0), counts(3, 0, 0)),
            row(R::Hour, &app, at(0), counts(13, 1, 2)),
            row(R::Minute, &edge, at(60), counts(7, 7, 7)),
        ])
        .await
        .expect("add");
    // A second control plane adds to the same bucket.
    store
        .add_traffic(&[row(R::Minute, &app, at(60), counts(5, 2, 1))])
        .await
        .expect("add again");
    store.add_traffic(&[]).await.expect("nothing to add");

    let series = store
        .traffic_series(R::Minute, &app, at(0))
        .await
        .expect("series");
    let read: Vec<_> = series.iter().map(|p| (p.start, p.counts)).collect();
    assert_eq!(
        read,
        [(at(0), counts(3, 0, 0)), (at(60), counts(15, 3, 3))],
        "summed per bucket, oldest first"
    );
    let later = store
        .traffic_series(R::Minute, &app, at(1))
        .await
        .expect("series");
    assert_eq!(later.len(), 1, "since is the bucket start, inclusive");
    let edge_series = store
        .traffic_series(R::Minute, &edge, at(0))
        .await
        .expect("series");
    assert_eq!(edge_series.len(), 1);
    assert_eq!(edge_series[0].counts, counts(7, 7, 7), "series stay apart");
    let hours = store
        .traffic_series(R::Hour, &app, at(0))
        .await
        .expect("series");
    assert_eq!(hours.len(), 1);
    assert_eq!(hours[0].counts, counts(13, 1, 2));

    assert_eq!(
        store.prune_traffic(R::Minute, at(60)).await.expect("prune"),
        1
    );
    assert_eq!(
        store
            .traffic_series(R::Minute, &app, at(0))
            .await
            .expect("series")
            .len(),
        1
    );
    assert_eq!(
        store
            .traffic_series(R::Hour, &app, at(0))
            .await
            .expect("series")
            .len(),
        1,
        "pruning minutes leaves the hours"
    );
}

/// A freshly opened store has the schema its build makes.
pub async fn the_schema_is_the_builds(store: &dyn Store) {
    let (found, built) = store.schema_versions().await.expect("schema versions");
    assert_eq!(found, built);
}
