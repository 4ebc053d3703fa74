//! The projector runtime: checkpoints, batches, generations, leases. This file keeps
//! the registry and one step of a projection; rebuilding (`runtime/rebuild.rs`),
//! running and waiting (`runtime/run.rs`) and leases (`runtime/lease.rs`) have their own.

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
use crate::*;

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

mod lease;
mod rebuild;
mod run;

pub(crate) use lease::lease_key;
pub use lease::{Lease, PROJECTOR_ROLE};

/// Declares a read model: a unit struct implementing [`Projection`] with its name,
/// version, schema file (under `schema/projections/`), tables, and the module's
/// function that applies a batch. Each read model states these once, in one place.
#[macro_export]
#[doc(hidden)]
macro_rules! read_model {
    (
        $(#[$doc:meta])*
        $model:ident {
            name: $name:literal,
            version: $version:literal,
            schema: $schema:literal,
            tables: [$($table:literal),* $(,)?],
            apply: $apply:path $(,)?
        }
    ) => {
        $(#[$doc])*
        pub struct $model;

        #[async_trait::async_trait]
        impl $crate::Projection for $model {
            fn name(&self) -> &'static str {
                $name
            }

            fn version(&self) -> i64 {
                $version
            }

            fn schema(&self) -> &'static str {
                include_str!(concat!("../../schema/projections/", $schema))
            }

            fn tables(&self) -> &'static [&'static str] {
                &[$($table),*]
            }

            async fn apply(
                &self,
                conn: &mut sqlx::AnyConnection,
                g: &str,
                batch: &$crate::Batch,
            ) -> Result<(), $crate::ProjectionError> {
                $apply(conn, g, batch).await
            }
        }
    };
}

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
        Arc::new(AccountsReadModel),
        Arc::new(HoldsReadModel),
        Arc::new(TrialBalanceReadModel),
        Arc::new(PaymentsReadModel),
        Arc::new(SubscriptionsReadModel),
        Arc::new(PostsReadModel),
        Arc::new(RefundsReadModel),
        Arc::new(DailyStatsReadModel),
        Arc::new(CampaignsReadModel),
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
}

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
