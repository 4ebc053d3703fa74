//! `tally events export|import`: the log as JSON lines, one recorded envelope per line
//! (position, ids, stream, version, type, payload, metadata, times, hash), to move a
//! ledger between databases or hand it to an auditor.

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use clap::Subcommand;
use tally_store::limits::READ_PAGE_EVENTS_MAX;
use tally_store::{Importer, PostgresOptions, RecordedEvent};

use crate::DatabaseArgs;
use crate::progress::Progress;

/// Events read per import batch.
const IMPORT_BATCH: usize = 1_000;

/// What to do with the raw log.
#[derive(Subcommand)]
pub enum EventsCommand {
    /// Print the log as JSON lines on stdout.
    Export {
        /// Only events after this position.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Append an export to an empty store (or one holding the start of the same
    /// export: a re-run finishes an interrupted import). Every event keeps its id and
    /// hash; the import stops at the first that would not.
    Import {
        /// The JSON lines file (`-` for stdin).
        file: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// Runs a `tally events` command.
pub async fn run(command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::Export { after, db } => {
            let store = tally_store::open(&db.database_url, PostgresOptions::default())
                .await
                .with_context(|| format!("opening {}", crate::redact(&db.database_url)))?;
            let head = store.last_position().await?;
            let mut progress = Progress::new("export");
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let mut position = after;
            let mut exported = 0u64;
            while position < head {
                let page = store.read_all(position, READ_PAGE_EVENTS_MAX).await?;
                let Some(last) = page.last() else { break };
                position = last.position;
                for event in &page {
                    serde_json::to_writer(&mut out, event)?;
                    out.write_all(b"\n")?;
                }
                exported += page.len() as u64;
                progress.set("export", position, head);
            }
            out.flush()?;
            progress.finish();
            tracing::info!(events = exported, through = position, "exported");
        }
        EventsCommand::Import { file, db } => {
            let store = tally_store::open(&db.database_url, PostgresOptions::default())
                .await
                .with_context(|| format!("opening {}", crate::redact(&db.database_url)))?;
            let reader: Box<dyn BufRead> = match file.as_str() {
                "-" => Box::new(std::io::BufReader::new(std::io::stdin())),
                path => Box::new(std::io::BufReader::new(
                    std::fs::File::open(path).with_context(|| format!("opening {path}"))?,
                )),
            };
            let mut importer = Importer::new(store.as_ref()).await?;
            let mut progress = Progress::new("import");
            let mut batch = Vec::with_capacity(IMPORT_BATCH);
            for (n, line) in reader.lines().enumerate() {
                let line = line.with_context(|| format!("reading line {}", n + 1))?;
                if line.trim().is_empty() {
                    continue;
                }
                let event: RecordedEvent = serde_json::from_str(&line)
                    .with_context(|| format!("line {} is not an exported event", n + 1))?;
                batch.push(event);
                if batch.len() == IMPORT_BATCH {
                    let last = batch.last().map_or(0, |e| e.position);
                    importer.push(std::mem::take(&mut batch)).await?;
                    progress.set("import", last, 0);
                }
            }
            importer.push(batch).await?;
            progress.finish();
            let report = importer.report();
            println!("{}", serde_json::to_string(&report)?);
            if !report.positions_kept {
                eprintln!(
                    "note: positions were renumbered (the export has gaps this backend cannot keep); \
                     ids, streams, versions and hashes are unchanged"
                );
            }
            eprintln!("next: `tally projections catch-up` builds the read models from it");
            if report.events_imported == 0 && report.events_already_present == 0 {
                bail!("{file} holds no events");
            }
        }
    }
    Ok(())
}
