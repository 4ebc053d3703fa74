//! How domain events travel through the log: a dotted `event_type`, a
//! `schema_version` and a JSON payload. Old payload versions are upcast when read, so
//! an event written years ago still folds into today's state.

use serde::Serialize;
use serde::de::value::MapDeserializer;
use serde::de::{DeserializeOwned, IntoDeserializer};
use serde_json::{Map, Value};

/// Why a stored event cannot be read as a domain event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot read {event_type} v{schema_version}: {detail}")]
pub struct DecodeError {
    /// The stored type.
    pub event_type: String,
    /// The stored version.
    pub schema_version: u32,
    /// What went wrong.
    pub detail: String,
}

/// The schema version new events of a type are written with. Bump it when a payload
/// changes shape, and teach [`upcast`] to turn the previous version into the new one.
pub fn current_version(_event_type: &str) -> u32 {
    1
}

/// Splits an event into its type, schema version and payload.
pub fn encode<E: Serialize>(event: &E) -> (String, u32, Value) {
    // Domain events are adjacently tagged enums of plain data: always an object with
    // "type" and "data".
    let mut tagged = match serde_json::to_value(event) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("domain events serialise to a tagged object"),
    };
    let event_type = match tagged.remove("type") {
        Some(Value::String(t)) => t,
        _ => unreachable!("domain events carry a string tag"),
    };
    let payload = tagged.remove("data").unwrap_or(Value::Object(Map::new()));
    let version = current_version(&event_type);
    (event_type, version, payload)
}

/// Reads a stored event, upcasting old payload versions first.
pub fn decode<E: DeserializeOwned>(
    event_type: &str,
    schema_version: u32,
    payload: Value,
) -> Result<E, DecodeError> {
    let error = |detail: String| DecodeError {
        event_type: event_type.to_string(),
        schema_version,
        detail,
    };
    let payload = upcast(event_type, schema_version, payload).map_err(error)?;
    tagged(Value::String(event_type.to_string()), payload).map_err(|e| error(e.to_string()))
}

/// [`decode`] without taking the payload: a current-version payload is read in
/// place (an old one is copied to be upcast). For readers that keep the event.
pub fn decode_ref<E: DeserializeOwned>(
    event_type: &str,
    schema_version: u32,
    payload: &Value,
) -> Result<E, DecodeError> {
    if schema_version != current_version(event_type) {
        return decode(event_type, schema_version, payload.clone());
    }
    let tag = Value::String(event_type.to_string());
    tagged(&tag, payload).map_err(|e| DecodeError {
        event_type: event_type.to_string(),
        schema_version,
        detail: e.to_string(),
    })
}

/// Deserialises `{"type": event_type, "data": payload}` with the tag first, so serde
/// reads the data straight into its variant (a JSON object would put "data" first,
/// and serde would buffer the whole payload before it knew the variant).
fn tagged<'de, E, V>(tag: V, payload: V) -> Result<E, serde_json::Error>
where
    E: DeserializeOwned,
    V: IntoDeserializer<'de, serde_json::Error>,
{
    let entries = [("type", tag), ("data", payload)];
    E::deserialize(MapDeserializer::new(entries.into_iter()))
}

/// Turns a payload of an older schema version into the current one. Every version ever
/// written must stay readable: add a step here for each bump, never remove one.
fn upcast(event_type: &str, schema_version: u32, payload: Value) -> Result<Value, String> {
    let current = current_version(event_type);
    match schema_version {
        v if v == current => Ok(payload),
        v if v > current => Err(format!(
            "written by a newer Tally (this one reads up to v{current}); upgrade before reading this log"
        )),
        v => Err(format!("no upcaster from v{v} to v{current}")),
    }
}
