//! Posting cycles: when the poster posts a slot, and the ids of its attempts.
//!
//! Cycles are numbered from a fixed epoch (the Unix epoch), so every process (and
//! every restart) agrees which cycle it is without asking anyone: cycle `n` of a
//! period `p` runs from `n·p` to `(n+1)·p` seconds after 1970-01-01T00:00:00Z.
//!
//! Within a cycle the posts are spread evenly rather than sent in a burst at its
//! start ([`send_at`]): the `k`-th of `n` posts goes at `start + k·w/n` (`w`: the
//! spread window, the whole cycle unless the operator shortens it), so a cycle of
//! many posts stays within Telegram's limits and a channel does not see every ad at
//! once.
//!
//! A post attempt's id derives from (cycle, destination, attempt number) within its
//! slot's stream ([`attempt_id`]), so a poster that runs the same attempt again (a
//! redelivery, a restart) records it once: the log refuses the id twice.

use chrono::{DateTime, TimeZone, Utc};

use crate::slot::Destination;

/// The default posting cycle: every four hours.
pub const CYCLE_SECONDS_DEFAULT: u64 = 4 * 60 * 60;

/// Shortest cycle a configuration may set (a minute; shorter only floods chats).
pub const CYCLE_SECONDS_MIN: u64 = 60;

/// The cycle `at` falls in, for cycles of `period_seconds` (at least 1).
pub fn cycle_at(at: DateTime<Utc>, period_seconds: u64) -> u64 {
    let seconds = u64::try_from(at.timestamp()).unwrap_or(0);
    seconds / period_seconds.max(1)
}

/// When cycle `cycle` starts.
pub fn cycle_start(cycle: u64, period_seconds: u64) -> DateTime<Utc> {
    let seconds = cycle.saturating_mul(period_seconds.max(1));
    let seconds = i64::try_from(seconds).unwrap_or(i64::MAX);
    Utc.timestamp_opt(seconds, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// When the `k`-th (from 0) of `n` posts of a cycle is sent: spread evenly over the
/// first `spread_seconds` of the cycle (at most the cycle), the first at its start.
pub fn send_at(
    cycle: u64,
    period_seconds: u64,
    spread_seconds: u64,
    k: u64,
    n: u64,
) -> DateTime<Utc> {
    let start = cycle_start(cycle, period_seconds);
    let n = n.max(1);
    let window = spread_seconds.min(period_seconds.max(1));
    let offset_millis = u128::from(window) * 1000 * u128::from(k.min(n - 1)) / u128::from(n);
    let offset = i64::try_from(offset_millis).unwrap_or(i64::MAX);
    start + chrono::Duration::milliseconds(offset)
}

/// The id of attempt number `attempt` (from 1) to post a slot to `destination` in
/// `cycle`; unique within the slot's stream, and the same however often it is
/// computed.
pub fn attempt_id(cycle: u64, destination: &Destination, attempt: u32) -> String {
    format!(
        "post:{cycle}:{}:{}:{attempt}",
        destination.chat_id,
        destination.topic_id.unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn every_process_agrees_on_the_cycle() {
        let four_hours = CYCLE_SECONDS_DEFAULT;
        let cycle = cycle_at(at("2026-12-07T13:59:59Z"), four_hours);
        assert_eq!(cycle, cycle_at(at("2026-12-07T12:00:00Z"), four_hours));
        assert_eq!(cycle + 1, cycle_at(at("2026-12-07T16:00:00Z"), four_hours));
        assert_eq!(cycle_start(cycle, four_hours), at("2026-12-07T12:00:00Z"));
        assert_eq!(cycle_at(at("1970-01-01T00:00:00Z"), four_hours), 0);
    }

    #[test]
    fn posts_are_spread_over_the_cycle() {
        let period = 3600;
        let cycle = 10;
        let start = cycle_start(cycle, period);
        assert_eq!(send_at(cycle, period, period, 0, 4), start);
        assert_eq!(
            send_at(cycle, period, period, 1, 4),
            start + chrono::Duration::minutes(15)
        );
        assert_eq!(
            send_at(cycle, period, period, 3, 4),
            start + chrono::Duration::minutes(45)
        );
        // Past the last, and with no posts: never beyond the cycle.
        assert!(send_at(cycle, period, period, 9, 4) < cycle_start(cycle + 1, period));
        assert_eq!(send_at(cycle, period, period, 0, 0), start);
        // Within a shorter window: the same order, closer together; 0: all at once.
        assert_eq!(
            send_at(cycle, period, 600, 3, 4),
            start + chrono::Duration::seconds(450)
        );
        assert_eq!(send_at(cycle, period, 0, 3, 4), start);
    }

    #[test]
    fn an_attempt_id_names_its_cycle_destination_and_number() {
        let chat = Destination {
            chat_id: -100_123,
            topic_id: None,
        };
        let topic = Destination {
            chat_id: -100_123,
            topic_id: Some(7),
        };
        assert_eq!(attempt_id(5, &chat, 1), "post:5:-100123:0:1");
        assert_eq!(attempt_id(5, &topic, 2), "post:5:-100123:7:2");
        assert_ne!(attempt_id(5, &chat, 1), attempt_id(6, &chat, 1));
    }
}
