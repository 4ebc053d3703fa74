//! Credits without a hold: direct debits (a service spends at once) and an admin's
//! grants (free credits). Each carries its own id: the same id and body again is the
//! original (`Idempotent-Replay: true`), another body is 409 `idempotency_conflict`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_domain::account::AccountCommand;
use tally_domain::values::{DebitId, GrantId};
use tally_ledger::Outcome;
use tally_ledger::aggregate::AccountView;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::USER_ID;
use crate::auth::{Admin, Service};
use crate::constraints::{AmountText, IdText, ReasonText, UserIdNumber};
use crate::error::{ApiError, WriteErrors};
use crate::input::{Body, UserPath};
use crate::write::{amount, answer, reason, run};
use crate::{AppState, input};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(debit))
        .routes(routes!(grant))
}

/// A direct debit (no hold first).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DebitBody {
    /// The caller's id for the debit; re-sending it is answered as the original.
    #[schema(value_type = IdText)]
    debit_id: String,
    /// Credits, a decimal string with at most 2 places.
    #[schema(value_type = AmountText)]
    amount: String,
    /// What the credits paid for.
    #[schema(value_type = ReasonText)]
    reason: String,
}

/// An account's balances after a credit command (or at a point in time).
#[derive(Serialize, ToSchema)]
pub(crate) struct BalanceBody {
    pub(crate) user_id: i64,
    /// Credits free to spend.
    #[schema(value_type = String, example = "12.50")]
    pub(crate) available: Decimal,
    /// Credits held for jobs in flight.
    #[schema(value_type = String, example = "0.00")]
    pub(crate) held: Decimal,
    /// Position of the last event it reflects.
    pub(crate) position: u64,
}

/// Runs a credit command and answers 201 with the balances after it (or the
/// original's answer, `Idempotent-Replay: true`).
pub(crate) async fn credit_write(
    state: &AppState,
    caller: &crate::Caller,
    user: tally_domain::values::UserId,
    command: AccountCommand,
) -> Result<Response, ApiError> {
    let outcome = run(state, caller, user, command).await?;
    Ok(answer(
        StatusCode::CREATED,
        outcome.replayed,
        balance_body(&outcome),
    ))
}

pub(crate) fn balance_body(outcome: &Outcome<AccountView>) -> BalanceBody {
    BalanceBody {
        user_id: outcome.view.user_id.get(),
        available: input::money(outcome.view.available),
        held: input::money(outcome.view.held),
        position: outcome.position,
    }
}

/// Spends credits at once.
#[utoipa::path(post, path = "/v1/accounts/{user_id}/debits", tag = "credits",
    params(("user_id" = UserIdNumber, Path, description = USER_ID)),
    request_body = DebitBody,
    responses((status = 201, body = BalanceBody), WriteErrors),
    security(("service" = [])))]
async fn debit(
    State(state): State<AppState>,
    Service(caller): Service,
    UserPath(user): UserPath,
    Body(body): Body<DebitBody>,
) -> Result<Response, ApiError> {
    let command = AccountCommand::Debit {
        debit_id: DebitId::new(body.debit_id)?,
        amount: amount(&body.amount)?,
        reason: reason(&body.reason)?,
    };
    credit_write(&state, &caller, user, command).await
}

/// An admin's grant of free credits.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GrantBody {
    /// The admin's id for the grant; re-sending it is answered as the original.
    #[schema(value_type = IdText)]
    grant_id: String,
    /// Credits, a decimal string with at most 2 places.
    #[schema(value_type = AmountText)]
    amount: String,
    /// Why (kept on the event with the admin key's name).
    #[schema(value_type = ReasonText)]
    reason: String,
}

/// Grants credits (promotion, goodwill); the admin key's name is the actor.
#[utoipa::path(post, path = "/v1/admin/accounts/{user_id}/grants", tag = "admin",
    params(("user_id" = UserIdNumber, Path, description = USER_ID)),
    request_body = GrantBody,
    responses((status = 201, body = BalanceBody), WriteErrors),
    security(("admin" = [])))]
async fn grant(
    State(state): State<AppState>,
    Admin(caller): Admin,
    UserPath(user): UserPath,
    Body(body): Body<GrantBody>,
) -> Result<Response, ApiError> {
    let command = AccountCommand::Grant {
        grant_id: GrantId::new(body.grant_id)?,
        amount: amount(&body.amount)?,
        reason: reason(&body.reason)?,
    };
    credit_write(&state, &caller, user, command).await
}
