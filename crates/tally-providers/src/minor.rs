//! Amounts in a currency's minor units. Providers such as Paystack take and send
//! whole numbers of the smallest unit (kobo, cents); the ledger keeps decimals in
//! major units. The conversion is exact or refused: a price of `1.005` NGN cannot be
//! charged, and is refused at start-up, not rounded at the till.

use rust_decimal::Decimal;

/// Digits after the point of a currency's minor unit: 0 for Telegram Stars and the
/// currencies without a minor unit, 8 for bitcoin, 2 otherwise.
pub fn digits(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        "XTR" | "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "UGX" | "XAF" | "XOF" => 0,
        "BTC" | "LTC" | "BCH" | "DOGE" => 8,
        "USDT" | "USDC" | "TON" | "TRX" | "ETH" => 6,
        _ => 2,
    }
}

/// `amount` in minor units, when it has no more decimals than the currency allows.
pub fn to_minor(amount: Decimal, currency: &str) -> Option<i64> {
    let scaled = amount.checked_mul(Decimal::from(10_i64.checked_pow(digits(currency))?))?;
    if !scaled.fract().is_zero() {
        return None;
    }
    i64::try_from(scaled.trunc()).ok()
}

/// Minor units back to a decimal in major units.
pub fn from_minor(units: i64, currency: &str) -> Decimal {
    Decimal::new(units, digits(currency)).normalize()
}

/// Whether `amount` can be charged in `currency` exactly.
pub fn fits(amount: Decimal, currency: &str) -> bool {
    to_minor(amount, currency).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn converts_exactly_or_refuses() {
        let d = |s| Decimal::from_str(s).unwrap_or_default();
        assert_eq!(to_minor(d("199.00"), "RUB"), Some(19_900));
        assert_eq!(to_minor(d("1500"), "NGN"), Some(150_000));
        assert_eq!(to_minor(d("1.005"), "NGN"), None);
        assert_eq!(to_minor(d("50"), "XTR"), Some(50));
        assert_eq!(to_minor(d("0.5"), "XTR"), None);
        assert_eq!(from_minor(19_900, "RUB"), d("199"));
        assert_eq!(from_minor(150_050, "NGN"), d("1500.5"));
    }
}
