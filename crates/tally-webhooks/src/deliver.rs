//! The deliverer: every endpoint's next wanted event, POSTed in log order, its cursor
//! advanced after a 2xx. Runs in each process with the reactor role; a lease per
//! endpoint (renewed while it works, let go after) makes one process deliver to an
//! endpoint at a time, and the endpoints are served concurrently, so one that is down
//! (waiting out its backoff) holds back none of the others. It wakes on this
//! process's appends and polls for other processes'.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use sqlx::AnyPool;
use tally_store::{EventStore, RecordedEvent};
use tokio::sync::watch;

use crate::endpoints::{self, Delivery, Endpoint};
use crate::{Settings, WebhookError, now_micros};

/// How long a lease lasts without renewal.
const LEASE: Duration = Duration::from_secs(30);
/// How often the deliverer looks without a wake-up.
const POLL: Duration = Duration::from_millis(500);
/// Events read from the log at a time.
const PAGE: usize = 200;
/// Deliveries to one endpoint in one round, before others get a turn again.
const ROUND_MAX: usize = 1_000;
/// Deliveries recorded (and the cursor moved) together.
const FLUSH: usize = 50;

/// Delivers the log's events to the endpoints.
pub struct Deliverer {
    store: Arc<dyn EventStore>,
    pool: AnyPool,
    client: reqwest::Client,
    settings: Settings,
    owner: String,
}

impl Deliverer {
    /// A deliverer over the log and the database holding the endpoints.
    pub fn new(
        store: Arc<dyn EventStore>,
        pool: AnyPool,
        settings: Settings,
    ) -> Result<Self, WebhookError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("Tally-Webhooks/1")
            .build()
            .map_err(|e| WebhookError::Invalid(format!("the HTTP client: {e}")))?;
        Ok(Self {
            store,
            pool,
            client,
            settings,
            owner: format!("deliverer-{}", uuid::Uuid::new_v4().simple()),
        })
    }

    /// Delivers until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> Result<(), WebhookError> {
        let mut wakeups = self.store.subscribe();
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if let Err(error) = self.round().await {
                tracing::warn!(%error, "a webhook delivery round failed; trying again");
            }
            tokio::select! {
                _ = wakeups.wait() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One round: every endpoint due, served concurrently. Answers how many events
    /// were delivered.
    pub async fn round(&self) -> Result<usize, WebhookError> {
        let due = endpoints::due(&self.pool, now_micros()).await?;
        let delivered = futures::stream::iter(due)
            .map(|endpoint| async move {
                let id = endpoint.endpoint_id.clone();
                match self.serve(endpoint).await {
                    Ok(n) => n,
                    Err(error) => {
                        tracing::warn!(endpoint = %id, %error, "webhook endpoint round failed");
                        0
                    }
                }
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<usize>>()
            .await;
        Ok(delivered.into_iter().sum())
    }

    /// Delivers an endpoint's due events while it holds the lease.
    async fn serve(&self, mut endpoint: Endpoint) -> Result<usize, WebhookError> {
        let id = endpoint.endpoint_id.clone();
        let lease_until = || now_micros() + LEASE.as_micros() as i64;
        if !endpoints::lease(&self.pool, &id, &self.owner, now_micros(), lease_until()).await? {
            return Ok(0);
        }
        // Read again under the lease: another process may have moved it on.
        endpoint = endpoints::get(&self.pool, &id).await?;
        let outcome = self.deliver_due(&mut endpoint).await;
        endpoints::release(&self.pool, &id, &self.owner).await?;
        outcome
    }

    async fn deliver_due(&self, endpoint: &mut Endpoint) -> Result<usize, WebhookError> {
        let id = endpoint.endpoint_id.clone();
        let secret = endpoints::secret(&self.pool, &id).await?;
        // Where it goes, checked once per round (a name re-pointed later is caught at
        // the next round), not once per event on the hot path.
        let target = crate::guard::check(&endpoint.url, self.settings.allow_private)
            .await
            .map_err(|refused| refused.to_string());
        let mut delivered = 0;
        let mut renewed = Instant::now();
        // Delivered but not yet on record: written with the cursor's move in one
        // transaction every FLUSH deliveries (a crash before it sends them again).
        let mut pending: Vec<(Delivery, i64)> = Vec::new();
        let mut flushed = cursor_of(endpoint);
        let mut in_replay = endpoint.replay.is_some();
        while delivered < ROUND_MAX && endpoint.enabled {
            if renewed.elapsed() > LEASE / 3 {
                let until = now_micros() + LEASE.as_micros() as i64;
                if !endpoints::lease(&self.pool, &id, &self.owner, now_micros(), until).await? {
                    return Ok(delivered);
                }
                renewed = Instant::now();
            }
            let replay = endpoint.replay;
            if replay.is_some() != in_replay {
                // The replay ended: what was pending is on record; the main cursor next.
                in_replay = replay.is_some();
                flushed = cursor_of(endpoint);
            }
            let (after, limit) = match replay {
                Some((_, to, cursor)) => (cursor, Some(to)),
                None => (endpoint.cursor, None),
            };
            let page = self
                .store
                .read_all(u64::try_from(after).unwrap_or(0), PAGE)
                .await?;
            let in_range: Vec<&RecordedEvent> = page
                .iter()
                .take_while(|e| limit.is_none_or(|to| e.position as i64 <= to))
                .collect();
            let next = in_range
                .iter()
                .find(|e| endpoint.wants_event(&e.event_type, &e.payload));
            let Some(event) = next else {
                // Nothing wanted up to where this page ends: move past it.
                let end = in_range.last().map(|e| e.position as i64);
                let replay_done =
                    replay.is_some() && (in_range.len() < page.len() || page.len() < PAGE);
                if let Some(to) = end {
                    set_cursor(endpoint, to);
                }
                if !self
                    .flush(endpoint, &mut pending, &mut flushed, replay.is_some())
                    .await?
                {
                    return Ok(delivered);
                }
                if replay_done || (replay.is_some() && end.is_none()) {
                    endpoints::finish_replay(&self.pool, &id, &self.owner).await?;
                    endpoint.replay = None;
                    continue;
                }
                if end.is_none() {
                    return Ok(delivered);
                }
                continue;
            };
            let (attempt, at) = self
                .send(endpoint, &target, event, replay.is_some(), &secret)
                .await;
            match attempt.error.is_empty() {
                true => {
                    pending.push((attempt, at));
                    set_cursor(endpoint, event.position as i64);
                    endpoint.attempts = 0;
                    endpoint.failing_since = 0;
                    delivered += 1;
                    if pending.len() >= FLUSH
                        && !self
                            .flush(endpoint, &mut pending, &mut flushed, replay.is_some())
                            .await?
                    {
                        return Ok(delivered);
                    }
                }
                false => {
                    self.flush(endpoint, &mut pending, &mut flushed, replay.is_some())
                        .await?;
                    self.failed(endpoint, &attempt, at).await?;
                    return Ok(delivered);
                }
            }
        }
        let replay = endpoint.replay.is_some();
        self.flush(endpoint, &mut pending, &mut flushed, replay)
            .await?;
        Ok(delivered)
    }

    /// Writes the pending deliveries and moves the cursor from `flushed` to where the
    /// endpoint is; false when the lease was lost (nothing written: another process
    /// delivers from the cursor on record).
    async fn flush(
        &self,
        endpoint: &Endpoint,
        pending: &mut Vec<(Delivery, i64)>,
        flushed: &mut i64,
        replay: bool,
    ) -> Result<bool, WebhookError> {
        let to = cursor_of(endpoint);
        if to == *flushed && pending.is_empty() {
            return Ok(true);
        }
        let moved = endpoints::delivered(
            &self.pool,
            &endpoint.endpoint_id,
            &self.owner,
            replay,
            *flushed,
            to,
            pending,
        )
        .await?;
        pending.clear();
        if moved {
            *flushed = to;
        }
        Ok(moved)
    }

    /// One attempt, as the delivery log records it (an empty error: the receiver took
    /// it with a 2xx), and when it was made.
    async fn send(
        &self,
        endpoint: &Endpoint,
        target: &Result<url::Url, String>,
        event: &RecordedEvent,
        replay: bool,
        secret: &str,
    ) -> (Delivery, i64) {
        let id = &endpoint.endpoint_id;
        let body = body(event);
        let message_id = format!("msg_{}", event.event_id.simple());
        let timestamp = chrono::Utc::now().timestamp();
        let signature = crate::sign::signature(secret, &message_id, timestamp, &body);
        let started = Instant::now();
        let answer = match target {
            Err(refused) => Err(refused.clone()),
            Ok(url) => self
                .client
                .post(url.clone())
                .header("content-type", "application/json")
                .header("webhook-id", &message_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await
                .map_err(|e| e.without_url().to_string()),
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        let (status_code, error) = match &answer {
            Ok(response) if response.status().is_success() => {
                (i64::from(response.status().as_u16()), String::new())
            }
            Ok(response) => (
                i64::from(response.status().as_u16()),
                format!("the receiver answered {}", response.status()),
            ),
            Err(error) => (0, error.clone()),
        };
        let ok = error.is_empty();
        let now = now_micros();
        let delivery = Delivery {
            endpoint_id: id.clone(),
            position: event.position as i64,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.clone(),
            attempt: endpoint.attempts + 1,
            status_code,
            error: error.clone(),
            latency_ms,
            attempted_at: String::new(),
            replay,
        };
        metrics::counter!("tally_webhook_deliveries_total", "outcome" => if ok { "delivered" } else { "failed" })
            .increment(1);
        if ok {
            let lag = (chrono::Utc::now() - event.recorded_at)
                .num_milliseconds()
                .max(0) as f64
                / 1000.0;
            metrics::histogram!("tally_webhook_delivery_lag_seconds").record(lag);
        }
        (delivery, now)
    }

    /// A failed attempt: on record, with the next attempt's time, or the endpoint
    /// disabled when it has failed for the whole schedule.
    async fn failed(
        &self,
        endpoint: &Endpoint,
        delivery: &Delivery,
        now: i64,
    ) -> Result<(), WebhookError> {
        let (id, error) = (&endpoint.endpoint_id, &delivery.error);
        endpoints::record(&self.pool, delivery, now).await?;
        let failing_since = match endpoint.failing_since {
            0 => now,
            since => since,
        };
        if now - failing_since >= self.settings.give_up_after.as_micros() as i64 {
            endpoints::disable(
                &self.pool,
                id,
                &format!(
                    "failed for {} (last: {error}); fix the receiver, then add the endpoint again \
                     and replay what it missed",
                    match self.settings.give_up_after.as_secs() {
                        s if s >= 3600 => format!("{} h", s / 3600),
                        s => format!("{s} s"),
                    }
                ),
            )
            .await?;
            return Ok(());
        }
        let wait = backoff(&self.settings, endpoint.attempts + 1);
        endpoints::failed(
            &self.pool,
            id,
            &self.owner,
            failing_since,
            now + wait.as_micros() as i64,
        )
        .await?;
        tracing::info!(endpoint = %id, position = delivery.position, %error, wait_ms = wait.as_millis() as u64, "webhook not delivered; retrying later");
        Ok(())
    }
}

fn cursor_of(endpoint: &Endpoint) -> i64 {
    match endpoint.replay {
        Some((_, _, cursor)) => cursor,
        None => endpoint.cursor,
    }
}

fn set_cursor(endpoint: &mut Endpoint, to: i64) {
    match &mut endpoint.replay {
        Some((_, _, cursor)) => *cursor = to,
        None => endpoint.cursor = to,
    }
}

/// The wait before attempt `attempt + 1`: the base doubled per failed attempt, capped,
/// with ±20% jitter so receivers coming back are not hit by every sender at once.
pub fn backoff(settings: &Settings, attempt: i64) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let wait = settings
        .retry_base
        .saturating_mul(2_u32.saturating_pow(doublings))
        .min(settings.retry_cap);
    let jitter = f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 255.0 * 0.4 + 0.8;
    wait.mul_f64(jitter)
}

/// The body of an event's webhook: `{type, aliases, timestamp, data: {position,
/// event_id, stream, data}}` — what happened, where it is in the log, and the event's own data
/// (the ledger's facts; no secret is ever in the log).
pub fn body(event: &RecordedEvent) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": event.event_type,
        "aliases": crate::endpoints::aliases(&event.event_type, &event.payload),
        "timestamp": event.occurred_at.to_rfc3339(),
        "data": {
            "position": event.position,
            "event_id": event.event_id,
            "stream": event.stream_id.as_str(),
            "data": event.payload,
        },
    }))
    .unwrap_or_default()
}
