//! Read model `trial_balance`: the balance of every system account (`@sales`,
//! `@promotions`, `@consumption`, `@refunds`, `@corrections`) and of all users' credits
//! together (`users:available`, `users:held`), from the double-entry postings of every
//! credit-moving event (`tally_domain::postings`). Its rows sum to zero; an auditor
//! checks that. Each user's own side is the `balances` read model: keeping it here too
//! would cost a row per user per batch and tell nothing `balances` does not.

use std::collections::BTreeMap;

use sqlx::AnyConnection;
use tally_domain::postings::{self, LedgerAccount};
use tally_domain::values::UserId;

use crate::ProjectionError;
use crate::events::Batch;
use crate::sql::{Value, cents, insert_rows};

crate::read_model!(
    /// The trial balance read model.
    TrialBalanceReadModel {
        name: "trial_balance",
        version: 2,
        schema: "trial_balance.sql",
        tables: ["trial_balance"],
        apply: apply,
    }
);

/// The row of all users' available credits.
pub const USERS_AVAILABLE: &str = "users:available";
/// The row of all users' held credits.
pub const USERS_HELD: &str = "users:held";

/// How a batch of events changes the tables.
async fn apply(conn: &mut AnyConnection, g: &str, batch: &Batch) -> Result<(), ProjectionError> {
    let mut deltas: BTreeMap<String, i64> = BTreeMap::new();
    for (recorded, user, event) in batch.account_events() {
        let user = UserId::new(user).map_err(|e| ProjectionError::Event {
            position: recorded.position,
            detail: e.to_string(),
        })?;
        for posting in postings::postings(user, event) {
            let amount = cents(posting.amount).ok_or_else(|| ProjectionError::Event {
                position: recorded.position,
                detail: format!("posting {} is not whole cents", posting.amount),
            })?;
            let account = match posting.account {
                LedgerAccount::Available(_) => USERS_AVAILABLE.to_string(),
                LedgerAccount::Held(_) => USERS_HELD.to_string(),
                system => system.to_string(),
            };
            *deltas.entry(account).or_default() += amount;
        }
    }
    let rows: Vec<Vec<Value>> = deltas
        .into_iter()
        .map(|(account, delta)| vec![account.into(), delta.into()])
        .collect();
    insert_rows(
        conn,
        &format!("trial_balance{g}"),
        &["account", "balance_cents"],
        &rows,
        &format!(
            "ON CONFLICT (account) DO UPDATE SET \
             balance_cents = trial_balance{g}.balance_cents + excluded.balance_cents"
        ),
    )
    .await
}
