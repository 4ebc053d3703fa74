//! The command service against real stores: SQLite files and fresh Postgres databases.
//!
//! One file: the command service's cases share one fixture on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::collections::HashMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use tally_domain::Config;
use tally_domain::account::AccountCommand as C;
use tally_domain::values::{Amount, DebitId, GrantId, HoldId, PaymentId, Reason, UserId};
use tally_ledger::aggregate::AccountView;
use tally_ledger::{Accounts, Ledger, LedgerError, Outcome, Payments, Request, Subscriptions};
use tally_store::testing::TestDatabase;
use tally_store::{Actor, ActorKind, EventStore, Metadata, PostgresOptions, StreamId};

struct Setup {
    database: TestDatabase,
    store: Arc<dyn EventStore>,
    ledger: Ledger<Accounts>,
}

impl tally_store::testing::Fixture for Setup {
    async fn start(backend: tally_store::testing::Backend) -> Self {
        let database = backend.database().await;
        let store = open(&database.url).await;
        let ledger = Ledger::new(store.clone(), Arc::new(Config::default()));
        Self {
            database,
            store,
            ledger,
        }
    }

    async fn finish(self) {
        drop(self.ledger);
        drop(self.store);
        self.database.drop_database().await;
    }
}

async fn open(url: &str) -> Arc<dyn EventStore> {
    let options = PostgresOptions {
        max_connections: 8,
        ..PostgresOptions::default()
    };
    tally_store::open(url, options).await.expect("open store")
}

tally_store::on_both_backends!(
    Setup =>
    commands_run_in_order_and_return_state_and_position,
    a_resent_command_returns_its_original_outcome_and_appends_nothing,
    a_resent_id_with_other_content_is_an_idempotency_conflict,
    a_refused_command_appends_nothing,
    a_hot_account_loses_no_command_to_conflicts,
    two_processes_on_one_account_both_succeed,
    a_long_account_is_snapshotted_and_loads_the_same,
    many_tasks_on_hot_and_cold_accounts_match_a_sequential_model,
    a_payment_success_delivered_a_hundred_times_is_stored_once,
    an_admin_plan_correction_is_on_record_with_before_and_after,
    an_approved_refund_returns_the_credits_once,
    a_reused_command_id_fails_alone_not_its_whole_batch,
    a_new_process_recalls_what_the_state_forgot,
    a_reversed_payment_takes_back_its_credits_once_or_is_refused_when_spent,
);

fn user(id: i64) -> UserId {
    UserId::new(id).unwrap()
}

fn amount(text: &str) -> Amount {
    text.parse().unwrap()
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn request(key: UserId, command: C, command_id: Option<&str>) -> Request<Accounts> {
    Request {
        key,
        command,
        command_id: command_id.map(str::to_string),
        metadata: Metadata::by(Actor::new(ActorKind::Service, "test")),
    }
}

async fn run(
    ledger: &Ledger<Accounts>,
    key: UserId,
    command: C,
    id: Option<&str>,
) -> Result<Outcome<AccountView>, LedgerError> {
    ledger.execute(request(key, command, id)).await
}

fn open_account() -> C {
    C::Open {
        username: None,
        language: None,
    }
}

fn deposit(id: &str, credits: &str) -> C {
    C::Deposit {
        payment_id: PaymentId::new(id).unwrap(),
        amount: amount(credits),
    }
}

fn place(id: &str, credits: &str) -> C {
    C::PlaceHold {
        hold_id: HoldId::new(id).unwrap(),
        amount: amount(credits),
        ttl_seconds: 900,
        reason: Reason::new("job").unwrap(),
    }
}

fn debit(id: &str, credits: &str) -> C {
    C::Debit {
        debit_id: DebitId::new(id).unwrap(),
        amount: amount(credits),
        reason: Reason::new("post").unwrap(),
    }
}

async fn events_in(store: &dyn EventStore, key: UserId) -> usize {
    let stream = StreamId::new(format!("account-{key}")).unwrap();
    store.read_stream(&stream, 1, 10_000).await.unwrap().len()
}

async fn commands_run_in_order_and_return_state_and_position(s: &Setup) {
    let u = user(42);
    let opened = run(&s.ledger, u, open_account(), Some("open"))
        .await
        .unwrap();
    assert_eq!(opened.version, 1);
    let funded = run(&s.ledger, u, deposit("pay-1", "10"), None)
        .await
        .unwrap();
    assert!(funded.position > opened.position);
    let held = run(&s.ledger, u, place("job-1", "4"), None).await.unwrap();
    assert_eq!((held.view.available, held.view.held), (dec("6"), dec("4")));
    let captured = run(
        &s.ledger,
        u,
        C::CaptureHold {
            hold_id: HoldId::new("job-1").unwrap(),
            amount: Some(amount("1.5")),
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        (captured.view.available, captured.view.held),
        (dec("8.5"), dec("0"))
    );
    assert_eq!(captured.version, 4);

    let loaded = s.ledger.load(&u).await.unwrap();
    assert_eq!(
        (loaded.state.available, loaded.state.held),
        (captured.view.available, captured.view.held),
        "the log says what the service said"
    );
    let (hold_id, hold) = captured.view.hold.expect("the capture names its hold");
    assert_eq!(hold_id.as_str(), "job-1");
    assert_eq!(hold.state, tally_domain::HoldState::Captured);
    assert_eq!(loaded.position, captured.position);
    let again = run(&s.ledger, u, open_account(), Some("open"))
        .await
        .unwrap();
    assert_eq!(again.version, 4, "opening again appends nothing");
}

async fn a_resent_command_returns_its_original_outcome_and_appends_nothing(s: &Setup) {
    let u = user(43);
    run(&s.ledger, u, open_account(), None).await.unwrap();
    run(&s.ledger, u, deposit("pay-1", "10"), None)
        .await
        .unwrap();
    let first = run(&s.ledger, u, place("job-1", "4"), None).await.unwrap();
    assert!(!first.replayed);
    run(&s.ledger, u, deposit("pay-2", "1"), None)
        .await
        .unwrap();
    let again = run(&s.ledger, u, place("job-1", "4"), None).await.unwrap();
    assert!(again.replayed, "the second time is a replay");
    assert_eq!(again.position, first.position, "with the original position");
    let resent_deposit = run(&s.ledger, u, deposit("pay-1", "10"), None)
        .await
        .unwrap();
    assert!(resent_deposit.replayed);
    assert_eq!(s.ledger.load(&u).await.unwrap().state.available, dec("7"));
    assert_eq!(events_in(s.store.as_ref(), u).await, 4);
}

async fn a_resent_id_with_other_content_is_an_idempotency_conflict(s: &Setup) {
    let u = user(44);
    run(&s.ledger, u, open_account(), None).await.unwrap();
    run(&s.ledger, u, deposit("pay-1", "10"), None)
        .await
        .unwrap();
    run(&s.ledger, u, place("job-1", "4"), None).await.unwrap();
    let err = run(&s.ledger, u, place("job-1", "5"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "idempotency_conflict", "{err}");
    assert_eq!(events_in(s.store.as_ref(), u).await, 3);
}

async fn a_refused_command_appends_nothing(s: &Setup) {
    let u = user(45);
    let err = run(&s.ledger, u, debit("d-1", "1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "account_not_found");
    run(&s.ledger, u, open_account(), None).await.unwrap();
    let err = run(&s.ledger, u, debit("d-1", "1"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "insufficient_credits");
    assert_eq!(events_in(s.store.as_ref(), u).await, 1);
}

async fn a_hot_account_loses_no_command_to_conflicts(s: &Setup) {
    let u = user(46);
    run(&s.ledger, u, open_account(), None).await.unwrap();
    run(&s.ledger, u, deposit("fund", "1000"), None)
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let ledger = s.ledger.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let id = format!("d-{t}-{i}");
                    run(&ledger, u, debit(&id, "0.01"), None)
                        .await
                        .expect("no command on a hot account fails");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(s.ledger.load(&u).await.unwrap().state.available, dec("992"));
    assert_eq!(events_in(s.store.as_ref(), u).await, 2 + 800);
}

async fn two_processes_on_one_account_both_succeed(s: &Setup) {
    let other_store = open(&s.database.url).await;
    let other = Ledger::<Accounts>::new(other_store, Arc::new(Config::default()));
    let u = user(47);
    run(&s.ledger, u, open_account(), None).await.unwrap();
    let mut tasks = Vec::new();
    for (n, ledger) in [s.ledger.clone(), other].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let id = format!("p-{n}-{i}");
                run(&ledger, u, deposit(&id, "1"), None)
                    .await
                    .expect("a conflict with another process is retried, not failed");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(s.ledger.load(&u).await.unwrap().state.available, dec("100"));
    assert_eq!(events_in(s.store.as_ref(), u).await, 101);
}

async fn a_long_account_is_snapshotted_and_loads_the_same(s: &Setup) {
    let u = user(48);
    run(&s.ledger, u, open_account(), None).await.unwrap();
    let mut last = None;
    for i in 0..1_100 {
        let id = format!("p-{i}");
        last = Some(run(&s.ledger, u, deposit(&id, "0.5"), None).await.unwrap());
    }
    let last = last.unwrap();
    let stream = StreamId::new(format!("account-{u}")).unwrap();
    // The newest multiple of the interval at or below the stream's 1,101 events.
    let every = tally_ledger::SNAPSHOT_EVERY_EVENTS;
    let expected = 1_101 / every * every;
    let mut snapshot = None;
    for _ in 0..250 {
        snapshot = s.store.load_snapshot(&stream).await.unwrap();
        if snapshot
            .as_ref()
            .is_some_and(|s| s.stream_version == expected)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        snapshot.expect("snapshots are saved").stream_version,
        expected
    );
    let fresh = Ledger::<Accounts>::new(s.store.clone(), Arc::new(Config::default()));
    let loaded = fresh.load(&u).await.unwrap();
    assert_eq!(loaded.state, s.ledger.load(&u).await.unwrap().state);
    assert_eq!(loaded.state.available, last.view.available);
    assert_eq!(
        (loaded.version, loaded.position),
        (last.version, last.position)
    );
    assert_eq!(loaded.state.available, dec("550"));
}

/// 32 tasks × 500 commands over 5 hot and 1,000 cold accounts, every 10th command a
/// re-submission of an earlier one. Balances must equal a model that applies each
/// command id once, and each id must have produced its events exactly once.
async fn many_tasks_on_hot_and_cold_accounts_match_a_sequential_model(s: &Setup) {
    const TASKS: u64 = 32;
    const COMMANDS: u64 = 500;
    let hot: Vec<UserId> = (1..=5).map(|i| user(1_000 + i)).collect();
    let cold: Vec<UserId> = (1..=1_000).map(|i| user(2_000 + i)).collect();
    let all: Vec<UserId> = hot.iter().chain(&cold).copied().collect();

    // Open and fund every account, from many tasks.
    let chunks: Vec<Vec<UserId>> = all
        .chunks(all.len().div_ceil(32))
        .map(<[UserId]>::to_vec)
        .collect();
    let mut openers = Vec::new();
    for chunk in chunks {
        let ledger = s.ledger.clone();
        openers.push(tokio::spawn(async move {
            for u in chunk {
                run(&ledger, u, open_account(), None).await.unwrap();
                run(&ledger, u, deposit("fund", "10000"), None)
                    .await
                    .unwrap();
            }
        }));
    }
    for opener in openers {
        opener.await.unwrap();
    }

    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let ledger = s.ledger.clone();
            let (hot, cold) = (hot.clone(), cold.clone());
            tokio::spawn(async move {
                let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                let mut next = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                // What this task applied, per account, in cents: the model.
                let mut model: HashMap<UserId, i64> = HashMap::new();
                let mut sent: Vec<(UserId, C, String)> = Vec::new();
                let mut commands = 0;
                while commands < COMMANDS {
                    if commands % 10 == 9 && !sent.is_empty() {
                        let (u, command, id) = sent[(next() % sent.len() as u64) as usize].clone();
                        let outcome = run(&ledger, u, command, None)
                            .await
                            .expect("a re-send is answered");
                        assert!(outcome.replayed, "re-sent {id} must be a replay");
                        commands += 1;
                        continue;
                    }
                    let u = if next() % 2 == 0 {
                        hot[(next() % hot.len() as u64) as usize]
                    } else {
                        cold[(next() % cold.len() as u64) as usize]
                    };
                    let id = format!("t{t}-c{commands}");
                    let (command, cents) = match next() % 4 {
                        0 => (deposit(&id, "1"), 100),
                        1 => (
                            C::Grant {
                                grant_id: GrantId::new(&id).unwrap(),
                                amount: amount("0.5"),
                                reason: Reason::new("bonus").unwrap(),
                            },
                            50,
                        ),
                        2 => (debit(&id, "0.1"), -10),
                        _ => {
                            // A hold then its partial capture: two commands.
                            run(&ledger, u, place(&id, "0.3"), None)
                                .await
                                .expect("hold");
                            commands += 1;
                            (
                                C::CaptureHold {
                                    hold_id: HoldId::new(&id).unwrap(),
                                    amount: Some(amount("0.2")),
                                },
                                -20,
                            )
                        }
                    };
                    let is_capture = cents == -20;
                    run(
                        &ledger,
                        u,
                        command.clone(),
                        (!is_capture).then_some(id.as_str()),
                    )
                    .await
                    .expect("every command succeeds");
                    if !is_capture {
                        sent.push((u, command, id));
                    }
                    *model.entry(u).or_default() += cents;
                    commands += 1;
                }
                model
            })
        })
        .collect();

    let mut expected: HashMap<UserId, i64> = all.iter().map(|u| (*u, 1_000_000)).collect();
    for task in tasks {
        for (u, cents) in task.await.unwrap() {
            *expected.entry(u).or_default() += cents;
        }
    }
    let mut total_events = 0;
    for u in &all {
        let loaded = s.ledger.load(u).await.unwrap();
        let want = Decimal::new(expected[u], 2);
        assert_eq!(loaded.state.available, want, "account {u}");
        assert_eq!(loaded.state.held, Decimal::ZERO, "account {u}");
        assert!(loaded.state.available >= Decimal::ZERO);
        total_events += events_in(s.store.as_ref(), *u).await;
    }
    // Every command id applied once: the events are exactly what the model counted.
    let mut ids_in_log = HashMap::new();
    let mut after = 0;
    loop {
        let page = s.store.read_all(after, 5_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in &page {
            if let Some(key) = &e.metadata.idempotency_key {
                *ids_in_log
                    .entry((e.stream_id.clone(), key.clone(), e.event_type.clone()))
                    .or_insert(0) += 1;
            }
        }
    }
    assert!(
        ids_in_log.values().all(|n| *n == 1),
        "an id was applied twice"
    );
    assert!(total_events > 2 * all.len());
}

fn meta() -> Metadata {
    Metadata::by(Actor::new(ActorKind::Webhook, "stars"))
}

async fn a_payment_success_delivered_a_hundred_times_is_stored_once(s: &Setup) {
    use tally_domain::payment::{PaymentCommand as P, Purpose, Terms};
    let payments = Ledger::<Payments>::new(s.store.clone(), Arc::new(Config::default()));
    let key = PaymentId::new("pay-100").unwrap();
    let terms = Terms {
        user_id: user(49),
        provider: "stars".into(),
        amount: amount("180"),
        currency: "XTR".into(),
        purpose: Purpose::Credits(amount("20")),
    };
    let create = |terms: Terms| Request::<Payments> {
        key: key.clone(),
        command: P::Create(terms),
        command_id: None,
        metadata: meta(),
    };
    payments.execute(create(terms.clone())).await.unwrap();
    let succeed = |charge: &str, paid: &str| Request::<Payments> {
        key: key.clone(),
        command: P::Succeed {
            provider: "stars".into(),
            provider_payment_id: charge.into(),
            amount: amount(paid),
            currency: "XTR".into(),
        },
        command_id: None,
        metadata: meta(),
    };
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (payments, request) = (payments.clone(), succeed("charge-1", "180"));
            tokio::spawn(async move { payments.execute(request).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("every delivery is answered");
    }
    let err = payments
        .execute(succeed("charge-1", "18"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "payment_conflict");
    let stream = StreamId::new("payment-pay-100").unwrap();
    let stored = s.store.read_stream(&stream, 1, 100).await.unwrap();
    let types: Vec<&str> = stored.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["payment.created", "payment.succeeded"]);
}

async fn an_admin_plan_correction_is_on_record_with_before_and_after(s: &Setup) {
    use tally_domain::subscription::SubscriptionCommand as S;
    use tally_domain::values::{AdminId, PlanId};
    let subscriptions = Ledger::<Subscriptions>::new(s.store.clone(), Arc::new(Config::default()));
    let u = user(7_172_873_873);
    let run = |command: S| Request::<Subscriptions> {
        key: u,
        command,
        command_id: None,
        metadata: Metadata::by(Actor::new(ActorKind::Admin, "421337")),
    };
    let paid = subscriptions
        .execute(run(S::Pay {
            payment_id: PaymentId::new("p-ent").unwrap(),
            plan: PlanId::new("enterprise").unwrap(),
        }))
        .await
        .unwrap();
    assert_eq!(paid.view.slots, 5);
    let fixed = subscriptions
        .execute(run(S::CorrectPlan {
            plan: PlanId::new("basic").unwrap(),
            admin: AdminId::new("421337").unwrap(),
            reason: Reason::new("paid for basic").unwrap(),
        }))
        .await
        .unwrap();
    assert_eq!(
        (fixed.view.plan.unwrap().as_str(), fixed.view.slots),
        ("basic", 1)
    );
    let stream = StreamId::new(format!("subscription-{u}")).unwrap();
    let last = s.store.read_stream(&stream, 2, 1).await.unwrap().remove(0);
    assert_eq!(last.event_type, "subscription.slots_corrected");
    assert_eq!(last.payload["plan_before"], "enterprise");
    assert_eq!(last.payload["slots_before"], 5);
    assert_eq!(last.payload["slots_after"], 1);
    assert_eq!(last.metadata.actor.id, "421337");
}

async fn an_approved_refund_returns_the_credits_once(s: &Setup) {
    use tally_domain::refund::RefundAsk;
    use tally_domain::values::{AdminId, RefundId};
    use tally_ledger::Refunds;
    use tally_ledger::workflows::{approve_refund, request_refund};
    let config = Config::default();
    let refunds = Ledger::<Refunds>::new(s.store.clone(), Arc::new(config.clone()));
    let u = user(50);
    run(&s.ledger, u, open_account(), None).await.unwrap();
    run(&s.ledger, u, deposit("pay-1", "10"), None)
        .await
        .unwrap();
    run(&s.ledger, u, place("job-1", "4"), None).await.unwrap();
    run(
        &s.ledger,
        u,
        C::CaptureHold {
            hold_id: HoldId::new("job-1").unwrap(),
            amount: Some(amount("3")),
        },
        None,
    )
    .await
    .unwrap();
    let ask = |credits: &str| RefundAsk {
        user_id: u,
        reference: "hold:job-1".into(),
        amount: amount(credits),
        reason: Reason::new("the render never arrived").unwrap(),
        requested_by: "ops-alice".into(),
    };
    let id = RefundId::new("r-1").unwrap();
    let meta = || Metadata::by(Actor::new(ActorKind::Admin, "ops-alice"));
    let too_much =
        request_refund(&s.ledger, &refunds, &config, id.clone(), ask("3.5"), meta()).await;
    assert_eq!(too_much.unwrap_err().code(), "refund_not_allowed");
    request_refund(&s.ledger, &refunds, &config, id.clone(), ask("3"), meta())
        .await
        .unwrap();

    let reason = || Reason::new("job log shows failure").unwrap();
    let own = approve_refund(
        &s.ledger,
        &refunds,
        id.clone(),
        AdminId::new("ops-alice").unwrap(),
        reason(),
        meta(),
    )
    .await;
    assert_eq!(own.unwrap_err().code(), "self_approval");
    let bob = || AdminId::new("ops-bob").unwrap();
    let approved = approve_refund(&s.ledger, &refunds, id.clone(), bob(), reason(), meta())
        .await
        .unwrap();
    assert_eq!(
        approved.view.available,
        dec("10"),
        "7 left after the capture, 3 back"
    );
    let again = approve_refund(&s.ledger, &refunds, id.clone(), bob(), reason(), meta())
        .await
        .unwrap();
    assert!(again.replayed, "approving again returns nothing twice");
    assert_eq!(s.ledger.load(&u).await.unwrap().state.available, dec("10"));
}

async fn a_reused_command_id_fails_alone_not_its_whole_batch(s: &Setup) {
    let u = user(51);
    run(&s.ledger, u, open_account(), None).await.unwrap();
    run(&s.ledger, u, deposit("pay-1", "100"), None)
        .await
        .unwrap();
    // Payment pay-1 again with another amount: the state keeps no list of payments, but
    // the log has the events of `deposit:pay-1`.
    let mut tasks = vec![{
        let ledger = s.ledger.clone();
        tokio::spawn(async move { run(&ledger, u, deposit("pay-1", "5"), None).await })
    }];
    for i in 0..10 {
        let ledger = s.ledger.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("d-{i}");
            run(&ledger, u, debit(&id, "1"), None).await
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    assert_eq!(
        results[0].as_ref().unwrap_err().code(),
        "idempotency_conflict"
    );
    assert!(results[1..].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(s.ledger.load(&u).await.unwrap().state.available, dec("90"));
}

async fn a_new_process_recalls_what_the_state_forgot(s: &Setup) {
    use tally_domain::account::CLOSED_HOLDS_KEPT;
    use tally_domain::refund::RefundAsk;
    use tally_domain::values::{AdminId, RefundId};
    use tally_ledger::Refunds;
    use tally_ledger::workflows::{approve_refund, request_refund};
    let u = user(60);
    run(&s.ledger, u, open_account(), None).await.unwrap();
    run(&s.ledger, u, deposit("pay-1", "100"), None)
        .await
        .unwrap();
    let capture = |id: &str, credits: Option<&str>| C::CaptureHold {
        hold_id: HoldId::new(id).unwrap(),
        amount: credits.map(amount),
    };
    run(&s.ledger, u, place("old", "2"), None).await.unwrap();
    run(&s.ledger, u, capture("old", Some("2")), None)
        .await
        .unwrap();
    // More holds close after it than an account state keeps.
    let mut tasks = Vec::new();
    for task in 0..8 {
        let ledger = s.ledger.clone();
        tasks.push(tokio::spawn(async move {
            for i in (task..=CLOSED_HOLDS_KEPT).step_by(8) {
                let id = format!("later-{i}");
                run(&ledger, u, place(&id, "1"), None).await.unwrap();
                let release = C::ReleaseHold {
                    hold_id: HoldId::new(&id).unwrap(),
                    reason: Reason::new("job failed").unwrap(),
                };
                run(&ledger, u, release, None).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let events_before = events_in(&*s.store, u).await;

    // A new process: its state comes from a snapshot and the tail, and has forgotten
    // both the payment and the hold.
    let config = Config::default();
    let fresh = Ledger::<Accounts>::new(s.store.clone(), Arc::new(config.clone()));
    let loaded = fresh.load(&u).await.unwrap();
    assert!(
        !loaded
            .state
            .holds
            .contains_key(&HoldId::new("old").unwrap())
    );
    assert_eq!(loaded.state.available, dec("98"));

    let resent = run(&fresh, u, deposit("pay-1", "100"), None).await.unwrap();
    assert!(resent.replayed, "a payment credited long ago is a replay");
    assert_eq!(resent.view.available, dec("98"));
    let other = run(&fresh, u, deposit("pay-1", "50"), None).await;
    assert_eq!(other.unwrap_err().code(), "idempotency_conflict");
    let again = run(&fresh, u, capture("old", Some("2")), None)
        .await
        .unwrap();
    assert!(again.replayed, "the same capture re-sent is a replay");
    let release = C::ReleaseHold {
        hold_id: HoldId::new("old").unwrap(),
        reason: Reason::new("job failed").unwrap(),
    };
    let err = run(&fresh, u, release, None).await.unwrap_err();
    assert_eq!(err.code(), "hold_not_open");
    assert!(err.to_string().contains("captured"), "{err}");
    assert_eq!(
        events_in(&*s.store, u).await,
        events_before,
        "nothing appended"
    );

    // The hold's spend is still refundable, once.
    let refunds = Ledger::<Refunds>::new(s.store.clone(), Arc::new(config.clone()));
    let ask = RefundAsk {
        user_id: u,
        reference: "hold:old".into(),
        amount: amount("2"),
        reason: Reason::new("never delivered").unwrap(),
        requested_by: "ops-alice".into(),
    };
    let id = RefundId::new("r-old").unwrap();
    let meta = || Metadata::by(Actor::new(ActorKind::Admin, "ops-alice"));
    request_refund(&fresh, &refunds, &config, id.clone(), ask, meta())
        .await
        .unwrap();
    let bob = AdminId::new("ops-bob").unwrap();
    let reason = Reason::new("confirmed").unwrap();
    let approved = approve_refund(&fresh, &refunds, id, bob, reason, meta())
        .await
        .unwrap();
    assert_eq!(approved.view.available, dec("100"));
    assert_eq!(events_in(&*s.store, u).await, events_before + 1);
}

/// The services decide at the time their clock reads: a hold's expiry is refused
/// until the clock passes its ttl, then accepted, with no waiting (the clock a test
/// moves, as the system's moves in production).
#[tokio::test]
async fn a_moved_clock_decides_a_holds_expiry_without_waiting() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let database = TestDatabase::sqlite();
    let store = open(&database.url).await;
    let ahead = Arc::new(AtomicI64::new(0));
    let seconds = ahead.clone();
    let clock = tally_ledger::Clock::from_fn(move || {
        chrono::Utc::now() + chrono::Duration::seconds(seconds.load(Ordering::SeqCst))
    });
    let ledger = Ledger::<Accounts>::with_clock(store, Arc::new(Config::default()), clock);
    let user = user(77);
    run(&ledger, user, open_account(), None).await.unwrap();
    run(&ledger, user, deposit("p-clock", "10"), None)
        .await
        .unwrap();
    run(&ledger, user, place("h-clock", "4"), None)
        .await
        .unwrap();
    let expire = || C::ExpireHold {
        hold_id: HoldId::new("h-clock").unwrap(),
    };
    let early = run(&ledger, user, expire(), None).await.unwrap_err();
    assert_eq!(early.code(), "validation", "{early}");
    assert_eq!(ledger.load(&user).await.unwrap().state.available, dec("6"));
    ahead.store(901, Ordering::SeqCst);
    let expired = run(&ledger, user, expire(), None).await.unwrap();
    assert_eq!(expired.view.available, dec("10"));
    database.drop_database().await;
}

/// A refund of a paid credits payment: the payment reversed and its credits taken
/// back in one append; re-sent: the same answer, nothing more; when the user spent
/// the credits: refused with what is available and nothing appended, unless the
/// admin lets the balance go negative; a plan payment's period is taken back.
async fn a_reversed_payment_takes_back_its_credits_once_or_is_refused_when_spent(s: &Setup) {
    use tally_domain::payment::{PaymentCommand as P, Purpose, Terms};
    use tally_domain::values::AdminId;
    use tally_ledger::workflows::{fulfil_payment, reverse_payment};
    let ledgers = tally_ledger::Ledgers::new(s.store.clone(), Arc::new(Config::default()));
    let pay = |id: &str, who: i64, credits: &str| {
        let (ledgers, id, credits) = (ledgers.clone(), id.to_string(), credits.to_string());
        async move {
            let key = PaymentId::new(id.clone()).unwrap();
            let purpose = Purpose::Credits(amount(&credits));
            for command in [
                P::Create(Terms {
                    user_id: user(who),
                    provider: "stars".into(),
                    amount: amount("100"),
                    currency: "XTR".into(),
                    purpose: purpose.clone(),
                }),
                P::Succeed {
                    provider: "stars".into(),
                    provider_payment_id: format!("ch-{id}"),
                    amount: amount("100"),
                    currency: "XTR".into(),
                },
            ] {
                ledgers
                    .payments
                    .command(key.clone(), command, meta())
                    .await
                    .unwrap();
            }
            fulfil_payment(
                &ledgers.accounts,
                &ledgers.subscriptions,
                key,
                user(who),
                purpose,
                meta(),
            )
            .await
            .unwrap();
        }
    };
    let admin = AdminId::new("ops").unwrap();
    let reverse = |id: &str, force: bool| {
        let (ledgers, admin, id) = (ledgers.clone(), admin.clone(), id.to_string());
        async move {
            reverse_payment(
                &ledgers,
                PaymentId::new(id).unwrap(),
                admin,
                Reason::new("asked by the user").unwrap(),
                force,
                meta(),
            )
            .await
        }
    };
    pay("rev-1", 71, "20").await;
    let first = reverse("rev-1", false).await.unwrap();
    assert_eq!(first.available, Some(dec("0")));
    let head = s.store.last_position().await.unwrap();
    let again = reverse("rev-1", false).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.available, Some(dec("0")));
    assert_eq!(s.store.last_position().await.unwrap(), head, "nothing more");
    let types = |stream: &str| {
        let (store, stream) = (s.store.clone(), stream.to_string());
        async move {
            store
                .read_stream(&StreamId::new(stream).unwrap(), 1, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_type)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        types("payment-rev-1").await,
        ["payment.created", "payment.succeeded", "payment.reversed"]
    );

    // Spent: refused, nothing appended; forced: the balance goes negative, on record.
    pay("rev-2", 72, "20").await;
    run(&s.ledger, user(72), debit("d-72", "15"), None)
        .await
        .unwrap();
    let head = s.store.last_position().await.unwrap();
    let refused = reverse("rev-2", false).await.unwrap_err();
    assert_eq!(refused.code(), "insufficient_credits", "{refused}");
    assert!(
        refused.to_string().contains('5'),
        "says what is available: {refused}"
    );
    assert_eq!(s.store.last_position().await.unwrap(), head);
    assert_eq!(types("payment-rev-2").await.len(), 2, "still paid");
    let forced = reverse("rev-2", true).await.unwrap();
    assert_eq!(forced.available, Some(dec("-15")));

    // Not paid: refused.
    let unknown = reverse("rev-none", false).await.unwrap_err();
    assert_eq!(unknown.code(), "payment_not_found");

    // A plan: its period taken back with the reversal, once.
    let plan_payment = PaymentId::new("rev-plan").unwrap();
    let plan = Purpose::Plan(tally_domain::values::PlanId::new("basic").unwrap());
    for command in [
        P::Create(Terms {
            user_id: user(73),
            provider: "stars".into(),
            amount: amount("100"),
            currency: "XTR".into(),
            purpose: plan.clone(),
        }),
        P::Succeed {
            provider: "stars".into(),
            provider_payment_id: "ch-rev-plan".into(),
            amount: amount("100"),
            currency: "XTR".into(),
        },
    ] {
        ledgers
            .payments
            .command(plan_payment.clone(), command, meta())
            .await
            .unwrap();
    }
    fulfil_payment(
        &ledgers.accounts,
        &ledgers.subscriptions,
        plan_payment.clone(),
        user(73),
        plan,
        meta(),
    )
    .await
    .unwrap();
    let paid_end = ledgers
        .subscriptions
        .load(&user(73))
        .await
        .unwrap()
        .state
        .period_end
        .unwrap();
    let taken = reverse("rev-plan", false).await.unwrap();
    assert_eq!(
        taken.period_end,
        Some(paid_end - chrono::Duration::days(30)),
        "one period (30 days) taken back"
    );
    let head = s.store.last_position().await.unwrap();
    let again = reverse("rev-plan", false).await.unwrap();
    assert_eq!(again.period_end, taken.period_end);
    assert_eq!(s.store.last_position().await.unwrap(), head, "once");
    assert_eq!(
        types("subscription-73").await,
        ["subscription.started", "subscription.period_taken_back"]
    );
}
