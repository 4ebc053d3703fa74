//! Read model `posts`: ad slots (owner, content, destinations) and what became of every
//! post attempt — attempts, successes and failures per slot and destination, failures
//! per error kind, the last error — and which destinations each cycle reached. Counters
//! of a batch are summed in memory and added with one upsert per slot and destination.

use std::collections::BTreeMap;

use sqlx::AnyConnection;
use tally_domain::slot::{Outcome, SlotEvent};

use crate::ProjectionError;
use crate::events::{Batch, stream_event};
use crate::sql::{Value, execute, insert_rows};

crate::read_model!(
    /// The ad slots and post analytics read model.
    PostsReadModel {
        name: "posts",
        version: 3,
        schema: "posts.sql",
        tables: ["slots", "slot_destinations", "post_stats", "post_failures", "slot_posts"],
        apply: apply,
    }
);

/// Error kind recorded for a failure that named none.
pub const UNKNOWN_ERROR: &str = "unknown";

/// Error kind recorded for a post whose outcome is unknown and that named none.
pub const OUTCOME_UNKNOWN: &str = "outcome_unknown";

#[derive(Default)]
struct Counters {
    attempts: i64,
    successes: i64,
    failures: i64,
    last_error: String,
    last_error_at: i64,
    last_attempt_at: i64,
}

/// How a batch of events changes the tables.
async fn apply(conn: &mut AnyConnection, g: &str, batch: &Batch) -> Result<(), ProjectionError> {
    // (slot, chat, topic) → counters; (slot, chat, topic, error kind) → failures.
    let mut stats: BTreeMap<(String, i64, i64), Counters> = BTreeMap::new();
    let mut failures: BTreeMap<(String, i64, i64, String), i64> = BTreeMap::new();
    let mut posted: Vec<Vec<Value>> = Vec::new();
    for recorded in batch.events() {
        let Some((slot_id, event)) = stream_event::<SlotEvent>(recorded, "slot")? else {
            continue;
        };
        let at = recorded.occurred_at.timestamp_micros();
        match event {
            SlotEvent::Configured(config) => {
                execute(
                    conn,
                    &format!(
                        "INSERT INTO slots{g} (slot_id, user_id, content, destinations, \
                         configured_at, position, status) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'active') \
                         ON CONFLICT (slot_id) DO UPDATE SET user_id = excluded.user_id, \
                         content = excluded.content, destinations = excluded.destinations, \
                         configured_at = excluded.configured_at, position = excluded.position, \
                         status = CASE WHEN slots{g}.status = 'removed' THEN 'active' \
                             ELSE slots{g}.status END"
                    ),
                    &[
                        slot_id.into(),
                        config.user_id.get().into(),
                        config.content.into(),
                        (config.destinations.len() as i64).into(),
                        at.into(),
                        (recorded.position as i64).into(),
                    ],
                )
                .await?;
                execute(
                    conn,
                    &format!("DELETE FROM slot_destinations{g} WHERE slot_id = $1"),
                    &[slot_id.into()],
                )
                .await?;
                let mut rows: Vec<Vec<Value>> = config
                    .destinations
                    .iter()
                    .map(|d| {
                        vec![
                            slot_id.into(),
                            d.chat_id.into(),
                            d.topic_id.unwrap_or(0).into(),
                        ]
                    })
                    .collect();
                rows.dedup();
                insert_rows(
                    conn,
                    &format!("slot_destinations{g}"),
                    &["slot_id", "chat_id", "topic_id"],
                    &rows,
                    "ON CONFLICT DO NOTHING",
                )
                .await?;
            }
            SlotEvent::Paused { .. } | SlotEvent::Resumed {} | SlotEvent::Removed {} => {
                let status = match event {
                    SlotEvent::Paused { .. } => "paused",
                    SlotEvent::Resumed {} => "active",
                    _ => "removed",
                };
                execute(
                    conn,
                    &format!("UPDATE slots{g} SET status = $1 WHERE slot_id = $2"),
                    &[status.into(), slot_id.into()],
                )
                .await?;
            }
            // A start is counted when its outcome is recorded (as an attempt).
            SlotEvent::PostStarted { .. } => {}
            // The poster reads a pause from the slot's state (not yet in this model).
            SlotEvent::DestinationPaused { .. } => {}
            SlotEvent::DestinationMoved { from, to, .. } => {
                execute(
                    conn,
                    &format!(
                        "UPDATE slot_destinations{g} SET chat_id = $1, topic_id = $2 \
                         WHERE slot_id = $3 AND chat_id = $4 AND topic_id = $5"
                    ),
                    &[
                        to.chat_id.into(),
                        to.topic_id.unwrap_or(0).into(),
                        slot_id.into(),
                        from.chat_id.into(),
                        from.topic_id.unwrap_or(0).into(),
                    ],
                )
                .await?;
            }
            SlotEvent::PostAttempted(attempt) => {
                let d = attempt.destination;
                let key = (slot_id.to_string(), d.chat_id, d.topic_id.unwrap_or(0));
                let counters = stats.entry(key.clone()).or_default();
                counters.attempts += 1;
                counters.last_attempt_at = at;
                match attempt.outcome {
                    Outcome::Succeeded => {
                        counters.successes += 1;
                        posted.push(vec![
                            key.0.clone().into(),
                            i64::try_from(attempt.cycle).unwrap_or(i64::MAX).into(),
                            key.1.into(),
                            key.2.into(),
                            at.into(),
                        ]);
                    }
                    Outcome::Failed => {
                        let kind = attempt
                            .error_kind
                            .unwrap_or_else(|| UNKNOWN_ERROR.to_string());
                        counters.failures += 1;
                        counters.last_error = kind.clone();
                        counters.last_error_at = at;
                        *failures.entry((key.0, key.1, key.2, kind)).or_default() += 1;
                    }
                    // Neither posted nor failed for sure: kept apart, by its kind.
                    Outcome::Unknown => {
                        let kind = attempt
                            .error_kind
                            .unwrap_or_else(|| OUTCOME_UNKNOWN.to_string());
                        *failures.entry((key.0, key.1, key.2, kind)).or_default() += 1;
                    }
                }
            }
        }
    }
    batch
        .insert(
            conn,
            &format!("slot_posts{g}"),
            &["slot_id", "cycle", "chat_id", "topic_id", "posted_at"],
            posted,
        )
        .await?;
    let rows: Vec<Vec<Value>> = stats
        .into_iter()
        .map(|((slot, chat, topic), c)| {
            vec![
                slot.into(),
                chat.into(),
                topic.into(),
                c.attempts.into(),
                c.successes.into(),
                c.failures.into(),
                c.last_error.into(),
                c.last_error_at.into(),
                c.last_attempt_at.into(),
            ]
        })
        .collect();
    let t = format!("post_stats{g}");
    insert_rows(
        conn,
        &t,
        &[
            "slot_id",
            "chat_id",
            "topic_id",
            "attempts",
            "successes",
            "failures",
            "last_error",
            "last_error_at",
            "last_attempt_at",
        ],
        &rows,
        &format!(
            "ON CONFLICT (slot_id, chat_id, topic_id) DO UPDATE SET \
             attempts = {t}.attempts + excluded.attempts, \
             successes = {t}.successes + excluded.successes, \
             failures = {t}.failures + excluded.failures, \
             last_error = CASE WHEN excluded.last_error_at > 0 \
                 THEN excluded.last_error ELSE {t}.last_error END, \
             last_error_at = CASE WHEN excluded.last_error_at > 0 \
                 THEN excluded.last_error_at ELSE {t}.last_error_at END, \
             last_attempt_at = excluded.last_attempt_at"
        ),
    )
    .await?;
    let rows: Vec<Vec<Value>> = failures
        .into_iter()
        .map(|((slot, chat, topic, kind), n)| {
            vec![
                slot.into(),
                chat.into(),
                topic.into(),
                kind.into(),
                n.into(),
            ]
        })
        .collect();
    let t = format!("post_failures{g}");
    insert_rows(
        conn,
        &t,
        &["slot_id", "chat_id", "topic_id", "error_kind", "failures"],
        &rows,
        &format!(
            "ON CONFLICT (slot_id, chat_id, topic_id, error_kind) DO UPDATE SET \
             failures = {t}.failures + excluded.failures"
        ),
    )
    .await
}

/// The ids of `owner`'s active slots in the order they were configured (a plan of N
/// slots covers the first N; paused and deleted slots count for nothing).
pub async fn slots_of_owner(
    pool: &sqlx::AnyPool,
    owner: i64,
) -> Result<Vec<String>, ProjectionError> {
    Ok(sqlx::query_scalar(
        "SELECT slot_id FROM slots WHERE user_id = $1 AND status = 'active' \
         ORDER BY configured_at, slot_id",
    )
    .bind(owner)
    .fetch_all(pool)
    .await?)
}

/// The slots posting to `chat`, each with the forum topic it posts to there (`None`:
/// the chat itself, or a forum's General topic), by slot id.
pub async fn slots_posting_to(
    pool: &sqlx::AnyPool,
    chat: i64,
) -> Result<Vec<(String, Option<i64>)>, ProjectionError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT slot_id, topic_id FROM slot_destinations WHERE chat_id = $1 \
         ORDER BY slot_id, topic_id",
    )
    .bind(chat)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(slot, topic)| (slot, (topic != 0).then_some(topic)))
        .collect())
}

/// A slot due in a cycle, with its destinations not yet posted to successfully.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueSlot {
    /// The slot.
    pub slot_id: String,
    /// Its owner.
    pub user_id: i64,
    /// What it posts.
    pub content: String,
    /// (chat id, forum topic) still to post to in the cycle.
    pub destinations: Vec<(i64, Option<i64>)>,
}

/// One page of the slots due in `cycle` at `now` (microseconds): covered by their
/// owner's plan (a slot's rank among its owner's slots, by configuration time, within
/// the plan's count; the plan active or cancelled but paid until after `now`) and
/// with a destination that has no success in the cycle; slot ids after `after`, at
/// most `limit`, by slot id. Decided in the database, so a page costs the same
/// however many slots there are.
pub async fn due_slots(
    pool: &sqlx::AnyPool,
    now: i64,
    cycle: i64,
    after: &str,
    limit: i64,
) -> Result<Vec<DueSlot>, ProjectionError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "WITH ranked AS ( \
             SELECT slot_id, user_id, content, ROW_NUMBER() OVER \
                 (PARTITION BY user_id ORDER BY configured_at, slot_id) AS n FROM slots \
             WHERE status = 'active'), \
         open AS ( \
             SELECT d.slot_id, d.chat_id, d.topic_id FROM slot_destinations d \
             WHERE NOT EXISTS (SELECT 1 FROM slot_posts p WHERE p.slot_id = d.slot_id \
                 AND p.cycle = $2 AND p.chat_id = d.chat_id AND p.topic_id = d.topic_id)), \
         page AS ( \
             SELECT r.slot_id, r.user_id, r.content FROM ranked r \
             JOIN subscriptions u ON u.user_id = r.user_id \
             WHERE r.n <= u.slots AND u.status IN ('active', 'cancelled') \
               AND u.period_end > $1 AND r.slot_id > $3 \
               AND EXISTS (SELECT 1 FROM open o WHERE o.slot_id = r.slot_id) \
             ORDER BY r.slot_id LIMIT $4) \
         SELECT o.slot_id, p.user_id, p.content, o.chat_id, o.topic_id \
         FROM page p JOIN open o ON o.slot_id = p.slot_id \
         ORDER BY o.slot_id, o.chat_id, o.topic_id",
    )
    .bind(now)
    .bind(cycle)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut slots: Vec<DueSlot> = Vec::new();
    for row in rows {
        let slot_id: String = row.get(0);
        let topic: i64 = row.get(4);
        let destination = (row.get(3), (topic != 0).then_some(topic));
        match slots.last_mut() {
            Some(last) if last.slot_id == slot_id => last.destinations.push(destination),
            _ => slots.push(DueSlot {
                slot_id,
                user_id: row.get(1),
                content: row.get(2),
                destinations: vec![destination],
            }),
        }
    }
    Ok(slots)
}

/// A slot with its post analytics summed over its destinations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotSummary {
    /// The slot.
    pub slot_id: String,
    /// How many destinations it has.
    pub destinations: i64,
    /// Post attempts.
    pub attempts: i64,
    /// Successful posts.
    pub successes: i64,
    /// Failed posts.
    pub failures: i64,
}

/// `owner`'s slots with their analytics, in the order they were configured.
pub async fn slot_summaries(
    pool: &sqlx::AnyPool,
    owner: i64,
) -> Result<Vec<SlotSummary>, ProjectionError> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT s.slot_id, s.destinations, \
                CAST(coalesce(sum(p.attempts), 0) AS BIGINT), CAST(coalesce(sum(p.successes), 0) AS BIGINT), \
                CAST(coalesce(sum(p.failures), 0) AS BIGINT) \
         FROM slots s LEFT JOIN post_stats p ON p.slot_id = s.slot_id \
         WHERE s.user_id = $1 AND s.status <> 'removed' GROUP BY s.slot_id, s.destinations, s.configured_at \
         ORDER BY s.configured_at",
    )
    .bind(owner)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| SlotSummary {
            slot_id: r.get(0),
            destinations: r.get(1),
            attempts: r.get(2),
            successes: r.get(3),
            failures: r.get(4),
        })
        .collect())
}
