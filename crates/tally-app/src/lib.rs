//! # tally-app: the wiring of a Tally process
//!
//! What `tally serve` runs, built in one place: the log, the read models and their
//! projector, one set of command services for the whole process (the API, the bot and
//! the reactors share one worker per stream), the HTTP API (or, without that role,
//! its health, readiness and metrics), the reactors and the Telegram bot. The binary
//! calls [`start`] with the listener it bound; the test suites call the same function
//! on port 0, so what they exercise is what production runs.
//!
//! Process-wide concerns stay with the caller: the metrics recorder, logging, signals,
//! and what to print.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tally_api::limits::Limits;
use tally_api::{AppState, Keys};
use tally_domain::Config;
use tally_ledger::Ledgers;
use tally_projections::{Projector, Reactors, default_projections};
use tally_store::{EventStore, PostgresOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Roles {
    /// The HTTP API.
    pub api: bool,
    /// The projectors (read models).
    pub projector: bool,
    /// The reactors (payments → credits, refunds, expiries).
    pub reactor: bool,
}

impl Roles {
    /// Everything: what `tally serve` runs by default.
    pub const ALL: Roles = Roles {
        api: true,
        projector: true,
        reactor: true,
    };
}

/// What the wiring needs, resolved (from the command line, the environment and
/// `tally.toml` by the binary; written out by tests).
pub struct App {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// What runs.
    pub roles: Roles,
    /// The business's rules (plans, packs, hold bounds, admin links).
    pub config: Config,
    /// Bootstrap API keys, `role:name:key` entries separated by commas.
    pub api_keys: String,
    /// Webhook secrets, `provider:secret` entries separated by commas (generic
    /// signed webhooks; `oxapay`'s is its merchant API key).
    pub webhook_secrets: String,
    /// The payment providers Tally invoices through and hears from (Stars needs the
    /// bot's token, given here by the caller).
    pub providers: tally_providers::Settings,
    /// Rate limits of the API.
    pub limits: Limits,
    /// The Telegram bot, when it runs here.
    pub bot: Option<tally_bot::Settings>,
    /// The poster, when it runs here: the bot it posts through and its pacing.
    pub poster: Option<(tally_bot::Settings, tally_bot::poster::PosterSettings)>,
    /// The time decisions are made at (the system's; a test may move its own).
    pub clock: tally_ledger::Clock,
    /// How webhooks are delivered (the reactor role delivers them).
    pub webhooks: tally_webhooks::Settings,
}

impl App {
    /// Everything on `database_url` with the default rules, no keys, no bot.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            roles: Roles::ALL,
            config: Config::default(),
            api_keys: String::new(),
            webhook_secrets: String::new(),
            providers: tally_providers::Settings::default(),
            limits: Limits::default(),
            bot: None,
            poster: None,
            clock: tally_ledger::Clock::system(),
            webhooks: tally_webhooks::Settings::default(),
        }
    }
}

/// A started process: its parts (for tests and tools to look at) and its tasks.
pub struct Running {
    /// Where the API (or, without it, `/healthz`, `/readyz`, `/metrics`) is served.
    pub addr: Option<SocketAddr>,
    /// The log.
    pub store: Arc<dyn EventStore>,
    /// The process's command services.
    pub ledgers: Ledgers,
    /// The read models.
    pub projector: Arc<Projector>,
    /// The API's state, when the API runs here.
    pub state: Option<AppState>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

/// Opens the database, prepares the read models and starts what `app.roles` names
/// (and the bot when it has settings). `listener`: where the API, or without it the
/// health routes, are served (`None`: nowhere, e.g. when the address is taken).
pub async fn start(app: App, listener: Option<tokio::net::TcpListener>) -> anyhow::Result<Running> {
    let url = &app.database_url;
    // Money settings first: a provider without its secret, or a pack without a price
    // in a provider's currency, stops the process before it opens anything.
    let mut provider_settings = app
        .providers
        .clone()
        .with_webhook_secrets(&app.webhook_secrets)
        .map_err(|e| anyhow::anyhow!(e))?;
    // Stars invoice links and refunds go through the bot's own Bot API.
    if let Some(bot) = app.bot.as_ref().or(app.poster.as_ref().map(|(bot, _)| bot)) {
        provider_settings = provider_settings.with(tally_providers::ProviderSettings::Stars(
            tally_providers::settings::StarsSettings {
                token: bot.token.clone(),
                api_url: bot
                    .api_url
                    .as_ref()
                    .map(|u| u.as_str().trim_end_matches('/').to_string())
                    .unwrap_or_else(|| "https://api.telegram.org".into()),
            },
        ));
    }
    provider_settings
        .check_prices(&app.config)
        .map_err(|e| anyhow::anyhow!(e))?;
    let providers =
        tally_providers::Providers::new(&provider_settings).map_err(|e| anyhow::anyhow!(e))?;
    let store = tally_store::open(url, PostgresOptions::default())
        .await
        .with_context(|| format!("opening {}", redact(url)))?;
    let projector = Arc::new(Projector::open(store.clone(), url, default_projections()).await?);
    projector.prepare().await?;
    let ledgers = Ledgers::with_clock(store.clone(), Arc::new(app.config), app.clock);
    let (stop, stopped) = watch::channel(false);
    let mut tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)> = Vec::new();
    // The bot starts first: in webhook mode its route joins the API's listener.
    let mut webhook_routes = None;
    if let Some(bot) = &app.bot {
        let context = Arc::new(
            tally_bot::Context::new(ledgers.clone(), projector.clone(), bot.admin_ids.clone())
                .with_policy(bot.policy.clone())
                .with_providers(providers.clone()),
        );
        let mut running = tally_bot::start(context, bot, stopped.clone())
            .await
            .context("starting the Telegram bot")?;
        webhook_routes = running.webhook_routes.take();
        tasks.push((
            "bot",
            tokio::spawn(async move { Ok(running.finished().await?) }),
        ));
    }
    let keys = match app.roles.api {
        true => Keys::new(projector.pool().clone(), &app.api_keys)
            .map_err(|e| anyhow::anyhow!("TALLY_API_KEYS: {e}"))?,
        false => {
            Keys::new(projector.pool().clone(), "").map_err(|e| anyhow::anyhow!("keys: {e}"))?
        }
    };
    let mut state = AppState::new(
        ledgers.clone(),
        projector.clone(),
        keys,
        providers,
        app.limits,
    );
    state.webhooks = app.webhooks.clone();
    let mut addr = None;
    if let Some(listener) = listener {
        addr = Some(listener.local_addr()?);
        let mut shutdown = stopped.clone();
        let until = async move {
            let _ = shutdown.changed().await;
        };
        let task = match app.roles.api {
            true => {
                let mut router = tally_api::router(state.clone());
                if let Some(routes) = webhook_routes.take() {
                    router = router.merge(routes);
                }
                let service = router.into_make_service_with_connect_info::<SocketAddr>();
                let server = axum::serve(listener, service).with_graceful_shutdown(until);
                ("api", tokio::spawn(async move { Ok(server.await?) }))
            }
            // No API here, but the health, readiness and metrics of the work this
            // process does are still served.
            false => {
                let service = tally_api::ops_router(state.clone()).into_make_service();
                let server = axum::serve(listener, service).with_graceful_shutdown(until);
                ("ops", tokio::spawn(async move { Ok(server.await?) }))
            }
        };
        tasks.push(task);
    }
    if app.roles.projector {
        let running = tokio::spawn(projector.clone().run(stopped.clone()));
        tasks.push((
            "projector",
            tokio::spawn(async move { Ok(running.await??) }),
        ));
    }
    if let Some((bot, pacing)) = &app.poster {
        let context = Arc::new(tally_bot::Context::new(
            ledgers.clone(),
            projector.clone(),
            bot.admin_ids.clone(),
        ));
        let poster =
            tally_bot::poster::Poster::new(context, tally_bot::poster::client(bot), *pacing);
        let stopped = stopped.clone();
        tasks.push((
            "poster",
            tokio::spawn(async move { Ok(poster.run(stopped).await?) }),
        ));
    }
    if app.roles.reactor {
        let deliverer = Arc::new(tally_webhooks::Deliverer::new(
            store.clone(),
            projector.pool().clone(),
            app.webhooks.clone(),
        )?);
        let stopped_webhooks = stopped.clone();
        tasks.push((
            "webhooks",
            tokio::spawn(async move { Ok(deliverer.run(stopped_webhooks).await?) }),
        ));
        let reactors = Reactors::new(ledgers.clone(), projector.pool().clone())
            .with_health(projector.health().clone());
        let stopped = stopped.clone();
        tasks.push((
            "reactor",
            tokio::spawn(async move { Ok(reactors.run(stopped).await?) }),
        ));
    }
    Ok(Running {
        addr,
        store,
        ledgers,
        projector,
        state: app.roles.api.then_some(state),
        stop,
        tasks,
    })
}

impl Running {
    /// The names of the running tasks (`api`, `projector`, `reactor`, `bot`, `ops`).
    pub fn roles(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(name, _)| *name).collect()
    }

    /// Stops accepting, finishes the requests in flight and the batches, and waits
    /// for every task; the first that failed is the error.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.send(true)?;
        for (name, task) in self.tasks {
            task.await?
                .with_context(|| format!("the {name} stopped with an error"))?;
        }
        Ok(())
    }
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
