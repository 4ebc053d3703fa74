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
        | "already_posted"
        | "slot_not_active"
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

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    code: &'a str,
    detail: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: format!("https://tally.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("error"),
            status: self.status.as_u16(),
            code: self.code,
            detail: &self.detail,
        };
        let mut response = (self.status, Json(problem)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}
