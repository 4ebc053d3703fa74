//! Rebuilding read models: a new generation filled aside from the log while the old
//! one keeps answering, then swapped in at once; one rebuild at a time per database.

use super::*;

impl Projector {
    /// Waits for this database's rebuild lock: one rebuild at a time, across
    /// processes, so two never fill the same new generation (additive read models
    /// would count every event twice). Postgres: a session advisory lock on a
    /// connection of its own; SQLite: an exclusive lock on a file beside the
    /// database. Both end with the process.
    pub(crate) async fn rebuild_lock(&self) -> Result<RebuildLock, ProjectionError> {
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
    /// secondary indexes; [`Self::build_indexes`] builds them before they are read. Returns
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
    pub(crate) async fn build_indexes(
        conn: &mut AnyConnection,
        deferred: &[String],
    ) -> Result<(), ProjectionError> {
        for statement in deferred {
            execute(conn, statement, &[]).await?;
        }
        Ok(())
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

    pub(crate) async fn rebuild_many_locked(
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
            Self::build_indexes(&mut tx, deferred).await?;
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
    pub(crate) async fn fill_aside(
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
    pub(crate) async fn swap(
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
}

/// Held while a rebuild runs; released when dropped (or when the process ends).
pub(crate) enum RebuildLock {
    /// Postgres: the session holding the advisory lock (closed on drop).
    #[allow(dead_code)]
    Session(PoolConnection<Any>),
    /// SQLite: the locked file (unlocked on close).
    #[allow(dead_code)]
    File(std::fs::File),
}
