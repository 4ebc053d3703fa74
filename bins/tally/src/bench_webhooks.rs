//! `tally bench webhooks`: events delivered to a local receiver by the deliverer
//! (`tally_webhooks::Deliverer`, as the reactor role runs it) with 1, 10 and 100
//! endpoints each wanting every grant. The figures per endpoint count: deliveries per
//! second, and the delivery lag (from the event's time to its receipt) p50 and p99.
//! The baseline in the same run: one client POSTing the same bodies to the same
//! receiver back to back (what one sequential sender could do at best).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use tally_domain::Config;
use tally_domain::account::AccountCommand;
use tally_domain::values::{Amount, GrantId, Reason, UserId};
use tally_ledger::Ledgers;
use tally_projections::Projector;
use tally_store::{Actor, Metadata, PostgresOptions};

use crate::bench::{BackendArg, Target, quantile_ms};

/// Options of `tally bench webhooks`.
#[derive(Args)]
pub struct WebhooksArgs {
    /// Endpoint counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    endpoints: Vec<usize>,
    /// Events appended per measurement.
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Appends per second in the lag run (one endpoint, the rate of a busy bot).
    #[arg(long, default_value_t = 50)]
    pace_per_sec: u32,
    /// Where the log lives.
    #[arg(long, value_enum, default_value_t = BackendArg::Sqlite)]
    backend: BackendArg,
    /// A scratch database (default: a fresh SQLite file, removed after).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Serialize)]
struct Run {
    /// `throughput` (appended as fast as they go) or `paced` (at --pace-per-sec).
    kind: &'static str,
    endpoints: usize,
    deliveries: usize,
    seconds: f64,
    deliveries_per_sec: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
}

#[derive(Serialize)]
struct Report {
    backend: &'static str,
    events: usize,
    runs: Vec<Run>,
    baseline_sequential_posts_per_sec: f64,
    lag_target_p99_ms_one_endpoint: u32,
}

type Receipts = Arc<Mutex<Vec<u32>>>;

/// A receiver that answers 204 and records each delivery's lag in microseconds.
async fn receiver() -> anyhow::Result<(String, Receipts)> {
    let lags: Receipts = Arc::default();
    let seen = lags.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let at = chrono::Utc::now();
                if let Ok(event) = serde_json::from_slice::<Value>(&body)
                    && let Some(Ok(time)) = event["timestamp"]
                        .as_str()
                        .map(chrono::DateTime::parse_from_rfc3339)
                {
                    let lag = (at - time.with_timezone(&chrono::Utc))
                        .num_microseconds()
                        .unwrap_or(0);
                    if let Ok(mut lags) = seen.lock() {
                        lags.push(u32::try_from(lag.max(0)).unwrap_or(u32::MAX));
                    }
                }
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((url, lags))
}

/// Runs the benchmark and prints one JSON line.
pub async fn run(args: WebhooksArgs) -> anyhow::Result<()> {
    let target = Target::choose(args.backend, args.database_url)?;
    let store = tally_store::open(&target.url, PostgresOptions::default())
        .await
        .with_context(|| format!("opening {}", crate::redact(&target.url)))?;
    let projector = Projector::open(store.clone(), &target.url, vec![]).await?;
    let pool = projector.pool().clone();
    let ledgers = Ledgers::new(store.clone(), Arc::new(Config::default()));
    let (url, lags) = receiver().await?;
    let settings = tally_webhooks::Settings {
        allow_private: true,
        concurrency: 128,
        ..tally_webhooks::Settings::default()
    };
    let deliverer = Arc::new(tally_webhooks::Deliverer::new(
        store.clone(),
        pool.clone(),
        settings.clone(),
    )?);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(deliverer.run(stopped));
    let by = Metadata::by(Actor::system("bench"));
    let mut runs = Vec::new();
    let mut grant = 0u64;
    // The paced run first (one endpoint), then the throughput runs.
    let plan: Vec<(usize, Option<u32>)> = std::iter::once((1, Some(args.pace_per_sec.max(1))))
        .chain(args.endpoints.iter().map(|&n| (n, None)))
        .collect();
    for (round, &(count, pace)) in plan.iter().enumerate() {
        // The previous round's endpoints are retired; this round's get what comes now.
        for old in tally_webhooks::endpoints::list(&pool).await? {
            tally_webhooks::endpoints::disable(&pool, &old.endpoint_id, "bench round over").await?;
        }
        for _ in 0..count {
            tally_webhooks::endpoints::add(
                &pool,
                store.as_ref(),
                &url,
                &["credits.granted".into()],
                &settings,
            )
            .await?;
        }
        lags.lock().map_err(|_| anyhow::anyhow!("lock"))?.clear();
        let user = UserId::new(900_000_000 + round as i64)?;
        ledgers
            .accounts
            .command(
                user,
                AccountCommand::Open {
                    username: None,
                    language: None,
                },
                by.clone(),
            )
            .await?;
        let started = Instant::now();
        for n in 0..args.events {
            if let Some(per_sec) = pace {
                let due = started + Duration::from_secs_f64(n as f64 / f64::from(per_sec));
                tokio::time::sleep_until(due.into()).await;
            }
            grant += 1;
            ledgers
                .accounts
                .command(
                    user,
                    AccountCommand::Grant {
                        grant_id: GrantId::new(format!("bench-{grant}"))?,
                        amount: Amount::new(1.into())?,
                        reason: Reason::new("bench")?,
                    },
                    by.clone(),
                )
                .await?;
        }
        let expected = count * args.events;
        let deadline = Instant::now() + Duration::from_secs(600);
        while lags.lock().map_err(|_| anyhow::anyhow!("lock"))?.len() < expected {
            anyhow::ensure!(
                Instant::now() < deadline,
                "deliveries did not finish in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let mut sorted = lags.lock().map_err(|_| anyhow::anyhow!("lock"))?.clone();
        sorted.sort_unstable();
        runs.push(Run {
            kind: if pace.is_some() {
                "paced"
            } else {
                "throughput"
            },
            endpoints: count,
            deliveries: expected,
            seconds: (seconds * 100.0).round() / 100.0,
            deliveries_per_sec: (expected as f64 / seconds.max(1e-9) * 10.0).round() / 10.0,
            lag_p50_ms: quantile_ms(&sorted, 0.5),
            lag_p99_ms: quantile_ms(&sorted, 0.99),
        });
    }
    stop.send(true)?;
    let _ = running.await;
    // The baseline: one client, the same body, back to back.
    let client = reqwest::Client::new();
    let body = serde_json::json!({"type": "credits.granted", "timestamp": chrono::Utc::now().to_rfc3339(), "data": {}}).to_string();
    let started = Instant::now();
    let n = args.events.max(100);
    for _ in 0..n {
        client.post(&url).body(body.clone()).send().await?;
    }
    let baseline = n as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let report = Report {
        backend: match target.backend {
            tally_store::Backend::Sqlite => "sqlite",
            tally_store::Backend::Postgres => "postgres",
        },
        events: args.events,
        runs,
        baseline_sequential_posts_per_sec: (baseline * 10.0).round() / 10.0,
        lag_target_p99_ms_one_endpoint: 50,
    };
    drop(projector);
    drop(store);
    drop(target);
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
