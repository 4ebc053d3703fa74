//! Group commit, the part both backends share: callers queue their appends and wait;
//! a backend's writer takes every append waiting as one group, commits the group at
//! once, and answers each caller with its own result. The backends differ only in how
//! they commit a group.

use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StoreError};
use crate::event::AppendResult;
use crate::limits::{APPEND_QUEUE_MAX, GROUP_COMMIT_APPENDS_MAX};
use crate::plan::EncodedAppend;

/// One caller's append, waiting for its group.
pub(crate) struct AppendRequest {
    pub append: EncodedAppend,
    reply: oneshot::Sender<Result<AppendResult>>,
}

/// The callers' end of the queue.
#[derive(Clone)]
pub(crate) struct AppendQueue {
    sender: mpsc::Sender<AppendRequest>,
}

/// The writers' end of the queue.
pub(crate) type Appends = mpsc::Receiver<AppendRequest>;

impl AppendQueue {
    /// A bounded queue: past [`APPEND_QUEUE_MAX`] waiting appends, callers wait to enqueue.
    pub fn new() -> (Self, Appends) {
        let (sender, receiver) = mpsc::channel(APPEND_QUEUE_MAX);
        (Self { sender }, receiver)
    }

    /// Queues an append and waits for its group to be committed.
    pub async fn submit(&self, append: EncodedAppend) -> Result<AppendResult> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(AppendRequest { append, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Waits for at least one append, then takes every append waiting, up to
/// [`GROUP_COMMIT_APPENDS_MAX`]. Returns false when every caller's end is gone.
pub(crate) async fn take_group(appends: &mut Appends, group: &mut Vec<AppendRequest>) -> bool {
    if appends.recv_many(group, GROUP_COMMIT_APPENDS_MAX).await == 0 {
        return false;
    }
    // The callers answered last round are runnable now; letting them run once before
    // the group is closed lets their next appends join it, instead of starting a
    // one-append group and leaving them a whole commit behind.
    tokio::task::yield_now().await;
    while group.len() < GROUP_COMMIT_APPENDS_MAX {
        match appends.try_recv() {
            Ok(request) => group.push(request),
            Err(_) => break,
        }
    }
    true
}

/// Answers every caller of a group, in order, and empties it for the next round.
pub(crate) fn answer(group: &mut Vec<AppendRequest>, results: Vec<Result<AppendResult>>) {
    debug_assert_eq!(group.len(), results.len(), "one answer per append");
    for (request, result) in group.drain(..).zip(results) {
        // A caller that gave up waiting is not an error of the group.
        let _ = request.reply.send(result);
    }
}
