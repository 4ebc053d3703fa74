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
//! Updates come by long polling, or by webhook (the route is merged into the API's
//! server; Telegram's secret-token header is checked). They are dispatched by
//! teloxide: different chats concurrently, one chat's updates in order. Outgoing calls go through teloxide's `Throttle`, which keeps
//! Telegram's limits and waits out a 429's `retry_after`.
//!
//! Idempotency: Telegram redelivers an update the bot did not confirm. Every command
//! the bot runs carries an id derived from the update (the chat and message id, the
//! payment's id, the charge id), so a redelivered update is a replay, never a second
//! application.

pub mod admin;
pub mod ads;
pub mod campaigns;
pub mod chats;
mod context;
pub mod notifier;
pub mod payments;
pub mod post_errors;
pub mod poster;
pub mod texts;
pub mod users;

use std::collections::HashSet;
use std::sync::Arc;

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

/// How long the bot may take to finish the updates in hand once told to stop.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// The stream that records maintenance mode switches.
pub const MAINTENANCE_STREAM: &str = "bot-maintenance";
/// The event type of a maintenance switch.
pub const MAINTENANCE_SWITCHED: &str = "bot.maintenance_switched";

/// How the bot reaches Telegram and who its admins are. (Its `Debug` leaves the
/// token out.)
#[derive(Clone)]
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
    /// Long polling or a webhook.
    pub delivery: Delivery,
    /// What `/terms` and `/paysupport` answer (Telegram requires both of bots that
    /// sell with Stars).
    pub policy: Policy,
}

/// The operator's own words for `/terms` and `/paysupport`, per language (`None`:
/// the built-in text).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Terms of sale, English.
    pub terms_en: Option<String>,
    /// Terms of sale, Russian.
    pub terms_ru: Option<String>,
    /// Where to get help with a payment, English.
    pub paysupport_en: Option<String>,
    /// Where to get help with a payment, Russian.
    pub paysupport_ru: Option<String>,
}

/// How the bot receives updates.
#[derive(Clone, Default)]
pub enum Delivery {
    /// `getUpdates` long polling (no public address needed).
    #[default]
    Polling,
    /// Telegram posts updates to `url` (public HTTPS, its path served by the API's
    /// server) with `secret` in `X-Telegram-Bot-Api-Secret-Token`.
    Webhook {
        /// The public URL Telegram posts to.
        url: Url,
        /// The secret Telegram sends back with every update.
        secret: String,
    },
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
            delivery: Delivery::Polling,
            policy: Policy::default(),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("token", &"<redacted>")
            .field("api_url", &self.api_url)
            .field("admin_ids", &self.admin_ids)
            .field("poll_timeout_seconds", &self.poll_timeout_seconds)
            .field("delivery", &self.delivery)
            .finish()
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Delivery::Polling => f.write_str("Polling"),
            Delivery::Webhook { url, .. } => write!(f, "Webhook({url})"),
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
/// presses, pre-checkout queries, the bot's own membership changes.
fn handler() -> teloxide::dispatching::UpdateHandler<BotError> {
    dptree::entry()
        .branch(Update::filter_pre_checkout_query().endpoint(payments::on_pre_checkout))
        .branch(Update::filter_my_chat_member().endpoint(chats::on_my_chat_member))
        .branch(Update::filter_message().endpoint(users::on_message))
        .branch(Update::filter_callback_query().endpoint(users::on_callback))
}

/// Runs the bot (by long polling or webhook, as `settings` say) and its notifier
/// until `stop` turns true. In webhook mode the routes are not served: use [`start`].
pub async fn run(
    context: Arc<Context>,
    settings: &Settings,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), BotError> {
    start(context, settings, stop).await?.finished().await
}

/// A bot started by [`start`].
pub struct Running {
    /// In webhook mode, the route Telegram posts updates to (it checks the
    /// `X-Telegram-Bot-Api-Secret-Token` header): merge it into the HTTP server.
    pub webhook_routes: Option<axum::Router>,
    task: tokio::task::JoinHandle<Result<(), BotError>>,
}

impl Running {
    /// Waits until the bot and its notifier have stopped.
    pub async fn finished(self) -> Result<(), BotError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(BotError::Internal(format!("the bot task failed: {e}"))),
        }
    }
}

/// Starts the bot and its notifier until `stop` turns true. Long polling starts in the
/// background, waiting for Telegram if it cannot be reached. A webhook is registered
/// with Telegram before this returns (an error if Telegram refuses it), and its route
/// is handed back to be served.
pub async fn start(
    context: Arc<Context>,
    settings: &Settings,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Running, BotError> {
    context.load_maintenance().await?;
    let bot = client(settings);
    // The notifier tells what happens from now on: its place in the log is taken
    // here, not when its loop first runs (which may be later, under load).
    notifier::Notifier::new(context.clone(), bot.clone())
        .register()
        .await?;
    match &settings.delivery {
        Delivery::Polling => {
            let timeout = std::time::Duration::from_secs(u64::from(settings.poll_timeout_seconds));
            let task = tokio::spawn(async move {
                let mut stop = stop;
                if !reach_telegram(&bot, &mut stop).await {
                    return Ok(());
                }
                let listener = Polling::builder(bot.clone())
                    .timeout(timeout)
                    .delete_webhook()
                    .await
                    .build();
                tracing::info!("the Telegram bot is polling for updates");
                dispatch(context, bot, listener, stop).await
            });
            Ok(Running {
                webhook_routes: None,
                task,
            })
        }
        Delivery::Webhook { url, secret } => {
            check_webhook_secret(secret).map_err(BotError::Internal)?;
            let options = teloxide::update_listeners::webhooks::Options::new(
                std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                url.clone(),
            )
            .secret_token(secret.clone());
            let (listener, deleted, routes) =
                teloxide::update_listeners::webhooks::axum_to_router(bot.clone(), options).await?;
            // Resolves once the listener stopped, after deleting the webhook.
            tokio::spawn(deleted);
            tracing::info!(url = %url, "the Telegram bot takes updates by webhook");
            let task = tokio::spawn(dispatch(context, bot, listener, stop));
            Ok(Running {
                webhook_routes: Some(routes),
                task,
            })
        }
    }
}

/// Waits until Telegram answers `getMe` (the dispatcher asks for it first and gives up
/// for good if it cannot); `false` if stopped meanwhile.
async fn reach_telegram(bot: &TgBot, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    let mut wait = std::time::Duration::from_millis(200);
    loop {
        match bot.get_me().await {
            Ok(me) => {
                tracing::info!(username = me.username(), "connected to Telegram");
                return true;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?wait, "cannot reach the Telegram Bot API");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return false;
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
    }
}

/// Dispatches the updates `listener` hears, with the notifier beside, until `stop`.
async fn dispatch<L>(
    context: Arc<Context>,
    bot: TgBot,
    listener: L,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), BotError>
where
    L: teloxide::update_listeners::UpdateListener + Send,
    L::Err: std::fmt::Debug,
{
    match bot.get_me().await {
        Ok(me) => {
            let _ = context.username.set(me.username().to_string());
        }
        Err(error) => {
            tracing::warn!(%error, "getMe failed: commands addressed by name are ignored")
        }
    }
    let notifier = notifier::Notifier::new(context.clone(), bot.clone());
    let notifier_stop = stop.clone();
    let notifier_task = tokio::spawn(async move { notifier.run(notifier_stop).await });
    let mut dispatcher = Dispatcher::builder(bot, handler())
        .dependencies(dptree::deps![context])
        .default_handler(|_| async {})
        .error_handler(LoggingErrorHandler::with_custom_text(
            "a bot handler failed",
        ))
        .build();
    let token = dispatcher.shutdown_token();
    let mut grace = stop.clone();
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
    let dispatching = dispatcher.dispatch_with_listener(
        listener,
        LoggingErrorHandler::with_custom_text("receiving updates failed"),
    );
    // A webhook's listener ends only when the HTTP server lets go of its route; bound
    // the wait so a connection held open cannot keep the process from stopping.
    tokio::select! {
        _ = dispatching => {}
        _ = async {
            while !*grace.borrow() {
                if grace.changed().await.is_err() {
                    break;
                }
            }
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "the bot's dispatcher did not stop in time; dropped");
        }
    }
    shutdown.abort();
    match notifier_task.await {
        Ok(result) => result,
        Err(e) => Err(BotError::Internal(format!("the notifier task failed: {e}"))),
    }
}

/// Telegram's rule for a webhook's secret token: 1 to 256 of `A-Z a-z 0-9 _ -`.
pub fn check_webhook_secret(secret: &str) -> Result<(), String> {
    let fine = (1..=256).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match fine {
        true => Ok(()),
        false => {
            Err("the webhook secret must be 1 to 256 characters of A-Z, a-z, 0-9, _ and -".into())
        }
    }
}

/// How long a process trusts what it last read of the maintenance switch before it
/// reads the log again (another process may have switched it).
pub const MAINTENANCE_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// The maintenance switch as this process last read it from `bot-maintenance`.
pub(crate) struct Maintenance(std::sync::Mutex<MaintenanceRead>);

#[derive(Clone, Copy)]
pub(crate) struct MaintenanceRead {
    /// Whether it is on.
    pub(crate) on: bool,
    /// The stream version read up to.
    pub(crate) version: u64,
    /// When the log was last read (`None`: never).
    pub(crate) read_at: Option<std::time::Instant>,
}

impl Maintenance {
    pub(crate) fn new() -> Self {
        Self(std::sync::Mutex::new(MaintenanceRead {
            on: false,
            version: 0,
            read_at: None,
        }))
    }

    pub(crate) fn get(&self) -> MaintenanceRead {
        match self.0.lock() {
            Ok(read) => *read,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// Records a read of the log up to `version` (never going back to an older one).
    pub(crate) fn set(&self, on: bool, version: u64) {
        let mut read = match self.0.lock() {
            Ok(read) => read,
            Err(poisoned) => poisoned.into_inner(),
        };
        if version >= read.version {
            *read = MaintenanceRead {
                on,
                version,
                read_at: Some(std::time::Instant::now()),
            };
        }
    }
}
