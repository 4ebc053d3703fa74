//! `tally payments reconcile stars`: every Telegram Stars transaction matched with a
//! ledger payment, and back. Telegram's list (`getStarTransactions`, paged) and the
//! ledger's Stars charges (the payments read model, caught up to the log's head
//! first) are compared by charge id; what is on one side only is printed, and the
//! exit status is 1 when anything is unmatched (as `tally audit verify` does).
//!
//! Incoming transactions (a `source`: a user paid) are payments; outgoing ones (a
//! `receiver`) are refunds and withdrawals, not compared here. The matching is
//! `tally_projections::reconciliation`, which the admin API and the bot's daily
//! check also run.

use anyhow::{Context, bail};
use clap::Subcommand;
use tally_projections::{Projector, default_projections};
use tally_store::PostgresOptions;

use crate::DatabaseArgs;

/// What to do about payments.
#[derive(Subcommand)]
pub enum PaymentsCommand {
    /// Match the provider's transactions with the ledger's payments and back; print
    /// one JSON line; exit 1 when anything is unmatched.
    Reconcile {
        /// The provider: `stars` (Telegram Stars).
        provider: String,
        #[command(flatten)]
        db: DatabaseArgs,
        /// The bot's token (its Stars are reconciled).
        #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
        telegram_bot_token: String,
        /// A self-hosted Bot API server (or a fake one in tests).
        #[arg(long, env = "TELEGRAM_API_URL")]
        telegram_api_url: Option<String>,
    },
}

/// Runs a `tally payments` command.
pub async fn run(command: PaymentsCommand) -> anyhow::Result<()> {
    let PaymentsCommand::Reconcile {
        provider,
        db,
        telegram_bot_token,
        telegram_api_url,
    } = command;
    if provider != "stars" {
        bail!("only `stars` can be reconciled (Telegram Stars); got {provider:?}");
    }
    let providers = tally_providers::Providers::new(
        &tally_providers::Settings::default().with(tally_providers::ProviderSettings::Stars(
            tally_providers::settings::StarsSettings {
                token: telegram_bot_token,
                api_url: telegram_api_url
                    .map(|u| u.trim_end_matches('/').to_string())
                    .unwrap_or_else(|| "https://api.telegram.org".into()),
            },
        )),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let stars = providers.get("stars").context("the Stars adapter")?.clone();
    // The ledger's side, from a read model caught up to the log's head.
    let store = tally_store::open(&db.database_url, PostgresOptions::default())
        .await
        .with_context(|| format!("opening {}", crate::redact(&db.database_url)))?;
    let projector = Projector::open(store, &db.database_url, default_projections()).await?;
    projector.prepare().await?;
    projector.catch_up().await?;
    let report = tally_projections::reconciliation::reconcile(projector.pool(), stars.as_ref())
        .await
        .context("asking Telegram for the bot's Star transactions")?;
    println!("{}", serde_json::to_string(&report)?);
    if report.unmatched() > 0 {
        std::process::exit(1);
    }
    Ok(())
}
