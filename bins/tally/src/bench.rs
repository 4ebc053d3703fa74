//! `tally bench …`: throughput and latency of the real store on this machine, printed as
//! one JSON line so runs can be compared and recorded. Speed is measured here, never in
//! timed tests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;
use tally_store::{
    Actor, ActorKind, Backend, EventStore, ExpectedVersion, Metadata, NewEvent, PostgresOptions,
    StreamId,
};

/// Most concurrent writers a benchmark may start.
const WRITERS_MAX: usize = 1_024;
/// Longest a benchmark may run.
const SECONDS_MAX: u64 = 3_600;

/// What to measure.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Appends from concurrent writers, each to its own streams with an exact expected
    /// version, every commit durable.
    Append(AppendArgs),
    /// Ledger commands (hold, then partial capture: two commands) through the command
    /// service from concurrent tasks, on many accounts or one hot one.
    Commands(crate::bench_commands::CommandsArgs),
    /// How fast a long account's state is ready: loaded cold from the log, and warm.
    Load(crate::bench_commands::LoadArgs),
    /// Read models: rebuild throughput over a log of mixed ledger events, and the time
    /// from append to visible in the balances while commands run at a steady rate.
    Projections(crate::bench_projections::ProjectionsArgs),
    /// The HTTP API over loopback keep-alive connections: 1,000 accounts funded by
    /// admin grants, then hold + partial capture pairs.
    Http(crate::bench_http::HttpArgs),
    /// The poster: one cycle of ad slots through a fake Bot API that enforces
    /// Telegram's limits (answering 429 beyond them): posts/s against the 30/s
    /// per-bot limit, 429s received, CPU time per post.
    Poster(crate::bench_poster::PosterArgs),
    /// Webhook deliveries to a local receiver with 1, 10 and 100 endpoints:
    /// deliveries/s and the delivery lag p50/p99.
    Webhooks(crate::bench_webhooks::WebhooksArgs),
}

/// The backend to measure.
#[derive(Clone, Copy, ValueEnum)]
pub enum BackendArg {
    /// Embedded SQLite with group commit.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Options of `tally bench append`.
#[derive(Args)]
pub struct AppendArgs {
    /// Backend to measure; must agree with --database-url when both are given.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BackendArg,
    /// Database to append to. Default for sqlite: a fresh file in a temporary folder,
    /// removed afterwards. Postgres needs a URL (events stay there; use a scratch database).
    #[arg(long, env = "TALLY_BENCH_DATABASE_URL")]
    database_url: Option<String>,
    /// Concurrent writers.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Events per append call.
    #[arg(long, default_value_t = 1)]
    events_per_append: usize,
    /// How long to measure, after a one-second warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Postgres only: group-commit lanes (merged appends in flight at once).
    #[arg(long, default_value_t = PostgresOptions::default().append_lanes)]
    append_lanes: usize,
}

#[derive(Serialize)]
struct AppendReport {
    backend: &'static str,
    writers: usize,
    events_per_append: usize,
    events_per_sec: u64,
    appends_per_sec: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    appends: u64,
    seconds: f64,
    durable: bool,
}

/// Runs a benchmark and prints its JSON line on stdout.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Append(args) => append(args).await,
        BenchCommand::Commands(args) => crate::bench_commands::run(args).await,
        BenchCommand::Load(args) => crate::bench_commands::load(args).await,
        BenchCommand::Projections(args) => crate::bench_projections::run(args).await,
        BenchCommand::Http(args) => crate::bench_http::run(args).await,
        BenchCommand::Poster(args) => crate::bench_poster::run(args).await,
        BenchCommand::Webhooks(args) => crate::bench_webhooks::run(args).await,
    }
}

async fn append(args: AppendArgs) -> anyhow::Result<()> {
    if args.writers == 0 || args.writers > WRITERS_MAX {
        bail!("--writers must be between 1 and {WRITERS_MAX}");
    }
    if args.events_per_append == 0
        || args.events_per_append > tally_store::limits::EVENTS_PER_APPEND_MAX
    {
        bail!(
            "--events-per-append must be between 1 and {}",
            tally_store::limits::EVENTS_PER_APPEND_MAX
        );
    }
    if args.seconds == 0 || args.seconds > SECONDS_MAX {
        bail!("--seconds must be between 1 and {SECONDS_MAX}");
    }
    let target = Target::choose(args.backend, args.database_url)?;
    let (url, backend) = (target.url.clone(), target.backend);
    let pool = PostgresOptions {
        max_connections: u32::try_from(args.writers + 4).unwrap_or(u32::MAX),
        min_connections: u32::try_from(args.append_lanes + 2).unwrap_or(u32::MAX),
        append_lanes: args.append_lanes,
        ..PostgresOptions::default()
    };
    let store = tally_store::open(&url, pool)
        .await
        .with_context(|| format!("opening {}", crate::redact(&url)))?;

    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let warm_up = Duration::from_secs(1);
    let measure = Duration::from_secs(args.seconds);
    let started = Instant::now();
    let writers: Vec<_> = (0..args.writers)
        .map(|w| {
            let store = store.clone();
            let stream = StreamId::new(format!("bench-{run_id}-{w}"));
            tokio::spawn(writer(
                store,
                stream,
                args.events_per_append,
                started,
                warm_up,
                measure,
            ))
        })
        .collect();
    let mut latencies_us: Vec<u32> = Vec::new();
    for w in writers {
        latencies_us.extend(w.await.context("a writer task panicked")??);
    }
    let elapsed = measure.as_secs_f64();
    latencies_us.sort_unstable();
    let appends = latencies_us.len() as u64;
    let quantile = |q: f64| quantile_ms(&latencies_us, q);
    let report = AppendReport {
        backend: backend.name(),
        writers: args.writers,
        events_per_append: args.events_per_append,
        events_per_sec: (appends as f64 * args.events_per_append as f64 / elapsed) as u64,
        appends_per_sec: (appends as f64 / elapsed) as u64,
        p50_ms: quantile(0.50),
        p99_ms: quantile(0.99),
        max_ms: quantile(1.0),
        appends,
        seconds: elapsed,
        durable: true,
    };
    drop(store);
    drop(target);
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// The database a benchmark runs against; a scratch SQLite file is removed on drop.
pub struct Target {
    /// Its URL.
    pub url: String,
    /// Its backend.
    pub backend: Backend,
    scratch: Option<PathBuf>,
}

impl Target {
    /// The given database, or a scratch SQLite file; checks they agree with `backend`.
    pub fn choose(backend: BackendArg, database_url: Option<String>) -> anyhow::Result<Self> {
        let mut scratch = None;
        let url = match (backend, database_url) {
            (_, Some(url)) => url,
            (BackendArg::Sqlite, None) => {
                let dir =
                    std::env::temp_dir().join(format!("tally-bench-{}", uuid::Uuid::now_v7()));
                let url = format!("sqlite://{}", dir.join("bench.db").display());
                scratch = Some(dir);
                url
            }
            (BackendArg::Postgres, None) => {
                bail!("--backend postgres needs --database-url postgres://… (a scratch database)")
            }
        };
        let found = Backend::of_url(&url)?;
        match (backend, found) {
            (BackendArg::Sqlite, Backend::Sqlite) | (BackendArg::Postgres, Backend::Postgres) => {}
            _ => bail!(
                "--backend does not match --database-url {}",
                crate::redact(&url)
            ),
        }
        Ok(Self {
            url,
            backend: found,
            scratch,
        })
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The p-quantile of sorted latencies in microseconds, in milliseconds.
pub fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let index = ((sorted_us.len() as f64 - 1.0) * q).round() as usize;
    f64::from(sorted_us[index]) / 1_000.0
}

/// One writer: appends to its own stream back to back; returns the latency of every
/// append that started inside the measured window, in microseconds.
async fn writer(
    store: Arc<dyn EventStore>,
    stream: tally_store::Result<StreamId>,
    events_per_append: usize,
    started: Instant,
    warm_up: Duration,
    measure: Duration,
) -> anyhow::Result<Vec<u32>> {
    let stream = stream?;
    let metadata = Metadata::by(Actor::new(ActorKind::Service, "bench"));
    let mut version = 0u64;
    let mut latencies = Vec::new();
    loop {
        let since_start = started.elapsed();
        if since_start >= warm_up + measure {
            return Ok(latencies);
        }
        let batch: Vec<NewEvent> = (0..events_per_append)
            .map(|i| {
                NewEvent::new(
                    "credits.hold_placed",
                    serde_json::json!({
                        "hold_id": format!("hold-{version}-{i}"),
                        "amount": "1.50",
                        "ttl_seconds": 900,
                        "reason": "bench",
                    }),
                    metadata.clone(),
                )
            })
            .collect();
        let sent = Instant::now();
        let result = store
            .append(&stream, ExpectedVersion::Exact(version), batch)
            .await?;
        let took = sent.elapsed();
        version = result.stream_version(&stream).unwrap_or(version);
        if since_start >= warm_up {
            latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
        }
    }
}
