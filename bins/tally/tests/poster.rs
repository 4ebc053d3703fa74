//! The poster as production runs it: the real `tally` binary, two `--roles poster`
//! processes posting one cycle through a fake Telegram Bot API (real HTTP) beside a
//! `--roles projector` process, on Postgres and on one SQLite file.
//!
//! Telegram takes the post to one channel and never answers; while one poster waits
//! on it, the other posts the rest. Both posters are then killed (SIGKILL, in the
//! middle of the cycle) and a third starts: it finishes the cycle without posting
//! anything twice, and without resending the post whose outcome nobody knows.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

#[allow(dead_code)] // the fake serves every test; this one uses a few of its calls
#[path = "../../../tests/fake_telegram/mod.rs"]
mod fake_telegram;

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Served;
use fake_telegram::FakeTelegram;
use serde_json::{Value, json};
use tally_domain::Config;
use tally_domain::slot::{Destination, SlotCommand, SlotConfig};
use tally_domain::subscription::SubscriptionCommand;
use tally_domain::values::{PaymentId, PlanId, SlotId, UserId};
use tally_store::testing::TestDatabase;
use tally_store::{Actor, Metadata, StreamId};

/// A cycle of a day, posts at once: the whole test is within one cycle.
const CYCLE_SECONDS: u64 = 86_400;

fn poster(url: &str, fake: &FakeTelegram) -> Served {
    Served::start(
        url,
        &["--roles", "poster"],
        &[
            ("TELEGRAM_BOT_TOKEN", "123456:TEST-TOKEN"),
            ("TELEGRAM_API_URL", fake.url.as_str()),
            ("TALLY_POST_CYCLE_SECONDS", &CYCLE_SECONDS.to_string()),
            ("TALLY_POST_SPREAD_SECONDS", "0"),
        ],
    )
}

fn sends_to(fake: &FakeTelegram, chat: i64) -> usize {
    fake.calls_of("sendMessage")
        .iter()
        .filter(|c| c.params["chat_id"] == json!(chat))
        .count()
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario(url: &str) {
    // Not across a cycle's end (midnight UTC): the test takes well under two minutes.
    let into_cycle = chrono::Utc::now().timestamp() as u64 % CYCLE_SECONDS;
    if CYCLE_SECONDS - into_cycle < 120 {
        tokio::time::sleep(Duration::from_secs(CYCLE_SECONDS - into_cycle + 1)).await;
    }
    let migrated = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["migrate", "--database-url", url])
        .env("RUST_LOG", "warn")
        .output()
        .expect("tally migrate");
    assert!(migrated.status.success(), "{migrated:?}");

    // An owner with a plan and a slot posting to four channels.
    let store = tally_store::open(url, Default::default()).await.unwrap();
    let ledgers = tally_ledger::Ledgers::new(store.clone(), Arc::new(Config::default()));
    let owner = UserId::new(4_242).unwrap();
    ledgers
        .subscriptions
        .command(
            owner,
            SubscriptionCommand::Pay {
                payment_id: PaymentId::new("plan-4242".to_string()).unwrap(),
                plan: PlanId::new("basic".to_string()).unwrap(),
            },
            Metadata::by(Actor::system("test")),
        )
        .await
        .unwrap();
    let chats = [-100_901, -100_902, -100_903, -100_904];
    ledgers
        .slots
        .command(
            SlotId::new("ad-4242".to_string()).unwrap(),
            SlotCommand::Configure(SlotConfig {
                user_id: owner,
                content: "Fresh bread every morning".into(),
                destinations: chats
                    .iter()
                    .map(|&chat_id| Destination {
                        chat_id,
                        topic_id: None,
                    })
                    .collect(),
                photo: None,
                buttons: Vec::new(),
            }),
            Metadata::by(Actor::system("test")),
        )
        .await
        .unwrap();

    let fake = FakeTelegram::start().await;
    let silent = chats[1];
    fake.hang_sends_to(silent);
    let _projector = Served::start(url, &["--roles", "projector"], &[]);
    let mut first = poster(url, &fake);
    let mut second = poster(url, &fake);
    // Telegram has every post, the silent channel's unanswered.
    wait_until("a post to each channel", async || {
        chats.iter().all(|&chat| sends_to(&fake, chat) >= 1)
    })
    .await;
    first.kill();
    second.kill();
    fake.release(silent);

    // A poster started after the crash passes over the cycle and sends nothing.
    let third = poster(url, &fake);
    let client = reqwest::Client::new();
    let cycle = (chrono::Utc::now().timestamp() as u64 / CYCLE_SECONDS) as f64;
    wait_until("the restarted poster's pass over the cycle", async || {
        let Ok(response) = client.get(third.url("/metrics")).send().await else {
            return false;
        };
        let metrics = response.text().await.unwrap_or_default();
        metrics.lines().any(|l| {
            l.strip_prefix("tally_poster_cycle ")
                .and_then(|v| v.trim().parse::<f64>().ok())
                == Some(cycle)
        })
    })
    .await;
    for chat in chats {
        assert_eq!(sends_to(&fake, chat), 1, "chat {chat}: {:?}", fake.calls());
    }

    // On record: one start per channel; the silent channel's has no outcome; any
    // other outcome recorded is a success (a poster killed between a send and its
    // record leaves a start with no outcome, which is never sent again).
    let events = store
        .read_stream(&StreamId::new("slot-ad-4242").unwrap(), 1, 1_000)
        .await
        .unwrap();
    let of = |kind: &str, chat: i64| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e.event_type == kind && e.payload["destination"]["chat_id"] == chat)
            .map(|e| e.payload.clone())
            .collect()
    };
    for chat in chats {
        let started = of("slot.post_started", chat);
        let attempted = of("slot.post_attempted", chat);
        assert_eq!(started.len(), 1, "chat {chat}: {started:?}");
        match chat == silent {
            true => assert!(attempted.is_empty(), "{attempted:?}"),
            false => {
                assert!(attempted.len() <= 1, "chat {chat}: {attempted:?}");
                assert!(
                    attempted.iter().all(|a| a["outcome"] == "succeeded"),
                    "chat {chat}: {attempted:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_posters_and_a_crash_post_each_channel_once_on_sqlite() {
    let database = TestDatabase::sqlite();
    scenario(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_posters_and_a_crash_post_each_channel_once_on_postgres() {
    let database = TestDatabase::postgres().await;
    scenario(&database.url).await;
    database.drop_database().await;
}
