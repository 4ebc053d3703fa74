//! The poster: each cycle, every due ad slot is posted through the bot to each of its
//! destinations, once.
//!
//! A post is recorded before it is sent (`StartPost`) and its outcome after
//! (`RecordAttempt`, same attempt id, derived from slot, cycle, destination and attempt
//! number): a poster that dies between the two leaves a start with no outcome, and the
//! slot's rules let no other post to that destination start in the cycle (a duplicate
//! ad is worse than a late one; see `tally_domain::slot`). Two posters, in one process
//! or several, cannot both post a destination in a cycle: the second's start is
//! refused by the log as it stands.
//!
//! Failures are handled by their class ([`crate::post_errors`]): Telegram's
//! `retry_after` is waited exactly, network and server errors are retried with
//! backoff and jitter within a bound, and everything else is a failed attempt on
//! record (with its class as `error_kind`).
//!
//! A destination the bot was removed from (or lost its rights in), or whose topic is
//! closed, is paused (`slot.destination_paused`): no retry loop, nothing posted there
//! until the owner configures the slot again.
//!
//! A group that became a supergroup (`migrate_to_chat_id`) is followed: the
//! destination moves to the new chat (`slot.destination_moved`) and the post goes
//! there.
//!
//! A forum topic that was deleted falls back to the forum's General topic, which is
//! posted to *without* `message_thread_id` (Telegram refuses General's id as a thread);
//! for a chat that is no longer a forum, the same request reaches the plain chat. The
//! destination moves there for good (`slot.destination_moved`, reason
//! `topic_deleted`), so the tier used is on record and the owner is told once.
//!
//! The operator's campaigns are posted in the same pass: each cycle, the rotation's
//! post for it (post `k` of `n` when `cycle mod n = k`) goes to the campaign's
//! channels, through the slot that posts it, with the same guarantees.
//!
//! A post sent with no answer (timed out once connected) is recorded with outcome
//! `unknown`: Telegram may have posted it, so nothing more goes to that destination in
//! the cycle.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use tally_domain::cycle;
use tally_domain::slot::{Attempt, Destination, Outcome, SlotCommand, SlotCoverage};
use tally_domain::values::SlotId;
use tally_ledger::Request;
use tally_store::{Actor, ActorKind, Metadata};
use teloxide::prelude::Requester;

use crate::post_errors::{PostError, classify};

mod due;
mod pace;
mod send;

use crate::{BotError, Context};
use pace::Pacing;
pub use pace::{CHAT_GAP, PER_SECOND_DEFAULT, PosterSettings, client};
use teloxide::Bot;

/// Most attempts at one destination in one cycle (then the failure stands until the
/// next cycle).
pub const ATTEMPTS_PER_CYCLE_MAX: u32 = 5;

/// Most posts in flight at once in a pass (the throttle holds them to Telegram's
/// limits; more in flight only queue there).
pub const IN_FLIGHT: usize = 24;

/// How often the poster looks again for due slots (slots configured or paid during a
/// cycle are due in it too).
pub const PASS_EVERY: Duration = Duration::from_secs(5);

/// Longest `retry_after` waited within a cycle (beyond it, the attempt fails).
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// What one pass over a cycle did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Destinations posted to.
    pub posted: u64,
    /// Destinations whose attempts failed this pass.
    pub failed: u64,
    /// Destinations skipped: posted already, or a post with an unknown outcome.
    pub skipped: u64,
    /// Destinations sent to with no answer (outcome `unknown`; not sent again this
    /// cycle).
    pub unknown: u64,
    /// Telegram's `retry_after` waits.
    pub waited: u64,
}

/// How one destination went.
enum Posted {
    Yes,
    Failed,
    Skipped,
    Unknown,
}

/// The poster.
pub struct Poster {
    context: Arc<Context>,
    bot: Bot,
    settings: PosterSettings,
    username: std::sync::OnceLock<String>,
    /// When the next posts may leave: overall and per chat.
    pacing: tokio::sync::Mutex<Pacing>,
}

fn metadata() -> Metadata {
    Metadata::by(Actor::new(ActorKind::System, "poster"))
}

impl Poster {
    /// A poster sending through `bot`, paced as `settings` say.
    pub fn new(context: Arc<Context>, bot: Bot, settings: PosterSettings) -> Self {
        let cycle_seconds = settings.cycle_seconds.max(cycle::CYCLE_SECONDS_MIN);
        Self {
            context,
            bot,
            settings: PosterSettings {
                cycle_seconds,
                spread_seconds: settings.spread_seconds.min(cycle_seconds),
                ..settings
            },
            username: std::sync::OnceLock::new(),
            pacing: tokio::sync::Mutex::new(Pacing::default()),
        }
    }

    /// A poster with the default cycle.
    pub fn with_default_cycle(context: Arc<Context>, bot: Bot) -> Self {
        Self::new(context, bot, PosterSettings::default())
    }

    /// Posts every slot due in `cycle` to each destination it has not reached yet.
    /// With `spread`, the posts are spaced over the cycle ([`cycle::send_at`]);
    /// without, they go at once (tests, catching up).
    pub async fn post_cycle(&self, cycle: u64, spread: bool) -> Result<CycleReport, BotError> {
        let mut report = CycleReport::default();
        let posts = due::posts(&self.context, cycle).await?;
        let n = posts.len() as u64;
        // Up to IN_FLIGHT posts at once (each waits for its time, then for its turn
        // in the pacing: Telegram's limits, not a queue of one, set the pace).
        let mut results = futures::stream::iter(posts.into_iter().enumerate())
            .map(|(k, (slot_id, destination))| async move {
                // Its time in the cycle: spread, or the cycle's start.
                let scheduled = match spread {
                    true => cycle::send_at(
                        cycle,
                        self.settings.cycle_seconds,
                        self.settings.spread_seconds,
                        k as u64,
                        n,
                    ),
                    false => cycle::cycle_start(cycle, self.settings.cycle_seconds),
                };
                if spread {
                    let wait = (scheduled - self.context.ledgers.now())
                        .to_std()
                        .unwrap_or_default();
                    tokio::time::sleep(wait).await;
                }
                let slot_id = SlotId::new(slot_id)?;
                let posted = self.post_one(&slot_id, destination, cycle).await;
                // How late it went against that time.
                let late = (self.context.ledgers.now() - scheduled)
                    .num_milliseconds()
                    .max(0);
                metrics::gauge!("tally_poster_lag_seconds").set(late as f64 / 1000.0);
                posted
            })
            .buffer_unordered(IN_FLIGHT);
        let mut done = 0u64;
        while let Some(result) = results.next().await {
            let (posted, waited) = result?;
            report.waited += waited;
            done += 1;
            let outcome = match posted {
                Posted::Yes => {
                    report.posted += 1;
                    "posted"
                }
                Posted::Failed => {
                    report.failed += 1;
                    "failed"
                }
                Posted::Skipped => {
                    report.skipped += 1;
                    "skipped"
                }
                Posted::Unknown => {
                    report.unknown += 1;
                    "unknown"
                }
            };
            metrics::counter!("tally_poster_destinations_total", "outcome" => outcome).increment(1);
            metrics::gauge!("tally_poster_cycle_progress_ratio").set(done as f64 / n.max(1) as f64);
        }
        metrics::gauge!("tally_poster_cycle").set(cycle as f64);
        Ok(report)
    }

    /// Posts the slot (as its log says now: text or photo, buttons) to `destination`
    /// in `cycle`: start, send, record;
    /// again while the failure may pass, within [`ATTEMPTS_PER_CYCLE_MAX`].
    async fn post_one(
        &self,
        slot_id: &SlotId,
        destination: Destination,
        cycle: u64,
    ) -> Result<(Posted, u64), BotError> {
        let mut waited = 0;
        let slots = &self.context.ledgers.slots;
        let mut backoff = Duration::from_millis(200);
        let mut destination = destination;
        loop {
            let loaded = slots.load(slot_id).await?;
            if loaded.state.paused.contains_key(&destination) {
                return Ok((Posted::Skipped, waited));
            }
            let number = loaded
                .state
                .attempts
                .get(&(cycle, destination))
                .copied()
                .unwrap_or(0)
                + 1;
            if number > ATTEMPTS_PER_CYCLE_MAX {
                return Ok((Posted::Failed, waited));
            }
            let attempt_id = cycle::attempt_id(cycle, &destination, number);
            let started = slots
                .execute(Request {
                    key: slot_id.clone(),
                    command: SlotCommand::StartPost {
                        attempt_id: attempt_id.clone(),
                        cycle,
                        destination,
                        coverage: SlotCoverage::Covered,
                    },
                    command_id: Some(format!("start:{attempt_id}")),
                    metadata: metadata(),
                })
                .await;
            match started {
                Ok(outcome) if !outcome.replayed => {}
                // Started before (by this poster before a crash, or another): its
                // outcome is unknown, so it is not sent again this cycle.
                Ok(_) => return Ok((Posted::Skipped, waited)),
                Err(error)
                    if matches!(
                        error.code(),
                        "conflict" | "already_posted" | "slot_not_active"
                    ) =>
                {
                    tracing::debug!(%slot_id, %destination, cycle, %error, "not posted");
                    return Ok((Posted::Skipped, waited));
                }
                Err(error) => return Err(error.into()),
            }
            let Some(config) = loaded.state.config.as_ref() else {
                return Ok((Posted::Skipped, waited));
            };
            let username = self.username().await;
            self.pace(destination.chat_id).await;
            let sent = send::post(
                &self.bot,
                self.settings.allow_paid_broadcast,
                &username,
                config,
                destination,
            )
            .await;
            let (outcome, message_id, failure) = match &sent {
                Ok(message) => (Outcome::Succeeded, Some(i64::from(message.id.0)), None),
                Err(error) => match classify(error) {
                    PostError::Unknown => (Outcome::Unknown, None, Some(PostError::Unknown)),
                    class => (Outcome::Failed, None, Some(class)),
                },
            };
            let retry_after = match &failure {
                Some(PostError::RetryAfter(wait)) => u32::try_from(wait.as_secs()).ok(),
                _ => None,
            };
            slots
                .execute(Request {
                    key: slot_id.clone(),
                    command: SlotCommand::RecordAttempt {
                        attempt: Attempt {
                            attempt_id: attempt_id.clone(),
                            cycle,
                            destination,
                            attempt: 0,
                            outcome,
                            message_id,
                            error_kind: failure.as_ref().map(|f| f.kind().to_string()),
                            retry_after,
                        },
                        coverage: SlotCoverage::Covered,
                    },
                    command_id: Some(format!("attempt:{attempt_id}")),
                    metadata: metadata(),
                })
                .await?;
            metrics::counter!(
                "tally_posts_total",
                "outcome" => match outcome {
                    Outcome::Succeeded => "succeeded",
                    Outcome::Failed => "failed",
                    Outcome::Unknown => "unknown",
                },
                "error_class" => failure.as_ref().map_or("none", PostError::kind)
            )
            .increment(1);
            match failure {
                None => return Ok((Posted::Yes, waited)),
                Some(PostError::Unknown) => {
                    tracing::warn!(%slot_id, %destination, "no answer from Telegram; not sent again this cycle");
                    return Ok((Posted::Unknown, waited));
                }
                Some(PostError::RetryAfter(wait)) if wait <= RETRY_AFTER_MAX => {
                    waited += 1;
                    metrics::counter!("tally_poster_retry_after_waits_total").increment(1);
                    tracing::info!(%slot_id, %destination, ?wait, "Telegram asks to wait");
                    // The bot is over a limit: no post of this poster leaves before the
                    // wait is over (not only this one), so it never spins on 429s.
                    self.pacing.lock().await.hold(wait);
                    tokio::time::sleep(wait).await;
                }
                Some(PostError::Transient) => {
                    let jitter = Duration::from_millis(u64::from(rand_jitter()) % 100);
                    tokio::time::sleep(backoff + jitter).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                // The group became a supergroup: the destination follows it, and the
                // post goes there (a new attempt, numbered in the new chat).
                Some(PostError::Migrated(chat_id)) => {
                    let to = Destination {
                        chat_id,
                        topic_id: destination.topic_id,
                    };
                    tracing::info!(%slot_id, from = %destination, %to, "chat migrated");
                    self.move_destination(slot_id, &attempt_id, destination, to, "chat_migrated")
                        .await?;
                    destination = to;
                }
                // The topic is gone: the forum's General topic (no thread id; the plain
                // chat if it is no longer a forum) from now on, posted to at once.
                Some(PostError::TopicGone) if destination.topic_id.is_some() => {
                    let to = Destination {
                        chat_id: destination.chat_id,
                        topic_id: None,
                    };
                    tracing::info!(%slot_id, from = %destination, %to, "topic deleted; falling back to General");
                    self.move_destination(slot_id, &attempt_id, destination, to, "topic_deleted")
                        .await?;
                    destination = to;
                }
                // Nothing will change until the owner fixes the chat: stop posting there.
                Some(class @ (PostError::Removed | PostError::TopicClosed)) => {
                    tracing::warn!(%slot_id, %destination, kind = class.kind(), "destination paused");
                    slots
                        .execute(Request {
                            key: slot_id.clone(),
                            command: SlotCommand::PauseDestination {
                                destination,
                                reason: class.kind().to_string(),
                            },
                            command_id: Some(format!("pause:{attempt_id}")),
                            metadata: metadata(),
                        })
                        .await?;
                    return Ok((Posted::Failed, waited));
                }
                Some(other) => {
                    tracing::warn!(%slot_id, %destination, kind = other.kind(), "post failed");
                    return Ok((Posted::Failed, waited));
                }
            }
        }
    }

    /// Waits for this post's turn: posts leave evenly spaced, at most `per_second`,
    /// and at most one per `chat_gap` to a chat.
    async fn pace(&self, chat: i64) {
        let at = self.pacing.lock().await.turn(chat, &self.settings);
        tokio::time::sleep_until(at).await;
    }

    /// The bot's username (for deep links), asked of Telegram once.
    async fn username(&self) -> String {
        if let Some(name) = self.username.get() {
            return name.clone();
        }
        match self.bot.get_me().await {
            Ok(me) => self
                .username
                .get_or_init(|| me.username().to_string())
                .clone(),
            Err(error) => {
                tracing::warn!(%error, "getMe failed: deep links are sent without the bot's name");
                String::new()
            }
        }
    }

    /// Records that `from` is now `to` (a no-op when recorded before).
    async fn move_destination(
        &self,
        slot_id: &SlotId,
        attempt_id: &str,
        from: Destination,
        to: Destination,
        reason: &str,
    ) -> Result<(), BotError> {
        let moved = self
            .context
            .ledgers
            .slots
            .execute(Request {
                key: slot_id.clone(),
                command: SlotCommand::MoveDestination {
                    from,
                    to,
                    reason: reason.to_string(),
                },
                command_id: Some(format!("move:{attempt_id}")),
                metadata: metadata(),
            })
            .await;
        match moved {
            Ok(_) => Ok(()),
            // The General topic (or the new chat) is a destination of the slot
            // already: nothing to move; the post goes there anyway.
            Err(error) if error.code() == "conflict" => {
                tracing::info!(%slot_id, %from, %to, %error, "not moved");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Posts each cycle as it comes, spread over it, until `stop` turns true.
    pub async fn run(&self, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), BotError> {
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let now = self.context.ledgers.now();
            let current = cycle::cycle_at(now, self.settings.cycle_seconds);
            let pass = self.post_cycle(current, true);
            tokio::select! {
                report = pass => match report {
                    Ok(report) => tracing::info!(cycle = current, ?report, "cycle posted"),
                    Err(error) => tracing::warn!(cycle = current, %error, "cycle failed; retrying"),
                },
                _ = stop.changed() => return Ok(()),
            }
            tokio::select! {
                _ = tokio::time::sleep(PASS_EVERY) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// A little randomness for backoff jitter, from the clock (no crate needed for it).
fn rand_jitter() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}
