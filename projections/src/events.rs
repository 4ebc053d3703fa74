//! Reading recorded events as domain events: which stream kind an event belongs to
//! (by its stream id's prefix) and its decoded payload. Read models skip the streams
//! they do not follow before decoding anything.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use sqlx::AnyConnection;
use tally_domain::account::AccountEvent;
use tally_domain::codec;
use tally_store::RecordedEvent;

use crate::ProjectionError;
use crate::sql::{Value, insert_rows};

/// The key of a stream of kind `prefix` (`payment` → the payment id); `None` for
/// streams of other kinds.
pub(crate) fn stream_key<'a>(event: &'a RecordedEvent, prefix: &str) -> Option<&'a str> {
    event
        .stream_id
        .as_str()
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('-'))
}

/// The key and decoded event of a stream of kind `prefix`; `None` for other streams.
pub fn stream_event<'a, E: DeserializeOwned>(
    recorded: &'a RecordedEvent,
    prefix: &str,
) -> Result<Option<(&'a str, E)>, ProjectionError> {
    let Some(key) = stream_key(recorded, prefix) else {
        return Ok(None);
    };
    let event = codec::decode_ref(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.payload,
    )?;
    Ok(Some((key, event)))
}

/// The user an account stream belongs to (`account-<user id>`).
pub(crate) fn account_user(event: &RecordedEvent) -> Option<i64> {
    stream_key(event, "account").and_then(|id| id.parse().ok())
}

/// The user and account event of a recorded event; `None` for other streams.
pub(crate) fn account_event(
    recorded: &RecordedEvent,
) -> Result<Option<(i64, AccountEvent)>, ProjectionError> {
    let Some(user) = account_user(recorded) else {
        return Ok(None);
    };
    Ok(stream_event::<AccountEvent>(recorded, "account")?.map(|(_, event)| (user, event)))
}

/// An amount as integer cents, or an error naming the event.
pub(crate) fn amount_cents(
    position: u64,
    amount: rust_decimal::Decimal,
) -> Result<i64, ProjectionError> {
    crate::sql::cents(amount).ok_or_else(|| ProjectionError::Event {
        position,
        detail: format!("amount {amount} is not a whole number of cents"),
    })
}

/// A batch of events as read models see it: the recorded events in log order, with
/// every account event decoded once for all the projections that read it.
///
/// Plain inserts go through [`Batch::insert`]: into the caller's transaction, or —
/// while tables are rebuilt aside on Postgres — collected per table and written with
/// `COPY` once the batch's transaction has committed (several times faster than
/// inserts; nothing reads those tables before the swap, so they need not share it).
pub struct Batch {
    events: Vec<RecordedEvent>,
    accounts: Vec<Option<(i64, AccountEvent)>>,
    bulk: Option<std::sync::Mutex<HashMap<String, BulkRows>>>,
}

/// Rows collected for one table: its columns and the rows.
pub(crate) type BulkRows = (Vec<String>, Vec<Vec<Value>>);

impl Batch {
    /// Decodes the account events of `events` (in log order).
    pub fn new(events: Vec<RecordedEvent>) -> Result<Self, ProjectionError> {
        let accounts = events
            .iter()
            .map(account_event)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            events,
            accounts,
            bulk: None,
        })
    }

    /// A batch whose plain inserts are collected for `COPY` (see the type's notes).
    pub(crate) fn collecting(events: Vec<RecordedEvent>) -> Result<Self, ProjectionError> {
        Ok(Self {
            bulk: Some(Default::default()),
            ..Self::new(events)?
        })
    }

    /// Inserts `rows` into `table` (no conflict clause), now or with the batch's
    /// `COPY`.
    pub async fn insert(
        &self,
        conn: &mut AnyConnection,
        table: &str,
        columns: &[&str],
        rows: Vec<Vec<Value>>,
    ) -> Result<(), ProjectionError> {
        match &self.bulk {
            None => insert_rows(conn, table, columns, &rows, "").await,
            Some(bulk) => {
                let mut bulk = bulk.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let entry = bulk.entry(table.to_string()).or_insert_with(|| {
                    (columns.iter().map(|c| c.to_string()).collect(), Vec::new())
                });
                entry.1.extend(rows);
                Ok(())
            }
        }
    }

    /// The rows collected for `table`, if any.
    pub(crate) fn take_bulk(&self, table: &str) -> Option<BulkRows> {
        let bulk = self.bulk.as_ref()?;
        let mut bulk = bulk.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        bulk.remove(table)
    }

    /// The recorded events.
    pub fn events(&self) -> &[RecordedEvent] {
        &self.events
    }

    /// The account events, with their user, in log order.
    pub fn account_events(&self) -> impl Iterator<Item = (&RecordedEvent, i64, &AccountEvent)> {
        self.events
            .iter()
            .zip(&self.accounts)
            .filter_map(|(recorded, decoded)| {
                decoded
                    .as_ref()
                    .map(|(user, event)| (recorded, *user, event))
            })
    }

    /// The user and account event at index `i`, if it is one.
    pub fn account(&self, i: usize) -> Option<(i64, &AccountEvent)> {
        self.accounts
            .get(i)
            .and_then(|decoded| decoded.as_ref().map(|(user, event)| (*user, event)))
    }

    /// The users whose accounts this batch touches (unsorted, may repeat).
    pub fn account_users(&self) -> impl Iterator<Item = i64> + '_ {
        self.accounts.iter().flatten().map(|(user, _)| *user)
    }
}
