//! The hash-chain verifier: walks a stream or the whole log, recomputes every event's
//! hash from what a reader actually gets back, and names the first event that does not
//! match. An auditor runs it; so can anyone who doubts the database.

use std::collections::HashMap;

use serde::Serialize;
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::event::{RecordedEvent, StreamId};
use crate::hash::{self, CanonicalEvent, GENESIS_HASH};
use crate::limits::READ_PAGE_EVENTS_MAX;
use crate::store::EventStore;

/// What a verification walked and the first problem it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events whose hash was recomputed.
    pub events_checked: u64,
    /// Distinct streams seen.
    pub streams_checked: u64,
    /// The position up to which the log was verified (0 if nothing was read). On
    /// Postgres this is the head readable at the time, which may trail the newest commit.
    pub through_position: u64,
    /// The first event (in log order) whose chain is broken, if any.
    pub first_problem: Option<ChainProblem>,
}

impl VerifyReport {
    /// True when every chain checked out.
    pub fn ok(&self) -> bool {
        self.first_problem.is_none()
    }
}

/// An event at which a stream's chain breaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainProblem {
    /// Global position of the event.
    pub position: u64,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its id.
    pub event_id: Uuid,
    /// What is wrong.
    pub detail: String,
}

#[derive(Default)]
struct Walk {
    heads: HashMap<StreamId, (u64, [u8; 32])>,
    events_checked: u64,
    through_position: u64,
}

impl Walk {
    /// Checks one event against its stream's running head; returns the problem if any.
    fn check(&mut self, event: &RecordedEvent) -> Result<Option<ChainProblem>> {
        self.events_checked += 1;
        self.through_position = self.through_position.max(event.position);
        let (version, previous) = self
            .heads
            .get(&event.stream_id)
            .copied()
            .unwrap_or((0, GENESIS_HASH));
        let problem = |detail: String| ChainProblem {
            position: event.position,
            stream_id: event.stream_id.to_string(),
            stream_version: event.stream_version,
            event_id: event.event_id,
            detail,
        };
        if event.stream_version != version + 1 {
            return Ok(Some(problem(format!(
                "stream version {} follows version {version}; versions must go up by one",
                event.stream_version
            ))));
        }
        let recomputed = recompute(event, &previous)?;
        if recomputed != event.hash {
            return Ok(Some(problem(format!(
                "stored hash {} but its content and the previous hash give {}",
                hash::to_hex(&event.hash),
                hash::to_hex(&recomputed)
            ))));
        }
        self.heads
            .insert(event.stream_id.clone(), (event.stream_version, event.hash));
        Ok(None)
    }

    fn report(self, first_problem: Option<ChainProblem>) -> VerifyReport {
        VerifyReport {
            events_checked: self.events_checked,
            streams_checked: self.heads.len() as u64,
            through_position: self.through_position,
            first_problem,
        }
    }
}

/// Recomputes an event's hash from its content and the previous hash of its stream.
pub fn recompute(event: &RecordedEvent, previous: &[u8; 32]) -> Result<[u8; 32]> {
    let payload = to_json(event.position, &event.payload)?;
    let metadata = to_json(event.position, &event.metadata)?;
    let digest = CanonicalEvent {
        event_id: event.event_id,
        stream_id: event.stream_id.as_str(),
        event_type: &event.event_type,
        schema_version: event.schema_version,
        payload: &payload,
        metadata: &metadata,
        occurred_at: event.occurred_at,
    }
    .digest();
    Ok(hash::chain(previous, event.stream_version, &digest))
}

/// Verifies every stream's chain over the whole log, in position order, calling
/// `progress` with the number of events checked after each page.
pub async fn verify_log(
    store: &dyn EventStore,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport> {
    let mut walk = Walk::default();
    let mut after = 0;
    loop {
        let page = store.read_all(after, READ_PAGE_EVENTS_MAX).await?;
        let Some(last) = page.last() else {
            return Ok(walk.report(None));
        };
        after = last.position;
        for event in &page {
            if let Some(problem) = walk.check(event)? {
                return Ok(walk.report(Some(problem)));
            }
        }
        progress(walk.events_checked);
    }
}

/// Verifies one stream's chain from its first event.
pub async fn verify_stream(store: &dyn EventStore, stream_id: &StreamId) -> Result<VerifyReport> {
    let mut walk = Walk::default();
    let mut from = 1;
    loop {
        let page = store
            .read_stream(stream_id, from, READ_PAGE_EVENTS_MAX)
            .await?;
        let Some(last) = page.last() else {
            return Ok(walk.report(None));
        };
        from = last.stream_version + 1;
        for event in &page {
            if let Some(problem) = walk.check(event)? {
                return Ok(walk.report(Some(problem)));
            }
        }
    }
}

/// Serialises as the writer did (`serde_json::to_string`).
fn to_json<T: serde::Serialize>(position: u64, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt {
        position,
        detail: e.to_string(),
    })
}
