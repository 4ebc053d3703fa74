//! What every handler shares: the command services, the read models, the bot's own
//! small tables, and the one place a failure is turned into a message.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{AnyPool, Row};
use tally_domain::Config;
use tally_ledger::{LedgerError, Ledgers};
use tally_projections::{ProjectionError, Projector};
use tally_store::{Actor, ActorKind, EventStore, Metadata, StreamId};
use teloxide::prelude::*;
use teloxide::types::ChatId;

use crate::texts::{Lang, Text};
use crate::{MAINTENANCE_STREAM, Maintenance, TgBot};

/// How long a read waits for a read model to include the user's own last write.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(3);
/// How long a decision waits for a read model to reach the log's head.
pub const CURRENT_WAIT: Duration = Duration::from_secs(30);
/// Most refund dialogues waiting for a reason at once (older ones are dropped).
pub const PENDING_REFUNDS_MAX: usize = 10_000;

/// Why a handler could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// The ledger refused or failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A read model failed.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The log failed.
    #[error(transparent)]
    Store(#[from] tally_store::StoreError),
    /// Telegram failed.
    #[error("telegram: {0}")]
    Telegram(#[from] teloxide::RequestError),
    /// Refused for a reason the user can act on (not the ledger's: the bot's own
    /// checks, e.g. an ad that is not theirs).
    #[error("{0}")]
    Refused(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

impl From<tally_domain::DomainError> for BotError {
    fn from(error: tally_domain::DomainError) -> Self {
        BotError::Ledger(LedgerError::Domain(error))
    }
}

impl BotError {
    /// A refusal by the ledger's rules (the user can act on it), as opposed to a
    /// failure (the user can only retry).
    pub fn refusal(&self) -> Option<String> {
        match self {
            BotError::Ledger(LedgerError::Domain(e)) => Some(e.to_string()),
            BotError::Ledger(e) if e.code() == "idempotency_conflict" => Some(e.to_string()),
            BotError::Refused(reason) => Some(reason.clone()),
            _ => None,
        }
    }
}

/// A refund the user picked and whose reason the bot waits for.
#[derive(Clone, Debug)]
pub(crate) struct PendingRefund {
    pub(crate) position: u64,
    pub(crate) reference: String,
    pub(crate) amount: rust_decimal::Decimal,
}

/// The bot's shared state.
pub struct Context {
    pub(crate) ledgers: Ledgers,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) projector: Arc<Projector>,
    pub(crate) config: Arc<Config>,
    pub(crate) admin_ids: HashSet<i64>,
    pub(crate) maintenance: Maintenance,
    pub(crate) pending_refunds: Mutex<HashMap<i64, PendingRefund>>,
    /// Payments an admin chose to refund from `/user`, waiting for the reason, by admin.
    pub(crate) pending_payment_refunds: Mutex<HashMap<i64, String>>,
    /// The operator's `/terms` and `/paysupport`.
    pub(crate) policy: crate::Policy,
    /// The payment providers `/topup` and `/plans` offer besides Stars.
    pub(crate) providers: tally_providers::Providers,
    /// Ads being made in the chat, by user (`/ads`).
    pub(crate) pending_ads: Mutex<HashMap<i64, crate::ads::AdDraft>>,
    /// The bot's own username, from Telegram's `getMe`: commands addressed to other
    /// bots are ignored.
    pub(crate) username: std::sync::OnceLock<String>,
}

impl Context {
    /// The bot's state over the process's command services and read models.
    pub fn new(ledgers: Ledgers, projector: Arc<Projector>, admin_ids: HashSet<i64>) -> Self {
        Self {
            store: ledgers.store().clone(),
            config: ledgers.config().clone(),
            ledgers,
            projector,
            admin_ids,
            maintenance: Maintenance::new(),
            pending_refunds: Mutex::new(HashMap::new()),
            pending_payment_refunds: Mutex::new(HashMap::new()),
            pending_ads: Mutex::new(HashMap::new()),
            policy: crate::Policy::default(),
            providers: tally_providers::Providers::default(),
            username: std::sync::OnceLock::new(),
        }
    }

    /// The same, answering `/terms` and `/paysupport` with the operator's words.
    pub fn with_policy(mut self, policy: crate::Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The same, offering the configured payment providers in `/topup` and `/plans`.
    pub fn with_providers(mut self, providers: tally_providers::Providers) -> Self {
        self.providers = providers;
        self
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        self.projector.pool()
    }

    /// The bot's own username, once Telegram told it.
    pub(crate) fn username(&self) -> Option<&str> {
        self.username.get().map(String::as_str)
    }

    pub(crate) fn is_admin(&self, user: i64) -> bool {
        self.admin_ids.contains(&user)
    }

    /// Metadata of a user's own command.
    pub(crate) fn by_user(user: i64) -> Metadata {
        Metadata::by(Actor::new(ActorKind::User, user.to_string()))
    }

    /// Metadata of an admin's command: the admin's Telegram id.
    pub(crate) fn by_admin(admin: i64) -> Metadata {
        Metadata::by(Actor::new(ActorKind::Admin, admin.to_string()))
    }

    /// The language a user chose, else the one Telegram reports, else English.
    pub(crate) async fn lang(&self, user: i64, telegram_code: Option<&str>) -> Lang {
        match self.stored_lang(user).await {
            Ok(Some(lang)) => lang,
            _ => Lang::from_code(telegram_code),
        }
    }

    pub(crate) async fn stored_lang(&self, user: i64) -> Result<Option<Lang>, BotError> {
        let row = sqlx::query("SELECT language FROM bot_users WHERE user_id = $1")
            .bind(user)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| Lang::from_code(Some(r.get::<String, _>(0).as_str()))))
    }

    /// Records a user's language; `keep` leaves a language chosen earlier as it is.
    pub(crate) async fn set_lang(&self, user: i64, lang: Lang, keep: bool) -> Result<(), BotError> {
        let now = chrono::Utc::now().timestamp_micros();
        let sql = if keep {
            "INSERT INTO bot_users (user_id, language, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO NOTHING"
        } else {
            "INSERT INTO bot_users (user_id, language, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET language = excluded.language, \
             updated_at = excluded.updated_at"
        };
        sqlx::query(sql)
            .bind(user)
            .bind(lang.code())
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Waits (bounded) until `projection` includes `position`; a read model that lags
    /// further is read as it is.
    pub(crate) async fn wait_for_read_model(&self, projection: &str, position: u64) {
        if position == 0 {
            return;
        }
        if let Err(e) = self
            .projector
            .wait_for(projection, position, READ_YOUR_WRITES_WAIT)
            .await
        {
            tracing::warn!(error = %e, projection, position, "reading a lagging read model");
        }
    }

    /// Waits until `projection` includes the log as it stands now; a decision that
    /// reads it (which slots a user has, which slots post to a chat) is not taken on
    /// a copy that may be behind: after [`CURRENT_WAIT`] it fails instead (nothing
    /// done, the user told to retry).
    pub(crate) async fn read_model_current(&self, projection: &str) -> Result<(), BotError> {
        let head = self.store.last_position().await?;
        if head == 0 {
            return Ok(());
        }
        self.projector
            .wait_for(projection, head, CURRENT_WAIT)
            .await
            .map_err(|e| {
                BotError::Internal(format!(
                    "read model {projection} is behind the log ({e}); nothing was done"
                ))
            })
    }

    /// Reads the maintenance switches appended since the last read.
    pub(crate) async fn load_maintenance(&self) -> Result<(), BotError> {
        let stream = StreamId::new(MAINTENANCE_STREAM)?;
        let known = self.maintenance.get();
        let (mut on, mut version) = (known.on, known.version);
        loop {
            let events = self.store.read_stream(&stream, version + 1, 1_000).await?;
            let Some(last) = events.last() else { break };
            on = last
                .payload
                .get("on")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            version = last.stream_version;
        }
        self.maintenance.set(on, version);
        Ok(())
    }

    /// Whether maintenance is on, as the log said at most [`crate::MAINTENANCE_RECHECK`]
    /// ago (so a switch by an admin of another process reaches this one). If the log
    /// cannot be read, the last known state holds.
    pub(crate) async fn maintenance_on(&self) -> bool {
        let known = self.maintenance.get();
        let stale = known
            .read_at
            .is_none_or(|at| at.elapsed() >= crate::MAINTENANCE_RECHECK);
        if stale && let Err(error) = self.load_maintenance().await {
            tracing::warn!(%error, "could not read the maintenance switch; keeping the last known");
        }
        self.maintenance.get().on
    }

    /// Tells `chat` about a failure with an error id, and every admin what failed.
    pub(crate) async fn report_failure(
        &self,
        bot: &TgBot,
        chat: ChatId,
        lang: Lang,
        error: &BotError,
    ) {
        let error_id = uuid::Uuid::now_v7().simple().to_string()[20..].to_string();
        tracing::error!(%error, error_id, chat = chat.0, "a bot handler failed");
        let _ = bot
            .send_message(
                chat,
                lang.say(Text::Failed {
                    error_id: &error_id,
                }),
            )
            .await;
        for admin in &self.admin_ids {
            let _ = bot
                .send_message(
                    ChatId(*admin),
                    crate::admin::failure_note(&error_id, chat.0, error),
                )
                .await;
        }
    }
}
