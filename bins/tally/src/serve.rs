//! `tally serve`: the HTTP API, the projectors and the reactors in one process; and
//! `tally keys create|list|revoke`.

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use tally_api::auth::{Role, create_key, list_keys, revoke_key};
use tally_api::{AppState, Keys};
use tally_domain::Config;
use tally_ledger::Ledger;
use tally_projections::{Projector, Reactors, default_projections};
use tally_store::PostgresOptions;

use crate::DatabaseArgs;

/// Options of `tally serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    db: DatabaseArgs,
    /// Address to listen on.
    #[arg(long, env = "TALLY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Bootstrap keys, `role:name:key` entries separated by commas.
    #[arg(
        long,
        env = "TALLY_API_KEYS",
        default_value = "",
        hide_env_values = true
    )]
    api_keys: String,
    /// Webhook secrets, `provider:secret` entries separated by commas.
    #[arg(
        long,
        env = "TALLY_WEBHOOK_SECRETS",
        default_value = "",
        hide_env_values = true
    )]
    webhook_secrets: String,
}

/// Runs `tally serve` until Ctrl-C or SIGTERM; then stops accepting, finishes the
/// requests in flight and the projectors' batches, and exits 0.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let url = &args.db.database_url;
    let store = tally_store::open(url, PostgresOptions::default())
        .await
        .with_context(|| format!("opening {}", crate::redact(url)))?;
    let config = Arc::new(Config::default());
    let projector = Arc::new(Projector::open(store.clone(), url, default_projections()).await?);
    projector.prepare().await?;
    let reactors = Reactors::new(store.clone(), projector.pool().clone(), config.clone());
    let keys = Keys::new(projector.pool().clone(), &args.api_keys)
        .map_err(|e| anyhow::anyhow!("TALLY_API_KEYS: {e}"))?;
    let webhook_secrets = tally_api::payments::parse_webhook_secrets(&args.webhook_secrets)
        .map_err(|e| anyhow::anyhow!(e))?;
    let state = AppState {
        accounts: Ledger::new(store.clone(), config.clone()),
        payments: Ledger::new(store.clone(), config.clone()),
        subscriptions: Ledger::new(store.clone(), config.clone()),
        refunds: Ledger::new(store.clone(), config.clone()),
        hold_owners: Default::default(),
        slots: Ledger::new(store.clone(), config.clone()),
        webhook_secrets: Arc::new(webhook_secrets),
        store: store.clone(),
        projector: projector.clone(),
        keys: Arc::new(keys),
        config,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    println!(
        "tally listens on http://{address} (database {})",
        crate::redact(url)
    );
    println!("create a key: tally keys create --role service --name my-bot");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projecting = tokio::spawn(projector.clone().run(stopped.clone()));
    let reacting = {
        let stopped = stopped.clone();
        tokio::spawn(async move { reactors.run(stopped).await })
    };
    let mut shutdown = stopped.clone();
    let server =
        axum::serve(listener, tally_api::router(state)).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        });
    let serving = tokio::spawn(async move { server.await });
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    stop.send(true)?;
    serving.await??;
    projecting.await??;
    reacting.await??;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
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
