//! The API over a real socket, on a real SQLite file and a fresh Postgres database,
//! with the projectors and reactors running: the app is started by
//! `tally_app::start`, the wiring `tally serve` runs.
//!
//! One file: every case runs through one fixture (the app on a port, on both backends)
//! and shares its client helpers; splitting it would copy the fixture into each part.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tally_projections::Projector;
use tally_store::testing::TestDatabase;

const SERVICE: &str = "service-key-0123456789";
const ADMIN: &str = "admin-key-0123456789ab";
const ADMIN_BOB: &str = "admin-key-bob-0123456789";
const AUDITOR: &str = "auditor-key-0123456789";
const WEBHOOK_SECRET: &str = "webhook-secret-0123456789";
const OXAPAY_KEY: &str = "oxapay-merchant-key-0123456789";

struct Server {
    base: String,
    client: Client,
    running: tally_app::Running,
    database: TestDatabase,
    store: Arc<dyn tally_store::EventStore>,
    /// The server's audit turn (to hold it as a running audit would).
    audit_turn: Arc<tokio::sync::Semaphore>,
    projector: Arc<Projector>,
}

impl Server {
    async fn start(postgres: bool) -> Self {
        Self::start_with(postgres, tally_api::limits::Limits::default()).await
    }

    /// The app as `tally serve` wires it ([`tally_app::start`]) on port 0.
    async fn start_with(postgres: bool, limits: tally_api::limits::Limits) -> Self {
        let database = if postgres {
            TestDatabase::postgres().await
        } else {
            TestDatabase::sqlite()
        };
        let app = tally_app::App {
            api_keys: format!(
                "service:bot:{SERVICE},admin:ops-alice:{ADMIN},admin:ops-bob:{ADMIN_BOB},auditor:aud:{AUDITOR}"
            ),
            webhook_secrets: format!("stars:{WEBHOOK_SECRET},oxapay:{OXAPAY_KEY}"),
            limits,
            ..tally_app::App::new(&database.url)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = tally_app::start(app, Some(listener)).await.unwrap();
        let base = format!("http://{}", running.addr.unwrap());
        let audit_turn = running.state.as_ref().unwrap().audit_turn.clone();
        Self {
            base,
            client: Client::new(),
            store: running.store.clone(),
            projector: running.projector.clone(),
            running,
            database,
            audit_turn,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value, headers)
    }

    async fn finish(self) {
        tokio::time::timeout(Duration::from_secs(10), self.running.stop())
            .await
            .unwrap()
            .unwrap();
        self.database.drop_database().await;
    }
}

impl tally_store::testing::Fixture for Server {
    async fn start(backend: tally_store::testing::Backend) -> Self {
        Server::start(backend == tally_store::testing::Backend::Postgres).await
    }

    async fn finish(self) {
        Server::finish(self).await
    }
}

tally_store::on_both_backends!(
    Server =>
    keys_and_roles_are_enforced_with_problem_json,
    hold_then_partial_capture_shows_in_the_statement,
    bad_input_is_a_4xx_and_appends_nothing,
    a_signed_webhook_credits_once_however_often_it_comes,
    a_refund_approved_by_an_admin_returns_the_credits_once,
    a_plan_correction_is_on_record_with_before_and_after,
    every_route_answers_401_without_a_key_and_403_to_the_wrong_role,
    the_openapi_document_names_every_route_body_and_error,
    every_create_answers_a_resend_as_the_original_and_another_body_as_a_conflict,
    slots_post_once_per_destination_and_cycle_within_the_plan,
    request_ids_reach_the_events_and_metrics_are_served,
    oxapay_callbacks_as_oxapay_signs_and_retries_them,
    holds_and_refunds_are_decided_on_the_log_as_it_stands,
    a_payment_is_settled_only_by_its_own_provider_and_as_paid,
    one_charge_one_payment_and_a_second_charge_is_on_record,
    a_min_position_beyond_the_log_is_refused_at_once,
    one_audit_at_a_time_and_its_scratch_tables_go_with_it,
);

async fn keys_and_roles_are_enforced_with_problem_json(s: &Server) {
    let (status, body, headers) = s.call("GET", "/v1/accounts/1", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "unauthorized");
    assert_eq!(headers["content-type"], "application/problem+json");
    let (status, body, _) = s
        .call("GET", "/v1/accounts/1", Some("not-a-key"), None)
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (status, body, _) = s.call("GET", "/v1/accounts/1", Some(AUDITOR), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let grant = json!({"grant_id": "g1", "amount": "5", "reason": "welcome"});
    let (status, _, _) = s
        .call(
            "POST",
            "/v1/admin/accounts/1/grants",
            Some(SERVICE),
            Some(grant),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body, _) = s.call("GET", "/healthz", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, Value::String("ok".into())));
    let (status, _, _) = s.call("GET", "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

async fn hold_then_partial_capture_shows_in_the_statement(s: &Server) {
    let (status, body, _) = s
        .call(
            "PUT",
            "/v1/accounts/42",
            Some(SERVICE),
            Some(json!({"username": "bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, _) = s
        .call("PUT", "/v1/accounts/42", Some(SERVICE), Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::OK, "opening again is a no-op");
    let grant = json!({"grant_id": "g1", "amount": "10", "reason": "welcome"});
    let (status, body, _) = s
        .call(
            "POST",
            "/v1/admin/accounts/42/grants",
            Some(ADMIN),
            Some(grant.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["available"], "10.00");
    let (status, again, headers) = s
        .call(
            "POST",
            "/v1/admin/accounts/42/grants",
            Some(ADMIN),
            Some(grant),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(headers["idempotent-replay"], "true");
    assert_eq!(again["position"], body["position"], "the original answer");
    let other = json!({"grant_id": "g1", "amount": "11", "reason": "welcome"});
    let (status, conflict, _) = s
        .call(
            "POST",
            "/v1/admin/accounts/42/grants",
            Some(ADMIN),
            Some(other),
        )
        .await;
    assert_eq!(
        (status, conflict["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict"))
    );

    let place = json!({"hold_id": "job-1", "amount": "4", "ttl_seconds": 600, "reason": "render"});
    let (status, hold, _) = s
        .call("POST", "/v1/accounts/42/holds", Some(SERVICE), Some(place))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert_eq!(
        (hold["state"].as_str(), hold["available"].as_str()),
        (Some("open"), Some("6.00"))
    );
    let (status, captured, _) = s
        .call(
            "POST",
            "/v1/holds/job-1/capture",
            Some(SERVICE),
            Some(json!({"amount": "3"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    assert_eq!(captured["state"], "captured");
    assert_eq!(captured["available"], "7.00", "the unused 1 came back");
    let (status, closed, _) = s
        .call(
            "POST",
            "/v1/holds/job-1/release",
            Some(SERVICE),
            Some(json!({"reason": "late"})),
        )
        .await;
    assert_eq!(
        (status, closed["code"].as_str()),
        (StatusCode::CONFLICT, Some("hold_not_open"))
    );
    assert!(
        closed["detail"].as_str().unwrap().contains("captured"),
        "{closed}"
    );

    let position = captured["position"].as_u64().unwrap();
    let (status, page, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/42/statement?min_position={position}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let kinds: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["grant", "hold_placed", "hold_captured"]);
    let (_, first, _) = s
        .call(
            "GET",
            "/v1/accounts/42/statement?limit=2",
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 2);
    let next = first["next"].as_u64().unwrap();
    let (_, rest, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/42/statement?after={next}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(rest["entries"][0]["kind"], "hold_captured");
    assert!(rest.get("next").is_none());
    let (_, account, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/42?min_position={position}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(
        (account["available"].as_str(), account["held"].as_str()),
        (Some("7.00"), Some("0.00"))
    );
    let placed_at = page["entries"][1]["position"].as_u64().unwrap();
    let (_, then, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/42/balance?at_position={placed_at}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(
        (then["available"].as_str(), then["held"].as_str()),
        (Some("6.00"), Some("4.00"))
    );
    let (_, hold, _) = s
        .call(
            "GET",
            &format!("/v1/holds/job-1?min_position={position}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(
        (hold["state"].as_str(), hold["captured"].as_str()),
        (Some("captured"), Some("3.00"))
    );
    let (status, lagging, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/42?min_position={}", position + 1_000_000),
            Some(SERVICE),
            None,
        )
        .await;
    // A position beyond the log is refused at once, not waited for.
    assert_eq!(
        (status, lagging["code"].as_str()),
        (StatusCode::CONFLICT, Some("position_beyond_log"))
    );
}

/// One bad request per mistake a client makes, on every write route: each is a 4xx
/// with its code and a detail, and the log does not grow.
async fn every_write_route_refuses_bad_input(s: &Server) {
    let head = s.store.last_position().await.unwrap();
    let long = "x".repeat(65);
    let huge = "y".repeat(70 * 1024);
    let cases: Vec<(&str, &str, &str, Value, &str)> = vec![
        ("PUT", "/v1/accounts/0", SERVICE, json!({}), "validation"),
        ("PUT", "/v1/accounts/abc", SERVICE, json!({}), "validation"),
        (
            "PUT",
            "/v1/accounts/9",
            SERVICE,
            json!({"username": long}),
            "validation",
        ),
        (
            "PUT",
            "/v1/accounts/9",
            SERVICE,
            json!({"nickname": "x"}),
            "validation",
        ),
        (
            "PUT",
            "/v1/accounts/9",
            SERVICE,
            json!({"username": huge}),
            "validation",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            SERVICE,
            json!({"amount": "1", "ttl_seconds": 60, "reason": "x"}),
            "validation",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            SERVICE,
            json!({"hold_id": "h", "amount": "1", "ttl_seconds": -1, "reason": "x"}),
            "validation",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            SERVICE,
            json!({"hold_id": "h", "amount": "1e3", "ttl_seconds": 60, "reason": "x"}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            SERVICE,
            json!({"hold_id": "h/1", "amount": "1", "ttl_seconds": 60, "reason": "x"}),
            "validation",
        ),
        (
            "POST",
            "/v1/holds/nope/capture",
            SERVICE,
            json!({"amount": "-1"}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/holds/nope/capture",
            SERVICE,
            json!({"all": true}),
            "validation",
        ),
        (
            "POST",
            "/v1/holds/nope/release",
            SERVICE,
            json!({}),
            "validation",
        ),
        (
            "POST",
            "/v1/holds/nope/release",
            SERVICE,
            json!({"reason": "done"}),
            "hold_not_found",
        ),
        (
            "POST",
            "/v1/accounts/7/debits",
            SERVICE,
            json!({"debit_id": "d", "amount": "NaN", "reason": "x"}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/accounts/7/debits",
            SERVICE,
            json!({"debit_id": "d", "amount": "1", "reason": ""}),
            "validation",
        ),
        (
            "POST",
            "/v1/payments",
            SERVICE,
            json!({"payment_id": "p", "user_id": 7, "provider": "stars", "amount": "-5", "currency": "XTR", "purpose": {"credits": "5"}}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/payments",
            SERVICE,
            json!({"payment_id": "p", "user_id": 7, "provider": "stars", "amount": "5", "currency": "XTR", "purpose": {"credits": "5", "plan": "pro"}}),
            "validation",
        ),
        (
            "POST",
            "/v1/payments",
            SERVICE,
            json!({"payment_id": "p", "user_id": 7, "provider": "stars", "amount": "5", "currency": "XTR", "purpose": {"plan": "platinum"}}),
            "validation",
        ),
        (
            "POST",
            "/v1/payments",
            SERVICE,
            json!({"payment_id": "p", "user_id": 0, "provider": "stars", "amount": "5", "currency": "XTR", "purpose": {"credits": "5"}}),
            "validation",
        ),
        (
            "POST",
            "/v1/payments",
            SERVICE,
            json!({"payment_id": "p", "user_id": 7, "provider": "stars", "amount": "5", "currency": "XTR"}),
            "validation",
        ),
        (
            "POST",
            "/v1/refunds",
            SERVICE,
            json!({"refund_id": "r", "user_id": 7, "reference": "debit:never", "amount": "1", "reason": "x"}),
            "refund_not_allowed",
        ),
        (
            "POST",
            "/v1/refunds",
            SERVICE,
            json!({"refund_id": "r", "user_id": 7, "reference": "debit:never", "amount": "0", "reason": "x"}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/refunds",
            SERVICE,
            json!({"refund_id": "", "user_id": 7, "reference": "debit:d", "amount": "1", "reason": "x"}),
            "validation",
        ),
        (
            "PUT",
            "/v1/slots/s1",
            SERVICE,
            json!({"user_id": 7, "content": "ad", "destinations": []}),
            "validation",
        ),
        (
            "PUT",
            "/v1/slots/s1",
            SERVICE,
            json!({"user_id": 7, "content": "ad", "destinations": [{"chat_id": "x"}]}),
            "validation",
        ),
        (
            "PUT",
            "/v1/slots/s1",
            SERVICE,
            json!({"user_id": 7, "content": "", "destinations": [{"chat_id": -100}]}),
            "validation",
        ),
        (
            "POST",
            "/v1/slots/s1/attempts",
            SERVICE,
            json!({"attempt_id": "a", "cycle": 1, "chat_id": -100, "outcome": "maybe"}),
            "validation",
        ),
        (
            "POST",
            "/v1/slots/never/attempts",
            SERVICE,
            json!({"attempt_id": "a", "cycle": 1, "chat_id": -100, "outcome": "succeeded", "message_id": 1}),
            "not_found",
        ),
        (
            "POST",
            "/v1/admin/accounts/7/grants",
            ADMIN,
            json!({"grant_id": "g", "amount": "0", "reason": "x"}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/admin/accounts/7/grants",
            ADMIN,
            json!({"amount": "1", "reason": "x"}),
            "validation",
        ),
        (
            "POST",
            "/v1/admin/accounts/8/grants",
            ADMIN,
            json!({"grant_id": "g", "amount": "1", "reason": "x"}),
            "account_not_found",
        ),
        (
            "POST",
            "/v1/admin/accounts/7/adjustments",
            ADMIN,
            json!({"adjustment_id": "a", "amount": "0", "reason": "x"}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/admin/accounts/7/adjustments",
            ADMIN,
            json!({"adjustment_id": "a", "amount": "-5", "reason": "x"}),
            "insufficient_credits",
        ),
        (
            "POST",
            "/v1/admin/accounts/7/adjustments",
            ADMIN,
            json!({"adjustment_id": "a", "amount": "5"}),
            "validation",
        ),
        (
            "POST",
            "/v1/admin/accounts/7/block",
            ADMIN,
            json!({}),
            "validation",
        ),
        (
            "POST",
            "/v1/admin/accounts/7/unblock",
            ADMIN,
            json!({"reason": 5}),
            "validation",
        ),
        (
            "POST",
            "/v1/admin/subscriptions/7/correction",
            ADMIN,
            json!({"plan": "platinum", "reason": "x"}),
            "validation",
        ),
        (
            "POST",
            "/v1/admin/subscriptions/7/correction",
            ADMIN,
            json!({"plan": "basic"}),
            "validation",
        ),
        (
            "POST",
            "/v1/refunds/never/approve",
            ADMIN,
            json!({"reason": "ok"}),
            "refund_not_found",
        ),
        (
            "POST",
            "/v1/refunds/never/reject",
            ADMIN,
            json!({"reason": "no"}),
            "refund_not_found",
        ),
        (
            "POST",
            "/v1/refunds/never/reject",
            ADMIN,
            json!({}),
            "validation",
        ),
    ];
    for (method, path, key, body, code) in cases {
        let (status, problem, headers) = s.call(method, path, Some(key), Some(body.clone())).await;
        assert!(
            status.is_client_error(),
            "{method} {path} {body}: {status} {problem}"
        );
        assert_eq!(problem["code"], code, "{method} {path} {body}: {problem}");
        assert_eq!(headers["content-type"], "application/problem+json");
        assert!(
            problem["detail"].as_str().is_some_and(|d| d.len() > 5),
            "{method} {path}: {problem}"
        );
    }
    // Webhooks: signed but malformed, or naming no payment.
    for (body, code) in [
        (r#"{"payment_id":"p"}"#, "validation"),
        (
            r#"{"payment_id":"p","status":"refunded","amount":"1","currency":"XTR"}"#,
            "validation",
        ),
        (
            r#"{"payment_id":"never","status":"succeeded","amount":"1","currency":"XTR","provider_payment_id":"x"}"#,
            "payment_not_found",
        ),
        ("[1,2", "validation"),
    ] {
        let (status, problem) = post_webhook(s, body, &sign(body)).await;
        assert!(status.is_client_error(), "{body}: {status} {problem}");
        assert_eq!(problem["code"], code, "{body}: {problem}");
    }
    assert_eq!(
        s.store.last_position().await.unwrap(),
        head,
        "bad input appended to the log"
    );
}

async fn every_create_answers_a_resend_as_the_original_and_another_body_as_a_conflict(s: &Server) {
    s.call("PUT", "/v1/accounts/50", Some(SERVICE), Some(json!({})))
        .await;
    let fund = json!({"grant_id": "fund", "amount": "100", "reason": "setup"});
    s.call(
        "POST",
        "/v1/admin/accounts/50/grants",
        Some(ADMIN),
        Some(fund),
    )
    .await;
    let creates: Vec<(&str, &str, Value, Value)> = vec![
        (
            "/v1/accounts/50/holds",
            SERVICE,
            json!({"hold_id": "i-h", "amount": "5", "ttl_seconds": 600, "reason": "job"}),
            json!({"hold_id": "i-h", "amount": "6", "ttl_seconds": 600, "reason": "job"}),
        ),
        (
            "/v1/accounts/50/debits",
            SERVICE,
            json!({"debit_id": "i-d", "amount": "3", "reason": "render"}),
            json!({"debit_id": "i-d", "amount": "4", "reason": "render"}),
        ),
        (
            "/v1/payments",
            SERVICE,
            json!({"payment_id": "i-p", "user_id": 50, "provider": "stars", "amount": "100", "currency": "XTR", "purpose": {"credits": "20"}}),
            json!({"payment_id": "i-p", "user_id": 50, "provider": "stars", "amount": "100", "currency": "XTR", "purpose": {"credits": "25"}}),
        ),
        (
            "/v1/refunds",
            SERVICE,
            json!({"refund_id": "i-r", "user_id": 50, "reference": "debit:i-d", "amount": "1", "reason": "failed job"}),
            json!({"refund_id": "i-r", "user_id": 50, "reference": "debit:i-d", "amount": "2", "reason": "failed job"}),
        ),
        (
            "/v1/admin/accounts/50/grants",
            ADMIN,
            json!({"grant_id": "i-g", "amount": "1", "reason": "gift"}),
            json!({"grant_id": "i-g", "amount": "2", "reason": "gift"}),
        ),
        (
            "/v1/admin/accounts/50/adjustments",
            ADMIN,
            json!({"adjustment_id": "i-a", "amount": "1", "reason": "fix"}),
            json!({"adjustment_id": "i-a", "amount": "-1", "reason": "fix"}),
        ),
    ];
    for (path, key, body, other) in creates {
        let (status, first, headers) = s.call("POST", path, Some(key), Some(body.clone())).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {first}");
        assert!(headers.get("idempotent-replay").is_none(), "{path}");
        let head = s.store.last_position().await.unwrap();
        for _ in 0..3 {
            let (status, again, headers) =
                s.call("POST", path, Some(key), Some(body.clone())).await;
            assert_eq!(status, StatusCode::CREATED, "{path} again: {again}");
            assert_eq!(
                headers
                    .get("idempotent-replay")
                    .map(|v| v.to_str().unwrap()),
                Some("true"),
                "{path} again"
            );
            assert_eq!(
                again["position"], first["position"],
                "{path}: the original answer"
            );
        }
        let (status, conflict, _) = s.call("POST", path, Some(key), Some(other.clone())).await;
        assert_eq!(
            (status, conflict["code"].as_str()),
            (StatusCode::CONFLICT, Some("idempotency_conflict")),
            "{path} other body: {conflict}"
        );
        assert_eq!(
            s.store.last_position().await.unwrap(),
            head,
            "{path}: a re-send or a conflict appended"
        );
    }
    // Each applied once: 100 granted, 5 held, 3 debited, 1 granted, 1 adjusted.
    let head = s.store.last_position().await.unwrap();
    let (status, account, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/50?min_position={head}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert_eq!(
        (account["available"].as_str(), account["held"].as_str()),
        (Some("94.00"), Some("5.00"))
    );
}

async fn bad_input_is_a_4xx_and_appends_nothing(s: &Server) {
    s.call("PUT", "/v1/accounts/7", Some(SERVICE), Some(json!({})))
        .await;
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "POST",
            "/v1/accounts/7/holds",
            json!({"hold_id": "h", "amount": "-1", "ttl_seconds": 60, "reason": "x"}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            json!({"hold_id": "h", "amount": "0", "ttl_seconds": 60, "reason": "x"}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            json!({"hold_id": "h", "amount": "1.001", "ttl_seconds": 60, "reason": "x"}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            json!({"hold_id": "h", "amount": "99999999999", "ttl_seconds": 60, "reason": "x"}),
            "invalid_amount",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            json!({"hold_id": "h", "amount": 5, "ttl_seconds": 60, "reason": "x"}),
            "validation",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            json!({"hold_id": "h", "amount": "1", "ttl_seconds": 60, "reason": "x", "extra": 1}),
            "validation",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            json!({"hold_id": "h", "amount": "1", "ttl_seconds": 0, "reason": "x"}),
            "validation",
        ),
        (
            "POST",
            "/v1/accounts/7/holds",
            json!({"hold_id": "", "amount": "1", "ttl_seconds": 60, "reason": "x"}),
            "validation",
        ),
        (
            "POST",
            "/v1/accounts/7/debits",
            json!({"debit_id": "d", "amount": "1", "reason": "x"}),
            "insufficient_credits",
        ),
        (
            "POST",
            "/v1/accounts/99999999999999999999/debits",
            json!({"debit_id": "d", "amount": "1", "reason": "x"}),
            "validation",
        ),
        (
            "POST",
            "/v1/accounts/-5/debits",
            json!({"debit_id": "d", "amount": "1", "reason": "x"}),
            "validation",
        ),
        (
            "POST",
            "/v1/accounts/8/debits",
            json!({"debit_id": "d", "amount": "1", "reason": "x"}),
            "account_not_found",
        ),
        (
            "POST",
            "/v1/holds/nope/capture",
            json!({}),
            "hold_not_found",
        ),
        (
            "GET",
            "/v1/accounts/7/statement?limit=100000",
            Value::Null,
            "validation",
        ),
        (
            "GET",
            "/v1/accounts/7/balance?at=yesterday",
            Value::Null,
            "validation",
        ),
    ];
    for (method, path, body, code) in cases {
        let body = (!body.is_null()).then_some(body);
        let (status, problem, _) = s.call(method, path, Some(SERVICE), body.clone()).await;
        assert!(
            status.is_client_error(),
            "{method} {path} {body:?}: {status} {problem}"
        );
        assert_eq!(problem["code"], code, "{method} {path} {body:?}: {problem}");
        assert!(!problem["detail"].as_str().unwrap_or("").is_empty());
    }
    // Malformed JSON.
    let response = s
        .client
        .post(format!("{}/v1/accounts/7/holds", s.base))
        .bearer_auth(SERVICE)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    every_write_route_refuses_bad_input(s).await;
    // Nothing of it was appended: the account has only its opening.
    let (_, account, _) = s
        .call("GET", "/v1/accounts/7?min_position=1", Some(SERVICE), None)
        .await;
    let (_, page, _) = s
        .call("GET", "/v1/accounts/7/statement", Some(SERVICE), None)
        .await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 0, "{page}");
    assert_eq!(account["available"], "0.00");
}

fn sign(body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

async fn post_webhook(s: &Server, body: &str, signature: &str) -> (StatusCode, Value) {
    let response = s
        .client
        .post(format!("{}/v1/webhooks/stars", s.base))
        .header("x-tally-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn a_signed_webhook_credits_once_however_often_it_comes(s: &Server) {
    let create = json!({"payment_id": "p1", "user_id": 77, "provider": "stars", "amount": "100", "currency": "XTR", "purpose": {"credits": "20"}});
    let (status, payment, _) = s
        .call("POST", "/v1/payments", Some(SERVICE), Some(create.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["status"], "pending");
    let created_at = payment["position"].as_u64().unwrap();
    let (status, _, headers) = s
        .call("POST", "/v1/payments", Some(SERVICE), Some(create))
        .await;
    assert_eq!(
        (status, headers["idempotent-replay"].to_str().unwrap()),
        (StatusCode::CREATED, "true")
    );
    let other = json!({"payment_id": "p1", "user_id": 77, "provider": "stars", "amount": "200", "currency": "XTR", "purpose": {"credits": "20"}});
    let (status, conflict, _) = s
        .call("POST", "/v1/payments", Some(SERVICE), Some(other))
        .await;
    assert_eq!(
        (status, conflict["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict"))
    );

    let body = r#"{"payment_id":"p1","status":"succeeded","amount":"100","currency":"XTR","provider_payment_id":"tg-1"}"#;
    let (status, problem) = post_webhook(s, body, "sha256=00").await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_signature"))
    );
    let tampered = body.replace("100", "900");
    let (status, _) = post_webhook(s, &tampered, &sign(body)).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a signature covers the body it came with"
    );
    let (_, nothing, _) = s
        .call(
            "GET",
            &format!("/v1/payments/p1?min_position={created_at}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(
        nothing["status"], "pending",
        "a bad signature appends nothing"
    );

    let mut last = 0;
    for _ in 0..100 {
        let (status, answer) = post_webhook(s, body, &sign(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        last = last.max(answer["position"].as_u64().unwrap());
    }
    let (_, account, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/77?min_position={last}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(account["available"], "20.00", "credited once: {account}");
    let (_, page, _) = s
        .call("GET", "/v1/accounts/77/statement", Some(SERVICE), None)
        .await;
    let deposits = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "deposit")
        .count();
    assert_eq!(deposits, 1);
    let (_, payment, _) = s
        .call(
            "GET",
            &format!("/v1/payments/p1?min_position={last}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(
        (
            payment["status"].as_str(),
            payment["provider_payment_id"].as_str()
        ),
        (Some("succeeded"), Some("tg-1"))
    );
    // The same payment id with another amount: a conflict, never a second credit.
    let other = r#"{"payment_id":"p1","status":"succeeded","amount":"50","currency":"XTR","provider_payment_id":"tg-1"}"#;
    let (status, conflict) = post_webhook(s, other, &sign(other)).await;
    assert_eq!(
        (status, conflict["code"].as_str()),
        (StatusCode::CONFLICT, Some("payment_conflict"))
    );
}

async fn a_refund_approved_by_an_admin_returns_the_credits_once(s: &Server) {
    s.call("PUT", "/v1/accounts/90", Some(SERVICE), Some(json!({})))
        .await;
    let grant = json!({"grant_id": "g90", "amount": "10", "reason": "welcome"});
    s.call(
        "POST",
        "/v1/admin/accounts/90/grants",
        Some(ADMIN),
        Some(grant),
    )
    .await;
    let debit = json!({"debit_id": "d1", "amount": "6", "reason": "post"});
    let (status, body, _) = s
        .call("POST", "/v1/accounts/90/debits", Some(SERVICE), Some(debit))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let too_much = json!({"refund_id": "r0", "user_id": 90, "reference": "debit:d1", "amount": "7", "reason": "failed"});
    let (status, problem, _) = s
        .call("POST", "/v1/refunds", Some(SERVICE), Some(too_much))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("refund_not_allowed"))
    );
    let ask = json!({"refund_id": "r1", "user_id": 90, "reference": "debit:d1", "amount": "4", "reason": "half failed"});
    let (status, requested, _) = s
        .call("POST", "/v1/refunds", Some(SERVICE), Some(ask))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{requested}");
    let position = requested["position"].as_u64().unwrap();
    let (_, queue, _) = s
        .call(
            "GET",
            &format!("/v1/refunds?status=requested&min_position={position}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(queue["refunds"][0]["refund_id"], "r1", "{queue}");
    assert_eq!(queue["refunds"][0]["requested_by"], "bot");
    let (status, approved, _) = s
        .call(
            "POST",
            "/v1/refunds/r1/approve",
            Some(ADMIN),
            Some(json!({"reason": "log confirms"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    let position = approved["position"].as_u64().unwrap();
    let (_, account, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/90?min_position={position}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(account["available"], "8.00", "10 - 6 + 4");
    let (status, again, _) = s
        .call(
            "POST",
            "/v1/refunds/r1/approve",
            Some(ADMIN),
            Some(json!({"reason": "log confirms"})),
        )
        .await;
    assert!(
        status.is_success() || status == StatusCode::CONFLICT,
        "{status} {again}"
    );
    let (_, account, _) = s.call("GET", "/v1/accounts/90", Some(SERVICE), None).await;
    assert_eq!(account["available"], "8.00", "credits back once");
    let (_, done, _) = s
        .call(
            "GET",
            &format!("/v1/refunds?status=approved&min_position={position}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(done["refunds"][0]["decided_by"], "ops-alice");

    // An admin files a request on the user's behalf: another admin must approve it.
    let ask = json!({"refund_id": "r2", "user_id": 90, "reference": "debit:d1", "amount": "2", "reason": "support ticket 7"});
    let (status, requested, _) = s.call("POST", "/v1/refunds", Some(ADMIN), Some(ask)).await;
    assert_eq!(status, StatusCode::CREATED, "{requested}");
    let head = s.store.last_position().await.unwrap();
    let (status, problem, _) = s
        .call(
            "POST",
            "/v1/refunds/r2/approve",
            Some(ADMIN),
            Some(json!({"reason": "mine"})),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("self_approval")),
        "{problem}"
    );
    assert_eq!(
        s.store.last_position().await.unwrap(),
        head,
        "refused: nothing appended"
    );
    let (status, approved, _) = s
        .call(
            "POST",
            "/v1/refunds/r2/approve",
            Some(ADMIN_BOB),
            Some(json!({"reason": "ticket checked"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["available"], "10.00", "8 + 2");
    let position = approved["position"].as_u64().unwrap();
    let (_, done, _) = s
        .call(
            "GET",
            &format!("/v1/refunds?status=approved&min_position={position}"),
            Some(ADMIN),
            None,
        )
        .await;
    let r2 = done["refunds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["refund_id"] == "r2")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (r2["requested_by"].as_str(), r2["decided_by"].as_str()),
        (Some("ops-alice"), Some("ops-bob")),
        "{done}"
    );
}

async fn a_plan_correction_is_on_record_with_before_and_after(s: &Server) {
    s.call("PUT", "/v1/accounts/91", Some(SERVICE), Some(json!({})))
        .await;
    let create = json!({"payment_id": "plan-1", "user_id": 91, "provider": "stars", "amount": "250", "currency": "XTR", "purpose": {"plan": "basic"}});
    let (status, body, _) = s
        .call("POST", "/v1/payments", Some(SERVICE), Some(create))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let paid = r#"{"payment_id":"plan-1","status":"succeeded","amount":"250","currency":"XTR","provider_payment_id":"tg-9"}"#;
    let (status, answer) = post_webhook(s, paid, &sign(paid)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let position = answer["position"].as_u64().unwrap();
    let (_, before, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/91/subscription?min_position={position}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(
        (before["plan"].as_str(), before["slots"].as_i64()),
        (Some("basic"), Some(1)),
        "{before}"
    );
    let fix = json!({"plan": "pro", "reason": "paid for pro, got basic"});
    let (status, fixed, _) = s
        .call(
            "POST",
            "/v1/admin/subscriptions/91/correction",
            Some(ADMIN),
            Some(fix),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fixed}");
    let position = fixed["position"].as_u64().unwrap();
    let (_, after, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/91/subscription?min_position={position}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(
        (after["plan"].as_str(), after["slots"].as_i64()),
        (Some("pro"), Some(3))
    );
    let correction = &after["corrections"][0];
    assert_eq!(
        (
            correction["plan_before"].as_str(),
            correction["slots_before"].as_i64(),
            correction["plan_after"].as_str(),
            correction["slots_after"].as_i64()
        ),
        (Some("basic"), Some(1), Some("pro"), Some(3))
    );
    assert_eq!(
        (correction["admin"].as_str(), correction["reason"].as_str()),
        (Some("ops-alice"), Some("paid for pro, got basic"))
    );
    let (_, account, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/91?min_position={position}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(account["subscription"]["slots"], 3);
    let unknown = json!({"plan": "platinum", "reason": "x"});
    let (status, problem, _) = s
        .call(
            "POST",
            "/v1/admin/subscriptions/91/correction",
            Some(ADMIN),
            Some(unknown),
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation"))
    );
}

/// Which key a route needs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Needs {
    Nothing,
    Service,
    Admin,
    Auditor,
    ServiceOrAdmin,
}

/// Every route of the API (API.md plus the public ones), as the OpenAPI document
/// names it.
const ROUTES: &[(&str, &str, Needs)] = &[
    ("GET", "/healthz", Needs::Nothing),
    ("GET", "/readyz", Needs::Nothing),
    ("GET", "/metrics", Needs::Nothing),
    ("GET", "/v1/openapi.json", Needs::Nothing),
    ("POST", "/v1/webhooks/{provider}", Needs::Nothing),
    ("PUT", "/v1/accounts/{user_id}", Needs::Service),
    ("GET", "/v1/accounts/{user_id}", Needs::Service),
    ("GET", "/v1/accounts/{user_id}/statement", Needs::Service),
    ("GET", "/v1/accounts/{user_id}/balance", Needs::Service),
    ("GET", "/v1/accounts/{user_id}/subscription", Needs::Service),
    ("POST", "/v1/accounts/{user_id}/holds", Needs::Service),
    ("GET", "/v1/holds/{hold_id}", Needs::Service),
    ("POST", "/v1/holds/{hold_id}/capture", Needs::Service),
    ("POST", "/v1/holds/{hold_id}/release", Needs::Service),
    ("POST", "/v1/accounts/{user_id}/debits", Needs::Service),
    ("POST", "/v1/payments", Needs::Service),
    ("GET", "/v1/payments/{payment_id}", Needs::Service),
    ("POST", "/v1/refunds", Needs::ServiceOrAdmin),
    ("PUT", "/v1/slots/{slot_id}", Needs::Service),
    ("POST", "/v1/slots/{slot_id}/attempts", Needs::Service),
    ("GET", "/v1/slots/due", Needs::Service),
    ("POST", "/v1/admin/accounts/{user_id}/grants", Needs::Admin),
    (
        "POST",
        "/v1/admin/payments/{payment_id}/refund",
        Needs::Admin,
    ),
    ("GET", "/v1/admin/payments/reconciliation", Needs::Admin),
    ("PUT", "/v1/admin/accounts/{user_id}/alert", Needs::Admin),
    ("POST", "/v1/admin/webhooks", Needs::Admin),
    ("GET", "/v1/admin/webhooks", Needs::Admin),
    (
        "POST",
        "/v1/admin/webhooks/{endpoint_id}/disable",
        Needs::Admin,
    ),
    (
        "POST",
        "/v1/admin/webhooks/{endpoint_id}/rotate-secret",
        Needs::Admin,
    ),
    (
        "GET",
        "/v1/admin/webhooks/{endpoint_id}/deliveries",
        Needs::Admin,
    ),
    (
        "POST",
        "/v1/admin/webhooks/{endpoint_id}/replay",
        Needs::Admin,
    ),
    (
        "POST",
        "/v1/admin/accounts/{user_id}/adjustments",
        Needs::Admin,
    ),
    ("POST", "/v1/admin/accounts/{user_id}/block", Needs::Admin),
    ("POST", "/v1/admin/accounts/{user_id}/unblock", Needs::Admin),
    (
        "POST",
        "/v1/admin/subscriptions/{user_id}/correction",
        Needs::Admin,
    ),
    ("GET", "/v1/refunds", Needs::Admin),
    ("POST", "/v1/refunds/{refund_id}/approve", Needs::Admin),
    ("POST", "/v1/refunds/{refund_id}/reject", Needs::Admin),
    ("GET", "/v1/admin/stats", Needs::Admin),
    ("GET", "/v1/admin/campaigns", Needs::Admin),
    ("GET", "/v1/admin/payments/duplicate-charges", Needs::Admin),
    ("GET", "/v1/audit/accounts/{user_id}/replay", Needs::Auditor),
    ("GET", "/v1/audit/verify", Needs::Auditor),
    ("GET", "/v1/events", Needs::Auditor),
];

/// A route's path with its parameters filled in.
fn concrete(template: &str) -> String {
    let path = template
        .replace("{user_id}", "1")
        .replace("{hold_id}", "h")
        .replace("{payment_id}", "p")
        .replace("{refund_id}", "r")
        .replace("{slot_id}", "s")
        .replace("{provider}", "stars");
    match path.as_str() {
        "/v1/slots/due" => format!("{path}?cycle=1"),
        _ => path,
    }
}

async fn every_route_answers_401_without_a_key_and_403_to_the_wrong_role(s: &Server) {
    use Needs::*;
    for &(method, template, needs) in ROUTES.iter().filter(|r| r.2 != Nothing) {
        let path = concrete(template);
        let body = (method != "GET").then(|| json!({}));
        let (status, _, _) = s.call(method, &path, None, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a key"
        );
        for (key, role) in [(SERVICE, Service), (ADMIN, Admin), (AUDITOR, Auditor)] {
            let allowed = role == needs
                || (role == Admin && needs == Auditor)
                || (needs == ServiceOrAdmin && matches!(role, Service | Admin));
            let (status, problem, _) = s.call(method, &path, Some(key), body.clone()).await;
            match allowed {
                true => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} with its role: {status} {problem}"
                ),
                false => assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {problem}"),
            }
        }
    }
    // The public routes answer without a key (a webhook without a signature: 401
    // invalid_signature, not unauthorized).
    for &(method, template, _) in ROUTES.iter().filter(|r| r.2 == Nothing) {
        let path = concrete(template);
        let body = (method != "GET").then(|| json!({}));
        let (status, problem, _) = s.call(method, &path, None, body).await;
        match method {
            "GET" => assert_eq!(status, StatusCode::OK, "{method} {path}"),
            _ => assert_eq!(
                (status, problem["code"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("invalid_signature")),
                "{method} {path}"
            ),
        }
    }
}

async fn the_openapi_document_names_every_route_body_and_error(s: &Server) {
    let (status, document, headers) = s.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        document["openapi"].as_str().unwrap_or("").starts_with("3."),
        "{document}"
    );
    let paths = document["paths"].as_object().expect("paths");
    let mut documented = std::collections::BTreeSet::new();
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: std::collections::BTreeSet<_> = ROUTES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    let unknown: Vec<_> = documented.difference(&served).collect();
    assert!(
        unknown.is_empty(),
        "documented but not in the route table: {unknown:?}"
    );
    for &(method, template, needs) in ROUTES {
        let operation = &paths[template][method.to_lowercase()];
        let responses = operation["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {template}: no success response"
        );
        if needs != Needs::Nothing {
            for status in ["401", "403", "422"] {
                let problem = &responses[status]["content"]["application/problem+json"];
                assert!(
                    problem["schema"]["$ref"]
                        .as_str()
                        .is_some_and(|r| r.ends_with("/Problem")),
                    "{method} {template}: {status} is not documented as a Problem: {responses:?}"
                );
            }
            let role = match needs {
                Needs::Admin | Needs::ServiceOrAdmin => "admin",
                Needs::Auditor => "auditor",
                _ => "service",
            };
            let security = operation["security"].as_array().unwrap();
            assert!(
                security.iter().any(|s| s.get(role).is_some()),
                "{method} {template}: security should name {role}: {operation}"
            );
        }
        if method != "GET" {
            assert!(
                operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                    .is_string(),
                "{method} {template}: no request body schema"
            );
        }
    }
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for name in [
        "Problem",
        "PlaceBody",
        "HoldBody",
        "AccountBody",
        "WebhookBody",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    // A request body's required fields are those the route refuses without.
    let place = &schemas["PlaceBody"]["required"];
    for field in ["hold_id", "amount", "ttl_seconds", "reason"] {
        assert!(place.as_array().unwrap().contains(&json!(field)), "{place}");
    }
}

async fn slots_post_once_per_destination_and_cycle_within_the_plan(s: &Server) {
    let create = json!({"payment_id": "plan-s", "user_id": 92, "provider": "stars", "amount": "250", "currency": "XTR", "purpose": {"plan": "basic"}});
    s.call("POST", "/v1/payments", Some(SERVICE), Some(create))
        .await;
    let paid = r#"{"payment_id":"plan-s","status":"succeeded","amount":"250","currency":"XTR","provider_payment_id":"tg-s"}"#;
    let (status, _) = post_webhook(s, paid, &sign(paid)).await;
    assert_eq!(status, StatusCode::OK);
    let slot = json!({"user_id": 92, "content": "Buy stickers", "destinations": [{"chat_id": -1001}, {"chat_id": -1002, "topic_id": 7}]});
    let (status, body, _) = s
        .call("PUT", "/v1/slots/s1", Some(SERVICE), Some(slot.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, _) = s
        .call("PUT", "/v1/slots/s1", Some(SERVICE), Some(slot))
        .await;
    assert_eq!(status, StatusCode::OK);
    let second = json!({"user_id": 92, "content": "More", "destinations": [{"chat_id": -1003}]});
    let (status, body, _) = s
        .call("PUT", "/v1/slots/s2", Some(SERVICE), Some(second))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let position = body["position"].as_u64().unwrap();

    let (_, due, _) = s
        .call(
            "GET",
            &format!("/v1/slots/due?cycle=1&min_position={position}"),
            Some(SERVICE),
            None,
        )
        .await;
    let due_slots: Vec<&str> = due["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["slot_id"].as_str().unwrap())
        .collect();
    assert_eq!(due_slots, ["s1"], "basic has one slot: {due}");
    assert_eq!(due["slots"][0]["destinations"].as_array().unwrap().len(), 2);

    let beyond = json!({"attempt_id": "x1", "cycle": 1, "chat_id": -1003, "outcome": "succeeded", "message_id": 5});
    let (status, problem, _) = s
        .call("POST", "/v1/slots/s2/attempts", Some(SERVICE), Some(beyond))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("slot_not_active")),
        "{problem}"
    );
    let failed = json!({"attempt_id": "a1", "cycle": 1, "chat_id": -1001, "outcome": "failed", "error_kind": "rate_limited", "retry_after": 3});
    let (status, body, _) = s
        .call("POST", "/v1/slots/s1/attempts", Some(SERVICE), Some(failed))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let posted = json!({"attempt_id": "a2", "cycle": 1, "chat_id": -1001, "outcome": "succeeded", "message_id": 10});
    let (status, first, _) = s
        .call(
            "POST",
            "/v1/slots/s1/attempts",
            Some(SERVICE),
            Some(posted.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, headers) = s
        .call("POST", "/v1/slots/s1/attempts", Some(SERVICE), Some(posted))
        .await;
    assert_eq!(
        (
            status,
            headers
                .get("idempotent-replay")
                .map(|v| v.to_str().unwrap())
        ),
        (StatusCode::CREATED, Some("true"))
    );
    let twice = json!({"attempt_id": "a3", "cycle": 1, "chat_id": -1001, "outcome": "succeeded", "message_id": 11});
    let (status, problem, _) = s
        .call("POST", "/v1/slots/s1/attempts", Some(SERVICE), Some(twice))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_posted"))
    );
    let position = first["position"].as_u64().unwrap();
    let (_, due, _) = s
        .call(
            "GET",
            &format!("/v1/slots/due?cycle=1&min_position={position}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(
        due["slots"][0]["destinations"],
        json!([{"chat_id": -1002, "topic_id": 7}]),
        "{due}"
    );
    let (_, next_cycle, _) = s
        .call("GET", "/v1/slots/due?cycle=2", Some(SERVICE), None)
        .await;
    assert_eq!(
        next_cycle["slots"][0]["destinations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, problem, _) = s.call("GET", "/v1/slots/due", Some(SERVICE), None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation"))
    );
    // Due slots come in pages: `limit` slots and the `next` cursor.
    let create = json!({"payment_id": "plan-e", "user_id": 98, "provider": "stars", "amount": "400", "currency": "XTR", "purpose": {"plan": "enterprise"}});
    s.call("POST", "/v1/payments", Some(SERVICE), Some(create))
        .await;
    let paid = r#"{"payment_id":"plan-e","status":"succeeded","amount":"400","currency":"XTR","provider_payment_id":"tg-e"}"#;
    let (status, _) = post_webhook(s, paid, &sign(paid)).await;
    assert_eq!(status, StatusCode::OK);
    let mut position = 0;
    for n in 1..=4 {
        let slot = json!({"user_id": 98, "content": format!("ad {n}"), "destinations": [{"chat_id": -2000 - n}]});
        let (status, body, _) = s
            .call("PUT", &format!("/v1/slots/e{n}"), Some(SERVICE), Some(slot))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        position = body["position"].as_u64().unwrap();
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    for page in 0.. {
        let (status, due, _) = s
            .call(
                "GET",
                &format!("/v1/slots/due?cycle=9&limit=2&after={after}&min_position={position}"),
                Some(SERVICE),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{due}");
        let slots = due["slots"].as_array().unwrap();
        assert!(slots.len() <= 2, "{due}");
        seen.extend(
            slots
                .iter()
                .map(|d| d["slot_id"].as_str().unwrap().to_string()),
        );
        match due["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
        assert!(page < 5, "pages never end: {due}");
    }
    assert_eq!(
        seen,
        ["e1", "e2", "e3", "e4", "s1"],
        "every due slot once, in order"
    );
    let (status, _, _) = s
        .call("GET", "/v1/slots/due?cycle=9&limit=0", Some(SERVICE), None)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn request_ids_reach_the_events_and_metrics_are_served(s: &Server) {
    let id = "0196a4d2-7c1e-7000-8000-000000000042";
    let response = s
        .client
        .put(format!("{}/v1/accounts/93", s.base))
        .bearer_auth(SERVICE)
        .header("x-request-id", id)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], id, "echoed");
    let (_, _, headers) = s.call("GET", "/healthz", None, None).await;
    let fresh = headers["x-request-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(fresh).is_ok(),
        "one is made when none is given"
    );
    // The log is readable once every older transaction in the cluster has ended
    // (gap-safe reads on Postgres): ask until it shows the event.
    let mut opened = None;
    for _ in 0..250 {
        let (_, page, _) = s
            .call("GET", "/v1/events?limit=1000", Some(AUDITOR), None)
            .await;
        opened = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["stream_id"] == "account-93")
            .cloned();
        if opened.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened = opened.expect("the account's event");
    assert_eq!(opened["metadata"]["correlation_id"], id);
    assert_eq!(opened["metadata"]["actor"]["id"], "bot");

    let (status, text, _) = s.call("GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap();
    assert!(text.contains("tally_http_requests_total"), "{text}");
    assert!(text.contains(r#"route="/v1/accounts/{user_id}""#), "{text}");
    assert!(text.contains("tally_projection_lag_events"), "{text}");
    assert!(
        text.contains(r#"tally_commands_total{aggregate="account",outcome="applied"}"#),
        "{text}"
    );
    assert!(text.contains("tally_append_seconds"), "{text}");
    // An unknown method or path is labelled `other`, never by its raw value.
    let response = s
        .client
        .request(
            reqwest::Method::from_bytes(b"BREW").unwrap(),
            format!("{}/no/such/path-12345", s.base),
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
    let (_, text, _) = s.call("GET", "/metrics", None, None).await;
    let text = text.as_str().unwrap();
    assert!(
        !text.contains("BREW") && !text.contains("path-12345"),
        "{text}"
    );
    assert!(text.contains(r#"method="other""#), "{text}");
    promtool_finds_no_problem(text);
}

/// `promtool check metrics` (Debian's `prometheus`) finds nothing to say: every metric
/// has HELP text and a lint-clean name. Required in CI (`.ci/run` installs it); a
/// machine without it skips this check and says so.
fn promtool_finds_no_problem(text: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is missing in CI: {error} (apt-get install prometheus)"
            );
            eprintln!("promtool not found ({error}): /metrics lint not checked");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_answer_429_per_key_and_per_address_and_append_nothing() {
    use tally_api::limits::{Limit, Limits};
    // Three requests at once, then (practically) no refill.
    let tight = Limit {
        burst: 3,
        per_second: 0.001,
    };
    let s = Server::start_with(
        false,
        Limits {
            per_key: Some(tight),
            per_ip: Some(tight),
        },
    )
    .await;
    for _ in 0..3 {
        let (status, _, _) = s
            .call("GET", "/v1/accounts/1/balance", Some(SERVICE), None)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let open = json!({"username": "late"});
    let (status, problem, headers) = s
        .call("PUT", "/v1/accounts/1", Some(SERVICE), Some(open))
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
        "{problem}"
    );
    assert_eq!(headers["content-type"], "application/problem+json");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    // Another key has its own bucket; the refused write appended nothing.
    let (status, events, _) = s.call("GET", "/v1/events", Some(AUDITOR), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events["events"], json!([]), "{events}");
    // Without a key, the client address is the bucket.
    for _ in 0..3 {
        let (status, _, _) = s.call("GET", "/healthz", None, None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, problem, _) = s.call("GET", "/healthz", None, None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    let (status, _, _) = s.call("GET", "/v1/admin/stats", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    // Made-up keys buy no requests: they count against the address's bucket (empty
    // now), before any key lookup.
    for n in 0..3 {
        let (status, problem, _) = s
            .call(
                "GET",
                "/v1/accounts/1/balance",
                Some(&format!("junk-key-{n}-0123456789")),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    }
    // Spacing variants of a key are that key, with its (empty) bucket.
    let response = s
        .client
        .get(format!("{}/v1/accounts/1/balance", s.base))
        .header("authorization", format!("  Bearer   {SERVICE}  "))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    s.finish().await;
}

async fn oxapay_callback(s: &Server, body: &str, key: &str) -> (StatusCode, String) {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha512>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let hmac: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let response = s
        .client
        .post(format!("{}/v1/webhooks/oxapay", s.base))
        .header("HMAC", hmac)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

async fn oxapay_callbacks_as_oxapay_signs_and_retries_them(s: &Server) {
    let create = json!({"payment_id": "ox1", "user_id": 94, "provider": "oxapay", "amount": "9.99", "currency": "USD", "purpose": {"credits": "50"}});
    let (status, body, _) = s
        .call("POST", "/v1/payments", Some(SERVICE), Some(create))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let paying = r#"{"track_id":"151811887","status":"Paying","amount":9.99,"currency":"USD","order_id":"ox1"}"#;
    assert_eq!(
        oxapay_callback(s, paying, OXAPAY_KEY).await,
        (StatusCode::OK, "ok".to_string())
    );
    let paid = r#"{"track_id":"151811887","status":"Paid","amount":9.99,"currency":"USD","order_id":"ox1","txs":[{"currency":"USDT","amount":9.99}]}"#;
    let (status, _) = oxapay_callback(s, paid, "another-merchant-key-000").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "signed with another key");
    for _ in 0..5 {
        assert_eq!(
            oxapay_callback(s, paid, OXAPAY_KEY).await,
            (StatusCode::OK, "ok".to_string())
        );
    }
    let mut account = Value::Null;
    for _ in 0..250 {
        let (_, a, _) = s.call("GET", "/v1/accounts/94", Some(SERVICE), None).await;
        account = a;
        if account["available"] == "50.00" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(account["available"], "50.00", "credited once: {account}");
    let (_, page, _) = s
        .call(
            "GET",
            &format!(
                "/v1/accounts/94/statement?min_position={}",
                account["position"]
            ),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1, "{page}");
    let (_, payment, _) = s
        .call(
            "GET",
            &format!("/v1/payments/ox1?min_position={}", account["position"]),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(
        (
            payment["status"].as_str(),
            payment["provider_payment_id"].as_str()
        ),
        (Some("succeeded"), Some("151811887"))
    );
    let unknown =
        r#"{"track_id":"1","status":"Paid","amount":1,"currency":"USD","order_id":"nope"}"#;
    let (status, _) = oxapay_callback(s, unknown, OXAPAY_KEY).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Issue 12's cases over the socket: a hold id is one hold in the whole ledger; a
/// second refund over a spend already refunded is refused with its credits and stays
/// requested; a re-send answers the original however long ago, even for a hold the
/// account's state has forgotten; the same id racing itself in one batch is one write
/// and its replays, never a 422.
async fn holds_and_refunds_are_decided_on_the_log_as_it_stands(s: &Server) {
    for user in [300, 301] {
        s.call(
            "PUT",
            &format!("/v1/accounts/{user}"),
            Some(SERVICE),
            Some(json!({})),
        )
        .await;
        let grant = json!({"grant_id": format!("g{user}"), "amount": "100", "reason": "start"});
        let (status, body, _) = s
            .call(
                "POST",
                &format!("/v1/admin/accounts/{user}/grants"),
                Some(ADMIN),
                Some(grant),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // One hold id, one hold.
    let place =
        json!({"hold_id": "job-300", "amount": "5", "ttl_seconds": 600, "reason": "render"});
    let (status, body, _) = s
        .call(
            "POST",
            "/v1/accounts/300/holds",
            Some(SERVICE),
            Some(place.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let head = s.store.last_position().await.unwrap();
    let (status, problem, _) = s
        .call(
            "POST",
            "/v1/accounts/301/holds",
            Some(SERVICE),
            Some(place.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "idempotency_conflict", "{problem}");
    assert_eq!(
        s.store.last_position().await.unwrap(),
        head,
        "nothing appended"
    );
    let (status, captured, _) = s
        .call(
            "POST",
            "/v1/holds/job-300/capture",
            Some(SERVICE),
            Some(json!({"amount": "3"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    assert_eq!(captured["user_id"], 300, "{captured}");

    // More closed holds than the state keeps: job-300 is forgotten by the state.
    for n in 0..20 {
        let hold = format!("later-{n}");
        let body = json!({"hold_id": hold, "amount": "1", "ttl_seconds": 600, "reason": "job"});
        let (status, _, _) = s
            .call("POST", "/v1/accounts/300/holds", Some(SERVICE), Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _, _) = s
            .call(
                "POST",
                &format!("/v1/holds/{hold}/release"),
                Some(SERVICE),
                Some(json!({"reason": "failed"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let head = s.store.last_position().await.unwrap();
    let (status, again, headers) = s
        .call(
            "POST",
            "/v1/holds/job-300/capture",
            Some(SERVICE),
            Some(json!({"amount": "3"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "an old capture re-sent: {again}");
    assert_eq!(headers.get("idempotent-replay").unwrap(), "true");
    assert_eq!(
        (again["state"].as_str(), again["captured"].as_str()),
        (Some("captured"), Some("3.00")),
        "{again}"
    );
    assert_eq!(again["position"], captured["position"], "{again}");
    let (status, again, headers) = s
        .call("POST", "/v1/accounts/300/holds", Some(SERVICE), Some(place))
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "an old placement re-sent: {again}"
    );
    assert_eq!(headers.get("idempotent-replay").unwrap(), "true");
    assert_eq!(again["amount"], "5.00", "{again}");
    let (status, again, headers) = s
        .call(
            "POST",
            "/v1/holds/later-0/release",
            Some(SERVICE),
            Some(json!({"reason": "failed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "an old release re-sent: {again}");
    assert_eq!(headers.get("idempotent-replay").unwrap(), "true");
    assert_eq!(again["state"], "released", "{again}");
    assert_eq!(
        s.store.last_position().await.unwrap(),
        head,
        "replays append nothing"
    );

    // The same debit id racing itself: one write, the others its replays.
    let debit = json!({"debit_id": "race", "amount": "2", "reason": "job"});
    let sends = (0..8).map(|_| {
        s.call(
            "POST",
            "/v1/accounts/301/debits",
            Some(SERVICE),
            Some(debit.clone()),
        )
    });
    let answers = futures::future::join_all(sends).await;
    let fresh = answers
        .iter()
        .filter(|(st, _, h)| *st == StatusCode::CREATED && h.get("idempotent-replay").is_none())
        .count();
    let replays = answers
        .iter()
        .filter(|(st, _, h)| *st == StatusCode::CREATED && h.get("idempotent-replay").is_some())
        .count();
    assert_eq!(
        (fresh, replays),
        (1, 7),
        "{:?}",
        answers
            .iter()
            .map(|a| (a.0, a.1.clone()))
            .collect::<Vec<_>>()
    );

    // Two requests over one spend, each for all of it: the second approval is
    // refused with its credits, appends nothing, and the request can be rejected.
    let debit = json!({"debit_id": "spend", "amount": "6", "reason": "post"});
    s.call(
        "POST",
        "/v1/accounts/301/debits",
        Some(SERVICE),
        Some(debit),
    )
    .await;
    for id in ["twice-1", "twice-2"] {
        let ask = json!({"refund_id": id, "user_id": 301, "reference": "debit:spend", "amount": "6", "reason": "failed"});
        let (status, body, _) = s
            .call("POST", "/v1/refunds", Some(SERVICE), Some(ask))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body, _) = s
        .call(
            "POST",
            "/v1/refunds/twice-1/approve",
            Some(ADMIN),
            Some(json!({"reason": "ok"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let head = s.store.last_position().await.unwrap();
    let (status, problem, _) = s
        .call(
            "POST",
            "/v1/refunds/twice-2/approve",
            Some(ADMIN),
            Some(json!({"reason": "ok"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["code"], "refund_not_allowed", "{problem}");
    assert_eq!(
        s.store.last_position().await.unwrap(),
        head,
        "no approval without its credits"
    );
    let (_, queue, _) = s
        .call(
            "GET",
            &format!("/v1/refunds?status=requested&min_position={head}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert!(
        queue["refunds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["refund_id"] == "twice-2"),
        "still requested: {queue}"
    );
    let (status, body, _) = s
        .call(
            "POST",
            "/v1/refunds/twice-2/reject",
            Some(ADMIN),
            Some(json!({"reason": "refunded already"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A payment is settled only by its own provider, and only as paid: a webhook of
/// another provider (its route, its signature) or an OxaPay callback whose amount or
/// currency disagrees with the payment is refused and appends nothing.
async fn a_payment_is_settled_only_by_its_own_provider_and_as_paid(s: &Server) {
    let create = json!({"payment_id": "ox-own", "user_id": 96, "provider": "oxapay", "amount": "9.99", "currency": "USD", "purpose": {"credits": "50"}});
    let (status, body, _) = s
        .call("POST", "/v1/payments", Some(SERVICE), Some(create))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let create = json!({"payment_id": "st-own", "user_id": 96, "provider": "stars", "amount": "100", "currency": "XTR", "purpose": {"credits": "20"}});
    let (status, body, _) = s
        .call("POST", "/v1/payments", Some(SERVICE), Some(create))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let head = s.store.last_position().await.unwrap();
    // The stars route, signed with the stars secret, naming an OxaPay payment.
    let body = r#"{"payment_id":"ox-own","status":"succeeded","amount":"9.99","currency":"USD","provider_payment_id":"fake-1"}"#;
    let (status, problem) = post_webhook(s, body, &sign(body)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "provider_mismatch", "{problem}");
    // OxaPay's route and key, naming a Stars payment.
    let paid =
        r#"{"track_id":"9","status":"Paid","amount":100,"currency":"XTR","order_id":"st-own"}"#;
    let (status, text) = oxapay_callback(s, paid, OXAPAY_KEY).await;
    assert_eq!(status, StatusCode::CONFLICT, "{text}");
    assert!(text.contains("provider_mismatch"), "{text}");
    // OxaPay says less was paid, or in another currency: a conflict, not a credit.
    for paid in [
        r#"{"track_id":"10","status":"Paid","amount":1.5,"currency":"USD","order_id":"ox-own"}"#,
        r#"{"track_id":"10","status":"Paid","amount":9.99,"currency":"EUR","order_id":"ox-own"}"#,
    ] {
        let (status, text) = oxapay_callback(s, paid, OXAPAY_KEY).await;
        assert_eq!(status, StatusCode::CONFLICT, "{paid}: {text}");
        assert!(text.contains("payment_conflict"), "{text}");
    }
    assert_eq!(
        s.store.last_position().await.unwrap(),
        head,
        "nothing appended"
    );
    // As paid, by its own provider: credited.
    let paid =
        r#"{"track_id":"10","status":"Paid","amount":9.990,"currency":"USD","order_id":"ox-own"}"#;
    assert_eq!(
        oxapay_callback(s, paid, OXAPAY_KEY).await,
        (StatusCode::OK, "ok".to_string())
    );
    // The answer is OxaPay's `ok`, with no position: wait for the read model.
    let head = s.store.last_position().await.unwrap();
    let (_, payment, _) = s
        .call(
            "GET",
            &format!("/v1/payments/ox-own?min_position={head}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
}

/// One provider charge settles one payment; a second real charge for a paid payment is
/// recorded once as a duplicate charge (credits nothing) and listed for the admins.
async fn one_charge_one_payment_and_a_second_charge_is_on_record(s: &Server) {
    for id in ["dc-1", "dc-2"] {
        let create = json!({"payment_id": id, "user_id": 97, "provider": "stars", "amount": "100", "currency": "XTR", "purpose": {"credits": "20"}});
        let (status, body, _) = s
            .call("POST", "/v1/payments", Some(SERVICE), Some(create))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let paid = r#"{"payment_id":"dc-1","status":"succeeded","amount":"100","currency":"XTR","provider_payment_id":"charge-A"}"#;
    let (status, body) = post_webhook(s, paid, &sign(paid)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate_charge"], false, "{body}");
    let head = s.store.last_position().await.unwrap();
    // The same charge named for another payment: refused, nothing appended.
    let reused = r#"{"payment_id":"dc-2","status":"succeeded","amount":"100","currency":"XTR","provider_payment_id":"charge-A"}"#;
    let (status, problem) = post_webhook(s, reused, &sign(reused)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "idempotency_conflict", "{problem}");
    assert_eq!(
        s.store.last_position().await.unwrap(),
        head,
        "nothing appended"
    );
    // A second real charge for dc-1: on record once, however often it is sent.
    let again = r#"{"payment_id":"dc-1","status":"succeeded","amount":"100","currency":"XTR","provider_payment_id":"charge-B"}"#;
    let mut positions = Vec::new();
    for _ in 0..3 {
        let (status, body) = post_webhook(s, again, &sign(again)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["duplicate_charge"], true, "{body}");
        positions.push(body["position"].as_u64().unwrap());
    }
    let last = *positions.iter().max().unwrap();
    let (status, list, _) = s
        .call(
            "GET",
            &format!("/v1/admin/payments/duplicate-charges?user_id=97&min_position={last}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let charges = list["charges"].as_array().unwrap();
    assert_eq!(charges.len(), 1, "{list}");
    assert_eq!(
        (
            charges[0]["payment_id"].as_str(),
            charges[0]["provider_payment_id"].as_str(),
            charges[0]["amount"].as_str()
        ),
        (Some("dc-1"), Some("charge-B"), Some("100.00")),
        "{list}"
    );
    let (_, account, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/97?min_position={last}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(account["available"], "20.00", "credited once: {account}");
    let (status, _, _) = s
        .call(
            "GET",
            "/v1/admin/payments/duplicate-charges",
            Some(SERVICE),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// A `min_position` the log does not have is answered at once with 422, not after
/// waiting 5 s for a position that cannot come.
async fn a_min_position_beyond_the_log_is_refused_at_once(s: &Server) {
    let head = s.store.last_position().await.unwrap();
    // A position the log could hold but does not yet: 409 (the document cannot know
    // the log's head); one no log can hold (beyond i64): 422, as the document says.
    for (position, status_wanted, code) in [
        (
            (head + 1).to_string(),
            StatusCode::CONFLICT,
            "position_beyond_log",
        ),
        (
            i64::MAX.to_string(),
            StatusCode::CONFLICT,
            "position_beyond_log",
        ),
        (
            u64::MAX.to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
        (
            "99999999999999999999999".to_string(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
        ),
    ] {
        for path in ["/v1/accounts/1", "/v1/holds/h1", "/v1/payments/p1"] {
            let (status, problem, _) = s
                .call(
                    "GET",
                    &format!("{path}?min_position={position}"),
                    Some(SERVICE),
                    None,
                )
                .await;
            assert_eq!(status, status_wanted, "{path} {position}: {problem}");
            assert_eq!(problem["code"], code, "{problem}");
        }
    }
    let (status, _, _) = s
        .call(
            "GET",
            &format!("/v1/accounts/1?min_position={head}"),
            Some(SERVICE),
            None,
        )
        .await;
    assert!(
        status != StatusCode::UNPROCESSABLE_ENTITY && status != StatusCode::CONFLICT,
        "the log's own last position may be waited for"
    );
}

/// `GET /v1/audit/verify` runs one at a time (a second caller gets 429 with
/// `Retry-After`), and its scratch tables are dropped even when the caller goes away.
async fn one_audit_at_a_time_and_its_scratch_tables_go_with_it(s: &Server) {
    s.call("PUT", "/v1/accounts/5", Some(SERVICE), Some(json!({})))
        .await;
    let held = s.audit_turn.clone().acquire_owned().await.unwrap();
    let (status, problem, headers) = s.call("GET", "/v1/audit/verify", Some(AUDITOR), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    assert_eq!(problem["code"], "rate_limited");
    assert!(headers.contains_key("retry-after"));
    drop(held);
    let (status, report, _) = s.call("GET", "/v1/audit/verify", Some(AUDITOR), None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["projections_consistent"], true, "{report}");
    // A caller that gives up at once: the audit finishes and cleans up on its own.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1))
        .build()
        .unwrap();
    let _ = impatient
        .get(format!("{}/v1/audit/verify", s.base))
        .bearer_auth(AUDITOR)
        .send()
        .await;
    let _done = tokio::time::timeout(Duration::from_secs(30), s.audit_turn.acquire())
        .await
        .expect("the audit finished");
    let tables: Vec<String> = match s.store.backend() {
        "postgres" => sqlx::query_scalar(
            "SELECT tablename::TEXT FROM pg_tables WHERE tablename LIKE '%audit%'",
        )
        .fetch_all(s.projector.pool())
        .await
        .unwrap(),
        _ => sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '%audit%'",
        )
        .fetch_all(s.projector.pool())
        .await
        .unwrap(),
    };
    assert!(tables.is_empty(), "scratch tables left: {tables:?}");
}
