//! Credits: holds (place, capture all or part, release, read), direct debits, and the
//! admin's grants. Every create carries its own id: the same id and body again is
//! answered as the original (`Idempotent-Replay: true`), another body is 409
//! `idempotency_conflict`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tally_domain::account::AccountCommand;
use tally_domain::values::{Amount, DebitId, GrantId, HoldId, Reason, UserId};
use tally_ledger::aggregate::AccountView;
use tally_ledger::{Outcome, Request};

use crate::accounts::{metadata, settle};
use crate::error::ApiError;
use crate::{AppState, Caller, MIN_POSITION_WAIT, Role, input};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts/{user_id}/holds", post(place))
        .route("/v1/holds/{hold_id}", get(read))
        .route("/v1/holds/{hold_id}/capture", post(capture))
        .route("/v1/holds/{hold_id}/release", post(release))
        .route("/v1/accounts/{user_id}/debits", post(debit))
        .route("/v1/admin/accounts/{user_id}/grants", post(grant))
}

fn amount(text: &str) -> Result<Amount, ApiError> {
    Ok(text.parse::<Amount>()?)
}

fn reason(text: &str) -> Result<Reason, ApiError> {
    Ok(Reason::new(text)?)
}

/// A hold as the API shows it.
#[derive(Serialize)]
struct HoldBody {
    hold_id: String,
    user_id: i64,
    amount: Decimal,
    captured: Decimal,
    state: String,
    expires_at: chrono::DateTime<chrono::Utc>,
    available: Decimal,
    held: Decimal,
    position: u64,
}

/// A write's answer: `status`, or the original's with `Idempotent-Replay: true`.
pub(crate) fn answer<T: Serialize>(status: StatusCode, replayed: bool, body: T) -> Response {
    let mut response = (status, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replay", HeaderValue::from_static("true"));
    }
    response
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

pub(crate) async fn run(
    state: &AppState,
    caller: &Caller,
    user: UserId,
    command: AccountCommand,
) -> Result<Outcome<AccountView>, ApiError> {
    Ok(state
        .accounts
        .execute(Request {
            key: user,
            command,
            command_id: None,
            metadata: metadata(caller),
        })
        .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceBody {
    hold_id: String,
    amount: String,
    ttl_seconds: u64,
    reason: String,
}

async fn place(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = state.keys.require(&headers, Role::Service).await?;
    let user = input::user_id(&user)?;
    let body: PlaceBody = input::json(&body)?;
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

/// The account a hold belongs to, from the holds read model (waiting, bounded, for
/// it to catch up with the log when the hold is not there yet).
async fn hold_owner(state: &AppState, hold_id: &HoldId) -> Result<UserId, ApiError> {
    if let Some(user) = state.hold_owners.get(hold_id.as_str()) {
        return Ok(user);
    }
    for attempt in 0..2 {
        let rows = sqlx::query("SELECT user_id FROM holds WHERE hold_id = $1 LIMIT 2")
            .bind(hold_id.to_string())
            .fetch_all(state.projector.pool())
            .await?;
        match rows.len() {
            1 => return Ok(UserId::new(rows[0].get(0))?),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureBody {
    amount: Option<String>,
}

async fn capture(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(hold_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = state.keys.require(&headers, Role::Service).await?;
    let hold_id = HoldId::new(hold_id)?;
    let body: CaptureBody = input::json(&body)?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    reason: String,
}

async fn release(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(hold_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = state.keys.require(&headers, Role::Service).await?;
    let hold_id = HoldId::new(hold_id)?;
    let body: ReleaseBody = input::json(&body)?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    min_position: Option<u64>,
}

async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(hold_id): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.keys.require(&headers, Role::Service).await?;
    let hold_id = HoldId::new(hold_id)?;
    let query = input::query(query)?;
    settle(&state, "holds", query.min_position).await?;
    let row = sqlx::query(
        "SELECT user_id, amount_cents, captured_cents, state, expires_at, position \
         FROM holds WHERE hold_id = $1 LIMIT 1",
    )
    .bind(hold_id.to_string())
    .fetch_optional(state.projector.pool())
    .await?
    .ok_or_else(|| ApiError::not_found("hold_not_found", format!("there is no hold {hold_id}")))?;
    Ok(Json(serde_json::json!({
        "hold_id": hold_id.to_string(),
        "user_id": row.get::<i64, _>(0),
        "amount": tally_projections::from_cents(row.get(1)),
        "captured": tally_projections::from_cents(row.get(2)),
        "state": row.get::<String, _>(3),
        "expires_at": chrono::DateTime::from_timestamp_micros(row.get(4)),
        "position": row.get::<i64, _>(5),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DebitBody {
    debit_id: String,
    amount: String,
    reason: String,
}

/// The balance after a credit command.
#[derive(Serialize)]
pub(crate) struct BalanceBody {
    user_id: i64,
    available: Decimal,
    held: Decimal,
    position: u64,
}

pub(crate) fn balance_body(outcome: &Outcome<AccountView>) -> BalanceBody {
    BalanceBody {
        user_id: outcome.view.user_id.get(),
        available: input::money(outcome.view.available),
        held: input::money(outcome.view.held),
        position: outcome.position,
    }
}

async fn debit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = state.keys.require(&headers, Role::Service).await?;
    let user = input::user_id(&user)?;
    let body: DebitBody = input::json(&body)?;
    let command = AccountCommand::Debit {
        debit_id: DebitId::new(body.debit_id)?,
        amount: amount(&body.amount)?,
        reason: reason(&body.reason)?,
    };
    let outcome = run(&state, &caller, user, command).await?;
    Ok(answer(
        StatusCode::CREATED,
        outcome.replayed,
        balance_body(&outcome),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    grant_id: String,
    amount: String,
    reason: String,
}

async fn grant(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = state.keys.require(&headers, Role::Admin).await?;
    let user = input::user_id(&user)?;
    let body: GrantBody = input::json(&body)?;
    let command = AccountCommand::Grant {
        grant_id: GrantId::new(body.grant_id)?,
        amount: amount(&body.amount)?,
        reason: reason(&body.reason)?,
    };
    let outcome = run(&state, &caller, user, command).await?;
    Ok(answer(
        StatusCode::CREATED,
        outcome.replayed,
        balance_body(&outcome),
    ))
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
