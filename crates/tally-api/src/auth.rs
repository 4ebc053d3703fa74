//! API keys and roles. A key is shown once when created; the database keeps only its
//! SHA-256. Keys come from the `api_keys` table (`tally keys create|list|revoke`) and
//! from `TALLY_API_KEYS` (`role:name:key,…`) for bootstrap. Keys from the
//! environment are compared in constant time; database keys are found by the hash of
//! the presented key (what leaks by timing is a prefix of that hash, not of a key).

use std::fmt;
use std::str::FromStr;

use axum::http::HeaderMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A bot backend or worker: accounts, holds, payments, slots, refund requests.
    Service,
    /// An operator: grants, adjustments, blocks, corrections, refund decisions; and
    /// everything an auditor may.
    Admin,
    /// Reads the audit routes.
    Auditor,
}

impl Role {
    /// Its name in keys and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    /// Whether a key of this role may act as `needed`.
    pub fn may(self, needed: Role) -> bool {
        self == needed || (self == Role::Admin && needed == Role::Auditor)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "service" => Ok(Role::Service),
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!("role {other:?} is none of service, admin, auditor")),
        }
    }
}

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The key's name (the actor of its events).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The request's id: the correlation id of the events it causes.
    pub request_id: Option<uuid::Uuid>,
}

/// The SHA-256 of a key, hex.
pub fn key_hash(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new random key (`tally_` and 64 hex digits: 244 random bits).
pub fn generate_key() -> String {
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    format!("tally_{}{}", a.simple(), b.simple())
}

/// Names: 1 to 64 of letters, digits, `-`, `_`, `.`.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    match ok {
        true => Ok(()),
        false => Err(format!(
            "key name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        )),
    }
}

struct EnvKey {
    name: String,
    role: Role,
    hash: [u8; 32],
}

/// The keys the API accepts.
pub struct Keys {
    pool: AnyPool,
    env: Vec<EnvKey>,
    /// Hashes of database keys seen valid (bucket choice only; see [`Keys::is_known`]).
    confirmed: std::sync::Mutex<std::collections::HashSet<[u8; 32]>>,
}

impl Keys {
    /// Keys in the database behind `pool`, plus `TALLY_API_KEYS`-style `env` entries.
    pub fn new(pool: AnyPool, env: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for entry in env.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = entry.splitn(3, ':');
            let (Some(role), Some(name), Some(key)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "TALLY_API_KEYS entry {:?} is not role:name:key",
                    entry.split(':').take(2).collect::<Vec<_>>().join(":")
                ));
            };
            check_name(name)?;
            if key.len() < 16 {
                return Err(format!(
                    "TALLY_API_KEYS: the key of {name} is shorter than 16 characters"
                ));
            }
            keys.push(EnvKey {
                name: name.to_string(),
                role: role.parse()?,
                hash: Sha256::digest(key.as_bytes()).into(),
            });
        }
        Ok(Self {
            pool,
            env: keys,
            confirmed: Default::default(),
        })
    }

    /// Whether an `Authorization` header carries a key known to be valid: one from
    /// `TALLY_API_KEYS`, or one the database confirmed before. Only picks a rate-limit
    /// bucket (an unknown key is limited with its address's); every request is still
    /// authenticated against the database, so a key revoked since is refused.
    pub fn is_known(&self, value: &axum::http::HeaderValue) -> Option<[u8; 32]> {
        let hash: [u8; 32] = Sha256::digest(bearer_key(value)?.as_bytes()).into();
        let known = self
            .env
            .iter()
            .any(|entry| bool::from(entry.hash.ct_eq(&hash)))
            || self
                .confirmed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&hash);
        known.then_some(hash)
    }

    fn remember(&self, hash: [u8; 32]) {
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        if confirmed.len() >= CONFIRMED_KEYS_MAX {
            confirmed.clear();
        }
        confirmed.insert(hash);
    }

    /// The caller of a request, or 401.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let request_id = headers
            .get(crate::observe::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| uuid::Uuid::parse_str(v).ok());
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "no Authorization header; send `Authorization: Bearer <key>`",
            ));
        };
        let key = bearer_key(value).ok_or_else(|| {
            ApiError::unauthorized("the Authorization header is not `Bearer <key>`")
        })?;
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for entry in &self.env {
            if bool::from(entry.hash.ct_eq(&hash)) {
                found = Some(Caller {
                    name: entry.name.clone(),
                    role: entry.role,
                    request_id,
                });
            }
        }
        if let Some(caller) = found {
            return Ok(caller);
        }
        let row = sqlx::query(
            "SELECT name, role FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key_hash(key))
        .fetch_optional(&self.pool)
        .await?;
        if row.is_some() {
            self.remember(hash);
        }
        match row {
            Some(row) => Ok(Caller {
                name: row.get(0),
                role: row
                    .get::<String, _>(1)
                    .parse()
                    .map_err(ApiError::internal)?,
                request_id,
            }),
            None => Err(ApiError::unauthorized("unknown or revoked key")),
        }
    }

    /// The caller, if its role may act as `needed`; else 401 or 403.
    pub async fn require(&self, headers: &HeaderMap, needed: Role) -> Result<Caller, ApiError> {
        self.require_any(headers, &[needed]).await
    }

    /// The caller, if its role may act as one of `roles`; else 401 or 403.
    pub async fn require_any(
        &self,
        headers: &HeaderMap,
        roles: &[Role],
    ) -> Result<Caller, ApiError> {
        let caller = self.authenticate(headers).await?;
        match roles.iter().any(|needed| caller.role.may(*needed)) {
            true => Ok(caller),
            false => {
                let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
                Err(ApiError::forbidden(format!(
                    "this route needs a key with role {}; key {} has role {}",
                    names.join(" or "),
                    caller.name,
                    caller.role
                )))
            }
        }
    }
}

/// Most database keys remembered as valid (for picking rate-limit buckets).
const CONFIRMED_KEYS_MAX: usize = 10_000;

/// The key of an `Authorization: Bearer <key>` header, spaces around it ignored (so
/// spacing variants of one key are one key).
fn bearer_key(value: &axum::http::HeaderValue) -> Option<&str> {
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim_start().strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// A key as `tally keys list` shows it (never the key).
#[derive(Clone, Debug, Serialize)]
pub struct KeyInfo {
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
    /// Created, microseconds since the epoch.
    pub created_at: i64,
    /// Revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// Creates a key; returns it (the only time it is shown).
pub async fn create_key(pool: &AnyPool, role: Role, name: &str) -> Result<String, String> {
    check_name(name)?;
    let key = generate_key();
    let inserted = sqlx::query(
        "INSERT INTO api_keys (name, role, key_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name.to_string())
    .bind(role.as_str())
    .bind(key_hash(&key))
    .bind(chrono::Utc::now().timestamp_micros())
    .execute(pool)
    .await
    .map_err(|e| e.to_string())?;
    match inserted.rows_affected() {
        1 => Ok(key),
        _ => Err(format!(
            "a key named {name} exists; revoke it or choose another name"
        )),
    }
}

/// Every key, oldest first.
pub async fn list_keys(pool: &AnyPool) -> Result<Vec<KeyInfo>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT name, role, created_at, revoked_at FROM api_keys ORDER BY created_at, name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| KeyInfo {
            name: row.get(0),
            role: row.get(1),
            created_at: row.get(2),
            revoked_at: row.get(3),
        })
        .collect())
}

/// Revokes a key; false if there is no such live key.
pub async fn revoke_key(pool: &AnyPool, name: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(chrono::Utc::now().timestamp_micros())
            .bind(name.to_string())
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// The caller of a route, as an extractor: `Service(caller): Service` in a handler's
/// arguments answers 401 (no or unknown key) or 403 (a role that may not) before the
/// handler runs. One per role a route needs.
macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, [$($role:ident),+]) => {
        $(#[$doc])*
        pub struct $name(pub Caller);

        impl axum::extract::FromRequestParts<crate::AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &crate::AppState,
            ) -> Result<Self, Self::Rejection> {
                state
                    .keys
                    .require_any(&parts.headers, &[$(Role::$role),+])
                    .await
                    .map($name)
            }
        }
    };
}

role_extractor!(
    /// A caller with a service key (the bot backend).
    Service,
    [Service]
);
role_extractor!(
    /// A caller with an admin key.
    Admin,
    [Admin]
);
role_extractor!(
    /// A caller with an auditor key.
    Auditor,
    [Auditor]
);
role_extractor!(
    /// A caller with a service or an admin key.
    ServiceOrAdmin,
    [Service, Admin]
);
