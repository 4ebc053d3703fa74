//! Admin commands, for the Telegram ids in `TALLY_ADMIN_IDS` only: anyone else is
//! refused before anything is parsed or appended.
//!
//! Every admin action runs as a corrective command of the ledger with the admin's
//! Telegram id as the actor and the reason given. Its id is derived from the
//! message (`tg-<chat>-<message id>`), so a redelivered update is a replay.
//!
//! One file: every admin command shares the admin check and the card of a user.

use tally_domain::account::AccountCommand;
use tally_domain::refund::RefundCommand;
use tally_domain::subscription::SubscriptionCommand;
use tally_domain::values::{
    AdjustmentId, AdminId, Amount, GrantId, PlanId, Reason, RefundId, SignedAmount, UserId,
};
use tally_ledger::Request;
use tally_projections::AsOf;
use teloxide::prelude::*;
use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup, MessageId};

use crate::texts::AdminText;
use crate::users::{Who, latest_entries};
use crate::{BotError, Context, MAINTENANCE_STREAM, MAINTENANCE_SWITCHED, TgBot};
use tally_projections::RefundRow;

/// The admin commands.
pub const COMMANDS: &[&str] = &[
    "grant",
    "adjust",
    "fix_user_slots",
    "refund_payment",
    "block",
    "unblock",
    "user",
    "refunds",
    "stats",
    "audit",
    "maintenance",
];
/// Refund requests `/refunds` shows at once.
pub const REFUND_QUEUE_SHOWN_MAX: i64 = 10;
/// Statement entries `/user` shows.
pub const USER_CARD_ENTRIES: usize = 5;

fn usage(command: &str) -> &'static str {
    match command {
        "grant" => "/grant USER AMOUNT REASON",
        "adjust" => "/adjust USER ±AMOUNT REASON",
        "fix_user_slots" => "/fix_user_slots USER PLAN [REASON]",
        "refund_payment" => "/refund_payment PAYMENT [force] REASON",
        "block" => "/block USER REASON",
        "unblock" => "/unblock USER [REASON]",
        "user" => "/user USER",
        "audit" => "/audit USER",
        "maintenance" => "/maintenance on|off",
        _ => "",
    }
}

/// How to call `command`, told when its arguments do not parse.
fn usage_text(command: &str) -> String {
    AdminText::Usage {
        usage: usage(command),
    }
    .say()
}

/// The note admins get about a failure someone met.
pub(crate) fn failure_note(error_id: &str, chat: i64, error: &BotError) -> String {
    AdminText::Failure {
        error_id,
        chat,
        error: &error.to_string(),
    }
    .say()
}

/// Parsed arguments, or a usage reply.
struct Args<'a> {
    words: &'a [&'a str],
}

impl<'a> Args<'a> {
    fn user(&self, at: usize) -> Option<UserId> {
        self.words
            .get(at)
            .and_then(|w| w.parse::<i64>().ok())
            .and_then(|id| UserId::new(id).ok())
    }
    fn rest(&self, from: usize) -> Option<String> {
        let rest = self.words.get(from..)?.join(" ");
        (!rest.trim().is_empty()).then_some(rest)
    }
}

/// Runs an admin command, or refuses a non-admin.
pub(crate) async fn on_command(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    message: MessageId,
    command: &str,
    words: &[&str],
) -> Result<(), BotError> {
    if !context.is_admin(who.user) {
        bot.send_message(who.chat, who.say(crate::texts::Text::NotAdmin))
            .await?;
        return Ok(());
    }
    let args = Args { words };
    let id = format!("tg-{}-{}", who.chat.0, message.0);
    // The queue's text and its buttons come from one read, so they always agree.
    let (reply, keyboard) = match command {
        "refunds" => {
            let rows = queue(context).await?;
            (refund_queue(&rows), refund_buttons(&rows))
        }
        "refund_payment" => {
            let reply = crate::payments::refund_by_admin(bot, context, who.user, words).await?;
            (reply.unwrap_or_else(|| usage_text(command)), None)
        }
        "user" => {
            let reply = run(context, who, &id, command, &args).await?;
            let keyboard = match args.user(0) {
                Some(user) if reply.is_some() => payment_buttons(context, user.get()).await?,
                _ => None,
            };
            (reply.unwrap_or_else(|| usage_text(command)), keyboard)
        }
        _ => {
            let reply = run(context, who, &id, command, &args).await?;
            (reply.unwrap_or_else(|| usage_text(command)), None)
        }
    };
    let mut send = bot.send_message(who.chat, reply);
    if let Some(keyboard) = keyboard {
        send = send.reply_markup(keyboard);
    }
    send.await?;
    Ok(())
}

/// The command's reply; `None` for arguments that do not parse (usage is shown).
async fn run(
    context: &Context,
    who: &Who,
    id: &str,
    command: &str,
    args: &Args<'_>,
) -> Result<Option<String>, BotError> {
    let admin = AdminId::new(who.user.to_string())?;
    let metadata = Context::by_admin(who.user);
    match command {
        "grant" => {
            let (Some(user), Some(amount), Some(reason)) = (
                args.user(0),
                args.words.get(1).and_then(|a| a.parse::<Amount>().ok()),
                args.rest(2),
            ) else {
                return Ok(None);
            };
            let outcome = context
                .ledgers
                .accounts
                .command(
                    user,
                    AccountCommand::Grant {
                        grant_id: GrantId::new(id.to_string())?,
                        amount,
                        reason: Reason::new(reason)?,
                    },
                    metadata,
                )
                .await?;
            Ok(Some(
                AdminText::Granted {
                    user: user.get(),
                    amount: amount.get(),
                    available: outcome.view.available,
                }
                .say(),
            ))
        }
        "adjust" => {
            let (Some(user), Some(amount), Some(reason)) = (
                args.user(0),
                args.words
                    .get(1)
                    .and_then(|a| a.parse::<SignedAmount>().ok()),
                args.rest(2),
            ) else {
                return Ok(None);
            };
            let outcome = context
                .ledgers
                .accounts
                .command(
                    user,
                    AccountCommand::Adjust {
                        adjustment_id: AdjustmentId::new(id.to_string())?,
                        amount,
                        reason: Reason::new(reason)?,
                        admin,
                        allow_negative: false,
                    },
                    metadata,
                )
                .await?;
            Ok(Some(
                AdminText::Adjusted {
                    user: user.get(),
                    amount: amount.get(),
                    available: outcome.view.available,
                }
                .say(),
            ))
        }
        "fix_user_slots" => {
            let (Some(user), Some(plan)) = (args.user(0), args.words.get(1)) else {
                return Ok(None);
            };
            let reason = args
                .rest(2)
                .unwrap_or_else(|| format!("slots fixed by admin {}", who.user));
            let before = context.ledgers.subscriptions.load(&user).await?.state;
            let after = context
                .ledgers
                .subscriptions
                .execute(Request {
                    key: user,
                    command: SubscriptionCommand::CorrectPlan {
                        plan: PlanId::new(plan.to_string())?,
                        admin,
                        reason: Reason::new(reason)?,
                    },
                    command_id: Some(id.to_string()),
                    metadata,
                })
                .await?
                .view;
            // Fewer slots than the user has active ads: the newest beyond are paused.
            let paused =
                crate::ads::pause_beyond_plan(context, user.get(), after.slots, who.user).await?;
            if paused > 0 {
                tracing::info!(
                    user = user.get(),
                    paused,
                    "ads paused beyond the corrected plan"
                );
            }
            let plan_before = before.plan.as_ref().map_or("none", |p| p.as_str());
            let plan_after = after.plan.as_ref().map_or("none", |p| p.as_str());
            Ok(Some(
                AdminText::SlotsFixed {
                    user: user.get(),
                    plan_before,
                    slots_before: before.slots,
                    plan_after,
                    slots_after: after.slots,
                }
                .say(),
            ))
        }
        "block" | "unblock" => {
            let Some(user) = args.user(0) else {
                return Ok(None);
            };
            let block = command == "block";
            let reason = match (args.rest(1), block) {
                (Some(reason), _) => reason,
                (None, true) => return Ok(None),
                (None, false) => format!("unblocked by admin {}", who.user),
            };
            let reason = Reason::new(reason)?;
            let command = match block {
                true => AccountCommand::Block { reason, admin },
                false => AccountCommand::Unblock { reason, admin },
            };
            context
                .ledgers
                .accounts
                .command(user, command, metadata)
                .await?;
            Ok(Some(match block {
                true => AdminText::Blocked { user: user.get() }.say(),
                false => AdminText::Unblocked { user: user.get() }.say(),
            }))
        }
        "user" => {
            let Some(user) = args.user(0) else {
                return Ok(None);
            };
            user_card(context, user).await.map(Some)
        }
        "stats" => stats(context).await.map(Some),
        "audit" => {
            let Some(user) = args.user(0) else {
                return Ok(None);
            };
            let loaded = context.ledgers.accounts.load(&user).await?;
            context
                .wait_for_read_model("accounts", loaded.position)
                .await;
            let replay = context.projector.replay_account(user, AsOf::Latest).await?;
            Ok(Some(match replay.consistent {
                true => AdminText::AuditConsistent {
                    user: user.get(),
                    available: replay.recomputed.available,
                    held: replay.recomputed.held,
                    events: replay.recomputed.events,
                }
                .say(),
                false => AdminText::AuditDifferent {
                    user: user.get(),
                    differences: &replay.differences.join("; "),
                }
                .say(),
            }))
        }
        "maintenance" => {
            let on = match args.words.first().map(|w| w.to_ascii_lowercase()) {
                Some(w) if w == "on" => true,
                Some(w) if w == "off" => false,
                _ => return Ok(None),
            };
            let reason = args.rest(1).unwrap_or_default();
            // The event's id comes from the message: a redelivered update is a replay.
            let stream = tally_store::StreamId::new(MAINTENANCE_STREAM)?;
            let event = tally_store::NewEvent::new(
                MAINTENANCE_SWITCHED,
                serde_json::json!({"on": on, "admin": who.user.to_string(), "reason": reason}),
                metadata,
            )
            .with_id(tally_ledger::event_id(&stream, id, 0));
            let appended = context
                .store
                .append(&stream, tally_store::ExpectedVersion::Any, vec![event])
                .await?;
            let version = appended.stream_version(&stream).unwrap_or(0);
            context.maintenance.set(on, version);
            Ok(Some(AdminText::Maintenance { on }.say()))
        }
        _ => Ok(None),
    }
}

async fn user_card(context: &Context, user: UserId) -> Result<String, BotError> {
    let loaded = context.ledgers.accounts.load(&user).await?;
    context
        .wait_for_read_model("accounts", loaded.position)
        .await;
    let account = loaded.state;
    if !account.opened {
        return Err(tally_domain::DomainError::AccountNotFound { user_id: user }.into());
    }
    let subscription = context.ledgers.subscriptions.load(&user).await?.state;
    let last = latest_entries(context, user.get(), USER_CARD_ENTRIES, 0).await?;
    let status = match account.status {
        tally_domain::account::AccountStatus::Open => "open",
        tally_domain::account::AccountStatus::Blocked => "blocked",
    };
    let open_holds = account
        .holds
        .values()
        .filter(|h| h.state == tally_domain::account::HoldState::Open)
        .count();
    let duplicates: Vec<(String, String, rust_decimal::Decimal, String)> =
        tally_projections::duplicate_charges(context.pool(), Some(user.get()), 10)
            .await?
            .into_iter()
            .map(|c| (c.payment_id, c.provider_payment_id, c.amount, c.currency))
            .collect();
    let plan = subscription.plan.as_ref().map(|p| p.as_str().to_string());
    let until = subscription
        .period_end
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default();
    Ok(AdminText::UserCard {
        user: user.get(),
        status,
        available: account.available,
        held: account.held,
        open_holds,
        subscription: plan.as_deref().map(|p| (p, subscription.slots, until)),
        last: &last,
        duplicates: &duplicates,
    }
    .say())
}

async fn queue(context: &Context) -> Result<Vec<RefundRow>, BotError> {
    Ok(
        tally_projections::refunds_in_state(context.pool(), "requested", REFUND_QUEUE_SHOWN_MAX)
            .await?,
    )
}

fn refund_queue(rows: &[RefundRow]) -> String {
    if rows.is_empty() {
        return AdminText::RefundQueueEmpty.say();
    }
    rows.iter()
        .map(|r| {
            AdminText::RefundLine {
                refund_id: &r.refund_id,
                user: r.user_id,
                amount: r.amount,
                reference: &r.reference,
                reason: &r.reason,
            }
            .say()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Approve/Reject buttons for the queue; a request whose id does not fit Telegram's
/// 64-byte button data gets none (decide it over the HTTP API).
fn refund_buttons(rows: &[RefundRow]) -> Option<InlineKeyboardMarkup> {
    let buttons: Vec<Vec<InlineKeyboardButton>> = rows
        .iter()
        .map(|r| r.refund_id.clone())
        .filter(|id| id.len() + 3 <= 64)
        .map(|id| {
            vec![
                InlineKeyboardButton::callback(
                    format!("{} {id}", AdminText::ApproveButton.say()),
                    format!("ra:{id}"),
                ),
                InlineKeyboardButton::callback(
                    format!("{} {id}", AdminText::RejectButton.say()),
                    format!("rr:{id}"),
                ),
            ]
        })
        .collect();
    (!buttons.is_empty()).then(|| InlineKeyboardMarkup::new(buttons))
}

/// The user's paid payments, a refund button each (`rp:<payment id>`; ids too long
/// for Telegram's 64-byte callback data are refunded with `/refund_payment`).
async fn payment_buttons(
    context: &Context,
    user: i64,
) -> Result<Option<InlineKeyboardMarkup>, BotError> {
    let rows: Vec<Vec<InlineKeyboardButton>> =
        tally_projections::paid_payments(context.pool(), user, USER_CARD_PAYMENTS)
            .await?
            .into_iter()
            .filter(|(id, _, _)| id.len() <= 61)
            .map(|(id, amount, currency)| {
                vec![InlineKeyboardButton::callback(
                    AdminText::RefundPaymentButton {
                        payment: &id,
                        amount,
                        currency: &currency,
                    }
                    .say(),
                    format!("rp:{id}"),
                )]
            })
            .collect();
    Ok((!rows.is_empty()).then(|| InlineKeyboardMarkup::new(rows)))
}

/// Paid payments `/user` offers to refund.
const USER_CARD_PAYMENTS: i64 = 5;

/// An admin pressed a payment's Refund button on `/user`: the bot asks why (the next
/// message is the reason; `force` before it takes spent credits back into a negative
/// balance), then refunds as `/refund_payment` does.
pub(crate) async fn on_payment_refund_button(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    payment_id: &str,
) -> Result<(), BotError> {
    if !context.is_admin(who.user) {
        bot.send_message(who.chat, who.say(crate::texts::Text::NotAdmin))
            .await?;
        return Ok(());
    }
    context
        .pending_payment_refunds
        .lock()
        .map_err(|_| BotError::Internal("pending payment refunds lock poisoned".into()))?
        .insert(who.user, payment_id.to_string());
    bot.send_message(
        who.chat,
        AdminText::RefundPaymentWhy {
            payment: payment_id,
        }
        .say(),
    )
    .await?;
    Ok(())
}

/// The reason an admin sent for a payment refund chosen on `/user`; `false` when no
/// refund was waiting for one.
pub(crate) async fn on_payment_refund_reason(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    text: &str,
) -> Result<bool, BotError> {
    let pending = context
        .pending_payment_refunds
        .lock()
        .map_err(|_| BotError::Internal("pending payment refunds lock poisoned".into()))?
        .remove(&who.user);
    let Some(payment) = pending else {
        return Ok(false);
    };
    let mut words = vec![payment.as_str()];
    words.extend(text.split_whitespace());
    let reply = crate::payments::refund_by_admin(bot, context, who.user, &words)
        .await?
        .unwrap_or_else(|| usage_text("refund_payment"));
    bot.send_message(who.chat, reply).await?;
    Ok(true)
}

/// An admin pressed Approve or Reject. The rules refuse an admin deciding their own
/// request, and a request decided already.
pub(crate) async fn on_refund_button(
    bot: &TgBot,
    context: &Context,
    who: &Who,
    approve: bool,
    refund_id: &str,
) -> Result<(), BotError> {
    if !context.is_admin(who.user) {
        bot.send_message(who.chat, who.say(crate::texts::Text::NotAdmin))
            .await?;
        return Ok(());
    }
    let refund_id = RefundId::new(refund_id.to_string())?;
    let admin = AdminId::new(who.user.to_string())?;
    let metadata = Context::by_admin(who.user);
    let reply = if approve {
        let outcome = tally_ledger::workflows::approve_refund(
            &context.ledgers.accounts,
            &context.ledgers.refunds,
            refund_id.clone(),
            admin,
            Reason::new(format!("approved by admin {} in the bot", who.user))?,
            metadata,
        )
        .await?;
        AdminText::RefundApproved {
            refund_id: refund_id.as_str(),
            available: outcome.view.available,
        }
        .say()
    } else {
        context
            .ledgers
            .refunds
            .command(
                refund_id.clone(),
                RefundCommand::Reject {
                    admin,
                    reason: Reason::new(format!("rejected by admin {} in the bot", who.user))?,
                },
                metadata,
            )
            .await?;
        AdminText::RefundRejected {
            refund_id: refund_id.as_str(),
        }
        .say()
    };
    bot.send_message(who.chat, reply).await?;
    Ok(())
}

/// Today's and the last 7 days' figures from the daily stats read model.
async fn stats(context: &Context) -> Result<String, BotError> {
    let today = context.ledgers.now().date_naive();
    let week_start = today - chrono::Duration::days(6);
    let (today, week_start) = (
        today.format("%Y-%m-%d").to_string(),
        week_start.format("%Y-%m-%d").to_string(),
    );
    let mut rows = tally_projections::daily_figures(context.pool(), &week_start, &today).await?;
    rows.sort_by(|a, b| (&a.metric, &a.unit).cmp(&(&b.metric, &b.unit)));
    let mut lines: Vec<(String, i64, i64)> = Vec::new();
    for row in rows {
        let (metric, unit, day, value) = (row.metric, row.unit, row.day, row.value);
        let name = match unit.is_empty() {
            true => metric,
            false => format!("{metric} ({unit})"),
        };
        let today_value = if day == today { value } else { 0 };
        match lines.last_mut() {
            Some(last) if last.0 == name => {
                last.1 += today_value;
                last.2 += value;
            }
            _ => lines.push((name, today_value, value)),
        }
    }
    let mut text = AdminText::Stats {
        today: &today,
        lines: &lines,
    }
    .say();
    let figures = tally_projections::campaign_figures(
        context.pool(),
        context.config.attribution_window_micros(),
    )
    .await?;
    if !figures.is_empty() {
        text.push_str(&format!(
            "\n\nCampaigns (a payment counts for the last click within {} h):",
            context.config.attribution_window_hours
        ));
        for f in &figures {
            let revenue: Vec<String> = f
                .revenue
                .iter()
                .map(|(currency, amount)| format!("{} {currency}", amount.normalize()))
                .collect();
            text.push_str(&format!(
                "\n{}/{}: posts {}, clicks {}, users {}, conversions {} ({}%), revenue {}",
                f.campaign_id,
                f.post_id,
                f.posts,
                f.clicks,
                f.unique_users,
                f.conversions,
                (f.conversion_rate * rust_decimal::Decimal::ONE_HUNDRED).normalize(),
                match revenue.is_empty() {
                    true => "0".to_string(),
                    false => revenue.join(", "),
                }
            ));
        }
    }
    Ok(text)
}
