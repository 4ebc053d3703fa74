//! Leases: which process does a projector's or reactor's work on Postgres.

use super::*;

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
pub(crate) fn lease_key(name: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"tally.projection.".iter().chain(name.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}
