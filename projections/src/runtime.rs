//! The projector runtime: checkpoints, batches, generations, leases.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Row};
use tally_store::{Backend, EventStore, RecordedEvent};

use crate::sql::execute;
use crate::{Accounts, ProjectionError, TrialBalance};

/// Most events read and applied in one transaction.
pub const BATCH_EVENTS_MAX: usize = 1_000;
/// How often a running projector looks at the log without a wake-up (another process
/// appending to a SQLite file sends none).
pub const POLL_EVERY: Duration = Duration::from_millis(250);
/// How long `catch_up` waits for a position the log reported as its head to become
/// readable (on Postgres, `read_all` holds back while older transactions are open).
const CATCH_UP_WAIT_MAX: Duration = Duration::from_secs(60);

/// A read model: its name, version, tables and how events change them.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable name (`accounts`), used in the registry and on the command line.
    fn name(&self) -> &'static str;
    /// Bump it when the tables or the handler change: the projection is rebuilt.
    fn version(&self) -> i64;
    /// The tables' DDL, `{g}` standing for the generation suffix.
    fn schema(&self) -> &'static str;
    /// The tables, as the views queries read them by.
    fn tables(&self) -> &'static [&'static str];
    /// Applies a batch of events, in log order, to the tables with suffix `g`, inside
    /// the caller's transaction (which also moves the checkpoint).
    async fn apply(
        &self,
        conn: &mut AnyConnection,
        g: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError>;
}

/// The projections Tally runs.
pub fn default_projections() -> Vec<Arc<dyn Projection>> {
    vec![Arc::new(Accounts), Arc::new(TrialBalance)]
}

/// Where a projection stands.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// The version its tables were built by.
    pub version: i64,
    /// The generation of tables queries read.
    pub generation: i64,
    /// The position of the last event applied.
    pub checkpoint: u64,
    /// The log's last committed position.
    pub head: u64,
    /// Positions between checkpoint and head (an upper bound on events: positions of
    /// rolled-back appends are never used).
    pub lag_events: u64,
    /// How long the oldest event not yet applied has waited (0 when caught up).
    pub lag_seconds: f64,
}

#[derive(Clone, Copy, Debug)]
struct Registered {
    version: i64,
    generation: i64,
    checkpoint: u64,
}

/// Runs projections against one database (the log's own).
pub struct Projector {
    pool: AnyPool,
    store: Arc<dyn EventStore>,
    projections: Vec<Arc<dyn Projection>>,
    backend: Backend,
}

fn suffix(generation: i64) -> String {
    format!("__g{generation}")
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Splits DDL into statements, comments (`-- …` to the end of a line) removed first.
fn statements(ddl: &str) -> Vec<String> {
    let code: String = ddl
        .lines()
        .map(|line| line.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    code.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Projector {
    /// Connects to the database at `url` (the log's) for `projections`. The store must
    /// have been opened first (it applies the migrations the registry lives in).
    pub async fn open(
        store: Arc<dyn EventStore>,
        url: &str,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Self, ProjectionError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        Ok(Self {
            pool,
            store,
            projections,
            backend,
        })
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a transaction that read first could not write after the log's
    /// writer committed (SQLITE_BUSY_SNAPSHOT); waiting for the lock up front can.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, Any>, ProjectionError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// The projections this runs.
    pub fn projections(&self) -> &[Arc<dyn Projection>] {
        &self.projections
    }

    /// The pool read models are queried through.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    fn find(&self, name: &str) -> Result<&Arc<dyn Projection>, ProjectionError> {
        self.projections
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| ProjectionError::Unknown(name.to_string()))
    }

    /// Creates missing read models and rebuilds those whose version changed in code.
    pub async fn prepare(&self) -> Result<(), ProjectionError> {
        for projection in &self.projections {
            match self.registered(projection.name()).await? {
                None => self.create(projection.as_ref()).await?,
                Some(r) if r.version != projection.version() => {
                    tracing::info!(
                        projection = projection.name(),
                        from = r.version,
                        to = projection.version(),
                        "version changed in code: rebuilding"
                    );
                    self.rebuild(projection.name()).await?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    async fn registered(&self, name: &str) -> Result<Option<Registered>, ProjectionError> {
        let row =
            sqlx::query("SELECT version, generation, checkpoint FROM projections WHERE name = $1")
                .bind(name.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|row| Registered {
            version: row.get::<i64, _>(0),
            generation: row.get::<i64, _>(1),
            checkpoint: u64::try_from(row.get::<i64, _>(2)).unwrap_or(0),
        }))
    }

    async fn create_tables(
        conn: &mut AnyConnection,
        projection: &dyn Projection,
        generation: i64,
    ) -> Result<(), ProjectionError> {
        let g = suffix(generation);
        for table in projection.tables() {
            execute(conn, &format!("DROP TABLE IF EXISTS {table}{g}"), &[]).await?;
        }
        for statement in statements(&projection.schema().replace("{g}", &g)) {
            execute(conn, &statement, &[]).await?;
        }
        Ok(())
    }

    async fn point_views(
        conn: &mut AnyConnection,
        projection: &dyn Projection,
        generation: i64,
    ) -> Result<(), ProjectionError> {
        let g = suffix(generation);
        for table in projection.tables() {
            execute(conn, &format!("DROP VIEW IF EXISTS {table}"), &[]).await?;
            execute(
                conn,
                &format!("CREATE VIEW {table} AS SELECT * FROM {table}{g}"),
                &[],
            )
            .await?;
        }
        Ok(())
    }

    async fn create(&self, projection: &dyn Projection) -> Result<(), ProjectionError> {
        let mut tx = self.begin().await?;
        let claimed = execute(
            &mut tx,
            "INSERT INTO projections (name, version, generation, checkpoint, updated_at) \
             VALUES ($1, $2, 1, 0, $3) ON CONFLICT (name) DO NOTHING",
            &[
                projection.name().into(),
                projection.version().into(),
                now_micros().into(),
            ],
        )
        .await?;
        if claimed == 0 {
            // Another process created it first.
            return Ok(());
        }
        Self::create_tables(&mut tx, projection, 1).await?;
        Self::point_views(&mut tx, projection, 1).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies the next batch of one projection; returns how many events it applied
    /// (0: nothing new, or another process moved the checkpoint first).
    pub async fn step(&self, name: &str) -> Result<usize, ProjectionError> {
        let projection = self.find(name)?;
        let Some(at) = self.registered(name).await? else {
            return Err(ProjectionError::Unknown(name.to_string()));
        };
        let events = self.store.read_all(at.checkpoint, BATCH_EVENTS_MAX).await?;
        let Some(last) = events.last() else {
            return Ok(0);
        };
        let mut tx = self.begin().await?;
        // Compare-and-set first: a racing process waits on this row, then finds the
        // checkpoint moved and applies nothing.
        let moved = execute(
            &mut tx,
            "UPDATE projections SET checkpoint = $1, checkpoint_at = $2, updated_at = $3 \
             WHERE name = $4 AND generation = $5 AND checkpoint = $6",
            &[
                to_i64(last.position).into(),
                last.recorded_at.timestamp_micros().into(),
                now_micros().into(),
                name.into(),
                at.generation.into(),
                to_i64(at.checkpoint).into(),
            ],
        )
        .await?;
        if moved == 0 {
            return Ok(0);
        }
        projection
            .apply(&mut tx, &suffix(at.generation), &events)
            .await?;
        tx.commit().await?;
        Ok(events.len())
    }

    /// Runs every projection up to the log's last committed event as of now; returns
    /// the checkpoints.
    pub async fn catch_up(&self) -> Result<Vec<(String, u64)>, ProjectionError> {
        let head = self.store.last_position().await?;
        let mut reached = Vec::new();
        for projection in &self.projections {
            let name = projection.name();
            let started = Instant::now();
            loop {
                let checkpoint = self.checkpoint(name).await?;
                if checkpoint >= head {
                    reached.push((name.to_string(), checkpoint));
                    break;
                }
                if self.step(name).await? == 0 {
                    if started.elapsed() > CATCH_UP_WAIT_MAX {
                        return Err(ProjectionError::Lagging {
                            name: name.to_string(),
                            reached: checkpoint,
                            wanted: head,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        Ok(reached)
    }

    async fn checkpoint(&self, name: &str) -> Result<u64, ProjectionError> {
        Ok(self
            .registered(name)
            .await?
            .ok_or_else(|| ProjectionError::Unknown(name.to_string()))?
            .checkpoint)
    }

    /// Waits until projection `name` has applied `position`, at most `timeout`.
    pub async fn wait_for(
        &self,
        name: &str,
        position: u64,
        timeout: Duration,
    ) -> Result<(), ProjectionError> {
        let started = Instant::now();
        loop {
            let reached = self.checkpoint(name).await?;
            if reached >= position {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(ProjectionError::Lagging {
                    name: name.to_string(),
                    reached,
                    wanted: position,
                });
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Checkpoint, head and lag of every projection.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>, ProjectionError> {
        let head = self.store.last_position().await?;
        let mut all = Vec::new();
        for projection in &self.projections {
            let name = projection.name();
            let Some(at) = self.registered(name).await? else {
                continue;
            };
            let lag_seconds = match at.checkpoint < head {
                false => 0.0,
                true => match self.store.read_all(at.checkpoint, 1).await?.first() {
                    Some(oldest) => {
                        let waited = chrono::Utc::now() - oldest.recorded_at;
                        waited.num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6
                    }
                    None => 0.0,
                },
            };
            all.push(ProjectionStatus {
                name: name.to_string(),
                version: at.version,
                generation: at.generation,
                checkpoint: at.checkpoint,
                head,
                lag_events: head.saturating_sub(at.checkpoint),
                lag_seconds,
            });
        }
        Ok(all)
    }

    /// Rebuilds `name` from position 0 into a new generation of tables while queries
    /// read the current one, then swaps views and registry in one transaction and drops
    /// the old tables. Returns the events applied.
    pub async fn rebuild(&self, name: &str) -> Result<u64, ProjectionError> {
        let projection = self.find(name)?.clone();
        let Some(current) = self.registered(name).await? else {
            self.create(projection.as_ref()).await?;
            return Ok(0);
        };
        let generation = current.generation + 1;
        let g = suffix(generation);
        {
            let mut tx = self.begin().await?;
            Self::create_tables(&mut tx, projection.as_ref(), generation).await?;
            tx.commit().await?;
        }
        // Aside: each batch commits on its own; a crash here leaves unused tables that
        // the next rebuild drops.
        let head = self.store.last_position().await?;
        let mut position = 0;
        let mut applied = 0u64;
        let started = Instant::now();
        while position < head {
            let events = self.store.read_all(position, BATCH_EVENTS_MAX).await?;
            let Some(last) = events.last() else {
                if started.elapsed() > CATCH_UP_WAIT_MAX {
                    return Err(ProjectionError::Lagging {
                        name: name.to_string(),
                        reached: position,
                        wanted: head,
                    });
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            position = last.position;
            let mut tx = self.begin().await?;
            projection.apply(&mut tx, &g, &events).await?;
            tx.commit().await?;
            applied += events.len() as u64;
        }
        // The swap: take the registry row (the live projector waits on it), apply what
        // arrived meanwhile, point the views at the new tables.
        let mut tx = self.begin().await?;
        execute(
            &mut tx,
            "UPDATE projections SET updated_at = $1 WHERE name = $2",
            &[now_micros().into(), name.into()],
        )
        .await?;
        let mut checkpoint_at = 0;
        loop {
            let events = self.store.read_all(position, BATCH_EVENTS_MAX).await?;
            let Some(last) = events.last() else { break };
            position = last.position;
            checkpoint_at = last.recorded_at.timestamp_micros();
            projection.apply(&mut tx, &g, &events).await?;
            applied += events.len() as u64;
        }
        if checkpoint_at == 0 && position > 0 {
            checkpoint_at = now_micros();
        }
        execute(
            &mut tx,
            "UPDATE projections SET version = $1, generation = $2, checkpoint = $3, \
             checkpoint_at = $4, updated_at = $5 WHERE name = $6",
            &[
                projection.version().into(),
                generation.into(),
                to_i64(position).into(),
                checkpoint_at.into(),
                now_micros().into(),
                name.into(),
            ],
        )
        .await?;
        Self::point_views(&mut tx, projection.as_ref(), generation).await?;
        tx.commit().await?;
        let mut tx = self.begin().await?;
        for table in projection.tables() {
            let old = format!("{table}{}", suffix(current.generation));
            execute(&mut tx, &format!("DROP TABLE IF EXISTS {old}"), &[]).await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Keeps every projection caught up until `stop` turns true: wakes on the store's
    /// wake-ups and every [`POLL_EVERY`]. On Postgres a projection is only run while
    /// this process holds its lease; others stand by and take over when it dies.
    pub async fn run(
        &self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        let mut wakeups = self.store.subscribe();
        let mut lease = match self.backend {
            Backend::Postgres => Some(Lease::new(self.pool.acquire().await?)),
            Backend::Sqlite => None,
        };
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            for projection in &self.projections {
                let name = projection.name();
                if let Some(lease) = lease.as_mut()
                    && !lease.hold(name).await?
                {
                    continue;
                }
                loop {
                    match self.step(name).await {
                        Ok(BATCH_EVENTS_MAX) => continue,
                        Ok(_) => break,
                        Err(error) => {
                            tracing::warn!(%error, projection = name, "projection step failed; retrying");
                            break;
                        }
                    }
                }
            }
            tokio::select! {
                woke = wakeups.wait() => {
                    if woke.is_err() {
                        // The store closed its wake-ups: polling only.
                        tokio::time::sleep(POLL_EVERY).await;
                    }
                }
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// Postgres session advisory locks, one per projection, on one connection: held until
/// the connection ends, so a standby's `pg_try_advisory_lock` succeeds once the holder
/// dies.
struct Lease {
    conn: PoolConnection<Any>,
    held: Vec<String>,
}

impl Lease {
    fn new(conn: PoolConnection<Any>) -> Self {
        Self { conn, held: vec![] }
    }

    async fn hold(&mut self, name: &str) -> Result<bool, ProjectionError> {
        if self.held.iter().any(|h| h == name) {
            return Ok(true);
        }
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lease_key(name))
            .fetch_one(&mut *self.conn)
            .await?;
        if got {
            tracing::info!(projection = name, "holding the projection's lease");
            self.held.push(name.to_string());
        }
        Ok(got)
    }
}

/// The advisory lock key of a projection (FNV-1a of its name, in a Tally namespace).
fn lease_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"tally.projection.".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}
