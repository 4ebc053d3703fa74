//! The embedded SQLite backend: the default, so a newcomer runs Tally with no server.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a commit is on disk when an
//! append returns. Speed comes from **group commit**: one writer task owns the only
//! write connection; appends queue to it, and it takes every append waiting (up to
//! [`GROUP_COMMIT_APPENDS_MAX`]) into one `BEGIN IMMEDIATE` transaction with one fsync.
//! Each append is still decided on its own — versions, idempotency and conflicts are
//! checked per call, in queue order, against the heads left by the calls before it in
//! the same group — and each caller gets its own result. If the commit itself fails,
//! every caller of that group gets the error and nothing of the group is stored. The
//! writer remembers the heads it wrote, so a group usually needs no read before its
//! INSERT; the unique keys catch a memory gone stale and the group is then read and
//! decided again (see `Tail`).
//!
//! Gap safety is by construction: positions are assigned by the single writer inside
//! its write transaction, so position order is commit order, and a reader's snapshot
//! holds either all of a group or none of it. Readers use a separate small pool and
//! never wait for the writer (WAL).
//!
//! Another process may write the same file (SQLite's lock serialises writers, and
//! busy handling waits up to [`BUSY_TIMEOUT`]); it is not woken by this process's
//! appends, so cross-process readers rely on their polling fallback.
//!
//! One file: one backend of the `EventStore` trait (see `postgres.rs`).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::event::{
    AppendResult, AppendedEvent, RecordedEvent, Snapshot, StreamAppend, StreamId, now_micros,
};
use crate::group::{AppendQueue, Appends, answer, take_group};
use crate::limits::{
    GROUP_COMMIT_APPENDS_MAX, INSERT_ROWS_MAX, STREAM_HEAD_CACHE_MAX, check_page, check_snapshots,
};
use crate::plan::{EncodedAppend, Head, PlannedEvent, StoredRef};
use crate::row::{StoredRow, to_i64};
use crate::store::{EventStore, HeadSignal, Wakeups};

/// How long a connection waits for another writer's lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements the writer keeps: a few statement shapes times group sizes.
pub const WRITER_STATEMENTS_CACHED: usize = 4 * GROUP_COMMIT_APPENDS_MAX;

/// Page cache per connection, in KiB.
pub const PAGE_CACHE_KIB: u64 = 32 * 1024;

/// How much of the file each connection maps into memory instead of reading it.
pub const MMAP_BYTES: u64 = 256 * 1024 * 1024;

/// Reader connections; SQLite readers run in parallel under WAL.
pub const READ_CONNECTIONS_MAX: u32 = 4;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../schema/sqlite");

/// The event log in one SQLite file.
#[derive(Clone)]
pub struct SqliteEventStore {
    writer: AppendQueue,
    readers: SqlitePool,
    signal: Arc<HeadSignal>,
    options: SqliteConnectOptions,
}

impl SqliteEventStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL, applies pending
    /// migrations and starts the writer task. The file's folder is created if missing.
    pub async fn open(url: &str) -> Result<Self> {
        let options = connect_options(url)?;
        // Group sizes vary, so the writer's statements come in many lengths; keep them
        // all prepared rather than re-preparing on every group.
        let writer_options = options
            .clone()
            .statement_cache_capacity(WRITER_STATEMENTS_CACHED);
        let mut conn = SqliteConnection::connect_with(&writer_options).await?;
        MIGRATOR.run(&mut conn).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS_MAX)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        let head = head_position(&readers).await?;
        let signal = Arc::new(HeadSignal::new(head));
        let (writer, requests) = AppendQueue::new();
        tokio::spawn(run_writer(conn, requests, signal.clone()));
        Ok(Self {
            writer,
            readers,
            signal,
            options,
        })
    }

    /// The migrations this backend applies, newest last.
    pub fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    /// The read pool, for read models that live in the same file.
    pub fn pool(&self) -> &SqlitePool {
        &self.readers
    }

    /// Starts an append on a connection of its own and holds its transaction open: its
    /// positions are taken and nothing is visible until [`PendingAppend::commit`].
    /// While it is open it holds SQLite's write lock, so other appends wait.
    /// Dropping it rolls back. Meant for tests that probe commit ordering.
    pub async fn begin_append(&self, appends: Vec<StreamAppend>) -> Result<PendingAppend> {
        let append = EncodedAppend::encode(appends)?;
        let conn = SqliteConnection::connect_with(&self.options).await?;
        let mut conn = conn;
        // A raw BEGIN, not sqlx's Transaction: the transaction must outlive this call.
        sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await?;
        let mut written = write_group(&mut conn, &[&append], None).await?;
        let result = written.results.pop().unwrap_or(Err(StoreError::Closed))?;
        Ok(PendingAppend {
            conn,
            result: Some(result),
            signal: self.signal.clone(),
        })
    }
}

/// An append whose transaction is open; see [`SqliteEventStore::begin_append`].
pub struct PendingAppend {
    conn: SqliteConnection,
    result: Option<AppendResult>,
    signal: Arc<HeadSignal>,
}

impl PendingAppend {
    /// What the append will be once committed.
    pub fn result(&self) -> Option<&AppendResult> {
        self.result.as_ref()
    }

    /// Commits the held transaction and wakes subscribers.
    pub async fn commit(mut self) -> Result<AppendResult> {
        sqlx::query("COMMIT").execute(&mut self.conn).await?;
        let result = self.result.take().ok_or(StoreError::Closed)?;
        self.signal.advance(result.position());
        Ok(result)
    }
}

fn connect_options(url: &str) -> Result<SqliteConnectOptions> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::InvalidInput(format!("bad SQLite URL {url:?}: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        // The default 2 MiB page cache is outgrown within seconds of appending; the
        // indexes' inner pages must stay in memory or every insert reads from the OS.
        .pragma("cache_size", format!("-{}", PAGE_CACHE_KIB))
        .pragma("mmap_size", MMAP_BYTES.to_string());
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path.to_string_lossy().contains(":memory:") {
        return Err(StoreError::InvalidInput(format!(
            "SQLite URL {url:?} names no file; use sqlite://PATH, e.g. sqlite://./data/tally.db"
        )));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::InvalidInput(format!("cannot create folder {}: {e}", parent.display()))
        })?;
    }
    Ok(options)
}

/// The writer task: takes every waiting append into one transaction, commits once,
/// answers each caller. Ends when the last store handle is dropped.
async fn run_writer(mut conn: SqliteConnection, mut appends: Appends, signal: Arc<HeadSignal>) {
    let mut tail = Tail::default();
    let mut group = Vec::with_capacity(GROUP_COMMIT_APPENDS_MAX);
    while take_group(&mut appends, &mut group).await {
        let batch: Vec<&EncodedAppend> = group.iter().map(|r| &r.append).collect();
        let results = match commit_group(&mut conn, &batch, &tail).await {
            Ok(written) => {
                signal.advance(written.last_position);
                tail.learn(written.heads, written.last_position);
                written.results
            }
            Err(error) => {
                tracing::error!(%error, appends = group.len(), "group commit failed; nothing of it was stored");
                tail = Tail::default();
                group.iter().map(|_| Err(error.clone())).collect()
            }
        };
        answer(&mut group, results);
    }
    let _ = conn.close().await;
}

async fn commit_group(
    conn: &mut SqliteConnection,
    appends: &[&EncodedAppend],
    tail: &Tail,
) -> Result<GroupWrite> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let written = write_group(&mut tx, appends, Some(tail)).await?;
    tx.commit().await?;
    Ok(written)
}

/// The writer's memory of the end of the log: the heads of recently written streams
/// and the last position, as of its own last commit.
///
/// With it a group needs no read before its INSERT. It can only be stale, never wrong
/// (another process, or a held-open append, wrote since): committed heads and
/// positions never change, so a stale memory is too low, and writing from it collides
/// with the `position`, `event_id` or `(stream_id, stream_version)` unique key. SQLite
/// then aborts just that statement, and the group is read and decided again. A
/// re-sent event id is found the same way.
#[derive(Default)]
struct Tail {
    heads: HashMap<StreamId, Head>,
    last_position: Option<u64>,
}

impl Tail {
    /// The state to decide a group against, if every stream of it is remembered.
    fn state_for(&self, streams: &[&StreamId]) -> Option<GroupState> {
        let last_position = self.last_position?;
        let heads = streams
            .iter()
            .map(|s| self.heads.get(*s).map(|h| ((*s).clone(), *h)))
            .collect::<Option<HashMap<_, _>>>()?;
        Some(GroupState {
            stored: HashMap::new(),
            heads,
            last_position,
        })
    }

    fn learn(&mut self, heads: HashMap<StreamId, Head>, last_position: u64) {
        if self.heads.len() + heads.len() > STREAM_HEAD_CACHE_MAX {
            self.heads.clear();
        }
        self.heads.extend(heads);
        self.last_position = Some(last_position);
    }
}

/// What a written (not yet committed) group comes to.
struct GroupWrite {
    /// Each append's own result, in group order.
    results: Vec<Result<AppendResult>>,
    /// The heads of the group's streams after it.
    heads: HashMap<StreamId, Head>,
    /// The last position in the log after it.
    last_position: u64,
}

/// Decides and writes a group of appends inside an open write transaction. With a
/// [`Tail`] that remembers every stream of the group, tries first without reading.
async fn write_group(
    conn: &mut SqliteConnection,
    appends: &[&EncodedAppend],
    tail: Option<&Tail>,
) -> Result<GroupWrite> {
    let streams: Vec<&StreamId> = appends
        .iter()
        .flat_map(|a| a.streams.iter().map(|(s, _)| s))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let events: usize = appends.iter().map(|a| a.events.len()).sum();
    // One INSERT at most: a failed statement then leaves nothing behind in the transaction.
    if let Some(state) = tail
        .filter(|_| events <= INSERT_ROWS_MAX)
        .and_then(|t| t.state_for(&streams))
    {
        let decided = decide(appends, state);
        if decided.results.iter().all(Result::is_ok) {
            match insert_rows(conn, &decided.rows).await {
                Ok(()) => return Ok(decided.written()),
                Err(sqlx::Error::Database(e))
                    if e.kind() == sqlx::error::ErrorKind::UniqueViolation => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let ids: Vec<Uuid> = appends.iter().flat_map(|a| a.event_ids()).collect();
    let state = read_group_state(&mut *conn, &streams, &ids).await?;
    let decided = decide(appends, state);
    insert_rows(conn, &decided.rows).await?;
    Ok(decided.written())
}

/// A group decided against a [`GroupState`]: each append's result and the rows to write.
struct Decided<'a> {
    results: Vec<Result<AppendResult>>,
    rows: Vec<(u64, PlannedEvent<'a>)>,
    heads: HashMap<StreamId, Head>,
    last_position: u64,
}

impl Decided<'_> {
    fn written(self) -> GroupWrite {
        GroupWrite {
            results: self.results,
            heads: self.heads,
            last_position: self.last_position,
        }
    }
}

/// Decides each append of a group in order, against the state left by the ones before
/// it: replays, conflicts and new events with their versions, hashes and positions.
fn decide<'a>(appends: &[&'a EncodedAppend], state: GroupState) -> Decided<'a> {
    let GroupState {
        mut stored,
        mut heads,
        last_position,
    } = state;
    let mut last_position = last_position;
    let mut rows: Vec<(u64, PlannedEvent<'a>)> = Vec::new();
    let mut results = Vec::with_capacity(appends.len());
    for append in appends {
        if append.event_ids().any(|id| stored.contains_key(&id)) {
            results.push(append.resolve_replay(&stored));
            continue;
        }
        let planned = match append.plan(&heads) {
            Ok(planned) => planned,
            Err(conflict) => {
                results.push(Err(conflict));
                continue;
            }
        };
        let mut events = Vec::with_capacity(planned.len());
        for event in planned {
            last_position += 1;
            heads.insert(
                event.stream_id.clone(),
                Head {
                    version: event.stream_version,
                    hash: event.hash,
                },
            );
            // A later append of this group may re-send this id; it must see it stored.
            stored.insert(
                event.event.event_id,
                StoredRef {
                    stream_id: event.stream_id.to_string(),
                    event_type: event.event.event_type.clone(),
                    payload: event.event.payload.clone(),
                    stream_version: event.stream_version,
                    position: last_position,
                },
            );
            events.push(AppendedEvent {
                event_id: event.event.event_id,
                stream_id: event.stream_id.clone(),
                stream_version: event.stream_version,
                position: last_position,
            });
            rows.push((last_position, event));
        }
        results.push(Ok(AppendResult {
            events,
            replayed: false,
        }));
    }
    Decided {
        results,
        rows,
        heads,
        last_position,
    }
}

async fn insert_rows(
    conn: &mut SqliteConnection,
    rows: &[(u64, PlannedEvent<'_>)],
) -> Result<(), sqlx::Error> {
    let recorded_at = now_micros().timestamp_micros();
    for chunk in rows.chunks(INSERT_ROWS_MAX) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO events (position, event_id, stream_id, stream_version, event_type, \
             schema_version, payload, metadata, occurred_at, recorded_at, hash) ",
        );
        insert.push_values(chunk, |mut row, (position, event)| {
            row.push_bind(to_i64(*position))
                .push_bind(event.event.event_id)
                .push_bind(event.stream_id.as_str())
                .push_bind(to_i64(event.stream_version))
                .push_bind(event.event.event_type.as_str())
                .push_bind(i64::from(event.event.schema_version))
                .push_bind(event.event.payload.as_str())
                .push_bind(event.event.metadata.as_str())
                .push_bind(event.event.occurred_at.timestamp_micros())
                .push_bind(recorded_at)
                .push_bind(&event.hash[..]);
        });
        insert.build().execute(&mut *conn).await?;
    }
    Ok(())
}

/// What a group's decisions are made against, read inside its write transaction.
struct GroupState {
    /// Events of the group whose ids are already stored.
    stored: HashMap<Uuid, StoredRef>,
    /// Heads of the group's streams that exist.
    heads: HashMap<StreamId, Head>,
    /// The last position in the log.
    last_position: u64,
}

/// Reads a group's state in as few statements as the parameter limits allow (one for
/// any ordinary group): every statement is a round trip to SQLite's worker thread, and
/// those round trips, not SQLite, bound group-commit throughput.
async fn read_group_state(
    conn: &mut SqliteConnection,
    streams: &[&StreamId],
    ids: &[Uuid],
) -> Result<GroupState> {
    let mut state = GroupState {
        stored: HashMap::new(),
        heads: HashMap::with_capacity(streams.len()),
        last_position: 0,
    };
    let rounds = streams
        .len()
        .max(ids.len())
        .div_ceil(INSERT_ROWS_MAX)
        .max(1);
    for round in 0..rounds {
        let part = |len: usize| {
            (round * INSERT_ROWS_MAX).min(len)..((round + 1) * INSERT_ROWS_MAX).min(len)
        };
        let (streams, ids) = (&streams[part(streams.len())], &ids[part(ids.len())]);
        let mut query = QueryBuilder::<Sqlite>::new("WITH wanted(stream_id) AS (VALUES ('')");
        for stream in streams {
            query.push(", (").push_bind(stream.as_str()).push(")");
        }
        query.push("), ids(event_id) AS (VALUES (NULL)");
        for id in ids {
            query.push(", (").push_bind(*id).push(")");
        }
        // Heads: one index probe per stream (max() over one stream_id is answered from
        // the (stream_id, stream_version) index), then the stored ids, then the log head.
        // CROSS JOIN keeps the short lists as the outer loops: with long lists the
        // planner would otherwise scan the whole log once per statement.
        query.push(
            ") SELECT 1 AS kind, e.stream_id, e.stream_version, e.hash, NULL AS event_id, \
               NULL AS event_type, NULL AS payload, NULL AS position \
             FROM wanted w CROSS JOIN events e ON e.stream_id = w.stream_id AND e.stream_version = \
               (SELECT max(m.stream_version) FROM events m WHERE m.stream_id = w.stream_id) \
             UNION ALL \
             SELECT 2, e.stream_id, e.stream_version, NULL, e.event_id, e.event_type, \
               e.payload, e.position \
             FROM ids CROSS JOIN events e ON e.event_id = ids.event_id \
             UNION ALL \
             SELECT 3, NULL, NULL, NULL, NULL, NULL, NULL, coalesce(max(position), 0) FROM events",
        );
        for row in query.build().fetch_all(&mut *conn).await? {
            let kind: i64 = row.try_get("kind")?;
            let version = |row: &sqlx::sqlite::SqliteRow| -> Result<u64> {
                Ok(u64::try_from(row.try_get::<i64, _>("stream_version")?).unwrap_or(0))
            };
            let position = |row: &sqlx::sqlite::SqliteRow| -> Result<u64> {
                Ok(u64::try_from(row.try_get::<i64, _>("position")?).unwrap_or(0))
            };
            match kind {
                1 => {
                    let hash: Vec<u8> = row.try_get("hash")?;
                    state.heads.insert(
                        StreamId::new(row.try_get::<String, _>("stream_id")?)?,
                        Head {
                            version: version(&row)?,
                            hash: crate::hash::from_column(0, &hash)?,
                        },
                    );
                }
                2 => {
                    state.stored.insert(
                        row.try_get("event_id")?,
                        StoredRef {
                            stream_id: row.try_get("stream_id")?,
                            event_type: row.try_get("event_type")?,
                            payload: row.try_get("payload")?,
                            stream_version: version(&row)?,
                            position: position(&row)?,
                        },
                    );
                }
                _ => state.last_position = position(&row)?,
            }
        }
    }
    Ok(state)
}

async fn head_position(pool: &SqlitePool) -> Result<u64> {
    let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(head).unwrap_or(0))
}

#[derive(sqlx::FromRow)]
struct SqliteRow {
    position: i64,
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    schema_version: i64,
    payload: String,
    metadata: String,
    occurred_at: i64,
    recorded_at: i64,
    hash: Vec<u8>,
}

impl SqliteRow {
    fn into_event(self) -> Result<RecordedEvent> {
        let time = |micros: i64| {
            DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| StoreError::Corrupt {
                position: u64::try_from(self.position).unwrap_or(0),
                detail: format!("time {micros} is out of range"),
            })
        };
        StoredRow {
            occurred_at: time(self.occurred_at)?,
            recorded_at: time(self.recorded_at)?,
            position: self.position,
            event_id: self.event_id,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload: self.payload,
            metadata: self.metadata,
            hash: self.hash,
        }
        .into_event()
    }
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<AppendResult> {
        self.writer.submit(EncodedAppend::encode(appends)?).await
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        check_page(limit)?;
        let rows: Vec<SqliteRow> = sqlx::query_as(
            "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
             payload, metadata, occurred_at, recorded_at, hash FROM events \
             WHERE stream_id = ? AND stream_version >= ? ORDER BY stream_version LIMIT ?",
        )
        .bind(stream_id.as_str())
        .bind(to_i64(from_version))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(SqliteRow::into_event).collect()
    }

    async fn find_events(&self, event_ids: &[Uuid]) -> Result<Vec<RecordedEvent>> {
        check_page(event_ids.len().max(1))?;
        if event_ids.is_empty() {
            return Ok(vec![]);
        }
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
             payload, metadata, occurred_at, recorded_at, hash FROM events WHERE event_id IN (",
        );
        let mut list = query.separated(", ");
        for id in event_ids {
            list.push_bind(*id);
        }
        query.push(") ORDER BY position");
        let rows: Vec<SqliteRow> = query.build_query_as().fetch_all(&self.readers).await?;
        rows.into_iter().map(SqliteRow::into_event).collect()
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        check_page(limit)?;
        let rows: Vec<SqliteRow> = sqlx::query_as(
            "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
             payload, metadata, occurred_at, recorded_at, hash FROM events \
             WHERE position > ? ORDER BY position LIMIT ?",
        )
        .bind(to_i64(after_position))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(SqliteRow::into_event).collect()
    }

    async fn head_position(&self) -> Result<u64> {
        head_position(&self.readers).await
    }

    async fn last_position(&self) -> Result<u64> {
        // One writer: what is committed is readable.
        head_position(&self.readers).await
    }

    fn subscribe(&self) -> Wakeups {
        self.signal.subscribe()
    }

    async fn save_snapshots(&self, snapshots: &[Snapshot]) -> Result<()> {
        check_snapshots(snapshots)?;
        // Snapshots take SQLite's one write lock like appends do: one transaction for
        // the lot, so callers should gather them (tally-ledger does).
        let mut tx = self.readers.begin().await?;
        for snapshot in snapshots {
            sqlx::query(
                "INSERT INTO snapshots (stream_id, stream_version, state, taken_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (stream_id) DO UPDATE SET stream_version = excluded.stream_version, \
                 state = excluded.state, taken_at = excluded.taken_at \
                 WHERE excluded.stream_version >= snapshots.stream_version",
            )
            .bind(snapshot.stream_id.as_str())
            .bind(to_i64(snapshot.stream_version))
            .bind(&snapshot.state[..])
            .bind(now_micros().timestamp_micros())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT stream_version, state FROM snapshots WHERE stream_id = ?")
                .bind(stream_id.as_str())
                .fetch_optional(&self.readers)
                .await?;
        Ok(row.map(|(version, state)| Snapshot {
            stream_id: stream_id.clone(),
            stream_version: u64::try_from(version).unwrap_or(0),
            state,
        }))
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
