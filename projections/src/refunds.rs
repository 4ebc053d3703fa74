//! Read model `refunds`: every refund request, its decision, who made it and why. The
//! admins' queue is the requests still `requested`, oldest first.

use sqlx::AnyConnection;
use tally_domain::refund::RefundEvent;

use crate::ProjectionError;
use crate::events::{Batch, amount_cents, stream_event};
use crate::sql::execute;

crate::read_model!(
    /// The refund queue read model.
    RefundsReadModel {
        name: "refunds",
        version: 1,
        schema: "refunds.sql",
        tables: ["refunds"],
        apply: apply,
    }
);

/// How a batch of events changes the tables.
async fn apply(conn: &mut AnyConnection, g: &str, batch: &Batch) -> Result<(), ProjectionError> {
    for recorded in batch.events() {
        let Some((refund_id, event)) = stream_event::<RefundEvent>(recorded, "refund")? else {
            continue;
        };
        let position = recorded.position as i64;
        let at = recorded.occurred_at.timestamp_micros();
        let (status, admin, reason) = match event {
            RefundEvent::Requested(ask) => {
                execute(
                    conn,
                    &format!(
                        "INSERT INTO refunds{g} (refund_id, user_id, reference, amount_cents, \
                         reason, requested_by, status, decided_by, decision_reason, \
                         requested_at, decided_at, position) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'requested', '', '', $7, 0, $8)"
                    ),
                    &[
                        refund_id.into(),
                        ask.user_id.get().into(),
                        ask.reference.into(),
                        amount_cents(recorded.position, ask.amount.get())?.into(),
                        ask.reason.as_str().into(),
                        ask.requested_by.into(),
                        at.into(),
                        position.into(),
                    ],
                )
                .await?;
                continue;
            }
            RefundEvent::Approved { admin, reason } => ("approved", admin, reason),
            RefundEvent::Rejected { admin, reason } => ("rejected", admin, reason),
        };
        execute(
            conn,
            &format!(
                "UPDATE refunds{g} SET status = $1, decided_by = $2, decision_reason = $3, \
                 decided_at = $4, position = $5 WHERE refund_id = $6"
            ),
            &[
                status.into(),
                admin.as_str().into(),
                reason.as_str().into(),
                at.into(),
                position.into(),
                refund_id.into(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// A refund request as the read model has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRow {
    /// Its id.
    pub refund_id: String,
    /// Whose.
    pub user_id: i64,
    /// The spend it gives back (`hold:…`, `debit:…`).
    pub reference: String,
    /// Credits.
    pub amount: rust_decimal::Decimal,
    /// Why it was asked.
    pub reason: String,
    /// Who asked.
    pub requested_by: String,
    /// `requested`, `approved` or `rejected`.
    pub status: String,
    /// Who decided (empty until decided).
    pub decided_by: String,
    /// Why (empty until decided).
    pub decision_reason: String,
    /// The position of its last event.
    pub position: i64,
}

/// At most `limit` refund requests in `status`, oldest request first.
pub async fn refunds_in_state(
    pool: &sqlx::AnyPool,
    status: &str,
    limit: i64,
) -> Result<Vec<RefundRow>, ProjectionError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT refund_id, user_id, reference, amount_cents, reason, requested_by, status, \
         decided_by, decision_reason, position FROM refunds WHERE status = $1 \
         ORDER BY requested_at, refund_id LIMIT $2",
    )
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| RefundRow {
            refund_id: r.get(0),
            user_id: r.get(1),
            reference: r.get(2),
            amount: crate::from_cents(r.get(3)),
            reason: r.get(4),
            requested_by: r.get(5),
            status: r.get(6),
            decided_by: r.get(7),
            decision_reason: r.get(8),
            position: r.get(9),
        })
        .collect())
}
