//! Auditor routes: an account recomputed from its events next to the read model, the
//! whole audit (hash chains, trial balance, read models against a fresh replay), and
//! the raw log with its envelopes.

use crate::auth::Auditor;
use crate::constraints::{PositionNumber, TimeText, UserIdNumber};
use crate::input::UserPath;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::USER_ID;
use crate::error::{ApiError, ReadErrors};
use crate::{AppState, input};

/// Most events per page of `/v1/events`.
pub const EVENTS_LIMIT_MAX: usize = 10_000;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(replay))
        .routes(routes!(verify))
        .routes(routes!(events))
}

/// As of when (neither: now).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReplayQuery {
    /// An RFC 3339 time (not with `at_position`).
    #[param(value_type = Option<TimeText>)]
    at: Option<String>,
    /// A log position (not with `at`).
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    at_position: Option<u64>,
}

/// The account recomputed from its raw events next to what the read model says:
/// `{user_id, through_position, recomputed, projected, consistent, differences, events,
/// statement}`.
#[utoipa::path(get, path = "/v1/audit/accounts/{user_id}/replay", tag = "audit",
    params(("user_id" = UserIdNumber, Path, description = USER_ID), ReplayQuery),
    responses((status = 200, body = Object), ReadErrors),
    security(("auditor" = [])))]
async fn replay(
    State(state): State<AppState>,
    _: Auditor,
    UserPath(user): UserPath,
    query: Result<Query<ReplayQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query = input::query(query)?;
    let as_of = input::as_of(query.at, query.at_position)?;
    let replay = state.projector.replay_account(user, as_of).await?;
    Ok(Json(serde_json::json!({
        "user_id": replay.user_id,
        "through_position": replay.through_position,
        "recomputed": replay.recomputed,
        "projected": replay.projected,
        "consistent": replay.consistent,
        "differences": replay.differences,
        "events": replay.recomputed.events,
        "statement": replay.statement,
    })))
}

/// The whole audit: hash chains, trial balance (sums to zero), every read model
/// against a fresh replay: `{hash_chains_ok, trial_balance_ok, projections_consistent,
/// problems:[…]}`.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, body = Object), ReadErrors),
    security(("auditor" = [])))]
async fn verify(
    State(state): State<AppState>,
    _: Auditor,
    _headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    // One audit at a time in this process; a second caller is told to come back.
    let Ok(turn) = state.audit_turn.clone().try_acquire_owned() else {
        let mut busy = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "an audit is running; retry when it is done",
        )
        .into_response();
        busy.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(AUDIT_RETRY_AFTER_SECONDS),
        );
        return Ok(busy);
    };
    // Run on its own task: a caller that goes away does not cut the audit short
    // before it drops its scratch tables; the deadline bounds it either way.
    let projector = state.projector.clone();
    let deadline = std::time::Instant::now() + AUDIT_VERIFY_MAX;
    let audit = tokio::spawn(async move {
        let _turn = turn;
        projector.verify_within(Some(deadline), |_, _, _| {}).await
    });
    match audit.await {
        Ok(report) => Ok(Json(report?).into_response()),
        Err(failed) => Err(ApiError::internal(format!(
            "the audit task failed: {failed}"
        ))),
    }
}

/// Longest an audit over HTTP runs before it gives up (and cleans up).
pub const AUDIT_VERIFY_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// What a second caller is told to wait.
const AUDIT_RETRY_AFTER_SECONDS: u64 = 10;

/// A page of the log.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Events after this position (the previous page's `next`).
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    after: Option<u64>,
    /// Events per page, 1 to 10000 (default 1000).
    #[param(minimum = 1, maximum = 10000)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    limit: Option<usize>,
}

/// Raw events with their envelopes (id, stream, version, position, type, schema
/// version, payload, metadata, occurred_at, recorded_at, hash), for export:
/// `{events:[…], next}`.
#[utoipa::path(get, path = "/v1/events", tag = "audit",
    params(EventsQuery),
    responses((status = 200, body = Object), ReadErrors),
    security(("auditor" = [])))]
async fn events(
    State(state): State<AppState>,
    _: Auditor,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query = input::query(query)?;
    let limit = query.limit.unwrap_or(1_000);
    if limit == 0 || limit > EVENTS_LIMIT_MAX {
        return Err(ApiError::validation(format!(
            "limit must be 1 to {EVENTS_LIMIT_MAX}"
        )));
    }
    let events = state
        .store
        .read_all(query.after.unwrap_or(0), limit)
        .await
        .map_err(ApiError::internal)?;
    let next = (events.len() == limit)
        .then(|| events.last().map(|e| e.position))
        .flatten();
    Ok(Json(serde_json::json!({ "events": events, "next": next })))
}
