//! Turning request parts into domain values, with errors a person can act on.

use axum::body::Bytes;
use serde::de::DeserializeOwned;
use tally_domain::values::UserId;

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
