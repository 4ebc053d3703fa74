//! Read model `daily_stats`: what happened each UTC day — new users, top-ups and
//! revenue per currency, credits deposited, granted, spent, refunded and adjusted,
//! holds captured, released and expired, posts succeeded and failed. One row per day,
//! metric and unit; a batch's changes are summed in memory and added with one upsert.
//!
//! A payment's success names what it bought but not its price, so the projection keeps
//! each payment's price (`stats_payment_terms`) from its creation.

use std::collections::{BTreeMap, HashMap};

use sqlx::{AnyConnection, AssertSqlSafe, Row};
use tally_domain::account::AccountEvent;
use tally_domain::payment::PaymentEvent;
use tally_domain::slot::{Outcome, SlotEvent};

use crate::ProjectionError;
use crate::events::{Batch, amount_cents, stream_event, stream_key};
use crate::sql::{Value, insert_rows, placeholders};

crate::read_model!(
    /// The daily statistics read model.
    DailyStatsReadModel {
        name: "daily_stats",
        version: 1,
        schema: "daily_stats.sql",
        tables: ["daily_stats", "stats_payment_terms"],
        apply: apply,
    }
);

/// Unit of credit metrics (cents of credits).
pub const CREDITS: &str = "credits";
/// Unit of plain counts.
pub const COUNT: &str = "count";

type Tally = BTreeMap<(String, &'static str, String), i64>;

fn add(tally: &mut Tally, day: &str, metric: &'static str, unit: &str, value: i64) {
    *tally
        .entry((day.to_string(), metric, unit.to_string()))
        .or_default() += value;
}

/// How a batch of events changes the tables.
async fn apply(conn: &mut AnyConnection, g: &str, batch: &Batch) -> Result<(), ProjectionError> {
    use AccountEvent as A;
    // Prices of payments that succeed or are reversed in this batch but were
    // created before it.
    let mut terms: HashMap<String, (i64, String)> = HashMap::new();
    let wanted: Vec<&str> = batch
        .events()
        .iter()
        .filter(|e| {
            matches!(
                e.event_type.as_str(),
                "payment.succeeded" | "payment.reversed"
            )
        })
        .filter_map(|e| stream_key(e, "payment"))
        .collect();
    for chunk in wanted.chunks(500) {
        let sql = format!(
            "SELECT payment_id, amount_cents, currency FROM stats_payment_terms{g} \
             WHERE payment_id IN ({})",
            placeholders(conn, 0, chunk.len()).join(", ")
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(&mut *conn).await? {
            terms.insert(row.get(0), (row.get(1), row.get(2)));
        }
    }

    let mut tally = Tally::new();
    let mut new_terms: Vec<Vec<Value>> = Vec::new();
    for (i, recorded) in batch.events().iter().enumerate() {
        let day = recorded.occurred_at.format("%Y-%m-%d").to_string();
        let position = recorded.position;
        let c = |amount| amount_cents(position, amount);
        if let Some((_, event)) = batch.account(i) {
            match event {
                A::Opened { .. } => add(&mut tally, &day, "new_users", COUNT, 1),
                A::Deposited { amount, .. } => add(
                    &mut tally,
                    &day,
                    "credits_deposited_cents",
                    CREDITS,
                    c(amount.get())?,
                ),
                A::Granted { amount, .. } => add(
                    &mut tally,
                    &day,
                    "credits_granted_cents",
                    CREDITS,
                    c(amount.get())?,
                ),
                A::Debited { amount, .. } => add(
                    &mut tally,
                    &day,
                    "credits_spent_cents",
                    CREDITS,
                    c(amount.get())?,
                ),
                A::Adjusted { amount, .. } => {
                    add(&mut tally, &day, "adjustments", COUNT, 1);
                    add(
                        &mut tally,
                        &day,
                        "credits_adjusted_cents",
                        CREDITS,
                        c(amount.get())?,
                    );
                }
                A::HoldPlaced { .. } => add(&mut tally, &day, "holds_placed", COUNT, 1),
                A::HoldCaptured { captured, .. } => {
                    add(&mut tally, &day, "holds_captured", COUNT, 1);
                    add(
                        &mut tally,
                        &day,
                        "credits_spent_cents",
                        CREDITS,
                        c(captured.get())?,
                    );
                }
                A::HoldReleased { .. } => add(&mut tally, &day, "holds_released", COUNT, 1),
                A::HoldExpired { .. } => add(&mut tally, &day, "holds_expired", COUNT, 1),
                A::Refunded { amount, .. } => {
                    add(&mut tally, &day, "refunds", COUNT, 1);
                    add(
                        &mut tally,
                        &day,
                        "credits_refunded_cents",
                        CREDITS,
                        c(amount.get())?,
                    );
                }
                A::Blocked { .. }
                | A::Unblocked { .. }
                | A::AlertSet { .. }
                | A::AlertRearmed { .. } => {}
                A::BalanceLow { .. } => add(&mut tally, &day, "low_balance_alerts", COUNT, 1),
            }
            continue;
        }
        if let Some((payment_id, event)) = stream_event::<PaymentEvent>(recorded, "payment")? {
            match event {
                PaymentEvent::Created(t) => {
                    let amount = c(t.amount.get())?;
                    terms.insert(payment_id.to_string(), (amount, t.currency.clone()));
                    new_terms.push(vec![payment_id.into(), amount.into(), t.currency.into()]);
                }
                PaymentEvent::Succeeded { .. } | PaymentEvent::Reversed { .. } => {
                    let (amount, currency) =
                        terms
                            .get(payment_id)
                            .cloned()
                            .ok_or_else(|| ProjectionError::Event {
                                position,
                                detail: format!("payment {payment_id} has no creation before it"),
                            })?;
                    let (count, money) = match event {
                        PaymentEvent::Succeeded { .. } => ("topups", "revenue_cents"),
                        _ => ("reversals", "reversed_cents"),
                    };
                    add(&mut tally, &day, count, &currency, 1);
                    add(&mut tally, &day, money, &currency, amount);
                }
                PaymentEvent::Failed { .. } => add(&mut tally, &day, "payments_failed", COUNT, 1),
                PaymentEvent::Invoiced(_) => {}
                PaymentEvent::DuplicateCharge {
                    amount, currency, ..
                } => {
                    add(&mut tally, &day, "duplicate_charges", &currency, 1);
                    add(
                        &mut tally,
                        &day,
                        "duplicate_charged_cents",
                        &currency,
                        c(amount.get())?,
                    );
                }
            }
            continue;
        }
        if let Some((_, SlotEvent::PostAttempted(attempt))) =
            stream_event::<SlotEvent>(recorded, "slot")?
        {
            let metric = match attempt.outcome {
                Outcome::Succeeded => "posts_succeeded",
                Outcome::Failed => "posts_failed",
                Outcome::Unknown => "posts_unknown",
            };
            add(&mut tally, &day, metric, COUNT, 1);
        }
    }
    insert_rows(
        conn,
        &format!("stats_payment_terms{g}"),
        &["payment_id", "amount_cents", "currency"],
        &new_terms,
        "",
    )
    .await?;
    let rows: Vec<Vec<Value>> = tally
        .into_iter()
        .map(|((day, metric, unit), value)| {
            vec![day.into(), metric.into(), unit.into(), value.into()]
        })
        .collect();
    let t = format!("daily_stats{g}");
    insert_rows(
        conn,
        &t,
        &["day", "metric", "unit", "value"],
        &rows,
        &format!(
            "ON CONFLICT (day, metric, unit) DO UPDATE SET value = {t}.value + excluded.value"
        ),
    )
    .await
}

/// One figure of one day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyFigure {
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// What is counted (`new_users`, `credits_spent`, …).
    pub metric: String,
    /// A currency, `credits` (in cents) or `count`.
    pub unit: String,
    /// The figure.
    pub value: i64,
}

/// The figures of the days `from` to `to` (inclusive, `YYYY-MM-DD`), by day, metric
/// and unit.
pub async fn daily_figures(
    pool: &sqlx::AnyPool,
    from: &str,
    to: &str,
) -> Result<Vec<DailyFigure>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT day, metric, unit, value FROM daily_stats WHERE day >= $1 AND day <= $2 \
         ORDER BY day, metric, unit",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| DailyFigure {
            day: r.get(0),
            metric: r.get(1),
            unit: r.get(2),
            value: r.get(3),
        })
        .collect())
}
