//! The store conformance suite against `SqliteStore`, each check on a new database file.

use std::sync::Arc;

use kokoa_core::store::{Store, conformance, sqlite::SqliteStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut databases = 0;
    conformance::run_all(|| {
        databases += 1;
        let path = dir.path().join(format!("kokoa-{databases}.db"));
        async move {
            let store = SqliteStore::open(&path).await.expect("open the database");
            Arc::new(store) as Arc<dyn Store>
        }
    })
    .await;
}

#[tokio::test]
async fn reopening_keeps_data_and_does_not_migrate_twice() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("kokoa.db");
    let store = SqliteStore::open(&path).await.expect("create");
    conformance::routes_round_trip(&store).await;
    let routes = store.list_routes().await.expect("list");
    drop(store);

    let store = SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(store.path(), path);
    assert_eq!(store.list_routes().await.expect("list"), routes);
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("kokoa.db");
    drop(SqliteStore::open(&path).await.expect("create"));
    let conn = rusqlite::Connection::open(&path).expect("open directly");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("read versions");
    assert_eq!(versions, [1], "each migration recorded once");
    conn.execute(
        "INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)",
        [],
    )
    .expect("pretend a newer version migrated it");
    drop(conn);

    let err = SqliteStore::open(&path)
        .await
        .expect_err("refused")
        .to_string();
    assert!(err.contains("version 99") && err.contains("newer"), "{err}");
}
