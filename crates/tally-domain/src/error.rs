//! The domain's errors. Each has a stable snake_case code, the same the HTTP API and
//! the bot show, so a rule broken anywhere reads the same everywhere.

use rust_decimal::Decimal;

use crate::account::HoldState;
use crate::values::{HoldId, UserId};

/// A command the rules refuse, with what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// No account for this user yet.
    #[error("no account for user {user_id}; open it first")]
    AccountNotFound {
        /// The user.
        user_id: UserId,
    },
    /// The account is blocked and takes no new holds or debits.
    #[error("account {user_id} is blocked; an admin must unblock it first")]
    AccountBlocked {
        /// The user.
        user_id: UserId,
    },
    /// Not enough available credits.
    #[error("not enough credits: {available} available, {requested} requested")]
    InsufficientCredits {
        /// What is available.
        available: Decimal,
        /// What was asked for.
        requested: Decimal,
    },
    /// An amount that is not a valid amount.
    #[error("invalid amount: {0}")]
    InvalidAmount(String),
    /// Input that breaks a rule of shape or range.
    #[error("{0}")]
    Validation(String),
    /// Well-formed input that the stream's state refuses (a slot owned by another
    /// user, a cycle already over): the same request may be right for another stream.
    #[error("{0}")]
    Conflict(String),
    /// No hold with this id on the account.
    #[error("no hold {hold_id} on this account")]
    HoldNotFound {
        /// The hold.
        hold_id: HoldId,
    },
    /// The hold is closed.
    #[error("hold {hold_id} is {state}, not open")]
    HoldNotOpen {
        /// The hold.
        hold_id: HoldId,
        /// What closed it.
        state: HoldState,
    },
    /// A capture asked for more than the hold holds.
    #[error("cannot capture {requested} from hold {hold_id}: it holds {held}")]
    CaptureExceedsHold {
        /// The hold.
        hold_id: HoldId,
        /// What it holds.
        held: Decimal,
        /// What was asked for.
        requested: Decimal,
    },
    /// An id already used for something else.
    #[error("{0}")]
    IdempotencyConflict(String),
    /// A refund the policy does not allow.
    #[error("refund not allowed: {0}")]
    RefundNotAllowed(String),
    /// No payment with this id.
    #[error("no such payment; create it first")]
    PaymentNotFound,
    /// A provider's report that disagrees with the payment.
    #[error("payment conflict: {0}")]
    PaymentConflict(String),
    /// A report about a payment from a provider other than the payment's own.
    #[error(
        "this is a {payment_provider} payment; {reported_by} cannot settle it (a payment is settled only by its own provider)"
    )]
    ProviderMismatch {
        /// The payment's provider.
        payment_provider: String,
        /// Who reported.
        reported_by: String,
    },
    /// No subscription for this user.
    #[error("the user has no subscription (one starts when a plan is paid)")]
    SubscriptionNotFound,
    /// No refund request with this id.
    #[error("no such refund request")]
    RefundNotFound,
    /// An admin tried to approve a request they made.
    #[error("{0} made this request and cannot approve it; another admin must")]
    SelfApproval(String),
    /// The slot's owner has no active subscription covering it.
    #[error("slot cannot post: {0}")]
    SlotNotActive(String),
    /// The slot already posted successfully to this destination in this cycle.
    #[error("slot already posted to {destination} in cycle {cycle}")]
    AlreadyPosted {
        /// The cycle.
        cycle: u64,
        /// The destination.
        destination: String,
    },
}

impl DomainError {
    /// The stable code of API.md for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AccountNotFound { .. } => "account_not_found",
            Self::AccountBlocked { .. } => "account_blocked",
            Self::InsufficientCredits { .. } => "insufficient_credits",
            Self::InvalidAmount(_) => "invalid_amount",
            Self::Validation(_) => "validation",
            Self::Conflict(_) => "conflict",
            Self::HoldNotFound { .. } => "hold_not_found",
            Self::HoldNotOpen { .. } => "hold_not_open",
            Self::CaptureExceedsHold { .. } => "capture_exceeds_hold",
            Self::IdempotencyConflict(_) => "idempotency_conflict",
            Self::RefundNotAllowed(_) => "refund_not_allowed",
            Self::PaymentNotFound => "payment_not_found",
            Self::PaymentConflict(_) => "payment_conflict",
            Self::ProviderMismatch { .. } => "provider_mismatch",
            Self::SubscriptionNotFound => "subscription_not_found",
            Self::RefundNotFound => "refund_not_found",
            Self::SelfApproval(_) => "self_approval",
            Self::SlotNotActive(_) => "slot_not_active",
            Self::AlreadyPosted { .. } => "already_posted",
        }
    }
}
