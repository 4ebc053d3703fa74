//! The generic signed webhook, for a provider Tally has no adapter for: header
//! `X-Tally-Signature: sha256=<hex HMAC-SHA256 of the raw body with the provider's
//! secret>` and body `{payment_id, status: "succeeded"|"failed", amount, currency,
//! provider_payment_id}` (secrets from `TALLY_WEBHOOK_SECRETS`). It cannot invoice:
//! the caller's backend creates the invoice at its provider.

use std::net::IpAddr;

use async_trait::async_trait;
use serde::Deserialize;

use crate::settings::GenericSettings;
use crate::{Checkout, Invoice, Notice, NoticeEvent, Provider, ProviderError, decimal};

/// A provider that settles by the generic signed webhook.
pub struct Generic {
    settings: GenericSettings,
}

impl Generic {
    /// The adapter of the provider `settings` names.
    pub fn new(settings: GenericSettings) -> Self {
        Self { settings }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Succeeded,
    Failed,
}

#[derive(Deserialize)]
struct Body {
    payment_id: String,
    status: Status,
    amount: String,
    currency: String,
    #[serde(default)]
    provider_payment_id: Option<String>,
}

#[async_trait]
impl Provider for Generic {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn currencies(&self) -> &[String] {
        &[]
    }

    fn invoices(&self) -> bool {
        false
    }

    async fn create_invoice(&self, _invoice: &Invoice) -> Result<Checkout, ProviderError> {
        Err(ProviderError::Unsupported(format!(
            "provider {} only sends the generic signed webhook; Tally cannot create its invoices",
            self.settings.name
        )))
    }

    fn read_callback(
        &self,
        headers: &http::HeaderMap,
        _sender: Option<IpAddr>,
        body: &[u8],
    ) -> Result<Notice, ProviderError> {
        let header = headers
            .get("x-tally-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ProviderError::InvalidSignature("no X-Tally-Signature header".into()))?;
        let hex = header.strip_prefix("sha256=").ok_or_else(|| {
            ProviderError::InvalidSignature("X-Tally-Signature is not sha256=<hex>".into())
        })?;
        crate::verify_hex_hmac::<hmac::Hmac<sha2::Sha256>>(&self.settings.secret, body, hex)?;
        let body: Body = serde_json::from_slice(body)
            .map_err(|e| ProviderError::Invalid(format!("the webhook body: {e}")))?;
        let event = match body.status {
            Status::Succeeded => NoticeEvent::Paid {
                charge: body.provider_payment_id.ok_or_else(|| {
                    ProviderError::Invalid("a succeeded payment needs provider_payment_id".into())
                })?,
                amount: decimal(&body.amount).ok_or_else(|| {
                    ProviderError::Invalid(format!(
                        "{:?} is not a decimal amount; write it like \"12.50\"",
                        body.amount
                    ))
                })?,
                currency: body.currency,
            },
            Status::Failed => NoticeEvent::Failed {
                reason: format!("{} reported the payment failed", self.settings.name),
            },
        };
        Ok(Notice {
            payment_id: Some(body.payment_id.clone()),
            reference: body.payment_id,
            event,
            conclusive: true,
        })
    }

    async fn fetch(&self, notice: &Notice) -> Result<Notice, ProviderError> {
        Ok(notice.clone())
    }
}
