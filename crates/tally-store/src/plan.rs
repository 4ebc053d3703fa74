//! The backend-independent half of an append: validate and encode the request once,
//! then — given the current heads of its streams — check expected versions, number the
//! events and chain their hashes. Backends only fetch heads, assign positions and write
//! rows, so the rules of appending live here once and both backends obey them alike.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use crate::error::{Result, StoreError};
use crate::event::{AppendResult, AppendedEvent, ExpectedVersion, StreamAppend, StreamId};
use crate::hash::{self, CanonicalEvent, GENESIS_HASH};
use crate::limits::{
    EVENT_TYPE_BYTES_MAX, EVENTS_PER_APPEND_MAX, METADATA_BYTES_MAX, PAYLOAD_BYTES_MAX,
    STREAMS_PER_APPEND_MAX,
};

/// One event, validated and serialised, ready to be numbered.
#[derive(Debug, Clone)]
pub(crate) struct EncodedEvent {
    /// Index into [`EncodedAppend::streams`].
    pub stream: usize,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: String,
    pub metadata: String,
    pub occurred_at: DateTime<Utc>,
    pub digest: [u8; 32],
}

/// An append call, validated and serialised. Retries re-plan it without re-encoding.
#[derive(Debug, Clone)]
pub(crate) struct EncodedAppend {
    pub streams: Vec<(StreamId, ExpectedVersion)>,
    /// Events grouped by stream, streams in call order.
    pub events: Vec<EncodedEvent>,
}

/// The last version and hash of a stream; (0, genesis) for a stream that does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub version: u64,
    pub hash: [u8; 32],
}

impl Head {
    pub const EMPTY: Head = Head {
        version: 0,
        hash: GENESIS_HASH,
    };
}

/// An encoded event with its stream version and chained hash.
#[derive(Debug, Clone)]
pub(crate) struct PlannedEvent<'a> {
    pub event: &'a EncodedEvent,
    pub stream_id: &'a StreamId,
    pub stream_version: u64,
    pub hash: [u8; 32],
}

/// What an already stored event looks like, for idempotency decisions.
#[derive(Debug, Clone)]
pub(crate) struct StoredRef {
    pub stream_id: String,
    pub event_type: String,
    pub payload: String,
    pub stream_version: u64,
    pub position: u64,
}

impl EncodedAppend {
    /// Validates an append call against every limit and serialises it.
    pub fn encode(appends: Vec<StreamAppend>) -> Result<Self> {
        if appends.is_empty() {
            return Err(StoreError::InvalidInput("append names no stream".into()));
        }
        if appends.len() > STREAMS_PER_APPEND_MAX {
            return Err(StoreError::LimitExceeded {
                what: "streams in one append",
                limit: STREAMS_PER_APPEND_MAX,
                actual: appends.len(),
            });
        }
        let total: usize = appends.iter().map(|a| a.events.len()).sum();
        if total > EVENTS_PER_APPEND_MAX {
            return Err(StoreError::LimitExceeded {
                what: "events in one append",
                limit: EVENTS_PER_APPEND_MAX,
                actual: total,
            });
        }
        let mut seen_streams = HashSet::with_capacity(appends.len());
        let mut seen_ids = HashSet::with_capacity(total);
        let mut streams = Vec::with_capacity(appends.len());
        let mut events = Vec::with_capacity(total);
        for (index, append) in appends.into_iter().enumerate() {
            if append.events.is_empty() {
                return Err(StoreError::InvalidInput(format!(
                    "append to stream {} carries no events",
                    append.stream_id
                )));
            }
            if !seen_streams.insert(append.stream_id.clone()) {
                return Err(StoreError::InvalidInput(format!(
                    "stream {} is named twice in one append; put all its events under one entry",
                    append.stream_id
                )));
            }
            for event in append.events {
                if !seen_ids.insert(event.event_id) {
                    return Err(StoreError::InvalidInput(format!(
                        "event id {} appears twice in one append",
                        event.event_id
                    )));
                }
                check_event_type(&event.event_type)?;
                if event.schema_version == 0 {
                    return Err(StoreError::InvalidInput(format!(
                        "event {} has schema version 0; versions start at 1",
                        event.event_id
                    )));
                }
                event.metadata.validate()?;
                let payload = to_json(&event.payload)?;
                if payload.len() > PAYLOAD_BYTES_MAX {
                    return Err(StoreError::LimitExceeded {
                        what: "payload bytes",
                        limit: PAYLOAD_BYTES_MAX,
                        actual: payload.len(),
                    });
                }
                let metadata = to_json(&event.metadata)?;
                if metadata.len() > METADATA_BYTES_MAX {
                    return Err(StoreError::LimitExceeded {
                        what: "metadata bytes",
                        limit: METADATA_BYTES_MAX,
                        actual: metadata.len(),
                    });
                }
                // Both backends keep microseconds; hashing anything finer would make a
                // stored event fail its own verification.
                let occurred_at = event.occurred_at.trunc_subsecs(6);
                let digest = CanonicalEvent {
                    event_id: event.event_id,
                    stream_id: append.stream_id.as_str(),
                    event_type: &event.event_type,
                    schema_version: event.schema_version,
                    payload: &payload,
                    metadata: &metadata,
                    occurred_at,
                }
                .digest();
                events.push(EncodedEvent {
                    stream: index,
                    event_id: event.event_id,
                    event_type: event.event_type,
                    schema_version: event.schema_version,
                    payload,
                    metadata,
                    occurred_at,
                    digest,
                });
            }
            streams.push((append.stream_id, append.expected));
        }
        Ok(Self { streams, events })
    }

    /// Every event id of the call.
    pub fn event_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.events.iter().map(|e| e.event_id)
    }

    /// Checks expected versions against `heads` and numbers and chains the events.
    /// `heads` must hold the current head of every stream of the call that exists.
    pub fn plan(&self, heads: &HashMap<StreamId, Head>) -> Result<Vec<PlannedEvent<'_>>> {
        let mut next: Vec<Head> = Vec::with_capacity(self.streams.len());
        for (stream_id, expected) in &self.streams {
            let head = heads.get(stream_id).copied().unwrap_or(Head::EMPTY);
            if !expected.admits(head.version) {
                return Err(StoreError::WrongExpectedVersion {
                    stream_id: stream_id.clone(),
                    expected: *expected,
                    current: head.version,
                });
            }
            next.push(head);
        }
        Ok(self
            .events
            .iter()
            .map(|event| {
                let head = &mut next[event.stream];
                head.version += 1;
                head.hash = hash::chain(&head.hash, head.version, &event.digest);
                PlannedEvent {
                    event,
                    stream_id: &self.streams[event.stream].0,
                    stream_version: head.version,
                    hash: head.hash,
                }
            })
            .collect())
    }

    /// Decides a call whose ids are (partly) stored already: the original result when
    /// every event is stored with the same stream, type and payload, else a conflict.
    pub fn resolve_replay(&self, stored: &HashMap<Uuid, StoredRef>) -> Result<AppendResult> {
        let mut events = Vec::with_capacity(self.events.len());
        for event in &self.events {
            let stream_id = &self.streams[event.stream].0;
            let Some(found) = stored.get(&event.event_id) else {
                return Err(StoreError::IdempotencyConflict {
                    event_id: self
                        .event_ids()
                        .find(|id| stored.contains_key(id))
                        .unwrap_or(event.event_id),
                    detail: format!(
                        "by an earlier append that did not include event {}; re-send the earlier append unchanged",
                        event.event_id
                    ),
                });
            };
            let detail = if found.stream_id != stream_id.as_str() {
                Some(format!("in stream {}, not {}", found.stream_id, stream_id))
            } else if found.event_type != event.event_type {
                Some(format!(
                    "as type {}, not {}",
                    found.event_type, event.event_type
                ))
            } else if found.payload != event.payload {
                Some("with a different payload".to_string())
            } else {
                None
            };
            if let Some(detail) = detail {
                return Err(StoreError::IdempotencyConflict {
                    event_id: event.event_id,
                    detail,
                });
            }
            events.push(AppendedEvent {
                event_id: event.event_id,
                stream_id: stream_id.clone(),
                stream_version: found.stream_version,
                position: found.position,
            });
        }
        Ok(AppendResult {
            events,
            replayed: true,
        })
    }
}

fn check_event_type(event_type: &str) -> Result<()> {
    if event_type.is_empty() {
        return Err(StoreError::InvalidInput("event type is empty".into()));
    }
    if event_type.len() > EVENT_TYPE_BYTES_MAX {
        return Err(StoreError::LimitExceeded {
            what: "event type bytes",
            limit: EVENT_TYPE_BYTES_MAX,
            actual: event_type.len(),
        });
    }
    let ok = event_type
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
    if !ok {
        return Err(StoreError::InvalidInput(format!(
            "event type {event_type:?} may only hold a-z, 0-9, '.' and '_' (e.g. credits.hold_placed)"
        )));
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::InvalidInput(format!("cannot serialise to JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, Metadata, NewEvent};

    fn append(stream: &str, expected: ExpectedVersion, n: usize) -> StreamAppend {
        StreamAppend {
            stream_id: StreamId::new(stream).unwrap(),
            expected,
            events: (0..n)
                .map(|i| {
                    NewEvent::new(
                        "test.happened",
                        serde_json::json!({ "i": i }),
                        Metadata::by(Actor::system("test")),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn versions_continue_from_the_head_and_hashes_chain() {
        let enc = EncodedAppend::encode(vec![append("s-1", ExpectedVersion::Exact(2), 2)]).unwrap();
        let head = Head {
            version: 2,
            hash: [9; 32],
        };
        let heads = HashMap::from([(StreamId::new("s-1").unwrap(), head)]);
        let planned = enc.plan(&heads).unwrap();
        assert_eq!(planned[0].stream_version, 3);
        assert_eq!(planned[1].stream_version, 4);
        assert_eq!(
            planned[0].hash,
            hash::chain(&[9; 32], 3, &enc.events[0].digest)
        );
        assert_eq!(
            planned[1].hash,
            hash::chain(&planned[0].hash, 4, &enc.events[1].digest)
        );
    }

    #[test]
    fn no_stream_rejects_an_existing_stream() {
        let enc = EncodedAppend::encode(vec![append("s-1", ExpectedVersion::NoStream, 1)]).unwrap();
        let heads = HashMap::from([(
            StreamId::new("s-1").unwrap(),
            Head {
                version: 1,
                hash: [0; 32],
            },
        )]);
        let err = enc.plan(&heads).unwrap_err();
        assert!(
            matches!(err, StoreError::WrongExpectedVersion { current: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn a_stream_named_twice_is_rejected() {
        let err = EncodedAppend::encode(vec![
            append("s-1", ExpectedVersion::Any, 1),
            append("s-1", ExpectedVersion::Any, 1),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("named twice"), "{err}");
    }
}
