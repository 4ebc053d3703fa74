//! The conformance suite: one specification of the event log, run against every
//! backend. Each case gets a fresh database — a temporary SQLite file, or a Postgres
//! database created for it (at `TALLY_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and dropped after.
//!
//! A backend that passes these cases may stand behind `EventStore`.
//!
//! One file: it is one specification of the log; each backend must pass all of it, so
//! it stays together.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test may panic; it says what failed

mod harness;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use harness::Harness;
use tally_store::limits::{
    EVENTS_PER_APPEND_MAX, PAYLOAD_BYTES_MAX, READ_PAGE_EVENTS_MAX, SNAPSHOT_BYTES_MAX,
    STREAMS_PER_APPEND_MAX,
};
use tally_store::{
    Actor, ActorKind, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, Snapshot,
    StoreError, StreamAppend, StreamId, verify_log, verify_stream,
};
use uuid::Uuid;

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid stream id")
}

fn event(n: u64) -> NewEvent {
    NewEvent::new(
        "test.counted",
        serde_json::json!({ "n": n, "amount": "1.50" }),
        Metadata::by(Actor::new(ActorKind::Service, "conformance")),
    )
}

fn events(from: u64, count: u64) -> Vec<NewEvent> {
    (from..from + count).map(event).collect()
}

/// Reads the log after `after` the way a projector does — following positions, waiting
/// (bounded) when a page comes back empty — until it reaches every committed event.
///
/// On Postgres `read_all` holds back events while any older transaction anywhere in the
/// cluster is still open (other tests run in parallel), so a single pass may stop short;
/// it must never skip, and this helper would then loop until the deadline and fail.
async fn read_from(
    h: &Harness,
    store: &dyn EventStore,
    after: u64,
    page: usize,
) -> Vec<RecordedEvent> {
    let target = h.committed_head().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    let mut after = after;
    while after < target {
        let batch = store.read_all(after, page).await.expect("read_all");
        match batch.last() {
            Some(last) => after = last.position,
            None => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "read_all is stuck at {after}, committed head is {target}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        all.extend(batch);
    }
    all
}

async fn read_everything(h: &Harness, store: &dyn EventStore, page: usize) -> Vec<RecordedEvent> {
    read_from(h, store, 0, page).await
}

/// Waits (bounded) until `head_position` reaches `position`, and returns it.
async fn head_reaching(store: &dyn EventStore, position: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let head = store.head_position().await.expect("head_position");
        if head >= position || tokio::time::Instant::now() > deadline {
            return head;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn assert_strictly_increasing(events: &[RecordedEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "positions must strictly increase: {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
}

impl tally_store::testing::Fixture for Harness {
    async fn start(backend: tally_store::testing::Backend) -> Self {
        match backend {
            tally_store::testing::Backend::Sqlite => Harness::sqlite().await,
            tally_store::testing::Backend::Postgres => Harness::postgres().await,
        }
    }

    async fn finish(self) {
        Harness::finish(self).await
    }
}

tally_store::on_both_backends!(
    Harness =>
    appended_events_read_back_with_their_whole_envelope,
    two_writers_race_on_one_stream_and_exactly_one_wins,
    a_wrong_expected_version_names_current_and_expected,
    an_idempotent_retry_returns_the_original_result_and_stores_nothing,
    concurrent_retries_of_one_event_store_it_once,
    an_event_id_resent_with_other_content_is_an_idempotency_conflict,
    concurrent_appends_committed_together_each_get_their_own_answer,
    a_multi_event_append_is_all_or_nothing,
    a_multi_stream_append_is_all_or_nothing,
    ten_thousand_events_read_back_in_order_across_pages,
    thirty_two_concurrent_writers_store_every_event_exactly_once,
    a_reader_never_skips_a_transaction_that_commits_late,
    tampering_with_a_stored_payload_is_detected_at_that_event,
    the_log_refuses_updates_and_deletes,
    a_wakeup_fires_soon_after_an_append,
    oversized_and_malformed_input_is_rejected_and_appends_nothing,
    snapshots_keep_the_newest_state,
    events_are_found_by_id,
    the_log_survives_a_restart,
    two_handles_on_one_database_stay_consistent,
);

async fn appended_events_read_back_with_their_whole_envelope(h: &Harness) {
    let store = h.store();
    let account = stream("account-42");
    let correlation = Uuid::now_v7();
    let mut first = event(1);
    first.metadata.correlation_id = Some(correlation);
    first.metadata.idempotency_key = Some("topup-7".into());
    let second = event(2).with_schema_version(2);
    let sent = vec![first.clone(), second.clone()];

    let result = store
        .append(&account, ExpectedVersion::NoStream, sent.clone())
        .await
        .expect("append");

    assert!(!result.replayed);
    assert_eq!(result.stream_version(&account), Some(2));
    let read = store.read_stream(&account, 1, 10).await.expect("read");
    assert_eq!(read.len(), 2);
    for (stored, sent) in read.iter().zip(&sent) {
        assert_eq!(stored.event_id, sent.event_id);
        assert_eq!(stored.stream_id, account);
        assert_eq!(stored.event_type, sent.event_type);
        assert_eq!(stored.schema_version, sent.schema_version);
        assert_eq!(stored.payload, sent.payload);
        assert_eq!(stored.metadata, sent.metadata);
        assert_eq!(stored.occurred_at, sent.occurred_at);
        let age = chrono::Utc::now() - stored.recorded_at;
        assert!(
            age < chrono::Duration::minutes(1),
            "recorded_at is store time: {age}"
        );
        assert_ne!(stored.hash, [0; 32]);
    }
    assert_eq!(read[0].stream_version, 1);
    assert_eq!(read[1].stream_version, 2);
    assert!(read[0].position < read[1].position);
    assert_eq!(read[1].position, result.position());
    assert_eq!(read[0].metadata.correlation_id, Some(correlation));
    assert_eq!(read_everything(h, store.as_ref(), 10).await, read);
    assert_eq!(
        head_reaching(store.as_ref(), result.position()).await,
        result.position()
    );
    let report = verify_stream(store.as_ref(), &account).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.events_checked, 2);
}

async fn two_writers_race_on_one_stream_and_exactly_one_wins(h: &Harness) {
    let store = h.store();
    for round in 0..20u64 {
        let id = stream(&format!("race-{round}"));
        store
            .append(&id, ExpectedVersion::NoStream, events(0, 1))
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let racers: Vec<_> = (0..2)
            .map(|n| {
                let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    store
                        .append(&id, ExpectedVersion::Exact(1), events(10 + n, 1))
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => wins += 1,
                Err(StoreError::WrongExpectedVersion {
                    current, expected, ..
                }) => {
                    assert_eq!(current, 2);
                    assert_eq!(expected, ExpectedVersion::Exact(1));
                }
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one writer wins");
        assert_eq!(store.read_stream(&id, 1, 10).await.unwrap().len(), 2);
    }
}

async fn a_wrong_expected_version_names_current_and_expected(h: &Harness) {
    let store = h.store();
    let id = stream("account-7");
    store
        .append(&id, ExpectedVersion::Exact(0), events(0, 3))
        .await
        .expect("exact 0 creates a stream");

    let err = store
        .append(&id, ExpectedVersion::Exact(1), events(3, 1))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("at version 3") && text.contains("expected version 1"),
        "{text}"
    );

    let err = store
        .append(&id, ExpectedVersion::NoStream, events(3, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::WrongExpectedVersion { current: 3, .. }),
        "{err}"
    );

    let ok = store
        .append(&id, ExpectedVersion::Any, events(3, 1))
        .await
        .unwrap();
    assert_eq!(ok.stream_version(&id), Some(4));
    let ok = store
        .append(&id, ExpectedVersion::Exact(4), events(4, 1))
        .await
        .unwrap();
    assert_eq!(ok.stream_version(&id), Some(5));
}

async fn an_idempotent_retry_returns_the_original_result_and_stores_nothing(h: &Harness) {
    let store = h.store();
    let id = stream("payment-stars-1");
    let batch = events(0, 2);
    let original = store
        .append(&id, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    let head = head_reaching(store.as_ref(), original.position()).await;

    let retry = store
        .append(&id, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("a retry is not a conflict");
    assert!(retry.replayed);
    assert_eq!(retry.events, original.events);

    // Even after the stream moved on, the retry still gets its original answer.
    store
        .append(&id, ExpectedVersion::Exact(2), events(2, 1))
        .await
        .unwrap();
    let late = store
        .append(&id, ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert!(late.replayed);
    assert_eq!(late.events, original.events);

    assert_eq!(store.read_stream(&id, 1, 10).await.unwrap().len(), 3);
    assert_eq!(read_everything(h, store.as_ref(), 100).await.len(), 3);
    assert!(head_reaching(store.as_ref(), head + 1).await > head);
}

async fn concurrent_retries_of_one_event_store_it_once(h: &Harness) {
    let store = h.store();
    let id = stream("webhook-dup");
    let one = event(1);
    let barrier = Arc::new(tokio::sync::Barrier::new(16));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (store, id, one, barrier) =
                (store.clone(), id.clone(), one.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.append(&id, ExpectedVersion::Any, vec![one]).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().expect("every retry succeeds"));
    }
    assert_eq!(results.iter().filter(|r| !r.replayed).count(), 1);
    let positions: HashSet<u64> = results.iter().map(|r| r.position()).collect();
    assert_eq!(positions.len(), 1, "every caller sees the one stored event");
    assert_eq!(store.read_stream(&id, 1, 10).await.unwrap().len(), 1);
}

async fn an_event_id_resent_with_other_content_is_an_idempotency_conflict(h: &Harness) {
    let store = h.store();
    let id = stream("account-9");
    let original = event(1);
    store
        .append(&id, ExpectedVersion::Any, vec![original.clone()])
        .await
        .unwrap();

    let mut changed = original.clone();
    changed.payload = serde_json::json!({ "n": 1, "amount": "999.00" });
    let err = store
        .append(&id, ExpectedVersion::Any, vec![changed])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::IdempotencyConflict { event_id, .. } if *event_id == original.event_id),
        "{err}"
    );
    assert!(err.to_string().contains("different payload"), "{err}");

    let err = store
        .append(
            &stream("account-10"),
            ExpectedVersion::Any,
            vec![original.clone()],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::IdempotencyConflict { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("account-9"), "{err}");

    // A stored id smuggled into a new batch is a conflict too, and the batch is not stored.
    let mut batch = events(5, 2);
    batch.push(original.clone());
    let err = store
        .append(&id, ExpectedVersion::Any, batch)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::IdempotencyConflict { .. }),
        "{err}"
    );
    assert_eq!(read_everything(h, store.as_ref(), 100).await.len(), 1);
}

async fn concurrent_appends_committed_together_each_get_their_own_answer(h: &Harness) {
    let store = h.store();
    let streams: Vec<StreamId> = (0..16).map(|i| stream(&format!("group-{i}"))).collect();
    let mut seeds = Vec::new();
    for id in &streams {
        let seed = event(0);
        let stored = store
            .append(id, ExpectedVersion::NoStream, vec![seed.clone()])
            .await
            .unwrap();
        seeds.push((seed, stored));
    }
    // 48 appends at once, so backends that commit concurrent appends together do: for
    // every stream one that fits, one that expects a version it never had, and one
    // re-send of the stream's first event.
    let barrier = Arc::new(tokio::sync::Barrier::new(48));
    let mut tasks = Vec::new();
    for (i, id) in streams.iter().enumerate() {
        let calls = [
            (ExpectedVersion::Exact(1), vec![event(100 + i as u64)]),
            (ExpectedVersion::Exact(7), vec![event(200 + i as u64)]),
            (ExpectedVersion::NoStream, vec![seeds[i].0.clone()]),
        ];
        for (kind, (expected, batch)) in calls.into_iter().enumerate() {
            let (store, id, barrier) = (store.clone(), id.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                (i, kind, store.append(&id, expected, batch).await)
            }));
        }
    }
    for task in tasks {
        let (i, kind, result) = task.await.unwrap();
        match (kind, result) {
            (0, Ok(done)) => {
                assert!(!done.replayed);
                assert_eq!(done.stream_version(&streams[i]), Some(2));
            }
            (
                1,
                Err(StoreError::WrongExpectedVersion {
                    current, expected, ..
                }),
            ) => {
                assert!(current == 1 || current == 2, "current {current}");
                assert_eq!(expected, ExpectedVersion::Exact(7));
            }
            (2, Ok(done)) => {
                assert!(done.replayed, "a re-send is answered with the original");
                assert_eq!(done.events, seeds[i].1.events);
            }
            (kind, other) => panic!("stream {i}, call {kind}: unexpected {other:?}"),
        }
    }
    let all = read_everything(h, store.as_ref(), 100).await;
    assert_eq!(
        all.len(),
        32,
        "16 seeds and 16 appends that fit, nothing else"
    );
    assert_strictly_increasing(&all);
    assert!(verify_log(store.as_ref(), |_| {}).await.unwrap().ok());
}

async fn a_multi_event_append_is_all_or_nothing(h: &Harness) {
    let store = h.store();
    let id = stream("account-5");
    store
        .append(&id, ExpectedVersion::NoStream, events(0, 1))
        .await
        .unwrap();

    let mut batch = events(1, 4);
    batch.push(NewEvent::new(
        "test.too_big",
        serde_json::json!({ "blob": "x".repeat(PAYLOAD_BYTES_MAX) }),
        Metadata::by(Actor::system("test")),
    ));
    let err = store
        .append(&id, ExpectedVersion::Exact(1), batch)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::LimitExceeded {
                what: "payload bytes",
                ..
            }
        ),
        "{err}"
    );

    let err = store
        .append(&id, ExpectedVersion::Exact(7), events(1, 5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::WrongExpectedVersion { .. }),
        "{err}"
    );

    assert_eq!(store.read_stream(&id, 1, 100).await.unwrap().len(), 1);
    let ok = store
        .append(&id, ExpectedVersion::Exact(1), events(1, 5))
        .await
        .unwrap();
    let positions: Vec<u64> = ok.events.iter().map(|e| e.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(ok.stream_version(&id), Some(6));
}

async fn a_multi_stream_append_is_all_or_nothing(h: &Harness) {
    let store = h.store();
    let account = stream("account-1");
    let payment = stream("payment-1");
    let seeded = store
        .append(&payment, ExpectedVersion::NoStream, events(0, 1))
        .await
        .unwrap();
    let before = head_reaching(store.as_ref(), seeded.position()).await;

    let err = store
        .append_many(vec![
            StreamAppend {
                stream_id: account.clone(),
                expected: ExpectedVersion::NoStream,
                events: events(1, 2),
            },
            StreamAppend {
                stream_id: payment.clone(),
                expected: ExpectedVersion::Exact(5),
                events: events(3, 1),
            },
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::WrongExpectedVersion { stream_id, current: 1, .. } if *stream_id == payment),
        "{err}"
    );
    assert!(store.read_stream(&account, 1, 10).await.unwrap().is_empty());
    assert_eq!(store.head_position().await.unwrap(), before);
    assert_eq!(store.last_position().await.unwrap(), before);
    assert_eq!(read_everything(h, store.as_ref(), 100).await.len(), 1);

    let ok = store
        .append_many(vec![
            StreamAppend {
                stream_id: account.clone(),
                expected: ExpectedVersion::NoStream,
                events: events(1, 2),
            },
            StreamAppend {
                stream_id: payment.clone(),
                expected: ExpectedVersion::Exact(1),
                events: events(3, 1),
            },
        ])
        .await
        .unwrap();
    assert_eq!(ok.stream_version(&account), Some(2));
    assert_eq!(ok.stream_version(&payment), Some(2));
    let all = read_everything(h, store.as_ref(), 100).await;
    assert_eq!(all.len(), 4);
    assert_strictly_increasing(&all);
}

async fn ten_thousand_events_read_back_in_order_across_pages(h: &Harness) {
    let store = h.store();
    let streams: Vec<StreamId> = (0..10).map(|i| stream(&format!("bulk-{i}"))).collect();
    let mut sent = Vec::new();
    for round in 0..20u64 {
        for (i, id) in streams.iter().enumerate() {
            let batch = events(round * 1_000 + i as u64 * 50, 50);
            sent.extend(batch.iter().map(|e| e.event_id));
            store
                .append(id, ExpectedVersion::Exact(round * 50), batch)
                .await
                .unwrap();
        }
    }
    assert_eq!(sent.len(), 10_000);

    let all = read_everything(h, store.as_ref(), 777).await;
    assert_eq!(all.len(), 10_000);
    assert_strictly_increasing(&all);
    let read: Vec<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(read, sent, "read_all returns events in append order");

    let mut versions: HashMap<&StreamId, u64> = HashMap::new();
    for e in &all {
        let v = versions.entry(&e.stream_id).or_default();
        *v += 1;
        assert_eq!(
            e.stream_version, *v,
            "versions within a stream have no gaps"
        );
    }

    let mut from = 1;
    let mut paged = Vec::new();
    loop {
        let page = store.read_stream(&streams[3], from, 333).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.stream_version + 1;
        paged.extend(page);
    }
    assert_eq!(paged.len(), 1_000);
    assert!(
        paged
            .iter()
            .enumerate()
            .all(|(i, e)| e.stream_version == i as u64 + 1)
    );

    let report = verify_log(store.as_ref(), |_| {}).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        (report.events_checked, report.streams_checked),
        (10_000, 10)
    );
}

async fn thirty_two_concurrent_writers_store_every_event_exactly_once(h: &Harness) {
    let store = h.store();
    let writers: Vec<_> = (0..32u64)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let id = stream(&format!("writer-{w}"));
                let mut ids = Vec::new();
                for v in 0..40u64 {
                    let e = event(w * 1_000 + v);
                    ids.push(e.event_id);
                    store
                        .append(&id, ExpectedVersion::Exact(v), vec![e])
                        .await
                        .expect("a writer alone on its stream never conflicts");
                }
                ids
            })
        })
        .collect();
    let mut expected = HashSet::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }

    let all = read_everything(h, store.as_ref(), 500).await;
    assert_eq!(all.len(), 32 * 40);
    assert_strictly_increasing(&all);
    let read: HashSet<Uuid> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(read.len(), all.len(), "no event twice");
    assert_eq!(read, expected, "every event present");
    assert!(verify_log(store.as_ref(), |_| {}).await.unwrap().ok());
}

async fn a_reader_never_skips_a_transaction_that_commits_late(h: &Harness) {
    let store = h.store();
    let late_stream = stream("late");
    let early_stream = stream("early");
    let pending = h
        .begin_append(StreamAppend {
            stream_id: late_stream.clone(),
            expected: ExpectedVersion::NoStream,
            events: events(1, 1),
        })
        .await;
    let late_position = pending.position();

    let later = {
        let (store, id) = (store.clone(), early_stream.clone());
        tokio::spawn(async move {
            store
                .append(&id, ExpectedVersion::NoStream, events(2, 1))
                .await
        })
    };
    let mut later = Some(later);
    if h.writers_overlap() {
        // Postgres: the later append commits while the first is still open.
        let done = later
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("a later append commits first");
        assert!(done.position() > late_position, "it took a later position");
    }
    // A reader polling now must not move its checkpoint past the open transaction.
    let first_read = store.read_all(0, 100).await.unwrap();
    assert!(
        first_read.is_empty(),
        "nothing may be returned past an uncommitted position, got {first_read:?}"
    );
    let checkpoint = first_read.last().map_or(0, |e| e.position);
    assert_eq!(store.head_position().await.unwrap(), 0);
    // The last committed position counts the later commit, which readers cannot see yet.
    let committed_later = if h.writers_overlap() {
        late_position + 1
    } else {
        0
    };
    assert!(store.last_position().await.unwrap() >= committed_later);

    pending.commit().await;
    if let Some(later) = later {
        // SQLite: the later append waited for the write lock; it commits now.
        later
            .await
            .unwrap()
            .expect("the later append commits after");
    }
    let second_read = read_from(h, store.as_ref(), checkpoint, 100).await;
    let seen: Vec<&str> = first_read
        .iter()
        .chain(&second_read)
        .map(|e| e.stream_id.as_str())
        .collect();
    assert_eq!(
        seen,
        ["late", "early"],
        "the late commit is read, in position order"
    );
    assert_eq!(second_read[0].position, late_position);
}

async fn tampering_with_a_stored_payload_is_detected_at_that_event(h: &Harness) {
    let store = h.store();
    let x = stream("account-x");
    let y = stream("account-y");
    store
        .append(&x, ExpectedVersion::NoStream, events(0, 3))
        .await
        .unwrap();
    let last = store
        .append(&y, ExpectedVersion::NoStream, events(3, 2))
        .await
        .unwrap()
        .position();
    head_reaching(store.as_ref(), last).await;
    let clean = verify_log(store.as_ref(), |_| {}).await.unwrap();
    assert!(clean.ok(), "{clean:?}");
    assert_eq!((clean.events_checked, clean.through_position), (5, last));

    let victim = store.read_stream(&x, 2, 1).await.unwrap().remove(0);
    h.tamper_payload(victim.position, r#"{"amount":"999.00","n":1}"#)
        .await;

    let report = verify_log(store.as_ref(), |_| {}).await.unwrap();
    let problem = report.first_problem.expect("tampering is detected");
    assert_eq!(problem.position, victim.position);
    assert_eq!(problem.stream_id, "account-x");
    assert_eq!(problem.stream_version, 2);
    assert_eq!(problem.event_id, victim.event_id);
    assert!(problem.detail.contains("hash"), "{}", problem.detail);
    let x_report = verify_stream(store.as_ref(), &x).await.unwrap();
    assert_eq!(
        x_report.first_problem.map(|p| p.position),
        Some(victim.position)
    );
    assert!(verify_stream(store.as_ref(), &y).await.unwrap().ok());
}

async fn the_log_refuses_updates_and_deletes(h: &Harness) {
    let store = h.store();
    store
        .append(
            &stream("account-1"),
            ExpectedVersion::NoStream,
            events(0, 1),
        )
        .await
        .unwrap();
    let refusals = h.try_edit_log().await;
    for (what, refusal) in refusals {
        let message = refusal.expect_err(what);
        assert!(message.contains("append-only"), "{what}: {message}");
    }
    assert_eq!(read_everything(h, store.as_ref(), 10).await.len(), 1);
}

async fn a_wakeup_fires_soon_after_an_append(h: &Harness) {
    let store = h.store();
    let mut wakeups = store.subscribe();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store
                .append(&stream("account-1"), ExpectedVersion::Any, events(0, 1))
                .await
                .unwrap()
        })
    };
    let heard = tokio::time::timeout(Duration::from_secs(5), wakeups.wait())
        .await
        .expect("woken within 5 s")
        .unwrap();
    let appended = writer.await.unwrap();
    assert!(heard >= appended.position() || heard > 0);
    assert_eq!(read_everything(h, store.as_ref(), 10).await.len(), 1);

    // A second append wakes the same subscription again.
    let again = store
        .append(&stream("account-1"), ExpectedVersion::Any, events(1, 1))
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), wakeups.wait())
        .await
        .expect("woken again")
        .unwrap();
    assert_eq!(heard, again.position());
}

async fn oversized_and_malformed_input_is_rejected_and_appends_nothing(h: &Harness) {
    let store = h.store();
    let id = stream("account-1");
    let limit = |r: Result<tally_store::AppendResult, StoreError>| match r {
        Err(StoreError::LimitExceeded { what, .. }) => what,
        other => panic!("expected a limit error, got {other:?}"),
    };
    let invalid = |r: Result<tally_store::AppendResult, StoreError>| match r {
        Err(StoreError::InvalidInput(detail)) => detail,
        other => panic!("expected invalid input, got {other:?}"),
    };

    let big = NewEvent::new(
        "test.big",
        serde_json::json!({ "blob": "x".repeat(PAYLOAD_BYTES_MAX + 1) }),
        Metadata::by(Actor::system("test")),
    );
    assert_eq!(
        limit(store.append(&id, ExpectedVersion::Any, vec![big]).await),
        "payload bytes"
    );
    let too_many = events(0, EVENTS_PER_APPEND_MAX as u64 + 1);
    assert_eq!(
        limit(store.append(&id, ExpectedVersion::Any, too_many).await),
        "events in one append"
    );
    let wide: Vec<StreamAppend> = (0..=STREAMS_PER_APPEND_MAX)
        .map(|i| StreamAppend {
            stream_id: stream(&format!("s-{i}")),
            expected: ExpectedVersion::Any,
            events: events(i as u64, 1),
        })
        .collect();
    assert_eq!(
        limit(store.append_many(wide).await),
        "streams in one append"
    );
    let mut huge_meta = event(1);
    huge_meta.metadata.idempotency_key = Some("k".repeat(5_000));
    assert_eq!(
        limit(
            store
                .append(&id, ExpectedVersion::Any, vec![huge_meta])
                .await
        ),
        "metadata bytes"
    );

    let detail = invalid(store.append(&id, ExpectedVersion::Any, vec![]).await);
    assert!(detail.contains("no events"), "{detail}");
    let mut badly_named = event(1);
    badly_named.event_type = "Credits Placed".into();
    let detail = invalid(
        store
            .append(&id, ExpectedVersion::Any, vec![badly_named])
            .await,
    );
    assert!(detail.contains("a-z"), "{detail}");
    let detail = invalid(
        store
            .append(
                &id,
                ExpectedVersion::Any,
                vec![event(1).with_schema_version(0)],
            )
            .await,
    );
    assert!(detail.contains("schema version 0"), "{detail}");
    let twice = event(1);
    let detail = invalid(
        store
            .append(&id, ExpectedVersion::Any, vec![twice.clone(), twice])
            .await,
    );
    assert!(detail.contains("twice"), "{detail}");
    assert!(invalid(store.append_many(vec![]).await).contains("no stream"));

    assert!(StreamId::new("").is_err());
    assert!(StreamId::new("account 1").is_err());
    assert!(StreamId::new("a".repeat(300)).is_err());
    assert!(matches!(
        store.read_all(0, 0).await,
        Err(StoreError::InvalidInput(_))
    ));
    assert!(matches!(
        store.read_all(0, READ_PAGE_EVENTS_MAX + 1).await,
        Err(StoreError::LimitExceeded { .. })
    ));
    assert!(matches!(
        store.read_stream(&id, 1, READ_PAGE_EVENTS_MAX + 1).await,
        Err(StoreError::LimitExceeded { .. })
    ));
    let fat = Snapshot {
        stream_id: id.clone(),
        stream_version: 1,
        state: vec![0; SNAPSHOT_BYTES_MAX + 1],
    };
    assert!(matches!(
        store.save_snapshot(&fat).await,
        Err(StoreError::LimitExceeded { .. })
    ));

    assert_eq!(
        store.head_position().await.unwrap(),
        0,
        "nothing was appended"
    );
    assert!(store.read_all(0, 10).await.unwrap().is_empty());
}

async fn events_are_found_by_id(h: &Harness) {
    let store = h.store();
    let batch = events(0, 3);
    store
        .append(
            &stream("account-1"),
            ExpectedVersion::NoStream,
            batch.clone(),
        )
        .await
        .unwrap();
    let wanted = [batch[2].event_id, Uuid::now_v7(), batch[0].event_id];
    let found = store.find_events(&wanted).await.unwrap();
    let ids: Vec<Uuid> = found.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids,
        [batch[0].event_id, batch[2].event_id],
        "existing ones, in position order"
    );
    assert_eq!(found[1].payload, batch[2].payload);
    assert!(store.find_events(&[]).await.unwrap().is_empty());
    assert!(matches!(
        store
            .find_events(&vec![Uuid::nil(); READ_PAGE_EVENTS_MAX + 1])
            .await,
        Err(StoreError::LimitExceeded { .. })
    ));
}

async fn snapshots_keep_the_newest_state(h: &Harness) {
    let store = h.store();
    let id = stream("account-1");
    assert_eq!(store.load_snapshot(&id).await.unwrap(), None);
    let at = |v: u64| Snapshot {
        stream_id: id.clone(),
        stream_version: v,
        state: format!("state@{v}").into_bytes(),
    };
    store.save_snapshot(&at(5)).await.unwrap();
    assert_eq!(store.load_snapshot(&id).await.unwrap(), Some(at(5)));
    store.save_snapshot(&at(3)).await.unwrap();
    assert_eq!(
        store.load_snapshot(&id).await.unwrap(),
        Some(at(5)),
        "an older snapshot never replaces a newer one"
    );
    store.save_snapshot(&at(7)).await.unwrap();
    assert_eq!(store.load_snapshot(&id).await.unwrap(), Some(at(7)));
    assert_eq!(
        store.load_snapshot(&stream("account-2")).await.unwrap(),
        None
    );

    // Several at once, in one transaction: all or nothing.
    let other = |name: &str, v: u64| Snapshot {
        stream_id: stream(name),
        stream_version: v,
        state: format!("{name}@{v}").into_bytes(),
    };
    store
        .save_snapshots(&[other("account-2", 4), other("account-3", 9), at(8)])
        .await
        .unwrap();
    assert_eq!(store.load_snapshot(&id).await.unwrap(), Some(at(8)));
    assert_eq!(
        store.load_snapshot(&stream("account-3")).await.unwrap(),
        Some(other("account-3", 9))
    );
    let refused = store
        .save_snapshots(&[other("account-2", 6), other("account-4", 0)])
        .await;
    assert!(
        matches!(refused, Err(StoreError::InvalidInput(_))),
        "{refused:?}"
    );
    assert_eq!(
        store.load_snapshot(&stream("account-2")).await.unwrap(),
        Some(other("account-2", 4)),
        "nothing of a refused save is stored"
    );
}

async fn the_log_survives_a_restart(h: &Harness) {
    let id = stream("account-1");
    let before = {
        let store = h.store();
        store
            .append(&id, ExpectedVersion::NoStream, events(0, 3))
            .await
            .unwrap();
        read_everything(h, store.as_ref(), 10).await
    };
    let reopened = h.reopen().await;
    assert_eq!(read_everything(h, reopened.as_ref(), 10).await, before);
    assert_eq!(
        head_reaching(reopened.as_ref(), before[2].position).await,
        before[2].position
    );
    let next = reopened
        .append(&id, ExpectedVersion::Exact(3), events(3, 1))
        .await
        .unwrap();
    assert!(next.position() > before[2].position);
    assert!(verify_log(reopened.as_ref(), |_| {}).await.unwrap().ok());
}

async fn two_handles_on_one_database_stay_consistent(h: &Harness) {
    let a = h.store();
    let b = h.reopen().await;
    let id = stream("account-1");
    a.append(&id, ExpectedVersion::NoStream, events(0, 1))
        .await
        .unwrap();
    b.append(&id, ExpectedVersion::Exact(1), events(1, 1))
        .await
        .unwrap();
    // `a` last saw version 1; it must learn the stream moved rather than fork it.
    let err = a
        .append(&id, ExpectedVersion::Exact(1), events(2, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::WrongExpectedVersion { current: 2, .. }),
        "{err}"
    );
    a.append(&id, ExpectedVersion::Exact(2), events(2, 1))
        .await
        .unwrap();
    a.append(&id, ExpectedVersion::Any, events(3, 1))
        .await
        .unwrap();
    b.append(&id, ExpectedVersion::Any, events(4, 1))
        .await
        .unwrap();
    let all = b.read_stream(&id, 1, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(verify_stream(a.as_ref(), &id).await.unwrap().ok());
}

/// Postgres only: another process (here, another store on the same database) is woken
/// through LISTEN/NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_wakes_other_processes_through_notify() {
    let h = Harness::postgres().await;
    let writer = h.store();
    let reader = h.reopen().await;
    let mut wakeups = reader.subscribe();
    // Give the reader's LISTEN connection a moment to be established.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let appended = writer
        .append(&stream("account-1"), ExpectedVersion::Any, events(0, 1))
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let head = wakeups.wait().await.unwrap();
            if head >= appended.position() {
                return head;
            }
        }
    })
    .await
    .expect("the other process is woken within 5 s");
    assert_eq!(heard, appended.position());
    assert_eq!(read_everything(&h, reader.as_ref(), 10).await.len(), 1);
    drop((writer, reader));
    h.finish().await;
}
