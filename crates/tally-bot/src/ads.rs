//! `/ads`: a user with a plan makes, edits, pauses, resumes and deletes their ad
//! slots in the chat; the poster posts them.
//!
//! Making or editing an ad is a short conversation: the next message is the ad (text,
//! or a photo with its caption; link buttons as `Label - https://…` lines at the end),
//! then each message names a destination (a message forwarded from the channel, an
//! `@username`, a `t.me/…` link, a forum topic link `t.me/name/TOPIC` or
//! `t.me/c/ID/TOPIC`, or a chat id), and `/done` saves it. **Each destination is
//! checked before it is accepted**: the chat exists, the bot is in it with the right to
//! post (`getChatMember` for the bot itself), the forum topic exists (a chat action in
//! it); otherwise the user is told why and how to fix it.
//!
//! Never more active slots than the plan gives: a new ad or a resumed one beyond the
//! plan's count is refused (paused and deleted ads count for nothing). The draft lives
//! in the process that runs the bot (one process polls Telegram), like a refund's
//! pending reason; nothing is in the ledger until `/done`.

use tally_domain::slot::{self, Destination, LinkButton, SlotCommand, SlotConfig, SlotStatus};
use tally_domain::values::SlotId;
use teloxide::prelude::*;
use teloxide::types::{
    ChatAction, ChatFullInfoKind, ChatFullInfoPublicKind, InlineKeyboardButton,
    InlineKeyboardMarkup, MessageId, MessageOrigin, Recipient, ThreadId,
};

use crate::chats::{Refusal, posting_refusal};

mod parse;
use crate::post_errors::{PostError, classify};
use crate::texts::AdText;
use crate::users::Who;
use crate::{BotError, Context, TgBot};
pub use parse::{Target, parse_content, parse_target};

/// Longest callback data Telegram carries, in bytes.
const CALLBACK_BYTES_MAX: usize = 64;

/// An ad being made or edited in the chat.
#[derive(Clone, Debug)]
pub(crate) struct AdDraft {
    slot_id: String,
    /// An existing slot's id when editing.
    editing: bool,
    content: Option<(String, Option<String>, Vec<LinkButton>)>,
    destinations: Vec<Destination>,
}

fn drafts(
    context: &Context,
) -> Result<std::sync::MutexGuard<'_, std::collections::HashMap<i64, AdDraft>>, BotError> {
    context
        .pending_ads
        .lock()
        .map_err(|_| BotError::Internal("pending ads lock poisoned".into()))
}

/// Drops the user's draft (they moved on to another command).
pub(crate) fn forget(context: &Context, user: i64) -> Result<(), BotError> {
    drafts(context)?.remove(&user);
    Ok(())
}

/// Whether the user is making an ad (their next messages are its parts).
pub(crate) fn drafting(context: &Context, user: i64) -> bool {
    drafts(context).is_ok_and(|d| d.contains_key(&user))
}

/// `/ads`: the user's ads, each with its content, destinations, state and last
/// cycle's result, and buttons to manage them.
pub(crate) async fn list(bot: &TgBot, context: &Context, who: &Who) -> Result<(), BotError> {
    let (plan_slots, active) = plan_and_active(context, who).await?;
    let owned = tally_projections::slot_summaries(context.pool(), who.user).await?;
    let mut text = who.say(crate::texts::Text::Ad(AdText::Header {
        plan_slots,
        active: active.len(),
    }));
    let mut rows = Vec::new();
    for summary in &owned {
        let loaded = context
            .ledgers
            .slots
            .load(&SlotId::new(summary.slot_id.clone())?)
            .await?
            .state;
        let Some(config) = loaded.config.as_ref() else {
            continue;
        };
        let destinations: Vec<String> = config
            .destinations
            .iter()
            .map(|d| match loaded.paused.get(d) {
                Some(reason) => format!("{d} ({reason})"),
                None => d.to_string(),
            })
            .collect();
        let posted_last = loaded
            .posted
            .iter()
            .filter(|(cycle, _)| *cycle == loaded.latest_cycle)
            .count();
        text.push_str("\n\n");
        text.push_str(&who.say(crate::texts::Text::Ad(AdText::Line {
            slot: &summary.slot_id,
            status: loaded.status,
            content: &preview(&config.content),
            photo: config.photo.is_some(),
            buttons: config.buttons.len(),
            destinations: &destinations.join(", "),
            last_cycle:
                (loaded.latest_cycle > 0).then_some((posted_last, config.destinations.len())),
        })));
        let id = &summary.slot_id;
        let toggle = match loaded.status {
            SlotStatus::Paused => ("resume", AdText::ButtonResume),
            _ => ("pause", AdText::ButtonPause),
        };
        let row: Vec<InlineKeyboardButton> = [
            ("edit", AdText::ButtonEdit),
            toggle,
            ("del", AdText::ButtonDelete),
        ]
        .into_iter()
        .filter_map(|(action, label)| {
            let data = format!("ad:{action}:{id}");
            (data.len() <= CALLBACK_BYTES_MAX).then(|| {
                InlineKeyboardButton::callback(
                    format!("{} {id}", who.say(crate::texts::Text::Ad(label))),
                    data,
                )
            })
        })
        .collect();
        if !row.is_empty() {
            rows.push(row);
        }
    }
    if plan_slots > active.len() {
        rows.push(vec![InlineKeyboardButton::callback(
            who.say(crate::texts::Text::Ad(AdText::ButtonNew)),
            "ad:new:",
        )]);
    }
    bot.send_message(who.chat, text)
        .reply_markup(InlineKeyboardMarkup::new(rows))
        .await?;
    Ok(())
}

/// The plan's slot count (0 without an active plan) and the user's active slots, as
/// the log stands now.
async fn plan_and_active(context: &Context, who: &Who) -> Result<(usize, Vec<String>), BotError> {
    let subscription = context.ledgers.subscriptions.load(&who.user_id()?).await?;
    let slots = match subscription.state.is_active(context.ledgers.now()) {
        true => subscription.state.slots as usize,
        false => 0,
    };
    context.read_model_current("posts").await?;
    let active = tally_projections::slots_of_owner(context.pool(), who.user).await?;
    Ok((slots, active))
}

fn preview(content: &str) -> String {
    let first: String = content
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(60)
        .collect();
    match first.chars().count() < content.chars().count() {
        true => format!("{first}…"),
        false => first,
    }
}

/// A press of an `/ads` button: `ad:ACTION:SLOT`.
pub(crate) async fn on_button(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    value: &str,
) -> Result<(), BotError> {
    let (action, slot) = value.split_once(':').unwrap_or((value, ""));
    let say = |text: AdText<'_>| who.say(crate::texts::Text::Ad(text));
    match action {
        "new" => {
            let (plan_slots, active) = plan_and_active(context, who).await?;
            if active.len() >= plan_slots {
                bot.send_message(who.chat, say(AdText::PlanFull { plan_slots }))
                    .await?;
                return Ok(());
            }
            let slot_id = format!(
                "ad-{}-{}",
                who.user,
                &uuid::Uuid::now_v7().simple().to_string()[24..]
            );
            begin(context, who, slot_id, false)?;
            bot.send_message(who.chat, say(AdText::SendContent)).await?;
            Ok(())
        }
        "edit" => {
            owned(context, who, slot).await?;
            begin(context, who, slot.to_string(), true)?;
            bot.send_message(who.chat, say(AdText::SendContent)).await?;
            Ok(())
        }
        "pause" | "resume" | "del" => {
            let id = owned(context, who, slot).await?;
            let command = match action {
                "pause" => SlotCommand::Pause {
                    reason: "owner".into(),
                },
                "resume" => {
                    let (plan_slots, active) = plan_and_active(context, who).await?;
                    if active.len() >= plan_slots {
                        bot.send_message(who.chat, say(AdText::PlanFull { plan_slots }))
                            .await?;
                        return Ok(());
                    }
                    SlotCommand::Resume
                }
                _ => SlotCommand::Remove,
            };
            context
                .ledgers
                .slots
                .command(id, command, Context::by_user(who.user))
                .await?;
            let done = match action {
                "pause" => AdText::Paused { slot },
                "resume" => AdText::Resumed { slot },
                _ => AdText::Deleted { slot },
            };
            bot.send_message(who.chat, say(done)).await?;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The slot, if it is the user's (anyone else's, or none: refused as not found).
async fn owned(context: &Context, who: &Who, slot: &str) -> Result<SlotId, BotError> {
    let id = SlotId::new(slot.to_string())?;
    let loaded = context.ledgers.slots.load(&id).await?.state;
    match loaded.config {
        Some(config) if config.user_id.get() == who.user => Ok(id),
        _ => Err(BotError::Refused(format!("you have no ad {slot}"))),
    }
}

fn begin(context: &Context, who: &Who, slot_id: String, editing: bool) -> Result<(), BotError> {
    drafts(context)?.insert(
        who.user,
        AdDraft {
            slot_id,
            editing,
            content: None,
            destinations: Vec::new(),
        },
    );
    Ok(())
}

/// A message while the user is making an ad: its content first, then destinations,
/// `/done` to save, `/cancel` to drop it.
pub(crate) async fn on_message(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    message: &Message,
) -> Result<(), BotError> {
    let say = |text: AdText<'_>| who.say(crate::texts::Text::Ad(text));
    let text = message.text().or(message.caption()).unwrap_or("").trim();
    let Some(draft) = drafts(context)?.get(&who.user).cloned() else {
        return Ok(());
    };
    if text.eq_ignore_ascii_case("/cancel") {
        drafts(context)?.remove(&who.user);
        bot.send_message(who.chat, say(AdText::Cancelled)).await?;
        return Ok(());
    }
    if draft.content.is_none() {
        let photo = message
            .photo()
            .and_then(|sizes| sizes.last())
            .map(|p| p.file.id.0.clone());
        let (content, buttons) = parse_content(text);
        let candidate = SlotConfig {
            photo: photo.clone(),
            buttons: buttons.clone(),
            ..SlotConfig::text(who.user_id()?, content.clone(), Vec::new())
        };
        if let Err(error) = slot::check_content(&candidate) {
            bot.send_message(
                who.chat,
                say(AdText::BadContent {
                    why: &error.to_string(),
                }),
            )
            .await?;
            return Ok(());
        }
        if let Some(d) = drafts(context)?.get_mut(&who.user) {
            d.content = Some((content, photo, buttons));
        }
        bot.send_message(who.chat, say(AdText::SendDestinations))
            .await?;
        return Ok(());
    }
    if text.eq_ignore_ascii_case("/done") {
        return save(bot, context, who, draft).await;
    }
    let target = match message.forward_origin() {
        Some(MessageOrigin::Channel { chat, .. }) => Some(Target::Id(chat.id, None)),
        Some(MessageOrigin::Chat { sender_chat, .. }) => Some(Target::Id(sender_chat.id, None)),
        _ => parse_target(text),
    };
    let Some(target) = target else {
        bot.send_message(who.chat, say(AdText::NotADestination))
            .await?;
        return Ok(());
    };
    match preflight(bot, &target).await {
        Ok((destination, title)) => {
            if let Some(d) = drafts(context)?.get_mut(&who.user)
                && !d.destinations.contains(&destination)
                && d.destinations.len() < slot::DESTINATIONS_MAX
            {
                d.destinations.push(destination);
            }
            bot.send_message(
                who.chat,
                say(AdText::DestinationAdded {
                    title: &title,
                    destination: destination.to_string(),
                }),
            )
            .await?;
        }
        Err(refused) => {
            bot.send_message(who.chat, say(refused.text())).await?;
        }
    }
    Ok(())
}

/// `/done`: the ad goes into the ledger (a new slot, or the slot edited).
async fn save(bot: &TgBot, context: &Context, who: &Who, draft: AdDraft) -> Result<(), BotError> {
    let say = |text: AdText<'_>| who.say(crate::texts::Text::Ad(text));
    let Some((content, photo, buttons)) = draft.content else {
        return Ok(());
    };
    if draft.destinations.is_empty() {
        bot.send_message(who.chat, say(AdText::NoDestinations))
            .await?;
        return Ok(());
    }
    if !draft.editing {
        let (plan_slots, active) = plan_and_active(context, who).await?;
        if active.len() >= plan_slots {
            drafts(context)?.remove(&who.user);
            bot.send_message(who.chat, say(AdText::PlanFull { plan_slots }))
                .await?;
            return Ok(());
        }
    }
    let config = SlotConfig {
        photo,
        buttons,
        ..SlotConfig::text(who.user_id()?, content, draft.destinations)
    };
    context
        .ledgers
        .slots
        .command(
            SlotId::new(draft.slot_id.clone())?,
            SlotCommand::Configure(config),
            Context::by_user(who.user),
        )
        .await?;
    drafts(context)?.remove(&who.user);
    bot.send_message(
        who.chat,
        say(AdText::Saved {
            slot: &draft.slot_id,
        }),
    )
    .await?;
    Ok(())
}

/// Why a destination was refused.
#[derive(Clone, Debug)]
enum Refused {
    NoChat,
    NotMember(String),
    NoRights(String),
    NoTopic(String),
    TopicClosed(String),
}

impl Refused {
    fn text(&self) -> AdText<'_> {
        match self {
            Self::NoChat => AdText::RefusedNoChat,
            Self::NotMember(title) => AdText::RefusedNotMember { title },
            Self::NoRights(title) => AdText::RefusedNoRights { title },
            Self::NoTopic(title) => AdText::RefusedNoTopic { title },
            Self::TopicClosed(title) => AdText::RefusedTopicClosed { title },
        }
    }
}

/// The pre-flight check: the chat exists, the bot may post there, the topic exists.
async fn preflight(bot: &TgBot, target: &Target) -> Result<(Destination, String), Refused> {
    let (recipient, topic) = match target {
        Target::Id(chat, topic) => (Recipient::Id(*chat), *topic),
        Target::Username(name, topic) => (Recipient::ChannelUsername(name.clone()), *topic),
    };
    let chat = bot.get_chat(recipient).await.map_err(|_| Refused::NoChat)?;
    let title = chat
        .title()
        .map(str::to_string)
        .or_else(|| chat.username().map(|u| format!("@{u}")))
        .unwrap_or_else(|| chat.id.to_string());
    let me = bot.get_me().await.map_err(|_| Refused::NoChat)?;
    let member = bot
        .get_chat_member(chat.id, me.id)
        .await
        .map_err(|_| Refused::NotMember(title.clone()))?;
    match posting_refusal(chat.is_channel(), &member.kind) {
        Some(Refusal::NotMember) => return Err(Refused::NotMember(title)),
        Some(Refusal::NoRights) => return Err(Refused::NoRights(title)),
        None => {}
    }
    // A topic only in a forum (elsewhere a link's number is a message, not a topic).
    let forum = match &chat.kind {
        ChatFullInfoKind::Public(public) => matches!(
            &public.kind,
            ChatFullInfoPublicKind::Supergroup(group) if group.is_forum
        ),
        ChatFullInfoKind::Private(_) => false,
    };
    let topic = topic.filter(|_| forum);
    if let Some(topic) = topic {
        let thread = ThreadId(MessageId(i32::try_from(topic).unwrap_or(i32::MAX)));
        if let Err(error) = bot
            .send_chat_action(chat.id, ChatAction::Typing)
            .message_thread_id(thread)
            .await
        {
            return Err(match classify(&error) {
                PostError::TopicClosed => Refused::TopicClosed(title),
                _ => Refused::NoTopic(title),
            });
        }
    }
    Ok((
        Destination {
            chat_id: chat.id.0,
            topic_id: topic,
        },
        title,
    ))
}

/// After an admin lowered a user's plan: the newest active slots beyond the plan's
/// count are paused (`slot.paused`, reason `plan_lowered`; the owner is told).
pub(crate) async fn pause_beyond_plan(
    context: &Context,
    user: i64,
    slots: u32,
    admin: i64,
) -> Result<usize, BotError> {
    context.read_model_current("posts").await?;
    let active = tally_projections::slots_of_owner(context.pool(), user).await?;
    let beyond: Vec<String> = active.into_iter().skip(slots as usize).collect();
    for slot in &beyond {
        context
            .ledgers
            .slots
            .command(
                SlotId::new(slot.clone())?,
                SlotCommand::Pause {
                    reason: "plan_lowered".into(),
                },
                Context::by_admin(admin),
            )
            .await?;
    }
    Ok(beyond.len())
}
