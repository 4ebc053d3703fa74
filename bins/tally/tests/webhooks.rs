//! Webhook delivery survives a crash: the real `tally` binary delivering to a slow
//! receiver is SIGKILLed in the middle of a stream of events and started again; every
//! event reaches the receiver (at least once, the duplicates carrying the same
//! `webhook-id`), none lost, first arrivals in log order. The endpoint is added with
//! `tally webhooks add`, as an operator would. On one SQLite file and on Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use common::Served;
use serde_json::{Value, json};
use tally_store::testing::TestDatabase;

const ADMIN: &str = "admin-key-0123456789ab";
const SERVICE: &str = "service-key-0123456789";
const EVENTS: usize = 60;

type Got = Arc<Mutex<Vec<(String, u64)>>>;

async fn receiver() -> (String, Got) {
    let got: Got = Arc::default();
    let seen = got.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                // Slow enough that a crash falls in the middle of the stream.
                tokio::time::sleep(Duration::from_millis(15)).await;
                let event: Value = serde_json::from_slice(&body).unwrap();
                seen.lock().unwrap().push((
                    headers["webhook-id"].to_str().unwrap().to_string(),
                    event["data"]["position"].as_u64().unwrap(),
                ));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, got)
}

/// `tally webhooks add`, as an operator runs it: the endpoint with its secret.
fn add_endpoint(url: &str, hook: &str, events: &str) -> Value {
    let added = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "webhooks",
            "add",
            "--url",
            hook,
            "--events",
            events,
            "--allow-private",
        ])
        .args(["--database-url", url])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    serde_json::from_slice(&added.stdout).unwrap()
}

fn serve(url: &str) -> Served {
    Served::start(
        url,
        &["--roles", "api,projector,reactor"],
        &[
            (
                "TALLY_API_KEYS",
                &format!("admin:ops:{ADMIN},service:shop:{SERVICE}"),
            ),
            ("TALLY_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ],
    )
}

fn distinct(got: &Got) -> Vec<u64> {
    let mut seen = HashSet::new();
    got.lock()
        .unwrap()
        .iter()
        .filter(|(id, _)| seen.insert(id.clone()))
        .map(|(_, position)| *position)
        .collect()
}

async fn scenario(url: &str) {
    let (hook, got) = receiver().await;
    let endpoint = add_endpoint(url, &hook, "credits.granted");
    assert!(endpoint["secret"].as_str().unwrap().starts_with("whsec_"));

    let mut first = serve(url);
    let client = reqwest::Client::new();
    client
        .put(first.url("/v1/accounts/77"))
        .bearer_auth(SERVICE)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let mut positions = Vec::new();
    for n in 0..EVENTS {
        let answer: Value = client
            .post(first.url("/v1/admin/accounts/77/grants"))
            .bearer_auth(ADMIN)
            .json(&json!({"grant_id": format!("g-{n}"), "amount": "1", "reason": "test"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        positions.push(answer["position"].as_u64().unwrap());
    }
    // Killed with deliveries in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while distinct(&got).len() < 10 {
        assert!(Instant::now() < deadline, "no deliveries");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    let at_kill = distinct(&got).len();
    assert!(
        at_kill < EVENTS,
        "the crash fell in the middle ({at_kill} delivered)"
    );

    let _second = serve(url);
    let deadline = Instant::now() + Duration::from_secs(60);
    while distinct(&got).len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "lost deliveries: {} of {EVENTS}",
            distinct(&got).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        distinct(&got),
        positions,
        "every event, first arrivals in log order"
    );
    let listed = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["webhooks", "list", "--database-url", url])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["cursor"].as_u64(), positions.last().copied());
    assert!(
        !String::from_utf8_lossy(
            &Command::new(env!("CARGO_BIN_EXE_tally"))
                .args(["webhooks", "list", "--database-url", url])
                .output()
                .unwrap()
                .stdout
        )
        .contains("whsec_")
    );
}

/// Two servers deliver from one database at once: each event reaches the receiver
/// exactly once (the endpoint's lease lets one process send to it at a time, and each
/// takes the cursor on record when it takes the lease).
async fn two_servers(url: &str) {
    let (hook, got) = receiver().await;
    add_endpoint(url, &hook, "credits.*");
    let (a, b) = (serve(url), serve(url));
    let client = reqwest::Client::new();
    client
        .put(a.url("/v1/accounts/78"))
        .bearer_auth(SERVICE)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    for n in 0..EVENTS {
        // Writes through both, so both are woken by appends of their own.
        let server = if n % 2 == 0 { &a } else { &b };
        let status = client
            .post(server.url("/v1/admin/accounts/78/grants"))
            .bearer_auth(ADMIN)
            .json(&json!({"grant_id": format!("g2-{n}"), "amount": "1", "reason": "test"}))
            .send()
            .await
            .unwrap()
            .status();
        assert!(status.is_success());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while distinct(&got).len() < EVENTS {
        assert!(
            Instant::now() < deadline,
            "{} of {EVENTS}",
            distinct(&got).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let all = got.lock().unwrap().len();
    assert_eq!(all, EVENTS, "no event sent twice by the two servers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_deliver_each_webhook_once_on_sqlite() {
    let database = TestDatabase::sqlite();
    two_servers(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_deliver_each_webhook_once_on_postgres() {
    let database = TestDatabase::postgres().await;
    two_servers(&database.url).await;
    database.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_restarted_loses_no_webhook_on_sqlite() {
    let database = TestDatabase::sqlite();
    scenario(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_restarted_loses_no_webhook_on_postgres() {
    let database = TestDatabase::postgres().await;
    scenario(&database.url).await;
    database.drop_database().await;
}
