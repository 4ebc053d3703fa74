//! `tally projections status|catch-up|rebuild|run`: the read models and reactors from
//! the command line.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use tally_projections::{Projector, Reactors, default_projections};
use tally_store::PostgresOptions;

use crate::DatabaseArgs;
use crate::progress::Progress;

/// What to do with the read models.
#[derive(Subcommand)]
pub enum ProjectionsCommand {
    /// For each projection: version, generation, checkpoint, head, lag in events and
    /// in seconds.
    Status {
        #[command(flatten)]
        db: DatabaseArgs,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run every projection up to the log's last event, then exit (after an import, or
    /// before an audit).
    CatchUp(DatabaseArgs),
    /// Rebuild projections from position 0 aside (one pass over the log for all of
    /// them), then swap each in; queries keep reading the old tables meanwhile.
    Rebuild {
        /// The projections (see `status`); none with --all.
        names: Vec<String>,
        /// Every projection.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Keep every read model caught up and run the reactors (payments → credits or
    /// plan, approved refunds → credits back, holds past their ttl and subscriptions
    /// past their period → expired) until interrupted.
    Run(DatabaseArgs),
}

/// Opens the store and the projector (creating missing read models, rebuilding those
/// whose version changed).
pub async fn open(url: &str) -> anyhow::Result<Projector> {
    let store = tally_store::open(url, PostgresOptions::default())
        .await
        .with_context(|| format!("opening {}", crate::redact(url)))?;
    let projector = Projector::open(Arc::clone(&store), url, default_projections()).await?;
    projector.prepare().await?;
    Ok(projector)
}

/// Runs a `tally projections` command.
pub async fn run(command: ProjectionsCommand) -> anyhow::Result<()> {
    match command {
        ProjectionsCommand::Status { db, json } => {
            let projector = open(&db.database_url).await?;
            let status = projector.status().await?;
            if json {
                for p in status {
                    println!("{}", serde_json::to_string(&p)?);
                }
                return Ok(());
            }
            println!(
                "{:<16} {:>7} {:>10} {:>12} {:>12} {:>10} {:>11}",
                "projection", "version", "generation", "checkpoint", "head", "lag", "lag_seconds"
            );
            for p in status {
                println!(
                    "{:<16} {:>7} {:>10} {:>12} {:>12} {:>10} {:>11.3}",
                    p.name,
                    p.version,
                    p.generation,
                    p.checkpoint,
                    p.head,
                    p.lag_events,
                    p.lag_seconds
                );
            }
        }
        ProjectionsCommand::CatchUp(db) => {
            let projector = open(&db.database_url).await?;
            for (name, checkpoint) in projector.catch_up().await? {
                println!("{name} caught up at position {checkpoint}");
            }
        }
        ProjectionsCommand::Rebuild { names, all, db } => {
            let projector = open(&db.database_url).await?;
            let names: Vec<String> = match all {
                true => projector
                    .projections()
                    .iter()
                    .map(|p| p.name().to_string())
                    .collect(),
                false if names.is_empty() => {
                    anyhow::bail!("name the projections to rebuild (see `status`), or --all")
                }
                false => names,
            };
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let started = std::time::Instant::now();
            let mut progress = Progress::new("rebuild");
            let applied = projector
                .rebuild_many(&names, |done, total| progress.set("rebuild", done, total))
                .await?;
            progress.finish();
            println!(
                "{} rebuilt from {applied} events in {:.1} s and swapped in",
                names.join(", "),
                started.elapsed().as_secs_f64()
            );
        }
        ProjectionsCommand::Run(db) => {
            let store = tally_store::open(&db.database_url, PostgresOptions::default())
                .await
                .with_context(|| format!("opening {}", crate::redact(&db.database_url)))?;
            let projector = Arc::new(
                Projector::open(store.clone(), &db.database_url, default_projections()).await?,
            );
            projector.prepare().await?;
            let ledgers =
                tally_ledger::Ledgers::new(store, Arc::new(tally_domain::Config::default()));
            let reactors = Reactors::new(ledgers, projector.pool().clone());
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let projecting = {
                let (projector, stopped) = (projector.clone(), stopped.clone());
                tokio::spawn(async move { projector.run(stopped).await })
            };
            let reacting = tokio::spawn(async move { reactors.run(stopped).await });
            tracing::info!("projections and reactors running; Ctrl-C stops them");
            tokio::signal::ctrl_c().await?;
            stop.send(true)?;
            projecting.await??;
            reacting.await??;
        }
    }
    Ok(())
}
