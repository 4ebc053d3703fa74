//! `tally bench projections`: how fast read models are rebuilt from the log, and how
//! soon a committed command is visible in the balances while commands keep coming.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use tally_domain::Config;
use tally_domain::account::AccountCommand as C;
use tally_domain::values::{HoldId, PaymentId, Reason};
use tally_ledger::{Accounts, Ledger};
use tally_projections::{Projector, default_projections};
use tally_store::PostgresOptions;

use crate::bench::{BackendArg, Target, quantile_ms};
use crate::bench_commands::{fund, metadata, user};

/// Most events the bench builds.
const EVENTS_MAX: u64 = 10_000_000;
/// Accounts the log is spread over.
const ACCOUNTS: u64 = 1_000;
/// Tasks building the log.
const BUILDERS: usize = 32;

/// Options of `tally bench projections`.
#[derive(Args)]
pub struct ProjectionsArgs {
    /// Backend to measure; must agree with --database-url when both are given.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BackendArg,
    /// Database (default for sqlite: a scratch file; Postgres needs a scratch database:
    /// the rebuild reads the whole log, earlier runs' events included).
    #[arg(long, env = "TALLY_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Events of mixed ledger commands to build before the rebuild.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Commands per second while the append-to-visible time is measured.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Seconds the append-to-visible time is measured for.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

#[derive(Serialize)]
struct Report {
    backend: &'static str,
    /// Events in the log the rebuild read (all of it).
    events: u64,
    /// Events per second rebuilding every read model (one pass over the log).
    rebuild_events_per_sec: u64,
    /// From a command's commit to its effect visible in the balances read model.
    catchup_lag_p50_ms: f64,
    catchup_lag_p99_ms: f64,
    /// Commands measured.
    commands: usize,
}

/// Runs `tally bench projections`.
pub async fn run(args: ProjectionsArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.events > EVENTS_MAX {
        bail!("--events must be between 1 and {EVENTS_MAX}");
    }
    if args.rate == 0 || args.rate > 10_000 {
        bail!("--rate must be between 1 and 10000");
    }
    if args.seconds == 0 || args.seconds > 600 {
        bail!("--seconds must be between 1 and 600");
    }
    let target = Target::choose(args.backend, args.database_url)?;
    let options = PostgresOptions {
        max_connections: 40,
        ..PostgresOptions::default()
    };
    let store = tally_store::open(&target.url, options)
        .await
        .with_context(|| format!("opening {}", crate::redact(&target.url)))?;
    let ledger = Ledger::<Accounts>::new(store.clone(), Arc::new(Config::default()));
    fund(&ledger, ACCOUNTS, BUILDERS).await?;
    build(&ledger, args.events).await?;

    let projector =
        Arc::new(Projector::open(store.clone(), &target.url, default_projections()).await?);
    projector.prepare().await?;
    let events = store.last_position().await?;
    let started = Instant::now();
    let names: Vec<&str> = projector.projections().iter().map(|p| p.name()).collect();
    let applied = projector.rebuild_many(&names, |_, _| {}).await?;
    let rebuild_events_per_sec = (applied as f64 / started.elapsed().as_secs_f64()) as u64;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = {
        let projector = projector.clone();
        tokio::spawn(async move { projector.run(stopped).await })
    };
    let mut waiters = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let mut n = 0u64;
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    while Instant::now() < until {
        tick.tick().await;
        n += 1;
        let (ledger, projector) = (ledger.clone(), projector.clone());
        let id = format!("lag-{run_id}-{n}");
        waiters.push(tokio::spawn(async move {
            let outcome = ledger
                .command(
                    user(n % ACCOUNTS)?,
                    C::Deposit {
                        payment_id: PaymentId::new(&id)?,
                        amount: "1".parse()?,
                    },
                    metadata(),
                )
                .await?;
            let committed = Instant::now();
            projector
                .wait_for("accounts", outcome.position, Duration::from_secs(10))
                .await?;
            anyhow::Ok(u32::try_from(committed.elapsed().as_micros()).unwrap_or(u32::MAX))
        }));
    }
    let mut lags = Vec::with_capacity(waiters.len());
    for waiter in waiters {
        lags.push(waiter.await??);
    }
    stop.send(true)?;
    running.await??;
    lags.sort_unstable();
    let report = Report {
        backend: target.backend.name(),
        events,
        rebuild_events_per_sec,
        catchup_lag_p50_ms: quantile_ms(&lags, 0.50),
        catchup_lag_p99_ms: quantile_ms(&lags, 0.99),
        commands: lags.len(),
    };
    drop((ledger, projector, store));
    drop(target);
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Appends about `events` events of holds and partial captures from many tasks.
async fn build(ledger: &Ledger<Accounts>, events: u64) -> anyhow::Result<()> {
    let made = Arc::new(AtomicU64::new(0));
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let mut tasks = Vec::new();
    for t in 0..BUILDERS {
        let (ledger, made, run_id) = (ledger.clone(), made.clone(), run_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while made.fetch_add(2, Ordering::Relaxed) < events {
                n += 1;
                let key = user((t as u64 * 7_919 + n) % ACCOUNTS)?;
                let hold_id = HoldId::new(format!("{run_id}-{t}-{n}"))?;
                for command in [
                    C::PlaceHold {
                        hold_id: hold_id.clone(),
                        amount: "0.3".parse()?,
                        ttl_seconds: 900,
                        reason: Reason::new("bench job")?,
                    },
                    C::CaptureHold {
                        hold_id: hold_id.clone(),
                        amount: Some("0.2".parse()?),
                    },
                ] {
                    ledger.command(key, command, metadata()).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}
