//! # tally-domain: the ledger's rules
//!
//! Pure Rust, no I/O: for each kind of stream a `decide(state, command)` that returns
//! the events a command produces or the rule it breaks, and an `evolve(state, event)`
//! that folds an event into the state. Storage, HTTP and Telegram are adapters around
//! this crate; none of them holds a business rule.
//!
//! Amounts are exact decimals ([`values::Amount`]), never floats. Every credit-moving
//! event implies balanced [`postings`] between a user's account and system accounts.
//!
//! Built so far: accounts (credits and holds). Payments, subscriptions, ad slots and
//! refund requests come next, in modules of their own.

pub mod account;
pub mod codec;
pub mod config;
pub mod error;
pub mod postings;
pub mod values;

pub use account::{Account, AccountCommand, AccountEvent, Context, HoldState};
pub use config::Config;
pub use error::DomainError;
pub use postings::{LedgerAccount, Posting, postings};
pub use values::{Amount, Reason, SignedAmount, UserId};
