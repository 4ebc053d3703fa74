//! `tally audit verify|replay|export`: what an auditor runs against the ledger.

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use tally_domain::values::UserId;
use tally_projections::{AsOf, account_statement};

use crate::DatabaseArgs;
use crate::progress::Progress;
use crate::projections::open;

/// What an auditor can ask.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify every stream's hash chain, the trial balance, and every read model
    /// against a fresh replay of the log (as of its own checkpoint). Prints each
    /// problem; exits non-zero if there is any.
    Verify {
        #[command(flatten)]
        db: DatabaseArgs,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Recompute one account from its raw events and compare it with the read model;
    /// prints both and the statement; exits non-zero on a difference.
    Replay {
        #[command(flatten)]
        target: AccountArgs,
        /// The report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print one account's statement.
    Export {
        #[command(flatten)]
        target: AccountArgs,
        /// csv or json (one JSON array).
        #[arg(long, value_enum)]
        format: ExportFormat,
    },
}

/// Whose account, as of when.
#[derive(clap::Args)]
pub struct AccountArgs {
    /// The user's Telegram id.
    #[arg(long)]
    user: i64,
    /// As of this time (RFC 3339, e.g. 2026-11-21T12:00:00Z).
    #[arg(long, conflicts_with = "at_position")]
    at: Option<String>,
    /// As of this log position.
    #[arg(long)]
    at_position: Option<u64>,
    #[command(flatten)]
    db: DatabaseArgs,
}

impl AccountArgs {
    fn parse(&self) -> anyhow::Result<(UserId, AsOf)> {
        let user = UserId::new(self.user).map_err(|e| anyhow::anyhow!("--user: {e}"))?;
        let as_of = match (&self.at, self.at_position) {
            (Some(at), _) => AsOf::Time(
                chrono::DateTime::parse_from_rfc3339(at)
                    .with_context(|| {
                        format!("--at {at:?} is not an RFC 3339 time like 2026-11-21T12:00:00Z")
                    })?
                    .with_timezone(&chrono::Utc),
            ),
            (None, Some(position)) => AsOf::Position(position),
            (None, None) => AsOf::Latest,
        };
        Ok((user, as_of))
    }
}

/// Statement formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// Comma-separated, with a header line.
    Csv,
    /// One JSON array of entries.
    Json,
}

/// Runs a `tally audit` command.
pub async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { db, json } => {
            let projector = open(&db.database_url).await?;
            let mut progress = Progress::new("hash chains");
            let report = projector
                .verify(|stage, done, total| progress.set(stage, done, total))
                .await?;
            progress.finish();
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "hash chains: {} ({} events)",
                    ok(report.hash_chains_ok),
                    report.events_checked
                );
                println!("trial balance: {}", ok(report.trial_balance_ok));
                for p in &report.projections {
                    println!(
                        "projection {:<14} {} ({} rows as of position {}, {} events behind)",
                        p.name,
                        ok(p.differences == 0),
                        p.rows,
                        p.checkpoint,
                        p.lag_events
                    );
                }
                for problem in &report.problems {
                    match problem.position {
                        Some(position) => println!(
                            "PROBLEM {} at position {position} ({}): {}",
                            problem.kind, problem.subject, problem.detail
                        ),
                        None => println!(
                            "PROBLEM {} ({}): {}",
                            problem.kind, problem.subject, problem.detail
                        ),
                    }
                }
            }
            if !report.ok() {
                bail!("the audit found {} problem(s)", report.problems.len());
            }
        }
        AuditCommand::Replay { target, json } => {
            let (user, as_of) = target.parse()?;
            let projector = open(&target.db.database_url).await?;
            let replay = projector.replay_account(user, as_of).await?;
            if json {
                println!("{}", serde_json::to_string(&replay)?);
            } else {
                let r = &replay.recomputed;
                println!(
                    "account {} through position {}",
                    replay.user_id, replay.through_position
                );
                println!(
                    "recomputed from {} events: available {} held {} status {}",
                    r.events, r.available, r.held, r.status
                );
                match &replay.projected {
                    Some(p) => println!(
                        "read model:                available {} held {} status {}",
                        p.available,
                        p.held,
                        p.status.as_deref().unwrap_or("-")
                    ),
                    None => println!("read model:                no row"),
                }
                print_statement_table(&replay.statement);
                for d in &replay.differences {
                    println!("DIFFERENCE {d}");
                }
            }
            if !replay.consistent {
                bail!(
                    "account {} differs from its events: {}",
                    replay.user_id,
                    replay.differences.join("; ")
                );
            }
        }
        AuditCommand::Export { target, format } => {
            let (user, as_of) = target.parse()?;
            let projector = open(&target.db.database_url).await?;
            let entries = account_statement(projector.pool(), user.get(), as_of).await?;
            match format {
                ExportFormat::Json => println!("{}", serde_json::to_string(&entries)?),
                ExportFormat::Csv => {
                    println!(
                        "position,occurred_at,kind,amount,balance_after,held_after,reference,actor"
                    );
                    for e in entries {
                        println!(
                            "{},{},{},{},{},{},{},{}",
                            e.position,
                            e.occurred_at.to_rfc3339(),
                            e.kind,
                            e.amount,
                            e.balance_after,
                            e.held_after,
                            csv_field(&e.reference),
                            csv_field(&e.actor)
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn ok(yes: bool) -> &'static str {
    if yes { "ok" } else { "FAILED" }
}

fn print_statement_table(entries: &[tally_projections::StatementEntry]) {
    println!(
        "{:>10}  {:<27} {:<14} {:>12} {:>12} {:>10}  reference",
        "position", "occurred_at", "kind", "amount", "balance", "held"
    );
    for e in entries {
        println!(
            "{:>10}  {:<27} {:<14} {:>12} {:>12} {:>10}  {}",
            e.position,
            e.occurred_at.to_rfc3339(),
            e.kind,
            e.amount,
            e.balance_after,
            e.held_after,
            e.reference
        );
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
