//! `tally bench http`: the API as bot backends use it, over loopback HTTP/1.1
//! keep-alive. Funds 1,000 accounts with admin grants, then drives hold + partial
//! capture pairs from concurrent clients for the measured seconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;
use serde_json::json;

use crate::bench::quantile_ms;

/// Accounts the load is spread over.
const ACCOUNTS: u64 = 1_000;
/// First user id of the bench's accounts.
const FIRST_USER: u64 = 900_000_000;

/// Options of `tally bench http`.
#[derive(Args)]
pub struct HttpArgs {
    /// The API, e.g. http://127.0.0.1:8080 (a running `tally serve`).
    #[arg(long)]
    url: String,
    /// A service key.
    #[arg(long)]
    key: String,
    /// An admin key (to fund the accounts).
    #[arg(long)]
    admin_key: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[derive(Serialize)]
struct Report {
    requests: usize,
    requests_per_sec: u64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    concurrency: usize,
}

/// Runs `tally bench http`.
pub async fn run(args: HttpArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.concurrency > 1_024 {
        bail!("--concurrency must be between 1 and 1024");
    }
    if args.seconds == 0 || args.seconds > 600 {
        bail!("--seconds must be between 1 and 600");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .http1_only()
        .build()?;
    let base = args.url.trim_end_matches('/').to_string();
    let run_id = uuid::Uuid::now_v7().simple().to_string();

    // Fund the accounts.
    let mut funding = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..32 {
        let (client, base, args_key, admin, run_id, next) = (
            client.clone(),
            base.clone(),
            args.key.clone(),
            args.admin_key.clone(),
            run_id.clone(),
            next.clone(),
        );
        funding.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= ACCOUNTS {
                    return anyhow::Ok(());
                }
                let user = FIRST_USER + i;
                let opened = client
                    .put(format!("{base}/v1/accounts/{user}"))
                    .bearer_auth(&args_key)
                    .json(&json!({}))
                    .send()
                    .await?;
                if !opened.status().is_success() {
                    bail!("opening {user}: {} {}", opened.status(), opened.text().await?);
                }
                let granted = client
                    .post(format!("{base}/v1/admin/accounts/{user}/grants"))
                    .bearer_auth(&admin)
                    .json(&json!({"grant_id": format!("bench-{run_id}-{user}"), "amount": "1000000", "reason": "bench"}))
                    .send()
                    .await?;
                if !granted.status().is_success() {
                    bail!("funding {user}: {} {}", granted.status(), granted.text().await?);
                }
            }
        });
    }
    while let Some(done) = funding.join_next().await {
        done?.context("funding the bench accounts")?;
    }

    let until = Instant::now() + Duration::from_secs(args.seconds);
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..args.concurrency {
        let (client, base, key, run_id) = (
            client.clone(),
            base.clone(),
            args.key.clone(),
            run_id.clone(),
        );
        clients.spawn(async move {
            let mut latencies: Vec<u32> = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < until {
                n += 1;
                let user = FIRST_USER + (c as u64 * 7_919 + n) % ACCOUNTS;
                let hold = format!("{run_id}-{c}-{n}");
                let requests = [
                    (
                        format!("{base}/v1/accounts/{user}/holds"),
                        json!({"hold_id": hold, "amount": "0.30", "ttl_seconds": 900, "reason": "bench job"}),
                    ),
                    (
                        format!("{base}/v1/holds/{hold}/capture"),
                        json!({"amount": "0.20"}),
                    ),
                ];
                for (url, body) in requests {
                    let sent = Instant::now();
                    let ok = match client.post(&url).bearer_auth(&key).json(&body).send().await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            let _ = response.bytes().await;
                            ok
                        }
                        Err(_) => false,
                    };
                    latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                    if !ok {
                        errors += 1;
                        break;
                    }
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(done) = clients.join_next().await {
        let (l, e) = done?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let report = Report {
        requests: latencies.len(),
        requests_per_sec: (latencies.len() as f64 / elapsed) as u64,
        p50_ms: quantile_ms(&latencies, 0.50),
        p99_ms: quantile_ms(&latencies, 0.99),
        errors,
        concurrency: args.concurrency,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
