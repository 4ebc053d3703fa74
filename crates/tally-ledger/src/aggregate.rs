//! What the command service needs to know about a kind of stream: its name, its
//! initial state, the domain's decide and evolve for it, and what a command's sender
//! is told. One impl per stream kind — accounts, payments, subscriptions, refund
//! requests, ad slots; the rules themselves stay in `tally-domain`.

use std::fmt::Display;
use std::hash::Hash;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tally_domain::account::{
    self, Account, AccountCommand, AccountEvent, AccountStatus, Context, Hold,
};
use tally_domain::campaign::{self, Campaign, CampaignCommand, CampaignEvent};
use tally_domain::payment::{self, Payment, PaymentCommand, PaymentEvent};
use tally_domain::refund::{self, RefundCommand, RefundEvent, RefundRequest};
use tally_domain::slot::{self, Slot, SlotCommand, SlotConfig, SlotEvent};
use tally_domain::subscription::{
    self, Subscription, SubscriptionCommand, SubscriptionEvent, SubscriptionStatus,
};
use tally_domain::values::{HoldId, PaymentId, PlanId, RefundId, SlotId, UserId};
use tally_domain::{Config, DomainError};

/// A kind of stream the command service runs commands against.
pub trait Aggregate: Send + Sync + 'static {
    /// What identifies one stream of this kind (a user id, a payment id …).
    type Key: Clone + Eq + Hash + Display + Send + Sync + 'static;
    /// The folded state.
    type State: Clone + Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What can be asked.
    type Command: Serialize + Send + Sync + 'static;
    /// What happens.
    type Event: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What a caller is told after a command: a small part of the state, taken right
    /// after the command's own events (copying the whole state per command would cost
    /// a hot stream time in proportion to its history).
    type View: Clone + Send + Sync + 'static;

    /// Stream names are `<prefix>-<key>`, e.g. `account-42`.
    const STREAM_PREFIX: &'static str;

    /// The state before any event.
    fn initial(key: &Self::Key) -> Self::State;

    /// The id the command is idempotent by, when it carries one of its own (a hold id,
    /// a debit id …), unique in its stream across kinds of command. Its events get ids
    /// derived from it, so the log never holds two applications of it. `None`: the
    /// request's `command_id`, if any, is used instead.
    fn command_id(_command: &Self::Command) -> Option<String> {
        None
    }

    /// What of a command a re-send must repeat to be the same request (hashed into the
    /// idempotency key of its events): all of it, unless the service adds context of
    /// its own to the caller's request (a refundable amount, a plan's coverage) that
    /// may have changed by the time the caller re-sends.
    fn request_digest(command: &Self::Command) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(command)
    }

    /// Whether a command id is unique in the whole ledger rather than in its stream
    /// (an id the API addresses without naming the stream, like a hold id): its
    /// events' ids then derive from the kind of stream, so the log refuses the id in a
    /// second stream.
    fn ledger_wide(_command_id: &str) -> bool {
        false
    }

    /// The command ids whose events the answer to a replay of `command` needs, when
    /// the state no longer shows what it did (empty: [`Aggregate::view`] shows it).
    fn replay_recall(_state: &Self::State, _command: &Self::Command) -> Vec<String> {
        Vec::new()
    }

    /// The answer to a replay of `command`, with the events [`Aggregate::replay_recall`]
    /// named.
    fn replay_view(
        state: &Self::State,
        command: &Self::Command,
        _past: &[(Self::Event, DateTime<Utc>)],
    ) -> Self::View {
        Self::view(state, command)
    }

    /// The command ids whose events `decide` needs and the state no longer holds.
    fn recall(_state: &Self::State, _command: &Self::Command) -> Vec<String> {
        Vec::new()
    }

    /// The domain's decision; `past` holds the events [`Aggregate::recall`] named, in
    /// log order, with their business time.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
        past: &[(Self::Event, DateTime<Utc>)],
        now: DateTime<Utc>,
        config: &Config,
    ) -> Result<Vec<Self::Event>, DomainError>;

    /// The domain's fold.
    fn evolve(state: Self::State, event: &Self::Event, occurred_at: DateTime<Utc>) -> Self::State;

    /// What to tell the sender of `command` about `state`.
    fn view(state: &Self::State, command: &Self::Command) -> Self::View;
}

/// What an account command's sender is told: the balance, and the hold it touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountView {
    /// Whose account.
    pub user_id: UserId,
    /// Whether it is open.
    pub opened: bool,
    /// Open or blocked.
    pub status: AccountStatus,
    /// Credits free to spend.
    pub available: Decimal,
    /// Credits under open holds.
    pub held: Decimal,
    /// The hold the command was about, if any.
    pub hold: Option<(HoldId, Hold)>,
}

/// Accounts: credits and holds (`account-<user id>`).
pub struct Accounts;

impl Aggregate for Accounts {
    type Key = UserId;
    type State = Account;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type View = AccountView;

    const STREAM_PREFIX: &'static str = "account";

    fn initial(key: &UserId) -> Account {
        Account::new(*key)
    }

    fn command_id(command: &AccountCommand) -> Option<String> {
        account::command_id(command)
    }

    /// Hold ids: the API reaches a hold by its id alone, so one id is one hold in the
    /// whole ledger.
    fn ledger_wide(command_id: &str) -> bool {
        command_id.starts_with("hold:")
    }

    fn recall(state: &Account, command: &AccountCommand) -> Vec<String> {
        account::recall(state, command)
    }

    fn replay_recall(state: &Account, command: &AccountCommand) -> Vec<String> {
        match held_command(command) {
            Some(hold_id) if !state.holds.contains_key(hold_id) => {
                account::hold_command_ids(hold_id)
            }
            _ => Vec::new(),
        }
    }

    fn replay_view(
        state: &Account,
        command: &AccountCommand,
        past: &[(AccountEvent, DateTime<Utc>)],
    ) -> AccountView {
        let mut view = Self::view(state, command);
        if view.hold.is_none()
            && let Some(hold_id) = held_command(command)
        {
            view.hold = account::hold_from_past(hold_id, past).map(|hold| (hold_id.clone(), hold));
        }
        view
    }

    fn decide(
        state: &Account,
        command: &AccountCommand,
        past: &[(AccountEvent, DateTime<Utc>)],
        now: DateTime<Utc>,
        config: &Config,
    ) -> Result<Vec<AccountEvent>, DomainError> {
        account::decide(state, command, &Context { now, config, past })
    }

    fn evolve(state: Account, event: &AccountEvent, _: DateTime<Utc>) -> Account {
        account::evolve(state, event)
    }

    fn view(state: &Account, command: &AccountCommand) -> AccountView {
        let hold_id = held_command(command);
        AccountView {
            user_id: state.user_id,
            opened: state.opened,
            status: state.status,
            available: state.available,
            held: state.held,
            hold: hold_id.and_then(|id| state.holds.get(id).map(|h| (id.clone(), h.clone()))),
        }
    }
}

/// The hold an account command is about, if any.
fn held_command(command: &AccountCommand) -> Option<&HoldId> {
    match command {
        AccountCommand::PlaceHold { hold_id, .. }
        | AccountCommand::CaptureHold { hold_id, .. }
        | AccountCommand::ReleaseHold { hold_id, .. }
        | AccountCommand::ExpireHold { hold_id } => Some(hold_id),
        _ => None,
    }
}

/// Payments (`payment-<payment id>`).
pub struct Payments;

impl Aggregate for Payments {
    type Key = PaymentId;
    type State = Payment;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type View = Payment;

    const STREAM_PREFIX: &'static str = "payment";

    fn initial(_: &PaymentId) -> Payment {
        Payment::default()
    }

    /// A success is idempotent by the provider's charge.
    fn command_id(command: &PaymentCommand) -> Option<String> {
        match command {
            PaymentCommand::Succeed {
                provider,
                provider_payment_id,
                ..
            } => Some(payment::charge_id(provider, provider_payment_id)),
            _ => None,
        }
    }

    /// One provider charge settles one payment in the whole ledger.
    fn ledger_wide(command_id: &str) -> bool {
        command_id.starts_with("charge:")
    }

    fn decide(
        state: &Payment,
        command: &PaymentCommand,
        _past: &[(PaymentEvent, DateTime<Utc>)],
        _now: DateTime<Utc>,
        config: &Config,
    ) -> Result<Vec<PaymentEvent>, DomainError> {
        payment::decide(state, command, config)
    }

    fn evolve(state: Payment, event: &PaymentEvent, _: DateTime<Utc>) -> Payment {
        payment::evolve(state, event)
    }

    fn view(state: &Payment, _: &PaymentCommand) -> Payment {
        state.clone()
    }
}

/// What a subscription command's sender is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionView {
    /// The plan.
    pub plan: Option<PlanId>,
    /// Its slots.
    pub slots: u32,
    /// End of the paid period.
    pub period_end: Option<DateTime<Utc>>,
    /// Where it is.
    pub status: Option<SubscriptionStatus>,
}

/// Subscriptions (`subscription-<user id>`).
pub struct Subscriptions;

impl Aggregate for Subscriptions {
    type Key = UserId;
    type State = Subscription;
    type Command = SubscriptionCommand;
    type Event = SubscriptionEvent;
    type View = SubscriptionView;

    const STREAM_PREFIX: &'static str = "subscription";

    fn initial(key: &UserId) -> Subscription {
        Subscription::new(*key)
    }

    fn decide(
        state: &Subscription,
        command: &SubscriptionCommand,
        _past: &[(SubscriptionEvent, DateTime<Utc>)],
        now: DateTime<Utc>,
        config: &Config,
    ) -> Result<Vec<SubscriptionEvent>, DomainError> {
        subscription::decide(state, command, now, config)
    }

    fn evolve(state: Subscription, event: &SubscriptionEvent, _: DateTime<Utc>) -> Subscription {
        subscription::evolve(state, event)
    }

    fn view(state: &Subscription, _: &SubscriptionCommand) -> SubscriptionView {
        SubscriptionView {
            plan: state.plan.clone(),
            slots: state.slots,
            period_end: state.period_end,
            status: state.status,
        }
    }
}

/// Refund requests (`refund-<refund id>`).
pub struct Refunds;

impl Aggregate for Refunds {
    type Key = RefundId;
    type State = RefundRequest;
    type Command = RefundCommand;
    type Event = RefundEvent;
    type View = RefundRequest;

    const STREAM_PREFIX: &'static str = "refund";

    fn initial(_: &RefundId) -> RefundRequest {
        RefundRequest::default()
    }

    /// A request is the same when the ask is; what is refundable changes as the
    /// spend is refunded.
    fn request_digest(command: &RefundCommand) -> Result<Vec<u8>, serde_json::Error> {
        match command {
            RefundCommand::Request { ask, .. } => serde_json::to_vec(ask),
            other => serde_json::to_vec(other),
        }
    }

    fn decide(
        state: &RefundRequest,
        command: &RefundCommand,
        _past: &[(RefundEvent, DateTime<Utc>)],
        _now: DateTime<Utc>,
        config: &Config,
    ) -> Result<Vec<RefundEvent>, DomainError> {
        refund::decide(state, command, config)
    }

    fn evolve(state: RefundRequest, event: &RefundEvent, _: DateTime<Utc>) -> RefundRequest {
        refund::evolve(state, event)
    }

    fn view(state: &RefundRequest, _: &RefundCommand) -> RefundRequest {
        state.clone()
    }
}

/// What a slot command's sender is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotView {
    /// The slot's configuration.
    pub config: Option<SlotConfig>,
    /// For a recorded attempt: its number at its destination in its cycle.
    pub attempt: Option<u32>,
}

/// Ad slots (`slot-<slot id>`).
pub struct Slots;

impl Aggregate for Slots {
    type Key = SlotId;
    type State = Slot;
    type Command = SlotCommand;
    type Event = SlotEvent;
    type View = SlotView;

    const STREAM_PREFIX: &'static str = "slot";

    fn initial(_: &SlotId) -> Slot {
        Slot::default()
    }

    /// An attempt is the same when the attempt is; the plan's coverage may have
    /// changed since.
    fn request_digest(command: &SlotCommand) -> Result<Vec<u8>, serde_json::Error> {
        match command {
            SlotCommand::RecordAttempt { attempt, .. } => serde_json::to_vec(attempt),
            SlotCommand::StartPost {
                attempt_id,
                cycle,
                destination,
                ..
            } => serde_json::to_vec(&(attempt_id, cycle, destination)),
            other => serde_json::to_vec(other),
        }
    }

    fn decide(
        state: &Slot,
        command: &SlotCommand,
        _past: &[(SlotEvent, DateTime<Utc>)],
        _now: DateTime<Utc>,
        _config: &Config,
    ) -> Result<Vec<SlotEvent>, DomainError> {
        slot::decide(state, command)
    }

    fn evolve(state: Slot, event: &SlotEvent, _: DateTime<Utc>) -> Slot {
        slot::evolve(state, event)
    }

    fn view(state: &Slot, command: &SlotCommand) -> SlotView {
        let attempt = match command {
            SlotCommand::RecordAttempt { attempt, .. } => state
                .attempts
                .get(&(attempt.cycle, attempt.destination))
                .copied(),
            SlotCommand::StartPost {
                cycle, destination, ..
            } => state.attempts.get(&(*cycle, *destination)).copied(),
            SlotCommand::Configure(_)
            | SlotCommand::PauseDestination { .. }
            | SlotCommand::MoveDestination { .. }
            | SlotCommand::Pause { .. }
            | SlotCommand::Resume
            | SlotCommand::Remove => None,
        };
        SlotView {
            config: state.config.clone(),
            attempt,
        }
    }
}

/// The operator's campaigns (`campaign-<campaign id>`): definitions and clicks.
pub struct Campaigns;

impl Aggregate for Campaigns {
    type Key = tally_domain::values::CampaignId;
    type State = Campaign;
    type Command = CampaignCommand;
    type Event = CampaignEvent;
    type View = Campaign;

    const STREAM_PREFIX: &'static str = "campaign";

    fn initial(_: &tally_domain::values::CampaignId) -> Campaign {
        Campaign::default()
    }

    fn decide(
        state: &Campaign,
        command: &CampaignCommand,
        _past: &[(CampaignEvent, DateTime<Utc>)],
        _now: DateTime<Utc>,
        _config: &Config,
    ) -> Result<Vec<CampaignEvent>, DomainError> {
        campaign::decide(state, command)
    }

    fn evolve(state: Campaign, event: &CampaignEvent, _: DateTime<Utc>) -> Campaign {
        campaign::evolve(state, event)
    }

    fn view(state: &Campaign, _: &CampaignCommand) -> Campaign {
        state.clone()
    }
}
