//! What a failed post means, in one place: every Telegram answer the poster can get,
//! sorted into what a careful operator does about it.
//!
//! teloxide types some errors (`RetryAfter`, `MigrateToChatId`, `BotKicked`, …) and
//! leaves the others as `ApiError::Unknown(text)`; both are classified here by
//! Telegram's own wording (a typed error displays exactly that wording), so a wording
//! teloxide learns later changes nothing. Each wording has its test below.
//!
//! | class | what the poster does |
//! |---|---|
//! | [`PostError::RetryAfter`] | waits exactly that long, keeps the chat's order |
//! | [`PostError::Migrated`] | records the new chat id for the destination, retries there |
//! | [`PostError::TopicClosed`] | pauses the destination, tells the owner; no retry loop |
//! | [`PostError::TopicGone`] | falls back (topic → General → plain chat), tells the owner |
//! | [`PostError::Removed`] | deactivates the destination, tells the owner; no retry until fixed |
//! | [`PostError::Transient`] | backs off with jitter within the cycle, then a failed attempt |
//! | [`PostError::Refused`] | a failed attempt (the message itself is wrong); no retry |
//! | [`PostError::Unknown`] | sent, no answer (timed out after sending, or unreadable): an attempt with outcome `unknown`; nothing more to that destination this cycle |

use std::time::Duration;

use teloxide::RequestError;

/// A failed post, by what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PostError {
    /// Telegram asks to wait this long (429 `retry_after`).
    RetryAfter(Duration),
    /// The group became a supergroup with this chat id.
    Migrated(i64),
    /// The forum topic is closed.
    TopicClosed,
    /// The forum topic is deleted or does not exist.
    TopicGone,
    /// The bot may not post there: kicked, not a member, no rights, the chat is gone.
    Removed,
    /// The network or Telegram failed; the same post may succeed later.
    Transient,
    /// Telegram refuses this message (a bad request that retrying repeats).
    Refused,
    /// The request was sent and no answer came back (it timed out after the
    /// connection was made, or the answer could not be read): Telegram may have
    /// posted it. Sending again could double the ad.
    Unknown,
}

impl PostError {
    /// The attempt's `error_kind` (a short class name, as the ledger keeps it).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RetryAfter(_) => "rate_limited",
            Self::Migrated(_) => "chat_migrated",
            Self::TopicClosed => "topic_closed",
            Self::TopicGone => "topic_deleted",
            Self::Removed => "no_rights",
            Self::Transient => "transient",
            Self::Refused => "refused",
            Self::Unknown => "outcome_unknown",
        }
    }
}

/// Classifies a failed request to Telegram.
pub fn classify(error: &RequestError) -> PostError {
    match error {
        RequestError::RetryAfter(seconds) => PostError::RetryAfter(seconds.duration()),
        RequestError::MigrateToChatId(chat) => PostError::Migrated(chat.0),
        RequestError::Api(api) => classify_text(&api.to_string()),
        // Timed out once connected: the request may have reached Telegram.
        RequestError::Network(error) if error.is_timeout() && !error.is_connect() => {
            PostError::Unknown
        }
        // An answer came that could not be read: the post may have gone out.
        RequestError::InvalidJson { .. } => PostError::Unknown,
        RequestError::Network(_) | RequestError::Io(_) => PostError::Transient,
    }
}

/// Classifies Telegram's description of an error (`Bad Request: …`, `Forbidden: …`).
pub fn classify_text(text: &str) -> PostError {
    let lower = text.to_ascii_lowercase();
    let has = |needle: &str| lower.contains(needle);
    if let Some(seconds) = retry_after(&lower) {
        return PostError::RetryAfter(Duration::from_secs(seconds));
    }
    if has("topic_closed") {
        return PostError::TopicClosed;
    }
    if has("topic_deleted") || has("message thread not found") || has("topic_id_invalid") {
        return PostError::TopicGone;
    }
    let removed = [
        "bot was kicked",
        "bot is not a member",
        "not enough rights",
        "need administrator rights",
        "have no rights to send",
        "chat_write_forbidden",
        "chat not found",
        "group chat was deleted",
        "group is deactivated",
        "bot was blocked by the user",
        "user is deactivated",
        "chat_admin_required",
    ];
    if removed.iter().any(|needle| has(needle)) {
        return PostError::Removed;
    }
    let transient = [
        "internal server error",
        "bad gateway",
        "gateway timeout",
        "service unavailable",
        "restart",
        "timeout",
    ];
    if transient.iter().any(|needle| has(needle)) {
        return PostError::Transient;
    }
    PostError::Refused
}

/// `Too Many Requests: retry after 35` → 35.
fn retry_after(lower: &str) -> Option<u64> {
    let rest = lower.split("retry after").nth(1)?;
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use teloxide::ApiError;

    /// Telegram's wordings, as its Bot API answers them, and their class.
    #[test]
    fn each_telegram_wording_has_its_class() {
        let table: &[(&str, PostError)] = &[
            (
                "Too Many Requests: retry after 35",
                PostError::RetryAfter(Duration::from_secs(35)),
            ),
            ("Bad Request: TOPIC_CLOSED", PostError::TopicClosed),
            ("Bad Request: TOPIC_DELETED", PostError::TopicGone),
            (
                "Bad Request: message thread not found",
                PostError::TopicGone,
            ),
            ("Bad Request: TOPIC_ID_INVALID", PostError::TopicGone),
            (
                "Forbidden: bot was kicked from the supergroup chat",
                PostError::Removed,
            ),
            (
                "Forbidden: bot was kicked from the channel chat",
                PostError::Removed,
            ),
            (
                "Unauthorized: bot was kicked from a chat",
                PostError::Removed,
            ),
            (
                "Forbidden: bot is not a member of the channel chat",
                PostError::Removed,
            ),
            (
                "Forbidden: bot is not a member of the supergroup chat",
                PostError::Removed,
            ),
            (
                "Bad Request: need administrator rights in the channel chat",
                PostError::Removed,
            ),
            (
                "Bad Request: not enough rights to send text messages to the chat",
                PostError::Removed,
            ),
            (
                "Forbidden: not enough rights to send photos to the chat",
                PostError::Removed,
            ),
            (
                "Bad Request: have no rights to send a message",
                PostError::Removed,
            ),
            ("Bad Request: CHAT_WRITE_FORBIDDEN", PostError::Removed),
            ("Bad Request: chat not found", PostError::Removed),
            ("Forbidden: the group chat was deleted", PostError::Removed),
            ("Bad Request: group is deactivated", PostError::Removed),
            ("Bad Request: CHAT_ADMIN_REQUIRED", PostError::Removed),
            ("Internal Server Error", PostError::Transient),
            ("Bad Gateway", PostError::Transient),
            ("Gateway Timeout", PostError::Transient),
            ("Bad Request: message is too long", PostError::Refused),
            (
                "Bad Request: can't parse entities: unsupported start tag",
                PostError::Refused,
            ),
            ("Bad Request: BUTTON_URL_INVALID", PostError::Refused),
        ];
        for (text, class) in table {
            assert_eq!(&classify_text(text), class, "{text}");
        }
    }

    /// teloxide's typed errors display Telegram's wording, and are classified by it.
    #[test]
    fn typed_errors_are_classified_like_their_wording() {
        let typed = [
            (ApiError::BotKickedFromSupergroup, PostError::Removed),
            (ApiError::BotKickedFromChannel, PostError::Removed),
            (ApiError::ChatNotFound, PostError::Removed),
            (ApiError::NotEnoughRightsToPostMessages, PostError::Removed),
            (ApiError::MessageIsTooLong, PostError::Refused),
        ];
        for (error, class) in typed {
            assert_eq!(
                classify(&RequestError::Api(error.clone())),
                class,
                "{error}"
            );
        }
        assert_eq!(
            classify(&RequestError::Api(ApiError::Unknown(
                "Bad Request: TOPIC_CLOSED".into()
            ))),
            PostError::TopicClosed
        );
        assert_eq!(
            classify(&RequestError::MigrateToChatId(teloxide::types::ChatId(
                -100_999
            ))),
            PostError::Migrated(-100_999)
        );
        assert_eq!(
            classify(&RequestError::RetryAfter(
                teloxide::types::Seconds::from_seconds(7)
            )),
            PostError::RetryAfter(Duration::from_secs(7))
        );
    }

    #[test]
    fn every_class_names_a_kind_the_ledger_accepts() {
        let classes = [
            PostError::RetryAfter(Duration::from_secs(1)),
            PostError::Migrated(1),
            PostError::TopicClosed,
            PostError::TopicGone,
            PostError::Removed,
            PostError::Transient,
            PostError::Refused,
        ];
        for class in classes {
            let kind = class.kind();
            assert!(
                kind.len() <= tally_domain::slot::ERROR_KIND_BYTES_MAX
                    && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{kind}"
            );
        }
    }
}
