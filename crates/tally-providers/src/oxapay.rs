//! OxaPay (crypto invoices), in OxaPay's own formats.
//!
//! - Invoice: `POST {base}/v1/payment/invoice` with header `merchant_api_key`, body
//!   `{amount, currency, order_id, callback_url?, return_url?, description}`; answer
//!   `{data: {track_id, payment_url}, status: 200}`.
//! - Callback: header `HMAC` = hex HMAC-SHA512 of the raw body with the merchant API
//!   key; the body names our payment by `order_id` (`orderId` in the legacy format)
//!   and OxaPay's by `track_id`; `status` `paid` is paid in full, `failed`/`expired`
//!   will not be, anything else is progress. OxaPay retries until it reads `ok`.
//! - Status: `GET {base}/v1/payment/{track_id}` → `{data: {status, amount, currency,
//!   order_id, track_id}}`.
//!
//! Amounts are JSON numbers both ways; they are written and read by their digits,
//! never through a float.

use std::net::IpAddr;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::settings::OxaPaySettings;
use crate::{
    Acknowledgement, Checkout, Invoice, Notice, NoticeEvent, Provider, ProviderError, call_json,
    decimal, text,
};

/// The provider name of OxaPay payments (and its webhook route).
pub const OXAPAY: &str = "oxapay";

/// The OxaPay adapter.
pub struct OxaPay {
    settings: OxaPaySettings,
    client: reqwest::Client,
    currencies: Vec<String>,
}

impl OxaPay {
    /// An adapter for the merchant `settings` name.
    pub fn new(settings: OxaPaySettings, client: reqwest::Client) -> Self {
        let currencies = vec![settings.currency.clone()];
        Self {
            settings,
            client,
            currencies,
        }
    }
}

#[derive(Serialize)]
struct InvoiceBody<'a> {
    amount: Box<RawValue>,
    currency: &'a str,
    order_id: &'a str,
    description: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    callback_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_url: Option<&'a str>,
}

/// Reads an OxaPay payment object (a callback's body or a status answer's `data`).
fn read_payment(
    payment: &serde_json::Value,
    raw: &[u8],
    conclusive: bool,
) -> Result<Notice, ProviderError> {
    let field = |keys: &[&str]| keys.iter().find_map(|k| text(&payment[*k]));
    let reference = field(&["track_id", "trackId"])
        .ok_or_else(|| ProviderError::Invalid("OxaPay's payment names no track_id".into()))?;
    let payment_id = field(&["order_id", "orderId"]);
    let status = field(&["status"]).unwrap_or_default().to_ascii_lowercase();
    let event = match status.as_str() {
        "paid" => NoticeEvent::Paid {
            charge: reference.clone(),
            amount: raw_amount(raw)?,
            currency: field(&["currency"]).ok_or_else(|| {
                ProviderError::Invalid("OxaPay's payment names no currency".into())
            })?,
        },
        "failed" | "expired" => NoticeEvent::Failed {
            reason: format!("oxapay reported the invoice {status}"),
        },
        _ => NoticeEvent::Pending,
    };
    Ok(Notice {
        payment_id,
        reference,
        event,
        conclusive,
    })
}

/// The `amount` of an OxaPay payment object (`raw` is its JSON text), read from its
/// digits.
fn raw_amount(raw: &[u8]) -> Result<rust_decimal::Decimal, ProviderError> {
    #[derive(serde::Deserialize)]
    struct Paid<'a> {
        #[serde(borrow)]
        amount: Option<&'a RawValue>,
    }
    let paid: Paid = serde_json::from_slice(raw)
        .map_err(|e| ProviderError::Invalid(format!("OxaPay's payment is not JSON: {e}")))?;
    let raw = paid
        .amount
        .ok_or_else(|| ProviderError::Invalid("OxaPay's payment names no amount".into()))?
        .get();
    decimal(raw)
        .ok_or_else(|| ProviderError::Invalid(format!("OxaPay's amount {raw} is not a number")))
}

#[async_trait]
impl Provider for OxaPay {
    fn name(&self) -> &str {
        OXAPAY
    }

    fn currencies(&self) -> &[String] {
        &self.currencies
    }

    fn invoices(&self) -> bool {
        self.settings.invoicing
    }

    async fn create_invoice(&self, invoice: &Invoice) -> Result<Checkout, ProviderError> {
        let amount = RawValue::from_string(invoice.amount.normalize().to_string())
            .map_err(|e| ProviderError::Invalid(format!("amount: {e}")))?;
        let body = InvoiceBody {
            amount,
            currency: &invoice.currency,
            order_id: &invoice.payment_id,
            description: &invoice.description,
            callback_url: self.settings.callback_url.as_deref(),
            return_url: invoice.return_url.as_deref(),
        };
        let answer = call_json(
            OXAPAY,
            self.client
                .post(format!("{}/v1/payment/invoice", self.settings.base_url))
                .header("merchant_api_key", &self.settings.merchant_api_key)
                .json(&body),
        )
        .await?;
        let data = &answer["data"];
        let pay_url = data["payment_url"].as_str().ok_or_else(|| {
            ProviderError::upstream(OXAPAY, format!("no payment_url: {}", answer["message"]))
        })?;
        Ok(Checkout {
            pay_url: pay_url.to_string(),
            reference: text(&data["track_id"]),
        })
    }

    fn read_callback(
        &self,
        headers: &http::HeaderMap,
        _sender: Option<IpAddr>,
        body: &[u8],
    ) -> Result<Notice, ProviderError> {
        let signature = headers
            .get("hmac")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ProviderError::InvalidSignature("no HMAC header".into()))?;
        crate::verify_hex_hmac::<hmac::Hmac<sha2::Sha512>>(
            &self.settings.merchant_api_key,
            body,
            signature,
        )?;
        let callback: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ProviderError::Invalid(format!("the callback is not JSON: {e}")))?;
        read_payment(&callback, body, true)
    }

    async fn fetch(&self, notice: &Notice) -> Result<Notice, ProviderError> {
        let response = self
            .client
            .get(format!(
                "{}/v1/payment/{}",
                self.settings.base_url,
                crate::path_segment(&notice.reference)
            ))
            .header("merchant_api_key", &self.settings.merchant_api_key)
            .send()
            .await
            .map_err(|e| ProviderError::upstream(OXAPAY, e))?;
        let raw = response
            .bytes()
            .await
            .map_err(|e| ProviderError::upstream(OXAPAY, e))?;
        // The payment object's own text, so its amount is read by its digits.
        #[derive(serde::Deserialize)]
        struct Answer<'a> {
            #[serde(borrow)]
            data: Option<&'a RawValue>,
        }
        let answer: Answer = serde_json::from_slice(&raw)
            .map_err(|e| ProviderError::upstream(OXAPAY, format!("not JSON: {e}")))?;
        let data = answer
            .data
            .ok_or_else(|| ProviderError::upstream(OXAPAY, "a status answer without data"))?
            .get()
            .as_bytes();
        let payment: serde_json::Value = serde_json::from_slice(data)
            .map_err(|e| ProviderError::upstream(OXAPAY, format!("not JSON: {e}")))?;
        read_payment(&payment, data, true)
    }

    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::TextOk
    }
}
