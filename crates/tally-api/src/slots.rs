//! Ad slots: configure (idempotent), record a post attempt (once per attempt id; one
//! success per destination and cycle; only while the owner's plan covers the slot),
//! and the destinations a cycle has not reached yet.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::Row;
use tally_domain::slot::{Attempt, Destination, Outcome, SlotCommand, SlotConfig, SlotCoverage};
use tally_domain::values::{SlotId, UserId};
use tally_ledger::Request;

use crate::accounts::{metadata, settle};
use crate::error::ApiError;
use crate::holds::answer;
use crate::{AppState, Role, input};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/slots/due", get(due))
        .route("/v1/slots/{slot_id}", put(configure))
        .route("/v1/slots/{slot_id}/attempts", post(attempt))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationBody {
    chat_id: i64,
    topic_id: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigureBody {
    user_id: i64,
    content: String,
    destinations: Vec<DestinationBody>,
}

async fn configure(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(slot_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = state.keys.require(&headers, Role::Service).await?;
    let slot_id = SlotId::new(slot_id)?;
    let body: ConfigureBody = input::json(&body)?;
    let config = SlotConfig {
        user_id: input::user_id(&body.user_id.to_string())?,
        content: body.content,
        destinations: body
            .destinations
            .into_iter()
            .map(|d| Destination {
                chat_id: d.chat_id,
                topic_id: d.topic_id,
            })
            .collect(),
    };
    let before = state.slots.load(&slot_id).await?;
    let created = before.state.config.is_none();
    let outcome = state
        .slots
        .execute(Request {
            key: slot_id.clone(),
            command: SlotCommand::Configure(config.clone()),
            command_id: None,
            metadata: metadata(&caller),
        })
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = serde_json::json!({
        "slot_id": slot_id.to_string(),
        "user_id": config.user_id.get(),
        "content": config.content,
        "destinations": config.destinations,
        "position": outcome.position,
    });
    Ok(answer(status, false, body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum OutcomeBody {
    Succeeded,
    Failed,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttemptBody {
    attempt_id: String,
    cycle: u64,
    chat_id: i64,
    topic_id: Option<i64>,
    outcome: OutcomeBody,
    message_id: Option<i64>,
    error_kind: Option<String>,
    retry_after: Option<u32>,
}

/// Whether `owner`'s subscription covers `slot` now: active, and the slot among the
/// first `slots` the owner configured.
async fn coverage(
    state: &AppState,
    owner: UserId,
    slot: &SlotId,
) -> Result<SlotCoverage, ApiError> {
    let subscription = state.subscriptions.load(&owner).await?.state;
    if !subscription.is_active(chrono::Utc::now()) {
        return Ok(SlotCoverage::NoSubscription);
    }
    let owned =
        sqlx::query("SELECT slot_id FROM slots WHERE user_id = $1 ORDER BY configured_at, slot_id")
            .bind(owner.get())
            .fetch_all(state.projector.pool())
            .await?;
    let rank = owned
        .iter()
        .position(|r| r.get::<String, _>(0) == slot.as_str())
        .unwrap_or(0);
    Ok(match rank < subscription.slots as usize {
        true => SlotCoverage::Covered,
        false => SlotCoverage::BeyondPlan,
    })
}

async fn attempt(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(slot_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = state.keys.require(&headers, Role::Service).await?;
    let slot_id = SlotId::new(slot_id)?;
    let body: AttemptBody = input::json(&body)?;
    if body.attempt_id.trim().is_empty() || body.attempt_id.len() > 128 {
        return Err(ApiError::validation(
            "attempt_id must be 1 to 128 characters",
        ));
    }
    let loaded = state.slots.load(&slot_id).await?;
    // Coverage ranks the owner's slots from the read model: it must know this one.
    state
        .projector
        .wait_for("posts", loaded.position, crate::MIN_POSITION_WAIT)
        .await?;
    let slot = loaded.state;
    // A recorded attempt id again is a no-op for the slot: answered as a replay.
    let again = slot.attempt_ids.contains(&body.attempt_id);
    let Some(config) = slot.config else {
        return Err(ApiError::not_found(
            "not_found",
            format!("there is no slot {slot_id}; configure it with PUT /v1/slots/{slot_id}"),
        ));
    };
    let coverage = coverage(&state, config.user_id, &slot_id).await?;
    let outcome = match body.outcome {
        OutcomeBody::Succeeded => Outcome::Succeeded,
        OutcomeBody::Failed => Outcome::Failed,
    };
    let command = SlotCommand::RecordAttempt {
        attempt: Attempt {
            attempt_id: body.attempt_id.clone(),
            cycle: body.cycle,
            destination: Destination {
                chat_id: body.chat_id,
                topic_id: body.topic_id,
            },
            attempt: 0,
            outcome,
            message_id: body.message_id,
            error_kind: body.error_kind,
            retry_after: body.retry_after,
        },
        coverage,
    };
    let outcome = state
        .slots
        .execute(Request {
            key: slot_id.clone(),
            command,
            command_id: Some(format!("attempt:{}", body.attempt_id)),
            metadata: metadata(&caller),
        })
        .await?;
    let body = serde_json::json!({
        "slot_id": slot_id.to_string(),
        "attempt_id": body.attempt_id,
        "position": outcome.position,
    });
    Ok(answer(StatusCode::CREATED, outcome.replayed || again, body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DueQuery {
    cycle: u64,
    min_position: Option<u64>,
}

async fn due(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DueQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.keys.require(&headers, Role::Service).await?;
    let Query(query) =
        query.map_err(|e| ApiError::validation(format!("{}; give ?cycle=N", e.body_text())))?;
    // Due slots come from two read models: both must have reached the position.
    settle(&state, "posts", query.min_position).await?;
    settle(&state, "subscriptions", query.min_position).await?;
    let cycle =
        i64::try_from(query.cycle).map_err(|_| ApiError::validation("cycle is too large"))?;
    // Slots beyond their owner's plan are not due: rank each owner's slots by age.
    let plan_slots: std::collections::HashMap<i64, i64> =
        sqlx::query("SELECT user_id, slots FROM subscriptions")
            .fetch_all(state.projector.pool())
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    let mut covered = std::collections::HashSet::new();
    let mut rank: std::collections::HashMap<i64, i64> = Default::default();
    for row in sqlx::query("SELECT slot_id, user_id FROM slots ORDER BY configured_at, slot_id")
        .fetch_all(state.projector.pool())
        .await?
    {
        let (slot, owner): (String, i64) = (row.get(0), row.get(1));
        let n = rank.entry(owner).or_default();
        if *n < plan_slots.get(&owner).copied().unwrap_or(0) {
            covered.insert(slot);
        }
        *n += 1;
    }
    let rows = sqlx::query(
        "SELECT d.slot_id, s.user_id, s.content, d.chat_id, d.topic_id \
         FROM slot_destinations d JOIN slots s ON s.slot_id = d.slot_id \
         JOIN subscriptions u ON u.user_id = s.user_id \
         WHERE u.status IN ('active', 'cancelled') AND u.period_end > $1 \
           AND NOT EXISTS (SELECT 1 FROM slot_posts p WHERE p.slot_id = d.slot_id \
               AND p.cycle = $2 AND p.chat_id = d.chat_id AND p.topic_id = d.topic_id) \
         ORDER BY d.slot_id, d.chat_id, d.topic_id",
    )
    .bind(chrono::Utc::now().timestamp_micros())
    .bind(cycle)
    .fetch_all(state.projector.pool())
    .await?;
    let mut slots: Vec<serde_json::Value> = Vec::new();
    for row in rows {
        let slot_id: String = row.get(0);
        if !covered.contains(&slot_id) {
            continue;
        }
        let topic: i64 = row.get(4);
        let destination = serde_json::json!({
            "chat_id": row.get::<i64, _>(3),
            "topic_id": (topic != 0).then_some(topic),
        });
        match slots.last_mut() {
            Some(last) if last["slot_id"] == slot_id.as_str() => {
                if let Some(list) = last["destinations"].as_array_mut() {
                    list.push(destination);
                }
            }
            _ => slots.push(serde_json::json!({
                "slot_id": slot_id,
                "user_id": row.get::<i64, _>(1),
                "content": row.get::<String, _>(2),
                "destinations": [destination],
            })),
        }
    }
    Ok(Json(
        serde_json::json!({ "cycle": query.cycle, "slots": slots }),
    ))
}
