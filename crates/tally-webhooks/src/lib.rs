//! # tally-webhooks: events out
//!
//! The operator's systems learn what happened in the ledger from signed webhooks
//! instead of polling `/v1/events`. Admins register endpoints (a URL, the event types
//! it wants, a secret shown once); every event of the log whose type an endpoint wants
//! is POSTed to it in the [Standard Webhooks](https://www.standardwebhooks.com) format
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! id.timestamp.body>`), so receivers verify with existing libraries.
//!
//! Delivery is at least once and in log order per endpoint: each endpoint keeps its
//! own cursor in the log, in the database ([`endpoints`]), advanced only after the
//! receiver answered 2xx; a crash between sending and advancing sends that event again
//! (its `webhook-id` is the event's id, the same on every attempt, for receivers to
//! deduplicate). A receiver that fails is retried with exponential backoff and jitter
//! over a bounded schedule (3 days by default), then the endpoint is disabled and the
//! admins told; it holds back no other endpoint. A lease on each endpoint makes one
//! process deliver to it at a time ([`deliver`]).
//!
//! Outgoing requests have timeouts, follow no redirects, and go only to public
//! addresses unless the operator allows private ones ([`guard`]): a webhook URL cannot
//! reach the operator's internal network.

pub mod deliver;
pub mod endpoints;
pub mod guard;
pub mod sign;

use std::time::Duration;

pub use deliver::Deliverer;
pub use endpoints::{Delivery, Endpoint};

/// How deliveries are made.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Endpoints may be on loopback or private addresses (`TALLY_WEBHOOKS_ALLOW_PRIVATE`).
    pub allow_private: bool,
    /// The first retry's wait; each next one doubles (with ±20% jitter).
    pub retry_base: Duration,
    /// The longest wait between two attempts.
    pub retry_cap: Duration,
    /// An endpoint failing this long is disabled.
    pub give_up_after: Duration,
    /// One request's whole time.
    pub timeout: Duration,
    /// Endpoints served at once by one process.
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allow_private: false,
            retry_base: Duration::from_secs(5),
            retry_cap: Duration::from_secs(60 * 60),
            give_up_after: Duration::from_secs(3 * 24 * 60 * 60),
            timeout: Duration::from_secs(10),
            concurrency: 32,
        }
    }
}

/// What went wrong with webhooks.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The request is not acceptable (a URL, an event type); nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// The URL is refused: it does not resolve, or resolves to a loopback or private
    /// address (what DNS says, which no request document can state).
    #[error("{0}")]
    UrlRefused(String),
    /// A replay range whose end is beyond the log's last position.
    #[error("{0}")]
    BeyondLog(String),
    /// A replay range whose start is after its end.
    #[error("{0}")]
    Range(String),
    /// No such endpoint.
    #[error("there is no webhook endpoint {0}")]
    NotFound(String),
    /// The database.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The log.
    #[error(transparent)]
    Store(#[from] tally_store::StoreError),
}

/// Now, in microseconds since the Unix epoch.
pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
