//! Clicks on the operator's campaign posts, and where they take the user.
//!
//! A call-to-action with a web link is a callback button (`cta:<campaign>:<post>:<n>`):
//! the press is recorded as a click (`campaign.clicked`, idempotent by the callback
//! query's id, so a redelivered press counts once) and Telegram is answered with a
//! `t.me/<bot>?start=l-…` link that opens the bot, which sends the button's web link.
//! A call-to-action into the bot is a deep link `t.me/<bot>?start=c-<campaign>-<post>`:
//! the `/start` that arrives is the click (idempotent by its message). Payments
//! of the user afterwards are attributed by the campaigns read model.

use tally_domain::campaign::{self, CampaignCommand, CtaTarget};
use tally_domain::values::{CampaignId, UserId};
use tally_ledger::Request;
use teloxide::prelude::*;
use teloxide::types::{CallbackQuery, ChatId};

use crate::{BotError, Context, TgBot};

/// A press of a campaign's callback button: recorded once, then the user is sent to
/// the bot for the link. Errors are logged, never told in the channel.
pub async fn on_cta(bot: &TgBot, context: &Context, query: &CallbackQuery) {
    let data = query.data.as_deref().unwrap_or("");
    let mut parts = data.splitn(4, ':').skip(1);
    let (Some(campaign), Some(post), Some(button)) = (parts.next(), parts.next(), parts.next())
    else {
        let _ = bot.answer_callback_query(query.id.clone()).await;
        return;
    };
    let button = button.parse::<u8>().ok();
    let recorded = click(
        context,
        campaign,
        post,
        query.from.id.0 as i64,
        button,
        format!("click:{}", query.id),
    )
    .await;
    if let Err(error) = &recorded {
        tracing::warn!(%error, campaign, post, "a campaign click was not recorded");
    }
    let username = context.username().unwrap_or_default();
    let answer = bot.answer_callback_query(query.id.clone());
    let answer = match (
        recorded,
        button,
        url::Url::parse(&format!(
            "https://t.me/{username}?start=l-{campaign}-{post}-{}",
            button.unwrap_or(0)
        )),
    ) {
        (Ok(()), Some(_), Ok(url)) if !username.is_empty() => answer.url(url),
        _ => answer,
    };
    if let Err(error) = answer.await {
        tracing::warn!(%error, "answering a campaign click failed");
    }
}

/// Records a click on `post` of `campaign` by `user`, once per `command_id`.
async fn click(
    context: &Context,
    campaign: &str,
    post: &str,
    user: i64,
    button: Option<u8>,
    command_id: String,
) -> Result<(), BotError> {
    context
        .ledgers
        .campaigns
        .execute(Request {
            key: CampaignId::new(campaign)?,
            command: CampaignCommand::Click {
                user_id: UserId::new(user)?,
                post_id: post.to_string(),
                button,
            },
            command_id: Some(command_id),
            metadata: Context::by_user(user),
        })
        .await?;
    Ok(())
}

/// A `/start <code>` from a campaign: `c-…` is a deep-link click (recorded once per
/// message); `l-…-<n>` comes from a pressed button (counted when pressed) and gets the
/// button's web link. Anything else is no campaign's.
pub(crate) async fn on_start_code(
    bot: &TgBot,
    context: &Context,
    user: i64,
    chat: ChatId,
    message_id: i32,
    code: &str,
) -> Result<(), BotError> {
    if let Some((campaign, post)) = campaign::parse_start_code(code) {
        return click(
            context,
            campaign,
            post,
            user,
            None,
            format!("start:{}:{message_id}", chat.0),
        )
        .await;
    }
    let Some(rest) = code.strip_prefix("l-") else {
        return Ok(());
    };
    let Some((named, button)) = rest.rsplit_once('-') else {
        return Ok(());
    };
    let named = format!("c-{named}");
    let Some((campaign, post)) = campaign::parse_start_code(&named) else {
        return Ok(());
    };
    let (Ok(id), Ok(button)) = (CampaignId::new(campaign), button.parse::<usize>()) else {
        return Ok(());
    };
    let state = context.ledgers.campaigns.load(&id).await?.state;
    let target = state
        .def
        .as_ref()
        .and_then(|d| d.posts.iter().find(|p| p.post_id == post))
        .and_then(|p| p.buttons.get(button));
    if let Some(cta) = target
        && let CtaTarget::Url(url) = &cta.target
    {
        bot.send_message(chat, format!("{}: {url}", cta.label))
            .await?;
    }
    Ok(())
}
