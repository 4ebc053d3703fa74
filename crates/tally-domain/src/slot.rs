//! The ad slot stream (`slot-<slot id>`): what a user advertises, where, and every
//! attempt to post it.
//!
//! A slot posts to each destination at most once per cycle: a second successful post
//! is refused, so a retried worker never spams a chat. Only slots within the owner's
//! active subscription may post; whether they are is a fact the caller reads from the
//! subscription and passes in ([`SlotCoverage`]).
//!
//! **A post whose outcome is unknown is not sent again in its cycle.** Telegram's
//! `sendMessage` has no idempotency key: a poster that dies between sending and
//! recording cannot tell whether the message went out. So a poster records that it
//! is about to send ([`SlotCommand::StartPost`], event `slot.post_started`) before it
//! sends, and the outcome after ([`SlotCommand::RecordAttempt`] with the same attempt
//! id). While a start has no outcome, no other post to that destination may start in
//! that cycle: a poster that restarts finds the start and skips the destination
//! (the ad is late, at the next cycle, rather than doubled in a customer's channel —
//! a duplicate ad is worse than a late one). A start whose outcome is recorded as
//! failed frees the destination for the next attempt.
//!
//! One file: the slot's state, commands, events, `decide` and `evolve` are the rule
//! book of one stream and are read together (what an ad may show is in `content`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::values::UserId;

/// Most destinations one slot posts to.
pub const DESTINATIONS_MAX: usize = 50;

/// Longest slot content, in characters (Telegram's message limit).
pub const CONTENT_CHARS_MAX: usize = 4096;

/// Whether a slot posts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotStatus {
    /// Posted each cycle while the owner's plan covers it.
    #[default]
    Active,
    /// Not posted until resumed (by its owner, or paused when a plan was lowered).
    Paused,
    /// Deleted by its owner: not posted, not counted against the plan.
    Removed,
}

/// A chat (and, in a forum, a topic) a slot posts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Destination {
    /// Telegram chat id (negative for groups and channels).
    pub chat_id: i64,
    /// Forum topic id, if the chat is a forum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<i64>,
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.topic_id {
            Some(topic) => write!(f, "chat {} topic {topic}", self.chat_id),
            None => write!(f, "chat {}", self.chat_id),
        }
    }
}

/// How a post attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Posted.
    Succeeded,
    /// Not posted.
    Failed,
    /// Sent, but whether Telegram posted it is not known (the request timed out after
    /// it was sent, or the answer could not be read). Like a start with no outcome,
    /// it keeps the destination from another post in its cycle.
    Unknown,
}

/// Whether the owner's subscription covers this slot now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotCoverage {
    /// Active, and the slot is within the plan's slots.
    Covered,
    /// No active subscription.
    NoSubscription,
    /// Active, but the owner has more slots than the plan gives and this is one too many.
    BeyondPlan,
}

/// A slot's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotConfig {
    /// Owner.
    pub user_id: UserId,
    /// What to post.
    pub content: String,
    /// Where.
    pub destinations: Vec<Destination>,
    /// A photo posted with the content as its caption: a Telegram `file_id` (from
    /// a photo the owner sent the bot) or an `https://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo: Option<String>,
    /// Link buttons under the post, one per row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<LinkButton>,
}

impl SlotConfig {
    /// Text only, no buttons.
    pub fn text(
        user_id: UserId,
        content: impl Into<String>,
        destinations: Vec<Destination>,
    ) -> Self {
        Self {
            user_id,
            content: content.into(),
            destinations,
            photo: None,
            buttons: Vec::new(),
        }
    }
}

/// One post attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The worker's id for this attempt (idempotent by it).
    pub attempt_id: String,
    /// The posting cycle.
    pub cycle: u64,
    /// Where.
    pub destination: Destination,
    /// 1 for the first attempt at this destination in this cycle, then 2, 3 …
    pub attempt: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// Telegram's message id, when posted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    /// Why it failed, e.g. `rate_limited`, `chat_not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Seconds Telegram asked to wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
}

/// A slot as its events made it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The configuration, once configured.
    pub config: Option<SlotConfig>,
    /// Destinations posted to, per cycle.
    pub posted: BTreeSet<(u64, Destination)>,
    /// Attempts made per cycle and destination.
    #[serde(with = "pairs")]
    pub attempts: BTreeMap<(u64, Destination), u32>,
    /// The last [`ATTEMPT_IDS_KEPT`] attempt ids recorded, oldest first: a re-send of
    /// one is a no-op here; an older one is answered from the log by the command
    /// service (its events' ids derive from the attempt id).
    pub attempt_ids: VecDeque<String>,
    /// The latest cycle attempted; `posted` and `attempts` keep the last
    /// [`CYCLES_KEPT`] cycles only, so the state stays small however long the slot runs.
    #[serde(default)]
    pub latest_cycle: u64,
    /// Posts started and not yet recorded, per cycle and destination: the attempt id
    /// (an outcome unknown until its attempt is recorded).
    #[serde(default, with = "pairs")]
    pub started: BTreeMap<(u64, Destination), String>,
    /// Destinations not posted to until the owner fixes them, with why (the bot was
    /// removed or lost its rights, the topic is closed). Configuring the slot again
    /// resumes them.
    #[serde(default, with = "pairs")]
    pub paused: BTreeMap<Destination, String>,
    /// Whether the slot posts at all.
    #[serde(default)]
    pub status: SlotStatus,
}

mod content;
mod pairs;

pub use content::{
    BUTTON_LABEL_CHARS_MAX, BUTTONS_MAX, CAPTION_CHARS_MAX, LINK_BYTES_MAX, LinkButton,
    check_content,
};

/// Attempt ids a slot's state remembers.
pub const ATTEMPT_IDS_KEPT: usize = 256;
/// Cycles a slot's state remembers; attempts for older cycles are refused.
pub const CYCLES_KEPT: u64 = 16;

/// What can be asked of a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotCommand {
    /// Set what and where (again with the same: a no-op).
    Configure(SlotConfig),
    /// About to send a post: refused while the destination has this cycle's post, or
    /// a start whose outcome is not recorded (re-sent with the same attempt id: a
    /// no-op).
    StartPost {
        /// The attempt's id (the one its outcome will be recorded with).
        attempt_id: String,
        /// The posting cycle.
        cycle: u64,
        /// Where.
        destination: Destination,
        /// Whether the owner's subscription covers the slot.
        coverage: SlotCoverage,
    },
    /// Stop posting to a destination until the owner fixes it (a no-op if paused
    /// already).
    PauseDestination {
        /// Which.
        destination: Destination,
        /// Why: the error class that showed it (`no_rights`, `topic_closed` …).
        reason: String,
    },
    /// The chat moved (Telegram upgraded a group to a supergroup with a new id): the
    /// destination is the new chat from now on (a no-op if moved already).
    MoveDestination {
        /// The destination as configured.
        from: Destination,
        /// The same place in the new chat, or (after its topic was deleted) the
        /// forum's General topic.
        to: Destination,
        /// Why: `chat_migrated` or `topic_deleted`.
        reason: String,
    },
    /// Stop posting the slot until resumed (a no-op if paused already).
    Pause {
        /// Why: `owner`, `plan_lowered` …
        reason: String,
    },
    /// Post the slot again (a no-op if active).
    Resume,
    /// Delete the slot: never posted again, not counted against the plan (a no-op if
    /// removed already). Configuring it again makes a new ad of it.
    Remove,
    /// Record a post attempt (the attempt number is assigned here).
    RecordAttempt {
        /// The attempt; its `attempt` field is ignored.
        attempt: Attempt,
        /// Whether the owner's subscription covers the slot.
        coverage: SlotCoverage,
    },
}

/// What happened to a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SlotEvent {
    /// Configured or reconfigured.
    #[serde(rename = "slot.configured")]
    Configured(SlotConfig),
    /// A post was attempted.
    #[serde(rename = "slot.post_attempted")]
    PostAttempted(Attempt),
    /// A destination moved: its chat to a new id, or its deleted topic to the
    /// forum's General topic (posted to without a topic id).
    #[serde(rename = "slot.destination_moved")]
    DestinationMoved {
        /// The destination as it was.
        from: Destination,
        /// The destination now.
        to: Destination,
        /// Why (`chat_migrated`, `topic_deleted`); absent on events from before it
        /// was recorded (all of which were chat migrations).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A destination is paused until the owner fixes it.
    #[serde(rename = "slot.destination_paused")]
    DestinationPaused {
        /// Which.
        destination: Destination,
        /// Why.
        reason: String,
    },
    /// The slot is not posted until resumed.
    #[serde(rename = "slot.paused")]
    Paused {
        /// Why.
        reason: String,
    },
    /// The slot is posted again (no data: `{}`).
    #[serde(rename = "slot.resumed")]
    Resumed {},
    /// The slot is deleted (no data: `{}`).
    #[serde(rename = "slot.removed")]
    Removed {},
    /// A post is about to be sent (its outcome follows as `slot.post_attempted`).
    #[serde(rename = "slot.post_started")]
    PostStarted {
        /// The attempt's id.
        attempt_id: String,
        /// The posting cycle.
        cycle: u64,
        /// Where.
        destination: Destination,
    },
}

/// Longest post attempt id, in bytes.
pub const ATTEMPT_ID_BYTES_MAX: usize = 128;

/// Checks a post attempt's id: not blank, at most [`ATTEMPT_ID_BYTES_MAX`] bytes, no
/// control characters (the poster's ids and an API caller's alike).
pub fn check_attempt_id(id: &str) -> Result<(), DomainError> {
    if id.trim().is_empty() || id.len() > ATTEMPT_ID_BYTES_MAX {
        return Err(DomainError::Validation(format!(
            "attempt_id must be 1 to {ATTEMPT_ID_BYTES_MAX} characters"
        )));
    }
    crate::values::check_text_chars("attempt_id", id)
}

/// Longest `error_kind` of an attempt: a short class name, not a message.
pub const ERROR_KIND_BYTES_MAX: usize = 64;

/// Decides what a command does to a slot.
pub fn decide(state: &Slot, command: &SlotCommand) -> Result<Vec<SlotEvent>, DomainError> {
    match command {
        SlotCommand::Configure(config) => {
            if config.destinations.is_empty() || config.destinations.len() > DESTINATIONS_MAX {
                return Err(DomainError::Validation(format!(
                    "a slot needs 1 to {DESTINATIONS_MAX} destinations"
                )));
            }
            check_content(config)?;
            match &state.config {
                Some(existing) if existing.user_id != config.user_id => Err(DomainError::Conflict(
                    "this slot belongs to another user".into(),
                )),
                // The same again is a no-op, unless it resumes a paused destination
                // or makes a removed slot a new ad.
                Some(existing)
                    if existing == config
                        && state.paused.is_empty()
                        && state.status != SlotStatus::Removed =>
                {
                    Ok(vec![])
                }
                _ => Ok(vec![SlotEvent::Configured(config.clone())]),
            }
        }
        SlotCommand::MoveDestination { from, to, reason } => {
            let config = state
                .config
                .as_ref()
                .ok_or_else(|| DomainError::Validation("the slot is not configured".into()))?;
            if !config.destinations.contains(from) {
                return match config.destinations.contains(to) {
                    true => Ok(vec![]),
                    false => Err(DomainError::Conflict(format!(
                        "{from} is not a destination of this slot"
                    ))),
                };
            }
            if config.destinations.contains(to) {
                return Err(DomainError::Conflict(format!(
                    "{to} is a destination of this slot already"
                )));
            }
            crate::values::check_text_chars("reason", reason)?;
            Ok(vec![SlotEvent::DestinationMoved {
                from: *from,
                to: *to,
                reason: Some(reason.clone()),
            }])
        }
        SlotCommand::Pause { reason } => {
            configured(state)?;
            crate::values::check_text_chars("reason", reason)?;
            match state.status {
                SlotStatus::Active => Ok(vec![SlotEvent::Paused {
                    reason: reason.clone(),
                }]),
                SlotStatus::Paused => Ok(vec![]),
                SlotStatus::Removed => Err(removed()),
            }
        }
        SlotCommand::Resume => {
            configured(state)?;
            match state.status {
                SlotStatus::Paused => Ok(vec![SlotEvent::Resumed {}]),
                SlotStatus::Active => Ok(vec![]),
                SlotStatus::Removed => Err(removed()),
            }
        }
        SlotCommand::Remove => {
            configured(state)?;
            match state.status {
                SlotStatus::Removed => Ok(vec![]),
                _ => Ok(vec![SlotEvent::Removed {}]),
            }
        }
        SlotCommand::PauseDestination {
            destination,
            reason,
        } => {
            let config = state
                .config
                .as_ref()
                .ok_or_else(|| DomainError::Validation("the slot is not configured".into()))?;
            if !config.destinations.contains(destination) {
                return Err(DomainError::Conflict(format!(
                    "{destination} is not a destination of this slot"
                )));
            }
            if state.paused.contains_key(destination) {
                return Ok(vec![]);
            }
            Ok(vec![SlotEvent::DestinationPaused {
                destination: *destination,
                reason: reason.clone(),
            }])
        }
        SlotCommand::StartPost {
            attempt_id,
            cycle,
            destination,
            coverage,
        } => {
            let config = state
                .config
                .as_ref()
                .ok_or_else(|| DomainError::Validation("the slot is not configured".into()))?;
            check_attempt_id(attempt_id)?;
            let key = (*cycle, *destination);
            if state.started.get(&key) == Some(attempt_id) {
                return Ok(vec![]);
            }
            check_attempt(state, config, *cycle, destination, *coverage)?;
            check_posting(state)?;
            if let Some(reason) = state.paused.get(destination) {
                return Err(DomainError::Conflict(format!(
                    "{destination} is paused ({reason}) until the owner fixes it and configures the slot again"
                )));
            }
            if let Some(unknown) = state.started.get(&key) {
                return Err(DomainError::Conflict(format!(
                    "the post {unknown} to {destination} in cycle {cycle} has no recorded \
                     outcome; it is not sent again this cycle (a duplicate ad is worse than \
                     a late one)"
                )));
            }
            Ok(vec![SlotEvent::PostStarted {
                attempt_id: attempt_id.clone(),
                cycle: *cycle,
                destination: *destination,
            }])
        }
        SlotCommand::RecordAttempt { attempt, coverage } => {
            let config = state
                .config
                .as_ref()
                .ok_or_else(|| DomainError::Validation("the slot is not configured".into()))?;
            if state.attempt_ids.contains(&attempt.attempt_id) {
                return Ok(vec![]);
            }
            check_attempt_id(&attempt.attempt_id)?;
            if let Some(kind) = &attempt.error_kind {
                let ok = (1..=ERROR_KIND_BYTES_MAX).contains(&kind.len())
                    && kind
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b));
                if !ok {
                    return Err(DomainError::Validation(format!(
                        "error_kind must be 1 to {ERROR_KIND_BYTES_MAX} letters, digits or `_-.:` \
                         (e.g. rate_limited, chat_not_found)"
                    )));
                }
            }
            check_attempt(
                state,
                config,
                attempt.cycle,
                &attempt.destination,
                *coverage,
            )?;
            let key = (attempt.cycle, attempt.destination);
            // The outcome of a post started before a pause is still recorded.
            if state.started.get(&key) != Some(&attempt.attempt_id) {
                check_posting(state)?;
            }
            let number = state.attempts.get(&key).copied().unwrap_or(0) + 1;
            Ok(vec![SlotEvent::PostAttempted(Attempt {
                attempt: number,
                ..attempt.clone()
            })])
        }
    }
}

/// The slot's configuration, or why there is none.
fn configured(state: &Slot) -> Result<&SlotConfig, DomainError> {
    state
        .config
        .as_ref()
        .ok_or_else(|| DomainError::Validation("the slot is not configured".into()))
}

fn removed() -> DomainError {
    DomainError::Conflict("the slot is deleted; configure it again to make a new ad".into())
}

/// A post may start only while the slot is active.
fn check_posting(state: &Slot) -> Result<(), DomainError> {
    match state.status {
        SlotStatus::Active => Ok(()),
        SlotStatus::Paused => Err(DomainError::SlotNotActive(
            "the slot is paused; resume it to post".into(),
        )),
        SlotStatus::Removed => Err(DomainError::SlotNotActive("the slot is deleted".into())),
    }
}

/// What every post to `destination` in `cycle` must pass: the cycle is not over, the
/// destination is the slot's, the owner's plan covers the slot, and the destination
/// has no successful post in the cycle yet.
fn check_attempt(
    state: &Slot,
    config: &SlotConfig,
    cycle: u64,
    destination: &Destination,
    coverage: SlotCoverage,
) -> Result<(), DomainError> {
    if cycle.saturating_add(CYCLES_KEPT) < state.latest_cycle {
        return Err(DomainError::Conflict(format!(
            "cycle {cycle} is over: attempts are recorded for the last {CYCLES_KEPT} cycles (now {})",
            state.latest_cycle
        )));
    }
    if !config.destinations.contains(destination) {
        return Err(DomainError::Conflict(format!(
            "{destination} is not a destination of this slot"
        )));
    }
    match coverage {
        SlotCoverage::Covered => {}
        SlotCoverage::NoSubscription => {
            return Err(DomainError::SlotNotActive(
                "the owner has no active subscription".into(),
            ));
        }
        SlotCoverage::BeyondPlan => {
            return Err(DomainError::SlotNotActive(
                "the owner's plan has fewer slots than they configured".into(),
            ));
        }
    }
    let key = (cycle, *destination);
    if state.posted.contains(&key) {
        return Err(DomainError::AlreadyPosted {
            cycle,
            destination: destination.to_string(),
        });
    }
    Ok(())
}

/// Moves the slot's latest cycle to `cycle` if later, forgetting cycles older than
/// [`CYCLES_KEPT`] before it, so the state stays small however long the slot runs.
fn advance(state: &mut Slot, cycle: u64) {
    if cycle > state.latest_cycle {
        state.latest_cycle = cycle;
        let oldest = state.latest_cycle.saturating_sub(CYCLES_KEPT);
        state.attempts.retain(|(cycle, _), _| *cycle >= oldest);
        state.posted.retain(|(cycle, _)| *cycle >= oldest);
        state.started.retain(|(cycle, _), _| *cycle >= oldest);
    }
}

/// Folds one event into a slot.
pub fn evolve(mut state: Slot, event: &SlotEvent) -> Slot {
    match event {
        SlotEvent::Configured(config) => {
            state.config = Some(config.clone());
            state.paused.clear();
            if state.status == SlotStatus::Removed {
                state.status = SlotStatus::Active;
            }
        }
        SlotEvent::Paused { .. } => state.status = SlotStatus::Paused,
        SlotEvent::Resumed {} => state.status = SlotStatus::Active,
        SlotEvent::Removed {} => state.status = SlotStatus::Removed,
        SlotEvent::DestinationPaused {
            destination,
            reason,
        } => {
            state.paused.insert(*destination, reason.clone());
        }
        SlotEvent::DestinationMoved { from, to, .. } => {
            if let Some(config) = state.config.as_mut() {
                for destination in config.destinations.iter_mut() {
                    if destination == from {
                        *destination = *to;
                    }
                }
            }
            if let Some(reason) = state.paused.remove(from) {
                state.paused.insert(*to, reason);
            }
        }
        SlotEvent::PostStarted {
            attempt_id,
            cycle,
            destination,
        } => {
            state
                .started
                .insert((*cycle, *destination), attempt_id.clone());
            advance(&mut state, *cycle);
        }
        SlotEvent::PostAttempted(attempt) => {
            let key = (attempt.cycle, attempt.destination);
            // An unknown outcome leaves the start standing: nothing else goes to that
            // destination this cycle.
            if state.started.get(&key) == Some(&attempt.attempt_id)
                && attempt.outcome != Outcome::Unknown
            {
                state.started.remove(&key);
            }
            state.attempts.insert(key, attempt.attempt);
            state.attempt_ids.push_back(attempt.attempt_id.clone());
            while state.attempt_ids.len() > ATTEMPT_IDS_KEPT {
                state.attempt_ids.pop_front();
            }
            if attempt.outcome == Outcome::Succeeded {
                state.posted.insert(key);
            }
            advance(&mut state, attempt.cycle);
        }
    }
    state
}
