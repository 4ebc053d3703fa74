//! Which background roles of this process are alive. Each background loop (the
//! projector's runners, the reactors) says once that it runs ([`Health::expect`]) and
//! then beats once per round, whatever the round came to: a loop that waits out a
//! database restart still beats; one that died or hangs stops beating. `/readyz` reads
//! it, so a process whose background work stopped is not reported ready.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A role whose last beat is older than this is not running.
pub const BEAT_STALE_AFTER: Duration = Duration::from_secs(30);

/// The background roles of one process and when each last went round its loop.
#[derive(Debug, Default)]
pub struct Health {
    beats: Mutex<BTreeMap<&'static str, Instant>>,
}

impl Health {
    /// `role` runs in this process from now on (a beat).
    pub fn expect(&self, role: &'static str) {
        self.beat(role);
    }

    /// `role` went round its loop.
    pub fn beat(&self, role: &'static str) {
        let mut beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        beats.insert(role, Instant::now());
    }

    /// The roles of this process whose last beat is older than `after`, with its age.
    pub fn stale(&self, after: Duration) -> Vec<(&'static str, Duration)> {
        let beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        beats
            .iter()
            .map(|(role, at)| (*role, at.elapsed()))
            .filter(|(_, age)| *age > after)
            .collect()
    }

    /// The roles this process runs.
    pub fn roles(&self) -> Vec<&'static str> {
        let beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        beats.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_that_stops_beating_is_stale() {
        let health = Health::default();
        assert!(
            health.stale(Duration::ZERO).is_empty(),
            "no roles, nothing stale"
        );
        health.expect("reactor");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(health.stale(Duration::from_millis(10))[0].0, "reactor");
        health.beat("reactor");
        assert!(health.stale(Duration::from_millis(10)).is_empty());
        assert_eq!(health.roles(), ["reactor"]);
    }
}
