//! # tally-api: the HTTP API v1
//!
//! `../shared/API.md` is the contract; this crate implements it over the command
//! service (`tally-ledger`) for writes and the read models (`tally-projections`) for
//! reads. Handlers are thin: parse and check input (every bad input is a 4xx with a
//! detail a person can act on, and appends nothing), run one command or query, answer.
//! Errors are produced in one place (`error.rs`) as `application/problem+json`.
//!
//! Built so far: health and readiness, keys and roles, accounts (open, read, statement,
//! point-in-time balance) with `?min_position=N`, holds (place, capture, release,
//! read), debits, admin grants, adjustments, blocks, subscription corrections, stats,
//! refunds (request, queue, approve, reject), payments and signed webhooks (generic
//! format), ad slots (configure, attempts, due), and the auditor's replay, verify and
//! events. The rest of API.md comes next.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod error;
pub mod holds;
mod input;
pub mod observe;
pub mod payments;
pub mod refunds;
pub mod slots;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tally_domain::Config;
use tally_ledger::{Accounts, Ledger, Payments, Refunds, Slots, Subscriptions};
use tally_projections::Projector;

pub use auth::{Caller, Keys, Role};
pub use error::ApiError;

/// How long a GET with `?min_position=N` waits for the read model.
pub const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Account commands.
    pub accounts: Ledger<Accounts>,
    /// Payment commands.
    pub payments: Ledger<Payments>,
    /// Subscription commands.
    pub subscriptions: Ledger<Subscriptions>,
    /// Refund request commands.
    pub refunds: Ledger<Refunds>,
    /// Ad slot commands.
    pub slots: Ledger<Slots>,
    /// Webhook secrets by provider.
    pub webhook_secrets: Arc<std::collections::HashMap<String, String>>,
    /// The log (raw events for auditors).
    pub store: Arc<dyn tally_store::EventStore>,
    /// The read models.
    pub projector: Arc<Projector>,
    /// The keys.
    pub keys: Arc<Keys>,
    /// Plans, packs, limits.
    pub config: Arc<Config>,
    /// Owners of the holds this process placed.
    pub hold_owners: Arc<holds::HoldOwners>,
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(observe::metrics_text))
        .merge(accounts::routes())
        .merge(holds::routes())
        .merge(payments::routes())
        .merge(admin::routes())
        .merge(refunds::routes())
        .merge(audit::routes())
        .merge(slots::routes())
        .layer(axum::middleware::from_fn(observe::track))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers.
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    sqlx::query("SELECT 1")
        .execute(state.projector.pool())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "not ready");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the database does not answer",
            )
        })?;
    Ok("ready")
}
