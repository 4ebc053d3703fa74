//! The [`EventStore`] trait: the one interface every backend implements and every
//! caller (ledger, projections, audit) depends on. The conformance suite in
//! `tests/conformance.rs` holds every backend to the same behaviour.

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::{Result, StoreError};
use crate::event::{
    AppendResult, ExpectedVersion, NewEvent, RecordedEvent, Snapshot, StreamAppend, StreamId,
};

/// An append-only, hash-chained log of events in streams.
///
/// Guarantees, for every backend:
/// - an append call is atomic: all its events, over all its streams, or none;
/// - each stream's expected version is checked against its head at commit;
/// - an event id is stored at most once; re-sending it with the same stream, type and
///   payload returns the original result, anything else is an idempotency conflict;
/// - `read_all` returns events in strictly increasing position, and a reader that
///   follows positions never skips an event whose transaction committed late.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends events to several streams atomically, in the order given.
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<AppendResult>;

    /// Appends events to one stream.
    async fn append(
        &self,
        stream_id: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        self.append_many(vec![StreamAppend {
            stream_id: stream_id.clone(),
            expected,
            events,
        }])
        .await
    }

    /// Reads a stream from `from_version` (inclusive, 1-based), at most `limit` events.
    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// The stored events with these ids (those that exist, in position order; at most
    /// [`crate::limits::READ_PAGE_EVENTS_MAX`] ids). Committed events only, whatever
    /// `read_all` may not show yet.
    async fn find_events(&self, event_ids: &[uuid::Uuid]) -> Result<Vec<RecordedEvent>>;

    /// Reads the whole log after `after_position` (exclusive), at most `limit` events.
    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// The position of the last event a `read_all` may return now (0 for an empty log).
    async fn head_position(&self) -> Result<u64>;

    /// The position of the last committed event (0 for an empty log). On Postgres,
    /// `read_all` may not return it yet while older transactions are still open
    /// anywhere in the cluster; readers that must reach it wait until it does.
    async fn last_position(&self) -> Result<u64>;

    /// A wake-up that fires after new appends, so readers need not spin.
    fn subscribe(&self) -> Wakeups;

    /// Stores a snapshot, unless one as new or newer is already stored for the stream.
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        self.save_snapshots(std::slice::from_ref(snapshot)).await
    }

    /// Stores several snapshots in one transaction (at most
    /// [`crate::limits::SNAPSHOTS_PER_SAVE_MAX`]), each unless one as new or newer is
    /// already stored for its stream. Nothing is stored if one is refused.
    async fn save_snapshots(&self, snapshots: &[Snapshot]) -> Result<()>;

    /// The newest snapshot of a stream, if any.
    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>>;

    /// Leaves `n` positions unused, as a rolled-back append does, so an import can
    /// keep a source log's gaps. Returns false where the backend cannot (SQLite logs
    /// have no gaps: an imported log with gaps is renumbered there).
    async fn skip_positions(&self, _n: u64) -> Result<bool> {
        Ok(false)
    }

    /// Which backend this is (`sqlite` or `postgres`), for logs and benchmarks.
    fn backend(&self) -> &'static str;
}

/// Fires when events may have been appended since the last wake-up.
///
/// A hint, not a delivery: a wake-up may come with nothing new to read (the caller reads
/// and finds nothing), and callers should also poll on a bounded interval as a fallback
/// for writers the store cannot hear (see each backend's notes).
#[derive(Clone, Debug)]
pub struct Wakeups {
    rx: watch::Receiver<u64>,
}

impl Wakeups {
    pub(crate) fn new(rx: watch::Receiver<u64>) -> Self {
        Self { rx }
    }

    /// Waits for the next wake-up and returns the newest head position heard of.
    pub async fn wait(&mut self) -> Result<u64> {
        self.rx.changed().await.map_err(|_| StoreError::Closed)?;
        Ok(*self.rx.borrow_and_update())
    }
}

/// The sending half of [`Wakeups`], kept by each backend.
#[derive(Debug)]
pub(crate) struct HeadSignal {
    tx: watch::Sender<u64>,
}

impl HeadSignal {
    pub fn new(head: u64) -> Self {
        Self {
            tx: watch::Sender::new(head),
        }
    }

    /// Records that the log reached `position`; wakes subscribers if that is news.
    pub fn advance(&self, position: u64) {
        self.tx.send_if_modified(|head| {
            let newer = position > *head;
            if newer {
                *head = position;
            }
            newer
        });
    }

    pub fn current(&self) -> u64 {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> Wakeups {
        Wakeups::new(self.tx.subscribe())
    }
}
