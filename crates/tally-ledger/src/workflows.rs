//! Commands that span two streams, as a sequence of single-stream commands, each
//! idempotent by the same id, so running a workflow again after a crash half-way
//! finishes it and never applies a step twice.
//!
//! - Requesting a refund reads what the account says the spend has left to refund
//!   within the policy window, then records the request.
//! - Approving a refund records the approval, then returns the credits to the account
//!   (idempotent by the refund id: the log refuses `refund:<id>` twice, and a spend
//!   never gives back more than it took). If the process dies between the two steps,
//!   approving again — or the refund reactor — returns the credits.

use tally_domain::account::{self, AccountCommand};
use tally_domain::refund::{RefundAsk, RefundCommand, RefundRequest, RefundStatus};
use tally_domain::values::{AdminId, Reason, RefundId};
use tally_domain::{Config, DomainError};
use tally_store::Metadata;

use crate::aggregate::AccountView;
use crate::{Accounts, Ledger, LedgerError, Outcome, Refunds, Request};

/// Records a refund request after checking it against the account's spend and the
/// configured refund window.
pub async fn request_refund(
    accounts: &Ledger<Accounts>,
    refunds: &Ledger<Refunds>,
    config: &Config,
    refund_id: RefundId,
    ask: RefundAsk,
    metadata: Metadata,
) -> Result<Outcome<RefundRequest>, LedgerError> {
    let account = accounts.load(&ask.user_id).await?;
    let spend: Vec<String> = account::spend_command_id(&ask.reference)
        .into_iter()
        .collect();
    let past = accounts.recall(&ask.user_id, &spend).await?;
    let now = tally_store::event::now_micros();
    let refundable = account
        .state
        .refundable(&ask.reference, &past, now, config)?;
    refunds
        .execute(Request {
            key: refund_id.clone(),
            command: RefundCommand::Request { ask, refundable },
            command_id: Some(refund_id.to_string()),
            metadata,
        })
        .await
}

/// Approves a refund request and returns its credits to the account.
pub async fn approve_refund(
    accounts: &Ledger<Accounts>,
    refunds: &Ledger<Refunds>,
    refund_id: RefundId,
    admin: AdminId,
    reason: Reason,
    metadata: Metadata,
) -> Result<Outcome<AccountView>, LedgerError> {
    let approved = refunds
        .execute(Request {
            key: refund_id.clone(),
            command: RefundCommand::Approve { admin, reason },
            command_id: None,
            metadata: metadata.clone(),
        })
        .await?;
    let ask = match (approved.view.status, approved.view.ask) {
        (Some(RefundStatus::Approved), Some(ask)) => ask,
        _ => return Err(DomainError::RefundNotFound.into()),
    };
    accounts
        .execute(Request {
            key: ask.user_id,
            command: AccountCommand::Refund {
                refund_id: refund_id.clone(),
                reference: ask.reference,
                amount: ask.amount,
            },
            command_id: None,
            metadata,
        })
        .await
}
