//! The endpoints and the delivery log, in their own tables (`schema/*/0007_webhooks.sql`).
//! Endpoints are the operator's configuration, like API keys: they hold a secret, so
//! they are not events of the log (which auditors export); what is delivered is
//! recorded in `webhook_deliveries`, attempt by attempt.
//!
//! One file: every statement on the two webhook tables is here, so the deliverer and the admin routes cannot disagree about them.

use serde::Serialize;
use sqlx::{AnyPool, Row};

use crate::{Settings, WebhookError, now_micros};

/// An endpoint as admins see it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// `we_…`.
    pub endpoint_id: String,
    /// Where events go.
    pub url: String,
    /// The event types it wants: exact (`payment.succeeded`), a family (`credits.*`)
    /// or `*`.
    pub event_types: Vec<String>,
    /// False once disabled (by an admin, or after failing for the whole schedule).
    pub enabled: bool,
    /// Why it was disabled.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub disabled_reason: String,
    /// When it was disabled (microseconds; 0: not).
    #[serde(skip)]
    pub disabled_at: i64,
    /// When it was added (microseconds).
    #[serde(skip)]
    pub created_at: i64,
    /// The last log position delivered (or not wanted).
    pub cursor: i64,
    /// Failed attempts of the next event.
    pub attempts: i64,
    /// Since when it fails (microseconds; 0: it does not).
    #[serde(skip)]
    pub failing_since: i64,
    /// When the next attempt may be made (microseconds).
    #[serde(skip)]
    pub next_attempt_at: i64,
    /// A replay in progress: `(from, to, last done)`.
    #[serde(skip)]
    pub replay: Option<(i64, i64, i64)>,
}

impl Endpoint {
    /// Whether it wants events of this type.
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types
            .iter()
            .any(|pattern| matches(pattern, event_type))
    }

    /// Whether it wants this event: by its type in the log, or by one of its
    /// [`aliases`].
    pub fn wants_event(&self, event_type: &str, payload: &serde_json::Value) -> bool {
        self.wants(event_type) || aliases(event_type, payload).iter().any(|a| self.wants(a))
    }
}

/// The names operators subscribe to for some events besides their type in the log:
/// `hold.expired` (`credits.hold_expired`), `refund.decided` (`refund.approved`,
/// `refund.rejected`), `post.failed` (a `slot.post_attempted` whose outcome is
/// `failed`).
pub fn aliases(event_type: &str, payload: &serde_json::Value) -> Vec<&'static str> {
    match event_type {
        "credits.hold_expired" => vec!["hold.expired"],
        "refund.approved" | "refund.rejected" => vec!["refund.decided"],
        "slot.post_attempted" if payload["outcome"] == "failed" => vec!["post.failed"],
        _ => vec![],
    }
}

/// Whether `event_type` matches `pattern` (`*`, `family.*`, or exact).
pub fn matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// One delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// The endpoint.
    pub endpoint_id: String,
    /// The event's position in the log.
    pub position: i64,
    /// The event's id (the `webhook-id`).
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// The receiver's status (0: no answer).
    pub status_code: i64,
    /// What went wrong (empty: delivered).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// How long the attempt took.
    pub latency_ms: i64,
    /// When (RFC 3339).
    pub attempted_at: String,
    /// Sent by a replay.
    pub replay: bool,
}

const COLUMNS: &str = "endpoint_id, url, event_types, enabled, disabled_reason, disabled_at, \
    created_at, cursor, attempts, failing_since, next_attempt_at, replay_from, replay_to, \
    replay_cursor";

fn endpoint(row: &sqlx::any::AnyRow) -> Endpoint {
    let replay_cursor: i64 = row.get(13);
    Endpoint {
        endpoint_id: row.get(0),
        url: row.get(1),
        event_types: row
            .get::<String, _>(2)
            .split(',')
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        enabled: row.get::<i64, _>(3) != 0,
        disabled_reason: row.get(4),
        disabled_at: row.get(5),
        created_at: row.get(6),
        cursor: row.get(7),
        attempts: row.get(8),
        failing_since: row.get(9),
        next_attempt_at: row.get(10),
        replay: (replay_cursor > 0).then(|| (row.get(11), row.get(12), replay_cursor)),
    }
}

/// The longest list of event types an endpoint may want.
pub const EVENT_TYPES_MAX: usize = 50;

fn check_event_types(event_types: &[String]) -> Result<(), WebhookError> {
    if event_types.is_empty() || event_types.len() > EVENT_TYPES_MAX {
        return Err(WebhookError::Invalid(format!(
            "name 1 to {EVENT_TYPES_MAX} event types (payment.succeeded, credits.*, balance.low, *)"
        )));
    }
    for pattern in event_types {
        let body = pattern.strip_suffix('*').unwrap_or(pattern);
        let well_formed = !pattern.is_empty()
            && pattern.len() <= 64
            && (body.is_empty() || body.ends_with('.') || !pattern.ends_with('*'))
            && body
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
        if !well_formed {
            return Err(WebhookError::Invalid(format!(
                "{pattern:?} is not an event type: write payment.succeeded, credits.* or *"
            )));
        }
    }
    Ok(())
}

/// Adds an endpoint that gets the events appended from now on; answers it and its
/// secret (shown this once).
pub async fn add(
    pool: &AnyPool,
    store: &dyn tally_store::EventStore,
    url: &str,
    event_types: &[String],
    settings: &Settings,
) -> Result<(Endpoint, String), WebhookError> {
    check_event_types(event_types)?;
    if url.len() > 2048 {
        return Err(WebhookError::Invalid(
            "a webhook URL is at most 2048 characters".into(),
        ));
    }
    crate::guard::check(url, settings.allow_private).await?;
    let id = format!("we_{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
    let secret = crate::sign::new_secret();
    let cursor = i64::try_from(store.last_position().await?).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO webhook_endpoints (endpoint_id, url, event_types, secret, enabled, \
         created_at, cursor) VALUES ($1, $2, $3, $4, 1, $5, $6)",
    )
    .bind(&id)
    .bind(url)
    .bind(event_types.join(","))
    .bind(&secret)
    .bind(now_micros())
    .bind(cursor)
    .execute(pool)
    .await?;
    Ok((get(pool, &id).await?, secret))
}

/// Every endpoint, oldest first.
pub async fn list(pool: &AnyPool) -> Result<Vec<Endpoint>, WebhookError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints ORDER BY created_at, endpoint_id"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(endpoint).collect())
}

/// One endpoint.
pub async fn get(pool: &AnyPool, id: &str) -> Result<Endpoint, WebhookError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE endpoint_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref()
        .map(endpoint)
        .ok_or_else(|| WebhookError::NotFound(id.to_string()))
}

/// Disables an endpoint: nothing more is sent to it.
pub async fn disable(pool: &AnyPool, id: &str, reason: &str) -> Result<Endpoint, WebhookError> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $1, disabled_at = $2 \
         WHERE endpoint_id = $3 AND enabled = 1",
    )
    .bind(reason)
    .bind(now_micros())
    .bind(id)
    .execute(pool)
    .await?;
    let endpoint = get(pool, id).await?;
    if done.rows_affected() > 0 {
        tracing::warn!(endpoint = id, reason, "webhook endpoint disabled");
    }
    Ok(endpoint)
}

/// A new secret for an endpoint, answered this once; deliveries from now on are
/// signed with it.
pub async fn rotate_secret(pool: &AnyPool, id: &str) -> Result<String, WebhookError> {
    get(pool, id).await?;
    let secret = crate::sign::new_secret();
    sqlx::query("UPDATE webhook_endpoints SET secret = $1 WHERE endpoint_id = $2")
        .bind(&secret)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(secret)
}

/// Asks for the events at positions `from..=to` that the endpoint wants to be sent
/// again, in order, before what is new (a replay asked while another runs replaces it).
pub async fn replay(
    pool: &AnyPool,
    store: &dyn tally_store::EventStore,
    id: &str,
    from: i64,
    to: i64,
) -> Result<Endpoint, WebhookError> {
    let last = i64::try_from(store.last_position().await?).unwrap_or(i64::MAX);
    let from = from.max(1);
    if to < from {
        return Err(WebhookError::Range(format!(
            "replay from_position {from} is after to_position {to}"
        )));
    }
    if to > last {
        return Err(WebhookError::BeyondLog(format!(
            "replay to_position {to} is beyond the log's last position {last}"
        )));
    }
    get(pool, id).await?;
    sqlx::query(
        "UPDATE webhook_endpoints SET replay_from = $1, replay_to = $2, replay_cursor = $3 \
         WHERE endpoint_id = $4",
    )
    .bind(from)
    .bind(to)
    .bind(from - 1)
    .bind(id)
    .execute(pool)
    .await?;
    get(pool, id).await
}

/// An endpoint's delivery attempts, newest first (only failed ones if asked).
pub async fn deliveries(
    pool: &AnyPool,
    id: &str,
    failed_only: bool,
    limit: i64,
) -> Result<Vec<Delivery>, WebhookError> {
    get(pool, id).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT endpoint_id, position, event_id, event_type, attempt, status_code, error, \
         latency_ms, attempted_at, replay FROM webhook_deliveries WHERE endpoint_id = $1 {} \
         ORDER BY delivery_id DESC LIMIT $2",
        if failed_only { "AND error <> ''" } else { "" }
    )))
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Delivery {
            endpoint_id: r.get(0),
            position: r.get(1),
            event_id: r.get(2),
            event_type: r.get(3),
            attempt: r.get(4),
            status_code: r.get(5),
            error: r.get(6),
            latency_ms: r.get(7),
            attempted_at: chrono::DateTime::from_timestamp_micros(r.get(8))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            replay: r.get::<i64, _>(9) != 0,
        })
        .collect())
}

/// Endpoints disabled at or after `since` (microseconds), for telling admins.
pub async fn disabled_since(pool: &AnyPool, since: i64) -> Result<Vec<Endpoint>, WebhookError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE enabled = 0 AND disabled_at >= $1 \
         ORDER BY disabled_at"
    )))
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(endpoint).collect())
}

// What the deliverer does to the tables.

/// The enabled endpoints due for an attempt at `now`.
pub(crate) async fn due(pool: &AnyPool, now: i64) -> Result<Vec<Endpoint>, WebhookError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE enabled = 1 AND next_attempt_at <= $1 \
         ORDER BY endpoint_id"
    )))
    .bind(now)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(endpoint).collect())
}

/// Takes (or renews) the endpoint's lease for `owner` until `until`; false when
/// another process holds it.
pub(crate) async fn lease(
    pool: &AnyPool,
    id: &str,
    owner: &str,
    now: i64,
    until: i64,
) -> Result<bool, WebhookError> {
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET lease_owner = $1, lease_until = $2 WHERE endpoint_id = $3 \
         AND (lease_owner = $1 OR lease_owner = '' OR lease_until < $4)",
    )
    .bind(owner)
    .bind(until)
    .bind(id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Lets the lease go.
pub(crate) async fn release(pool: &AnyPool, id: &str, owner: &str) -> Result<(), WebhookError> {
    sqlx::query(
        "UPDATE webhook_endpoints SET lease_owner = '', lease_until = 0 \
         WHERE endpoint_id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// The secret deliveries are signed with now.
pub(crate) async fn secret(pool: &AnyPool, id: &str) -> Result<String, WebhookError> {
    Ok(
        sqlx::query_scalar("SELECT secret FROM webhook_endpoints WHERE endpoint_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

/// Records delivered attempts and moves the cursor (or the replay's) from `from` to
/// `to`, in one transaction, if this process holds the lease and no one moved it.
pub(crate) async fn delivered(
    pool: &AnyPool,
    id: &str,
    owner: &str,
    replay: bool,
    from: i64,
    to: i64,
    deliveries: &[(Delivery, i64)],
) -> Result<bool, WebhookError> {
    let mut tx = pool.begin().await?;
    let column = if replay { "replay_cursor" } else { "cursor" };
    let moved = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE webhook_endpoints SET {column} = $1, attempts = 0, failing_since = 0, \
         next_attempt_at = 0 WHERE endpoint_id = $2 AND lease_owner = $3 AND {column} = $4"
    )))
    .bind(to)
    .bind(id)
    .bind(owner)
    .bind(from)
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    for (delivery, at) in deliveries {
        insert_delivery(&mut tx, delivery, *at).await?;
    }
    tx.commit().await?;
    Ok(true)
}

async fn insert_delivery(
    conn: &mut sqlx::AnyConnection,
    delivery: &Delivery,
    at: i64,
) -> Result<(), WebhookError> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (endpoint_id, position, event_id, event_type, attempt, \
         status_code, error, latency_ms, attempted_at, replay) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&delivery.endpoint_id)
    .bind(delivery.position)
    .bind(&delivery.event_id)
    .bind(&delivery.event_type)
    .bind(delivery.attempt)
    .bind(delivery.status_code)
    .bind(&delivery.error)
    .bind(delivery.latency_ms)
    .bind(at)
    .bind(i64::from(delivery.replay))
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends a replay.
pub(crate) async fn finish_replay(
    pool: &AnyPool,
    id: &str,
    owner: &str,
) -> Result<(), WebhookError> {
    sqlx::query(
        "UPDATE webhook_endpoints SET replay_from = 0, replay_to = 0, replay_cursor = 0 \
         WHERE endpoint_id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failed attempt: the next one at `next` (or, failing since longer than
/// the schedule, the endpoint disabled with `give_up`).
pub(crate) async fn failed(
    pool: &AnyPool,
    id: &str,
    owner: &str,
    failing_since: i64,
    next: i64,
) -> Result<(), WebhookError> {
    sqlx::query(
        "UPDATE webhook_endpoints SET attempts = attempts + 1, failing_since = $1, \
         next_attempt_at = $2 WHERE endpoint_id = $3 AND lease_owner = $4",
    )
    .bind(failing_since)
    .bind(next)
    .bind(id)
    .bind(owner)
    .execute(pool)
    .await?;
    Ok(())
}

/// Appends an attempt to the delivery log.
pub(crate) async fn record(
    pool: &AnyPool,
    delivery: &Delivery,
    at: i64,
) -> Result<(), WebhookError> {
    let mut conn = pool.acquire().await?;
    insert_delivery(&mut conn, delivery, at).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_aliases_match_what_operators_subscribe_to() {
        assert!(matches("*", "credits.granted"));
        assert!(matches("credits.*", "credits.granted"));
        assert!(!matches("credits.*", "payment.succeeded"));
        assert!(matches("balance.low", "balance.low"));
        let failed = serde_json::json!({"outcome": "failed"});
        let posted = serde_json::json!({"outcome": "succeeded"});
        assert_eq!(aliases("slot.post_attempted", &failed), ["post.failed"]);
        assert!(aliases("slot.post_attempted", &posted).is_empty());
        assert_eq!(aliases("refund.rejected", &posted), ["refund.decided"]);
        assert_eq!(aliases("credits.hold_expired", &posted), ["hold.expired"]);
    }
}
