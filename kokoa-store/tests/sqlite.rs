//! The store conformance suite against SQLite, each check on a new database file.

use std::sync::Arc;

use kokoa_store::{Store, conformance, sqlite};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut databases = 0;
    conformance::run_all(|| {
        databases += 1;
        let path = dir.path().join(format!("kokoa-{databases}.db"));
        async move {
            let store = sqlite::open(&path).await.expect("open the database");
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
}

#[tokio::test]
async fn reopening_keeps_data_and_does_not_migrate_twice() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("kokoa.db");
    let store = sqlite::open(&path).await.expect("create");
    conformance::routes_round_trip(&store).await;
    let routes = store.list_routes().await.expect("list");
    drop(store);

    let store = sqlite::open(&path).await.expect("reopen");
    assert_eq!(store.list_routes().await.expect("list"), routes);
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("kokoa.db");
    drop(sqlite::open(&path).await.expect("create"));
    let conn = rusqlite::Connection::open(&path).expect("open directly");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("read versions");
    assert_eq!(versions, [1, 2, 3, 4, 5, 6], "each migration recorded once");
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)",
        [],
    )
    .expect("pretend a newer version migrated it");
    drop(conn);

    let err = sqlite::open(&path).await.expect_err("refused").to_string();
    assert!(err.contains("version 99") && err.contains("newer"), "{err}");
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_without_losing_rows() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("kokoa.db");
    let conn = rusqlite::Connection::open(&path).expect("create directly");
    conn.execute_batch(include_str!("../src/migrations/sqlite/0001_initial.sql"))
        .expect("schema version 1");
    conn.execute_batch(
        "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL);
         INSERT INTO schema_migrations VALUES (1, 0);
         INSERT INTO origins VALUES ('org_1', 'home', NULL, 'active', NULL, NULL, '10.0.1.0/24',
           '10.0.1.1', 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=', 'c2VhbGVkc2VhbGVkc2VhbGVkc2VhbGVkc2VhbGVk', 0);
         INSERT INTO routes VALUES ('rt_1', 'app.hoge.com', 'org_1', 8080, 0);
         INSERT INTO edge_nodes VALUES ('edg_1', 'edge-1', NULL, 'manual', 'lab', '10.99.0.11',
           'active', NULL, NULL, 2, 0, NULL);
         INSERT INTO health_checks (edge_node_id, status, response_time_ms, error_message, checked_at)
           VALUES ('edg_1', 'failure', NULL, 'timed out', 5);
         INSERT INTO users VALUES ('usr_1', 'admin@example.com', 'admin', 0, '$argon2id$x');",
    )
    .expect("rows of version 1");
    drop(conn);

    let store = sqlite::open(&path).await.expect("upgrade");
    let routes = store.list_routes().await.expect("routes");
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].certificate, kokoa_core::CertificateMode::Http01);
    let edge = store
        .get_edge(&kokoa_core::EdgeNodeId::parse("edg_1").expect("id"))
        .await
        .expect("edge");
    assert_eq!(
        (edge.health_check_failures, edge.instance_id, edge.lifecycle),
        (2, None, kokoa_core::EdgeLifecycle::default())
    );
    let history = store.health_history(&edge.id, 10).await.expect("history");
    assert_eq!(history[0].check, "http");
    assert_eq!(history[0].error_message.as_deref(), Some("timed out"));
    let (user, secrets) = store
        .get_user(&kokoa_core::UserId::parse("usr_1").expect("id"))
        .await
        .expect("user");
    assert_eq!((user.totp_enabled, user.failed_logins), (false, 0));
    assert_eq!(secrets.password_hash.as_deref(), Some("$argon2id$x"));
}
