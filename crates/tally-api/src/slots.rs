//! Ad slots: configure (idempotent), record a post attempt (once per attempt id; one
//! success per destination and cycle; only while the owner's plan covers the slot),
//! and the destinations a cycle has not reached yet.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tally_domain::slot::{Attempt, Destination, Outcome, SlotCommand, SlotConfig, SlotCoverage};
use tally_domain::values::{SlotId, UserId};
use tally_ledger::Request;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::{metadata, settle};
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::holds::answer;
use crate::{AppState, Role, input};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(due))
        .routes(routes!(configure))
        .routes(routes!(attempt))
}

const SLOT_ID: &str = "the caller's id of the slot";

/// A chat (and forum topic) a slot posts to.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DestinationBody {
    /// Telegram chat id.
    chat_id: i64,
    /// Forum topic (message thread) id, if any.
    topic_id: Option<i64>,
}

/// A slot's configuration: whose it is, what it posts, where.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigureBody {
    user_id: i64,
    /// The post's text.
    content: String,
    /// Where it is posted (at least one; no duplicates).
    destinations: Vec<DestinationBody>,
}

/// A slot as configured.
#[derive(Serialize, ToSchema)]
pub(crate) struct SlotBody {
    slot_id: String,
    user_id: i64,
    content: String,
    destinations: Vec<DestinationBody>,
    position: u64,
}

/// Configures an ad slot (201 new, 200 changed or unchanged).
#[utoipa::path(put, path = "/v1/slots/{slot_id}", tag = "slots",
    params(("slot_id" = String, Path, description = SLOT_ID)),
    request_body = ConfigureBody,
    responses((status = 201, body = SlotBody), (status = 200, body = SlotBody), WriteErrors),
    security(("service" = [])))]
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
    let before = state.ledgers.slots.load(&slot_id).await?;
    let created = before.state.config.is_none();
    let outcome = state
        .ledgers
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
    let body = SlotBody {
        slot_id: slot_id.to_string(),
        user_id: config.user_id.get(),
        content: config.content,
        destinations: config
            .destinations
            .into_iter()
            .map(|d| DestinationBody {
                chat_id: d.chat_id,
                topic_id: d.topic_id,
            })
            .collect(),
        position: outcome.position,
    };
    Ok(answer(status, false, body))
}

/// How a post attempt went.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum OutcomeBody {
    Succeeded,
    Failed,
}

/// A post attempt of a slot to one destination in one cycle.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttemptBody {
    /// The caller's id for the attempt; re-sending it is answered as the original.
    attempt_id: String,
    /// The posting cycle (the bot's round number).
    cycle: u64,
    chat_id: i64,
    topic_id: Option<i64>,
    outcome: OutcomeBody,
    /// The posted message (for `succeeded`).
    message_id: Option<i64>,
    /// Why it failed (`flood_wait`, `forbidden`, `chat_not_found`, …; for `failed`).
    error_kind: Option<String>,
    /// Seconds Telegram asked to wait (for `flood_wait`).
    retry_after: Option<u32>,
}

/// A recorded attempt.
#[derive(Serialize, ToSchema)]
pub(crate) struct AttemptAnswer {
    slot_id: String,
    attempt_id: String,
    position: u64,
}

/// Whether `owner`'s subscription covers `slot` now: active, and the slot among the
/// first `slots` the owner configured.
async fn coverage(
    state: &AppState,
    owner: UserId,
    slot: &SlotId,
) -> Result<SlotCoverage, ApiError> {
    let subscription = state.ledgers.subscriptions.load(&owner).await?.state;
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

/// Records a post attempt: once per attempt id, one success per destination and
/// cycle (409 `already_posted`), only while the owner's plan covers the slot (409
/// `slot_not_active`).
#[utoipa::path(post, path = "/v1/slots/{slot_id}/attempts", tag = "slots",
    params(("slot_id" = String, Path, description = SLOT_ID)),
    request_body = AttemptBody,
    responses((status = 201, body = AttemptAnswer), WriteErrors),
    security(("service" = [])))]
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
    let loaded = state.ledgers.slots.load(&slot_id).await?;
    // Coverage ranks the owner's slots from the read model: it must know this one.
    state
        .projector
        .wait_for("posts", loaded.position, crate::MIN_POSITION_WAIT)
        .await?;
    let slot = loaded.state;
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
        .ledgers
        .slots
        .execute(Request {
            key: slot_id.clone(),
            command,
            command_id: Some(format!("attempt:{}", body.attempt_id)),
            metadata: metadata(&caller),
        })
        .await?;
    let body = AttemptAnswer {
        slot_id: slot_id.to_string(),
        attempt_id: body.attempt_id,
        position: outcome.position,
    };
    Ok(answer(StatusCode::CREATED, outcome.replayed, body))
}

/// Which cycle.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DueQuery {
    /// The posting cycle.
    cycle: u64,
    /// Wait until the read models have applied the log up to this position.
    min_position: Option<u64>,
}

/// The slots due in a cycle.
#[derive(Serialize, ToSchema)]
pub(crate) struct DueBody {
    cycle: u64,
    slots: Vec<DueSlot>,
}

/// A slot and its destinations not yet posted to successfully in the cycle.
#[derive(Serialize, ToSchema)]
pub(crate) struct DueSlot {
    slot_id: String,
    user_id: i64,
    content: String,
    destinations: Vec<DestinationBody>,
}

/// Slots (covered by an active plan) and their destinations not yet posted to
/// successfully in cycle C.
#[utoipa::path(get, path = "/v1/slots/due", tag = "slots",
    params(DueQuery),
    responses((status = 200, body = DueBody), ReadErrors),
    security(("service" = [])))]
async fn due(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<DueQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DueBody>, ApiError> {
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
    let mut slots: Vec<DueSlot> = Vec::new();
    for row in rows {
        let slot_id: String = row.get(0);
        if !covered.contains(&slot_id) {
            continue;
        }
        let topic: i64 = row.get(4);
        let destination = DestinationBody {
            chat_id: row.get(3),
            topic_id: (topic != 0).then_some(topic),
        };
        match slots.last_mut() {
            Some(last) if last.slot_id == slot_id => last.destinations.push(destination),
            _ => slots.push(DueSlot {
                slot_id,
                user_id: row.get(1),
                content: row.get(2),
                destinations: vec![destination],
            }),
        }
    }
    Ok(Json(DueBody {
        cycle: query.cycle,
        slots,
    }))
}
