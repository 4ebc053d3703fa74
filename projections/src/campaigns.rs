//! Read model `campaigns`: the operator's campaigns and what every post earned —
//! successful posts, clicks, unique users, conversions, revenue per currency and the
//! conversion rate — and the rotation the poster follows.
//!
//! A conversion is a payment of a user who clicked a campaign post (a callback button
//! or a `/start` deep link) within the attribution window before paying; it goes to
//! the user's last click in that window. The model keeps clicks and the payments of
//! every user and attributes when read ([`campaign_figures`]), so the window is a
//! setting, not history.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};
use tally_domain::campaign::{CampaignEvent, post_slot_id};
use tally_domain::payment::PaymentEvent;
use tally_domain::slot::{Outcome, SlotEvent};

use crate::ProjectionError;
use crate::events::{Batch, amount_cents, stream_event};
use crate::sql::{execute, from_cents};

crate::read_model!(
    /// The campaigns read model.
    CampaignsReadModel {
        name: "campaigns",
        version: 1,
        schema: "campaigns.sql",
        tables: [
            "campaigns",
            "campaign_posts",
            "campaign_clicks",
            "campaign_payment_terms",
            "campaign_payments"
        ],
        apply: apply,
    }
);

/// How a batch of events changes the tables.
async fn apply(conn: &mut AnyConnection, g: &str, batch: &Batch) -> Result<(), ProjectionError> {
    for recorded in batch.events() {
        let position = recorded.position;
        let at = recorded.occurred_at.timestamp_micros();
        if let Some((campaign, event)) = stream_event::<CampaignEvent>(recorded, "campaign")? {
            match event {
                CampaignEvent::Defined(def) => {
                    execute(
                        conn,
                        &format!(
                            "INSERT INTO campaigns{g} (campaign_id, name, posts) VALUES ($1, $2, $3) \
                             ON CONFLICT (campaign_id) DO UPDATE SET name = excluded.name, \
                             posts = excluded.posts"
                        ),
                        &[
                            campaign.into(),
                            def.name.clone().into(),
                            (def.posts.len() as i64).into(),
                        ],
                    )
                    .await?;
                    execute(
                        conn,
                        &format!("UPDATE campaign_posts{g} SET k = -1 WHERE campaign_id = $1"),
                        &[campaign.into()],
                    )
                    .await?;
                    for (k, post) in def.posts.iter().enumerate() {
                        execute(
                            conn,
                            &format!(
                                "INSERT INTO campaign_posts{g} (campaign_id, post_id, k, slot_id, \
                                 posted) VALUES ($1, $2, $3, $4, 0) \
                                 ON CONFLICT (campaign_id, post_id) DO UPDATE SET k = excluded.k"
                            ),
                            &[
                                campaign.into(),
                                post.post_id.clone().into(),
                                (k as i64).into(),
                                post_slot_id(campaign, &post.post_id).into(),
                            ],
                        )
                        .await?;
                    }
                }
                CampaignEvent::Clicked {
                    user_id, post_id, ..
                } => {
                    execute(
                        conn,
                        &format!(
                            "INSERT INTO campaign_clicks{g} (position, campaign_id, post_id, \
                             user_id, at) VALUES ($1, $2, $3, $4, $5)"
                        ),
                        &[
                            (position as i64).into(),
                            campaign.into(),
                            post_id.into(),
                            user_id.get().into(),
                            at.into(),
                        ],
                    )
                    .await?;
                }
            }
            continue;
        }
        if let Some((slot_id, SlotEvent::PostAttempted(attempt))) =
            stream_event::<SlotEvent>(recorded, "slot")?
        {
            if attempt.outcome == Outcome::Succeeded && slot_id.starts_with("cmp.") {
                execute(
                    conn,
                    &format!("UPDATE campaign_posts{g} SET posted = posted + 1 WHERE slot_id = $1"),
                    &[slot_id.into()],
                )
                .await?;
            }
            continue;
        }
        if let Some((payment_id, event)) = stream_event::<PaymentEvent>(recorded, "payment")? {
            match event {
                PaymentEvent::Created(terms) => {
                    execute(
                        conn,
                        &format!(
                            "INSERT INTO campaign_payment_terms{g} (payment_id, amount_cents, \
                             currency) VALUES ($1, $2, $3) ON CONFLICT (payment_id) DO NOTHING"
                        ),
                        &[
                            payment_id.into(),
                            amount_cents(position, terms.amount.get())?.into(),
                            terms.currency.into(),
                        ],
                    )
                    .await?;
                }
                PaymentEvent::Succeeded { user_id, .. } => {
                    execute(
                        conn,
                        &format!(
                            "INSERT INTO campaign_payments{g} (payment_id, user_id, at, \
                             amount_cents, currency) SELECT payment_id, $2, $3, amount_cents, \
                             currency FROM campaign_payment_terms{g} WHERE payment_id = $1 \
                             ON CONFLICT (payment_id) DO NOTHING"
                        ),
                        &[payment_id.into(), user_id.get().into(), at.into()],
                    )
                    .await?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Each campaign's rotation: its id and its posts' slots, in rotation order (post `k`
/// of `n` is posted in the cycles `c` where `c mod n = k`).
pub async fn campaign_rotations(
    pool: &sqlx::AnyPool,
) -> Result<Vec<(String, Vec<String>)>, ProjectionError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT campaign_id, slot_id FROM campaign_posts WHERE k >= 0 ORDER BY campaign_id, k",
    )
    .fetch_all(pool)
    .await?;
    let mut rotations: Vec<(String, Vec<String>)> = Vec::new();
    for (campaign, slot) in rows {
        match rotations.last_mut() {
            Some((last, slots)) if *last == campaign => slots.push(slot),
            _ => rotations.push((campaign, vec![slot])),
        }
    }
    Ok(rotations)
}

/// What one campaign post earned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CampaignFigure {
    /// The campaign.
    pub campaign_id: String,
    /// Its name.
    pub name: String,
    /// The post.
    pub post_id: String,
    /// Successful posts of it.
    pub posts: i64,
    /// Clicks on it (button presses and deep-link starts).
    pub clicks: i64,
    /// Users who clicked.
    pub unique_users: i64,
    /// Payments attributed to it.
    pub conversions: i64,
    /// Their sum, per currency.
    pub revenue: BTreeMap<String, Decimal>,
    /// Conversions per user who clicked (0 when nobody clicked), to 4 places.
    pub conversion_rate: Decimal,
}

/// Every campaign post's figures, by campaign and rotation order; a payment is
/// attributed to the payer's last click at most `window_micros` before it.
pub async fn campaign_figures(
    pool: &sqlx::AnyPool,
    window_micros: i64,
) -> Result<Vec<CampaignFigure>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT p.campaign_id, c.name, p.post_id, p.posted, \
                (SELECT count(*) FROM campaign_clicks k WHERE k.campaign_id = p.campaign_id \
                    AND k.post_id = p.post_id), \
                (SELECT count(DISTINCT k.user_id) FROM campaign_clicks k \
                    WHERE k.campaign_id = p.campaign_id AND k.post_id = p.post_id) \
         FROM campaign_posts p JOIN campaigns c ON c.campaign_id = p.campaign_id \
         ORDER BY p.campaign_id, CASE WHEN p.k < 0 THEN 1000000 ELSE p.k END, p.post_id",
    )
    .fetch_all(pool)
    .await?;
    let mut figures: Vec<CampaignFigure> = rows
        .iter()
        .map(|r| CampaignFigure {
            campaign_id: r.get(0),
            name: r.get(1),
            post_id: r.get(2),
            posts: r.get(3),
            clicks: r.get(4),
            unique_users: r.get(5),
            conversions: 0,
            revenue: BTreeMap::new(),
            conversion_rate: Decimal::ZERO,
        })
        .collect();
    // Each payment goes to its payer's last click within the window before it.
    let attributed = sqlx::query(
        "SELECT k.campaign_id, k.post_id, t.currency, count(*), \
                CAST(sum(t.amount_cents) AS BIGINT) \
         FROM (SELECT p.currency, p.amount_cents, \
                 (SELECT c.position FROM campaign_clicks c WHERE c.user_id = p.user_id \
                     AND c.at <= p.at AND c.at >= p.at - $1 \
                     ORDER BY c.at DESC, c.position DESC LIMIT 1) AS click \
               FROM campaign_payments p) t \
         JOIN campaign_clicks k ON k.position = t.click \
         GROUP BY k.campaign_id, k.post_id, t.currency",
    )
    .bind(window_micros)
    .fetch_all(pool)
    .await?;
    for row in attributed {
        let (campaign, post, currency): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        let (count, cents): (i64, i64) = (row.get(3), row.get(4));
        if let Some(figure) = figures
            .iter_mut()
            .find(|f| f.campaign_id == campaign && f.post_id == post)
        {
            figure.conversions += count;
            *figure.revenue.entry(currency).or_default() += from_cents(cents);
        }
    }
    for figure in &mut figures {
        if figure.unique_users > 0 {
            figure.conversion_rate = (Decimal::from(figure.conversions)
                / Decimal::from(figure.unique_users))
            .round_dp(4);
        }
    }
    Ok(figures)
}
