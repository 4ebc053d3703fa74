//! Running the projectors: one runner per group, woken by appends (gathering a busy
//! burst), polling as a fallback, beating for `/readyz`; and waiting for a read model
//! to reach a position (`?min_position`).

use super::*;

/// How long a busy runner, once woken, waits for more appends before it reads the log.
pub const GATHER_FOR: Duration = Duration::from_millis(3);

/// A runner woken again this soon after its last wake-up is busy (appends come at
/// more than ~500 a second).
pub const BUSY_WAKES_WITHIN: Duration = Duration::from_millis(2);

impl Projector {
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

    pub(crate) async fn run_group(
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
