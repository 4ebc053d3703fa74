//! The payment stream (`payment-<payment id>`): a purchase from creation to success,
//! failure or reversal.
//!
//! Providers retry: a webhook or a `successful_payment` update may arrive many times.
//! A payment succeeds once; the same success again changes nothing, while a success
//! that disagrees with the payment (another amount, currency or provider payment id)
//! is a `payment_conflict` — never a second credit.
//!
//! One provider charge settles one payment in the whole ledger: the success's command
//! id is the charge ([`charge_id`]), unique across payments. A second real charge for
//! a payment already paid (two checkouts of one invoice both charged, a second
//! transaction) is money received all the same: it is recorded as
//! `payment.duplicate_charge`, once per charge, credits nothing, and waits for an admin
//! to give it back.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::DomainError;
use crate::values::{Amount, PackId, PlanId, Reason, UserId};

/// What a payment buys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// A number of credits.
    Credits(Amount),
    /// One period of a plan.
    Plan(PlanId),
}

/// Where a payment is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Created, waiting for the provider.
    Pending,
    /// Paid.
    Succeeded,
    /// Not paid.
    Failed,
    /// Paid, then taken back (refund by the provider, chargeback).
    Reversed,
}

/// The terms a payment was created with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// Who pays.
    pub user_id: UserId,
    /// Payment provider, e.g. `stars` or `oxapay`.
    pub provider: String,
    /// Price.
    pub amount: Amount,
    /// Currency of the price, e.g. `XTR`.
    pub currency: String,
    /// What it buys.
    pub purpose: Purpose,
}

/// A payment as its events made it; `None` terms before creation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The terms, once created.
    pub terms: Option<Terms>,
    /// Where it is (meaningful once created).
    pub status: Option<PaymentStatus>,
    /// The provider's id of the successful charge.
    pub provider_payment_id: Option<String>,
    /// Further charges recorded as duplicates.
    #[serde(default)]
    pub duplicate_charges: u32,
    /// The invoice the provider made for it, once made.
    #[serde(default)]
    pub invoice: Option<Invoice>,
}

/// An invoice a provider made for a payment: where the payer pays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    /// The provider's pay page, or the Stars invoice link.
    pub pay_url: String,
    /// The provider's own id of the invoice or payment, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// What can be asked of a payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentCommand {
    /// Create it (again with the same terms: a no-op).
    Create(Terms),
    /// The provider says it was paid.
    Succeed {
        /// Who says so: the payment's own provider, or the report is refused.
        provider: String,
        /// The provider's charge id.
        provider_payment_id: String,
        /// What the provider says was paid.
        amount: Amount,
        /// In what currency.
        currency: String,
    },
    /// The provider says it was not paid.
    Fail {
        /// Who says so: the payment's own provider, or the report is refused.
        provider: String,
        /// Why.
        reason: Reason,
    },
    /// The provider took the money back.
    Reverse {
        /// Why.
        reason: Reason,
    },
    /// The provider made an invoice for the pending payment. The first invoice
    /// recorded is the payment's; another later (a retried request that reached the
    /// provider twice) changes nothing, so every caller is sent to the same page.
    RecordInvoice(Invoice),
}

/// What happened to a payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PaymentEvent {
    /// Created, pending.
    #[serde(rename = "payment.created")]
    Created(Terms),
    /// Paid.
    #[serde(rename = "payment.succeeded")]
    Succeeded {
        /// Who paid (repeated so reactors need not read the creation).
        user_id: UserId,
        /// The provider's charge id.
        provider_payment_id: String,
        /// What it buys.
        purpose: Purpose,
    },
    /// Not paid.
    #[serde(rename = "payment.failed")]
    Failed {
        /// Why.
        reason: Reason,
    },
    /// A second charge of the provider for a payment already paid (or failed): money
    /// received that bought nothing, to be given back.
    #[serde(rename = "payment.duplicate_charge")]
    DuplicateCharge {
        /// Who paid.
        user_id: UserId,
        /// The provider's id of this other charge.
        provider_payment_id: String,
        /// What it took.
        amount: Amount,
        /// In what currency.
        currency: String,
    },
    /// The provider made the invoice the payer pays.
    #[serde(rename = "payment.invoiced")]
    Invoiced(Invoice),
    /// Taken back.
    #[serde(rename = "payment.reversed")]
    Reversed {
        /// Who had paid.
        user_id: UserId,
        /// What it had bought.
        purpose: Purpose,
        /// Why.
        reason: Reason,
    },
}

/// The command id of a provider's charge: `charge:<provider>:<charge id>`, unique in
/// the whole ledger (one charge, one payment).
pub fn charge_id(provider: &str, provider_payment_id: &str) -> String {
    format!("charge:{provider}:{provider_payment_id}")
}

/// The longest provider or provider payment id accepted.
pub const PROVIDER_ID_BYTES_MAX: usize = 128;

fn check_text(what: &str, text: &str) -> Result<(), DomainError> {
    if text.trim().is_empty() || text.len() > PROVIDER_ID_BYTES_MAX {
        return Err(DomainError::Validation(format!(
            "{what} must be 1 to {PROVIDER_ID_BYTES_MAX} characters"
        )));
    }
    crate::values::check_text_chars(what, text)
}

/// Decides what a command does to a payment. `config` holds the plan catalog a
/// plan purchase must name.
pub fn decide(
    state: &Payment,
    command: &PaymentCommand,
    config: &Config,
) -> Result<Vec<PaymentEvent>, DomainError> {
    use PaymentCommand as C;
    use PaymentEvent as E;
    if let C::Create(terms) = command {
        check_text("provider", &terms.provider)?;
        check_text("currency", &terms.currency)?;
        if let Purpose::Plan(plan) = &terms.purpose
            && !config.plans.contains_key(plan)
        {
            return Err(DomainError::Validation(format!(
                "there is no plan {plan}; plans are {}",
                config
                    .plans
                    .keys()
                    .map(PlanId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        return match &state.terms {
            None => Ok(vec![E::Created(terms.clone())]),
            Some(existing) if existing == terms => Ok(vec![]),
            Some(_) => Err(DomainError::IdempotencyConflict(
                "this payment id was already created with other terms".into(),
            )),
        };
    }
    let (Some(terms), Some(status)) = (&state.terms, state.status) else {
        return Err(DomainError::PaymentNotFound);
    };
    // A payment is settled only by its own provider: a webhook of another (signed with
    // that provider's secret, or at its route) changes nothing.
    if let C::Succeed { provider, .. } | C::Fail { provider, .. } = command
        && provider != &terms.provider
    {
        return Err(DomainError::ProviderMismatch {
            payment_provider: terms.provider.clone(),
            reported_by: provider.clone(),
        });
    }
    match command {
        C::Create(_) => Ok(vec![]),
        C::RecordInvoice(invoice) => {
            if invoice.pay_url.len() > 2048 || !invoice.pay_url.starts_with("http") {
                return Err(DomainError::Validation(
                    "an invoice's pay URL must be an http(s) URL of at most 2048 bytes".into(),
                ));
            }
            match (status, &state.invoice) {
                (PaymentStatus::Pending, None) => Ok(vec![E::Invoiced(invoice.clone())]),
                (PaymentStatus::Pending, Some(_)) => Ok(vec![]),
                _ => Err(DomainError::PaymentConflict(
                    "the payment is no longer pending; it needs no invoice".into(),
                )),
            }
        }
        C::Succeed {
            provider_payment_id,
            amount,
            currency,
            ..
        } => {
            check_text("provider payment id", provider_payment_id)?;
            if *amount != terms.amount || currency != &terms.currency {
                return Err(DomainError::PaymentConflict(format!(
                    "paid {amount} {currency}, but the payment is for {} {}",
                    terms.amount, terms.currency
                )));
            }
            match status {
                PaymentStatus::Pending => Ok(vec![E::Succeeded {
                    user_id: terms.user_id,
                    provider_payment_id: provider_payment_id.clone(),
                    purpose: terms.purpose.clone(),
                }]),
                PaymentStatus::Succeeded | PaymentStatus::Reversed
                    if state.provider_payment_id.as_deref() == Some(provider_payment_id) =>
                {
                    Ok(vec![])
                }
                // Another real charge (its id is new to the whole ledger, or the
                // command service would have answered its replay): recorded, never
                // credited.
                PaymentStatus::Succeeded | PaymentStatus::Reversed | PaymentStatus::Failed => {
                    Ok(vec![E::DuplicateCharge {
                        user_id: terms.user_id,
                        provider_payment_id: provider_payment_id.clone(),
                        amount: *amount,
                        currency: currency.clone(),
                    }])
                }
            }
        }
        C::Fail { reason, .. } => match status {
            PaymentStatus::Pending => Ok(vec![E::Failed {
                reason: reason.clone(),
            }]),
            PaymentStatus::Failed => Ok(vec![]),
            PaymentStatus::Succeeded | PaymentStatus::Reversed => {
                Err(DomainError::PaymentConflict(
                    "the payment succeeded; a paid payment is reversed, not failed".into(),
                ))
            }
        },
        C::Reverse { reason } => match status {
            PaymentStatus::Succeeded => Ok(vec![E::Reversed {
                user_id: terms.user_id,
                purpose: terms.purpose.clone(),
                reason: reason.clone(),
            }]),
            PaymentStatus::Reversed => Ok(vec![]),
            PaymentStatus::Pending | PaymentStatus::Failed => Err(DomainError::PaymentConflict(
                "only a succeeded payment can be reversed".into(),
            )),
        },
    }
}

/// Folds one event into a payment.
pub fn evolve(mut state: Payment, event: &PaymentEvent) -> Payment {
    match event {
        PaymentEvent::Created(terms) => {
            state.terms = Some(terms.clone());
            state.status = Some(PaymentStatus::Pending);
        }
        PaymentEvent::Succeeded {
            provider_payment_id,
            ..
        } => {
            state.status = Some(PaymentStatus::Succeeded);
            state.provider_payment_id = Some(provider_payment_id.clone());
        }
        PaymentEvent::Failed { .. } => state.status = Some(PaymentStatus::Failed),
        PaymentEvent::DuplicateCharge { .. } => state.duplicate_charges += 1,
        PaymentEvent::Reversed { .. } => state.status = Some(PaymentStatus::Reversed),
        PaymentEvent::Invoiced(invoice) => state.invoice = Some(invoice.clone()),
    }
    state
}

/// The plan or credits pack a purchase names, looked up in the catalog: a convenience
/// for adapters that sell packs by id.
pub fn pack_purpose(
    config: &Config,
    pack: &PackId,
) -> Result<(Purpose, Amount, String), DomainError> {
    let found = config
        .credit_packs
        .get(pack)
        .ok_or_else(|| DomainError::Validation(format!("there is no credit pack {pack}")))?;
    Ok((
        Purpose::Credits(found.credits),
        found.price,
        found.currency.clone(),
    ))
}
