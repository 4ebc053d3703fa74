//! Rate limits: a token bucket per API key (requests with `Authorization`) and per
//! client address (requests without: health, metrics, the OpenAPI document, webhooks,
//! and anyone probing without a key). Past the bucket the answer is 429
//! `rate_limited` with `Retry-After`, before any handler runs, so nothing is appended.
//!
//! Buckets live in memory, per process: limits are a guard against a runaway client
//! or a flood, not a quota to bill by.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// One limit: a burst, refilled at a steady rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    /// Requests allowed at once.
    pub burst: u32,
    /// Requests per second refilled.
    pub per_second: f64,
}

impl Limit {
    /// `per_second` requests a second with a burst of twice that (0: no limit).
    pub fn per_second(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            burst: per_second.saturating_mul(2),
            per_second: f64::from(per_second),
        })
    }
}

/// The limits of a server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Per API key (`None`: unlimited).
    pub per_key: Option<Limit>,
    /// Per client address, for requests without a key (`None`: unlimited).
    pub per_ip: Option<Limit>,
}

/// Requests per second per key unless configured (`TALLY_RATE_LIMIT_PER_KEY`).
pub const DEFAULT_PER_KEY: u32 = 5_000;
/// Requests per second per address without a key unless configured
/// (`TALLY_RATE_LIMIT_PER_IP`).
pub const DEFAULT_PER_IP: u32 = 100;

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_key: Limit::per_second(DEFAULT_PER_KEY),
            per_ip: Limit::per_second(DEFAULT_PER_IP),
        }
    }
}

/// Most buckets kept; past it idle (full) buckets are dropped.
const BUCKETS_MAX: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets.
pub struct RateLimiter {
    limits: Limits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter with these limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `bucket`, or says how many seconds until one is there.
    fn take(&self, bucket: String, limit: Limit) -> Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= BUCKETS_MAX && !buckets.contains_key(&bucket) {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * limit.per_second
                    < f64::from(limit.burst)
            });
            if buckets.len() >= BUCKETS_MAX {
                buckets.clear();
            }
        }
        let entry = buckets.entry(bucket).or_insert(Bucket {
            tokens: f64::from(limit.burst),
            at: now,
        });
        let refilled = now.duration_since(entry.at).as_secs_f64() * limit.per_second;
        entry.tokens = (entry.tokens + refilled).min(f64::from(limit.burst));
        entry.at = now;
        if entry.tokens >= 1.0 {
            entry.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - entry.tokens) / limit.per_second;
        Err(wait.ceil().max(1.0) as u64)
    }
}

/// Middleware: 429 `rate_limited` past a key's or an address's bucket. A known key
/// (`TALLY_API_KEYS`, or confirmed by the database before) has its own bucket; every
/// other request — no key, an unknown, malformed or made-up key — is counted against
/// its address's, before anything looks the key up: making up keys buys no requests.
pub async fn limit(State(state): State<crate::AppState>, request: Request, next: Next) -> Response {
    let limiter = &state.limiter;
    let key = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| state.keys.is_known(value));
    let checked = match (key, limiter.limits.per_key, limiter.limits.per_ip) {
        (Some(hash), Some(limit), _) => {
            let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
            limiter.take(format!("key:{hex}"), limit)
        }
        (Some(_), None, _) => Ok(()),
        (None, _, Some(limit)) => {
            let address = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
            limiter.take(format!("ip:{address}"), limit)
        }
        _ => Ok(()),
    };
    match checked {
        Ok(()) => next.run(request).await,
        Err(retry_after) => {
            metrics::counter!("tally_http_rate_limited_total").increment(1);
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry after {retry_after} s"),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
    }
}
