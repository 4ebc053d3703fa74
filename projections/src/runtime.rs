//! The projector runtime: checkpoints, batches, generations, leases.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use sqlx::any::AnyPoolOptions;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Row};
use tally_store::{Backend, EventStore};

use crate::events::Batch;
use crate::sql::{copy_rows, execute};
use crate::{
    Accounts, DailyStats, Holds, Payments, Posts, ProjectionError, Refunds, Subscriptions,
    TrialBalance,
};

/// Connections of a projector's pool (a rebuild writes each projection on its own).
const POOL_CONNECTIONS_MAX: u32 = 12;
/// Most events read and applied in one transaction.
pub const BATCH_EVENTS_MAX: usize = 1_000;
/// Most events read and applied in one transaction while rebuilding aside (nobody
/// waits on those tables; bigger batches fold more of each account in memory).
pub const REBUILD_BATCH_EVENTS_MAX: usize = 10_000;
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
        batch: &Batch,
    ) -> Result<(), ProjectionError>;
}

/// The projections Tally runs.
pub fn default_projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(Accounts),
        Arc::new(Holds),
        Arc::new(TrialBalance),
        Arc::new(Payments),
        Arc::new(Subscriptions),
        Arc::new(Posts),
        Arc::new(Refunds),
        Arc::new(DailyStats),
    ]
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
pub(crate) struct Registered {
    pub(crate) version: i64,
    pub(crate) generation: i64,
    pub(crate) checkpoint: u64,
}

/// A projection being rebuilt: what it was, its new generation, its deferred indexes.
type Rebuilding = (Arc<dyn Projection>, Registered, i64, Vec<String>);

/// Runs projections against one database (the log's own).
pub struct Projector {
    pub(crate) pool: AnyPool,
    pub(crate) store: Arc<dyn EventStore>,
    projections: Vec<Arc<dyn Projection>>,
    pub(crate) backend: Backend,
    /// Postgres only: native connections for `COPY` into tables filled aside (the Any
    /// driver has no `COPY`).
    copy_pool: Option<sqlx::PgPool>,
    /// SQLite only: the file whose lock makes rebuilds take turns across processes.
    rebuild_lock_file: Option<std::path::PathBuf>,
    /// This process's background roles and their beats (`/readyz`).
    health: Arc<crate::health::Health>,
}

pub(crate) fn suffix(generation: i64) -> String {
    format!("__g{generation}")
}

pub(crate) fn to_i64(v: u64) -> i64 {
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
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await?;
        let copy_pool = match backend {
            Backend::Postgres => Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(POOL_CONNECTIONS_MAX)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_lazy(url)?,
            ),
            Backend::Sqlite => None,
        };
        let rebuild_lock_file = match backend {
            Backend::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
                let mut path = options.get_filename().as_os_str().to_owned();
                path.push(".rebuild-lock");
                Some(path.into())
            }
            Backend::Postgres => None,
        };
        Ok(Self {
            pool,
            store,
            projections,
            backend,
            copy_pool,
            rebuild_lock_file,
            health: Default::default(),
        })
    }

    /// The background roles of this process (the projector's runners and whatever
    /// else was handed this) and their beats.
    pub fn health(&self) -> &Arc<crate::health::Health> {
        &self.health
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a transaction that read first could not write after the log's
    /// writer committed (SQLITE_BUSY_SNAPSHOT); waiting for the lock up front can.
    /// On Postgres it does not wait for the disk at commit (`synchronous_commit =
    /// off`): read models are derived, and their rows and checkpoint commit together,
    /// so a server crash can only take back the last few batches — rows and checkpoint
    /// alike — which the projector applies again from the log. The log's own appends
    /// keep waiting for the disk.
    pub(crate) async fn begin(&self) -> Result<sqlx::Transaction<'static, Any>, ProjectionError> {
        begin_on(&self.pool, self.backend).await
    }

    /// The projections this runs.
    pub fn projections(&self) -> &[Arc<dyn Projection>] {
        &self.projections
    }

    /// The pool read models are queried through.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn find(&self, name: &str) -> Result<&Arc<dyn Projection>, ProjectionError> {
        self.projections
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| ProjectionError::Unknown(name.to_string()))
    }

    /// Creates missing read models and rebuilds those whose version changed in code.
    /// Two processes started after a version bump rebuild it once: the second waits
    /// for the first's rebuild lock, then finds the version current.
    pub async fn prepare(&self) -> Result<(), ProjectionError> {
        for projection in &self.projections {
            match self.registered(projection.name()).await? {
                None => self.create(projection.as_ref()).await?,
                Some(r) if r.version != projection.version() => {
                    let _turn = self.rebuild_lock().await?;
                    let still = self.registered(projection.name()).await?;
                    if still.is_some_and(|r| r.version == projection.version()) {
                        tracing::info!(
                            projection = projection.name(),
                            "rebuilt by another process meanwhile"
                        );
                        continue;
                    }
                    tracing::info!(
                        projection = projection.name(),
                        from = r.version,
                        to = projection.version(),
                        "version changed in code: rebuilding"
                    );
                    self.rebuild_many_locked(&[projection.name()], |_, _| {})
                        .await?;
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Waits for this database's rebuild lock: one rebuild at a time, across
    /// processes, so two never fill the same new generation (additive read models
    /// would count every event twice). Postgres: a session advisory lock on a
    /// connection of its own; SQLite: an exclusive lock on a file beside the
    /// database. Both end with the process.
    async fn rebuild_lock(&self) -> Result<RebuildLock, ProjectionError> {
        match (&self.rebuild_lock_file, self.backend) {
            (Some(path), _) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(path)
                    .map_err(|e| ProjectionError::Event {
                        position: 0,
                        detail: format!("cannot open the rebuild lock {}: {e}", path.display()),
                    })?;
                let file = match file.try_lock() {
                    Ok(()) => file,
                    Err(_) => {
                        tracing::info!("another rebuild is running; waiting for it");
                        tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                            .await
                            .map_err(|e| ProjectionError::Event {
                                position: 0,
                                detail: format!("waiting for the rebuild lock: {e}"),
                            })?
                            .map_err(|e| ProjectionError::Event {
                                position: 0,
                                detail: format!("the rebuild lock: {e}"),
                            })?
                    }
                };
                Ok(RebuildLock::File(file))
            }
            (None, _) => {
                let mut conn = self.pool.acquire().await?;
                conn.close_on_drop();
                let key = lease_key("rebuild");
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
                if !got {
                    tracing::info!("another rebuild is running; waiting for it");
                    sqlx::query("SELECT pg_advisory_lock($1)")
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(RebuildLock::Session(conn))
            }
        }
    }

    pub(crate) async fn registered(
        &self,
        name: &str,
    ) -> Result<Option<Registered>, ProjectionError> {
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

    /// Creates a projection's tables with suffix `g`. `aside`: tables nobody reads
    /// yet (a rebuild, an audit's scratch copy) are filled faster without their
    /// secondary indexes; [`Self::settle`] builds them before they are read. Returns
    /// the deferred index statements.
    pub(crate) async fn create_tables_with_suffix(
        conn: &mut AnyConnection,
        projection: &dyn Projection,
        g: &str,
        aside: bool,
    ) -> Result<Vec<String>, ProjectionError> {
        for table in projection.tables() {
            execute(conn, &format!("DROP TABLE IF EXISTS {table}{g}"), &[]).await?;
        }
        let mut deferred = Vec::new();
        for statement in statements(&projection.schema().replace("{g}", g)) {
            let is_index = statement.starts_with("CREATE INDEX")
                || statement.starts_with("CREATE UNIQUE INDEX");
            match aside && is_index {
                true => deferred.push(statement),
                false => {
                    execute(conn, &statement, &[]).await?;
                }
            }
        }
        Ok(deferred)
    }

    /// Makes tables filled aside ready to be read: builds their indexes.
    pub(crate) async fn settle(
        conn: &mut AnyConnection,
        deferred: &[String],
    ) -> Result<(), ProjectionError> {
        for statement in deferred {
            execute(conn, statement, &[]).await?;
        }
        Ok(())
    }

    async fn create_tables(
        conn: &mut AnyConnection,
        projection: &dyn Projection,
        generation: i64,
        aside: bool,
    ) -> Result<Vec<String>, ProjectionError> {
        Self::create_tables_with_suffix(conn, projection, &suffix(generation), aside).await
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
        Self::create_tables(&mut tx, projection, 1, false).await?;
        Self::point_views(&mut tx, projection, 1).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies the next batch of one projection; returns how many events it applied
    /// (0: nothing new, or another process moved the checkpoint first).
    pub async fn step(&self, name: &str) -> Result<usize, ProjectionError> {
        let Some(at) = self.registered(name).await? else {
            return Err(ProjectionError::Unknown(name.to_string()));
        };
        Ok(self.step_from(name, at).await?.0)
    }

    /// [`Self::step`] from a registry row read earlier (the runner keeps it between
    /// steps rather than reading it back each time). Returns the events applied and
    /// the row after them, or `None` when the row was not as given (another process
    /// or a rebuild moved it): read it again.
    pub(crate) async fn step_from(
        &self,
        name: &str,
        at: Registered,
    ) -> Result<(usize, Option<Registered>), ProjectionError> {
        let projection = self.find(name)?;
        let events = self.store.read_all(at.checkpoint, BATCH_EVENTS_MAX).await?;
        let Some(last) = events.last() else {
            return Ok((0, Some(at)));
        };
        let checkpoint = last.position;
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
            return Ok((0, None));
        }
        let n = events.len();
        projection
            .apply(&mut tx, &suffix(at.generation), &Batch::new(events)?)
            .await?;
        tx.commit().await?;
        Ok((n, Some(Registered { checkpoint, ..at })))
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

    /// Checkpoint, head and lag of every projection (and of the reactor, once it ran).
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>, ProjectionError> {
        let head = self.store.last_position().await?;
        let mut all = Vec::new();
        // The log-following reactor keeps its checkpoint in the same registry.
        let names = self
            .projections
            .iter()
            .map(|p| p.name())
            .chain([crate::REACTOR, crate::NOTIFIER]);
        for name in names {
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
        self.rebuild_many(&[name], |_, _| {}).await
    }

    /// Rebuilds several projections in one pass over the log (each batch read once and
    /// applied to every new generation in one transaction), then swaps each. Returns the
    /// events read; `progress` is told `(position, head)` after each batch.
    pub async fn rebuild_many(
        &self,
        names: &[&str],
        progress: impl FnMut(u64, u64),
    ) -> Result<u64, ProjectionError> {
        let _turn = self.rebuild_lock().await?;
        self.rebuild_many_locked(names, progress).await
    }

    async fn rebuild_many_locked(
        &self,
        names: &[&str],
        mut progress: impl FnMut(u64, u64),
    ) -> Result<u64, ProjectionError> {
        let mut work = Vec::new();
        for name in names {
            let projection = self.find(name)?.clone();
            let Some(current) = self.registered(name).await? else {
                self.create(projection.as_ref()).await?;
                continue;
            };
            let generation = current.generation + 1;
            let mut tx = self.begin().await?;
            let deferred =
                Self::create_tables(&mut tx, projection.as_ref(), generation, true).await?;
            tx.commit().await?;
            work.push((projection, current, generation, deferred));
        }
        if work.is_empty() {
            return Ok(0);
        }
        // Aside: each batch commits on its own; a crash here leaves unused tables that
        // the next rebuild drops.
        let head = self.store.last_position().await?;
        let (position, mut applied) = self.fill_aside(&work, head, names, &mut progress).await?;
        for (projection, current, generation, deferred) in &work {
            let mut tx = self.begin().await?;
            Self::settle(&mut tx, deferred).await?;
            tx.commit().await?;
            applied += self
                .swap(projection.as_ref(), current, *generation, position)
                .await?;
        }
        Ok(applied)
    }

    /// Fills new generations from position 0 up to `head`; returns the position
    /// reached and the events read. The log is read once, a batch ahead of the writers; on Postgres every
    /// projection writes on its own connection, so the slowest sets the pace rather
    /// than the sum of all (SQLite has one writer at a time: one task applies all).
    async fn fill_aside(
        &self,
        work: &[Rebuilding],
        head: u64,
        names: &[&str],
        progress: &mut impl FnMut(u64, u64),
    ) -> Result<(u64, u64), ProjectionError> {
        type Shared = Arc<Batch>;
        let lanes: Vec<Vec<(Arc<dyn Projection>, String)>> = match self.backend {
            Backend::Postgres => work
                .iter()
                .map(|(p, _, g, _)| vec![(p.clone(), suffix(*g))])
                .collect(),
            Backend::Sqlite => vec![
                work.iter()
                    .map(|(p, _, g, _)| (p.clone(), suffix(*g)))
                    .collect(),
            ],
        };
        let mut senders = Vec::new();
        let mut writers = tokio::task::JoinSet::new();
        for lane in lanes {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Shared>(2);
            senders.push(tx);
            let (pool, backend) = (self.pool.clone(), self.backend);
            let copy_pool = self.copy_pool.clone();
            writers.spawn(async move {
                while let Some(events) = rx.recv().await {
                    let mut tx = begin_on(&pool, backend).await?;
                    for (projection, g) in &lane {
                        projection.apply(&mut tx, g, &events).await?;
                    }
                    tx.commit().await?;
                    if let Some(copy_pool) = &copy_pool {
                        for (projection, g) in &lane {
                            for table in projection.tables() {
                                let table = format!("{table}{g}");
                                if let Some((columns, rows)) = events.take_bulk(&table) {
                                    copy_rows(copy_pool, &table, &columns, &rows).await?;
                                }
                            }
                        }
                    }
                }
                Ok::<(), ProjectionError>(())
            });
        }
        let mut position = 0;
        let mut read = 0u64;
        let started = Instant::now();
        let reading = async {
            while position < head {
                let events = self
                    .store
                    .read_all(position, REBUILD_BATCH_EVENTS_MAX)
                    .await?;
                let Some(last) = events.last() else {
                    if started.elapsed() > CATCH_UP_WAIT_MAX {
                        return Err(ProjectionError::Lagging {
                            name: names.join(","),
                            reached: position,
                            wanted: head,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                };
                position = last.position;
                read += events.len() as u64;
                let batch = match self.copy_pool {
                    Some(_) => Batch::collecting(events)?,
                    None => Batch::new(events)?,
                };
                let batch: Shared = Arc::new(batch);
                for sender in &senders {
                    if sender.send(batch.clone()).await.is_err() {
                        // A writer stopped: its error is reported below.
                        return Ok(());
                    }
                }
                progress(position, head);
            }
            Ok(())
        };
        let outcome = reading.await;
        drop(senders);
        while let Some(written) = writers.join_next().await {
            match written {
                Ok(result) => result?,
                Err(panic) => {
                    return Err(ProjectionError::Event {
                        position,
                        detail: format!("a rebuild writer failed: {panic}"),
                    });
                }
            }
        }
        outcome?;
        Ok((position, read))
    }

    /// The end of a rebuild: takes the registry row (the live projector waits on it),
    /// applies what arrived since `position`, points the views at the new tables, then
    /// drops the old ones. Returns the events applied.
    async fn swap(
        &self,
        projection: &dyn Projection,
        current: &Registered,
        generation: i64,
        mut position: u64,
    ) -> Result<u64, ProjectionError> {
        let name = projection.name();
        let g = suffix(generation);
        let mut applied = 0u64;
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
            applied += events.len() as u64;
            projection.apply(&mut tx, &g, &Batch::new(events)?).await?;
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
        Self::point_views(&mut tx, projection, generation).await?;
        tx.commit().await?;
        let mut tx = self.begin().await?;
        for table in projection.tables() {
            let old = format!("{table}{}", suffix(current.generation));
            execute(&mut tx, &format!("DROP TABLE IF EXISTS {old}"), &[]).await?;
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Keeps every projection caught up until `stop` turns true, waking on the store's
    /// wake-ups and every [`POLL_EVERY`]. On Postgres each projection runs in its own
    /// task (a slow one never delays the balances); SQLite has one writer at a time, so
    /// one task runs them all in turn. On Postgres a projection is only run while
    /// this process holds its lease; others stand by and take over when it dies.
    pub async fn run(
        self: Arc<Self>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        self.health.expect(PROJECTOR_ROLE);
        let lease = match self.backend {
            Backend::Postgres => Some(Arc::new(tokio::sync::Mutex::new(Lease::new(
                self.pool.clone(),
            )))),
            Backend::Sqlite => None,
        };
        let names: Vec<&'static str> = self.projections.iter().map(|p| p.name()).collect();
        let groups: Vec<Vec<&'static str>> = match self.backend {
            Backend::Postgres => names.into_iter().map(|name| vec![name]).collect(),
            Backend::Sqlite => vec![names],
        };
        let mut tasks = tokio::task::JoinSet::new();
        for group in groups {
            let (this, lease, stop) = (self.clone(), lease.clone(), stop.clone());
            tasks.spawn(async move { this.run_group(&group, lease, stop).await });
        }
        let mut outcome = Ok(());
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(error)) => outcome = Err(error),
                Err(failed) => {
                    outcome = Err(ProjectionError::Event {
                        position: 0,
                        detail: format!("a projection task failed: {failed}"),
                    })
                }
            }
        }
        outcome
    }

    async fn run_group(
        &self,
        names: &[&'static str],
        lease: Option<Arc<tokio::sync::Mutex<Lease>>>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ProjectionError> {
        let mut wakeups = self.store.subscribe();
        let mut rows: std::collections::HashMap<&str, Registered> = Default::default();
        let mut last_wake = std::time::Instant::now();
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            self.health.beat(PROJECTOR_ROLE);
            // Whether appends came faster than this runner's rounds.
            let mut busy = false;
            for &name in names {
                let held = match &lease {
                    Some(lease) => lease.lock().await.hold(name).await,
                    None => true,
                };
                if !held {
                    continue;
                }
                loop {
                    let at = match rows.remove(name) {
                        Some(at) => at,
                        None => match self.registered(name).await {
                            Ok(Some(at)) => at,
                            Ok(None) => return Err(ProjectionError::Unknown(name.to_string())),
                            Err(error) => {
                                tracing::warn!(%error, projection = name, "projection registry unreadable; retrying");
                                break;
                            }
                        },
                    };
                    match self.step_from(name, at).await {
                        Ok((n, row)) => {
                            busy |= n > 1;
                            let moved_elsewhere = row.is_none();
                            if let Some(row) = row {
                                rows.insert(name, row);
                            }
                            if n < BATCH_EVENTS_MAX && !moved_elsewhere {
                                break;
                            }
                        }
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
                    } else if busy || last_wake.elapsed() < BUSY_WAKES_WITHIN {
                        // Appends come faster than rounds: let a few gather into one
                        // batch, so each read model commits once per few ms rather than
                        // once per append. At a calm rate, each append is applied at once.
                        tokio::time::sleep(GATHER_FOR).await;
                    }
                    last_wake = std::time::Instant::now();
                }
                _ = tokio::time::sleep(POLL_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// How long a busy runner, once woken, waits for more appends before it reads the log.
pub const GATHER_FOR: Duration = Duration::from_millis(3);

/// A runner woken again this soon after its last wake-up is busy (appends come at
/// more than ~500 a second).
pub const BUSY_WAKES_WITHIN: Duration = Duration::from_millis(2);

/// [`Projector::begin`] on a pool.
async fn begin_on(
    pool: &AnyPool,
    backend: Backend,
) -> Result<sqlx::Transaction<'static, Any>, ProjectionError> {
    Ok(match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => {
            let mut tx = pool.begin().await?;
            execute(&mut tx, "SET LOCAL synchronous_commit = off", &[]).await?;
            tx
        }
    })
}

/// Held while a rebuild runs; released when dropped (or when the process ends).
enum RebuildLock {
    /// Postgres: the session holding the advisory lock (closed on drop).
    #[allow(dead_code)]
    Session(PoolConnection<Any>),
    /// SQLite: the locked file (unlocked on close).
    #[allow(dead_code)]
    File(std::fs::File),
}

/// The role name the projector's runners beat under.
pub const PROJECTOR_ROLE: &str = "projector";

/// Postgres session advisory locks, one per projection, on one connection: held until
/// the connection ends, so a standby's `pg_try_advisory_lock` succeeds once the holder
/// dies.
///
/// A lease is only as alive as its session: when the server restarts or the connection
/// drops, its locks are gone, and another process may take them. So a held lease is
/// re-checked (its connection answers) every time it is asked for; a dead one is
/// forgotten, a new connection opened and the locks taken again if they are free. A
/// database that does not answer means "not held": the caller does no work and asks
/// again on its next round, so a restart is waited out, never fatal.
pub struct Lease {
    pool: AnyPool,
    conn: Option<PoolConnection<Any>>,
    held: Vec<String>,
}

impl Lease {
    /// A lease holder taking its connection from `pool` when first asked. The
    /// connection is closed when the lease is dropped rather than returned to the
    /// pool, where it would keep holding the locks for nobody.
    pub fn new(pool: AnyPool) -> Self {
        Self {
            pool,
            conn: None,
            held: vec![],
        }
    }

    /// Whether this process holds `name`'s lease now (taking it if it is free).
    pub async fn hold(&mut self, name: &str) -> bool {
        match self.try_hold(name).await {
            Ok(held) => held,
            Err(error) => {
                if !self.held.is_empty() {
                    tracing::warn!(%error, leases = ?self.held, "lost the leases' session; standing by until the database answers");
                } else {
                    tracing::debug!(%error, projection = name, "cannot ask for a lease");
                }
                self.conn = None;
                self.held.clear();
                false
            }
        }
    }

    async fn try_hold(&mut self, name: &str) -> Result<bool, ProjectionError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let mut conn = self.pool.acquire().await?;
                conn.close_on_drop();
                self.held.clear();
                self.conn.insert(conn)
            }
        };
        if self.held.iter().any(|h| h == name) {
            // The locks live as long as this session: if it answers, they are ours.
            sqlx::query("SELECT 1").execute(&mut **conn).await?;
            return Ok(true);
        }
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lease_key(name))
            .fetch_one(&mut **conn)
            .await?;
        if got {
            tracing::info!(projection = name, "holding the lease");
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
