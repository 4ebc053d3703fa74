//! Paystack, in Paystack's own formats.
//!
//! - Invoice: `POST {base}/transaction/initialize` (`Authorization: Bearer <secret
//!   key>`) with `{email, amount, currency, reference, callback_url?}`: the amount in
//!   minor units (kobo), the reference our payment id; answer `{status: true, data:
//!   {authorization_url, access_code, reference}}`.
//! - Webhook: header `x-paystack-signature` = hex HMAC-SHA512 of the raw body with the
//!   secret key; `{event: "charge.success", data: {id, status, reference, amount,
//!   currency}}` pays; `refund.processed` (`data.transaction_reference`) gives back.
//!   A `charge.success` whose data is not a successful charge with its amount is
//!   not conclusive: the transaction is verified.
//! - Verify: `GET {base}/transaction/verify/{reference}` → `{data: {id, status,
//!   reference, amount, currency}}`.
//! - Refund: `POST {base}/refund {transaction: reference}`.

use std::net::IpAddr;

use async_trait::async_trait;
use serde_json::json;

use crate::minor::{from_minor, to_minor};
use crate::settings::PaystackSettings;
use crate::{
    Checkout, Invoice, Notice, NoticeEvent, Provider, ProviderError, RefundOrder, call_json, text,
};

/// The provider name of Paystack payments (and its webhook route).
pub const PAYSTACK: &str = "paystack";

/// The Paystack adapter.
pub struct Paystack {
    settings: PaystackSettings,
    client: reqwest::Client,
    currencies: Vec<String>,
}

impl Paystack {
    /// An adapter for the account whose secret key `settings` holds.
    pub fn new(settings: PaystackSettings, client: reqwest::Client) -> Self {
        let currencies = vec![settings.currency.clone()];
        Self {
            settings,
            client,
            currencies,
        }
    }
}

/// Reads a transaction object (a webhook's `data` or a verify answer's).
fn read_transaction(data: &serde_json::Value, conclusive: bool) -> Result<Notice, ProviderError> {
    let reference = text(&data["reference"]).ok_or_else(|| {
        ProviderError::Invalid("Paystack's transaction names no reference".into())
    })?;
    let status = data["status"].as_str().unwrap_or_default();
    let event = match status {
        "success" => {
            let currency = text(&data["currency"]).ok_or_else(|| {
                ProviderError::Invalid("Paystack's transaction names no currency".into())
            })?;
            let units = data["amount"].as_i64().ok_or_else(|| {
                ProviderError::Invalid(
                    "Paystack's amount is not a whole number of minor units".into(),
                )
            })?;
            NoticeEvent::Paid {
                charge: text(&data["id"]).unwrap_or_else(|| reference.clone()),
                amount: from_minor(units, &currency),
                currency,
            }
        }
        "failed" | "abandoned" | "reversed" => NoticeEvent::Failed {
            reason: format!("paystack reported the transaction {status}"),
        },
        _ => NoticeEvent::Pending,
    };
    Ok(Notice {
        payment_id: Some(reference.clone()),
        reference,
        event,
        conclusive,
    })
}

#[async_trait]
impl Provider for Paystack {
    fn name(&self) -> &str {
        PAYSTACK
    }

    fn currencies(&self) -> &[String] {
        &self.currencies
    }

    async fn create_invoice(&self, invoice: &Invoice) -> Result<Checkout, ProviderError> {
        let units = to_minor(invoice.amount, &invoice.currency).ok_or_else(|| {
            ProviderError::Invalid(format!(
                "{} {} cannot be charged in whole minor units",
                invoice.amount, invoice.currency
            ))
        })?;
        let email = invoice
            .email
            .clone()
            .unwrap_or_else(|| format!("tg{}@{}", invoice.user_id, self.settings.email_domain));
        let mut body = json!({
            "email": email,
            "amount": units.to_string(),
            "currency": invoice.currency,
            "reference": invoice.payment_id,
            "metadata": {"user_id": invoice.user_id},
        });
        if let Some(url) = invoice
            .return_url
            .as_ref()
            .or(self.settings.callback_url.as_ref())
        {
            body["callback_url"] = json!(url);
        }
        let answer = call_json(
            PAYSTACK,
            self.client
                .post(format!("{}/transaction/initialize", self.settings.base_url))
                .bearer_auth(&self.settings.secret_key)
                .json(&body),
        )
        .await?;
        let pay_url = answer["data"]["authorization_url"]
            .as_str()
            .ok_or_else(|| {
                ProviderError::upstream(
                    PAYSTACK,
                    format!("no authorization_url: {}", answer["message"]),
                )
            })?;
        Ok(Checkout {
            pay_url: pay_url.to_string(),
            reference: text(&answer["data"]["access_code"]),
        })
    }

    fn read_callback(
        &self,
        headers: &http::HeaderMap,
        _sender: Option<IpAddr>,
        body: &[u8],
    ) -> Result<Notice, ProviderError> {
        let signature = headers
            .get("x-paystack-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ProviderError::InvalidSignature("no x-paystack-signature header".into())
            })?;
        crate::verify_hex_hmac::<hmac::Hmac<sha2::Sha512>>(
            &self.settings.secret_key,
            body,
            signature,
        )?;
        let webhook: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ProviderError::Invalid(format!("the webhook is not JSON: {e}")))?;
        let data = &webhook["data"];
        match webhook["event"].as_str().unwrap_or_default() {
            "charge.success" => {
                // Signed, but only a successful charge with its amount is proof by
                // itself; anything less is verified with Paystack.
                let complete = data["status"] == "success" && data["amount"].is_i64();
                match read_transaction(data, complete) {
                    Ok(notice) => Ok(notice),
                    Err(_) if text(&data["reference"]).is_some() => Ok(Notice {
                        payment_id: text(&data["reference"]),
                        reference: text(&data["reference"]).unwrap_or_default(),
                        event: NoticeEvent::Pending,
                        conclusive: false,
                    }),
                    Err(error) => Err(error),
                }
            }
            "refund.processed" => {
                let reference = text(&data["transaction_reference"]).ok_or_else(|| {
                    ProviderError::Invalid("the refund names no transaction_reference".into())
                })?;
                Ok(Notice {
                    payment_id: Some(reference.clone()),
                    reference,
                    event: NoticeEvent::Refunded {
                        reason: "paystack processed a refund".into(),
                    },
                    conclusive: true,
                })
            }
            _ => Ok(Notice {
                payment_id: text(&data["reference"]),
                reference: text(&data["reference"]).unwrap_or_default(),
                event: NoticeEvent::Pending,
                conclusive: true,
            }),
        }
    }

    async fn fetch(&self, notice: &Notice) -> Result<Notice, ProviderError> {
        let answer = call_json(
            PAYSTACK,
            self.client
                .get(format!(
                    "{}/transaction/verify/{}",
                    self.settings.base_url,
                    crate::path_segment(&notice.reference)
                ))
                .bearer_auth(&self.settings.secret_key),
        )
        .await?;
        read_transaction(&answer["data"], true)
    }

    async fn refund(&self, order: &RefundOrder) -> Result<(), ProviderError> {
        call_json(
            PAYSTACK,
            self.client
                .post(format!("{}/refund", self.settings.base_url))
                .bearer_auth(&self.settings.secret_key)
                .json(&json!({"transaction": order.payment_id})),
        )
        .await
        .map(|_| ())
    }
}
