//! Loading a stream's state: the newest snapshot, then its tail folded in.

use super::*;

pub(crate) async fn load<A: Aggregate>(
    inner: &Inner<A>,
    key: &A::Key,
) -> Result<Loaded<A::State>, LedgerError> {
    let stream_id = Ledger::<A>::stream_id(key)?;
    let mut loaded = Loaded {
        state: A::initial(key),
        version: 0,
        position: 0,
    };
    if let Some(snapshot) = inner.store.load_snapshot(&stream_id).await? {
        // An unreadable snapshot (older code's state shape) is ignored: replay instead.
        if let Ok((state, position)) = serde_json::from_slice::<(A::State, u64)>(&snapshot.state) {
            loaded = Loaded {
                state,
                version: snapshot.stream_version,
                position,
            };
        }
    }
    Ok(fold_tail::<A>(inner, &stream_id, loaded).await?.0)
}

/// Folds the stream's events past `loaded.version` into it; returns the newer state
/// and how many events it folded.
pub(crate) async fn fold_tail<A: Aggregate>(
    inner: &Inner<A>,
    stream_id: &StreamId,
    mut loaded: Loaded<A::State>,
) -> Result<(Loaded<A::State>, usize), LedgerError> {
    let mut folded = 0;
    loop {
        let page = inner
            .store
            .read_stream(stream_id, loaded.version + 1, LOAD_PAGE_EVENTS)
            .await?;
        let done = page.len() < LOAD_PAGE_EVENTS;
        folded += page.len();
        for recorded in page {
            loaded = fold::<A>(loaded, &recorded)?;
        }
        if done {
            return Ok((loaded, folded));
        }
    }
}

pub(crate) fn fold<A: Aggregate>(
    loaded: Loaded<A::State>,
    recorded: &RecordedEvent,
) -> Result<Loaded<A::State>, LedgerError> {
    let event: A::Event = codec::decode_ref(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.payload,
    )?;
    Ok(Loaded {
        state: A::evolve(loaded.state, &event, recorded.occurred_at),
        version: recorded.stream_version,
        position: recorded.position,
    })
}
