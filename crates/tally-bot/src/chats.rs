//! Where the bot may post: one rule for what a chat membership allows, used when
//! Telegram tells the bot its membership changed (`my_chat_member`) and when a user
//! adds a destination (the pre-flight check asks `getChatMember` for the bot itself).
//!
//! When the bot is removed from a chat or loses the right to post there, every ad
//! slot's destination in that chat is paused (`slot.destination_paused`) before the
//! next cycle tries it, and the owner is told (by the notifier, from that event).
//! Which slots post there is read from the posts read model once it has caught up
//! with the log as it stood when the update arrived; a slot configured after that is
//! paused by the poster's own first refusal.

use std::sync::Arc;

use tally_domain::slot::{Destination, SlotCommand};
use tally_domain::values::SlotId;
use tally_ledger::Request;
use tally_store::{Actor, ActorKind, Metadata};
use teloxide::types::{ChatMemberKind, ChatMemberUpdated, Restricted};

use crate::{BotError, Context};

/// Why the bot may not post in a chat, as a destination's pause reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The bot is not in the chat (left, removed, banned).
    NotMember,
    /// The bot is in the chat without the right to post (a channel member that is
    /// not an admin who may post, a restricted member).
    NoRights,
}

impl Refusal {
    /// The pause reason recorded (the poster's error class for the same cause).
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotMember => "bot_removed",
            Self::NoRights => "no_rights",
        }
    }
}

/// Whether a bot with membership `member` may post in a chat (`channel`: the chat is
/// a channel, where only admins with `can_post_messages` post).
pub fn posting_refusal(channel: bool, member: &ChatMemberKind) -> Option<Refusal> {
    match member {
        ChatMemberKind::Left | ChatMemberKind::Banned(_) => Some(Refusal::NotMember),
        ChatMemberKind::Restricted(Restricted {
            is_member: false, ..
        }) => Some(Refusal::NotMember),
        ChatMemberKind::Restricted(Restricted {
            can_send_messages: false,
            ..
        }) => Some(Refusal::NoRights),
        _ if channel && !member.can_post_messages() => Some(Refusal::NoRights),
        _ => None,
    }
}

/// Telegram says the bot's membership in a chat changed: if it may no longer post
/// there, every slot destination in that chat is paused.
pub async fn on_my_chat_member(
    context: Arc<Context>,
    update: ChatMemberUpdated,
) -> Result<(), BotError> {
    let chat = update.chat.id.0;
    let Some(refusal) = posting_refusal(update.chat.is_channel(), &update.new_chat_member.kind)
    else {
        return Ok(());
    };
    tracing::info!(
        chat,
        reason = refusal.reason(),
        "the bot may no longer post in a chat"
    );
    context.read_model_current("posts").await?;
    let destinations = tally_projections::slots_posting_to(context.pool(), chat).await?;
    let by = Actor::new(ActorKind::System, "telegram");
    for (slot_id, topic_id) in destinations {
        let destination = Destination {
            chat_id: chat,
            topic_id,
        };
        let paused = context
            .ledgers
            .slots
            .execute(Request {
                key: SlotId::new(slot_id.clone())?,
                command: SlotCommand::PauseDestination {
                    destination,
                    reason: refusal.reason().to_string(),
                },
                command_id: None,
                metadata: Metadata::by(by.clone()),
            })
            .await;
        match paused {
            Ok(_) => {}
            // Reconfigured or moved since the read model saw it: nothing there to pause.
            Err(error) if error.code() == "conflict" => {
                tracing::debug!(%slot_id, %destination, %error, "not paused");
            }
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(value: serde_json::Value) -> ChatMemberKind {
        let mut member = json!({"user": {"id": 1, "is_bot": true, "first_name": "Tally"}});
        for (k, v) in value.as_object().into_iter().flatten() {
            member[k] = v.clone();
        }
        serde_json::from_value::<teloxide::types::ChatMember>(member)
            .unwrap_or_else(|e| panic!("{e}: {value}"))
            .kind
    }

    #[test]
    fn each_membership_has_its_answer() {
        let left = kind(json!({"status": "left"}));
        assert_eq!(posting_refusal(false, &left), Some(Refusal::NotMember));
        let kicked = kind(json!({"status": "kicked", "until_date": 0}));
        assert_eq!(posting_refusal(true, &kicked), Some(Refusal::NotMember));
        let member = kind(json!({"status": "member"}));
        assert_eq!(posting_refusal(false, &member), None);
        assert_eq!(posting_refusal(true, &member), Some(Refusal::NoRights));
        let admin = |post: bool| {
            kind(json!({"status": "administrator", "can_be_edited": false,
                "is_anonymous": false, "can_manage_chat": true, "can_delete_messages": false,
                "can_manage_video_chats": false, "can_restrict_members": false,
                "can_promote_members": false, "can_change_info": false,
                "can_invite_users": false, "can_post_messages": post,
                "can_edit_messages": false, "can_pin_messages": false,
                "can_post_stories": false, "can_edit_stories": false,
                "can_delete_stories": false, "can_manage_topics": false}))
        };
        assert_eq!(posting_refusal(true, &admin(true)), None);
        assert_eq!(
            posting_refusal(true, &admin(false)),
            Some(Refusal::NoRights)
        );
        assert_eq!(posting_refusal(false, &admin(false)), None);
    }
}
