//! The SQLite backend: one database file, for a single control plane.

use std::{path::Path, sync::Arc, time::Duration};

use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, ToSql, params_from_iter,
    types::{ToSqlOutput, ValueRef},
};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::sql::{Backend, Conn, DbError, Row, SqlStore, Value, migrate};
use kokoa_core::Error;

/// The schema migrations, in order; migration `i` makes schema version `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/sqlite/0001_initial.sql"),
    include_str!("migrations/sqlite/0002_operations.sql"),
    include_str!("migrations/sqlite/0003_users.sql"),
    include_str!("migrations/sqlite/0004_leases.sql"),
    include_str!("migrations/sqlite/0005_node_keys.sql"),
    include_str!("migrations/sqlite/0006_traffic.sql"),
];

/// How long a statement waits for another process holding the database lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the SQLite database at `path`, creating the file if needed, and brings its schema
/// up to date.
///
/// The database runs in WAL mode with foreign keys enforced. One connection serves every
/// call, in turn: SQLite allows a single writer anyway, and a control plane's load is far
/// below what one connection handles. Calls run on Tokio's blocking thread pool.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use kokoa_store::{Store, sqlite};
///
/// let dir = tempfile::tempdir()?;
/// let store = sqlite::open(dir.path().join("kokoa.db")).await?;
/// assert!(store.list_routes().await?.is_empty());
/// # Ok(())
/// # }
/// ```
pub async fn open(path: impl AsRef<Path>) -> Result<SqlStore, Error> {
    let path = path.as_ref().to_owned();
    let opened = path.clone();
    let conn = tokio::task::spawn_blocking(move || -> rusqlite::Result<Connection> {
        let conn = Connection::open(&opened)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "foreign_keys", true)?;
        // Readers do not block the writer and a crash mid-write cannot corrupt the file.
        let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        Ok(conn)
    })
    .await
    .map_err(|e| Error::Storage(Box::new(e)))?
    .map_err(|e| {
        Error::Storage(format!("cannot open SQLite database {}: {e}", path.display()).into())
    })?;
    let backend = Sqlite {
        conn: Arc::new(Mutex::new(conn)),
    };
    migrate(&backend, MIGRATIONS, None).await?;
    Ok(SqlStore::new(Box::new(backend), MIGRATIONS))
}

#[derive(Debug)]
struct Sqlite {
    conn: Arc<Mutex<Connection>>,
}

#[async_trait]
impl Backend for Sqlite {
    async fn connect(&self, transaction: bool) -> Result<Box<dyn Conn>, Error> {
        let mut conn = SqliteConn {
            guard: Some(Arc::clone(&self.conn).lock_owned().await),
            transaction: false,
        };
        conn.run(move |c| {
            // A task cancelled inside a transaction can leave it open; nothing of it was
            // committed, so drop it.
            if !c.is_autocommit() {
                c.execute_batch("ROLLBACK")?;
            }
            if transaction {
                // IMMEDIATE takes the write lock now, so a read-then-write transaction
                // cannot fail half-way on a lock upgrade.
                c.execute_batch("BEGIN IMMEDIATE")?;
            }
            Ok(())
        })
        .await?;
        conn.transaction = transaction;
        Ok(Box::new(conn))
    }

    fn clock(&self) -> &'static str {
        // `subsec` keeps the milliseconds (SQLite 3.42; the bundled one is newer).
        "SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    }
}

/// The connection, held for the duration of one store call.
struct SqliteConn {
    /// `None` only while a statement runs on the blocking pool, or after it panicked.
    guard: Option<OwnedMutexGuard<Connection>>,
    /// Whether a transaction is open (and must be rolled back if not committed).
    transaction: bool,
}

impl SqliteConn {
    async fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DbError> {
        let mut guard = self.guard.take().ok_or_else(|| {
            DbError::Other("the SQLite connection was lost when a statement panicked".into())
        })?;
        let (guard, result) = tokio::task::spawn_blocking(move || {
            let result = f(&mut guard);
            (guard, result)
        })
        .await
        .map_err(|e| DbError::Other(Box::new(e)))?;
        self.guard = Some(guard);
        result.map_err(db_error)
    }
}

/// SQLite numbers parameters `?1`, `?2`; the shared statements say `$1`, `$2`.
fn placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

#[async_trait]
impl Conn for SqliteConn {
    async fn execute(&mut self, sql: &'static str, params: Vec<Value>) -> Result<u64, DbError> {
        self.run(move |c| {
            let changed = c
                .prepare_cached(&placeholders(sql))?
                .execute(params_from_iter(params))?;
            Ok(changed as u64)
        })
        .await
    }

    async fn query(&mut self, sql: &'static str, params: Vec<Value>) -> Result<Vec<Row>, DbError> {
        self.run(move |c| {
            let mut statement = c.prepare_cached(&placeholders(sql))?;
            let width = statement.column_count();
            let mut rows = statement.query(params_from_iter(params))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                let values = (0..width)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Null => Value::Text(None),
                            ValueRef::Integer(n) => Value::Int(Some(n)),
                            ValueRef::Text(t) => Value::Text(Some(
                                std::str::from_utf8(t)
                                    .map_err(|e| rusqlite::Error::Utf8Error(i, e))?
                                    .to_owned(),
                            )),
                            other => {
                                return Err(rusqlite::Error::InvalidColumnType(
                                    i,
                                    format!("column {i}"),
                                    other.data_type(),
                                ));
                            }
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Value>>>()?;
                out.push(Row(values));
            }
            Ok(out)
        })
        .await
    }

    async fn batch(&mut self, sql: &'static str) -> Result<(), DbError> {
        self.run(move |c| c.execute_batch(sql)).await
    }

    async fn commit(mut self: Box<Self>) -> Result<(), DbError> {
        if self.transaction {
            self.run(|c| c.execute_batch("COMMIT")).await?;
            self.transaction = false;
        }
        Ok(())
    }
}

impl Drop for SqliteConn {
    fn drop(&mut self) {
        if self.transaction
            && let Some(conn) = &self.guard
        {
            // Rolling back a transaction that was never committed only discards its pages
            // in memory, so doing it here, on the calling thread, is quick. If it fails the
            // next `connect` sees the open transaction and rolls it back.
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Int(Some(n)) => ToSqlOutput::from(*n),
            Value::Text(Some(s)) => ToSqlOutput::from(s.as_str()),
            Value::Int(None) | Value::Text(None) => ToSqlOutput::from(rusqlite::types::Null),
        })
    }
}

fn db_error(e: rusqlite::Error) -> DbError {
    if let rusqlite::Error::SqliteFailure(failure, Some(message)) = &e
        && failure.code == ErrorCode::ConstraintViolation
        && let Some(key) = unique_key(message)
    {
        return DbError::Unique(key);
    }
    DbError::Other(Box::new(e))
}

/// `UNIQUE constraint failed: edge_tunnels.origin_id, edge_tunnels.wireguard_ip` →
/// `edge_tunnels.origin_id,wireguard_ip`.
fn unique_key(message: &str) -> Option<String> {
    let columns = message.strip_prefix("UNIQUE constraint failed: ")?;
    let mut table = None;
    let mut names = Vec::new();
    for column in columns.split(", ") {
        let (t, name) = column.split_once('.')?;
        table.get_or_insert(t);
        names.push(name);
    }
    Some(format!("{}.{}", table?, names.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewIntent, Store};

    async fn clock(backend: &Sqlite) -> i64 {
        let mut conn = backend.connect(false).await.expect("connect");
        let rows = conn.query(backend.clock(), vec![]).await.expect("clock");
        match rows.first().map(|r| r.0.as_slice()) {
            Some([Value::Int(Some(ms))]) => *ms,
            other => panic!("the clock gave {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_clock_is_unix_milliseconds() {
        let backend = Sqlite {
            conn: Arc::new(Mutex::new(Connection::open_in_memory().expect("open"))),
        };
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis();
        let database = clock(&backend).await;
        assert!(
            (i128::from(database) - system as i128).abs() < 5_000,
            "{database} against {system}"
        );
    }

    #[tokio::test]
    async fn a_version_3_database_is_upgraded_and_keeps_its_rows() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("kokoa.db");
        let backend = Sqlite {
            conn: Arc::new(Mutex::new(Connection::open(&path).expect("create"))),
        };
        migrate(&backend, &MIGRATIONS[..3], None)
            .await
            .expect("schema version 3");
        backend
            .conn
            .lock()
            .await
            .execute_batch(
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
            .expect("rows of version 3");
        drop(backend);

        let store = open(&path).await.expect("upgrade");
        let versions: Vec<i64> = Connection::open(&path)
            .and_then(|c| {
                c.prepare("SELECT version FROM schema_migrations ORDER BY version")?
                    .query_map([], |r| r.get(0))?
                    .collect()
            })
            .expect("read versions");
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
    }

    #[test]
    fn unique_messages_become_keys() {
        assert_eq!(
            unique_key("UNIQUE constraint failed: routes.hostname").as_deref(),
            Some("routes.hostname")
        );
        assert_eq!(
            unique_key(
                "UNIQUE constraint failed: edge_tunnels.origin_id, edge_tunnels.wireguard_ip"
            )
            .as_deref(),
            Some("edge_tunnels.origin_id,wireguard_ip")
        );
        assert_eq!(unique_key("FOREIGN KEY constraint failed"), None);
    }
}
