//! Read model `subscriptions`: each user's plan, slots, status and paid period, and
//! every admin correction with the plan and slots before and after — the answer to
//! "who changed this user's slots, and why". One statement per event: subscription
//! events are few.

use sqlx::AnyConnection;
use tally_domain::subscription::SubscriptionEvent;

use crate::ProjectionError;
use crate::events::{Batch, stream_event};
use crate::sql::execute;

crate::read_model!(
    /// The subscriptions read model.
    SubscriptionsReadModel {
        name: "subscriptions",
        version: 1,
        schema: "subscriptions.sql",
        tables: ["subscriptions", "subscription_corrections"],
        apply: apply,
    }
);

/// How a batch of events changes the tables.
async fn apply(conn: &mut AnyConnection, g: &str, batch: &Batch) -> Result<(), ProjectionError> {
    use SubscriptionEvent as E;
    for recorded in batch.events() {
        let Some((user, event)) = stream_event::<E>(recorded, "subscription")? else {
            continue;
        };
        let user: i64 = user.parse().map_err(|_| ProjectionError::Event {
            position: recorded.position,
            detail: format!("subscription stream of user {user:?}"),
        })?;
        let position = recorded.position as i64;
        let at = recorded.occurred_at.timestamp_micros();
        match event {
            E::Started {
                plan,
                slots,
                period_end,
                ..
            } => {
                execute(
                    conn,
                    &format!(
                        "INSERT INTO subscriptions{g} (user_id, plan, slots, status, period_end, \
                         started_at, payments, corrections, updated_at, position) \
                         VALUES ($1, $2, $3, 'active', $4, $5, 1, 0, $6, $7) \
                         ON CONFLICT (user_id) DO UPDATE SET plan = excluded.plan, \
                         slots = excluded.slots, status = 'active', \
                         period_end = excluded.period_end, started_at = excluded.started_at, \
                         payments = subscriptions{g}.payments + 1, \
                         updated_at = excluded.updated_at, position = excluded.position"
                    ),
                    &[
                        user.into(),
                        plan.to_string().into(),
                        i64::from(slots).into(),
                        period_end.timestamp_micros().into(),
                        at.into(),
                        at.into(),
                        position.into(),
                    ],
                )
                .await?;
            }
            E::Renewed { period_end, .. } => {
                execute(
                    conn,
                    &format!(
                        "UPDATE subscriptions{g} SET status = 'active', period_end = $1, \
                         payments = payments + 1, updated_at = $2, position = $3 \
                         WHERE user_id = $4"
                    ),
                    &[
                        period_end.timestamp_micros().into(),
                        at.into(),
                        position.into(),
                        user.into(),
                    ],
                )
                .await?;
            }
            E::PeriodTakenBack { period_end, .. } => {
                execute(
                    conn,
                    &format!(
                        "UPDATE subscriptions{g} SET period_end = $1, updated_at = $2, \
                         position = $3 WHERE user_id = $4"
                    ),
                    &[
                        period_end.timestamp_micros().into(),
                        at.into(),
                        position.into(),
                        user.into(),
                    ],
                )
                .await?;
            }
            E::Cancelled { .. } | E::Expired => {
                let status = match event {
                    E::Cancelled { .. } => "cancelled",
                    _ => "expired",
                };
                execute(
                    conn,
                    &format!(
                        "UPDATE subscriptions{g} SET status = $1, updated_at = $2, \
                         position = $3 WHERE user_id = $4"
                    ),
                    &[status.into(), at.into(), position.into(), user.into()],
                )
                .await?;
            }
            E::SlotsCorrected {
                plan_before,
                slots_before,
                plan_after,
                slots_after,
                admin,
                reason,
            } => {
                execute(
                    conn,
                    &format!(
                        "UPDATE subscriptions{g} SET plan = $1, slots = $2, \
                         corrections = corrections + 1, updated_at = $3, position = $4 \
                         WHERE user_id = $5"
                    ),
                    &[
                        plan_after.to_string().into(),
                        i64::from(slots_after).into(),
                        at.into(),
                        position.into(),
                        user.into(),
                    ],
                )
                .await?;
                execute(
                    conn,
                    &format!(
                        "INSERT INTO subscription_corrections{g} (user_id, position, \
                         plan_before, slots_before, plan_after, slots_after, admin, reason, \
                         occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                    ),
                    &[
                        user.into(),
                        position.into(),
                        plan_before
                            .map(|p| p.to_string())
                            .unwrap_or_default()
                            .into(),
                        i64::from(slots_before).into(),
                        plan_after.to_string().into(),
                        i64::from(slots_after).into(),
                        admin.as_str().into(),
                        reason.as_str().into(),
                        at.into(),
                    ],
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// A user's subscription as the read model has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// The plan.
    pub plan: String,
    /// Ad slots the plan gives.
    pub slots: i64,
    /// `active`, `expired` or `cancelled`.
    pub status: String,
    /// When the paid period ends.
    pub period_end: Option<chrono::DateTime<chrono::Utc>>,
    /// Periods paid so far.
    pub periods_paid: i64,
    /// The position of its last event.
    pub position: i64,
}

/// `user`'s subscription, if they ever had one.
pub async fn subscription(
    pool: &sqlx::AnyPool,
    user: i64,
) -> Result<Option<SubscriptionRow>, ProjectionError> {
    use sqlx::Row;
    let row = sqlx::query(
        "SELECT plan, slots, status, period_end, payments, position FROM subscriptions \
         WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| SubscriptionRow {
        plan: r.get(0),
        slots: r.get(1),
        status: r.get(2),
        period_end: chrono::DateTime::from_timestamp_micros(r.get(3)),
        periods_paid: r.get(4),
        position: r.get(5),
    }))
}

/// An admin's correction of a subscription, as the read model has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorrectionRow {
    /// The position of its event.
    pub position: i64,
    /// The plan before.
    pub plan_before: String,
    /// The slots before.
    pub slots_before: i64,
    /// The plan after.
    pub plan_after: String,
    /// The slots after.
    pub slots_after: i64,
    /// Who corrected it.
    pub admin: String,
    /// Why.
    pub reason: String,
    /// When.
    pub occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The corrections of `user`'s subscription, oldest first.
pub async fn subscription_corrections(
    pool: &sqlx::AnyPool,
    user: i64,
) -> Result<Vec<CorrectionRow>, ProjectionError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT position, plan_before, slots_before, plan_after, slots_after, admin, reason, \
         occurred_at FROM subscription_corrections WHERE user_id = $1 ORDER BY position",
    )
    .bind(user)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| CorrectionRow {
            position: r.get(0),
            plan_before: r.get(1),
            slots_before: r.get(2),
            plan_after: r.get(3),
            slots_after: r.get(4),
            admin: r.get(5),
            reason: r.get(6),
            occurred_at: chrono::DateTime::from_timestamp_micros(r.get(7)),
        })
        .collect())
}

/// An active plan and when its paid period ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndingPlan {
    /// Whose.
    pub user_id: i64,
    /// The plan.
    pub plan: String,
    /// When its period ends, microseconds since the epoch.
    pub period_end: i64,
}

/// Active plans whose period ends after `from` and at or before `until`
/// (microseconds), soonest first, at most `limit`.
pub async fn plans_ending(
    pool: &sqlx::AnyPool,
    from: i64,
    until: i64,
    limit: i64,
) -> Result<Vec<EndingPlan>, ProjectionError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT user_id, plan, period_end FROM subscriptions \
         WHERE status = 'active' AND period_end > $1 AND period_end <= $2 \
         ORDER BY period_end LIMIT $3",
    )
    .bind(from)
    .bind(until)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| EndingPlan {
            user_id: r.get(0),
            plan: r.get(1),
            period_end: r.get(2),
        })
        .collect())
}

/// Active or cancelled subscriptions whose period ended at or before `at`
/// (microseconds), soonest first, at most `limit`: (user id, period end) for the
/// expiry sweep.
pub async fn periods_ended(
    pool: &sqlx::AnyPool,
    at: i64,
    limit: i64,
) -> Result<Vec<(i64, i64)>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT user_id, period_end FROM subscriptions \
         WHERE status IN ('active', 'cancelled') AND period_end <= $1 \
         ORDER BY period_end LIMIT $2",
    )
    .bind(at)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
