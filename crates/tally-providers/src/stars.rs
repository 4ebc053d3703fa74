//! Telegram Stars through the Bot API: an invoice link (`createInvoiceLink`, currency
//! `XTR`, the payload is our payment id) for payments created over HTTP, and refunds
//! (`refundStarPayment`). Stars are settled by the bot's `successful_payment` update,
//! not by a callback to the API, so this adapter reads no callbacks.

use std::net::IpAddr;

use async_trait::async_trait;
use rust_decimal::prelude::ToPrimitive;
use serde_json::json;

use crate::settings::StarsSettings;
use crate::{Charge, Checkout, Invoice, Notice, Provider, ProviderError, RefundOrder};

/// The provider name of Telegram Stars payments in the ledger.
pub const STARS: &str = "stars";
/// The currency of Telegram Stars.
pub const XTR: &str = "XTR";

/// The Stars adapter.
pub struct Stars {
    settings: StarsSettings,
    client: reqwest::Client,
    currencies: Vec<String>,
}

impl Stars {
    /// An adapter calling the Bot API at `settings.api_url` with the bot's token.
    pub fn new(settings: StarsSettings, client: reqwest::Client) -> Self {
        Self {
            settings,
            client,
            currencies: vec![XTR.to_string()],
        }
    }

    async fn call(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, ProviderError> {
        let url = format!(
            "{}/bot{}/{method}",
            self.settings.api_url.trim_end_matches('/'),
            self.settings.token
        );
        let response = self
            .client
            .post(url)
            .json(&body)
            .send()
            .await
            // Never the URL in the message: it holds the token.
            .map_err(|e| ProviderError::upstream(STARS, e.without_url()))?;
        let answer: serde_json::Value = response
            .json()
            .await
            .map_err(|e| ProviderError::upstream(STARS, e.without_url()))?;
        if answer["ok"] != json!(true) {
            let description = answer["description"].as_str().unwrap_or("no description");
            return Err(ProviderError::upstream(
                STARS,
                format!("{method}: {description}"),
            ));
        }
        Ok(answer["result"].clone())
    }
}

#[async_trait]
impl Provider for Stars {
    fn name(&self) -> &str {
        STARS
    }

    fn currencies(&self) -> &[String] {
        &self.currencies
    }

    async fn create_invoice(&self, invoice: &Invoice) -> Result<Checkout, ProviderError> {
        let stars = match (invoice.amount.fract().is_zero(), invoice.amount.to_u32()) {
            (true, Some(n)) if n > 0 => n,
            _ => {
                return Err(ProviderError::Invalid(format!(
                    "{} XTR is not a whole number of Stars",
                    invoice.amount
                )));
            }
        };
        let link = self
            .call(
                "createInvoiceLink",
                json!({
                    "title": invoice.title,
                    "description": invoice.description,
                    "payload": invoice.payment_id,
                    "currency": XTR,
                    "prices": [{"label": invoice.title, "amount": stars}],
                }),
            )
            .await?;
        let pay_url = link
            .as_str()
            .ok_or_else(|| ProviderError::upstream(STARS, "createInvoiceLink gave no link"))?;
        Ok(Checkout {
            pay_url: pay_url.to_string(),
            reference: None,
        })
    }

    fn read_callback(
        &self,
        _headers: &http::HeaderMap,
        _sender: Option<IpAddr>,
        _body: &[u8],
    ) -> Result<Notice, ProviderError> {
        Err(ProviderError::Unsupported(
            "Stars payments are settled by the bot's successful_payment update, not a webhook"
                .into(),
        ))
    }

    async fn fetch(&self, _notice: &Notice) -> Result<Notice, ProviderError> {
        Err(ProviderError::Unsupported(
            "Stars payments are read with `tally payments reconcile stars`".into(),
        ))
    }

    /// Every incoming Star transaction (a `source`: a user paid), read with
    /// `getStarTransactions` a page of 100 at a time; outgoing ones (refunds,
    /// withdrawals) are not charges.
    async fn charges(&self) -> Result<Vec<Charge>, ProviderError> {
        const PAGE: u64 = 100;
        let mut charges = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .call(
                    "getStarTransactions",
                    json!({"offset": offset, "limit": PAGE}),
                )
                .await?;
            let transactions = page["transactions"].as_array().cloned().unwrap_or_default();
            for t in &transactions {
                if t["source"].is_null() {
                    continue;
                }
                let (Some(id), Some(amount)) = (t["id"].as_str(), t["amount"].as_i64()) else {
                    return Err(ProviderError::upstream(
                        STARS,
                        "a transaction without id or amount",
                    ));
                };
                charges.push(Charge {
                    id: id.to_string(),
                    amount: amount.into(),
                    at: t["date"]
                        .as_i64()
                        .and_then(|d| chrono::DateTime::from_timestamp(d, 0))
                        .map(|d| d.to_rfc3339())
                        .unwrap_or_default(),
                });
            }
            if (transactions.len() as u64) < PAGE {
                return Ok(charges);
            }
            offset += PAGE;
        }
    }

    async fn refund(&self, order: &RefundOrder) -> Result<(), ProviderError> {
        match self
            .call(
                "refundStarPayment",
                json!({"user_id": order.user_id, "telegram_payment_charge_id": order.charge}),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Given back already (a retried refund): the money is where it should be.
            Err(ProviderError::Upstream { detail, .. })
                if detail.contains("CHARGE_ALREADY_REFUNDED") =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}
