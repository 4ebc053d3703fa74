//! The event envelope: what a writer hands the log ([`NewEvent`]) and what a reader gets
//! back ([`RecordedEvent`]).
//!
//! The store knows nothing of credits or holds: a payload is opaque JSON to it. What it
//! does own is the envelope — ids, stream, version, position, times, metadata and the
//! hash chain — because those are what make the log trustworthy.

use std::fmt;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;
use crate::limits::{ACTOR_ID_BYTES_MAX, STREAM_ID_BYTES_MAX};

/// The name of one stream, e.g. `account-42` or `payment-stars-<charge id>`.
///
/// Parsed once at the edge: 1 to [`STREAM_ID_BYTES_MAX`] bytes of printable ASCII
/// without spaces, so a stream id can always be shown, logged and typed back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    /// Parses a stream id, saying what is wrong with it if it cannot be one.
    pub fn new(id: impl Into<String>) -> Result<Self, StoreError> {
        let id = id.into();
        if id.is_empty() {
            return Err(StoreError::InvalidInput("stream id is empty".into()));
        }
        if id.len() > STREAM_ID_BYTES_MAX {
            return Err(StoreError::LimitExceeded {
                what: "stream id bytes",
                limit: STREAM_ID_BYTES_MAX,
                actual: id.len(),
            });
        }
        if let Some(bad) = id.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(StoreError::InvalidInput(format!(
                "stream id {id:?} contains {bad:?}; use printable ASCII without spaces"
            )));
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StreamId {
    type Error = StoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<StreamId> for String {
    fn from(value: StreamId) -> Self {
        value.0
    }
}

/// Who caused an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A bot user, by Telegram user id.
    User,
    /// An admin, by API key name or Telegram id.
    Admin,
    /// A bot backend or worker, by API key name.
    Service,
    /// Tally itself (reactors, expiry).
    System,
    /// A payment provider's webhook, by provider name.
    Webhook,
}

impl ActorKind {
    /// The kind's name, as it is serialized (`user`, `admin` …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
            Self::Service => "service",
            Self::System => "system",
            Self::Webhook => "webhook",
        }
    }
}

/// The actor of an event: its kind and an id meaningful for that kind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// What kind of actor this is.
    pub kind: ActorKind,
    /// The actor's id within its kind (a Telegram id, a key name, a provider name).
    pub id: String,
}

impl Actor {
    /// An actor of the given kind and id.
    pub fn new(kind: ActorKind, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }

    /// Tally itself, acting under the given component name.
    pub fn system(component: impl Into<String>) -> Self {
        Self::new(ActorKind::System, component)
    }
}

/// Who and why: carried with every event so an auditor can follow a change to its cause.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Who caused the event.
    pub actor: Actor,
    /// The request or workflow this event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event or command that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The caller's idempotency key, when the command carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl Metadata {
    /// Metadata naming only the actor.
    pub fn by(actor: Actor) -> Self {
        Self {
            actor,
            correlation_id: None,
            causation_id: None,
            idempotency_key: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        if self.actor.id.len() > ACTOR_ID_BYTES_MAX {
            return Err(StoreError::LimitExceeded {
                what: "actor id bytes",
                limit: ACTOR_ID_BYTES_MAX,
                actual: self.actor.id.len(),
            });
        }
        Ok(())
    }
}

/// An event a writer wants appended.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Unique id (UUIDv7). Appending the same id again is an idempotent no-op.
    pub event_id: Uuid,
    /// Dotted type name, e.g. `credits.hold_placed`.
    pub event_type: String,
    /// Version of the payload's shape for this type, starting at 1.
    pub schema_version: u32,
    /// The event's data. Amounts inside are decimal strings, never JSON numbers.
    pub payload: serde_json::Value,
    /// Actor, correlation, causation, idempotency key.
    pub metadata: Metadata,
    /// Business time. Kept to microseconds, the precision both backends store.
    pub occurred_at: DateTime<Utc>,
}

impl NewEvent {
    /// A new event with a fresh UUIDv7, schema version 1, occurring now.
    pub fn new(
        event_type: impl Into<String>,
        payload: serde_json::Value,
        metadata: Metadata,
    ) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata,
            occurred_at: now_micros(),
        }
    }

    /// The same event with a caller-chosen id (for ids derived from a command).
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// The same event with another payload schema version.
    pub fn with_schema_version(mut self, schema_version: u32) -> Self {
        self.schema_version = schema_version;
        self
    }

    /// The same event with another business time (truncated to microseconds).
    pub fn occurred_at(mut self, at: DateTime<Utc>) -> Self {
        self.occurred_at = at.trunc_subsecs(6);
        self
    }
}

/// The current time at the precision the store keeps.
pub fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// An event as stored: the writer's event plus what the log assigned to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Global order in the log, strictly increasing (gaps are allowed).
    pub position: u64,
    /// Unique event id.
    pub event_id: Uuid,
    /// The stream this event belongs to.
    pub stream_id: StreamId,
    /// 1, 2, 3 … within the stream, no gaps.
    pub stream_version: u64,
    /// Dotted type name.
    pub event_type: String,
    /// Version of the payload's shape.
    pub schema_version: u32,
    /// The event's data.
    pub payload: serde_json::Value,
    /// Actor, correlation, causation, idempotency key.
    pub metadata: Metadata,
    /// Business time.
    pub occurred_at: DateTime<Utc>,
    /// When the store committed the event.
    pub recorded_at: DateTime<Utc>,
    /// SHA-256 chaining this event to the previous one of its stream; see [`crate::hash`].
    #[serde(with = "hex_hash")]
    pub hash: [u8; 32],
}

/// The version a writer expects a stream to be at: the optimistic-concurrency check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedVersion {
    /// No check: append after whatever is there.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be at exactly this version (0 means it does not exist yet).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream currently at `current` satisfies this expectation.
    pub fn admits(self, current: u64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => current == 0,
            Self::Exact(n) => current == n,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(n) => write!(f, "{n}"),
        }
    }
}

/// Events for one stream within an append call.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamAppend {
    /// The stream to append to.
    pub stream_id: StreamId,
    /// The version the writer decided against.
    pub expected: ExpectedVersion,
    /// The events, in order; at least one.
    pub events: Vec<NewEvent>,
}

/// Where one appended event landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendedEvent {
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: StreamId,
    /// Its version in the stream.
    pub stream_version: u64,
    /// Its global position.
    pub position: u64,
}

/// The outcome of a successful append call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// Every event of the call, in the order given.
    pub events: Vec<AppendedEvent>,
    /// True when every event was already stored by an earlier call and nothing new was
    /// written: the result is the original one.
    pub replayed: bool,
}

impl AppendResult {
    /// The position of the last event of the call (what a write returns to its caller
    /// for read-your-writes).
    pub fn position(&self) -> u64 {
        self.events.iter().map(|e| e.position).max().unwrap_or(0)
    }

    /// The version a stream is at after this call, if the call touched it.
    pub fn stream_version(&self, stream_id: &StreamId) -> Option<u64> {
        self.events
            .iter()
            .filter(|e| &e.stream_id == stream_id)
            .map(|e| e.stream_version)
            .max()
    }
}

/// A cached state of a stream's aggregate as of a version: an optimisation, never the truth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The stream the state was folded from.
    pub stream_id: StreamId,
    /// The last version folded into `state`.
    pub stream_version: u64,
    /// The serialised state; its format belongs to whoever saved it.
    pub state: Vec<u8>,
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::hash::to_hex(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        crate::hash::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("hash must be 64 hex digits"))
    }
}
