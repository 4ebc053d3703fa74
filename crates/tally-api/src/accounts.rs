//! Accounts: open (idempotent), read, statement, balance at a time or position.

use crate::auth::Service;
use crate::constraints::{
    PROFILE_TEXT_CHARS_MAX, PositionNumber, ProfileText, TimeText, UserIdNumber,
};
use crate::input::{Body, UserPath};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_domain::account::AccountCommand;
use tally_domain::values::check_text_chars;
use tally_projections::{AsOf, account_balance, account_statement_page};
use tally_store::{Actor, ActorKind, Metadata};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::credits::BalanceBody;
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::{AppState, Caller, MIN_POSITION_WAIT, Role, input};

/// Most statement entries per page.
pub const STATEMENT_LIMIT_MAX: u32 = 1_000;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read, open))
        .routes(routes!(statement))
        .routes(routes!(balance))
}

/// Metadata of a caller's command.
pub(crate) fn metadata(caller: &Caller) -> Metadata {
    let kind = match caller.role {
        Role::Service => ActorKind::Service,
        Role::Admin | Role::Auditor => ActorKind::Admin,
    };
    let mut metadata = Metadata::by(Actor::new(kind, caller.name.clone()));
    metadata.correlation_id = caller.request_id;
    metadata
}

/// Waits for the read model `projection` to reach `?min_position`, if asked.
pub(crate) async fn wait_for_read_model(
    state: &AppState,
    projection: &str,
    min_position: Option<u64>,
) -> Result<(), ApiError> {
    if let Some(position) = min_position {
        // Only a position the log has may be waited for: one beyond its last event
        // would wait the whole 5 s for nothing (and beyond i64 it can never exist).
        let last = state
            .store
            .last_position()
            .await
            .map_err(ApiError::internal)?;
        if position > i64::MAX as u64 {
            return Err(ApiError::validation(format!(
                "min_position {position} is beyond any position a log can have ({})",
                i64::MAX
            )));
        }
        if position > last {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "position_beyond_log",
                format!(
                    "min_position {position} is beyond the log's last position {last}; \
                     pass a position a write answered"
                ),
            ));
        }
        state
            .projector
            .wait_for(projection, position, MIN_POSITION_WAIT)
            .await?;
    }
    Ok(())
}

/// Opening an account (both fields optional, at most 64 bytes each).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenBody {
    /// Telegram username, without `@`.
    #[schema(value_type = Option<ProfileText>)]
    username: Option<String>,
    /// IETF language tag from Telegram (`en`, `ru`).
    #[schema(value_type = Option<ProfileText>)]
    language: Option<String>,
}

/// An account as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct AccountBody {
    /// Telegram user id.
    user_id: i64,
    /// Credits free to spend.
    #[schema(value_type = String, example = "12.50")]
    available: Decimal,
    /// Credits held for jobs in flight.
    #[schema(value_type = String, example = "0.00")]
    held: Decimal,
    /// `open` or `blocked`.
    status: String,
    /// The user's plan, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<SubscriptionSummary>,
    /// Position of the account's last event the answer reflects.
    position: u64,
}

/// A subscription in an account's answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct SubscriptionSummary {
    plan: String,
    slots: i64,
    /// `active`, `expired` or `cancelled`.
    status: String,
    period_end: chrono::DateTime<chrono::Utc>,
}

/// Path: a Telegram user id.
pub(crate) const USER_ID: &str = "Telegram user id (a positive 64-bit integer)";

/// Opens the account (idempotent: an open account answers 200 as it is).
#[utoipa::path(put, path = "/v1/accounts/{user_id}", tag = "accounts",
    params(("user_id" = UserIdNumber, Path, description = USER_ID)),
    request_body = OpenBody,
    responses((status = 201, description = "opened", body = AccountBody),
              (status = 200, description = "already open", body = AccountBody), WriteErrors),
    security(("service" = [])))]
async fn open(
    State(state): State<AppState>,
    Service(caller): Service,
    UserPath(user): UserPath,
    Body(body): Body<OpenBody>,
) -> Result<(StatusCode, Json<AccountBody>), ApiError> {
    for (what, text) in [("username", &body.username), ("language", &body.language)] {
        let Some(text) = text else { continue };
        if text.chars().count() > PROFILE_TEXT_CHARS_MAX {
            return Err(ApiError::validation(format!(
                "{what} is longer than {PROFILE_TEXT_CHARS_MAX} characters"
            )));
        }
        check_text_chars(what, text)?;
    }
    let before = state.ledgers.accounts.load(&user).await?;
    let outcome = state
        .ledgers
        .accounts
        .command(
            user,
            AccountCommand::Open {
                username: body.username,
                language: body.language,
            },
            metadata(&caller),
        )
        .await?;
    let status = match before.state.opened {
        true => StatusCode::OK,
        false => StatusCode::CREATED,
    };
    let view = outcome.view;
    Ok((
        status,
        Json(AccountBody {
            user_id: user.get(),
            available: input::money(view.available),
            held: input::money(view.held),
            status: status_name(view.status),
            subscription: None,
            position: outcome.position,
        }),
    ))
}

fn status_name(status: tally_domain::account::AccountStatus) -> String {
    match status {
        tally_domain::account::AccountStatus::Open => "open".into(),
        tally_domain::account::AccountStatus::Blocked => "blocked".into(),
    }
}

/// `?min_position=N`: wait (up to 5 s) for the read model to reach position N.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadQuery {
    /// Wait until the read model has applied the log up to this position.
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    pub(crate) min_position: Option<u64>,
}

/// The account: balances, status, subscription.
#[utoipa::path(get, path = "/v1/accounts/{user_id}", tag = "accounts",
    params(("user_id" = UserIdNumber, Path, description = USER_ID), ReadQuery),
    responses((status = 200, body = AccountBody), ReadErrors),
    security(("service" = [])))]
async fn read(
    State(state): State<AppState>,
    _: Service,
    UserPath(user): UserPath,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AccountBody>, ApiError> {
    let query = input::query(query)?;
    // The account and its subscription come from two read models.
    wait_for_read_model(&state, "accounts", query.min_position).await?;
    wait_for_read_model(&state, "subscriptions", query.min_position).await?;
    let Some(row) = account_balance(state.projector.pool(), user.get(), AsOf::Latest).await? else {
        return Err(ApiError::not_found(
            "account_not_found",
            format!("there is no account for user {user}; open it with PUT /v1/accounts/{user}"),
        ));
    };
    let subscription = tally_projections::subscription(state.projector.pool(), user.get())
        .await?
        .map(|r| SubscriptionSummary {
            plan: r.plan,
            slots: r.slots,
            status: r.status,
            period_end: r.period_end.unwrap_or_default(),
        });
    Ok(Json(AccountBody {
        user_id: user.get(),
        available: row.available,
        held: row.held,
        status: row.status.unwrap_or_default(),
        subscription,
        position: row.position,
    }))
}

/// A page of the statement.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatementQuery {
    /// Entries after this position (the previous page's `next`).
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    after: Option<u64>,
    /// Entries per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    limit: Option<u32>,
    /// Wait until the read model has applied the log up to this position.
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    min_position: Option<u64>,
}

/// One page of an account's statement, oldest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct StatementPage {
    /// `{position, kind, amount, balance_after, held_after, reference, actor, occurred_at}`;
    /// amounts are decimal strings, `amount` signed.
    #[schema(value_type = Vec<Object>)]
    entries: Vec<tally_projections::StatementEntry>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<u64>,
}

/// The account's statement: every credit movement with the balance after it.
#[utoipa::path(get, path = "/v1/accounts/{user_id}/statement", tag = "accounts",
    params(("user_id" = UserIdNumber, Path, description = USER_ID), StatementQuery),
    responses((status = 200, body = StatementPage), ReadErrors),
    security(("service" = [])))]
async fn statement(
    State(state): State<AppState>,
    _: Service,
    UserPath(user): UserPath,
    query: Result<Query<StatementQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<StatementPage>, ApiError> {
    let query = input::query(query)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > STATEMENT_LIMIT_MAX {
        return Err(ApiError::validation(format!(
            "limit must be 1 to {STATEMENT_LIMIT_MAX}, got {limit}"
        )));
    }
    wait_for_read_model(&state, "accounts", query.min_position).await?;
    let after = query.after.unwrap_or(0);
    // One more than asked tells whether there is a next page.
    let mut entries =
        account_statement_page(state.projector.pool(), user.get(), after, limit + 1).await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next = more.then(|| entries.last().map(|e| e.position)).flatten();
    Ok(Json(StatementPage { entries, next }))
}

/// As of when (neither: now).
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct BalanceQuery {
    /// An RFC 3339 time: the balance after the last event at or before it (not
    /// with `at_position`).
    #[param(value_type = Option<TimeText>)]
    at: Option<String>,
    /// A log position: the balance after the last event at or before it (not with
    /// `at`).
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    at_position: Option<u64>,
    /// Wait until the read model has applied the log up to this position.
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    min_position: Option<u64>,
}

/// The balance now, at a time or at a log position (0.00 before the first event).
#[utoipa::path(get, path = "/v1/accounts/{user_id}/balance", tag = "accounts",
    params(("user_id" = UserIdNumber, Path, description = USER_ID), BalanceQuery),
    responses((status = 200, body = BalanceBody), ReadErrors),
    security(("service" = [])))]
async fn balance(
    State(state): State<AppState>,
    _: Service,
    UserPath(user): UserPath,
    query: Result<Query<BalanceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<BalanceBody>, ApiError> {
    let query = input::query(query)?;
    let as_of = input::as_of(query.at, query.at_position)?;
    wait_for_read_model(&state, "accounts", query.min_position).await?;
    let row = account_balance(state.projector.pool(), user.get(), as_of).await?;
    let (available, held, position) = match row {
        Some(r) => (r.available, r.held, r.position),
        None => (input::money(Decimal::ZERO), input::money(Decimal::ZERO), 0),
    };
    Ok(Json(BalanceBody {
        user_id: user.get(),
        available,
        held,
        position,
    }))
}
