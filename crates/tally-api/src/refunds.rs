//! Refunds: a service (or an admin on a user's behalf) requests one for a spend;
//! another admin approves it (the credits go back) or rejects it; admins read the
//! queue.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::Row;
use tally_domain::refund::{RefundAsk, RefundCommand};
use tally_domain::values::{Amount, Reason, RefundId};
use tally_ledger::Request;
use tally_ledger::workflows::{approve_refund, request_refund};

use crate::accounts::{metadata, settle};
use crate::admin::admin_id;
use crate::error::ApiError;
use crate::holds::answer;
use crate::{AppState, Role, input};

/// Most refunds listed at once.
pub const REFUNDS_LIMIT_MAX: u32 = 1_000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/refunds", post(request).get(list))
        .route("/v1/refunds/{refund_id}/approve", post(approve))
        .route("/v1/refunds/{refund_id}/reject", post(reject))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    refund_id: String,
    user_id: i64,
    reference: String,
    amount: String,
    reason: String,
}

async fn request(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = state.keys.require(&headers, Role::Service).await?;
    let body: RequestBody = input::json(&body)?;
    let refund_id = RefundId::new(body.refund_id)?;
    let ask = RefundAsk {
        user_id: input::user_id(&body.user_id.to_string())?,
        reference: body.reference,
        amount: body.amount.parse::<Amount>()?,
        reason: Reason::new(body.reason)?,
        requested_by: caller.name.clone(),
    };
    let outcome = request_refund(
        &state.accounts,
        &state.refunds,
        &state.config,
        refund_id.clone(),
        ask,
        metadata(&caller),
    )
    .await?;
    let body = serde_json::json!({
        "refund_id": refund_id.to_string(),
        "status": "requested",
        "position": outcome.position,
    });
    Ok(answer(StatusCode::CREATED, outcome.replayed, body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
    min_position: Option<u64>,
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.keys.require(&headers, Role::Admin).await?;
    let query = input::query(query)?;
    let status = query.status.unwrap_or_else(|| "requested".into());
    if !matches!(status.as_str(), "requested" | "approved" | "rejected") {
        return Err(ApiError::validation(format!(
            "status {status:?} is none of requested, approved, rejected"
        )));
    }
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > REFUNDS_LIMIT_MAX {
        return Err(ApiError::validation(format!(
            "limit must be 1 to {REFUNDS_LIMIT_MAX}"
        )));
    }
    settle(&state, "refunds", query.min_position).await?;
    let rows = sqlx::query(
        "SELECT refund_id, user_id, reference, amount_cents, reason, requested_by, status, \
         decided_by, decision_reason, position FROM refunds WHERE status = $1 \
         ORDER BY requested_at, refund_id LIMIT $2",
    )
    .bind(status)
    .bind(i64::from(limit))
    .fetch_all(state.projector.pool())
    .await?;
    let refunds: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "refund_id": r.get::<String, _>(0),
                "user_id": r.get::<i64, _>(1),
                "reference": r.get::<String, _>(2),
                "amount": tally_projections::from_cents(r.get(3)),
                "reason": r.get::<String, _>(4),
                "requested_by": r.get::<String, _>(5),
                "status": r.get::<String, _>(6),
                "decided_by": r.get::<String, _>(7),
                "decision_reason": r.get::<String, _>(8),
                "position": r.get::<i64, _>(9),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "refunds": refunds })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    reason: String,
}

async fn approve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(refund_id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = state.keys.require(&headers, Role::Admin).await?;
    let refund_id = RefundId::new(refund_id)?;
    let body: DecisionBody = input::json(&body)?;
    let outcome = approve_refund(
        &state.accounts,
        &state.refunds,
        refund_id.clone(),
        admin_id(&caller)?,
        Reason::new(body.reason)?,
        metadata(&caller),
    )
    .await?;
    Ok(Json(serde_json::json!({
        "refund_id": refund_id.to_string(),
        "status": "approved",
        "user_id": outcome.view.user_id.get(),
        "available": outcome.view.available,
        "position": outcome.position,
    })))
}

async fn reject(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(refund_id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let caller = state.keys.require(&headers, Role::Admin).await?;
    let refund_id = RefundId::new(refund_id)?;
    let body: DecisionBody = input::json(&body)?;
    let outcome = state
        .refunds
        .execute(Request {
            key: refund_id.clone(),
            command: RefundCommand::Reject {
                admin: admin_id(&caller)?,
                reason: Reason::new(body.reason)?,
            },
            command_id: None,
            metadata: metadata(&caller),
        })
        .await?;
    Ok(Json(serde_json::json!({
        "refund_id": refund_id.to_string(),
        "status": "rejected",
        "position": outcome.position,
    })))
}
