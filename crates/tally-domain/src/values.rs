//! Values that cannot hold bad data. Each is parsed once, at the edge (HTTP, bot,
//! configuration), and from then on every function can rely on it: an [`Amount`] is
//! positive with at most two decimals, a [`UserId`] is a Telegram id, a [`Reason`] says
//! something. Parse, don't validate.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DomainError;

/// Most decimal places an amount may have.
pub const AMOUNT_SCALE_MAX: u32 = 2;

/// Largest single amount: one billion credits.
pub const AMOUNT_MAX: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

/// Longest reason text, in characters.
pub const REASON_CHARS_MAX: usize = 500;

/// Longest client-chosen id (hold, debit, grant, payment, refund, slot …), in bytes.
pub const ID_BYTES_MAX: usize = 64;

/// A Telegram user id: positive, 64-bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct UserId(i64);

impl UserId {
    /// Parses a user id; Telegram ids are positive.
    pub fn new(id: i64) -> Result<Self, DomainError> {
        if id <= 0 {
            return Err(DomainError::Validation(format!(
                "user id {id} is not a Telegram user id (they are positive)"
            )));
        }
        Ok(Self(id))
    }

    /// The id as a number.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for UserId {
    type Error = DomainError;
    fn try_from(id: i64) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<UserId> for i64 {
    fn from(id: UserId) -> Self {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn check_decimal(value: Decimal, what: &str) -> Result<Decimal, DomainError> {
    if value.scale() > AMOUNT_SCALE_MAX && value.normalize().scale() > AMOUNT_SCALE_MAX {
        return Err(DomainError::InvalidAmount(format!(
            "{what} {value} has more than {AMOUNT_SCALE_MAX} decimal places"
        )));
    }
    if value.abs() > AMOUNT_MAX {
        return Err(DomainError::InvalidAmount(format!(
            "{what} {value} is over the maximum of {AMOUNT_MAX}"
        )));
    }
    Ok(value.normalize())
}

/// A positive quantity of credits (or of money, for prices): more than zero, at most
/// [`AMOUNT_MAX`], at most [`AMOUNT_SCALE_MAX`] decimals. Serialised as a decimal
/// string (`"12.5"`), never a JSON number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Amount(Decimal);

impl Amount {
    /// Parses an amount from a decimal.
    pub fn new(value: Decimal) -> Result<Self, DomainError> {
        let value = check_decimal(value, "amount")?;
        if value <= Decimal::ZERO {
            return Err(DomainError::InvalidAmount(format!(
                "amount {value} must be more than zero"
            )));
        }
        Ok(Self(value))
    }

    /// The amount as a decimal.
    pub fn get(self) -> Decimal {
        self.0
    }
}

impl FromStr for Amount {
    type Err = DomainError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let value = Decimal::from_str_exact(text.trim()).map_err(|_| {
            DomainError::InvalidAmount(format!(
                "{text:?} is not a decimal amount; write it like \"12.50\""
            ))
        })?;
        Self::new(value)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A non-zero signed quantity of credits, for admin adjustments: same bounds as
/// [`Amount`], either sign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignedAmount(Decimal);

impl SignedAmount {
    /// Parses a signed amount.
    pub fn new(value: Decimal) -> Result<Self, DomainError> {
        let value = check_decimal(value, "adjustment")?;
        if value.is_zero() {
            return Err(DomainError::InvalidAmount(
                "an adjustment of zero changes nothing; give a positive or negative amount".into(),
            ));
        }
        Ok(Self(value))
    }

    /// The amount as a decimal.
    pub fn get(self) -> Decimal {
        self.0
    }
}

impl FromStr for SignedAmount {
    type Err = DomainError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let value = Decimal::from_str_exact(text.trim()).map_err(|_| {
            DomainError::InvalidAmount(format!(
                "{text:?} is not a signed decimal amount; write it like \"-5\" or \"+2.50\""
            ))
        })?;
        Self::new(value)
    }
}

impl Serialize for SignedAmount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for SignedAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why something was done: required on every grant, adjustment, block and release,
/// so an auditor can read the intent next to the effect.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Reason(String);

impl Reason {
    /// Parses a reason: not blank, at most [`REASON_CHARS_MAX`] characters.
    pub fn new(text: impl Into<String>) -> Result<Self, DomainError> {
        let text = text.into().trim().to_string();
        if text.is_empty() {
            return Err(DomainError::Validation("a reason is required".into()));
        }
        let chars = text.chars().count();
        if chars > REASON_CHARS_MAX {
            return Err(DomainError::Validation(format!(
                "reason is {chars} characters; at most {REASON_CHARS_MAX}"
            )));
        }
        check_text_chars("reason", &text)?;
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Reason {
    type Error = DomainError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl From<Reason> for String {
    fn from(reason: Reason) -> Self {
        reason.0
    }
}

/// Whether a free text (a reason, a post, a provider's name) may not hold this
/// character: control characters other than tab and newline. Postgres cannot store
/// NUL, and the others only hide what a text says from the person who reads it.
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// Refuses a free text holding a character [`is_forbidden_char`] names.
pub fn check_text_chars(what: &str, text: &str) -> Result<(), DomainError> {
    match text.chars().find(|c| is_forbidden_char(*c)) {
        Some(bad) => Err(DomainError::Validation(format!(
            "{what} contains the control character {:?}; only tab and newline are allowed",
            bad
        ))),
        None => Ok(()),
    }
}

/// Declares a client-chosen id type: 1 to [`ID_BYTES_MAX`] bytes of
/// `A-Z a-z 0-9 _ - . :`, so ids embed safely in stream names, URLs and logs.
macro_rules! client_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses the id.
            pub fn new(id: impl Into<String>) -> Result<Self, DomainError> {
                parse_client_id(id.into(), $what).map(Self)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = DomainError;
            fn try_from(id: String) -> Result<Self, Self::Error> {
                Self::new(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn parse_client_id(id: String, what: &str) -> Result<String, DomainError> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(DomainError::Validation(format!(
            "{what} must be 1 to {ID_BYTES_MAX} characters, got {}",
            id.len()
        )));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(DomainError::Validation(format!(
            "{what} {id:?} contains {bad:?}; use letters, digits, '_', '-', '.' or ':'"
        )));
    }
    Ok(id)
}

client_id!(
    /// A hold's id, chosen by the bot backend for its job (idempotent by this id).
    HoldId,
    "hold id"
);
client_id!(
    /// A direct debit's id.
    DebitId,
    "debit id"
);
client_id!(
    /// A grant's id.
    GrantId,
    "grant id"
);
client_id!(
    /// An admin adjustment's id.
    AdjustmentId,
    "adjustment id"
);
client_id!(
    /// A payment's id in the ledger.
    PaymentId,
    "payment id"
);
client_id!(
    /// A refund request's id.
    RefundId,
    "refund id"
);
client_id!(
    /// An ad slot's id.
    SlotId,
    "slot id"
);
client_id!(
    /// An operator's campaign's id (see `campaign::check_campaign_id` for its
    /// tighter form).
    CampaignId,
    "campaign id"
);
client_id!(
    /// A plan in the catalog, e.g. `basic`.
    PlanId,
    "plan id"
);
client_id!(
    /// A credit pack in the catalog, e.g. `pack_20`.
    PackId,
    "credit pack id"
);

/// Who acted, as far as the ledger's rules care: admins are named so that an admin
/// cannot approve their own request and every correction says who made it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AdminId(String);

impl AdminId {
    /// Parses an admin's name (API key name or Telegram id as text).
    pub fn new(id: impl Into<String>) -> Result<Self, DomainError> {
        let id = id.into();
        if id.trim().is_empty() || id.len() > ID_BYTES_MAX {
            return Err(DomainError::Validation(format!(
                "admin id must be 1 to {ID_BYTES_MAX} characters"
            )));
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AdminId {
    type Error = DomainError;
    fn try_from(id: String) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<AdminId> for String {
    fn from(id: AdminId) -> Self {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_positive_bounded_and_at_most_two_decimals() {
        assert_eq!("12.50".parse::<Amount>().unwrap().to_string(), "12.5");
        assert!("0".parse::<Amount>().is_err());
        assert!("-1".parse::<Amount>().is_err());
        assert!("1.001".parse::<Amount>().is_err());
        assert!(
            "1.100".parse::<Amount>().is_ok(),
            "trailing zeros are not precision"
        );
        assert!("1000000000.01".parse::<Amount>().is_err());
        assert!("1e3".parse::<Amount>().is_err());
        assert!("abc".parse::<Amount>().is_err());
        let err = "1.001".parse::<Amount>().unwrap_err();
        assert_eq!(err.code(), "invalid_amount");
    }

    #[test]
    fn amounts_travel_as_strings_never_numbers() {
        let a: Amount = "2.5".parse().unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"2.5\"");
        assert!(serde_json::from_str::<Amount>("2.5").is_err());
        assert_eq!(serde_json::from_str::<Amount>("\"2.50\"").unwrap(), a);
    }

    #[test]
    fn signed_amounts_take_either_sign_but_not_zero() {
        assert_eq!(
            "-5".parse::<SignedAmount>().unwrap().get(),
            Decimal::from(-5)
        );
        assert_eq!(
            "+2.5".parse::<SignedAmount>().unwrap().get(),
            Decimal::new(25, 1)
        );
        assert!("0.00".parse::<SignedAmount>().is_err());
    }

    #[test]
    fn ids_and_reasons_reject_what_cannot_be_shown_or_embedded() {
        assert!(UserId::new(0).is_err());
        assert!(UserId::new(7_172_873_873).is_ok());
        assert!(HoldId::new("job-1:render").is_ok());
        assert!(HoldId::new("job 1").is_err());
        assert!(HoldId::new("").is_err());
        assert!(HoldId::new("x".repeat(65)).is_err());
        assert!(Reason::new("   ").is_err());
        assert!(Reason::new("a\u{0}b").is_err());
        assert!(Reason::new("line\nnext\tcol").is_ok());
        assert_eq!(Reason::new(" promo ").unwrap().as_str(), "promo");
    }
}
