//! Read model `accounts`: `balances` (available, held, status per user) and
//! `statement` (every entry that changed a user's credits, with the balance after it,
//! the reference and the actor). Holds have their own read model (`holds.rs`), so the
//! two are written side by side during a rebuild.
//!
//! A batch is folded in memory first (each user's balance read once per batch), then
//! written with multi-row statements: fewer round trips, same result.
//!
//! One file: the writer and every reader of the `balances` and `statement` tables (a
//! read model owns its SQL).

use std::collections::HashMap;

use sqlx::{AnyConnection, AssertSqlSafe, Row};
use tally_domain::account::{AccountEvent, hold_ref};

use crate::ProjectionError;
use crate::events::{Batch, amount_cents};
use crate::sql::{Value, insert_rows, placeholders};

crate::read_model!(
    /// The accounts read model (balances, statement).
    AccountsReadModel {
        name: "accounts",
        version: 2,
        schema: "accounts.sql",
        tables: ["balances", "statement"],
        apply: apply,
    }
);

#[derive(Clone, Debug)]
struct Balance {
    available: i64,
    held: i64,
    status: String,
    username: String,
    opened_at: i64,
    position: i64,
}

/// How a batch of events changes the tables.
async fn apply(conn: &mut AnyConnection, g: &str, batch: &Batch) -> Result<(), ProjectionError> {
    use AccountEvent as E;
    // Read each user's balance once.
    let mut balances: HashMap<i64, Balance> = HashMap::new();
    let mut users: Vec<i64> = batch.account_users().collect();
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
    for (recorded, user, event) in batch.account_events() {
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
        let entry: Option<(&str, i64, i64, String)> = match event {
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
            // The alert moves no credits: not a statement line.
            E::AlertSet { .. } | E::BalanceLow { .. } | E::AlertRearmed { .. } => None,
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
                hold_id, amount, ..
            } => {
                let amount = c(amount.get())?;
                Some(("hold_placed", -amount, amount, hold_ref(hold_id)))
            }
            E::HoldCaptured {
                hold_id,
                captured,
                released,
            } => {
                let (captured, released) = (c(captured.get())?, c(*released)?);
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
                Some(("hold_released", amount, -amount, hold_ref(hold_id)))
            }
            E::HoldExpired { hold_id, amount } => {
                let amount = c(amount.get())?;
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
    batch
        .insert(
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
            statement,
        )
        .await?;
    Ok(())
}

/// One statement entry, as auditors and users read it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StatementEntry {
    /// Position of the event in the log.
    pub position: u64,
    /// `deposit`, `grant`, `debit`, `adjustment`, `hold_placed`, `hold_captured`,
    /// `hold_released`, `hold_expired` or `refund`.
    pub kind: String,
    /// Change of the available credits (signed).
    pub amount: rust_decimal::Decimal,
    /// Available credits after it.
    pub balance_after: rust_decimal::Decimal,
    /// Held credits after it.
    pub held_after: rust_decimal::Decimal,
    /// What it refers to (`payment:…`, `hold:…`, `debit:…` …).
    pub reference: String,
    /// Who caused it (`<actor kind>:<id>`).
    pub actor: String,
    /// Business time.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
}

/// Up to where a statement or balance is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsOf {
    /// Everything the read model holds.
    Latest,
    /// Events at or before this log position.
    Position(u64),
    /// Events that occurred at or before this time.
    Time(chrono::DateTime<chrono::Utc>),
}

impl AsOf {
    /// Whether an event at `position`, occurring at `at`, is included.
    pub fn includes(self, position: u64, at: chrono::DateTime<chrono::Utc>) -> bool {
        match self {
            AsOf::Latest => true,
            AsOf::Position(p) => position <= p,
            AsOf::Time(t) => at <= t,
        }
    }

    fn clause(self) -> (&'static str, i64) {
        match self {
            AsOf::Latest => ("", 0),
            AsOf::Position(p) => (" AND position <= $2", crate::runtime::to_i64(p)),
            AsOf::Time(t) => (" AND occurred_at <= $2", t.timestamp_micros()),
        }
    }
}

/// The columns of a statement entry, in [`statement_entry`]'s order.
const STATEMENT_COLUMNS: &str = "position, kind, amount_cents, balance_after_cents, \
    held_after_cents, reference, actor, occurred_at";

fn statement_entry(row: &sqlx::any::AnyRow) -> Result<StatementEntry, ProjectionError> {
    let position: i64 = row.get(0);
    let at: i64 = row.get(7);
    Ok(StatementEntry {
        position: u64::try_from(position).unwrap_or(0),
        kind: row.get(1),
        amount: crate::from_cents(row.get(2)),
        balance_after: crate::from_cents(row.get(3)),
        held_after: crate::from_cents(row.get(4)),
        reference: row.get(5),
        actor: row.get(6),
        occurred_at: chrono::DateTime::from_timestamp_micros(at).ok_or_else(|| {
            ProjectionError::Event {
                position: position as u64,
                detail: format!("occurred_at {at} is out of range"),
            }
        })?,
    })
}

/// A user's statement from the read model, oldest first, up to `as_of`.
pub async fn account_statement(
    pool: &sqlx::AnyPool,
    user_id: i64,
    as_of: AsOf,
) -> Result<Vec<StatementEntry>, ProjectionError> {
    let (clause, bound) = as_of.clause();
    let sql = format!(
        "SELECT {STATEMENT_COLUMNS} FROM statement WHERE user_id = $1{clause} ORDER BY position"
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(user_id);
    if !clause.is_empty() {
        query = query.bind(bound);
    }
    let rows = query.fetch_all(pool).await?;
    rows.iter().map(statement_entry).collect()
}

/// One page of a user's statement, oldest first: at most `limit` entries after log
/// position `after`, read by the statement's (user, position) key, so a page costs
/// the same however long the history before it.
pub async fn account_statement_page(
    pool: &sqlx::AnyPool,
    user_id: i64,
    after: u64,
    limit: u32,
) -> Result<Vec<StatementEntry>, ProjectionError> {
    let sql = format!(
        "SELECT {STATEMENT_COLUMNS} FROM statement WHERE user_id = $1 AND position > $2 \
         ORDER BY position LIMIT $3"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(user_id)
        .bind(crate::runtime::to_i64(after))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(statement_entry).collect()
}

/// A user's newest statement entries, newest first: at most `limit` after skipping
/// the newest `skip` (the bot's history pages).
pub async fn account_statement_newest(
    pool: &sqlx::AnyPool,
    user_id: i64,
    limit: u32,
    skip: u32,
) -> Result<Vec<StatementEntry>, ProjectionError> {
    let sql = format!(
        "SELECT {STATEMENT_COLUMNS} FROM statement WHERE user_id = $1 \
         ORDER BY position DESC LIMIT $2 OFFSET $3"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(user_id)
        .bind(i64::from(limit))
        .bind(i64::from(skip))
        .fetch_all(pool)
        .await?;
    rows.iter().map(statement_entry).collect()
}

/// A spend a user may ask back: a direct debit or a captured hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spend {
    /// The position of the statement entry.
    pub position: i64,
    /// What a refund request names: `debit:<id>` or `hold:<id>`.
    pub reference: String,
    /// `debit` or `hold_captured`.
    pub kind: &'static str,
    /// Credits spent (positive).
    pub amount: rust_decimal::Decimal,
    /// When, microseconds since the epoch.
    pub occurred_at: i64,
}

/// A user's spends since `since` (microseconds), newest first, at most `limit`:
/// direct debits from the statement and captured holds from the holds read model.
pub async fn recent_spends(
    pool: &sqlx::AnyPool,
    user_id: i64,
    since: i64,
    limit: i64,
) -> Result<Vec<Spend>, ProjectionError> {
    let debits = sqlx::query(
        "SELECT position, reference, amount_cents, occurred_at FROM statement \
         WHERE user_id = $1 AND kind = 'debit' AND occurred_at >= $2 \
         ORDER BY position DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let captures = sqlx::query(
        "SELECT h.position, h.hold_id, h.captured_cents, s.occurred_at FROM holds h \
         JOIN statement s ON s.user_id = h.user_id AND s.position = h.position \
         WHERE h.user_id = $1 AND h.state = 'captured' AND h.captured_cents > 0 \
         AND s.occurred_at >= $2 ORDER BY h.position DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut spends: Vec<Spend> = debits
        .iter()
        .map(|r| Spend {
            position: r.get(0),
            reference: r.get(1),
            kind: "debit",
            amount: -crate::from_cents(r.get(2)),
            occurred_at: r.get(3),
        })
        .chain(captures.iter().map(|r| Spend {
            position: r.get(0),
            reference: format!("hold:{}", r.get::<String, _>(1)),
            kind: "hold_captured",
            amount: crate::from_cents(r.get(2)),
            occurred_at: r.get(3),
        }))
        .collect();
    spends.sort_by_key(|s| std::cmp::Reverse(s.position));
    spends.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(spends)
}

/// A balance as the read model has it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BalanceRow {
    /// Credits free to spend.
    pub available: rust_decimal::Decimal,
    /// Credits under open holds.
    pub held: rust_decimal::Decimal,
    /// `open` or `blocked`; `None` when read from the statement (which has no status).
    pub status: Option<String>,
    /// The position of the last event it includes.
    pub position: u64,
}

/// A user's balance: the current row for [`AsOf::Latest`], else the balance after the
/// last statement entry up to `as_of` (point in time). `None`: no such account, or no
/// credit moved up to then.
pub async fn account_balance(
    pool: &sqlx::AnyPool,
    user_id: i64,
    as_of: AsOf,
) -> Result<Option<BalanceRow>, ProjectionError> {
    if as_of == AsOf::Latest {
        let row = sqlx::query(
            "SELECT available_cents, held_cents, status, position FROM balances WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_optional(pool)
        .await?;
        return Ok(row.map(|row| BalanceRow {
            available: crate::from_cents(row.get(0)),
            held: crate::from_cents(row.get(1)),
            status: Some(row.get(2)),
            position: u64::try_from(row.get::<i64, _>(3)).unwrap_or(0),
        }));
    }
    let (clause, bound) = as_of.clause();
    let sql = format!(
        "SELECT balance_after_cents, held_after_cents, position FROM statement \
         WHERE user_id = $1{clause} ORDER BY position DESC LIMIT 1"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(user_id)
        .bind(bound)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|row| BalanceRow {
        available: crate::from_cents(row.get(0)),
        held: crate::from_cents(row.get(1)),
        status: None,
        position: u64::try_from(row.get::<i64, _>(2)).unwrap_or(0),
    }))
}
