//! Every error the API answers with, in one place: `application/problem+json`
//! `{type, title, status, code, detail}` with API.md's stable codes.
//!
//! One file: the status mapping, the code table and the OpenAPI error lists must agree,
//! so they sit together.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_domain::DomainError;
use tally_ledger::LedgerError;
use tally_projections::ProjectionError;
use tally_store::StoreError;

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

/// The HTTP status of each refusal of the rules. No arm catches "the rest": a new
/// [`DomainError`] does not compile until it has its status here (and its code in
/// [`CODES`]).
pub fn domain_status(error: &DomainError) -> StatusCode {
    use DomainError as E;
    match error {
        E::AccountNotFound { .. }
        | E::HoldNotFound { .. }
        | E::PaymentNotFound
        | E::SubscriptionNotFound
        | E::RefundNotFound => StatusCode::NOT_FOUND,
        E::Validation(_)
        | E::InvalidAmount(_)
        | E::CaptureExceedsHold { .. }
        | E::RefundNotAllowed(_) => StatusCode::UNPROCESSABLE_ENTITY,
        E::AccountBlocked { .. }
        | E::InsufficientCredits { .. }
        | E::HoldNotOpen { .. }
        | E::IdempotencyConflict(_)
        | E::PaymentConflict(_)
        | E::ProviderMismatch { .. }
        | E::AlreadyPosted { .. }
        | E::SlotNotActive(_)
        | E::Conflict(_) => StatusCode::CONFLICT,
        E::SelfApproval(_) => StatusCode::FORBIDDEN,
    }
}

/// The HTTP status of a command's failure; `None` when it is the server's own
/// (answered 500 `internal`, details to the log).
pub fn ledger_status(error: &LedgerError) -> Option<StatusCode> {
    match error {
        LedgerError::Domain(e) => Some(domain_status(e)),
        LedgerError::Store(StoreError::IdempotencyConflict { .. }) => Some(StatusCode::CONFLICT),
        LedgerError::Store(StoreError::LimitExceeded { .. } | StoreError::InvalidInput(_)) => {
            Some(StatusCode::UNPROCESSABLE_ENTITY)
        }
        LedgerError::Contention { .. } => Some(StatusCode::CONFLICT),
        LedgerError::Store(_) | LedgerError::Decode(_) | LedgerError::Closed => None,
    }
}

/// One error code of the API: what it says and its status.
pub struct Code {
    /// The stable snake_case code.
    pub code: &'static str,
    /// Its HTTP status.
    pub status: u16,
    /// When it is answered, for the OpenAPI document.
    pub meaning: &'static str,
}

/// Every code the API answers (API.md's table and ours), from which the OpenAPI
/// document's error descriptions are written ([`describe_errors`]).
pub const CODES: &[Code] = &[
    Code {
        code: "unauthorized",
        status: 401,
        meaning: "no key or an unknown key",
    },
    Code {
        code: "invalid_signature",
        status: 401,
        meaning: "a webhook's signature does not verify",
    },
    Code {
        code: "forbidden",
        status: 403,
        meaning: "the key's role may not do this",
    },
    Code {
        code: "self_approval",
        status: 403,
        meaning: "an admin decides a refund they requested",
    },
    Code {
        code: "not_found",
        status: 404,
        meaning: "nothing by that id",
    },
    Code {
        code: "account_not_found",
        status: 404,
        meaning: "no account for the user; open it first",
    },
    Code {
        code: "hold_not_found",
        status: 404,
        meaning: "no such hold",
    },
    Code {
        code: "payment_not_found",
        status: 404,
        meaning: "no such payment",
    },
    Code {
        code: "refund_not_found",
        status: 404,
        meaning: "no such refund request",
    },
    Code {
        code: "subscription_not_found",
        status: 404,
        meaning: "the user has no subscription",
    },
    Code {
        code: "insufficient_credits",
        status: 409,
        meaning: "not enough available credits",
    },
    Code {
        code: "account_blocked",
        status: 409,
        meaning: "the account is blocked",
    },
    Code {
        code: "hold_not_open",
        status: 409,
        meaning: "the hold was captured, released or expired (the detail says which)",
    },
    Code {
        code: "idempotency_conflict",
        status: 409,
        meaning: "the same id with another body",
    },
    Code {
        code: "payment_conflict",
        status: 409,
        meaning: "the payment is settled otherwise",
    },
    Code {
        code: "provider_mismatch",
        status: 409,
        meaning: "a webhook about another provider's payment",
    },
    Code {
        code: "already_posted",
        status: 409,
        meaning: "the destination already has this cycle's post",
    },
    Code {
        code: "slot_not_active",
        status: 409,
        meaning: "the owner's plan does not cover the slot",
    },
    Code {
        code: "conflict",
        status: 409,
        meaning: "well-formed, but the stream's state refuses it",
    },
    Code {
        code: "position_beyond_log",
        status: 409,
        meaning: "min_position is beyond the log's last event",
    },
    Code {
        code: "contention",
        status: 409,
        meaning: "other processes kept changing the stream; retry with the same id",
    },
    Code {
        code: "validation",
        status: 422,
        meaning: "a body, path or query value breaks a stated rule",
    },
    Code {
        code: "invalid_amount",
        status: 422,
        meaning: "not a positive amount of at most 2 places",
    },
    Code {
        code: "capture_exceeds_hold",
        status: 422,
        meaning: "the capture is more than the hold holds",
    },
    Code {
        code: "refund_not_allowed",
        status: 422,
        meaning: "the spend has less left to refund, or the window closed",
    },
    Code {
        code: "url_not_allowed",
        status: 422,
        meaning: "a webhook URL that does not parse as an http(s) URL, does not resolve, or resolves to a loopback or private address",
    },
    Code {
        code: "position_range",
        status: 422,
        meaning: "a replay's from_position is after its to_position",
    },
    Code {
        code: "not_supported",
        status: 422,
        meaning: "the provider cannot do this through Tally (e.g. invoices of a webhook-only provider)",
    },
    Code {
        code: "provider_error",
        status: 502,
        meaning: "the payment provider refused or could not be reached; nothing was recorded",
    },
    Code {
        code: "rate_limited",
        status: 429,
        meaning: "too many requests (see Retry-After)",
    },
    Code {
        code: "internal",
        status: 500,
        meaning: "the server failed; nothing was applied unless the answer said so",
    },
    Code {
        code: "projection_lagging",
        status: 503,
        meaning: "min_position was not reached in 5 s",
    },
];

/// Writes each problem answer's description in the OpenAPI document from [`CODES`]:
/// the codes of that status.
pub(crate) fn describe_errors(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, response) in operation.responses.responses.iter_mut() {
                let utoipa::openapi::RefOr::T(response) = response else {
                    continue;
                };
                let is_problem = response.content.contains_key("application/problem+json");
                let Ok(status) = status.parse::<u16>() else {
                    continue;
                };
                let codes: Vec<String> = CODES
                    .iter()
                    .filter(|c| c.status == status)
                    .map(|c| format!("`{}`: {}", c.code, c.meaning))
                    .collect();
                if is_problem && !codes.is_empty() {
                    response.description = codes.join("; ");
                }
            }
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        match ledger_status(&error) {
            None => Self::internal(error),
            Some(status) => Self::new(status, error.code(), error.to_string()),
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
    /// `?min_position=N` is beyond the log.
    #[response(
        status = 409,
        description = "`position_beyond_log`",
        content_type = "application/problem+json"
    )]
    Beyond(Problem),
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

impl From<tally_providers::ProviderError> for ApiError {
    fn from(error: tally_providers::ProviderError) -> Self {
        use tally_providers::ProviderError as E;
        match &error {
            E::InvalidSignature(_) => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                error.to_string(),
            ),
            E::Invalid(_) => Self::validation(error.to_string()),
            E::Unsupported(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_supported",
                error.to_string(),
            ),
            E::Upstream { .. } => {
                tracing::warn!(%error, "a payment provider failed");
                Self::new(StatusCode::BAD_GATEWAY, "provider_error", error.to_string())
            }
        }
    }
}

impl From<tally_ledger::checkout::CheckoutError> for ApiError {
    fn from(error: tally_ledger::checkout::CheckoutError) -> Self {
        match error {
            tally_ledger::checkout::CheckoutError::Ledger(e) => e.into(),
            tally_ledger::checkout::CheckoutError::Provider(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use tally_domain::values::{HoldId, UserId};

    /// Every refusal's code is in the table, with the status the mapping gives it.
    #[test]
    fn every_domain_refusal_has_its_code_and_status_in_the_table() {
        let user_id = UserId::new(1).unwrap();
        let hold_id = HoldId::new("h").unwrap();
        let text = || String::from("x");
        let samples = [
            DomainError::AccountNotFound { user_id },
            DomainError::AccountBlocked { user_id },
            DomainError::InsufficientCredits {
                available: Decimal::ZERO,
                requested: Decimal::ONE,
            },
            DomainError::InvalidAmount(text()),
            DomainError::Validation(text()),
            DomainError::Conflict(text()),
            DomainError::HoldNotFound {
                hold_id: hold_id.clone(),
            },
            DomainError::HoldNotOpen {
                hold_id: hold_id.clone(),
                state: tally_domain::account::HoldState::Released,
            },
            DomainError::ProviderMismatch {
                payment_provider: text(),
                reported_by: text(),
            },
            DomainError::AlreadyPosted {
                cycle: 1,
                destination: text(),
            },
            DomainError::CaptureExceedsHold {
                hold_id,
                held: Decimal::ONE,
                requested: Decimal::TWO,
            },
            DomainError::IdempotencyConflict(text()),
            DomainError::RefundNotAllowed(text()),
            DomainError::PaymentNotFound,
            DomainError::PaymentConflict(text()),
            DomainError::SubscriptionNotFound,
            DomainError::RefundNotFound,
            DomainError::SelfApproval(text()),
            DomainError::SlotNotActive(text()),
        ];
        for error in &samples {
            let status = domain_status(error).as_u16();
            assert!(
                CODES
                    .iter()
                    .any(|c| c.code == error.code() && c.status == status),
                "{} ({status}) is not in CODES",
                error.code()
            );
        }
        let mut seen = std::collections::HashSet::new();
        assert!(
            CODES.iter().all(|c| seen.insert(c.code)),
            "a code twice in CODES"
        );
    }
}
