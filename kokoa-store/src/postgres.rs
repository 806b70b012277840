//! The PostgreSQL backend: for several control planes sharing one database (SPEC §11).

use std::time::Duration;

use async_trait::async_trait;
use sqlx::{
    Column, PgConnection, PgPool, Row as _, Transaction, TypeInfo,
    pool::PoolConnection,
    postgres::{PgDatabaseError, PgPoolOptions, PgRow},
};

use super::sql::{Backend, Conn, DbError, Row, SqlStore, Value, migrate};
use kokoa_core::Error;

/// The schema migrations, in order; migration `i` makes schema version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/postgres/0001_initial.sql"),
    include_str!("migrations/postgres/0002_operations.sql"),
    include_str!("migrations/postgres/0003_users.sql"),
    include_str!("migrations/postgres/0004_leases.sql"),
    include_str!("migrations/postgres/0005_node_keys.sql"),
    include_str!("migrations/postgres/0006_traffic.sql"),
];

/// Taken inside the migration transaction, so that control planes starting together
/// migrate one after the other. The number is arbitrary, fixed for Kokoa.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(5701210422)";

/// Connects to the PostgreSQL database at `url` (`postgres://user:password@host:5432/dbname`,
/// with `?sslmode=require` for TLS) through a pool of connections, and brings its schema up
/// to date.
///
/// Transactions run at PostgreSQL's default isolation (read committed); allocations that
/// must be unique (origin subnets, tunnel addresses and ports) rely on unique constraints
/// and are retried when a concurrent control plane took the same value first.
pub async fn connect(url: &str) -> Result<SqlStore, Error> {
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .map_err(|e| {
            // The URL may hold a password, so it is not repeated.
            Error::Storage(format!("cannot connect to PostgreSQL: {e}").into())
        })?;
    let backend = Postgres { pool };
    migrate(&backend, MIGRATIONS, Some(MIGRATION_LOCK)).await?;
    Ok(SqlStore::new(Box::new(backend), MIGRATIONS))
}

#[derive(Debug)]
struct Postgres {
    pool: PgPool,
}

#[async_trait]
impl Backend for Postgres {
    async fn connect(&self, transaction: bool) -> Result<Box<dyn Conn>, Error> {
        let conn = if transaction {
            PgConn::Transaction(self.pool.begin().await.map_err(pg_error)?)
        } else {
            PgConn::Plain(self.pool.acquire().await.map_err(pg_error)?)
        };
        Ok(Box::new(conn))
    }

    fn clock(&self) -> &'static str {
        // clock_timestamp(), unlike now(), moves on within a transaction.
        "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    }
}

/// A pooled connection, inside a transaction or not. A transaction dropped without commit
/// is rolled back by sqlx.
enum PgConn {
    Transaction(Transaction<'static, sqlx::Postgres>),
    Plain(PoolConnection<sqlx::Postgres>),
}

impl PgConn {
    fn connection(&mut self) -> &mut PgConnection {
        match self {
            Self::Transaction(t) => t,
            Self::Plain(c) => c,
        }
    }
}

fn bind(
    sql: &'static str,
    params: Vec<Value>,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    params
        .into_iter()
        .fold(sqlx::query(sql), |query, param| match param {
            Value::Int(v) => query.bind(v),
            Value::Text(v) => query.bind(v),
        })
}

fn row(row: &PgRow) -> Result<Row, sqlx::Error> {
    let values = row
        .columns()
        .iter()
        .map(|column| {
            let i = column.ordinal();
            Ok(match column.type_info().name() {
                "INT8" => Value::Int(row.try_get(i)?),
                "INT4" => Value::Int(row.try_get::<Option<i32>, _>(i)?.map(i64::from)),
                _ => Value::Text(row.try_get(i)?),
            })
        })
        .collect::<Result<Vec<Value>, sqlx::Error>>()?;
    Ok(Row(values))
}

#[async_trait]
impl Conn for PgConn {
    async fn execute(&mut self, sql: &'static str, params: Vec<Value>) -> Result<u64, DbError> {
        let done = bind(sql, params)
            .execute(self.connection())
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }

    async fn query(&mut self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        let rows = bind(sql, params)
            .fetch_all(self.connection())
            .await
            .map_err(db_error)?;
        rows.iter()
            .map(row)
            .collect::<Result<_, _>>()
            .map_err(db_error)
    }

    async fn batch(&mut self, sql: &'static str) -> Result<(), DbError> {
        sqlx::raw_sql(sql)
            .execute(self.connection())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), DbError> {
        match *self {
            Self::Transaction(t) => t.commit().await.map_err(db_error),
            Self::Plain(_) => Ok(()),
        }
    }
}

fn pg_error(e: sqlx::Error) -> Error {
    db_error(e).into()
}

fn db_error(e: sqlx::Error) -> DbError {
    if let sqlx::Error::Database(db) = &e
        && let Some(pg) = db.try_downcast_ref::<PgDatabaseError>()
        && pg.code() == "23505"
    {
        let columns = pg.detail().and_then(key_columns);
        if let (Some(table), Some(columns)) = (pg.table(), columns) {
            return DbError::Unique(format!("{table}.{columns}"));
        }
        if let Some(constraint) = pg.constraint() {
            return DbError::Unique(constraint.to_owned());
        }
    }
    DbError::Other(Box::new(e))
}

/// `Key (origin_id, wireguard_ip)=(…) already exists.` → `origin_id,wireguard_ip`, the
/// form the SQLite backend reports too.
fn key_columns(detail: &str) -> Option<String> {
    let rest = detail.strip_prefix("Key (")?;
    let (columns, _) = rest.split_once(")=(")?;
    Some(columns.split(", ").collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Executor};

    use super::*;
    use crate::{NewIntent, Store};

    /// The test server's URL (see `tests/store_postgres.rs`), or `None` when the run
    /// explicitly skips PostgreSQL.
    fn server_url() -> Option<String> {
        match std::env::var("KOKOA_TEST_POSTGRES_URL") {
            Ok(url) => Some(url),
            Err(_) if std::env::var("KOKOA_SKIP_POSTGRES").as_deref() == Ok("1") => None,
            Err(_) => panic!(
                "KOKOA_TEST_POSTGRES_URL is not set. Start a server with \
                 `apt-get install -y --no-install-recommends postgresql && \
                 scripts/start-postgres` and export the URL it prints, or set \
                 KOKOA_SKIP_POSTGRES=1 to skip these tests"
            ),
        }
    }

    async fn admin(server: &str, sql: String) {
        let mut admin = PgConnection::connect(server)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {server}: {e}"));
        admin
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .expect("an administrative statement");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_version_3_database_is_upgraded_and_keeps_its_rows() {
        let Some(server) = server_url() else { return };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_nanos();
        let schema = format!("kokoa_upgrade_{}_{nanos}", std::process::id());
        admin(&server, format!("CREATE SCHEMA {schema}")).await;
        let separator = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{separator}options=-c%20search_path%3D{schema}");
        // Run apart so that the schema is dropped also when a check fails.
        let checked = tokio::spawn(async move {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .expect("connect");
            let backend = Postgres { pool };
            migrate(&backend, &MIGRATIONS[..3], Some(MIGRATION_LOCK))
                .await
                .expect("schema version 3");
            let mut conn = backend.connect(false).await.expect("connect");
            conn.batch(
                "INSERT INTO shared_values VALUES ('settings', 'modules', '{}', NULL);
                 INSERT INTO edge_nodes (id, name, provider, region, status, \
                   health_check_failures, created_at) \
                   VALUES ('edg_1', 'edge-1', 'manual', 'lab', 'active', 0, 0);
                 INSERT INTO health_checks (edge_node_id, check_name, status, checked_at) \
                   VALUES ('edg_1', 'http', 'success', 5);
                 INSERT INTO origins (id, name, status, network_cidr, wireguard_ip, \
                   wireguard_public_key, wireguard_private_key_encrypted, created_at) \
                   VALUES ('org_1', 'home', 'active', '10.0.1.0/24', '10.0.1.1', \
                   'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=', 'sealed', 0);
                 INSERT INTO edge_tunnels (edge_node_id, origin_id, wireguard_ip, \
                   listen_port, public_key, private_key_encrypted, created_at) \
                   VALUES ('edg_1', 'org_1', '10.0.1.10', 51820, \
                   'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=', 'sealed', 0);
                 INSERT INTO shared_values VALUES ('key_rotation', 'origin/org_1', '{}', NULL);",
            )
            .await
            .expect("rows of version 3");
            drop(conn);

            let store = connect(&url).await.expect("upgrade");
            let rows = backend
                .connect(false)
                .await
                .expect("connect")
                .query(
                    "SELECT version FROM schema_migrations ORDER BY version",
                    vec![],
                )
                .await
                .expect("read versions");
            let versions: Vec<i64> = rows
                .iter()
                .map(|r| match r.0.as_slice() {
                    [Value::Int(Some(v))] => *v,
                    other => panic!("a version: {other:?}"),
                })
                .collect();
            assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
            // Version 5: the keys the control plane had made are gone, the rows stay; the
            // nodes register keys of their own.
            let origin = kokoa_core::OriginId::parse("org_1").expect("an id");
            assert_eq!(
                store
                    .get_origin(&origin)
                    .await
                    .expect("origin")
                    .wireguard_public_key,
                None
            );
            let tunnels = store
                .list_tunnels(None, Some(&origin))
                .await
                .expect("tunnels");
            assert_eq!(tunnels.len(), 1);
            assert_eq!(
                store
                    .kv_list("key_rotation", kokoa_core::Timestamp::now())
                    .await
                    .expect("list"),
                []
            );
            let now = kokoa_core::Timestamp::now();
            assert_eq!(
                store.kv_get("settings", "modules", now).await.expect("get"),
                Some("{}".to_owned())
            );
            let lease = store
                .lease_acquire("leader", "cp-a", Duration::from_secs(10))
                .await
                .expect("acquire")
                .expect("free");
            let intent = NewIntent {
                kind: "dns.apply".to_owned(),
                subject: "hoge.com".to_owned(),
                detail: serde_json::json!({}),
            };
            let recorded = store
                .record_intent(&lease.fence(), &intent)
                .await
                .expect("record");
            assert_eq!(recorded.id, 1);
            assert_eq!(
                store
                    .prune_health_checks(kokoa_core::Timestamp::from_unix(6).expect("a time"))
                    .await
                    .expect("prune"),
                1
            );
        })
        .await;
        admin(&server, format!("DROP SCHEMA {schema} CASCADE")).await;
        if let Err(e) = checked {
            std::panic::resume_unwind(e.into_panic());
        }
    }

    #[test]
    fn details_become_key_columns() {
        assert_eq!(
            key_columns("Key (hostname)=(app.hoge.com) already exists.").as_deref(),
            Some("hostname")
        );
        assert_eq!(
            key_columns("Key (origin_id, wireguard_ip)=(org_1, 10.0.1.10) already exists.")
                .as_deref(),
            Some("origin_id,wireguard_ip")
        );
        assert_eq!(key_columns("something else"), None);
    }
}
