//! Read model `trial_balance`: every ledger account's balance from the double-entry
//! postings of every credit-moving event (`tally_domain::postings`). Its rows sum to
//! zero; an auditor checks that, and that each user's rows equal the balances.

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::AnyConnection;
use tally_domain::postings;
use tally_domain::values::UserId;

use crate::ProjectionError;
use crate::events::Batch;
use crate::runtime::Projection;
use crate::sql::{Value, cents, insert_rows};

/// The trial balance read model.
pub struct TrialBalance;

#[async_trait]
impl Projection for TrialBalance {
    fn name(&self) -> &'static str {
        "trial_balance"
    }

    fn version(&self) -> i64 {
        1
    }

    fn schema(&self) -> &'static str {
        include_str!("../../schema/projections/trial_balance.sql")
    }

    fn tables(&self) -> &'static [&'static str] {
        &["trial_balance"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        g: &str,
        batch: &Batch,
    ) -> Result<(), ProjectionError> {
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
                *deltas.entry(posting.account.to_string()).or_default() += amount;
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
}
