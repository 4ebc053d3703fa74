//! Money through a provider adapter (`tally_providers`), on the command side.
//!
//! - [`checkout`]: a payment is created pending (idempotent by its id), then its
//!   invoice is made at the provider once and recorded in the payment's stream
//!   (`payment.invoiced`), so a retried request, a second process or the bot asking
//!   again is sent to the same pay page; the provider is asked again only while no
//!   invoice is on record (YooKassa's `Idempotence-Key` and Paystack's unique
//!   reference make even that second ask the same invoice).
//! - [`settle`]: a provider's notice applied to the payment it names. A notice that is
//!   not proof by itself is confirmed by fetching the payment from the provider first,
//!   and only what the provider's API says is applied. A payment is settled only by
//!   its own provider (the payment stream refuses another), for the amount and
//!   currency it was created with, once per charge; a paid payment's credits or plan
//!   are given at once (idempotent by the payment id, as the reactor does); a refund
//!   by the provider reverses the payment and takes back its credits, into the
//!   negative if they were spent, since the money is gone.

use tally_domain::DomainError;
use tally_domain::payment::{Invoice, Payment, PaymentCommand, PaymentStatus, Terms};
use tally_domain::values::{AdminId, Amount, PaymentId, Reason};
use tally_providers::{Notice, NoticeEvent, Provider, ProviderError};
use tally_store::Metadata;

use crate::workflows::{fulfil_payment, reverse_payment};
use crate::{LedgerError, Ledgers, Outcome, Request};

/// Why a checkout or a notice could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    /// The ledger refused (or failed).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The provider refused, could not be reached, or sent something unreadable.
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// What the payer sees on the invoice, and where they return.
#[derive(Clone, Debug, Default)]
pub struct InvoiceText {
    /// A short title.
    pub title: String,
    /// What it buys.
    pub description: String,
    /// Where the payer returns after paying (the provider's setting when `None`).
    pub return_url: Option<String>,
    /// The payer's e-mail, where the provider needs one.
    pub email: Option<String>,
}

/// Creates the payment (the same terms again: the one on record) and, while it is
/// pending, its invoice at `provider` once. The answer's view holds the invoice.
pub async fn checkout(
    ledgers: &Ledgers,
    provider: &dyn Provider,
    payment_id: PaymentId,
    terms: Terms,
    text: InvoiceText,
    metadata: Metadata,
) -> Result<Outcome<Payment>, CheckoutError> {
    if terms.provider != provider.name() {
        return Err(ProviderError::Invalid(format!(
            "the payment's provider is {}, not {}",
            terms.provider,
            provider.name()
        ))
        .into());
    }
    if !provider
        .currencies()
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&terms.currency))
    {
        return Err(ProviderError::Invalid(format!(
            "{} takes {}, not {}",
            provider.name(),
            provider.currencies().join(", "),
            terms.currency
        ))
        .into());
    }
    if !tally_providers::minor::fits(terms.amount.get(), &terms.currency) {
        return Err(ProviderError::Invalid(format!(
            "{} {} has more decimals than {} allows",
            terms.amount, terms.currency, terms.currency
        ))
        .into());
    }
    let created = ledgers
        .payments
        .execute(Request {
            key: payment_id.clone(),
            command: PaymentCommand::Create(terms.clone()),
            command_id: Some("create".into()),
            metadata: metadata.clone(),
        })
        .await?;
    if created.view.invoice.is_some() || created.view.status != Some(PaymentStatus::Pending) {
        return Ok(created);
    }
    let made = provider
        .create_invoice(&tally_providers::Invoice {
            payment_id: payment_id.to_string(),
            user_id: terms.user_id.get(),
            amount: terms.amount.get(),
            currency: terms.currency.clone(),
            title: text.title,
            description: text.description,
            return_url: text.return_url,
            email: text.email,
        })
        .await?;
    let recorded = ledgers
        .payments
        .command(
            payment_id,
            PaymentCommand::RecordInvoice(Invoice {
                pay_url: made.pay_url,
                reference: made.reference,
            }),
            metadata,
        )
        .await?;
    Ok(recorded)
}

/// What a notice did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The payment it was about (`None`: a notice Tally does not act on).
    pub payment_id: Option<PaymentId>,
    /// The payment's status after it.
    pub status: Option<PaymentStatus>,
    /// The position of the last event it appended (or of the payment's last).
    pub position: u64,
    /// True when it was a further charge for a payment already paid (recorded as a
    /// duplicate charge; credits nothing).
    pub duplicate_charge: bool,
}

/// Applies a provider's notice (confirmed with the provider first when it is not
/// proof by itself) to the payment it names.
pub async fn settle(
    ledgers: &Ledgers,
    provider: &dyn Provider,
    notice: Notice,
    metadata: Metadata,
) -> Result<Settled, CheckoutError> {
    let notice = match notice.conclusive {
        true => notice,
        false => {
            let fetched = provider.fetch(&notice).await?;
            if !fetched.conclusive {
                return Err(ProviderError::upstream(
                    provider.name(),
                    "the fetched payment is not conclusive",
                )
                .into());
            }
            // The notice named what to fetch; what is applied is what was fetched.
            Notice {
                payment_id: fetched.payment_id.or(notice.payment_id),
                ..fetched
            }
        }
    };
    let nothing = |payment_id| Settled {
        payment_id,
        status: None,
        position: 0,
        duplicate_charge: false,
    };
    let Some(payment_id) = notice.payment_id.clone() else {
        return match notice.event {
            NoticeEvent::Pending => Ok(nothing(None)),
            _ => Err(ProviderError::Invalid(format!(
                "{}'s payment {} names no payment of this ledger",
                provider.name(),
                notice.reference
            ))
            .into()),
        };
    };
    let payment_id = PaymentId::new(payment_id).map_err(LedgerError::from)?;
    let name = provider.name().to_string();
    let command = match notice.event {
        NoticeEvent::Pending => return Ok(nothing(Some(payment_id))),
        NoticeEvent::Paid {
            charge,
            amount,
            currency,
        } => PaymentCommand::Succeed {
            provider: name.clone(),
            provider_payment_id: charge,
            amount: Amount::new(amount).map_err(LedgerError::from)?,
            currency,
        },
        NoticeEvent::Failed { reason } => PaymentCommand::Fail {
            provider: name.clone(),
            reason: Reason::new(reason).map_err(LedgerError::from)?,
        },
        NoticeEvent::Refunded { reason } => {
            return refunded(ledgers, &name, payment_id, reason, metadata).await;
        }
    };
    let charge = match &command {
        PaymentCommand::Succeed {
            provider_payment_id,
            ..
        } => Some(provider_payment_id.clone()),
        _ => None,
    };
    let outcome = ledgers
        .payments
        .command(payment_id.clone(), command, metadata.clone())
        .await?;
    let duplicate_charge = charge
        .as_deref()
        .is_some_and(|c| outcome.view.provider_payment_id.as_deref() != Some(c));
    let mut position = outcome.position;
    if let (Some(PaymentStatus::Succeeded), Some(terms)) =
        (outcome.view.status, &outcome.view.terms)
    {
        position = position.max(
            fulfil_payment(
                &ledgers.accounts,
                &ledgers.subscriptions,
                payment_id.clone(),
                terms.user_id,
                terms.purpose.clone(),
                metadata,
            )
            .await?,
        );
    }
    Ok(Settled {
        payment_id: Some(payment_id),
        status: outcome.view.status,
        position,
        duplicate_charge,
    })
}

/// A refund the provider made: the payment reversed and its credits taken back.
async fn refunded(
    ledgers: &Ledgers,
    provider: &str,
    payment_id: PaymentId,
    reason: String,
    metadata: Metadata,
) -> Result<Settled, CheckoutError> {
    let reason = Reason::new(reason).map_err(LedgerError::from)?;
    // Only the payment's own provider reverses it.
    let probe = ledgers
        .payments
        .prepare(&Request {
            key: payment_id.clone(),
            command: PaymentCommand::Reverse {
                reason: reason.clone(),
            },
            command_id: None,
            metadata: metadata.clone(),
        })
        .await?;
    match &probe.view.terms {
        None => return Err(LedgerError::from(DomainError::PaymentNotFound).into()),
        Some(terms) if terms.provider != provider => {
            return Err(LedgerError::from(DomainError::ProviderMismatch {
                payment_provider: terms.provider.clone(),
                reported_by: provider.to_string(),
            })
            .into());
        }
        Some(_) => {}
    }
    let admin = AdminId::new(format!("provider:{provider}")).map_err(LedgerError::from)?;
    let outcome =
        reverse_payment(ledgers, payment_id.clone(), admin, reason, true, metadata).await?;
    Ok(Settled {
        payment_id: Some(payment_id),
        status: Some(PaymentStatus::Reversed),
        position: outcome.position,
        duplicate_charge: false,
    })
}

/// Gives a paid payment's money back through its provider (Stars:
/// `refundStarPayment`; Paystack and YooKassa: their refund APIs) and records the
/// reversal, taking back what it gave (its credits, or its plan's period). Checked on
/// the log before any money moves: only a paid payment is refunded, and when the payer has spent the
/// credits it is refused with what is available, unless `allow_negative` takes them
/// back into a negative balance (a recorded adjustment). Once the provider has given
/// the money back, the reversal is recorded whatever was spent meanwhile: reality
/// first. A refund asked again is answered from the log, with no second provider call.
pub async fn refund(
    ledgers: &Ledgers,
    providers: &tally_providers::Providers,
    payment_id: PaymentId,
    admin: AdminId,
    reason: Reason,
    allow_negative: bool,
    metadata: Metadata,
) -> Result<crate::workflows::Reversal, CheckoutError> {
    use tally_domain::payment::Purpose;
    let paid = ledgers.payments.load(&payment_id).await?.state;
    let Some(terms) = paid.terms.clone() else {
        return Err(LedgerError::from(DomainError::PaymentNotFound).into());
    };
    let reversed = || {
        reverse_payment(
            ledgers,
            payment_id.clone(),
            admin.clone(),
            reason.clone(),
            true,
            metadata.clone(),
        )
    };
    if paid.status == Some(PaymentStatus::Reversed) {
        return Ok(reversed().await?);
    }
    let (Some(PaymentStatus::Succeeded), Some(charge)) = (paid.status, paid.provider_payment_id)
    else {
        return Err(LedgerError::from(DomainError::PaymentConflict(format!(
            "payment {payment_id} is not paid; only a paid payment is refunded"
        )))
        .into());
    };
    if let Purpose::Credits(credits) = terms.purpose {
        let available = ledgers.accounts.load(&terms.user_id).await?.state.available;
        if available < credits.get() && !allow_negative {
            return Err(LedgerError::from(DomainError::InsufficientCredits {
                available,
                requested: credits.get(),
            })
            .into());
        }
    }
    let provider = providers.get(&terms.provider).ok_or_else(|| {
        ProviderError::Unsupported(format!(
            "provider {} is not configured here; refund it at the provider, then record it",
            terms.provider
        ))
    })?;
    provider
        .refund(&tally_providers::RefundOrder {
            payment_id: payment_id.to_string(),
            user_id: terms.user_id.get(),
            charge,
            amount: terms.amount.get(),
            currency: terms.currency.clone(),
        })
        .await?;
    Ok(reversed().await?)
}
