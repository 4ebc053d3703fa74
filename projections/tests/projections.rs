//! The projector runtime and read models against real stores: SQLite files and fresh
//! Postgres databases, fed by the real command service.
//!
//! One file: the runtime's cases share one fixture on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{AnyConnection, AnyPool, Row};
use tally_domain::Config;
use tally_domain::account::AccountCommand as C;
use tally_domain::values::{
    AdjustmentId, AdminId, Amount, DebitId, GrantId, HoldId, PaymentId, Reason, UserId,
};
use tally_ledger::{Accounts as AccountStreams, Ledger, Request};
use tally_projections::{
    AccountsReadModel, Batch, Projection, ProjectionError, Projector, TrialBalanceReadModel,
    default_projections, from_cents,
};
use tally_store::testing::TestDatabase;
use tally_store::{Actor, ActorKind, EventStore, Metadata, PostgresOptions};

struct Setup {
    database: TestDatabase,
    store: Arc<dyn EventStore>,
    ledger: Ledger<AccountStreams>,
}

impl tally_store::testing::Fixture for Setup {
    async fn start(backend: tally_store::testing::Backend) -> Self {
        let database = backend.database().await;
        let options = PostgresOptions {
            max_connections: 8,
            ..PostgresOptions::default()
        };
        let store = tally_store::open(&database.url, options).await.unwrap();
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

impl Setup {
    async fn projector(&self, projections: Vec<Arc<dyn Projection>>) -> Projector {
        let projector = Projector::open(self.store.clone(), &self.database.url, projections)
            .await
            .unwrap();
        projector.prepare().await.unwrap();
        projector
    }
}

tally_store::on_both_backends!(
    Setup =>
    read_models_agree_with_the_ledger_and_a_rebuild_equals_them,
    a_batch_killed_midway_applies_nothing_and_the_next_run_applies_it_once,
    two_projectors_racing_apply_every_event_once,
    a_changed_version_is_rebuilt_at_start,
    status_reports_lag_and_wait_for_is_bounded,
);

const USERS: i64 = 12;

fn user(i: i64) -> UserId {
    UserId::new(1_000 + i).unwrap()
}

fn amount(text: &str) -> Amount {
    text.parse().unwrap()
}

fn reason(text: &str) -> Reason {
    Reason::new(text).unwrap()
}

async fn run(ledger: &Ledger<AccountStreams>, u: UserId, command: C) {
    ledger
        .execute(Request {
            key: u,
            command,
            command_id: None,
            metadata: Metadata::by(Actor::new(ActorKind::Service, "test")),
        })
        .await
        .unwrap();
}

/// Every kind of credit-moving event on `USERS` accounts; `round` keeps ids apart.
async fn activity(ledger: &Ledger<AccountStreams>, round: u32) {
    let mut tasks = Vec::new();
    for i in 0..USERS {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let u = user(i);
            let id = |kind: &str| format!("{kind}-{round}-{i}");
            run(
                &ledger,
                u,
                C::Open {
                    username: Some(format!("u{i}")),
                    language: None,
                },
            )
            .await;
            let deposit = C::Deposit {
                payment_id: PaymentId::new(id("pay")).unwrap(),
                amount: amount("20"),
            };
            run(&ledger, u, deposit).await;
            let grant = C::Grant {
                grant_id: GrantId::new(id("grant")).unwrap(),
                amount: amount("1.25"),
                reason: reason("welcome"),
            };
            run(&ledger, u, grant).await;
            for (n, capture) in [(0, Some("0.5")), (1, None)] {
                let hold = HoldId::new(format!("{}-{n}", id("job"))).unwrap();
                let place = C::PlaceHold {
                    hold_id: hold.clone(),
                    amount: amount("2"),
                    ttl_seconds: 600,
                    reason: reason("render"),
                };
                run(&ledger, u, place).await;
                let close = match (i + n) % 3 {
                    0 => C::ReleaseHold {
                        hold_id: hold,
                        reason: reason("failed"),
                    },
                    _ => C::CaptureHold {
                        hold_id: hold,
                        amount: capture.map(amount),
                    },
                };
                run(&ledger, u, close).await;
            }
            let debit = C::Debit {
                debit_id: DebitId::new(id("debit")).unwrap(),
                amount: amount("3.10"),
                reason: reason("post"),
            };
            run(&ledger, u, debit).await;
            let adjust = C::Adjust {
                adjustment_id: AdjustmentId::new(id("adj")).unwrap(),
                amount: "-0.15".parse().unwrap(),
                reason: reason("fix"),
                admin: AdminId::new("ops").unwrap(),
                allow_negative: false,
            };
            run(&ledger, u, adjust).await;
            // An open hold stays open in the read model.
            let open = C::PlaceHold {
                hold_id: HoldId::new(id("open")).unwrap(),
                amount: amount("1"),
                ttl_seconds: 600,
                reason: reason("queued"),
            };
            run(&ledger, u, open).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Every row of the accounts and trial balance read models, as text, in a fixed order.
async fn dump(pool: &AnyPool) -> Vec<String> {
    let mut rows = Vec::new();
    for row in sqlx::query(
        "SELECT user_id, available_cents, held_cents, status, username, position \
         FROM balances ORDER BY user_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    {
        rows.push(format!(
            "balance {} {} {} {} {} {}",
            row.get::<i64, _>(0),
            row.get::<i64, _>(1),
            row.get::<i64, _>(2),
            row.get::<String, _>(3),
            row.get::<String, _>(4),
            row.get::<i64, _>(5)
        ));
    }
    for row in sqlx::query(
        "SELECT user_id, position, kind, amount_cents, balance_after_cents, held_after_cents, \
         reference, actor FROM statement ORDER BY user_id, position",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    {
        rows.push(format!(
            "entry {} {} {} {} {} {} {} {}",
            row.get::<i64, _>(0),
            row.get::<i64, _>(1),
            row.get::<String, _>(2),
            row.get::<i64, _>(3),
            row.get::<i64, _>(4),
            row.get::<i64, _>(5),
            row.get::<String, _>(6),
            row.get::<String, _>(7)
        ));
    }
    for row in sqlx::query(
        "SELECT user_id, hold_id, amount_cents, captured_cents, state FROM holds \
         ORDER BY user_id, hold_id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    {
        rows.push(format!(
            "hold {} {} {} {} {}",
            row.get::<i64, _>(0),
            row.get::<String, _>(1),
            row.get::<i64, _>(2),
            row.get::<i64, _>(3),
            row.get::<String, _>(4)
        ));
    }
    for row in sqlx::query("SELECT account, balance_cents FROM trial_balance ORDER BY account")
        .fetch_all(pool)
        .await
        .unwrap()
    {
        rows.push(format!(
            "posting {} {}",
            row.get::<String, _>(0),
            row.get::<i64, _>(1)
        ));
    }
    rows
}

/// Balances, open holds and trial balance must say what the ledger says.
async fn assert_agrees_with_ledger(s: &Setup, pool: &AnyPool) {
    let mut users_side = rust_decimal::Decimal::ZERO;
    for i in 0..USERS {
        let u = user(i);
        let state = s.ledger.load(&u).await.unwrap().state;
        let row =
            sqlx::query("SELECT available_cents, held_cents FROM balances WHERE user_id = $1")
                .bind(u.get())
                .fetch_one(pool)
                .await
                .unwrap();
        let (available, held) = (from_cents(row.get(0)), from_cents(row.get(1)));
        assert_eq!((available, held), (state.available, state.held), "user {u}");
        let last: i64 = sqlx::query_scalar(
            "SELECT balance_after_cents FROM statement WHERE user_id = $1 \
             ORDER BY position DESC LIMIT 1",
        )
        .bind(u.get())
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(
            from_cents(last),
            state.available,
            "statement of {u} ends at the balance"
        );
        let open: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM holds WHERE user_id = $1 AND state = 'open'",
        )
        .bind(u.get())
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(from_cents(open), state.held, "open holds of {u}");
        users_side += state.available + state.held;
    }
    let rows: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(balance_cents), 0) AS BIGINT) FROM trial_balance \
         WHERE account IN ('users:available', 'users:held')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        from_cents(rows),
        users_side,
        "the users' side is the balances"
    );
    let total: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(balance_cents), 0) AS BIGINT) FROM trial_balance",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(total, 0, "the trial balance sums to zero");
}

async fn generation(pool: &AnyPool, name: &str) -> i64 {
    sqlx::query_scalar("SELECT generation FROM projections WHERE name = $1")
        .bind(name.to_string())
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn read_models_agree_with_the_ledger_and_a_rebuild_equals_them(s: &Setup) {
    activity(&s.ledger, 0).await;
    let projector = s.projector(default_projections()).await;
    projector.catch_up().await.unwrap();
    activity(&s.ledger, 1).await;
    projector.catch_up().await.unwrap();
    let pool = projector.pool().clone();
    assert_agrees_with_ledger(s, &pool).await;
    let incremental = dump(&pool).await;
    assert!(incremental.len() > 200, "{} rows", incremental.len());

    // Rebuilt aside from position 0 and swapped: the same rows, a new generation.
    assert_eq!(generation(&pool, "accounts").await, 1);
    let applied = projector.rebuild("accounts").await.unwrap();
    assert!(applied > 0);
    projector.rebuild("trial_balance").await.unwrap();
    assert_eq!(generation(&pool, "accounts").await, 2);
    assert_eq!(dump(&pool).await, incremental);
    // The projection carries on from the swapped checkpoint.
    activity(&s.ledger, 2).await;
    projector.catch_up().await.unwrap();
    assert_agrees_with_ledger(s, &pool).await;
    let unknown = projector.rebuild("nope").await.unwrap_err();
    assert!(matches!(unknown, ProjectionError::Unknown(_)), "{unknown}");
}

/// The accounts projection, but its handler stops forever after writing its rows, as
/// if the process died before the commit.
struct DiesMidBatch {
    reached: Arc<tokio::sync::Notify>,
    armed: Arc<AtomicBool>,
}

#[async_trait]
impl Projection for DiesMidBatch {
    fn name(&self) -> &'static str {
        AccountsReadModel.name()
    }
    fn version(&self) -> i64 {
        AccountsReadModel.version()
    }
    fn schema(&self) -> &'static str {
        AccountsReadModel.schema()
    }
    fn tables(&self) -> &'static [&'static str] {
        AccountsReadModel.tables()
    }
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        g: &str,
        batch: &Batch,
    ) -> Result<(), ProjectionError> {
        AccountsReadModel.apply(conn, g, batch).await?;
        if self.armed.load(Ordering::SeqCst) {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

async fn a_batch_killed_midway_applies_nothing_and_the_next_run_applies_it_once(s: &Setup) {
    activity(&s.ledger, 0).await;
    let reached = Arc::new(tokio::sync::Notify::new());
    let armed = Arc::new(AtomicBool::new(true));
    let dying = Arc::new(
        s.projector(vec![Arc::new(DiesMidBatch {
            reached: reached.clone(),
            armed: armed.clone(),
        })])
        .await,
    );
    let task = {
        let dying = dying.clone();
        tokio::spawn(async move { dying.step("accounts").await })
    };
    reached.notified().await;
    // Killed after its rows were written, before its commit.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    drop(dying);

    let projector = s.projector(default_projections()).await;
    let status = projector.status().await.unwrap();
    assert_eq!(status[0].checkpoint, 0, "the killed batch moved nothing");
    let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM statement")
        .fetch_one(projector.pool())
        .await
        .unwrap();
    assert_eq!(entries, 0, "the killed batch left no rows");
    projector.catch_up().await.unwrap();
    assert_agrees_with_ledger(s, projector.pool()).await;
    // One statement entry per credit-moving event: nothing applied twice.
    let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM statement")
        .fetch_one(projector.pool())
        .await
        .unwrap();
    assert_eq!(entries, USERS * 9);
}

async fn two_projectors_racing_apply_every_event_once(s: &Setup) {
    activity(&s.ledger, 0).await;
    let a = Arc::new(s.projector(default_projections()).await);
    let b = Arc::new(s.projector(default_projections()).await);
    let race = |p: Arc<Projector>| {
        tokio::spawn(async move {
            for _ in 0..50 {
                for name in ["accounts", "holds", "trial_balance"] {
                    p.step(name).await.unwrap();
                }
            }
        })
    };
    let (x, y) = (race(a.clone()), race(b.clone()));
    activity(&s.ledger, 1).await;
    x.await.unwrap();
    y.await.unwrap();
    a.catch_up().await.unwrap();
    assert_agrees_with_ledger(s, a.pool()).await;
    let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM statement")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(entries, 2 * USERS * 9);
}

/// The trial balance at another version.
struct TrialBalanceV2;

#[async_trait]
impl Projection for TrialBalanceV2 {
    fn name(&self) -> &'static str {
        TrialBalanceReadModel.name()
    }
    fn version(&self) -> i64 {
        TrialBalanceReadModel.version() + 1
    }
    fn schema(&self) -> &'static str {
        TrialBalanceReadModel.schema()
    }
    fn tables(&self) -> &'static [&'static str] {
        TrialBalanceReadModel.tables()
    }
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        g: &str,
        batch: &Batch,
    ) -> Result<(), ProjectionError> {
        TrialBalanceReadModel.apply(conn, g, batch).await
    }
}

async fn a_changed_version_is_rebuilt_at_start(s: &Setup) {
    activity(&s.ledger, 0).await;
    let v1 = s.projector(default_projections()).await;
    v1.catch_up().await.unwrap();
    let before = dump(v1.pool()).await;
    let v2 = s
        .projector(vec![Arc::new(AccountsReadModel), Arc::new(TrialBalanceV2)])
        .await;
    let pool = v2.pool();
    assert_eq!(generation(pool, "trial_balance").await, 2);
    assert_eq!(generation(pool, "accounts").await, 1);
    let status = v2.status().await.unwrap();
    assert_eq!(status[1].version, TrialBalanceReadModel.version() + 1);
    assert_eq!(status[1].lag_events, 0, "rebuilt up to the head");
    assert_eq!(dump(pool).await, before);
}

async fn status_reports_lag_and_wait_for_is_bounded(s: &Setup) {
    let projector = Arc::new(s.projector(default_projections()).await);
    activity(&s.ledger, 0).await;
    let status = projector.status().await.unwrap();
    assert!(
        status.iter().all(|p| p.lag_events > 0 && p.checkpoint == 0),
        "{status:?}"
    );
    assert!(status.iter().all(|p| p.lag_seconds >= 0.0));
    let head = status[0].head;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = {
        let projector = projector.clone();
        tokio::spawn(async move { projector.run(stopped).await })
    };
    projector
        .wait_for("accounts", head, Duration::from_secs(10))
        .await
        .unwrap();
    // New appends are picked up by the running projector.
    activity(&s.ledger, 1).await;
    let head = s.store.last_position().await.unwrap();
    for projection in default_projections() {
        let name = projection.name();
        projector
            .wait_for(name, head, Duration::from_secs(10))
            .await
            .unwrap();
    }
    assert_agrees_with_ledger(s, projector.pool()).await;
    let too_far = projector
        .wait_for("accounts", head + 1_000, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(
        matches!(too_far, ProjectionError::Lagging { .. }),
        "{too_far}"
    );
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
    let status = projector.status().await.unwrap();
    assert!(
        status
            .iter()
            .all(|p| p.lag_events == 0 && p.lag_seconds == 0.0),
        "{status:?}"
    );
}
