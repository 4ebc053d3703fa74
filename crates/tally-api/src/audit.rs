//! Auditor routes: an account recomputed from its events next to the read model, the
//! whole audit (hash chains, trial balance, read models against a fresh replay), and
//! the raw log with its envelopes.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::error::ApiError;
use crate::{AppState, Role, input};

/// Most events per page of `/v1/events`.
pub const EVENTS_LIMIT_MAX: usize = 10_000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/audit/accounts/{user_id}/replay", get(replay))
        .route("/v1/audit/verify", get(verify))
        .route("/v1/events", get(events))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayQuery {
    at: Option<String>,
    at_position: Option<u64>,
}

async fn replay(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    query: Result<Query<ReplayQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.keys.require(&headers, Role::Auditor).await?;
    let user = input::user_id(&user)?;
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

async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<tally_projections::AuditReport>, ApiError> {
    state.keys.require(&headers, Role::Auditor).await?;
    Ok(Json(state.projector.verify(|_, _, _| {}).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.keys.require(&headers, Role::Auditor).await?;
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
