//! Reconciliation: a provider's list of what it charged against the ledger's
//! payments, by charge id, both ways. A charge the provider made that no payment
//! records is money received and not credited (a lost `successful_payment`); a
//! payment the provider does not list is a credit without money. Either is listed
//! for a person to act on and counted in `tally_payments_unmatched{provider,side}`.
//!
//! The ledger's side is the payments read model; callers bring it to the log's head
//! first (the CLI catches up, the API and the notifier wait for it), so a payment
//! recorded a moment ago is not reported missing.

use std::collections::BTreeMap;

use serde::Serialize;
use tally_providers::Provider;

use crate::ProjectionError;

/// What a reconciliation found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// The provider.
    pub provider: String,
    /// Charges found on both sides.
    pub matched: usize,
    /// Charges of the provider that no payment records.
    pub provider_only: Vec<tally_providers::Charge>,
    /// Paid payments whose charge the provider does not list.
    pub ledger_only: Vec<LedgerOnly>,
}

impl Reconciliation {
    /// How many are on one side only.
    pub fn unmatched(&self) -> usize {
        self.provider_only.len() + self.ledger_only.len()
    }
}

/// A paid payment the provider does not list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerOnly {
    /// The payment.
    pub payment_id: String,
    /// Its charge id, as recorded.
    pub charge_id: String,
    /// Who paid.
    pub user_id: i64,
    /// `succeeded` or `reversed`.
    pub status: String,
}

/// Why a reconciliation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The provider could not list its charges.
    #[error(transparent)]
    Provider(#[from] tally_providers::ProviderError),
    /// The read model could not be read.
    #[error(transparent)]
    ReadModel(#[from] ProjectionError),
}

/// Matches `provider`'s charges with the payments read model's, and sets the
/// unmatched gauges.
pub async fn reconcile(
    pool: &sqlx::AnyPool,
    provider: &dyn Provider,
) -> Result<Reconciliation, ReconcileError> {
    let mut charged: BTreeMap<String, tally_providers::Charge> = provider
        .charges()
        .await?
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    let mut report = Reconciliation {
        provider: provider.name().to_string(),
        ..Reconciliation::default()
    };
    for payment in crate::provider_charges(pool, provider.name()).await? {
        match charged.remove(&payment.provider_payment_id) {
            Some(_) => report.matched += 1,
            None => report.ledger_only.push(LedgerOnly {
                payment_id: payment.payment_id,
                charge_id: payment.provider_payment_id,
                user_id: payment.user_id,
                status: payment.status,
            }),
        }
    }
    report.provider_only = charged.into_values().collect();
    for (side, count) in [
        ("provider", report.provider_only.len()),
        ("ledger", report.ledger_only.len()),
    ] {
        metrics::gauge!("tally_payments_unmatched", "provider" => report.provider.clone(), "side" => side)
            .set(count as f64);
    }
    if report.unmatched() > 0 {
        tracing::warn!(provider = %report.provider, provider_only = report.provider_only.len(), ledger_only = report.ledger_only.len(), "payments that do not match");
    }
    Ok(report)
}
