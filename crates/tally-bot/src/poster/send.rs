//! Sending one post to Telegram: a photo with the ad as its caption, or the text;
//! the ad's link buttons under it; in its forum topic, if any; as a paid broadcast
//! when the operator allows it.

use tally_domain::slot::{Destination, LinkButton, SlotConfig};
use teloxide::prelude::*;
use teloxide::types::{
    ChatId, FileId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, MessageId, ThreadId,
};

use teloxide::Bot;

/// Sends one post: the photo with the content as its caption, or the text; the
/// link buttons under it; in the forum topic, if any.
pub(super) async fn post(
    bot: &Bot,
    paid: bool,
    username: &str,
    config: &SlotConfig,
    destination: Destination,
) -> Result<Message, teloxide::RequestError> {
    let chat = ChatId(destination.chat_id);
    let thread = destination
        .topic_id
        .map(|topic| ThreadId(MessageId(i32::try_from(topic).unwrap_or(i32::MAX))));
    let keyboard = link_keyboard(&config.buttons, username);
    // The same options on either request.
    macro_rules! with_options {
        ($send:expr) => {{
            let mut send = $send;
            if let Some(thread) = thread {
                send = send.message_thread_id(thread);
            }
            if let Some(keyboard) = keyboard {
                send = send.reply_markup(keyboard);
            }
            if paid {
                send = send.allow_paid_broadcast(true);
            }
            send.await
        }};
    }
    match &config.photo {
        Some(photo) => {
            let file = match url::Url::parse(photo) {
                Ok(url) if url.scheme() == "https" || url.scheme() == "http" => InputFile::url(url),
                _ => InputFile::file_id(FileId(photo.clone())),
            };
            with_options!(bot.send_photo(chat, file).caption(config.content.clone()))
        }
        None => with_options!(bot.send_message(chat, config.content.clone())),
    }
}

/// The ad's buttons, one per row (none: no keyboard): links, or a campaign's
/// callback buttons; `{bot}` in a link is the bot's `username`.
fn link_keyboard(buttons: &[LinkButton], username: &str) -> Option<InlineKeyboardMarkup> {
    let rows: Vec<Vec<InlineKeyboardButton>> = buttons
        .iter()
        .filter_map(|b| {
            if let Some(data) = &b.callback {
                return Some(vec![InlineKeyboardButton::callback(
                    b.label.clone(),
                    data.clone(),
                )]);
            }
            let url = url::Url::parse(&b.url.replace("{bot}", username)).ok()?;
            Some(vec![InlineKeyboardButton::url(b.label.clone(), url)])
        })
        .collect();
    (!rows.is_empty()).then(|| InlineKeyboardMarkup::new(rows))
}
