//! The PostgreSQL backend, for production.
//!
//! # Appends
//! Appends are committed in groups, as on SQLite, because on a small machine the fixed
//! cost of a statement, not the rows, bounds throughput. Callers queue their appends;
//! a few lanes (`append_lanes`) each take every append waiting and write them with a
//! single statement in its own transaction: a CTE reserves the group's positions, then
//! one `INSERT … SELECT FROM unnest(…)` writes every event of every stream of every
//! append in the group. Lanes overlap so one group's round trip hides another's.
//!
//! Each append is decided on its own before it joins the statement: versions and hash
//! chains are computed here, in Rust, from its streams' heads, in queue order, so two
//! appends to one stream in a group chain correctly or the later one conflicts. Heads
//! are remembered after each successful write (a committed `(stream, version) → hash`
//! is an immutable fact, so a remembered head can be stale but never wrong). If the
//! group's INSERT hits a unique key — a stale head, a re-sent event id, another
//! process's append — nothing of the group was stored, and each of its appends is
//! decided again alone, re-reading heads: each caller still gets its own result, its
//! own conflict or its original result. The `(stream_id, stream_version)` key is the
//! final arbiter of optimistic concurrency, the `event_id` key of idempotency.
//!
//! # Gap-safe reads
//! A position is taken from a sequence when the row is inserted, but the row becomes
//! visible only at commit. A reader polling `position > checkpoint` could read position
//! 11 while 10 is still uncommitted, move its checkpoint past 10 and never see it.
//!
//! The known answer (Emmett; eugene-khyst/postgresql-event-sourcing) stores each
//! event's `transaction_id` (`xid8`) and lets readers return only events with
//! `transaction_id < pg_snapshot_xmin(pg_current_snapshot())`: every transaction older
//! than that has finished, so nothing below it can still appear. That alone is not
//! enough when readers follow *positions*: transaction A may get its id before B, while
//! B takes the smaller position; then B's event can be visible (A is not older than
//! xmin… but B is) while A's smaller position is still in flight. Emmett resolves it by
//! ordering readers by `(transaction_id, position)`. Tally keeps a plain position
//! order, because the DESIGN promises one, and instead makes the two orders agree:
//! `tally_reserve_positions(n)` assigns the transaction id and takes the positions
//! inside one short session-level advisory lock. So if position p < q then
//! xid(p) ≤ xid(q); if q is visible, xid(q) < xmin, so xid(p) < xmin too, so p's
//! transaction has finished and p is visible in the same snapshot (or was rolled back
//! and never will be). A reader following positions never skips.
//!
//! Trade-offs, knowingly taken:
//! - appends serialise for the few microseconds of the reservation (not until commit:
//!   commits of concurrent appends still share WAL flushes);
//! - any long-running transaction that holds a transaction id — an append, a read-model
//!   write, an idle-in-transaction session — holds `read_all` back until it ends.
//!   Readers lag, they never skip. Keep transactions short and set
//!   `idle_in_transaction_session_timeout` in production;
//! - positions may have gaps (a failed append burns the positions it took). Positions
//!   are an order, not a count.
//! - if a reservation is interrupted between lock and unlock (a cancelled statement),
//!   the session would keep the lock; after any failed append the connection releases
//!   every advisory lock it holds before it is reused.
//!
//! # Wake-ups
//! Subscribers in this process are woken right after each append commits. Other
//! processes are woken through `LISTEN/NOTIFY` on the channel [`NOTIFY_CHANNEL`]. The
//! NOTIFY is sent by a background task after the append, coalescing many appends into
//! one notification, and not inside the append's transaction: a notifying transaction
//! takes a database-wide lock through its commit, which would serialise every append's
//! WAL flush. A wake-up may arrive before `read_all` can return the event (an older
//! transaction still running); readers also poll as a fallback.
//!
//! One file: one backend of the `EventStore` trait; its appends, reads, wake-ups and
//! snapshots share a connection discipline that is easier to check in one place.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::event::{AppendResult, AppendedEvent, RecordedEvent, Snapshot, StreamAppend, StreamId};
use crate::group::{AppendQueue, Appends, answer, take_group};
use crate::limits::{
    APPEND_ATTEMPTS_MAX, GROUP_COMMIT_APPENDS_MAX, STREAM_HEAD_CACHE_MAX, check_page,
    check_snapshots,
};
use crate::plan::{EncodedAppend, Head, PlannedEvent, StoredRef};
use crate::row::{StoredRow, to_i64};
use crate::store::{EventStore, HeadSignal, Wakeups};

/// The LISTEN/NOTIFY channel on which appends are announced; the payload is the head
/// position the announcing process knows of.
pub const NOTIFY_CHANNEL: &str = "tally_events";

/// How long a listener waits before reconnecting after losing its connection.
pub const LISTENER_RECONNECT_DELAY: Duration = Duration::from_secs(1);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../schema/postgres");

/// Connection pool settings; every one explicit, because the defaults of a library are
/// not a production decision.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Most open connections. Appends beyond this wait for a connection.
    pub max_connections: u32,
    /// Connections kept open while idle.
    pub min_connections: u32,
    /// How long an operation waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// An idle connection above `min_connections` is closed after this long.
    pub idle_timeout: Duration,
    /// Every connection is replaced after this long.
    pub max_lifetime: Duration,
    /// Group-commit lanes: how many merged appends may be in flight at once. Each lane
    /// takes every append waiting (up to [`GROUP_COMMIT_APPENDS_MAX`]) into one
    /// statement; more lanes overlap round trips, fewer make bigger groups.
    pub append_lanes: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_lifetime: Duration::from_secs(1800),
            append_lanes: 2,
        }
    }
}

/// The event log in a PostgreSQL database.
#[derive(Clone)]
pub struct PostgresEventStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    appends: AppendQueue,
    tasks: Vec<JoinHandle<()>>,
}

/// What the store's handle and its background tasks share. Tasks hold this, never
/// [`Inner`], so dropping the last handle drops `Inner` and stops them.
struct Shared {
    pool: PgPool,
    heads: Mutex<HashMap<StreamId, Head>>,
    signal: HeadSignal,
    announce: Notify,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

const INSERT_EVENTS: &str = "\
WITH reserved AS MATERIALIZED (SELECT tally_reserve_positions($1) AS positions) \
INSERT INTO events (position, transaction_id, event_id, stream_id, stream_version, event_type, \
                    schema_version, payload, metadata, occurred_at, hash) \
SELECT reserved.positions[e.ord::int], pg_current_xact_id(), e.event_id, e.stream_id, \
       e.stream_version, e.event_type, e.schema_version, e.payload::json, e.metadata::json, \
       e.occurred_at, substring($10 FROM (e.ord::int - 1) * 32 + 1 FOR 32) \
FROM reserved, unnest($2::uuid[], $3::text[], $4::int8[], $5::text[], $6::int4[], $7::text[], \
                      $8::text[], $9::timestamptz[]) \
     WITH ORDINALITY AS e(event_id, stream_id, stream_version, event_type, schema_version, \
                          payload, metadata, occurred_at, ord) \
RETURNING position, event_id";

impl PostgresEventStore {
    /// Connects, applies pending migrations and starts the wake-up tasks.
    pub async fn open(url: &str, options: PostgresOptions) -> Result<Self> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidInput(format!("bad Postgres URL: {e}")))?
            .application_name("tally");
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(options.idle_timeout)
            .max_lifetime(options.max_lifetime)
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        warn_if_not_durable(&pool).await?;
        let head = head_position(&pool).await?;
        let shared = Arc::new(Shared {
            pool,
            heads: Mutex::new(HashMap::new()),
            signal: HeadSignal::new(head),
            announce: Notify::new(),
        });
        let (appends, queue) = AppendQueue::new();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let mut tasks = vec![
            tokio::spawn(listen(shared.clone())),
            tokio::spawn(announce_appends(shared.clone())),
        ];
        for _ in 0..options.append_lanes.max(1) {
            tasks.push(tokio::spawn(run_lane(shared.clone(), queue.clone())));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                appends,
                tasks,
            }),
        })
    }

    /// The migrations this backend applies, newest last.
    pub fn migrator() -> &'static sqlx::migrate::Migrator {
        &MIGRATOR
    }

    /// Shuts down: stops the wake-up tasks (the listener holds a pooled connection),
    /// then waits for in-flight operations to return their connections and closes them.
    pub async fn close(&self) {
        for task in &self.inner.tasks {
            task.abort();
        }
        self.inner.shared.pool.close().await;
    }

    /// The connection pool, for read models that live in the same database.
    pub fn pool(&self) -> &PgPool {
        &self.inner.shared.pool
    }

    /// Starts an append in a transaction of its own and holds it open: its positions are
    /// taken and nothing is visible until [`PendingAppend::commit`]; dropping it rolls
    /// back. Other appends go on meanwhile — this is how the conformance suite shows
    /// that a reader does not skip a transaction that commits late.
    pub async fn begin_append(&self, appends: Vec<StreamAppend>) -> Result<PendingAppend> {
        let append = EncodedAppend::encode(appends)?;
        let mut tx = self.inner.shared.pool.begin().await?;
        let result = append_once(&mut tx, &append, &mut HashMap::new()).await?;
        Ok(PendingAppend {
            tx,
            result,
            shared: self.inner.shared.clone(),
        })
    }
}

impl Shared {
    /// Wakes this process's subscribers and announces the append to other processes.
    fn appended(&self, position: u64) {
        self.signal.advance(position);
        self.announce.notify_one();
    }

    /// Commits a group of appends, as one statement when it can, and answers each.
    ///
    /// Each append is planned on its own, in queue order, against the heads left by the
    /// appends before it; the planned ones go into one INSERT (one transaction, one WAL
    /// flush). If that INSERT hits a unique key — a stale remembered head, a re-sent
    /// event id, another process — nothing of it was stored, and each of its appends is
    /// decided again on its own, so every caller still gets its own exact answer.
    async fn commit_group(&self, group: &[&EncodedAppend]) -> Vec<Result<AppendResult>> {
        let mut conn = match self.pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                let error = StoreError::from(e);
                return group.iter().map(|_| Err(error.clone())).collect();
            }
        };
        let mut results: Vec<Option<Result<AppendResult>>> = group.iter().map(|_| None).collect();
        let mut one_by_one = Vec::new();
        match self.merge_group(&mut conn, group, &mut results).await {
            Ok(left) => one_by_one = left,
            Err(error) => {
                release_reservation_lock(&mut conn).await;
                for result in results.iter_mut().filter(|r| r.is_none()) {
                    *result = Some(Err(error.clone()));
                }
            }
        }
        for index in one_by_one {
            let result = self.append_encoded(&mut conn, group[index]).await;
            if let Err(StoreError::Database(_)) = &result {
                release_reservation_lock(&mut conn).await;
            }
            results[index] = Some(result);
        }
        let results: Vec<Result<AppendResult>> = results
            .into_iter()
            .map(|r| r.unwrap_or(Err(StoreError::Closed)))
            .collect();
        let head = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .filter(|r| !r.replayed)
            .map(AppendResult::position)
            .max();
        if let Some(head) = head {
            self.appended(head);
        }
        results
    }

    /// The merged attempt of [`Self::commit_group`]: fills `results` for the appends it
    /// stored and returns the indexes left to decide one by one.
    async fn merge_group(
        &self,
        conn: &mut PgConnection,
        group: &[&EncodedAppend],
        results: &mut [Option<Result<AppendResult>>],
    ) -> Result<Vec<usize>> {
        let mut heads = HashMap::new();
        for append in group {
            heads.extend(self.remembered_heads(append));
        }
        let missing: Vec<&StreamId> = group
            .iter()
            .flat_map(|a| a.streams.iter().map(|(s, _)| s))
            .filter(|s| !heads.contains_key(*s))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            heads.extend(fetch_heads(conn, &missing).await?);
        }
        let mut planned = Vec::new();
        let mut members = Vec::new();
        let mut left = Vec::new();
        for (index, append) in group.iter().enumerate() {
            match append.plan(&heads) {
                Ok(events) => {
                    for event in &events {
                        heads.insert(
                            event.stream_id.clone(),
                            Head {
                                version: event.stream_version,
                                hash: event.hash,
                            },
                        );
                    }
                    members.push((index, planned.len()..planned.len() + events.len()));
                    planned.extend(events);
                }
                // A stale remembered head, a real conflict or a retry: decided alone.
                Err(_) => left.push(index),
            }
        }
        if planned.is_empty() {
            return Ok(left);
        }
        match insert(conn, &planned).await {
            Ok(stored) => {
                self.remember_heads(&planned);
                for (index, range) in members {
                    results[index] = Some(Ok(AppendResult {
                        events: stored.events[range].to_vec(),
                        replayed: false,
                    }));
                }
            }
            Err(InsertError::EventIdTaken | InsertError::VersionTaken) => {
                for append in group {
                    self.forget_heads(append);
                }
                left.extend(members.into_iter().map(|(index, _)| index));
                left.sort_unstable();
            }
            Err(InsertError::Other(error)) => return Err(error),
        }
        Ok(left)
    }

    fn remembered_heads(&self, append: &EncodedAppend) -> HashMap<StreamId, Head> {
        let cache = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        append
            .streams
            .iter()
            .filter_map(|(s, _)| cache.get(s).map(|h| (s.clone(), *h)))
            .collect()
    }

    fn remember_heads(&self, planned: &[PlannedEvent<'_>]) {
        let mut cache = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= STREAM_HEAD_CACHE_MAX {
            cache.clear();
        }
        for event in planned {
            let head = cache.entry(event.stream_id.clone()).or_insert(Head::EMPTY);
            if event.stream_version > head.version {
                *head = Head {
                    version: event.stream_version,
                    hash: event.hash,
                };
            }
        }
    }

    fn forget_heads(&self, append: &EncodedAppend) {
        let mut cache = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        for (stream, _) in &append.streams {
            cache.remove(stream);
        }
    }

    async fn append_encoded(
        &self,
        conn: &mut PgConnection,
        append: &EncodedAppend,
    ) -> Result<AppendResult> {
        let streams: Vec<&StreamId> = append.streams.iter().map(|(s, _)| s).collect();
        let mut heads = self.remembered_heads(append);
        let mut heads_fresh = false;
        for _ in 0..APPEND_ATTEMPTS_MAX {
            let missing: Vec<&StreamId> = streams
                .iter()
                .copied()
                .filter(|s| !heads.contains_key(*s))
                .collect();
            if !missing.is_empty() {
                heads.extend(fetch_heads(conn, &missing).await?);
            }
            let planned = match append.plan(&heads) {
                Ok(planned) => planned,
                Err(StoreError::WrongExpectedVersion { .. }) if !heads_fresh => {
                    heads = fetch_heads(conn, &streams).await?;
                    heads_fresh = true;
                    continue;
                }
                Err(conflict @ StoreError::WrongExpectedVersion { .. }) => {
                    // A client retrying an append that already went through sees its
                    // original result, not a conflict with its own events.
                    let stored = fetch_stored(conn, append).await?;
                    if stored.is_empty() {
                        return Err(conflict);
                    }
                    return append.resolve_replay(&stored);
                }
                Err(other) => return Err(other),
            };
            match insert(conn, &planned).await {
                Ok(result) => {
                    self.remember_heads(&planned);
                    return Ok(result);
                }
                Err(InsertError::EventIdTaken) => {
                    let stored = fetch_stored(conn, append).await?;
                    return append.resolve_replay(&stored);
                }
                Err(InsertError::VersionTaken) => {
                    self.forget_heads(append);
                    heads = fetch_heads(conn, &streams).await?;
                    heads_fresh = true;
                }
                Err(InsertError::Other(e)) => return Err(e),
            }
        }
        Err(StoreError::Contention {
            stream_id: append.streams[0].0.clone(),
            attempts: APPEND_ATTEMPTS_MAX,
        })
    }
}

/// An append whose transaction is open; see [`PostgresEventStore::begin_append`].
pub struct PendingAppend {
    tx: Transaction<'static, Postgres>,
    result: AppendResult,
    shared: Arc<Shared>,
}

impl PendingAppend {
    /// What the append will be once committed.
    pub fn result(&self) -> &AppendResult {
        &self.result
    }

    /// Commits the held transaction and wakes subscribers.
    pub async fn commit(self) -> Result<AppendResult> {
        self.tx.commit().await?;
        self.shared.appended(self.result.position());
        Ok(self.result)
    }
}

/// A group-commit lane: takes every append waiting, commits them together, answers.
async fn run_lane(shared: Arc<Shared>, queue: Arc<tokio::sync::Mutex<Appends>>) {
    let mut group = Vec::with_capacity(GROUP_COMMIT_APPENDS_MAX);
    loop {
        // One lane at a time takes a group; the others are committing theirs meanwhile.
        if !take_group(&mut *queue.lock().await, &mut group).await {
            return;
        }
        let batch: Vec<&EncodedAppend> = group.iter().map(|r| &r.append).collect();
        let results = shared.commit_group(&batch).await;
        answer(&mut group, results);
    }
}

/// See the module notes: a connection never goes back to the pool holding the
/// reservation lock.
async fn release_reservation_lock(conn: &mut PgConnection) {
    let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *conn)
        .await;
}

/// One attempt inside a caller's transaction: no retry (the transaction is aborted by
/// a failed insert), no remembered heads.
async fn append_once(
    conn: &mut PgConnection,
    append: &EncodedAppend,
    heads: &mut HashMap<StreamId, Head>,
) -> Result<AppendResult> {
    let streams: Vec<&StreamId> = append.streams.iter().map(|(s, _)| s).collect();
    heads.extend(fetch_heads(conn, &streams).await?);
    let planned = append.plan(heads)?;
    match insert(conn, &planned).await {
        Ok(result) => Ok(result),
        Err(InsertError::EventIdTaken) => Err(StoreError::IdempotencyConflict {
            event_id: append.events[0].event_id,
            detail: "by a concurrent append".into(),
        }),
        Err(InsertError::VersionTaken) => Err(StoreError::Contention {
            stream_id: append.streams[0].0.clone(),
            attempts: 1,
        }),
        Err(InsertError::Other(e)) => Err(e),
    }
}

enum InsertError {
    EventIdTaken,
    VersionTaken,
    Other(StoreError),
}

async fn insert(
    conn: &mut PgConnection,
    planned: &[PlannedEvent<'_>],
) -> Result<AppendResult, InsertError> {
    let n = planned.len();
    let mut ids = Vec::with_capacity(n);
    let mut streams = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut schemas = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut occurred = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n * 32);
    for p in planned {
        ids.push(p.event.event_id);
        streams.push(p.stream_id.as_str());
        versions.push(to_i64(p.stream_version));
        types.push(p.event.event_type.as_str());
        schemas.push(i32::try_from(p.event.schema_version).unwrap_or(i32::MAX));
        payloads.push(p.event.payload.as_str());
        metadata.push(p.event.metadata.as_str());
        occurred.push(p.event.occurred_at);
        hashes.extend_from_slice(&p.hash);
    }
    let rows: Vec<(i64, Uuid)> = sqlx::query_as(INSERT_EVENTS)
        .bind(i32::try_from(n).unwrap_or(i32::MAX))
        .bind(&ids)
        .bind(&streams)
        .bind(&versions)
        .bind(&types)
        .bind(&schemas)
        .bind(&payloads)
        .bind(&metadata)
        .bind(&occurred)
        .bind(&hashes)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                match db.constraint() {
                    Some("events_event_id_key") => InsertError::EventIdTaken,
                    Some("events_stream_version_key") => InsertError::VersionTaken,
                    _ => InsertError::Other(e.into()),
                }
            }
            _ => InsertError::Other(e.into()),
        })?;
    let positions: HashMap<Uuid, u64> = rows
        .into_iter()
        .map(|(position, id)| (id, u64::try_from(position).unwrap_or(0)))
        .collect();
    // The write boundary: every event came back with a position, in call order.
    let events: Vec<AppendedEvent> = planned
        .iter()
        .map(|p| {
            Ok(AppendedEvent {
                event_id: p.event.event_id,
                stream_id: p.stream_id.clone(),
                stream_version: p.stream_version,
                position: *positions.get(&p.event.event_id).ok_or_else(|| {
                    InsertError::Other(StoreError::Corrupt {
                        position: 0,
                        detail: format!("insert returned no position for {}", p.event.event_id),
                    })
                })?,
            })
        })
        .collect::<Result<_, InsertError>>()?;
    debug_assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    Ok(AppendResult {
        events,
        replayed: false,
    })
}

async fn fetch_heads(
    conn: &mut PgConnection,
    streams: &[&StreamId],
) -> Result<HashMap<StreamId, Head>> {
    let names: Vec<&str> = streams.iter().map(|s| s.as_str()).collect();
    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT s.stream_id, h.stream_version, h.hash FROM unnest($1::text[]) AS s(stream_id) \
         CROSS JOIN LATERAL (SELECT stream_version, hash FROM events e \
                             WHERE e.stream_id = s.stream_id \
                             ORDER BY stream_version DESC LIMIT 1) h",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(stream, version, hash)| {
            Ok((
                StreamId::new(stream)?,
                Head {
                    version: u64::try_from(version).unwrap_or(0),
                    hash: crate::hash::from_column(0, &hash)?,
                },
            ))
        })
        .collect()
}

async fn fetch_stored(
    conn: &mut PgConnection,
    append: &EncodedAppend,
) -> Result<HashMap<Uuid, StoredRef>> {
    let ids: Vec<Uuid> = append
        .event_ids()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows: Vec<(Uuid, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT event_id, stream_id, event_type, payload::text, stream_version, position \
         FROM events WHERE event_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, stream_id, event_type, payload, version, position)| {
            (
                id,
                StoredRef {
                    stream_id,
                    event_type,
                    payload,
                    stream_version: u64::try_from(version).unwrap_or(0),
                    position: u64::try_from(position).unwrap_or(0),
                },
            )
        })
        .collect())
}

/// An append is promised durable when it returns; say so loudly if the server's
/// settings break that promise (they are the operator's to choose, not ours to change).
async fn warn_if_not_durable(pool: &PgPool) -> Result<()> {
    let (synchronous_commit, fsync): (String, String) =
        sqlx::query_as("SELECT current_setting('synchronous_commit'), current_setting('fsync')")
            .fetch_one(pool)
            .await?;
    if synchronous_commit == "off" || fsync == "off" {
        tracing::warn!(
            %synchronous_commit,
            %fsync,
            "Postgres is not configured for durable commits: an acknowledged append can be lost in a crash"
        );
    }
    Ok(())
}

async fn head_position(pool: &PgPool) -> Result<u64> {
    let head: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(position), 0) FROM events \
         WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())",
    )
    .fetch_one(pool)
    .await?;
    Ok(u64::try_from(head).unwrap_or(0))
}

/// Hears other processes' appends and wakes this process's subscribers.
async fn listen(shared: Arc<Shared>) {
    loop {
        match PgListener::connect_with(&shared.pool).await {
            Ok(mut listener) => match listener.listen(NOTIFY_CHANNEL).await {
                Ok(()) => loop {
                    match listener.recv().await {
                        Ok(note) => match note.payload().parse::<u64>() {
                            Ok(position) => shared.signal.advance(position),
                            Err(_) => tracing::warn!(
                                payload = note.payload(),
                                "ignoring a malformed append notification"
                            ),
                        },
                        Err(error) => {
                            tracing::warn!(%error, "lost the LISTEN connection; reconnecting");
                            break;
                        }
                    }
                },
                Err(error) => tracing::warn!(%error, "LISTEN failed; retrying"),
            },
            Err(error) => tracing::warn!(%error, "cannot open a LISTEN connection; retrying"),
        }
        tokio::time::sleep(LISTENER_RECONNECT_DELAY).await;
    }
}

/// Announces this process's appends to other processes, one NOTIFY for however many
/// appends happened since the last one.
async fn announce_appends(shared: Arc<Shared>) {
    loop {
        shared.announce.notified().await;
        let head = shared.signal.current().to_string();
        if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(&head)
            .execute(&shared.pool)
            .await
        {
            tracing::warn!(%error, "could not announce appends; other processes will poll");
            tokio::time::sleep(LISTENER_RECONNECT_DELAY).await;
        }
    }
}

#[derive(sqlx::FromRow)]
struct PgRow {
    position: i64,
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    schema_version: i32,
    payload: String,
    metadata: String,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    hash: Vec<u8>,
}

impl PgRow {
    fn into_event(self) -> Result<RecordedEvent> {
        StoredRow {
            position: self.position,
            event_id: self.event_id,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_type: self.event_type,
            schema_version: i64::from(self.schema_version),
            payload: self.payload,
            metadata: self.metadata,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            hash: self.hash,
        }
        .into_event()
    }
}

#[async_trait]
impl EventStore for PostgresEventStore {
    async fn append_many(&self, appends: Vec<StreamAppend>) -> Result<AppendResult> {
        self.inner
            .appends
            .submit(EncodedAppend::encode(appends)?)
            .await
    }

    async fn read_stream(
        &self,
        stream_id: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        check_page(limit)?;
        let rows: Vec<PgRow> = sqlx::query_as(
            "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
             payload::text AS payload, metadata::text AS metadata, occurred_at, recorded_at, hash \
             FROM events WHERE stream_id = $1 AND stream_version >= $2 \
             ORDER BY stream_version LIMIT $3",
        )
        .bind(stream_id.as_str())
        .bind(to_i64(from_version))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.inner.shared.pool)
        .await?;
        rows.into_iter().map(PgRow::into_event).collect()
    }

    async fn find_events(&self, event_ids: &[Uuid]) -> Result<Vec<RecordedEvent>> {
        check_page(event_ids.len().max(1))?;
        let rows: Vec<PgRow> = sqlx::query_as(
            "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
             payload::text AS payload, metadata::text AS metadata, occurred_at, recorded_at, hash \
             FROM events WHERE event_id = ANY($1) ORDER BY position",
        )
        .bind(event_ids)
        .fetch_all(&self.inner.shared.pool)
        .await?;
        rows.into_iter().map(PgRow::into_event).collect()
    }

    async fn read_all(&self, after_position: u64, limit: usize) -> Result<Vec<RecordedEvent>> {
        check_page(limit)?;
        // Gap safety: see the module notes. The page is cut by position first and
        // filtered by transaction after: since positions and transaction ids rise
        // together, the filter only ever removes a tail, so the result is still a
        // prefix — and the planner walks the primary key instead of sorting every
        // later row (with the filter inside, it misjudged big pages and sorted the
        // whole rest of the log for each one).
        let rows: Vec<PgRow> = sqlx::query_as(
            "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, \
             payload::text AS payload, metadata::text AS metadata, occurred_at, recorded_at, hash \
             FROM (SELECT * FROM events WHERE position > $1 ORDER BY position LIMIT $2) AS page \
             WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY position",
        )
        .bind(to_i64(after_position))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.inner.shared.pool)
        .await?;
        rows.into_iter().map(PgRow::into_event).collect()
    }

    async fn head_position(&self) -> Result<u64> {
        head_position(&self.inner.shared.pool).await
    }

    async fn last_position(&self) -> Result<u64> {
        let last: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM events")
            .fetch_one(&self.inner.shared.pool)
            .await?;
        Ok(u64::try_from(last).unwrap_or(0))
    }

    fn subscribe(&self) -> Wakeups {
        self.inner.shared.signal.subscribe()
    }

    async fn save_snapshots(&self, snapshots: &[Snapshot]) -> Result<()> {
        check_snapshots(snapshots)?;
        let mut tx = self.inner.shared.pool.begin().await?;
        for snapshot in snapshots {
            sqlx::query(
                "INSERT INTO snapshots (stream_id, stream_version, state) VALUES ($1, $2, $3) \
                 ON CONFLICT (stream_id) DO UPDATE SET stream_version = excluded.stream_version, \
                 state = excluded.state, taken_at = now() \
                 WHERE excluded.stream_version >= snapshots.stream_version",
            )
            .bind(snapshot.stream_id.as_str())
            .bind(to_i64(snapshot.stream_version))
            .bind(&snapshot.state)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn load_snapshot(&self, stream_id: &StreamId) -> Result<Option<Snapshot>> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT stream_version, state FROM snapshots WHERE stream_id = $1")
                .bind(stream_id.as_str())
                .fetch_optional(&self.inner.shared.pool)
                .await?;
        Ok(row.map(|(version, state)| Snapshot {
            stream_id: stream_id.clone(),
            stream_version: u64::try_from(version).unwrap_or(0),
            state,
        }))
    }

    async fn skip_positions(&self, n: u64) -> Result<bool> {
        let mut left = n;
        while left > 0 {
            let now = left.min(1_000_000);
            sqlx::query("SELECT tally_reserve_positions($1)")
                .bind(i32::try_from(now).unwrap_or(i32::MAX))
                .execute(&self.inner.shared.pool)
                .await?;
            left -= now;
        }
        Ok(true)
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}
