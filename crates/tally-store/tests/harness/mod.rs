//! What the conformance suite needs of a backend beyond the `EventStore` trait: a fresh
//! database, a second handle on it, raw SQL to tamper with, and an append held open.

use std::sync::Arc;

use sqlx::{AssertSqlSafe, Connection};
use tally_store::{
    EventStore, PostgresEventStore, PostgresOptions, SqliteEventStore, StreamAppend, postgres,
    sqlite,
};

/// Where the suite finds Postgres; it creates and drops one database per test there.
pub const POSTGRES_URL_VAR: &str = "TALLY_TEST_POSTGRES_URL";
const POSTGRES_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub enum Harness {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
        store: Arc<SqliteEventStore>,
    },
    Postgres {
        admin_url: String,
        database: String,
        url: String,
        store: Arc<PostgresEventStore>,
    },
}

pub enum Pending {
    Sqlite(sqlite::PendingAppend),
    Postgres(postgres::PendingAppend),
}

impl Pending {
    pub fn position(&self) -> u64 {
        match self {
            Pending::Sqlite(p) => p.result().expect("open append has a result").position(),
            Pending::Postgres(p) => p.result().position(),
        }
    }

    pub async fn commit(self) {
        match self {
            Pending::Sqlite(p) => p.commit().await.map(drop),
            Pending::Postgres(p) => p.commit().await.map(drop),
        }
        .expect("commit the held append");
    }
}

fn pg_options() -> PostgresOptions {
    PostgresOptions {
        max_connections: 8,
        ..PostgresOptions::default()
    }
}

impl Harness {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("tally.db").display());
        let store = Arc::new(
            SqliteEventStore::open(&url)
                .await
                .expect("open SQLite store"),
        );
        Harness::Sqlite {
            _dir: dir,
            url,
            store,
        }
    }

    pub async fn postgres() -> Self {
        let admin_url =
            std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| POSTGRES_URL_DEFAULT.to_string());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the Postgres conformance suite needs a server at {admin_url} ({e}); \
                 start one or set {POSTGRES_URL_VAR} to a superuser URL"
                )
            });
        let database = format!("tally_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        let url = with_database(&admin_url, &database);
        let store = Arc::new(
            PostgresEventStore::open(&url, pg_options())
                .await
                .expect("open Postgres store"),
        );
        Harness::Postgres {
            admin_url,
            database,
            url,
            store,
        }
    }

    pub fn store(&self) -> Arc<dyn EventStore> {
        match self {
            Harness::Sqlite { store, .. } => store.clone(),
            Harness::Postgres { store, .. } => store.clone(),
        }
    }

    /// A second, independent handle on the same database (a restart, or another process).
    pub async fn reopen(&self) -> Arc<dyn EventStore> {
        match self {
            Harness::Sqlite { url, .. } => Arc::new(SqliteEventStore::open(url).await.unwrap()),
            Harness::Postgres { url, .. } => {
                Arc::new(PostgresEventStore::open(url, pg_options()).await.unwrap())
            }
        }
    }

    /// The last committed position, by raw SQL with no visibility rule: where a reader
    /// following positions must eventually arrive.
    pub async fn committed_head(&self) -> u64 {
        let head: i64 = match self {
            Harness::Sqlite { store, .. } => {
                sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
                    .fetch_one(store.pool())
                    .await
            }
            Harness::Postgres { store, .. } => {
                sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
                    .fetch_one(store.pool())
                    .await
            }
        }
        .expect("read the committed head");
        head as u64
    }

    /// Whether a second append can commit while another's transaction is open.
    pub fn writers_overlap(&self) -> bool {
        matches!(self, Harness::Postgres { .. })
    }

    pub async fn begin_append(&self, append: StreamAppend) -> Pending {
        match self {
            Harness::Sqlite { store, .. } => {
                Pending::Sqlite(store.begin_append(vec![append]).await.unwrap())
            }
            Harness::Postgres { store, .. } => {
                Pending::Postgres(store.begin_append(vec![append]).await.unwrap())
            }
        }
    }

    /// Rewrites a stored payload by raw SQL, going around the append-only guard the way
    /// someone with database access could.
    pub async fn tamper_payload(&self, position: u64, payload: &str) {
        match self {
            Harness::Sqlite { url, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                sqlx::query("DROP TRIGGER events_no_update")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                sqlx::query("UPDATE events SET payload = ? WHERE position = ?")
                    .bind(payload)
                    .bind(position as i64)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            Harness::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let mut tx = conn.begin().await.unwrap();
                sqlx::query("SET LOCAL session_replication_role = replica")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                let done = sqlx::query("UPDATE events SET payload = $1::json WHERE position = $2")
                    .bind(payload)
                    .bind(position as i64)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                assert_eq!(done.rows_affected(), 1);
                tx.commit().await.unwrap();
            }
        }
    }

    /// Tries to edit and delete stored events by plain SQL; returns each refusal.
    pub async fn try_edit_log(&self) -> Vec<(&'static str, Result<(), String>)> {
        fn outcome<T>(r: Result<T, sqlx::Error>) -> Result<(), String> {
            r.map(drop).map_err(|e| e.to_string())
        }
        match self {
            Harness::Sqlite { url, .. } => {
                let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
                vec![
                    (
                        "update",
                        outcome(
                            sqlx::query("UPDATE events SET payload = '{}'")
                                .execute(&mut conn)
                                .await,
                        ),
                    ),
                    (
                        "delete",
                        outcome(sqlx::query("DELETE FROM events").execute(&mut conn).await),
                    ),
                ]
            }
            Harness::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                vec![
                    (
                        "update",
                        outcome(
                            sqlx::query("UPDATE events SET payload = '{}'")
                                .execute(&mut conn)
                                .await,
                        ),
                    ),
                    (
                        "delete",
                        outcome(sqlx::query("DELETE FROM events").execute(&mut conn).await),
                    ),
                    (
                        "truncate",
                        outcome(sqlx::query("TRUNCATE events").execute(&mut conn).await),
                    ),
                ]
            }
        }
    }

    /// Drops the test's Postgres database (SQLite's temp folder goes with the harness).
    pub async fn finish(self) {
        if let Harness::Postgres {
            admin_url,
            database,
            store,
            ..
        } = self
        {
            store.close().await;
            drop(store);
            let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await
            .expect("drop the test database");
        }
    }
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(slash) if slash > "postgres://".len() => &base[..slash],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{database}?{q}"),
        None => format!("{base}/{database}"),
    }
}
