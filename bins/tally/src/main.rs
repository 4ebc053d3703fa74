//! `tally`: the one binary of the Tally credits ledger.
//!
//! Each subcommand is a thin adapter: parse arguments, open the store, call a library,
//! print. Business rules live in the crates, never here.

mod audit;
mod bench;
mod bench_commands;
mod bench_http;
mod bench_poster;
mod bench_projections;
mod bench_webhooks;
mod campaigns;
mod events;
mod payments;
mod progress;
mod projections;
mod serve;
mod webhooks;

use clap::{Parser, Subcommand};

/// The decoder and the read models allocate many small, short-lived values (JSON
/// payloads, rows); mimalloc serves them from per-thread pages where glibc's malloc
/// spent a quarter of a rebuild's CPU in its own bookkeeping.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tally_store::{Backend, DEFAULT_DATABASE_URL, PostgresOptions};

/// Tally: an event-sourced credits ledger for Telegram-bot businesses.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the ledger lives.
#[derive(clap::Args)]
struct DatabaseArgs {
    /// sqlite://PATH (embedded, the default) or postgres://user@host/db
    #[arg(long, env = "TALLY_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database_url: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API with the projectors and reactors (SQLite by default, no
    /// configuration needed).
    Serve(Box<serve::ServeArgs>),
    /// API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(serve::KeysCommand),
    /// Apply pending schema migrations (they also run on every start) and list them.
    Migrate(DatabaseArgs),
    /// Read models: status, catch-up, rebuild.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
    /// What an auditor runs: verify the log and the read models, replay an account,
    /// export its statement.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// The raw log as JSON lines: export, import.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Measure throughput and latency; prints one JSON line.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Payments: reconcile a provider's transactions with the ledger.
    #[command(subcommand)]
    Payments(payments::PaymentsCommand),
    /// Webhook endpoints (events out): add, list, disable, rotate-secret, deliveries.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
}

/// Log lines to stderr, as text or JSON; the level from RUST_LOG (default info).
fn init_logs(format: serve::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // sqlx reports Postgres NOTICEs such as "already exists, skipping" at info.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // The first call sets them up; a later one keeps them.
    let _ = match format {
        serve::LogFormat::Text => logs.try_init(),
        serve::LogFormat::Json => logs.json().flatten_event(true).try_init(),
    };
}

/// `TALLY_LOG_FORMAT` for the commands other than serve.
fn log_format_from_env() -> serve::LogFormat {
    match std::env::var("TALLY_LOG_FORMAT").as_deref() {
        Ok("json") => serve::LogFormat::Json,
        _ => serve::LogFormat::Text,
    }
}

/// `tally serve`: settings first, then its logs in the format they name.
async fn serve_command(args: serve::ServeArgs) -> anyhow::Result<()> {
    let settings = serve::Settings::resolve(args)?;
    init_logs(settings.log_format);
    serve::serve(settings).await
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve_command(*args).await,
        command => {
            init_logs(log_format_from_env());
            run(command).await
        }
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve_command(*args).await,
        Command::Keys(command) => serve::keys(command).await,
        Command::Webhooks(command) => webhooks::run(command).await,
        Command::Migrate(db) => migrate(&db.database_url).await,
        Command::Projections(command) => projections::run(command).await,
        Command::Audit(command) => audit::run(command).await,
        Command::Events(command) => events::run(command).await,
        Command::Bench(command) => bench::run(command).await,
        Command::Payments(command) => payments::run(command).await,
    }
}

async fn migrate(url: &str) -> anyhow::Result<()> {
    let backend = Backend::of_url(url)?;
    // Opening a store applies every pending migration, under the backend's migration lock.
    let store = tally_store::open(url, PostgresOptions::default()).await?;
    for (version, description) in tally_store::migrations(backend) {
        println!("{version:04} {description}");
    }
    println!(
        "{} schema at {} is up to date (head position {})",
        backend.name(),
        redact(url),
        store.head_position().await?
    );
    Ok(())
}

pub(crate) use tally_app::redact;
