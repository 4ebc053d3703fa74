//! The clock the command services decide with (see [`Clock`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Where the command services read the time a decision is made at: the system clock
/// (at the store's precision) in production; a test or a simulation may set its own,
/// so a rule about time (a hold's expiry, a refund window) is exercised without
/// waiting for it. Every decision of a process reads the same clock.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self(Arc::new(tally_store::event::now_micros))
    }

    /// A clock that reads `now` (e.g. a test's shared, movable time).
    pub fn from_fn(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The time now, at the store's precision (microseconds).
    pub fn now(&self) -> DateTime<Utc> {
        use chrono::SubsecRound;
        (self.0)().trunc_subsecs(6)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}
