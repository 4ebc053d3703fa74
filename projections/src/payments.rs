//! Read model `payments`: every payment with its terms (who, provider, price, what it
//! buys) and where it is (pending, succeeded, failed, reversed); and
//! `duplicate_charges`: further charges of a provider for a payment already paid,
//! money to give back. Payments are few next to account events, so each event is one
//! statement.

use sqlx::AnyConnection;
use tally_domain::payment::{PaymentEvent, Purpose};

use crate::ProjectionError;
use crate::events::{Batch, amount_cents, stream_event};
use crate::sql::execute;

crate::read_model!(
    /// The payments read model.
    PaymentsReadModel {
        name: "payments",
        version: 3,
        schema: "payments.sql",
        tables: ["payments", "duplicate_charges"],
        apply: apply,
    }
);

/// How a batch of events changes the tables.
async fn apply(conn: &mut AnyConnection, g: &str, batch: &Batch) -> Result<(), ProjectionError> {
    for recorded in batch.events() {
        let Some((payment_id, event)) = stream_event::<PaymentEvent>(recorded, "payment")? else {
            continue;
        };
        let position = recorded.position as i64;
        let at = recorded.occurred_at.timestamp_micros();
        let (status, reason) = match event {
            PaymentEvent::Created(terms) => {
                let (purpose, credits, plan) = match &terms.purpose {
                    Purpose::Credits(amount) => (
                        "credits",
                        amount_cents(recorded.position, amount.get())?,
                        String::new(),
                    ),
                    Purpose::Plan(plan) => ("plan", 0, plan.to_string()),
                };
                execute(
                    conn,
                    &format!(
                        "INSERT INTO payments{g} (payment_id, user_id, provider, amount_cents, \
                         currency, purpose, credits_cents, plan, status, provider_payment_id, \
                         reason, created_at, updated_at, position) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', '', '', $9, $10, $11)"
                    ),
                    &[
                        payment_id.into(),
                        terms.user_id.get().into(),
                        terms.provider.as_str().into(),
                        amount_cents(recorded.position, terms.amount.get())?.into(),
                        terms.currency.as_str().into(),
                        purpose.into(),
                        credits.into(),
                        plan.into(),
                        at.into(),
                        at.into(),
                        position.into(),
                    ],
                )
                .await?;
                continue;
            }
            PaymentEvent::Succeeded {
                provider_payment_id,
                ..
            } => {
                execute(
                    conn,
                    &format!(
                        "UPDATE payments{g} SET status = 'succeeded', provider_payment_id = $1, \
                         updated_at = $2, position = $3 WHERE payment_id = $4"
                    ),
                    &[
                        provider_payment_id.into(),
                        at.into(),
                        position.into(),
                        payment_id.into(),
                    ],
                )
                .await?;
                continue;
            }
            PaymentEvent::DuplicateCharge {
                user_id,
                provider_payment_id,
                amount,
                currency,
            } => {
                execute(
                    conn,
                    &format!(
                        "INSERT INTO duplicate_charges{g} (provider, provider_payment_id, \
                         payment_id, user_id, amount_cents, currency, occurred_at, position) \
                         SELECT provider, $1, payment_id, $2, $3, $4, $5, $6 \
                         FROM payments{g} WHERE payment_id = $7"
                    ),
                    &[
                        provider_payment_id.as_str().into(),
                        user_id.get().into(),
                        amount_cents(recorded.position, amount.get())?.into(),
                        currency.as_str().into(),
                        at.into(),
                        position.into(),
                        payment_id.into(),
                    ],
                )
                .await?;
                continue;
            }
            PaymentEvent::Invoiced(invoice) => {
                execute(
                    conn,
                    &format!(
                        "UPDATE payments{g} SET pay_url = $1, updated_at = $2, position = $3 \
                         WHERE payment_id = $4"
                    ),
                    &[
                        invoice.pay_url.as_str().into(),
                        at.into(),
                        position.into(),
                        payment_id.into(),
                    ],
                )
                .await?;
                continue;
            }
            PaymentEvent::Failed { reason } => ("failed", reason),
            PaymentEvent::Reversed { reason, .. } => ("reversed", reason),
        };
        execute(
            conn,
            &format!(
                "UPDATE payments{g} SET status = $1, reason = $2, updated_at = $3, \
                 position = $4 WHERE payment_id = $5"
            ),
            &[
                status.into(),
                reason.as_str().into(),
                at.into(),
                position.into(),
                payment_id.into(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// A charge of a provider for a payment already paid (or failed), as the
/// `duplicate_charges` read model has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateCharge {
    /// The provider.
    pub provider: String,
    /// The provider's id of this other charge.
    pub provider_payment_id: String,
    /// The payment it was for.
    pub payment_id: String,
    /// Who paid.
    pub user_id: i64,
    /// What it took.
    pub amount: rust_decimal::Decimal,
    /// In what currency.
    pub currency: String,
    /// When, microseconds since the epoch.
    pub occurred_at: i64,
    /// The position of its event.
    pub position: i64,
}

/// Duplicate charges to give back, newest first, at most `limit`; only `user`'s when
/// given.
pub async fn duplicate_charges(
    pool: &sqlx::AnyPool,
    user: Option<i64>,
    limit: i64,
) -> Result<Vec<DuplicateCharge>, ProjectionError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT provider, provider_payment_id, payment_id, user_id, amount_cents, currency, \
         occurred_at, position FROM duplicate_charges \
         WHERE $1 = 0 OR user_id = $1 ORDER BY position DESC LIMIT $2",
    )
    .bind(user.unwrap_or(0))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|row| DuplicateCharge {
            provider: row.get(0),
            provider_payment_id: row.get(1),
            payment_id: row.get(2),
            user_id: row.get(3),
            amount: crate::from_cents(row.get(4)),
            currency: row.get(5),
            occurred_at: row.get(6),
            position: row.get(7),
        })
        .collect())
}

/// The ids of a user's payments with `provider` still pending, newest first (by
/// creation time).
pub async fn pending_payments(
    pool: &sqlx::AnyPool,
    user: i64,
    provider: &str,
) -> Result<Vec<String>, ProjectionError> {
    Ok(sqlx::query_scalar(
        "SELECT payment_id FROM payments WHERE user_id = $1 AND provider = $2 \
         AND status = 'pending' ORDER BY created_at DESC, payment_id DESC",
    )
    .bind(user)
    .bind(provider)
    .fetch_all(pool)
    .await?)
}

/// A user's paid payments (`succeeded`), newest first, at most `limit`: what an
/// admin may refund. `(payment_id, amount, currency)`.
pub async fn paid_payments(
    pool: &sqlx::AnyPool,
    user: i64,
    limit: i64,
) -> Result<Vec<(String, rust_decimal::Decimal, String)>, ProjectionError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT payment_id, amount_cents, currency FROM payments WHERE user_id = $1 \
         AND status = 'succeeded' ORDER BY updated_at DESC, payment_id DESC LIMIT $2",
    )
    .bind(user)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), crate::from_cents(r.get(1)), r.get(2)))
        .collect())
}

/// A payment as the read model has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    /// Whose.
    pub user_id: i64,
    /// The provider.
    pub provider: String,
    /// What the user pays.
    pub amount: rust_decimal::Decimal,
    /// In which currency.
    pub currency: String,
    /// What it buys.
    pub purpose: PaymentPurpose,
    /// `pending`, `succeeded`, `failed` or `reversed`.
    pub status: String,
    /// The provider's charge id, once paid.
    pub provider_payment_id: Option<String>,
    /// Why it failed or was reversed.
    pub reason: Option<String>,
    /// The provider's pay page, once invoiced.
    pub pay_url: Option<String>,
    /// The position of its last event.
    pub position: i64,
}

/// What a payment buys, as the read model has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentPurpose {
    /// Credits.
    Credits(rust_decimal::Decimal),
    /// A plan.
    Plan(String),
}

/// The payment with this id.
pub async fn payment(
    pool: &sqlx::AnyPool,
    payment_id: &str,
) -> Result<Option<PaymentRow>, ProjectionError> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT user_id, provider, amount_cents, currency, purpose, credits_cents, plan, \
         status, provider_payment_id, reason, position, pay_url FROM payments \
         WHERE payment_id = $1",
    )
    .bind(payment_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| {
        let text = |i: usize| Some(row.get::<String, _>(i)).filter(|t| !t.is_empty());
        PaymentRow {
            user_id: row.get(0),
            provider: row.get(1),
            amount: crate::from_cents(row.get(2)),
            currency: row.get(3),
            purpose: match row.get::<String, _>(4).as_str() {
                "credits" => PaymentPurpose::Credits(crate::from_cents(row.get(5))),
                _ => PaymentPurpose::Plan(row.get(6)),
            },
            status: row.get(7),
            provider_payment_id: text(8),
            reason: text(9),
            pay_url: text(11),
            position: row.get(10),
        }
    }))
}

/// A paid (or paid then reversed) payment of one provider, with its charge id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderCharge {
    /// The payment.
    pub payment_id: String,
    /// The provider's charge id.
    pub provider_payment_id: String,
    /// Who paid.
    pub user_id: i64,
    /// What they paid.
    pub amount: rust_decimal::Decimal,
    /// `succeeded` or `reversed`.
    pub status: String,
}

/// Every payment `provider` charged (succeeded or reversed), by payment id: what a
/// reconciliation with the provider's own list compares.
pub async fn provider_charges(
    pool: &sqlx::AnyPool,
    provider: &str,
) -> Result<Vec<ProviderCharge>, ProjectionError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT payment_id, provider_payment_id, user_id, amount_cents, status FROM payments \
         WHERE provider = $1 AND status IN ('succeeded', 'reversed') ORDER BY payment_id",
    )
    .bind(provider)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| ProviderCharge {
            payment_id: r.get(0),
            provider_payment_id: r.get(1),
            user_id: r.get(2),
            amount: crate::from_cents(r.get(3)),
            status: r.get(4),
        })
        .collect())
}
