//! The notifier: a reactor that tells users what happened to them without their
//! asking — a top-up or plan paid by a provider's webhook, an admin's grant or
//! correction, a block, a refund decided, a hold expired and its credits returned, a
//! plan ending in three days or ended.
//!
//! It follows the log from its own checkpoint (`notifier` in the projections
//! registry). Each message has a key (the event's id, or `expiring:<user>:<period
//! end>`) recorded in `bot_notifications` once Telegram accepted it; a key found there
//! is never sent again, so a notifier that restarts, or reads an event again because
//! it died before its checkpoint, sends nothing twice. What is not recorded is sent
//! again: at least once. (The one gap: a crash between Telegram's answer and the
//! record; Telegram has no idempotency key to close it.)
//!
//! One file: the notifier's reactor and its sweeps (plans ending, the daily reconciliation, webhook endpoints given up) share one deliver-once path.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tally_domain::account::AccountEvent;
use tally_domain::payment::{PaymentEvent, Purpose};
use tally_domain::refund::RefundEvent;
use tally_domain::slot::SlotEvent;
use tally_domain::subscription::SubscriptionEvent;
use tally_domain::values::{RefundId, SlotId};
use tally_projections::{NOTIFIER, Reactor, ReactorLoop, stream_event};
use tally_store::{ActorKind, RecordedEvent};
use teloxide::ApiError;
use teloxide::RequestError;
use teloxide::prelude::*;
use teloxide::types::ChatId;

use crate::texts::{Lang, Text};
use crate::{BotError, Context, TgBot};

/// Most events one notifier step reads.
pub const NOTIFIER_BATCH_EVENTS_MAX: usize = 200;
/// How long before a plan ends its owner is told.
pub const EXPIRING_NOTICE_DAYS: i64 = 3;
/// How often plans about to end are looked for.
pub const EXPIRING_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Most expiring plans told about per sweep.
pub const EXPIRING_SWEEP_MAX: i64 = 500;

/// Pauses between tries of a notice to one chat whose sending failed for a reason
/// that may pass (about 15 s in all); then it is recorded as undeliverable.
pub const DELIVERY_RETRY_PAUSES: [Duration; 5] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// Whether Telegram refused this message for good (retrying sends the same refusal):
/// every error it names (blocked, chat not found, deactivated, kicked, a message it
/// rejects) and every other `Forbidden`/`Bad Request`. The network, Telegram's 5xx and
/// flood waits (the throttle waits those out) may pass.
fn refused_for_good(error: &RequestError) -> bool {
    match error {
        RequestError::Api(ApiError::Unknown(text)) => {
            text.starts_with("Forbidden") || text.starts_with("Bad Request")
        }
        RequestError::Api(_) | RequestError::MigrateToChatId(_) => true,
        _ => false,
    }
}

/// A message for one user, in their language.
struct Notice {
    key: String,
    user: i64,
    text: Box<dyn Fn(Lang) -> String + Send + Sync>,
}

/// The notifier reactor.
pub struct Notifier {
    context: Arc<Context>,
    bot: TgBot,
}

fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

impl Notifier {
    /// A notifier sending through `bot`.
    pub fn new(context: Arc<Context>, bot: TgBot) -> Self {
        Self { context, bot }
    }

    fn runtime(&self) -> ReactorLoop {
        ReactorLoop::new(self.context.store.clone(), self.context.pool().clone())
    }

    /// Registers the notifier's checkpoint (at the log's head, on its first start) and
    /// returns it: called when the bot starts, so every event appended after that is
    /// told, however late the notifier's loop gets going.
    pub async fn register(&self) -> Result<u64, BotError> {
        Ok(self.runtime().checkpoint(self).await?)
    }

    /// Sends what the next batch of events calls for and moves the checkpoint past
    /// them; returns how many events it read.
    pub async fn step(&self) -> Result<usize, BotError> {
        self.runtime().step(self).await
    }

    /// What `event` should tell its user, if anything.
    async fn notice(&self, event: &RecordedEvent) -> Result<Option<Notice>, BotError> {
        let key = event.event_id.to_string();
        let notice = |user: i64, text: Box<dyn Fn(Lang) -> String + Send + Sync>| {
            Some(Notice {
                key: key.clone(),
                user,
                text,
            })
        };
        if let Some((user, account)) = stream_event::<AccountEvent>(event, "account")? {
            let Ok(user) = user.parse::<i64>() else {
                return Ok(None);
            };
            return Ok(match account {
                AccountEvent::Granted { amount, reason, .. } => notice(
                    user,
                    Box::new(move |l| {
                        l.say(Text::NotifyGrant {
                            amount: amount.get(),
                            reason: reason.as_str(),
                        })
                    }),
                ),
                // A payment's reversal is told as the refund (its payment's notice).
                AccountEvent::Adjusted { adjustment_id, .. }
                    if adjustment_id.as_str().starts_with("reversal:") =>
                {
                    None
                }
                AccountEvent::Adjusted { amount, reason, .. } => notice(
                    user,
                    Box::new(move |l| {
                        l.say(Text::NotifyAdjusted {
                            amount: amount.get(),
                            reason: reason.as_str(),
                        })
                    }),
                ),
                AccountEvent::HoldExpired { amount, .. } => notice(
                    user,
                    Box::new(move |l| {
                        l.say(Text::NotifyHoldExpired {
                            amount: amount.get(),
                        })
                    }),
                ),
                AccountEvent::Blocked { reason, .. } => notice(
                    user,
                    Box::new(move |l| {
                        l.say(Text::NotifyBlocked {
                            reason: reason.as_str(),
                        })
                    }),
                ),
                AccountEvent::Unblocked { .. } => {
                    notice(user, Box::new(|l| l.say(Text::NotifyUnblocked)))
                }
                AccountEvent::BalanceLow {
                    available,
                    threshold,
                    ..
                } => notice(
                    user,
                    Box::new(move |l| {
                        l.say(Text::NotifyBalanceLow {
                            available,
                            threshold,
                        })
                    }),
                ),
                _ => None,
            });
        }
        // What the poster and the owner's plan did to a slot: told to its owner.
        if let Some((slot_id, slot_event)) = stream_event::<SlotEvent>(event, "slot")? {
            let told = match &slot_event {
                SlotEvent::Paused { reason } => reason == "plan_lowered",
                SlotEvent::DestinationMoved { reason, .. } => {
                    reason.as_deref() == Some("topic_deleted")
                }
                SlotEvent::DestinationPaused { .. } => true,
                _ => false,
            };
            let owner = match told {
                true => self.slot_owner(slot_id).await?,
                false => None,
            };
            let Some(owner) = owner else {
                return Ok(None);
            };
            let slot = slot_id.to_string();
            let text: Box<dyn Fn(Lang) -> String + Send + Sync> = match slot_event {
                SlotEvent::Paused { .. } => {
                    let slots = self
                        .context
                        .ledgers
                        .subscriptions
                        .load(&tally_domain::values::UserId::new(owner)?)
                        .await?
                        .state
                        .slots;
                    Box::new(move |l| l.say(Text::NotifySlotPausedByPlan { slot: &slot, slots }))
                }
                SlotEvent::DestinationMoved { from, to, .. } => Box::new(move |l| {
                    l.say(Text::NotifyTopicFellBack {
                        slot: &slot,
                        from: from.to_string(),
                        chat: to.chat_id,
                    })
                }),
                SlotEvent::DestinationPaused {
                    destination,
                    reason,
                } => Box::new(move |l| {
                    l.say(Text::NotifyDestinationPaused {
                        slot: &slot,
                        destination: destination.to_string(),
                        reason: &reason,
                    })
                }),
                _ => return Ok(None),
            };
            return Ok(notice(owner, text));
        }
        if let Some((
            payment_id,
            PaymentEvent::Reversed {
                user_id, purpose, ..
            },
        )) = stream_event::<PaymentEvent>(event, "payment")?
        {
            let payment_id = payment_id.to_string();
            let credits = match purpose {
                Purpose::Credits(credits) => Some(credits.get()),
                Purpose::Plan(_) => None,
            };
            return Ok(notice(
                user_id.get(),
                Box::new(move |l| {
                    l.say(Text::NotifyPaymentRefunded {
                        payment: &payment_id,
                        credits,
                    })
                }),
            ));
        }
        if let Some((_, payment)) = stream_event::<PaymentEvent>(event, "payment")? {
            // Payments made in the chat were confirmed there; webhooks' were not.
            let PaymentEvent::Succeeded {
                user_id, purpose, ..
            } = payment
            else {
                return Ok(None);
            };
            if event.metadata.actor.kind != ActorKind::Webhook {
                return Ok(None);
            }
            return Ok(match purpose {
                Purpose::Credits(credits) => notice(
                    user_id.get(),
                    Box::new(move |l| {
                        l.say(Text::NotifyTopup {
                            credits: credits.get(),
                        })
                    }),
                ),
                Purpose::Plan(plan) => notice(
                    user_id.get(),
                    Box::new(move |l| {
                        l.say(Text::NotifyPlan {
                            plan: plan.as_str(),
                        })
                    }),
                ),
            });
        }
        if let Some((refund_id, refund)) = stream_event::<RefundEvent>(event, "refund")? {
            let decided = match refund {
                RefundEvent::Approved { .. } => None,
                RefundEvent::Rejected { reason, .. } => Some(reason),
                _ => return Ok(None),
            };
            let request = self
                .context
                .ledgers
                .refunds
                .load(&RefundId::new(refund_id.to_string())?)
                .await?
                .state;
            let Some(ask) = request.ask else {
                return Ok(None);
            };
            let amount = ask.amount.get();
            return Ok(match decided {
                None => notice(
                    ask.user_id.get(),
                    Box::new(move |l| l.say(Text::NotifyRefundApproved { amount })),
                ),
                Some(reason) => notice(
                    ask.user_id.get(),
                    Box::new(move |l| {
                        l.say(Text::NotifyRefundRejected {
                            reason: reason.as_str(),
                        })
                    }),
                ),
            });
        }
        if let Some((user, SubscriptionEvent::Expired)) =
            stream_event::<SubscriptionEvent>(event, "subscription")?
            && let Ok(user) = user.parse::<i64>()
        {
            return Ok(notice(user, Box::new(|l| l.say(Text::NotifyExpired))));
        }
        Ok(None)
    }

    async fn sent(&self, key: &str) -> Result<bool, BotError> {
        Ok(
            sqlx::query("SELECT 1 FROM bot_notifications WHERE key = $1")
                .bind(key)
                .fetch_optional(self.context.pool())
                .await?
                .is_some(),
        )
    }

    /// The owner of a slot, from its stream (`None` if it was never configured).
    async fn slot_owner(&self, slot_id: &str) -> Result<Option<i64>, BotError> {
        let slot = self
            .context
            .ledgers
            .slots
            .load(&SlotId::new(slot_id.to_string())?)
            .await?
            .state;
        Ok(slot.config.map(|config| config.user_id.get()))
    }

    async fn record(&self, key: &str, user: i64, outcome: &str) -> Result<(), BotError> {
        sqlx::query(
            "INSERT INTO bot_notifications (key, user_id, sent_at, outcome) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(user)
        .bind(now_micros())
        .bind(outcome)
        .execute(self.context.pool())
        .await?;
        Ok(())
    }

    /// Sends a batch's notices: users concurrently (Telegram's limits are per chat and
    /// the throttle sends in ticks, so one at a time would crawl), each user's in the
    /// order of the log.
    async fn deliver_all(&self, notices: Vec<Notice>) -> Result<(), BotError> {
        let mut by_user: Vec<(i64, Vec<Notice>)> = Vec::new();
        for notice in notices {
            match by_user.iter_mut().find(|(user, _)| *user == notice.user) {
                Some((_, list)) => list.push(notice),
                None => by_user.push((notice.user, vec![notice])),
            }
        }
        futures::future::try_join_all(by_user.into_iter().map(|(_, list)| async move {
            for notice in list {
                self.deliver(notice).await?;
            }
            Ok::<_, BotError>(())
        }))
        .await?;
        Ok(())
    }

    /// Sends a notice unless it was sent before, and records what became of it. Only
    /// a failure to record fails the batch, so one chat never holds the others back:
    /// - a refusal of this message by Telegram (the user blocked the bot or never
    ///   started it, the chat is gone, the message is rejected) is permanent: recorded
    ///   as undeliverable at once, never retried;
    /// - anything else (the network, Telegram's own 5xx) is retried for this chat
    ///   with growing pauses ([`DELIVERY_RETRY_PAUSES`]); still failing after them, the
    ///   notice is recorded as undeliverable with the error, and the notifier moves on.
    async fn deliver(&self, notice: Notice) -> Result<(), BotError> {
        if self.sent(&notice.key).await? {
            return Ok(());
        }
        let lang = self.context.lang(notice.user, None).await;
        let text = (notice.text)(lang);
        let mut pauses = DELIVERY_RETRY_PAUSES.iter();
        let outcome = loop {
            let error = match self
                .bot
                .send_message(ChatId(notice.user), text.clone())
                .await
            {
                Ok(_) => break "sent".to_string(),
                Err(error) => error,
            };
            if refused_for_good(&error) {
                tracing::info!(user = notice.user, key = notice.key, %error, "user cannot be notified");
                break format!("undeliverable: {error}");
            }
            match pauses.next() {
                Some(pause) => {
                    tracing::debug!(user = notice.user, %error, ?pause, "notice not delivered; retrying this chat");
                    tokio::time::sleep(*pause).await;
                }
                None => {
                    tracing::warn!(user = notice.user, key = notice.key, %error, "notice given up after retries");
                    break format!("undeliverable after retries: {error}");
                }
            }
        };
        self.record(&notice.key, notice.user, &outcome).await
    }

    /// Tells owners of plans ending within [`EXPIRING_NOTICE_DAYS`] (once per period).
    pub async fn sweep_expiring(&self, now: DateTime<Utc>) -> Result<usize, BotError> {
        let until = now + chrono::Duration::days(EXPIRING_NOTICE_DAYS);
        let rows = tally_projections::plans_ending(
            self.context.pool(),
            now.timestamp_micros(),
            until.timestamp_micros(),
            EXPIRING_SWEEP_MAX,
        )
        .await?;
        let mut told = 0;
        for row in rows {
            let (user, plan, end) = (row.user_id, row.plan, row.period_end);
            let key = format!("expiring:{user}:{end}");
            if self.sent(&key).await? {
                continue;
            }
            let date = crate::users::day_and_time(end);
            self.deliver(Notice {
                key,
                user,
                text: Box::new(move |l| {
                    l.say(Text::NotifyExpiring {
                        plan: &plan,
                        date: &date,
                    })
                }),
            })
            .await?;
            told += 1;
        }
        Ok(told)
    }

    /// Once a day (the first sweep of each UTC day that gets an answer), reconciles
    /// Telegram Stars: every Star transaction against the ledger's payments, on the
    /// payments read model caught up to the log. When anything is on one side only,
    /// each admin is told once (the keys are the day's). A Telegram that does not
    /// answer is tried again at the next sweep; the day is recorded only once done.
    pub async fn reconcile_daily(&self, now: DateTime<Utc>) -> Result<(), BotError> {
        let Some(stars) = self.context.providers.get(crate::payments::STARS).cloned() else {
            return Ok(());
        };
        let day = now.format("%Y-%m-%d").to_string();
        let key = format!("reconciled:{}:{day}", crate::payments::STARS);
        if self.sent(&key).await? {
            return Ok(());
        }
        self.context.read_model_current("payments").await?;
        let report = match tally_projections::reconciliation::reconcile(
            self.context.pool(),
            stars.as_ref(),
        )
        .await
        {
            Ok(report) => report,
            Err(tally_projections::reconciliation::ReconcileError::Provider(error)) => {
                tracing::warn!(%error, "the daily reconciliation could not list the provider's charges; tried again at the next sweep");
                return Ok(());
            }
            Err(tally_projections::reconciliation::ReconcileError::ReadModel(error)) => {
                return Err(error.into());
            }
        };
        if report.unmatched() > 0 {
            let provider_only: Vec<String> =
                report.provider_only.iter().map(|c| c.id.clone()).collect();
            let ledger_only: Vec<String> = report
                .ledger_only
                .iter()
                .map(|l| format!("{} ({})", l.payment_id, l.charge_id))
                .collect();
            let text = crate::texts::AdminText::Unreconciled {
                provider: &report.provider,
                day: &day,
                provider_only: &provider_only,
                ledger_only: &ledger_only,
            }
            .say();
            let mut admins: Vec<i64> = self.context.admin_ids.iter().copied().collect();
            admins.sort_unstable();
            let notices = admins
                .into_iter()
                .map(|admin| {
                    let text = text.clone();
                    Notice {
                        key: format!("{key}:{admin}"),
                        user: admin,
                        text: Box::new(move |_| text.clone()),
                    }
                })
                .collect();
            self.deliver_all(notices).await?;
        }
        self.record(
            &key,
            0,
            &format!(
                "matched {}, unmatched {}",
                report.matched,
                report.unmatched()
            ),
        )
        .await
    }

    /// Tells each admin, once, of every webhook endpoint the deliverer disabled (it
    /// failed for the whole retry schedule) in the last week.
    pub async fn tell_disabled_webhooks(&self, now: DateTime<Utc>) -> Result<(), BotError> {
        let since = (now - chrono::Duration::days(7)).timestamp_micros();
        let disabled = tally_webhooks::endpoints::disabled_since(self.context.pool(), since)
            .await
            .map_err(|e| BotError::Internal(e.to_string()))?;
        let mut admins: Vec<i64> = self.context.admin_ids.iter().copied().collect();
        admins.sort_unstable();
        let mut notices = Vec::new();
        for endpoint in disabled
            .into_iter()
            .filter(|e| e.disabled_reason.starts_with("failed for"))
        {
            let text = crate::texts::AdminText::WebhookDisabled {
                endpoint: &endpoint.endpoint_id,
                url: &endpoint.url,
                reason: &endpoint.disabled_reason,
            }
            .say();
            for admin in &admins {
                let text = text.clone();
                notices.push(Notice {
                    key: format!(
                        "webhook-disabled:{}:{}:{admin}",
                        endpoint.endpoint_id, endpoint.disabled_at
                    ),
                    user: *admin,
                    text: Box::new(move |_| text.clone()),
                });
            }
        }
        self.deliver_all(notices).await
    }

    /// Notifies until `stop` turns true, in the [`ReactorLoop`] every reactor runs
    /// in: wakes on appends, polls, sweeps for plans about to end; on Postgres only
    /// while this process holds the notifier's lease.
    pub async fn run(&self, stop: tokio::sync::watch::Receiver<bool>) -> Result<(), BotError> {
        self.runtime().run(self, stop).await
    }
}

#[async_trait::async_trait]
impl Reactor for Notifier {
    type Error = BotError;

    fn name(&self) -> &'static str {
        NOTIFIER
    }

    fn batch_max(&self) -> usize {
        NOTIFIER_BATCH_EVENTS_MAX
    }

    /// A bot added to a ledger with a history does not tell users about all of it.
    fn starts_at_head(&self) -> bool {
        true
    }

    fn sweep_every(&self) -> Duration {
        EXPIRING_SWEEP_EVERY
    }

    fn now(&self) -> DateTime<Utc> {
        self.context.ledgers.now()
    }

    async fn react(&self, events: &[RecordedEvent]) -> Result<(), BotError> {
        let mut notices = Vec::new();
        for event in events {
            if let Some(notice) = self.notice(event).await? {
                notices.push(notice);
            }
        }
        self.deliver_all(notices).await
    }

    async fn sweep(&self, now: DateTime<Utc>) -> Result<(), BotError> {
        self.sweep_expiring(now).await?;
        self.reconcile_daily(now).await?;
        self.tell_disabled_webhooks(now).await
    }
}
