//! The account stream (`account-<user id>`): a user's credits and holds.
//!
//! `decide(state, command, ctx)` says which events a command produces, or why it is
//! refused; `evolve(state, event)` folds an event into the state. Both are pure: the
//! time and the configuration come in through [`Context`], so every rule here is
//! tested with no database and no clock.
//!
//! The rules: an account is opened once; a blocked account takes no new holds or
//! debits (deposits, grants, refunds and admin adjustments still apply); available
//! credits never go below zero, except through an adjustment that says so explicitly;
//! a hold moves credits from available to held until it is captured (in full or in
//! part, the rest going back), released, or expired after its ttl.
//!
//! The state stays small however long the account's history: it holds the balances,
//! the open holds, the last [`CLOSED_HOLDS_KEPT`] closed ones and what each refunded
//! spend has given back. What it forgets, the log remembers, keyed by command id:
//! every command that carries an id ([`command_id`]: `deposit:<payment id>`,
//! `hold:<hold id>`, `capture:<hold id>` …) gets event ids derived from it, so
//!
//! - a command id can never be applied twice: the log refuses a second event with the
//!   same id (the command service then tells a re-send from a re-used id);
//! - when a decision needs an old fact (a hold closed long ago, the spend a refund
//!   refers to), [`recall`] names the command ids whose events it needs and the command
//!   service hands them to `decide` in [`Context::past`].
//!
//! So loading a 10,000-event account reads a few hundred bytes of snapshot, not a set
//! of every id it ever saw.
//!
//! One file: the account's state, commands, events, `decide` and `evolve` are the rule
//! book of credits and holds, read as one match over commands (its command ids live in
//! `account/ids.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

mod ids;

pub use ids::{
    command_id, event_command_id, hold_command_ids, hold_from_past, recall, spend_command_id,
};

use crate::config::Config;
use crate::error::DomainError;
use crate::values::{
    AdjustmentId, AdminId, Amount, DebitId, GrantId, HoldId, PaymentId, Reason, RefundId,
    SignedAmount, UserId,
};

/// What a decision may depend on besides the state: the time and the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Now, as the command service saw it.
    pub now: DateTime<Utc>,
    /// The business's configuration.
    pub config: &'a Config,
    /// The events of the earlier commands [`recall`] named, in log order, with their
    /// business time: what the decision needs that the state no longer holds.
    pub past: &'a [(AccountEvent, DateTime<Utc>)],
}

/// Closed holds the state keeps (a capture of a just-closed hold names its state
/// without a lookup, and a command's answer can show the hold); older ones are
/// recalled from the log.
pub const CLOSED_HOLDS_KEPT: usize = 16;

/// Whether an account takes new spending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Takes everything.
    #[default]
    Open,
    /// Takes no new holds or debits.
    Blocked,
}

/// Where a hold is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Credits are held.
    Open,
    /// Captured (in full or in part); the rest went back.
    Captured,
    /// Released: the job failed, everything went back.
    Released,
    /// Expired after its ttl; everything went back.
    Expired,
}

impl fmt::Display for HoldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "open",
            Self::Captured => "captured",
            Self::Released => "released",
            Self::Expired => "expired",
        })
    }
}

/// A hold on an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Credits held.
    pub amount: Amount,
    /// Credits captured (zero until captured).
    pub captured: Decimal,
    /// Where the hold is.
    pub state: HoldState,
    /// When it expires if still open.
    pub expires_at: DateTime<Utc>,
}

/// What a user spent under one reference (a debit or a captured hold), as the log
/// recalls it for a refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spend {
    /// Credits spent.
    pub amount: Decimal,
    /// When.
    pub at: DateTime<Utc>,
}

/// What a spend is known by: `debit:<id>` or `hold:<id>`.
pub type SpendRef = String;

/// The spend reference of a debit.
pub fn debit_ref(id: &DebitId) -> SpendRef {
    format!("debit:{id}")
}

/// The spend reference of a captured hold.
pub fn hold_ref(id: &HoldId) -> SpendRef {
    format!("hold:{id}")
}

/// An account as its events made it. The initial state is [`Account::new`]: the stream
/// is the user's, opened or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The owner.
    pub user_id: UserId,
    /// Whether `account.opened` happened.
    pub opened: bool,
    /// Open or blocked.
    pub status: AccountStatus,
    /// Credits free to spend.
    pub available: Decimal,
    /// Credits under open holds.
    pub held: Decimal,
    /// Open holds, and the last [`CLOSED_HOLDS_KEPT`] closed ones, by id.
    pub holds: BTreeMap<HoldId, Hold>,
    /// The closed holds kept in `holds`, oldest first.
    pub closed_holds: VecDeque<HoldId>,
    /// Credits refunded so far, by spend reference (only spends with a refund).
    pub refunded: BTreeMap<SpendRef, Decimal>,
    /// The low-balance alert: its setting and whether it may fire.
    #[serde(default)]
    pub alert: Alert,
}

/// An account's low-balance alert. It fires (`balance.low`) when a change leaves the
/// available credits below the threshold while it is armed, at most once per
/// [`Config::low_balance_alert_period_seconds`]; it disarms when it fires and re-arms
/// (`balance.alert_rearmed`) when the credits are back at or above the threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The account's own setting.
    pub setting: AlertSetting,
    /// Whether the next fall below the threshold is told.
    pub armed: bool,
    /// When it last fired.
    pub last_fired: Option<DateTime<Utc>>,
}

impl Default for Alert {
    fn default() -> Self {
        Self {
            setting: AlertSetting::Default,
            armed: true,
            last_fired: None,
        }
    }
}

/// An account's low-balance threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSetting {
    /// The configured default ([`Config::low_balance_threshold`]; none: off).
    Default,
    /// No alerts.
    Off,
    /// Below this many credits.
    Below(Amount),
}

impl Alert {
    /// The threshold in force, given the configured default.
    pub fn threshold(&self, config: &Config) -> Option<Decimal> {
        match &self.setting {
            AlertSetting::Default => config.low_balance_threshold.map(Amount::get),
            AlertSetting::Off => None,
            AlertSetting::Below(amount) => Some(amount.get()),
        }
    }
}

/// What can be asked of an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountCommand {
    /// Open the account (a no-op if it is open).
    Open {
        /// Telegram username, if any.
        username: Option<String>,
        /// Telegram language code, if any.
        language: Option<String>,
    },
    /// Credit a successful payment.
    Deposit {
        /// The payment.
        payment_id: PaymentId,
        /// Credits bought.
        amount: Amount,
    },
    /// Give credits as promotion or bonus.
    Grant {
        /// Grant id.
        grant_id: GrantId,
        /// Credits given.
        amount: Amount,
        /// Why.
        reason: Reason,
    },
    /// Spend credits directly.
    Debit {
        /// Debit id.
        debit_id: DebitId,
        /// Credits spent.
        amount: Amount,
        /// What for.
        reason: Reason,
    },
    /// An admin's correction, either sign.
    Adjust {
        /// Adjustment id.
        adjustment_id: AdjustmentId,
        /// Signed amount.
        amount: SignedAmount,
        /// Why.
        reason: Reason,
        /// Who.
        admin: AdminId,
        /// Whether it may drive available below zero.
        allow_negative: bool,
    },
    /// Hold credits for a job.
    PlaceHold {
        /// Hold id (the job's).
        hold_id: HoldId,
        /// Credits to hold.
        amount: Amount,
        /// How long the job may take.
        ttl_seconds: u64,
        /// What the job is.
        reason: Reason,
    },
    /// The job succeeded: spend all or part of the hold, return the rest.
    CaptureHold {
        /// The hold.
        hold_id: HoldId,
        /// Credits to spend; all of the hold when absent.
        amount: Option<Amount>,
    },
    /// The job failed: return everything.
    ReleaseHold {
        /// The hold.
        hold_id: HoldId,
        /// Why.
        reason: Reason,
    },
    /// The hold outlived its ttl: return everything (a no-op if it is already closed).
    ExpireHold {
        /// The hold.
        hold_id: HoldId,
    },
    /// Stop new spending.
    Block {
        /// Why.
        reason: Reason,
        /// Who.
        admin: AdminId,
    },
    /// Allow spending again.
    Unblock {
        /// Why.
        reason: Reason,
        /// Who.
        admin: AdminId,
    },
    /// Set the low-balance alert (the same setting again: a no-op).
    SetAlert {
        /// The threshold, off, or the configured default.
        setting: AlertSetting,
    },
    /// Return credits of an approved refund request.
    Refund {
        /// The refund request.
        refund_id: RefundId,
        /// The spend refunded.
        reference: SpendRef,
        /// Credits returned.
        amount: Amount,
    },
}

/// What happened to an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    /// The account was opened.
    #[serde(rename = "account.opened")]
    Opened {
        /// Owner.
        user_id: UserId,
        /// Telegram username.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        /// Telegram language code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// New spending was stopped.
    #[serde(rename = "account.blocked")]
    Blocked {
        /// Why.
        reason: Reason,
        /// Who.
        admin: AdminId,
    },
    /// Spending was allowed again.
    #[serde(rename = "account.unblocked")]
    Unblocked {
        /// Why.
        reason: Reason,
        /// Who.
        admin: AdminId,
    },
    /// A payment was credited.
    #[serde(rename = "credits.deposited")]
    Deposited {
        /// The payment.
        payment_id: PaymentId,
        /// Credits.
        amount: Amount,
    },
    /// Credits were given.
    #[serde(rename = "credits.granted")]
    Granted {
        /// Grant id.
        grant_id: GrantId,
        /// Credits.
        amount: Amount,
        /// Why.
        reason: Reason,
    },
    /// Credits were spent directly.
    #[serde(rename = "credits.debited")]
    Debited {
        /// Debit id.
        debit_id: DebitId,
        /// Credits.
        amount: Amount,
        /// What for.
        reason: Reason,
    },
    /// An admin corrected the balance.
    #[serde(rename = "credits.adjusted")]
    Adjusted {
        /// Adjustment id.
        adjustment_id: AdjustmentId,
        /// Signed credits.
        amount: SignedAmount,
        /// Why.
        reason: Reason,
        /// Who.
        admin: AdminId,
    },
    /// Credits were held for a job.
    #[serde(rename = "credits.hold_placed")]
    HoldPlaced {
        /// Hold id.
        hold_id: HoldId,
        /// Credits held.
        amount: Amount,
        /// When it expires.
        expires_at: DateTime<Utc>,
        /// What the job is.
        reason: Reason,
    },
    /// A hold was captured; `released` went back to available.
    #[serde(rename = "credits.hold_captured")]
    HoldCaptured {
        /// Hold id.
        hold_id: HoldId,
        /// Credits spent.
        captured: Amount,
        /// Credits returned (zero for a full capture).
        released: Decimal,
    },
    /// A hold was released: everything went back.
    #[serde(rename = "credits.hold_released")]
    HoldReleased {
        /// Hold id.
        hold_id: HoldId,
        /// Credits returned.
        amount: Amount,
        /// Why.
        reason: Reason,
    },
    /// A hold expired: everything went back.
    #[serde(rename = "credits.hold_expired")]
    HoldExpired {
        /// Hold id.
        hold_id: HoldId,
        /// Credits returned.
        amount: Amount,
    },
    /// The low-balance alert was set.
    #[serde(rename = "balance.alert_set")]
    AlertSet {
        /// The new setting.
        setting: AlertSetting,
    },
    /// A change left the available credits below the alert's threshold.
    #[serde(rename = "balance.low")]
    BalanceLow {
        /// Credits available after the change.
        available: Decimal,
        /// The threshold.
        threshold: Decimal,
        /// When (the decision's time): the alert is quiet for a period after it.
        at: DateTime<Utc>,
        /// The command id of the change (its events are filed under it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// The credits are back at or above the threshold: the next fall is told.
    #[serde(rename = "balance.alert_rearmed")]
    AlertRearmed {
        /// The threshold.
        threshold: Decimal,
        /// The command id of the change.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<String>,
    },
    /// An approved refund returned credits.
    #[serde(rename = "credits.refunded")]
    Refunded {
        /// The refund request.
        refund_id: RefundId,
        /// The spend refunded.
        reference: SpendRef,
        /// Credits returned.
        amount: Amount,
    },
}

impl Account {
    /// The state of a user's account before any event.
    pub fn new(user_id: UserId) -> Self {
        Self {
            user_id,
            opened: false,
            status: AccountStatus::Open,
            available: Decimal::ZERO,
            held: Decimal::ZERO,
            holds: BTreeMap::new(),
            closed_holds: VecDeque::new(),
            refunded: BTreeMap::new(),
            alert: Alert::default(),
        }
    }

    /// A hold the state no longer holds, as the log recalls it: closed, or unknown.
    fn recalled_hold(hold_id: &HoldId, past: &[(AccountEvent, DateTime<Utc>)]) -> DomainError {
        use AccountEvent as E;
        for (event, _) in past {
            match event {
                E::HoldCaptured { hold_id: id, .. } if id == hold_id => {
                    return DomainError::HoldNotOpen {
                        hold_id: hold_id.clone(),
                        state: HoldState::Captured,
                    };
                }
                E::HoldReleased { hold_id: id, .. } if id == hold_id => {
                    return DomainError::HoldNotOpen {
                        hold_id: hold_id.clone(),
                        state: HoldState::Released,
                    };
                }
                E::HoldExpired { hold_id: id, .. } if id == hold_id => {
                    return DomainError::HoldNotOpen {
                        hold_id: hold_id.clone(),
                        state: HoldState::Expired,
                    };
                }
                _ => {}
            }
        }
        // Open holds are never forgotten: without a closing event it was never placed.
        DomainError::HoldNotFound {
            hold_id: hold_id.clone(),
        }
    }

    fn open_hold(&self, hold_id: &HoldId, ctx: &Context<'_>) -> Result<&Hold, DomainError> {
        let now = ctx.now;
        let hold = self
            .holds
            .get(hold_id)
            .ok_or_else(|| Self::recalled_hold(hold_id, ctx.past))?;
        // Past its ttl a hold is expired even before the expiry reactor has run.
        let state = match hold.state {
            HoldState::Open if now >= hold.expires_at => HoldState::Expired,
            state => state,
        };
        if state != HoldState::Open {
            return Err(DomainError::HoldNotOpen {
                hold_id: hold_id.clone(),
                state,
            });
        }
        Ok(hold)
    }

    fn spendable(&self, requested: Decimal) -> Result<(), DomainError> {
        if requested > self.available {
            return Err(DomainError::InsufficientCredits {
                available: self.available,
                requested,
            });
        }
        Ok(())
    }

    fn spending_allowed(&self, user_id: UserId) -> Result<(), DomainError> {
        match self.status {
            AccountStatus::Open => Ok(()),
            AccountStatus::Blocked => Err(DomainError::AccountBlocked { user_id }),
        }
    }

    /// What the spend `reference` took and has left to refund, from the recalled past
    /// (the events of [`spend_command_id`]).
    fn spend(
        &self,
        reference: &str,
        past: &[(AccountEvent, DateTime<Utc>)],
    ) -> Result<(Spend, Decimal), DomainError> {
        use AccountEvent as E;
        let spent = past.iter().find_map(|(event, at)| {
            match event {
                E::Debited {
                    debit_id, amount, ..
                } if debit_ref(debit_id) == reference => Some(amount.get()),
                E::HoldCaptured {
                    hold_id, captured, ..
                } if hold_ref(hold_id) == reference => Some(captured.get()),
                _ => None,
            }
            .map(|amount| Spend { amount, at: *at })
        });
        let spend = spent.ok_or_else(|| {
            DomainError::RefundNotAllowed(format!("this account spent nothing under {reference}"))
        })?;
        let refunded = self.refunded.get(reference).copied().unwrap_or_default();
        let left = spend.amount - refunded;
        Ok((spend, left))
    }

    /// How much of a spend may still be refunded now under the configured window.
    /// `past` holds the events of the spend's command ([`spend_command_id`]).
    pub fn refundable(
        &self,
        reference: &str,
        past: &[(AccountEvent, DateTime<Utc>)],
        now: DateTime<Utc>,
        config: &Config,
    ) -> Result<Decimal, DomainError> {
        if !self.opened {
            return Err(DomainError::AccountNotFound {
                user_id: self.user_id,
            });
        }
        let (spend, left) = self.spend(reference, past)?;
        let age = now - spend.at;
        let window = &config.refund_window;
        if age < chrono::Duration::days(i64::from(window.min_age_days)) {
            return Err(DomainError::RefundNotAllowed(format!(
                "{reference} is younger than {} days",
                window.min_age_days
            )));
        }
        if age > chrono::Duration::days(i64::from(window.max_age_days)) {
            return Err(DomainError::RefundNotAllowed(format!(
                "{reference} is older than {} days",
                window.max_age_days
            )));
        }
        Ok(left)
    }
}

/// Decides what a command does to an account.
pub fn decide(
    state: &Account,
    command: &AccountCommand,
    ctx: &Context<'_>,
) -> Result<Vec<AccountEvent>, DomainError> {
    use AccountCommand as C;
    use AccountEvent as E;
    let user_id = state.user_id;
    if !state.opened && !matches!(command, C::Open { .. }) {
        return Err(DomainError::AccountNotFound { user_id });
    }
    let events = match command {
        C::Open { username, language } => match state.opened {
            true => vec![],
            false => vec![E::Opened {
                user_id,
                username: username.clone(),
                language: language.clone(),
            }],
        },
        C::Deposit { payment_id, amount } => {
            vec![E::Deposited {
                payment_id: payment_id.clone(),
                amount: *amount,
            }]
        }
        C::Grant {
            grant_id,
            amount,
            reason,
        } => {
            vec![E::Granted {
                grant_id: grant_id.clone(),
                amount: *amount,
                reason: reason.clone(),
            }]
        }
        C::Debit {
            debit_id,
            amount,
            reason,
        } => {
            state.spending_allowed(user_id)?;
            state.spendable(amount.get())?;
            vec![E::Debited {
                debit_id: debit_id.clone(),
                amount: *amount,
                reason: reason.clone(),
            }]
        }
        C::Adjust {
            adjustment_id,
            amount,
            reason,
            admin,
            allow_negative,
        } => {
            if state.available + amount.get() < Decimal::ZERO && !allow_negative {
                return Err(DomainError::InsufficientCredits {
                    available: state.available,
                    requested: -amount.get(),
                });
            }
            vec![E::Adjusted {
                adjustment_id: adjustment_id.clone(),
                amount: *amount,
                reason: reason.clone(),
                admin: admin.clone(),
            }]
        }
        C::PlaceHold {
            hold_id,
            amount,
            ttl_seconds,
            reason,
        } => {
            state.spending_allowed(user_id)?;
            let config = ctx.config;
            if *ttl_seconds < config.hold_ttl_seconds_min
                || *ttl_seconds > config.hold_ttl_seconds_max
            {
                return Err(DomainError::Validation(format!(
                    "ttl_seconds {ttl_seconds} is outside {}..={}",
                    config.hold_ttl_seconds_min, config.hold_ttl_seconds_max
                )));
            }
            if state.holds.contains_key(hold_id) {
                return Err(DomainError::IdempotencyConflict(format!(
                    "hold {hold_id} was already placed"
                )));
            }
            state.spendable(amount.get())?;
            // Bounded above by hold_ttl_seconds_max, so it cannot overflow.
            let ttl = chrono::Duration::seconds(i64::try_from(*ttl_seconds).unwrap_or(i64::MAX));
            vec![E::HoldPlaced {
                hold_id: hold_id.clone(),
                amount: *amount,
                expires_at: ctx.now + ttl,
                reason: reason.clone(),
            }]
        }
        C::CaptureHold { hold_id, amount } => {
            let hold = state.open_hold(hold_id, ctx)?;
            let captured = amount.unwrap_or(hold.amount);
            if captured > hold.amount {
                return Err(DomainError::CaptureExceedsHold {
                    hold_id: hold_id.clone(),
                    held: hold.amount.get(),
                    requested: captured.get(),
                });
            }
            vec![E::HoldCaptured {
                hold_id: hold_id.clone(),
                captured,
                released: hold.amount.get() - captured.get(),
            }]
        }
        C::ReleaseHold { hold_id, reason } => {
            let hold = state.open_hold(hold_id, ctx)?;
            vec![E::HoldReleased {
                hold_id: hold_id.clone(),
                amount: hold.amount,
                reason: reason.clone(),
            }]
        }
        C::ExpireHold { hold_id } => {
            let Some(hold) = state.holds.get(hold_id) else {
                // Forgotten by the state: closed (a no-op) if the log says so.
                return match Account::recalled_hold(hold_id, ctx.past) {
                    DomainError::HoldNotOpen { .. } => Ok(vec![]),
                    not_found => Err(not_found),
                };
            };
            if hold.state != HoldState::Open {
                return Ok(vec![]);
            }
            if ctx.now < hold.expires_at {
                return Err(DomainError::Validation(format!(
                    "hold {hold_id} does not expire until {}",
                    hold.expires_at
                )));
            }
            vec![E::HoldExpired {
                hold_id: hold_id.clone(),
                amount: hold.amount,
            }]
        }
        C::Block { reason, admin } => match state.status {
            AccountStatus::Blocked => vec![],
            AccountStatus::Open => vec![E::Blocked {
                reason: reason.clone(),
                admin: admin.clone(),
            }],
        },
        C::Unblock { reason, admin } => match state.status {
            AccountStatus::Open => vec![],
            AccountStatus::Blocked => vec![E::Unblocked {
                reason: reason.clone(),
                admin: admin.clone(),
            }],
        },
        C::Refund {
            refund_id,
            reference,
            amount,
        } => {
            // The window was checked when the refund was requested; what is left to
            // refund is checked now, so a spend never gives back more than it took.
            let (_, left) = state.spend(reference, ctx.past)?;
            if amount.get() > left {
                return Err(DomainError::RefundNotAllowed(format!(
                    "{reference} has {left} left to refund, not {amount}"
                )));
            }
            vec![E::Refunded {
                refund_id: refund_id.clone(),
                reference: reference.clone(),
                amount: *amount,
            }]
        }
        C::SetAlert { setting } => match &state.alert.setting == setting {
            true => vec![],
            false => vec![E::AlertSet {
                setting: setting.clone(),
            }],
        },
    };
    Ok(with_alert(state, events, command, ctx))
}

/// The events of a command, followed by what they do to the low-balance alert: a
/// change that leaves the credits below the threshold while the alert is armed (and
/// it has not fired within the configured period) fires it; a change that brings
/// them back to the threshold re-arms it. Decided with the command, appended with it.
fn with_alert(
    state: &Account,
    mut events: Vec<AccountEvent>,
    command: &AccountCommand,
    ctx: &Context<'_>,
) -> Vec<AccountEvent> {
    use AccountEvent as E;
    let after = events.iter().fold(state.clone(), evolve);
    let Some(threshold) = after.alert.threshold(ctx.config) else {
        return events;
    };
    let cause = command_id(command);
    let (before, now_available) = (state.available, after.available);
    if now_available < threshold && after.alert.armed && now_available < before {
        let period = chrono::Duration::seconds(
            i64::try_from(ctx.config.low_balance_alert_period_seconds).unwrap_or(i64::MAX),
        );
        let quiet = after
            .alert
            .last_fired
            .is_none_or(|last| ctx.now - last >= period);
        if quiet {
            events.push(E::BalanceLow {
                available: now_available,
                threshold,
                at: ctx.now,
                cause,
            });
        }
    } else if now_available >= threshold && !after.alert.armed {
        events.push(E::AlertRearmed { threshold, cause });
    }
    events
}

/// Marks a hold closed and forgets the oldest closed hold beyond [`CLOSED_HOLDS_KEPT`].
fn close_hold(state: &mut Account, hold_id: &HoldId, closed: HoldState, captured: Decimal) {
    if let Some(hold) = state.holds.get_mut(hold_id) {
        hold.state = closed;
        hold.captured = captured;
        state.closed_holds.push_back(hold_id.clone());
    }
    while state.closed_holds.len() > CLOSED_HOLDS_KEPT {
        if let Some(oldest) = state.closed_holds.pop_front() {
            state.holds.remove(&oldest);
        }
    }
}

/// Folds one event into an account. Events are facts: evolve never refuses one.
pub fn evolve(mut state: Account, event: &AccountEvent) -> Account {
    use AccountEvent as E;
    match event {
        E::AlertSet { setting } => {
            state.alert.setting = setting.clone();
            state.alert.armed = true;
        }
        E::BalanceLow { at, .. } => {
            state.alert.armed = false;
            state.alert.last_fired = Some(*at);
        }
        E::AlertRearmed { .. } => state.alert.armed = true,
        E::Opened { .. } => state.opened = true,
        E::Blocked { .. } => state.status = AccountStatus::Blocked,
        E::Unblocked { .. } => state.status = AccountStatus::Open,
        E::Deposited { amount, .. } | E::Granted { amount, .. } => {
            state.available += amount.get();
        }
        E::Debited { amount, .. } => state.available -= amount.get(),
        E::Adjusted { amount, .. } => state.available += amount.get(),
        E::HoldPlaced {
            hold_id,
            amount,
            expires_at,
            ..
        } => {
            state.available -= amount.get();
            state.held += amount.get();
            state.holds.insert(
                hold_id.clone(),
                Hold {
                    amount: *amount,
                    captured: Decimal::ZERO,
                    state: HoldState::Open,
                    expires_at: *expires_at,
                },
            );
        }
        E::HoldCaptured {
            hold_id,
            captured,
            released,
        } => {
            state.held -= captured.get() + released;
            state.available += released;
            close_hold(&mut state, hold_id, HoldState::Captured, captured.get());
        }
        E::HoldReleased {
            hold_id, amount, ..
        }
        | E::HoldExpired { hold_id, amount } => {
            state.held -= amount.get();
            state.available += amount.get();
            let closed = match event {
                E::HoldExpired { .. } => HoldState::Expired,
                _ => HoldState::Released,
            };
            close_hold(&mut state, hold_id, closed, Decimal::ZERO);
        }
        E::Refunded {
            reference, amount, ..
        } => {
            state.available += amount.get();
            *state.refunded.entry(reference.clone()).or_default() += amount.get();
        }
    }
    state
}
