//! Every error the API answers with, in one place: `application/problem+json`
//! `{type, title, status, code, detail}` with API.md's stable codes.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_ledger::LedgerError;
use tally_projections::ProjectionError;

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code (API.md).
    pub code: &'static str,
    /// What happened and what to do, for a person.
    pub detail: String,
}

impl ApiError {
    /// An error with this status, code and detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }

    /// 422 `validation`.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation", detail)
    }

    /// 404 `not_found` (or a more precise code).
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403 `forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 500 `internal`: details go to the log, not to the caller.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server failed; nothing was applied unless the response said so; retry with the same id",
        )
    }
}

/// The status of each ledger code (API.md's table).
fn status_of(code: &str) -> StatusCode {
    match code {
        "account_not_found"
        | "hold_not_found"
        | "refund_not_found"
        | "payment_not_found"
        | "subscription_not_found"
        | "not_found" => StatusCode::NOT_FOUND,
        "validation" | "invalid_amount" | "capture_exceeds_hold" | "refund_not_allowed" => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        "insufficient_credits"
        | "account_blocked"
        | "hold_not_open"
        | "idempotency_conflict"
        | "payment_conflict"
        | "provider_mismatch"
        | "already_posted"
        | "slot_not_active"
        | "conflict"
        | "contention" => StatusCode::CONFLICT,
        "self_approval" => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        let code = error.code();
        match status_of(code) {
            StatusCode::INTERNAL_SERVER_ERROR => Self::internal(error),
            status => Self::new(status, code, error.to_string()),
        }
    }
}

impl From<ProjectionError> for ApiError {
    fn from(error: ProjectionError) -> Self {
        match error {
            ProjectionError::Lagging { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "projection_lagging",
                format!("{error}; retry shortly"),
            ),
            ProjectionError::Unknown(_) => Self::not_found("not_found", error.to_string()),
            other => Self::internal(other),
        }
    }
}

impl From<tally_domain::DomainError> for ApiError {
    fn from(error: tally_domain::DomainError) -> Self {
        LedgerError::from(error).into()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(error)
    }
}

/// An error as the API writes it (`application/problem+json`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the code.
    #[serde(rename = "type")]
    #[schema(example = "https://tally.dev/problems/insufficient_credits")]
    pub kind: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// The stable snake_case code (API.md's table): what a client branches on.
    #[schema(example = "insufficient_credits")]
    pub code: String,
    /// What happened and what to do, for a person.
    pub detail: String,
}

/// The errors a read can answer, for the OpenAPI document.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub(crate) enum ReadErrors {
    /// No key or an unknown key.
    #[response(
        status = 401,
        description = "`unauthorized`",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    /// The key's role may not do this.
    #[response(
        status = 403,
        description = "`forbidden`",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    /// Nothing by that id.
    #[response(
        status = 404,
        description = "`not_found`, `account_not_found`, `hold_not_found`, `payment_not_found`, `refund_not_found`, `subscription_not_found`",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    /// A path or query value is malformed.
    #[response(
        status = 422,
        description = "`validation`",
        content_type = "application/problem+json"
    )]
    Validation(Problem),
    /// Too many requests from this key or address.
    #[response(
        status = 429,
        description = "`rate_limited` (see `Retry-After`)",
        content_type = "application/problem+json"
    )]
    RateLimited(Problem),
    /// `?min_position=N` was not reached in 5 s.
    #[response(
        status = 503,
        description = "`projection_lagging`",
        content_type = "application/problem+json"
    )]
    Lagging(Problem),
}

/// The errors a write can answer, for the OpenAPI document. Nothing is appended by any.
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
pub(crate) enum WriteErrors {
    /// No key or an unknown key.
    #[response(
        status = 401,
        description = "`unauthorized`",
        content_type = "application/problem+json"
    )]
    Unauthorized(Problem),
    /// The key's role may not do this.
    #[response(
        status = 403,
        description = "`forbidden`, `self_approval`",
        content_type = "application/problem+json"
    )]
    Forbidden(Problem),
    /// Nothing by that id.
    #[response(
        status = 404,
        description = "`not_found`, `account_not_found`, `hold_not_found`, `payment_not_found`, `refund_not_found`, `subscription_not_found`",
        content_type = "application/problem+json"
    )]
    NotFound(Problem),
    /// The ledger refuses it as things stand.
    #[response(
        status = 409,
        description = "`insufficient_credits`, `account_blocked`, `hold_not_open` (detail says captured, released or expired), `idempotency_conflict` (same id, other body), `payment_conflict`, `provider_mismatch` (a webhook for another provider's payment), `already_posted`, `slot_not_active`, `contention` (retry)",
        content_type = "application/problem+json"
    )]
    Conflict(Problem),
    /// The body is malformed or out of range.
    #[response(
        status = 422,
        description = "`validation`, `invalid_amount`, `capture_exceeds_hold`, `refund_not_allowed`",
        content_type = "application/problem+json"
    )]
    Validation(Problem),
    /// Too many requests from this key.
    #[response(
        status = 429,
        description = "`rate_limited` (see `Retry-After`)",
        content_type = "application/problem+json"
    )]
    RateLimited(Problem),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: format!("https://tally.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("error").into(),
            status: self.status.as_u16(),
            code: self.code.into(),
            detail: self.detail,
        };
        let mut response = (self.status, Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}
