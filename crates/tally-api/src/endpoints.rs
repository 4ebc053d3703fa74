//! Webhook endpoints (events out), for admins: add one (its secret answered once),
//! list them, see an endpoint's deliveries, disable it, rotate its secret, replay a
//! range of the log to it. The delivering is `tally_webhooks::Deliverer`'s, in the
//! processes with the reactor role.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_webhooks::{Delivery, Endpoint, WebhookError, endpoints};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Admin;
use crate::constraints::{EventTypeText, PositionNumber, ReasonText, ReturnUrlText};
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::input::{self, Body};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(add, list))
        .routes(routes!(disable))
        .routes(routes!(rotate_secret))
        .routes(routes!(deliveries))
        .routes(routes!(replay))
}

impl From<WebhookError> for ApiError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::Invalid(detail) => ApiError::validation(detail),
            WebhookError::UrlRefused(detail) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "url_not_allowed", detail)
            }
            WebhookError::Range(detail) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "position_range", detail)
            }
            WebhookError::BeyondLog(detail) => {
                ApiError::new(StatusCode::CONFLICT, "position_beyond_log", detail)
            }
            WebhookError::NotFound(_) => ApiError::not_found("not_found", error.to_string()),
            other => ApiError::internal(other),
        }
    }
}

/// A new endpoint.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddBody {
    /// Where events go: an http(s) URL on a public address.
    #[schema(value_type = ReturnUrlText)]
    url: String,
    /// The event types it wants: exact (`payment.succeeded`, `balance.low`), a family
    /// (`credits.*`, `subscription.*`) or `*`; the log's event types.
    #[schema(min_items = 1, max_items = 50, value_type = Vec<EventTypeText>)]
    event_types: Vec<String>,
}

/// An endpoint as admins see it.
#[derive(Serialize, ToSchema)]
pub(crate) struct EndpointBody {
    endpoint_id: String,
    url: String,
    event_types: Vec<String>,
    enabled: bool,
    /// Why it was disabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    /// The last log position delivered (or not wanted).
    cursor: i64,
    /// Failed attempts of the next event.
    attempts: i64,
    /// `whsec_…`: answered when the endpoint is added or its secret rotated, never again.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

fn endpoint_body(endpoint: Endpoint, secret: Option<String>) -> EndpointBody {
    EndpointBody {
        disabled_reason: (!endpoint.disabled_reason.is_empty()).then_some(endpoint.disabled_reason),
        endpoint_id: endpoint.endpoint_id,
        url: endpoint.url,
        event_types: endpoint.event_types,
        enabled: endpoint.enabled,
        cursor: endpoint.cursor,
        attempts: endpoint.attempts,
        secret,
    }
}

/// Adds an endpoint that gets every event it wants from now on, signed in the
/// Standard Webhooks format with its secret (answered this once). A URL on a loopback
/// or private address is refused (422) unless `TALLY_WEBHOOKS_ALLOW_PRIVATE`.
#[utoipa::path(post, path = "/v1/admin/webhooks", tag = "admin",
    request_body = AddBody,
    responses((status = 201, body = EndpointBody), WriteErrors),
    security(("admin" = [])))]
async fn add(
    State(state): State<AppState>,
    _: Admin,
    Body(body): Body<AddBody>,
) -> Result<Response, ApiError> {
    let (endpoint, secret) = endpoints::add(
        state.projector.pool(),
        state.store.as_ref(),
        &body.url,
        &body.event_types,
        &state.webhooks,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(endpoint_body(endpoint, Some(secret))),
    )
        .into_response())
}

/// The endpoints.
#[derive(Serialize, ToSchema)]
pub(crate) struct EndpointsBody {
    endpoints: Vec<EndpointBody>,
}

/// Every endpoint, oldest first (no secrets).
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin",
    responses((status = 200, body = EndpointsBody), ReadErrors),
    security(("admin" = [])))]
async fn list(State(state): State<AppState>, _: Admin) -> Result<Json<EndpointsBody>, ApiError> {
    let endpoints = endpoints::list(state.projector.pool())
        .await?
        .into_iter()
        .map(|e| endpoint_body(e, None))
        .collect();
    Ok(Json(EndpointsBody { endpoints }))
}

/// An endpoint id in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct EndpointPath {
    /// `we_…`.
    #[param(value_type = String, pattern = "^we_[0-9a-f]{1,40}$")]
    endpoint_id: String,
}

fn endpoint_id(
    path: Result<axum::extract::Path<EndpointPath>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    let axum::extract::Path(path) =
        path.map_err(|e| ApiError::validation(format!("the endpoint id: {e}")))?;
    Ok(path.endpoint_id)
}

/// Why an endpoint is disabled.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisableBody {
    #[schema(value_type = ReasonText)]
    reason: String,
}

/// Disables an endpoint: nothing more is sent to it.
#[utoipa::path(post, path = "/v1/admin/webhooks/{endpoint_id}/disable", tag = "admin",
    params(EndpointPath),
    request_body = DisableBody,
    responses((status = 200, body = EndpointBody), WriteErrors),
    security(("admin" = [])))]
async fn disable(
    State(state): State<AppState>,
    _: Admin,
    path: Result<axum::extract::Path<EndpointPath>, axum::extract::rejection::PathRejection>,
    Body(body): Body<DisableBody>,
) -> Result<Json<EndpointBody>, ApiError> {
    let id = endpoint_id(path)?;
    let reason = tally_domain::values::Reason::new(body.reason)?;
    let endpoint = endpoints::disable(state.projector.pool(), &id, reason.as_str()).await?;
    Ok(Json(endpoint_body(endpoint, None)))
}

/// Why a secret is rotated.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    /// Why (logged with the admin key's name).
    #[schema(value_type = ReasonText)]
    reason: String,
}

/// A new secret for an endpoint, answered this once; deliveries from the deliverer's
/// next round on are signed with it.
#[utoipa::path(post, path = "/v1/admin/webhooks/{endpoint_id}/rotate-secret", tag = "admin",
    params(EndpointPath),
    request_body = RotateBody,
    responses((status = 200, body = EndpointBody), WriteErrors),
    security(("admin" = [])))]
async fn rotate_secret(
    State(state): State<AppState>,
    Admin(caller): Admin,
    path: Result<axum::extract::Path<EndpointPath>, axum::extract::rejection::PathRejection>,
    Body(body): Body<RotateBody>,
) -> Result<Json<EndpointBody>, ApiError> {
    let id = endpoint_id(path)?;
    let reason = tally_domain::values::Reason::new(body.reason)?;
    tracing::info!(endpoint = %id, admin = %caller.name, reason = reason.as_str(), "webhook secret rotated");
    let secret = endpoints::rotate_secret(state.projector.pool(), &id).await?;
    let endpoint = endpoints::get(state.projector.pool(), &id).await?;
    Ok(Json(endpoint_body(endpoint, Some(secret))))
}

/// Which deliveries.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// Only the failed attempts.
    #[serde(default)]
    failed: Option<bool>,
    /// At most this many, newest first (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    limit: Option<u64>,
}

/// An endpoint's delivery log.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveriesBody {
    #[schema(value_type = Vec<Object>)]
    deliveries: Vec<Delivery>,
}

/// An endpoint's delivery attempts, newest first: position, event, attempt, status
/// code, error, latency.
#[utoipa::path(get, path = "/v1/admin/webhooks/{endpoint_id}/deliveries", tag = "admin",
    params(EndpointPath, DeliveriesQuery),
    responses((status = 200, body = DeliveriesBody), ReadErrors),
    security(("admin" = [])))]
async fn deliveries(
    State(state): State<AppState>,
    _: Admin,
    path: Result<axum::extract::Path<EndpointPath>, axum::extract::rejection::PathRejection>,
    query: Result<Query<DeliveriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveriesBody>, ApiError> {
    let id = endpoint_id(path)?;
    let query = input::query(query)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit is 1 to 1000"));
    }
    let deliveries = endpoints::deliveries(
        state.projector.pool(),
        &id,
        query.failed.unwrap_or(false),
        limit as i64,
    )
    .await?;
    Ok(Json(DeliveriesBody { deliveries }))
}

/// A range of the log to send again.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayBody {
    #[schema(value_type = PositionNumber)]
    #[serde(deserialize_with = "crate::input::whole::deserialize")]
    from_position: i64,
    #[schema(value_type = PositionNumber)]
    #[serde(deserialize_with = "crate::input::whole::deserialize")]
    to_position: i64,
}

/// Sends the wanted events at positions `from_position..=to_position` again, in order,
/// before what is new (same `webhook-id`s, for receivers to deduplicate). 422 when
/// the range is not within the log.
#[utoipa::path(post, path = "/v1/admin/webhooks/{endpoint_id}/replay", tag = "admin",
    params(EndpointPath),
    request_body = ReplayBody,
    responses((status = 202, body = EndpointBody), WriteErrors),
    security(("admin" = [])))]
async fn replay(
    State(state): State<AppState>,
    _: Admin,
    path: Result<axum::extract::Path<EndpointPath>, axum::extract::rejection::PathRejection>,
    Body(body): Body<ReplayBody>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(path)?;
    let endpoint = endpoints::replay(
        state.projector.pool(),
        state.store.as_ref(),
        &id,
        body.from_position,
        body.to_position,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(endpoint_body(endpoint, None))).into_response())
}
