//! `tally serve`: the HTTP API, the projectors and the reactors in one process (or
//! split across processes with `--roles`); and `tally keys create|list|revoke`.
//!
//! Settings come from, first to last: the command line, the environment, `tally.toml`
//! (or `--config PATH`), the defaults. With none at all Tally runs on SQLite at
//! `./data/tally.db` and listens on 127.0.0.1:8080.
//!
//! One file: every setting's three spellings (flag and environment, `tally.toml`,
//! the checked value) are read side by side, so none is added in one place only.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::Deserialize;
use tally_api::auth::{Role, create_key, list_keys, revoke_key};
use tally_api::limits::{DEFAULT_PER_IP, DEFAULT_PER_KEY, Limit, Limits};
use tally_domain::Config;
use tally_projections::Projector;
use tally_store::{DEFAULT_DATABASE_URL, PostgresOptions};

use crate::DatabaseArgs;

/// The address `tally serve` listens on unless told.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Options of `tally serve`. Each can also be given in the environment (the name in
/// brackets) or in `tally.toml` (the same name, lower case, without `TALLY_`).
#[derive(Args, Default)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below [default: ./tally.toml if present].
    #[arg(long, env = "TALLY_CONFIG")]
    pub config: Option<PathBuf>,
    /// sqlite://PATH (embedded) or postgres://user@host/db [default: sqlite://./data/tally.db].
    #[arg(long, env = "TALLY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TALLY_LISTEN")]
    pub listen: Option<String>,
    /// What this process runs, comma-separated: api, projector, reactor
    /// [default: api,projector,reactor]. Run one projector and one reactor per database
    /// (a second reactor on Postgres waits as a standby); as many api as you like.
    #[arg(long, env = "TALLY_ROLES")]
    pub roles: Option<String>,
    /// Bootstrap keys, `role:name:key` entries separated by commas (role: service,
    /// admin or auditor; key at least 16 characters).
    #[arg(long, env = "TALLY_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// Webhook secrets, `provider:secret` entries separated by commas (`oxapay`: the
    /// merchant API key; any other provider: the generic X-Tally-Signature secret).
    #[arg(long, env = "TALLY_WEBHOOK_SECRETS", hide_env_values = true)]
    pub webhook_secrets: Option<String>,
    /// Requests per second per API key, burst twice that; 0: no limit [default: 5000].
    #[arg(long, env = "TALLY_RATE_LIMIT_PER_KEY")]
    pub rate_limit_per_key: Option<u32>,
    /// Requests per second per client address without a key (health, metrics,
    /// webhooks), burst twice that; 0: no limit [default: 100].
    #[arg(long, env = "TALLY_RATE_LIMIT_PER_IP")]
    pub rate_limit_per_ip: Option<u32>,
    /// Log lines as `text` or `json` (one JSON object per line) [default: text]; the
    /// level comes from RUST_LOG (default info).
    #[arg(long, env = "TALLY_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// The Telegram bot's token from @BotFather; when set, the bot runs too (role
    /// `bot`, long polling).
    #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true)]
    pub telegram_bot_token: Option<String>,
    /// A self-hosted Telegram Bot API server [default: https://api.telegram.org].
    #[arg(long, env = "TELEGRAM_API_URL")]
    pub telegram_api_url: Option<String>,
    /// Telegram user ids allowed to run the bot's admin commands, separated by commas.
    #[arg(long, env = "TALLY_ADMIN_IDS")]
    pub admin_ids: Option<String>,
    /// Which API key names are which admins' Telegram ids, as `key-name:telegram-id`
    /// entries separated by commas: the approver of a refund is never its requester,
    /// whether either acted through the API or the bot.
    #[arg(long, env = "TALLY_ADMIN_LINKS")]
    pub admin_links: Option<String>,
    /// Take the bot's updates by webhook at this public HTTPS URL instead of long
    /// polling; its path is served by the API's listener (needs role api too).
    #[arg(long, env = "TELEGRAM_WEBHOOK_URL")]
    pub telegram_webhook_url: Option<String>,
    /// The secret Telegram sends with each webhook update (1-256 of A-Z a-z 0-9 _ -).
    #[arg(long, env = "TELEGRAM_WEBHOOK_SECRET", hide_env_values = true)]
    pub telegram_webhook_secret: Option<String>,
    /// Seconds per posting cycle of the poster (each due ad slot is posted once per
    /// cycle) [default: 14400, four hours; at least 60].
    #[arg(long, env = "TALLY_POST_CYCLE_SECONDS")]
    pub post_cycle_seconds: Option<u64>,
    /// The posts of a cycle are spread over its first this many seconds [default: the
    /// whole cycle; 0: as fast as Telegram's limits allow].
    #[arg(long, env = "TALLY_POST_SPREAD_SECONDS")]
    pub post_spread_seconds: Option<u64>,
    /// Let the poster use Telegram's paid broadcasts (`allow_paid_broadcast`: beyond
    /// 30 messages/s, paid in Stars from the bot's balance) [default: false].
    #[arg(long, env = "TALLY_POST_PAID_BROADCAST")]
    pub post_paid_broadcast: Option<bool>,
    /// A payment is attributed to the campaign post its payer clicked at most this
    /// many hours before [default: 72].
    #[arg(long, env = "TALLY_ATTRIBUTION_WINDOW_HOURS")]
    pub attribution_window_hours: Option<u32>,
    /// The low-balance alert's default threshold in credits [default: off].
    #[arg(long, env = "TALLY_LOW_BALANCE_THRESHOLD")]
    pub low_balance_threshold: Option<String>,
    /// A low-balance alert fires at most once in this many seconds per account
    /// [default: 86400].
    #[arg(long, env = "TALLY_LOW_BALANCE_ALERT_PERIOD_SECONDS")]
    pub low_balance_alert_period_seconds: Option<u64>,
    /// Webhook endpoints may be on loopback or private addresses (tests, a receiver
    /// inside the operator's own network) [default: false].
    #[arg(long, env = "TALLY_WEBHOOKS_ALLOW_PRIVATE")]
    pub webhooks_allow_private: Option<bool>,
    /// What `/terms` says in English [default: a built-in text].
    #[arg(long, env = "TALLY_TERMS_EN")]
    pub terms_en: Option<String>,
    /// What `/terms` says in Russian.
    #[arg(long, env = "TALLY_TERMS_RU")]
    pub terms_ru: Option<String>,
    /// What `/paysupport` says in English [default: a built-in text].
    #[arg(long, env = "TALLY_PAYSUPPORT_EN")]
    pub paysupport_en: Option<String>,
    /// What `/paysupport` says in Russian.
    #[arg(long, env = "TALLY_PAYSUPPORT_RU")]
    pub paysupport_ru: Option<String>,
}

/// `tally.toml`: the same settings as the environment.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    database_url: Option<String>,
    listen: Option<String>,
    roles: Option<String>,
    api_keys: Option<String>,
    webhook_secrets: Option<String>,
    rate_limit_per_key: Option<u32>,
    rate_limit_per_ip: Option<u32>,
    log_format: Option<String>,
    telegram_bot_token: Option<String>,
    telegram_api_url: Option<String>,
    admin_ids: Option<String>,
    admin_links: Option<String>,
    telegram_webhook_url: Option<String>,
    telegram_webhook_secret: Option<String>,
    post_cycle_seconds: Option<u64>,
    post_spread_seconds: Option<u64>,
    post_paid_broadcast: Option<bool>,
    attribution_window_hours: Option<u32>,
    low_balance_threshold: Option<String>,
    low_balance_alert_period_seconds: Option<u64>,
    webhooks_allow_private: Option<bool>,
    terms_en: Option<String>,
    terms_ru: Option<String>,
    paysupport_en: Option<String>,
    paysupport_ru: Option<String>,
    /// The operator's campaigns, by id (`[campaigns.<id>]`; tally.toml only).
    campaigns: Option<crate::campaigns::FromFile>,
    /// Payment providers, `[providers.<name>] <key> = …` (also
    /// `TALLY_PROVIDERS_<NAME>_<KEY>`).
    providers: Option<BTreeMap<String, BTreeMap<String, toml::Value>>>,
    /// The plans for sale (`[plans.<id>] slots, period_days, price, currency,
    /// prices = { RUB = "990" }`), replacing the built-in ones.
    plans: Option<BTreeMap<tally_domain::values::PlanId, tally_domain::config::Plan>>,
    /// The credit packs for sale (`[credit_packs.<id>] credits, price, currency,
    /// prices`), replacing the built-in ones.
    credit_packs: Option<BTreeMap<tally_domain::values::PackId, tally_domain::config::CreditPack>>,
}

/// The providers' settings: tally.toml's `[providers.*]` with the environment's
/// `TALLY_PROVIDERS_<NAME>_<KEY>` over them, and Stars when there is a bot token.
fn provider_settings(
    file: Option<BTreeMap<String, BTreeMap<String, toml::Value>>>,
    stars: Option<tally_providers::settings::StarsSettings>,
) -> anyhow::Result<tally_providers::Settings> {
    let mut entries: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (provider, keys) in file.unwrap_or_default() {
        let table = entries.entry(provider.clone()).or_default();
        for (key, value) in keys {
            let text = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .filter_map(|item| item.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                _ => bail!("providers.{provider}.{key} is not a string, number or list"),
            };
            table.insert(key, text);
        }
    }
    for (name, value) in std::env::vars() {
        let Some(rest) = name.strip_prefix("TALLY_PROVIDERS_") else {
            continue;
        };
        let Some((provider, key)) = rest.split_once('_') else {
            bail!("{name} names no setting: write TALLY_PROVIDERS_<PROVIDER>_<KEY>");
        };
        entries
            .entry(provider.to_ascii_lowercase())
            .or_default()
            .insert(key.to_ascii_lowercase(), value);
    }
    let mut settings =
        tally_providers::Settings::from_entries(&entries).map_err(|e| anyhow::anyhow!(e))?;
    if let Some(stars) = stars {
        settings = settings.with(tally_providers::ProviderSettings::Stars(stars));
    }
    Ok(settings)
}

/// What a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Roles {
    /// The HTTP API.
    pub api: bool,
    /// The projectors (read models).
    pub projector: bool,
    /// The reactors (payments → credits, refunds, expiries).
    pub reactor: bool,
    /// The Telegram bot and its notifier.
    pub bot: bool,
    /// The poster: ad slots posted through the bot each cycle.
    pub poster: bool,
}

impl std::str::FromStr for Roles {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> anyhow::Result<Self> {
        let mut roles = Roles::default();
        for role in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match role {
                "api" => roles.api = true,
                "projector" => roles.projector = true,
                "reactor" => roles.reactor = true,
                "bot" => roles.bot = true,
                "poster" => roles.poster = true,
                other => bail!("role {other:?} is none of api, projector, reactor, bot, poster"),
            }
        }
        if roles == Roles::default() {
            bail!(
                "--roles names nothing to run; give some of api, projector, reactor, bot, poster"
            );
        }
        Ok(roles)
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `tally serve`'s settings, resolved.
pub struct Settings {
    /// The database.
    pub database_url: String,
    /// Where the API listens.
    pub listen: String,
    /// What runs.
    pub roles: Roles,
    /// Bootstrap keys.
    pub api_keys: String,
    /// Webhook secrets.
    pub webhook_secrets: String,
    /// Rate limits.
    pub limits: Limits,
    /// Log format.
    pub log_format: LogFormat,
    /// The bot's settings, when the bot or the poster runs.
    pub bot: Option<tally_bot::Settings>,
    /// How the poster paces its cycles.
    pub posting: tally_bot::poster::PosterSettings,
    /// The attribution window of campaign conversions, in hours.
    pub attribution_window_hours: u32,
    /// The operator's campaigns from tally.toml, checked (`crate::campaigns`).
    pub campaigns: Vec<(String, tally_domain::campaign::CampaignDef)>,
    /// API key names linked to admins' Telegram ids.
    pub admin_links: tally_domain::config::AdminLinks,
    /// The payment providers.
    pub providers: tally_providers::Settings,
    /// The low-balance alert's default threshold.
    pub low_balance_threshold: Option<tally_domain::values::Amount>,
    /// Seconds between two alerts of one account.
    pub low_balance_alert_period_seconds: u64,
    /// Webhook endpoints may be on private addresses.
    pub webhooks_allow_private: bool,
    /// The plans for sale, when tally.toml names them.
    pub plans: Option<BTreeMap<tally_domain::values::PlanId, tally_domain::config::Plan>>,
    /// The credit packs for sale, when tally.toml names them.
    pub credit_packs:
        Option<BTreeMap<tally_domain::values::PackId, tally_domain::config::CreditPack>>,
}

impl Settings {
    /// Command line and environment over the file over the defaults.
    pub fn resolve(args: ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None if Path::new("tally.toml").exists() => read_file(Path::new("tally.toml"))?,
            None => File::default(),
        };
        let log_format = match args.log_format.or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("log format {other:?} is neither text nor json"),
        };
        let limit = |given: Option<u32>, default: u32| Limit::per_second(given.unwrap_or(default));
        let admin_links = tally_domain::config::AdminLinks::parse(
            &args.admin_links.or(file.admin_links).unwrap_or_default(),
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let token = args
            .telegram_bot_token
            .or(file.telegram_bot_token)
            .filter(|t| !t.trim().is_empty());
        let stars = token
            .clone()
            .map(|token| tally_providers::settings::StarsSettings {
                token,
                api_url: args
                    .telegram_api_url
                    .clone()
                    .or(file.telegram_api_url.clone())
                    .unwrap_or_else(|| "https://api.telegram.org".into()),
            });
        let providers = provider_settings(file.providers.clone(), stars)?;
        let low_balance_threshold = args
            .low_balance_threshold
            .or(file.low_balance_threshold.clone())
            .filter(|t| !t.trim().is_empty() && t.trim() != "off")
            .map(|t| {
                t.parse::<tally_domain::values::Amount>().map_err(|e| {
                    anyhow::anyhow!("TALLY_LOW_BALANCE_THRESHOLD {t:?}: {e} (credits, or off)")
                })
            })
            .transpose()?;
        let low_balance_alert_period_seconds = args
            .low_balance_alert_period_seconds
            .or(file.low_balance_alert_period_seconds)
            .unwrap_or(Config::default().low_balance_alert_period_seconds);
        let webhooks_allow_private = args
            .webhooks_allow_private
            .or(file.webhooks_allow_private)
            .unwrap_or(false);
        let default_roles = match token {
            Some(_) => "api,projector,reactor,bot,poster",
            None => "api,projector,reactor",
        };
        let roles: Roles = args
            .roles
            .or(file.roles)
            .as_deref()
            .unwrap_or(default_roles)
            .parse()?;
        let bot = match (roles.bot || roles.poster, token) {
            (false, _) => None,
            (true, None) => {
                bail!(
                    "the bot and poster roles need TELEGRAM_BOT_TOKEN (the token from @BotFather)"
                )
            }
            (true, Some(token)) => {
                let admins = args.admin_ids.or(file.admin_ids).unwrap_or_default();
                let admins = tally_bot::parse_admin_ids(&admins)
                    .map_err(|e| anyhow::anyhow!("TALLY_ADMIN_IDS: {e}"))?;
                let mut bot = tally_bot::Settings::new(token, admins);
                bot.policy = tally_bot::Policy {
                    terms_en: args.terms_en.or(file.terms_en),
                    terms_ru: args.terms_ru.or(file.terms_ru),
                    paysupport_en: args.paysupport_en.or(file.paysupport_en),
                    paysupport_ru: args.paysupport_ru.or(file.paysupport_ru),
                };
                if let Some(url) = args.telegram_api_url.or(file.telegram_api_url) {
                    bot.api_url = Some(url.parse().with_context(|| {
                        format!(
                            "TELEGRAM_API_URL {url:?} is not a URL (e.g. http://127.0.0.1:8081)"
                        )
                    })?);
                }
                let webhook = args.telegram_webhook_url.or(file.telegram_webhook_url);
                let secret = args
                    .telegram_webhook_secret
                    .or(file.telegram_webhook_secret);
                match (webhook, secret) {
                    (None, None) => {}
                    (Some(url), Some(secret)) => {
                        tally_bot::check_webhook_secret(&secret)
                            .map_err(|e| anyhow::anyhow!("TELEGRAM_WEBHOOK_SECRET: {e}"))?;
                        if !roles.api {
                            bail!(
                                "a webhook is served by the API's listener: run role api with role bot"
                            );
                        }
                        bot.delivery = tally_bot::Delivery::Webhook {
                            url: url.parse().with_context(|| {
                                format!("TELEGRAM_WEBHOOK_URL {url:?} is not a URL (e.g. https://bot.example.com/telegram)")
                            })?,
                            secret,
                        };
                    }
                    _ => bail!(
                        "a webhook needs both TELEGRAM_WEBHOOK_URL and TELEGRAM_WEBHOOK_SECRET"
                    ),
                }
                Some(bot)
            }
        };
        let cycle_seconds = match args.post_cycle_seconds.or(file.post_cycle_seconds) {
            None => tally_domain::cycle::CYCLE_SECONDS_DEFAULT,
            Some(seconds) if seconds >= tally_domain::cycle::CYCLE_SECONDS_MIN => seconds,
            Some(seconds) => bail!(
                "TALLY_POST_CYCLE_SECONDS is {seconds}; at least {} (a shorter cycle only floods chats)",
                tally_domain::cycle::CYCLE_SECONDS_MIN
            ),
        };
        let attribution_window_hours = match args
            .attribution_window_hours
            .or(file.attribution_window_hours)
        {
            Some(0) => bail!("TALLY_ATTRIBUTION_WINDOW_HOURS is 0; at least 1"),
            Some(hours) => hours,
            None => Config::default().attribution_window_hours,
        };
        let campaigns = crate::campaigns::check(file.campaigns.clone().unwrap_or_default())?;
        let mut posting = tally_bot::poster::PosterSettings::new(cycle_seconds);
        match args.post_spread_seconds.or(file.post_spread_seconds) {
            Some(seconds) if seconds > cycle_seconds => bail!(
                "TALLY_POST_SPREAD_SECONDS is {seconds}, longer than the cycle ({cycle_seconds} s): at most the cycle"
            ),
            Some(seconds) => posting.spread_seconds = seconds,
            None => {}
        }
        posting.allow_paid_broadcast = args
            .post_paid_broadcast
            .or(file.post_paid_broadcast)
            .unwrap_or(false);
        Ok(Self {
            database_url: args
                .database_url
                .or(file.database_url)
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string()),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
            roles,
            api_keys: args.api_keys.or(file.api_keys).unwrap_or_default(),
            webhook_secrets: args
                .webhook_secrets
                .or(file.webhook_secrets)
                .unwrap_or_default(),
            limits: Limits {
                per_key: limit(
                    args.rate_limit_per_key.or(file.rate_limit_per_key),
                    DEFAULT_PER_KEY,
                ),
                per_ip: limit(
                    args.rate_limit_per_ip.or(file.rate_limit_per_ip),
                    DEFAULT_PER_IP,
                ),
            },
            admin_links,
            log_format,
            bot,
            posting,
            attribution_window_hours,
            campaigns,
            providers,
            low_balance_threshold,
            low_balance_alert_period_seconds,
            webhooks_allow_private,
            plans: file.plans,
            credit_packs: file.credit_packs,
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<File> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in the config file {}", path.display()))
}

/// Runs `tally serve` until Ctrl-C or SIGTERM; then stops accepting, finishes the
/// requests in flight and the projectors' batches, and exits 0. The process is wired
/// by [`tally_app::start`], as every test that runs the app wires it.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    tally_api::observe::install_recorder();
    let roles = settings.roles;
    let listener = match tokio::net::TcpListener::bind(&settings.listen).await {
        Ok(listener) => Some(listener),
        Err(error) if roles.api => {
            return Err(error).with_context(|| format!("listening on {}", settings.listen));
        }
        // Without the API the work goes on if the address is taken (an API process
        // beside this one on the default address): said loudly, with the setting.
        Err(error) => {
            tracing::warn!(
                %error,
                listen = %settings.listen,
                "no listener for /healthz, /readyz and /metrics: the address is taken; give this process its own with --listen or TALLY_LISTEN"
            );
            None
        }
    };
    let (url, settings_campaigns) = (settings.database_url.clone(), settings.campaigns.clone());
    let app = tally_app::App {
        database_url: settings.database_url,
        roles: tally_app::Roles {
            api: roles.api,
            projector: roles.projector,
            reactor: roles.reactor,
        },
        config: {
            let mut config = Config {
                admin_links: settings.admin_links,
                attribution_window_hours: settings.attribution_window_hours,
                low_balance_threshold: settings.low_balance_threshold,
                low_balance_alert_period_seconds: settings.low_balance_alert_period_seconds,
                ..Config::default()
            };
            if let Some(plans) = settings.plans {
                config.plans = plans;
            }
            if let Some(packs) = settings.credit_packs {
                config.credit_packs = packs;
            }
            config
        },
        providers: settings.providers,
        webhooks: tally_webhooks::Settings {
            allow_private: settings.webhooks_allow_private,
            ..tally_webhooks::Settings::default()
        },
        api_keys: settings.api_keys,
        webhook_secrets: settings.webhook_secrets,
        limits: settings.limits,
        bot: settings.bot.clone().filter(|_| roles.bot),
        poster: settings
            .bot
            .filter(|_| roles.poster)
            .map(|bot| (bot, settings.posting)),
        clock: tally_ledger::Clock::system(),
    };
    // Listening for SIGTERM from before the start: a stop asked for while starting
    // is a clean stop once started, not a death by signal.
    let shutdown = tokio::spawn(shutdown_signal());
    let running = tally_app::start(app, listener).await?;
    crate::campaigns::define(&running.ledgers, &settings_campaigns).await?;
    // Whoever started the server may have stopped reading its output: a closed
    // stdout must not take the server down with it.
    if let Some(address) = running.addr {
        let said = match roles.api {
            true => format!(
                "tally listens on http://{address} (database {})\ncreate a key: tally keys create --role service --name my-bot",
                crate::redact(&url)
            ),
            false => format!(
                "tally serves /healthz, /readyz and /metrics on http://{address} (no API role)"
            ),
        };
        let _ = writeln!(std::io::stdout(), "{said}");
    }
    tracing::info!(roles = %running.roles().join(","), "running");
    let _ = shutdown.await;
    tracing::info!("shutting down: finishing requests in flight and batches");
    running.stop().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// What to do with API keys.
#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it (the only time it is shown).
    Create {
        /// service, admin or auditor.
        #[arg(long)]
        role: String,
        /// A name for it (the actor of the events its calls cause).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List keys (names, roles, dates; never the keys).
    List(DatabaseArgs),
    /// Revoke a key by name.
    Revoke {
        /// The key's name.
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// Runs a `tally keys` command.
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let open = |url: String| async move {
        let store = tally_store::open(&url, PostgresOptions::default())
            .await
            .with_context(|| format!("opening {}", crate::redact(&url)))?;
        anyhow::Ok(Projector::open(store, &url, vec![]).await?)
    };
    match command {
        KeysCommand::Create { role, name, db } => {
            let role: Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let projector = open(db.database_url).await?;
            let key = create_key(projector.pool(), role, &name)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("{key}");
            eprintln!("the {role} key {name} is shown once; keep it (only its hash is stored)");
        }
        KeysCommand::List(db) => {
            let projector = open(db.database_url).await?;
            for key in list_keys(projector.pool()).await? {
                println!("{}", serde_json::to_string(&key)?);
            }
        }
        KeysCommand::Revoke { name, db } => {
            let projector = open(db.database_url).await?;
            if !revoke_key(projector.pool(), &name).await? {
                bail!("there is no live key named {name}");
            }
            println!("revoked {name}");
        }
    }
    Ok(())
}
