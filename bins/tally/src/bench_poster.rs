//! `tally bench poster`: one cycle of `--slots` ad slots with `--destinations` each,
//! posted as fast as allowed through a local fake Bot API that enforces Telegram's
//! documented limits (30 messages/s per bot, 1/s per chat, 20/min per group) and
//! answers 429 with `retry_after` when one is exceeded, as Telegram does.
//!
//! The figures: sustained posts per second as a fraction of the 30/s per-bot limit
//! (the target is at least 0.9), the 429s received (the target is none: the poster's
//! throttle should keep within the limits without being told), and the CPU time of
//! this process per post (read from `/proc/self/stat`; 0 where that is missing).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Json;
use axum::extract::{Path, State};
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};
use tally_domain::Config;
use tally_domain::slot::{Destination, SlotCommand, SlotConfig};
use tally_domain::subscription::SubscriptionCommand;
use tally_domain::values::{PaymentId, PlanId, SlotId, UserId};
use tally_ledger::Ledgers;
use tally_projections::{Projector, default_projections};
use tally_store::{Actor, Metadata, PostgresOptions};

use crate::bench::{BackendArg, Target};

/// Telegram's limit of messages per second per bot.
const PER_BOT_PER_SEC: usize = 30;
/// Telegram's limit of messages per minute in one group.
const PER_GROUP_PER_MIN: usize = 20;
/// Slots per owner (the `enterprise` plan's).
const SLOTS_PER_OWNER: usize = 5;
/// First user id of the bench's owners.
const FIRST_OWNER: i64 = 800_000_000;

/// Options of `tally bench poster`.
#[derive(Args)]
pub struct PosterArgs {
    /// Ad slots due in the cycle.
    #[arg(long, default_value_t = 100)]
    slots: usize,
    /// Destinations per slot (each its own channel).
    #[arg(long, default_value_t = 5)]
    destinations: usize,
    /// Where the log lives.
    #[arg(long, value_enum, default_value_t = BackendArg::Sqlite)]
    backend: BackendArg,
    /// A scratch database (default: a fresh SQLite file, removed after).
    #[arg(long)]
    database_url: Option<String>,
    /// Lift the poster's pacing (a baseline: how far beyond the limits the poster
    /// would go, and the fake's 429s answering it).
    #[arg(long)]
    unthrottled: bool,
}

#[derive(Serialize)]
struct Report {
    posts: u64,
    seconds: f64,
    posts_per_sec: f64,
    limit_per_sec: usize,
    fraction_of_limit: f64,
    rate_limited_429s: u64,
    cpu_ms_per_post: f64,
    slots: usize,
    destinations: usize,
    backend: &'static str,
    throttled: bool,
}

/// What the fake Bot API remembers to enforce the limits.
#[derive(Default)]
struct Limits {
    /// Accepted sends in the last second.
    bot: VecDeque<Instant>,
    /// Accepted sends per chat in the last minute.
    chats: HashMap<i64, VecDeque<Instant>>,
    refused: u64,
    accepted: u64,
}

/// Whether a send to `chat` now is within the limits (and counts it if so).
fn admit(limits: &mut Limits, chat: i64, now: Instant) -> bool {
    while limits
        .bot
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        limits.bot.pop_front();
    }
    let sent = limits.chats.entry(chat).or_default();
    while sent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
    {
        sent.pop_front();
    }
    let chat_second = sent
        .back()
        .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(1));
    if limits.bot.len() >= PER_BOT_PER_SEC || chat_second || sent.len() >= PER_GROUP_PER_MIN {
        limits.refused += 1;
        return false;
    }
    sent.push_back(now);
    limits.bot.push_back(now);
    limits.accepted += 1;
    true
}

async fn bot_api(
    State(limits): State<Arc<Mutex<Limits>>>,
    Path((_bot, method)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Json<Value> {
    let params: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
    let me = json!({"id": 777, "is_bot": true, "first_name": "Bench", "username": "bench_bot",
        "can_join_groups": false, "can_read_all_group_messages": false,
        "supports_inline_queries": false, "can_connect_to_business": false,
        "has_main_web_app": false});
    match method.to_ascii_lowercase().as_str() {
        "getme" => Json(json!({"ok": true, "result": me})),
        "sendmessage" => {
            let chat = params["chat_id"].as_i64().unwrap_or(0);
            let admitted = match limits.lock() {
                Ok(mut limits) => admit(&mut limits, chat, Instant::now()),
                Err(_) => false,
            };
            if !admitted {
                return Json(json!({"ok": false, "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1}}));
            }
            Json(json!({"ok": true, "result": {
                "message_id": 1, "date": 1_700_000_000,
                "chat": {"id": chat, "type": "channel", "title": "bench"},
                "text": params["text"],
            }}))
        }
        _ => Json(json!({"ok": true, "result": true})),
    }
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (in parentheses, which may hold spaces).
    let Some(rest) = stat.rsplit(')').next() else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line (11 and 12 here), in
    // clock ticks of 1/100 s on Linux.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Runs `tally bench poster`.
pub async fn run(args: PosterArgs) -> anyhow::Result<()> {
    if args.slots == 0 || args.slots > 10_000 {
        bail!("--slots must be between 1 and 10000");
    }
    if args.destinations == 0 || args.destinations > tally_domain::slot::DESTINATIONS_MAX {
        bail!(
            "--destinations must be between 1 and {}",
            tally_domain::slot::DESTINATIONS_MAX
        );
    }
    let target = Target::choose(args.backend, args.database_url)?;
    let store = tally_store::open(&target.url, PostgresOptions::default())
        .await
        .with_context(|| format!("opening {}", crate::redact(&target.url)))?;
    let ledgers = Ledgers::new(store.clone(), Arc::new(Config::default()));
    let by = || Metadata::by(Actor::system("bench"));
    let run = uuid::Uuid::now_v7().simple().to_string()[20..].to_string();
    for s in 0..args.slots {
        let owner = UserId::new(FIRST_OWNER + (s / SLOTS_PER_OWNER) as i64)?;
        if s % SLOTS_PER_OWNER == 0 {
            ledgers
                .subscriptions
                .command(
                    owner,
                    SubscriptionCommand::Pay {
                        payment_id: PaymentId::new(format!("bench-{run}-{s}"))?,
                        plan: PlanId::new("enterprise")?,
                    },
                    by(),
                )
                .await?;
        }
        let destinations = (0..args.destinations)
            .map(|d| Destination {
                chat_id: -1_000_000_000_000 - (s * args.destinations + d) as i64,
                topic_id: None,
            })
            .collect();
        ledgers
            .slots
            .command(
                SlotId::new(format!("bench-{run}-{s}"))?,
                SlotCommand::Configure(SlotConfig::text(owner, "An ad", destinations)),
                by(),
            )
            .await?;
    }
    let projector =
        Arc::new(Projector::open(store.clone(), &target.url, default_projections()).await?);
    projector.prepare().await?;
    projector.catch_up().await?;

    let limits = Arc::new(Mutex::new(Limits::default()));
    let app = axum::Router::new()
        .route("/{bot}/{method}", axum::routing::post(bot_api))
        .with_state(limits.clone());
    // The fake runs on its own thread and runtime, as Telegram is elsewhere: the
    // times it admits requests at are not those of a runtime busy with the ledger.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let api = format!("http://{}/", listener.local_addr()?);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(runtime) = runtime {
            runtime.block_on(async move {
                if let Ok(listener) = tokio::net::TcpListener::from_std(listener) {
                    let _ = axum::serve(listener, app).await;
                }
            });
        }
    });

    let mut settings = tally_bot::Settings::new("1:BENCH", Default::default());
    settings.api_url = Some(api.parse()?);

    let context = Arc::new(tally_bot::Context::new(
        ledgers.clone(),
        projector.clone(),
        Default::default(),
    ));
    let poster = tally_bot::poster::Poster::new(
        context,
        tally_bot::poster::client(&settings),
        tally_bot::poster::PosterSettings {
            spread_seconds: 0,
            // Unpaced: a baseline of what the fake's limits answer.
            per_second: match args.unthrottled {
                true => 10_000,
                false => tally_bot::poster::PER_SECOND_DEFAULT,
            },
            ..tally_bot::poster::PosterSettings::default()
        },
    );
    let cycle =
        tally_domain::cycle::cycle_at(ledgers.now(), tally_domain::cycle::CYCLE_SECONDS_DEFAULT);
    let (cpu_before, started) = (cpu_time(), Instant::now());
    let report = poster.post_cycle(cycle, false).await?;
    let (seconds, cpu) = (started.elapsed().as_secs_f64(), cpu_time() - cpu_before);
    let refused = limits.lock().map(|l| l.refused).unwrap_or(0);
    let posts_per_sec = report.posted as f64 / seconds.max(1e-9);
    let out = Report {
        posts: report.posted,
        seconds: (seconds * 100.0).round() / 100.0,
        posts_per_sec: (posts_per_sec * 10.0).round() / 10.0,
        limit_per_sec: PER_BOT_PER_SEC,
        fraction_of_limit: (posts_per_sec / PER_BOT_PER_SEC as f64 * 100.0).round() / 100.0,
        rate_limited_429s: refused,
        cpu_ms_per_post: ((cpu.as_secs_f64() * 1000.0 / report.posted.max(1) as f64) * 100.0)
            .round()
            / 100.0,
        slots: args.slots,
        destinations: args.destinations,
        backend: match target.backend {
            tally_store::Backend::Sqlite => "sqlite",
            tally_store::Backend::Postgres => "postgres",
        },
        throttled: !args.unthrottled,
    };
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
