//! What every write shares: parsing the amount and reason of a command, running an
//! account command for the caller, and answering (the status, or the original's with
//! `Idempotent-Replay: true`).

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_domain::account::AccountCommand;
use tally_domain::values::{Amount, Reason, UserId};
use tally_ledger::Outcome;
use tally_ledger::aggregate::AccountView;

use crate::accounts::metadata;
use crate::error::ApiError;
use crate::{AppState, Caller};

/// An amount from its text.
pub(crate) fn amount(text: &str) -> Result<Amount, ApiError> {
    Ok(text.parse::<Amount>()?)
}

/// A reason from its text.
pub(crate) fn reason(text: &str) -> Result<Reason, ApiError> {
    Ok(Reason::new(text)?)
}

/// A write's answer: `status`, or the original's with `Idempotent-Replay: true`.
pub(crate) fn answer<T: Serialize>(status: StatusCode, replayed: bool, body: T) -> Response {
    let mut response = (status, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replay", HeaderValue::from_static("true"));
    }
    response
}

/// Runs one account command for the caller (its name and request id on the events).
pub(crate) async fn run(
    state: &AppState,
    caller: &Caller,
    user: UserId,
    command: AccountCommand,
) -> Result<Outcome<AccountView>, ApiError> {
    Ok(state
        .ledgers
        .accounts
        .command(user, command, metadata(caller))
        .await?)
}
