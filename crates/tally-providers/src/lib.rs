//! # tally-providers: where money comes in and goes back
//!
//! One adapter per payment provider, behind one trait ([`Provider`]): create an invoice
//! for a payment (our payment id is the provider's order reference), verify and read
//! the provider's callback, fetch a payment's true status from the provider, and give
//! money back where the provider allows it. The ledger never trusts a provider's word
//! by itself: an adapter says whether what it read is *conclusive* (a signature the
//! provider alone can make) or must be confirmed by fetching the payment from the
//! provider (YooKassa's unsigned notifications).
//!
//! Adapters know formats and HTTP; they decide nothing about the ledger. What a
//! notice does to a payment (credit once, refuse a wrong amount, reverse) is the
//! payment stream's rule (`tally_domain::payment`), applied by the API and the bot.
//!
//! Secrets and endpoints come from settings ([`settings`]); every base URL is
//! settable so tests point adapters at fake provider servers speaking the real formats.

pub mod generic;
pub mod minor;
pub mod oxapay;
pub mod paystack;
pub mod settings;
pub mod stars;
pub mod yookassa;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rust_decimal::Decimal;

pub use settings::{ProviderSettings, Settings};

/// What a provider adapter could not do.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The callback is not signed by the provider (or comes from an address not
    /// allowed): nothing may be applied.
    #[error("{0}")]
    InvalidSignature(String),
    /// The callback or the request is not in the provider's format, or names
    /// something the provider cannot take (a currency it is not set up for).
    #[error("{0}")]
    Invalid(String),
    /// The provider did not answer, or answered something unexpected.
    #[error("{provider} did not answer as expected: {detail}")]
    Upstream {
        /// Which provider.
        provider: String,
        /// What went wrong.
        detail: String,
    },
    /// The provider cannot do this through Tally (e.g. refunds of OxaPay payments).
    #[error("{0}")]
    Unsupported(String),
}

impl ProviderError {
    /// The provider answered something unexpected, or did not answer.
    pub fn upstream(provider: &str, detail: impl std::fmt::Display) -> Self {
        Self::Upstream {
            provider: provider.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// An invoice to create at a provider for a pending payment.
#[derive(Clone, Debug)]
pub struct Invoice {
    /// Our payment id: the provider's order reference (and idempotence key).
    pub payment_id: String,
    /// The payer (a Telegram user id).
    pub user_id: i64,
    /// The price, in major units (`199.00` RUB).
    pub amount: Decimal,
    /// Its currency.
    pub currency: String,
    /// A short title (Stars invoices show it).
    pub title: String,
    /// What it buys, in words.
    pub description: String,
    /// Where the payer returns after paying (the provider's default when `None`).
    pub return_url: Option<String>,
    /// The payer's e-mail, for providers that require one (Paystack).
    pub email: Option<String>,
}

/// Where the payer pays.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    /// The provider's pay page (or the Stars invoice link).
    pub pay_url: String,
    /// The provider's own id of the invoice or payment, when it has one.
    pub reference: Option<String>,
}

/// What a provider says happened to a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoticeEvent {
    /// Paid in full.
    Paid {
        /// The provider's id of the charge.
        charge: String,
        /// What was paid, in major units.
        amount: Decimal,
        /// In what currency.
        currency: String,
    },
    /// Will not be paid.
    Failed {
        /// Why, in the provider's words.
        reason: String,
    },
    /// Paid, then given back by the provider.
    Refunded {
        /// Why, in the provider's words.
        reason: String,
    },
    /// Nothing final yet (waiting, confirming), or an event Tally does not act on.
    Pending,
}

/// A provider's notice about one payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Our payment id, when the notice names it.
    pub payment_id: Option<String>,
    /// The provider's id to fetch the payment by (its payment/transaction id).
    pub reference: String,
    /// What happened.
    pub event: NoticeEvent,
    /// True when the notice alone is proof (signed by the provider, or fetched from
    /// its API); false: fetch before acting on it.
    pub conclusive: bool,
}

/// What the provider expects back from an accepted callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acknowledgement {
    /// Tally's JSON answer (the payment's state).
    Json,
    /// A plain-text `ok` (OxaPay retries until it reads it).
    TextOk,
}

/// A charge as the provider lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Charge {
    /// The provider's id of the charge (the payment's `provider_payment_id`).
    pub id: String,
    /// What was charged, in major units.
    pub amount: Decimal,
    /// When, as the provider says (RFC 3339).
    pub at: String,
}

/// Money to give back through the provider.
#[derive(Clone, Debug)]
pub struct RefundOrder {
    /// Our payment id.
    pub payment_id: String,
    /// The payer.
    pub user_id: i64,
    /// The provider's id of the charge to give back.
    pub charge: String,
    /// How much, in major units.
    pub amount: Decimal,
    /// In what currency.
    pub currency: String,
}

/// One payment provider.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Its name in the ledger (`stars`, `oxapay`, `paystack`, `yookassa`, …): the
    /// `provider` of its payments and the `{provider}` of its webhook route.
    fn name(&self) -> &str;

    /// The currencies it takes, as configured.
    fn currencies(&self) -> &[String];

    /// Whether it can create invoices (a generic webhook provider cannot).
    fn invoices(&self) -> bool {
        true
    }

    /// Creates the invoice the payer pays.
    async fn create_invoice(&self, invoice: &Invoice) -> Result<Checkout, ProviderError>;

    /// Verifies a callback (raw body, headers, sender address) and reads it.
    fn read_callback(
        &self,
        headers: &http::HeaderMap,
        sender: Option<IpAddr>,
        body: &[u8],
    ) -> Result<Notice, ProviderError>;

    /// Asks the provider what is true of the payment a notice is about.
    async fn fetch(&self, notice: &Notice) -> Result<Notice, ProviderError>;

    /// Gives a charge back.
    async fn refund(&self, order: &RefundOrder) -> Result<(), ProviderError> {
        let _ = order;
        Err(ProviderError::Unsupported(format!(
            "{} refunds are made in the provider's dashboard; its refund notice reverses the payment here",
            self.name()
        )))
    }

    /// Every charge the provider made (money in), to reconcile with the ledger.
    async fn charges(&self) -> Result<Vec<Charge>, ProviderError> {
        Err(ProviderError::Unsupported(format!(
            "{} charges cannot be listed through Tally yet",
            self.name()
        )))
    }

    /// What an accepted callback is answered with.
    fn acknowledgement(&self) -> Acknowledgement {
        Acknowledgement::Json
    }
}

/// The configured providers, by name.
#[derive(Clone, Default)]
pub struct Providers {
    /// The adapters (Stars, OxaPay, Paystack, YooKassa).
    adapters: BTreeMap<String, Arc<dyn Provider>>,
    /// The generic signed webhooks, by provider name. A name may have both (a bot
    /// backend that reports its Stars payments by the generic webhook while Tally
    /// makes Stars invoice links): its callbacks are then the generic webhook's.
    generic: BTreeMap<String, Arc<dyn Provider>>,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("adapters", &self.adapters.keys().collect::<Vec<_>>())
            .field("generic", &self.generic.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Providers {
    /// Builds the adapters that `settings` configures.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let client = http_client().map_err(|e| format!("the HTTP client: {e}"))?;
        let mut providers = Self::default();
        for provider in &settings.providers {
            let adapter: Arc<dyn Provider> = match provider {
                ProviderSettings::Stars(s) => {
                    Arc::new(stars::Stars::new(s.clone(), client.clone()))
                }
                ProviderSettings::OxaPay(s) => {
                    Arc::new(oxapay::OxaPay::new(s.clone(), client.clone()))
                }
                ProviderSettings::Paystack(s) => {
                    Arc::new(paystack::Paystack::new(s.clone(), client.clone()))
                }
                ProviderSettings::YooKassa(s) => {
                    Arc::new(yookassa::YooKassa::new(s.clone(), client.clone()))
                }
                ProviderSettings::Generic(s) => {
                    providers
                        .generic
                        .insert(s.name.clone(), Arc::new(generic::Generic::new(s.clone())));
                    continue;
                }
            };
            providers
                .adapters
                .insert(adapter.name().to_string(), adapter);
        }
        Ok(providers)
    }

    /// The adapter that makes a provider's invoices and refunds (a generic webhook
    /// provider when it has no adapter).
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.adapters.get(name).or_else(|| self.generic.get(name))
    }

    /// The adapter that reads a provider's callbacks.
    pub fn callbacks(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.generic.get(name).or_else(|| self.adapters.get(name))
    }

    /// The providers that create invoices, Stars first, then by name.
    pub fn invoicing(&self) -> Vec<&Arc<dyn Provider>> {
        let mut list: Vec<_> = self.adapters.values().filter(|p| p.invoices()).collect();
        list.sort_by_key(|p| (p.name() != stars::STARS, p.name().to_string()));
        list
    }
}

/// The client every adapter calls its provider with: bounded time, no redirects
/// followed (a provider answers, it does not send us elsewhere).
fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Sends a request and reads a JSON answer, whatever the status (providers explain
/// refusals in the body); a status outside 2xx is an error carrying the body's text.
pub(crate) async fn call_json(
    provider: &str,
    request: reqwest::RequestBuilder,
) -> Result<serde_json::Value, ProviderError> {
    let response = request
        .send()
        .await
        .map_err(|e| ProviderError::upstream(provider, e))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| ProviderError::upstream(provider, e))?;
    if !status.is_success() {
        return Err(ProviderError::upstream(
            provider,
            format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            ),
        ));
    }
    serde_json::from_str(&text)
        .map_err(|e| ProviderError::upstream(provider, format!("an answer that is not JSON ({e})")))
}

/// Checks a hex HMAC given by a provider against `body`.
pub(crate) fn verify_hex_hmac<M: hmac::Mac + hmac::digest::KeyInit>(
    secret: &str,
    body: &[u8],
    hex: &str,
) -> Result<(), ProviderError> {
    let signature = decode_hex(hex.trim())
        .ok_or_else(|| ProviderError::InvalidSignature("the signature is not hex".into()))?;
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret.as_bytes())
        .map_err(|_| ProviderError::Invalid("the provider's secret is unusable".into()))?;
    mac.update(body);
    mac.verify_slice(&signature).map_err(|_| {
        ProviderError::InvalidSignature("the signature does not match the body".into())
    })
}

/// Hex text to bytes (`None` when it is not hex).
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A JSON value's text: strings as they are, whole numbers by their digits (a
/// fractional number is never read here: it would pass through a float).
pub(crate) fn text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// A decimal read from its text, never through a float.
pub(crate) fn decimal(text: &str) -> Option<Decimal> {
    let text = text.trim().trim_matches('"');
    Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()
        .map(|d| d.normalize())
}

/// A provider's id made safe as one segment of a URL path.
pub(crate) fn path_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}
