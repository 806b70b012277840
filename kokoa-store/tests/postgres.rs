//! The store conformance suite against PostgreSQL, each check in a new schema.
//!
//! Needs a PostgreSQL server: `KOKOA_TEST_POSTGRES_URL` names one whose user may create
//! databases (`scripts/start-postgres` starts one and prints the URL).

use std::{
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use kokoa_store::{SqlStore, Store, conformance, postgres};
use sqlx::{Connection, Executor, PgConnection};

/// The server URL, or `None` when the run explicitly skips PostgreSQL.
fn server_url() -> Option<String> {
    match std::env::var("KOKOA_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) if std::env::var("KOKOA_SKIP_POSTGRES").as_deref() == Ok("1") => None,
        Err(_) => panic!(
            "KOKOA_TEST_POSTGRES_URL is not set. Start a server with \
             `apt-get install -y --no-install-recommends postgresql && scripts/start-postgres` \
             and export the URL it prints (e.g. postgres://postgres@127.0.0.1:5433/postgres), \
             or set KOKOA_SKIP_POSTGRES=1 to skip these tests"
        ),
    }
}

/// `url` with every connection's `search_path` set to `schema`, so the store's tables go
/// there. (Schemas rather than databases: dropping a database forces a checkpoint, which
/// takes most of a second.)
fn in_schema(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

/// Schemas created for one test, dropped when it ends, also when it fails.
struct Schemas {
    server: String,
    names: Mutex<Vec<String>>,
}

impl Schemas {
    fn new(server: String) -> Arc<Self> {
        Arc::new(Self {
            server,
            names: Mutex::new(Vec::new()),
        })
    }

    /// A new empty schema; returns the URL that uses it.
    async fn fresh(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_nanos();
        let name = format!("kokoa_test_{}_{nanos}", std::process::id());
        let mut admin = PgConnection::connect(&self.server)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", self.server));
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .await
            .expect("create a test schema");
        self.names.lock().expect("not poisoned").push(name.clone());
        in_schema(&self.server, &name)
    }

    async fn fresh_store(&self) -> SqlStore {
        postgres::connect(&self.fresh().await)
            .await
            .expect("connect to the test schema")
    }
}

impl Drop for Schemas {
    fn drop(&mut self) {
        let names = std::mem::take(&mut *self.names.lock().unwrap_or_else(|e| e.into_inner()));
        let server = self.server.clone();
        // Drop cannot wait for async work, so a thread with its own runtime does it.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&server).await?;
                for name in names {
                    admin
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {name} CASCADE"
                        )))
                        .await?;
                }
                Ok::<(), sqlx::Error>(())
            })
        })
        .join();
        if !std::thread::panicking() {
            dropped
                .expect("the cleanup thread finished")
                .expect("test schemas dropped");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_conforms() {
    let Some(server) = server_url() else { return };
    let schemas = Schemas::new(server);
    conformance::run_all(|| {
        let schemas = Arc::clone(&schemas);
        async move { Arc::new(schemas.fresh_store().await) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_planes_sharing_a_database_allocate_distinct_subnets() {
    let Some(server) = server_url() else { return };
    let schemas = Schemas::new(server);
    let url = schemas.fresh().await;
    // Two control planes starting at once on one database: one migrates, the other waits
    // for it and finds the schema up to date.
    let (first, second) = tokio::join!(postgres::connect(&url), postgres::connect(&url));
    let (first, second) = (first.expect("first store"), second.expect("second store"));
    conformance::concurrent_origins_get_distinct_subnets(Arc::new(first)).await;
    assert_eq!(second.list_origins().await.expect("list").len(), 8);
}

#[test]
fn schemas_are_set_in_urls() {
    assert_eq!(
        in_schema("postgres://u@h:5433/postgres", "x"),
        "postgres://u@h:5433/postgres?options=-c%20search_path%3Dx"
    );
    assert_eq!(
        in_schema("postgres://u@h/db?sslmode=disable", "x"),
        "postgres://u@h/db?sslmode=disable&options=-c%20search_path%3Dx"
    );
}
