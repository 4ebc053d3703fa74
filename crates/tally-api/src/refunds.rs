//! Refunds: a service (or an admin on a user's behalf) requests one for a spend;
//! another admin approves it (the credits go back) or rejects it; admins read the
//! queue.

use crate::auth::{Admin, ServiceOrAdmin};
use crate::constraints::{
    AmountText, IdText, PositionNumber, ReasonText, RefundState, SpendReference, UserIdNumber,
};
use crate::input::{Body, IdPath};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_domain::refund::{RefundAsk, RefundCommand};
use tally_domain::values::{Amount, Reason, RefundId};
use tally_ledger::workflows::{approve_refund, request_refund};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::{metadata, wait_for_read_model};
use crate::admin::admin_id;
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::write::answer;
use crate::{AppState, input};

/// Most refunds listed at once.
pub const REFUNDS_LIMIT_MAX: u32 = 1_000;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(request, list))
        .routes(routes!(approve))
        .routes(routes!(reject))
}

const REFUND_ID: &str = "the id the refund was requested with";

/// A refund request for a spend.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestBody {
    /// The caller's id for the request; re-sending it is answered as the original.
    #[schema(value_type = IdText)]
    refund_id: String,
    #[schema(value_type = UserIdNumber)]
    #[serde(deserialize_with = "crate::input::whole::deserialize")]
    user_id: i64,
    /// The spend: `debit:<debit_id>` or `hold:<hold_id>` (a captured hold).
    #[schema(value_type = SpendReference)]
    reference: String,
    /// Credits to give back, at most what the spend took minus earlier refunds.
    #[schema(value_type = AmountText)]
    amount: String,
    #[schema(value_type = ReasonText)]
    reason: String,
}

/// A refund after a request or a decision.
#[derive(Serialize, ToSchema)]
pub(crate) struct RefundAnswer {
    refund_id: String,
    /// `requested`, `approved` or `rejected`.
    status: &'static str,
    /// On approval: whose credits came back and the balance after.
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    available: Option<Decimal>,
    position: u64,
}

/// Requests a refund of a spend (201 `requested`): a service for its user, or an admin
/// on a user's behalf (that admin may then not approve it). An admin decides.
#[utoipa::path(post, path = "/v1/refunds", tag = "refunds",
    request_body = RequestBody,
    responses((status = 201, body = RefundAnswer), WriteErrors),
    security(("service" = []), ("admin" = [])))]
async fn request(
    State(state): State<AppState>,
    ServiceOrAdmin(caller): ServiceOrAdmin,
    Body(body): Body<RequestBody>,
) -> Result<Response, ApiError> {
    let refund_id = RefundId::new(body.refund_id)?;
    let ask = RefundAsk {
        user_id: input::user_id(&body.user_id.to_string())?,
        reference: body.reference,
        amount: body.amount.parse::<Amount>()?,
        reason: Reason::new(body.reason)?,
        requested_by: caller.name.clone(),
    };
    let outcome = request_refund(
        &state.ledgers.accounts,
        &state.ledgers.refunds,
        &state.config,
        refund_id.clone(),
        ask,
        metadata(&caller),
    )
    .await?;
    let body = RefundAnswer {
        refund_id: refund_id.to_string(),
        status: "requested",
        user_id: None,
        available: None,
        position: outcome.position,
    };
    Ok(answer(StatusCode::CREATED, outcome.replayed, body))
}

/// Which refunds.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// `requested` (the queue; default), `approved` or `rejected`.
    #[param(value_type = Option<RefundState>)]
    status: Option<String>,
    /// At most this many, 1 to 1000 (default 100), oldest request first.
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    limit: Option<u32>,
    /// Wait until the read model has applied the log up to this position.
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    min_position: Option<u64>,
}

/// Refunds in one state.
#[derive(Serialize, ToSchema)]
pub(crate) struct RefundList {
    refunds: Vec<RefundRecord>,
}

/// A refund as the refunds read model has it.
#[derive(Serialize, ToSchema)]
pub(crate) struct RefundRecord {
    refund_id: String,
    user_id: i64,
    reference: String,
    #[schema(value_type = String)]
    amount: Decimal,
    reason: String,
    requested_by: String,
    status: String,
    decided_by: String,
    decision_reason: String,
    position: i64,
}

/// The refund queue (or decided refunds).
#[utoipa::path(get, path = "/v1/refunds", tag = "refunds",
    params(ListQuery),
    responses((status = 200, body = RefundList), ReadErrors),
    security(("admin" = [])))]
async fn list(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RefundList>, ApiError> {
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
    wait_for_read_model(&state, "refunds", query.min_position).await?;
    let refunds =
        tally_projections::refunds_in_state(state.projector.pool(), &status, i64::from(limit))
            .await?
            .into_iter()
            .map(|r| RefundRecord {
                refund_id: r.refund_id,
                user_id: r.user_id,
                reference: r.reference,
                amount: r.amount,
                reason: r.reason,
                requested_by: r.requested_by,
                status: r.status,
                decided_by: r.decided_by,
                decision_reason: r.decision_reason,
                position: r.position,
            })
            .collect();
    Ok(Json(RefundList { refunds }))
}

/// An admin's decision on a refund.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DecisionBody {
    /// Why (kept on the event with the admin key's name).
    #[schema(value_type = ReasonText)]
    reason: String,
}

/// Approves a refund: the credits go back to the user. The admin who requested it
/// may not approve it (403 `self_approval`).
#[utoipa::path(post, path = "/v1/refunds/{refund_id}/approve", tag = "refunds",
    params(("refund_id" = IdText, Path, description = REFUND_ID)),
    request_body = DecisionBody,
    responses((status = 200, body = RefundAnswer), WriteErrors),
    security(("admin" = [])))]
async fn approve(
    State(state): State<AppState>,
    Admin(caller): Admin,
    IdPath(refund_id): IdPath<RefundId>,
    Body(body): Body<DecisionBody>,
) -> Result<Json<RefundAnswer>, ApiError> {
    let outcome = approve_refund(
        &state.ledgers.accounts,
        &state.ledgers.refunds,
        refund_id.clone(),
        admin_id(&caller)?,
        Reason::new(body.reason)?,
        metadata(&caller),
    )
    .await?;
    Ok(Json(RefundAnswer {
        refund_id: refund_id.to_string(),
        status: "approved",
        user_id: Some(outcome.view.user_id.get()),
        available: Some(input::money(outcome.view.available)),
        position: outcome.position,
    }))
}

/// Rejects a refund.
#[utoipa::path(post, path = "/v1/refunds/{refund_id}/reject", tag = "refunds",
    params(("refund_id" = IdText, Path, description = REFUND_ID)),
    request_body = DecisionBody,
    responses((status = 200, body = RefundAnswer), WriteErrors),
    security(("admin" = [])))]
async fn reject(
    State(state): State<AppState>,
    Admin(caller): Admin,
    IdPath(refund_id): IdPath<RefundId>,
    Body(body): Body<DecisionBody>,
) -> Result<Json<RefundAnswer>, ApiError> {
    let outcome = state
        .ledgers
        .refunds
        .command(
            refund_id.clone(),
            RefundCommand::Reject {
                admin: admin_id(&caller)?,
                reason: Reason::new(body.reason)?,
            },
            metadata(&caller),
        )
        .await?;
    Ok(Json(RefundAnswer {
        refund_id: refund_id.to_string(),
        status: "rejected",
        user_id: None,
        available: None,
        position: outcome.position,
    }))
}
