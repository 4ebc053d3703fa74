//! Fresh databases for tests (feature `testing`): a temporary SQLite file, or a Postgres
//! database created for one test and dropped after it. Every suite that needs a real
//! database gets it here, the same way.
#![allow(clippy::expect_used)] // test support: a missing database fails the test, saying why

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

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh database on the test Postgres server.
    Postgres,
}

impl Backend {
    /// A fresh database of this kind.
    pub async fn database(self) -> TestDatabase {
        match self {
            Self::Sqlite => TestDatabase::sqlite(),
            Self::Postgres => TestDatabase::postgres().await,
        }
    }
}

/// What a suite's cases run against (a store harness, a ledger setup, a running
/// server, the whole stack with its bot): started on a backend, finished after the
/// case (dropping what it created). [`on_both_backends!`](crate::on_both_backends)
/// runs each case on both.
#[allow(async_fn_in_trait)] // test fixtures, used only by the macro in one runtime
pub trait Fixture: Sized {
    /// Starts on `backend`.
    async fn start(backend: Backend) -> Self;
    /// Stops what it started and drops its database.
    async fn finish(self);
}

/// Runs each case on SQLite and on Postgres: `on_both_backends!(Server => a, b)` makes
/// `sqlite::a`, `postgres::a` … that start a `Server` (a [`Fixture`] of the calling
/// module), pass it to `a(&server)` and finish it. With `owned`, the case takes the
/// fixture and gives it back: `on_both_backends!(Stack, owned => a)` calls
/// `a(stack).await` and finishes what it returns.
#[macro_export]
macro_rules! on_both_backends {
    ($fixture:ident => $($case:ident),* $(,)?) => {
        $crate::on_both_backends!(@backend sqlite, Sqlite, $fixture, borrowed, $($case),*);
        $crate::on_both_backends!(@backend postgres, Postgres, $fixture, borrowed, $($case),*);
    };
    ($fixture:ident, owned => $($case:ident),* $(,)?) => {
        $crate::on_both_backends!(@backend sqlite, Sqlite, $fixture, owned, $($case),*);
        $crate::on_both_backends!(@backend postgres, Postgres, $fixture, owned, $($case),*);
    };
    (@backend $module:ident, $backend:ident, $fixture:ident, $how:ident, $($case:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let fixture = <super::$fixture as $crate::testing::Fixture>::start(
                        $crate::testing::Backend::$backend,
                    )
                    .await;
                    let fixture = $crate::on_both_backends!(@run $how, super::$case, fixture);
                    $crate::testing::Fixture::finish(fixture).await;
                }
            )*
        }
    };
    (@run borrowed, $case:path, $fixture:ident) => {{
        $case(&$fixture).await;
        $fixture
    }};
    (@run owned, $case:path, $fixture:ident) => {
        $case($fixture).await
    };
}
