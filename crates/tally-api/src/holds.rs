//! Holds: credits set aside for a job (place, capture all or part, release, read).
//! Every create carries its own id: the same id and body again is answered as the
//! original (`Idempotent-Replay: true`), another body is 409 `idempotency_conflict`.

use crate::auth::Service;
use crate::constraints::{AmountText, IdText, ReasonText, TtlSeconds, UserIdNumber};
use crate::input::{Body, IdPath, UserPath};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_domain::account::AccountCommand;
use tally_domain::values::{HoldId, UserId};
use tally_ledger::Outcome;
use tally_ledger::aggregate::AccountView;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::{ReadQuery, USER_ID, wait_for_read_model};
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::write::{amount, answer, reason, run};
use crate::{AppState, MIN_POSITION_WAIT, input};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(place))
        .routes(routes!(read))
        .routes(routes!(capture))
        .routes(routes!(release))
}

const HOLD_ID: &str = "the caller's id of the hold (1 to 64 letters, digits, `_-.:`)";

/// A hold as a write answers it, with the account's balances after it.
#[derive(Serialize, ToSchema)]
pub(crate) struct HoldBody {
    hold_id: String,
    user_id: i64,
    /// Credits held.
    #[schema(value_type = String, example = "5.00")]
    amount: Decimal,
    /// Credits captured of it (spent).
    #[schema(value_type = String, example = "3.00")]
    captured: Decimal,
    /// `open`, `captured`, `released` or `expired`.
    state: String,
    expires_at: chrono::DateTime<chrono::Utc>,
    /// The account's free credits after this.
    #[schema(value_type = String)]
    available: Decimal,
    /// The account's held credits after this.
    #[schema(value_type = String)]
    held: Decimal,
    position: u64,
}

fn hold_body(outcome: &Outcome<AccountView>) -> Result<HoldBody, ApiError> {
    let view = &outcome.view;
    let Some((hold_id, hold)) = &view.hold else {
        return Err(ApiError::internal(
            "a hold command answered without its hold",
        ));
    };
    Ok(HoldBody {
        hold_id: hold_id.to_string(),
        user_id: view.user_id.get(),
        amount: input::money(hold.amount.get()),
        captured: input::money(hold.captured),
        state: hold.state.to_string(),
        expires_at: hold.expires_at,
        available: input::money(view.available),
        held: input::money(view.held),
        position: outcome.position,
    })
}

/// Placing a hold: credits set aside for a job until captured, released or expired.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlaceBody {
    /// The caller's id for the hold; re-sending it is answered as the original.
    #[schema(value_type = IdText)]
    hold_id: String,
    /// Credits, a decimal string with at most 2 places (`"5"`, `"5.25"`).
    #[schema(value_type = AmountText)]
    amount: String,
    /// Seconds until the hold expires and its credits return.
    #[schema(value_type = TtlSeconds)]
    #[serde(deserialize_with = "crate::input::whole::deserialize")]
    ttl_seconds: u64,
    /// What the credits are for.
    #[schema(value_type = ReasonText)]
    reason: String,
}

/// Holds credits for a job (201; the same hold_id and body again: the original, with
/// `Idempotent-Replay: true`).
#[utoipa::path(post, path = "/v1/accounts/{user_id}/holds", tag = "credits",
    params(("user_id" = UserIdNumber, Path, description = USER_ID)),
    request_body = PlaceBody,
    responses((status = 201, body = HoldBody), WriteErrors),
    security(("service" = [])))]
async fn place(
    State(state): State<AppState>,
    Service(caller): Service,
    UserPath(user): UserPath,
    Body(body): Body<PlaceBody>,
) -> Result<Response, ApiError> {
    let command = AccountCommand::PlaceHold {
        hold_id: HoldId::new(body.hold_id)?,
        amount: amount(&body.amount)?,
        ttl_seconds: body.ttl_seconds,
        reason: reason(&body.reason)?,
    };
    let outcome = run(&state, &caller, user, command).await?;
    let body = hold_body(&outcome)?;
    state.hold_owners.insert(&body.hold_id, user);
    Ok(answer(StatusCode::CREATED, outcome.replayed, body))
}

/// The account a hold belongs to: from the log (a hold id is one hold in the whole
/// ledger, and its placing event's id derives from the hold id alone), so every
/// process finds a hold placed anywhere, at once. A hold id never moves, so what was
/// found once is remembered. Holds placed before hold ids were ledger-wide are found
/// in the holds read model (waiting, bounded, for it to catch up with the log).
async fn hold_owner(state: &AppState, hold_id: &HoldId) -> Result<UserId, ApiError> {
    if let Some(user) = state.hold_owners.get(hold_id.as_str()) {
        return Ok(user);
    }
    if let Some(user) = state.ledgers.accounts.hold_account(hold_id).await? {
        state.hold_owners.insert(hold_id.as_str(), user);
        return Ok(user);
    }
    for attempt in 0..2 {
        let rows =
            tally_projections::holds_by_id(state.projector.pool(), hold_id.as_str(), 2).await?;
        match rows.len() {
            1 => return Ok(UserId::new(rows[0].user_id)?),
            0 if attempt == 0 => {
                let head = state
                    .store
                    .last_position()
                    .await
                    .map_err(ApiError::internal)?;
                state
                    .projector
                    .wait_for("holds", head, MIN_POSITION_WAIT)
                    .await?;
            }
            0 => {}
            _ => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "validation",
                    format!(
                        "hold id {hold_id} is used by several accounts; use a unique hold id per job"
                    ),
                ));
            }
        }
    }
    Err(ApiError::not_found(
        "hold_not_found",
        format!("there is no hold {hold_id}"),
    ))
}

/// Capturing a hold, all of it or part (the rest returns to available).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CaptureBody {
    /// Credits to capture; absent: the whole hold.
    #[schema(value_type = Option<AmountText>)]
    amount: Option<String>,
}

/// Captures a hold (spends it); what is not captured returns to available.
#[utoipa::path(post, path = "/v1/holds/{hold_id}/capture", tag = "credits",
    params(("hold_id" = IdText, Path, description = HOLD_ID)),
    request_body = CaptureBody,
    responses((status = 200, body = HoldBody), WriteErrors),
    security(("service" = [])))]
async fn capture(
    State(state): State<AppState>,
    Service(caller): Service,
    IdPath(hold_id): IdPath<HoldId>,
    Body(body): Body<CaptureBody>,
) -> Result<Response, ApiError> {
    let amount = body.amount.as_deref().map(amount).transpose()?;
    let user = hold_owner(&state, &hold_id).await?;
    let outcome = run(
        &state,
        &caller,
        user,
        AccountCommand::CaptureHold { hold_id, amount },
    )
    .await?;
    Ok(answer(
        StatusCode::OK,
        outcome.replayed,
        hold_body(&outcome)?,
    ))
}

/// Releasing a hold.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseBody {
    /// Why the job gave the credits back.
    #[schema(value_type = ReasonText)]
    reason: String,
}

/// Releases a hold: its credits return to available.
#[utoipa::path(post, path = "/v1/holds/{hold_id}/release", tag = "credits",
    params(("hold_id" = IdText, Path, description = HOLD_ID)),
    request_body = ReleaseBody,
    responses((status = 200, body = HoldBody), WriteErrors),
    security(("service" = [])))]
async fn release(
    State(state): State<AppState>,
    Service(caller): Service,
    IdPath(hold_id): IdPath<HoldId>,
    Body(body): Body<ReleaseBody>,
) -> Result<Response, ApiError> {
    let command = AccountCommand::ReleaseHold {
        hold_id: hold_id.clone(),
        reason: reason(&body.reason)?,
    };
    let user = hold_owner(&state, &hold_id).await?;
    let outcome = run(&state, &caller, user, command).await?;
    Ok(answer(
        StatusCode::OK,
        outcome.replayed,
        hold_body(&outcome)?,
    ))
}

/// A hold as the holds read model has it.
#[derive(Serialize, ToSchema)]
pub(crate) struct HoldRecord {
    hold_id: String,
    user_id: i64,
    #[schema(value_type = String, example = "5.00")]
    amount: Decimal,
    #[schema(value_type = String, example = "3.00")]
    captured: Decimal,
    /// `open`, `captured`, `released` or `expired`.
    state: String,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    position: i64,
}

/// A hold: amount, captured, state, expiry.
#[utoipa::path(get, path = "/v1/holds/{hold_id}", tag = "credits",
    params(("hold_id" = IdText, Path, description = HOLD_ID), ReadQuery),
    responses((status = 200, body = HoldRecord), ReadErrors),
    security(("service" = [])))]
async fn read(
    State(state): State<AppState>,
    _: Service,
    IdPath(hold_id): IdPath<HoldId>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HoldRecord>, ApiError> {
    let query = input::query(query)?;
    wait_for_read_model(&state, "holds", query.min_position).await?;
    let row = tally_projections::holds_by_id(state.projector.pool(), hold_id.as_str(), 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            ApiError::not_found("hold_not_found", format!("there is no hold {hold_id}"))
        })?;
    Ok(Json(HoldRecord {
        hold_id: row.hold_id,
        user_id: row.user_id,
        amount: row.amount,
        captured: row.captured,
        state: row.state,
        expires_at: row.expires_at,
        position: row.position,
    }))
}

/// Which account the holds this process placed belong to, so a capture right after a
/// placement need not wait for the holds read model. Bounded: when full it starts
/// over (the read model answers for older holds).
#[derive(Default)]
pub struct HoldOwners {
    owners: std::sync::Mutex<std::collections::HashMap<String, UserId>>,
}

/// Most holds remembered.
pub const HOLD_OWNERS_MAX: usize = 100_000;

impl HoldOwners {
    fn get(&self, hold_id: &str) -> Option<UserId> {
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        owners.get(hold_id).copied()
    }

    fn insert(&self, hold_id: &str, user: UserId) {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if owners.len() >= HOLD_OWNERS_MAX {
            owners.clear();
        }
        owners.insert(hold_id.to_string(), user);
    }
}
