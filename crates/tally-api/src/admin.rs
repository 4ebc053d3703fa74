//! Admin routes: adjustments, blocks, subscription corrections (the `/fix_user_slots`
//! of the seeds, on record), refund decisions, stats. Every event an admin causes
//! names the admin's key as its actor.

use crate::auth::Admin;
use crate::constraints::{
    AlertThresholdText, DayText, IdText, PositionNumber, ReasonText, SignedAmountText, UserIdNumber,
};
use crate::input::{Body, UserPath};
use axum::Json;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tally_domain::account::AccountCommand;
use tally_domain::values::{AdjustmentId, AdminId, Reason, SignedAmount, UserId};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::USER_ID;
use crate::credits::BalanceBody;
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::write::run;
use crate::{AppState, Caller, input};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(adjust))
        .routes(routes!(set_alert))
        .routes(routes!(block))
        .routes(routes!(unblock))
        .routes(routes!(stats))
        .routes(routes!(campaigns))
}

pub(crate) fn admin_id(caller: &Caller) -> Result<AdminId, ApiError> {
    Ok(AdminId::new(caller.name.clone())?)
}

/// A correction of an account's credits, up or down.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdjustBody {
    /// The admin's id for the adjustment; re-sending it is answered as the original.
    #[schema(value_type = IdText)]
    adjustment_id: String,
    /// Signed credits with at most 2 places (`"-3.50"`, `"10"`).
    #[schema(value_type = SignedAmountText)]
    amount: String,
    /// Why (kept on the event with the admin key's name).
    #[schema(value_type = ReasonText)]
    reason: String,
    /// Let the balance go below zero (to take back credits already spent).
    #[serde(default)]
    allow_negative: bool,
}

/// Adjusts an account's credits by a signed amount, on record.
#[utoipa::path(post, path = "/v1/admin/accounts/{user_id}/adjustments", tag = "admin",
    params(("user_id" = UserIdNumber, Path, description = USER_ID)),
    request_body = AdjustBody,
    responses((status = 201, body = BalanceBody), WriteErrors),
    security(("admin" = [])))]
async fn adjust(
    State(state): State<AppState>,
    Admin(caller): Admin,
    UserPath(user): UserPath,
    Body(body): Body<AdjustBody>,
) -> Result<Response, ApiError> {
    let command = AccountCommand::Adjust {
        adjustment_id: AdjustmentId::new(body.adjustment_id)?,
        amount: body.amount.parse::<SignedAmount>()?,
        reason: Reason::new(body.reason)?,
        admin: admin_id(&caller)?,
        allow_negative: body.allow_negative,
    };
    crate::credits::credit_write(&state, &caller, user, command).await
}

/// A low-balance alert's setting.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertBody {
    /// Below this many credits (`"10"`), `off`, or `default` (the configured one).
    #[schema(value_type = AlertThresholdText)]
    threshold: String,
}

/// An account's low-balance alert.
#[derive(Serialize, ToSchema)]
pub(crate) struct AlertAnswer {
    user_id: i64,
    /// `below`, `off` or `default`.
    setting: &'static str,
    /// The threshold in force (absent: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "10")]
    threshold: Option<rust_decimal::Decimal>,
    position: u64,
}

/// Sets an account's low-balance alert: when a change leaves its available credits
/// below the threshold, the user is told in the bot and `balance.low` goes to the
/// webhooks (at most once per `TALLY_LOW_BALANCE_ALERT_PERIOD_SECONDS`; re-armed when
/// the credits are back). The same setting again appends nothing.
#[utoipa::path(put, path = "/v1/admin/accounts/{user_id}/alert", tag = "admin",
    params(("user_id" = UserIdNumber, Path, description = USER_ID)),
    request_body = AlertBody,
    responses((status = 200, body = AlertAnswer), WriteErrors),
    security(("admin" = [])))]
async fn set_alert(
    State(state): State<AppState>,
    Admin(caller): Admin,
    UserPath(user): UserPath,
    Body(body): Body<AlertBody>,
) -> Result<Json<AlertAnswer>, ApiError> {
    use tally_domain::account::AlertSetting;
    let setting = match body.threshold.as_str() {
        "off" => AlertSetting::Off,
        "default" => AlertSetting::Default,
        credits => AlertSetting::Below(credits.parse::<tally_domain::values::Amount>()?),
    };
    let outcome = run(&state, &caller, user, AccountCommand::SetAlert { setting }).await?;
    let alert = state.ledgers.accounts.load(&user).await?.state.alert;
    Ok(Json(AlertAnswer {
        user_id: user.get(),
        setting: match alert.setting {
            AlertSetting::Default => "default",
            AlertSetting::Off => "off",
            AlertSetting::Below(_) => "below",
        },
        threshold: alert.threshold(&state.config),
        position: outcome.position,
    }))
}

/// An admin action's reason.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReasonBody {
    /// Why (kept on the event with the admin key's name).
    #[schema(value_type = ReasonText)]
    reason: String,
}

/// An account's status after a block or unblock.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatusBody {
    user_id: i64,
    /// `open` or `blocked`.
    status: &'static str,
    position: u64,
}

async fn block_or_unblock(
    state: AppState,
    caller: Caller,
    user: UserId,
    body: ReasonBody,
    block: bool,
) -> Result<Json<StatusBody>, ApiError> {
    let (reason, admin) = (Reason::new(body.reason)?, admin_id(&caller)?);
    let command = match block {
        true => AccountCommand::Block { reason, admin },
        false => AccountCommand::Unblock { reason, admin },
    };
    let outcome = run(&state, &caller, user, command).await?;
    Ok(Json(StatusBody {
        user_id: user.get(),
        status: match outcome.view.status {
            tally_domain::account::AccountStatus::Open => "open",
            tally_domain::account::AccountStatus::Blocked => "blocked",
        },
        position: outcome.position,
    }))
}

/// Blocks an account: no spending, holds or debits until unblocked.
#[utoipa::path(post, path = "/v1/admin/accounts/{user_id}/block", tag = "admin",
    params(("user_id" = UserIdNumber, Path, description = USER_ID)),
    request_body = ReasonBody,
    responses((status = 200, body = StatusBody), WriteErrors),
    security(("admin" = [])))]
async fn block(
    State(state): State<AppState>,
    Admin(caller): Admin,
    UserPath(user): UserPath,
    Body(body): Body<ReasonBody>,
) -> Result<Json<StatusBody>, ApiError> {
    block_or_unblock(state, caller, user, body, true).await
}

/// Unblocks an account.
#[utoipa::path(post, path = "/v1/admin/accounts/{user_id}/unblock", tag = "admin",
    params(("user_id" = UserIdNumber, Path, description = USER_ID)),
    request_body = ReasonBody,
    responses((status = 200, body = StatusBody), WriteErrors),
    security(("admin" = [])))]
async fn unblock(
    State(state): State<AppState>,
    Admin(caller): Admin,
    UserPath(user): UserPath,
    Body(body): Body<ReasonBody>,
) -> Result<Json<StatusBody>, ApiError> {
    block_or_unblock(state, caller, user, body, false).await
}

/// Days to report, inclusive (UTC).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatsQuery {
    /// First day, `YYYY-MM-DD` (default: the beginning).
    #[param(value_type = Option<DayText>)]
    from: Option<String>,
    /// Last day, `YYYY-MM-DD` (default: the end).
    #[param(value_type = Option<DayText>)]
    to: Option<String>,
    /// Wait until the read model has applied the log up to this position.
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    min_position: Option<u64>,
}

/// Stats rows.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatsBody {
    rows: Vec<StatsRow>,
}

/// One metric of one day.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatsRow {
    /// UTC day, `YYYY-MM-DD`.
    day: String,
    /// `new_users`, `topups`, `revenue_cents`, `payments_failed`, `reversals`,
    /// `credits_deposited`, `credits_granted`, `credits_spent`, `credits_refunded`,
    /// `credits_adjusted`, `holds_placed`, `holds_captured`, `holds_released`,
    /// `holds_expired`, `posts_succeeded`, `posts_failed`.
    metric: String,
    /// A currency for money, `credits` (in cents) or `count`.
    unit: String,
    value: i64,
}

fn day(text: Option<String>, default: &str) -> Result<String, ApiError> {
    let text = text.unwrap_or_else(|| default.to_string());
    chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| ApiError::validation(format!("{text:?} is not a day like 2026-11-21")))
}

/// Daily business stats: users, top-ups, revenue, credits, holds, posts.
#[utoipa::path(get, path = "/v1/admin/stats", tag = "admin",
    params(StatsQuery),
    responses((status = 200, body = StatsBody), ReadErrors),
    security(("admin" = [])))]
async fn stats(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<StatsBody>, ApiError> {
    let query = input::query(query)?;
    let (from, to) = (day(query.from, "0001-01-01")?, day(query.to, "9999-12-31")?);
    crate::accounts::wait_for_read_model(&state, "daily_stats", query.min_position).await?;
    let rows = tally_projections::daily_figures(state.projector.pool(), &from, &to)
        .await?
        .into_iter()
        .map(|r| StatsRow {
            day: r.day,
            metric: r.metric,
            unit: r.unit,
            value: r.value,
        })
        .collect();
    Ok(Json(StatsBody { rows }))
}

/// Wait for the campaigns read model.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct CampaignsQuery {
    /// Wait until the read model has applied the log up to this position.
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    min_position: Option<u64>,
}

/// What the operator's campaigns earned, per post.
#[derive(Serialize, ToSchema)]
pub(crate) struct CampaignsBody {
    /// A payment counts for the payer's last click at most this many hours before it.
    attribution_window_hours: u32,
    posts: Vec<CampaignPostFigures>,
}

/// One campaign post's figures.
#[derive(Serialize, ToSchema)]
pub(crate) struct CampaignPostFigures {
    campaign_id: String,
    name: String,
    post_id: String,
    /// Successful posts of it.
    posts: i64,
    /// Button presses and deep-link starts.
    clicks: i64,
    /// Users who clicked.
    unique_users: i64,
    /// Payments attributed to it.
    conversions: i64,
    /// Their sum per currency, as decimal strings.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    revenue: std::collections::BTreeMap<String, String>,
    /// Conversions per user who clicked, a decimal string.
    conversion_rate: String,
}

/// Campaigns: posts, clicks, unique users, conversions, revenue per currency and
/// conversion rate, per campaign post.
#[utoipa::path(get, path = "/v1/admin/campaigns", tag = "admin",
    params(CampaignsQuery),
    responses((status = 200, body = CampaignsBody), ReadErrors),
    security(("admin" = [])))]
async fn campaigns(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<CampaignsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CampaignsBody>, ApiError> {
    let query = input::query(query)?;
    crate::accounts::wait_for_read_model(&state, "campaigns", query.min_position).await?;
    let config = state.ledgers.config();
    let posts = tally_projections::campaign_figures(
        state.projector.pool(),
        config.attribution_window_micros(),
    )
    .await?
    .into_iter()
    .map(|f| CampaignPostFigures {
        campaign_id: f.campaign_id,
        name: f.name,
        post_id: f.post_id,
        posts: f.posts,
        clicks: f.clicks,
        unique_users: f.unique_users,
        conversions: f.conversions,
        revenue: f
            .revenue
            .into_iter()
            .map(|(currency, amount)| (currency, amount.normalize().to_string()))
            .collect(),
        conversion_rate: f.conversion_rate.normalize().to_string(),
    })
    .collect();
    Ok(Json(CampaignsBody {
        attribution_window_hours: config.attribution_window_hours,
        posts,
    }))
}
