//! The providers' settings: secrets, endpoints, currencies. Read from the environment
//! (`TALLY_PROVIDERS_<PROVIDER>_<KEY>`) or `tally.toml` (`[providers.<provider>]
//! <key> = …`), checked at start-up with an error naming the key: a misspelt key, a
//! missing secret, a base URL that is not one, or a pack without a price in a
//! provider's currency stops the process before it takes any money.

use std::collections::BTreeMap;
use std::net::IpAddr;

use tally_domain::Config;

/// Telegram's Bot API, for Stars invoice links and refunds.
#[derive(Clone, Debug)]
pub struct StarsSettings {
    /// The bot's token.
    pub token: String,
    /// The Bot API's base URL (`https://api.telegram.org`).
    pub api_url: String,
}

/// OxaPay (crypto invoices).
#[derive(Clone, Debug)]
pub struct OxaPaySettings {
    /// The merchant API key: authenticates our requests and signs OxaPay's callbacks.
    pub merchant_api_key: String,
    /// `https://api.oxapay.com`.
    pub base_url: String,
    /// The invoices' currency (`USD`).
    pub currency: String,
    /// Where OxaPay sends its callbacks (`https://…/v1/webhooks/oxapay`), if not set
    /// in OxaPay's dashboard.
    pub callback_url: Option<String>,
    /// False when only its webhook secret is configured (`TALLY_WEBHOOK_SECRETS`):
    /// its callbacks are read, but Tally makes no invoices.
    pub invoicing: bool,
}

/// Paystack.
#[derive(Clone, Debug)]
pub struct PaystackSettings {
    /// The secret key: authenticates our requests and signs Paystack's webhooks.
    pub secret_key: String,
    /// `https://api.paystack.co`.
    pub base_url: String,
    /// The transactions' currency (`NGN`).
    pub currency: String,
    /// Where Paystack sends the payer after paying.
    pub callback_url: Option<String>,
    /// Paystack needs an e-mail per transaction; a bot's users have none, so the
    /// payer is `tg<user id>@<email_domain>` unless the request gives one.
    pub email_domain: String,
}

/// YooKassa.
#[derive(Clone, Debug)]
pub struct YooKassaSettings {
    /// The shop id (HTTP Basic user).
    pub shop_id: String,
    /// The secret key (HTTP Basic password).
    pub secret_key: String,
    /// `https://api.yookassa.ru`.
    pub base_url: String,
    /// The payments' currency (`RUB`).
    pub currency: String,
    /// Where the payer returns after paying (YooKassa's redirect confirmation).
    pub return_url: String,
    /// The addresses notifications may come from (YooKassa publishes its ranges);
    /// empty: any (the notification is confirmed by fetching the payment anyway).
    pub allowlist: Vec<Cidr>,
}

/// A provider that only sends the generic signed webhook.
#[derive(Clone, Debug)]
pub struct GenericSettings {
    /// Its name.
    pub name: String,
    /// Its webhook secret.
    pub secret: String,
}

/// One configured provider.
#[derive(Clone, Debug)]
pub enum ProviderSettings {
    /// Telegram Stars.
    Stars(StarsSettings),
    /// OxaPay.
    OxaPay(OxaPaySettings),
    /// Paystack.
    Paystack(PaystackSettings),
    /// YooKassa.
    YooKassa(YooKassaSettings),
    /// A generic signed webhook.
    Generic(GenericSettings),
}

impl ProviderSettings {
    /// The provider's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Stars(_) => crate::stars::STARS,
            Self::OxaPay(_) => crate::oxapay::OXAPAY,
            Self::Paystack(_) => crate::paystack::PAYSTACK,
            Self::YooKassa(_) => crate::yookassa::YOOKASSA,
            Self::Generic(g) => &g.name,
        }
    }

    /// The currency it invoices in (none for a generic webhook).
    pub fn currency(&self) -> Option<&str> {
        match self {
            Self::Stars(_) => Some("XTR"),
            Self::OxaPay(s) if s.invoicing => Some(&s.currency),
            Self::OxaPay(_) => None,
            Self::Paystack(s) => Some(&s.currency),
            Self::YooKassa(s) => Some(&s.currency),
            Self::Generic(_) => None,
        }
    }
}

/// Every configured provider.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// In no particular order; at most one per name.
    pub providers: Vec<ProviderSettings>,
}

/// An address range, `203.0.113.0/24` or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `address/prefix` or a bare address.
    pub fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().ok()?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= width)?,
            None => width,
        };
        Some(Self { network, prefix })
    }

    /// Whether `address` is in the range.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
            v4 => v4,
        };
        match (self.network, address) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// One setting of a provider: its key, whether it is required, its default.
type Key = (&'static str, bool, Option<&'static str>);

/// The keys of each provider.
const KEYS: &[(&str, &[Key])] = &[
    (
        "oxapay",
        &[
            ("merchant_api_key", true, None),
            ("base_url", false, Some("https://api.oxapay.com")),
            ("currency", false, Some("USD")),
            ("callback_url", false, None),
        ],
    ),
    (
        "paystack",
        &[
            ("secret_key", true, None),
            ("base_url", false, Some("https://api.paystack.co")),
            ("currency", false, Some("NGN")),
            ("callback_url", false, None),
            ("email_domain", false, Some("users.tally.invalid")),
        ],
    ),
    (
        "yookassa",
        &[
            ("shop_id", true, None),
            ("secret_key", true, None),
            ("base_url", false, Some("https://api.yookassa.ru")),
            ("currency", false, Some("RUB")),
            ("return_url", true, None),
            ("allowlist", false, Some("")),
        ],
    ),
];

/// How a key is named to a person: both of its spellings.
fn key_name(provider: &str, key: &str) -> String {
    format!(
        "providers.{provider}.{key} (TALLY_PROVIDERS_{}_{})",
        provider.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

fn url_setting(provider: &str, key: &str, text: &str) -> Result<String, String> {
    let url = url::Url::parse(text)
        .map_err(|e| format!("{} = {text:?} is not a URL ({e})", key_name(provider, key)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{} = {text:?} is not an http(s) URL",
            key_name(provider, key)
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

impl Settings {
    /// Reads the providers from `entries`: `provider → key → value`, the file's
    /// `[providers.*]` tables with the environment's `TALLY_PROVIDERS_*` over them.
    pub fn from_entries(
        entries: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Self, String> {
        let mut providers = Vec::new();
        for (provider, given) in entries {
            let Some((_, keys)) = KEYS.iter().find(|(name, _)| name == provider) else {
                return Err(format!(
                    "providers.{provider} (TALLY_PROVIDERS_{}_…) is not a provider Tally knows; \
                     configure oxapay, paystack or yookassa (Stars is on with the bot's token; \
                     other signed webhooks go in TALLY_WEBHOOK_SECRETS)",
                    provider.to_ascii_uppercase()
                ));
            };
            for key in given.keys() {
                if !keys.iter().any(|(k, _, _)| k == key) {
                    return Err(format!(
                        "{} is not a setting of {provider}; its settings are {}",
                        key_name(provider, key),
                        keys.iter()
                            .map(|(k, _, _)| *k)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            let value = |key: &str| -> Result<Option<String>, String> {
                let (_, required, default) = keys
                    .iter()
                    .find(|(k, _, _)| *k == key)
                    .copied()
                    .unwrap_or((key, false, None));
                let found = given
                    .get(key)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .or(default.map(str::to_string));
                if required && found.is_none() {
                    return Err(format!("{} is required", key_name(provider, key)));
                }
                Ok(found)
            };
            let currency = |v: Option<String>| -> Result<String, String> {
                let c = v.unwrap_or_default().to_ascii_uppercase();
                if c.len() < 3 || c.len() > 8 || !c.chars().all(|ch| ch.is_ascii_alphanumeric()) {
                    return Err(format!(
                        "{} = {c:?} is not a currency code",
                        key_name(provider, "currency")
                    ));
                }
                Ok(c)
            };
            let optional_url = |key: &str, v: Option<String>| -> Result<Option<String>, String> {
                v.map(|v| url_setting(provider, key, &v)).transpose()
            };
            let setting = match provider.as_str() {
                "oxapay" => ProviderSettings::OxaPay(OxaPaySettings {
                    merchant_api_key: value("merchant_api_key")?.unwrap_or_default(),
                    base_url: url_setting(
                        provider,
                        "base_url",
                        &value("base_url")?.unwrap_or_default(),
                    )?,
                    currency: currency(value("currency")?)?,
                    callback_url: optional_url("callback_url", value("callback_url")?)?,
                    invoicing: true,
                }),
                "paystack" => ProviderSettings::Paystack(PaystackSettings {
                    secret_key: value("secret_key")?.unwrap_or_default(),
                    base_url: url_setting(
                        provider,
                        "base_url",
                        &value("base_url")?.unwrap_or_default(),
                    )?,
                    currency: currency(value("currency")?)?,
                    callback_url: optional_url("callback_url", value("callback_url")?)?,
                    email_domain: value("email_domain")?.unwrap_or_default(),
                }),
                _ => {
                    let allowlist = value("allowlist")?
                        .unwrap_or_default()
                        .split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .map(|e| {
                            Cidr::parse(e).ok_or_else(|| {
                                format!(
                                    "{}: {e:?} is not an address or address/prefix",
                                    key_name(provider, "allowlist")
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    ProviderSettings::YooKassa(YooKassaSettings {
                        shop_id: value("shop_id")?.unwrap_or_default(),
                        secret_key: value("secret_key")?.unwrap_or_default(),
                        base_url: url_setting(
                            provider,
                            "base_url",
                            &value("base_url")?.unwrap_or_default(),
                        )?,
                        currency: currency(value("currency")?)?,
                        return_url: url_setting(
                            provider,
                            "return_url",
                            &value("return_url")?.unwrap_or_default(),
                        )?,
                        allowlist,
                    })
                }
            };
            providers.push(setting);
        }
        Ok(Self { providers })
    }

    /// Adds a provider (Stars from the bot's token, generic webhooks from their
    /// secrets), unless one of that kind and name is configured already.
    pub fn with(mut self, provider: ProviderSettings) -> Self {
        let generic = |p: &ProviderSettings| matches!(p, ProviderSettings::Generic(_));
        if !self
            .providers
            .iter()
            .any(|p| p.name() == provider.name() && generic(p) == generic(&provider))
        {
            self.providers.push(provider);
        }
        self
    }

    /// Adds the generic signed webhooks of `TALLY_WEBHOOK_SECRETS`
    /// (`provider:secret,…`, each secret at least 16 characters). An `oxapay` entry is
    /// OxaPay's merchant API key, used when OxaPay is not configured otherwise.
    pub fn with_webhook_secrets(mut self, text: &str) -> Result<Self, String> {
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((provider, secret)) = entry.split_once(':') else {
                return Err(format!(
                    "TALLY_WEBHOOK_SECRETS entry for {:?} is not provider:secret",
                    entry.chars().take(16).collect::<String>()
                ));
            };
            if secret.len() < 16 {
                return Err(format!(
                    "TALLY_WEBHOOK_SECRETS: the secret of {provider} is shorter than 16 characters"
                ));
            }
            self = match provider {
                "oxapay" => self.with(ProviderSettings::OxaPay(OxaPaySettings {
                    merchant_api_key: secret.to_string(),
                    base_url: "https://api.oxapay.com".into(),
                    currency: "USD".into(),
                    callback_url: None,
                    invoicing: false,
                })),
                _ => self.with(ProviderSettings::Generic(GenericSettings {
                    name: provider.to_string(),
                    secret: secret.to_string(),
                })),
            };
        }
        Ok(self)
    }

    /// Checks that every pack and plan has a price in each invoicing provider's
    /// currency, chargeable exactly in its minor units; the error names the key to set.
    pub fn check_prices(&self, config: &Config) -> Result<(), String> {
        for provider in &self.providers {
            let Some(currency) = provider.currency() else {
                continue;
            };
            let name = provider.name();
            let priced = config
                .credit_packs
                .iter()
                .map(|(id, pack)| (format!("credit_packs.{id}"), pack.price_in(currency)))
                .chain(
                    config
                        .plans
                        .iter()
                        .map(|(id, plan)| (format!("plans.{id}"), plan.price_in(currency))),
                );
            for (key, price) in priced {
                let Some(price) = price else {
                    return Err(format!(
                        "{key}.prices.{currency} is not set: provider {name} invoices in {currency}, \
                         so every pack and plan needs a price in it (tally.toml)"
                    ));
                };
                if !crate::minor::fits(price.get(), currency) {
                    return Err(format!(
                        "{key}.prices.{currency} = {price} has more decimals than {currency} \
                         allows ({} after the point)",
                        crate::minor::digits(currency)
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, &str, &str)]) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut map: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (p, k, v) in pairs {
            map.entry(p.to_string())
                .or_default()
                .insert(k.to_string(), v.to_string());
        }
        map
    }

    #[test]
    fn errors_name_the_key() {
        let error = |pairs| {
            Settings::from_entries(&entries(pairs))
                .err()
                .unwrap_or_default()
        };
        assert!(error(&[("paystack", "secret", "x")]).contains(
            "providers.paystack.secret (TALLY_PROVIDERS_PAYSTACK_SECRET) is not a setting"
        ));
        assert!(error(&[("yookassa", "shop_id", "1")]).contains("providers.yookassa.secret_key"));
        assert!(error(&[("stripe", "key", "1")]).contains("providers.stripe"));
        assert!(
            error(&[
                ("oxapay", "merchant_api_key", "k"),
                ("oxapay", "base_url", "ftp://x")
            ])
            .contains("TALLY_PROVIDERS_OXAPAY_BASE_URL")
        );
    }

    #[test]
    fn a_currency_without_prices_is_refused_at_start() {
        let settings = Settings::from_entries(&entries(&[("paystack", "secret_key", "sk_test_1")]))
            .unwrap_or_default();
        let mut config = Config::default();
        for pack in config.credit_packs.values_mut() {
            pack.prices.remove("NGN");
        }
        let error = settings.check_prices(&config).err().unwrap_or_default();
        assert!(
            error.contains("credit_packs.pack_20.prices.NGN is not set"),
            "{error}"
        );
    }

    #[test]
    fn ranges_hold_their_addresses() {
        let range = Cidr::parse("185.71.76.0/27").unwrap_or_else(|| unreachable!());
        assert!(range.contains("185.71.76.31".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        assert!(!range.contains("185.71.76.32".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))));
        assert!(Cidr::parse("10.0.0.1/33").is_none());
    }
}
