//! `tally payments reconcile stars` as an operator runs it: the real binary against
//! a fake Bot API (real HTTP, `getStarTransactions` paged) and a ledger on SQLite and
//! on Postgres. A transaction Telegram has and the ledger does not, and a payment the
//! ledger has and Telegram does not, are each listed, and the exit status says so.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

#[allow(dead_code)] // the fake serves every test; this one uses a few of its calls
#[path = "../../../tests/fake_telegram/mod.rs"]
mod fake_telegram;

use std::sync::Arc;

use fake_telegram::FakeTelegram;
use rust_decimal::Decimal;
use serde_json::Value;
use tally_domain::Config;
use tally_domain::payment::{PaymentCommand, Purpose, Terms};
use tally_domain::values::{Amount, PaymentId, UserId};
use tally_store::testing::TestDatabase;
use tally_store::{Actor, Metadata};

async fn paid(ledgers: &tally_ledger::Ledgers, payment: &str, user: i64, charge: &str) {
    let key = PaymentId::new(payment.to_string()).unwrap();
    let amount = Amount::new(Decimal::from(100)).unwrap();
    for command in [
        PaymentCommand::Create(Terms {
            user_id: UserId::new(user).unwrap(),
            provider: "stars".into(),
            amount,
            currency: "XTR".into(),
            purpose: Purpose::Credits(Amount::new(Decimal::from(20)).unwrap()),
        }),
        PaymentCommand::Succeed {
            provider: "stars".into(),
            provider_payment_id: charge.into(),
            amount,
            currency: "XTR".into(),
        },
    ] {
        ledgers
            .payments
            .command(key.clone(), command, Metadata::by(Actor::system("test")))
            .await
            .unwrap();
    }
}

async fn scenario(url: &str) {
    let store = tally_store::open(url, Default::default()).await.unwrap();
    let ledgers = tally_ledger::Ledgers::new(store, Arc::new(Config::default()));
    let fake = FakeTelegram::start().await;
    // 150 matched (two pages of Telegram's list), one on each side only.
    for i in 0..150 {
        paid(&ledgers, &format!("pay-{i}"), 5_000 + i, &format!("ch-{i}")).await;
        fake.add_star_payment(&format!("ch-{i}"), 5_000 + i, 100);
    }
    paid(&ledgers, "pay-ledger-only", 5_900, "ch-ledger-only").await;
    fake.add_star_payment("ch-telegram-only", 5_901, 100);
    let (url, api) = (url.to_string(), fake.url.to_string());
    let run = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["payments", "reconcile", "stars", "--database-url", &url])
            .env("TELEGRAM_BOT_TOKEN", "123456:TEST-TOKEN")
            .env("TELEGRAM_API_URL", &api)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let out = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(report["matched"], 150, "{report}");
    assert_eq!(report["provider_only"][0]["id"], "ch-telegram-only");
    assert_eq!(report["provider_only"].as_array().unwrap().len(), 1);
    assert_eq!(report["ledger_only"][0]["payment_id"], "pay-ledger-only");
    assert_eq!(report["ledger_only"].as_array().unwrap().len(), 1);
    // Recorded in the ledger now (a payment the webhook missed): all match.
    paid(&ledgers, "pay-late", 5_901, "ch-telegram-only").await;
    fake.add_star_payment("ch-ledger-only", 5_900, 100);
    let out = tokio::task::spawn_blocking(run).await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["matched"], 152, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconciliation_lists_what_is_on_one_side_only_on_sqlite() {
    let database = TestDatabase::sqlite();
    scenario(&database.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconciliation_lists_what_is_on_one_side_only_on_postgres() {
    let database = TestDatabase::postgres().await;
    scenario(&database.url).await;
    database.drop_database().await;
}
