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
pub mod checkout;
mod clock;
mod idempotency;
mod loading;
mod snapshots;
mod worker;
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

pub use aggregate::{Accounts, Aggregate, Campaigns, Payments, Refunds, Slots, Subscriptions};
pub use clock::Clock;
pub use idempotency::event_id;
use idempotency::*;
use loading::*;
use snapshots::*;
use worker::*;

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
    /// The operator's campaigns.
    pub campaigns: Ledger<Campaigns>,
}

impl Ledgers {
    /// The command services over a store, with the business's configuration, on the
    /// system clock.
    pub fn new(store: Arc<dyn EventStore>, config: Arc<Config>) -> Self {
        Self::with_clock(store, config, Clock::system())
    }

    /// The command services deciding at the times `clock` reads.
    pub fn with_clock(store: Arc<dyn EventStore>, config: Arc<Config>, clock: Clock) -> Self {
        Self {
            accounts: Ledger::with_clock(store.clone(), config.clone(), clock.clone()),
            payments: Ledger::with_clock(store.clone(), config.clone(), clock.clone()),
            subscriptions: Ledger::with_clock(store.clone(), config.clone(), clock.clone()),
            refunds: Ledger::with_clock(store.clone(), config.clone(), clock.clone()),
            slots: Ledger::with_clock(store.clone(), config.clone(), clock.clone()),
            campaigns: Ledger::with_clock(store, config, clock),
        }
    }

    /// The time decisions are made at now (the services' clock): for a front-end or a
    /// reactor that decides something about time itself (coverage, what is due).
    pub fn now(&self) -> DateTime<Utc> {
        self.accounts.now()
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
            + self.campaigns.retries()
    }

    /// Batches re-decided because the log had moved past a worker's state, all kinds.
    pub fn refreshes(&self) -> u64 {
        self.accounts.refreshes()
            + self.payments.refreshes()
            + self.subscriptions.refreshes()
            + self.refunds.refreshes()
            + self.slots.refreshes()
            + self.campaigns.refreshes()
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
    clock: Clock,
    workers: Mutex<HashMap<A::Key, mpsc::Sender<Job<A>>>>,
    retries: AtomicU64,
    refreshes: AtomicU64,
    snapshots: std::sync::OnceLock<mpsc::Sender<Snapshot>>,
}

impl<A: Aggregate> Ledger<A> {
    /// A service over a store, with the business's configuration, on the system clock.
    pub fn new(store: Arc<dyn EventStore>, config: Arc<Config>) -> Self {
        Self::with_clock(store, config, Clock::system())
    }

    /// A service deciding at the times `clock` reads.
    pub fn with_clock(store: Arc<dyn EventStore>, config: Arc<Config>, clock: Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                clock,
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

    /// Runs `command` on the stream `key` with no request id of its own (idempotent by
    /// the command's own id, when it has one): [`Ledger::execute`] in one line.
    pub async fn command(
        &self,
        key: A::Key,
        command: A::Command,
        metadata: Metadata,
    ) -> Result<Outcome<A::View>, LedgerError> {
        self.execute(Request {
            key,
            command,
            command_id: None,
            metadata,
        })
        .await
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
        let now = self.inner.clock.now();
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

    /// The time its decisions are made at now.
    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
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
