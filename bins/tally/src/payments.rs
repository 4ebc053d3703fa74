//! `tally payments reconcile stars`: every Telegram Stars transaction matched with a
//! ledger payment, and back. Telegram's list (`getStarTransactions`, paged) and the
//! ledger's Stars charges (the payments read model, caught up to the log's head
//! first) are compared by charge id; what is on one side only is printed, and the
//! exit status is 1 when anything is unmatched (as `tally audit verify` does).
//!
//! Incoming transactions (a `source`: a user paid) are payments; outgoing ones (a
//! `receiver`) are refunds and withdrawals, not compared here.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::Serialize;
use tally_projections::{Projector, default_projections};
use tally_store::PostgresOptions;
use teloxide::payloads::GetStarTransactionsSetters;
use teloxide::prelude::Requester;

use crate::DatabaseArgs;

/// Transactions Telegram gives per page (its most).
const PAGE: u8 = 100;

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

#[derive(Serialize)]
struct Report {
    provider: String,
    matched: usize,
    telegram_only: Vec<TelegramOnly>,
    ledger_only: Vec<LedgerOnly>,
}

#[derive(Serialize)]
struct TelegramOnly {
    transaction_id: String,
    stars: u32,
    date: String,
}

#[derive(Serialize)]
struct LedgerOnly {
    payment_id: String,
    charge_id: String,
    user_id: i64,
    status: String,
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
    let mut bot = teloxide::Bot::new(telegram_bot_token);
    if let Some(url) = telegram_api_url {
        bot = bot.set_api_url(
            url.parse()
                .with_context(|| format!("TELEGRAM_API_URL {url:?} is not a URL"))?,
        );
    }
    // Telegram's side: every incoming transaction, a page at a time.
    let mut telegram = BTreeMap::new();
    let mut offset = 0u32;
    loop {
        let page = bot
            .get_star_transactions()
            .offset(offset)
            .limit(PAGE)
            .await
            .context("asking Telegram for the bot's Star transactions")?;
        let n = page.transactions.len();
        for transaction in page.transactions {
            if transaction.source.is_some() {
                telegram.insert(transaction.id.0.clone(), transaction);
            }
        }
        if n < usize::from(PAGE) {
            break;
        }
        offset += u32::from(PAGE);
    }
    // The ledger's side, from a read model caught up to the log's head.
    let store = tally_store::open(&db.database_url, PostgresOptions::default())
        .await
        .with_context(|| format!("opening {}", crate::redact(&db.database_url)))?;
    let projector = Projector::open(store, &db.database_url, default_projections()).await?;
    projector.prepare().await?;
    projector.catch_up().await?;
    let charges = tally_projections::provider_charges(projector.pool(), "stars").await?;
    let mut matched = 0;
    let mut ledger_only = Vec::new();
    for charge in charges {
        match telegram.remove(&charge.provider_payment_id) {
            Some(_) => matched += 1,
            None => ledger_only.push(LedgerOnly {
                payment_id: charge.payment_id,
                charge_id: charge.provider_payment_id,
                user_id: charge.user_id,
                status: charge.status,
            }),
        }
    }
    let telegram_only: Vec<TelegramOnly> = telegram
        .into_values()
        .map(|t| TelegramOnly {
            transaction_id: t.id.0,
            stars: t.amount,
            date: t.date.to_rfc3339(),
        })
        .collect();
    let unmatched = telegram_only.len() + ledger_only.len();
    let report = Report {
        provider,
        matched,
        telegram_only,
        ledger_only,
    };
    println!("{}", serde_json::to_string(&report)?);
    if unmatched > 0 {
        tracing::warn!(unmatched, "payments that do not match");
        std::process::exit(1);
    }
    Ok(())
}
