//! Turning request parts into domain values, with errors a person can act on.

use axum::body::Bytes;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use tally_domain::values::UserId;
use tally_projections::AsOf;

use crate::error::ApiError;

/// Most bytes of a JSON body.
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// A JSON body as `T`; unknown fields are refused where `T` says so.
pub fn json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.len() > BODY_BYTES_MAX {
        return Err(ApiError::validation(format!(
            "the body has {} bytes; at most {BODY_BYTES_MAX}",
            body.len()
        )));
    }
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::validation(format!("body: {e}")))
}

/// A Telegram user id from the path.
pub fn user_id(text: &str) -> Result<UserId, ApiError> {
    let id: i64 = text
        .parse()
        .map_err(|_| ApiError::validation(format!("user id {text:?} is not a whole number")))?;
    UserId::new(id).map_err(|e| ApiError::validation(e.to_string()))
}

/// A query string as `T`, or 422 saying what is wrong with it.
pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::validation(e.body_text()))
}

/// `?at=RFC3339` or `?at_position=N` (or neither: now).
pub fn as_of(at: Option<String>, at_position: Option<u64>) -> Result<AsOf, ApiError> {
    Ok(match (at, at_position) {
        (Some(_), Some(_)) => return Err(ApiError::validation("give at or at_position, not both")),
        (Some(at), None) => AsOf::Time(
            chrono::DateTime::parse_from_rfc3339(&at)
                .map_err(|_| {
                    ApiError::validation(format!(
                        "at {at:?} is not an RFC 3339 time like 2026-11-21T12:00:00Z"
                    ))
                })?
                .with_timezone(&chrono::Utc),
        ),
        (None, Some(position)) => AsOf::Position(position),
        (None, None) => AsOf::Latest,
    })
}

/// Credits with two decimal places, as the API writes them.
pub fn money(mut amount: Decimal) -> Decimal {
    amount.rescale(2);
    amount
}
