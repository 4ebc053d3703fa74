//! Every bound of the log, in one place. Each is a promise to the rest of the system:
//! nothing bigger is ever written or returned, so memory, statement sizes and latency
//! stay bounded whatever a caller sends.

/// Most events one append call may carry (over all its streams).
pub const EVENTS_PER_APPEND_MAX: usize = 1_000;

/// Most streams one atomic append call may touch.
pub const STREAMS_PER_APPEND_MAX: usize = 16;

/// Largest serialised payload of one event.
pub const PAYLOAD_BYTES_MAX: usize = 64 * 1024;

/// Largest serialised metadata of one event.
pub const METADATA_BYTES_MAX: usize = 4 * 1024;

/// Longest stream id.
pub const STREAM_ID_BYTES_MAX: usize = 256;

/// Longest event type name.
pub const EVENT_TYPE_BYTES_MAX: usize = 128;

/// Longest actor id.
pub const ACTOR_ID_BYTES_MAX: usize = 256;

/// Most events one read call returns.
pub const READ_PAGE_EVENTS_MAX: usize = 10_000;

/// Largest snapshot state.
pub const SNAPSHOT_BYTES_MAX: usize = 1024 * 1024;

/// Appends one SQLite group commit takes at most: one transaction and one fsync.
pub const GROUP_COMMIT_APPENDS_MAX: usize = 512;

/// Appends waiting for the SQLite writer at most; further callers wait to enqueue.
pub const APPEND_QUEUE_MAX: usize = 4_096;

/// How often one append is retried after losing a race with expected version `any`.
pub const APPEND_ATTEMPTS_MAX: u32 = 8;

/// Stream heads a writer remembers to skip a read before appending.
pub const STREAM_HEAD_CACHE_MAX: usize = 100_000;

/// Rows per INSERT statement: keeps statements under the backends' parameter limits.
pub const INSERT_ROWS_MAX: usize = 256;

/// Checks a read page size.
pub(crate) fn check_page(limit: usize) -> crate::Result<()> {
    if limit == 0 {
        return Err(crate::StoreError::InvalidInput(
            "page limit must be at least 1".into(),
        ));
    }
    if limit > READ_PAGE_EVENTS_MAX {
        return Err(crate::StoreError::LimitExceeded {
            what: "page limit",
            limit: READ_PAGE_EVENTS_MAX,
            actual: limit,
        });
    }
    Ok(())
}

/// Most snapshots one `save_snapshots` call stores.
pub const SNAPSHOTS_PER_SAVE_MAX: usize = 1_000;

/// Checks snapshots before they are stored.
pub(crate) fn check_snapshots(snapshots: &[crate::Snapshot]) -> crate::Result<()> {
    if snapshots.len() > SNAPSHOTS_PER_SAVE_MAX {
        return Err(crate::StoreError::LimitExceeded {
            what: "snapshots per save",
            limit: SNAPSHOTS_PER_SAVE_MAX,
            actual: snapshots.len(),
        });
    }
    snapshots.iter().try_for_each(check_snapshot)
}

/// Checks a snapshot before it is stored.
fn check_snapshot(snapshot: &crate::Snapshot) -> crate::Result<()> {
    if snapshot.state.len() > SNAPSHOT_BYTES_MAX {
        return Err(crate::StoreError::LimitExceeded {
            what: "snapshot bytes",
            limit: SNAPSHOT_BYTES_MAX,
            actual: snapshot.state.len(),
        });
    }
    if snapshot.stream_version == 0 {
        return Err(crate::StoreError::InvalidInput(
            "a snapshot must be of version 1 or later".into(),
        ));
    }
    Ok(())
}
