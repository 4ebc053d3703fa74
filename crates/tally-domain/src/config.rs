//! What a bot business configures rather than codes: its plans, its credit packs, the
//! bounds of a hold's lifetime and its refund policy. The defaults are what the seed
//! bots sell; a deployment overrides them in `tally.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::values::{Amount, PackId, PlanId};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A subscription plan: how many ad slots it gives, for how long, at what price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Ad slots the plan includes.
    pub slots: u32,
    /// Length of one period, in days.
    pub period_days: u32,
    /// Price of one period.
    pub price: Amount,
    /// Currency of the price (`XTR` is Telegram Stars).
    pub currency: String,
    /// Its price in other currencies, for the providers that charge in them
    /// (`prices = { RUB = "990" }` in tally.toml).
    #[serde(default)]
    pub prices: BTreeMap<String, Amount>,
}

impl Plan {
    /// The price of one period in `currency`, if it has one.
    pub fn price_in(&self, currency: &str) -> Option<Amount> {
        price_in(self.price, &self.currency, &self.prices, currency)
    }
}

/// A pack of credits for sale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditPack {
    /// Credits the pack gives.
    pub credits: Amount,
    /// Its price.
    pub price: Amount,
    /// Currency of the price.
    pub currency: String,
    /// Its price in other currencies, for the providers that charge in them
    /// (`prices = { RUB = "199" }` in tally.toml).
    #[serde(default)]
    pub prices: BTreeMap<String, Amount>,
}

impl CreditPack {
    /// The pack's price in `currency`, if it has one.
    pub fn price_in(&self, currency: &str) -> Option<Amount> {
        price_in(self.price, &self.currency, &self.prices, currency)
    }
}

fn price_in(
    price: Amount,
    main: &str,
    prices: &BTreeMap<String, Amount>,
    currency: &str,
) -> Option<Amount> {
    if main.eq_ignore_ascii_case(currency) {
        return Some(price);
    }
    prices
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(currency))
        .map(|(_, p)| *p)
}

/// When a spend may be refunded, measured from the moment of the spend. The seeds'
/// "only labels older than 5 days" is `min_age_days = 5`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundWindow {
    /// A spend must be at least this old.
    pub min_age_days: u32,
    /// A spend may be at most this old.
    pub max_age_days: u32,
}

/// The business's configuration of the ledger's rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Plans by id.
    pub plans: BTreeMap<PlanId, Plan>,
    /// Credit packs by id.
    pub credit_packs: BTreeMap<PackId, CreditPack>,
    /// Shortest hold lifetime, in seconds.
    pub hold_ttl_seconds_min: u64,
    /// Longest hold lifetime, in seconds.
    pub hold_ttl_seconds_max: u64,
    /// Refund policy.
    pub refund_window: RefundWindow,
    /// Which API key names and Telegram ids are the same admin (`TALLY_ADMIN_LINKS`),
    /// so the rule "the approver is not the requester" compares people, not strings
    /// from two namespaces: a refund requested through the API with key `ops-alice`
    /// cannot be approved in the bot by Alice's Telegram id, nor the other way round.
    #[serde(default)]
    pub admin_links: AdminLinks,
    /// Most unpaid invoices a user of the bot has open at once; asking for another
    /// fails the oldest.
    #[serde(default = "default_open_invoices_max")]
    pub open_invoices_max: u32,
    /// A payment is attributed to a campaign post the payer clicked at most this many
    /// hours before (`TALLY_ATTRIBUTION_WINDOW_HOURS`).
    #[serde(default = "default_attribution_window_hours")]
    pub attribution_window_hours: u32,
    /// The low-balance alert's default threshold (`TALLY_LOW_BALANCE_THRESHOLD`); none:
    /// off unless a user or admin sets one.
    #[serde(default)]
    pub low_balance_threshold: Option<Amount>,
    /// A low-balance alert fires at most once in this many seconds per account
    /// (`TALLY_LOW_BALANCE_ALERT_PERIOD_SECONDS`), so a balance going up and down
    /// around the threshold does not storm.
    #[serde(default = "default_low_balance_alert_period_seconds")]
    pub low_balance_alert_period_seconds: u64,
}

fn default_low_balance_alert_period_seconds() -> u64 {
    24 * 60 * 60
}

fn default_open_invoices_max() -> u32 {
    5
}

fn default_attribution_window_hours() -> u32 {
    72
}

impl Config {
    /// The attribution window, in microseconds.
    pub fn attribution_window_micros(&self) -> i64 {
        i64::from(self.attribution_window_hours) * 3_600_000_000
    }
}

/// API key names linked to the Telegram ids of the same admins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminLinks(BTreeMap<String, i64>);

impl AdminLinks {
    /// Parses `key-name:telegram-id` entries separated by commas.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut links = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, id) = entry.rsplit_once(':').ok_or_else(|| {
                format!("TALLY_ADMIN_LINKS entry {entry:?} is not key-name:telegram-id")
            })?;
            let id: i64 = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                format!("TALLY_ADMIN_LINKS entry {entry:?}: {id:?} is not a Telegram user id")
            })?;
            links.insert(name.trim().to_string(), id);
        }
        Ok(Self(links))
    }

    /// Whether two actors' ids (an API key name or a Telegram id, as requests and
    /// approvals record them) are one person: the same id, or a key linked to the id.
    pub fn same_person(&self, a: &str, b: &str) -> bool {
        let linked = |key: &str, telegram: &str| {
            self.0
                .get(key)
                .is_some_and(|id| telegram.parse::<i64>().ok() == Some(*id))
        };
        a == b || linked(a, b) || linked(b, a)
    }
}

impl Config {
    /// Shortest hold lifetime.
    pub fn hold_ttl_min(&self) -> Duration {
        Duration::from_secs(self.hold_ttl_seconds_min)
    }

    /// Longest hold lifetime.
    pub fn hold_ttl_max(&self) -> Duration {
        Duration::from_secs(self.hold_ttl_seconds_max)
    }
}

fn amount(units: i64) -> Amount {
    // Only called with the positive literals below.
    Amount::new(Decimal::from(units)).unwrap_or_else(|_| unreachable!("positive literal"))
}

fn id<T: TryFrom<String>>(text: &str) -> T {
    T::try_from(text.to_string()).unwrap_or_else(|_| unreachable!("valid literal id"))
}

impl Default for Config {
    fn default() -> Self {
        // Other currencies' prices, for the providers the seed bots use: YooKassa
        // (RUB), Paystack (NGN), OxaPay (USD).
        let prices = |rub, ngn, usd_cents: i64| {
            BTreeMap::from([
                ("RUB".to_string(), amount(rub)),
                ("NGN".to_string(), amount(ngn)),
                (
                    "USD".to_string(),
                    Amount::new(Decimal::new(usd_cents, 2))
                        .unwrap_or_else(|_| unreachable!("positive literal")),
                ),
            ])
        };
        let plan = |slots, price, other| Plan {
            slots,
            period_days: 30,
            price: amount(price),
            currency: "XTR".into(),
            prices: other,
        };
        let pack = |credits, price, other| CreditPack {
            credits: amount(credits),
            price: amount(price),
            currency: "XTR".into(),
            prices: other,
        };
        Self {
            plans: BTreeMap::from([
                (id("basic"), plan(1, 100, prices(390, 2_500, 199))),
                (id("pro"), plan(3, 250, prices(990, 6_000, 499))),
                (id("enterprise"), plan(5, 400, prices(1_590, 10_000, 799))),
            ]),
            credit_packs: BTreeMap::from([
                (id("pack_5"), pack(5, 50, prices(199, 1_500, 99))),
                (id("pack_20"), pack(20, 180, prices(699, 5_000, 349))),
                (id("pack_50"), pack(50, 400, prices(1_499, 10_000, 799))),
            ]),
            attribution_window_hours: default_attribution_window_hours(),
            low_balance_threshold: None,
            low_balance_alert_period_seconds: default_low_balance_alert_period_seconds(),
            hold_ttl_seconds_min: 1,
            hold_ttl_seconds_max: 7 * DAY.as_secs(),
            refund_window: RefundWindow {
                min_age_days: 0,
                max_age_days: 30,
            },
            admin_links: AdminLinks::default(),
            open_invoices_max: default_open_invoices_max(),
        }
    }
}
