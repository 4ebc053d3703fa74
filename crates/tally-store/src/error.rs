//! The store's one error type. Conflicts are named apart from failures because callers
//! act on them differently: a version conflict is re-decided, an idempotency conflict
//! is reported to the client, a limit is the caller's bug, a database error is retried
//! or surfaced.

use std::sync::Arc;

use uuid::Uuid;

use crate::event::{ExpectedVersion, StreamId};

/// Everything that can go wrong in the event log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency: the stream moved since the writer read it.
    #[error(
        "stream {stream_id} is at version {current}, but the append expected version {expected}"
    )]
    WrongExpectedVersion {
        /// The stream that did not match.
        stream_id: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// What the stream is at.
        current: u64,
    },

    /// An event id that is already stored was sent again with different content.
    #[error(
        "event {event_id} is already stored {detail}; an event id may only be re-sent with the same stream, type and payload"
    )]
    IdempotencyConflict {
        /// The re-used id.
        event_id: Uuid,
        /// How the stored event differs.
        detail: String,
    },

    /// A bounded input was over its bound.
    #[error("{what} is {actual}, over the limit of {limit}")]
    LimitExceeded {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: usize,
        /// What was given.
        actual: usize,
    },

    /// Input that can never be appended or read, with what to change.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// Appends to one stream kept losing races to other writers (with expected version
    /// `any`); bounded so a hot stream cannot spin a caller forever.
    #[error("stream {stream_id} changed under {attempts} append attempts in a row; try again")]
    Contention {
        /// The contended stream.
        stream_id: StreamId,
        /// How many attempts were made.
        attempts: u32,
    },

    /// A stored event could not be decoded: the database holds something this code did
    /// not write.
    #[error("stored event at position {position} is unreadable: {detail}")]
    Corrupt {
        /// Where.
        position: u64,
        /// What could not be read.
        detail: String,
    },

    /// The store is shutting down and takes no more appends.
    #[error("the event store is closed")]
    Closed,

    /// The database failed; nothing of the failed call was stored.
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),

    /// A migration could not be applied.
    #[error("migration failed: {0}")]
    Migrate(Arc<sqlx::migrate::MigrateError>),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(Arc::new(e))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(Arc::new(e))
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
