//! Fresh databases for tests (feature `testing`): a temporary SQLite file, or a Postgres
//! database created for one test and dropped after it. Every suite that needs a real
//! database gets it here, the same way.

use sqlx::{AssertSqlSafe, Connection};

/// Where tests find Postgres; a superuser URL on which they create databases.
pub const POSTGRES_URL_VAR: &str = "TALLY_TEST_POSTGRES_URL";
/// The default of [`POSTGRES_URL_VAR`]: this machine's local server.
pub const POSTGRES_URL_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for one test.
pub struct TestDatabase {
    /// Its URL, for `open`.
    pub url: String,
    postgres: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A new SQLite file in a temporary folder (removed with the value).
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let url = format!("sqlite://{}", dir.path().join("tally.db").display());
        Self {
            url,
            postgres: None,
            _dir: Some(dir),
        }
    }

    /// A new, empty Postgres database; panics with what to do if there is no server.
    pub async fn postgres() -> Self {
        let admin_url =
            std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| POSTGRES_URL_DEFAULT.to_string());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "tests need a Postgres server at {admin_url} ({e}); start one or set \
                 {POSTGRES_URL_VAR} to a superuser URL"
                )
            });
        let name = format!("tally_test_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Self {
            url,
            postgres: Some((admin_url, name)),
            _dir: None,
        }
    }

    /// Drops a Postgres test database (closing what is still connected to it).
    pub async fn drop_database(self) {
        if let Some((admin_url, name)) = &self.postgres {
            let mut admin = sqlx::PgConnection::connect(admin_url)
                .await
                .expect("reconnect to drop the test database");
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
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
