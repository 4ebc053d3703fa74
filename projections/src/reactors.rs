//! Reactors: projectors whose effect is a command, not a row.
//!
//! - payment succeeded → deposit the credits it bought, or start/renew the plan;
//! - refund approved → the credits go back to the account;
//! - a hold past its ttl → expire it (the credits return: no job stays stuck);
//! - a subscription past its period → expire it.
//!
//! The first two follow the log from a checkpoint; the last two sweep the `holds` and
//! `subscriptions` read models for what is due. A command cannot share a transaction
//! with the checkpoint (the ledger commits it), so exactly-once comes from the other
//! side: every command is idempotent by an id derived from what triggered it (the
//! payment id, the refund id, the hold id, the period's end, the event id). A reactor
//! that dies after its commands and before its checkpoint runs them again on restart,
//! and the log answers each with the original outcome.
//!
//! A command the rules refuse (deterministically: retrying changes nothing) is recorded
//! in `reactor_problems` for an admin and skipped; a failure of the database is retried
//! without moving the checkpoint.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::AnyPool;
use tally_domain::account::AccountCommand;
use tally_domain::payment::PaymentEvent;
use tally_domain::refund::RefundEvent;
use tally_domain::subscription::SubscriptionCommand;
use tally_domain::values::{HoldId, PaymentId, RefundId, UserId};
use tally_ledger::workflows::fulfil_payment;
use tally_ledger::{LedgerError, Ledgers, Request};
use tally_store::{Actor, EventStore, Metadata, RecordedEvent};

use crate::ProjectionError;
use crate::events::stream_event;
use crate::reactor::{Reactor, ReactorLoop};
use crate::sql::execute;

/// The registry name of the Telegram bot's notifier (a reactor of the bot crate that
/// keeps its checkpoint in the same registry).
pub const NOTIFIER: &str = "notifier";
/// The registry name of the log-following reactor.
pub const REACTOR: &str = "reactor";
/// Most events one reactor step handles.
pub const REACTOR_BATCH_EVENTS_MAX: usize = 500;
/// Most due holds or subscriptions one sweep expires.
pub const SWEEP_MAX: i64 = 500;
/// How often due holds and subscriptions are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What a sweep did: the expiries it sent that the ledger accepted. While the read
/// model has not yet applied an expiry, the next sweep sends it again; the ledger
/// answers with a no-op (nothing appended), which is counted here once more.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Swept {
    /// Hold expiries accepted.
    pub holds_expired: u64,
    /// Subscription expiries accepted.
    pub subscriptions_expired: u64,
}

/// Runs the reactors against one database (the log's and its read models').
#[derive(Clone)]
pub struct Reactors {
    store: Arc<dyn EventStore>,
    pool: AnyPool,
    ledgers: Ledgers,
    health: Option<Arc<crate::health::Health>>,
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn metadata(component: &str, cause: Option<&RecordedEvent>) -> Metadata {
    let mut metadata = Metadata::by(Actor::system(component));
    if let Some(cause) = cause {
        metadata.causation_id = Some(cause.event_id);
        metadata.correlation_id = cause.metadata.correlation_id;
    }
    metadata
}

/// Whether a failed command is a refusal by the rules (skip and record) rather than a
/// failure to run it (retry).
fn refused(error: &LedgerError) -> bool {
    matches!(error, LedgerError::Domain(_))
        || matches!(error.code(), "validation" | "idempotency_conflict")
}

impl Reactors {
    /// Reactors over the process's command services (whose store is opened and
    /// migrated), with their read models in `pool`.
    pub fn new(ledgers: Ledgers, pool: AnyPool) -> Self {
        Self {
            store: ledgers.store().clone(),
            ledgers,
            pool,
            health: None,
        }
    }

    /// Beats under [`REACTOR`] in `health` while running (`/readyz` reads it).
    pub fn with_health(mut self, health: Arc<crate::health::Health>) -> Self {
        self.health = Some(health);
        self
    }

    fn runtime(&self) -> ReactorLoop {
        let runtime = ReactorLoop::new(self.store.clone(), self.pool.clone());
        match &self.health {
            Some(health) => runtime.with_health(health.clone()),
            None => runtime,
        }
    }

    /// Reacts to the next batch of events and moves the checkpoint past them; returns
    /// how many events it read (0: nothing new, or another process moved it first).
    pub async fn step(&self) -> Result<usize, ProjectionError> {
        self.runtime().step(self).await
    }

    /// Reacts to every event up to the log's last one (including the events its own
    /// commands append), waiting at most a minute for Postgres to make them readable;
    /// returns the checkpoint reached.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        self.runtime().catch_up(self).await
    }

    /// Runs the commands `events` call for, without moving the checkpoint: what a
    /// reactor that dies before its checkpoint leaves behind. Safe to repeat.
    pub async fn react(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        for event in events {
            let outcome = self.react_to(event).await;
            match outcome {
                Ok(()) => {}
                Err(error) if refused(&error) => self.record_problem(event, &error).await?,
                Err(LedgerError::Decode(e)) => return Err(e.into()),
                Err(LedgerError::Store(e)) => return Err(e.into()),
                Err(other) => {
                    return Err(ProjectionError::Event {
                        position: event.position,
                        detail: other.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn react_to(&self, event: &RecordedEvent) -> Result<(), LedgerError> {
        if let Some((
            payment_id,
            PaymentEvent::Succeeded {
                user_id, purpose, ..
            },
        )) = stream_event::<PaymentEvent>(event, "payment").map_err(decode)?
        {
            fulfil_payment(
                &self.ledgers.accounts,
                &self.ledgers.subscriptions,
                PaymentId::new(payment_id)?,
                user_id,
                purpose,
                metadata("reactor.payments", Some(event)),
            )
            .await?;
            return Ok(());
        }
        if let Some((refund_id, RefundEvent::Approved { .. })) =
            stream_event::<RefundEvent>(event, "refund").map_err(decode)?
        {
            let refund_id = RefundId::new(refund_id)?;
            let request = self.ledgers.refunds.load(&refund_id).await?.state;
            let Some(ask) = request.ask else {
                return Err(tally_domain::DomainError::RefundNotFound.into());
            };
            self.ledgers
                .accounts
                .command(
                    ask.user_id,
                    AccountCommand::Refund {
                        refund_id,
                        reference: ask.reference,
                        amount: ask.amount,
                    },
                    metadata("reactor.refunds", Some(event)),
                )
                .await?;
        }
        Ok(())
    }

    async fn record_problem(
        &self,
        event: &RecordedEvent,
        error: &LedgerError,
    ) -> Result<(), ProjectionError> {
        tracing::error!(
            position = event.position,
            event_type = %event.event_type,
            %error,
            "a reaction was refused; recorded in reactor_problems"
        );
        execute_on(
            &self.pool,
            "INSERT INTO reactor_problems (position, reactor, event_id, code, detail, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                (event.position as i64).into(),
                REACTOR.into(),
                event.event_id.to_string().into(),
                error.code().into(),
                error.to_string().into(),
                now_micros().into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Expires holds past their ttl and subscriptions past their period, as the read
    /// models know them at `now`.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Swept, ProjectionError> {
        let mut swept = Swept::default();
        let at = now.timestamp_micros();
        for (user, hold) in crate::holds::holds_due(&self.pool, at, SWEEP_MAX).await? {
            let result = async {
                let command = AccountCommand::ExpireHold {
                    hold_id: HoldId::new(hold.clone())?,
                };
                self.ledgers
                    .accounts
                    .command(UserId::new(user)?, command, metadata("reactor.holds", None))
                    .await
            }
            .await;
            match result {
                Ok(outcome) if !outcome.replayed => swept.holds_expired += 1,
                Ok(_) => {}
                Err(error) if refused(&error) => {
                    tracing::warn!(user, hold, %error, "hold not expired");
                }
                Err(error) => return Err(ledger_failure(error)),
            }
        }
        let due = crate::subscriptions::periods_ended(&self.pool, at, SWEEP_MAX).await?;
        for (user, period_end) in due {
            let result = async {
                self.ledgers
                    .subscriptions
                    .execute(Request {
                        key: UserId::new(user)?,
                        command: SubscriptionCommand::Expire,
                        command_id: Some(format!("expire:{period_end}")),
                        metadata: metadata("reactor.subscriptions", None),
                    })
                    .await
            }
            .await;
            match result {
                Ok(outcome) if !outcome.replayed => swept.subscriptions_expired += 1,
                Ok(_) => {}
                // Renewed meanwhile (the read model lagged): nothing to expire.
                Err(error) if refused(&error) => {
                    tracing::debug!(user, %error, "subscription not expired");
                }
                Err(error) => return Err(ledger_failure(error)),
            }
        }
        Ok(swept)
    }

    /// Reacts and sweeps until `stop` turns true, in the [`ReactorLoop`] every
    /// reactor runs in (on Postgres only while this process holds the lease).
    pub async fn run(
        &self,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        self.runtime().run(self, stop).await
    }
}

#[async_trait::async_trait]
impl Reactor for Reactors {
    type Error = ProjectionError;

    fn name(&self) -> &'static str {
        REACTOR
    }

    fn batch_max(&self) -> usize {
        REACTOR_BATCH_EVENTS_MAX
    }

    fn sweep_every(&self) -> Duration {
        SWEEP_EVERY
    }

    fn now(&self) -> DateTime<Utc> {
        self.ledgers.now()
    }

    async fn react(&self, events: &[RecordedEvent]) -> Result<(), ProjectionError> {
        Reactors::react(self, events).await
    }

    async fn sweep(&self, now: DateTime<Utc>) -> Result<(), ProjectionError> {
        Reactors::sweep(self, now).await.map(|_| ())
    }
}

fn decode(e: ProjectionError) -> LedgerError {
    match e {
        ProjectionError::Decode(e) => LedgerError::Decode(e),
        other => LedgerError::Domain(tally_domain::DomainError::Validation(other.to_string())),
    }
}

fn ledger_failure(error: LedgerError) -> ProjectionError {
    match error {
        LedgerError::Store(e) => e.into(),
        LedgerError::Decode(e) => e.into(),
        other => ProjectionError::Event {
            position: 0,
            detail: other.to_string(),
        },
    }
}

async fn execute_on(
    pool: &AnyPool,
    sql: &str,
    values: &[crate::Value],
) -> Result<u64, ProjectionError> {
    let mut conn = pool.acquire().await?;
    execute(&mut conn, sql, values).await
}
