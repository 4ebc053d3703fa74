//! YooKassa, in YooKassa's own formats (API v3, HTTP Basic `shop_id:secret_key`).
//!
//! - Invoice: `POST {base}/v3/payments` with `Idempotence-Key` = our payment id (a
//!   retried create is the same YooKassa payment), `{amount: {value, currency},
//!   capture: true, confirmation: {type: "redirect", return_url}, description,
//!   metadata: {payment_id}}`; answer `{id, status, confirmation: {confirmation_url}}`.
//! - Notifications (`{type: "notification", event, object}`) are not signed: they are
//!   never proof. A `payment.succeeded` is acted on only after fetching the payment
//!   (`GET {base}/v3/payments/{id}`) and seeing `succeeded` with its amount;
//!   `payment.canceled` likewise fails it; `refund.succeeded` is confirmed by fetching
//!   the refund (`GET {base}/v3/refunds/{id}`) and then its payment. Optionally the
//!   sender's address must be in the configured allowlist.
//! - Refund: `POST {base}/v3/refunds {payment_id, amount}` with an `Idempotence-Key`.

use std::net::IpAddr;

use async_trait::async_trait;
use serde_json::json;

use crate::settings::YooKassaSettings;
use crate::{
    Checkout, Invoice, Notice, NoticeEvent, Provider, ProviderError, RefundOrder, call_json,
    decimal, path_segment, text,
};

/// The provider name of YooKassa payments (and its webhook route).
pub const YOOKASSA: &str = "yookassa";

/// The YooKassa adapter.
pub struct YooKassa {
    settings: YooKassaSettings,
    client: reqwest::Client,
    currencies: Vec<String>,
}

impl YooKassa {
    /// An adapter for the shop `settings` names.
    pub fn new(settings: YooKassaSettings, client: reqwest::Client) -> Self {
        let currencies = vec![settings.currency.clone()];
        Self {
            settings,
            client,
            currencies,
        }
    }

    async fn get(&self, path: &str) -> Result<serde_json::Value, ProviderError> {
        call_json(
            YOOKASSA,
            self.client
                .get(format!("{}/v3/{path}", self.settings.base_url))
                .basic_auth(&self.settings.shop_id, Some(&self.settings.secret_key)),
        )
        .await
    }
}

/// Reads a fetched payment object: what YooKassa's API says is true.
fn read_payment(payment: &serde_json::Value) -> Result<Notice, ProviderError> {
    let reference = text(&payment["id"])
        .ok_or_else(|| ProviderError::upstream(YOOKASSA, "a payment without an id"))?;
    let status = payment["status"].as_str().unwrap_or_default();
    let event = match status {
        "succeeded" => {
            let amount = text(&payment["amount"]["value"])
                .and_then(|v| decimal(&v))
                .ok_or_else(|| {
                    ProviderError::upstream(YOOKASSA, "a payment without amount.value")
                })?;
            NoticeEvent::Paid {
                charge: reference.clone(),
                amount,
                currency: text(&payment["amount"]["currency"]).unwrap_or_default(),
            }
        }
        "canceled" => NoticeEvent::Failed {
            reason: format!(
                "yookassa canceled the payment ({})",
                payment["cancellation_details"]["reason"]
                    .as_str()
                    .unwrap_or("no reason given")
            ),
        },
        _ => NoticeEvent::Pending,
    };
    Ok(Notice {
        payment_id: text(&payment["metadata"]["payment_id"]),
        reference,
        event,
        conclusive: true,
    })
}

#[async_trait]
impl Provider for YooKassa {
    fn name(&self) -> &str {
        YOOKASSA
    }

    fn currencies(&self) -> &[String] {
        &self.currencies
    }

    async fn create_invoice(&self, invoice: &Invoice) -> Result<Checkout, ProviderError> {
        let value = format!("{:.2}", invoice.amount);
        if crate::minor::to_minor(invoice.amount, &invoice.currency).is_none() {
            return Err(ProviderError::Invalid(format!(
                "{} {} cannot be charged in whole kopecks",
                invoice.amount, invoice.currency
            )));
        }
        let return_url = invoice
            .return_url
            .clone()
            .unwrap_or_else(|| self.settings.return_url.clone());
        let answer = call_json(
            YOOKASSA,
            self.client
                .post(format!("{}/v3/payments", self.settings.base_url))
                .basic_auth(&self.settings.shop_id, Some(&self.settings.secret_key))
                .header("Idempotence-Key", &invoice.payment_id)
                .json(&json!({
                    "amount": {"value": value, "currency": invoice.currency},
                    "capture": true,
                    "confirmation": {"type": "redirect", "return_url": return_url},
                    "description": invoice.description.chars().take(128).collect::<String>(),
                    "metadata": {"payment_id": invoice.payment_id, "user_id": invoice.user_id.to_string()},
                })),
        )
        .await?;
        let pay_url = answer["confirmation"]["confirmation_url"]
            .as_str()
            .ok_or_else(|| ProviderError::upstream(YOOKASSA, "no confirmation_url"))?;
        Ok(Checkout {
            pay_url: pay_url.to_string(),
            reference: text(&answer["id"]),
        })
    }

    fn read_callback(
        &self,
        _headers: &http::HeaderMap,
        sender: Option<IpAddr>,
        body: &[u8],
    ) -> Result<Notice, ProviderError> {
        if !self.settings.allowlist.is_empty()
            && !sender.is_some_and(|ip| self.settings.allowlist.iter().any(|r| r.contains(ip)))
        {
            return Err(ProviderError::InvalidSignature(format!(
                "a notification from {} is not from an address in providers.yookassa.allowlist",
                sender
                    .map(|ip| ip.to_string())
                    .unwrap_or_else(|| "an unknown address".into())
            )));
        }
        let notification: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ProviderError::Invalid(format!("the notification is not JSON: {e}")))?;
        let object = &notification["object"];
        let reference = text(&object["id"])
            .ok_or_else(|| ProviderError::Invalid("the notification's object has no id".into()))?;
        // What the notification claims is only a hint of what to fetch.
        let event = match notification["event"].as_str().unwrap_or_default() {
            "refund.succeeded" => NoticeEvent::Refunded {
                reason: "yookassa refunded the payment".into(),
            },
            "payment.succeeded" | "payment.canceled" => NoticeEvent::Pending,
            other => {
                return Err(ProviderError::Invalid(format!(
                    "YooKassa event {other:?} is not one Tally acts on"
                )));
            }
        };
        Ok(Notice {
            payment_id: None,
            reference,
            event,
            conclusive: false,
        })
    }

    async fn fetch(&self, notice: &Notice) -> Result<Notice, ProviderError> {
        if let NoticeEvent::Refunded { reason } = &notice.event {
            let refund = self
                .get(&format!("refunds/{}", path_segment(&notice.reference)))
                .await?;
            let payment_reference = text(&refund["payment_id"])
                .ok_or_else(|| ProviderError::upstream(YOOKASSA, "a refund without payment_id"))?;
            let payment = self
                .get(&format!("payments/{}", path_segment(&payment_reference)))
                .await?;
            let mut notice = read_payment(&payment)?;
            notice.event = match refund["status"].as_str() {
                Some("succeeded") => NoticeEvent::Refunded {
                    reason: reason.clone(),
                },
                _ => NoticeEvent::Pending,
            };
            return Ok(notice);
        }
        let payment = self
            .get(&format!("payments/{}", path_segment(&notice.reference)))
            .await?;
        read_payment(&payment)
    }

    async fn refund(&self, order: &RefundOrder) -> Result<(), ProviderError> {
        call_json(
            YOOKASSA,
            self.client
                .post(format!("{}/v3/refunds", self.settings.base_url))
                .basic_auth(&self.settings.shop_id, Some(&self.settings.secret_key))
                .header("Idempotence-Key", format!("refund-{}", order.payment_id))
                .json(&json!({
                    "payment_id": order.charge,
                    "amount": {"value": format!("{:.2}", order.amount), "currency": order.currency},
                })),
        )
        .await
        .map(|_| ())
    }
}
