//! What an auditor runs: `verify` (every hash chain, the trial balance, and every read
//! model against a fresh replay of the log) and `replay_account` (one account
//! recomputed from its raw events next to what the read model says).
//!
//! A read model is compared as of its own checkpoint: the replay stops where the
//! projection stopped, so a projection that is merely behind is reported as lag, never
//! as an inconsistency. Its rows are read in one snapshot (a repeatable-read
//! transaction on Postgres, a read transaction on SQLite) together with the checkpoint,
//! while the projector keeps running; the replay goes into scratch tables that are
//! dropped afterwards.
//!
//! One file: verify and replay share the fresh replay they compare against.

use std::collections::BTreeMap;
use std::time::Instant;

use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{AnyConnection, AssertSqlSafe, Row};
use tally_domain::account::{self, Account, AccountEvent, AccountStatus};
use tally_domain::codec;
use tally_domain::values::UserId;
use tally_store::{Backend, StreamId, verify_log};

use crate::accounts::{AsOf, BalanceRow, StatementEntry, account_balance, account_statement};
use crate::events::Batch;
use crate::runtime::{BATCH_EVENTS_MAX, Projector, suffix};
use crate::sql::execute;
use crate::{Projection, ProjectionError};

/// Most differing rows listed per table (the count is always given).
const DIFFERENCES_LISTED_MAX: usize = 20;

/// One problem `verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    /// `hash_chain`, `trial_balance` or `projection`.
    pub kind: &'static str,
    /// The log position concerned, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// The stream or the projection and table concerned.
    pub subject: String,
    /// What is wrong.
    pub detail: String,
}

/// How one read model compared with a fresh replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProjectionAudit {
    /// The projection.
    pub name: String,
    /// Its checkpoint: what was compared.
    pub checkpoint: u64,
    /// Events after the checkpoint (lag, not a problem).
    pub lag_events: u64,
    /// Rows compared.
    pub rows: u64,
    /// Rows that differ (in the read model but not the replay, or the other way).
    pub differences: u64,
}

/// Everything `verify` checked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Every stream's hash chain recomputes.
    pub hash_chains_ok: bool,
    /// The trial balance sums to zero.
    pub trial_balance_ok: bool,
    /// Every read model equals a replay as of its checkpoint.
    pub projections_consistent: bool,
    /// Events whose hash was recomputed.
    pub events_checked: u64,
    /// The log's last position when the audit began.
    pub head: u64,
    /// Each read model's comparison.
    pub projections: Vec<ProjectionAudit>,
    /// Every problem, in the order found.
    pub problems: Vec<AuditProblem>,
}

impl AuditReport {
    /// Nothing wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An account recomputed from its events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Recomputed {
    /// Credits free to spend.
    pub available: Decimal,
    /// Credits under open holds.
    pub held: Decimal,
    /// `open` or `blocked`.
    pub status: String,
    /// Events folded.
    pub events: u64,
    /// Position of the last one (0: none).
    pub position: u64,
}

/// `replay_account`'s answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountReplay {
    /// Whose account.
    pub user_id: i64,
    /// The last position included (the read model's checkpoint for "now").
    pub through_position: u64,
    /// From the raw events.
    pub recomputed: Recomputed,
    /// From the read model (`None`: it has no row for this account up to then).
    pub projected: Option<BalanceRow>,
    /// Whether they agree.
    pub consistent: bool,
    /// What differs.
    pub differences: Vec<String>,
    /// The statement up to then, from the read model.
    pub statement: Vec<StatementEntry>,
}

/// Every row of `table`, rendered as text (`|`-separated values), sorted.
pub(crate) async fn dump_table(
    conn: &mut AnyConnection,
    table: &str,
) -> Result<Vec<String>, ProjectionError> {
    let rows = sqlx::query(AssertSqlSafe(format!("SELECT * FROM {table}")))
        .fetch_all(&mut *conn)
        .await?;
    let mut out: Vec<String> = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| match row.try_get::<i64, _>(i) {
                    Ok(v) => v.to_string(),
                    Err(_) => match row.try_get::<String, _>(i) {
                        Ok(v) => format!("{v:?}"),
                        Err(_) => "NULL".to_string(),
                    },
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Rows only in `a`, rows only in `b` (both sorted).
fn diff(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x < y => {
                only_a.push(x.clone());
                i += 1;
            }
            (Some(_), Some(y)) => {
                only_b.push(y.clone());
                j += 1;
            }
            (Some(x), None) => {
                only_a.push(x.clone());
                i += 1;
            }
            (None, Some(y)) => {
                only_b.push(y.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (only_a, only_b)
}

struct Live {
    projection: std::sync::Arc<dyn Projection>,
    checkpoint: u64,
    tables: BTreeMap<&'static str, Vec<String>>,
    scratch: String,
}

impl Projector {
    /// Every row of projection `name`'s tables, as the views show them: table name →
    /// rows rendered as text, sorted. For comparing read models (an import, a rebuild).
    pub async fn dump(
        &self,
        name: &str,
    ) -> Result<BTreeMap<&'static str, Vec<String>>, ProjectionError> {
        let projection = self.find(name)?.clone();
        let mut conn = self.pool.acquire().await?;
        let mut tables = BTreeMap::new();
        for table in projection.tables() {
            tables.insert(*table, dump_table(&mut conn, table).await?);
        }
        Ok(tables)
    }

    /// Verifies hash chains, the trial balance and every read model; `progress` is
    /// told `(stage, done, total)` as it goes.
    pub async fn verify(
        &self,
        progress: impl FnMut(&str, u64, u64),
    ) -> Result<AuditReport, ProjectionError> {
        self.verify_within(None, progress).await
    }

    /// [`Projector::verify`], given up (scratch tables dropped) once `deadline` has
    /// passed: what an HTTP caller may wait for is bounded, and its scratch work is
    /// cleaned up whichever way the audit ends.
    pub async fn verify_within(
        &self,
        deadline: Option<Instant>,
        mut progress: impl FnMut(&str, u64, u64),
    ) -> Result<AuditReport, ProjectionError> {
        let head = self.store.last_position().await?;
        let mut problems = Vec::new();

        let chains = verify_log(self.store.as_ref(), |n| progress("hash chains", n, head)).await?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(ProjectionError::Event {
                position: 0,
                detail: "the audit ran past its time limit checking hash chains; run `tally audit verify` for a log this long".into(),
            });
        }
        if let Some(p) = &chains.first_problem {
            problems.push(AuditProblem {
                kind: "hash_chain",
                position: Some(p.position),
                subject: format!("{} v{}", p.stream_id, p.stream_version),
                detail: p.detail.clone(),
            });
        }

        // The read models as they are, each with its checkpoint, in one snapshot.
        let mut live = Vec::new();
        {
            let mut tx = match self.backend {
                Backend::Postgres => {
                    self.pool
                        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                        .await?
                }
                Backend::Sqlite => self.pool.begin().await?,
            };
            for projection in self.projections() {
                let row =
                    sqlx::query("SELECT generation, checkpoint FROM projections WHERE name = $1")
                        .bind(projection.name().to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(row) = row else { continue };
                let generation: i64 = row.get(0);
                let checkpoint = u64::try_from(row.get::<i64, _>(1)).unwrap_or(0);
                let mut tables = BTreeMap::new();
                for table in projection.tables() {
                    let name = format!("{table}{}", suffix(generation));
                    tables.insert(*table, dump_table(&mut tx, &name).await?);
                }
                live.push(Live {
                    projection: projection.clone(),
                    checkpoint,
                    tables,
                    scratch: format!("__audit{}", &uuid_like()),
                });
            }
            tx.commit().await?;
        }

        let trial_balance_ok = self.check_trial_balance(&mut problems).await?;

        // One pass over the log feeds every replay up to its projection's checkpoint.
        for l in &live {
            let mut tx = self.begin().await?;
            Self::create_tables_with_suffix(&mut tx, l.projection.as_ref(), &l.scratch, true)
                .await?;
            tx.commit().await?;
        }
        let replayed = self
            .replay_into_scratch(&live, deadline, &mut progress)
            .await;
        let mut audits = Vec::new();
        if replayed.is_ok() {
            for l in &live {
                let mut conn = self.pool.acquire().await?;
                let mut audit = ProjectionAudit {
                    name: l.projection.name().to_string(),
                    checkpoint: l.checkpoint,
                    lag_events: head.saturating_sub(l.checkpoint),
                    rows: 0,
                    differences: 0,
                };
                for (table, rows) in &l.tables {
                    let fresh = dump_table(&mut conn, &format!("{table}{}", l.scratch)).await?;
                    audit.rows += rows.len() as u64;
                    let (extra, missing) = diff(rows, &fresh);
                    audit.differences += (extra.len() + missing.len()) as u64;
                    let subject = format!("{} / {table}", l.projection.name());
                    for (what, list) in [
                        (
                            "row in the read model that a replay does not produce",
                            &extra,
                        ),
                        ("row a replay produces that the read model lacks", &missing),
                    ] {
                        for row in list.iter().take(DIFFERENCES_LISTED_MAX) {
                            problems.push(AuditProblem {
                                kind: "projection",
                                position: None,
                                subject: subject.clone(),
                                detail: format!("{what}: {row}"),
                            });
                        }
                        if list.len() > DIFFERENCES_LISTED_MAX {
                            problems.push(AuditProblem {
                                kind: "projection",
                                position: None,
                                subject: subject.clone(),
                                detail: format!(
                                    "… and {} more such rows",
                                    list.len() - DIFFERENCES_LISTED_MAX
                                ),
                            });
                        }
                    }
                }
                audits.push(audit);
            }
        }
        for l in &live {
            let mut conn = self.pool.acquire().await?;
            for table in l.projection.tables() {
                execute(
                    &mut conn,
                    &format!("DROP TABLE IF EXISTS {table}{}", l.scratch),
                    &[],
                )
                .await?;
            }
        }
        replayed?;
        let projections_consistent = audits.iter().all(|a| a.differences == 0);
        Ok(AuditReport {
            hash_chains_ok: chains.ok(),
            trial_balance_ok,
            projections_consistent,
            events_checked: chains.events_checked,
            head,
            projections: audits,
            problems,
        })
    }

    async fn replay_into_scratch(
        &self,
        live: &[Live],
        deadline: Option<Instant>,
        progress: &mut impl FnMut(&str, u64, u64),
    ) -> Result<(), ProjectionError> {
        let until = live.iter().map(|l| l.checkpoint).max().unwrap_or(0);
        let mut position = 0;
        while position < until {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(ProjectionError::Event {
                    position,
                    detail: "the audit ran past its time limit; run `tally audit verify` for a log this long".into(),
                });
            }
            let events = self.store.read_all(position, BATCH_EVENTS_MAX).await?;
            let Some(last) = events.last() else {
                return Err(ProjectionError::Lagging {
                    name: "audit replay".into(),
                    reached: position,
                    wanted: until,
                });
            };
            position = last.position;
            let mut tx = self.begin().await?;
            for l in live {
                let upto = events.partition_point(|e| e.position <= l.checkpoint);
                if upto > 0 {
                    l.projection
                        .apply(&mut tx, &l.scratch, &Batch::new(events[..upto].to_vec())?)
                        .await?;
                }
            }
            tx.commit().await?;
            progress("read model replay", position.min(until), until);
        }
        Ok(())
    }

    async fn check_trial_balance(
        &self,
        problems: &mut Vec<AuditProblem>,
    ) -> Result<bool, ProjectionError> {
        if self.find("trial_balance").is_err() {
            return Ok(true);
        }
        let total: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(balance_cents), 0) AS BIGINT) FROM trial_balance",
        )
        .fetch_one(&self.pool)
        .await?;
        if total != 0 {
            problems.push(AuditProblem {
                kind: "trial_balance",
                position: None,
                subject: "trial_balance".into(),
                detail: format!(
                    "the ledger accounts sum to {} credits, not 0",
                    crate::from_cents(total)
                ),
            });
        }
        Ok(total == 0)
    }

    /// Recomputes a user's account from its raw events up to `as_of` and compares it
    /// with the read model. For [`AsOf::Latest`] both stop at the accounts read model's
    /// checkpoint, so lag is not a difference.
    pub async fn replay_account(
        &self,
        user: UserId,
        as_of: AsOf,
    ) -> Result<AccountReplay, ProjectionError> {
        let checkpoint = self
            .registered("accounts")
            .await?
            .ok_or_else(|| ProjectionError::Unknown("accounts".into()))?
            .checkpoint;
        // "Now" is the read model's row and what it includes: its checkpoint, or the
        // row's own position if the projector moved on while we read.
        let latest = match as_of {
            AsOf::Latest => account_balance(&self.pool, user.get(), AsOf::Latest).await?,
            _ => None,
        };
        let checkpoint = checkpoint.max(latest.as_ref().map_or(0, |row| row.position));
        let bound = match as_of {
            AsOf::Latest => AsOf::Position(checkpoint),
            other => other,
        };
        let stream = StreamId::new(format!("account-{user}"))?;
        let mut state = Account::new(user);
        let mut recomputed_events = 0u64;
        let mut last_position = 0u64;
        let mut from = 1;
        loop {
            let page = self.store.read_stream(&stream, from, 1_000).await?;
            let Some(last) = page.last() else { break };
            from = last.stream_version + 1;
            for recorded in &page {
                if !bound.includes(recorded.position, recorded.occurred_at)
                    || recorded.position > checkpoint
                {
                    continue;
                }
                let event: AccountEvent = codec::decode_ref(
                    &recorded.event_type,
                    recorded.schema_version,
                    &recorded.payload,
                )?;
                state = account::evolve(state, &event);
                recomputed_events += 1;
                last_position = recorded.position;
            }
        }
        let through = match bound {
            AsOf::Position(p) => p.min(checkpoint),
            _ => last_position,
        };
        let cents = |mut d: Decimal| {
            d.rescale(2);
            d
        };
        let recomputed = Recomputed {
            available: cents(state.available),
            held: cents(state.held),
            status: match state.status {
                AccountStatus::Open => "open".into(),
                AccountStatus::Blocked => "blocked".into(),
            },
            events: recomputed_events,
            position: last_position,
        };
        let projected = match as_of {
            AsOf::Latest => latest,
            _ => account_balance(&self.pool, user.get(), AsOf::Position(through))
                .await?
                .filter(|_| state.opened),
        };
        let statement = account_statement(&self.pool, user.get(), AsOf::Position(through)).await?;
        let mut differences = Vec::new();
        match &projected {
            None if state.opened
                && (state.available, state.held) != (Decimal::ZERO, Decimal::ZERO) =>
            {
                differences.push("the read model has no balance for this account".to_string())
            }
            None => {}
            Some(p) => {
                if p.available != recomputed.available {
                    differences.push(format!(
                        "available: read model {} but the events give {}",
                        p.available, recomputed.available
                    ));
                }
                if p.held != recomputed.held {
                    differences.push(format!(
                        "held: read model {} but the events give {}",
                        p.held, recomputed.held
                    ));
                }
                if let Some(status) = &p.status
                    && status != &recomputed.status
                {
                    differences.push(format!(
                        "status: read model {status} but the events give {}",
                        recomputed.status
                    ));
                }
            }
        }
        if let Some(last) = statement.last()
            && (last.balance_after, last.held_after) != (recomputed.available, recomputed.held)
        {
            differences.push(format!(
                "the statement ends at {} available, {} held; the events give {}, {}",
                last.balance_after, last.held_after, recomputed.available, recomputed.held
            ));
        }
        Ok(AccountReplay {
            user_id: user.get(),
            through_position: through,
            recomputed,
            projected,
            consistent: differences.is_empty(),
            differences,
            statement,
        })
    }
}

/// A short random suffix for scratch tables (so two audits never collide).
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos & 0xff_ffff)
}
