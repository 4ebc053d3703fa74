//! Read model `subscriptions`: each user's plan, slots, status and paid period, and
//! every admin correction with the plan and slots before and after — the answer to
//! "who changed this user's slots, and why". One statement per event: subscription
//! events are few.

use async_trait::async_trait;
use sqlx::AnyConnection;
use tally_domain::subscription::SubscriptionEvent;

use crate::ProjectionError;
use crate::events::{Batch, stream_event};
use crate::runtime::Projection;
use crate::sql::execute;

/// The subscriptions read model.
pub struct Subscriptions;

#[async_trait]
impl Projection for Subscriptions {
    fn name(&self) -> &'static str {
        "subscriptions"
    }

    fn version(&self) -> i64 {
        1
    }

    fn schema(&self) -> &'static str {
        include_str!("../../schema/projections/subscriptions.sql")
    }

    fn tables(&self) -> &'static [&'static str] {
        &["subscriptions", "subscription_corrections"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        g: &str,
        batch: &Batch,
    ) -> Result<(), ProjectionError> {
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
}
