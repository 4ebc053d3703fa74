//! Payments, the invoices Tally makes for them, and the providers' callbacks that
//! settle them. `POST /v1/payments` with a provider that invoices (Stars, OxaPay,
//! Paystack, YooKassa) answers with the provider's pay URL, made once and kept in the
//! payment's stream. `POST /v1/webhooks/{provider}` hands the raw body to the
//! provider's adapter (`tally_providers`), which checks its signature before anything
//! is parsed; a notice that is not proof by itself (YooKassa's) is confirmed by
//! fetching the payment from the provider; then the ledger settles it once
//! (`tally_ledger::checkout::settle`): another provider's payment, another amount or
//! currency is refused and nothing is appended.
//!
//! The generic format, for providers without an adapter: header `X-Tally-Signature:
//! sha256=<hex HMAC-SHA256 of the raw body with the provider's secret>` and body
//! `{payment_id, status, amount, currency, provider_payment_id}`; secrets from
//! `TALLY_WEBHOOK_SECRETS` (`provider:secret,…`).
//!
//! One file: payments, the providers' callbacks, admin refunds and reconciliation share the payment's answer and the settle path.

use crate::auth::{Admin, Service};
use crate::constraints::{
    AmountText, EmailText, IdText, PositionNumber, ProviderText, ReasonText, ReturnUrlText,
    UserIdNumber,
};
use crate::input::{Body, IdPath};
use tally_projections::PaymentPurpose;

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tally_domain::payment::{Payment, PaymentCommand, Purpose, Terms};
use tally_domain::values::{Amount, PaymentId, PlanId};
use tally_ledger::checkout::{CheckoutError, InvoiceText, checkout, settle};
use tally_ledger::{Outcome, Request};
use tally_providers::Acknowledgement;
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
        .routes(routes!(refund))
        .routes(routes!(reconciliation))
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
    /// Where the payer returns after paying at the provider (its configured page
    /// when absent).
    #[serde(default)]
    #[schema(value_type = Option<ReturnUrlText>)]
    return_url: Option<String>,
    /// The payer's e-mail, for providers that need one (Paystack); else
    /// `tg<user_id>@<the configured domain>`.
    #[serde(default)]
    #[schema(value_type = Option<EmailText>)]
    email: Option<String>,
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
    /// Where the payer pays: the provider's pay page or the Stars invoice link, for
    /// a provider Tally invoices through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pay_url: Option<String>,
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
        provider_payment_id: outcome.view.provider_payment_id.clone(),
        reason: None,
        pay_url: outcome.view.invoice.as_ref().map(|i| i.pay_url.clone()),
        position: outcome.position,
    })
}

/// Creates a pending payment (201; the same id and body again: the original, with
/// `Idempotent-Replay: true`). With a provider Tally invoices through (`stars`,
/// `oxapay`, `paystack`, `yookassa`, as configured), the invoice is made at the
/// provider once and the answer carries its `pay_url`.
#[utoipa::path(post, path = "/v1/payments", tag = "payments",
    request_body = CreateBody,
    responses((status = 201, body = PaymentBody), WriteErrors,
              (status = 502, description = "`provider_error`: the provider refused or could not be reached; the payment stays pending without an invoice, and the same request again retries", body = crate::error::Problem, content_type = "application/problem+json")),
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
    let invoicing = state
        .providers
        .get(&terms.provider)
        .filter(|p| p.invoices())
        .cloned();
    let outcome = match invoicing {
        Some(provider) => {
            let text = invoice_text(&terms, body.return_url, body.email)?;
            checkout(
                &state.ledgers,
                provider.as_ref(),
                payment_id.clone(),
                terms,
                text,
                metadata(&caller),
            )
            .await?
        }
        None => {
            state
                .ledgers
                .payments
                .execute(Request {
                    key: payment_id.clone(),
                    command: PaymentCommand::Create(terms),
                    command_id: Some("create".into()),
                    metadata: metadata(&caller),
                })
                .await?
        }
    };
    Ok(answer(
        StatusCode::CREATED,
        outcome.replayed,
        payment_body(&payment_id, &outcome)?,
    ))
}

/// What the invoice says, from what the payment buys.
fn invoice_text(
    terms: &Terms,
    return_url: Option<String>,
    email: Option<String>,
) -> Result<InvoiceText, ApiError> {
    if let Some(url) = &return_url
        && (!(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2048)
    {
        return Err(ApiError::validation(
            "return_url must be an http(s) URL of at most 2048 characters",
        ));
    }
    if let Some(email) = &email
        && (email.len() > 254 || !email.contains('@') || email.chars().any(char::is_whitespace))
    {
        return Err(ApiError::validation("email is not an e-mail address"));
    }
    let (title, description) = match &terms.purpose {
        Purpose::Credits(credits) => (
            format!("{credits} credits"),
            format!("{credits} credits for your balance"),
        ),
        Purpose::Plan(plan) => (format!("Plan {plan}"), format!("One period of plan {plan}")),
    };
    Ok(InvoiceText {
        title,
        description,
        return_url,
        email,
    })
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
        pay_url: row.pay_url,
        position: row.position.try_into().unwrap_or_default(),
    }))
}

/// What the provider says happened.
#[derive(ToSchema)]
#[allow(dead_code)] // A schema only: the adapter reads the body (tally_providers::generic).
pub(crate) enum WebhookStatus {
    Succeeded,
    Failed,
}

/// The generic webhook body.
#[derive(ToSchema)]
#[allow(dead_code)] // A schema only: the adapter reads the body (tally_providers::generic).
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

/// A provider's notice about a payment, in the provider's own format: `oxapay`
/// (header `HMAC` = hex HMAC-SHA512 with the merchant API key; answered `ok`),
/// `paystack` (header `x-paystack-signature` = hex HMAC-SHA512 with the secret key),
/// `yookassa` (unsigned: confirmed by fetching the payment from YooKassa), or the
/// generic format (`X-Tally-Signature: sha256=<hex HMAC-SHA256>` with the provider's
/// secret from `TALLY_WEBHOOK_SECRETS`). The same notice any number of times settles
/// once; a refused one appends nothing.
#[utoipa::path(post, path = "/v1/webhooks/{provider}", tag = "payments",
    params(("provider" = String, Path, description = "oxapay, paystack, yookassa, or a provider with a secret in TALLY_WEBHOOK_SECRETS")),
    request_body = WebhookBody,
    responses((status = 200, description = "applied (or already applied); `oxapay`: text `ok`", body = WebhookAnswer),
              (status = 401, description = "`invalid_signature`: nothing applied", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 502, description = "`provider_error`: the provider could not confirm the notice; nothing applied, send it again", body = crate::error::Problem, content_type = "application/problem+json"),
              WriteErrors))]
async fn webhook(
    State(state): State<AppState>,
    sender: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Path(provider): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(adapter) = state.providers.callbacks(&provider).cloned() else {
        return Err(ApiError::not_found(
            "not_found",
            format!(
                "provider {provider:?} is not configured (TALLY_PROVIDERS_* or TALLY_WEBHOOK_SECRETS)"
            ),
        ));
    };
    let sender = sender.map(|axum::Extension(ConnectInfo(addr))| addr.ip());
    let notice = adapter.read_callback(&headers, sender, &body)?;
    let metadata = Metadata::by(Actor::new(ActorKind::Webhook, provider.clone()));
    let settled = settle(&state.ledgers, adapter.as_ref(), notice, metadata)
        .await
        .map_err(|error| refused_webhook(&provider, error))?;
    if settled.duplicate_charge {
        tracing::warn!(%provider, payment = ?settled.payment_id, "a second charge for a paid payment: recorded as a duplicate charge to give back");
        metrics::counter!("tally_duplicate_charges_total", "provider" => provider.clone())
            .increment(1);
    }
    if adapter.acknowledgement() == Acknowledgement::TextOk {
        return Ok(ok_body());
    }
    let status = settled
        .status
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "pending".into());
    Ok(Json(WebhookAnswer {
        payment_id: settled
            .payment_id
            .map(|p| p.to_string())
            .unwrap_or_default(),
        status,
        position: settled.position,
        duplicate_charge: settled.duplicate_charge,
    })
    .into_response())
}

/// An admin's refund of a payment.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RefundBody {
    /// Why (kept on the reversal with the admin key's name).
    #[schema(value_type = ReasonText)]
    reason: String,
    /// Refund even when the payer has spent the credits, taking them back into a
    /// negative balance (a recorded adjustment). Default false: refused with what is
    /// available.
    #[serde(default)]
    allow_negative: bool,
}

/// A payment after its refund.
#[derive(Serialize, ToSchema)]
pub(crate) struct RefundedBody {
    payment_id: String,
    /// `reversed`.
    status: String,
    user_id: i64,
    /// A credits payment: the payer's available credits after they were taken back.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "0")]
    available: Option<rust_decimal::Decimal>,
    /// A plan payment: the plan's period end after its period was taken back.
    #[serde(skip_serializing_if = "Option::is_none")]
    period_end: Option<chrono::DateTime<chrono::Utc>>,
    position: u64,
}

/// Gives a paid payment's money back through its provider (Stars:
/// `refundStarPayment`; Paystack, YooKassa: their refund APIs) and reverses what it
/// gave (its credits taken back, or its plan's period). Checked on the log first: a payment that is not
/// paid is 409 `payment_conflict`; credits already spent are 409
/// `insufficient_credits` unless `allow_negative`; a provider that cannot refund
/// through Tally (OxaPay, a generic webhook) is 422 `not_supported`. Asked again:
/// the same answer, no second refund at the provider.
#[utoipa::path(post, path = "/v1/admin/payments/{payment_id}/refund", tag = "admin",
    params(("payment_id" = IdText, Path, description = "the payment to refund")),
    request_body = RefundBody,
    responses((status = 200, body = RefundedBody), WriteErrors,
              (status = 502, description = "`provider_error`: the provider did not give the money back; nothing recorded", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("admin" = [])))]
async fn refund(
    State(state): State<AppState>,
    Admin(caller): Admin,
    IdPath(payment_id): IdPath<PaymentId>,
    Body(body): Body<RefundBody>,
) -> Result<Json<RefundedBody>, ApiError> {
    let reason = tally_domain::values::Reason::new(body.reason)?;
    let outcome = tally_ledger::checkout::refund(
        &state.ledgers,
        &state.providers,
        payment_id.clone(),
        crate::admin::admin_id(&caller)?,
        reason,
        body.allow_negative,
        metadata(&caller),
    )
    .await?;
    Ok(Json(RefundedBody {
        payment_id: payment_id.to_string(),
        status: "reversed".into(),
        user_id: outcome.user_id.get(),
        available: outcome.available,
        period_end: outcome.period_end,
        position: outcome.position,
    }))
}

/// Which provider to reconcile.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReconcileQuery {
    /// The provider whose charges are listed: `stars`.
    #[param(value_type = ProviderText)]
    provider: String,
}

/// A charge of the provider that no payment records.
#[derive(Serialize, ToSchema)]
pub(crate) struct ProviderOnlyBody {
    /// The provider's charge id.
    id: String,
    #[schema(value_type = String, example = "50")]
    amount: rust_decimal::Decimal,
    /// When the provider charged (RFC 3339).
    at: String,
}

/// A paid payment the provider does not list.
#[derive(Serialize, ToSchema)]
pub(crate) struct LedgerOnlyBody {
    payment_id: String,
    charge_id: String,
    user_id: i64,
    /// `succeeded` or `reversed`.
    status: String,
}

/// What a reconciliation found.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReconciliationBody {
    provider: String,
    /// Charges on both sides.
    matched: usize,
    /// Money the provider took that the ledger did not credit.
    provider_only: Vec<ProviderOnlyBody>,
    /// Payments the ledger credited that the provider does not list.
    ledger_only: Vec<LedgerOnlyBody>,
}

/// Matches every charge the provider lists (Stars: `getStarTransactions`) with the
/// ledger's payments and back, on the payments read model caught up to the log's
/// last event; what is on one side only is listed and counted in
/// `tally_payments_unmatched{provider,side}`. The bot's notifier runs the same check
/// daily and tells the admins.
#[utoipa::path(get, path = "/v1/admin/payments/reconciliation", tag = "admin",
    params(ReconcileQuery),
    responses((status = 200, body = ReconciliationBody), ReadErrors,
              (status = 422, description = "`not_supported`: the provider cannot list its charges through Tally", body = crate::error::Problem, content_type = "application/problem+json"),
              (status = 502, description = "`provider_error`: the provider did not answer", body = crate::error::Problem, content_type = "application/problem+json")),
    security(("admin" = [])))]
async fn reconciliation(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<ReconcileQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ReconciliationBody>, ApiError> {
    let query = input::query(query)?;
    let Some(provider) = state.providers.get(&query.provider).cloned() else {
        return Err(ApiError::not_found(
            "not_found",
            format!("provider {:?} is not configured", query.provider),
        ));
    };
    let last = state
        .store
        .last_position()
        .await
        .map_err(ApiError::internal)?;
    wait_for_read_model(&state, "payments", Some(last)).await?;
    let report =
        tally_projections::reconciliation::reconcile(state.projector.pool(), provider.as_ref())
            .await
            .map_err(|error| match error {
                tally_projections::reconciliation::ReconcileError::Provider(e) => ApiError::from(e),
                tally_projections::reconciliation::ReconcileError::ReadModel(e) => {
                    ApiError::from(e)
                }
            })?;
    Ok(Json(ReconciliationBody {
        provider: report.provider,
        matched: report.matched,
        provider_only: report
            .provider_only
            .into_iter()
            .map(|c| ProviderOnlyBody {
                id: c.id,
                amount: c.amount,
                at: c.at,
            })
            .collect(),
        ledger_only: report
            .ledger_only
            .into_iter()
            .map(|l| LedgerOnlyBody {
                payment_id: l.payment_id,
                charge_id: l.charge_id,
                user_id: l.user_id,
                status: l.status,
            })
            .collect(),
    }))
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

/// A webhook the ledger refused: a payment of another provider, or a report that
/// disagrees with the payment, is logged and counted (someone is sending notices
/// that do not match; an operator should look), then answered with the refusal.
fn refused_webhook(provider: &str, error: CheckoutError) -> ApiError {
    if let CheckoutError::Ledger(error) = &error {
        let code = error.code();
        if matches!(code, "provider_mismatch" | "payment_conflict") {
            tracing::warn!(%provider, %error, "webhook refused: nothing applied");
            metrics::counter!("tally_webhooks_refused_total", "provider" => provider.to_string(), "code" => code)
                .increment(1);
        }
    }
    error.into()
}

fn ok_body() -> Response {
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        "ok",
    )
        .into_response()
}
