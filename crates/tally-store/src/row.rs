//! Turning a stored row back into a [`RecordedEvent`], checking on the way in what the
//! writer promised on the way out (the read half of the boundary assertions).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::event::{Metadata, RecordedEvent, StreamId};

/// The columns of one event row, as either backend stores them.
pub(crate) struct StoredRow {
    pub position: i64,
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_type: String,
    pub schema_version: i64,
    pub payload: String,
    pub metadata: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub hash: Vec<u8>,
}

impl StoredRow {
    pub fn into_event(self) -> Result<RecordedEvent> {
        let position = u64::try_from(self.position).map_err(|_| corrupt(0, "negative position"))?;
        let corrupt_here = |detail: String| corrupt(position, &detail);
        let stream_version = u64::try_from(self.stream_version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| corrupt_here(format!("stream version {}", self.stream_version)))?;
        let schema_version = u32::try_from(self.schema_version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| corrupt_here(format!("schema version {}", self.schema_version)))?;
        let payload = serde_json::from_str(&self.payload)
            .map_err(|e| corrupt_here(format!("payload is not JSON: {e}")))?;
        let metadata: Metadata = serde_json::from_str(&self.metadata)
            .map_err(|e| corrupt_here(format!("metadata does not parse: {e}")))?;
        let stream_id =
            StreamId::new(self.stream_id).map_err(|e| corrupt_here(format!("stream id: {e}")))?;
        let hash = crate::hash::from_column(position, &self.hash)?;
        Ok(RecordedEvent {
            position,
            event_id: self.event_id,
            stream_id,
            stream_version,
            event_type: self.event_type,
            schema_version,
            payload,
            metadata,
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            hash,
        })
    }
}

fn corrupt(position: u64, detail: &str) -> StoreError {
    StoreError::Corrupt {
        position,
        detail: detail.to_string(),
    }
}

/// Converts a count or version the store computed into the signed column type.
/// Values beyond i64 would take 292,000 years of appends at a billion per second.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
