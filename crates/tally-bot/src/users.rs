//! What users do: open their account, see balance and history, buy credits and plans,
//! see their ad slots, ask for refunds, choose their language.
//!
//! Every command is also a button of the menu; both run the same action. Reads come
//! from the ledger's state (balance) or a read model, after waiting for it to include
//! the user's own last write.
//!
//! One file: the user's commands share one way to answer (their language, their account
//! loaded and the read models waited for).

use std::sync::Arc;

use tally_domain::account::AccountCommand;
use tally_domain::refund::RefundAsk;
use tally_domain::values::{Amount, Reason, RefundId, UserId};
use tally_projections::Spend;
use teloxide::prelude::*;
use teloxide::types::{ChatId, InlineKeyboardButton, InlineKeyboardMarkup, MessageId, User};

use crate::context::PendingRefund;
use crate::texts::{Entry, Lang, Text};
use crate::{BotError, Context, TgBot, admin, payments};

/// Statement entries per `/history` page.
pub const HISTORY_PAGE_ENTRIES: usize = 5;
/// Most pages `/history` goes back.
pub const HISTORY_PAGES_MAX: usize = 200;
/// Recent spends offered by `/refund`.
pub const REFUND_CHOICES_MAX: i64 = 5;

/// Who sent an update, and where to answer.
pub(crate) struct Who {
    pub(crate) user: i64,
    pub(crate) chat: ChatId,
    pub(crate) lang: Lang,
    pub(crate) name: String,
    pub(crate) username: Option<String>,
    pub(crate) telegram_lang: Option<String>,
}

impl Who {
    async fn of(context: &Context, from: &User, chat: ChatId) -> Self {
        let user = from.id.0 as i64;
        Self {
            user,
            chat,
            lang: context.lang(user, from.language_code.as_deref()).await,
            name: from.first_name.clone(),
            username: from.username.clone(),
            telegram_lang: from.language_code.clone(),
        }
    }

    pub(crate) fn user_id(&self) -> Result<UserId, BotError> {
        Ok(UserId::new(self.user)?)
    }

    pub(crate) fn say(&self, text: Text<'_>) -> String {
        self.lang.say(text)
    }
}

/// A command and its arguments, from `/cmd@bot arg arg`.
fn parse_command(text: &str) -> Option<(String, Vec<&str>)> {
    let mut words = text.split_whitespace();
    let first = words.next()?.strip_prefix('/')?;
    let name = first
        .split('@')
        .next()
        .unwrap_or(first)
        .to_ascii_lowercase();
    Some((name, words.collect()))
}

/// Whether a text is a command addressed to another bot (`/grant@other_bot …` in a
/// group): such a message is not ours to act on. With our own name unknown, any
/// addressed command is taken as someone else's.
fn addressed_to_another(text: &str, me: Option<&str>) -> bool {
    let Some(first) = text.split_whitespace().next() else {
        return false;
    };
    match first.strip_prefix('/').and_then(|c| c.split_once('@')) {
        Some((_, to)) => !me.is_some_and(|me| me.eq_ignore_ascii_case(to)),
        None => false,
    }
}

/// Every message: commands, payments, and the reason of a refund being asked.
pub async fn on_message(
    bot: TgBot,
    context: Arc<Context>,
    message: Message,
) -> Result<(), BotError> {
    let Some(from) = message.from.as_ref() else {
        return Ok(());
    };
    let who = Who::of(&context, from, message.chat.id).await;
    let result = route_message(&bot, &context, &message, &who).await;
    finish(&bot, &context, &who, result).await;
    Ok(())
}

/// Every button press.
pub async fn on_callback(
    bot: TgBot,
    context: Arc<Context>,
    query: CallbackQuery,
) -> Result<(), BotError> {
    let chat = query
        .regular_message()
        .map(|m| m.chat.id)
        .unwrap_or(ChatId(query.from.id.0 as i64));
    // A campaign's call to action, pressed in a channel: nothing is said there.
    if query.data.as_deref().is_some_and(|d| d.starts_with("cta:")) {
        crate::campaigns::on_cta(&bot, &context, &query).await;
        return Ok(());
    }
    let who = Who::of(&context, &query.from, chat).await;
    let _ = bot.answer_callback_query(query.id.clone()).await;
    let result = route_callback(&bot, &context, &query, &who).await;
    finish(&bot, &context, &who, result).await;
    Ok(())
}

/// A refusal is told as the ledger's reason; a failure gets an error id and the
/// admins are told. Either way nothing was half-applied: each command is atomic.
async fn finish(bot: &TgBot, context: &Context, who: &Who, result: Result<(), BotError>) {
    let Err(error) = result else { return };
    match error.refusal() {
        Some(reason) => {
            let _ = bot
                .send_message(who.chat, who.say(Text::Refused { reason: &reason }))
                .await;
        }
        None => {
            context
                .report_failure(bot, who.chat, who.lang, &error)
                .await
        }
    }
}

async fn route_message(
    bot: &TgBot,
    context: &Context,
    message: &Message,
    who: &Who,
) -> Result<(), BotError> {
    // A payment is handled whatever else is going on: the money has moved.
    if let Some(paid) = message.successful_payment() {
        return payments::on_successful_payment(bot, context, who, paid).await;
    }
    if let teloxide::types::MessageKind::RefundedPayment(refund) = &message.kind {
        return payments::on_refunded_payment(context, &refund.refunded_payment).await;
    }
    // An ad being made takes the user's next messages (a photo too), but a command
    // other than /done and /cancel ends it.
    if crate::ads::drafting(context, who.user) {
        let text = message.text().unwrap_or("");
        let command = parse_command(text).map(|(name, _)| name);
        match command.as_deref() {
            None | Some("done") | Some("cancel") => {
                return crate::ads::on_message(bot, context, who, message).await;
            }
            Some(_) => crate::ads::forget(context, who.user)?,
        }
    }
    let Some(text) = message.text() else {
        return Ok(());
    };
    if addressed_to_another(text, context.username()) {
        return Ok(());
    }
    let admin = context.is_admin(who.user);
    if !admin && context.maintenance_on().await {
        bot.send_message(who.chat, who.say(Text::Maintenance))
            .await?;
        return Ok(());
    }
    let Some((command, args)) = parse_command(text) else {
        if admin && crate::admin::on_payment_refund_reason(bot, context, who, text).await? {
            return Ok(());
        }
        let pending = context
            .pending_refunds
            .lock()
            .map_err(|_| BotError::Internal("pending refunds lock poisoned".into()))?
            .remove(&who.user);
        return match pending {
            Some(pending) => request_refund(bot, context, who, pending, text).await,
            None => {
                bot.send_message(who.chat, who.say(Text::Unknown)).await?;
                Ok(())
            }
        };
    };
    match command.as_str() {
        "start" => {
            start(bot, context, who).await?;
            match args.first() {
                Some(code) => {
                    crate::campaigns::on_start_code(
                        bot,
                        context,
                        who.user,
                        who.chat,
                        message.id.0,
                        code,
                    )
                    .await
                }
                None => Ok(()),
            }
        }
        "balance" => balance(bot, context, who).await,
        "alerts" => alerts(bot, context, who, args.first().copied()).await,
        "history" => history(bot, context, who, 0, None).await,
        "topup" => topup(bot, context, who).await,
        "plans" | "subscribe" => plans(bot, context, who).await,
        "slots" => slots(bot, context, who).await,
        "ads" => crate::ads::list(bot, context, who).await,
        "refund" => refund_choices(bot, context, who).await,
        "lang" => lang_choices(bot, who).await,
        "terms" | "paysupport" => {
            let policy = &context.policy;
            let own = match (command.as_str(), who.lang) {
                ("terms", Lang::Ru) => policy.terms_ru.as_ref(),
                ("terms", _) => policy.terms_en.as_ref(),
                (_, Lang::Ru) => policy.paysupport_ru.as_ref(),
                _ => policy.paysupport_en.as_ref(),
            };
            let text = match (own, command.as_str()) {
                (Some(text), _) => text.clone(),
                (None, "terms") => who.say(Text::Terms),
                (None, _) => who.say(Text::PaySupport),
            };
            bot.send_message(who.chat, text).await?;
            Ok(())
        }
        other if admin::COMMANDS.contains(&other) => {
            admin::on_command(bot, context, who, message.id, other, &args).await
        }
        _ => {
            bot.send_message(who.chat, who.say(Text::Unknown)).await?;
            Ok(())
        }
    }
}

async fn route_callback(
    bot: &TgBot,
    context: &Context,
    query: &CallbackQuery,
    who: &Who,
) -> Result<(), BotError> {
    let Some(data) = query.data.as_deref() else {
        return Ok(());
    };
    let admin = context.is_admin(who.user);
    if !admin && context.maintenance_on().await {
        bot.send_message(who.chat, who.say(Text::Maintenance))
            .await?;
        return Ok(());
    }
    let (kind, value) = data.split_once(':').unwrap_or((data, ""));
    let message_id = query.regular_message().map(|m| m.id);
    match kind {
        "m" => match value {
            "balance" => balance(bot, context, who).await,
            "history" => history(bot, context, who, 0, None).await,
            "topup" => topup(bot, context, who).await,
            "plans" => plans(bot, context, who).await,
            "slots" => slots(bot, context, who).await,
            "ads" => crate::ads::list(bot, context, who).await,
            "refund" => refund_choices(bot, context, who).await,
            "lang" => lang_choices(bot, who).await,
            _ => Ok(()),
        },
        "h" => {
            let page = value.parse::<usize>().unwrap_or(0).min(HISTORY_PAGES_MAX);
            history(bot, context, who, page, message_id).await
        }
        "t" | "p" => {
            let (id, provider) = match value.split_once(':') {
                Some((id, provider)) => (id, Some(provider)),
                None => (value, None),
            };
            let item = match kind {
                "t" => payments::Item::Pack(id),
                _ => payments::Item::Plan(id),
            };
            payments::buy(bot, context, who, item, provider).await
        }
        "r" => pick_refund(bot, context, who, value).await,
        "l" => {
            let lang = Lang::from_code(Some(value));
            context.set_lang(who.user, lang, false).await?;
            bot.send_message(who.chat, lang.say(Text::LangSet)).await?;
            Ok(())
        }
        "ra" | "rr" => admin::on_refund_button(bot, context, who, kind == "ra", value).await,
        "rp" => admin::on_payment_refund_button(bot, context, who, value).await,
        "ad" => crate::ads::on_button(bot, context, who, value).await,
        _ => Ok(()),
    }
}

fn menu(lang: Lang) -> InlineKeyboardMarkup {
    let button = |text: Text<'_>, data: &str| {
        InlineKeyboardButton::callback(lang.say(text), data.to_string())
    };
    InlineKeyboardMarkup::new(vec![
        vec![
            button(Text::MenuBalance, "m:balance"),
            button(Text::MenuHistory, "m:history"),
        ],
        vec![
            button(Text::MenuTopup, "m:topup"),
            button(Text::MenuPlans, "m:plans"),
        ],
        vec![
            button(Text::MenuSlots, "m:slots"),
            button(Text::Ad(crate::texts::AdText::ButtonMenu), "m:ads"),
        ],
        vec![
            button(Text::MenuRefund, "m:refund"),
            button(Text::MenuLang, "m:lang"),
        ],
    ])
}

/// Opens the account (a no-op when it is open: a redelivered `/start` opens nothing
/// twice), remembers the user's language, greets with the balance and the menu.
async fn start(bot: &TgBot, context: &Context, who: &Who) -> Result<(), BotError> {
    let outcome = open(context, who).await?;
    context
        .set_lang(
            who.user,
            Lang::from_code(who.telegram_lang.as_deref()),
            true,
        )
        .await?;
    let lang = context.lang(who.user, who.telegram_lang.as_deref()).await;
    bot.send_message(
        who.chat,
        lang.say(Text::Welcome {
            name: &who.name,
            available: outcome.available,
            held: outcome.held,
        }),
    )
    .reply_markup(menu(lang))
    .await?;
    Ok(())
}

/// Opens the user's account if it is not open; answers its balance.
pub(crate) async fn open(
    context: &Context,
    who: &Who,
) -> Result<tally_ledger::aggregate::AccountView, BotError> {
    let outcome = context
        .ledgers
        .accounts
        .command(
            who.user_id()?,
            AccountCommand::Open {
                username: who.username.clone(),
                language: who.telegram_lang.clone(),
            },
            Context::by_user(who.user),
        )
        .await?;
    Ok(outcome.view)
}

async fn balance(bot: &TgBot, context: &Context, who: &Who) -> Result<(), BotError> {
    let account = context.ledgers.accounts.load(&who.user_id()?).await?.state;
    bot.send_message(
        who.chat,
        who.say(Text::Balance {
            available: account.available,
            held: account.held,
        }),
    )
    .await?;
    Ok(())
}

/// One page of the statement, newest first; `edit` replaces the page shown in that
/// message (the Prev/Next buttons) instead of sending a new one.
async fn history(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    page: usize,
    edit: Option<MessageId>,
) -> Result<(), BotError> {
    let loaded = context.ledgers.accounts.load(&who.user_id()?).await?;
    context
        .wait_for_read_model("accounts", loaded.position)
        .await;
    let mut entries = latest_entries(
        context,
        who.user,
        HISTORY_PAGE_ENTRIES + 1,
        page * HISTORY_PAGE_ENTRIES,
    )
    .await?;
    let more = entries.len() > HISTORY_PAGE_ENTRIES;
    entries.truncate(HISTORY_PAGE_ENTRIES);
    let text = match entries.is_empty() {
        true => who.say(Text::HistoryEmpty),
        false => who.say(Text::History {
            page: page + 1,
            entries: &entries,
        }),
    };
    let mut buttons = Vec::new();
    if page > 0 {
        buttons.push(InlineKeyboardButton::callback(
            who.say(Text::Prev),
            format!("h:{}", page - 1),
        ));
    }
    if more && page + 1 < HISTORY_PAGES_MAX {
        buttons.push(InlineKeyboardButton::callback(
            who.say(Text::Next),
            format!("h:{}", page + 1),
        ));
    }
    let keyboard = InlineKeyboardMarkup::new(vec![buttons]);
    match edit {
        Some(message_id) => {
            bot.edit_message_text(who.chat, message_id, text)
                .reply_markup(keyboard)
                .await?;
        }
        None => {
            bot.send_message(who.chat, text)
                .reply_markup(keyboard)
                .await?;
        }
    }
    Ok(())
}

/// A user's statement entries from the read model, newest first: `limit` of them
/// after the newest `skip`.
pub(crate) async fn latest_entries(
    context: &Context,
    user: i64,
    limit: usize,
    skip: usize,
) -> Result<Vec<Entry>, BotError> {
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let entries = tally_projections::account_statement_newest(
        context.pool(),
        user,
        count(limit),
        count(skip),
    )
    .await?;
    Ok(entries
        .into_iter()
        .map(|entry| Entry {
            kind: entry.kind,
            amount: entry.amount,
            balance_after: entry.balance_after,
            at: entry.occurred_at.format("%Y-%m-%d %H:%M").to_string(),
        })
        .collect())
}

pub(crate) fn day_and_time(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// `/alerts`: shows the low-balance alert; `/alerts 10` sets it below 10 credits,
/// `/alerts off` turns it off, `/alerts default` back to the configured default. The
/// setting is an event on the account (`balance.alert_set`).
async fn alerts(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    word: Option<&str>,
) -> Result<(), BotError> {
    use tally_domain::account::{AccountCommand, AlertSetting};
    let setting = match word {
        None => None,
        Some("off") => Some(AlertSetting::Off),
        Some("default") => Some(AlertSetting::Default),
        Some(number) => match number.parse::<tally_domain::values::Amount>() {
            Ok(amount) => Some(AlertSetting::Below(amount)),
            Err(_) => {
                bot.send_message(who.chat, who.say(Text::AlertsUsage))
                    .await?;
                return Ok(());
            }
        },
    };
    open(context, who).await?;
    let alert = match setting {
        Some(setting) => {
            context
                .ledgers
                .accounts
                .command(
                    who.user_id()?,
                    AccountCommand::SetAlert { setting },
                    Context::by_user(who.user),
                )
                .await?;
            context
                .ledgers
                .accounts
                .load(&who.user_id()?)
                .await?
                .state
                .alert
        }
        None => {
            context
                .ledgers
                .accounts
                .load(&who.user_id()?)
                .await?
                .state
                .alert
        }
    };
    bot.send_message(
        who.chat,
        who.say(Text::AlertsNow {
            threshold: alert.threshold(&context.config),
            default: alert.setting == AlertSetting::Default,
        }),
    )
    .await?;
    Ok(())
}

async fn topup(bot: &TgBot, context: &Context, who: &Who) -> Result<(), BotError> {
    let buttons = context
        .config
        .credit_packs
        .iter()
        .map(|(id, pack)| {
            vec![InlineKeyboardButton::callback(
                who.say(Text::PackButton {
                    credits: pack.credits.get(),
                    price: pack.price.get(),
                    currency: &pack.currency,
                }),
                format!("t:{id}"),
            )]
        })
        .collect::<Vec<_>>();
    bot.send_message(who.chat, who.say(Text::TopupChoose))
        .reply_markup(InlineKeyboardMarkup::new(buttons))
        .await?;
    Ok(())
}

async fn plans(bot: &TgBot, context: &Context, who: &Who) -> Result<(), BotError> {
    let buttons = context
        .config
        .plans
        .iter()
        .map(|(id, plan)| {
            vec![InlineKeyboardButton::callback(
                who.say(Text::PlanButton {
                    plan: id.as_str(),
                    slots: plan.slots,
                    days: plan.period_days,
                    price: plan.price.get(),
                    currency: &plan.currency,
                }),
                format!("p:{id}"),
            )]
        })
        .collect::<Vec<_>>();
    bot.send_message(who.chat, who.say(Text::PlansChoose))
        .reply_markup(InlineKeyboardMarkup::new(buttons))
        .await?;
    Ok(())
}

async fn slots(bot: &TgBot, context: &Context, who: &Who) -> Result<(), BotError> {
    // The plan as the ledger has it now (a plan just paid shows).
    let loaded = context.ledgers.subscriptions.load(&who.user_id()?).await?;
    context
        .wait_for_read_model("subscriptions", loaded.position)
        .await;
    let plan = tally_projections::subscription(context.pool(), who.user)
        .await?
        .filter(|s| s.status == "active")
        .map(|s| (s.plan, s.slots));
    let rows = tally_projections::slot_summaries(context.pool(), who.user).await?;
    let mut text = who.say(Text::Slots {
        plan: plan.as_ref().map(|(p, s)| (p.as_str(), *s)),
    });
    if rows.is_empty() {
        text.push('\n');
        text.push_str(&who.say(Text::SlotsNone));
    }
    for row in &rows {
        text.push('\n');
        text.push_str(&who.say(Text::SlotLine {
            slot: &row.slot_id,
            destinations: row.destinations,
            attempts: row.attempts,
            successes: row.successes,
            failures: row.failures,
        }));
    }
    bot.send_message(who.chat, text).await?;
    Ok(())
}

/// The user's last spends within the refund window: direct debits and captured holds.
async fn recent_spends(context: &Context, user: i64) -> Result<Vec<Spend>, BotError> {
    let since = context.ledgers.now()
        - chrono::Duration::days(i64::from(context.config.refund_window.max_age_days));
    Ok(tally_projections::recent_spends(
        context.pool(),
        user,
        since.timestamp_micros(),
        REFUND_CHOICES_MAX,
    )
    .await?)
}

async fn refund_choices(bot: &TgBot, context: &Context, who: &Who) -> Result<(), BotError> {
    let loaded = context.ledgers.accounts.load(&who.user_id()?).await?;
    context
        .wait_for_read_model("accounts", loaded.position)
        .await;
    context.wait_for_read_model("holds", loaded.position).await;
    let spends = recent_spends(context, who.user).await?;
    if spends.is_empty() {
        bot.send_message(who.chat, who.say(Text::RefundNothing))
            .await?;
        return Ok(());
    }
    let buttons = spends
        .iter()
        .map(|s| {
            let at = day_and_time(s.occurred_at);
            vec![InlineKeyboardButton::callback(
                who.say(Text::SpendButton {
                    kind: s.kind,
                    amount: s.amount,
                    at: &at,
                }),
                format!("r:{}", s.position),
            )]
        })
        .collect::<Vec<_>>();
    bot.send_message(who.chat, who.say(Text::RefundChoose))
        .reply_markup(InlineKeyboardMarkup::new(buttons))
        .await?;
    Ok(())
}

/// The user picked a spend: remember it and ask for the reason.
async fn pick_refund(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    position: &str,
) -> Result<(), BotError> {
    let Ok(position) = position.parse::<i64>() else {
        return Ok(());
    };
    let spends = recent_spends(context, who.user).await?;
    let Some(spend) = spends.into_iter().find(|s| s.position == position) else {
        bot.send_message(who.chat, who.say(Text::RefundNothing))
            .await?;
        return Ok(());
    };
    let amount = spend.amount;
    {
        let mut pending = context
            .pending_refunds
            .lock()
            .map_err(|_| BotError::Internal("pending refunds lock poisoned".into()))?;
        if pending.len() >= crate::context::PENDING_REFUNDS_MAX {
            pending.clear();
        }
        pending.insert(
            who.user,
            PendingRefund {
                position: position as u64,
                reference: spend.reference,
                amount,
            },
        );
    }
    bot.send_message(who.chat, who.say(Text::RefundReason { amount }))
        .await?;
    Ok(())
}

/// The reason arrived: record the request (one per spend from the bot: its id is
/// derived from the spend, so a re-sent reason is a replay).
async fn request_refund(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    pending: PendingRefund,
    reason: &str,
) -> Result<(), BotError> {
    let refund_id = RefundId::new(format!("tg-{}-{}", who.user, pending.position))?;
    let ask = RefundAsk {
        user_id: who.user_id()?,
        reference: pending.reference,
        amount: Amount::new(pending.amount)?,
        reason: Reason::new(reason.trim().to_string())?,
        requested_by: who.user.to_string(),
    };
    tally_ledger::workflows::request_refund(
        &context.ledgers.accounts,
        &context.ledgers.refunds,
        &context.config,
        refund_id,
        ask,
        Context::by_user(who.user),
    )
    .await?;
    bot.send_message(
        who.chat,
        who.say(Text::RefundRequested {
            amount: pending.amount,
        }),
    )
    .await?;
    Ok(())
}

async fn lang_choices(bot: &TgBot, who: &Who) -> Result<(), BotError> {
    let keyboard = InlineKeyboardMarkup::new(vec![vec![
        InlineKeyboardButton::callback("English", "l:en"),
        InlineKeyboardButton::callback("Русский", "l:ru"),
    ]]);
    bot.send_message(who.chat, who.say(Text::LangChoose))
        .reply_markup(keyboard)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{addressed_to_another, parse_command};

    #[test]
    fn commands_for_another_bot_are_not_ours() {
        let me = Some("tally_bot");
        assert!(!addressed_to_another("/grant 42 10 bonus", me));
        assert!(!addressed_to_another("/grant@Tally_Bot 42 10 bonus", me));
        assert!(addressed_to_another("/grant@other_bot 42 10 bonus", me));
        assert!(addressed_to_another("/start@tally_bot", None));
        assert!(!addressed_to_another("mail me at a@b.c", me));
        assert!(!addressed_to_another("", me));
    }

    #[test]
    fn commands_are_parsed_with_or_without_the_bot_name() {
        assert_eq!(
            parse_command("/grant 42 10 welcome bonus"),
            Some(("grant".to_string(), vec!["42", "10", "welcome", "bonus"]))
        );
        assert_eq!(
            parse_command("/Start@tally_bot"),
            Some(("start".to_string(), vec![]))
        );
        assert_eq!(parse_command("hello"), None);
    }
}
