//! Payments through the providers Tally invoices with, end to end: the app as `tally
//! serve` wires it, on a real SQLite file and a fresh Postgres database, with fake
//! OxaPay, Paystack and YooKassa servers and a fake Telegram Bot API speaking real
//! HTTP in their own formats. For each provider: the invoice is made once and its pay
//! URL answered; a good callback credits once however often it comes; a bad
//! signature, a wrong amount or currency, a callback for another provider's payment
//! is refused with nothing appended; YooKassa's unsigned notifications credit only
//! what YooKassa's API confirms. Admin refunds go back through the provider.
//!
//! One file: the providers' cases share one stack (app, fake providers, fake Telegram)
//! and its helpers; they read as the payments part of the manual, provider by provider.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

#[allow(dead_code)] // the bot suite uses more of the fake than these cases do
mod fake_providers;
#[allow(dead_code)]
mod fake_telegram;

use std::sync::Arc;

use fake_providers::FakeProviders;
use fake_telegram::FakeTelegram;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tally_store::testing::{Backend, TestDatabase};

const SERVICE: &str = "service-key-0123456789";
const ADMIN: &str = "admin-key-0123456789ab";

struct Stack {
    api: String,
    client: reqwest::Client,
    providers: FakeProviders,
    telegram: FakeTelegram,
    store: Arc<dyn tally_store::EventStore>,
    running: tally_app::Running,
    database: TestDatabase,
}

impl tally_store::testing::Fixture for Stack {
    async fn start(backend: Backend) -> Self {
        Stack::start_with(backend, &[]).await
    }

    async fn finish(self) {
        self.running.stop().await.unwrap();
        self.database.drop_database().await;
    }
}

impl Stack {
    /// The app with the fake providers (and `more` provider settings).
    async fn start_with(backend: Backend, more: &[(&str, &str, &str)]) -> Self {
        let database = backend.database().await;
        let providers = FakeProviders::start().await;
        let telegram = FakeTelegram::start().await;
        let settings =
            providers
                .settings_with(more)
                .with(tally_providers::ProviderSettings::Stars(
                    tally_providers::settings::StarsSettings {
                        token: "123456:TEST-TOKEN".into(),
                        api_url: telegram.url.as_str().trim_end_matches('/').into(),
                    },
                ));
        let app = tally_app::App {
            api_keys: format!("service:shop:{SERVICE},admin:ops-alice:{ADMIN}"),
            providers: settings,
            ..tally_app::App::new(&database.url)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = tally_app::start(app, Some(listener)).await.unwrap();
        Self {
            api: format!("http://{}", running.addr.unwrap()),
            client: reqwest::Client::new(),
            store: running.store.clone(),
            providers,
            telegram,
            running,
            database,
        }
    }
}

impl Stack {
    async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.api))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Creates a payment through the API.
    async fn pay(
        &self,
        id: &str,
        user: i64,
        provider: &str,
        amount: &str,
        currency: &str,
        credits: &str,
    ) -> (StatusCode, Value) {
        self.post(
            "/v1/payments",
            SERVICE,
            json!({"payment_id": id, "user_id": user, "provider": provider, "amount": amount,
                "currency": currency, "purpose": {"credits": credits}}),
        )
        .await
    }

    /// Sends a provider's callback as the provider would: raw body, its headers.
    async fn callback(
        &self,
        provider: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String) {
        let mut request = self
            .client
            .post(format!("{}/v1/webhooks/{provider}", self.api))
            .header("content-type", "application/json")
            .body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// The user's available credits once the read model has reached the log's head.
    async fn available(&self, user: i64) -> String {
        let head = self.store.last_position().await.unwrap();
        let response = self
            .client
            .get(format!(
                "{}/v1/accounts/{user}?min_position={head}",
                self.api
            ))
            .bearer_auth(SERVICE)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::NOT_FOUND {
            return "no account".into();
        }
        let body: Value = response.json().await.unwrap();
        // Decimal text as the ledger means it ("5.00" is 5).
        let text = body["available"].as_str().unwrap();
        text.parse::<rust_decimal::Decimal>()
            .unwrap()
            .normalize()
            .to_string()
    }

    /// The last committed position (not `head_position`, which on a shared Postgres
    /// waits for other tests' open transactions).
    async fn head(&self) -> u64 {
        self.store.last_position().await.unwrap()
    }
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn paystack_invoices_once_and_its_signed_charge_credits_once(s: &Stack) {
    let (status, created) = s.pay("ps-1", 501, "paystack", "1500", "NGN", "5").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let pay_url = created["pay_url"].as_str().unwrap().to_string();
    assert!(
        pay_url.starts_with("https://checkout.paystack.com/"),
        "{pay_url}"
    );
    let initialized = s.providers.requests_to("paystack.initialize");
    assert_eq!(initialized.len(), 1);
    assert_eq!(initialized[0]["amount"], "150000", "kobo: minor units");
    assert_eq!(
        initialized[0]["reference"], "ps-1",
        "our payment id is the reference"
    );
    assert_eq!(initialized[0]["email"], "tg501@users.tally.invalid");
    // Asked again: the same page, and Paystack is not asked twice.
    let (status, again) = s.pay("ps-1", 501, "paystack", "1500", "NGN", "5").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["pay_url"], created["pay_url"]);
    assert_eq!(s.providers.requests_to("paystack.initialize").len(), 1);

    let (body, signature) = s.providers.paystack_charge("ps-1", 150_000, "NGN");
    let before = s.head().await;
    let (status, answer) = s
        .callback(
            "paystack",
            &body,
            &[("x-paystack-signature", &"0".repeat(128))],
        )
        .await;
    assert_eq!(
        (status, code(&answer).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_signature")
    );
    let (wrong, wrong_signature) = s.providers.paystack_charge("ps-1", 100_000, "NGN");
    let (status, answer) = s
        .callback(
            "paystack",
            &wrong,
            &[("x-paystack-signature", &wrong_signature)],
        )
        .await;
    assert_eq!(
        (status, code(&answer).as_str()),
        (StatusCode::CONFLICT, "payment_conflict"),
        "{answer}"
    );
    let (other_currency, other_signature) = s.providers.paystack_charge("ps-1", 150_000, "GHS");
    let (status, _) = s
        .callback(
            "paystack",
            &other_currency,
            &[("x-paystack-signature", &other_signature)],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(s.head().await, before, "refused callbacks append nothing");
    assert_eq!(s.available(501).await, "no account");

    for _ in 0..3 {
        let (status, answer) = s
            .callback("paystack", &body, &[("x-paystack-signature", &signature)])
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(
            serde_json::from_str::<Value>(&answer).unwrap()["status"],
            "succeeded"
        );
    }
    assert_eq!(s.available(501).await, "5", "credited once");

    // A Paystack callback for a YooKassa payment: refused, nothing appended.
    let (status, _) = s.pay("yk-other", 502, "yookassa", "199", "RUB", "5").await;
    assert_eq!(status, StatusCode::CREATED);
    let forged = json!({"event": "charge.success", "data": {"id": 77, "status": "success",
        "reference": "yk-other", "amount": 19_900, "currency": "RUB"}})
    .to_string();
    let forged_signature = fake_providers::hex_hmac_sha512(fake_providers::PAYSTACK_KEY, &forged);
    let before = s.head().await;
    let (status, answer) = s
        .callback(
            "paystack",
            &forged,
            &[("x-paystack-signature", &forged_signature)],
        )
        .await;
    assert_eq!(
        (status, code(&answer).as_str()),
        (StatusCode::CONFLICT, "provider_mismatch"),
        "{answer}"
    );
    assert_eq!(s.head().await, before);
    assert_eq!(s.available(502).await, "no account");
}

async fn yookassa_is_credited_only_after_the_fetched_payment_says_succeeded(s: &Stack) {
    let (status, created) = s.pay("yk-1", 601, "yookassa", "199", "RUB", "5").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(
        created["pay_url"]
            .as_str()
            .unwrap()
            .starts_with("https://yoomoney.ru/checkout/")
    );
    let made = s.providers.requests_to("yookassa.payments");
    assert_eq!(
        made[0]["amount"],
        json!({"value": "199.00", "currency": "RUB"})
    );
    assert_eq!(
        made[0]["confirmation"]["return_url"],
        "https://t.me/tally_test_bot"
    );

    // A forged notification while YooKassa says the payment is pending: nothing.
    let forged = s
        .providers
        .yookassa_notification("yk-1", "payment.succeeded");
    let before = s.head().await;
    let (status, answer) = s.callback("yookassa", &forged, &[]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["status"],
        "pending"
    );
    assert_eq!(
        s.head().await,
        before,
        "a forged notification appends nothing"
    );
    assert_eq!(s.available(601).await, "no account");

    // YooKassa says it succeeded: credited once, however often it notifies.
    s.providers.set_status("yk-1", "succeeded");
    for _ in 0..3 {
        let (status, answer) = s.callback("yookassa", &forged, &[]).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    assert_eq!(s.available(601).await, "5");

    // A refund made at YooKassa reverses it and takes the credits back.
    let refund = s.providers.yookassa_refund("yk-1");
    let notice = json!({"type": "notification", "event": "refund.succeeded",
        "object": {"id": refund, "status": "succeeded"}})
    .to_string();
    let (status, answer) = s.callback("yookassa", &notice, &[]).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["status"],
        "reversed"
    );
    assert_eq!(s.available(601).await, "0");

    // Canceled at YooKassa: the payment fails.
    s.pay("yk-2", 602, "yookassa", "699", "RUB", "20").await;
    s.providers.set_status("yk-2", "canceled");
    let (status, answer) = s
        .callback(
            "yookassa",
            &s.providers
                .yookassa_notification("yk-2", "payment.canceled"),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["status"],
        "failed"
    );

    // YooKassa says another amount was paid: refused, nothing appended.
    s.pay("yk-3", 603, "yookassa", "1499", "RUB", "50").await;
    s.providers.set_amount("yk-3", "14.99");
    s.providers.set_status("yk-3", "succeeded");
    let before = s.head().await;
    let (status, answer) = s
        .callback(
            "yookassa",
            &s.providers
                .yookassa_notification("yk-3", "payment.succeeded"),
            &[],
        )
        .await;
    assert_eq!(
        (status, code(&answer).as_str()),
        (StatusCode::CONFLICT, "payment_conflict"),
        "{answer}"
    );
    assert_eq!(s.head().await, before);
}

async fn oxapay_invoices_and_its_signed_callback_credits_once(s: &Stack) {
    let (status, created) = s.pay("ox-1", 701, "oxapay", "0.99", "USD", "5").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(
        created["pay_url"]
            .as_str()
            .unwrap()
            .starts_with("https://pay.oxapay.com/")
    );
    assert_eq!(
        s.providers.payment_for("ox-1").amount,
        "0.99",
        "the amount went as its digits"
    );
    // A currency OxaPay is not set up for: refused before anything is created.
    let before = s.head().await;
    let (status, answer) = s.pay("ox-2", 701, "oxapay", "1", "EUR", "5").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(s.head().await, before);

    let (wrong, wrong_signature) = s.providers.oxapay_callback("ox-1", "paid", "0.99", "EUR");
    let (status, _) = s
        .callback("oxapay", &wrong, &[("hmac", &wrong_signature)])
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (body, signature) = s.providers.oxapay_callback("ox-1", "paid", "0.99", "USD");
    let (status, _) = s.callback("oxapay", &body, &[("hmac", "00ff")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.head().await, before, "refused callbacks append nothing");
    for _ in 0..2 {
        let (status, answer) = s.callback("oxapay", &body, &[("hmac", &signature)]).await;
        assert_eq!((status, answer.as_str()), (StatusCode::OK, "ok"));
    }
    assert_eq!(s.available(701).await, "5");
    // OxaPay refunds are not made through Tally.
    let (status, answer) = s
        .post(
            "/v1/admin/payments/ox-1/refund",
            ADMIN,
            json!({"reason": "asked"}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("not_supported")),
        "{answer}"
    );
}

async fn a_stars_invoice_link_and_an_admin_refund_through_telegram(s: &Stack) {
    let (status, created) = s.pay("st-1", 801, "stars", "50", "XTR", "5").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["pay_url"], "https://t.me/$invoice-st-1");
    let links = s.telegram.calls_of("createInvoiceLink");
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].params["currency"], "XTR");
    assert_eq!(links[0].params["prices"][0]["amount"], 50);
    // Paid (as the bot's successful_payment records it), then 3 credits spent.
    let ledgers = &s.running.ledgers;
    let by = tally_store::Metadata::by(tally_store::Actor::new(
        tally_store::ActorKind::Webhook,
        "telegram",
    ));
    let notice = tally_providers::Notice {
        payment_id: Some("st-1".into()),
        reference: "st-1".into(),
        event: tally_providers::NoticeEvent::Paid {
            charge: "stxCHARGE1".into(),
            amount: 50.into(),
            currency: "XTR".into(),
        },
        conclusive: true,
    };
    let stars = tally_providers::Providers::new(&tally_providers::Settings::default().with(
        tally_providers::ProviderSettings::Generic(tally_providers::settings::GenericSettings {
            name: "stars".into(),
            secret: "unused-secret-0123456789".into(),
        }),
    ))
    .unwrap();
    tally_ledger::checkout::settle(ledgers, stars.get("stars").unwrap().as_ref(), notice, by)
        .await
        .unwrap();
    let (status, _) = s
        .post(
            "/v1/accounts/801/debits",
            SERVICE,
            json!({"debit_id": "d-801", "amount": "3", "reason": "image job"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let before = s.head().await;
    let (status, answer) = s
        .post(
            "/v1/admin/payments/st-1/refund",
            ADMIN,
            json!({"reason": "user asked"}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (StatusCode::CONFLICT, Some("insufficient_credits")),
        "{answer}"
    );
    assert!(
        s.telegram.calls_of("refundStarPayment").is_empty(),
        "no Stars moved"
    );
    assert_eq!(s.head().await, before);
    for _ in 0..2 {
        let (status, answer) = s
            .post(
                "/v1/admin/payments/st-1/refund",
                ADMIN,
                json!({"reason": "user asked", "allow_negative": true}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["available"], "-3");
        assert_eq!(answer["status"], "reversed");
    }
    let refunds = s.telegram.calls_of("refundStarPayment");
    assert_eq!(refunds.len(), 1, "the Stars went back once");
    assert_eq!(refunds[0].params["user_id"], 801);
    assert_eq!(
        refunds[0].params["telegram_payment_charge_id"],
        "stxCHARGE1"
    );
    assert_eq!(s.available(801).await, "-3");
}

/// A `charge.success` that is not proof by itself (no amount): Paystack is asked
/// (`/transaction/verify`) and only what it says is applied: nothing while the
/// transaction is ongoing, the credits once it says success.
async fn an_inconclusive_paystack_charge_is_verified_with_paystack(s: &Stack) {
    s.pay("ps-v", 511, "paystack", "1500", "NGN", "5").await;
    let body =
        json!({"event": "charge.success", "data": {"status": "success", "reference": "ps-v"}})
            .to_string();
    let signature = fake_providers::hex_hmac_sha512(fake_providers::PAYSTACK_KEY, &body);
    let before = s.head().await;
    let (status, answer) = s
        .callback("paystack", &body, &[("x-paystack-signature", &signature)])
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["status"],
        "pending"
    );
    assert_eq!(s.head().await, before, "Paystack says ongoing: nothing");
    s.providers.set_status("ps-v", "success");
    let (status, answer) = s
        .callback("paystack", &body, &[("x-paystack-signature", &signature)])
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        serde_json::from_str::<Value>(&answer).unwrap()["status"],
        "succeeded"
    );
    assert_eq!(s.available(511).await, "5");
}

/// With an allowlist, a YooKassa notification from elsewhere (here the loopback the
/// test sends from) is refused before anything is fetched or appended.
async fn a_yookassa_notification_from_outside_the_allowlist_is_refused(backend: Backend) {
    let s = Stack::start_with(
        backend,
        &[("yookassa", "allowlist", "185.71.76.0/27, 77.75.156.11")],
    )
    .await;
    s.pay("yk-a", 611, "yookassa", "199", "RUB", "5").await;
    s.providers.set_status("yk-a", "succeeded");
    let before = s.head().await;
    let (status, answer) = s
        .callback(
            "yookassa",
            &s.providers
                .yookassa_notification("yk-a", "payment.succeeded"),
            &[],
        )
        .await;
    assert_eq!(
        (status, code(&answer).as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_signature"),
        "{answer}"
    );
    assert!(answer.contains("allowlist"), "{answer}");
    assert_eq!(s.head().await, before);
    tally_store::testing::Fixture::finish(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_yookassa_notification_from_outside_the_allowlist_is_refused() {
    a_yookassa_notification_from_outside_the_allowlist_is_refused(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_yookassa_notification_from_outside_the_allowlist_is_refused() {
    a_yookassa_notification_from_outside_the_allowlist_is_refused(Backend::Postgres).await;
}

tally_store::on_both_backends!(
    Stack =>
    an_inconclusive_paystack_charge_is_verified_with_paystack,
    paystack_invoices_once_and_its_signed_charge_credits_once,
    yookassa_is_credited_only_after_the_fetched_payment_says_succeeded,
    oxapay_invoices_and_its_signed_callback_credits_once,
    a_stars_invoice_link_and_an_admin_refund_through_telegram,
);
