//! `tally projections status|catch-up|rebuild`: the read models from the command line.

use std::sync::Arc;

use anyhow::Context;
use clap::Subcommand;
use tally_projections::{Projector, default_projections};
use tally_store::PostgresOptions;

use crate::DatabaseArgs;

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
    /// Rebuild one projection from position 0 aside, then swap it in; queries keep
    /// reading the old tables meanwhile.
    Rebuild {
        /// The projection (see `status`).
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
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
        ProjectionsCommand::Rebuild { name, db } => {
            let projector = open(&db.database_url).await?;
            let started = std::time::Instant::now();
            let applied = projector.rebuild(&name).await?;
            println!(
                "{name} rebuilt from {applied} events in {:.1} s and swapped in",
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}
