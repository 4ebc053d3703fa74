//! Read model `accounts`: `balances` (available, held, status per user), `statement`
//! (every entry that changed a user's credits, with the balance after it, the
//! reference and the actor) and `holds` (every hold with its state and expiry).
//!
//! A batch is folded in memory first (each user's balance read once per batch), then
//! written with multi-row statements: fewer round trips, same result.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use tally_domain::account::{AccountEvent, hold_ref};
use tally_domain::codec;
use tally_store::RecordedEvent;

use crate::ProjectionError;
use crate::runtime::Projection;
use crate::sql::{Value, cents, execute, insert_rows, placeholders};

/// The accounts read model (balances, statement, holds).
pub struct Accounts;

#[derive(Clone, Debug)]
struct Balance {
    available: i64,
    held: i64,
    status: String,
    username: String,
    opened_at: i64,
    position: i64,
}

#[derive(Clone, Debug)]
struct HoldRow {
    amount: i64,
    captured: i64,
    state: &'static str,
    expires_at: i64,
    position: i64,
}

/// The user an account stream belongs to (`account-<user id>`).
pub(crate) fn account_user(event: &RecordedEvent) -> Option<i64> {
    event
        .stream_id
        .as_str()
        .strip_prefix("account-")
        .and_then(|id| id.parse().ok())
}

/// The user and account event of a recorded event; `None` for other streams.
pub(crate) fn account_event(
    recorded: &RecordedEvent,
) -> Result<Option<(i64, AccountEvent)>, ProjectionError> {
    let Some(user) = account_user(recorded) else {
        return Ok(None);
    };
    let event = codec::decode(
        &recorded.event_type,
        recorded.schema_version,
        recorded.payload.clone(),
    )?;
    Ok(Some((user, event)))
}

fn amount_cents(position: u64, amount: rust_decimal::Decimal) -> Result<i64, ProjectionError> {
    cents(amount).ok_or_else(|| ProjectionError::Event {
        position,
        detail: format!("amount {amount} is not a whole number of cents"),
    })
}

#[async_trait]
impl Projection for Accounts {
    fn name(&self) -> &'static str {
        "accounts"
    }

    fn version(&self) -> i64 {
        1
    }

    fn schema(&self) -> &'static str {
        include_str!("../../schema/projections/accounts.sql")
    }

    fn tables(&self) -> &'static [&'static str] {
        &["balances", "statement", "holds"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        g: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        use AccountEvent as E;
        // Read each user's balance once.
        let mut balances: HashMap<i64, Balance> = HashMap::new();
        let mut users: Vec<i64> = events.iter().filter_map(account_user).collect();
        users.sort_unstable();
        users.dedup();
        for chunk in users.chunks(500) {
            let marks = placeholders(conn, 0, chunk.len());
            let sql = format!(
                "SELECT user_id, available_cents, held_cents, status, username, opened_at, position \
                 FROM balances{g} WHERE user_id IN ({})",
                marks.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for user in chunk {
                query = query.bind(*user);
            }
            for row in query.fetch_all(&mut *conn).await? {
                balances.insert(
                    row.get::<i64, _>(0),
                    Balance {
                        available: row.get(1),
                        held: row.get(2),
                        status: row.get(3),
                        username: row.get(4),
                        opened_at: row.get(5),
                        position: row.get(6),
                    },
                );
            }
        }

        let mut statement: Vec<Vec<Value>> = Vec::new();
        let mut holds: HashMap<(i64, String), HoldRow> = HashMap::new();
        let mut closes: Vec<(i64, String, i64, &'static str, i64)> = Vec::new();
        for recorded in events {
            let Some((user, event)) = account_event(recorded)? else {
                continue;
            };
            let position = recorded.position;
            let at = recorded.occurred_at.timestamp_micros();
            let balance = balances.entry(user).or_insert_with(|| Balance {
                available: 0,
                held: 0,
                status: "open".into(),
                username: String::new(),
                opened_at: at,
                position: 0,
            });
            balance.position = position as i64;
            let c = |a| amount_cents(position, a);
            // (kind, change of available, change of held, reference)
            let entry: Option<(&str, i64, i64, String)> = match &event {
                E::Opened { username, .. } => {
                    balance.username = username.clone().unwrap_or_default();
                    balance.opened_at = at;
                    None
                }
                E::Blocked { .. } => {
                    balance.status = "blocked".into();
                    None
                }
                E::Unblocked { .. } => {
                    balance.status = "open".into();
                    None
                }
                E::Deposited { payment_id, amount } => Some((
                    "deposit",
                    c(amount.get())?,
                    0,
                    format!("payment:{payment_id}"),
                )),
                E::Granted {
                    grant_id, amount, ..
                } => Some(("grant", c(amount.get())?, 0, format!("grant:{grant_id}"))),
                E::Debited {
                    debit_id, amount, ..
                } => Some(("debit", -c(amount.get())?, 0, format!("debit:{debit_id}"))),
                E::Adjusted {
                    adjustment_id,
                    amount,
                    ..
                } => Some((
                    "adjustment",
                    c(amount.get())?,
                    0,
                    format!("adjustment:{adjustment_id}"),
                )),
                E::HoldPlaced {
                    hold_id,
                    amount,
                    expires_at,
                    ..
                } => {
                    let amount = c(amount.get())?;
                    holds.insert(
                        (user, hold_id.to_string()),
                        HoldRow {
                            amount,
                            captured: 0,
                            state: "open",
                            expires_at: expires_at.timestamp_micros(),
                            position: position as i64,
                        },
                    );
                    Some(("hold_placed", -amount, amount, hold_ref(hold_id)))
                }
                E::HoldCaptured {
                    hold_id,
                    captured,
                    released,
                } => {
                    let (captured, released) = (c(captured.get())?, c(*released)?);
                    close(
                        &mut holds,
                        &mut closes,
                        user,
                        hold_id.as_str(),
                        "captured",
                        captured,
                        position,
                    );
                    Some((
                        "hold_captured",
                        released,
                        -(captured + released),
                        hold_ref(hold_id),
                    ))
                }
                E::HoldReleased {
                    hold_id, amount, ..
                } => {
                    let amount = c(amount.get())?;
                    close(
                        &mut holds,
                        &mut closes,
                        user,
                        hold_id.as_str(),
                        "released",
                        0,
                        position,
                    );
                    Some(("hold_released", amount, -amount, hold_ref(hold_id)))
                }
                E::HoldExpired { hold_id, amount } => {
                    let amount = c(amount.get())?;
                    close(
                        &mut holds,
                        &mut closes,
                        user,
                        hold_id.as_str(),
                        "expired",
                        0,
                        position,
                    );
                    Some(("hold_expired", amount, -amount, hold_ref(hold_id)))
                }
                E::Refunded {
                    refund_id,
                    reference,
                    amount,
                } => Some((
                    "refund",
                    c(amount.get())?,
                    0,
                    format!("refund:{refund_id}:{reference}"),
                )),
            };
            if let Some((kind, available, held, reference)) = entry {
                balance.available += available;
                balance.held += held;
                let actor = &recorded.metadata.actor;
                statement.push(vec![
                    user.into(),
                    (position as i64).into(),
                    kind.into(),
                    available.into(),
                    balance.available.into(),
                    balance.held.into(),
                    reference.into(),
                    format!("{}:{}", actor.kind.as_str(), actor.id).into(),
                    at.into(),
                ]);
            }
        }

        let rows: Vec<Vec<Value>> = balances
            .into_iter()
            .map(|(user, b)| {
                vec![
                    user.into(),
                    b.available.into(),
                    b.held.into(),
                    b.status.into(),
                    b.username.into(),
                    b.opened_at.into(),
                    b.position.into(),
                ]
            })
            .collect();
        insert_rows(
            conn,
            &format!("balances{g}"),
            &[
                "user_id",
                "available_cents",
                "held_cents",
                "status",
                "username",
                "opened_at",
                "position",
            ],
            &rows,
            "ON CONFLICT (user_id) DO UPDATE SET available_cents = excluded.available_cents, \
             held_cents = excluded.held_cents, status = excluded.status, \
             username = excluded.username, opened_at = excluded.opened_at, \
             position = excluded.position",
        )
        .await?;
        insert_rows(
            conn,
            &format!("statement{g}"),
            &[
                "user_id",
                "position",
                "kind",
                "amount_cents",
                "balance_after_cents",
                "held_after_cents",
                "reference",
                "actor",
                "occurred_at",
            ],
            &statement,
            "",
        )
        .await?;
        let rows: Vec<Vec<Value>> = holds
            .into_iter()
            .map(|((user, hold_id), h)| {
                vec![
                    user.into(),
                    hold_id.into(),
                    h.amount.into(),
                    h.captured.into(),
                    h.state.into(),
                    h.expires_at.into(),
                    h.position.into(),
                ]
            })
            .collect();
        insert_rows(
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
            &rows,
            "",
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
}

/// Closes a hold: in this batch's rows if it was placed in this batch, else by an
/// UPDATE after the batch's inserts.
fn close(
    holds: &mut HashMap<(i64, String), HoldRow>,
    closes: &mut Vec<(i64, String, i64, &'static str, i64)>,
    user: i64,
    hold_id: &str,
    state: &'static str,
    captured: i64,
    position: u64,
) {
    match holds.get_mut(&(user, hold_id.to_string())) {
        Some(row) => {
            row.state = state;
            row.captured = captured;
            row.position = position as i64;
        }
        None => closes.push((user, hold_id.to_string(), captured, state, position as i64)),
    }
}
