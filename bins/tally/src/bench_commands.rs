//! `tally bench commands` and `tally bench load`: the command service end to end, on a
//! real store, printed as one JSON line.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Serialize;
use tally_domain::Config;
use tally_domain::account::AccountCommand as C;
use tally_domain::values::{HoldId, PaymentId, Reason, UserId};
use tally_ledger::{Accounts, Ledger, Request};
use tally_store::{Actor, ActorKind, Metadata, PostgresOptions};

use crate::bench::{BackendArg, Target, quantile_ms};

/// Most accounts a benchmark opens.
const ACCOUNTS_MAX: u64 = 1_000_000;
/// Most concurrent tasks.
const CONCURRENCY_MAX: usize = 1_024;
/// Most independent command services.
const SERVICES_MAX: usize = 16;
/// Longest run.
const SECONDS_MAX: u64 = 3_600;
/// Loads `bench load` times.
const COLD_LOADS: usize = 21;
/// Most events `bench load` builds.
const LOAD_EVENTS_MAX: u64 = 1_000_000;

/// Options of `tally bench commands`.
#[derive(Args)]
pub struct CommandsArgs {
    /// Backend to measure; must agree with --database-url when both are given.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BackendArg,
    /// Database (default for sqlite: a scratch file; Postgres needs a scratch database).
    #[arg(long, env = "TALLY_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Accounts to spread commands over (ignored with --hot).
    #[arg(long, default_value_t = 1_000)]
    accounts: u64,
    /// Concurrent tasks sending commands.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// How long to measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Every command goes to one account.
    #[arg(long)]
    hot: bool,
    /// Independent command services on the database, each with its own connections,
    /// as that many processes would be; tasks are spread over them.
    #[arg(long, default_value_t = 1)]
    services: usize,
}

#[derive(Serialize)]
struct CommandsReport {
    backend: &'static str,
    accounts: u64,
    concurrency: usize,
    hot: bool,
    services: usize,
    commands_per_sec: u64,
    /// Commands that did not run (any error).
    failed: u64,
    /// Of the failed: given up after losing [`tally_ledger::COMMAND_ATTEMPTS_MAX`]
    /// races in a row to another service (appended nothing; the client retries).
    contention: u64,
    /// Commands refused by the rules: every account is funded far beyond what the run
    /// spends and every hold is captured at once, so each one is a wrong refusal.
    wrong_refusals: u64,
    p50_ms: f64,
    p99_ms: f64,
    /// Batches re-decided after losing a race with another service.
    retries: u64,
    /// Batches re-decided because another service had moved the stream past the
    /// state they were about to be refused or answered on.
    refreshes: u64,
    commands: u64,
    seconds: f64,
}

/// Options of `tally bench load`.
#[derive(Args)]
pub struct LoadArgs {
    /// Backend to measure; must agree with --database-url when both are given.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BackendArg,
    /// Database (default for sqlite: a scratch file; Postgres needs a scratch database).
    #[arg(long, env = "TALLY_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Events the account gets before it is loaded.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
}

#[derive(Serialize)]
struct LoadReport {
    backend: &'static str,
    events: u64,
    /// A new service loading the account from the log (snapshot + tail): the median of
    /// [`COLD_LOADS`] loads, each from the database, none from memory. The service's
    /// connections are opened first (that is process start-up, not loading an account).
    cold_load_ms: f64,
    /// The slowest of those loads.
    cold_load_max_ms: f64,
    /// A command on the account whose state the service already holds.
    warm_command_ms: f64,
}

pub(crate) fn metadata() -> Metadata {
    Metadata::by(Actor::new(ActorKind::Service, "bench"))
}

/// Opening an account (a no-op once it is open).
fn open_account(key: UserId) -> Request<Accounts> {
    Request {
        key,
        command: C::Open {
            username: None,
            language: None,
        },
        command_id: None,
        metadata: metadata(),
    }
}

pub(crate) fn user(n: u64) -> anyhow::Result<UserId> {
    Ok(UserId::new(i64::try_from(n + 1)?)?)
}

async fn open_store(target: &Target, concurrency: usize) -> anyhow::Result<Ledger<Accounts>> {
    let pool = PostgresOptions {
        max_connections: u32::try_from(concurrency.min(64) + 4).unwrap_or(64),
        ..PostgresOptions::default()
    };
    let store = tally_store::open(&target.url, pool)
        .await
        .with_context(|| format!("opening {}", crate::redact(&target.url)))?;
    Ok(Ledger::new(store, Arc::new(Config::default())))
}

/// Opens and funds accounts `0..n` from `concurrency` tasks.
pub(crate) async fn fund(
    ledger: &Ledger<Accounts>,
    n: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(n as usize).max(1) {
        let (ledger, next) = (ledger.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let key = user(i)?;
                for (command, id) in [
                    (
                        C::Open {
                            username: None,
                            language: None,
                        },
                        None,
                    ),
                    (
                        C::Deposit {
                            payment_id: PaymentId::new("bench-fund")?,
                            amount: "1000000".parse()?,
                        },
                        Some("bench-fund".to_string()),
                    ),
                ] {
                    ledger
                        .execute(Request {
                            key,
                            command,
                            command_id: id,
                            metadata: metadata(),
                        })
                        .await?;
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Runs `tally bench commands`.
pub async fn run(args: CommandsArgs) -> anyhow::Result<()> {
    let accounts = if args.hot { 1 } else { args.accounts };
    if accounts == 0 || accounts > ACCOUNTS_MAX {
        bail!("--accounts must be between 1 and {ACCOUNTS_MAX}");
    }
    if args.concurrency == 0 || args.concurrency > CONCURRENCY_MAX {
        bail!("--concurrency must be between 1 and {CONCURRENCY_MAX}");
    }
    if args.seconds == 0 || args.seconds > SECONDS_MAX {
        bail!("--seconds must be between 1 and {SECONDS_MAX}");
    }
    if args.services == 0 || args.services > SERVICES_MAX {
        bail!("--services must be between 1 and {SERVICES_MAX}");
    }
    let target = Target::choose(args.backend, args.database_url)?;
    let mut services = Vec::with_capacity(args.services);
    for _ in 0..args.services {
        services.push(open_store(&target, args.concurrency.div_ceil(args.services)).await?);
    }
    fund(&services[0], accounts, args.concurrency).await?;

    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let failed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let contention = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let ledger = services[t % services.len()].clone();
        let (failed, refused, run_id) = (failed.clone(), refused.clone(), run_id.clone());
        let contention = contention.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut seed = (t as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut n = 0u64;
            while Instant::now() < deadline {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let key = user(seed % accounts)?;
                let hold_id = format!("{run_id}-{t}-{n}");
                n += 1;
                let place = C::PlaceHold {
                    hold_id: HoldId::new(&hold_id)?,
                    amount: "0.3".parse()?,
                    ttl_seconds: 900,
                    reason: Reason::new("bench job")?,
                };
                let capture = C::CaptureHold {
                    hold_id: HoldId::new(&hold_id)?,
                    amount: Some("0.2".parse()?),
                };
                for (command, id) in [(place, Some(hold_id.clone())), (capture, None)] {
                    let sent = Instant::now();
                    let outcome = ledger
                        .execute(Request {
                            key,
                            command,
                            command_id: id,
                            metadata: metadata(),
                        })
                        .await;
                    match outcome {
                        Ok(_) => latencies
                            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX)),
                        Err(error) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            match error {
                                tally_ledger::LedgerError::Domain(_) => {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                }
                                tally_ledger::LedgerError::Contention { .. } => {
                                    contention.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {}
                            }
                            tracing::debug!(%error, "command failed");
                            break;
                        }
                    }
                }
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    latencies.sort_unstable();
    let seconds = args.seconds as f64;
    let report = CommandsReport {
        backend: target.backend.name(),
        accounts,
        concurrency: args.concurrency,
        hot: args.hot,
        services: args.services,
        commands_per_sec: (latencies.len() as f64 / seconds) as u64,
        failed: failed.load(Ordering::Relaxed),
        contention: contention.load(Ordering::Relaxed),
        wrong_refusals: refused.load(Ordering::Relaxed),
        p50_ms: quantile_ms(&latencies, 0.50),
        p99_ms: quantile_ms(&latencies, 0.99),
        retries: services.iter().map(Ledger::retries).sum(),
        refreshes: services.iter().map(Ledger::refreshes).sum(),
        commands: latencies.len() as u64,
        seconds,
    };
    drop(services);
    drop(target);
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Runs `tally bench load`.
pub async fn load(args: LoadArgs) -> anyhow::Result<()> {
    if args.events == 0 || args.events > LOAD_EVENTS_MAX {
        bail!("--events must be between 1 and {LOAD_EVENTS_MAX}");
    }
    let target = Target::choose(args.backend, args.database_url)?;
    let ledger = open_store(&target, 8).await?;
    // An account of its own, so a database used before does not skew the count.
    let random = uuid::Uuid::now_v7().as_u64_pair().1 >> 24;
    let key = user(random)?;
    ledger.execute(open_account(key)).await?;
    // Build the account from 8 tasks: the service batches them.
    let next = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (ledger, next, events) = (ledger.clone(), next.clone(), args.events);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return anyhow::Ok(());
                }
                let id = format!("load-{i}");
                ledger
                    .execute(Request {
                        key,
                        command: C::Deposit {
                            payment_id: PaymentId::new(&id)?,
                            amount: "1".parse()?,
                        },
                        command_id: Some(id),
                        metadata: metadata(),
                    })
                    .await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    // Snapshots are written in the background; give the last one a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let fresh = open_store(&target, 8).await?;
    // Start-up: a connection and its prepared statements, on an account never written.
    fresh.load(&user(random ^ 1)?).await?;
    let mut loads = Vec::with_capacity(COLD_LOADS);
    for _ in 0..COLD_LOADS {
        let started = Instant::now();
        let loaded = fresh.load(&key).await?;
        loads.push(started.elapsed().as_secs_f64() * 1_000.0);
        if loaded.version != args.events {
            bail!(
                "loaded version {} but built {} events",
                loaded.version,
                args.events
            );
        }
    }
    loads.sort_by(f64::total_cmp);
    let cold_load_ms = loads[COLD_LOADS / 2];
    let cold_load_max_ms = loads[COLD_LOADS - 1];
    let started = Instant::now();
    ledger.execute(open_account(key)).await?;
    let warm_command_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let report = LoadReport {
        backend: target.backend.name(),
        events: args.events,
        cold_load_ms,
        cold_load_max_ms,
        warm_command_ms,
    };
    drop((ledger, fresh));
    drop(target);
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
