//! Fake payment providers speaking real HTTP in each provider's own format: OxaPay
//! (`/v1/payment/invoice`, `/v1/payment/{track_id}`), Paystack
//! (`/transaction/initialize`, `/transaction/verify/{reference}`, `/refund`) and
//! YooKassa (`/v3/payments`, `/v3/payments/{id}`, `/v3/refunds`, `/v3/refunds/{id}`).
//! One server answers all three (each adapter's base URL points at it). It checks each
//! provider's authentication, keeps the payments it made, and lets a test decide what
//! happened to them (paid, canceled, refunded); it also signs callbacks the way each
//! provider signs them, so a test can send what the provider would send.
//!
//! One file: one fake server for three providers, each handler beside the helpers that build what it answers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

/// OxaPay's merchant API key the fake expects.
pub const OXAPAY_KEY: &str = "oxapay-merchant-key-fake-000001";
/// Paystack's secret key the fake expects.
pub const PAYSTACK_KEY: &str = "sk_test_fake_paystack_0000000001";
/// YooKassa's shop id and secret key the fake expects.
pub const YOOKASSA_SHOP: &str = "100500";
/// YooKassa's secret key.
pub const YOOKASSA_KEY: &str = "test_fake_yookassa_secret_00001";

/// A payment the fake made.
#[derive(Clone, Debug)]
pub struct FakePayment {
    /// `oxapay`, `paystack` or `yookassa`.
    pub provider: &'static str,
    /// The provider's id (track id, transaction id, payment id).
    pub id: String,
    /// Our payment id, as the invoice named it.
    pub order: String,
    /// The amount as the provider holds it: OxaPay and YooKassa in major units (text),
    /// Paystack in minor units.
    pub amount: String,
    /// The currency.
    pub currency: String,
    /// The provider's status word.
    pub status: String,
}

#[derive(Default)]
struct Inner {
    payments: BTreeMap<String, FakePayment>,
    refunds: BTreeMap<String, (String, String)>,
    requests: Vec<(String, Value)>,
    next: u64,
}

/// A running fake.
#[derive(Clone)]
pub struct FakeProviders {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn error(status: StatusCode, body: Value) -> (StatusCode, Json<Value>) {
    (status, Json(body))
}

type Answer = (StatusCode, Json<Value>);

impl FakeProviders {
    /// Starts the fake on a free port.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new()
            .route("/v1/payment/invoice", post(oxapay_invoice))
            .route("/v1/payment/{id}", get(oxapay_status))
            .route("/transaction/initialize", post(paystack_initialize))
            .route("/transaction/verify/{reference}", get(paystack_verify))
            .route("/refund", post(paystack_refund))
            .route("/v3/payments", post(yookassa_create))
            .route("/v3/payments/{id}", get(yookassa_payment))
            .route("/v3/refunds", post(yookassa_refund))
            .route("/v3/refunds/{id}", get(yookassa_refund_status))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, inner }
    }

    /// The providers' settings pointing at this fake (YooKassa's return page given).
    pub fn settings(&self) -> tally_providers::Settings {
        self.settings_with(&[])
    }

    /// The same, with more settings (`provider, key, value`).
    pub fn settings_with(&self, more: &[(&str, &str, &str)]) -> tally_providers::Settings {
        let mut entries: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut set = |p: &str, k: &str, v: &str| {
            entries
                .entry(p.into())
                .or_default()
                .insert(k.into(), v.into());
        };
        set("oxapay", "merchant_api_key", OXAPAY_KEY);
        set("oxapay", "base_url", &self.url);
        set("paystack", "secret_key", PAYSTACK_KEY);
        set("paystack", "base_url", &self.url);
        set("yookassa", "shop_id", YOOKASSA_SHOP);
        set("yookassa", "secret_key", YOOKASSA_KEY);
        set("yookassa", "base_url", &self.url);
        set("yookassa", "return_url", "https://t.me/tally_test_bot");
        for (p, k, v) in more {
            set(p, k, v);
        }
        tally_providers::Settings::from_entries(&entries).unwrap()
    }

    /// Every request a provider received, as (route, body).
    pub fn requests(&self) -> Vec<(String, Value)> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The requests to one route.
    pub fn requests_to(&self, route: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|(r, _)| r == route)
            .map(|(_, body)| body)
            .collect()
    }

    /// The payment the fake made for our payment id.
    pub fn payment_for(&self, order: &str) -> FakePayment {
        self.inner
            .lock()
            .unwrap()
            .payments
            .values()
            .find(|p| p.order == order)
            .cloned()
            .unwrap_or_else(|| panic!("the fake made no payment for {order}"))
    }

    /// Sets what the provider says of a payment (`paid`, `success`, `succeeded`,
    /// `canceled` …).
    pub fn set_status(&self, order: &str, status: &str) {
        let mut inner = self.inner.lock().unwrap();
        let payment = inner
            .payments
            .values_mut()
            .find(|p| p.order == order)
            .unwrap();
        payment.status = status.into();
    }

    /// Sets the amount the provider says it holds (as it keeps it).
    pub fn set_amount(&self, order: &str, amount: &str) {
        let mut inner = self.inner.lock().unwrap();
        let payment = inner
            .payments
            .values_mut()
            .find(|p| p.order == order)
            .unwrap();
        payment.amount = amount.into();
    }

    /// YooKassa refunds a payment: the refund's id.
    pub fn yookassa_refund(&self, order: &str) -> String {
        let payment = self.payment_for(order);
        let mut inner = self.inner.lock().unwrap();
        inner.next += 1;
        let id = format!("rf-{}", inner.next);
        inner
            .refunds
            .insert(id.clone(), (payment.id.clone(), "succeeded".into()));
        id
    }

    /// OxaPay's callback for a payment: the body as OxaPay sends it and its `HMAC`.
    pub fn oxapay_callback(
        &self,
        order: &str,
        status: &str,
        amount: &str,
        currency: &str,
    ) -> (String, String) {
        let payment = self.payment_for(order);
        let body = format!(
            r#"{{"track_id":"{}","status":"{status}","type":"invoice","amount":{amount},"currency":"{currency}","order_id":"{order}","date":1767225600}}"#,
            payment.id
        );
        let signature = hex_hmac_sha512(OXAPAY_KEY, &body);
        (body, signature)
    }

    /// Paystack's `charge.success` for a payment (amount in minor units): the body
    /// and its `x-paystack-signature`.
    pub fn paystack_charge(&self, order: &str, kobo: i64, currency: &str) -> (String, String) {
        let payment = self.payment_for(order);
        let body = json!({
            "event": "charge.success",
            "data": {"id": payment.id.parse::<i64>().unwrap(), "status": "success",
                "reference": order, "amount": kobo, "currency": currency,
                "paid_at": "2026-12-07T10:00:00.000Z"}
        })
        .to_string();
        let signature = hex_hmac_sha512(PAYSTACK_KEY, &body);
        (body, signature)
    }

    /// YooKassa's notification (unsigned) about a payment.
    pub fn yookassa_notification(&self, order: &str, event: &str) -> String {
        let payment = self.payment_for(order);
        json!({
            "type": "notification",
            "event": event,
            "object": {"id": payment.id, "status": "succeeded", "paid": true,
                "amount": {"value": payment.amount, "currency": payment.currency},
                "metadata": {"payment_id": order}}
        })
        .to_string()
    }
}

/// Hex HMAC-SHA512, as OxaPay and Paystack sign.
pub fn hex_hmac_sha512(key: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn record(inner: &Mutex<Inner>, route: &str, body: &Value) {
    inner
        .lock()
        .unwrap()
        .requests
        .push((route.into(), body.clone()));
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn oxapay_invoice(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Answer {
    if header(&headers, "merchant_api_key") != OXAPAY_KEY {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"data": {}, "message": "Invalid merchant API key", "status": 401}),
        );
    }
    let request: Value = serde_json::from_str(&body).unwrap();
    record(&inner, "oxapay.invoice", &request);
    // The amount is a JSON number; the fake keeps its digits.
    let amount = body
        .split("\"amount\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .unwrap_or_default()
        .to_string();
    let mut inner = inner.lock().unwrap();
    inner.next += 1;
    let id = format!("{}", 180_000_000 + inner.next);
    inner.payments.insert(
        id.clone(),
        FakePayment {
            provider: "oxapay",
            id: id.clone(),
            order: request["order_id"].as_str().unwrap_or_default().into(),
            amount,
            currency: request["currency"].as_str().unwrap_or_default().into(),
            status: "waiting".into(),
        },
    );
    (
        StatusCode::OK,
        Json(
            json!({"data": {"track_id": id, "payment_url": format!("https://pay.oxapay.com/{id}"),
            "expired_at": 1767229200, "date": 1767225600}, "message": "Operation completed successfully!",
            "error": {}, "status": 200, "version": "1.0.0"}),
        ),
    )
}

async fn oxapay_status(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if header(&headers, "merchant_api_key") != OXAPAY_KEY {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Invalid merchant API key", "status": 401}),
        )
        .into_response();
    }
    let inner = inner.lock().unwrap();
    let Some(p) = inner.payments.get(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            json!({"message": "not found", "status": 404}),
        )
        .into_response();
    };
    // The amount is a JSON number written by its digits, as OxaPay writes it.
    let body = format!(
        r#"{{"data":{{"track_id":"{}","status":"{}","amount":{},"currency":"{}","order_id":"{}"}},"status":200}}"#,
        p.id, p.status, p.amount, p.currency, p.order
    );
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn paystack_initialize(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Answer {
    if header(&headers, "authorization") != format!("Bearer {PAYSTACK_KEY}") {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"status": false, "message": "Invalid key"}),
        );
    }
    record(&inner, "paystack.initialize", &request);
    let reference = request["reference"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut inner = inner.lock().unwrap();
    if inner.payments.values().any(|p| p.order == reference) {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"status": false, "message": "Duplicate Transaction Reference"}),
        );
    }
    if !request["email"].as_str().unwrap_or_default().contains('@') {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"status": false, "message": "Invalid Email Address Passed"}),
        );
    }
    inner.next += 1;
    let id = format!("{}", 4_000_000_000_u64 + inner.next);
    let code = format!("ac_{}", inner.next);
    inner.payments.insert(
        id.clone(),
        FakePayment {
            provider: "paystack",
            id,
            order: reference.clone(),
            amount: request["amount"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| request["amount"].to_string()),
            currency: request["currency"].as_str().unwrap_or("NGN").into(),
            status: "ongoing".into(),
        },
    );
    (
        StatusCode::OK,
        Json(
            json!({"status": true, "message": "Authorization URL created",
            "data": {"authorization_url": format!("https://checkout.paystack.com/{code}"),
                "access_code": code, "reference": reference}}),
        ),
    )
}

async fn paystack_verify(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Path(reference): Path<String>,
) -> Answer {
    if header(&headers, "authorization") != format!("Bearer {PAYSTACK_KEY}") {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"status": false, "message": "Invalid key"}),
        );
    }
    let inner = inner.lock().unwrap();
    let Some(p) = inner.payments.values().find(|p| p.order == reference) else {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"status": false, "message": "Transaction reference not found"}),
        );
    };
    (
        StatusCode::OK,
        Json(json!({"status": true, "message": "Verification successful",
            "data": {"id": p.id.parse::<i64>().unwrap(), "status": p.status, "reference": p.order,
                "amount": p.amount.parse::<i64>().unwrap(), "currency": p.currency}})),
    )
}

async fn paystack_refund(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Answer {
    if header(&headers, "authorization") != format!("Bearer {PAYSTACK_KEY}") {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"status": false, "message": "Invalid key"}),
        );
    }
    record(&inner, "paystack.refund", &request);
    (
        StatusCode::OK,
        Json(
            json!({"status": true, "message": "Refund has been queued for processing",
            "data": {"transaction": {"reference": request["transaction"]}, "status": "pending"}}),
        ),
    )
}

fn yookassa_authorized(headers: &HeaderMap) -> bool {
    use base64::Engine as _;
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{YOOKASSA_SHOP}:{YOOKASSA_KEY}"));
    header(headers, "authorization") == format!("Basic {expected}")
}

fn yookassa_object(p: &FakePayment) -> Value {
    json!({"id": p.id, "status": p.status, "paid": p.status == "succeeded",
        "amount": {"value": p.amount, "currency": p.currency},
        "confirmation": {"type": "redirect", "confirmation_url": format!("https://yoomoney.ru/checkout/payments/v2/contract?orderId={}", p.id)},
        "metadata": {"payment_id": p.order}, "test": true})
}

async fn yookassa_create(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Answer {
    if !yookassa_authorized(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"type": "error", "code": "invalid_credentials"}),
        );
    }
    let key = header(&headers, "idempotence-key").to_string();
    if key.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            json!({"type": "error", "code": "invalid_request", "description": "Idempotence key is missing"}),
        );
    }
    record(&inner, "yookassa.payments", &request);
    let mut inner = inner.lock().unwrap();
    // The same Idempotence-Key is the same payment.
    let id = format!(
        "2f{:0>6}-000f-5000-9000-{:0>12}",
        key.len(),
        key.bytes().map(u64::from).sum::<u64>()
    );
    if let Some(existing) = inner.payments.get(&id) {
        return (StatusCode::OK, Json(yookassa_object(existing)));
    }
    let payment = FakePayment {
        provider: "yookassa",
        id: id.clone(),
        order: request["metadata"]["payment_id"]
            .as_str()
            .unwrap_or_default()
            .into(),
        amount: request["amount"]["value"]
            .as_str()
            .unwrap_or_default()
            .into(),
        currency: request["amount"]["currency"]
            .as_str()
            .unwrap_or_default()
            .into(),
        status: "pending".into(),
    };
    let object = yookassa_object(&payment);
    inner.payments.insert(id, payment);
    (StatusCode::OK, Json(object))
}

async fn yookassa_payment(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    if !yookassa_authorized(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"type": "error", "code": "invalid_credentials"}),
        );
    }
    match inner.lock().unwrap().payments.get(&id) {
        Some(p) => (StatusCode::OK, Json(yookassa_object(p))),
        None => error(
            StatusCode::NOT_FOUND,
            json!({"type": "error", "code": "not_found"}),
        ),
    }
}

async fn yookassa_refund(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Answer {
    if !yookassa_authorized(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"type": "error", "code": "invalid_credentials"}),
        );
    }
    record(&inner, "yookassa.refunds", &request);
    let mut inner = inner.lock().unwrap();
    inner.next += 1;
    let id = format!("rf-{}", inner.next);
    let payment = request["payment_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    inner
        .refunds
        .insert(id.clone(), (payment.clone(), "succeeded".into()));
    (
        StatusCode::OK,
        Json(
            json!({"id": id, "payment_id": payment, "status": "succeeded", "amount": request["amount"]}),
        ),
    )
}

async fn yookassa_refund_status(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    if !yookassa_authorized(&headers) {
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"type": "error", "code": "invalid_credentials"}),
        );
    }
    match inner.lock().unwrap().refunds.get(&id) {
        Some((payment, status)) => (
            StatusCode::OK,
            Json(json!({"id": id, "payment_id": payment, "status": status})),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            json!({"type": "error", "code": "not_found"}),
        ),
    }
}
