//! Tally as production runs it: the real `tally` binary started three times against one
//! database (two `--roles api` processes and one `--roles projector,reactor`), on
//! Postgres and on one SQLite file. Every answer must be the log's as it stands,
//! whichever process gives it: credits granted through one API are spent at once
//! through the other, holds placed anywhere expire by themselves and their credits are
//! spendable at once everywhere, duplicates racing through both APIs are one write
//! and its replays, and a hold id is one hold in the whole ledger.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use tally_store::testing::TestDatabase;

mod common;
use common::Served;

const SERVICE: &str = "service-key-processes-0123456789";
const ADMIN: &str = "admin-key-processes-0123456789";

/// `tally serve --roles ROLES` on `url`, with the test's keys.
fn start(url: &str, roles: &str) -> Served {
    let keys = format!("service:bot:{SERVICE},admin:ops:{ADMIN}");
    Served::start(url, &["--roles", roles], &[("TALLY_API_KEYS", &keys)])
}

fn send(
    client: &Client,
    method: &str,
    url: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value, bool) {
    let request = match method {
        "PUT" => client.put(url),
        "POST" => client.post(url),
        _ => client.get(url),
    };
    let request = match method {
        "GET" => request,
        _ => request.json(&body),
    };
    let response = request.bearer_auth(key).send().expect("request");
    let status = response.status();
    let replayed = response.headers().get("idempotent-replay").is_some();
    let body: Value = response.json().unwrap_or(Value::Null);
    (status, body, replayed)
}

fn money(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn scenario(url: &str) {
    let migrated = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["migrate", "--database-url", url])
        .env("RUST_LOG", "warn")
        .output()
        .expect("tally migrate");
    assert!(migrated.status.success(), "{migrated:?}");
    let a = start(url, "api");
    let b = start(url, "api");
    let worker = start(url, "projector,reactor");
    let apis = [&a, &b];
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // The worker has no API, but its health, readiness and lag are scraped from it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = client.get(worker.url("/readyz")).send().map(|r| r.status());
        if matches!(ready, Ok(StatusCode::OK)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker is never ready: {ready:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = client
        .get(worker.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("tally_projection_lag_events"),
        "the worker's metrics show projection lag: {metrics}"
    );
    let (status, _, _) = send(
        &client,
        "GET",
        &worker.url("/v1/accounts/1"),
        SERVICE,
        Value::Null,
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "no API on the worker");

    // Each user: opened through one API, then alternating grants and spends through
    // both, each spend using credits granted through the other process just before.
    for user in 1..=4_i64 {
        let (first, second) = (apis[(user % 2) as usize], apis[((user + 1) % 2) as usize]);
        let (status, body, _) = send(
            &client,
            "PUT",
            &first.url(&format!("/v1/accounts/{user}")),
            SERVICE,
            json!({}),
        );
        assert_eq!(status, StatusCode::CREATED, "{body}");
        for round in 0..6 {
            // Three rounds one way, three the other: from the second round on, the
            // spending process holds the account as it left it, which the other
            // process's grant has since moved on.
            let (granting, spending) = match round < 3 {
                true => (first, second),
                false => (second, first),
            };
            let (status, body, _) = send(
                &client,
                "POST",
                &granting.url(&format!("/v1/admin/accounts/{user}/grants")),
                ADMIN,
                json!({"grant_id": format!("g-{user}-{round}"), "amount": "10", "reason": "promo"}),
            );
            assert_eq!(status, StatusCode::CREATED, "grant: {body}");
            let (status, body, _) = send(
                &client,
                "POST",
                &spending.url(&format!("/v1/accounts/{user}/debits")),
                SERVICE,
                json!({"debit_id": format!("d-{user}-{round}"), "amount": "10", "reason": "job"}),
            );
            assert_eq!(
                status,
                StatusCode::CREATED,
                "10 credits granted through one process, spent at once through the other: {body}"
            );
            assert_eq!(money(&body["available"]), "0.00", "{body}");
        }
    }

    // Holds placed through either API with a 1 s ttl expire by themselves (the
    // reactor in the third process); their credits are then spendable at once
    // through the other API, and the next hold of the chain too.
    let user = 10_i64;
    send(
        &client,
        "PUT",
        &a.url(&format!("/v1/accounts/{user}")),
        SERVICE,
        json!({}),
    );
    let (status, body, _) = send(
        &client,
        "POST",
        &a.url(&format!("/v1/admin/accounts/{user}/grants")),
        ADMIN,
        json!({"grant_id": "g-chain", "amount": "10", "reason": "promo"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for link in 0..3 {
        let (placing, other) = (apis[link % 2], apis[(link + 1) % 2]);
        let hold = format!("chain-{link}");
        let (status, body, _) = send(
            &client,
            "POST",
            &placing.url(&format!("/v1/accounts/{user}/holds")),
            SERVICE,
            json!({"hold_id": hold, "amount": "10", "ttl_seconds": 1, "reason": "job"}),
        );
        assert_eq!(
            status,
            StatusCode::CREATED,
            "hold {link} of the chain: {body}"
        );
        // Both processes learn of it from the log: the other one captures nothing
        // early and reads the same hold.
        let deadline = Instant::now() + Duration::from_secs(20);
        let expired_at = loop {
            let (status, body, _) = send(
                &client,
                "GET",
                &other.url(&format!("/v1/holds/{hold}")),
                SERVICE,
                Value::Null,
            );
            if status == StatusCode::OK && body["state"] == "expired" {
                break body["position"].as_u64().expect("a position");
            }
            assert!(
                Instant::now() < deadline,
                "hold {hold} never expired: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        // The balance as of the expiry (each read model moves on its own; a GET
        // waits for the position it names).
        let (status, body, _) = send(
            &client,
            "GET",
            &other.url(&format!("/v1/accounts/{user}?min_position={expired_at}")),
            SERVICE,
            Value::Null,
        );
        assert_eq!(status, StatusCode::OK);
        assert_eq!(money(&body["available"]), "10.00", "after expiry: {body}");
    }
    // The freed credits are spent through both processes, each answer decided on the
    // log as it stands.
    let (status, body, _) = send(
        &client,
        "POST",
        &b.url(&format!("/v1/accounts/{user}/debits")),
        SERVICE,
        json!({"debit_id": "after-chain-1", "amount": "5", "reason": "job"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body, _) = send(
        &client,
        "POST",
        &a.url(&format!("/v1/accounts/{user}/holds")),
        SERVICE,
        json!({"hold_id": "after-chain-2", "amount": "5", "ttl_seconds": 60, "reason": "job"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A hold id is one hold in the whole ledger: placed on another account through
    // the other process, it is refused and appends nothing.
    send(
        &client,
        "PUT",
        &b.url("/v1/accounts/11"),
        SERVICE,
        json!({}),
    );
    send(
        &client,
        "POST",
        &b.url("/v1/admin/accounts/11/grants"),
        ADMIN,
        json!({"grant_id": "g-11", "amount": "10", "reason": "promo"}),
    );
    let (status, body, _) = send(
        &client,
        "POST",
        &b.url("/v1/accounts/11/holds"),
        SERVICE,
        json!({"hold_id": "after-chain-2", "amount": "5", "ttl_seconds": 60, "reason": "job"}),
    );
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "idempotency_conflict", "{body}");
    // Capture through the process that did not place it reaches the one hold.
    let (status, body, _) = send(
        &client,
        "POST",
        &b.url("/v1/holds/after-chain-2/capture"),
        SERVICE,
        json!({}),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user_id"], user, "{body}");
    // Account 11 holds nothing: all its 10 credits are spendable.
    let (status, body, _) = send(
        &client,
        "POST",
        &a.url("/v1/accounts/11/debits"),
        SERVICE,
        json!({"debit_id": "d-11", "amount": "10", "reason": "job"}),
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Duplicates racing through both processes: one write, the rest replays, the
    // balance moved once.
    let user = 20_i64;
    send(
        &client,
        "PUT",
        &a.url(&format!("/v1/accounts/{user}")),
        SERVICE,
        json!({}),
    );
    send(
        &client,
        "POST",
        &a.url(&format!("/v1/admin/accounts/{user}/grants")),
        ADMIN,
        json!({"grant_id": "g-race", "amount": "100", "reason": "promo"}),
    );
    for round in 0..5 {
        let answers: Vec<(StatusCode, Value, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..6)
                .map(|copy| {
                    let api = apis[copy % 2];
                    let client = &client;
                    scope.spawn(move || {
                        send(
                            client,
                            "POST",
                            &api.url(&format!("/v1/accounts/{user}/debits")),
                            SERVICE,
                            json!({"debit_id": format!("race-{round}"), "amount": "3", "reason": "job"}),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let fresh = answers
            .iter()
            .filter(|(s, _, r)| *s == StatusCode::CREATED && !r)
            .count();
        let replays = answers
            .iter()
            .filter(|(s, _, r)| *s == StatusCode::CREATED && *r)
            .count();
        assert_eq!((fresh, replays), (1, 5), "round {round}: {answers:?}");
    }
    let (status, body, _) = send(
        &client,
        "POST",
        &b.url(&format!("/v1/accounts/{user}/debits")),
        SERVICE,
        json!({"debit_id": "race-last", "amount": "85", "reason": "all that is left"}),
    );
    assert_eq!(
        status,
        StatusCode::CREATED,
        "100 granted, 5 races of 3 each spent once: 85 left: {body}"
    );
    assert_eq!(money(&body["available"]), "0.00", "{body}");
}

#[test]
fn three_processes_on_one_sqlite_file_answer_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tally.db").display());
    scenario(&url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_on_one_postgres_answer_from_the_log() {
    let database = TestDatabase::postgres().await;
    let url = database.url.clone();
    tokio::task::spawn_blocking(move || scenario(&url))
        .await
        .unwrap();
    database.drop_database().await;
}
