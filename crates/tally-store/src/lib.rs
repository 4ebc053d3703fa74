//! # tally-store: Tally's append-only event log
//!
//! Every balance, hold and subscription in Tally derives from this log, so it is built
//! to be beyond reproach: appends are atomic and optimistically concurrent, an event id
//! is stored at most once, every stream is a SHA-256 hash chain an auditor can verify,
//! and a reader following positions never skips an event that committed late.
//!
//! One trait, [`EventStore`], two backends: [`SqliteEventStore`] (embedded default,
//! group commit) and [`PostgresEventStore`] (production, gap-safe reads,
//! LISTEN/NOTIFY). The conformance suite (`tests/conformance.rs`) runs the same
//! specification against both. [`open`] picks the backend from a database URL.
//!
//! The store knows nothing of credits: payloads are opaque JSON. Upcasting old schema
//! versions belongs to the domain, which reads `schema_version` from the envelope.

pub mod error;
pub mod event;
mod group;
pub mod hash;
pub mod limits;
mod plan;
pub mod postgres;
mod row;
pub mod sqlite;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod transfer;
pub mod verify;

use std::sync::Arc;

pub use error::{Result, StoreError};
pub use event::{
    Actor, ActorKind, AppendResult, AppendedEvent, ExpectedVersion, Metadata, NewEvent,
    RecordedEvent, Snapshot, StreamAppend, StreamId,
};
pub use postgres::{PostgresEventStore, PostgresOptions};
pub use sqlite::SqliteEventStore;
pub use store::{EventStore, Wakeups};
pub use transfer::{ImportReport, Importer};
pub use verify::{ChainProblem, VerifyReport, verify_log, verify_stream};

/// The default database: an SQLite file under `./data`, so Tally runs with no server.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/tally.db";

/// Which backend a database URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite://PATH`
    Sqlite,
    /// `postgres://…` or `postgresql://…`
    Postgres,
}

impl Backend {
    /// Reads the backend from a URL's scheme.
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::InvalidInput(format!(
                "database URL {url:?} is neither sqlite://PATH nor postgres://…"
            )))
        }
    }

    /// The backend's name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Opens the store a URL names, applying pending migrations first.
pub async fn open(url: &str, postgres: PostgresOptions) -> Result<Arc<dyn EventStore>> {
    Ok(match Backend::of_url(url)? {
        Backend::Sqlite => Arc::new(SqliteEventStore::open(url).await?),
        Backend::Postgres => Arc::new(PostgresEventStore::open(url, postgres).await?),
    })
}

/// The schema migrations of a backend: `(version, description)`, oldest first.
pub fn migrations(backend: Backend) -> Vec<(i64, String)> {
    let migrator = match backend {
        Backend::Sqlite => SqliteEventStore::migrator(),
        Backend::Postgres => PostgresEventStore::migrator(),
    };
    migrator
        .iter()
        .map(|m| (m.version, m.description.to_string()))
        .collect()
}
