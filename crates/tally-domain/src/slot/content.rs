//! What an ad shows: its text (a caption's length with a photo), its photo and its
//! link buttons, and the limits Telegram puts on each.

use serde::{Deserialize, Serialize};

use super::{CONTENT_CHARS_MAX, SlotConfig};
use crate::error::DomainError;

/// Longest content of a slot with a photo, in characters (Telegram's caption limit).
pub const CAPTION_CHARS_MAX: usize = 1024;

/// Most URL buttons under one ad.
pub const BUTTONS_MAX: usize = 8;

/// Longest button label, in characters.
pub const BUTTON_LABEL_CHARS_MAX: usize = 64;

/// Longest button URL or photo id, in bytes.
pub const LINK_BYTES_MAX: usize = 512;

/// A button under an ad that opens a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkButton {
    /// What the button says.
    pub label: String,
    /// Where it goes: `https://…`, `http://…` or `tg://…`.
    pub url: String,
    /// A callback button instead (a campaign's attributed call to action): the data
    /// the press carries (at most 64 bytes); `url` is where the user is then sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// Checks what an ad shows: its text (a caption's length with a photo), photo id and
/// buttons.
pub fn check_content(config: &SlotConfig) -> Result<(), DomainError> {
    let limit = match config.photo {
        Some(_) => CAPTION_CHARS_MAX,
        None => CONTENT_CHARS_MAX,
    };
    let chars = config.content.chars().count();
    if config.content.trim().is_empty() || chars > limit {
        let with = if config.photo.is_some() {
            " with a photo"
        } else {
            ""
        };
        return Err(DomainError::Validation(format!(
            "slot content{with} must be 1 to {limit} characters, got {chars}"
        )));
    }
    crate::values::check_text_chars("slot content", &config.content)?;
    if let Some(photo) = &config.photo {
        if photo.trim().is_empty() || photo.len() > LINK_BYTES_MAX {
            return Err(DomainError::Validation(format!(
                "photo must be a Telegram file id or URL of 1 to {LINK_BYTES_MAX} bytes"
            )));
        }
        crate::values::check_text_chars("photo", photo)?;
    }
    if config.buttons.len() > BUTTONS_MAX {
        return Err(DomainError::Validation(format!(
            "an ad has at most {BUTTONS_MAX} buttons, got {}",
            config.buttons.len()
        )));
    }
    for button in &config.buttons {
        let chars = button.label.chars().count();
        if button.label.trim().is_empty() || chars > BUTTON_LABEL_CHARS_MAX {
            return Err(DomainError::Validation(format!(
                "a button label must be 1 to {BUTTON_LABEL_CHARS_MAX} characters, got {chars}"
            )));
        }
        crate::values::check_text_chars("button label", &button.label)?;
        let scheme_ok = ["https://", "http://", "tg://"]
            .iter()
            .any(|scheme| button.url.starts_with(scheme) && button.url.len() > scheme.len());
        if !scheme_ok
            || button.url.len() > LINK_BYTES_MAX
            || button.url.contains(char::is_whitespace)
        {
            return Err(DomainError::Validation(format!(
                "button {:?}: the link must start with https://, http:// or tg://, have no \
                 spaces and be at most {LINK_BYTES_MAX} bytes",
                button.label
            )));
        }
        crate::values::check_text_chars("button link", &button.url)?;
        if let Some(data) = &button.callback
            && (data.is_empty() || data.len() > 64)
        {
            return Err(DomainError::Validation(format!(
                "button {:?}: callback data must be 1 to 64 bytes",
                button.label
            )));
        }
    }
    Ok(())
}
