//! Payments and provider webhooks. A payment is created pending; the provider's
//! webhook says it succeeded or failed. The webhook's signature is checked over the
//! raw body before anything is parsed; a success is applied once however often it is
//! delivered (the payment stream refuses a second success, and the reactor credits by
//! an id derived from the payment).
//!
//! The generic format: header `X-Tally-Signature: sha256=<hex HMAC-SHA256 of the raw
//! body with the provider's secret>` and body `{payment_id, status, amount, currency,
//! provider_payment_id}`; secrets from `TALLY_WEBHOOK_SECRETS` (`provider:secret,…`).
//!
//! One file: payments and the webhooks that settle them (generic signed, OxaPay) share
//! the settle-once path and its checks.

use crate::auth::{Admin, Service};
use crate::constraints::{AmountText, IdText, PositionNumber, ProviderText, UserIdNumber};
use crate::input::{Body, IdPath};
use std::collections::HashMap;
use tally_projections::PaymentPurpose;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tally_domain::payment::{Payment, PaymentCommand, PaymentStatus, Purpose, Terms};
use tally_domain::values::{Amount, PaymentId, PlanId, Reason};
use tally_ledger::workflows::fulfil_payment;
use tally_ledger::{LedgerError, Outcome, Request};
use tally_store::{Actor, ActorKind, Metadata};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounts::{ReadQuery, metadata, wait_for_read_model};
use crate::error::{ApiError, ReadErrors, WriteErrors};
use crate::write::answer;
use crate::{AppState, input};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(read))
        .routes(routes!(webhook))
        .routes(routes!(duplicate_charges))
}

/// Webhook secrets by provider, from `provider:secret,…`.
pub fn parse_webhook_secrets(text: &str) -> Result<HashMap<String, String>, String> {
    let mut secrets = HashMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((provider, secret)) = entry.split_once(':') else {
            return Err(format!(
                "TALLY_WEBHOOK_SECRETS entry for {:?} is not provider:secret",
                entry.chars().take(16).collect::<String>()
            ));
        };
        if secret.len() < 16 {
            return Err(format!(
                "TALLY_WEBHOOK_SECRETS: the secret of {provider} is shorter than 16 characters"
            ));
        }
        secrets.insert(provider.to_string(), secret.to_string());
    }
    Ok(secrets)
}

/// What a payment buys: `{"credits": "20"}` or `{"plan": "pro"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum PurposeBody {
    /// Credits, a decimal string.
    Credits(String),
    /// A plan of the catalog (`basic`, `pro`, `enterprise`).
    Plan(String),
}

impl utoipa::PartialSchema for PurposeBody {
    /// One of two one-key objects, and nothing else beside the key (the server
    /// refuses unknown fields).
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder};
        use utoipa::openapi::{Ref, RefOr};
        let choice = |key: &str, schema: &str, what: &str| {
            ObjectBuilder::new()
                .property(key, Ref::from_schema_name(schema))
                .required(key)
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
                .description(Some(what))
        };
        RefOr::T(
            OneOfBuilder::new()
                .item(choice("credits", "AmountText", "credits, a decimal string"))
                .item(choice("plan", "PlanName", "a plan of the catalog"))
                .description(Some(
                    "What a payment buys: `{\"credits\": \"20\"}` or `{\"plan\": \"pro\"}`.",
                ))
                .into(),
        )
    }
}

impl ToSchema for PurposeBody {}

/// A payment, created pending before the user pays.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    /// The caller's id for the payment (the invoice's order id).
    #[schema(value_type = IdText)]
    payment_id: String,
    #[schema(value_type = UserIdNumber)]
    #[serde(deserialize_with = "crate::input::whole::deserialize")]
    user_id: i64,
    /// `stars`, `oxapay` or another with a webhook secret.
    #[schema(value_type = ProviderText)]
    provider: String,
    /// What the user pays, a decimal string.
    #[schema(value_type = AmountText)]
    amount: String,
    /// `XTR` (Telegram Stars), `USD`, ….
    #[schema(value_type = ProviderText)]
    currency: String,
    purpose: PurposeBody,
}

/// A payment as the API shows it.
#[derive(Serialize, ToSchema)]
pub(crate) struct PaymentBody {
    payment_id: String,
    user_id: i64,
    provider: String,
    amount: String,
    currency: String,
    /// `{"credits": "20"}` or `{"plan": "pro"}`.
    #[schema(value_type = Object)]
    purpose: serde_json::Value,
    /// `pending`, `succeeded`, `failed` or `reversed`.
    status: String,
    /// The provider's id of the charge, once paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_payment_id: Option<String>,
    /// Why it failed or was reversed.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    position: u64,
}

fn payment_body(id: &PaymentId, outcome: &Outcome<Payment>) -> Result<PaymentBody, ApiError> {
    let (Some(terms), Some(status)) = (&outcome.view.terms, outcome.view.status) else {
        return Err(ApiError::internal(
            "a payment command answered without terms",
        ));
    };
    Ok(PaymentBody {
        payment_id: id.to_string(),
        user_id: terms.user_id.get(),
        provider: terms.provider.clone(),
        amount: terms.amount.to_string(),
        currency: terms.currency.clone(),
        purpose: serde_json::to_value(&terms.purpose).map_err(ApiError::internal)?,
        status: serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        provider_payment_id: None,
        reason: None,
        position: outcome.position,
    })
}

/// Creates a pending payment (201; the same id and body again: the original, with
/// `Idempotent-Replay: true`).
#[utoipa::path(post, path = "/v1/payments", tag = "payments",
    request_body = CreateBody,
    responses((status = 201, body = PaymentBody), WriteErrors),
    security(("service" = [])))]
async fn create(
    State(state): State<AppState>,
    Service(caller): Service,
    Body(body): Body<CreateBody>,
) -> Result<Response, ApiError> {
    let payment_id = PaymentId::new(body.payment_id)?;
    let purpose = match body.purpose {
        PurposeBody::Credits(credits) => Purpose::Credits(credits.parse::<Amount>()?),
        PurposeBody::Plan(plan) => Purpose::Plan(PlanId::new(plan)?),
    };
    let terms = Terms {
        user_id: input::user_id(&body.user_id.to_string())?,
        provider: body.provider,
        amount: body.amount.parse::<Amount>()?,
        currency: body.currency,
        purpose,
    };
    let outcome = state
        .ledgers
        .payments
        .execute(Request {
            key: payment_id.clone(),
            command: PaymentCommand::Create(terms),
            command_id: Some("create".into()),
            metadata: metadata(&caller),
        })
        .await?;
    Ok(answer(
        StatusCode::CREATED,
        outcome.replayed,
        payment_body(&payment_id, &outcome)?,
    ))
}

/// A payment: terms, status, the provider's charge id.
#[utoipa::path(get, path = "/v1/payments/{payment_id}", tag = "payments",
    params(("payment_id" = IdText, Path, description = "the caller's id of the payment"), ReadQuery),
    responses((status = 200, body = PaymentBody), ReadErrors),
    security(("service" = [])))]
async fn read(
    State(state): State<AppState>,
    _: Service,
    _headers: HeaderMap,
    IdPath(payment_id): IdPath<PaymentId>,
    query: Result<Query<ReadQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PaymentBody>, ApiError> {
    let query = input::query(query)?;
    wait_for_read_model(&state, "payments", query.min_position).await?;
    let row = tally_projections::payment(state.projector.pool(), payment_id.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "payment_not_found",
                format!("there is no payment {payment_id}"),
            )
        })?;
    let purpose = match row.purpose {
        PaymentPurpose::Credits(credits) => serde_json::json!({ "credits": credits }),
        PaymentPurpose::Plan(plan) => serde_json::json!({ "plan": plan }),
    };
    Ok(Json(PaymentBody {
        payment_id: payment_id.to_string(),
        user_id: row.user_id,
        provider: row.provider,
        amount: row.amount.to_string(),
        currency: row.currency,
        purpose,
        status: row.status,
        provider_payment_id: row.provider_payment_id,
        reason: row.reason,
        position: row.position.try_into().unwrap_or_default(),
    }))
}

/// Checks `X-Tally-Signature: sha256=<hex>` over `body` with `secret`.
fn verify_signature(headers: &HeaderMap, body: &[u8], secret: &str) -> Result<(), ApiError> {
    let invalid = |detail: &str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            detail.to_string(),
        )
    };
    let header = headers
        .get("x-tally-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| invalid("no X-Tally-Signature header"))?;
    let hex = header
        .strip_prefix("sha256=")
        .ok_or_else(|| invalid("X-Tally-Signature is not sha256=<hex>"))?;
    let signature = decode_hex(hex).ok_or_else(|| invalid("X-Tally-Signature is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| ApiError::internal("webhook secret unusable"))?;
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| invalid("the signature does not match the body"))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What the provider says happened.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WebhookStatus {
    Succeeded,
    Failed,
}

/// The generic webhook body.
#[derive(Deserialize, ToSchema)]
pub(crate) struct WebhookBody {
    #[schema(value_type = IdText)]
    payment_id: String,
    status: WebhookStatus,
    /// What was paid; must equal the payment's amount.
    #[schema(value_type = AmountText)]
    amount: String,
    #[schema(value_type = ProviderText)]
    currency: String,
    /// The provider's id of the charge (required for `succeeded`).
    #[serde(default)]
    provider_payment_id: Option<String>,
}

/// A payment's state after a webhook.
#[derive(Serialize, ToSchema)]
pub(crate) struct WebhookAnswer {
    payment_id: String,
    /// `pending`, `succeeded`, `failed` or `reversed`.
    status: String,
    /// Position of the last event (credits included): use as `?min_position`.
    position: u64,
    /// True when this charge was another one for a payment already paid: recorded
    /// as a duplicate charge (credits nothing; see the admin's duplicate charges).
    duplicate_charge: bool,
}

/// A provider's notice that a payment succeeded or failed. The signature is checked
/// over the raw body first (generic: `X-Tally-Signature: sha256=<hex HMAC-SHA256>`
/// with the provider's secret from `TALLY_WEBHOOK_SECRETS`; `oxapay`: header `HMAC` =
/// hex HMAC-SHA512 with the merchant API key, OxaPay's own body, answered `ok`). The
/// same notice any number of times credits once.
#[utoipa::path(post, path = "/v1/webhooks/{provider}", tag = "payments",
    params(("provider" = String, Path, description = "a provider with a secret in TALLY_WEBHOOK_SECRETS")),
    request_body = WebhookBody,
    responses((status = 200, description = "applied (or already applied); `oxapay`: text `ok`", body = WebhookAnswer),
              (status = 401, description = "`invalid_signature`: nothing applied", body = crate::error::Problem, content_type = "application/problem+json"),
              WriteErrors))]
async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(provider): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(secret) = state.webhook_secrets.get(&provider).cloned() else {
        return Err(ApiError::not_found(
            "not_found",
            format!(
                "no webhook secret is configured for provider {provider:?} (TALLY_WEBHOOK_SECRETS)"
            ),
        ));
    };
    match provider.as_str() {
        "oxapay" => oxapay(state, headers, body, &secret).await,
        _ => Ok(generic(state, headers, provider, body, &secret)
            .await?
            .into_response()),
    }
}

/// A charge of a provider for a payment already paid: money that bought nothing.
#[derive(Serialize, ToSchema)]
pub(crate) struct DuplicateChargeBody {
    provider: String,
    provider_payment_id: String,
    payment_id: String,
    user_id: i64,
    #[schema(value_type = String, example = "100.00")]
    amount: rust_decimal::Decimal,
    currency: String,
    occurred_at: Option<chrono::DateTime<chrono::Utc>>,
    position: i64,
}

/// The duplicate charges, newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct DuplicateChargesBody {
    charges: Vec<DuplicateChargeBody>,
}

/// Filters of the duplicate charges.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DuplicateChargesQuery {
    /// Only this user's.
    #[param(value_type = Option<UserIdNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    user_id: Option<i64>,
    /// Wait (up to 5 s) for the read model to reach this position.
    #[param(value_type = Option<PositionNumber>)]
    #[serde(default, deserialize_with = "crate::input::whole::query")]
    min_position: Option<u64>,
}

/// Charges a provider made for payments already paid (or failed): money received
/// that bought nothing and should be given back (newest first, at most 500).
#[utoipa::path(get, path = "/v1/admin/payments/duplicate-charges", tag = "admin",
    params(DuplicateChargesQuery),
    responses((status = 200, body = DuplicateChargesBody), ReadErrors),
    security(("admin" = [])))]
async fn duplicate_charges(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<DuplicateChargesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DuplicateChargesBody>, ApiError> {
    let query = input::query(query)?;
    wait_for_read_model(&state, "payments", query.min_position).await?;
    let charges = tally_projections::duplicate_charges(
        state.projector.pool(),
        query.user_id,
        DUPLICATE_CHARGES_LISTED_MAX,
    )
    .await?
    .into_iter()
    .map(|charge| DuplicateChargeBody {
        provider: charge.provider,
        provider_payment_id: charge.provider_payment_id,
        payment_id: charge.payment_id,
        user_id: charge.user_id,
        amount: charge.amount,
        currency: charge.currency,
        occurred_at: chrono::DateTime::from_timestamp_micros(charge.occurred_at),
        position: charge.position,
    })
    .collect();
    Ok(Json(DuplicateChargesBody { charges }))
}

/// Most duplicate charges one answer lists.
const DUPLICATE_CHARGES_LISTED_MAX: i64 = 500;

/// Counts a charge recorded as a duplicate (the first time it is recorded).
fn count_duplicate(provider: &str, charge: &str, outcome: &Outcome<Payment>) {
    if !outcome.replayed && outcome.view.provider_payment_id.as_deref() != Some(charge) {
        tracing::warn!(%provider, %charge, "a second charge for a paid payment: recorded as a duplicate charge to give back");
        metrics::counter!("tally_duplicate_charges_total", "provider" => provider.to_string())
            .increment(1);
    }
}

/// The generic format (see the module notes).
async fn generic(
    state: AppState,
    headers: HeaderMap,
    provider: String,
    body: Bytes,
    secret: &str,
) -> Result<Json<WebhookAnswer>, ApiError> {
    verify_signature(&headers, &body, secret)?;
    let body: WebhookBody = input::json(&body)?;
    let payment_id = PaymentId::new(body.payment_id)?;
    let charge = body.provider_payment_id.clone().unwrap_or_default();
    let succeeded = matches!(body.status, WebhookStatus::Succeeded);
    let command = match body.status {
        WebhookStatus::Succeeded => PaymentCommand::Succeed {
            provider: provider.clone(),
            provider_payment_id: body.provider_payment_id.ok_or_else(|| {
                ApiError::validation("a succeeded payment needs provider_payment_id")
            })?,
            amount: body.amount.parse::<Amount>()?,
            currency: body.currency,
        },
        WebhookStatus::Failed => PaymentCommand::Fail {
            provider: provider.clone(),
            reason: Reason::new(format!("{provider} reported the payment failed"))?,
        },
    };
    let outcome = state
        .ledgers
        .payments
        .command(
            payment_id.clone(),
            command,
            Metadata::by(Actor::new(ActorKind::Webhook, provider.clone())),
        )
        .await
        .map_err(|error| refused_webhook(&provider, &payment_id, error))?;
    let duplicate_charge =
        succeeded && outcome.view.provider_payment_id.as_deref() != Some(charge.as_str());
    if duplicate_charge {
        count_duplicate(&provider, &charge, &outcome);
    }
    // Credit at once (the reactor would, a moment later; both are idempotent by the
    // payment id), so `?min_position` on the answer's position shows the credits.
    let mut position = outcome.position;
    if let (Some(PaymentStatus::Succeeded), Some(terms)) =
        (outcome.view.status, &outcome.view.terms)
    {
        position = position.max(
            fulfil_payment(
                &state.ledgers.accounts,
                &state.ledgers.subscriptions,
                payment_id.clone(),
                terms.user_id,
                terms.purpose.clone(),
                Metadata::by(Actor::new(ActorKind::Webhook, provider)),
            )
            .await?,
        );
    }
    let status = outcome
        .view
        .status
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Ok(Json(WebhookAnswer {
        payment_id: payment_id.to_string(),
        status,
        position,
        duplicate_charge,
    }))
}

/// OxaPay's callback, as OxaPay sends it: header `HMAC` = hex HMAC-SHA512 of the raw
/// body with the merchant API key (the provider's secret); the body names the payment
/// by `order_id` (the id the invoice was created with; `orderId` in its legacy format)
/// and its `track_id`; `status` `paid` means the invoice is paid in full, `failed` or
/// `expired` that it will not be; `paying`, `waiting`, `confirming` are progress. OxaPay
/// retries until it gets a 200 with the body `ok`, so every accepted callback — also a
/// repeated one — is answered so.
async fn oxapay(
    state: AppState,
    headers: HeaderMap,
    body: Bytes,
    secret: &str,
) -> Result<Response, ApiError> {
    let invalid = |detail: &str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            detail.to_string(),
        )
    };
    let signature = headers
        .get("hmac")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| decode_hex(v.trim()))
        .ok_or_else(|| invalid("no HMAC header with a hex signature"))?;
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes())
        .map_err(|_| ApiError::internal("webhook secret unusable"))?;
    mac.update(&body);
    mac.verify_slice(&signature)
        .map_err(|_| invalid("the HMAC does not match the body"))?;
    let callback: serde_json::Value = input::json(&body)?;
    let text = |keys: &[&str]| {
        keys.iter().find_map(|k| match &callback[*k] {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let order = text(&["order_id", "orderId"])
        .ok_or_else(|| ApiError::validation("the callback names no order_id"))?;
    let track = text(&["track_id", "trackId"])
        .ok_or_else(|| ApiError::validation("the callback names no track_id"))?;
    let status = text(&["status"]).unwrap_or_default().to_ascii_lowercase();
    let payment_id = PaymentId::new(order)?;
    let metadata = Metadata::by(Actor::new(ActorKind::Webhook, "oxapay"));
    let command = match status.as_str() {
        // What OxaPay says was paid is checked against the payment by the ledger:
        // another amount or currency is a conflict, never a credit. The amount is a
        // JSON number; its text is read as a decimal, never through a float.
        "paid" => PaymentCommand::Succeed {
            provider: OXAPAY.into(),
            provider_payment_id: track.clone(),
            amount: oxapay_amount(&body)?,
            currency: text(&["currency"])
                .ok_or_else(|| ApiError::validation("the callback names no currency"))?,
        },
        "failed" | "expired" => PaymentCommand::Fail {
            provider: OXAPAY.into(),
            reason: Reason::new(format!("oxapay reported the invoice {status}"))?,
        },
        _ => return Ok(ok_body()),
    };
    let outcome = state
        .ledgers
        .payments
        .command(payment_id.clone(), command, metadata.clone())
        .await
        .map_err(|error| refused_webhook(OXAPAY, &payment_id, error))?;
    if status == "paid" {
        count_duplicate(OXAPAY, &track, &outcome);
    }
    if let (Some(PaymentStatus::Succeeded), Some(terms)) =
        (outcome.view.status, &outcome.view.terms)
    {
        fulfil_payment(
            &state.ledgers.accounts,
            &state.ledgers.subscriptions,
            payment_id,
            terms.user_id,
            terms.purpose.clone(),
            metadata,
        )
        .await?;
    }
    Ok(ok_body())
}

/// The provider name of OxaPay payments in the ledger (and its webhook route).
const OXAPAY: &str = "oxapay";

/// A webhook the ledger refused: a payment of another provider, or a report that
/// disagrees with the payment, is logged and counted (someone is sending notices
/// that do not match; an operator should look), then answered with the refusal.
fn refused_webhook(provider: &str, payment_id: &PaymentId, error: LedgerError) -> ApiError {
    let code = error.code();
    if matches!(code, "provider_mismatch" | "payment_conflict") {
        tracing::warn!(%provider, %payment_id, %error, "webhook refused: nothing applied");
        metrics::counter!("tally_webhooks_refused_total", "provider" => provider.to_string(), "code" => code)
            .increment(1);
    }
    error.into()
}

/// The `amount` of an OxaPay callback (a JSON number, or a string) as a decimal,
/// read from its text.
fn oxapay_amount(body: &[u8]) -> Result<Amount, ApiError> {
    #[derive(Deserialize)]
    struct Paid<'a> {
        #[serde(borrow)]
        amount: Option<&'a serde_json::value::RawValue>,
    }
    let paid: Paid = serde_json::from_slice(body)
        .map_err(|e| ApiError::validation(format!("the callback is not JSON: {e}")))?;
    let raw = paid
        .amount
        .ok_or_else(|| ApiError::validation("the callback names no amount"))?
        .get();
    let text = raw.trim().trim_matches('"');
    let decimal = rust_decimal::Decimal::from_str_exact(text)
        .or_else(|_| rust_decimal::Decimal::from_scientific(text))
        .map_err(|_| {
            ApiError::validation(format!("the callback's amount {raw} is not a number"))
        })?;
    Ok(Amount::new(decimal.normalize())?)
}

fn ok_body() -> Response {
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        "ok",
    )
        .into_response()
}
