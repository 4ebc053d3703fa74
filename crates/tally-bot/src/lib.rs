//! # tally-bot: the Telegram bot users and admins talk to
//!
//! The bot is one more front-end of the ledger, beside the HTTP API: it runs commands
//! through the command service (`tally-ledger`) and reads the read models
//! (`tally-projections`) in-process. It holds no business rule: every refusal
//! (insufficient credits, a blocked account, a refund out of policy) comes from the
//! domain and is told to the user in their language.
//!
//! - [`users`]: `/start`, `/balance`, `/history`, `/topup`, `/plans`, `/slots`,
//!   `/refund`, `/lang` and their buttons.
//! - [`payments`]: Telegram Stars invoices, pre-checkout checks, successful payments.
//! - [`admin`]: the admin commands, for `TALLY_ADMIN_IDS` only.
//! - [`notifier`]: a reactor that tells users what happened without them asking.
//! - [`texts`]: every word the bot says, per language.
//!
//! Updates are dispatched by teloxide: different chats concurrently, one chat's
//! updates in order. Outgoing calls go through teloxide's `Throttle`, which keeps
//! Telegram's limits and waits out a 429's `retry_after`.
//!
//! Idempotency: Telegram redelivers an update the bot did not confirm. Every command
//! the bot runs carries an id derived from the update (the chat and message id, the
//! payment's id, the charge id), so a redelivered update is a replay, never a second
//! application.

pub mod admin;
mod context;
pub mod notifier;
pub mod payments;
pub mod texts;
pub mod users;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use teloxide::adaptors::Throttle;
use teloxide::adaptors::throttle::Limits;
use teloxide::dispatching::{Dispatcher, UpdateFilterExt};
use teloxide::prelude::*;
use teloxide::types::Update;
use teloxide::update_listeners::Polling;
use url::Url;

pub use context::{BotError, Context};

/// The bot as handlers use it: every call throttled.
pub type TgBot = Throttle<Bot>;

/// The stream that records maintenance mode switches.
pub const MAINTENANCE_STREAM: &str = "bot-maintenance";
/// The event type of a maintenance switch.
pub const MAINTENANCE_SWITCHED: &str = "bot.maintenance_switched";

/// How the bot reaches Telegram and who its admins are.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The bot's token from @BotFather.
    pub token: String,
    /// A self-hosted Bot API server (or a fake one in tests); `None`: api.telegram.org.
    pub api_url: Option<Url>,
    /// Telegram user ids allowed to run admin commands.
    pub admin_ids: HashSet<i64>,
    /// Outgoing message limits (Telegram's by default).
    pub limits: Limits,
    /// How long one `getUpdates` long poll waits for updates.
    pub poll_timeout_seconds: u32,
}

impl Settings {
    /// Settings with Telegram's defaults for a token and admin list.
    pub fn new(token: impl Into<String>, admin_ids: HashSet<i64>) -> Self {
        Self {
            token: token.into(),
            api_url: None,
            admin_ids,
            limits: Limits::default(),
            poll_timeout_seconds: 10,
        }
    }
}

/// Parses `TALLY_ADMIN_IDS`: Telegram user ids separated by commas.
pub fn parse_admin_ids(text: &str) -> Result<HashSet<i64>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
                format!("admin id {s:?} is not a Telegram user id (a positive integer)")
            })
        })
        .collect()
}

/// The Telegram client for `settings`, throttled.
pub fn client(settings: &Settings) -> TgBot {
    let mut bot = Bot::new(&settings.token);
    if let Some(url) = &settings.api_url {
        bot = bot.set_api_url(url.clone());
    }
    bot.throttle(settings.limits)
}

/// The update handler tree: messages (commands, payments, refund reasons), button
/// presses, pre-checkout queries.
fn handler() -> teloxide::dispatching::UpdateHandler<BotError> {
    dptree::entry()
        .branch(Update::filter_pre_checkout_query().endpoint(payments::on_pre_checkout))
        .branch(Update::filter_message().endpoint(users::on_message))
        .branch(Update::filter_callback_query().endpoint(users::on_callback))
}

/// Runs the bot by long polling, and its notifier, until `stop` turns true.
pub async fn run(
    context: Arc<Context>,
    settings: &Settings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), BotError> {
    context.load_maintenance().await?;
    let bot = client(settings);
    // The dispatcher asks for the bot's own user first and gives up for good if
    // Telegram cannot be reached; wait for Telegram here instead, until stopped.
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        match bot.get_me().await {
            Ok(me) => {
                tracing::info!(username = me.username(), "connected to Telegram");
                break;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?wait, "cannot reach the Telegram Bot API");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return Ok(());
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
    let notifier = notifier::Notifier::new(context.clone(), bot.clone());
    let notifier_stop = stop.clone();
    let notifier_task = tokio::spawn(async move { notifier.run(notifier_stop).await });

    let mut dispatcher = Dispatcher::builder(bot.clone(), handler())
        .dependencies(dptree::deps![context.clone()])
        .default_handler(|_| async {})
        .error_handler(LoggingErrorHandler::with_custom_text(
            "a bot handler failed",
        ))
        .build();
    let listener = Polling::builder(bot)
        .timeout(std::time::Duration::from_secs(u64::from(
            settings.poll_timeout_seconds,
        )))
        .delete_webhook()
        .await
        .build();
    let token = dispatcher.shutdown_token();
    let shutdown = tokio::spawn(async move {
        while !*stop.borrow() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        // The dispatcher may still be starting (getMe); retry until it takes the stop.
        loop {
            match token.shutdown() {
                Ok(done) => {
                    done.await;
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    });
    tracing::info!("the Telegram bot is polling for updates");
    dispatcher
        .dispatch_with_listener(
            listener,
            LoggingErrorHandler::with_custom_text("getUpdates failed"),
        )
        .await;
    let _ = shutdown.await;
    match notifier_task.await {
        Ok(result) => result,
        Err(e) => Err(BotError::Internal(format!("the notifier task failed: {e}"))),
    }
}

/// Whether maintenance mode is on (kept in memory, loaded from the log at start).
pub(crate) struct Maintenance(AtomicBool);

impl Maintenance {
    pub(crate) fn new() -> Self {
        Self(AtomicBool::new(false))
    }
    pub(crate) fn on(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
    pub(crate) fn set(&self, on: bool) {
        self.0.store(on, Ordering::Release);
    }
}
