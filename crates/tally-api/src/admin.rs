//! Admin routes: adjustments, blocks, subscription corrections (the `/fix_user_slots`
//! of the seeds, on record), refund decisions, stats. Every event an admin causes
//! names the admin's key as its actor.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::Row;
use tally_domain::account::AccountCommand;
use tally_domain::subscription::SubscriptionCommand;
use tally_domain::values::{AdjustmentId, AdminId, PlanId, Reason, SignedAmount};
use tally_ledger::Request;

use crate::accounts::metadata;
use crate::error::ApiError;
use crate::holds::{answer, balance_body, run};
use crate::{AppState, Caller, Role, input};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/accounts/{user_id}/adjustments", post(adjust))
        .route("/v1/admin/accounts/{user_id}/block", post(block))
        .route("/v1/admin/accounts/{user_id}/unblock", post(unblock))
        .route(
            "/v1/admin/subscriptions/{user_id}/correction",
            post(correct),
        )
        .route("/v1/admin/stats", get(stats))
}

pub(crate) fn admin_id(caller: &Caller) -> Result<AdminId, ApiError> {
    Ok(AdminId::new(caller.name.clone())?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustBody {
    adjustment_id: String,
    amount: String,
    reason: String,
    #[serde(default)]
    allow_negative: bool,
}

async fn adjust(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = state.keys.require(&headers, Role::Admin).await?;
    let user = input::user_id(&user)?;
    let body: AdjustBody = input::json(&body)?;
    let command = AccountCommand::Adjust {
        adjustment_id: AdjustmentId::new(body.adjustment_id)?,
        amount: body.amount.parse::<SignedAmount>()?,
        reason: Reason::new(body.reason)?,
        admin: admin_id(&caller)?,
        allow_negative: body.allow_negative,
    };
    let outcome = run(&state, &caller, user, command).await?;
    let body = balance_body(&outcome);
    Ok(answer(StatusCode::CREATED, outcome.replayed, body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    reason: String,
}

async fn block_or_unblock(
    state: AppState,
    headers: HeaderMap,
    user: String,
    body: Bytes,
    block: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = state.keys.require(&headers, Role::Admin).await?;
    let user = input::user_id(&user)?;
    let body: ReasonBody = input::json(&body)?;
    let (reason, admin) = (Reason::new(body.reason)?, admin_id(&caller)?);
    let command = match block {
        true => AccountCommand::Block { reason, admin },
        false => AccountCommand::Unblock { reason, admin },
    };
    let outcome = run(&state, &caller, user, command).await?;
    Ok(Json(serde_json::json!({
        "user_id": user.get(),
        "status": match outcome.view.status {
            tally_domain::account::AccountStatus::Open => "open",
            tally_domain::account::AccountStatus::Blocked => "blocked",
        },
        "position": outcome.position,
    })))
}

async fn block(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    block_or_unblock(state, headers, user, body, true).await
}

async fn unblock(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    block_or_unblock(state, headers, user, body, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorrectionBody {
    plan: String,
    reason: String,
}

async fn correct(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = state.keys.require(&headers, Role::Admin).await?;
    let user = input::user_id(&user)?;
    let body: CorrectionBody = input::json(&body)?;
    let command = SubscriptionCommand::CorrectPlan {
        plan: PlanId::new(body.plan)?,
        admin: admin_id(&caller)?,
        reason: Reason::new(body.reason)?,
    };
    let outcome = state
        .subscriptions
        .execute(Request {
            key: user,
            command,
            command_id: None,
            metadata: metadata(&caller),
        })
        .await?;
    let view = outcome.view;
    Ok(Json(serde_json::json!({
        "user_id": user.get(),
        "plan": view.plan.map(|p| p.to_string()),
        "slots": view.slots,
        "period_end": view.period_end,
        "position": outcome.position,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    from: Option<String>,
    to: Option<String>,
    min_position: Option<u64>,
}

fn day(text: Option<String>, default: &str) -> Result<String, ApiError> {
    let text = text.unwrap_or_else(|| default.to_string());
    chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| ApiError::validation(format!("{text:?} is not a day like 2026-11-21")))
}

async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.keys.require(&headers, Role::Admin).await?;
    let query = input::query(query)?;
    let (from, to) = (day(query.from, "0001-01-01")?, day(query.to, "9999-12-31")?);
    crate::accounts::settle(&state, "daily_stats", query.min_position).await?;
    let rows = sqlx::query(
        "SELECT day, metric, unit, value FROM daily_stats WHERE day >= $1 AND day <= $2 \
         ORDER BY day, metric, unit",
    )
    .bind(from)
    .bind(to)
    .fetch_all(state.projector.pool())
    .await?;
    let days: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "day": r.get::<String, _>(0),
                "metric": r.get::<String, _>(1),
                "unit": r.get::<String, _>(2),
                "value": r.get::<i64, _>(3),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "rows": days })))
}
