//! Read model `holds`: every hold with its amount, what was captured, its state (open,
//! captured, released, expired) and expiry — the open holds a user has, and the ones
//! the hold reactor must expire. A hold placed and closed within one batch is written
//! once, already closed; a hold closed later is updated.

use std::collections::HashMap;

use sqlx::AnyConnection;
use tally_domain::account::AccountEvent;

use crate::ProjectionError;
use crate::events::{Batch, amount_cents};
use crate::sql::{Value, execute};

crate::read_model!(
    /// The holds read model.
    HoldsReadModel {
        name: "holds",
        version: 1,
        schema: "holds.sql",
        tables: ["holds"],
        apply: apply,
    }
);

#[derive(Clone, Debug)]
struct HoldRow {
    amount: i64,
    captured: i64,
    state: &'static str,
    expires_at: i64,
    position: i64,
}

/// How a batch of events changes the tables.
async fn apply(conn: &mut AnyConnection, g: &str, batch: &Batch) -> Result<(), ProjectionError> {
    use AccountEvent as E;
    // Placed in this batch, in placement order.
    let mut placed: Vec<(i64, String)> = Vec::new();
    let mut holds: HashMap<(i64, String), HoldRow> = HashMap::new();
    // Closed in this batch, placed before it.
    let mut closes: Vec<(i64, String, i64, &'static str, i64)> = Vec::new();
    for (recorded, user, event) in batch.account_events() {
        let position = recorded.position as i64;
        let (hold_id, state, captured) = match event {
            E::HoldPlaced {
                hold_id,
                amount,
                expires_at,
                ..
            } => {
                let key = (user, hold_id.to_string());
                placed.push(key.clone());
                holds.insert(
                    key,
                    HoldRow {
                        amount: amount_cents(recorded.position, amount.get())?,
                        captured: 0,
                        state: "open",
                        expires_at: expires_at.timestamp_micros(),
                        position,
                    },
                );
                continue;
            }
            E::HoldCaptured {
                hold_id, captured, ..
            } => (
                hold_id,
                "captured",
                amount_cents(recorded.position, captured.get())?,
            ),
            E::HoldReleased { hold_id, .. } => (hold_id, "released", 0),
            E::HoldExpired { hold_id, .. } => (hold_id, "expired", 0),
            _ => continue,
        };
        match holds.get_mut(&(user, hold_id.to_string())) {
            Some(row) => {
                row.state = state;
                row.captured = captured;
                row.position = position;
            }
            None => closes.push((user, hold_id.to_string(), captured, state, position)),
        }
    }
    let rows: Vec<Vec<Value>> = placed
        .into_iter()
        .filter_map(|key| {
            let h = holds.remove(&key)?;
            Some(vec![
                key.0.into(),
                key.1.into(),
                h.amount.into(),
                h.captured.into(),
                h.state.into(),
                h.expires_at.into(),
                h.position.into(),
            ])
        })
        .collect();
    batch
        .insert(
            conn,
            &format!("holds{g}"),
            &[
                "user_id",
                "hold_id",
                "amount_cents",
                "captured_cents",
                "state",
                "expires_at",
                "position",
            ],
            rows,
        )
        .await?;
    for (user, hold_id, captured, state, position) in closes {
        execute(
            conn,
            &format!(
                "UPDATE holds{g} SET state = $1, captured_cents = $2, position = $3 \
                 WHERE user_id = $4 AND hold_id = $5"
            ),
            &[
                state.into(),
                captured.into(),
                position.into(),
                user.into(),
                hold_id.into(),
            ],
        )
        .await?;
    }
    Ok(())
}

/// A hold as the read model has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRecord {
    /// The hold's id.
    pub hold_id: String,
    /// Whose credits.
    pub user_id: i64,
    /// Credits held.
    pub amount: rust_decimal::Decimal,
    /// Credits captured of it.
    pub captured: rust_decimal::Decimal,
    /// `open`, `captured`, `released` or `expired`.
    pub state: String,
    /// When it expires.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The position of its last event.
    pub position: i64,
}

/// The holds with this id: one, or none; several only for holds placed before hold
/// ids were ledger-wide (at most `limit`).
pub async fn holds_by_id(
    pool: &sqlx::AnyPool,
    hold_id: &str,
    limit: i64,
) -> Result<Vec<HoldRecord>, ProjectionError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT user_id, amount_cents, captured_cents, state, expires_at, position \
         FROM holds WHERE hold_id = $1 ORDER BY user_id LIMIT $2",
    )
    .bind(hold_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| HoldRecord {
            hold_id: hold_id.to_string(),
            user_id: r.get(0),
            amount: crate::from_cents(r.get(1)),
            captured: crate::from_cents(r.get(2)),
            state: r.get(3),
            expires_at: chrono::DateTime::from_timestamp_micros(r.get(4)),
            position: r.get(5),
        })
        .collect())
}

/// Open holds past their expiry at `at` (microseconds), soonest first, at most
/// `limit`: (user id, hold id) for the expiry sweep.
pub async fn holds_due(
    pool: &sqlx::AnyPool,
    at: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>, ProjectionError> {
    Ok(sqlx::query_as(
        "SELECT user_id, hold_id FROM holds WHERE state = 'open' AND expires_at <= $1 \
         ORDER BY expires_at LIMIT $2",
    )
    .bind(at)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
