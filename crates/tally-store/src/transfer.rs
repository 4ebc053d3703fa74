//! Moving a log between databases (`tally events export` / `tally events import`):
//! events travel as their recorded envelopes, one JSON object per line, and are
//! appended again with their own ids, business times, payloads and metadata — so
//! every stream's hash chain comes out identical, which the import checks event by
//! event. Positions are kept too (on Postgres a source gap is skipped again; an
//! SQLite target, which cannot leave gaps, renumbers and says so).
//!
//! An import is re-runnable: events the target already holds (the same id with the
//! same hash, at the start of the log) are skipped, so a crashed import is finished
//! by running it again.

use std::collections::HashMap;

use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::event::{ExpectedVersion, NewEvent, RecordedEvent, StreamAppend, StreamId};
use crate::hash;
use crate::limits::{EVENTS_PER_APPEND_MAX, STREAMS_PER_APPEND_MAX};
use crate::store::EventStore;

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Events appended.
    pub events_imported: u64,
    /// Events the target already held (a re-run).
    pub events_already_present: u64,
    /// Whether every event kept its source position.
    pub positions_kept: bool,
    /// The target's last position afterwards.
    pub last_position: u64,
}

/// Appends exported events to a store that is empty or holds a prefix of them.
pub struct Importer<'a> {
    store: &'a dyn EventStore,
    /// The target's last position when the import began.
    start_head: u64,
    /// The last position assigned in the target.
    last_assigned: u64,
    /// The last source position seen (positions must increase).
    last_source: u64,
    report: ImportReport,
}

impl<'a> Importer<'a> {
    /// Starts an import into `store`.
    pub async fn new(store: &'a dyn EventStore) -> Result<Self> {
        let head = store.last_position().await?;
        Ok(Self {
            store,
            start_head: head,
            last_assigned: head,
            last_source: 0,
            report: ImportReport {
                positions_kept: true,
                last_position: head,
                ..ImportReport::default()
            },
        })
    }

    /// Imports the next events of the export, in log order.
    pub async fn push(&mut self, events: Vec<RecordedEvent>) -> Result<()> {
        for event in &events {
            if event.position <= self.last_source {
                return Err(StoreError::InvalidInput(format!(
                    "position {} follows {}: an export lists positions in increasing order",
                    event.position, self.last_source
                )));
            }
            self.last_source = event.position;
        }
        let (present, new): (Vec<_>, Vec<_>) = events
            .into_iter()
            .partition(|e| e.position <= self.start_head);
        self.check_present(&present).await?;
        let mut batch: Vec<RecordedEvent> = Vec::new();
        for event in new {
            let streams: std::collections::HashSet<&StreamId> =
                batch.iter().map(|e| &e.stream_id).collect();
            let breaks_run = batch
                .last()
                .is_some_and(|last| last.stream_id != event.stream_id);
            let full = batch.len() >= EVENTS_PER_APPEND_MAX
                || (breaks_run
                    && (streams.contains(&event.stream_id)
                        || streams.len() >= STREAMS_PER_APPEND_MAX));
            let gap = batch
                .last()
                .is_some_and(|last| event.position != last.position + 1);
            if full || gap {
                self.append(std::mem::take(&mut batch)).await?;
            }
            batch.push(event);
        }
        self.append(batch).await
    }

    /// What the import did so far.
    pub fn report(&self) -> ImportReport {
        self.report.clone()
    }

    async fn check_present(&mut self, events: &[RecordedEvent]) -> Result<()> {
        for chunk in events.chunks(1_000) {
            let ids: Vec<_> = chunk.iter().map(|e| e.event_id).collect();
            let stored: HashMap<_, _> = self
                .store
                .find_events(&ids)
                .await?
                .into_iter()
                .map(|e| (e.event_id, e))
                .collect();
            for event in chunk {
                match stored.get(&event.event_id) {
                    Some(s) if s.hash == event.hash => {}
                    _ => {
                        return Err(StoreError::InvalidInput(format!(
                            "the target already holds {} events and event {} at position {} \
                             is not one of them: import into an empty store, or into one \
                             holding the start of this same export",
                            self.start_head, event.event_id, event.position
                        )));
                    }
                }
            }
            self.report.events_already_present += chunk.len() as u64;
        }
        Ok(())
    }

    async fn append(&mut self, batch: Vec<RecordedEvent>) -> Result<()> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let gap = first.position.saturating_sub(self.last_assigned + 1);
        if gap > 0 && !self.store.skip_positions(gap).await? {
            self.report.positions_kept = false;
        }
        let mut appends: Vec<StreamAppend> = Vec::new();
        for event in &batch {
            let new = NewEvent::new(
                event.event_type.clone(),
                event.payload.clone(),
                event.metadata.clone(),
            )
            .with_id(event.event_id)
            .with_schema_version(event.schema_version)
            .occurred_at(event.occurred_at);
            match appends.last_mut() {
                Some(run) if run.stream_id == event.stream_id => run.events.push(new),
                _ => appends.push(StreamAppend {
                    stream_id: event.stream_id.clone(),
                    expected: ExpectedVersion::Exact(event.stream_version - 1),
                    events: vec![new],
                }),
            }
        }
        let result = self.store.append_many(appends).await?;
        let ids: Vec<_> = batch.iter().map(|e| e.event_id).collect();
        let stored: HashMap<_, _> = self
            .store
            .find_events(&ids)
            .await?
            .into_iter()
            .map(|e| (e.event_id, e))
            .collect();
        for event in &batch {
            let Some(s) = stored.get(&event.event_id) else {
                return Err(StoreError::Corrupt {
                    position: event.position,
                    detail: "appended on import but not found after".into(),
                });
            };
            if s.hash != event.hash {
                return Err(StoreError::Corrupt {
                    position: event.position,
                    detail: format!(
                        "imported with hash {} but exported with {}: the export was altered \
                         or is not a Tally log",
                        hash::to_hex(&s.hash),
                        hash::to_hex(&event.hash)
                    ),
                });
            }
            if s.position != event.position {
                self.report.positions_kept = false;
            }
        }
        self.last_assigned = result.position().max(self.last_assigned);
        self.report.last_position = self.last_assigned;
        self.report.events_imported += batch.len() as u64;
        Ok(())
    }
}
