//! The per-stream hash chain.
//!
//! `hash(n) = SHA-256(hash(n-1) ‖ be64(n) ‖ digest(n))`, with `hash(0)` all zeros and
//! `digest(n)` a SHA-256 over the event's canonical bytes: a domain tag, then the event
//! id, stream id, type, schema version, payload text, metadata text and business time,
//! each length-prefixed so no two field splits hash alike.
//!
//! What is in the chain is what the writer decided. The global position and
//! `recorded_at` are the store's own and are left out, so an export imported into an
//! empty store keeps every hash. Changing any hashed byte of a stored event, or
//! removing or reordering events within a stream, breaks the chain from that event on.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The hash "before" the first event of every stream.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

const DOMAIN_TAG: &[u8] = b"tally.event.v1\0";

/// The canonical fields of an event, as hashed.
pub struct CanonicalEvent<'a> {
    /// Event id.
    pub event_id: Uuid,
    /// Stream id.
    pub stream_id: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Schema version.
    pub schema_version: u32,
    /// Payload serialised by `serde_json::to_string`.
    pub payload: &'a str,
    /// Metadata serialised by `serde_json::to_string`.
    pub metadata: &'a str,
    /// Business time, microsecond precision.
    pub occurred_at: DateTime<Utc>,
}

impl CanonicalEvent<'_> {
    /// SHA-256 over the canonical bytes.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(DOMAIN_TAG);
        h.update(self.event_id.as_bytes());
        for field in [self.stream_id, self.event_type, self.payload, self.metadata] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field.as_bytes());
        }
        h.update(self.schema_version.to_be_bytes());
        h.update(self.occurred_at.timestamp_micros().to_be_bytes());
        h.finalize().into()
    }
}

/// The next link of a stream's chain.
pub fn chain(previous: &[u8; 32], stream_version: u64, digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(stream_version.to_be_bytes());
    h.update(digest);
    h.finalize().into()
}

/// Lower-case hex of a hash.
pub fn to_hex(hash: &[u8; 32]) -> String {
    use std::fmt::Write;
    hash.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses 64 hex digits.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Turns a stored hash column into a hash, or says why it cannot be one.
pub(crate) fn from_column(position: u64, bytes: &[u8]) -> crate::Result<[u8; 32]> {
    bytes.try_into().map_err(|_| crate::StoreError::Corrupt {
        position,
        detail: format!("hash has {} bytes, not 32", bytes.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let h = chain(&GENESIS_HASH, 1, &[7; 32]);
        assert_eq!(from_hex(&to_hex(&h)), Some(h));
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn field_boundaries_change_the_digest() {
        let at = DateTime::from_timestamp_micros(1).unwrap();
        let a = CanonicalEvent {
            event_id: Uuid::nil(),
            stream_id: "ab",
            event_type: "c",
            schema_version: 1,
            payload: "{}",
            metadata: "{}",
            occurred_at: at,
        };
        let b = CanonicalEvent {
            stream_id: "a",
            event_type: "bc",
            ..a
        };
        assert_ne!(a.digest(), b.digest());
    }
}
