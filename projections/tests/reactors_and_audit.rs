//! Reactors, the other read models, the audit and export/import, against real stores:
//! SQLite files and fresh Postgres databases, fed by the real command service.
//!
//! One file: the reactors and the audit share one fixture (store, command services,
//! projector) and check each other's effects.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, Row};
use tally_domain::Config;
use tally_domain::account::AccountCommand as C;
use tally_domain::payment::{PaymentCommand, Purpose, Terms};
use tally_domain::refund::{RefundAsk, RefundCommand};
use tally_domain::slot::{Attempt, Destination, Outcome, SlotCommand, SlotConfig, SlotCoverage};
use tally_domain::subscription::SubscriptionCommand;
use tally_domain::values::{
    AdminId, Amount, DebitId, HoldId, PaymentId, PlanId, Reason, RefundId, SlotId, UserId,
};
use tally_ledger::{Accounts as AccountStreams, Ledger, Payments, Refunds, Request, Slots};
use tally_ledger::{Aggregate, Subscriptions};
use tally_projections::{AsOf, Projector, Reactors, default_projections, from_cents};
use tally_store::testing::TestDatabase;
use tally_store::{
    Actor, ActorKind, EventStore, Importer, Metadata, PostgresOptions, RecordedEvent, StreamId,
};

struct Setup {
    postgres: bool,
    database: TestDatabase,
    store: Arc<dyn EventStore>,
    config: Arc<Config>,
}

impl tally_store::testing::Fixture for Setup {
    async fn start(backend: tally_store::testing::Backend) -> Self {
        let database = backend.database().await;
        let store = open(&database.url).await;
        Self {
            postgres: backend == tally_store::testing::Backend::Postgres,
            database,
            store,
            config: Arc::new(Config::default()),
        }
    }

    async fn finish(self) {
        drop(self.store);
        self.database.drop_database().await;
    }
}

impl Setup {
    fn ledger<A: Aggregate>(&self) -> Ledger<A> {
        Ledger::new(self.store.clone(), self.config.clone())
    }

    async fn projector(&self) -> Projector {
        let projector = Projector::open(
            self.store.clone(),
            &self.database.url,
            default_projections(),
        )
        .await
        .unwrap();
        projector.prepare().await.unwrap();
        projector
    }

    fn reactors(&self, projector: &Projector) -> Reactors {
        Reactors::new(
            tally_ledger::Ledgers::new(self.store.clone(), self.config.clone()),
            projector.pool().clone(),
        )
    }
}

async fn open(url: &str) -> Arc<dyn EventStore> {
    let options = PostgresOptions {
        max_connections: 8,
        ..PostgresOptions::default()
    };
    tally_store::open(url, options).await.unwrap()
}

tally_store::on_both_backends!(
    Setup =>
    a_reactor_killed_between_command_and_checkpoint_pays_once,
    the_hold_sweep_expires_holds_past_their_ttl_once,
    payments_subscriptions_posts_refunds_and_stats_are_projected,
    audit_verify_reports_a_tampered_read_model_row_and_event,
    export_then_import_gives_the_same_events_hashes_and_read_models,
    running_reactors_credit_a_payment_and_a_standby_does_nothing_twice,
);

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn amount(text: &str) -> Amount {
    text.parse().unwrap()
}

fn reason(text: &str) -> Reason {
    Reason::new(text).unwrap()
}

fn meta() -> Metadata {
    Metadata::by(Actor::new(ActorKind::Service, "test"))
}

async fn exec<A: Aggregate>(ledger: &Ledger<A>, key: A::Key, command: A::Command) {
    ledger
        .execute(Request {
            key,
            command,
            command_id: None,
            metadata: meta(),
        })
        .await
        .unwrap_or_else(|e| panic!("command refused: {e}"));
}

/// A payment created and paid with the provider's confirmation.
async fn pay(s: &Setup, id: &str, u: UserId, price: &str, currency: &str, purpose: Purpose) {
    let payments = s.ledger::<Payments>();
    let key = PaymentId::new(id).unwrap();
    let terms = Terms {
        user_id: u,
        provider: "stars".into(),
        amount: amount(price),
        currency: currency.into(),
        purpose,
    };
    exec(&payments, key.clone(), PaymentCommand::Create(terms)).await;
    let paid = PaymentCommand::Succeed {
        provider: "stars".into(),
        provider_payment_id: format!("tg-{id}"),
        amount: amount(price),
        currency: currency.into(),
    };
    exec(&payments, key, paid).await;
}

async fn all_events(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let head = store.last_position().await.unwrap();
    let mut events = Vec::new();
    let mut after = 0;
    while after < head {
        let page = store.read_all(after, 1_000).await.unwrap();
        let Some(last) = page.last() else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        after = last.position;
        events.extend(page);
    }
    events
}

async fn count_type(store: &dyn EventStore, event_type: &str) -> usize {
    all_events(store)
        .await
        .iter()
        .filter(|e| e.event_type == event_type)
        .count()
}

async fn a_reactor_killed_between_command_and_checkpoint_pays_once(s: &Setup) {
    let accounts = s.ledger::<AccountStreams>();
    let subscriptions = s.ledger::<Subscriptions>();
    let refunds = s.ledger::<Refunds>();
    let (alice, bob) = (user(7_001), user(7_002));
    pay(
        s,
        "p-credits",
        alice,
        "100",
        "XTR",
        Purpose::Credits(amount("20")),
    )
    .await;
    pay(
        s,
        "p-plan",
        bob,
        "250",
        "XTR",
        Purpose::Plan(PlanId::new("pro").unwrap()),
    )
    .await;

    let projector = s.projector().await;
    let reactor = s.reactors(&projector);
    // The reactor runs its commands, then dies before moving its checkpoint.
    let events = all_events(s.store.as_ref()).await;
    reactor.react(&events).await.unwrap();
    drop(reactor);
    // A new process starts from the old checkpoint: every event is delivered again.
    let restarted = s.reactors(&projector);
    restarted.catch_up().await.unwrap();
    // …and once more for good measure, as a third process would.
    restarted.react(&events).await.unwrap();

    let state = accounts.load(&alice).await.unwrap().state;
    assert_eq!(state.available, "20".parse().unwrap(), "credited once");
    let status = projector.status().await.unwrap();
    let reactor = status.iter().find(|p| p.name == "reactor").unwrap();
    assert_eq!(reactor.lag_events, 0, "{reactor:?}");
    assert_eq!(count_type(s.store.as_ref(), "credits.deposited").await, 1);
    let plan = subscriptions.load(&bob).await.unwrap().state;
    assert_eq!(plan.plan, Some(PlanId::new("pro").unwrap()));
    assert_eq!(
        count_type(s.store.as_ref(), "subscription.started").await,
        1
    );
    assert_eq!(
        count_type(s.store.as_ref(), "subscription.renewed").await,
        0
    );

    // An approved refund returns the credits through the reactor, once.
    exec(
        &accounts,
        alice,
        C::Debit {
            debit_id: DebitId::new("render-1").unwrap(),
            amount: amount("6"),
            reason: reason("render"),
        },
    )
    .await;
    let refund = RefundId::new("r-1").unwrap();
    tally_ledger::workflows::request_refund(
        &accounts,
        &refunds,
        &s.config,
        refund.clone(),
        RefundAsk {
            user_id: alice,
            reference: "debit:render-1".into(),
            amount: amount("4"),
            reason: reason("half of it failed"),
            requested_by: "7001".into(),
        },
        meta(),
    )
    .await
    .unwrap();
    exec(
        &refunds,
        refund,
        RefundCommand::Approve {
            admin: AdminId::new("ops-bob").unwrap(),
            reason: reason("log confirms"),
        },
    )
    .await;
    let after_debit = all_events(s.store.as_ref()).await;
    restarted.react(&after_debit).await.unwrap();
    restarted.catch_up().await.unwrap();
    let state = accounts.load(&alice).await.unwrap().state;
    assert_eq!(state.available, "18".parse().unwrap(), "20 - 6 + 4");
    assert_eq!(count_type(s.store.as_ref(), "credits.refunded").await, 1);
    // The reactor's events name what caused them.
    let deposit = all_events(s.store.as_ref())
        .await
        .into_iter()
        .find(|e| e.event_type == "credits.deposited")
        .unwrap();
    assert_eq!(deposit.metadata.actor.id, "reactor.payments");
    assert!(deposit.metadata.causation_id.is_some());
}

async fn the_hold_sweep_expires_holds_past_their_ttl_once(s: &Setup) {
    let accounts = s.ledger::<AccountStreams>();
    let u = user(7_100);
    let open = C::Open {
        username: None,
        language: None,
    };
    exec(&accounts, u, open).await;
    let grant = C::Grant {
        grant_id: tally_domain::values::GrantId::new("g").unwrap(),
        amount: amount("10"),
        reason: reason("welcome"),
    };
    exec(&accounts, u, grant).await;
    for (id, ttl) in [("stuck", 1), ("running", 3_600)] {
        let place = C::PlaceHold {
            hold_id: HoldId::new(id).unwrap(),
            amount: amount("3"),
            ttl_seconds: ttl,
            reason: reason("job"),
        };
        exec(&accounts, u, place).await;
    }
    let projector = s.projector().await;
    let reactors = s.reactors(&projector);
    projector.catch_up().await.unwrap();
    let early = reactors.sweep(chrono::Utc::now()).await.unwrap();
    assert_eq!(early.holds_expired, 0, "nothing is due yet");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let swept = reactors.sweep(chrono::Utc::now()).await.unwrap();
    assert_eq!(swept.holds_expired, 1);
    let state = accounts.load(&u).await.unwrap().state;
    assert_eq!(
        state.available,
        "7".parse().unwrap(),
        "the stuck job's credits returned"
    );
    assert_eq!(
        state.held,
        "3".parse().unwrap(),
        "the running job keeps its hold"
    );
    // The read model lags: the same hold is offered again and expires nothing more.
    reactors.sweep(chrono::Utc::now()).await.unwrap();
    projector.catch_up().await.unwrap();
    reactors.sweep(chrono::Utc::now()).await.unwrap();
    assert_eq!(
        count_type(s.store.as_ref(), "credits.hold_expired").await,
        1
    );
    let state: String = sqlx::query_scalar("SELECT state FROM holds WHERE hold_id = 'stuck'")
        .fetch_one(projector.pool())
        .await
        .unwrap();
    assert_eq!(state, "expired");
}

async fn scalar(pool: &AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn text(pool: &AnyPool, sql: &str) -> String {
    sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn payments_subscriptions_posts_refunds_and_stats_are_projected(s: &Setup) {
    let accounts = s.ledger::<AccountStreams>();
    let subscriptions = s.ledger::<Subscriptions>();
    let slots = s.ledger::<Slots>();
    let payments = s.ledger::<Payments>();
    let refunds = s.ledger::<Refunds>();
    let (alice, bob) = (user(7_201), user(7_202));
    pay(s, "p1", alice, "100", "XTR", Purpose::Credits(amount("20"))).await;
    pay(
        s,
        "p2",
        bob,
        "4.99",
        "USD",
        Purpose::Plan(PlanId::new("basic").unwrap()),
    )
    .await;
    let failed = PaymentId::new("p3").unwrap();
    let terms = Terms {
        user_id: alice,
        provider: "oxapay".into(),
        amount: amount("9.50"),
        currency: "USD".into(),
        purpose: Purpose::Credits(amount("50")),
    };
    exec(&payments, failed.clone(), PaymentCommand::Create(terms)).await;
    let fail = PaymentCommand::Fail {
        provider: "oxapay".into(),
        reason: reason("card declined"),
    };
    exec(&payments, failed, fail).await;

    let projector = s.projector().await;
    let reactors = s.reactors(&projector);
    reactors.catch_up().await.unwrap();

    // /fix_user_slots 7202 pro, on record.
    let correct = SubscriptionCommand::CorrectPlan {
        plan: PlanId::new("pro").unwrap(),
        admin: AdminId::new("ops-alice").unwrap(),
        reason: reason("paid for pro, got basic"),
    };
    exec(&subscriptions, bob, correct).await;

    let slot = SlotId::new("s1").unwrap();
    let chat = Destination {
        chat_id: -1001,
        topic_id: None,
    };
    let forum = Destination {
        chat_id: -1002,
        topic_id: Some(7),
    };
    let config = SlotConfig {
        user_id: bob,
        content: "Buy my stickers".into(),
        destinations: vec![chat, forum],
        photo: None,
        buttons: Vec::new(),
    };
    exec(&slots, slot.clone(), SlotCommand::Configure(config)).await;
    let attempts = [
        ("a1", chat, Outcome::Failed, Some("rate_limited")),
        ("a2", chat, Outcome::Succeeded, None),
        ("a3", forum, Outcome::Failed, Some("chat_not_found")),
        ("a4", forum, Outcome::Failed, Some("chat_not_found")),
        ("a5", forum, Outcome::Failed, None),
    ];
    for (id, destination, outcome, error) in attempts {
        let attempt = Attempt {
            attempt_id: id.into(),
            cycle: 1,
            destination,
            attempt: 0,
            outcome,
            message_id: (outcome == Outcome::Succeeded).then_some(42),
            error_kind: error.map(str::to_string),
            retry_after: None,
        };
        let record = SlotCommand::RecordAttempt {
            attempt,
            coverage: SlotCoverage::Covered,
        };
        exec(&slots, slot.clone(), record).await;
    }

    let debit = C::Debit {
        debit_id: DebitId::new("d1").unwrap(),
        amount: amount("5"),
        reason: reason("post"),
    };
    exec(&accounts, alice, debit).await;
    // An actor name with characters COPY must escape, for the rebuild below.
    accounts
        .execute(Request {
            key: alice,
            command: C::Grant {
                grant_id: tally_domain::values::GrantId::new("odd-actor").unwrap(),
                amount: amount("0.01"),
                reason: reason("escapes"),
            },
            command_id: None,
            metadata: Metadata::by(Actor::new(ActorKind::Admin, "ops\tab\there\nnew\r\\line")),
        })
        .await
        .unwrap();
    for (id, credits) in [("r-ok", "2"), ("r-no", "1")] {
        let ask = RefundAsk {
            user_id: alice,
            reference: "debit:d1".into(),
            amount: amount(credits),
            reason: reason("partly failed"),
            requested_by: "7201".into(),
        };
        tally_ledger::workflows::request_refund(
            &accounts,
            &refunds,
            &s.config,
            RefundId::new(id).unwrap(),
            ask,
            meta(),
        )
        .await
        .unwrap();
    }
    let approve = RefundCommand::Approve {
        admin: AdminId::new("ops-bob").unwrap(),
        reason: reason("confirmed"),
    };
    exec(&refunds, RefundId::new("r-ok").unwrap(), approve).await;
    let queued = RefundId::new("r-queued").unwrap();
    let ask = RefundAsk {
        user_id: alice,
        reference: "debit:d1".into(),
        amount: amount("0.5"),
        reason: reason("still waiting"),
        requested_by: "7201".into(),
    };
    tally_ledger::workflows::request_refund(&accounts, &refunds, &s.config, queued, ask, meta())
        .await
        .unwrap();
    let reject = RefundCommand::Reject {
        admin: AdminId::new("ops-bob").unwrap(),
        reason: reason("duplicate"),
    };
    exec(&refunds, RefundId::new("r-no").unwrap(), reject).await;
    reactors.catch_up().await.unwrap();
    projector.catch_up().await.unwrap();
    let pool = projector.pool();
    let problems: Vec<String> = sqlx::query_scalar("SELECT detail FROM reactor_problems")
        .fetch_all(pool)
        .await
        .unwrap();
    assert!(problems.is_empty(), "{problems:?}");

    // Payments.
    assert_eq!(
        text(pool, "SELECT status FROM payments WHERE payment_id = 'p1'").await,
        "succeeded"
    );
    assert_eq!(
        text(pool, "SELECT reason FROM payments WHERE payment_id = 'p3'").await,
        "card declined"
    );
    assert_eq!(
        scalar(
            pool,
            "SELECT credits_cents FROM payments WHERE payment_id = 'p1'"
        )
        .await,
        2_000
    );
    // Subscriptions, with the correction on record.
    let row = sqlx::query(
        "SELECT plan, slots, status, payments, corrections FROM subscriptions WHERE user_id = 7202",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (
            row.get::<String, _>(0),
            row.get::<i64, _>(1),
            row.get::<String, _>(2)
        ),
        ("pro".to_string(), 3, "active".to_string())
    );
    assert_eq!((row.get::<i64, _>(3), row.get::<i64, _>(4)), (1, 1));
    let row = sqlx::query("SELECT plan_before, slots_before, plan_after, slots_after, admin, reason FROM subscription_corrections WHERE user_id = 7202")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<String, _>(0),
            row.get::<i64, _>(1),
            row.get::<String, _>(2),
            row.get::<i64, _>(3)
        ),
        ("basic".to_string(), 1, "pro".to_string(), 3)
    );
    assert_eq!(row.get::<String, _>(4), "ops-alice");
    // Slots and post analytics.
    assert_eq!(
        scalar(pool, "SELECT destinations FROM slots WHERE slot_id = 's1'").await,
        2
    );
    assert_eq!(
        scalar(
            pool,
            "SELECT COUNT(*) FROM slot_destinations WHERE slot_id = 's1'"
        )
        .await,
        2
    );
    let row = sqlx::query("SELECT attempts, successes, failures, last_error FROM post_stats WHERE slot_id = 's1' AND chat_id = -1001")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<i64, _>(0),
            row.get::<i64, _>(1),
            row.get::<i64, _>(2),
            row.get::<String, _>(3)
        ),
        (2, 1, 1, "rate_limited".to_string())
    );
    let row = sqlx::query("SELECT attempts, successes, failures, last_error FROM post_stats WHERE chat_id = -1002 AND topic_id = 7")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<i64, _>(0),
            row.get::<i64, _>(1),
            row.get::<i64, _>(2),
            row.get::<String, _>(3)
        ),
        (3, 0, 3, "unknown".to_string())
    );
    assert_eq!(
        scalar(
            pool,
            "SELECT failures FROM post_failures WHERE error_kind = 'chat_not_found'"
        )
        .await,
        2
    );
    // Success rate per slot: 1 of 5.
    assert_eq!(
        scalar(pool, "SELECT CAST(SUM(successes) * 100 / SUM(attempts) AS BIGINT) FROM post_stats WHERE slot_id = 's1'").await,
        20
    );
    // The refund queue.
    let statuses: Vec<(String, String)> =
        sqlx::query("SELECT refund_id, status FROM refunds ORDER BY refund_id")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
    assert_eq!(
        statuses,
        [
            ("r-no".to_string(), "rejected".to_string()),
            ("r-ok".to_string(), "approved".to_string()),
            ("r-queued".to_string(), "requested".to_string())
        ]
    );
    assert_eq!(
        text(
            pool,
            "SELECT decided_by FROM refunds WHERE refund_id = 'r-ok'"
        )
        .await,
        "ops-bob"
    );
    // Daily stats, exact per currency.
    let stat = |metric: &str, unit: &str| {
        format!(
            "SELECT CAST(SUM(value) AS BIGINT) FROM daily_stats WHERE metric = '{metric}' AND unit = '{unit}'"
        )
    };
    assert_eq!(scalar(pool, &stat("revenue_cents", "XTR")).await, 10_000);
    assert_eq!(scalar(pool, &stat("revenue_cents", "USD")).await, 499);
    assert_eq!(scalar(pool, &stat("topups", "USD")).await, 1);
    assert_eq!(scalar(pool, &stat("payments_failed", "count")).await, 1);
    assert_eq!(
        scalar(pool, &stat("new_users", "count")).await,
        1,
        "alice's account"
    );
    assert_eq!(
        scalar(pool, &stat("credits_deposited_cents", "credits")).await,
        2_000
    );
    assert_eq!(
        scalar(pool, &stat("credits_spent_cents", "credits")).await,
        500
    );
    assert_eq!(
        scalar(pool, &stat("credits_refunded_cents", "credits")).await,
        200
    );
    assert_eq!(scalar(pool, &stat("posts_succeeded", "count")).await, 1);
    assert_eq!(scalar(pool, &stat("posts_failed", "count")).await, 4);

    // Every read model rebuilt in one pass equals what was built event by event.
    let names: Vec<&str> = projector.projections().iter().map(|p| p.name()).collect();
    let mut before = Vec::new();
    for name in &names {
        before.push(projector.dump(name).await.unwrap());
    }
    projector.rebuild_many(&names, |_, _| {}).await.unwrap();
    for (name, rows) in names.iter().zip(&before) {
        assert_eq!(&projector.dump(name).await.unwrap(), rows, "{name}");
    }
    // Two rebuilds at once (two processes after a version bump, or a manual rebuild
    // next to a running one) take turns: additive read models count each event once.
    let other = s.projector().await;
    let additive = ["daily_stats", "trial_balance"];
    let (one, two) = tokio::join!(
        projector.rebuild_many(&additive, |_, _| {}),
        other.rebuild_many(&additive, |_, _| {})
    );
    one.unwrap();
    two.unwrap();
    for (name, rows) in names.iter().zip(&before) {
        assert_eq!(
            &projector.dump(name).await.unwrap(),
            rows,
            "{name} after two rebuilds at once"
        );
    }
    let report = projector.verify(|_, _, _| {}).await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.projections.len(), names.len());
}

/// Changes a stored row behind the log's back (the triggers refuse it otherwise).
async fn tamper(s: &Setup, pool: &AnyPool, sql: &str) {
    let mut conn = pool.acquire().await.unwrap();
    if s.postgres {
        let mut tx = sqlx::Acquire::begin(&mut *conn).await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    } else {
        sqlx::query("DROP TRIGGER IF EXISTS events_no_update")
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

async fn audit_verify_reports_a_tampered_read_model_row_and_event(s: &Setup) {
    let accounts = s.ledger::<AccountStreams>();
    let u = user(7_301);
    exec(
        &accounts,
        u,
        C::Open {
            username: None,
            language: None,
        },
    )
    .await;
    for n in 0..5 {
        let debit_or_grant = match n % 2 {
            0 => C::Grant {
                grant_id: tally_domain::values::GrantId::new(format!("g{n}")).unwrap(),
                amount: amount("10"),
                reason: reason("promo"),
            },
            _ => C::Debit {
                debit_id: DebitId::new(format!("d{n}")).unwrap(),
                amount: amount("2.5"),
                reason: reason("post"),
            },
        };
        exec(&accounts, u, debit_or_grant).await;
    }
    let projector = s.projector().await;
    projector.catch_up().await.unwrap();
    let clean = projector.verify(|_, _, _| {}).await.unwrap();
    assert!(clean.ok(), "{:?}", clean.problems);
    assert!(clean.hash_chains_ok && clean.trial_balance_ok && clean.projections_consistent);
    let replay = projector.replay_account(u, AsOf::Latest).await.unwrap();
    assert!(replay.consistent, "{:?}", replay.differences);
    assert_eq!(replay.recomputed.available, "25".parse().unwrap());
    assert_eq!(replay.statement.len(), 5);
    // Point in time: after the first two entries (10 granted, 2.5 spent).
    let second = replay.statement[1].position;
    let then = projector
        .replay_account(u, AsOf::Position(second))
        .await
        .unwrap();
    assert!(then.consistent, "{:?}", then.differences);
    assert_eq!(then.recomputed.available, "7.5".parse().unwrap());
    assert_eq!(then.projected.unwrap().available, "7.5".parse().unwrap());

    // Someone "fixes" the balance in the read model.
    let pool = projector.pool().clone();
    tamper(
        s,
        &pool,
        "UPDATE balances__g1 SET available_cents = available_cents + 10000 WHERE user_id = 7301",
    )
    .await;
    let report = projector.verify(|_, _, _| {}).await.unwrap();
    assert!(!report.projections_consistent);
    assert!(report.hash_chains_ok);
    let problem = report
        .problems
        .iter()
        .find(|p| p.kind == "projection")
        .expect("the tampered row is reported");
    assert_eq!(problem.subject, "accounts / balances");
    assert!(problem.detail.contains("7301"), "{}", problem.detail);
    let replay = projector.replay_account(u, AsOf::Latest).await.unwrap();
    assert!(!replay.consistent);
    assert!(
        replay.differences[0].contains("available"),
        "{:?}",
        replay.differences
    );

    // Someone edits an event in the log.
    let victim = s
        .store
        .read_stream(&StreamId::new("account-7301").unwrap(), 3, 1)
        .await
        .unwrap()
        .remove(0);
    let payload = victim.payload.to_string().replace("2.5", "0.5");
    let sql = match s.postgres {
        true => format!(
            "UPDATE events SET payload = '{payload}'::json WHERE position = {}",
            victim.position
        ),
        false => format!(
            "UPDATE events SET payload = '{payload}' WHERE position = {}",
            victim.position
        ),
    };
    tamper(s, &pool, &sql).await;
    let report = projector.verify(|_, _, _| {}).await.unwrap();
    assert!(!report.hash_chains_ok);
    let chain = report
        .problems
        .iter()
        .find(|p| p.kind == "hash_chain")
        .expect("the edited event is reported");
    assert_eq!(chain.position, Some(victim.position));
    assert_eq!(chain.subject, "account-7301 v3");
}

async fn export_then_import_gives_the_same_events_hashes_and_read_models(s: &Setup) {
    let accounts = s.ledger::<AccountStreams>();
    pay(
        s,
        "px",
        user(7_401),
        "100",
        "XTR",
        Purpose::Credits(amount("20")),
    )
    .await;
    let projector = s.projector().await;
    let reactors = s.reactors(&projector);
    reactors.catch_up().await.unwrap();
    for i in 0..20 {
        let u = user(7_400 + i % 3);
        exec(
            &accounts,
            u,
            C::Open {
                username: Some(format!("u{i}")),
                language: None,
            },
        )
        .await;
        let grant = C::Grant {
            grant_id: tally_domain::values::GrantId::new(format!("g{i}")).unwrap(),
            amount: amount("3.33"),
            reason: reason("promo"),
        };
        exec(&accounts, u, grant).await;
        let hold = HoldId::new(format!("h{i}")).unwrap();
        let place = C::PlaceHold {
            hold_id: hold.clone(),
            amount: amount("1.11"),
            ttl_seconds: 600,
            reason: reason("job"),
        };
        exec(&accounts, u, place).await;
        if i % 2 == 0 {
            exec(
                &accounts,
                u,
                C::CaptureHold {
                    hold_id: hold,
                    amount: None,
                },
            )
            .await;
        }
    }
    projector.catch_up().await.unwrap();

    // Export as JSON lines, exactly as `tally events export` writes them.
    let exported: Vec<String> = all_events(s.store.as_ref())
        .await
        .iter()
        .map(|e| serde_json::to_string(e).unwrap())
        .collect();
    let events: Vec<RecordedEvent> = exported
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();

    let target = if s.postgres {
        TestDatabase::postgres().await
    } else {
        TestDatabase::sqlite()
    };
    let imported_store = open(&target.url).await;
    let mut importer = Importer::new(imported_store.as_ref()).await.unwrap();
    let (first, rest) = events.split_at(events.len() / 2);
    importer.push(first.to_vec()).await.unwrap();
    importer.push(rest.to_vec()).await.unwrap();
    let report = importer.report();
    assert_eq!(report.events_imported as usize, events.len());
    assert!(report.positions_kept);
    let again: Vec<RecordedEvent> = all_events(imported_store.as_ref()).await;
    assert_eq!(again.len(), events.len());
    // Same events (ids, positions, streams, payloads, hashes); only recorded_at is new.
    for (a, b) in again.iter().zip(&events) {
        assert_eq!(
            (a.position, a.event_id, a.hash),
            (b.position, b.event_id, b.hash)
        );
        assert_eq!(
            (&a.stream_id, a.stream_version),
            (&b.stream_id, b.stream_version)
        );
        assert_eq!(
            (&a.payload, &a.metadata, a.occurred_at),
            (&b.payload, &b.metadata, b.occurred_at)
        );
    }
    // Re-running the import finds everything there and appends nothing.
    let mut rerun = Importer::new(imported_store.as_ref()).await.unwrap();
    rerun.push(events.clone()).await.unwrap();
    assert_eq!(rerun.report().events_imported, 0);
    assert_eq!(rerun.report().events_already_present as usize, events.len());
    // An altered export is refused at the altered event, nothing after it appended.
    let mut altered = events.clone();
    altered[3].payload = serde_json::json!({"user_id": 1});
    let other = if s.postgres {
        TestDatabase::postgres().await
    } else {
        TestDatabase::sqlite()
    };
    let other_store = open(&other.url).await;
    let mut importer = Importer::new(other_store.as_ref()).await.unwrap();
    let refused = importer.push(altered).await.unwrap_err();
    assert!(refused.to_string().contains("altered"), "{refused}");

    // Same read models.
    let rebuilt = Projector::open(imported_store.clone(), &target.url, default_projections())
        .await
        .unwrap();
    rebuilt.prepare().await.unwrap();
    rebuilt.catch_up().await.unwrap();
    for projection in default_projections() {
        let name = projection.name();
        assert_eq!(
            rebuilt.dump(name).await.unwrap(),
            projector.dump(name).await.unwrap(),
            "{name}"
        );
    }
    let balance: i64 =
        sqlx::query_scalar("SELECT available_cents FROM balances WHERE user_id = 7401")
            .fetch_one(rebuilt.pool())
            .await
            .unwrap();
    assert!(from_cents(balance) > "20".parse().unwrap());
    drop((rebuilt, imported_store, other_store));
    target.drop_database().await;
    other.drop_database().await;
}

async fn running_reactors_credit_a_payment_and_a_standby_does_nothing_twice(s: &Setup) {
    let accounts = s.ledger::<AccountStreams>();
    let projector = s.projector().await;
    // Two processes run the reactors (on Postgres one holds the lease, one stands by).
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut running = Vec::new();
    for _ in 0..2 {
        let (reactors, stopped) = (s.reactors(&projector), stopped.clone());
        running.push(tokio::spawn(async move { reactors.run(stopped).await }));
    }
    let u = user(7_501);
    pay(s, "live", u, "100", "XTR", Purpose::Credits(amount("20"))).await;
    let started = std::time::Instant::now();
    loop {
        let loaded = accounts.load(&u).await.unwrap();
        if loaded.state.available == "20".parse().unwrap() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the running reactor credits the payment"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    for task in running {
        task.await.unwrap().unwrap();
    }
    assert_eq!(count_type(s.store.as_ref(), "credits.deposited").await, 1);
}
