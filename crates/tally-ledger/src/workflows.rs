//! Commands that span two streams, as a sequence of single-stream commands, each
//! idempotent by the same id, so running a workflow again after a crash half-way
//! finishes it and never applies a step twice.
//!
//! - Requesting a refund reads what the account says the spend has left to refund
//!   within the policy window, then records the request.
//! - Approving a refund and returning its credits stand or fall together: both are
//!   decided against the latest state of the two streams and appended in one atomic
//!   append. When the account refuses the credits (the spend was refunded in full
//!   meanwhile), nothing is appended: the request stays requested and can still be
//!   rejected. A request approved before this rule whose credits did not go back is
//!   finished by approving again, or by the refund reactor (idempotent by the refund
//!   id: the log refuses `refund:<id>` twice).
//! - Fulfilling a paid payment deposits its credits (opening the account if need be)
//!   or starts its plan; the webhook that saw the payment succeed, the bot that took a
//!   Stars payment and the payment reactor that follows the log all call it, and it
//!   happens once.

use tally_domain::account::{self, AccountCommand};
use tally_domain::payment::Purpose;
use tally_domain::refund::{RefundAsk, RefundCommand, RefundRequest, RefundStatus};
use tally_domain::subscription::SubscriptionCommand;
use tally_domain::values::{AdminId, PaymentId, Reason, RefundId, UserId};
use tally_domain::{Config, DomainError};
use tally_store::{Metadata, StoreError};

use crate::aggregate::AccountView;
use crate::{
    Accounts, COMMAND_ATTEMPTS_MAX, Ledger, LedgerError, Outcome, Refunds, Request, Subscriptions,
    backoff,
};

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
    let now = accounts.now();
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

/// Approves a refund request and returns its credits to the account, atomically.
pub async fn approve_refund(
    accounts: &Ledger<Accounts>,
    refunds: &Ledger<Refunds>,
    refund_id: RefundId,
    admin: AdminId,
    reason: Reason,
    metadata: Metadata,
) -> Result<Outcome<AccountView>, LedgerError> {
    let approve = Request {
        key: refund_id.clone(),
        command: RefundCommand::Approve { admin, reason },
        command_id: None,
        metadata: metadata.clone(),
    };
    for attempt in 0..COMMAND_ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let approval = refunds.prepare(&approve).await?;
        let ask = match (approval.view.status, approval.view.ask) {
            (Some(RefundStatus::Approved), Some(ask)) => ask,
            _ => return Err(DomainError::RefundNotFound.into()),
        };
        let credit = Request {
            key: ask.user_id,
            command: AccountCommand::Refund {
                refund_id: refund_id.clone(),
                reference: ask.reference,
                amount: ask.amount,
            },
            command_id: None,
            metadata: metadata.clone(),
        };
        let Some(approval) = approval.append else {
            // Approved already (a re-sent approval): its credits went back with it, or,
            // for a request approved before this rule, go back now; a replay either way.
            return accounts.execute(credit).await;
        };
        // A refusal here appends nothing: the request is still requested.
        let credited = accounts.prepare(&credit).await?;
        let Some(credits) = credited.append else {
            return Err(DomainError::RefundNotAllowed(
                "the account returns nothing for this refund".into(),
            )
            .into());
        };
        let account_stream = credits.stream_id.clone();
        match accounts.store().append_many(vec![approval, credits]).await {
            Ok(result) => {
                return Ok(Outcome {
                    view: credited.view,
                    version: result
                        .stream_version(&account_stream)
                        .unwrap_or(credited.version),
                    position: result.position(),
                    replayed: result.replayed,
                });
            }
            // Another writer moved either stream: decide both again.
            Err(StoreError::WrongExpectedVersion { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(LedgerError::Contention {
        stream_id: format!("refund-{refund_id}"),
        attempts: COMMAND_ATTEMPTS_MAX,
    })
}

/// What a paid payment buys, given: credits deposited (opening the account if need
/// be) or the plan started or renewed. Idempotent by the payment id (`deposit:<id>`,
/// `pay:<id>`), so the webhook that saw the success and the reactor that follows the
/// log may both run it: it happens once. Returns the position of its last event.
pub async fn fulfil_payment(
    accounts: &Ledger<Accounts>,
    subscriptions: &Ledger<Subscriptions>,
    payment_id: PaymentId,
    user_id: UserId,
    purpose: Purpose,
    metadata: Metadata,
) -> Result<u64, LedgerError> {
    match purpose {
        Purpose::Credits(amount) => {
            accounts
                .command(
                    user_id,
                    AccountCommand::Open {
                        username: None,
                        language: None,
                    },
                    metadata.clone(),
                )
                .await?;
            let outcome = accounts
                .command(
                    user_id,
                    AccountCommand::Deposit { payment_id, amount },
                    metadata,
                )
                .await?;
            Ok(outcome.position)
        }
        Purpose::Plan(plan) => {
            let command_id = format!("pay:{payment_id}");
            let outcome = subscriptions
                .execute(Request {
                    key: user_id,
                    command: SubscriptionCommand::Pay { payment_id, plan },
                    command_id: Some(command_id),
                    metadata,
                })
                .await?;
            Ok(outcome.position)
        }
    }
}

/// Defines (or redefines) an operator's campaign and configures the slot that posts
/// each of its posts (`campaign::post_slot_id`). Each step is idempotent (the same
/// definition again is a no-op), so a definition cut short is completed by applying
/// it again; a post dropped from the rotation keeps its slot, which the poster no
/// longer reaches.
pub async fn define_campaign(
    ledgers: &crate::Ledgers,
    id: &str,
    def: tally_domain::campaign::CampaignDef,
    metadata: Metadata,
) -> Result<(), LedgerError> {
    use tally_domain::campaign::{self, CampaignCommand};
    use tally_domain::slot::SlotCommand;
    use tally_domain::values::{CampaignId, SlotId};
    campaign::check_campaign_id(id)?;
    ledgers
        .campaigns
        .command(
            CampaignId::new(id)?,
            CampaignCommand::Define(def.clone()),
            metadata.clone(),
        )
        .await?;
    for post in &def.posts {
        ledgers
            .slots
            .command(
                SlotId::new(campaign::post_slot_id(id, &post.post_id))?,
                SlotCommand::Configure(campaign::post_slot_config(id, &def, post)),
                metadata.clone(),
            )
            .await?;
    }
    Ok(())
}

/// What a reversal did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reversal {
    /// Who had paid.
    pub user_id: UserId,
    /// The position of its last event (or, re-sent, of the streams' last).
    pub position: u64,
    /// True when it was on record already (a re-sent reversal).
    pub replayed: bool,
    /// The payer's available credits after (a credits payment).
    pub available: Option<rust_decimal::Decimal>,
    /// The plan's period end after (a plan payment).
    pub period_end: Option<chrono::DateTime<chrono::Utc>>,
}

/// Reverses a paid payment (a refund to the payer) and takes back what it gave,
/// atomically: `payment.reversed` with, for credits, an adjustment of minus the
/// credits (`reversal:<payment id>`), or, for a plan, its period taken back
/// (`subscription.period_taken_back`: the period's end moves back by one period; a
/// period then in the past expires). When the user has spent the credits, it is
/// refused with what is available, unless `allow_negative` lets the balance go below
/// zero (the adjustment says so). A reversal re-sent is answered as the first.
pub async fn reverse_payment(
    ledgers: &crate::Ledgers,
    payment_id: PaymentId,
    admin: AdminId,
    reason: Reason,
    allow_negative: bool,
    metadata: Metadata,
) -> Result<Reversal, LedgerError> {
    use tally_domain::payment::{PaymentCommand, PaymentStatus};
    use tally_domain::values::{AdjustmentId, SignedAmount};
    let reverse = Request {
        key: payment_id.clone(),
        command: PaymentCommand::Reverse {
            reason: reason.clone(),
        },
        command_id: None,
        metadata: metadata.clone(),
    };
    for attempt in 0..COMMAND_ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(backoff(attempt)).await;
        }
        let reversal = ledgers.payments.prepare(&reverse).await?;
        let Some(terms) = reversal.view.terms.clone() else {
            return Err(DomainError::PaymentNotFound.into());
        };
        if reversal.view.status != Some(PaymentStatus::Reversed) {
            return Err(DomainError::PaymentConflict(
                "only a succeeded payment can be reversed".into(),
            )
            .into());
        }
        let user_id = terms.user_id;
        // What the payment gave, taken back: prepared on its stream, appended with
        // the reversal (or, re-sent, answered from the log).
        let (taken_back, answer) = match &terms.purpose {
            Purpose::Credits(credits) => {
                let take_back = Request {
                    key: user_id,
                    command: AccountCommand::Adjust {
                        adjustment_id: AdjustmentId::new(format!("reversal:{payment_id}"))?,
                        amount: SignedAmount::new(-credits.get())?,
                        reason: Reason::new(format!(
                            "payment {payment_id} refunded: {}",
                            reason.as_str()
                        ))?,
                        admin: admin.clone(),
                        allow_negative,
                    },
                    command_id: None,
                    metadata: metadata.clone(),
                };
                if reversal.append.is_none() {
                    // Reversed already (a re-sent reversal): its adjustment went with it.
                    let outcome = ledgers.accounts.execute(take_back).await?;
                    return Ok(Reversal {
                        user_id,
                        position: outcome.position,
                        replayed: true,
                        available: Some(outcome.view.available),
                        period_end: None,
                    });
                }
                // Spent: refused here, and nothing appended (the payment stays paid).
                let taken = ledgers.accounts.prepare(&take_back).await?;
                let answer = (Some(taken.view.available), None);
                (taken.append, answer)
            }
            Purpose::Plan(plan) => {
                let take_back = Request {
                    key: user_id,
                    command: SubscriptionCommand::TakeBack {
                        payment_id: payment_id.clone(),
                        plan: plan.clone(),
                    },
                    command_id: Some(format!("take-back:{payment_id}")),
                    metadata: metadata.clone(),
                };
                if reversal.append.is_none() {
                    let outcome = ledgers.subscriptions.execute(take_back).await?;
                    return Ok(Reversal {
                        user_id,
                        position: outcome.position,
                        replayed: true,
                        available: None,
                        period_end: outcome.view.period_end,
                    });
                }
                let taken = ledgers.subscriptions.prepare(&take_back).await?;
                let answer = (None, taken.view.period_end);
                (taken.append, answer)
            }
        };
        let Some(reversed) = reversal.append else {
            continue;
        };
        let mut appends = vec![reversed];
        appends.extend(taken_back);
        match ledgers.accounts.store().append_many(appends).await {
            Ok(result) => {
                return Ok(Reversal {
                    user_id,
                    position: result.position(),
                    replayed: result.replayed,
                    available: answer.0,
                    period_end: answer.1,
                });
            }
            Err(StoreError::WrongExpectedVersion { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Err(LedgerError::Contention {
        stream_id: format!("payment-{payment_id}"),
        attempts: COMMAND_ATTEMPTS_MAX,
    })
}
