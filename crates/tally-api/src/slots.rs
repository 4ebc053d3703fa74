//! Ad slots: configure (idempotent), record a post attempt (once per attempt id; one
//! success per destination and cycle; only while the owner's plan covers the slot),
//! and the destinations a cycle has not reached yet.

use crate::auth::Service;
use crate::constraints::{
    AttemptIdText, ChatIdNumber, ContentText, CycleNumber, DestinationList, ErrorKindText, IdText,
    PositionNumber, UserIdNumber,
};
use crate::input::{Body, IdPath};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tally_domain::slot::{Attempt, Destination, Outcome, SlotCommand, SlotConfig, SlotCoverage};
use tally_domain::values::{SlotId, UserId};
use tally_ledger::Request;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::{metadata, wait_for_read_model};
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::write::answer;
use crate::{AppState, input};

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
    #[schema(value_type = ChatIdNumber)]
    #[serde(deserialize_with = "crate::input::whole::deserialize")]
    chat_id: i64,
    /// Forum topic (message thread) id, if any.
    #[serde(default, deserialize_with = "crate::input::whole::option")]
    topic_id: Option<i64>,
}

/// A slot's configuration: whose it is, what it posts, where.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigureBody {
    #[schema(value_type = UserIdNumber)]
    #[serde(deserialize_with = "crate::input::whole::deserialize")]
    user_id: i64,
    /// The post's text.
    #[schema(value_type = ContentText)]
    content: String,
    /// Where it is posted (at least one; no duplicates).
    #[schema(value_type = DestinationList)]
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
    params(("slot_id" = IdText, Path, description = SLOT_ID)),
    request_body = ConfigureBody,
    responses((status = 201, body = SlotBody), (status = 200, body = SlotBody), WriteErrors),
    security(("service" = [])))]
async fn configure(
    State(state): State<AppState>,
    Service(caller): Service,
    IdPath(slot_id): IdPath<SlotId>,
    Body(body): Body<ConfigureBody>,
) -> Result<Response, ApiError> {
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
        photo: None,
        buttons: Vec::new(),
    };
    let before = state.ledgers.slots.load(&slot_id).await?;
    let created = before.state.config.is_none();
    let outcome = state
        .ledgers
        .slots
        .command(
            slot_id.clone(),
            SlotCommand::Configure(config.clone()),
            metadata(&caller),
        )
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
    /// Sent, but whether Telegram posted it is not known (a timeout after sending):
    /// no other post goes to the destination in this cycle.
    Unknown,
}

/// A post attempt of a slot to one destination in one cycle.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttemptBody {
    /// The caller's id for the attempt; re-sending it is answered as the original.
    #[schema(value_type = AttemptIdText)]
    attempt_id: String,
    /// The posting cycle (the bot's round number).
    #[schema(value_type = CycleNumber)]
    #[serde(deserialize_with = "crate::input::whole::deserialize")]
    cycle: u64,
    #[schema(value_type = ChatIdNumber)]
    #[serde(deserialize_with = "crate::input::whole::deserialize")]
    chat_id: i64,
    #[serde(default, deserialize_with = "crate::input::whole::option")]
    topic_id: Option<i64>,
    outcome: OutcomeBody,
    /// The posted message (for `succeeded`).
    #[serde(default, deserialize_with = "crate::input::whole::option")]
    message_id: Option<i64>,
    /// Why it failed (`flood_wait`, `forbidden`, `chat_not_found`, …; for `failed`).
    #[schema(value_type = Option<ErrorKindText>)]
    error_kind: Option<String>,
    /// Seconds Telegram asked to wait (for `flood_wait`).
    #[serde(default, deserialize_with = "crate::input::whole::option")]
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
    if !subscription.is_active(state.ledgers.now()) {
        return Ok(SlotCoverage::NoSubscription);
    }
    let owned = tally_projections::slots_of_owner(state.projector.pool(), owner.get()).await?;
    let rank = owned.iter().position(|id| id == slot.as_str()).unwrap_or(0);
    Ok(match rank < subscription.slots as usize {
        true => SlotCoverage::Covered,
        false => SlotCoverage::BeyondPlan,
    })
}

/// Records a post attempt: once per attempt id, one success per destination and
/// cycle (409 `already_posted`), only while the owner's plan covers the slot (409
/// `slot_not_active`).
#[utoipa::path(post, path = "/v1/slots/{slot_id}/attempts", tag = "slots",
    params(("slot_id" = IdText, Path, description = SLOT_ID)),
    request_body = AttemptBody,
    responses((status = 201, body = AttemptAnswer), WriteErrors),
    security(("service" = [])))]
async fn attempt(
    State(state): State<AppState>,
    Service(caller): Service,
    IdPath(slot_id): IdPath<SlotId>,
    Body(body): Body<AttemptBody>,
) -> Result<Response, ApiError> {
    tally_domain::slot::check_attempt_id(&body.attempt_id)?;
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
        OutcomeBody::Unknown => Outcome::Unknown,
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
    #[param(value_type = CycleNumber)]
    #[serde(deserialize_with = "crate::input::whole::query_required")]
    cycle: u64,
    /// Slots per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    limit: Option<u32>,
    /// The `next` of the page before: slots after this slot id.
    #[param(value_type = Option<IdText>)]
    after: Option<String>,
    /// Wait until the read models have applied the log up to this position.
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    min_position: Option<u64>,
}

/// The slots due in a cycle.
#[derive(Serialize, ToSchema)]
pub(crate) struct DueBody {
    cycle: u64,
    slots: Vec<DueSlot>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// Most due slots one page holds.
pub const DUE_PAGE_MAX: u32 = 500;

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
    _: Service,
    query: Result<Query<DueQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DueBody>, ApiError> {
    let Query(query) =
        query.map_err(|e| ApiError::validation(format!("{}; give ?cycle=N", e.body_text())))?;
    // Due slots come from two read models: both must have reached the position.
    wait_for_read_model(&state, "posts", query.min_position).await?;
    wait_for_read_model(&state, "subscriptions", query.min_position).await?;
    let cycle =
        i64::try_from(query.cycle).map_err(|_| ApiError::validation("cycle is too large"))?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=DUE_PAGE_MAX).contains(&limit) {
        return Err(ApiError::validation(format!(
            "limit must be between 1 and {DUE_PAGE_MAX}"
        )));
    }
    // One slot more than the page is read to know whether another page follows.
    let mut slots: Vec<DueSlot> = tally_projections::due_slots(
        state.projector.pool(),
        state.ledgers.now().timestamp_micros(),
        cycle,
        query.after.as_deref().unwrap_or_default(),
        i64::from(limit) + 1,
    )
    .await?
    .into_iter()
    .map(|slot| DueSlot {
        slot_id: slot.slot_id,
        user_id: slot.user_id,
        content: slot.content,
        destinations: slot
            .destinations
            .into_iter()
            .map(|(chat_id, topic_id)| DestinationBody { chat_id, topic_id })
            .collect(),
    })
    .collect();
    let next = match slots.len() > limit as usize {
        true => {
            slots.truncate(limit as usize);
            slots.last().map(|s| s.slot_id.clone())
        }
        false => None,
    };
    Ok(Json(DueBody {
        cycle: query.cycle,
        slots,
        next,
    }))
}
