//! # tally-ledger: the command service
//!
//! Runs a command against one stream: load the state (snapshot + tail, then kept in
//! memory), let the domain decide, append the events with the version decided against,
//! and on a version conflict reload and decide again (bounded). It is the only way
//! state changes, and it never loses or doubles a credit:
//!
//! - **One worker per stream.** Commands to a stream queue to that stream's worker, so
//!   commands from many tasks never race each other on a hot account. The worker takes
//!   every command waiting (up to [`BATCH_COMMANDS_MAX`]), decides them one after the
//!   other against the evolving state, and appends all their events in one atomic
//!   append: a hot account does one commit per batch, not per command. Conflicts only
//!   come from other processes; they reload the state and re-decide the whole batch.
//! - **Idempotent commands.** A command with an id (its own, like `debit:<debit id>`,
//!   see [`Aggregate::command_id`], or else the request's) gets event ids derived from
//!   its stream and id, and records a digest of itself in each event's metadata. The
//!   log refuses a second event with the same id, so an id is applied at most once
//!   however long ago it was used and whatever the state remembers; the service then
//!   finds the original events by their derived ids: same digest, the original outcome
//!   is returned as a replay; another digest is `idempotency_conflict`.
//!   Derived ids are UUIDv8 (name-based), not v7: that is what makes them derivable.
//! - **Recall.** States stay small (an account keeps its open holds, not every id it
//!   ever saw); when a decision needs an older fact, [`Aggregate::recall`] names the
//!   command ids and the service fetches their events by derived id — from this batch
//!   if it decided them, else from the log — and hands them to `decide`.
//! - **Snapshots** every [`SNAPSHOT_EVERY_EVENTS`] events keep a long stream quick to
//!   load in a new process; the worker's memory keeps it quick while it lives. They are
//!   gathered for up to [`SNAPSHOT_FLUSH_EVERY`] and saved together, in one
//!   transaction, off the commands' path: one more commit per flush, not per
//!   snapshot (SQLite has one write lock for appends and snapshots alike).
//!
//! A worker exits after [`WORKER_IDLE`] without commands, so memory follows the set of
//! active streams.

pub mod aggregate;
pub mod workflows;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tally_domain::account;
use tally_domain::values::{HoldId, UserId};
use tally_domain::{Config, DomainError, codec};
use tally_store::{
    EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, Snapshot, StoreError,
    StreamAppend, StreamId,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub use aggregate::{Accounts, Aggregate, Payments, Refunds, Slots, Subscriptions};

/// Most commands one worker decides and appends together.
pub const BATCH_COMMANDS_MAX: usize = 128;
/// Commands waiting for one stream's worker at most; further callers wait to enqueue.
pub const QUEUE_COMMANDS_MAX: usize = 1_024;
/// How often a batch is re-decided after losing a race with another process. Two
/// processes writing one hot stream flat out make the loser lose often (the winner
/// writes its next batch at once); with growing pauses this many attempts take a few
/// seconds at most, and losing them all is vanishingly rare.
pub const COMMAND_ATTEMPTS_MAX: u32 = 64;
/// A snapshot is taken each time a stream passes a multiple of this many events, so a
/// load folds at most this many events after the snapshot.
pub const SNAPSHOT_EVERY_EVENTS: u64 = 50;
/// How long snapshots wait to be saved together.
pub const SNAPSHOT_FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Snapshots waiting to be saved at most (per stream, the newest counts once); more are
/// dropped: a snapshot is a cache, losing one costs a slower load, never a wrong state.
const SNAPSHOTS_WAITING_MAX: usize = 4_096;
/// Most events one command may produce (bounds the replay lookup).
pub const EVENTS_PER_COMMAND_MAX: u32 = 8;
/// A worker with no command for this long exits and forgets its state.
pub const WORKER_IDLE: Duration = Duration::from_secs(30);
/// Longest pause before re-deciding a batch that lost a race with another process.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// A batch at least this large marks a hot stream (see [`HOT_STREAM_PAUSE`]).
pub const HOT_BATCH_COMMANDS: usize = 8;
/// The pause a hot stream's worker takes after each batch, so another process's
/// worker can win a race for the stream.
pub const HOT_STREAM_PAUSE: Duration = Duration::from_millis(1);
/// How long after a lost race a stream's worker keeps pausing after hot batches.
pub const CONTENDED_FOR: Duration = Duration::from_secs(10);
/// Events read per page when loading a stream.
const LOAD_PAGE_EVENTS: usize = 1_000;

/// Why a command did not run.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LedgerError {
    /// The rules refuse it; nothing was appended.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The log failed; nothing of the command was appended.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other processes kept changing the stream; nothing was appended.
    #[error("stream {stream_id} kept changing under {attempts} attempts; try again")]
    Contention {
        /// The stream.
        stream_id: String,
        /// Attempts made.
        attempts: u32,
    },
    /// A stored event this code cannot read.
    #[error(transparent)]
    Decode(#[from] codec::DecodeError),
    /// The service is shutting down.
    #[error("the ledger is shutting down")]
    Closed,
}

impl LedgerError {
    /// The stable error code (API.md) of a refusal, when it is one.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Domain(e) => e.code(),
            Self::Store(StoreError::IdempotencyConflict { .. }) => "idempotency_conflict",
            Self::Store(StoreError::LimitExceeded { .. } | StoreError::InvalidInput(_)) => {
                "validation"
            }
            Self::Store(_) | Self::Decode(_) | Self::Closed => "internal",
            Self::Contention { .. } => "contention",
        }
    }
}

/// One command for one stream.
#[derive(Debug)]
pub struct Request<A: Aggregate> {
    /// Which stream.
    pub key: A::Key,
    /// What to do.
    pub command: A::Command,
    /// An id to make the command idempotent by when it carries none of its own
    /// ([`Aggregate::command_id`] wins when it has one).
    pub command_id: Option<String>,
    /// Who and why, copied onto every event.
    pub metadata: Metadata,
}

/// What a command came to.
#[derive(Clone, Debug)]
pub struct Outcome<V> {
    /// The part of the state the sender is told about, right after the command.
    pub view: V,
    /// The stream's version after it.
    pub version: u64,
    /// The position of the command's last event (for a no-op: of the stream's last).
    pub position: u64,
    /// True when the command had already been applied and this is its original outcome.
    pub replayed: bool,
}

/// A stream's state as loaded, with where it stands in the log.
#[derive(Clone, Debug)]
pub struct Loaded<S> {
    /// The state.
    pub state: S,
    /// The stream's version.
    pub version: u64,
    /// The position of its last event (0 for an empty stream).
    pub position: u64,
}

struct Job<A: Aggregate> {
    request: Request<A>,
    reply: oneshot::Sender<Result<Outcome<A::View>, LedgerError>>,
}

/// A command decided against the stream's latest state in the log (not a worker's),
/// not yet appended: for a workflow that appends it atomically with another stream's
/// ([`workflows::approve_refund`]).
pub struct Prepared<A: Aggregate> {
    /// What to append, with the version decided against; `None`: it changes nothing.
    pub append: Option<StreamAppend>,
    /// What the sender is told once it is appended.
    pub view: A::View,
    /// The stream's version it was decided against.
    pub version: u64,
    /// The position of the stream's last event then.
    pub position: u64,
}

/// The command services of one process, one per kind of stream, made once and shared
/// by everything in the process that writes (the API, the bot, the reactors, the
/// CLI): one worker per stream per process. Clones share the services.
#[derive(Clone)]
pub struct Ledgers {
    /// Accounts: credits and holds.
    pub accounts: Ledger<Accounts>,
    /// Payments.
    pub payments: Ledger<Payments>,
    /// Subscriptions and their slots.
    pub subscriptions: Ledger<Subscriptions>,
    /// Refund requests.
    pub refunds: Ledger<Refunds>,
    /// Ad slots.
    pub slots: Ledger<Slots>,
}

impl Ledgers {
    /// The command services over a store, with the business's configuration.
    pub fn new(store: Arc<dyn EventStore>, config: Arc<Config>) -> Self {
        Self {
            accounts: Ledger::new(store.clone(), config.clone()),
            payments: Ledger::new(store.clone(), config.clone()),
            subscriptions: Ledger::new(store.clone(), config.clone()),
            refunds: Ledger::new(store.clone(), config.clone()),
            slots: Ledger::new(store, config),
        }
    }

    /// The log they write.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.accounts.inner.store
    }

    /// The business's configuration they decide with.
    pub fn config(&self) -> &Arc<Config> {
        &self.accounts.inner.config
    }

    /// Batches re-decided after losing a race with another process, all kinds.
    pub fn retries(&self) -> u64 {
        self.accounts.retries()
            + self.payments.retries()
            + self.subscriptions.retries()
            + self.refunds.retries()
            + self.slots.retries()
    }

    /// Batches re-decided because the log had moved past a worker's state, all kinds.
    pub fn refreshes(&self) -> u64 {
        self.accounts.refreshes()
            + self.payments.refreshes()
            + self.subscriptions.refreshes()
            + self.refunds.refreshes()
            + self.slots.refreshes()
    }
}

/// The command service for one kind of stream.
pub struct Ledger<A: Aggregate> {
    inner: Arc<Inner<A>>,
}

impl<A: Aggregate> Clone for Ledger<A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<A: Aggregate> {
    store: Arc<dyn EventStore>,
    config: Arc<Config>,
    workers: Mutex<HashMap<A::Key, mpsc::Sender<Job<A>>>>,
    retries: AtomicU64,
    refreshes: AtomicU64,
    snapshots: std::sync::OnceLock<mpsc::Sender<Snapshot>>,
}

impl<A: Aggregate> Ledger<A> {
    /// A service over a store, with the business's configuration.
    pub fn new(store: Arc<dyn EventStore>, config: Arc<Config>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                workers: Mutex::new(HashMap::new()),
                retries: AtomicU64::new(0),
                refreshes: AtomicU64::new(0),
                snapshots: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The stream a key names.
    pub fn stream_id(key: &A::Key) -> Result<StreamId, LedgerError> {
        Ok(StreamId::new(format!("{}-{key}", A::STREAM_PREFIX))?)
    }

    /// Runs one command: decided after every command queued before it on its stream,
    /// appended before this returns.
    pub async fn execute(&self, request: Request<A>) -> Result<Outcome<A::View>, LedgerError> {
        let result = self.execute_queued(request).await;
        let outcome = match &result {
            Ok(outcome) if outcome.replayed => "replayed",
            Ok(_) => "applied",
            Err(error) => error.code(),
        };
        metrics::counter!("tally_commands_total", "aggregate" => A::STREAM_PREFIX, "outcome" => outcome)
            .increment(1);
        result
    }

    async fn execute_queued(&self, request: Request<A>) -> Result<Outcome<A::View>, LedgerError> {
        let (reply, answer) = oneshot::channel();
        let mut job = Job { request, reply };
        // A worker that just went idle closes its queue; the job then goes to a new one.
        for _ in 0..2 {
            let sender = self.worker(&job.request.key);
            match sender.send(job).await {
                Ok(()) => return answer.await.map_err(|_| LedgerError::Closed)?,
                Err(mpsc::error::SendError(returned)) => {
                    self.forget_worker(&returned.request.key, &sender);
                    job = returned;
                }
            }
        }
        Err(LedgerError::Closed)
    }

    /// How many batches were re-decided after losing a race with another writer.
    pub fn retries(&self) -> u64 {
        self.inner.retries.load(Ordering::Relaxed)
    }

    /// How many times a batch about to be answered with no append (refusals, no-ops,
    /// replays) found that the log had moved past the worker's state, and was decided
    /// again on the newer state.
    pub fn refreshes(&self) -> u64 {
        self.inner.refreshes.load(Ordering::Relaxed)
    }

    /// Decides a command against the stream's latest state in the log, bypassing the
    /// workers, without appending it: the caller appends [`Prepared::append`] (alone or
    /// with other streams' in one atomic append) and decides again on a version
    /// conflict. A refusal is the log's answer as it stands now.
    pub async fn prepare(&self, request: &Request<A>) -> Result<Prepared<A>, LedgerError> {
        let stream_id = Self::stream_id(&request.key)?;
        let loaded = self.load(&request.key).await?;
        let wanted = A::recall(&loaded.state, &request.command);
        let past = match wanted.is_empty() {
            true => Vec::new(),
            false => recall_from_log::<A>(&self.inner, &stream_id, &wanted).await?,
        };
        let now = tally_store::event::now_micros();
        let decided = A::decide(
            &loaded.state,
            &request.command,
            &past,
            now,
            &self.inner.config,
        )?;
        if decided.is_empty() {
            return Ok(Prepared {
                append: None,
                view: A::view(&loaded.state, &request.command),
                version: loaded.version,
                position: loaded.position,
            });
        }
        let events = encode(&stream_id, request, &decided, now)?;
        let mut state = loaded.state;
        for event in &decided {
            state = A::evolve(state, event, now);
        }
        Ok(Prepared {
            append: Some(StreamAppend {
                stream_id,
                expected: ExpectedVersion::Exact(loaded.version),
                events,
            }),
            view: A::view(&state, &request.command),
            version: loaded.version,
            position: loaded.position,
        })
    }

    /// The log this service writes.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// Loads a stream's state from the log (snapshot + tail), bypassing the workers.
    pub async fn load(&self, key: &A::Key) -> Result<Loaded<A::State>, LedgerError> {
        load::<A>(&self.inner, key).await
    }

    /// The events of these earlier commands of a stream, in log order, with their
    /// business time (what [`Aggregate::recall`] asks for).
    pub async fn recall(
        &self,
        key: &A::Key,
        command_ids: &[String],
    ) -> Result<Vec<(A::Event, DateTime<Utc>)>, LedgerError> {
        let stream_id = Self::stream_id(key)?;
        recall_from_log::<A>(&self.inner, &stream_id, command_ids).await
    }

    fn worker(&self, key: &A::Key) -> mpsc::Sender<Job<A>> {
        let mut workers = self.inner.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = workers.get(key).filter(|s| !s.is_closed()) {
            return sender.clone();
        }
        let (sender, jobs) = mpsc::channel(QUEUE_COMMANDS_MAX);
        workers.insert(key.clone(), sender.clone());
        tokio::spawn(run_worker(self.inner.clone(), key.clone(), jobs));
        sender
    }

    fn forget_worker(&self, key: &A::Key, sender: &mpsc::Sender<Job<A>>) {
        let mut workers = self.inner.workers.lock().unwrap_or_else(|e| e.into_inner());
        if workers.get(key).is_some_and(|s| s.same_channel(sender)) {
            workers.remove(key);
        }
    }
}

impl Ledger<Accounts> {
    /// The account a hold id belongs to, from the log: the stream of its placing event,
    /// whose id derives from the hold id alone (hold ids are ledger-wide). Current in
    /// every process, after any restart; `None` if no hold has that id.
    pub async fn hold_account(&self, hold_id: &HoldId) -> Result<Option<UserId>, LedgerError> {
        let placed = event_id_in(Accounts::STREAM_PREFIX, &account::hold_ref(hold_id), 0);
        let found = self.inner.store.find_events(&[placed]).await?;
        Ok(found.first().and_then(|event| {
            event
                .stream_id
                .as_str()
                .strip_prefix("account-")
                .and_then(|user| user.parse::<i64>().ok())
                .and_then(|user| UserId::new(user).ok())
        }))
    }
}

async fn run_worker<A: Aggregate>(
    inner: Arc<Inner<A>>,
    key: A::Key,
    mut jobs: mpsc::Receiver<Job<A>>,
) {
    let mut cached: Option<Loaded<A::State>> = None;
    let mut batch = Vec::with_capacity(BATCH_COMMANDS_MAX);
    // Until when this stream counts as written by another process too.
    let mut contended_until: Option<std::time::Instant> = None;
    loop {
        match tokio::time::timeout(WORKER_IDLE, jobs.recv_many(&mut batch, BATCH_COMMANDS_MAX))
            .await
        {
            Ok(0) => return,
            Ok(_) => {
                // As in group commit: let callers just answered enqueue their next
                // command so it joins this batch.
                tokio::task::yield_now().await;
                while batch.len() < BATCH_COMMANDS_MAX {
                    match jobs.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let hot = batch.len() >= HOT_BATCH_COMMANDS;
                if run_batch(&inner, &key, &mut cached, &mut batch).await {
                    contended_until = Some(std::time::Instant::now() + CONTENDED_FOR);
                }
                // A busy stream another process writes too: that process's worker must
                // read past this commit and append before the next one, so a short
                // pause after each batch leaves it the window (without it, a process
                // writing flat out makes the other lose every race). Only while races
                // are being lost here: a stream one process writes pays nothing, and
                // commands that queue meanwhile join the next batch.
                if hot && contended_until.is_some_and(|until| std::time::Instant::now() < until) {
                    tokio::time::sleep(HOT_STREAM_PAUSE).await;
                }
            }
            Err(_idle) => {
                // Close first, under the map's lock, then finish what slipped in: no
                // job is ever left in a queue nobody reads.
                {
                    let mut workers = inner.workers.lock().unwrap_or_else(|e| e.into_inner());
                    jobs.close();
                    if workers.get(&key).is_some_and(|s| s.is_closed()) {
                        workers.remove(&key);
                    }
                }
                while let Ok(job) = jobs.try_recv() {
                    batch.push(job);
                }
                if !batch.is_empty() {
                    run_batch(&inner, &key, &mut cached, &mut batch).await;
                }
                return;
            }
        }
    }
}

/// What deciding one job came to, before the append.
enum Decision<V> {
    /// New events at these indexes of the batch's events; the view after them.
    Append(std::ops::Range<usize>, V),
    /// Nothing to append; the view now.
    NoOp(V),
    /// Refused; maybe a replay, if the command has an id.
    Refused(DomainError),
    /// Answered already.
    Done(Result<Outcome<V>, LedgerError>),
    /// The same request as the batch's command at this index: answered as its replay.
    Repeat(usize),
}

/// Decides, appends and answers a batch; returns whether it lost a race for its
/// stream to another process on the way.
async fn run_batch<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    key: &A::Key,
    cached: &mut Option<Loaded<A::State>>,
    batch: &mut Vec<Job<A>>,
) -> bool {
    let mut raced = false;
    let results = decide_and_append(inner, key, cached, batch, &mut raced).await;
    for (job, result) in batch.drain(..).zip(results) {
        let _ = job.reply.send(result);
    }
    raced
}

/// `raced` is set when an append lost a race for the stream to another process.
async fn decide_and_append<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    key: &A::Key,
    cached: &mut Option<Loaded<A::State>>,
    batch: &[Job<A>],
    raced: &mut bool,
) -> Vec<Result<Outcome<A::View>, LedgerError>> {
    let stream_id = match Ledger::<A>::stream_id(key) {
        Ok(id) => id,
        Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
    };
    let mut attempt = 0;
    let mut spare: Option<Loaded<A::State>> = None;
    // Whether the state about to be decided on was read from the log after every
    // command of this batch was received (a worker's cached state may predate them).
    let mut current = false;
    loop {
        let loaded = match (cached.take(), spare.take()) {
            (Some(loaded), _) => loaded,
            // After a lost race: the state before the lost attempt's decisions, with
            // the winner's events folded in (one indexed read, not a whole load: the
            // shorter the loser's window, the likelier its next append wins).
            (None, Some(before)) => {
                current = true;
                match fold_tail::<A>(inner, &stream_id, before).await {
                    Ok((loaded, _)) => loaded,
                    Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
                }
            }
            (None, None) => {
                current = true;
                match load::<A>(inner, key).await {
                    Ok(loaded) => loaded,
                    Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
                }
            }
        };
        let now = tally_store::event::now_micros();
        // Decided in place: if the append fails, the state is reloaded from the log.
        // Once a race was lost, keep the state from before deciding: a further loss
        // folds the winner's events into it instead of loading the stream again.
        let kept = (attempt > 0).then(|| loaded.clone());
        let Loaded {
            mut state,
            version: loaded_version,
            position: loaded_position,
        } = loaded;
        let mut events: Vec<NewEvent> = Vec::new();
        let mut decisions = Vec::with_capacity(batch.len());
        let mut first_with_id: HashMap<String, usize> = HashMap::new();
        for (index, job) in batch.iter().enumerate() {
            let command = &job.request.command;
            // The same command id twice in one batch (a client retrying while its
            // first request waits): the second is answered as the first, or refused
            // as a conflict when it asks something else under that id.
            if let Some(command_id) = effective_command_id(&job.request) {
                match first_with_id.entry(command_id) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        let first = *first.get();
                        decisions.push(same_request(&batch[first].request, &job.request, first));
                        continue;
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(index);
                    }
                }
            }
            let wanted = A::recall(&state, command);
            let past = match wanted.is_empty() {
                true => Vec::new(),
                false => match recall::<A>(inner, &stream_id, &wanted, &events).await {
                    Ok(past) => past,
                    Err(e) => {
                        decisions.push(Decision::Done(Err(e)));
                        continue;
                    }
                },
            };
            decisions.push(
                match A::decide(&state, command, &past, now, &inner.config) {
                    Ok(decided) if decided.is_empty() => Decision::NoOp(A::view(&state, command)),
                    Ok(decided) => match encode(&stream_id, &job.request, &decided, now) {
                        Ok(encoded) => {
                            for event in &decided {
                                state = A::evolve(state, event, now);
                            }
                            let start = events.len();
                            events.extend(encoded);
                            Decision::Append(start..events.len(), A::view(&state, command))
                        }
                        Err(e) => Decision::Done(Err(e)),
                    },
                    Err(refusal) => Decision::Refused(refusal),
                },
            );
        }

        if events.is_empty() {
            // Nothing to append: every answer is a refusal, a no-op or a replay, and
            // none may rest on a state the log has moved past. Unless the state was
            // read after these commands arrived, read the stream past its version (an
            // indexed read that finds nothing in the common case):
            // - nothing there: the log's stream stood at exactly this version at the
            //   moment of that read, which lies inside every request's lifetime (after
            //   it was received, before it is answered). So each answer is the one the
            //   log gives at that moment. An event another process commits after the
            //   read is ordered after these answers, as if it had arrived later, which
            //   it could have: the answers stay linearizable. (Reads see every
            //   transaction committed before they start, on both backends.)
            // - newer events: fold them and decide the batch again on the newer state.
            // A batch that appends needs no such read: the append's expected version
            // proves, at its commit, that the state was the latest.
            if !current {
                let stale = Loaded {
                    state,
                    version: loaded_version,
                    position: loaded_position,
                };
                match fold_tail::<A>(inner, &stream_id, stale).await {
                    Ok((fresh, 0)) => {
                        state = fresh.state;
                    }
                    Ok((fresh, _newer)) => {
                        inner.refreshes.fetch_add(1, Ordering::Relaxed);
                        *cached = Some(fresh);
                        current = true;
                        continue;
                    }
                    Err(e) => return batch.iter().map(|_| Err(e.clone())).collect(),
                }
            }
            let answers = answer(
                inner,
                &stream_id,
                batch,
                decisions,
                &state,
                loaded_version,
                loaded_position,
                &[],
            )
            .await;
            *cached = Some(Loaded {
                state,
                version: loaded_version,
                position: loaded_position,
            });
            return answers;
        }
        let started = std::time::Instant::now();
        let appended = inner
            .store
            .append(&stream_id, ExpectedVersion::Exact(loaded_version), events)
            .await;
        metrics::histogram!("tally_append_seconds", "aggregate" => A::STREAM_PREFIX)
            .record(started.elapsed().as_secs_f64());
        match appended {
            Ok(result) if !result.replayed => {
                let version = result.stream_version(&stream_id).unwrap_or(loaded_version);
                let position = result.position();
                maybe_snapshot::<A>(inner, &stream_id, loaded_version, version, &state, position);
                let positions: Vec<u64> = result.events.iter().map(|e| e.position).collect();
                let answers = answer(
                    inner, &stream_id, batch, decisions, &state, version, position, &positions,
                )
                .await;
                *cached = Some(Loaded {
                    state,
                    version,
                    position,
                });
                return answers;
            }
            // Another process wrote the stream: reload and decide the batch again.
            Err(StoreError::WrongExpectedVersion { .. }) => {
                attempt += 1;
                if attempt >= COMMAND_ATTEMPTS_MAX {
                    return batch
                        .iter()
                        .map(|_| {
                            Err(LedgerError::Contention {
                                stream_id: stream_id.to_string(),
                                attempts: COMMAND_ATTEMPTS_MAX,
                            })
                        })
                        .collect();
                }
                inner.retries.fetch_add(1, Ordering::Relaxed);
                *raced = true;
                spare = kept;
                // First catch up and try again at once (the winner pauses after a hot
                // batch: that is the window); losing again, pause, growing, so two
                // losers do not keep colliding.
                if attempt > 2 {
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
            // The log holds these derived event ids already: commands applied before
            // (re-sent, or run by another process), or an id re-used for something
            // else. The state decided here is not the log's (and is never cached or
            // snapshotted). Decide the commands one at a time, so only those are
            // answered from the log: as a replay when the digest matches, else refused.
            Ok(_) | Err(StoreError::IdempotencyConflict { .. }) => {
                if batch.len() > 1 {
                    let mut answers: Vec<Result<Outcome<A::View>, LedgerError>> =
                        Vec::with_capacity(batch.len());
                    let mut first_with_id: HashMap<String, usize> = HashMap::new();
                    for (index, job) in batch.iter().enumerate() {
                        // A repeat within the batch is answered as its first, as above.
                        if let Some(command_id) = effective_command_id(&job.request) {
                            if let Some(&first) = first_with_id.get(&command_id) {
                                let repeat = match same_request(
                                    &batch[first].request,
                                    &job.request,
                                    first,
                                ) {
                                    Decision::Repeat(first) => as_replay(&answers[first]),
                                    Decision::Done(result) => result,
                                    _ => unreachable!("same_request repeats or refuses"),
                                };
                                answers.push(repeat);
                                continue;
                            }
                            first_with_id.insert(command_id, index);
                        }
                        let one = std::slice::from_ref(job);
                        answers.extend(
                            Box::pin(decide_and_append(inner, key, cached, one, raced)).await,
                        );
                    }
                    return answers;
                }
                let fresh = match load::<A>(inner, key).await {
                    Ok(fresh) => fresh,
                    Err(e) => return vec![Err(e)],
                };
                let refusal = DomainError::IdempotencyConflict(
                    "this id was already used for a different request".into(),
                );
                let answer = replay(
                    inner,
                    &stream_id,
                    &batch[0].request,
                    refusal,
                    &fresh.state,
                    fresh.version,
                )
                .await;
                *cached = Some(fresh);
                return vec![answer];
            }
            Err(e) => {
                return batch
                    .iter()
                    .map(|_| Err(LedgerError::Store(e.clone())))
                    .collect();
            }
        }
    }
}

/// A command whose id an earlier command of the same batch carries: a repeat of it
/// when the request is the same, else a conflict.
fn same_request<A: Aggregate>(
    first: &Request<A>,
    again: &Request<A>,
    first_index: usize,
) -> Decision<A::View> {
    let Some(command_id) = effective_command_id(again) else {
        return Decision::Repeat(first_index);
    };
    let keys = (
        idempotency_key::<A>(&command_id, &first.command),
        idempotency_key::<A>(&command_id, &again.command),
    );
    match keys {
        (Ok(first), Ok(again)) if first == again => Decision::Repeat(first_index),
        (Ok(_), Ok(_)) => Decision::Done(Err(DomainError::IdempotencyConflict(format!(
            "{command_id} was already used for a different request"
        ))
        .into())),
        (Err(e), _) | (_, Err(e)) => Decision::Done(Err(e)),
    }
}

/// The answer to a repeat: the first's, as a replay.
fn as_replay<V: Clone>(first: &Result<Outcome<V>, LedgerError>) -> Result<Outcome<V>, LedgerError> {
    first.clone().map(|outcome| Outcome {
        replayed: true,
        ..outcome
    })
}

#[allow(clippy::too_many_arguments)]
async fn answer<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    batch: &[Job<A>],
    decisions: Vec<Decision<A::View>>,
    state: &A::State,
    version: u64,
    position: u64,
    positions: &[u64],
) -> Vec<Result<Outcome<A::View>, LedgerError>> {
    let outcome = |view, position| Outcome {
        view,
        version,
        position,
        replayed: false,
    };
    let mut answers: Vec<Result<Outcome<A::View>, LedgerError>> = Vec::with_capacity(batch.len());
    for (job, decision) in batch.iter().zip(decisions) {
        let answered = match decision {
            Decision::Append(range, view) => Ok(outcome(
                view,
                range
                    .end
                    .checked_sub(1)
                    .and_then(|i| positions.get(i))
                    .copied()
                    .unwrap_or(position),
            )),
            Decision::NoOp(view) => match applied_before(inner, stream_id, &job.request).await {
                Ok(Some(original)) => {
                    match replayed_view(inner, stream_id, state, &job.request.command).await {
                        Ok(recalled) => Ok(Outcome {
                            view: recalled.unwrap_or(view),
                            version,
                            position: original,
                            replayed: true,
                        }),
                        Err(e) => Err(e),
                    }
                }
                Ok(None) => Ok(outcome(view, position)),
                Err(e) => Err(e),
            },
            Decision::Done(result) => result,
            Decision::Repeat(first) => as_replay(&answers[first]),
            Decision::Refused(refusal) => {
                replay(inner, stream_id, &job.request, refusal, state, version).await
            }
        };
        answers.push(answered);
    }
    answers
}

/// The events a command id filed in this stream, and what a replay's answer needs
/// to show ([`Aggregate::replay_recall`]). An id the log holds in another stream (a
/// ledger-wide id, like a hold id, used on another account) is a conflict.
async fn original<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    request: &Request<A>,
    command_id: &str,
) -> Result<Vec<RecordedEvent>, LedgerError> {
    let ids = event_ids::<A>(stream_id, &[command_id.to_string()]);
    let found = inner.store.find_events(&ids).await?;
    if found.iter().any(|e| e.stream_id != *stream_id) {
        return Err(DomainError::IdempotencyConflict(format!(
            "{command_id} was already used by another {}",
            A::STREAM_PREFIX
        ))
        .into());
    }
    if found.is_empty() {
        return Ok(found);
    }
    let key = idempotency_key::<A>(command_id, &request.command)?;
    if found
        .iter()
        .any(|e| e.metadata.idempotency_key.as_deref() != Some(key.as_str()))
    {
        return Err(DomainError::IdempotencyConflict(format!(
            "{command_id} was already used for a different request"
        ))
        .into());
    }
    Ok(found)
}

/// A command with an id that changes nothing may be a re-send of one applied before
/// (the domain answers the same request again with no events): if the log holds
/// events filed under its id, it is a replay and answers with the original's position;
/// if those came from another request under the same id, it is a conflict.
async fn applied_before<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    request: &Request<A>,
) -> Result<Option<u64>, LedgerError> {
    let Some(command_id) = effective_command_id(request) else {
        return Ok(None);
    };
    let found = original(inner, stream_id, request, &command_id).await?;
    Ok(found.last().map(|last| last.position))
}

/// What a replayed command's answer shows when the state no longer holds what the
/// command did (a hold closed long ago): rebuilt from the log. `None`: the state's
/// own view shows it.
async fn replayed_view<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    state: &A::State,
    command: &A::Command,
) -> Result<Option<A::View>, LedgerError> {
    let wanted = A::replay_recall(state, command);
    if wanted.is_empty() {
        return Ok(None);
    }
    let past = recall_from_log::<A>(inner, stream_id, &wanted).await?;
    Ok(Some(A::replay_view(state, command, &past)))
}

/// A refused command that has an id may have been applied before: find its events by
/// their derived ids and compare digests. The answer shows what the command did, from
/// the log when the state no longer holds it (a hold closed long ago).
async fn replay<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    request: &Request<A>,
    refusal: DomainError,
    state: &A::State,
    version: u64,
) -> Result<Outcome<A::View>, LedgerError> {
    let Some(command_id) = effective_command_id(request) else {
        return Err(refusal.into());
    };
    let found = match original(inner, stream_id, request, &command_id).await {
        // The id was used for another request, and the rules refuse this one as a
        // conflict of their own (a provider's charge reported with another amount):
        // their word is the more precise.
        Err(LedgerError::Domain(DomainError::IdempotencyConflict(_)))
            if matches!(refusal, DomainError::PaymentConflict(_)) =>
        {
            return Err(refusal.into());
        }
        found => found?,
    };
    let Some(last) = found.last() else {
        return Err(refusal.into());
    };
    let view = replayed_view(inner, stream_id, state, &request.command)
        .await?
        .unwrap_or_else(|| A::view(state, &request.command));
    Ok(Outcome {
        view,
        version,
        position: last.position,
        replayed: true,
    })
}
fn encode<A: Aggregate>(
    stream_id: &StreamId,
    request: &Request<A>,
    events: &[A::Event],
    now: DateTime<Utc>,
) -> Result<Vec<NewEvent>, LedgerError> {
    if events.len() > EVENTS_PER_COMMAND_MAX as usize {
        return Err(DomainError::Validation("a command produced too many events".into()).into());
    }
    let mut metadata = request.metadata.clone();
    let command_id = effective_command_id(request);
    if let Some(command_id) = &command_id {
        metadata.idempotency_key = Some(idempotency_key::<A>(command_id, &request.command)?);
    }
    Ok(events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let (event_type, schema_version, payload) = codec::encode(event);
            let event_id = match &command_id {
                Some(command_id) => derived_event_id::<A>(stream_id, command_id, i as u32),
                None => Uuid::now_v7(),
            };
            NewEvent {
                event_id,
                event_type,
                schema_version,
                payload,
                metadata: metadata.clone(),
                occurred_at: now,
            }
        })
        .collect())
}

/// The id a request is idempotent by: the command's own, else the request's.
fn effective_command_id<A: Aggregate>(request: &Request<A>) -> Option<String> {
    A::command_id(&request.command).or_else(|| request.command_id.clone())
}

/// Every event id the commands `command_ids` may have produced.
fn event_ids<A: Aggregate>(stream_id: &StreamId, command_ids: &[String]) -> Vec<Uuid> {
    command_ids
        .iter()
        .flat_map(|id| {
            (0..EVENTS_PER_COMMAND_MAX).map(move |i| derived_event_id::<A>(stream_id, id, i))
        })
        .collect()
}

/// The id of the `index`-th event of a command: derived from the stream and the
/// command id, or, for an id unique in the whole ledger ([`Aggregate::ledger_wide`]),
/// from the kind of stream and the command id, so the log refuses it in a second
/// stream as it refuses it twice in one.
fn derived_event_id<A: Aggregate>(stream_id: &StreamId, command_id: &str, index: u32) -> Uuid {
    match A::ledger_wide(command_id) {
        true => event_id_in(A::STREAM_PREFIX, command_id, index),
        false => event_id(stream_id, command_id, index),
    }
}

/// The events of earlier commands, for a decision: those already in the log, then those
/// decided earlier in this batch (`pending`, not appended yet).
async fn recall<A: Aggregate>(
    inner: &Inner<A>,
    stream_id: &StreamId,
    command_ids: &[String],
    pending: &[NewEvent],
) -> Result<Vec<(A::Event, DateTime<Utc>)>, LedgerError> {
    let mut past = recall_from_log::<A>(inner, stream_id, command_ids).await?;
    if !pending.is_empty() {
        let ids = event_ids::<A>(stream_id, command_ids);
        for event in pending.iter().filter(|e| ids.contains(&e.event_id)) {
            let decoded =
                codec::decode_ref(&event.event_type, event.schema_version, &event.payload)?;
            past.push((decoded, event.occurred_at));
        }
    }
    Ok(past)
}

async fn recall_from_log<A: Aggregate>(
    inner: &Inner<A>,
    stream_id: &StreamId,
    command_ids: &[String],
) -> Result<Vec<(A::Event, DateTime<Utc>)>, LedgerError> {
    let found = inner
        .store
        .find_events(&event_ids::<A>(stream_id, command_ids))
        .await?;
    // A ledger-wide id is found in the one stream that holds it: not this one's past.
    found
        .into_iter()
        .filter(|recorded| recorded.stream_id == *stream_id)
        .map(|recorded| {
            let event = codec::decode(
                &recorded.event_type,
                recorded.schema_version,
                recorded.payload,
            )?;
            Ok((event, recorded.occurred_at))
        })
        .collect()
}

/// A random pause, growing with the attempt, at most [`RETRY_BACKOFF_MAX`].
pub(crate) fn backoff(attempt: u32) -> Duration {
    // The random bits of a UUIDv7 are random enough to spread two processes apart.
    let random = u64::from(Uuid::now_v7().as_bytes()[15]) + 1;
    let ceiling = (1u64 << attempt.min(6)).saturating_mul(1_000);
    Duration::from_micros(ceiling * random / 256).min(RETRY_BACKOFF_MAX)
}

/// The id of the `index`-th event of a command in a stream: the same for every retry
/// of it.
pub fn event_id(stream_id: &StreamId, command_id: &str, index: u32) -> Uuid {
    event_id_in(stream_id.as_str(), command_id, index)
}

/// The id of the `index`-th event of a command whose id is unique within `scope` (a
/// stream's name, or a kind of stream for ledger-wide ids: `account` never names a
/// stream, `account-42` does).
fn event_id_in(scope: &str, command_id: &str, index: u32) -> Uuid {
    let mut h = Sha256::new();
    h.update(b"tally.command.v1\0");
    h.update(scope.as_bytes());
    h.update(b"\0");
    h.update(command_id.as_bytes());
    h.update(b"\0");
    h.update(index.to_be_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// `<command id>:<sha256 of the command>`: what tells a replay from a re-used id.
fn idempotency_key<A: Aggregate>(
    command_id: &str,
    command: &A::Command,
) -> Result<String, LedgerError> {
    let body = A::request_digest(command)
        .map_err(|e| DomainError::Validation(format!("command does not serialise: {e}")))?;
    let digest = Sha256::digest(&body);
    let mut key = String::with_capacity(command_id.len() + 65);
    key.push_str(command_id);
    key.push(':');
    for byte in digest {
        let _ = write!(key, "{byte:02x}");
    }
    Ok(key)
}

fn maybe_snapshot<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    before: u64,
    after: u64,
    state: &A::State,
    position: u64,
) {
    if before / SNAPSHOT_EVERY_EVENTS == after / SNAPSHOT_EVERY_EVENTS {
        return;
    }
    let Ok(bytes) = serde_json::to_vec(&(state, position)) else {
        return;
    };
    if bytes.len() > tally_store::limits::SNAPSHOT_BYTES_MAX {
        return;
    }
    let snapshot = Snapshot {
        stream_id: stream_id.clone(),
        stream_version: after,
        state: bytes,
    };
    let sender = inner.snapshots.get_or_init(|| {
        let (sender, waiting) = mpsc::channel(SNAPSHOTS_WAITING_MAX);
        tokio::spawn(save_snapshots(inner.store.clone(), waiting));
        sender
    });
    // A full queue drops the snapshot: a cache, never a reason to slow a command.
    let _ = sender.try_send(snapshot);
}

/// Saves the snapshots sent to it, gathered for [`SNAPSHOT_FLUSH_EVERY`], newest per
/// stream, in one transaction per flush; exits when every sender is gone.
async fn save_snapshots(store: Arc<dyn EventStore>, mut waiting: mpsc::Receiver<Snapshot>) {
    let mut received = Vec::new();
    loop {
        if waiting
            .recv_many(&mut received, SNAPSHOTS_WAITING_MAX)
            .await
            == 0
        {
            return;
        }
        tokio::time::sleep(SNAPSHOT_FLUSH_EVERY).await;
        while received.len() < SNAPSHOTS_WAITING_MAX {
            match waiting.try_recv() {
                Ok(snapshot) => received.push(snapshot),
                Err(_) => break,
            }
        }
        let mut newest: HashMap<StreamId, Snapshot> = HashMap::new();
        for snapshot in received.drain(..) {
            match newest.get(&snapshot.stream_id) {
                Some(kept) if kept.stream_version >= snapshot.stream_version => {}
                _ => {
                    newest.insert(snapshot.stream_id.clone(), snapshot);
                }
            }
        }
        let newest: Vec<Snapshot> = newest.into_values().collect();
        for chunk in newest.chunks(tally_store::limits::SNAPSHOTS_PER_SAVE_MAX) {
            if let Err(error) = store.save_snapshots(chunk).await {
                tracing::warn!(%error, snapshots = chunk.len(), "snapshots not saved");
            }
        }
    }
}

async fn load<A: Aggregate>(
    inner: &Inner<A>,
    key: &A::Key,
) -> Result<Loaded<A::State>, LedgerError> {
    let stream_id = Ledger::<A>::stream_id(key)?;
    let mut loaded = Loaded {
        state: A::initial(key),
        version: 0,
        position: 0,
    };
    if let Some(snapshot) = inner.store.load_snapshot(&stream_id).await? {
        // An unreadable snapshot (older code's state shape) is ignored: replay instead.
        if let Ok((state, position)) = serde_json::from_slice::<(A::State, u64)>(&snapshot.state) {
            loaded = Loaded {
                state,
                version: snapshot.stream_version,
                position,
            };
        }
    }
    Ok(fold_tail::<A>(inner, &stream_id, loaded).await?.0)
}

/// Folds the stream's events past `loaded.version` into it; returns the newer state
/// and how many events it folded.
async fn fold_tail<A: Aggregate>(
    inner: &Inner<A>,
    stream_id: &StreamId,
    mut loaded: Loaded<A::State>,
) -> Result<(Loaded<A::State>, usize), LedgerError> {
    let mut folded = 0;
    loop {
        let page = inner
            .store
            .read_stream(stream_id, loaded.version + 1, LOAD_PAGE_EVENTS)
            .await?;
        let done = page.len() < LOAD_PAGE_EVENTS;
        folded += page.len();
        for recorded in page {
            loaded = fold::<A>(loaded, &recorded)?;
        }
        if done {
            return Ok((loaded, folded));
        }
    }
}

fn fold<A: Aggregate>(
    loaded: Loaded<A::State>,
    recorded: &RecordedEvent,
) -> Result<Loaded<A::State>, LedgerError> {
    let event: A::Event = codec::decode_ref(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.payload,
    )?;
    Ok(Loaded {
        state: A::evolve(loaded.state, &event, recorded.occurred_at),
        version: recorded.stream_version,
        position: recorded.position,
    })
}
