//! Maps keyed by (cycle, destination) as JSON: a list of `[key, value]` pairs, since
//! JSON object keys are strings only (as a map, a slot with attempts could not be
//! snapshotted). An empty object, as states were saved before, still reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub(super) fn serialize<K: Serialize, V: Serialize, S: Serializer>(
    map: &BTreeMap<K, V>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(map.iter())
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Saved<K: Ord, V> {
    Pairs(Vec<(K, V)>),
    Empty(BTreeMap<String, serde::de::IgnoredAny>),
}

pub(super) fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
    D: Deserializer<'de>,
{
    match Saved::<K, V>::deserialize(deserializer)? {
        Saved::Pairs(pairs) => Ok(pairs.into_iter().collect()),
        Saved::Empty(map) if map.is_empty() => Ok(BTreeMap::new()),
        Saved::Empty(_) => Err(serde::de::Error::custom(
            "a slot's attempts are a list of [key, value] pairs",
        )),
    }
}
