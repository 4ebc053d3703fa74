//! What the conformance suite needs of a backend beyond the `EventStore` trait: a fresh
//! database, a second handle on it, raw SQL to tamper with, and an append held open.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::sync::Arc;

use sqlx::Connection;
use tally_store::testing::TestDatabase;
use tally_store::{
    EventStore, PostgresEventStore, PostgresOptions, SqliteEventStore, StreamAppend, postgres,
    sqlite,
};

pub enum Harness {
    Sqlite {
        _database: TestDatabase,
        url: String,
        store: Arc<SqliteEventStore>,
    },
    Postgres {
        database: TestDatabase,
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
        let database = TestDatabase::sqlite();
        let url = database.url.clone();
        let store = Arc::new(
            SqliteEventStore::open(&url)
                .await
                .expect("open SQLite store"),
        );
        Harness::Sqlite {
            _database: database,
            url,
            store,
        }
    }

    pub async fn postgres() -> Self {
        let database = TestDatabase::postgres().await;
        let url = database.url.clone();
        let store = Arc::new(
            PostgresEventStore::open(&url, pg_options())
                .await
                .expect("open Postgres store"),
        );
        Harness::Postgres {
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
        match self {
            Harness::Postgres {
                database, store, ..
            } => {
                store.close().await;
                drop(store);
                database.drop_database().await;
            }
            Harness::Sqlite { .. } => {}
        }
    }
}
