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
//! One module per kind of stream: [`account`] (credits and holds), [`payment`],
//! [`subscription`], [`slot`] (ad slots and post attempts), [`refund`] (refund
//! requests). Rules that span streams take the other stream's facts as plain inputs
//! (a refund request is given what the spend has left to refund; a post attempt is
//! given whether the owner's subscription covers the slot), so every decider stays a
//! pure function of its own state.

pub mod account;
pub mod campaign;
pub mod codec;
pub mod config;
pub mod cycle;
pub mod error;
pub mod payment;
pub mod postings;
pub mod refund;
pub mod slot;
pub mod subscription;
pub mod values;

pub use account::{Account, AccountCommand, AccountEvent, Context, HoldState};
pub use config::Config;
pub use error::DomainError;
pub use postings::{LedgerAccount, Posting, postings};
pub use values::{Amount, Reason, SignedAmount, UserId};
