//! The refund request stream (`refund-<refund id>`): a user (or an admin on their
//! behalf) asks for credits back for something spent; another admin approves or
//! rejects it.
//!
//! The amount is checked twice: against what the spend has left to refund when the
//! request is made (so the queue holds only sensible requests), and by the account when
//! the credits are returned (so two approved requests can never refund one spend twice).
//! The approver may not be the requester.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::DomainError;
use crate::values::{AdminId, Amount, Reason, UserId};

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Waiting for an admin.
    Requested,
    /// Approved; the credits went back.
    Approved,
    /// Rejected.
    Rejected,
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAsk {
    /// Whose credits.
    pub user_id: UserId,
    /// The spend (`debit:<id>` or `hold:<id>`).
    pub reference: String,
    /// Credits asked back.
    pub amount: Amount,
    /// Why.
    pub reason: Reason,
    /// Who asked: the user's Telegram id or an admin's name.
    pub requested_by: String,
}

/// A refund request as its events made it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The ask, once requested.
    pub ask: Option<RefundAsk>,
    /// Where it is.
    pub status: Option<RefundStatus>,
}

/// What can be asked of a refund request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundCommand {
    /// Ask. `refundable` is what the spend has left to refund within the policy window
    /// now, as the account says ([`crate::Account::refundable`]).
    Request {
        /// The ask.
        ask: RefundAsk,
        /// What may still be refunded.
        refundable: Decimal,
    },
    /// Approve: the credits go back.
    Approve {
        /// Who.
        admin: AdminId,
        /// Why.
        reason: Reason,
    },
    /// Reject.
    Reject {
        /// Who.
        admin: AdminId,
        /// Why.
        reason: Reason,
    },
}

/// What happened to a refund request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RefundEvent {
    /// Asked.
    #[serde(rename = "refund.requested")]
    Requested(RefundAsk),
    /// Approved.
    #[serde(rename = "refund.approved")]
    Approved {
        /// Who.
        admin: AdminId,
        /// Why.
        reason: Reason,
    },
    /// Rejected.
    #[serde(rename = "refund.rejected")]
    Rejected {
        /// Who.
        admin: AdminId,
        /// Why.
        reason: Reason,
    },
}

/// Decides what a command does to a refund request.
pub fn decide(
    state: &RefundRequest,
    command: &RefundCommand,
    config: &Config,
) -> Result<Vec<RefundEvent>, DomainError> {
    use RefundCommand as C;
    use RefundEvent as E;
    match command {
        C::Request { ask, refundable } => match &state.ask {
            Some(existing) if existing == ask => Ok(vec![]),
            Some(_) => Err(DomainError::IdempotencyConflict(
                "this refund id was already used for another request".into(),
            )),
            None if ask.amount.get() > *refundable => Err(DomainError::RefundNotAllowed(format!(
                "{} has {refundable} left to refund, not {}",
                ask.reference, ask.amount
            ))),
            None => Ok(vec![E::Requested(ask.clone())]),
        },
        C::Approve { admin, reason } | C::Reject { admin, reason } => {
            let ask = state.ask.as_ref().ok_or(DomainError::RefundNotFound)?;
            let approving = matches!(command, C::Approve { .. });
            match state.status {
                Some(RefundStatus::Requested) => {}
                Some(RefundStatus::Approved) if approving => return Ok(vec![]),
                Some(RefundStatus::Rejected) if !approving => return Ok(vec![]),
                Some(done) => {
                    return Err(DomainError::RefundNotAllowed(format!(
                        "the request was already {}",
                        if done == RefundStatus::Approved {
                            "approved"
                        } else {
                            "rejected"
                        }
                    )));
                }
                None => return Err(DomainError::RefundNotFound),
            }
            if approving
                && config
                    .admin_links
                    .same_person(&ask.requested_by, admin.as_str())
            {
                return Err(DomainError::SelfApproval(admin.as_str().to_string()));
            }
            Ok(vec![if approving {
                E::Approved {
                    admin: admin.clone(),
                    reason: reason.clone(),
                }
            } else {
                E::Rejected {
                    admin: admin.clone(),
                    reason: reason.clone(),
                }
            }])
        }
    }
}

/// Folds one event into a refund request.
pub fn evolve(mut state: RefundRequest, event: &RefundEvent) -> RefundRequest {
    match event {
        RefundEvent::Requested(ask) => {
            state.ask = Some(ask.clone());
            state.status = Some(RefundStatus::Requested);
        }
        RefundEvent::Approved { .. } => state.status = Some(RefundStatus::Approved),
        RefundEvent::Rejected { .. } => state.status = Some(RefundStatus::Rejected),
    }
    state
}
