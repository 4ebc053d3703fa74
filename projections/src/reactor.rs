//! One runtime for every reactor: a thing that follows the log and answers events
//! with commands or messages (the payment and refund reactor, the hold and
//! subscription sweeps, the bot's notifier).
//!
//! A reactor says what it does ([`Reactor`]: react to a batch, sweep for what is due);
//! [`ReactorLoop`] does the rest the same way for all: its checkpoint in the
//! projections registry, moved by compare-and-set after the batch (two processes
//! never both move it); on Postgres a lease, so one process at a time reacts and a
//! standby takes over when the holder's connection ends; wake-ups from the store,
//! a poll as a fallback, a sweep on its own period; a step that fails is retried
//! without moving the checkpoint, so a reaction is at least once, and exactly once
//! where the reaction itself is idempotent (every command carries an id derived from
//! its cause).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::AnyPool;
use tally_store::{EventStore, RecordedEvent};

use crate::ProjectionError;
use crate::health::Health;
use crate::runtime::{Lease, POLL_EVERY};

/// What a reactor does; [`ReactorLoop`] runs it.
#[async_trait]
pub trait Reactor: Send + Sync {
    /// What its failures are.
    type Error: std::fmt::Display + From<ProjectionError> + Send;

    /// Its name in the projections registry (checkpoint, lease, health).
    fn name(&self) -> &'static str;

    /// Most events one step reads.
    fn batch_max(&self) -> usize;

    /// Whether its first start begins at the log's head rather than its beginning
    /// (a notifier added to a ledger with a history does not tell users all of it).
    fn starts_at_head(&self) -> bool {
        false
    }

    /// How often [`Reactor::sweep`] runs.
    fn sweep_every(&self) -> Duration;

    /// The time a sweep looks for what is due at (the command services' clock for a
    /// reactor that sends commands).
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// Answers `events` (in log order). Safe to repeat: a reactor that dies before
    /// its checkpoint is given them again.
    async fn react(&self, events: &[RecordedEvent]) -> Result<(), Self::Error>;

    /// Looks for what is due at `now` in the read models (expiries, reminders).
    async fn sweep(&self, now: DateTime<Utc>) -> Result<(), Self::Error>;
}

/// The checkpoint, lease, wake-up and sweep loop every reactor runs in.
#[derive(Clone)]
pub struct ReactorLoop {
    store: Arc<dyn EventStore>,
    pool: AnyPool,
    health: Option<Arc<Health>>,
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

impl ReactorLoop {
    /// A loop over the log `store`, with the registry in `pool`.
    pub fn new(store: Arc<dyn EventStore>, pool: AnyPool) -> Self {
        Self {
            store,
            pool,
            health: None,
        }
    }

    /// Beats under the reactor's name in `health` while running (`/readyz` reads it).
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// The reactor's checkpoint, registered on its first start.
    pub async fn checkpoint<R: Reactor + ?Sized>(
        &self,
        reactor: &R,
    ) -> Result<u64, ProjectionError> {
        let first = match reactor.starts_at_head() {
            true => self.store.head_position().await?,
            false => 0,
        };
        crate::sql::execute(
            &mut *self.pool.acquire().await?,
            "INSERT INTO projections (name, version, generation, checkpoint, updated_at) \
             VALUES ($1, 1, 1, $2, $3) ON CONFLICT (name) DO NOTHING",
            &[
                reactor.name().into(),
                crate::runtime::to_i64(first).into(),
                now_micros().into(),
            ],
        )
        .await?;
        let checkpoint: i64 =
            sqlx::query_scalar("SELECT checkpoint FROM projections WHERE name = $1")
                .bind(reactor.name())
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(checkpoint).unwrap_or(0))
    }

    /// Reacts to the next batch and moves the checkpoint past it; returns how many
    /// events it read (0: nothing new, or another process moved it first).
    pub async fn step<R: Reactor + ?Sized>(&self, reactor: &R) -> Result<usize, R::Error> {
        let from = self.checkpoint(reactor).await?;
        let events = self
            .store
            .read_all(from, reactor.batch_max())
            .await
            .map_err(ProjectionError::from)?;
        let Some(last) = events.last() else {
            return Ok(0);
        };
        reactor.react(&events).await?;
        let moved = crate::sql::execute(
            &mut *self.pool.acquire().await.map_err(ProjectionError::from)?,
            "UPDATE projections SET checkpoint = $1, checkpoint_at = $2, updated_at = $3 \
             WHERE name = $4 AND checkpoint = $5",
            &[
                crate::runtime::to_i64(last.position).into(),
                last.recorded_at.timestamp_micros().into(),
                now_micros().into(),
                reactor.name().into(),
                crate::runtime::to_i64(from).into(),
            ],
        )
        .await?;
        Ok(if moved == 0 { 0 } else { events.len() })
    }

    /// Reacts to every event up to the log's last one (and the events its own
    /// reactions append), waiting at most a minute for Postgres to make them
    /// readable; returns the checkpoint reached.
    pub async fn catch_up<R: Reactor + ?Sized>(&self, reactor: &R) -> Result<u64, R::Error> {
        let started = std::time::Instant::now();
        loop {
            let head = self
                .store
                .last_position()
                .await
                .map_err(ProjectionError::from)?;
            let checkpoint = self.checkpoint(reactor).await?;
            if checkpoint >= head {
                return Ok(checkpoint);
            }
            if self.step(reactor).await? == 0 {
                if started.elapsed() > Duration::from_secs(60) {
                    return Err(ProjectionError::Lagging {
                        name: reactor.name().into(),
                        reached: checkpoint,
                        wanted: head,
                    }
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// Runs `reactor` until `stop` turns true: steps while there is work, sweeps every
    /// [`Reactor::sweep_every`], then waits for the store's wake-up or
    /// [`POLL_EVERY`]. On Postgres only while this process holds the reactor's lease.
    /// Failures are logged and retried; the loop itself never ends on one.
    pub async fn run<R: Reactor + ?Sized>(
        &self,
        reactor: &R,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), R::Error> {
        let name = reactor.name();
        let mut wakeups = self.store.subscribe();
        let mut last_sweep = std::time::Instant::now() - reactor.sweep_every();
        let mut lease = match self.store.backend() {
            "postgres" => Some(Lease::new(self.pool.clone())),
            _ => None,
        };
        if let Some(health) = &self.health {
            health.expect(name);
        }
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if let Some(health) = &self.health {
                health.beat(name);
            }
            let held = match lease.as_mut() {
                Some(lease) => lease.hold(name).await,
                None => true,
            };
            if held {
                loop {
                    match self.step(reactor).await {
                        Ok(read) if read == reactor.batch_max() && !*stop.borrow() => continue,
                        Ok(_) => break,
                        Err(error) => {
                            tracing::warn!(reactor = name, %error, "reactor step failed; retrying");
                            break;
                        }
                    }
                }
                if last_sweep.elapsed() >= reactor.sweep_every() {
                    last_sweep = std::time::Instant::now();
                    if let Err(error) = reactor.sweep(reactor.now()).await {
                        tracing::warn!(reactor = name, %error, "reactor sweep failed; retrying");
                    }
                }
            }
            tokio::select! {
                woke = wakeups.wait() => {
                    if woke.is_err() {
                        tokio::time::sleep(POLL_EVERY).await;
                    }
                }
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
    }
}
