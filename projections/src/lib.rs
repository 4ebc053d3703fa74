//! # tally-projections: read models that are exactly once, rebuildable and provable
//!
//! The log is the truth; read models are derived from it so the API, the bot and the
//! auditors can ask "what is the balance", "what did this user spend" without folding
//! streams. A [`Projection`] has a name, a version, its tables (SQL in
//! `schema/projections/`) and a handler that applies a batch of events to them.
//!
//! The [`Projector`] runtime reads the log from each projection's checkpoint in
//! bounded batches and applies a batch to the read model tables AND the checkpoint in
//! one transaction, so every event takes effect exactly once whenever the process
//! dies. The checkpoint is advanced by compare-and-set on its old value: a second
//! process racing on the same projection rolls back instead of applying twice. On
//! Postgres one process at a time holds a projection's lease (a session advisory lock);
//! a standby takes over when the holder's connection dies.
//!
//! Tables are generations (`balances__g2`) behind views (`balances`): a rebuild fills
//! the next generation aside from position 0 while queries read the old one, then swaps
//! views and registry row in one transaction. A projection whose version changed in
//! code is rebuilt at start.
//!
//! Read models keep amounts as integer cents, so sums are exact on both backends.
//!
//! [`Reactors`] are projectors whose effect is a command (payment → credits or plan,
//! approved refund → credits back, expired holds and subscriptions), idempotent by ids
//! derived from their triggers. The audit (`audit.rs`) verifies hash chains, the trial
//! balance and every read model against a fresh replay, and replays one account.

mod accounts;
mod audit;
mod campaigns;
mod daily_stats;
mod error;
mod events;
pub mod health;
mod holds;
mod payments;
mod posts;
mod reactor;
mod reactors;
pub mod reconciliation;
mod refunds;
mod runtime;
mod sql;
mod subscriptions;
mod trial_balance;

pub use accounts::{
    AccountsReadModel, AsOf, BalanceRow, Spend, StatementEntry, account_balance, account_statement,
    account_statement_newest, account_statement_page, recent_spends,
};
pub use audit::{AccountReplay, AuditProblem, AuditReport, ProjectionAudit, Recomputed};
pub use campaigns::{CampaignFigure, CampaignsReadModel, campaign_figures, campaign_rotations};
pub use daily_stats::{DailyFigure, DailyStatsReadModel, daily_figures};
pub use error::ProjectionError;
pub use events::{Batch, stream_event};
pub use holds::{HoldRecord, HoldsReadModel, holds_by_id};
pub use payments::{
    DuplicateCharge, PaymentPurpose, PaymentRow, PaymentsReadModel, ProviderCharge,
    duplicate_charges, paid_payments, payment, pending_payments, provider_charges,
};
pub use posts::{
    DueSlot, PostsReadModel, SlotSummary, due_slots, slot_summaries, slots_of_owner,
    slots_posting_to,
};
pub use reactor::{Reactor, ReactorLoop};
pub use reactors::{NOTIFIER, REACTOR, Reactors, SWEEP_EVERY, Swept};
pub use refunds::{RefundRow, RefundsReadModel, refunds_in_state};
pub use runtime::{
    BATCH_EVENTS_MAX, Lease, POLL_EVERY, PROJECTOR_ROLE, Projection, ProjectionStatus, Projector,
    default_projections,
};
pub use sql::{Value, cents, from_cents};
pub use subscriptions::{
    CorrectionRow, EndingPlan, SubscriptionRow, SubscriptionsReadModel, plans_ending, subscription,
    subscription_corrections,
};
pub use trial_balance::TrialBalanceReadModel;
