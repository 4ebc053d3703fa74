//! Accounts: open (idempotent), read, statement, balance at a time or position.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tally_domain::account::AccountCommand;
use tally_ledger::Request;
use tally_projections::{AsOf, account_balance, account_statement};
use tally_store::{Actor, ActorKind, Metadata};

use crate::error::ApiError;
use crate::{AppState, Caller, MIN_POSITION_WAIT, Role, input};

/// Most statement entries per page.
pub const STATEMENT_LIMIT_MAX: u32 = 1_000;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts/{user_id}", get(read).put(open))
        .route("/v1/accounts/{user_id}/statement", get(statement))
        .route("/v1/accounts/{user_id}/balance", get(balance))
        .route("/v1/accounts/{user_id}/subscription", get(subscription))
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
pub(crate) async fn settle(
    state: &AppState,
    projection: &str,
    min_position: Option<u64>,
) -> Result<(), ApiError> {
    if let Some(position) = min_position {
        state
            .projector
            .wait_for(projection, position, MIN_POSITION_WAIT)
            .await?;
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenBody {
    username: Option<String>,
    language: Option<String>,
}

/// An account as the API shows it.
#[derive(Serialize)]
pub struct AccountBody {
    user_id: i64,
    available: Decimal,
    held: Decimal,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<SubscriptionBody>,
    position: u64,
}

#[derive(Serialize)]
struct SubscriptionBody {
    plan: String,
    slots: i64,
    status: String,
    period_end: chrono::DateTime<chrono::Utc>,
}

async fn open(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<AccountBody>), ApiError> {
    let caller = state.keys.require(&headers, Role::Service).await?;
    let user = input::user_id(&user)?;
    let body: OpenBody = input::json(&body)?;
    for (what, text) in [("username", &body.username), ("language", &body.language)] {
        if text.as_ref().is_some_and(|t| t.len() > 64) {
            return Err(ApiError::validation(format!(
                "{what} is longer than 64 bytes"
            )));
        }
    }
    let before = state.accounts.load(&user).await?;
    let outcome = state
        .accounts
        .execute(Request {
            key: user,
            command: AccountCommand::Open {
                username: body.username,
                language: body.language,
            },
            command_id: None,
            metadata: metadata(&caller),
        })
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    min_position: Option<u64>,
}

async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AccountBody>, ApiError> {
    state.keys.require(&headers, Role::Service).await?;
    let user = input::user_id(&user)?;
    let query = input::query(query)?;
    // The account and its subscription come from two read models.
    settle(&state, "accounts", query.min_position).await?;
    settle(&state, "subscriptions", query.min_position).await?;
    let Some(row) = account_balance(state.projector.pool(), user.get(), AsOf::Latest).await? else {
        return Err(ApiError::not_found(
            "account_not_found",
            format!("there is no account for user {user}; open it with PUT /v1/accounts/{user}"),
        ));
    };
    let subscription =
        sqlx::query("SELECT plan, slots, status, period_end FROM subscriptions WHERE user_id = $1")
            .bind(user.get())
            .fetch_optional(state.projector.pool())
            .await?
            .map(|r| SubscriptionBody {
                plan: r.get(0),
                slots: r.get(1),
                status: r.get(2),
                period_end: chrono::DateTime::from_timestamp_micros(r.get(3)).unwrap_or_default(),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatementQuery {
    after: Option<u64>,
    limit: Option<u32>,
    min_position: Option<u64>,
}

#[derive(Serialize)]
struct StatementPage {
    entries: Vec<tally_projections::StatementEntry>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<u64>,
}

async fn statement(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    query: Result<Query<StatementQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<StatementPage>, ApiError> {
    state.keys.require(&headers, Role::Service).await?;
    let user = input::user_id(&user)?;
    let query = input::query(query)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > STATEMENT_LIMIT_MAX {
        return Err(ApiError::validation(format!(
            "limit must be 1 to {STATEMENT_LIMIT_MAX}, got {limit}"
        )));
    }
    settle(&state, "accounts", query.min_position).await?;
    let after = query.after.unwrap_or(0);
    let rows = sqlx::query(
        "SELECT position FROM statement WHERE user_id = $1 AND position > $2 \
         ORDER BY position LIMIT $3",
    )
    .bind(user.get())
    .bind(i64::try_from(after).unwrap_or(i64::MAX))
    .bind(i64::from(limit) + 1)
    .fetch_all(state.projector.pool())
    .await?;
    let positions: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let more = positions.len() > limit as usize;
    let last = positions.get(limit as usize - 1).copied();
    let entries: Vec<_> = match (positions.first(), last.or(positions.last().copied())) {
        (Some(_), Some(until)) => account_statement(
            state.projector.pool(),
            user.get(),
            AsOf::Position(until as u64),
        )
        .await?
        .into_iter()
        .filter(|e| e.position > after)
        .collect(),
        _ => Vec::new(),
    };
    let next = more.then(|| entries.last().map(|e| e.position)).flatten();
    Ok(Json(StatementPage { entries, next }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BalanceQuery {
    at: Option<String>,
    at_position: Option<u64>,
    min_position: Option<u64>,
}

async fn balance(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    query: Result<Query<BalanceQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.keys.require(&headers, Role::Service).await?;
    let user = input::user_id(&user)?;
    let query = input::query(query)?;
    let as_of = input::as_of(query.at, query.at_position)?;
    settle(&state, "accounts", query.min_position).await?;
    let row = account_balance(state.projector.pool(), user.get(), as_of).await?;
    let (available, held, position) = match row {
        Some(r) => (r.available, r.held, r.position),
        None => (input::money(Decimal::ZERO), input::money(Decimal::ZERO), 0),
    };
    Ok(Json(serde_json::json!({
        "user_id": user.get(),
        "available": available,
        "held": held,
        "position": position,
    })))
}

async fn subscription(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(user): Path<String>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.keys.require(&headers, Role::Service).await?;
    let user = input::user_id(&user)?;
    let query = input::query(query)?;
    settle(&state, "subscriptions", query.min_position).await?;
    let pool = state.projector.pool();
    let row = sqlx::query(
        "SELECT plan, slots, status, period_end, payments, position FROM subscriptions \
         WHERE user_id = $1",
    )
    .bind(user.get())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| {
        ApiError::not_found(
            "subscription_not_found",
            format!("user {user} has no subscription"),
        )
    })?;
    let corrections: Vec<serde_json::Value> = sqlx::query(
        "SELECT position, plan_before, slots_before, plan_after, slots_after, admin, reason, \
         occurred_at FROM subscription_corrections WHERE user_id = $1 ORDER BY position",
    )
    .bind(user.get())
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        serde_json::json!({
            "position": r.get::<i64, _>(0),
            "plan_before": r.get::<String, _>(1),
            "slots_before": r.get::<i64, _>(2),
            "plan_after": r.get::<String, _>(3),
            "slots_after": r.get::<i64, _>(4),
            "admin": r.get::<String, _>(5),
            "reason": r.get::<String, _>(6),
            "occurred_at": chrono::DateTime::from_timestamp_micros(r.get(7)),
        })
    })
    .collect();
    Ok(Json(serde_json::json!({
        "user_id": user.get(),
        "plan": row.get::<String, _>(0),
        "slots": row.get::<i64, _>(1),
        "status": row.get::<String, _>(2),
        "period_end": chrono::DateTime::from_timestamp_micros(row.get(3)),
        "periods_paid": row.get::<i64, _>(4),
        "position": row.get::<i64, _>(5),
        "corrections": corrections,
    })))
}
