//! # tally-api: the HTTP API v1
//!
//! `../shared/API.md` is the contract; this crate implements it over the command
//! service (`tally-ledger`) for writes and the read models (`tally-projections`) for
//! reads. Handlers are thin: parse and check input (every bad input is a 4xx with a
//! detail a person can act on, and appends nothing), run one command or query, answer.
//! Errors are produced in one place (`error.rs`) as `application/problem+json`.
//!
//! Every route is declared once, with its OpenAPI description (`#[utoipa::path]` on
//! the handler); the router and the document at `/v1/openapi.json` are both built
//! from those declarations, so a route cannot be served undocumented.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod auth;
mod constraints;
pub mod credits;
mod endpoints;
pub mod error;
pub mod holds;
mod input;
pub mod limits;
pub mod observe;
pub mod payments;
pub mod refunds;
pub mod slots;
pub mod subscriptions;
mod write;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use tally_domain::Config;
use tally_ledger::Ledgers;
use tally_projections::Projector;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Caller, Keys, Role};
pub use error::ApiError;

/// A process that keeps read models is not ready while one is further behind the log
/// than this many events.
pub const READY_LAG_EVENTS_MAX: u64 = 10_000;

/// How long a GET with `?min_position=N` waits for the read model.
pub const MIN_POSITION_WAIT: Duration = Duration::from_secs(5);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The process's command services (shared with its bot and reactors).
    pub ledgers: Ledgers,
    /// The payment providers: invoices, callbacks, refunds.
    pub providers: tally_providers::Providers,
    /// How webhook endpoints are checked (private addresses allowed or not).
    pub webhooks: tally_webhooks::Settings,
    /// The log (raw events for auditors).
    pub store: Arc<dyn tally_store::EventStore>,
    /// The read models.
    pub projector: Arc<Projector>,
    /// The keys.
    pub keys: Arc<Keys>,
    /// Plans, packs, limits.
    pub config: Arc<Config>,
    /// Owners of the holds this process placed.
    pub hold_owners: Arc<holds::HoldOwners>,
    /// Rate limits per key and per address.
    pub limiter: Arc<limits::RateLimiter>,
    /// One `GET /v1/audit/verify` at a time.
    pub audit_turn: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The API's state over the process's command services and read models, the
    /// keys, the payment providers and the rate limits.
    pub fn new(
        ledgers: Ledgers,
        projector: Arc<Projector>,
        keys: Keys,
        providers: tally_providers::Providers,
        limits: limits::Limits,
    ) -> Self {
        Self {
            store: ledgers.store().clone(),
            config: ledgers.config().clone(),
            ledgers,
            providers,
            webhooks: tally_webhooks::Settings::default(),
            projector,
            keys: Arc::new(keys),
            hold_owners: Default::default(),
            limiter: Arc::new(limits::RateLimiter::new(limits)),
            audit_turn: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }
}

/// The OpenAPI document's frame; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tally HTTP API",
        description = "An event-sourced credits ledger for Telegram-bot businesses. \
            Amounts are decimal strings. Every create carries its own id: the same id and \
            body again answers the original with `Idempotent-Replay: true`; another body \
            is 409 `idempotency_conflict`. Every write answers `position`; every GET takes \
            `?min_position=N`. Errors are `application/problem+json` with a stable `code`."
    ),
    modifiers(&Security),
    tags(
        (name = "accounts", description = "Accounts, statements, balances"),
        (name = "credits", description = "Holds, captures, releases, debits"),
        (name = "payments", description = "Payments and provider webhooks"),
        (name = "refunds", description = "Refund requests and decisions"),
        (name = "slots", description = "Ad slots and post attempts"),
        (name = "admin", description = "Grants, adjustments, blocks, corrections, stats"),
        (name = "audit", description = "Replay, verify, the raw log"),
        (name = "ops", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The bearer-key schemes, one per role.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for role in ["service", "admin", "auditor"] {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.description = Some(format!(
                "`Authorization: Bearer <key>` with a key of role {role} \
                 (`tally keys create --role {role} --name NAME`)"
            ));
            components.add_security_scheme(role, SecurityScheme::Http(scheme));
        }
    }
}

fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(observe::metrics_text))
        .routes(routes!(openapi_json))
        .merge(accounts::routes())
        .merge(holds::routes())
        .merge(credits::routes())
        .merge(subscriptions::routes())
        .merge(payments::routes())
        .merge(endpoints::routes())
        .merge(admin::routes())
        .merge(refunds::routes())
        .merge(audit::routes())
        .merge(slots::routes())
}

/// The routes a process without the API role still serves (`/healthz`, `/readyz`,
/// `/metrics`), so the projector's and reactor's health and lag are scraped from the
/// process that does the work.
pub fn ops_router(state: AppState) -> Router {
    let (router, _) = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(observe::metrics_text))
        .split_for_parts();
    router.with_state(state)
}

/// The OpenAPI document of every route, with the default configuration's limits.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut openapi = routes().split_for_parts().1;
    constraints::register(&mut openapi);
    error::describe_errors(&mut openapi);
    openapi
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let (router, mut openapi) = routes().split_for_parts();
    constraints::register(&mut openapi);
    constraints::for_deployment(&mut openapi, state.ledgers.config());
    error::describe_errors(&mut openapi);
    let document = Arc::new(
        openapi
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
    );
    router
        .layer(axum::Extension(OpenApiDocument(document)))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::limit,
        ))
        .layer(axum::middleware::from_fn(observe::track))
        .with_state(state)
}

#[derive(Clone)]
struct OpenApiDocument(Arc<String>);

/// This document (OpenAPI 3.1).
#[utoipa::path(get, path = "/v1/openapi.json", tag = "ops",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
async fn openapi_json(
    axum::Extension(OpenApiDocument(document)): axum::Extension<OpenApiDocument>,
) -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document.as_str().to_owned(),
    )
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "`ok`", content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "`ready`", content_type = "text/plain"),
              (status = 503, description = "`not_ready`", body = error::Problem, content_type = "application/problem+json")))]
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let not_ready = |detail: String| {
        tracing::warn!(%detail, "not ready");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", detail)
    };
    sqlx::query("SELECT 1")
        .execute(state.projector.pool())
        .await
        .map_err(|e| not_ready(format!("the database does not answer: {e}")))?;
    // The background roles this process runs must be going round their loops …
    let health = state.projector.health();
    if let Some((role, age)) = health
        .stale(tally_projections::health::BEAT_STALE_AFTER)
        .first()
    {
        return Err(not_ready(format!(
            "the {role} of this process has not run for {} s",
            age.as_secs()
        )));
    }
    // … and the read models it keeps must not be far behind the log.
    if health.roles().contains(&tally_projections::PROJECTOR_ROLE) {
        let statuses = state
            .projector
            .status()
            .await
            .map_err(|e| not_ready(format!("the read models cannot be read: {e}")))?;
        let kept: Vec<&str> = state
            .projector
            .projections()
            .iter()
            .map(|p| p.name())
            .collect();
        if let Some(behind) = statuses
            .iter()
            .filter(|s| kept.contains(&s.name.as_str()))
            .find(|s| s.lag_events > READY_LAG_EVENTS_MAX)
        {
            return Err(not_ready(format!(
                "read model {} is {} events behind the log (more than {READY_LAG_EVENTS_MAX})",
                behind.name, behind.lag_events
            )));
        }
    }
    Ok("ready")
}
