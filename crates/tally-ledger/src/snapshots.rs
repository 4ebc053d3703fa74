//! Snapshots: taken every few events, gathered and saved together off the
//! commands' path (one commit per flush, not per snapshot).

use super::*;

pub(crate) fn maybe_snapshot<A: Aggregate>(
    inner: &Arc<Inner<A>>,
    stream_id: &StreamId,
    before: u64,
    after: u64,
    state: &A::State,
    position: u64,
) {
    if before / SNAPSHOT_EVERY_EVENTS == after / SNAPSHOT_EVERY_EVENTS {
        return;
    }
    let Ok(bytes) = serde_json::to_vec(&(state, position)) else {
        return;
    };
    if bytes.len() > tally_store::limits::SNAPSHOT_BYTES_MAX {
        return;
    }
    let snapshot = Snapshot {
        stream_id: stream_id.clone(),
        stream_version: after,
        state: bytes,
    };
    let sender = inner.snapshots.get_or_init(|| {
        let (sender, waiting) = mpsc::channel(SNAPSHOTS_WAITING_MAX);
        tokio::spawn(save_snapshots(inner.store.clone(), waiting));
        sender
    });
    // A full queue drops the snapshot: a cache, never a reason to slow a command.
    let _ = sender.try_send(snapshot);
}

/// Saves the snapshots sent to it, gathered for [`SNAPSHOT_FLUSH_EVERY`], newest per
/// stream, in one transaction per flush; exits when every sender is gone.
pub(crate) async fn save_snapshots(
    store: Arc<dyn EventStore>,
    mut waiting: mpsc::Receiver<Snapshot>,
) {
    let mut received = Vec::new();
    loop {
        if waiting
            .recv_many(&mut received, SNAPSHOTS_WAITING_MAX)
            .await
            == 0
        {
            return;
        }
        tokio::time::sleep(SNAPSHOT_FLUSH_EVERY).await;
        while received.len() < SNAPSHOTS_WAITING_MAX {
            match waiting.try_recv() {
                Ok(snapshot) => received.push(snapshot),
                Err(_) => break,
            }
        }
        let mut newest: HashMap<StreamId, Snapshot> = HashMap::new();
        for snapshot in received.drain(..) {
            match newest.get(&snapshot.stream_id) {
                Some(kept) if kept.stream_version >= snapshot.stream_version => {}
                _ => {
                    newest.insert(snapshot.stream_id.clone(), snapshot);
                }
            }
        }
        let newest: Vec<Snapshot> = newest.into_values().collect();
        for chunk in newest.chunks(tally_store::limits::SNAPSHOTS_PER_SAVE_MAX) {
            if let Err(error) = store.save_snapshots(chunk).await {
                tracing::warn!(%error, snapshots = chunk.len(), "snapshots not saved");
            }
        }
    }
}
