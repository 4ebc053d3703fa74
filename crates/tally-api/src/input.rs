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
    let id: i64 = whole::from_text(text)
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

/// A JSON integer in any spelling JSON Schema calls an integer: `2197`, `2197.0`,
/// `2.197e3` (a client generated from the document may send any of them). Read
/// from the number's own text, exactly, never through a float: `1.0000000000000001`
/// is not 1, and a 19-digit id does not round. For `#[serde(deserialize_with)]`.
pub(crate) mod whole {
    use rust_decimal::Decimal;
    use rust_decimal::prelude::ToPrimitive;
    use serde::Deserialize;
    use serde::de::{Deserializer, Error};
    use serde_json::value::RawValue;

    fn parse<T: TryFrom<i128>>(raw: &RawValue) -> Result<T, String> {
        let text = raw.get();
        if text.starts_with('"') || text.starts_with('{') || text.starts_with('[') {
            return Err(format!("{text} is not a number"));
        }
        from_text(text)
    }

    /// A whole number from its text (a path segment, a query value, a JSON number).
    pub(crate) fn from_text<T: TryFrom<i128>>(text: &str) -> Result<T, String> {
        let not_whole = || format!("{text} is not a whole number");
        if text.is_empty() || text.starts_with('+') || text.trim() != text {
            return Err(not_whole());
        }
        let value = Decimal::from_str_exact(text)
            .or_else(|_| Decimal::from_scientific(text))
            .map_err(|_| not_whole())?;
        if !value.fract().is_zero() {
            return Err(not_whole());
        }
        let value = value.to_i128().ok_or_else(not_whole)?;
        T::try_from(value).map_err(|_| format!("{text} is out of range"))
    }

    /// A whole number.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
        d: D,
    ) -> Result<T, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        parse(&raw).map_err(D::Error::custom)
    }

    /// A whole number or `null` (with `#[serde(default)]` for an absent field).
    pub(crate) fn option<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        if raw.get() == "null" {
            return Ok(None);
        }
        parse(&raw).map(Some).map_err(D::Error::custom)
    }

    /// A whole number from a query string, or absent (with `#[serde(default)]`).
    pub(crate) fn query<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        let text = String::deserialize(d)?;
        from_text(&text).map(Some).map_err(D::Error::custom)
    }

    /// A required whole number from a query string.
    pub(crate) fn query_required<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
        d: D,
    ) -> Result<T, D::Error> {
        let text = String::deserialize(d)?;
        from_text(&text).map_err(D::Error::custom)
    }

    #[cfg(test)]
    mod tests {
        use super::{from_text, parse};
        use serde_json::value::RawValue;

        fn read(text: &str) -> Result<i64, String> {
            parse::<i64>(&RawValue::from_string(text.to_string()).unwrap())
        }

        #[test]
        fn every_spelling_of_an_integer_and_nothing_else() {
            assert_eq!(read("2197"), Ok(2197));
            assert_eq!(read("2197.0"), Ok(2197));
            assert_eq!(read("-1997.00"), Ok(-1997));
            assert_eq!(read("2.197e3"), Ok(2197));
            assert_eq!(read("9223372036854775807"), Ok(i64::MAX));
            assert!(read("9223372036854775808").is_err());
            assert!(read("1.0000000000000001").is_err());
            assert!(read("2.5").is_err());
            assert!(read("\"7\"").is_err());
            assert!(parse::<u32>(&RawValue::from_string("-1".into()).unwrap()).is_err());
            assert_eq!(from_text::<u64>("383.0"), Ok(383));
            assert!(from_text::<u64>("").is_err());
            assert!(from_text::<u64>(" 3").is_err());
            assert!(from_text::<u64>("abc").is_err());
        }
    }
}

/// A JSON body as `T`, as an extractor: `Body(body): Body<PlaceBody>` answers 422
/// `validation` naming what is wrong (too large, not JSON, an unknown or missing
/// field) before the handler runs.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::validation(format!("body: {}", e.body_text())))?;
        json(&bytes).map(Body)
    }
}

/// The one parameter of a route's path, as text.
async fn path_text<S: Send + Sync>(
    parts: &mut axum::http::request::Parts,
    state: &S,
) -> Result<String, ApiError> {
    use axum::extract::FromRequestParts;
    let axum::extract::Path(text) = axum::extract::Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::validation(e.body_text()))?;
    Ok(text)
}

/// A Telegram user id from the path (`{user_id}`), as an extractor: 422 `validation`
/// naming what is wrong before the body is read.
pub struct UserPath(pub UserId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for UserPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        user_id(&path_text(parts, state).await?).map(UserPath)
    }
}

/// A client-chosen id from the path (`{hold_id}`, `{refund_id}` …) as its domain type,
/// as an extractor: 422 `validation` saying what is wrong before the body is read.
pub struct IdPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for IdPath<T>
where
    T: TryFrom<String, Error = tally_domain::DomainError> + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(IdPath(T::try_from(path_text(parts, state).await?)?))
    }
}
