//! Telegram Stars payments, the way Telegram runs them:
//!
//! 1. The user picks a pack or plan: a payment is created in the ledger (pending) and
//!    a Stars invoice (`sendInvoice`, currency `XTR`, no provider token) whose payload
//!    is the payment's id is sent.
//! 2. Telegram asks `pre_checkout_query`: answered ok only if the payload names a
//!    pending payment of this user with this amount and currency; else refused with a
//!    reason. Nothing is appended either way.
//! 3. `successful_payment`: the payment succeeds with Telegram's charge id (a second
//!    delivery of the same charge changes nothing; another charge for the same
//!    payment is a conflict), then the credits or the plan are given, idempotent by
//!    the payment id, and the user gets a confirmation.
//!
//! One file: buying (Stars invoices, providers' pay links), Telegram's checkout and refunds share the catalog lookups and the payment's checks.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use std::sync::Arc;
use tally_domain::payment::{PaymentCommand, PaymentStatus, Purpose, Terms};
use tally_domain::values::{Amount, PackId, PaymentId, PlanId};
use teloxide::prelude::*;
use teloxide::types::{
    InlineKeyboardButton, InlineKeyboardMarkup, LabeledPrice, PreCheckoutQuery, SuccessfulPayment,
};

use tally_ledger::checkout::CheckoutError;

use crate::texts::Text;
use crate::users::{Who, open};
use crate::{BotError, Context, TgBot};

/// The provider name of Telegram Stars payments in the ledger.
pub const STARS: &str = "stars";
/// The currency of Telegram Stars.
pub const XTR: &str = "XTR";

/// A new payment id for a user's purchase: unique per invoice, at most 64 characters.
fn new_payment_id(user: i64) -> Result<PaymentId, BotError> {
    Ok(PaymentId::new(format!(
        "tg-{user}-{}",
        uuid::Uuid::now_v7().simple()
    ))?)
}

/// Stars are whole: a price in XTR must be a positive integer that fits Telegram's.
fn stars(price: Decimal) -> Result<u32, BotError> {
    match (price.fract().is_zero(), price.to_u32()) {
        (true, Some(n)) if n > 0 => Ok(n),
        _ => Err(BotError::Internal(format!(
            "the configured price {price} XTR is not a whole number of Stars"
        ))),
    }
}

/// What the user buys: a credit pack or one period of a plan, by its id.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Item<'a> {
    /// A credit pack (`t:` buttons).
    Pack(&'a str),
    /// A plan (`p:` buttons).
    Plan(&'a str),
}

/// A purchase resolved from the catalog: what it buys, its words, its prices.
struct Priced {
    purpose: Purpose,
    title: String,
    description: String,
    /// The catalog entry, for its price in each currency.
    entry: Entry,
    /// The button data prefix and id (`t:pack_5`).
    data: String,
}

/// A pack or plan of the catalog.
enum Entry {
    Pack(tally_domain::config::CreditPack),
    Plan(tally_domain::config::Plan),
}

impl Priced {
    /// The price in `currency`, if the catalog has one.
    fn price_in(&self, currency: &str) -> Option<Amount> {
        match &self.entry {
            Entry::Pack(pack) => pack.price_in(currency),
            Entry::Plan(plan) => plan.price_in(currency),
        }
    }
}

fn priced(context: &Context, who: &Who, item: Item<'_>) -> Result<Priced, BotError> {
    match item {
        Item::Pack(pack) => {
            let id = PackId::new(pack.to_string())?;
            let (purpose, _, _) = tally_domain::payment::pack_purpose(&context.config, &id)?;
            let Purpose::Credits(credits) = purpose else {
                return Err(BotError::Internal("a pack that is not credits".into()));
            };
            let found = context
                .config
                .credit_packs
                .get(&id)
                .cloned()
                .ok_or_else(|| BotError::Internal(format!("there is no credit pack {id}")))?;
            Ok(Priced {
                purpose: Purpose::Credits(credits),
                title: who.say(Text::PackTitle {
                    credits: credits.get(),
                }),
                description: who.say(Text::PackDescription {
                    credits: credits.get(),
                }),
                entry: Entry::Pack(found),
                data: format!("t:{id}"),
            })
        }
        Item::Plan(plan) => {
            let id = PlanId::new(plan.to_string())?;
            let Some(found) = context.config.plans.get(&id).cloned() else {
                return Err(tally_domain::DomainError::Validation(format!(
                    "there is no plan {plan}"
                ))
                .into());
            };
            Ok(Priced {
                purpose: Purpose::Plan(id.clone()),
                title: who.say(Text::PlanTitle { plan }),
                description: who.say(Text::PlanDescription {
                    plan,
                    slots: found.slots,
                    days: found.period_days,
                }),
                entry: Entry::Plan(found),
                data: format!("p:{id}"),
            })
        }
    }
}

/// The user picked a pack or plan (and maybe how to pay). With more than one provider
/// configured and no choice yet, asks how to pay (Stars first); a Stars choice is a
/// Stars invoice in the chat; another provider's is its pay page as a link button,
/// the invoice made by Tally (`tally_ledger::checkout`), the credits given when the
/// provider's callback settles it (the user is told then, once, by the notifier).
pub(crate) async fn buy(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    item: Item<'_>,
    provider: Option<&str>,
) -> Result<(), BotError> {
    let priced = priced(context, who, item)?;
    // Stars first: the bot sells them itself (sendInvoice); then every provider Tally
    // invoices through, each at its price in its currency.
    let mut offered: Vec<(String, Amount, String)> = priced
        .price_in(XTR)
        .map(|price| (STARS.to_string(), price, XTR.to_string()))
        .into_iter()
        .collect();
    for p in context.providers.invoicing() {
        let Some(currency) = p.currencies().first() else {
            continue;
        };
        if p.name() != STARS
            && let Some(price) = priced.price_in(currency)
        {
            offered.push((p.name().to_string(), price, currency.clone()));
        }
    }
    let chosen = match provider {
        None if offered.len() > 1 => {
            let buttons = offered
                .iter()
                .map(|(name, price, currency)| {
                    vec![InlineKeyboardButton::callback(
                        who.say(Text::PayWith {
                            provider: name,
                            price: price.get(),
                            currency,
                        }),
                        format!("{}:{name}", priced.data),
                    )]
                })
                .collect::<Vec<_>>();
            bot.send_message(who.chat, who.say(Text::PayChoose))
                .reply_markup(InlineKeyboardMarkup::new(buttons))
                .await?;
            return Ok(());
        }
        None | Some(STARS) => None,
        Some(name) => {
            let (_, price, currency) = offered
                .into_iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| BotError::Refused(format!("{name} is not a way to pay here")))?;
            let adapter = context
                .providers
                .get(name)
                .cloned()
                .ok_or_else(|| BotError::Refused(format!("{name} is not a way to pay here")))?;
            Some((price, currency, adapter))
        }
    };
    let Some((price, currency, provider)) = chosen else {
        let price = priced.price_in(XTR).ok_or_else(|| {
            BotError::Internal("the catalog has no price in Telegram Stars (XTR)".into())
        })?;
        return invoice(
            bot,
            context,
            who,
            priced.purpose,
            price,
            XTR.into(),
            priced.title,
            priced.description,
        )
        .await;
    };
    open(context, who).await?;
    let terms = Terms {
        user_id: who.user_id()?,
        provider: provider.name().to_string(),
        amount: price,
        currency: currency.clone(),
        purpose: priced.purpose,
    };
    let text = tally_ledger::checkout::InvoiceText {
        title: priced.title,
        description: priced.description,
        return_url: None,
        email: None,
    };
    let made = tally_ledger::checkout::checkout(
        &context.ledgers,
        provider.as_ref(),
        new_payment_id(who.user)?,
        terms,
        text,
        Context::by_user(who.user),
    )
    .await;
    let invoice = match made {
        Ok(outcome) => outcome.view.invoice,
        Err(CheckoutError::Provider(error)) => {
            tracing::warn!(provider = provider.name(), %error, "the provider made no invoice");
            bot.send_message(
                who.chat,
                who.say(Text::PayUnavailable {
                    provider: provider.name(),
                }),
            )
            .await?;
            return Ok(());
        }
        Err(CheckoutError::Ledger(error)) => return Err(error.into()),
    };
    let url = invoice
        .and_then(|i| url::Url::parse(&i.pay_url).ok())
        .ok_or_else(|| BotError::Internal("the provider's pay page is not a URL".into()))?;
    bot.send_message(
        who.chat,
        who.say(Text::PayLink {
            provider: provider.name(),
            price: price.get(),
            currency: &currency,
        }),
    )
    .reply_markup(InlineKeyboardMarkup::new(vec![vec![
        InlineKeyboardButton::url(who.say(Text::PayButton), url),
    ]]))
    .await?;
    Ok(())
}

/// Fails the user's pending Stars payments beyond the newest
/// [`tally_domain::Config::open_invoices_max`] (`newest` just created among them), so
/// unpaid invoices do not pile up: their pre-checkout is then refused, and money that
/// arrives for one all the same is recorded as a duplicate charge, never lost.
async fn expire_older_invoices(
    context: &Context,
    who: &Who,
    newest: &PaymentId,
) -> Result<(), BotError> {
    // The read model may not show the newest yet: it is kept by name. A read model
    // behind the log shows fewer pending ones, so fewer expire: never a newer one.
    let pending = tally_projections::pending_payments(context.pool(), who.user, STARS).await?;
    let keep = (context.config.open_invoices_max as usize).saturating_sub(1);
    let older = pending.into_iter().filter(|id| id != newest.as_str());
    for payment_id in older.skip(keep) {
        let payment_id = PaymentId::new(payment_id)?;
        let failed = context
            .ledgers
            .payments
            .command(
                payment_id.clone(),
                PaymentCommand::Fail {
                    provider: STARS.into(),
                    reason: tally_domain::values::Reason::new(
                        "expired: the user asked for newer invoices",
                    )?,
                },
                Context::by_user(who.user),
            )
            .await;
        // Paid meanwhile: it stays paid.
        if let Err(error) = failed
            && error.code() != "payment_conflict"
        {
            return Err(error.into());
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn invoice(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    purpose: Purpose,
    price: Amount,
    currency: String,
    title: String,
    description: String,
) -> Result<(), BotError> {
    if currency != XTR {
        return Err(BotError::Internal(format!(
            "the bot sells in Telegram Stars (XTR) only; the catalog says {currency}"
        )));
    }
    let amount = stars(price.get())?;
    open(context, who).await?;
    let payment_id = new_payment_id(who.user)?;
    context
        .ledgers
        .payments
        .command(
            payment_id.clone(),
            PaymentCommand::Create(Terms {
                user_id: who.user_id()?,
                provider: STARS.into(),
                amount: price,
                currency: currency.clone(),
                purpose,
            }),
            Context::by_user(who.user),
        )
        .await?;
    expire_older_invoices(context, who, &payment_id).await?;
    bot.send_invoice(
        who.chat,
        title.clone(),
        description,
        payment_id.to_string(),
        currency,
        vec![LabeledPrice::new(title, amount)],
    )
    .await?;
    Ok(())
}

/// Why a checkout does not match its payment; `None` when it does.
async fn checkout_problem(
    context: &Context,
    query: &PreCheckoutQuery,
) -> Result<Option<String>, BotError> {
    let Ok(payment_id) = PaymentId::new(query.invoice_payload.clone()) else {
        return Ok(Some("the invoice payload is not a payment id".into()));
    };
    let payment = context.ledgers.payments.load(&payment_id).await?.state;
    let Some(terms) = payment.terms else {
        return Ok(Some(format!("there is no payment {payment_id}")));
    };
    if terms.provider != STARS {
        return Ok(Some(format!(
            "payment {payment_id} is a {} payment, not a Stars one",
            terms.provider
        )));
    }
    let user = query.from.id.0 as i64;
    if terms.user_id.get() != user {
        return Ok(Some(format!(
            "payment {payment_id} belongs to another user"
        )));
    }
    if payment.status != Some(PaymentStatus::Pending) {
        return Ok(Some(format!("payment {payment_id} is not open")));
    }
    if query.currency != terms.currency || Decimal::from(query.total_amount) != terms.amount.get() {
        return Ok(Some(format!(
            "the checkout is for {} {}, the payment for {} {}",
            query.total_amount, query.currency, terms.amount, terms.currency
        )));
    }
    Ok(None)
}

/// Telegram's last question before it takes the money: is this invoice still good?
pub async fn on_pre_checkout(
    bot: TgBot,
    context: Arc<Context>,
    query: PreCheckoutQuery,
) -> Result<(), BotError> {
    let user = query.from.id.0 as i64;
    let lang = context
        .lang(user, query.from.language_code.as_deref())
        .await;
    let problem = match checkout_problem(&context, &query).await {
        Ok(problem) => problem,
        Err(error) => {
            tracing::error!(%error, "pre-checkout check failed; refusing the checkout");
            Some(error.to_string())
        }
    };
    match problem {
        None => {
            bot.answer_pre_checkout_query(query.id, true).await?;
        }
        Some(problem) => {
            tracing::warn!(user, payload = %query.invoice_payload, problem, "pre-checkout refused");
            bot.answer_pre_checkout_query(query.id, false)
                .error_message(lang.say(Text::CheckoutRefused))
                .await?;
        }
    }
    Ok(())
}

/// The money moved: succeed the payment with Telegram's charge id, give what it
/// bought, confirm.
pub(crate) async fn on_successful_payment(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    paid: &SuccessfulPayment,
) -> Result<(), BotError> {
    let payment_id = PaymentId::new(paid.invoice_payload.clone())?;
    let outcome = context
        .ledgers
        .payments
        .command(
            payment_id.clone(),
            PaymentCommand::Succeed {
                provider: STARS.into(),
                provider_payment_id: paid.telegram_payment_charge_id.0.clone(),
                amount: Amount::new(Decimal::from(paid.total_amount))?,
                currency: paid.currency.to_string(),
            },
            Context::by_user(who.user),
        )
        .await?;
    let Some(terms) = outcome.view.terms else {
        return Err(BotError::Internal(format!(
            "payment {payment_id} has no terms"
        )));
    };
    let charge = paid.telegram_payment_charge_id.0.as_str();
    if outcome.view.provider_payment_id.as_deref() != Some(charge) {
        // Another charge for a paid invoice: on record (payment.duplicate_charge),
        // nothing credited; the user and the admins are told (once: a redelivery is a
        // replay).
        if !outcome.replayed {
            tracing::warn!(%payment_id, charge, "a second Stars charge for a paid payment");
            metrics::counter!("tally_duplicate_charges_total", "provider" => STARS).increment(1);
            let note = crate::texts::AdminText::DuplicateCharge {
                user: terms.user_id.get(),
                payment_id: payment_id.as_str(),
                charge,
                amount: terms.amount.get(),
                currency: &terms.currency,
            }
            .say();
            for admin in &context.admin_ids {
                let _ = bot.send_message(ChatId(*admin), note.clone()).await;
            }
        }
        bot.send_message(who.chat, who.say(Text::DuplicateCharge))
            .await?;
        return Ok(());
    }
    tally_ledger::workflows::fulfil_payment(
        &context.ledgers.accounts,
        &context.ledgers.subscriptions,
        payment_id,
        terms.user_id,
        terms.purpose.clone(),
        Context::by_user(who.user),
    )
    .await?;
    let text = match &terms.purpose {
        Purpose::Credits(credits) => {
            let account = context.ledgers.accounts.load(&terms.user_id).await?.state;
            who.say(Text::TopupDone {
                credits: credits.get(),
                available: account.available,
            })
        }
        Purpose::Plan(plan) => who.say(Text::PlanDone {
            plan: plan.as_str(),
        }),
    };
    bot.send_message(who.chat, text).await?;
    Ok(())
}

/// `/refund_payment PAYMENT [force] REASON`: an admin gives a Stars payment back.
/// The ledger's rule is checked before the money moves (credits the user spent are
/// not taken back unless `force` lets the balance go negative); then Telegram
/// returns the Stars (`refundStarPayment`; one refunded before counts as done), and
/// the ledger records the reversal and takes the credits back in one append. `None`
/// for arguments that do not parse.
pub(crate) async fn refund_by_admin(
    _bot: &TgBot,
    context: &Context,
    admin: i64,
    words: &[&str],
) -> Result<Option<String>, BotError> {
    let Some(payment) = words.first() else {
        return Ok(None);
    };
    let (force, rest) = match words.get(1) {
        Some(&"force") => (true, words.get(2..).unwrap_or_default()),
        _ => (false, words.get(1..).unwrap_or_default()),
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let reason = tally_domain::values::Reason::new(rest.join(" "))?;
    let payment_id = PaymentId::new(payment.to_string())?;
    let paid = context.ledgers.payments.load(&payment_id).await?.state;
    let (Some(terms), Some(charge)) = (paid.terms, paid.provider_payment_id) else {
        return Err(BotError::Refused(format!(
            "payment {payment_id} is not a paid payment"
        )));
    };
    // The ledger checks the refund on the log before the provider gives any money
    // back, then records the reversal (tally_ledger::checkout::refund).
    let outcome = match tally_ledger::checkout::refund(
        &context.ledgers,
        &context.providers,
        payment_id.clone(),
        tally_domain::values::AdminId::new(admin.to_string())?,
        reason,
        force,
        Context::by_admin(admin),
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(CheckoutError::Ledger(tally_ledger::LedgerError::Domain(
            tally_domain::DomainError::InsufficientCredits { available, .. },
        ))) => {
            let credits = match &terms.purpose {
                Purpose::Credits(credits) => credits.get(),
                Purpose::Plan(_) => Decimal::ZERO,
            };
            return Err(BotError::Refused(format!(
                "user {} has spent the credits: {} available of {} to take back. Nothing was \
                 refunded; add `force` to refund anyway and take them back into a negative balance",
                terms.user_id.get(),
                available.normalize(),
                credits.normalize()
            )));
        }
        Err(CheckoutError::Ledger(error)) => return Err(error.into()),
        Err(CheckoutError::Provider(error)) => return Err(BotError::Refused(error.to_string())),
    };
    Ok(Some(match &terms.purpose {
        Purpose::Credits(credits) => crate::texts::AdminText::PaymentRefunded {
            payment: payment_id.as_str(),
            charge: &charge,
            credits: credits.get(),
            user: terms.user_id.get(),
            available: outcome.available.unwrap_or_default(),
        }
        .say(),
        Purpose::Plan(plan) => crate::texts::AdminText::PlanPaymentRefunded {
            payment: payment_id.as_str(),
            charge: &charge,
            plan: plan.as_str(),
            user: terms.user_id.get(),
            period_end: &outcome
                .period_end
                .map(|end| crate::users::day_and_time(end.timestamp_micros()))
                .unwrap_or_default(),
        }
        .say(),
    }))
}

/// Telegram refunded a Stars payment itself (`refunded_payment`): recorded as the
/// reversal of the payment its payload names (the credits taken back, into a negative
/// balance if spent: the Stars are gone), once however often the message arrives. A
/// charge that is not the payment's is logged and left alone.
pub(crate) async fn on_refunded_payment(
    context: &Context,
    refunded: &teloxide::types::RefundedPayment,
) -> Result<(), BotError> {
    let payment_id = PaymentId::new(refunded.invoice_payload.clone())?;
    let paid = context.ledgers.payments.load(&payment_id).await?.state;
    let charge = &refunded.telegram_payment_charge_id.0;
    if paid.provider_payment_id.as_deref() != Some(charge.as_str()) {
        tracing::warn!(%payment_id, charge, "a refund by Telegram of a charge that is not the payment's; ignored");
        return Ok(());
    }
    tally_ledger::workflows::reverse_payment(
        &context.ledgers,
        payment_id,
        tally_domain::values::AdminId::new("telegram")?,
        tally_domain::values::Reason::new("refunded by Telegram")?,
        true,
        tally_store::Metadata::by(tally_store::Actor::new(
            tally_store::ActorKind::Webhook,
            "telegram",
        )),
    )
    .await?;
    Ok(())
}
