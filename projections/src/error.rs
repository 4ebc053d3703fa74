//! Why a projection did not advance.

use tally_store::StoreError;

/// Why a projection step or query failed. Nothing of a failed batch is applied.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The read model database failed.
    #[error("read model database: {0}")]
    Database(#[from] sqlx::Error),
    /// The log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event this code cannot read.
    #[error(transparent)]
    Decode(#[from] tally_domain::codec::DecodeError),
    /// An event whose content breaks what the projection relies on.
    #[error("event at position {position}: {detail}")]
    Event {
        /// The event's position.
        position: u64,
        /// What is wrong.
        detail: String,
    },
    /// No projection by that name.
    #[error("no projection named {0:?}; see `tally projections status`")]
    Unknown(String),
    /// Waited too long.
    #[error("projection {name} reached {reached}, not {wanted}, within the wait")]
    Lagging {
        /// The projection.
        name: String,
        /// Where it is.
        reached: u64,
        /// Where it was asked to be.
        wanted: u64,
    },
}
