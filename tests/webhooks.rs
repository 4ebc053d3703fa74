//! Events out, end to end: the app as `tally serve` wires it (its deliverer in the
//! reactor role), on a real SQLite file and a fresh Postgres database, delivering to a
//! receiver server in the test that verifies each Standard Webhooks signature with
//! its own code and counts what arrives. Every wanted event arrives, in log order per
//! endpoint, at least once; a receiver that answers 500 for a while gets everything
//! after it recovers; a disabled endpoint gets nothing; a replay sends a range again;
//! a private address is refused unless allowed.
//!
//! One file: the receiver, the stack and the cases read as one specification of events out.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use tally_store::testing::{Backend, TestDatabase};

const SERVICE: &str = "service-key-0123456789";
const ADMIN: &str = "admin-key-0123456789ab";

/// What one receiver path got: (webhook-id, type, position) in arrival order.
#[derive(Default)]
struct Received {
    by_path: BTreeMap<String, Vec<(String, String, u64)>>,
    secrets: BTreeMap<String, String>,
    /// Answer 500 to this many more requests on a path.
    failing: BTreeMap<String, usize>,
    refused: usize,
    bad_signatures: usize,
}

#[derive(Clone)]
struct Receiver {
    url: String,
    inner: Arc<Mutex<Received>>,
}

fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    fresh
        && header("webhook-signature")
            .split(' ')
            .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

async fn receive(
    State(inner): State<Arc<Mutex<Received>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut inner = inner.lock().unwrap();
    if let Some(left) = inner.failing.get_mut(&path)
        && *left > 0
    {
        *left -= 1;
        inner.refused += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let Some(secret) = inner.secrets.get(&path).cloned() else {
        return StatusCode::NOT_FOUND;
    };
    if !verify(&secret, &headers, &body) {
        inner.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let event: Value = serde_json::from_slice(&body).unwrap();
    let id = headers["webhook-id"].to_str().unwrap().to_string();
    inner.by_path.entry(path).or_default().push((
        id,
        event["type"].as_str().unwrap().to_string(),
        event["data"]["position"].as_u64().unwrap(),
    ));
    StatusCode::NO_CONTENT
}

impl Receiver {
    async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Received::default()));
        let router = Router::new()
            .route("/hooks/{path}", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { url, inner }
    }

    fn got(&self, path: &str) -> Vec<(String, String, u64)> {
        self.inner
            .lock()
            .unwrap()
            .by_path
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Distinct deliveries (by webhook-id), in the order they first arrived.
    fn distinct(&self, path: &str) -> Vec<(String, u64)> {
        let mut seen = std::collections::HashSet::new();
        self.got(path)
            .into_iter()
            .filter(|(id, _, _)| seen.insert(id.clone()))
            .map(|(_, kind, position)| (kind, position))
            .collect()
    }
}

struct Stack {
    api: String,
    client: reqwest::Client,
    receiver: Receiver,
    store: Arc<dyn tally_store::EventStore>,
    running: tally_app::Running,
    database: TestDatabase,
}

impl Stack {
    async fn start(backend: Backend, allow_private: bool) -> Self {
        Self::start_with(backend, allow_private, Duration::from_secs(3 * 24 * 3600)).await
    }

    async fn start_with(backend: Backend, allow_private: bool, give_up_after: Duration) -> Self {
        let database = backend.database().await;
        let receiver = Receiver::start().await;
        let app = tally_app::App {
            api_keys: format!("service:shop:{SERVICE},admin:ops-alice:{ADMIN}"),
            webhooks: tally_webhooks::Settings {
                allow_private,
                retry_base: Duration::from_millis(100),
                retry_cap: Duration::from_millis(400),
                give_up_after,
                ..tally_webhooks::Settings::default()
            },
            ..tally_app::App::new(&database.url)
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = tally_app::start(app, Some(listener)).await.unwrap();
        Self {
            api: format!("http://{}", running.addr.unwrap()),
            client: reqwest::Client::new(),
            store: running.store.clone(),
            receiver,
            running,
            database,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Adds an endpoint at the receiver's `/hooks/<path>`; the receiver learns its secret.
    async fn endpoint(&self, path: &str, types: &[&str]) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/admin/webhooks",
                ADMIN,
                json!({"url": format!("{}/hooks/{path}", self.receiver.url), "event_types": types}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let secret = body["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("whsec_"));
        self.receiver
            .inner
            .lock()
            .unwrap()
            .secrets
            .insert(path.into(), secret);
        body["endpoint_id"].as_str().unwrap().to_string()
    }

    async fn grant(&self, user: i64, id: &str, credits: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/v1/accounts/{user}"),
                SERVICE,
                json!({}),
            )
            .await;
        assert!(status.is_success(), "{body}");
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/admin/accounts/{user}/grants"),
                ADMIN,
                json!({"grant_id": id, "amount": credits, "reason": "test"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    async fn debit(&self, user: i64, id: &str, credits: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/accounts/{user}/debits"),
                SERVICE,
                json!({"debit_id": id, "amount": credits, "reason": "sms"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// The log's events a pattern list wants, as (type, position), once the log can
    /// be read up to its last committed event (on a shared Postgres, `read_all` waits
    /// for other tests' open transactions).
    async fn wanted(&self, types: &[&str], after: u64) -> Vec<(String, u64)> {
        let last = self.store.last_position().await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let events = loop {
            let events = self.store.read_all(after, 10_000).await.unwrap();
            if events.last().is_some_and(|e| e.position >= last) || last <= after {
                break events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the log never read up to {last}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        events
            .into_iter()
            .filter(|e| {
                types
                    .iter()
                    .any(|t| tally_webhooks::endpoints::matches(t, &e.event_type))
            })
            .map(|e| (e.event_type, e.position))
            .collect()
    }

    async fn until(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(self) {
        self.running.stop().await.unwrap();
        self.database.drop_database().await;
    }
}

async fn every_wanted_event_arrives_signed_in_order_and_a_replay_sends_a_range_again(
    backend: Backend,
) {
    let s = Stack::start(backend, true).await;
    let credits = ["credits.*", "balance.low"];
    s.endpoint("credits", &credits).await;
    s.endpoint("payments", &["payment.succeeded"]).await;
    let quiet = s.endpoint("quiet", &["*"]).await;
    let (status, _) = s
        .call(
            reqwest::Method::POST,
            &format!("/v1/admin/webhooks/{quiet}/disable"),
            ADMIN,
            json!({"reason": "not yet"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let start = s.store.last_position().await.unwrap();
    let (status, body) = s
        .call(
            reqwest::Method::PUT,
            "/v1/admin/accounts/41/alert",
            ADMIN,
            json!({"threshold": "5"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no account yet: {body}");
    s.grant(41, "g-41-1", "10").await;
    let start = s.store.last_position().await.unwrap().min(start);
    let (status, body) = s
        .call(
            reqwest::Method::PUT,
            "/v1/admin/accounts/41/alert",
            ADMIN,
            json!({"threshold": "5"}),
        )
        .await;
    assert_eq!(
        (status, body["threshold"].as_str()),
        (StatusCode::OK, Some("5")),
        "{body}"
    );
    for n in 0..8 {
        s.debit(41, &format!("d-41-{n}"), "1").await;
    }
    s.grant(42, "g-42-1", "3").await;
    let expected = s.wanted(&credits, start).await;
    assert!(
        expected.iter().any(|(t, _)| t == "balance.low"),
        "{expected:?}"
    );
    assert_eq!(
        expected.len(),
        11,
        "2 grants, 8 debits, one balance.low: {expected:?}"
    );
    s.until("every wanted event", || {
        s.receiver.distinct("credits").len() >= expected.len()
    })
    .await;
    assert_eq!(
        s.receiver.distinct("credits"),
        expected,
        "in log order, each once at least"
    );
    let positions: Vec<u64> = s
        .receiver
        .got("credits")
        .iter()
        .map(|(_, _, p)| *p)
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] <= w[1]),
        "never out of order: {positions:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        s.receiver.got("payments").is_empty(),
        "nothing it wants happened"
    );
    assert!(
        s.receiver.got("quiet").is_empty(),
        "a disabled endpoint gets nothing"
    );
    assert_eq!(s.receiver.inner.lock().unwrap().bad_signatures, 0);

    // A replay of the first three wanted events' range sends exactly those again.
    let (from, to) = (expected[0].1, expected[2].1);
    let endpoints = s
        .call(
            reqwest::Method::GET,
            "/v1/admin/webhooks",
            ADMIN,
            Value::Null,
        )
        .await
        .1;
    let credits_id = endpoints["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["url"].as_str().unwrap().ends_with("/hooks/credits"))
        .unwrap()["endpoint_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        endpoints.to_string().find("whsec_").is_none(),
        "no secret in the list"
    );
    let before = s.receiver.got("credits").len();
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            &format!("/v1/admin/webhooks/{credits_id}/replay"),
            ADMIN,
            json!({"from_position": from, "to_position": to}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    s.until("the replay", || {
        s.receiver.got("credits").len() >= before + 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again: Vec<u64> = s.receiver.got("credits")[before..]
        .iter()
        .map(|(_, _, p)| *p)
        .collect();
    assert_eq!(
        again,
        expected[..3].iter().map(|(_, p)| *p).collect::<Vec<_>>()
    );
    let (status, log) = s
        .call(
            reqwest::Method::GET,
            &format!("/v1/admin/webhooks/{credits_id}/deliveries?limit=1000"),
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let log = log["deliveries"].as_array().unwrap();
    assert!(log.len() >= expected.len() + 3);
    assert!(log.iter().all(|d| d["status_code"] == 204), "{log:?}");
    assert_eq!(log.iter().filter(|d| d["replay"] == true).count(), 3);
    s.finish().await;
}

async fn a_receiver_down_for_a_while_gets_everything_after_it_recovers(backend: Backend) {
    let s = Stack::start(backend, true).await;
    let id = s.endpoint("flaky", &["credits.granted"]).await;
    s.receiver
        .inner
        .lock()
        .unwrap()
        .failing
        .insert("flaky".into(), 6);
    let start = s.store.last_position().await.unwrap();
    for n in 0..5 {
        s.grant(43, &format!("g-43-{n}"), "1").await;
    }
    let expected = s.wanted(&["credits.granted"], start).await;
    s.until("recovery", || {
        s.receiver.distinct("flaky").len() >= expected.len()
    })
    .await;
    assert_eq!(s.receiver.distinct("flaky"), expected);
    assert_eq!(s.receiver.inner.lock().unwrap().refused, 6);
    let (_, failed) = s
        .call(
            reqwest::Method::GET,
            &format!("/v1/admin/webhooks/{id}/deliveries?failed=true"),
            ADMIN,
            Value::Null,
        )
        .await;
    let failed = failed["deliveries"].as_array().unwrap();
    assert_eq!(failed.len(), 6, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|d| d["status_code"] == 500 && d["position"] == expected[0].1)
    );
    s.finish().await;
}

async fn an_endpoint_failing_for_the_whole_schedule_is_disabled_and_holds_back_no_other(
    backend: Backend,
) {
    let s = Stack::start_with(backend, true, Duration::from_secs(2)).await;
    let dead = s.endpoint("dead", &["credits.granted"]).await;
    s.receiver
        .inner
        .lock()
        .unwrap()
        .failing
        .insert("dead".into(), usize::MAX);
    s.endpoint("alive", &["credits.granted"]).await;
    let start = s.store.last_position().await.unwrap();
    for n in 0..3 {
        s.grant(44, &format!("g-44-{n}"), "1").await;
    }
    let expected = s.wanted(&["credits.granted"], start).await;
    s.until("the healthy endpoint", || {
        s.receiver.distinct("alive").len() >= expected.len()
    })
    .await;
    assert_eq!(
        s.receiver.distinct("alive"),
        expected,
        "not held back by the dead one"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, listed) = s
            .call(
                reqwest::Method::GET,
                "/v1/admin/webhooks",
                ADMIN,
                Value::Null,
            )
            .await;
        let endpoint = listed["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["endpoint_id"] == dead.as_str())
            .unwrap()
            .clone();
        if endpoint["enabled"] == false {
            let reason = endpoint["disabled_reason"].as_str().unwrap();
            assert!(
                reason.starts_with("failed for 2 s (last: the receiver answered 500"),
                "{reason}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never disabled: {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tried = s.receiver.inner.lock().unwrap().refused;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        s.receiver.inner.lock().unwrap().refused,
        tried,
        "nothing more sent"
    );
    s.finish().await;
}

async fn a_private_address_is_refused_unless_allowed(backend: Backend) {
    let s = Stack::start(backend, false).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.8/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/x",
        "ftp://example.com/",
    ] {
        let (status, body) = s
            .call(
                reqwest::Method::POST,
                "/v1/admin/webhooks",
                ADMIN,
                json!({"url": url, "event_types": ["*"]}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
    }
    let (_, listed) = s
        .call(
            reqwest::Method::GET,
            "/v1/admin/webhooks",
            ADMIN,
            Value::Null,
        )
        .await;
    assert_eq!(listed["endpoints"], json!([]), "nothing added");
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/v1/admin/webhooks",
            ADMIN,
            json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
        )
        .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("loopback or private"),
        "{status} {body}"
    );
    s.finish().await;
}

macro_rules! on_both {
    ($($case:ident),*) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() { super::$case(tally_store::testing::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() { super::$case(tally_store::testing::Backend::Postgres).await })*
        }
    };
}

on_both!(
    every_wanted_event_arrives_signed_in_order_and_a_replay_sends_a_range_again,
    a_receiver_down_for_a_while_gets_everything_after_it_recovers,
    an_endpoint_failing_for_the_whole_schedule_is_disabled_and_holds_back_no_other,
    a_private_address_is_refused_unless_allowed
);
