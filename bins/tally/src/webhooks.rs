//! `tally webhooks add|list|disable|rotate-secret|deliveries`: the operator's webhook
//! endpoints from the command line, on the database directly (as `tally keys` does);
//! the same as the admin API's `/v1/admin/webhooks` routes. A running `tally serve`
//! delivers to an endpoint added here from its next round.

use anyhow::Context;
use clap::Subcommand;
use tally_projections::Projector;
use tally_store::PostgresOptions;

use crate::DatabaseArgs;

/// What to do with webhook endpoints.
#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Add an endpoint; prints it with its secret (the only time it is shown).
    Add {
        /// Where events go (http(s), a public address unless --allow-private).
        #[arg(long)]
        url: String,
        /// The event types it wants, comma-separated: payment.succeeded, credits.*,
        /// balance.low, * …
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        /// Allow a loopback or private address.
        #[arg(long, env = "TALLY_WEBHOOKS_ALLOW_PRIVATE")]
        allow_private: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List the endpoints, one JSON line each (no secrets).
    List(DatabaseArgs),
    /// Disable an endpoint: nothing more is sent to it.
    Disable {
        /// The endpoint (`we_…`).
        endpoint_id: String,
        /// Why.
        #[arg(long, default_value = "disabled by an operator")]
        reason: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// A new secret for an endpoint, printed once.
    RotateSecret {
        /// The endpoint (`we_…`).
        endpoint_id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// An endpoint's delivery attempts, newest first, one JSON line each.
    Deliveries {
        /// The endpoint (`we_…`).
        endpoint_id: String,
        /// Only the failed ones.
        #[arg(long)]
        failed: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// The log and the database pool the endpoints are kept in.
async fn open(
    db: &DatabaseArgs,
) -> anyhow::Result<(std::sync::Arc<dyn tally_store::EventStore>, Projector)> {
    let store = tally_store::open(&db.database_url, PostgresOptions::default())
        .await
        .with_context(|| format!("opening {}", crate::redact(&db.database_url)))?;
    let projector = Projector::open(store.clone(), &db.database_url, vec![]).await?;
    Ok((store, projector))
}

/// Runs a `tally webhooks` command.
pub async fn run(command: WebhooksCommand) -> anyhow::Result<()> {
    use tally_webhooks::endpoints;
    match command {
        WebhooksCommand::Add {
            url,
            events,
            allow_private,
            db,
        } => {
            let (store, projector) = open(&db).await?;
            let settings = tally_webhooks::Settings {
                allow_private,
                ..tally_webhooks::Settings::default()
            };
            let (endpoint, secret) =
                endpoints::add(projector.pool(), store.as_ref(), &url, &events, &settings).await?;
            let mut shown = serde_json::to_value(&endpoint)?;
            shown["secret"] = secret.into();
            println!("{shown}");
            eprintln!("the secret is shown once; the receiver verifies every delivery with it");
        }
        WebhooksCommand::List(db) => {
            let (_, projector) = open(&db).await?;
            for endpoint in endpoints::list(projector.pool()).await? {
                println!("{}", serde_json::to_string(&endpoint)?);
            }
        }
        WebhooksCommand::Disable {
            endpoint_id,
            reason,
            db,
        } => {
            let (_, projector) = open(&db).await?;
            let endpoint = endpoints::disable(projector.pool(), &endpoint_id, &reason).await?;
            println!("{}", serde_json::to_string(&endpoint)?);
        }
        WebhooksCommand::RotateSecret { endpoint_id, db } => {
            let (_, projector) = open(&db).await?;
            println!(
                "{}",
                endpoints::rotate_secret(projector.pool(), &endpoint_id).await?
            );
        }
        WebhooksCommand::Deliveries {
            endpoint_id,
            failed,
            limit,
            db,
        } => {
            let (_, projector) = open(&db).await?;
            for delivery in endpoints::deliveries(
                projector.pool(),
                &endpoint_id,
                failed,
                limit.clamp(1, 10_000),
            )
            .await?
            {
                println!("{}", serde_json::to_string(&delivery)?);
            }
        }
    }
    Ok(())
}
