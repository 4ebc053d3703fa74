//! How fast the poster sends: its settings, and its own pacing within Telegram's
//! limits (about 30 messages/s per bot, 1/s per chat, 20/min per group).

use std::time::Duration;

use tally_domain::cycle::{self, CYCLE_SECONDS_DEFAULT};
use teloxide::Bot;

use crate::Settings;

/// How the poster paces its cycles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PosterSettings {
    /// Seconds per cycle (at least [`cycle::CYCLE_SECONDS_MIN`]).
    pub cycle_seconds: u64,
    /// The posts of a cycle are spread over its first this many seconds (at most the
    /// cycle; 0: as fast as Telegram's limits allow).
    pub spread_seconds: u64,
    /// Posts may use Telegram's paid broadcasts (`allow_paid_broadcast`: up to 1000
    /// messages/s, paid in Stars from the bot's balance) for large cycles.
    pub allow_paid_broadcast: bool,
    /// Posts per second at most, sent evenly spaced (Telegram allows a bot about 30
    /// messages/s; evenly spaced sends arrive within it even when the network bunches
    /// them a little, where bursts of 30 do not).
    pub per_second: u32,
    /// Least time between two posts to one chat ([`CHAT_GAP`] by default).
    pub chat_gap: Duration,
}

/// Posts per second by default: Telegram's 30/s per bot, less a margin.
pub const PER_SECOND_DEFAULT: u32 = 28;

impl PosterSettings {
    /// Cycles of `cycle_seconds`, posts spread over the whole cycle, no paid
    /// broadcasts.
    pub fn new(cycle_seconds: u64) -> Self {
        let cycle_seconds = cycle_seconds.max(cycle::CYCLE_SECONDS_MIN);
        Self {
            cycle_seconds,
            spread_seconds: cycle_seconds,
            allow_paid_broadcast: false,
            per_second: PER_SECOND_DEFAULT,
            chat_gap: CHAT_GAP,
        }
    }
}

impl Default for PosterSettings {
    fn default() -> Self {
        Self::new(CYCLE_SECONDS_DEFAULT)
    }
}

/// The poster's own pacing within Telegram's limits (it does not go through the
/// bot's throttle, which releases requests in bursts every quarter second: evenly
/// spaced sends stay within a per-second limit wherever the second is cut).
#[derive(Default)]
pub(super) struct Pacing {
    /// The next overall send slot.
    next: Option<tokio::time::Instant>,
    /// The earliest next send per chat.
    chats: std::collections::HashMap<i64, tokio::time::Instant>,
}

/// Least time between two posts to one chat by default: Telegram allows about 1
/// message/s per chat and 20/min per group, so 3 s keeps within both.
pub const CHAT_GAP: Duration = Duration::from_secs(3);

/// The bot client the poster sends with: Telegram's API (at `settings.api_url`),
/// without the throttle (the poster paces itself).
pub fn client(settings: &Settings) -> Bot {
    let bot = Bot::new(&settings.token);
    match &settings.api_url {
        Some(url) => bot.set_api_url(url.clone()),
        None => bot,
    }
}

impl Pacing {
    /// No send before `wait` from now (Telegram's `retry_after`).
    pub(super) fn hold(&mut self, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        self.next = Some(self.next.map_or(until, |next| next.max(until)));
    }

    /// The time the next post to `chat` may leave (and that time taken): the next
    /// overall slot (`1 / per_second` after the last), no sooner than `chat_gap`
    /// after the chat's last.
    pub(super) fn turn(&mut self, chat: i64, settings: &PosterSettings) -> tokio::time::Instant {
        let gap = Duration::from_secs(1) / settings.per_second.max(1);
        let now = tokio::time::Instant::now();
        let slot = self.next.map_or(now, |next| next.max(now));
        self.next = Some(slot + gap);
        let at = self.chats.get(&chat).map_or(slot, |free| slot.max(*free));
        if self.chats.len() > 100_000 {
            self.chats.retain(|_, free| *free > now);
        }
        self.chats.insert(chat, at + settings.chat_gap);
        at
    }
}
