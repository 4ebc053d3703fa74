//! Subscriptions: a user's plan, its slots and period, and an admin's correction of
//! it (the before and after stay on record, with who and why).

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use tally_domain::subscription::SubscriptionCommand;
use tally_domain::values::{PlanId, Reason};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::{ReadQuery, USER_ID, metadata, wait_for_read_model};
use crate::admin::admin_id;
use crate::auth::{Admin, Service};
use crate::constraints::{PlanName, ReasonText, UserIdNumber};
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::input::{Body, UserPath};
use crate::{AppState, input};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(subscription))
        .routes(routes!(correct))
}

/// A subscription with its corrections on record.
#[derive(Serialize, ToSchema)]
pub(crate) struct SubscriptionBody {
    user_id: i64,
    plan: String,
    slots: i64,
    /// `active`, `expired` or `cancelled`.
    status: String,
    period_end: Option<chrono::DateTime<chrono::Utc>>,
    periods_paid: i64,
    position: i64,
    /// Every admin correction, oldest first.
    corrections: Vec<CorrectionRecord>,
}

/// An admin's plan correction: before, after, who and why.
#[derive(Serialize, ToSchema)]
pub(crate) struct CorrectionRecord {
    position: i64,
    plan_before: String,
    slots_before: i64,
    plan_after: String,
    slots_after: i64,
    admin: String,
    reason: String,
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The user's subscription: plan, slots, period end, status and corrections.
#[utoipa::path(get, path = "/v1/accounts/{user_id}/subscription", tag = "accounts",
    params(("user_id" = UserIdNumber, Path, description = USER_ID), ReadQuery),
    responses((status = 200, body = SubscriptionBody), ReadErrors),
    security(("service" = [])))]
async fn subscription(
    State(state): State<AppState>,
    _: Service,
    UserPath(user): UserPath,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SubscriptionBody>, ApiError> {
    let query = input::query(query)?;
    wait_for_read_model(&state, "subscriptions", query.min_position).await?;
    let pool = state.projector.pool();
    let row = tally_projections::subscription(pool, user.get())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "subscription_not_found",
                format!("user {user} has no subscription"),
            )
        })?;
    let corrections = tally_projections::subscription_corrections(pool, user.get())
        .await?
        .into_iter()
        .map(|r| CorrectionRecord {
            position: r.position,
            plan_before: r.plan_before,
            slots_before: r.slots_before,
            plan_after: r.plan_after,
            slots_after: r.slots_after,
            admin: r.admin,
            reason: r.reason,
            occurred_at: r.occurred_at,
        })
        .collect();
    Ok(Json(SubscriptionBody {
        user_id: user.get(),
        plan: row.plan,
        slots: row.slots,
        status: row.status,
        period_end: row.period_end,
        periods_paid: row.periods_paid,
        position: row.position,
        corrections,
    }))
}

/// A plan correction (the seeds' `/fix_user_slots`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CorrectionBody {
    /// The plan to set; its slots come with it (`basic`, `pro`, `enterprise`).
    #[schema(value_type = PlanName)]
    plan: String,
    /// Why (kept with the before and after).
    #[schema(value_type = ReasonText)]
    reason: String,
}

/// A subscription after a correction.
#[derive(Serialize, ToSchema)]
pub(crate) struct CorrectedBody {
    user_id: i64,
    plan: Option<String>,
    slots: u32,
    period_end: Option<chrono::DateTime<chrono::Utc>>,
    position: u64,
}

/// Sets the user's plan and its slots; the before and after stay on record.
#[utoipa::path(post, path = "/v1/admin/subscriptions/{user_id}/correction", tag = "admin",
    params(("user_id" = UserIdNumber, Path, description = USER_ID)),
    request_body = CorrectionBody,
    responses((status = 200, body = CorrectedBody), WriteErrors),
    security(("admin" = [])))]
async fn correct(
    State(state): State<AppState>,
    Admin(caller): Admin,
    UserPath(user): UserPath,
    Body(body): Body<CorrectionBody>,
) -> Result<Json<CorrectedBody>, ApiError> {
    let command = SubscriptionCommand::CorrectPlan {
        plan: PlanId::new(body.plan)?,
        admin: admin_id(&caller)?,
        reason: Reason::new(body.reason)?,
    };
    let outcome = state
        .ledgers
        .subscriptions
        .command(user, command, metadata(&caller))
        .await?;
    let view = outcome.view;
    Ok(Json(CorrectedBody {
        user_id: user.get(),
        plan: view.plan.map(|p| p.to_string()),
        slots: view.slots,
        period_end: view.period_end,
        position: outcome.position,
    }))
}
