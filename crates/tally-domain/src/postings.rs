//! Double entry. Every credit-moving event implies postings that sum to zero: credits
//! come from a system account and go to a user's (or back). So the trial balance of all
//! accounts over the whole log is zero, and an auditor can check it.
//!
//! A posting's amount is what flows into the account: positive increases it.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::account::AccountEvent;
use crate::values::UserId;

/// An account of the books: a user's available or held credits, or a system account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerAccount {
    /// A user's credits free to spend.
    Available(UserId),
    /// A user's credits under open holds.
    Held(UserId),
    /// Where bought credits come from.
    Sales,
    /// Where granted credits come from.
    Promotions,
    /// Where spent credits go.
    Consumption,
    /// Where refunded credits come from.
    Refunds,
    /// The other side of admin adjustments.
    Corrections,
}

impl fmt::Display for LedgerAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Available(user) => write!(f, "user:{user}:available"),
            Self::Held(user) => write!(f, "user:{user}:held"),
            Self::Sales => f.write_str("@sales"),
            Self::Promotions => f.write_str("@promotions"),
            Self::Consumption => f.write_str("@consumption"),
            Self::Refunds => f.write_str("@refunds"),
            Self::Corrections => f.write_str("@corrections"),
        }
    }
}

/// One side of a movement of credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// The account.
    pub account: LedgerAccount,
    /// What flows into it (negative: out of it).
    pub amount: Decimal,
}

fn pair(to: LedgerAccount, from: LedgerAccount, amount: Decimal) -> [Posting; 2] {
    [
        Posting {
            account: to,
            amount,
        },
        Posting {
            account: from,
            amount: -amount,
        },
    ]
}

/// The postings an event of `user`'s account implies (none for events that move no
/// credits). They always sum to zero.
pub fn postings(user: UserId, event: &AccountEvent) -> Vec<Posting> {
    use AccountEvent as E;
    use LedgerAccount::{Available, Consumption, Corrections, Held, Promotions, Refunds, Sales};
    match event {
        E::Opened { .. }
        | E::Blocked { .. }
        | E::Unblocked { .. }
        | E::AlertSet { .. }
        | E::BalanceLow { .. }
        | E::AlertRearmed { .. } => vec![],
        E::Deposited { amount, .. } => pair(Available(user), Sales, amount.get()).to_vec(),
        E::Granted { amount, .. } => pair(Available(user), Promotions, amount.get()).to_vec(),
        E::Debited { amount, .. } => pair(Consumption, Available(user), amount.get()).to_vec(),
        E::Adjusted { amount, .. } => pair(Available(user), Corrections, amount.get()).to_vec(),
        E::HoldPlaced { amount, .. } => pair(Held(user), Available(user), amount.get()).to_vec(),
        E::HoldCaptured {
            captured, released, ..
        } => {
            let mut out = pair(Consumption, Held(user), captured.get()).to_vec();
            if !released.is_zero() {
                out.extend(pair(Available(user), Held(user), *released));
            }
            out
        }
        E::HoldReleased { amount, .. } | E::HoldExpired { amount, .. } => {
            pair(Available(user), Held(user), amount.get()).to_vec()
        }
        E::Refunded { amount, .. } => pair(Available(user), Refunds, amount.get()).to_vec(),
    }
}
