//! Request ids and metrics. Every request gets an id (the caller's `X-Request-Id` if it
//! is a UUID, else a new UUIDv7), echoed in the response and carried into the events
//! it causes as their correlation id. `/metrics` serves Prometheus text: requests and
//! latencies per route and status, commands by aggregate and outcome
//! (`tally_commands_total`), append latency (`tally_append_seconds`), each
//! projection's checkpoint, head and lag, and the reactor's lag.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::AppState;
use crate::error::ApiError;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's Prometheus recorder now (`tally serve` does at start, so
/// what the bot or the reactors record before the first scrape is kept).
pub fn install_recorder() {
    let _ = recorder();
}

/// The process's Prometheus recorder (installed on first use; `None` if another
/// recorder was installed first).
fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let installed = metrics::set_global_recorder(recorder).ok().map(|_| handle);
            describe();
            installed
        })
        .as_ref()
}

/// The HELP text of every metric Tally records (`promtool check metrics` wants one
/// for each; a metric without it is a lint).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "tally_http_requests_total",
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        "tally_http_request_seconds",
        Unit::Seconds,
        "Time to answer an HTTP request, by route template and method"
    );
    describe_counter!(
        "tally_http_rate_limited_total",
        "HTTP requests refused with 429 rate_limited"
    );
    describe_counter!(
        "tally_commands_total",
        "Commands run by the command services, by stream kind and outcome (applied, replayed or the refusal's code)"
    );
    describe_histogram!(
        "tally_append_seconds",
        Unit::Seconds,
        "Time to append one batch of a stream's events to the log, by stream kind"
    );
    describe_gauge!(
        "tally_projection_checkpoint",
        "Position of the last event a read model applied"
    );
    describe_gauge!(
        "tally_projection_head",
        "Position of the last event in the log, as a read model's lag is measured against"
    );
    describe_gauge!(
        "tally_projection_lag_events",
        "Events in the log a read model has not applied yet"
    );
    describe_gauge!(
        "tally_projection_lag_seconds",
        Unit::Seconds,
        "Age of the oldest event a read model has not applied yet"
    );
    describe_gauge!(
        "tally_reactor_lag_events",
        "Events in the log the reactors have not reacted to yet"
    );
    describe_gauge!(
        "tally_reactor_lag_seconds",
        Unit::Seconds,
        "Age of the oldest event the reactors have not reacted to yet"
    );
    describe_counter!(
        "tally_webhooks_refused_total",
        "Provider webhooks refused (another provider's payment, or a report that disagrees with the payment), by provider and code"
    );
    describe_counter!(
        "tally_duplicate_charges_total",
        "Second charges of a provider for a payment already paid, recorded to be given back, by provider"
    );
    describe_counter!(
        "tally_posts_total",
        "Ad posts sent by the poster, by outcome and error class (rate_limited, no_rights, topic_closed, transient …)"
    );
    describe_counter!(
        "tally_poster_destinations_total",
        "Destinations the poster handled in a cycle: posted, failed (after retries) or skipped (posted already, or an outcome unknown)"
    );
    describe_counter!(
        "tally_poster_retry_after_waits_total",
        "Times Telegram asked the poster to wait (429 retry_after), each waited out exactly"
    );
    describe_gauge!(
        "tally_poster_cycle",
        "The posting cycle the poster last went through (cycles numbered from the Unix epoch)"
    );
    describe_gauge!(
        "tally_poster_cycle_progress_ratio",
        "How far through its due destinations the poster's current pass is, 0 to 1"
    );
    describe_gauge!(
        "tally_payments_unmatched",
        "Charges found on one side only by the last reconciliation, by provider and side (provider: money taken, nothing credited; ledger: credited, not listed by the provider)"
    );
    describe_counter!(
        "tally_webhook_deliveries_total",
        "Webhook delivery attempts to the operator's endpoints, by outcome (delivered, failed)"
    );
    describe_histogram!(
        "tally_webhook_delivery_lag_seconds",
        Unit::Seconds,
        "Time from an event's commit to its webhook's delivery"
    );
    describe_gauge!(
        "tally_poster_lag_seconds",
        "How late the poster's last post left after its scheduled time in the cycle (Telegram's pace, waits and retries add to it)"
    );
}

/// Gives the request its id and records its route, status and latency.
pub async fn track(mut request: Request, next: Next) -> Response {
    let _ = recorder();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v).ok())
        .unwrap_or_else(uuid::Uuid::now_v7);
    let value = HeaderValue::from_str(&id.to_string()).unwrap_or(HeaderValue::from_static(""));
    request.headers_mut().insert(REQUEST_ID, value.clone());
    // Labels come from bounded sets: a route template (never the raw path) and a
    // standard method; anything else is `other`.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let started = Instant::now();
    let mut response = next.run(request).await;
    response.headers_mut().insert(REQUEST_ID, value);
    let status = response.status().as_u16().to_string();
    metrics::counter!("tally_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status).increment(1);
    metrics::histogram!("tally_http_request_seconds", "route" => route, "method" => method)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Prometheus metrics: requests, latencies, commands, appends, projections, reactor.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics_text(State(state): State<AppState>) -> Result<String, ApiError> {
    let Some(handle) = recorder() else {
        return Err(ApiError::internal("another metrics recorder is installed"));
    };
    for status in state.projector.status().await? {
        let name = status.name.clone();
        metrics::gauge!("tally_projection_checkpoint", "projection" => name.clone())
            .set(status.checkpoint as f64);
        metrics::gauge!("tally_projection_head", "projection" => name.clone())
            .set(status.head as f64);
        metrics::gauge!("tally_projection_lag_events", "projection" => name.clone())
            .set(status.lag_events as f64);
        metrics::gauge!("tally_projection_lag_seconds", "projection" => name)
            .set(status.lag_seconds);
        if status.name == "reactor" {
            metrics::gauge!("tally_reactor_lag_events").set(status.lag_events as f64);
            metrics::gauge!("tally_reactor_lag_seconds").set(status.lag_seconds);
        }
    }
    Ok(handle.render())
}
